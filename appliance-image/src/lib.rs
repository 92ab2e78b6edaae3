//! Builds meshgate's appliance image (through `build.sh`) and boots it in a lab for the
//! tests in `tests/`: see README.md.

pub mod error;
pub mod image;
pub mod lab;
pub mod vm;

pub use error::{Error, Result};
pub use image::{Disk, Image};
pub use lab::{ApplianceLab, PingFlow, PingReport};
pub use vm::Appliance;
