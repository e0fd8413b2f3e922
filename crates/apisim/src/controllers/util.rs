//! Helpers every controller shares.

use serde_json::{Value, json};

use crate::error::ApiResult;
use crate::resources::ResourceInfo;
use crate::store::{Store, Sub};
use crate::{meta, resources};

pub(super) fn r(group: &str, plural: &str) -> &'static ResourceInfo {
    let version = "v1";
    resources::find(group, version, plural).expect("known resource")
}

pub(super) fn pods() -> &'static ResourceInfo {
    r("", "pods")
}

/// Creates `obj` unless an object of that name exists.
pub(super) fn ensure(
    store: &Store,
    res: &'static ResourceInfo,
    ns: &str,
    obj: Value,
) -> ApiResult<()> {
    match store.create(res, ns, obj, false) {
        Ok(_) => Ok(()),
        Err(e) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

pub(super) fn log_err<T>(what: &str, r: ApiResult<T>) {
    if let Err(e) = r
        && e.code != 404
        && e.code != 409
    {
        tracing::warn!(error = %e.message, "{what}");
    }
}

pub(super) fn is_deleting(o: &Value) -> bool {
    meta::metadata(o).get("deletionTimestamp").is_some()
}

pub(super) fn pod_active(p: &Value) -> bool {
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

pub(super) fn owned_by<'a>(objs: &'a [Value], owner_uid: &str) -> Vec<&'a Value> {
    objs.iter()
        .filter(|o| meta::controller_of(o).is_some_and(|(_, _, uid)| uid == owner_uid))
        .collect()
}

/// A pod object from a template, owned by `owner`.
pub(super) fn pod_from_template(
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

pub(super) fn with_kind(obj: &Value, api_version: &str, kind: &str) -> Value {
    let mut o = obj.clone();
    o["apiVersion"] = json!(api_version);
    o["kind"] = json!(kind);
    o
}

/// Creates `desired`, or brings the listed top-level fields (and labels/owners) of the
/// stored object in line with it.
pub(super) fn upsert(
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
