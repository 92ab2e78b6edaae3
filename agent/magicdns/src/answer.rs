//! The sans-I/O core: decide, for one query, between a local reply and forwarding.

use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use crate::names::key_of;
use crate::records::{Domains, Records};

/// TTL of local answers, in seconds (10 minutes): peers change rarely, and an update is
/// seen by the next query; 600 is what we understand Tailscale's MagicDNS to use.
pub const TTL: u32 = 600;

/// Largest UDP reply we send when the client advertises EDNS (the DNS flag day 2020 value).
const MAX_UDP_PAYLOAD: u16 = 1232;
/// Largest UDP reply without EDNS (RFC 1035).
const CLASSIC_UDP_PAYLOAD: u16 = 512;
const HEADER_LEN: usize = 12;

/// How the query arrived: UDP replies are size-limited (TC set when too big).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Replies larger than the client's UDP size (512, or its EDNS size up to 1232) are
    /// truncated with TC set, so the client retries over TCP.
    Udp,
    /// No size limit below the 64 KiB of a TCP DNS frame.
    Tcp,
}

/// What to do with a query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Send these bytes back to the client.
    Reply(Vec<u8>),
    /// Not ours: send the query, unchanged, to the upstream resolvers.
    Forward,
    /// Send nothing: too short to carry an ID, or a response rather than a query (replying to
    /// those could start a loop).
    Drop,
}

/// Decides what to do with one query.
///
/// Names with records get their A/AAAA (or, for tailnet addresses, PTR) records; names under a
/// MagicDNS domain without records get NXDOMAIN (NOERROR/no data for the domain itself and for
/// ancestors of known names); known names asked for another type get NOERROR with no answer.
/// Everything else is [`Decision::Forward`]. Malformed queries get FORMERR.
pub fn answer(
    query: &[u8],
    records: &Records,
    domains: &Domains,
    transport: Transport,
) -> Decision {
    let Some(header) = query.get(..HEADER_LEN) else {
        return Decision::Drop;
    };
    if header.get(2).is_some_and(|flags| flags & 0x80 != 0) {
        return Decision::Drop;
    }
    let req = match Message::from_vec(query) {
        Ok(req) => req,
        Err(_) => return Decision::Reply(header_only(header, ResponseCode::FormErr)),
    };
    if req.metadata.op_code != OpCode::Query {
        return Decision::Reply(reply(&req, ResponseCode::NotImp, Vec::new(), transport));
    }
    let [question] = req.queries.as_slice() else {
        return Decision::Reply(reply(&req, ResponseCode::FormErr, Vec::new(), transport));
    };
    let name = question.name();
    let qtype = question.query_type();
    let key = key_of(name);
    let local = local_answer(name, key.as_deref(), qtype, records, domains);
    match local {
        None => Decision::Forward,
        Some(_) if question.query_class() != DNSClass::IN => {
            Decision::Reply(reply(&req, ResponseCode::Refused, Vec::new(), transport))
        }
        Some((rcode, answers)) => Decision::Reply(reply(&req, rcode, answers, transport)),
    }
}

/// A SERVFAIL reply to `query` (for when every upstream failed); `None` when the query is too
/// short to carry an ID.
pub fn servfail(query: &[u8]) -> Option<Vec<u8>> {
    let header = query.get(..HEADER_LEN)?;
    Some(match Message::from_vec(query) {
        Ok(req) => reply(&req, ResponseCode::ServFail, Vec::new(), Transport::Tcp),
        Err(_) => header_only(header, ResponseCode::ServFail),
    })
}

/// The local answer for a name, or `None` when the name is not ours.
fn local_answer(
    name: &Name,
    key: Option<&str>,
    qtype: RecordType,
    records: &Records,
    domains: &Domains,
) -> Option<(ResponseCode, Vec<Record>)> {
    if let Some(addrs) = key.and_then(|k| records.addrs_by_key(k)) {
        let answers = addrs
            .iter()
            .filter_map(|&ip| address_record(name, ip, qtype))
            .collect();
        return Some((ResponseCode::NoError, answers));
    }
    if let Some(target) = key.and_then(|k| records.ptr_by_key(k)) {
        let answers = match qtype {
            RecordType::PTR | RecordType::ANY => vec![Record::from_rdata(
                name.clone(),
                TTL,
                RData::PTR(PTR(target.clone())),
            )],
            _ => Vec::new(),
        };
        return Some((ResponseCode::NoError, answers));
    }
    if is_unknown_tailnet_reverse(name) {
        return Some((ResponseCode::NXDomain, Vec::new()));
    }
    if domains.contains(name) {
        let exists = domains.is_apex(name) || key.is_some_and(|k| records.is_interior(k));
        let rcode = if exists {
            ResponseCode::NoError
        } else {
            ResponseCode::NXDomain
        };
        return Some((rcode, Vec::new()));
    }
    None
}

fn address_record(name: &Name, ip: IpAddr, qtype: RecordType) -> Option<Record> {
    let rdata = match (ip, qtype) {
        (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => RData::A(A(v4)),
        (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => RData::AAAA(AAAA(v6)),
        _ => return None,
    };
    Some(Record::from_rdata(name.clone(), TTL, rdata))
}

/// Whether `name` is the reverse name of a single address in the tailnet ranges
/// (100.64.0.0/10, fd7a:115c:a1e0::/48): such queries must not leak upstream.
fn is_unknown_tailnet_reverse(name: &Name) -> bool {
    let Ok(net) = name.parse_arpa_name() else {
        return false;
    };
    match net.addr() {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            net.prefix_len() == 32 && a == 100 && (b & 0xc0) == 64
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            net.prefix_len() == 128 && s[..3] == [0xfd7a, 0x115c, 0xa1e0]
        }
    }
}

fn reply(
    req: &Message,
    rcode: ResponseCode,
    answers: Vec<Record>,
    transport: Transport,
) -> Vec<u8> {
    let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.metadata.checking_disabled = req.metadata.checking_disabled;
    resp.metadata.recursion_available = true;
    resp.metadata.authoritative = rcode != ResponseCode::ServFail;
    resp.metadata.response_code = rcode;
    resp.add_queries(req.queries.iter().cloned());
    resp.add_answers(answers);
    let limit = match &req.edns {
        Some(edns) => edns
            .max_payload()
            .clamp(CLASSIC_UDP_PAYLOAD, MAX_UDP_PAYLOAD),
        None => CLASSIC_UDP_PAYLOAD,
    };
    if req.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(MAX_UDP_PAYLOAD);
        resp.set_edns(edns);
    }
    let fallback = |code| {
        let mut header = [0u8; HEADER_LEN];
        header[..2].copy_from_slice(&req.metadata.id.to_be_bytes());
        header_only(&header, code)
    };
    let Ok(bytes) = resp.to_vec() else {
        return fallback(ResponseCode::ServFail);
    };
    if transport == Transport::Udp && bytes.len() > usize::from(limit) {
        return resp
            .truncate()
            .to_vec()
            .unwrap_or_else(|_| fallback(ResponseCode::ServFail));
    }
    bytes
}

/// A reply with only a header (no question echoed), for queries that do not parse.
fn header_only(query_header: &[u8], rcode: ResponseCode) -> Vec<u8> {
    let mut out = vec![0u8; HEADER_LEN];
    if let (Some(id), Some(flags)) = (query_header.get(..2), query_header.get(2)) {
        out[..2].copy_from_slice(id);
        // QR=1, opcode and RD copied from the query; AA/TC cleared.
        out[2] = 0x80 | (flags & 0x79);
    }
    out[3] = 0x80 | rcode.low();
    out
}
