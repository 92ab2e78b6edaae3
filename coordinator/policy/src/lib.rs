//! The tailnet policy file: HuJSON ACLs parsed, validated and compiled per node into the
//! packet-filter rules control sends (`FilterRule`), plus peer visibility and route
//! auto-approval. Pure: no I/O. See README.md for the syntax, what is refused and the semantics.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::LazyLock;

use ipnet::IpNet;
use meshgate_tailcfg::filter::{FilterRule, NetPortRange, PortRange};

mod error;
mod parse;
mod source;

pub use error::PolicyError;

/// What the policy needs to know of a node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeView {
    pub id: i64,
    /// The owning user's login, matched exactly against `user@domain` aliases. Ignored for
    /// tagged nodes (a tagged node belongs to its tags, not to a user).
    pub user: String,
    pub tags: Vec<String>,
    /// The node's own Tailscale addresses (the /32 and /128).
    pub addresses: Vec<IpAddr>,
    /// Approved subnet routes; `0.0.0.0/0` and `::/0` when it is an approved exit node.
    pub approved_routes: Vec<IpNet>,
}

impl NodeView {
    fn is_tagged(&self) -> bool {
        !self.tags.is_empty()
    }

    fn subnet_routes(&self) -> impl Iterator<Item = &IpNet> {
        self.approved_routes.iter().filter(|r| r.prefix_len() != 0)
    }
}

/// A parsed, validated policy. Build it with [`Policy::parse`].
#[derive(Clone, Debug, Default)]
pub struct Policy {
    groups: BTreeMap<String, BTreeSet<String>>,
    hosts: BTreeMap<String, IpNet>,
    tag_owners: BTreeMap<String, Vec<Alias>>,
    acls: Vec<Acl>,
    route_approvers: Vec<(IpNet, Vec<Alias>)>,
    exit_approvers: Vec<Alias>,
    warnings: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Alias {
    Any,
    User(String),
    Group(String),
    Tag(String),
    /// IPs, CIDRs and `hosts` entries.
    Prefix(IpNet),
    Member,
    Tagged,
    SelfDevices,
    Internet,
}

#[derive(Clone, Debug, Default)]
struct Acl {
    src: Vec<Alias>,
    /// Alias and inclusive port ranges.
    dst: Vec<(Alias, Vec<(u16, u16)>)>,
    /// Empty: the client default set.
    proto: Vec<i32>,
}

/// A destination as the wire writes it: `*` or a prefix (host prefixes as bare IPs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Dst {
    Any,
    Net(IpNet),
}

impl Policy {
    /// Parses and validates HuJSON policy text. Nothing of a refused policy is kept.
    ///
    /// ```
    /// use meshgate_policy::{NodeView, Policy};
    ///
    /// let policy = Policy::parse(r#"{
    ///   // Everyone may ssh to anyone.
    ///   "acls": [{"action": "accept", "src": ["*"], "dst": ["*:22"]}],
    /// }"#).unwrap();
    /// let node = NodeView { id: 1, addresses: vec!["100.64.0.1".parse().unwrap()], ..Default::default() };
    /// let rules = policy.filter_for(&node, std::slice::from_ref(&node));
    /// assert_eq!(rules[0].src_ips, ["*"]);
    /// assert_eq!(rules[0].dst_ports[0].ip, "*");
    ///
    /// let err = Policy::parse("{\n  \"acls\": [{\"action\": \"accept\", \"src\": [\"group:x\"], \"dst\": [\"*:*\"]}]\n}")
    ///     .unwrap_err();
    /// assert_eq!(err.to_string(), "line 2, column 41: group `group:x` is not defined in `groups`");
    /// ```
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        parse::parse(text)
    }

    /// Parts of the file that were accepted but ignored (`ssh`, `nodeAttrs`, `tests`,
    /// `sshTests`), one message each, naming the line.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The packet-filter rules for `node`: those where it is a destination, which is all control
    /// sends a node. One rule per ACL entry (two if it also has `autogroup:self` destinations),
    /// in policy order, identical rules dropped; sources and destinations sorted. An empty Vec
    /// denies everything inbound.
    pub fn filter_for(&self, node: &NodeView, all: &[NodeView]) -> Vec<FilterRule> {
        let mut rules: Vec<FilterRule> = Vec::new();
        for acl in &self.acls {
            let mut dsts = BTreeSet::new();
            let mut own = BTreeSet::new();
            for (alias, ports) in &acl.dst {
                if *alias == Alias::SelfDevices {
                    if !node.is_tagged() {
                        for addr in &node.addresses {
                            for &p in ports {
                                own.insert((Dst::Net(IpNet::from(*addr)), p));
                            }
                        }
                    }
                    continue;
                }
                for dst in self.dst_targets(alias, node) {
                    for &p in ports {
                        dsts.insert((dst, p));
                    }
                }
            }
            if !dsts.is_empty() {
                let src = self.src_ips(&acl.src, all);
                push_rule(&mut rules, src, &dsts, &acl.proto);
            }
            if !own.is_empty() {
                // autogroup:self: the sources are the same user's untagged devices in `src`.
                let src: BTreeSet<Dst> = all
                    .iter()
                    .filter(|n| !n.is_tagged() && n.user == node.user)
                    .filter(|n| acl.src.iter().any(|a| self.node_is(a, n)))
                    .flat_map(|n| n.addresses.iter().map(|a| Dst::Net(IpNet::from(*a))))
                    .collect();
                push_rule(&mut rules, src, &own, &acl.proto);
            }
        }
        rules
    }

    /// The ids of the peers `node` must see: those it may reach and those that may reach it
    /// (return traffic needs a WireGuard peer too). Sorted, without `node` itself.
    pub fn visible_peers(&self, node: &NodeView, all: &[NodeView]) -> Vec<i64> {
        let ids: BTreeSet<i64> = all
            .iter()
            .filter(|peer| peer.id != node.id)
            .filter(|peer| {
                self.acls
                    .iter()
                    .any(|acl| self.reaches(acl, node, peer) || self.reaches(acl, peer, node))
            })
            .map(|peer| peer.id)
            .collect();
        ids.into_iter().collect()
    }

    /// Whether `node` advertising `route` has it approved by `autoApprovers`: `route` must lie
    /// inside an approved prefix whose approvers include the node (by tag, or by user or group
    /// for an untagged node). `0.0.0.0/0` and `::/0` are exit routes: see
    /// [`Policy::auto_approve_exit_node`].
    pub fn auto_approve(&self, node: &NodeView, route: IpNet) -> bool {
        let route = route.trunc();
        if route.prefix_len() == 0 {
            return self.auto_approve_exit_node(node);
        }
        self.route_approvers.iter().any(|(prefix, approvers)| {
            prefix.contains(&route) && approvers.iter().any(|a| self.node_is(a, node))
        })
    }

    /// Whether `node` may be an exit node without manual approval (`autoApprovers.exitNode`).
    pub fn auto_approve_exit_node(&self, node: &NodeView) -> bool {
        self.exit_approvers.iter().any(|a| self.node_is(a, node))
    }

    /// Whether `owner` (a user login, or a tag when `owner` starts with `tag:`) may apply `tag`
    /// to a node, per `tagOwners` (directly, through a group, or through an owning tag).
    pub fn tag_owned_by(&self, tag: &str, owner: &str) -> bool {
        let Some(owners) = self.tag_owners.get(tag) else {
            return false;
        };
        owners.iter().any(|a| match a {
            Alias::User(u) => u == owner,
            Alias::Group(g) => self.groups.get(g).is_some_and(|m| m.contains(owner)),
            Alias::Tag(t) => t == owner,
            _ => false,
        })
    }

    /// Whether the node is what the alias names (identity; prefixes match the node's addresses
    /// and subnet routes). Destination-only autogroups name no node here.
    fn node_is(&self, alias: &Alias, node: &NodeView) -> bool {
        match alias {
            Alias::Any => true,
            Alias::User(u) => !node.is_tagged() && node.user == *u,
            Alias::Group(g) => {
                !node.is_tagged() && self.groups.get(g).is_some_and(|m| m.contains(&node.user))
            }
            Alias::Tag(t) => node.tags.contains(t),
            Alias::Member => !node.is_tagged(),
            Alias::Tagged => node.is_tagged(),
            Alias::Prefix(p) => {
                node.addresses.iter().any(|a| p.contains(a))
                    || node.subnet_routes().any(|r| overlaps(p, r))
            }
            Alias::SelfDevices | Alias::Internet => false,
        }
    }

    /// SrcIPs of an ACL: `*` alone if any source is `*`, else the CIDRs as written and the
    /// addresses of the nodes named.
    fn src_ips(&self, src: &[Alias], all: &[NodeView]) -> BTreeSet<Dst> {
        if src.contains(&Alias::Any) {
            return BTreeSet::from([Dst::Any]);
        }
        let mut ips = BTreeSet::new();
        for alias in src {
            match alias {
                Alias::Prefix(p) => {
                    ips.insert(Dst::Net(*p));
                }
                _ => {
                    for n in all.iter().filter(|n| self.node_is(alias, n)) {
                        ips.extend(n.addresses.iter().map(|a| Dst::Net(IpNet::from(*a))));
                    }
                }
            }
        }
        ips
    }

    /// What of `node` the destination alias covers (not `autogroup:self`).
    fn dst_targets(&self, alias: &Alias, node: &NodeView) -> Vec<Dst> {
        let own = || {
            node.addresses
                .iter()
                .map(|a| Dst::Net(IpNet::from(*a)))
                .collect()
        };
        match alias {
            Alias::Any => vec![Dst::Any],
            Alias::User(_) | Alias::Group(_) | Alias::Tag(_) | Alias::Member | Alias::Tagged => {
                if self.node_is(alias, node) {
                    own()
                } else {
                    Vec::new()
                }
            }
            Alias::Prefix(p) => {
                let mut out: Vec<Dst> = node
                    .addresses
                    .iter()
                    .filter(|a| p.contains(*a))
                    .map(|a| Dst::Net(IpNet::from(*a)))
                    .collect();
                // The more specific of the two, so the rule covers only what both cover.
                for r in node.subnet_routes() {
                    if p.contains(r) {
                        out.push(Dst::Net(*r));
                    } else if r.contains(p) {
                        out.push(Dst::Net(*p));
                    }
                }
                out
            }
            Alias::Internet => {
                let exit = |v4: bool| {
                    (node.approved_routes.iter())
                        .any(|r| r.prefix_len() == 0 && r.addr().is_ipv4() == v4)
                };
                let (v4, v6) = (exit(true), exit(false));
                INTERNET
                    .iter()
                    .filter(|n| if n.addr().is_ipv4() { v4 } else { v6 })
                    .map(|n| Dst::Net(*n))
                    .collect()
            }
            Alias::SelfDevices => Vec::new(),
        }
    }

    /// Whether `acl` lets `from` open connections to `to`.
    fn reaches(&self, acl: &Acl, from: &NodeView, to: &NodeView) -> bool {
        acl.src.iter().any(|a| self.node_is(a, from))
            && acl.dst.iter().any(|(alias, _)| match alias {
                Alias::SelfDevices => !from.is_tagged() && !to.is_tagged() && from.user == to.user,
                _ => !self.dst_targets(alias, to).is_empty(),
            })
    }
}

/// `autogroup:internet` (headscale `TheInternet`): all IPv4 and 2000::/3, minus RFC 1918,
/// CGNAT (Tailscale's range), link-local, fc00::/7 (Tailscale's ULA is inside it) and fe80::/10.
static INTERNET: LazyLock<Vec<IpNet>> = LazyLock::new(|| {
    let net = |s: &str| s.parse::<IpNet>().expect("constant prefix");
    let holes: Vec<IpNet> = [
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "fc00::/7",
        "fe80::/10",
    ]
    .iter()
    .map(|s| net(s))
    .collect();
    let mut out = Vec::new();
    for base in ["0.0.0.0/0", "2000::/3"] {
        subtract(net(base), &holes, &mut out);
    }
    out.sort();
    out
});

/// `base` minus `holes`, as the fewest aligned prefixes.
fn subtract(base: IpNet, holes: &[IpNet], out: &mut Vec<IpNet>) {
    if holes.iter().any(|h| h.contains(&base)) {
        return;
    }
    if !holes.iter().any(|h| base.contains(h)) {
        out.push(base);
        return;
    }
    for half in base
        .subnets(base.prefix_len() + 1)
        .expect("a prefix with a hole inside is not a host")
    {
        subtract(half, holes, out);
    }
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b) || b.contains(a)
}

fn wire_ip(dst: &Dst) -> String {
    match dst {
        Dst::Any => "*".to_string(),
        Dst::Net(n) if n.prefix_len() == n.max_prefix_len() => n.addr().to_string(),
        Dst::Net(n) => n.to_string(),
    }
}

fn push_rule(
    rules: &mut Vec<FilterRule>,
    src: BTreeSet<Dst>,
    dsts: &BTreeSet<(Dst, (u16, u16))>,
    proto: &[i32],
) {
    if src.is_empty() {
        return;
    }
    let rule = FilterRule {
        src_ips: src.iter().map(wire_ip).collect(),
        dst_ports: dsts
            .iter()
            .map(|(dst, (first, last))| NetPortRange {
                ip: wire_ip(dst),
                ports: PortRange {
                    first: *first,
                    last: *last,
                },
            })
            .collect(),
        ip_proto: proto.to_vec(),
        ..FilterRule::default()
    };
    if !rules.contains(&rule) {
        rules.push(rule);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internet_excludes_private_and_tailscale_ranges() {
        let inside = |ip: &str| {
            let ip: IpAddr = ip.parse().unwrap();
            INTERNET.iter().any(|n| n.contains(&ip))
        };
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
        ] {
            assert!(inside(ip), "{ip}");
        }
        for ip in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "169.254.169.254",
            "fd7a:115c:a1e0::1",
            "fe80::1",
            "::1",
        ] {
            assert!(!inside(ip), "{ip}");
        }
        // Disjoint, aligned prefixes.
        for (i, a) in INTERNET.iter().enumerate() {
            assert_eq!(a.trunc(), *a);
            for b in &INTERNET[i + 1..] {
                assert!(!overlaps(a, b), "{a} {b}");
            }
        }
        assert!(INTERNET.contains(&"2000::/3".parse().unwrap()));
    }
}
