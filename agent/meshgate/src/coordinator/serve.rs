//! `coordinator serve`: the ts2021 listener (plain or TLS), the admin API, SIGHUP policy
//! reload, and the data_version poll that notices changes other processes commit.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use meshgate_coordinator::{Config, Server};
use meshgate_coordinator_store::Store;
use meshgate_policy::Policy;
use meshgate_tailcfg::DerpMap;
use tokio::signal::unix::{SignalKind, signal};

use super::admin_api::{self, AdminOptions};
use super::{BoxError, open};
use crate::cli::ServeArgs;

/// The database's directory (`.` for a bare file name): default home of the control key and
/// the admin API's socket and token.
fn db_dir(db: &Path) -> PathBuf {
    db.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
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

/// Region 900 ("meshgate"), the first ID of the range Tailscale leaves to custom relays.
const OWN_REGION: i32 = 900;

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_host_port(authority: &str, default_port: u16) -> Option<(&str, u16)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(port) => port.parse().ok()?,
        None => default_port,
    };
    (!host.is_empty() && !host.contains(['/', ':']) || host.parse::<std::net::Ipv6Addr>().is_ok())
        .then_some((host, port))
}

/// A DERP map of one region holding the relay at `url`.
fn one_region_derp_map(
    url: &str,
    cert_name: Option<&str>,
    stun_port: i32,
) -> Result<DerpMap, String> {
    let bad = |why: &str| {
        format!("--derp-server {url:?}: {why} (want https://HOST[:PORT] or http://HOST[:PORT])")
    };
    let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(bad("no scheme"));
    };
    let authority = rest.trim_end_matches('/').trim_end_matches("/derp");
    let default_port = if tls { 443 } else { 80 };
    let (host, port) =
        split_host_port(authority, default_port).ok_or_else(|| bad("bad host or port"))?;
    let literal = host.parse::<std::net::IpAddr>().ok();
    let node = meshgate_tailcfg::DerpNode {
        name: "900a".to_owned(),
        region_id: OWN_REGION,
        host_name: host.to_owned(),
        cert_name: cert_name.unwrap_or_default().to_owned(),
        ipv4: literal
            .filter(|a| a.is_ipv4())
            .map(|a| a.to_string())
            .unwrap_or_default(),
        ipv6: literal
            .filter(|a| a.is_ipv6())
            .map(|a| a.to_string())
            .unwrap_or_default(),
        stun_port,
        derp_port: i32::from(port),
        insecure_for_tests: !tls,
        ..meshgate_tailcfg::DerpNode::default()
    };
    let region = meshgate_tailcfg::DerpRegion {
        region_id: OWN_REGION,
        region_code: "meshgate".to_owned(),
        region_name: "meshgate relay".to_owned(),
        nodes: vec![node],
        ..meshgate_tailcfg::DerpRegion::default()
    };
    Ok(DerpMap {
        regions: [(OWN_REGION, region)].into_iter().collect(),
        ..DerpMap::default()
    })
}

/// An IP, `IP:PORT` or `[IPv6]:PORT`: what every client can use (no DoH URLs yet).
fn check_resolver(addr: &str) -> Result<(), BoxError> {
    let ok =
        addr.parse::<std::net::IpAddr>().is_ok() || addr.parse::<std::net::SocketAddr>().is_ok();
    if ok {
        Ok(())
    } else {
        Err(format!("--dns-resolver {addr:?}: not an IP address or IP:PORT").into())
    }
}

/// DNS labels of letters, digits and hyphens, without dots at the ends.
fn check_base_domain(domain: &str) -> Result<String, BoxError> {
    let domain = domain.trim_matches('.').to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if domain.len() <= 200 && domain.split('.').all(label_ok) {
        Ok(domain)
    } else {
        Err(format!("--base-domain {domain:?}: not a DNS domain name").into())
    }
}

pub async fn serve(args: ServeArgs) -> Result<(), BoxError> {
    let state_dir = args.state_dir.clone().unwrap_or_else(|| db_dir(&args.db));
    let mut config = Config::new(&state_dir);
    if let Some(path) = &args.policy {
        config.policy = load_policy(path)?;
    }
    if let Some(path) = &args.derp_map {
        config.derp_map = load_derp_map(path)?;
    }
    if let Some(url) = &args.derp_server {
        config.derp_map =
            one_region_derp_map(url, args.derp_cert_name.as_deref(), args.derp_stun_port)?;
    }
    config.dns.base_domain = check_base_domain(&args.base_domain)?;
    for addr in &args.dns_resolvers {
        check_resolver(addr)?;
        config.dns.resolvers.push(meshgate_tailcfg::Resolver {
            addr: addr.clone(),
            ..Default::default()
        });
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
        (None, None) => None,
        _ => return Err("--tls-cert and --tls-key go together".into()),
    };
    let store: Arc<dyn Store> = Arc::new(open(&args.db)?);
    let server = Server::new(store.clone(), config)?;
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
    let admin_options = AdminOptions::new(
        &db_dir(&args.db),
        args.admin_socket.clone(),
        args.admin_listen,
        args.admin_listen_any,
        args.admin_token_file.clone(),
    );
    let _admin = admin_api::start(store, &server, &admin_options).await?;

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
    // TCP_NODELAY and dead-peer detection, as on plain connections.
    server.prepare_socket(&tcp);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derp_server_urls_become_one_region() {
        let map = one_region_derp_map("http://203.0.113.9:3340", None, 3478).unwrap();
        let node = &map.regions[&OWN_REGION].nodes[0];
        assert_eq!((node.ipv4.as_str(), node.derp_port), ("203.0.113.9", 3340));
        assert!(node.insecure_for_tests);
        let map =
            one_region_derp_map("https://derp.example.com/", Some("sha256-raw:ab"), -1).unwrap();
        let node = &map.regions[&OWN_REGION].nodes[0];
        assert_eq!(node.host_name, "derp.example.com");
        assert_eq!((node.ipv4.as_str(), node.derp_port), ("", 443));
        assert_eq!(
            (node.cert_name.as_str(), node.stun_port),
            ("sha256-raw:ab", -1)
        );
        assert!(!node.insecure_for_tests);
        let map = one_region_derp_map("https://[2001:db8::1]:8443", None, 3478).unwrap();
        let node = &map.regions[&OWN_REGION].nodes[0];
        assert_eq!((node.ipv6.as_str(), node.derp_port), ("2001:db8::1", 8443));
        for bad in [
            "derp.example.com",
            "ftp://x",
            "https://",
            "https://h:port",
            "http://[::1",
        ] {
            assert!(
                one_region_derp_map(bad, None, 3478).is_err(),
                "{bad} accepted"
            );
        }
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
        store
            .create_user("someone", std::time::SystemTime::now())
            .unwrap();
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
