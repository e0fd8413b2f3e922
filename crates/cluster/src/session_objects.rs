//! Every object one way-back session (`kubelan expose`, `replace`, `run`) creates, as typed
//! Kubernetes objects, built without a cluster.
//!
//! A session is one Job `kubelan-<id>` whose single pod runs `kubelan relay` (Pod Security
//! `restricted`). Everything else the session creates hangs from that Job by
//! ownerReference, in the same namespace:
//!
//! ```text
//! Job kubelan-<id>  (ttlSecondsAfterFinished: 0)
//!  ├─ Pod kubelan-<id>-xxxxx        kubelan relay: listeners + carrier port (owned by the Job controller)
//!  ├─ Service NAME                   selector kubelan.io/session=<id>, SVCPORT → relay port   (expose, run)
//!  ├─ Lease kubelan-replace-<svc>    the replace lock, naming user, host and session          (replace)
//!  └─ ServiceAccount + Role + RoleBinding kubelan-<id>: get, patch services/<svc>             (replace)
//! ```
//!
//! When the relay sees no client for its grace period it exits 0, the Job completes, the TTL
//! controller deletes it and the garbage collector deletes the rest. Nothing here deletes
//! another session's objects. A replaced Service is changed by a JSON patch
//! ([`crate::replace::swap`]) that the garbage collector cannot undo, so the relay (with the
//! per-session Role) and the client on Ctrl-C put it back ([`crate::replace::restore`]).
//!
//! The callers decide the values (session id, listeners, ports); this module only shapes
//! them into objects. [`gitops`] tells whether Argo CD or Flux would revert a replaced
//! Service.

pub mod gitops;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::names::{
    AGENT_UID, ANNOTATION_CLIENT_HOST, ANNOTATION_COMMAND, ANNOTATION_SERVICE, ANNOTATION_USER,
    ANNOTATION_VERSION, LABEL_MANAGED_BY, LABEL_MODE, LABEL_NAME, LABEL_PART_OF, LABEL_SESSION,
    LABEL_USER, RELAY, RELAY_CARRIER_PORT, RELAY_CARRIER_PORT_NAME,
};

/// The version written into [`ANNOTATION_VERSION`].
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A session's id: [`SessionId::LEN`] characters of [`SessionId::ALPHABET`], so that
/// `kubelan-<id>` is a valid name for every kind and `<id>` a valid label value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(String);

impl SessionId {
    /// Length of an id.
    pub const LEN: usize = 8;
    /// The characters of an id: lower-case consonants and digits without look-alikes
    /// (no vowels, so ids never spell words; no `0`, `1`, `3`; the same set Kubernetes uses
    /// for generated name suffixes).
    pub const ALPHABET: &'static [u8] = b"bcdfghjklmnpqrstvwxz2456789";

    /// Checks `s` is an id.
    ///
    /// # Errors
    /// [`BadSessionId`] when `s` has the wrong length or a character outside
    /// [`Self::ALPHABET`].
    pub fn parse(s: &str) -> Result<Self, BadSessionId> {
        if s.len() == Self::LEN && s.bytes().all(|b| Self::ALPHABET.contains(&b)) {
            Ok(Self(s.to_string()))
        } else {
            Err(BadSessionId(s.chars().take(64).collect()))
        }
    }

    /// A new random id drawn from `rng` (27^8 ≈ 2.8·10^11 ids, so two sessions of one
    /// namespace practically never meet; if they do, creating the Job fails with 409 and
    /// the caller draws again).
    pub fn random<R: rand::Rng + ?Sized>(rng: &mut R) -> Self {
        let id = (0..Self::LEN)
            .map(|_| char::from(Self::ALPHABET[rng.random_range(0..Self::ALPHABET.len())]))
            .collect();
        Self(id)
    }

    /// A new random id from the thread's cryptographic generator.
    pub fn generate() -> Self {
        Self::random(&mut rand::rng())
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `kubelan-<id>`: the name of the session's Job and of its per-session RBAC objects.
    pub fn job_name(&self) -> String {
        format!("kubelan-{}", self.0)
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for SessionId {
    type Err = BadSessionId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A string that is not a [`SessionId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a kubelan session id: an id has 8 characters from `bcdfghjklmnpqrstvwxz2456789`; copy it from `kubectl get jobs -l app.kubernetes.io/name=kubelan-relay`"
)]
pub struct BadSessionId(pub String);

/// Which command made a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// `kubelan expose`: a new Service for local ports.
    Expose,
    /// `kubelan replace`: an existing Service's traffic comes to this machine.
    Replace,
    /// `kubelan run`: a local program with a cluster address.
    Run,
}

impl Mode {
    /// `expose`, `replace`, `run`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Expose => "expose",
            Self::Replace => "replace",
            Self::Run => "run",
        }
    }
}

/// A listener's transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// `tcp` or `udp`, as kubelan's arguments spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }

    /// `TCP` or `UDP`, as Kubernetes spells it.
    pub fn k8s(self) -> &'static str {
        match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One port the relay listens on for pods, as passed to `kubelan relay --listen`:
/// `PORT=ID` for TCP, `PORT=ID/udp` for UDP (`8080=0`, `10053=1/udp`). The id travels in
/// the protocol's `Incoming` frame, so the client knows which local HOST:PORT a flow is
/// for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RelayListener {
    /// The listener's id within the session.
    pub id: u32,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The port in the relay pod.
    pub port: u16,
    /// The container port's name (an IANA service name: at most 15 characters).
    pub port_name: String,
}

impl fmt::Display for RelayListener {
    /// The `--listen` value; the port name is not part of it (the relay does not need it).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.port, self.id)?;
        if self.protocol == Protocol::Udp {
            f.write_str("/udp")?;
        }
        Ok(())
    }
}

/// A `--listen` value that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "--listen {0:?} is not PORT=ID[/udp] (e.g. 8080=0 or 10053=1/udp); the client writes these values into the relay's Job, so recreate the session with a matching kubelan version"
)]
pub struct BadListener(pub String);

impl FromStr for RelayListener {
    type Err = BadListener;

    /// Parses `PORT=ID[/udp]` (`/tcp` is accepted too); the port name is left empty.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadListener(s.chars().take(64).collect());
        let (rest, protocol) = match s.split_once('/') {
            None => (s, Protocol::Tcp),
            Some((rest, "tcp")) => (rest, Protocol::Tcp),
            Some((rest, "udp")) => (rest, Protocol::Udp),
            Some(_) => return Err(bad()),
        };
        let (port, id) = rest.split_once('=').ok_or_else(bad)?;
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        if !digits(id) || !digits(port) {
            return Err(bad());
        }
        let id = id.parse().map_err(|_| bad())?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        if port == 0 {
            return Err(bad());
        }
        Ok(Self {
            id,
            protocol,
            port,
            port_name: String::new(),
        })
    }
}

/// The relay's carrier port: [`RELAY_CARRIER_PORT`] unless a listener already uses that
/// number (a replaced Service's `targetPort` can be anything), then the next free one.
pub fn carrier_port(listener_ports: &[u16]) -> u16 {
    (RELAY_CARRIER_PORT..=u16::MAX)
        .chain(1024..RELAY_CARRIER_PORT)
        .find(|p| !listener_ports.contains(p))
        // Fewer than 64 512 listeners always leave one free; a session has at most a few.
        .unwrap_or(RELAY_CARRIER_PORT)
}

/// One port of a session's Service: `port` on the ClusterIP goes to `target_port` of the
/// relay pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServicePortSpec {
    /// The Service port's name (a DNS label; required by Kubernetes when there are several).
    pub name: String,
    /// The port pods dial.
    pub port: u16,
    /// The relay's port.
    pub target_port: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
}

/// Who runs a session, from where. Goes into every object's labels and annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionMeta {
    /// The session's id.
    pub id: SessionId,
    /// The namespace of every object of the session.
    pub namespace: String,
    /// Which command.
    pub mode: Mode,
    /// The user's name as the API server knows it (from a SelfSubjectReview).
    pub user: String,
    /// The client machine's host name.
    pub client_host: String,
    /// The client's command line, as the user typed it (without secrets).
    pub command: String,
}

impl SessionMeta {
    /// The labels on every object of the session (and on the relay pod): kubelan's
    /// managed-by and part-of, name `kubelan-relay`, the session id, the mode and the
    /// sanitised user.
    pub fn labels(&self) -> BTreeMap<String, String> {
        [
            (LABEL_NAME, RELAY.to_string()),
            (LABEL_PART_OF, "kubelan".to_string()),
            (LABEL_MANAGED_BY, "kubelan".to_string()),
            (LABEL_SESSION, self.id.to_string()),
            (LABEL_MODE, self.mode.as_str().to_string()),
            (LABEL_USER, label_value(&self.user)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// The annotations on every object of the session: the exact user, the client host, the
    /// command line and the kubelan version.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        [
            (ANNOTATION_USER, self.user.as_str()),
            (ANNOTATION_CLIENT_HOST, self.client_host.as_str()),
            (ANNOTATION_COMMAND, self.command.as_str()),
            (ANNOTATION_VERSION, VERSION),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn meta(&self, name: &str, owner: Option<&SessionOwner>) -> Value {
        let mut m = json!({
            "name": name,
            "namespace": self.namespace,
            "labels": self.labels(),
            "annotations": self.annotations(),
        });
        if let Some(o) = owner {
            m["ownerReferences"] = json!([o.owner_reference()]);
        }
        m
    }
}

/// `s` made a valid label value: characters other than letters, digits, `-`, `_` and `.`
/// become `_`, it is cut to 63 characters and starts and ends with a letter or digit;
/// `unknown` when nothing is left. (`jane@example.com` → `jane_example.com`.)
pub fn label_value(s: &str) -> String {
    let mapped: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect();
    let trimmed = mapped.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if trimmed.is_empty() {
        "unknown".to_string()
    } else {
        trimmed.to_string()
    }
}

/// What the relay pod runs and listens on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelaySpec {
    /// The image (kubelan's own; by default the agent's, see [`agent_image`]).
    pub image: String,
    /// The ports pods reach the relay on.
    pub listeners: Vec<RelayListener>,
    /// The relay's carrier port (the client's session arrives there).
    pub carrier_port: u16,
    /// How long the relay waits for a lost client before it exits.
    pub grace: Duration,
    /// How long the relay waits for the first client.
    pub first_grace: Duration,
    /// SHA-256 of the session token, lower-case hex; the relay accepts a client whose
    /// `Hello` carries the token.
    pub token_sha256: String,
    /// For `replace`: the Service whose selector the relay restores when it stops.
    pub restore: Option<ReplaceTarget>,
}

/// The Service a `replace` session swapped, and its selector before the swap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplaceTarget {
    /// The Service's name (same namespace as the session).
    pub service: String,
    /// Its selector before the swap.
    pub original_selector: BTreeMap<String, String>,
}

impl RelaySpec {
    /// The relay's command line after the image's entry point (`kubelan`), for session
    /// `session` (named only with [`Self::restore`]: the swapped selector names it).
    pub fn args(&self, session: &SessionId) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "relay".into(),
            "--carrier-port".into(),
            self.carrier_port.to_string(),
        ];
        for l in &self.listeners {
            a.push("--listen".into());
            a.push(l.to_string());
        }
        a.extend([
            // Whole seconds, as `kubelan relay` takes them.
            "--grace".into(),
            self.grace.as_secs().to_string(),
            "--first-grace".into(),
            self.first_grace.as_secs().to_string(),
            "--token-sha256".into(),
            self.token_sha256.clone(),
        ]);
        if let Some(r) = &self.restore {
            a.extend([
                "--restore-service".into(),
                r.service.clone(),
                "--restore-selector".into(),
                // A BTreeMap of strings always serialises.
                serde_json::to_string(&r.original_selector).unwrap_or_default(),
                "--session".into(),
                session.to_string(),
                "--restore-timeout".into(),
                RELAY_RESTORE_TIMEOUT_SECONDS.to_string(),
            ]);
        }
        a
    }

    /// The lowest listener port below 1024, which the relay (not root, no capabilities) may
    /// bind only with `net.ipv4.ip_unprivileged_port_start` lowered in its pod (a sysctl
    /// Pod Security `baseline` and `restricted` allow). `replace` of a Service whose
    /// `targetPort` is a number below 1024 needs it; `expose` never does.
    pub fn lowest_privileged_port(&self) -> Option<u16> {
        self.listeners
            .iter()
            .map(|l| l.port)
            .filter(|p| *p < 1024)
            .min()
    }
}

/// The Job a session's objects hang from: its name and UID, known once it is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOwner {
    /// The Job's name.
    pub name: String,
    /// The Job's UID.
    pub uid: String,
}

impl SessionOwner {
    /// The owner of a created Job; `None` when the object has no name or UID.
    pub fn from_job(job: &Job) -> Option<Self> {
        Some(Self {
            name: job.metadata.name.clone().filter(|n| !n.is_empty())?,
            uid: job.metadata.uid.clone().filter(|u| !u.is_empty())?,
        })
    }

    /// The ownerReference every session object carries. Neither `controller` nor
    /// `blockOwnerDeletion`: the Job controls only its pods, and setting
    /// `blockOwnerDeletion` would need `update jobs/finalizers`.
    pub fn owner_reference(&self) -> OwnerReference {
        OwnerReference {
            api_version: "batch/v1".into(),
            kind: "Job".into(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            controller: None,
            block_owner_deletion: None,
        }
    }
}

fn typed<T: DeserializeOwned>(v: Value) -> T {
    // Only ever called on the fixed shapes below, with strings and numbers in the places
    // that take them; the unit tests build every one.
    serde_json::from_value(v).expect("kubelan's own session object matches the Kubernetes schema")
}

/// How many times the Job controller starts another relay after one failed: none. A new
/// relay would have new listeners and no client; the session is over, so the Job fails
/// and, through `ttlSecondsAfterFinished`, is deleted with everything it owns.
pub const JOB_BACKOFF_LIMIT: i32 = 0;
/// The relay's `terminationGracePeriodSeconds` (`expose`, `run`): short, so that a
/// deleted session goes away at once.
pub const RELAY_TERMINATION_GRACE_SECONDS: i64 = 5;
/// How long a `replace` relay may spend putting the Service back (`--restore-timeout`,
/// retries included).
pub const RELAY_RESTORE_TIMEOUT_SECONDS: u64 = 10;
/// The `replace` relay's `terminationGracePeriodSeconds`: longer than
/// [`RELAY_RESTORE_TIMEOUT_SECONDS`], so a SIGTERM (the Job deleted, the node drained)
/// always leaves the relay time to restore the Service before it is killed.
pub const RELAY_REPLACE_TERMINATION_GRACE_SECONDS: i64 = 15;
/// How long the relay pod stays on a node that is not ready or unreachable before it is
/// evicted and the Job starts another one elsewhere (the default is 300 s).
pub const RELAY_NODE_FAILURE_TOLERATION_SECONDS: i64 = 10;

/// The session's Job `kubelan-<id>`: one pod running `kubelan relay`, never restarted
/// (`restartPolicy: Never`, [`JOB_BACKOFF_LIMIT`] 0), deleted as soon as it finishes
/// (`ttlSecondsAfterFinished: 0`). The pod passes Pod Security `restricted`: non-root
/// 65532, no privilege escalation, every capability dropped, RuntimeDefault seccomp,
/// read-only root file system; it gets a service-account token only for `replace` (its
/// own account, allowed to restore the one Service).
pub fn job(meta: &SessionMeta, relay: &RelaySpec) -> Job {
    let name = meta.id.job_name();
    let field = |path: &str| json!({"fieldRef": {"apiVersion": "v1", "fieldPath": path}});
    let mut ports = vec![
        json!({"name": RELAY_CARRIER_PORT_NAME, "containerPort": relay.carrier_port, "protocol": "TCP"}),
    ];
    for l in &relay.listeners {
        ports.push(
            json!({"name": l.port_name, "containerPort": l.port, "protocol": l.protocol.k8s()}),
        );
    }
    let mut pod_security = json!({
        "runAsNonRoot": true,
        "runAsUser": AGENT_UID,
        "runAsGroup": AGENT_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    });
    if let Some(low) = relay.lowest_privileged_port() {
        pod_security["sysctls"] =
            json!([{"name": "net.ipv4.ip_unprivileged_port_start", "value": low.to_string()}]);
    }
    let mut pod_spec = json!({
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": if relay.restore.is_some() {
            RELAY_REPLACE_TERMINATION_GRACE_SECONDS
        } else {
            RELAY_TERMINATION_GRACE_SECONDS
        },
        "automountServiceAccountToken": relay.restore.is_some(),
        "enableServiceLinks": false,
        "securityContext": pod_security,
        "tolerations": [
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
             "tolerationSeconds": RELAY_NODE_FAILURE_TOLERATION_SECONDS},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
             "tolerationSeconds": RELAY_NODE_FAILURE_TOLERATION_SECONDS},
        ],
        "containers": [{
            "name": "relay",
            "image": relay.image,
            "args": relay.args(&meta.id),
            "env": [
                {"name": "POD_NAME", "valueFrom": field("metadata.name")},
                {"name": "POD_NAMESPACE", "valueFrom": field("metadata.namespace")},
            ],
            "ports": ports,
            // Ready = the carrier port accepts connections; the relay opens it only once
            // its listeners are bound, so a ready relay takes both pods and the client.
            "readinessProbe": {
                "tcpSocket": {"port": RELAY_CARRIER_PORT_NAME},
                "periodSeconds": 1, "failureThreshold": 2,
            },
            // 1 000 bulk flows through one session took the relay to 209 MB resident on
            // the lab (their buffers and receive windows: docs/benchmarks.md, session 26),
            // near the 256Mi this was; the same session code as the agent, the same limit.
            "resources": {
                "requests": {"cpu": "10m", "memory": "32Mi"},
                "limits": {"memory": "512Mi"},
            },
            "securityContext": crate::names::restricted_container_security(),
        }],
    });
    if relay.restore.is_some() {
        pod_spec["serviceAccountName"] = json!(name);
    }
    let mut job_meta = meta.meta(&name, None);
    if let Some(r) = &relay.restore {
        job_meta["annotations"][ANNOTATION_SERVICE] = json!(r.service);
    }
    typed(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": job_meta,
        "spec": {
            "ttlSecondsAfterFinished": 0,
            "backoffLimit": JOB_BACKOFF_LIMIT,
            "completions": 1,
            "parallelism": 1,
            "template": {
                "metadata": {"labels": meta.labels()},
                "spec": pod_spec,
            },
        },
    }))
}

/// The selector of a session's Service, and of a replaced Service during the session
/// ([`crate::replace::session_selector`]).
pub fn session_selector(id: &SessionId) -> BTreeMap<String, String> {
    crate::replace::session_selector(id.as_str())
}

/// The Service `name` of an `expose` or `run` session: ClusterIP, selecting the session's
/// relay pod, `port → targetPort` for each of `ports`, owned by the session's Job.
pub fn service(
    meta: &SessionMeta,
    owner: &SessionOwner,
    name: &str,
    ports: &[ServicePortSpec],
) -> Service {
    let ports: Vec<Value> = ports
        .iter()
        .map(|p| {
            json!({"name": p.name, "port": p.port, "targetPort": p.target_port,
                   "protocol": p.protocol.k8s()})
        })
        .collect();
    let mut m = meta.meta(name, Some(owner));
    m["annotations"][ANNOTATION_SERVICE] = json!(name);
    typed(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": m,
        "spec": {
            "type": "ClusterIP",
            "selector": session_selector(&meta.id),
            "ports": ports,
        },
    }))
}

/// The name of the lock Lease of `replace svc/<service>`.
pub fn lock_name(service: &str) -> String {
    format!("kubelan-replace-{service}")
}

/// The lock of `replace svc/<service>`: a Lease [`lock_name`] owned by the session's Job.
/// Creating it is taking the lock (a second session gets 409 and reads the holder with
/// [`LockHolder::from_lease`]); it goes away with the Job. Nothing renews it: the Job's
/// life is the lock's life.
pub fn replace_lock(meta: &SessionMeta, owner: &SessionOwner, service: &str) -> Lease {
    let mut m = meta.meta(&lock_name(service), Some(owner));
    m["annotations"][ANNOTATION_SERVICE] = json!(service);
    let holder = LockHolder {
        session: meta.id.to_string(),
        user: meta.user.clone(),
        host: meta.client_host.clone(),
        command: meta.command.clone(),
    };
    typed(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": m,
        "spec": {"holderIdentity": holder.to_string()},
    }))
}

/// Who holds a `replace` lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockHolder {
    /// The holding session's id (as written; not checked).
    pub session: String,
    /// Its user.
    pub user: String,
    /// Its client's host.
    pub host: String,
    /// Its client's command line (empty when the Lease does not say).
    pub command: String,
}

impl LockHolder {
    /// Reads the holder from a lock Lease's annotations; `None` when they are missing (a
    /// Lease of that name that kubelan did not make).
    pub fn from_lease(lease: &Lease) -> Option<Self> {
        let a = lease.metadata.annotations.as_ref()?;
        let l = lease.metadata.labels.as_ref()?;
        Some(Self {
            session: l.get(LABEL_SESSION)?.clone(),
            user: a.get(ANNOTATION_USER)?.clone(),
            host: a.get(ANNOTATION_CLIENT_HOST)?.clone(),
            command: a.get(ANNOTATION_COMMAND).cloned().unwrap_or_default(),
        })
    }
}

impl fmt::Display for LockHolder {
    /// `session b7x2kq9d of jane@example.com on laptop-3 (kubelan replace svc/web)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "session {} of {} on {}",
            self.session, self.user, self.host
        )?;
        if !self.command.is_empty() {
            write!(f, " ({})", self.command)?;
        }
        Ok(())
    }
}

/// The relay's own ServiceAccount `kubelan-<id>` (`replace` only), owned by the Job.
pub fn relay_service_account(meta: &SessionMeta, owner: &SessionOwner) -> ServiceAccount {
    typed(json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": meta.meta(&meta.id.job_name(), Some(owner)),
        "automountServiceAccountToken": true,
    }))
}

/// The relay's Role `kubelan-<id>` (`replace` only): `get` and `patch` on the one replaced
/// Service, so that it can restore the selector when it stops. Kubernetes lets the user
/// create it only because the user holds the same permissions (`replace` needs them).
pub fn relay_role(meta: &SessionMeta, owner: &SessionOwner, service: &str) -> Role {
    typed(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": meta.meta(&meta.id.job_name(), Some(owner)),
        "rules": [{
            "apiGroups": [""], "resources": ["services"], "resourceNames": [service],
            "verbs": ["get", "patch"],
        }],
    }))
}

/// Binds [`relay_role`] to [`relay_service_account`] (`replace` only), owned by the Job.
pub fn relay_role_binding(meta: &SessionMeta, owner: &SessionOwner) -> RoleBinding {
    let name = meta.id.job_name();
    typed(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": meta.meta(&name, Some(owner)),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": meta.namespace}],
    }))
}

/// The image of the installed agent's container, the relay's default image (the agent and
/// the relay are the same binary, so an agent that advertises reverse flows has a relay).
pub fn agent_image(agent: &Deployment) -> Option<String> {
    agent
        .spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == "agent")
        .and_then(|c| c.image.clone())
}

/// Whether `meta` belongs to a session object (carries kubelan's session labels).
pub fn session_of(meta: &ObjectMeta) -> Option<&str> {
    let l = meta.labels.as_ref()?;
    if l.get(LABEL_NAME).map(String::as_str) == Some(RELAY)
        && l.get(LABEL_MANAGED_BY).map(String::as_str) == Some("kubelan")
    {
        l.get(LABEL_SESSION).map(String::as_str)
    } else {
        None
    }
}

#[cfg(test)]
mod tests;
