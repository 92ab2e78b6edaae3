//! STUN wire constants, the header and the attribute walk shared by requests and responses.

use std::fmt;

use crate::Error;

/// Fixed STUN header length.
pub const HEADER_LEN: usize = 20;
/// RFC 5389 magic cookie, bytes 4..8 of every message.
pub const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
/// XORed into the CRC-32 to form FINGERPRINT (RFC 5389 §15.5; "STUN" in ASCII).
pub const FINGERPRINT_XOR: u32 = 0x5354_554e;
/// The SOFTWARE value Tailscale sends and its STUN server insists on.
pub const SOFTWARE: &[u8] = b"tailnode";

pub const ATTR_MAPPED_ADDRESS: u16 = 0x0001;
pub const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
/// Pre-RFC 5389 code of XOR-MAPPED-ADDRESS that some old servers still send.
pub const ATTR_XOR_MAPPED_ADDRESS_OLD: u16 = 0x8020;
pub const ATTR_SOFTWARE: u16 = 0x8022;
pub const ATTR_FINGERPRINT: u16 = 0x8028;

pub(crate) const TYPE_BINDING_REQUEST: u16 = 0x0001;
pub(crate) const TYPE_BINDING_SUCCESS: u16 = 0x0101;

/// A STUN transaction ID (12 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TxId(pub [u8; 12]);

impl TxId {
    /// A fresh random ID from the OS generator.
    pub fn random() -> Self {
        use rand_core::RngCore;
        let mut b = [0u8; 12];
        rand_core::OsRng.fill_bytes(&mut b);
        TxId(b)
    }
}

impl fmt::Debug for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TxId(")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// Cheap demultiplexing test: at least a header, top two bits of the type zero and the magic
/// cookie at bytes 4..8. Says nothing about validity.
pub fn is_stun(b: &[u8]) -> bool {
    b.len() >= HEADER_LEN && b[0] & 0xC0 == 0 && b[4..8] == MAGIC_COOKIE
}

/// [`is_stun`] and the method is Binding (`b[1] == 0x01`), the test a socket shared with
/// WireGuard and disco uses to send a packet to netcheck (reference §1.3).
pub fn is_binding(b: &[u8]) -> bool {
    is_stun(b) && b[1] == 0x01
}

/// The parts of a header the parsers look at.
pub(crate) struct Header<'a> {
    pub msg_type: u16,
    pub tx_id: TxId,
    /// The attribute bytes as declared by the length field.
    pub attrs: &'a [u8],
    /// Bytes after the declared length (UDP payload longer than the message).
    pub trailing: usize,
}

pub(crate) fn header(b: &[u8]) -> Result<Header<'_>, Error> {
    if !is_stun(b) {
        return Err(Error::NotStun);
    }
    let (head, rest) = b.split_at(HEADER_LEN);
    let msg_type = u16::from_be_bytes([head[0], head[1]]);
    let declared = usize::from(u16::from_be_bytes([head[2], head[3]]));
    let mut id = [0u8; 12];
    id.copy_from_slice(&head[8..20]);
    if declared % 4 != 0 || declared > rest.len() {
        return Err(Error::BadLength {
            declared,
            available: rest.len(),
        });
    }
    let (attrs, tail) = rest.split_at(declared);
    Ok(Header {
        msg_type,
        tx_id: TxId(id),
        attrs,
        trailing: tail.len(),
    })
}

/// One attribute: its type, value (unpadded) and its offset from the message start.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attr<'a> {
    pub typ: u16,
    pub value: &'a [u8],
    pub offset: usize,
}

/// Walks attributes; every attribute, including the last, must carry its padding to a multiple
/// of four bytes (RFC 5389 §15). Yields an error once and then stops.
pub(crate) struct Attrs<'a> {
    rest: &'a [u8],
    offset: usize,
    failed: bool,
}

pub(crate) fn attrs(body: &[u8]) -> Attrs<'_> {
    Attrs {
        rest: body,
        offset: HEADER_LEN,
        failed: false,
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<Attr<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let parsed = (|| {
            let hdr = self.rest.get(..4)?;
            let typ = u16::from_be_bytes([hdr[0], hdr[1]]);
            let len = usize::from(u16::from_be_bytes([hdr[2], hdr[3]]));
            let padded = len.checked_add(3)? & !3;
            let value = self.rest.get(4..4 + len)?;
            let rest = self.rest.get(4 + padded..)?;
            Some((typ, value, rest, 4 + padded))
        })();
        match parsed {
            Some((typ, value, rest, used)) => {
                let attr = Attr {
                    typ,
                    value,
                    offset: self.offset,
                };
                self.rest = rest;
                self.offset += used;
                Some(Ok(attr))
            }
            None => {
                self.failed = true;
                Some(Err(Error::BadAttribute(self.offset)))
            }
        }
    }
}

/// Appends a header with a zero length; callers patch the length with [`set_len`].
pub(crate) fn put_header(out: &mut Vec<u8>, msg_type: u16, tx: TxId) {
    out.extend_from_slice(&msg_type.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&MAGIC_COOKIE);
    out.extend_from_slice(&tx.0);
}

/// Appends one attribute with zero padding.
pub(crate) fn put_attr(out: &mut Vec<u8>, typ: u16, value: &[u8]) {
    out.extend_from_slice(&typ.to_be_bytes());
    // Values this crate writes are at most 20 bytes.
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(value);
    let pad = (4 - value.len() % 4) % 4;
    out.extend(std::iter::repeat_n(0u8, pad));
}

/// Writes the length field from the buffer's current size.
pub(crate) fn set_len(out: &mut [u8]) {
    let len = (out.len() - HEADER_LEN) as u16;
    out[2..4].copy_from_slice(&len.to_be_bytes());
}
