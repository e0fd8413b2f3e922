//! The in-cluster agent (`kubelan agent`).
//!
//! It accepts carriers — mutual TLS on `--listen-tls` (the direct carrier, reached through
//! the agent's Service) and the plain multiplexer on a loopback-only `--listen-plain` port (reached
//! only through an API-server port-forward, which RBAC already authorised) — and serves the
//! session protocol of [`kubelan_proto`] on them: it dials TCP, relays UDP and answers DNS
//! for the cluster domain from a watch cache, all under a destination [`policy::Policy`].
//!
//! It runs as non-root with no capabilities and a read-only root file system (Pod Security
//! "restricted"); outside Kubernetes (`--standalone`) it takes CIDRs and credentials from
//! flags and files, for tests and benchmarks.

mod echo;
mod health;
pub mod policy;
mod refusals;
pub mod relay;
mod serve;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::networking::v1::ServiceCIDR;
use kube::api::{Api, ListParams};
use kubelan_dns::ClusterNames;
use kubelan_proto::{Capabilities, Cidr, ErrorKind, Facts, FlowError};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::policy::{Known, Policy};
use crate::refusals::RefusalLog;

/// `kubelan agent` flags.
#[derive(Args, Debug, Clone)]
pub struct AgentArgs {
    /// Address for the direct carrier (mutual TLS), e.g. 0.0.0.0:7443.
    #[arg(long, value_name = "ADDR")]
    pub listen_tls: Option<SocketAddr>,
    /// Loopback address for the port-forward carrier (plain; only a port-forward through
    /// the API server reaches it), e.g. 127.0.0.1:7444.
    #[arg(long, value_name = "ADDR")]
    pub listen_plain: Option<SocketAddr>,
    /// Address of the health endpoint (`/healthz`, `/readyz`).
    #[arg(long, value_name = "ADDR")]
    pub health_listen: Option<SocketAddr>,
    /// Directory with `ca.crt`, `tls.crt` and `tls.key` for the direct carrier.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/var/run/kubelan/credentials"
    )]
    pub credentials: PathBuf,
    /// Write a new CA, agent and client certificate into DIR (ca.crt, tls.crt, tls.key,
    /// client.crt, client.key) and exit; for running the agent outside Kubernetes.
    #[arg(long, value_name = "DIR")]
    pub init_credentials: Option<PathBuf>,
    /// Run without the Kubernetes API (no watch cache, CIDRs from flags).
    #[arg(long)]
    pub standalone: bool,
    /// Pod network prefix the agent may dial (repeatable; discovered in a cluster).
    #[arg(long, value_name = "CIDR")]
    pub pod_cidr: Vec<Cidr>,
    /// Service network prefix the agent may dial (repeatable).
    #[arg(long, value_name = "CIDR")]
    pub service_cidr: Vec<Cidr>,
    /// Also allow this prefix (repeatable), node addresses in it included. Loopback and
    /// link-local stay forbidden.
    #[arg(long, value_name = "CIDR")]
    pub allow: Vec<Cidr>,
    /// Also dial node addresses: Node objects' addresses, hostNetwork pods' IPs and the API
    /// server's endpoints (Service default/kubernetes), on every port. Off by default:
    /// nodes serve SSH, the kubelet and etcd, not the cluster's workloads.
    #[arg(long)]
    pub allow_node_addresses: bool,
    /// The cluster DNS server (default: the pod's resolv.conf nameserver).
    #[arg(long, value_name = "ADDR")]
    pub dns_server: Option<SocketAddr>,
    /// The cluster DNS domain.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Seconds running flows may continue after SIGTERM.
    #[arg(long, default_value_t = 5)]
    pub drain_seconds: u64,
    /// Threads for the data path. One (the default) serves thousands of flows per second
    /// with the least CPU and latency; add threads when one core is saturated.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: u16,
    /// Capability bits to leave out of the welcome (16: reverse flows, i.e. no
    /// `kubelan relay` in this image), so tests can play an older agent.
    #[arg(
        long,
        hide = true,
        env = "KUBELAN_AGENT_HIDE_CAPS",
        value_name = "BITS",
        default_value_t = 0
    )]
    pub hide_capabilities: u64,
}

/// Counters.
#[derive(Debug, Default)]
pub struct AgentStats {
    /// Carriers that completed the handshake.
    pub carriers: AtomicU64,
    /// Flows open now.
    pub active_flows: AtomicU64,
    /// Flows refused or failed to open.
    pub refused: AtomicU64,
    /// Of those, flows the destination policy refused.
    pub policy_refused: AtomicU64,
    /// Bytes client → destination.
    pub bytes_up: AtomicU64,
    /// Bytes destination → client.
    pub bytes_down: AtomicU64,
}

/// Decrements the active-flow count on drop.
pub(crate) struct FlowGuard<'a>(&'a AtomicU64);

impl Drop for FlowGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AgentStats {
    pub(crate) fn flow_guard(&self) -> FlowGuard<'_> {
        self.active_flows.fetch_add(1, Ordering::Relaxed);
        FlowGuard(&self.active_flows)
    }
}

/// Shared agent state.
pub(crate) struct Agent {
    pub(crate) software: String,
    pub(crate) policy: Policy,
    pub(crate) names: Option<Arc<RwLock<ClusterNames>>>,
    pub(crate) domain: String,
    pub(crate) dns_server: Option<SocketAddr>,
    pub(crate) facts: RwLock<Facts>,
    pub(crate) stats: AgentStats,
    /// Which policy refusals get a log line.
    pub(crate) refusals: Mutex<RefusalLog>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) drain: Duration,
    pub(crate) ready: AtomicBool,
    /// What this agent offers: every feature of this build but the hidden ones. The
    /// welcome names what both sides offer. [`Capabilities::REVERSE`] means this image
    /// also holds `kubelan relay`.
    pub(crate) caps: Capabilities,
}

impl Agent {
    pub(crate) fn facts(&self) -> Facts {
        self.facts.read().expect("facts lock").clone()
    }

    /// Resolves a host name: cluster names from the watch cache, then the cluster DNS
    /// server.
    pub(crate) async fn resolve(&self, host: &str) -> Result<Vec<IpAddr>, FlowError> {
        if let Some(names) = &self.names {
            let found = names
                .read()
                .expect("names lock")
                .resolve_host(host, Some("default"));
            if let Some(ips) = found.filter(|v| !v.is_empty()) {
                return Ok(ips);
            }
        }
        let ips = match self.dns_server {
            Some(server) => resolve_via(server, host).await,
            None => tokio::net::lookup_host((host, 0))
                .await
                .map(|it| it.map(|a| a.ip()).collect())
                .unwrap_or_default(),
        };
        if ips.is_empty() {
            Err(FlowError::new(
                ErrorKind::NoSuchHost,
                format!("{host} does not resolve in the cluster"),
            ))
        } else {
            Ok(ips)
        }
    }

    /// Answers a DNS query from the cache, `None` when it must go to the DNS server.
    pub(crate) fn answer_dns(&self, query: &[u8]) -> Option<Vec<u8>> {
        let names = self.names.as_ref()?;
        let names = names.read().expect("names lock");
        match kubelan_dns::answer(query, &names, &self.domain) {
            kubelan_dns::Answer::Reply(r) => Some(r),
            kubelan_dns::Answer::Forward | kubelan_dns::Answer::Drop => None,
        }
    }
}

/// Asks `server` for A and AAAA records of `host`.
async fn resolve_via(server: SocketAddr, host: &str) -> Vec<IpAddr> {
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use hickory_proto::rr::{Name, RData, RecordType};
    let Ok(name) = Name::from_ascii(format!("{}.", host.trim_end_matches('.'))) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, rtype) in [RecordType::A, RecordType::AAAA].into_iter().enumerate() {
        let mut m = Message::new(0x4b00 + i as u16, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(name.clone(), rtype));
        let Ok(q) = m.to_vec() else { continue };
        let Ok(reply) = kubelan_dns::forward_udp(&q, server, Duration::from_secs(3)).await else {
            continue;
        };
        let Ok(reply) = Message::from_vec(&reply) else {
            continue;
        };
        for r in &reply.answers {
            match &r.data {
                RData::A(a) => out.push(IpAddr::V4(a.0)),
                RData::AAAA(a) => out.push(IpAddr::V6(a.0)),
                _ => {}
            }
        }
    }
    out
}

/// Writes fresh credentials for running an agent outside Kubernetes.
///
/// # Errors
///
/// When the directory cannot be written or already holds credentials.
pub fn init_credentials(dir: &Path) -> anyhow::Result<()> {
    if dir.join("ca.crt").exists() {
        bail!(
            "{} already holds credentials (ca.crt); remove them first or use another directory",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let c = kubelan_cluster::credentials::AgentCredentials::generate("standalone")
        .context("generating certificates")?;
    for (file, pem, mode) in [
        ("ca.crt", &c.ca_pem, 0o644),
        ("tls.crt", &c.agent_cert_pem, 0o644),
        ("tls.key", &c.agent_key_pem, 0o600),
        ("client.crt", &c.client_cert_pem, 0o644),
        ("client.key", &c.client_key_pem, 0o600),
    ] {
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join(file);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        std::io::Write::write_all(&mut f, pem.as_bytes())?;
    }
    Ok(())
}

/// Runs the agent until SIGTERM/SIGINT, then drains.
///
/// # Errors
///
/// Bad flags, unreadable credentials, or a listen address in use.
pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    if let Some(dir) = &args.init_credentials {
        init_credentials(dir)?;
        println!(
            "wrote ca.crt, tls.crt, tls.key (agent) and client.crt, client.key (client) to {}",
            dir.display()
        );
        return Ok(());
    }
    if args.listen_tls.is_none() && args.listen_plain.is_none() {
        bail!("nothing to listen on: give --listen-tls ADDR and/or --listen-plain 127.0.0.1:PORT");
    }
    if let Some(p) = args.listen_plain
        && !p.ip().is_loopback()
    {
        bail!(
            "--listen-plain {p} must be a loopback address: the plain carrier has no authentication of its own and is meant only for API-server port-forwards (use --listen-tls for network access)"
        );
    }
    let shutdown = CancellationToken::new();
    let in_cluster = !args.standalone && std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    let dns_server = args.dns_server.or_else(|| {
        if !in_cluster {
            return None;
        }
        let text = std::fs::read_to_string("/etc/resolv.conf").ok()?;
        serve::resolv_conf_nameserver(&text).map(|ip| SocketAddr::new(ip, 53))
    });
    let mut cluster_cidrs = args.pod_cidr.clone();
    cluster_cidrs.extend(args.service_cidr.iter().copied());
    let names = in_cluster.then(|| Arc::new(RwLock::new(ClusterNames::new(&args.cluster_domain))));
    let mut policy = Policy::new(
        cluster_cidrs,
        args.allow.clone(),
        dns_server.map(|a| a.ip()),
    )
    .allow_node_addresses(args.allow_node_addresses);
    if let Some(n) = &names {
        let n = n.clone();
        policy = policy.with_known(Arc::new(move |ip| {
            Known::from(n.read().expect("names lock").classify(ip))
        }));
    }
    let agent_name = match (std::env::var("POD_NAMESPACE"), std::env::var("POD_NAME")) {
        (Ok(ns), Ok(name)) => format!("{ns}/{name}"),
        _ => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "agent".into()),
    };
    let facts = Facts {
        cluster_domain: args.cluster_domain.clone(),
        dns_server,
        pod_cidrs: args.pod_cidr.clone(),
        service_cidrs: args.service_cidr.clone(),
        agent: agent_name,
        node: std::env::var("NODE_NAME").unwrap_or_default(),
    };
    let agent = Arc::new(Agent {
        software: format!("kubelan {}", env!("CARGO_PKG_VERSION")),
        policy,
        names: names.clone(),
        domain: args.cluster_domain.clone(),
        dns_server,
        facts: RwLock::new(facts),
        stats: AgentStats::default(),
        refusals: Mutex::new(RefusalLog::default()),
        shutdown: shutdown.clone(),
        drain: Duration::from_secs(args.drain_seconds),
        ready: AtomicBool::new(false),
        // Listeners on request are the per-session relay's, never the agent's.
        caps: Capabilities::ALL
            .without(Capabilities::LISTEN)
            .without(Capabilities(args.hide_capabilities)),
    });

    // Listeners first, so a bad address fails fast.
    let tls = match args.listen_tls {
        Some(addr) => {
            let config = kubelan_cluster::tls::server_config_from_dir(&args.credentials)
                .with_context(|| {
                    format!(
                        "loading the direct carrier's credentials from {} (ca.crt, tls.crt, tls.key; `kubelan agent --init-credentials DIR` makes a set)",
                        args.credentials.display()
                    )
                })?;
            let l = TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening on {addr} (--listen-tls)"))?;
            Some((l, tokio_rustls::TlsAcceptor::from(Arc::new(config))))
        }
        None => None,
    };
    let plain = match args.listen_plain {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening on {addr} (--listen-plain)"))?,
        ),
        None => None,
    };
    let health = match args.health_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening on {addr} (--health-listen)"))?,
        ),
        None => None,
    };

    let mut tasks = tokio::task::JoinSet::new();
    let (cache_ready_tx, mut cache_ready_rx) = tokio::sync::watch::channel(!in_cluster);
    if in_cluster {
        let client = kube::Client::try_default()
            .await
            .context("connecting to the Kubernetes API from the pod (service account)")?;
        if let Some(n) = names.clone() {
            let (c, s) = (client.clone(), shutdown.clone());
            tasks.spawn(async move {
                if let Err(e) = kubelan_dns::run_watchers(c, n, cache_ready_tx, s).await {
                    tracing::error!(error = %e, "cluster watch cache stopped");
                }
            });
        }
        let (a, s, flags) = (agent.clone(), shutdown.clone(), args.clone());
        tasks.spawn(async move { discover_cidrs(client, a, flags, s).await });
    }
    if let Some((listener, acceptor)) = tls {
        let (a, s) = (agent.clone(), shutdown.clone());
        tracing::info!(addr = %listener.local_addr()?, "direct carrier (mTLS) listening");
        tasks.spawn(async move { accept_tls(listener, acceptor, a, s).await });
    }
    if let Some(listener) = plain {
        let (a, s) = (agent.clone(), shutdown.clone());
        tracing::info!(addr = %listener.local_addr()?, "port-forward carrier listening (loopback)");
        tasks.spawn(async move { accept_plain(listener, a, s).await });
    }
    if let Some(listener) = health {
        let a = agent.clone();
        tasks.spawn(async move { health::serve(listener, a).await });
    }
    {
        let a = agent.clone();
        tasks.spawn(async move { summarise_refusals(a).await });
    }
    {
        let a = agent.clone();
        tokio::spawn(async move {
            while !*cache_ready_rx.borrow_and_update() {
                if cache_ready_rx.changed().await.is_err() {
                    return;
                }
            }
            a.ready.store(true, Ordering::Relaxed);
            tracing::info!("agent ready");
        });
    }

    wait_for_signal().await;
    tracing::info!(
        drain_s = args.drain_seconds,
        "shutting down: no new flows, draining"
    );
    agent.ready.store(false, Ordering::Relaxed);
    shutdown.cancel();
    let deadline = tokio::time::Instant::now() + agent.drain;
    while agent.stats.active_flows.load(Ordering::Relaxed) > 0
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Flows still running are cut when this returns: the runtime drops their tasks, and
    // each resets its destination (see `serve::ResetUnlessDone`) and its mux stream; the
    // clients see their carrier end without the flows' `Fin`. Never a clean end.
    tracing::info!(
        cut = agent.stats.active_flows.load(Ordering::Relaxed),
        "stopped"
    );
    tasks.abort_all();
    Ok(())
}

/// Logs, once per window, how many policy refusals were not logged one by one.
async fn summarise_refusals(agent: Arc<Agent>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        let held = agent
            .refusals
            .lock()
            .map(|mut r| r.summary(std::time::Instant::now()))
            .unwrap_or_default();
        if let Some(n) = held {
            tracing::warn!(
                not_logged = n,
                total = agent.stats.policy_refused.load(Ordering::Relaxed),
                "{n} more flows refused by policy were not logged one by one (at most one line per client and destination per minute; /stats counts every refusal)"
            );
        }
    }
}

pub(crate) async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Accepts TCP connections until shutdown and hands each to `serve` (with TCP_NODELAY set);
/// accept errors (e.g. out of file descriptors) are logged and retried after a pause.
async fn accept_loop<F, Fut>(listener: TcpListener, shutdown: CancellationToken, serve: F)
where
    F: Fn(tokio::net::TcpStream, SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => return,
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(serve(tcp, peer));
    }
}

async fn accept_plain(listener: TcpListener, agent: Arc<Agent>, shutdown: CancellationToken) {
    accept_loop(listener, shutdown, |tcp, peer| {
        serve::carrier(
            agent.clone(),
            tcp,
            format!("port-forward {peer}"),
            peer.ip(),
        )
    })
    .await;
}

async fn accept_tls(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    agent: Arc<Agent>,
    shutdown: CancellationToken,
) {
    accept_loop(listener, shutdown, |tcp, peer| {
        let (acceptor, agent) = (acceptor.clone(), agent.clone());
        async move {
            match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    serve::carrier(agent, tls, format!("direct {peer}"), peer.ip()).await
                }
                Ok(Err(e)) => tracing::warn!(
                    %peer, error = %e,
                    "refused a direct carrier: TLS handshake failed (wrong or missing client certificate?)"
                ),
                Err(_) => tracing::warn!(%peer, "refused a direct carrier: TLS handshake timed out"),
            }
        }
    })
    .await;
}

/// Keeps the policy's Pod and Service prefixes and node addresses in step with the
/// cluster: nodes' `spec.podCIDRs` and status addresses, and ServiceCIDR objects (where
/// the API serves them), every 30 s.
async fn discover_cidrs(
    client: kube::Client,
    agent: Arc<Agent>,
    flags: AgentArgs,
    shutdown: CancellationToken,
) {
    let nodes: Api<Node> = Api::all(client.clone());
    let service_cidrs: Api<ServiceCIDR> = Api::all(client);
    let mut service_cidrs_served = true;
    loop {
        let mut services = flags.service_cidr.clone();
        if service_cidrs_served {
            match service_cidrs.list(&ListParams::default()).await {
                Ok(list) => services.extend(
                    list.items
                        .iter()
                        .filter_map(|o| o.spec.as_ref()?.cidrs.clone())
                        .flatten()
                        .filter_map(|c| c.parse::<Cidr>().ok()),
                ),
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    tracing::debug!(
                        "no ServiceCIDR API (cluster older than 1.33); Service prefixes from --service-cidr only"
                    );
                    service_cidrs_served = false;
                }
                Err(e) => tracing::debug!(error = %e, "listing ServiceCIDRs failed"),
            }
        }
        services.sort_by_key(|c| c.to_string());
        services.dedup();
        match nodes.list(&ListParams::default()).await {
            Ok(list) => {
                let mut pods: Vec<Cidr> = list
                    .items
                    .iter()
                    .filter_map(|n| n.spec.as_ref()?.pod_cidrs.clone())
                    .flatten()
                    .filter_map(|c| c.parse().ok())
                    .collect();
                pods.extend(flags.pod_cidr.iter().copied());
                pods.sort_by_key(|c| c.to_string());
                pods.dedup();
                let mut all = pods.clone();
                all.extend(services.iter().copied());
                agent.policy.set_cluster(all);
                agent.policy.set_nodes(node_addresses(&list.items));
                let mut facts = agent.facts.write().expect("facts lock");
                facts.pod_cidrs = pods;
                facts.service_cidrs = services;
            }
            Err(e) => tracing::warn!(error = %e, "listing nodes for their Pod CIDRs failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(30)) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// The IP addresses in the nodes' status (InternalIP, ExternalIP), with their node's name.
fn node_addresses(nodes: &[Node]) -> HashMap<IpAddr, String> {
    nodes
        .iter()
        .flat_map(|n| {
            let name = n.metadata.name.clone().unwrap_or_default();
            n.status
                .iter()
                .flat_map(|s| s.addresses.iter().flatten())
                .filter_map(move |a| Some((a.address.trim().parse().ok()?, name.clone())))
        })
        .collect()
}

/// Fuzzing entry points (see `fuzz/`).
#[cfg(any(fuzzing, feature = "fuzz"))]
pub mod fuzz_entry {
    use crate::relay::ListenSpec;

    /// `kubelan relay --listen` values: never panics, and whatever parses prints back to
    /// itself.
    pub fn relay_listen(data: &[u8]) {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        for line in text.lines() {
            if let Ok(spec) = line.parse::<ListenSpec>() {
                let printed = spec.to_string();
                assert_eq!(printed.parse::<ListenSpec>(), Ok(spec), "{line:?}");
            }
        }
    }
}
