//! The daemon's local API: a unix socket (mode 0600, so root-only in practice) with a one-line
//! protocol. A client connects, writes one command line (`status`), and reads one JSON object
//! followed by a newline; then the daemon closes the connection. `meshgate status` and
//! `meshgate ip` are its clients.

use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use crate::cli::{IpArgs, StatusArgs};

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
    #[serde(rename = "self")]
    pub self_node: SelfStatus,
    pub peers: Vec<PeerStatus>,
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
    /// The peer's name from control; not known to the daemon yet (always null for now).
    pub name: Option<String>,
    pub public_key: String,
    /// Its host addresses (/32, /128 allowed IPs), without prefix length.
    pub tailnet_ips: Vec<String>,
    pub allowed_ips: Vec<String>,
    pub endpoint: Option<String>,
    /// Seconds since the Unix epoch.
    pub latest_handshake: Option<u64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// A request from a local API connection to the daemon's main loop (which owns the engine).
pub type StatusRequest = oneshot::Sender<Status>;

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
pub async fn serve(listener: UnixListener, requests: mpsc::Sender<StatusRequest>) {
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

async fn answer(stream: UnixStream, requests: mpsc::Sender<StatusRequest>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let limited = read.take(4096);
    let n = tokio::time::timeout(
        Duration::from_secs(5),
        BufReader::new(limited).read_line(&mut line),
    )
    .await
    .map_err(|_| std::io::Error::new(ErrorKind::TimedOut, "no request line"))??;
    let reply = match line.trim() {
        "status" if n > 0 => {
            let (tx, rx) = oneshot::channel();
            let status = if requests.send(tx).await.is_ok() {
                rx.await.ok()
            } else {
                None
            };
            match status {
                Some(status) => serde_json::to_string(&status).expect("status serializes"),
                None => serde_json::json!({"error": "the daemon is stopping"}).to_string(),
            }
        }
        other => serde_json::json!({"error": format!("unknown request {other:?}; try \"status\"")})
            .to_string(),
    };
    write.write_all(reply.as_bytes()).await?;
    write.write_all(b"\n").await?;
    write.shutdown().await
}

/// Asks the daemon at `socket` for its status.
pub async fn fetch_status(socket: &Path) -> Result<Status, String> {
    let not_running = |e: std::io::Error| {
        format!(
            "cannot reach the daemon: {e} (is meshgate daemon running? socket {})",
            socket.display()
        )
    };
    let exchange = async {
        let mut stream = UnixStream::connect(socket).await.map_err(not_running)?;
        stream
            .write_all(b"status\n")
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
    let reply = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| format!("the daemon at {} did not answer", socket.display()))??;
    let value: serde_json::Value = serde_json::from_str(&reply)
        .map_err(|e| format!("unreadable answer from {}: {e}", socket.display()))?;
    if let Some(error) = value.get("error").and_then(|e| e.as_str()) {
        return Err(format!("the daemon says: {error}"));
    }
    serde_json::from_value(value)
        .map_err(|e| format!("unreadable answer from {}: {e}", socket.display()))
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
    let _ = writeln!(
        out,
        "self: {}  key {}  port {}",
        or_dash(&status.self_node.addresses.join(", ")),
        status.self_node.public_key.as_deref().unwrap_or("-"),
        status.self_node.listen_port
    );
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
            peer.endpoint.as_deref().unwrap_or("-"),
            handshake
        );
    }
    out
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
            self_node: SelfStatus {
                public_key: Some("k".into()),
                addresses: vec!["100.64.0.1".into(), "fd7a:115c:a1e0::1".into()],
                listen_port: 41641,
            },
            peers: vec![PeerStatus {
                public_key: "p".into(),
                tailnet_ips: vec!["100.64.0.2".into()],
                latest_handshake: Some(100),
                ..PeerStatus::default()
            }],
        };
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["self"]["addresses"][0], "100.64.0.1");
        let back: Status = serde_json::from_value(json).unwrap();
        assert_eq!(back.peers[0].tailnet_ips, ["100.64.0.2"]);
        let text = render(&back, SystemTime::UNIX_EPOCH + Duration::from_secs(130));
        assert!(text.contains("handshake 30s ago"), "{text}");
        assert!(text.contains("via 203.0.113.1:8080"), "{text}");
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
        let (tx, mut rx) = mpsc::channel::<StatusRequest>(4);
        tokio::spawn(serve(listener, tx));
        tokio::spawn(async move {
            while let Some(reply) = rx.recv().await {
                let _ = reply.send(Status {
                    interface: "mgtest".into(),
                    ..Status::default()
                });
            }
        });
        let status = fetch_status(&path).await.unwrap();
        assert_eq!(status.interface, "mgtest");
        let _ = std::fs::remove_dir_all(&dir);
        let err = fetch_status(&path).await.unwrap_err();
        assert!(err.contains("is meshgate daemon running?"), "{err}");
    }
}
