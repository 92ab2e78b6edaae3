//! Running this very binary's subcommands inside lab hosts: the DERP relay, the coordinator,
//! the agents' daemons, and the admin and status commands.

use std::ffi::OsStr;
use std::io::BufRead as _;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use meshgate_netns_lab::{Host, Proc};
use meshgate_wg::BackendChoice;

use super::{DemoResult, check_interrupted};

/// How long the relay gets to print its CertName.
const RELAY_START: Duration = Duration::from_secs(10);
/// How long the coordinator gets to accept connections.
const SERVER_START: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(100);

/// The `meshgate` binary that runs the demo; every process of act 2 is this binary.
#[derive(Debug, Clone)]
pub(super) struct Meshgate {
    exe: PathBuf,
}

/// What one agent's daemon is started with.
#[derive(Debug)]
pub(super) struct DaemonSpec<'a> {
    pub hostname: &'a str,
    pub iface: &'a str,
    pub login_server: &'a str,
    pub auth_key: &'a str,
    pub state_dir: &'a Path,
    pub socket: &'a Path,
    pub backend: BackendChoice,
}

impl Meshgate {
    pub(super) fn current() -> DemoResult<Meshgate> {
        let exe = std::env::current_exe().map_err(|e| format!("finding meshgate itself: {e}"))?;
        Ok(Meshgate { exe })
    }

    fn command(&self, host: &Host, log: &Path) -> DemoResult<Command> {
        let log_file =
            std::fs::File::create(log).map_err(|e| format!("creating {}: {e}", log.display()))?;
        let mut command = host.command(&self.exe);
        command.stdout(Stdio::null()).stderr(log_file);
        Ok(command)
    }

    /// `meshgate derp --self-signed` on `host` at `addr` (STUN on 3478); returns the process
    /// and the CertName it printed, which pins its certificate for the agents.
    pub(super) fn start_relay(
        &self,
        host: &Host,
        addr: SocketAddr,
        state_dir: &Path,
        log: &Path,
    ) -> DemoResult<(Proc, String)> {
        let mut derp = self.command(host, log)?;
        derp.args(["derp", "--self-signed", "--stun-port", "3478"])
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--hostname")
            .arg(addr.ip().to_string())
            .arg("--state-dir")
            .arg(state_dir)
            .stdout(Stdio::piped());
        let mut relay = host.spawn(derp)?;
        let stdout = relay
            .child_mut()
            .stdout
            .take()
            .ok_or("the relay's stdout is not piped")?;
        // read_line has no timeout: read on a thread and wait for it with one. Should the
        // relay hang, dropping `relay` kills it, which ends the read and the thread.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let read = std::io::BufReader::new(stdout)
                .read_line(&mut line)
                .map(|_| line);
            let _ = tx.send(read);
        });
        let line = rx
            .recv_timeout(RELAY_START)
            .map_err(|_| "the relay printed no CertName within 10 s")?
            .map_err(|e| format!("reading the relay's CertName: {e}"))?;
        let cert_name = line
            .trim()
            .strip_prefix("CertName: ")
            .ok_or_else(|| format!("the relay did not start (it printed {:?})", line.trim()))?
            .to_owned();
        Ok((relay, cert_name))
    }

    /// `meshgate coordinator serve` on `host`, offering the relay at `relay` as region 900;
    /// returns once it accepts connections.
    pub(super) fn start_coordinator(
        &self,
        host: &Host,
        listen: SocketAddr,
        db: &Path,
        relay: (SocketAddr, &str),
        log: &Path,
    ) -> DemoResult<Proc> {
        let mut serve = self.command(host, log)?;
        serve
            .args(["coordinator", "serve", "--listen"])
            .arg(listen.to_string())
            .arg("--db")
            .arg(db)
            .arg("--derp-server")
            .arg(format!("https://{}", relay.0))
            .args(["--derp-cert-name", relay.1]);
        let mut server = host.spawn(serve)?;
        let deadline = Instant::now() + SERVER_START;
        loop {
            check_interrupted()?;
            let up = host.run(|| TcpStream::connect_timeout(&listen, POLL).is_ok())?;
            if up {
                return Ok(server);
            }
            if let Some(status) = server.try_wait()? {
                return Err(format!("the coordinator exited ({status})").into());
            }
            if Instant::now() > deadline {
                return Err(format!("the coordinator is not listening on {listen}").into());
            }
            std::thread::sleep(POLL);
        }
    }

    /// `meshgate coordinator authkey create --reusable` on the coordinator's database.
    pub(super) fn create_auth_key(&self, host: &Host, db: &Path, user: &str) -> DemoResult<String> {
        let out = host.exec_ok([
            self.exe.as_os_str(),
            OsStr::new("coordinator"),
            OsStr::new("authkey"),
            OsStr::new("create"),
            OsStr::new("--db"),
            db.as_os_str(),
            OsStr::new("--user"),
            OsStr::new(user),
            OsStr::new("--reusable"),
        ])?;
        let key = out.trim().to_owned();
        if !key.starts_with("mgkey-") {
            return Err(format!("`authkey create` printed no key: {key:?}").into());
        }
        Ok(key)
    }

    /// `meshgate daemon` joining the tailnet at once with the auth key.
    pub(super) fn start_daemon(&self, host: &Host, spec: &DaemonSpec<'_>) -> DemoResult<Proc> {
        let mut daemon = self.command(host, &spec.state_dir.join("daemon.log"))?;
        daemon
            .arg("daemon")
            .args(["--login-server", spec.login_server])
            .args(["--auth-key", spec.auth_key])
            .args(["--hostname", spec.hostname])
            .args(["--iface", spec.iface])
            .args(["--backend", backend_flag(spec.backend)])
            .arg("--state-dir")
            .arg(spec.state_dir)
            .arg("--socket")
            .arg(spec.socket);
        Ok(host.spawn(daemon)?)
    }

    /// `meshgate status --json` of the daemon behind `socket`, if it answers.
    pub(super) fn status_json(&self, host: &Host, socket: &Path) -> Option<serde_json::Value> {
        let output = host
            .exec([
                self.exe.as_os_str(),
                OsStr::new("status"),
                OsStr::new("--json"),
                OsStr::new("--socket"),
                socket.as_os_str(),
            ])
            .ok()?;
        if !output.status.success() {
            return None;
        }
        serde_json::from_slice(&output.stdout).ok()
    }

    /// `meshgate status` (the human form) of the daemon behind `socket`.
    pub(super) fn status_text(&self, host: &Host, socket: &Path) -> DemoResult<String> {
        Ok(host.exec_ok([
            self.exe.as_os_str(),
            OsStr::new("status"),
            OsStr::new("--socket"),
            socket.as_os_str(),
        ])?)
    }
}

fn backend_flag(backend: BackendChoice) -> &'static str {
    match backend {
        BackendChoice::Auto => "auto",
        BackendChoice::Kernel => "kernel",
        BackendChoice::Userspace => "userspace",
    }
}

/// The first IPv4 address in a JSON list of addresses ("100.64.0.1/32" or bare).
pub(super) fn ipv4_of(list: &serde_json::Value) -> Option<IpAddr> {
    list.as_array()?
        .iter()
        .filter_map(|a| {
            let text = a.as_str()?;
            text.split('/').next()?.parse::<IpAddr>().ok()
        })
        .find(IpAddr::is_ipv4)
}
