//! The ReplicaSet controller.

use serde_json::{Value, json};

use crate::meta;
use crate::store::{DeleteOptions, Store, Sub};

use super::util::{
    is_deleting, log_err, owned_by, pod_active, pod_from_template, pod_ready, pods, r,
};

// ---------------------------------------------------------------- replica sets

pub(super) fn replicasets(store: &Store) {
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
