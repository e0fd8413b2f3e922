//! Printers of Nodes and Namespaces.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use time::OffsetDateTime;

use super::cells::{
    AGE, Column, NAME, Row, age, col, flag, list, name_of, object_at, opt_str, str_at, wide,
};

// --- Node ----------------------------------------------------------------------------------

pub(super) const NODE_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Status",
        "string",
        "Readiness of the node, and whether scheduling is disabled.",
    ),
    col(
        "Roles",
        "string",
        "Roles of the node, from its node-role.kubernetes.io/* labels.",
    ),
    AGE,
    col("Version", "string", "Version of the kubelet on the node."),
    wide(
        "Internal-IP",
        "string",
        "The node's first InternalIP address.",
    ),
    wide(
        "External-IP",
        "string",
        "The node's first ExternalIP address.",
    ),
    wide(
        "OS-Image",
        "string",
        "Operating system image reported by the kubelet.",
    ),
    wide(
        "Kernel-Version",
        "string",
        "Kernel version reported by the kubelet.",
    ),
    wide(
        "Container-Runtime",
        "string",
        "Container runtime name and version reported by the kubelet.",
    ),
];

pub(super) fn node_row(now: OffsetDateTime, node: &Value) -> Row {
    let ready = list(node, &["status", "conditions"])
        .iter()
        .rev()
        .find(|c| str_at(c, &["type"]) == "Ready");
    let mut status = vec![match ready {
        Some(c) if str_at(c, &["status"]) == "True" => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }];
    if flag(node, &["spec", "unschedulable"]) {
        status.push("SchedulingDisabled");
    }
    let mut roles = BTreeSet::new();
    if let Some(labels) = object_at(node, &["metadata", "labels"]) {
        for (key, value) in labels {
            if let Some(role) = key.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.insert(role);
                }
            } else if key == "kubernetes.io/role"
                && let Some(role) = value.as_str().filter(|r| !r.is_empty())
            {
                roles.insert(role);
            }
        }
    }
    let roles = if roles.is_empty() {
        "<none>".to_owned()
    } else {
        roles.into_iter().collect::<Vec<_>>().join(",")
    };
    let address = |kind: &str| {
        list(node, &["status", "addresses"])
            .iter()
            .find(|a| str_at(a, &["type"]) == kind)
            .map_or("<none>", |a| str_at(a, &["address"]))
    };
    let info = |field: &str| match str_at(node, &["status", "nodeInfo", field]) {
        "" => "<unknown>",
        v => v,
    };
    vec![
        json!(name_of(node)),
        json!(status.join(",")),
        json!(roles),
        json!(age(now, node)),
        json!(str_at(node, &["status", "nodeInfo", "kubeletVersion"])),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(info("osImage")),
        json!(info("kernelVersion")),
        json!(info("containerRuntimeVersion")),
    ]
    .into()
}

// --- Namespace -----------------------------------------------------------------------------

pub(super) const NAMESPACE_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Status",
        "string",
        "Phase of the namespace: Active or Terminating.",
    ),
    AGE,
];

pub(super) fn namespace_row(now: OffsetDateTime, ns: &Value) -> Row {
    // The API server stores new namespaces as Active.
    let phase = opt_str(ns, &["status", "phase"]).unwrap_or("Active");
    vec![json!(name_of(ns)), json!(phase), json!(age(now, ns))].into()
}
