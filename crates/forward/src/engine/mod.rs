//! The running forwards: listeners, one task per local connection, and one watcher task per
//! target (single mode) or per namespace (bulk mode) that keeps each port's pod choice
//! current through a `watch` channel.
//!
//! ```text
//! accept ─► connection task ─ wait for PortState::Ready ─► tunnel::open ─► tunnel::relay
//!                 ▲                  (≤ pod_wait)              │ failed: pod name ──┐
//!                 └──── watch::Receiver<PortState> ◄── watcher task ◄── failed_tx ◄─┘
//!                                                       ▲ kube watchers (Service,
//!                                                       │ EndpointSlices | Pods)
//! ```
//!
//! Nothing a single connection does can end the session: failures become [`Event`]s, the
//! pod is avoided for a few seconds, and the next connection goes elsewhere.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, watcher};
use kubelan_sys::hosts::HostsEntry;
use serde::de::DeserializeOwned;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::alloc::{Allocator, unprivileged_port};
use crate::error::ForwardError;
use crate::model::{self, Change, Mirror, PortState, Selection};
use crate::names::{self, Published};
use crate::report::{Event, Row, Totals};
use crate::resolve::{self, Candidate};
use crate::spec::{BindAddress, ForwardSpec, Kind, LocalPort, RemotePort};
use crate::tunnel::{self, ByteCounters, OpenError};

/// How `kubelan forward` runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Local addresses (single mode).
    pub addresses: Vec<BindAddress>,
    /// How long a new connection waits for a ready pod before it is closed.
    pub pod_wait: Duration,
    /// How long the API server may take to answer a port-forward upgrade.
    pub open_timeout: Duration,
    /// The cluster DNS domain (bulk mode names).
    pub cluster_domain: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            addresses: vec![BindAddress::Localhost],
            pod_wait: Duration::from_secs(10),
            open_timeout: Duration::from_secs(10),
            cluster_domain: "cluster.local".into(),
        }
    }
}

/// Where events go. Sending never blocks: when the reader falls behind, events are dropped
/// and counted.
#[derive(Debug, Clone)]
pub struct Events {
    tx: mpsc::Sender<Event>,
    dropped: Arc<AtomicU64>,
}

impl Events {
    /// A channel holding up to `capacity` events.
    pub fn channel(capacity: usize) -> (Events, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            Events {
                tx,
                dropped: Arc::new(AtomicU64::new(0)),
            },
            rx,
        )
    }

    /// Sends `e` unless the channel is full.
    pub fn emit(&self, e: Event) {
        if self.tx.try_send(e).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Events dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Connection counters of one forward.
#[derive(Debug, Default)]
pub struct Counters {
    /// Open now.
    pub open: AtomicU64,
    /// Accepted since start.
    pub total: AtomicU64,
    /// Failed (no pod in time, port-forward refused, dial inside the pod failed).
    pub failed: AtomicU64,
    /// Bytes both ways.
    pub bytes: ByteCounters,
}

/// One remote port of a forward.
#[derive(Debug)]
struct PortSlot {
    /// As asked (`80`, `http`).
    remote: String,
    state: watch::Receiver<PortState>,
    /// Local addresses and the mapping shown (`8080→80`).
    locals: Mutex<Vec<(SocketAddr, String)>>,
}

/// One target (single mode) or Service (bulk mode).
#[derive(Debug)]
struct Forward {
    label: String,
    namespace: String,
    ports: Vec<PortSlot>,
    counters: Counters,
    failed_tx: mpsc::Sender<(String, String)>,
    /// Stops its listeners.
    stop: CancellationToken,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Every forward, for the live table.
#[derive(Debug, Default)]
pub struct Registry {
    forwards: Mutex<BTreeMap<String, Arc<Forward>>>,
    api_connections: AtomicU64,
    api_failures: AtomicU64,
    connections: AtomicU64,
}

impl Registry {
    fn insert(&self, f: Arc<Forward>) {
        lock(&self.forwards).insert(f.label.clone(), f);
    }

    fn remove(&self, label: &str) {
        lock(&self.forwards).remove(label);
    }

    /// A snapshot of every forward.
    pub fn rows(&self) -> Vec<Row> {
        let forwards: Vec<Arc<Forward>> = lock(&self.forwards).values().cloned().collect();
        forwards
            .iter()
            .map(|f| {
                let mut local = Vec::new();
                let mut ports = Vec::new();
                let mut pods = Vec::new();
                for p in &f.ports {
                    for (addr, shown) in lock(&p.locals).iter() {
                        let a = addr.to_string();
                        if !local.contains(&a) {
                            local.push(a);
                        }
                        if !ports.contains(shown) {
                            ports.push(shown.clone());
                        }
                    }
                    let pod = match &*p.state.borrow() {
                        PortState::Ready(b) => b.to_string(),
                        PortState::Waiting(why) => format!("waiting: {why}"),
                        PortState::Starting => "…".to_string(),
                    };
                    if !pods.contains(&pod) {
                        pods.push(pod);
                    }
                }
                let c = &f.counters;
                Row {
                    forward: f.label.clone(),
                    local,
                    ports,
                    pods,
                    open: c.open.load(Ordering::Relaxed),
                    total: c.total.load(Ordering::Relaxed),
                    failed: c.failed.load(Ordering::Relaxed),
                    bytes_up: c.bytes.up.load(Ordering::Relaxed),
                    bytes_down: c.bytes.down.load(Ordering::Relaxed),
                }
            })
            .collect()
    }

    /// Process-wide counters.
    pub fn totals(&self) -> Totals {
        Totals {
            api_connections: self.api_connections.load(Ordering::Relaxed),
            api_failures: self.api_failures.load(Ordering::Relaxed),
            connections: self.connections.load(Ordering::Relaxed),
        }
    }
}

/// What every task shares.
struct Ctx {
    client: kube::Client,
    registry: Arc<Registry>,
    events: Events,
    opts: Options,
    /// Ends everything.
    cancel: CancellationToken,
}

/// A running `kubelan forward`.
pub struct Running {
    /// The forwards, for the live table.
    pub registry: Arc<Registry>,
    /// Bulk mode: the hosts-file lines the forwarded Services should have (the caller
    /// writes them, or prints the table instead).
    pub names: Option<watch::Receiver<Vec<HostsEntry>>>,
    cancel: CancellationToken,
    tasks: JoinSet<()>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running").finish_non_exhaustive()
    }
}

impl Running {
    /// Stops listening, ends open connections and the watchers.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        self.tasks.abort_all();
    }
}

fn port_label(local: u16, remote: &str) -> String {
    if remote == local.to_string() {
        remote.to_string()
    } else {
        format!("{local}→{remote}")
    }
}

/// A watch of `K` in `namespace` with the watcher's default backoff.
fn watch_stream<K>(
    client: &kube::Client,
    namespace: &str,
    config: watcher::Config,
) -> impl Stream<Item = Result<Change<K>, watcher::Error>> + Send + 'static
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    watcher(Api::<K>::namespaced(client.clone(), namespace), config)
        .default_backoff()
        .map(|r| r.map(Change::from))
}

/// Remembers the last watch error, so a failing watch warns once per distinct error.
#[derive(Default)]
struct WatchHealth {
    last: Option<String>,
}

impl WatchHealth {
    fn apply<K: kube::Resource>(
        &mut self,
        item: Option<Result<Change<K>, watcher::Error>>,
        mirror: &mut Mirror<K>,
        what: &str,
        events: &Events,
    ) -> bool {
        match item {
            Some(Ok(change)) => {
                self.last = None;
                mirror.apply(change)
            }
            Some(Err(e)) => {
                let msg = format!(
                    "watching {what}: {} (retrying)",
                    kubelan_cluster::error::one_line(&e)
                );
                if self.last.as_deref() != Some(msg.as_str()) {
                    events.emit(Event::Warning {
                        message: msg.clone(),
                    });
                    self.last = Some(msg);
                }
                false
            }
            // Watcher streams do not end; a runtime shutting down does.
            None => false,
        }
    }
}

/// Sends changed port states and reports them.
fn publish(
    ctx: &Ctx,
    forward: &Forward,
    sel: &Selection,
    changed: &[usize],
    senders: &[watch::Sender<PortState>],
) {
    for &i in changed {
        let state = sel.state(i).clone();
        let remote = forward
            .ports
            .get(i)
            .map_or_else(String::new, |p| p.remote.clone());
        let event = match &state {
            PortState::Ready(b) => Event::Backend {
                forward: forward.label.clone(),
                remote,
                pod: Some(b.pod.clone()),
                port: Some(b.port),
                reason: None,
            },
            PortState::Waiting(why) => Event::Backend {
                forward: forward.label.clone(),
                remote,
                pod: None,
                port: None,
                reason: Some(why.clone()),
            },
            PortState::Starting => continue,
        };
        if let Some(s) = senders.get(i) {
            s.send_replace(state);
        }
        ctx.events.emit(event);
    }
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(3600)
}

/// Keeps the ports of a Service target current (single mode).
async fn run_service_target(
    ctx: Arc<Ctx>,
    forward: Arc<Forward>,
    name: String,
    wanted: Vec<RemotePort>,
    senders: Vec<watch::Sender<PortState>>,
    mut failed_rx: mpsc::Receiver<(String, String)>,
) {
    let ns = forward.namespace.clone();
    let mut services = pin!(watch_stream::<Service>(
        &ctx.client,
        &ns,
        watcher::Config::default().fields(&format!("metadata.name={name}")),
    ));
    let mut slices_stream = pin!(watch_stream::<EndpointSlice>(
        &ctx.client,
        &ns,
        watcher::Config::default().labels(&format!("kubernetes.io/service-name={name}")),
    ));
    let mut svc: Mirror<Service> = Mirror::default();
    let mut slices: Mirror<EndpointSlice> = Mirror::default();
    let (mut svc_health, mut slice_health) = (WatchHealth::default(), WatchHealth::default());
    let mut sel = Selection::new(wanted.len());
    loop {
        let expiry = sel
            .next_expiry()
            .map_or_else(far_future, tokio::time::Instant::from_std);
        tokio::select! {
            _ = ctx.cancel.cancelled() => return,
            item = services.next() => {
                svc_health.apply(item, &mut svc, &format!("Service {ns}/{name}"), &ctx.events);
            }
            item = slices_stream.next() => {
                slice_health.apply(item, &mut slices, &format!("EndpointSlices of {ns}/{name}"), &ctx.events);
            }
            Some((_, pod)) = failed_rx.recv() => sel.failed(&pod, Instant::now()),
            _ = tokio::time::sleep_until(expiry) => {}
        }
        if svc.synced() && slices.synced() {
            let c = model::service_candidates(&ns, &name, svc.get(&name), &slices, &wanted);
            let changed = sel.update(&c, Instant::now());
            publish(&ctx, &forward, &sel, &changed, &senders);
        }
    }
}

/// Keeps the ports of a pod or Deployment target current (single mode).
#[allow(clippy::too_many_arguments)]
async fn run_pod_target(
    ctx: Arc<Ctx>,
    forward: Arc<Forward>,
    what: String,
    config: watcher::Config,
    wanted: Vec<RemotePort>,
    senders: Vec<watch::Sender<PortState>>,
    mut failed_rx: mpsc::Receiver<(String, String)>,
) {
    let ns = forward.namespace.clone();
    let mut stream = pin!(watch_stream::<Pod>(&ctx.client, &ns, config));
    let mut pods: Mirror<Pod> = Mirror::default();
    let mut health = WatchHealth::default();
    let mut sel = Selection::new(wanted.len());
    loop {
        let expiry = sel
            .next_expiry()
            .map_or_else(far_future, tokio::time::Instant::from_std);
        tokio::select! {
            _ = ctx.cancel.cancelled() => return,
            item = stream.next() => {
                health.apply(item, &mut pods, &format!("pods of {what}"), &ctx.events);
            }
            Some((_, pod)) = failed_rx.recv() => sel.failed(&pod, Instant::now()),
            _ = tokio::time::sleep_until(expiry) => {}
        }
        if pods.synced() {
            let c = model::pod_candidates(&what, &pods, &wanted);
            let changed = sel.update(&c, Instant::now());
            publish(&ctx, &forward, &sel, &changed, &senders);
        }
    }
}

/// Decrements `open` when a connection task ends, however it ends.
struct OpenGuard<'a>(&'a AtomicU64);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Waits until the port has a pod, at most until `deadline`.
async fn wait_backend(
    state: &mut watch::Receiver<PortState>,
    deadline: tokio::time::Instant,
    cancel: &CancellationToken,
) -> Result<resolve::Backend, String> {
    loop {
        let why = match &*state.borrow_and_update() {
            PortState::Ready(b) => return Ok(b.clone()),
            PortState::Waiting(why) => why.clone(),
            PortState::Starting => "the pod list has not arrived yet".to_string(),
        };
        tokio::select! {
            r = state.changed() => if r.is_err() { return Err("the forward was removed".into()) },
            _ = tokio::time::sleep_until(deadline) => return Err(why),
            _ = cancel.cancelled() => return Err("shutting down".into()),
        }
    }
}

/// Serves one local connection.
async fn serve_connection(ctx: Arc<Ctx>, forward: Arc<Forward>, slot: usize, local: TcpStream) {
    let c = &forward.counters;
    c.total.fetch_add(1, Ordering::Relaxed);
    c.open.fetch_add(1, Ordering::Relaxed);
    ctx.registry.connections.fetch_add(1, Ordering::Relaxed);
    let _open = OpenGuard(&c.open);
    let Some(port) = forward.ports.get(slot) else {
        return;
    };
    let mut state = port.state.clone();
    let deadline = tokio::time::Instant::now() + ctx.opts.pod_wait;
    let fail = |pod: Option<String>, error: String| {
        c.failed.fetch_add(1, Ordering::Relaxed);
        ctx.events.emit(Event::ConnectionFailed {
            forward: forward.label.clone(),
            pod,
            error,
        });
    };
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let backend = match wait_backend(&mut state, deadline, &ctx.cancel).await {
            Ok(b) => b,
            Err(why) => {
                if !ctx.cancel.is_cancelled() {
                    fail(
                        None,
                        format!(
                            "no pod to forward to within {:?} ({why}); the connection was closed, the forward goes on",
                            ctx.opts.pod_wait
                        ),
                    );
                }
                return;
            }
        };
        let opened = tunnel::open(
            &ctx.client,
            &forward.namespace,
            &backend.pod,
            backend.port,
            1,
            ctx.opts.open_timeout,
        )
        .await;
        match opened {
            Ok(pf) => {
                ctx.registry.api_connections.fetch_add(1, Ordering::Relaxed);
                let end = tunnel::relay(local, pf, &c.bytes, &ctx.cancel).await;
                if let Some(e) = end.pod_error {
                    let _ = forward
                        .failed_tx
                        .try_send((forward.label.clone(), backend.pod.clone()));
                    let hint = if e.contains("refused") {
                        format!(
                            " (nothing listens on port {} in pod {}: is the container up and the port right?)",
                            backend.port, backend.pod
                        )
                    } else {
                        String::new()
                    };
                    fail(Some(backend.pod), format!("{e}{hint}"));
                } else if let Some(b) = end.broken
                    && end.down == 0
                {
                    fail(Some(backend.pod), b);
                }
                return;
            }
            Err(e) => {
                ctx.registry.api_failures.fetch_add(1, Ordering::Relaxed);
                let retry = match &e {
                    OpenError::Gone { .. } | OpenError::Timeout(_) => {
                        let _ = forward
                            .failed_tx
                            .try_send((forward.label.clone(), backend.pod.clone()));
                        true
                    }
                    OpenError::Forbidden { .. } => false,
                    OpenError::Other { .. } => true,
                };
                if !retry || attempt >= 3 || tokio::time::Instant::now() >= deadline {
                    fail(Some(backend.pod), e.to_string());
                    return;
                }
                tracing::debug!(error = %e, attempt, "port-forward failed; retrying");
                // Give the watcher a moment to pick another pod.
                let pause = Duration::from_millis(200 * u64::from(attempt));
                let _ = tokio::time::timeout(pause, state.changed()).await;
            }
        }
    }
}

/// Accepts connections until `stop` or the session ends.
async fn accept_loop(ctx: Arc<Ctx>, forward: Arc<Forward>, slot: usize, listener: TcpListener) {
    loop {
        tokio::select! {
            _ = ctx.cancel.cancelled() => return,
            _ = forward.stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok((s, _)) => {
                    let _ = s.set_nodelay(true);
                    tokio::spawn(serve_connection(ctx.clone(), forward.clone(), slot, s));
                }
                Err(e) => {
                    // Out of file descriptors and the like: say so, wait, go on.
                    ctx.events.emit(Event::Warning {
                        message: format!("{}: accepting a connection failed: {e}", forward.label),
                    });
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}

/// Binds `addr`, turning OS errors into messages that name the fix.
async fn bind(addr: SocketAddr, spec: &str, remote: &str) -> Result<TcpListener, ForwardError> {
    TcpListener::bind(addr).await.map_err(|source| {
        match source.kind() {
            std::io::ErrorKind::AddrInUse => ForwardError::PortInUse {
                addr,
                suggestion: format!(
                    "{spec} {}:{remote}",
                    if addr.port() <= 55535 { addr.port() + 10000 } else { addr.port() - 10000 }
                ),
                remote: remote.to_string(),
            },
            std::io::ErrorKind::PermissionDenied => ForwardError::Listen {
                addr,
                source,
                hint: format!(
                    " (ports below 1024 need root: use a higher local port, e.g. `{spec} {}:{remote}`, or run with sudo)",
                    u32::from(addr.port()) + 8000
                ),
            },
            std::io::ErrorKind::AddrNotAvailable => ForwardError::Listen {
                addr,
                source,
                hint: " (this machine has no such address: check --address)".into(),
            },
            _ => ForwardError::Listen {
                addr,
                source,
                hint: String::new(),
            },
        }
    })
}

/// A forward's ports and the task-side handles that go with them.
struct Prepared {
    forward: Arc<Forward>,
    senders: Vec<watch::Sender<PortState>>,
}

fn prepare(
    label: String,
    namespace: &str,
    remotes: &[String],
    stop: CancellationToken,
    failed_tx: mpsc::Sender<(String, String)>,
) -> Prepared {
    let mut senders = Vec::new();
    let mut ports = Vec::new();
    for r in remotes {
        let (tx, rx) = watch::channel(PortState::Starting);
        senders.push(tx);
        ports.push(PortSlot {
            remote: r.clone(),
            state: rx,
            locals: Mutex::new(Vec::new()),
        });
    }
    Prepared {
        forward: Arc::new(Forward {
            label,
            namespace: namespace.to_string(),
            ports,
            counters: Counters::default(),
            failed_tx,
            stop,
        }),
        senders,
    }
}

/// What a spec's target resolved to at start.
enum Resolved {
    Service,
    Pods {
        what: String,
        config: watcher::Config,
    },
}

async fn get<K>(client: &kube::Client, ns: &str, name: &str, kind: Kind) -> Result<K, ForwardError>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let (k, plural) = match kind {
        Kind::Pod => ("Pod", "pods"),
        Kind::Service => ("Service", "services"),
        Kind::Deployment => ("Deployment", "deployments"),
    };
    Api::<K>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .map_err(|e| ForwardError::from_get(e, k, plural, ns, name))
}

/// Checks a spec against the cluster: the object exists, every port exists and is TCP.
/// Returns the local port of each mapping (`Same` resolved) and how to watch the target.
async fn validate(
    client: &kube::Client,
    ns: &str,
    spec: &ForwardSpec,
) -> Result<(Vec<Option<u16>>, Resolved), ForwardError> {
    let name = &spec.target.name;
    let mut locals = Vec::new();
    match spec.target.kind {
        Kind::Service => {
            let svc: Service = get(client, ns, name, Kind::Service).await?;
            for m in &spec.ports {
                let p = resolve::service_port(&svc, &m.remote)?;
                locals.push(local_for(m.local, p.port));
            }
            Ok((locals, Resolved::Service))
        }
        Kind::Pod => {
            let pod: Pod = match get(client, ns, name, Kind::Pod).await {
                Ok(p) => p,
                Err(ForwardError::NotFound {
                    kind,
                    plural,
                    namespace,
                    name,
                    ..
                }) => {
                    let svc_exists = Api::<Service>::namespaced(client.clone(), ns)
                        .get_opt(&name)
                        .await
                        .ok()
                        .flatten()
                        .is_some();
                    let hint = if svc_exists {
                        format!("; a Service {name} exists: write `svc/{name}` to forward to it")
                    } else {
                        String::new()
                    };
                    return Err(ForwardError::NotFound {
                        kind,
                        plural,
                        namespace,
                        name,
                        hint,
                    });
                }
                Err(e) => return Err(e),
            };
            let owner = format!("pod {ns}/{name}");
            for m in &spec.ports {
                let p = resolve::container_port(pod.spec.as_ref(), &owner, &m.remote)?;
                locals.push(local_for(m.local, p));
            }
            Ok((
                locals,
                Resolved::Pods {
                    what: owner,
                    config: watcher::Config::default().fields(&format!("metadata.name={name}")),
                },
            ))
        }
        Kind::Deployment => {
            let d: Deployment = get(client, ns, name, Kind::Deployment).await?;
            let selector = resolve::deployment_selector(&d)?;
            let owner = format!("deployment {ns}/{name}");
            let template = d.spec.as_ref().and_then(|s| s.template.spec.as_ref());
            for m in &spec.ports {
                let p = resolve::container_port(template, &owner, &m.remote)?;
                locals.push(local_for(m.local, p));
            }
            Ok((
                locals,
                Resolved::Pods {
                    what: owner,
                    config: watcher::Config::default().labels(&selector),
                },
            ))
        }
    }
}

fn local_for(local: LocalPort, resolved: u16) -> Option<u16> {
    match local {
        LocalPort::Same => Some(resolved),
        LocalPort::Fixed(p) => Some(p),
        LocalPort::Any => None,
    }
}

/// Starts forwarding `specs` in `namespace` (single mode). Returns once every listener is
/// bound; pods are looked up in the background.
///
/// # Errors
/// A target that does not exist, a port it does not have or that is not TCP, a local
/// address that cannot be bound: [`ForwardError`], before anything listens.
pub async fn start(
    client: kube::Client,
    namespace: &str,
    specs: &[ForwardSpec],
    opts: Options,
    events: Events,
) -> Result<Running, ForwardError> {
    let cancel = CancellationToken::new();
    let registry = Arc::new(Registry::default());
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        registry: registry.clone(),
        events: events.clone(),
        opts: opts.clone(),
        cancel: cancel.clone(),
    });
    // Validate everything before binding anything.
    let mut validated = Vec::new();
    for spec in specs {
        validated.push(validate(&client, namespace, spec).await?);
    }
    let mut tasks = JoinSet::new();
    let mut listeners_total = 0;
    let mut pending: Vec<(Arc<Forward>, usize, TcpListener)> = Vec::new();
    let mut starts = Vec::new();
    let mut labels: Vec<String> = Vec::new();
    for (spec, (locals, resolved)) in specs.iter().zip(validated) {
        // The same target named twice gets `#2` so both show in the table.
        let mut label = spec.target.to_string();
        let same = labels
            .iter()
            .filter(|l| l.split(" #").next() == Some(label.as_str()))
            .count();
        if same > 0 {
            label = format!("{label} #{}", same + 1);
        }
        labels.push(label.clone());
        let remotes: Vec<String> = spec.ports.iter().map(|m| m.remote.to_string()).collect();
        let (failed_tx, failed_rx) = mpsc::channel(64);
        let prepared = prepare(
            label.clone(),
            namespace,
            &remotes,
            cancel.child_token(),
            failed_tx,
        );
        for (slot, (m, local)) in spec.ports.iter().zip(&locals).enumerate() {
            let remote = m.remote.to_string();
            let mut chosen: Option<u16> = *local;
            for bind_addr in &opts.addresses {
                for (ip, required) in bind_addr.addresses() {
                    let addr = SocketAddr::new(ip, chosen.unwrap_or(0));
                    match bind(addr, &label, &remote).await {
                        Ok(l) => {
                            let actual = l.local_addr().unwrap_or(addr);
                            chosen = Some(actual.port());
                            lock(&prepared.forward.ports[slot].locals)
                                .push((actual, port_label(actual.port(), &remote)));
                            pending.push((prepared.forward.clone(), slot, l));
                        }
                        Err(e) if required => return Err(e),
                        Err(e) => tracing::debug!(error = %e, "optional address skipped"),
                    }
                }
            }
        }
        let wanted: Vec<RemotePort> = spec.ports.iter().map(|m| m.remote.clone()).collect();
        starts.push((
            prepared,
            failed_rx,
            resolved,
            wanted,
            spec.target.name.clone(),
        ));
    }
    for (prepared, failed_rx, resolved, wanted, name) in starts {
        let Prepared { forward, senders } = prepared;
        registry.insert(forward.clone());
        match resolved {
            Resolved::Service => {
                tasks.spawn(run_service_target(
                    ctx.clone(),
                    forward,
                    name,
                    wanted,
                    senders,
                    failed_rx,
                ));
            }
            Resolved::Pods { what, config } => {
                tasks.spawn(run_pod_target(
                    ctx.clone(),
                    forward,
                    what,
                    config,
                    wanted,
                    senders,
                    failed_rx,
                ));
            }
        }
    }
    for (forward, slot, listener) in pending {
        let local = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let remote = forward.ports[slot].remote.clone();
        events.emit(Event::Listening {
            forward: forward.label.clone(),
            local,
            remote,
            note: None,
        });
        listeners_total += 1;
        tasks.spawn(accept_loop(ctx.clone(), forward, slot, listener));
    }
    events.emit(Event::Ready {
        forwards: specs.len(),
        listeners: listeners_total,
    });
    Ok(Running {
        registry,
        names: None,
        cancel,
        tasks,
    })
}

/// What bulk mode shares across namespaces.
struct Bulk {
    namespaces: Vec<String>,
    alloc: Mutex<Allocator>,
    published: Mutex<BTreeMap<String, Published>>,
    names_tx: watch::Sender<Vec<HostsEntry>>,
}

impl Bulk {
    fn republish(&self, domain: &str) {
        let services: Vec<Published> = lock(&self.published).values().cloned().collect();
        self.names_tx
            .send_replace(names::hosts_entries(&services, &self.namespaces, domain));
    }
}

/// A forwarded Service in bulk mode.
struct BulkService {
    forward: Arc<Forward>,
    senders: Vec<watch::Sender<PortState>>,
    sel: Selection,
    wanted: Vec<RemotePort>,
    ports: Vec<u16>,
}

/// Binds every port of a Service on one loopback address, trying the Service's address
/// sequence; ports below 1024 move up when binding them is not allowed.
async fn bind_service(
    bulk: &Bulk,
    key: &str,
    ports: &[u16],
) -> Result<(Ipv4Addr, Vec<(TcpListener, Option<String>)>), String> {
    let candidates = lock(&bulk.alloc).candidates(key, 8);
    let mut last_err = String::from("no address left");
    'addresses: for ip in candidates {
        let mut bound = Vec::new();
        for &p in ports {
            let addr = SocketAddr::new(IpAddr::V4(ip), p);
            match TcpListener::bind(addr).await {
                Ok(l) => bound.push((l, None)),
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    let mut moved = None;
                    for alt in [unprivileged_port(p), Some(0)].into_iter().flatten() {
                        if let Ok(l) = TcpListener::bind(SocketAddr::new(IpAddr::V4(ip), alt)).await
                        {
                            moved = Some(l);
                            break;
                        }
                    }
                    match moved {
                        Some(l) => {
                            let at = l.local_addr().map(|a| a.port()).unwrap_or(0);
                            bound
                                .push((l, Some(format!("port {p} needs root; listening on {at}"))));
                        }
                        None => {
                            last_err = format!("cannot listen on {addr}: {e}");
                            continue 'addresses;
                        }
                    }
                }
                Err(e) => {
                    last_err = format!("cannot listen on {addr}: {e}");
                    if e.kind() == std::io::ErrorKind::AddrNotAvailable {
                        // Not Linux (no 127/8 on lo): no other address will do better.
                        return Err(format!(
                            "{last_err} (this system does not route 127.0.0.0/8 to the loopback interface; add an alias for it, e.g. `sudo ifconfig lo0 alias {ip}` on macOS)"
                        ));
                    }
                    continue 'addresses;
                }
            }
        }
        lock(&bulk.alloc).take(key, ip);
        return Ok((ip, bound));
    }
    Err(last_err)
}

/// Forwards every Service of one namespace, following additions and removals.
async fn run_namespace(
    ctx: Arc<Ctx>,
    bulk: Arc<Bulk>,
    ns: String,
    selector: Option<String>,
    synced_tx: tokio::sync::oneshot::Sender<()>,
) {
    let mut svc_config = watcher::Config::default();
    if let Some(s) = &selector {
        svc_config = svc_config.labels(s);
    }
    let mut services_stream = pin!(watch_stream::<Service>(&ctx.client, &ns, svc_config));
    let mut slices_stream = pin!(watch_stream::<EndpointSlice>(
        &ctx.client,
        &ns,
        watcher::Config::default(),
    ));
    let mut services: Mirror<Service> = Mirror::default();
    let mut slices: Mirror<EndpointSlice> = Mirror::default();
    let (mut svc_health, mut slice_health) = (WatchHealth::default(), WatchHealth::default());
    let (failed_tx, mut failed_rx) = mpsc::channel::<(String, String)>(256);
    let mut forwards: BTreeMap<String, BulkService> = BTreeMap::new();
    let mut synced_tx = Some(synced_tx);
    let mut dirty: BTreeSet<String> = BTreeSet::new();
    let mut all_dirty = true;
    loop {
        let expiry = forwards
            .values()
            .filter_map(|f| f.sel.next_expiry())
            .min()
            .map_or_else(far_future, tokio::time::Instant::from_std);
        tokio::select! {
            _ = ctx.cancel.cancelled() => break,
            item = services_stream.next() => {
                if let Some(Ok(Change::Applied(s) | Change::Deleted(s))) = &item {
                    dirty.insert(s.metadata.name.clone().unwrap_or_default());
                } else {
                    all_dirty = true;
                }
                svc_health.apply(item, &mut services, &format!("Services in {ns}"), &ctx.events);
            }
            item = slices_stream.next() => {
                if let Some(Ok(Change::Applied(s) | Change::Deleted(s))) = &item {
                    if let Some(n) = s.metadata.labels.as_ref().and_then(|l| l.get("kubernetes.io/service-name")) {
                        dirty.insert(n.clone());
                    }
                } else {
                    all_dirty = true;
                }
                slice_health.apply(item, &mut slices, &format!("EndpointSlices in {ns}"), &ctx.events);
            }
            Some((svc, pod)) = failed_rx.recv() => {
                let name = svc.rsplit('/').next().unwrap_or_default().to_string();
                if let Some(f) = forwards.get_mut(&name) {
                    f.sel.failed(&pod, Instant::now());
                    dirty.insert(name);
                }
            }
            _ = tokio::time::sleep_until(expiry) => all_dirty = true,
        }
        if !(services.synced() && slices.synced()) {
            continue;
        }
        let names_changed = reconcile(&ctx, &bulk, &ns, &services, &mut forwards, &failed_tx).await;
        for (name, f) in forwards.iter_mut() {
            if !all_dirty && !dirty.contains(name) {
                continue;
            }
            let c: Vec<Result<Vec<Candidate>, String>> =
                model::service_candidates(&ns, name, services.get(name), &slices, &f.wanted);
            let changed = f.sel.update(&c, Instant::now());
            publish(&ctx, &f.forward, &f.sel, &changed, &f.senders);
        }
        dirty.clear();
        all_dirty = false;
        if names_changed {
            bulk.republish(&ctx.opts.cluster_domain);
        }
        if let Some(tx) = synced_tx.take() {
            let _ = tx.send(());
        }
    }
    for (name, f) in forwards {
        f.forward.stop.cancel();
        ctx.registry.remove(&f.forward.label);
        lock(&bulk.alloc).release(&format!("{ns}/{name}"));
    }
}

/// Starts and stops per-Service forwards to match `services`; says whether the published
/// set changed.
async fn reconcile(
    ctx: &Arc<Ctx>,
    bulk: &Arc<Bulk>,
    ns: &str,
    services: &Mirror<Service>,
    forwards: &mut BTreeMap<String, BulkService>,
    failed_tx: &mpsc::Sender<(String, String)>,
) -> bool {
    let mut changed = false;
    // Services without a selector (`kubernetes`, hand-made endpoints) rarely have pods
    // behind them; port-forward needs one. Name them explicitly to forward them anyway.
    let wanted: BTreeMap<String, Vec<u16>> = services
        .iter()
        .filter(|(_, s)| {
            s.spec
                .as_ref()
                .and_then(|s| s.selector.as_ref())
                .is_some_and(|sel| !sel.is_empty())
        })
        .map(|(name, s)| {
            (
                name.clone(),
                resolve::service_tcp_ports(s)
                    .iter()
                    .map(|p| p.port)
                    .collect::<Vec<u16>>(),
            )
        })
        .filter(|(_, ports)| !ports.is_empty())
        .collect();
    let gone: Vec<String> = forwards
        .iter()
        .filter(|(name, f)| wanted.get(*name) != Some(&f.ports))
        .map(|(name, _)| name.clone())
        .collect();
    for name in gone {
        if let Some(f) = forwards.remove(&name) {
            f.forward.stop.cancel();
            ctx.registry.remove(&f.forward.label);
            let key = format!("{ns}/{name}");
            lock(&bulk.alloc).release(&key);
            lock(&bulk.published).remove(&key);
            changed = true;
            if !wanted.contains_key(&name) {
                ctx.events.emit(Event::ServiceRemoved { forward: key });
            }
        }
    }
    for (name, ports) in &wanted {
        if forwards.contains_key(name) {
            continue;
        }
        let key = format!("{ns}/{name}");
        let (ip, listeners) = match bind_service(bulk, &key, ports).await {
            Ok(b) => b,
            Err(e) => {
                ctx.events.emit(Event::Warning {
                    message: format!("{key} is not forwarded: {e}"),
                });
                continue;
            }
        };
        let remotes: Vec<String> = ports.iter().map(u16::to_string).collect();
        let Prepared { forward, senders } = prepare(
            key.clone(),
            ns,
            &remotes,
            ctx.cancel.child_token(),
            failed_tx.clone(),
        );
        let mut shown = Vec::new();
        for (slot, (listener, note)) in listeners.into_iter().enumerate() {
            let actual = match listener.local_addr() {
                Ok(a) => a,
                Err(_) => continue,
            };
            let remote = forward.ports[slot].remote.clone();
            let label = port_label(actual.port(), &remote);
            lock(&forward.ports[slot].locals).push((actual, label.clone()));
            shown.push(label);
            if note.is_some() {
                ctx.events.emit(Event::Listening {
                    forward: key.clone(),
                    local: actual.to_string(),
                    remote,
                    note,
                });
            }
            tokio::spawn(accept_loop(ctx.clone(), forward.clone(), slot, listener));
        }
        ctx.registry.insert(forward.clone());
        lock(&bulk.published).insert(
            key.clone(),
            Published {
                namespace: ns.to_string(),
                name: name.clone(),
                address: ip,
            },
        );
        ctx.events.emit(Event::ServiceAdded {
            forward: key,
            address: ip.to_string(),
            ports: shown,
        });
        forwards.insert(
            name.clone(),
            BulkService {
                forward,
                senders,
                sel: Selection::new(ports.len()),
                wanted: ports.iter().map(|p| RemotePort::Number(*p)).collect(),
                ports: ports.clone(),
            },
        );
        changed = true;
    }
    changed
}

/// Starts bulk mode: every Service (matching `selector`) of `namespaces`, each on its own
/// loopback address with all its TCP ports. Returns once every namespace was listed and its
/// Services listen; [`Running::names`] then holds the hosts lines to publish.
///
/// # Errors
/// [`ForwardError::Api`] when a namespace's Services or EndpointSlices cannot be listed.
pub async fn start_bulk(
    client: kube::Client,
    namespaces: &[String],
    selector: Option<&str>,
    opts: Options,
    events: Events,
) -> Result<Running, ForwardError> {
    // List once up front so that a wrong namespace or missing permission fails now.
    for ns in namespaces {
        let mut lp = ListParams::default();
        if let Some(s) = selector {
            lp = lp.labels(s);
        }
        let svcs = Api::<Service>::namespaced(client.clone(), ns)
            .list(&lp)
            .await
            .map_err(|source| ForwardError::Api {
                action: format!("list services in {ns}"),
                source,
            })?;
        Api::<EndpointSlice>::namespaced(client.clone(), ns)
            .list(&ListParams::default().limit(1))
            .await
            .map_err(|source| ForwardError::Api {
                action: format!("list endpointslices in {ns}"),
                source,
            })?;
        if svcs.items.is_empty() {
            events.emit(Event::Warning {
                message: format!(
                    "namespace {ns} has no Services{} (yet): new ones will be forwarded as they appear",
                    selector.map(|s| format!(" matching {s:?}")).unwrap_or_default()
                ),
            });
        }
    }
    let cancel = CancellationToken::new();
    let registry = Arc::new(Registry::default());
    let ctx = Arc::new(Ctx {
        client,
        registry: registry.clone(),
        events: events.clone(),
        opts,
        cancel: cancel.clone(),
    });
    let (names_tx, names_rx) = watch::channel(Vec::new());
    let bulk = Arc::new(Bulk {
        namespaces: namespaces.to_vec(),
        alloc: Mutex::new(Allocator::new()),
        published: Mutex::new(BTreeMap::new()),
        names_tx,
    });
    let mut tasks = JoinSet::new();
    let mut synced = Vec::new();
    for ns in namespaces {
        let (tx, rx) = tokio::sync::oneshot::channel();
        synced.push((ns.clone(), rx));
        tasks.spawn(run_namespace(
            ctx.clone(),
            bulk.clone(),
            ns.clone(),
            selector.map(String::from),
            tx,
        ));
    }
    for (ns, rx) in synced {
        if tokio::time::timeout(Duration::from_secs(30), rx)
            .await
            .is_err()
        {
            cancel.cancel();
            return Err(ForwardError::NotSynced { namespace: ns });
        }
    }
    bulk.republish(&ctx.opts.cluster_domain);
    let rows = registry.rows();
    events.emit(Event::Ready {
        forwards: rows.len(),
        listeners: rows.iter().map(|r| r.local.len()).sum(),
    });
    Ok(Running {
        registry,
        names: Some(names_rx),
        cancel,
        tasks,
    })
}
