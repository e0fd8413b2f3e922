//! From a checked request to running forwards: connect to the cluster, check with the API
//! that the user holds every permission the request uses (before anything listens), start
//! the named targets or the bulk mode. API failures name the context, server and user
//! like every other mode's.

use kubelan_cluster::{ClusterClient, ClusterError, KubeArgs, KubeconfigArgs};

use crate::access::{RBAC_HINT, bulk_access, single_access};
use crate::{Events, ForwardError, Options, Request, Running, start, start_bulk};

/// Connects for `request` (in its first namespace; without `-n` the context's namespace
/// becomes the request's) and checks the permissions it uses.
///
/// # Errors
/// The cluster cannot be reached, or a permission is missing (the error lists them and
/// names `kubelan rbac forward`).
pub async fn connect(
    kube: &KubeconfigArgs,
    request: &mut Request,
) -> Result<ClusterClient, ForwardError> {
    let cc = kubelan_cluster::connect(&KubeArgs {
        kubeconfig: kube.kubeconfig.clone(),
        context: kube.context.clone(),
        namespace: request.namespaces.first().cloned(),
    })
    .await?;
    if request.namespaces.is_empty() {
        request.namespaces.push(cc.namespace.clone());
    }
    let wanted = if request.bulk() {
        bulk_access(&request.namespaces)
    } else {
        single_access(&request.namespaces[0], &request.specs)
    };
    match kubelan_cluster::preflight::require(&cc.client, &wanted, RBAC_HINT).await {
        Ok(()) => Ok(cc),
        Err(source @ ClusterError::Forbidden { .. }) => Err(ForwardError::Forbidden {
            context: cc.context.clone(),
            source,
        }),
        Err(e) => Err(cc.explain(e, RBAC_HINT).into()),
    }
}

/// Starts `request`'s forwards: its named targets, or every Service of its namespaces
/// (matching `selector`) in bulk mode.
///
/// # Errors
/// A target cannot be resolved or listened for, or the API fails.
pub async fn start_request(
    cc: &ClusterClient,
    request: &Request,
    selector: Option<&str>,
    opts: Options,
    events: Events,
) -> Result<Running, ForwardError> {
    let client = cc.client.clone();
    let started = if request.bulk() {
        start_bulk(client, &request.namespaces, selector, opts, events).await
    } else {
        start(client, &request.namespaces[0], &request.specs, opts, events).await
    };
    started.map_err(|e| match e {
        ForwardError::Api { action, source } => {
            ClusterError::from_api(action, source, &cc.target(), RBAC_HINT).into()
        }
        e => e,
    })
}
