//! The Endpoints and EndpointSlice controllers.

use std::collections::{BTreeMap, HashSet};

use serde_json::{Value, json};

use crate::meta;
use crate::selector::LabelSelector;
use crate::store::{DeleteOptions, Store};

use super::util::{is_deleting, log_err, pod_ready, pods, r, upsert, with_kind};

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

pub(super) fn endpoints(store: &Store) {
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
