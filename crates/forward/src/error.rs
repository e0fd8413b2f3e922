//! Errors that stop `kubelan forward` before it serves. Once it serves, nothing stops it:
//! failures of single connections and watches become [`crate::Event`]s.

use std::net::SocketAddr;

use crate::resolve::ResolveError;
use crate::spec::SpecError;

/// Why a forward cannot start. Every message names the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardError {
    /// The command line is wrong.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A target's port cannot be forwarded.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// The target does not exist.
    #[error(
        "{kind} {namespace}/{name} not found: check the name (`kubectl get {plural} -n {namespace}`) or pass the right namespace with -n{hint}"
    )]
    NotFound {
        /// `Service`, `Pod`, `Deployment`.
        kind: &'static str,
        /// `services`, `pods`, `deployments`.
        plural: &'static str,
        /// The namespace looked in.
        namespace: String,
        /// The name.
        name: String,
        /// More help (e.g. a bare name is a pod; a Service of that name exists).
        hint: String,
    },
    /// The local port is taken.
    #[error(
        "cannot listen on {addr}: the address is already in use (another program, or another kubelan forward, listens there); pick another local port, e.g. `{suggestion}`, or `:{remote}` for a free one"
    )]
    PortInUse {
        /// The address.
        addr: SocketAddr,
        /// A spec with another local port.
        suggestion: String,
        /// The remote port.
        remote: String,
    },
    /// Listening failed otherwise.
    #[error("cannot listen on {addr}: {source}{hint}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
        /// What to do about it.
        hint: String,
    },
    /// Connecting to the cluster or checking permissions failed.
    #[error(transparent)]
    Cluster(#[from] kubelan_cluster::ClusterError),
    /// The user lacks permissions the request uses.
    #[error("kubelan forward needs these permissions (context {context:?}): {source}")]
    Forbidden {
        /// The kubeconfig context.
        context: String,
        /// The missing permissions and the fix.
        source: kubelan_cluster::ClusterError,
    },
    /// An API request failed (other than a missing object).
    #[error(
        "{action}: {}; check that the API server is reachable and your credentials are valid",
        kubelan_cluster::error::describe(.source)
    )]
    Api {
        /// What was being done.
        action: String,
        /// kube-rs' error.
        #[source]
        source: kube::Error,
    },
    /// Bulk mode: a namespace's watches did not deliver a complete listing in time.
    #[error(
        "no complete listing of Services and EndpointSlices in namespace {namespace} within 30 s; check that `kubectl get services,endpointslices -n {namespace}` works from here"
    )]
    NotSynced {
        /// The namespace.
        namespace: String,
    },
    /// Several namespaces were given with targets.
    #[error(
        "-n was given {count} times, but forwarding named targets uses one namespace; run one kubelan forward per namespace, or drop the targets to forward every Service of the namespaces (bulk mode)"
    )]
    SeveralNamespaces {
        /// How many.
        count: usize,
    },
    /// `--address` in bulk mode.
    #[error(
        "--address is for named targets; in bulk mode (no targets) every Service gets its own 127.x.y.z address"
    )]
    AddressInBulk,
    /// `--selector` with named targets.
    #[error(
        "-l/--selector chooses Services in bulk mode; drop it, or drop the targets to forward every matching Service"
    )]
    SelectorWithTargets,
    /// `--no-hosts` with named targets.
    #[error("--no-hosts is for bulk mode (no targets); named targets never touch the hosts file")]
    NoHostsWithTargets,
}

impl ForwardError {
    /// A `NotFound` or `Api` error for a failed GET of `kind` `namespace/name`.
    pub(crate) fn from_get(
        source: kube::Error,
        kind: &'static str,
        plural: &'static str,
        namespace: &str,
        name: &str,
    ) -> ForwardError {
        match &source {
            kube::Error::Api(s) if s.code == 404 => ForwardError::NotFound {
                kind,
                plural,
                namespace: namespace.into(),
                name: name.into(),
                hint: String::new(),
            },
            _ => ForwardError::Api {
                action: format!("get {plural}/{name} in {namespace}"),
                source,
            },
        }
    }
}
