//! Bad policies: each is refused whole, and the error names the line (and column) at fault.

use meshgate_policy::{Policy, PolicyError};

/// A valid policy; the tests below break one line of it. Line numbers are 1-based.
const GOOD: &str = r#"// meshgate test policy
{
  "groups": {
    "group:eng": ["alice@example.com"],
    "group:ops": ["bob@example.com"],
  },
  "hosts": {
    "db": "10.0.0.5/32",
  },
  "tagOwners": {
    "tag:server": ["group:eng"],
  },
  "acls": [
    {"action": "accept", "src": ["group:eng"], "dst": ["tag:server:22"]},
    {"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"]},
    {"action": "accept", "src": ["bob@example.com"], "dst": ["db:5432"], "proto": "tcp"},
  ],
  "autoApprovers": {
    "routes": {"10.0.0.0/8": ["tag:server"]},
    "exitNode": ["group:ops"],
  },
}
"#;

/// `GOOD` with `from` (which must occur once) replaced by `to`; returns the error.
fn refuse(from: &str, to: &str) -> PolicyError {
    assert_eq!(GOOD.matches(from).count(), 1, "{from}");
    let text = GOOD.replace(from, to);
    match Policy::parse(&text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => {
            eprintln!("{e}"); // shown with --nocapture, to read the messages
            e
        }
    }
}

fn line_of(err: &PolicyError) -> usize {
    let line = err.line();
    assert!(
        err.to_string()
            .starts_with(&format!("line {line}, column ")),
        "{err}"
    );
    line
}

#[test]
fn the_base_policy_is_valid() {
    let p = Policy::parse(GOOD).unwrap();
    assert!(p.warnings().is_empty());
}

#[test]
fn bad_json_names_the_line() {
    let e = refuse(r#""db": "10.0.0.5/32","#, r#""db" "10.0.0.5/32","#);
    assert!(matches!(e, PolicyError::Syntax { line: 8, .. }), "{e}");
    // A missing comma between two ACL entries: json5 stops at the second entry.
    let e = refuse(
        r#""dst": ["tag:server:22"]},"#,
        r#""dst": ["tag:server:22"]}"#,
    );
    assert!(matches!(e, PolicyError::Syntax { column: 5, .. }), "{e}");
    assert_eq!(line_of(&e), 15);
}

#[test]
fn unknown_keys_are_refused() {
    let e = refuse(r#"  "hosts": {"#, r#"  "hostz": {"#);
    assert!(matches!(e, PolicyError::Syntax { line: 7, .. }), "{e}");
    assert!(e.to_string().contains("hostz"), "{e}");
    // Inside an ACL entry too (Tailscale's legacy `users`/`ports` are not accepted).
    let e = refuse(r#""proto": "tcp""#, r#""ports": ["tcp"]"#);
    assert!(matches!(e, PolicyError::Syntax { line: 16, .. }), "{e}");
}

#[test]
fn grants_are_refused_and_ssh_ignored_with_a_warning() {
    let e = refuse("  \"acls\": [", "  \"grants\": [],\n  \"acls\": [");
    assert!(
        matches!(
            e,
            PolicyError::Unsupported {
                line: 13,
                column: 3,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("not supported yet"), "{e}");

    let text = GOOD.replace(
        "  \"acls\": [",
        "  \"ssh\": [{\"action\": \"check\"}],\n  \"acls\": [",
    );
    let p = Policy::parse(&text).unwrap();
    assert_eq!(
        p.warnings(),
        ["line 13: `ssh` is not supported yet and was ignored"]
    );
}

#[test]
fn unknown_alias_kinds() {
    let e = refuse(r#""src": ["group:eng"]"#, r#""src": ["user:alice"]"#);
    assert!(
        matches!(&e, PolicyError::BadAlias { line: 14, alias, .. } if alias == "user:alice"),
        "{e}"
    );
    let e = refuse(
        r#""src": ["autogroup:member"]"#,
        r#""src": ["autogroup:admin"]"#,
    );
    assert!(matches!(e, PolicyError::BadAlias { line: 15, .. }), "{e}");
}

#[test]
fn undefined_groups_hosts_and_tags() {
    let e = refuse(r#""src": ["group:eng"]"#, r#""src": ["group:nope"]"#);
    assert!(
        matches!(&e, PolicyError::UndefinedGroup { line: 14, group, .. } if group == "group:nope"),
        "{e}"
    );
    let e = refuse(r#""dst": ["db:5432"]"#, r#""dst": ["web:5432"]"#);
    assert!(
        matches!(&e, PolicyError::UndefinedHost { line: 16, host, .. } if host == "web"),
        "{e}"
    );
    // A tag without a tagOwners entry, in acls and in autoApprovers.
    let e = refuse(r#""dst": ["tag:server:22"]"#, r#""dst": ["tag:web:22"]"#);
    assert!(
        matches!(&e, PolicyError::UndefinedTag { line: 14, tag, .. } if tag == "tag:web"),
        "{e}"
    );
    let e = refuse(r#"["tag:server"]},"#, r#"["tag:router"]},"#);
    assert!(
        matches!(e, PolicyError::UndefinedTag { line: 19, .. }),
        "{e}"
    );
    // And in tagOwners itself.
    let e = refuse(
        r#""tag:server": ["group:eng"]"#,
        r#""tag:server": ["group:dev"]"#,
    );
    assert!(
        matches!(e, PolicyError::UndefinedGroup { line: 11, .. }),
        "{e}"
    );
}

#[test]
fn nested_groups_are_refused() {
    let e = refuse(
        r#""group:ops": ["bob@example.com"]"#,
        r#""group:ops": ["bob@example.com", "group:eng"]"#,
    );
    assert!(matches!(e, PolicyError::Invalid { line: 5, .. }), "{e}");
    assert!(e.to_string().contains("nested"), "{e}");
}

#[test]
fn bad_port_specs() {
    for bad in ["22-21", "65536", "80,,443", "", "0-70000", "ssh"] {
        let e = refuse("tag:server:22", &format!("tag:server:{bad}"));
        assert!(
            matches!(&e, PolicyError::BadPorts { line: 14, ports, .. } if ports == bad),
            "{bad}: {e}"
        );
    }
    // No ports at all.
    let e = refuse(r#""db:5432""#, r#""db""#);
    assert!(matches!(e, PolicyError::Invalid { line: 16, .. }), "{e}");
}

#[test]
fn bad_prefixes() {
    let e = refuse(r#""db": "10.0.0.5/32""#, r#""db": "10.0.0.5/24""#);
    assert!(matches!(&e, PolicyError::BadPrefix { line: 8, .. }), "{e}");
    assert!(e.to_string().contains("did you mean 10.0.0.0/24"), "{e}");
    let e = refuse(r#""dst": ["db:5432"]"#, r#""dst": ["10.0.0.300:5432"]"#);
    assert!(matches!(e, PolicyError::BadPrefix { line: 16, .. }), "{e}");
    let e = refuse(r#""10.0.0.0/8": ["#, r#""10.0.0.0/33": ["#);
    assert!(matches!(e, PolicyError::BadPrefix { line: 19, .. }), "{e}");
}

#[test]
fn bad_protocols() {
    let e = refuse(r#""proto": "tcp""#, r#""proto": "quic""#);
    assert!(
        matches!(&e, PolicyError::BadProto { line: 16, column: 83, proto } if proto == "quic"),
        "{e}"
    );
    let e = refuse(r#""proto": "tcp""#, r#""proto": "300""#);
    assert!(matches!(e, PolicyError::BadProto { line: 16, .. }), "{e}");
    // A port-less protocol with ports.
    let e = refuse(r#""proto": "tcp""#, r#""proto": "icmp""#);
    assert!(matches!(e, PolicyError::Invalid { line: 16, .. }), "{e}");
}

#[test]
fn misplaced_aliases_name_their_own_line() {
    // autogroup:self is fine in dst on line 15; in a src on line 16 it is the error.
    let e = refuse(
        r#""src": ["bob@example.com"]"#,
        r#""src": ["autogroup:self"]"#,
    );
    assert!(matches!(e, PolicyError::BadAlias { line: 16, .. }), "{e}");
    let e = refuse(
        r#""src": ["bob@example.com"]"#,
        r#""src": ["autogroup:internet"]"#,
    );
    assert!(matches!(e, PolicyError::BadAlias { line: 16, .. }), "{e}");
    // Approvers are users, groups and tags only.
    let e = refuse(r#""exitNode": ["group:ops"]"#, r#""exitNode": ["*"]"#);
    assert!(matches!(e, PolicyError::BadAlias { line: 20, .. }), "{e}");
    let e = refuse(
        r#""action": "accept", "src": ["bob"#,
        r#""action": "deny", "src": ["bob"#,
    );
    assert!(matches!(e, PolicyError::Invalid { line: 16, .. }), "{e}");
}

#[test]
fn duplicate_definitions_are_refused() {
    let e = refuse(
        r#""group:ops": ["bob@example.com"],"#,
        r#""group:ops": ["bob@example.com"], "group:eng": [],"#,
    );
    assert!(
        matches!(
            e,
            PolicyError::Invalid {
                line: 5,
                column: 39,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("defined twice"), "{e}");
}
