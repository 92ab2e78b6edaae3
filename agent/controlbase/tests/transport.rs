//! Transport records: both directions, incremental decoding, and the big-endian nonce checked
//! against snow's (little-endian) Noise transport.

use meshgate_controlbase::messages::{INITIATION_LEN, MAX_PLAINTEXT_LEN, RESPONSE_LEN};
use meshgate_controlbase::{
    ClientHandshake, Error, MachinePrivate, PROTOCOL_NAME, ServerHandshake, Transport, prologue,
};

const VERSION: u16 = 145;

fn pair() -> (Transport, Transport) {
    let server = ServerHandshake::new(MachinePrivate::generate().unwrap(), 1..=200);
    let machine = MachinePrivate::generate().unwrap();
    let (mut client, init) = ClientHandshake::new(&machine, &server.public(), VERSION).unwrap();
    let accepted = server.accept(&init).unwrap();
    (
        client.read_response(&accepted.response).unwrap().unwrap(),
        accepted.transport,
    )
}

fn drain(t: &mut Transport) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(r) = t.next_plaintext() {
        out.push(r.unwrap());
    }
    out
}

fn exchange_byte_by_byte(from: &mut Transport, to: &mut Transport) {
    let mut wire = Vec::new();
    for msg in [&b"first"[..], b"", b"second", b"third message"] {
        wire.extend(from.encrypt(msg).unwrap());
    }
    let mut got = Vec::new();
    for b in &wire {
        to.push(std::slice::from_ref(b));
        while let Some(r) = to.next_plaintext() {
            got.push(r.unwrap());
        }
    }
    // The empty message makes no record.
    assert_eq!(
        got,
        vec![
            b"first".to_vec(),
            b"second".to_vec(),
            b"third message".to_vec()
        ]
    );
}

#[test]
fn both_directions_byte_by_byte() {
    let (mut client, mut server) = pair();
    exchange_byte_by_byte(&mut client, &mut server);
    exchange_byte_by_byte(&mut server, &mut client);
    exchange_byte_by_byte(&mut client, &mut server);
}

#[test]
fn large_messages_split_into_records() {
    let (mut client, mut server) = pair();
    let msg: Vec<u8> = (0..3 * MAX_PLAINTEXT_LEN + 10).map(|i| i as u8).collect();
    let wire = client.encrypt(&msg).unwrap();
    assert_eq!(wire.len(), msg.len() + 4 * (3 + 16));
    // Record boundaries: full records are exactly 4096 bytes on the wire.
    assert_eq!(&wire[..3], &[0x04, 0x0f, 0xfd]);
    assert_eq!(&wire[4096..4099], &[0x04, 0x0f, 0xfd]);
    assert_eq!(&wire[3 * 4096..3 * 4096 + 3], &[0x04, 0, 26]);

    for chunk in wire.chunks(1000) {
        server.push(chunk);
    }
    let records = drain(&mut server);
    assert_eq!(records.len(), 4);
    assert_eq!(records.concat(), msg);
    assert_eq!(server.encrypt(&[7; MAX_PLAINTEXT_LEN]).unwrap().len(), 4096);
}

/// Runs our client against a snow responder and returns both ends.
fn ours_vs_snow() -> (Transport, snow::StatelessTransportState) {
    let machine = MachinePrivate::generate().unwrap();
    let control = MachinePrivate::generate().unwrap();
    let (mut client, init) = ClientHandshake::new(&machine, &control.public(), VERSION).unwrap();
    let p = prologue(VERSION);
    let mut responder = snow::Builder::new(PROTOCOL_NAME.parse().unwrap())
        .prologue(&p)
        .unwrap()
        .local_private_key(control.as_bytes())
        .unwrap()
        .build_responder()
        .unwrap();
    responder.read_message(&init[5..], &mut [0u8; 8]).unwrap();
    let mut response = vec![0x02, 0, 48];
    response.resize(RESPONSE_LEN, 0);
    responder.write_message(&[], &mut response[3..]).unwrap();
    let ours = client.read_response(&response).unwrap().unwrap();
    (ours, responder.into_stateless_transport_mode().unwrap())
}

#[test]
fn nonce_is_big_endian_client_to_server() {
    let (mut ours, snow) = ours_vs_snow();
    let mut buf = [0u8; 4096];
    let r0 = ours.encrypt(b"record zero").unwrap();
    let r1 = ours.encrypt(b"record one").unwrap();
    // Counter 0 is the same in either byte order: snow opens it, and seals the same bytes.
    let n = snow.read_message(0, &r0[3..], &mut buf).unwrap();
    assert_eq!(&buf[..n], b"record zero");
    // Counter 1: snow's little-endian nonce 1 does not open it ...
    assert!(snow.read_message(1, &r1[3..], &mut buf).is_err());
    // ... but the nonce whose little-endian bytes are big-endian 1 does.
    let n = snow
        .read_message(1u64.swap_bytes(), &r1[3..], &mut buf)
        .unwrap();
    assert_eq!(&buf[..n], b"record one");
}

#[test]
fn nonce_is_big_endian_server_to_client() {
    let (mut ours, snow) = ours_vs_snow();
    let mut ct = [0u8; 4096];
    for counter in [0u64, 1, 2, 255, 256, 0x0102_0304_0506] {
        let text = format!("message {counter}");
        let n = snow
            .write_message(counter.swap_bytes(), text.as_bytes(), &mut ct)
            .unwrap();
        let mut record = vec![0x04];
        record.extend_from_slice(&(n as u16).to_be_bytes());
        record.extend_from_slice(&ct[..n]);
        if counter != 0x0102_0304_0506 {
            ours.push(&record);
            assert_eq!(
                ours.next_plaintext(),
                Some(Ok(text.into_bytes())),
                "counter {counter}"
            );
        }
        // Skip ahead for the last case: our receiver expects the next counter in order.
        if counter == 2 {
            for c in 3..255u64 {
                let n = snow
                    .write_message(c.swap_bytes(), b"filler", &mut ct)
                    .unwrap();
                let mut r = vec![0x04, 0, n as u8];
                r.extend_from_slice(&ct[..n]);
                ours.push(&r);
                assert_eq!(ours.next_plaintext(), Some(Ok(b"filler".to_vec())));
            }
        }
    }
    // A record sealed with snow's own little-endian counter 1 is refused once we are at 1.
    let (mut ours, snow) = ours_vs_snow();
    let first = snow.write_message(0, b"zero", &mut ct).unwrap();
    ours.push(&[&[0x04, 0, first as u8][..], &ct[..first]].concat());
    assert_eq!(ours.next_plaintext(), Some(Ok(b"zero".to_vec())));
    let n = snow.write_message(1, b"one", &mut ct).unwrap();
    ours.push(&[&[0x04, 0, n as u8][..], &ct[..n]].concat());
    assert_eq!(ours.next_plaintext(), Some(Err(Error::Decrypt)));
}

#[test]
fn snow_stateful_transport_reads_only_our_first_record() {
    // A snow initiator against our server. snow's ordinary (stateful, little-endian)
    // transport opens our first server-to-client record (counter 0 is the same in both
    // byte orders) and fails on the second.
    let machine = MachinePrivate::generate().unwrap();
    let server = ServerHandshake::new(MachinePrivate::generate().unwrap(), 1..=200);
    let p = prologue(VERSION);
    let mut initiator = snow::Builder::new(PROTOCOL_NAME.parse().unwrap())
        .prologue(&p)
        .unwrap()
        .local_private_key(machine.as_bytes())
        .unwrap()
        .remote_public_key(server.public().as_bytes())
        .unwrap()
        .build_initiator()
        .unwrap();
    let mut init = vec![0, VERSION as u8, 0x01, 0, 96];
    init.resize(INITIATION_LEN, 0);
    initiator.write_message(&[], &mut init[5..]).unwrap();
    let mut accepted = server.accept(&init).unwrap();
    initiator
        .read_message(&accepted.response[3..], &mut [])
        .unwrap();
    let mut snow = initiator.into_transport_mode().unwrap();

    let mut buf = [0u8; 4096];
    let r0 = accepted.transport.encrypt(b"settings").unwrap();
    let r1 = accepted.transport.encrypt(b"more").unwrap();
    let n = snow.read_message(&r0[3..], &mut buf).unwrap();
    assert_eq!(&buf[..n], b"settings");
    assert!(snow.read_message(&r1[3..], &mut buf).is_err());
}

#[test]
fn tampered_records_are_errors() {
    for i in 3..3 + 11 + 16 {
        let (mut c, mut s) = pair();
        let mut r = c.encrypt(b"hello world").unwrap();
        r[i] ^= 0x10;
        s.push(&r);
        assert_eq!(s.next_plaintext(), Some(Err(Error::Decrypt)), "byte {i}");
        assert_eq!(s.next_plaintext(), Some(Err(Error::Broken)));
    }
}

#[test]
fn replayed_and_reordered_records_are_errors() {
    let (mut client, mut server) = pair();
    let r0 = client.encrypt(b"zero").unwrap();
    server.push(&r0);
    assert_eq!(server.next_plaintext(), Some(Ok(b"zero".to_vec())));
    server.push(&r0);
    assert_eq!(server.next_plaintext(), Some(Err(Error::Decrypt)));

    let (mut client, mut server) = pair();
    let _skipped = client.encrypt(b"zero").unwrap();
    server.push(&client.encrypt(b"one").unwrap());
    assert_eq!(server.next_plaintext(), Some(Err(Error::Decrypt)));
}

#[test]
fn bad_frames_are_errors() {
    let cases: [(&[u8], Error); 6] = [
        (&[0x03, 0, 5], Error::UnexpectedType { got: 3, want: 4 }),
        (&[0x00], Error::UnexpectedType { got: 0, want: 4 }),
        (&[0x04, 0, 15], Error::RecordLength(15)),
        (&[0x04, 0, 0], Error::RecordLength(0)),
        (&[0x04, 0x0f, 0xfe], Error::RecordLength(4094)),
        (&[0x04, 0xff, 0xff], Error::RecordLength(65535)),
    ];
    for (bytes, want) in cases {
        let (_, mut server) = pair();
        server.push(bytes);
        assert_eq!(server.next_plaintext(), Some(Err(want)), "{bytes:?}");
        assert_eq!(server.next_plaintext(), Some(Err(Error::Broken)));
    }
    // A garbage record of a valid length fails authentication.
    let (_, mut server) = pair();
    let mut garbage = vec![0x04, 0x0f, 0xfd];
    garbage.resize(4096, 0x5a);
    server.push(&garbage);
    assert_eq!(server.next_plaintext(), Some(Err(Error::Decrypt)));
}

#[test]
fn truncated_records_wait_for_more() {
    let (mut client, mut server) = pair();
    let r = client.encrypt(b"complete me").unwrap();
    server.push(&r[..r.len() - 1]);
    assert_eq!(server.next_plaintext(), None);
    assert_eq!(server.next_plaintext(), None);
    server.push(&r[r.len() - 1..]);
    assert_eq!(server.next_plaintext(), Some(Ok(b"complete me".to_vec())));
    assert_eq!(server.next_plaintext(), None);
}

#[test]
fn split_halves_work_independently() {
    let (client, server) = pair();
    let (mut ctx, mut crx) = client.into_split();
    let (mut stx, mut srx) = server.into_split();
    srx.push(&ctx.encrypt(b"ping").unwrap());
    assert_eq!(srx.next_plaintext(), Some(Ok(b"ping".to_vec())));
    crx.push(&stx.encrypt(b"pong").unwrap());
    assert_eq!(crx.next_plaintext(), Some(Ok(b"pong".to_vec())));
    assert_eq!((ctx.counter(), crx.counter(), srx.buffered()), (1, 1, 0));
}
