//! IP forwarding for a node offering subnet routes or an exit node (reference §7.5). Tailscale
//! only checks and warns; we do the same, and turn it on when asked (`--enable-forwarding`).
//! What we turned on is written down in the state directory, so that `meshgate down` (also
//! after a restart) turns exactly that off again and leaves what the admin set alone.

use std::path::Path;

use super::sysctl::{SysctlRecord, read, sysctl_name};

/// The sysctls, by their /proc path (per network namespace).
const SYSCTLS: &[&str] = &[
    "/proc/sys/net/ipv4/ip_forward",
    "/proc/sys/net/ipv6/conf/all/forwarding",
];
/// In the state directory: the sysctls we set to 1, one path per line.
const SET_BY_US: &str = "forwarding-set-by-meshgate";

pub(super) struct Forwarding {
    enable: bool,
    record: SysctlRecord,
    /// Why forwarding will not work, for status.
    warning: Option<String>,
}

impl Forwarding {
    pub(super) fn new(enable: bool, state_dir: &Path) -> Forwarding {
        Forwarding {
            enable,
            record: SysctlRecord::new(state_dir, SET_BY_US, SYSCTLS),
            warning: None,
        }
    }

    pub(super) fn warning(&self) -> Option<&str> {
        self.warning.as_deref()
    }

    /// Checks forwarding when `advertising`, turning it on if asked; otherwise undoes what we
    /// turned on.
    pub(super) fn update(&mut self, advertising: bool) {
        if !advertising {
            self.warning = None;
            self.restore();
            return;
        }
        let off: Vec<&str> = SYSCTLS
            .iter()
            .copied()
            .filter(|p| read(p).is_some_and(|v| v != "1"))
            .collect();
        self.warning = None;
        if off.is_empty() {
            return;
        }
        if !self.enable {
            let names: Vec<String> = off.iter().map(|p| sysctl_name(p)).collect();
            let warning = format!(
                "forwarding is off ({}): advertised routes will not be forwarded; set it or run the daemon with --enable-forwarding",
                names.join(", ")
            );
            tracing::warn!("{warning}");
            self.warning = Some(warning);
            return;
        }
        for path in off {
            if let Err(e) = self.record.turn_on(path) {
                tracing::warn!("{e}");
                self.warning = Some(e);
            }
        }
    }

    /// Sets back to 0 what we set to 1.
    pub(super) fn restore(&mut self) {
        self.record.restore();
    }
}
