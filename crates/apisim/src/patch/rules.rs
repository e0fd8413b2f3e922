//! Which list fields of which kinds merge, and on what key: the table strategic merge patch
//! follows.

// ---------------------------------------------------------------------------------------------
// Strategic merge patch: the table of list strategies
// ---------------------------------------------------------------------------------------------

/// How a list field is patched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ListStrategy {
    /// No patch strategy: the patch's list replaces the live one.
    Replace,
    /// `patchStrategy:"merge"` with `patchMergeKey`: elements are objects merged by that key.
    MergeByKey(&'static str),
    /// `patchStrategy:"merge"` on a list of plain values: set union.
    MergeValues,
}

use ListStrategy::{MergeByKey, MergeValues};

/// Rules relative to where a type is embedded: (dotted field path, strategy). A path names
/// map keys only; list elements do not add a component (`containers.env` is the `env` list of
/// every container).
type Rules = &'static [(&'static str, ListStrategy)];

/// `metav1.ObjectMeta`.
const OBJECT_META: Rules = &[
    ("finalizers", MergeValues),
    ("ownerReferences", MergeByKey("uid")),
];

/// `core/v1.PodSpec`, including the lists of `Container` and `EphemeralContainer`.
const POD_SPEC: Rules = &[
    ("volumes", MergeByKey("name")),
    ("containers", MergeByKey("name")),
    ("containers.ports", MergeByKey("containerPort")),
    ("containers.env", MergeByKey("name")),
    ("containers.volumeMounts", MergeByKey("mountPath")),
    ("containers.volumeDevices", MergeByKey("devicePath")),
    ("initContainers", MergeByKey("name")),
    ("initContainers.ports", MergeByKey("containerPort")),
    ("initContainers.env", MergeByKey("name")),
    ("initContainers.volumeMounts", MergeByKey("mountPath")),
    ("initContainers.volumeDevices", MergeByKey("devicePath")),
    ("ephemeralContainers", MergeByKey("name")),
    ("ephemeralContainers.ports", MergeByKey("containerPort")),
    ("ephemeralContainers.env", MergeByKey("name")),
    ("ephemeralContainers.volumeMounts", MergeByKey("mountPath")),
    (
        "ephemeralContainers.volumeDevices",
        MergeByKey("devicePath"),
    ),
    ("imagePullSecrets", MergeByKey("name")),
    ("hostAliases", MergeByKey("ip")),
    ("topologySpreadConstraints", MergeByKey("topologyKey")),
    ("resourceClaims", MergeByKey("name")),
    ("schedulingGates", MergeByKey("name")),
    // tolerations, readinessGates, containers.envFrom, containers.resizePolicy: replaced.
];

/// `core/v1.PodStatus`.
const POD_STATUS: Rules = &[
    ("conditions", MergeByKey("type")),
    ("podIPs", MergeByKey("ip")),
    ("hostIPs", MergeByKey("ip")),
    ("resourceClaimStatuses", MergeByKey("name")),
];

/// A status whose only keyed list is `conditions` (Deployment, ReplicaSet, StatefulSet,
/// Namespace, Service, ServiceCIDR).
const CONDITIONS: Rules = &[("conditions", MergeByKey("type"))];

/// `core/v1.ServiceSpec`. Kubernetes declares `port` as the merge key (server-side apply uses
/// port and protocol).
const SERVICE_SPEC: Rules = &[("ports", MergeByKey("port"))];

/// `core/v1.NodeSpec`.
const NODE_SPEC: Rules = &[("podCIDRs", MergeValues)];

/// `core/v1.NodeStatus`.
const NODE_STATUS: Rules = &[
    ("conditions", MergeByKey("type")),
    ("addresses", MergeByKey("type")),
];

/// `core/v1.ServiceAccount` (top-level fields).
const SERVICE_ACCOUNT: Rules = &[("secrets", MergeByKey("name"))];

/// Where each rule list applies: (kind, dotted path of the embedded type, rules). Kind `*`
/// means every kind in [`KNOWN_KINDS`]; the empty path is the object's top level.
pub(super) const MOUNTS: &[(&str, &str, Rules)] = &[
    ("*", "metadata", OBJECT_META),
    ("Pod", "spec", POD_SPEC),
    ("Pod", "status", POD_STATUS),
    ("Deployment", "spec.template.metadata", OBJECT_META),
    ("Deployment", "spec.template.spec", POD_SPEC),
    ("Deployment", "status", CONDITIONS),
    ("ReplicaSet", "spec.template.metadata", OBJECT_META),
    ("ReplicaSet", "spec.template.spec", POD_SPEC),
    ("ReplicaSet", "status", CONDITIONS),
    ("StatefulSet", "spec.template.metadata", OBJECT_META),
    ("StatefulSet", "spec.template.spec", POD_SPEC),
    ("StatefulSet", "status", CONDITIONS),
    ("Service", "spec", SERVICE_SPEC),
    ("Service", "status", CONDITIONS),
    ("Node", "spec", NODE_SPEC),
    ("Node", "status", NODE_STATUS),
    ("Namespace", "status", CONDITIONS),
    ("ServiceAccount", "", SERVICE_ACCOUNT),
    ("ServiceCIDR", "status", CONDITIONS),
];

/// Kinds whose patch strategies are known. The others only get directive handling.
pub(super) const KNOWN_KINDS: &[&str] = &[
    "Pod",
    "Service",
    "Deployment",
    "ReplicaSet",
    "StatefulSet",
    "Node",
    "Namespace",
    "ConfigMap",
    "Secret",
    "ServiceAccount",
    "Endpoints",
    "EndpointSlice",
    "Role",
    "ClusterRole",
    "RoleBinding",
    "ClusterRoleBinding",
    "Lease",
    "ServiceCIDR",
];
