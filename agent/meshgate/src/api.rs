//! The daemon's local API: a unix socket (mode 0600, so root-only in practice) with a one-line
//! protocol. A client connects, writes one command line, and reads one JSON object followed by
//! a newline; then the daemon closes the connection. Commands: `status` (→ [`Status`]),
//! `up <UpRequest as JSON>`, `down`, `logout` (→ `{"ok": "what happened"}`); any failure is
//! `{"error": "..."}`. `meshgate status|ip|up|down|logout` are its clients.

use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use crate::cli::{IpArgs, SimpleArgs, StatusArgs, UpArgs};

/// `status --json`: stable field names for scripts.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Status {
    /// `kernel` or `userspace` (wireguard-go); empty before the first apply.
    pub backend: String,
    pub interface: String,
    /// `control` (joined via --login-server) or `config` (--config file).
    pub mode: String,
    /// The coordination server, in control mode.
    pub login_server: Option<String>,
    /// Control mode: `up` (a session with control runs), `down` (none: before the first
    /// `meshgate up`, after `meshgate down` or a fatal control error), `logged-out`.
    /// `--config` mode: `config`.
    #[serde(default)]
    pub state: String,
    /// The last fatal control error (refused auth key, …), cleared by a successful `up`.
    /// Not `error`: that key marks a refused request in the socket protocol.
    #[serde(default)]
    pub control_error: Option<String>,
    #[serde(rename = "self")]
    pub self_node: SelfStatus,
    pub peers: Vec<PeerStatus>,
    /// WireGuard's port mapped on the gateway (UPnP, NAT-PMP or PCP), control mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_mapping: Option<String>,
    /// DERP relays (control mode, once control sent a DERP map).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derp: Option<DerpStatus>,
    /// Access control on what arrives from the mesh (control mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<FilterStatus>,
    /// The exit node chosen (`--exit-node`) and whether its default routes are in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_node: Option<String>,
    /// Where MagicDNS serves (control mode, while control turns it on), or why it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub magic_dns: Option<String>,
    /// Things the admin should fix (forwarding off on a subnet router, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FilterStatus {
    /// `bpf` (the tc program on the interface), `nftables` (our `inet meshgate` table), `off`
    /// (`--filter off`) or `none` (nothing applied yet).
    pub enforcement: String,
    /// Entries of the policy in force; `None` until control's filter reached this run (the
    /// kernel then holds what the previous run left, or denies everything).
    pub entries: Option<usize>,
    /// Why the last filter or backend change was refused (the previous policy stays).
    pub error: Option<String>,
    /// Why BPF is not used, when nftables enforces in `auto` mode.
    pub bpf_unavailable: Option<String>,
    /// Packets from the mesh passed (by a rule, a flow or as ICMP replies) and dropped: since
    /// the BPF program's maps were created, or since nftables last replaced our table.
    pub passed: Option<u64>,
    pub dropped: Option<u64>,
    /// Of `dropped`: unparseable or truncated headers (BPF only).
    pub malformed: Option<u64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DerpStatus {
    /// Our home region (the one peers reach us through), when netcheck found one.
    pub home: Option<u16>,
    pub regions: Vec<DerpRegionStatus>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DerpRegionStatus {
    pub id: u16,
    pub code: String,
    pub connected: bool,
    /// The last connection error while not connected.
    pub error: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SelfStatus {
    pub public_key: Option<String>,
    /// The interface's addresses without prefix length (tailnet IPs in control mode).
    pub addresses: Vec<String>,
    pub listen_port: u16,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PeerStatus {
    /// The peer's MagicDNS name from control, without the trailing dot (control mode; null
    /// in `--config` mode or when control sent none).
    pub name: Option<String>,
    /// Whether control says the peer is online (null: not said, or `--config` mode).
    #[serde(default)]
    pub online: Option<bool>,
    pub public_key: String,
    /// Its host addresses (/32, /128 allowed IPs), without prefix length.
    pub tailnet_ips: Vec<String>,
    pub allowed_ips: Vec<String>,
    pub endpoint: Option<String>,
    /// Control mode: `direct` (endpoint is the peer's address), `relay` (endpoint is our
    /// loopback bridge into DERP region `relay_region`) or `unreachable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The round trip of the last disco pong on the direct path, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_region: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_region_code: Option<String>,
    /// Seconds since the Unix epoch.
    pub latest_handshake: Option<u64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// `up`'s settings; a field left out keeps the daemon's current value.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct UpRequest {
    pub login_server: Option<String>,
    pub auth_key: Option<String>,
    pub hostname: Option<String>,
    pub advertise_routes: Option<Vec<String>>,
    pub advertise_exit_node: Option<bool>,
    pub accept_routes: Option<bool>,
    #[serde(default)]
    pub snat_subnet_routes: Option<bool>,
    /// `Some("")` stops using an exit node.
    #[serde(default)]
    pub exit_node: Option<String>,
    #[serde(default)]
    pub exit_node_allow_lan_access: Option<bool>,
}

/// `meshgate netcheck`: the daemon's last netcheck report.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NetcheckAnswer {
    /// Any STUN answer came back.
    pub udp: bool,
    pub ipv4: bool,
    pub ipv6: bool,
    /// Our address as the first IPv4 / IPv6 STUN server saw it (WireGuard's port, when
    /// `shared_port`).
    pub global_v4: Option<String>,
    pub global_v6: Option<String>,
    /// Whether two STUN servers saw different mappings (an endpoint-dependent NAT).
    pub mapping_varies_by_dest_ip: Option<bool>,
    /// The home DERP region (0: none).
    pub preferred_derp: u16,
    /// Round trip per DERP region, in milliseconds.
    pub region_latency_ms: std::collections::BTreeMap<u16, f64>,
    /// Whether STUN and disco run on WireGuard's port (raw sockets); if not, disco is off.
    pub shared_port: bool,
    /// WireGuard's port mapped on the gateway: protocol, external address, lease.
    #[serde(default)]
    pub port_mapping: Option<String>,
    /// Seconds since the report was taken.
    pub age_secs: u64,
}

/// `meshgate ping`: one disco ping's answer.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PingAnswer {
    /// The peer's name (or its public key when control gave none).
    pub peer: String,
    pub tailnet_ip: Option<String>,
    /// `direct` or `derp`.
    pub via: String,
    /// The direct address pinged.
    pub endpoint: Option<String>,
    /// The DERP region it went through.
    pub region: Option<u16>,
    pub latency_ms: f64,
}

/// The answer to `up`, `down`, `logout`: what happened, or what went wrong.
pub type Outcome = Result<String, String>;

/// A request from a local API connection to the daemon's main loop (which owns the engine).
#[derive(Debug)]
pub enum Request {
    Status(oneshot::Sender<Status>),
    Up(UpRequest, oneshot::Sender<Outcome>),
    Down(oneshot::Sender<Outcome>),
    Logout(oneshot::Sender<Outcome>),
    Netcheck(oneshot::Sender<Result<NetcheckAnswer, String>>),
    /// A peer by name, tailnet IP or public key.
    Ping(String, oneshot::Sender<Result<PingAnswer, String>>),
}

impl Request {
    /// Answers a request the daemon's mode cannot serve (status is always served).
    pub fn refuse(self, why: &str) -> Option<oneshot::Sender<Status>> {
        match self {
            Request::Status(reply) => return Some(reply),
            Request::Up(_, reply) | Request::Down(reply) | Request::Logout(reply) => {
                let _ = reply.send(Err(why.to_owned()));
            }
            Request::Netcheck(reply) => {
                let _ = reply.send(Err(why.to_owned()));
            }
            Request::Ping(_, reply) => {
                let _ = reply.send(Err(why.to_owned()));
            }
        }
        None
    }
}

/// The JSON line for a request answered with a value (or an error).
async fn answer_value<T: Serialize>(
    sent: bool,
    rx: oneshot::Receiver<Result<T, String>>,
) -> String {
    let answer = match sent {
        true => rx.await.ok(),
        false => None,
    };
    match answer {
        Some(Ok(value)) => serde_json::to_string(&value).expect("answers serialize"),
        Some(Err(error)) => serde_json::json!({ "error": error }).to_string(),
        None => serde_json::json!({"error": "the daemon is stopping"}).to_string(),
    }
}

/// Binds `path` (parent created 0755, socket 0600). A stale socket left by a killed daemon is
/// replaced; one a live daemon answers on is an error.
pub fn bind(path: &Path) -> Result<UnixListener, String> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(|e| format!("creating {}: {e}", parent.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(format!(
                "another meshgate daemon is serving {} (stop it, or give this one --socket)",
                path.display()
            ));
        }
        std::fs::remove_file(path)
            .map_err(|e| format!("removing the stale socket {}: {e}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).map_err(|e| format!("listening on {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("chmod 0600 {}: {e}", path.display()))?;
    Ok(listener)
}

/// Answers connections on `listener` by asking the main loop through `requests`.
pub async fn serve(listener: UnixListener, requests: mpsc::Sender<Request>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!("local API: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let requests = requests.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, requests).await {
                tracing::debug!("local API connection: {e}");
            }
        });
    }
}

async fn answer(stream: UnixStream, requests: mpsc::Sender<Request>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let limited = read.take(4096);
    let n = tokio::time::timeout(
        Duration::from_secs(5),
        BufReader::new(limited).read_line(&mut line),
    )
    .await
    .map_err(|_| std::io::Error::new(ErrorKind::TimedOut, "no request line"))??;
    let stopping = || serde_json::json!({"error": "the daemon is stopping"}).to_string();
    let line = line.trim();
    let (command, rest) = line.split_once(' ').unwrap_or((line, ""));
    let outcome = |rx: Option<oneshot::Receiver<Outcome>>| async move {
        match rx {
            Some(rx) => match rx.await {
                Ok(Ok(message)) => serde_json::json!({ "ok": message }).to_string(),
                Ok(Err(error)) => serde_json::json!({ "error": error }).to_string(),
                Err(_) => stopping(),
            },
            None => stopping(),
        }
    };
    let reply = match command {
        "status" if n > 0 => {
            let (tx, rx) = oneshot::channel();
            let status = if requests.send(Request::Status(tx)).await.is_ok() {
                rx.await.ok()
            } else {
                None
            };
            match status {
                Some(status) => serde_json::to_string(&status).expect("status serializes"),
                None => stopping(),
            }
        }
        "netcheck" => {
            let (tx, rx) = oneshot::channel();
            answer_value(requests.send(Request::Netcheck(tx)).await.is_ok(), rx).await
        }
        "ping" if !rest.is_empty() => {
            let (tx, rx) = oneshot::channel();
            let sent = requests
                .send(Request::Ping(rest.to_owned(), tx))
                .await
                .is_ok();
            answer_value(sent, rx).await
        }
        "up" | "down" | "logout" => {
            let (tx, rx) = oneshot::channel();
            let request = match command {
                "down" => Some(Request::Down(tx)),
                "logout" => Some(Request::Logout(tx)),
                _ => match serde_json::from_str::<UpRequest>(if rest.is_empty() {
                    "{}"
                } else {
                    rest
                }) {
                    Ok(up) => Some(Request::Up(up, tx)),
                    Err(e) => {
                        let _ = tx.send(Err(format!("bad up request: {e}")));
                        None
                    }
                },
            };
            let sent = match request {
                Some(request) => requests.send(request).await.is_ok(),
                None => true,
            };
            outcome(sent.then_some(rx)).await
        }
        other => serde_json::json!({
            "error": format!("unknown request {other:?}; try status, up, down or logout")
        })
        .to_string(),
    };
    write.write_all(reply.as_bytes()).await?;
    write.write_all(b"\n").await?;
    write.shutdown().await
}

/// Sends one command `line` to the daemon at `socket` and returns its JSON answer; an
/// `{"error": ...}` answer is an `Err`.
pub(crate) async fn exchange(
    socket: &Path,
    line: &str,
    wait: Duration,
) -> Result<serde_json::Value, String> {
    let not_running = |e: std::io::Error| {
        format!(
            "cannot reach the daemon: {e} (is meshgate daemon running? socket {})",
            socket.display()
        )
    };
    let exchange = async {
        let mut stream = UnixStream::connect(socket).await.map_err(not_running)?;
        stream
            .write_all(format!("{line}\n").as_bytes())
            .await
            .map_err(|e| format!("{}: {e}", socket.display()))?;
        let mut reply = String::new();
        (&mut stream)
            .take(16 << 20)
            .read_to_string(&mut reply)
            .await
            .map_err(|e| format!("{}: {e}", socket.display()))?;
        Ok::<_, String>(reply)
    };
    let reply = tokio::time::timeout(wait, exchange)
        .await
        .map_err(|_| format!("the daemon at {} did not answer", socket.display()))??;
    let value: serde_json::Value = serde_json::from_str(&reply)
        .map_err(|e| format!("unreadable answer from {}: {e}", socket.display()))?;
    if let Some(error) = value.get("error").and_then(|e| e.as_str()) {
        return Err(format!("the daemon says: {error}"));
    }
    Ok(value)
}

/// Asks the daemon at `socket` for its status.
pub async fn fetch_status(socket: &Path) -> Result<Status, String> {
    let value = exchange(socket, "status", Duration::from_secs(10)).await?;
    serde_json::from_value(value)
        .map_err(|e| format!("unreadable answer from {}: {e}", socket.display()))
}

/// How long `meshgate up` waits for the daemon (which waits up to [`UP_WAIT`] for control).
const UP_CLIENT_WAIT: Duration = Duration::from_secs(60);
/// How long the daemon waits for the first network map before answering `up`.
pub const UP_WAIT: Duration = Duration::from_secs(30);

async fn command(socket: &Path, line: &str) -> Result<(), Box<dyn std::error::Error>> {
    let value = exchange(socket, line, UP_CLIENT_WAIT).await?;
    if let Some(message) = value.get("ok").and_then(|m| m.as_str()) {
        println!("{message}");
    }
    Ok(())
}

pub async fn up(args: UpArgs) -> Result<(), Box<dyn std::error::Error>> {
    let request = UpRequest {
        login_server: args.login_server,
        auth_key: args.auth_key,
        hostname: args.hostname,
        advertise_routes: args
            .advertise_routes
            .map(|routes| routes.iter().flatten().map(ToString::to_string).collect()),
        advertise_exit_node: args.advertise_exit_node,
        accept_routes: args.accept_routes,
        snat_subnet_routes: args.snat_subnet_routes,
        exit_node: args.exit_node,
        exit_node_allow_lan_access: args.exit_node_allow_lan_access,
    };
    let json = serde_json::to_string(&request)?;
    command(&args.socket, &format!("up {json}")).await
}

pub async fn down(args: SimpleArgs) -> Result<(), Box<dyn std::error::Error>> {
    command(&args.socket, "down").await
}

pub async fn logout(args: SimpleArgs) -> Result<(), Box<dyn std::error::Error>> {
    command(&args.socket, "logout").await
}

pub async fn status(args: StatusArgs) -> Result<(), Box<dyn std::error::Error>> {
    let status = fetch_status(&args.socket).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    print!("{}", render(&status, SystemTime::now()));
    Ok(())
}

pub async fn ip(args: IpArgs) -> Result<(), Box<dyn std::error::Error>> {
    let status = fetch_status(&args.socket).await?;
    for address in &status.self_node.addresses {
        let v4 = !address.contains(':');
        if (args.v4 && !v4) || (args.v6 && v4) {
            continue;
        }
        println!("{address}");
    }
    Ok(())
}

fn render_filter(filter: &FilterStatus) -> String {
    let mut line = format!("filter: {}", filter.enforcement);
    match filter.entries {
        Some(n) => line.push_str(&format!(", {n} entries")),
        None => line.push_str(", no filter from control yet"),
    }
    if let (Some(passed), Some(dropped)) = (filter.passed, filter.dropped) {
        line.push_str(&format!(", passed {passed}, dropped {dropped}"));
        if let Some(malformed) = filter.malformed.filter(|m| *m > 0) {
            line.push_str(&format!(" ({malformed} malformed)"));
        }
    }
    if let Some(why) = &filter.bpf_unavailable {
        line.push_str(&format!("\n  BPF unavailable: {why}"));
    }
    if let Some(error) = &filter.error {
        line.push_str(&format!("\n  filter error: {error}"));
    }
    line
}

fn render(status: &Status, now: SystemTime) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "interface {} ({}), {}{}",
        status.interface,
        if status.backend.is_empty() {
            "not applied yet"
        } else {
            &status.backend
        },
        status.mode,
        status
            .login_server
            .as_deref()
            .map(|s| format!(" via {s}"))
            .unwrap_or_default()
    );
    if !status.state.is_empty() && status.state != "config" {
        let _ = writeln!(out, "state: {}", status.state);
    }
    if let Some(error) = &status.control_error {
        let _ = writeln!(out, "control error: {error}");
    }
    let _ = writeln!(
        out,
        "self: {}  key {}  port {}",
        or_dash(&status.self_node.addresses.join(", ")),
        status.self_node.public_key.as_deref().unwrap_or("-"),
        status.self_node.listen_port
    );
    if let Some(filter) = &status.filter {
        let _ = writeln!(out, "{}", render_filter(filter));
    }
    if let Some(exit) = &status.exit_node {
        let _ = writeln!(out, "exit node: {exit}");
    }
    if let Some(dns) = &status.magic_dns {
        let _ = writeln!(out, "MagicDNS: {dns}");
    }
    for warning in &status.warnings {
        let _ = writeln!(out, "warning: {warning}");
    }
    if let Some(mapping) = &status.port_mapping {
        let _ = writeln!(out, "port mapping: {mapping}");
    }
    if let Some(derp) = &status.derp {
        let regions: Vec<String> = derp
            .regions
            .iter()
            .map(|r| {
                let state = match (&r.error, r.connected) {
                    (_, true) => "connected".to_owned(),
                    (Some(e), false) => format!("down: {e}"),
                    (None, false) => "connecting".to_owned(),
                };
                format!("{} ({}) {state}", r.id, r.code)
            })
            .collect();
        let home = derp.home.map_or("none".to_owned(), |h| h.to_string());
        let _ = writeln!(out, "derp: home {home}; {}", or_dash(&regions.join(", ")));
    }
    if status.peers.is_empty() {
        let _ = writeln!(out, "no peers");
    }
    for peer in &status.peers {
        let handshake = match peer.latest_handshake {
            Some(at) => {
                let ago = now
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
                    .saturating_sub(at);
                format!("handshake {ago}s ago")
            }
            None => "no handshake".to_owned(),
        };
        let _ = writeln!(
            out,
            "{:<34} {:<10} {:<44} {:<22} {}",
            or_dash(&peer.tailnet_ips.join(",")),
            peer.name.as_deref().unwrap_or("-"),
            peer.public_key,
            shown_path(peer),
            handshake
        );
    }
    out
}

/// The endpoint column: the direct address (with disco's latency), or the relay region for a
/// relayed peer.
fn shown_path(peer: &PeerStatus) -> String {
    match (peer.path.as_deref(), peer.relay_region) {
        (Some("relay"), Some(region)) => match peer.relay_region_code.as_deref() {
            Some(code) if !code.is_empty() => format!("relay {region} ({code})"),
            _ => format!("relay {region}"),
        },
        _ => {
            let endpoint = or_dash(peer.endpoint.as_deref().unwrap_or_default()).to_owned();
            match peer.latency_ms {
                Some(ms) => format!("{endpoint} ({ms:.1} ms)"),
                None => endpoint,
            }
        }
    }
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

/// Removes the socket file when the daemon stops.
#[derive(Debug)]
pub struct SocketGuard(pub PathBuf);

impl Drop for SocketGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_json_round_trips_and_renders() {
        let status = Status {
            backend: "userspace".into(),
            interface: "meshgate0".into(),
            mode: "control".into(),
            login_server: Some("203.0.113.1:8080".into()),
            state: "up".into(),
            control_error: None,
            self_node: SelfStatus {
                public_key: Some("k".into()),
                addresses: vec!["100.64.0.1".into(), "fd7a:115c:a1e0::1".into()],
                listen_port: 41641,
            },
            peers: vec![
                PeerStatus {
                    public_key: "p".into(),
                    name: Some("n2.tailnet.example".into()),
                    tailnet_ips: vec!["100.64.0.2".into()],
                    latest_handshake: Some(100),
                    ..PeerStatus::default()
                },
                PeerStatus {
                    public_key: "q".into(),
                    endpoint: Some("127.0.0.1:40000".into()),
                    path: Some("relay".into()),
                    relay_region: Some(900),
                    relay_region_code: Some("lab".into()),
                    ..PeerStatus::default()
                },
            ],
            port_mapping: Some("NAT-PMP 44.0.0.1:40000 (lease 7200 s)".into()),
            derp: Some(DerpStatus {
                home: Some(900),
                regions: vec![DerpRegionStatus {
                    id: 900,
                    code: "lab".into(),
                    connected: true,
                    error: None,
                }],
            }),
            filter: Some(FilterStatus {
                enforcement: "bpf".into(),
                entries: Some(12),
                passed: Some(40),
                dropped: Some(3),
                malformed: Some(1),
                ..FilterStatus::default()
            }),
            warnings: vec!["forwarding is off".into()],
            magic_dns: None,
            exit_node: None,
        };
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["self"]["addresses"][0], "100.64.0.1");
        let back: Status = serde_json::from_value(json).unwrap();
        assert_eq!(back.peers[0].tailnet_ips, ["100.64.0.2"]);
        let text = render(&back, SystemTime::UNIX_EPOCH + Duration::from_secs(130));
        assert!(text.contains("handshake 30s ago"), "{text}");
        assert!(text.contains("via 203.0.113.1:8080"), "{text}");
        assert!(text.contains("n2.tailnet.example"), "{text}");
        assert!(text.contains("state: up"), "{text}");
        assert!(text.contains("warning: forwarding is off"), "{text}");
        assert!(
            text.contains("filter: bpf, 12 entries, passed 40, dropped 3 (1 malformed)"),
            "{text}"
        );
        assert!(text.contains("relay 900 (lab)"), "{text}");
        assert!(
            text.contains("derp: home 900; 900 (lab) connected"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn socket_answers_status_and_replaces_a_stale_one() {
        let dir = std::env::temp_dir().join(format!("meshgate-api-{}", std::process::id()));
        let path = dir.join("sub").join("s.sock");
        let first = bind(&path).unwrap();
        drop(first); // leaves the file behind, like a killed daemon
        assert!(path.exists());
        let listener = bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(bind(&path).is_err(), "a live socket was replaced");
        let (tx, mut rx) = mpsc::channel::<Request>(4);
        tokio::spawn(serve(listener, tx));
        tokio::spawn(async move {
            while let Some(request) = rx.recv().await {
                match request {
                    Request::Status(reply) => {
                        // A daemon whose session failed still answers status.
                        let _ = reply.send(Status {
                            interface: "mgtest".into(),
                            control_error: Some("auth key refused".into()),
                            ..Status::default()
                        });
                    }
                    Request::Up(up, reply) => {
                        let _ = reply.send(Ok(format!("up via {:?}", up.login_server)));
                    }
                    other => {
                        let _ = other.refuse("not here");
                    }
                }
            }
        });
        let status = fetch_status(&path).await.unwrap();
        assert_eq!(status.interface, "mgtest");
        assert_eq!(status.control_error.as_deref(), Some("auth key refused"));
        let up = exchange(
            &path,
            r#"up {"login_server":"h:1"}"#,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(up["ok"], "up via Some(\"h:1\")");
        let err = exchange(&path, "down", Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(err.contains("not here"), "{err}");
        let err = exchange(&path, "up {nope", Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(err.contains("bad up request"), "{err}");
        let err = exchange(&path, "dance", Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(err.contains("unknown request"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
        let err = fetch_status(&path).await.unwrap_err();
        assert!(err.contains("is meshgate daemon running?"), "{err}");
    }
}
