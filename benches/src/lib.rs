//! Shared pieces of the benchmarks: interleaved A/B measurement and the ratio report.

pub mod manual_wg;
pub mod proc_cpu;
pub mod throughput;

// Moved to meshgate-bench (the `meshgate bench` command); re-exported so the benches compile unchanged.
pub use meshgate_bench::{acl_rules, blaster, netdev};

use std::time::Duration;

/// Samples of one measurement.
#[derive(Debug, Clone, Default)]
pub struct Samples(Vec<Duration>);

impl Samples {
    pub fn push(&mut self, sample: Duration) {
        self.0.push(sample);
    }

    pub fn median(&self) -> Duration {
        let mut sorted = self.0.clone();
        sorted.sort();
        sorted.get(sorted.len() / 2).copied().unwrap_or_default()
    }

    pub fn min(&self) -> Duration {
        self.0.iter().min().copied().unwrap_or_default()
    }

    pub fn max(&self) -> Duration {
        self.0.iter().max().copied().unwrap_or_default()
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One line of the report: ours against the baseline, as baseline / ours (higher is better).
pub fn report_line(what: &str, ours: &Samples, baseline: &Samples, goal: f64) -> String {
    let ratio = ms(baseline.median()) / ms(ours.median()).max(f64::EPSILON);
    format!(
        "{what:<44} meshgate {:>9.1} ms [{:.1}-{:.1}]  baseline {:>9.1} ms [{:.1}-{:.1}]  \
         speedup {ratio:>6.2}x (goal >= {goal}x){}",
        ms(ours.median()),
        ms(ours.min()),
        ms(ours.max()),
        ms(baseline.median()),
        ms(baseline.min()),
        ms(baseline.max()),
        if ratio >= goal { "" } else { "  BELOW GOAL" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_spread() {
        let mut s = Samples::default();
        for ms in [30, 10, 20] {
            s.push(Duration::from_millis(ms));
        }
        assert_eq!(s.median(), Duration::from_millis(20));
        assert_eq!(
            (s.min(), s.max()),
            (Duration::from_millis(10), Duration::from_millis(30))
        );
        let line = report_line("x", &s, &s, 1.0);
        assert!(line.contains("speedup   1.00x"), "{line}");
    }
}
