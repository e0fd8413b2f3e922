//! The host plan: from the cluster's facts, this machine's routes and addresses and the
//! mode's options to the list of host changes (TUN, routes, DNS, sysctls, nftables tables)
//! — decided here, without touching the machine, so every decision is a unit test; made by
//! `serve` through the host guard.
//!
//! Refusals come before any change: cluster prefixes that overlap a local network (naming
//! the flag that resolves each), nothing left to route, a `--lan` that overlaps the cluster,
//! a node gateway without IPv4 prefixes.

use std::fmt;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};
use kubelan_cluster::discovery::{
    self, ClusterFacts, Conflict, LocalAddr, LocalRoute, RouteOptions, RoutePlan,
};

/// The TUN device of `connect` and of a tunnel gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunSpec {
    /// Device name.
    pub name: String,
    /// MTU (TCP segments are sized to fit it).
    pub mtu: u16,
}

/// Which mode the plan is for, with what only that mode needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanMode {
    /// `kubelan connect`: this machine reaches the cluster through the TUN.
    Connect {
        /// `--no-dns`: leave this machine's resolver configuration alone.
        no_dns: bool,
        /// The namespace bare names resolve in (the first search domain).
        namespace: String,
    },
    /// `kubelan gateway --mode tunnel`: `connect`, forwarding the LANs into the TUN, with
    /// DNS on the LAN address instead of this machine's resolver configuration.
    TunnelGateway {
        /// The LANs served.
        lans: Vec<IpNet>,
        /// `--no-dns`: no DNS server on the LAN.
        no_dns: bool,
    },
    /// `kubelan gateway --mode node`: this host reaches pods already; kernel forwarding and
    /// SNAT in kubelan's nftables table, DNS on the LAN address.
    NodeGateway {
        /// The LANs served.
        lans: Vec<IpNet>,
        /// Masquerade LAN traffic to this host (`--no-snat` turns it off).
        snat: bool,
        /// `--no-dns`: no DNS server on the LAN.
        no_dns: bool,
    },
}

/// Everything [`plan`] decides from.
#[derive(Debug, Clone)]
pub struct PlanInput<'a> {
    /// The cluster's prefixes, domain and DNS address.
    pub facts: &'a ClusterFacts,
    /// This machine's routes (main table, unicast, not through our own TUN).
    pub local_routes: &'a [LocalRoute],
    /// This machine's addresses (not loopback, not our own TUN).
    pub local_addrs: &'a [LocalAddr],
    /// `--exclude`, `--force-route` and the addresses that must never enter the tunnel.
    pub routes: &'a RouteOptions,
    /// The TUN (ignored by a node gateway).
    pub tun: TunSpec,
    /// The mode.
    pub mode: PlanMode,
}

/// DNS configured on this machine's resolver (`connect`): cluster names to the cluster DNS
/// address on the TUN link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDns {
    /// The link the settings belong to (the TUN).
    pub link: String,
    /// The cluster DNS address.
    pub server: IpAddr,
    /// Domains routed to it.
    pub routing_domains: Vec<String>,
    /// Search domains (`<ns>.svc.<domain>`, `svc.<domain>`, `<domain>`).
    pub search: Vec<String>,
}

/// A DNS server on the LAN address (a gateway): cluster names to the cluster DNS, other
/// names to this host's resolvers, only for the LANs (and this host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanDnsPlan {
    /// The cluster domain.
    pub domain: String,
    /// The cluster DNS address, when known.
    pub cluster_dns: Option<IpAddr>,
    /// The LANs it answers.
    pub lans: Vec<IpNet>,
    /// Cluster names go through the tunnel (tunnel gateway), else straight to the cluster
    /// DNS (node gateway).
    pub through_tunnel: bool,
}

/// The DNS part of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsChange {
    /// Nothing configured.
    Off,
    /// `connect`'s split DNS on this machine.
    Host(HostDns),
    /// A gateway's DNS server on the LAN.
    Lan(LanDnsPlan),
}

/// A kernel parameter to set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysctlChange {
    /// Dotted key.
    pub key: String,
    /// Value to write.
    pub value: String,
}

/// An nftables table to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NftChange {
    /// `inet kubelan_connect`: TCP to the routed prefixes redirected to kubelan's listeners
    /// (ports chosen when they are bound); with `lan`, forwarded LAN traffic too.
    Redirect {
        /// The routed prefixes.
        cluster: Vec<IpNet>,
        /// Addresses inside them that keep their own path.
        skip: Vec<IpNet>,
        /// LAN sources whose forwarded TCP is redirected (a tunnel gateway).
        lan: Vec<IpNet>,
    },
    /// `ip kubelan`: a node gateway's forwarding, counting and SNAT.
    Gateway {
        /// The IPv4 LANs.
        lan: Vec<Ipv4Net>,
        /// The IPv4 cluster prefixes.
        cluster: Vec<Ipv4Net>,
        /// Masquerade to this host.
        snat: bool,
    },
}

/// Something the user should know about the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanWarning {
    /// From route planning: a forced overlap, a prefix excluded entirely, a flag that
    /// matched nothing.
    Route(String),
    /// A node gateway does not forward this IPv6 prefix.
    Ipv6NotForwarded(IpNet),
}

/// The host changes of one run, in the order they are made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPlan {
    /// The TUN device (`connect`, tunnel gateway).
    pub tun: Option<TunSpec>,
    /// Routes into the TUN and addresses pinned to their current path (empty for a node
    /// gateway).
    pub routes: RoutePlan,
    /// A host route for the cluster DNS address into the TUN, when no routed prefix holds it.
    pub dns_route: Option<IpNet>,
    /// No cluster DNS address is known (`connect` and tunnel gateway warn about it).
    pub dns_missing: bool,
    /// DNS.
    pub dns: DnsChange,
    /// Kernel parameters.
    pub sysctls: Vec<SysctlChange>,
    /// nftables tables.
    pub nft: Vec<NftChange>,
    /// Warnings, in the order they are shown.
    pub warnings: Vec<PlanWarning>,
}

impl HostPlan {
    /// Every prefix sent into the TUN: the planned routes, then the DNS route.
    pub fn routed(&self) -> Vec<IpNet> {
        self.routes
            .routes
            .iter()
            .map(|r| r.dst)
            .chain(self.dns_route)
            .collect()
    }

    /// The LANs whose forwarded traffic enters the TUN (a tunnel gateway); empty for
    /// `connect` and a node gateway.
    pub fn lans(&self) -> &[IpNet] {
        self.nft
            .iter()
            .find_map(|n| match n {
                NftChange::Redirect { lan, .. } => Some(lan.as_slice()),
                NftChange::Gateway { .. } => None,
            })
            .unwrap_or(&[])
    }
}

/// Why nothing may be changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// Cluster prefixes overlap local routes or addresses.
    #[error("cluster prefixes overlap this machine's networks; nothing was changed:{}", bullets(.0))]
    Conflicts(Vec<Conflict>),
    /// Every cluster prefix was excluded (or none is known).
    #[error("no cluster prefix left to route (all excluded?); pass --pod-cidr / --service-cidr")]
    NothingToRoute {
        /// Warnings shown before the refusal.
        warnings: Vec<PlanWarning>,
    },
    /// A `--lan` shares addresses with a cluster prefix.
    #[error(
        "--lan {lan} overlaps the cluster's {kind} prefix {prefix} ({origin}); a LAN must not share addresses with the cluster. Nothing was changed."
    )]
    LanOverlap {
        /// The LAN.
        lan: IpNet,
        /// `services` or `pods`.
        kind: String,
        /// The cluster prefix.
        prefix: IpNet,
        /// Where the prefix came from.
        origin: String,
        /// Warnings shown before the refusal.
        warnings: Vec<PlanWarning>,
    },
    /// A node gateway forwards IPv4 only.
    #[error("node mode needs IPv4 LAN and cluster prefixes; nothing was changed")]
    NodeNeedsIpv4 {
        /// Warnings shown before the refusal.
        warnings: Vec<PlanWarning>,
    },
}

impl PlanError {
    /// The warnings to show before the refusal.
    pub fn warnings(&self) -> &[PlanWarning] {
        match self {
            PlanError::Conflicts(_) => &[],
            PlanError::NothingToRoute { warnings }
            | PlanError::LanOverlap { warnings, .. }
            | PlanError::NodeNeedsIpv4 { warnings } => warnings,
        }
    }
}

impl fmt::Display for PlanWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanWarning::Route(w) => f.write_str(w),
            PlanWarning::Ipv6NotForwarded(n) => {
                write!(f, "{n}: IPv6 is not forwarded by node mode")
            }
        }
    }
}

fn bullets(conflicts: &[Conflict]) -> String {
    conflicts.iter().map(|c| format!("\n  • {c}")).collect()
}

/// Decides the host changes, or why none may be made.
///
/// # Errors
/// [`PlanError`] when a check fails; nothing has been changed then.
pub fn plan(input: &PlanInput<'_>) -> Result<HostPlan, PlanError> {
    match &input.mode {
        PlanMode::NodeGateway { lans, snat, no_dns } => node(input.facts, lans, *snat, *no_dns),
        PlanMode::Connect { .. } | PlanMode::TunnelGateway { .. } => tunnel(input),
    }
}

/// The refusal for a `--lan` that overlaps a cluster prefix (their traffic would be taken
/// for the cluster's own, and pod-to-pod traffic for the LAN's).
fn lan_overlap(
    lans: &[IpNet],
    facts: &ClusterFacts,
    warnings: &[PlanWarning],
) -> Result<(), PlanError> {
    for l in lans {
        for (kind, f) in facts.prefixes() {
            let c = f.value;
            if l.contains(&c) || c.contains(l) {
                return Err(PlanError::LanOverlap {
                    lan: *l,
                    kind: kind.to_string(),
                    prefix: c,
                    origin: f.source.to_string(),
                    warnings: warnings.to_vec(),
                });
            }
        }
    }
    Ok(())
}

fn tunnel(input: &PlanInput<'_>) -> Result<HostPlan, PlanError> {
    let facts = input.facts;
    let routes = discovery::plan_routes(facts, input.local_routes, input.local_addrs, input.routes)
        .map_err(PlanError::Conflicts)?;
    let warnings: Vec<PlanWarning> = routes
        .warnings
        .iter()
        .cloned()
        .map(PlanWarning::Route)
        .collect();
    if routes.routes.is_empty() {
        return Err(PlanError::NothingToRoute { warnings });
    }
    let lans: &[IpNet] = match &input.mode {
        PlanMode::TunnelGateway { lans, .. } => lans,
        _ => &[],
    };
    lan_overlap(lans, facts, &warnings)?;
    let domain = facts.cluster_domain.value.trim_matches('.').to_string();
    let dns_ip = facts.dns_server.as_ref().map(|f| f.value);
    let dns_route = dns_ip
        .filter(|ip| !routes.routes.iter().any(|r| r.dst.contains(ip)))
        .map(IpNet::from);
    let dns = match (&input.mode, dns_ip) {
        (
            PlanMode::Connect {
                no_dns: false,
                namespace,
            },
            Some(server),
        ) => DnsChange::Host(HostDns {
            link: input.tun.name.clone(),
            server,
            routing_domains: vec![domain.clone()],
            search: vec![
                format!("{namespace}.svc.{domain}"),
                format!("svc.{domain}"),
                domain.clone(),
            ],
        }),
        (
            PlanMode::TunnelGateway {
                lans,
                no_dns: false,
            },
            cluster_dns,
        ) => DnsChange::Lan(LanDnsPlan {
            domain: domain.clone(),
            cluster_dns,
            lans: lans.clone(),
            through_tunnel: true,
        }),
        _ => DnsChange::Off,
    };
    let mut plan = HostPlan {
        tun: Some(input.tun.clone()),
        routes,
        dns_route,
        dns_missing: dns_ip.is_none(),
        dns,
        sysctls: Vec::new(),
        nft: Vec::new(),
        warnings,
    };
    if !lans.is_empty() {
        plan.sysctls.push(ip_forward());
    }
    plan.nft.push(NftChange::Redirect {
        cluster: plan.routed(),
        skip: plan
            .routes
            .pinned
            .iter()
            .map(|ip| IpNet::from(*ip))
            .collect(),
        lan: lans.to_vec(),
    });
    Ok(plan)
}

fn ip_forward() -> SysctlChange {
    SysctlChange {
        key: "net.ipv4.ip_forward".into(),
        value: "1".into(),
    }
}

fn v4_only(nets: impl Iterator<Item = IpNet>) -> (Vec<Ipv4Net>, Vec<IpNet>) {
    let mut v4 = Vec::new();
    let mut other = Vec::new();
    for n in nets {
        match n {
            IpNet::V4(n) => v4.push(n),
            IpNet::V6(_) => other.push(n),
        }
    }
    (v4, other)
}

fn node(
    facts: &ClusterFacts,
    lans: &[IpNet],
    snat: bool,
    no_dns: bool,
) -> Result<HostPlan, PlanError> {
    lan_overlap(lans, facts, &[])?;
    let (lan4, lan_other) = v4_only(lans.iter().copied());
    let (cluster4, cluster_other) = v4_only(facts.prefixes().map(|(_, f)| f.value));
    let warnings: Vec<PlanWarning> = lan_other
        .iter()
        .chain(&cluster_other)
        .map(|n| PlanWarning::Ipv6NotForwarded(*n))
        .collect();
    if lan4.is_empty() || cluster4.is_empty() {
        return Err(PlanError::NodeNeedsIpv4 { warnings });
    }
    let dns_ip = facts.dns_server.as_ref().map(|f| f.value);
    let dns = match dns_ip {
        Some(ip) if !no_dns => DnsChange::Lan(LanDnsPlan {
            domain: facts.cluster_domain.value.trim_matches('.').to_string(),
            cluster_dns: Some(ip),
            lans: lans.to_vec(),
            through_tunnel: false,
        }),
        _ => DnsChange::Off,
    };
    Ok(HostPlan {
        tun: None,
        routes: RoutePlan::default(),
        dns_route: None,
        dns_missing: dns_ip.is_none(),
        dns,
        sysctls: vec![ip_forward()],
        nft: vec![NftChange::Gateway {
            lan: lan4,
            cluster: cluster4,
            snat,
        }],
        warnings,
    })
}

fn join<T: fmt::Display>(v: &[T]) -> String {
    v.iter().map(T::to_string).collect::<Vec<_>>().join(", ")
}

impl fmt::Display for HostPlan {
    /// One change per line, in the order they are made (what the golden tests compare).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for w in &self.warnings {
            writeln!(f, "warning  {w}")?;
        }
        if let Some(t) = &self.tun {
            writeln!(f, "tun      {} mtu {}", t.name, t.mtu)?;
        }
        for p in &self.routes.pinned {
            writeln!(f, "pin      {p} (its current path)")?;
        }
        for r in &self.routes.routes {
            writeln!(f, "route    {} → tun ({})", r.dst, r.why)?;
        }
        if let Some(r) = &self.dns_route {
            writeln!(f, "route    {r} → tun (cluster DNS)")?;
        }
        if self.dns_missing {
            writeln!(f, "dns      no cluster DNS address known")?;
        }
        match &self.dns {
            DnsChange::Off => writeln!(f, "dns      off")?,
            DnsChange::Host(h) => writeln!(
                f,
                "dns      host: {} → {} on {}; search {}",
                h.routing_domains.join(" "),
                h.server,
                h.link,
                h.search.join(" ")
            )?,
            DnsChange::Lan(l) => writeln!(
                f,
                "dns      lan: *.{} → {} ({}), for {}",
                l.domain,
                l.cluster_dns
                    .map_or_else(|| "nobody".to_string(), |ip| ip.to_string()),
                if l.through_tunnel {
                    "through the tunnel"
                } else {
                    "direct"
                },
                join(&l.lans)
            )?,
        }
        for s in &self.sysctls {
            writeln!(f, "sysctl   {} = {}", s.key, s.value)?;
        }
        for n in &self.nft {
            match n {
                NftChange::Redirect { cluster, skip, lan } => writeln!(
                    f,
                    "nft      inet redirect: tcp to {} except {}; from this host{}",
                    join(cluster),
                    if skip.is_empty() {
                        "nothing".to_string()
                    } else {
                        join(skip)
                    },
                    if lan.is_empty() {
                        String::new()
                    } else {
                        format!(" and {}", join(lan))
                    }
                )?,
                NftChange::Gateway { lan, cluster, snat } => writeln!(
                    f,
                    "nft      ip gateway: {} → {}{}",
                    join(lan),
                    join(cluster),
                    if *snat { ", masqueraded" } else { "" }
                )?,
            }
        }
        Ok(())
    }
}
