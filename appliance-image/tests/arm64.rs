//! The arm64 image, as far as this machine can build it: Debian's arm64 kernel, WireGuard
//! module, busybox and nft, booted the way a board boots (U-Boot's distro boot reading
//! extlinux/extlinux.conf) under qemu's `virt` machine. It has no meshgate (no aarch64 Rust
//! target here), says so on the console, and has everything meshgate drives ready: the test
//! makes a WireGuard interface and loads an nftables table inside it, and checks that both
//! partitions are mounted.

use std::time::Duration;

use meshgate_appliance_image::{Appliance, Image};
use meshgate_netns_lab::Lab;

const BOOT: Duration = Duration::from_secs(300);
const SHORT: Duration = Duration::from_secs(30);

#[test]
fn arm64_image_boots_with_wireguard_and_nftables() {
    let image = Image::get_arm64().unwrap_or_else(|e| panic!("building the arm64 image: {e}"));
    println!("arm64 {}", image.footprint());
    let lab = Lab::new("arm64").expect("the lab");
    let host = lab.add_host("board").expect("a namespace for qemu");
    let dir = meshgate_e2e::TempDir::new("arm64-image");
    let disk = image.disk(&dir.0, "").expect("a copy of the image");
    let mut vm = Appliance::boot_arm64(&host, &disk.path, &[], &dir.0).expect("qemu");
    vm.wait_shell(BOOT)
        .unwrap_or_else(|e| panic!("booting the arm64 image: {e}\n{}", vm.tail(60)));
    let console = vm.console();
    assert!(
        console.contains("Found /extlinux/extlinux.conf"),
        "U-Boot did not boot from extlinux.conf:\n{console}"
    );
    assert!(
        console.contains("this image has no meshgate binary"),
        "the console does not say meshgate is missing:\n{}",
        vm.tail(40)
    );

    let arch = vm.sh_ok("uname -m", SHORT).unwrap();
    assert_eq!(arch.trim(), "aarch64");
    vm.sh_ok("ip link add wg0 type wireguard && ip link show wg0", SHORT)
        .unwrap_or_else(|e| panic!("no WireGuard in the arm64 kernel: {e}"));
    let ruleset = vm
        .sh_ok(
            "nft add table inet t && nft add chain inet t c '{ type filter hook forward priority 0; }' \
             && nft list ruleset",
            SHORT,
        )
        .unwrap_or_else(|e| panic!("nft does not work on the arm64 image: {e}"));
    assert!(ruleset.contains("hook forward"), "{ruleset}");
    let mounts = vm.sh_ok("cat /proc/mounts", SHORT).unwrap();
    assert!(
        mounts.contains(" /boot vfat") && mounts.contains(" /state ext4"),
        "the config and state partitions are not both mounted:\n{mounts}"
    );
    vm.poweroff(Duration::from_secs(60))
        .expect("a clean poweroff");
}
