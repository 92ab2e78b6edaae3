//! The crate's one error type.

/// Errors from parsing keys and times, and from map-response framing.
///
/// Key errors never include the offending text: it may be a private key.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("key text must start with {expected:?}")]
    KeyPrefix { expected: &'static str },
    #[error("{prefix} key needs {expected} hex digits, found {found} bytes")]
    KeyLength {
        prefix: &'static str,
        expected: usize,
        found: usize,
    },
    #[error("{prefix} key contains a non-hex character")]
    KeyHex { prefix: &'static str },
    #[error("bad RFC 3339 time {0:?}")]
    Time(String),
    #[error("map response JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("map response frame of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge { len: usize, max: usize },
    #[error("map response decompresses to more than {max} bytes")]
    DecompressedTooLarge { max: usize },
    #[error("map response zstd body: {0}")]
    Zstd(std::io::Error),
}
