use std::io;

/// Everything this crate can refuse or fail at.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("filter rule {rule}: invalid address {text:?}: {why}")]
    BadAddress {
        rule: usize,
        text: String,
        why: &'static str,
    },
    #[error("filter rule {rule}: empty port range {first}-{last} for {ip:?}")]
    EmptyPortRange {
        rule: usize,
        ip: String,
        first: u16,
        last: u16,
    },
    #[error("policy compiles to more than {max} entries; refusing it")]
    TooManyEntries { max: usize },
    #[error("interface name {0:?} is not a valid Linux interface name")]
    BadInterface(String),
    #[error("running nft: {0}")]
    Spawn(#[source] io::Error),
    #[error("nft failed ({status}): {stderr}")]
    Nft { status: String, stderr: String },
    #[error("encoding the ruleset: {0}")]
    Json(#[from] serde_json::Error),
}
