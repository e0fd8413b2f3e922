//! The cluster facts `kubelan routes` prints from: discovery through the API (or the flags
//! alone when they say everything), the nodes' addresses, and for `--bgp` the neighbors and
//! the cluster's AS. Choosing and rendering are `kubelan-routes`'s; printing is the CLI's.

use std::net::IpAddr;

use kubelan_routes::{
    BgpInput, BgpNeighbor, CalicoConfig, ClusterPrefix, RequestError, calico_selector,
    cluster_as_from_calico, neighbors_of_nodes,
};

use super::nodes::{CalicoBgp, calico_bgp_configuration, list_nodes};
use super::{ClusterFacts, DiscoveryOverrides, Source, discover, from_flags};
use crate::{ClusterError, KubeArgs};

/// Where the facts came from.
#[derive(Clone)]
pub struct Origin {
    /// `context X (server)`, or that only flags were used.
    pub text: String,
    /// The API client, when the API was asked.
    pub client: Option<kube::Client>,
    /// The kubeconfig context, when the API was asked.
    pub context: Option<String>,
    /// The API server, when the API was asked.
    pub server: Option<String>,
}

/// Why the facts of `kubelan routes` are not known; each says the fix.
#[derive(Debug, thiserror::Error)]
pub enum RoutesFactsError {
    /// Connecting to or reading the API failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// Neither discovery nor the flags gave a prefix.
    #[error(
        "no Pod or Service CIDR of the cluster is known; pass --pod-cidr CIDR and --service-cidr CIDR"
    )]
    NoPrefixes,
    /// A flag that cannot work.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// `--bgp` without the API and without `--bgp-neighbor`.
    #[error("--bgp needs the nodes' addresses: pass --bgp-neighbor IP for each node")]
    NeedNeighbors,
    /// Listing nodes is not granted.
    #[error(
        "listing nodes is forbidden (grant list on nodes), so their addresses are unknown; pass --bgp-neighbor IP for each node"
    )]
    NodesForbidden,
    /// Listing nodes failed otherwise.
    #[error("listing the nodes")]
    ListNodes(#[source] kube::Error),
    /// No node matches `--bgp-nodes`.
    #[error(
        "no node matches --bgp-nodes {selector:?}; label the nodes that should peer with the router, or pass --bgp-neighbor IP"
    )]
    NoNodeMatches {
        /// The selector.
        selector: String,
    },
    /// The cluster has no nodes.
    #[error("the cluster has no nodes; pass --bgp-neighbor IP")]
    NoNodes,
    /// The cluster's AS is the router's.
    #[error(
        "the cluster uses AS {asn}, the same as --router-as; the configurations printed are eBGP: give the router its own AS with --router-as"
    )]
    SameAs {
        /// The number.
        asn: u32,
    },
}

/// The facts: discovery through the API, or `overrides` alone when they give the
/// Service and Pod CIDRs and the domain and `needs_api` is false. Discovery's note about
/// the agent is dropped (`routes` does not ask it); a defaulted domain gets a note.
///
/// # Errors
/// The API's failure, or no prefix known at all.
pub async fn facts(
    kube: &KubeArgs,
    overrides: &DiscoveryOverrides,
    needs_api: bool,
) -> Result<(ClusterFacts, Origin), RoutesFactsError> {
    let flags_only = !overrides.service_cidrs.is_empty()
        && !overrides.pod_cidrs.is_empty()
        && overrides.cluster_domain.is_some()
        && !needs_api;
    let (mut facts, origin) = if flags_only {
        let origin = Origin {
            text: "flags only (the API was not asked)".into(),
            client: None,
            context: None,
            server: None,
        };
        (from_flags(overrides), origin)
    } else {
        let cc = crate::connect(kube).await?;
        let facts = discover(&cc, overrides).await?;
        let origin = Origin {
            text: format!("context {} ({})", cc.context, cc.server),
            client: Some(cc.client.clone()),
            context: Some(cc.context.clone()),
            server: Some(cc.server.clone()),
        };
        (facts, origin)
    };
    if facts.prefixes().next().is_none() {
        return Err(RoutesFactsError::NoPrefixes);
    }
    facts.notes.retain(|n| !n.starts_with("cluster domain:"));
    if facts.cluster_domain.source == Source::Default {
        facts.notes.push(format!(
            "cluster domain {} assumed (the API does not say); pass --cluster-domain if the cluster uses another",
            facts.cluster_domain.value
        ));
    }
    Ok((facts, origin))
}

/// The cluster's prefixes as the renderer takes them, with their provenance.
pub fn prefixes(facts: &ClusterFacts) -> Vec<ClusterPrefix> {
    facts
        .prefixes()
        .map(|(kind, f)| ClusterPrefix {
            net: f.value.trunc(),
            kind,
            why: f.source.to_string(),
            guessed: f.guessed,
        })
        .collect()
}

/// The nodes' InternalIPs (routes to them are not overlaps); none without the API or
/// when they cannot be listed.
pub async fn node_ips(client: Option<&kube::Client>) -> Vec<IpAddr> {
    match client {
        Some(c) => list_nodes(c, None)
            .await
            .map(|n| n.into_iter().flat_map(|n| n.internal).collect())
            .unwrap_or_default(),
        None => Vec::new(),
    }
}

/// The flags of `--bgp`.
#[derive(Debug, Clone)]
pub struct BgpFlags<'a> {
    /// `--router-as`.
    pub router_as: u32,
    /// `--router-ip`.
    pub router_ip: Option<IpAddr>,
    /// `--cluster-as`.
    pub cluster_as: Option<u32>,
    /// `--bgp-nodes`.
    pub bgp_nodes: Option<&'a str>,
    /// `--bgp-neighbor`.
    pub bgp_neighbor: &'a [IpAddr],
}

fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// The renderer's input of `--bgp`: the neighbors (`--bgp-neighbor`, else the selected
/// nodes' InternalIPs) and the cluster's AS (`--cluster-as`, else Calico's). What was
/// assumed goes to `notes`.
///
/// # Errors
/// Neighbors unknown (no API, nodes not listable, none selected), or the cluster's AS is
/// the router's.
pub async fn bgp_input(
    flags: &BgpFlags<'_>,
    prefixes: Vec<ClusterPrefix>,
    client: Option<&kube::Client>,
    notes: &mut Vec<String>,
) -> Result<BgpInput, RoutesFactsError> {
    let node_selector = flags
        .bgp_nodes
        .map(calico_selector)
        .transpose()
        .map_err(RequestError::BgpNodes)?;
    let neighbors = if !flags.bgp_neighbor.is_empty() {
        flags
            .bgp_neighbor
            .iter()
            .map(|ip| BgpNeighbor {
                name: None,
                ip: *ip,
            })
            .collect()
    } else {
        let Some(client) = client else {
            return Err(RoutesFactsError::NeedNeighbors);
        };
        let found = match list_nodes(client, flags.bgp_nodes).await {
            Ok(n) => n,
            Err(e) if status_code(&e) == Some(403) => {
                return Err(RoutesFactsError::NodesForbidden);
            }
            Err(e) => return Err(RoutesFactsError::ListNodes(e)),
        };
        if found.is_empty() {
            return Err(match flags.bgp_nodes {
                Some(sel) => RoutesFactsError::NoNodeMatches {
                    selector: sel.to_string(),
                },
                None => RoutesFactsError::NoNodes,
            });
        }
        neighbors_of_nodes(found.into_iter().map(|n| (n.name, n.internal)), notes)
    };
    let cluster_as = match flags.cluster_as {
        Some(a) => a,
        None => {
            let config = match client {
                Some(c) => match calico_bgp_configuration(c).await {
                    Ok(Some(CalicoBgp {
                        as_number,
                        node_to_node_mesh,
                    })) => CalicoConfig::Found {
                        as_number,
                        node_to_node_mesh,
                    },
                    Ok(None) => CalicoConfig::Missing,
                    Err(e) => CalicoConfig::Unreadable(e.to_string()),
                },
                None => CalicoConfig::Missing,
            };
            cluster_as_from_calico(&config, notes)
        }
    };
    if cluster_as == flags.router_as {
        return Err(RoutesFactsError::SameAs { asn: cluster_as });
    }
    Ok(BgpInput {
        prefixes,
        cluster_as,
        router_as: flags.router_as,
        router_ip: flags.router_ip,
        neighbors,
        node_selector,
    })
}
