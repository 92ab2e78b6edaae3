//! Which way each peer's WireGuard packets go, and the relay bridge that carries them over
//! DERP while a peer is relayed (DESIGN decision 4).
//!
//! - [`table`]: the sans-I/O path choice per peer, fed with what the kernel reports and with
//!   disco; [`disco`] holds one peer's disco state, [`score`] compares direct addresses.
//! - [`relay`]: the relay bridge (loopback sockets <-> DERP) and the DERP connections.

pub mod disco;
pub mod relay;
mod resend;
pub mod score;
pub mod table;

pub use relay::{RegionStatus, Relay, RelayConfig, RelayEvent, RelayStatus};
pub use table::{
    Outgoing, Path, PathTable, PeerPaths, PingResult, Transmit, Via, WgObservation, derp_magic,
};
