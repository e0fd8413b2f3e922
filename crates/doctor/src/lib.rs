//! `kubelan doctor`: checks the path from this machine (a gateway, a node, a laptop with
//! `connect`, or a LAN PC with `--via GATEWAY`) into the cluster step by step and prints
//! each verdict with its fix.
//!
//! The checks, in order: the API server and permissions → the discovered prefixes and
//! where they came from → this host's routes to them → on a gateway: forwarding, the SNAT
//! rule and its counters → DNS (a cluster name and a non-cluster name) → one pod on each
//! node, the cluster DNS ClusterIP and one Service → large packets (MTU) → the return-path
//! fault of seed 001 (works to pods on one node, fails to pods on another) → on a LAN (a PC
//! with `--via`, or a node-mode gateway): callbacks from pods on every node to a LAN host,
//! and which address pods see for LAN hosts ([`callback`]). Exit code 0 only when nothing
//! failed.

mod callback;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::ListParams;
use kubelan_cluster::ClusterError;
use kubelan_cluster::discovery::{self, ClusterFacts, DiscoveryOverrides};
use kubelan_cluster::preflight::{Access, DISCOVERY_HINT};
use nftables::types::NfFamily;
use serde::Serialize;
use serde_json::json;

use crate::Output;
use crate::gateway;

/// `kubelan doctor` flags.
#[derive(Args, Debug)]
pub(crate) struct DoctorArgs {
    #[command(flatten)]
    kube: kubelan_cluster::KubeArgs,
    /// Run from a LAN host: the gateway's address (its DNS is checked, and failures are
    /// read as the router's or the gateway's).
    #[arg(long, value_name = "GATEWAY")]
    via: Option<IpAddr>,
    /// DNS server to check [default: --via, else the local gateway's, else this host's
    /// first resolver].
    #[arg(long, value_name = "IP")]
    dns: Option<IpAddr>,
    /// The cluster's Service CIDR, instead of discovering it (repeatable).
    #[arg(long, value_name = "CIDR")]
    service_cidr: Vec<ipnet::IpNet>,
    /// The cluster's Pod CIDR, instead of discovering it (repeatable).
    #[arg(long, value_name = "CIDR")]
    pod_cidr: Vec<ipnet::IpNet>,
    /// The cluster DNS domain [default: discovered, else cluster.local].
    #[arg(long, value_name = "DOMAIN")]
    cluster_domain: Option<String>,
    /// Seconds each connection attempt may take.
    #[arg(long, value_name = "SECONDS", default_value_t = 2)]
    timeout: u64,
    /// A LAN host's listening port that probe pods dial to check callbacks (pod → LAN);
    /// on a LAN PC with --via, doctor listens on this PC itself by default.
    #[arg(long, value_name = "ADDR:PORT")]
    callback_to: Option<SocketAddr>,
    /// Do not start probe pods (the callback check creates one short-lived pod per node in
    /// the namespace, and deletes them).
    #[arg(long)]
    skip_callback: bool,
    /// Image of the probe pods [default: the installed agent's, else the agent image of
    /// this version].
    #[arg(long, value_name = "IMAGE")]
    probe_image: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    output: Output,
    /// Inside a probe pod: answer on this address (what the callback check runs).
    #[arg(long, hide = true, value_name = "ADDR:PORT", requires = "probe_target")]
    probe_serve: Option<SocketAddr>,
    /// Inside a probe pod: the LAN address to dial.
    #[arg(long, hide = true, value_name = "ADDR:PORT")]
    probe_target: Option<SocketAddr>,
    /// Inside a probe pod: the token to send on the dialled connection.
    #[arg(long, hide = true, default_value = "")]
    probe_token: String,
}

/// How a check went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Verdict {
    Pass,
    Info,
    Warn,
    Fail,
    Skip,
}

impl Verdict {
    fn mark(self) -> &'static str {
        match self {
            Self::Pass => "✓",
            Self::Info => "·",
            Self::Warn => "!",
            Self::Fail => "✗",
            Self::Skip => "-",
        }
    }
}

/// One verdict.
#[derive(Debug, Clone, Serialize)]
struct Check {
    step: &'static str,
    verdict: Verdict,
    what: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
}

#[derive(Default)]
struct Report {
    checks: Vec<Check>,
    json: bool,
}

impl Report {
    fn add(&mut self, step: &'static str, verdict: Verdict, what: String, fix: Option<String>) {
        let c = Check {
            step,
            verdict,
            what,
            fix,
        };
        if !self.json {
            println!("{} {:<10} {}", c.verdict.mark(), c.step, c.what);
            if let Some(fix) = &c.fix {
                println!("  {:<10} fix: {fix}", "");
            }
        }
        self.checks.push(c);
    }

    /// A failed step whose error names its own fix: the cause, then the fix on its line.
    fn fail_with(&mut self, step: &'static str, e: &ClusterError) {
        let text = e.to_string();
        let (what, fix) = match text.split_once("; ") {
            Some((what, fix)) => (what.to_string(), Some(fix.to_string())),
            None => (text, None),
        };
        self.add(step, Verdict::Fail, what, fix);
    }

    fn failed(&self) -> usize {
        self.checks
            .iter()
            .filter(|c| c.verdict == Verdict::Fail)
            .count()
    }
}

/// The result of one TCP probe.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Probe {
    /// Connected (or the far end answered with a reset: the path works).
    Reached,
    /// No answer in time.
    Timeout,
    /// An error such as "network unreachable" (an ICMP error from a router).
    Error(String),
}

async fn probe_tcp(addr: SocketAddr, timeout: Duration) -> Probe {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Probe::Reached,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Probe::Reached,
        Ok(Err(e)) => Probe::Error(e.to_string()),
        Err(_) => Probe::Timeout,
    }
}

fn describe(p: &Probe) -> String {
    match p {
        Probe::Reached => "reached".into(),
        Probe::Timeout => "no answer".into(),
        Probe::Error(e) => e.clone(),
    }
}

/// A pod to probe: name, node, address and port.
#[derive(Debug, Clone)]
struct Target {
    name: String,
    node: String,
    addr: SocketAddr,
}

/// Runs the checks.
pub(crate) async fn run(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let mut r = Report {
        json: args.output == Output::Json,
        ..Report::default()
    };
    let timeout = Duration::from_secs(args.timeout.max(1));
    if let (Some(listen), Some(target)) = (args.probe_serve, args.probe_target) {
        callback::serve_probe(listen, target, args.probe_token.clone(), timeout).await?;
        return Ok(ExitCode::SUCCESS);
    }

    // 1. API, credentials and permissions.
    let cc = match kubelan_cluster::connect(&args.kube).await {
        Ok(cc) => cc,
        Err(e) => {
            r.fail_with("kubeconfig", &e);
            return finish(r);
        }
    };
    match cc.client.apiserver_version().await {
        Ok(v) => r.add(
            "api",
            Verdict::Pass,
            format!(
                "{} answers (Kubernetes {}.{}, context {})",
                cc.server, v.major, v.minor, cc.context
            ),
            None,
        ),
        Err(e) => {
            let e = ClusterError::from_api("get /version", e, &cc.target(), DISCOVERY_HINT);
            r.fail_with("api", &e);
            return finish(r);
        }
    }
    // `/version` answers anyone; an access review needs credentials the server accepts,
    // so rejected credentials are told apart here, before discovery.
    let wanted = [
        Access::new("list", "", "nodes"),
        Access::new("list", "", "pods"),
        Access::new("list", "", "services"),
        Access::new("list", "discovery.k8s.io", "endpointslices"),
    ];
    match kubelan_cluster::preflight::check(&cc.client, &wanted).await {
        Ok(missing) => {
            r.add(
                "credentials",
                Verdict::Pass,
                format!("accepted (user {}, context {})", cc.user, cc.context),
                None,
            );
            if missing.is_empty() {
                r.add(
                    "access",
                    Verdict::Pass,
                    "may list nodes, pods, Services and EndpointSlices".into(),
                    None,
                );
            } else {
                r.add(
                    "access",
                    Verdict::Warn,
                    format!(
                        "missing: {}; some checks below are skipped",
                        missing
                            .iter()
                            .map(|m| m.access.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    Some("`kubelan rbac discovery` prints a ClusterRole that grants them".into()),
                );
            }
        }
        Err(e) => match cc.explain(e, DISCOVERY_HINT) {
            e @ ClusterError::Unauthorized { .. } => {
                r.fail_with("credentials", &e);
                return finish(r);
            }
            e @ ClusterError::Unreachable { .. } => {
                r.fail_with("api", &e);
                return finish(r);
            }
            e => r.add(
                "access",
                Verdict::Warn,
                format!("cannot check permissions: {e}"),
                None,
            ),
        },
    }

    // 2. Prefixes.
    let overrides = DiscoveryOverrides {
        service_cidrs: args.service_cidr.clone(),
        pod_cidrs: args.pod_cidr.clone(),
        cluster_domain: args.cluster_domain.clone(),
        dns_server: None,
    };
    let facts = match discovery::discover(&cc, &overrides).await {
        Ok(f) => f,
        Err(e) if e.is_fatal_for_kubeconfig() => {
            r.fail_with("prefixes", &e);
            return finish(r);
        }
        Err(e) => {
            r.add(
                "prefixes",
                Verdict::Fail,
                format!("discovery failed: {e}"),
                Some("pass --pod-cidr and --service-cidr".into()),
            );
            return finish(r);
        }
    };
    for (kind, f) in facts.prefixes() {
        let verdict = if f.guessed {
            Verdict::Warn
        } else {
            Verdict::Pass
        };
        r.add(
            "prefixes",
            verdict,
            format!("{kind} {} ({})", f.value, f.source),
            f.guessed.then(|| {
                format!("confirm it and pass --{kind}-cidr, or grant what discovery needs (`kubelan rbac discovery`)")
            }),
        );
    }
    if facts.prefixes().next().is_none() {
        r.add(
            "prefixes",
            Verdict::Fail,
            "no Pod or Service prefix found".into(),
            Some("pass --pod-cidr and --service-cidr".into()),
        );
    }

    // 3. Routes of this host.
    check_routes(&mut r, &facts, args.via).await;

    // 4. A gateway on this host.
    let gateway_here = kubelan_sys::nft::table_exists(NfFamily::IP, gateway::TABLE)
        .await
        .unwrap_or(false);
    let (before, gateway_snat) = if gateway_here {
        let (counters, snat) = check_gateway(&mut r).await;
        (counters, Some(snat))
    } else {
        (None, None)
    };

    // 5. DNS.
    let dns_server = args
        .dns
        .or(args.via)
        .or(gateway_dns_listen().await.filter(|_| gateway_here))
        .or_else(first_resolver);
    check_dns(&mut r, &cc, &facts, dns_server, timeout).await;

    // 6. Reachability, 7. MTU, 8. return path.
    let targets = pod_targets(&cc.client).await;
    let mut by_node: BTreeMap<String, Vec<(Target, Probe)>> = BTreeMap::new();
    for t in first_per_node(&targets) {
        // One retry with twice the time, so a busy machine is not taken for a broken path.
        let mut p = probe_tcp(t.addr, timeout).await;
        if p != Probe::Reached {
            p = probe_tcp(t.addr, timeout * 2).await;
        }
        by_node.entry(t.node.clone()).or_default().push((t, p));
    }
    if by_node.is_empty() {
        r.add(
            "pods",
            Verdict::Skip,
            "no ready pod with a TCP port to probe".into(),
            None,
        );
    }
    for (node, probes) in &by_node {
        for (t, p) in probes {
            let ok = *p == Probe::Reached;
            r.add(
                "pods",
                if ok { Verdict::Pass } else { Verdict::Fail },
                format!("pod {} on {node} at {}: {}", t.name, t.addr, describe(p)),
                (!ok).then(|| unreachable_fix(p, args.via)),
            );
        }
    }
    // Service connections seen so far: (tried, failed), for the return-path check.
    let mut service_tries = (0usize, 0usize);
    if let Some(dns) = facts.dns_server.as_ref().map(|f| f.value) {
        let p = probe_tcp(SocketAddr::new(dns, 53), timeout).await;
        let ok = p == Probe::Reached;
        service_tries = (service_tries.0 + 1, service_tries.1 + usize::from(!ok));
        r.add(
            "services",
            if ok { Verdict::Pass } else { Verdict::Fail },
            format!("cluster DNS ClusterIP {dns}:53: {}", describe(&p)),
            (!ok).then(|| unreachable_fix(&p, args.via)),
        );
    }
    let spread = spread_service(&cc.client, &targets).await;
    if let Some((svc, addr, _)) = &spread {
        let p = probe_tcp(*addr, timeout).await;
        let ok = p == Probe::Reached;
        service_tries = (service_tries.0 + 1, service_tries.1 + usize::from(!ok));
        r.add(
            "services",
            if ok { Verdict::Pass } else { Verdict::Fail },
            format!("Service {svc} at {addr}: {}", describe(&p)),
            (!ok).then(|| unreachable_fix(&p, args.via)),
        );
    }
    check_mtu(
        &mut r,
        by_node.values().flatten().map(|(t, _)| t.addr.ip()).next(),
    )
    .await;
    check_return_path(&mut r, &by_node, spread.as_ref(), service_tries, timeout).await;
    // 9. Callbacks, pod → LAN.
    check_callbacks(&mut r, &cc, &args, &facts, gateway_snat, timeout).await;

    if let Some(before) = before {
        let after = kubelan_sys::nft::counters(NfFamily::IP, gateway::TABLE)
            .await
            .unwrap_or_default();
        let moved = |name: &str| {
            after.get(name).map(|c| c.0).unwrap_or(0) > before.get(name).map(|c| c.0).unwrap_or(0)
        };
        r.add(
            "counters",
            Verdict::Info,
            format!(
                "LAN → cluster packets {} during the check, SNAT {} (probes from this host itself do not pass the gateway's rules; run `kubelan doctor --via` on a LAN host to see them move)",
                if moved("up") { "moved" } else { "did not move" },
                if moved("snat") { "moved" } else { "did not move" },
            ),
            None,
        );
    }
    finish(r)
}

fn finish(r: Report) -> anyhow::Result<ExitCode> {
    let failed = r.failed();
    if r.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"ok": failed == 0, "checks": r.checks}))?
        );
    } else if failed == 0 {
        println!("\nall checks passed");
    } else {
        println!("\n{failed} check(s) failed");
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn unreachable_fix(p: &Probe, via: Option<IpAddr>) -> String {
    match (p, via) {
        (Probe::Error(e), Some(gw)) if e.contains("unreachable") => format!(
            "a router between here and {gw} has no route to the cluster prefixes: add the routes `kubelan routes --gateway {gw}` prints on the office router"
        ),
        (Probe::Error(e), None) if e.contains("unreachable") => {
            "this host has no route to the cluster prefixes: run `sudo kubelan connect`, or route them to a kubelan gateway".into()
        }
        (_, Some(gw)) => format!(
            "packets leave but nothing comes back: is `kubelan gateway` running on {gw}, and does the cluster route replies back (see the return-path check)?"
        ),
        _ => "packets leave but nothing comes back: check the gateway, the node's firewall and the pod".into(),
    }
}

/// How to stop routers from redirecting LAN hosts to a gateway on their own subnet.
const REDIRECT_FIX: &str = "set send_redirects=0 on the office router's LAN interface (Linux: `sysctl -w net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.<LAN interface>.send_redirects=0`; Cisco IOS: `no ip redirects` on the interface; H3C: `undo ip redirects enable`; Huawei: `undo icmp redirect send`), put the gateway on a segment of its own, or route the cluster prefixes to the gateway on the PCs themselves";

/// Findings about next hops this host learned from ICMP redirects, for destinations inside
/// the cluster prefixes: one per redirected next hop. `table_gateway` is the routing
/// table's next hop for an address; `via` the gateway the user expects (`--via`).
fn redirect_findings(
    redirects: &[kubelan_sys::net::Redirect],
    prefixes: &[ipnet::IpNet],
    table_gateway: &dyn Fn(IpAddr) -> Option<IpAddr>,
    via: Option<IpAddr>,
) -> Vec<(Verdict, String, String)> {
    // Next hop → (destinations, routing table's next hops, longest expiry).
    let mut by_hop: BTreeMap<IpAddr, (Vec<IpAddr>, Vec<IpAddr>, u32)> = BTreeMap::new();
    for rd in redirects {
        if !prefixes.iter().any(|p| p.contains(&rd.dst)) {
            continue;
        }
        let e = by_hop.entry(rd.gateway).or_default();
        e.0.push(rd.dst);
        if let Some(t) = table_gateway(rd.dst).filter(|t| *t != rd.gateway && !e.1.contains(t)) {
            e.1.push(t);
        }
        e.2 = e.2.max(rd.expires_secs);
    }
    by_hop
        .into_iter()
        .map(|(hop, (mut dsts, table, secs))| {
            dsts.sort();
            let n = dsts.len();
            let mut list: Vec<String> = dsts.iter().take(4).map(IpAddr::to_string).collect();
            if n > 4 {
                list.push(format!("and {} more", n - 4));
            }
            let router = if table.is_empty() {
                "the routing table's next hop".to_string()
            } else {
                table.iter().map(IpAddr::to_string).collect::<Vec<_>>().join(", ")
            };
            let what = format!(
                "cached ICMP redirect: {} {} straight to {hop} instead of through {router}, for up to {secs} s more",
                list.join(", "),
                if n == 1 { "goes" } else { "go" },
            );
            match via {
                Some(gw) if gw == hop => (
                    Verdict::Warn,
                    format!("{what}; that is the gateway, so it works now, but this host keeps using it for minutes after the router moves to another gateway"),
                    format!("to stop the router's redirects: {REDIRECT_FIX}"),
                ),
                Some(gw) => (
                    Verdict::Fail,
                    format!("{what}, not to the gateway {gw}: the router once redirected this host to a gateway on its own subnet and the host still uses that one"),
                    format!("`sudo ip route flush cache` on this host forgets it now; for good, {REDIRECT_FIX}"),
                ),
                None => (
                    Verdict::Warn,
                    format!("{what}: a router redirected this host to a gateway on its own subnet, and the host keeps that next hop even after the router changes"),
                    format!("`sudo ip route flush cache` forgets it; for good, {REDIRECT_FIX}"),
                ),
            }
        })
        .collect()
}

async fn check_routes(r: &mut Report, facts: &ClusterFacts, via: Option<IpAddr>) {
    let routes = match kubelan_sys::net::routes().await {
        Ok(routes) => routes,
        Err(e) => {
            r.add(
                "routes",
                Verdict::Skip,
                format!("cannot read routes: {e}"),
                None,
            );
            return;
        }
    };
    for (kind, f) in facts.prefixes() {
        let probe = f.value.hosts().next().unwrap_or(f.value.addr());
        let best = routes
            .iter()
            .filter(|rt| rt.table == 254 && rt.dst.contains(&probe))
            .max_by_key(|rt| rt.dst.prefix_len());
        let what = match best {
            None => {
                r.add(
                    "routes",
                    if via.is_some() {
                        Verdict::Info
                    } else {
                        Verdict::Warn
                    },
                    format!("{kind} {}: no route on this host", f.value),
                    None,
                );
                continue;
            }
            Some(rt) if rt.dst.prefix_len() == 0 => format!(
                "{kind} {}: to the default gateway {}{}",
                f.value,
                rt.gateway.map(|g| g.to_string()).unwrap_or_default(),
                match via {
                    Some(_) =>
                        " (fine: that router must route it to the gateway; the probes below tell)",
                    None =>
                        " (fine on a node for Services — kube-proxy catches them — else the probes below tell)",
                }
            ),
            Some(rt) => format!(
                "{kind} {}: via {} {}",
                f.value,
                rt.dev.clone().unwrap_or_default(),
                rt.gateway
                    .map(|g| format!("gateway {g}"))
                    .unwrap_or_default()
            ),
        };
        r.add("routes", Verdict::Info, what, None);
    }
    // A router that forwards a packet back out the interface it came in on tells the
    // sender (ICMP redirect) to use the next hop directly, and Linux hosts keep that for
    // minutes (`ip route show cache` marks it `<redirected>`): the route above is then not
    // the one in use.
    let redirects = match kubelan_sys::net::redirects().await {
        Ok(v) => v,
        Err(e) => {
            r.add(
                "routes",
                Verdict::Skip,
                format!("cannot read cached redirects: {e}"),
                None,
            );
            return;
        }
    };
    let prefixes: Vec<ipnet::IpNet> = facts.prefixes().map(|(_, f)| f.value).collect();
    let table_gateway = |dst: IpAddr| {
        routes
            .iter()
            .filter(|rt| rt.table == 254 && rt.dst.contains(&dst))
            .max_by_key(|rt| rt.dst.prefix_len())
            .and_then(|rt| rt.gateway)
    };
    for (verdict, what, fix) in redirect_findings(&redirects, &prefixes, &table_gateway, via) {
        r.add("routes", verdict, what, Some(fix));
    }
}

/// Forwarding and the SNAT rule of a node-mode gateway on this host; returns its counters
/// and whether it masquerades.
async fn check_gateway(r: &mut Report) -> (Option<BTreeMap<String, (u64, u64)>>, bool) {
    match kubelan_sys::sysctl::get("net.ipv4.ip_forward") {
        Ok(v) if v == "1" => r.add(
            "forwarding",
            Verdict::Pass,
            "IPv4 forwarding is on".into(),
            None,
        ),
        Ok(v) => r.add(
            "forwarding",
            Verdict::Fail,
            format!("IPv4 forwarding is off (net.ipv4.ip_forward = {v})"),
            Some(
                "restart `kubelan gateway` (it turns it on), or something turned it off since"
                    .into(),
            ),
        ),
        Err(e) => r.add("forwarding", Verdict::Skip, e.to_string(), None),
    }
    let listing = tokio::process::Command::new("nft")
        .args(["list", "chain", "ip", gateway::TABLE, "postrouting"])
        .output()
        .await;
    let snat = matches!(&listing, Ok(o) if o.status.success() && String::from_utf8_lossy(&o.stdout).contains("masquerade"));
    if snat {
        r.add(
            "snat",
            Verdict::Pass,
            format!("SNAT rule present in table ip {}", gateway::TABLE),
            None,
        );
    } else {
        r.add(
            "snat",
            Verdict::Info,
            "no SNAT (--no-snat): pods see LAN addresses, so every node needs a route back to the LAN; the return-path check below tells".into(),
            None,
        );
    }
    let Ok(counters) = kubelan_sys::nft::counters(NfFamily::IP, gateway::TABLE).await else {
        return (None, snat);
    };
    let (p, b) = counters.get("up").copied().unwrap_or((0, 0));
    let (sp, _) = counters.get("snat").copied().unwrap_or((0, 0));
    r.add(
        "counters",
        Verdict::Info,
        format!("so far: {p} packets ({b} bytes) LAN → cluster, {sp} connections masqueraded"),
        None,
    );
    (Some(counters), snat)
}

/// The DNS address a local node-mode gateway serves on: it is this host's address towards
/// the LAN, which the gateway printed; we take the address its DNS socket is bound to.
async fn gateway_dns_listen() -> Option<IpAddr> {
    let text = std::fs::read_to_string("/proc/net/udp").ok()?;
    // Local address column: hex IP:port in host byte order for IPv4.
    text.lines().skip(1).find_map(|l| {
        let local = l.split_whitespace().nth(1)?;
        let (ip, port) = local.split_once(':')?;
        if u16::from_str_radix(port, 16).ok()? != 53 {
            return None;
        }
        let raw = u32::from_str_radix(ip, 16).ok()?;
        let ip = std::net::Ipv4Addr::from(raw.swap_bytes());
        (!ip.is_loopback() && !ip.is_unspecified()).then_some(IpAddr::V4(ip))
    })
}

fn first_resolver() -> Option<IpAddr> {
    crate::dnsrelay::host_resolvers(
        std::path::Path::new(kubelan_sys::dns::DEFAULT_RESOLV_CONF),
        &[],
    )
    .ok()?
    .into_iter()
    .next()
}

fn dns_query(name: &str, ty: RecordType) -> Option<Vec<u8>> {
    let mut m = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).ok()?, ty));
    m.to_vec().ok()
}

async fn ask(server: IpAddr, name: &str, timeout: Duration) -> Result<Message, String> {
    let q = dns_query(name, RecordType::A).ok_or("cannot build the query")?;
    let reply = kubelan_dns::forward_udp(&q, SocketAddr::new(server, 53), timeout)
        .await
        .map_err(|e| e.to_string())?;
    Message::from_vec(&reply).map_err(|e| e.to_string())
}

async fn check_dns(
    r: &mut Report,
    cc: &kubelan_cluster::ClusterClient,
    facts: &ClusterFacts,
    server: Option<IpAddr>,
    timeout: Duration,
) {
    let Some(server) = server else {
        r.add(
            "dns",
            Verdict::Skip,
            "no DNS server to check (pass --dns or --via)".into(),
            None,
        );
        return;
    };
    let domain = facts.cluster_domain.value.trim_matches('.');
    let name = format!("kubernetes.default.svc.{domain}.");
    let expected: Option<IpAddr> = Api::<Service>::namespaced(cc.client.clone(), "default")
        .get("kubernetes")
        .await
        .ok()
        .and_then(|s| s.spec?.cluster_ip?.parse().ok());
    match ask(server, &name, timeout).await {
        Ok(m) if m.metadata.response_code == ResponseCode::NoError => {
            let got: Vec<IpAddr> = m
                .answers
                .iter()
                .filter_map(|a| match &a.data {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    _ => None,
                })
                .collect();
            match expected {
                Some(e) if !got.contains(&e) => r.add(
                    "dns",
                    Verdict::Fail,
                    format!("{server} answers {name} with {got:?}, but its ClusterIP is {e}"),
                    Some("the DNS server answers from another cluster or a stale cache; point the cluster domain at the gateway".into()),
                ),
                _ => r.add(
                    "dns",
                    Verdict::Pass,
                    format!("{server} answers {name} → {got:?}"),
                    None,
                ),
            }
        }
        Ok(m) if m.metadata.response_code == ResponseCode::Refused => r.add(
            "dns",
            Verdict::Fail,
            format!("{server} refused {name}"),
            Some("the gateway serves only its --lan networks: add this host's network with --lan".into()),
        ),
        Ok(m) => r.add(
            "dns",
            Verdict::Fail,
            format!("{server} answers {name} with {}", m.metadata.response_code),
            Some(format!("forward the zone {domain} to the kubelan gateway (`kubelan routes --format dnsmasq` and others print how)")),
        ),
        Err(e) => r.add(
            "dns",
            Verdict::Fail,
            format!("no DNS answer from {server} for {name}: {e}"),
            Some("is `kubelan gateway` running and is UDP/TCP 53 open to this host?".into()),
        ),
    }
    // A name outside the cluster: any answer but SERVFAIL proves the upstream path.
    match ask(server, "kubelan-doctor.example.", timeout).await {
        Ok(m) if m.metadata.response_code == ResponseCode::Refused => r.add(
            "dns",
            Verdict::Warn,
            format!("{server} answers names outside the cluster with REFUSED"),
            Some("the resolvers in the gateway host's /etc/resolv.conf do not resolve other names for it; give it a resolver that does".into()),
        ),
        Ok(m) if m.metadata.response_code != ResponseCode::ServFail => r.add(
            "dns",
            Verdict::Pass,
            format!(
                "{server} answers names outside the cluster ({} for kubelan-doctor.example)",
                m.metadata.response_code
            ),
            None,
        ),
        Ok(_) => r.add(
            "dns",
            Verdict::Warn,
            format!("{server} fails names outside the cluster (SERVFAIL)"),
            Some("the gateway's host has no working resolver in /etc/resolv.conf".into()),
        ),
        Err(e) => r.add(
            "dns",
            Verdict::Warn,
            format!("{server} does not answer names outside the cluster: {e}"),
            None,
        ),
    }
}

/// Ready pods with a TCP port (a declared container port, else a readiness probe's).
async fn pod_targets(client: &kube::Client) -> Vec<Target> {
    let Ok(pods) = Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for p in pods.items {
        let Some(spec) = &p.spec else { continue };
        let Some(status) = &p.status else { continue };
        if spec.host_network == Some(true) {
            continue;
        }
        let ready = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        let (Some(ip), Some(node)) = (
            status
                .pod_ip
                .as_deref()
                .and_then(|i| i.parse::<IpAddr>().ok()),
            spec.node_name.clone(),
        ) else {
            continue;
        };
        let port = spec.containers.iter().find_map(|c| {
            c.ports
                .iter()
                .flatten()
                .find(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
                .map(|p| p.container_port)
        });
        let (Some(port), true) = (port.and_then(|p| u16::try_from(p).ok()), ready) else {
            continue;
        };
        out.push(Target {
            name: format!(
                "{}/{}",
                p.metadata.namespace.unwrap_or_default(),
                p.metadata.name.unwrap_or_default()
            ),
            node,
            addr: SocketAddr::new(ip, port),
        });
    }
    out
}

fn first_per_node(targets: &[Target]) -> Vec<Target> {
    let mut seen = std::collections::BTreeSet::new();
    // Prefer workload pods over kube-system ones.
    let mut sorted: Vec<&Target> = targets.iter().collect();
    sorted.sort_by_key(|t| (t.name.starts_with("kube-system/"), t.name.clone()));
    sorted
        .into_iter()
        .filter(|t| seen.insert(t.node.clone()))
        .cloned()
        .collect()
}

/// A Service with a ClusterIP and TCP port whose ready endpoints are on at least two
/// nodes (the return-path check needs one), else any such Service; with its node spread.
async fn spread_service(
    client: &kube::Client,
    targets: &[Target],
) -> Option<(String, SocketAddr, usize)> {
    let services = Api::<Service>::all(client.clone())
        .list(&ListParams::default())
        .await
        .ok()?;
    let slices = Api::<EndpointSlice>::all(client.clone())
        .list(&ListParams::default())
        .await
        .ok()?;
    let mut best: Option<(String, SocketAddr, usize)> = None;
    for s in services.items {
        let ns = s.metadata.namespace.clone().unwrap_or_default();
        let name = s.metadata.name.clone().unwrap_or_default();
        if ns == "kube-system" || (ns == "default" && name == "kubernetes") {
            continue;
        }
        let Some(spec) = &s.spec else { continue };
        let Some(ip) = spec
            .cluster_ip
            .as_deref()
            .and_then(|i| i.parse::<IpAddr>().ok())
        else {
            continue;
        };
        let Some(port) = spec
            .ports
            .iter()
            .flatten()
            .find(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
        else {
            continue;
        };
        let Ok(port) = u16::try_from(port.port) else {
            continue;
        };
        let nodes: std::collections::BTreeSet<String> = slices
            .items
            .iter()
            .filter(|sl| {
                sl.metadata.namespace.as_deref() == Some(ns.as_str())
                    && sl
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("kubernetes.io/service-name"))
                        == Some(&name)
            })
            .flat_map(|sl| sl.endpoints.iter())
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
            .filter_map(|e| {
                e.node_name.clone().or_else(|| {
                    let ip: IpAddr = e.addresses.first()?.parse().ok()?;
                    targets
                        .iter()
                        .find(|t| t.addr.ip() == ip)
                        .map(|t| t.node.clone())
                })
            })
            .collect();
        if nodes.is_empty() {
            continue;
        }
        let candidate = (
            format!("{ns}/{name}"),
            SocketAddr::new(ip, port),
            nodes.len(),
        );
        if best.as_ref().is_none_or(|b| candidate.2 > b.2) {
            best = Some(candidate);
        }
    }
    best
}

/// Large packets with "don't fragment" to a pod (needs the `ping` program).
async fn check_mtu(r: &mut Report, pod: Option<IpAddr>) {
    let Some(pod) = pod else {
        r.add("mtu", Verdict::Skip, "no pod to ping".into(), None);
        return;
    };
    let ping = |size: u32| async move {
        tokio::process::Command::new("ping")
            .args(["-n", "-c", "1", "-W", "2", "-M", "do", "-s"])
            .arg(size.to_string())
            .arg(pod.to_string())
            .output()
            .await
            .map(|o| o.status.success())
    };
    match ping(56).await {
        Err(_) => {
            r.add(
                "mtu",
                Verdict::Skip,
                "the ping program is not installed".into(),
                None,
            );
            return;
        }
        Ok(false) => {
            r.add(
                "mtu",
                Verdict::Skip,
                format!("{pod} does not answer pings; MTU not checked"),
                None,
            );
            return;
        }
        Ok(true) => {}
    }
    for (size, packet) in [(1472u32, 1500u32), (1372, 1400), (1252, 1280)] {
        if ping(size).await.unwrap_or(false) {
            r.add(
                "mtu",
                if packet == 1500 {
                    Verdict::Pass
                } else {
                    Verdict::Warn
                },
                format!("{packet}-byte packets reach {pod} unfragmented"),
                (packet < 1500).then(|| {
                    "the path's MTU is below 1500: make sure TCP MSS clamping or PMTU discovery works (ICMP 'fragmentation needed' must not be filtered)".to_string()
                }),
            );
            return;
        }
    }
    r.add(
        "mtu",
        Verdict::Fail,
        format!("small pings reach {pod} but 1280-byte packets do not"),
        Some("a link on the path has a tiny MTU or ICMP 'fragmentation needed' is filtered; lower the MTU on the gateway (--mtu in tunnel mode)".into()),
    );
}

/// Seed 001: pods on one node reachable, on another not; or a Service that works only when
/// the chosen pod sits on the node that did the Service NAT.
async fn check_return_path(
    r: &mut Report,
    by_node: &BTreeMap<String, Vec<(Target, Probe)>>,
    spread: Option<&(String, SocketAddr, usize)>,
    earlier: (usize, usize),
    timeout: Duration,
) {
    let ok_nodes: Vec<&String> = by_node
        .iter()
        .filter(|(_, ps)| ps.iter().all(|(_, p)| *p == Probe::Reached))
        .map(|(n, _)| n)
        .collect();
    let bad_nodes: Vec<&String> = by_node
        .iter()
        .filter(|(_, ps)| ps.iter().any(|(_, p)| *p != Probe::Reached))
        .map(|(n, _)| n)
        .collect();
    if !ok_nodes.is_empty() && !bad_nodes.is_empty() {
        r.add(
            "return",
            Verdict::Fail,
            format!(
                "pods on {} answer, pods on {} do not: those nodes have no route back to this client",
                join(&ok_nodes),
                join(&bad_nodes)
            ),
            Some("run the gateway with SNAT (without --no-snat), or add a route to the LAN on every node".into()),
        );
        return;
    }
    let Some((svc, addr, nodes)) = spread else {
        return;
    };
    if *nodes < 2 || bad_nodes.len() == by_node.len() {
        r.add(
            "return",
            Verdict::Skip,
            "needs a Service with ready pods on two nodes and reachable pods".into(),
            None,
        );
        return;
    }
    // Several connections so that the Service picks pods on more than one node; the
    // Service probes above count too (a single lost reply is already the fault).
    let started = Instant::now();
    let attempts = 8;
    let results = futures::future::join_all((0..attempts).map(|_| probe_tcp(*addr, timeout))).await;
    let failed = results.iter().filter(|p| **p != Probe::Reached).count() + earlier.1;
    let tried = attempts + earlier.0;
    if failed == 0 {
        r.add(
            "return",
            Verdict::Pass,
            format!(
                "{tried} connections to Services (8 to {svc} at {addr}, pods on {nodes} nodes) all answered in {:.1} s",
                started.elapsed().as_secs_f64()
            ),
            None,
        );
    } else {
        r.add(
            "return",
            Verdict::Fail,
            format!(
                "{failed} of {tried} connections to Services (8 to {svc} at {addr}) got no answer while every pod answers on its own IP: replies of pods on another node than the one that did the Service NAT go straight back to the client, which drops them (the seed-001 return-path fault)"
            ),
            Some("run the gateway with SNAT (without --no-snat), or set kube-proxy's masqueradeAll: true".into()),
        );
    }
}

/// This host's address towards the cluster: the source the kernel picks for a cluster
/// address (a connected UDP socket sends nothing).
fn own_address_towards(dst: IpAddr) -> Option<IpAddr> {
    let bind: SocketAddr = if dst.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let s = std::net::UdpSocket::bind(bind).ok()?;
    s.connect(SocketAddr::new(dst, 9)).ok()?;
    Some(s.local_addr().ok()?.ip()).filter(|ip| !ip.is_unspecified())
}

/// A probe pod's state in a few words: phase, then the container's waiting or terminated
/// reason.
fn pod_state(p: &Pod) -> String {
    let Some(status) = &p.status else {
        return "pending".into();
    };
    let phase = status.phase.as_deref().unwrap_or("Pending");
    let why = status.container_statuses.iter().flatten().find_map(|c| {
        let st = c.state.as_ref()?;
        if let Some(w) = &st.waiting {
            return Some(format!(
                "{} {}",
                w.reason.as_deref().unwrap_or(""),
                w.message.as_deref().unwrap_or("")
            ));
        }
        st.terminated.as_ref().map(|t| {
            format!(
                "exited {} {}",
                t.exit_code,
                t.reason.as_deref().unwrap_or("")
            )
        })
    });
    match why {
        Some(w) => format!("{phase}: {}", w.trim()),
        None => phase.to_string(),
    }
}

/// The probe pod for one node, PSS restricted, gone by itself after its deadline.
fn probe_pod(
    name: &str,
    run: &str,
    node: &str,
    image: &str,
    target: SocketAddr,
    token: &str,
    timeout: Duration,
) -> Result<Pod, serde_json::Error> {
    use kubelan_cluster::names::{AGENT_UID, LABEL_MANAGED_BY, LABEL_NAME};
    let restricted = kubelan_cluster::names::restricted_container_security();
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {LABEL_NAME: "kubelan-doctor", LABEL_MANAGED_BY: "kubelan", DOCTOR_RUN_LABEL: run},
        },
        "spec": {
            "nodeName": node,
            "restartPolicy": "Never",
            "activeDeadlineSeconds": callback::POD_LIFETIME.as_secs() + 30,
            "terminationGracePeriodSeconds": 1,
            "automountServiceAccountToken": false,
            "enableServiceLinks": false,
            "tolerations": [{"operator": "Exists"}],
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": AGENT_UID,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [{
                "name": "probe",
                "image": image,
                "args": [
                    "doctor",
                    "--probe-serve", format!("0.0.0.0:{}", callback::PROBE_PORT),
                    "--probe-target", target.to_string(),
                    "--probe-token", token,
                    "--timeout", timeout.as_secs().to_string(),
                ],
                "ports": [{"containerPort": callback::PROBE_PORT, "protocol": "TCP"}],
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
                "securityContext": restricted,
            }],
        },
    }))
}

/// The label that marks one doctor run's probe pods.
const DOCTOR_RUN_LABEL: &str = "kubelan.io/doctor-run";

/// The image for probe pods: `--probe-image`, else the installed agent's, else this
/// version's agent image.
async fn probe_image(client: &kube::Client, flag: Option<&str>) -> String {
    use k8s_openapi::api::apps::v1::Deployment;
    use kubelan_cluster::names::{AGENT, DEFAULT_IMAGE, DEFAULT_NAMESPACE};
    if let Some(i) = flag {
        return i.to_string();
    }
    let installed = Api::<Deployment>::namespaced(client.clone(), DEFAULT_NAMESPACE)
        .get(AGENT)
        .await
        .ok()
        .and_then(|d| d.spec?.template.spec?.containers.into_iter().next()?.image);
    installed.unwrap_or_else(|| DEFAULT_IMAGE.to_string())
}

/// Callbacks, pod → LAN host, from one probe pod per node; and which address pods see for
/// LAN hosts. Creates the pods in the namespace and always deletes them.
async fn check_callbacks(
    r: &mut Report,
    cc: &kubelan_cluster::ClusterClient,
    args: &DoctorArgs,
    facts: &ClusterFacts,
    gateway_snat: Option<bool>,
    timeout: Duration,
) {
    use callback::{NodeProbe, NodeResult, Situation, Target};
    if args.skip_callback {
        return;
    }
    let mut situation = Situation {
        target: SocketAddr::from(([0, 0, 0, 0], 0)),
        target_is_here: false,
        own: None,
        via: args.via,
        gateway_snat,
        lan: None,
        hop: None,
    };
    let mut arrivals = None;
    let report_all = |r: &mut Report, s: &Situation, nodes: &[NodeProbe]| {
        for (step, verdict, what, fix) in callback::findings(s, nodes) {
            r.add(step, verdict, what, fix);
        }
    };
    match callback::choose_target(args.callback_to, args.via, gateway_snat.is_some()) {
        Target::NotApplicable => return,
        Target::Unknown => {
            r.add(
                "callback",
                Verdict::Skip,
                "to check that pods can call LAN hosts (registry callbacks, webhooks), pass --callback-to PC:PORT, or run `kubelan doctor --via GATEWAY` on a LAN PC".into(),
                None,
            );
            report_all(r, &situation, &[]);
            return;
        }
        Target::Given(t) => {
            situation.target = t;
            // The most specific route to it that is not the default one: the LAN and the
            // next hop this host uses for it.
            if let Ok(routes) = kubelan_sys::net::routes().await
                && let Some(rt) = routes
                    .iter()
                    .filter(|rt| rt.table == 254 && rt.dst.contains(&t.ip()))
                    .filter(|rt| rt.dst.prefix_len() > 0)
                    .max_by_key(|rt| rt.dst.prefix_len())
            {
                situation.lan = Some(rt.dst);
                situation.hop = rt.gateway;
            }
        }
        Target::Here => {
            let towards = facts
                .prefixes()
                .map(|(_, f)| f.value)
                .next()
                .map(|p| p.hosts().next().unwrap_or(p.addr()));
            let Some(own) = towards.and_then(own_address_towards) else {
                r.add(
                    "callback",
                    Verdict::Skip,
                    "cannot tell this host's address towards the cluster; pass --callback-to"
                        .into(),
                    None,
                );
                return;
            };
            match callback::Arrivals::listen(own).await {
                Ok(a) => {
                    situation.target = a.addr;
                    arrivals = Some(a);
                }
                Err(e) => {
                    r.add(
                        "callback",
                        Verdict::Skip,
                        format!("cannot listen on {own}: {e}; pass --callback-to"),
                        None,
                    );
                    return;
                }
            }
            situation.target_is_here = true;
            situation.own = Some(own);
            situation.lan = kubelan_sys::net::addresses()
                .await
                .ok()
                .and_then(|a| a.into_iter().find(|a| a.net.addr() == own))
                .map(|a| a.net.trunc())
                .filter(|n| n.prefix_len() < n.max_prefix_len());
        }
    }

    // The nodes, at most MAX_NODES of them.
    let nodes = match Api::<k8s_openapi::api::core::v1::Node>::all(cc.client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(l) => l.items,
        Err(e) => {
            r.add(
                "callback",
                Verdict::Skip,
                format!("cannot list nodes: {e}"),
                None,
            );
            return;
        }
    };
    let mut nodes: Vec<(String, Vec<IpAddr>)> = nodes
        .into_iter()
        .map(|n| {
            let addrs = n
                .status
                .and_then(|s| s.addresses)
                .into_iter()
                .flatten()
                .filter_map(|a| a.address.parse().ok())
                .collect();
            (n.metadata.name.unwrap_or_default(), addrs)
        })
        .collect();
    nodes.sort();
    if nodes.len() > callback::MAX_NODES {
        r.add(
            "callback",
            Verdict::Info,
            format!(
                "probing the first {} of {} nodes",
                callback::MAX_NODES,
                nodes.len()
            ),
            None,
        );
        nodes.truncate(callback::MAX_NODES);
    }
    let image = probe_image(&cc.client, args.probe_image.as_deref()).await;
    let pods: Api<Pod> = Api::namespaced(cc.client.clone(), &cc.namespace);
    let run = format!("{:08x}", rand::random::<u32>());
    let mut results: BTreeMap<String, NodeResult> = BTreeMap::new();
    let mut created: Vec<(String, String, String)> = Vec::new(); // node, pod, token
    for (i, (node, _)) in nodes.iter().enumerate() {
        let name = format!("kubelan-doctor-{run}-{i}");
        let token = format!("{run}-{i}-{:016x}", rand::random::<u64>());
        let pod = match probe_pod(&name, &run, node, &image, situation.target, &token, timeout) {
            Ok(p) => p,
            Err(e) => {
                results.insert(node.clone(), NodeResult::NoPod(e.to_string()));
                continue;
            }
        };
        match pods.create(&kube::api::PostParams::default(), &pod).await {
            Ok(_) => created.push((node.clone(), name, token)),
            Err(e) => {
                let forbidden = matches!(&e, kube::Error::Api(s) if s.code == 403);
                r.add(
                    "callback",
                    Verdict::Skip,
                    format!(
                        "cannot create the probe pods in namespace {}: {e}",
                        cc.namespace
                    ),
                    Some(if forbidden {
                        format!("grant create, get and delete on pods in namespace {} (or pass -n with one you may use), or pass --skip-callback", cc.namespace)
                    } else {
                        "pass --skip-callback to leave it out".into()
                    }),
                );
                delete_probe_pods(&pods, &created).await;
                report_all(r, &situation, &[]);
                return;
            }
        }
    }

    // Wait until every pod runs with an address, or has ended, within a bound.
    let startup = Duration::from_secs(45);
    let started = Instant::now();
    let mut running: BTreeMap<String, IpAddr> = BTreeMap::new();
    let mut states: BTreeMap<String, String> = BTreeMap::new();
    loop {
        if let Ok(list) = pods
            .list(&ListParams::default().labels(&format!("{DOCTOR_RUN_LABEL}={run}")))
            .await
        {
            for p in list.items {
                let name = p.metadata.name.clone().unwrap_or_default();
                let status = p.status.as_ref();
                let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
                let ip = status
                    .and_then(|s| s.pod_ip.as_deref())
                    .and_then(|i| i.parse::<IpAddr>().ok());
                if let ("Running", Some(ip)) = (phase, ip) {
                    running.insert(name.clone(), ip);
                }
                states.insert(name, pod_state(&p));
            }
        }
        let ended = |n: &String| {
            states
                .get(n)
                .is_some_and(|s| s.starts_with("Failed") || s.starts_with("Succeeded"))
        };
        if created
            .iter()
            .all(|(_, name, _)| running.contains_key(name) || ended(name))
            || started.elapsed() > startup
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Each running pod's report, all at once.
    let budget = timeout * 3 + Duration::from_secs(5);
    let fetched = futures::future::join_all(created.iter().map(|(_, name, _)| {
        let ip = running.get(name).copied();
        async move {
            match ip {
                Some(ip) => Some(
                    callback::fetch_report(SocketAddr::new(ip, callback::PROBE_PORT), budget).await,
                ),
                None => None,
            }
        }
    }))
    .await;
    let arrived = match arrivals.as_mut() {
        Some(a) => a.collect(created.len(), Duration::from_secs(2)).await,
        None => BTreeMap::new(),
    };
    for ((node, name, token), report) in created.iter().zip(fetched) {
        let result = match report {
            None => NodeResult::NoPod(format!(
                "{} after {:.0} s (image {image})",
                states.get(name).map_or("not seen", String::as_str),
                started.elapsed().as_secs_f64()
            )),
            Some(Err(e)) => NodeResult::NoReport(format!(
                "{}:{}: {e}",
                running.get(name).map(IpAddr::to_string).unwrap_or_default(),
                callback::PROBE_PORT
            )),
            Some(Ok(report)) => NodeResult::Report {
                report,
                arrived: arrived.get(token).copied(),
            },
        };
        results.insert(node.clone(), result);
    }
    delete_probe_pods(&pods, &created).await;
    drop(arrivals);
    let probes: Vec<NodeProbe> = nodes
        .into_iter()
        .filter_map(|(node, addresses)| {
            let result = results.remove(&node)?;
            Some(NodeProbe {
                node,
                addresses,
                result,
            })
        })
        .collect();
    report_all(r, &situation, &probes);
}

async fn delete_probe_pods(pods: &Api<Pod>, created: &[(String, String, String)]) {
    let dp = kube::api::DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    futures::future::join_all(created.iter().map(|(_, name, _)| pods.delete(name, &dp))).await;
}

fn join(v: &[&String]) -> String {
    v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubelan_sys::net::Redirect;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn redirect(dst: &str, gw: &str, secs: u32) -> Redirect {
        Redirect {
            dst: ip(dst),
            gateway: ip(gw),
            dev: Some("eth0".into()),
            expires_secs: secs,
        }
    }

    #[test]
    fn a_redirect_to_an_old_gateway_fails_and_names_it() {
        let redirects = [
            redirect("172.17.32.2", "172.16.1.12", 280),
            redirect("172.17.33.4", "172.16.1.12", 290),
            // Outside the cluster prefixes: not ours to judge.
            redirect("192.0.2.7", "172.16.1.12", 100),
        ];
        let prefixes = ["172.17.32.0/19".parse().unwrap()];
        let table = |_: IpAddr| Some(ip("172.16.0.1"));
        let f = redirect_findings(&redirects, &prefixes, &table, Some(ip("172.16.1.30")));
        assert_eq!(f.len(), 1, "{f:?}");
        let (verdict, what, fix) = &f[0];
        assert_eq!(*verdict, Verdict::Fail);
        assert_eq!(
            what,
            "cached ICMP redirect: 172.17.32.2, 172.17.33.4 go straight to 172.16.1.12 instead of through 172.16.0.1, for up to 290 s more, not to the gateway 172.16.1.30: the router once redirected this host to a gateway on its own subnet and the host still uses that one"
        );
        assert!(fix.contains("ip route flush cache"), "{fix}");
        assert!(fix.contains("send_redirects=0"), "{fix}");
        assert!(
            fix.contains("segment") && fix.contains("on the PCs"),
            "{fix}"
        );
    }

    #[test]
    fn a_redirect_to_the_gateway_itself_is_a_warning() {
        let redirects = [redirect("172.17.32.2", "172.16.1.12", 30)];
        let prefixes = ["172.17.32.0/19".parse().unwrap()];
        let table = |_: IpAddr| Some(ip("172.16.0.1"));
        let f = redirect_findings(&redirects, &prefixes, &table, Some(ip("172.16.1.12")));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].0, Verdict::Warn);
        assert!(
            f[0].1.contains("minutes after the router moves"),
            "{}",
            f[0].1
        );
        let none = redirect_findings(&[], &prefixes, &table, Some(ip("172.16.1.12")));
        assert!(none.is_empty());
    }
}
