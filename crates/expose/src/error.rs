//! Errors of `kubelan expose`: each says what went wrong and what to do.

use kubelan_cluster::ClusterError;
use kubelan_cluster::error::describe;

use crate::relay_status::RelayFailure;
use crate::spec::SpecError;

/// Why an expose session could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExposeError {
    /// A bad argument.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// Permissions, or an API failure the cluster layer explains.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// `--name` names a Service that exists.
    #[error(
        "Service {name} already exists in namespace {namespace}; pick another --name, or use `kubelan replace svc/{name} ...` to take over its traffic"
    )]
    NameTaken {
        /// The Service.
        name: String,
        /// The namespace.
        namespace: String,
    },
    /// An API request failed.
    #[error("{action}: {}", describe(.source))]
    Api {
        /// What was being done, verb first.
        action: String,
        /// The API's answer.
        #[source]
        source: kube::Error,
    },
    /// The relay pod will not start.
    #[error(transparent)]
    Relay(#[from] RelayFailure),
    /// The relay pod did not become ready in time.
    #[error(
        "the relay pod was not ready after {seconds} s (last seen: {last}); `kubectl describe job/{job} -n {namespace}` shows why, or pass a longer --timeout"
    )]
    RelayTimeout {
        /// How long was waited.
        seconds: u64,
        /// The last status seen.
        last: String,
        /// The Job.
        job: String,
        /// The namespace.
        namespace: String,
    },
    /// The link to the relay failed for good (e.g. an incompatible relay).
    #[error("{0}")]
    Carrier(String),
}

pub(crate) fn api(action: impl Into<String>) -> impl FnOnce(kube::Error) -> ExposeError {
    let action = action.into();
    move |source| ExposeError::Api { action, source }
}
