//! Sealed round trips, the standard ping size, key mismatches and the tag-first layout.

mod common;

use std::net::SocketAddr;

use common::seal_raw;
use meshgate_disco::{
    CallMeMaybe, DiscoPrivate, Error, HEADER_LEN, Message, NodePublic, OVERHEAD, Ping, Pong,
    STANDARD_PING_SIZE, SharedKey, looks_like_disco, open, random_nonce, seal, sender,
};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn samples() -> Vec<Message> {
    let nk = NodePublic::from_bytes([0x42; 32]);
    vec![
        Message::Ping(Ping::standard([1; 12], nk)),
        Message::Ping(Ping {
            tx_id: [2; 12],
            node_key: None,
            padding: 0,
        }),
        Message::Ping(Ping {
            tx_id: [3; 12],
            node_key: Some(nk),
            padding: 1200,
        }),
        Message::Pong(Pong {
            tx_id: [4; 12],
            src: addr("203.0.113.9:41641"),
        }),
        Message::Pong(Pong {
            tx_id: [5; 12],
            src: addr("[2001:db8::77]:65535"),
        }),
        Message::CallMeMaybe(CallMeMaybe {
            endpoints: vec![
                addr("198.51.100.1:1"),
                addr("[2001:db8:1::1]:41641"),
                addr("127.0.0.1:0"),
                addr("[::1]:9"),
            ],
        }),
        Message::CallMeMaybe(CallMeMaybe::default()),
    ]
}

#[test]
fn every_message_round_trips_sealed() {
    let a = DiscoPrivate::generate();
    let b = DiscoPrivate::generate();
    let ab = SharedKey::new(&a, &b.public());
    let ba = SharedKey::new(&b, &a.public());
    assert_eq!((ab.mine(), ab.peer()), (a.public(), b.public()));
    for m in samples() {
        let nonce = random_nonce();
        let p = seal(&a, &b.public(), &m, &nonce);
        assert_eq!(p.len(), OVERHEAD + m.encoded_len());
        assert!(looks_like_disco(&p));
        assert_eq!(sender(&p), Some(a.public()));
        assert_eq!(&p[38..62], &nonce);
        // The free function and the precomputed key produce the same bytes.
        assert_eq!(ab.seal(&m, &nonce), p);
        assert_eq!(open(&b, &p).unwrap(), (a.public(), m.clone()));
        assert_eq!(ba.open(&p).unwrap(), m);
        // And back the other way.
        let back = ba.seal(&m, &random_nonce());
        assert_eq!(ab.open(&back).unwrap(), m);
    }
}

#[test]
fn standard_ping_is_124_bytes() {
    let a = DiscoPrivate::generate();
    let b = DiscoPrivate::generate();
    let m = Message::Ping(Ping::standard([9; 12], NodePublic::from_bytes([1; 32])));
    let p = seal(&a, &b.public(), &m, &random_nonce());
    assert_eq!(p.len(), 124);
    assert_eq!(STANDARD_PING_SIZE, 124);
}

#[test]
fn wrong_keys_fail_to_open() {
    let a = DiscoPrivate::generate();
    let b = DiscoPrivate::generate();
    let c = DiscoPrivate::generate();
    let m = samples().remove(0);
    let p = seal(&a, &b.public(), &m, &random_nonce());
    // Addressed to b: c cannot open it.
    assert_eq!(open(&c, &p), Err(Error::BoxOpen));
    assert_eq!(
        SharedKey::new(&c, &a.public()).open(&p),
        Err(Error::BoxOpen)
    );
    // A key for another peer refuses before decrypting.
    assert_eq!(
        SharedKey::new(&b, &c.public()).open(&p),
        Err(Error::UnexpectedSender {
            expected: c.public(),
            got: a.public()
        })
    );
    // c claims to be a: header says a, box made with c's key.
    let mut forged = seal(&c, &b.public(), &m, &random_nonce());
    forged[6..38].copy_from_slice(a.public().as_bytes());
    assert_eq!(open(&b, &forged), Err(Error::BoxOpen));
}

#[test]
fn tag_first_known_answer() {
    // crypto_box's `encrypt` yields tag ‖ ciphertext (crypto_box_easy); a packet built by hand
    // from it must open, and our own sealing must produce the identical bytes.
    let a = DiscoPrivate::from_bytes([0x11; 32]);
    let b = DiscoPrivate::from_bytes([0x22; 32]);
    let nonce = [0x33; 24];
    let m = Message::Pong(Pong {
        tx_id: *b"0123456789ab",
        src: addr("192.0.2.1:41641"),
    });
    let by_hand = seal_raw(&a, &b.public(), &nonce, &m.encode());
    assert_eq!(open(&b, &by_hand).unwrap(), (a.public(), m.clone()));
    assert_eq!(seal(&a, &b.public(), &m, &nonce), by_hand);
    // And swapping to ciphertext ‖ tag does not open: the layout really is tag-first.
    let mut swapped = by_hand[..HEADER_LEN].to_vec();
    swapped.extend_from_slice(&by_hand[HEADER_LEN + 16..]);
    swapped.extend_from_slice(&by_hand[HEADER_LEN..HEADER_LEN + 16]);
    assert_eq!(open(&b, &swapped), Err(Error::BoxOpen));
}

#[test]
fn unknown_and_unsupported_types_inside_a_valid_box() {
    let a = DiscoPrivate::generate();
    let b = DiscoPrivate::generate();
    let nonce = random_nonce();
    let p = seal_raw(&a, &b.public(), &nonce, &[0x2a, 0, 1, 2, 3]);
    assert_eq!(open(&b, &p), Err(Error::UnknownType(0x2a)));
    let p = seal_raw(&a, &b.public(), &nonce, &[0x07, 0, 1, 2, 3]);
    assert_eq!(open(&b, &p).unwrap().1, Message::Unsupported(7));
    let p = seal_raw(&a, &b.public(), &nonce, &[]);
    assert_eq!(open(&b, &p), Err(Error::Short { what: "header" }));
}
