//! The watcher tasks: one per target (single mode) keeps each port's pod choice current,
//! and `publish` hands the chosen names to the hosts file.

use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, watcher};
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch};

use crate::model::{self, Change, Mirror, PortState, Selection};
use crate::report::Event;
use crate::spec::RemotePort;

use super::{Ctx, Events, Forward};

/// A watch of `K` in `namespace` with the watcher's default backoff.
pub(super) fn watch_stream<K>(
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
pub(super) struct WatchHealth {
    last: Option<String>,
}

impl WatchHealth {
    pub(super) fn apply<K: kube::Resource>(
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
pub(super) fn publish(
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

pub(super) fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(3600)
}

/// Keeps the ports of a Service target current (single mode).
pub(super) async fn run_service_target(
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
pub(super) async fn run_pod_target(
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
