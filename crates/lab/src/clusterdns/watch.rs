//! Watching the API: Services, EndpointSlices and Pods in, records out to dnsmasq.

use std::collections::HashSet;
use std::fs;
use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use anyhow::Context as _;
use futures::{Stream, StreamExt as _};
use k8s_openapi::api::core::v1::{Pod, PodSpec, PodStatus, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client, Resource as _};
use tokio::time::Instant;

use super::ClusterDnsOptions;
use super::dnsmasq::{Dnsmasq, HostsWriter, dnsmasq_args, wait_child};
use super::records::{Records, compute_records, is_dns_name, normalize_domain};

/// How long changes are collected before the records are recomputed.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// How long to wait for the first complete listing before writing what is
/// known and starting dnsmasq anyway.
const INITIAL_SYNC_GRACE: Duration = Duration::from_secs(3);
/// Which watched kind an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Services = 0,
    EndpointSlices = 1,
    Pods = 2,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Services, Kind::EndpointSlices, Kind::Pods];

    fn name(self) -> &'static str {
        match self {
            Kind::Services => "services",
            Kind::EndpointSlices => "endpointslices",
            Kind::Pods => "pods",
        }
    }
}

/// One item of the merged watch streams.
enum WatchUpdate {
    /// The store of `Kind` changed; `listed` when a full listing just completed.
    Changed { kind: Kind, listed: bool },
    /// The watch of `Kind` failed; it is retried with backoff.
    Failed { kind: Kind, error: String },
}

/// Turns a reflector stream into [`WatchUpdate`]s.
fn updates<K, S>(kind: Kind, stream: S) -> impl Stream<Item = WatchUpdate> + Send + 'static
where
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    stream.map(move |item| match item {
        Ok(event) => WatchUpdate::Changed {
            kind,
            listed: matches!(event, watcher::Event::InitDone),
        },
        Err(e) => WatchUpdate::Failed {
            kind,
            error: e.to_string(),
        },
    })
}

/// Runs the cluster DNS until `shutdown` completes.
///
/// Watches the API through `client`, keeps the hosts file in
/// `opts.hosts_dir` current (changes land within about 100 ms of the watch
/// event) and supervises dnsmasq, restarting it with backoff when it exits.
/// dnsmasq starts once the first complete listing is written, or after a few
/// seconds if the API is slow. On shutdown dnsmasq gets SIGTERM, then SIGKILL
/// after 2 s, and the temporary file is removed.
///
/// Fails when the domain is invalid, the directory cannot be prepared, or
/// dnsmasq cannot be started the first time; later failures are logged and
/// retried.
pub async fn run(
    opts: ClusterDnsOptions,
    client: Client,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let domain = normalize_domain(&opts.domain);
    if !is_dns_name(&domain) {
        anyhow::bail!("invalid cluster domain {:?}", opts.domain);
    }
    fs::create_dir_all(&opts.hosts_dir)
        .with_context(|| format!("cannot create {}", opts.hosts_dir.display()))?;
    let mut writer = HostsWriter::new(&opts.hosts_dir)
        .with_context(|| format!("cannot use {}", opts.hosts_dir.display()))?;

    let (services, svc_writer) = reflector::store::<Service>();
    let (slices, slice_writer) = reflector::store::<EndpointSlice>();
    let (pods, pod_writer) = reflector::store::<Pod>();
    let config = watcher::Config::default();
    let svc_stream = watcher(Api::<Service>::all(client.clone()), config.clone())
        .modify(|s| s.meta_mut().managed_fields = None)
        .default_backoff()
        .reflect(svc_writer);
    let slice_stream = watcher(Api::<EndpointSlice>::all(client.clone()), config.clone())
        .modify(|s| s.meta_mut().managed_fields = None)
        .default_backoff()
        .reflect(slice_writer);
    let pod_stream = watcher(Api::<Pod>::all(client), config)
        .modify(slim_pod)
        .default_backoff()
        .reflect(pod_writer);
    let mut events = futures::stream::select_all([
        updates(Kind::Services, svc_stream).boxed(),
        updates(Kind::EndpointSlices, slice_stream).boxed(),
        updates(Kind::Pods, pod_stream).boxed(),
    ]);

    let program = opts.dnsmasq.clone();
    let args = dnsmasq_args(&ClusterDnsOptions {
        domain: domain.clone(),
        ..opts.clone()
    });
    let mut dnsmasq = Dnsmasq::new(program, args);

    let mut listed = [false; 3];
    let mut synced = false;
    let mut write_at: Option<Instant> = None;
    let mut grace_until: Option<Instant> = Some(Instant::now() + INITIAL_SYNC_GRACE);
    let mut last = Records::new();
    let mut shutdown = std::pin::pin!(shutdown);

    let result = loop {
        // `select!` builds every branch's future even when its condition is
        // false, so timers get a harmless fallback instead of an unwrap.
        let write_deadline = write_at.unwrap_or_else(Instant::now);
        let grace_deadline = grace_until.unwrap_or_else(Instant::now);
        let start_deadline = dnsmasq.start_at.unwrap_or_else(Instant::now);
        tokio::select! {
            () = &mut shutdown => break Ok(()),
            Some(update) = events.next() => match update {
                WatchUpdate::Changed { kind, listed: done } => {
                    if done && !listed[kind as usize] {
                        listed[kind as usize] = true;
                        tracing::debug!(kind = kind.name(), "initial listing complete");
                    }
                    if !synced && listed.iter().all(|l| *l) {
                        synced = true;
                        grace_until = None;
                        write_at = Some(Instant::now());
                    } else if synced && write_at.is_none() {
                        write_at = Some(Instant::now() + DEBOUNCE);
                    }
                }
                WatchUpdate::Failed { kind, error } => {
                    tracing::warn!(kind = kind.name(), %error, "watch failed; retrying with backoff");
                }
            },
            () = tokio::time::sleep_until(grace_deadline), if grace_until.is_some() => {
                grace_until = None;
                synced = true;
                write_at = Some(Instant::now());
                let missing: Vec<&str> = Kind::ALL
                    .iter()
                    .filter(|k| !listed[**k as usize])
                    .map(|k| k.name())
                    .collect();
                tracing::warn!(?missing, "API listing incomplete; serving what is known so far");
            }
            () = tokio::time::sleep_until(write_deadline), if write_at.is_some() => {
                write_at = None;
                let next = current_records(&domain, &services, &slices, &pods);
                match writer.write(&next) {
                    Ok(changed) => {
                        if changed {
                            log_change(&last, &next);
                        }
                        last = next;
                    }
                    Err(e) => {
                        tracing::error!(path = %writer.path().display(), error = %e, "cannot write the hosts file; retrying");
                        write_at = Some(Instant::now() + Duration::from_secs(1));
                    }
                }
                if !dnsmasq.ever_started && dnsmasq.start_at.is_none() && dnsmasq.child.is_none() {
                    dnsmasq.start_at = Some(Instant::now());
                }
            }
            () = tokio::time::sleep_until(start_deadline), if dnsmasq.start_at.is_some() => {
                if let Err(e) = dnsmasq.start() {
                    break Err(e);
                }
            }
            status = wait_child(&mut dnsmasq.child) => dnsmasq.exited(status),
        }
    };

    dnsmasq.stop().await;
    writer.remove_temp();
    result
}

/// Drops the parts of a pod the records do not need, to keep the store small.
fn slim_pod(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
    pod.metadata.annotations = None;
    pod.spec = pod.spec.take().map(|spec| PodSpec {
        host_network: spec.host_network,
        ..PodSpec::default()
    });
    pod.status = pod.status.take().map(|status| PodStatus {
        phase: status.phase,
        pod_ip: status.pod_ip,
        pod_ips: status.pod_ips,
        ..PodStatus::default()
    });
}

/// The records for the stores' current content.
fn current_records(
    domain: &str,
    services: &Store<Service>,
    slices: &Store<EndpointSlice>,
    pods: &Store<Pod>,
) -> Records {
    compute_records(domain, &services.state(), &slices.state(), &pods.state())
}

/// Logs a one-line summary of a record-set change.
fn log_change(old: &Records, new: &Records) {
    let pairs = |records: &Records| -> HashSet<(IpAddr, String)> {
        records
            .iter()
            .flat_map(|(ip, names)| names.iter().map(move |n| (*ip, n.clone())))
            .collect()
    };
    let (old_pairs, new_pairs) = (pairs(old), pairs(new));
    let added = new_pairs.difference(&old_pairs).count();
    let removed = old_pairs.difference(&new_pairs).count();
    let names: HashSet<&str> = new
        .iter()
        .flat_map(|(_, names)| names.iter().map(String::as_str))
        .collect();
    tracing::info!(
        addresses = new.len(),
        names = names.len(),
        records = new_pairs.len(),
        added,
        removed,
        "cluster DNS records updated"
    );
}
