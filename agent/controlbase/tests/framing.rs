//! EarlyNoise framing and the HTTP upgrade text.

use meshgate_controlbase::early::{self, Early, MAX_JSON_LEN};
use meshgate_controlbase::upgrade;
use meshgate_controlbase::{ClientHandshake, Error, MachinePrivate, ServerHandshake};

const JSON: &[u8] = br#"{"nodeKeyChallenge":"chalpub:0000000000000000000000000000000000000000000000000000000000000000"}"#;

#[test]
fn early_payload_round_trip_byte_by_byte() {
    let mut stream = early::encode(JSON).unwrap();
    assert_eq!(&stream[..5], b"\xff\xff\xffTS");
    assert_eq!(&stream[5..9], &(JSON.len() as u32).to_be_bytes());
    stream.extend_from_slice(b"\x00\x00\x12\x04\x00\x00\x00\x00\x00"); // an HTTP/2 SETTINGS header
    let total = 9 + JSON.len();
    for end in 0..stream.len() {
        let got = early::decode(&stream[..end], MAX_JSON_LEN).unwrap();
        if end < total {
            assert_eq!(got, Early::NeedMore, "at {end}");
        } else {
            assert_eq!(
                got,
                Early::Payload {
                    json: JSON,
                    consumed: total
                }
            );
        }
    }
}

#[test]
fn http2_start_is_no_early_payload() {
    let settings = b"\x00\x00\x12\x04\x00\x00\x00\x00\x00";
    assert_eq!(
        early::decode(settings, MAX_JSON_LEN).unwrap(),
        Early::Absent
    );
    assert_eq!(
        early::decode(&settings[..1], MAX_JSON_LEN).unwrap(),
        Early::Absent
    );
    assert_eq!(early::parse_header(settings, MAX_JSON_LEN).unwrap(), None);
    // A partial magic is undecided; a magic that breaks off is HTTP/2.
    assert_eq!(
        early::decode(b"\xff\xff", MAX_JSON_LEN).unwrap(),
        Early::NeedMore
    );
    assert_eq!(
        early::decode(b"\xff\xff\xffTX", MAX_JSON_LEN).unwrap(),
        Early::Absent
    );
    assert_eq!(early::decode(b"", MAX_JSON_LEN).unwrap(), Early::NeedMore);
    // Empty JSON is still a (degenerate) payload.
    assert_eq!(
        early::decode(b"\xff\xff\xffTS\0\0\0\0", MAX_JSON_LEN).unwrap(),
        Early::Payload {
            json: b"",
            consumed: 9
        }
    );
}

#[test]
fn oversized_early_payload_is_an_error() {
    let header = *b"\xff\xff\xffTS\xff\xff\xff\xff";
    let err = early::decode(&header, MAX_JSON_LEN).unwrap_err();
    assert_eq!(
        err,
        Error::EarlyTooLarge {
            len: u64::from(u32::MAX),
            max: MAX_JSON_LEN
        }
    );
    assert!(early::parse_header(&header, 1000).is_err());
    let small = *b"\xff\xff\xffTS\0\0\x01\x00";
    assert_eq!(early::parse_header(&small, 256).unwrap(), Some(256));
    assert!(early::parse_header(&small, 255).is_err());
    assert!(early::encode(&vec![b' '; MAX_JSON_LEN + 1]).is_err());
}

#[test]
fn upgrade_round_trip() {
    let server = ServerHandshake::new(MachinePrivate::generate().unwrap(), 1..=200);
    let machine = MachinePrivate::generate().unwrap();
    let (mut client, init) = ClientHandshake::new(&machine, &server.public(), 145).unwrap();
    let request = upgrade::client_request("control.example.com:8080", &init).unwrap();
    assert!(request.starts_with("POST /ts2021 HTTP/1.1\r\nHost: control.example.com:8080\r\n"));
    assert!(request.ends_with("\r\n\r\n"));

    // The server side parses headers however its HTTP stack delivers them.
    let headers: Vec<(&str, &str)> = request
        .split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(": "))
        .collect();
    let got = upgrade::initiation_from_headers(headers.iter().copied()).unwrap();
    assert_eq!(got, init);
    let accepted = server.accept(&got).unwrap();

    // The client reads the 101 head and the Noise response from one buffer.
    let mut wire = upgrade::server_response().as_bytes().to_vec();
    wire.extend_from_slice(&accepted.response);
    let mut head_len = None;
    for end in 0..=wire.len() {
        if let Some(n) = upgrade::parse_response(&wire[..end]).unwrap() {
            head_len = Some(n);
            break;
        }
    }
    let n = head_len.unwrap();
    assert_eq!(n, upgrade::server_response().len());
    assert!(client.read_response(&wire[n..]).unwrap().is_some());
}

#[test]
fn bad_upgrade_responses_are_errors() {
    let refused = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n";
    let err = upgrade::parse_response(refused).unwrap_err();
    assert!(err.to_string().contains("403 Forbidden"), "{err}");
    assert!(upgrade::parse_response(b"HTTP/1.1 101 Switching Protocols\r\n\r\n").is_err());
    assert!(upgrade::parse_response(b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\n\r\n").is_err());
    assert!(upgrade::parse_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
    assert!(upgrade::parse_response(b"\xff\xfe\r\n\r\n").is_err());
    assert!(upgrade::parse_response(&vec![b'a'; upgrade::MAX_HEAD_LEN + 1]).is_err());
    assert_eq!(upgrade::parse_response(b"HTTP/1.1 101 Swi").unwrap(), None);
    let ok =
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade:  Tailscale-Control-Protocol \r\n\r\nrest";
    assert_eq!(upgrade::parse_response(ok).unwrap(), Some(ok.len() - 4));
}

#[test]
fn bad_upgrade_requests_are_errors() {
    let init = [0u8; 101];
    assert!(upgrade::client_request("bad host", &init).is_err());
    assert!(upgrade::client_request("h\r\nX-Evil: 1", &init).is_err());
    assert!(upgrade::client_request("", &init).is_err());

    let b64 = "AAAA";
    let up = ("Upgrade", "tailscale-control-protocol");
    assert!(upgrade::initiation_from_headers([up]).is_err());
    assert!(upgrade::initiation_from_headers([("X-Tailscale-Handshake", b64)]).is_err());
    assert!(
        upgrade::initiation_from_headers([
            ("upgrade", "websocket"),
            ("x-tailscale-handshake", b64)
        ])
        .is_err()
    );
    assert!(
        upgrade::initiation_from_headers([up, ("X-Tailscale-Handshake", "not base64!")]).is_err()
    );
    let err = upgrade::initiation_from_headers([up, ("X-Tailscale-Handshake", b64)]).unwrap_err();
    assert!(err.to_string().contains("3 bytes"), "{err}");
    let long = "A".repeat(10_000);
    assert!(
        upgrade::initiation_from_headers([up, ("X-Tailscale-Handshake", long.as_str())]).is_err()
    );
}
