//! The command line. Flags follow `wg`, `ip` and `tailscale` where the meaning is the same.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Parser, Subcommand, ValueEnum};
use meshgate_wg::BackendChoice;

#[cfg(feature = "coordinator")]
mod coordinator;
#[cfg(feature = "relay")]
mod derp;
#[cfg(feature = "coordinator")]
pub use coordinator::*;
#[cfg(feature = "relay")]
pub use derp::DerpArgs;

#[derive(Debug, Parser)]
#[command(
    name = "meshgate",
    version,
    about = "A router appliance for WireGuard mesh networks"
)]
pub struct Cli {
    /// Log filter, as RUST_LOG (e.g. `info`, `meshgate_wg=debug`).
    #[arg(long, global = true, env = "MESHGATE_LOG", default_value = "info")]
    pub log: String,

    #[command(subcommand)]
    pub command: Command,
}

/// Where the daemon's local API listens.
pub const DEFAULT_SOCKET: &str = "/run/meshgate/meshgate.sock";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: apply the configuration, keep the kernel in line with it, adopt what a
    /// previous run left. Stopping it leaves the interface forwarding.
    Daemon(DaemonArgs),
    /// Inspect and program WireGuard interfaces directly.
    #[command(subcommand)]
    Wg(WgCommand),
    /// Build a throw-away lab of network namespaces, show what meshgate does in it, clean up.
    #[cfg(feature = "demo")]
    Demo(DemoArgs),
    /// Ask the running daemon for its interface, addresses and peers.
    Status(StatusArgs),
    /// Print this node's tailnet addresses (from the running daemon).
    Ip(IpArgs),
    /// Connect the running daemon to a tailnet, or change its settings (flags not given keep
    /// their current value; none at all resumes after `down`).
    Up(UpArgs),
    /// Stop the daemon's control session and take the peers off the interface (the interface
    /// and its addresses stay); `up` resumes.
    Down(SimpleArgs),
    /// Log this node out of the tailnet (its node key expires on the coordinator and is deleted
    /// here) and take the peers off the interface; joining again needs an auth key.
    Logout(SimpleArgs),
    /// Show the daemon's last netcheck: UDP, our STUN-mapped address, NAT behaviour, DERP
    /// latencies and the home region.
    Netcheck(NetcheckArgs),
    /// Disco-ping a peer (by name, tailnet IP or public key) and show the path each pong took:
    /// a direct address or a DERP region, and the round trip.
    Ping(PingArgs),
    /// The coordination server and its administration (on the store's file directly).
    #[cfg(feature = "coordinator")]
    #[command(subcommand)]
    Coordinator(CoordinatorCommand),
    /// Run a DERP relay (Tailscale's protocol) and its STUN server.
    #[cfg(feature = "relay")]
    Derp(DerpArgs),
    /// Check the appliance image's config file (and `meshgate.<key>=<value>` overrides on the
    /// kernel command line) and print it as shell assignments for its init script; on an
    /// error, fall back to the last good config.
    ApplianceConfig(ApplianceConfigArgs),
    /// Measure forwarding (packets per second) through a sender -> router -> receiver lab in
    /// network namespaces: plain, WireGuard, our BPF ACL, nftables sets and linear rules, each
    /// as a ratio to plain forwarding in the same run (`--suite` lists the other benchmarks).
    #[cfg(feature = "bench")]
    Bench(meshgate_bench::BenchArgs),
}

#[derive(Debug, clap::Args)]
pub struct ApplianceConfigArgs {
    /// The appliance config (`key = value` lines; see configs/appliance.conf).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// A kernel command line to take overrides from (the image passes /proc/cmdline).
    #[arg(long, value_name = "FILE")]
    pub cmdline: Option<PathBuf>,
    /// Where the last good config (`appliance.conf.good`, mode 0600) is kept.
    #[arg(long, value_name = "DIR")]
    pub state_dir: PathBuf,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum BackendArg {
    /// The kernel module where present, else wireguard-go.
    Auto,
    Kernel,
    Userspace,
}

/// Who enforces control's packet filter on what arrives from the mesh.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum FilterArg {
    /// The tc BPF program on the interface where it loads, else our nftables table.
    Auto,
    /// Our nftables table (`inet meshgate`) only.
    Nft,
    /// No filtering by meshgate: removes what an earlier run left. Only behind a firewall of
    /// your own.
    Off,
}

impl From<BackendArg> for BackendChoice {
    fn from(arg: BackendArg) -> Self {
        match arg {
            BackendArg::Auto => BackendChoice::Auto,
            BackendArg::Kernel => BackendChoice::Kernel,
            BackendArg::Userspace => BackendChoice::Userspace,
        }
    }
}

#[derive(Debug, clap::Args)]
#[command(group(ArgGroup::new("source").args(["config", "login_server"])))]
pub struct DaemonArgs {
    /// Interface configuration in wg-quick format (see configs/meshgate0.conf). Either this or
    /// --login-server; with neither, the daemon runs in control mode and waits for
    /// `meshgate up` on its socket.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Join a tailnet: the coordination server as https://HOST[:PORT] (TLS, port 443 by
    /// default), http://HOST[:PORT] (plain, 80) or HOST:PORT (plain).
    #[arg(long, value_name = "URL")]
    pub login_server: Option<String>,
    /// A PEM file of CA certificates to trust for https login servers, besides the public
    /// roots (a self-hosted coordinator's private CA). Also used by `meshgate up`.
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    pub login_server_ca: Option<PathBuf>,
    /// Pre-auth key for the first registration (a registered node's keys live in --state-dir).
    #[arg(
        long,
        env = "MESHGATE_AUTH_KEY",
        hide_env_values = true,
        conflicts_with = "config"
    )]
    pub auth_key: Option<String>,
    /// Name to register with (default: the system's hostname).
    #[arg(long, conflicts_with = "config")]
    pub hostname: Option<String>,
    /// Subnets behind this node to offer the tailnet, comma-separated (served to peers once
    /// approved: `meshgate coordinator routes approve` or the policy's autoApprovers).
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "CIDR,...",
        conflicts_with = "config"
    )]
    pub advertise_routes: Vec<ipnet::IpNet>,
    /// Offer this node as an exit node (0.0.0.0/0 and ::/0; served once approved).
    #[arg(long, conflicts_with = "config")]
    pub advertise_exit_node: bool,
    /// Route the subnets other nodes advertise (once approved on the coordinator).
    #[arg(long, conflicts_with = "config")]
    pub accept_routes: bool,
    /// Masquerade what the mesh sends into advertised subnets and out through an exit node
    /// (`false` keeps peers' source addresses, for LANs that route the tailnet back).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL", conflicts_with = "config")]
    pub snat_subnet_routes: bool,
    /// Send all traffic through this exit node (a peer's tailnet IP or MagicDNS name); the
    /// daemon's own control, DERP and WireGuard traffic stays outside the tunnel.
    #[arg(long, value_name = "IP|NAME", conflicts_with = "config")]
    pub exit_node: Option<String>,
    /// With --exit-node: keep the networks this host is directly on out of the tunnel.
    #[arg(long, conflicts_with = "config")]
    pub exit_node_allow_lan_access: bool,
    /// Turn on IPv4 and IPv6 forwarding when advertising routes or an exit node (set back by
    /// `meshgate down`); without it the daemon only warns when forwarding is off.
    #[arg(long, conflicts_with = "config")]
    pub enable_forwarding: bool,
    /// WireGuard's UDP port in control mode (--config mode takes ListenPort from the file).
    #[arg(long, default_value_t = 41641)]
    pub port: u16,
    /// The local API (unix socket, mode 0600) that `meshgate status` and `meshgate ip` use.
    /// Control mode: default /run/meshgate/meshgate.sock. --config mode: only when given.
    #[arg(long)]
    pub socket: Option<PathBuf>,
    #[arg(long, default_value = "meshgate0")]
    pub iface: String,
    /// Where the node's keys live: `private.key` (--config mode, when the file names none),
    /// `machine.key` and `node.key` (control mode).
    #[arg(long, default_value = "/var/lib/meshgate")]
    pub state_dir: PathBuf,
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    pub backend: BackendArg,
    /// How often to compare the kernel with the configuration and mend drift.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub reconcile_every: Duration,
    /// Who enforces the tailnet's packet filter (control mode).
    #[arg(long, value_enum, default_value_t = FilterArg::Auto)]
    pub filter: FilterArg,
    /// Where the BPF program's maps are pinned (one directory per interface below it), so
    /// enforcement outlives the daemon. Must be on a bpf filesystem.
    #[arg(long, default_value = meshgate_ebpf::DEFAULT_PIN_ROOT)]
    pub bpf_pin_root: PathBuf,
    /// Point this host's resolver at MagicDNS while it serves: --resolv-conf names
    /// 100.100.100.100 and the tailnet's search domains, and is put back at down, logout and
    /// exit (the host's file waits in --state-dir meanwhile). Off: the host's DNS is left alone
    /// (a file left rewritten by an earlier agent is put back).
    #[arg(long, conflicts_with = "config")]
    pub accept_dns: bool,
    /// The resolv.conf that --accept-dns rewrites; a symlink (systemd-resolved, resolvconf) is
    /// left alone with a warning.
    #[arg(long, default_value = meshgate_magicdns::RESOLV_CONF, value_name = "FILE")]
    pub resolv_conf: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum WgCommand {
    /// Make IFACE match FILE, creating it if needed; only differences are written.
    Apply {
        iface: String,
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
        backend: BackendArg,
    },
    /// Show an interface as the kernel (or wireguard-go) has it.
    Show {
        iface: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Delete an interface and meshgate's ip rules.
    Delete { iface: String },
    /// Print a new private key (base64), as `wg genkey`.
    Genkey,
    /// Read a private key on stdin, print its public key, as `wg pubkey`.
    Pubkey,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Machine-readable output (stable for scripts).
    #[arg(long)]
    pub json: bool,
    #[arg(long, default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// The coordination server: https://HOST[:PORT], http://HOST[:PORT] or HOST:PORT (a
    /// private CA is the daemon's --login-server-ca).
    #[arg(long, value_name = "URL")]
    pub login_server: Option<String>,
    /// Pre-auth key (needed to register a new node key: the first time, and after logout).
    #[arg(long, env = "MESHGATE_AUTH_KEY", hide_env_values = true)]
    pub auth_key: Option<String>,
    /// Name to register with.
    #[arg(long)]
    pub hostname: Option<String>,
    /// Subnets behind this node to offer the tailnet, comma-separated ("" for none).
    #[arg(long, value_delimiter = ',', value_name = "CIDR,...", value_parser = parse_route)]
    pub advertise_routes: Option<Vec<Option<ipnet::IpNet>>>,
    /// Offer this node as an exit node (`--advertise-exit-node=false` to stop).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub advertise_exit_node: Option<bool>,
    /// Route the subnets other nodes advertise (`--accept-routes=false` to stop).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub accept_routes: Option<bool>,
    /// Masquerade what the mesh sends into advertised subnets (`=false` keeps source addresses).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub snat_subnet_routes: Option<bool>,
    /// Send all traffic through this exit node (tailnet IP or name; "" to stop).
    #[arg(long, value_name = "IP|NAME")]
    pub exit_node: Option<String>,
    /// Keep the local networks out of the exit node's tunnel (`=false` to stop).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub exit_node_allow_lan_access: Option<bool>,
    #[arg(long, default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
}

/// `--advertise-routes ""` is an empty list.
fn parse_route(text: &str) -> Result<Option<ipnet::IpNet>, String> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    text.trim()
        .parse()
        .map(Some)
        .map_err(|e| format!("{text:?} is not a prefix like 10.0.0.0/24: {e}"))
}

/// Commands that only need the daemon's socket.
#[derive(Debug, clap::Args)]
pub struct SimpleArgs {
    #[arg(long, default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct NetcheckArgs {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    #[arg(long, default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct PingArgs {
    /// The peer: its name (or the first label of it), tailnet IP or WireGuard public key.
    pub peer: String,
    /// How many pings (each waits up to 5 s for its pong).
    #[arg(short = 'c', long, default_value_t = 4)]
    pub count: u32,
    #[arg(long, default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct IpArgs {
    /// Only the IPv4 address.
    #[arg(short = '4', conflicts_with = "v6")]
    pub v4: bool,
    /// Only the IPv6 address.
    #[arg(short = '6')]
    pub v6: bool,
    #[arg(long, default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
}

#[cfg(feature = "demo")]
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    pub backend: BackendArg,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, "s"), |i| text.split_at(i));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 10s or 500ms"))?;
    let duration = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        _ => return Err(format!("{text:?}: unit must be ms, s or m")),
    };
    if duration.is_zero() {
        return Err("the interval must be more than zero".into());
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5h").is_err());
    }

    #[test]
    fn daemon_needs_exactly_one_source() {
        let parse = |args: &[&str]| Cli::try_parse_from([&["meshgate", "daemon"], args].concat());
        assert!(parse(&[]).is_ok(), "control mode waiting for `up`");
        assert!(parse(&["--config", "a.conf", "--login-server", "h:1"]).is_err());
        assert!(parse(&["--auth-key", "k", "--config", "a.conf"]).is_err());
        assert!(parse(&["--config", "a.conf"]).is_ok());
        assert!(parse(&["--login-server", "h:1", "--auth-key", "k"]).is_ok());
    }

    #[test]
    fn tls_flags() {
        let cli = |args: &[&str]| Cli::try_parse_from([&["meshgate"], args].concat());
        assert!(
            cli(&[
                "daemon",
                "--login-server",
                "https://c.example",
                "--login-server-ca",
                "ca.pem"
            ])
            .is_ok()
        );
        assert!(
            cli(&[
                "daemon",
                "--config",
                "a.conf",
                "--login-server-ca",
                "ca.pem"
            ])
            .is_err()
        );
    }

    #[test]
    fn up_flags() {
        let parse = |args: &[&str]| match Cli::try_parse_from([&["meshgate", "up"], args].concat())
            .map(|c| c.command)
        {
            Ok(Command::Up(up)) => Ok(up),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e),
        };
        let up = parse(&[]).unwrap();
        assert!(up.login_server.is_none() && up.accept_routes.is_none());
        assert!(up.advertise_routes.is_none());
        let up = parse(&[
            "--accept-routes",
            "--advertise-routes",
            "10.0.0.0/24,10.1.0.0/24",
        ])
        .unwrap();
        assert_eq!(up.accept_routes, Some(true));
        assert_eq!(up.advertise_routes.unwrap().len(), 2);
        assert_eq!(
            parse(&["--accept-routes=false"]).unwrap().accept_routes,
            Some(false)
        );
        let up = parse(&["--advertise-routes", ""]).unwrap();
        assert_eq!(up.advertise_routes, Some(vec![None]));
        assert!(parse(&["--advertise-routes", "nope"]).is_err());
    }

    #[test]
    fn command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
