//! The outer packet (reference §1.1):
//! `magic(6) ‖ sender disco public(32) ‖ nonce(24) ‖ tag(16) ‖ ciphertext`, where tag ‖
//! ciphertext is NaCl's `crypto_box_easy` output.

use meshgate_tailcfg::{DiscoPrivate, DiscoPublic};
use rand_core::{OsRng, RngCore};

use crate::{Error, Message, SharedKey};

/// "TS💬": the first bytes of every disco packet, telling it apart from WireGuard and STUN.
pub const MAGIC: [u8; 6] = *b"TS\xf0\x9f\x92\xac";
const KEY_LEN: usize = 32;
pub const NONCE_LEN: usize = 24;
pub const TAG_LEN: usize = 16;
/// magic ‖ sender key ‖ nonce: the unencrypted prefix.
pub const HEADER_LEN: usize = MAGIC.len() + KEY_LEN + NONCE_LEN;
/// Bytes a sealed packet adds to its plaintext.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;

/// A box nonce. Disco uses a fresh random one per packet ([`random_nonce`]).
pub type Nonce = [u8; NONCE_LEN];

/// A fresh nonce from the OS random source. 192 random bits make reuse under one shared key
/// negligible, which is why disco needs no nonce counter.
pub fn random_nonce() -> Nonce {
    let mut n = [0; NONCE_LEN];
    OsRng.fill_bytes(&mut n);
    n
}

/// Tailscale's `LooksLikeDiscoWrapper`: long enough for the header and starts with the magic.
/// Such a packet is disco's and must never be handed to WireGuard, even if it fails to open.
pub fn looks_like_disco(b: &[u8]) -> bool {
    b.len() >= HEADER_LEN && b.starts_with(&MAGIC)
}

/// The sender's disco key from the header, so the caller can find that peer's [`SharedKey`]
/// (or drop the packet as from an unknown peer) before any cryptography.
pub fn sender(b: &[u8]) -> Option<DiscoPublic> {
    split(b).ok().map(|p| p.sender)
}

/// Seals `msg` from `mine` to `peer`. Does one X25519; per-peer senders should keep a
/// [`SharedKey`] instead.
pub fn seal(mine: &DiscoPrivate, peer: &DiscoPublic, msg: &Message, nonce: &Nonce) -> Vec<u8> {
    SharedKey::new(mine, peer).seal(msg, nonce)
}

/// Opens a packet addressed to `mine` and returns the sender's key with the message. The
/// caller must still check that the sender is a known peer. Does one X25519; see [`SharedKey`].
pub fn open(mine: &DiscoPrivate, b: &[u8]) -> Result<(DiscoPublic, Message), Error> {
    let sender = split(b)?.sender;
    let msg = SharedKey::new(mine, &sender).open(b)?;
    Ok((sender, msg))
}

/// A packet cut into its parts; nothing authenticated yet.
pub(crate) struct Parts<'a> {
    pub sender: DiscoPublic,
    pub nonce: &'a Nonce,
    pub tag: &'a [u8; TAG_LEN],
    pub ciphertext: &'a [u8],
}

pub(crate) fn split(b: &[u8]) -> Result<Parts<'_>, Error> {
    if !looks_like_disco(b) {
        return Err(Error::NotDisco);
    }
    let rest = b.get(MAGIC.len()..).ok_or(Error::NotDisco)?;
    let (Some(key), Some(rest)) = (rest.first_chunk::<KEY_LEN>(), rest.get(KEY_LEN..)) else {
        return Err(Error::NotDisco);
    };
    let (Some(nonce), Some(rest)) = (rest.first_chunk::<NONCE_LEN>(), rest.get(NONCE_LEN..)) else {
        return Err(Error::NotDisco);
    };
    let (Some(tag), Some(ciphertext)) = (rest.first_chunk::<TAG_LEN>(), rest.get(TAG_LEN..)) else {
        return Err(Error::Truncated);
    };
    Ok(Parts {
        sender: DiscoPublic::from_bytes(*key),
        nonce,
        tag,
        ciphertext,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants() {
        assert_eq!(MAGIC.as_slice(), "TS💬".as_bytes());
        assert_eq!(HEADER_LEN, 62);
        assert_eq!(OVERHEAD, 78);
    }

    #[test]
    fn looks_like() {
        let mut b = MAGIC.to_vec();
        b.resize(HEADER_LEN - 1, 0);
        assert!(!looks_like_disco(&b));
        b.push(0);
        assert!(looks_like_disco(&b));
        b[0] = b'X';
        assert!(!looks_like_disco(&b));
        // A WireGuard handshake initiation.
        assert!(!looks_like_disco(&[1, 0, 0, 0, 9, 9, 9, 9]));
    }

    #[test]
    fn header_only_is_truncated() {
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&[4; 32]);
        b.extend_from_slice(&[5; 24]);
        assert_eq!(sender(&b), None);
        b.extend_from_slice(&[6; 16]);
        assert_eq!(sender(&b), Some(DiscoPublic::from_bytes([4; 32])));
        let p = split(&b).unwrap();
        assert_eq!(
            (p.nonce, p.tag, p.ciphertext),
            (&[5; 24], &[6; 16], &[][..])
        );
        assert!(matches!(split(&b[..HEADER_LEN]), Err(Error::Truncated)));
        assert!(matches!(split(&b[..HEADER_LEN - 1]), Err(Error::NotDisco)));
    }
}
