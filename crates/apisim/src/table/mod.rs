//! Server-side printing: `meta.k8s.io/v1` `Table` responses for `kubectl get`.
//!
//! kubectl asks for `Accept: application/json;as=Table;v=v1;g=meta.k8s.io` and prints whatever
//! columns the server sends back, so the columns, their order, their `priority` (0 = always
//! shown, 1 = only with `-o wide`) and the text of every cell must match what a real
//! kube-apiserver produces. A real server always renders the wide columns and lets kubectl hide
//! them; so does this module.
//!
//! Objects are read as loose JSON: any field may be missing or of the wrong type, in which case
//! the cell falls back to what a real server shows for an unset field (or to the value the real
//! server's defaulting would have stored). Nothing here panics on any input.

mod cells;
mod config;
mod events;
mod network;
mod nodes;
mod pods;
#[cfg(test)]
mod tests;
mod workloads;

pub use cells::human_duration;

use serde_json::{Map, Value, json};
use time::macros::{datetime, format_description};
use time::{OffsetDateTime, UtcOffset};

use cells::{Column, D_AGE, NAME, Row, col, name_of, opt_str, time_at};
use config::{
    CONFIGMAP_COLUMNS, LEASE_COLUMNS, PRIORITYCLASS_COLUMNS, ROLEBINDING_COLUMNS, SECRET_COLUMNS,
    SERVICEACCOUNT_COLUMNS, WEBHOOK_COLUMNS, configmap_row, lease_row, priorityclass_row,
    rolebinding_row, secret_row, serviceaccount_row, webhook_row,
};
use events::{EVENT_COLUMNS, event_row};
use network::{
    ENDPOINTS_COLUMNS, ENDPOINTSLICE_COLUMNS, INGRESS_COLUMNS, INGRESSCLASS_COLUMNS,
    NETWORKPOLICY_COLUMNS, SERVICE_COLUMNS, SERVICECIDR_COLUMNS, endpoints_row, endpointslice_row,
    ingress_row, ingressclass_row, networkpolicy_row, service_row, servicecidr_row,
};
use nodes::{NAMESPACE_COLUMNS, NODE_COLUMNS, namespace_row, node_row};
use pods::{POD_COLUMNS, pod_row};
use workloads::{
    CONTROLLERREVISION_COLUMNS, CRONJOB_COLUMNS, DAEMONSET_COLUMNS, DEPLOYMENT_COLUMNS,
    JOB_COLUMNS, PDB_COLUMNS, REPLICASET_COLUMNS, STATEFULSET_COLUMNS, controllerrevision_row,
    cronjob_row, daemonset_row, deployment_row, job_row, pdb_row, replicaset_row, statefulset_row,
};

/// What each table row carries in its `object` field, chosen by `?includeObject=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// `includeObject=None`: the row's `object` is `null`.
    None,
    /// `includeObject=Metadata` (the default): a `PartialObjectMetadata` with the object's
    /// `metadata`.
    #[default]
    Metadata,
    /// `includeObject=Object`: the full object.
    Object,
}

/// Parses the `includeObject` query parameter.
///
/// `None`, `Metadata` and `Object` are recognised (case-sensitive, as in Kubernetes); a missing
/// or unrecognised value gives [`IncludeObject::Metadata`] (a real server rejects unknown values
/// with `400 Bad Request`).
pub fn parse_include_object(q: Option<&str>) -> IncludeObject {
    match q {
        Some("None") => IncludeObject::None,
        Some("Object") => IncludeObject::Object,
        _ => IncludeObject::Metadata,
    }
}

/// Builds the `meta.k8s.io/v1` `Table` that a real API server returns for `items`.
///
/// `kind` is the kind of the objects (e.g. `"Pod"`), `items` the objects as JSON (one for a get,
/// all of them for a list), `now` the time ages are measured against, `include` what each row's
/// `object` carries and `resource_version` the version put in the table's `metadata` (left out
/// when empty).
pub fn to_table(
    kind: &str,
    items: &[Value],
    now: OffsetDateTime,
    include: IncludeObject,
    resource_version: &str,
) -> Value {
    let printer = printer_for(kind, items);
    let columns: Vec<Value> = printer
        .columns
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.ty,
                "format": c.format,
                "description": c.description,
                "priority": c.priority,
            })
        })
        .collect();
    let rows: Vec<Value> = items
        .iter()
        .map(|item| {
            let row = (printer.row)(now, item);
            let mut out = Map::new();
            out.insert("cells".to_owned(), Value::Array(row.cells));
            if !row.conditions.is_empty() {
                out.insert("conditions".to_owned(), Value::Array(row.conditions));
            }
            out.insert("object".to_owned(), row_object(item, include));
            Value::Object(out)
        })
        .collect();
    let mut metadata = Map::new();
    if !resource_version.is_empty() {
        metadata.insert("resourceVersion".to_owned(), json!(resource_version));
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": columns,
        "rows": rows,
    })
}

/// The row's `object` for the requested `includeObject`.
fn row_object(item: &Value, include: IncludeObject) -> Value {
    match include {
        IncludeObject::None => Value::Null,
        IncludeObject::Object => item.clone(),
        IncludeObject::Metadata => {
            let metadata = match item.get("metadata") {
                Some(m @ Value::Object(_)) => m.clone(),
                _ => Value::Object(Map::new()),
            };
            json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": metadata,
            })
        }
    }
}

/// Column definitions plus the function filling a row for one object.
struct Printer {
    columns: &'static [Column],
    row: fn(OffsetDateTime, &Value) -> Row,
}

const fn printer(columns: &'static [Column], row: fn(OffsetDateTime, &Value) -> Row) -> Printer {
    Printer { columns, row }
}

fn printer_for(kind: &str, items: &[Value]) -> Printer {
    match kind {
        "Pod" => printer(POD_COLUMNS, pod_row),
        "Service" => printer(SERVICE_COLUMNS, service_row),
        "Node" => printer(NODE_COLUMNS, node_row),
        "Namespace" => printer(NAMESPACE_COLUMNS, namespace_row),
        "Deployment" => printer(DEPLOYMENT_COLUMNS, deployment_row),
        "ReplicaSet" => printer(REPLICASET_COLUMNS, replicaset_row),
        "StatefulSet" => printer(STATEFULSET_COLUMNS, statefulset_row),
        "DaemonSet" => printer(DAEMONSET_COLUMNS, daemonset_row),
        "Job" => printer(JOB_COLUMNS, job_row),
        "CronJob" => printer(CRONJOB_COLUMNS, cronjob_row),
        "ControllerRevision" => printer(CONTROLLERREVISION_COLUMNS, controllerrevision_row),
        "Endpoints" => printer(ENDPOINTS_COLUMNS, endpoints_row),
        "EndpointSlice" => printer(ENDPOINTSLICE_COLUMNS, endpointslice_row),
        "Ingress" => printer(INGRESS_COLUMNS, ingress_row),
        "IngressClass" => printer(INGRESSCLASS_COLUMNS, ingressclass_row),
        "NetworkPolicy" => printer(NETWORKPOLICY_COLUMNS, networkpolicy_row),
        "ServiceCIDR" => printer(SERVICECIDR_COLUMNS, servicecidr_row),
        "ConfigMap" => printer(CONFIGMAP_COLUMNS, configmap_row),
        "Secret" => printer(SECRET_COLUMNS, secret_row),
        "ServiceAccount" => printer(SERVICEACCOUNT_COLUMNS, serviceaccount_row),
        "RoleBinding" | "ClusterRoleBinding" => printer(ROLEBINDING_COLUMNS, rolebinding_row),
        "Lease" => printer(LEASE_COLUMNS, lease_row),
        "Event" => printer(EVENT_COLUMNS, event_row),
        "PriorityClass" => printer(PRIORITYCLASS_COLUMNS, priorityclass_row),
        "PodDisruptionBudget" => printer(PDB_COLUMNS, pdb_row),
        "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration" => {
            printer(WEBHOOK_COLUMNS, webhook_row)
        }
        // Role and ClusterRole have no printer in Kubernetes: they use the generic convertor.
        "Role" | "ClusterRole" => printer(DEFAULT_COLUMNS, default_row),
        _ if is_custom_resource(items) => printer(CUSTOM_COLUMNS, custom_row),
        _ => printer(DEFAULT_COLUMNS, default_row),
    }
}

/// API groups served by kube-apiserver itself (including apiextensions and the aggregator).
const BUILTIN_GROUPS: &[&str] = &[
    "",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "apiregistration.k8s.io",
    "apps",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "autoscaling",
    "batch",
    "certificates.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "events.k8s.io",
    "extensions",
    "flowcontrol.apiserver.k8s.io",
    "internal.apiserver.k8s.io",
    "networking.k8s.io",
    "node.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "resource.k8s.io",
    "scheduling.k8s.io",
    "storage.k8s.io",
    "storagemigration.k8s.io",
];

/// Whether the objects look like custom resources: their `apiVersion` names a group that
/// kube-apiserver does not serve itself, or they carry no usable `apiVersion` at all.
fn is_custom_resource(items: &[Value]) -> bool {
    let Some(api_version) = items.iter().find_map(|i| opt_str(i, &["apiVersion"])) else {
        return true;
    };
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    !BUILTIN_GROUPS.contains(&group)
}

// --- generic convertors --------------------------------------------------------------------

/// Columns of the generic convertor kube-apiserver uses for built-in kinds without a printer.
const DEFAULT_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Created At",
        "date",
        "Time the object was created (metadata.creationTimestamp).",
    ),
];

fn default_row(_now: OffsetDateTime, obj: &Value) -> Row {
    let created = time_at(obj, &["metadata", "creationTimestamp"])
        .unwrap_or(datetime!(0001-01-01 0:00 UTC))
        .to_offset(UtcOffset::UTC);
    let format = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    let created = created.format(&format).unwrap_or_default();
    vec![json!(name_of(obj)), json!(created)].into()
}

/// Columns of a custom resource whose definition declares no printer columns.
const CUSTOM_COLUMNS: &[Column] = &[NAME, col("Age", "date", D_AGE)];

fn custom_row(now: OffsetDateTime, obj: &Value) -> Row {
    let age = time_at(obj, &["metadata", "creationTimestamp"]).map(|t| human_duration(now - t));
    vec![json!(name_of(obj)), json!(age)].into()
}
