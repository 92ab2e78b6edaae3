//! The lab's on-disk cache: content-keyed files written atomically, so that test processes
//! running in parallel share the results without ever reading a half-written file.

use std::hash::{DefaultHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, IoContext};

pub(crate) const CACHE_ENV: &str = "MESHGATE_VMLAB_CACHE";
const DEFAULT_CACHE: &str = "/var/cache/meshgate/vmlab";

/// The cache directory, created if missing.
pub(crate) fn dir() -> Result<PathBuf, Error> {
    let dir = std::env::var_os(CACHE_ENV)
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_CACHE), PathBuf::from);
    std::fs::create_dir_all(&dir).context(|| {
        format!(
            "creating the VM lab cache {} (set {CACHE_ENV} to a writable directory)",
            dir.display()
        )
    })?;
    Ok(dir)
}

/// A hex digest of `parts`. Each part is length-prefixed so that moving bytes between parts
/// changes the key. SipHash is not stable across Rust releases; a change only costs a rebuild.
pub(crate) fn key(parts: &[&[u8]]) -> String {
    let mut hasher = DefaultHasher::new();
    for part in parts {
        hasher.write_u64(part.len() as u64);
        hasher.write(part);
    }
    format!("{:016x}", hasher.finish())
}

/// A name no other thread or process on this host uses at the same time.
pub(crate) fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{}-{}-{nanos:08x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The path of a sibling temporary for `path`, for write-then-rename.
pub(crate) fn temp_sibling(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(format!(".tmp-{}", unique_suffix()));
    path.with_file_name(name)
}

/// Writes `bytes` to `path` so that readers see either nothing or the whole file.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp = temp_sibling(path);
    let result = std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .context(|| format!("writing {}", path.display()));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
