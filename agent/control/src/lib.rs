#![doc = include_str!("../README.md")]

pub mod client;
pub mod endpoint;
pub mod netmap;
pub mod state;
pub mod wgconfig;

pub use client::{
    ClientError, ControlClient, MapStream, RunConfig, fetch_control_key, logout, run,
    run_with_peers,
};
pub use endpoint::{ControlServer, EndpointError};
pub use netmap::{Changes, NetMap, PeerDirectory, PeerInfo};
pub use state::{Persisted, StateError};
pub use wgconfig::{WgOptions, interface_config};
