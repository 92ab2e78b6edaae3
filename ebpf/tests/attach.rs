//! Attaches to a TUN device in a fresh network namespace, restarts, and detaches. Needs root.

mod common;

use std::io;
use std::path::Path;
use std::process::Command;

use common::*;
use meshgate_ebpf::{Enforcer, LinkKind, PROG_INGRESS_ETH};

const TUN: &str = "mgtun0";

/// Runs `body` on a thread of its own that has entered a new network namespace.
fn in_netns(body: impl FnOnce() + Send + 'static) {
    let handle = std::thread::spawn(move || {
        // SAFETY: unshare takes no pointers; CLONE_NEWNET affects this thread only.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET) (needs root): {}",
            io::Error::last_os_error()
        );
        body();
    });
    if let Err(panic) = handle.join() {
        std::panic::resume_unwind(panic);
    }
}

fn ok(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn filters(hook: &str) -> String {
    ok("tc", &["filter", "show", "dev", TUN, hook])
}

/// The BPF program id `tc filter show` prints for our filter.
fn prog_id(shown: &str) -> String {
    let words: Vec<&str> = shown.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| *w == "id")
        .unwrap_or_else(|| panic!("no program id in {shown}"));
    words.get(at + 1).map(|s| s.to_string()).unwrap_or_default()
}

#[test]
fn attach_survives_restart_and_detaches() {
    let pin = PinDir::new("attach");
    let root = pin.0.clone();
    in_netns(move || {
        ok("ip", &["tuntap", "add", "dev", TUN, "mode", "tun"]);
        ok("ip", &["link", "set", TUN, "up"]);
        assert!(!Enforcer::is_attached(TUN));

        let p = policy(&[rule(&["100.64.0.5"], &[("10.1.0.1/32", 443, 443)], &[6])]);
        let mut first = Enforcer::attach(TUN, LinkKind::L3, &root).expect("attach");
        assert!(Enforcer::is_attached(TUN));
        let shown = filters("ingress");
        assert!(shown.contains("acl_ingress_l3"), "{shown}");
        assert!(shown.contains("pref 19783"), "{shown}");
        assert!(filters("egress").contains("acl_egress_l3"));
        let first_id = prog_id(&shown);
        let report = first.set_policy(&p).unwrap();
        assert_eq!(report.generation, 1);
        drop(first);

        // The agent is gone: the filter stays.
        assert!(Enforcer::is_attached(TUN));
        assert!(filters("ingress").contains("acl_ingress_l3"));

        // A restarted agent replaces the filter in place and finds the policy in the maps.
        let mut second = Enforcer::attach(TUN, LinkKind::L3, &root).expect("re-attach");
        let shown = filters("ingress");
        assert_eq!(shown.matches("handle 0x4d47").count(), 1, "{shown}");
        assert_ne!(
            prog_id(&shown),
            first_id,
            "the new program replaced the old: {shown}"
        );
        let cfg = second.loaded().maps.config().unwrap();
        assert_eq!((cfg.generation, cfg.active_slot), (1, report.slot));
        let allowed = frame(ip("100.64.0.5"), ip("10.1.0.1"), TCP, 40000, 443);
        let denied = frame(ip("100.64.0.5"), ip("10.1.0.1"), TCP, 40000, 444);
        assert_eq!(run(second.loaded(), PROG_INGRESS_ETH, &allowed), TC_ACT_OK);
        assert_eq!(run(second.loaded(), PROG_INGRESS_ETH, &denied), TC_ACT_SHOT);
        assert_eq!(second.set_policy(&p).unwrap().generation, 2);
        drop(second);

        Enforcer::detach(TUN, &root).expect("detach");
        assert!(!Enforcer::is_attached(TUN));
        assert!(!filters("ingress").contains("acl_"));
        assert!(!filters("egress").contains("acl_"));
        assert!(!Path::new(&root).join(TUN).exists());
        // Detaching twice is fine.
        Enforcer::detach(TUN, &root).expect("second detach");
    });
}

#[test]
fn attach_to_a_missing_interface_says_so() {
    let pin = PinDir::new("missing");
    let root = pin.0.clone();
    in_netns(move || {
        let err = Enforcer::attach("nosuch0", LinkKind::L3, &root).unwrap_err();
        assert!(err.to_string().contains("no interface nosuch0"), "{err}");
    });
}
