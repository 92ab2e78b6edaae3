//! The host's own resolver pointed at MagicDNS (`--accept-dns`): while MagicDNS serves,
//! resolv.conf (`--resolv-conf`, default /etc/resolv.conf) names 100.100.100.100 with the
//! tailnet's search domains first; it is put back when MagicDNS stops, at `down` and `logout`,
//! and when the daemon exits (the in-process resolver goes with it). The host's file waits in
//! the state directory meanwhile, so an agent that died with the file rewritten finds the
//! host's resolvers there at its next start, and puts the file back if DNS is no longer
//! wanted. A resolv.conf that is a symlink (systemd-resolved, resolvconf) belongs to another
//! service and is left alone, with a warning.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use meshgate_magicdns::QUAD100_V4;

/// The first line of every resolv.conf we write: how a file is known to be ours.
const MARKER: &str = "# Written by meshgate while MagicDNS serves (--accept-dns).";
/// The host's resolv.conf while ours is in place, in the state directory.
const BACKUP_NAME: &str = "resolv.conf.host";

pub(super) struct HostDns {
    wanted: bool,
    path: PathBuf,
    backup: PathBuf,
    /// Whether the refusal to touch a managed file was logged already.
    warned: bool,
}

impl HostDns {
    /// `wanted`: `--accept-dns`. A file left rewritten by an earlier agent is put back at once
    /// when DNS is not wanted any more.
    pub(super) fn new(wanted: bool, path: PathBuf, state_dir: &Path) -> HostDns {
        let mut host = HostDns {
            wanted,
            path,
            backup: state_dir.join(BACKUP_NAME),
            warned: false,
        };
        if !wanted {
            host.restore();
        }
        host
    }

    /// The host's own resolv.conf: the saved one while ours is in place, else the file.
    pub(super) fn original(&self) -> String {
        std::fs::read_to_string(&self.backup)
            .or_else(|_| std::fs::read_to_string(&self.path))
            .unwrap_or_default()
    }

    /// MagicDNS serves with `domains` (`Some`), or does not (`None`): the file follows.
    pub(super) fn follow(&mut self, serving: Option<&[String]>) {
        match serving {
            Some(domains) if self.wanted => self.point_at_us(domains),
            _ => self.restore(),
        }
    }

    fn point_at_us(&mut self, domains: &[String]) {
        if let Some(target) = self.managed_by_another() {
            if !self.warned {
                tracing::warn!(
                    path = %self.path.display(),
                    target = %target.display(),
                    "not pointing the host at MagicDNS: the file is a symlink, managed by another service; \
                     point that service at 100.100.100.100 (or ask it for the tailnet's domains)"
                );
                self.warned = true;
            }
            return;
        }
        let current = std::fs::read_to_string(&self.path).unwrap_or_default();
        let host = if current.starts_with(MARKER) {
            self.original()
        } else {
            // The host's file, or a newer one someone wrote over ours (a DHCP client): keep it.
            if let Err(e) = write_file(&self.backup, &current, 0o600) {
                tracing::error!(path = %self.backup.display(), "not pointing the host at MagicDNS: saving its resolv.conf: {e}");
                return;
            }
            current.clone()
        };
        let ours = pointed_at_us(&host, domains, &self.backup);
        if ours == current {
            return;
        }
        match write_file(&self.path, &ours, 0o644) {
            Ok(()) => {
                tracing::info!(path = %self.path.display(), "the host resolves through MagicDNS")
            }
            Err(e) => {
                tracing::error!(path = %self.path.display(), "pointing the host at MagicDNS: {e}")
            }
        }
    }

    /// Puts the host's file back, if ours is in place; forgets the saved one either way.
    pub(super) fn restore(&mut self) {
        let Ok(host) = std::fs::read_to_string(&self.backup) else {
            return;
        };
        let current = std::fs::read_to_string(&self.path).unwrap_or_default();
        if current.starts_with(MARKER) {
            if let Err(e) = write_file(&self.path, &host, 0o644) {
                // The saved file stays, for the next try.
                tracing::error!(path = %self.path.display(), "putting the host's resolv.conf back: {e}");
                return;
            }
            tracing::info!(path = %self.path.display(), "the host's resolv.conf is back");
        }
        let _ = std::fs::remove_file(&self.backup);
    }

    fn managed_by_another(&self) -> Option<PathBuf> {
        let meta = std::fs::symlink_metadata(&self.path).ok()?;
        meta.file_type()
            .is_symlink()
            .then(|| std::fs::read_link(&self.path).unwrap_or_default())
    }
}

/// resolv.conf naming Quad100, the tailnet's domains searched first, then the host's own
/// search list and its options (its nameservers are MagicDNS's upstreams now).
fn pointed_at_us(host: &str, domains: &[String], backup: &Path) -> String {
    let mut search: Vec<&str> = domains.iter().map(String::as_str).collect();
    let mut options = Vec::new();
    for line in host.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("search" | "domain") => {
                for d in words {
                    if !search.contains(&d) {
                        search.push(d);
                    }
                }
            }
            Some("options") => options.push(line.trim()),
            _ => {}
        }
    }
    let mut out = format!(
        "{MARKER}\n# The host's own file is {} and comes back when meshgate stops.\nnameserver {QUAD100_V4}\n",
        backup.display()
    );
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    for o in options {
        out.push_str(o);
        out.push('\n');
    }
    out
}

/// Replaces `path` whole: a temporary file beside it renamed over it, so a reader never sees
/// half a file; where that is not allowed (a read-only /etc with only the file writable, as a
/// hardened unit's ReadWritePaths=/etc/resolv.conf gives, or a bind-mounted file), in place.
fn write_file(path: &Path, text: &str, mode: u32) -> std::io::Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.meshgate-tmp"));
    let replaced = create(&tmp, text, mode).and_then(|()| std::fs::rename(&tmp, path));
    if replaced.is_ok() {
        return Ok(());
    }
    let _ = std::fs::remove_file(&tmp);
    create(path, text, mode)
}

fn create(path: &Path, text: &str, mode: u32) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "# from DHCP\nnameserver 192.168.1.1\nsearch lan\noptions edns0 trust-ad\n";

    fn domains() -> Vec<String> {
        vec!["tailnet.meshgate".to_owned()]
    }

    struct Dir(PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn dir(name: &str) -> Dir {
        let d =
            std::env::temp_dir().join(format!("meshgate-hostdns-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("state")).unwrap();
        Dir(d)
    }

    #[test]
    fn ours_names_quad100_and_keeps_the_hosts_search_list_and_options() {
        let text = pointed_at_us(
            HOST,
            &domains(),
            Path::new("/var/lib/meshgate/resolv.conf.host"),
        );
        assert!(text.starts_with(MARKER));
        let lines: Vec<&str> = text.lines().skip(2).collect();
        assert_eq!(
            lines,
            [
                "nameserver 100.100.100.100",
                "search tailnet.meshgate lan",
                "options edns0 trust-ad"
            ]
        );
    }

    #[test]
    fn the_file_follows_magicdns_and_comes_back() {
        let d = dir("follow");
        let path = d.0.join("resolv.conf");
        std::fs::write(&path, HOST).unwrap();
        let mut host = HostDns::new(true, path.clone(), &d.0.join("state"));
        host.follow(Some(&domains()));
        let ours = std::fs::read_to_string(&path).unwrap();
        assert!(ours.contains("nameserver 100.100.100.100"), "{ours}");
        // The next agent reads the host's resolvers from the saved file, not from ours.
        assert_eq!(host.original(), HOST);
        assert_eq!(
            HostDns::new(true, path.clone(), &d.0.join("state")).original(),
            HOST
        );
        // A DHCP client writes over ours: that is the host's file now, and ours goes back on.
        let renewed = "nameserver 10.0.0.53\n";
        std::fs::write(&path, renewed).unwrap();
        host.follow(Some(&domains()));
        assert!(std::fs::read_to_string(&path).unwrap().starts_with(MARKER));
        assert_eq!(host.original(), renewed);
        host.follow(None);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), renewed);
        assert!(!d.0.join("state").join(BACKUP_NAME).exists());
    }

    #[test]
    fn not_wanted_puts_back_what_an_earlier_agent_left() {
        let d = dir("leftover");
        let path = d.0.join("resolv.conf");
        std::fs::write(&path, HOST).unwrap();
        HostDns::new(true, path.clone(), &d.0.join("state")).follow(Some(&domains()));
        // That agent died without restoring; this one runs without --accept-dns.
        let mut host = HostDns::new(false, path.clone(), &d.0.join("state"));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), HOST);
        host.follow(Some(&domains()));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), HOST);
    }

    #[test]
    fn a_symlinked_resolv_conf_is_left_alone() {
        let d = dir("symlink");
        let target = d.0.join("stub-resolv.conf");
        std::fs::write(&target, HOST).unwrap();
        let path = d.0.join("resolv.conf");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let mut host = HostDns::new(true, path.clone(), &d.0.join("state"));
        host.follow(Some(&domains()));
        assert_eq!(std::fs::read_to_string(&target).unwrap(), HOST);
        assert!(
            std::fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert!(!d.0.join("state").join(BACKUP_NAME).exists());
    }
}
