//! Primary subnet routers: which one of the nodes serving a subnet prefix carries it for its
//! peers. Tailscale clients route a prefix to whichever peer lists it in `AllowedIPs`; with two
//! listing it the lower node id wins forever, so the server picks one and fails over.
//!
//! Pure: the previous choice and the candidates in, the new choice out.

use std::collections::BTreeMap;

use ipnet::IpNet;
use meshgate_tailcfg::NodeId;

/// The primary node of every subnet prefix that has one (exit routes never do).
pub type Primaries = BTreeMap<IpNet, NodeId>;

/// A node that may serve routes, as far as choosing primaries goes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Candidate {
    pub id: NodeId,
    /// Has an open map stream.
    pub online: bool,
    /// Its node key has expired (or it logged out): it serves nothing.
    pub expired: bool,
    /// Advertised and approved prefixes.
    pub served: Vec<IpNet>,
}

/// Exit routes (`0.0.0.0/0`, `::/0`) are not subnet routes: every approved exit node keeps
/// them and the client picks its exit node itself.
pub fn is_exit_route(prefix: &IpNet) -> bool {
    prefix.prefix_len() == 0
}

/// The primaries after a change. For every subnet prefix served by some non-expired
/// candidate:
///
/// 1. the previous primary, if it still serves the prefix and is online;
/// 2. else the online server with the lowest id;
/// 3. else (none online) the previous primary if it still serves the prefix, else the lowest
///    id, so a prefix is not left without a route while its routers reconnect.
///
/// Sticky: a former primary coming back online does not take the prefix back. Prefixes no
/// candidate serves any more are dropped.
pub fn choose_primaries(previous: &Primaries, candidates: &[Candidate]) -> Primaries {
    // Per prefix: every server, as (id, online).
    let mut servers: BTreeMap<IpNet, Vec<(NodeId, bool)>> = BTreeMap::new();
    for c in candidates.iter().filter(|c| !c.expired) {
        for prefix in c.served.iter().filter(|p| !is_exit_route(p)) {
            servers
                .entry(prefix.trunc())
                .or_default()
                .push((c.id, c.online));
        }
    }
    servers
        .into_iter()
        .filter_map(|(prefix, mut nodes)| {
            nodes.sort_unstable();
            nodes.dedup();
            let current = previous
                .get(&prefix)
                .and_then(|id| nodes.iter().find(|(n, _)| n == id))
                .copied();
            let chosen = match current {
                Some((id, true)) => id,
                _ => match nodes.iter().find(|(_, online)| *online) {
                    Some(&(id, _)) => id,
                    None => current.or_else(|| nodes.first().copied())?.0,
                },
            };
            Some((prefix, chosen))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn router(id: NodeId, online: bool, served: &[&str]) -> Candidate {
        Candidate {
            id,
            online,
            expired: false,
            served: served.iter().map(|s| net(s)).collect(),
        }
    }

    const SUBNET: &str = "10.1.0.0/24";

    fn primary_of(p: &Primaries) -> Option<NodeId> {
        p.get(&net(SUBNET)).copied()
    }

    #[test]
    fn lowest_online_id_first_then_sticky() {
        let none = Primaries::new();
        let both = [router(2, true, &[SUBNET]), router(1, true, &[SUBNET])];
        let p = choose_primaries(&none, &both);
        assert_eq!(primary_of(&p), Some(1));

        // 1 goes offline: 2 takes over.
        let one_down = [router(1, false, &[SUBNET]), router(2, true, &[SUBNET])];
        let p = choose_primaries(&p, &one_down);
        assert_eq!(primary_of(&p), Some(2));

        // 1 comes back: 2 keeps it.
        let p = choose_primaries(&p, &both);
        assert_eq!(primary_of(&p), Some(2));
        // And keeps it across unrelated recomputations.
        let p = choose_primaries(&p, &both);
        assert_eq!(primary_of(&p), Some(2));
    }

    #[test]
    fn offline_primary_is_replaced_by_the_lowest_online() {
        let previous = Primaries::from([(net(SUBNET), 1)]);
        let c = [
            router(1, false, &[SUBNET]),
            router(3, true, &[SUBNET]),
            router(2, true, &[SUBNET]),
        ];
        assert_eq!(primary_of(&choose_primaries(&previous, &c)), Some(2));
    }

    #[test]
    fn none_online_keeps_the_current_or_takes_the_lowest() {
        let c = [router(2, false, &[SUBNET]), router(1, false, &[SUBNET])];
        let previous = Primaries::from([(net(SUBNET), 2)]);
        assert_eq!(primary_of(&choose_primaries(&previous, &c)), Some(2));
        assert_eq!(
            primary_of(&choose_primaries(&Primaries::new(), &c)),
            Some(1)
        );
    }

    #[test]
    fn expired_nodes_serve_nothing() {
        let previous = Primaries::from([(net(SUBNET), 1)]);
        let mut expired = router(1, true, &[SUBNET]);
        expired.expired = true;
        let c = [expired.clone(), router(2, false, &[SUBNET])];
        assert_eq!(primary_of(&choose_primaries(&previous, &c)), Some(2));
        // The only server expired: no primary at all.
        assert!(choose_primaries(&previous, &[expired]).is_empty());
    }

    #[test]
    fn removed_approval_moves_or_drops_the_prefix() {
        let previous = Primaries::from([(net(SUBNET), 1), (net("10.2.0.0/24"), 1)]);
        // 1 no longer serves 10.1.0.0/24 (approval removed) but still 10.2.0.0/24.
        let c = [
            router(1, true, &["10.2.0.0/24"]),
            router(2, true, &[SUBNET]),
        ];
        let p = choose_primaries(&previous, &c);
        assert_eq!(primary_of(&p), Some(2));
        assert_eq!(p.get(&net("10.2.0.0/24")), Some(&1));
        // Nobody serves it: gone.
        let p = choose_primaries(&p, &[router(1, true, &[])]);
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn exit_routes_have_no_primary_and_prefixes_are_independent() {
        let c = [
            router(1, true, &["0.0.0.0/0", "::/0", "10.2.0.0/24"]),
            router(2, true, &["0.0.0.0/0", "::/0", SUBNET]),
        ];
        let p = choose_primaries(&Primaries::new(), &c);
        assert_eq!(
            p,
            Primaries::from([(net(SUBNET), 2), (net("10.2.0.0/24"), 1)])
        );
    }
}
