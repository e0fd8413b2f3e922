//! The StatefulSet controller.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::meta;
use crate::store::{DeleteOptions, Store, Sub};

use super::util::{
    is_deleting, log_err, owned_by, pod_active, pod_from_template, pod_ready, pods, r,
};

// ---------------------------------------------------------------- stateful sets

pub(super) fn statefulsets(store: &Store) {
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
