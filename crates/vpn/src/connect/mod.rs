//! `kubelan connect`: an L3 VPN from this machine into the cluster's Pod and Service
//! networks, with split DNS for the cluster domain; plus `status`, `quit` and `reset`.
//!
//! Order of work, so that nothing changes on the machine before every check passed:
//! clean up after a crashed earlier run → discover the cluster (with provenance) → start
//! the session → plan routes against every local route and address (refuse on overlap,
//! naming the flag) → TUN, pinned routes, cluster routes, DNS — each through the host
//! guard, journalled before it is made → serve until Ctrl-C / `kubelan quit` → restore.
//! Reconnects happen inside the session and never touch the TUN, routes or DNS.

mod control;
mod handler;
mod redirect;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use ipnet::IpNet;
use kubelan_cluster::discovery::{
    self, ClusterFacts, DiscoveryOverrides, Fact, LocalAddr, LocalRoute, RouteOptions, RoutePlan,
    Source,
};
use kubelan_dns::SplitZones;
use kubelan_netstack::{StackConfig, TunConfig};
use kubelan_session::{Session, SessionState};
use kubelan_sys::journal::{Change, HostGuard, StateDir};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::Output;
use crate::dnsrelay as dns;
use crate::tunnel::{self, TunnelArgs};

/// `kubelan connect` flags.
#[derive(Args, Debug)]
pub(crate) struct ConnectArgs {
    #[command(flatten)]
    pub(crate) tunnel: TunnelArgs,
    /// Leave this prefix out of the tunnel (repeatable): a part of a cluster prefix that
    /// your LAN uses.
    #[arg(long, value_name = "CIDR")]
    pub(crate) exclude: Vec<IpNet>,
    /// Route this cluster prefix into the tunnel even though it overlaps a local route or
    /// address (repeatable).
    #[arg(long, value_name = "CIDR")]
    pub(crate) force_route: Vec<IpNet>,
    /// The cluster's Service CIDR, instead of discovering it (repeatable).
    #[arg(long, value_name = "CIDR")]
    pub(crate) service_cidr: Vec<IpNet>,
    /// The cluster's Pod CIDR, instead of discovering it (repeatable).
    #[arg(long, value_name = "CIDR")]
    pub(crate) pod_cidr: Vec<IpNet>,
    /// The cluster DNS domain [default: discovered, else cluster.local].
    #[arg(long, value_name = "DOMAIN")]
    pub(crate) cluster_domain: Option<String>,
    /// The cluster DNS Service IP, instead of discovering it.
    #[arg(long, value_name = "IP")]
    pub(crate) cluster_dns: Option<IpAddr>,
    /// Name of the TUN device.
    #[arg(long, value_name = "NAME", default_value = "kubelan0")]
    pub(crate) tun: String,
    /// MTU of the TUN device (TCP segments are sized to fit it).
    #[arg(long, value_name = "BYTES", default_value_t = 1400, value_parser = clap::value_parser!(u16).range(576..=9000))]
    pub(crate) mtu: u16,
    /// Do not configure split DNS (reach names with `dig @<cluster DNS IP>` only).
    #[arg(long)]
    pub(crate) no_dns: bool,
    /// Output: state changes as lines for people, or one JSON event per line.
    #[arg(long, value_enum, default_value = "human")]
    pub(crate) output: Output,
}

/// `kubelan status` flags.
#[derive(Args, Debug)]
pub(crate) struct StatusArgs {
    /// Without a running `connect`: the cluster to show facts of.
    #[command(flatten)]
    kube: kubelan_cluster::KubeArgs,
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    output: Output,
}

/// Prints state changes as lines (stderr) or JSON events (stdout).
#[derive(Clone, Copy)]
pub(crate) struct Events {
    json: bool,
}

impl Events {
    pub(crate) fn new(json: bool) -> Self {
        Self { json }
    }

    pub(crate) fn json(&self) -> bool {
        self.json
    }

    pub(crate) fn emit(&self, event: &str, mut fields: serde_json::Value, human: &str) {
        if self.json {
            if let Some(map) = fields.as_object_mut() {
                map.insert("event".into(), event.into());
                map.insert("time".into(), now().into());
            }
            println!("{fields}");
        } else {
            eprintln!("{human}");
        }
    }
}

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Everything `kubelan status` reports about a running connect.
struct Live {
    session: Session,
    facts: ClusterFacts,
    plan: RoutePlan,
    tun: String,
    mtu: u16,
    dns: serde_json::Value,
    flows: Arc<handler::FlowStats>,
    dns_stats: Arc<dns::DnsStats>,
    stack: Arc<kubelan_netstack::Stats>,
    /// The TCP redirection (table, listeners), or why TCP stays on the TUN.
    redirect: serde_json::Value,
    redirector: Arc<redirect::Redirector>,
    started: String,
}

impl Live {
    fn status(&self) -> serde_json::Value {
        let state = self.session.state().borrow().clone();
        let (name, carriers) = match &state {
            SessionState::Connected { carriers, .. } => (
                "connected",
                carriers.iter().map(|c| c.to_string()).collect(),
            ),
            SessionState::Connecting => ("connecting", Vec::new()),
            SessionState::Reconnecting { .. } => ("reconnecting", Vec::new()),
            SessionState::Failed(_) => ("failed", Vec::new()),
        };
        let f = &self.flows;
        let d = &self.dns_stats;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let stack = self.stack.snapshot();
        json!({
            "pid": std::process::id(),
            "since": self.started,
            "state": name,
            "detail": state.to_string(),
            "carriers": carriers,
            "tun": {"name": self.tun, "mtu": self.mtu},
            "routes": self.plan.routes.iter().map(|r| json!({"prefix": r.dst.to_string(), "why": r.why})).collect::<Vec<_>>(),
            "pinned": self.plan.pinned.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            "facts": self.facts,
            "dns": self.dns,
            "redirect": self.redirect,
            "counters": {
                "tcp_flows": get(&f.tcp),
                "tcp_failed": get(&f.tcp_failed),
                "tcp_refused": get(&self.redirector.refused),
                "tcp_open": get(&f.tcp_open) + stack.tcp_open,
                "udp_flows": get(&f.udp),
                "bytes_up": get(&f.bytes_up),
                "bytes_down": get(&f.bytes_down),
                "pings": get(&f.pings),
                "pongs": get(&f.pongs),
                "dns_cluster": get(&d.cluster),
                "dns_upstream": get(&d.upstream),
                "dns_failed": get(&d.failed),
                "dns_malformed": get(&d.malformed),
                "session_flows_opened": get(&self.session.stats().flows_opened),
                "session_flows_failed": get(&self.session.stats().flows_failed),
                "carriers_up": get(&self.session.stats().carriers_up),
            },
            "stack": {
                "packets_in": stack.packets_in,
                "packets_out": stack.packets_out,
                "tcp_flows": stack.tcp_flows,
                "tcp_open": stack.tcp_open,
                "udp_flows": stack.udp_flows,
                "udp_dropped": stack.udp_dropped,
                "icmp_requests": stack.icmp_requests,
                "icmp_replies": stack.icmp_replies,
                "dropped": stack.dropped,
            },
        })
    }
}

/// What a tunnel-mode gateway adds to `connect`: forwarding for LAN clients and DNS on
/// the LAN address instead of this machine's resolver configuration.
pub(crate) struct LanService {
    /// Who is served.
    pub allowed: Vec<IpNet>,
    /// DNS sockets already bound on the LAN address, and that address.
    pub dns: Option<(dns::LanSockets, SocketAddr)>,
}

/// Runs `kubelan connect` until Ctrl-C, SIGTERM or `kubelan quit`.
pub(crate) async fn connect(args: ConnectArgs) -> anyhow::Result<()> {
    run(args, None).await
}

/// `connect`, or with `lan` the tunnel-mode gateway.
pub(crate) async fn run(args: ConnectArgs, lan: Option<LanService>) -> anyhow::Result<()> {
    let events = Events {
        json: args.output == Output::Json,
    };
    if !kubelan_sys::is_root() {
        bail!(
            "kubelan connect creates a network device and changes routes and DNS: run it with sudo"
        );
    }
    let state = StateDir::from_env();
    state
        .ensure()
        .with_context(|| format!("state directory {}", state.path().display()))?;
    if control::request(state.path(), "status").await?.is_some() {
        bail!(
            "kubelan connect is already running here; `sudo kubelan status` shows it, `sudo kubelan quit` stops it"
        );
    }
    // A crashed earlier run left changes behind: undo them before anything else.
    let leftovers = kubelan_sys::journal::reset(&state, false).await;
    if !leftovers.nothing_to_do() {
        for line in leftovers.lines() {
            events.emit(
                "cleanup",
                json!({"message": line}),
                &format!("• left by an earlier run: {line}"),
            );
        }
    }

    let shutdown = CancellationToken::new();
    events.emit(
        "state",
        json!({"state": "discovering"}),
        "… discovering the cluster",
    );
    let overrides = args.overrides();
    let mut never_route: Vec<IpAddr> = Vec::new();
    let (facts, tunnel) = if let Some(agent) = args.tunnel.agent {
        // A standalone agent: no Kubernetes API; facts come from flags, else the agent.
        never_route.push(agent.ip());
        let tunnel = tunnel::start(&args.tunnel, shutdown.clone(), &[]).await?;
        let facts = facts_from_agent(&tunnel.session, &overrides).await?;
        (facts, tunnel)
    } else {
        let cc = kubelan_cluster::connect(&args.tunnel.kube).await?;
        never_route.extend(api_addresses(&cc.server).await);
        let facts = discovery::discover(&cc, &overrides).await?;
        // The agent's direct addresses stay outside the tunnel, except those inside the
        // cluster's own prefixes (pod IPs), which only the tunnel reaches anyway.
        if let Ok(info) =
            kubelan_cluster::find_agent(&cc.client, &args.tunnel.agent_namespace).await
        {
            never_route.extend(
                kubelan_cluster::direct_endpoints(&info)
                    .iter()
                    .map(|a| a.ip())
                    .filter(|ip| !facts.prefixes().any(|(_, f)| f.value.contains(ip))),
            );
        }
        // Addresses inside the cluster prefixes go into the TUN: never a direct carrier's.
        let routed: Vec<IpNet> = facts.prefixes().map(|(_, f)| f.value).collect();
        let tunnel = tunnel::start(&args.tunnel, shutdown.clone(), &routed).await?;
        (facts, tunnel)
    };
    let session = tunnel.session.clone();
    let mut facts = with_agent_domain(facts, &session).await;
    if facts.cluster_domain.source != Source::Default {
        facts.notes.retain(|n| !n.starts_with("cluster domain:"));
    }
    for note in &facts.notes {
        events.emit("note", json!({"message": note}), &format!("  note: {note}"));
    }

    // Plan routes against what the machine has; refuse on overlap, before any change.
    let (local_routes, local_addrs) = local_network(&args.tun).await?;
    let opts = RouteOptions {
        exclude: args.exclude.clone(),
        force_route: args.force_route.clone(),
        never_route,
    };
    let plan = match discovery::plan_routes(&facts, &local_routes, &local_addrs, &opts) {
        Ok(p) => p,
        Err(conflicts) => {
            let mut msg = String::from(
                "cluster prefixes overlap this machine's networks; nothing was changed:",
            );
            for c in &conflicts {
                msg.push_str(&format!("\n  • {c}"));
            }
            bail!(msg);
        }
    };
    for w in &plan.warnings {
        events.emit("warning", json!({"message": w}), &format!("  warning: {w}"));
    }
    if plan.routes.is_empty() {
        bail!("no cluster prefix left to route (all excluded?); pass --pod-cidr / --service-cidr");
    }

    // Host changes: every one journalled first, undone on exit or by `kubelan reset`.
    if let Some(lan) = &lan {
        check_lan_vs_cluster(&lan.allowed, &facts)?;
    }
    let purpose = if lan.is_some() { "gateway" } else { "connect" };
    let mut guard = HostGuard::begin(&state, purpose)?;
    // Undoes the changes below if this process dies without doing so (kill -9, OOM).
    let _watcher = crate::watcher::start(&guard);
    let result = serve(
        &args, events, &mut guard, &session, facts, plan, lan, &shutdown,
    )
    .await;
    shutdown.cancel();
    restore(guard, events).await;
    result
}

/// Undoes the guard's changes and says what was restored (connect and gateway).
pub(crate) async fn restore(guard: HostGuard, events: Events) {
    let report = guard.restore().await;
    for o in &report.outcomes {
        events.emit(
            "restore",
            json!({"message": o.to_string()}),
            &format!("  {o}"),
        );
    }
    if !report.is_clean() {
        eprintln!("some changes could not be undone; `sudo kubelan reset` retries");
    }
}

/// Sets the machine up and serves until asked to stop.
#[allow(clippy::too_many_arguments)]
async fn serve(
    args: &ConnectArgs,
    events: Events,
    guard: &mut HostGuard,
    session: &Session,
    facts: ClusterFacts,
    plan: RoutePlan,
    lan: Option<LanService>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let tun = kubelan_netstack::open_tun(&TunConfig::new(args.tun.clone(), args.mtu))?;
    let name = tun.name().to_string();
    guard
        .apply(Change::Link {
            name: name.clone(),
            ifindex: Some(tun.index()),
        })
        .await?;
    kubelan_sys::net::link_up(&name, Some(u32::from(args.mtu))).await?;
    // Pin what must never enter the tunnel (the API server, the agent's direct address)
    // to the path it has now, before the broader cluster routes go in.
    for ip in &plan.pinned {
        let path = kubelan_sys::net::route_get(*ip).await?;
        let Some(dev) = path.dev.clone() else {
            continue;
        };
        guard
            .apply(Change::Route {
                dst: IpNet::from(*ip),
                dev,
                gateway: path.gateway,
                ifindex: None,
            })
            .await?;
    }
    let mut routed: Vec<IpNet> = Vec::new();
    for r in &plan.routes {
        guard
            .apply(Change::Route {
                dst: r.dst,
                dev: name.clone(),
                gateway: None,
                ifindex: Some(tun.index()),
            })
            .await?;
        routed.push(r.dst);
    }
    events.emit(
        "routes",
        json!({"tun": name, "routes": plan.routes.iter().map(|r| json!({"prefix": r.dst.to_string(), "why": r.why})).collect::<Vec<_>>()}),
        &plan
            .routes
            .iter()
            .map(|r| format!("✓ route {} → {name} ({})", r.dst, r.why))
            .collect::<Vec<_>>()
            .join("\n"),
    );

    // Split DNS: cluster names to us (the cluster DNS address, caught on the TUN).
    let domain = facts.cluster_domain.value.trim_matches('.').to_string();
    let dns_ip = facts.dns_server.as_ref().map(|f| f.value);
    let ns = namespace_of(args);
    let mut upstreams: Vec<IpAddr> = Vec::new();
    let mut dns_status = json!({"configured": false});
    if let Some(ip) = dns_ip {
        if !routed.iter().any(|n| n.contains(&ip)) {
            guard
                .apply(Change::Route {
                    dst: IpNet::from(ip),
                    dev: name.clone(),
                    gateway: None,
                    ifindex: Some(tun.index()),
                })
                .await?;
            routed.push(IpNet::from(ip));
        }
        if !args.no_dns && lan.is_none() {
            let backend =
                kubelan_sys::dns::detect(Path::new(kubelan_sys::dns::DEFAULT_RESOLV_CONF));
            let dns_plan = kubelan_sys::dns::DnsPlan {
                link: name.clone(),
                servers: vec![ip],
                routing_domains: vec![domain.clone()],
                search: vec![
                    format!("{ns}.svc.{domain}"),
                    format!("svc.{domain}"),
                    domain.clone(),
                ],
            };
            upstreams = kubelan_sys::dns::apply(guard, &backend, &dns_plan).await?;
            dns_status = json!({
                "configured": true,
                "backend": backend.to_string(),
                "server": ip.to_string(),
                "routing_domains": dns_plan.routing_domains,
                "search": dns_plan.search,
                "upstreams": upstreams.iter().map(|u| u.to_string()).collect::<Vec<_>>(),
            });
            events.emit(
                "dns",
                dns_status.clone(),
                &format!(
                    "✓ DNS: *.{domain} → {ip} (through the tunnel), search {}; other names → {} ({backend})",
                    dns_plan.search.join(" "),
                    if upstreams.is_empty() {
                        "nowhere (the machine had no resolver)".to_string()
                    } else {
                        upstreams.iter().map(|u| u.to_string()).collect::<Vec<_>>().join(", ")
                    }
                ),
            );
        }
    } else {
        events.emit(
            "warning",
            json!({"message": "no cluster DNS Service found; DNS is not configured (pass --cluster-dns IP)"}),
            "  warning: no cluster DNS Service found; DNS is not configured (pass --cluster-dns IP)",
        );
    }
    if lan.is_some() {
        // A gateway leaves this host's resolver alone and forwards to it.
        upstreams = dns::host_resolvers(
            Path::new(kubelan_sys::dns::DEFAULT_RESOLV_CONF),
            &lan.as_ref()
                .and_then(|l| l.dns.as_ref())
                .map(|(_, a)| a.ip())
                .into_iter()
                .collect::<Vec<_>>(),
        )?;
    }
    // Names outside the cluster go where they went before; never back to ourselves.
    upstreams.retain(|u| Some(*u) != dns_ip);

    let prefixes = facts
        .prefixes()
        .map(|(_, f)| (f.value.addr(), f.value.prefix_len()))
        .collect::<Vec<_>>();
    let dns_stats = Arc::new(dns::DnsStats::default());
    let relay = Arc::new(dns::DnsRelay {
        zones: SplitZones::new(&domain, prefixes),
        cluster: dns::ClusterPath::Agent(session.clone()),
        cluster_dns: SocketAddr::new(dns_ip.unwrap_or(IpAddr::from([0, 0, 0, 0])), 53),
        upstreams: upstreams.iter().map(|u| SocketAddr::new(*u, 53)).collect(),
        stats: dns_stats.clone(),
        failures: Default::default(),
    });
    let lan_allowed = lan.as_ref().map(|l| l.allowed.clone()).unwrap_or_default();
    let mut lan_task = None;
    if let Some(lan) = lan {
        if kubelan_sys::sysctl::set(guard, "net.ipv4.ip_forward", "1")? {
            events.emit(
                "forwarding",
                json!({"enabled": true}),
                "✓ enabled IPv4 forwarding (net.ipv4.ip_forward = 1)",
            );
        }
        if let Some((sockets, listen)) = lan.dns {
            let mut allowed = lan.allowed.clone();
            allowed.push(IpNet::from(listen.ip()));
            allowed.push(IpNet::from(IpAddr::from([127, 0, 0, 1])));
            let service = Arc::new(dns::LanDns::new(relay.clone(), allowed));
            lan_task = Some(dns::serve_lan(sockets, service, shutdown.clone()));
            events.emit(
                "dns",
                json!({"listen": listen.to_string(), "domain": domain, "upstreams": upstreams}),
                &format!(
                    "✓ DNS for {} on {listen}: *.{domain} through the tunnel; other names → {}",
                    lan.allowed
                        .iter()
                        .map(IpNet::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                    if upstreams.is_empty() {
                        "nowhere (this host has no resolver): SERVFAIL".to_string()
                    } else {
                        upstreams
                            .iter()
                            .map(IpAddr::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                ),
            );
        }
        events.emit(
            "ready",
            json!({"mode": "tunnel"}),
            "gateway ready: route the cluster prefixes to this host on the office router (`kubelan routes` prints them)",
        );
    }
    let flows = Arc::new(handler::FlowStats::default());
    let dns_addr = dns_ip.map(|ip| SocketAddr::new(ip, 53));
    let handler = Arc::new(handler::TunHandler {
        session: session.clone(),
        dns_addr,
        dns: relay.clone(),
        stats: flows.clone(),
    });
    let redirector = Arc::new(redirect::Redirector::new(
        redirect::Policy {
            cluster: routed.clone(),
            skip: plan.pinned.iter().map(|ip| IpNet::from(*ip)).collect(),
            lan: lan_allowed,
        },
        session.clone(),
        dns_addr,
        relay,
        flows.clone(),
    ));
    let redirect_status =
        redirect::start(guard, redirector.clone(), events, shutdown.clone()).await?;
    let stack_stats = Arc::new(kubelan_netstack::Stats::default());
    let mut stack_cfg = StackConfig::default();
    stack_cfg.mtu = args.mtu;
    let mut stack = tokio::spawn(kubelan_netstack::run(
        tun,
        stack_cfg,
        handler,
        stack_stats.clone(),
    ));

    let live = Arc::new(Live {
        session: session.clone(),
        facts,
        plan,
        tun: name.clone(),
        mtu: args.mtu,
        dns: dns_status,
        flows,
        dns_stats,
        stack: stack_stats,
        redirect: redirect_status,
        redirector,
        started: now(),
    });
    let quit = CancellationToken::new();
    let status_live = live.clone();
    let control =
        control::serve(guard, Arc::new(move || status_live.status()), quit.clone()).await?;
    report_states(session, events, shutdown.clone());

    let result = tokio::select! {
        () = crate::shutdown_signal() => Ok(()),
        () = quit.cancelled() => {
            events.emit("state", json!({"state": "quitting"}), "… `kubelan quit` asked to disconnect");
            Ok(())
        }
        r = &mut stack => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(anyhow::Error::from(e).context("the TUN device failed")),
            Err(e) => Err(anyhow::anyhow!("the packet stack stopped: {e}")),
        },
    };
    stack.abort();
    quit.cancel();
    if let Some(t) = lan_task {
        t.abort();
    }
    let _ = control.await;
    events.emit(
        "state",
        json!({"state": "disconnecting"}),
        "… disconnecting, restoring routes and DNS",
    );
    result
}

/// Prints session state changes until shutdown.
fn report_states(session: &Session, events: Events, shutdown: CancellationToken) {
    if !events.json {
        tunnel::report_state(session, shutdown);
        return;
    }
    tunnel::on_state_change(session, shutdown, move |now, line| {
        let state = match now {
            SessionState::Connecting => "connecting",
            SessionState::Connected { .. } => "connected",
            SessionState::Reconnecting { .. } => "reconnecting",
            SessionState::Failed(_) => "failed",
        };
        events.emit("state", json!({"state": state, "detail": line}), line);
    });
}

fn namespace_of(args: &ConnectArgs) -> String {
    args.tunnel
        .kube
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into())
}

/// The API server's addresses (from its URL; names are resolved as the client would).
async fn api_addresses(server: &str) -> Vec<IpAddr> {
    let Ok(url) = server.parse::<http::Uri>() else {
        return Vec::new();
    };
    let Some(host) = url.host() else {
        return Vec::new();
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return vec![ip];
    }
    let port = url.port_u16().unwrap_or(443);
    tokio::net::lookup_host((host, port))
        .await
        .map(|it| it.map(|a| a.ip()).collect())
        .unwrap_or_default()
}

/// This machine's routes (main table, unicast, not through our own TUN) and addresses.
async fn local_network(tun: &str) -> anyhow::Result<(Vec<LocalRoute>, Vec<LocalAddr>)> {
    use kubelan_sys::net::RouteKind;
    let routes = kubelan_sys::net::routes()
        .await
        .context("reading this machine's routes")?
        .into_iter()
        .filter(|r| r.table == 254 && r.kind == RouteKind::Unicast)
        .filter_map(|r| {
            let dev = r.dev?;
            (dev != tun).then_some(LocalRoute {
                dst: r.dst,
                dev,
                gateway: r.gateway,
            })
        })
        .collect();
    let addrs = kubelan_sys::net::addresses()
        .await
        .context("reading this machine's addresses")?
        .into_iter()
        .filter(|a| a.link != tun && a.link != "lo")
        .map(|a| LocalAddr {
            dev: a.link,
            net: a.net,
        })
        .collect();
    Ok((routes, addrs))
}

/// With a standalone agent (no Kubernetes API): flags first, else what the agent says.
async fn facts_from_agent(
    session: &Session,
    overrides: &DiscoveryOverrides,
) -> anyhow::Result<ClusterFacts> {
    session
        .wait_connected(Duration::from_secs(30))
        .await
        .context("the agent did not answer within 30 s")?;
    let agent_facts = session.facts().unwrap_or_default();
    let agent = agent_facts.agent.clone();
    let from_agent = || Source::Agent {
        agent: agent.clone(),
    };
    let flag = |f: &str| Source::Flag { flag: f.into() };
    let cidrs = |given: &[IpNet], flagname: &str, theirs: &[kubelan_proto::Cidr]| {
        if given.is_empty() {
            theirs
                .iter()
                .filter_map(|c| IpNet::new(c.addr, c.prefix).ok())
                .map(|n| Fact::new(n, from_agent()))
                .collect::<Vec<_>>()
        } else {
            given
                .iter()
                .map(|n| Fact::new(*n, flag(flagname)))
                .collect()
        }
    };
    Ok(ClusterFacts {
        service_cidrs: cidrs(
            &overrides.service_cidrs,
            "--service-cidr",
            &agent_facts.service_cidrs,
        ),
        pod_cidrs: cidrs(&overrides.pod_cidrs, "--pod-cidr", &agent_facts.pod_cidrs),
        cluster_domain: match &overrides.cluster_domain {
            Some(d) => Fact::new(d.clone(), flag("--cluster-domain")),
            None if !agent_facts.cluster_domain.is_empty() => {
                Fact::new(agent_facts.cluster_domain.clone(), from_agent())
            }
            None => Fact::new(
                discovery::DEFAULT_CLUSTER_DOMAIN.to_string(),
                Source::Default,
            ),
        },
        dns_server: match overrides.dns_server {
            Some(ip) => Some(Fact::new(ip, flag("--cluster-dns"))),
            None => agent_facts
                .dns_server
                .map(|a| Fact::new(a.ip(), from_agent())),
        },
        notes: Vec::new(),
    })
}

/// The cluster domain from the agent when discovery only had the default.
async fn with_agent_domain(mut facts: ClusterFacts, session: &Session) -> ClusterFacts {
    if facts.cluster_domain.source != Source::Default {
        return facts;
    }
    if session
        .wait_connected(Duration::from_secs(10))
        .await
        .is_ok()
        && let Some(f) = session.facts()
        && !f.cluster_domain.is_empty()
    {
        facts.cluster_domain = Fact::new(
            f.cluster_domain.trim_matches('.').to_string(),
            Source::Agent { agent: f.agent },
        );
    }
    facts
}

/// `kubelan status`: the running connect's state, else the cluster's facts and the
/// routes a connect would add.
pub(crate) async fn status(args: StatusArgs) -> anyhow::Result<std::process::ExitCode> {
    let state = StateDir::from_env();
    let running = match control::request(state.path(), "status").await {
        Ok(st) => st,
        Err(e) => {
            eprintln!("note: {e:#}; showing the cluster instead");
            None
        }
    };
    if let Some(st) = running {
        if args.output == Output::Json {
            println!("{}", serde_json::to_string_pretty(&st)?);
        } else {
            print_running(&st);
        }
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let cc = kubelan_cluster::connect(&args.kube).await?;
    let facts = discovery::discover(&cc, &DiscoveryOverrides::default()).await?;
    let (routes, addrs) = local_network("kubelan0").await.unwrap_or_default();
    let plan = discovery::plan_routes(&facts, &routes, &addrs, &RouteOptions::default());
    if args.output == Output::Json {
        let (planned, conflicts) = match &plan {
            Ok(p) => (
                p.routes
                    .iter()
                    .map(|r| json!({"prefix": r.dst.to_string(), "why": r.why}))
                    .collect(),
                Vec::new(),
            ),
            Err(c) => (Vec::new(), c.iter().map(|c| c.to_string()).collect()),
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "state": "not connected",
                "context": cc.context,
                "server": cc.server,
                "facts": facts,
                "planned_routes": planned,
                "conflicts": conflicts,
            }))?
        );
    } else {
        println!("not connected (context {}, {})\n", cc.context, cc.server);
        println!("{facts}");
        match &plan {
            Ok(p) => {
                println!("\n`sudo kubelan connect` would route:");
                for r in &p.routes {
                    println!("  {:<20} {}", r.dst.to_string(), r.why);
                }
            }
            Err(conflicts) => {
                println!("\n`kubelan connect` would refuse; overlaps with this machine:");
                for c in conflicts {
                    println!("  • {c}");
                }
            }
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn print_running(st: &serde_json::Value) {
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
    let join = |v: &serde_json::Value, sep: &str| {
        v.as_array()
            .into_iter()
            .flatten()
            .map(s)
            .collect::<Vec<_>>()
            .join(sep)
    };
    println!(
        "kubelan connect (pid {}), since {}",
        st["pid"],
        s(&st["since"])
    );
    println!("  state:    {}", s(&st["detail"]));
    println!(
        "  tun:      {} (mtu {})",
        s(&st["tun"]["name"]),
        st["tun"]["mtu"]
    );
    println!("  routes:");
    for r in st["routes"].as_array().into_iter().flatten() {
        println!("    {:<20} {}", s(&r["prefix"]), s(&r["why"]));
    }
    for p in st["pinned"].as_array().into_iter().flatten() {
        println!(
            "    {:<20} kept outside the tunnel (API server or agent address)",
            s(p)
        );
    }
    let dns = &st["dns"];
    if dns["configured"] == true {
        println!(
            "  dns:      {} via {}; search {}; other names → {}",
            join(&dns["routing_domains"], " "),
            s(&dns["backend"]),
            join(&dns["search"], " "),
            join(&dns["upstreams"], ", ")
        );
    } else {
        println!("  dns:      not configured");
    }
    let r = &st["redirect"];
    if r["active"] == true {
        println!(
            "  tcp:      redirected by nftables table {} to {} (kernel TCP)",
            s(&r["table"]),
            join(&r["listen"], ", ")
        );
    } else {
        println!(
            "  tcp:      through the userspace stack ({})",
            s(&r["reason"])
        );
    }
    let c = &st["counters"];
    println!(
        "  flows:    {} TCP ({} open, {} failed, {} refused), {} UDP, {} pings ({} answered); {} B up, {} B down",
        c["tcp_flows"],
        c["tcp_open"],
        c["tcp_failed"],
        c["tcp_refused"],
        c["udp_flows"],
        c["pings"],
        c["pongs"],
        c["bytes_up"],
        c["bytes_down"]
    );
    println!(
        "  dns:      {} cluster queries, {} other, {} failed",
        c["dns_cluster"], c["dns_upstream"], c["dns_failed"]
    );
}

/// Refuses LANs that overlap a cluster prefix (their traffic would be taken for the
/// cluster's own, and pod-to-pod traffic for the LAN's).
pub(crate) fn check_lan_vs_cluster(lans: &[IpNet], facts: &ClusterFacts) -> anyhow::Result<()> {
    for l in lans {
        for (kind, f) in facts.prefixes() {
            let c = f.value;
            if l.contains(&c) || c.contains(l) {
                bail!(
                    "--lan {l} overlaps the cluster's {kind} prefix {c} ({}); a LAN must not share addresses with the cluster. Nothing was changed.",
                    f.source
                );
            }
        }
    }
    Ok(())
}

/// `kubelan quit`: asks a running connect to disconnect and waits until it has.
pub(crate) async fn quit() -> anyhow::Result<()> {
    let state = StateDir::from_env();
    let Some(st) = control::request(state.path(), "status").await? else {
        bail!("kubelan connect is not running here");
    };
    let pid = st["pid"].as_u64().unwrap_or(0) as u32;
    control::request(state.path(), "quit").await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while pid != 0 && kubelan_sys::process_alive(pid) {
        if tokio::time::Instant::now() > deadline {
            bail!("kubelan connect (pid {pid}) did not stop within 15 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("disconnected");
    Ok(())
}

/// `kubelan reset`: undoes what crashed kubelan processes left on this machine.
pub(crate) async fn reset(force: bool) -> anyhow::Result<std::process::ExitCode> {
    let state = StateDir::from_env();
    // A persistent gateway first: stopping it makes it undo its own changes.
    let unit = crate::gateway::persist::remove(Path::new(crate::gateway::persist::UNIT_DIR)).await;
    let unit_failed = matches!(unit, Some(Err(_)));
    match &unit {
        Some(Ok(line)) => println!("{line}"),
        Some(Err(e)) => println!("could not remove the persistent gateway: {e:#}"),
        None => {}
    }
    let report = kubelan_sys::journal::reset(&state, force).await;
    if report.nothing_to_do() {
        if unit.is_none() {
            println!("nothing to reset: no changes by kubelan are left on this machine");
        }
        return Ok(if unit_failed {
            std::process::ExitCode::FAILURE
        } else {
            std::process::ExitCode::SUCCESS
        });
    }
    for line in report.lines() {
        println!("{line}");
    }
    Ok(if report.is_clean() && !unit_failed {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}
