//! Namespace names that are unique across every process on the machine and say who made them.
//!
//! Format: `mgl-<pid>-<n>-<label>`, pid and n in base 36, cut to 15 characters. The pid lets a
//! later run find the namespaces of a crashed one (their owner is gone) and lets parallel test
//! binaries never collide; the per-process counter separates labs and hosts inside one process;
//! the label (the host's name) is only there for the human running `ip netns list`.

use std::sync::atomic::{AtomicU64, Ordering};

/// Every lab namespace starts with this.
pub(crate) const PREFIX: &str = "mgl-";

/// Kernel interface names are at most 15 bytes; namespace names have no such limit, but staying
/// as short keeps them easy to type and lets a name double as an interface name if ever needed.
pub(crate) const MAX_LEN: usize = 15;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh namespace name for this process, ending with as much of `label` as fits.
pub(crate) fn netns_name(label: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    compose(std::process::id(), n, label)
}

fn compose(pid: u32, n: u64, label: &str) -> String {
    let mut name = format!("{PREFIX}{}-{}", base36(u64::from(pid)), base36(n));
    let clean: String = label
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    let room = MAX_LEN.saturating_sub(name.len() + 1);
    if room > 0 && !clean.is_empty() {
        name.push('-');
        name.extend(clean.chars().take(room));
    }
    name
}

/// The pid that made a lab namespace, or `None` if `name` is not one of ours.
pub(crate) fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let pid = rest.split('-').next()?;
    u32::try_from(u64::from_str_radix(pid, 36).ok()?).ok()
}

fn base36(mut v: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(v % 36) as usize]);
        v /= 36;
        if v == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ASCII digits")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_and_round_trip_the_pid() {
        // 4194304 is the largest pid_max Linux allows.
        for pid in [1, 4242, 4_194_304] {
            for n in [0, 35, 36 * 36 * 36] {
                let name = compose(pid, n, "router-with-a-long-name");
                assert!(name.len() <= MAX_LEN, "{name} is too long");
                assert_eq!(owner_pid(&name), Some(pid), "{name}");
            }
        }
        assert_eq!(compose(4242, 1, "a b/c"), "mgl-39u-1-abc");
    }

    #[test]
    fn foreign_names_have_no_owner() {
        assert_eq!(owner_pid("blue"), None);
        assert_eq!(owner_pid("mgl-"), None);
        assert_eq!(owner_pid("mgl-!!-1"), None);
    }
}
