//! Frame layouts of ts2021's controlbase layer (all integers big-endian).
//!
//! ```text
//! initiation (101 B): version u16 | 0x01 | len u16 (=96) | e.pub[32] | enc(machine pub)[48] | tag[16]
//! response    (51 B): 0x02 | len u16 (=48) | e.pub[32] | tag[16]
//! error             : 0x03 | len u16 | UTF-8 text (unauthenticated)
//! record            : 0x04 | len u16 (16..=4093) | ChaCha20-Poly1305 ciphertext + tag
//! ```

/// Frame type of the handshake initiation (client to server).
pub const MSG_INITIATION: u8 = 0x01;
/// Frame type of the handshake response (server to client).
pub const MSG_RESPONSE: u8 = 0x02;
/// Frame type of an unauthenticated error message (server to client, instead of a response).
pub const MSG_ERROR: u8 = 0x03;
/// Frame type of a transport record.
pub const MSG_RECORD: u8 = 0x04;

/// Header length of every frame but the initiation: type u8, length u16.
pub const HEADER_LEN: usize = 3;
/// Header length of the initiation: version u16, type u8, length u16.
pub const INITIATION_HEADER_LEN: usize = 5;
/// Payload of the initiation: e(32) + encrypted static(32+16) + tag(16).
pub const INITIATION_PAYLOAD_LEN: u16 = 96;
/// Total size of the initiation.
pub const INITIATION_LEN: usize = INITIATION_HEADER_LEN + INITIATION_PAYLOAD_LEN as usize;
/// Payload of the response: e(32) + tag(16).
pub const RESPONSE_PAYLOAD_LEN: u16 = 48;
/// Total size of the response.
pub const RESPONSE_LEN: usize = HEADER_LEN + RESPONSE_PAYLOAD_LEN as usize;

/// Largest frame on the wire (header included).
pub const MAX_MESSAGE_LEN: usize = 4096;
/// ChaCha20-Poly1305 tag length.
pub const TAG_LEN: usize = 16;
/// Largest ciphertext (tag included) in one record.
pub const MAX_CIPHERTEXT_LEN: usize = MAX_MESSAGE_LEN - HEADER_LEN;
/// Largest plaintext in one record.
pub const MAX_PLAINTEXT_LEN: usize = MAX_CIPHERTEXT_LEN - TAG_LEN;

/// Encodes an error message frame (type 0x03). Text longer than 65535 bytes is cut at a
/// character boundary.
#[must_use]
pub fn encode_error_message(text: &str) -> Vec<u8> {
    let mut end = text.len().min(usize::from(u16::MAX));
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let text = &text.as_bytes()[..end];
    let mut out = Vec::with_capacity(HEADER_LEN + text.len());
    out.push(MSG_ERROR);
    // `end` is at most u16::MAX.
    out.extend_from_slice(&(text.len() as u16).to_be_bytes());
    out.extend_from_slice(text);
    out
}

/// Reads the big-endian u16 at `buf[at..at + 2]`; the caller checked the length.
pub(crate) fn be16(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buf[at], buf[at + 1]])
}
