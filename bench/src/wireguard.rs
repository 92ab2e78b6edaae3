//! The WireGuard variant's tunnel: snd and rtr are its two ends, over the snd-rtr veth. snd
//! encrypts, rtr decrypts and forwards to rcv, so the path measured is plain forwarding plus
//! one encryption and one decryption. Kernel WireGuard where `ip link add type wireguard`
//! works, else wireguard-go; [`Backend`] says which.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use meshgate_netns_lab::{Host, Proc};
use serde::Serialize;

use crate::error::Error;
use crate::lab::{RCV, RCV_NET, RTR_RCV, RTR_SND, SND, Topo, unique_suffix};
use crate::stop::Stop;

const WIREGUARD_GO: &str = "wireguard-go";
const PORT: u16 = 51820;
/// WireGuard's default MTU on a 1500-byte link (1500 - 80).
pub const MTU: usize = 1420;
const TUNNEL_NET: &str = "10.72.0.0/24";
const SND_TUN: &str = "10.72.0.1/24";
/// snd's tunnel address: the source of what goes through the tunnel.
pub const SND_TUNNEL: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 72, 0, 1);
const RTR_TUN: &str = "10.72.0.2/24";
const LINK_WAIT: Duration = Duration::from_secs(5);

/// Which WireGuard implementation carried the tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    Kernel,
    WireguardGo,
}

impl Backend {
    pub fn label(self) -> &'static str {
        match self {
            Backend::Kernel => "kernel",
            Backend::WireguardGo => "wireguard-go (no kernel module)",
        }
    }
}

/// The tunnel's two interfaces and, for wireguard-go, its processes (killed on drop).
#[derive(Debug)]
pub struct Tunnel {
    pub backend: Backend,
    /// snd's WireGuard interface (routes to rcv point at it in the WireGuard variant).
    pub snd_if: String,
    pub rtr_if: String,
    _procs: Vec<Proc>,
}

/// How the WireGuard variant is built, for the output.
pub const TOPOLOGY: &str = "tunnel ends snd and rtr over the snd-rtr veth: snd encrypts, rtr \
                            decrypts and forwards to rcv";

impl Tunnel {
    /// Creates both ends and checks that snd reaches rcv through the tunnel; leaves snd routed
    /// over the plain path.
    pub fn build(topo: &Topo, stop: &Stop) -> Result<Tunnel, Error> {
        // Interface names double as wireguard-go's socket names in /var/run/wireguard, which
        // every namespace shares: unique per process and lab.
        let tag = unique_suffix();
        let snd_if = format!("wgs{tag}");
        let rtr_if = format!("wgr{tag}");
        if snd_if.len() > 15 {
            return Err(Error::Setup(format!("interface name {snd_if} too long")));
        }
        let mut procs = Vec::new();
        let backend = if kernel_link(&topo.rtr, &rtr_if) {
            if !kernel_link(&topo.snd, &snd_if) {
                return Err(Error::Setup(
                    "kernel WireGuard worked in rtr but not in snd".into(),
                ));
            }
            Backend::Kernel
        } else {
            for (host, name) in [(&topo.rtr, &rtr_if), (&topo.snd, &snd_if)] {
                procs.push(userspace_link(host, name, stop)?);
            }
            Backend::WireguardGo
        };
        let tunnel = Tunnel {
            backend,
            snd_if,
            rtr_if,
            _procs: procs,
        };
        let snd_keys = KeyPair::generate()?;
        let rtr_keys = KeyPair::generate()?;
        configure(
            &topo.rtr,
            &tunnel.rtr_if,
            RTR_TUN,
            &rtr_keys,
            &snd_keys.public,
            &format!("{SND}:{PORT}"),
            // Inner packets from snd carry its tunnel address (the route's preferred source).
            "10.72.0.1/32",
        )?;
        configure(
            &topo.snd,
            &tunnel.snd_if,
            SND_TUN,
            &snd_keys,
            &rtr_keys.public,
            &format!("{RTR_SND}:{PORT}"),
            &format!("10.72.0.2/32,{RCV_NET}"),
        )?;
        topo.rcv.add_route(
            TUNNEL_NET
                .parse()
                .map_err(|_| Error::Setup("subnet".into()))?,
            RTR_RCV.into(),
        )?;
        tunnel.route_through(topo)?;
        let reached = topo.snd.ping(RCV.into(), 5);
        topo.route_plain()?;
        if !reached {
            return Err(Error::Setup(format!(
                "snd cannot ping rcv through the {} tunnel",
                backend.label()
            )));
        }
        Ok(tunnel)
    }

    /// Routes snd's traffic for rcv into the tunnel.
    pub fn route_through(&self, topo: &Topo) -> Result<(), Error> {
        exec(
            &topo.snd,
            &["ip", "route", "replace", RCV_NET, "dev", &self.snd_if],
        )
    }
}

fn kernel_link(host: &Host, name: &str) -> bool {
    exec(host, &["ip", "link", "add", name, "type", "wireguard"]).is_ok()
}

fn userspace_link(host: &Host, name: &str, stop: &Stop) -> Result<Proc, Error> {
    let mut cmd = host.command(WIREGUARD_GO);
    cmd.args(["-f", name])
        // Debian's build refuses to run on Linux without this acknowledgement.
        .env("WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut proc = host
        .spawn(cmd)
        .map_err(|e| Error::Setup(format!("{WIREGUARD_GO} not startable: {e}")))?;
    // wireguard-go creates the TUN device, then its UAPI socket: wait for the socket, which
    // `wg set` needs, polling (no event to wait on), bounded.
    let sock = std::path::PathBuf::from(format!("/var/run/wireguard/{name}.sock"));
    let end = Instant::now() + LINK_WAIT;
    while !sock.exists() {
        stop.check()?;
        if let Ok(Some(status)) = proc.try_wait() {
            return Err(Error::Setup(format!(
                "{WIREGUARD_GO} {name} exited: {status}"
            )));
        }
        if Instant::now() > end {
            return Err(Error::Setup(format!(
                "{WIREGUARD_GO} {name}: no {} after {LINK_WAIT:?}",
                sock.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(proc)
}

fn configure(
    host: &Host,
    name: &str,
    addr: &str,
    keys: &KeyPair,
    peer_public: &str,
    endpoint: &str,
    allowed: &str,
) -> Result<(), Error> {
    let port = PORT.to_string();
    let mut cmd = host.command("wg");
    // The private key goes through a pipe, never a file or the command line.
    cmd.args([
        "set",
        name,
        "listen-port",
        &port,
        "private-key",
        "/dev/stdin",
        "peer",
        peer_public,
        "endpoint",
        endpoint,
        "allowed-ips",
        allowed,
    ]);
    pipe_in(&mut cmd, &keys.private)?;
    exec(host, &["ip", "address", "add", addr, "dev", name])?;
    exec(
        host,
        &["ip", "link", "set", name, "mtu", &MTU.to_string(), "up"],
    )
}

/// A key pair from `wg genkey` / `wg pubkey` (base64); the private half is redacted in Debug.
pub struct KeyPair {
    private: String,
    pub public: String,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("private", &"<redacted>")
            .field("public", &self.public)
            .finish()
    }
}

impl KeyPair {
    pub fn generate() -> Result<KeyPair, Error> {
        let private = pipe_in(Command::new("wg").arg("genkey"), "")?;
        let public = pipe_in(Command::new("wg").arg("pubkey"), &private)?;
        Ok(KeyPair {
            private: private.trim().to_owned(),
            public: public.trim().to_owned(),
        })
    }

    /// For `wg set ... private-key`, through a pipe or a 0600 file only.
    pub fn private(&self) -> &str {
        &self.private
    }
}

fn exec(host: &Host, args: &[&str]) -> Result<(), Error> {
    host.exec_ok(args)
        .map(drop)
        .map_err(|e| Error::Setup(e.to_string()))
}

/// Runs `cmd` with `input` on stdin; its stdout, or an error with its stderr.
pub(crate) fn pipe_in(cmd: &mut Command, input: &str) -> Result<String, Error> {
    let what = format!("{:?}", cmd.get_args().collect::<Vec<_>>());
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io(format!("starting {:?}", cmd.get_program()), e))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| Error::io("writing to a command's stdin", e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::io("waiting for a command", e))?;
    if !out.status.success() {
        return Err(Error::Setup(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        // wireguard-go is SIGKILLed with its namespace and cannot remove its UAPI socket.
        if self.backend == Backend::WireguardGo {
            for name in [&self.snd_if, &self.rtr_if] {
                let _ = std::fs::remove_file(format!("/var/run/wireguard/{name}.sock"));
            }
        }
    }
}
