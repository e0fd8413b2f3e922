//! `kubelan routes`: prints what to enter on the office router and DNS server so that the
//! whole LAN reaches the cluster through a kubelan gateway (static routes and DNS
//! conditional forwarders), or with `--bgp` the Calico manifests and the router's BGP
//! configuration. It changes nothing anywhere.
//!
//! Order of work: formats and flags checked → cluster facts discovered (each with its
//! source; with `--service-cidr`, `--pod-cidr` and `--cluster-domain` all given the API is
//! not asked) → this host's addresses and routes read (for the gateway address and the
//! overlap warnings; failing to read them is a note) → rendered by `kubelan-routes`.
//! Facts, warnings and notes go to stderr and the blocks to stdout, so one format can be
//! redirected into a file as it is.

use std::net::IpAddr;

use clap::Args;
use ipnet::IpNet;
use kubelan_cluster::discovery::routes::{
    self as facts_for_routes, BgpFlags, Origin, RoutesFactsError,
};
use kubelan_cluster::discovery::{ClusterFacts, DiscoveryOverrides};
use kubelan_routes::{
    BgpFormat, DEFAULT_ROUTER_AS, Flags, Format, FormatKind, LocalAddr, LocalRoute, RoutesInput,
    Selection, Warning,
};
use serde_json::json;

use crate::Output;

/// `kubelan routes` flags.
#[derive(Args, Debug)]
pub(crate) struct RoutesArgs {
    /// The cluster to read the facts from.
    #[command(flatten)]
    kube: kubelan_cluster::KubeArgs,
    /// What to print (comma-separated or repeated): routes for linux, windows, macos,
    /// cisco-ios, huawei-vrp, h3c-comware, mikrotik, junos; DNS for dnsmasq, bind, unbound,
    /// coredns, windows-dns, systemd-resolved, mikrotik-dns; or all. With --bgp: calico,
    /// cisco-ios, frr, mikrotik, junos [default: linux, cisco-ios, mikrotik, dnsmasq,
    /// windows-dns; with --bgp: all of them].
    #[arg(long, short = 'f', value_name = "FORMAT", value_delimiter = ',')]
    format: Vec<String>,
    /// The kubelan gateway's LAN address: where the routes point and DNS is forwarded to
    /// (once per IP family) [default: this host's only address inside --lan].
    #[arg(long, value_name = "IP")]
    gateway: Vec<IpAddr>,
    /// The office LAN (repeatable): a cluster prefix overlapping it is warned about, and
    /// without --gateway this host's address in it is the gateway.
    #[arg(long, value_name = "CIDR")]
    lan: Vec<IpNet>,
    /// Where the DNS forwarders point, e.g. the cluster DNS ClusterIP [default: the
    /// gateway, which answers DNS on its LAN address].
    #[arg(long, value_name = "IP")]
    dns_target: Option<IpAddr>,
    /// The cluster's Service CIDR, instead of discovering it (repeatable).
    #[arg(long, value_name = "CIDR")]
    service_cidr: Vec<IpNet>,
    /// The cluster's Pod CIDR, instead of discovering it (repeatable).
    #[arg(long, value_name = "CIDR")]
    pod_cidr: Vec<IpNet>,
    /// The cluster DNS domain [default: cluster.local].
    #[arg(long, value_name = "DOMAIN")]
    cluster_domain: Option<String>,
    /// The cluster DNS Service IP, instead of discovering it (shown in the facts).
    #[arg(long, value_name = "IP")]
    cluster_dns: Option<IpAddr>,
    /// Instead of static routes: Calico BGPConfiguration/BGPPeer manifests and the
    /// router's BGP configuration, so the router learns the pod routes from the nodes.
    #[arg(long)]
    bgp: bool,
    /// With --bgp: the office router's address on the nodes' network (Calico's peerIP).
    #[arg(long, value_name = "IP", requires = "bgp")]
    router_ip: Option<IpAddr>,
    /// With --bgp: the office router's AS number.
    #[arg(long, value_name = "ASN", default_value_t = DEFAULT_ROUTER_AS)]
    router_as: u32,
    /// With --bgp: the nodes' AS number [default: the cluster's Calico BGPConfiguration,
    /// else 64512].
    #[arg(long, value_name = "ASN", requires = "bgp")]
    cluster_as: Option<u32>,
    /// With --bgp: only nodes matching this label selector peer with the router, e.g.
    /// kubelan/bgp=true [default: every node].
    #[arg(long, value_name = "SELECTOR", requires = "bgp")]
    bgp_nodes: Option<String>,
    /// With --bgp: a node address the router peers with (repeatable) [default: the
    /// InternalIPs of the (selected) nodes].
    #[arg(long, value_name = "IP", requires = "bgp")]
    bgp_neighbor: Vec<IpAddr>,
    /// Output: the blocks on stdout with facts and warnings on stderr, or one JSON object
    /// with the facts, the renderer's input, the rendered text and the warnings.
    #[arg(long, value_enum, default_value = "human")]
    output: Output,
}

/// A facts error as the CLI prints it: the cluster layer's own errors stay outermost.
fn cli_error(e: RoutesFactsError) -> anyhow::Error {
    match e {
        RoutesFactsError::Cluster(e) => e.into(),
        e => e.into(),
    }
}

/// Runs `kubelan routes`.
pub(crate) async fn run(args: RoutesArgs) -> anyhow::Result<()> {
    let (selection, defaulted) = kubelan_routes::select_formats(&args.format, args.bgp)?;
    kubelan_routes::check_flags(&Flags {
        cluster_domain: args.cluster_domain.as_deref(),
        gateway: &args.gateway,
        bgp: args.bgp,
        router_as: args.router_as,
        cluster_as: args.cluster_as,
        bgp_nodes: args.bgp_nodes.as_deref(),
    })?;
    let json_out = args.output == Output::Json;
    let needs_api_for_bgp = args.bgp && (args.bgp_neighbor.is_empty() || args.cluster_as.is_none());
    let overrides = DiscoveryOverrides {
        service_cidrs: args.service_cidr.clone(),
        pod_cidrs: args.pod_cidr.clone(),
        cluster_domain: args.cluster_domain.clone(),
        dns_server: args.cluster_dns,
    };
    let (facts, origin) = facts_for_routes::facts(&args.kube, &overrides, needs_api_for_bgp)
        .await
        .map_err(cli_error)?;
    let prefixes = facts_for_routes::prefixes(&facts);
    let mut notes = facts.notes.clone();
    match selection {
        Selection::Bgp(formats) => {
            let flags = BgpFlags {
                router_as: args.router_as,
                router_ip: args.router_ip,
                cluster_as: args.cluster_as,
                bgp_nodes: args.bgp_nodes.as_deref(),
                bgp_neighbor: &args.bgp_neighbor,
            };
            let input =
                facts_for_routes::bgp_input(&flags, prefixes, origin.client.as_ref(), &mut notes)
                    .await
                    .map_err(cli_error)?;
            if !json_out {
                header(&facts, &origin, None, None);
            }
            let outputs: Vec<Rendered> = formats
                .iter()
                .map(|f| Rendered {
                    format: f.name(),
                    title: f.title(),
                    text: kubelan_routes::render_bgp(*f, &input),
                })
                .collect();
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
            Report {
                facts: &facts,
                origin: &origin,
                input: serde_json::to_value(&input)?,
                outputs,
                warnings,
                notes: &notes,
                more: None,
            }
            .print(json_out)
        }
        Selection::Static(formats) => {
            let (routes, addrs) = local_network(&mut notes).await;
            let node_ips = facts_for_routes::node_ips(origin.client.as_ref()).await;
            let needs_gateway =
                formats.iter().any(|f| f.kind() == FormatKind::Routes) || args.dns_target.is_none();
            let gw = kubelan_routes::choose_gateway(
                &args.gateway,
                &args.lan,
                addrs.as_deref(),
                needs_gateway,
            )?;
            let other_routes = kubelan_routes::other_routes(
                routes.as_deref().unwrap_or_default(),
                &prefixes,
                &node_ips,
            );
            let input = RoutesInput {
                prefixes,
                gateway_v4: gw.v4,
                gateway_v6: gw.v6,
                dns_target: args.dns_target,
                cluster_domain: facts.cluster_domain.value.clone(),
                lan: args.lan.iter().map(IpNet::trunc).collect(),
                other_routes,
            };
            if !json_out {
                header(&facts, &origin, Some(&gw.how), Some(&input));
            }
            let outputs: Vec<Rendered> = formats
                .iter()
                .map(|f| Rendered {
                    format: f.name(),
                    title: f.title(),
                    text: kubelan_routes::render(*f, &input),
                })
                .collect();
            let warnings = kubelan_routes::warnings(&input);
            let more: Vec<&str> = Format::all()
                .iter()
                .filter(|f| !formats.contains(f))
                .map(|f| f.name())
                .collect();
            Report {
                facts: &facts,
                origin: &origin,
                input: serde_json::to_value(&input)?,
                outputs,
                warnings,
                notes: &notes,
                more: (defaulted && !more.is_empty()).then(|| more.join(", ")),
            }
            .print(json_out)
        }
    }
}

/// This host's main-table unicast routes and its addresses; each `None` (with a note)
/// when it cannot be read.
async fn local_network(
    notes: &mut Vec<String>,
) -> (Option<Vec<LocalRoute>>, Option<Vec<LocalAddr>>) {
    let routes = match kubelan_sys::net::local_routes(None).await {
        Ok(r) => Some(r),
        Err(e) => {
            notes.push(format!(
                "this host's routes could not be read ({e}); overlaps with them are not checked"
            ));
            None
        }
    };
    let addrs = match kubelan_sys::net::local_addrs(&[]).await {
        Ok(a) => Some(a),
        Err(e) => {
            notes.push(format!("this host's addresses could not be read ({e})"));
            None
        }
    };
    (routes, addrs)
}

/// The discovered facts, on stderr.
fn header(
    facts: &ClusterFacts,
    origin: &Origin,
    gateway: Option<&str>,
    input: Option<&RoutesInput>,
) {
    let mut rows: Vec<(String, String, String)> = facts
        .prefixes()
        .map(|(kind, f)| {
            let mark = if f.guessed { " [guessed]" } else { "" };
            (
                f.value.to_string(),
                kind.to_string(),
                format!("{}{mark}", f.source),
            )
        })
        .collect();
    let guessed = |g: bool| if g { " [guessed]" } else { "" };
    rows.push((
        "cluster domain".into(),
        facts.cluster_domain.value.clone(),
        format!(
            "{}{}",
            facts.cluster_domain.source,
            guessed(facts.cluster_domain.guessed)
        ),
    ));
    match &facts.dns_server {
        Some(d) => rows.push((
            "cluster DNS".into(),
            d.value.to_string(),
            format!("{}{}", d.source, guessed(d.guessed)),
        )),
        None => rows.push(("cluster DNS".into(), "unknown".into(), String::new())),
    }
    if let (Some(how), Some(input)) = (gateway, input) {
        let gws: Vec<String> = [
            input.gateway_v4.map(IpAddr::V4),
            input.gateway_v6.map(IpAddr::V6),
        ]
        .into_iter()
        .flatten()
        .map(|g| g.to_string())
        .collect();
        rows.push((
            "gateway".into(),
            if gws.is_empty() {
                "none".into()
            } else {
                gws.join(", ")
            },
            how.to_string(),
        ));
        if let Some(dns) = input.dns_server() {
            let why = if input.dns_target.is_some() {
                "--dns-target"
            } else {
                "the gateway answers DNS there (--dns-target changes it)"
            };
            rows.push(("DNS forwarders".into(), format!("→ {dns}"), why.into()));
        }
    }
    let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r.1.chars().count()).max().unwrap_or(0);
    eprintln!("cluster: {}", origin.text);
    for (a, b, c) in &rows {
        eprintln!("{}", format!("  {a:<w0$}  {b:<w1$}  {c}").trim_end());
    }
    eprintln!();
}

/// One rendered format.
struct Rendered {
    format: &'static str,
    title: &'static str,
    text: String,
}

/// Everything printed after the header.
struct Report<'a> {
    facts: &'a ClusterFacts,
    origin: &'a Origin,
    /// The renderer's input, for `--output json`.
    input: serde_json::Value,
    outputs: Vec<Rendered>,
    warnings: Vec<Warning>,
    notes: &'a [String],
    /// Formats not printed, named when the default selection was used.
    more: Option<String>,
}

impl Report<'_> {
    /// Prints the blocks (stdout), then warnings and notes (stderr); or one JSON object.
    fn print(self, json_out: bool) -> anyhow::Result<()> {
        if json_out {
            let warnings: Vec<serde_json::Value> = self
                .warnings
                .iter()
                .map(|w| {
                    let mut v = serde_json::to_value(w).unwrap_or_else(|_| json!({}));
                    if let Some(m) = v.as_object_mut() {
                        m.insert("message".into(), w.to_string().into());
                    }
                    v
                })
                .collect();
            let doc = json!({
                "context": self.origin.context,
                "server": self.origin.server,
                "facts": self.facts,
                "input": self.input,
                "outputs": self.outputs.iter().map(|r| json!({"format": r.format, "title": r.title, "text": r.text})).collect::<Vec<_>>(),
                "warnings": warnings,
                "notes": self.notes,
            });
            println!("{}", serde_json::to_string_pretty(&doc)?);
            return Ok(());
        }
        let headings = self.outputs.len() > 1;
        for (i, r) in self.outputs.iter().enumerate() {
            if headings {
                if i > 0 {
                    println!();
                }
                println!("### {}: {}", r.format, r.title);
            }
            print!("{}", r.text);
        }
        if let Some(more) = &self.more {
            eprintln!("\nmore formats: --format {more} (or all)");
        }
        if !self.warnings.is_empty() || !self.notes.is_empty() {
            eprintln!();
        }
        for w in &self.warnings {
            eprintln!("warning: {w}");
        }
        for n in self.notes {
            eprintln!("note: {n}");
        }
        Ok(())
    }
}
