//! Port mapping for WireGuard's port on the home router: UPnP IGD, NAT-PMP and PCP.
//!
//! `Mapper` is the sans-I/O state machine; `PortMapper` runs it on tokio. See README.md.

mod backend;
mod error;
mod mapper;
mod probe;
mod shell;
pub mod wire;

pub use error::Error;
pub use mapper::{Action, Config, MapResult, Mapper, Mapping, Protocol, Services};
pub use probe::probe;
pub use shell::{Options, PortMapper, default_gateway};

#[cfg(test)]
mod mapper_tests;
