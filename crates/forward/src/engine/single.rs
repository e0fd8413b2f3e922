//! Single mode: forwards checked against the cluster and started one by one.

use std::net::SocketAddr;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::Api;
use kube::runtime::watcher;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::error::ForwardError;
use crate::report::Event;
use crate::resolve;
use crate::spec::{ForwardSpec, Kind, LocalPort, RemotePort};

use super::connection::{accept_loop, bind};
use super::watchers::{run_pod_target, run_service_target};
use super::{
    Ctx, Events, Forward, Options, Prepared, Registry, Running, lock, port_label, prepare,
};

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
