//! The control connection over TLS: `meshgate coordinator serve --tls-cert --tls-key` (the
//! binary) with a certificate for localhost/127.0.0.1 from a CA made here with rcgen; two
//! in-process control clients join it at `https://localhost:PORT` trusting that CA and see
//! each other; a client without the CA fails with a certificate error; a key that does not
//! match the certificate stops `serve` with a clear message. Needs no namespaces or root.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meshgate_control::client::{RunConfig, fetch_control_key, run};
use meshgate_control::endpoint::ControlServer;
use meshgate_control::state::Persisted;
use meshgate_e2e::{TempDir, meshgate_bin};
use meshgate_wg::InterfaceConfig;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use tokio::sync::watch;

fn temp_dir() -> TempDir {
    TempDir::new("control-tls")
}

/// Kills the child on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Writes ca.pem, cert.pem (localhost, 127.0.0.1; signed by the CA) and key.pem into `dir`;
/// also other-key.pem, a key that matches nothing.
fn make_certs(dir: &Path) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.distinguished_name
        .push(DnType::CommonName, "meshgate test CA");
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    let leaf = leaf.signed_by(&leaf_key, &ca).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), leaf_key.serialize_pem()).unwrap();
    let other = KeyPair::generate().unwrap();
    std::fs::write(dir.join("other-key.pem"), other.serialize_pem()).unwrap();
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn serve_command(dir: &Path, port: u16, key: &str) -> Command {
    let mut serve = Command::new(meshgate_bin());
    serve
        .args(["coordinator", "serve", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--db")
        .arg(dir.join("coordinator.db"))
        .arg("--tls-cert")
        .arg(dir.join("cert.pem"))
        .arg("--tls-key")
        .arg(dir.join(key));
    serve
}

#[tokio::test]
async fn join_over_tls_with_private_ca() {
    let dir = temp_dir();
    make_certs(&dir.0);
    let bin = meshgate_bin();

    // A key that is not the certificate's: serve refuses to start, and says why.
    let out = serve_command(&dir.0, free_port(), "other-key.pem")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "serve started with a wrong key");
    assert!(
        stderr.contains("--tls-key") && stderr.contains("other-key.pem"),
        "unclear error for a mismatched key: {stderr}"
    );

    let out = Command::new(&bin)
        .args(["coordinator", "authkey", "create", "--db"])
        .arg(dir.0.join("coordinator.db"))
        .args(["--user", "tls@example.com", "--reusable"])
        .output()
        .unwrap();
    assert!(out.status.success(), "authkey create: {out:?}");
    let secret = String::from_utf8(out.stdout).unwrap().trim().to_owned();

    let port = free_port();
    let mut serve = serve_command(&dir.0, port, "key.pem");
    serve
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.0.join("coordinator.log")).unwrap());
    let _server = Killed(serve.spawn().unwrap());
    let log = || std::fs::read_to_string(dir.0.join("coordinator.log")).unwrap_or_default();

    let url = format!("https://localhost:{port}");
    let ca = dir.0.join("ca.pem");
    let trusted = ControlServer::parse(&url, Some(&ca)).unwrap();
    assert!(trusted.is_tls());

    // GET /key over TLS, once the server listens.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match fetch_control_key(&trusted).await {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("GET /key over TLS: {e}\n{}", log()),
        }
    }

    // Without the CA: a certificate error, not a hang or a protocol error.
    let untrusted = ControlServer::parse(&url, None).unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), fetch_control_key(&untrusted))
        .await
        .expect("GET /key without the CA hung")
        .expect_err("joined without trusting the CA")
        .to_string();
    assert!(
        err.contains("certificate") && err.contains("TLS handshake"),
        "unclear error without the CA: {err}"
    );
    // The same server at 127.0.0.1 (an IP SAN) works too.
    let by_ip = ControlServer::parse(&format!("https://127.0.0.1:{port}/"), Some(&ca)).unwrap();
    tokio::time::timeout(Duration::from_secs(10), fetch_control_key(&by_ip))
        .await
        .expect("GET /key by IP hung")
        .expect("GET /key by IP");

    // Two nodes join over TLS (ts2021 upgrade, Noise, HTTP/2 inside TLS) and see each other.
    let mut receivers: Vec<watch::Receiver<Option<InterfaceConfig>>> = Vec::new();
    let mut clients = Vec::new();
    for n in 0..2 {
        let state = Persisted::load_or_create(&dir.0.join(format!("node{n}"))).unwrap();
        let mut config = RunConfig::new(trusted.clone());
        config.auth_key = Some(secret.clone());
        config.hostinfo.hostname = format!("tls{n}");
        config.backoff_min = Duration::from_millis(50);
        config.backoff_max = Duration::from_millis(500);
        let (tx, rx) = watch::channel(None);
        clients.push(tokio::spawn(run(config, state, tx)));
        receivers.push(rx);
    }
    for (n, rx) in receivers.iter_mut().enumerate() {
        let seen = tokio::time::timeout(
            Duration::from_secs(20),
            rx.wait_for(|c| c.as_ref().is_some_and(|c| c.device.peers.len() == 1)),
        )
        .await;
        assert!(
            seen.is_ok(),
            "node {n} did not see its peer over TLS within 20 s\n{}",
            log()
        );
    }
    for client in clients {
        client.abort();
    }
}
