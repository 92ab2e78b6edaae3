//! The Binding request as Tailscale sends it, and the strict check its STUN server applies.

use crate::Error;

use crate::wire::{
    self, ATTR_FINGERPRINT, ATTR_SOFTWARE, FINGERPRINT_XOR, HEADER_LEN, SOFTWARE,
    TYPE_BINDING_REQUEST, TxId,
};

/// Size of [`binding_request`]'s output: header, SOFTWARE (4 + 8), FINGERPRINT (4 + 4).
pub const REQUEST_LEN: usize = 40;

/// A Binding request exactly as Tailscale sends it (reference §3.1): header with length 20,
/// SOFTWARE `"tailnode"`, then FINGERPRINT = CRC-32 of all preceding bytes XOR 0x5354554e.
pub fn binding_request(tx: TxId) -> [u8; REQUEST_LEN] {
    let mut v = Vec::with_capacity(REQUEST_LEN);
    wire::put_header(&mut v, TYPE_BINDING_REQUEST, tx);
    wire::put_attr(&mut v, ATTR_SOFTWARE, SOFTWARE);
    // The length field must already count FINGERPRINT (8 bytes) when the CRC is taken
    // (RFC 5389 §15.5).
    let len = (v.len() - HEADER_LEN + 8) as u16;
    v[2..4].copy_from_slice(&len.to_be_bytes());
    let fp = crc32fast::hash(&v) ^ FINGERPRINT_XOR;
    wire::put_attr(&mut v, ATTR_FINGERPRINT, &fp.to_be_bytes());
    let mut out = [0u8; REQUEST_LEN];
    out.copy_from_slice(&v);
    out
}

/// Accepts a Binding request only if all of these hold, and returns its transaction ID:
/// 1. [`crate::is_stun`]: at least 20 bytes, top two bits zero, magic cookie;
/// 2. message type is exactly 0x0001 (Binding request);
/// 3. the length field is a multiple of 4 and equals the bytes after the header exactly;
/// 4. every attribute is well formed, padded to 4 bytes and inside the message;
/// 5. there is at least one SOFTWARE attribute and every SOFTWARE value is exactly `tailnode`;
/// 6. the last attribute is FINGERPRINT with a 4-byte value, no FINGERPRINT appears earlier, and
///    its value equals CRC-32/IEEE of every byte before that attribute XOR 0x5354554e.
///
/// Other attributes are allowed and ignored.
pub fn parse_binding_request(b: &[u8]) -> Result<TxId, Error> {
    let h = wire::header(b)?;
    if h.msg_type != TYPE_BINDING_REQUEST {
        return Err(Error::WrongType(h.msg_type));
    }
    if h.trailing != 0 {
        return Err(Error::BadLength {
            declared: h.attrs.len(),
            available: h.attrs.len() + h.trailing,
        });
    }
    let mut software_seen = false;
    let mut software_ok = true;
    let mut last: Option<(u16, &[u8], usize)> = None;
    for attr in wire::attrs(h.attrs) {
        let attr = attr?;
        if let Some((ATTR_FINGERPRINT, _, _)) = last {
            // A FINGERPRINT followed by anything is not the trailing one.
            return Err(Error::NoFingerprint);
        }
        if attr.typ == ATTR_SOFTWARE {
            software_seen = true;
            software_ok &= attr.value == SOFTWARE;
        }
        last = Some((attr.typ, attr.value, attr.offset));
    }
    if !(software_seen && software_ok) {
        return Err(Error::WrongSoftware);
    }
    let Some((ATTR_FINGERPRINT, value, offset)) = last else {
        return Err(Error::NoFingerprint);
    };
    let (Ok(got), Some(covered)) = (<[u8; 4]>::try_from(value), b.get(..offset)) else {
        return Err(Error::NoFingerprint);
    };
    if u32::from_be_bytes(got) != crc32fast::hash(covered) ^ FINGERPRINT_XOR {
        return Err(Error::WrongFingerprint);
    }
    Ok(h.tx_id)
}
