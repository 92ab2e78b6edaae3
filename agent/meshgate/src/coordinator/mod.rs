//! `meshgate coordinator ...`: the coordination server (`serve`, in [`serve`]) and its
//! administration (`authkey create`, `nodes list`, `routes list|approve`, in [`admin`]), which
//! call the operations of `meshgate-coordinator-admin` on the SQLite file directly — WAL lets
//! them run while the server does. The server notices changes made by other processes by
//! polling SQLite's `PRAGMA data_version` every `--poll-every` (1 s) on a connection of its
//! own, and then calls `Server::notify()`, so an approval reaches every map stream within about
//! a second. The same operations are served by the admin HTTP API that `serve` starts
//! ([`admin_api`]); its changes notify the server at once.
//!
//! With `--tls-cert` and `--tls-key`, `serve` speaks HTTPS: a tokio-rustls acceptor terminates
//! TLS and the server serves the decrypted stream (`Server::serve_stream`).

mod admin;
mod admin_api;
mod serve;

use std::path::Path;

use meshgate_coordinator_store::SqliteStore;

use crate::cli::{AuthkeyCommand, CoordinatorCommand, NodesCommand, RoutesCommand};

type BoxError = Box<dyn std::error::Error>;

pub async fn run(command: CoordinatorCommand) -> Result<(), BoxError> {
    match command {
        CoordinatorCommand::Serve(args) => serve::serve(*args).await,
        CoordinatorCommand::Authkey(AuthkeyCommand::Create {
            db,
            user,
            reusable,
            ephemeral,
            tags,
            expiry,
        }) => admin::authkey_create(&db, user, reusable, ephemeral, tags, expiry),
        CoordinatorCommand::Authkey(AuthkeyCommand::List { db, json }) => {
            admin::authkey_list(&db, json)
        }
        CoordinatorCommand::Authkey(AuthkeyCommand::Revoke { db, id }) => {
            admin::authkey_revoke(&db, id)
        }
        CoordinatorCommand::Nodes(NodesCommand::List { db, json }) => admin::nodes_list(&db, json),
        CoordinatorCommand::Nodes(NodesCommand::Delete { db, node }) => {
            admin::nodes_delete(&db, &node)
        }
        CoordinatorCommand::Nodes(NodesCommand::Expire { db, node }) => {
            admin::nodes_expire(&db, &node)
        }
        CoordinatorCommand::Routes(RoutesCommand::List { db, json }) => {
            admin::routes_list(&db, json)
        }
        CoordinatorCommand::Routes(RoutesCommand::Approve { db, node, cidrs }) => {
            admin::routes_approve(&db, &node, &cidrs)
        }
    }
}

fn open(db: &Path) -> Result<SqliteStore, String> {
    SqliteStore::open(db).map_err(|e| format!("{}: {e}", db.display()))
}
