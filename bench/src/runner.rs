//! The run: validate, build the lab, measure every variant in every run (rotating which goes
//! first), then print the table, the JSON and the plot.

use std::io::Write as _;
use std::time::Instant;

use crate::args::{BenchArgs, Settings};
use crate::error::Error;
use crate::lab::{Topo, UDP_PORT};
use crate::measure;
use crate::progress::Progress;
use crate::report::{LabInfo, Report, Samples, WireguardInfo};
use crate::stop::Stop;
use crate::suite;
use crate::sysinfo::{self, Machine};
use crate::variant::{self, RuleSet, Variant};
use crate::wireguard::{self, Tunnel};

/// IPv4 packet bytes of a frame: the frame less the Ethernet header and FCS.
const L2_BYTES: usize = 18;

/// `meshgate bench`: everything the flags ask for. Refused settings fail before anything is
/// built ([`Error::exit_code`] 2); Ctrl-C removes the lab and returns [`Error::Interrupted`].
pub fn run(args: &BenchArgs) -> Result<(), Error> {
    if args.suite {
        let entries = suite::select(args.only.as_deref())?;
        print!("{}", suite::listing());
        if args.suite_run {
            let stop = Stop::on_signals()?;
            let root = std::env::current_dir().map_err(|e| Error::io("current directory", e))?;
            let failed = suite::run_all(&root, &entries, &stop)?;
            if !failed.is_empty() {
                return Err(Error::Setup(format!(
                    "benchmarks failed: {}",
                    failed.join(", ")
                )));
            }
        }
        return Ok(());
    }
    let settings = args.settings()?;
    if !is_root() {
        return Err(Error::Setup(
            "meshgate bench needs root (network namespaces, nftables, tc BPF): nothing measured"
                .into(),
        ));
    }
    let stop = Stop::on_signals()?;
    if let Some(interfaces) = &settings.interfaces {
        let report = crate::iface::bench_device(&settings, interfaces, &stop)?;
        return print_report(args.json, &crate::device_report::render(&report), &report);
    }
    let report = bench(&settings, &stop)?;
    print_report(args.json, &crate::table::render(&report), &report)?;
    if let Some(path) = &args.svg {
        std::fs::write(path, crate::svg::render(&report))
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        eprintln!("plot written to {}", path.display());
    }
    Ok(())
}

/// The table on stdout, or with `json` the JSON document on stdout and the table on stderr.
fn print_report(json: bool, table: &str, report: &impl serde::Serialize) -> Result<(), Error> {
    if json {
        eprint!("{table}");
        let json =
            serde_json::to_string_pretty(report).map_err(|e| Error::Setup(format!("JSON: {e}")))?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{json}").map_err(|e| Error::io("writing stdout", e))?;
    } else {
        print!("{table}");
    }
    Ok(())
}

/// Builds the lab, measures, tears the lab down and returns the results. Progress and the
/// up-front estimate go to stderr.
pub fn bench(s: &Settings, stop: &Stop) -> Result<Report, Error> {
    let started = Instant::now();
    let date = sysinfo::utc_now();
    let machine = Machine::read();
    bench_inner(s, stop, started, date, machine).map_err(|e| {
        // A command killed by the terminal's Ctrl-C fails on its own: report the interrupt.
        if stop.is_set() { Error::Interrupted } else { e }
    })
}

fn sizes_for(v: Variant, s: &Settings) -> Vec<usize> {
    s.sizes
        .iter()
        .copied()
        .filter(|&f| !v.tunnelled() || f - L2_BYTES <= wireguard::MTU)
        .collect()
}

fn bench_inner(
    s: &Settings,
    stop: &Stop,
    started: Instant,
    date: String,
    machine: Machine,
) -> Result<Report, Error> {
    let order = variant::all(&s.rules, s.wireguard);
    // Every other variant is measured right after a plain window of the same size (A/B
    // pairs), so each ratio compares windows seconds apart, whatever the machine does.
    let others: Vec<Variant> = order
        .iter()
        .copied()
        .filter(|v| *v != Variant::Plain)
        .collect();
    let steps: usize = others
        .iter()
        .map(|&v| 2 * sizes_for(v, s).len())
        .sum::<usize>()
        * s.runs;
    let filters = others.iter().filter(|v| v.filters()).count() * s.runs;
    let estimate = measure::cost(s).as_secs_f64() * steps as f64 + 0.15 * filters as f64;
    eprintln!(
        "meshgate bench: {} run(s) x {} variants, each paired with plain, x {} size(s) = {steps} \
         windows of {} ms; about {estimate:.0} s plus setup (rule loading grows with N)",
        s.runs,
        others.len(),
        s.sizes.len(),
        s.window_ms
    );

    let mut topo = Topo::build()?;
    stop.check()?;
    if s.wireguard {
        topo.tunnel = Some(Tunnel::build(&topo, stop)?);
    }
    let backend = topo.tunnel.as_ref().map(|t| t.backend);
    if let Some(b) = backend {
        eprintln!("wireguard: {} ({})", b.label(), wireguard::TOPOLOGY);
    }
    let sets = s
        .rules
        .iter()
        .map(|&n| {
            stop.check()?;
            RuleSet::build(n, &topo.rtr_in)
        })
        .collect::<Result<Vec<_>, _>>()?;

    // One unrecorded window first: the first traffic through a new lab (neighbour
    // resolution, cold caches, the generator's first sockets) runs slower than the rest.
    if let Some(&first) = s.sizes.first() {
        measure::measure(&topo, s, first, UDP_PORT, stop)?;
    }

    let mut samples = Samples::default();
    let mut progress = Progress::new(steps);
    for run in 0..s.runs {
        // Rotating the first variant spreads warm-up and drift over all of them.
        let mut rotated = others.clone();
        rotated.rotate_left(run % others.len().max(1));
        for v in rotated {
            stop.check()?;
            let sizes = sizes_for(v, s);
            let mut plain = Vec::with_capacity(sizes.len());
            for &size in &sizes {
                progress.show(&format!(
                    "run {}/{}: plain @ {size} B (pair of {})",
                    run + 1,
                    s.runs,
                    v.label()
                ));
                let rate = measured(&topo, s, Variant::Plain, size, stop)?;
                samples.push(Variant::Plain, size, rate, rate.delivered);
                plain.push(rate.delivered);
                progress.step();
            }
            if sizes.is_empty() {
                continue;
            }
            progress.show(&format!(
                "run {}/{}: installing {}",
                run + 1,
                s.runs,
                v.label()
            ));
            let installed = variant::install(&topo, v, &sets)?;
            let result = (|| -> Result<(), Error> {
                if v.filters() {
                    measure::check_filters(&topo, s, &v.label(), stop)?;
                }
                for (&size, &base) in sizes.iter().zip(&plain) {
                    progress.show(&format!(
                        "run {}/{}: {} @ {size} B",
                        run + 1,
                        s.runs,
                        v.label()
                    ));
                    let rate = measured(&topo, s, v, size, stop)?;
                    samples.push(v, size, rate, base);
                    progress.step();
                }
                Ok(())
            })();
            let removed = installed.remove(&topo);
            result?;
            removed?;
        }
    }
    progress.finish();

    let wireguard = backend.map(|backend| WireguardInfo {
        backend,
        topology: wireguard::TOPOLOGY,
        mtu: wireguard::MTU,
        skipped_sizes: s
            .sizes
            .iter()
            .copied()
            .filter(|f| !sizes_for(Variant::Wireguard, s).contains(f))
            .collect(),
    });
    drop(topo);
    Ok(Report {
        tool: "meshgate bench",
        mode: "lab",
        version: env!("CARGO_PKG_VERSION"),
        date,
        machine,
        settings: s.clone(),
        lab: LabInfo {
            topology: "snd 10.71.1.2 -> rtr (IPv4 forwarding, filters on its ingress veth) -> \
                       rcv 10.71.2.2, veth pairs in network namespaces",
            generator: "sendmmsg, 64 datagrams per call, one connected UDP socket per flow, \
                        pinned to one CPU",
            counted_at: "rx_packets of rcv's veth over the window (not at the sender)",
        },
        wireguard,
        results: samples.rows(&order, &s.sizes, s.link_speed_bps),
        load_average_end: sysinfo::load_average(),
        elapsed_s: started.elapsed().as_secs_f64(),
    })
}

/// One window of `v` (already in place) that must deliver something.
fn measured(
    topo: &Topo,
    s: &Settings,
    v: Variant,
    size: usize,
    stop: &Stop,
) -> Result<measure::Rate, Error> {
    let rate = measure::measure(topo, s, size, UDP_PORT, stop)?;
    if rate.delivered <= 0.0 {
        return Err(Error::Check(format!(
            "{} delivered nothing of the allowed flow at {size} B",
            v.label()
        )));
    }
    Ok(rate)
}

fn is_root() -> bool {
    // Effective uid, the second field of "Uid:" (no libc call, no unsafe).
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
            .unwrap_or(false)
    })
}
