//! Strict reverse-path filtering on a host using an exit node (reference §7.4). With the
//! default routes in table 52, the reverse lookup of a packet arriving on the uplink (a reply
//! to our control or DERP connection, WireGuard's own UDP) points into the tunnel, so strict
//! rp_filter drops it. Tailscale's answer, and ours: the mark our own traffic carries is saved
//! in its connection's conntrack entry and restored on the replies, and
//! `net.ipv4.conf.all.src_valid_mark=1` makes the reverse lookup use it, so it finds the
//! rule that sends marked traffic to the main table. Only done where needed (an exit node in
//! use and strict rp_filter somewhere), since it puts conntrack on every packet.

use std::fs;
use std::path::Path;

use super::sysctl::{SysctlRecord, read};

const SRC_VALID_MARK: &str = "/proc/sys/net/ipv4/conf/all/src_valid_mark";
const SET_BY_US: &str = "src-valid-mark-set-by-meshgate";

pub(super) struct ReversePath {
    iface: String,
    record: SysctlRecord,
    warning: Option<String>,
}

impl ReversePath {
    pub(super) fn new(state_dir: &Path, iface: &str) -> ReversePath {
        ReversePath {
            iface: iface.to_owned(),
            record: SysctlRecord::new(state_dir, SET_BY_US, &[SRC_VALID_MARK]),
            warning: None,
        }
    }

    /// Whether our table must save and restore marks, given whether an exit node's default
    /// routes are in table 52; sets or sets back `src_valid_mark` to match.
    pub(super) fn update(&mut self, exit_routed: bool) -> bool {
        self.warning = None;
        let strict = strict_rp_filter(&self.iface);
        if !exit_routed || strict.is_empty() {
            self.record.restore();
            return false;
        }
        if read(SRC_VALID_MARK).as_deref() == Some("1") {
            return true;
        }
        match self.record.turn_on(SRC_VALID_MARK) {
            Ok(()) => true,
            Err(e) => {
                let warning = format!(
                    "rp_filter is strict (1) on {}: WireGuard's packets arriving there are dropped while an exit node is in use ({e}); set net.ipv4.conf.<iface>.rp_filter=2",
                    strict.join(", ")
                );
                tracing::warn!("{warning}");
                self.warning = Some(warning);
                false
            }
        }
    }

    pub(super) fn warning(&self) -> Option<&str> {
        self.warning.as_deref()
    }

    /// Sets back what we set (`meshgate down`).
    pub(super) fn restore(&mut self) {
        self.warning = None;
        self.record.restore();
    }
}

/// Interfaces (other than `mesh`) where strict reverse-path filtering is in force.
fn strict_rp_filter(mesh: &str) -> Vec<String> {
    let value = |iface: &str| read(&format!("/proc/sys/net/ipv4/conf/{iface}/rp_filter"));
    let all = value("all").and_then(|v| v.parse::<u8>().ok()).unwrap_or(0);
    let Ok(dir) = fs::read_dir("/proc/sys/net/ipv4/conf") else {
        return Vec::new();
    };
    let mut strict: Vec<String> = dir
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|iface| !matches!(iface.as_str(), "all" | "default" | "lo") && iface != mesh)
        .filter(|iface| {
            let own = value(iface).and_then(|v| v.parse::<u8>().ok()).unwrap_or(0);
            all.max(own) == 1
        })
        .collect();
    strict.sort();
    strict
}
