//! Printers of workload kinds.

use serde_json::{Value, json};
use time::OffsetDateTime;

use super::cells::{
    AGE, Column, D_CONTAINERS, D_IMAGES, D_SELECTOR, NAME, Row, age, at, col, container_cells,
    flag, format_labels, format_selector, human_duration, int_at, len_at, list, name_of, object_at,
    opt_str, replicas, selector_string, since, str_at, time_at, wide,
};

// --- workloads -----------------------------------------------------------------------------

pub(super) const DEPLOYMENT_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Ready",
        "string",
        "Ready pods out of the desired number of pods.",
    ),
    col(
        "Up-to-date",
        "string",
        "Pods running the latest pod template.",
    ),
    col(
        "Available",
        "string",
        "Pods that have been ready for at least minReadySeconds.",
    ),
    AGE,
    wide("Containers", "string", D_CONTAINERS),
    wide("Images", "string", D_IMAGES),
    wide("Selector", "string", D_SELECTOR),
];

pub(super) fn deployment_row(now: OffsetDateTime, d: &Value) -> Row {
    let (containers, images) = container_cells(d, &["spec", "template", "spec", "containers"]);
    let selector = match selector_string(at(d, &["spec", "selector"])) {
        Ok(s) => s,
        Err(()) => "<invalid>".to_owned(),
    };
    vec![
        json!(name_of(d)),
        json!(format!(
            "{}/{}",
            int_at(d, &["status", "readyReplicas"]).unwrap_or(0),
            replicas(d)
        )),
        json!(int_at(d, &["status", "updatedReplicas"]).unwrap_or(0)),
        json!(int_at(d, &["status", "availableReplicas"]).unwrap_or(0)),
        json!(age(now, d)),
        json!(containers),
        json!(images),
        json!(selector),
    ]
    .into()
}

pub(super) const REPLICASET_COLUMNS: &[Column] = &[
    NAME,
    col("Desired", "integer", "Number of pods wanted."),
    col("Current", "integer", "Number of pods that exist."),
    col("Ready", "integer", "Number of pods that are ready."),
    AGE,
    wide("Containers", "string", D_CONTAINERS),
    wide("Images", "string", D_IMAGES),
    wide("Selector", "string", D_SELECTOR),
];

pub(super) fn replicaset_row(now: OffsetDateTime, rs: &Value) -> Row {
    let (containers, images) = container_cells(rs, &["spec", "template", "spec", "containers"]);
    vec![
        json!(name_of(rs)),
        json!(replicas(rs)),
        json!(int_at(rs, &["status", "replicas"]).unwrap_or(0)),
        json!(int_at(rs, &["status", "readyReplicas"]).unwrap_or(0)),
        json!(age(now, rs)),
        json!(containers),
        json!(images),
        json!(format_selector(at(rs, &["spec", "selector"]))),
    ]
    .into()
}

pub(super) const STATEFULSET_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Ready",
        "string",
        "Ready pods out of the desired number of pods.",
    ),
    AGE,
    wide("Containers", "string", D_CONTAINERS),
    wide("Images", "string", D_IMAGES),
];

pub(super) fn statefulset_row(now: OffsetDateTime, sts: &Value) -> Row {
    let (containers, images) = container_cells(sts, &["spec", "template", "spec", "containers"]);
    vec![
        json!(name_of(sts)),
        json!(format!(
            "{}/{}",
            int_at(sts, &["status", "readyReplicas"]).unwrap_or(0),
            replicas(sts)
        )),
        json!(age(now, sts)),
        json!(containers),
        json!(images),
    ]
    .into()
}

pub(super) const DAEMONSET_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Desired",
        "integer",
        "Number of nodes that should run the daemon pod.",
    ),
    col(
        "Current",
        "integer",
        "Number of nodes running at least one daemon pod.",
    ),
    col(
        "Ready",
        "integer",
        "Number of nodes whose daemon pod is ready.",
    ),
    col(
        "Up-to-date",
        "integer",
        "Number of nodes running the latest pod template.",
    ),
    col(
        "Available",
        "integer",
        "Number of nodes whose daemon pod is available.",
    ),
    col(
        "Node Selector",
        "string",
        "Node selector of the pod template.",
    ),
    AGE,
    wide("Containers", "string", D_CONTAINERS),
    wide("Images", "string", D_IMAGES),
    wide("Selector", "string", D_SELECTOR),
];

pub(super) fn daemonset_row(now: OffsetDateTime, ds: &Value) -> Row {
    let (containers, images) = container_cells(ds, &["spec", "template", "spec", "containers"]);
    let status = |field: &str| int_at(ds, &["status", field]).unwrap_or(0);
    vec![
        json!(name_of(ds)),
        json!(status("desiredNumberScheduled")),
        json!(status("currentNumberScheduled")),
        json!(status("numberReady")),
        json!(status("updatedNumberScheduled")),
        json!(status("numberAvailable")),
        json!(format_labels(object_at(
            ds,
            &["spec", "template", "spec", "nodeSelector"]
        ))),
        json!(age(now, ds)),
        json!(containers),
        json!(images),
        json!(format_selector(at(ds, &["spec", "selector"]))),
    ]
    .into()
}

pub(super) const JOB_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "string", "Summary of the job's conditions."),
    col(
        "Completions",
        "string",
        "Succeeded pods out of the pods that must succeed.",
    ),
    col(
        "Duration",
        "string",
        "Time the job took to complete, or has been running.",
    ),
    AGE,
    wide("Containers", "string", D_CONTAINERS),
    wide("Images", "string", D_IMAGES),
    wide("Selector", "string", D_SELECTOR),
];

pub(super) fn job_row(now: OffsetDateTime, job: &Value) -> Row {
    let succeeded = int_at(job, &["status", "succeeded"]).unwrap_or(0);
    let completions = match int_at(job, &["spec", "completions"]) {
        Some(c) => format!("{succeeded}/{c}"),
        None => match int_at(job, &["spec", "parallelism"]).unwrap_or(0) {
            p if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    };
    let duration = match (
        time_at(job, &["status", "startTime"]),
        time_at(job, &["status", "completionTime"]),
    ) {
        (None, _) => String::new(),
        (Some(start), None) => human_duration(now - start),
        (Some(start), Some(end)) => human_duration(end - start),
    };
    // The first condition of a given type decides, as in kubectl.
    let has = |ty: &str| {
        list(job, &["status", "conditions"])
            .iter()
            .find(|c| str_at(c, &["type"]) == ty)
            .is_some_and(|c| str_at(c, &["status"]) == "True")
    };
    let status = if has("Complete") {
        "Complete"
    } else if has("Failed") {
        "Failed"
    } else if at(job, &["metadata", "deletionTimestamp"]).is_some() {
        "Terminating"
    } else if has("Suspended") {
        "Suspended"
    } else if has("FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    let (containers, images) = container_cells(job, &["spec", "template", "spec", "containers"]);
    vec![
        json!(name_of(job)),
        json!(status),
        json!(completions),
        json!(duration),
        json!(age(now, job)),
        json!(containers),
        json!(images),
        json!(format_selector(at(job, &["spec", "selector"]))),
    ]
    .into()
}

pub(super) const CRONJOB_COLUMNS: &[Column] = &[
    NAME,
    col("Schedule", "string", "Cron schedule of the job."),
    col(
        "Timezone",
        "string",
        "Time zone the schedule is interpreted in.",
    ),
    col("Suspend", "boolean", "Whether further runs are suspended."),
    col("Active", "integer", "Number of jobs currently running."),
    col(
        "Last Schedule",
        "string",
        "Time since a job was last scheduled.",
    ),
    AGE,
    wide("Containers", "string", D_CONTAINERS),
    wide("Images", "string", D_IMAGES),
    wide("Selector", "string", D_SELECTOR),
];

pub(super) fn cronjob_row(now: OffsetDateTime, cj: &Value) -> Row {
    let last = match at(cj, &["status", "lastScheduleTime"]) {
        Some(t) => since(now, Some(t)),
        None => "<none>".to_owned(),
    };
    // The API server defaults spec.suspend to false.
    let suspend = if flag(cj, &["spec", "suspend"]) {
        "True"
    } else {
        "False"
    };
    let template = [
        "spec",
        "jobTemplate",
        "spec",
        "template",
        "spec",
        "containers",
    ];
    let (containers, images) = container_cells(cj, &template);
    vec![
        json!(name_of(cj)),
        json!(str_at(cj, &["spec", "schedule"])),
        json!(opt_str(cj, &["spec", "timeZone"]).unwrap_or("<none>")),
        json!(suspend),
        json!(len_at(cj, &["status", "active"])),
        json!(last),
        json!(age(now, cj)),
        json!(containers),
        json!(images),
        json!(format_selector(at(
            cj,
            &["spec", "jobTemplate", "spec", "selector"]
        ))),
    ]
    .into()
}

pub(super) const CONTROLLERREVISION_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Controller",
        "string",
        "The object that owns this revision.",
    ),
    col("Revision", "string", "Revision number."),
    AGE,
];

pub(super) fn controllerrevision_row(now: OffsetDateTime, cr: &Value) -> Row {
    let controller = list(cr, &["metadata", "ownerReferences"])
        .iter()
        .find(|o| flag(o, &["controller"]))
        .map_or_else(
            || "<none>".to_owned(),
            |o| {
                let group = str_at(o, &["apiVersion"])
                    .split_once('/')
                    .map_or("", |(g, _)| g);
                let kind = str_at(o, &["kind"]);
                let group_kind = if group.is_empty() {
                    kind.to_owned()
                } else {
                    format!("{kind}.{group}")
                };
                let name = str_at(o, &["name"]);
                if group_kind.is_empty() {
                    name.to_owned()
                } else {
                    format!("{}/{name}", group_kind.to_lowercase())
                }
            },
        );
    vec![
        json!(name_of(cr)),
        json!(controller),
        json!(int_at(cr, &["revision"]).unwrap_or(0)),
        json!(age(now, cr)),
    ]
    .into()
}

pub(super) const PDB_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Min Available",
        "string",
        "Pods that must stay available during a disruption.",
    ),
    col(
        "Max Unavailable",
        "string",
        "Pods that may be unavailable during a disruption.",
    ),
    col(
        "Allowed Disruptions",
        "integer",
        "Pods that may be disrupted right now.",
    ),
    AGE,
];

pub(super) fn pdb_row(now: OffsetDateTime, pdb: &Value) -> Row {
    let int_or_string = |field: &str| match at(pdb, &["spec", field]) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "N/A".to_owned(),
    };
    vec![
        json!(name_of(pdb)),
        json!(int_or_string("minAvailable")),
        json!(int_or_string("maxUnavailable")),
        json!(int_at(pdb, &["status", "disruptionsAllowed"]).unwrap_or(0)),
        json!(age(now, pdb)),
    ]
    .into()
}
