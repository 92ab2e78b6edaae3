//! Curve25519 keys in Tailscale's text forms (reference §0; ts:types/key).
//!
//! Public keys serialize as `<prefix><64 lowercase hex>` (`nodekey:`, `mkey:`, `discokey:`,
//! `chalpub:`, `nlpub:`); parsing accepts either hex case. Private keys never appear in JSON: they
//! have no `Display`/`Serialize`, a redacted `Debug`, are zeroized on drop, and only
//! [`NodePrivate::to_text_secret`]/[`MachinePrivate::to_text_secret`] write the `privkey:<hex>` form
//! Tailscale uses in key files (for both node and machine keys, ts:types/key/node.go, machine.go).
//! Disco private keys are random per process and have no text form.

use std::fmt;
use std::str::FromStr;

use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::{Zeroize, Zeroizing};

use crate::Error;

/// Length of every Curve25519 key, in bytes.
pub const KEY_LEN: usize = 32;

/// Text prefix of node and machine private keys in key files.
pub const PRIVATE_PREFIX: &str = "privkey:";

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Parses `<prefix><64 hex>` into `out`. Errors never echo the input (it may be a secret).
fn parse_prefixed_hex(
    text: &str,
    prefix: &'static str,
    out: &mut [u8; KEY_LEN],
) -> Result<(), Error> {
    let hex = text
        .strip_prefix(prefix)
        .ok_or(Error::KeyPrefix { expected: prefix })?
        .as_bytes();
    if hex.len() != 2 * KEY_LEN {
        return Err(Error::KeyLength {
            prefix,
            expected: 2 * KEY_LEN,
            found: hex.len(),
        });
    }
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        match (hex_digit(pair[0]), hex_digit(pair[1])) {
            (Some(hi), Some(lo)) => *byte = hi << 4 | lo,
            _ => return Err(Error::KeyHex { prefix }),
        }
    }
    Ok(())
}

fn write_prefixed_hex(f: &mut impl fmt::Write, prefix: &str, bytes: &[u8; KEY_LEN]) -> fmt::Result {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    f.write_str(prefix)?;
    for b in bytes {
        f.write_char(HEX[usize::from(b >> 4)] as char)?;
        f.write_char(HEX[usize::from(b & 0xf)] as char)?;
    }
    Ok(())
}

macro_rules! public_key {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name([u8; KEY_LEN]);

        impl $name {
            /// Text prefix of this key type.
            pub const PREFIX: &'static str = $prefix;

            pub const fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
                Self(bytes)
            }

            pub const fn as_bytes(&self) -> &[u8; KEY_LEN] {
                &self.0
            }

            /// Whether this is the all-zero key (Go's zero value, "no key").
            pub fn is_zero(&self) -> bool {
                self.0 == [0; KEY_LEN]
            }
        }

        impl From<[u8; KEY_LEN]> for $name {
            fn from(bytes: [u8; KEY_LEN]) -> Self {
                Self(bytes)
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                let mut k = [0; KEY_LEN];
                parse_prefixed_hex(s, $prefix, &mut k)?;
                Ok(Self(k))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_prefixed_hex(f, $prefix, &self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

public_key!(
    /// A node's public key: its WireGuard static key and DERP identity (`nodekey:`).
    NodePublic,
    "nodekey:"
);
public_key!(
    /// A machine's public key: the Noise IK static key towards control (`mkey:`).
    MachinePublic,
    "mkey:"
);
public_key!(
    /// A disco public key, random per process (`discokey:`).
    DiscoPublic,
    "discokey:"
);
public_key!(
    /// The challenge key control sends in `EarlyNoise` (`chalpub:`).
    ChallengePublic,
    "chalpub:"
);
public_key!(
    /// A tailnet-lock public key (`nlpub:`), only carried, never used, by this project.
    NlPublic,
    "nlpub:"
);

/// Random Curve25519 scalar clamped as Tailscale stores it (ts:types/key `clamp25519Private`).
fn random_clamped() -> [u8; KEY_LEN] {
    let mut k = [0u8; KEY_LEN];
    OsRng.fill_bytes(&mut k);
    k[0] &= 248;
    k[31] = (k[31] & 127) | 64;
    k
}

fn x25519_public(secret: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
    // StaticSecret zeroizes itself on drop; the scalar is clamped inside the multiplication.
    let s = x25519_dalek::StaticSecret::from(*secret);
    x25519_dalek::PublicKey::from(&s).to_bytes()
}

macro_rules! private_key {
    ($(#[$doc:meta])* $name:ident => $public:ident) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name([u8; KEY_LEN]);

        impl $name {
            /// A fresh key from the OS random source, clamped as Tailscale's Go code stores it.
            pub fn generate() -> Self {
                Self(random_clamped())
            }

            /// Takes the raw scalar (unclamped bytes are accepted; X25519 clamps when used).
            pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
                Self(bytes)
            }

            /// The raw secret scalar (e.g. for a WireGuard configuration). Do not log it.
            pub fn as_secret_bytes(&self) -> &[u8; KEY_LEN] {
                &self.0
            }

            /// The public key, `X25519(clamp(self), 9)`.
            pub fn public(&self) -> $public {
                $public(x25519_public(&self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "(<redacted>, public {})"), self.public())
            }
        }

        impl Drop for $name {
            fn drop(&mut self) {
                self.0.zeroize();
            }
        }
    };
    ($(#[$doc:meta])* $name:ident => $public:ident, text) => {
        private_key!($(#[$doc])* $name => $public);

        impl $name {
            /// The key-file text form `privkey:<64 hex>`. This is the secret: write it only to a
            /// key file with restrictive permissions.
            pub fn to_text_secret(&self) -> Zeroizing<String> {
                let mut s = Zeroizing::new(String::with_capacity(PRIVATE_PREFIX.len() + 2 * KEY_LEN));
                write_prefixed_hex(&mut *s, PRIVATE_PREFIX, &self.0).expect("writing to a String");
                s
            }

            /// Parses the key-file text form `privkey:<64 hex>`.
            pub fn from_text_secret(text: &str) -> Result<Self, Error> {
                let mut k = Self([0; KEY_LEN]);
                parse_prefixed_hex(text.trim_end(), PRIVATE_PREFIX, &mut k.0)?;
                Ok(k)
            }
        }
    };
}

private_key!(
    /// A node's private key (the WireGuard private key). Text form `privkey:` via
    /// [`NodePrivate::to_text_secret`] only.
    NodePrivate => NodePublic, text
);
private_key!(
    /// A machine's private key (Noise IK static key towards control). Text form `privkey:` via
    /// [`MachinePrivate::to_text_secret`] only.
    MachinePrivate => MachinePublic, text
);
private_key!(
    /// A disco private key: random per process, never stored, so it has no text form.
    DiscoPrivate => DiscoPublic
);

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn public_text_round_trip() {
        let text = format!("nodekey:{HEX}");
        let k: NodePublic = text.parse().unwrap();
        assert_eq!(k.as_bytes()[0], 0x01);
        assert_eq!(k.as_bytes()[31], 0xef);
        assert_eq!(k.to_string(), text);
        assert_eq!(format!("{k:?}"), text);
        let json = serde_json::to_string(&k).unwrap();
        assert_eq!(json, format!("\"{text}\""));
        assert_eq!(serde_json::from_str::<NodePublic>(&json).unwrap(), k);

        for (text, prefix) in [
            (format!("mkey:{HEX}"), MachinePublic::PREFIX),
            (format!("discokey:{HEX}"), DiscoPublic::PREFIX),
            (format!("chalpub:{HEX}"), ChallengePublic::PREFIX),
            (format!("nlpub:{HEX}"), NlPublic::PREFIX),
        ] {
            assert!(text.starts_with(prefix));
        }
        let m: MachinePublic = format!("mkey:{HEX}").parse().unwrap();
        assert_eq!(m.to_string(), format!("mkey:{HEX}"));
        let d: DiscoPublic = format!("discokey:{}", HEX.to_uppercase()).parse().unwrap();
        assert_eq!(
            d.to_string(),
            format!("discokey:{HEX}"),
            "output is lowercase"
        );
        let c: ChallengePublic = format!("chalpub:{HEX}").parse().unwrap();
        assert_eq!(c.as_bytes(), k.as_bytes());
    }

    #[test]
    fn zero_key_parses() {
        let k: MachinePublic = format!("mkey:{}", "0".repeat(64)).parse().unwrap();
        assert!(k.is_zero());
        assert_eq!(k, MachinePublic::default());
    }

    #[test]
    fn bad_public_text() {
        let wrong_prefix = format!("mkey:{HEX}").parse::<NodePublic>().unwrap_err();
        assert!(matches!(
            wrong_prefix,
            Error::KeyPrefix {
                expected: "nodekey:"
            }
        ));
        assert!(
            wrong_prefix.to_string().contains("nodekey:"),
            "{wrong_prefix}"
        );

        let short = format!("nodekey:{}", &HEX[..62])
            .parse::<NodePublic>()
            .unwrap_err();
        assert!(
            matches!(
                short,
                Error::KeyLength {
                    expected: 64,
                    found: 62,
                    ..
                }
            ),
            "{short}"
        );
        let long = format!("nodekey:{HEX}00")
            .parse::<NodePublic>()
            .unwrap_err();
        assert!(matches!(long, Error::KeyLength { found: 66, .. }), "{long}");

        let bad_hex = format!("nodekey:{}zz", &HEX[..62])
            .parse::<NodePublic>()
            .unwrap_err();
        assert!(matches!(bad_hex, Error::KeyHex { .. }), "{bad_hex}");
        // Multi-byte UTF-8 must not panic on slicing.
        let utf8 = format!("nodekey:{}é", &HEX[..62])
            .parse::<NodePublic>()
            .unwrap_err();
        assert!(matches!(
            utf8,
            Error::KeyLength { .. } | Error::KeyHex { .. }
        ));

        assert!("".parse::<NodePublic>().is_err());
        assert!(serde_json::from_str::<NodePublic>("\"nodekey:00\"").is_err());
        assert!(serde_json::from_str::<NodePublic>("42").is_err());
    }

    /// RFC 7748 §6.1 test vector: Alice's private scalar and public key.
    #[test]
    fn public_derivation_matches_rfc7748() {
        let mut sk = [0u8; 32];
        parse_prefixed_hex(
            "privkey:77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
            PRIVATE_PREFIX,
            &mut sk,
        )
        .unwrap();
        let k = NodePrivate::from_bytes(sk);
        assert_eq!(
            k.public().to_string(),
            "nodekey:8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
        );
    }

    #[test]
    fn private_keys_are_clamped_redacted_and_round_trip() {
        let k = NodePrivate::generate();
        let b = k.as_secret_bytes();
        assert_eq!(b[0] & 7, 0);
        assert_eq!(b[31] & 0xc0, 0x40);
        let text = k.to_text_secret();
        assert!(
            text.starts_with("privkey:") && text.len() == 72,
            "{}",
            text.len()
        );
        let back = NodePrivate::from_text_secret(&format!("{}\n", *text)).unwrap();
        assert_eq!(back.as_secret_bytes(), k.as_secret_bytes());
        assert_eq!(back.public(), k.public());

        let dbg = format!("{k:?}");
        assert!(dbg.contains("<redacted>"), "{dbg}");
        assert!(!dbg.contains(&text["privkey:".len()..]), "{dbg}");

        let m = MachinePrivate::generate();
        assert_ne!(m.as_secret_bytes(), k.as_secret_bytes());
        let m2 = MachinePrivate::from_text_secret(&m.to_text_secret()).unwrap();
        assert_eq!(m2.public(), m.public());
        assert!(MachinePrivate::from_text_secret(&format!("mkey:{HEX}")).is_err());

        let d = DiscoPrivate::generate();
        assert!(!d.public().is_zero());
        assert!(format!("{d:?}").starts_with("DiscoPrivate(<redacted>, public discokey:"));
    }

    #[test]
    fn bad_private_text_does_not_echo_secret() {
        let secret = format!("privkey:{}zz", &HEX[..62]);
        let e = NodePrivate::from_text_secret(&secret).unwrap_err();
        assert!(!e.to_string().contains(&HEX[..20]), "{e}");
    }
}
