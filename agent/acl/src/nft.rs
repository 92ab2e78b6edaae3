//! Compiling a [`Policy`] into one nftables JSON transaction for our own `table inet meshgate`.
//!
//! The transaction adds, deletes and re-adds the table, so the kernel swaps the old ruleset for
//! the new one atomically (and a refused one leaves the old in place). `flush table` would not
//! do: it keeps sets, their elements and their types. Other tables are never named.
//!
//! Packets arriving on the WireGuard interface (input and forward hooks) jump to one chain:
//! established/related flows pass, then the `{saddr . daddr . l4proto . dport}` interval sets,
//! then echo-requests by `{saddr . daddr}`, and the rest is dropped. Other interfaces are not
//! filtered here.

use std::borrow::Cow;
use std::collections::HashSet;

use ipnet::IpNet;
use nftables::batch::Batch;
use nftables::expr::{
    CT, Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField, Prefix, Range, SetItem,
};
use nftables::schema::{
    Chain, NfListObject, Nftables, Rule, Set, SetFlag, SetType, SetTypeValue, Table,
};
use nftables::stmt::{Counter, JumpTarget, Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use crate::error::Error;
use crate::model::Policy;
pub use crate::router::Router;

/// Our table's name (family inet).
pub const TABLE: &str = "meshgate";
pub(crate) const FAMILY_NAME: &str = "inet";
pub(crate) const FAMILY: NfFamily = NfFamily::INet;
/// The regular chain holding the policy.
pub const FILTER_CHAIN: &str = "mesh-filter";
/// Set names: port entries and echo pairs, per family.
pub const ALLOW4: &str = "allow4";
pub const ALLOW6: &str = "allow6";
pub const ECHO4: &str = "echo4";
pub const ECHO6: &str = "echo6";

/// ICMP types that always pass: replies and errors (Tailscale's `RunIn`).
const ICMP_REPLIES: &[&str] = &[
    "echo-reply",
    "destination-unreachable",
    "time-exceeded",
    "parameter-problem",
];
const ICMPV6_REPLIES: &[&str] = &[
    "echo-reply",
    "destination-unreachable",
    "packet-too-big",
    "time-exceeded",
    "parameter-problem",
];

/// The ruleset as JSON text for [`crate::apply`]: the policy only.
pub fn compile(policy: &Policy, wg_interface: &str) -> Result<String, Error> {
    compile_with(Some(policy), wg_interface, &Router::default())
}

/// The ruleset as JSON text: the policy when `policy` is given (nftables enforces it), and
/// what a subnet router or exit node needs.
pub fn compile_with(
    policy: Option<&Policy>,
    wg_interface: &str,
    router: &Router,
) -> Result<String, Error> {
    Ok(serde_json::to_string(&ruleset_with(
        policy,
        wg_interface,
        router,
    )?)?)
}

/// The policy-only ruleset as the nftables crate's typed document.
pub fn ruleset(policy: &Policy, wg_interface: &str) -> Result<Nftables<'static>, Error> {
    ruleset_with(Some(policy), wg_interface, &Router::default())
}

/// The ruleset as the nftables crate's typed document.
pub fn ruleset_with(
    policy: Option<&Policy>,
    wg_interface: &str,
    router: &Router,
) -> Result<Nftables<'static>, Error> {
    check_interface(wg_interface)?;
    let mut batch = Batch::new();
    let table = || Table {
        family: FAMILY,
        name: TABLE.into(),
        handle: None,
    };
    batch.add(NfListObject::Table(table()));
    batch.delete(NfListObject::Table(table()));
    batch.add(NfListObject::Table(table()));

    for (name, hook) in [("input", NfHook::Input), ("forward", NfHook::Forward)] {
        batch.add(NfListObject::Chain(chain(name, Some(hook))));
    }
    // Before the policy's jump: its accept ends our forward chain.
    crate::router::add(&mut batch, wg_interface, router);
    let Some(policy) = policy else {
        return Ok(batch.to_nftables());
    };
    batch.add(NfListObject::Chain(chain(FILTER_CHAIN, None)));

    let (mut allow4, mut allow6, mut echo4, mut echo6) = (vec![], vec![], vec![], vec![]);
    for e in policy.entries() {
        let port = if e.first_port == e.last_port {
            Expression::Number(e.first_port.into())
        } else {
            Expression::Range(Box::new(Range {
                range: [
                    Expression::Number(e.first_port.into()),
                    Expression::Number(e.last_port.into()),
                ],
            }))
        };
        let elem = concat(vec![
            net(&e.src),
            net(&e.dst),
            Expression::Number(e.proto.into()),
            port,
        ]);
        match e.src {
            IpNet::V4(_) => allow4.push(elem),
            IpNet::V6(_) => allow6.push(elem),
        }
    }
    for (src, dst) in policy.echo() {
        let elem = concat(vec![net(src), net(dst)]);
        match src {
            IpNet::V4(_) => echo4.push(elem),
            IpNet::V6(_) => echo6.push(elem),
        }
    }
    use SetType::{InetProto, InetService, Ipv4Addr, Ipv6Addr};
    batch.add(set(
        ALLOW4,
        &[Ipv4Addr, Ipv4Addr, InetProto, InetService],
        allow4,
    ));
    batch.add(set(
        ALLOW6,
        &[Ipv6Addr, Ipv6Addr, InetProto, InetService],
        allow6,
    ));
    batch.add(set(ECHO4, &[Ipv4Addr, Ipv4Addr], echo4));
    batch.add(set(ECHO6, &[Ipv6Addr, Ipv6Addr], echo6));

    let iif = matches(
        meta(MetaKey::Iifname),
        Expression::String(wg_interface.to_owned().into()),
    );
    let jump = Statement::Jump(JumpTarget {
        target: FILTER_CHAIN.into(),
    });
    for name in ["input", "forward"] {
        batch.add(rule(name, vec![iif.clone(), jump.clone()]));
    }
    let accept = || Statement::Accept(None);
    let ct = |key: &'static str| {
        Expression::Named(NamedExpression::CT(CT {
            key: key.into(),
            family: None,
            dir: None,
        }))
    };
    let names = |names: &[&'static str]| {
        Expression::Named(NamedExpression::Set(
            names
                .iter()
                .map(|n| SetItem::Element(Expression::String((*n).into())))
                .collect(),
        ))
    };
    let filter_rules = vec![
        // Return traffic of flows this node started. Packets of flows a peer started are
        // checked against the sets every time, so a new policy cuts what it no longer allows.
        vec![
            matches(ct("direction"), Expression::String("reply".into())),
            accept(),
        ],
        // ICMP replies and errors always pass, as in Tailscale's filter.
        vec![
            matches(field("icmp", "type"), names(ICMP_REPLIES)),
            accept(),
        ],
        vec![
            matches(field("icmpv6", "type"), names(ICMPV6_REPLIES)),
            accept(),
        ],
        vec![
            matches(
                concat(vec![
                    field("ip", "saddr"),
                    field("ip", "daddr"),
                    meta(MetaKey::L4proto),
                    field("th", "dport"),
                ]),
                set_ref(ALLOW4),
            ),
            accept(),
        ],
        vec![
            matches(
                concat(vec![
                    field("ip6", "saddr"),
                    field("ip6", "daddr"),
                    meta(MetaKey::L4proto),
                    field("th", "dport"),
                ]),
                set_ref(ALLOW6),
            ),
            accept(),
        ],
        vec![
            matches(
                field("icmp", "type"),
                Expression::String("echo-request".into()),
            ),
            matches(
                concat(vec![field("ip", "saddr"), field("ip", "daddr")]),
                set_ref(ECHO4),
            ),
            accept(),
        ],
        vec![
            matches(
                field("icmpv6", "type"),
                Expression::String("echo-request".into()),
            ),
            matches(
                concat(vec![field("ip6", "saddr"), field("ip6", "daddr")]),
                set_ref(ECHO6),
            ),
            accept(),
        ],
        vec![Statement::Drop(None)],
    ];
    for mut stmts in filter_rules {
        // Counted, so that status can say what passed and what was dropped.
        let verdict_at = stmts.len() - 1;
        stmts.insert(verdict_at, Statement::Counter(Counter::Anonymous(None)));
        batch.add(rule(FILTER_CHAIN, stmts));
    }
    Ok(batch.to_nftables())
}

/// Refuses names the kernel would refuse, and nft's `*` wildcard, which would widen the match.
fn check_interface(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'/' | b'*' | b'\\' | b'"' | b':'));
    if ok {
        Ok(())
    } else {
        Err(Error::BadInterface(name.to_owned()))
    }
}

pub(crate) fn chain(name: &'static str, hook: Option<NfHook>) -> Chain<'static> {
    Chain {
        family: FAMILY,
        table: TABLE.into(),
        name: name.into(),
        _type: hook.map(|_| NfChainType::Filter),
        hook,
        prio: hook.map(|_| 0),
        policy: hook.map(|_| NfChainPolicy::Accept),
        ..Chain::default()
    }
}

fn set(
    name: &'static str,
    types: &[SetType],
    elems: Vec<Expression<'static>>,
) -> NfListObject<'static> {
    NfListObject::Set(Box::new(Set {
        family: FAMILY,
        table: TABLE.into(),
        name: name.into(),
        set_type: SetTypeValue::Concatenated(Cow::Owned(types.to_vec())),
        flags: Some(HashSet::from([SetFlag::Interval])),
        // nft wants no `elem` at all for an empty set.
        elem: (!elems.is_empty()).then(|| Cow::Owned(elems)),
        ..Set::default()
    }))
}

pub(crate) fn rule(chain: &'static str, stmts: Vec<Statement<'static>>) -> NfListObject<'static> {
    NfListObject::Rule(Rule {
        family: FAMILY,
        table: TABLE.into(),
        chain: chain.into(),
        expr: Cow::Owned(stmts),
        ..Rule::default()
    })
}

pub(crate) fn matches(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match {
        left,
        right,
        op: Operator::EQ,
    })
}

fn concat(parts: Vec<Expression<'static>>) -> Expression<'static> {
    Expression::Named(NamedExpression::Concat(parts))
}

fn field(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: protocol.into(),
            field: field.into(),
        },
    )))
}

pub(crate) fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

fn set_ref(name: &str) -> Expression<'static> {
    Expression::String(format!("@{name}").into())
}

/// A host as a bare address (nft lists hosts that way), anything wider as a prefix.
fn net(n: &IpNet) -> Expression<'static> {
    let addr = Expression::String(n.addr().to_string().into());
    if n.prefix_len() == n.max_prefix_len() {
        addr
    } else {
        Expression::Named(NamedExpression::Prefix(Prefix {
            addr: Box::new(addr),
            len: n.prefix_len().into(),
        }))
    }
}

#[cfg(test)]
#[path = "nft_tests.rs"]
mod tests;
