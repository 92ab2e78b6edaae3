//! The lab: snd -> rtr -> rcv in network namespaces, joined by veth pairs, IPv4 forwarding in
//! rtr, and a UDP sink on rcv. Dropping it deletes the namespaces (their links, nft tables and
//! tc filters go with them), the WireGuard processes and our bpffs pin directory.
//!
//! snd 10.71.1.2 -- 10.71.1.1 rtr 10.71.2.1 -- 10.71.2.2 rcv

use std::net::{Ipv4Addr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use meshgate_netns_lab::{Host, Lab};

use crate::error::Error;
use crate::wireguard::Tunnel;

pub const SND: Ipv4Addr = Ipv4Addr::new(10, 71, 1, 2);
pub const RTR_SND: Ipv4Addr = Ipv4Addr::new(10, 71, 1, 1);
pub const RTR_RCV: Ipv4Addr = Ipv4Addr::new(10, 71, 2, 1);
pub const RCV: Ipv4Addr = Ipv4Addr::new(10, 71, 2, 2);
pub const RCV_NET: &str = "10.71.2.0/24";
pub const SND_NET: &str = "10.71.1.0/24";
/// The measured flow's destination port; the ACL policies allow 5000-5009.
pub const UDP_PORT: u16 = 5000;
/// Outside the allowed range: what every filter must drop.
pub const DENIED_PORT: u16 = 4999;

/// A per-process counter, so two labs of one process never share a pin directory or a
/// WireGuard interface name (the pid separates processes).
pub(crate) fn unique_suffix() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{:x}{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Our pin directory under /sys/fs/bpf, removed on drop (also when unwinding).
#[derive(Debug)]
pub struct PinRoot(pub PathBuf);

impl Drop for PinRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The three namespaces and what the measurements need of them.
#[derive(Debug)]
pub struct Topo {
    /// Dropped first: stops the WireGuard processes while their namespaces still exist.
    pub tunnel: Option<Tunnel>,
    /// Bound on rcv to the test port and never read: arrivals overflow its buffer instead of
    /// drawing ICMP port-unreachables back through the router.
    _sink: UdpSocket,
    pub pins: PinRoot,
    pub snd: Host,
    pub rtr: Host,
    pub rcv: Host,
    /// rtr's veth facing snd: where the filters look at packets coming in.
    pub rtr_in: String,
    /// rcv's veth: where delivered packets are counted.
    pub rcv_if: String,
    /// Dropped last: deletes the namespaces.
    _lab: Lab,
}

impl Topo {
    /// Builds the lab and checks snd reaches rcv through rtr.
    pub fn build() -> Result<Topo, Error> {
        let lab = Lab::new("bench")?;
        let snd = lab.add_host("snd")?;
        let rtr = lab.add_host("rtr")?;
        let rcv = lab.add_host("rcv")?;
        let a = lab.connect_with(&rtr, &snd, &[net(SND_NET)])?;
        let b = lab.connect_with(&rtr, &rcv, &[net(RCV_NET)])?;
        rtr.set_sysctl("net.ipv4.ip_forward", "1")?;
        snd.add_route(net(RCV_NET), RTR_SND.into())?;
        rcv.add_route(net(SND_NET), RTR_RCV.into())?;
        let rtr_in = rtr
            .iface_on(&a)
            .ok_or_else(|| Error::Setup("rtr has no link to snd".into()))?
            .name;
        let rcv_if = rcv
            .iface_on(&b)
            .ok_or_else(|| Error::Setup("rcv has no link to rtr".into()))?
            .name;
        if snd.addr_on(&a) != Some(SND.into()) || rcv.addr_on(&b) != Some(RCV.into()) {
            return Err(Error::Setup(
                "the lab did not give snd and rcv the planned addresses".into(),
            ));
        }
        if !snd.ping(RCV.into(), 3) {
            return Err(Error::Setup("snd cannot ping rcv through rtr".into()));
        }
        let sink = rcv.udp_bind((RCV, UDP_PORT).into())?;
        Ok(Topo {
            tunnel: None,
            _sink: sink,
            pins: PinRoot(PathBuf::from(format!(
                "/sys/fs/bpf/meshgate-bench-{}",
                unique_suffix()
            ))),
            snd,
            rtr,
            rcv,
            rtr_in,
            rcv_if,
            _lab: lab,
        })
    }

    /// Routes snd's traffic for rcv over the plain veth path again.
    pub fn route_plain(&self) -> Result<(), Error> {
        self.snd.add_route(net(RCV_NET), RTR_SND.into())?;
        Ok(())
    }

    /// Received packets on rcv's veth (read in rcv's namespace).
    pub fn rx(&self) -> Result<u64, Error> {
        let iface = &self.rcv_if;
        self.rcv
            .run(|| crate::netdev::read_rx_packets(iface))?
            .map_err(|e| Error::io("reading rcv's counters", e))
    }
}

fn net(s: &str) -> ipnet::IpNet {
    // Constants of this module: a typo fails the first test run, not a user's.
    s.parse()
        .unwrap_or_else(|_| unreachable!("bad constant subnet {s}"))
}
