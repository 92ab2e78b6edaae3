//! Sysctls the daemon turns on, written down in the state directory so that `meshgate down`
//! (also after a restart) turns exactly those off again and leaves what the admin set alone.

use std::fs;
use std::path::{Path, PathBuf};

/// One record file and the sysctls (by /proc path) it may name.
pub(super) struct SysctlRecord {
    file: PathBuf,
    allowed: &'static [&'static str],
}

impl SysctlRecord {
    pub(super) fn new(state_dir: &Path, file: &str, allowed: &'static [&'static str]) -> Self {
        SysctlRecord {
            file: state_dir.join(file),
            allowed,
        }
    }

    /// Sets `path` to 1 and records it; `Err` says why not, in words for status.
    pub(super) fn turn_on(&self, path: &str) -> Result<(), String> {
        fs::write(path, "1").map_err(|e| format!("setting {}: {e}", sysctl_name(path)))?;
        tracing::info!("{} = 1 (meshgate down sets it back)", sysctl_name(path));
        let mut set = self.recorded();
        set.push(path.to_owned());
        set.sort();
        set.dedup();
        if let Err(e) = fs::write(&self.file, set.join("\n")) {
            tracing::warn!(
                "{}: {e} (meshgate down could not set {} back)",
                self.file.display(),
                sysctl_name(path)
            );
        }
        Ok(())
    }

    /// Sets back to 0 what we set to 1.
    pub(super) fn restore(&self) {
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
        let _ = fs::remove_file(&self.file);
    }

    fn recorded(&self) -> Vec<String> {
        fs::read_to_string(&self.file)
            .unwrap_or_default()
            .lines()
            // Only our own sysctls: the file must not make us write anywhere else.
            .filter(|l| self.allowed.contains(l))
            .map(str::to_owned)
            .collect()
    }
}

pub(super) fn read(path: &str) -> Option<String> {
    fs::read_to_string(path).ok().map(|v| v.trim().to_owned())
}

/// `/proc/sys/net/ipv4/ip_forward` -> `net.ipv4.ip_forward`.
pub(super) fn sysctl_name(path: &str) -> String {
    path.trim_start_matches("/proc/sys/").replace('/', ".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_names_read_as_sysctl_writes_them() {
        assert_eq!(
            sysctl_name("/proc/sys/net/ipv4/ip_forward"),
            "net.ipv4.ip_forward"
        );
        assert_eq!(
            sysctl_name("/proc/sys/net/ipv6/conf/all/forwarding"),
            "net.ipv6.conf.all.forwarding"
        );
    }

    #[test]
    fn the_record_names_only_our_sysctls() {
        let dir = std::env::temp_dir().join(format!("mg-sysctl-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let record = SysctlRecord::new(&dir, "rec", &["/proc/sys/net/ipv4/ip_forward"]);
        fs::write(&record.file, "/proc/sys/net/ipv4/ip_forward\n/etc/passwd\n").unwrap();
        assert_eq!(record.recorded(), ["/proc/sys/net/ipv4/ip_forward"]);
        fs::remove_dir_all(&dir).unwrap();
    }
}
