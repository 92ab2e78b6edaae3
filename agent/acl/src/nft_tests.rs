use meshgate_tailcfg::filter::{FilterRule, NetPortRange, PortRange};
use serde_json::Value;

use super::*;

fn policy() -> Policy {
    let rule = FilterRule {
        src_ips: vec!["100.64.0.1".into(), "fd7a:115c:a1e0::/48".into()],
        dst_ports: vec![
            NetPortRange {
                ip: "100.64.0.9".into(),
                ports: PortRange {
                    first: 80,
                    last: 90,
                },
            },
            NetPortRange {
                ip: "fd7a:115c:a1e0::9".into(),
                ports: PortRange {
                    first: 22,
                    last: 22,
                },
            },
        ],
        ip_proto: vec![6],
        cap_grant: vec![],
    };
    Policy::from_filter_rules(&[rule]).unwrap()
}

#[test]
fn golden_sets() {
    let json = compile(&policy(), "wg0").unwrap();
    for golden in [
        r#"{"add":{"set":{"family":"inet","table":"meshgate","name":"allow4","type":["ipv4_addr","ipv4_addr","inet_proto","inet_service"],"flags":["interval"],"elem":[{"concat":["100.64.0.1","100.64.0.9",6,{"range":[80,90]}]}]}}}"#,
        r#"{"add":{"set":{"family":"inet","table":"meshgate","name":"allow6","type":["ipv6_addr","ipv6_addr","inet_proto","inet_service"],"flags":["interval"],"elem":[{"concat":[{"prefix":{"addr":"fd7a:115c:a1e0::","len":48}},"fd7a:115c:a1e0::9",6,22]}]}}}"#,
        r#"{"add":{"set":{"family":"inet","table":"meshgate","name":"echo4","type":["ipv4_addr","ipv4_addr"],"flags":["interval"],"elem":[{"concat":["100.64.0.1","100.64.0.9"]}]}}}"#,
    ] {
        assert!(json.contains(golden), "missing {golden}\nin {json}");
    }
}

#[test]
fn golden_chains_and_rules_in_order() {
    let json = compile(&policy(), "wg0").unwrap();
    let table = r#"{"table":{"family":"inet","name":"meshgate"}}"#;
    assert!(
        json.starts_with(&format!(
            r#"{{"nftables":[{{"add":{table}}},{{"delete":{table}}},{{"add":{table}}},"#
        )),
        "{json}"
    );
    let input = r#"{"add":{"chain":{"family":"inet","table":"meshgate","name":"input","type":"filter","hook":"input","prio":0,"policy":"accept"}}}"#;
    assert!(json.contains(input), "{json}");
    let hook_rule = r#"{"add":{"rule":{"family":"inet","table":"meshgate","chain":"forward","expr":[{"match":{"left":{"meta":{"key":"iifname"}},"right":"wg0","op":"=="}},{"jump":{"target":"mesh-filter"}}]}}}"#;
    assert!(json.contains(hook_rule), "{json}");
    let in_order = [
        r#"{"match":{"left":{"ct":{"key":"direction"}},"right":"reply","op":"=="}},{"counter":null},{"accept":null}"#,
        r#"{"match":{"left":{"payload":{"protocol":"icmp","field":"type"}},"right":{"set":["echo-reply","destination-unreachable","time-exceeded","parameter-problem"]},"op":"=="}},{"counter":null},{"accept":null}"#,
        r#"{"match":{"left":{"payload":{"protocol":"icmpv6","field":"type"}},"right":{"set":["echo-reply","destination-unreachable","packet-too-big","time-exceeded","parameter-problem"]},"op":"=="}},{"counter":null},{"accept":null}"#,
        r#"{"payload":{"protocol":"th","field":"dport"}}]},"right":"@allow4","op":"=="}},{"counter":null},{"accept":null}"#,
        r#""right":"@allow6","op":"=="}},{"counter":null},{"accept":null}"#,
        r#"{"match":{"left":{"payload":{"protocol":"icmp","field":"type"}},"right":"echo-request","op":"=="}}"#,
        r#""right":"@echo4","op":"=="}},{"counter":null},{"accept":null}"#,
        r#"{"match":{"left":{"payload":{"protocol":"icmpv6","field":"type"}},"right":"echo-request","op":"=="}}"#,
        r#""right":"@echo6","op":"=="}},{"counter":null},{"accept":null}"#,
        r#"{"counter":null},{"drop":null}"#,
    ];
    let mut at = 0;
    for snippet in in_order {
        let found = json.get(at..).and_then(|rest| rest.find(snippet));
        let Some(offset) = found else {
            panic!("{snippet} missing or out of order in {json}")
        };
        at += offset + snippet.len();
    }
}

#[test]
fn only_our_table_is_named() {
    let doc: Value = serde_json::from_str(&compile(&policy(), "wg0").unwrap()).unwrap();
    let cmds = doc["nftables"].as_array().unwrap();
    assert_eq!(cmds.len(), 3 + 3 + 4 + 2 + 8);
    for cmd in cmds {
        let (_, obj) = cmd.as_object().unwrap().iter().next().unwrap();
        let (kind, body) = obj.as_object().unwrap().iter().next().unwrap();
        let table = if kind == "table" {
            &body["name"]
        } else {
            &body["table"]
        };
        assert_eq!(table, TABLE, "{cmd}");
        assert_eq!(body["family"], "inet", "{cmd}");
    }
}

#[test]
fn empty_policy_has_empty_sets_and_still_drops() {
    let json = compile(&Policy::default(), "wg0").unwrap();
    assert!(!json.contains("\"elem\""), "{json}");
    assert!(json.contains(r#"{"drop":null}"#), "{json}");
}

#[test]
fn bad_interface_names_are_refused() {
    for name in ["", "wg*", "w g", "a/b", "..", "0123456789abcdef", "wg\"0"] {
        assert!(
            matches!(
                compile(&Policy::default(), name),
                Err(Error::BadInterface(_))
            ),
            "{name:?}"
        );
    }
    assert!(compile(&Policy::default(), "tailscale0").is_ok());
    assert!(compile(&Policy::default(), "0123456789abcde").is_ok());
}
