//! The Job controller and the TTL-after-finished controller (batch/v1).
//!
//! The Job controller turns a Job into pods from `spec.template` (non-indexed completion
//! mode), counts finished pods, applies `backoffLimit`, `activeDeadlineSeconds` and
//! `suspend`, and writes the status (`active`, `ready`, `terminating`, `succeeded`,
//! `failed`, `startTime`, `completionTime`, conditions) and Events as kube-controller-manager
//! does. What to do for one Job is decided by the pure [`plan`]; the pass only applies it.
//!
//! The TTL-after-finished controller deletes finished Jobs `ttlSecondsAfterFinished`
//! seconds after they finished, with foreground propagation and a UID precondition, as
//! upstream does.

use std::collections::{HashMap, HashSet};

use serde_json::{Value, json};
use time::OffsetDateTime;

use super::util::{is_deleting, log_err, pod_from_template, pod_ready, pods, r, with_kind};
use crate::meta;
use crate::store::{DeleteOptions, Store, Sub};

/// The finished pods a Job has counted, by pod UID. A real controller keeps these counts in
/// the Job's status with a pod finalizer; the simulator remembers the UIDs in memory (its
/// store does not outlive it) so that a finished pod that is deleted later stays counted.
#[derive(Debug, Default, Clone)]
pub(crate) struct Tally {
    succeeded: HashSet<String>,
    failed: HashSet<String>,
}

impl Tally {
    /// Counts the finished (and, as failures, the deleted unfinished) pods among `pods`.
    fn observe(&mut self, pods: &[&Value]) {
        for p in pods {
            let uid = meta::uid(p).to_string();
            match meta::str_at(p, &["status", "phase"]) {
                "Succeeded" => {
                    self.succeeded.insert(uid);
                }
                "Failed" => {
                    self.failed.insert(uid);
                }
                // A pod deleted before it finished counts as failed (the upstream default
                // `podReplacementPolicy: TerminatingOrFailed` also replaces it at once).
                _ if is_deleting(p) => {
                    self.failed.insert(uid);
                }
                _ => {}
            }
        }
    }
}

/// A condition a Job reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cond {
    ty: &'static str,
    reason: &'static str,
    message: &'static str,
}

/// An Event to record on the Job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JobEvent {
    /// `Normal` or `Warning`.
    pub(crate) kind: &'static str,
    /// Reason (`SuccessfulCreate`, `Completed`, `BackoffLimitExceeded`, ...).
    pub(crate) reason: &'static str,
    /// Message.
    pub(crate) message: String,
}

/// What the controller does for one Job in one pass.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct JobPlan {
    /// How many pods to create.
    pub(crate) create: usize,
    /// Names of active pods to delete.
    pub(crate) delete: Vec<String>,
    /// The Job's new `status`.
    pub(crate) status: Value,
    /// Events for transitions reached in this pass.
    pub(crate) events: Vec<JobEvent>,
}

fn int(v: &Value, path: &str) -> Option<i64> {
    v.pointer(path).and_then(Value::as_i64)
}

fn has_condition(status: &Value, ty: &str) -> bool {
    status
        .get("conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| meta::str_at(c, &["type"]) == ty && meta::str_at(c, &["status"]) == "True")
        })
}

/// Whether a Job has finished (`Complete` or `Failed` is true), and when.
pub(crate) fn finished_at(job: &Value) -> Option<OffsetDateTime> {
    let conds = job
        .pointer("/status/conditions")
        .and_then(Value::as_array)?;
    conds
        .iter()
        .find(|c| {
            matches!(meta::str_at(c, &["type"]), "Complete" | "Failed")
                && meta::str_at(c, &["status"]) == "True"
        })
        .map(|c| {
            meta::parse_time(meta::str_at(c, &["lastTransitionTime"]))
                .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        })
}

/// Sets condition `ty` to `status` (keeping `lastTransitionTime` when it does not change).
fn set_condition(
    conds: &mut Vec<Value>,
    ty: &str,
    status: bool,
    reason: &str,
    msg: &str,
    now: &str,
) {
    let s = if status { "True" } else { "False" };
    if let Some(c) = conds.iter_mut().find(|c| meta::str_at(c, &["type"]) == ty) {
        if meta::str_at(c, &["status"]) != s {
            c["lastTransitionTime"] = json!(now);
        }
        c["status"] = json!(s);
        c["reason"] = json!(reason);
        c["message"] = json!(msg);
        c["lastProbeTime"] = json!(now);
        return;
    }
    conds.push(
        json!({"type": ty, "status": s, "reason": reason, "message": msg,
        "lastProbeTime": now, "lastTransitionTime": now}),
    );
}

/// Decides what to do for `job`, given its pods (owned by it, not necessarily active) and
/// the finished pods counted so far.
pub(crate) fn plan(job: &Value, pods: &[&Value], tally: &Tally, now: OffsetDateTime) -> JobPlan {
    let now_s = meta::format_time(now);
    let old = job.get("status").cloned().unwrap_or(json!({}));
    let parallelism = int(job, "/spec/parallelism").unwrap_or(1).max(0);
    let completions = int(job, "/spec/completions");
    let backoff_limit = int(job, "/spec/backoffLimit").unwrap_or(6).max(0);
    let suspended = job.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true);
    let on_failure =
        meta::str_at(job, &["spec", "template", "spec", "restartPolicy"]) == "OnFailure";
    let replace_terminating = meta::str_at(job, &["spec", "podReplacementPolicy"]) != "Failed";

    let active: Vec<&Value> = pods
        .iter()
        .copied()
        .filter(|p| super::util::pod_active(p))
        .collect();
    let terminating = pods
        .iter()
        .filter(|p| {
            is_deleting(p)
                && !matches!(
                    meta::str_at(p, &["status", "phase"]),
                    "Succeeded" | "Failed"
                )
        })
        .count() as i64;
    let ready = active.iter().filter(|p| pod_ready(p)).count() as i64;
    let succeeded = (tally.succeeded.len() as i64).max(int(&old, "/succeeded").unwrap_or(0));
    let failed = (tally.failed.len() as i64).max(int(&old, "/failed").unwrap_or(0));
    // With `OnFailure` the kubelet restarts containers in place; those restarts count
    // toward the backoff limit.
    let restarts: i64 = if on_failure {
        active
            .iter()
            .flat_map(|p| {
                p.pointer("/status/containerStatuses")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|c| c.get("restartCount").and_then(Value::as_i64))
            .sum()
    } else {
        0
    };

    let mut conds: Vec<Value> = old
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut events = Vec::new();
    let mut create = 0usize;
    let mut delete: Vec<String> = Vec::new();
    let mut start_time = old.get("startTime").cloned();
    let mut completion_time = old.get("completionTime").cloned();
    let done = has_condition(&old, "Complete") || has_condition(&old, "Failed");

    // The terminal state this pass reaches, if any: (target condition, final condition).
    let target: Option<(Cond, Cond)> =
        if has_condition(&old, "FailureTarget") || has_condition(&old, "Failed") {
            let c = conds
                .iter()
                .find(|c| {
                    meta::str_at(c, &["type"]) == "FailureTarget"
                        || meta::str_at(c, &["type"]) == "Failed"
                })
                .map(|c| meta::str_at(c, &["reason"]).to_string())
                .unwrap_or_default();
            Some(failure(if c == "DeadlineExceeded" {
                "DeadlineExceeded"
            } else {
                "BackoffLimitExceeded"
            }))
        } else if has_condition(&old, "SuccessCriteriaMet") || has_condition(&old, "Complete") {
            Some(success())
        } else if failed + restarts > backoff_limit {
            Some(failure("BackoffLimitExceeded"))
        } else if let Some(limit) = int(job, "/spec/activeDeadlineSeconds")
            && let Some(start) = start_time
                .as_ref()
                .and_then(Value::as_str)
                .and_then(meta::parse_time)
            && !suspended
            && now >= start + time::Duration::seconds(limit)
        {
            Some(failure("DeadlineExceeded"))
        } else if match completions {
            Some(c) => succeeded >= c,
            None => succeeded > 0 && active.is_empty(),
        } {
            Some(success())
        } else {
            None
        };

    if let Some((interim, last)) = &target {
        // Whatever still runs is stopped; the final condition waits until it has.
        for p in &active {
            delete.push(meta::name(p).to_string());
        }
        if !has_condition(&old, interim.ty) && !done {
            set_condition(
                &mut conds,
                interim.ty,
                true,
                interim.reason,
                interim.message,
                &now_s,
            );
        }
        if !done && active.is_empty() && terminating == 0 {
            set_condition(&mut conds, last.ty, true, last.reason, last.message, &now_s);
            let (kind, reason, message) = if last.ty == "Complete" {
                completion_time = Some(json!(now_s));
                ("Normal", "Completed", "Job completed".to_string())
            } else {
                ("Warning", last.reason, last.message.to_string())
            };
            events.push(JobEvent {
                kind,
                reason,
                message,
            });
        }
    } else if suspended {
        for p in &active {
            delete.push(meta::name(p).to_string());
        }
        if !has_condition(&old, "Suspended") {
            set_condition(
                &mut conds,
                "Suspended",
                true,
                "JobSuspended",
                "Job suspended",
                &now_s,
            );
            events.push(JobEvent {
                kind: "Normal",
                reason: "Suspended",
                message: "Job suspended".into(),
            });
        }
        start_time = None;
    } else {
        if has_condition(&old, "Suspended") {
            set_condition(
                &mut conds,
                "Suspended",
                false,
                "JobResumed",
                "Job resumed",
                &now_s,
            );
            events.push(JobEvent {
                kind: "Normal",
                reason: "Resumed",
                message: "Job resumed".into(),
            });
        }
        if start_time.is_none() {
            start_time = Some(json!(now_s));
        }
        let want = match completions {
            Some(c) => parallelism.min(c - succeeded).max(0),
            None if succeeded > 0 => 0,
            None => parallelism,
        };
        let running = active.len() as i64 + if replace_terminating { 0 } else { terminating };
        create = (want - running).max(0) as usize;
    }

    let mut status = serde_json::Map::new();
    let mut put_nonzero = |k: &str, v: i64| {
        if v != 0 {
            status.insert(k.into(), json!(v));
        }
    };
    put_nonzero("active", active.len() as i64 - delete.len() as i64);
    put_nonzero("succeeded", succeeded);
    put_nonzero("failed", failed);
    status.insert("ready".into(), json!(ready));
    status.insert("terminating".into(), json!(terminating));
    if let Some(t) = start_time {
        status.insert("startTime".into(), t);
    }
    if let Some(t) = completion_time {
        status.insert("completionTime".into(), t);
    }
    if !conds.is_empty() {
        status.insert("conditions".into(), Value::Array(conds));
    }
    status.insert("uncountedTerminatedPods".into(), json!({}));
    JobPlan {
        create,
        delete,
        status: Value::Object(status),
        events,
    }
}

fn success() -> (Cond, Cond) {
    let msg = "Reached expected number of succeeded pods";
    (
        Cond {
            ty: "SuccessCriteriaMet",
            reason: "CompletionsReached",
            message: msg,
        },
        Cond {
            ty: "Complete",
            reason: "CompletionsReached",
            message: msg,
        },
    )
}

fn failure(reason: &'static str) -> (Cond, Cond) {
    let message = if reason == "DeadlineExceeded" {
        "Job was active longer than specified deadline"
    } else {
        "Job has reached the specified backoff limit"
    };
    (
        Cond {
            ty: "FailureTarget",
            reason,
            message,
        },
        Cond {
            ty: "Failed",
            reason,
            message,
        },
    )
}

/// The Job controller's state between passes.
#[derive(Debug, Default)]
pub(crate) struct JobController {
    tallies: HashMap<String, Tally>,
}

impl JobController {
    /// One level-triggered pass over every Job.
    pub(crate) fn pass(&mut self, store: &Store) {
        let jobres = r("batch", "jobs");
        let all_pods = store.list_all(pods(), None);
        let jobs = store.list_all(jobres, None);
        let live: HashSet<&str> = jobs.iter().map(meta::uid).collect();
        self.tallies.retain(|uid, _| live.contains(uid.as_str()));
        let now = OffsetDateTime::now_utc();
        for job in &jobs {
            if is_deleting(job) {
                continue;
            }
            let (ns, name, uid) = (meta::namespace(job), meta::name(job), meta::uid(job));
            let mine: Vec<&Value> = all_pods
                .iter()
                .filter(|p| meta::namespace(p) == ns)
                .filter(|p| meta::controller_of(p).is_some_and(|(_, _, u)| u == uid))
                .collect();
            let tally = self.tallies.entry(uid.to_string()).or_default();
            tally.observe(&mine);
            let mut p = plan(job, &mine, tally, now);
            let owner = with_kind(job, "batch/v1", "Job");
            for victim in &p.delete {
                log_err(
                    "delete job pod",
                    store.delete(pods(), ns, victim, &DeleteOptions::default()),
                );
            }
            if !p.delete.is_empty() {
                p.events.push(JobEvent {
                    kind: "Normal",
                    reason: "SuccessfulDelete",
                    message: format!("Deleted pod: {}", p.delete.join(", ")),
                });
            }
            let template = job.pointer("/spec/template").cloned().unwrap_or(json!({}));
            let mut created = 0i64;
            for _ in 0..p.create {
                let pod_name = format!("{name}-{}", meta::random_suffix(5));
                let pod = pod_from_template(&owner, &template, &pod_name, &[]);
                match store.create(pods(), ns, pod, false) {
                    Ok(_) => {
                        created += 1;
                        p.events.push(JobEvent {
                            kind: "Normal",
                            reason: "SuccessfulCreate",
                            message: format!("Created pod: {pod_name}"),
                        });
                    }
                    Err(e) => {
                        p.events.push(JobEvent {
                            kind: "Warning",
                            reason: "FailedCreate",
                            message: format!("Error creating: {}", e.message),
                        });
                        break;
                    }
                }
            }
            if created > 0 {
                let active = int(&p.status, "/active").unwrap_or(0) + created;
                p.status["active"] = json!(active);
            }
            for ev in &p.events {
                record_event(store, &owner, "job-controller", ev);
            }
            let status = p.status;
            log_err(
                "update job status",
                store.modify(jobres, ns, name, Sub::Status, |o| {
                    // Conditions keep their times unless they changed; the rest is rewritten.
                    o["status"] = status;
                    Ok(())
                }),
            );
        }
    }
}

/// Records (or counts again) an Event about `obj` from `component`.
pub(crate) fn record_event(store: &Store, obj: &Value, component: &str, ev: &JobEvent) {
    let evres = r("", "events");
    let ns = meta::namespace(obj);
    let key = json!([meta::uid(obj), ev.reason, ev.message]);
    let name = format!("{}.{}", meta::name(obj), meta::short_hash(&key));
    let now = meta::now_rfc3339();
    if store.get(evres, ns, &name).is_ok() {
        log_err(
            "count event",
            store.modify(evres, ns, &name, Sub::Main, |o| {
                let n = o.get("count").and_then(Value::as_i64).unwrap_or(1);
                o["count"] = json!(n + 1);
                o["lastTimestamp"] = json!(now);
                Ok(())
            }),
        );
        return;
    }
    let involved = json!({
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "namespace": ns,
        "name": meta::name(obj),
        "uid": meta::uid(obj),
        "resourceVersion": meta::str_at(obj, &["metadata", "resourceVersion"]),
    });
    log_err(
        "record event",
        store.create(
            evres,
            ns,
            json!({
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": name},
                "involvedObject": involved,
                "reason": ev.reason,
                "message": ev.message,
                "type": ev.kind,
                "source": {"component": component},
                "reportingComponent": component,
                "count": 1,
                "firstTimestamp": now,
                "lastTimestamp": now,
            }),
            false,
        ),
    );
}

/// The TTL-after-finished controller: deletes each finished Job whose
/// `ttlSecondsAfterFinished` has passed (foreground propagation, UID precondition).
pub(crate) fn ttl_after_finished(store: &Store) {
    let jobres = r("batch", "jobs");
    let now = OffsetDateTime::now_utc();
    for job in store.list_all(jobres, None) {
        if let Some(opts) = ttl_expired(&job, now) {
            log_err(
                "delete finished job",
                store.delete(jobres, meta::namespace(&job), meta::name(&job), &opts),
            );
        }
    }
}

/// The delete to issue when `job`'s TTL after finishing has passed at `now`.
pub(crate) fn ttl_expired(job: &Value, now: OffsetDateTime) -> Option<DeleteOptions> {
    if is_deleting(job) {
        return None;
    }
    let ttl = int(job, "/spec/ttlSecondsAfterFinished")?;
    let finished = finished_at(job)?;
    (now >= finished + time::Duration::seconds(ttl)).then(|| DeleteOptions {
        propagation_policy: Some("Foreground".into()),
        precondition_uid: Some(meta::uid(job).to_string()),
        ..DeleteOptions::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::tests::{kubelet, setup};

    fn job_res() -> &'static crate::resources::ResourceInfo {
        r("batch", "jobs")
    }

    fn job_body(name: &str) -> Value {
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "c", "image": "i"}]}}}})
    }

    fn stored_job(extra: Value) -> Value {
        let mut j = json!({"metadata": {"name": "j", "namespace": "default", "uid": "u1"},
            "spec": {"parallelism": 1, "completions": 1, "backoffLimit": 6,
                "template": {"spec": {"restartPolicy": "Never"}}}});
        crate::patch::merge_patch(&mut j, &extra);
        j
    }

    fn pod(name: &str, phase: &str) -> Value {
        json!({"metadata": {"name": name, "uid": format!("uid-{name}")}, "status": {"phase": phase}})
    }

    fn t0() -> OffsetDateTime {
        meta::parse_time("2026-01-01T00:00:00Z").unwrap()
    }

    fn cond(status: &Value, ty: &str) -> Option<(String, String)> {
        status["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == ty)
            .map(|c| {
                (
                    c["status"].as_str().unwrap().to_string(),
                    c["reason"].as_str().unwrap_or("").to_string(),
                )
            })
    }

    fn tally_of(pods: &[&Value]) -> Tally {
        let mut t = Tally::default();
        t.observe(pods);
        t
    }

    #[test]
    fn a_new_job_starts_one_pod() {
        let j = stored_job(json!({}));
        let p = plan(&j, &[], &Tally::default(), t0());
        assert_eq!(p.create, 1);
        assert!(p.delete.is_empty());
        assert_eq!(p.status["startTime"], "2026-01-01T00:00:00Z");
        assert!(p.status.get("active").is_none());
        assert!(p.status.get("conditions").is_none());
        let running = pod("j-a", "Running");
        let p = plan(&j, &[&running], &Tally::default(), t0());
        assert_eq!((p.create, p.status["active"].as_i64()), (0, Some(1)));
    }

    #[test]
    fn a_pod_that_exits_zero_completes_the_job() {
        let j = stored_job(json!({}));
        let done = pod("j-a", "Succeeded");
        let p = plan(&j, &[&done], &tally_of(&[&done]), t0());
        assert_eq!(p.create, 0);
        assert_eq!(p.status["succeeded"], 1);
        assert_eq!(cond(&p.status, "SuccessCriteriaMet").unwrap().0, "True");
        assert_eq!(
            cond(&p.status, "Complete").unwrap(),
            ("True".into(), "CompletionsReached".into())
        );
        assert_eq!(p.status["completionTime"], "2026-01-01T00:00:00Z");
        assert_eq!(p.events[0].reason, "Completed");
        // A later pass changes nothing and sends no second event.
        let mut j2 = j.clone();
        j2["status"] = p.status.clone();
        let later = plan(
            &j2,
            &[&done],
            &tally_of(&[&done]),
            t0() + time::Duration::seconds(5),
        );
        assert_eq!(later.status, p.status);
        assert!(later.events.is_empty() && later.create == 0);
        // The count survives the pod's deletion.
        let again = plan(&j2, &[], &Tally::default(), t0());
        assert_eq!(again.status["succeeded"], 1);
        assert_eq!(again.create, 0);
    }

    #[test]
    fn failures_beyond_the_backoff_limit_fail_the_job() {
        let j = stored_job(json!({"spec": {"backoffLimit": 1}}));
        let f1 = pod("j-a", "Failed");
        let p = plan(&j, &[&f1], &tally_of(&[&f1]), t0());
        assert_eq!((p.create, p.status["failed"].as_i64()), (1, Some(1)));
        assert!(cond(&p.status, "Failed").is_none());
        let f2 = pod("j-b", "Failed");
        let p = plan(&j, &[&f1, &f2], &tally_of(&[&f1, &f2]), t0());
        assert_eq!(p.create, 0);
        assert_eq!(
            cond(&p.status, "Failed").unwrap(),
            ("True".into(), "BackoffLimitExceeded".into())
        );
        assert!(p.status.get("completionTime").is_none());
        assert_eq!(p.events[0].reason, "BackoffLimitExceeded");
    }

    #[test]
    fn backoff_limit_zero_fails_on_the_first_failure() {
        let j = stored_job(json!({"spec": {"backoffLimit": 0}}));
        let f = pod("j-a", "Failed");
        let p = plan(&j, &[&f], &tally_of(&[&f]), t0());
        assert_eq!(p.create, 0);
        assert_eq!(cond(&p.status, "Failed").unwrap().0, "True");
    }

    #[test]
    fn on_failure_restarts_count_toward_the_backoff_limit() {
        let j = stored_job(json!({"spec": {"backoffLimit": 2,
            "template": {"spec": {"restartPolicy": "OnFailure"}}}}));
        let mut p1 = pod("j-a", "Running");
        p1["status"]["containerStatuses"] = json!([{"name": "c", "restartCount": 3}]);
        let p = plan(&j, &[&p1], &tally_of(&[&p1]), t0());
        assert_eq!(p.delete, vec!["j-a".to_string()]);
        assert_eq!(
            cond(&p.status, "FailureTarget").unwrap().1,
            "BackoffLimitExceeded"
        );
        // Failed only once the pod is gone.
        assert!(cond(&p.status, "Failed").is_none());
    }

    #[test]
    fn a_deleted_running_pod_is_replaced_and_counted_as_failed() {
        let j = stored_job(json!({}));
        let mut gone = pod("j-a", "Running");
        gone["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        let p = plan(&j, &[&gone], &tally_of(&[&gone]), t0());
        assert_eq!(p.create, 1);
        assert_eq!(p.status["failed"], 1);
        assert_eq!(p.status["terminating"], 1);
    }

    #[test]
    fn the_active_deadline_stops_the_job() {
        let mut j = stored_job(json!({"spec": {"activeDeadlineSeconds": 30}}));
        j["status"] = json!({"startTime": "2026-01-01T00:00:00Z", "active": 1});
        let running = pod("j-a", "Running");
        let p = plan(
            &j,
            &[&running],
            &Tally::default(),
            t0() + time::Duration::seconds(29),
        );
        assert!(p.delete.is_empty());
        let p = plan(
            &j,
            &[&running],
            &Tally::default(),
            t0() + time::Duration::seconds(30),
        );
        assert_eq!(p.delete, vec!["j-a".to_string()]);
        assert_eq!(
            cond(&p.status, "FailureTarget").unwrap().1,
            "DeadlineExceeded"
        );
        j["status"] = p.status;
        let p = plan(
            &j,
            &[],
            &Tally::default(),
            t0() + time::Duration::seconds(31),
        );
        assert_eq!(
            cond(&p.status, "Failed").unwrap(),
            ("True".into(), "DeadlineExceeded".into())
        );
    }

    #[test]
    fn suspend_stops_pods_and_resume_restarts() {
        let j = stored_job(json!({"spec": {"suspend": true}}));
        let running = pod("j-a", "Running");
        let p = plan(&j, &[&running], &Tally::default(), t0());
        assert_eq!((p.create, p.delete.len()), (0, 1));
        assert_eq!(cond(&p.status, "Suspended").unwrap().0, "True");
        let mut j2 = stored_job(json!({"spec": {"suspend": false}}));
        j2["status"] = p.status;
        let p = plan(&j2, &[], &Tally::default(), t0());
        assert_eq!(p.create, 1);
        assert_eq!(
            cond(&p.status, "Suspended").unwrap(),
            ("False".into(), "JobResumed".into())
        );
    }

    #[test]
    fn parallel_jobs_start_up_to_the_remaining_completions() {
        let j = stored_job(json!({"spec": {"parallelism": 3, "completions": 4}}));
        let done: Vec<Value> = (0..2).map(|i| pod(&format!("d{i}"), "Succeeded")).collect();
        let refs: Vec<&Value> = done.iter().collect();
        let p = plan(&j, &refs, &tally_of(&refs), t0());
        assert_eq!(p.create, 2);
    }

    #[test]
    fn ttl_expiry_is_foreground_with_a_uid_precondition() {
        let mut j = stored_job(json!({"spec": {"ttlSecondsAfterFinished": 10}}));
        assert!(ttl_expired(&j, t0()).is_none(), "not finished");
        j["status"] = json!({"conditions": [{"type": "Complete", "status": "True",
            "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
        assert!(ttl_expired(&j, t0() + time::Duration::seconds(9)).is_none());
        let opts = ttl_expired(&j, t0() + time::Duration::seconds(10)).unwrap();
        assert_eq!(opts.propagation_policy.as_deref(), Some("Foreground"));
        assert_eq!(opts.precondition_uid.as_deref(), Some("u1"));
        j["spec"]["ttlSecondsAfterFinished"] = Value::Null;
        assert!(ttl_expired(&j, t0() + time::Duration::seconds(1000)).is_none());
    }

    #[test]
    fn admission_defaults_selector_and_labels() {
        let s = setup();
        let j = s
            .create(job_res(), "default", job_body("work"), false)
            .unwrap();
        let uid = meta::uid(&j);
        assert_eq!(j["spec"]["backoffLimit"], 6);
        assert_eq!(
            (
                j["spec"]["completions"].as_i64(),
                j["spec"]["parallelism"].as_i64()
            ),
            (Some(1), Some(1))
        );
        assert_eq!(
            j["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
            uid
        );
        let labels = &j["spec"]["template"]["metadata"]["labels"];
        assert_eq!(labels["job-name"], "work");
        assert_eq!(labels["batch.kubernetes.io/job-name"], "work");
        assert_eq!(labels["controller-uid"], uid);
        assert_eq!(j["metadata"]["generation"], 1);
        // restartPolicy must be Never or OnFailure (the pod default, Always, is refused).
        let mut bad = job_body("bad");
        bad["spec"]["template"]["spec"]
            .as_object_mut()
            .unwrap()
            .remove("restartPolicy");
        let e = s.create(job_res(), "default", bad, false).unwrap_err();
        assert_eq!(e.code, 422);
        assert!(
            e.message.contains("spec.template.spec.restartPolicy"),
            "{}",
            e.message
        );
        // A hand-written selector needs manualSelector.
        let mut sel = job_body("sel");
        sel["spec"]["selector"] = json!({"matchLabels": {"a": "b"}});
        assert_eq!(
            s.create(job_res(), "default", sel, false).unwrap_err().code,
            422
        );
        // The template is immutable.
        let mut upd = j.clone();
        upd["spec"]["template"]["spec"]["containers"][0]["image"] = json!("other");
        let e = s
            .update(job_res(), "default", "work", upd, Sub::Main, false)
            .unwrap_err();
        assert!(e.message.contains("spec.template"), "{}", e.message);
    }

    /// The stand-in kubelet, plus: pods that should exit do (`exit` annotation = code).
    fn kubelet_with_exits(s: &Store) {
        kubelet(s);
        for p in s.list_all(pods(), None) {
            let code = meta::str_at(&p, &["metadata", "annotations", "exit"]);
            if code.is_empty() || is_deleting(&p) {
                continue;
            }
            let phase = if code == "0" { "Succeeded" } else { "Failed" };
            s.modify(
                pods(),
                meta::namespace(&p),
                meta::name(&p),
                Sub::Status,
                |o| {
                    o["status"]["phase"] = json!(phase);
                    o["status"]["conditions"] = json!([{"type": "Ready", "status": "False"}]);
                    Ok(())
                },
            )
            .unwrap();
        }
    }

    fn settle(s: &Store, jc: &mut JobController) {
        for _ in 0..6 {
            super::super::schedule(s);
            jc.pass(s);
            kubelet_with_exits(s);
            ttl_after_finished(s);
            super::super::garbage_collect(s);
        }
    }

    #[test]
    fn job_pod_completes_and_ttl_collects_everything() {
        let s = setup();
        let mut jc = JobController::default();
        let mut body = job_body("relay");
        body["spec"]["ttlSecondsAfterFinished"] = json!(0);
        let j = s.create(job_res(), "default", body, false).unwrap();
        jc.pass(&s);
        let ps = s.list_all(pods(), Some("default"));
        assert_eq!(ps.len(), 1);
        let p = &ps[0];
        assert!(meta::name(p).starts_with("relay-"));
        assert_eq!(p["metadata"]["labels"]["job-name"], "relay");
        assert_eq!(
            p["metadata"]["labels"]["batch.kubernetes.io/job-name"],
            "relay"
        );
        assert_eq!(p["metadata"]["labels"]["controller-uid"], meta::uid(&j));
        let owner = &p["metadata"]["ownerReferences"][0];
        assert_eq!(
            (
                owner["apiVersion"].as_str(),
                owner["kind"].as_str(),
                owner["uid"].as_str()
            ),
            (Some("batch/v1"), Some("Job"), Some(meta::uid(&j)))
        );
        assert_eq!(
            (
                owner["controller"].as_bool(),
                owner["blockOwnerDeletion"].as_bool()
            ),
            (Some(true), Some(true))
        );
        settle(&s, &mut jc);
        let cur = s.get(job_res(), "default", "relay").unwrap();
        assert_eq!(cur["status"]["active"], 1);
        assert!(cur["status"]["startTime"].is_string());
        // The pod exits 0: the Job completes, the TTL of 0 deletes it, GC takes the pod.
        let pname = meta::name(p).to_string();
        s.modify(pods(), "default", &pname, Sub::Main, |o| {
            o["metadata"]["annotations"] = json!({"exit": "0"});
            Ok(())
        })
        .unwrap();
        kubelet_with_exits(&s);
        jc.pass(&s);
        let cur = s.get(job_res(), "default", "relay").unwrap();
        assert_eq!(cond(&cur["status"], "Complete").unwrap().0, "True");
        assert_eq!(cur["status"]["succeeded"], 1);
        let events: Vec<String> = s
            .list_all(r("", "events"), Some("default"))
            .iter()
            .filter(|e| e["involvedObject"]["name"] == "relay")
            .map(|e| e["reason"].as_str().unwrap().to_string())
            .collect();
        assert!(
            events.contains(&"SuccessfulCreate".into()) && events.contains(&"Completed".into()),
            "{events:?}"
        );
        settle(&s, &mut jc);
        assert_eq!(s.get(job_res(), "default", "relay").unwrap_err().code, 404);
        assert!(s.list_all(pods(), Some("default")).is_empty());
    }

    #[test]
    fn a_failing_pod_is_retried_up_to_the_backoff_limit() {
        let s = setup();
        let mut jc = JobController::default();
        let mut body = job_body("flaky");
        body["spec"]["backoffLimit"] = json!(1);
        body["spec"]["template"]["metadata"] = json!({"annotations": {"exit": "1"}});
        s.create(job_res(), "default", body, false).unwrap();
        settle(&s, &mut jc);
        let cur = s.get(job_res(), "default", "flaky").unwrap();
        assert_eq!(cur["status"]["failed"], 2);
        assert_eq!(
            cond(&cur["status"], "Failed").unwrap().1,
            "BackoffLimitExceeded"
        );
        assert_eq!(
            s.list_all(pods(), Some("default")).len(),
            2,
            "failed pods are kept"
        );
    }

    #[test]
    fn deleting_a_job_without_a_policy_orphans_its_pods() {
        let s = setup();
        let mut jc = JobController::default();
        s.create(job_res(), "default", job_body("keep"), false)
            .unwrap();
        settle(&s, &mut jc);
        s.delete(job_res(), "default", "keep", &DeleteOptions::default())
            .unwrap();
        settle(&s, &mut jc);
        assert_eq!(s.get(job_res(), "default", "keep").unwrap_err().code, 404);
        let ps = s.list_all(pods(), Some("default"));
        assert_eq!(ps.len(), 1, "the pod is orphaned, not deleted");
        assert!(
            ps[0]["metadata"]["ownerReferences"]
                .as_array()
                .is_none_or(Vec::is_empty)
        );
        assert!(crate::store::default_propagation_warning(job_res()).is_some());
        assert!(crate::store::default_propagation_warning(pods()).is_none());
    }

    #[test]
    fn pod_security_refusals_become_failed_create_events() {
        let s = setup();
        let mut jc = JobController::default();
        s.modify(r("", "namespaces"), "", "default", Sub::Main, |o| {
            o["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] = json!("restricted");
            Ok(())
        })
        .unwrap();
        // A plain pod is refused with upstream's message.
        let e = s
            .create(
                pods(),
                "default",
                json!({"metadata": {"name": "plain"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}),
                false,
            )
            .unwrap_err();
        assert_eq!((e.code, e.reason), (403, "Forbidden"));
        assert!(
            e.message.starts_with("pods \"plain\" is forbidden: violates PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false"),
            "{}",
            e.message
        );
        // A Job whose template is not hardened gets no pod, and a FailedCreate event.
        s.create(job_res(), "default", job_body("weak"), false)
            .unwrap();
        jc.pass(&s);
        assert!(s.list_all(pods(), Some("default")).is_empty());
        let ev = s
            .list_all(r("", "events"), Some("default"))
            .into_iter()
            .find(|e| e["reason"] == "FailedCreate")
            .expect("a FailedCreate event");
        assert_eq!(ev["involvedObject"]["kind"], "Job");
        assert!(
            ev["message"]
                .as_str()
                .unwrap()
                .contains("violates PodSecurity")
        );
        // A hardened template runs.
        let mut strong = job_body("strong");
        strong["spec"]["template"]["spec"] = json!({"restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "image": "i", "securityContext": {
                "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]});
        s.create(job_res(), "default", strong, false).unwrap();
        jc.pass(&s);
        assert_eq!(s.list_all(pods(), Some("default")).len(), 1);
        // Bad labels are refused.
        let e = s
            .modify(r("", "namespaces"), "", "default", Sub::Main, |o| {
                o["metadata"]["labels"]["pod-security.kubernetes.io/warn"] = json!("strict");
                Ok(())
            })
            .unwrap_err();
        assert_eq!(e.code, 422);
    }
}
