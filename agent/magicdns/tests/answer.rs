//! The sans-I/O core: what `answer` decides for each kind of query.

use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use meshgate_magicdns::{Decision, Domains, Records, TTL, Transport, answer, servfail};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn records() -> Records {
    Records::new([
        (
            "host.tail.ts.net.",
            vec![ip("100.64.0.1"), ip("fd7a:115c:a1e0::1")],
        ),
        ("peer.tail.ts.net", vec![ip("100.64.0.2")]),
        ("extra.example.com.", vec![ip("192.0.2.7")]),
    ])
}

fn domains() -> Domains {
    Domains::new(["tail.ts.net"])
}

fn query(id: u16, name: &str, qtype: RecordType) -> Message {
    let mut msg = Message::query();
    msg.metadata.id = id;
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    msg
}

fn decide(msg: &Message, transport: Transport) -> Decision {
    answer(&msg.to_vec().unwrap(), &records(), &domains(), transport)
}

fn reply_to(msg: &Message) -> Message {
    match decide(msg, Transport::Udp) {
        Decision::Reply(bytes) => Message::from_vec(&bytes).unwrap(),
        other => panic!("expected a reply, got {other:?}"),
    }
}

fn addresses(reply: &Message) -> Vec<IpAddr> {
    reply
        .answers
        .iter()
        .map(|r| match &r.data {
            RData::A(a) => IpAddr::V4(a.0),
            RData::AAAA(a) => IpAddr::V6(a.0),
            other => panic!("unexpected record {other:?}"),
        })
        .collect()
}

#[test]
fn a_and_aaaa_for_tailnet_names() {
    let reply = reply_to(&query(0x1234, "HOST.Tail.ts.net.", RecordType::A));
    assert_eq!(reply.metadata.id, 0x1234);
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(reply.metadata.authoritative && reply.metadata.recursion_desired);
    assert_eq!(reply.queries.len(), 1);
    assert_eq!(addresses(&reply), [ip("100.64.0.1")]);
    assert_eq!(reply.answers[0].ttl, TTL);
    // The question's spelling is echoed (0x20 case randomisation must keep working).
    assert_eq!(reply.answers[0].name.to_ascii(), "HOST.Tail.ts.net.");

    let reply = reply_to(&query(7, "host.tail.ts.net.", RecordType::AAAA));
    assert_eq!(addresses(&reply), [ip("fd7a:115c:a1e0::1")]);
    let reply = reply_to(&query(7, "host.tail.ts.net.", RecordType::ANY));
    assert_eq!(addresses(&reply).len(), 2);
}

#[test]
fn other_types_of_known_names_are_empty_noerror() {
    for qtype in [RecordType::MX, RecordType::TXT, RecordType::AAAA] {
        let reply = reply_to(&query(9, "peer.tail.ts.net.", qtype));
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NoError,
            "{qtype}"
        );
        assert!(reply.answers.is_empty(), "{qtype}");
    }
}

#[test]
fn unknown_names_under_the_domain_are_nxdomain() {
    let reply = reply_to(&query(3, "nobody.tail.ts.net.", RecordType::A));
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    let reply = reply_to(&query(3, "a.b.tail.ts.net.", RecordType::A));
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    // The domain itself exists (names live under it): NOERROR, no data.
    let reply = reply_to(&query(3, "tail.ts.net.", RecordType::A));
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(reply.answers.is_empty());
}

#[test]
fn bare_host_names_and_other_domains_are_forwarded() {
    for name in ["host.", "example.org.", "ts.net.", "nottail.ts.net."] {
        let msg = query(5, name, RecordType::A);
        assert_eq!(decide(&msg, Transport::Udp), Decision::Forward, "{name}");
    }
    // A record outside the MagicDNS domains is still answered (ExtraRecords-like).
    let reply = reply_to(&query(5, "extra.example.com.", RecordType::A));
    assert_eq!(addresses(&reply), [ip("192.0.2.7")]);
    // ...but its parent is not ours.
    let msg = query(5, "example.com.", RecordType::A);
    assert_eq!(decide(&msg, Transport::Udp), Decision::Forward);
}

#[test]
fn reverse_lookups() {
    let reply = reply_to(&query(1, "1.0.64.100.in-addr.arpa.", RecordType::PTR));
    match &reply.answers[..] {
        [r] => match &r.data {
            RData::PTR(p) => assert_eq!(p.0.to_ascii(), "host.tail.ts.net."),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    let v6 = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.e.1.a.c.5.1.1.a.7.d.f.ip6.arpa.";
    let reply = reply_to(&query(1, v6, RecordType::PTR));
    assert_eq!(reply.answers.len(), 1);
    // Unknown tailnet address: NXDOMAIN rather than leaking it upstream.
    let reply = reply_to(&query(1, "9.0.64.100.in-addr.arpa.", RecordType::PTR));
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    let msg = query(1, "8.8.8.8.in-addr.arpa.", RecordType::PTR);
    assert_eq!(decide(&msg, Transport::Udp), Decision::Forward);
}

#[test]
fn non_queries_and_odd_classes() {
    let mut msg = query(2, "host.tail.ts.net.", RecordType::A);
    msg.metadata.op_code = OpCode::Status;
    assert_eq!(reply_to(&msg).metadata.response_code, ResponseCode::NotImp);

    let mut msg = query(2, "host.tail.ts.net.", RecordType::A);
    msg.add_query(Query::query(
        Name::from_ascii("peer.tail.ts.net.").unwrap(),
        RecordType::A,
    ));
    assert_eq!(reply_to(&msg).metadata.response_code, ResponseCode::FormErr);

    let mut q = Query::query(
        Name::from_ascii("host.tail.ts.net.").unwrap(),
        RecordType::A,
    );
    q.set_query_class(DNSClass::CH);
    let mut msg = Message::query();
    msg.add_query(q);
    assert_eq!(reply_to(&msg).metadata.response_code, ResponseCode::Refused);

    let mut reply = query(2, "host.tail.ts.net.", RecordType::A);
    reply.metadata.message_type = hickory_proto::op::MessageType::Response;
    assert_eq!(decide(&reply, Transport::Udp), Decision::Drop);
}

#[test]
fn edns_is_echoed_and_udp_replies_are_truncated() {
    let mut msg = query(4, "host.tail.ts.net.", RecordType::A);
    let mut edns = Edns::new();
    edns.set_max_payload(4096);
    msg.set_edns(edns);
    let reply = reply_to(&msg);
    assert!(reply.edns.is_some());
    assert_eq!(reply.edns.as_ref().unwrap().max_payload(), 1232);

    let many: Vec<IpAddr> = (0..100u8).map(|i| ip(&format!("100.64.1.{i}"))).collect();
    let big = Records::new([("big.tail.ts.net.", many)]);
    let bytes = query(4, "big.tail.ts.net.", RecordType::A)
        .to_vec()
        .unwrap();
    let Decision::Reply(udp) = answer(&bytes, &big, &domains(), Transport::Udp) else {
        panic!("expected reply");
    };
    assert!(udp.len() <= 512, "{}", udp.len());
    let udp = Message::from_vec(&udp).unwrap();
    assert!(udp.metadata.truncation && udp.answers.is_empty());
    let Decision::Reply(tcp) = answer(&bytes, &big, &domains(), Transport::Tcp) else {
        panic!("expected reply");
    };
    let tcp = Message::from_vec(&tcp).unwrap();
    assert!(!tcp.metadata.truncation);
    assert_eq!(tcp.answers.len(), 100);
}

#[test]
fn servfail_keeps_the_id_and_question() {
    let bytes = query(0xbeef, "example.org.", RecordType::A)
        .to_vec()
        .unwrap();
    let reply = Message::from_vec(&servfail(&bytes).unwrap()).unwrap();
    assert_eq!(reply.metadata.id, 0xbeef);
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(reply.queries.len(), 1);
    assert_eq!(servfail(&bytes[..5]), None);
    let reply = Message::from_vec(&servfail(&bytes[..14]).unwrap()).unwrap();
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
}

/// Checks the one property every input must keep: no panic, and any reply is a well-formed
/// response with the query's ID (FORMERR when the query did not parse).
fn check_any(input: &[u8], records: &Records, domains: &Domains) {
    for transport in [Transport::Udp, Transport::Tcp] {
        match answer(input, records, domains, transport) {
            Decision::Reply(bytes) => {
                let reply = Message::from_vec(&bytes).expect("our reply parses");
                assert_eq!(reply.metadata.id.to_be_bytes(), input[..2]);
                assert_eq!(
                    reply.metadata.message_type,
                    hickory_proto::op::MessageType::Response
                );
                if Message::from_vec(input).is_err() {
                    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
                }
            }
            Decision::Drop => {
                assert!(input.len() < 12 || input[2] & 0x80 != 0);
            }
            Decision::Forward => {
                assert!(
                    Message::from_vec(input).is_ok(),
                    "only parsed queries go upstream"
                );
            }
        }
    }
}

#[test]
fn malformed_input_never_panics() {
    let records = records();
    let domains = domains();
    let mut valid = query(0x4242, "host.tail.ts.net.", RecordType::AAAA);
    valid.set_edns(Edns::new());
    let valid = valid.to_vec().unwrap();

    for len in 0..valid.len() {
        let cut = &valid[..len];
        check_any(cut, &records, &domains);
        if len >= 12 {
            // Every truncation past the header is a FORMERR, never a forward.
            let Decision::Reply(bytes) = answer(cut, &records, &domains, Transport::Udp) else {
                panic!("truncation at {len} not answered");
            };
            let reply = Message::from_vec(&bytes).unwrap();
            assert_eq!(
                reply.metadata.response_code,
                ResponseCode::FormErr,
                "len {len}"
            );
        }
    }

    // Deterministic xorshift: bit flips of the valid query and random buffers.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..5_000 {
        let mut flipped = valid.clone();
        let at = (next() as usize) % flipped.len();
        flipped[at] ^= 1 << (next() % 8);
        flipped[2] &= 0x7f;
        check_any(&flipped, &records, &domains);
    }
    for _ in 0..5_000 {
        let len = (next() % 80) as usize;
        let random: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        check_any(&random, &records, &domains);
    }
}
