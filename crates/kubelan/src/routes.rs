//! `kubelan routes`: prints what to enter on the office router and DNS server so that the
//! whole LAN reaches the cluster through a kubelan gateway (static routes and DNS
//! conditional forwarders), or with `--bgp` the Calico manifests and the router's BGP
//! configuration. It changes nothing anywhere.
//!
//! The work (flags checked, facts discovered, this host's routes read, formats rendered)
//! is `kubelan_cluster::discovery::routes::report`; this file reads this host's network
//! for it and prints the report: facts, warnings and notes on stderr and the blocks on
//! stdout, so one format can be redirected into a file as it is.

use std::net::IpAddr;

use clap::Args;
use ipnet::IpNet;
use kubelan_cluster::discovery::routes::{
    self, Input, LocalNetwork, RoutesFactsError, RoutesReport, RoutesRequest,
};
use kubelan_routes::DEFAULT_ROUTER_AS;

use crate::{Output, PrefixArgs};

/// `kubelan routes` flags.
#[derive(Args, Debug)]
pub(crate) struct RoutesArgs {
    /// The cluster to read the facts from (the global flags).
    #[arg(skip)]
    pub(crate) kube: kubelan_cluster::KubeArgs,
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
    #[command(flatten)]
    prefixes: PrefixArgs,
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
    /// The global `-o`: the blocks on stdout with facts and warnings on stderr, or one JSON
    /// object with the facts, the renderer's input, the rendered text and the warnings.
    #[arg(skip)]
    pub(crate) output: Output,
}

/// A report error as the CLI prints it: the cluster layer's and the renderer's own errors
/// stay outermost.
fn cli_error(e: RoutesFactsError) -> anyhow::Error {
    match e {
        RoutesFactsError::Cluster(e) => e.into(),
        RoutesFactsError::Request(e) => e.into(),
        RoutesFactsError::Gateway(e) => e.into(),
        e => e.into(),
    }
}

/// Runs `kubelan routes`.
pub(crate) async fn run(args: RoutesArgs) -> anyhow::Result<()> {
    let request = RoutesRequest {
        kube: args.kube,
        formats: args.format,
        gateway: args.gateway,
        lan: args.lan,
        dns_target: args.dns_target,
        overrides: args
            .prefixes
            .overrides(args.cluster_domain, args.cluster_dns),
        bgp: args.bgp,
        router_ip: args.router_ip,
        router_as: args.router_as,
        cluster_as: args.cluster_as,
        bgp_nodes: args.bgp_nodes,
        bgp_neighbor: args.bgp_neighbor,
    };
    let local = async {
        LocalNetwork {
            routes: kubelan_sys::net::local_routes(None)
                .await
                .map_err(|e| e.to_string()),
            addrs: kubelan_sys::net::local_addrs(&[])
                .await
                .map_err(|e| e.to_string()),
        }
    };
    let report = routes::report(&request, local).await.map_err(cli_error)?;
    if args.output == Output::Json {
        let doc = kubelan_term::json::Document::to_document(&report)?;
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        header(&report);
        print(&report);
    }
    Ok(())
}

/// The discovered facts, on stderr.
fn header(report: &RoutesReport) {
    let facts = &report.facts;
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
    if let (Some(how), Input::Static(input)) = (&report.gateway, &report.input) {
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
    eprintln!("cluster: {}", report.origin.text);
    for (a, b, c) in &rows {
        eprintln!("{}", format!("  {a:<w0$}  {b:<w1$}  {c}").trim_end());
    }
    eprintln!();
}

/// The blocks (stdout), then warnings and notes (stderr).
fn print(report: &RoutesReport) {
    let headings = report.outputs.len() > 1;
    for (i, r) in report.outputs.iter().enumerate() {
        if headings {
            if i > 0 {
                println!();
            }
            println!("### {}: {}", r.format, r.title);
        }
        print!("{}", r.text);
    }
    if let Some(more) = &report.more {
        eprintln!("\nmore formats: --format {more} (or all)");
    }
    if !report.warnings.is_empty() || !report.notes.is_empty() {
        eprintln!();
    }
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    for n in &report.notes {
        eprintln!("note: {n}");
    }
}
