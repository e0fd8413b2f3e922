//! Names, labels, ports and paths shared by the installer, the agent and its clients.
//!
//! These are part of kubelan's compatibility surface: an agent installed by one release is
//! found and used by clients of another, so change them only with a migration.

use std::collections::BTreeMap;

/// Namespace the agent is installed in unless `--namespace` says otherwise.
pub const DEFAULT_NAMESPACE: &str = "kubelan-system";

/// Name of the agent's ServiceAccount, Deployment, Service and credentials Secret.
pub const AGENT: &str = "kubelan-agent";

/// The agent image of this kubelan release.
pub const DEFAULT_IMAGE: &str = concat!("ghcr.io/kubelan/kubelan:", env!("CARGO_PKG_VERSION"));

/// The field manager of kubelan's server-side applies.
pub const FIELD_MANAGER: &str = "kubelan";

/// `app.kubernetes.io/name` label key.
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
/// `app.kubernetes.io/part-of` label key.
pub const LABEL_PART_OF: &str = "app.kubernetes.io/part-of";
/// `app.kubernetes.io/managed-by` label key.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The label the EndpointSlice controller puts on a Service's slices, naming the Service.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";

/// Selects the agent's pods.
pub const POD_SELECTOR: &str = "app.kubernetes.io/name=kubelan-agent";
/// Selects every object `kubelan install` creates (what `kubelan uninstall` removes).
pub const MANAGED_SELECTOR: &str =
    "app.kubernetes.io/name=kubelan-agent,app.kubernetes.io/managed-by=kubelan";

/// Annotation marking a namespace that `kubelan install` created (and `uninstall` deletes).
pub const CREATED_BY_ANNOTATION: &str = "kubelan.io/created-by";
/// Value of [`CREATED_BY_ANNOTATION`].
pub const CREATED_BY_INSTALL: &str = "kubelan-install";

/// The agent's TLS carrier port (container port `carrier`, Service port).
pub const CARRIER_PORT: u16 = 7443;
/// The agent's plain carrier on the pod's loopback, reached through `pods/portforward`.
pub const PLAIN_PORT: u16 = 7444;
/// The agent's health port (`/readyz`, `/healthz`).
pub const HEALTH_PORT: u16 = 7440;
/// Name of the carrier port.
pub const CARRIER_PORT_NAME: &str = "carrier";
/// Name of the health port.
pub const HEALTH_PORT_NAME: &str = "health";

/// Where the agent pod mounts its credentials (`ca.crt`, `tls.crt`, `tls.key`).
pub const CREDENTIALS_DIR: &str = "/var/run/kubelan/credentials";
/// Uid and gid the agent runs as (distroless `nonroot`).
pub const AGENT_UID: i64 = 65532;

/// Secret key: the private CA's certificate.
pub const KEY_CA: &str = "ca.crt";
/// Secret key: the agent's serving certificate.
pub const KEY_AGENT_CERT: &str = "agent.crt";
/// Secret key: the agent's private key.
pub const KEY_AGENT_KEY: &str = "agent.key";
/// Secret key: the client certificate.
pub const KEY_CLIENT_CERT: &str = "client.crt";
/// Secret key: the client's private key.
pub const KEY_CLIENT_KEY: &str = "client.key";
/// File name of the agent certificate in [`CREDENTIALS_DIR`].
pub const FILE_TLS_CERT: &str = "tls.crt";
/// File name of the agent key in [`CREDENTIALS_DIR`].
pub const FILE_TLS_KEY: &str = "tls.key";

/// Name of the agent's ClusterRole and ClusterRoleBinding for an install in `namespace`:
/// `kubelan-agent` in the default namespace, `kubelan-agent-<namespace>` elsewhere, so two
/// installs do not clash.
pub fn cluster_role_name(namespace: &str) -> String {
    if namespace == DEFAULT_NAMESPACE {
        AGENT.to_string()
    } else {
        format!("{AGENT}-{namespace}")
    }
}

/// The labels on everything `kubelan install` creates.
pub fn labels() -> BTreeMap<String, String> {
    [
        (LABEL_NAME, AGENT),
        (LABEL_PART_OF, "kubelan"),
        (LABEL_MANAGED_BY, "kubelan"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Whether an object's labels say `kubelan install` made it.
pub fn is_managed(labels: Option<&BTreeMap<String, String>>) -> bool {
    labels.is_some_and(|l| {
        l.get(LABEL_MANAGED_BY).map(String::as_str) == Some("kubelan")
            && l.get(LABEL_NAME).map(String::as_str) == Some(AGENT)
    })
}

// Sessions of `expose`, `replace` and `run` (the way back). Each session is one Job
// `kubelan-<id>` with everything else hanging from it by ownerReference; these names and
// labels are how a client finds a session, and how a second client learns who holds a lock.

/// `app.kubernetes.io/name` of every object a way-back session creates (never the agent's
/// name, so `kubelan uninstall` leaves sessions alone).
pub const RELAY: &str = "kubelan-relay";
/// Label: the session's id; also the whole selector of the session's Service.
pub const LABEL_SESSION: &str = "kubelan.io/session";
/// Label: the session user's name, made a valid label value (the exact name is in
/// [`ANNOTATION_USER`]).
pub const LABEL_USER: &str = "kubelan.io/user";
/// Label: `expose`, `replace` or `run`.
pub const LABEL_MODE: &str = "kubelan.io/mode";
/// Annotation: the session user's exact name as the API server knows it.
pub const ANNOTATION_USER: &str = "kubelan.io/user";
/// Annotation: the host name of the machine the client runs on.
pub const ANNOTATION_CLIENT_HOST: &str = "kubelan.io/client-host";
/// Annotation: the client's command line (`kubelan expose 8080 --name web`), for
/// `replace`'s "held by" message and `kubectl describe`.
pub const ANNOTATION_COMMAND: &str = "kubelan.io/command";
/// Annotation: the client's kubelan version.
pub const ANNOTATION_VERSION: &str = "kubelan.io/version";
/// Annotation: the Service a session serves (exposes or replaces).
pub const ANNOTATION_SERVICE: &str = "kubelan.io/service";
/// The relay's carrier port (container port [`RELAY_CARRIER_PORT_NAME`]) unless a listener
/// needs that number; its readiness probe is a TCP connect to it.
pub const RELAY_CARRIER_PORT: u16 = 7445;
/// Container port name of the relay's carrier (prefixed, so a replaced Service's named
/// `targetPort` is unlikely to clash with it).
pub const RELAY_CARRIER_PORT_NAME: &str = "kubelan-carrier";

/// The `securityContext` of every container kubelan runs in a cluster (the agent, a
/// session's relay, doctor's probes): what Pod Security `restricted` asks for, as the
/// image's non-root user [`AGENT_UID`].
pub fn restricted_container_security() -> serde_json::Value {
    serde_json::json!({
        "allowPrivilegeEscalation": false,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": true,
        "runAsNonRoot": true,
        "runAsUser": AGENT_UID,
        "runAsGroup": AGENT_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    })
}
