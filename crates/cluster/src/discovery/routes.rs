//! `kubelan routes` up to its printing: the formats and flags checked, the cluster facts
//! (discovery through the API, or the flags alone when they say everything), the nodes'
//! addresses, for `--bgp` the neighbors and the cluster's AS, otherwise the gateway and
//! the routes of this host ([`report`]). Choosing and rendering are `kubelan-routes`'s;
//! printing the [`RoutesReport`] is the CLI's.

use std::future::Future;
use std::net::IpAddr;

use ipnet::IpNet;
use kubelan_routes::{
    BgpFormat, BgpInput, BgpNeighbor, CalicoConfig, ClusterPrefix, Flags, Format, FormatKind,
    GatewayError, LocalAddr, LocalRoute, RequestError, RoutesInput, Selection, Warning,
    calico_selector, cluster_as_from_calico, neighbors_of_nodes,
};
use serde::{Serialize, Serializer};

use super::nodes::{CalicoBgp, calico_bgp_configuration, list_nodes};
use super::{ClusterFacts, DiscoveryOverrides, Source, discover, from_flags};
use crate::{ClusterError, KubeArgs};

/// Where the facts came from.
#[derive(Clone, Serialize)]
pub struct Origin {
    /// `context X (server)`, or that only flags were used.
    #[serde(skip)]
    pub text: String,
    /// The API client, when the API was asked.
    #[serde(skip)]
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
    /// No gateway address can be chosen.
    #[error(transparent)]
    Gateway(#[from] GatewayError),
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

/// What `kubelan routes` is asked (its flags).
#[derive(Debug, Clone, Default)]
pub struct RoutesRequest {
    /// The cluster.
    pub kube: KubeArgs,
    /// `--format` names (empty: the default selection).
    pub formats: Vec<String>,
    /// `--gateway`.
    pub gateway: Vec<IpAddr>,
    /// `--lan`.
    pub lan: Vec<IpNet>,
    /// `--dns-target`.
    pub dns_target: Option<IpAddr>,
    /// `--service-cidr`, `--pod-cidr`, `--cluster-domain`, `--cluster-dns`.
    pub overrides: DiscoveryOverrides,
    /// `--bgp`.
    pub bgp: bool,
    /// `--router-ip`.
    pub router_ip: Option<IpAddr>,
    /// `--router-as`.
    pub router_as: u32,
    /// `--cluster-as`.
    pub cluster_as: Option<u32>,
    /// `--bgp-nodes`.
    pub bgp_nodes: Option<String>,
    /// `--bgp-neighbor`.
    pub bgp_neighbor: Vec<IpAddr>,
}

/// This host's main-table unicast routes and its addresses, or why each could not be read.
#[derive(Debug, Clone)]
pub struct LocalNetwork {
    /// The routes (overlaps with them are warned about).
    pub routes: Result<Vec<LocalRoute>, String>,
    /// The addresses (the gateway is chosen among them).
    pub addrs: Result<Vec<LocalAddr>, String>,
}

/// One rendered format.
#[derive(Debug, Clone, Serialize)]
pub struct Rendered {
    /// Its `--format` name.
    pub format: &'static str,
    /// What it is for.
    pub title: &'static str,
    /// The text to enter.
    pub text: String,
}

/// The renderer's input: static routes or BGP.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Input {
    /// Static routes and DNS forwarders.
    Static(RoutesInput),
    /// `--bgp`.
    Bgp(BgpInput),
}

/// Everything `kubelan routes` prints; its JSON form is `--output json`'s document.
#[derive(Clone, Serialize)]
pub struct RoutesReport {
    /// The cluster's facts, each with its source.
    pub facts: ClusterFacts,
    /// Where they came from.
    #[serde(flatten)]
    pub origin: Origin,
    /// How the gateway was chosen (static routes only).
    #[serde(skip)]
    pub gateway: Option<String>,
    /// What was rendered from.
    pub input: Input,
    /// The rendered formats, in the order asked.
    pub outputs: Vec<Rendered>,
    /// What is wrong or doubtful, each with its message.
    #[serde(serialize_with = "with_messages")]
    pub warnings: Vec<Warning>,
    /// What the user should know (assumptions, what could not be read).
    pub notes: Vec<String>,
    /// Formats not printed, named when the default selection was used.
    #[serde(skip)]
    pub more: Option<String>,
}

impl kubelan_term::json::Document for RoutesReport {
    const TYPE: &'static str = "RoutesReport";
}

fn with_messages<S: Serializer>(warnings: &[Warning], s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct WithMessage<'a> {
        #[serde(flatten)]
        warning: &'a Warning,
        message: String,
    }
    s.collect_seq(warnings.iter().map(|warning| WithMessage {
        warning,
        message: warning.to_string(),
    }))
}

/// `kubelan routes`: checks the request, gathers the facts (through the API unless the
/// flags say everything) and renders every format asked. `local` reads this host's
/// network; it is awaited only for static routes.
///
/// # Errors
/// A format or flag that cannot work, the API's failure, unknown prefixes or BGP
/// neighbors, or no gateway address; each names the fix.
pub async fn report(
    req: &RoutesRequest,
    local: impl Future<Output = LocalNetwork>,
) -> Result<RoutesReport, RoutesFactsError> {
    let (selection, defaulted) = kubelan_routes::select_formats(&req.formats, req.bgp)?;
    kubelan_routes::check_flags(&Flags {
        cluster_domain: req.overrides.cluster_domain.as_deref(),
        gateway: &req.gateway,
        bgp: req.bgp,
        router_as: req.router_as,
        cluster_as: req.cluster_as,
        bgp_nodes: req.bgp_nodes.as_deref(),
    })?;
    let needs_api_for_bgp = req.bgp && (req.bgp_neighbor.is_empty() || req.cluster_as.is_none());
    let (facts, origin) = facts(&req.kube, &req.overrides, needs_api_for_bgp).await?;
    let prefixes = prefixes(&facts);
    let mut notes = facts.notes.clone();
    let client = origin.client.as_ref();
    let (input, outputs, warnings, gateway, more) = match selection {
        Selection::Bgp(formats) => {
            let flags = BgpFlags {
                router_as: req.router_as,
                router_ip: req.router_ip,
                cluster_as: req.cluster_as,
                bgp_nodes: req.bgp_nodes.as_deref(),
                bgp_neighbor: &req.bgp_neighbor,
            };
            let input = bgp_input(&flags, prefixes, client, &mut notes).await?;
            let outputs = rendered(&formats, |f| {
                (f.name(), f.title(), kubelan_routes::render_bgp(*f, &input))
            });
            let mut warnings = kubelan_routes::bgp_warnings(&input);
            if !formats.contains(&BgpFormat::Calico) {
                warnings.retain(|w| *w != Warning::BgpNoRouterIp);
            }
            if let Some(dns) = facts.dns_server.as_ref() {
                notes.push(format!(
                    "DNS: `kubelan routes --format dnsmasq --dns-target {}` (or another DNS format) prints the forwarders for {}",
                    dns.value, facts.cluster_domain.value
                ));
            }
            (Input::Bgp(input), outputs, warnings, None, None)
        }
        Selection::Static(formats) => {
            let local = local.await;
            let routes = local.routes.map_err(|e| {
                notes.push(format!(
                    "this host's routes could not be read ({e}); overlaps with them are not checked"
                ));
            });
            let addrs = local.addrs.map_err(|e| {
                notes.push(format!("this host's addresses could not be read ({e})"));
            });
            let node_ips = node_ips(client).await;
            let needs_gateway =
                formats.iter().any(|f| f.kind() == FormatKind::Routes) || req.dns_target.is_none();
            let gw = kubelan_routes::choose_gateway(
                &req.gateway,
                &req.lan,
                addrs.as_deref().ok(),
                needs_gateway,
            )?;
            let input = RoutesInput {
                other_routes: kubelan_routes::other_routes(
                    routes.as_deref().unwrap_or_default(),
                    &prefixes,
                    &node_ips,
                ),
                prefixes,
                gateway_v4: gw.v4,
                gateway_v6: gw.v6,
                dns_target: req.dns_target,
                cluster_domain: facts.cluster_domain.value.clone(),
                lan: req.lan.iter().map(IpNet::trunc).collect(),
            };
            let outputs = rendered(&formats, |f| {
                (f.name(), f.title(), kubelan_routes::render(*f, &input))
            });
            let more: Vec<&str> = Format::all()
                .iter()
                .filter(|f| !formats.contains(f))
                .map(|f| f.name())
                .collect();
            let more = (defaulted && !more.is_empty()).then(|| more.join(", "));
            let warnings = kubelan_routes::warnings(&input);
            (Input::Static(input), outputs, warnings, Some(gw.how), more)
        }
    };
    Ok(RoutesReport {
        facts,
        origin,
        gateway,
        input,
        outputs,
        warnings,
        notes,
        more,
    })
}

/// Each format rendered by `render` (name, title, text).
fn rendered<F>(
    formats: &[F],
    render: impl Fn(&F) -> (&'static str, &'static str, String),
) -> Vec<Rendered> {
    formats
        .iter()
        .map(|f| {
            let (format, title, text) = render(f);
            Rendered {
                format,
                title,
                text,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lab's cluster given by flags alone (the API is never asked).
    fn request() -> RoutesRequest {
        RoutesRequest {
            overrides: DiscoveryOverrides {
                service_cidrs: vec!["172.17.16.0/20".parse().unwrap()],
                pod_cidrs: vec!["172.17.32.0/19".parse().unwrap()],
                cluster_domain: Some("cluster.local".into()),
                dns_server: Some("172.17.16.10".parse().unwrap()),
            },
            router_as: kubelan_routes::DEFAULT_ROUTER_AS,
            ..RoutesRequest::default()
        }
    }

    fn unreadable() -> LocalNetwork {
        LocalNetwork {
            routes: Err("no netlink".into()),
            addrs: Err("no netlink".into()),
        }
    }

    #[tokio::test]
    async fn static_routes_from_flags_name_the_other_formats_and_what_was_not_read() {
        let req = RoutesRequest {
            gateway: vec!["10.4.7.20".parse().unwrap()],
            lan: vec!["172.17.0.0/16".parse().unwrap()],
            ..request()
        };
        let r = report(&req, async { unreadable() }).await.unwrap();
        let names: Vec<_> = r.outputs.iter().map(|o| o.format).collect();
        assert_eq!(
            names,
            ["linux", "cisco-ios", "mikrotik", "dnsmasq", "windows-dns"]
        );
        // `routes --output json`: versioned, beside the fields it always had (docs/json.md).
        let doc = kubelan_term::json::Document::to_document(&r).unwrap();
        assert_eq!(doc["apiVersion"], "kubelan.dev/v1");
        assert_eq!(doc["type"], "RoutesReport");
        assert_eq!(doc["outputs"][0]["format"], "linux");
        assert!(
            r.outputs[0].text.contains("172.17.16.0/20 via 10.4.7.20"),
            "{}",
            r.outputs[0].text
        );
        assert!(
            r.more.as_deref().unwrap().starts_with("windows, macos"),
            "{:?}",
            r.more
        );
        assert_eq!(r.gateway.as_deref(), Some("--gateway"));
        assert!(
            matches!(r.warnings[0], Warning::LanOverlap { .. }),
            "{:?}",
            r.warnings
        );
        let notes = r.notes.join("\n");
        assert!(
            notes.contains("this host's routes could not be read (no netlink)"),
            "{notes}"
        );
        assert!(
            notes.contains("this host's addresses could not be read (no netlink)"),
            "{notes}"
        );
        let json = serde_json::to_value(&r).unwrap();
        let keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
        assert_eq!(
            keys,
            [
                "context", "facts", "input", "notes", "outputs", "server", "warnings"
            ]
        );
        assert_eq!(json["warnings"][0]["kind"], "lan_overlap");
        assert_eq!(json["warnings"][0]["message"], r.warnings[0].to_string());
        assert_eq!(json["input"]["gateway_v4"], "10.4.7.20");
        assert_eq!(json["outputs"][0]["format"], "linux");
    }

    #[tokio::test]
    async fn bgp_from_flags_does_not_read_this_host_and_points_at_the_dns_formats() {
        let req = RoutesRequest {
            bgp: true,
            formats: vec!["frr".into()],
            cluster_as: Some(64512),
            bgp_neighbor: vec!["10.4.7.11".parse().unwrap()],
            ..request()
        };
        let r = report(&req, async {
            panic!("BGP does not read this host's network")
        })
        .await
        .unwrap();
        assert_eq!(r.outputs.len(), 1);
        assert!(r.gateway.is_none() && r.more.is_none());
        assert!(
            !r.warnings.contains(&Warning::BgpNoRouterIp),
            "only Calico's peer needs it"
        );
        assert!(
            r.notes
                .iter()
                .any(|n| n.contains("--dns-target 172.17.16.10")),
            "{:?}",
            r.notes
        );
        let same = RoutesRequest {
            cluster_as: Some(req.router_as),
            ..req
        };
        let e = report(&same, async { unreadable() }).await.err().unwrap();
        assert!(matches!(e, RoutesFactsError::Request(_)), "{e}");
    }

    #[tokio::test]
    async fn no_gateway_for_routes_names_the_flag() {
        let e = report(&request(), async { unreadable() })
            .await
            .err()
            .unwrap();
        assert!(matches!(e, RoutesFactsError::Gateway(_)), "{e}");
        assert!(e.to_string().contains("--gateway"), "{e}");
    }
}
