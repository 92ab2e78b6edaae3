//! `meshgate appliance-config` as the image's init script runs it: the built binary on temp
//! files, its stdout eval'd by /bin/sh.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!(
            "meshgate-appliance-bin-{tag}-{}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn appliance_config(dir: &Path, config: &str, cmdline: &str) -> Output {
    let conf = dir.join("meshgate.conf");
    fs::write(&conf, config).unwrap();
    let cmdline_file = dir.join("cmdline");
    fs::write(&cmdline_file, cmdline).unwrap();
    Command::new(env!("CARGO_BIN_EXE_meshgate"))
        .arg("appliance-config")
        .arg("--config")
        .arg(&conf)
        .arg("--cmdline")
        .arg(&cmdline_file)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .output()
        .unwrap()
}

/// `eval`s `assignments` in /bin/sh and prints `vars`, one a line.
fn eval(assignments: &[u8], vars: &[&str]) -> String {
    let print: String = vars
        .iter()
        .map(|v| format!("printf '%s\\n' \"${v}\";"))
        .collect();
    let output = Command::new("/bin/sh")
        .args(["-c", &format!("eval \"$0\"; {print}")])
        .arg(String::from_utf8(assignments.to_vec()).unwrap())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn good_then_bad_then_no_fallback() {
    let dir = Dir::new("flow");
    let vars = [
        "MG_LOGIN_SERVER",
        "MG_HOSTNAME",
        "MG_ADVERTISE_ROUTES",
        "MG_ACCEPT_ROUTES",
        "MG_CONFIG_ERROR",
    ];

    // First boot: a valid file, with the hostname overridden on the kernel command line.
    let good = appliance_config(
        &dir.0,
        "login_server = https://c.example\nauth_key = mgkey-s3cret\nhostname = gw\n\
         lan_interface = eth1\nlan_address = 192.168.50.1/24\n",
        "console=ttyS0 meshgate.hostname=edge1 quiet\n",
    );
    assert!(good.status.success(), "{good:?}");
    assert!(good.stderr.is_empty(), "{good:?}");
    assert_eq!(
        eval(&good.stdout, &vars),
        "https://c.example\nedge1\n192.168.50.0/24\nfalse\n\n"
    );
    let saved = dir.0.join("state/appliance.conf.good");
    assert_eq!(
        fs::metadata(&saved).unwrap().permissions().mode() & 0o777,
        0o600,
        "the saved config holds the auth key"
    );

    // A bad edit: the errors on stderr, the previous values on stdout, exit 0.
    let bad = appliance_config(
        &dir.0,
        "login_server = https://c.example\nauth_key = mgkey-s3cret\nhostname = new\n\
         advertise_routes = 10.0.0.0/33\n",
        "meshgate.accept_routes=perhaps\n",
    );
    assert!(bad.status.success(), "{bad:?}");
    let stderr = String::from_utf8(bad.stderr.clone()).unwrap();
    let conf = dir.0.join("meshgate.conf").display().to_string();
    assert_eq!(
        stderr,
        format!(
            "meshgate: {conf}:4: advertise_routes: \"10.0.0.0/33\" is not a CIDR\n\
             meshgate: cmdline: meshgate.accept_routes: \"perhaps\" is not yes/no, true/false, on/off or 1/0\n\
             meshgate: using the previous good config ({})\n",
            saved.display()
        )
    );
    assert!(!stderr.contains("s3cret"));
    assert_eq!(
        eval(&bad.stdout, &vars),
        format!(
            "https://c.example\nedge1\n192.168.50.0/24\nfalse\n\
             {conf}:4: advertise_routes: \"10.0.0.0/33\" is not a CIDR\n"
        )
    );

    // No good config to fall back on: exit 1 and nothing to eval.
    fs::remove_file(&saved).unwrap();
    let none = appliance_config(&dir.0, "hostname = gw\n", "");
    assert_eq!(none.status.code(), Some(1), "{none:?}");
    assert!(none.stdout.is_empty());
    let stderr = String::from_utf8(none.stderr).unwrap();
    assert!(stderr.contains(": login_server is required"), "{stderr}");
    assert!(stderr.contains("no previous good config"), "{stderr}");
}
