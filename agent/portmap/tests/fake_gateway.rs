//! Bad replies from a fake gateway on loopback, for the parsing done inside crab_nat (NAT-PMP,
//! PCP) and our checks on what it returns. Each case runs in a lab namespace of its own (only
//! its `lo`), so the fake can own UDP 5351 without meeting anything else. Needs root.
//!
//! Every case first answers the probe correctly (so the mapper does try the protocol), then
//! spoils one thing in the MAP or external-address answer. The mapper must publish nothing and
//! keep running (its `stop` still answers). A well-formed fake proves the harness can succeed.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use meshgate_netns_lab::{Host, Lab};
use meshgate_portmap::{Config, Options, Protocol};

mod common;

use common::{LO, first_mapping};
const EXT: [u8; 4] = [44, 0, 0, 1];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Spoil {
    Nothing,
    PcpNothing,
    PmpMapShort,
    PmpMapWrongOpcode,
    PmpMapResultCode,
    PmpMapZeroPort,
    PmpMapLong,
    PmpExternalZero,
    PmpExternalLoopback,
    PcpWrongNonce,
    PcpZeroAddress,
    PcpOddSize,
    PcpResultCode,
    PcpWrongOpcode,
}

impl Spoil {
    fn pcp(self) -> bool {
        matches!(
            self,
            Spoil::PcpNothing
                | Spoil::PcpWrongNonce
                | Spoil::PcpZeroAddress
                | Spoil::PcpOddSize
                | Spoil::PcpResultCode
                | Spoil::PcpWrongOpcode
        )
    }
}

struct Fake {
    stop: Arc<AtomicBool>,
    maps: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A NAT-PMP + PCP server on 127.0.0.1:5351. With `pcp`, it answers NAT-PMP probes with
/// "unsupported version" so the mapper picks PCP.
fn fake(host: &Host, spoil: Spoil) -> Fake {
    let socket = host.udp_bind(SocketAddr::from((LO, 5351))).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let maps = Arc::new(AtomicUsize::new(0));
    let (stop2, maps2) = (stop.clone(), maps.clone());
    let thread = std::thread::spawn(move || serve(&socket, spoil, &stop2, &maps2));
    Fake {
        stop,
        maps,
        thread: Some(thread),
    }
}

fn serve(socket: &UdpSocket, spoil: Spoil, stop: &AtomicBool, maps: &AtomicUsize) {
    let mut buf = [0u8; 1100];
    let mut external_requests = 0;
    // Bounded: the test stops us within seconds; this caps a runaway at ~5 minutes.
    for _ in 0..6000 {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let req = &buf[..n];
        let epoch = 1000u32.to_be_bytes();
        let reply: Vec<u8> = match (req.first(), req.get(1)) {
            (Some(0), Some(0)) if spoil.pcp() => vec![0, 0x80, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0],
            (Some(0), Some(0)) => {
                external_requests += 1;
                // The probe's request gets a good answer; later ones (crab_nat's) may be spoiled.
                let ip = match spoil {
                    Spoil::PmpExternalZero if external_requests > 1 => [0, 0, 0, 0],
                    Spoil::PmpExternalLoopback if external_requests > 1 => [127, 0, 0, 1],
                    _ => EXT,
                };
                [&[0, 0x80, 0, 0][..], &epoch, &ip].concat()
            }
            (Some(0), Some(1)) if n == 12 => {
                maps.fetch_add(1, Ordering::Relaxed);
                let (internal, lifetime) = (&req[4..6], &req[8..12]);
                let mut r = [
                    &[0, 0x81, 0, 0][..],
                    &epoch,
                    internal,
                    &40001u16.to_be_bytes(),
                    lifetime,
                ]
                .concat();
                match spoil {
                    Spoil::PmpMapShort => r.truncate(15),
                    Spoil::PmpMapWrongOpcode => r[1] = 0x82,
                    Spoil::PmpMapResultCode => r[3] = 4,
                    Spoil::PmpMapZeroPort => r[10..12].copy_from_slice(&[0, 0]),
                    Spoil::PmpMapLong => r.extend_from_slice(&[0; 4]),
                    _ => {}
                }
                r
            }
            (Some(2), Some(0)) if n == 24 && spoil.pcp() => {
                [&[2, 0x80, 0, 0, 0, 0, 0, 0][..], &epoch, &[0; 12]].concat()
            }
            (Some(2), Some(1)) if n == 60 && spoil.pcp() => {
                maps.fetch_add(1, Ordering::Relaxed);
                let mut nonce = req[24..36].to_vec();
                if spoil == Spoil::PcpWrongNonce {
                    nonce[0] ^= 0xff;
                }
                let ip = if spoil == Spoil::PcpZeroAddress {
                    Ipv4Addr::UNSPECIFIED.to_ipv6_mapped()
                } else {
                    Ipv4Addr::from(EXT).to_ipv6_mapped()
                };
                let mut r = [
                    &[2, 0x81, 0, 0][..],
                    &req[4..8],
                    &epoch,
                    &[0; 12],
                    &nonce,
                    &[17, 0, 0, 0],
                    &req[40..42],
                    &40002u16.to_be_bytes(),
                    &ip.octets(),
                ]
                .concat();
                match spoil {
                    Spoil::PcpOddSize => r.truncate(58),
                    Spoil::PcpResultCode => r[3] = 8,
                    Spoil::PcpWrongOpcode => r[1] = 0x82,
                    _ => {}
                }
                r
            }
            _ => continue,
        };
        let _ = socket.send_to(&reply, from);
    }
}

fn options() -> Options {
    Options {
        mapper: Config {
            lease: Duration::from_secs(60),
            probe_cache: Duration::from_secs(600),
            retry_min: Duration::from_millis(300),
            retry_max: Duration::from_millis(600),
        },
        probe_window: Duration::from_millis(100),
        request_timeout: Duration::from_millis(50),
        route_poll: Duration::from_secs(60),
    }
}

/// Runs the mapper against the fake for `watch_for`; returns what it published, if anything,
/// and how many MAP requests the fake saw.
fn run_case(
    host: &Host,
    spoil: Spoil,
    watch_for: Duration,
) -> (Option<meshgate_portmap::Mapping>, usize) {
    let fake = fake(host, spoil);
    let published = first_mapping(host, options(), watch_for);
    (published, fake.maps.load(Ordering::Relaxed))
}

#[test]
fn well_formed_fake_gives_mappings() {
    let lab = Lab::new("fakegood").unwrap();
    let host = lab.add_host("gw").unwrap();
    let (m, maps) = run_case(&host, Spoil::Nothing, Duration::from_secs(5));
    let m = m.expect("no mapping from a well-formed fake");
    assert_eq!(
        (m.protocol, m.external),
        (Protocol::NatPmp, SocketAddr::from((EXT, 40001)))
    );
    assert!(
        maps >= 2,
        "stop must send a delete (lifetime 0), saw {maps} MAP requests"
    );
    let (m, maps) = run_case(&host, Spoil::PcpNothing, Duration::from_secs(5));
    let m = m.expect("no PCP mapping from a well-formed fake");
    assert_eq!(
        (m.protocol, m.external),
        (Protocol::Pcp, SocketAddr::from((EXT, 40002)))
    );
    assert!(
        maps >= 2,
        "stop must send a PCP delete, saw {maps} MAP requests"
    );
}

#[test]
fn spoiled_replies_never_publish() {
    let lab = Lab::new("fakebad").unwrap();
    let host = lab.add_host("gw").unwrap();
    for spoil in [
        Spoil::PmpMapShort,
        Spoil::PmpMapWrongOpcode,
        Spoil::PmpMapResultCode,
        Spoil::PmpMapZeroPort,
        Spoil::PmpExternalZero,
        Spoil::PmpExternalLoopback,
        Spoil::PcpWrongNonce,
        Spoil::PcpZeroAddress,
        Spoil::PcpOddSize,
        Spoil::PcpResultCode,
        Spoil::PcpWrongOpcode,
    ] {
        let (m, maps) = run_case(&host, spoil, Duration::from_millis(1500));
        assert!(maps >= 1, "{spoil:?}: the mapper never asked for a mapping");
        assert_eq!(m, None, "{spoil:?}: published a mapping from a bad reply");
    }
}

/// crab_nat reads a NAT-PMP MAP answer into a 16-byte buffer, so trailing bytes are cut off
/// rather than refused. That is tolerable (the 16 bytes it read are a valid answer), as long as
/// the endpoint is the one the gateway granted.
#[test]
fn oversized_natpmp_answer_is_tolerated_with_the_right_endpoint() {
    let lab = Lab::new("fakelong").unwrap();
    let host = lab.add_host("gw").unwrap();
    let (m, _) = run_case(&host, Spoil::PmpMapLong, Duration::from_secs(5));
    if let Some(m) = m {
        assert_eq!(m.external, SocketAddr::from((EXT, 40001)));
    }
}
