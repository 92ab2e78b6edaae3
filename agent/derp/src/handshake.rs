//! The DERP handshake bodies (reference §2.3–2.4): ClientInfo and ServerInfo JSON, each sealed
//! in a NaCl box between node keys, laid out `nonce(24) ‖ tag(16) ‖ ciphertext` as Go's
//! `box.Seal` and `key.NodePrivate.SealTo` produce it.

use bytes::{BufMut, Bytes, BytesMut};
use crypto_box::aead::AeadInPlace;
use crypto_box::{Nonce, PublicKey, SalsaBox, SecretKey, Tag};
use meshgate_tailcfg::{NodePrivate, NodePublic};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::frame::{Frame, NONCE_LEN, TAG_LEN};

/// The JSON a client seals into ClientInfo.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInfo {
    /// Shared secret of a region's mesh; empty for ordinary clients.
    #[serde(rename = "meshKey", default, skip_serializing_if = "String::is_empty")]
    pub mesh_key: String,
    #[serde(rename = "version", default)]
    pub version: u32,
    /// The client answers server Pings with Pongs.
    #[serde(rename = "CanAckPings", default)]
    pub can_ack_pings: bool,
    #[serde(rename = "IsProber", default, skip_serializing_if = "is_false")]
    pub is_prober: bool,
    #[serde(rename = "AppName", default, skip_serializing_if = "String::is_empty")]
    pub app_name: String,
}

impl ClientInfo {
    /// What this crate's client sends: version 2, answers pings.
    pub fn ours() -> Self {
        ClientInfo {
            version: crate::PROTOCOL_VERSION,
            can_ack_pings: true,
            ..ClientInfo::default()
        }
    }
}

/// The JSON a server seals into ServerInfo.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    #[serde(rename = "version", default)]
    pub version: u32,
    /// Per-client receive rate the server enforces (0 = none).
    #[serde(
        rename = "TokenBucketBytesPerSecond",
        default,
        skip_serializing_if = "is_zero"
    )]
    pub token_bucket_bytes_per_second: u64,
    #[serde(
        rename = "TokenBucketBytesBurst",
        default,
        skip_serializing_if = "is_zero"
    )]
    pub token_bucket_bytes_burst: u64,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn salsa_box(mine: &NodePrivate, peer: &NodePublic) -> SalsaBox {
    let secret = SecretKey::from_bytes(*mine.as_secret_bytes());
    SalsaBox::new(&PublicKey::from_bytes(*peer.as_bytes()), &secret)
}

/// Seals `plaintext` from `mine` to `peer` with a fresh random nonce:
/// `nonce ‖ tag ‖ ciphertext`.
pub fn seal_to(mine: &NodePrivate, peer: &NodePublic, plaintext: &[u8]) -> Bytes {
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    let mut ct = plaintext.to_vec();
    let tag = salsa_box(mine, peer)
        .encrypt_in_place_detached(Nonce::from_slice(&nonce), b"", &mut ct)
        // XSalsa20-Poly1305 fails only for AAD (none here) or > 256 GiB messages.
        .unwrap_or_default();
    let mut out = BytesMut::with_capacity(NONCE_LEN + TAG_LEN + ct.len());
    out.put_slice(&nonce);
    out.put_slice(&tag);
    out.put_slice(&ct);
    out.freeze()
}

/// Opens `nonce ‖ tag ‖ ciphertext` sent by `peer` to `mine`.
pub fn open_from(mine: &NodePrivate, peer: &NodePublic, sealed: &[u8]) -> Result<Vec<u8>, Error> {
    let (Some(nonce), Some(tag), Some(ct)) = (
        sealed.get(..NONCE_LEN),
        sealed.get(NONCE_LEN..NONCE_LEN + TAG_LEN),
        sealed.get(NONCE_LEN + TAG_LEN..),
    ) else {
        return Err(Error::BoxOpen);
    };
    let mut pt = ct.to_vec();
    salsa_box(mine, peer)
        .decrypt_in_place_detached(Nonce::from_slice(nonce), b"", &mut pt, Tag::from_slice(tag))
        .map_err(|_| Error::BoxOpen)?;
    Ok(pt)
}

/// The ClientInfo frame `client` sends to a server whose key is `server`.
pub fn client_info_frame(client: &NodePrivate, server: &NodePublic, info: &ClientInfo) -> Frame {
    // Serializing these plain structs cannot fail.
    let json = serde_json::to_vec(info).unwrap_or_default();
    Frame::ClientInfo {
        key: client.public(),
        sealed: seal_to(client, server, &json),
    }
}

/// Server side: opens a ClientInfo body from `client`.
pub fn open_client_info(
    server: &NodePrivate,
    client: &NodePublic,
    sealed: &[u8],
) -> Result<ClientInfo, Error> {
    let json = open_from(server, client, sealed)?;
    Ok(serde_json::from_slice(&json)?)
}

/// The ServerInfo frame `server` sends to `client`.
pub fn server_info_frame(server: &NodePrivate, client: &NodePublic, info: &ServerInfo) -> Frame {
    let json = serde_json::to_vec(info).unwrap_or_default();
    Frame::ServerInfo {
        sealed: seal_to(server, client, &json),
    }
}

/// Client side: opens a ServerInfo body from `server`.
pub fn open_server_info(
    client: &NodePrivate,
    server: &NodePublic,
    sealed: &[u8],
) -> Result<ServerInfo, Error> {
    let json = open_from(client, server, sealed)?;
    Ok(serde_json::from_slice(&json)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_round_trip_and_wrong_key() {
        let a = NodePrivate::generate();
        let b = NodePrivate::generate();
        let c = NodePrivate::generate();
        let sealed = seal_to(&a, &b.public(), b"hello");
        assert_eq!(sealed.len(), NONCE_LEN + TAG_LEN + 5);
        assert_eq!(open_from(&b, &a.public(), &sealed).unwrap(), b"hello");
        assert!(matches!(
            open_from(&c, &a.public(), &sealed),
            Err(Error::BoxOpen)
        ));
        assert!(matches!(
            open_from(&b, &c.public(), &sealed),
            Err(Error::BoxOpen)
        ));
        let mut tampered = sealed.to_vec();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(open_from(&b, &a.public(), &tampered).is_err());
        assert!(open_from(&b, &a.public(), &sealed[..30]).is_err());
    }

    /// NaCl's published crypto_box vector (alicesk → bobpk), first bytes: the box output starts
    /// with the Poly1305 tag, then the ciphertext, which is the layout Go produces.
    #[test]
    fn nacl_vector_layout() {
        let alice_sk: [u8; 32] = [
            0x77, 0x07, 0x6d, 0x0a, 0x73, 0x18, 0xa5, 0x7d, 0x3c, 0x16, 0xc1, 0x72, 0x51, 0xb2,
            0x66, 0x45, 0xdf, 0x4c, 0x2f, 0x87, 0xeb, 0xc0, 0x99, 0x2a, 0xb1, 0x77, 0xfb, 0xa5,
            0x1d, 0xb9, 0x2c, 0x2a,
        ];
        let bob_pk: [u8; 32] = [
            0xde, 0x9e, 0xdb, 0x7d, 0x7b, 0x7d, 0xc1, 0xb4, 0xd3, 0x5b, 0x61, 0xc2, 0xec, 0xe4,
            0x35, 0x37, 0x3f, 0x83, 0x43, 0xc8, 0x5b, 0x78, 0x67, 0x4d, 0xad, 0xfc, 0x7e, 0x14,
            0x6f, 0x88, 0x2b, 0x4f,
        ];
        let nonce: [u8; 24] = [
            0x69, 0x69, 0x6e, 0xe9, 0x55, 0xb6, 0x2b, 0x73, 0xcd, 0x62, 0xbd, 0xa8, 0x75, 0xfc,
            0x73, 0xd6, 0x82, 0x19, 0xe0, 0x03, 0x6b, 0x7a, 0x0b, 0x37,
        ];
        // First 16 bytes of the NaCl test message.
        let msg: [u8; 16] = [
            0xbe, 0x07, 0x5f, 0xc5, 0x3c, 0x81, 0xf2, 0xd5, 0xcf, 0x14, 0x13, 0x16, 0xeb, 0xeb,
            0x0c, 0x7b,
        ];
        let mut ct = msg.to_vec();
        let alice = NodePrivate::from_bytes(alice_sk);
        salsa_box(&alice, &NodePublic::from_bytes(bob_pk))
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), b"", &mut ct)
            .unwrap();
        // The keystream is independent of the message length: NaCl's ciphertext starts 8e 99 3b 9f.
        assert_eq!(&ct[..4], &[0x8e, 0x99, 0x3b, 0x9f]);
    }

    #[test]
    fn json_field_names() {
        let j = serde_json::to_string(&ClientInfo::ours()).unwrap();
        assert_eq!(j, r#"{"version":2,"CanAckPings":true}"#);
        let j = serde_json::to_string(&ServerInfo {
            version: 2,
            token_bucket_bytes_per_second: 10,
            token_bucket_bytes_burst: 20,
        })
        .unwrap();
        assert_eq!(
            j,
            r#"{"version":2,"TokenBucketBytesPerSecond":10,"TokenBucketBytesBurst":20}"#
        );
        let info: ClientInfo =
            serde_json::from_str(r#"{"meshKey":"m","version":2,"IsProber":true,"x":1}"#).unwrap();
        assert_eq!(info.mesh_key, "m");
        assert!(info.is_prober && !info.can_ack_pings);
    }

    #[test]
    fn frames_round_trip_through_boxes() {
        let client = NodePrivate::generate();
        let server = NodePrivate::generate();
        let Frame::ClientInfo { key, sealed } =
            client_info_frame(&client, &server.public(), &ClientInfo::ours())
        else {
            panic!("not a ClientInfo")
        };
        assert_eq!(key, client.public());
        assert_eq!(
            open_client_info(&server, &key, &sealed).unwrap(),
            ClientInfo::ours()
        );
        let wrong = NodePrivate::generate();
        assert!(open_client_info(&wrong, &key, &sealed).is_err());
        let si = ServerInfo {
            version: 2,
            ..ServerInfo::default()
        };
        let Frame::ServerInfo { sealed } = server_info_frame(&server, &client.public(), &si) else {
            panic!("not a ServerInfo")
        };
        assert_eq!(
            open_server_info(&client, &server.public(), &sealed).unwrap(),
            si
        );
    }
}
