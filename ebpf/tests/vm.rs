//! On Debian's kernel (6.1) in the VM lab: the verifier accepts all four programs, the filter
//! attaches to a real `wireguard` interface, and one allowed and one denied packet get their
//! verdicts. Boots a VM (about a minute under TCG); needs scripts/setup.sh.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use meshgate_ebpf::{Enforcer, LinkKind, PROG_INGRESS_ETH, PROG_INGRESS_L3};

fn sh(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn attaches_to_kernel_wireguard_on_debian_kernel() {
    meshgate_vm_lab::vm_test!(|| -> Result<(), String> {
        let ip = "/usr/sbin/ip";
        sh(ip, &["link", "add", "wg0", "type", "wireguard"])?;
        sh(ip, &["link", "set", "wg0", "up"])?;
        let root = Path::new(meshgate_ebpf::DEFAULT_PIN_ROOT);
        let mut enf = Enforcer::attach("wg0", LinkKind::L3, root).map_err(|e| e.to_string())?;
        if !Enforcer::is_attached("wg0") {
            return Err("filter not found after attach".into());
        }
        let shown = sh("/usr/sbin/tc", &["filter", "show", "dev", "wg0", "ingress"])?;
        println!("tc filter show dev wg0 ingress:\n{shown}");
        if !shown.contains("acl_ingress_l3") {
            return Err(format!("tc does not show our filter: {shown}"));
        }
        let p = policy(&[rule(&["100.64.0.5"], &[("10.1.0.1/32", 443, 443)], &[6])]);
        enf.set_policy(&p).map_err(|e| e.to_string())?;
        let allowed = frame(
            common::ip("100.64.0.5"),
            common::ip("10.1.0.1"),
            TCP,
            40000,
            443,
        );
        let denied = frame(
            common::ip("100.64.0.5"),
            common::ip("10.1.0.1"),
            TCP,
            40000,
            22,
        );
        let got = (
            run(enf.loaded(), PROG_INGRESS_ETH, &allowed),
            run(enf.loaded(), PROG_INGRESS_ETH, &denied),
        );
        if got != (TC_ACT_OK, TC_ACT_SHOT) {
            return Err(format!("eth verdicts {got:?}"));
        }
        // The L3 program on a raw IP packet (see test_run.rs for why the kernel runs it).
        let raw_allow = ip_packet(
            common::ip("100.64.0.5"),
            common::ip("10.1.0.1"),
            TCP,
            40000,
            443,
        );
        let raw_deny = ip_packet(
            common::ip("100.64.0.5"),
            common::ip("10.1.0.1"),
            TCP,
            40000,
            22,
        );
        let got = (
            run(enf.loaded(), PROG_INGRESS_L3, &raw_allow),
            run(enf.loaded(), PROG_INGRESS_L3, &raw_deny),
        );
        if got != (TC_ACT_OK, TC_ACT_SHOT) {
            return Err(format!("l3 verdicts {got:?}"));
        }
        drop(enf);
        Enforcer::detach("wg0", root).map_err(|e| e.to_string())?;
        if Enforcer::is_attached("wg0") {
            return Err("filter still there after detach".into());
        }
        Ok(())
    });
}
