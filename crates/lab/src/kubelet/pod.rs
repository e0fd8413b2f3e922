//! One pod's worker: creates its sandbox, runs init containers then containers (restarts,
//! probes), and tears everything down when the pod goes.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use kubelan_apisim::meta;
use kubelan_apisim::store::Sub;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::netops::{self, ProbeResult};
use crate::runtime::PodPlace;

use super::node::PodWorker;
use super::pod_run::{ContainerStatus, PodRun, update_container, write_status};
use super::probes::{Probe, run_probe};
use super::spawn::{exit_info, spawn_container, stop_process};
use super::{log_api, pods};

// ------------------------------------------------------------------ pod worker

impl PodWorker {
    pub(super) async fn run(self) {
        let ns = meta::namespace(&self.pod).to_string();
        let name = meta::name(&self.pod).to_string();
        let uid = meta::uid(&self.pod).to_string();
        let ctx = self.agent.ctx.clone();
        if self.terminate.is_cancelled()
            && meta::metadata(&self.pod).get("deletionTimestamp").is_some()
        {
            // Deleted before it ever started here.
            log_api(
                "finish deletion",
                ctx.store.finish_deletion(pods(), &ns, &name, &uid),
            );
            return;
        }
        let sandbox = tokio::select! {
            s = self.create_sandbox() => s,
            _ = self.force.cancelled() => Err(anyhow::anyhow!("pod removed")),
        };
        let (run, holder, veth_ns) = match sandbox {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(pod = %format!("{ns}/{name}"), error = %format!("{e:#}"), "cannot create pod sandbox");
                let msg = format!("{e:#}");
                log_api(
                    "report sandbox failure",
                    ctx.store.modify(pods(), &ns, &name, Sub::Status, |o| {
                        let mut st = o.get("status").cloned().unwrap_or(json!({}));
                        st["phase"] = json!("Pending");
                        st["conditions"] = json!([{"type": "PodScheduled", "status": "True"}, {"type": "PodReadyToStartContainers", "status": "False", "reason": "FailedCreatePodSandBox", "message": msg}]);
                        o["status"] = st;
                        Ok(())
                    }),
                );
                self.cleanup_network(&uid, None).await;
                tokio::select! {
                    _ = self.terminate.cancelled() => log_api("finish deletion", ctx.store.finish_deletion(pods(), &ns, &name, &uid)),
                    _ = self.force.cancelled() => {}
                }
                return;
            }
        };
        let run = Arc::new(run);
        ctx.pods.lock().unwrap_or_else(|e| e.into_inner()).insert(
            (ns.clone(), name.clone()),
            PodPlace {
                uid: uid.clone(),
                netns: run.netns.clone(),
                dir: run.dir.clone(),
                holder: holder.pid,
                ip: run.ip,
            },
        );
        // Status writer.
        let writer = {
            let run = run.clone();
            let stop = CancellationToken::new();
            let s2 = stop.clone();
            tokio::spawn(async move {
                loop {
                    write_status(&run);
                    tokio::select! {
                        _ = run.changed.notified() => tokio::time::sleep(Duration::from_millis(10)).await,
                        _ = s2.cancelled() => { write_status(&run); return; }
                    }
                }
            });
            stop
        };
        // Init containers, one after the other.
        let stop_containers = CancellationToken::new();
        let init: Vec<Value> = self
            .pod
            .pointer("/spec/initContainers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut init_ok = true;
        for c in &init {
            let mut st = ContainerStatus::new(c);
            st.state = json!({"waiting": {"reason": "PodInitializing"}});
            let outcome = tokio::select! {
                r = run_init_container(run.clone(), c.clone(), stop_containers.clone()) => r,
                _ = self.terminate.cancelled() => false,
                _ = self.force.cancelled() => false,
            };
            if !outcome {
                init_ok = false;
                break;
            }
        }
        let mut tasks = Vec::new();
        if init_ok {
            let containers: Vec<Value> = self
                .pod
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            {
                let mut s = run.statuses.lock().unwrap_or_else(|e| e.into_inner());
                *s = containers.iter().map(ContainerStatus::new).collect();
            }
            run.changed.notify_one();
            for (i, c) in containers.into_iter().enumerate() {
                let run = run.clone();
                let stop = stop_containers.clone();
                let grace = self.grace.clone();
                tasks.push(tokio::spawn(async move {
                    run_container(run, i, c, stop, grace).await
                }));
            }
        }
        tokio::select! {
            _ = self.terminate.cancelled() => {}
            _ = self.force.cancelled() => { self.grace.store(0, Ordering::Relaxed); }
        }
        stop_containers.cancel();
        for t in tasks {
            let _ = t.await;
        }
        writer.cancel();
        ctx.pods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(ns.clone(), name.clone()));
        holder.stop().await;
        self.cleanup_network(&uid, Some((run.ip, veth_ns))).await;
        ctx.auth.revoke_pod_tokens(&uid);
        let _ = std::fs::remove_dir_all(&run.dir);
        if !self.force.is_cancelled() {
            log_api(
                "finish deletion",
                ctx.store.finish_deletion(pods(), &ns, &name, &uid),
            );
        }
        tracing::info!(pod = %format!("{ns}/{name}"), "pod stopped");
    }

    pub(super) fn host_network(&self) -> bool {
        self.pod
            .pointer("/spec/hostNetwork")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    pub(super) fn pod_netns_name(&self, uid: &str) -> String {
        self.agent
            .ctx
            .paths
            .netns(&format!("p-{}", &uid[..8.min(uid.len())]))
    }

    async fn cleanup_network(&self, uid: &str, allocated: Option<(Ipv4Addr, Option<String>)>) {
        if !self.host_network() {
            let name = self.pod_netns_name(uid);
            if let Err(e) = netops::netns_del(&name).await {
                tracing::warn!(error = %format!("{e:#}"), "cannot delete pod network namespace");
            }
        }
        if let Some((ip, _)) = allocated
            && !self.host_network()
        {
            self.agent
                .ipam
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .release(ip);
        }
    }
}

pub(super) async fn run_init_container(
    run: Arc<PodRun>,
    c: Value,
    stop: CancellationToken,
) -> bool {
    let name = meta::str_at(&c, &["name"]).to_string();
    let log = run.dir.join(format!("{name}.log"));
    let mut attempt = 0u32;
    loop {
        let child = spawn_container(&run, &c, &log).await;
        let ok = match child {
            Ok(mut ch) => tokio::select! {
                s = ch.wait() => s.map(|s| s.success()).unwrap_or(false),
                _ = stop.cancelled() => { stop_process(&mut ch, 1).await; return false; }
            },
            Err(e) => {
                tracing::warn!(pod = %format!("{}/{}", run.ns, run.name), container = %name, reason = e.reason, "{}", e.message);
                false
            }
        };
        if ok {
            return true;
        }
        if meta::str_at(&run.pod, &["spec", "restartPolicy"]) == "Never" {
            return false;
        }
        attempt += 1;
        let backoff = Duration::from_secs((1u64 << attempt.min(5)).min(30));
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.cancelled() => return false,
        }
    }
}

pub(super) async fn run_container(
    run: Arc<PodRun>,
    idx: usize,
    c: Value,
    stop: CancellationToken,
    grace: Arc<AtomicI64>,
) {
    let name = meta::str_at(&c, &["name"]).to_string();
    let log = run.dir.join(format!("{name}.log"));
    let restart_policy = meta::str_at(&run.pod, &["spec", "restartPolicy"]).to_string();
    let mut crashes = 0u32;
    loop {
        let started_wall = meta::now_rfc3339();
        let mut child = match spawn_container(&run, &c, &log).await {
            Ok(ch) => ch,
            Err(e) => {
                tracing::warn!(pod = %format!("{}/{}", run.ns, run.name), container = %name, reason = e.reason, "{}", e.message);
                update_container(&run, idx, |s| {
                    s.state = json!({"waiting": {"reason": e.reason, "message": e.message}})
                });
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => continue,
                    _ = stop.cancelled() => return,
                }
            }
        };
        let started = tokio::time::Instant::now();
        let has_readiness = c.get("readinessProbe").is_some();
        update_container(&run, idx, |s| {
            s.started = true;
            s.ready = !has_readiness;
            s.state = json!({"running": {"startedAt": started_wall}});
        });
        let mut readiness = Probe::new(c.get("readinessProbe"), started);
        let mut liveness = Probe::new(c.get("livenessProbe"), started);
        let mut killed_by_liveness = None;
        let status = loop {
            let next_probe = [
                readiness.as_ref().map(|p| p.next),
                liveness.as_ref().map(|p| p.next),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(started + Duration::from_secs(3600 * 24));
            tokio::select! {
                s = child.wait() => break s.ok(),
                _ = stop.cancelled() => {
                    let g = grace.load(Ordering::Relaxed);
                    let s = stop_process(&mut child, g).await;
                    update_container(&run, idx, |st| {
                        let (code, _) = exit_info(s);
                        st.ready = false;
                        st.state = json!({"terminated": {"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" }, "startedAt": started_wall, "finishedAt": meta::now_rfc3339()}});
                    });
                    return;
                }
                _ = tokio::time::sleep_until(next_probe) => {
                    let now = tokio::time::Instant::now();
                    if let Some(p) = readiness.as_mut().filter(|p| p.next <= now) {
                        let r = run_probe(&run, &c, &p.spec.clone()).await;
                        p.next = tokio::time::Instant::now() + p.period();
                        let ready_now = match r {
                            ProbeResult::Success => { p.failures = 0; p.successes += 1; (p.successes >= p.threshold("successThreshold", 1)).then_some(true) }
                            ProbeResult::Failure(why) => {
                                p.successes = 0; p.failures += 1;
                                tracing::debug!(pod = %format!("{}/{}", run.ns, run.name), container = %name, "readiness probe failed: {why}");
                                (p.failures >= p.threshold("failureThreshold", 3)).then_some(false)
                            }
                        };
                        if let Some(ready) = ready_now {
                            let changed = run.statuses.lock().unwrap_or_else(|e| e.into_inner()).get(idx).is_some_and(|s| s.ready != ready);
                            if changed {
                                update_container(&run, idx, |s| s.ready = ready);
                            }
                        }
                    }
                    if let Some(p) = liveness.as_mut().filter(|p| p.next <= now) {
                        let r = run_probe(&run, &c, &p.spec.clone()).await;
                        p.next = tokio::time::Instant::now() + p.period();
                        match r {
                            ProbeResult::Success => p.failures = 0,
                            ProbeResult::Failure(why) => {
                                p.failures += 1;
                                if p.failures >= p.threshold("failureThreshold", 3) {
                                    tracing::info!(pod = %format!("{}/{}", run.ns, run.name), container = %name, "liveness probe failed, restarting: {why}");
                                    killed_by_liveness = Some(why);
                                    let g = run.pod.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(30);
                                    break stop_process(&mut child, g).await;
                                }
                            }
                        }
                    }
                }
            }
        };
        let (code, signal) = exit_info(status);
        let ran = started.elapsed();
        let finished = meta::now_rfc3339();
        let reason = if killed_by_liveness.is_some() {
            "Error"
        } else if code == 0 {
            "Completed"
        } else {
            "Error"
        };
        let mut term = json!({"exitCode": code, "reason": reason, "startedAt": started_wall, "finishedAt": finished});
        if let Some(sig) = signal {
            term["signal"] = json!(sig);
        }
        let restart = match restart_policy.as_str() {
            "Never" => false,
            "OnFailure" => code != 0,
            _ => true,
        };
        // Keep the previous instance's log for `kubectl logs --previous`.
        let _ = std::fs::rename(&log, run.dir.join(format!("{name}.previous.log")));
        if !restart {
            update_container(&run, idx, |s| {
                s.ready = false;
                s.finished = true;
                s.exit_code = code;
                s.state = json!({"terminated": term});
            });
            // Wait for the pod to be deleted.
            stop.cancelled().await;
            return;
        }
        if ran > Duration::from_secs(60) {
            crashes = 0;
        }
        let backoff = Duration::from_millis((1000u64 << crashes.min(5)).min(30_000));
        crashes += 1;
        let message = format!(
            "back-off {}s restarting failed container={name} pod={}_{}({})",
            backoff.as_secs().max(1),
            run.name,
            run.ns,
            run.uid
        );
        update_container(&run, idx, |s| {
            s.ready = false;
            s.restart_count += 1;
            s.last_state = json!({"terminated": term});
            s.state = json!({"waiting": {"reason": "CrashLoopBackOff", "message": message}});
        });
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.cancelled() => return,
        }
    }
}
