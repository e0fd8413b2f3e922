//! The object store: every object as JSON, one global resourceVersion counter, an ordered
//! event log that watches resume from, and the write semantics of the real API server
//! (admission, optimistic concurrency, status subresource, generation, finalizers,
//! graceful pod deletion).
//!
//! All methods are synchronous and hold one lock briefly; the HTTP layer and the in-process
//! controllers share the same `Store`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::admission;
use crate::error::{ApiError, ApiResult};
use crate::meta;
use crate::patch::{self, PatchKind};
use crate::resources::{self, ResourceInfo};
use crate::selector::{FieldSelector, LabelSelector};
use crate::state::Inner;

pub use crate::state::{ClusterConfig, Event, EventKind};

/// How many events the log keeps for watches that resume from an older resourceVersion.
const EVENT_LOG_LEN: usize = 20_000;

/// Which part of an object a write targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sub {
    /// The main resource (status is kept from the stored object when the kind has one).
    Main,
    /// The `status` subresource (only status changes).
    Status,
    /// The namespace `finalize` subresource (only `spec.finalizers` changes).
    Finalize,
}

/// Options of a DELETE.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// `Background` (default), `Foreground` or `Orphan`.
    pub propagation_policy: Option<String>,
    /// Grace period override (pods).
    pub grace_period_seconds: Option<i64>,
    /// Delete only if the object still has this UID.
    pub precondition_uid: Option<String>,
    /// Delete only if the object still has this resourceVersion.
    pub precondition_rv: Option<String>,
    /// Validate only.
    pub dry_run: bool,
}

impl DeleteOptions {
    /// Background propagation, as controllers ask for explicitly (a Job's own default is
    /// Orphan).
    pub fn background() -> Self {
        Self {
            propagation_policy: Some("Background".into()),
            ..Self::default()
        }
    }
}

/// The propagation policy a DELETE without one gets: `Orphan` for batch/v1 Jobs (kept for
/// compatibility upstream; the API server warns about it), `Background` for everything else.
pub fn default_propagation(res: &ResourceInfo) -> &'static str {
    if res.group == "batch" && res.kind == "Job" {
        "Orphan"
    } else {
        "Background"
    }
}

/// The `Warning` header text for a DELETE of `res` without a propagation policy, if any.
pub fn default_propagation_warning(res: &ResourceInfo) -> Option<&'static str> {
    (default_propagation(res) == "Orphan").then_some(
        "child pods are preserved by default when jobs are deleted; set propagationPolicy=Background to remove them or set propagationPolicy=Orphan to suppress this warning",
    )
}

/// A check run under the store lock on a create (`old` is `None`) or an update, on the object
/// about to be written, before defaulting and validation: the API server's per-request
/// policies that depend on other stored objects (RBAC escalation prevention).
pub(crate) type Guard<'a> = &'a dyn Fn(&Inner, &Value, Option<&Value>) -> ApiResult<()>;

fn no_guard(_: &Inner, _: &Value, _: Option<&Value>) -> ApiResult<()> {
    Ok(())
}

/// The object store of the simulated API server.
pub struct Store {
    inner: Mutex<Inner>,
    events: broadcast::Sender<Arc<Event>>,
    config: ClusterConfig,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The key objects are stored under: resource plural (unique across our groups).
fn key(res: &ResourceInfo) -> &'static str {
    // Plurals are unique in `RESOURCES` (checked by a test there).
    resources::RESOURCES
        .iter()
        .find(|r| r.plural == res.plural && r.group == res.group)
        .map(|r| r.plural)
        .unwrap_or("unknown")
}

fn scope_ns<'a>(res: &ResourceInfo, ns: &'a str) -> &'a str {
    if res.namespaced { ns } else { "" }
}

impl Store {
    /// An empty store.
    pub fn new(config: ClusterConfig) -> Arc<Self> {
        let (events, _) = broadcast::channel(65_536);
        Arc::new(Self {
            inner: Mutex::new(Inner {
                rv: 1,
                objects: HashMap::new(),
                log: VecDeque::new(),
            }),
            events,
            config,
        })
    }

    /// Cluster facts.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock would be a bug; keep serving with the data as is.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Subscribes to every future change.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.events.subscribe()
    }

    /// The current resourceVersion.
    pub fn current_rv(&self) -> u64 {
        self.lock().rv
    }

    /// The logged events after `rv`, and the current version. `410 Gone` when `rv` is older
    /// than the log.
    pub fn events_since(&self, rv: u64) -> ApiResult<(Vec<Arc<Event>>, u64)> {
        let inner = self.lock();
        if let Some(first) = inner.log.front()
            && rv + 1 < first.rv
        {
            return Err(ApiError::gone(rv, first.rv - 1));
        }
        let events = inner.log.iter().filter(|e| e.rv > rv).cloned().collect();
        Ok((events, inner.rv))
    }

    fn commit(
        &self,
        inner: &mut Inner,
        res: &'static ResourceInfo,
        kind: EventKind,
        mut object: Value,
        old: Option<Value>,
    ) -> Value {
        inner.rv += 1;
        let rv = inner.rv;
        meta::set_at(
            &mut object,
            &["metadata", "resourceVersion"],
            json!(rv.to_string()),
        );
        let ns = scope_ns(res, meta::namespace(&object)).to_string();
        let name = meta::name(&object).to_string();
        let map = inner.objects.entry(key(res)).or_default();
        match kind {
            EventKind::Deleted => {
                map.remove(&(ns, name));
            }
            _ => {
                map.insert((ns, name), object.clone());
            }
        }
        let ev = Arc::new(Event {
            rv,
            res,
            kind,
            object: object.clone(),
            old,
        });
        inner.log.push_back(ev.clone());
        if inner.log.len() > EVENT_LOG_LEN {
            inner.log.pop_front();
        }
        let _ = self.events.send(ev);
        object
    }

    /// Reads one object.
    ///
    /// # Errors
    /// `404` when absent.
    pub fn get(&self, res: &'static ResourceInfo, ns: &str, name: &str) -> ApiResult<Value> {
        self.lock()
            .get(res, scope_ns(res, ns), name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(res, name))
    }

    /// Lists objects (all namespaces when `ns` is `None`) matching the selectors, with the
    /// resourceVersion of the snapshot.
    pub fn list(
        &self,
        res: &'static ResourceInfo,
        ns: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> (Vec<Value>, u64) {
        let inner = self.lock();
        let items = inner
            .all(res)
            .filter(|o| !res.namespaced || ns.is_none_or(|n| meta::namespace(o) == n))
            .filter(|o| labels.matches_object(o) && fields.matches(o))
            .cloned()
            .collect();
        (items, inner.rv)
    }

    /// Lists every object of a resource (no selectors).
    pub fn list_all(&self, res: &'static ResourceInfo, ns: Option<&str>) -> Vec<Value> {
        self.list(
            res,
            ns,
            &LabelSelector::everything(),
            &FieldSelector::everything(),
        )
        .0
    }

    /// Creates an object (defaulting, validation and allocation run first).
    ///
    /// # Errors
    /// `409` if it exists, `422` if invalid, `404`/`403` for a missing or terminating
    /// namespace.
    pub fn create(
        &self,
        res: &'static ResourceInfo,
        ns: &str,
        obj: Value,
        dry_run: bool,
    ) -> ApiResult<Value> {
        self.create_guarded(res, ns, obj, dry_run, &no_guard)
    }

    /// [`Store::create`] with a [`Guard`].
    pub(crate) fn create_guarded(
        &self,
        res: &'static ResourceInfo,
        ns: &str,
        obj: Value,
        dry_run: bool,
        guard: Guard<'_>,
    ) -> ApiResult<Value> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        let mut inner = self.lock();
        check_type_meta(res, &obj)?;
        // Stored objects always carry their type, as in etcd (owner references built from
        // them need it).
        let mut obj = with_type_meta(res, obj);
        let ns = scope_ns(res, ns);
        if res.namespaced {
            let body_ns = meta::namespace(&obj);
            if !body_ns.is_empty() && body_ns != ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            check_namespace_open(&inner, ns)?;
        }
        let m = meta::obj_at_mut(&mut obj, &["metadata"])
            .ok_or_else(|| ApiError::bad_request("metadata must be an object"))?;
        if res.namespaced {
            m.insert("namespace".into(), json!(ns));
        } else {
            m.remove("namespace");
        }
        let mut name = m
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if name.is_empty() {
            let prefix = m.get("generateName").and_then(Value::as_str).unwrap_or("");
            if prefix.is_empty() {
                return Err(ApiError::invalid(
                    res.kind,
                    "",
                    vec![crate::error::FieldError::required(
                        "metadata.name",
                        "name or generateName is required",
                    )],
                ));
            }
            loop {
                name = format!("{prefix}{}", meta::random_suffix(5));
                if inner.get(res, ns, &name).is_none() {
                    break;
                }
            }
            m.insert("name".into(), json!(name));
        }
        if inner.get(res, ns, &name).is_some() {
            return Err(ApiError::already_exists(res, &name));
        }
        m.insert("uid".into(), json!(meta::new_uid()));
        m.insert("creationTimestamp".into(), json!(meta::now_rfc3339()));
        m.remove("resourceVersion");
        m.remove("deletionTimestamp");
        m.remove("deletionGracePeriodSeconds");
        m.remove("managedFields");
        if admission::has_generation(res) {
            m.insert("generation".into(), json!(1));
        }
        if res.has_status()
            && let Some(o) = obj.as_object_mut()
        {
            o.remove("status");
        }
        guard(&inner, &obj, None)?;
        admission::admit(&inner, &self.config, res, &mut obj, None)?;
        if dry_run {
            return Ok(obj);
        }
        Ok(self.commit(&mut inner, res, EventKind::Added, obj, None))
    }

    /// Replaces an object (or its status). `resourceVersion` in the body, when set, must
    /// match the stored one.
    ///
    /// # Errors
    /// `404` when absent, `409` on a stale version, `422` when invalid.
    pub fn update(
        &self,
        res: &'static ResourceInfo,
        ns: &str,
        name: &str,
        obj: Value,
        sub: Sub,
        dry_run: bool,
    ) -> ApiResult<Value> {
        self.update_guarded(res, ns, name, obj, sub, dry_run, &no_guard)
    }

    /// [`Store::update`] with a [`Guard`].
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn update_guarded(
        &self,
        res: &'static ResourceInfo,
        ns: &str,
        name: &str,
        obj: Value,
        sub: Sub,
        dry_run: bool,
        guard: Guard<'_>,
    ) -> ApiResult<Value> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        let mut inner = self.lock();
        check_type_meta(res, &obj)?;
        let ns = scope_ns(res, ns);
        let body_name = meta::name(&obj);
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let old = inner
            .get(res, ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(res, name))?;
        let want_rv = meta::str_at(&obj, &["metadata", "resourceVersion"]);
        if !want_rv.is_empty() && want_rv != meta::str_at(&old, &["metadata", "resourceVersion"]) {
            return Err(ApiError::stale(res, name));
        }
        self.write_locked(&mut inner, res, old, obj, sub, dry_run, guard)
    }

    /// Applies a PATCH (JSON, merge, strategic merge, or apply) to an object. Apply creates
    /// the object when it does not exist.
    ///
    /// # Errors
    /// As [`Store::update`], plus `400` for a malformed patch.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &self,
        res: &'static ResourceInfo,
        ns: &str,
        name: &str,
        kind: PatchKind,
        body: &Value,
        sub: Sub,
        dry_run: bool,
    ) -> ApiResult<Value> {
        self.patch_guarded(res, ns, name, kind, body, sub, dry_run, &no_guard)
    }

    /// [`Store::patch`] with a [`Guard`] (also run when an apply creates the object).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn patch_guarded(
        &self,
        res: &'static ResourceInfo,
        ns: &str,
        name: &str,
        kind: PatchKind,
        body: &Value,
        sub: Sub,
        dry_run: bool,
        guard: Guard<'_>,
    ) -> ApiResult<Value> {
        let current = {
            let inner = self.lock();
            inner.get(res, scope_ns(res, ns), name).cloned()
        };
        let Some(current) = current else {
            if kind == PatchKind::Apply && sub == Sub::Main {
                let mut obj = body.clone();
                meta::set_at(&mut obj, &["metadata", "name"], json!(name));
                return self.create_guarded(res, ns, obj, dry_run, guard);
            }
            return Err(ApiError::not_found(res, name));
        };
        let mut next = current.clone();
        let result = match kind {
            PatchKind::Json => patch::json_patch(&mut next, body),
            PatchKind::Merge => {
                patch::merge_patch(&mut next, body);
                Ok(())
            }
            PatchKind::StrategicMerge => patch::strategic_merge_patch(&mut next, body, res.kind),
            PatchKind::Apply => patch::apply_patch(&mut next, body, res.kind),
        };
        result.map_err(|e| patch_error(&e))?;
        // A patch may carry a resourceVersion precondition; otherwise it applies to the
        // version it was computed from, which we lock in here.
        let patched_rv = meta::str_at(&next, &["metadata", "resourceVersion"]).to_string();
        let current_rv = meta::str_at(&current, &["metadata", "resourceVersion"]).to_string();
        if !patched_rv.is_empty() && patched_rv != current_rv {
            return Err(ApiError::stale(res, name));
        }
        meta::set_at(
            &mut next,
            &["metadata", "resourceVersion"],
            json!(current_rv),
        );
        let mut inner = self.lock();
        let old = inner
            .get(res, scope_ns(res, ns), name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(res, name))?;
        if meta::str_at(&old, &["metadata", "resourceVersion"]) != current_rv {
            // Someone wrote in between: recompute on the new version.
            drop(inner);
            return self.patch_guarded(res, ns, name, kind, body, sub, dry_run, guard);
        }
        self.write_locked(&mut inner, res, old, next, sub, dry_run, guard)
    }

    /// Read-modify-write under the lock, for in-process controllers and node agents: `f`
    /// edits the stored object; nothing is written (and no event sent) when it made no
    /// change. Returns the object as stored afterwards.
    ///
    /// # Errors
    /// `404` when absent, or what `f` or admission return.
    pub fn modify(
        &self,
        res: &'static ResourceInfo,
        ns: &str,
        name: &str,
        sub: Sub,
        f: impl FnOnce(&mut Value) -> ApiResult<()>,
    ) -> ApiResult<Value> {
        let mut inner = self.lock();
        let old = inner
            .get(res, scope_ns(res, ns), name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(res, name))?;
        let mut next = old.clone();
        f(&mut next)?;
        if next == old {
            return Ok(old);
        }
        self.write_locked(&mut inner, res, old, next, sub, false, &no_guard)
    }

    #[allow(clippy::too_many_arguments)]
    fn write_locked(
        &self,
        inner: &mut Inner,
        res: &'static ResourceInfo,
        old: Value,
        obj: Value,
        sub: Sub,
        dry_run: bool,
        guard: Guard<'_>,
    ) -> ApiResult<Value> {
        let mut obj = with_type_meta(res, obj);
        // Identity fields never change.
        for field in [
            "uid",
            "creationTimestamp",
            "namespace",
            "name",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            let v = meta::metadata(&old).get(field).cloned();
            let m = meta::obj_at_mut(&mut obj, &["metadata"])
                .ok_or_else(|| ApiError::bad_request("metadata must be an object"))?;
            match v {
                Some(v) => m.insert(field.into(), v),
                None => m.remove(field),
            };
        }
        match sub {
            Sub::Status => {
                // Only status (and metadata labels/annotations, as the real strategies allow
                // for some kinds) changes.
                let status = obj.get("status").cloned();
                let md = obj.get("metadata").cloned();
                let mut next = old.clone();
                match status {
                    Some(s) => meta::set_at(&mut next, &["status"], s),
                    None => {
                        if let Some(o) = next.as_object_mut() {
                            o.remove("status");
                        }
                    }
                }
                if let Some(md) = md {
                    for f in ["labels", "annotations"] {
                        if let Some(v) = md.get(f) {
                            meta::set_at(&mut next, &["metadata", f], v.clone());
                        }
                    }
                }
                obj = next;
            }
            Sub::Finalize => {
                let fins = obj
                    .pointer("/spec/finalizers")
                    .cloned()
                    .unwrap_or(json!([]));
                let mut next = old.clone();
                meta::set_at(&mut next, &["spec", "finalizers"], fins);
                obj = next;
            }
            Sub::Main => {
                if res.has_status() {
                    match old.get("status") {
                        Some(s) => meta::set_at(&mut obj, &["status"], s.clone()),
                        None => {
                            if let Some(o) = obj.as_object_mut() {
                                o.remove("status");
                            }
                        }
                    }
                }
                if admission::has_generation(res) && spec_changed(&old, &obj) {
                    let g = meta::metadata(&old)
                        .get("generation")
                        .and_then(Value::as_i64)
                        .unwrap_or(0);
                    meta::set_at(&mut obj, &["metadata", "generation"], json!(g + 1));
                }
            }
        }
        guard(inner, &obj, Some(&old))?;
        admission::admit(inner, &self.config, res, &mut obj, Some(&old))?;
        if dry_run {
            return Ok(obj);
        }
        // An object being deleted goes away once its last finalizer is removed.
        let deleting = meta::metadata(&obj).get("deletionTimestamp").is_some();
        if deleting && finalizers(&obj).is_empty() && !waits_for_node(res, &obj) {
            return Ok(self.commit(inner, res, EventKind::Deleted, obj, Some(old)));
        }
        // Changing nothing still bumps the version on a real server for an explicit update,
        // but an identical object is left alone here to keep controllers quiet.
        let mut old_cmp = old.clone();
        meta::set_at(&mut old_cmp, &["metadata", "resourceVersion"], Value::Null);
        let mut new_cmp = obj.clone();
        meta::set_at(&mut new_cmp, &["metadata", "resourceVersion"], Value::Null);
        if old_cmp == new_cmp {
            return Ok(old);
        }
        Ok(self.commit(inner, res, EventKind::Modified, obj, Some(old)))
    }

    /// Deletes an object: immediately, or by marking it (`deletionTimestamp`) when it has
    /// finalizers, is a namespace, or is a running pod that its node must stop first.
    ///
    /// # Errors
    /// `404` when absent, `409` when a precondition fails.
    pub fn delete(
        &self,
        res: &'static ResourceInfo,
        ns: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> ApiResult<Value> {
        let mut inner = self.lock();
        self.delete_locked(&mut inner, res, ns, name, opts)
    }

    /// Deletes an object only if `check`, run under the store lock with every object and
    /// the current object, still returns the options to delete with (`None`: leave it).
    /// Controllers use it to act on a decision that must still hold at delete time.
    ///
    /// # Errors
    /// As [`Store::delete`].
    pub(crate) fn delete_if(
        &self,
        res: &'static ResourceInfo,
        ns: &str,
        name: &str,
        check: impl FnOnce(&Inner, &Value) -> Option<DeleteOptions>,
    ) -> ApiResult<Option<Value>> {
        let mut inner = self.lock();
        let cur = inner
            .get(res, scope_ns(res, ns), name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(res, name))?;
        match check(&inner, &cur) {
            Some(opts) => self
                .delete_locked(&mut inner, res, ns, name, &opts)
                .map(Some),
            None => Ok(None),
        }
    }

    /// Every stored object of every kind, read under one lock (a consistent snapshot).
    pub fn snapshot(&self) -> Vec<(&'static ResourceInfo, Value)> {
        let inner = self.lock();
        resources::RESOURCES
            .iter()
            .filter(|r| r.is_stored())
            .flat_map(|r| inner.all(r).map(move |o| (r, o.clone())))
            .collect()
    }

    fn delete_locked(
        &self,
        inner: &mut Inner,
        res: &'static ResourceInfo,
        ns: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> ApiResult<Value> {
        let ns = scope_ns(res, ns);
        let old = inner
            .get(res, ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(res, name))?;
        if let Some(uid) = &opts.precondition_uid
            && uid != meta::uid(&old)
        {
            return Err(ApiError::conflict(
                res,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta::uid(&old)
                ),
            ));
        }
        if let Some(rv) = &opts.precondition_rv
            && rv != meta::str_at(&old, &["metadata", "resourceVersion"])
        {
            return Err(ApiError::stale(res, name));
        }
        let mut obj = old.clone();
        let already = meta::metadata(&obj).get("deletionTimestamp").is_some();
        match opts
            .propagation_policy
            .as_deref()
            .or(Some(default_propagation(res)))
        {
            None | Some("Background") => {}
            Some("Orphan") => add_finalizer(&mut obj, "orphan"),
            Some("Foreground") => add_finalizer(&mut obj, "foregroundDeletion"),
            Some(other) => {
                return Err(ApiError::invalid(
                    "DeleteOptions",
                    "",
                    vec![crate::error::FieldError::not_supported(
                        "propagationPolicy",
                        other,
                        &["Foreground", "Background", "Orphan"],
                    )],
                ));
            }
        }
        if res.plural == "namespaces" {
            meta::set_at(&mut obj, &["status", "phase"], json!("Terminating"));
        }
        let grace = if res.plural == "pods" {
            pod_grace(&obj, opts.grace_period_seconds)
        } else {
            0
        };
        let immediate = finalizers(&obj).is_empty() && res.plural != "namespaces" && grace == 0;
        if immediate {
            if opts.dry_run {
                return Ok(obj);
            }
            return Ok(self.commit(inner, res, EventKind::Deleted, obj, Some(old)));
        }
        if !already {
            let ts = if grace > 0 {
                meta::format_time(time::OffsetDateTime::now_utc() + time::Duration::seconds(grace))
            } else {
                meta::now_rfc3339()
            };
            meta::set_at(&mut obj, &["metadata", "deletionTimestamp"], json!(ts));
            if res.plural == "pods" {
                meta::set_at(
                    &mut obj,
                    &["metadata", "deletionGracePeriodSeconds"],
                    json!(grace),
                );
            }
        } else if res.plural == "pods" && opts.grace_period_seconds.is_some() {
            meta::set_at(
                &mut obj,
                &["metadata", "deletionGracePeriodSeconds"],
                json!(grace),
            );
        }
        if opts.dry_run {
            return Ok(obj);
        }
        if obj == old {
            return Ok(old);
        }
        Ok(self.commit(inner, res, EventKind::Modified, obj, Some(old)))
    }

    /// Removes an object that is marked for deletion once nothing holds it any more (used by
    /// node agents after a pod's processes are gone, and by the namespace controller).
    ///
    /// # Errors
    /// `404` when absent.
    pub fn finish_deletion(
        &self,
        res: &'static ResourceInfo,
        ns: &str,
        name: &str,
        uid: &str,
    ) -> ApiResult<()> {
        let mut inner = self.lock();
        let Some(old) = inner.get(res, scope_ns(res, ns), name).cloned() else {
            return Err(ApiError::not_found(res, name));
        };
        if meta::uid(&old) != uid || !finalizers(&old).is_empty() {
            return Ok(());
        }
        self.commit(&mut inner, res, EventKind::Deleted, old.clone(), Some(old));
        Ok(())
    }

    /// Runs `f` with read access to all objects (for admission-like checks elsewhere).
    pub(crate) fn read<T>(&self, f: impl FnOnce(&Inner) -> T) -> T {
        f(&self.lock())
    }
}

/// A patch failure as the API reports it (400, 413 or 422).
pub fn patch_error(e: &patch::PatchError) -> ApiError {
    let mut err = ApiError::bad_request(e.to_string());
    err.code = e.status_code();
    err.reason = match err.code {
        413 => "RequestEntityTooLarge",
        422 => "Invalid",
        _ => "BadRequest",
    };
    err
}

/// Whether a pod marked for deletion must wait for its node to stop it.
fn waits_for_node(res: &ResourceInfo, obj: &Value) -> bool {
    res.plural == "pods" && pod_grace(obj, None) > 0
}

fn pod_grace(obj: &Value, requested: Option<i64>) -> i64 {
    let bound = !meta::str_at(obj, &["spec", "nodeName"]).is_empty();
    let phase = meta::str_at(obj, &["status", "phase"]);
    if !bound || phase == "Succeeded" || phase == "Failed" {
        return 0;
    }
    requested
        .or_else(|| {
            meta::metadata(obj)
                .get("deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
        })
        .or_else(|| {
            obj.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
        })
        .unwrap_or(30)
        .max(0)
}

fn finalizers(obj: &Value) -> Vec<String> {
    meta::metadata(obj)
        .get("finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn add_finalizer(obj: &mut Value, f: &str) {
    let mut fins = finalizers(obj);
    if !fins.iter().any(|x| x == f) {
        fins.push(f.to_string());
        meta::set_at(obj, &["metadata", "finalizers"], json!(fins));
    }
}

/// Whether anything but metadata and status differs.
fn spec_changed(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(o) = v.as_object_mut() {
            o.remove("metadata");
            o.remove("status");
        }
        v
    };
    strip(old) != strip(new)
}

fn check_type_meta(res: &ResourceInfo, obj: &Value) -> ApiResult<()> {
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or(res.kind);
    let api_version = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .map(String::from)
        .unwrap_or_else(|| res.api_version());
    if kind != res.kind || api_version != res.api_version() {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({}) or the kind ({kind}) does not match {}",
            res.api_version(),
            res.kind
        )));
    }
    Ok(())
}

fn check_namespace_open(inner: &Inner, ns: &str) -> ApiResult<()> {
    let nsres = resources::find("", "v1", "namespaces").expect("namespaces resource");
    if ns.is_empty() {
        return Err(ApiError::bad_request(
            "a namespace is required for this resource",
        ));
    }
    match inner.get(nsres, "", ns) {
        None => Err(ApiError::not_found(nsres, ns)),
        Some(n) if meta::metadata(n).get("deletionTimestamp").is_some() => {
            Err(ApiError::forbidden_msg(format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            )))
        }
        Some(_) => Ok(()),
    }
}

/// Completes `apiVersion`/`kind` on an object from its resource (list items omit them in
/// some clients' bodies).
pub fn with_type_meta(res: &ResourceInfo, mut obj: Value) -> Value {
    if let Some(o) = obj.as_object_mut() {
        o.insert("apiVersion".into(), json!(res.api_version()));
        o.insert("kind".into(), json!(res.kind));
    }
    obj
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;

    fn store() -> Arc<Store> {
        let s = Store::new(ClusterConfig {
            service_cidr: "172.17.16.0/20".parse().unwrap(),
            node_port_range: (30000, 32767),
            cluster_domain: "cluster.local".into(),
        });
        let ns = find("", "v1", "namespaces").unwrap();
        s.create(ns, "", json!({"metadata": {"name": "default"}}), false)
            .unwrap();
        s
    }

    fn cm(name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"a": "1"}})
    }

    #[test]
    fn create_get_conflict_delete() {
        let s = store();
        let r = find("", "v1", "configmaps").unwrap();
        let c = s.create(r, "default", cm("x"), false).unwrap();
        assert_eq!(meta::namespace(&c), "default");
        assert!(!meta::uid(&c).is_empty());
        let err = s.create(r, "default", cm("x"), false).unwrap_err();
        assert_eq!(err.code, 409);
        assert_eq!(err.reason, "AlreadyExists");
        let mut stale = c.clone();
        stale["data"]["a"] = json!("2");
        s.update(r, "default", "x", stale.clone(), Sub::Main, false)
            .unwrap();
        let err = s
            .update(r, "default", "x", stale, Sub::Main, false)
            .unwrap_err();
        assert_eq!((err.code, err.reason), (409, "Conflict"));
        s.delete(r, "default", "x", &DeleteOptions::default())
            .unwrap();
        assert_eq!(s.get(r, "default", "x").unwrap_err().code, 404);
    }

    #[test]
    fn missing_namespace_and_generate_name() {
        let s = store();
        let r = find("", "v1", "configmaps").unwrap();
        assert_eq!(s.create(r, "nope", cm("x"), false).unwrap_err().code, 404);
        let g = s
            .create(
                r,
                "default",
                json!({"metadata": {"generateName": "cm-"}}),
                false,
            )
            .unwrap();
        assert!(meta::name(&g).starts_with("cm-") && meta::name(&g).len() == 8);
    }

    #[test]
    fn events_are_ordered_and_resumable() {
        let s = store();
        let r = find("", "v1", "configmaps").unwrap();
        let start = s.current_rv();
        s.create(r, "default", cm("a"), false).unwrap();
        s.create(r, "default", cm("b"), false).unwrap();
        s.delete(r, "default", "a", &DeleteOptions::default())
            .unwrap();
        let (ev, now) = s.events_since(start).unwrap();
        let kinds: Vec<_> = ev
            .iter()
            .map(|e| (e.kind, meta::name(&e.object).to_string()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (EventKind::Added, "a".into()),
                (EventKind::Added, "b".into()),
                (EventKind::Deleted, "a".into())
            ]
        );
        assert!(ev.windows(2).all(|w| w[0].rv < w[1].rv));
        assert_eq!(ev.last().unwrap().rv, now);
    }

    #[test]
    fn finalizers_hold_deletion() {
        let s = store();
        let r = find("", "v1", "configmaps").unwrap();
        let mut o = cm("f");
        o["metadata"]["finalizers"] = json!(["example.com/hold"]);
        s.create(r, "default", o, false).unwrap();
        let marked = s
            .delete(r, "default", "f", &DeleteOptions::default())
            .unwrap();
        assert!(marked["metadata"]["deletionTimestamp"].is_string());
        let mut cur = s.get(r, "default", "f").unwrap();
        cur["metadata"]["finalizers"] = json!([]);
        s.update(r, "default", "f", cur, Sub::Main, false).unwrap();
        assert_eq!(s.get(r, "default", "f").unwrap_err().code, 404);
    }

    #[test]
    fn status_is_separate() {
        let s = store();
        let r = find("apps", "v1", "deployments").unwrap();
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let d = s.create(r, "default", d, false).unwrap();
        assert_eq!(d["metadata"]["generation"], 1);
        s.modify(r, "default", "d", Sub::Status, |o| {
            o["status"] = json!({"replicas": 1});
            Ok(())
        })
        .unwrap();
        let mut upd = s.get(r, "default", "d").unwrap();
        upd["status"] = json!({"replicas": 9});
        upd["spec"]["replicas"] = json!(3);
        let out = s.update(r, "default", "d", upd, Sub::Main, false).unwrap();
        assert_eq!(out["status"]["replicas"], 1);
        assert_eq!(out["metadata"]["generation"], 2);
    }

    #[test]
    fn old_watch_version_is_gone() {
        let s = store();
        let r = find("", "v1", "configmaps").unwrap();
        for i in 0..(EVENT_LOG_LEN + 5) {
            s.create(r, "default", cm(&format!("c{i}")), false).unwrap();
        }
        assert_eq!(s.events_since(1).unwrap_err().code, 410);
    }
}
