//! The appliance booted from its disk under qemu inside a lab namespace. Its serial console is
//! read as a person would watch it; commands go to the root shell on a virtio console (hvc0),
//! because qemu's emulated UART holds typed input back until more arrives.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use meshgate_netns_lab::{Host, Proc};

use crate::error::{Error, Result};

/// Console bytes kept; a run prints far less, and a runaway loop must not eat the memory.
const CONSOLE_LIMIT: usize = 8 << 20;
/// `1`: mirror the console to stderr as it arrives (past libtest's capture).
pub const ECHO_ENV: &str = "MESHGATE_APPLIANCE_ECHO";

/// Debian's U-Boot for qemu's arm64 `virt` machine (package u-boot-qemu).
const UBOOT_ARM64: &str = "/usr/lib/u-boot/qemu_arm64/u-boot.bin";

/// A running appliance VM; dropping it kills qemu.
#[derive(Debug)]
pub struct Appliance {
    /// The serial console (kernel, init and supervisor messages): read only.
    console: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
    /// The root shell on the virtio console hvc0: commands in, their output back.
    shell_in: UnixStream,
    shell: Arc<Mutex<String>>,
    shell_reader: Option<JoinHandle<()>>,
    seq: u32,
    /// Last: dropping it kills qemu, which ends the reader.
    qemu: Option<Proc>,
}

impl Appliance {
    /// Boots `disk` with one virtio NIC per tap device (created beforehand in `host`'s
    /// namespace; the first is the uplink eth0, the next eth1...). qemu's stderr goes to
    /// `dir`/qemu.log.
    pub fn boot(host: &Host, disk: &Path, taps: &[&str], dir: &Path) -> Result<Appliance> {
        let mut cmd = host.command("qemu-system-x86_64");
        cmd.args(["-accel", "tcg,thread=multi", "-cpu", "max"]);
        Appliance::start(host, cmd, disk, taps, dir)
    }

    /// Boots the arm64 image as a board would: U-Boot (Debian's build for qemu's `virt`
    /// machine) finds extlinux/extlinux.conf on the disk's bootable partition.
    pub fn boot_arm64(host: &Host, disk: &Path, taps: &[&str], dir: &Path) -> Result<Appliance> {
        if !Path::new(UBOOT_ARM64).is_file() {
            return Err(Error::io(
                format!("{UBOOT_ARM64} (install u-boot-qemu: scripts/setup.sh)"),
                std::io::Error::from(std::io::ErrorKind::NotFound),
            ));
        }
        let mut cmd = host.command("qemu-system-aarch64");
        cmd.args(["-machine", "virt", "-accel", "tcg,thread=multi"])
            .args(["-cpu", "cortex-a57", "-bios", UBOOT_ARM64]);
        Appliance::start(host, cmd, disk, taps, dir)
    }

    fn start(
        host: &Host,
        mut cmd: Command,
        disk: &Path,
        taps: &[&str],
        dir: &Path,
    ) -> Result<Appliance> {
        cmd.args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-smp",
            "2",
        ])
        .args(["-m", "512M", "-serial", "stdio", "-monitor", "none"])
        .arg("-drive")
        .arg(format!("file={},format=raw,if=virtio", disk.display()));
        for (i, tap) in taps.iter().enumerate() {
            cmd.arg("-netdev")
                .arg(format!("tap,id=n{i},ifname={tap},script=no,downscript=no"))
                .arg("-device")
                .arg(format!(
                    "virtio-net-pci,netdev=n{i},mac=52:54:00:4d:47:{i:02x}"
                ));
        }
        let socket = dir.join(format!("shell-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&socket);
        cmd.args(["-device", "virtio-serial-pci", "-chardev"])
            .arg(format!(
                "socket,id=shell,path={},server=on,wait=off",
                socket.display()
            ))
            .args(["-device", "virtconsole,chardev=shell"]);
        let log = std::fs::File::create(dir.join("qemu.log"))
            .map_err(|e| Error::io("creating qemu.log", e))?;
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(log);
        let mut qemu = host.spawn(cmd)?;
        let shell_in = connect(&socket, &mut qemu)?;
        let shell_out = shell_in
            .try_clone()
            .map_err(|e| Error::io("cloning the shell socket", e))?;
        let shell = Arc::new(Mutex::new(String::new()));
        let shell_reader = {
            let shell = Arc::clone(&shell);
            std::thread::spawn(move || read_console(shell_out, &shell, false))
        };
        let stdout = qemu
            .child_mut()
            .stdout
            .take()
            .ok_or_else(|| Error::VmGone("no stdout pipe".into()))?;
        let console = Arc::new(Mutex::new(String::new()));
        let echo = std::env::var_os(ECHO_ENV).is_some_and(|v| v == "1");
        let reader = {
            let console = Arc::clone(&console);
            std::thread::spawn(move || read_console(stdout, &console, echo))
        };
        Ok(Appliance {
            console,
            reader: Some(reader),
            shell_in,
            shell,
            shell_reader: Some(shell_reader),
            seq: 0,
            qemu: Some(qemu),
        })
    }

    /// Everything the serial console printed so far (CR removed).
    pub fn console(&self) -> String {
        text_of(&self.console)
    }

    /// The console's length now: a start point for [`Appliance::wait_for`].
    pub fn mark(&self) -> usize {
        self.console.lock().map(|c| c.len()).unwrap_or_default()
    }

    /// The last `lines` lines of the console and of the shell, for failure messages.
    pub fn tail(&self, lines: usize) -> String {
        format!(
            "{}\n---- shell (hvc0) ----\n{}",
            last_lines(&self.console(), lines),
            last_lines(&text_of(&self.shell), lines / 2)
        )
    }

    /// Waits until `needle` appears on the serial console at or after `from`; returns where
    /// it ends.
    pub fn wait_for(&mut self, from: usize, needle: &str, timeout: Duration) -> Result<usize> {
        let console = Arc::clone(&self.console);
        self.wait_in(&console, from, needle, timeout)
    }

    fn wait_in(
        &mut self,
        text: &Mutex<String>,
        from: usize,
        needle: &str,
        timeout: Duration,
    ) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(end) = find(text, from, needle) {
                return Ok(end);
            }
            self.check_alive()?;
            if Instant::now() >= deadline {
                return Err(self.timeout(format!("{needle:?}"), timeout));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the boot to finish and the root shell on hvc0, and switches that shell to a
    /// plain, non-interactive one without echo or line editing, whose output tests can parse.
    pub fn wait_shell(&mut self, timeout: Duration) -> Result<()> {
        self.wait_for(0, "boot done", timeout)?;
        let shell = Arc::clone(&self.shell);
        self.send("\n")?;
        self.wait_in(&shell, 0, "meshgate# ", Duration::from_secs(30))?;
        // Lines reach the plain shell through a read loop: busybox cat copies with
        // sendfile, which holds a line back until more input arrives.
        self.send(
            "stty -echo; exec sh -c 'while IFS= read -r l; do printf \"%s\\n\" \"$l\"; done | sh'\n",
        )?;
        // The interactive shell flushes typeahead when it leaves line editing, so probe until
        // the plain shell answers.
        for probe in 0..30 {
            let from = shell.lock().map(|c| c.len()).unwrap_or_default();
            self.send(&format!("echo __MG''READY_{probe}\n"))?;
            if self
                .wait_in(
                    &shell,
                    from,
                    &format!("__MGREADY_{probe}"),
                    Duration::from_secs(2),
                )
                .is_ok()
            {
                return Ok(());
            }
        }
        Err(self.timeout("the shell on hvc0".into(), Duration::from_secs(60)))
    }

    /// Runs `command` in the root shell; its exit status and output (stdout and stderr).
    pub fn sh(&mut self, command: &str, timeout: Duration) -> Result<(i32, String)> {
        self.seq += 1;
        let n = self.seq;
        let shell = Arc::clone(&self.shell);
        let from = shell.lock().map(|c| c.len()).unwrap_or_default();
        // The quotes keep the markers themselves out of any echo of the typed line; stdin is
        // the shell's own input, which no command may read from.
        self.send(&format!(
            "echo __MG''BEGIN_{n}; {{ {command}\n}} </dev/null 2>&1; echo __MG''END_{n}_$?\n"
        ))?;
        let begin = self.wait_in(&shell, from, &format!("__MGBEGIN_{n}\n"), timeout)?;
        let end_marker = format!("__MGEND_{n}_");
        let after = self.wait_in(&shell, begin, &end_marker, timeout)?;
        let line_end = self.wait_in(&shell, after, "\n", Duration::from_secs(5))?;
        let text = text_of(&shell);
        let output = text
            .get(begin..after - end_marker.len())
            .unwrap_or_default()
            .to_owned();
        let rc = text
            .get(after..line_end - 1)
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(-1);
        Ok((rc, output))
    }

    /// [`Appliance::sh`] that must succeed; its output.
    pub fn sh_ok(&mut self, command: &str, timeout: Duration) -> Result<String> {
        let (rc, output) = self.sh(command, timeout)?;
        if rc != 0 {
            return Err(Error::Command {
                command: format!("(in the appliance) {command}"),
                status: format!("exit status {rc}"),
                stderr: output,
            });
        }
        Ok(output)
    }

    /// Types `text` into the shell.
    pub fn send(&mut self, text: &str) -> Result<()> {
        self.shell_in
            .write_all(text.as_bytes())
            .and_then(|()| self.shell_in.flush())
            .map_err(|e| Error::io("writing to the shell", e))
    }

    /// Powers the appliance off cleanly (sync, unmount) and waits for qemu to exit; the
    /// whole serial console.
    pub fn poweroff(mut self, timeout: Duration) -> Result<String> {
        let _ = self.send("poweroff\n");
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.check_alive().is_err() {
                return Ok(self.finish());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(self.timeout("the appliance to power off".into(), timeout))
    }

    fn finish(&mut self) -> String {
        drop(self.qemu.take());
        let _ = self.shell_in.shutdown(std::net::Shutdown::Both);
        for reader in [self.reader.take(), self.shell_reader.take()]
            .into_iter()
            .flatten()
        {
            let _ = reader.join();
        }
        self.console()
    }

    fn check_alive(&mut self) -> Result<()> {
        let Some(qemu) = self.qemu.as_mut() else {
            return Err(Error::VmGone("already stopped".into()));
        };
        match qemu.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(Error::VmGone(format!(
                "qemu exited ({status}); console tail:\n{}",
                self.tail(40)
            ))),
            Err(e) => Err(Error::VmGone(e.to_string())),
        }
    }

    fn timeout(&self, what: String, timeout: Duration) -> Error {
        Error::Timeout {
            what,
            seconds: timeout.as_secs(),
            tail: self.tail(60),
        }
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Connects to qemu's socket for hvc0 once qemu has made it.
fn connect(socket: &Path, qemu: &mut Proc) -> Result<UnixStream> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match UnixStream::connect(socket) {
            Ok(stream) => return Ok(stream),
            Err(e) if Instant::now() >= deadline => {
                return Err(Error::io(format!("connecting to {}", socket.display()), e));
            }
            Err(_) => {}
        }
        if let Ok(Some(status)) = qemu.try_wait() {
            return Err(Error::VmGone(format!("qemu exited at start ({status})")));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn text_of(text: &Mutex<String>) -> String {
    text.lock().map(|c| c.clone()).unwrap_or_default()
}

fn last_lines(text: &str, lines: usize) -> &str {
    let start = text
        .rmatch_indices('\n')
        .nth(lines)
        .map_or(0, |(i, _)| i + 1);
    text.get(start..).unwrap_or_default()
}

fn find(text: &Mutex<String>, from: usize, needle: &str) -> Option<usize> {
    let text = text.lock().ok()?;
    let from = from.min(text.len());
    let start = text.get(from..)?.find(needle)?;
    Some(from + start + needle.len())
}

fn read_console(mut input: impl Read, text: &Mutex<String>, echo: bool) {
    let mut buf = [0u8; 4096];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = buf.get(..n).unwrap_or_default();
        let chunk: String = String::from_utf8_lossy(chunk)
            .chars()
            .filter(|&c| c != '\r')
            .collect();
        if echo {
            let _ = std::io::stderr().write_all(chunk.as_bytes());
        }
        if let Ok(mut text) = text.lock()
            && text.len() + chunk.len() <= CONSOLE_LIMIT
        {
            text.push_str(&chunk);
        }
    }
}
