//! The Deployment controller.

use serde_json::{Value, json};

use crate::meta;
use crate::store::{DeleteOptions, Store, Sub};

use super::util::{is_deleting, log_err, owned_by, pods, r};

// ---------------------------------------------------------------- deployments

pub(super) fn deployments(store: &Store) {
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
