//! The variants measured, and how each is put in place on the router and taken away again.

use std::io::Write as _;
use std::process::Stdio;

use meshgate_acl::Policy;
use meshgate_ebpf::{Enforcer, LinkKind};
use serde::Serialize;

use crate::acl_rules::{self, LINEAR_TABLE, TestFlow};
use crate::error::Error;
use crate::lab::{RCV, SND, Topo, UDP_PORT};

/// One path through the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(tag = "kind", content = "rules", rename_all = "kebab-case")]
pub enum Variant {
    /// Kernel forwarding, nothing else: the baseline every ratio is against.
    Plain,
    /// Forwarding with snd -> rtr inside a WireGuard tunnel.
    Wireguard,
    /// Our tc BPF program on rtr's ingress with an N-rule policy.
    AclBpf(usize),
    /// WireGuard with our BPF program on rtr's tunnel interface (as meshgate enforces the
    /// tailnet's policy on what comes out of WireGuard) with an N-rule policy.
    WireguardAclBpf(usize),
    /// `meshgate_acl::nft` (nftables with sets) with an N-rule policy.
    NftSets(usize),
    /// One nftables rule per policy line, the match last.
    NftLinear(usize),
}

impl Variant {
    pub fn kind(self) -> &'static str {
        match self {
            Variant::Plain => "plain",
            Variant::Wireguard => "wireguard",
            Variant::AclBpf(_) => "acl-bpf",
            Variant::WireguardAclBpf(_) => "wireguard+acl-bpf",
            Variant::NftSets(_) => "nft-sets",
            Variant::NftLinear(_) => "nft-linear",
        }
    }

    pub fn rules(self) -> Option<usize> {
        match self {
            Variant::Plain | Variant::Wireguard => None,
            Variant::AclBpf(n)
            | Variant::WireguardAclBpf(n)
            | Variant::NftSets(n)
            | Variant::NftLinear(n) => Some(n),
        }
    }

    pub fn label(self) -> String {
        match self.rules() {
            Some(n) => format!("{} {n}", self.kind()),
            None => self.kind().to_owned(),
        }
    }

    /// Whether this variant filters (and so must be shown to drop the denied port).
    pub fn filters(self) -> bool {
        self.rules().is_some()
    }

    /// Whether its traffic goes through the tunnel (so sizes above the tunnel MTU are skipped).
    pub fn tunnelled(self) -> bool {
        matches!(self, Variant::Wireguard | Variant::WireguardAclBpf(_))
    }
}

/// Every variant of a run, in the base order that each run rotates.
pub fn all(rule_counts: &[usize], wireguard: bool) -> Vec<Variant> {
    let mut v = vec![Variant::Plain];
    if wireguard {
        v.push(Variant::Wireguard);
    }
    for &n in rule_counts {
        v.extend([
            Variant::AclBpf(n),
            Variant::NftSets(n),
            Variant::NftLinear(n),
        ]);
    }
    if wireguard {
        v.extend(rule_counts.iter().map(|&n| Variant::WireguardAclBpf(n)));
    }
    v
}

/// One rule count: its policy and the nft texts, built once per bench.
#[derive(Debug)]
pub struct RuleSet {
    pub n: usize,
    pub policy: Policy,
    pub nft_sets: String,
    pub nft_linear: String,
    /// The same rules for traffic through the tunnel, whose source is snd's tunnel address.
    pub tunnel_policy: Policy,
}

impl RuleSet {
    /// N UDP rules, the measured flow's (snd -> rcv:5000-5009) last.
    pub fn build(n: usize, rtr_in: &str) -> Result<RuleSet, Error> {
        let flow = TestFlow {
            src: SND,
            dst: RCV,
            proto: 17,
            port: UDP_PORT,
        };
        let rules = acl_rules::rules(n, flow);
        let policy = Policy::from_filter_rules(&rules).map_err(|e| Error::Policy(e.to_string()))?;
        let tunnel_flow = TestFlow {
            src: crate::wireguard::SND_TUNNEL,
            ..flow
        };
        let tunnel_policy = Policy::from_filter_rules(&acl_rules::rules(n, tunnel_flow))
            .map_err(|e| Error::Policy(e.to_string()))?;
        Ok(RuleSet {
            n,
            tunnel_policy,
            nft_sets: meshgate_acl::nft::compile(&policy, rtr_in)
                .map_err(|e| Error::Policy(e.to_string()))?,
            nft_linear: acl_rules::nft_linear(&rules, rtr_in).map_err(Error::Policy)?,
            policy,
        })
    }
}

/// What is in place while a variant is measured; [`Installed::remove`] takes it away.
#[derive(Debug)]
pub enum Installed {
    Nothing,
    Tunnel,
    Bpf(Box<Enforcer>),
    TunnelBpf(Box<Enforcer>),
    NftSets,
    NftLinear,
}

/// Puts `v` in place. `sets` must hold the rule set of `v`'s N.
pub fn install(topo: &Topo, v: Variant, sets: &[RuleSet]) -> Result<Installed, Error> {
    let set = |n: usize| {
        sets.iter()
            .find(|s| s.n == n)
            .ok_or_else(|| Error::Setup(format!("no rule set of {n} built")))
    };
    Ok(match v {
        Variant::Plain => Installed::Nothing,
        Variant::Wireguard => {
            tunnel(topo)?.route_through(topo)?;
            Installed::Tunnel
        }
        Variant::AclBpf(n) => Installed::Bpf(Box::new(enforce(
            topo,
            &topo.rtr_in,
            LinkKind::Ethernet,
            &set(n)?.policy,
        )?)),
        Variant::WireguardAclBpf(n) => {
            let t = tunnel(topo)?;
            let e = enforce(topo, &t.rtr_if, LinkKind::L3, &set(n)?.tunnel_policy)?;
            t.route_through(topo)?;
            Installed::TunnelBpf(Box::new(e))
        }
        Variant::NftSets(n) => {
            let text = &set(n)?.nft_sets;
            topo.rtr
                .run(|| meshgate_acl::apply(text))?
                .map_err(|e| Error::Setup(format!("nft sets: {e}")))?;
            Installed::NftSets
        }
        Variant::NftLinear(n) => {
            nft_stdin(topo, &set(n)?.nft_linear)?;
            Installed::NftLinear
        }
    })
}

fn tunnel(topo: &Topo) -> Result<&crate::wireguard::Tunnel, Error> {
    topo.tunnel
        .as_ref()
        .ok_or_else(|| Error::Setup("no WireGuard tunnel built".into()))
}

/// Our BPF program on `iface` in rtr, enforcing `policy`.
fn enforce(topo: &Topo, iface: &str, kind: LinkKind, policy: &Policy) -> Result<Enforcer, Error> {
    Ok(topo
        .rtr
        .run(|| -> Result<Enforcer, meshgate_ebpf::Error> {
            let mut e = Enforcer::attach(iface, kind, &topo.pins.0)?;
            e.set_policy(policy)?;
            Ok(e)
        })??)
}

/// Takes our BPF program off `iface` in rtr, with the clsact qdisc it needed.
fn unenforce(topo: &Topo, iface: &str, e: Box<Enforcer>) -> Result<(), Error> {
    drop(e);
    topo.rtr.run(|| Enforcer::detach(iface, &topo.pins.0))??;
    // An empty clsact qdisc would stay on the path of the next variants.
    topo.rtr
        .exec_ok(["tc", "qdisc", "del", "dev", iface, "clsact"])?;
    Ok(())
}

impl Installed {
    /// Takes the variant away, leaving plain forwarding.
    pub fn remove(self, topo: &Topo) -> Result<(), Error> {
        match self {
            Installed::Nothing => Ok(()),
            Installed::Tunnel => topo.route_plain(),
            Installed::Bpf(e) => unenforce(topo, &topo.rtr_in, e),
            Installed::TunnelBpf(e) => {
                let routed = topo.route_plain();
                unenforce(topo, &tunnel(topo)?.rtr_if, e)?;
                routed
            }
            Installed::NftSets => topo
                .rtr
                .run(meshgate_acl::remove)?
                .map_err(|e| Error::Setup(format!("nft sets removal: {e}"))),
            Installed::NftLinear => {
                topo.rtr
                    .exec_ok(["nft", "delete", "table", "inet", LINEAR_TABLE])?;
                Ok(())
            }
        }
    }
}

/// `nft -f -` inside rtr, one transaction.
fn nft_stdin(topo: &Topo, text: &str) -> Result<(), Error> {
    let mut cmd = topo.rtr.command("nft");
    cmd.args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| Error::io("starting nft", e))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| Error::io("writing to nft", e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::io("waiting for nft", e))?;
    if !out.status.success() {
        return Err(Error::Setup(format!(
            "nft -f -: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_of_a_run() {
        let v = all(&[10, 1000], true);
        assert_eq!(v.len(), 2 + 2 * 4);
        assert_eq!(v[8].label(), "wireguard+acl-bpf 10");
        assert!(v[8].tunnelled() && v[8].filters() && !v[2].tunnelled());
        assert_eq!(v[0], Variant::Plain);
        assert_eq!(v[3].label(), "nft-sets 10");
        assert!(!Variant::Wireguard.filters() && Variant::NftLinear(1).filters());
        assert_eq!(all(&[10], false).len(), 4);
        let json = serde_json::to_string(&Variant::AclBpf(10)).unwrap();
        assert_eq!(json, r#"{"kind":"acl-bpf","rules":10}"#);
    }
}
