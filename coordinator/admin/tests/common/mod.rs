//! A temp SQLite store with registered nodes, for the admin tests.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::SystemTime;

use ipnet::IpNet;
use meshgate_coordinator_store::{
    MachinePublic, NewAuthKey, NodeId, NodePublic, Registration, SqliteStore, Store,
};

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mg-admin-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn open(dir: &TempDir) -> SqliteStore {
    SqliteStore::open(dir.0.join("coordinator.db")).unwrap()
}

/// Registers node number `i` as `hostname` for `user` with a fresh single-use key, advertising
/// `routes`.
pub fn add_node(store: &dyn Store, i: u8, hostname: &str, user: &str, routes: &[&str]) -> NodeId {
    let now = SystemTime::now();
    let user = store.create_user(user, now).unwrap();
    let secret = store
        .create_auth_key(&NewAuthKey {
            user: user.id,
            reusable: false,
            ephemeral: false,
            tags: Vec::new(),
            expires: None,
            now,
        })
        .unwrap()
        .secret;
    let node = store
        .register_with_auth_key(&Registration {
            auth_key: &secret,
            machine_key: MachinePublic::from_bytes([i; 32]),
            node_key: NodePublic::from_bytes([i.wrapping_add(100); 32]),
            hostname,
            requested_tags: &[],
            key_expiry: None,
            now,
        })
        .unwrap();
    let routes: Vec<IpNet> = routes.iter().map(|r| r.parse().unwrap()).collect();
    store.set_advertised_routes(node.id, &routes).unwrap();
    node.id
}

pub fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|r| r.parse().unwrap()).collect()
}
