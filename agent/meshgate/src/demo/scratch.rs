//! The demo's scratch directory (databases, keys, sockets, logs), removed when dropped.

use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};

use super::DemoResult;

/// A private directory under the system temp dir; dropping it removes it and everything in it.
#[derive(Debug)]
pub(super) struct Scratch {
    path: PathBuf,
}

impl Scratch {
    pub(super) fn new(tag: &str) -> DemoResult<Scratch> {
        let path = std::env::temp_dir().join(format!("meshgate-{tag}-{}", std::process::id()));
        // A leftover of a crashed run with the same pid holds nothing we want.
        let _ = std::fs::remove_dir_all(&path);
        // 0700: it holds the coordinator's database (auth keys) and the nodes' private keys.
        std::fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(&path)
            .map_err(|e| format!("creating {}: {e}", path.display()))?;
        Ok(Scratch { path })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// A subdirectory, created.
    pub(super) fn subdir(&self, name: &str) -> DemoResult<PathBuf> {
        let dir = self.path.join(name);
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        Ok(dir)
    }

    /// The last `lines` lines of every `.log` file in the directory and its subdirectories, to
    /// explain a failure before the directory goes away.
    pub(super) fn log_tails(&self, lines: usize) -> String {
        let mut files = Vec::new();
        collect_logs(&self.path, 2, &mut files);
        files.sort();
        let mut out = String::new();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            let tail = &all[all.len().saturating_sub(lines)..];
            out.push_str(&format!("\n---- {} (last lines)\n", file.display()));
            for line in tail {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// Removes the directory now, reporting a failure (dropping does it silently).
    pub(super) fn remove(self) -> DemoResult<PathBuf> {
        let path = self.path.clone();
        std::fs::remove_dir_all(&path).map_err(|e| format!("removing {}: {e}", path.display()))?;
        Ok(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn collect_logs(dir: &Path, depth: usize, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            if depth > 0 {
                collect_logs(&path, depth - 1, files);
            }
        } else if path.extension().is_some_and(|e| e == "log") {
            files.push(path);
        }
    }
}
