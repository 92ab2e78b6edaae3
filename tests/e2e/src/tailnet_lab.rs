//! A tailnet in the namespace lab, run through the `meshgate` binary only: one host serves
//! `meshgate coordinator serve`, the others run `meshgate daemon`. Scenarios drive it with
//! `meshgate status --json` and the other commands, as a user would.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use meshgate_netns_lab::{Host, Lab, Proc, Segment};
use meshgate_wg::BackendChoice;

use crate::bpffs::BpfFs;
use crate::{TempDir, meshgate_bin, unique_ifname};

pub fn backend_flag(backend: BackendChoice) -> &'static str {
    match backend {
        BackendChoice::Auto => "auto",
        BackendChoice::Kernel => "kernel",
        BackendChoice::Userspace => "userspace",
    }
}

/// A coordinator host and `agents` hosts on one switch; the coordinator's database holds a
/// user with a reusable auth key ([`TailnetLab::secret`]).
#[derive(Debug)]
pub struct TailnetLab {
    // Processes go before the lab that holds their namespaces.
    server: Option<Proc>,
    relay: Option<Proc>,
    pub agents: Vec<Host>,
    pub coordinator: Host,
    pub switch: Segment,
    pub lab: Lab,
    /// Pinned BPF maps of the daemons (unmounted before `dir` goes).
    pub bpf: BpfFs,
    pub dir: TempDir,
    pub db: PathBuf,
    /// The coordinator's ts2021 address, HOST:PORT.
    pub listen: String,
    pub secret: String,
    pub sockets: Vec<PathBuf>,
    ifaces: Vec<String>,
    backend: BackendChoice,
    /// The meshgate binary the daemons run (the test profile's by default; the footprint test
    /// runs the appliance build).
    pub daemon_binary: PathBuf,
}

impl TailnetLab {
    pub fn new(name: &str, backend: BackendChoice, agents: usize) -> TailnetLab {
        TailnetLab::with_agents(name, backend, |lab, switch| {
            (0..agents)
                .map(|i| {
                    let host = lab.add_host(&format!("n{i}")).unwrap();
                    switch.attach(&host).unwrap();
                    host
                })
                .collect()
        })
    }

    /// A lab whose agents `place` puts somewhere reachable from the switch the coordinator is
    /// on (behind NAT routers, say); agent i is `n<i>`.
    pub fn with_agents(
        name: &str,
        backend: BackendChoice,
        place: impl FnOnce(&Lab, &Segment) -> Vec<Host>,
    ) -> TailnetLab {
        TailnetLab::with_agents_on(name, backend, None, place)
    }

    /// [`TailnetLab::with_agents`] with the coordinator's switch on `subnet` (default: the lab's
    /// first switch subnet).
    pub fn with_agents_on(
        name: &str,
        backend: BackendChoice,
        subnet: Option<ipnet::IpNet>,
        place: impl FnOnce(&Lab, &Segment) -> Vec<Host>,
    ) -> TailnetLab {
        let lab = Lab::new(name).unwrap();
        let switch = match subnet {
            Some(subnet) => lab.add_switch_with("sw", &[subnet]).unwrap(),
            None => lab.add_switch("sw").unwrap(),
        };
        let coordinator = lab.add_host("coord").unwrap();
        switch.attach(&coordinator).unwrap();
        let agents = place(&lab, &switch);
        let dir = TempDir::new(name);
        let db = dir.0.join("coordinator.db");
        let bpf = BpfFs::mount(&dir.0.join("bpf"));
        let secret = coordinator
            .exec_ok([
                meshgate_bin().as_os_str(),
                "coordinator".as_ref(),
                "authkey".as_ref(),
                "create".as_ref(),
                "--db".as_ref(),
                db.as_os_str(),
                "--user".as_ref(),
                "e2e@example.com".as_ref(),
                "--reusable".as_ref(),
            ])
            .unwrap()
            .trim()
            .to_owned();
        assert!(secret.starts_with("mgkey-"), "not a key: {secret:?}");
        let listen = format!("{}:8080", coordinator.addr_on(&switch).unwrap());
        let sockets = (0..agents.len())
            .map(|i| dir.0.join(format!("n{i}")).join("s.sock"))
            .collect();
        let ifaces = (0..agents.len()).map(|_| unique_ifname("c")).collect();
        TailnetLab {
            server: None,
            relay: None,
            agents,
            coordinator,
            switch,
            lab,
            bpf,
            dir,
            db,
            listen,
            secret,
            sockets,
            ifaces,
            backend,
            daemon_binary: meshgate_bin(),
        }
    }

    /// Starts `meshgate coordinator serve` with `extra` flags; its log is coordinator.log.
    pub fn serve(&mut self, extra: &[&str]) {
        self.server = Some(self.spawn_server("coordinator.log", extra));
    }

    /// Kills the coordinator (SIGKILL: nothing saved on the way out) and starts it again on
    /// the same database; its log is coordinator-2.log.
    pub fn restart_server(&mut self, extra: &[&str]) {
        if let Some(server) = self.server.take() {
            server.kill().unwrap();
        }
        self.server = Some(self.spawn_server("coordinator-2.log", extra));
    }

    fn spawn_server(&self, log: &str, extra: &[&str]) -> Proc {
        let mut serve = self.coordinator.command(meshgate_bin());
        serve
            .args(["coordinator", "serve", "--listen", &self.listen, "--db"])
            .arg(&self.db)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.0.join(log)).unwrap());
        self.coordinator.spawn(serve).expect("coordinator")
    }

    /// Starts `meshgate derp` on the coordinator host (self-signed TLS on port 8443, STUN on
    /// 3478) and returns the `coordinator serve` flags that offer it as the DERP region.
    pub fn start_relay(&mut self) -> Vec<String> {
        use std::io::BufRead as _;
        let host = self.coordinator.addr_on(&self.switch).unwrap();
        let mut derp = self.coordinator.command(meshgate_bin());
        derp.args(["derp", "--self-signed", "--stun-port", "3478"])
            .arg("--listen")
            .arg(format!("{host}:8443"))
            .arg("--hostname")
            .arg(host.to_string())
            .arg("--state-dir")
            .arg(self.dir.0.join("derp"))
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(self.dir.0.join("derp.log")).unwrap());
        let mut relay = self.coordinator.spawn(derp).expect("meshgate derp");
        let stdout = relay.child_mut().stdout.take().expect("piped stdout");
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the relay's CertName line");
        let cert_name = line
            .trim()
            .strip_prefix("CertName: ")
            .unwrap_or_else(|| panic!("not a CertName line: {line:?}\n{}", self.logs()))
            .to_owned();
        self.relay = Some(relay);
        vec![
            "--derp-server".to_owned(),
            format!("https://{host}:8443"),
            "--derp-cert-name".to_owned(),
            cert_name,
        ]
    }

    /// The coordinator's process id (to signal it).
    pub fn server_pid(&self) -> u32 {
        self.server.as_ref().expect("serve first").id()
    }

    /// Starts n<i>'s daemon (`run` numbers its log file, for restarts), joining at once with
    /// the auth key when `join`, else waiting for `meshgate up`.
    pub fn start_daemon(&self, i: usize, run: usize, join: bool, extra: &[&str]) -> Proc {
        let state = self.state_dir(i);
        std::fs::create_dir_all(&state).unwrap();
        let mut daemon = self.agents[i].command(&self.daemon_binary);
        daemon.arg("daemon");
        if join {
            daemon.args(["--login-server", &self.listen, "--auth-key", &self.secret]);
        }
        daemon
            .args(["--backend", backend_flag(self.backend)])
            .args(["--iface", &self.ifaces[i]])
            .args(["--hostname", &format!("n{i}")])
            .args(["--reconcile-every", "1s"])
            .arg("--bpf-pin-root")
            .arg(self.bpf.path())
            .arg("--state-dir")
            .arg(&state)
            .arg("--socket")
            .arg(&self.sockets[i])
            .args(extra)
            .env(
                "MESHGATE_LOG",
                "info,meshgate_control=debug,meshgate::daemon::paths=trace",
            )
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(state.join(format!("daemon-{run}.log"))).unwrap());
        self.agents[i].spawn(daemon).expect("daemon")
    }

    pub fn state_dir(&self, i: usize) -> PathBuf {
        self.dir.0.join(format!("n{i}"))
    }

    /// `meshgate coordinator ARGS --db DB` on the coordinator host; its stdout.
    pub fn admin(&self, args: &[&str]) -> String {
        let mut argv: Vec<&std::ffi::OsStr> = vec![meshgate_bin_os(), "coordinator".as_ref()];
        argv.extend(args.iter().map(std::ffi::OsStr::new));
        argv.extend(["--db".as_ref(), self.db.as_os_str()]);
        self.coordinator
            .exec_ok(argv)
            .unwrap_or_else(|e| panic!("coordinator {args:?}: {e}\n{}", self.logs()))
    }

    /// `meshgate status --json` of n<i>'s daemon, if it answers.
    pub fn status(&self, i: usize) -> Option<serde_json::Value> {
        status_at(&self.agents[i], &self.sockets[i])
    }

    /// `meshgate ARGS --socket SOCKET` on n<i>: success, and stdout or stderr.
    pub fn meshgate(&self, i: usize, args: &[&str]) -> (bool, String) {
        meshgate_at(&self.agents[i], &self.sockets[i], args)
    }

    /// Waits up to 20 s until `check` holds for n<i>'s status.
    pub fn wait_status(
        &self,
        i: usize,
        what: &str,
        check: impl Fn(&Option<serde_json::Value>) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let shown = self.status(i);
            if check(&shown) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what} never happened: {shown:#?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits up to 60 s until every agent has a tailnet address and sees all the others;
    /// their tailnet IPv4 addresses.
    pub fn wait_joined(&self) -> Vec<IpAddr> {
        let others = self.agents.len() - 1;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let statuses: Vec<_> = (0..self.agents.len()).map(|i| self.status(i)).collect();
            let addresses: Option<Vec<IpAddr>> = statuses
                .iter()
                .map(|s| {
                    let s = s
                        .as_ref()
                        .filter(|s| s["peers"].as_array().map(Vec::len) == Some(others))?;
                    ipv4_of(&s["self"]["addresses"])
                })
                .collect();
            if let Some(addresses) = addresses {
                return addresses;
            }
            assert!(
                Instant::now() < deadline,
                "the agents never saw each other: {statuses:#?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits up to 60 s until n0 and n1 reach each other by tailnet address, both ways.
    pub fn wait_reachable(&self, addresses: &[IpAddr]) {
        let deadline = Instant::now() + Duration::from_secs(60);
        for (i, j) in [(0, 1), (1, 0)] {
            while !self.agents[i].ping(addresses[j], 1) {
                assert!(
                    Instant::now() < deadline,
                    "n{i} cannot reach n{j}: {:#?}\n{}",
                    self.status(i),
                    self.logs()
                );
            }
        }
    }

    /// Every log file of the run, for failure messages.
    pub fn logs(&self) -> String {
        logs(&self.dir.0)
    }
}

impl Drop for TailnetLab {
    fn drop(&mut self) {
        // MESHGATE_E2E_LOGS=1 shows every log of a passing run too (with --nocapture).
        if std::env::var_os("MESHGATE_E2E_LOGS").is_some() {
            println!("{}", self.logs());
        }
    }
}

/// `meshgate status --json` of the daemon behind `socket` on `host`, if it answers.
pub fn status_at(host: &Host, socket: &Path) -> Option<serde_json::Value> {
    let mut command = host.command(meshgate_bin());
    command.args(["status", "--json", "--socket"]).arg(socket);
    let output = command.output().ok()?;
    if !output.status.success() {
        if std::env::var_os("MESHGATE_E2E_LOGS").is_some() {
            eprintln!("status: {}", String::from_utf8_lossy(&output.stderr).trim());
        }
        return None;
    }
    serde_json::from_slice(&output.stdout).ok()
}

/// `meshgate ARGS --socket SOCKET` on `host`: success, and stdout or stderr.
pub fn meshgate_at(host: &Host, socket: &Path, args: &[&str]) -> (bool, String) {
    let mut command = host.command(meshgate_bin());
    command.args(args).arg("--socket").arg(socket);
    let output = command.output().expect("running meshgate");
    let text = if output.status.success() {
        &output.stdout
    } else {
        &output.stderr
    };
    (
        output.status.success(),
        String::from_utf8_lossy(text).trim().to_owned(),
    )
}

fn meshgate_bin_os() -> &'static std::ffi::OsStr {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(meshgate_bin).as_os_str()
}

/// Every `.log` file in `dir` and its subdirectories one level down.
pub fn logs(dir: &Path) -> String {
    let mut files: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            for inner in std::fs::read_dir(&path).into_iter().flatten().flatten() {
                files.push(inner.path());
            }
        } else {
            files.push(path);
        }
    }
    files.sort();
    let mut out = String::new();
    for file in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "log"))
    {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        out.push_str(&format!("==== {}\n{text}\n", file.display()));
    }
    out
}

/// Number of peers in a status, if it answered.
pub fn peer_count(status: &Option<serde_json::Value>) -> Option<usize> {
    status.as_ref()?["peers"].as_array().map(Vec::len)
}

/// The first IPv4 address in a JSON list of addresses.
pub fn ipv4_of(list: &serde_json::Value) -> Option<IpAddr> {
    list.as_array()?
        .iter()
        .filter_map(|a| a.as_str()?.parse::<IpAddr>().ok())
        .find(IpAddr::is_ipv4)
}
