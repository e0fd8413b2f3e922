//! The errors of this crate. Each variant says what went wrong and what to do about it.

use std::path::PathBuf;
use std::time::Duration;

use crate::preflight::Missing;
use crate::tls::TlsError;

/// Errors talking to a cluster, installing the agent or finding it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// No kubeconfig file exists and kubelan is not running inside a cluster.
    #[error(
        "no kubeconfig found (looked at {}); set KUBECONFIG or pass --kubeconfig FILE",
        display_paths(.searched)
    )]
    NoKubeconfig {
        /// The paths that were tried.
        searched: Vec<PathBuf>,
    },
    /// A kubeconfig file exists but cannot be read or parsed.
    #[error("cannot read kubeconfig {}: {source}; fix the file or pass another one with --kubeconfig", .path.display())]
    ReadKubeconfig {
        /// The file.
        path: PathBuf,
        /// What kube-rs reported.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// `--context` names a context the kubeconfig does not have.
    #[error("context {context:?} is not in the kubeconfig; available contexts: {}", display_list(.available))]
    UnknownContext {
        /// The requested context.
        context: String,
        /// The contexts the kubeconfig has.
        available: Vec<String>,
    },
    /// The kubeconfig has no `current-context` and none was given.
    #[error("the kubeconfig has no current-context; pass --context NAME (available contexts: {})", display_list(.available))]
    NoCurrentContext {
        /// The contexts the kubeconfig has.
        available: Vec<String>,
    },
    /// The selected context cannot be turned into a client configuration (missing
    /// cluster or user entry, unreadable certificate files, ...).
    #[error("cannot use context {context:?}: {source}; check its cluster and user entries")]
    Context {
        /// The context.
        context: String,
        /// What kube-rs reported.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// Running inside a pod without a kubeconfig, and the in-cluster configuration failed.
    #[error("no kubeconfig and the in-cluster configuration failed: {0}; pass --kubeconfig FILE")]
    InCluster(#[source] kube::config::InClusterError),
    /// The HTTP client could not be built (TLS set-up).
    #[error("cannot create the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    /// The API server cannot be reached (network, DNS, TLS, proxy, credential plugin).
    #[error(
        "cannot reach the Kubernetes API of context {context:?} at {server}: {source}; check that this machine can reach it (VPN, proxy, firewall) or pick another context with --context"
    )]
    Unreachable {
        /// The kubeconfig context.
        context: String,
        /// The API server URL.
        server: String,
        /// What kube-rs reported.
        #[source]
        source: kube::Error,
    },
    /// The API server rejected the credentials (401).
    #[error(
        "the Kubernetes API of context {context:?} at {server} rejected the credentials ({message}); log in again or refresh the credentials in the kubeconfig"
    )]
    Unauthorized {
        /// The kubeconfig context.
        context: String,
        /// The API server URL.
        server: String,
        /// The server's message.
        message: String,
    },
    /// An API request failed.
    #[error("{action}: {source}")]
    Api {
        /// What was being done, e.g. `create deployments/kubelan-agent in kubelan-system`.
        action: String,
        /// The API's answer.
        #[source]
        source: kube::Error,
    },
    /// The user lacks permissions the operation needs; every missing one is listed.
    #[error("{}\n{hint}", display_missing(.missing))]
    Forbidden {
        /// The missing permissions.
        missing: Vec<Missing>,
        /// What to do, e.g. which `kubelan rbac` mode prints a Role granting them.
        hint: String,
    },
    /// No agent is installed in the namespace.
    #[error(
        "no kubelan agent in namespace {namespace}: run `kubelan install --namespace {namespace}` (or pass the namespace it was installed in)"
    )]
    NotInstalled {
        /// The namespace looked in.
        namespace: String,
    },
    /// The agent exists but none of its pods is ready.
    #[error(
        "the kubelan agent in namespace {namespace} has no ready pod ({detail}); see `kubectl -n {namespace} describe pods -l app.kubernetes.io/name=kubelan-agent`"
    )]
    AgentNotReady {
        /// The namespace.
        namespace: String,
        /// The pods' states.
        detail: String,
    },
    /// Waiting for something timed out.
    #[error("timed out after {} s waiting for {what}; last state: {last}", .after.as_secs())]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        after: Duration,
        /// The last observed state, with reasons (image pull, crash loop, ...).
        last: String,
    },
    /// The credentials Secret exists but is incomplete or unparsable.
    #[error(
        "secret {namespace}/kubelan-agent is not usable: {detail}; delete it (`kubectl -n {namespace} delete secret kubelan-agent`) and run `kubelan install` again to generate new credentials"
    )]
    BadCredentials {
        /// The namespace.
        namespace: String,
        /// What is wrong.
        detail: String,
    },
    /// Certificate generation failed.
    #[error("cannot generate the agent's certificates: {0}")]
    Generate(#[source] rcgen::Error),
    /// The manifests could not be written as YAML.
    #[error("cannot write the manifests as YAML: {0}")]
    Yaml(#[source] serde_saphyr::SerializeError),
    /// A manifest could not be converted to JSON.
    #[error("cannot convert a manifest to JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// A TLS configuration could not be built from the credentials.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// The HTTP status code of an API error, if it is one.
pub(crate) fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// A closure turning a kube error into [`ClusterError::Api`] with `action`.
pub(crate) fn api(action: impl Into<String>) -> impl FnOnce(kube::Error) -> ClusterError {
    let action = action.into();
    move |source| ClusterError::Api { action, source }
}

fn display_paths(p: &[PathBuf]) -> String {
    if p.is_empty() {
        return "nothing".into();
    }
    p.iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn display_list(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

fn display_missing(m: &[Missing]) -> String {
    let mut s = String::from("insufficient permissions:");
    for m in m {
        s.push_str("\n  ");
        s.push_str(&m.to_string());
    }
    s
}
