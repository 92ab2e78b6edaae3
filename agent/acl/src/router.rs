//! What a subnet router or exit node needs from our table, beside the policy (reference §7.4,
//! DESIGN decision 5): packets forwarded from the mesh are marked and masqueraded where they
//! leave by another interface, and SYNs entering the mesh get their MSS clamped to the route's
//! MTU, so LAN hosts with a 1500-byte MTU never send segments the tunnel cannot carry.

use nftables::batch::Batch;
use nftables::expr::{
    BinaryOperation, CT, Expression, MetaKey, NamedExpression, Payload, PayloadField, RT, RTKey,
    SetItem, TcpOption,
};
use nftables::schema::{Chain, NfListObject};
use nftables::stmt::{Mangle, Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfHook};

use crate::nft::{FAMILY, TABLE, matches, meta, rule};

/// Marks forwarded packets that came from the mesh (Tailscale's value and mask).
pub const SUBNET_MARK: u32 = 0x40000;
pub const MARK_MASK: u32 = 0xff0000;
/// The chain doing the masquerade (type nat, hook postrouting, priority srcnat).
pub const POSTROUTING_CHAIN: &str = "postrouting";
const SRCNAT_PRIORITY: i32 = 100;
/// The chains saving and restoring marks (type filter, priority mangle).
pub const MARK_SAVE_CHAIN: &str = "mark_save";
pub const MARK_RESTORE_CHAIN: &str = "mark_restore";
const MANGLE_PRIORITY: i32 = -150;

/// The router's parts of the table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Router {
    /// Source-NAT what the mesh sends out of other interfaces to the router's address there
    /// (`--snat-subnet-routes`, on by default for subnet routers and exit nodes).
    pub masquerade: bool,
    /// Clamp the MSS of TCP SYNs forwarded into the mesh to the route MTU.
    pub clamp_mss: bool,
    /// Save the mark of connections this host starts with one of ours (WireGuard's, the
    /// control and DERP sockets') in conntrack and restore it on their replies, so strict
    /// rp_filter with `src_valid_mark` routes them by the main table (exit node in use).
    pub restore_marks: bool,
}

impl Router {
    /// Whether any of it is on.
    pub fn any(&self) -> bool {
        self.masquerade || self.clamp_mss || self.restore_marks
    }
}

/// Adds the router's rules to `batch` (after the base chains `forward` exists).
pub(crate) fn add(batch: &mut Batch<'static>, wg_interface: &str, router: &Router) {
    let wg = || Expression::String(wg_interface.to_owned().into());
    if router.clamp_mss {
        let syn = Statement::Match(Match {
            left: payload("tcp", "flags"),
            right: Expression::String("syn".into()),
            op: Operator::IN,
        });
        let clamp = Statement::Mangle(Mangle {
            key: Expression::Named(NamedExpression::TcpOption(TcpOption {
                name: "maxseg".into(),
                field: Some("size".into()),
            })),
            value: Expression::Named(NamedExpression::RT(RT {
                key: RTKey::MTU,
                family: None,
            })),
        });
        batch.add(rule(
            "forward",
            vec![matches(meta(MetaKey::Oifname), wg()), syn, clamp],
        ));
    }
    if router.restore_marks {
        add_mark_restore(batch);
    }
    if router.masquerade {
        // The input interface is gone by postrouting, hence the mark.
        let mark = Statement::Mangle(Mangle {
            key: meta(MetaKey::Mark),
            value: Expression::BinaryOperation(Box::new(BinaryOperation::OR(vec![
                Expression::BinaryOperation(Box::new(BinaryOperation::AND(
                    meta(MetaKey::Mark),
                    Expression::Number(!MARK_MASK),
                ))),
                Expression::Number(SUBNET_MARK),
            ]))),
        });
        batch.add(rule(
            "forward",
            vec![matches(meta(MetaKey::Iifname), wg()), mark],
        ));
        batch.add(NfListObject::Chain(Chain {
            family: FAMILY,
            table: TABLE.into(),
            name: POSTROUTING_CHAIN.into(),
            _type: Some(NfChainType::NAT),
            hook: Some(NfHook::Postrouting),
            prio: Some(SRCNAT_PRIORITY),
            policy: Some(NfChainPolicy::Accept),
            ..Chain::default()
        }));
        let marked = matches(
            Expression::BinaryOperation(Box::new(BinaryOperation::AND(
                meta(MetaKey::Mark),
                Expression::Number(MARK_MASK),
            ))),
            Expression::Number(SUBNET_MARK),
        );
        let not_back_into_mesh = Statement::Match(Match {
            left: meta(MetaKey::Oifname),
            right: wg(),
            op: Operator::NEQ,
        });
        batch.add(rule(
            POSTROUTING_CHAIN,
            vec![marked, not_back_into_mesh, Statement::Masquerade(None)],
        ));
    }
}

/// Marked on output and not saved yet: `ct mark set meta mark & MASK` (any state: a flow the
/// peer started, like WireGuard's, is saved by our first marked packet of it); replies
/// (`ct state established,related`, ct mark set) on prerouting: `meta mark set ct mark & MASK`.
fn add_mark_restore(batch: &mut Batch<'static>) {
    for (name, hook) in [
        (MARK_SAVE_CHAIN, NfHook::Output),
        (MARK_RESTORE_CHAIN, NfHook::Prerouting),
    ] {
        batch.add(NfListObject::Chain(Chain {
            family: FAMILY,
            table: TABLE.into(),
            name: name.into(),
            _type: Some(NfChainType::Filter),
            hook: Some(hook),
            prio: Some(MANGLE_PRIORITY),
            policy: Some(NfChainPolicy::Accept),
            ..Chain::default()
        }));
    }
    let masked = |key: Expression<'static>| {
        Expression::BinaryOperation(Box::new(BinaryOperation::AND(
            key,
            Expression::Number(MARK_MASK),
        )))
    };
    let ct_mark = || {
        Expression::Named(NamedExpression::CT(CT {
            key: "mark".into(),
            family: None,
            dir: None,
        }))
    };
    let ct_state = |states: &[&'static str]| {
        Statement::Match(Match {
            left: Expression::Named(NamedExpression::CT(CT {
                key: "state".into(),
                family: None,
                dir: None,
            })),
            right: Expression::Named(NamedExpression::Set(
                states
                    .iter()
                    .map(|s| SetItem::Element(Expression::String((*s).into())))
                    .collect(),
            )),
            op: Operator::IN,
        })
    };
    let nonzero = |e: Expression<'static>| {
        Statement::Match(Match {
            left: e,
            right: Expression::Number(0),
            op: Operator::NEQ,
        })
    };
    batch.add(rule(
        MARK_SAVE_CHAIN,
        vec![
            nonzero(masked(meta(MetaKey::Mark))),
            Statement::Match(Match {
                left: masked(ct_mark()),
                right: Expression::Number(0),
                op: Operator::EQ,
            }),
            Statement::Mangle(Mangle {
                key: ct_mark(),
                value: masked(meta(MetaKey::Mark)),
            }),
        ],
    ));
    batch.add(rule(
        MARK_RESTORE_CHAIN,
        vec![
            ct_state(&["established", "related"]),
            nonzero(masked(ct_mark())),
            Statement::Mangle(Mangle {
                key: meta(MetaKey::Mark),
                value: masked(ct_mark()),
            }),
        ],
    ));
}

fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: protocol.into(),
            field: field.into(),
        },
    )))
}
