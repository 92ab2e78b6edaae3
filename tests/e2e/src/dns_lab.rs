//! MagicDNS end to end: two agents; n1 asks 100.100.100.100 for n0's name (A and AAAA, from
//! the netmap), for a name under the tailnet domain that does not exist (NXDOMAIN), and for an
//! outside name, which goes to the upstream the coordinator names (`--dns-resolver`): a small
//! fake resolver on the coordinator's host.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use meshgate_netns_lab::Host;
use meshgate_wg::BackendChoice;

use crate::tailnet_lab::TailnetLab;

const UPSTREAM_PORT: u16 = 5353;
/// What the fake upstream answers for every A question.
const UPSTREAM_ANSWER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const A: u16 = 1;
const AAAA: u16 = 28;

fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}

/// Skips a (possibly compressed) name at `at`; the offset after it.
fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *msg.get(at)?;
        if len & 0xc0 == 0xc0 {
            return Some(at + 2);
        }
        if len == 0 {
            return Some(at + 1);
        }
        at += 1 + usize::from(len);
    }
}

/// The reply's rcode and the addresses of its A/AAAA answers.
fn parse_reply(msg: &[u8], id: u16) -> Option<(u8, Vec<IpAddr>)> {
    if msg.len() < 12 || u16::from_be_bytes([msg[0], msg[1]]) != id {
        return None;
    }
    let rcode = msg[3] & 0x0f;
    let answers = u16::from_be_bytes([msg[6], msg[7]]);
    let mut at = skip_name(msg, 12)? + 4;
    let mut addrs = Vec::new();
    for _ in 0..answers {
        at = skip_name(msg, at)?;
        let rtype = u16::from_be_bytes([*msg.get(at)?, *msg.get(at + 1)?]);
        let len = usize::from(u16::from_be_bytes([*msg.get(at + 8)?, *msg.get(at + 9)?]));
        let data = msg.get(at + 10..at + 10 + len)?;
        match (rtype, len) {
            (A, 4) => addrs.push(IpAddr::from(<[u8; 4]>::try_from(data).ok()?)),
            (AAAA, 16) => addrs.push(IpAddr::from(<[u8; 16]>::try_from(data).ok()?)),
            _ => {}
        }
        at += 10 + len;
    }
    Some((rcode, addrs))
}

/// Asks `server` from inside `host`; the reply's rcode and addresses.
fn ask(host: &Host, server: SocketAddr, name: &str, qtype: u16) -> Option<(u8, Vec<IpAddr>)> {
    let name = name.to_owned();
    host.run(move || {
        let socket = UdpSocket::bind("0.0.0.0:0").ok()?;
        socket
            .set_read_timeout(Some(Duration::from_millis(800)))
            .ok()?;
        let id = 0x4d47;
        socket.send_to(&query(id, &name, qtype), server).ok()?;
        let mut buf = [0u8; 1500];
        let (n, _) = socket.recv_from(&mut buf).ok()?;
        parse_reply(&buf[..n], id)
    })
    .ok()
    .flatten()
}

/// Answers every question with one A record of [`UPSTREAM_ANSWER`].
fn fake_upstream(host: &Host, addr: SocketAddr, stop: Arc<AtomicBool>) {
    let socket = host.run(move || UdpSocket::bind(addr)).unwrap().unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while !stop.load(Ordering::Relaxed) {
            let Ok((n, from)) = socket.recv_from(&mut buf) else {
                continue;
            };
            let Some(end) = skip_name(&buf[..n], 12).map(|e| e + 4).filter(|e| *e <= n) else {
                continue;
            };
            let mut reply = buf[..end].to_vec();
            reply[2] = 0x81;
            reply[3] = 0x80;
            reply[6..12].copy_from_slice(&[0, 1, 0, 0, 0, 0]);
            reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
            reply.extend_from_slice(&UPSTREAM_ANSWER.octets());
            let _ = socket.send_to(&reply, from);
        }
    });
}

pub fn magic_dns(backend: BackendChoice) {
    let mut net = TailnetLab::new("dns", backend, 2);
    let upstream = SocketAddr::new(net.coordinator.addr_on(&net.switch).unwrap(), UPSTREAM_PORT);
    let stop = Arc::new(AtomicBool::new(false));
    fake_upstream(&net.coordinator, upstream, stop.clone());
    net.serve(&["--dns-resolver", &upstream.to_string()]);
    // n1 points its "host" resolver at MagicDNS (a resolv.conf of the lab's, not the host's).
    let resolv_conf = net.state_dir(1).join("resolv.conf");
    let host_resolv = "nameserver 192.0.2.53\nsearch office.example\n";
    std::fs::create_dir_all(net.state_dir(1)).unwrap();
    std::fs::write(&resolv_conf, host_resolv).unwrap();
    let resolv_flag = resolv_conf.to_str().unwrap().to_owned();
    let _daemons: Vec<_> = (0..2)
        .map(|i| {
            let extra: &[&str] = if i == 1 {
                &["--accept-dns", "--resolv-conf", &resolv_flag]
            } else {
                &[]
            };
            net.start_daemon(i, 1, true, extra)
        })
        .collect();
    net.wait_joined();
    let n0 = net.status(0).unwrap();
    let n0_addrs: Vec<IpAddr> = n0["self"]["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str()?.parse().ok())
        .collect();
    let n0_v4 = n0_addrs.iter().copied().find(IpAddr::is_ipv4).unwrap();
    let n0_v6 = n0_addrs.iter().copied().find(IpAddr::is_ipv6).unwrap();
    let quad100 = SocketAddr::from(([100, 100, 100, 100], 53));

    let deadline = Instant::now() + Duration::from_secs(20);
    let name = "n0.tailnet.meshgate";
    loop {
        if ask(&net.agents[1], quad100, name, A) == Some((0, vec![n0_v4])) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "n1's MagicDNS never answered {name}: {:?}\n{:#?}\n{}",
            ask(&net.agents[1], quad100, name, A),
            net.status(1),
            net.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        ask(&net.agents[1], quad100, "N0.Tailnet.Meshgate.", AAAA),
        Some((0, vec![n0_v6]))
    );
    assert_eq!(
        ask(&net.agents[1], quad100, "nobody.tailnet.meshgate", A),
        Some((3, vec![])),
        "an unknown tailnet name is NXDOMAIN"
    );
    assert_eq!(
        ask(&net.agents[1], quad100, "www.example.org", A),
        Some((0, vec![IpAddr::V4(UPSTREAM_ANSWER)])),
        "an outside name goes to the coordinator's --dns-resolver"
    );
    let status = net.status(1).unwrap();
    assert!(status["magic_dns"].is_string(), "{status:#}");
    assert_eq!(
        status["peers"][0]["name"], "n0.tailnet.meshgate",
        "{status:#}"
    );

    // --accept-dns: n1's resolv.conf names Quad100, the tailnet searched first; n0's was not
    // given the flag. `down` puts the host's file back.
    let deadline = Instant::now() + Duration::from_secs(10);
    let pointed = loop {
        let text = std::fs::read_to_string(&resolv_conf).unwrap_or_default();
        if text.contains("nameserver 100.100.100.100") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        pointed.contains("nameserver 100.100.100.100\n")
            && pointed.contains("search tailnet.meshgate office.example\n")
            && !pointed.contains("192.0.2.53"),
        "{pointed}\n{}",
        net.logs()
    );
    let (ok, out) = net.meshgate(1, &["down"]);
    assert!(ok, "{out}");
    assert_eq!(
        std::fs::read_to_string(&resolv_conf).unwrap(),
        host_resolv,
        "down put the host's resolv.conf back"
    );
    stop.store(true, Ordering::Relaxed);
}
