//! The admin commands: each opens the store, calls the shared operation
//! (`meshgate_coordinator_admin::ops`) and prints a table or, with `--json`, the view as JSON.

use std::path::Path;
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use meshgate_coordinator_admin::{CreateAuthKey, ops};

use super::{BoxError, open};

pub fn authkey_create(
    db: &Path,
    user: String,
    reusable: bool,
    ephemeral: bool,
    tags: Vec<String>,
    expiry: Option<Duration>,
) -> Result<(), BoxError> {
    let store = open(db)?;
    let request = CreateAuthKey {
        user,
        reusable,
        ephemeral,
        tags,
        // Sub-second parts would be floored by the store anyway; round up so `1ms` is not 0.
        expiry_seconds: expiry.map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0)),
    };
    let created = ops::create_auth_key(&store, &request, SystemTime::now())?;
    println!("{}", created.secret);
    Ok(())
}

pub fn nodes_list(db: &Path, json: bool) -> Result<(), BoxError> {
    let store = open(db)?;
    let views = ops::list_nodes(&store, SystemTime::now())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&views)?);
        return Ok(());
    }
    println!(
        "{:<5} {:<20} {:<20} {:<16} {:<40} {:<8} ENDPOINTS",
        "ID", "NAME", "USER", "IPV4", "IPV6", "ONLINE"
    );
    let address = |v: &meshgate_coordinator_admin::NodeView, i: usize| {
        v.addresses
            .get(i)
            .map_or_else(|| "-".to_owned(), ToString::to_string)
    };
    for v in &views {
        let mut state = if v.online { "yes" } else { "no" }.to_owned();
        if v.expired {
            state.push_str(",expired");
        }
        println!(
            "{:<5} {:<20} {:<20} {:<16} {:<40} {:<8} {}",
            v.id,
            v.name,
            v.user,
            address(v, 0),
            address(v, 1),
            state,
            if v.endpoints.is_empty() {
                "-".to_owned()
            } else {
                v.endpoints.join(",")
            }
        );
    }
    Ok(())
}

fn list(v: &[IpNet], none: &str) -> String {
    if v.is_empty() {
        none.to_owned()
    } else {
        v.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

pub fn routes_list(db: &Path, json: bool) -> Result<(), BoxError> {
    let store = open(db)?;
    let views = ops::list_routes(&store)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&views)?);
        return Ok(());
    }
    println!(
        "{:<5} {:<20} {:<32} {:<32} SERVED",
        "ID", "NAME", "ADVERTISED", "APPROVED"
    );
    for v in &views {
        println!(
            "{:<5} {:<20} {:<32} {:<32} {}",
            v.node,
            v.name,
            list(&v.advertised, "-"),
            list(&v.approved, "-"),
            list(&v.served, "-")
        );
    }
    Ok(())
}

pub fn routes_approve(db: &Path, node: &str, cidrs: &str) -> Result<(), BoxError> {
    let store = open(db)?;
    let id = ops::find_node(&store, node)?;
    let prefixes = ops::parse_prefixes(cidrs)?;
    let view = ops::approve_routes(&store, id, &prefixes)?;
    println!(
        "node {id}: approved {}; served to peers: {} (a running coordinator sends it within its --poll-every)",
        list(&view.approved, "nothing"),
        list(&view.served, "none"),
    );
    Ok(())
}

// The commands below have no clap subcommands yet (cli.rs is not this module's to change);
// each is a one-line match arm once `authkey list|revoke` and `nodes delete|expire` exist.

pub fn authkey_list(db: &Path, json: bool) -> Result<(), BoxError> {
    let store = open(db)?;
    let keys = ops::list_auth_keys(&store, SystemTime::now())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&keys)?);
        return Ok(());
    }
    println!(
        "{:<5} {:<24} {:<9} {:<9} {:<6} {:<8} TAGS",
        "ID", "USER", "REUSABLE", "EPHEMERAL", "USED", "STATE"
    );
    for k in &keys {
        let state = if k.revoked {
            "revoked"
        } else if k.expired {
            "expired"
        } else if k.usable {
            "usable"
        } else {
            "used"
        };
        println!(
            "{:<5} {:<24} {:<9} {:<9} {:<6} {:<8} {}",
            k.id,
            k.user,
            k.reusable,
            k.ephemeral,
            k.used_count,
            state,
            if k.tags.is_empty() {
                "-".to_owned()
            } else {
                k.tags.join(",")
            }
        );
    }
    Ok(())
}

pub fn authkey_revoke(db: &Path, id: i64) -> Result<(), BoxError> {
    let store = open(db)?;
    ops::revoke_auth_key(&store, id, SystemTime::now())?;
    println!("pre-auth key {id} revoked (nodes that joined with it stay)");
    Ok(())
}

pub fn nodes_delete(db: &Path, node: &str) -> Result<(), BoxError> {
    let store = open(db)?;
    let id = ops::find_node(&store, node)?;
    ops::delete_node(&store, id)?;
    println!("node {id} deleted (a running coordinator tells its peers within its --poll-every)");
    Ok(())
}

pub fn nodes_expire(db: &Path, node: &str) -> Result<(), BoxError> {
    let store = open(db)?;
    let id = ops::find_node(&store, node)?;
    ops::expire_node(&store, id, SystemTime::now())?;
    println!("node {id}: key expired; it must log in again with an auth key");
    Ok(())
}
