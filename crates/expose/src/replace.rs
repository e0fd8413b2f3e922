//! The `kubelan replace svc/NAME [LOCAL:]PORT...` orchestrator, at the edge:
//!
//! 1. preflight (`kubelan rbac replace`), read the Service; a swap left by a session whose
//!    Job is gone (the relay died with its node) is put back first, saying so;
//! 2. refuse a held lock (the Lease `kubelan-replace-<svc>` names its holder), a Service
//!    that cannot be replaced, ports it does not have; warn about GitOps tools and ports
//!    not taken over;
//! 3. create the Job **suspended**, then, owned by it, the lock Lease (409: refused, naming
//!    the holder), the relay's ServiceAccount, Role and RoleBinding; then resume the Job, so
//!    its pod never starts before its account exists;
//! 4. wait for the relay pod (ready = it may restore the Service), swap the selector, wait
//!    for the Service's EndpointSlices to list only the relay, serve with the same link as
//!    `expose`;
//! 5. at the end put the Service back, then delete the Job in the foreground (the relay,
//!    on SIGTERM, finds it restored already).
//!
//! After `kill -9` of the client the relay's grace expires, it restores the Service and
//! exits; the Job's TTL and the garbage collector remove the rest. Decisions are made by
//! [`kubelan_cluster::replace`] and [`crate::replace_plan`]; this file calls the API in order.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kubelan_cluster::names::{FIELD_MANAGER, LABEL_SERVICE_NAME};
use kubelan_cluster::preflight;
use kubelan_cluster::replace::restorer::{
    RestoreOutcome, RestoreTarget, Restorer, send_json_patch,
};
use kubelan_cluster::replace::{self, Replacer, Selector, selected_session};
use kubelan_cluster::session_objects::gitops::gitops_manager;
use kubelan_cluster::session_objects::{
    self, LockHolder, Mode, RELAY_RESTORE_TIMEOUT_SECONDS, RelaySpec, ReplaceTarget, SessionId,
    SessionMeta, SessionOwner, lock_name,
};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error::{ExposeError, api};
use crate::events::ExposeEvent;
use crate::replace_plan::{
    PortArg, ReplacePlan, ReplaceSpecError, parse_port_arg, parse_service, plan_replace,
};
use crate::session::{
    ExposeOptions, FIRST_GRACE, GRACE, RelayLink, delete_job_with, new_token, relay_image,
    serve_link, wait_ready, whoami,
};

/// What `kubelan replace` was asked: the Service and the port arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplaceRequest {
    /// The Service's name.
    pub service: String,
    /// The `[LOCAL:]PORT` arguments.
    pub ports: Vec<PortArg>,
}

impl ReplaceRequest {
    /// The request of `kubelan replace svc/NAME [LOCAL:]PORT...`, checked before anything
    /// connects.
    ///
    /// # Errors
    /// The first argument that is not `svc/NAME` or `[LOCAL:]PORT[/udp]`.
    pub fn parse(service: &str, ports: &[String]) -> Result<Self, ReplaceSpecError> {
        Ok(Self {
            service: parse_service(service)?,
            ports: ports
                .iter()
                .map(|p| parse_port_arg(p))
                .collect::<Result<_, _>>()?,
        })
    }
}

fn show(selector: &Selector) -> String {
    selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Runs a replace session until `shutdown`, reporting on `events`. Returns after the
/// Service is put back and the session's Job deleted (or, on an error, after undoing
/// what was done).
///
/// # Errors
/// An [`ExposeError`] naming the fix: missing permissions, a missing or unreplaceable
/// Service, a held lock, ports the Service lacks, a relay pod that does not start.
pub async fn run_replace(
    request: &ReplaceRequest,
    o: &ExposeOptions,
    events: mpsc::UnboundedSender<ExposeEvent>,
    shutdown: CancellationToken,
) -> Result<(), ExposeError> {
    let ns = o.namespace.as_str();
    let name = request.service.as_str();
    let emit = |e: ExposeEvent| {
        let _ = events.send(e);
    };
    emit(ExposeEvent::Preflight {
        namespace: ns.into(),
    });
    preflight::require_session(
        &o.client,
        "replace",
        ns,
        &preflight::replace_access(ns, name),
    )
    .await?;
    let services: Api<Service> = Api::namespaced(o.client.clone(), ns);
    let jobs: Api<Job> = Api::namespaced(o.client.clone(), ns);
    let leases: Api<Lease> = Api::namespaced(o.client.clone(), ns);
    let mut svc = read_service(&services, name, ns).await?;
    if let Some(stale) = selected_session(&svc).map(str::to_string) {
        let job = format!("kubelan-{stale}");
        if get_opt(&jobs, &job, ns).await?.is_some() {
            return Err(locked(&leases, name, ns, Some(&stale)).await);
        }
        // The session is gone but its swap stayed (its relay could not restore).
        let outcome = Restorer::new(
            o.client.clone(),
            RestoreTarget {
                namespace: ns.into(),
                service: name.into(),
                session: stale.clone(),
                original: None,
                timeout: Duration::from_secs(RELAY_RESTORE_TIMEOUT_SECONDS),
            },
        )
        .with_field_manager(FIELD_MANAGER)
        .restore()
        .await;
        emit(ExposeEvent::Warning {
            message: format!(
                "Service {name} still pointed at session {stale}, whose Job is gone: {}",
                describe(&outcome, name, &stale)
            ),
        });
        svc = read_service(&services, name, ns).await?;
    }
    if get_opt(&leases, &lock_name(name), ns).await?.is_some() {
        return Err(locked(&leases, name, ns, None).await);
    }
    let id = SessionId::generate();
    let user = whoami(&o.client).await;
    let who = Replacer {
        session: id.to_string(),
        user: user.clone(),
        host: o.client_host.clone(),
    };
    // Decided now to refuse before creating anything; decided again at the swap.
    let first = replace::swap(&svc, &who)?;
    let plan = plan_replace(name, &request.ports, &first.ports)?;
    for w in &first.warnings {
        emit(ExposeEvent::Warning {
            message: format!("Service {name}: {w}"),
        });
    }
    if let Some(g) = gitops_manager(&svc.metadata) {
        emit(ExposeEvent::Warning {
            message: g.warning(name),
        });
    }
    for p in &plan.unreplaced {
        emit(ExposeEvent::Warning {
            message: format!(
                "Service {name} port {p} is not taken over: pods connecting to it are refused until the session ends (add it to the command to serve it here)"
            ),
        });
    }
    let meta = SessionMeta {
        id: id.clone(),
        namespace: ns.into(),
        mode: Mode::Replace,
        user,
        client_host: o.client_host.clone(),
        command: o.command.clone(),
    };
    let (token, token_sha256) = new_token();
    let relay = RelaySpec {
        image: relay_image(o).await,
        listeners: plan.listeners.clone(),
        carrier_port: plan.carrier_port,
        grace: GRACE,
        first_grace: FIRST_GRACE,
        token_sha256,
        restore: Some(ReplaceTarget {
            service: name.into(),
            original_selector: first.original.clone(),
        }),
    };
    let mut job = session_objects::job(&meta, &relay);
    if let Some(spec) = job.spec.as_mut() {
        // Resumed once the relay's ServiceAccount exists.
        spec.suspend = Some(true);
    }
    let job_name = id.job_name();
    let created = jobs
        .create(&PostParams::default(), &job)
        .await
        .map_err(api(format!("create jobs/{job_name} in {ns}")))?;
    emit(ExposeEvent::Created {
        kind: "Job".into(),
        name: job_name.clone(),
    });
    let restorer = Restorer::new(
        o.client.clone(),
        RestoreTarget {
            namespace: ns.into(),
            service: name.into(),
            session: id.to_string(),
            original: Some(first.original.clone()),
            timeout: Duration::from_secs(RELAY_RESTORE_TIMEOUT_SECONDS),
        },
    )
    .with_field_manager(FIELD_MANAGER);
    // The link outlives Ctrl-C until the Service is handed back (below).
    let link_stop = CancellationToken::new();
    let stop_link = link_stop.clone().drop_guard();
    let mut swapped = false;
    let result = session(
        &plan,
        o,
        &meta,
        &who,
        &created,
        &first.original,
        &token,
        &events,
        &shutdown,
        &link_stop,
        &mut swapped,
    )
    .await;
    if swapped {
        let outcome = restorer.restore().await;
        let handing_back = result.is_ok() && matches!(outcome, RestoreOutcome::Done(_));
        let mut said = describe(&outcome, name, id.as_str());
        if handing_back {
            said.push_str(&format!(
                "; still serving for {:.1} s while kube-proxy moves connections back",
                HANDBACK.as_secs_f64()
            ));
        }
        emit(ExposeEvent::Restored {
            service: name.into(),
            outcome: said,
        });
        if handing_back {
            tokio::time::sleep(HANDBACK).await;
        }
    }
    drop(stop_link);
    emit(ExposeEvent::Stopping {
        job: job_name.clone(),
    });
    delete_job_with(&jobs, &job_name, &DeleteParams::foreground()).await;
    result
}

/// One sentence on a restore.
fn describe(outcome: &RestoreOutcome, service: &str, session: &str) -> String {
    match outcome {
        RestoreOutcome::Done(d) => d.describe(service, session),
        RestoreOutcome::Gone => format!("Service {service} no longer exists; nothing to put back"),
        RestoreOutcome::Failed { last_error } => format!(
            "could not put Service {service} back ({last_error}); its relay puts it back when it stops, or restore it by hand from its {} annotation",
            replace::ANNOTATION_ORIGINAL
        ),
    }
}

async fn read_service(api: &Api<Service>, name: &str, ns: &str) -> Result<Service, ExposeError> {
    get_opt(api, name, ns)
        .await?
        .ok_or_else(|| ExposeError::ServiceNotFound {
            service: name.into(),
            namespace: ns.into(),
        })
}

async fn get_opt<K>(api: &Api<K>, name: &str, ns: &str) -> Result<Option<K>, ExposeError>
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    let kind = K::plural(&K::DynamicType::default()).to_string();
    api.get_opt(name)
        .await
        .map_err(api_err(format!("get {kind}/{name} in {ns}")))
}

fn api_err(action: String) -> impl FnOnce(kube::Error) -> ExposeError {
    api(action)
}

/// The refusal for a held Service, naming the holder from the lock Lease (or, without
/// one, the session its selector names).
async fn locked(
    leases: &Api<Lease>,
    service: &str,
    ns: &str,
    selected: Option<&str>,
) -> ExposeError {
    let holder = leases
        .get_opt(&lock_name(service))
        .await
        .ok()
        .flatten()
        .and_then(|l| LockHolder::from_lease(&l));
    let (holder, session) = match holder {
        Some(h) => (h.to_string(), h.session),
        None => {
            let s = selected.unwrap_or("unknown").to_string();
            (format!("session {s}"), s)
        }
    };
    ExposeError::Locked {
        service: service.into(),
        namespace: ns.into(),
        holder,
        session,
    }
}

/// Everything after the Job exists; `swapped` tells the caller whether to restore.
#[allow(clippy::too_many_arguments)]
async fn session(
    plan: &ReplacePlan,
    o: &ExposeOptions,
    meta: &SessionMeta,
    who: &Replacer,
    job: &Job,
    original: &Selector,
    token: &str,
    events: &mpsc::UnboundedSender<ExposeEvent>,
    shutdown: &CancellationToken,
    link_stop: &CancellationToken,
    swapped: &mut bool,
) -> Result<(), ExposeError> {
    let ns = o.namespace.as_str();
    let name = plan.service.as_str();
    let emit = |e: ExposeEvent| {
        let _ = events.send(e);
    };
    let owner = SessionOwner::from_job(job).ok_or_else(|| {
        ExposeError::Carrier(
            "the API server returned the created Job without a name or UID; kubelan cannot own the session's objects by it".into(),
        )
    })?;
    let pp = PostParams::default();
    let leases: Api<Lease> = Api::namespaced(o.client.clone(), ns);
    let lock = session_objects::replace_lock(meta, &owner, name);
    match leases.create(&pp, &lock).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {
            return Err(locked(&leases, name, ns, None).await);
        }
        Err(e) => {
            return Err(ExposeError::Api {
                action: format!("create leases/{} in {ns}", lock_name(name)),
                source: e,
            });
        }
    }
    emit(ExposeEvent::Created {
        kind: "Lease".into(),
        name: lock_name(name),
    });
    create(
        o,
        &session_objects::relay_service_account(meta, &owner),
        events,
    )
    .await?;
    create(o, &session_objects::relay_role(meta, &owner, name), events).await?;
    create(
        o,
        &session_objects::relay_role_binding(meta, &owner),
        events,
    )
    .await?;
    let jobs: Api<Job> = Api::namespaced(o.client.clone(), ns);
    jobs.patch(
        &owner.name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"suspend": false}})),
    )
    .await
    .map_err(api(format!("patch jobs/{} in {ns} (resume)", owner.name)))?;
    let (pod, ip) = tokio::select! {
        r = wait_ready(o, job, events) => r?,
        () = shutdown.cancelled() => return Ok(()),
    };
    emit(ExposeEvent::RelayReady {
        pod: pod.clone(),
        ip: ip.clone(),
    });
    swap(o, who, name, original, swapped).await?;
    tokio::select! {
        () = wait_moved(o, name, &ip, events) => {}
        () = shutdown.cancelled() => return Ok(()),
    }
    emit(ExposeEvent::Replaced {
        service: name.into(),
        original: show(original),
    });
    let link = RelayLink {
        pod,
        ip,
        carrier_port: plan.carrier_port,
        token: token.into(),
        ports: plan.ports.clone(),
        service: format!("{name}.{ns}.svc"),
        described: plan
            .ports
            .iter()
            .map(|p| format!("{}/{} → {}", p.service_port, p.local.protocol, p.local))
            .collect(),
    };
    serve_link(o, link, events, shutdown, link_stop).await
}

/// How long [`wait_moved`] waits for the Service's EndpointSlices to list only the relay.
const MOVE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often it reads them.
const MOVE_POLL: Duration = Duration::from_millis(100);

/// Waits until the swapped Service's EndpointSlices list only the relay at `ip` (the
/// endpoint controller's answer to the swap, which every node's kube-proxy then applies),
/// reporting where they stand when it changes. Never fails the session: without
/// permission to list EndpointSlices, on an API error or after [`MOVE_TIMEOUT`] it warns
/// and returns, and the session serves anyway.
async fn wait_moved(
    o: &ExposeOptions,
    name: &str,
    ip: &str,
    events: &mpsc::UnboundedSender<ExposeEvent>,
) {
    let ns = o.namespace.as_str();
    let warn = |message: String| {
        let _ = events.send(ExposeEvent::Warning { message });
    };
    let Ok(relay) = ip.parse::<std::net::IpAddr>() else {
        warn(format!(
            "the relay's pod IP {ip:?} is not an address; not waiting for Service {name}'s endpoints to move"
        ));
        return;
    };
    let slices: Api<EndpointSlice> = Api::namespaced(o.client.clone(), ns);
    let params = ListParams::default().labels(&format!("{}={name}", LABEL_SERVICE_NAME));
    let started = tokio::time::Instant::now();
    let mut said = String::new();
    loop {
        let state = match slices.list(&params).await {
            Ok(list) => replace::endpoints_state(&list.items, relay),
            Err(kube::Error::Api(s)) if s.code == 403 => {
                warn(format!(
                    "cannot list EndpointSlices in {ns} to see Service {name}'s traffic move (`kubelan rbac replace` grants it): new connections may reach its old pods for a moment"
                ));
                return;
            }
            Err(e) => {
                warn(format!(
                    "could not list Service {name}'s EndpointSlices in {ns} ({e}): new connections may reach its old pods for a moment"
                ));
                return;
            }
        };
        if state == replace::EndpointsState::Moved {
            return;
        }
        let status = state.to_string();
        if started.elapsed() >= MOVE_TIMEOUT {
            warn(format!(
                "Service {name}'s endpoints did not move to the relay in {} s ({status}); serving anyway. Is the endpoint controller running? `kubectl get endpointslices -n {ns} -l {}={name}`",
                MOVE_TIMEOUT.as_secs(),
                LABEL_SERVICE_NAME
            ));
            return;
        }
        if status != said {
            let _ = events.send(ExposeEvent::Moving {
                service: name.into(),
                status: status.clone(),
            });
            said = status;
        }
        tokio::time::sleep(MOVE_POLL).await;
    }
}

/// Creates one of the session's namespaced objects, saying so.
async fn create<K>(
    o: &ExposeOptions,
    object: &K,
    events: &mpsc::UnboundedSender<ExposeEvent>,
) -> Result<(), ExposeError>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let ns = o.namespace.as_str();
    let api: Api<K> = Api::namespaced(o.client.clone(), ns);
    let name = object.meta().name.clone().unwrap_or_default();
    let dt = K::DynamicType::default();
    api.create(&PostParams::default(), object)
        .await
        .map_err(api_err(format!("create {}/{name} in {ns}", K::plural(&dt))))?;
    let _ = events.send(ExposeEvent::Created {
        kind: K::kind(&dt).to_string(),
        name,
    });
    Ok(())
}

/// How long the link keeps serving after the Service's selector is back. Until every
/// node's kube-proxy has applied the EndpointSlice change (iptables and nftables modes
/// sync at most once a second by default), new connections to the Service still reach
/// the relay pod; with the link up they are answered here instead of reset.
const HANDBACK: Duration = Duration::from_millis(1500);

/// How many times a swap is decided again after the Service changed under it (its
/// selector unchanged: e.g. a label edit).
const SWAP_ATTEMPTS: usize = 5;

/// Points the Service at the relay. The selector must still be the one the relay was
/// told to restore; `swapped` is set as soon as the patch is accepted.
async fn swap(
    o: &ExposeOptions,
    who: &Replacer,
    name: &str,
    original: &Selector,
    swapped: &mut bool,
) -> Result<(), ExposeError> {
    let ns = o.namespace.as_str();
    let services: Api<Service> = Api::namespaced(o.client.clone(), ns);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let svc = read_service(&services, name, ns).await?;
        let decided = replace::swap(&svc, who)?;
        if &decided.original != original {
            return Err(ExposeError::ServiceChanged {
                service: name.into(),
                now: show(&decided.original),
            });
        }
        // Set before sending: an answer lost after the server applied it still needs the
        // restore (which does nothing to a Service that was never swapped).
        *swapped = true;
        match send_json_patch(&services, name, FIELD_MANAGER, &decided.patch).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 422 && attempt < SWAP_ATTEMPTS => {
                tracing::debug!("the Service changed during the swap ({}); again", s.message);
            }
            Err(e) => {
                return Err(ExposeError::Api {
                    action: format!("patch services/{name} in {ns} (swap the selector)"),
                    source: e,
                });
            }
        }
    }
}
