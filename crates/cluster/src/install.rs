//! Installing and removing the in-cluster agent.
//!
//! [`manifests`] is the single description of what an install consists of; [`to_yaml`]
//! prints it for `kubectl apply`, [`install`] applies it (server-side apply, field manager
//! `kubelan`, so re-running it changes nothing that is already right), creates the
//! credentials Secret only when it does not exist (credentials are never rotated by a
//! re-install), and waits until the agent is available. [`uninstall`] removes exactly what
//! install made: objects carrying kubelan's managed-by label, and the namespace only when
//! install created it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::{Duration, Instant};

use ipnet::IpNet;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::agent::{AgentPod, describe_pod, pod_ready};
use crate::credentials::{AgentCredentials, check_secret_data};
use crate::error::{ClusterError, api, status_code};
use crate::names::{
    AGENT, AGENT_UID, CARRIER_PORT, CARRIER_PORT_NAME, CREATED_BY_ANNOTATION, CREATED_BY_INSTALL,
    CREDENTIALS_DIR, DEFAULT_IMAGE, DEFAULT_NAMESPACE, FIELD_MANAGER, FILE_TLS_CERT, FILE_TLS_KEY,
    HEALTH_PORT, HEALTH_PORT_NAME, KEY_AGENT_CERT, KEY_AGENT_KEY, KEY_CA, LABEL_NAME,
    MANAGED_SELECTOR, PLAIN_PORT, POD_SELECTOR, cluster_role_name, is_managed, labels,
};
use crate::preflight::{self, Access, INSTALL_HINT};

/// How the agent's Service is exposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ServiceType {
    /// A port on every node (reachable where the nodes are).
    #[default]
    #[value(name = "NodePort")]
    NodePort,
    /// A cloud load balancer (also allocates a NodePort).
    #[value(name = "LoadBalancer")]
    LoadBalancer,
    /// Cluster-internal only: clients use the port-forward carrier or route to pod IPs.
    #[value(name = "ClusterIP")]
    ClusterIp,
}

impl ServiceType {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NodePort => "NodePort",
            Self::LoadBalancer => "LoadBalancer",
            Self::ClusterIp => "ClusterIP",
        }
    }
}

/// What to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallOptions {
    /// Namespace of the agent (created, and labelled Pod Security `restricted`, when missing).
    pub namespace: String,
    /// Agent replicas.
    pub replicas: i32,
    /// Agent image.
    pub image: String,
    /// How the Service is exposed.
    pub service_type: ServiceType,
    /// Node selector for the agent pods.
    pub node_selector: BTreeMap<String, String>,
    /// How long to wait for the agent to become available.
    pub timeout: Duration,
    /// Extra prefixes the agent may dial (its `--allow`).
    pub allow: Vec<IpNet>,
    /// Whether the agent may dial node addresses (its `--allow-node-addresses`).
    pub allow_node_addresses: bool,
}

impl Default for InstallOptions {
    fn default() -> Self {
        Self {
            namespace: DEFAULT_NAMESPACE.into(),
            replicas: 1,
            image: DEFAULT_IMAGE.into(),
            service_type: ServiceType::NodePort,
            node_selector: BTreeMap::new(),
            timeout: Duration::from_secs(120),
            allow: Vec::new(),
            allow_node_addresses: false,
        }
    }
}

/// One object of an install, typed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
#[allow(
    clippy::large_enum_variant,
    reason = "seven objects built once per install; boxing would only obscure matching"
)]
pub enum Manifest {
    /// The namespace (only applied when it does not exist).
    Namespace(Namespace),
    /// The agent's ServiceAccount.
    ServiceAccount(ServiceAccount),
    /// The agent's read-only ClusterRole.
    ClusterRole(ClusterRole),
    /// Binds the ClusterRole to the ServiceAccount.
    ClusterRoleBinding(ClusterRoleBinding),
    /// The credentials (only created when it does not exist).
    Secret(Secret),
    /// The agent's Service.
    Service(Service),
    /// The agent's Deployment.
    Deployment(Deployment),
}

impl Manifest {
    /// Lower-case kind, as kubectl prints it (`deployment`, `clusterrolebinding`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Namespace(_) => "namespace",
            Self::ServiceAccount(_) => "serviceaccount",
            Self::ClusterRole(_) => "clusterrole",
            Self::ClusterRoleBinding(_) => "clusterrolebinding",
            Self::Secret(_) => "secret",
            Self::Service(_) => "service",
            Self::Deployment(_) => "deployment",
        }
    }

    /// The object's name.
    pub fn name(&self) -> &str {
        let m = match self {
            Self::Namespace(o) => &o.metadata,
            Self::ServiceAccount(o) => &o.metadata,
            Self::ClusterRole(o) => &o.metadata,
            Self::ClusterRoleBinding(o) => &o.metadata,
            Self::Secret(o) => &o.metadata,
            Self::Service(o) => &o.metadata,
            Self::Deployment(o) => &o.metadata,
        };
        m.name.as_deref().unwrap_or_default()
    }
}

fn typed<T: DeserializeOwned>(v: serde_json::Value) -> T {
    // Only ever called on the constant shapes below; the unit tests build every one.
    serde_json::from_value(v).expect("kubelan's own manifest matches the Kubernetes schema")
}

fn meta(name: &str, namespace: Option<&str>) -> serde_json::Value {
    let mut m = json!({"name": name, "labels": labels()});
    if let Some(ns) = namespace {
        m["namespace"] = json!(ns);
    }
    m
}

/// Every object of an install into `opts.namespace`, in the order they are applied. The
/// Secret carries `credentials`.
pub fn manifests(opts: &InstallOptions, credentials: &AgentCredentials) -> Vec<Manifest> {
    let ns = opts.namespace.as_str();
    vec![
        Manifest::Namespace(namespace_manifest(ns)),
        Manifest::ServiceAccount(typed(json!({
            "apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(AGENT, Some(ns)),
        }))),
        Manifest::ClusterRole(cluster_role(ns)),
        Manifest::ClusterRoleBinding(typed(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": meta(&cluster_role_name(ns), None),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role_name(ns)},
            "subjects": [{"kind": "ServiceAccount", "name": AGENT, "namespace": ns}],
        }))),
        Manifest::Secret(secret_manifest(ns, credentials)),
        Manifest::Service(typed(json!({
            "apiVersion": "v1", "kind": "Service", "metadata": meta(AGENT, Some(ns)),
            "spec": {
                "type": opts.service_type.as_str(),
                "selector": {LABEL_NAME: AGENT},
                "ports": [{"name": CARRIER_PORT_NAME, "protocol": "TCP", "port": CARRIER_PORT, "targetPort": CARRIER_PORT_NAME}],
            },
        }))),
        Manifest::Deployment(deployment(opts)),
    ]
}

fn namespace_manifest(ns: &str) -> Namespace {
    let mut m = meta(ns, None);
    m["labels"]["pod-security.kubernetes.io/enforce"] = json!("restricted");
    m["annotations"] = json!({CREATED_BY_ANNOTATION: CREATED_BY_INSTALL});
    typed(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": m}))
}

fn secret_manifest(ns: &str, credentials: &AgentCredentials) -> Secret {
    let mut s: Secret = typed(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": meta(AGENT, Some(ns)), "type": "Opaque",
    }));
    s.data = Some(credentials.to_secret_data());
    s
}

/// Read-only access to what the agent watches: Services, Pods, Nodes, EndpointSlices and
/// ServiceCIDRs. Nothing else.
fn cluster_role(ns: &str) -> ClusterRole {
    let read = ["get", "list", "watch"];
    typed(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": meta(&cluster_role_name(ns), None),
        "rules": [
            {"apiGroups": [""], "resources": ["services", "pods", "nodes"], "verbs": read},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": read},
            {"apiGroups": ["networking.k8s.io"], "resources": ["servicecidrs"], "verbs": read},
        ],
    }))
}

fn deployment(opts: &InstallOptions) -> Deployment {
    let ns = opts.namespace.as_str();
    let field = |path: &str| json!({"fieldRef": {"apiVersion": "v1", "fieldPath": path}});
    let mut pod_spec = json!({
        "serviceAccountName": AGENT,
        "automountServiceAccountToken": true,
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": AGENT_UID,
            "runAsGroup": AGENT_UID,
            "fsGroup": AGENT_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [{
            "name": "agent",
            "image": opts.image,
            "args": [
                "agent",
                "--listen-tls", format!("0.0.0.0:{CARRIER_PORT}"),
                "--listen-plain", format!("127.0.0.1:{PLAIN_PORT}"),
                "--health-listen", format!("0.0.0.0:{HEALTH_PORT}"),
                "--credentials", CREDENTIALS_DIR,
            ],
            "env": [
                {"name": "POD_NAME", "valueFrom": field("metadata.name")},
                {"name": "POD_NAMESPACE", "valueFrom": field("metadata.namespace")},
                {"name": "NODE_NAME", "valueFrom": field("spec.nodeName")},
            ],
            "ports": [
                {"name": CARRIER_PORT_NAME, "containerPort": CARRIER_PORT, "protocol": "TCP"},
                {"name": HEALTH_PORT_NAME, "containerPort": HEALTH_PORT, "protocol": "TCP"},
            ],
            "readinessProbe": {
                "httpGet": {"path": "/readyz", "port": HEALTH_PORT_NAME},
                "periodSeconds": 2, "failureThreshold": 3,
            },
            "livenessProbe": {
                "httpGet": {"path": "/healthz", "port": HEALTH_PORT_NAME},
                "initialDelaySeconds": 5, "periodSeconds": 10, "failureThreshold": 3,
            },
            // 1 000 bulk flows from one client took the agent to 290-300 MB resident
            // (their receive windows and relay buffers: docs/benchmarks.md, sessions 24
            // and 25), past the 256Mi this was: an OOM kill would end every user's
            // session.
            "resources": {
                "requests": {"cpu": "50m", "memory": "64Mi"},
                "limits": {"memory": "512Mi"},
            },
            "securityContext": crate::names::restricted_container_security(),
            "volumeMounts": [{"name": "credentials", "mountPath": CREDENTIALS_DIR, "readOnly": true}],
        }],
        "volumes": [{
            "name": "credentials",
            "secret": {
                "secretName": AGENT,
                // Only the agent's own part: the client key stays in the Secret.
                "items": [
                    {"key": KEY_CA, "path": KEY_CA},
                    {"key": KEY_AGENT_CERT, "path": FILE_TLS_CERT},
                    {"key": KEY_AGENT_KEY, "path": FILE_TLS_KEY},
                ],
                "defaultMode": 0o440,
            },
        }],
    });
    if !opts.node_selector.is_empty() {
        pod_spec["nodeSelector"] = json!(opts.node_selector);
    }
    // The agent's destination policy beyond its defaults.
    let args = &mut pod_spec["containers"][0]["args"];
    if let Some(args) = args.as_array_mut() {
        for net in &opts.allow {
            args.extend([json!("--allow"), json!(net.to_string())]);
        }
        if opts.allow_node_addresses {
            args.push(json!("--allow-node-addresses"));
        }
    }
    typed(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta(AGENT, Some(ns)),
        "spec": {
            "replicas": opts.replicas,
            "selector": {"matchLabels": {LABEL_NAME: AGENT}},
            "template": {"metadata": {"labels": labels()}, "spec": pod_spec},
        },
    }))
}

/// The install as one multi-document YAML for `kubectl apply -f -`, with freshly generated
/// credentials and a header warning that it contains private keys.
///
/// # Errors
/// [`ClusterError::Generate`] or [`ClusterError::Yaml`].
pub fn to_yaml(opts: &InstallOptions) -> Result<String, ClusterError> {
    let credentials = AgentCredentials::generate(&opts.namespace)?;
    render_yaml(opts, &manifests(opts, &credentials))
}

pub(crate) fn render_yaml(
    opts: &InstallOptions,
    objects: &[Manifest],
) -> Result<String, ClusterError> {
    let mut out = format!(
        "# kubelan agent in namespace {ns}, image {image}\n\
         # Generated by `kubelan install --dry-run` (kubelan {version}). Apply with `kubectl apply -f FILE`.\n\
         #\n\
         # WARNING: this file contains private keys. The Secret {AGENT} holds the agent's TLS\n\
         # key and a client key: whoever has them can use the agent. Keep the file private.\n\
         # The credentials were generated just now; applying this file over an existing install\n\
         # replaces them (`kubelan install` itself never does), and clients pick up the new ones.\n\
         # The Namespace is marked as created by kubelan, so `kubelan uninstall` deletes it;\n\
         # drop that document if the namespace already exists.\n",
        ns = opts.namespace,
        image = opts.image,
        version = env!("CARGO_PKG_VERSION"),
    );
    for m in objects {
        out.push_str("---\n");
        let doc = serde_saphyr::to_string(m).map_err(ClusterError::Yaml)?;
        out.push_str(&doc);
        if !doc.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}

/// What happened to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It did not exist and was created.
    Created,
    /// It existed and was changed.
    Updated,
    /// It existed and was already as wanted (or, for the namespace and the Secret, was left
    /// alone on purpose).
    Unchanged,
    /// It was deleted.
    Deleted,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Unchanged => "unchanged",
            Self::Deleted => "deleted",
        })
    }
}

/// One object and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectOutcome {
    /// Lower-case kind (`deployment`).
    pub kind: &'static str,
    /// Name.
    pub name: String,
    /// What happened.
    pub outcome: Outcome,
}

impl fmt::Display for ObjectOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.kind, self.name, self.outcome)
    }
}

/// Progress of [`install`] and [`uninstall`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InstallEvent {
    /// Checking permissions with SelfSubjectAccessReviews.
    CheckingPermissions,
    /// The namespace is still terminating (from an earlier uninstall); waiting for it.
    NamespaceTerminating {
        /// The namespace.
        namespace: String,
    },
    /// An object was created, updated, left unchanged or deleted.
    Object(ObjectOutcome),
    /// Waiting for the Deployment's replicas.
    Waiting {
        /// Available replicas.
        ready: i32,
        /// Wanted replicas.
        desired: i32,
    },
    /// A pod that is not ready yet, and why (scheduling, image pull, crash loop, probe).
    Pod {
        /// Pod name.
        name: String,
        /// Its state, with reasons.
        state: String,
    },
    /// The agent is available.
    Ready {
        /// Time from applying to available.
        elapsed: Duration,
    },
    /// Waiting for the agent's pods to be gone.
    PodsRemaining {
        /// How many are left.
        count: usize,
    },
}

impl fmt::Display for InstallEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CheckingPermissions => f.write_str("checking permissions"),
            Self::NamespaceTerminating { namespace } => {
                write!(f, "waiting for namespace {namespace} to finish terminating")
            }
            Self::Object(o) => o.fmt(f),
            Self::Waiting { ready, desired } => {
                write!(f, "waiting for {ready}/{desired} replicas ready")
            }
            Self::Pod { name, state } => write!(f, "pod {name}: {state}"),
            Self::Ready { elapsed } => write!(f, "agent ready in {:.1} s", elapsed.as_secs_f64()),
            Self::PodsRemaining { count } => write!(f, "waiting for {count} agent pods to stop"),
        }
    }
}

/// The progress callback of [`install`] and [`uninstall`].
pub type Progress<'a> = &'a (dyn Fn(InstallEvent) + Send + Sync);

/// The result of [`install`].
#[derive(Debug, Clone)]
pub struct InstallReport {
    /// The namespace.
    pub namespace: String,
    /// Every object, in apply order.
    pub objects: Vec<ObjectOutcome>,
    /// The ready agent pods.
    pub pods: Vec<AgentPod>,
    /// Time from applying the Deployment to the agent being available.
    pub ready_after: Duration,
}

async fn apply<K>(objects: &Api<K>, obj: &K, what: &str) -> Result<Outcome, ClusterError>
where
    K: kube::Resource + Clone + Serialize + DeserializeOwned + fmt::Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    let before = objects
        .get_opt(&name)
        .await
        .map_err(api(format!("get {what}")))?;
    let after = objects
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(obj),
        )
        .await
        .map_err(api(format!("apply {what}")))?;
    Ok(match before {
        None => Outcome::Created,
        Some(b) if b.meta().resource_version == after.meta().resource_version => Outcome::Unchanged,
        Some(_) => Outcome::Updated,
    })
}

/// Installs or updates the agent, then waits until it is available.
///
/// Checks every permission it needs first (all missing ones are reported together). The
/// namespace is created only when missing (existing namespaces are not modified); the
/// credentials Secret only when missing (a re-install never rotates credentials); every
/// other object is server-side applied, so a re-install with the same options changes
/// nothing.
///
/// # Errors
/// [`ClusterError::Forbidden`] listing missing permissions, [`ClusterError::Api`] naming
/// the failed request, [`ClusterError::BadCredentials`] for an incomplete existing Secret,
/// [`ClusterError::Timeout`] with the pods' last states.
pub async fn install(
    client: &kube::Client,
    opts: &InstallOptions,
    progress: Progress<'_>,
) -> Result<InstallReport, ClusterError> {
    let ns = opts.namespace.as_str();
    let deadline = Instant::now() + opts.timeout;
    progress(InstallEvent::CheckingPermissions);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let existing_ns = match namespaces.get_opt(ns).await {
        Ok(n) => Some(n),
        Err(e) if status_code(&e) == Some(403) => None,
        Err(e) => return Err(api(format!("get namespaces/{ns}"))(e)),
    };
    let create_ns = !matches!(existing_ns, Some(Some(_)));
    preflight::require(
        client,
        &preflight::install_access(ns, create_ns),
        INSTALL_HINT,
    )
    .await?;

    let mut report = InstallReport {
        namespace: ns.into(),
        objects: Vec::new(),
        pods: Vec::new(),
        ready_after: Duration::ZERO,
    };
    for m in manifests(opts, &SECRET_NOT_USED) {
        let name = m.name().to_string();
        let outcome = match &m {
            Manifest::Namespace(n) => {
                ensure_namespace(&namespaces, n, deadline, opts, progress).await?
            }
            Manifest::ServiceAccount(o) => {
                let what = format!("serviceaccounts/{name} in {ns}");
                apply(&Api::namespaced(client.clone(), ns), o, &what).await?
            }
            Manifest::ClusterRole(o) => {
                apply(
                    &Api::all(client.clone()),
                    o,
                    &format!("clusterroles/{name}"),
                )
                .await?
            }
            Manifest::ClusterRoleBinding(o) => {
                let what = format!("clusterrolebindings/{name}");
                apply(&Api::all(client.clone()), o, &what).await?
            }
            Manifest::Secret(_) => ensure_secret(client, ns).await?,
            Manifest::Service(o) => {
                let what = format!("services/{name} in {ns}");
                apply(&Api::namespaced(client.clone(), ns), o, &what).await?
            }
            Manifest::Deployment(o) => {
                let what = format!("deployments/{name} in {ns}");
                apply(&Api::namespaced(client.clone(), ns), o, &what).await?
            }
        };
        let o = ObjectOutcome {
            kind: m.kind(),
            name,
            outcome,
        };
        progress(InstallEvent::Object(o.clone()));
        report.objects.push(o);
    }
    let started = Instant::now();
    report.pods = wait_available(client, opts, deadline, progress).await?;
    report.ready_after = started.elapsed();
    progress(InstallEvent::Ready {
        elapsed: report.ready_after,
    });
    Ok(report)
}

/// Stands in for the credentials in the manifests [`install`] walks: the Secret is never
/// applied from them; [`ensure_secret`] generates real credentials only when it creates it.
const SECRET_NOT_USED: AgentCredentials = AgentCredentials {
    ca_pem: String::new(),
    agent_cert_pem: String::new(),
    agent_key_pem: String::new(),
    client_cert_pem: String::new(),
    client_key_pem: String::new(),
};

async fn ensure_namespace(
    api_ns: &Api<Namespace>,
    wanted: &Namespace,
    deadline: Instant,
    opts: &InstallOptions,
    progress: Progress<'_>,
) -> Result<Outcome, ClusterError> {
    let ns = opts.namespace.as_str();
    let mut told = false;
    loop {
        match api_ns
            .get_opt(ns)
            .await
            .map_err(api(format!("get namespaces/{ns}")))?
        {
            // Existing namespaces are left exactly as they are.
            Some(n) if n.metadata.deletion_timestamp.is_none() => return Ok(Outcome::Unchanged),
            Some(_) => {
                if !told {
                    progress(InstallEvent::NamespaceTerminating {
                        namespace: ns.into(),
                    });
                    told = true;
                }
                if Instant::now() >= deadline {
                    return Err(ClusterError::Timeout {
                        what: format!("namespace {ns} to finish terminating"),
                        after: opts.timeout,
                        last: "terminating".into(),
                    });
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            None => {
                return match api_ns.create(&PostParams::default(), wanted).await {
                    Ok(_) => Ok(Outcome::Created),
                    Err(e) if status_code(&e) == Some(409) => Ok(Outcome::Unchanged),
                    Err(e) => Err(api(format!("create namespaces/{ns}"))(e)),
                };
            }
        }
    }
}

/// Creates the credentials Secret when it does not exist; never touches an existing one.
async fn ensure_secret(client: &kube::Client, ns: &str) -> Result<Outcome, ClusterError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let what = format!("secrets/{AGENT} in {ns}");
    if let Some(s) = secrets
        .get_opt(AGENT)
        .await
        .map_err(api(format!("get {what}")))?
    {
        check_secret_data(s.data.as_ref()).map_err(|detail| ClusterError::BadCredentials {
            namespace: ns.into(),
            detail,
        })?;
        return Ok(Outcome::Unchanged);
    }
    let credentials = AgentCredentials::generate(ns)?;
    match secrets
        .create(&PostParams::default(), &secret_manifest(ns, &credentials))
        .await
    {
        Ok(_) => Ok(Outcome::Created),
        // Someone else's concurrent install won: use theirs.
        Err(e) if status_code(&e) == Some(409) => Ok(Outcome::Unchanged),
        Err(e) => Err(api(format!("create {what}"))(e)),
    }
}

/// Polls the Deployment and its pods until the rollout is complete, reporting progress and
/// pod states as they change.
async fn wait_available(
    client: &kube::Client,
    opts: &InstallOptions,
    deadline: Instant,
    progress: Progress<'_>,
) -> Result<Vec<AgentPod>, ClusterError> {
    let ns = opts.namespace.as_str();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let want = opts.replicas;
    let mut last_waiting = None;
    let mut last_states: HashMap<String, String> = HashMap::new();
    loop {
        let d = deployments
            .get(AGENT)
            .await
            .map_err(api(format!("get deployments/{AGENT} in {ns}")))?;
        let list = pods
            .list(&ListParams::default().labels(POD_SELECTOR))
            .await
            .map_err(api(format!("list pods in {ns}")))?;
        let status = d.status.clone().unwrap_or_default();
        let observed =
            status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
        let available = status.available_replicas.unwrap_or(0);
        let ready: Vec<&Pod> = list.items.iter().filter(|p| pod_ready(p)).collect();
        let done = observed
            && status.updated_replicas.unwrap_or(0) >= want
            && available >= want
            && status.replicas.unwrap_or(0) <= want
            && ready.len() >= usize::try_from(want).unwrap_or(0);
        if done {
            return Ok(ready.into_iter().map(AgentPod::from_pod).collect());
        }
        if last_waiting != Some(available) {
            progress(InstallEvent::Waiting {
                ready: available,
                desired: want,
            });
            last_waiting = Some(available);
        }
        let mut states = HashMap::new();
        for p in &list.items {
            if pod_ready(p) {
                continue;
            }
            let name = p.metadata.name.clone().unwrap_or_default();
            let state = describe_pod(p);
            if last_states.get(&name) != Some(&state) {
                progress(InstallEvent::Pod {
                    name: name.clone(),
                    state: state.clone(),
                });
            }
            states.insert(name, state);
        }
        last_states = states;
        if Instant::now() >= deadline {
            let mut last: Vec<String> = last_states
                .iter()
                .map(|(n, s)| format!("pod {n}: {s}"))
                .collect();
            last.sort();
            if last.is_empty() {
                last.push(format!("{} pods exist, none ready", list.items.len()));
            }
            return Err(ClusterError::Timeout {
                what: format!(
                    "deployment {AGENT} in {ns} to become available ({available}/{want} ready)"
                ),
                after: opts.timeout,
                last: format!(
                    "{}; see `kubectl -n {ns} describe pods -l {POD_SELECTOR}` and `kubectl -n {ns} logs deploy/{AGENT}`",
                    last.join("; ")
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The result of [`uninstall`].
#[derive(Debug, Clone, Default)]
pub struct UninstallReport {
    /// The namespace.
    pub namespace: String,
    /// What was deleted, in order.
    pub deleted: Vec<ObjectOutcome>,
    /// Why the namespace was kept, when it exists and was kept.
    pub namespace_kept: Option<String>,
    /// Total time.
    pub elapsed: Duration,
}

/// Removes what [`install`] made in `namespace`: the objects named and labelled as kubelan's
/// agent, the cluster-wide role and binding of that install, and the namespace when install
/// created it; waits until the agent's pods (and such a namespace) are gone.
///
/// # Errors
/// [`ClusterError::Forbidden`] listing missing permissions, [`ClusterError::Api`],
/// [`ClusterError::Timeout`].
pub async fn uninstall(
    client: &kube::Client,
    namespace: &str,
    timeout: Duration,
    progress: Progress<'_>,
) -> Result<UninstallReport, ClusterError> {
    let started = Instant::now();
    let deadline = started + timeout;
    let ns = namespace;
    progress(InstallEvent::CheckingPermissions);
    preflight::require(client, &preflight::uninstall_access(ns), INSTALL_HINT).await?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns_obj = namespaces
        .get_opt(ns)
        .await
        .map_err(api(format!("get namespaces/{ns}")))?;
    let delete_ns = ns_obj.as_ref().is_some_and(|n| {
        n.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(CREATED_BY_ANNOTATION))
            .map(String::as_str)
            == Some(CREATED_BY_INSTALL)
            && n.metadata.deletion_timestamp.is_none()
    });
    if delete_ns {
        preflight::require(
            client,
            &[Access::new("delete", "", "namespaces").named(ns)],
            INSTALL_HINT,
        )
        .await?;
    }
    let mut report = UninstallReport {
        namespace: ns.into(),
        ..UninstallReport::default()
    };
    let mut record = |kind: &'static str, name: String| {
        let o = ObjectOutcome {
            kind,
            name,
            outcome: Outcome::Deleted,
        };
        progress(InstallEvent::Object(o.clone()));
        report.deleted.push(o);
    };
    if ns_obj.is_some() {
        // The workload first, so the pods stop before their credentials and account go.
        for name in delete_labelled::<Deployment>(client, ns, "deployments").await? {
            record("deployment", name);
        }
        for name in delete_labelled::<Service>(client, ns, "services").await? {
            record("service", name);
        }
        for name in delete_labelled::<Secret>(client, ns, "secrets").await? {
            record("secret", name);
        }
        for name in delete_labelled::<ServiceAccount>(client, ns, "serviceaccounts").await? {
            record("serviceaccount", name);
        }
    }
    let rbac_name = cluster_role_name(ns);
    if delete_if_managed::<ClusterRoleBinding>(client, &rbac_name, "clusterrolebindings").await? {
        record("clusterrolebinding", rbac_name.clone());
    }
    if delete_if_managed::<ClusterRole>(client, &rbac_name, "clusterroles").await? {
        record("clusterrole", rbac_name.clone());
    }
    if ns_obj.is_some() {
        wait_pods_gone(client, ns, deadline, timeout, progress).await?;
    }
    match &ns_obj {
        None => {}
        Some(_) if delete_ns => {
            match namespaces.delete(ns, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if status_code(&e) == Some(404) => {}
                Err(e) => return Err(api(format!("delete namespaces/{ns}"))(e)),
            }
            record("namespace", ns.into());
            wait_namespace_gone(&namespaces, ns, deadline, timeout).await?;
        }
        Some(n) if n.metadata.deletion_timestamp.is_some() => {
            report.namespace_kept = Some("it is already being deleted".into());
        }
        Some(_) => {
            report.namespace_kept = Some("kubelan install did not create it".into());
        }
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Deletes every object of kind `K` in `ns` that carries install's labels; returns names.
async fn delete_labelled<K>(
    client: &kube::Client,
    ns: &str,
    plural: &str,
) -> Result<Vec<String>, ClusterError>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + fmt::Debug,
    K::DynamicType: Default,
{
    let api_k: Api<K> = Api::namespaced(client.clone(), ns);
    let list = api_k
        .list(&ListParams::default().labels(MANAGED_SELECTOR))
        .await
        .map_err(api(format!("list {plural} in {ns}")))?;
    let mut deleted = Vec::new();
    for obj in list.items {
        let name = obj.meta().name.clone().unwrap_or_default();
        // Label selectors are the API's job, but be strict about what we delete.
        if !is_managed(obj.meta().labels.as_ref()) || name != AGENT {
            continue;
        }
        match api_k.delete(&name, &background()).await {
            Ok(_) => deleted.push(name),
            Err(e) if status_code(&e) == Some(404) => {}
            Err(e) => return Err(api(format!("delete {plural}/{name} in {ns}"))(e)),
        }
    }
    Ok(deleted)
}

/// Deletes the cluster-scoped object `name` if it carries install's labels.
async fn delete_if_managed<K>(
    client: &kube::Client,
    name: &str,
    plural: &str,
) -> Result<bool, ClusterError>
where
    K: kube::Resource<Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + DeserializeOwned
        + fmt::Debug,
    K::DynamicType: Default,
{
    let api_k: Api<K> = Api::all(client.clone());
    let Some(obj) = api_k
        .get_opt(name)
        .await
        .map_err(api(format!("get {plural}/{name}")))?
    else {
        return Ok(false);
    };
    if !is_managed(obj.meta().labels.as_ref()) {
        return Ok(false);
    }
    match api_k.delete(name, &background()).await {
        Ok(_) => Ok(true),
        Err(e) if status_code(&e) == Some(404) => Ok(false),
        Err(e) => Err(api(format!("delete {plural}/{name}"))(e)),
    }
}

fn background() -> DeleteParams {
    DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    }
}

async fn wait_pods_gone(
    client: &kube::Client,
    ns: &str,
    deadline: Instant,
    timeout: Duration,
    progress: Progress<'_>,
) -> Result<(), ClusterError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut last = None;
    loop {
        let list = pods
            .list(&ListParams::default().labels(MANAGED_SELECTOR))
            .await
            .map_err(api(format!("list pods in {ns}")))?;
        let count = list.items.len();
        if count == 0 {
            return Ok(());
        }
        if last != Some(count) {
            progress(InstallEvent::PodsRemaining { count });
            last = Some(count);
        }
        if Instant::now() >= deadline {
            let names: Vec<String> = list
                .items
                .iter()
                .map(|p| {
                    format!(
                        "{} ({})",
                        p.metadata.name.as_deref().unwrap_or(""),
                        describe_pod(p)
                    )
                })
                .collect();
            return Err(ClusterError::Timeout {
                what: format!("the agent's pods in {ns} to stop"),
                after: timeout,
                last: names.join(", "),
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn wait_namespace_gone(
    namespaces: &Api<Namespace>,
    ns: &str,
    deadline: Instant,
    timeout: Duration,
) -> Result<(), ClusterError> {
    loop {
        let Some(n) = namespaces
            .get_opt(ns)
            .await
            .map_err(api(format!("get namespaces/{ns}")))?
        else {
            return Ok(());
        };
        if Instant::now() >= deadline {
            let phase = n
                .status
                .and_then(|s| s.phase)
                .unwrap_or_else(|| "unknown".into());
            return Err(ClusterError::Timeout {
                what: format!("namespace {ns} to be deleted"),
                after: timeout,
                last: format!("phase {phase}; see `kubectl get namespace {ns} -o yaml`"),
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests;
