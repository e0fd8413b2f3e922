//! The lab's kubelet: one agent per node that registers the Node, renews its Lease, and
//! runs the pods bound to it as real processes in sandboxes on the node's pod bridge.
//!
//! Per pod: a network namespace with a veth on the node's `cni0` bridge and an address from
//! the node's Pod CIDR, a sandbox holder (private mount and UTS namespaces), the standard
//! in-cluster files (`/etc/resolv.conf`, `/etc/hosts`, the service-account token), volumes,
//! and one process per container started from `command`/`args` with the container's
//! environment, restarted by the restart policy with exponential back-off. Readiness and
//! liveness probes (exec, tcpSocket, httpGet) run like the real kubelet's: network probes
//! from the node's namespace to the pod IP.

mod env;
mod node;
mod pod;
mod pod_run;
mod pod_sandbox;
mod probes;
mod spawn;
mod volumes;

pub use node::{NodeAgent, NodeSpec};

use kubelan_apisim::ApiResult;
use kubelan_apisim::resources::{ResourceInfo, find};

/// Annotation that marks a mirror pod (a static pod's API object): not run by the kubelet.
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// The user kubelan's image runs as (distroless `nonroot`).
const KUBELAN_IMAGE_UID: u32 = 65532;

fn res(group: &str, plural: &str) -> &'static ResourceInfo {
    find(group, "v1", plural).expect("known resource")
}

fn pods() -> &'static ResourceInfo {
    res("", "pods")
}

fn log_api<T>(what: &str, r: ApiResult<T>) {
    if let Err(e) = r
        && e.code != 404
    {
        tracing::warn!(error = %e.message, "{what}");
    }
}
