//! `kubelan connect`: an L3 VPN from this machine into the cluster's Pod and Service
//! networks, with split DNS for the cluster domain; plus what `status` and `quit` ask of a
//! running one.
//!
//! Order of work, so that nothing changes on the machine before every check passed:
//! clean up after a crashed earlier run → discover the cluster (with provenance) → start
//! the session → plan the host changes against every local route and address (refuse on
//! overlap, naming the flag; [`crate::plan`]) → TUN, pinned routes, cluster routes, DNS —
//! each through the host guard, journalled before it is made → serve until stopped or
//! `kubelan quit` → restore. Reconnects happen inside the session and never touch the TUN,
//! routes or DNS.

mod control;
mod handler;
mod redirect;
mod status;

pub use status::{
    Counters, DnsStatus, RedirectStatus, RouteStatus, StackCounters, Status, TunStatus,
};

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use futures::future::BoxFuture;
use ipnet::IpNet;
use kubelan_cluster::KubeArgs;
use kubelan_cluster::discovery::{
    self, ClusterFacts, Conflict, DiscoveryOverrides, Fact, LocalAddr, LocalRoute, RouteOptions,
    RoutePlan, Source,
};
use kubelan_dns::SplitZones;
use kubelan_netstack::{StackConfig, TunConfig};
use kubelan_session::{Session, SessionState};
use kubelan_sys::journal::{Change, HostGuard, StateDir};
use tokio_util::sync::CancellationToken;

use crate::dnsrelay as dns;
use crate::event::{DnsConfigured, Event, EventSink};
use crate::plan::{self, DnsChange, HostPlan, NftChange, PlanError, PlanInput, PlanMode, TunSpec};

/// Starts the session to the agent; `routed` are the prefixes the caller routes into the
/// TUN (never dialled directly). The binary's implementation asks before installing a
/// missing agent.
pub type StartSession = Arc<
    dyn Fn(Vec<IpNet>, CancellationToken) -> BoxFuture<'static, anyhow::Result<Session>>
        + Send
        + Sync,
>;

/// What `kubelan connect` is asked to do.
#[derive(Clone)]
pub struct ConnectOptions {
    /// The cluster (kubeconfig, context, namespace for bare names).
    pub kube: KubeArgs,
    /// Namespace of the agent.
    pub agent_namespace: String,
    /// A standalone agent's address (no Kubernetes API).
    pub agent: Option<SocketAddr>,
    /// Starts the session.
    pub start_session: StartSession,
    /// Prefixes left out of the tunnel.
    pub exclude: Vec<IpNet>,
    /// Overlapping prefixes routed anyway.
    pub force_route: Vec<IpNet>,
    /// Facts given on the command line instead of discovered.
    pub overrides: DiscoveryOverrides,
    /// The TUN device's name.
    pub tun: String,
    /// The TUN's MTU.
    pub mtu: u16,
    /// Leave this machine's resolver configuration alone.
    pub no_dns: bool,
}

impl ConnectOptions {
    /// The namespace bare names resolve in.
    fn namespace(&self) -> String {
        self.kube
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into())
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
    dns: DnsStatus,
    flows: Arc<handler::FlowStats>,
    dns_stats: Arc<dns::DnsStats>,
    stack: Arc<kubelan_netstack::Stats>,
    /// The TCP redirection (table, listeners), or why TCP stays on the TUN.
    redirect: RedirectStatus,
    redirector: Arc<redirect::Redirector>,
    started: String,
}

impl Live {
    fn status(&self) -> Status {
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
        Status {
            pid: std::process::id(),
            since: self.started.clone(),
            state: name.into(),
            detail: state.to_string(),
            carriers,
            tun: TunStatus {
                name: self.tun.clone(),
                mtu: self.mtu,
            },
            routes: self.plan.routes.iter().map(RouteStatus::from).collect(),
            pinned: self.plan.pinned.iter().map(|p| p.to_string()).collect(),
            facts: serde_json::to_value(&self.facts).unwrap_or_default(),
            dns: self.dns.clone(),
            redirect: self.redirect.clone(),
            counters: Counters {
                tcp_flows: get(&f.tcp),
                tcp_failed: get(&f.tcp_failed),
                tcp_refused: get(&self.redirector.refused),
                tcp_open: get(&f.tcp_open) + stack.tcp_open,
                udp_flows: get(&f.udp),
                bytes_up: get(&f.bytes_up),
                bytes_down: get(&f.bytes_down),
                pings: get(&f.pings),
                pongs: get(&f.pongs),
                dns_cluster: get(&d.cluster),
                dns_upstream: get(&d.upstream),
                dns_failed: get(&d.failed),
                dns_malformed: get(&d.malformed),
                session_flows_opened: get(&self.session.stats().flows_opened),
                session_flows_failed: get(&self.session.stats().flows_failed),
                carriers_up: get(&self.session.stats().carriers_up),
            },
            stack: StackCounters {
                packets_in: stack.packets_in,
                packets_out: stack.packets_out,
                tcp_flows: stack.tcp_flows,
                tcp_open: stack.tcp_open,
                udp_flows: stack.udp_flows,
                udp_dropped: stack.udp_dropped,
                icmp_requests: stack.icmp_requests,
                icmp_replies: stack.icmp_replies,
                dropped: stack.dropped,
            },
        }
    }
}

/// What a tunnel-mode gateway adds to `connect`: the LANs it serves, and DNS sockets
/// already bound on the LAN address with that address.
pub(crate) struct LanSide {
    /// Who is served.
    pub(crate) lans: Vec<IpNet>,
    /// DNS sockets already bound on the LAN address, and that address.
    pub(crate) dns: Option<(dns::LanSockets, SocketAddr)>,
}

/// What ends a run when it completes (the binary's waits for Ctrl-C, SIGTERM or SIGHUP).
/// It is polled only once the host is set up, so a signal handler it installs on first
/// poll leaves the default handling in place while nothing needs undoing.
pub type Stop = BoxFuture<'static, ()>;

/// Runs `kubelan connect` until `stop` completes or `kubelan quit`.
///
/// # Errors
/// A sentence naming the fix when a check fails (nothing changed then) or the TUN fails.
pub async fn run(opts: ConnectOptions, events: EventSink, stop: Stop) -> anyhow::Result<()> {
    run_tunnel(opts, None, events, stop).await
}

/// Undoes the changes leftover journals describe, saying what was undone.
pub(crate) async fn clean_leftovers(state: &StateDir, events: &EventSink) {
    let leftovers = kubelan_sys::journal::reset(state, false).await;
    if !leftovers.nothing_to_do() {
        for message in leftovers.lines() {
            events(Event::Cleanup { message });
        }
    }
}

/// `connect`, or with `lan` the tunnel-mode gateway.
pub(crate) async fn run_tunnel(
    opts: ConnectOptions,
    lan: Option<LanSide>,
    events: EventSink,
    stop: Stop,
) -> anyhow::Result<()> {
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
    clean_leftovers(&state, &events).await;

    let shutdown = CancellationToken::new();
    events(Event::Discovering);
    let overrides = &opts.overrides;
    let mut never_route: Vec<IpAddr> = Vec::new();
    let (facts, session) = if let Some(agent) = opts.agent {
        // A standalone agent: no Kubernetes API; facts come from flags, else the agent.
        never_route.push(agent.ip());
        let session = (opts.start_session)(Vec::new(), shutdown.clone()).await?;
        let facts = facts_from_agent(&session, overrides).await?;
        (facts, session)
    } else {
        let cc = kubelan_cluster::connect(&opts.kube).await?;
        never_route.extend(api_addresses(&cc.server).await);
        let facts = discovery::discover(&cc, overrides).await?;
        // The agent's direct addresses stay outside the tunnel, except those inside the
        // cluster's own prefixes (pod IPs), which only the tunnel reaches anyway.
        if let Ok(info) = kubelan_cluster::find_agent(&cc.client, &opts.agent_namespace).await {
            never_route.extend(
                kubelan_cluster::direct_endpoints(&info)
                    .iter()
                    .map(|a| a.ip())
                    .filter(|ip| !facts.prefixes().any(|(_, f)| f.value.contains(ip))),
            );
        }
        // Addresses inside the cluster prefixes go into the TUN: never a direct carrier's.
        let routed: Vec<IpNet> = facts.prefixes().map(|(_, f)| f.value).collect();
        let session = (opts.start_session)(routed, shutdown.clone()).await?;
        (facts, session)
    };
    let mut facts = with_agent_domain(facts, &session).await;
    if facts.cluster_domain.source != Source::Default {
        facts.notes.retain(|n| !n.starts_with("cluster domain:"));
    }
    for note in &facts.notes {
        events(Event::Note {
            message: note.clone(),
        });
    }

    // Plan against what the machine has; refuse on overlap, before any change.
    let (local_routes, local_addrs) = local_network(&opts.tun).await?;
    let route_opts = RouteOptions {
        exclude: opts.exclude.clone(),
        force_route: opts.force_route.clone(),
        never_route,
    };
    let mode = match &lan {
        None => PlanMode::Connect {
            no_dns: opts.no_dns,
            namespace: opts.namespace(),
        },
        Some(l) => PlanMode::TunnelGateway {
            lans: l.lans.clone(),
            no_dns: l.dns.is_none(),
        },
    };
    let input = PlanInput {
        facts: &facts,
        local_routes: &local_routes,
        local_addrs: &local_addrs,
        routes: &route_opts,
        tun: TunSpec {
            name: opts.tun.clone(),
            mtu: opts.mtu,
        },
        mode,
    };
    let plan = plan::plan(&input).map_err(|e| refuse(e, &events))?;
    for w in &plan.warnings {
        events(warning_event(w));
    }

    // Host changes: every one journalled first, undone on exit or by `kubelan reset`.
    let purpose = if lan.is_some() { "gateway" } else { "connect" };
    let mut guard = HostGuard::begin(&state, purpose)?;
    // Undoes the changes below if this process dies without doing so (kill -9, OOM).
    let _watcher = crate::watcher::start(&guard, &events);
    let ctx = Ctx {
        events: events.clone(),
        session,
        shutdown: shutdown.clone(),
    };
    let result = serve(&ctx, &mut guard, facts, plan, lan.and_then(|l| l.dns), stop).await;
    shutdown.cancel();
    restore(guard, &events).await;
    result
}

/// Shows the warnings that precede a refusal and returns the refusal.
pub(crate) fn refuse(e: PlanError, events: &EventSink) -> PlanError {
    for w in e.warnings() {
        events(warning_event(w));
    }
    e
}

/// A plan warning as an event.
pub(crate) fn warning_event(w: &plan::PlanWarning) -> Event {
    match w {
        plan::PlanWarning::Route(message) => Event::Warning {
            message: message.clone(),
        },
        plan::PlanWarning::Ipv6NotForwarded(prefix) => Event::Ipv6NotForwarded { prefix: *prefix },
    }
}

/// Undoes the guard's changes and says what was restored (connect and gateway).
pub(crate) async fn restore(guard: HostGuard, events: &EventSink) {
    let report = guard.restore().await;
    for o in &report.outcomes {
        events(Event::Restored {
            outcome: o.to_string(),
        });
    }
    if !report.is_clean() {
        events(Event::RestoreIncomplete);
    }
}

/// What a running connect shares between its parts.
struct Ctx {
    events: EventSink,
    session: Session,
    /// Ends the session and the tasks around it.
    shutdown: CancellationToken,
}

/// Makes the plan's changes through the guard and serves until asked to stop.
async fn serve(
    ctx: &Ctx,
    guard: &mut HostGuard,
    facts: ClusterFacts,
    plan: HostPlan,
    lan_dns: Option<(dns::LanSockets, SocketAddr)>,
    stop: Stop,
) -> anyhow::Result<()> {
    let events = &ctx.events;
    let session = &ctx.session;
    let spec = plan.tun.clone().context("the plan has no TUN")?;
    let tun = kubelan_netstack::open_tun(&TunConfig::new(spec.name.clone(), spec.mtu))?;
    let name = tun.name().to_string();
    guard
        .apply(Change::Link {
            name: name.clone(),
            ifindex: Some(tun.index()),
        })
        .await?;
    kubelan_sys::net::link_up(&name, Some(u32::from(spec.mtu))).await?;
    // Pin what must never enter the tunnel (the API server, the agent's direct address)
    // to the path it has now, before the broader cluster routes go in.
    for ip in &plan.routes.pinned {
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
    for r in &plan.routes.routes {
        guard
            .apply(Change::Route {
                dst: r.dst,
                dev: name.clone(),
                gateway: None,
                ifindex: Some(tun.index()),
            })
            .await?;
    }
    events(Event::Routes {
        tun: name.clone(),
        routes: plan
            .routes
            .routes
            .iter()
            .map(|r| (r.dst, r.why.clone()))
            .collect(),
    });

    // Split DNS: cluster names to us (the cluster DNS address, caught on the TUN).
    let domain = facts.cluster_domain.value.trim_matches('.').to_string();
    let dns_ip = facts.dns_server.as_ref().map(|f| f.value);
    if let Some(dst) = plan.dns_route {
        guard
            .apply(Change::Route {
                dst,
                dev: name.clone(),
                gateway: None,
                ifindex: Some(tun.index()),
            })
            .await?;
    }
    let mut upstreams: Vec<IpAddr> = Vec::new();
    let mut dns_status = DnsStatus::NotConfigured { configured: false };
    if let DnsChange::Host(host) = &plan.dns {
        let backend = kubelan_sys::dns::detect(Path::new(kubelan_sys::dns::DEFAULT_RESOLV_CONF));
        let dns_plan = kubelan_sys::dns::DnsPlan {
            link: host.link.clone(),
            servers: vec![host.server],
            routing_domains: host.routing_domains.clone(),
            search: host.search.clone(),
        };
        upstreams = kubelan_sys::dns::apply(guard, &backend, &dns_plan).await?;
        let config = DnsConfigured {
            configured: true,
            backend: backend.to_string(),
            server: host.server.to_string(),
            routing_domains: dns_plan.routing_domains,
            search: dns_plan.search,
            upstreams: upstreams.iter().map(|u| u.to_string()).collect(),
        };
        dns_status = DnsStatus::Configured(config.clone());
        events(Event::Dns {
            domain: domain.clone(),
            config,
        });
    }
    if plan.dns_missing {
        events(Event::NoClusterDns);
    }
    let gateway = !plan.lans().is_empty();
    if gateway {
        // A gateway leaves this host's resolver alone and forwards to it.
        upstreams = dns::host_resolvers(
            Path::new(kubelan_sys::dns::DEFAULT_RESOLV_CONF),
            &lan_dns
                .as_ref()
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
    for s in &plan.sysctls {
        if kubelan_sys::sysctl::set(guard, &s.key, &s.value)? {
            events(Event::Forwarding { already: false });
        }
    }
    let mut lan_task = None;
    if let (DnsChange::Lan(lan), Some((sockets, listen))) = (&plan.dns, lan_dns) {
        let mut allowed = lan.lans.clone();
        allowed.push(IpNet::from(listen.ip()));
        allowed.push(IpNet::from(IpAddr::from([127, 0, 0, 1])));
        let service = Arc::new(dns::LanDns::new(relay.clone(), allowed));
        lan_task = Some(dns::serve_lan(sockets, service, ctx.shutdown.clone()));
        events(Event::LanDns {
            listen,
            domain: domain.clone(),
            lans: lan.lans.clone(),
            upstreams: upstreams.clone(),
        });
    }
    if gateway {
        events(Event::TunnelReady);
    }
    let flows = Arc::new(handler::FlowStats::default());
    let dns_addr = dns_ip.map(|ip| SocketAddr::new(ip, 53));
    let handler = Arc::new(handler::TunHandler {
        session: session.clone(),
        dns_addr,
        dns: relay.clone(),
        stats: flows.clone(),
    });
    let policy = plan
        .nft
        .iter()
        .find_map(|n| match n {
            NftChange::Redirect { cluster, skip, lan } => Some(redirect::Policy {
                cluster: cluster.clone(),
                skip: skip.clone(),
                lan: lan.clone(),
            }),
            NftChange::Gateway { .. } => None,
        })
        .context("the plan has no TCP redirection")?;
    let redirector = Arc::new(redirect::Redirector::new(
        policy,
        session.clone(),
        dns_addr,
        relay,
        flows.clone(),
    ));
    let redirect_status =
        redirect::start(guard, redirector.clone(), events, ctx.shutdown.clone()).await?;
    let stack_stats = Arc::new(kubelan_netstack::Stats::default());
    let mut stack_cfg = StackConfig::default();
    stack_cfg.mtu = spec.mtu;
    let mut stack = tokio::spawn(kubelan_netstack::run(
        tun,
        stack_cfg,
        handler,
        stack_stats.clone(),
    ));

    let live = Arc::new(Live {
        session: session.clone(),
        facts,
        plan: plan.routes,
        tun: name.clone(),
        mtu: spec.mtu,
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
    let control = control::serve(
        guard,
        Arc::new(move || serde_json::to_value(status_live.status()).unwrap_or_default()),
        quit.clone(),
    )
    .await?;
    report_states(session, events.clone(), ctx.shutdown.clone());

    let result = tokio::select! {
        () = stop => Ok(()),
        () = quit.cancelled() => {
            events(Event::Quitting);
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
    events(Event::Disconnecting);
    result
}

/// Reports session state changes until shutdown.
fn report_states(session: &Session, events: EventSink, shutdown: CancellationToken) {
    kubelan_session::bootstrap::on_state_change(session, shutdown, move |now, _| {
        events(Event::Session(now.clone()));
    });
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

/// What `kubelan status` shows without a running connect: the cluster and what a connect
/// would route (its text is what it prints; its JSON form is `status --output json`'s
/// document then).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Preview {
    /// `not connected`.
    pub state: &'static str,
    /// The kubeconfig context.
    pub context: String,
    /// The API server.
    pub server: String,
    /// The cluster's facts.
    pub facts: ClusterFacts,
    /// The routes a connect would add (none when it would refuse).
    pub planned_routes: Vec<RouteStatus>,
    /// The overlaps with this machine that would stop a connect.
    pub conflicts: Vec<String>,
}

impl std::fmt::Display for Preview {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "not connected (context {}, {})\n",
            self.context, self.server
        )?;
        writeln!(f, "{}", self.facts)?;
        if self.conflicts.is_empty() {
            writeln!(f, "\n`sudo kubelan connect` would route:")?;
            for r in &self.planned_routes {
                writeln!(f, "  {:<20} {}", r.prefix, r.why)?;
            }
        } else {
            writeln!(
                f,
                "\n`kubelan connect` would refuse; overlaps with this machine:"
            )?;
            for c in &self.conflicts {
                writeln!(f, "  • {c}")?;
            }
        }
        Ok(())
    }
}

/// Discovers the cluster and plans a connect's routes against this machine, changing
/// nothing.
///
/// # Errors
/// When the cluster cannot be reached or discovered.
pub async fn preview(kube: &KubeArgs) -> anyhow::Result<Preview> {
    let cc = kubelan_cluster::connect(kube).await?;
    let facts = discovery::discover(&cc, &DiscoveryOverrides::default()).await?;
    let (routes, addrs) = local_network("kubelan0").await.unwrap_or_default();
    let plan = discovery::plan_routes(&facts, &routes, &addrs, &RouteOptions::default());
    let (planned_routes, conflicts) = match plan {
        Ok(p) => (p.routes.iter().map(RouteStatus::from).collect(), Vec::new()),
        Err(c) => (Vec::new(), c.iter().map(Conflict::to_string).collect()),
    };
    Ok(Preview {
        state: "not connected",
        context: cc.context,
        server: cc.server,
        facts,
        planned_routes,
        conflicts,
    })
}

/// The running connect's status (what its control socket answers), or `None` when none runs.
///
/// # Errors
/// When the control socket exists but does not answer properly.
pub async fn running(state: &StateDir) -> anyhow::Result<Option<Status>> {
    match control::request(state.path(), "status").await? {
        Some(doc) => Ok(Some(
            serde_json::from_value(doc).context("reading the status of `kubelan connect`")?,
        )),
        None => Ok(None),
    }
}

/// `kubelan quit`: asks a running connect to disconnect and waits until it has.
///
/// # Errors
/// When none runs, or it does not stop within 15 s.
pub async fn quit(state: &StateDir) -> anyhow::Result<()> {
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
    Ok(())
}
