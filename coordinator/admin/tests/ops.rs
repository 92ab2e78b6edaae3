//! Every admin operation against a real SQLite file.

mod common;

use std::time::{Duration, SystemTime};

use common::{TempDir, add_node, nets, open};
use meshgate_coordinator_admin::ops;
use meshgate_coordinator_admin::{AdminError, CreateAuthKey};
use meshgate_coordinator_store::{MachinePublic, NodePublic, Registration, Store, StoreError};

#[test]
fn auth_keys_are_created_listed_without_secret_and_revoked() {
    let dir = TempDir::new("keys");
    let store = open(&dir);
    let now = SystemTime::now();
    let created = ops::create_auth_key(
        &store,
        &CreateAuthKey {
            user: "alice@example.com".into(),
            reusable: true,
            ephemeral: true,
            tags: vec!["tag:server".into()],
            expiry_seconds: Some(3600),
        },
        now,
    )
    .unwrap();
    assert!(created.secret.starts_with("mgkey-"));
    assert!(!format!("{created:?}").contains(&created.secret));
    let key = &created.key;
    assert_eq!(key.user, "alice@example.com");
    assert!(key.reusable && key.ephemeral && key.usable && !key.revoked && !key.expired);
    assert_eq!(key.tags, ["tag:server"]);
    let expires = key.expires.unwrap();
    let created_at = key.created;
    assert!((3599..=3601).contains(&(expires - created_at)), "{key:?}");

    let listed = ops::list_auth_keys(&store, now).unwrap();
    assert_eq!(listed, vec![key.clone()]);
    let json = serde_json::to_string(&listed).unwrap();
    assert!(!json.contains(&created.secret) && !json.contains("secret"));
    // Expired an hour later.
    let later = ops::list_auth_keys(&store, now + Duration::from_secs(3700)).unwrap();
    assert!(later[0].expired && !later[0].usable);

    let revoked = ops::revoke_auth_key(&store, key.id, now).unwrap();
    assert!(revoked.revoked && !revoked.usable);
    let err = store
        .register_with_auth_key(&Registration {
            auth_key: &created.secret,
            machine_key: MachinePublic::from_bytes([9; 32]),
            node_key: NodePublic::from_bytes([10; 32]),
            hostname: "late",
            requested_tags: &[],
            key_expiry: None,
            now,
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::AuthKeyRevoked(_)), "{err}");
    assert!(matches!(
        ops::revoke_auth_key(&store, 999, now),
        Err(AdminError::Store(StoreError::AuthKeyNotFound(999)))
    ));
}

#[test]
fn auth_key_requests_are_validated() {
    let dir = TempDir::new("keys-bad");
    let store = open(&dir);
    let now = SystemTime::now();
    let mut request = CreateAuthKey {
        user: "bob".into(),
        ..Default::default()
    };
    request.expiry_seconds = Some(0);
    assert!(matches!(
        ops::create_auth_key(&store, &request, now),
        Err(AdminError::ZeroExpiry)
    ));
    request.expiry_seconds = Some(u64::MAX);
    assert!(matches!(
        ops::create_auth_key(&store, &request, now),
        Err(AdminError::ExpiryTooLong)
    ));
    request.expiry_seconds = None;
    request.tags = vec!["server".into()];
    let err = ops::create_auth_key(&store, &request, now).unwrap_err();
    assert!(err.to_string().contains("tag:"), "{err}");
    request.tags.clear();
    request.user = String::new();
    assert!(ops::create_auth_key(&store, &request, now).is_err());
    assert!(ops::list_auth_keys(&store, now).unwrap().is_empty());
    // A single-use key is no longer usable once used.
    request.user = "bob".into();
    let created = ops::create_auth_key(&store, &request, now).unwrap();
    assert!(!created.key.reusable && created.key.usable);
    store
        .register_with_auth_key(&Registration {
            auth_key: &created.secret,
            machine_key: MachinePublic::from_bytes([1; 32]),
            node_key: NodePublic::from_bytes([2; 32]),
            hostname: "h",
            requested_tags: &[],
            key_expiry: None,
            now,
        })
        .unwrap();
    let listed = ops::list_auth_keys(&store, now).unwrap();
    assert_eq!(listed[0].used_count, 1);
    assert!(!listed[0].usable && listed[0].used_at.is_some());
}

#[test]
fn nodes_are_listed_found_expired_and_deleted() {
    let dir = TempDir::new("nodes");
    let store = open(&dir);
    let now = SystemTime::now();
    let a = add_node(&store, 1, "router", "alice", &["10.1.0.0/24"]);
    let b = add_node(&store, 2, "laptop", "bob", &[]);
    let nodes = ops::list_nodes(&store, now).unwrap();
    assert_eq!(nodes.iter().map(|n| n.id).collect::<Vec<_>>(), [a, b]);
    let router = &nodes[0];
    assert_eq!(
        (router.name.as_str(), router.user.as_str()),
        ("router", "alice")
    );
    assert!(router.addresses[0].is_ipv4() && router.addresses[1].is_ipv6());
    assert_eq!(router.advertised_routes, nets(&["10.1.0.0/24"]));
    assert!(router.approved_routes.is_empty() && !router.expired && !router.exit_node);

    assert_eq!(ops::find_node(&store, &a.to_string()).unwrap(), a);
    assert_eq!(ops::find_node(&store, "laptop").unwrap(), b);
    assert!(matches!(
        ops::find_node(&store, "nope"),
        Err(AdminError::NoSuchNode(_))
    ));

    let expired = ops::expire_node(&store, b, now).unwrap();
    assert!(expired.expired);
    assert!(ops::list_nodes(&store, now + Duration::from_secs(1)).unwrap()[1].expired);

    ops::delete_node(&store, a).unwrap();
    let left = ops::list_nodes(&store, now).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, b);
    assert!(matches!(
        ops::delete_node(&store, a),
        Err(AdminError::Store(StoreError::NodeNotFound(_)))
    ));
    assert!(matches!(
        ops::get_node(&store, a, now),
        Err(AdminError::NoSuchNode(_))
    ));
}

#[test]
fn a_hostname_two_nodes_share_is_ambiguous() {
    let dir = TempDir::new("ambiguous");
    let store = open(&dir);
    let a = add_node(&store, 1, "My Box", "alice", &[]);
    let b = add_node(&store, 2, "My Box", "alice", &[]);
    // Given names are DNS labels, deduplicated: they find each node...
    let names: Vec<String> = ops::list_nodes(&store, SystemTime::now())
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(ops::find_node(&store, &names[0]).unwrap(), a);
    assert_eq!(ops::find_node(&store, &names[1]).unwrap(), b);
    // ...the hostname they share does not.
    let err = ops::find_node(&store, "My Box").unwrap_err();
    assert!(
        matches!(err, AdminError::AmbiguousNode { count: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("node id"), "{err}");
}

#[test]
fn routes_are_approved_exactly_and_unapproved() {
    let dir = TempDir::new("routes");
    let store = open(&dir);
    let a = add_node(
        &store,
        1,
        "router",
        "alice",
        &["10.1.0.0/24", "10.2.0.0/24"],
    );
    let b = add_node(&store, 2, "laptop", "bob", &[]);
    let view = ops::approve_routes(&store, a, &nets(&["10.1.0.0/24"])).unwrap();
    assert_eq!(view.approved, nets(&["10.1.0.0/24"]));
    assert_eq!(view.served, nets(&["10.1.0.0/24"]));
    let listed = ops::list_routes(&store).unwrap();
    assert_eq!(listed.len(), 2, "every node listed: {listed:?}");
    assert_eq!(listed[0].node, a);
    assert_eq!(listed[0].advertised, nets(&["10.1.0.0/24", "10.2.0.0/24"]));
    assert_eq!(listed[1].node, b);
    assert!(listed[1].advertised.is_empty());

    // Not advertised: refused, nothing changed.
    let err = ops::approve_routes(&store, a, &nets(&["10.9.0.0/24"])).unwrap_err();
    assert!(err.to_string().contains("does not advertise"), "{err}");
    assert_eq!(store.routes(a).unwrap().approved, nets(&["10.1.0.0/24"]));
    // Un-approve: the empty set.
    let view = ops::approve_routes(&store, a, &[]).unwrap();
    assert!(view.approved.is_empty() && view.served.is_empty());
    assert!(matches!(
        ops::approve_routes(&store, 999, &[]),
        Err(AdminError::NoSuchNode(_))
    ));
}

#[test]
fn exit_routes_are_approved_as_a_pair_when_both_are_advertised() {
    let dir = TempDir::new("exit");
    let store = open(&dir);
    let now = SystemTime::now();
    let both = add_node(
        &store,
        1,
        "exit",
        "alice",
        &["0.0.0.0/0", "::/0", "10.0.0.0/8"],
    );
    let v4only = add_node(&store, 2, "exit4", "alice", &["0.0.0.0/0"]);

    let view = ops::approve_routes(&store, both, &nets(&["::/0"])).unwrap();
    assert_eq!(view.approved, nets(&["0.0.0.0/0", "::/0"]));
    assert!(ops::list_nodes(&store, now).unwrap()[0].exit_node);
    // Naming neither drops both.
    let view = ops::approve_routes(&store, both, &nets(&["10.0.0.0/8"])).unwrap();
    assert_eq!(view.approved, nets(&["10.0.0.0/8"]));
    assert!(!ops::list_nodes(&store, now).unwrap()[0].exit_node);

    let view = ops::approve_routes(&store, v4only, &nets(&["0.0.0.0/0"])).unwrap();
    assert_eq!(view.approved, nets(&["0.0.0.0/0"]));
    assert!(!ops::list_nodes(&store, now).unwrap()[1].exit_node);

    assert_eq!(
        ops::with_exit_pair(
            &nets(&["0.0.0.0/0", "0.0.0.0/0"]),
            &nets(&["0.0.0.0/0", "::/0"])
        ),
        nets(&["0.0.0.0/0", "::/0"])
    );
}

#[test]
fn prefixes_parse_and_empty_means_none() {
    assert!(ops::parse_prefixes("").unwrap().is_empty());
    assert_eq!(
        ops::parse_prefixes("10.0.0.0/8, 192.168.1.0/24").unwrap(),
        nets(&["10.0.0.0/8", "192.168.1.0/24"])
    );
    let err = ops::parse_prefixes("10.0.0.0/33").unwrap_err();
    assert!(matches!(err, AdminError::InvalidPrefix(ref s) if s == "10.0.0.0/33"));
}
