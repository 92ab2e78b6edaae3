//! Codec tests against hand-worked bytes (reference §3.1).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

use meshgate_stun::{
    Error, TxId, binding_request, binding_response, is_binding, is_stun, parse_binding_request,
    parse_binding_response,
};

const TX: TxId = TxId([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);

/// Bitwise CRC-32/IEEE, independent of crc32fast, which the crate uses.
fn crc32_bitwise(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let lsb = crc & 1;
            crc >>= 1;
            if lsb == 1 {
                crc ^= 0xEDB8_8320;
            }
        }
    }
    !crc
}

fn fingerprint(covered: &[u8]) -> [u8; 4] {
    (crc32_bitwise(covered) ^ 0x5354_554e).to_be_bytes()
}

#[rustfmt::skip]
fn expected_request() -> Vec<u8> {
    let mut v = vec![
        0x00, 0x01, 0x00, 0x14,             // Binding request, length 20
        0x21, 0x12, 0xa4, 0x42,             // magic cookie
        1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, // TxID
        0x80, 0x22, 0x00, 0x08,             // SOFTWARE, 8 bytes
        b't', b'a', b'i', b'l', b'n', b'o', b'd', b'e',
        0x80, 0x28, 0x00, 0x04,             // FINGERPRINT, 4 bytes
    ];
    let fp = fingerprint(&v[..32]);
    v.extend_from_slice(&fp);
    v
}

#[test]
fn request_matches_layout_byte_for_byte() {
    let want = expected_request();
    assert_eq!(want.len(), 40);
    // Also pinned against an outside CRC (Python zlib.crc32) so both CRCs cannot be wrong alike.
    assert_eq!(&want[36..], &0xb32c_370fu32.to_be_bytes());
    assert_eq!(binding_request(TX).as_slice(), want.as_slice());
    assert!(is_stun(&want));
    assert!(is_binding(&want));
}

#[test]
fn request_round_trip_and_random_txids() {
    assert_eq!(parse_binding_request(&binding_request(TX)), Ok(TX));
    let a = TxId::random();
    let b = TxId::random();
    assert_ne!(a, b);
    assert_eq!(parse_binding_request(&binding_request(a)), Ok(a));
}

/// Builds a request with the given attributes (type, value) and a correct trailing FINGERPRINT.
fn request_with(attrs: &[(u16, &[u8])], with_fp: bool) -> Vec<u8> {
    let mut v = vec![0x00, 0x01, 0, 0, 0x21, 0x12, 0xa4, 0x42];
    v.extend_from_slice(&TX.0);
    for (t, val) in attrs {
        v.extend_from_slice(&t.to_be_bytes());
        v.extend_from_slice(&(val.len() as u16).to_be_bytes());
        v.extend_from_slice(val);
        v.resize(v.len().next_multiple_of(4), 0);
    }
    let len = v.len() - 20 + if with_fp { 8 } else { 0 };
    v[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    if with_fp {
        let fp = fingerprint(&v);
        v.extend_from_slice(&[0x80, 0x28, 0, 4]);
        v.extend_from_slice(&fp);
    }
    v
}

#[test]
fn request_checks() {
    // Our builder agrees with the crate.
    assert_eq!(
        request_with(&[(0x8022, b"tailnode")], true),
        binding_request(TX)
    );
    // Extra unknown attribute before FINGERPRINT: accepted.
    assert_eq!(
        parse_binding_request(&request_with(
            &[(0x8022, b"tailnode"), (0x8055, b"x")],
            true
        )),
        Ok(TX)
    );
    // No SOFTWARE.
    assert_eq!(
        parse_binding_request(&request_with(&[], true)),
        Err(Error::WrongSoftware)
    );
    assert_eq!(
        parse_binding_request(&request_with(&[(0x8055, b"abcd")], true)),
        Err(Error::WrongSoftware)
    );
    // Other SOFTWARE value, or a second conflicting one.
    assert_eq!(
        parse_binding_request(&request_with(&[(0x8022, b"tailnodf")], true)),
        Err(Error::WrongSoftware)
    );
    assert_eq!(
        parse_binding_request(&request_with(
            &[(0x8022, b"tailnode"), (0x8022, b"other")],
            true
        )),
        Err(Error::WrongSoftware)
    );
    // No FINGERPRINT.
    assert_eq!(
        parse_binding_request(&request_with(&[(0x8022, b"tailnode")], false)),
        Err(Error::NoFingerprint)
    );
    // FINGERPRINT not last.
    let mut v = binding_request(TX).to_vec();
    v.extend_from_slice(&[0x80, 0x55, 0, 0]);
    v[3] += 4;
    assert_eq!(parse_binding_request(&v), Err(Error::NoFingerprint));
    // Wrong FINGERPRINT: every single-bit flip of the CRC is caught, and so is a flip in the
    // covered bytes (SOFTWARE kept intact so the CRC check is what fails).
    for bit in 0..32 {
        let mut v = binding_request(TX);
        v[36 + bit / 8] ^= 1 << (bit % 8);
        assert_eq!(parse_binding_request(&v), Err(Error::WrongFingerprint));
    }
    let mut v = binding_request(TX);
    v[10] ^= 0x40; // inside the TxID
    assert_eq!(parse_binding_request(&v), Err(Error::WrongFingerprint));
    // A response is not a request.
    let r = binding_response(TX, "1.2.3.4:5".parse().unwrap());
    assert_eq!(parse_binding_request(&r), Err(Error::WrongType(0x0101)));
    // Trailing bytes beyond the declared length.
    let mut v = binding_request(TX).to_vec();
    v.push(0);
    assert!(matches!(
        parse_binding_request(&v),
        Err(Error::BadLength { .. })
    ));
}

#[test]
fn response_round_trip_v4_v6() {
    let v4: SocketAddr = "203.0.113.7:41641".parse().unwrap();
    let v6: SocketAddr = "[2001:db8::1234:5678]:3478".parse().unwrap();
    for a in [v4, v6] {
        let r = binding_response(TX, a);
        assert_eq!(parse_binding_response(&r), Ok((TX, a)));
        assert!(is_stun(&r));
        assert!(is_binding(&r));
    }
    // v4 response is 32 bytes; hand-check the XORed port and address.
    let r = binding_response(TX, v4);
    assert_eq!(r.len(), 32);
    assert_eq!(&r[..4], &[0x01, 0x01, 0x00, 0x0c]);
    assert_eq!(&r[20..24], &[0x00, 0x20, 0x00, 0x08]);
    assert_eq!(&r[24..26], &[0x00, 0x01]);
    assert_eq!(&r[26..28], &(41641u16 ^ 0x2112).to_be_bytes());
    assert_eq!(&r[28..32], &[203 ^ 0x21, 0x12, 113 ^ 0xa4, 7 ^ 0x42]);
    assert_eq!(binding_response(TX, v6).len(), 44);
    // A v4-mapped sender is answered as IPv4.
    let mapped = SocketAddr::V6(SocketAddrV6::new(
        Ipv4Addr::new(127, 0, 0, 1).to_ipv6_mapped(),
        999,
        0,
        0,
    ));
    assert_eq!(
        parse_binding_response(&binding_response(TX, mapped))
            .unwrap()
            .1,
        SocketAddr::from((Ipv4Addr::LOCALHOST, 999))
    );
    let _ = Ipv6Addr::LOCALHOST;
}

fn response_with_attr(typ: u16, value: &[u8]) -> Vec<u8> {
    let mut v = vec![0x01, 0x01, 0, 0, 0x21, 0x12, 0xa4, 0x42];
    v.extend_from_slice(&TX.0);
    v.extend_from_slice(&typ.to_be_bytes());
    v.extend_from_slice(&(value.len() as u16).to_be_bytes());
    v.extend_from_slice(value);
    let len = (v.len() - 20) as u16;
    v[2..4].copy_from_slice(&len.to_be_bytes());
    v
}

#[test]
fn response_alternative_attributes() {
    let want: SocketAddr = "198.51.100.2:1234".parse().unwrap();
    let xored = &binding_response(TX, want)[24..32];
    // Old XOR-MAPPED-ADDRESS code 0x8020.
    assert_eq!(
        parse_binding_response(&response_with_attr(0x8020, xored)),
        Ok((TX, want))
    );
    // Plain MAPPED-ADDRESS.
    let plain = [0, 1, 0x04, 0xd2, 198, 51, 100, 2];
    assert_eq!(
        parse_binding_response(&response_with_attr(0x0001, &plain)),
        Ok((TX, want))
    );
    // Neither.
    assert_eq!(
        parse_binding_response(&response_with_attr(0x8022, b"abcd")),
        Err(Error::NoAddress)
    );
    // Bad family / wrong length.
    assert_eq!(
        parse_binding_response(&response_with_attr(0x0020, &[0, 3, 0, 0, 1, 2, 3, 4])),
        Err(Error::BadAddress)
    );
    assert_eq!(
        parse_binding_response(&response_with_attr(0x0020, &[0, 2, 0, 0, 1, 2, 3, 4])),
        Err(Error::BadAddress)
    );
}

/// xorshift64*: a fixed-seed generator so the fuzz-ish loop is reproducible.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

#[test]
fn truncated_and_garbage_inputs_are_errors() {
    let req = binding_request(TX);
    let resp4 = binding_response(TX, "1.2.3.4:5".parse().unwrap());
    let resp6 = binding_response(TX, "[::1]:5".parse().unwrap());
    for n in 0..req.len() {
        assert!(parse_binding_request(&req[..n]).is_err(), "prefix {n}");
        assert!(parse_binding_response(&req[..n]).is_err());
    }
    for r in [&resp4, &resp6] {
        for n in 0..r.len() {
            assert!(parse_binding_response(&r[..n]).is_err(), "prefix {n}");
            assert!(parse_binding_request(&r[..n]).is_err());
        }
    }
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut accepted = 0;
    for i in 0..20_000 {
        let len = (next(&mut seed) % 80) as usize;
        let mut b: Vec<u8> = (0..len).map(|_| next(&mut seed) as u8).collect();
        // Half the inputs get a valid-looking header so the attribute walk is exercised.
        if i % 2 == 0 && b.len() >= 20 {
            b[0] &= 0x01;
            b[1] = 0x01;
            b[4..8].copy_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
            let l = ((b.len() - 20) & !3) as u16;
            b[2..4].copy_from_slice(&l.to_be_bytes());
        }
        assert!(parse_binding_request(&b).is_err());
        if parse_binding_response(&b).is_ok() {
            accepted += 1;
        }
        let _ = is_stun(&b);
    }
    // Random bytes essentially never form a response with a well-formed address attribute.
    assert!(accepted < 100, "{accepted}");
    // Bit flips of a valid request: only flips outside checked bytes could pass; none exist.
    for i in 0..req.len() * 8 {
        let mut v = req;
        v[i / 8] ^= 1 << (i % 8);
        assert!(parse_binding_request(&v).is_err(), "bit {i}");
    }
}
