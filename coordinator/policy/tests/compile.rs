//! Hand-worked compilations: the expected `FilterRule` JSON is written out from the reference
//! (tailscale-protocols.md 6.1-6.3), not produced by the code under test.

use meshgate_policy::{NodeView, Policy};
use serde_json::{Value, json};

const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";

fn node(id: i64, user: &str, tags: &[&str], routes: &[&str]) -> NodeView {
    NodeView {
        id,
        user: user.to_string(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        addresses: vec![
            format!("100.64.0.{id}").parse().unwrap(),
            format!("fd7a:115c:a1e0::{id}").parse().unwrap(),
        ],
        approved_routes: routes.iter().map(|r| r.parse().unwrap()).collect(),
    }
}

/// 1, 2: alice's laptop and phone; 3: bob; 4: tag:server (registered by alice);
/// 5: tag:router for 192.168.1.0/24; 6: tag:exit, an approved exit node.
fn tailnet() -> Vec<NodeView> {
    vec![
        node(1, ALICE, &[], &[]),
        node(2, ALICE, &[], &[]),
        node(3, BOB, &[], &[]),
        node(4, ALICE, &["tag:server"], &[]),
        node(5, ALICE, &["tag:router"], &["192.168.1.0/24"]),
        node(6, BOB, &["tag:exit"], &["0.0.0.0/0", "::/0"]),
    ]
}

const HEADER: &str = r#"
  "groups": {"group:eng": ["alice@example.com", "bob@example.com"]},
  "hosts": {"lan": "192.168.1.0/24", "printer": "192.168.1.10"},
  "tagOwners": {
    "tag:server": ["group:eng"],
    "tag:router": ["alice@example.com"],
    "tag:exit": ["tag:router"],
  },
"#;

fn policy(acls: &str) -> Policy {
    let text = format!("{{ // test policy\n{HEADER}  \"acls\": [{acls}],\n}}");
    Policy::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn filter(p: &Policy, id: i64) -> Value {
    let all = tailnet();
    let me = all.iter().find(|n| n.id == id).unwrap();
    serde_json::to_value(p.filter_for(me, &all)).unwrap()
}

fn peers(p: &Policy, id: i64) -> Vec<i64> {
    let all = tailnet();
    let me = all.iter().find(|n| n.id == id).unwrap();
    p.visible_peers(me, &all)
}

fn ports(ip: &str, first: u16, last: u16) -> Value {
    json!({"IP": ip, "Ports": {"First": first, "Last": last}})
}

#[test]
fn user_to_user_with_ports() {
    let p = policy(
        r#"{"action": "accept", "src": ["alice@example.com"], "dst": ["bob@example.com:22,80"]}"#,
    );
    assert_eq!(
        filter(&p, 3),
        json!([{
            "SrcIPs": ["100.64.0.1", "100.64.0.2", "fd7a:115c:a1e0::1", "fd7a:115c:a1e0::2"],
            "DstPorts": [
                ports("100.64.0.3", 22, 22), ports("100.64.0.3", 80, 80),
                ports("fd7a:115c:a1e0::3", 22, 22), ports("fd7a:115c:a1e0::3", 80, 80),
            ],
        }])
    );
    // Alice's devices are sources only; the tagged node 6 owned by bob is not "bob".
    for id in [1, 2, 4, 6] {
        assert_eq!(filter(&p, id), json!([]), "node {id}");
    }
}

#[test]
fn group_to_tag_with_port_range_and_udp() {
    let p = policy(
        r#"{"action": "accept", "src": ["group:eng"], "dst": ["tag:server:1000-2000"], "proto": "udp"}"#,
    );
    // Node 4 is alice's but tagged, so it is not a member of group:eng.
    assert_eq!(
        filter(&p, 4),
        json!([{
            "SrcIPs": ["100.64.0.1", "100.64.0.2", "100.64.0.3",
                       "fd7a:115c:a1e0::1", "fd7a:115c:a1e0::2", "fd7a:115c:a1e0::3"],
            "DstPorts": [ports("100.64.0.4", 1000, 2000), ports("fd7a:115c:a1e0::4", 1000, 2000)],
            "IPProto": [17],
        }])
    );
    assert_eq!(filter(&p, 1), json!([]));
}

#[test]
fn star_sources_and_destinations() {
    let p = policy(
        r#"{"action": "accept", "src": ["*"], "dst": ["tag:server:443"]},
           {"action": "accept", "src": ["tag:server", "*"], "dst": ["*:*"], "proto": "icmp"}"#,
    );
    assert_eq!(
        filter(&p, 4),
        json!([
            {"SrcIPs": ["*"], "DstPorts": [ports("100.64.0.4", 443, 443), ports("fd7a:115c:a1e0::4", 443, 443)]},
            {"SrcIPs": ["*"], "DstPorts": [ports("*", 0, 65535)], "IPProto": [1]},
        ])
    );
    assert_eq!(
        filter(&p, 1),
        json!([{"SrcIPs": ["*"], "DstPorts": [ports("*", 0, 65535)], "IPProto": [1]}])
    );
    assert_eq!(peers(&p, 1), [2, 3, 4, 5, 6]);
}

#[test]
fn hosts_and_cidrs() {
    let p = policy(
        r#"{"action": "accept", "src": ["10.20.0.0/16", "printer"],
            "dst": ["lan:80", "printer:631", "100.64.0.4:22", "[fd7a:115c:a1e0::4]:23"]}"#,
    );
    // The router is a destination through its approved route: the /24 for `lan`, the
    // narrower /32 for `printer`.
    assert_eq!(
        filter(&p, 5),
        json!([{
            "SrcIPs": ["10.20.0.0/16", "192.168.1.10"],
            "DstPorts": [ports("192.168.1.0/24", 80, 80), ports("192.168.1.10", 631, 631)],
        }])
    );
    assert_eq!(
        filter(&p, 4),
        json!([{
            "SrcIPs": ["10.20.0.0/16", "192.168.1.10"],
            "DstPorts": [ports("100.64.0.4", 22, 22), ports("fd7a:115c:a1e0::4", 23, 23)],
        }])
    );
    // The exit node's 0/0 is not a subnet route: plain CIDRs do not select it.
    for id in [1, 3, 6] {
        assert_eq!(filter(&p, id), json!([]), "node {id}");
    }
    // The printer's subnet router may reach the server, so they see each other.
    assert_eq!(peers(&p, 4), [5]);
    assert_eq!(peers(&p, 5), [4]);
}

#[test]
fn autogroup_self() {
    let p =
        policy(r#"{"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"]}"#);
    let alice_srcs = json!([
        "100.64.0.1",
        "100.64.0.2",
        "fd7a:115c:a1e0::1",
        "fd7a:115c:a1e0::2"
    ]);
    assert_eq!(
        filter(&p, 1),
        json!([{"SrcIPs": alice_srcs, "DstPorts": [ports("100.64.0.1", 0, 65535), ports("fd7a:115c:a1e0::1", 0, 65535)]}])
    );
    assert_eq!(
        filter(&p, 3),
        json!([{"SrcIPs": ["100.64.0.3", "fd7a:115c:a1e0::3"],
                "DstPorts": [ports("100.64.0.3", 0, 65535), ports("fd7a:115c:a1e0::3", 0, 65535)]}])
    );
    // Tagged nodes belong to no user.
    assert_eq!(filter(&p, 4), json!([]));
    assert_eq!(peers(&p, 1), [2]);
    assert_eq!(peers(&p, 3), Vec::<i64>::new());
    assert_eq!(peers(&p, 4), Vec::<i64>::new());
}

#[test]
fn no_acls_denies_everything() {
    for text in ["{}", "{\"acls\": []}", &format!("{{{HEADER}}}")] {
        let p = Policy::parse(text).unwrap();
        assert_eq!(filter(&p, 1), json!([]));
        assert_eq!(peers(&p, 1), Vec::<i64>::new());
    }
}

#[test]
fn visibility_goes_both_ways() {
    let p =
        policy(r#"{"action": "accept", "src": ["alice@example.com"], "dst": ["tag:server:22"]}"#);
    assert_eq!(peers(&p, 1), [4]);
    assert_eq!(peers(&p, 2), [4]);
    assert_eq!(peers(&p, 4), [1, 2]);
    assert_eq!(peers(&p, 3), Vec::<i64>::new());
    assert_eq!(filter(&p, 1), json!([]));
}

#[test]
fn identical_rules_are_sent_once() {
    let acl = r#"{"action": "accept", "src": ["bob@example.com"], "dst": ["tag:server:22"]}"#;
    let p = policy(&format!("{acl}, {acl}"));
    assert_eq!(filter(&p, 4).as_array().unwrap().len(), 1);
}

/// autogroup:internet as hand-worked from its definition: 0.0.0.0/0 minus 10/8, 100.64/10,
/// 169.254/16, 172.16/12 and 192.168/16 as aligned blocks, then 2000::/3.
const INTERNET: [&str; 48] = [
    "0.0.0.0/5",
    "8.0.0.0/7",
    "11.0.0.0/8",
    "12.0.0.0/6",
    "16.0.0.0/4",
    "32.0.0.0/3",
    "64.0.0.0/3",
    "96.0.0.0/6",
    "100.0.0.0/10",
    "100.128.0.0/9",
    "101.0.0.0/8",
    "102.0.0.0/7",
    "104.0.0.0/5",
    "112.0.0.0/4",
    "128.0.0.0/3",
    "160.0.0.0/5",
    "168.0.0.0/8",
    "169.0.0.0/9",
    "169.128.0.0/10",
    "169.192.0.0/11",
    "169.224.0.0/12",
    "169.240.0.0/13",
    "169.248.0.0/14",
    "169.252.0.0/15",
    "169.255.0.0/16",
    "170.0.0.0/7",
    "172.0.0.0/12",
    "172.32.0.0/11",
    "172.64.0.0/10",
    "172.128.0.0/9",
    "173.0.0.0/8",
    "174.0.0.0/7",
    "176.0.0.0/4",
    "192.0.0.0/9",
    "192.128.0.0/11",
    "192.160.0.0/13",
    "192.169.0.0/16",
    "192.170.0.0/15",
    "192.172.0.0/14",
    "192.176.0.0/12",
    "192.192.0.0/10",
    "193.0.0.0/8",
    "194.0.0.0/7",
    "196.0.0.0/6",
    "200.0.0.0/5",
    "208.0.0.0/4",
    "224.0.0.0/3",
    "2000::/3",
];

#[test]
fn exit_node_and_autogroup_internet() {
    let p = policy(
        r#"{"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:internet:*"]}"#,
    );
    let dsts: Vec<Value> = INTERNET.iter().map(|ip| ports(ip, 0, 65535)).collect();
    assert_eq!(
        filter(&p, 6),
        json!([{
            "SrcIPs": ["100.64.0.1", "100.64.0.2", "100.64.0.3",
                       "fd7a:115c:a1e0::1", "fd7a:115c:a1e0::2", "fd7a:115c:a1e0::3"],
            "DstPorts": dsts,
        }])
    );
    // Only the exit node is "the internet"; the subnet router is not.
    for id in [1, 4, 5] {
        assert_eq!(filter(&p, id), json!([]), "node {id}");
    }
    assert_eq!(peers(&p, 1), [6]);
    assert_eq!(peers(&p, 6), [1, 2, 3]);
}

#[test]
fn auto_approvers() {
    let p = Policy::parse(&format!(
        r#"{{{HEADER}
  "autoApprovers": {{
    "routes": {{"192.168.0.0/16": ["tag:router"], "10.0.0.0/8": ["group:eng"], "fd00::/8": ["bob@example.com"]}},
    "exitNode": ["tag:exit"],
  }},
}}"#
    ))
    .unwrap();
    let all = tailnet();
    let approve = |id: usize, route: &str| p.auto_approve(&all[id - 1], route.parse().unwrap());
    assert!(approve(5, "192.168.1.0/24"));
    assert!(approve(5, "192.168.0.0/16"));
    assert!(
        !approve(5, "192.168.0.0/15"),
        "wider than the approved prefix"
    );
    assert!(!approve(5, "172.16.0.0/24"), "outside");
    assert!(
        !approve(6, "192.168.1.0/24"),
        "tag:exit is not an approver of it"
    );
    assert!(approve(3, "10.1.0.0/16"), "bob through group:eng");
    assert!(
        !approve(4, "10.1.0.0/16"),
        "a tagged node is no group member"
    );
    assert!(approve(3, "fd00:1::/64"));
    assert!(!approve(1, "fd00:1::/64"));
    // Exit routes go by exitNode only.
    assert!(approve(6, "0.0.0.0/0"));
    assert!(approve(6, "::/0"));
    assert!(!approve(5, "0.0.0.0/0"));
    assert!(p.auto_approve_exit_node(&all[5]));
    assert!(!p.auto_approve_exit_node(&all[0]));
}

#[test]
fn tag_owners() {
    let p = policy("");
    assert!(p.tag_owned_by("tag:server", BOB), "through group:eng");
    assert!(p.tag_owned_by("tag:router", ALICE));
    assert!(!p.tag_owned_by("tag:router", BOB));
    assert!(p.tag_owned_by("tag:exit", "tag:router"));
    assert!(!p.tag_owned_by("tag:nope", ALICE));
}
