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

mod bulk;
mod connection;
mod single;
mod watchers;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kubelan_sys::hosts::HostsEntry;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::model::PortState;
use crate::report::{Event, Row, Totals};
use crate::spec::BindAddress;
use crate::tunnel::ByteCounters;

pub use bulk::start_bulk;
pub use single::start;

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
