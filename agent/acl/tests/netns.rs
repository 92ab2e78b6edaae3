//! Applies compiled policies with the real `nft` inside a fresh network namespace.
//! Needs root (unshare, nftables). No traffic is sent: only what the kernel holds is checked.

use std::io;
use std::process::Command;

use meshgate_acl::{Error, Policy, apply, nft, remove};
use meshgate_tailcfg::filter::{FilterRule, NetPortRange, PortRange};
use serde_json::Value;

const WG: &str = "wg0";

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

/// Runs a command in the calling thread's namespace; returns (success, stdout, stderr).
fn run(cmd: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(cmd: &str, args: &[&str]) -> String {
    let (success, stdout, stderr) = run(cmd, args);
    assert!(success, "{cmd} {args:?}: {stderr}");
    stdout
}

fn rule(srcs: &[&str], dsts: &[(&str, u16, u16)], protos: &[i32]) -> FilterRule {
    FilterRule {
        src_ips: srcs.iter().map(|s| s.to_string()).collect(),
        dst_ports: dsts
            .iter()
            .map(|(ip, first, last)| NetPortRange {
                ip: ip.to_string(),
                ports: PortRange {
                    first: *first,
                    last: *last,
                },
            })
            .collect(),
        ip_proto: protos.to_vec(),
        cap_grant: vec![],
    }
}

/// The elements of one of our sets, as nft lists them back, each as compact JSON text.
fn elements(set: &str) -> Vec<String> {
    let listing: Value =
        serde_json::from_str(&ok("nft", &["-j", "list", "set", "inet", nft::TABLE, set])).unwrap();
    let objects = listing["nftables"].as_array().expect("nftables array");
    let found = objects
        .iter()
        .find_map(|o| o.get("set"))
        .expect("set listed");
    let mut elems: Vec<String> = found
        .get("elem")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|e| e.to_string()).collect())
        .unwrap_or_default();
    elems.sort();
    elems
}

fn other_table() -> String {
    ok("nft", &["-j", "list", "table", "inet", "other"])
}

fn ours() -> String {
    ok("nft", &["-j", "list", "table", "inet", nft::TABLE])
}

#[test]
fn policies_replace_atomically_and_leave_other_tables_alone() {
    in_netns(|| {
        // No dummy driver on the test kernels: a veth pair named like WireGuard's interface.
        ok(
            "ip",
            &["link", "add", WG, "type", "veth", "peer", "name", "wg0peer"],
        );
        ok("nft", &["add", "table", "inet", "other"]);
        ok(
            "nft",
            &[
                "add",
                "chain",
                "inet",
                "other",
                "c",
                "{ type filter hook input priority 10; }",
            ],
        );
        ok(
            "nft",
            &[
                "add", "rule", "inet", "other", "c", "tcp", "dport", "9", "accept",
            ],
        );
        let other = other_table();

        let first = Policy::from_filter_rules(&[
            rule(&["100.64.0.0/30"], &[("100.64.0.9", 22, 22)], &[6]),
            rule(&["100.64.0.1"], &[("100.64.0.9", 80, 90)], &[6]),
            rule(&["fd7a:115c:a1e0::1"], &[("*", 0, 65535)], &[]),
        ])
        .unwrap();
        apply(&nft::compile(&first, WG).unwrap()).unwrap();
        assert_eq!(
            elements(nft::ALLOW4),
            [
                r#"{"concat":["100.64.0.1","100.64.0.9","tcp",{"range":[80,90]}]}"#,
                r#"{"concat":[{"prefix":{"addr":"100.64.0.0","len":30}},"100.64.0.9","tcp",22]}"#,
            ]
        );
        assert_eq!(
            elements(nft::ALLOW6),
            [
                r#"{"concat":["fd7a:115c:a1e0::1",{"prefix":{"addr":"::","len":0}},"tcp",{"range":[0,65535]}]}"#,
                r#"{"concat":["fd7a:115c:a1e0::1",{"prefix":{"addr":"::","len":0}},"udp",{"range":[0,65535]}]}"#,
            ]
        );
        assert_eq!(
            elements(nft::ECHO6),
            [r#"{"concat":["fd7a:115c:a1e0::1",{"prefix":{"addr":"::","len":0}}]}"#]
        );
        assert_eq!(
            elements(nft::ECHO4),
            [r#"{"concat":[{"prefix":{"addr":"100.64.0.0","len":30}},"100.64.0.9"]}"#]
        );
        let listing = ours();
        assert!(
            listing.contains(r#""right": "wg0"}}, {"jump": {"target": "mesh-filter"}}"#),
            "{listing}"
        );
        assert!(listing.contains(r#"{"drop": null}"#), "{listing}");
        assert_eq!(other_table(), other);

        // A changed policy replaces the old one whole: nothing of the first is left.
        let second =
            Policy::from_filter_rules(&[rule(&["100.64.0.5"], &[("100.64.0.9", 443, 443)], &[17])])
                .unwrap();
        apply(&nft::compile(&second, WG).unwrap()).unwrap();
        assert_eq!(
            elements(nft::ALLOW4),
            [r#"{"concat":["100.64.0.5","100.64.0.9","udp",443]}"#]
        );
        assert!(elements(nft::ALLOW6).is_empty());
        assert_eq!(
            elements(nft::ECHO4),
            [r#"{"concat":["100.64.0.5","100.64.0.9"]}"#]
        );
        assert!(elements(nft::ECHO6).is_empty());
        let second_listing = ours();
        assert_eq!(other_table(), other);

        // A broken transaction (its last rule names a set that does not exist) is refused whole,
        // with nft's own message, and the second policy stays in force.
        let third =
            Policy::from_filter_rules(&[rule(&["100.64.0.7"], &[("*", 0, 65535)], &[])]).unwrap();
        let mut doc: Value = serde_json::from_str(&nft::compile(&third, WG).unwrap()).unwrap();
        doc["nftables"].as_array_mut().unwrap().push(serde_json::json!({"add": {"rule": {
            "family": "inet", "table": nft::TABLE, "chain": nft::FILTER_CHAIN,
            "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                                "right": "@nosuch"}}, {"accept": null}]}}}));
        let err = apply(&doc.to_string()).unwrap_err();
        match &err {
            // nft 1.0.6 names no location for JSON input, only the errno text.
            Error::Nft { stderr, .. } => {
                assert!(stderr.contains("No such file or directory"), "{stderr}")
            }
            other => panic!("expected nft's refusal, got {other}"),
        }
        assert_eq!(ours(), second_listing);
        assert_eq!(other_table(), other);

        // remove() takes only our table away, and is happy when it is already gone.
        remove().unwrap();
        let (present, _, _) = run("nft", &["list", "table", "inet", nft::TABLE]);
        assert!(!present, "our table is still there");
        assert_eq!(other_table(), other);
        remove().unwrap();
        assert_eq!(other_table(), other);
    });
}

#[test]
fn overlapping_rules_become_elements_the_kernel_accepts() {
    in_netns(|| {
        ok(
            "ip",
            &["link", "add", WG, "type", "veth", "peer", "name", "wg0peer"],
        );
        // Interval sets refuse overlapping elements ("File exists"), so this only applies if
        // the model made every entry disjoint.
        let policy = Policy::from_filter_rules(&[
            rule(
                &["*"],
                &[("100.64.0.0/10", 22, 22), ("fd7a:115c:a1e0::/48", 22, 22)],
                &[],
            ),
            rule(&["100.64.0.0/10"], &[("100.64.0.9", 20, 80)], &[6, 17]),
            rule(
                &["100.64.0.1-100.64.0.6"],
                &[("100.64.0.8/29", 80, 443), ("*", 53, 53)],
                &[17, 47],
            ),
            rule(
                &["100.64.0.3", "fd7a:115c:a1e0::3"],
                &[("*", 0, 65535)],
                &[47, 1, 58],
            ),
        ])
        .unwrap();
        apply(&nft::compile(&policy, WG).unwrap()).unwrap();
        let listed = elements(nft::ALLOW4).len() + elements(nft::ALLOW6).len();
        assert_eq!(listed, policy.entries().len());
        let echo = elements(nft::ECHO4).len() + elements(nft::ECHO6).len();
        assert_eq!(echo, policy.echo().len());
        assert!(listed > 10, "{:#?}", policy.entries());
    });
}

/// The largest policy the model accepts goes into the kernel in one transaction, and one over
/// the limit is refused before nft sees it, leaving the policy in force.
#[test]
fn a_policy_of_the_largest_size_applies_whole() {
    in_netns(|| {
        // 99 990 single-address sources, each to its own port: as many entries as sources.
        let rules: Vec<FilterRule> = (0..99_990u32)
            .map(|i| {
                let src = std::net::Ipv4Addr::from(0x6440_0000 + i).to_string();
                rule(
                    &[&src],
                    &[(
                        "100.127.255.254",
                        1 + (i % 60_000) as u16,
                        1 + (i % 60_000) as u16,
                    )],
                    &[6],
                )
            })
            .collect();
        let started = std::time::Instant::now();
        let policy = Policy::from_filter_rules(&rules).unwrap();
        let compiled = std::time::Instant::now();
        apply(&nft::compile(&policy, WG).unwrap()).unwrap();
        println!(
            "{} entries: model {:?}, nft {:?}",
            policy.entries().len(),
            compiled - started,
            compiled.elapsed()
        );
        assert_eq!(elements(nft::ALLOW4).len(), 99_990);

        let mut over = rules.clone();
        over.extend((0..20u32).map(|i| {
            let src = std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string();
            rule(&[&src], &[("100.127.255.254", 9, 9)], &[6])
        }));
        assert!(matches!(
            Policy::from_filter_rules(&over),
            Err(Error::TooManyEntries { .. })
        ));
        assert_eq!(elements(nft::ALLOW4).len(), 99_990);
    });
}

/// The router's parts (mark and masquerade, MSS clamp) go in with or without the policy, and
/// nft lists them back as written.
#[test]
fn router_rules_apply_with_and_without_the_policy() {
    in_netns(|| {
        let router = meshgate_acl::Router {
            masquerade: true,
            clamp_mss: true,
            restore_marks: true,
        };
        apply(&nft::compile_with(None, WG, &router).unwrap()).unwrap();
        let listing = ok("nft", &["list", "table", "inet", nft::TABLE]);
        for line in [
            "type nat hook postrouting priority srcnat; policy accept;",
            "oifname \"wg0\" tcp flags syn tcp option maxseg size set rt mtu",
            // nft folds (mark & 0xff00ffff) | 0x40000 into this equal form.
            "iifname \"wg0\" meta mark set meta mark & 0xff04ffff | 0x00040000",
            "meta mark & 0x00ff0000 == 0x00040000 oifname != \"wg0\" masquerade",
            "type filter hook output priority mangle; policy accept;",
            "meta mark & 0x00ff0000 != 0x00000000 ct mark & 0x00ff0000 == 0x00000000 ct mark set meta mark & 0x00ff0000",
            "type filter hook prerouting priority mangle; policy accept;",
            "ct state { established, related } ct mark & 0x00ff0000 != 0x00000000 meta mark set ct mark & 0x00ff0000",
        ] {
            assert!(listing.contains(line), "{line:?} missing in\n{listing}");
        }
        assert!(!listing.contains("mesh-filter"), "{listing}");

        let policy = Policy::from_filter_rules(&[rule(&["*"], &[("*", 22, 22)], &[6])]).unwrap();
        apply(&nft::compile_with(Some(&policy), WG, &router).unwrap()).unwrap();
        let listing = ok("nft", &["list", "chain", "inet", nft::TABLE, "forward"]);
        let mark = listing.find("meta mark set").expect("mark rule");
        let jump = listing.find("jump mesh-filter").expect("policy jump");
        assert!(
            mark < jump,
            "the mark must come before the policy's accept:\n{listing}"
        );
    });
}
