//! Locating the Debian kernel that `scripts/setup.sh` unpacked.

use std::path::{Path, PathBuf};

use crate::error::Error;

pub(crate) const KERNEL_CACHE_ENV: &str = "MESHGATE_KERNEL_CACHE";
const DEFAULT_KERNEL_CACHE: &str = "/var/cache/meshgate/kernel";

/// An unpacked `linux-image-*` package.
#[derive(Debug, Clone)]
pub(crate) struct Kernel {
    /// The release string, e.g. `6.1.0-56-amd64`: the suffix of `boot/vmlinuz-*`.
    pub version: String,
    pub vmlinuz: PathBuf,
    /// `lib/modules/<version>` of the package.
    pub modules_dir: PathBuf,
}

impl Kernel {
    /// Finds the kernel in `$MESHGATE_KERNEL_CACHE` or the default cache. When several versions
    /// are unpacked there, the highest wins.
    pub(crate) fn locate() -> Result<Kernel, Error> {
        let root = std::env::var_os(KERNEL_CACHE_ENV)
            .filter(|v| !v.is_empty())
            .map_or_else(|| PathBuf::from(DEFAULT_KERNEL_CACHE), PathBuf::from);
        Self::locate_in(&root)
    }

    fn locate_in(root: &Path) -> Result<Kernel, Error> {
        let missing = |detail: String| Error::KernelNotFound {
            cache: root.to_owned(),
            detail,
        };
        let boot = root.join("boot");
        let entries = std::fs::read_dir(&boot)
            .map_err(|e| missing(format!("cannot read {}: {e}", boot.display())))?;
        let mut versions: Vec<String> = entries
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                name.strip_prefix("vmlinuz-").map(str::to_owned)
            })
            .filter(|version| root.join("lib/modules").join(version).is_dir())
            .collect();
        versions.sort_by(|a, b| compare_versions(a, b));
        let version = versions.pop().ok_or_else(|| {
            missing("no boot/vmlinuz-<version> with a matching lib/modules/<version>".to_owned())
        })?;
        Ok(Kernel {
            vmlinuz: boot.join(format!("vmlinuz-{version}")),
            modules_dir: root.join("lib/modules").join(&version),
            version,
        })
    }
}

/// Orders release strings by their numeric fields, so that 6.10 sorts after 6.9.
fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    let fields = |s: &str| -> Vec<u64> {
        s.split(|c: char| !c.is_ascii_digit())
            .filter(|f| !f.is_empty())
            .map(|f| f.parse().unwrap_or(u64::MAX))
            .collect()
    };
    fields(a).cmp(&fields(b)).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_version_order() {
        let mut v = vec!["6.10.0-1-amd64", "6.9.0-3-amd64", "6.1.0-56-amd64"];
        v.sort_by(|a, b| compare_versions(a, b));
        assert_eq!(v, ["6.1.0-56-amd64", "6.9.0-3-amd64", "6.10.0-1-amd64"]);
    }

    #[test]
    fn missing_cache_names_setup_script() {
        let err = Kernel::locate_in(Path::new("/nonexistent/meshgate-kernel")).unwrap_err();
        assert!(err.to_string().contains("scripts/setup.sh"), "{err}");
    }
}
