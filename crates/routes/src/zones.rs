//! Reverse-DNS zones of a prefix (`in-addr.arpa`, `ip6.arpa`).
//!
//! Reverse zones exist only at label boundaries: every 8 bits for IPv4 (one octet per
//! label), every 4 bits for IPv6 (one nibble per label). A prefix on a boundary is one
//! zone. A prefix between boundaries becomes the zones at the next boundary below it
//! (more specific): a /20 is its 16 /24 zones, a /23 its 2, a /110 its 4 /112 zones. That
//! list is exact: it forwards the prefix's reverse lookups and nothing else. When it
//! would be longer than [`MAX_REVERSE_ZONES`] (an IPv4 /17 or /18: 128 or 64 zones), the
//! one zone at the boundary above is used instead, which is wider than the prefix; the
//! result says so ([`ReverseZones::exact`] is false) and every format prints a comment.
//! Prefixes shorter than one label (an IPv4 /0–/7 needing more than the limit, or /0)
//! get no zone at all.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::Serialize;

/// The most zones one prefix is expanded to before the covering zone is used instead.
pub const MAX_REVERSE_ZONES: u32 = 32;

/// One reverse zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReverseZone {
    /// The addresses it covers (on a label boundary).
    pub net: IpNet,
    /// Its name without the trailing dot, e.g. `32.17.172.in-addr.arpa`.
    pub name: String,
}

impl ReverseZone {
    /// The zone covering exactly `net`, which must be on a label boundary (8 bits for
    /// IPv4, 4 for IPv6); other lengths are rounded down to one.
    pub fn of(net: IpNet) -> Self {
        let name = match net {
            IpNet::V4(n) => {
                let labels = usize::from(n.prefix_len() / 8);
                let mut parts: Vec<String> = n.network().octets()[..labels]
                    .iter()
                    .map(u8::to_string)
                    .collect();
                parts.reverse();
                parts.push("in-addr.arpa".into());
                parts.join(".")
            }
            IpNet::V6(n) => {
                let labels = usize::from(n.prefix_len() / 4);
                let bits = u128::from(n.network());
                let mut parts: Vec<String> = (0..labels)
                    .map(|i| format!("{:x}", (bits >> (124 - 4 * i)) & 0xf))
                    .collect();
                parts.reverse();
                parts.push("ip6.arpa".into());
                parts.join(".")
            }
        };
        Self { net, name }
    }
}

/// The reverse zones of one prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReverseZones {
    /// The zones, in address order.
    pub zones: Vec<ReverseZone>,
    /// False when the one zone is wider than the prefix (see the module docs).
    pub exact: bool,
}

/// The reverse zones of `net` (see the [module docs](self) for the rule).
pub fn reverse_zones(net: IpNet) -> ReverseZones {
    let net = net.trunc();
    let (step, max_len) = match net {
        IpNet::V4(_) => (8u8, 32u8),
        IpNet::V6(_) => (4u8, 128u8),
    };
    let len = net.prefix_len();
    if len == 0 {
        return ReverseZones {
            zones: Vec::new(),
            exact: false,
        };
    }
    let up = len.div_ceil(step) * step;
    let count = 1u32 << (up - len);
    if count <= MAX_REVERSE_ZONES {
        let zones = (0..count)
            .filter_map(|i| sub_net(net, up, i, max_len))
            .map(ReverseZone::of)
            .collect();
        return ReverseZones { zones, exact: true };
    }
    let down = len / step * step;
    if down == 0 {
        return ReverseZones {
            zones: Vec::new(),
            exact: false,
        };
    }
    let wide = match net {
        IpNet::V4(n) => Ipv4Net::new(n.network(), down).map(IpNet::V4),
        IpNet::V6(n) => Ipv6Net::new(n.network(), down).map(IpNet::V6),
    };
    ReverseZones {
        zones: wide
            .map(|w| vec![ReverseZone::of(w.trunc())])
            .unwrap_or_default(),
        exact: false,
    }
}

/// The `i`-th sub-prefix of length `len` inside `net`.
fn sub_net(net: IpNet, len: u8, i: u32, max_len: u8) -> Option<IpNet> {
    let shift = u32::from(max_len - len);
    match net {
        IpNet::V4(n) => {
            let base = u32::from(n.network());
            let add = u32::try_from(u64::from(i) << shift).ok()?;
            Ipv4Net::new(Ipv4Addr::from(base.checked_add(add)?), len)
                .ok()
                .map(IpNet::V4)
        }
        IpNet::V6(n) => {
            let base = u128::from(n.network());
            let add = u128::from(i).checked_shl(shift)?;
            Ipv6Net::new(Ipv6Addr::from(base.checked_add(add)?), len)
                .ok()
                .map(IpNet::V6)
        }
    }
}

/// Address blocks whose reverse zones resolvers answer themselves by default (RFC 6303
/// and RFC 6598: BIND's automatic empty zones, Unbound's default local zones), with the
/// length of those zones.
const LOCALLY_SERVED: &[(&str, u8)] = &[
    ("0.0.0.0/8", 8),
    ("10.0.0.0/8", 8),
    ("100.64.0.0/10", 16),
    ("127.0.0.0/8", 8),
    ("169.254.0.0/16", 16),
    ("172.16.0.0/12", 16),
    ("192.0.2.0/24", 24),
    ("192.168.0.0/16", 16),
    ("198.51.100.0/24", 24),
    ("203.0.113.0/24", 24),
    ("fd00::/8", 8),
    ("fe80::/10", 12),
    ("2001:db8::/32", 32),
];

/// The locally served zone (e.g. `17.172.in-addr.arpa`) that contains `zone`, if any: a
/// resolver answers from it (NXDOMAIN) before looking at a forward zone below it.
pub fn locally_served_parent(zone: &ReverseZone) -> Option<ReverseZone> {
    LOCALLY_SERVED.iter().find_map(|(block, len)| {
        let block: IpNet = block.parse().ok()?;
        if !block.contains(&zone.net) || zone.net.prefix_len() < *len {
            return None;
        }
        let parent = match zone.net {
            IpNet::V4(n) => IpNet::V4(Ipv4Net::new(n.network(), *len).ok()?.trunc()),
            IpNet::V6(n) => IpNet::V6(Ipv6Net::new(n.network(), *len).ok()?.trunc()),
        };
        Some(ReverseZone::of(parent))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(net: &str) -> (Vec<String>, bool) {
        let z = reverse_zones(net.parse().unwrap());
        (z.zones.into_iter().map(|z| z.name).collect(), z.exact)
    }

    #[test]
    fn octet_boundaries_are_one_zone() {
        assert_eq!(
            names("172.17.32.0/24"),
            (vec!["32.17.172.in-addr.arpa".to_string()], true)
        );
        assert_eq!(
            names("10.244.0.0/16"),
            (vec!["244.10.in-addr.arpa".to_string()], true)
        );
        assert_eq!(
            names("10.0.0.0/8"),
            (vec!["10.in-addr.arpa".to_string()], true)
        );
        assert_eq!(
            names("10.1.2.3/32"),
            (vec!["3.2.1.10.in-addr.arpa".to_string()], true)
        );
    }

    #[test]
    fn a_slash_20_is_its_sixteen_slash_24s() {
        let (z, exact) = names("172.17.16.0/20");
        assert!(exact);
        assert_eq!(z.len(), 16);
        assert_eq!(z[0], "16.17.172.in-addr.arpa");
        assert_eq!(z[15], "31.17.172.in-addr.arpa");
        // Host bits do not matter.
        assert_eq!(names("172.17.20.9/20").0, z);
    }

    #[test]
    fn limits() {
        let (z, exact) = names("172.17.32.0/19");
        assert!(exact);
        assert_eq!(z.len(), 32);
        assert_eq!(z[31], "63.17.172.in-addr.arpa");
        // 64 zones would be too many: the covering /16, marked wider.
        assert_eq!(
            names("172.17.64.0/18"),
            (vec!["17.172.in-addr.arpa".to_string()], false)
        );
        let (z, exact) = names("10.96.0.0/12");
        assert!(exact);
        assert_eq!(z.len(), 16);
        assert_eq!(z[0], "96.10.in-addr.arpa");
        assert_eq!(z[15], "111.10.in-addr.arpa");
        assert_eq!(
            names("10.0.0.0/26"),
            (vec!["0.0.10.in-addr.arpa".to_string()], false)
        );
        assert_eq!(names("0.0.0.0/0"), (vec![], false));
        assert_eq!(names("128.0.0.0/1"), (vec![], false));
        assert_eq!(names("::/0"), (vec![], false));
    }

    #[test]
    fn ipv6_nibbles() {
        assert_eq!(
            names("fd00:10:96::/112"),
            (
                vec![
                    "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.1.0.0.0.0.d.f.ip6.arpa".to_string()
                ],
                true
            )
        );
        let (z, exact) = names("fd00:10:244::/54");
        assert!(exact);
        assert_eq!(
            z,
            vec![
                "0.0.4.4.2.0.0.1.0.0.0.0.d.f.ip6.arpa",
                "1.0.4.4.2.0.0.1.0.0.0.0.d.f.ip6.arpa",
                "2.0.4.4.2.0.0.1.0.0.0.0.d.f.ip6.arpa",
                "3.0.4.4.2.0.0.1.0.0.0.0.d.f.ip6.arpa"
            ]
        );
        assert_eq!(names("2001:db8::/32").0, vec!["8.b.d.0.1.0.0.2.ip6.arpa"]);
    }

    #[test]
    fn locally_served() {
        let parent = |zone: &str| {
            let z = reverse_zones(zone.parse().unwrap()).zones.remove(0);
            locally_served_parent(&z).map(|p| p.name)
        };
        assert_eq!(
            parent("172.17.32.0/24").as_deref(),
            Some("17.172.in-addr.arpa")
        );
        assert_eq!(parent("10.244.0.0/16").as_deref(), Some("10.in-addr.arpa"));
        assert_eq!(
            parent("192.168.5.0/24").as_deref(),
            Some("168.192.in-addr.arpa")
        );
        assert_eq!(
            parent("100.64.0.0/16").as_deref(),
            Some("64.100.in-addr.arpa")
        );
        assert_eq!(parent("fd00:10:96::/112").as_deref(), Some("d.f.ip6.arpa"));
        assert_eq!(parent("198.18.0.0/16"), None);
        assert_eq!(parent("2001:db9::/64"), None);
    }

    #[test]
    fn never_panics_on_any_length() {
        for len in 0..=32 {
            let z = reverse_zones(IpNet::V4(
                Ipv4Net::new(Ipv4Addr::new(255, 255, 255, 255), len).unwrap(),
            ));
            assert!(z.zones.len() <= MAX_REVERSE_ZONES as usize);
        }
        for len in 0..=128 {
            let z = reverse_zones(IpNet::V6(
                Ipv6Net::new(Ipv6Addr::from(u128::MAX), len).unwrap(),
            ));
            assert!(z.zones.len() <= MAX_REVERSE_ZONES as usize);
        }
    }
}
