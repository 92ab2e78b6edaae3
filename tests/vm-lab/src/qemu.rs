//! Running qemu: its command line, the console capture, and the timeout.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::initramfs::{TAG_CTL, TAG_HOST_ROOT, TAG_SHARE};

/// 9p tags of the host directories in [`Boot::exposed`]: this prefix and the index.
pub(crate) const TAG_EXPOSE_PREFIX: &str = "vmlabx";

pub(crate) const QEMU_ENV: &str = "MESHGATE_QEMU";
const ECHO_ENV: &str = "MESHGATE_VMLAB_ECHO";

/// Printed by init just before the scenario starts, followed by the run id.
pub(crate) const START_MARKER: &str = "MESHGATE-VMLAB-START";
/// Printed by init after the scenario, followed by the run id and the exit status.
pub(crate) const EXIT_MARKER: &str = "MESHGATE-VMLAB-EXIT";

/// The kernel command line before the scenario's additions. panic=-1 with -no-reboot turns a
/// kernel panic (or PID 1 dying) into qemu exiting instead of a hang until the timeout;
/// oops=panic does the same for an oops. The rest buys boot time under TCG: no Spectre
/// mitigations to emulate, no keyboard controller or spare UARTs to probe, no crypto
/// self-tests.
const KERNEL_CMDLINE: &str = "console=ttyS0 panic=-1 oops=panic mitigations=off \
     i8042.nokbd i8042.noaux i8042.nopnp 8250.nr_uarts=1 cryptomgr.notests";

#[derive(Debug)]
pub(crate) struct Boot<'a> {
    pub qemu: &'a Path,
    pub kernel: &'a Path,
    pub initramfs: &'a Path,
    pub memory_mib: u32,
    pub cpus: u32,
    pub kernel_args: &'a [String],
    pub ctl_dir: &'a Path,
    pub share_dir: &'a Path,
    /// Host directories mounted read-only at their own path, over the VM's scratch mounts.
    pub exposed: &'a [PathBuf],
    pub run_id: &'a str,
    pub timeout: Duration,
}

#[derive(Debug)]
pub(crate) struct Finished {
    /// Serial console output, with the serial line's CRLF turned into LF.
    pub console: String,
    pub stderr: String,
    /// None when qemu was killed on timeout.
    pub status: Option<ExitStatus>,
    pub timed_out: bool,
    /// From spawning qemu to the start marker on the console.
    pub boot_time: Option<Duration>,
    pub elapsed: Duration,
}

impl Boot<'_> {
    fn command(&self) -> Command {
        let mut cmdline = KERNEL_CMDLINE.to_owned();
        for arg in self.kernel_args {
            cmdline.push(' ');
            cmdline.push_str(arg);
        }
        let mut cmd = Command::new(self.qemu);
        cmd.args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ])
        .args(["-accel", "tcg,thread=multi", "-cpu", "max"])
        .arg("-smp")
        .arg(self.cpus.to_string())
        .arg("-m")
        .arg(format!("{}M", self.memory_mib))
        .arg("-kernel")
        .arg(self.kernel)
        .arg("-initrd")
        .arg(self.initramfs)
        .arg("-append")
        .arg(cmdline)
        .args(["-serial", "stdio", "-monitor", "none"])
        .arg("-virtfs")
        .arg(virtfs(Path::new("/"), TAG_HOST_ROOT, true))
        .arg("-virtfs")
        .arg(virtfs(self.ctl_dir, TAG_CTL, false))
        .arg("-virtfs")
        .arg(virtfs(self.share_dir, TAG_SHARE, false));
        for (i, dir) in self.exposed.iter().enumerate() {
            cmd.arg("-virtfs")
                .arg(virtfs(dir, &format!("{TAG_EXPOSE_PREFIX}{i}"), true));
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // KillOnDrop covers every way out of `run` except this process being killed outright;
        // then the kernel kills qemu too.
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        cmd
    }

    /// Boots, waits for qemu to exit or the timeout to pass, and collects the console.
    pub(crate) fn run(&self) -> Result<Finished, Error> {
        let mut cmd = self.command();
        let start = Instant::now();
        let child = cmd
            .spawn()
            .map_err(|e| Error::io(format!("starting {}", self.qemu.display()), e))?;
        let mut child = KillOnDrop(child);
        let echo = std::env::var_os(ECHO_ENV).is_some_and(|v| !v.is_empty() && v != "0");
        let started = Arc::new(Mutex::new(None));
        let start_line = format!("{START_MARKER} {}", self.run_id);

        let stdout = child.0.stdout.take();
        let console_reader = {
            let started = Arc::clone(&started);
            std::thread::spawn(move || {
                read_console(stdout, &start_line, echo, || {
                    if let Ok(mut s) = started.lock() {
                        s.get_or_insert(start.elapsed());
                    }
                })
            })
        };
        let stderr = child.0.stderr.take();
        let stderr_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut s) = stderr {
                let _ = s.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        });

        let (status, timed_out) = loop {
            match child.0.try_wait() {
                Ok(Some(status)) => break (Some(status), false),
                Ok(None) if start.elapsed() >= self.timeout => {
                    child.kill();
                    break (None, true);
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(Error::io("waiting for qemu", e)),
            }
        };
        let elapsed = start.elapsed();
        // Both pipes close when qemu is gone, so these joins end.
        let console = console_reader.join().unwrap_or_default();
        let stderr = stderr_reader.join().unwrap_or_default();
        let boot_time = started.lock().ok().and_then(|s| *s);
        Ok(Finished {
            console,
            stderr,
            status,
            timed_out,
            boot_time,
            elapsed,
        })
    }
}

/// Collects the console line by line, calls `on_start` when the start marker arrives, and
/// optionally mirrors the console to stderr for someone watching a slow boot.
fn read_console(
    stdout: Option<std::process::ChildStdout>,
    start_line: &str,
    echo: bool,
    on_start: impl Fn(),
) -> String {
    let mut console = String::new();
    let Some(stdout) = stdout else {
        return console;
    };
    let mut reader = BufReader::new(stdout);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if line.ends_with(b"\r\n") {
            line.truncate(line.len() - 2);
            line.push(b'\n');
        }
        let text = String::from_utf8_lossy(&line);
        if text.contains(start_line) {
            on_start();
        }
        if echo {
            // Straight to the process's stderr, past libtest's output capture.
            let _ = std::io::stderr().write_all(text.as_bytes());
        }
        console.push_str(&text);
    }
    console
}

/// A `-virtfs` option value; qemu's option parser takes `,,` for a comma inside a value.
fn virtfs(path: &Path, tag: &str, readonly: bool) -> OsString {
    let mut value = b"local,path=".to_vec();
    for &b in path.as_os_str().as_bytes() {
        value.push(b);
        if b == b',' {
            value.push(b',');
        }
    }
    let mut value = OsString::from_vec(value);
    // multidevs=remap keeps inode numbers unique across the host's mounts, which all appear
    // in one 9p filesystem.
    value.push(format!(
        ",mount_tag={tag},security_model=none,multidevs=remap{}",
        if readonly { ",readonly=on" } else { "" }
    ));
    value
}

/// Makes sure no qemu outlives its run, whatever path the caller takes out.
struct KillOnDrop(Child);

impl KillOnDrop {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            self.kill();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtfs_escapes_commas() {
        let v = virtfs(Path::new("/tmp/a,b"), "t", true);
        assert_eq!(
            v,
            "local,path=/tmp/a,,b,mount_tag=t,security_model=none,multidevs=remap,readonly=on"
        );
    }
}
