//! The scheduler.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::meta;
use crate::store::{Store, Sub};

use super::util::{is_deleting, log_err, pod_active, pods, r};

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

pub(super) fn schedule(store: &Store) {
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
