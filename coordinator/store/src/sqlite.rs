//! [`Store`] over one SQLite file (WAL mode, foreign keys on).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use meshgate_tailcfg::{DiscoPublic, MachinePublic, NodeId, NodePublic, UserId};
use rand_core::{OsRng, RngCore};
use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::alloc::{self, CGNAT};
use crate::names::{candidate, normalize_tags, sanitize_hostname};
use crate::{
    AUTH_KEY_PREFIX, AuthKey, AuthKeyId, CreatedAuthKey, NewAuthKey, Node, NodeRoutes,
    Registration, Result, Store, StoreError, User, schema,
};

/// How long a writer waits for another connection's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Random bytes in a pre-auth key secret (192 bits).
const SECRET_BYTES: usize = 24;

/// The SQLite implementation of [`Store`]: one connection behind a mutex (SQLite serializes
/// writers anyway). Several `SqliteStore`s, even in several processes, may share one file.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, switches it to WAL mode, turns foreign
    /// keys on and applies pending migrations in one transaction. A database written by a newer
    /// schema is refused with [`StoreError::SchemaTooNew`] before anything is changed.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        schema::check_version(&conn)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::NotWal(mode));
        }
        conn.pragma_update(None, "foreign_keys", true)?;
        let fk: bool = conn.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?;
        if !fk {
            return Err(StoreError::Corrupt(
                "SQLite refused to enable foreign keys".into(),
            ));
        }
        schema::migrate(&mut conn)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<i64> {
        schema::user_version(&self.lock())
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic inside a transaction rolled it back on unwind: the connection is sound.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` in an IMMEDIATE transaction (write lock taken up front), committing on success.
    fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Runs `f` in a read transaction (one consistent snapshot).
    fn read<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
        f(&tx)
    }
}

// ---- value conversions ----

fn to_unix(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => {
            let d = e.duration();
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            -secs - i64::from(d.subsec_nanos() > 0)
        }
    }
}

fn from_unix(s: i64) -> SystemTime {
    if s >= 0 {
        UNIX_EPOCH + Duration::from_secs(s as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(s.unsigned_abs())
    }
}

fn key_bytes(b: &[u8], what: &str) -> Result<[u8; 32]> {
    b.try_into()
        .map_err(|_| StoreError::Corrupt(format!("{what} is {} bytes, not 32", b.len())))
}

fn json_list(v: &[String]) -> String {
    serde_json::to_string(v).expect("a list of strings serializes")
}

fn parse_json(s: &str, what: &str) -> Result<Vec<String>> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

// ---- rows ----

const USER_COLS: &str = "id, name, created";

fn user_row(r: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: r.get(0)?,
        name: r.get(1)?,
        created: from_unix(r.get(2)?),
    })
}

const KEY_COLS: &str =
    "id, user_id, reusable, ephemeral, tags, expires, created, used_count, used_at, revoked, hash";

struct KeyRow {
    key: AuthKey,
    tags: String,
    hash: Vec<u8>,
}

fn key_row(r: &Row<'_>) -> rusqlite::Result<KeyRow> {
    Ok(KeyRow {
        key: AuthKey {
            id: r.get(0)?,
            user: r.get(1)?,
            reusable: r.get(2)?,
            ephemeral: r.get(3)?,
            tags: Vec::new(),
            expires: r.get::<_, Option<i64>>(5)?.map(from_unix),
            created: from_unix(r.get(6)?),
            used_count: u64::try_from(r.get::<_, i64>(7)?).unwrap_or(0),
            used_at: r.get::<_, Option<i64>>(8)?.map(from_unix),
            revoked: r.get(9)?,
        },
        tags: r.get(4)?,
        hash: r.get(10)?,
    })
}

impl KeyRow {
    fn finish(self) -> Result<(AuthKey, Vec<u8>)> {
        let mut key = self.key;
        key.tags = parse_json(&self.tags, "pre-auth key tags")?;
        Ok((key, self.hash))
    }
}

const NODE_COLS: &str = "id, stable_id, machine_key, node_key, disco_key, user_id, auth_key_id, \
     tags, hostname, given_name, ipv4, ipv6, key_expiry, ephemeral, created, last_seen, online, \
     endpoints, hostinfo";

/// A node row before fallible decoding.
struct NodeRow {
    id: NodeId,
    stable_id: String,
    machine_key: Vec<u8>,
    node_key: Vec<u8>,
    disco_key: Option<Vec<u8>>,
    user: UserId,
    auth_key: Option<AuthKeyId>,
    tags: String,
    hostname: String,
    given_name: String,
    ipv4: i64,
    ipv6: String,
    key_expiry: Option<i64>,
    ephemeral: bool,
    created: i64,
    last_seen: Option<i64>,
    online: bool,
    endpoints: String,
    hostinfo: Option<String>,
}

fn node_row(r: &Row<'_>) -> rusqlite::Result<NodeRow> {
    Ok(NodeRow {
        id: r.get(0)?,
        stable_id: r.get(1)?,
        machine_key: r.get(2)?,
        node_key: r.get(3)?,
        disco_key: r.get(4)?,
        user: r.get(5)?,
        auth_key: r.get(6)?,
        tags: r.get(7)?,
        hostname: r.get(8)?,
        given_name: r.get(9)?,
        ipv4: r.get(10)?,
        ipv6: r.get(11)?,
        key_expiry: r.get(12)?,
        ephemeral: r.get(13)?,
        created: r.get(14)?,
        last_seen: r.get(15)?,
        online: r.get(16)?,
        endpoints: r.get(17)?,
        hostinfo: r.get(18)?,
    })
}

impl NodeRow {
    fn finish(self) -> Result<Node> {
        let ipv4 = u32::try_from(self.ipv4)
            .map_err(|_| StoreError::Corrupt(format!("node {} ipv4 {}", self.id, self.ipv4)))?;
        let ipv6: Ipv6Addr = self
            .ipv6
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("node {} ipv6 {:?}", self.id, self.ipv6)))?;
        let endpoints = parse_json(&self.endpoints, "node endpoints")?;
        let endpoints = endpoints
            .iter()
            .map(|e| {
                e.parse::<SocketAddr>()
                    .map_err(|_| StoreError::Corrupt(format!("node {} endpoint {e:?}", self.id)))
            })
            .collect::<Result<_>>()?;
        Ok(Node {
            id: self.id,
            stable_id: self.stable_id,
            machine_key: MachinePublic::from_bytes(key_bytes(&self.machine_key, "machine key")?),
            node_key: NodePublic::from_bytes(key_bytes(&self.node_key, "node key")?),
            disco_key: match self.disco_key {
                Some(k) => Some(DiscoPublic::from_bytes(key_bytes(&k, "disco key")?)),
                None => None,
            },
            user: self.user,
            auth_key: self.auth_key,
            tags: parse_json(&self.tags, "node tags")?,
            hostname: self.hostname,
            given_name: self.given_name,
            ipv4: Ipv4Addr::from(ipv4),
            ipv6,
            key_expiry: self.key_expiry.map(from_unix),
            ephemeral: self.ephemeral,
            created: from_unix(self.created),
            last_seen: self.last_seen.map(from_unix),
            online: self.online,
            endpoints,
            hostinfo: self.hostinfo,
        })
    }
}

// ---- queries shared by several operations ----

fn user_by(tx: &Transaction<'_>, clause: &str, arg: impl rusqlite::ToSql) -> Result<Option<User>> {
    let sql = format!("SELECT {USER_COLS} FROM users WHERE {clause}");
    Ok(tx.query_row(&sql, [arg], user_row).optional()?)
}

fn node_by(tx: &Transaction<'_>, clause: &str, arg: impl rusqlite::ToSql) -> Result<Option<Node>> {
    let sql = format!("SELECT {NODE_COLS} FROM nodes WHERE {clause}");
    tx.query_row(&sql, [arg], node_row)
        .optional()?
        .map(NodeRow::finish)
        .transpose()
}

fn node_by_id(tx: &Transaction<'_>, id: NodeId) -> Result<Node> {
    node_by(tx, "id = ?1", id)?.ok_or(StoreError::NodeNotFound(id))
}

/// Runs an UPDATE of one node, mapping "no row" to [`StoreError::NodeNotFound`].
fn update_node(
    tx: &Transaction<'_>,
    id: NodeId,
    set: &str,
    value: impl rusqlite::ToSql,
) -> Result<()> {
    let n = tx.execute(
        &format!("UPDATE nodes SET {set} WHERE id = ?2"),
        params![value, id],
    )?;
    if n == 0 {
        return Err(StoreError::NodeNotFound(id));
    }
    Ok(())
}

fn check_node_exists(tx: &Transaction<'_>, id: NodeId) -> Result<()> {
    let found = tx
        .query_row("SELECT 1 FROM nodes WHERE id = ?1", [id], |_| Ok(()))
        .optional()?;
    found.ok_or(StoreError::NodeNotFound(id))
}

fn allocate_ipv4(tx: &Transaction<'_>) -> Result<Ipv4Addr> {
    let cursor: i64 = tx.query_row("SELECT next_v4 FROM ip_allocator WHERE id = 1", [], |r| {
        r.get(0)
    })?;
    let cursor =
        u32::try_from(cursor.clamp(0, i64::from(u32::MAX))).expect("clamped into u32 range");
    let mut in_use = tx.prepare("SELECT 1 FROM nodes WHERE ipv4 = ?1")?;
    let picked = alloc::next_v4(
        CGNAT,
        cursor,
        |a| Ok::<_, StoreError>(in_use.exists([i64::from(a)])?),
        || {
            let mut q = tx.prepare("SELECT ipv4 FROM nodes ORDER BY ipv4")?;
            let rows = q.query_map([], |r| r.get::<_, i64>(0))?;
            let mut used = Vec::new();
            for r in rows {
                used.extend(u32::try_from(r?).ok());
            }
            Ok(used)
        },
    )?;
    let (addr, next) = picked.ok_or(StoreError::AddressesExhausted(Ipv4Addr::from(CGNAT.last)))?;
    tx.execute(
        "UPDATE ip_allocator SET next_v4 = ?1 WHERE id = 1",
        [i64::from(next)],
    )?;
    Ok(Ipv4Addr::from(addr))
}

fn unique_given_name(tx: &Transaction<'_>, hostname: &str) -> Result<String> {
    let base = sanitize_hostname(hostname);
    let mut taken = tx.prepare("SELECT 1 FROM nodes WHERE given_name = ?1")?;
    for n in 0.. {
        let name = candidate(&base, n);
        if !taken.exists([&name])? {
            return Ok(name);
        }
    }
    unreachable!("u32 candidates run out only after 4 billion nodes of one name")
}

fn routes_of(tx: &Transaction<'_>, id: NodeId) -> Result<NodeRoutes> {
    let mut q = tx.prepare("SELECT prefix, advertised, approved FROM routes WHERE node_id = ?1")?;
    let rows = q.query_map([id], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, bool>(1)?,
            r.get::<_, bool>(2)?,
        ))
    })?;
    let mut out = NodeRoutes {
        node: id,
        ..NodeRoutes::default()
    };
    for row in rows {
        let (prefix, advertised, approved) = row?;
        let p: IpNet = prefix
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("node {id} route {prefix:?}")))?;
        if advertised {
            out.advertised.push(p);
        }
        if approved {
            out.approved.push(p);
        }
    }
    out.advertised.sort();
    out.approved.sort();
    Ok(out)
}

fn canonical_routes(prefixes: &[IpNet]) -> Result<Vec<IpNet>> {
    let mut out = Vec::with_capacity(prefixes.len());
    for p in prefixes {
        if p.trunc() != *p {
            return Err(StoreError::InvalidRoute(*p));
        }
        out.push(*p);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Sets `column` (advertised or approved) to exactly `prefixes` for one node.
fn set_route_flag(
    tx: &Transaction<'_>,
    id: NodeId,
    column: &str,
    prefixes: &[IpNet],
) -> Result<()> {
    tx.execute(
        &format!("UPDATE routes SET {column} = 0 WHERE node_id = ?1"),
        [id],
    )?;
    let mut up = tx.prepare(
        "INSERT INTO routes (node_id, prefix, advertised, approved) VALUES (?1, ?2, 0, 0)
         ON CONFLICT (node_id, prefix) DO NOTHING",
    )?;
    let mut set = tx.prepare(&format!(
        "UPDATE routes SET {column} = 1 WHERE node_id = ?1 AND prefix = ?2"
    ))?;
    for p in prefixes {
        let text = p.to_string();
        up.execute(params![id, text])?;
        set.execute(params![id, text])?;
    }
    tx.execute(
        "DELETE FROM routes WHERE node_id = ?1 AND advertised = 0 AND approved = 0",
        [id],
    )?;
    Ok(())
}

impl Store for SqliteStore {
    fn create_user(&self, name: &str, now: SystemTime) -> Result<User> {
        if name.is_empty() || name.len() > 255 {
            return Err(StoreError::InvalidUserName(name.to_owned()));
        }
        self.write(|tx| {
            tx.execute(
                "INSERT INTO users (name, created) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
                params![name, to_unix(now)],
            )?;
            user_by(tx, "name = ?1", name)?
                .ok_or_else(|| StoreError::Corrupt(format!("user {name:?} vanished")))
        })
    }

    fn user(&self, id: UserId) -> Result<Option<User>> {
        self.read(|tx| user_by(tx, "id = ?1", id))
    }

    fn user_by_name(&self, name: &str) -> Result<Option<User>> {
        self.read(|tx| user_by(tx, "name = ?1", name))
    }

    fn list_users(&self) -> Result<Vec<User>> {
        self.read(|tx| {
            let mut q = tx.prepare(&format!("SELECT {USER_COLS} FROM users ORDER BY id"))?;
            let rows = q.query_map([], user_row)?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    fn create_auth_key(&self, new: &NewAuthKey) -> Result<CreatedAuthKey> {
        let tags = normalize_tags(&new.tags)?;
        let secret = format!("{AUTH_KEY_PREFIX}{}", random_hex(SECRET_BYTES));
        let hash = digest(&secret);
        self.write(|tx| {
            if user_by(tx, "id = ?1", new.user)?.is_none() {
                return Err(StoreError::UserNotFound(new.user));
            }
            tx.execute(
                "INSERT INTO preauth_keys (hash, user_id, reusable, ephemeral, tags, expires, created)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    &hash[..],
                    new.user,
                    new.reusable,
                    new.ephemeral,
                    json_list(&tags),
                    new.expires.map(to_unix),
                    to_unix(new.now),
                ],
            )?;
            let id = tx.last_insert_rowid();
            let key = tx
                .query_row(
                    &format!("SELECT {KEY_COLS} FROM preauth_keys WHERE id = ?1"),
                    [id],
                    key_row,
                )?
                .finish()?
                .0;
            Ok(CreatedAuthKey {
                key,
                secret: secret.clone(),
            })
        })
    }

    fn list_auth_keys(&self) -> Result<Vec<AuthKey>> {
        self.read(|tx| {
            let mut q = tx.prepare(&format!("SELECT {KEY_COLS} FROM preauth_keys ORDER BY id"))?;
            let rows = q.query_map([], key_row)?;
            rows.map(|r| Ok(r?.finish()?.0)).collect()
        })
    }

    fn revoke_auth_key(&self, id: AuthKeyId) -> Result<()> {
        self.write(|tx| {
            let n = tx.execute("UPDATE preauth_keys SET revoked = 1 WHERE id = ?1", [id])?;
            if n == 0 {
                return Err(StoreError::AuthKeyNotFound(id));
            }
            Ok(())
        })
    }

    fn register_with_auth_key(&self, reg: &Registration<'_>) -> Result<Node> {
        let computed = digest(reg.auth_key);
        let requested = normalize_tags(reg.requested_tags)?;
        self.write(|tx| {
            // 1. Validate everything; nothing is written until all checks pass.
            let row = if reg.auth_key.starts_with(AUTH_KEY_PREFIX) {
                tx.query_row(
                    &format!("SELECT {KEY_COLS} FROM preauth_keys WHERE hash = ?1"),
                    [&computed[..]],
                    key_row,
                )
                .optional()?
            } else {
                None
            };
            let (key, stored) = row.ok_or(StoreError::UnknownAuthKey)?.finish()?;
            // The lookup was by digest of a 192-bit random secret, which leaks nothing useful
            // through timing; compare in constant time all the same.
            if !bool::from(stored.as_slice().ct_eq(&computed[..])) {
                return Err(StoreError::UnknownAuthKey);
            }
            if key.revoked {
                return Err(StoreError::AuthKeyRevoked(key.id));
            }
            if key.is_expired(reg.now) {
                return Err(StoreError::AuthKeyExpired(key.id));
            }
            let existing = node_by(tx, "machine_key = ?1", &reg.machine_key.as_bytes()[..])?;
            let same_machine_same_key = existing
                .as_ref()
                .is_some_and(|n| n.auth_key == Some(key.id));
            if !key.reusable && key.used_count > 0 && !same_machine_same_key {
                return Err(StoreError::AuthKeyUsed(key.id));
            }
            for tag in &requested {
                if !key.tags.contains(tag) {
                    return Err(StoreError::TagNotPermitted {
                        tag: tag.clone(),
                        key: key.id,
                    });
                }
            }
            let tags = if requested.is_empty() {
                key.tags.clone()
            } else {
                requested
            };
            if let Some(holder) = node_by(tx, "node_key = ?1", &reg.node_key.as_bytes()[..])?
                && existing.as_ref().is_none_or(|n| n.id != holder.id)
            {
                return Err(StoreError::NodeKeyInUse(
                    reg.node_key.to_string(),
                    holder.id,
                ));
            }

            // 2. Write.
            let now = to_unix(reg.now);
            tx.execute(
                "UPDATE preauth_keys SET used_count = used_count + 1, used_at = ?1 WHERE id = ?2",
                params![now, key.id],
            )?;
            let expiry = reg.key_expiry.map(to_unix);
            let id = match existing {
                Some(node) => {
                    tx.execute(
                        "UPDATE nodes SET node_key = ?1, key_expiry = ?2, tags = ?3, user_id = ?4,
                         ephemeral = ?5, auth_key_id = ?6, hostname = ?7 WHERE id = ?8",
                        params![
                            &reg.node_key.as_bytes()[..],
                            expiry,
                            json_list(&tags),
                            key.user,
                            key.ephemeral,
                            key.id,
                            reg.hostname,
                            node.id,
                        ],
                    )?;
                    node.id
                }
                None => {
                    let ipv4 = allocate_ipv4(tx)?;
                    let ipv6 = alloc::v6_for_v4(ipv4);
                    let given_name = unique_given_name(tx, reg.hostname)?;
                    tx.execute(
                        "INSERT INTO nodes (stable_id, machine_key, node_key, user_id, auth_key_id,
                             tags, hostname, given_name, ipv4, ipv6, key_expiry, ephemeral, created)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                        params![
                            format!("n{}", random_hex(8)),
                            &reg.machine_key.as_bytes()[..],
                            &reg.node_key.as_bytes()[..],
                            key.user,
                            key.id,
                            json_list(&tags),
                            reg.hostname,
                            given_name,
                            i64::from(u32::from(ipv4)),
                            ipv6.to_string(),
                            expiry,
                            key.ephemeral,
                            now,
                        ],
                    )?;
                    tx.last_insert_rowid()
                }
            };
            node_by_id(tx, id)
        })
    }

    fn node(&self, id: NodeId) -> Result<Option<Node>> {
        self.read(|tx| node_by(tx, "id = ?1", id))
    }

    fn node_by_machine_key(&self, key: &MachinePublic) -> Result<Option<Node>> {
        self.read(|tx| node_by(tx, "machine_key = ?1", &key.as_bytes()[..]))
    }

    fn node_by_node_key(&self, key: &NodePublic) -> Result<Option<Node>> {
        self.read(|tx| node_by(tx, "node_key = ?1", &key.as_bytes()[..]))
    }

    fn list_nodes(&self) -> Result<Vec<Node>> {
        self.read(|tx| {
            let mut q = tx.prepare(&format!("SELECT {NODE_COLS} FROM nodes ORDER BY id"))?;
            let rows = q.query_map([], node_row)?;
            rows.map(|r| r?.finish()).collect()
        })
    }

    fn set_node_key(
        &self,
        id: NodeId,
        key: &NodePublic,
        expiry: Option<SystemTime>,
    ) -> Result<Node> {
        self.write(|tx| {
            if let Some(holder) = node_by(tx, "node_key = ?1", &key.as_bytes()[..])?
                && holder.id != id
            {
                return Err(StoreError::NodeKeyInUse(key.to_string(), holder.id));
            }
            let n = tx.execute(
                "UPDATE nodes SET node_key = ?1, key_expiry = ?2 WHERE id = ?3",
                params![&key.as_bytes()[..], expiry.map(to_unix), id],
            )?;
            if n == 0 {
                return Err(StoreError::NodeNotFound(id));
            }
            node_by_id(tx, id)
        })
    }

    fn expire_node(&self, id: NodeId, now: SystemTime) -> Result<Node> {
        self.write(|tx| {
            update_node(tx, id, "key_expiry = ?1", to_unix(now))?;
            node_by_id(tx, id)
        })
    }

    fn delete_node(&self, id: NodeId) -> Result<()> {
        self.write(|tx| {
            let n = tx.execute("DELETE FROM nodes WHERE id = ?1", [id])?;
            if n == 0 {
                return Err(StoreError::NodeNotFound(id));
            }
            Ok(())
        })
    }

    fn delete_expired_ephemeral(&self, now: SystemTime, idle: Duration) -> Result<Vec<NodeId>> {
        // Times are whole seconds: rounding the idle time up and comparing strictly means a
        // node goes only after at least `idle` has really passed, never one just registered.
        let idle_secs = idle.as_secs() + u64::from(idle.subsec_nanos() > 0);
        let cutoff = to_unix(now).saturating_sub(i64::try_from(idle_secs).unwrap_or(i64::MAX));
        self.write(|tx| {
            let mut q = tx.prepare(
                "DELETE FROM nodes WHERE ephemeral = 1 AND online = 0
                   AND COALESCE(last_seen, created) < ?1
                 RETURNING id",
            )?;
            let mut ids = q
                .query_map([cutoff], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<NodeId>>>()?;
            ids.sort_unstable();
            Ok(ids)
        })
    }

    fn set_endpoints(&self, id: NodeId, endpoints: &[SocketAddr]) -> Result<()> {
        let text: Vec<String> = endpoints.iter().map(ToString::to_string).collect();
        self.write(|tx| update_node(tx, id, "endpoints = ?1", json_list(&text)))
    }

    fn set_hostinfo(&self, id: NodeId, hostinfo_json: &str) -> Result<()> {
        match serde_json::from_str::<serde_json::Value>(hostinfo_json) {
            Ok(serde_json::Value::Object(_)) => {}
            Ok(other) => return Err(StoreError::InvalidHostinfo(format!("got {other}"))),
            Err(e) => return Err(StoreError::InvalidHostinfo(e.to_string())),
        }
        self.write(|tx| update_node(tx, id, "hostinfo = ?1", hostinfo_json))
    }

    fn set_disco_key(&self, id: NodeId, key: &DiscoPublic) -> Result<()> {
        self.write(|tx| update_node(tx, id, "disco_key = ?1", &key.as_bytes()[..]))
    }

    fn set_last_seen(&self, id: NodeId, at: SystemTime) -> Result<()> {
        self.write(|tx| update_node(tx, id, "last_seen = ?1", to_unix(at)))
    }

    fn set_online(&self, id: NodeId, online: bool, now: SystemTime) -> Result<()> {
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE nodes SET online = ?1, last_seen = ?2 WHERE id = ?3",
                params![online, to_unix(now), id],
            )?;
            if n == 0 {
                return Err(StoreError::NodeNotFound(id));
            }
            Ok(())
        })
    }

    fn set_advertised_routes(&self, id: NodeId, prefixes: &[IpNet]) -> Result<()> {
        let prefixes = canonical_routes(prefixes)?;
        self.write(|tx| {
            check_node_exists(tx, id)?;
            set_route_flag(tx, id, "advertised", &prefixes)
        })
    }

    fn approve_routes(&self, id: NodeId, prefixes: &[IpNet]) -> Result<()> {
        let prefixes = canonical_routes(prefixes)?;
        self.write(|tx| {
            check_node_exists(tx, id)?;
            let current = routes_of(tx, id)?;
            if let Some(p) = prefixes.iter().find(|p| !current.advertised.contains(p)) {
                return Err(StoreError::RouteNotAdvertised {
                    node: id,
                    prefix: *p,
                });
            }
            set_route_flag(tx, id, "approved", &prefixes)
        })
    }

    fn routes(&self, id: NodeId) -> Result<NodeRoutes> {
        self.read(|tx| {
            check_node_exists(tx, id)?;
            routes_of(tx, id)
        })
    }

    fn list_routes(&self) -> Result<Vec<NodeRoutes>> {
        self.read(|tx| {
            let mut q = tx.prepare("SELECT DISTINCT node_id FROM routes ORDER BY node_id")?;
            let ids = q
                .query_map([], |r| r.get::<_, NodeId>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            ids.into_iter().map(|id| routes_of(tx, id)).collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_round_trip() {
        for s in [0i64, 1, 1_700_000_000, -1, -62_135_596_800] {
            assert_eq!(to_unix(from_unix(s)), s);
        }
        // Sub-second parts are floored.
        assert_eq!(to_unix(UNIX_EPOCH + Duration::from_millis(1500)), 1);
        assert_eq!(to_unix(UNIX_EPOCH - Duration::from_millis(500)), -1);
    }
}
