//! Unit tests that need crate-private hooks (the nonce counters).

use crate::{ClientHandshake, Error, MachinePrivate, ServerHandshake, Transport};

fn pair() -> (Transport, Transport) {
    let server = ServerHandshake::new(MachinePrivate::generate().unwrap(), 1..=200);
    let machine = MachinePrivate::generate().unwrap();
    let (mut client, init) = ClientHandshake::new(&machine, &server.public(), 130).unwrap();
    let accepted = server.accept(&init).unwrap();
    let transport = client.read_response(&accepted.response).unwrap().unwrap();
    (transport, accepted.transport)
}

#[test]
fn send_nonce_exhaustion_is_an_error_and_never_wraps() {
    let (mut client, mut server) = pair();
    let (tx, _) = client.halves_mut();
    tx.set_counter_for_test(u64::MAX - 2);
    // Two nonces left (MAX-2, MAX-1): a three-record message is refused whole.
    assert_eq!(tx.encrypt(&vec![0u8; 3 * 4077]), Err(Error::NonceExhausted));
    assert_eq!(tx.counter(), u64::MAX - 2);
    let rec1 = tx.encrypt(b"a").unwrap();
    let rec2 = tx.encrypt(b"b").unwrap();
    assert_eq!(tx.counter(), u64::MAX - 1 + 1);
    assert_eq!(tx.encrypt(b"c"), Err(Error::NonceExhausted));
    assert_eq!(tx.encrypt(b"c"), Err(Error::NonceExhausted));
    assert_eq!(tx.counter(), u64::MAX);

    // The receiver at the same counters decrypts both, then refuses to go further.
    let (_, rx) = server.halves_mut();
    rx.set_counter_for_test(u64::MAX - 2);
    rx.push(&rec1);
    rx.push(&rec2);
    assert_eq!(rx.next_plaintext(), Some(Ok(b"a".to_vec())));
    assert_eq!(rx.next_plaintext(), Some(Ok(b"b".to_vec())));
    assert_eq!(rx.next_plaintext(), None);
}

#[test]
fn receive_nonce_exhaustion_is_an_error() {
    let (mut client, mut server) = pair();
    let record = client.encrypt(b"x").unwrap();
    let (_, rx) = server.halves_mut();
    rx.set_counter_for_test(u64::MAX);
    rx.push(&record);
    assert_eq!(rx.next_plaintext(), Some(Err(Error::NonceExhausted)));
    assert_eq!(rx.next_plaintext(), Some(Err(Error::Broken)));
}
