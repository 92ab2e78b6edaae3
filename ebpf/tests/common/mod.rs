//! Shared by the root tests: policies from FilterRules, synthetic frames, a pin directory that
//! cleans itself up, and one program run.
#![allow(dead_code)]

use std::net::IpAddr;
use std::path::PathBuf;

use aya::{TestRun, TestRunOptions};
use meshgate_acl::Policy;
use meshgate_ebpf::Loaded;
use meshgate_tailcfg::filter::{FilterRule, NetPortRange, PortRange};

pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_SHOT: u32 = 2;
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;
pub const ICMPV6: u8 = 58;

pub fn rule(srcs: &[&str], dsts: &[(&str, u16, u16)], protos: &[i32]) -> FilterRule {
    FilterRule {
        src_ips: srcs.iter().map(|s| s.to_string()).collect(),
        dst_ports: dsts
            .iter()
            .map(|(ip, first, last)| NetPortRange {
                ip: ip.to_string(),
                ports: PortRange {
                    first: *first,
                    last: *last,
                },
            })
            .collect(),
        ip_proto: protos.to_vec(),
        ..Default::default()
    }
}

pub fn policy(rules: &[FilterRule]) -> Policy {
    Policy::from_filter_rules(rules).expect("test policy is valid")
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

/// A pin directory under /sys/fs/bpf removed (with its maps) when dropped.
pub struct PinDir(pub PathBuf);

impl PinDir {
    pub fn new(name: &str) -> PinDir {
        meshgate_ebpf::ensure_bpffs(std::path::Path::new("/sys/fs/bpf"))
            .unwrap_or_else(|e| panic!("bpffs (needs root): {e}"));
        PinDir(PathBuf::from(format!(
            "/sys/fs/bpf/meshgate-test-{}-{name}",
            std::process::id()
        )))
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs one program on one frame; returns the tc verdict.
pub fn run(loaded: &mut Loaded, prog: &'static str, frame: &[u8]) -> u32 {
    try_run(loaded, prog, frame)
        .unwrap_or_else(|e| panic!("test run of {prog} on {} bytes: {e}", frame.len()))
}

/// As [`run`], but the kernel's refusal is returned: BPF_PROG_TEST_RUN itself rejects frames
/// of 14 bytes or less, and (on recent kernels) IP ethertypes with a truncated IP header.
pub fn try_run(loaded: &mut Loaded, prog: &'static str, frame: &[u8]) -> Result<u32, String> {
    let p = loaded.program(prog).expect("program present");
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    p.test_run(opts)
        .map(|r| r.return_value)
        .map_err(|e| format!("{e:?}"))
}

/// Transport header bytes: TCP (20 bytes), UDP (8), ICMP/ICMPv6 (8), else 8 zero bytes.
pub fn l4(proto: u8, sport: u16, dport: u16) -> Vec<u8> {
    match proto {
        TCP => {
            let mut h = vec![0u8; 20];
            h[..2].copy_from_slice(&sport.to_be_bytes());
            h[2..4].copy_from_slice(&dport.to_be_bytes());
            h[12] = 5 << 4;
            h[13] = 0x02; // SYN
            h
        }
        ICMP | ICMPV6 => {
            // `dport` carries the type.
            let mut h = vec![0u8; 8];
            h[0] = dport as u8;
            h
        }
        _ => {
            let mut h = vec![0u8; 8];
            h[..2].copy_from_slice(&sport.to_be_bytes());
            h[2..4].copy_from_slice(&dport.to_be_bytes());
            h
        }
    }
}

fn eth(ethertype: u16) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// An IPv4 header (no options) with the given fragment field (flags + offset).
pub fn ipv4_header(src: IpAddr, dst: IpAddr, proto: u8, frag: u16, payload_len: usize) -> Vec<u8> {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (src, dst) else {
        panic!("ipv4_header needs IPv4 addresses");
    };
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&((20 + payload_len) as u16).to_be_bytes());
    h.extend_from_slice(&[0, 1]);
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0]);
    h.extend_from_slice(&s.octets());
    h.extend_from_slice(&d.octets());
    h
}

/// An IPv6 header whose next header is `next`.
pub fn ipv6_header(src: IpAddr, dst: IpAddr, next: u8, payload_len: usize) -> Vec<u8> {
    let (IpAddr::V6(s), IpAddr::V6(d)) = (src, dst) else {
        panic!("ipv6_header needs IPv6 addresses");
    };
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(payload_len as u16).to_be_bytes());
    h.extend_from_slice(&[next, 64]);
    h.extend_from_slice(&s.octets());
    h.extend_from_slice(&d.octets());
    h
}

/// A whole IP packet (no link header): IPv4 or IPv6 by the address family.
pub fn ip_packet(src: IpAddr, dst: IpAddr, proto: u8, sport: u16, dport: u16) -> Vec<u8> {
    let payload = l4(proto, sport, dport);
    let mut p = if src.is_ipv4() {
        ipv4_header(src, dst, proto, 0, payload.len())
    } else {
        ipv6_header(src, dst, proto, payload.len())
    };
    p.extend_from_slice(&payload);
    p
}

/// An Ethernet frame around an IP packet, the ethertype from its version nibble.
pub fn frame_of(packet: &[u8]) -> Vec<u8> {
    let v6 = packet.first().is_some_and(|b| b >> 4 == 6);
    let mut f = eth(if v6 { 0x86dd } else { 0x0800 });
    f.extend_from_slice(packet);
    f
}

pub fn frame(src: IpAddr, dst: IpAddr, proto: u8, sport: u16, dport: u16) -> Vec<u8> {
    frame_of(&ip_packet(src, dst, proto, sport, dport))
}

pub fn non_ip_frame() -> Vec<u8> {
    let mut f = eth(0x0806);
    f.extend_from_slice(&[0u8; 28]);
    f
}
