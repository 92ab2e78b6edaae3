//! The admin operations over any [`Store`]: what the CLI commands and the HTTP API both call.
//! Each takes `now` where time matters, so tests fix it; each is a few store transactions.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use meshgate_coordinator_store::{
    AuthKey, AuthKeyId, NewAuthKey, Node, NodeId, NodeRoutes, Store, UserId,
};

use crate::error::{AdminError, Result};
use crate::views::{AuthKeyView, CreateAuthKey, CreatedAuthKeyView, NodeView, RoutesView, unix};

/// `0.0.0.0/0` and `::/0`: together they make an exit node.
pub fn exit_routes() -> [IpNet; 2] {
    [
        IpNet::new_assert(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        IpNet::new_assert(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    ]
}

fn user_names(store: &dyn Store) -> Result<BTreeMap<UserId, String>> {
    Ok(store
        .list_users()?
        .into_iter()
        .map(|u| (u.id, u.name))
        .collect())
}

fn node_view(node: Node, user: String, routes: Option<&NodeRoutes>, now: SystemTime) -> NodeView {
    let (advertised, approved, served) = match routes {
        Some(r) => (r.advertised.clone(), r.approved.clone(), r.served()),
        None => (Vec::new(), Vec::new(), Vec::new()),
    };
    let exit_node = exit_routes().iter().all(|p| served.contains(p));
    NodeView {
        id: node.id,
        expired: node.is_expired(now),
        name: node.given_name,
        hostname: node.hostname,
        user,
        addresses: vec![IpAddr::V4(node.ipv4), IpAddr::V6(node.ipv6)],
        tags: node.tags,
        online: node.online,
        last_seen: node.last_seen.map(unix),
        key_expiry: node.key_expiry.map(unix),
        ephemeral: node.ephemeral,
        endpoints: node.endpoints.iter().map(ToString::to_string).collect(),
        advertised_routes: advertised,
        approved_routes: approved,
        served_routes: served,
        exit_node,
    }
}

/// Every node, by id.
pub fn list_nodes(store: &dyn Store, now: SystemTime) -> Result<Vec<NodeView>> {
    let users = user_names(store)?;
    let routes: BTreeMap<NodeId, NodeRoutes> = store
        .list_routes()?
        .into_iter()
        .map(|r| (r.node, r))
        .collect();
    let mut nodes = store.list_nodes()?;
    nodes.sort_by_key(|n| n.id);
    Ok(nodes
        .into_iter()
        .map(|n| {
            let user = users.get(&n.user).cloned().unwrap_or_default();
            let id = n.id;
            node_view(n, user, routes.get(&id), now)
        })
        .collect())
}

/// One node's view.
pub fn get_node(store: &dyn Store, id: NodeId, now: SystemTime) -> Result<NodeView> {
    let node = store
        .node(id)?
        .ok_or_else(|| AdminError::NoSuchNode(id.to_string()))?;
    node_view_of(store, node, now)
}

fn node_view_of(store: &dyn Store, node: Node, now: SystemTime) -> Result<NodeView> {
    let user = store.user(node.user)?.map(|u| u.name).unwrap_or_default();
    let routes = store.routes(node.id)?;
    Ok(node_view(node, user, Some(&routes), now))
}

/// A node by numeric id, given name or hostname (in that order; a name two nodes share is
/// refused).
pub fn find_node(store: &dyn Store, wanted: &str) -> Result<NodeId> {
    let nodes = store.list_nodes()?;
    if let Ok(id) = wanted.parse::<NodeId>()
        && nodes.iter().any(|n| n.id == id)
    {
        return Ok(id);
    }
    let by_given: Vec<&Node> = nodes.iter().filter(|n| n.given_name == wanted).collect();
    let matches = if by_given.is_empty() {
        nodes.iter().filter(|n| n.hostname == wanted).collect()
    } else {
        by_given
    };
    match matches.as_slice() {
        [node] => Ok(node.id),
        [] => Err(AdminError::NoSuchNode(wanted.to_owned())),
        _ => Err(AdminError::AmbiguousNode {
            name: wanted.to_owned(),
            count: matches.len(),
        }),
    }
}

/// Removes a node: its peers drop it once the server is told (the hook / notify).
pub fn delete_node(store: &dyn Store, id: NodeId) -> Result<()> {
    Ok(store.delete_node(id)?)
}

/// Expires a node's key now (as a logout does): it must re-register with an auth key.
pub fn expire_node(store: &dyn Store, id: NodeId, now: SystemTime) -> Result<NodeView> {
    let node = store.expire_node(id, now)?;
    node_view_of(store, node, now)
}

/// Every node's routes, by node id; nodes that never advertised or had anything approved are
/// listed with empty sets.
pub fn list_routes(store: &dyn Store) -> Result<Vec<RoutesView>> {
    let mut routes: BTreeMap<NodeId, NodeRoutes> = store
        .list_routes()?
        .into_iter()
        .map(|r| (r.node, r))
        .collect();
    let mut nodes = store.list_nodes()?;
    nodes.sort_by_key(|n| n.id);
    Ok(nodes
        .into_iter()
        .map(|n| {
            let r = routes.remove(&n.id).unwrap_or_default();
            routes_view(n.id, n.given_name, r)
        })
        .collect())
}

fn routes_view(node: NodeId, name: String, r: NodeRoutes) -> RoutesView {
    RoutesView {
        node,
        name,
        served: r.served(),
        advertised: r.advertised,
        approved: r.approved,
    }
}

/// Sets the node's approved routes to exactly `prefixes` (empty: none). Only advertised
/// prefixes can be approved. Exit routes go in pairs, as in Tailscale: naming `0.0.0.0/0` or
/// `::/0` approves both when the node advertises both (and only the one named when it
/// advertises only that one).
pub fn approve_routes(store: &dyn Store, id: NodeId, prefixes: &[IpNet]) -> Result<RoutesView> {
    let node = store
        .node(id)?
        .ok_or_else(|| AdminError::NoSuchNode(id.to_string()))?;
    let current = store.routes(id)?;
    let wanted = with_exit_pair(prefixes, &current.advertised);
    store.approve_routes(id, &wanted)?;
    Ok(routes_view(id, node.given_name, store.routes(id)?))
}

/// `prefixes`, sorted and deduplicated, plus the other exit route when one is named and the
/// node advertises both.
pub fn with_exit_pair(prefixes: &[IpNet], advertised: &[IpNet]) -> Vec<IpNet> {
    let mut out = prefixes.to_vec();
    let exit = exit_routes();
    let both_advertised = exit.iter().all(|p| advertised.contains(p));
    if both_advertised && exit.iter().any(|p| out.contains(p)) {
        out.extend(exit);
    }
    out.sort();
    out.dedup();
    out
}

/// Comma-separated prefixes (`10.0.0.0/8, 192.168.1.0/24`); empty text is the empty list.
pub fn parse_prefixes(text: &str) -> Result<Vec<IpNet>> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .map_err(|_| AdminError::InvalidPrefix(s.to_owned()))
        })
        .collect()
}

/// Creates a pre-auth key for `request.user` (creating the user if new). The returned secret
/// is shown once; the store keeps only its digest.
pub fn create_auth_key(
    store: &dyn Store,
    request: &CreateAuthKey,
    now: SystemTime,
) -> Result<CreatedAuthKeyView> {
    let expires = match request.expiry_seconds {
        None => None,
        Some(0) => return Err(AdminError::ZeroExpiry),
        Some(secs) => Some(
            now.checked_add(Duration::from_secs(secs))
                .filter(|t| unix(*t) < i64::MAX as u64)
                .ok_or(AdminError::ExpiryTooLong)?,
        ),
    };
    let user = store.create_user(&request.user, now)?;
    let created = store.create_auth_key(&NewAuthKey {
        user: user.id,
        reusable: request.reusable,
        ephemeral: request.ephemeral,
        tags: request.tags.clone(),
        expires,
        now,
    })?;
    Ok(CreatedAuthKeyView {
        key: auth_key_view(created.key, user.name, now),
        secret: created.secret,
    })
}

fn auth_key_view(key: AuthKey, user: String, now: SystemTime) -> AuthKeyView {
    let expired = key.is_expired(now);
    AuthKeyView {
        id: key.id,
        user_id: key.user,
        user,
        usable: !key.revoked && !expired && (key.reusable || key.used_count == 0),
        reusable: key.reusable,
        ephemeral: key.ephemeral,
        tags: key.tags,
        created: unix(key.created),
        expires: key.expires.map(unix),
        expired,
        used_count: key.used_count,
        used_at: key.used_at.map(unix),
        revoked: key.revoked,
    }
}

/// Every pre-auth key (never a secret), by id.
pub fn list_auth_keys(store: &dyn Store, now: SystemTime) -> Result<Vec<AuthKeyView>> {
    let users = user_names(store)?;
    let mut keys = store.list_auth_keys()?;
    keys.sort_by_key(|k| k.id);
    Ok(keys
        .into_iter()
        .map(|k| {
            let user = users.get(&k.user).cloned().unwrap_or_default();
            auth_key_view(k, user, now)
        })
        .collect())
}

/// Revokes a pre-auth key: no further registrations with it (nodes that joined stay).
pub fn revoke_auth_key(store: &dyn Store, id: AuthKeyId, now: SystemTime) -> Result<AuthKeyView> {
    store.revoke_auth_key(id)?;
    list_auth_keys(store, now)?
        .into_iter()
        .find(|k| k.id == id)
        .ok_or(AdminError::Store(
            meshgate_coordinator_store::StoreError::AuthKeyNotFound(id),
        ))
}
