//! Time from two agents up to a direct path, over the direct-capable cases of the NAT matrix:
//! the real `meshgate` binary (coordinator, `meshgate derp`, two `meshgate daemon`s on
//! wireguard-go) in the namespace lab, timed by `meshgate_e2e::direct_timing::time_to_direct`
//! from starting both daemons until both `meshgate status --json` show `"path": "direct"`.
//!
//! Run (root): `cargo build -p meshgate`, then `cargo bench --profile dev -p meshgate-benches
//! --bench time_to_direct` (the lab finds the daemon next to the bench's own target profile, so
//! both must be built in the same one), or with `-- --quick` / `MESHGATE_BENCH_QUICK=1`.
//!
//! N runs per case (20, quick 3), the cases interleaved round-robin so drift on the machine
//! hits them alike; the baseline is the no-NAT case of the same run. A run that is not direct
//! after 30 s is a failure and counts in no statistic.

use std::time::Duration;

use meshgate_e2e::direct_timing::{GIVE_UP_AFTER, Summary, direct_cases, time_to_direct};
use meshgate_e2e::meshgate_bin;
use meshgate_wg::BackendChoice;

const GOAL_MEDIAN: Duration = Duration::from_secs(1);
const GOAL_P95: Duration = Duration::from_secs(3);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let quick = args.iter().any(|a| a == "--quick")
        || std::env::var_os("MESHGATE_BENCH_QUICK").is_some_and(|v| v != "0");
    let runs = if quick { 3 } else { 20 };
    println!("daemon: {}", meshgate_bin().display());

    let cases = direct_cases();
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); cases.len()];
    let mut failures = vec![0usize; cases.len()];
    for run in 1..=runs {
        for (c, (name, topology)) in cases.iter().enumerate() {
            match time_to_direct(BackendChoice::Userspace, *topology) {
                Some(took) => {
                    println!("run {run:>2}/{runs} {name:<20} direct after {took:>8.2?}");
                    times[c].push(took);
                }
                None => {
                    println!("run {run:>2}/{runs} {name:<20} not direct after {GIVE_UP_AFTER:?}");
                    failures[c] += 1;
                }
            }
        }
    }

    let baseline = Summary::of(&times[0]).map(|s| s.median);
    println!();
    println!(
        "{:<20} {:>9} {:>9} {:>9} {:>9} {:>8} {:>9}  goal (median <= 1 s, p95 <= 3 s)",
        "case", "median", "p95", "min", "max", "failures", "vs no NAT"
    );
    for (c, (name, _)) in cases.iter().enumerate() {
        let Some(s) = Summary::of(&times[c]) else {
            println!("{name:<20} no direct run out of {runs}: not met");
            continue;
        };
        let ratio = baseline.map_or("-".to_owned(), |b| {
            format!("{:.2}x", s.median.as_secs_f64() / b.as_secs_f64())
        });
        let met = failures[c] == 0 && s.median <= GOAL_MEDIAN && s.p95 <= GOAL_P95;
        println!(
            "{name:<20} {:>9} {:>9} {:>9} {:>9} {:>5}/{runs:<2} {ratio:>9}  {}",
            secs(s.median),
            secs(s.p95),
            secs(s.min),
            secs(s.max),
            failures[c],
            if met { "met" } else { "not met" }
        );
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}
