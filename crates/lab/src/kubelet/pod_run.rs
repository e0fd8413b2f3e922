//! What a running pod's containers share, and the pod status the kubelet writes from it.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use kubelan_apisim::meta;
use kubelan_apisim::store::Sub;
use kubelan_sys::Namespaces;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::runtime::LabContext;

use super::{log_api, pods};

/// Observable state of one container.
#[derive(Debug, Clone)]
pub(super) struct ContainerStatus {
    pub(super) name: String,
    pub(super) image: String,
    pub(super) ready: bool,
    pub(super) started: bool,
    pub(super) restart_count: u32,
    pub(super) state: Value,
    pub(super) last_state: Value,
    /// Whether it will not run again (terminated under its restart policy).
    pub(super) finished: bool,
    pub(super) exit_code: i32,
}

impl ContainerStatus {
    pub(super) fn new(c: &Value) -> Self {
        Self {
            name: meta::str_at(c, &["name"]).to_string(),
            image: meta::str_at(c, &["image"]).to_string(),
            ready: false,
            started: false,
            restart_count: 0,
            state: json!({"waiting": {"reason": "ContainerCreating"}}),
            last_state: json!({}),
            finished: false,
            exit_code: 0,
        }
    }

    fn to_json(&self, uid: &str) -> Value {
        json!({
            "name": self.name,
            "image": self.image,
            "imageID": format!("kubelan-lab://{}", self.image),
            "containerID": format!("kubelan-lab://{uid}/{}/{}", self.name, self.restart_count),
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
        })
    }
}

/// What a pod's containers share.
pub(super) struct PodRun {
    pub(super) ctx: Arc<LabContext>,
    pub(super) uid: String,
    pub(super) ns: String,
    pub(super) name: String,
    pub(super) pod: Value,
    pub(super) dir: PathBuf,
    pub(super) netns: PathBuf,
    pub(super) node_netns: PathBuf,
    pub(super) ip: Ipv4Addr,
    pub(super) holder_ns: Arc<Namespaces>,
    pub(super) statuses: Mutex<Vec<ContainerStatus>>,
    pub(super) changed: Notify,
    pub(super) start_time: String,
    pub(super) host_ip: Ipv4Addr,
}

// ------------------------------------------------------------------ status

pub(super) fn write_status(run: &PodRun) {
    let statuses = run
        .statuses
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let restart_policy = meta::str_at(&run.pod, &["spec", "restartPolicy"]).to_string();
    let all_started = !statuses.is_empty() && statuses.iter().all(|s| s.started);
    let all_finished = !statuses.is_empty() && statuses.iter().all(|s| s.finished);
    let phase = if all_finished && restart_policy != "Always" {
        if statuses.iter().all(|s| s.exit_code == 0) {
            "Succeeded"
        } else {
            "Failed"
        }
    } else if all_started {
        "Running"
    } else {
        "Pending"
    };
    let ready = !statuses.is_empty() && statuses.iter().all(|s| s.ready) && phase == "Running";
    let now = meta::now_rfc3339();
    let cond = |t: &str, ok: bool, reason: &str| {
        let mut c = json!({"type": t, "status": if ok { "True" } else { "False" }, "lastProbeTime": null, "lastTransitionTime": now});
        if !ok && !reason.is_empty() {
            c["reason"] = json!(reason);
        }
        c
    };
    let not_ready: Vec<String> = statuses
        .iter()
        .filter(|s| !s.ready)
        .map(|s| s.name.clone())
        .collect();
    let reason = if not_ready.is_empty() {
        ""
    } else if phase == "Succeeded" || phase == "Failed" {
        "PodCompleted"
    } else {
        "ContainersNotReady"
    };
    let mut conditions = vec![
        cond("PodReadyToStartContainers", true, ""),
        cond("Initialized", true, ""),
        cond("Ready", ready, reason),
        cond("ContainersReady", ready, reason),
        cond("PodScheduled", true, ""),
    ];
    if !ready && !not_ready.is_empty() && phase == "Running" {
        let msg = format!("containers with unready status: [{}]", not_ready.join(" "));
        conditions[2]["message"] = json!(msg);
        conditions[3]["message"] = json!(msg);
    }
    let status = json!({
        "phase": phase,
        "conditions": conditions,
        "hostIP": run.host_ip.to_string(),
        "hostIPs": [{"ip": run.host_ip.to_string()}],
        "podIP": run.ip.to_string(),
        "podIPs": [{"ip": run.ip.to_string()}],
        "startTime": run.start_time,
        "containerStatuses": statuses.iter().map(|s| s.to_json(&run.uid)).collect::<Vec<_>>(),
        "qosClass": "BestEffort",
    });
    let r = run
        .ctx
        .store
        .modify(pods(), &run.ns, &run.name, Sub::Status, |o| {
            if meta::uid(o) != run.uid {
                return Ok(());
            }
            // Keep transition times of conditions whose status did not change.
            let mut st = status.clone();
            if let (Some(old), Some(new)) = (
                o.pointer("/status/conditions").and_then(Value::as_array),
                st.get_mut("conditions").and_then(Value::as_array_mut),
            ) {
                for c in new.iter_mut() {
                    if let Some(p) = old.iter().find(|p| {
                        p.get("type") == c.get("type") && p.get("status") == c.get("status")
                    }) {
                        c["lastTransitionTime"] =
                            p.get("lastTransitionTime").cloned().unwrap_or(Value::Null);
                    }
                }
            }
            o["status"] = st;
            Ok(())
        });
    log_api("update pod status", r);
}

pub(super) fn update_container(run: &PodRun, idx: usize, f: impl FnOnce(&mut ContainerStatus)) {
    {
        let mut s = run.statuses.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = s.get_mut(idx) {
            f(c);
        }
    }
    run.changed.notify_one();
}
