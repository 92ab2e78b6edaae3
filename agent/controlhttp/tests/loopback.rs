//! Both sides of ts2021 in one process over loopback TCP (and `tokio::io::duplex` for the
//! stream-level cases). Every wait is bounded by a timeout.

use std::time::Duration;

use bytes::Bytes;
use meshgate_controlbase::{
    ClientHandshake, MachinePrivate, MachinePublic, ServerHandshake, early, upgrade,
};
use meshgate_controlhttp::{Accepted, Error, NoiseStream, accept, connect};
use meshgate_tailcfg::{EarlyNoise, OverTlsPublicKeyResponse};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(10);
const CHAL: &str = "chalpub:cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd";
const VERSION: u16 = 130;

fn server_handshake() -> ServerHandshake {
    ServerHandshake::new(MachinePrivate::generate().unwrap(), 113..=145)
}

fn early_json() -> Vec<u8> {
    format!(r#"{{"nodeKeyChallenge":"{CHAL}"}}"#).into_bytes()
}

/// What the server task saw.
#[derive(Debug)]
struct ServerOutcome {
    machine_key: Option<MachinePublic>,
    version: Option<u16>,
    requests: usize,
}

/// Accepts one connection with `accept`; for a Noise session, serves HTTP/2: `/echo` returns
/// the request body, any other path a JSON summary with the body's `NodeKey`.
async fn serve_one(
    listener: TcpListener,
    server: ServerHandshake,
    early: Option<Vec<u8>>,
) -> Result<ServerOutcome, Error> {
    let (tcp, _) = listener.accept().await?;
    match accept(tcp, &server, early.as_deref()).await? {
        Accepted::KeyServed { version } => Ok(ServerOutcome {
            machine_key: None,
            version,
            requests: 0,
        }),
        Accepted::Noise(conn) => {
            let conn = *conn;
            let machine = conn.machine_key;
            let mut h2 = h2::server::handshake(conn.stream).await.unwrap();
            let mut tasks = Vec::new();
            while let Some(req) = h2.accept().await {
                let (req, mut respond) = req.unwrap();
                tasks.push(tokio::spawn(async move {
                    let path = req.uri().path().to_owned();
                    let mut body = req.into_body();
                    let mut data = Vec::new();
                    while let Some(chunk) = body.data().await {
                        let chunk = chunk.unwrap();
                        body.flow_control().release_capacity(chunk.len()).unwrap();
                        data.extend_from_slice(&chunk);
                    }
                    let reply = if path == "/echo" {
                        data
                    } else {
                        let v: serde_json::Value = serde_json::from_slice(&data).unwrap();
                        serde_json::json!({
                            "path": path,
                            "nodeKey": v["NodeKey"],
                            "machineKey": machine.to_string(),
                        })
                        .to_string()
                        .into_bytes()
                    };
                    let resp = http::Response::builder().status(200).body(()).unwrap();
                    let mut send = respond.send_response(resp, false).unwrap();
                    send.send_data(Bytes::from(reply), true).unwrap();
                }));
            }
            let requests = tasks.len();
            for t in tasks {
                t.await.unwrap();
            }
            Ok(ServerOutcome {
                machine_key: Some(machine),
                version: Some(conn.version),
                requests,
            })
        }
    }
}

async fn start_server(
    early: Option<Vec<u8>>,
) -> (
    std::net::SocketAddr,
    MachinePublic,
    JoinHandle<Result<ServerOutcome, Error>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = server_handshake();
    let public = server.public();
    let task = tokio::spawn(serve_one(listener, server, early));
    (addr, public, task)
}

/// One HTTP/2 POST over the Noise stream; returns status and body.
async fn h2_post<S>(stream: NoiseStream<S>, path: &str, body: Vec<u8>) -> (u16, Vec<u8>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = h2::client::handshake(stream).await.unwrap();
    let driver = tokio::spawn(conn);
    let mut send = send.ready().await.unwrap();
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("https://control.example{path}"))
        .header("content-type", "application/json")
        .body(())
        .unwrap();
    let (resp, mut tx) = send.send_request(req, false).unwrap();
    tx.send_data(Bytes::from(body), true).unwrap();
    let resp = resp.await.unwrap();
    let status = resp.status().as_u16();
    let mut rx = resp.into_body();
    let mut data = Vec::new();
    while let Some(chunk) = rx.data().await {
        let chunk = chunk.unwrap();
        rx.flow_control().release_capacity(chunk.len()).unwrap();
        data.extend_from_slice(&chunk);
    }
    // Closing our side (no handles, no open streams) ends the connection, and with it the
    // server's accept loop.
    drop((send, tx, rx));
    driver.await.unwrap().unwrap();
    (status, data)
}

#[tokio::test]
async fn register_over_h2_with_early_noise() {
    timeout(LIMIT, async {
        let (addr, control, server) = start_server(Some(early_json())).await;
        let machine = MachinePrivate::generate().unwrap();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (stream, early) = connect(tcp, "control.example", &machine, &control, VERSION)
            .await
            .unwrap();
        assert_eq!(stream.info().peer, control);
        assert_eq!(stream.info().version, VERSION);
        let early = early.expect("early payload");
        assert_eq!(early, early_json());
        let parsed: EarlyNoise = serde_json::from_slice(&early).unwrap();
        assert_eq!(parsed.node_key_challenge.to_string(), CHAL);

        let nk = "nodekey:1111111111111111111111111111111111111111111111111111111111111111";
        let body = format!(r#"{{"Version":{VERSION},"NodeKey":"{nk}"}}"#).into_bytes();
        let (status, reply) = h2_post(stream, "/machine/register", body).await;
        assert_eq!(status, 200);
        let reply: serde_json::Value = serde_json::from_slice(&reply).unwrap();
        assert_eq!(reply["path"], "/machine/register");
        assert_eq!(reply["nodeKey"], nk);
        assert_eq!(reply["machineKey"], machine.public().to_string());

        let outcome = server.await.unwrap().unwrap();
        assert_eq!(outcome.machine_key, Some(machine.public()));
        assert_eq!(outcome.version, Some(VERSION));
        assert_eq!(outcome.requests, 1);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn without_early_noise_h2_starts_at_once() {
    timeout(LIMIT, async {
        let (addr, control, server) = start_server(None).await;
        let machine = MachinePrivate::generate().unwrap();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (stream, early) = connect(tcp, "control.example:80", &machine, &control, 145)
            .await
            .unwrap();
        assert_eq!(early, None);
        let (status, reply) = h2_post(stream, "/echo", b"{}".to_vec()).await;
        assert_eq!((status, reply.as_slice()), (200, &b"{}"[..]));
        server.await.unwrap().unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn large_body_round_trips_in_many_records() {
    timeout(LIMIT, async {
        let (addr, control, server) = start_server(Some(early_json())).await;
        let machine = MachinePrivate::generate().unwrap();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (stream, _) = connect(tcp, "control.example", &machine, &control, VERSION)
            .await
            .unwrap();
        // 300 KiB: about 75 records each way, past h2's initial 64 KiB windows.
        let body: Vec<u8> = (0..300 * 1024).map(|i| (i * 7 % 251) as u8).collect();
        let (status, reply) = h2_post(stream, "/echo", body.clone()).await;
        assert_eq!(status, 200);
        assert_eq!(reply.len(), body.len());
        assert!(reply == body);
        server.await.unwrap().unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn key_endpoint_returns_server_key() {
    timeout(LIMIT, async {
        let (addr, control, server) = start_server(None).await;
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET /key?v=145 HTTP/1.1\r\nHost: control.example\r\n\r\n")
            .await
            .unwrap();
        let mut reply = Vec::new();
        tcp.read_to_end(&mut reply).await.unwrap();
        let reply = String::from_utf8(reply).unwrap();
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
        let (_, body) = reply.split_once("\r\n\r\n").unwrap();
        let key: OverTlsPublicKeyResponse = serde_json::from_str(body).unwrap();
        assert_eq!(key.public_key.to_string(), control.to_string());
        assert!(key.legacy_public_key.is_zero());
        let outcome = server.await.unwrap().unwrap();
        assert_eq!(outcome.version, Some(145));
        assert_eq!(outcome.machine_key, None);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn wrong_control_key_fails_cleanly() {
    timeout(LIMIT, async {
        let (addr, _control, server) = start_server(Some(early_json())).await;
        let machine = MachinePrivate::generate().unwrap();
        let wrong = MachinePrivate::generate().unwrap().public();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let err = connect(tcp, "control.example", &machine, &wrong, VERSION)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof),
            "{err}"
        );
        let err = server.await.unwrap().unwrap_err();
        assert!(
            matches!(
                err,
                Error::Noise(meshgate_controlbase::Error::HandshakeAuth)
            ),
            "{err}"
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn refused_version_is_a_clear_client_error() {
    timeout(LIMIT, async {
        let (addr, control, server) = start_server(None).await;
        let machine = MachinePrivate::generate().unwrap();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let err = connect(tcp, "control.example", &machine, &control, 100)
            .await
            .unwrap_err();
        match &err {
            Error::Noise(meshgate_controlbase::Error::ServerRefused(text)) => {
                assert_eq!(text, "unsupported protocol version");
            }
            other => panic!("unexpected error {other}"),
        }
        assert!(err.to_string().contains("unsupported protocol version"));
        let err = server.await.unwrap().unwrap_err();
        assert!(matches!(
            err,
            Error::Noise(meshgate_controlbase::Error::UnsupportedVersion(100))
        ));
    })
    .await
    .unwrap();
}

/// Sends `request` raw; returns the server's reply and its result.
async fn raw_request(request: &[u8]) -> (String, Result<ServerOutcome, Error>) {
    timeout(LIMIT, async {
        let (addr, _control, server) = start_server(None).await;
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(request).await.unwrap();
        let mut reply = Vec::new();
        // The server may close while we still write (oversized heads): ignore reset errors.
        let _ = tcp.read_to_end(&mut reply).await;
        let outcome = server.await.unwrap();
        (String::from_utf8_lossy(&reply).into_owned(), outcome)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn garbage_instead_of_http_is_refused() {
    let (reply, outcome) =
        raw_request(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n").await;
    assert!(reply.starts_with("HTTP/1.1 400 "), "{reply}");
    let err = outcome.unwrap_err();
    assert!(
        matches!(&err, Error::Http(t) if t.starts_with("400")),
        "{err}"
    );
}

#[tokio::test]
async fn bad_requests_get_http_errors() {
    let cases: [(&[u8], &str); 4] = [
        (b"GET /ts2021 HTTP/1.1\r\nHost: x\r\n\r\n", "405"),
        (b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n", "404"),
        (
            b"POST /ts2021 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n",
            "400",
        ),
        (
            b"POST /ts2021 HTTP/1.1\r\nUpgrade: tailscale-control-protocol\r\n\
              X-Tailscale-Handshake: AAAA\r\n\r\n",
            "400",
        ),
    ];
    for (request, status) in cases {
        let (reply, outcome) = raw_request(request).await;
        assert!(reply.starts_with(&format!("HTTP/1.1 {status} ")), "{reply}");
        let err = outcome.unwrap_err();
        assert!(
            matches!(&err, Error::Http(t) if t.starts_with(status)),
            "{err}"
        );
    }
}

#[tokio::test]
async fn oversized_head_is_refused() {
    let mut request = b"POST /ts2021 HTTP/1.1\r\nX-Pad: ".to_vec();
    request.resize(20 * 1024, b'a');
    let (reply, outcome) = raw_request(&request).await;
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 431 "),
        "{reply}"
    );
    let err = outcome.unwrap_err();
    assert!(
        matches!(&err, Error::Http(t) if t.starts_with("431")),
        "{err}"
    );

    let mut request = b"GET /key HTTP/1.1\r\n".to_vec();
    for i in 0..40 {
        request.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    let (_, outcome) = raw_request(&request).await;
    let err = outcome.unwrap_err();
    assert!(
        matches!(&err, Error::Http(t) if t.starts_with("431")),
        "{err}"
    );
}

#[tokio::test]
async fn non_101_status_carries_status_line_and_body() {
    timeout(LIMIT, async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = tcp.read(&mut buf).await.unwrap();
            tcp.write_all(
                b"HTTP/1.1 403 Forbidden\r\nContent-Length: 17\r\n\r\nnode not allowed\n",
            )
            .await
            .unwrap();
        });
        let machine = MachinePrivate::generate().unwrap();
        let control = MachinePrivate::generate().unwrap().public();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let err = connect(tcp, "control.example", &machine, &control, VERSION)
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::Http(_)), "{text}");
        assert!(text.contains("403 Forbidden"), "{text}");
        assert!(text.contains("node not allowed"), "{text}");
        fake.await.unwrap();
    })
    .await
    .unwrap();
}

/// A hand-made server over `duplex` that puts the EarlyNoise payload and the first HTTP/2
/// bytes in one record: the bytes after the JSON must reach the next read.
#[tokio::test]
async fn bytes_after_early_payload_are_kept() {
    timeout(LIMIT, async {
        let (client_io, mut server_io) = tokio::io::duplex(64 * 1024);
        let server = server_handshake();
        let control = server.public();
        let srv = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = server_io.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            let head = String::from_utf8(got).unwrap();
            let headers = head.lines().filter_map(|l| l.split_once(": "));
            let init = upgrade::initiation_from_headers(headers).unwrap();
            let mut acc = server.accept(&init).unwrap();
            let mut plain = early::encode(&early_json()).unwrap();
            plain.extend_from_slice(b"PRI * HTTP/2.0 tail");
            let mut out = upgrade::server_response().as_bytes().to_vec();
            out.extend_from_slice(&acc.response);
            out.extend_from_slice(&acc.transport.encrypt(&plain).unwrap());
            out.extend_from_slice(&acc.transport.encrypt(b" and more").unwrap());
            server_io.write_all(&out).await.unwrap();
            server_io
        });
        let machine = MachinePrivate::generate().unwrap();
        let (mut stream, early) = connect(client_io, "h", &machine, &control, VERSION)
            .await
            .unwrap();
        assert_eq!(early, Some(early_json()));
        let _server_io = srv.await.unwrap();
        let mut rest = vec![0u8; 28];
        stream.read_exact(&mut rest).await.unwrap();
        assert_eq!(rest, b"PRI * HTTP/2.0 tail and more");
    })
    .await
    .unwrap();
}

/// A session pair over `duplex`, set up with controlbase directly.
fn noise_pair() -> (
    NoiseStream<tokio::io::DuplexStream>,
    meshgate_controlbase::Transport,
    tokio::io::DuplexStream,
) {
    let server = server_handshake();
    let machine = MachinePrivate::generate().unwrap();
    let (mut hs, init) = ClientHandshake::new(&machine, &server.public(), VERSION).unwrap();
    let acc = server.accept(&init).unwrap();
    let client = hs.read_response(&acc.response).unwrap().unwrap();
    let (a, b) = tokio::io::duplex(64 * 1024);
    (NoiseStream::new(a, client), acc.transport, b)
}

#[tokio::test]
async fn small_reads_take_plaintext_from_the_buffer() {
    timeout(LIMIT, async {
        let (mut stream, mut peer, mut peer_io) = noise_pair();
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        peer_io
            .write_all(&peer.encrypt(&data).unwrap())
            .await
            .unwrap();
        let mut got = Vec::new();
        let mut byte = [0u8; 7];
        while got.len() < data.len() {
            let n = stream.read(&mut byte).await.unwrap();
            got.extend_from_slice(&byte[..n]);
        }
        assert_eq!(got, data);
        // And the other way, many records from one write.
        stream.write_all(&data).await.unwrap();
        stream.flush().await.unwrap();
        let mut wire = vec![0u8; 64 * 1024];
        let mut plain = Vec::new();
        while plain.len() < data.len() {
            let n = peer_io.read(&mut wire).await.unwrap();
            peer.push(&wire[..n]);
            while let Some(p) = peer.next_plaintext() {
                plain.extend_from_slice(&p.unwrap());
            }
        }
        assert_eq!(plain, data);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn tampered_record_breaks_the_stream() {
    timeout(LIMIT, async {
        let (mut stream, mut peer, mut peer_io) = noise_pair();
        let mut wire = peer.encrypt(b"hello").unwrap();
        wire[5] ^= 1;
        peer_io.write_all(&wire).await.unwrap();
        let mut buf = [0u8; 64];
        let err = stream.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("authentication"), "{err}");
        let err = stream.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        let err = stream.write(b"x").await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn eof_inside_a_record_is_unexpected_and_on_a_boundary_is_clean() {
    timeout(LIMIT, async {
        let (mut stream, mut peer, mut peer_io) = noise_pair();
        let wire = peer.encrypt(b"whole").unwrap();
        peer_io.write_all(&wire).await.unwrap();
        let half = peer.encrypt(b"cut short").unwrap();
        peer_io.write_all(&half[..half.len() / 2]).await.unwrap();
        drop(peer_io);
        let mut buf = [0u8; 64];
        let n = stream.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"whole");
        let err = stream.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);

        let (mut stream, mut peer, mut peer_io) = noise_pair();
        peer_io
            .write_all(&peer.encrypt(b"bye").unwrap())
            .await
            .unwrap();
        drop(peer_io);
        let mut all = Vec::new();
        stream.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"bye");
    })
    .await
    .unwrap();
}
