//! `--tx-iface`: a router under test (another box) cabled between two of this machine's
//! interfaces. This machine is the generator and the receiver: it sends out of the tx interface
//! to `--dst`, the device forwards, and the rx interface's counter says what came through (the
//! packets are not for us, so our IP layer drops them and nothing goes back).

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::args::{Interfaces, Settings};
use crate::blaster::{BlastConfig, BlastReport};
use crate::device_report::{DeviceReport, DeviceRow};
use crate::error::Error;
use crate::lab::UDP_PORT;
use crate::measure::{self, Target};
use crate::progress::Progress;
use crate::stop::Stop;
use crate::sysinfo::{self, Machine};

/// How long the probe before measuring sends.
const PROBE_TIME: Duration = Duration::from_millis(200);

impl Target for Interfaces {
    fn dst(&self) -> Ipv4Addr {
        self.dst
    }

    fn blast(
        &self,
        cfg: &BlastConfig,
        pin: Option<usize>,
        stop: &Stop,
    ) -> Result<BlastReport, Error> {
        measure::blast_pinned(cfg, pin, stop).map_err(|e| Error::io("the traffic generator", e))
    }

    fn rx(&self) -> Result<u64, Error> {
        crate::netdev::read_rx_packets(&self.rx_iface)
            .map_err(|e| Error::io(format!("reading {}'s counters", self.rx_iface), e))
    }
}

/// Refuses what cannot work before sending a packet: missing or down interfaces, a local
/// `--dst`, a route to it that does not leave by the tx interface.
pub fn check(i: &Interfaces) -> Result<(), Error> {
    for iface in [&i.tx_iface, &i.rx_iface] {
        // `ip` rather than /sys/class/net, which shows the mount's network namespace.
        let out = Command::new("ip")
            .args(["-o", "link", "show", "dev", iface])
            .output()
            .map_err(|e| Error::io("running ip link show", e))?;
        if !out.status.success() {
            return Err(Error::Invalid(format!(
                "no interface {iface} on this machine"
            )));
        }
        let link = String::from_utf8_lossy(&out.stdout);
        let state = link
            .split_whitespace()
            .skip_while(|w| *w != "state")
            .nth(1)
            .unwrap_or("UNKNOWN");
        // Virtual links without carrier reporting say UNKNOWN.
        if !matches!(state, "UP" | "UNKNOWN") {
            return Err(Error::Invalid(format!(
                "{iface} is {state} (ip link set {iface} up, and check its cable)"
            )));
        }
    }
    // Binding succeeds only to one of our own addresses.
    if UdpSocket::bind(SocketAddrV4::new(i.dst, 0)).is_ok() {
        return Err(Error::Invalid(format!(
            "--dst {} is an address of this machine: the kernel would deliver it here instead \
             of sending it through the device under test",
            i.dst
        )));
    }
    let dst = i.dst.to_string();
    let out = Command::new("ip")
        .args(["-o", "route", "get", &dst])
        .output()
        .map_err(|e| Error::io("running ip route get", e))?;
    let route = String::from_utf8_lossy(&out.stdout);
    let dev = route
        .split_whitespace()
        .skip_while(|w| *w != "dev")
        .nth(1)
        .unwrap_or("");
    if !out.status.success() || dev != i.tx_iface {
        return Err(Error::Invalid(format!(
            "traffic for {dst} would leave by {} instead of {}: add a route through the device \
             under test, e.g. `ip route add {dst}/32 via <its address on {}> dev {}`",
            if dev.is_empty() { "no interface" } else { dev },
            i.tx_iface,
            i.tx_iface,
            i.tx_iface
        )));
    }
    Ok(())
}

/// A short burst: at least some of it must arrive at the rx interface.
fn probe(i: &Interfaces, s: &Settings, stop: &Stop) -> Result<(), Error> {
    let (sent, delivered) = measure::burst(i, s, UDP_PORT, PROBE_TIME, stop)?;
    if sent == 0 {
        return Err(Error::Invalid(format!(
            "nothing could be sent to {} out of {}",
            i.dst, i.tx_iface
        )));
    }
    if delivered * 100 < sent {
        return Err(Error::Invalid(format!(
            "{delivered} of {sent} probe packets to {} arrived at {}: the device under test does \
             not forward them there (check its routes, forwarding and firewall, and that it \
             sends {} towards {}'s MAC address)",
            i.dst, i.rx_iface, i.dst, i.rx_iface
        )));
    }
    Ok(())
}

/// Checks, probes, then measures every size `runs` times (sizes rotating), and reports.
pub fn bench_device(s: &Settings, i: &Interfaces, stop: &Stop) -> Result<DeviceReport, Error> {
    let started = Instant::now();
    let date = sysinfo::utc_now();
    let machine = Machine::read();
    check(i)?;
    probe(i, s, stop)?;
    let steps = s.runs * s.sizes.len();
    eprintln!(
        "meshgate bench: {} -> device under test -> {} ({}), {} run(s) x {} size(s) = {steps} \
         windows of {} ms",
        i.tx_iface,
        i.rx_iface,
        i.dst,
        s.runs,
        s.sizes.len(),
        s.window_ms
    );
    let mut rates = vec![Vec::new(); s.sizes.len()];
    let mut progress = Progress::new(steps);
    for run in 0..s.runs {
        let mut order: Vec<usize> = (0..s.sizes.len()).collect();
        order.rotate_left(run % s.sizes.len().max(1));
        for k in order {
            stop.check()?;
            progress.show(&format!("run {}: {} B", run + 1, s.sizes[k]));
            rates[k].push(measure::measure(i, s, s.sizes[k], UDP_PORT, stop)?);
            progress.step();
        }
    }
    progress.finish();
    let results = s
        .sizes
        .iter()
        .zip(&rates)
        .map(|(&size, rates)| DeviceRow::new(size, rates, s.link_speed_bps))
        .collect();
    Ok(DeviceReport {
        tool: "meshgate bench",
        version: env!("CARGO_PKG_VERSION"),
        mode: "interfaces",
        date,
        machine,
        settings: s.clone(),
        interfaces: i.clone(),
        counted_at: "rx_packets of --rx-iface over each window",
        results,
        load_average_end: sysinfo::load_average(),
        elapsed_s: started.elapsed().as_secs_f64(),
    })
}
