//! Route planning: which prefixes to route into the cluster, checked against the host's
//! routes and addresses before anything changes. Pure: the caller reads the host's state
//! and installs the plan.
//!
//! Rules:
//! - Default routes (`0.0.0.0/0`, `::/0`) never conflict, and a default route is never
//!   planned.
//! - A cluster prefix that overlaps (contains, or lies inside) a local non-default route or
//!   the network of a local address is a conflict, unless the overlapping part is excluded
//!   (`--exclude`, which splits the cluster prefix into the prefixes covering the rest) or
//!   forced (`--force-route` covering the overlap).
//! - Every conflict is reported at once, each with the flags that resolve it.
//! - Addresses that must never enter the tunnel (the API server, the agent's direct
//!   address) but lie inside a planned prefix come back as `pinned`, for the caller to pin
//!   to their current path.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use super::prefix::{intersection, overlaps, subtract_all};
use super::{ClusterFacts, PrefixKind, Source};
pub use kubelan_routes::{LocalAddr, LocalRoute};

/// The user's say in the plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteOptions {
    /// `--exclude`: parts of cluster prefixes to leave to the host's existing routes.
    pub exclude: Vec<IpNet>,
    /// `--force-route`: overlaps to route into the cluster anyway.
    pub force_route: Vec<IpNet>,
    /// Addresses that must never enter the tunnel (the API server, the agent's direct
    /// address); those inside a planned prefix are returned in [`RoutePlan::pinned`].
    pub never_route: Vec<IpAddr>,
}

/// A route to add into the tunnel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedRoute {
    /// Destination. With `--force-route` it may equal or lie inside an existing route's
    /// destination; install it so that it takes precedence (a lower metric).
    pub dst: IpNet,
    /// Why it is routed, e.g. `pods: spec.podCIDRs of node node1`.
    pub why: String,
}

/// What to route, and what to know before doing it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RoutePlan {
    /// The routes to add, Service prefixes first, each prefix's pieces in address order.
    pub routes: Vec<PlannedRoute>,
    /// Addresses of [`RouteOptions::never_route`] inside a planned prefix: the caller pins
    /// them to their current path (a host route) before adding the plan.
    pub pinned: Vec<IpAddr>,
    /// Things the user should know: forced overlaps, prefixes excluded entirely, flags
    /// that matched nothing.
    pub warnings: Vec<String>,
}

/// A cluster prefix that overlaps the host's own routing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conflict {
    /// The cluster prefix.
    pub prefix: IpNet,
    /// What it overlaps: `route 172.17.32.0/24 via 198.51.100.1 dev eth0` or `address
    /// 172.17.33.5/24 on eth1`.
    pub with: String,
    /// The flags that resolve it: `--exclude 172.17.32.0/24 (leave it to eth0) or
    /// --force-route 172.17.32.0/19 (route it into the cluster anyway)`.
    pub fix: String,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cluster prefix {} overlaps {}; pass {}",
            self.prefix, self.with, self.fix
        )
    }
}

/// A cluster prefix to route, with its provenance.
struct Candidate<'a> {
    net: IpNet,
    kind: PrefixKind,
    source: &'a Source,
}

/// Something of the host's that a cluster prefix may overlap.
struct LocalItem {
    net: IpNet,
    dev: String,
    text: String,
    is_route: bool,
}

/// Plans the routes for `facts` on a host with `local_routes` and `local_addrs`.
///
/// # Errors
/// Every [`Conflict`] at once, when a cluster prefix overlaps a local route or address
/// that is neither excluded nor forced. Nothing should be changed then.
pub fn plan_routes(
    facts: &ClusterFacts,
    local_routes: &[LocalRoute],
    local_addrs: &[LocalAddr],
    opts: &RouteOptions,
) -> Result<RoutePlan, Vec<Conflict>> {
    let mut plan = RoutePlan::default();
    let excludes: Vec<IpNet> = opts.exclude.iter().map(IpNet::trunc).collect();
    let forces: Vec<IpNet> = opts.force_route.iter().map(IpNet::trunc).collect();

    // The cluster prefixes, without default routes and without prefixes another one holds.
    let mut candidates: Vec<Candidate<'_>> = Vec::new();
    for (kind, fact) in facts.prefixes() {
        let net = fact.value.trunc();
        if net.prefix_len() == 0 {
            plan.warnings.push(format!(
                "{net} ({kind}, {}) would replace the default route; not routed",
                fact.source
            ));
            continue;
        }
        if let Some(outer) = candidates.iter().find(|c| c.net.contains(&net)) {
            if outer.net != net || outer.kind != kind {
                plan.warnings.push(format!(
                    "{net} ({kind}) lies inside {} ({}); routed as part of it",
                    outer.net, outer.kind
                ));
            }
            continue;
        }
        for inner in candidates.iter().filter(|c| net.contains(&c.net)) {
            plan.warnings.push(format!(
                "{} ({}) lies inside {net} ({kind}); routed as part of it",
                inner.net, inner.kind
            ));
        }
        candidates.retain(|c| !net.contains(&c.net));
        candidates.push(Candidate {
            net,
            kind,
            source: &fact.source,
        });
    }
    for (flag, list) in [("--exclude", &excludes), ("--force-route", &forces)] {
        for x in list {
            if !candidates.iter().any(|c| overlaps(&c.net, x)) {
                plan.warnings
                    .push(format!("{flag} {x} matches no cluster prefix; ignored"));
            }
        }
    }

    let mut locals: Vec<LocalItem> = local_routes
        .iter()
        .filter(|r| r.dst.prefix_len() != 0)
        .map(|r| LocalItem {
            net: r.dst.trunc(),
            dev: r.dev.clone(),
            text: r.to_string(),
            is_route: true,
        })
        .collect();
    // An address whose connected route is listed conflicts through that route already.
    locals.extend(
        local_addrs
            .iter()
            .filter(|a| {
                !local_routes
                    .iter()
                    .any(|r| r.dst.trunc() == a.net.trunc() && r.dev == a.dev)
            })
            .map(|a| LocalItem {
                net: a.net.trunc(),
                dev: a.dev.clone(),
                text: a.to_string(),
                is_route: false,
            }),
    );

    let mut conflicts = Vec::new();
    for c in &candidates {
        let pieces = subtract_all(c.net, &excludes);
        let whole = format!("{}: {}", c.kind, c.source);
        if pieces.is_empty() {
            plan.warnings.push(format!(
                "{} ({}) is excluded entirely (--exclude); not routed",
                c.net, c.kind
            ));
            continue;
        }
        let why = if pieces == [c.net] {
            whole
        } else {
            let holes: Vec<String> = excludes
                .iter()
                .filter(|x| overlaps(x, &c.net))
                .map(ToString::to_string)
                .collect();
            format!(
                "part of {} ({}) left after --exclude {}",
                c.net,
                c.source,
                holes.join(", ")
            )
        };
        let mut extra = Vec::new();
        for local in &locals {
            let Some(overlap) = pieces.iter().find_map(|p| intersection(p, &local.net)) else {
                continue;
            };
            if forces.iter().any(|f| f.contains(&overlap)) {
                plan.warnings.push(format!(
                    "{} ({}) overlaps {}; routed into the cluster anyway (--force-route)",
                    c.net, c.kind, local.text
                ));
                // A more specific host route would still win: route that part too.
                if local.is_route
                    && pieces
                        .iter()
                        .any(|p| p.contains(&local.net) && *p != local.net)
                {
                    extra.push(PlannedRoute {
                        dst: local.net,
                        why: format!("{why}; forced over {}", local.text),
                    });
                }
            } else {
                conflicts.push(Conflict {
                    prefix: c.net,
                    with: local.text.clone(),
                    fix: format!(
                        "--exclude {overlap} (leave it to {}) or --force-route {} (route it into the cluster anyway)",
                        local.dev, c.net
                    ),
                });
            }
        }
        for dst in pieces {
            plan.routes.push(PlannedRoute {
                dst,
                why: why.clone(),
            });
        }
        plan.routes.extend(extra);
    }
    if !conflicts.is_empty() {
        return Err(conflicts);
    }
    let mut seen = Vec::new();
    plan.routes.retain(|r| {
        let new = !seen.contains(&r.dst);
        seen.push(r.dst);
        new
    });
    for ip in &opts.never_route {
        if plan.routes.iter().any(|r| r.dst.contains(ip)) && !plan.pinned.contains(ip) {
            plan.pinned.push(*ip);
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::super::tests::sample;
    use super::super::{Fact, Source};
    use super::*;

    fn n(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn route(dst: &str, gw: Option<&str>, dev: &str) -> LocalRoute {
        LocalRoute {
            dst: n(dst),
            dev: dev.into(),
            gateway: gw.map(|g| g.parse().unwrap()),
        }
    }

    fn addr(net: &str, dev: &str) -> LocalAddr {
        LocalAddr {
            dev: dev.into(),
            net: n(net),
        }
    }

    fn dsts(p: &RoutePlan) -> Vec<String> {
        p.routes.iter().map(|r| r.dst.to_string()).collect()
    }

    /// A laptop: default route over Wi-Fi, its LAN, docker's default bridge elsewhere.
    fn laptop() -> (Vec<LocalRoute>, Vec<LocalAddr>) {
        (
            vec![
                route("0.0.0.0/0", Some("192.168.1.1"), "wlan0"),
                route("192.168.1.0/24", None, "wlan0"),
                route("::/0", Some("fe80::1"), "wlan0"),
            ],
            vec![addr("192.168.1.23/24", "wlan0"), addr("127.0.0.1/8", "lo")],
        )
    }

    #[test]
    fn clean_host_routes_every_prefix_with_its_reason() {
        let (r, a) = laptop();
        let plan = plan_routes(&sample(), &r, &a, &RouteOptions::default()).unwrap();
        assert_eq!(
            dsts(&plan),
            ["172.17.16.0/20", "172.17.32.0/19", "10.42.0.0/16"]
        );
        assert_eq!(plan.routes[0].why, "services: ServiceCIDR \"kubernetes\"");
        assert_eq!(plan.routes[1].why, "pods: spec.podCIDRs of node node1");
        assert!(plan.routes[2].why.contains("(a guess)"));
        assert!(plan.warnings.is_empty() && plan.pinned.is_empty());
    }

    #[test]
    fn every_conflict_is_listed_with_its_fix() {
        let routes = vec![
            route("0.0.0.0/0", Some("198.51.100.1"), "eth0"),
            route("172.17.32.0/24", Some("198.51.100.1"), "eth0"),
            // A VPN route that holds the whole Service range.
            route("172.16.0.0/12", None, "tun9"),
        ];
        let addrs = vec![addr("10.42.7.5/24", "eth1")];
        let err = plan_routes(&sample(), &routes, &addrs, &RouteOptions::default()).unwrap_err();
        let got: Vec<String> = err.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "cluster prefix 172.17.16.0/20 overlaps route 172.16.0.0/12 dev tun9; pass --exclude 172.17.16.0/20 (leave it to tun9) or --force-route 172.17.16.0/20 (route it into the cluster anyway)",
                "cluster prefix 172.17.32.0/19 overlaps route 172.17.32.0/24 via 198.51.100.1 dev eth0; pass --exclude 172.17.32.0/24 (leave it to eth0) or --force-route 172.17.32.0/19 (route it into the cluster anyway)",
                "cluster prefix 172.17.32.0/19 overlaps route 172.16.0.0/12 dev tun9; pass --exclude 172.17.32.0/19 (leave it to tun9) or --force-route 172.17.32.0/19 (route it into the cluster anyway)",
                "cluster prefix 10.42.0.0/16 overlaps address 10.42.7.5/24 on eth1; pass --exclude 10.42.7.0/24 (leave it to eth1) or --force-route 10.42.0.0/16 (route it into the cluster anyway)",
            ]
        );
        assert_eq!(err[1].prefix, n("172.17.32.0/19"));
        assert_eq!(
            err[1].with,
            "route 172.17.32.0/24 via 198.51.100.1 dev eth0"
        );
    }

    #[test]
    fn default_routes_never_conflict() {
        let routes = vec![
            route("0.0.0.0/0", Some("10.42.0.1"), "eth0"),
            route("::/0", None, "eth0"),
        ];
        assert!(plan_routes(&sample(), &routes, &[], &RouteOptions::default()).is_ok());
    }

    #[test]
    fn exclude_splits_the_prefix_and_resolves_the_conflict() {
        let routes = vec![route("172.17.32.0/24", Some("198.51.100.1"), "eth0")];
        let opts = RouteOptions {
            exclude: vec![n("172.17.32.0/24")],
            ..RouteOptions::default()
        };
        let plan = plan_routes(&sample(), &routes, &[], &opts).unwrap();
        assert_eq!(
            dsts(&plan),
            [
                "172.17.16.0/20",
                "172.17.33.0/24",
                "172.17.34.0/23",
                "172.17.36.0/22",
                "172.17.40.0/21",
                "172.17.48.0/20",
                "10.42.0.0/16"
            ]
        );
        assert_eq!(
            plan.routes[1].why,
            "part of 172.17.32.0/19 (spec.podCIDRs of node node1) left after --exclude 172.17.32.0/24"
        );
        // Excluding a whole prefix drops it, with a warning.
        let opts = RouteOptions {
            exclude: vec![n("10.0.0.0/8")],
            ..RouteOptions::default()
        };
        let plan = plan_routes(&sample(), &[], &[], &opts).unwrap();
        assert!(!dsts(&plan).contains(&"10.42.0.0/16".to_string()));
        assert_eq!(
            plan.warnings,
            ["10.42.0.0/16 (pods) is excluded entirely (--exclude); not routed"]
        );
    }

    #[test]
    fn force_route_routes_over_the_host_and_says_so() {
        let routes = vec![route("172.17.32.0/24", Some("198.51.100.1"), "eth0")];
        let addrs = vec![addr("172.17.33.5/24", "eth1")];
        let opts = RouteOptions {
            force_route: vec![n("172.17.32.0/19")],
            ..RouteOptions::default()
        };
        let plan = plan_routes(&sample(), &routes, &addrs, &opts).unwrap();
        // The more specific host route would win over the /19: its part is routed too.
        assert_eq!(
            dsts(&plan),
            [
                "172.17.16.0/20",
                "172.17.32.0/19",
                "172.17.32.0/24",
                "10.42.0.0/16"
            ]
        );
        assert!(
            plan.routes[2]
                .why
                .ends_with("; forced over route 172.17.32.0/24 via 198.51.100.1 dev eth0")
        );
        assert_eq!(plan.warnings.len(), 2);
        assert!(plan.warnings[1].contains("overlaps address 172.17.33.5/24 on eth1"));
        // Forcing only the overlapping part is enough too; the rest still conflicts.
        let opts = RouteOptions {
            force_route: vec![n("172.17.32.0/24")],
            ..RouteOptions::default()
        };
        let err = plan_routes(&sample(), &routes, &addrs, &opts).unwrap_err();
        assert_eq!(err.len(), 1);
        assert_eq!(err[0].with, "address 172.17.33.5/24 on eth1");
    }

    #[test]
    fn connected_routes_and_addresses_conflict_once() {
        let routes = vec![route("172.17.33.0/24", None, "eth1")];
        let addrs = vec![addr("172.17.33.5/24", "eth1")];
        let err = plan_routes(&sample(), &routes, &addrs, &RouteOptions::default()).unwrap_err();
        assert_eq!(err.len(), 1);
        assert_eq!(err[0].with, "route 172.17.33.0/24 dev eth1");
    }

    #[test]
    fn never_route_addresses_are_pinned() {
        let opts = RouteOptions {
            never_route: vec![
                "172.17.33.9".parse().unwrap(),
                "203.0.113.7".parse().unwrap(),
                "172.17.33.9".parse().unwrap(),
            ],
            ..RouteOptions::default()
        };
        let plan = plan_routes(&sample(), &[], &[], &opts).unwrap();
        assert_eq!(plan.pinned, ["172.17.33.9".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn no_default_routes_and_no_nested_duplicates() {
        let mut f = sample();
        f.pod_cidrs.push(Fact::new(
            n("0.0.0.0/0"),
            Source::Flag {
                flag: "--pod-cidr".into(),
            },
        ));
        f.pod_cidrs.push(Fact::new(
            n("172.17.40.0/24"),
            Source::Flag {
                flag: "--pod-cidr".into(),
            },
        ));
        f.service_cidrs.push(Fact::new(
            n("172.17.0.0/16"),
            Source::Flag {
                flag: "--service-cidr".into(),
            },
        ));
        let plan = plan_routes(&f, &[], &[], &RouteOptions::default()).unwrap();
        assert_eq!(dsts(&plan), ["172.17.0.0/16", "10.42.0.0/16"]);
        assert_eq!(
            plan.warnings,
            [
                "172.17.16.0/20 (services) lies inside 172.17.0.0/16 (services); routed as part of it",
                "172.17.32.0/19 (pods) lies inside 172.17.0.0/16 (services); routed as part of it",
                "0.0.0.0/0 (pods, --pod-cidr flag) would replace the default route; not routed",
                "172.17.40.0/24 (pods) lies inside 172.17.0.0/16 (services); routed as part of it",
            ]
        );
    }

    #[test]
    fn flags_that_match_nothing_are_reported() {
        let opts = RouteOptions {
            exclude: vec![n("192.0.2.0/24")],
            force_route: vec![n("198.51.100.0/24")],
            ..RouteOptions::default()
        };
        let plan = plan_routes(&sample(), &[], &[], &opts).unwrap();
        assert_eq!(
            plan.warnings,
            [
                "--exclude 192.0.2.0/24 matches no cluster prefix; ignored",
                "--force-route 198.51.100.0/24 matches no cluster prefix; ignored"
            ]
        );
    }

    #[test]
    fn ipv6_prefixes() {
        let f = ClusterFacts {
            service_cidrs: vec![Fact::new(
                n("fd00:10:96::/108"),
                Source::InvalidClusterIpProbe,
            )],
            pod_cidrs: vec![],
            ..sample()
        };
        let routes = vec![route("fd00:10:96::/112", None, "eth0")];
        let err = plan_routes(&f, &routes, &[], &RouteOptions::default()).unwrap_err();
        assert!(err[0].fix.starts_with("--exclude fd00:10:96::/112"));
        let opts = RouteOptions {
            exclude: vec![n("fd00:10:96::/112")],
            ..RouteOptions::default()
        };
        let plan = plan_routes(&f, &routes, &[], &opts).unwrap();
        assert_eq!(plan.routes.len(), 4);
        assert!(
            plan.routes
                .iter()
                .all(|r| !overlaps(&r.dst, &n("fd00:10:96::/112")))
        );
    }
}
