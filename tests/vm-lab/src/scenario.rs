//! What to run inside the VM, and the shell script that carries it there.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::Error;
use crate::initramfs::SHARE_IN_VM;

/// Set to `1` in the environment of every scenario; see [`in_vm`](crate::in_vm).
pub const IN_VM_ENV: &str = "MESHGATE_IN_VM";
/// The in-VM path of the per-run share, in the environment of every scenario.
pub const SHARE_ENV: &str = "MESHGATE_VMLAB_SHARE";

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A command to run as root inside a fresh VM, with the host's root filesystem (read-only) as
/// its root.
///
/// The environment starts empty apart from `PATH`, `HOME=/root`, `LANG=C.UTF-8`,
/// `MESHGATE_IN_VM=1` and `MESHGATE_VMLAB_SHARE`; [`env`](Self::env) adds to or overrides it.
/// Nothing is inherited from the host process.
#[derive(Debug, Clone)]
pub struct Scenario {
    argv: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    cwd: Option<PathBuf>,
    pub(crate) timeout: Duration,
    pub(crate) memory_mib: u32,
    pub(crate) cpus: u32,
    pub(crate) share_dir: Option<PathBuf>,
    pub(crate) kernel_args: Vec<String>,
}

impl Scenario {
    /// The default limit on boot plus run; generous because TCG is slow and CI machines busy.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
    pub const DEFAULT_MEMORY_MIB: u32 = 1024;
    pub const DEFAULT_CPUS: u32 = 2;

    /// Runs `program` (a path, or a name looked up on the VM's PATH).
    pub fn new(program: impl Into<OsString>) -> Self {
        Scenario {
            argv: vec![program.into()],
            env: Vec::new(),
            cwd: None,
            timeout: Self::DEFAULT_TIMEOUT,
            memory_mib: Self::DEFAULT_MEMORY_MIB,
            cpus: Self::DEFAULT_CPUS,
            share_dir: None,
            kernel_args: Vec::new(),
        }
    }

    /// Runs `script` with the host's `/bin/sh -c`.
    pub fn shell(script: impl Into<OsString>) -> Self {
        Scenario::new("/bin/sh").arg("-c").arg(script)
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.argv.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.argv.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable; the name must be a shell identifier.
    pub fn env(mut self, name: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// The working directory inside the VM, an absolute path. Defaults to the host process's
    /// current directory, which is the same path inside the VM unless it lies under `/tmp`,
    /// `/run`, `/root` or `/var/tmp` (empty tmpfs in the VM): then the scenario exits 125.
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Limit on the whole run, boot included. On expiry qemu is killed and the outcome says
    /// [`timed_out`](crate::VmOutcome::timed_out).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    pub fn cpus(mut self, cpus: u32) -> Self {
        self.cpus = cpus;
        self
    }

    /// A host directory to share with the scenario (at `$MESHGATE_VMLAB_SHARE`) instead of a
    /// fresh temporary one. The caller owns it; the lab neither empties nor removes it.
    pub fn share_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.share_dir = Some(dir.into());
        self
    }

    /// Appends to the kernel command line, e.g. `loglevel=3` to quieten the console.
    pub fn kernel_arg(mut self, arg: impl Into<String>) -> Self {
        self.kernel_args.push(arg.into());
        self
    }

    pub fn argv(&self) -> &[OsString] {
        &self.argv
    }

    /// Checks the scenario (including the VM size) and renders it as the script the VM's
    /// init runs with the host's `/bin/sh`.
    pub(crate) fn script(&self) -> Result<Vec<u8>, Error> {
        let invalid = |what: String| Err(Error::InvalidScenario(what));
        if self.argv.is_empty() || self.argv[0].is_empty() {
            return invalid("empty argv".to_owned());
        }
        if self.cpus == 0 || self.memory_mib < 128 {
            return invalid(format!(
                "{} cpus and {} MiB: need at least 1 cpu and 128 MiB",
                self.cpus, self.memory_mib
            ));
        }
        let cwd = match &self.cwd {
            Some(cwd) => cwd.clone(),
            None => std::env::current_dir()
                .map_err(|e| Error::io("reading the current directory", e))?,
        };
        if !cwd.is_absolute() {
            return invalid(format!("cwd {} is not absolute", cwd.display()));
        }
        let mut words: Vec<&OsStr> = self.argv.iter().map(OsString::as_os_str).collect();
        words.push(cwd.as_os_str());
        for (name, value) in &self.env {
            if !is_identifier(name) {
                return invalid(format!(
                    "environment name {name:?} is not a shell identifier"
                ));
            }
            words.push(value);
        }
        if let Some(word) = words.iter().find(|w| w.as_bytes().contains(&0)) {
            return invalid(format!("{word:?} contains a NUL byte"));
        }

        let mut s =
            b"# Written by meshgate-vm-lab; run by the VM's init with the host's /bin/sh.\n"
                .to_vec();
        let defaults = [
            ("PATH", DEFAULT_PATH),
            ("HOME", "/root"),
            ("LANG", "C.UTF-8"),
            (IN_VM_ENV, "1"),
            (SHARE_ENV, SHARE_IN_VM),
        ];
        let env = defaults
            .iter()
            .map(|(n, v)| (OsStr::new(n), OsStr::new(v)))
            .chain(self.env.iter().map(|(n, v)| (n.as_os_str(), v.as_os_str())));
        for (name, value) in env {
            s.extend_from_slice(b"export ");
            s.extend_from_slice(name.as_bytes());
            s.push(b'=');
            quote_into(&mut s, value);
            s.push(b'\n');
        }
        s.extend_from_slice(b"cd ");
        quote_into(&mut s, cwd.as_os_str());
        s.extend_from_slice(
            b" || { echo 'meshgate-vm-lab: no such directory in the VM' >&2; exit 125; }\nexec",
        );
        for word in &self.argv {
            s.push(b' ');
            quote_into(&mut s, word);
        }
        s.push(b'\n');
        Ok(s)
    }

    /// Host directories the scenario needs that the VM's scratch tmpfs mounts (/tmp, /run,
    /// /root, /var/tmp) would hide: the top directory under such a mount that holds the
    /// working directory or the program, e.g. a checkout in /tmp/ci-1234. Each is shared
    /// read-only and mounted at the same path inside the VM.
    pub(crate) fn hidden_host_dirs(&self) -> Result<Vec<PathBuf>, Error> {
        let cwd = match &self.cwd {
            Some(cwd) => cwd.clone(),
            None => std::env::current_dir()
                .map_err(|e| Error::io("reading the current directory", e))?,
        };
        let program = self.argv.first().map(PathBuf::from);
        let mut dirs: Vec<PathBuf> = Vec::new();
        for path in std::iter::once(cwd).chain(program.filter(|p| p.is_absolute())) {
            let Some(dir) = hidden_top_dir(&path) else {
                continue;
            };
            if !dirs.contains(&dir) && dir.is_dir() {
                dirs.push(dir);
            }
        }
        Ok(dirs)
    }

    pub(crate) fn caller_share(&self) -> Option<&Path> {
        self.share_dir.as_deref()
    }
}

/// The scratch mounts the VM's init puts over the host's directories.
pub(crate) const SCRATCH_DIRS: [&str; 4] = ["/tmp", "/run", "/root", "/var/tmp"];

fn hidden_top_dir(path: &Path) -> Option<PathBuf> {
    SCRATCH_DIRS.iter().find_map(|root| {
        let rest = path.strip_prefix(root).ok()?;
        let first = rest.components().next()?;
        Some(Path::new(root).join(first))
    })
}

pub(crate) fn is_identifier(name: &OsStr) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && !b[0].is_ascii_digit()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// Single-quotes `word` for a POSIX shell: everything is literal except `'`, which closes the
/// quote, is escaped, and reopens it.
fn quote_into(out: &mut Vec<u8>, word: &OsStr) {
    out.push(b'\'');
    for &c in word.as_bytes() {
        if c == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(c);
        }
    }
    out.push(b'\'');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_dirs_are_the_top_directory_under_a_scratch_mount() {
        assert_eq!(
            hidden_top_dir(Path::new("/tmp/ci-1/target/debug/deps/x")),
            Some(PathBuf::from("/tmp/ci-1"))
        );
        assert_eq!(hidden_top_dir(Path::new("/work/main/target")), None);
        assert_eq!(hidden_top_dir(Path::new("/tmp")), None);
        assert_eq!(
            hidden_top_dir(Path::new("/var/tmp/a/b")),
            Some(PathBuf::from("/var/tmp/a"))
        );
    }

    #[test]
    fn renders_quoted_script() {
        let script = Scenario::new("/bin/echo")
            .arg("it's")
            .arg("$HOME")
            .env("A_B", "x y")
            .cwd("/work dir")
            .script()
            .unwrap();
        let script = String::from_utf8(script).unwrap();
        assert!(script.contains("export A_B='x y'\n"), "{script}");
        assert!(script.contains("export MESHGATE_IN_VM='1'\n"), "{script}");
        assert!(script.contains("cd '/work dir' || {"), "{script}");
        assert!(
            script.ends_with("exec '/bin/echo' 'it'\\''s' '$HOME'\n"),
            "{script}"
        );
    }

    #[test]
    fn rejects_bad_input() {
        let bad = [
            Scenario::new(""),
            Scenario::new("true").cwd("relative"),
            Scenario::new("true").env("NOT-AN-IDENT", "x"),
            Scenario::new("true").arg("nul\0byte"),
            Scenario::new("true").cpus(0),
        ];
        for s in bad {
            assert!(
                matches!(s.script(), Err(Error::InvalidScenario(_))),
                "{s:?}"
            );
        }
    }
}
