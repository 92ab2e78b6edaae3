//! Throughput samples (bits per second) of two variants measured in alternating rounds, and the
//! report line comparing them.

/// Rates of one variant, one per round, in bits per second.
#[derive(Debug, Clone, Default)]
pub struct Rates(Vec<f64>);

impl Rates {
    pub fn push(&mut self, bits_per_second: f64) {
        self.0.push(bits_per_second);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn median(&self) -> f64 {
        median(self.0.clone())
    }

    pub fn min(&self) -> f64 {
        self.0.iter().copied().fold(f64::INFINITY, f64::min)
    }

    pub fn max(&self) -> f64 {
        self.0.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    }
}

/// The median of `values` (upper median for an even count; 0 when empty).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or_default()
}

/// Median of the per-round ratios ours / baseline. Rounds alternate, so each pair was measured
/// seconds apart and slow drift in the machine's load cancels out of every ratio.
pub fn paired_ratio(ours: &Rates, baseline: &Rates) -> f64 {
    median(
        ours.0
            .iter()
            .zip(&baseline.0)
            .filter(|(_, b)| **b > 0.0)
            .map(|(o, b)| o / b)
            .collect(),
    )
}

/// One line of the report: both medians [min-max] in Mbit/s, the ratio of the medians, the
/// median per-round ratio, and whether the latter meets `goal`.
pub fn report_line(what: &str, ours: &Rates, baseline: &Rates, goal: f64) -> String {
    let mbit = |v: f64| v / 1e6;
    let of_medians = ours.median() / baseline.median().max(f64::EPSILON);
    let paired = paired_ratio(ours, baseline);
    format!(
        "{what:<28} meshgate {:>8.1} Mbit/s [{:.1}-{:.1}]  manual {:>8.1} Mbit/s [{:.1}-{:.1}]  \
         ratio {of_medians:.3}x (per-round median {paired:.3}x): goal >= {goal}x {}",
        mbit(ours.median()),
        mbit(ours.min()),
        mbit(ours.max()),
        mbit(baseline.median()),
        mbit(baseline.min()),
        mbit(baseline.max()),
        if paired >= goal { "met" } else { "not met" }
    )
}

/// The receiver's rate from `iperf3 -J` output, if the run completed.
pub fn iperf3_received_bps(json: &serde_json::Value) -> Option<f64> {
    json.get("end")?
        .get("sum_received")?
        .get("bits_per_second")?
        .as_f64()
        .filter(|bps| bps.is_finite() && *bps > 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates(values: &[f64]) -> Rates {
        let mut r = Rates::default();
        for v in values {
            r.push(*v);
        }
        r
    }

    #[test]
    fn medians_spread_and_ratios() {
        let ours = rates(&[90e6, 100e6, 80e6]);
        let manual = rates(&[100e6, 100e6, 100e6]);
        assert_eq!(ours.median(), 90e6);
        assert_eq!((ours.min(), ours.max()), (80e6, 100e6));
        assert!((paired_ratio(&ours, &manual) - 0.9).abs() < 1e-9);
        let line = report_line("subnet", &ours, &manual, 0.95);
        assert!(line.contains("ratio 0.900x"), "{line}");
        assert!(line.ends_with("not met"), "{line}");
        let line = report_line("subnet", &manual, &manual, 0.95);
        assert!(
            line.ends_with(" met") && !line.contains("not met"),
            "{line}"
        );
    }

    #[test]
    fn empty_rates_do_not_panic() {
        let empty = Rates::default();
        assert_eq!(empty.median(), 0.0);
        assert_eq!(paired_ratio(&empty, &empty), 0.0);
        assert!(report_line("x", &empty, &empty, 0.95).contains("not met"));
    }

    #[test]
    fn iperf3_json() {
        let doc = serde_json::json!({"end": {"sum_received": {"bits_per_second": 1.5e8}}});
        assert_eq!(iperf3_received_bps(&doc), Some(1.5e8));
        let failed = serde_json::json!({"error": "unable to connect to server"});
        assert_eq!(iperf3_received_bps(&failed), None);
    }
}
