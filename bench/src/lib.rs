//! `meshgate bench` (see README.md): packets per second through a sender -> router -> receiver
//! lab in network namespaces, for plain forwarding, WireGuard, our BPF ACL, nftables sets and
//! a linear nftables chain, each as a ratio to plain forwarding measured in the same run.

pub mod acl_rules;
mod args;
pub mod blaster;
mod error;
mod lab;
mod measure;
pub mod netdev;
mod progress;
mod report;
mod runner;
mod stop;
mod suite;
mod svg;
mod sysinfo;
mod table;
mod variant;
mod wireguard;

pub use args::{
    BenchArgs, FRAME_OVERHEAD, MAX_FRAME, MAX_RULE_COUNT, MIN_FRAME, MIN_RUNS, Settings,
    line_rate_pps, udp_payload,
};
pub use error::Error;
pub use report::{LabInfo, Report, Row, WireguardInfo};
pub use runner::{bench, run};
pub use stop::Stop;
pub use suite::{Entry, SUITE};
pub use sysinfo::Machine;
pub use variant::Variant;
pub use wireguard::Backend;

/// The plot of a report, as an SVG document.
pub fn svg(report: &Report) -> String {
    svg::render(report)
}

/// The terminal table of a report.
pub fn table(report: &Report) -> String {
    table::render(report)
}
