//! Which way each peer's WireGuard packets go, and the relay bridge that carries them over
//! DERP while a peer is relayed (DESIGN decision 4).
//!
//! - [`table`]: the sans-I/O path choice per peer, fed with what the kernel reports.

pub mod table;

pub use table::{Path, PathTable, PeerPaths, WgObservation};
