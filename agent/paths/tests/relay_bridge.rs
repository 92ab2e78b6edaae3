//! Two relay bridges and a real DERP relay on loopback: a datagram the "kernel" of A sends to
//! A's bridge endpoint for B comes out of B's bridge for A into B's "kernel", and the reply
//! goes back the same way. Strangers and other local senders are dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use meshgate_paths::{Relay, RelayConfig, RelayEvent};
use meshgate_tailcfg::{DerpMap, DerpNode, DerpRegion, NodePrivate};
use tokio::net::{TcpListener, UdpSocket};
use tokio::time::timeout;

const REGION: u16 = 900;

async fn relay_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = meshgate_relay::Relay::new(meshgate_relay::Config::default()).unwrap();
    tokio::spawn(async move { server.serve(listener).await });
    addr
}

fn derp_map(addr: SocketAddr) -> DerpMap {
    let node = DerpNode {
        name: "900a".into(),
        region_id: i32::from(REGION),
        host_name: "127.0.0.1".into(),
        ipv4: "127.0.0.1".into(),
        derp_port: i32::from(addr.port()),
        insecure_for_tests: true,
        ..DerpNode::default()
    };
    let region = DerpRegion {
        region_id: i32::from(REGION),
        region_code: "lab".into(),
        nodes: vec![node],
        ..DerpRegion::default()
    };
    DerpMap {
        regions: BTreeMap::from([(i32::from(REGION), region)]),
        ..DerpMap::default()
    }
}

/// A node: its key, its stand-in for the kernel's WireGuard socket, and its relay.
struct Node {
    key: NodePrivate,
    kernel: UdpSocket,
    relay: Relay,
    events: tokio::sync::mpsc::Receiver<RelayEvent>,
}

async fn node(map: &DerpMap) -> Node {
    node_with(map, NodePrivate::generate()).await
}

async fn node_with(map: &DerpMap, key: NodePrivate) -> Node {
    let kernel = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (relay, events) = Relay::start(RelayConfig {
        node_key: key.clone(),
        wg_port: kernel.local_addr().unwrap().port(),
        extra_ca_pem: None,
        fwmark: 0,
    });
    relay.set_derp_map(map.clone()).await;
    relay.set_home(Some(REGION)).await;
    Node {
        key,
        kernel,
        relay,
        events,
    }
}

async fn recv(socket: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0u8; 2048];
    let (len, from) = timeout(Duration::from_secs(10), socket.recv_from(&mut buf))
        .await
        .expect("a datagram within 10 s")
        .unwrap();
    buf.truncate(len);
    (buf, from)
}

/// Sends `data` from `socket` to `to` until `receiver` gets it (the DERP connections come up
/// asynchronously, and the first packets before that are dropped, as WireGuard's would be).
async fn deliver(
    socket: &UdpSocket,
    to: SocketAddr,
    data: &[u8],
    receiver: &UdpSocket,
) -> SocketAddr {
    for _ in 0..50 {
        socket.send_to(data, to).await.unwrap();
        let mut buf = vec![0u8; 2048];
        if let Ok(Ok((len, from))) =
            timeout(Duration::from_millis(200), receiver.recv_from(&mut buf)).await
        {
            assert_eq!(&buf[..len], data);
            return from;
        }
    }
    panic!("{data:?} never crossed the relay");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_cross_the_relay_both_ways_through_steady_bridges() {
    let map = derp_map(relay_server().await);
    let a = node(&map).await;
    let mut b = node(&map).await;
    let (ka, kb) = (*a.key.public().as_bytes(), *b.key.public().as_bytes());
    a.relay.set_peers(BTreeSet::from([kb])).await;
    b.relay.set_peers(BTreeSet::from([ka])).await;

    let a_to_b = a.relay.endpoint(kb, REGION).await.unwrap();
    assert!(a_to_b.ip().is_loopback());
    assert_eq!(
        a.relay.endpoint(kb, REGION).await.unwrap(),
        a_to_b,
        "endpoint moved"
    );

    // A's kernel -> A's bridge -> DERP -> B's bridge for A -> B's kernel.
    let b_sees_a_at = deliver(&a.kernel, a_to_b, b"handshake initiation", &b.kernel).await;
    assert!(b_sees_a_at.ip().is_loopback());
    let event = timeout(Duration::from_secs(5), b.events.recv())
        .await
        .unwrap();
    assert_eq!(
        event,
        Some(RelayEvent::Received {
            peer: ka,
            region: REGION
        })
    );
    // B's kernel answers where the packet came from, and A's kernel gets it from the
    // endpoint it uses for B.
    b.kernel
        .send_to(b"handshake response", b_sees_a_at)
        .await
        .unwrap();
    let (data, from) = recv(&a.kernel).await;
    assert_eq!(
        (data.as_slice(), from),
        (&b"handshake response"[..], a_to_b)
    );
    // B's endpoint for A is a bridge too, the one B's kernel already uses.
    assert_eq!(b.relay.endpoint(ka, REGION).await.unwrap(), b_sees_a_at);

    // Another local process writing to A's bridge is not WireGuard: dropped.
    let intruder = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    intruder
        .send_to(b"not from the kernel", a_to_b)
        .await
        .unwrap();
    a.kernel
        .send_to(b"after the intruder", a_to_b)
        .await
        .unwrap();
    let (data, _) = recv(&b.kernel).await;
    assert_eq!(data, b"after the intruder");

    let status = a.relay.status();
    assert_eq!(status.home, Some(REGION));
    assert!(
        status
            .regions
            .iter()
            .any(|r| r.id == REGION && r.connected && r.home)
    );
    assert_eq!(status.relayed.get(&kb), Some(&REGION));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_from_strangers_and_released_peers_are_dropped() {
    let map = derp_map(relay_server().await);
    let a = node(&map).await;
    let b = node(&map).await;
    let stranger = node(&map).await;
    let (ka, kb) = (*a.key.public().as_bytes(), *b.key.public().as_bytes());
    a.relay.set_peers(BTreeSet::from([kb])).await;
    b.relay.set_peers(BTreeSet::from([ka])).await;
    stranger.relay.set_peers(BTreeSet::from([kb])).await;

    // A reaches B (so B's DERP connection is up and it accepts A).
    let a_to_b = a.relay.endpoint(kb, REGION).await.unwrap();
    deliver(&a.kernel, a_to_b, b"from a", &b.kernel).await;
    // The stranger is not B's peer: nothing reaches B's kernel, however often it sends.
    let s_to_b = stranger.relay.endpoint(kb, REGION).await.unwrap();
    for _ in 0..20 {
        stranger
            .kernel
            .send_to(b"from a stranger", s_to_b)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    a.kernel.send_to(b"from a again", a_to_b).await.unwrap();
    let (data, _) = recv(&b.kernel).await;
    assert_eq!(
        data, b"from a again",
        "a stranger's packet reached the kernel"
    );
    assert!(
        !b.relay
            .status()
            .relayed
            .contains_key(stranger.key.public().as_bytes())
    );

    // Released on A: its bridge closes, and B's later packets for A make no new one.
    a.relay.release(kb).await;
    b.relay.set_peers(BTreeSet::new()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(a.relay.status().relayed.is_empty());
    assert!(b.relay.status().relayed.is_empty());
}

/// Waits (up to 10 s) until `relay` is connected to the region.
async fn connected(relay: &Relay) {
    for _ in 0..200 {
        let status = relay.status();
        if status.regions.iter().any(|r| r.id == REGION && r.connected) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never connected to the region: {:?}", relay.status());
}

/// A WireGuard message of `kind` (1: handshake initiation, 4: data), 148 bytes.
fn wireguard_message(kind: u8) -> Vec<u8> {
    let mut message = vec![0xab; 148];
    message[..4].copy_from_slice(&[kind, 0, 0, 0]);
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_initiation_sent_before_the_peer_came_is_sent_again() {
    let map = derp_map(relay_server().await);
    let a = node(&map).await;
    let b_key = NodePrivate::generate();
    let (ka, kb) = (*a.key.public().as_bytes(), *b_key.public().as_bytes());
    a.relay.set_peers(BTreeSet::from([kb])).await;
    let a_to_b = a.relay.endpoint(kb, REGION).await.unwrap();
    connected(&a.relay).await;

    // B is not on the server yet: the server drops both.
    let data = wireguard_message(4);
    let initiation = wireguard_message(1);
    a.kernel.send_to(&data, a_to_b).await.unwrap();
    a.kernel.send_to(&initiation, a_to_b).await.unwrap();
    let sent = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = node_with(&map, b_key).await;
    b.relay.set_peers(BTreeSet::from([ka])).await;
    connected(&b.relay).await;

    // A's kernel sent nothing more, yet the initiation arrives (a copy: not before 1 s), and
    // only the initiation.
    let (got, _) = recv(&b.kernel).await;
    assert_eq!(got, initiation);
    assert!(
        sent.elapsed() >= Duration::from_millis(900),
        "{:?}",
        sent.elapsed()
    );
    let mut buf = vec![0u8; 2048];
    while let Ok(Ok((len, _))) =
        timeout(Duration::from_millis(1500), b.kernel.recv_from(&mut buf)).await
    {
        assert_eq!(&buf[..len], &initiation[..], "a data packet was sent again");
    }
}
