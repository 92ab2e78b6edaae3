//! `meshgate coordinator ...`: the coordination server (`serve`) and its administration
//! (`authkey create`, `nodes list`, `routes list|approve`), which work on the SQLite file
//! directly — WAL lets them run while the server does. The server notices changes made by
//! other processes by polling SQLite's `PRAGMA data_version` every `--poll-every` (1 s) on a
//! connection of its own, and then calls `Server::notify()`, so an approval reaches every map
//! stream within about a second.
//!
//! With `--tls-cert` and `--tls-key`, `serve` speaks HTTPS: a tokio-rustls acceptor terminates
//! TLS and the server serves the decrypted stream (`Server::serve_stream`).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use meshgate_coordinator::{Config, Server};
use meshgate_coordinator_store::{NewAuthKey, Node, SqliteStore, Store};
use meshgate_policy::Policy;
use meshgate_tailcfg::DerpMap;
use serde::Serialize;
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::{AuthkeyCommand, CoordinatorCommand, NodesCommand, RoutesCommand, ServeArgs};

type BoxError = Box<dyn std::error::Error>;

pub async fn run(command: CoordinatorCommand) -> Result<(), BoxError> {
    match command {
        CoordinatorCommand::Serve(args) => serve(args).await,
        CoordinatorCommand::Authkey(AuthkeyCommand::Create {
            db,
            user,
            reusable,
            ephemeral,
            tags,
            expiry,
        }) => {
            let store = open(&db)?;
            let now = SystemTime::now();
            let user = store.create_user(&user, now)?;
            let created = store.create_auth_key(&NewAuthKey {
                user: user.id,
                reusable,
                ephemeral,
                tags,
                expires: expiry.map(|d| now + d),
                now,
            })?;
            println!("{}", created.secret);
            Ok(())
        }
        CoordinatorCommand::Nodes(NodesCommand::List { db, json }) => nodes_list(&db, json),
        CoordinatorCommand::Routes(RoutesCommand::List { db, json }) => routes_list(&db, json),
        CoordinatorCommand::Routes(RoutesCommand::Approve { db, node, cidrs }) => {
            routes_approve(&db, &node, &cidrs)
        }
    }
}

fn open(db: &Path) -> Result<SqliteStore, String> {
    SqliteStore::open(db).map_err(|e| format!("{}: {e}", db.display()))
}

/// Reads and parses a policy file; errors name the file, line and column.
fn load_policy(path: &Path) -> Result<Policy, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    Policy::parse(&text).map_err(|e| format!("policy {}: {e}", path.display()))
}

fn load_derp_map(path: &Path) -> Result<DerpMap, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("DERP map {}: {e}", path.display()))
}

async fn serve(args: ServeArgs) -> Result<(), BoxError> {
    let state_dir = args.state_dir.clone().unwrap_or_else(|| {
        args.db
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    });
    let mut config = Config::new(&state_dir);
    if let Some(path) = &args.policy {
        config.policy = load_policy(path)?;
    }
    if let Some(path) = &args.derp_map {
        config.derp_map = load_derp_map(path)?;
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
        (None, None) => None,
        _ => return Err("--tls-cert and --tls-key go together".into()),
    };
    let store: Arc<dyn Store> = Arc::new(open(&args.db)?);
    let server = Server::new(store, config)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("listening on {}: {e}", args.listen))?;
    tracing::info!(
        listen = %args.listen,
        tls = tls.is_some(),
        db = %args.db.display(),
        public_key = ?server.public_key(),
        "coordinator serving"
    );
    start_change_poll(&args.db, args.poll_every, server.clone())?;

    let mut serving = {
        let server = server.clone();
        tokio::spawn(async move {
            match tls {
                Some(tls) => serve_tls(server, listener, tls).await,
                None => server.serve(listener).await.map_err(|e| e.to_string()),
            }
        })
    };
    let mut hangup = signal(SignalKind::hangup())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            result = &mut serving => {
                result??;
                return Err("the server stopped".into());
            }
            _ = hangup.recv() => match &args.policy {
                Some(path) => match load_policy(path) {
                    Ok(policy) => {
                        server.set_policy(policy);
                        tracing::info!(policy = %path.display(), "policy reloaded");
                    }
                    Err(e) => tracing::error!("keeping the running policy: {e}"),
                },
                None => tracing::info!("SIGHUP: no --policy file to re-read"),
            },
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    tracing::info!("coordinator stopping");
    Ok(())
}

/// The TLS acceptor for `--tls-cert` (PEM chain, leaf first) and `--tls-key` (PEM private
/// key). Errors name the file and say what is wrong (unreadable, no certificate, no key, key
/// not matching the certificate).
fn tls_acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let read = |flag: &str, path: &Path| {
        std::fs::read(path).map_err(|e| format!("{flag} {}: {e}", path.display()))
    };
    let cert_pem = read("--tls-cert", cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("--tls-cert {}: not PEM: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "--tls-cert {}: no CERTIFICATE block in the file",
            cert.display()
        ));
    }
    let private = PrivateKeyDer::from_pem_slice(&read("--tls-key", key)?).map_err(|e| {
        format!(
            "--tls-key {}: no usable private key (PEM PKCS#8, PKCS#1 or SEC1): {e}",
            key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| {
            format!(
                "--tls-cert {} with --tls-key {}: {e} (is the key the certificate's?)",
                cert.display(),
                key.display()
            )
        })?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Accepts TLS connections forever and serves each like [`Server::serve`] does a plain one
/// (with the maintenance task alongside). A failed TLS handshake only ends that connection.
async fn serve_tls(
    server: Server,
    listener: tokio::net::TcpListener,
    tls: tokio_rustls::TlsAcceptor,
) -> Result<(), String> {
    let maintenance = {
        let server = server.clone();
        tokio::spawn(async move { server.maintain().await })
    };
    let result = loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => break Err(format!("accepting: {e}")),
        };
        let server = server.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_tls_connection(&server, tcp, tls).await {
                tracing::debug!(%peer, "TLS connection ended: {e}");
            }
        });
    };
    maintenance.abort();
    result
}

/// How long a client gets for its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

async fn serve_tls_connection(
    server: &Server,
    tcp: tokio::net::TcpStream,
    tls: tokio_rustls::TlsAcceptor,
) -> Result<(), String> {
    let _ = tcp.set_nodelay(true);
    let outer = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.accept(tcp))
        .await
        .map_err(|_| "TLS handshake timed out".to_owned())?
        .map_err(|e| format!("TLS handshake: {e}"))?;
    server.serve_stream(outer).await.map_err(|e| e.to_string())
}

/// Watches the database for commits by other connections (`PRAGMA data_version` changes) and
/// tells the server, on a thread of its own (the query blocks, briefly).
fn start_change_poll(db: &Path, every: Duration, server: Server) -> Result<(), String> {
    let connection =
        rusqlite::Connection::open(db).map_err(|e| format!("{}: {e}", db.display()))?;
    let version = data_version;
    let mut last = version(&connection).map_err(|e| format!("{}: {e}", db.display()))?;
    std::thread::Builder::new()
        .name("store-poll".into())
        .spawn(move || {
            loop {
                std::thread::sleep(every);
                match version(&connection) {
                    Ok(now) if now != last => {
                        last = now;
                        tracing::debug!("the database changed; updating map streams");
                        server.notify();
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!("polling the database for changes: {e}"),
                }
            }
        })
        .map_err(|e| format!("starting the change poll: {e}"))?;
    Ok(())
}

/// Changes whenever another connection commits to the database (SQLite's `data_version`).
fn data_version(connection: &rusqlite::Connection) -> rusqlite::Result<i64> {
    connection.query_row("PRAGMA data_version", [], |row| row.get::<_, i64>(0))
}

#[derive(Debug, Serialize)]
struct NodeView {
    id: i64,
    name: String,
    hostname: String,
    user: String,
    addresses: Vec<IpAddr>,
    tags: Vec<String>,
    online: bool,
    /// Seconds since the Unix epoch.
    last_seen: Option<u64>,
    key_expiry: Option<u64>,
    expired: bool,
    ephemeral: bool,
    endpoints: Vec<String>,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn nodes_list(db: &Path, json: bool) -> Result<(), BoxError> {
    let store = open(db)?;
    let users: BTreeMap<i64, String> = store
        .list_users()?
        .into_iter()
        .map(|u| (u.id, u.name))
        .collect();
    let now = SystemTime::now();
    let views: Vec<NodeView> = store
        .list_nodes()?
        .into_iter()
        .map(|n| NodeView {
            id: n.id,
            name: n.given_name.clone(),
            hostname: n.hostname.clone(),
            user: users.get(&n.user).cloned().unwrap_or_default(),
            addresses: vec![IpAddr::V4(n.ipv4), IpAddr::V6(n.ipv6)],
            tags: n.tags.clone(),
            online: n.online,
            last_seen: n.last_seen.map(unix),
            key_expiry: n.key_expiry.map(unix),
            expired: n.is_expired(now),
            ephemeral: n.ephemeral,
            endpoints: n.endpoints.iter().map(ToString::to_string).collect(),
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&views)?);
        return Ok(());
    }
    println!(
        "{:<5} {:<20} {:<20} {:<16} {:<40} {:<8} ENDPOINTS",
        "ID", "NAME", "USER", "IPV4", "IPV6", "ONLINE"
    );
    for v in &views {
        let mut state = if v.online { "yes" } else { "no" }.to_owned();
        if v.expired {
            state.push_str(",expired");
        }
        println!(
            "{:<5} {:<20} {:<20} {:<16} {:<40} {:<8} {}",
            v.id,
            v.name,
            v.user,
            v.addresses[0],
            v.addresses[1],
            state,
            if v.endpoints.is_empty() {
                "-".to_owned()
            } else {
                v.endpoints.join(",")
            }
        );
    }
    Ok(())
}

#[derive(Debug, Serialize)]
struct RoutesView {
    node: i64,
    name: String,
    advertised: Vec<IpNet>,
    approved: Vec<IpNet>,
    /// Advertised and approved: what peers get.
    served: Vec<IpNet>,
}

fn routes_list(db: &Path, json: bool) -> Result<(), BoxError> {
    let store = open(db)?;
    let names: BTreeMap<i64, String> = store
        .list_nodes()?
        .into_iter()
        .map(|n| (n.id, n.given_name))
        .collect();
    let views: Vec<RoutesView> = store
        .list_routes()?
        .into_iter()
        .map(|r| RoutesView {
            node: r.node,
            name: names.get(&r.node).cloned().unwrap_or_default(),
            served: r.served(),
            advertised: r.advertised,
            approved: r.approved,
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&views)?);
        return Ok(());
    }
    let list = |v: &[IpNet]| {
        if v.is_empty() {
            "-".to_owned()
        } else {
            v.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        }
    };
    println!(
        "{:<5} {:<20} {:<32} {:<32} SERVED",
        "ID", "NAME", "ADVERTISED", "APPROVED"
    );
    for v in &views {
        println!(
            "{:<5} {:<20} {:<32} {:<32} {}",
            v.node,
            v.name,
            list(&v.advertised),
            list(&v.approved),
            list(&v.served)
        );
    }
    Ok(())
}

/// A node by numeric id, given name or hostname (a name two nodes share is refused).
fn find_node(nodes: &[Node], wanted: &str) -> Result<i64, String> {
    if let Ok(id) = wanted.parse::<i64>()
        && nodes.iter().any(|n| n.id == id)
    {
        return Ok(id);
    }
    let by_given: Vec<&Node> = nodes.iter().filter(|n| n.given_name == wanted).collect();
    let matches = if by_given.is_empty() {
        nodes.iter().filter(|n| n.hostname == wanted).collect()
    } else {
        by_given
    };
    match matches.as_slice() {
        [node] => Ok(node.id),
        [] => Err(format!(
            "no node {wanted:?} (see `meshgate coordinator nodes list`)"
        )),
        _ => Err(format!(
            "{wanted:?} names {} nodes; use the node id",
            matches.len()
        )),
    }
}

fn parse_prefixes(text: &str) -> Result<Vec<IpNet>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .map_err(|e| format!("{s:?} is not a CIDR prefix: {e}"))
        })
        .collect()
}

fn routes_approve(db: &Path, node: &str, cidrs: &str) -> Result<(), BoxError> {
    let store = open(db)?;
    let id = find_node(&store.list_nodes()?, node)?;
    let prefixes = parse_prefixes(cidrs)?;
    store.approve_routes(id, &prefixes)?;
    let routes = store.routes(id)?;
    let served: Vec<String> = routes.served().iter().map(ToString::to_string).collect();
    println!(
        "node {id}: approved {}; served to peers: {} (a running coordinator sends it within its --poll-every)",
        if prefixes.is_empty() {
            "nothing".to_owned()
        } else {
            prefixes
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        },
        if served.is_empty() {
            "none".to_owned()
        } else {
            served.join(",")
        }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_parse_and_empty_means_none() {
        assert_eq!(parse_prefixes("").unwrap(), Vec::<IpNet>::new());
        assert_eq!(
            parse_prefixes("10.0.0.0/8, 192.168.1.0/24").unwrap().len(),
            2
        );
        assert!(parse_prefixes("10.0.0.0/33").is_err());
    }

    #[test]
    fn another_connection_s_commit_changes_the_data_version() {
        let dir = std::env::temp_dir().join(format!("meshgate-dv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("c.db");
        let store = open(&db).unwrap();
        let poll = rusqlite::Connection::open(&db).unwrap();
        let before = data_version(&poll).unwrap();
        assert_eq!(data_version(&poll).unwrap(), before, "changed by itself");
        store.create_user("someone", SystemTime::now()).unwrap();
        assert_ne!(
            data_version(&poll).unwrap(),
            before,
            "the commit went unseen"
        );
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn policy_errors_name_file_and_line() {
        let path = std::env::temp_dir().join(format!("meshgate-policy-{}", std::process::id()));
        std::fs::write(&path, "{\n  \"acls\": [\n    {\"action\": \"accept\", \"src\": [\"group:nope\"], \"dst\": [\"*:*\"]}\n  ]\n}\n").unwrap();
        let err = load_policy(&path).unwrap_err();
        let _ = std::fs::remove_file(&path);
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
    }
}
