//! What is wrong or doubtful about the input, each with what it means and the fix.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use crate::input::{PrefixKind, RoutesInput, valid_domain};
use crate::plan::plan;

/// IP family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V4 => "IPv4",
            Self::V6 => "IPv6",
        })
    }
}

/// One warning about the input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Warning {
    /// A cluster prefix and an office LAN share addresses.
    LanOverlap {
        /// The cluster prefix.
        prefix: IpNet,
        /// What it holds.
        prefix_kind: PrefixKind,
        /// The LAN (`--lan`).
        lan: IpNet,
    },
    /// A cluster prefix and another route of this host share addresses.
    RouteOverlap {
        /// The cluster prefix.
        prefix: IpNet,
        /// What it holds.
        prefix_kind: PrefixKind,
        /// The host's route.
        route: IpNet,
        /// How that route is reached.
        detail: String,
    },
    /// A cluster prefix lies inside another (or is given twice); no route is printed for it.
    Contained {
        /// The prefix left out.
        inner: IpNet,
        /// What it holds.
        inner_kind: PrefixKind,
        /// The prefix whose route covers it.
        outer: IpNet,
        /// What that one holds.
        outer_kind: PrefixKind,
    },
    /// Prefixes of a family for which no gateway address was given; no route is printed.
    NoGateway {
        /// The family.
        family: Family,
        /// The prefixes left out.
        prefixes: Vec<IpNet>,
    },
    /// A prefix is a guess (widened from the addresses in use).
    Guessed {
        /// The prefix.
        prefix: IpNet,
        /// What it holds.
        prefix_kind: PrefixKind,
        /// Where the guess came from.
        why: String,
    },
    /// The gateway address lies inside a cluster prefix: the route would point into itself.
    GatewayInCluster {
        /// The gateway.
        gateway: IpAddr,
        /// The prefix holding it.
        prefix: IpNet,
    },
    /// The cluster domain is not a plain DNS name; DNS formats leave it out.
    InvalidDomain {
        /// What was given.
        domain: String,
    },
    /// No DNS server to forward to (no gateway and no DNS target).
    NoDnsTarget,
    /// `--bgp`: the router and the cluster have the same AS number (the configurations
    /// printed are eBGP).
    BgpSameAs {
        /// The AS number.
        asn: u32,
    },
    /// `--bgp`: an AS number that cannot be used on a session.
    BgpUnusableAs {
        /// The AS number.
        asn: u32,
    },
    /// `--bgp`: no router address for Calico's `BGPPeer`.
    BgpNoRouterIp,
    /// `--bgp`: no IPv4 node address for the router to peer with.
    BgpNoNeighbors,
    /// `--bgp`: IPv6 prefixes and neighbors the router configurations leave out.
    BgpIpv6LeftOut {
        /// The prefixes and neighbors.
        what: Vec<String>,
    },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LanOverlap {
                prefix,
                prefix_kind,
                lan,
            } => {
                let wins = if lan.prefix_len() >= prefix.prefix_len() {
                    format!(
                        "the LAN's route is more specific, so {lan} stays on the LAN and those cluster addresses stay unreachable"
                    )
                } else {
                    format!(
                        "the cluster route is more specific, so LAN hosts in {prefix} become unreachable from the rest of the office"
                    )
                };
                write!(
                    f,
                    "the cluster's {prefix_kind} prefix {prefix} overlaps the LAN {lan}: {wins}; give the cluster (or the LAN) addresses the other does not use"
                )
            }
            Self::RouteOverlap {
                prefix,
                prefix_kind,
                route,
                detail,
            } => write!(
                f,
                "the cluster's {prefix_kind} prefix {prefix} overlaps this host's route {route} {detail}: whichever is more specific wins, so part of the cluster or of that network is unreachable from here; remove the route if that network is gone, else renumber one of them"
            ),
            Self::Contained {
                inner,
                inner_kind,
                outer,
                outer_kind,
            } => {
                if inner == outer {
                    write!(
                        f,
                        "{inner} is given twice ({outer_kind} and {inner_kind}): one route is printed"
                    )
                } else {
                    write!(
                        f,
                        "the {inner_kind} prefix {inner} lies inside the {outer_kind} prefix {outer}: no route of its own is printed, the wider one covers it"
                    )
                }
            }
            Self::NoGateway { family, prefixes } => write!(
                f,
                "no route printed for {}: no {family} gateway address; pass --gateway with the gateway's {family} address too",
                join(prefixes)
            ),
            Self::Guessed {
                prefix,
                prefix_kind,
                why,
            } => write!(
                f,
                "the {prefix_kind} prefix {prefix} is guessed ({}): check it, or pass --{} with the real one",
                why.trim_end_matches(" (a guess)"),
                match prefix_kind {
                    PrefixKind::Pods => "pod-cidr",
                    PrefixKind::Services => "service-cidr",
                }
            ),
            Self::GatewayInCluster { gateway, prefix } => write!(
                f,
                "the gateway {gateway} lies inside the cluster prefix {prefix}: its route would point into itself; pass the gateway's LAN address with --gateway"
            ),
            Self::InvalidDomain { domain } => write!(
                f,
                "the cluster domain {domain:?} is not a plain DNS name, so the DNS formats leave it out; pass --cluster-domain (e.g. cluster.local)"
            ),
            Self::NoDnsTarget => write!(
                f,
                "no DNS server to forward to: pass --gateway, or --dns-target with the cluster DNS address"
            ),
            Self::BgpSameAs { asn } => write!(
                f,
                "the router and the cluster both use AS {asn}; the configurations printed are eBGP: pass a different --router-as or --cluster-as"
            ),
            Self::BgpUnusableAs { asn } => write!(
                f,
                "AS {asn} is reserved and cannot be used on a BGP session; pick one from 64512-65534 or 4200000000-4294967294"
            ),
            Self::BgpNoRouterIp => write!(
                f,
                "no Calico BGPPeer without the office router's address: pass --router-ip (its address on the nodes' network)"
            ),
            Self::BgpNoNeighbors => write!(
                f,
                "no IPv4 node address to peer with: allow listing nodes, or pass --bgp-neighbor IP for each node"
            ),
            Self::BgpIpv6LeftOut { what } => write!(
                f,
                "the router configurations are IPv4 only; left out: {}",
                what.join(", ")
            ),
        }
    }
}

fn join(nets: &[IpNet]) -> String {
    nets.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Everything doubtful about `input`, in a stable order: overlaps with the LAN and this
/// host's routes, prefixes left out (contained, no gateway of their family), guesses, a
/// gateway inside the cluster, the domain, the DNS target.
pub fn warnings(input: &RoutesInput) -> Vec<Warning> {
    let mut out = Vec::new();
    let plan = plan(input);
    for p in &input.prefixes {
        let net = p.net.trunc();
        for lan in &input.lan {
            let lan = lan.trunc();
            if lan.contains(&net) || net.contains(&lan) {
                out.push(Warning::LanOverlap {
                    prefix: net,
                    prefix_kind: p.kind,
                    lan,
                });
            }
        }
    }
    for p in &input.prefixes {
        let net = p.net.trunc();
        for r in &input.other_routes {
            let dst = r.dst.trunc();
            // A default route "overlaps" everything; a LAN given with --lan is warned about above.
            if dst.prefix_len() == 0 || input.lan.iter().any(|l| l.trunc() == dst) {
                continue;
            }
            if dst.contains(&net) || net.contains(&dst) {
                out.push(Warning::RouteOverlap {
                    prefix: net,
                    prefix_kind: p.kind,
                    route: dst,
                    detail: r.detail(),
                });
            }
        }
    }
    for (inner, outer) in &plan.contained {
        out.push(Warning::Contained {
            inner: inner.net.trunc(),
            inner_kind: inner.kind,
            outer: outer.net.trunc(),
            outer_kind: outer.kind,
        });
    }
    for family in [Family::V4, Family::V6] {
        let prefixes: Vec<IpNet> = plan
            .no_gateway
            .iter()
            .map(|p| p.net.trunc())
            .filter(|n| {
                matches!(
                    (family, n),
                    (Family::V4, IpNet::V4(_)) | (Family::V6, IpNet::V6(_))
                )
            })
            .collect();
        if !prefixes.is_empty() {
            out.push(Warning::NoGateway { family, prefixes });
        }
    }
    for p in input.prefixes.iter().filter(|p| p.guessed) {
        out.push(Warning::Guessed {
            prefix: p.net.trunc(),
            prefix_kind: p.kind,
            why: p.why.clone(),
        });
    }
    let gateways = [
        input.gateway_v4.map(IpAddr::V4),
        input.gateway_v6.map(IpAddr::V6),
    ];
    for gw in gateways.into_iter().flatten() {
        if let Some(p) = input.prefixes.iter().find(|p| p.net.contains(&gw)) {
            out.push(Warning::GatewayInCluster {
                gateway: gw,
                prefix: p.net.trunc(),
            });
        }
    }
    if !valid_domain(&input.cluster_domain) {
        out.push(Warning::InvalidDomain {
            domain: input.cluster_domain.clone(),
        });
    }
    if input.dns_server().is_none() {
        out.push(Warning::NoDnsTarget);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::ClusterPrefix;
    use crate::local::LocalRoute;

    fn input(prefixes: &[(&str, PrefixKind)]) -> RoutesInput {
        RoutesInput {
            prefixes: prefixes
                .iter()
                .map(|(n, k)| ClusterPrefix::new(n.parse().unwrap(), *k, "test"))
                .collect(),
            gateway_v4: Some("10.4.7.11".parse().unwrap()),
            cluster_domain: "cluster.local".into(),
            ..RoutesInput::default()
        }
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn overlap_with_the_lan_either_way() {
        let mut i = input(&[
            ("172.17.16.0/20", PrefixKind::Services),
            ("10.42.0.0/16", PrefixKind::Pods),
        ]);
        i.lan = vec![
            net("172.16.0.0/12"),
            net("10.42.7.0/24"),
            net("192.168.1.0/24"),
        ];
        let w = warnings(&i);
        assert_eq!(
            w,
            vec![
                Warning::LanOverlap {
                    prefix: net("172.17.16.0/20"),
                    prefix_kind: PrefixKind::Services,
                    lan: net("172.16.0.0/12"),
                },
                Warning::LanOverlap {
                    prefix: net("10.42.0.0/16"),
                    prefix_kind: PrefixKind::Pods,
                    lan: net("10.42.7.0/24"),
                },
            ]
        );
        assert!(
            w[0].to_string()
                .contains("LAN hosts in 172.17.16.0/20 become unreachable")
        );
        assert!(w[1].to_string().contains("10.42.7.0/24 stays on the LAN"));
    }

    #[test]
    fn overlap_with_a_local_route_but_not_the_default_route_or_a_lan() {
        let mut i = input(&[("172.17.32.0/19", PrefixKind::Pods)]);
        i.lan = vec![net("172.17.0.0/16")];
        i.other_routes = vec![
            LocalRoute {
                dst: net("0.0.0.0/0"),
                dev: "eth0".into(),
                gateway: Some("10.4.7.254".parse().unwrap()),
            },
            LocalRoute {
                dst: net("172.17.0.0/16"),
                dev: "lan0".into(),
                gateway: None,
            },
            LocalRoute {
                dst: net("172.17.40.0/24"),
                dev: "eth1".into(),
                gateway: Some("198.51.100.1".parse().unwrap()),
            },
            LocalRoute {
                dst: net("198.51.100.0/24"),
                dev: "eth1".into(),
                gateway: None,
            },
        ];
        let w: Vec<Warning> = warnings(&i)
            .into_iter()
            .filter(|w| matches!(w, Warning::RouteOverlap { .. }))
            .collect();
        assert_eq!(
            w,
            vec![Warning::RouteOverlap {
                prefix: net("172.17.32.0/19"),
                prefix_kind: PrefixKind::Pods,
                route: net("172.17.40.0/24"),
                detail: "via 198.51.100.1 dev eth1".into(),
            }]
        );
        assert!(
            w[0].to_string()
                .contains("overlaps this host's route 172.17.40.0/24 via 198.51.100.1 dev eth1"),
            "{}",
            w[0]
        );
    }

    #[test]
    fn contained_and_repeated_prefixes() {
        let i = input(&[
            ("172.17.32.0/19", PrefixKind::Pods),
            ("172.17.33.0/24", PrefixKind::Pods),
            ("172.17.32.0/19", PrefixKind::Services),
        ]);
        let w = warnings(&i);
        assert_eq!(
            w,
            vec![
                Warning::Contained {
                    inner: net("172.17.33.0/24"),
                    inner_kind: PrefixKind::Pods,
                    outer: net("172.17.32.0/19"),
                    outer_kind: PrefixKind::Pods,
                },
                Warning::Contained {
                    inner: net("172.17.32.0/19"),
                    inner_kind: PrefixKind::Services,
                    outer: net("172.17.32.0/19"),
                    outer_kind: PrefixKind::Pods,
                },
            ]
        );
        assert_eq!(
            w[1].to_string(),
            "172.17.32.0/19 is given twice (pods and services): one route is printed"
        );
    }

    #[test]
    fn gateway_family_guess_domain_and_target() {
        let mut i = input(&[
            ("172.17.32.0/19", PrefixKind::Pods),
            ("fd00:10:244::/56", PrefixKind::Pods),
        ]);
        i.prefixes[0].guessed = true;
        i.prefixes[0].why = "observed 12 pod IPs, widened to /19 (a guess)".into();
        i.gateway_v4 = Some("172.17.40.1".parse().unwrap());
        i.cluster_domain = "cluster local".into();
        let w = warnings(&i);
        assert!(w.contains(&Warning::NoGateway {
            family: Family::V6,
            prefixes: vec![net("fd00:10:244::/56")],
        }));
        assert!(w.contains(&Warning::GatewayInCluster {
            gateway: "172.17.40.1".parse().unwrap(),
            prefix: net("172.17.32.0/19"),
        }));
        assert!(w.iter().any(|w| w.to_string()
            == "the pods prefix 172.17.32.0/19 is guessed (observed 12 pod IPs, widened to /19): check it, or pass --pod-cidr with the real one"));
        assert!(w.contains(&Warning::InvalidDomain {
            domain: "cluster local".into()
        }));
        i.gateway_v4 = None;
        assert!(warnings(&i).contains(&Warning::NoDnsTarget));
    }
}
