//! Netlink apply against `wg syncconf`, on kernel WireGuard in the VM lab.
//!
//! Run: `cargo bench -p meshgate-benches --bench netlink_apply`. On the host it boots the VM lab
//! and runs itself there; inside, each case alternates meshgate and `wg syncconf` (A/B/A/B) on
//! two interfaces given the same configuration file, and prints medians, spreads and ratios.
//! meshgate is measured in-process (file parse + read + diff + write); `wg` as the command a
//! user runs, so its figure includes one process start, printed separately for reference.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use meshgate_benches::{Samples, report_line};
use meshgate_wg::{DeviceConfig, Engine, InterfaceConfig, PeerConfig, PrivateKey, wgconf};

const ROUNDS: usize = 3;

fn main() {
    if meshgate_vm_lab::in_vm() {
        in_vm();
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let lab = match meshgate_vm_lab::VmLab::new() {
        Ok(lab) => lab,
        Err(e) => {
            eprintln!("netlink_apply: cannot start the VM lab: {e}");
            std::process::exit(1);
        }
    };
    let exe = std::env::current_exe().expect("current_exe");
    let scenario = meshgate_vm_lab::Scenario::new(exe)
        .arg("--bench")
        .timeout(Duration::from_secs(1500))
        .memory_mib(2048);
    let outcome = lab.run(&scenario).expect("VM run");
    for line in outcome.console.lines() {
        if let Some(text) = line.strip_prefix("BENCH ") {
            println!("{text}");
        }
    }
    if !outcome.passed() {
        eprintln!("{}", outcome.console);
        std::process::exit(1);
    }
}

fn in_vm() {
    let dir = PathBuf::from("/tmp/meshgate-bench");
    std::fs::create_dir_all(&dir).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut out = String::new();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let _ = writeln!(
        out,
        "netlink apply vs wg syncconf, kernel WireGuard {}",
        kernel.trim()
    );
    let _ = writeln!(out, "{ROUNDS} interleaved rounds; medians with [min-max]");

    let spawn = {
        let mut s = Samples::default();
        ip(&["link", "add", "wgnop", "type", "wireguard"]);
        for _ in 0..ROUNDS {
            s.push(time(|| run("wg", &["show", "wgnop", "listen-port"])));
        }
        ip(&["link", "del", "wgnop"]);
        s.median()
    };
    let _ = writeln!(
        out,
        "one `wg show` process start: {:.1} ms",
        spawn.as_secs_f64() * 1e3
    );

    for peers in [1_000, 10_000] {
        let file = dir.join(format!("{peers}.conf"));
        write_config(&file, &config(peers, None));
        let (mut ours, mut theirs) = (Samples::default(), Samples::default());
        for _ in 0..ROUNDS {
            ip(&["link", "add", "mgb0", "type", "wireguard"]);
            ours.push(time(|| apply_file(&runtime, "mgb0", &file)));
            ip(&["link", "del", "mgb0"]);
            ip(&["link", "add", "wgb0", "type", "wireguard"]);
            theirs.push(time(|| {
                run("wg", &["syncconf", "wgb0", file.to_str().unwrap()])
            }));
            ip(&["link", "del", "wgb0"]);
        }
        let what = format!("full apply, {peers} peers from nothing");
        let _ = writeln!(out, "{}", report_line(&what, &ours, &theirs, 1.0));
    }

    // One peer's endpoint changes at 10k peers. Files alternate so every round is a change.
    let peers = 10_000;
    let base = config(peers, None);
    let changed = config(peers, Some(4242));
    let (file_a, file_b) = (dir.join("a.conf"), dir.join("b.conf"));
    write_config(&file_a, &base);
    write_config(&file_b, &changed);
    ip(&["link", "add", "mgb0", "type", "wireguard"]);
    ip(&["link", "add", "wgb0", "type", "wireguard"]);
    apply_file(&runtime, "mgb0", &file_a);
    run("wg", &["syncconf", "wgb0", file_a.to_str().unwrap()]);
    let (mut reconcile, mut delta, mut theirs) =
        (Samples::default(), Samples::default(), Samples::default());
    let mut delta_messages = Vec::new();
    let mut reconcile_messages = Vec::new();
    let from = named(&base, "mgb0");
    let to = named(&changed, "mgb0");
    for round in 0..ROUNDS {
        // The daemon's path for a new configuration: no read-back.
        let start = Instant::now();
        let report = runtime.block_on(async {
            let engine = Engine::new(Default::default()).unwrap();
            engine.apply_delta(&from, &to).await.unwrap()
        });
        delta.push(start.elapsed());
        delta_messages.push(report.device_messages);
        // And back with the reconcile path (read the kernel, diff, write), as `wg apply` does.
        let start = Instant::now();
        let report = apply_file(&runtime, "mgb0", &file_a);
        reconcile.push(start.elapsed());
        reconcile_messages.push(report.device_messages);
        let file = if round % 2 == 0 { &file_b } else { &file_a };
        theirs.push(time(|| {
            run("wg", &["syncconf", "wgb0", file.to_str().unwrap()])
        }));
    }
    let _ = writeln!(
        out,
        "{}",
        report_line(
            "one-peer change at 10k, incremental (daemon)",
            &delta,
            &theirs,
            5.0
        )
    );
    let _ = writeln!(
        out,
        "{}",
        report_line(
            "one-peer change at 10k, read+diff (wg apply)",
            &reconcile,
            &theirs,
            5.0
        )
    );
    let _ = writeln!(
        out,
        "netlink SET messages per one-peer change at 10k peers: incremental {delta_messages:?}, \
         read+diff {reconcile_messages:?} (goal: 1, independent of peer count)"
    );
    for line in out.lines() {
        println!("BENCH {line}");
    }
}

fn named(device: &DeviceConfig, name: &str) -> InterfaceConfig {
    InterfaceConfig {
        name: name.into(),
        device: device.clone(),
        ..InterfaceConfig::default()
    }
}

fn apply_file(
    runtime: &tokio::runtime::Runtime,
    iface: &str,
    file: &Path,
) -> meshgate_wg::ApplyReport {
    runtime.block_on(async {
        let desired = wgconf::load(file, iface).unwrap();
        let engine = Engine::new(Default::default()).unwrap();
        engine.apply(&desired).await.unwrap()
    })
}

fn config(peers: u32, changed_port: Option<u16>) -> DeviceConfig {
    let mut device = DeviceConfig {
        private_key: Some(PrivateKey::from_bytes([0x41; 32])),
        listen_port: 51000,
        ..DeviceConfig::default()
    };
    for n in 0..peers {
        let mut private = [0u8; 32];
        private[..4].copy_from_slice(&n.to_be_bytes());
        private[31] = 0x40;
        let key = PrivateKey::from_bytes(private).public_key();
        let port = if n == peers / 2 {
            changed_port.unwrap_or(20_000)
        } else {
            20_000
        };
        let v4 = Ipv4Addr::from(0x0a00_0000 | (n << 8) | 1);
        let v6 = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, (n >> 16) as u16, n as u16);
        device.peers.insert(
            key,
            PeerConfig {
                endpoint: Some(SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)),
                    port,
                )),
                allowed_ips: [IpAddr::V4(v4).into(), IpAddr::V6(v6).into()].into(),
                ..PeerConfig::default()
            },
        );
    }
    device
}

fn write_config(path: &Path, device: &DeviceConfig) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, wgconf::render_wg_setconf(device)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn time<T>(f: impl FnOnce() -> T) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

fn ip(args: &[&str]) {
    run("ip", args);
}

fn run(program: &str, args: &[&str]) {
    let output = Command::new(program).args(args).output().expect(program);
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
