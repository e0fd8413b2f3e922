//! The expose orchestrator, at the edge: preflight → refuse a taken name → create the
//! Job, then the Service owned by it → wait for the relay pod → run the inner session to
//! the relay with an [`ExposeAcceptor`] → on shutdown delete the Job (the garbage
//! collector deletes the Service and the pod).
//!
//! Every decision is made by the sans-IO modules ([`crate::spec`],
//! [`crate::relay_status`], [`kubelan_cluster::session_objects`]); this file only calls
//! the API and the session in that order.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kubelan_cluster::names::{AGENT, DEFAULT_IMAGE, LABEL_SESSION};
use kubelan_cluster::preflight;
use kubelan_cluster::session_objects::{
    self, Mode, RelaySpec, SessionId, SessionMeta, SessionOwner, agent_image,
};
use kubelan_proto::{Capabilities, Target, Token};
use kubelan_session::carrier::{Lookup, PortForwardDialer};
use kubelan_session::{CarrierDialer, FlowDialer, Session, SessionConfig, SessionState};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error::{ExposeError, api};
use crate::events::{ExposeAcceptor, ExposeEvent};
use crate::relay_status::{RelayStatus, relay_status};
use crate::spec::{ExposePlan, ExposedPort};

/// How long the relay waits for a lost client before it exits (and the Job, the Service
/// and everything else of the session go away).
pub const GRACE: Duration = Duration::from_secs(10);
/// How long the relay waits for its first client.
pub const FIRST_GRACE: Duration = Duration::from_secs(60);

/// Everything `kubelan expose` needs besides the plan.
#[derive(Clone)]
pub struct ExposeOptions {
    /// The API client.
    pub client: kube::Client,
    /// The session's namespace (the Service's).
    pub namespace: String,
    /// The agent's namespace (its image is the relay's default).
    pub agent_namespace: String,
    /// The relay image; `None`: the installed agent's, else kubelan's default image.
    pub image: Option<String>,
    /// How long to wait for the relay pod.
    pub ready_timeout: Duration,
    /// The client's host name and command line, written on the session's objects.
    pub client_host: String,
    /// The command line.
    pub command: String,
    /// An agent session to reach the relay through (a TCP flow to its pod IP); `None`:
    /// a port-forward to the relay pod through the API server.
    pub outer: Option<Session>,
    /// Which command runs the session ([`Mode::Expose`] or [`Mode::Run`]): the
    /// permissions checked and the mode written on the session's objects.
    pub mode: Mode,
    /// Receives the link to the relay and the acceptor once they exist, for a caller that
    /// adds listeners while the session runs (`kubelan run` without `--expose`).
    pub on_serving: Option<mpsc::UnboundedSender<ServingHandles>>,
}

/// What a caller needs to add ports to a running session: the session to the relay (for
/// [`Session::listen`]) and the acceptor that routes its listeners.
#[derive(Clone)]
pub struct ServingHandles {
    /// The session to the relay.
    pub relay: Session,
    /// Routes the relay's listeners to local targets.
    pub acceptor: Arc<ExposeAcceptor>,
}

/// The Service port of a session that starts without ports (Kubernetes requires one):
/// the relay's carrier port, which answers only with the session's token.
pub fn placeholder_port(carrier_port: u16) -> session_objects::ServicePortSpec {
    session_objects::ServicePortSpec {
        name: kubelan_cluster::names::RELAY_CARRIER_PORT_NAME.into(),
        port: carrier_port,
        target_port: carrier_port,
        protocol: session_objects::Protocol::Tcp,
    }
}

/// A random token (64 hex digits) and its SHA-256 (lower-case hex), which the relay's Job
/// carries as `--token-sha256`.
pub fn new_token() -> (String, String) {
    use rand::Rng;
    let bytes: [u8; 32] = rand::rng().random();
    let token = hex(&bytes);
    let hash = token_sha256(&token);
    (token, hash)
}

/// SHA-256 of the token's UTF-8 bytes, lower-case hex: what the relay compares a
/// client's `Hello` token against.
pub fn token_sha256(token: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The relay image: the installed agent's when it can be read (an agent that advertises
/// reverse flows carries `kubelan relay`), else kubelan's default image.
pub(crate) async fn relay_image(o: &ExposeOptions) -> String {
    if let Some(i) = &o.image {
        return i.clone();
    }
    let deployments: Api<Deployment> = Api::namespaced(o.client.clone(), &o.agent_namespace);
    match deployments.get(AGENT).await {
        Ok(d) => agent_image(&d).unwrap_or_else(|| DEFAULT_IMAGE.into()),
        Err(e) => {
            tracing::debug!("reading the agent's image: {e}; using {DEFAULT_IMAGE}");
            DEFAULT_IMAGE.into()
        }
    }
}

pub(crate) async fn whoami(client: &kube::Client) -> String {
    let api: Api<SelfSubjectReview> = Api::all(client.clone());
    match api
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
    {
        Ok(r) => r
            .status
            .and_then(|s| s.user_info)
            .and_then(|u| u.username)
            .unwrap_or_else(|| "unknown".into()),
        Err(e) => {
            tracing::debug!("SelfSubjectReview: {e}");
            "unknown".into()
        }
    }
}

/// Runs an expose session until `shutdown`, reporting on `events`. Returns after the
/// session's Job is deleted (or, on an error before that, after cleaning up what was
/// created).
///
/// # Errors
/// An [`ExposeError`] naming the fix: missing permissions, a taken name, a relay pod that
/// does not start, an incompatible relay.
pub async fn run(
    plan: &ExposePlan,
    o: &ExposeOptions,
    events: mpsc::UnboundedSender<ExposeEvent>,
    shutdown: CancellationToken,
) -> Result<(), ExposeError> {
    let ns = o.namespace.as_str();
    let emit = |e: ExposeEvent| {
        let _ = events.send(e);
    };
    emit(ExposeEvent::Preflight {
        namespace: ns.into(),
    });
    let access = match o.mode {
        Mode::Run => preflight::run_access(ns),
        _ => preflight::expose_access(ns),
    };
    preflight::require_session(&o.client, o.mode.as_str(), ns, &access).await?;
    let id = SessionId::generate();
    let name = plan.name.clone().unwrap_or_else(|| id.job_name());
    let services: Api<Service> = Api::namespaced(o.client.clone(), ns);
    if services
        .get_opt(&name)
        .await
        .map_err(api(format!("get services/{name} in {ns}")))?
        .is_some()
    {
        return Err(ExposeError::NameTaken {
            name,
            namespace: ns.into(),
        });
    }
    let meta = SessionMeta {
        id: id.clone(),
        namespace: ns.into(),
        mode: o.mode,
        user: whoami(&o.client).await,
        client_host: o.client_host.clone(),
        command: o.command.clone(),
    };
    let (token, token_sha256) = new_token();
    let relay = RelaySpec {
        image: relay_image(o).await,
        listeners: plan.ports.iter().map(|p| p.listener()).collect(),
        carrier_port: plan.carrier_port,
        grace: GRACE,
        first_grace: FIRST_GRACE,
        token_sha256,
        restore: None,
    };
    let jobs: Api<Job> = Api::namespaced(o.client.clone(), ns);
    let job_name = id.job_name();
    let created = jobs
        .create(&PostParams::default(), &session_objects::job(&meta, &relay))
        .await
        .map_err(api(format!("create jobs/{job_name} in {ns}")))?;
    emit(ExposeEvent::Created {
        kind: "Job".into(),
        name: job_name.clone(),
    });
    // From here on, every way out deletes the Job; the garbage collector does the rest.
    let result = serve(plan, o, &meta, &created, &name, &token, &events, &shutdown).await;
    emit(ExposeEvent::Stopping {
        job: job_name.clone(),
    });
    delete_job(&jobs, &job_name).await;
    result
}

/// Deletes the session's Job in the background (its pod and every object it owns go with
/// it). A failure is only logged: the relay exits after its grace period without a
/// client, and the Job's TTL then deletes everything anyway.
async fn delete_job(jobs: &Api<Job>, name: &str) {
    delete_job_with(jobs, name, &DeleteParams::background()).await;
}

/// Deletes the session's Job with `how` (`replace` deletes in the foreground: the relay
/// gets its SIGTERM, and restores, before the objects go); a failure is only logged.
pub(crate) async fn delete_job_with(jobs: &Api<Job>, name: &str, how: &DeleteParams) {
    if let Err(e) = jobs.delete(name, how).await {
        tracing::warn!(
            "deleting job/{name}: {e}; the relay exits within {} s without this client and Kubernetes then deletes the session",
            GRACE.as_secs()
        );
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    plan: &ExposePlan,
    o: &ExposeOptions,
    meta: &SessionMeta,
    job: &Job,
    name: &str,
    token: &str,
    events: &mpsc::UnboundedSender<ExposeEvent>,
    shutdown: &CancellationToken,
) -> Result<(), ExposeError> {
    let ns = o.namespace.as_str();
    let emit = |e: ExposeEvent| {
        let _ = events.send(e);
    };
    let owner = SessionOwner::from_job(job).ok_or_else(|| ExposeError::Carrier(
        "the API server returned the created Job without a name or UID; kubelan cannot own the Service by it".into(),
    ))?;
    let mut ports = plan.service_port_specs();
    if ports.is_empty() {
        ports.push(placeholder_port(plan.carrier_port));
    }
    let services: Api<Service> = Api::namespaced(o.client.clone(), ns);
    services
        .create(
            &PostParams::default(),
            &session_objects::service(meta, &owner, name, &ports),
        )
        .await
        .map_err(|e| match &e {
            kube::Error::Api(s) if s.code == 409 => ExposeError::NameTaken {
                name: name.into(),
                namespace: ns.into(),
            },
            _ => ExposeError::Api {
                action: format!("create services/{name} in {ns}"),
                source: e,
            },
        })?;
    emit(ExposeEvent::Created {
        kind: "Service".into(),
        name: name.into(),
    });
    let (pod, ip) = tokio::select! {
        r = wait_ready(o, job, events) => r?,
        () = shutdown.cancelled() => return Ok(()),
    };
    emit(ExposeEvent::RelayReady {
        pod: pod.clone(),
        ip: ip.clone(),
    });
    let link = RelayLink {
        pod,
        ip,
        carrier_port: plan.carrier_port,
        token: token.to_string(),
        ports: plan.ports.clone(),
        service: format!("{name}.{ns}.svc"),
        described: plan.describe_ports(),
    };
    let link_stop = shutdown.child_token();
    let _stop_link = link_stop.clone().drop_guard();
    serve_link(o, link, events, shutdown, &link_stop).await
}

/// The ready relay pod of a session and what the client's side of the link needs.
pub(crate) struct RelayLink {
    /// The relay pod.
    pub(crate) pod: String,
    /// Its IP.
    pub(crate) ip: String,
    /// Its carrier port.
    pub(crate) carrier_port: u16,
    /// The session token.
    pub(crate) token: String,
    /// Listener id → local target.
    pub(crate) ports: Vec<ExposedPort>,
    /// The Service's DNS name, for [`ExposeEvent::Serving`].
    pub(crate) service: String,
    /// Its ports for people (`8080/tcp → 127.0.0.1:8080`), for [`ExposeEvent::Serving`].
    pub(crate) described: Vec<String>,
}

/// Runs the inner session to the relay (through the agent's session, or a port-forward
/// to the pod) with an [`ExposeAcceptor`] for `link.ports`, reporting its state, until
/// `shutdown` or a carrier failure for good. The link itself keeps serving until
/// `link_stop` is cancelled, so that a caller can still hand work back before it goes
/// (replace puts the Service's selector back first).
pub(crate) async fn serve_link(
    o: &ExposeOptions,
    link: RelayLink,
    events: &mpsc::UnboundedSender<ExposeEvent>,
    shutdown: &CancellationToken,
    link_stop: &CancellationToken,
) -> Result<(), ExposeError> {
    let ns = o.namespace.as_str();
    let emit = |e: ExposeEvent| {
        let _ = events.send(e);
    };
    let RelayLink {
        pod,
        ip,
        carrier_port,
        token,
        ports,
        service,
        described,
    } = link;
    let dialer: Arc<dyn CarrierDialer> = match &o.outer {
        Some(outer) => {
            let addr = ip
                .parse()
                .map(|ip| Target::Addr(std::net::SocketAddr::new(ip, carrier_port)))
                .map_err(|_| {
                    ExposeError::Carrier(format!("the relay pod's IP {ip:?} is not an address"))
                })?;
            Arc::new(FlowDialer::new(outer.clone(), addr))
        }
        None => Arc::new(
            PortForwardDialer::new(o.client.clone(), ns, Lookup::fixed(vec![pod]))
                .with_port(carrier_port)
                .with_rbac_command("kubelan rbac expose"),
        ),
    };
    let config = SessionConfig {
        required: Capabilities::REVERSE,
        token: Some(Token::new(&token)),
        ..SessionConfig::default()
    };
    let acceptor = ExposeAcceptor::new(ports.clone(), events.clone());
    let session = Session::start_accepting(
        vec![dialer],
        config,
        Some(acceptor.clone()),
        link_stop.clone(),
    );
    if let Some(tx) = &o.on_serving {
        let _ = tx.send(ServingHandles {
            relay: session.clone(),
            acceptor,
        });
    }
    let mut state = session.state();
    let mut announced = false;
    loop {
        let s = state.borrow_and_update().clone();
        let up = matches!(s, SessionState::Connected { .. });
        emit(ExposeEvent::Carrier {
            up,
            state: s.to_string(),
        });
        if up && !announced {
            announced = true;
            emit(ExposeEvent::Serving {
                service: service.clone(),
                ports: described.clone(),
            });
        }
        if let SessionState::Failed(why) = s {
            break Err(ExposeError::Carrier(why));
        }
        tokio::select! {
            r = state.changed() => if r.is_err() { break Ok(()) },
            () = shutdown.cancelled() => break Ok(()),
        }
    }
}

/// Polls the relay's pods (and, while there is none, the Job's events) until it is ready,
/// fails, or the timeout passes.
pub(crate) async fn wait_ready(
    o: &ExposeOptions,
    job: &Job,
    events: &mpsc::UnboundedSender<ExposeEvent>,
) -> Result<(String, String), ExposeError> {
    let ns = o.namespace.as_str();
    let job_name = job.metadata.name.clone().unwrap_or_default();
    let session = job
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_SESSION))
        .cloned()
        .unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(o.client.clone(), ns);
    let jobs: Api<Job> = Api::namespaced(o.client.clone(), ns);
    let k8s_events: Api<Event> = Api::namespaced(o.client.clone(), ns);
    let by_session = ListParams::default().labels(&format!("{LABEL_SESSION}={session}"));
    let deadline = tokio::time::Instant::now() + o.ready_timeout;
    let mut last = String::new();
    loop {
        let listed = pods
            .list(&by_session)
            .await
            .map_err(api(format!("list pods in {ns}")))?
            .items;
        let current = jobs.get_opt(&job_name).await;
        let current = match current {
            // Gone while we wait: its relay ended and the Job's TTL removed it (the pod
            // failed at once, or someone deleted the Job); waiting on would only time out.
            Ok(None) => {
                return Err(ExposeError::RelayGone {
                    job: job_name,
                    namespace: ns.into(),
                    last,
                });
            }
            Ok(Some(j)) => j,
            Err(e) => {
                tracing::debug!("reading job/{job_name}: {e}");
                job.clone()
            }
        };
        let evs = if listed.is_empty() {
            // Optional (`list events` is not required): without it a refusal shows as a timeout.
            k8s_events
                .list(&ListParams::default().fields(&format!(
                    "involvedObject.kind=Job,involvedObject.name={job_name}"
                )))
                .await
                .map(|l| l.items)
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        match relay_status(&current, &listed, &evs) {
            RelayStatus::Ready { pod, ip } => return Ok((pod, ip)),
            RelayStatus::Failed(f) => return Err(f.into()),
            RelayStatus::Waiting(s) => {
                if s != last {
                    let _ = events.send(ExposeEvent::Waiting { status: s.clone() });
                    last = s;
                }
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ExposeError::RelayTimeout {
                seconds: o.ready_timeout.as_secs(),
                last,
                job: job_name,
                namespace: ns.into(),
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashed_as_the_relay_checks() {
        let (t1, h1) = new_token();
        let (t2, _) = new_token();
        assert_ne!(t1, t2);
        assert_eq!(t1.len(), 64);
        assert_eq!(h1, token_sha256(&t1));
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(
            token_sha256("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
