//! The tailnet's names: what the resolver answers locally.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use hickory_proto::rr::Name;

use crate::names::{ancestors, key_of, parse_fqdn, reverse_key};

/// Names → addresses (and addresses → names for PTR), built from the netmap.
///
/// Lookups are case-insensitive and take names with or without the trailing dot. Only the
/// fully qualified names given are answered: the bare host name is not (search-domain
/// expansion is the stub resolver's job, as in Tailscale).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Records {
    forward: HashMap<String, Vec<IpAddr>>,
    reverse: HashMap<String, Name>,
    /// Ancestors of record names, which exist as empty non-terminals.
    interior: HashSet<String>,
}

impl Records {
    /// Builds the table from `(fqdn, addresses)` pairs, e.g. the self node and the peers
    /// (`Node.Name`, `Node.Addresses`). Entries with an unusable name are skipped; a name given
    /// twice gets the union of its addresses. For PTR, the first name given for an address wins.
    pub fn new<N, A>(entries: impl IntoIterator<Item = (N, A)>) -> Self
    where
        N: AsRef<str>,
        A: IntoIterator<Item = IpAddr>,
    {
        let mut records = Self::default();
        for (name, addrs) in entries {
            let Some(name) = parse_fqdn(name.as_ref()) else {
                tracing::debug!(name = name.as_ref(), "magicdns: skipping unusable name");
                continue;
            };
            let Some(key) = key_of(&name) else { continue };
            let entry = records.forward.entry(key.clone()).or_default();
            for ip in addrs {
                if !entry.contains(&ip) {
                    entry.push(ip);
                }
                records
                    .reverse
                    .entry(reverse_key(ip))
                    .or_insert_with(|| name.clone());
            }
            records.interior.extend(ancestors(&key).map(str::to_owned));
        }
        records
    }

    /// The addresses of `name`, if it is a known name.
    pub fn lookup(&self, name: &str) -> Option<&[IpAddr]> {
        let key = key_of(&parse_fqdn(name)?)?;
        self.forward.get(&key).map(Vec::as_slice)
    }

    /// The name of a tailnet address, for PTR.
    pub fn name_of(&self, ip: IpAddr) -> Option<&Name> {
        self.reverse.get(&reverse_key(ip))
    }

    /// Number of names.
    pub fn len(&self) -> usize {
        self.forward.len()
    }

    /// Whether there are no names.
    pub fn is_empty(&self) -> bool {
        self.forward.is_empty()
    }

    pub(crate) fn addrs_by_key(&self, key: &str) -> Option<&[IpAddr]> {
        self.forward.get(key).map(Vec::as_slice)
    }

    pub(crate) fn ptr_by_key(&self, key: &str) -> Option<&Name> {
        self.reverse.get(key)
    }

    /// Whether a name exists without records of its own (an ancestor of a record name).
    pub(crate) fn is_interior(&self, key: &str) -> bool {
        self.interior.contains(key)
    }
}

/// The MagicDNS domains (e.g. `tailnet.ts.net.`): every name under them is answered locally
/// (NXDOMAIN when unknown), never forwarded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Domains(Vec<Name>);

impl Domains {
    /// Builds the list; unusable names and the root are skipped (a root domain would swallow
    /// every query).
    pub fn new<S: AsRef<str>>(domains: impl IntoIterator<Item = S>) -> Self {
        Self(
            domains
                .into_iter()
                .filter_map(|d| parse_fqdn(d.as_ref()))
                .filter(|d| d.num_labels() > 0)
                .collect(),
        )
    }

    /// Whether `name` is a domain or under one.
    pub fn contains(&self, name: &Name) -> bool {
        self.0.iter().any(|d| d.zone_of(name))
    }

    /// Whether `name` is one of the domains itself.
    pub fn is_apex(&self, name: &Name) -> bool {
        self.0.iter().any(|d| d.zone_of(name) && name.zone_of(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn lookups_ignore_case_and_trailing_dot() {
        let r = Records::new([
            (
                "host.tail.ts.net.",
                vec![ip("100.64.0.1"), ip("fd7a:115c:a1e0::1")],
            ),
            ("Other.Tail.ts.net", vec![ip("100.64.0.2")]),
        ]);
        assert_eq!(r.len(), 2);
        assert_eq!(r.lookup("HOST.tail.ts.net").unwrap().len(), 2);
        assert_eq!(r.lookup("other.tail.ts.net.").unwrap(), [ip("100.64.0.2")]);
        assert!(
            r.lookup("host").is_none(),
            "bare host names are not answered"
        );
        assert!(r.lookup("nope.tail.ts.net.").is_none());
        assert_eq!(
            r.name_of(ip("fd7a:115c:a1e0::1")).unwrap().to_ascii(),
            "host.tail.ts.net."
        );
        assert!(r.name_of(ip("100.64.0.9")).is_none());
        assert!(r.is_interior("tail.ts.net.") && !r.is_interior("host.tail.ts.net."));
    }

    #[test]
    fn duplicate_names_merge_and_bad_names_are_skipped() {
        let r = Records::new([
            ("a.x.", vec![ip("100.64.0.1")]),
            ("A.x.", vec![ip("100.64.0.1"), ip("100.64.0.3")]),
            ("", vec![ip("100.64.0.4")]),
            ("a..b", vec![ip("100.64.0.5")]),
        ]);
        assert_eq!(r.len(), 1);
        assert_eq!(
            r.lookup("a.x").unwrap(),
            [ip("100.64.0.1"), ip("100.64.0.3")]
        );
    }

    #[test]
    fn domains_match_subtrees_only() {
        let d = Domains::new(["tail.ts.net", ".", ""]);
        let name = |s: &str| Name::from_ascii(s).unwrap();
        assert!(d.contains(&name("tail.ts.net.")));
        assert!(d.contains(&name("X.TAIL.ts.net.")));
        assert!(!d.contains(&name("example.com.")));
        assert!(!d.contains(&name("nottail.ts.net.")));
    }
}
