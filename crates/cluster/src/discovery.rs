//! Cluster discovery with provenance: the Service and Pod CIDRs kubelan routes, the cluster
//! domain and the cluster DNS Service, each with where it came from, so that every route
//! can answer "why is this routed?" ([`why`]).
//!
//! [`discover`] tries the sources of each fact in order; the first one that yields
//! something wins, and every source tried without result leaves a note saying why
//! (missing API, missing permission and the verb to grant, nothing there):
//!
//! - Service CIDRs: ServiceCIDR objects → kube-apiserver's `--service-cluster-ip-range`
//!   (static pods) → the range named in the API server's rejection of a dry-run Service
//!   with an out-of-range ClusterIP → the ClusterIPs of existing Services, widened (a
//!   guess) → `--service-cidr`.
//! - Pod CIDRs: the nodes' `spec.podCIDRs` → Calico IPPools → Flannel's `net-conf.json` →
//!   the IPs of existing pods, widened (a guess) → `--pod-cidr`.
//! - Cluster domain: `--cluster-domain`, else `cluster.local` until the agent confirms it.
//! - DNS server: `--dns-server`, else the ClusterIP of `kube-system/kube-dns`.
//!
//! A flag replaces discovery of its fact. Only an unreachable API server (or rejected
//! credentials) is an error.
//!
//! [`plan`] turns the facts into routes for the host, checking them against its routes
//! and addresses first; it does no I/O. [`nodes`] reads the nodes' addresses and Calico's
//! BGP configuration for `kubelan routes` and `kubelan doctor`; [`routes`] gathers what
//! `kubelan routes` prints from (facts, node addresses, the `--bgp` input).

pub mod nodes;
pub(crate) mod parse;
pub mod plan;
pub(crate) mod prefix;
pub mod routes;
mod sources;

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

use crate::error::ClusterError;
use crate::kubeconfig::ClusterClient;

pub use plan::{
    Conflict, LocalAddr, LocalRoute, PlannedRoute, RouteOptions, RoutePlan, plan_routes,
};

/// The cluster domain assumed until someone says otherwise.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

/// Where a fact came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Source {
    /// A ServiceCIDR object (`networking.k8s.io`, Kubernetes 1.33+, or v1beta1 on 1.31 and
    /// 1.32 with the feature on).
    ServiceCidrObject {
        /// The object's name (`kubernetes` for the one made from the flags).
        name: String,
    },
    /// kube-apiserver's `--service-cluster-ip-range` flag, read from its static pod.
    ApiServerFlag {
        /// `kube-system/<pod>`.
        pod: String,
    },
    /// The range named by the API server when refusing a dry-run Service with a ClusterIP
    /// outside it.
    InvalidClusterIpProbe,
    /// The ClusterIPs of existing Services, widened to the smallest sane prefix (a guess).
    ObservedClusterIps {
        /// How many distinct ClusterIPs the prefix was built from.
        count: usize,
        /// The prefix length it was widened to.
        prefix_len: u8,
    },
    /// Nodes' `spec.podCIDRs` (several when exactly adjacent ones were merged).
    NodePodCidr {
        /// The nodes whose Pod CIDRs make up the prefix.
        nodes: Vec<String>,
    },
    /// A Calico IPPool.
    CalicoIpPool {
        /// The pool's name.
        name: String,
    },
    /// `Network` / `IPv6Network` of Flannel's `net-conf.json`.
    FlannelNetConf {
        /// `namespace/name` of the ConfigMap.
        configmap: String,
    },
    /// The IPs of existing pods (not host-network ones), widened (a guess).
    ObservedPodIps {
        /// How many distinct pod IPs the prefix was built from.
        count: usize,
        /// The prefix length it was widened to.
        prefix_len: u8,
    },
    /// A command-line flag.
    Flag {
        /// The flag, e.g. `--pod-cidr`.
        flag: String,
    },
    /// The ClusterIP of the cluster DNS Service.
    DnsService {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// The search path of the agent pod's `/etc/resolv.conf` (set by callers that ask the
    /// agent).
    AgentResolvConf {
        /// `namespace/name` of the agent pod.
        pod: String,
    },
    /// What the agent announced in its session facts (its own flags or discovery),
    /// used when there is no Kubernetes API to ask (a standalone agent).
    Agent {
        /// The agent's pod (`namespace/name`) or host name.
        agent: String,
    },
    /// A default, not confirmed by the cluster.
    Default,
}

impl fmt::Display for Source {
    /// A short phrase: `ServiceCIDR "kubernetes"`, `spec.podCIDRs of node node1`,
    /// `observed 12 ClusterIPs, widened to /16 (a guess)`, `--pod-cidr flag`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ServiceCidrObject { name } => write!(f, "ServiceCIDR {name:?}"),
            Self::ApiServerFlag { pod } => {
                write!(f, "kube-apiserver --service-cluster-ip-range (pod {pod})")
            }
            Self::InvalidClusterIpProbe => write!(
                f,
                "range named by the API server when refusing an out-of-range ClusterIP (dry run)"
            ),
            Self::ObservedClusterIps { count, prefix_len } => write!(
                f,
                "observed {count} ClusterIP{}, widened to /{prefix_len} (a guess)",
                plural(*count)
            ),
            Self::NodePodCidr { nodes } => {
                let (head, more) = nodes.split_at(nodes.len().min(3));
                write!(
                    f,
                    "spec.podCIDRs of node{} {}",
                    plural(nodes.len()),
                    head.join(", ")
                )?;
                if !more.is_empty() {
                    write!(f, " and {} more", more.len())?;
                }
                Ok(())
            }
            Self::CalicoIpPool { name } => write!(f, "Calico IPPool {name:?}"),
            Self::FlannelNetConf { configmap } => {
                write!(f, "Flannel net-conf.json (ConfigMap {configmap})")
            }
            Self::ObservedPodIps { count, prefix_len } => write!(
                f,
                "observed {count} pod IP{}, widened to /{prefix_len} (a guess)",
                plural(*count)
            ),
            Self::Flag { flag } => write!(f, "{flag} flag"),
            Self::DnsService { namespace, name } => {
                write!(f, "ClusterIP of Service {namespace}/{name}")
            }
            Self::AgentResolvConf { pod } => {
                write!(f, "/etc/resolv.conf of agent pod {pod}")
            }
            Self::Agent { agent } => write!(f, "announced by the agent {agent}"),
            Self::Default => write!(f, "default, not confirmed by the cluster"),
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// A value with its provenance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fact<T> {
    /// The value.
    pub value: T,
    /// Where it came from.
    pub source: Source,
    /// Whether it is a guess (observed addresses widened, a default) rather than read.
    pub guessed: bool,
}

impl<T> Fact<T> {
    /// A fact read from `source`.
    pub fn new(value: T, source: Source) -> Self {
        Self {
            value,
            source,
            guessed: false,
        }
    }

    /// A guess based on `source`.
    pub fn guess(value: T, source: Source) -> Self {
        Self {
            value,
            source,
            guessed: true,
        }
    }
}

impl<T: Serialize> Serialize for Fact<T> {
    /// `{"value": ..., "source": {"kind": ..., ...}, "source_text": "...", "guessed": bool}`.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Fact", 4)?;
        st.serialize_field("value", &self.value)?;
        st.serialize_field("source", &self.source)?;
        st.serialize_field("source_text", &self.source.to_string())?;
        st.serialize_field("guessed", &self.guessed)?;
        st.end()
    }
}

/// What a cluster prefix holds (the one kind `kubelan-routes` renders too).
pub use kubelan_routes::PrefixKind;

/// Everything discovery found out, with provenance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterFacts {
    /// Service (ClusterIP) ranges.
    pub service_cidrs: Vec<Fact<IpNet>>,
    /// Pod ranges.
    pub pod_cidrs: Vec<Fact<IpNet>>,
    /// The cluster DNS domain.
    pub cluster_domain: Fact<String>,
    /// The cluster DNS server (the DNS Service's ClusterIP).
    pub dns_server: Option<Fact<IpAddr>>,
    /// What was tried without result and why, e.g. `ServiceCIDR objects: API not served
    /// (cluster older than 1.33)`, or a missing permission with its fix.
    pub notes: Vec<String>,
}

impl ClusterFacts {
    /// Every prefix with its kind: Services first, then pods.
    pub fn prefixes(&self) -> impl Iterator<Item = (PrefixKind, &Fact<IpNet>)> {
        self.service_cidrs
            .iter()
            .map(|f| (PrefixKind::Services, f))
            .chain(self.pod_cidrs.iter().map(|f| (PrefixKind::Pods, f)))
    }
}

impl fmt::Display for ClusterFacts {
    /// A table of prefixes (prefix, kind, source; guesses flagged), then the cluster
    /// domain, the DNS server and the notes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows: Vec<(String, String, String)> = self
            .prefixes()
            .map(|(kind, fact)| {
                let mark = if fact.guessed { " [guessed]" } else { "" };
                (
                    fact.value.to_string(),
                    kind.to_string(),
                    format!("{}{mark}", fact.source),
                )
            })
            .collect();
        if rows.is_empty() {
            writeln!(f, "no Pod or Service CIDRs known")?;
        } else {
            let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(6);
            let w1 = rows.iter().map(|r| r.1.len()).max().unwrap_or(0).max(4);
            writeln!(f, "{:<w0$}  {:<w1$}  SOURCE", "PREFIX", "KIND")?;
            for (p, k, s) in &rows {
                writeln!(f, "{p:<w0$}  {k:<w1$}  {s}")?;
            }
        }
        let guessed = |g: bool| if g { " [guessed]" } else { "" };
        writeln!(
            f,
            "cluster domain: {} ({}){}",
            self.cluster_domain.value,
            self.cluster_domain.source,
            guessed(self.cluster_domain.guessed)
        )?;
        match &self.dns_server {
            Some(d) => writeln!(
                f,
                "DNS server: {} ({}){}",
                d.value,
                d.source,
                guessed(d.guessed)
            )?,
            None => writeln!(f, "DNS server: unknown")?,
        }
        if self.prefixes().any(|(_, p)| p.guessed) {
            writeln!(
                f,
                "guessed prefixes are widened from the addresses in use; check them, or pass --service-cidr / --pod-cidr"
            )?;
        }
        if !self.notes.is_empty() {
            writeln!(f, "notes:")?;
            for n in &self.notes {
                writeln!(f, "  - {n}")?;
            }
        }
        Ok(())
    }
}

/// Facts given on the command line; each one given replaces discovery of that fact.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiscoveryOverrides {
    /// `--service-cidr` (repeatable).
    pub service_cidrs: Vec<IpNet>,
    /// `--pod-cidr` (repeatable).
    pub pod_cidrs: Vec<IpNet>,
    /// `--cluster-domain`.
    pub cluster_domain: Option<String>,
    /// `--dns-server`.
    pub dns_server: Option<IpAddr>,
}

/// Discovers the cluster's facts (see the [module docs](self) for the sources and their
/// order). Flags in `overrides` replace discovery of their fact; when every fact is given,
/// the API is not contacted at all. The probe Service is created in `cluster.namespace`
/// as a dry run and never stored.
///
/// # Errors
/// [`ClusterError::Unreachable`] when the API server cannot be reached and
/// [`ClusterError::Unauthorized`] when it rejects the credentials, both naming the context
/// and the server. Missing permissions, missing APIs and anything else a source answers
/// are notes in the result, not errors.
pub async fn discover(
    cluster: &ClusterClient,
    overrides: &DiscoveryOverrides,
) -> Result<ClusterFacts, ClusterError> {
    let mut d = sources::Discoverer::new(cluster);

    let service_cidrs = if overrides.service_cidrs.is_empty() {
        let mut found = d.service_cidr_objects().await?;
        if found.is_empty() {
            found = d.api_server_flags().await?;
        }
        if found.is_empty() {
            found = d.invalid_cluster_ip_probe().await?;
        }
        if found.is_empty() {
            found = d.observed_cluster_ips().await?;
        }
        if found.is_empty() {
            d.notes
                .push("Service CIDR: not found; pass --service-cidr CIDR".into());
        }
        found
    } else {
        flag_facts(&overrides.service_cidrs, "--service-cidr")
    };

    let pod_cidrs = if overrides.pod_cidrs.is_empty() {
        let mut found = d.node_pod_cidrs().await?;
        if found.is_empty() {
            found = d.calico_ip_pools().await?;
        }
        if found.is_empty() {
            found = d.flannel_net_conf().await?;
        }
        if found.is_empty() {
            found = d.observed_pod_ips().await?;
        }
        if found.is_empty() {
            d.notes
                .push("Pod CIDR: not found; pass --pod-cidr CIDR".into());
        }
        found
    } else {
        flag_facts(&overrides.pod_cidrs, "--pod-cidr")
    };

    let cluster_domain = match &overrides.cluster_domain {
        Some(domain) => Fact::new(
            domain.trim_end_matches('.').to_string(),
            flag("--cluster-domain"),
        ),
        None => {
            d.notes.push(format!(
                "cluster domain: assuming {DEFAULT_CLUSTER_DOMAIN} until the agent confirms it; pass --cluster-domain if it differs"
            ));
            Fact::guess(DEFAULT_CLUSTER_DOMAIN.to_string(), Source::Default)
        }
    };

    let dns_server = match overrides.dns_server {
        Some(ip) => Some(Fact::new(ip, flag("--cluster-dns"))),
        None => d.dns_service().await?,
    };

    Ok(ClusterFacts {
        service_cidrs,
        pod_cidrs,
        cluster_domain,
        dns_server,
        notes: d.notes,
    })
}

/// The facts from flags alone, for commands that skip the API when the user gave what
/// they need (`gateway` with both prefixes and the DNS address, `routes` with both
/// prefixes and the domain). Missing prefixes stay empty; a missing domain is the default,
/// marked as a guess.
pub fn from_flags(overrides: &DiscoveryOverrides) -> ClusterFacts {
    let mut notes = vec!["cluster facts from flags only: the Kubernetes API was not asked".into()];
    let cluster_domain = match &overrides.cluster_domain {
        Some(domain) => Fact::new(
            domain.trim_end_matches('.').to_string(),
            flag("--cluster-domain"),
        ),
        None => {
            notes.push(format!(
                "cluster domain: assuming {DEFAULT_CLUSTER_DOMAIN}; pass --cluster-domain if the cluster uses another"
            ));
            Fact::guess(DEFAULT_CLUSTER_DOMAIN.to_string(), Source::Default)
        }
    };
    ClusterFacts {
        service_cidrs: flag_facts(&overrides.service_cidrs, "--service-cidr"),
        pod_cidrs: flag_facts(&overrides.pod_cidrs, "--pod-cidr"),
        cluster_domain,
        dns_server: overrides
            .dns_server
            .map(|ip| Fact::new(ip, flag("--cluster-dns"))),
        notes,
    }
}

fn flag(flag: &str) -> Source {
    Source::Flag { flag: flag.into() }
}

/// Prefixes from a flag, without host bits and duplicates.
fn flag_facts(nets: &[IpNet], name: &str) -> Vec<Fact<IpNet>> {
    let mut out: Vec<Fact<IpNet>> = Vec::new();
    for n in nets {
        let n = n.trunc();
        if !out.iter().any(|f| f.value == n) {
            out.push(Fact::new(n, flag(name)));
        }
    }
    out
}

/// Why `ip` is routed into the cluster: the most specific known prefix holding it and its
/// source, e.g. `172.17.40.3 is routed because 172.17.32.0/19: spec.podCIDRs of node
/// node1`; `None` when no prefix holds it.
pub fn why(facts: &ClusterFacts, ip: IpAddr) -> Option<String> {
    let (_, fact) = facts
        .prefixes()
        .filter(|(_, f)| f.value.contains(&ip))
        .max_by_key(|(_, f)| f.value.prefix_len())?;
    Some(format!(
        "{ip} is routed because {}: {}",
        fact.value, fact.source
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    pub(crate) fn sample() -> ClusterFacts {
        ClusterFacts {
            service_cidrs: vec![Fact::new(
                n("172.17.16.0/20"),
                Source::ServiceCidrObject {
                    name: "kubernetes".into(),
                },
            )],
            pod_cidrs: vec![
                Fact::new(
                    n("172.17.32.0/19"),
                    Source::NodePodCidr {
                        nodes: vec!["node1".into()],
                    },
                ),
                Fact::guess(
                    n("10.42.0.0/16"),
                    Source::ObservedPodIps {
                        count: 12,
                        prefix_len: 16,
                    },
                ),
            ],
            cluster_domain: Fact::guess("cluster.local".into(), Source::Default),
            dns_server: Some(Fact::new(
                "172.17.16.10".parse().unwrap(),
                Source::DnsService {
                    namespace: "kube-system".into(),
                    name: "kube-dns".into(),
                },
            )),
            notes: vec!["Calico IPPools: Calico is not installed".into()],
        }
    }

    #[test]
    fn sources_read_as_short_phrases() {
        let cases: Vec<(Source, &str)> = vec![
            (
                Source::ServiceCidrObject {
                    name: "kubernetes".into(),
                },
                "ServiceCIDR \"kubernetes\"",
            ),
            (
                Source::ApiServerFlag {
                    pod: "kube-system/kube-apiserver-node1".into(),
                },
                "kube-apiserver --service-cluster-ip-range (pod kube-system/kube-apiserver-node1)",
            ),
            (
                Source::NodePodCidr {
                    nodes: vec!["node1".into()],
                },
                "spec.podCIDRs of node node1",
            ),
            (
                Source::NodePodCidr {
                    nodes: (1..=5).map(|i| format!("n{i}")).collect(),
                },
                "spec.podCIDRs of nodes n1, n2, n3 and 2 more",
            ),
            (
                Source::ObservedClusterIps {
                    count: 12,
                    prefix_len: 16,
                },
                "observed 12 ClusterIPs, widened to /16 (a guess)",
            ),
            (
                Source::ObservedPodIps {
                    count: 1,
                    prefix_len: 24,
                },
                "observed 1 pod IP, widened to /24 (a guess)",
            ),
            (
                Source::Flag {
                    flag: "--pod-cidr".into(),
                },
                "--pod-cidr flag",
            ),
            (
                Source::FlannelNetConf {
                    configmap: "kube-flannel/kube-flannel-cfg".into(),
                },
                "Flannel net-conf.json (ConfigMap kube-flannel/kube-flannel-cfg)",
            ),
            (
                Source::CalicoIpPool {
                    name: "default-ipv4-ippool".into(),
                },
                "Calico IPPool \"default-ipv4-ippool\"",
            ),
            (
                Source::DnsService {
                    namespace: "kube-system".into(),
                    name: "kube-dns".into(),
                },
                "ClusterIP of Service kube-system/kube-dns",
            ),
        ];
        for (s, want) in cases {
            assert_eq!(s.to_string(), want);
        }
        assert!(
            Source::InvalidClusterIpProbe
                .to_string()
                .contains("out-of-range ClusterIP")
        );
    }

    #[test]
    fn why_names_the_most_specific_prefix() {
        let mut f = sample();
        f.pod_cidrs.push(Fact::new(
            n("172.17.40.0/24"),
            Source::Flag {
                flag: "--pod-cidr".into(),
            },
        ));
        assert_eq!(
            why(&f, "172.17.33.3".parse().unwrap()).unwrap(),
            "172.17.33.3 is routed because 172.17.32.0/19: spec.podCIDRs of node node1"
        );
        assert_eq!(
            why(&f, "172.17.40.3".parse().unwrap()).unwrap(),
            "172.17.40.3 is routed because 172.17.40.0/24: --pod-cidr flag"
        );
        assert!(
            why(&f, "172.17.16.10".parse().unwrap())
                .unwrap()
                .contains("172.17.16.0/20: ServiceCIDR \"kubernetes\"")
        );
        assert_eq!(why(&f, "192.0.2.1".parse().unwrap()), None);
    }

    #[test]
    fn table_flags_guesses() {
        let text = sample().to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "PREFIX          KIND      SOURCE");
        assert_eq!(
            lines[1],
            "172.17.16.0/20  services  ServiceCIDR \"kubernetes\""
        );
        assert_eq!(
            lines[3],
            "10.42.0.0/16    pods      observed 12 pod IPs, widened to /16 (a guess) [guessed]"
        );
        assert!(text.contains(
            "cluster domain: cluster.local (default, not confirmed by the cluster) [guessed]"
        ));
        assert!(
            text.contains("DNS server: 172.17.16.10 (ClusterIP of Service kube-system/kube-dns)")
        );
        assert!(text.contains("  - Calico IPPools: Calico is not installed"));
        let mut empty = sample();
        empty.service_cidrs.clear();
        empty.pod_cidrs.clear();
        empty.dns_server = None;
        let text = empty.to_string();
        assert!(
            text.starts_with("no Pod or Service CIDRs known\n"),
            "{text}"
        );
        assert!(text.contains("DNS server: unknown"));
    }

    #[test]
    fn json_carries_source_and_text() {
        let v = serde_json::to_value(sample()).unwrap();
        assert_eq!(v["service_cidrs"][0]["value"], "172.17.16.0/20");
        assert_eq!(
            v["service_cidrs"][0]["source"],
            serde_json::json!({"kind": "service_cidr_object", "name": "kubernetes"})
        );
        assert_eq!(
            v["service_cidrs"][0]["source_text"],
            "ServiceCIDR \"kubernetes\""
        );
        assert_eq!(v["pod_cidrs"][1]["guessed"], true);
        assert_eq!(
            v["pod_cidrs"][1]["source"],
            serde_json::json!({"kind": "observed_pod_ips", "count": 12, "prefix_len": 16})
        );
        assert_eq!(v["cluster_domain"]["source"]["kind"], "default");
        assert_eq!(v["dns_server"]["value"], "172.17.16.10");
        assert_eq!(v["notes"][0], "Calico IPPools: Calico is not installed");
    }

    #[test]
    fn flags_lose_host_bits_and_duplicates() {
        let f = flag_facts(
            &[n("10.0.0.7/24"), n("10.0.0.0/24"), n("fd00::1/64")],
            "--pod-cidr",
        );
        let v: Vec<String> = f.iter().map(|f| f.value.to_string()).collect();
        assert_eq!(v, ["10.0.0.0/24", "fd00::/64"]);
        assert!(f.iter().all(|f| !f.guessed));
    }
}
