//! Splitting overlapping prefixes into disjoint ones. Concatenated interval sets (and LPM maps
//! later) refuse or mis-handle overlapping elements, so every compiled entry must be disjoint.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;

/// Splits `nets` into disjoint prefixes covering exactly their union, each paired with the
/// indices of the input nets that contain it. Sorted by prefix. `None` past `budget` outputs.
///
/// Prefixes nest or are disjoint, and sorted by (address, length) the prefixes strictly inside
/// one follow it in a contiguous run; so one pass with a stack of enclosing prefixes finds each
/// prefix's parent, and each prefix is subtracted only its direct children: O(n log n + output
/// x prefix length) instead of comparing every pair.
pub(crate) fn refine(nets: &[IpNet], budget: usize) -> Option<Vec<(IpNet, Vec<usize>)>> {
    let mut indices: BTreeMap<IpNet, Vec<usize>> = BTreeMap::new();
    for (i, net) in nets.iter().enumerate() {
        indices.entry(net.trunc()).or_default().push(i);
    }
    let uniq: Vec<IpNet> = indices.keys().copied().collect();
    // parent[i]: index in `uniq` of the smallest prefix strictly containing uniq[i].
    let mut parent: Vec<Option<usize>> = vec![None; uniq.len()];
    let mut children: Vec<Vec<IpNet>> = vec![Vec::new(); uniq.len()];
    let mut open: Vec<usize> = Vec::new();
    for (i, p) in uniq.iter().enumerate() {
        while let Some(&top) = open.last() {
            if uniq[top].contains(p) {
                break;
            }
            open.pop();
        }
        if let Some(&top) = open.last() {
            parent[i] = Some(top);
            children[top].push(*p);
        }
        open.push(i);
    }
    let mut out: Vec<(IpNet, Vec<usize>)> = Vec::new();
    for (i, p) in uniq.iter().enumerate() {
        let mut atoms = Vec::new();
        subtract(
            *p,
            &children[i],
            &mut atoms,
            budget.saturating_sub(out.len()),
        )?;
        if atoms.is_empty() {
            continue;
        }
        // An atom of `p` lies in `p` and its ancestors, and in no other input net.
        let mut owners = Vec::new();
        let mut at = Some(i);
        while let Some(k) = at {
            owners.extend(indices.get(&uniq[k]).into_iter().flatten().copied());
            at = parent[k];
        }
        owners.sort_unstable();
        out.extend(atoms.into_iter().map(|atom| (atom, owners.clone())));
    }
    out.sort();
    Some(out)
}

/// Pushes `p` minus the union of `subs` (all strictly inside `p`) as prefixes.
fn subtract(p: IpNet, subs: &[IpNet], out: &mut Vec<IpNet>, budget: usize) -> Option<()> {
    if subs.contains(&p) {
        return Some(());
    }
    if subs.is_empty() {
        if out.len() >= budget {
            return None;
        }
        out.push(p);
        return Some(());
    }
    // A sub strictly inside `p` means `p` is not a host prefix, so it has two halves.
    let halves = p.subnets(p.prefix_len() + 1).ok()?;
    for half in halves {
        let within: Vec<IpNet> = subs.iter().filter(|s| half.contains(*s)).copied().collect();
        subtract(half, &within, out, budget)?;
    }
    Some(())
}

/// Merges sibling prefixes carrying the same key into their parent, as long as any merge is
/// possible. The union of (prefix, key) boxes is unchanged, so disjoint input stays disjoint;
/// this undoes most of the splitting [`refine`] did where the split made no difference.
pub(crate) fn coalesce<K: Ord + Clone>(boxes: Vec<(IpNet, K)>) -> Vec<(IpNet, K)> {
    let mut by_key: BTreeMap<K, BTreeSet<IpNet>> = BTreeMap::new();
    for (net, key) in boxes {
        by_key.entry(key).or_default().insert(net);
    }
    let mut out = Vec::new();
    for (key, mut nets) in by_key {
        // Longest prefixes first, so a parent made at one length can merge again at the next.
        for len in (1..=128u8).rev() {
            let at_len: Vec<IpNet> = nets
                .iter()
                .filter(|n| n.prefix_len() == len)
                .copied()
                .collect();
            for net in at_len {
                let Some(parent) = net.supernet() else {
                    continue;
                };
                let Ok(mut halves) = parent.subnets(len) else {
                    continue;
                };
                let (Some(a), Some(b)) = (halves.next(), halves.next()) else {
                    continue;
                };
                if nets.contains(&a) && nets.contains(&b) {
                    nets.remove(&a);
                    nets.remove(&b);
                    nets.insert(parent);
                }
            }
        }
        out.extend(nets.into_iter().map(|n| (n, key.clone())));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn nested_prefixes_split_into_disjoint_atoms() {
        let got = refine(&[n("10.0.0.0/30"), n("10.0.0.1/32")], 100).unwrap();
        assert_eq!(
            got,
            vec![
                (n("10.0.0.0/32"), vec![0]),
                (n("10.0.0.1/32"), vec![0, 1]),
                (n("10.0.0.2/31"), vec![0]),
            ]
        );
    }

    #[test]
    fn duplicates_and_families_stay_apart() {
        let got = refine(&[n("::/0"), n("0.0.0.0/0"), n("::/0")], 100).unwrap();
        assert_eq!(
            got,
            vec![(n("0.0.0.0/0"), vec![1]), (n("::/0"), vec![0, 2])]
        );
    }

    #[test]
    fn siblings_with_the_same_key_merge_up() {
        let boxes = vec![
            (n("10.0.0.0/32"), 'a'),
            (n("10.0.0.1/32"), 'a'),
            (n("10.0.0.2/31"), 'a'),
            (n("10.0.0.4/30"), 'b'),
            (n("::/1"), 'a'),
        ];
        assert_eq!(
            coalesce(boxes),
            vec![
                (n("10.0.0.0/30"), 'a'),
                (n("::/1"), 'a'),
                (n("10.0.0.4/30"), 'b')
            ]
        );
    }

    #[test]
    fn budget_is_enforced() {
        // 0/0 minus a /32 is 32 prefixes, plus the /32 itself.
        assert_eq!(
            refine(&[n("0.0.0.0/0"), n("1.2.3.4/32")], 40)
                .unwrap()
                .len(),
            33
        );
        assert!(refine(&[n("0.0.0.0/0"), n("1.2.3.4/32")], 20).is_none());
    }
}
