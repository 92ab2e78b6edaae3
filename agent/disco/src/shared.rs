//! The per-peer precomputed box key (`crypto_box_beforenm`, Go's `DiscoPrivate.Shared`).

use std::fmt;

use crypto_box::aead::AeadInPlace;
use crypto_box::{PublicKey, SalsaBox, SecretKey, Tag};
use meshgate_tailcfg::{DiscoPrivate, DiscoPublic};

use crate::packet::{HEADER_LEN, MAGIC, Nonce, OVERHEAD, TAG_LEN, split};
use crate::{Error, Message};

/// The box key between our disco key and one peer's: the X25519 is done once here, so
/// sealing and opening cost only XSalsa20-Poly1305. Not `Clone` (crypto_box's cipher is not);
/// share one behind an `Arc`.
pub struct SharedKey {
    cipher: SalsaBox,
    mine: DiscoPublic,
    peer: DiscoPublic,
}

impl fmt::Debug for SharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedKey")
            .field("mine", &self.mine)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl SharedKey {
    pub fn new(mine: &DiscoPrivate, peer: &DiscoPublic) -> SharedKey {
        let secret = SecretKey::from_bytes(*mine.as_secret_bytes());
        SharedKey {
            cipher: SalsaBox::new(&PublicKey::from_bytes(*peer.as_bytes()), &secret),
            mine: mine.public(),
            peer: *peer,
        }
    }

    /// Our public key (written as the sender of what we seal).
    pub fn mine(&self) -> DiscoPublic {
        self.mine
    }

    /// The peer's public key (the only sender [`SharedKey::open`] accepts).
    pub fn peer(&self) -> DiscoPublic {
        self.peer
    }

    /// The whole packet (UDP payload or DERP packet body) carrying `msg` to the peer.
    pub fn seal(&self, msg: &Message, nonce: &Nonce) -> Vec<u8> {
        let mut out = Vec::with_capacity(OVERHEAD + msg.encoded_len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(self.mine.as_bytes());
        out.extend_from_slice(nonce);
        out.resize(OVERHEAD, 0);
        msg.encode_into(&mut out);
        let (head, plaintext) = out.split_at_mut(OVERHEAD);
        // XSalsa20-Poly1305 fails only with associated data (none) or beyond 256 GiB; the
        // tag slot stays zero in that unreachable case and the peer drops the packet.
        if let Ok(tag) = self
            .cipher
            .encrypt_in_place_detached(nonce.into(), b"", plaintext)
            && let Some(slot) = head.get_mut(HEADER_LEN..)
        {
            slot.copy_from_slice(&tag);
        }
        out
    }

    /// Opens a packet from the peer. A packet naming another sender is
    /// [`Error::UnexpectedSender`] without any decryption.
    pub fn open(&self, b: &[u8]) -> Result<Message, Error> {
        let parts = split(b)?;
        if parts.sender != self.peer {
            return Err(Error::UnexpectedSender {
                expected: self.peer,
                got: parts.sender,
            });
        }
        let mut plaintext = parts.ciphertext.to_vec();
        let tag: &Tag = parts.tag.into();
        self.cipher
            .decrypt_in_place_detached(parts.nonce.into(), b"", &mut plaintext, tag)
            .map_err(|_| Error::BoxOpen)?;
        Message::parse(&plaintext)
    }
}

// The tag length is fixed by the construction; keep our constant honest.
const _: () = assert!(TAG_LEN == 16);
