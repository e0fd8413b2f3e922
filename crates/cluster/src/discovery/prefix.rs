//! Prefix arithmetic for discovery and route planning: overlap, subtraction (what is left of
//! a prefix after `--exclude`), exact aggregation, and the bounded widening of observed
//! addresses into a guessed prefix.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

/// Whether two prefixes share at least one address. Prefixes either nest or are disjoint,
/// so this is "one contains the other". Different families never overlap.
pub(crate) fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    let (a, b) = (a.trunc(), b.trunc());
    a.contains(&b) || b.contains(&a)
}

/// The common part of two overlapping prefixes (the more specific one), or `None`.
pub(crate) fn intersection(a: &IpNet, b: &IpNet) -> Option<IpNet> {
    let (a, b) = (a.trunc(), b.trunc());
    if a.contains(&b) {
        Some(b)
    } else if b.contains(&a) {
        Some(a)
    } else {
        None
    }
}

/// `from` without the addresses of `hole`: the minimal list of prefixes covering the rest,
/// in address order. Empty when `hole` covers `from`; `[from]` when they do not overlap.
///
/// Walks down from `from` towards `hole`, halving each time and keeping the half that does
/// not contain the hole, so the result has `hole.prefix_len() - from.prefix_len()` entries.
pub(crate) fn subtract(from: IpNet, hole: IpNet) -> Vec<IpNet> {
    let (from, hole) = (from.trunc(), hole.trunc());
    if !overlaps(&from, &hole) {
        return vec![from];
    }
    if hole.contains(&from) {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut cur = from;
    while cur != hole {
        let Ok(mut halves) = cur.subnets(cur.prefix_len() + 1) else {
            break; // unreachable: `cur` strictly contains `hole`, so it can be split
        };
        let (Some(lo), Some(hi)) = (halves.next(), halves.next()) else {
            break;
        };
        let (inside, outside) = if lo.contains(&hole) {
            (lo, hi)
        } else {
            (hi, lo)
        };
        out.push(outside);
        cur = inside;
    }
    out.sort();
    out
}

/// `from` without every prefix in `holes`, in address order.
pub(crate) fn subtract_all(from: IpNet, holes: &[IpNet]) -> Vec<IpNet> {
    let mut pieces = vec![from.trunc()];
    for hole in holes {
        pieces = pieces
            .into_iter()
            .flat_map(|p| subtract(p, *hole))
            .collect();
    }
    pieces.sort();
    pieces
}

/// Aggregates prefixes into the fewest prefixes covering exactly the same addresses
/// (contained ones disappear, sibling halves merge into their parent; nothing wider is
/// invented), each with the tags of the inputs it covers, in address order.
pub(crate) fn aggregate_tagged<T: Clone + Ord>(items: &[(IpNet, T)]) -> Vec<(IpNet, Vec<T>)> {
    let nets: Vec<IpNet> = items.iter().map(|(n, _)| n.trunc()).collect();
    let mut merged = IpNet::aggregate(&nets);
    merged.sort();
    merged
        .into_iter()
        .map(|m| {
            let mut tags: Vec<T> = items
                .iter()
                .filter(|(n, _)| m.contains(&n.trunc()))
                .map(|(_, t)| t.clone())
                .collect();
            tags.sort();
            tags.dedup();
            (m, tags)
        })
        .collect()
}

/// How far observed addresses may be widened, per family: never wider than `widest`
/// (a shorter prefix length), never narrower than `narrowest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bounds {
    /// The shortest prefix length a guess may have (e.g. 12 for IPv4 Services).
    pub(crate) widest: u8,
    /// The longest prefix length a guess may have (e.g. 24).
    pub(crate) narrowest: u8,
}

/// Bounds for observed ClusterIPs: kube-apiserver refuses IPv4 Service ranges wider than
/// /12 and IPv6 ones wider than /108.
pub(crate) const SERVICE_BOUNDS: (Bounds, Bounds) = (
    Bounds {
        widest: 12,
        narrowest: 24,
    },
    Bounds {
        widest: 108,
        narrowest: 120,
    },
);

/// Bounds for observed pod IPs: IPv4 as for Services; IPv6 pod networks are /48 to /64
/// (a /64 per node is common).
pub(crate) const POD_BOUNDS: (Bounds, Bounds) = (
    Bounds {
        widest: 12,
        narrowest: 24,
    },
    Bounds {
        widest: 48,
        narrowest: 64,
    },
);

/// A guessed prefix and how many observed addresses it was built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Widened {
    /// The guessed prefix.
    pub(crate) net: IpNet,
    /// How many distinct addresses it covers.
    pub(crate) count: usize,
}

/// Widens observed addresses into the smallest prefixes containing them, within `bounds`
/// (IPv4, IPv6): addresses are grouped by their `widest` prefix, and each group becomes the
/// smallest prefix containing all of it, but no narrower than `narrowest`. Addresses that
/// span more than a `widest` prefix give several guesses, never one wider supernet.
pub(crate) fn widen(ips: &[IpAddr], bounds: (Bounds, Bounds)) -> Vec<Widened> {
    let mut groups: BTreeMap<IpNet, Vec<IpAddr>> = BTreeMap::new();
    for ip in ips {
        let b = if ip.is_ipv4() { bounds.0 } else { bounds.1 };
        if let Ok(n) = IpNet::new(*ip, b.widest) {
            groups.entry(n.trunc()).or_default().push(*ip);
        }
    }
    let mut out = Vec::new();
    for (outer, mut members) in groups {
        members.sort();
        members.dedup();
        let (Some(lo), Some(hi)) = (members.first(), members.last()) else {
            continue;
        };
        let common = common_prefix_len(*lo, *hi);
        let b = if lo.is_ipv4() { bounds.0 } else { bounds.1 };
        let len = common.min(b.narrowest).max(outer.prefix_len());
        if let Ok(n) = IpNet::new(*lo, len) {
            out.push(Widened {
                net: n.trunc(),
                count: members.len(),
            });
        }
    }
    out
}

/// The number of leading bits two same-family addresses share.
fn common_prefix_len(a: IpAddr, b: IpAddr) -> u8 {
    let bits = match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a) ^ u32::from(b)).leading_zeros(),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a) ^ u128::from(b)).leading_zeros(),
        _ => 0,
    };
    u8::try_from(bits).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ns(v: &[IpNet]) -> Vec<String> {
        v.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn subtract_splits_into_the_minimal_rest() {
        // A /19 minus its first /24: /24, /23, /22, /21, /20 in address order.
        assert_eq!(
            ns(&subtract(n("172.17.32.0/19"), n("172.17.32.0/24"))),
            [
                "172.17.33.0/24",
                "172.17.34.0/23",
                "172.17.36.0/22",
                "172.17.40.0/21",
                "172.17.48.0/20"
            ]
        );
        // A hole in the middle.
        assert_eq!(
            ns(&subtract(n("10.0.0.0/22"), n("10.0.2.0/24"))),
            ["10.0.0.0/23", "10.0.3.0/24"]
        );
        // A single address.
        let rest = subtract(n("10.0.0.0/30"), n("10.0.0.2/32"));
        assert_eq!(ns(&rest), ["10.0.0.0/31", "10.0.0.3/32"]);
        // Disjoint, covering, equal, other family.
        assert_eq!(
            ns(&subtract(n("10.0.0.0/24"), n("10.0.1.0/24"))),
            ["10.0.0.0/24"]
        );
        assert!(subtract(n("10.0.1.0/24"), n("10.0.0.0/16")).is_empty());
        assert!(subtract(n("10.0.1.0/24"), n("10.0.1.0/24")).is_empty());
        assert_eq!(
            ns(&subtract(n("10.0.0.0/24"), n("fd00::/8"))),
            ["10.0.0.0/24"]
        );
        // Host bits in the inputs are ignored.
        assert_eq!(
            ns(&subtract(n("10.0.0.7/23"), n("10.0.1.9/24"))),
            ["10.0.0.0/24"]
        );
        // IPv6.
        assert_eq!(
            ns(&subtract(n("fd00:10::/62"), n("fd00:10:0:1::/64"))),
            ["fd00:10::/64", "fd00:10:0:2::/63"]
        );
    }

    #[test]
    fn subtract_covers_exactly_the_rest() {
        let from = n("192.168.0.0/20");
        let hole = n("192.168.5.128/25");
        let rest = subtract(from, hole);
        assert_eq!(
            rest.len(),
            usize::from(hole.prefix_len() - from.prefix_len())
        );
        let size = |p: &IpNet| 1u64 << (32 - p.prefix_len());
        assert_eq!(
            rest.iter().map(size).sum::<u64>() + size(&hole),
            size(&from)
        );
        for (i, a) in rest.iter().enumerate() {
            assert!(from.contains(a) && !overlaps(a, &hole));
            for b in &rest[i + 1..] {
                assert!(!overlaps(a, b), "{a} and {b}");
            }
        }
    }

    #[test]
    fn subtract_all_applies_every_hole() {
        assert_eq!(
            ns(&subtract_all(
                n("10.0.0.0/22"),
                &[n("10.0.0.0/24"), n("10.0.3.0/24"), n("192.168.0.0/16")]
            )),
            ["10.0.1.0/24", "10.0.2.0/24"]
        );
        assert!(subtract_all(n("10.0.0.0/24"), &[n("10.0.0.0/25"), n("10.0.0.128/25")]).is_empty());
    }

    #[test]
    fn overlap_and_intersection() {
        assert!(overlaps(&n("10.0.0.0/8"), &n("10.1.0.0/16")));
        assert!(overlaps(&n("10.1.0.0/16"), &n("10.0.0.0/8")));
        assert!(!overlaps(&n("10.0.0.0/16"), &n("10.1.0.0/16")));
        assert!(!overlaps(&n("0.0.0.0/0"), &n("::/0")));
        assert_eq!(
            intersection(&n("10.0.0.0/8"), &n("10.1.0.0/16")),
            Some(n("10.1.0.0/16"))
        );
        assert_eq!(intersection(&n("10.0.0.0/16"), &n("10.1.0.0/16")), None);
    }

    #[test]
    fn aggregation_merges_only_exact_neighbours() {
        let got = aggregate_tagged(&[
            (n("172.17.32.0/24"), "node1"),
            (n("172.17.33.0/24"), "node2"),
            (n("172.17.34.0/24"), "node3"),
            (n("172.17.34.0/25"), "node4"),
            (n("fd00:1::/64"), "node1"),
        ]);
        let got: Vec<(String, Vec<&str>)> =
            got.into_iter().map(|(p, t)| (p.to_string(), t)).collect();
        assert_eq!(
            got,
            [
                ("172.17.32.0/23".to_string(), vec!["node1", "node2"]),
                ("172.17.34.0/24".to_string(), vec!["node3", "node4"]),
                ("fd00:1::/64".to_string(), vec!["node1"]),
            ]
        );
        // Adjacent but not siblings: no supernet is invented.
        let got = aggregate_tagged(&[(n("10.0.1.0/24"), 1), (n("10.0.2.0/24"), 2)]);
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn widening_is_bounded() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // One address: the narrowest allowed prefix.
        assert_eq!(
            widen(&[ip("10.96.0.1")], SERVICE_BOUNDS),
            [Widened {
                net: n("10.96.0.0/24"),
                count: 1
            }]
        );
        // Spread addresses: the smallest prefix holding them.
        let w = widen(
            &[
                ip("10.96.0.1"),
                ip("10.96.0.10"),
                ip("10.100.3.7"),
                ip("10.96.0.10"),
            ],
            SERVICE_BOUNDS,
        );
        assert_eq!(
            w,
            [Widened {
                net: n("10.96.0.0/13"),
                count: 3
            }]
        );
        // More than a /12 apart: one guess per /12, never a wider supernet.
        let w = widen(&[ip("10.96.0.1"), ip("10.200.0.1")], SERVICE_BOUNDS);
        assert_eq!(
            ns(&w.iter().map(|w| w.net).collect::<Vec<_>>()),
            ["10.96.0.0/24", "10.200.0.0/24"]
        );
        // IPv6 pods and services, mixed families.
        let w = widen(
            &[
                ip("fd00:10:244:1::5"),
                ip("fd00:10:244:2::9"),
                ip("10.244.1.5"),
            ],
            POD_BOUNDS,
        );
        assert_eq!(
            ns(&w.iter().map(|w| w.net).collect::<Vec<_>>()),
            ["10.244.1.0/24", "fd00:10:244::/62"]
        );
        let w = widen(&[ip("fd00:10:96::a")], SERVICE_BOUNDS);
        assert_eq!(w[0].net, n("fd00:10:96::/120"));
        assert!(widen(&[], SERVICE_BOUNDS).is_empty());
    }
}
