//! miniupnpd (Debian's 2.3.1, nftables backend) as a router's port-mapping service: UPnP IGD,
//! NAT-PMP and PCP for the hosts of one LAN. Its DNAT rules live in a table of their own
//! (`miniupnpd`), next to the router's NAT; on a router without NAT this table also
//! masquerades outgoing traffic.
//!
//! miniupnpd refuses to map when its WAN address is in a reserved range (RFC 5737 included), so
//! such a router's WAN segment needs a subnet it accepts (e.g. 44.0.0.0/24, via
//! [`crate::Lab::add_switch_with`]); the lab never routes outside itself either way.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::nat::NatKind;
use crate::process::Proc;
use crate::router::Router;
use crate::segment::Segment;

/// The nft table miniupnpd's rules go in.
pub const UPNP_TABLE: &str = "miniupnpd";

/// What miniupnpd answers. In 2.3.x NAT-PMP and PCP share one switch: asking for one without
/// the other drops the other's requests at the router (by the version byte on UDP 5351).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpnpProtocols {
    pub upnp: bool,
    pub natpmp: bool,
    pub pcp: bool,
    /// Shortest lease granted, in seconds (miniupnpd's `min_lifetime`; its default when none).
    pub min_lifetime: Option<u32>,
}

impl Router {
    /// Starts miniupnpd on this router for the hosts of `lan`, with its files in `dir`; it
    /// runs until the returned process is dropped. Waits (bounded) until it listens. Its table
    /// is made anew each time, so starting it again is a router reboot: no mapping survives.
    pub fn run_miniupnpd(
        &self,
        lan: &Segment,
        dir: &Path,
        protocols: UpnpProtocols,
    ) -> Result<Proc> {
        let wan = self
            .iface_on(self.wan())
            .ok_or_else(|| Error::Setup("the router has no WAN interface".into()))?
            .name;
        let lan_iface = self
            .iface_on(lan)
            .ok_or_else(|| Error::Setup("the router is not on that LAN".into()))?;
        let lan_subnet = lan_iface
            .addrs
            .iter()
            .find(|a| a.addr().is_ipv4())
            .map(|a| a.trunc())
            .ok_or_else(|| Error::Setup("the LAN has no IPv4 subnet".into()))?;
        // Without the router's own NAT, this table translates outgoing traffic too.
        let masquerade = match self.nat().kind {
            NatKind::None => format!("oifname \"{wan}\" masquerade;"),
            _ => String::new(),
        };
        let alone = match (protocols.natpmp, protocols.pcp) {
            (true, false) => "udp dport 5351 @th,64,8 0x02 drop;",
            (false, true) => "udp dport 5351 @th,64,8 0x00 drop;",
            _ => "",
        };
        // Declared, deleted and declared again: one transaction that replaces any earlier one.
        let rules = format!(
            "table inet {UPNP_TABLE} {{}}
delete table inet {UPNP_TABLE}
table inet {UPNP_TABLE} {{
  chain input {{ type filter hook input priority 0; policy accept; {alone} }}
  chain forward {{ type filter hook forward priority 0; policy accept; jump miniupnpd; }}
  chain miniupnpd {{ }}
  chain prerouting {{ type nat hook prerouting priority -100; policy accept; jump prerouting_miniupnpd; }}
  chain postrouting {{ type nat hook postrouting priority 100; policy accept; jump postrouting_miniupnpd; {masquerade} }}
  chain prerouting_miniupnpd {{ }}
  chain postrouting_miniupnpd {{ }}
}}
"
        );
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let nft = dir.join("miniupnpd.nft");
        std::fs::write(&nft, rules).map_err(|e| Error::io("writing miniupnpd.nft", e))?;
        self.exec_ok(["nft".as_ref(), "-f".as_ref(), nft.as_os_str()])?;
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        let conf = format!(
            "ext_ifname={wan}
listening_ip={lan}
http_port=0
enable_upnp={upnp}
enable_natpmp={pmp}
secure_mode=yes
system_uptime=no
{min_lifetime}uuid=3d3cec3a-8cf0-11e0-98ee-001a6bd2d07b
upnp_table_name={UPNP_TABLE}
upnp_nat_table_name={UPNP_TABLE}
upnp_forward_chain=miniupnpd
upnp_nat_chain=prerouting_miniupnpd
upnp_nat_postrouting_chain=postrouting_miniupnpd
allow 1024-65535 {lan_subnet} 1024-65535
deny 0-65535 0.0.0.0/0 0-65535
",
            lan = lan_iface.name,
            upnp = yes_no(protocols.upnp),
            pmp = yes_no(protocols.natpmp || protocols.pcp),
            min_lifetime = protocols
                .min_lifetime
                .map(|s| format!("min_lifetime={s}\n"))
                .unwrap_or_default(),
        );
        let conf_path = dir.join("miniupnpd.conf");
        std::fs::write(&conf_path, conf).map_err(|e| Error::io("writing miniupnpd.conf", e))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("miniupnpd.log"))
            .map_err(|e| Error::io("opening miniupnpd.log", e))?;
        let mut command = self.command("/usr/sbin/miniupnpd");
        command
            .args(["-d", "-4", "-f"])
            .arg(&conf_path)
            .arg("-P")
            .arg(dir.join("miniupnpd.pid"))
            .stdout(Stdio::null())
            .stderr(log);
        let proc = self.spawn(command)?;
        // Ready once its NAT-PMP/PCP or SSDP socket is bound (no signal exists: a bounded poll).
        let port = if protocols.natpmp || protocols.pcp {
            ":5351 "
        } else {
            ":1900 "
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self
                .exec_ok(["ss", "-uln"])
                .is_ok_and(|ss| ss.contains(port))
            {
                return Ok(proc);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(Error::Setup(format!(
            "miniupnpd did not start: {}",
            std::fs::read_to_string(dir.join("miniupnpd.log")).unwrap_or_default()
        )))
    }
}
