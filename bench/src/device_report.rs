//! The results of a `--tx-iface` run: the device under test at each frame size, against the
//! line rate of the link (there is no plain-forwarding baseline to pair with: we cannot change
//! what the device runs).

use std::fmt::Write as _;

use serde::Serialize;

use crate::args::{Interfaces, Settings};
use crate::measure::Rate;
use crate::rates::Rates;
use crate::report::median;
use crate::sysinfo::Machine;
use crate::table::pps;

/// Everything one `--tx-iface` run found (`--json` prints this).
#[derive(Debug, Clone, Serialize)]
pub struct DeviceReport {
    pub tool: &'static str,
    pub version: &'static str,
    /// `interfaces` (the namespace lab's report says `lab`).
    pub mode: &'static str,
    pub date: String,
    pub machine: Machine,
    pub settings: Settings,
    pub interfaces: Interfaces,
    pub counted_at: &'static str,
    pub results: Vec<DeviceRow>,
    pub load_average_end: String,
    pub elapsed_s: f64,
}

/// The device at one frame size, over all runs.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceRow {
    /// At --rx-iface, one sample per run; `of_line_rate` is the ratio this mode reports.
    #[serde(flatten)]
    pub rates: Rates,
    /// Median of delivered / offered: well below 1, the device (or the link) dropped packets.
    /// A little above 1 is noise: offered is averaged over the whole blast, delivered over
    /// the window.
    pub delivered_of_offered: f64,
}

impl DeviceRow {
    pub fn new(size: usize, rates: &[Rate], link_bps: u64) -> DeviceRow {
        let delivered: Vec<f64> = rates.iter().map(|r| r.delivered).collect();
        let fractions: Vec<f64> = rates
            .iter()
            .filter(|r| r.sent > 0.0)
            .map(|r| r.delivered / r.sent)
            .collect();
        let sent = rates.iter().map(|r| r.sent).collect();
        DeviceRow {
            rates: Rates::new(size, delivered, sent, link_bps),
            delivered_of_offered: median(&fractions),
        }
    }
}

/// The terminal table (ends with a newline).
pub fn render(r: &DeviceReport) -> String {
    let mut s = String::new();
    let i = &r.interfaces;
    let _ = writeln!(
        s,
        "meshgate bench {} on {} ({} CPUs), kernel {}: {} -> device under test{} -> {} ({})",
        r.date,
        r.machine.cpu_model,
        r.machine.cpus,
        r.machine.kernel,
        i.tx_iface,
        i.label
            .as_deref()
            .map_or(String::new(), |l| format!(" [{l}]")),
        i.rx_iface,
        i.dst
    );
    let _ = writeln!(
        s,
        "delivered pps at {}: median [min-max] of {} run(s) x {} ms; ratio = of the {} (no \
         baseline: only what the device runs is measured); delivered = of what we offered",
        i.rx_iface,
        r.settings.runs,
        r.settings.window_ms,
        r.settings.link_speed_bps_label()
    );
    let _ = writeln!(
        s,
        "{:<8} {:>5} {:>12} {:>21} {:>9} {:>10} {:>8} {:>10}",
        "variant", "size", "pps", "[min-max]", "Mbit/s", "line rate", "of line", "delivered"
    );
    for row in &r.results {
        let _ = writeln!(
            s,
            "{:<8} {:>5} {:>12} {:>21} {:>9.1} {:>10} {:>7.2}% {:>9.1}%",
            "device",
            row.rates.size,
            pps(row.rates.median_pps),
            format!("[{}-{}]", pps(row.rates.min_pps), pps(row.rates.max_pps)),
            row.rates.mbit_s,
            pps(row.rates.line_rate_pps),
            row.rates.of_line_rate * 100.0,
            row.delivered_of_offered * 100.0
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_take_medians_against_the_line_rate() {
        let rates = [
            Rate {
                delivered: 100.0,
                sent: 200.0,
            },
            Rate {
                delivered: 300.0,
                sent: 300.0,
            },
            Rate {
                delivered: 200.0,
                sent: 400.0,
            },
        ];
        let row = DeviceRow::new(64, &rates, 10_000_000_000);
        assert_eq!(row.rates.median_pps, 200.0);
        assert_eq!((row.rates.min_pps, row.rates.max_pps), (100.0, 300.0));
        assert_eq!(row.delivered_of_offered, 0.5);
        assert!((row.rates.of_line_rate - 200.0 / 14_880_952.38).abs() < 1e-9);
    }
}
