//! The Pod printer.

use serde_json::{Value, json};
use time::OffsetDateTime;

use super::cells::{
    AGE, Column, NAME, Row, age, at, col, flag, human_duration, int_at, later, list, name_of,
    object_at, opt_str, or_none, str_at, time_at, wide,
};

// --- Pod -----------------------------------------------------------------------------------

pub(super) const POD_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Ready",
        "string",
        "Ready containers out of all containers of the pod.",
    ),
    col(
        "Status",
        "string",
        "Summary of the pod's phase and its containers' states.",
    ),
    col(
        "Restarts",
        "string",
        "Container restarts in the pod, and how long ago the last one happened.",
    ),
    AGE,
    wide("IP", "string", "The pod's primary IP address."),
    wide("Node", "string", "The node the pod is bound to."),
    wide(
        "Nominated Node",
        "string",
        "The node the scheduler nominated for the pod after preemption.",
    ),
    wide(
        "Readiness Gates",
        "string",
        "Readiness gates whose condition is true, out of all readiness gates.",
    ),
];

pub(super) fn pod_row(now: OffsetDateTime, pod: &Value) -> Row {
    let init_specs = list(pod, &["spec", "initContainers"]);
    let containers = list(pod, &["spec", "containers"]);
    // An init container with `restartPolicy: Always` is a sidecar: it runs alongside the
    // regular containers and counts towards READY.
    let is_sidecar = |name: &str| {
        init_specs
            .iter()
            .rev()
            .find(|c| str_at(c, &["name"]) == name)
            .is_some_and(|c| str_at(c, &["restartPolicy"]) == "Always")
    };
    let sidecars = init_specs
        .iter()
        .filter(|c| str_at(c, &["restartPolicy"]) == "Always")
        .count();
    let total = containers.len().saturating_add(sidecars);

    // The API server stores new pods as Pending; treat a pod without a phase the same way.
    let phase = opt_str(pod, &["status", "phase"]).unwrap_or("Pending");
    let mut reason = match str_at(pod, &["status", "reason"]) {
        "" => phase.to_owned(),
        r => r.to_owned(),
    };
    let conditions = list(pod, &["status", "conditions"]);
    if conditions.iter().any(|c| {
        str_at(c, &["type"]) == "PodScheduled" && str_at(c, &["reason"]) == "SchedulingGated"
    }) {
        reason = "SchedulingGated".to_owned();
    }

    let mut ready: usize = 0;
    let mut restarts: i64 = 0;
    let mut sidecar_restarts: i64 = 0;
    let mut last_restart: Option<OffsetDateTime> = None;
    let mut last_sidecar_restart: Option<OffsetDateTime> = None;
    let mut initializing = false;

    let init_statuses = list(pod, &["status", "initContainerStatuses"]);
    for (i, status) in init_statuses.iter().enumerate() {
        let count = int_at(status, &["restartCount"]).unwrap_or(0);
        let finished = time_at(status, &["lastState", "terminated", "finishedAt"]);
        restarts = restarts.saturating_add(count);
        last_restart = later(last_restart, finished);
        let sidecar = is_sidecar(str_at(status, &["name"]));
        if sidecar {
            sidecar_restarts = sidecar_restarts.saturating_add(count);
            last_sidecar_restart = later(last_sidecar_restart, finished);
        }
        let terminated = object_at(status, &["state", "terminated"]).is_some();
        let exit_code = int_at(status, &["state", "terminated", "exitCode"]).unwrap_or(0);
        let waiting_reason = str_at(status, &["state", "waiting", "reason"]);
        if terminated && exit_code == 0 {
            // Finished successfully: look at the next init container.
            continue;
        }
        if sidecar && flag(status, &["started"]) {
            if flag(status, &["ready"]) {
                ready += 1;
            }
            continue;
        }
        if terminated {
            let term_reason = str_at(status, &["state", "terminated", "reason"]);
            reason = if !term_reason.is_empty() {
                format!("Init:{term_reason}")
            } else {
                match int_at(status, &["state", "terminated", "signal"]).unwrap_or(0) {
                    0 => format!("Init:ExitCode:{exit_code}"),
                    signal => format!("Init:Signal:{signal}"),
                }
            };
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            reason = format!("Init:{waiting_reason}");
        } else {
            reason = format!("Init:{i}/{}", init_specs.len());
        }
        initializing = true;
        break;
    }

    let initialized = conditions
        .iter()
        .any(|c| str_at(c, &["type"]) == "Initialized" && str_at(c, &["status"]) == "True");
    if !initializing || initialized {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        // Walk backwards so that the first container's state wins, as kubectl does.
        for status in list(pod, &["status", "containerStatuses"]).iter().rev() {
            restarts = restarts.saturating_add(int_at(status, &["restartCount"]).unwrap_or(0));
            last_restart = later(
                last_restart,
                time_at(status, &["lastState", "terminated", "finishedAt"]),
            );
            let waiting_reason = str_at(status, &["state", "waiting", "reason"]);
            let terminated = object_at(status, &["state", "terminated"]).is_some();
            let term_reason = str_at(status, &["state", "terminated", "reason"]);
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_owned();
            } else if terminated && !term_reason.is_empty() {
                reason = term_reason.to_owned();
            } else if terminated {
                reason = match int_at(status, &["state", "terminated", "signal"]).unwrap_or(0) {
                    0 => format!(
                        "ExitCode:{}",
                        int_at(status, &["state", "terminated", "exitCode"]).unwrap_or(0)
                    ),
                    signal => format!("Signal:{signal}"),
                };
            } else if flag(status, &["ready"]) && object_at(status, &["state", "running"]).is_some()
            {
                has_running = true;
                ready += 1;
            }
        }
        // A pod whose remaining containers still run is not "Completed".
        if reason == "Completed" && has_running {
            let pod_ready = conditions
                .iter()
                .any(|c| str_at(c, &["type"]) == "Ready" && str_at(c, &["status"]) == "True");
            reason = if pod_ready { "Running" } else { "NotReady" }.to_owned();
        }
    }

    if at(pod, &["metadata", "deletionTimestamp"]).is_some() {
        if str_at(pod, &["status", "reason"]) == "NodeLost" {
            reason = "Unknown".to_owned();
        } else if phase != "Succeeded" && phase != "Failed" {
            reason = "Terminating".to_owned();
        }
    }

    let restarts = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", human_duration(now - t)),
        _ => restarts.to_string(),
    };

    let ip = list(pod, &["status", "podIPs"])
        .first()
        .map(|p| str_at(p, &["ip"]))
        .filter(|ip| !ip.is_empty())
        .unwrap_or_else(|| str_at(pod, &["status", "podIP"]));
    let gates = list(pod, &["spec", "readinessGates"]);
    let gates = if gates.is_empty() {
        "<none>".to_owned()
    } else {
        let passing = gates
            .iter()
            .filter(|g| {
                let wanted = str_at(g, &["conditionType"]);
                conditions
                    .iter()
                    .find(|c| str_at(c, &["type"]) == wanted)
                    .is_some_and(|c| str_at(c, &["status"]) == "True")
            })
            .count();
        format!("{passing}/{}", gates.len())
    };

    let mut row_conditions = Vec::new();
    match phase {
        "Succeeded" => row_conditions.push(json!({
            "type": "Completed",
            "status": "True",
            "reason": "Succeeded",
            "message": "The pod has completed successfully.",
        })),
        "Failed" => row_conditions.push(json!({
            "type": "Completed",
            "status": "True",
            "reason": "Failed",
            "message": "The pod failed.",
        })),
        _ => {}
    }

    Row {
        cells: vec![
            json!(name_of(pod)),
            json!(format!("{ready}/{total}")),
            json!(reason),
            json!(restarts),
            json!(age(now, pod)),
            json!(or_none(ip)),
            json!(or_none(str_at(pod, &["spec", "nodeName"]))),
            json!(or_none(str_at(pod, &["status", "nominatedNodeName"]))),
            json!(gates),
        ],
        conditions: row_conditions,
    }
}
