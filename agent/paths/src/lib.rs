//! Which way each peer's WireGuard packets go, and the relay bridge that carries them over
//! DERP while a peer is relayed (DESIGN decision 4).
//!
//! - [`table`]: the sans-I/O path choice per peer, fed with what the kernel reports.
//! - [`relay`]: the relay bridge (loopback sockets <-> DERP) and the DERP connections.

pub mod relay;
pub mod table;

pub use relay::{RegionStatus, Relay, RelayConfig, RelayEvent, RelayStatus};
pub use table::{Path, PathTable, PeerPaths, WgObservation};
