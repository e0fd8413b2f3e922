//! Errors of `kubelan expose` and `kubelan replace`: each says what went wrong and what to do.

use kubelan_cluster::ClusterError;
use kubelan_cluster::error::describe;
use kubelan_cluster::session_objects::Mode;

use kubelan_cluster::replace::NotReplaceable;

use crate::relay_status::RelayFailure;
use crate::replace_plan::ReplaceSpecError;
use crate::spec::SpecError;

/// Why an expose or replace session could not start or stopped.
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
    /// The session's Job disappeared before its relay was ready.
    #[error(
        "the relay's Job {job} in namespace {namespace} is gone before its pod was ready (last seen: {last}): the relay ended at once and Kubernetes removed the Job, or someone deleted it; `kubectl get events -n {namespace} --field-selector involvedObject.name={job}` may still say why"
    )]
    RelayGone {
        /// The Job.
        job: String,
        /// The namespace.
        namespace: String,
        /// The last status seen.
        last: String,
    },
    /// The link to the relay failed for good (e.g. an incompatible relay).
    #[error("{0}")]
    Carrier(String),
    /// A bad `replace` argument, or one the Service does not match.
    #[error(transparent)]
    ReplaceSpec(#[from] ReplaceSpecError),
    /// The Service cannot be replaced (no selector, ExternalName, no ports, SCTP).
    #[error(transparent)]
    NotReplaceable(#[from] NotReplaceable),
    /// `replace svc/NAME` of a Service that does not exist.
    #[error(
        "there is no Service {service} in namespace {namespace}; `kubectl get services -n {namespace}` lists them (pass -n for another namespace)"
    )]
    ServiceNotFound {
        /// The Service.
        service: String,
        /// The namespace.
        namespace: String,
    },
    /// Another session holds the Service.
    #[error(
        "Service {service} in namespace {namespace} is already replaced by {holder}; wait for that session to end or ask its user to stop it (its Job is `kubectl get job kubelan-{session} -n {namespace}`)"
    )]
    Locked {
        /// The Service.
        service: String,
        /// The namespace.
        namespace: String,
        /// Who holds it: session, user, host and command.
        holder: String,
        /// The holding session's id.
        session: String,
    },
    /// The Service's selector changed while the session was starting.
    #[error(
        "Service {service} changed while the session was starting (its selector is now {now}); nothing was swapped: run the command again"
    )]
    ServiceChanged {
        /// The Service.
        service: String,
        /// Its selector now.
        now: String,
    },
}

impl ExposeError {
    /// The error in the words of every other mode: API failures name the context, server
    /// and user, and permission failures what `mode`'s user needs (`kubelan rbac MODE`).
    pub fn explain(self, cc: &kubelan_cluster::ClusterClient, mode: Mode) -> ExposeError {
        let hint = rbac_hint(mode);
        match self {
            ExposeError::Api { action, source } => {
                ClusterError::from_api(action, source, &cc.target(), &hint).into()
            }
            ExposeError::Cluster(e) => cc.explain(e, &hint).into(),
            e => e,
        }
    }
}

/// Where a permission or API error of `mode` sends the user.
pub fn rbac_hint(mode: Mode) -> String {
    let m = mode.as_str();
    format!(
        "`kubelan rbac {m}` prints a ClusterRole granting what {m} needs; ask an admin of the namespace to bind it to you"
    )
}

pub(crate) fn api(action: impl Into<String>) -> impl FnOnce(kube::Error) -> ExposeError {
    let action = action.into();
    move |source| ExposeError::Api { action, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_mode_names_its_rbac_command() {
        assert_eq!(
            rbac_hint(Mode::Replace),
            "`kubelan rbac replace` prints a ClusterRole granting what replace needs; ask an admin of the namespace to bind it to you"
        );
        assert!(
            rbac_hint(Mode::Run)
                .starts_with("`kubelan rbac run` prints a ClusterRole granting what run needs;")
        );
    }
}
