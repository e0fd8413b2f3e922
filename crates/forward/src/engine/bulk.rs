//! Bulk mode: every Service of some namespaces, reconciled as they come and go.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use kube::runtime::watcher;
use kubelan_sys::hosts::HostsEntry;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::alloc::{Allocator, unprivileged_port};
use crate::error::ForwardError;
use crate::model::{self, Change, Mirror, PortState, Selection};
use crate::names::{self, Published};
use crate::report::Event;
use crate::resolve::{self, Candidate};
use crate::spec::RemotePort;

use super::connection::accept_loop;
use super::watchers::{WatchHealth, far_future, publish, watch_stream};
use super::{
    Ctx, Events, Forward, Options, Prepared, Registry, Running, lock, port_label, prepare,
};

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
