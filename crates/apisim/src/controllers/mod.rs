//! The controllers a cluster runs beside its API server, simulated over the store:
//! namespaces (default ServiceAccount, root CA ConfigMap, termination), scheduling,
//! ReplicaSets, Deployments, StatefulSets, Jobs (with the TTL-after-finished controller),
//! Endpoints and EndpointSlices, and garbage collection through owner references.
//!
//! Each controller is level-triggered: on any relevant change (and every few seconds) it
//! compares the whole desired state with the stored one and writes only differences. The
//! lab's object counts are small, so a full pass costs microseconds and can never miss an
//! edge.

mod deployments;
mod endpoints;
mod gc;
mod jobs;
mod namespaces;
mod replicasets;
mod scheduler;
mod statefulsets;
#[cfg(test)]
mod tests;
mod util;

pub use util::pod_ready;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use gc::garbage_collect;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::error::ApiResult;
use crate::meta;
use crate::store::{Event, Store, Sub};

use deployments::deployments;
use endpoints::endpoints;
use namespaces::namespaces;
use replicasets::replicasets;
use scheduler::schedule;
use statefulsets::statefulsets;
use util::{ensure, r};

/// What bootstrap and the controllers need to know about the cluster.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// PEM of the cluster CA, published as `kube-root-ca.crt` in every namespace.
    pub ca_pem: String,
    /// Address and port the API server listens on (endpoints of `default/kubernetes`).
    pub api_endpoint: (Ipv4Addr, u16),
}

/// Creates the objects a fresh cluster has: system namespaces, default RBAC roles, the
/// `kubernetes` Service with its endpoints, and the `kubernetes` ServiceCIDR.
///
/// # Errors
/// If the store refuses an object (a bug in the lab configuration).
pub fn bootstrap(store: &Store, cfg: &ControllerConfig) -> ApiResult<()> {
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        ensure(
            store,
            r("", "namespaces"),
            "",
            json!({"metadata": {"name": ns}}),
        )?;
    }
    let rbac = "rbac.authorization.k8s.io";
    let read = json!(["get", "list", "watch"]);
    let write = json!(["create", "update", "patch", "delete", "deletecollection"]);
    let core_view = json!([
        "pods",
        "pods/log",
        "pods/status",
        "services",
        "services/status",
        "endpoints",
        "configmaps",
        "serviceaccounts",
        "events",
        "namespaces",
        "persistentvolumeclaims",
        "replicationcontrollers"
    ]);
    let apps_view = json!([
        "deployments",
        "deployments/scale",
        "deployments/status",
        "replicasets",
        "replicasets/scale",
        "replicasets/status",
        "statefulsets",
        "statefulsets/scale",
        "statefulsets/status"
    ]);
    let view_rules = json!([
        {"apiGroups": [""], "resources": core_view, "verbs": read},
        {"apiGroups": ["apps"], "resources": apps_view, "verbs": read},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": read},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": read},
        {"apiGroups": ["batch"], "resources": ["jobs", "jobs/status", "cronjobs", "cronjobs/status"], "verbs": read},
    ]);
    let mut edit_rules = view_rules.as_array().cloned().unwrap_or_default();
    edit_rules.extend([
        json!({"apiGroups": [""], "resources": ["pods", "services", "endpoints", "configmaps", "secrets", "serviceaccounts", "persistentvolumeclaims"], "verbs": write}),
        json!({"apiGroups": [""], "resources": ["secrets"], "verbs": read}),
        json!({"apiGroups": [""], "resources": ["pods/portforward", "pods/exec", "pods/attach", "pods/eviction", "serviceaccounts/token"], "verbs": ["create", "get"]}),
        json!({"apiGroups": ["apps"], "resources": ["deployments", "deployments/scale", "replicasets", "replicasets/scale", "statefulsets", "statefulsets/scale"], "verbs": write}),
        json!({"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": write}),
        json!({"apiGroups": ["batch"], "resources": ["jobs", "cronjobs"], "verbs": write}),
    ]);
    let mut admin_rules = edit_rules.clone();
    admin_rules.push(json!({"apiGroups": [rbac], "resources": ["roles", "rolebindings"], "verbs": ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]}));
    let roles = [
        (
            "cluster-admin",
            json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}, {"nonResourceURLs": ["*"], "verbs": ["*"]}]),
        ),
        ("admin", Value::Array(admin_rules)),
        ("edit", Value::Array(edit_rules)),
        ("view", view_rules),
    ];
    for (name, rules) in roles {
        ensure(
            store,
            r(rbac, "clusterroles"),
            "",
            json!({"metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}}, "rules": rules}),
        )?;
    }
    ensure(
        store,
        r(rbac, "clusterrolebindings"),
        "",
        json!({"metadata": {"name": "cluster-admin", "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
               "roleRef": {"apiGroup": rbac, "kind": "ClusterRole", "name": "cluster-admin"},
               "subjects": [{"apiGroup": rbac, "kind": "Group", "name": "system:masters"}]}),
    )?;
    let cidr = store.config().service_cidr;
    let first = Ipv4Addr::from(u32::from(cidr.network()) + 1);
    ensure(
        store,
        r("networking.k8s.io", "servicecidrs"),
        "",
        json!({"metadata": {"name": "kubernetes", "labels": {"networking.k8s.io/service-cidr-from-flags": "true"}}, "spec": {"cidrs": [cidr.to_string()]}}),
    )?;
    store.modify(r("networking.k8s.io", "servicecidrs"), "", "kubernetes", Sub::Status, |o| {
        o["status"] = json!({"conditions": [{"type": "Ready", "status": "True", "reason": "", "message": "Kubernetes Service CIDR is ready", "lastTransitionTime": meta::now_rfc3339()}]});
        Ok(())
    })?;
    ensure(
        store,
        r("", "services"),
        "default",
        json!({"metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
               "spec": {"clusterIP": first.to_string(), "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": cfg.api_endpoint.1}]}}),
    )?;
    let (ip, port) = cfg.api_endpoint;
    ensure(
        store,
        r("", "endpoints"),
        "default",
        json!({"metadata": {"name": "kubernetes", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
               "subsets": [{"addresses": [{"ip": ip.to_string()}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]}),
    )?;
    ensure(
        store,
        r("discovery.k8s.io", "endpointslices"),
        "default",
        json!({"metadata": {"name": "kubernetes", "labels": {"kubernetes.io/service-name": "kubernetes"}},
               "addressType": "IPv4",
               "endpoints": [{"addresses": [ip.to_string()], "conditions": {"ready": true, "serving": true, "terminating": false}}],
               "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}),
    )?;
    Ok(())
}
/// Starts every controller; they stop when `shutdown` is cancelled.
pub fn spawn_all(store: Arc<Store>, cfg: ControllerConfig, shutdown: CancellationToken) {
    type Pass = Box<dyn FnMut(&Store) + Send>;
    let ca = cfg.ca_pem.clone();
    let controllers: Vec<(&'static str, &'static [&'static str], Pass)> = vec![
        (
            "namespace",
            &["namespaces", "serviceaccounts", "configmaps"],
            Box::new(move |s| namespaces(s, &ca)),
        ),
        ("scheduler", &["pods", "nodes"], Box::new(schedule)),
        (
            "replicaset",
            &["replicasets", "pods"],
            Box::new(replicasets),
        ),
        (
            "deployment",
            &["deployments", "replicasets", "pods"],
            Box::new(deployments),
        ),
        (
            "statefulset",
            &["statefulsets", "pods"],
            Box::new(statefulsets),
        ),
        (
            "endpointslice",
            &["services", "pods", "endpointslices", "endpoints"],
            Box::new(endpoints),
        ),
        ("job", &["jobs", "pods"], {
            let mut c = jobs::JobController::default();
            Box::new(move |s| c.pass(s))
        }),
        (
            "ttl-after-finished",
            &["jobs"],
            Box::new(jobs::ttl_after_finished),
        ),
        ("garbage-collector", &[], Box::new(garbage_collect)),
    ];
    for (name, interest, pass) in controllers {
        tokio::spawn(run_loop(
            store.clone(),
            name,
            interest,
            pass,
            shutdown.clone(),
        ));
    }
}

async fn run_loop(
    store: Arc<Store>,
    name: &'static str,
    interest: &'static [&'static str],
    mut pass: Box<dyn FnMut(&Store) + Send>,
    shutdown: CancellationToken,
) {
    let mut rx = store.subscribe();
    let relevant = |e: &Event| interest.is_empty() || interest.contains(&e.res.plural);
    pass(&store);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            ev = rx.recv() => match ev {
                Ok(e) if !relevant(&e) => continue,
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
        // Coalesce a burst of changes into one pass.
        while rx.try_recv().is_ok() {}
        let started = std::time::Instant::now();
        pass(&store);
        let took = started.elapsed();
        if took > Duration::from_millis(200) {
            tracing::warn!(
                controller = name,
                ms = took.as_millis() as u64,
                "slow controller pass"
            );
        }
    }
}
