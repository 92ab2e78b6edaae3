//! Writes compiled tables into the maps and swaps slots; reads counters. Works on a loaded
//! object whether or not it is attached (tests use it without attaching).

use std::net::IpAddr;

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap, MapData, PerCpuArray, PerCpuValues};
use ipnet::IpNet;
use meshgate_acl::Policy;

use crate::error::Error;
use crate::maps::{
    Addr4, Addr6, COUNTERS_PER_SLOT, Config, FlowKey, FlowValue, RULE_FIXED_BITS, RuleData,
    SLOT_BITS, names,
};
use crate::tables::{ClassPrefix, Tables, class_slot, compile};

/// The typed maps of one loaded object.
pub struct Maps {
    config: Array<MapData, Config>,
    src4: LpmTrie<MapData, Addr4, u32>,
    dst4: LpmTrie<MapData, Addr4, u32>,
    src6: LpmTrie<MapData, Addr6, u32>,
    dst6: LpmTrie<MapData, Addr6, u32>,
    rules: LpmTrie<MapData, RuleData, u32>,
    flows: HashMap<MapData, FlowKey, FlowValue>,
    stats: PerCpuArray<MapData, u64>,
    rule_hits: PerCpuArray<MapData, u64>,
}

impl std::fmt::Debug for Maps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // aya's typed maps have no Debug; the names say which maps these are.
        f.debug_struct("Maps")
            .field("maps", &names::ALL)
            .finish_non_exhaustive()
    }
}

/// What one [`Maps::set_policy`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SwapReport {
    /// The slot now active.
    pub slot: u32,
    /// `mg_config.generation` after the swap.
    pub generation: u64,
    pub src_prefixes: usize,
    pub dst_prefixes: usize,
    pub rule_keys: usize,
    /// Keys of the previous slot deleted after the swap.
    pub removed_keys: usize,
}

/// `mg_stats`, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub pass_rule: u64,
    pub pass_flow: u64,
    pub pass_icmp_reply: u64,
    pub pass_fragment: u64,
    pub pass_not_ip: u64,
    pub drop_no_rule: u64,
    pub drop_malformed: u64,
    pub egress_new_flow: u64,
}

impl Stats {
    /// Packets from the mesh let through, for any reason.
    pub fn passed(&self) -> u64 {
        self.pass_rule
            + self.pass_flow
            + self.pass_icmp_reply
            + self.pass_fragment
            + self.pass_not_ip
    }

    /// Packets from the mesh dropped: no rule, or headers that could not be read.
    pub fn dropped(&self) -> u64 {
        self.drop_no_rule + self.drop_malformed
    }
}

fn per_cpu_sum(map: &PerCpuArray<MapData, u64>, i: u32, name: &'static str) -> Result<u64, Error> {
    map.get(&i, 0)
        .map(|v| v.iter().copied().fold(0u64, u64::wrapping_add))
        .map_err(Error::map(name))
}

/// Packet counters: totals, and hits per counter index of the active slot (non-zero only).
/// Counter index `i` (0-based, within the slot) is the policy's entry `i`, echo pairs after the
/// entries, the last index shared by everything beyond it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub stats: Stats,
    pub hits: Vec<(u32, u64)>,
}

fn take<T>(
    ebpf: &mut aya::Ebpf,
    name: &'static str,
    convert: impl FnOnce(aya::maps::Map) -> Result<T, aya::maps::MapError>,
) -> Result<T, Error> {
    let map = ebpf.take_map(name).ok_or(Error::Missing(name))?;
    convert(map).map_err(Error::map(name))
}

fn addr4(net: &ipnet::Ipv4Net, slot: u32) -> Key<Addr4> {
    Key::new(
        SLOT_BITS + u32::from(net.prefix_len()),
        Addr4 {
            slot,
            addr: net.network().octets(),
        },
    )
}

fn addr6(net: &ipnet::Ipv6Net, slot: u32) -> Key<Addr6> {
    Key::new(
        SLOT_BITS + u32::from(net.prefix_len()),
        Addr6 {
            slot,
            addr: net.network().octets(),
        },
    )
}

/// Collects then deletes every key of `slot` (after a restart we do not know which we wrote).
fn clear_slot<K: aya::Pod>(
    trie: &mut LpmTrie<MapData, K, u32>,
    name: &'static str,
    in_slot: impl Fn(&K) -> bool,
) -> Result<usize, Error> {
    // Bounded: a trie never holds more than its max_entries (1 << 20 at most here).
    let keys: Vec<Key<K>> = trie
        .keys()
        .take(1 << 21)
        .filter_map(|k| k.ok())
        .filter(|k| in_slot(&k.data()))
        .collect();
    for k in &keys {
        match trie.remove(k) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
            Err(e) => return Err(Error::map(name)(e)),
        }
    }
    Ok(keys.len())
}

impl Maps {
    pub(crate) fn take(ebpf: &mut aya::Ebpf) -> Result<Self, Error> {
        Ok(Maps {
            config: take(ebpf, names::CONFIG, Array::try_from)?,
            src4: take(ebpf, names::SRC4, LpmTrie::try_from)?,
            dst4: take(ebpf, names::DST4, LpmTrie::try_from)?,
            src6: take(ebpf, names::SRC6, LpmTrie::try_from)?,
            dst6: take(ebpf, names::DST6, LpmTrie::try_from)?,
            rules: take(ebpf, names::RULES, LpmTrie::try_from)?,
            flows: take(ebpf, names::FLOWS, HashMap::try_from)?,
            stats: take(ebpf, names::STATS, PerCpuArray::try_from)?,
            rule_hits: take(ebpf, names::RULE_HITS, PerCpuArray::try_from)?,
        })
    }

    /// The current `mg_config`.
    pub fn config(&self) -> Result<Config, Error> {
        self.config.get(&0, 0).map_err(Error::map(names::CONFIG))
    }

    fn set_config(&mut self, cfg: Config) -> Result<(), Error> {
        self.config
            .set(0, cfg, 0)
            .map_err(Error::map(names::CONFIG))
    }

    /// Writes `mg_config.flags` (e.g. [`crate::maps::FLAG_NO_VERDICT_CACHE`]).
    pub fn set_flags(&mut self, flags: u32) -> Result<(), Error> {
        let cfg = self.config()?;
        self.set_config(Config { flags, ..cfg })
    }

    /// Installs `policy`: writes the inactive slot, flips `active_slot` (one array write, the
    /// atomic swap) and bumps the generation (so cached verdicts are re-checked), then deletes
    /// the previous slot's keys. If anything fails before the flip, what was written is deleted
    /// and the active policy stays as it was.
    pub fn set_policy(&mut self, policy: &Policy) -> Result<SwapReport, Error> {
        let cfg = self.config()?;
        let old = cfg.active_slot & 1;
        let new = old ^ 1;
        let tables = compile(policy, new)?;
        // Leftovers of an interrupted earlier swap would mix into the new policy.
        self.clear(new)?;
        if let Err(e) = self.write(&tables) {
            // Best effort: the error that matters is the write's.
            let _ = self.clear(new);
            return Err(e);
        }
        let generation = cfg.generation.wrapping_add(1);
        self.set_config(Config {
            active_slot: new,
            flags: cfg.flags,
            generation,
        })?;
        let removed_keys = self.clear(old)?;
        Ok(SwapReport {
            slot: new,
            generation,
            src_prefixes: tables.src.len(),
            dst_prefixes: tables.dst.len(),
            rule_keys: tables.rules.len(),
            removed_keys,
        })
    }

    fn write(&mut self, t: &Tables) -> Result<(), Error> {
        let slot = t.slot;
        let prefixes = |trie4: &mut LpmTrie<MapData, Addr4, u32>,
                        trie6: &mut LpmTrie<MapData, Addr6, u32>,
                        list: &[ClassPrefix],
                        names: (&'static str, &'static str)|
         -> Result<(), Error> {
            for c in list {
                match &c.net {
                    IpNet::V4(n) => trie4
                        .insert(&addr4(n, slot), c.class, 0)
                        .map_err(Error::map(names.0))?,
                    IpNet::V6(n) => trie6
                        .insert(&addr6(n, slot), c.class, 0)
                        .map_err(Error::map(names.1))?,
                }
            }
            Ok(())
        };
        prefixes(
            &mut self.src4,
            &mut self.src6,
            &t.src,
            (names::SRC4, names::SRC6),
        )?;
        prefixes(
            &mut self.dst4,
            &mut self.dst6,
            &t.dst,
            (names::DST4, names::DST6),
        )?;
        let mut counters: Vec<u32> = t.rules.iter().map(|r| r.counter).collect();
        counters.sort_unstable();
        counters.dedup();
        // Fresh counts for the new policy's rules (the slot's previous policy used them).
        for c in counters {
            self.rule_hits
                .set(c, zeros()?, 0)
                .map_err(Error::map(names::RULE_HITS))?;
        }
        for r in &t.rules {
            let key = Key::new(
                RULE_FIXED_BITS + u32::from(r.port_len),
                RuleData {
                    src_class: r.src_class,
                    dst_class: r.dst_class,
                    proto: r.proto,
                    pad: 0,
                    port: r.port.to_be_bytes(),
                },
            );
            self.rules
                .insert(&key, r.counter, 0)
                .map_err(Error::map(names::RULES))?;
        }
        Ok(())
    }

    /// Deletes every key of `slot` from the four address tries and the rule trie.
    fn clear(&mut self, slot: u32) -> Result<usize, Error> {
        let mut n = clear_slot(&mut self.src4, names::SRC4, |k| k.slot == slot)?;
        n += clear_slot(&mut self.dst4, names::DST4, |k| k.slot == slot)?;
        n += clear_slot(&mut self.src6, names::SRC6, |k| k.slot == slot)?;
        n += clear_slot(&mut self.dst6, names::DST6, |k| k.slot == slot)?;
        n += clear_slot(&mut self.rules, names::RULES, |k| {
            class_slot(k.src_class) == slot
        })?;
        Ok(n)
    }

    /// `mg_stats` summed over CPUs: a handful of reads, cheap enough for every status call.
    pub fn stats(&self) -> Result<Stats, Error> {
        let s = |i| per_cpu_sum(&self.stats, i, names::STATS);
        Ok(Stats {
            pass_rule: s(0)?,
            pass_flow: s(1)?,
            pass_icmp_reply: s(2)?,
            pass_fragment: s(3)?,
            pass_not_ip: s(4)?,
            drop_no_rule: s(5)?,
            drop_malformed: s(6)?,
            egress_new_flow: s(7)?,
        })
    }

    /// Stats, and the non-zero per-rule hits of the active slot (one read per counter index).
    pub fn counters(&self) -> Result<Counters, Error> {
        let stats = self.stats()?;
        let sum =
            |map: &PerCpuArray<MapData, u64>, i: u32, name: &'static str| per_cpu_sum(map, i, name);
        let base = (self.config()?.active_slot & 1) * COUNTERS_PER_SLOT;
        let mut hits = Vec::new();
        for i in 0..COUNTERS_PER_SLOT {
            let n = sum(&self.rule_hits, base + i, names::RULE_HITS)?;
            if n != 0 {
                hits.push((i, n));
            }
        }
        Ok(Counters { stats, hits })
    }

    /// The flow table entry for (local, remote) as the program keys it, if any (diagnostics
    /// and tests).
    pub fn flow(
        &self,
        proto: u8,
        local: (IpAddr, u16),
        remote: (IpAddr, u16),
    ) -> Result<Option<FlowValue>, Error> {
        let key = flow_key(proto, local, remote);
        match self.flows.get(&key, 0) {
            Ok(v) => Ok(Some(v)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(Error::map(names::FLOWS)(e)),
        }
    }
}

/// `mg_flows` key for a flow seen from this node.
fn flow_key(proto: u8, local: (IpAddr, u16), remote: (IpAddr, u16)) -> FlowKey {
    let bytes = |ip: IpAddr| {
        let mut b = [0u8; 16];
        match ip {
            IpAddr::V4(a) => b[..4].copy_from_slice(&a.octets()),
            IpAddr::V6(a) => b = a.octets(),
        }
        b
    };
    FlowKey {
        family: if local.0.is_ipv4() { 4 } else { 6 },
        proto,
        pad: 0,
        local_port: local.1.to_be_bytes(),
        remote_port: remote.1.to_be_bytes(),
        local: bytes(local.0),
        remote: bytes(remote.0),
    }
}

fn zeros() -> Result<PerCpuValues<u64>, Error> {
    let n = aya::util::nr_cpus().map_err(|(what, e)| Error::io(what)(e))?;
    PerCpuValues::try_from(vec![0u64; n]).map_err(Error::io("per-CPU counter values"))
}
