//! Boots real VMs through the scenario API. Each boot takes several seconds under TCG, so the
//! checks are grouped to keep the number of boots small.

use std::time::Duration;

use meshgate_vm_lab::{Scenario, VmLab, VmOutcome};

fn lab() -> VmLab {
    VmLab::new().unwrap_or_else(|e| panic!("VM lab unavailable: {e}"))
}

fn describe(outcome: &VmOutcome) -> String {
    format!(
        "{} (boot {:?}, total {:.1?})\n{}",
        outcome.summary(),
        outcome.boot_time,
        outcome.elapsed,
        outcome.console_tail(60)
    )
}

#[test]
fn exit_status_comes_back() {
    let lab = lab();
    let failing = lab.run(&Scenario::shell("exit 3")).unwrap();
    assert_eq!(failing.exit_code, Some(3), "{}", describe(&failing));
    assert!(!failing.passed());
    assert!(!failing.timed_out);

    let passing = lab.run(&Scenario::new("true")).unwrap();
    assert!(passing.passed(), "{}", describe(&passing));
    let boot = passing.boot_time.expect("the scenario started");
    eprintln!(
        "kernel {}: boot to scenario {boot:.2?}, whole run {:.2?}",
        lab.kernel_version(),
        passing.elapsed
    );
}

/// The real WireGuard module answers, and a file written into the share reaches the host.
#[test]
fn wireguard_module_and_share() {
    let script = r#"
        set -e
        /usr/sbin/ip link add wgt0 type wireguard
        /usr/bin/wg set wgt0 listen-port 51820 private-key /dev/stdin <<EOF
$(/usr/bin/wg genkey)
EOF
        /usr/bin/wg show wgt0
        grep -q '^wireguard ' /proc/modules
        uname -r > "$MESHGATE_VMLAB_SHARE/uname"
        echo "in_vm=$MESHGATE_IN_VM" >> "$MESHGATE_VMLAB_SHARE/uname"
    "#;
    let outcome = lab().run(&Scenario::shell(script)).unwrap();
    assert!(outcome.passed(), "{}", describe(&outcome));
    assert!(
        outcome.console.contains("interface: wgt0"),
        "{}",
        describe(&outcome)
    );
    assert!(
        outcome.console.contains("listening port: 51820"),
        "{}",
        describe(&outcome)
    );
    let written = std::fs::read_to_string(outcome.share_dir().join("uname")).unwrap();
    let mut lines = written.lines();
    assert_eq!(lines.next(), Some(lab().kernel_version()));
    assert_eq!(lines.next(), Some("in_vm=1"));
}

#[test]
fn timeout_is_reported_not_passed() {
    // One CPU, so that on a two-core host it boots alongside another test's VM.
    let scenario = Scenario::new("sleep")
        .arg("1000")
        .cpus(1)
        .timeout(Duration::from_secs(10));
    let outcome = lab().run(&scenario).unwrap();
    assert!(outcome.timed_out, "{}", describe(&outcome));
    assert!(!outcome.passed());
    assert_eq!(outcome.exit_code, None);
    assert!(
        outcome.elapsed < Duration::from_secs(15),
        "{:?}",
        outcome.elapsed
    );
}
