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

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};
use time::format_description::well_known::Rfc3339;
use time::macros::{datetime, format_description};
use time::{Duration, OffsetDateTime, UtcOffset};

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

/// Renders a duration the way Kubernetes prints ages (`k8s.io/apimachinery/pkg/util/duration`
/// `HumanDuration`): about two significant units, e.g. `45s`, `3m2s`, `12m`, `5h3m`, `20h`,
/// `2d3h`, `8d`, `2y45d`, `9y`.
///
/// A time less than two seconds in the future counts as `0s` (clock skew); further in the
/// future gives `<invalid>`.
pub fn human_duration(d: Duration) -> String {
    let seconds = d.whole_seconds();
    if seconds < -1 {
        return "<invalid>".to_owned();
    }
    if seconds < 0 {
        return "0s".to_owned();
    }
    if seconds < 2 * 60 {
        return format!("{seconds}s");
    }
    let minutes = d.whole_minutes();
    if minutes < 10 {
        return with_remainder(minutes, "m", seconds % 60, "s");
    }
    if minutes < 3 * 60 {
        return format!("{minutes}m");
    }
    let hours = d.whole_hours();
    if hours < 8 {
        return with_remainder(hours, "h", minutes % 60, "m");
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        return with_remainder(days, "d", hours % 24, "h");
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if hours < 24 * 365 * 8 {
        return with_remainder(years, "y", days % 365, "d");
    }
    format!("{years}y")
}

/// `"{big}{big_unit}"`, followed by `"{small}{small_unit}"` unless `small` is zero.
fn with_remainder(big: i64, big_unit: &str, small: i64, small_unit: &str) -> String {
    if small == 0 {
        format!("{big}{big_unit}")
    } else {
        format!("{big}{big_unit}{small}{small_unit}")
    }
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

// ---------------------------------------------------------------------------------------------
// Columns and printers
// ---------------------------------------------------------------------------------------------

/// One `TableColumnDefinition`.
#[derive(Debug, Clone, Copy)]
struct Column {
    name: &'static str,
    ty: &'static str,
    format: &'static str,
    description: &'static str,
    priority: i32,
}

/// A column shown by plain `kubectl get`.
const fn col(name: &'static str, ty: &'static str, description: &'static str) -> Column {
    Column {
        name,
        ty,
        format: "",
        description,
        priority: 0,
    }
}

/// A column shown only by `kubectl get -o wide`.
const fn wide(name: &'static str, ty: &'static str, description: &'static str) -> Column {
    Column {
        name,
        ty,
        format: "",
        description,
        priority: 1,
    }
}

const D_NAME: &str = "Name of the object, unique within its namespace (or within the cluster for \
                      cluster-scoped kinds).";
const D_AGE: &str = "Time since the object was created (metadata.creationTimestamp).";
const D_CONTAINERS: &str = "Names of the containers in the pod template.";
const D_IMAGES: &str = "Images of the containers in the pod template.";
const D_SELECTOR: &str = "Label selector of the pods this object manages.";

/// The `Name` column every printer starts with.
const NAME: Column = Column {
    name: "Name",
    ty: "string",
    format: "name",
    description: D_NAME,
    priority: 0,
};
const AGE: Column = col("Age", "string", D_AGE);

/// Cells (and row conditions) of one row.
struct Row {
    cells: Vec<Value>,
    conditions: Vec<Value>,
}

impl From<Vec<Value>> for Row {
    fn from(cells: Vec<Value>) -> Self {
        Row {
            cells,
            conditions: Vec::new(),
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

// --- Pod -----------------------------------------------------------------------------------

const POD_COLUMNS: &[Column] = &[
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

fn pod_row(now: OffsetDateTime, pod: &Value) -> Row {
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

// --- Service -------------------------------------------------------------------------------

const SERVICE_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Type",
        "string",
        "How the service is exposed: ClusterIP, NodePort, LoadBalancer or ExternalName.",
    ),
    col(
        "Cluster-IP",
        "string",
        "The virtual IP address assigned to the service.",
    ),
    col(
        "External-IP",
        "string",
        "External addresses: load-balancer ingress points and spec.externalIPs.",
    ),
    col(
        "Port(s)",
        "string",
        "Ports exposed by the service, with node ports where allocated.",
    ),
    AGE,
    wide(
        "Selector",
        "string",
        "Label selector of the pods that back the service.",
    ),
];

fn service_row(now: OffsetDateTime, svc: &Value) -> Row {
    // The API server defaults spec.type to ClusterIP.
    let svc_type = opt_str(svc, &["spec", "type"]).unwrap_or("ClusterIP");
    let cluster_ip = list(svc, &["spec", "clusterIPs"])
        .first()
        .and_then(Value::as_str)
        .or_else(|| opt_str(svc, &["spec", "clusterIP"]))
        .filter(|ip| !ip.is_empty())
        .unwrap_or("<none>");
    let external_ips: Vec<&str> = strings(svc, &["spec", "externalIPs"]);
    let external = match svc_type {
        "ClusterIP" | "NodePort" => {
            if external_ips.is_empty() {
                "<none>".to_owned()
            } else {
                external_ips.join(",")
            }
        }
        "LoadBalancer" => {
            let mut all: Vec<&str> = lb_ingress(svc).into_iter().collect();
            all.extend(external_ips.iter().copied());
            if all.is_empty() {
                "<pending>".to_owned()
            } else {
                all.join(",")
            }
        }
        "ExternalName" => str_at(svc, &["spec", "externalName"]).to_owned(),
        _ => "<unknown>".to_owned(),
    };
    let ports: Vec<String> = list(svc, &["spec", "ports"])
        .iter()
        .map(|p| {
            let port = int_at(p, &["port"]).unwrap_or(0);
            let protocol = opt_str(p, &["protocol"]).unwrap_or("TCP");
            match int_at(p, &["nodePort"]).unwrap_or(0) {
                n if n > 0 => format!("{port}:{n}/{protocol}"),
                _ => format!("{port}/{protocol}"),
            }
        })
        .collect();
    let ports = if ports.is_empty() {
        "<none>".to_owned()
    } else {
        ports.join(",")
    };
    vec![
        json!(name_of(svc)),
        json!(svc_type),
        json!(cluster_ip),
        json!(external),
        json!(ports),
        json!(age(now, svc)),
        json!(format_labels(object_at(svc, &["spec", "selector"]))),
    ]
    .into()
}

/// Load-balancer ingress points (IP, else hostname), sorted and de-duplicated.
fn lb_ingress(obj: &Value) -> BTreeSet<&str> {
    list(obj, &["status", "loadBalancer", "ingress"])
        .iter()
        .filter_map(|i| {
            [str_at(i, &["ip"]), str_at(i, &["hostname"])]
                .into_iter()
                .find(|s| !s.is_empty())
        })
        .collect()
}

// --- Node ----------------------------------------------------------------------------------

const NODE_COLUMNS: &[Column] = &[
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

fn node_row(now: OffsetDateTime, node: &Value) -> Row {
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

const NAMESPACE_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Status",
        "string",
        "Phase of the namespace: Active or Terminating.",
    ),
    AGE,
];

fn namespace_row(now: OffsetDateTime, ns: &Value) -> Row {
    // The API server stores new namespaces as Active.
    let phase = opt_str(ns, &["status", "phase"]).unwrap_or("Active");
    vec![json!(name_of(ns)), json!(phase), json!(age(now, ns))].into()
}

// --- workloads -----------------------------------------------------------------------------

const DEPLOYMENT_COLUMNS: &[Column] = &[
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

fn deployment_row(now: OffsetDateTime, d: &Value) -> Row {
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

const REPLICASET_COLUMNS: &[Column] = &[
    NAME,
    col("Desired", "integer", "Number of pods wanted."),
    col("Current", "integer", "Number of pods that exist."),
    col("Ready", "integer", "Number of pods that are ready."),
    AGE,
    wide("Containers", "string", D_CONTAINERS),
    wide("Images", "string", D_IMAGES),
    wide("Selector", "string", D_SELECTOR),
];

fn replicaset_row(now: OffsetDateTime, rs: &Value) -> Row {
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

const STATEFULSET_COLUMNS: &[Column] = &[
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

fn statefulset_row(now: OffsetDateTime, sts: &Value) -> Row {
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

const DAEMONSET_COLUMNS: &[Column] = &[
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

fn daemonset_row(now: OffsetDateTime, ds: &Value) -> Row {
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

const JOB_COLUMNS: &[Column] = &[
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

fn job_row(now: OffsetDateTime, job: &Value) -> Row {
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

const CRONJOB_COLUMNS: &[Column] = &[
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

fn cronjob_row(now: OffsetDateTime, cj: &Value) -> Row {
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

const CONTROLLERREVISION_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Controller",
        "string",
        "The object that owns this revision.",
    ),
    col("Revision", "string", "Revision number."),
    AGE,
];

fn controllerrevision_row(now: OffsetDateTime, cr: &Value) -> Row {
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

const PDB_COLUMNS: &[Column] = &[
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

fn pdb_row(now: OffsetDateTime, pdb: &Value) -> Row {
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

// --- networking ----------------------------------------------------------------------------

const ENDPOINTS_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Endpoints",
        "string",
        "Ready addresses and ports of the endpoints.",
    ),
    AGE,
];

/// How many entries list-like cells show before ` + N more...`.
const MAX_LISTED: usize = 3;

fn endpoints_row(now: OffsetDateTime, ep: &Value) -> Row {
    let subsets = list(ep, &["subsets"]);
    let text = if subsets.is_empty() {
        "<none>".to_owned()
    } else {
        let mut shown: Vec<String> = Vec::new();
        let mut more = false;
        let mut count: usize = 0;
        for subset in subsets {
            let addresses = list(subset, &["addresses"]);
            let ports = list(subset, &["ports"]);
            // Headless services may have no ports: list the bare addresses.
            let ports: Vec<Option<i64>> = if ports.is_empty() {
                vec![None]
            } else {
                ports
                    .iter()
                    .map(|p| Some(int_at(p, &["port"]).unwrap_or(0)))
                    .collect()
            };
            for port in ports {
                count = count.saturating_add(addresses.len());
                for address in addresses {
                    if shown.len() == MAX_LISTED {
                        more = true;
                        break;
                    }
                    let ip = str_at(address, &["ip"]);
                    shown.push(match port {
                        None => ip.to_owned(),
                        Some(port) => join_host_port(ip, port),
                    });
                }
            }
        }
        let joined = shown.join(",");
        if more {
            format!("{joined} + {} more...", count.saturating_sub(MAX_LISTED))
        } else {
            joined
        }
    };
    vec![json!(name_of(ep)), json!(text), json!(age(now, ep))].into()
}

/// `host:port`, with IPv6 hosts in brackets.
fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

const ENDPOINTSLICE_COLUMNS: &[Column] = &[
    NAME,
    col(
        "AddressType",
        "string",
        "Type of the addresses in the slice: IPv4, IPv6 or FQDN.",
    ),
    col("Ports", "string", "Ports of the endpoints in the slice."),
    col(
        "Endpoints",
        "string",
        "Addresses of the endpoints in the slice.",
    ),
    AGE,
];

fn endpointslice_row(now: OffsetDateTime, slice: &Value) -> Row {
    let ports: Vec<String> = list(slice, &["ports"])
        .iter()
        .map(|p| match (int_at(p, &["port"]), opt_str(p, &["name"])) {
            (Some(port), _) => port.to_string(),
            (None, Some(name)) => name.to_owned(),
            (None, None) => "*".to_owned(),
        })
        .collect();
    let addresses: Vec<String> = list(slice, &["endpoints"])
        .iter()
        .flat_map(|e| strings(e, &["addresses"]))
        .map(str::to_owned)
        .collect();
    vec![
        json!(name_of(slice)),
        json!(str_at(slice, &["addressType"])),
        json!(list_with_more(&ports)),
        json!(list_with_more(&addresses)),
        json!(age(now, slice)),
    ]
    .into()
}

/// The first few entries joined with `,`, then ` + N more...`; `<unset>` when empty.
fn list_with_more(all: &[String]) -> String {
    if all.is_empty() {
        return "<unset>".to_owned();
    }
    let shown = all[..all.len().min(MAX_LISTED)].join(",");
    if all.len() > MAX_LISTED {
        format!("{shown} + {} more...", all.len() - MAX_LISTED)
    } else {
        shown
    }
}

const INGRESS_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Class",
        "string",
        "Name of the IngressClass that handles this ingress.",
    ),
    col("Hosts", "string", "Hosts the ingress rules match."),
    col(
        "Address",
        "string",
        "Load-balancer ingress points of the ingress.",
    ),
    col("Ports", "string", "Ports the ingress is served on."),
    AGE,
];

fn ingress_row(now: OffsetDateTime, ing: &Value) -> Row {
    let rules = list(ing, &["spec", "rules"]);
    let mut hosts: Vec<&str> = Vec::new();
    let mut more = false;
    for rule in rules {
        if hosts.len() == MAX_LISTED {
            more = true;
        }
        let host = str_at(rule, &["host"]);
        if !more && !host.is_empty() {
            hosts.push(host);
        }
    }
    let hosts = if hosts.is_empty() {
        "*".to_owned()
    } else if more {
        format!(
            "{} + {} more...",
            hosts.join(","),
            rules.len().saturating_sub(MAX_LISTED)
        )
    } else {
        hosts.join(",")
    };
    let address = lb_ingress(ing).into_iter().collect::<Vec<_>>().join(",");
    let ports = if list(ing, &["spec", "tls"]).is_empty() {
        "80"
    } else {
        "80, 443"
    };
    vec![
        json!(name_of(ing)),
        json!(opt_str(ing, &["spec", "ingressClassName"]).unwrap_or("<none>")),
        json!(hosts),
        json!(address),
        json!(ports),
        json!(age(now, ing)),
    ]
    .into()
}

const INGRESSCLASS_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Controller",
        "string",
        "Controller that implements this class.",
    ),
    col(
        "Parameters",
        "string",
        "Object holding extra configuration for the controller.",
    ),
    AGE,
];

fn ingressclass_row(now: OffsetDateTime, class: &Value) -> Row {
    let parameters = match object_at(class, &["spec", "parameters"]) {
        None => "<none>".to_owned(),
        Some(_) => {
            let mut p = str_at(class, &["spec", "parameters", "kind"]).to_owned();
            if let Some(group) = opt_str(class, &["spec", "parameters", "apiGroup"]) {
                p.push('.');
                p.push_str(group);
            }
            p.push('/');
            p.push_str(str_at(class, &["spec", "parameters", "name"]));
            p
        }
    };
    vec![
        json!(name_of(class)),
        json!(str_at(class, &["spec", "controller"])),
        json!(parameters),
        json!(age(now, class)),
    ]
    .into()
}

const NETWORKPOLICY_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Pod-Selector",
        "string",
        "Label selector of the pods the policy applies to.",
    ),
    AGE,
];

fn networkpolicy_row(now: OffsetDateTime, np: &Value) -> Row {
    // spec.podSelector is not a pointer in Go: a missing one is the empty selector.
    let empty = Value::Object(Map::new());
    let selector = at(np, &["spec", "podSelector"]).unwrap_or(&empty);
    vec![
        json!(name_of(np)),
        json!(format_selector(Some(selector))),
        json!(age(now, np)),
    ]
    .into()
}

const SERVICECIDR_COLUMNS: &[Column] = &[
    NAME,
    col(
        "CIDRs",
        "string",
        "IP ranges from which service cluster IPs are allocated.",
    ),
    AGE,
];

fn servicecidr_row(now: OffsetDateTime, cidr: &Value) -> Row {
    vec![
        json!(name_of(cidr)),
        json!(strings(cidr, &["spec", "cidrs"]).join(",")),
        json!(age(now, cidr)),
    ]
    .into()
}

// --- configuration and access --------------------------------------------------------------

const CONFIGMAP_COLUMNS: &[Column] = &[
    NAME,
    col("Data", "string", "Number of keys in data and binaryData."),
    AGE,
];

fn configmap_row(now: OffsetDateTime, cm: &Value) -> Row {
    let keys = len_at(cm, &["data"]).saturating_add(len_at(cm, &["binaryData"]));
    vec![json!(name_of(cm)), json!(keys), json!(age(now, cm))].into()
}

const SECRET_COLUMNS: &[Column] = &[
    NAME,
    col("Type", "string", "Type of the secret."),
    col("Data", "string", "Number of keys in data."),
    AGE,
];

fn secret_row(now: OffsetDateTime, secret: &Value) -> Row {
    // The API server defaults the type to Opaque.
    let ty = opt_str(secret, &["type"]).unwrap_or("Opaque");
    vec![
        json!(name_of(secret)),
        json!(ty),
        json!(len_at(secret, &["data"])),
        json!(age(now, secret)),
    ]
    .into()
}

const SERVICEACCOUNT_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Secrets",
        "string",
        "Number of secrets listed in the service account.",
    ),
    AGE,
];

fn serviceaccount_row(now: OffsetDateTime, sa: &Value) -> Row {
    vec![
        json!(name_of(sa)),
        json!(len_at(sa, &["secrets"])),
        json!(age(now, sa)),
    ]
    .into()
}

const ROLEBINDING_COLUMNS: &[Column] = &[
    NAME,
    col("Role", "string", "The role granted, as Kind/name."),
    AGE,
    wide("Users", "string", "Users the binding applies to."),
    wide("Groups", "string", "Groups the binding applies to."),
    wide(
        "ServiceAccounts",
        "string",
        "Service accounts the binding applies to, as namespace/name.",
    ),
];

fn rolebinding_row(now: OffsetDateTime, rb: &Value) -> Row {
    let mut users = Vec::new();
    let mut groups = Vec::new();
    let mut service_accounts = Vec::new();
    for subject in list(rb, &["subjects"]) {
        let name = str_at(subject, &["name"]);
        match str_at(subject, &["kind"]) {
            "User" => users.push(name.to_owned()),
            "Group" => groups.push(name.to_owned()),
            "ServiceAccount" => {
                service_accounts.push(format!("{}/{name}", str_at(subject, &["namespace"])));
            }
            _ => {}
        }
    }
    let role = format!(
        "{}/{}",
        str_at(rb, &["roleRef", "kind"]),
        str_at(rb, &["roleRef", "name"])
    );
    vec![
        json!(name_of(rb)),
        json!(role),
        json!(age(now, rb)),
        json!(users.join(", ")),
        json!(groups.join(", ")),
        json!(service_accounts.join(", ")),
    ]
    .into()
}

const LEASE_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Holder",
        "string",
        "Identity of the current holder of the lease.",
    ),
    AGE,
];

fn lease_row(now: OffsetDateTime, lease: &Value) -> Row {
    vec![
        json!(name_of(lease)),
        json!(str_at(lease, &["spec", "holderIdentity"])),
        json!(age(now, lease)),
    ]
    .into()
}

const PRIORITYCLASS_COLUMNS: &[Column] = &[
    NAME,
    col("Value", "integer", "Priority given to pods of this class."),
    col(
        "Global-Default",
        "boolean",
        "Whether pods without a priority class get this one.",
    ),
    AGE,
    col(
        "PreemptionPolicy",
        "string",
        "Whether pods of this class may preempt lower-priority pods.",
    ),
];

fn priorityclass_row(now: OffsetDateTime, pc: &Value) -> Row {
    // The API server defaults preemptionPolicy to PreemptLowerPriority.
    let policy = opt_str(pc, &["preemptionPolicy"]).unwrap_or("PreemptLowerPriority");
    vec![
        json!(name_of(pc)),
        json!(int_at(pc, &["value"]).unwrap_or(0)),
        json!(flag(pc, &["globalDefault"])),
        json!(age(now, pc)),
        json!(policy),
    ]
    .into()
}

const WEBHOOK_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Webhooks",
        "integer",
        "Number of webhooks in this configuration.",
    ),
    AGE,
];

fn webhook_row(now: OffsetDateTime, cfg: &Value) -> Row {
    vec![
        json!(name_of(cfg)),
        json!(len_at(cfg, &["webhooks"])),
        json!(age(now, cfg)),
    ]
    .into()
}

// --- Event ---------------------------------------------------------------------------------

const EVENT_COLUMNS: &[Column] = &[
    col(
        "Last Seen",
        "string",
        "Time since the event was last observed.",
    ),
    col("Type", "string", "Type of the event: Normal or Warning."),
    col("Reason", "string", "Short machine-readable reason."),
    col("Object", "string", "The object the event is about."),
    wide(
        "Subobject",
        "string",
        "Part of the object the event is about, such as a container.",
    ),
    wide("Source", "string", "Component that reported the event."),
    col("Message", "string", "Human-readable description."),
    wide(
        "First Seen",
        "string",
        "Time since the event was first observed.",
    ),
    wide("Count", "string", "Number of times the event occurred."),
    Column {
        priority: 1,
        ..NAME
    },
];

/// Prints both `v1` and `events.k8s.io/v1` events; the latter name some fields differently.
fn event_row(now: OffsetDateTime, ev: &Value) -> Row {
    let field = |core: &str, events_v1: &str| at(ev, &[core]).or_else(|| at(ev, &[events_v1]));
    let event_time = at(ev, &["eventTime"]);
    let first_seen = match field("firstTimestamp", "deprecatedFirstTimestamp") {
        Some(t) if parse_time(t).is_some() => since(now, Some(t)),
        _ => since(now, event_time),
    };
    let mut last_seen = match field("lastTimestamp", "deprecatedLastTimestamp") {
        Some(t) if parse_time(t).is_some() => since(now, Some(t)),
        _ => first_seen.clone(),
    };
    let mut count = field("count", "deprecatedCount")
        .and_then(as_int)
        .unwrap_or(0);
    if let Some(series) = at(ev, &["series"]).filter(|s| s.is_object()) {
        last_seen = since(now, at(series, &["lastObservedTime"]));
        count = int_at(series, &["count"]).unwrap_or(0);
    } else if count == 0 {
        // Events recorded through the new API leave the count unset: they happened once.
        count = 1;
    }
    let empty = Value::Null;
    let regarding = field("involvedObject", "regarding").unwrap_or(&empty);
    let kind = str_at(regarding, &["kind"]).to_lowercase();
    let target = match str_at(regarding, &["name"]) {
        "" => kind,
        name => format!("{kind}/{name}"),
    };
    let source = field("source", "deprecatedSource").unwrap_or(&empty);
    let component = first_non_empty(
        str_at(source, &["component"]),
        str_at(ev, &["reportingController"]),
    );
    let host = first_non_empty(
        str_at(source, &["host"]),
        str_at(ev, &["reportingInstance"]),
    );
    let source = if host.is_empty() {
        component.to_owned()
    } else {
        format!("{component}, {host}")
    };
    let message = field("message", "note")
        .and_then(Value::as_str)
        .unwrap_or("")
        .trim();
    vec![
        json!(last_seen),
        json!(str_at(ev, &["type"])),
        json!(str_at(ev, &["reason"])),
        json!(target),
        json!(str_at(regarding, &["fieldPath"])),
        json!(source),
        json!(message),
        json!(first_seen),
        json!(count),
        json!(name_of(ev)),
    ]
    .into()
}

fn first_non_empty<'a>(a: &'a str, b: &'a str) -> &'a str {
    if a.is_empty() { b } else { a }
}

// ---------------------------------------------------------------------------------------------
// Shared cell helpers
// ---------------------------------------------------------------------------------------------

fn name_of(obj: &Value) -> &str {
    str_at(obj, &["metadata", "name"])
}

/// AGE cell: time since `metadata.creationTimestamp`, `<unknown>` without one.
fn age(now: OffsetDateTime, obj: &Value) -> String {
    since(now, at(obj, &["metadata", "creationTimestamp"]))
}

/// Human duration since a timestamp value, `<unknown>` when missing or unparseable.
fn since(now: OffsetDateTime, timestamp: Option<&Value>) -> String {
    match timestamp.and_then(parse_time) {
        Some(t) => human_duration(now - t),
        None => "<unknown>".to_owned(),
    }
}

/// Parses an RFC 3339 timestamp (`metav1.Time` or `metav1.MicroTime`); Go's zero time counts
/// as unset.
fn parse_time(value: &Value) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(value.as_str()?, &Rfc3339)
        .ok()
        .filter(|t| *t != datetime!(0001-01-01 0:00 UTC))
}

fn time_at(obj: &Value, path: &[&str]) -> Option<OffsetDateTime> {
    at(obj, path).and_then(parse_time)
}

/// The later of two optional times.
fn later(a: Option<OffsetDateTime>, b: Option<OffsetDateTime>) -> Option<OffsetDateTime> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// `spec.replicas`, which the API server defaults to 1.
fn replicas(obj: &Value) -> i64 {
    int_at(obj, &["spec", "replicas"]).unwrap_or(1)
}

/// The value itself, or `<none>` when empty.
fn or_none(s: &str) -> &str {
    if s.is_empty() { "<none>" } else { s }
}

/// Container names and images of a pod template, each joined with `,`.
fn container_cells(obj: &Value, path: &[&str]) -> (String, String) {
    let containers = list(obj, path);
    let names: Vec<&str> = containers.iter().map(|c| str_at(c, &["name"])).collect();
    let images: Vec<&str> = containers.iter().map(|c| str_at(c, &["image"])).collect();
    (names.join(","), images.join(","))
}

/// A label map as `k=v,...` sorted by key, or `<none>`.
fn format_labels(labels: Option<&Map<String, Value>>) -> String {
    let mut pairs: Vec<(&str, &str)> = labels
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or("")))
        .collect();
    if pairs.is_empty() {
        return "<none>".to_owned();
    }
    pairs.sort_unstable();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A `LabelSelector` as kubectl formats it: `<none>` when it selects everything (or is
/// missing), `<error>` when it is invalid.
fn format_selector(selector: Option<&Value>) -> String {
    match selector_string(selector) {
        Ok(s) if s.is_empty() => "<none>".to_owned(),
        Ok(s) => s,
        Err(()) => "<error>".to_owned(),
    }
}

/// The string form of a `LabelSelector` (`a=b,c in (d,e),!f`), requirements sorted by key.
fn selector_string(selector: Option<&Value>) -> Result<String, ()> {
    let Some(selector) = selector else {
        return Ok(String::new());
    };
    let mut requirements: Vec<(&str, String)> = Vec::new();
    for (key, value) in object_at(selector, &["matchLabels"]).into_iter().flatten() {
        let value = value.as_str().unwrap_or("");
        requirements.push((key.as_str(), format!("{key}={value}")));
    }
    for expression in list(selector, &["matchExpressions"]) {
        let key = str_at(expression, &["key"]);
        let mut values = strings(expression, &["values"]);
        values.sort_unstable();
        let text = match str_at(expression, &["operator"]) {
            "In" | "NotIn" if values.is_empty() => return Err(()),
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" | "DoesNotExist" if !values.is_empty() => return Err(()),
            "Exists" => key.to_owned(),
            "DoesNotExist" => format!("!{key}"),
            _ => return Err(()),
        };
        requirements.push((key, text));
    }
    requirements.sort_by(|a, b| a.0.cmp(b.0));
    Ok(requirements
        .into_iter()
        .map(|(_, text)| text)
        .collect::<Vec<_>>()
        .join(","))
}

// ---------------------------------------------------------------------------------------------
// Loose JSON access: every lookup tolerates missing fields, nulls and wrong types.
// ---------------------------------------------------------------------------------------------

/// The value at `path`, treating `null` as missing.
fn at<'a>(obj: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter()
        .try_fold(obj, |cur, key| cur.get(*key))
        .filter(|v| !v.is_null())
}

fn opt_str<'a>(obj: &'a Value, path: &[&str]) -> Option<&'a str> {
    at(obj, path).and_then(Value::as_str)
}

/// The string at `path`, or `""`.
fn str_at<'a>(obj: &'a Value, path: &[&str]) -> &'a str {
    opt_str(obj, path).unwrap_or("")
}

fn as_int(value: &Value) -> Option<i64> {
    value
        .as_i64()
        .or_else(|| value.as_u64().map(|u| i64::try_from(u).unwrap_or(i64::MAX)))
        .or_else(|| value.as_f64().map(|f| f as i64))
}

fn int_at(obj: &Value, path: &[&str]) -> Option<i64> {
    at(obj, path).and_then(as_int)
}

/// The boolean at `path`, `false` when missing.
fn flag(obj: &Value, path: &[&str]) -> bool {
    at(obj, path).and_then(Value::as_bool).unwrap_or(false)
}

/// The array at `path`, or an empty slice.
fn list<'a>(obj: &'a Value, path: &[&str]) -> &'a [Value] {
    at(obj, path)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// The string entries of the array at `path`.
fn strings<'a>(obj: &'a Value, path: &[&str]) -> Vec<&'a str> {
    list(obj, path).iter().filter_map(Value::as_str).collect()
}

fn object_at<'a>(obj: &'a Value, path: &[&str]) -> Option<&'a Map<String, Value>> {
    at(obj, path).and_then(Value::as_object)
}

/// Number of entries of the array or map at `path`.
fn len_at(obj: &Value, path: &[&str]) -> i64 {
    let len = match at(obj, path) {
        Some(Value::Array(a)) => a.len(),
        Some(Value::Object(m)) => m.len(),
        _ => 0,
    };
    i64::try_from(len).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: OffsetDateTime = datetime!(2024-05-01 12:00:00 UTC);

    /// Renders one object and checks the row is as wide as the column list.
    fn cells(kind: &str, obj: Value) -> Vec<Value> {
        let table = to_table(kind, &[obj], NOW, IncludeObject::None, "");
        let columns = table["columnDefinitions"].as_array().unwrap().len();
        let cells = table["rows"][0]["cells"].as_array().unwrap().clone();
        assert_eq!(cells.len(), columns, "{kind}: cells vs columns");
        cells
    }

    /// Column names with their priority.
    fn columns(kind: &str, items: &[Value]) -> Vec<(String, i64)> {
        let table = to_table(kind, items, NOW, IncludeObject::None, "");
        table["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_owned(),
                    c["priority"].as_i64().unwrap(),
                )
            })
            .collect()
    }

    /// The elements of a JSON array literal.
    fn arr(value: Value) -> Vec<Value> {
        match value {
            Value::Array(items) => items,
            other => vec![other],
        }
    }

    fn names(cols: &[(String, i64)]) -> Vec<&str> {
        cols.iter().map(|(n, _)| n.as_str()).collect()
    }

    fn wide_names(cols: &[(String, i64)]) -> Vec<&str> {
        cols.iter()
            .filter(|(_, p)| *p == 1)
            .map(|(n, _)| n.as_str())
            .collect()
    }

    #[test]
    fn human_duration_matches_reference_rules() {
        let ms = Duration::milliseconds;
        let s = Duration::seconds;
        let m = Duration::minutes;
        let h = Duration::hours;
        let d = Duration::days;
        let y = |n: i64| d(365 * n);
        let cases = [
            (s(-2), "<invalid>"),
            (s(-2) + Duration::nanoseconds(1), "0s"),
            (s(0), "0s"),
            (s(1) - ms(1), "0s"),
            (s(1), "1s"),
            (s(45), "45s"),
            (s(70), "70s"),
            (m(2) - ms(1), "119s"),
            (m(2), "2m"),
            (m(2) + s(1), "2m1s"),
            (s(182), "3m2s"),
            (s(190), "3m10s"),
            (m(10) - ms(1), "9m59s"),
            (m(10), "10m"),
            (m(10) + s(1), "10m"),
            (m(12), "12m"),
            (m(70), "70m"),
            (h(3) - ms(1), "179m"),
            (h(3), "3h"),
            (h(3) + m(1), "3h1m"),
            (h(5) + m(3), "5h3m"),
            (h(8) - ms(1), "7h59m"),
            (h(8), "8h"),
            (h(8) + m(59), "8h"),
            (h(47), "47h"),
            (d(2) - ms(1), "47h"),
            (d(2), "2d"),
            (h(49), "2d1h"),
            (d(2) + h(3), "2d3h"),
            (d(8) - ms(1), "7d23h"),
            (d(8), "8d"),
            (d(8) + h(23), "8d"),
            (d(367), "367d"),
            (y(2) - ms(1), "729d"),
            (y(2), "2y"),
            (y(2) + h(23) + m(59), "2y"),
            (y(2) + d(1), "2y1d"),
            (y(2) + d(45), "2y45d"),
            (y(8) - ms(1), "7y364d"),
            (y(8), "8y"),
            (y(8) + d(364), "8y"),
            (y(9), "9y"),
            (
                Duration::MAX,
                format!("{}y", Duration::MAX.whole_days() / 365).leak(),
            ),
            (Duration::MIN, "<invalid>"),
        ];
        for (duration, want) in cases {
            assert_eq!(human_duration(duration), want, "{duration}");
        }
    }

    #[test]
    fn include_object_parsing() {
        assert_eq!(parse_include_object(None), IncludeObject::Metadata);
        assert_eq!(parse_include_object(Some("None")), IncludeObject::None);
        assert_eq!(
            parse_include_object(Some("Metadata")),
            IncludeObject::Metadata
        );
        assert_eq!(parse_include_object(Some("Object")), IncludeObject::Object);
        assert_eq!(parse_include_object(Some("bogus")), IncludeObject::Metadata);
        assert_eq!(IncludeObject::default(), IncludeObject::Metadata);
    }

    #[test]
    fn table_envelope_and_row_objects() {
        let cm = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "kube-root-ca.crt", "namespace": "default", "uid": "u1",
                         "resourceVersion": "42", "creationTimestamp": "2024-05-01T11:00:00Z"},
            "data": {"ca.crt": "..."}
        });
        let items = [cm.clone()];

        let table = to_table("ConfigMap", &items, NOW, IncludeObject::Metadata, "1234");
        assert_eq!(table["kind"], "Table");
        assert_eq!(table["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(table["metadata"], json!({"resourceVersion": "1234"}));
        assert_eq!(
            table["columnDefinitions"][0],
            json!({"name": "Name", "type": "string", "format": "name",
                   "description": D_NAME, "priority": 0})
        );
        let row = &table["rows"][0];
        assert_eq!(row["cells"], json!(["kube-root-ca.crt", 1, "60m"]));
        assert!(row.get("conditions").is_none());
        assert_eq!(
            row["object"],
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                   "metadata": cm["metadata"]})
        );

        let table = to_table("ConfigMap", &items, NOW, IncludeObject::Object, "");
        assert_eq!(table["metadata"], json!({}));
        assert_eq!(table["rows"][0]["object"], cm);

        let table = to_table("ConfigMap", &items, NOW, IncludeObject::None, "");
        assert_eq!(table["rows"][0]["object"], Value::Null);

        let table = to_table("ConfigMap", &[], NOW, IncludeObject::Metadata, "7");
        assert_eq!(table["rows"], json!([]));
        assert_eq!(table["columnDefinitions"].as_array().unwrap().len(), 3);
    }

    fn running_pod() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "web-7d4b9c8f5-x2x9k",
                "namespace": "default",
                "creationTimestamp": "2024-05-01T07:00:00Z"
            },
            "spec": {
                "nodeName": "worker-1",
                "containers": [
                    {"name": "web", "image": "nginx:1.25"},
                    {"name": "log", "image": "busybox"}
                ]
            },
            "status": {
                "phase": "Running",
                "podIP": "10.244.1.5",
                "podIPs": [{"ip": "10.244.1.5"}, {"ip": "fd00::5"}],
                "conditions": [
                    {"type": "Initialized", "status": "True"},
                    {"type": "Ready", "status": "True"},
                    {"type": "PodScheduled", "status": "True"}
                ],
                "containerStatuses": [
                    {"name": "web", "ready": true, "restartCount": 2,
                     "state": {"running": {"startedAt": "2024-05-01T11:55:00Z"}},
                     "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled",
                                   "finishedAt": "2024-05-01T11:55:00Z"}}},
                    {"name": "log", "ready": true, "restartCount": 1,
                     "state": {"running": {"startedAt": "2024-05-01T10:00:00Z"}},
                     "lastState": {"terminated": {"exitCode": 1,
                                   "finishedAt": "2024-05-01T10:00:00Z"}}}
                ]
            }
        })
    }

    #[test]
    fn pod_columns_and_running_row() {
        let cols = columns("Pod", &[]);
        assert_eq!(
            names(&cols),
            [
                "Name",
                "Ready",
                "Status",
                "Restarts",
                "Age",
                "IP",
                "Node",
                "Nominated Node",
                "Readiness Gates"
            ]
        );
        assert_eq!(
            wide_names(&cols),
            ["IP", "Node", "Nominated Node", "Readiness Gates"]
        );
        assert_eq!(
            cells("Pod", running_pod()),
            arr(json!([
                "web-7d4b9c8f5-x2x9k",
                "2/2",
                "Running",
                "3 (5m ago)",
                "5h",
                "10.244.1.5",
                "worker-1",
                "<none>",
                "<none>"
            ]))
        );
    }

    #[test]
    fn pod_status_reasons() {
        // Waiting container: its reason wins and it is not ready.
        let mut pod = running_pod();
        pod["status"]["containerStatuses"][0]["state"] =
            json!({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}});
        pod["status"]["containerStatuses"][0]["ready"] = json!(false);
        let c = cells("Pod", pod);
        assert_eq!(c[1], "1/2");
        assert_eq!(c[2], "CrashLoopBackOff");

        // Freshly scheduled pod: no restarts, no IP yet.
        let pod = json!({
            "metadata": {"name": "p", "creationTimestamp": "2024-05-01T11:59:58Z"},
            "spec": {"nodeName": "worker-2", "containers": [{"name": "app", "image": "app"}]},
            "status": {"phase": "Pending", "containerStatuses": [
                {"name": "app", "ready": false, "restartCount": 0,
                 "state": {"waiting": {"reason": "ContainerCreating"}}}
            ]}
        });
        let c = cells("Pod", pod);
        assert_eq!(
            c[1..6],
            arr(json!(["0/1", "ContainerCreating", "0", "2s", "<none>"]))[..]
        );

        // Terminated container with a reason, and a deletion in progress.
        let mut pod = running_pod();
        pod["metadata"]["deletionTimestamp"] = json!("2024-05-01T11:59:00Z");
        assert_eq!(cells("Pod", pod)[2], "Terminating");

        // A terminated container without reason reports its exit code.
        let mut pod = running_pod();
        pod["status"]["containerStatuses"][1]["state"] = json!({"terminated": {"exitCode": 3}});
        assert_eq!(cells("Pod", pod)[2], "ExitCode:3");

        // Unknown when the node is lost.
        let mut pod = running_pod();
        pod["metadata"]["deletionTimestamp"] = json!("2024-05-01T11:59:00Z");
        pod["status"]["reason"] = json!("NodeLost");
        assert_eq!(cells("Pod", pod)[2], "Unknown");

        // Scheduling gates.
        let pod = json!({
            "metadata": {"name": "gated"},
            "spec": {"containers": [{"name": "a"}], "schedulingGates": [{"name": "x"}]},
            "status": {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}
            ]}
        });
        let c = cells("Pod", pod);
        assert_eq!(c[2], "SchedulingGated");
        assert_eq!(c[4], "<unknown>");
    }

    #[test]
    fn pod_completed_has_row_condition() {
        let pod = json!({
            "metadata": {"name": "job-abc", "creationTimestamp": "2024-04-30T12:00:00Z"},
            "spec": {"containers": [{"name": "main"}]},
            "status": {"phase": "Succeeded", "containerStatuses": [
                {"name": "main", "ready": false, "restartCount": 0,
                 "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
            ]}
        });
        let table = to_table("Pod", &[pod], NOW, IncludeObject::None, "");
        let row = &table["rows"][0];
        assert_eq!(row["cells"][1], "0/1");
        assert_eq!(row["cells"][2], "Completed");
        assert_eq!(row["cells"][4], "24h");
        assert_eq!(row["conditions"][0]["type"], "Completed");
        assert_eq!(row["conditions"][0]["reason"], "Succeeded");
    }

    #[test]
    fn pod_init_containers_and_sidecars() {
        // Second init container still waiting to start.
        let pod = json!({
            "metadata": {"name": "init", "creationTimestamp": "2024-05-01T11:59:00Z"},
            "spec": {
                "initContainers": [{"name": "a"}, {"name": "b"}],
                "containers": [{"name": "main"}]
            },
            "status": {"phase": "Pending",
                "initContainerStatuses": [
                    {"name": "a", "restartCount": 0,
                     "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                    {"name": "b", "restartCount": 0,
                     "state": {"waiting": {"reason": "PodInitializing"}}}
                ],
                "containerStatuses": [
                    {"name": "main", "restartCount": 0,
                     "state": {"waiting": {"reason": "PodInitializing"}}}
                ]}
        });
        let c = cells("Pod", pod.clone());
        assert_eq!(c[1], "0/1");
        assert_eq!(c[2], "Init:1/2");

        // Failing init container.
        let mut failing = pod.clone();
        failing["status"]["initContainerStatuses"][1] = json!({
            "name": "b", "restartCount": 4,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2024-05-01T11:59:30Z"}}
        });
        let c = cells("Pod", failing);
        assert_eq!(c[2], "Init:CrashLoopBackOff");
        assert_eq!(c[3], "4 (30s ago)");

        let mut errored = pod;
        errored["status"]["initContainerStatuses"][1]["state"] =
            json!({"terminated": {"exitCode": 2, "reason": "Error"}});
        assert_eq!(cells("Pod", errored)[2], "Init:Error");

        // A started sidecar counts towards READY alongside the main container.
        let pod = json!({
            "metadata": {"name": "sidecar"},
            "spec": {
                "initContainers": [{"name": "proxy", "restartPolicy": "Always"}],
                "containers": [{"name": "main"}]
            },
            "status": {"phase": "Running",
                "conditions": [{"type": "Initialized", "status": "True"}],
                "initContainerStatuses": [
                    {"name": "proxy", "ready": true, "started": true, "restartCount": 1,
                     "state": {"running": {}}}
                ],
                "containerStatuses": [
                    {"name": "main", "ready": true, "restartCount": 0, "state": {"running": {}}}
                ]}
        });
        let c = cells("Pod", pod);
        assert_eq!(c[1], "2/2");
        assert_eq!(c[2], "Running");
        assert_eq!(c[3], "1");
    }

    #[test]
    fn pod_readiness_gates_and_nominated_node() {
        let mut pod = running_pod();
        pod["spec"]["readinessGates"] =
            json!([{"conditionType": "example.com/lb"}, {"conditionType": "example.com/dns"}]);
        pod["status"]["conditions"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "example.com/lb", "status": "True"}));
        pod["status"]["nominatedNodeName"] = json!("worker-9");
        let c = cells("Pod", pod);
        assert_eq!(c[7], "worker-9");
        assert_eq!(c[8], "1/2");
    }

    #[test]
    fn service_rows() {
        let cols = columns("Service", &[]);
        assert_eq!(
            names(&cols),
            [
                "Name",
                "Type",
                "Cluster-IP",
                "External-IP",
                "Port(s)",
                "Age",
                "Selector"
            ]
        );
        assert_eq!(wide_names(&cols), ["Selector"]);

        let svc = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "namespace": "default",
                         "creationTimestamp": "2024-04-01T12:00:00Z"},
            "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"],
                     "ports": [{"name": "https", "port": 443, "protocol": "TCP",
                                "targetPort": 6443}]}
        });
        assert_eq!(
            cells("Service", svc),
            arr(json!([
                "kubernetes",
                "ClusterIP",
                "10.96.0.1",
                "<none>",
                "443/TCP",
                "30d",
                "<none>"
            ]))
        );

        let svc = json!({
            "metadata": {"name": "web", "creationTimestamp": "2024-05-01T11:57:00Z"},
            "spec": {"type": "NodePort", "clusterIPs": ["10.96.12.7"],
                     "selector": {"app": "web", "tier": "front"},
                     "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"},
                               {"port": 53, "protocol": "UDP"}]}
        });
        assert_eq!(
            cells("Service", svc),
            arr(json!([
                "web",
                "NodePort",
                "10.96.12.7",
                "<none>",
                "80:30080/TCP,53/UDP",
                "3m",
                "app=web,tier=front"
            ]))
        );

        let lb = json!({
            "metadata": {"name": "lb"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.3.3",
                     "externalIPs": ["192.0.2.10"],
                     "ports": [{"port": 443, "nodePort": 31443}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.9"},
                                                    {"hostname": "lb.example.com"}]}}
        });
        let c = cells("Service", lb.clone());
        assert_eq!(c[2], "10.96.3.3");
        assert_eq!(c[3], "203.0.113.9,lb.example.com,192.0.2.10");
        assert_eq!(c[4], "443:31443/TCP");

        let mut pending = lb;
        pending["spec"]["externalIPs"] = json!([]);
        pending["status"] = json!({});
        assert_eq!(cells("Service", pending)[3], "<pending>");

        let headless = json!({"metadata": {"name": "db"},
            "spec": {"clusterIP": "None", "clusterIPs": ["None"], "externalIPs": ["198.51.100.1"]}});
        let c = cells("Service", headless);
        assert_eq!(c[1], "ClusterIP");
        assert_eq!(c[2], "None");
        assert_eq!(c[3], "198.51.100.1");
        assert_eq!(c[4], "<none>");

        let external = json!({"metadata": {"name": "ext"},
            "spec": {"type": "ExternalName", "externalName": "db.example.com"}});
        let c = cells("Service", external);
        assert_eq!(c[2], "<none>");
        assert_eq!(c[3], "db.example.com");
    }

    #[test]
    fn node_rows() {
        let cols = columns("Node", &[]);
        assert_eq!(
            names(&cols),
            [
                "Name",
                "Status",
                "Roles",
                "Age",
                "Version",
                "Internal-IP",
                "External-IP",
                "OS-Image",
                "Kernel-Version",
                "Container-Runtime"
            ]
        );
        assert_eq!(wide_names(&cols).len(), 5);

        let node = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "cp-1", "creationTimestamp": "2024-04-29T09:00:00Z",
                "labels": {"kubernetes.io/hostname": "cp-1",
                           "node-role.kubernetes.io/control-plane": "",
                           "node-role.kubernetes.io/etcd": "true",
                           "node-role.kubernetes.io/": ""}},
            "spec": {"podCIDR": "10.244.0.0/24"},
            "status": {
                "conditions": [
                    {"type": "MemoryPressure", "status": "False"},
                    {"type": "Ready", "status": "True", "reason": "KubeletReady"}
                ],
                "addresses": [{"type": "InternalIP", "address": "172.18.0.2"},
                              {"type": "Hostname", "address": "cp-1"}],
                "nodeInfo": {"kubeletVersion": "v1.33.1", "osImage": "Debian GNU/Linux 12",
                             "kernelVersion": "6.8.0-1", "containerRuntimeVersion": "containerd://2.0.0"}
            }
        });
        assert_eq!(
            cells("Node", node),
            arr(json!([
                "cp-1",
                "Ready",
                "control-plane,etcd",
                "2d3h",
                "v1.33.1",
                "172.18.0.2",
                "<none>",
                "Debian GNU/Linux 12",
                "6.8.0-1",
                "containerd://2.0.0"
            ]))
        );

        let node = json!({
            "metadata": {"name": "w-1", "labels": {"kubernetes.io/role": "worker"}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}
        });
        let c = cells("Node", node);
        assert_eq!(c[1], "NotReady,SchedulingDisabled");
        assert_eq!(c[2], "worker");
        assert_eq!(c[4], "");
        assert_eq!(c[7], "<unknown>");

        let c = cells("Node", json!({"metadata": {"name": "bare"}}));
        assert_eq!(c[1], "Unknown");
        assert_eq!(c[2], "<none>");
    }

    #[test]
    fn namespace_rows() {
        assert_eq!(names(&columns("Namespace", &[])), ["Name", "Status", "Age"]);
        let ns = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "kube-system", "creationTimestamp": "2024-05-01T11:58:05Z"},
            "status": {"phase": "Active"}});
        assert_eq!(
            cells("Namespace", ns),
            arr(json!(["kube-system", "Active", "115s"]))
        );
        let ns = json!({"metadata": {"name": "old", "deletionTimestamp": "2024-05-01T11:00:00Z"},
            "status": {"phase": "Terminating"}});
        assert_eq!(cells("Namespace", ns)[1], "Terminating");
    }

    #[test]
    fn deployment_rows() {
        let cols = columns("Deployment", &[]);
        assert_eq!(
            names(&cols),
            [
                "Name",
                "Ready",
                "Up-to-date",
                "Available",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
        assert_eq!(wide_names(&cols), ["Containers", "Images", "Selector"]);
        let deploy = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "coredns", "namespace": "kube-system",
                         "creationTimestamp": "2024-05-01T06:57:00Z"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"k8s-app": "kube-dns"},
                             "matchExpressions": [
                                 {"key": "tier", "operator": "In", "values": ["b", "a"]},
                                 {"key": "canary", "operator": "DoesNotExist"}]},
                "template": {"spec": {"containers": [
                    {"name": "coredns", "image": "registry.k8s.io/coredns/coredns:v1.12.0"},
                    {"name": "sidecar", "image": "busybox"}]}}
            },
            "status": {"replicas": 2, "updatedReplicas": 2, "readyReplicas": 1,
                       "availableReplicas": 1}
        });
        assert_eq!(
            cells("Deployment", deploy),
            arr(json!([
                "coredns",
                "1/2",
                2,
                1,
                "5h3m",
                "coredns,sidecar",
                "registry.k8s.io/coredns/coredns:v1.12.0,busybox",
                "!canary,k8s-app=kube-dns,tier in (a,b)"
            ]))
        );
        let bad = json!({"metadata": {"name": "bad"},
            "spec": {"selector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}}});
        let c = cells("Deployment", bad);
        assert_eq!(c[1], "0/1");
        assert_eq!(c[7], "<invalid>");
    }

    #[test]
    fn replicaset_rows() {
        let cols = columns("ReplicaSet", &[]);
        assert_eq!(
            names(&cols),
            [
                "Name",
                "Desired",
                "Current",
                "Ready",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
        assert_eq!(wide_names(&cols), ["Containers", "Images", "Selector"]);
        let rs = json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "web-7d4b9c8f5", "creationTimestamp": "2024-05-01T11:48:00Z"},
            "spec": {"replicas": 3,
                     "selector": {"matchLabels": {"app": "web", "pod-template-hash": "7d4b9c8f5"}},
                     "template": {"spec": {"containers": [{"name": "web", "image": "nginx"}]}}},
            "status": {"replicas": 3, "readyReplicas": 2}
        });
        assert_eq!(
            cells("ReplicaSet", rs),
            arr(json!([
                "web-7d4b9c8f5",
                3,
                3,
                2,
                "12m",
                "web",
                "nginx",
                "app=web,pod-template-hash=7d4b9c8f5"
            ]))
        );
        let c = cells(
            "ReplicaSet",
            json!({"metadata": {"name": "x"}, "spec": {"replicas": 0}}),
        );
        assert_eq!(c[1..4], [json!(0), json!(0), json!(0)]);
        assert_eq!(c[7], "<none>");
    }

    #[test]
    fn statefulset_rows() {
        let cols = columns("StatefulSet", &[]);
        assert_eq!(
            names(&cols),
            ["Name", "Ready", "Age", "Containers", "Images"]
        );
        assert_eq!(wide_names(&cols), ["Containers", "Images"]);
        let sts = json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "db", "creationTimestamp": "2024-05-01T11:59:15Z"},
            "spec": {"replicas": 3, "serviceName": "db",
                     "template": {"spec": {"containers": [{"name": "pg", "image": "postgres:16"}]}}},
            "status": {"replicas": 2, "readyReplicas": 2}
        });
        assert_eq!(
            cells("StatefulSet", sts),
            arr(json!(["db", "2/3", "45s", "pg", "postgres:16"]))
        );
    }

    #[test]
    fn daemonset_rows() {
        let cols = columns("DaemonSet", &[]);
        assert_eq!(
            names(&cols),
            [
                "Name",
                "Desired",
                "Current",
                "Ready",
                "Up-to-date",
                "Available",
                "Node Selector",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
        let ds = json!({
            "apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "kube-proxy", "creationTimestamp": "2024-05-01T02:00:00Z"},
            "spec": {"selector": {"matchLabels": {"k8s-app": "kube-proxy"}},
                     "template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"},
                                           "containers": [{"name": "kube-proxy",
                                                           "image": "registry.k8s.io/kube-proxy:v1.33.1"}]}}},
            "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2,
                       "updatedNumberScheduled": 3, "numberAvailable": 2}
        });
        assert_eq!(
            cells("DaemonSet", ds),
            arr(json!([
                "kube-proxy",
                3,
                3,
                2,
                3,
                2,
                "kubernetes.io/os=linux",
                "10h",
                "kube-proxy",
                "registry.k8s.io/kube-proxy:v1.33.1",
                "k8s-app=kube-proxy"
            ]))
        );
    }

    #[test]
    fn job_and_cronjob_rows() {
        assert_eq!(
            names(&columns("Job", &[])),
            [
                "Name",
                "Status",
                "Completions",
                "Duration",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
        let job = json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "pi", "creationTimestamp": "2024-05-01T11:50:00Z"},
            "spec": {"completions": 1, "parallelism": 1,
                     "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "abc"}},
                     "template": {"spec": {"containers": [{"name": "pi", "image": "perl"}]}}},
            "status": {"succeeded": 1, "startTime": "2024-05-01T11:50:00Z",
                       "completionTime": "2024-05-01T11:50:42Z",
                       "conditions": [{"type": "Complete", "status": "True"}]}
        });
        assert_eq!(
            cells("Job", job),
            arr(json!([
                "pi",
                "Complete",
                "1/1",
                "42s",
                "10m",
                "pi",
                "perl",
                "batch.kubernetes.io/controller-uid=abc"
            ]))
        );
        let running = json!({"metadata": {"name": "work"},
            "spec": {"parallelism": 3}, "status": {"startTime": "2024-05-01T11:00:00Z"}});
        let c = cells("Job", running);
        assert_eq!(c[1..4], [json!("Running"), json!("0/1 of 3"), json!("60m")]);

        assert_eq!(
            names(&columns("CronJob", &[])),
            [
                "Name",
                "Schedule",
                "Timezone",
                "Suspend",
                "Active",
                "Last Schedule",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
        let cj = json!({
            "apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": "backup", "creationTimestamp": "2024-04-01T00:00:00Z"},
            "spec": {"schedule": "*/5 * * * *", "suspend": false,
                     "jobTemplate": {"spec": {"template": {"spec": {"containers": [
                         {"name": "backup", "image": "restic"}]}}}}},
            "status": {"active": [{"name": "backup-1"}], "lastScheduleTime": "2024-05-01T11:55:00Z"}
        });
        assert_eq!(
            cells("CronJob", cj),
            arr(json!([
                "backup",
                "*/5 * * * *",
                "<none>",
                "False",
                1,
                "5m",
                "30d",
                "backup",
                "restic",
                "<none>"
            ]))
        );
    }

    #[test]
    fn controllerrevision_and_pdb_rows() {
        let cr = json!({
            "apiVersion": "apps/v1", "kind": "ControllerRevision",
            "metadata": {"name": "db-5f6d", "creationTimestamp": "2024-05-01T11:00:00Z",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet",
                                     "name": "db", "controller": true}]},
            "revision": 2
        });
        assert_eq!(
            cells("ControllerRevision", cr),
            arr(json!(["db-5f6d", "statefulset.apps/db", 2, "60m"]))
        );
        assert_eq!(
            cells("ControllerRevision", json!({"metadata": {"name": "x"}}))[1],
            "<none>"
        );

        let pdb = json!({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": "web", "creationTimestamp": "2024-05-01T11:00:00Z"},
            "spec": {"minAvailable": "50%"},
            "status": {"disruptionsAllowed": 1}
        });
        assert_eq!(
            cells("PodDisruptionBudget", pdb),
            arr(json!(["web", "50%", "N/A", 1, "60m"]))
        );
    }

    #[test]
    fn endpoints_rows() {
        assert_eq!(
            names(&columns("Endpoints", &[])),
            ["Name", "Endpoints", "Age"]
        );
        let ep = json!({
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "web", "creationTimestamp": "2024-05-01T11:00:00Z"},
            "subsets": [{
                "addresses": [{"ip": "10.244.1.5"}, {"ip": "10.244.2.7"}],
                "notReadyAddresses": [{"ip": "10.244.3.9"}],
                "ports": [{"name": "http", "port": 80}, {"name": "metrics", "port": 9090}]
            }]
        });
        assert_eq!(
            cells("Endpoints", ep),
            arr(json!([
                "web",
                "10.244.1.5:80,10.244.2.7:80,10.244.1.5:9090 + 1 more...",
                "60m"
            ]))
        );
        let ep = json!({"metadata": {"name": "v6"}, "subsets": [
            {"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 443}]},
            {"addresses": [{"ip": "10.0.0.1"}]}
        ]});
        assert_eq!(cells("Endpoints", ep)[1], "[fd00::1]:443,10.0.0.1");
        assert_eq!(
            cells("Endpoints", json!({"metadata": {"name": "e"}}))[1],
            "<none>"
        );
    }

    #[test]
    fn endpointslice_rows() {
        assert_eq!(
            names(&columns("EndpointSlice", &[])),
            ["Name", "AddressType", "Ports", "Endpoints", "Age"]
        );
        let slice = json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "web-abc12", "creationTimestamp": "2024-05-01T11:59:00Z"},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"name": "named"}, {}],
            "endpoints": [
                {"addresses": ["10.244.1.5"], "conditions": {"ready": true}},
                {"addresses": ["10.244.2.7"]},
                {"addresses": ["10.244.3.9"]},
                {"addresses": ["10.244.4.1", "10.244.4.2"]}
            ]
        });
        assert_eq!(
            cells("EndpointSlice", slice),
            arr(json!([
                "web-abc12",
                "IPv4",
                "80,named,*",
                "10.244.1.5,10.244.2.7,10.244.3.9 + 2 more...",
                "60s"
            ]))
        );
        let empty = json!({"metadata": {"name": "e"}, "addressType": "IPv6"});
        let c = cells("EndpointSlice", empty);
        assert_eq!(c[2], "<unset>");
        assert_eq!(c[3], "<unset>");
    }

    #[test]
    fn ingress_and_ingressclass_rows() {
        assert_eq!(
            names(&columns("Ingress", &[])),
            ["Name", "Class", "Hosts", "Address", "Ports", "Age"]
        );
        let ing = json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "web", "creationTimestamp": "2024-05-01T11:00:00Z"},
            "spec": {"ingressClassName": "nginx",
                     "tls": [{"hosts": ["a.example.com"]}],
                     "rules": [{"host": "a.example.com"}, {"host": "b.example.com"}, {},
                               {"host": "c.example.com"}, {"host": "d.example.com"}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}
        });
        assert_eq!(
            cells("Ingress", ing),
            arr(json!([
                "web",
                "nginx",
                "a.example.com,b.example.com,c.example.com + 2 more...",
                "203.0.113.7",
                "80, 443",
                "60m"
            ]))
        );
        let c = cells("Ingress", json!({"metadata": {"name": "bare"}}));
        assert_eq!(
            c[1..5],
            [json!("<none>"), json!("*"), json!(""), json!("80")]
        );

        let class = json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
            "metadata": {"name": "nginx"},
            "spec": {"controller": "k8s.io/ingress-nginx",
                     "parameters": {"apiGroup": "k8s.example.com", "kind": "IngressParameters",
                                    "name": "external-lb"}}
        });
        let c = cells("IngressClass", class);
        assert_eq!(c[1], "k8s.io/ingress-nginx");
        assert_eq!(c[2], "IngressParameters.k8s.example.com/external-lb");
    }

    #[test]
    fn networkpolicy_and_servicecidr_rows() {
        let np = json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "deny-all", "creationTimestamp": "2024-05-01T11:00:00Z"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}
        });
        assert_eq!(
            cells("NetworkPolicy", np),
            arr(json!(["deny-all", "<none>", "60m"]))
        );
        let np = json!({"metadata": {"name": "web"},
            "spec": {"podSelector": {"matchExpressions": [
                {"key": "app", "operator": "NotIn", "values": ["db"]},
                {"key": "role", "operator": "Exists"}]}}});
        assert_eq!(cells("NetworkPolicy", np)[1], "app notin (db),role");

        assert_eq!(
            names(&columns("ServiceCIDR", &[])),
            ["Name", "CIDRs", "Age"]
        );
        let cidr = json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDR",
            "metadata": {"name": "kubernetes", "creationTimestamp": "2024-04-24T12:00:00Z"},
            "spec": {"cidrs": ["10.96.0.0/16", "fd00:10:96::/112"]}
        });
        assert_eq!(
            cells("ServiceCIDR", cidr),
            arr(json!(["kubernetes", "10.96.0.0/16,fd00:10:96::/112", "7d"]))
        );
    }

    #[test]
    fn configmap_secret_serviceaccount_rows() {
        assert_eq!(names(&columns("ConfigMap", &[])), ["Name", "Data", "Age"]);
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "settings", "creationTimestamp": "2024-05-01T11:00:00Z"},
            "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}});
        assert_eq!(cells("ConfigMap", cm), arr(json!(["settings", 3, "60m"])));

        assert_eq!(
            names(&columns("Secret", &[])),
            ["Name", "Type", "Data", "Age"]
        );
        let secret = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "tls", "creationTimestamp": "2024-05-01T11:00:00Z"},
            "type": "kubernetes.io/tls", "data": {"tls.crt": "...", "tls.key": "..."}});
        assert_eq!(
            cells("Secret", secret),
            arr(json!(["tls", "kubernetes.io/tls", 2, "60m"]))
        );
        assert_eq!(
            cells("Secret", json!({"metadata": {"name": "s"}}))[1..3],
            [json!("Opaque"), json!(0)]
        );

        assert_eq!(
            names(&columns("ServiceAccount", &[])),
            ["Name", "Secrets", "Age"]
        );
        let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "default", "creationTimestamp": "2024-05-01T11:00:00Z"}});
        assert_eq!(
            cells("ServiceAccount", sa),
            arr(json!(["default", 0, "60m"]))
        );
        let sa = json!({"metadata": {"name": "ci"}, "secrets": [{"name": "ci-token"}]});
        assert_eq!(cells("ServiceAccount", sa)[1], 1);
    }

    #[test]
    fn rbac_rows() {
        for kind in ["Role", "ClusterRole"] {
            let cols = columns(kind, &[]);
            assert_eq!(names(&cols), ["Name", "Created At"]);
            let table = to_table(kind, &[], NOW, IncludeObject::None, "");
            assert_eq!(table["columnDefinitions"][1]["type"], "date");
        }
        let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "admin", "creationTimestamp": "2024-04-30T14:03:07+02:00"},
            "rules": []});
        assert_eq!(
            cells("ClusterRole", role),
            arr(json!(["admin", "2024-04-30T12:03:07Z"]))
        );
        assert_eq!(
            cells("Role", json!({"metadata": {"name": "r"}}))[1],
            "0001-01-01T00:00:00Z"
        );

        for kind in ["RoleBinding", "ClusterRoleBinding"] {
            let cols = columns(kind, &[]);
            assert_eq!(
                names(&cols),
                ["Name", "Role", "Age", "Users", "Groups", "ServiceAccounts"]
            );
            assert_eq!(wide_names(&cols), ["Users", "Groups", "ServiceAccounts"]);
        }
        let rb = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "cluster-admin", "creationTimestamp": "2024-05-01T11:00:00Z"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "cluster-admin"},
            "subjects": [
                {"kind": "Group", "name": "system:masters"},
                {"kind": "User", "name": "alice"},
                {"kind": "User", "name": "bob"},
                {"kind": "ServiceAccount", "name": "ci", "namespace": "build"}
            ]
        });
        assert_eq!(
            cells("ClusterRoleBinding", rb),
            arr(json!([
                "cluster-admin",
                "ClusterRole/cluster-admin",
                "60m",
                "alice, bob",
                "system:masters",
                "build/ci"
            ]))
        );
    }

    #[test]
    fn lease_priorityclass_webhook_rows() {
        assert_eq!(names(&columns("Lease", &[])), ["Name", "Holder", "Age"]);
        let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "kube-scheduler", "creationTimestamp": "2024-05-01T11:00:00Z"},
            "spec": {"holderIdentity": "cp-1_0f6e", "leaseDurationSeconds": 15}});
        assert_eq!(
            cells("Lease", lease),
            arr(json!(["kube-scheduler", "cp-1_0f6e", "60m"]))
        );
        assert_eq!(cells("Lease", json!({"metadata": {"name": "l"}}))[1], "");

        let pc = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": "system-node-critical", "creationTimestamp": "2024-05-01T11:00:00Z"},
            "value": 2000001000});
        assert_eq!(
            cells("PriorityClass", pc),
            arr(json!([
                "system-node-critical",
                2000001000,
                false,
                "60m",
                "PreemptLowerPriority"
            ]))
        );

        let hook = json!({"apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": "policy", "creationTimestamp": "2024-05-01T11:00:00Z"},
            "webhooks": [{"name": "a.example.com"}, {"name": "b.example.com"}]});
        assert_eq!(
            cells("ValidatingWebhookConfiguration", hook),
            arr(json!(["policy", 2, "60m"]))
        );
    }

    #[test]
    fn event_rows() {
        let cols = columns("Event", &[]);
        assert_eq!(
            names(&cols),
            [
                "Last Seen",
                "Type",
                "Reason",
                "Object",
                "Subobject",
                "Source",
                "Message",
                "First Seen",
                "Count",
                "Name"
            ]
        );
        assert_eq!(
            wide_names(&cols),
            ["Subobject", "Source", "First Seen", "Count", "Name"]
        );
        let ev = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "web-1.17c2", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web-1",
                               "fieldPath": "spec.containers{web}"},
            "reason": "BackOff", "type": "Warning",
            "message": "Back-off restarting failed container web\n",
            "source": {"component": "kubelet", "host": "worker-1"},
            "firstTimestamp": "2024-05-01T11:00:00Z",
            "lastTimestamp": "2024-05-01T11:59:30Z",
            "count": 12
        });
        assert_eq!(
            cells("Event", ev),
            arr(json!([
                "30s",
                "Warning",
                "BackOff",
                "pod/web-1",
                "spec.containers{web}",
                "kubelet, worker-1",
                "Back-off restarting failed container web",
                "60m",
                12,
                "web-1.17c2"
            ]))
        );

        // events.k8s.io/v1 shape, with a series and no deprecated timestamps.
        let ev = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "sched.1"},
            "eventTime": "2024-05-01T11:49:59.123456Z",
            "series": {"count": 4, "lastObservedTime": "2024-05-01T11:58:00.000000Z"},
            "reportingController": "default-scheduler",
            "reportingInstance": "",
            "action": "Scheduling", "reason": "FailedScheduling", "type": "Warning",
            "regarding": {"kind": "Pod", "name": "web-2"},
            "note": "0/3 nodes are available"
        });
        let c = cells("Event", ev);
        assert_eq!(c[0], "2m");
        assert_eq!(c[3], "pod/web-2");
        assert_eq!(c[5], "default-scheduler");
        assert_eq!(c[6], "0/3 nodes are available");
        assert_eq!(c[7], "10m");
        assert_eq!(c[8], 4);

        // A singleton event without count or timestamps.
        let c = cells(
            "Event",
            json!({"metadata": {"name": "e"}, "involvedObject": {"kind": "Node"}}),
        );
        assert_eq!(c[0], "<unknown>");
        assert_eq!(c[3], "node");
        assert_eq!(c[8], 1);
    }

    #[test]
    fn other_kinds_use_the_generic_columns() {
        let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com", "creationTimestamp": "2024-05-01T11:00:00Z"}});
        assert_eq!(
            names(&columns(
                "CustomResourceDefinition",
                std::slice::from_ref(&crd)
            )),
            ["Name", "Created At"]
        );
        assert_eq!(
            cells("CustomResourceDefinition", crd),
            arr(json!(["widgets.example.com", "2024-05-01T11:00:00Z"]))
        );

        let widget = json!({"apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": "w1", "creationTimestamp": "2024-05-01T11:00:00Z"}});
        let cols = columns("Widget", std::slice::from_ref(&widget));
        assert_eq!(names(&cols), ["Name", "Age"]);
        assert_eq!(cells("Widget", widget), arr(json!(["w1", "60m"])));
        assert_eq!(
            cells("Widget", json!({"metadata": {"name": "w2"}}))[1],
            Value::Null
        );
        assert_eq!(names(&columns("Widget", &[])), ["Name", "Age"]);
    }

    #[test]
    fn missing_and_malformed_fields_do_not_panic() {
        let kinds = [
            "Pod",
            "Service",
            "Node",
            "Namespace",
            "Deployment",
            "ReplicaSet",
            "StatefulSet",
            "DaemonSet",
            "Job",
            "CronJob",
            "ControllerRevision",
            "Endpoints",
            "EndpointSlice",
            "Ingress",
            "IngressClass",
            "NetworkPolicy",
            "ServiceCIDR",
            "ConfigMap",
            "Secret",
            "ServiceAccount",
            "Role",
            "ClusterRole",
            "RoleBinding",
            "ClusterRoleBinding",
            "Lease",
            "Event",
            "PriorityClass",
            "PodDisruptionBudget",
            "MutatingWebhookConfiguration",
            "ValidatingWebhookConfiguration",
            "Widget",
            "",
        ];
        let weird = [
            json!(null),
            json!({}),
            json!([]),
            json!("pod"),
            json!(17),
            json!({"metadata": null, "spec": null, "status": null}),
            json!({"metadata": 5, "spec": "x", "status": [1, 2], "apiVersion": 3}),
            json!({
                "metadata": {"name": 7, "creationTimestamp": "yesterday", "labels": [],
                             "deletionTimestamp": {}, "ownerReferences": {}},
                "spec": {"containers": {}, "initContainers": [null, 3, {"name": null}],
                         "ports": [null, {"port": "80", "nodePort": -1}], "replicas": "3",
                         "selector": {"matchLabels": [], "matchExpressions": [null, {}]},
                         "readinessGates": [{}], "cidrs": [1, null], "rules": [null],
                         "parameters": {}, "podSelector": 4, "externalIPs": "x"},
                "status": {"containerStatuses": [null, {"state": {"terminated": {}}},
                               {"restartCount": 9223372036854775807_i64,
                                "lastState": {"terminated": {"finishedAt": "9999-12-31T23:59:59Z"}}},
                               {"restartCount": 9223372036854775807_i64}],
                           "initContainerStatuses": [{"state": null}],
                           "conditions": "ready", "podIPs": [null],
                           "loadBalancer": {"ingress": [{}]}},
                "subsets": [{"addresses": [{}], "ports": [{}]}, null],
                "endpoints": [{"addresses": [null]}],
                "subjects": [null, {"kind": "ServiceAccount"}],
                "roleRef": 1, "data": "x", "webhooks": {}, "series": {},
                "count": 1e300, "value": -1.5
            }),
        ];
        for kind in kinds {
            let table = to_table(kind, &weird, NOW, IncludeObject::Metadata, "1");
            let columns = table["columnDefinitions"].as_array().unwrap().len();
            let rows = table["rows"].as_array().unwrap();
            assert_eq!(rows.len(), weird.len(), "{kind}");
            for row in rows {
                assert_eq!(row["cells"].as_array().unwrap().len(), columns, "{kind}");
                assert_eq!(row["object"]["kind"], "PartialObjectMetadata");
                assert!(row["object"]["metadata"].is_object());
            }
            // Extreme clocks must not panic either.
            for now in [
                datetime!(-9999-01-01 0:00 UTC),
                datetime!(+9999-12-31 23:59:59 UTC),
            ] {
                let _ = to_table(kind, &weird, now, IncludeObject::Object, "");
            }
        }
    }
}
