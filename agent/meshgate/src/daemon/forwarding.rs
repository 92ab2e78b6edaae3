//! IP forwarding for a node offering subnet routes or an exit node (reference §7.5). Tailscale
//! only checks and warns; we do the same, and turn it on when asked (`--enable-forwarding`).
//! What we turned on is written down in the state directory, so that `meshgate down` (also
//! after a restart) turns exactly that off again and leaves what the admin set alone.

use std::fs;
use std::path::{Path, PathBuf};

/// The sysctls, by their /proc path (per network namespace).
const SYSCTLS: [&str; 2] = [
    "/proc/sys/net/ipv4/ip_forward",
    "/proc/sys/net/ipv6/conf/all/forwarding",
];
/// In the state directory: the sysctls we set to 1, one path per line.
const SET_BY_US: &str = "forwarding-set-by-meshgate";

pub(super) struct Forwarding {
    enable: bool,
    record: PathBuf,
    /// Why forwarding will not work, for status.
    warning: Option<String>,
}

impl Forwarding {
    pub(super) fn new(enable: bool, state_dir: &Path) -> Forwarding {
        Forwarding {
            enable,
            record: state_dir.join(SET_BY_US),
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
            .into_iter()
            .filter(|p| read(p).is_some_and(|v| v != "1"))
            .collect();
        if off.is_empty() {
            self.warning = None;
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
        let mut set = self.recorded();
        for path in off {
            match fs::write(path, "1") {
                Ok(()) => {
                    tracing::info!("{} = 1 (meshgate down sets it back)", sysctl_name(path));
                    set.push(path.to_owned());
                }
                Err(e) => {
                    self.warning = Some(format!("setting {}: {e}", sysctl_name(path)));
                    tracing::warn!("setting {}: {e}", sysctl_name(path));
                }
            }
        }
        self.write_record(&set);
        if self
            .warning
            .as_deref()
            .is_some_and(|w| w.starts_with("forwarding is off"))
        {
            self.warning = None;
        }
    }

    /// Sets back to 0 what we set to 1.
    pub(super) fn restore(&mut self) {
        let set = self.recorded();
        if set.is_empty() {
            return;
        }
        for path in &set {
            match fs::write(path, "0") {
                Ok(()) => tracing::info!("{} = 0 again", sysctl_name(path)),
                Err(e) => tracing::warn!("setting back {}: {e}", sysctl_name(path)),
            }
        }
        let _ = fs::remove_file(&self.record);
    }

    fn recorded(&self) -> Vec<String> {
        fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            // Only our own sysctls: the file must not make us write anywhere else.
            .filter(|l| SYSCTLS.contains(l))
            .map(str::to_owned)
            .collect()
    }

    fn write_record(&self, set: &[String]) {
        let mut set = set.to_vec();
        set.sort();
        set.dedup();
        if let Err(e) = fs::write(&self.record, set.join("\n")) {
            tracing::warn!(
                "{}: {e} (meshgate down could not set forwarding back)",
                self.record.display()
            );
        }
    }
}

/// Interfaces (other than `mesh`) where strict reverse-path filtering is in force: with an
/// exit node, a lookup of a peer's address without WireGuard's mark lands in table 52 and
/// points into the tunnel, so strict rp_filter drops WireGuard's own packets arriving there.
pub(super) fn strict_rp_filter(mesh: &str) -> Vec<String> {
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

fn read(path: &str) -> Option<String> {
    fs::read_to_string(path).ok().map(|v| v.trim().to_owned())
}

/// `/proc/sys/net/ipv4/ip_forward` -> `net.ipv4.ip_forward`.
fn sysctl_name(path: &str) -> String {
    path.trim_start_matches("/proc/sys/").replace('/', ".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_names_read_as_sysctl_writes_them() {
        assert_eq!(sysctl_name(SYSCTLS[0]), "net.ipv4.ip_forward");
        assert_eq!(sysctl_name(SYSCTLS[1]), "net.ipv6.conf.all.forwarding");
    }

    #[test]
    fn the_record_names_only_our_sysctls() {
        let dir = std::env::temp_dir().join(format!("mg-fwd-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let f = Forwarding::new(true, &dir);
        fs::write(&f.record, "/proc/sys/net/ipv4/ip_forward\n/etc/passwd\n").unwrap();
        assert_eq!(f.recorded(), ["/proc/sys/net/ipv4/ip_forward"]);
        fs::remove_dir_all(&dir).unwrap();
    }
}
