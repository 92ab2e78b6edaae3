//! Primary subnet routers over loopback with real ts2021 clients: one router carries a subnet,
//! failover when its stream ends or its host goes silent, no flapping back.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::*;
use ipnet::IpNet;
use meshgate_controlbase::MachinePrivate;
use meshgate_policy::Policy;
use meshgate_tailcfg::{Hostinfo, MapFrameDecoder, MapResponse, Node, NodeId, NodePrivate};
use tokio::time::Instant;

const SUBNET: &str = "10.1.0.0/24";
/// The failover must reach peers within this after the primary's stream closes.
const FAILOVER: Duration = Duration::from_secs(2);

fn subnet() -> IpNet {
    SUBNET.parse().unwrap()
}

/// Allow all, and auto-approve the subnet for its owner (both routers are alice's).
fn policy() -> Policy {
    Policy::parse(
        r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
            "autoApprovers": {"routes": {"10.0.0.0/8": ["alice@example.com"]}}}"#,
    )
    .unwrap()
}

/// Advertises `SUBNET` with a lite update (auto-approved by [`policy`]).
async fn advertise(c: &mut Client, hostname: &str) {
    let mut req = c.map_request(false);
    req.omit_peers = true;
    req.hostinfo = Some(Hostinfo {
        hostname: hostname.into(),
        routable_ips: vec![subnet()],
        ..Hostinfo::default()
    });
    let (status, _) = c
        .post("/machine/map", serde_json::to_vec(&req).unwrap())
        .await;
    assert_eq!(status, 200);
}

/// A one-shot full map (`Stream=false`).
async fn full_map(c: &mut Client) -> MapResponse {
    let (status, body) = c
        .post(
            "/machine/map",
            serde_json::to_vec(&c.map_request(false)).unwrap(),
        )
        .await;
    assert_eq!(status, 200);
    let mut decoder = MapFrameDecoder::new();
    decoder.push(&body);
    decoder.next().expect("one frame").unwrap()
}

fn carries(n: &Node) -> bool {
    n.allowed_ips().contains(&subnet()) || n.primary_routes.contains(&subnet())
}

fn peer(map: &MapResponse, id: NodeId) -> &Node {
    map.peers
        .iter()
        .flatten()
        .find(|n| n.id == id)
        .expect("the peer is in the map")
}

/// Two routers (online, both serving the subnet) and a watcher streaming its map.
struct Setup {
    run: Running,
    machine1: MachinePrivate,
    r1: Client,
    s1: MapStream,
    r2: Client,
    _s2: MapStream,
    watcher: Client,
    sw: MapStream,
    id1: NodeId,
    id2: NodeId,
}

async fn setup(dir: &TempDir, f: impl FnOnce(&mut meshgate_coordinator::Config)) -> Setup {
    let run = start_with(dir, |c| {
        c.policy = policy();
        f(c);
    })
    .await;
    let key = auth_key(&*run.store, true);
    let control = run.server.public_key();
    let machine1 = MachinePrivate::generate().unwrap();
    let mut r1 = Client::connect_as(
        run.addr,
        &control,
        machine1.clone(),
        NodePrivate::generate().public(),
    )
    .await;
    assert!(r1.register(&key, "gw1").await.machine_authorized);
    let mut r2 = Client::connect(run.addr, &control).await;
    assert!(r2.register(&key, "gw2").await.machine_authorized);
    advertise(&mut r1, "gw1").await;
    advertise(&mut r2, "gw2").await;
    let mut s1 = r1.stream(false).await;
    let id1 = s1.next(LIMIT).await.node.unwrap().id;
    let mut s2 = r2.stream(false).await;
    let id2 = s2.next(LIMIT).await.node.unwrap().id;
    assert!(id1 < id2);

    let mut watcher = Client::connect(run.addr, &control).await;
    assert!(watcher.register(&key, "pc").await.machine_authorized);
    let mut sw = watcher.stream(false).await;
    let first = sw.next(LIMIT).await;
    let (n1, n2) = (peer(&first, id1), peer(&first, id2));
    assert_eq!(n1.online, Some(true));
    assert_eq!(n2.online, Some(true));
    // Only the lowest online id carries it; the other still shows it in Hostinfo.
    assert!(n1.allowed_ips().contains(&subnet()), "{n1:?}");
    assert_eq!(n1.primary_routes, [subnet()]);
    assert!(!carries(n2), "{n2:?}");
    assert!(
        n2.hostinfo
            .as_ref()
            .unwrap()
            .routable_ips
            .contains(&subnet())
    );
    Setup {
        run,
        machine1,
        r1,
        s1,
        r2,
        _s2: s2,
        watcher,
        sw,
        id1,
        id2,
    }
}

/// Waits for the delta moving the subnet from router 1 to router 2; returns when it came.
async fn await_failover(sw: &mut MapStream, id1: NodeId, id2: NodeId, limit: Duration) -> Instant {
    let d = sw
        .until(limit, |m| {
            m.peers_changed.iter().any(|n| n.id == id2 && carries(n))
        })
        .await;
    let at = Instant::now();
    assert!(d.peers.is_none(), "a delta, not a full map");
    let old = d
        .peers_changed
        .iter()
        .find(|n| n.id == id1)
        .expect("the old primary is sent whole too");
    assert!(!carries(old), "{old:?}");
    let new = d.peers_changed.iter().find(|n| n.id == id2).unwrap();
    assert_eq!(new.primary_routes, [subnet()]);
    at
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_on_stream_close_and_no_flap_back() {
    let dir = TempDir::new();
    let Setup {
        run,
        machine1,
        r1,
        s1,
        r2: _r2,
        _s2,
        mut watcher,
        mut sw,
        id1,
        id2,
    } = setup(&dir, |_| {}).await;
    let node_key1 = r1.node_key;

    // Router 1's stream (and connection) closes: router 2 takes over, promptly.
    let closed = Instant::now();
    drop((s1, r1));
    let at = await_failover(&mut sw, id1, id2, FAILOVER).await;
    assert!(at - closed < FAILOVER);

    // Router 1 comes back: it is online again but the subnet stays with router 2.
    let mut r1 = Client::connect_as(run.addr, &run.server.public_key(), machine1, node_key1).await;
    let _s1 = r1.stream(false).await;
    let deadline = Instant::now() + LIMIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = sw.next(left).await;
        assert!(
            !m.peers_changed.iter().any(|n| n.id == id1 && carries(n)),
            "the subnet flapped back: {m:?}"
        );
        let online = m
            .peers_changed_patch
            .iter()
            .any(|p| p.node_id == id1 && p.online == Some(true))
            || m.peers_changed
                .iter()
                .any(|n| n.id == id1 && n.online == Some(true));
        if online {
            break;
        }
    }
    let map = full_map(&mut watcher).await;
    let (n1, n2) = (peer(&map, id1), peer(&map, id2));
    assert_eq!(n1.online, Some(true));
    assert!(!carries(n1), "{n1:?}");
    assert!(carries(n2), "{n2:?}");
}

/// Drops every packet between two loopback ports (both directions) while alive: a link cut
/// with no FIN. Needs root and nft; `None` (test skipped) otherwise.
struct Blackhole {
    table: String,
}

impl Blackhole {
    fn new(client: SocketAddr, server: SocketAddr) -> Option<Blackhole> {
        let table = format!(
            "meshgate_primary_test_{}_{}",
            std::process::id(),
            client.port()
        );
        let nft = |cmd: &str| {
            Command::new("nft")
                .arg(cmd)
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if !nft(&format!("add table inet {table}")) {
            return None;
        }
        let hole = Blackhole { table };
        let t = &hole.table;
        let (c, s) = (client.port(), server.port());
        let ok = nft(&format!(
            "add chain inet {t} input {{ type filter hook input priority -400; policy accept; }}"
        )) && nft(&format!(
            "add rule inet {t} input iifname \"lo\" tcp sport {c} tcp dport {s} drop"
        )) && nft(&format!(
            "add rule inet {t} input iifname \"lo\" tcp sport {s} tcp dport {c} drop"
        ));
        ok.then_some(hole)
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .arg(format!("delete table inet {}", self.table))
            .output();
    }
}

/// Router 1's host goes silent (every packet of its connection dropped, no FIN): the server
/// drops the connection by `tcp_user_timeout` and the subnet fails over. With `keep_alive`
/// short the server always has unacknowledged data in flight (the user timeout proper); with
/// it long the connection is idle and keepalive probes find the dead peer.
async fn silent_router_is_dropped(keep_alive: Duration) {
    let user_timeout = Duration::from_secs(2);
    let idle = Duration::from_secs(1);
    let dir = TempDir::new();
    let Setup {
        run,
        r1,
        _s2,
        mut sw,
        id1,
        id2,
        s1: _s1,
        ..
    } = setup(&dir, |c| {
        c.keep_alive = keep_alive;
        c.tcp_user_timeout = user_timeout;
        c.tcp_keepalive_idle = idle;
    })
    .await;
    let Some(_hole) = Blackhole::new(r1.local, run.addr) else {
        eprintln!("skipped: needs root and nft to drop loopback packets");
        return;
    };
    let cut = Instant::now();
    eprintln!("blackholed {} <-> {}", r1.local, run.addr);
    // The kernel gives up at the user timeout after the last packet it received (probes start
    // after `idle`, one per second): allow for both and a second of scheduling.
    let bound = user_timeout + idle + Duration::from_secs(2);
    let at = await_failover(&mut sw, id1, id2, bound).await;
    let took = at - cut;
    eprintln!("dropped after {took:?}");
    assert!(took <= bound, "{took:?}");
    assert!(
        took >= user_timeout - idle,
        "dropped before the user timeout: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_router_with_data_in_flight_is_dropped() {
    silent_router_is_dropped(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_idle_router_is_dropped_by_keepalive_probes() {
    silent_router_is_dropped(Duration::from_secs(60)).await;
}
