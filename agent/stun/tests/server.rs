//! The STUN server on loopback (IPv4 and IPv6).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use meshgate_stun::{ServerStats, TxId, binding_request, parse_binding_response, serve};
use tokio::net::UdpSocket;

async fn exchange(server: SocketAddr, client: &UdpSocket) -> (TxId, SocketAddr) {
    let tx = TxId::random();
    client.send_to(&binding_request(tx), server).await.unwrap();
    let mut buf = [0u8; 128];
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
        .await
        .expect("server answered within 5 s")
        .unwrap();
    assert_eq!(from, server);
    let (got_tx, mapped) = parse_binding_response(&buf[..n]).unwrap();
    assert_eq!(got_tx, tx);
    (got_tx, mapped)
}

async fn check(bind: &str) {
    let sock = UdpSocket::bind(bind).await.unwrap();
    let server = sock.local_addr().unwrap();
    let stats = Arc::new(ServerStats::default());
    let task = tokio::spawn(serve(sock, stats.clone()));

    let client = UdpSocket::bind(bind).await.unwrap();
    // Garbage and a request without the Tailscale SOFTWARE first: both ignored and counted, and
    // the server still answers the valid request that follows.
    client.send_to(b"hello", server).await.unwrap();
    let mut bad = binding_request(TxId::random());
    bad[24] = b'T';
    client.send_to(&bad, server).await.unwrap();

    let (_, mapped) = exchange(server, &client).await;
    assert_eq!(mapped, client.local_addr().unwrap());
    let s = stats.snapshot();
    assert_eq!((s.answered, s.not_stun, s.rejected), (1, 1, 1), "{s:?}");
    // Nothing else arrived (the bad packets got no answer).
    let mut buf = [0u8; 64];
    assert!(
        tokio::time::timeout(Duration::from_millis(200), client.recv_from(&mut buf))
            .await
            .is_err()
    );
    task.abort();
}

#[tokio::test]
async fn server_answers_on_ipv4_loopback() {
    check("127.0.0.1:0").await;
}

#[tokio::test]
async fn server_answers_on_ipv6_loopback() {
    check("[::1]:0").await;
}
