#![doc = include_str!("../README.md")]

pub mod client;
pub mod netmap;
pub mod state;
pub mod wgconfig;

pub use client::{ClientError, ControlClient, MapStream, RunConfig, fetch_control_key, run};
pub use netmap::{Changes, NetMap};
pub use state::{Persisted, StateError};
pub use wgconfig::{WgOptions, interface_config};
