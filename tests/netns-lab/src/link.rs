//! Veth pairs and bridges: the wires and switches of a lab.
//!
//! Every veth pair is created directly inside the namespaces of its two ends (`ip -n A link add
//! ... peer ... netns B`), never in the machine's own namespace: no interface of a lab ever
//! appears there, not even for a moment, so interface names only need to be unique per
//! namespace and a crash can leave nothing behind in the host's network.

use std::sync::Mutex;

use ipnet::IpNet;

use crate::error::{Error, Result};
use crate::segment::Iface;
use crate::{cmd, netns, ready};

/// Held while choosing interface indexes and creating a veth pair, so that two threads cannot
/// pick the same free index in one namespace.
static CREATING: Mutex<()> = Mutex::new(());

/// Creates bridge `bridge` in namespace `netns`, with `addrs` on it (a router's LAN side) or
/// none (a plain switch).
pub(crate) fn create_bridge(netns: &str, bridge: &str, addrs: &[IpNet]) -> Result<()> {
    let mut lines = vec![format!("link add {bridge} type bridge")];
    lines.extend(addrs.iter().map(|a| addr_line(bridge, a)));
    lines.push(format!("link set {bridge} up"));
    cmd::ip_batch(netns, &lines)
}

/// Connects `iface` of the host in `host_ns` to `bridge` in `switch_ns` through port `port`,
/// and returns once traffic flows. `bridge_sends` says that the bridge itself carries
/// addresses (a router's LAN side), so its own carrier matters too; a plain switch only
/// forwards between its ports.
pub(crate) fn attach_to_bridge(
    host_ns: &str,
    iface: &Iface,
    switch_ns: &str,
    bridge: &str,
    port: &str,
    bridge_sends: bool,
) -> Result<()> {
    let _creating = CREATING.lock().unwrap_or_else(|p| p.into_inner());
    let (index, peer_index) = distinct_indexes(host_ns, switch_ns)?;
    let mut lines = vec![format!(
        "link add {} index {index} type veth peer name {port} index {peer_index} netns {switch_ns}",
        iface.name
    )];
    lines.extend(configure(iface));
    cmd::ip_batch(host_ns, &lines)?;
    cmd::ip_batch(
        switch_ns,
        &[
            format!("link set {port} master {bridge}"),
            format!("link set {port} up"),
        ],
    )?;
    ready::wait_running(host_ns, &[&iface.name])?;
    if bridge_sends {
        ready::wait_running(switch_ns, &[port, bridge])
    } else {
        ready::wait_running(switch_ns, &[port])
    }
}

/// Connects `a` in `a_ns` and `b` in `b_ns` by one veth pair, configures both ends, and
/// returns once traffic flows.
pub(crate) fn connect(a_ns: &str, a: &Iface, b_ns: &str, b: &Iface) -> Result<()> {
    let _creating = CREATING.lock().unwrap_or_else(|p| p.into_inner());
    let (a_index, b_index) = distinct_indexes(a_ns, b_ns)?;
    let mut lines = vec![format!(
        "link add {} index {a_index} type veth peer name {} index {b_index} netns {b_ns}",
        a.name, b.name
    )];
    lines.extend(configure(a));
    cmd::ip_batch(a_ns, &lines)?;
    cmd::ip_batch(b_ns, &configure(b))?;
    ready::wait_running(a_ns, &[&a.name])?;
    ready::wait_running(b_ns, &[&b.name])
}

/// Free interface indexes for the two ends of a new veth pair, one in each namespace, that
/// differ from each other.
///
/// Left to itself the kernel numbers both ends 2 in two fresh namespaces, and the kernel's
/// link watcher treats a carrier change on a device whose index equals its peer's index as
/// non-urgent: it runs up to a second later, and until then IPv6 on the link does not work
/// (a first ping over a new link was lost every time). Distinct indexes make it immediate.
fn distinct_indexes(a_ns: &str, b_ns: &str) -> Result<(u32, u32)> {
    let a = netns::run_in(a_ns, highest_ifindex)?? + 1;
    let mut b = netns::run_in(b_ns, highest_ifindex)?? + 1;
    if b == a {
        b += 1;
    }
    Ok((a, b))
}

/// The highest interface index in the calling thread's namespace.
fn highest_ifindex() -> Result<u32> {
    // SAFETY: if_nameindex returns null or an array ended by an entry with index 0, which is
    // only read up to that end and then given back to if_freenameindex.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return Err(Error::io(
                "listing interfaces",
                std::io::Error::last_os_error(),
            ));
        }
        let mut highest = 0;
        let mut entry = list;
        while (*entry).if_index != 0 {
            highest = highest.max((*entry).if_index);
            entry = entry.add(1);
        }
        libc::if_freenameindex(list);
        Ok(highest)
    }
}

/// Addresses and "up" for an interface that exists already.
fn configure(iface: &Iface) -> Vec<String> {
    let mut lines: Vec<String> = iface
        .addrs
        .iter()
        .map(|a| addr_line(&iface.name, a))
        .collect();
    lines.push(format!("link set {} up", iface.name));
    lines
}

fn addr_line(dev: &str, addr: &IpNet) -> String {
    match addr {
        IpNet::V4(_) => format!("addr add {addr} dev {dev}"),
        // Duplicate address detection would keep the address unusable ("tentative") for a
        // second or two; lab addresses are unique by construction.
        IpNet::V6(_) => format!("addr add {addr} dev {dev} nodad"),
    }
}
