//! The terminal table: variant x size, with spread, ratio to plain and the line rate.

use std::fmt::Write as _;

use crate::report::Report;

/// The table as text (ends with a newline).
pub fn render(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "meshgate bench {} on {} ({} CPUs, {}), kernel {}",
        r.date,
        r.machine.cpu_model,
        r.machine.cpus,
        r.settings.link_speed_bps_label(),
        r.machine.kernel
    );
    let _ = writeln!(
        s,
        "delivered pps at rcv: median [min-max] of {} run(s) x {} ms; ratio = median over the runs \
         of (window / the plain window just before it); sizes are Ethernet frames with FCS",
        r.settings.runs, r.settings.window_ms
    );
    let _ = writeln!(
        s,
        "load average {} at start, {} at end; {:.0} s",
        r.machine.load_average, r.load_average_end, r.elapsed_s
    );
    if let Some(wg) = &r.wireguard {
        let _ = writeln!(s, "wireguard: {} ({})", wg.backend.label(), wg.topology);
    }
    let _ = writeln!(
        s,
        "{:<23} {:>5} {:>12} {:>21} {:>9} {:>7} {:>15} {:>10} {:>8}",
        "variant",
        "size",
        "pps",
        "[min-max]",
        "Mbit/s",
        "ratio",
        "[min-max]",
        "line rate",
        "of line"
    );
    for row in &r.results {
        let name = match row.rules {
            Some(n) => format!("{} {n}", row.variant),
            None => row.variant.to_owned(),
        };
        let _ = writeln!(
            s,
            "{name:<23} {:>5} {:>12} {:>21} {:>9.1} {:>6.3}x {:>15} {:>10} {:>7.2}%",
            row.rates.size,
            pps(row.rates.median_pps),
            format!("[{}-{}]", pps(row.rates.min_pps), pps(row.rates.max_pps)),
            row.rates.mbit_s,
            row.ratio_to_plain,
            format!("[{:.3}-{:.3}]", row.ratio_min, row.ratio_max),
            pps(row.rates.line_rate_pps),
            row.rates.of_line_rate * 100.0
        );
    }
    s
}

/// 1234567.0 -> "1.23M", 12345.0 -> "12.3k".
pub fn pps(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(pps(14_880_952.0), "14.88M");
        assert_eq!(pps(3_300.0), "3.3k");
        assert_eq!(pps(12.0), "12");
    }
}
