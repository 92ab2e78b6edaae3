//! The lab: owner of every namespace it made, and the place hosts, segments and routers come
//! from. Dropping it tears everything down.

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard, Once};

use ipnet::IpNet;

use crate::cleanup;
use crate::error::{Error, Result};
use crate::host::Host;
use crate::link;
use crate::names;
use crate::nat::Nat;
use crate::netns;
use crate::plan::AddressPlan;
use crate::router::Router;
use crate::segment::{Iface, Kind, Segment};

/// A throw-away network of namespaces on the host kernel. Needs root.
///
/// On drop (also while unwinding from a panic) every process inside its namespaces is killed
/// and the namespaces are deleted, which deletes their interfaces and nftables tables too.
#[derive(Debug)]
pub struct Lab {
    name: String,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    namespaces: Vec<String>,
    plan: AddressPlan,
}

impl Lab {
    /// An empty lab. The first lab of a process also deletes what crashed runs left behind
    /// (see [`sweep_leftovers`](crate::sweep_leftovers)).
    pub fn new(name: &str) -> Result<Self> {
        static SWEEP: Once = Once::new();
        SWEEP.call_once(|| {
            if let Err(e) = cleanup::sweep_leftovers() {
                eprintln!("netns-lab: cleaning up earlier runs failed: {e}");
            }
        });
        Ok(Lab {
            name: name.to_owned(),
            state: Mutex::default(),
        })
    }

    /// The name given at creation.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The names of every namespace the lab made so far (hosts and switches).
    pub fn namespaces(&self) -> Vec<String> {
        self.state().namespaces.clone()
    }

    /// A new host with only a loopback interface.
    pub fn add_host(&self, name: &str) -> Result<Host> {
        Ok(Host::new(name, self.new_netns(name)?))
    }

    /// A new switch (a bridge in a namespace of its own) on the next default public subnet
    /// (203.0.113.0/24, then 198.51.100.0/24).
    pub fn add_switch(&self, name: &str) -> Result<Segment> {
        let subnet = self.state().plan.next_switch()?;
        self.add_switch_with(name, &[subnet])
    }

    /// A new switch on the given subnets (IPv4 and/or IPv6; hosts get the same host number in
    /// each). Any subnet is allowed: the lab has no route out, so nothing real is shadowed.
    pub fn add_switch_with(&self, name: &str, subnets: &[IpNet]) -> Result<Segment> {
        let netns = self.new_netns(name)?;
        let bridge = "br0";
        link::create_bridge(&netns, bridge, &[])?;
        let kind = Kind::Switch {
            netns,
            bridge: bridge.to_owned(),
        };
        Ok(Segment::new(name, trunc(subnets), kind, 1, Vec::new()))
    }

    /// Connects two hosts by a point-to-point veth pair on the next /30 of 192.0.2.0/24.
    pub fn connect(&self, a: &Host, b: &Host) -> Result<Segment> {
        let subnet = self.state().plan.next_link()?;
        self.connect_with(a, b, &[subnet])
    }

    /// Connects two hosts by a point-to-point veth pair on the given subnets (`a` gets host
    /// number 1, `b` number 2).
    pub fn connect_with(&self, a: &Host, b: &Host, subnets: &[IpNet]) -> Result<Segment> {
        let name = format!("{}-{}", a.name(), b.name());
        let segment = Segment::new(&name, trunc(subnets), Kind::Link, 3, Vec::new());
        let end = |host: &Host, member| -> Result<Iface> {
            Ok(Iface {
                name: host.next_iface_name(),
                addrs: segment.addresses_for(member)?,
                segment: segment.id(),
            })
        };
        let (a_end, b_end) = (end(a, 1)?, end(b, 2)?);
        link::connect(a.netns(), &a_end, b.netns(), &b_end)?;
        a.record_iface(a_end);
        b.record_iface(b_end);
        Ok(segment)
    }

    /// A new router attached to `wan`, forwarding, with `nat` between its LANs and `wan`.
    pub fn add_router(&self, name: &str, wan: &Segment, nat: impl Into<Nat>) -> Result<Router> {
        Router::setup(self.add_host(name)?, wan, nat.into())
    }

    /// A LAN behind `router` on the next default subnet (10.1.0.0/24, 10.2.0.0/24, ...); the
    /// router is host number 1 on it.
    pub fn add_lan(&self, router: &Router) -> Result<Segment> {
        let subnet = self.state().plan.next_lan()?;
        router.add_lan(vec![subnet])
    }

    /// A LAN behind `router` on the given subnets (IPv4 and/or IPv6). The NAT translates IPv4
    /// only; IPv6 is routed.
    pub fn add_lan_with(&self, router: &Router, subnets: &[IpNet]) -> Result<Segment> {
        router.add_lan(trunc(subnets))
    }

    /// A new host on `lan` (from [`Lab::add_lan`]) whose default routes point at the router.
    pub fn add_lan_host(&self, lan: &Segment, name: &str) -> Result<Host> {
        if lan.gateways().is_empty() {
            return Err(Error::NoGateway {
                segment: lan.name().to_owned(),
            });
        }
        let host = self.add_host(name)?;
        lan.attach(&host)?;
        for gateway in lan.gateways() {
            host.set_default_route(*gateway)?;
        }
        Ok(host)
    }

    /// Checks that nothing in the lab leads out of it: every interface whose other end lives
    /// in another namespace (a veth) must end in one of this lab's namespaces. Interfaces are
    /// the only way out of a namespace, so with this and lab-only gateways (which
    /// [`Host::add_route`] enforces) no packet can leave.
    pub fn check_isolation(&self) -> Result<()> {
        let namespaces = self.namespaces();
        let ours: HashSet<&str> = namespaces.iter().map(String::as_str).collect();
        for netns in &namespaces {
            let links = crate::cmd::ip(["-n", netns, "-o", "-d", "link", "show"])?;
            for line in links.lines() {
                let words: Vec<&str> = line.split_whitespace().collect();
                let peer_outside = words.windows(2).any(|w| match w[0] {
                    // `ip` prints a name for the peer namespace when it has one in /run/netns...
                    "link-netns" => !ours.contains(w[1]),
                    // ...and only a number for an unnamed one, e.g. the machine's own.
                    "link-netnsid" => true,
                    _ => false,
                });
                if peer_outside {
                    return Err(Error::NotIsolated {
                        netns: netns.clone(),
                        line: line.to_owned(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Tears the lab down now and reports the first failure (dropping does the same silently).
    pub fn close(self) -> Result<()> {
        let namespaces = std::mem::take(&mut self.state().namespaces);
        cleanup::teardown(&namespaces)
    }

    fn new_netns(&self, label: &str) -> Result<String> {
        let name = names::netns_name(label);
        // Registered before it exists, so a failure half-way through creation is cleaned up.
        self.state().namespaces.push(name.clone());
        netns::create(&name)?;
        Ok(name)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every update is a single push or counter step: nothing is half-done after a panic.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let namespaces = std::mem::take(&mut self.state().namespaces);
        if let Err(e) = cleanup::teardown(&namespaces) {
            eprintln!("netns-lab {}: teardown: {e}", self.name);
        }
    }
}

/// Subnets as networks (10.1.0.7/24 -> 10.1.0.0/24), so host numbers count from the start.
fn trunc(subnets: &[IpNet]) -> Vec<IpNet> {
    subnets.iter().map(IpNet::trunc).collect()
}
