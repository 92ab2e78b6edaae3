//! The tailnet's packet filter as one rule model, compiled to nftables (and, later, to the tc BPF maps).
//!
//! [`Policy`] normalizes control's `FilterRule`s into disjoint allow entries (sans-I/O);
//! [`nft::compile`] turns a policy into one atomic nftables JSON transaction for our own
//! `table inet meshgate`; [`apply()`] hands it to `nft` and keeps its error text.

mod apply;
mod disjoint;
mod error;
mod model;
pub mod nft;
mod router;
mod verdict;

pub use apply::{Counters, apply, counters, remove};
pub use error::Error;
pub use model::{Entry, MAX_ENTRIES, Policy};
pub use router::{MARK_MASK, Router, SUBNET_MARK};
