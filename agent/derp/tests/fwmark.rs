//! `ClientOptions::fwmark` puts the mark on the wire: in a fresh network namespace, an nftables
//! rule resets every unmarked SYN to the fake server's port, so only a marked client gets
//! through. Needs root (namespace, nft, SO_MARK).

use std::process::Command;
use std::time::Duration;

use bytes::BytesMut;
use meshgate_derp::frame::{self, SERVER_MAX_CLIENT_INFO};
use meshgate_derp::handshake::{self, ServerInfo};
use meshgate_derp::http::key_hex;
use meshgate_derp::{ClientOptions, DerpTarget, Error, Frame, connect};
use meshgate_tailcfg::NodePrivate;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::timeout;

const MARK: u32 = 0x80000;
const T: Duration = Duration::from_secs(10);
/// Set in the re-executed test binary, which runs inside `unshare --net`.
const NETNS_ENV: &str = "MESHGATE_DERP_TEST_NETNS";

/// Runs `test` again in a new network namespace; true when already there.
fn in_fresh_netns(test: &str) -> bool {
    if std::env::var_os(NETNS_ENV).is_some() {
        return true;
    }
    let exe = std::env::current_exe().expect("test binary path");
    let status = Command::new("unshare")
        .arg("--net")
        .arg(exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(NETNS_ENV, "1")
        .status()
        .expect("running unshare (root needed)");
    assert!(status.success(), "{test} in a fresh namespace: {status}");
    false
}

fn run(program: &str, args: &[&str]) {
    let output = Command::new(program).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Upgrade and handshake as `server` on one accepted connection.
async fn serve_one(l: &TcpListener, server: &NodePrivate) {
    let (mut s, _) = l.accept().await.unwrap();
    let mut buf = BytesMut::new();
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        assert!(s.read_buf(&mut buf).await.unwrap() > 0);
    }
    buf.clear();
    let mut out = BytesMut::from(
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\
             Derp-Version: 2\r\nDerp-Public-Key: {}\r\n\r\n",
            key_hex(&server.public())
        )
        .as_bytes(),
    );
    frame::encode(
        &Frame::ServerKey {
            key: server.public(),
        },
        &mut out,
    );
    s.write_all(&out).await.unwrap();
    let key = loop {
        if let Some(Frame::ClientInfo { key, .. }) =
            frame::decode(&mut buf, SERVER_MAX_CLIENT_INFO).unwrap()
        {
            break key;
        }
        assert!(s.read_buf(&mut buf).await.unwrap() > 0, "no ClientInfo");
    };
    out.clear();
    frame::encode(
        &handshake::server_info_frame(
            server,
            &key,
            &ServerInfo {
                version: 2,
                ..ServerInfo::default()
            },
        ),
        &mut out,
    );
    s.write_all(&out).await.unwrap();
}

#[test]
fn only_the_marked_connection_passes_a_mark_filter() {
    if !in_fresh_netns("only_the_marked_connection_passes_a_mark_filter") {
        return;
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(scenario());
}

async fn scenario() {
    run("ip", &["link", "set", "lo", "up"]);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port().to_string();
    run("nft", &["add", "table", "inet", "mgtest"]);
    run(
        "nft",
        &["add chain inet mgtest out { type filter hook output priority 0 ; }"],
    );
    run(
        "nft",
        &[&format!(
            "add rule inet mgtest out tcp dport {port} meta mark != {MARK:#x} reject with tcp reset"
        )],
    );
    let target = DerpTarget::from_url(&format!("http://127.0.0.1:{port}/derp"), "", None).unwrap();
    let server = NodePrivate::generate();

    // Unmarked: reset by the rule before the server sees anything.
    let err = timeout(
        T,
        connect(&target, NodePrivate::generate(), &ClientOptions::default()),
    )
    .await
    .expect("unmarked connect hung")
    .unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err}");

    let opts = ClientOptions {
        fwmark: MARK,
        ..ClientOptions::default()
    };
    let (served, connected) = tokio::join!(
        timeout(T, serve_one(&l, &server)),
        timeout(T, connect(&target, NodePrivate::generate(), &opts)),
    );
    served.expect("server side hung");
    let (client, _events) = connected.expect("marked connect hung").unwrap();
    assert_eq!(client.server_key(), server.public());
}
