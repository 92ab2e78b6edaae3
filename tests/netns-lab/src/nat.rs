//! NAT behaviours of a lab router, as nftables rulesets in the router's namespace.
//!
//! Linux's own masquerade keeps a flow's source port when that port is free towards the flow's
//! destination, so the mapping of two LAN hosts using the same port ends up depending on the
//! destination: neither cleanly endpoint-independent nor cleanly endpoint-dependent. The rules
//! here therefore pick UDP ports themselves:
//!
//! - every new UDP mapping takes the next port of a pool (`numgen inc` indexes the `ports` map,
//!   since a raw numgen value would reach the NAT in host byte order);
//! - endpoint-independent: a `eim` map remembers LAN address.port -> external port, written
//!   from the packet path right after the NAT, and later flows of the same socket reuse it,
//!   whatever their destination;
//! - endpoint-dependent: every new flow takes a fresh port, so two destinations never see the
//!   same one;
//! - every mapping is also written to `mappings` (external port -> LAN address.port), which is
//!   what hairpinning DNATs by when a LAN host sends to the router's external address.
//!
//! Filtering stays Linux's: an outside host reaches a mapping only through a conntrack entry,
//! i.e. after the LAN host sent to it (address- and port-dependent filtering). TCP and ICMP are
//! plain source NAT. IPv6 is routed, never translated.

use std::net::Ipv4Addr;

/// The nftables table every lab router's rules live in.
pub const TABLE: &str = "meshgate_lab";
/// First external UDP port handed out by a NAT.
pub const PORT_BASE: u16 = 40000;
/// Number of external UDP ports a NAT hands out before it starts over. Starting over only
/// clashes with a flow that still has the same port and the same remote endpoint.
pub const PORT_POOL: u16 = 8192;

/// How a router treats traffic from its LAN side to its WAN side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum NatKind {
    /// Plain routing: LAN addresses are seen outside (outside hosts need a route back).
    #[default]
    None,
    /// One external port per LAN socket, whatever the destination, open to any outside sender
    /// once mapped ("full cone": endpoint-independent mapping and filtering).
    EndpointIndependent,
    /// A new external port for each destination ("symmetric" NAT).
    EndpointDependent,
    /// Source NAT for TCP and ICMP; every UDP packet forwarded through the router is dropped.
    UdpBlocked,
}

/// A router's NAT: its kind and whether it hairpins.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Nat {
    /// The mapping behaviour.
    pub kind: NatKind,
    /// Whether a LAN host sending UDP to the router's external address and a mapped port
    /// reaches the LAN host owning that mapping (if false, such packets are dropped). Only
    /// meaningful for the two translating kinds.
    pub hairpin: bool,
}

impl NatKind {
    /// This kind, with hairpinning.
    pub fn with_hairpin(self) -> Nat {
        Nat {
            kind: self,
            hairpin: true,
        }
    }
}

impl From<NatKind> for Nat {
    fn from(kind: NatKind) -> Self {
        Nat {
            kind,
            hairpin: false,
        }
    }
}

/// The nft script that sets up `nat` on a router whose WAN interface is `wan_if` with external
/// address `wan_addr`, or `None` when the router only routes.
pub(crate) fn ruleset(nat: Nat, wan_if: &str, wan_addr: Ipv4Addr) -> Option<String> {
    let translating = match nat.kind {
        NatKind::None => return None,
        NatKind::UdpBlocked => false,
        NatKind::EndpointIndependent | NatKind::EndpointDependent => true,
    };
    let eim = nat.kind == NatKind::EndpointIndependent;
    let hairpin = translating && nat.hairpin;
    let wan = format!("\"{wan_if}\"");
    let mut body = Vec::new();

    if translating {
        body.push(format!("  map ports {{ {} }}", port_pool()));
        body.push("  map mappings { type inet_service : ipv4_addr . inet_service; }".to_owned());
    }
    if eim {
        body.push("  map eim { type ipv4_addr . inet_service : inet_service; }".to_owned());
    }

    let mut forward = Vec::new();
    if nat.kind == NatKind::UdpBlocked {
        forward.push("meta l4proto udp drop".to_owned());
    }
    body.push(chain(
        "forward",
        Some("filter hook forward priority filter"),
        forward,
    ));

    if translating {
        // Without hairpinning, LAN packets to the external address would reach the router's
        // own stack; with it, those for unmapped ports would. A NAT box drops both.
        let drop = format!("iifname != {wan} ip daddr {wan_addr} meta l4proto udp drop");
        // Unsolicited UDP from outside to a port with no mapping yet: dropped, as a home
        // router's firewall does. Delivered to the router's own stack instead, it would leave
        // a conntrack entry that makes the mapping created a moment later pick another port,
        // which no hole punching survives.
        let unsolicited =
            format!("iifname {wan} ip daddr {wan_addr} meta l4proto udp ct state new drop");
        body.push(chain(
            "input",
            Some("filter hook input priority filter"),
            vec![drop, unsolicited],
        ));
    }

    let mut prerouting = Vec::new();
    if eim {
        // Endpoint-independent filtering too ("full cone"): once a LAN socket has a mapping,
        // anyone outside may send to it. This is what lets a peer behind an
        // endpoint-dependent NAT reach it from a port it has never seen.
        prerouting.push(format!(
            "iifname {wan} ip daddr {wan_addr} udp dport @mappings \
             dnat ip to udp dport map @mappings"
        ));
    }
    if hairpin {
        prerouting.push(format!(
            "iifname != {wan} ip daddr {wan_addr} udp dport @mappings \
             dnat ip to udp dport map @mappings"
        ));
    }
    body.push(chain(
        "prerouting",
        Some("nat hook prerouting priority dstnat"),
        prerouting,
    ));

    let mut postrouting = vec![format!("oifname {wan} goto translate")];
    if hairpin {
        // Hairpinned packets leave towards the LAN; translating their source too makes the
        // receiver see (and answer) the sender's external mapping, as on a real NAT box.
        postrouting.push(format!("iifname != {wan} ct status dnat goto translate"));
    }
    body.push(chain(
        "postrouting",
        Some("nat hook postrouting priority srcnat"),
        postrouting,
    ));

    let mut translate = Vec::new();
    if eim {
        translate.push(format!(
            "ip saddr . udp sport @eim snat ip to {wan_addr} : ip saddr . udp sport map @eim"
        ));
    }
    if translating {
        translate.push(format!(
            "meta l4proto udp snat ip to {wan_addr} : numgen inc mod {PORT_POOL} map @ports"
        ));
    }
    translate.push(format!("snat ip to {wan_addr}"));
    body.push(chain("translate", None, translate));

    if translating {
        // Runs after the NAT hook (srcnat + 1), so `udp sport` is the external port already.
        let mut record = format!(
            "ct state new ct status snat ip saddr {wan_addr} \
             update @mappings {{ udp sport : ct original ip saddr . ct original proto-src }}"
        );
        if eim {
            record.push_str(
                " update @eim { ct original ip saddr . ct original proto-src : udp sport }",
            );
        }
        body.push(chain(
            "record",
            Some("filter hook postrouting priority srcnat + 1"),
            vec![record],
        ));
    }

    // Declaring, deleting and declaring again makes the script replace any earlier version in
    // one atomic transaction.
    Some(format!(
        "table inet {TABLE} {{}}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n{}\n}}\n",
        body.join("\n")
    ))
}

/// One chain; `hook` makes it a base chain (with policy accept, so it only does what its rules
/// say), `None` a regular chain reached by `goto`.
fn chain(name: &str, hook: Option<&str>, rules: Vec<String>) -> String {
    let mut s = format!("  chain {name} {{\n");
    if let Some(hook) = hook {
        s += &format!("    type {hook}; policy accept;\n");
    }
    for rule in rules {
        s += &format!("    {rule}\n");
    }
    s + "  }"
}

/// The `ports` map: numgen index -> external port.
fn port_pool() -> String {
    let elements: Vec<String> = (0..PORT_POOL)
        .map(|i| format!("{i} : {}", PORT_BASE + i))
        .collect();
    format!(
        "typeof numgen inc mod {PORT_POOL} : udp sport; elements = {{ {} }}",
        elements.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAN: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);

    #[test]
    fn plain_routing_has_no_rules() {
        assert_eq!(ruleset(NatKind::None.with_hairpin(), "eth0", WAN), None);
    }

    #[test]
    fn only_eim_remembers_mappings() {
        let eim = ruleset(NatKind::EndpointIndependent.into(), "eth0", WAN).unwrap();
        let edm = ruleset(NatKind::EndpointDependent.into(), "eth0", WAN).unwrap();
        assert!(eim.contains("update @eim"));
        assert!(!edm.contains("@eim"));
        assert!(edm.contains("numgen inc"));
    }

    #[test]
    fn hairpin_adds_the_lan_side_dnat_and_only_eim_opens_mappings_to_everyone() {
        let off = ruleset(NatKind::EndpointIndependent.into(), "eth0", WAN).unwrap();
        let on = ruleset(NatKind::EndpointIndependent.with_hairpin(), "eth0", WAN).unwrap();
        let lan_dnat = "iifname != \"eth0\" ip daddr 203.0.113.1 udp dport @mappings dnat";
        let wan_dnat = "iifname \"eth0\" ip daddr 203.0.113.1 udp dport @mappings dnat";
        assert!(!off.contains(lan_dnat) && on.contains(lan_dnat));
        assert!(off.contains(wan_dnat) && on.contains(wan_dnat));
        let edm = ruleset(NatKind::EndpointDependent.with_hairpin(), "eth0", WAN).unwrap();
        assert!(!edm.contains(wan_dnat));
        assert!(edm.contains("ct state new drop"));
    }

    #[test]
    fn udp_blocked_drops_forwarded_udp_only() {
        let s = ruleset(NatKind::UdpBlocked.into(), "eth0", WAN).unwrap();
        assert!(s.contains("meta l4proto udp drop"));
        assert!(!s.contains("numgen"));
        assert!(s.contains("snat ip to 203.0.113.1"));
    }
}
