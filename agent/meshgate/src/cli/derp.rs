//! `meshgate derp`: the relay server's flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::ArgGroup;

#[derive(Debug, clap::Args)]
#[command(group(ArgGroup::new("transport").required(true).args(["cert", "self_signed", "plain_http"])))]
pub struct DerpArgs {
    /// Address for the relay's HTTPS (or, with --plain-http, HTTP) listener.
    #[arg(long, default_value = "0.0.0.0:443")]
    pub listen: SocketAddr,
    /// UDP port of the STUN server, on the --listen address (0: no STUN server).
    #[arg(long, default_value_t = 3478)]
    pub stun_port: u16,
    /// TLS certificate chain (PEM, leaf first); needs --key.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The certificate's private key (PEM); needs --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// A self-signed certificate for --hostname; clients pin it with the printed
    /// `CertName` (sha256-raw:...) in the DERP map.
    #[arg(long)]
    pub self_signed: bool,
    /// Plain HTTP, no TLS (tests, or behind a TLS terminator).
    #[arg(long)]
    pub plain_http: bool,
    /// Names for the self-signed certificate, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "localhost")]
    pub hostname: Vec<String>,
    /// Where the relay's key (`derp.key`, its identity for clients) lives.
    #[arg(long, default_value = "/var/lib/meshgate")]
    pub state_dir: PathBuf,
    /// Per-client receive rate limit in bytes per second (default: none).
    #[arg(long, value_name = "BYTES")]
    pub rate_limit: Option<u64>,
    /// Burst for --rate-limit in bytes (at least one packet, 64 KiB).
    #[arg(long, value_name = "BYTES", requires = "rate_limit")]
    pub rate_burst: Option<u64>,
}
