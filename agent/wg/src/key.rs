//! WireGuard keys. Private and preshared keys never print: their `Debug` is redacted and they
//! have no `Display`; their memory is wiped on drop.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::Error;

pub const KEY_LEN: usize = 32;

fn decode_base64(what: &'static str, text: &str) -> Result<[u8; KEY_LEN], Error> {
    let text = text.trim();
    let bytes = BASE64.decode(text).map_err(|_| Error::InvalidKey {
        what,
        reason: "not base64 (expected 44 characters as `wg genkey` prints)".into(),
    })?;
    bytes.try_into().map_err(|b: Vec<u8>| Error::InvalidKey {
        what,
        reason: format!("decodes to {} bytes, expected {KEY_LEN}", b.len()),
    })
}

fn decode_hex(what: &'static str, text: &str) -> Result<[u8; KEY_LEN], Error> {
    let bad = || Error::InvalidKey {
        what,
        reason: "not 64 hexadecimal digits".into(),
    };
    if text.len() != KEY_LEN * 2 {
        return Err(bad());
    }
    let mut out = [0u8; KEY_LEN];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(i * 2..i * 2 + 2).ok_or_else(bad)?, 16)
            .map_err(|_| bad())?;
    }
    Ok(out)
}

fn encode_hex(bytes: &[u8; KEY_LEN]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A peer's or our own public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; KEY_LEN]);

impl PublicKey {
    pub const fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        PublicKey(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    pub fn from_hex(text: &str) -> Result<Self, Error> {
        decode_hex("public key", text).map(PublicKey)
    }

    pub fn to_hex(&self) -> String {
        encode_hex(&self.0)
    }
}

impl FromStr for PublicKey {
    type Err = Error;
    fn from_str(text: &str) -> Result<Self, Error> {
        decode_base64("public key", text).map(PublicKey)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&BASE64.encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl serde::Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Our interface's private key.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct PrivateKey([u8; KEY_LEN]);

impl PrivateKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Self {
        let secret = x25519_dalek::StaticSecret::random_from_rng(rand_core::OsRng);
        Self::from_bytes(secret.to_bytes())
    }

    /// Clamps the scalar as Curve25519 does. The public key is unchanged by this, but the
    /// kernel and wireguard-go store and report the clamped form, and a stored key must compare
    /// equal to the one we wrote or every reconcile would rewrite it.
    pub fn from_bytes(mut bytes: [u8; KEY_LEN]) -> Self {
        bytes[0] &= 248;
        bytes[31] &= 127;
        bytes[31] |= 64;
        PrivateKey(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    pub fn public_key(&self) -> PublicKey {
        let secret = x25519_dalek::StaticSecret::from(self.0);
        PublicKey(x25519_dalek::PublicKey::from(&secret).to_bytes())
    }

    pub fn from_hex(text: &str) -> Result<Self, Error> {
        decode_hex("private key", text).map(Self::from_bytes)
    }

    pub fn to_hex(&self) -> String {
        encode_hex(&self.0)
    }

    /// The base64 form `wg` reads; only for writing key files, never for logs.
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0)
    }
}

impl FromStr for PrivateKey {
    type Err = Error;
    fn from_str(text: &str) -> Result<Self, Error> {
        decode_base64("private key", text).map(Self::from_bytes)
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

/// A peer's optional symmetric key, mixed into the handshake.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct PresharedKey([u8; KEY_LEN]);

impl PresharedKey {
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        PresharedKey(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Kernel and UAPI report "no preshared key" as all zeros.
    pub fn is_zero(&self) -> bool {
        self.0 == [0; KEY_LEN]
    }

    pub fn from_hex(text: &str) -> Result<Self, Error> {
        decode_hex("preshared key", text).map(PresharedKey)
    }

    pub fn to_hex(&self) -> String {
        encode_hex(&self.0)
    }
}

impl FromStr for PresharedKey {
    type Err = Error;
    fn from_str(text: &str) -> Result<Self, Error> {
        decode_base64("preshared key", text).map(PresharedKey)
    }
}

impl fmt::Debug for PresharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PresharedKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_key_matches_wg_pubkey() {
        // Pair printed by `wg genkey | tee /dev/stderr | wg pubkey`.
        let private: PrivateKey = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
            .parse()
            .unwrap();
        assert_eq!(
            private.public_key().to_string(),
            "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="
        );
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let private = PrivateKey::generate();
        let text = format!("{private:?}");
        assert!(!text.contains(&private.to_base64()));
        assert_eq!(text, "PrivateKey(<redacted>)");
        let psk = PresharedKey::from_bytes([7; KEY_LEN]);
        assert_eq!(format!("{psk:?}"), "PresharedKey(<redacted>)");
    }

    #[test]
    fn bad_keys_are_refused_with_a_reason() {
        let short = "AAAA".parse::<PublicKey>().unwrap_err().to_string();
        assert!(short.contains("3 bytes"), "{short}");
        let junk = "not a key!".parse::<PublicKey>().unwrap_err().to_string();
        assert!(junk.contains("not base64"), "{junk}");
        assert!(PublicKey::from_hex("zz").is_err());
    }

    #[test]
    fn private_keys_are_stored_clamped() {
        let raw = PrivateKey::from_bytes([0xff; KEY_LEN]);
        assert_eq!(raw.as_bytes()[0], 0xf8);
        assert_eq!(raw.as_bytes()[31], 0x7f);
        let unclamped = "//////////////////////////////////////////8=";
        let parsed: PrivateKey = unclamped.parse().unwrap();
        assert_eq!(parsed, raw);
    }

    #[test]
    fn hex_round_trips() {
        let key = PrivateKey::generate().public_key();
        assert_eq!(PublicKey::from_hex(&key.to_hex()).unwrap(), key);
    }
}
