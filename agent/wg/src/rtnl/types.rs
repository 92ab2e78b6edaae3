//! The interface's layer-3 configuration as meshgate owns it: addresses, routes and ip rules.

use std::collections::BTreeSet;

use ipnet::IpNet;

/// Routes and rules we write carry this protocol number, so we can tell ours from everyone
/// else's on read-back and never touch theirs. `ip route` shows it as `proto 109`.
pub const ROUTE_PROTOCOL: u8 = 109;

/// A route into a routing table: through our interface in [`NetConfig::routes`], of type
/// `throw` (no device) in [`NetConfig::throw_routes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route {
    pub destination: IpNet,
    pub table: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

/// A policy-routing rule, like `ip rule add pref 5270 not fwmark 0x80000/0xff0000 lookup 52`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    pub family: Family,
    pub priority: u32,
    /// (mark, mask) to match.
    pub fwmark: Option<(u32, u32)>,
    /// Match packets that do *not* carry the mark.
    pub invert: bool,
    pub table: u32,
}

/// Desired layer-3 state of the interface.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetConfig {
    pub mtu: Option<u32>,
    pub addresses: BTreeSet<IpNet>,
    pub routes: BTreeSet<Route>,
    /// `ip route add throw <destination> table <table> proto 109`: a lookup of these prefixes
    /// leaves `table` and goes on with the next rule (the main table), so that with an exit
    /// node's default route in our table the local LAN is still reached directly. Read back
    /// from the tables this interface uses (its routes, rules and throw routes).
    pub throw_routes: BTreeSet<Route>,
    pub rules: BTreeSet<Rule>,
}

/// What to add and remove to turn one set into another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetDiff<T> {
    pub add: Vec<T>,
    pub remove: Vec<T>,
}

impl<T: Ord + Clone> SetDiff<T> {
    pub fn between(actual: &BTreeSet<T>, desired: &BTreeSet<T>) -> Self {
        SetDiff {
            add: desired.difference(actual).cloned().collect(),
            remove: actual.difference(desired).cloned().collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }

    pub fn len(&self) -> usize {
        self.add.len() + self.remove.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_diff_touches_only_differences() {
        let a: BTreeSet<u32> = [1, 2, 3].into();
        let b: BTreeSet<u32> = [2, 3, 4].into();
        let d = SetDiff::between(&a, &b);
        assert_eq!(d.add, vec![4]);
        assert_eq!(d.remove, vec![1]);
        assert!(SetDiff::between(&a, &a).is_empty());
    }
}
