//! A bpf filesystem of the lab's own, for the daemons' pinned maps. `ip netns exec` gives each
//! daemon a fresh /sys without /sys/fs/bpf, and a bpffs mounted inside that short-lived mount
//! namespace would take the pins with it when the daemon dies; one mounted here, in the test's
//! mount namespace, reaches every daemon (mounts propagate into `ip netns exec`) and outlives
//! them, as /sys/fs/bpf does on a real router.

use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug)]
pub struct BpfFs(PathBuf);

impl BpfFs {
    /// Mounts a bpffs at `dir` (created if missing).
    pub fn mount(dir: &Path) -> BpfFs {
        std::fs::create_dir_all(dir).expect("bpffs mount point");
        let status = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(dir)
            .status()
            .expect("mount");
        assert!(status.success(), "mount -t bpf bpf {}", dir.display());
        BpfFs(dir.to_owned())
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        // Lazy: a daemon of a failed test may still hold it.
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
