//! Time from starting two agents to a direct path between them, for the `time_to_direct`
//! bench: the NAT lab's topologies (or one plain switch), a coordinator and a `meshgate derp`
//! relay, both daemons started at once, light traffic both ways, and both agents' `meshgate
//! status --json` polled until each shows its peer on a direct path.

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::Stdio;
use std::time::{Duration, Instant};

use meshgate_netns_lab::{Host, NatKind, Proc};
use meshgate_wg::BackendChoice;

use crate::nat_lab::Topology;
use crate::tailnet_lab::{TailnetLab, ipv4_of};

/// How long a run may take before it counts as a failure.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(30);
/// How often both agents' status is read.
const POLL_EVERY: Duration = Duration::from_millis(50);
/// Interval of the background pings (root may go below ping's 0.2 s floor).
const PING_INTERVAL: &str = "0.1";

/// The cases where a direct path is possible without port mapping: no NAT (the baseline),
/// endpoint-independent on both sides, independent against dependent, and both agents behind
/// one hairpinning router.
pub fn direct_cases() -> Vec<(&'static str, Topology)> {
    use NatKind::{EndpointDependent as Edm, EndpointIndependent as Eim};
    vec![
        ("no NAT", Topology::Switch),
        ("EIM-EIM", Topology::Behind(Eim, Eim)),
        ("EIM-EDM", Topology::Behind(Eim, Edm)),
        ("same NAT (hairpin)", Topology::SameNat),
    ]
}

/// Starts both agents' daemons on a fresh lab (`topology`), pings both ways every 100 ms once they know each other, and returns the time from
/// starting the daemons until both show `"path": "direct"` with a disco latency; `None` after
/// [`GIVE_UP_AFTER`] (the daemons' logs are then on stderr). The lab is torn down before
/// returning. The clock starts once the coordinator and the relay accept TCP.
pub fn time_to_direct(backend: BackendChoice, topology: Topology) -> Option<Duration> {
    let name = format!("dt{}", topology.name());
    let mut net = TailnetLab::with_agents(&name, backend, |lab, internet| {
        topology.place(lab, internet)
    });
    net.lab.check_isolation().unwrap();
    let derp_flags = net.start_relay();
    let derp_flags: Vec<&str> = derp_flags.iter().map(String::as_str).collect();
    net.serve(&derp_flags);
    // The daemons would otherwise race the servers' listen and back off for a second (the
    // control client's retry), which is the lab's doing, not the agents'.
    let coordinator: SocketAddr = net.listen.parse().unwrap();
    let relay = SocketAddr::new(coordinator.ip(), 8443);
    for addr in [coordinator, relay] {
        assert!(
            accepts(&net.coordinator, addr),
            "{addr} never listened\n{}",
            net.logs()
        );
    }

    // Declared after `net`, so dropped (killed) before the lab that holds their namespaces.
    let started = Instant::now();
    let _daemons: Vec<Proc> = (0..2).map(|i| net.start_daemon(i, 1, true, &[])).collect();
    let mut pings: Vec<Proc> = Vec::new();
    let deadline = started + GIVE_UP_AFTER;
    let mut next = started;
    while Instant::now() < deadline {
        let [a, b] = statuses(&net);
        if pings.is_empty()
            && let (Some(addr_a), Some(addr_b)) = (self_ipv4(&a), self_ipv4(&b))
            && peer_known(&a)
            && peer_known(&b)
        {
            // Disco keeps a session active only while there is traffic, as with a user.
            pings.push(start_pinging(&net.agents[0], addr_b));
            pings.push(start_pinging(&net.agents[1], addr_a));
        }
        if proven_direct(&a) && proven_direct(&b) {
            return Some(started.elapsed());
        }
        next += POLL_EVERY;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        } else {
            next = Instant::now();
        }
    }
    let [a, b] = statuses(&net);
    eprintln!(
        "{}: no direct path after {GIVE_UP_AFTER:?}: n0 {:?}, n1 {:?}\n{}",
        name,
        path_of(&a),
        path_of(&b),
        net.logs()
    );
    None
}

/// Whether something in `host` accepts TCP on `addr` within 10 s.
fn accepts(host: &Host, addr: SocketAddr) -> bool {
    host.run(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            // Refused: nothing announces the listen, so poll for it.
            std::thread::sleep(Duration::from_millis(5));
        }
    })
    .unwrap_or(false)
}

/// Both agents' status, read at the same time so the sample is one moment.
fn statuses(net: &TailnetLab) -> [Option<serde_json::Value>; 2] {
    std::thread::scope(|s| {
        let a = s.spawn(|| net.status(0));
        let b = net.status(1);
        [a.join().ok().flatten(), b]
    })
}

fn self_ipv4(status: &Option<serde_json::Value>) -> Option<IpAddr> {
    ipv4_of(&status.as_ref()?["self"]["addresses"])
}

fn peer_known(status: &Option<serde_json::Value>) -> bool {
    status
        .as_ref()
        .and_then(|s| s["peers"].as_array())
        .is_some_and(|peers| peers.len() == 1)
}

fn path_of(status: &Option<serde_json::Value>) -> Option<&str> {
    status.as_ref()?["peers"][0]["path"].as_str()
}

/// Direct, and by a path disco has had a pong on (it shows a latency). Without the latency, a
/// "direct" can be the agent's guess at the peer's first endpoint while the peer's home relay
/// region is not yet known, which lasts until the next netmap (tens of ms) and proves nothing.
fn proven_direct(status: &Option<serde_json::Value>) -> bool {
    path_of(status) == Some("direct")
        && status
            .as_ref()
            .is_some_and(|s| s["peers"][0]["latency_ms"].is_number())
}

/// `ping` to `addr` every 100 ms from `host` until killed (the returned handle's drop).
fn start_pinging(host: &Host, addr: IpAddr) -> Proc {
    let mut ping = host.command("ping");
    ping.args(["-n", "-q", "-i", PING_INTERVAL, "-W", "1"])
        .arg(addr.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    host.spawn(ping).expect("ping")
}

/// Median, p95 (nearest rank), min and max of a set of times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    pub median: Duration,
    pub p95: Duration,
    pub min: Duration,
    pub max: Duration,
}

impl Summary {
    /// `None` for no samples. The median of an even count is the mean of the middle two.
    pub fn of(samples: &[Duration]) -> Option<Summary> {
        let mut sorted = samples.to_vec();
        sorted.sort();
        let n = sorted.len();
        let (&min, &max) = (sorted.first()?, sorted.last()?);
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2
        };
        // Nearest rank: the smallest sample with at least 95 % of samples at or below it.
        let rank = (n * 95).div_ceil(100).max(1);
        let p95 = sorted[rank - 1];
        Some(Summary {
            median,
            p95,
            min,
            max,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn summary_takes_nearest_rank_p95_and_middle_median() {
        let twenty: Vec<u64> = (1..=20).map(|i| i * 100).collect();
        let s = Summary::of(&ms(&twenty)).unwrap();
        assert_eq!(s.median, Duration::from_millis(1050));
        assert_eq!(s.p95, Duration::from_millis(1900));
        assert_eq!(s.min, Duration::from_millis(100));
        assert_eq!(s.max, Duration::from_millis(2000));

        let three = Summary::of(&ms(&[900, 300, 3000])).unwrap();
        assert_eq!(three.median, Duration::from_millis(900));
        assert_eq!(three.p95, Duration::from_millis(3000));
        assert_eq!(Summary::of(&[]), None);
    }

    /// Needs root and `cargo build -p meshgate`, as the other lab scenarios.
    #[test]
    fn plain_switch_ends_direct_within_the_limit() {
        let took = time_to_direct(BackendChoice::Userspace, Topology::Switch);
        assert!(took.is_some(), "no direct path within {GIVE_UP_AFTER:?}");
        println!("time to direct on one switch: {took:?}");
    }
}
