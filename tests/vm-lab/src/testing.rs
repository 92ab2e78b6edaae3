//! Running a `#[test]` of the calling test binary inside the VM.

use std::ffi::OsString;
use std::fmt::Debug;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::Error;
use crate::lab::{VmLab, VmOutcome};
use crate::scenario::{self, IN_VM_ENV, SHARE_ENV, Scenario};

const TIMEOUT_ENV: &str = "MESHGATE_VMLAB_TIMEOUT";
/// Written into the share by the test body's side, so the host can tell a test that ran and
/// passed from a filter that matched no test (libtest exits 0 for that too).
const RAN_FILE: &str = "vm-test-ran";
const TAIL_LINES: usize = 80;

/// Whether this process runs inside the VM lab (`MESHGATE_IN_VM=1`).
pub fn in_vm() -> bool {
    std::env::var_os(IN_VM_ENV).is_some_and(|v| v == "1")
}

/// Inside the VM: the directory shared with the host (`$MESHGATE_VMLAB_SHARE`).
pub fn vm_share_dir() -> Option<PathBuf> {
    in_vm()
        .then(|| std::env::var_os(SHARE_ENV).map(PathBuf::from))
        .flatten()
}

/// A scenario that runs test `test_name` of the current test binary: the binary itself with
/// `--exact <test_name> --nocapture --test-threads=1`, in the current directory. `test_name`
/// is libtest's full name, with the module path inside the test crate (`module::name`).
///
/// `RUST_*`, `CARGO_*` and `MESHGATE_*` variables are passed on, with `RUST_BACKTRACE=1`
/// unless set; the timeout is `$MESHGATE_VMLAB_TIMEOUT` seconds if set.
pub fn current_test_scenario(test_name: &str) -> Result<Scenario, Error> {
    let exe = std::env::current_exe().map_err(|e| Error::io("locating the test binary", e))?;
    let cwd = std::env::current_dir().map_err(|e| Error::io("reading the current directory", e))?;
    let mut scenario = Scenario::new(exe)
        .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
        .cwd(cwd)
        .env("RUST_BACKTRACE", "1");
    for (name, value) in std::env::vars_os() {
        if forwarded(&name) {
            scenario = scenario.env(name, value);
        }
    }
    if let Some(secs) = std::env::var(TIMEOUT_ENV).ok().and_then(|v| v.parse().ok()) {
        scenario = scenario.timeout(Duration::from_secs(secs));
    }
    Ok(scenario)
}

fn forwarded(name: &OsString) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    ["RUST_", "CARGO_", "MESHGATE_"]
        .iter()
        .any(|prefix| name.starts_with(prefix))
        && name != IN_VM_ENV
        && name != SHARE_ENV
        && scenario::is_identifier(name.as_ref())
}

/// Boots the VM and runs test `test_name` of the current test binary in it; see
/// [`current_test_scenario`].
pub fn run_current_test_in_vm(test_name: &str) -> Result<VmOutcome, Error> {
    VmLab::new()?.run(&current_test_scenario(test_name)?)
}

/// What a [`vm_test!`](crate::vm_test) body may return: `()`, or a `Result` whose error fails
/// the test.
pub trait VmTestResult {
    fn check(self);
}

impl VmTestResult for () {
    fn check(self) {}
}

impl<E: Debug> VmTestResult for Result<(), E> {
    fn check(self) {
        if let Err(e) = self {
            panic!("test body returned an error: {e:?}");
        }
    }
}

/// Support for [`vm_test!`](crate::vm_test); not a stable interface.
#[doc(hidden)]
pub mod __private {
    use super::*;

    /// `module_path` is the caller's `module_path!()`; `name` a test function name, or a full
    /// libtest name if it contains `::`.
    pub fn run_named<R: VmTestResult>(module_path: &str, name: &str, body: impl FnOnce() -> R) {
        run(&name_in_module(module_path, name), body);
    }

    /// `marker` is the type name of a function item declared in the test's body.
    pub fn run_auto<R: VmTestResult>(marker: &str, body: impl FnOnce() -> R) {
        run(name_from_marker(marker), body);
    }

    /// libtest names a test by its path inside the test crate, without the crate's name.
    pub(crate) fn name_in_module(module_path: &str, name: &str) -> String {
        if name.contains("::") {
            return name.to_owned();
        }
        match module_path.split_once("::") {
            Some((_crate, path)) => format!("{path}::{name}"),
            None => name.to_owned(),
        }
    }

    /// `crate::module::test_fn::marker` → `module::test_fn`.
    pub(crate) fn name_from_marker(marker: &str) -> &str {
        let path = marker
            .rsplit_once("::")
            .map_or(marker, |(path, _marker)| path);
        path.split_once("::").map_or(path, |(_crate, name)| name)
    }

    fn run<R: VmTestResult>(name: &str, body: impl FnOnce() -> R) {
        if in_vm() {
            if let Some(share) = vm_share_dir() {
                let _ = std::fs::write(share.join(RAN_FILE), name);
            }
            body().check();
            return;
        }
        let outcome = match run_current_test_in_vm(name) {
            Ok(outcome) => outcome,
            Err(e) => panic!("VM test `{name}` could not run: {e}"),
        };
        let failure = if !outcome.passed() {
            Some(outcome.summary())
        } else if !outcome.share_dir().join(RAN_FILE).is_file() {
            Some(format!(
                "no test named `{name}` ran inside the VM (is the name the test's full path?)"
            ))
        } else {
            None
        };
        if let Some(failure) = failure {
            panic!(
                "VM test `{name}` failed: {failure}\n--- last {TAIL_LINES} console lines ---\n{}",
                outcome.console_tail(TAIL_LINES)
            );
        }
    }
}

/// Runs the body of a `#[test]` as root on the VM lab's kernel.
///
/// Outside the VM, it boots a VM that runs this same test binary, filtered to this test, and
/// panics with the tail of the console if that run fails. Inside the VM it runs `body`, which
/// returns `()` or `Result<(), impl Debug>`.
///
/// The test's name is found from where the macro is expanded, or given (the function's name,
/// or the full libtest path `module::name`):
///
/// ```no_run
/// #[test]
/// fn kernel_has_wireguard() {
///     meshgate_vm_lab::vm_test!(|| {
///         let status = std::process::Command::new("/usr/sbin/ip")
///             .args(["link", "add", "wg0", "type", "wireguard"])
///             .status()
///             .unwrap();
///         assert!(status.success());
///     });
/// }
///
/// #[test]
/// fn kernel_something() {
///     meshgate_vm_lab::vm_test!("kernel_something", || { /* ... */ });
/// }
/// ```
#[macro_export]
macro_rules! vm_test {
    ($name:expr, $body:expr $(,)?) => {
        $crate::__private::run_named(::std::module_path!(), $name, $body)
    };
    ($body:expr $(,)?) => {{
        fn __vm_test_marker() {}
        $crate::__private::run_auto(::std::any::type_name_of_val(&__vm_test_marker), $body)
    }};
}

#[cfg(test)]
mod tests {
    use super::__private::*;

    #[test]
    fn test_names() {
        fn marker() {}
        let marker = std::any::type_name_of_val(&marker);
        assert_eq!(name_from_marker(marker), "testing::tests::test_names");
        assert_eq!(name_in_module("kernel", "wg_up"), "wg_up");
        assert_eq!(name_in_module("kernel::nft", "wg_up"), "nft::wg_up");
        assert_eq!(
            name_in_module("kernel::nft", "other::wg_up"),
            "other::wg_up"
        );
    }
}
