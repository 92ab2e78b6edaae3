//! The image boots in qemu, joins the lab's coordinator, advertises its LAN, and a peer
//! reaches a host on that LAN through it (ping and TCP). Then a second boot of the same disk
//! with a broken meshgate.conf: the console and the log name the line at fault, and the
//! previous good config (and the stored node key) keep the appliance in the tailnet.

use std::time::{Duration, Instant};

use meshgate_appliance_image::lab::TAPS;
use meshgate_appliance_image::{Appliance, ApplianceLab, Image};

const BOOT: Duration = Duration::from_secs(240);
const SHORT: Duration = Duration::from_secs(30);

#[test]
fn boots_joins_routes_the_lan_and_survives_a_bad_config() {
    let image = Image::get().unwrap_or_else(|e| panic!("building the image: {e}"));
    println!("{}", image.footprint());
    println!(
        "image: appliance binary build {:.1} s, image build {}",
        image.binary_build.as_secs_f64(),
        image
            .image_build
            .map_or("cached".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()))
    );
    let mut lab = ApplianceLab::new("appl-boot").unwrap();
    let config = lab.config();
    let disk = image.disk(&lab.dir(), &config).unwrap();
    lab.start_peer();

    // First boot: join and route.
    let start = Instant::now();
    let mut vm = Appliance::boot(&lab.appl, &disk.path, &TAPS, &lab.dir()).unwrap();
    vm.wait_shell(BOOT)
        .unwrap_or_else(|e| panic!("first boot: {e}"));
    let shell_at = start.elapsed();
    let key = wait_up(&mut vm);
    let joined_at = start.elapsed();
    lab.approve_route(Duration::from_secs(60)).unwrap();
    let reach = lab
        .wait_lan_reachable(Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e}\nappliance console:\n{}", vm.tail(80)));
    lab.tcp_to_lan().unwrap();
    println!(
        "BOOT shell {:.1} s, joined {:.1} s, LAN reachable {:.1} s after approval",
        shell_at.as_secs_f64(),
        joined_at.as_secs_f64(),
        reach.as_secs_f64()
    );
    let console = vm.poweroff(Duration::from_secs(60)).unwrap();
    assert!(
        !console.contains("config error"),
        "the good config was refused:\n{console}"
    );

    // Second boot with a broken line: the previous good config stays in force.
    let bad_line = 1 + config
        .lines()
        .position(|l| l.starts_with("advertise_exit_node"))
        .expect("the config sets advertise_exit_node");
    let bad = config.replace(
        "advertise_exit_node = false",
        "advertise_exit_node = perhaps",
    );
    disk.set_config(&bad).unwrap();
    let mut vm = Appliance::boot(&lab.appl, &disk.path, &TAPS, &lab.dir()).unwrap();
    vm.wait_shell(BOOT)
        .unwrap_or_else(|e| panic!("second boot: {e}"));
    let at_fault = format!("meshgate.conf:{bad_line}:");
    let console = vm.console();
    let error_line = console
        .lines()
        .find(|l| l.contains("config error") && l.contains(&at_fault))
        .unwrap_or_else(|| panic!("no {at_fault} error on the console:\n{console}"));
    assert!(
        console.contains("keeping the previous good config"),
        "the console does not say the previous config is kept:\n{console}"
    );
    println!("BAD CONFIG console: {error_line}");
    let logged = vm
        .sh_ok(
            &format!("grep -F '{at_fault}' /state/log/meshgate.log"),
            SHORT,
        )
        .unwrap();
    assert!(logged.contains("config error"), "log: {logged}");
    let key_again = wait_up(&mut vm);
    assert_eq!(
        key, key_again,
        "a later boot must reuse the stored node key"
    );
    lab.wait_lan_reachable(Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e}\nappliance console:\n{}", vm.tail(80)));
    lab.tcp_to_lan().unwrap();
    vm.poweroff(Duration::from_secs(60)).unwrap();
}

/// Waits until the appliance's daemon has a session with control; its node public key.
fn wait_up(vm: &mut Appliance) -> String {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (rc, out) = vm
            .sh(
                "meshgate status --json --socket /run/meshgate/meshgate.sock",
                SHORT,
            )
            .unwrap();
        if rc == 0
            && let Some(status) = json_in(&out)
        {
            let key = status["self"]["public_key"].as_str().unwrap_or_default();
            if status["state"] == "up" && !key.is_empty() {
                return key.to_owned();
            }
        }
        assert!(
            Instant::now() < deadline,
            "the appliance never joined: {out}\nconsole:\n{}\nlog:\n{}",
            vm.tail(60),
            vm.sh("tail -n 40 /state/log/meshgate.log", SHORT)
                .map(|(_, o)| o)
                .unwrap_or_default()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The JSON object in a console capture (other console lines may surround it).
fn json_in(text: &str) -> Option<serde_json::Value> {
    let start = text.find('{')?;
    let end = text.rfind('}')?;
    serde_json::from_str(text.get(start..=end)?).ok()
}
