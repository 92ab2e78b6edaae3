#![doc = include_str!("../README.md")]

pub mod device;
pub mod diff;
pub mod engine;
pub mod error;
pub mod genl;
pub mod key;
pub mod rtnl;
pub mod uapi;
pub mod wgconf;

pub use device::{DeviceConfig, DeviceState, PeerConfig, PeerStats};
pub use diff::{DeviceUpdate, PeerUpdate, diff};
pub use engine::{ApplyReport, Backend, BackendChoice, Engine, InterfaceConfig};
pub use error::{Error, Result};
pub use key::{PresharedKey, PrivateKey, PublicKey};
pub use rtnl::types::{Family, NetConfig, Route, Rule};
