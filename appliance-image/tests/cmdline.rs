//! A box configured from the boot loader alone: no meshgate.conf on the config partition, every
//! key as a `meshgate.<key>=<value>` word on the kernel command line (syslinux.cfg), and its
//! uplink from the office's DHCP server (the default: `uplink_address = dhcp`). It takes the
//! lease (address, default route, DNS server), joins and routes its LAN just the same.

use std::time::{Duration, Instant};

use meshgate_appliance_image::lab::TAPS;
use meshgate_appliance_image::{Appliance, ApplianceLab, Image};

const SHORT: Duration = Duration::from_secs(30);

#[test]
fn the_kernel_command_line_alone_configures_the_box() {
    let image = Image::get().unwrap_or_else(|e| panic!("building the image: {e}"));
    let mut lab = ApplianceLab::new("appl-cmdline").unwrap();
    let router = lab.serve_dhcp().unwrap();
    let config = lab.config().replace(
        &format!("uplink_address = {}/24", lab.uplink),
        "uplink_address = dhcp",
    );
    assert!(config.contains("uplink_address = dhcp"), "{config}");
    let disk = image.disk(&lab.dir(), "").unwrap();
    disk.remove_config().unwrap();
    let words: Vec<String> = config
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && l.contains('='))
        .filter_map(|l| {
            let (key, value) = l.split_once('=')?;
            Some(format!("meshgate.{}={}", key.trim(), value.trim()))
        })
        .collect();
    disk.append_kernel_args(&words.join(" ")).unwrap();
    lab.start_peer();

    let mut vm = Appliance::boot(&lab.appl, &disk.path, &TAPS, &lab.dir()).unwrap();
    vm.wait_shell(Duration::from_secs(240))
        .unwrap_or_else(|e| panic!("boot: {e}"));
    let console = vm.console();
    assert!(
        !console.contains("config error") && !console.contains("no usable config"),
        "the command line config was refused:\n{console}"
    );
    let env = vm.sh_ok("cat /run/meshgate.env", SHORT).unwrap();
    assert!(env.contains("MG_HOSTNAME='office'"), "{env}");
    let lease = wait_lease(&mut vm, &lab.uplink.to_string());
    assert!(
        lease.contains(&format!("default via {router} dev eth0")),
        "no default route from the lease:\n{lease}"
    );
    assert!(
        lease.contains(&format!("nameserver {router}")),
        "no DNS server from the lease:\n{lease}"
    );
    let deadline = Instant::now() + Duration::from_secs(180);
    while vm
        .sh(
            "meshgate status --json --socket /run/meshgate/meshgate.sock | grep -q '\"state\": *\"up\"'",
            SHORT,
        )
        .unwrap()
        .0
        != 0
    {
        assert!(Instant::now() < deadline, "never joined:\n{}", vm.tail(60));
        std::thread::sleep(Duration::from_secs(1));
    }
    lab.approve_route(Duration::from_secs(60)).unwrap();
    lab.wait_lan_reachable(Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e}\nappliance console:\n{}", vm.tail(80)));
    vm.poweroff(Duration::from_secs(60)).unwrap();
}

/// Waits for eth0 to hold the leased address; returns the routes and resolv.conf then.
fn wait_lease(vm: &mut Appliance, address: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let addrs = vm.sh_ok("ip -4 addr show dev eth0", SHORT).unwrap();
        if addrs.contains(&format!("inet {address}/24")) {
            return vm.sh_ok("ip route; cat /run/resolv.conf", SHORT).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "eth0 never got its DHCP lease {address}:\n{addrs}\n{}",
            vm.tail(40)
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}
