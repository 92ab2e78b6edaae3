//! The flags of `meshgate bench`, their parsers, and the settings they resolve to. Every check
//! is here, so a refused setting never starts a lab.

use std::net::Ipv4Addr;
use std::time::Duration;

use serde::Serialize;

use crate::error::Error;

/// Ethernet header (14) + FCS (4) + IPv4 (20) + UDP (8): what a frame carries besides payload.
pub const FRAME_OVERHEAD: usize = 14 + 4 + 20 + 8;
/// Smallest Ethernet frame (a shorter one is padded to this on the wire).
pub const MIN_FRAME: usize = 64;
/// Largest untagged Ethernet frame at MTU 1500 (1500 + 14 + 4).
pub const MAX_FRAME: usize = 1518;
/// Preamble + start delimiter (8) and inter-frame gap (12) that every frame costs on the wire.
pub const WIRE_GAP: usize = 20;
/// Above this a linear nftables chain takes minutes to load and the bench hours to finish.
pub const MAX_RULE_COUNT: usize = 100_000;
/// The median needs at least this many runs (unless `--short`).
pub const MIN_RUNS: usize = 3;
const MAX_RUNS: usize = 100;
const MIN_WINDOW: Duration = Duration::from_millis(50);
const MAX_WINDOW: Duration = Duration::from_secs(60);

/// `meshgate bench`: packets per second through a sender -> router -> receiver lab in network
/// namespaces, for plain kernel forwarding, WireGuard, our BPF ACL, nftables sets and a linear
/// nftables chain, as ratios to plain forwarding measured in the same run. Needs root.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct BenchArgs {
    /// Tiny counts for tests: 1 run, 200 ms windows, rules 10, size 64 (flags given still win).
    #[arg(long)]
    pub short: bool,
    /// Runs; every run measures every variant once, each right after a plain window, the first
    /// variant rotating. Default 3 (the minimum without --short).
    #[arg(long, value_name = "R")]
    pub runs: Option<usize>,
    /// Measured window per variant, e.g. `2s`, `500ms`. Default 2s.
    #[arg(long, value_name = "TIME", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Ethernet frame sizes in bytes, FCS included (64..=1518), comma-separated.
    /// Default 64,512,1420.
    #[arg(long, value_name = "BYTES", value_delimiter = ',', value_parser = parse_size)]
    pub sizes: Option<Vec<usize>>,
    /// Policy rule counts for the ACL variants (1..=100000), comma-separated. Default 10,1000,10000.
    #[arg(long, value_name = "N", value_delimiter = ',', value_parser = parse_rule_count)]
    pub rules: Option<Vec<usize>>,
    /// Link speed whose line rate is shown beside the results: 1G, 2.5G, 10G, 25G, 40G, 100G,
    /// or bits per second.
    #[arg(long, value_name = "SPEED", default_value = "10G", value_parser = parse_link_speed)]
    pub link_speed: u64,
    /// UDP flows (sockets with their own source port).
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub flows: u16,
    /// CPU to pin the traffic generator to. Default: the last CPU.
    #[arg(long, value_name = "CPU", conflicts_with = "no_pin")]
    pub pin_cpu: Option<usize>,
    /// Do not pin the traffic generator.
    #[arg(long)]
    pub no_pin: bool,
    /// Skip the WireGuard variant.
    #[arg(long)]
    pub no_wireguard: bool,
    /// Print the results as one JSON document on stdout (the table goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Also write a plot of packets per second against rule count to this SVG file.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<std::path::PathBuf>,
    /// Instead of measuring: list the other benchmarks and the commands that run them.
    #[arg(long)]
    pub suite: bool,
    /// With --suite: run them one after another (cargo, from the workspace root).
    #[arg(long, requires = "suite")]
    pub suite_run: bool,
    /// With --suite-run: only these benchmarks (names as --suite lists them), comma-separated.
    #[arg(
        long,
        value_name = "NAMES",
        value_delimiter = ',',
        requires = "suite_run"
    )]
    pub only: Option<Vec<String>>,
    /// Measure a router on real hardware instead of the namespace lab: this machine sends out
    /// of IFACE, through the device under test, to --dst, and counts what arrives at
    /// --rx-iface. Needs --rx-iface and --dst; only what the device runs is measured.
    #[arg(long, value_name = "IFACE", requires_all = ["rx_iface", "dst"])]
    pub tx_iface: Option<String>,
    /// With --tx-iface: the interface the device under test forwards to.
    #[arg(long, value_name = "IFACE", requires = "tx_iface")]
    pub rx_iface: Option<String>,
    /// With --tx-iface: where the traffic goes (IPv4, not an address of this machine); the
    /// device under test must send it out towards --rx-iface (a route, or a static neighbour
    /// entry for this address with --rx-iface's MAC).
    #[arg(long, value_name = "IPV4", requires = "tx_iface")]
    pub dst: Option<Ipv4Addr>,
    /// With --tx-iface: what the device under test runs, for the report (e.g. "board X,
    /// meshgate with 1000 rules").
    #[arg(long, value_name = "TEXT", requires = "tx_iface")]
    pub label: Option<String>,
}

/// `--tx-iface` mode: the interfaces around a router under test.
#[derive(Debug, Clone, Serialize)]
pub struct Interfaces {
    pub tx_iface: String,
    pub rx_iface: String,
    pub dst: Ipv4Addr,
    pub label: Option<String>,
}

/// What a run uses, every default resolved.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub short: bool,
    pub runs: usize,
    pub warmup_ms: u64,
    pub window_ms: u64,
    /// Ethernet frame sizes, FCS included.
    pub sizes: Vec<usize>,
    pub rules: Vec<usize>,
    pub link_speed_bps: u64,
    pub flows: u16,
    /// The CPU the generator is pinned to, if any.
    pub pin_cpu: Option<usize>,
    pub wireguard: bool,
    /// `--tx-iface` mode: the device under test between two of this machine's interfaces.
    pub interfaces: Option<Interfaces>,
    /// How sizes are meant, for readers of the JSON.
    pub size_meaning: &'static str,
}

impl Settings {
    pub fn warmup(&self) -> Duration {
        Duration::from_millis(self.warmup_ms)
    }

    pub fn window(&self) -> Duration {
        Duration::from_millis(self.window_ms)
    }
}

impl BenchArgs {
    /// Parses `meshgate bench`'s flags from `args` (no program name), as the command line
    /// would: for callers that embed the bench.
    pub fn try_parse_args(args: &[&str]) -> Result<BenchArgs, clap::Error> {
        #[derive(clap::Parser)]
        struct Command {
            #[command(flatten)]
            bench: BenchArgs,
        }
        <Command as clap::Parser>::try_parse_from(
            std::iter::once("meshgate bench").chain(args.iter().copied()),
        )
        .map(|c| c.bench)
    }

    /// Resolves defaults (`--short` ones when set) and refuses what cannot be measured. The
    /// clap parsers already refuse bad values from a command line; this repeats the checks for
    /// callers that build `BenchArgs` in code.
    pub fn settings(&self) -> Result<Settings, Error> {
        let short = self.short;
        let runs = self.runs.unwrap_or(if short { 1 } else { MIN_RUNS });
        if runs == 0 || runs > MAX_RUNS {
            return Err(Error::Invalid(format!(
                "--runs {runs}: must be 1..={MAX_RUNS}"
            )));
        }
        if runs < MIN_RUNS && !short {
            return Err(Error::Invalid(format!(
                "--runs {runs}: a median with a spread needs at least {MIN_RUNS} runs \
                 (or use --short for a smoke run)"
            )));
        }
        let window = self.duration.unwrap_or(if short {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(2)
        });
        check_window(window).map_err(Error::Invalid)?;
        let sizes = self
            .sizes
            .clone()
            .unwrap_or_else(|| if short { vec![64] } else { vec![64, 512, 1420] });
        let rules = self.rules.clone().unwrap_or_else(|| {
            if short {
                vec![10]
            } else {
                vec![10, 1000, 10_000]
            }
        });
        if sizes.is_empty() || rules.is_empty() {
            return Err(Error::Invalid(
                "--sizes and --rules need at least one value".into(),
            ));
        }
        for &s in &sizes {
            check_size(s).map_err(Error::Invalid)?;
        }
        for &n in &rules {
            check_rule_count(n).map_err(Error::Invalid)?;
        }
        if self.link_speed == 0 {
            return Err(Error::Invalid("--link-speed must be above 0".into()));
        }
        if self.flows == 0 || self.flows > 256 {
            return Err(Error::Invalid(format!(
                "--flows {}: must be 1..=256",
                self.flows
            )));
        }
        let pin_cpu = if self.no_pin {
            None
        } else {
            Some(
                self.pin_cpu
                    .unwrap_or_else(|| crate::sysinfo::cpus().saturating_sub(1)),
            )
        };
        let interfaces = self.interfaces()?;
        Ok(Settings {
            short,
            runs,
            warmup_ms: if short { 100 } else { 300 },
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
            sizes: dedup(sizes),
            rules: dedup(rules),
            link_speed_bps: self.link_speed,
            flows: self.flows,
            pin_cpu,
            wireguard: !self.no_wireguard && interfaces.is_none(),
            interfaces,
            size_meaning: "Ethernet frame bytes incl. 14 B header and 4 B FCS; \
                           UDP payload = size - 46; line rate counts size + 20 B preamble/IFG",
        })
    }
}

impl BenchArgs {
    /// The `--tx-iface` settings, refusing lab-only flags and incomplete or contradictory ones.
    fn interfaces(&self) -> Result<Option<Interfaces>, Error> {
        let Some(tx_iface) = self.tx_iface.clone() else {
            return Ok(None);
        };
        let (Some(rx_iface), Some(dst)) = (self.rx_iface.clone(), self.dst) else {
            return Err(Error::Invalid(
                "--tx-iface needs --rx-iface and --dst".into(),
            ));
        };
        if tx_iface == rx_iface {
            return Err(Error::Invalid(format!(
                "--tx-iface and --rx-iface are both {tx_iface}: the device under test sits \
                 between two interfaces"
            )));
        }
        for (flag, given) in [
            ("--rules", self.rules.is_some()),
            ("--no-wireguard", self.no_wireguard),
            ("--svg", self.svg.is_some()),
        ] {
            if given {
                return Err(Error::Invalid(format!(
                    "{flag} is for the namespace lab; with --tx-iface only what the device \
                     under test runs is measured"
                )));
            }
        }
        if dst.is_unspecified() || dst.is_broadcast() || dst.is_multicast() || dst.is_loopback() {
            return Err(Error::Invalid(format!(
                "--dst {dst}: needs a unicast address beyond the device under test"
            )));
        }
        Ok(Some(Interfaces {
            tx_iface,
            rx_iface,
            dst,
            label: self.label.clone(),
        }))
    }
}

fn dedup(mut v: Vec<usize>) -> Vec<usize> {
    v.sort_unstable();
    v.dedup();
    v
}

/// UDP payload bytes of a `frame`-byte Ethernet frame (see [`FRAME_OVERHEAD`]).
pub fn udp_payload(frame: usize) -> usize {
    frame.saturating_sub(FRAME_OVERHEAD)
}

/// Frames per second a link of `bps` carries at most: each frame costs its bytes plus the
/// 20-byte preamble and inter-frame gap (64 B at 10 Gbit/s: 10e9 / (84 * 8) = 14.88 Mpps).
pub fn line_rate_pps(bps: u64, frame: usize) -> f64 {
    bps as f64 / ((frame + WIRE_GAP) as f64 * 8.0)
}

fn check_size(s: usize) -> Result<(), String> {
    if (MIN_FRAME..=MAX_FRAME).contains(&s) {
        Ok(())
    } else {
        Err(format!(
            "packet size {s}: sizes are Ethernet frames with FCS, {MIN_FRAME}..={MAX_FRAME} bytes \
             ({MIN_FRAME} is the smallest frame on the wire and carries the {FRAME_OVERHEAD} bytes \
             of Ethernet, IPv4 and UDP headers plus 18 of payload; {MAX_FRAME} is MTU 1500)"
        ))
    }
}

fn check_rule_count(n: usize) -> Result<(), String> {
    if (1..=MAX_RULE_COUNT).contains(&n) {
        Ok(())
    } else {
        Err(format!(
            "rule count {n}: must be 1..={MAX_RULE_COUNT} (a policy needs at least the one rule \
             that allows the measured flow)"
        ))
    }
}

fn check_window(d: Duration) -> Result<(), String> {
    if (MIN_WINDOW..=MAX_WINDOW).contains(&d) {
        Ok(())
    } else {
        Err(format!(
            "duration {d:?}: the measured window must be {MIN_WINDOW:?}..={MAX_WINDOW:?}"
        ))
    }
}

/// clap parser for `--sizes`.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("packet size {s:?}: not a number of bytes"))?;
    check_size(n).map(|()| n)
}

/// clap parser for `--rules`.
pub fn parse_rule_count(s: &str) -> Result<usize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("rule count {s:?}: not a number"))?;
    check_rule_count(n).map(|()| n)
}

/// clap parser for `--duration`: `2s`, `500ms`, or bare seconds (`1.5`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, scale) = if let Some(ms) = t.strip_suffix("ms") {
        (ms, 1e-3)
    } else if let Some(sec) = t.strip_suffix('s') {
        (sec, 1.0)
    } else {
        (t, 1.0)
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("duration {s:?}: use e.g. 2s or 500ms"))?;
    if !v.is_finite() || v <= 0.0 {
        return Err(format!("duration {s:?}: must be positive"));
    }
    let d = Duration::from_secs_f64(v * scale);
    check_window(d).map(|()| d)
}

/// clap parser for `--link-speed`: one of the Ethernet speeds by name, or bits per second.
pub fn parse_link_speed(s: &str) -> Result<u64, String> {
    let named = match s.trim().to_ascii_uppercase().as_str() {
        "1G" => Some(1_000_000_000),
        "2.5G" => Some(2_500_000_000),
        "10G" => Some(10_000_000_000),
        "25G" => Some(25_000_000_000),
        "40G" => Some(40_000_000_000),
        "100G" => Some(100_000_000_000),
        _ => None,
    };
    match named {
        Some(bps) => Ok(bps),
        None => match s.trim().parse::<u64>() {
            Ok(bps) if bps > 0 => Ok(bps),
            _ => Err(format!(
                "link speed {s:?}: use 1G, 2.5G, 10G, 25G, 40G, 100G or bits per second"
            )),
        },
    }
}

impl Settings {
    /// `10G`-style label of the link speed.
    pub fn link_speed_bps_label(&self) -> String {
        let g = self.link_speed_bps as f64 / 1e9;
        if g >= 1.0 {
            format!("{g}G line rate")
        } else {
            format!("{} bit/s line rate", self.link_speed_bps)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_rate_of_64_bytes_at_10g_is_14_88_mpps() {
        let pps = line_rate_pps(10_000_000_000, 64);
        assert!((pps - 14_880_952.0).abs() < 1.0, "{pps}");
        assert!((line_rate_pps(10_000_000_000, 1518) - 812_743.0).abs() < 1.0);
        assert_eq!(udp_payload(64), 18);
        assert_eq!(udp_payload(1518), 1472);
    }

    #[test]
    fn parsers_refuse_the_impossible() {
        assert!(parse_size("10").unwrap_err().contains("64..=1518"));
        assert!(parse_size("1519").is_err());
        assert_eq!(parse_size("1420"), Ok(1420));
        assert!(parse_rule_count("0").unwrap_err().contains("1..=100000"));
        assert_eq!(parse_rule_count("10000"), Ok(10_000));
        assert_eq!(parse_link_speed("2.5g"), Ok(2_500_000_000));
        assert_eq!(parse_link_speed("1000000"), Ok(1_000_000));
        assert!(parse_link_speed("3G").is_err());
        assert!(parse_link_speed("0").is_err());
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("1h").is_err());
    }

    #[test]
    fn short_defaults_and_the_runs_floor() {
        let s = BenchArgs {
            short: true,
            link_speed: 10_000_000_000,
            flows: 16,
            ..Default::default()
        }
        .settings()
        .unwrap();
        assert_eq!(
            (s.runs, s.window_ms, &s.sizes[..], &s.rules[..]),
            (1, 200, &[64][..], &[10][..])
        );
        let two_runs = BenchArgs {
            runs: Some(2),
            link_speed: 10_000_000_000,
            flows: 16,
            ..Default::default()
        };
        let e = two_runs.settings().unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("at least 3 runs"), "{e}");
        let zero_rules = BenchArgs {
            short: true,
            rules: Some(vec![0]),
            link_speed: 1,
            flows: 1,
            ..Default::default()
        };
        assert!(
            zero_rules
                .settings()
                .unwrap_err()
                .to_string()
                .contains("rule count 0")
        );
    }
}
