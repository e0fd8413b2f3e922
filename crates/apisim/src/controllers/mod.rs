//! The controllers a cluster runs beside its API server, simulated over the store:
//! namespaces (default ServiceAccount, root CA ConfigMap, termination), scheduling,
//! ReplicaSets, Deployments, StatefulSets, Jobs (with the TTL-after-finished controller),
//! Endpoints and EndpointSlices, and garbage collection through owner references.
//!
//! Each controller is level-triggered: on any relevant change (and every few seconds) it
//! compares the whole desired state with the stored one and writes only differences. The
//! lab's object counts are small, so a full pass costs microseconds and can never miss an
//! edge.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::error::ApiResult;
use crate::meta;
use crate::resources::{self, ResourceInfo};
use crate::selector::LabelSelector;
use crate::store::{DeleteOptions, Event, Store, Sub};

mod gc;
mod jobs;

use gc::garbage_collect;

fn r(group: &str, plural: &str) -> &'static ResourceInfo {
    let version = "v1";
    resources::find(group, version, plural).expect("known resource")
}

fn pods() -> &'static ResourceInfo {
    r("", "pods")
}

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

/// Creates `obj` unless an object of that name exists.
fn ensure(store: &Store, res: &'static ResourceInfo, ns: &str, obj: Value) -> ApiResult<()> {
    match store.create(res, ns, obj, false) {
        Ok(_) => Ok(()),
        Err(e) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
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

fn log_err<T>(what: &str, r: ApiResult<T>) {
    if let Err(e) = r
        && e.code != 404
        && e.code != 409
    {
        tracing::warn!(error = %e.message, "{what}");
    }
}

fn is_deleting(o: &Value) -> bool {
    meta::metadata(o).get("deletionTimestamp").is_some()
}

fn pod_active(p: &Value) -> bool {
    let phase = meta::str_at(p, &["status", "phase"]);
    !is_deleting(p) && phase != "Succeeded" && phase != "Failed"
}

/// Whether a pod's `Ready` condition is true.
pub fn pod_ready(p: &Value) -> bool {
    p.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                meta::str_at(c, &["type"]) == "Ready" && meta::str_at(c, &["status"]) == "True"
            })
        })
}

fn owned_by<'a>(objs: &'a [Value], owner_uid: &str) -> Vec<&'a Value> {
    objs.iter()
        .filter(|o| meta::controller_of(o).is_some_and(|(_, _, uid)| uid == owner_uid))
        .collect()
}

// ---------------------------------------------------------------- namespaces

fn namespaces(store: &Store, ca_pem: &str) {
    let nsres = r("", "namespaces");
    for ns in store.list_all(nsres, None) {
        let name = meta::name(&ns).to_string();
        if is_deleting(&ns) {
            terminate_namespace(store, &ns);
            continue;
        }
        log_err(
            "create default service account",
            ensure(
                store,
                r("", "serviceaccounts"),
                &name,
                json!({"metadata": {"name": "default"}}),
            ),
        );
        log_err(
            "publish root CA",
            ensure(
                store,
                r("", "configmaps"),
                &name,
                json!({"metadata": {"name": "kube-root-ca.crt"}, "data": {"ca.crt": ca_pem}}),
            ),
        );
    }
}

fn terminate_namespace(store: &Store, ns: &Value) {
    let name = meta::name(ns);
    let mut remaining = 0;
    for res in resources::RESOURCES
        .iter()
        .filter(|r| r.namespaced && r.is_stored())
    {
        for o in store.list_all(res, Some(name)) {
            remaining += 1;
            if !is_deleting(&o) {
                log_err(
                    "delete namespace content",
                    store.delete(res, name, meta::name(&o), &DeleteOptions::background()),
                );
            }
        }
    }
    if remaining == 0 {
        let nsres = r("", "namespaces");
        log_err(
            "finalize namespace",
            store.modify(nsres, "", name, Sub::Finalize, |o| {
                meta::set_at(o, &["spec", "finalizers"], json!([]));
                Ok(())
            }),
        );
        log_err(
            "remove namespace",
            store.finish_deletion(nsres, "", name, meta::uid(ns)),
        );
    }
}

// ---------------------------------------------------------------- scheduler

fn node_ready(n: &Value) -> bool {
    n.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                meta::str_at(c, &["type"]) == "Ready" && meta::str_at(c, &["status"]) == "True"
            })
        })
        && !n
            .pointer("/spec/unschedulable")
            .and_then(Value::as_bool)
            .unwrap_or(false)
}

fn schedule(store: &Store) {
    let all_pods = store.list_all(pods(), None);
    let pending: Vec<&Value> = all_pods
        .iter()
        .filter(|p| meta::str_at(p, &["spec", "nodeName"]).is_empty() && !is_deleting(p))
        .collect();
    if pending.is_empty() {
        return;
    }
    let nodes: Vec<Value> = store
        .list_all(r("", "nodes"), None)
        .into_iter()
        .filter(node_ready)
        .collect();
    if nodes.is_empty() {
        return;
    }
    // Load per node and per (node, owner), updated as we place pods.
    let mut load: HashMap<String, usize> = HashMap::new();
    let mut owner_load: HashMap<(String, String), usize> = HashMap::new();
    for p in all_pods.iter().filter(|p| pod_active(p)) {
        let node = meta::str_at(p, &["spec", "nodeName"]).to_string();
        if node.is_empty() {
            continue;
        }
        *load.entry(node.clone()).or_default() += 1;
        if let Some((_, _, uid)) = meta::controller_of(p) {
            *owner_load.entry((node, uid.to_string())).or_default() += 1;
        }
    }
    for p in pending {
        let selector = p.pointer("/spec/nodeSelector").and_then(Value::as_object);
        let owner = meta::controller_of(p)
            .map(|(_, _, u)| u.to_string())
            .unwrap_or_default();
        let fits = |n: &&Value| {
            selector.is_none_or(|sel| {
                sel.iter().all(|(k, v)| {
                    n.pointer(&format!(
                        "/metadata/labels/{}",
                        k.replace('~', "~0").replace('/', "~1")
                    )) == Some(v)
                })
            })
        };
        let best = nodes.iter().filter(fits).min_by_key(|n| {
            let name = meta::name(n).to_string();
            (
                owner_load
                    .get(&(name.clone(), owner.clone()))
                    .copied()
                    .unwrap_or(0),
                load.get(&name).copied().unwrap_or(0),
                name,
            )
        });
        let Some(node) = best else {
            continue;
        };
        let node_name = meta::name(node).to_string();
        let res = store.modify(pods(), meta::namespace(p), meta::name(p), Sub::Main, |o| {
            if meta::str_at(o, &["spec", "nodeName"]).is_empty() {
                meta::set_at(o, &["spec", "nodeName"], json!(node_name));
            }
            Ok(())
        });
        if res.is_ok() {
            *load.entry(node_name.clone()).or_default() += 1;
            *owner_load.entry((node_name.clone(), owner)).or_default() += 1;
            let conds = json!([{"type": "PodScheduled", "status": "True", "lastTransitionTime": meta::now_rfc3339()}]);
            log_err(
                "mark pod scheduled",
                store.modify(
                    pods(),
                    meta::namespace(p),
                    meta::name(p),
                    Sub::Status,
                    |o| {
                        if o.pointer("/status/conditions").is_none() {
                            meta::set_at(o, &["status", "conditions"], conds);
                        }
                        Ok(())
                    },
                ),
            );
        }
        log_err("bind pod", res);
    }
}

// ---------------------------------------------------------------- replica sets

/// A pod object from a template, owned by `owner`.
fn pod_from_template(
    owner: &Value,
    template: &Value,
    name: &str,
    extra_labels: &[(&str, String)],
) -> Value {
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": template.get("metadata").cloned().unwrap_or(json!({})),
        "spec": template.get("spec").cloned().unwrap_or(json!({})),
    });
    meta::set_at(&mut pod, &["metadata", "name"], json!(name));
    meta::set_at(
        &mut pod,
        &["metadata", "ownerReferences"],
        json!([meta::controller_ref(owner)]),
    );
    if let Some(labels) = meta::obj_at_mut(&mut pod, &["metadata", "labels"]) {
        for (k, v) in extra_labels {
            labels.insert(k.to_string(), json!(v));
        }
    }
    pod
}

fn replicasets(store: &Store) {
    let rsres = r("apps", "replicasets");
    let all_pods = store.list_all(pods(), None);
    for rs in store.list_all(rsres, None) {
        if is_deleting(&rs) {
            continue;
        }
        let (ns, name, uid) = (meta::namespace(&rs), meta::name(&rs), meta::uid(&rs));
        let want = rs
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(1)
            .max(0) as usize;
        let mine = owned_by(&all_pods, uid);
        let active: Vec<&Value> = mine.iter().copied().filter(|p| pod_active(p)).collect();
        if active.len() < want {
            let template = rs.pointer("/spec/template").cloned().unwrap_or(json!({}));
            for _ in active.len()..want {
                let pod = pod_from_template(
                    &rs,
                    &template,
                    &format!("{name}-{}", meta::random_suffix(5)),
                    &[],
                );
                log_err("create pod", store.create(pods(), ns, pod, false));
            }
        } else if active.len() > want {
            let mut victims = active.clone();
            // Unscheduled first, then not ready, then the newest.
            victims.sort_by_key(|p| {
                (
                    !meta::str_at(p, &["spec", "nodeName"]).is_empty(),
                    pod_ready(p),
                    std::cmp::Reverse(
                        meta::str_at(p, &["metadata", "creationTimestamp"]).to_string(),
                    ),
                )
            });
            for p in victims.into_iter().take(active.len() - want) {
                log_err(
                    "delete surplus pod",
                    store.delete(pods(), ns, meta::name(p), &DeleteOptions::default()),
                );
            }
        }
        let ready = active.iter().filter(|p| pod_ready(p)).count();
        let status = json!({
            "replicas": active.len(),
            "fullyLabeledReplicas": active.len(),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "observedGeneration": rs.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
        });
        log_err(
            "update replicaset status",
            store.modify(rsres, ns, name, Sub::Status, |o| {
                o["status"] = status;
                Ok(())
            }),
        );
    }
}

// ---------------------------------------------------------------- deployments

fn deployments(store: &Store) {
    let dres = r("apps", "deployments");
    let rsres = r("apps", "replicasets");
    let all_rs = store.list_all(rsres, None);
    let all_pods = store.list_all(pods(), None);
    for d in store.list_all(dres, None) {
        if is_deleting(&d) {
            continue;
        }
        let (ns, name, uid) = (meta::namespace(&d), meta::name(&d), meta::uid(&d));
        let want = d
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(1)
            .max(0);
        let template = d.pointer("/spec/template").cloned().unwrap_or(json!({}));
        let hash = meta::short_hash(&template);
        let hash = &hash[..10];
        let rs_name = format!("{name}-{hash}");
        let owned = owned_by(&all_rs, uid);
        let recreate = meta::str_at(&d, &["spec", "strategy", "type"]) == "Recreate";
        let paused = d
            .pointer("/spec/paused")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let new_rs = owned.iter().find(|rs| meta::name(rs) == rs_name).copied();
        let old: Vec<&Value> = owned
            .iter()
            .copied()
            .filter(|rs| meta::name(rs) != rs_name)
            .collect();
        let revision = owned
            .iter()
            .filter_map(|rs| {
                meta::str_at(
                    rs,
                    &[
                        "metadata",
                        "annotations",
                        "deployment.kubernetes.io/revision",
                    ],
                )
                .parse::<i64>()
                .ok()
            })
            .max()
            .unwrap_or(0);
        let old_pods_alive = old
            .iter()
            .map(|rs| owned_by(&all_pods, meta::uid(rs)).len())
            .sum::<usize>();
        if !paused {
            match new_rs {
                None if !recreate || old_pods_alive == 0 => {
                    let mut t = template.clone();
                    if let Some(l) = meta::obj_at_mut(&mut t, &["metadata", "labels"]) {
                        l.insert("pod-template-hash".into(), json!(hash));
                    }
                    let mut selector = d.pointer("/spec/selector").cloned().unwrap_or(json!({}));
                    meta::set_at(
                        &mut selector,
                        &["matchLabels", "pod-template-hash"],
                        json!(hash),
                    );
                    let mut labels = template
                        .pointer("/metadata/labels")
                        .cloned()
                        .unwrap_or(json!({}));
                    meta::set_at(&mut labels, &["pod-template-hash"], json!(hash));
                    let rs = json!({
                        "apiVersion": "apps/v1",
                        "kind": "ReplicaSet",
                        "metadata": {
                            "name": rs_name,
                            "labels": labels,
                            "annotations": {"deployment.kubernetes.io/revision": (revision + 1).to_string(), "deployment.kubernetes.io/desired-replicas": want.to_string()},
                            "ownerReferences": [meta::controller_ref(&d)],
                        },
                        "spec": {"replicas": want, "selector": selector, "template": t},
                    });
                    log_err("create replicaset", store.create(rsres, ns, rs, false));
                }
                Some(rs) if rs.pointer("/spec/replicas").and_then(Value::as_i64) != Some(want) => {
                    log_err(
                        "scale replicaset",
                        store.modify(rsres, ns, meta::name(rs), Sub::Main, |o| {
                            meta::set_at(o, &["spec", "replicas"], json!(want));
                            Ok(())
                        }),
                    );
                }
                _ => {}
            }
            // Old replica sets go to zero when the new one is fully available (rolling), or
            // at once (recreate).
            let new_available = new_rs
                .and_then(|rs| {
                    rs.pointer("/status/availableReplicas")
                        .and_then(Value::as_i64)
                })
                .unwrap_or(0);
            if recreate || new_available >= want {
                for rs in &old {
                    if rs.pointer("/spec/replicas").and_then(Value::as_i64) != Some(0) {
                        log_err(
                            "scale down old replicaset",
                            store.modify(rsres, ns, meta::name(rs), Sub::Main, |o| {
                                meta::set_at(o, &["spec", "replicas"], json!(0));
                                Ok(())
                            }),
                        );
                    }
                }
            }
            // History limit: delete the oldest empty replica sets beyond it.
            let limit = d
                .pointer("/spec/revisionHistoryLimit")
                .and_then(Value::as_i64)
                .unwrap_or(10)
                .max(0) as usize;
            let mut empty: Vec<&&Value> = old
                .iter()
                .filter(|rs| {
                    rs.pointer("/spec/replicas").and_then(Value::as_i64) == Some(0)
                        && rs
                            .pointer("/status/replicas")
                            .and_then(Value::as_i64)
                            .unwrap_or(0)
                            == 0
                })
                .collect();
            if empty.len() > limit {
                empty.sort_by_key(|rs| {
                    meta::str_at(
                        rs,
                        &[
                            "metadata",
                            "annotations",
                            "deployment.kubernetes.io/revision",
                        ],
                    )
                    .parse::<i64>()
                    .unwrap_or(0)
                });
                for rs in empty.iter().take(empty.len() - limit) {
                    log_err(
                        "delete old replicaset",
                        store.delete(rsres, ns, meta::name(rs), &DeleteOptions::default()),
                    );
                }
            }
        }
        // Status from all owned replica sets.
        let sum = |path: &str| {
            owned
                .iter()
                .filter_map(|rs| rs.pointer(path).and_then(Value::as_i64))
                .sum::<i64>()
        };
        let replicas = sum("/status/replicas");
        let ready = sum("/status/readyReplicas");
        let available = sum("/status/availableReplicas");
        let updated = new_rs
            .and_then(|rs| rs.pointer("/status/replicas").and_then(Value::as_i64))
            .unwrap_or(0);
        let now = meta::now_rfc3339();
        let avail_cond = if available >= want {
            json!({"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable", "message": "Deployment has minimum availability."})
        } else {
            json!({"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable", "message": "Deployment does not have minimum availability."})
        };
        let complete = new_rs.is_some() && updated == want && available >= want && replicas == want;
        let prog_cond = if complete {
            json!({"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable", "message": format!("ReplicaSet \"{rs_name}\" has successfully progressed.")})
        } else {
            json!({"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated", "message": format!("ReplicaSet \"{rs_name}\" is progressing.")})
        };
        let generation = d
            .pointer("/metadata/generation")
            .cloned()
            .unwrap_or(json!(1));
        log_err(
            "update deployment status",
            store.modify(dres, ns, name, Sub::Status, |o| {
                let conds = merge_conditions(
                    o.pointer("/status/conditions"),
                    &[avail_cond, prog_cond],
                    &now,
                );
                o["status"] = json!({
                    "observedGeneration": generation,
                    "replicas": replicas,
                    "updatedReplicas": updated,
                    "readyReplicas": ready,
                    "availableReplicas": available,
                    "unavailableReplicas": (want - available).max(0),
                    "conditions": conds,
                });
                Ok(())
            }),
        );
    }
}

/// Keeps `lastTransitionTime` of conditions whose status did not change.
fn merge_conditions(old: Option<&Value>, new: &[Value], now: &str) -> Value {
    let old = old.and_then(Value::as_array).cloned().unwrap_or_default();
    let out: Vec<Value> = new
        .iter()
        .map(|c| {
            let mut c = c.clone();
            let prev = old.iter().find(|o| o.get("type") == c.get("type"));
            let (lt, lu) = match prev {
                Some(p)
                    if p.get("status") == c.get("status") && p.get("reason") == c.get("reason") =>
                {
                    (
                        p.get("lastTransitionTime").cloned().unwrap_or(json!(now)),
                        p.get("lastUpdateTime").cloned().unwrap_or(json!(now)),
                    )
                }
                Some(p) if p.get("status") == c.get("status") => (
                    p.get("lastTransitionTime").cloned().unwrap_or(json!(now)),
                    json!(now),
                ),
                _ => (json!(now), json!(now)),
            };
            c["lastTransitionTime"] = lt;
            c["lastUpdateTime"] = lu;
            c
        })
        .collect();
    Value::Array(out)
}

// ---------------------------------------------------------------- stateful sets

fn statefulsets(store: &Store) {
    let sres = r("apps", "statefulsets");
    let all_pods = store.list_all(pods(), None);
    for s in store.list_all(sres, None) {
        if is_deleting(&s) {
            continue;
        }
        let (ns, name, uid) = (meta::namespace(&s), meta::name(&s), meta::uid(&s));
        let want = s
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(1)
            .max(0) as usize;
        let template = s.pointer("/spec/template").cloned().unwrap_or(json!({}));
        let revision = format!("{name}-{}", &meta::short_hash(&template)[..10]);
        let service = meta::str_at(&s, &["spec", "serviceName"]).to_string();
        let parallel = meta::str_at(&s, &["spec", "podManagementPolicy"]) == "Parallel";
        let by_name: HashMap<&str, &Value> = all_pods
            .iter()
            .filter(|p| meta::namespace(p) == ns)
            .map(|p| (meta::name(p), p))
            .collect();
        let mine = owned_by(&all_pods, uid);
        // Create missing ordinals in order; with OrderedReady, only when every lower
        // ordinal is running and ready.
        for i in 0..want {
            let pname = format!("{name}-{i}");
            match by_name.get(pname.as_str()) {
                Some(p) if meta::controller_of(p).is_some_and(|(_, _, u)| u == uid) => {
                    let phase = meta::str_at(p, &["status", "phase"]);
                    if (phase == "Failed" || phase == "Succeeded") && !is_deleting(p) {
                        log_err(
                            "replace failed pod",
                            store.delete(pods(), ns, &pname, &DeleteOptions::default()),
                        );
                    }
                    if !parallel && (!pod_ready(p) || is_deleting(p)) {
                        break;
                    }
                }
                Some(_) => break, // a pod of that name that is not ours (or still terminating)
                None => {
                    let mut t = template.clone();
                    meta::set_at(&mut t, &["spec", "hostname"], json!(pname));
                    if !service.is_empty() {
                        meta::set_at(&mut t, &["spec", "subdomain"], json!(service));
                    }
                    let pod = pod_from_template(
                        &s,
                        &t,
                        &pname,
                        &[
                            ("statefulset.kubernetes.io/pod-name", pname.clone()),
                            ("apps.kubernetes.io/pod-index", i.to_string()),
                            ("controller-revision-hash", revision.clone()),
                        ],
                    );
                    log_err("create stateful pod", store.create(pods(), ns, pod, false));
                    if !parallel {
                        break;
                    }
                }
            }
        }
        // Scale down from the highest ordinal, one at a time unless parallel.
        let mut extra: Vec<(usize, &Value)> = mine
            .iter()
            .filter_map(|p| {
                let ord = meta::name(p).rsplit_once('-')?.1.parse::<usize>().ok()?;
                (ord >= want).then_some((ord, *p))
            })
            .collect();
        extra.sort_by_key(|(o, _)| std::cmp::Reverse(*o));
        for (_, p) in extra.iter().take(if parallel { usize::MAX } else { 1 }) {
            if !is_deleting(p) {
                log_err(
                    "scale down stateful pod",
                    store.delete(pods(), ns, meta::name(p), &DeleteOptions::default()),
                );
            }
        }
        // Rolling update: when all wanted pods are ready, replace the highest outdated one.
        let current: Vec<&&Value> = mine.iter().filter(|p| pod_active(p)).collect();
        let all_ready = current.len() >= want && current.iter().all(|p| pod_ready(p));
        let on_delete = meta::str_at(&s, &["spec", "updateStrategy", "type"]) == "OnDelete";
        if all_ready && !on_delete {
            let outdated = current
                .iter()
                .filter(|p| {
                    meta::str_at(p, &["metadata", "labels", "controller-revision-hash"]) != revision
                })
                .max_by_key(|p| {
                    meta::name(p)
                        .rsplit_once('-')
                        .and_then(|(_, o)| o.parse::<usize>().ok())
                        .unwrap_or(0)
                });
            if let Some(p) = outdated {
                log_err(
                    "update stateful pod",
                    store.delete(pods(), ns, meta::name(p), &DeleteOptions::default()),
                );
            }
        }
        let ready = current.iter().filter(|p| pod_ready(p)).count();
        let updated = current
            .iter()
            .filter(|p| {
                meta::str_at(p, &["metadata", "labels", "controller-revision-hash"]) == revision
            })
            .count();
        let generation = s
            .pointer("/metadata/generation")
            .cloned()
            .unwrap_or(json!(1));
        let status = json!({
            "observedGeneration": generation,
            "replicas": current.len(),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "currentReplicas": updated,
            "updatedReplicas": updated,
            "currentRevision": revision,
            "updateRevision": revision,
            "collisionCount": 0,
        });
        log_err(
            "update statefulset status",
            store.modify(sres, ns, name, Sub::Status, |o| {
                o["status"] = status;
                Ok(())
            }),
        );
    }
}

// ---------------------------------------------------------------- endpoints

/// The port number a Service port targets on a pod, resolving named target ports.
fn resolve_target_port(svc_port: &Value, pod: &Value) -> Option<i64> {
    match svc_port.get("targetPort") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => {
            if let Ok(n) = s.parse::<i64>() {
                return Some(n);
            }
            pod.pointer("/spec/containers")?
                .as_array()?
                .iter()
                .flat_map(|c| {
                    c.get("ports")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default()
                })
                .find(|p| meta::str_at(p, &["name"]) == s)
                .and_then(|p| p.get("containerPort").and_then(Value::as_i64))
        }
        _ => svc_port.get("port").and_then(Value::as_i64),
    }
}

fn endpoints(store: &Store) {
    let svcres = r("", "services");
    let epres = r("", "endpoints");
    let slres = r("discovery.k8s.io", "endpointslices");
    let all_pods = store.list_all(pods(), None);
    let services = store.list_all(svcres, None);
    let mut wanted_slices: HashSet<(String, String)> = HashSet::new();
    let mut wanted_eps: HashSet<(String, String)> = HashSet::new();
    // Services whose existing slices and Endpoints are left as they are: those being
    // deleted (garbage collection removes their slices; none are built for them) and those
    // without a selector (upstream stops managing them and leaves what is there, which a
    // client may then edit; adding a selector back resumes management).
    let mut left_alone: HashSet<(String, String)> = HashSet::new();
    for svc in &services {
        let ns = meta::namespace(svc);
        let name = meta::name(svc);
        let Some(sel_json) = svc
            .pointer("/spec/selector")
            .filter(|s| s.as_object().is_some_and(|m| !m.is_empty()))
            .filter(|_| !is_deleting(svc))
        else {
            left_alone.insert((ns.to_string(), name.to_string()));
            continue;
        };
        if meta::str_at(svc, &["spec", "type"]) == "ExternalName" {
            continue;
        }
        let Ok(selector) = LabelSelector::from_json(&json!({"matchLabels": sel_json})) else {
            continue;
        };
        let publish_not_ready = svc
            .pointer("/spec/publishNotReadyAddresses")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let svc_ports = svc
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        // Group endpoints by their resolved port list.
        let mut groups: BTreeMap<String, (Vec<Value>, Vec<Value>)> = BTreeMap::new();
        let mut ep_ready: Vec<Value> = Vec::new();
        let mut ep_not_ready: Vec<Value> = Vec::new();
        let mut ep_ports: Option<Vec<Value>> = None;
        let mut members: Vec<&Value> = all_pods
            .iter()
            .filter(|p| meta::namespace(p) == ns && selector.matches_object(p))
            .filter(|p| !meta::str_at(p, &["status", "podIP"]).is_empty())
            .filter(|p| {
                let phase = meta::str_at(p, &["status", "phase"]);
                phase != "Succeeded" && phase != "Failed"
            })
            .collect();
        members.sort_by_key(|p| meta::name(p).to_string());
        for p in members {
            let ports: Vec<Value> = svc_ports
                .iter()
                .filter_map(|sp| {
                    Some(json!({
                        "name": meta::str_at(sp, &["name"]),
                        "port": resolve_target_port(sp, p)?,
                        "protocol": meta::str_at(sp, &["protocol"]),
                    }))
                })
                .collect();
            let terminating = is_deleting(p);
            let ready = pod_ready(p) && !terminating;
            let ip = meta::str_at(p, &["status", "podIP"]);
            let node = meta::str_at(p, &["spec", "nodeName"]);
            let target =
                json!({"kind": "Pod", "namespace": ns, "name": meta::name(p), "uid": meta::uid(p)});
            let mut ep = json!({
                "addresses": [ip],
                "conditions": {"ready": ready || (publish_not_ready && !terminating), "serving": pod_ready(p), "terminating": terminating},
                "targetRef": target,
                "nodeName": node,
            });
            let hostname = meta::str_at(p, &["spec", "hostname"]);
            if !hostname.is_empty() && meta::str_at(p, &["spec", "subdomain"]) == name {
                ep["hostname"] = json!(hostname);
            }
            let key = Value::Array(ports.clone()).to_string();
            let g = groups
                .entry(key)
                .or_insert_with(|| (ports.clone(), Vec::new()));
            g.1.push(ep);
            // v1 Endpoints (legacy): one subset is enough for the lab's Services.
            if ep_ports.is_none() {
                ep_ports = Some(ports.clone());
            }
            if ep_ports.as_ref() == Some(&ports) && !terminating {
                let mut a = json!({"ip": ip, "nodeName": node, "targetRef": target});
                if !hostname.is_empty() && meta::str_at(p, &["spec", "subdomain"]) == name {
                    a["hostname"] = json!(hostname);
                }
                if ready || publish_not_ready {
                    ep_ready.push(a);
                } else {
                    ep_not_ready.push(a);
                }
            }
        }
        if groups.is_empty() {
            // A slice with no endpoints still tells watchers the Service has none.
            let ports: Vec<Value> = svc_ports
                .iter()
                .filter_map(|sp| match sp.get("targetPort") {
                    Some(Value::Number(n)) => Some(json!({"name": meta::str_at(sp, &["name"]), "port": n, "protocol": meta::str_at(sp, &["protocol"])})),
                    _ => None,
                })
                .collect();
            groups.insert(String::new(), (ports, Vec::new()));
        }
        for (key, (ports, eps)) in &groups {
            let slice_name = format!("{name}-{}", &meta::short_hash(&json!(key))[..5]);
            wanted_slices.insert((ns.to_string(), slice_name.clone()));
            let desired = json!({
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": slice_name,
                    "labels": {"kubernetes.io/service-name": name, "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
                    "ownerReferences": [meta::controller_ref(&with_kind(svc, "v1", "Service"))],
                },
                "addressType": "IPv4",
                "endpoints": eps,
                "ports": ports,
            });
            upsert(
                store,
                slres,
                ns,
                &slice_name,
                desired,
                &["endpoints", "ports", "addressType"],
            );
        }
        wanted_eps.insert((ns.to_string(), name.to_string()));
        let mut subset = json!({"ports": ep_ports.clone().unwrap_or_default()});
        if !ep_ready.is_empty() {
            subset["addresses"] = json!(ep_ready);
        }
        if !ep_not_ready.is_empty() {
            subset["notReadyAddresses"] = json!(ep_not_ready);
        }
        let subsets = if ep_ready.is_empty() && ep_not_ready.is_empty() {
            json!([])
        } else {
            json!([subset])
        };
        let desired = json!({
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": name, "labels": {"endpoints.kubernetes.io/managed-by": "endpoint-controller"}},
            "subsets": subsets,
        });
        upsert(store, epres, ns, name, desired, &["subsets"]);
    }
    // Remove what no Service wants any more (only objects this controller manages).
    for s in store.list_all(slres, None) {
        let managed = meta::str_at(
            &s,
            &[
                "metadata",
                "labels",
                "endpointslice.kubernetes.io/managed-by",
            ],
        ) == "endpointslice-controller.k8s.io";
        let service = (
            meta::namespace(&s).to_string(),
            meta::str_at(&s, &["metadata", "labels", "kubernetes.io/service-name"]).to_string(),
        );
        if managed
            && !left_alone.contains(&service)
            && !wanted_slices
                .contains(&(meta::namespace(&s).to_string(), meta::name(&s).to_string()))
        {
            log_err(
                "delete stale endpointslice",
                store.delete(
                    slres,
                    meta::namespace(&s),
                    meta::name(&s),
                    &DeleteOptions::default(),
                ),
            );
        }
    }
    for e in store.list_all(epres, None) {
        let managed = meta::str_at(
            &e,
            &["metadata", "labels", "endpoints.kubernetes.io/managed-by"],
        ) == "endpoint-controller";
        let key = (meta::namespace(&e).to_string(), meta::name(&e).to_string());
        if managed && !left_alone.contains(&key) && !wanted_eps.contains(&key) {
            log_err(
                "delete stale endpoints",
                store.delete(
                    epres,
                    meta::namespace(&e),
                    meta::name(&e),
                    &DeleteOptions::default(),
                ),
            );
        }
    }
}

fn with_kind(obj: &Value, api_version: &str, kind: &str) -> Value {
    let mut o = obj.clone();
    o["apiVersion"] = json!(api_version);
    o["kind"] = json!(kind);
    o
}

/// Creates `desired`, or brings the listed top-level fields (and labels/owners) of the
/// stored object in line with it.
fn upsert(
    store: &Store,
    res: &'static ResourceInfo,
    ns: &str,
    name: &str,
    desired: Value,
    fields: &[&str],
) {
    match store.get(res, ns, name) {
        Err(_) => log_err("create", store.create(res, ns, desired, false)),
        Ok(_) => log_err(
            "update",
            store.modify(res, ns, name, Sub::Main, |o| {
                for f in fields {
                    o[*f] = desired.get(*f).cloned().unwrap_or(Value::Null);
                }
                for f in ["labels", "ownerReferences"] {
                    if let Some(v) = desired.pointer(&format!("/metadata/{f}")) {
                        meta::set_at(o, &["metadata", f], v.clone());
                    }
                }
                Ok(())
            }),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ClusterConfig;

    pub(super) fn setup() -> Arc<Store> {
        let s = Store::new(ClusterConfig {
            service_cidr: "172.17.16.0/20".parse().unwrap(),
            node_port_range: (30000, 32767),
            cluster_domain: "cluster.local".into(),
        });
        bootstrap(
            &s,
            &ControllerConfig {
                ca_pem: "PEM".into(),
                api_endpoint: ("10.4.7.11".parse().unwrap(), 6443),
            },
        )
        .unwrap();
        for n in ["node1", "node2"] {
            s.create(
                r("", "nodes"),
                "",
                json!({"metadata": {"name": n, "labels": {"kubernetes.io/hostname": n}}}),
                false,
            )
            .unwrap();
            s.modify(r("", "nodes"), "", n, Sub::Status, |o| {
                o["status"] = json!({"conditions": [{"type": "Ready", "status": "True"}]});
                Ok(())
            })
            .unwrap();
        }
        s
    }

    /// Stands in for kubelets: every bound pod becomes Running and Ready with an IP.
    pub(super) fn kubelet(s: &Store) {
        for (i, p) in s.list_all(pods(), None).iter().enumerate() {
            if meta::str_at(p, &["spec", "nodeName"]).is_empty() || is_deleting(p) {
                if is_deleting(p) {
                    s.finish_deletion(pods(), meta::namespace(p), meta::name(p), meta::uid(p))
                        .unwrap();
                }
                continue;
            }
            s.modify(pods(), meta::namespace(p), meta::name(p), Sub::Status, |o| {
                if o.pointer("/status/podIP").is_none() {
                    o["status"] = json!({"phase": "Running", "podIP": format!("172.17.32.{}", 10 + i),
                        "conditions": [{"type": "Ready", "status": "True"}]});
                }
                Ok(())
            })
            .unwrap();
        }
    }

    fn settle(s: &Store) {
        for _ in 0..12 {
            schedule(s);
            replicasets(s);
            deployments(s);
            statefulsets(s);
            kubelet(s);
            endpoints(s);
            garbage_collect(s);
            namespaces(s, "PEM");
        }
    }

    fn deployment(name: &str, replicas: i64) -> Value {
        json!({"metadata": {"name": name}, "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"name": "http", "containerPort": 8080}]}]}}}})
    }

    #[test]
    fn bootstrap_objects() {
        let s = setup();
        let k = s.get(r("", "services"), "default", "kubernetes").unwrap();
        assert_eq!(k["spec"]["clusterIP"], "172.17.16.1");
        assert!(
            s.get(r("networking.k8s.io", "servicecidrs"), "", "kubernetes")
                .is_ok()
        );
        namespaces(&s, "PEM");
        assert!(
            s.get(r("", "serviceaccounts"), "kube-system", "default")
                .is_ok()
        );
        assert_eq!(
            s.get(r("", "configmaps"), "default", "kube-root-ca.crt")
                .unwrap()["data"]["ca.crt"],
            "PEM"
        );
    }

    #[test]
    fn deployment_to_pods_spread_and_endpoints() {
        let s = setup();
        s.create(
            r("apps", "deployments"),
            "default",
            deployment("web", 2),
            false,
        )
        .unwrap();
        s.create(r("", "services"), "default", json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]}}), false).unwrap();
        settle(&s);
        let ps = s.list_all(pods(), Some("default"));
        assert_eq!(ps.len(), 2);
        let nodes: HashSet<&str> = ps
            .iter()
            .map(|p| meta::str_at(p, &["spec", "nodeName"]))
            .collect();
        assert_eq!(nodes.len(), 2, "replicas spread over both nodes");
        let d = s.get(r("apps", "deployments"), "default", "web").unwrap();
        assert_eq!(d["status"]["availableReplicas"], 2);
        let slices = s.list_all(r("discovery.k8s.io", "endpointslices"), Some("default"));
        let web: Vec<&Value> = slices
            .iter()
            .filter(|x| {
                meta::str_at(x, &["metadata", "labels", "kubernetes.io/service-name"]) == "web"
            })
            .collect();
        assert_eq!(web.len(), 1);
        assert_eq!(web[0]["ports"][0]["port"], 8080);
        assert_eq!(web[0]["endpoints"].as_array().unwrap().len(), 2);
        // Delete one pod: a replacement appears and endpoints follow.
        let victim = meta::name(&ps[0]).to_string();
        s.delete(pods(), "default", &victim, &DeleteOptions::default())
            .unwrap();
        settle(&s);
        let ps2 = s.list_all(pods(), Some("default"));
        assert_eq!(ps2.len(), 2);
        assert!(ps2.iter().all(|p| meta::name(p) != victim));
        // Template change rolls to a new replica set.
        s.modify(r("apps", "deployments"), "default", "web", Sub::Main, |o| {
            o["spec"]["template"]["spec"]["containers"][0]["image"] = json!("i2");
            Ok(())
        })
        .unwrap();
        settle(&s);
        let ps3 = s.list_all(pods(), Some("default"));
        assert_eq!(ps3.len(), 2);
        assert!(
            ps3.iter()
                .all(|p| p["spec"]["containers"][0]["image"] == "i2")
        );
        // Deleting the deployment collects replica sets and pods.
        s.delete(
            r("apps", "deployments"),
            "default",
            "web",
            &DeleteOptions::default(),
        )
        .unwrap();
        settle(&s);
        assert!(s.list_all(pods(), Some("default")).is_empty());
        assert!(
            s.list_all(r("apps", "replicasets"), Some("default"))
                .is_empty()
        );
    }

    fn slices_of(s: &Store, svc: &str) -> Vec<Value> {
        s.list_all(r("discovery.k8s.io", "endpointslices"), Some("default"))
            .into_iter()
            .filter(|x| {
                meta::str_at(x, &["metadata", "labels", "kubernetes.io/service-name"]) == svc
            })
            .collect()
    }

    #[test]
    fn slices_stay_when_the_selector_goes_and_follow_it_back() {
        let s = setup();
        s.create(
            r("apps", "deployments"),
            "default",
            deployment("web", 1),
            false,
        )
        .unwrap();
        s.create(r("", "services"), "default", json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}), false).unwrap();
        settle(&s);
        let before = slices_of(&s, "web");
        assert_eq!(before.len(), 1);
        assert_eq!(before[0]["endpoints"].as_array().unwrap().len(), 1);
        // Selector removed: the slice (with its endpoint) and the Endpoints stay.
        s.modify(r("", "services"), "default", "web", Sub::Main, |o| {
            o["spec"].as_object_mut().unwrap().remove("selector");
            Ok(())
        })
        .unwrap();
        settle(&s);
        let during = slices_of(&s, "web");
        assert_eq!(during.len(), 1);
        assert_eq!(during[0]["endpoints"], before[0]["endpoints"]);
        assert!(s.get(r("", "endpoints"), "default", "web").is_ok());
        // A client may now write the slice's endpoints itself; the controller leaves them.
        let name = meta::name(&during[0]).to_string();
        s.modify(
            r("discovery.k8s.io", "endpointslices"),
            "default",
            &name,
            Sub::Main,
            |o| {
                o["endpoints"] = json!([]);
                Ok(())
            },
        )
        .unwrap();
        settle(&s);
        assert_eq!(slices_of(&s, "web")[0]["endpoints"], json!([]));
        // Selector back: managed again.
        s.modify(r("", "services"), "default", "web", Sub::Main, |o| {
            o["spec"]["selector"] = json!({"app": "web"});
            Ok(())
        })
        .unwrap();
        settle(&s);
        let after = slices_of(&s, "web");
        assert_eq!(after.len(), 1);
        assert_eq!(after[0]["endpoints"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn no_slices_are_built_for_a_service_being_deleted() {
        let s = setup();
        let mut svc = json!({"metadata": {"name": "gone", "finalizers": ["example.com/hold"]},
            "spec": {"selector": {"app": "gone"}, "ports": [{"port": 80}]}});
        s.create(r("", "services"), "default", svc.clone(), false)
            .unwrap();
        s.delete(
            r("", "services"),
            "default",
            "gone",
            &DeleteOptions::default(),
        )
        .unwrap();
        settle(&s);
        assert!(slices_of(&s, "gone").is_empty());
        svc["metadata"]["name"] = json!("kept");
        s.create(r("", "services"), "default", svc, false).unwrap();
        settle(&s);
        assert_eq!(slices_of(&s, "kept").len(), 1);
    }

    #[test]
    fn statefulset_ordinals_and_hostnames() {
        let s = setup();
        s.create(r("", "services"), "default", json!({"metadata": {"name": "db"}, "spec": {"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"port": 5432}]}}), false).unwrap();
        let mut sts = deployment("db", 3);
        sts["spec"]["serviceName"] = json!("db");
        s.create(r("apps", "statefulsets"), "default", sts, false)
            .unwrap();
        settle(&s);
        let mut names: Vec<String> = s
            .list_all(pods(), Some("default"))
            .iter()
            .map(|p| meta::name(p).to_string())
            .collect();
        names.sort();
        assert_eq!(names, ["db-0", "db-1", "db-2"]);
        let p = s.get(pods(), "default", "db-1").unwrap();
        assert_eq!(p["spec"]["hostname"], "db-1");
        assert_eq!(p["spec"]["subdomain"], "db");
        let slices = s.list_all(r("discovery.k8s.io", "endpointslices"), Some("default"));
        let db = slices
            .iter()
            .find(|x| {
                meta::str_at(x, &["metadata", "labels", "kubernetes.io/service-name"]) == "db"
            })
            .unwrap();
        let hosts: HashSet<&str> = db["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["hostname"].as_str().unwrap())
            .collect();
        assert_eq!(hosts, HashSet::from(["db-0", "db-1", "db-2"]));
    }

    #[test]
    fn namespace_termination_removes_content() {
        let s = setup();
        s.create(
            r("", "namespaces"),
            "",
            json!({"metadata": {"name": "tmp"}}),
            false,
        )
        .unwrap();
        s.create(
            r("", "configmaps"),
            "tmp",
            json!({"metadata": {"name": "c"}}),
            false,
        )
        .unwrap();
        s.create(r("apps", "deployments"), "tmp", deployment("w", 1), false)
            .unwrap();
        settle(&s);
        s.delete(r("", "namespaces"), "", "tmp", &DeleteOptions::default())
            .unwrap();
        let e = s
            .create(
                r("", "configmaps"),
                "tmp",
                json!({"metadata": {"name": "d"}}),
                false,
            )
            .unwrap_err();
        assert_eq!(e.code, 403);
        settle(&s);
        assert_eq!(s.get(r("", "namespaces"), "", "tmp").unwrap_err().code, 404);
        assert!(s.list_all(pods(), Some("tmp")).is_empty());
    }

    #[test]
    fn orphan_and_foreground_propagation() {
        let s = setup();
        s.create(
            r("apps", "deployments"),
            "default",
            deployment("o", 1),
            false,
        )
        .unwrap();
        settle(&s);
        let opts = DeleteOptions {
            propagation_policy: Some("Orphan".into()),
            ..DeleteOptions::default()
        };
        s.delete(r("apps", "deployments"), "default", "o", &opts)
            .unwrap();
        settle(&s);
        assert_eq!(
            s.list_all(r("apps", "replicasets"), Some("default")).len(),
            1,
            "replica set kept"
        );
        assert_eq!(s.list_all(pods(), Some("default")).len(), 1);
        s.create(
            r("apps", "deployments"),
            "default",
            deployment("f", 1),
            false,
        )
        .unwrap();
        settle(&s);
        let opts = DeleteOptions {
            propagation_policy: Some("Foreground".into()),
            ..DeleteOptions::default()
        };
        s.delete(r("apps", "deployments"), "default", "f", &opts)
            .unwrap();
        settle(&s);
        assert_eq!(
            s.get(r("apps", "deployments"), "default", "f")
                .unwrap_err()
                .code,
            404
        );
    }
}
