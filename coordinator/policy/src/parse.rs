//! Text to validated [`Policy`]: json5 into serde structs, then every string checked and turned
//! into an [`Alias`], port ranges and protocol numbers, with errors placed by [`SourceMap`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::error::PolicyError;
use crate::source::{Entry, Location, SourceMap};
use crate::{Acl, Alias, Policy};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawPolicy {
    #[serde(default)]
    groups: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    hosts: BTreeMap<String, String>,
    #[serde(default)]
    tag_owners: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    acls: Vec<RawAcl>,
    #[serde(default)]
    auto_approvers: Option<RawAutoApprovers>,
    // Accepted and ignored, with a warning: none of them can grant packet access.
    ssh: Option<IgnoredAny>,
    node_attrs: Option<IgnoredAny>,
    tests: Option<IgnoredAny>,
    ssh_tests: Option<IgnoredAny>,
    // Refused: each would change who may send packets where.
    grants: Option<IgnoredAny>,
    postures: Option<IgnoredAny>,
    ipsets: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAcl {
    action: String,
    src: Vec<String>,
    dst: Vec<String>,
    #[serde(default)]
    proto: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawAutoApprovers {
    #[serde(default)]
    routes: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    exit_node: Vec<String>,
}

/// Where an alias stands; decides which kinds are allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Src,
    Dst,
    /// tagOwners values and autoApprovers: users, groups and tags only.
    Owner,
}

/// Protocol names of the policy file (headscale v2 / Tailscale), lower case.
const PROTOCOLS: &[(&str, i32)] = &[
    ("icmp", 1),
    ("igmp", 2),
    ("ipv4", 4),
    ("ip-in-ip", 4),
    ("tcp", 6),
    ("egp", 8),
    ("igp", 9),
    ("udp", 17),
    ("gre", 47),
    ("esp", 50),
    ("ah", 51),
    ("ipv6-icmp", 58),
    ("sctp", 132),
    ("fc", 133),
];

/// Protocols with ports; any other protocol only takes `:*`.
const PORT_PROTOCOLS: [i32; 3] = [6, 17, 132];

/// Where in the text a string came from, resolved to a line only when an error needs it.
#[derive(Clone, Copy)]
struct Site<'a> {
    map: &'a SourceMap,
    section: &'static str,
    entry: Entry<'a>,
    needle: &'a str,
}

impl Site<'_> {
    fn loc(&self) -> Location {
        self.map.locate(self.section, self.entry, self.needle)
    }

    fn invalid(&self, reason: impl Into<String>) -> PolicyError {
        let Location { line, column } = self.loc();
        PolicyError::Invalid {
            line,
            column,
            reason: reason.into(),
        }
    }

    fn bad_alias(&self, alias: &str, reason: impl Into<String>) -> PolicyError {
        let Location { line, column } = self.loc();
        PolicyError::BadAlias {
            line,
            column,
            alias: alias.to_string(),
            reason: reason.into(),
        }
    }

    fn bad_prefix(&self, prefix: &str, reason: impl Into<String>) -> PolicyError {
        let Location { line, column } = self.loc();
        PolicyError::BadPrefix {
            line,
            column,
            prefix: prefix.to_string(),
            reason: reason.into(),
        }
    }

    fn bad_ports(&self, ports: &str, reason: impl Into<String>) -> PolicyError {
        let Location { line, column } = self.loc();
        PolicyError::BadPorts {
            line,
            column,
            ports: ports.to_string(),
            reason: reason.into(),
        }
    }
}

pub(crate) fn parse(text: &str) -> Result<Policy, PolicyError> {
    let raw: RawPolicy = json5::from_str(text)?;
    let map = SourceMap::new(text);

    for (key, present, hint) in [
        ("grants", raw.grants.is_some(), "write the rules as `acls`"),
        (
            "postures",
            raw.postures.is_some(),
            "device posture is not implemented",
        ),
        ("ipsets", raw.ipsets.is_some(), "use `hosts` with CIDRs"),
    ] {
        if present {
            let Location { line, column } = map.key(key);
            return Err(PolicyError::Unsupported {
                line,
                column,
                key: key.to_string(),
                hint,
            });
        }
    }
    let mut warnings = Vec::new();
    for (key, present) in [
        ("ssh", raw.ssh.is_some()),
        ("nodeAttrs", raw.node_attrs.is_some()),
        ("tests", raw.tests.is_some()),
        ("sshTests", raw.ssh_tests.is_some()),
    ] {
        if present {
            let at = map.key(key);
            warnings.push(format!(
                "line {}: `{key}` is not supported yet and was ignored",
                at.line
            ));
        }
    }

    for section in ["groups", "hosts", "tagOwners"] {
        if let Some((key, Location { line, column })) = map.duplicate_key(section) {
            return Err(PolicyError::Invalid {
                line,
                column,
                reason: format!("`{key}` is defined twice in `{section}`"),
            });
        }
    }

    let mut policy = Policy {
        warnings,
        ..Policy::default()
    };

    // hosts: name -> IP or CIDR.
    for (name, value) in &raw.hosts {
        let site = Site {
            map: &map,
            section: "hosts",
            entry: Entry::Key(name),
            needle: name,
        };
        if name.is_empty() || name.contains([':', '@', '/']) || name == "*" {
            return Err(site.invalid(format!(
                "host name `{name}` must not be empty nor contain `:`, `@` or `/`"
            )));
        }
        let value_site = Site {
            needle: value,
            ..site
        };
        policy
            .hosts
            .insert(name.clone(), parse_prefix(value, &value_site)?);
    }

    // groups: group:name -> users. No nesting (as Tailscale).
    for (name, members) in &raw.groups {
        let site = Site {
            map: &map,
            section: "groups",
            entry: Entry::Key(name),
            needle: name,
        };
        check_name(name, "group:", &site)?;
        let mut users = BTreeSet::new();
        for member in members {
            let site = Site {
                needle: member,
                ..site
            };
            if member.starts_with("group:") {
                return Err(site.invalid(format!(
                    "group `{name}` contains group `{member}`: groups cannot be nested"
                )));
            }
            if !is_user(member) {
                return Err(site.bad_alias(member, "group members must be users (user@domain)"));
            }
            users.insert(member.clone());
        }
        policy.groups.insert(name.clone(), users);
    }

    // tagOwners: every tag used anywhere must be here. Owners: users, groups and tags.
    for name in raw.tag_owners.keys() {
        let site = Site {
            map: &map,
            section: "tagOwners",
            entry: Entry::Key(name),
            needle: name,
        };
        check_name(name, "tag:", &site)?;
        policy.tag_owners.insert(name.clone(), Vec::new());
    }
    for (name, owners) in &raw.tag_owners {
        let mut parsed = Vec::new();
        for owner in owners {
            let site = Site {
                map: &map,
                section: "tagOwners",
                entry: Entry::Key(name),
                needle: owner,
            };
            parsed.push(policy.parse_alias(owner, Role::Owner, &site)?);
        }
        policy.tag_owners.insert(name.clone(), parsed);
    }

    for (index, raw_acl) in raw.acls.iter().enumerate() {
        let site = |needle| Site {
            map: &map,
            section: "acls",
            entry: Entry::Index(index),
            needle,
        };
        if raw_acl.action != "accept" {
            return Err(site(&raw_acl.action).invalid(format!(
                "action `{}`: only \"accept\" exists (everything not accepted is denied)",
                raw_acl.action
            )));
        }
        let proto = match &raw_acl.proto {
            Some(p) => parse_proto(p, &site(p))?,
            None => Vec::new(),
        };
        let mut acl = Acl {
            proto,
            ..Acl::default()
        };
        for src in &raw_acl.src {
            acl.src
                .push(policy.parse_alias(src, Role::Src, &site(src))?);
        }
        for dst in &raw_acl.dst {
            let site = site(dst);
            let Some(colon) = dst.rfind(':') else {
                return Err(site.invalid(format!(
                    "dst `{dst}` must be `alias:ports`, e.g. `{dst}:*` or `{dst}:22`"
                )));
            };
            let (alias, ports) = (&dst[..colon], &dst[colon + 1..]);
            let alias = alias
                .strip_prefix('[')
                .and_then(|a| a.strip_suffix(']'))
                .unwrap_or(alias);
            let alias = policy.parse_alias(alias, Role::Dst, &site)?;
            let ports = parse_ports(ports, &site)?;
            if !acl.proto.is_empty()
                && !acl.proto.iter().any(|p| PORT_PROTOCOLS.contains(p))
                && ports != [(0, u16::MAX)]
            {
                return Err(site.invalid(format!(
                    "protocol `{}` has no ports: write the destination with `:*`",
                    raw_acl.proto.as_deref().unwrap_or_default()
                )));
            }
            acl.dst.push((alias, ports));
        }
        policy.acls.push(acl);
    }

    let approvers = raw.auto_approvers.unwrap_or_default();
    for (prefix, owners) in &approvers.routes {
        let site = Site {
            map: &map,
            section: "autoApprovers",
            entry: Entry::Whole,
            needle: prefix,
        };
        let net = parse_prefix(prefix, &site)?;
        let mut parsed = Vec::new();
        for owner in owners {
            let site = Site {
                needle: owner,
                ..site
            };
            parsed.push(policy.parse_alias(owner, Role::Owner, &site)?);
        }
        policy.route_approvers.push((net, parsed));
    }
    for owner in &approvers.exit_node {
        let site = Site {
            map: &map,
            section: "autoApprovers",
            entry: Entry::Key("exitNode"),
            needle: owner,
        };
        let alias = policy.parse_alias(owner, Role::Owner, &site)?;
        policy.exit_approvers.push(alias);
    }
    Ok(policy)
}

impl Policy {
    fn parse_alias(&self, s: &str, role: Role, site: &Site<'_>) -> Result<Alias, PolicyError> {
        let only = |kinds: &str| site.bad_alias(s, format!("only {kinds} are allowed here"));
        let owner_kinds = "users, groups and tags";
        if s == "*" {
            return match role {
                Role::Owner => Err(only(owner_kinds)),
                _ => Ok(Alias::Any),
            };
        }
        if let Some(name) = s.strip_prefix("autogroup:") {
            let alias = match name {
                "member" => Alias::Member,
                "tagged" => Alias::Tagged,
                "self" => Alias::SelfDevices,
                "internet" => Alias::Internet,
                _ => {
                    return Err(site.bad_alias(
                        s,
                        "unknown autogroup (supported: member, tagged, self, internet)",
                    ));
                }
            };
            return match (role, &alias) {
                (Role::Owner, _) => Err(only(owner_kinds)),
                (Role::Src, Alias::SelfDevices | Alias::Internet) => {
                    Err(site.bad_alias(s, "only allowed in `dst`"))
                }
                _ => Ok(alias),
            };
        }
        if s.starts_with("group:") {
            if !self.groups.contains_key(s) {
                let Location { line, column } = site.loc();
                return Err(PolicyError::UndefinedGroup {
                    line,
                    column,
                    group: s.to_string(),
                });
            }
            return Ok(Alias::Group(s.to_string()));
        }
        if s.starts_with("tag:") {
            if !self.tag_owners.contains_key(s) {
                let Location { line, column } = site.loc();
                return Err(PolicyError::UndefinedTag {
                    line,
                    column,
                    tag: s.to_string(),
                });
            }
            return Ok(Alias::Tag(s.to_string()));
        }
        if s.contains('@') {
            if !is_user(s) {
                return Err(site.bad_alias(s, "a user is `name@domain`"));
            }
            return Ok(Alias::User(s.to_string()));
        }
        let is_ip = s.parse::<IpAddr>().is_ok();
        if is_ip || s.contains('/') {
            if role == Role::Owner {
                return Err(only(owner_kinds));
            }
            return Ok(Alias::Prefix(parse_prefix(s, site)?));
        }
        if let Some(kind) = s.split_once(':').map(|(k, _)| k) {
            return Err(site.bad_alias(
                s,
                format!(
                    "unknown alias kind `{kind}:` (known: group:, tag:, autogroup:, user@domain, hosts, IPs and CIDRs)"
                ),
            ));
        }
        if let Some(net) = self.hosts.get(s) {
            if role == Role::Owner {
                return Err(only(owner_kinds));
            }
            return Ok(Alias::Prefix(*net));
        }
        if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return Err(site.bad_prefix(s, "not an IP address"));
        }
        let Location { line, column } = site.loc();
        Err(PolicyError::UndefinedHost {
            line,
            column,
            host: s.to_string(),
        })
    }
}

/// `name@domain`; the domain may be empty (headscale's `alice@`).
fn is_user(s: &str) -> bool {
    matches!(s.split_once('@'), Some((local, domain)) if !local.is_empty() && !domain.contains('@') && !s.contains([' ', ':']))
}

fn check_name(name: &str, prefix: &str, site: &Site<'_>) -> Result<(), PolicyError> {
    let rest = name.strip_prefix(prefix).unwrap_or_default();
    let ok = name.starts_with(prefix)
        && !rest.is_empty()
        && rest
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(site.invalid(format!(
            "`{name}` must be `{prefix}name` (letters, digits, `-`, `_`, `.`)"
        )))
    }
}

/// An IP (as /32 or /128) or a CIDR whose host bits are zero.
fn parse_prefix(s: &str, site: &Site<'_>) -> Result<IpNet, PolicyError> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    let net: IpNet = s
        .parse()
        .map_err(|_| site.bad_prefix(s, "not an IP address or CIDR"))?;
    if net.trunc() != net {
        return Err(site.bad_prefix(
            s,
            format!("host bits are set (did you mean {}?)", net.trunc()),
        ));
    }
    Ok(net)
}

/// `*`, `22`, `80,443`, `1000-2000` (and mixes), as inclusive ranges.
fn parse_ports(s: &str, site: &Site<'_>) -> Result<Vec<(u16, u16)>, PolicyError> {
    if s == "*" {
        return Ok(vec![(0, u16::MAX)]);
    }
    let port = |p: &str| {
        p.parse::<u16>().map_err(|_| {
            let reason = if p.is_empty() {
                "empty port".to_string()
            } else if p.chars().all(|c| c.is_ascii_digit()) {
                format!("port {p} is above 65535")
            } else {
                format!("`{p}` is not a port number (write `*`, `22`, `80,443` or `1000-2000`)")
            };
            site.bad_ports(s, reason)
        })
    };
    let mut ranges = Vec::new();
    for part in s.split(',') {
        let range = match part.split_once('-') {
            Some((first, last)) => (port(first)?, port(last)?),
            None => {
                let p = port(part)?;
                (p, p)
            }
        };
        if range.0 > range.1 {
            return Err(site.bad_ports(s, format!("range {part} is reversed")));
        }
        ranges.push(range);
    }
    Ok(ranges)
}

/// A protocol name or number; empty means the client's default set (empty `IPProto`).
fn parse_proto(s: &str, site: &Site<'_>) -> Result<Vec<i32>, PolicyError> {
    if s.is_empty() {
        return Ok(Vec::new());
    }
    let lower = s.to_ascii_lowercase();
    if let Some((_, n)) = PROTOCOLS.iter().find(|(name, _)| *name == lower) {
        return Ok(vec![*n]);
    }
    match s.parse::<u8>() {
        Ok(n) => Ok(vec![i32::from(n)]),
        Err(_) => {
            let Location { line, column } = site.loc();
            Err(PolicyError::BadProto {
                line,
                column,
                proto: s.to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports(s: &str) -> Result<Vec<(u16, u16)>, PolicyError> {
        let map = SourceMap::new("{}");
        let site = Site {
            map: &map,
            section: "acls",
            entry: Entry::Whole,
            needle: s,
        };
        parse_ports(s, &site)
    }

    #[test]
    fn port_specs() {
        assert_eq!(ports("*").unwrap(), [(0, 65535)]);
        assert_eq!(ports("22").unwrap(), [(22, 22)]);
        assert_eq!(ports("80,443").unwrap(), [(80, 80), (443, 443)]);
        assert_eq!(ports("1000-2000,53").unwrap(), [(1000, 2000), (53, 53)]);
        assert_eq!(ports("0-65535").unwrap(), [(0, 65535)]);
        for bad in [
            "",
            "80,",
            ",80",
            "2000-1000",
            "65536",
            "1-70000",
            "http",
            "1-",
            "*,22",
        ] {
            assert!(
                matches!(ports(bad), Err(PolicyError::BadPorts { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn protocols() {
        let map = SourceMap::new("{}");
        let proto = |s| {
            let site = Site {
                map: &map,
                section: "acls",
                entry: Entry::Whole,
                needle: s,
            };
            parse_proto(s, &site)
        };
        assert_eq!(proto("").unwrap(), Vec::<i32>::new());
        assert_eq!(proto("tcp").unwrap(), [6]);
        assert_eq!(proto("UDP").unwrap(), [17]);
        assert_eq!(proto("ipv6-icmp").unwrap(), [58]);
        assert_eq!(proto("sctp").unwrap(), [132]);
        assert_eq!(proto("47").unwrap(), [47]);
        assert!(proto("256").is_err());
        assert!(proto("quic").is_err());
    }
}
