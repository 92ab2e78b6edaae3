/// Why a datagram was not accepted as the STUN message we expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("not a STUN message (too short, wrong top bits or no magic cookie)")]
    NotStun,
    #[error("unexpected STUN message type {0:#06x}")]
    WrongType(u16),
    #[error("STUN length field {declared} does not fit the {available} bytes after the header")]
    BadLength { declared: usize, available: usize },
    #[error("malformed STUN attribute at offset {0}")]
    BadAttribute(usize),
    #[error("missing or wrong SOFTWARE attribute (want \"tailnode\")")]
    WrongSoftware,
    #[error("FINGERPRINT is missing or not the last attribute")]
    NoFingerprint,
    #[error("FINGERPRINT mismatch")]
    WrongFingerprint,
    #[error("no usable (XOR-)MAPPED-ADDRESS attribute")]
    NoAddress,
    #[error("malformed address attribute")]
    BadAddress,
}
