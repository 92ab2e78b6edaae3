//! # meshgate-vm-lab
//!
//! Runs a command on a real Linux kernel with the WireGuard module, for meshgate's tests and
//! benchmarks on hosts whose own kernel lacks it. It boots Debian's stock kernel (unpacked by
//! `scripts/setup.sh`) under qemu with TCG, from a small cached initramfs (static busybox, the
//! needed modules, an `/init`), and runs the command as root in a `chroot` into the host's root
//! filesystem, shared read-only over 9p. The command therefore finds the host's `ip`, `wg`,
//! `nft` and the project's binaries under `target/` at the same absolute paths, and writes
//! results into a per-run shared directory. The outcome is the exit status and the whole
//! serial console.
//!
//! ```no_run
//! use meshgate_vm_lab::{Scenario, VmLab};
//! use std::time::Duration;
//!
//! let lab = VmLab::new()?;
//! let outcome = lab.run(
//!     &Scenario::shell("/usr/sbin/ip link add wg0 type wireguard && /usr/bin/wg show wg0")
//!         .timeout(Duration::from_secs(120)),
//! )?;
//! assert!(outcome.passed(), "{}", outcome.console_tail(40));
//! # Ok::<(), meshgate_vm_lab::Error>(())
//! ```
//!
//! A `#[test]` whose body runs in the VM uses [`vm_test!`]. See `tests/vm-lab/README.md` for
//! what the VM looks like from inside, the environment variables, and the costs.

mod cache;
mod cpio;
mod error;
mod initramfs;
mod kernel;
mod lab;
mod modules;
mod qemu;
mod scenario;
mod slots;
mod tempdir;
mod testing;
mod tools;
mod vmlinux;

pub use error::Error;
pub use lab::{VmLab, VmOutcome};
pub use scenario::{IN_VM_ENV, SHARE_ENV, Scenario};
#[doc(hidden)]
pub use testing::__private;
pub use testing::{
    VmTestResult, current_test_scenario, in_vm, run_current_test_in_vm, vm_share_dir,
};
