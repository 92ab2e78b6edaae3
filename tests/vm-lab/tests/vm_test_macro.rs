//! `vm_test!` runs the body inside the VM, for a test at the top of the crate and one inside
//! a module (whose libtest name carries the module path).

use std::process::Command;

use meshgate_vm_lab::{in_vm, vm_share_dir, vm_test};

fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {args:?}: {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

#[test]
fn body_runs_as_root_on_the_vm_kernel() {
    vm_test!(|| -> Result<(), String> {
        assert!(in_vm());
        assert!(vm_share_dir().is_some_and(|d| d.is_dir()));
        let uid = run("/usr/bin/id", &["-u"])?;
        assert_eq!(uid.trim(), "0");
        run(
            "/usr/sbin/ip",
            &["link", "add", "wgm0", "type", "wireguard"],
        )?;
        let show = run("/usr/bin/wg", &["show", "wgm0"])?;
        assert!(show.contains("interface: wgm0"), "{show}");
        Ok(())
    });
}

mod nested {
    use super::*;

    #[test]
    fn named_test_in_a_module() {
        vm_test!("named_test_in_a_module", || {
            assert!(in_vm());
            // A fresh kernel: nothing from another test's VM is here.
            let links = run("/usr/sbin/ip", &["-o", "link", "show"]).unwrap();
            assert!(!links.contains("wgm0"), "{links}");
            // The scratch directories are the VM's own tmpfs and are writable.
            std::fs::write("/tmp/scratch", b"x").unwrap();
            std::fs::write("/root/scratch", b"x").unwrap();
        });
    }
}
