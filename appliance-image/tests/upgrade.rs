//! Upgrade in place under traffic: a ping flow from a peer through the appliance to its LAN
//! loses nothing while `meshgate-upgrade` replaces the running binary (the kernel keeps the
//! data plane; the new daemon adopts it). Then a broken binary (it answers --version but dies
//! as a daemon) is rolled back: the command says so, the previous binary runs again, and the
//! traffic keeps flowing.

use std::process::Stdio;
use std::time::{Duration, Instant};

use meshgate_appliance_image::lab::TAPS;
use meshgate_appliance_image::{Appliance, ApplianceLab, Image, PingFlow, PingReport};

const SHORT: Duration = Duration::from_secs(30);

#[test]
fn upgrade_under_traffic_loses_nothing_and_a_broken_binary_is_rolled_back() {
    let image = Image::get().unwrap_or_else(|e| panic!("building the image: {e}"));
    println!("{}", image.footprint());
    let mut lab = ApplianceLab::new("appl-upgrade").unwrap();
    let disk = image.disk(&lab.dir(), &lab.config()).unwrap();
    lab.start_peer();

    // The new binaries come over the uplink, from a web server on the coordinator's host.
    let www = lab.dir().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::copy(image.meshgate.as_ref().unwrap(), www.join("meshgate")).unwrap();
    std::fs::write(
        www.join("broken"),
        "#!/bin/sh\n# answers --version, then fails as a daemon: an upgrade that must roll back\n\
         case \"$1\" in --version) echo 'meshgate 0.0.0-broken' ;; *) echo 'broken on purpose' >&2; exit 1 ;; esac\n",
    )
    .unwrap();
    let coordinator = lab.net.coordinator.clone();
    let server_addr = coordinator.addr_on(&lab.net.switch).unwrap();
    let mut httpd = coordinator.command("busybox");
    httpd
        .args(["httpd", "-f", "-p"])
        .arg(format!("{server_addr}:8081"))
        .arg("-h")
        .arg(&www)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _httpd = coordinator.spawn(httpd).unwrap();

    let mut vm = Appliance::boot(&lab.appl, &disk.path, &TAPS, &lab.dir()).unwrap();
    vm.wait_shell(Duration::from_secs(240))
        .unwrap_or_else(|e| panic!("boot: {e}"));
    wait_healthy(&mut vm);
    lab.approve_route(Duration::from_secs(60)).unwrap();
    lab.wait_lan_reachable(Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e}\nappliance console:\n{}", vm.tail(80)));
    vm.sh_ok(
        &format!(
            "wget -q -O /tmp/meshgate-new http://{server_addr}:8081/meshgate && \
             wget -q -O /tmp/broken http://{server_addr}:8081/broken && \
             chmod 755 /tmp/meshgate-new /tmp/broken"
        ),
        Duration::from_secs(120),
    )
    .unwrap();

    // A good upgrade under traffic.
    let old_pid = vm.sh_ok("cat /run/meshgate.pid", SHORT).unwrap();
    let (flow, base) = started_flow(&lab);
    let start = Instant::now();
    let (rc, said) = vm
        .sh(
            "meshgate-upgrade /tmp/meshgate-new",
            Duration::from_secs(180),
        )
        .unwrap();
    let took = start.elapsed();
    assert_eq!(rc, 0, "meshgate-upgrade failed: {said}\n{}", vm.tail(40));
    let new_pid = vm.sh_ok("cat /run/meshgate.pid", SHORT).unwrap();
    assert_ne!(
        old_pid.trim(),
        new_pid.trim(),
        "the daemon was not restarted"
    );
    let running = vm.sh_ok("cat /run/meshgate.bin", SHORT).unwrap();
    assert_eq!(running.trim(), "/state/bin/meshgate", "{said}");
    let report = finish_flow(&lab, flow);
    let lost = lost_after(&report, base);
    println!(
        "UPGRADE good binary: {:.1} s, ping -i 0.1: {} answered up to seq {}, lost {:?} \
         (before the upgrade began: {:?})",
        took.as_secs_f64(),
        report.answered,
        report.last_seq,
        lost,
        report
            .lost
            .iter()
            .filter(|&&s| s <= base)
            .collect::<Vec<_>>()
    );
    assert!(lost.is_empty(), "pings lost during the upgrade: {report:?}");
    assert!(
        f64::from(report.last_seq - base) * 0.1 >= took.as_secs_f64(),
        "the ping flow did not span the upgrade: {report:?}"
    );

    // A broken binary: health check fails, the previous one comes back.
    let (flow, base) = started_flow(&lab);
    let start = Instant::now();
    let (rc, said) = vm
        .sh(
            "MG_UPGRADE_TIMEOUT=30 meshgate-upgrade /tmp/broken",
            Duration::from_secs(240),
        )
        .unwrap();
    let took = start.elapsed();
    assert_ne!(rc, 0, "a broken upgrade must fail: {said}");
    assert!(said.contains("rolled back"), "no rollback reported: {said}");
    vm.sh_ok("cmp /state/bin/meshgate /tmp/meshgate-new", SHORT)
        .unwrap_or_else(|e| panic!("the previous binary is not back in place: {e}"));
    let pid = vm.sh_ok("cat /run/meshgate.pid", SHORT).unwrap();
    let exe = vm
        .sh_ok(&format!("readlink /proc/{}/exe", pid.trim()), SHORT)
        .unwrap();
    assert_eq!(exe.trim(), "/state/bin/meshgate", "running: {exe}");
    wait_healthy(&mut vm);
    let report = finish_flow(&lab, flow);
    println!(
        "UPGRADE broken binary rolled back in {:.1} s, ping -i 0.1: {} answered up to seq {}, lost {} ({:?}..{:?})",
        took.as_secs_f64(),
        report.answered,
        report.last_seq,
        lost_after(&report, base).len(),
        lost_after(&report, base).first(),
        lost_after(&report, base).last()
    );
    // While no agent runs, the tunnel keeps forwarding only for a few seconds, so the
    // rollback may cost pings; what must hold is that traffic flows again after it (which
    // finish_flow waited for: 30 answers in a row).
    assert!(report.answered > 30, "{report:?}");
    lab.tcp_to_lan().unwrap();
    vm.poweroff(Duration::from_secs(60)).unwrap();
}

/// A ping flow that has had three answers, and the sequence number it had reached: earlier
/// losses (the flow warming up before the event) do not count.
fn started_flow(lab: &ApplianceLab) -> (PingFlow, u32) {
    let flow = lab.ping_flow().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let report = flow.report().unwrap();
        if report.answered >= 3 {
            return (flow, report.last_seq);
        }
        assert!(Instant::now() < deadline, "the ping flow never got going");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The losses after `base`.
fn lost_after(report: &PingReport, base: u32) -> Vec<u32> {
    report.lost.iter().copied().filter(|&s| s > base).collect()
}

/// Lets the flow run on after the event until 30 pings in a row (3 s) have been answered,
/// then stops it.
fn finish_flow(lab: &ApplianceLab, flow: PingFlow) -> PingReport {
    let seen = flow.report().unwrap().last_seq;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let report = flow.report().unwrap();
        let clean_since = report.lost.last().map_or(seen, |&s| s.max(seen));
        if report.last_seq >= clean_since + 30 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the ping flow stalled after the upgrade: {:?}\n{}",
            flow.report(),
            lab.net.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    flow.stop().unwrap()
}

fn wait_healthy(vm: &mut Appliance) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (rc, out) = vm
            .sh(
                "meshgate status --json --socket /run/meshgate/meshgate.sock | grep -q '\"state\": *\"up\"'",
                SHORT,
            )
            .unwrap();
        if rc == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the appliance never became healthy: {out}\n{}",
            vm.tail(60)
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}
