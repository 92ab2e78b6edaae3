//! Schema migrations, numbered in code. Migration `i` (0-based) takes the database from schema
//! version `i` to `i + 1`; the version is SQLite's `PRAGMA user_version`.

use rusqlite::{Connection, TransactionBehavior};

use crate::{Result, StoreError};

/// The migrations, in order. Never edit a released one: append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    r#"
    CREATE TABLE users (
        id       INTEGER PRIMARY KEY AUTOINCREMENT,
        name     TEXT NOT NULL UNIQUE,
        created  INTEGER NOT NULL
    );

    CREATE TABLE preauth_keys (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        hash        BLOB NOT NULL UNIQUE CHECK (length(hash) = 32),
        user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        reusable    INTEGER NOT NULL,
        ephemeral   INTEGER NOT NULL,
        tags        TEXT NOT NULL DEFAULT '[]',
        expires     INTEGER,
        created     INTEGER NOT NULL,
        used_count  INTEGER NOT NULL DEFAULT 0,
        used_at     INTEGER,
        revoked     INTEGER NOT NULL DEFAULT 0
    );

    CREATE TABLE nodes (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        stable_id    TEXT NOT NULL UNIQUE,
        machine_key  BLOB NOT NULL UNIQUE CHECK (length(machine_key) = 32),
        node_key     BLOB NOT NULL UNIQUE CHECK (length(node_key) = 32),
        disco_key    BLOB CHECK (disco_key IS NULL OR length(disco_key) = 32),
        user_id      INTEGER NOT NULL REFERENCES users(id),
        auth_key_id  INTEGER REFERENCES preauth_keys(id) ON DELETE SET NULL,
        tags         TEXT NOT NULL DEFAULT '[]',
        hostname     TEXT NOT NULL,
        given_name   TEXT NOT NULL UNIQUE,
        ipv4         INTEGER NOT NULL UNIQUE,
        ipv6         TEXT NOT NULL UNIQUE,
        key_expiry   INTEGER,
        ephemeral    INTEGER NOT NULL,
        created      INTEGER NOT NULL,
        last_seen    INTEGER,
        online       INTEGER NOT NULL DEFAULT 0,
        endpoints    TEXT NOT NULL DEFAULT '[]',
        hostinfo     TEXT
    );
    CREATE INDEX nodes_user ON nodes(user_id);

    CREATE TABLE routes (
        node_id     INTEGER NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
        prefix      TEXT NOT NULL,
        advertised  INTEGER NOT NULL,
        approved    INTEGER NOT NULL,
        PRIMARY KEY (node_id, prefix)
    );

    CREATE TABLE ip_allocator (
        id       INTEGER PRIMARY KEY CHECK (id = 1),
        next_v4  INTEGER NOT NULL
    );
    INSERT INTO ip_allocator (id, next_v4) VALUES (1, 0);
    "#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

pub(crate) fn user_version(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
}

fn check_not_newer(found: i64) -> Result<()> {
    if found < 0 {
        return Err(StoreError::Corrupt(format!(
            "negative schema version {found}"
        )));
    }
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(())
}

/// Refuses a database from a newer build; cheap, writes nothing.
pub(crate) fn check_version(conn: &Connection) -> Result<()> {
    check_not_newer(user_version(conn)?)
}

/// Applies every pending migration in one transaction (all or nothing).
pub(crate) fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Read again under the write lock: another process may have migrated meanwhile.
    let found = user_version(&tx)?;
    check_not_newer(found)?;
    for sql in &MIGRATIONS[found as usize..] {
        tx.execute_batch(sql)?;
    }
    if found != SCHEMA_VERSION {
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    tx.commit()?;
    Ok(())
}
