//! Tailscale's control-protocol wire types. See README.md.

pub mod filter;

pub use filter::{CapGrant, FilterRule, NetPortRange, PortRange};
