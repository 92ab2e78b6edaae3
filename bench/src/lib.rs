//! `meshgate bench` (see README.md): packets per second through a sender -> router -> receiver
//! lab in network namespaces, for plain forwarding, WireGuard, our BPF ACL, nftables sets and
//! a linear nftables chain, each as a ratio to plain forwarding measured in the same run.

pub mod acl_rules;
mod args;
pub mod blaster;
mod device_report;
mod error;
mod iface;
mod lab;
mod measure;
pub mod netdev;
mod progress;
mod rates;
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
    BenchArgs, FRAME_OVERHEAD, Interfaces, MAX_FRAME, MAX_RULE_COUNT, MIN_FRAME, MIN_RUNS,
    Settings, line_rate_pps, udp_payload,
};
pub use device_report::{DeviceReport, DeviceRow};
pub use error::Error;
pub use iface::bench_device;
pub use rates::Rates;
pub use report::{LabInfo, Report, Row, WireguardInfo};
pub use runner::{bench, run};
pub use stop::Stop;
pub use suite::{Entry, SUITE};
pub use sysinfo::Machine;
pub use variant::Variant;
pub use wireguard::{Backend, KeyPair};

/// The plot of a report, as an SVG document.
pub fn svg(report: &Report) -> String {
    svg::render(report)
}

/// The terminal table of a `--tx-iface` report.
pub fn device_table(report: &DeviceReport) -> String {
    device_report::render(report)
}

/// The terminal table of a report.
pub fn table(report: &Report) -> String {
    table::render(report)
}
