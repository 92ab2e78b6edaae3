//! Handshake: our client and server against each other and against snow's own IK.

use meshgate_controlbase::messages::{
    INITIATION_LEN, MSG_ERROR, RESPONSE_LEN, encode_error_message,
};
use meshgate_controlbase::{
    ClientHandshake, Error, MachinePrivate, MachinePublic, PROTOCOL_NAME, ServerHandshake, prologue,
};

const VERSION: u16 = 130;

fn keys() -> (MachinePrivate, ServerHandshake) {
    let machine = MachinePrivate::generate().unwrap();
    let server = ServerHandshake::new(MachinePrivate::generate().unwrap(), 113..=145);
    (machine, server)
}

#[test]
fn client_and_server_agree() {
    let (machine, server) = keys();
    let (mut client, init) = ClientHandshake::new(&machine, &server.public(), VERSION).unwrap();
    assert_eq!(init.len(), 101);
    assert_eq!(&init[..5], &[0, 130, 0x01, 0, 96]);

    let accepted = server.accept(&init).unwrap();
    assert_eq!(accepted.machine_key, machine.public());
    assert_eq!(accepted.version, VERSION);
    assert_eq!(accepted.response.len(), 51);
    assert_eq!(&accepted.response[..3], &[0x02, 0, 48]);

    let transport = client.read_response(&accepted.response).unwrap().unwrap();
    assert_eq!(transport.info().peer, server.public());
    assert_eq!(transport.info().version, VERSION);
    assert_eq!(
        transport.info().handshake_hash,
        accepted.transport.info().handshake_hash
    );
    assert_eq!(accepted.transport.info().peer, machine.public());
    // Done: a second call is an error, not a panic.
    assert_eq!(
        client.read_response(&accepted.response).unwrap_err(),
        Error::HandshakeFinished
    );
}

#[test]
fn response_fed_byte_by_byte_with_records_behind_it() {
    let (machine, server) = keys();
    let (mut client, init) = ClientHandshake::new(&machine, &server.public(), VERSION).unwrap();
    let mut accepted = server.accept(&init).unwrap();
    let mut wire = accepted.response.to_vec();
    wire.extend(accepted.transport.encrypt(b"early bytes").unwrap());

    let mut transport = None;
    for end in 0..=RESPONSE_LEN {
        match client.read_response(&wire[..end]).unwrap() {
            None => assert!(end < RESPONSE_LEN),
            Some(t) => transport = Some(t),
        }
    }
    let mut transport = transport.unwrap();
    assert_eq!(transport.next_plaintext(), None);

    // Same again, but with the record in the same buffer as the response.
    let (mut client, init) = ClientHandshake::new(&machine, &server.public(), VERSION).unwrap();
    let mut accepted = server.accept(&init).unwrap();
    let mut wire = accepted.response.to_vec();
    wire.extend(accepted.transport.encrypt(b"early bytes").unwrap());
    let mut transport = client.read_response(&wire).unwrap().unwrap();
    assert_eq!(
        transport.next_plaintext(),
        Some(Ok(b"early bytes".to_vec()))
    );
}

fn snow_builder(prologue: &[u8]) -> snow::Builder<'_> {
    snow::Builder::new(PROTOCOL_NAME.parse().unwrap())
        .prologue(prologue)
        .unwrap()
}

#[test]
fn our_client_against_snow_responder() {
    let machine = MachinePrivate::generate().unwrap();
    let control = MachinePrivate::generate().unwrap();
    let (mut client, init) = ClientHandshake::new(&machine, &control.public(), VERSION).unwrap();

    let p = prologue(VERSION);
    let mut responder = snow_builder(&p)
        .local_private_key(control.as_bytes())
        .unwrap()
        .build_responder()
        .unwrap();
    let mut payload = [0u8; 64];
    assert_eq!(responder.read_message(&init[5..], &mut payload).unwrap(), 0);
    assert_eq!(
        responder.get_remote_static().unwrap(),
        machine.public().as_bytes()
    );
    let mut response = vec![0x02, 0, 48];
    response.resize(RESPONSE_LEN, 0);
    assert_eq!(
        responder.write_message(&[], &mut response[3..]).unwrap(),
        48
    );

    let transport = client.read_response(&response).unwrap().unwrap();
    assert_eq!(
        transport.info().handshake_hash,
        responder.get_handshake_hash()
    );
}

#[test]
fn snow_initiator_against_our_server() {
    let machine = MachinePrivate::generate().unwrap();
    let server = ServerHandshake::new(MachinePrivate::generate().unwrap(), 1..=u16::MAX);
    for version in [1u16, 145, 65535] {
        let p = prologue(version);
        let mut initiator = snow_builder(&p)
            .local_private_key(machine.as_bytes())
            .unwrap()
            .remote_public_key(server.public().as_bytes())
            .unwrap()
            .build_initiator()
            .unwrap();
        let mut init = vec![0u8; INITIATION_LEN];
        init[..2].copy_from_slice(&version.to_be_bytes());
        init[2..5].copy_from_slice(&[0x01, 0, 96]);
        assert_eq!(initiator.write_message(&[], &mut init[5..]).unwrap(), 96);

        let accepted = server.accept(&init).unwrap();
        assert_eq!(accepted.machine_key, machine.public());
        assert_eq!(accepted.version, version);
        let mut payload = [0u8; 64];
        assert_eq!(
            initiator
                .read_message(&accepted.response[3..], &mut payload)
                .unwrap(),
            0
        );
        assert!(initiator.is_handshake_finished());
        assert_eq!(
            accepted.transport.info().handshake_hash,
            initiator.get_handshake_hash()
        );
    }
}

#[test]
fn prologue_is_tailscales() {
    assert_eq!(prologue(145), b"Tailscale Control Protocol v145");
    assert_eq!(prologue(7), b"Tailscale Control Protocol v7");
}

#[test]
fn unsupported_version_is_refused_with_an_error_message() {
    let (machine, server) = keys();
    let (mut client, init) = ClientHandshake::new(&machine, &server.public(), 100).unwrap();
    let err = server.accept(&init).unwrap_err();
    assert_eq!(err, Error::UnsupportedVersion(100));
    let reply = err.reply_for_client().unwrap();
    assert_eq!(reply[0], MSG_ERROR);
    // The client sees the server's text, fed in two pieces.
    assert!(client.read_response(&reply[..2]).unwrap().is_none());
    assert!(
        client
            .read_response(&reply[..reply.len() - 1])
            .unwrap()
            .is_none()
    );
    let err = client.read_response(&reply).unwrap_err();
    assert_eq!(
        err,
        Error::ServerRefused("unsupported protocol version".into())
    );
    assert!(err.to_string().contains("unsupported protocol version"));
    assert_eq!(
        client.read_response(&reply).unwrap_err(),
        Error::HandshakeFinished
    );
}

#[test]
fn version_in_header_is_bound_by_the_prologue() {
    let (machine, server) = keys();
    let (_, mut init) = ClientHandshake::new(&machine, &server.public(), 130).unwrap();
    init[1] = 131; // claim 131, but the prologue said 130
    assert_eq!(server.accept(&init).unwrap_err(), Error::HandshakeAuth);
}

#[test]
fn malformed_initiations_are_errors() {
    let (machine, server) = keys();
    let (_, init) = ClientHandshake::new(&machine, &server.public(), VERSION).unwrap();

    for len in [0, 1, 5, 100, 102, 4096] {
        let mut bad = init.to_vec();
        bad.resize(len, 0);
        let err = server.accept(&bad).unwrap_err();
        assert_eq!(err, Error::InitiationSize(len));
        assert!(err.reply_for_client().is_some());
    }
    let mut bad = init;
    bad[2] = 0x04;
    assert_eq!(
        server.accept(&bad).unwrap_err(),
        Error::UnexpectedType { got: 4, want: 1 }
    );
    let mut bad = init;
    bad[4] = 97;
    assert_eq!(
        server.accept(&bad).unwrap_err(),
        Error::InitiationLength(97)
    );
    // Every flipped bit of the Noise part fails authentication (or is a weak key), never panics.
    for i in 5..INITIATION_LEN {
        let mut bad = init;
        bad[i] ^= 0x01;
        let err = server.accept(&bad).unwrap_err();
        assert!(
            matches!(err, Error::HandshakeAuth | Error::WeakKey),
            "byte {i}: {err}"
        );
        assert_eq!(err.reply_for_client(), None);
    }
    // Pure garbage of the right shape.
    let mut garbage = [0xa5u8; INITIATION_LEN];
    garbage[..5].copy_from_slice(&[0, 130, 1, 0, 96]);
    assert!(server.accept(&garbage).is_err());
}

#[test]
fn low_order_ephemeral_key_is_refused() {
    let (machine, server) = keys();
    let (_, mut init) = ClientHandshake::new(&machine, &server.public(), VERSION).unwrap();
    init[5..37].fill(0); // the identity point: DH result is all zeros
    assert_eq!(server.accept(&init).unwrap_err(), Error::WeakKey);

    // And a client refuses a low-order control key up front.
    let zero = MachinePublic::from_bytes([0; 32]);
    assert_eq!(
        ClientHandshake::new(&machine, &zero, VERSION).unwrap_err(),
        Error::WeakKey
    );
}

#[test]
fn wrong_control_key_fails_on_the_server() {
    let (machine, server) = keys();
    let other = MachinePrivate::generate().unwrap().public();
    let (_, init) = ClientHandshake::new(&machine, &other, VERSION).unwrap();
    assert_eq!(server.accept(&init).unwrap_err(), Error::HandshakeAuth);
}

#[test]
fn malformed_responses_are_errors() {
    let (machine, server) = keys();
    let (_, init) = ClientHandshake::new(&machine, &server.public(), VERSION).unwrap();
    let accepted = server.accept(&init).unwrap();
    let good = accepted.response;

    let fresh = || {
        ClientHandshake::new(&machine, &server.public(), VERSION)
            .unwrap()
            .0
    };
    assert_eq!(
        fresh().read_response(&[0x04]).unwrap_err(),
        Error::UnexpectedType { got: 4, want: 2 }
    );
    assert_eq!(
        fresh().read_response(b"HTTP/1.1 400").unwrap_err(),
        Error::UnexpectedType { got: b'H', want: 2 }
    );
    assert_eq!(
        fresh().read_response(&[0x02, 0, 49]).unwrap_err(),
        Error::ResponseLength(49)
    );
    assert!(fresh().read_response(&[]).unwrap().is_none());
    // The response belongs to another handshake (other ephemeral keys): authentication fails.
    assert_eq!(
        fresh().read_response(&good).unwrap_err(),
        Error::HandshakeAuth
    );
    // Tampered response for the right handshake.
    for i in 3..RESPONSE_LEN {
        let (mut client, init) = ClientHandshake::new(&machine, &server.public(), VERSION).unwrap();
        let mut resp = server.accept(&init).unwrap().response;
        resp[i] ^= 0x80;
        let err = client.read_response(&resp).unwrap_err();
        assert!(
            matches!(err, Error::HandshakeAuth | Error::WeakKey),
            "byte {i}: {err}"
        );
    }
    // A non-UTF-8 error message still becomes text.
    let mut msg = vec![MSG_ERROR, 0, 2, 0xff, b'x'];
    let err = fresh().read_response(&msg).unwrap_err();
    assert_eq!(err, Error::ServerRefused("\u{fffd}x".into()));
    msg.truncate(4);
    assert!(fresh().read_response(&msg).unwrap().is_none());
}

#[test]
fn error_message_encoding_caps_length() {
    let long = "é".repeat(40_000); // 80,000 bytes
    let msg = encode_error_message(&long);
    let len = usize::from(u16::from_be_bytes([msg[1], msg[2]]));
    assert_eq!(msg.len(), 3 + len);
    assert!(len <= 65535);
    assert!(std::str::from_utf8(&msg[3..]).is_ok());
}

#[test]
fn debug_output_redacts_private_keys() {
    let key = MachinePrivate::from_bytes([0x42; 32]);
    let shown = format!("{key:?}");
    assert!(!shown.contains("42"), "{shown}");
    assert!(shown.contains("redacted"));

    let server = ServerHandshake::new(key.clone(), 1..=2);
    let shown = format!("{server:?}");
    assert!(!shown.contains("4242"), "{shown}");
    assert!(shown.contains("redacted"));

    let public = key.public();
    assert_eq!(format!("{public:?}").len(), 5 + 64);
    assert!(format!("{public}").starts_with("mkey:"));

    let (client, _) =
        ClientHandshake::new(&key, &MachinePrivate::generate().unwrap().public(), 1).unwrap();
    assert!(!format!("{client:?}").contains("4242"));
}

#[test]
fn public_key_matches_snow() {
    let kp = snow::Builder::new(PROTOCOL_NAME.parse().unwrap())
        .generate_keypair()
        .unwrap();
    let private = MachinePrivate::from_bytes(kp.private.as_slice().try_into().unwrap());
    assert_eq!(private.public().as_bytes().as_slice(), kp.public.as_slice());
}
