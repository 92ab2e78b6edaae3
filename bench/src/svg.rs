//! The plot, written by hand: delivered pps (log) against rule count (log), one line per ACL
//! method and frame size (colour = size, dash = method), plain forwarding and WireGuard as
//! horizontal reference lines in each size's colour.

use std::fmt::Write as _;

use crate::report::{Report, Row};
use crate::table::pps;

const W: f64 = 760.0;
const H: f64 = 460.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 210.0;
const TOP: f64 = 56.0;
const BOTTOM: f64 = 50.0;
const COLOURS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];
const METHODS: [(&str, &str); 4] = [
    ("acl-bpf", ""),
    ("nft-sets", "8 4"),
    ("nft-linear", "2 3"),
    ("wireguard+acl-bpf", "6 2 1 2"),
];

/// The SVG document.
pub fn render(r: &Report) -> String {
    let rows = &r.results;
    let positive = |v: f64| v.is_finite() && v > 0.0;
    let ys: Vec<f64> = rows
        .iter()
        .map(|x| x.rates.median_pps)
        .filter(|v| positive(*v))
        .collect();
    let xs: Vec<f64> = rows
        .iter()
        .filter_map(|x| x.rules)
        .map(|n| n as f64)
        .collect();
    let (ylo, yhi) = decades(&ys);
    let (xlo, xhi) = decades(&xs);
    let px = |x: f64| LEFT + (x.log10() - xlo) / (xhi - xlo) * (W - LEFT - RIGHT);
    let py = |y: f64| {
        H - BOTTOM - (y.max(10f64.powf(ylo)).log10() - ylo) / (yhi - ylo) * (H - TOP - BOTTOM)
    };

    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    let _ = writeln!(
        s,
        "<text x=\"{LEFT}\" y=\"20\" font-size=\"14\">meshgate bench: delivered pps vs policy \
         rules</text>\n<text x=\"{LEFT}\" y=\"38\" font-size=\"11\" fill=\"#555\">{}, kernel {}, \
         WireGuard: {}</text>",
        esc(&r.date),
        esc(&r.machine.kernel),
        r.wireguard
            .as_ref()
            .map_or("not measured", |w| w.backend.label())
    );
    // Axes with a grid line per decade.
    for d in (ylo as i32)..=(yhi as i32) {
        let y = py(10f64.powi(d));
        let _ = writeln!(
            s,
            "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            pps(10f64.powi(d))
        );
    }
    for d in (xlo as i32)..=(xhi as i32) {
        let x = px(10f64.powi(d));
        let _ = writeln!(
            s,
            "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{TOP}\" y2=\"{}\" stroke=\"#ddd\"/>\
             <text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            H - BOTTOM,
            H - BOTTOM + 16.0,
            10u64.pow(d.max(0) as u32)
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">policy rules (log)</text>\
         <text x=\"16\" y=\"{}\" transform=\"rotate(-90 16 {})\" text-anchor=\"middle\">pps at rcv (log)</text>",
        (LEFT + W - RIGHT) / 2.0,
        H - 12.0,
        H / 2.0,
        H / 2.0
    );

    let mut sizes: Vec<usize> = rows.iter().map(|x| x.rates.size).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let mut legend = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let of = |kind: &str| -> Vec<&Row> {
            rows.iter()
                .filter(|x| x.variant == kind && x.rates.size == size)
                .collect()
        };
        for (kind, dash) in [("plain", "1 0"), ("wireguard", "12 3 2 3")] {
            if let Some(row) = of(kind).first().filter(|x| positive(x.rates.median_pps)) {
                let y = py(row.rates.median_pps);
                let _ = writeln!(
                    s,
                    "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"{colour}\" \
                     stroke-opacity=\"0.45\" stroke-dasharray=\"{dash}\"/>",
                    W - RIGHT
                );
            }
        }
        for (kind, dash) in METHODS {
            let mut pts: Vec<&Row> = of(kind);
            pts.sort_by_key(|x| x.rules);
            let path: Vec<String> = pts
                .iter()
                .filter_map(|x| Some((x.rules? as f64, x.rates.median_pps)))
                .filter(|(_, y)| positive(*y))
                .map(|(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
                .collect();
            if path.is_empty() {
                continue;
            }
            let _ = writeln!(
                s,
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" \
                 stroke-dasharray=\"{}\" points=\"{}\"/>",
                if dash.is_empty() { "1 0" } else { dash },
                path.join(" ")
            );
            for p in &path {
                let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
                let _ = writeln!(
                    s,
                    "<circle cx=\"{x}\" cy=\"{y}\" r=\"3\" fill=\"{colour}\"/>"
                );
            }
        }
        legend.push((format!("{size} B"), colour, "1 0"));
    }
    legend
        .extend(METHODS.map(|(k, d)| (k.to_owned(), "#444", if d.is_empty() { "1 0" } else { d })));
    legend.push(("plain (ref.)".into(), "#444", "1 0"));
    legend.push(("wireguard (ref.)".into(), "#444", "12 3 2 3"));
    for (i, (label, colour, dash)) in legend.iter().enumerate() {
        let y = TOP + 10.0 + i as f64 * 20.0;
        let x = W - RIGHT + 20.0;
        let _ = writeln!(
            s,
            "<line x1=\"{x}\" x2=\"{}\" y1=\"{y}\" y2=\"{y}\" stroke=\"{colour}\" stroke-width=\"2\" \
             stroke-dasharray=\"{dash}\"/><text x=\"{}\" y=\"{}\">{}</text>",
            x + 36.0,
            x + 44.0,
            y + 4.0,
            esc(label)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Whole decades around the values (at least one decade wide).
fn decades(v: &[f64]) -> (f64, f64) {
    let lo = v
        .iter()
        .copied()
        .reduce(f64::min)
        .unwrap_or(1.0)
        .max(1.0)
        .log10()
        .floor();
    let hi = v
        .iter()
        .copied()
        .reduce(f64::max)
        .unwrap_or(10.0)
        .max(1.0)
        .log10()
        .ceil();
    (lo, if hi > lo { hi } else { lo + 1.0 })
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decades_cover_the_values() {
        assert_eq!(decades(&[3_300.0, 1_200_000.0]), (3.0, 7.0));
        assert_eq!(decades(&[10.0]), (1.0, 2.0));
        assert_eq!(decades(&[]), (0.0, 1.0));
        assert_eq!(esc("a<b&"), "a&lt;b&amp;");
    }
}
