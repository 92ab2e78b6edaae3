//! The tc BPF access-control program (C, built by build.rs) and its loader.
//!
//! [`tables::compile`] turns a [`meshgate_acl::Policy`] into trie keys (sans-I/O);
//! [`Maps`] writes them into the pinned maps with an atomic slot swap; [`Enforcer`] loads,
//! pins and attaches the program to an interface with tc (netlink, survives our exit).

mod enforcer;
mod error;
pub mod maps;
mod object;
pub mod tables;
mod tcquery;
mod writer;

pub use enforcer::{DEFAULT_PIN_ROOT, Enforcer, LinkKind, TC_HANDLE, TC_PRIORITY, ensure_bpffs};
pub use error::Error;
pub use object::{
    Loaded, PROG_EGRESS_ETH, PROG_EGRESS_L3, PROG_INGRESS_ETH, PROG_INGRESS_L3, load,
};
pub use tables::{Tables, compile};
pub use writer::{Counters, Maps, Stats, SwapReport};
