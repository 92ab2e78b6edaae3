//! The lab itself: prepared once, then boots one VM per scenario.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cache;
use crate::error::{Error, IoContext};
use crate::initramfs;
use crate::kernel::Kernel;
use crate::modules::{self, DEFAULT_MODULES};
use crate::qemu::{Boot, EXIT_MARKER, QEMU_ENV};
use crate::scenario::Scenario;
use crate::slots;
use crate::tempdir::TempDir;
use crate::tools;
use crate::vmlinux;

/// A prepared VM lab: the kernel located, the initramfs built (or found in the cache).
///
/// Cheap to create once the cache is warm (tens of milliseconds), and shareable between
/// threads: every [`run`](Self::run) boots its own VM.
#[derive(Debug, Clone)]
pub struct VmLab {
    qemu: PathBuf,
    kernel_version: String,
    kernel_image: PathBuf,
    initramfs: PathBuf,
    cache_dir: PathBuf,
}

impl VmLab {
    /// Finds qemu and the kernel that `scripts/setup.sh` unpacked, and builds the initramfs
    /// unless the cache already has it.
    ///
    /// Environment: `MESHGATE_KERNEL_CACHE` (default `/var/cache/meshgate/kernel`),
    /// `MESHGATE_VMLAB_CACHE` (default `/var/cache/meshgate/vmlab`), `MESHGATE_QEMU` and
    /// `MESHGATE_BUSYBOX` (default: found on PATH).
    pub fn new() -> Result<VmLab, Error> {
        let qemu = tools::find_overridable("qemu-system-x86_64", QEMU_ENV)?;
        let kernel = Kernel::locate()?;
        let cache_dir = cache::dir()?;
        let modules = modules::resolve(&kernel, &cache_dir, DEFAULT_MODULES)?;
        let initramfs = initramfs::build(&cache_dir, &kernel.version, &modules)?;
        let kernel_image = vmlinux::boot_image(&kernel, &cache_dir)?;
        Ok(VmLab {
            qemu,
            kernel_version: kernel.version,
            kernel_image,
            initramfs,
            cache_dir,
        })
    }

    /// The guest kernel's release, e.g. `6.1.0-56-amd64`.
    pub fn kernel_version(&self) -> &str {
        &self.kernel_version
    }

    /// What qemu boots: the cached uncompressed kernel, or the bzImage when that could not be
    /// made.
    pub fn kernel_image(&self) -> &Path {
        &self.kernel_image
    }

    /// The cached initramfs.
    pub fn initramfs(&self) -> &Path {
        &self.initramfs
    }

    /// Boots a VM, runs `scenario` in it and waits for it to finish or time out.
    ///
    /// Blocks first while other runs on this host use all the CPUs (see the crate docs). A
    /// scenario that fails, hangs or crashes the kernel is an `Ok` outcome that did not pass;
    /// `Err` means the VM could not be started at all.
    pub fn run(&self, scenario: &Scenario) -> Result<VmOutcome, Error> {
        let script = scenario.script()?;
        let ctl = TempDir::new("meshgate-vmlab-ctl")?;
        let share = match scenario.caller_share() {
            // Absolute, because qemu resolves the path from wherever it runs.
            Some(dir) => match dir.canonicalize() {
                Ok(dir) if dir.is_dir() => Share::Caller(dir),
                _ => {
                    return Err(Error::InvalidScenario(format!(
                        "share directory {} does not exist",
                        dir.display()
                    )));
                }
            },
            None => Share::Owned(TempDir::new("meshgate-vmlab-share")?),
        };
        let run_id = cache::unique_suffix();
        let scenario_path = ctl.path().join("scenario.sh");
        std::fs::write(&scenario_path, script)
            .context(|| format!("writing {}", scenario_path.display()))?;
        let run_id_path = ctl.path().join("run-id");
        std::fs::write(&run_id_path, format!("{run_id}\n"))
            .context(|| format!("writing {}", run_id_path.display()))?;

        let exposed = scenario.hidden_host_dirs()?;
        let expose_path = ctl.path().join("expose");
        let expose_list: String = exposed
            .iter()
            .enumerate()
            .map(|(i, dir)| format!("{}{i} {}\n", crate::qemu::TAG_EXPOSE_PREFIX, dir.display()))
            .collect();
        std::fs::write(&expose_path, expose_list)
            .context(|| format!("writing {}", expose_path.display()))?;

        let slots = slots::acquire(&self.cache_dir, scenario.cpus)?;
        let finished = Boot {
            qemu: &self.qemu,
            kernel: &self.kernel_image,
            initramfs: &self.initramfs,
            memory_mib: scenario.memory_mib,
            cpus: scenario.cpus,
            kernel_args: &scenario.kernel_args,
            ctl_dir: ctl.path(),
            share_dir: share.path(),
            exposed: &exposed,
            run_id: &run_id,
            timeout: scenario.timeout,
        }
        .run()?;
        drop(slots);

        if let Some(status) = finished.status
            && !status.success()
            && finished.boot_time.is_none()
        {
            return Err(Error::Qemu {
                status,
                stderr: finished.stderr.trim().to_owned(),
            });
        }
        let exit_code = exit_code_from_console(&finished.console, &run_id)
            .or_else(|| exit_code_from_file(&ctl.path().join("exit-code")));
        let mut console = finished.console;
        if !finished.stderr.trim().is_empty() {
            console.push_str("\n--- qemu stderr ---\n");
            console.push_str(&finished.stderr);
        }
        Ok(VmOutcome {
            exit_code,
            timed_out: finished.timed_out,
            console,
            boot_time: finished.boot_time,
            elapsed: finished.elapsed,
            share,
        })
    }
}

/// What came of one scenario.
#[derive(Debug)]
pub struct VmOutcome {
    /// The scenario's exit status (128 + signal number if a signal ended it); `None` if it
    /// never reported one: timeout, kernel panic, or a VM that did not reach the scenario.
    pub exit_code: Option<i32>,
    /// The run hit [`Scenario::timeout`] and qemu was killed.
    pub timed_out: bool,
    /// The whole serial console: kernel messages, the init's notes, the scenario's stdout and
    /// stderr, and at the end anything qemu printed on its stderr.
    pub console: String,
    /// From starting qemu to the moment the scenario started; `None` if it never did.
    pub boot_time: Option<Duration>,
    /// From starting qemu to qemu's exit (or its killing on timeout).
    pub elapsed: Duration,
    share: Share,
}

impl VmOutcome {
    /// The scenario ran to completion and exited 0.
    pub fn passed(&self) -> bool {
        !self.timed_out && self.exit_code == Some(0)
    }

    /// The host directory that was `$MESHGATE_VMLAB_SHARE` inside the VM. Unless the scenario
    /// named its own, it is a temporary directory, removed when the outcome is dropped.
    pub fn share_dir(&self) -> &Path {
        self.share.path()
    }

    /// Keeps the share directory after the outcome is dropped and returns its path.
    pub fn keep_share(self) -> PathBuf {
        match self.share {
            Share::Owned(dir) => dir.keep(),
            Share::Caller(dir) => dir,
        }
    }

    /// The last `lines` lines of the console.
    pub fn console_tail(&self, lines: usize) -> &str {
        let trimmed = self.console.trim_end();
        let start = trimmed
            .rmatch_indices('\n')
            .nth(lines.saturating_sub(1))
            .map_or(0, |(i, _)| i + 1);
        if lines == 0 { "" } else { &trimmed[start..] }
    }

    /// One line saying how the run ended, for messages.
    pub fn summary(&self) -> String {
        match (self.timed_out, self.exit_code) {
            (true, _) => format!("timed out after {:.1} s", self.elapsed.as_secs_f64()),
            (false, Some(code)) => format!("exit code {code}"),
            (false, None) if self.boot_time.is_none() => {
                "the VM stopped before the scenario started".to_owned()
            }
            (false, None) => "the VM stopped without the scenario's exit status".to_owned(),
        }
    }
}

#[derive(Debug)]
enum Share {
    Owned(TempDir),
    Caller(PathBuf),
}

impl Share {
    fn path(&self) -> &Path {
        match self {
            Share::Owned(dir) => dir.path(),
            Share::Caller(dir) => dir,
        }
    }
}

/// The status from the last exit marker of this run. Searched as a substring, not a line,
/// because a kernel message can land in the middle of the marker's line.
fn exit_code_from_console(console: &str, run_id: &str) -> Option<i32> {
    let marker = format!("{EXIT_MARKER} {run_id} ");
    let at = console.rfind(&marker)? + marker.len();
    let digits: String = console[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '-')
        .collect();
    digits.parse().ok()
}

fn exit_code_from_file(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(console: &str) -> VmOutcome {
        VmOutcome {
            exit_code: Some(0),
            timed_out: false,
            console: console.to_owned(),
            boot_time: None,
            elapsed: Duration::ZERO,
            share: Share::Caller(PathBuf::from("/nonexistent")),
        }
    }

    #[test]
    fn parses_exit_marker() {
        let console = "boot\nMESHGATE-VMLAB-EXIT r1 0\nMESHGATE-VMLAB-EXIT r2 [ 1.0] x 3\n\
                       MESHGATE-VMLAB-EXIT r2 42\n";
        assert_eq!(exit_code_from_console(console, "r2"), Some(42));
        assert_eq!(exit_code_from_console(console, "r1"), Some(0));
        assert_eq!(exit_code_from_console(console, "r3"), None);
    }

    #[test]
    fn console_tail_lines() {
        let o = outcome("a\nb\nc\n");
        assert_eq!(o.console_tail(2), "b\nc");
        assert_eq!(o.console_tail(10), "a\nb\nc");
        assert_eq!(o.console_tail(0), "");
    }
}
