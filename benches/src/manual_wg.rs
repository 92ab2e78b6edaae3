//! Kernel WireGuard configured by hand in namespace-lab hosts, the way an administrator would
//! with `ip`, `wg` and `nft`: the baseline that meshgate's subnet router and exit node are
//! measured against.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use ipnet::IpNet;
use meshgate_netns_lab::Host;

pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Full paths: inside the VM lab a shell's PATH may find busybox's versions first.
pub const IP: &str = "/usr/sbin/ip";
pub const WG: &str = "/usr/bin/wg";
pub const NFT: &str = "/usr/sbin/nft";

/// The same MTU as meshgate's interface, so both variants carry the same segment size.
pub const MTU: u32 = 1280;

pub use meshgate_bench::KeyPair;

/// One `peer` section of `wg set`.
#[derive(Debug, Clone)]
pub struct Peer {
    pub public: String,
    pub endpoint: SocketAddr,
    pub allowed_ips: Vec<IpNet>,
}

/// A WireGuard interface to create on a host.
#[derive(Debug, Clone)]
pub struct Device {
    pub name: String,
    pub listen_port: u16,
    /// The host's tunnel address (a /32, as meshgate gives its interface).
    pub address: IpNet,
    pub peers: Vec<Peer>,
    /// Routed into the interface in the main table.
    pub routes: Vec<IpNet>,
}

/// Creates and configures `device` on `host` with `ip link add ... type wireguard`, `wg set`,
/// `ip address`, MTU [`MTU`], and `ip route replace` for its routes.
pub fn set_up(
    host: &Host,
    device: &Device,
    keys: &KeyPair,
    key_dir: &std::path::Path,
) -> Result<()> {
    let name = device.name.as_str();
    host.exec_ok([IP, "link", "add", name, "type", "wireguard"])?;
    // `wg set` reads the private key from a file only; keep it private to root.
    let key_file: PathBuf = key_dir.join(format!("{}-{name}.key", host.name()));
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&key_file)?;
        writeln!(f, "{}", keys.private())?;
    }
    let port = device.listen_port.to_string();
    let mut args: Vec<String> = [WG, "set", name, "listen-port", &port, "private-key"]
        .map(str::to_owned)
        .into();
    args.push(key_file.display().to_string());
    for peer in &device.peers {
        let allowed: Vec<String> = peer.allowed_ips.iter().map(IpNet::to_string).collect();
        args.extend([
            "peer".to_owned(),
            peer.public.clone(),
            "endpoint".to_owned(),
            peer.endpoint.to_string(),
            "allowed-ips".to_owned(),
            allowed.join(","),
        ]);
    }
    let set = host.exec_ok(&args);
    let _ = std::fs::remove_file(&key_file);
    set?;
    host.exec_ok([
        IP,
        "address",
        "add",
        &device.address.to_string(),
        "dev",
        name,
    ])?;
    host.exec_ok([IP, "link", "set", name, "mtu", &MTU.to_string(), "up"])?;
    for route in &device.routes {
        host.exec_ok([IP, "route", "replace", &route.to_string(), "dev", name])?;
    }
    Ok(())
}

/// Makes `host` a router for its tunnel: IPv4 forwarding on, and packets from `tunnel_net`
/// leaving by any other interface than `wg_iface` masqueraded to the outgoing address (what
/// meshgate's subnet router and exit node do by default).
pub fn router_masquerade(host: &Host, wg_iface: &str, tunnel_net: IpNet) -> Result<()> {
    host.set_sysctl("net.ipv4.ip_forward", "1")?;
    let rules = format!(
        "table ip manual_bench {{\n\
         \tchain post {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr {tunnel_net} oifname != \"{wg_iface}\" masquerade\n\
         \t}}\n\
         }}\n"
    );
    let mut nft = host.command(NFT);
    nft.args(["-f", "-"]);
    pipe_in(&mut nft, &rules)?;
    Ok(())
}

/// Runs `command` with `input` on its stdin; its stdout, or an error with its stderr.
fn pipe_in(command: &mut Command, input: &str) -> Result<String> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(format!(
            "{:?} failed ({}): {}",
            command,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
