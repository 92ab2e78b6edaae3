//! Ctrl-C removes the lab: a real process running `meshgate bench` gets SIGINT once it is
//! measuring, exits with 130 within seconds, and its namespaces and wireguard-go sockets are
//! gone. The process is this test binary re-run with only the child test selected (so the test
//! needs no example binary built first). Root.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "MESHGATE_BENCH_CTRL_C_CHILD";

/// Runs only in the re-run process: a bench long enough to be interrupted, exiting the way
/// the command does.
#[test]
fn child_bench_until_interrupted() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let args = meshgate_bench::BenchArgs::try_parse_args(&[
        "--runs",
        "3",
        "--duration",
        "20s",
        "--rules",
        "10",
        "--sizes",
        "64",
    ])
    .expect("bench flags");
    let code = match meshgate_bench::run(&args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("child: {e}");
            e.exit_code()
        }
    };
    std::process::exit(code);
}

fn base36(mut v: u64) -> String {
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(digits[(v % 36) as usize]);
        v /= 36;
        if v == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap()
}

/// The child's lab namespaces (netns-lab names them `mgl-<pid base36>-...`).
fn namespaces_of(pid: u32) -> Vec<String> {
    let prefix = format!("mgl-{}-", base36(u64::from(pid)));
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&prefix))
        .map(str::to_owned)
        .collect()
}

#[test]
fn sigint_stops_the_bench_and_removes_its_namespaces() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_bench_until_interrupted",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // "wireguard: ..." is printed once the lab and tunnel stand, just before measuring.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.starts_with("wireguard: ") => break,
            Ok(line) => seen.push(line),
            Err(e) => {
                let _ = child.kill();
                panic!("the child never started measuring ({e}); its stderr: {seen:#?}");
            }
        }
    }
    let before = namespaces_of(pid);
    assert_eq!(
        before.len(),
        3,
        "snd, rtr and rcv exist while it runs: {before:?}"
    );

    let sigint_at = Instant::now();
    let kill = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if sigint_at.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("the bench did not stop within 10 s of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = sigint_at.elapsed();
    let rest: Vec<String> = rx.try_iter().collect();
    assert_eq!(
        status.code(),
        Some(130),
        "exit status {status}; stderr: {rest:#?}"
    );
    assert!(rest.iter().any(|l| l.contains("interrupted")), "{rest:#?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(
        namespaces_of(pid),
        Vec::<String>::new(),
        "namespaces left behind"
    );
    let sockets: Vec<_> = std::fs::read_dir("/var/run/wireguard")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains(&format!("{pid:x}")))
                .collect()
        })
        .unwrap_or_default();
    assert!(sockets.is_empty(), "wireguard-go sockets left: {sockets:?}");
}
