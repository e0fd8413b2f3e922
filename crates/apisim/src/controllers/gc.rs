//! Garbage collection through owner references, as kube-controller-manager's garbage
//! collector does it.
//!
//! Each pass reads one consistent snapshot of every object. An owner reference resolves to
//! the object of the referenced kind and name in the dependent's namespace (cluster-scoped
//! kinds: no namespace) whose UID matches; a namespaced owner is never looked up in another
//! namespace, so a reference across namespaces counts as absent and the dependent is
//! collected, as upstream. What to do with a dependent is decided by the pure [`decide`];
//! the deletion re-checks that decision under the store lock, so an owner that appeared
//! since the snapshot keeps its dependents.
//!
//! Owners deleted with `propagationPolicy: Foreground` (finalizer `foregroundDeletion`)
//! have their dependents deleted and go away once no dependent with
//! `blockOwnerDeletion: true` is left; `Orphan` (finalizer `orphan`) removes the owner's
//! references from its dependents first.

use std::collections::HashMap;

use serde_json::Value;

use super::util::{is_deleting, log_err};
use crate::meta;
use crate::resources::{self, ResourceInfo};
use crate::state::Inner;
use crate::store::{DeleteOptions, Store, Sub};

/// What an owner reference points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    /// The owner exists and is not waiting for its dependents.
    Solid,
    /// The owner exists and is being deleted in the foreground.
    WaitingForDependents,
    /// No such owner (or one of another UID, or in another namespace).
    Absent,
    /// The reference cannot be checked (unknown kind, or a namespaced owner of a
    /// cluster-scoped dependent): the dependent is left alone, as upstream.
    Unresolvable,
}

/// What to do with one dependent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Nothing.
    Keep,
    /// Delete it with this propagation policy.
    Delete(&'static str),
    /// Remove the references with these owner UIDs (it has another, solid owner).
    RemoveRefs(Vec<String>),
}

fn owner_refs(o: &Value) -> Vec<&Value> {
    meta::metadata(o)
        .get("ownerReferences")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

fn has_finalizer(o: &Value, f: &str) -> bool {
    meta::metadata(o)
        .get("finalizers")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|v| v.as_str() == Some(f)))
}

/// Resolves one owner reference of `dep` (of resource `dep_res`) with `get` (resource,
/// namespace, name → object).
pub(crate) fn resolve<'a>(
    get: impl Fn(&'static ResourceInfo, &str, &str) -> Option<&'a Value>,
    dep_res: &ResourceInfo,
    dep: &Value,
    oref: &Value,
) -> Owner {
    let Some(res) = resources::by_kind(
        meta::str_at(oref, &["apiVersion"]),
        meta::str_at(oref, &["kind"]),
    ) else {
        return Owner::Unresolvable;
    };
    if res.namespaced && !dep_res.namespaced {
        return Owner::Unresolvable;
    }
    let ns = if res.namespaced {
        meta::namespace(dep)
    } else {
        ""
    };
    match get(res, ns, meta::str_at(oref, &["name"])) {
        Some(o) if meta::uid(o) == meta::str_at(oref, &["uid"]) => {
            if is_deleting(o) && has_finalizer(o, "foregroundDeletion") {
                Owner::WaitingForDependents
            } else {
                Owner::Solid
            }
        }
        _ => Owner::Absent,
    }
}

/// Decides about a dependent from the state of each of its owner references (UID, state).
pub(crate) fn decide(dep: &Value, owners: &[(String, Owner)]) -> Action {
    if owners.is_empty() || is_deleting(dep) {
        return Action::Keep;
    }
    let solid = owners
        .iter()
        .any(|(_, s)| matches!(s, Owner::Solid | Owner::Unresolvable));
    if solid {
        let stale: Vec<String> = owners
            .iter()
            .filter(|(_, s)| matches!(s, Owner::Absent | Owner::WaitingForDependents))
            .map(|(u, _)| u.clone())
            .collect();
        return if stale.is_empty() {
            Action::Keep
        } else {
            Action::RemoveRefs(stale)
        };
    }
    if owners
        .iter()
        .any(|(_, s)| *s == Owner::WaitingForDependents)
    {
        return Action::Delete("Foreground");
    }
    // Every owner is gone: the dependent's own finalizers may ask for a policy.
    if has_finalizer(dep, "orphan") {
        Action::Delete("Orphan")
    } else if has_finalizer(dep, "foregroundDeletion") {
        Action::Delete("Foreground")
    } else {
        Action::Delete("Background")
    }
}

/// The owner states of `dep`'s references.
fn owner_states<'a>(
    get: impl Fn(&'static ResourceInfo, &str, &str) -> Option<&'a Value> + Copy,
    dep_res: &ResourceInfo,
    dep: &Value,
) -> Vec<(String, Owner)> {
    owner_refs(dep)
        .into_iter()
        .map(|r| {
            (
                meta::str_at(r, &["uid"]).to_string(),
                resolve(get, dep_res, dep, r),
            )
        })
        .collect()
}

type Key = (&'static str, String, String);

/// One pass of the garbage collector.
pub(crate) fn garbage_collect(store: &Store) {
    let snapshot = store.snapshot();
    let index: HashMap<Key, &Value> = snapshot
        .iter()
        .map(|(r, o)| {
            (
                (
                    r.plural,
                    meta::namespace(o).to_string(),
                    meta::name(o).to_string(),
                ),
                o,
            )
        })
        .collect();
    let get = |r: &'static ResourceInfo, ns: &str, name: &str| {
        index
            .get(&(r.plural, ns.to_string(), name.to_string()))
            .copied()
    };
    // Dependents whose owners are gone or going.
    for (res, dep) in &snapshot {
        match decide(dep, &owner_states(get, res, dep)) {
            Action::Keep => {}
            Action::Delete(policy) => {
                log_err("collect dependent", collect(store, res, dep, policy));
            }
            Action::RemoveRefs(uids) => {
                log_err(
                    "remove stale owner references",
                    store.modify(res, meta::namespace(dep), meta::name(dep), Sub::Main, |x| {
                        if let Some(refs) = x
                            .pointer_mut("/metadata/ownerReferences")
                            .and_then(Value::as_array_mut)
                        {
                            refs.retain(|r| !uids.iter().any(|u| u == meta::str_at(r, &["uid"])));
                        }
                        Ok(())
                    }),
                );
            }
        }
    }
    // Owners deleted in the foreground or with orphaning.
    for (res, owner) in &snapshot {
        if !is_deleting(owner) {
            continue;
        }
        let orphan = has_finalizer(owner, "orphan");
        let foreground = has_finalizer(owner, "foregroundDeletion");
        if !orphan && !foreground {
            continue;
        }
        let uid = meta::uid(owner);
        let deps: Vec<&(&'static ResourceInfo, Value)> = snapshot
            .iter()
            .filter(|(dres, d)| {
                owner_refs(d).into_iter().any(|r| {
                    meta::str_at(r, &["uid"]) == uid && resolve(get, dres, d, r) != Owner::Absent
                })
            })
            .collect();
        let release = if orphan {
            for (dres, d) in &deps {
                log_err(
                    "orphan dependent",
                    store.modify(dres, meta::namespace(d), meta::name(d), Sub::Main, |x| {
                        if let Some(refs) = x
                            .pointer_mut("/metadata/ownerReferences")
                            .and_then(Value::as_array_mut)
                        {
                            refs.retain(|r| meta::str_at(r, &["uid"]) != uid);
                        }
                        Ok(())
                    }),
                );
            }
            Some("orphan")
        } else {
            // Dependents were deleted above (their owner is waiting); the owner goes once
            // none that blocks it is left.
            let blocking = deps.iter().any(|(_, d)| {
                owner_refs(d).into_iter().any(|r| {
                    meta::str_at(r, &["uid"]) == uid
                        && r.get("blockOwnerDeletion").and_then(Value::as_bool) == Some(true)
                })
            });
            (!blocking).then_some("foregroundDeletion")
        };
        if let Some(f) = release {
            log_err(
                "release finalizer",
                store.modify(
                    res,
                    meta::namespace(owner),
                    meta::name(owner),
                    Sub::Main,
                    |x| {
                        if meta::uid(x) != uid {
                            return Ok(());
                        }
                        if let Some(list) = x
                            .pointer_mut("/metadata/finalizers")
                            .and_then(Value::as_array_mut)
                        {
                            list.retain(|v| v.as_str() != Some(f));
                        }
                        Ok(())
                    },
                ),
            );
        }
    }
}

/// Deletes `dep` with `policy` if, under the store lock, it is still the same object and
/// its owners still call for that (an owner created since the snapshot saves it).
fn collect(
    store: &Store,
    res: &'static ResourceInfo,
    dep: &Value,
    policy: &'static str,
) -> crate::error::ApiResult<Option<Value>> {
    let uid = meta::uid(dep).to_string();
    store.delete_if(res, meta::namespace(dep), meta::name(dep), |inner, cur| {
        let get = |r: &'static ResourceInfo, ns: &str, name: &str| inner_get(inner, r, ns, name);
        let now = decide(cur, &owner_states(get, res, cur));
        (meta::uid(cur) == uid && now == Action::Delete(policy)).then(|| DeleteOptions {
            propagation_policy: Some(policy.into()),
            precondition_uid: Some(uid.clone()),
            ..DeleteOptions::default()
        })
    })
}

fn inner_get<'a>(inner: &'a Inner, r: &ResourceInfo, ns: &str, name: &str) -> Option<&'a Value> {
    inner.get(r, ns, name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::r;
    use crate::controllers::tests::setup;
    use serde_json::json;

    fn owner_ref(o: &Value) -> Value {
        meta::controller_ref(o)
    }

    fn cm_owned_by(name: &str, refs: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "ownerReferences": refs}})
    }

    fn exists(s: &Store, res: &'static ResourceInfo, ns: &str, name: &str) -> bool {
        s.get(res, ns, name).is_ok()
    }

    #[test]
    fn owner_references_are_validated() {
        let s = setup();
        let cms = r("", "configmaps");
        let e = s
            .create(
                cms,
                "default",
                cm_owned_by(
                    "x",
                    json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "o"}]),
                ),
                false,
            )
            .unwrap_err();
        assert_eq!(e.code, 422);
        assert!(
            e.message.contains("metadata.ownerReferences.uid"),
            "{}",
            e.message
        );
        let c = |n: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "name": n, "uid": n, "controller": true});
        let e = s
            .create(
                cms,
                "default",
                cm_owned_by("y", json!([c("a"), c("b")])),
                false,
            )
            .unwrap_err();
        assert!(
            e.message
                .contains("Only one reference can have Controller set to true"),
            "{}",
            e.message
        );
    }

    #[test]
    fn decisions() {
        let dep = json!({"metadata": {"name": "d"}});
        let o = |u: &str, s: Owner| (u.to_string(), s);
        assert_eq!(decide(&dep, &[]), Action::Keep);
        assert_eq!(decide(&dep, &[o("a", Owner::Solid)]), Action::Keep);
        assert_eq!(decide(&dep, &[o("a", Owner::Unresolvable)]), Action::Keep);
        assert_eq!(
            decide(&dep, &[o("a", Owner::Absent)]),
            Action::Delete("Background")
        );
        assert_eq!(
            decide(
                &dep,
                &[o("a", Owner::Absent), o("b", Owner::WaitingForDependents)]
            ),
            Action::Delete("Foreground")
        );
        assert_eq!(
            decide(&dep, &[o("a", Owner::Solid), o("b", Owner::Absent)]),
            Action::RemoveRefs(vec!["b".into()])
        );
        let deleting = json!({"metadata": {"name": "d", "deletionTimestamp": "x"}});
        assert_eq!(decide(&deleting, &[o("a", Owner::Absent)]), Action::Keep);
    }

    #[test]
    fn an_owner_in_another_namespace_counts_as_absent() {
        let s = setup();
        s.create(
            r("", "namespaces"),
            "",
            json!({"metadata": {"name": "other"}}),
            false,
        )
        .unwrap();
        let cms = r("", "configmaps");
        let owner = s
            .create(cms, "other", json!({"metadata": {"name": "owner"}}), false)
            .unwrap();
        // The owner's name and UID, but it lives in another namespace.
        s.create(
            cms,
            "default",
            cm_owned_by("dep", json!([owner_ref(&owner)])),
            false,
        )
        .unwrap();
        // A cluster-scoped owner (a Node) of a namespaced dependent is fine.
        let node = s.get(r("", "nodes"), "", "node1").unwrap();
        s.create(
            cms,
            "default",
            cm_owned_by("node-dep", json!([owner_ref(&node)])),
            false,
        )
        .unwrap();
        // An owner of that name in the dependent's namespace but with another UID is absent.
        s.create(
            cms,
            "default",
            json!({"metadata": {"name": "owner"}}),
            false,
        )
        .unwrap();
        // A namespaced owner of a cluster-scoped dependent cannot be resolved: kept.
        s.create(
            r("rbac.authorization.k8s.io", "clusterroles"),
            "",
            json!({"metadata": {"name": "cr", "ownerReferences": [owner_ref(&owner)]}, "rules": []}),
            false,
        )
        .unwrap();
        garbage_collect(&s);
        assert!(!exists(&s, cms, "default", "dep"));
        assert!(exists(&s, cms, "default", "node-dep"));
        assert!(exists(
            &s,
            r("rbac.authorization.k8s.io", "clusterroles"),
            "",
            "cr"
        ));
        assert!(exists(&s, cms, "other", "owner"));
    }

    #[test]
    fn a_stale_decision_is_checked_again_at_delete_time() {
        let s = setup();
        let cms = r("", "configmaps");
        let owner = s
            .create(
                cms,
                "default",
                json!({"metadata": {"name": "owner"}}),
                false,
            )
            .unwrap();
        let dep = s
            .create(
                cms,
                "default",
                cm_owned_by("dep", json!([owner_ref(&owner)])),
                false,
            )
            .unwrap();
        // A snapshot that missed the owner would say "delete"; the store says no.
        assert_eq!(collect(&s, cms, &dep, "Background").unwrap(), None);
        assert!(exists(&s, cms, "default", "dep"));
        s.delete(cms, "default", "owner", &DeleteOptions::default())
            .unwrap();
        assert!(collect(&s, cms, &dep, "Background").unwrap().is_some());
        assert!(!exists(&s, cms, "default", "dep"));
    }

    #[test]
    fn one_live_owner_keeps_the_dependent_and_loses_dangling_refs() {
        let s = setup();
        let cms = r("", "configmaps");
        let a = s
            .create(cms, "default", json!({"metadata": {"name": "a"}}), false)
            .unwrap();
        let mut gone = owner_ref(&a);
        gone["uid"] = json!("no-such-uid");
        gone["name"] = json!("b");
        gone["controller"] = json!(false);
        s.create(
            cms,
            "default",
            cm_owned_by("dep", json!([owner_ref(&a), gone])),
            false,
        )
        .unwrap();
        garbage_collect(&s);
        let dep = s.get(cms, "default", "dep").unwrap();
        let refs = dep["metadata"]["ownerReferences"].as_array().unwrap();
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0]["uid"], meta::uid(&a));
    }

    /// One dependent of each kind a kubelan session owns through its Job.
    fn session(s: &Store, job: &Value) -> Vec<(&'static ResourceInfo, String)> {
        let owner = json!([owner_ref(job)]);
        let md = |name: &str| json!({"name": name, "ownerReferences": owner});
        let rbac = "rbac.authorization.k8s.io";
        let objs = [
            (
                r("", "services"),
                json!({"metadata": md("svc"), "spec": {"ports": [{"port": 80}]}}),
            ),
            (
                r("", "pods"),
                json!({"metadata": md("pod"), "spec": {"containers": [{"name": "c", "image": "i"}]}}),
            ),
            (
                r("coordination.k8s.io", "leases"),
                json!({"metadata": md("lease"), "spec": {}}),
            ),
            (r("", "serviceaccounts"), json!({"metadata": md("sa")})),
            (
                r(rbac, "roles"),
                json!({"metadata": md("role"), "rules": []}),
            ),
            (
                r(rbac, "rolebindings"),
                json!({"metadata": md("rb"),
                "roleRef": {"apiGroup": rbac, "kind": "Role", "name": "role"}, "subjects": []}),
            ),
            (r("", "configmaps"), json!({"metadata": md("cm")})),
            (r("", "secrets"), json!({"metadata": md("secret")})),
        ];
        objs.into_iter()
            .map(|(res, o)| {
                let name = meta::name(&o).to_string();
                s.create(res, "default", o, false).unwrap();
                (res, name)
            })
            .collect()
    }

    fn job(s: &Store, name: &str) -> Value {
        s.create(
            r("batch", "jobs"),
            "default",
            json!({"metadata": {"name": name}, "spec": {"suspend": true, "template": {"spec": {
                "restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}}}),
            false,
        )
        .unwrap()
    }

    fn passes(s: &Store) {
        for _ in 0..4 {
            garbage_collect(s);
        }
    }

    #[test]
    fn propagation_policies_on_every_session_kind() {
        for policy in ["Background", "Foreground", "Orphan"] {
            let s = setup();
            let j = job(&s, "session");
            let deps = session(&s, &j);
            s.delete(
                r("batch", "jobs"),
                "default",
                "session",
                &DeleteOptions {
                    propagation_policy: Some(policy.into()),
                    ..DeleteOptions::default()
                },
            )
            .unwrap();
            passes(&s);
            assert!(
                !exists(&s, r("batch", "jobs"), "default", "session"),
                "{policy}"
            );
            for (res, name) in deps {
                let kept = s.get(res, "default", &name);
                if policy == "Orphan" {
                    let o = kept.unwrap_or_else(|_| panic!("{policy}: {name} deleted"));
                    assert!(
                        o["metadata"]["ownerReferences"]
                            .as_array()
                            .is_none_or(Vec::is_empty),
                        "{policy}: {name} keeps its reference"
                    );
                } else {
                    assert!(kept.is_err(), "{policy}: {} survived", res.plural);
                }
            }
        }
    }

    #[test]
    fn a_foreground_owner_waits_for_blocking_dependents() {
        let s = setup();
        let j = job(&s, "fg");
        let cms = r("", "configmaps");
        let mut held = cm_owned_by("held", json!([owner_ref(&j)]));
        held["metadata"]["finalizers"] = json!(["example.com/hold"]);
        s.create(cms, "default", held, false).unwrap();
        let mut loose = owner_ref(&j);
        loose["blockOwnerDeletion"] = json!(false);
        let mut loose_dep = cm_owned_by("loose", json!([loose]));
        loose_dep["metadata"]["finalizers"] = json!(["example.com/hold"]);
        s.create(cms, "default", loose_dep, false).unwrap();
        s.delete(
            r("batch", "jobs"),
            "default",
            "fg",
            &DeleteOptions {
                propagation_policy: Some("Foreground".into()),
                ..DeleteOptions::default()
            },
        )
        .unwrap();
        passes(&s);
        // Both dependents are being deleted; only the blocking one holds the Job.
        assert!(is_deleting(&s.get(cms, "default", "held").unwrap()));
        assert!(is_deleting(&s.get(cms, "default", "loose").unwrap()));
        assert!(exists(&s, r("batch", "jobs"), "default", "fg"));
        s.modify(cms, "default", "held", Sub::Main, |o| {
            o["metadata"]["finalizers"] = json!([]);
            Ok(())
        })
        .unwrap();
        passes(&s);
        assert!(!exists(&s, cms, "default", "held"));
        assert!(!exists(&s, r("batch", "jobs"), "default", "fg"));
        assert!(exists(&s, cms, "default", "loose"), "not waited for");
    }
}
