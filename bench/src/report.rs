//! The results as data: what `--json` prints and the table and plot are drawn from.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::args::Settings;
use crate::measure::Rate;
use crate::rates::Rates;
use crate::sysinfo::Machine;
use crate::variant::Variant;
use crate::wireguard::Backend;

/// Everything one `meshgate bench` run found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub version: &'static str,
    /// `lab`: the namespace lab (`interfaces` is a [`crate::DeviceReport`]).
    pub mode: &'static str,
    /// UTC, when the run started.
    pub date: String,
    pub machine: Machine,
    pub settings: Settings,
    pub lab: LabInfo,
    /// `None` with `--no-wireguard`.
    pub wireguard: Option<WireguardInfo>,
    /// One row per variant and size, in run order of the variants.
    pub results: Vec<Row>,
    /// Load average when the run ended (the one at the start is in `machine`): what else
    /// competed for the CPUs.
    pub load_average_end: String,
    pub elapsed_s: f64,
}

/// How traffic was made and counted.
#[derive(Debug, Clone, Serialize)]
pub struct LabInfo {
    pub topology: &'static str,
    pub generator: &'static str,
    pub counted_at: &'static str,
}

/// The WireGuard variant's setup.
#[derive(Debug, Clone, Serialize)]
pub struct WireguardInfo {
    pub backend: Backend,
    pub topology: &'static str,
    pub mtu: usize,
    /// Frame sizes whose IP packet exceeds the tunnel MTU: not measured through the tunnel.
    pub skipped_sizes: Vec<usize>,
}

/// One variant at one frame size, over all runs.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// plain, wireguard, acl-bpf, nft-sets or nft-linear.
    pub variant: &'static str,
    /// Policy rules, for the ACL variants.
    pub rules: Option<usize>,
    /// At rcv, one sample per window (per run; plain: one per paired variant and run).
    #[serde(flatten)]
    pub rates: Rates,
    /// Median over the runs of this window's pps / the pps of the plain window measured just
    /// before it (same run, same size): A/B pairs, so drift on the machine cancels.
    pub ratio_to_plain: f64,
    pub ratio_min: f64,
    pub ratio_max: f64,
}

/// One window's rate and the plain-forwarding rate measured just before it (same size).
#[derive(Debug, Clone, Copy)]
struct Sample {
    rate: Rate,
    plain: f64,
}

/// Samples as they come in: (variant, size) -> samples in measurement order.
#[derive(Debug, Default)]
pub struct Samples(BTreeMap<(Variant, usize), Vec<Sample>>);

impl Samples {
    /// Records a window of `v`; `plain` is the plain-forwarding pps of the window paired with
    /// it (for plain itself, its own).
    pub fn push(&mut self, v: Variant, size: usize, rate: Rate, plain: f64) {
        self.0
            .entry((v, size))
            .or_default()
            .push(Sample { rate, plain });
    }

    /// Rows in `order` of variants, sizes ascending.
    pub fn rows(&self, order: &[Variant], sizes: &[usize], link_bps: u64) -> Vec<Row> {
        let mut rows = Vec::new();
        for &v in order {
            for &size in sizes {
                let Some(samples) = self.0.get(&(v, size)) else {
                    continue;
                };
                let ratios: Vec<f64> = samples
                    .iter()
                    .filter(|x| x.plain > 0.0)
                    .map(|x| x.rate.delivered / x.plain)
                    .collect();
                let delivered = samples.iter().map(|x| x.rate.delivered).collect();
                let sent = samples.iter().map(|x| x.rate.sent).collect();
                rows.push(Row {
                    variant: v.kind(),
                    rules: v.rules(),
                    rates: Rates::new(size, delivered, sent, link_bps),
                    ratio_to_plain: median(&ratios),
                    ratio_min: min(&ratios),
                    ratio_max: max(&ratios),
                });
            }
        }
        rows
    }
}

/// The middle value (mean of the two middle ones for an even count); 0 for none.
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

pub(crate) fn min(v: &[f64]) -> f64 {
    v.iter().copied().reduce(f64::min).unwrap_or(0.0)
}

pub(crate) fn max(v: &[f64]) -> f64 {
    v.iter().copied().reduce(f64::max).unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(delivered: f64) -> Rate {
        Rate {
            delivered,
            sent: delivered * 2.0,
        }
    }

    #[test]
    fn ratios_pair_windows_and_medians_take_the_middle() {
        let mut s = Samples::default();
        for (plain, bpf) in [(100.0, 90.0), (200.0, 100.0), (100.0, 80.0)] {
            s.push(Variant::Plain, 64, rate(plain), plain);
            s.push(Variant::AclBpf(10), 64, rate(bpf), plain);
        }
        let rows = s.rows(
            &[Variant::Plain, Variant::AclBpf(10)],
            &[64, 512],
            10_000_000_000,
        );
        assert_eq!(rows.len(), 2, "no rows for sizes never measured");
        let bpf = &rows[1];
        assert_eq!((bpf.variant, bpf.rules), ("acl-bpf", Some(10)));
        assert_eq!(bpf.rates.median_pps, 90.0);
        assert_eq!(bpf.rates.sent_pps, [180.0, 200.0, 160.0]);
        // Paired ratios 0.9, 0.5, 0.8: their median, not median(bpf) / median(plain).
        assert_eq!(bpf.ratio_to_plain, 0.8);
        assert_eq!((bpf.ratio_min, bpf.ratio_max), (0.5, 0.9));
        assert_eq!(rows[0].ratio_to_plain, 1.0);
        assert_eq!(bpf.rates.udp_payload, 18);
        assert!((bpf.rates.line_rate_pps - 14_880_952.4).abs() < 1.0);
        assert_eq!(median(&[1.0, 3.0]), 2.0);
        assert_eq!(median(&[]), 0.0);
    }
}
