//! The two socket filters: accept only whole UDP datagrams to our port whose payload starts
//! like disco or a STUN message. Everything else (WireGuard's own traffic) is dropped in the
//! kernel, so it never wakes the agent.
//!
//! What each raw socket hands the filter differs:
//! - AF_INET raw sockets see the packet from the IPv4 header on, so the filter reads IHL
//!   (`ldx 4*([0]&0xf)`: IP options are allowed) and rejects fragments (MF or offset set).
//!   Local delivery reassembles before raw sockets run, so in practice fragments arrive whole
//!   with MF=0/offset=0; the check is a guard, not the only defence.
//! - AF_INET6 raw sockets see the packet from the transport header on: the kernel has
//!   already walked the extension headers (hop-by-hop, routing, destination options,
//!   fragment reassembly) before delivering to `IPPROTO_UDP` raw sockets, so offset 0 is the
//!   UDP header whatever extension headers the packet carried.

use socket2::SockFilter;

use crate::Error;
use crate::bpf::{Asm, Size, Target};

/// Disco magic "TS💬", first four bytes.
pub const DISCO_MAGIC_HEAD: u32 = 0x5453_f09f;
/// Disco magic, last two bytes.
pub const DISCO_MAGIC_TAIL: u16 = 0x92ac;
/// The STUN magic cookie (RFC 5389), payload bytes 4..8.
pub const STUN_COOKIE: u32 = 0x2112_a442;

/// Keep the whole packet.
const ACCEPT: u32 = u32::MAX;
/// IPv4 flags/fragment-offset word: MF bit and 13-bit offset.
const IPV4_MF_OR_OFFSET: u32 = 0x3fff;

/// How loads reach the UDP header.
#[derive(Clone, Copy)]
enum Base {
    /// Relative to X (IPv4: X = IP header length).
    Indexed,
    /// Offset 0 is the UDP header (IPv6).
    Absolute,
}

fn load(asm: &mut Asm, base: Base, size: Size, off: u32) {
    match base {
        Base::Indexed => asm.ld_ind(size, off),
        Base::Absolute => asm.ld_abs(size, off),
    }
}

/// The shared tail of both programs: destination port, then payload shape.
fn udp_match(asm: &mut Asm, base: Base, port: u16) {
    let drop = asm.label();
    let disco = asm.label();
    let accept = asm.label();
    load(asm, base, Size::H, 2);
    asm.jeq(u32::from(port), Target::Next, Target::Label(drop));
    // Payload starts 8 bytes after the UDP header; a short payload makes a load fail, which
    // drops the packet.
    load(asm, base, Size::W, 8);
    asm.jeq(DISCO_MAGIC_HEAD, Target::Label(disco), Target::Next);
    load(asm, base, Size::B, 8);
    asm.jset(0xc0, Target::Label(drop), Target::Next);
    load(asm, base, Size::W, 12);
    asm.jeq(STUN_COOKIE, Target::Label(accept), Target::Label(drop));
    asm.bind(disco);
    load(asm, base, Size::H, 12);
    asm.jeq(
        u32::from(DISCO_MAGIC_TAIL),
        Target::Label(accept),
        Target::Label(drop),
    );
    asm.bind(accept);
    asm.ret(ACCEPT);
    asm.bind(drop);
    asm.ret(0);
}

/// The program for the AF_INET raw socket (sees the IPv4 header).
pub fn ipv4_program(port: u16) -> Asm {
    let mut asm = Asm::new();
    let drop = asm.label();
    asm.ld_abs(Size::B, 9);
    asm.jeq(
        u32::from(libc::IPPROTO_UDP as u8),
        Target::Next,
        Target::Label(drop),
    );
    asm.ld_abs(Size::H, 6);
    asm.jset(IPV4_MF_OR_OFFSET, Target::Label(drop), Target::Next);
    asm.ldx_msh(0);
    udp_match(&mut asm, Base::Indexed, port);
    asm.bind(drop);
    asm.ret(0);
    asm
}

/// The program for the AF_INET6 raw socket (sees the UDP header first).
pub fn ipv6_program(port: u16) -> Asm {
    let mut asm = Asm::new();
    udp_match(&mut asm, Base::Absolute, port);
    asm
}

/// Assembled IPv4 filter.
pub fn ipv4_filter(port: u16) -> Result<Vec<SockFilter>, Error> {
    ipv4_program(port).assemble()
}

/// Assembled IPv6 filter.
pub fn ipv6_filter(port: u16) -> Result<Vec<SockFilter>, Error> {
    ipv6_program(port).assemble()
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddrV4};

    use super::*;
    use crate::bpf::interp::run;
    use crate::wire;

    const P: u16 = 41641;
    const DISCO: &[u8] = b"TS\xf0\x9f\x92\xac0123456789abcdef0123456789abcdef0123";
    const STUN: &[u8] = &[
        0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
    ];

    fn v4(port: u16, payload: &[u8]) -> Vec<u8> {
        let src = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 5000);
        let dst = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 2), port);
        wire::build_ipv4_udp(src, dst, payload).unwrap()
    }

    fn with_options(pkt: &[u8], opts: &[u8]) -> Vec<u8> {
        assert_eq!(opts.len() % 4, 0);
        let mut out = pkt[..20].to_vec();
        out.extend_from_slice(opts);
        out.extend_from_slice(&pkt[20..]);
        out[0] = 0x40 | u8::try_from((20 + opts.len()) / 4).unwrap();
        out
    }

    fn udp(port: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = wire::udp_header(5000, port, payload.len())
            .unwrap()
            .to_vec();
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn ipv4_accepts_disco_and_stun_to_our_port() {
        let prog = ipv4_program(P);
        assert_eq!(run(&prog, &v4(P, DISCO)), ACCEPT);
        assert_eq!(run(&prog, &v4(P, STUN)), ACCEPT);
        // STUN success response class bits are fine too.
        let mut resp = STUN.to_vec();
        resp[0] = 0x01;
        assert_eq!(run(&prog, &v4(P, &resp)), ACCEPT);
    }

    #[test]
    fn ipv4_drops_wireguard_other_ports_and_near_misses() {
        let prog = ipv4_program(P);
        let mut wg = vec![0u8; 148];
        wg[0] = 1;
        assert_eq!(run(&prog, &v4(P, &wg)), 0);
        assert_eq!(run(&prog, &v4(P + 1, DISCO)), 0);
        assert_eq!(run(&prog, &v4(P, &DISCO[..5])), 0, "short magic");
        let mut bad = DISCO.to_vec();
        bad[5] ^= 1;
        assert_eq!(run(&prog, &v4(P, &bad)), 0);
        let mut stun_top_bits = STUN.to_vec();
        stun_top_bits[0] = 0x40;
        assert_eq!(run(&prog, &v4(P, &stun_top_bits)), 0);
        assert_eq!(run(&prog, &v4(P, &[])), 0, "empty payload");
    }

    #[test]
    fn ipv4_reads_header_length_from_the_packet() {
        let prog = ipv4_program(P);
        let nops = [1u8, 1, 1, 0];
        assert_eq!(run(&prog, &with_options(&v4(P, DISCO), &nops)), ACCEPT);
        let forty = [1u8; 40];
        assert_eq!(run(&prog, &with_options(&v4(P, STUN), &forty)), ACCEPT);
        // Options that make a WireGuard packet's bytes line up at a fixed offset 22 must not
        // fool it either.
        let mut wg = vec![0u8; 32];
        wg[0] = 1;
        assert_eq!(run(&prog, &with_options(&v4(P, &wg), &nops)), 0);
    }

    #[test]
    fn ipv4_drops_fragments() {
        let prog = ipv4_program(P);
        let mut mf = v4(P, DISCO);
        mf[6] = 0x20;
        assert_eq!(run(&prog, &mf), 0);
        let mut off = v4(P, DISCO);
        off[7] = 0x01;
        assert_eq!(run(&prog, &off), 0);
        let mut df = v4(P, DISCO);
        df[6] = 0x40;
        assert_eq!(run(&prog, &df), ACCEPT, "DF alone is fine");
    }

    #[test]
    fn ipv4_drops_non_udp() {
        let mut pkt = v4(P, DISCO);
        pkt[9] = 6;
        assert_eq!(run(&ipv4_program(P), &pkt), 0);
    }

    #[test]
    fn ipv6_program_matches_from_the_udp_header() {
        let prog = ipv6_program(P);
        assert_eq!(run(&prog, &udp(P, DISCO)), ACCEPT);
        assert_eq!(run(&prog, &udp(P, STUN)), ACCEPT);
        assert_eq!(run(&prog, &udp(P + 1, STUN)), 0);
        let mut wg = vec![0u8; 92];
        wg[0] = 4;
        assert_eq!(run(&prog, &udp(P, &wg)), 0);
        assert_eq!(run(&prog, &udp(P, &STUN[..7])), 0);
    }

    #[test]
    fn both_assemble() {
        assert!(ipv4_filter(P).unwrap().len() > 10);
        assert!(ipv6_filter(0).unwrap().len() > 5);
    }
}
