//! Throw-away networks of Linux network namespaces on the host kernel: hosts, switches,
//! point-to-point links, routers with NATs of several kinds and LANs behind them, all torn down
//! when the [`Lab`] is dropped. Needs root. See README.md for the address plan and the rule
//! that no lab has a route out of it.
//!
//! ```no_run
//! use meshgate_netns_lab::{Lab, NatKind};
//!
//! # fn main() -> meshgate_netns_lab::Result<()> {
//! let lab = Lab::new("example")?;
//! let internet = lab.add_switch("internet")?; // 203.0.113.0/24
//! let server = lab.add_host("server")?;
//! internet.attach(&server)?; // 203.0.113.1
//! let router = lab.add_router("home", &internet, NatKind::EndpointIndependent)?; // .2
//! let lan = lab.add_lan(&router)?; // 10.1.0.0/24, router 10.1.0.1
//! let laptop = lab.add_lan_host(&lan, "laptop")?; // 10.1.0.2, default via 10.1.0.1
//! assert!(laptop.ping(server.addr_on(&internet).unwrap(), 1));
//! # Ok(())
//! # }
//! ```

mod cleanup;
mod cmd;
mod error;
mod host;
mod lab;
mod link;
mod names;
mod nat;
mod netns;
mod plan;
mod probe;
mod process;
mod ready;
mod router;
mod segment;
mod upnp;

pub use cleanup::sweep_leftovers;
pub use error::{Error, Result};
pub use host::Host;
pub use lab::Lab;
pub use nat::{Nat, NatKind, PORT_BASE, PORT_POOL};
pub use plan::{LAN_PREFIX_LEN, LINK_RANGE, SWITCH_SUBNETS};
pub use probe::{Reflector, mapped_addr};
pub use process::Proc;
pub use router::Router;
pub use segment::{Iface, Segment};
pub use upnp::{UPNP_TABLE, UpnpProtocols};
