//! `meshgate coordinator ...`: the coordination server's and its admin commands' flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;

use super::parse_duration;

#[derive(Debug, Subcommand)]
pub enum CoordinatorCommand {
    /// Run the coordination server.
    Serve(Box<ServeArgs>),
    /// Pre-auth keys.
    #[command(subcommand)]
    Authkey(AuthkeyCommand),
    /// Registered nodes.
    #[command(subcommand)]
    Nodes(NodesCommand),
    /// Advertised and approved subnet routes.
    #[command(subcommand)]
    Routes(RoutesCommand),
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on for clients (`/key` and the ts2021 upgrade): plain HTTP, or
    /// HTTPS with --tls-cert and --tls-key.
    #[arg(long)]
    pub listen: SocketAddr,
    /// Serve HTTPS with this certificate chain (PEM, leaf first); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1); needs --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The SQLite database (created with its schema if missing).
    #[arg(long)]
    pub db: PathBuf,
    /// Where the control key (`control.key`) lives; default: the database's directory.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Tailnet policy (HuJSON); default: allow all. SIGHUP re-reads it.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// DERP map as JSON (tailcfg's DERPMap); default: --derp-server's one region, else none.
    #[arg(long, conflicts_with = "derp_server")]
    pub derp_map: Option<PathBuf>,
    /// A `meshgate derp` relay to offer as the tailnet's one DERP region (900 "meshgate"):
    /// https://HOST[:PORT] or http://HOST[:PORT] (plain, for labs).
    #[arg(long, value_name = "URL")]
    pub derp_server: Option<String>,
    /// The relay's certificate name, or `sha256-raw:<hex>` to pin a self-signed one (as
    /// `meshgate derp --self-signed` prints).
    #[arg(long, value_name = "NAME", requires = "derp_server")]
    pub derp_cert_name: Option<String>,
    /// The relay's STUN port (-1: none).
    #[arg(
        long,
        default_value_t = 3478,
        allow_negative_numbers = true,
        requires = "derp_server"
    )]
    pub derp_stun_port: i32,
    /// Upstream DNS resolver the nodes' MagicDNS forwards to (`DNSConfig.Resolvers`): an IP,
    /// `IP:PORT` or `[IPv6]:PORT`; repeat for more. None: each node keeps its own
    /// /etc/resolv.conf servers.
    #[arg(long = "dns-resolver", value_name = "ADDR")]
    pub dns_resolvers: Vec<String>,
    /// MagicDNS base domain: node `gw` is `gw.<domain>`.
    #[arg(long, value_name = "DOMAIN", default_value = "tailnet.meshgate")]
    pub base_domain: String,
    /// Admin API unix socket; default: admin.sock next to the database.
    #[arg(long, value_name = "PATH")]
    pub admin_socket: Option<PathBuf>,
    /// Also serve the admin API on this TCP address (loopback only unless --admin-listen-any).
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
    /// Allow a non-loopback --admin-listen address.
    #[arg(long, requires = "admin_listen")]
    pub admin_listen_any: bool,
    /// The admin API's bearer token file; default: admin.token next to the database
    /// (created 0600).
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// How often to look for changes other processes made to the database (`routes approve`).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub poll_every: Duration,
}

#[derive(Debug, Subcommand)]
pub enum AuthkeyCommand {
    /// Create a pre-auth key and print its secret (shown this once only).
    Create {
        #[arg(long)]
        db: PathBuf,
        /// The owning user (created if new).
        #[arg(long)]
        user: String,
        /// Usable by any number of machines (default: once).
        #[arg(long)]
        reusable: bool,
        /// Nodes that join with it are removed once offline.
        #[arg(long)]
        ephemeral: bool,
        /// Tags the nodes get, comma-separated (`tag:a,tag:b`).
        #[arg(long, value_delimiter = ',')]
        tags: Vec<String>,
        /// Lifetime of the key (e.g. 90m, 24h, 7d); default: no expiry.
        #[arg(long, value_parser = parse_long_duration)]
        expiry: Option<Duration>,
    },
    /// List the pre-auth keys (never their secrets).
    List {
        #[arg(long)]
        db: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a pre-auth key (nodes that joined with it stay).
    Revoke {
        #[arg(long)]
        db: PathBuf,
        /// The key's id, as `authkey list` shows it.
        id: i64,
    },
}

#[derive(Debug, Subcommand)]
pub enum NodesCommand {
    /// List the nodes.
    List {
        #[arg(long)]
        db: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Delete a node: it disappears from every peer.
    Delete {
        #[arg(long)]
        db: PathBuf,
        /// Node name (given name or hostname) or numeric id.
        node: String,
    },
    /// Expire a node's key now: peers drop it until it logs in again with an auth key.
    Expire {
        #[arg(long)]
        db: PathBuf,
        /// Node name (given name or hostname) or numeric id.
        node: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum RoutesCommand {
    /// List each node's advertised and approved routes.
    List {
        #[arg(long)]
        db: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Set NODE's approved routes to exactly CIDR,... (only advertised ones; "" approves none).
    Approve {
        #[arg(long)]
        db: PathBuf,
        /// Node name (given name or hostname) or numeric id.
        node: String,
        /// Comma-separated prefixes, e.g. 192.168.1.0/24,10.0.0.0/8.
        cidrs: String,
    },
}

/// Durations for key lifetimes: `90s`, `30m`, `24h`, `7d`.
fn parse_long_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, "s"), |i| text.split_at(i));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 24h or 7d"))?;
    let seconds = match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86400),
        _ => return Err(format!("{text:?}: unit must be s, m, h or d")),
    }
    .ok_or_else(|| format!("{text:?} is too long"))?;
    if seconds == 0 {
        return Err("the duration must be more than zero".into());
    }
    Ok(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::Cli;

    #[test]
    fn long_durations() {
        assert_eq!(
            parse_long_duration("24h").unwrap(),
            Duration::from_secs(86400)
        );
        assert_eq!(
            parse_long_duration("7d").unwrap(),
            Duration::from_secs(7 * 86400)
        );
        assert!(parse_long_duration("0h").is_err());
        assert!(parse_long_duration("1w").is_err());
    }

    #[test]
    fn serve_tls_flags() {
        let cli = |args: &[&str]| Cli::try_parse_from([&["meshgate"], args].concat());
        let serve = [
            "coordinator",
            "serve",
            "--listen",
            "127.0.0.1:1",
            "--db",
            "d",
        ];
        assert!(cli(&serve).is_ok());
        assert!(cli(&[&serve[..], &["--tls-cert", "c", "--tls-key", "k"]].concat()).is_ok());
        assert!(cli(&[&serve[..], &["--tls-cert", "c"]].concat()).is_err());
        assert!(cli(&[&serve[..], &["--tls-key", "k"]].concat()).is_err());
    }
}
