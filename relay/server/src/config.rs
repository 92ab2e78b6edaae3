//! Relay configuration.

use std::path::PathBuf;
use std::time::Duration;

use meshgate_tailcfg::NodePrivate;

/// How connections are secured.
#[derive(Clone, Debug)]
pub enum TlsMode {
    /// Plain HTTP (tests, debugging, or behind a TLS terminator).
    Plain,
    /// PEM certificate chain and private key files.
    Files { cert: PathBuf, key: PathBuf },
    /// A fresh self-signed certificate for these names; clients pin it with the
    /// `sha256-raw:<hex>` CertName that [`crate::Relay::cert_name`] returns.
    SelfSigned { names: Vec<String> },
}

/// Where the server's node key comes from.
#[derive(Clone, Debug)]
pub enum KeySource {
    /// A `privkey:<hex>` file, created (mode 0600) if missing.
    File(PathBuf),
    /// A given key (tests).
    Key(NodePrivate),
    /// A fresh key per process.
    Ephemeral,
}

/// Optional per-client receive token bucket (reference §2.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub bytes_per_sec: u64,
    /// Raised to at least one full packet (64 KiB + 32) so any packet can pass.
    pub burst_bytes: u64,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub tls: TlsMode,
    pub key: KeySource,
    /// Per-client packet queue (oldest dropped when full).
    pub queue_depth: usize,
    /// Per-client disco packet queue, served before the packet queue.
    pub disco_queue_depth: usize,
    /// How long a sender may wait for room in a draining receiver's full queue before the
    /// oldest packet is dropped (zero: drop at once, as Go's server does). A receiver that
    /// drained nothing for 100 ms is never waited for.
    pub backpressure: Duration,
    pub rate_limit: Option<RateLimit>,
    /// KeepAlive period (plus 0–5 s jitter).
    pub keepalive: Duration,
    /// A write stuck this long disconnects the client.
    pub write_timeout: Duration,
    /// Deadline for the HTTP head and for ClientInfo.
    pub handshake_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            tls: TlsMode::Plain,
            key: KeySource::Ephemeral,
            queue_depth: 32,
            disco_queue_depth: 32,
            backpressure: Duration::from_millis(5),
            rate_limit: None,
            keepalive: Duration::from_secs(60),
            write_timeout: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}
