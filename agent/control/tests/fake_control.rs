//! The control client against an in-process fake control server built from
//! `meshgate_controlhttp::accept` and `h2::server`: `/key`, register, and a map stream of a
//! full netmap followed by a delta. Every wait is bounded.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use meshgate_control::wgconfig::{WgOptions, interface_config};
use meshgate_control::{ClientError, ControlServer, NetMap, Persisted, RunConfig, run};
use meshgate_controlhttp::{Accepted, accept};
use meshgate_tailcfg::{
    MachinePrivate, MapRequest, MapResponse, Node, NodePrivate, NodePublic, PeerChange,
    RegisterRequest, RegisterResponse, Time, framing,
};
use meshgate_wg::InterfaceConfig;
use tokio::net::TcpListener;
use tokio::sync::{Mutex, watch};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(10);
const GOOD_KEY: &str = "tskey-auth-good";

fn peer(id: i64) -> Node {
    Node {
        id,
        key: NodePublic::from_bytes([id as u8; 32]),
        addresses: vec![format!("100.64.0.{id}/32").parse().unwrap()],
        endpoints: vec![format!("192.0.2.{id}:41641").parse().unwrap()],
        ..Node::default()
    }
}

fn messages() -> Vec<MapResponse> {
    let full = MapResponse {
        node: Some(Node {
            id: 100,
            addresses: vec![
                "100.64.0.100/32".parse().unwrap(),
                "fd7a:115c:a1e0::64/128".parse().unwrap(),
            ],
            ..Node::default()
        }),
        peers: Some(vec![peer(1), peer(2)]),
        packet_filter: Some(vec![]),
        ..MapResponse::default()
    };
    let delta = MapResponse {
        peers_removed: vec![2],
        peers_changed: vec![peer(3)],
        peers_changed_patch: vec![PeerChange {
            node_id: 1,
            endpoints: Some(vec!["198.51.100.1:41641".parse().unwrap()]),
            ..PeerChange::default()
        }],
        ..MapResponse::default()
    };
    vec![full, MapResponse::keep_alive(), delta]
}

#[derive(Debug, Default)]
struct Seen {
    registers: Vec<RegisterRequest>,
    maps: Vec<MapRequest>,
}

async fn read_all(body: &mut h2::RecvStream) -> Vec<u8> {
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        body.flow_control().release_capacity(chunk.len()).unwrap();
        data.extend_from_slice(&chunk);
    }
    data
}

/// Serves connections until the test ends: `/key`, then ts2021 with HTTP/2.
async fn fake_control(listener: TcpListener, seen: Arc<Mutex<Seen>>) {
    let server = Arc::new(meshgate_controlbase::ServerHandshake::new(
        meshgate_controlbase::MachinePrivate::generate().unwrap(),
        113..=145,
    ));
    loop {
        let (tcp, _) = listener.accept().await.unwrap();
        let server = server.clone();
        let seen = seen.clone();
        tokio::spawn(async move {
            let Ok(Accepted::Noise(conn)) = accept(tcp, &server, None).await else {
                return;
            };
            let mut h2 = h2::server::handshake(conn.stream).await.unwrap();
            while let Some(req) = h2.accept().await {
                let Ok((req, mut respond)) = req else { return };
                let seen = seen.clone();
                tokio::spawn(async move {
                    let path = req.uri().path().to_owned();
                    let body = read_all(&mut req.into_body()).await;
                    let ok = http::Response::builder().status(200).body(()).unwrap();
                    match path.as_str() {
                        "/machine/register" => {
                            let r: RegisterRequest = serde_json::from_slice(&body).unwrap();
                            let good =
                                r.auth.as_ref().map(|a| a.auth_key.as_str()) == Some(GOOD_KEY);
                            seen.lock().await.registers.push(r);
                            let reply = RegisterResponse {
                                machine_authorized: good,
                                error: if good {
                                    String::new()
                                } else {
                                    "invalid auth key".into()
                                },
                                ..RegisterResponse::default()
                            };
                            let mut tx = respond.send_response(ok, false).unwrap();
                            tx.send_data(Bytes::from(serde_json::to_vec(&reply).unwrap()), true)
                                .unwrap();
                        }
                        "/machine/map" => {
                            let r: MapRequest = serde_json::from_slice(&body).unwrap();
                            let zstd = r.compress == "zstd";
                            seen.lock().await.maps.push(r);
                            let mut tx = respond.send_response(ok, false).unwrap();
                            for m in messages() {
                                tx.send_data(Bytes::from(framing::encode(&m, zstd)), false)
                                    .unwrap();
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            // Keep the long poll open.
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                        }
                        _ => {
                            let nf = http::Response::builder().status(404).body(()).unwrap();
                            respond.send_response(nf, true).unwrap();
                        }
                    }
                });
            }
        });
    }
}

fn state() -> Persisted {
    Persisted {
        dir: std::env::temp_dir(),
        machine_key: MachinePrivate::generate(),
        node_key: NodePrivate::generate(),
    }
}

async fn start() -> (String, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Seen::default()));
    tokio::spawn(fake_control(listener, seen.clone()));
    (addr, seen)
}

#[tokio::test]
async fn run_publishes_the_config_of_full_then_delta() {
    let (addr, seen) = start().await;
    let state = state();
    let node_key = state.node_key.clone();
    let mut cfg = RunConfig::new(ControlServer::parse(&addr, None).unwrap());
    cfg.auth_key = Some(GOOD_KEY.to_owned());
    cfg.hostinfo.hostname = "router1".into();

    // What the client must end with: the NetMap of both messages, turned into WireGuard.
    let mut expected_map = NetMap::new();
    for m in messages() {
        expected_map.apply(m);
    }
    let expected: InterfaceConfig =
        interface_config(&expected_map, &node_key, &WgOptions::default(), Time::now());
    assert_eq!(expected.device.peers.len(), 2);

    let (tx, mut rx) = watch::channel(None);
    let task = tokio::spawn(run(cfg, state, tx));
    timeout(LIMIT, async {
        loop {
            if rx.borrow_and_update().as_ref() == Some(&expected) {
                break;
            }
            rx.changed().await.unwrap();
        }
    })
    .await
    .expect("the watch reaches the config of full + delta");

    let got = rx.borrow().clone().unwrap();
    let p1 = got
        .device
        .peers
        .values()
        .find(|p| p.allowed_ips.contains(&"100.64.0.1/32".parse().unwrap()))
        .unwrap();
    assert_eq!(p1.endpoint, Some("198.51.100.1:41641".parse().unwrap()));
    assert!(
        !got.net
            .routes
            .iter()
            .any(|r| r.destination == "100.64.0.2/32".parse().unwrap())
    );

    let seen = seen.lock().await;
    assert_eq!(seen.registers.len(), 1);
    let reg = &seen.registers[0];
    assert_eq!(reg.node_key, node_key.public());
    let hostinfo = reg.hostinfo.as_ref().unwrap();
    assert_eq!(hostinfo.hostname, "router1");
    assert_eq!(seen.maps.len(), 1);
    let map = &seen.maps[0];
    assert!(map.stream && map.keep_alive);
    assert_eq!(map.compress, "zstd");
    assert_eq!(map.node_key, node_key.public());
    drop(seen);
    task.abort();
}

#[tokio::test]
async fn refused_registration_is_a_clear_fatal_error() {
    let (addr, _seen) = start().await;
    let mut cfg = RunConfig::new(ControlServer::parse(&addr, None).unwrap());
    cfg.auth_key = Some("tskey-auth-wrong".to_owned());
    let (tx, rx) = watch::channel(None);
    let err = timeout(LIMIT, run(cfg, state(), tx)).await.unwrap();
    assert!(
        matches!(&err, ClientError::RegisterRefused(m) if m == "invalid auth key"),
        "{err}"
    );
    assert!(err.to_string().contains("invalid auth key"));
    assert!(rx.borrow().is_none());
}

#[tokio::test]
async fn unreachable_control_retries_with_backoff() {
    // A port nobody listens on: the loop keeps retrying (it never returns).
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let mut cfg = RunConfig::new(ControlServer::parse(&addr, None).unwrap());
    cfg.backoff_min = Duration::from_millis(10);
    cfg.backoff_max = Duration::from_millis(40);
    let (tx, _rx) = watch::channel(None);
    let r = timeout(Duration::from_millis(500), run(cfg, state(), tx)).await;
    assert!(r.is_err(), "run returned: {:?}", r.ok());
}
