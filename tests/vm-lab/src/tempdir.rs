//! Per-run host directories that disappear with their owner.

use std::path::{Path, PathBuf};

use crate::cache;
use crate::error::{Error, IoContext};

/// A fresh directory under the host's temporary directory, removed on drop.
#[derive(Debug)]
pub(crate) struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub(crate) fn new(prefix: &str) -> Result<TempDir, Error> {
        let path = std::env::temp_dir().join(format!("{prefix}-{}", cache::unique_suffix()));
        std::fs::create_dir(&path).context(|| format!("creating {}", path.display()))?;
        Ok(TempDir { path })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Gives up removal and returns the path; the caller now owns the directory.
    pub(crate) fn keep(self) -> PathBuf {
        let path = self.path.clone();
        std::mem::forget(self);
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
