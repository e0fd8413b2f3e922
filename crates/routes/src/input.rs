//! What the renderer is given: the cluster's prefixes with their provenance, the gateway,
//! the DNS target and domain, and this host's networks to check them against.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::local::LocalRoute;

/// What a cluster prefix holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrefixKind {
    /// ClusterIPs of Services.
    Services,
    /// Pod IPs.
    Pods,
}

impl PrefixKind {
    /// `services` or `pods`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Services => "services",
            Self::Pods => "pods",
        }
    }
}

impl fmt::Display for PrefixKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One of the cluster's networks, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterPrefix {
    /// The prefix (host bits are ignored).
    pub net: IpNet,
    /// Pods or Services.
    pub kind: PrefixKind,
    /// Where it came from, e.g. `ServiceCIDR "kubernetes"` (printed next to its route).
    pub why: String,
    /// Whether it is a guess (widened from observed addresses) rather than read.
    #[serde(default)]
    pub guessed: bool,
}

impl ClusterPrefix {
    /// A prefix read from `why`.
    pub fn new(net: IpNet, kind: PrefixKind, why: impl Into<String>) -> Self {
        Self {
            net: net.trunc(),
            kind,
            why: why.into(),
            guessed: false,
        }
    }
}

/// Everything the static-route and DNS formats are rendered from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RoutesInput {
    /// The cluster's Pod and Service prefixes, in the order they are printed.
    pub prefixes: Vec<ClusterPrefix>,
    /// The kubelan gateway's IPv4 LAN address: the next hop of IPv4 prefixes.
    pub gateway_v4: Option<Ipv4Addr>,
    /// The kubelan gateway's IPv6 LAN address: the next hop of IPv6 prefixes.
    pub gateway_v6: Option<Ipv6Addr>,
    /// The DNS server the forwarders point at; `None` means the gateway (IPv4 first),
    /// which serves DNS on its LAN address.
    pub dns_target: Option<IpAddr>,
    /// The cluster DNS domain, e.g. `cluster.local`.
    pub cluster_domain: String,
    /// The office LAN(s); a cluster prefix overlapping one is warned about.
    pub lan: Vec<IpNet>,
    /// Other routes of this host; a cluster prefix overlapping one is warned about.
    /// Serialized as `{"dst", "detail"}`, the form `kubelan routes --output json` prints.
    #[serde(serialize_with = "crate::local::serialize_with_detail")]
    pub other_routes: Vec<LocalRoute>,
}

impl RoutesInput {
    /// The gateway for prefixes of `net`'s family.
    pub fn gateway_for(&self, net: &IpNet) -> Option<IpAddr> {
        match net {
            IpNet::V4(_) => self.gateway_v4.map(IpAddr::V4),
            IpNet::V6(_) => self.gateway_v6.map(IpAddr::V6),
        }
    }

    /// Where DNS forwarders point: [`dns_target`](Self::dns_target), else the gateway.
    pub fn dns_server(&self) -> Option<IpAddr> {
        self.dns_target
            .or(self.gateway_v4.map(IpAddr::V4))
            .or(self.gateway_v6.map(IpAddr::V6))
    }

    /// The cluster domain without surrounding dots, lowercased.
    pub fn domain(&self) -> String {
        self.cluster_domain.trim_matches('.').to_ascii_lowercase()
    }
}

/// Whether `name` is a DNS name every format can carry unquoted: dot-separated labels of
/// letters, digits and inner hyphens, 1–63 characters each, 253 in all (a trailing dot
/// is allowed).
pub fn valid_domain(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    })
}

/// Text from outside (a prefix's provenance) made safe for a comment line: control
/// characters become spaces.
pub(crate) fn comment_text(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains() {
        for ok in [
            "cluster.local",
            "cluster.local.",
            "a",
            "k8s-1.example",
            "x.y.z",
        ] {
            assert!(valid_domain(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "a..b",
            "-a.b",
            "a-.b",
            "clu ster.local",
            "cluster.local\"; };",
            "a/b",
            &"x".repeat(64),
        ] {
            assert!(!valid_domain(bad), "{bad:?}");
        }
    }

    #[test]
    fn dns_server_prefers_target_then_v4() {
        let mut i = RoutesInput {
            gateway_v6: Some("fd00::11".parse().unwrap()),
            ..RoutesInput::default()
        };
        assert_eq!(i.dns_server(), Some("fd00::11".parse().unwrap()));
        i.gateway_v4 = Some("10.4.7.11".parse().unwrap());
        assert_eq!(i.dns_server(), Some("10.4.7.11".parse().unwrap()));
        i.dns_target = Some("172.17.16.10".parse().unwrap());
        assert_eq!(i.dns_server(), Some("172.17.16.10".parse().unwrap()));
    }
}
