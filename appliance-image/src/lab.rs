//! The office around the appliance: a tailnet lab (coordinator and a peer on one switch, the
//! "uplink"), a namespace `appl` whose tap devices the VM's NICs use, bridged to the uplink
//! switch and to a LAN with one host (192.168.50.10).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use meshgate_e2e::meshgate_bin;
use meshgate_e2e::tailnet_lab::TailnetLab;
use meshgate_netns_lab::{Host, Proc};
use meshgate_wg::BackendChoice;

use crate::error::{Error, Result};

pub const LAN: &str = "192.168.50.0/24";
pub const LAN_HOST: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 10);
/// The appliance's address on its LAN (eth1).
pub const LAN_ADDRESS: &str = "192.168.50.1/24";
/// The tap devices in `appl`: the VM's eth0 (uplink) and eth1 (LAN).
pub const TAPS: [&str; 2] = ["tapup", "taplan"];
/// The appliance's name in the tailnet.
pub const HOSTNAME: &str = "office";

#[derive(Debug)]
pub struct ApplianceLab {
    peer: Option<Proc>,
    dhcp: Option<Proc>,
    /// Coordinator and peer `n0` (wireguard-go: this host's kernel has no WireGuard).
    pub net: TailnetLab,
    /// Where qemu runs, with the taps bridged to the uplink switch and the LAN.
    pub appl: Host,
    pub lan_host: Host,
    /// The appliance's uplink address (on the coordinator's switch).
    pub uplink: IpAddr,
}

impl ApplianceLab {
    pub fn new(name: &str) -> Result<ApplianceLab> {
        let mut appl = None;
        let mut net = TailnetLab::with_agents(name, BackendChoice::Userspace, |lab, switch| {
            let peer = lab.add_host("n0").expect("peer host");
            switch.attach(&peer).expect("peer on the switch");
            let host = lab.add_host("appl").expect("appliance host");
            switch.attach(&host).expect("appliance on the switch");
            appl = Some(host);
            vec![peer]
        });
        let appl = appl.ok_or_else(|| Error::VmGone("no appliance host".into()))?;
        let uplink_iface = appl
            .iface_on(&net.switch)
            .ok_or_else(|| Error::VmGone("appliance host not on the switch".into()))?;
        let uplink = appl
            .addr_on(&net.switch)
            .ok_or_else(|| Error::VmGone("no uplink address".into()))?;
        let lan_host = net.lab.add_host("lan")?;
        let lan = net
            .lab
            .connect_with(&appl, &lan_host, &[LAN.parse().expect("LAN subnet")])?;
        let lan_iface = appl
            .iface_on(&lan)
            .ok_or_else(|| Error::VmGone("appliance host not on the LAN".into()))?;
        let host_iface = lan_host
            .iface_on(&lan)
            .ok_or_else(|| Error::VmGone("LAN host not on the LAN".into()))?;
        // The addresses the lab gave `appl` belong to the VM now: the namespace only bridges.
        for (bridge, port, tap) in [
            ("brup", uplink_iface.name.as_str(), TAPS[0]),
            ("brlan", lan_iface.name.as_str(), TAPS[1]),
        ] {
            for args in [
                vec!["ip", "addr", "flush", "dev", port],
                vec!["ip", "link", "add", bridge, "type", "bridge"],
                vec!["ip", "tuntap", "add", "dev", tap, "mode", "tap"],
                vec!["ip", "link", "set", port, "master", bridge],
                vec!["ip", "link", "set", tap, "master", bridge],
                vec!["ip", "link", "set", tap, "up"],
                vec!["ip", "link", "set", bridge, "up"],
            ] {
                appl.exec_ok(args)?;
            }
        }
        let lan_host_addr = format!("{LAN_HOST}/24");
        for args in [
            vec!["ip", "addr", "flush", "dev", host_iface.name.as_str()],
            vec![
                "ip",
                "addr",
                "add",
                lan_host_addr.as_str(),
                "dev",
                host_iface.name.as_str(),
            ],
            vec!["ip", "route", "replace", "default", "via", "192.168.50.1"],
        ] {
            lan_host.exec_ok(args)?;
        }
        net.serve(&[]);
        Ok(ApplianceLab {
            peer: None,
            dhcp: None,
            net,
            appl,
            lan_host,
            uplink,
        })
    }

    /// A meshgate.conf that joins this lab's coordinator and advertises the LAN.
    pub fn config(&self) -> String {
        format!(
            "# written by the appliance-image tests\n\
             login_server = http://{listen}\n\
             auth_key = {key}\n\
             hostname = {HOSTNAME}\n\
             advertise_routes = {LAN}\n\
             advertise_exit_node = false\n\
             lan_interface = eth1\n\
             lan_address = {LAN_ADDRESS}\n\
             uplink_interface = eth0\n\
             uplink_address = {uplink}/24\n",
            listen = self.net.listen,
            key = self.net.secret,
            uplink = self.uplink,
        )
    }

    /// Runs a DHCP server (busybox udhcpd) for the uplink on the coordinator's host: its one
    /// lease is the appliance's uplink address, with the coordinator as router and DNS server
    /// (returned), as an office router would hand out.
    pub fn serve_dhcp(&mut self) -> Result<IpAddr> {
        let coordinator = &self.net.coordinator;
        let iface = coordinator
            .iface_on(&self.net.switch)
            .ok_or_else(|| Error::VmGone("coordinator not on the switch".into()))?;
        let router = coordinator
            .addr_on(&self.net.switch)
            .ok_or_else(|| Error::VmGone("no coordinator address".into()))?;
        let dir = self.dir();
        let conf = dir.join("udhcpd.conf");
        let settings = format!(
            "interface {iface}\nstart {lease}\nend {lease}\nmax_leases 1\n\
             lease_file {leases}\npidfile {pid}\noption subnet 255.255.255.0\n\
             option router {router}\noption dns {router}\noption lease 600\n",
            iface = iface.name,
            lease = self.uplink,
            leases = dir.join("udhcpd.leases").display(),
            pid = dir.join("udhcpd.pid").display(),
        );
        std::fs::write(&conf, settings).map_err(|e| Error::io("writing udhcpd.conf", e))?;
        std::fs::write(dir.join("udhcpd.leases"), "")
            .map_err(|e| Error::io("creating the lease file", e))?;
        let mut cmd = coordinator.command("busybox");
        cmd.args(["udhcpd", "-f"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(dir.join("udhcpd.log"))
                    .map_err(|e| Error::io("creating udhcpd.log", e))?,
            );
        self.dhcp = Some(coordinator.spawn(cmd)?);
        Ok(router)
    }

    /// A per-test scratch directory (removed with the lab).
    pub fn dir(&self) -> PathBuf {
        self.net.dir.0.clone()
    }

    /// Starts the peer's daemon (accepting routes).
    pub fn start_peer(&mut self) {
        self.peer = Some(self.net.start_daemon(0, 1, true, &["--accept-routes"]));
    }

    /// Approves the appliance's LAN route, retrying until the coordinator knows the node.
    pub fn approve_route(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.net.coordinator.exec([
                meshgate_bin().as_os_str(),
                "coordinator".as_ref(),
                "routes".as_ref(),
                "approve".as_ref(),
                HOSTNAME.as_ref(),
                LAN.as_ref(),
                "--db".as_ref(),
                self.net.db.as_os_str(),
            ])?;
            if out.status.success() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: "approving the appliance's route".into(),
                    seconds: timeout.as_secs(),
                    tail: String::from_utf8_lossy(&out.stderr).into_owned(),
                });
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Waits until the peer reaches the LAN host through the appliance (ping).
    pub fn wait_lan_reachable(&self, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        loop {
            if self.net.agents[0].ping(IpAddr::V4(LAN_HOST), 1) {
                return Ok(start.elapsed());
            }
            if start.elapsed() >= timeout {
                return Err(Error::Timeout {
                    what: format!("the peer to reach {LAN_HOST}"),
                    seconds: timeout.as_secs(),
                    tail: format!(
                        "peer status: {:#?}\n{}",
                        self.net.status(0),
                        self.net.logs()
                    ),
                });
            }
        }
    }

    /// A TCP connection from the peer to the LAN host, with a greeting each way.
    pub fn tcp_to_lan(&self) -> Result<()> {
        let addr = SocketAddr::new(IpAddr::V4(LAN_HOST), 8000);
        let listener = self
            .lan_host
            .run(|| TcpListener::bind(addr))?
            .map_err(|e| Error::io("listening on the LAN host", e))?;
        let server = std::thread::spawn(move || -> std::io::Result<Vec<u8>> {
            let (mut stream, _) = listener.accept()?;
            stream.set_read_timeout(Some(Duration::from_secs(10)))?;
            stream.write_all(b"hello from the LAN\n")?;
            let mut got = [0u8; 16];
            let n = stream.read(&mut got)?;
            Ok(got.get(..n).unwrap_or_default().to_vec())
        });
        let said = self.net.agents[0]
            .run(move || -> std::io::Result<Vec<u8>> {
                let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
                stream.set_read_timeout(Some(Duration::from_secs(10)))?;
                let mut got = [0u8; 19];
                stream.read_exact(&mut got)?;
                stream.write_all(b"hi from the peer")?;
                Ok(got.to_vec())
            })?
            .map_err(|e| Error::io(format!("TCP from the peer to {addr}"), e))?;
        let heard = server
            .join()
            .map_err(|_| Error::VmGone("the LAN server thread panicked".into()))?
            .map_err(|e| Error::io("the LAN host's side of the TCP test", e))?;
        if said != b"hello from the LAN\n" || heard != b"hi from the peer" {
            return Err(Error::VmGone(format!(
                "TCP payloads garbled: {said:?} / {heard:?}"
            )));
        }
        Ok(())
    }

    /// Starts `ping -i 0.1` from the peer to the LAN host; stop it with [`PingFlow::stop`].
    pub fn ping_flow(&self) -> Result<PingFlow> {
        let out = self.dir().join(format!("ping-{}.txt", unique()));
        let file = std::fs::File::create(&out).map_err(|e| Error::io("ping output", e))?;
        let mut cmd = self.net.agents[0].command("ping");
        cmd.args(["-n", "-i", "0.1", "-W", "2"])
            .arg(LAN_HOST.to_string())
            .stdout(file)
            .stderr(Stdio::null());
        let proc = self.net.agents[0].spawn(cmd)?;
        Ok(PingFlow { proc, out })
    }
}

fn unique() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A running ping from the peer to the LAN host.
#[derive(Debug)]
pub struct PingFlow {
    proc: Proc,
    out: PathBuf,
}

/// What a ping flow saw: every sequence number up to the last answered one, and which of
/// them got no answer. The requests still in flight when it was stopped are not counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingReport {
    pub answered: usize,
    pub last_seq: u32,
    pub lost: Vec<u32>,
}

impl PingFlow {
    /// What the flow has seen so far (it keeps running).
    pub fn report(&self) -> Result<PingReport> {
        let text =
            std::fs::read_to_string(&self.out).map_err(|e| Error::io("reading ping output", e))?;
        Ok(parse_ping(&text))
    }

    /// Stops the flow (SIGINT, as a person would) and reports it.
    pub fn stop(mut self) -> Result<PingReport> {
        let pid = self.proc.id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.proc.try_wait()?.is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let text =
            std::fs::read_to_string(&self.out).map_err(|e| Error::io("reading ping output", e))?;
        Ok(parse_ping(&text))
    }
}

/// Reads iputils ping's `... icmp_seq=N ...` reply lines.
pub fn parse_ping(text: &str) -> PingReport {
    let mut seen: Vec<u32> = text
        .lines()
        .filter(|l| l.contains("bytes from"))
        .filter_map(|l| {
            let rest = l.split("icmp_seq=").nth(1)?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .collect();
    seen.sort_unstable();
    seen.dedup();
    let last_seq = seen.last().copied().unwrap_or(0);
    let lost = (1..=last_seq)
        .filter(|s| seen.binary_search(s).is_err())
        .collect();
    PingReport {
        answered: seen.len(),
        last_seq,
        lost,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_report_finds_gaps() {
        let text = "PING 192.168.50.10 (192.168.50.10) 56(84) bytes of data.\n\
            64 bytes from 192.168.50.10: icmp_seq=1 ttl=63 time=3.1 ms\n\
            64 bytes from 192.168.50.10: icmp_seq=2 ttl=63 time=3.0 ms\n\
            64 bytes from 192.168.50.10: icmp_seq=4 ttl=63 time=2.9 ms\n\
            64 bytes from 192.168.50.10: icmp_seq=4 ttl=63 time=2.9 ms (DUP!)\n\
            --- 192.168.50.10 ping statistics ---\n\
            5 packets transmitted, 3 received, 40% packet loss, time 401ms\n";
        let report = parse_ping(text);
        assert_eq!(report.answered, 3);
        assert_eq!(report.last_seq, 4);
        assert_eq!(report.lost, vec![3]);
        assert_eq!(parse_ping("").last_seq, 0);
    }
}
