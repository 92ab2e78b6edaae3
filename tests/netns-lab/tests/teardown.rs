//! Nothing of a lab survives it: not after drop, not after a panic, not after a crash.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::Command;
use std::sync::Mutex;

use meshgate_netns_lab::{Host, Lab, NatKind, sweep_leftovers};

fn listed_namespaces() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

fn assert_all_gone(names: &[String]) {
    assert!(!names.is_empty());
    let listed = listed_namespaces();
    for name in names {
        assert!(!listed.contains(name), "{name} is still there");
    }
}

/// Gone, or a zombie (dead, only waiting for its parent to read its status).
fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

/// Starts a process that is not our child (the shell exits at once), so only the lab can stop
/// it.
fn orphan_sleeper(host: &Host) -> u32 {
    host.exec_ok(["sh", "-c", "sleep 300 >/dev/null 2>&1 & echo $!"])
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn busy_lab(name: &str) -> (Lab, Vec<u32>) {
    let lab = Lab::new(name).unwrap();
    let internet = lab.add_switch("internet").unwrap();
    let router = lab
        .add_router("r", &internet, NatKind::EndpointIndependent.with_hairpin())
        .unwrap();
    let lan = lab.add_lan(&router).unwrap();
    let host = lab.add_lan_host(&lan, "h").unwrap();
    let mut sleeper = Command::new("sleep");
    sleeper.arg("300");
    let spawned = host.spawn(sleeper).unwrap();
    let pids = vec![orphan_sleeper(&host), orphan_sleeper(&router), spawned.id()];
    // Forgotten on purpose: the lab has to stop it on its own.
    std::mem::forget(spawned);
    (lab, pids)
}

#[test]
fn drop_deletes_the_namespaces_and_kills_their_processes() {
    let (lab, pids) = busy_lab("drop");
    let names = lab.namespaces();
    assert!(pids.iter().all(|&pid| !process_gone(pid)));
    drop(lab);
    assert_all_gone(&names);
    for pid in pids {
        assert!(process_gone(pid), "process {pid} survived the lab");
    }
}

#[test]
fn a_panic_in_a_test_still_tears_the_lab_down() {
    let seen = Mutex::new((Vec::new(), Vec::new()));
    let result = catch_unwind(AssertUnwindSafe(|| {
        let (lab, pids) = busy_lab("panic");
        *seen.lock().unwrap() = (lab.namespaces(), pids);
        panic!("the test failed half-way");
    }));
    assert!(result.is_err());
    let (names, pids) = seen.into_inner().unwrap();
    assert_all_gone(&names);
    for pid in pids {
        assert!(process_gone(pid), "process {pid} survived the lab");
    }
}

#[test]
fn close_tears_down_and_reports_success() {
    let (lab, pids) = busy_lab("close");
    let names = lab.namespaces();
    lab.close().unwrap();
    assert_all_gone(&names);
    assert!(pids.into_iter().all(process_gone));
}

fn base36(mut v: u32) -> String {
    let mut digits = Vec::new();
    loop {
        digits.push(std::char::from_digit(v % 36, 36).unwrap());
        v /= 36;
        if v == 0 {
            break;
        }
    }
    digits.iter().rev().collect()
}

/// A namespace made by hand around a process; both go when the test ends, however it ends.
struct Pinned(String, u32);

impl Pinned {
    /// Pins the network namespace of `pid` as `name`: a namespace that has a process in it
    /// from the moment it has a name.
    fn attach(name: String, pid: u32) -> Self {
        let status = Command::new("ip")
            .args(["netns", "attach", &name, &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "ip netns attach {name}");
        Pinned(name, pid)
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        // Only our sleeper: after a sweep killed it, its pid may belong to someone else.
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", self.1)).unwrap_or_default();
        if cmdline == b"sleep\x00300\x00" {
            let _ = Command::new("kill").arg(self.1.to_string()).output();
        }
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .output();
    }
}

/// A process (not our child) in a new network namespace of its own.
fn sleeper_in_new_netns() -> u32 {
    let out = Command::new("sh")
        .args(["-c", "unshare --net sleep 300 >/dev/null 2>&1 & echo $!"])
        .output()
        .unwrap();
    let pid = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    // unshare execs sleep once the namespace exists; wait for that, so `attach` pins the new one.
    let own = std::fs::read_link("/proc/self/ns/net").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::fs::read_link(format!("/proc/{pid}/ns/net")).is_ok_and(|ns| ns == own) {
        assert!(
            std::time::Instant::now() < deadline,
            "unshare did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    pid
}

#[test]
fn leftovers_of_crashed_runs_are_swept_and_live_ones_kept() {
    // A pid that no longer exists stands for a test binary that crashed.
    let mut gone = Command::new("true").spawn().unwrap();
    let dead_pid = gone.id();
    gone.wait().unwrap();
    // Made with a process inside from the start: the sweep of another test binary running
    // at the same time may strike at any moment after the name appears.
    let crashed = Pinned::attach(
        format!("mgl-{}-0-crash", base36(dead_pid)),
        sleeper_in_new_netns(),
    );
    let live = Pinned::attach(
        format!("mgl-{}-zz-live", base36(std::process::id())),
        sleeper_in_new_netns(),
    );

    sweep_leftovers().unwrap();
    let listed = listed_namespaces();
    assert!(
        !listed.contains(&crashed.0),
        "the crashed run's namespace stayed"
    );
    assert!(
        process_gone(crashed.1),
        "the crashed run's process survived"
    );
    assert!(
        listed.contains(&live.0),
        "a live process's namespace was swept"
    );
}
