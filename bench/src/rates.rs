//! The packet rates at one frame size over all runs: what a row of the lab's report and a row
//! of a device's report have in common (flattened into both in the JSON).

use serde::Serialize;

use crate::args::{line_rate_pps, udp_payload};
use crate::report::{max, median, min};

#[derive(Debug, Clone, Serialize)]
pub struct Rates {
    /// Ethernet frame bytes (FCS included).
    pub size: usize,
    pub udp_payload: usize,
    /// Delivered pps at the receiving interface, one per window.
    pub samples_pps: Vec<f64>,
    /// Offered pps (accepted by the sender's sockets), one per window.
    pub sent_pps: Vec<f64>,
    pub median_pps: f64,
    pub min_pps: f64,
    pub max_pps: f64,
    /// Frame bits per second at the median rate (preamble and gap not counted).
    pub mbit_s: f64,
    /// The most frames per second the link speed carries at this size.
    pub line_rate_pps: f64,
    /// median_pps / line_rate_pps.
    pub of_line_rate: f64,
}

impl Rates {
    /// `delivered` and `sent`: pps per window, in measurement order.
    pub fn new(size: usize, delivered: Vec<f64>, sent: Vec<f64>, link_bps: u64) -> Rates {
        let median_pps = median(&delivered);
        let line = line_rate_pps(link_bps, size);
        Rates {
            size,
            udp_payload: udp_payload(size),
            sent_pps: sent,
            median_pps,
            min_pps: min(&delivered),
            max_pps: max(&delivered),
            mbit_s: median_pps * size as f64 * 8.0 / 1e6,
            line_rate_pps: line,
            of_line_rate: if line > 0.0 { median_pps / line } else { 0.0 },
            samples_pps: delivered,
        }
    }
}
