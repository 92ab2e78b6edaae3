//! The meshgate coordination server: a Tailscale-compatible control server (ts2021) on top of
//! [`meshgate_controlhttp`] (Noise upgrade, `/key`), the SQLite [`Store`] and the tailnet
//! [`Policy`]. See this crate's README for the endpoints, the maps and the delta rules.
//!
//! - [`tailnet`]: the sans-I/O core (maps per node, deltas between maps).
//! - [`Server`]: the tokio shell (connections, HTTP/2, register, map streams).
//!
//! [`Store`]: meshgate_coordinator_store::Store
//! [`Policy`]: meshgate_policy::Policy

mod error;
mod keyfile;
mod server;
mod socket;
pub mod tailnet;

pub use error::Error;
pub use keyfile::{KEY_FILE_NAME, load_or_create_key};
pub use server::{Config, Server, Stats};
pub use socket::{TCP_KEEPALIVE_IDLE, TCP_KEEPALIVE_INTERVAL, TCP_USER_TIMEOUT};
pub use tailnet::{
    Candidate, DnsSettings, NodeRecord, Primaries, Snapshot, Tailnet, choose_primaries, diff,
};
