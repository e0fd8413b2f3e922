//! PATCH request bodies: JSON patch (RFC 6902), JSON merge patch (RFC 7386), Kubernetes
//! strategic merge patch, and a simulated server-side apply.
//!
//! Every function here sees untrusted request bodies. None of them panics; bodies are bounded
//! by [`MAX_PATCH_BYTES`], JSON patches by [`MAX_JSON_PATCH_OPERATIONS`] and by the bytes their
//! `copy` operations may duplicate, and recursion only follows the depth of the patch, which
//! the JSON and YAML parsers already limit.
//!
//! # Strategic merge patch
//!
//! [`strategic_merge_patch`] follows the rules of Kubernetes' `strategicpatch` package for the
//! kinds this simulator serves:
//!
//! * maps merge recursively and a `null` value deletes the key;
//! * lists whose field has a patch merge key (`containers` by `name`, `ports` by
//!   `containerPort`, ...) are merged element by element on that key; a list of plain values
//!   with the merge strategy (`metadata.finalizers`, a Node's `spec.podCIDRs`) becomes the
//!   union of both lists; every other list is replaced by the patch's list;
//! * merged lists get the order Kubernetes gives them: elements named in the patch (or in
//!   its `$setElementOrder` list) follow that order, the others keep their live order and are
//!   placed before a patch element only when they came before it in the live list, so an
//!   element that only the patch has goes ahead of the live-only elements after it (this is
//!   why kubectl sends `$setElementOrder`);
//! * the directives `$patch: replace | delete | merge` (in a map or as a list element),
//!   `$retainKeys`, `$setElementOrder/<field>` and `$deleteFromPrimitiveList/<field>` are
//!   honoured; any other key starting with `$` is rejected.
//!
//! The merge keys come from the `patchStrategy` / `patchMergeKey` tags of the Kubernetes API
//! types and live in one table (`MOUNTS` and the rule lists it refers to), so serving
//! another kind means adding a line there. A kind that is not in the table is patched like a
//! JSON merge patch (every list replaced) that still honours the directives; a real API
//! server refuses strategic merge patches for such kinds (custom resources) instead.
//!
//! Differences from the real implementation: the consistency checks between a
//! `$setElementOrder` list and the patch list are not performed (the order list is simply
//! used), `$patch: merge` is accepted as a no-op in maps and list elements, and a
//! `$deleteFromPrimitiveList` directive removes values whatever the list's strategy.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

/// Largest PATCH body accepted, in bytes (3 MiB, the request size limit of kube-apiserver).
pub const MAX_PATCH_BYTES: usize = 3 * 1024 * 1024;

/// Most operations accepted in one JSON patch (kube-apiserver's limit).
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// Most bytes the `copy` operations of one JSON patch may duplicate in total, so a short patch
/// cannot make the object grow exponentially.
pub const MAX_JSON_PATCH_COPY_BYTES: usize = MAX_PATCH_BYTES;

/// The four PATCH flavours Kubernetes understands, told apart by `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PatchKind {
    /// `application/json-patch+json`: an RFC 6902 list of operations.
    Json,
    /// `application/merge-patch+json`: an RFC 7386 merge patch.
    Merge,
    /// `application/strategic-merge-patch+json`: a Kubernetes strategic merge patch.
    StrategicMerge,
    /// `application/apply-patch+yaml`: server-side apply (simulated, see [`apply_patch`]).
    Apply,
}

impl PatchKind {
    /// Recognises a request's `Content-Type`, ignoring parameters after `;` and letter case.
    /// Returns `None` for anything else (including `application/apply-patch+cbor`), which the
    /// server answers with 415 Unsupported Media Type.
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        let essence = content_type.split(';').next().unwrap_or("").trim();
        [Self::Json, Self::Merge, Self::StrategicMerge, Self::Apply]
            .into_iter()
            .find(|kind| essence.eq_ignore_ascii_case(kind.content_type()))
    }

    /// The media type of this patch kind.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json-patch+json",
            Self::Merge => "application/merge-patch+json",
            Self::StrategicMerge => "application/strategic-merge-patch+json",
            Self::Apply => "application/apply-patch+yaml",
        }
    }
}

/// Why a PATCH body could not be read or applied.
///
/// The messages end up in a Kubernetes `Status`; [`PatchError::status_code`] gives the HTTP
/// status to use with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The body is larger than [`MAX_PATCH_BYTES`].
    #[error(
        "the patch body is {size} bytes, more than the limit of {limit} bytes; send a smaller patch \
         (only the fields that change)"
    )]
    TooLarge {
        /// Size of the body received.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The body is empty or only whitespace.
    #[error("the {content_type} patch body is empty; send a {expected}")]
    Empty {
        /// The media type of the patch.
        content_type: &'static str,
        /// What the body should contain.
        expected: &'static str,
    },
    /// The body is not valid JSON.
    #[error("the {content_type} patch body is not valid JSON: {message}; send a {expected}")]
    InvalidJson {
        /// The media type of the patch.
        content_type: &'static str,
        /// The parser's complaint, with line and column.
        message: String,
        /// What the body should contain.
        expected: &'static str,
    },
    /// An apply body is neither JSON nor YAML.
    #[error(
        "the application/apply-patch+yaml body is not valid YAML or JSON: {message}; send one YAML \
         (or JSON) document describing the object"
    )]
    InvalidYaml {
        /// The parser's complaint.
        message: String,
    },
    /// The body parsed, but its top level has the wrong type.
    #[error("the {content_type} patch body must be a {expected}, but it is {found}")]
    WrongShape {
        /// The media type of the patch.
        content_type: &'static str,
        /// What the body should contain.
        expected: &'static str,
        /// What it contains.
        found: &'static str,
    },
    /// A JSON patch operation is malformed (unknown `op`, missing `path`, bad pointer...).
    #[error(
        "invalid JSON patch: {message}; each operation is an object such as \
         {{\"op\": \"replace\", \"path\": \"/spec/replicas\", \"value\": 3}} with op one of add, remove, \
         replace, move, copy, test"
    )]
    InvalidJsonPatch {
        /// What is wrong.
        message: String,
    },
    /// A JSON patch has more than [`MAX_JSON_PATCH_OPERATIONS`] operations or copies too much.
    #[error("the JSON patch is too big to apply: {message}")]
    JsonPatchTooBig {
        /// Which limit was hit.
        message: String,
    },
    /// A JSON patch operation could not be applied (a `test` that did not match, a path that
    /// does not exist...). Nothing was changed.
    #[error(
        "JSON patch operation {index} ({op} at {path:?}) failed: {reason}; the object was not changed"
    )]
    JsonPatchFailed {
        /// Zero-based index of the failing operation.
        index: usize,
        /// The operation's `op`.
        op: &'static str,
        /// The operation's `path`.
        path: String,
        /// Why it failed.
        reason: String,
    },
    /// A `$patch`, `$retainKeys`, `$setElementOrder` or `$deleteFromPrimitiveList` directive is
    /// malformed, or an unknown `$` directive was used.
    #[error("invalid strategic merge patch directive at {path}: {message}")]
    BadDirective {
        /// Dotted path of the map holding the directive (`.` for the top level).
        path: String,
        /// What is wrong and what is accepted.
        message: String,
    },
    /// An element of a list merged by key lacks that key.
    #[error(
        "an element of the list {path} has no {key:?} field; elements of this list are merged by \
         their {key:?}, so every element in the patch must set it"
    )]
    MissingMergeKey {
        /// Dotted path of the list.
        path: String,
        /// The merge key.
        key: &'static str,
    },
    /// An element of a list merged by key is not an object.
    #[error(
        "an element of the list {path} is {found}; elements of this list are objects merged by their \
         {key:?} field"
    )]
    ElementNotObject {
        /// Dotted path of the list.
        path: String,
        /// The merge key.
        key: &'static str,
        /// What the element is.
        found: &'static str,
    },
}

impl PatchError {
    /// The HTTP status Kubernetes uses for this error: 413 for an oversized body, 400 for a body
    /// that cannot be read, 422 for a patch that cannot be applied to the object.
    pub fn status_code(&self) -> u16 {
        match self {
            Self::TooLarge { .. } => 413,
            Self::Empty { .. }
            | Self::InvalidJson { .. }
            | Self::InvalidYaml { .. }
            | Self::WrongShape { .. }
            | Self::InvalidJsonPatch { .. } => 400,
            Self::JsonPatchTooBig { .. }
            | Self::JsonPatchFailed { .. }
            | Self::BadDirective { .. }
            | Self::MissingMergeKey { .. }
            | Self::ElementNotObject { .. } => 422,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reading bodies
// ---------------------------------------------------------------------------------------------

/// Parses a PATCH body of the given kind.
///
/// JSON patches must be a JSON array; merge, strategic merge and apply bodies must be an
/// object. Apply bodies may be YAML (one document) or JSON. Bodies larger than
/// [`MAX_PATCH_BYTES`] are rejected before parsing.
pub fn parse_body(kind: PatchKind, body: &[u8]) -> Result<Value, PatchError> {
    if body.len() > MAX_PATCH_BYTES {
        return Err(PatchError::TooLarge {
            size: body.len(),
            limit: MAX_PATCH_BYTES,
        });
    }
    let content_type = kind.content_type();
    let expected = match kind {
        PatchKind::Json => "JSON array of patch operations",
        PatchKind::Merge | PatchKind::StrategicMerge => "JSON object with the fields to change",
        PatchKind::Apply => "YAML or JSON object describing the object",
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(PatchError::Empty {
            content_type,
            expected,
        });
    }
    let value = match kind {
        PatchKind::Apply => parse_apply_body(body)?,
        _ => serde_json::from_slice(body).map_err(|e| PatchError::InvalidJson {
            content_type,
            message: e.to_string(),
            expected,
        })?,
    };
    let shape_ok = match kind {
        PatchKind::Json => value.is_array(),
        _ => value.is_object(),
    };
    if !shape_ok {
        return Err(PatchError::WrongShape {
            content_type,
            expected,
            found: json_kind(&value),
        });
    }
    Ok(value)
}

fn parse_apply_body(body: &[u8]) -> Result<Value, PatchError> {
    if let Ok(value) = serde_json::from_slice::<Value>(body) {
        return Ok(value);
    }
    // serde-saphyr's default budget bounds nesting depth, node count and alias expansion.
    serde_saphyr::from_slice::<Value>(body).map_err(|e| {
        // The parser's message carries a multi-line source snippet; a Status wants one line.
        let full = e.to_string();
        let first = full.lines().next().unwrap_or_default().trim();
        PatchError::InvalidYaml {
            message: first.strip_prefix("error: ").unwrap_or(first).to_owned(),
        }
    })
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

// ---------------------------------------------------------------------------------------------
// JSON merge patch and JSON patch
// ---------------------------------------------------------------------------------------------

/// Applies an RFC 7386 JSON merge patch: objects merge recursively, `null` deletes a key, and
/// anything else (lists included) replaces the target value.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

/// Applies an RFC 6902 JSON patch (a JSON array of operations). Either every operation
/// applies or the target is left unchanged; a failed `test` is an error.
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    use json_patch::PatchOperation as Op;

    let Value::Array(raw_ops) = patch else {
        return Err(PatchError::WrongShape {
            content_type: PatchKind::Json.content_type(),
            expected: "JSON array of patch operations",
            found: json_kind(patch),
        });
    };
    if raw_ops.len() > MAX_JSON_PATCH_OPERATIONS {
        return Err(PatchError::JsonPatchTooBig {
            message: format!(
                "it has {} operations, the limit is {MAX_JSON_PATCH_OPERATIONS}; split it into several requests",
                raw_ops.len()
            ),
        });
    }
    let mut ops = Vec::with_capacity(raw_ops.len());
    for (index, raw) in raw_ops.iter().enumerate() {
        let op: Op =
            serde_json::from_value(raw.clone()).map_err(|e| PatchError::InvalidJsonPatch {
                message: format!("operation {index} is invalid: {e}"),
            })?;
        ops.push(op);
    }

    // Work on a copy so that a failure leaves the target untouched.
    let mut doc = target.clone();
    let mut copied = 0usize;
    for (index, op) in ops.iter().enumerate() {
        if let Op::Copy(copy) = op {
            copied = copied.saturating_add(
                doc.pointer(copy.from.as_str())
                    .map(encoded_len)
                    .unwrap_or(0),
            );
            if copied > MAX_JSON_PATCH_COPY_BYTES {
                return Err(PatchError::JsonPatchTooBig {
                    message: format!(
                        "its copy operations duplicate more than {MAX_JSON_PATCH_COPY_BYTES} bytes (operation {index})"
                    ),
                });
            }
        }
        json_patch::patch_unsafe(&mut doc, std::slice::from_ref(op)).map_err(|e| {
            PatchError::JsonPatchFailed {
                index,
                op: op_name(op),
                path: op.path().as_str().to_owned(),
                reason: e.kind.to_string(),
            }
        })?;
    }
    *target = doc;
    Ok(())
}

fn op_name(op: &json_patch::PatchOperation) -> &'static str {
    use json_patch::PatchOperation as Op;
    match op {
        Op::Add(_) => "add",
        Op::Remove(_) => "remove",
        Op::Replace(_) => "replace",
        Op::Move(_) => "move",
        Op::Copy(_) => "copy",
        Op::Test(_) => "test",
    }
}

/// Length of the JSON encoding of a value, without building it.
fn encoded_len(value: &Value) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 = self.0.saturating_add(buf.len());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Writing a `Value` to an infallible sink cannot fail.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

// ---------------------------------------------------------------------------------------------
// Strategic merge patch: the table of list strategies
// ---------------------------------------------------------------------------------------------

/// How a list field is patched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListStrategy {
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
const MOUNTS: &[(&str, &str, Rules)] = &[
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
const KNOWN_KINDS: &[&str] = &[
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

// ---------------------------------------------------------------------------------------------
// Strategic merge patch: the algorithm
// ---------------------------------------------------------------------------------------------

const PATCH_DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";

/// Applies a Kubernetes strategic merge patch (`application/strategic-merge-patch+json`) to an
/// object of the given kind (`Pod`, `Deployment`...). See the [module documentation](self) for
/// the rules. On error the target is left unchanged.
pub fn strategic_merge_patch(
    target: &mut Value,
    patch: &Value,
    kind: &str,
) -> Result<(), PatchError> {
    let Value::Object(patch) = patch else {
        return Err(PatchError::WrongShape {
            content_type: PatchKind::StrategicMerge.content_type(),
            expected: "JSON object with the fields to change",
            found: json_kind(patch),
        });
    };
    let original = match target {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    let merger = Merger {
        kind,
        known: KNOWN_KINDS.contains(&kind),
    };
    let merged = merger.merge_map(&mut Vec::new(), original, patch)?;
    *target = Value::Object(merged);
    Ok(())
}

/// Simulated server-side apply (`application/apply-patch+yaml`): the applied configuration is
/// strategically merged into the live object.
///
/// Field ownership (`metadata.managedFields`) is not tracked, so there are no conflicts and
/// `force` has no effect, and a field removed from a later applied configuration is **not**
/// removed from the live object: remove it with an explicit `null` or a JSON/merge patch.
/// Lists are merged by the strategic-merge keys rather than server-side apply's list-map keys
/// (for Service ports: `port` alone instead of `port` and `protocol`). Callers still decide what
/// happens to `status` and other fields the real server resets.
pub fn apply_patch(target: &mut Value, applied: &Value, kind: &str) -> Result<(), PatchError> {
    if !applied.is_object() {
        return Err(PatchError::WrongShape {
            content_type: PatchKind::Apply.content_type(),
            expected: "YAML or JSON object describing the object",
            found: json_kind(applied),
        });
    }
    strategic_merge_patch(target, applied, kind)
}

struct Merger<'k> {
    kind: &'k str,
    known: bool,
}

fn dotted(path: &[String]) -> String {
    if path.is_empty() {
        ".".to_owned()
    } else {
        path.join(".")
    }
}

/// A hashable identity for merge-key values and list values. Numbers compare by value (the Go
/// implementation decodes every number as a float64), everything else by its JSON text.
fn identity(v: &Value) -> String {
    match v {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.to_string()
            } else if let Some(u) = n.as_u64() {
                u.to_string()
            } else {
                match n.as_f64() {
                    Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
                    _ => n.to_string(),
                }
            }
        }
        other => other.to_string(),
    }
}

fn has_directive(v: &Value) -> bool {
    v.get(PATCH_DIRECTIVE).is_some()
}

fn directive_is(v: &Value, name: &str) -> bool {
    v.get(PATCH_DIRECTIVE).and_then(Value::as_str) == Some(name)
}

impl Merger<'_> {
    fn list_strategy(&self, path: &[String]) -> ListStrategy {
        if !self.known {
            return ListStrategy::Replace;
        }
        for (kind, mount, rules) in MOUNTS {
            if *kind != "*" && *kind != self.kind {
                continue;
            }
            let mut rest = path;
            let mut inside = true;
            for segment in mount.split('.').filter(|s| !s.is_empty()) {
                match rest.split_first() {
                    Some((head, tail)) if head == segment => rest = tail,
                    _ => {
                        inside = false;
                        break;
                    }
                }
            }
            if !inside || rest.is_empty() {
                continue;
            }
            let relative = rest.join(".");
            if let Some((_, strategy)) = rules.iter().find(|(p, _)| *p == relative) {
                return *strategy;
            }
        }
        ListStrategy::Replace
    }

    /// Merges one field. `None` as a result means the field is removed.
    fn merge_field(
        &self,
        path: &mut Vec<String>,
        original: Option<Value>,
        patch: &Value,
    ) -> Result<Option<Value>, PatchError> {
        Ok(match (original, patch) {
            (_, Value::Null) => None,
            (Some(Value::Object(o)), Value::Object(p)) => {
                Some(Value::Object(self.merge_map(path, o, p)?))
            }
            (_, Value::Object(p)) => Some(Value::Object(self.merge_map(path, Map::new(), p)?)),
            (Some(Value::Array(o)), Value::Array(p)) => {
                Some(Value::Array(self.merge_list(path, o, p)?))
            }
            (_, Value::Array(p)) => Some(Value::Array(self.merge_list(path, Vec::new(), p)?)),
            (_, scalar) => Some(scalar.clone()),
        })
    }

    /// A patch value placed where nothing was: directives applied and removed, nulls dropped.
    fn fresh_element(&self, path: &mut Vec<String>, patch: &Value) -> Result<Value, PatchError> {
        Ok(self.merge_field(path, None, patch)?.unwrap_or(Value::Null))
    }

    fn merge_map(
        &self,
        path: &mut Vec<String>,
        mut original: Map<String, Value>,
        patch: &Map<String, Value>,
    ) -> Result<Map<String, Value>, PatchError> {
        if let Some(directive) = patch.get(PATCH_DIRECTIVE) {
            match directive.as_str() {
                Some("replace") => {
                    let mut rest = patch.clone();
                    rest.remove(PATCH_DIRECTIVE);
                    return self.merge_map(path, Map::new(), &rest);
                }
                // Kubernetes leaves an empty map behind, not a missing field.
                Some("delete") => return Ok(Map::new()),
                Some("merge") => {}
                _ => {
                    return Err(PatchError::BadDirective {
                        path: dotted(path),
                        message: format!(
                            "$patch is {directive}; it must be \"replace\", \"delete\" or \"merge\""
                        ),
                    });
                }
            }
        }

        if let Some(retain) = patch.get(RETAIN_KEYS) {
            let bad = || PatchError::BadDirective {
                path: dotted(path),
                message: "$retainKeys must be a list of the field names to keep".into(),
            };
            let Value::Array(names) = retain else {
                return Err(bad());
            };
            let keep = names
                .iter()
                .map(|n| n.as_str().ok_or_else(bad))
                .collect::<Result<HashSet<&str>, _>>()?;
            if let Some(stray) = patch
                .iter()
                .find(|(k, v)| !v.is_null() && !k.starts_with('$') && !keep.contains(k.as_str()))
            {
                return Err(PatchError::BadDirective {
                    path: dotted(path),
                    message: format!(
                        "the patch sets {:?}, which $retainKeys does not list; add it to $retainKeys",
                        stray.0
                    ),
                });
            }
            original.retain(|k, _| keep.contains(k.as_str()));
        }

        // `$setElementOrder/<field>`: merge that list now and order it as asked.
        let mut ordered: HashSet<&str> = HashSet::new();
        for (key, order) in patch {
            let Some(field) = key.strip_prefix(SET_ELEMENT_ORDER) else {
                continue;
            };
            if field.is_empty() {
                return Err(PatchError::BadDirective {
                    path: dotted(path),
                    message: format!("{SET_ELEMENT_ORDER} must be followed by a field name"),
                });
            }
            let Value::Array(order) = order else {
                return Err(PatchError::BadDirective {
                    path: dotted(path),
                    message: format!("{key} must be a list"),
                });
            };
            let patch_list = match patch.get(field) {
                None => None,
                Some(Value::Array(list)) => Some(list),
                // A null or non-list value is handled as an ordinary field below.
                Some(_) => continue,
            };
            let live = match original.get(field) {
                Some(Value::Array(list)) => Some(list.clone()),
                _ => None,
            };
            path.push(field.to_owned());
            let result = self.merge_ordered_list(path, live, patch_list, order);
            path.pop();
            if let Some(list) = result? {
                original.insert(field.to_owned(), Value::Array(list));
            }
            ordered.insert(field);
        }

        for (key, value) in patch {
            if key.starts_with('$') {
                if key == PATCH_DIRECTIVE
                    || key == RETAIN_KEYS
                    || key.starts_with(SET_ELEMENT_ORDER)
                    || key.starts_with(DELETE_FROM_PRIMITIVE_LIST)
                {
                    continue;
                }
                return Err(PatchError::BadDirective {
                    path: dotted(path),
                    message: format!(
                        "unknown directive {key:?}; the supported ones are $patch, $retainKeys, \
                         $setElementOrder/<field> and $deleteFromPrimitiveList/<field>"
                    ),
                });
            }
            if ordered.contains(key.as_str()) {
                continue;
            }
            let live = original.remove(key);
            path.push(key.clone());
            let merged = self.merge_field(path, live, value);
            path.pop();
            if let Some(merged) = merged? {
                original.insert(key.clone(), merged);
            }
        }

        for (key, values) in patch {
            let Some(field) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) else {
                continue;
            };
            let Value::Array(values) = values else {
                return Err(PatchError::BadDirective {
                    path: dotted(path),
                    message: format!("{key} must be a list of the values to remove"),
                });
            };
            if field.is_empty() {
                return Err(PatchError::BadDirective {
                    path: dotted(path),
                    message: format!(
                        "{DELETE_FROM_PRIMITIVE_LIST} must be followed by a field name"
                    ),
                });
            }
            let doomed: HashSet<String> = values.iter().map(identity).collect();
            if let Some(Value::Array(list)) = original.get_mut(field) {
                list.retain(|v| !doomed.contains(&identity(v)));
            }
        }

        Ok(original)
    }

    /// Merges a list that has a `$setElementOrder` directive and orders the result:
    /// elements named in the order list come in that order, the others keep their live
    /// order and are interleaved by their live position. `None` when neither side has it.
    fn merge_ordered_list(
        &self,
        path: &mut Vec<String>,
        live: Option<Vec<Value>>,
        patch: Option<&Vec<Value>>,
        order: &[Value],
    ) -> Result<Option<Vec<Value>>, PatchError> {
        let server_order = live.clone().unwrap_or_default();
        let merged = match (live, patch) {
            (None, None) => return Ok(None),
            (Some(live), None) => live,
            (live, Some(patch)) => self.merge_list(path, live.unwrap_or_default(), patch)?,
        };
        let key = match self.list_strategy(path) {
            MergeByKey(key) => Some(key),
            _ => None,
        };
        let order_ids: Vec<String> = order
            .iter()
            .filter_map(|item| element_id(item, key))
            .collect();
        Ok(Some(normalize_order(
            merged,
            &order_ids,
            &server_order,
            key,
        )))
    }

    fn merge_list(
        &self,
        path: &mut Vec<String>,
        original: Vec<Value>,
        patch: &[Value],
    ) -> Result<Vec<Value>, PatchError> {
        // A `{"$patch": "replace"}` element: the other elements become the whole list.
        if patch.iter().any(|v| directive_is(v, "replace")) {
            return patch
                .iter()
                .filter(|v| !has_directive(v))
                .map(|v| self.fresh_element(path, v))
                .collect();
        }
        match self.list_strategy(path) {
            ListStrategy::Replace => patch
                .iter()
                .filter(|v| !has_directive(v))
                .map(|v| self.fresh_element(path, v))
                .collect(),
            MergeValues => {
                let additions: Vec<&Value> = patch.iter().filter(|v| !has_directive(v)).collect();
                let mut seen = HashSet::new();
                let mut merged = Vec::with_capacity(original.len() + additions.len());
                for v in original.iter().chain(additions.iter().copied()) {
                    if seen.insert(identity(v)) {
                        merged.push(v.clone());
                    }
                }
                let patch_ids: Vec<String> = additions.iter().map(|v| identity(v)).collect();
                Ok(normalize_order(merged, &patch_ids, &original, None))
            }
            MergeByKey(key) => self.merge_keyed_list(path, original, patch, key),
        }
    }

    fn merge_keyed_list(
        &self,
        path: &mut Vec<String>,
        original: Vec<Value>,
        patch: &[Value],
        key: &'static str,
    ) -> Result<Vec<Value>, PatchError> {
        let mut elements = Vec::with_capacity(patch.len());
        for element in patch {
            match element {
                Value::Object(map) => elements.push(map),
                other => {
                    return Err(PatchError::ElementNotObject {
                        path: dotted(path),
                        key,
                        found: json_kind(other),
                    });
                }
            }
        }

        let server_order = original.clone();
        let mut slots: Vec<Option<Value>> = original.into_iter().map(Some).collect();
        let mut index: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, slot) in slots.iter().enumerate() {
            if let Some(id) = slot.as_ref().and_then(|v| element_id(v, Some(key))) {
                index.entry(id).or_default().push(i);
            }
        }

        // Deletions first, like Kubernetes, then merges in patch order.
        for map in &elements {
            match map.get(PATCH_DIRECTIVE) {
                None => {}
                Some(d) if d == "delete" => {
                    for i in index
                        .remove(&merge_key_id(map, key, path)?)
                        .unwrap_or_default()
                    {
                        if let Some(slot) = slots.get_mut(i) {
                            *slot = None;
                        }
                    }
                }
                Some(d) if d == "merge" => {}
                Some(d) => {
                    return Err(PatchError::BadDirective {
                        path: dotted(path),
                        message: format!(
                            "$patch is {d} in a list element; it must be \"delete\" (with the merge key \
                             {key:?}) or \"replace\""
                        ),
                    });
                }
            }
        }
        let mut patch_ids = Vec::new();
        for map in &elements {
            if map.get(PATCH_DIRECTIVE).is_some_and(|d| d == "delete") {
                continue;
            }
            let id = merge_key_id(map, key, path)?;
            let live_at = index
                .get(&id)
                .and_then(|positions| positions.first().copied());
            let live = live_at
                .and_then(|i| slots.get_mut(i))
                .and_then(Option::take);
            let merged = match live {
                Some(Value::Object(live)) => self.merge_map(path, live, map)?,
                _ => self.merge_map(path, Map::new(), map)?,
            };
            match live_at {
                Some(i) if i < slots.len() => slots[i] = Some(Value::Object(merged)),
                _ => {
                    index.entry(id.clone()).or_default().push(slots.len());
                    slots.push(Some(Value::Object(merged)));
                }
            }
            patch_ids.push(id);
        }
        let merged: Vec<Value> = slots.into_iter().flatten().collect();
        Ok(normalize_order(
            merged,
            &patch_ids,
            &server_order,
            Some(key),
        ))
    }
}

/// The identity of a patch element of a list merged by `key`; the key must be set.
fn merge_key_id(
    map: &Map<String, Value>,
    key: &'static str,
    path: &[String],
) -> Result<String, PatchError> {
    match map.get(key) {
        Some(v) if !v.is_null() => Ok(identity(v)),
        _ => Err(PatchError::MissingMergeKey {
            path: dotted(path),
            key,
        }),
    }
}

/// The identity of a list element: its merge key's value, or the element itself for lists of
/// plain values.
fn element_id(v: &Value, key: Option<&str>) -> Option<String> {
    match key {
        Some(key) => v.get(key).filter(|k| !k.is_null()).map(identity),
        None => Some(identity(v)),
    }
}

/// Orders a merged list the way Kubernetes does: elements named in `patch_order` come in that
/// order; the others keep the order of `server_order` (the live list) and are placed before a
/// patch element when they came before it in the live list.
fn normalize_order(
    merged: Vec<Value>,
    patch_order: &[String],
    server_order: &[Value],
    key: Option<&str>,
) -> Vec<Value> {
    let mut patch_pos: HashMap<&str, usize> = HashMap::new();
    for (i, id) in patch_order.iter().enumerate() {
        patch_pos.entry(id.as_str()).or_insert(i);
    }
    let mut server_pos: HashMap<String, usize> = HashMap::new();
    for (i, v) in server_order.iter().enumerate() {
        if let Some(id) = element_id(v, key) {
            server_pos.entry(id).or_insert(i);
        }
    }

    let mut from_patch = Vec::new();
    let mut server_only = Vec::new();
    for v in merged {
        let id = element_id(&v, key);
        let live = id.as_ref().and_then(|id| server_pos.get(id).copied());
        match id
            .as_ref()
            .and_then(|id| patch_pos.get(id.as_str()).copied())
        {
            Some(p) => from_patch.push((p, live, v)),
            None => server_only.push((live.unwrap_or(usize::MAX), live, v)),
        }
    }
    // Stable sorts: ties keep their merged order.
    from_patch.sort_by_key(|(p, _, _)| *p);
    server_only.sort_by_key(|(s, _, _)| *s);

    let mut out = Vec::with_capacity(from_patch.len() + server_only.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = from_patch.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some((_, l, _)), Some((_, r, _))) => matches!((l, r), (Some(l), Some(r)) if l < r),
        };
        let next = if take_left { left.next() } else { right.next() };
        if let Some((_, _, v)) = next {
            out.push(v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn smp(mut target: Value, patch: Value, kind: &str) -> Value {
        strategic_merge_patch(&mut target, &patch, kind)
            .unwrap_or_else(|e| panic!("patch {patch} failed: {e}"));
        target
    }

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web", "tier": "front"}},
            "spec": {
                "replicas": 2,
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [
                            {"name": "app", "image": "nginx:1.25",
                             "env": [{"name": "A", "value": "1"}],
                             "ports": [{"containerPort": 80, "protocol": "TCP"}]},
                            {"name": "sidecar", "image": "busybox:1.36"}
                        ],
                        "tolerations": [{"key": "a", "operator": "Exists"}]
                    }
                }
            }
        })
    }

    fn containers(obj: &Value) -> &Vec<Value> {
        obj.pointer("/spec/template/spec/containers")
            .and_then(Value::as_array)
            .expect("containers")
    }

    fn names(list: &[Value], key: &str) -> Vec<String> {
        list.iter()
            .map(|v| {
                v.get(key)
                    .map(|k| identity(k).trim_matches('"').to_owned())
                    .unwrap_or_default()
            })
            .collect()
    }

    #[test]
    fn content_types() {
        use PatchKind::*;
        let cases = [
            ("application/json-patch+json", Some(Json)),
            ("application/merge-patch+json", Some(Merge)),
            (
                "application/strategic-merge-patch+json",
                Some(StrategicMerge),
            ),
            ("application/apply-patch+yaml", Some(Apply)),
            ("application/apply-patch+yaml; charset=utf-8", Some(Apply)),
            (" Application/Merge-Patch+JSON ;x=y", Some(Merge)),
            ("application/apply-patch+cbor", None),
            ("application/json", None),
            ("", None),
            (";", None),
        ];
        for (ct, want) in cases {
            assert_eq!(PatchKind::from_content_type(ct), want, "{ct:?}");
        }
        for kind in [Json, Merge, StrategicMerge, Apply] {
            assert_eq!(
                PatchKind::from_content_type(kind.content_type()),
                Some(kind)
            );
        }
    }

    #[test]
    fn apply_adds_env_var_to_container() {
        // What client-side `kubectl apply` sends after adding B=2 to the app container.
        let patch = json!({
            "spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
                "containers": [{
                    "name": "app",
                    "$setElementOrder/env": [{"name": "A"}, {"name": "B"}],
                    "env": [{"name": "B", "value": "2"}]
                }]
            }}}
        });
        let out = smp(deployment(), patch, "Deployment");
        let app = &containers(&out)[0];
        assert_eq!(
            app["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}])
        );
        assert_eq!(app["image"], "nginx:1.25");
        assert_eq!(names(containers(&out), "name"), ["app", "sidecar"]);
    }

    #[test]
    fn image_change_in_named_container() {
        // `kubectl set image` / `kubectl patch` with a strategic merge patch.
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "sidecar", "image": "busybox:1.37"}
        ]}}}});
        let out = smp(deployment(), patch, "Deployment");
        let list = containers(&out);
        assert_eq!(list.len(), 2);
        assert_eq!(list[1]["image"], "busybox:1.37");
        assert_eq!(list[0]["image"], "nginx:1.25");
        assert_eq!(list[0]["env"], json!([{"name": "A", "value": "1"}]));
    }

    #[test]
    fn delete_container_with_directive() {
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "app"}],
            "containers": [{"name": "sidecar", "$patch": "delete"}]
        }}}});
        let out = smp(deployment(), patch, "Deployment");
        assert_eq!(names(containers(&out), "name"), ["app"]);
    }

    #[test]
    fn new_container_without_order_directive_goes_first() {
        // Kubernetes puts patch-only elements ahead of live-only ones it cannot place relative
        // to them; kubectl apply avoids this by sending $setElementOrder.
        let pod = json!({"kind": "Pod", "spec": {"containers": [{"name": "a", "image": "x"}]}});
        let out = smp(
            pod.clone(),
            json!({"spec": {"containers": [{"name": "b", "image": "y"}]}}),
            "Pod",
        );
        assert_eq!(
            names(out["spec"]["containers"].as_array().unwrap(), "name"),
            ["b", "a"]
        );
        let out = smp(
            pod,
            json!({"spec": {
                "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
                "containers": [{"name": "b", "image": "y"}]
            }}),
            "Pod",
        );
        assert_eq!(
            names(out["spec"]["containers"].as_array().unwrap(), "name"),
            ["a", "b"]
        );
    }

    #[test]
    fn set_element_order_reorders() {
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}]
        }}}});
        let out = smp(deployment(), patch, "Deployment");
        assert_eq!(names(containers(&out), "name"), ["sidecar", "app"]);

        // Elements the order list does not mention keep their live position.
        let live = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a"}, {"name": "b"}, {"name": "c"}, {"name": "d"}
        ]}}}});
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "d"}, {"name": "b"}, {"name": "e"}],
            "containers": [{"name": "e", "image": "new"}]
        }}}});
        let out = smp(live, patch, "Deployment");
        // a and c come before d in the live list, so they stay ahead of it.
        assert_eq!(names(containers(&out), "name"), ["a", "c", "d", "b", "e"]);
    }

    #[test]
    fn merged_list_order_without_directive() {
        let live = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}});
        // Patch elements follow the patch order; live-only ones keep their place.
        let out = smp(
            live.clone(),
            json!({"spec": {"containers": [{"name": "c", "x": 1}, {"name": "d"}]}}),
            "Pod",
        );
        assert_eq!(
            names(out["spec"]["containers"].as_array().unwrap(), "name"),
            ["a", "b", "c", "d"]
        );
        let out = smp(
            live,
            json!({"spec": {"containers": [{"name": "b"}, {"name": "a"}]}}),
            "Pod",
        );
        assert_eq!(
            names(out["spec"]["containers"].as_array().unwrap(), "name"),
            ["b", "a", "c"]
        );
    }

    #[test]
    fn label_removal_with_null_and_scale() {
        // `kubectl label deploy web tier-` and `kubectl scale --replicas=5`.
        let out = smp(
            deployment(),
            json!({"metadata": {"labels": {"tier": null, "new": "x"}}, "spec": {"replicas": 5}}),
            "Deployment",
        );
        assert_eq!(out["metadata"]["labels"], json!({"app": "web", "new": "x"}));
        assert_eq!(out["spec"]["replicas"], 5);
        // A null for a key that does not exist is not stored.
        let out = smp(
            deployment(),
            json!({"metadata": {"annotations": {"a": null}}}),
            "Deployment",
        );
        assert_eq!(out["metadata"]["annotations"], json!({}));
    }

    #[test]
    fn non_keyed_lists_are_replaced() {
        let patch = json!({"spec": {"template": {"spec": {"tolerations": [{"key": "b", "operator": "Exists"}]}}}});
        let out = smp(deployment(), patch, "Deployment");
        assert_eq!(
            out["spec"]["template"]["spec"]["tolerations"],
            json!([{"key": "b", "operator": "Exists"}])
        );
        // An empty keyed list in the patch changes nothing (Kubernetes semantics)...
        let out = smp(
            deployment(),
            json!({"spec": {"template": {"spec": {"containers": []}}}}),
            "Deployment",
        );
        assert_eq!(containers(&out).len(), 2);
        // ...while `$patch: replace` replaces it.
        let out = smp(
            deployment(),
            json!({"spec": {"template": {"spec": {"containers": [
                {"$patch": "replace"}, {"name": "only", "image": "i"}
            ]}}}}),
            "Deployment",
        );
        assert_eq!(
            containers(&out),
            &vec![json!({"name": "only", "image": "i"})]
        );
    }

    #[test]
    fn map_directives() {
        let live = json!({"spec": {"selector": {"a": "1", "b": "2"}, "other": {"x": 1}}});
        let out = smp(
            live.clone(),
            json!({"spec": {"selector": {"$patch": "replace", "c": "3"}}}),
            "Service",
        );
        assert_eq!(out["spec"]["selector"], json!({"c": "3"}));
        assert_eq!(out["spec"]["other"], json!({"x": 1}));
        let out = smp(
            live.clone(),
            json!({"spec": {"other": {"$patch": "delete"}}}),
            "Service",
        );
        assert_eq!(out["spec"]["other"], json!({}));
        let out = smp(
            live,
            json!({"spec": {"other": {"$patch": "merge", "y": 2}}}),
            "Service",
        );
        assert_eq!(out["spec"]["other"], json!({"x": 1, "y": 2}));
    }

    #[test]
    fn retain_keys() {
        // A Deployment strategy switched from RollingUpdate to Recreate by `kubectl apply`.
        let live = json!({"spec": {"strategy": {
            "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}
        }}});
        let out = smp(
            live.clone(),
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
            "Deployment",
        );
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        let err = strategic_merge_patch(
            &mut live.clone(),
            &json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {}}}}),
            "Deployment",
        )
        .unwrap_err();
        assert!(err.to_string().contains("rollingUpdate"), "{err}");
    }

    #[test]
    fn finalizers_union_and_delete_from_primitive_list() {
        let live = json!({"metadata": {"finalizers": ["a", "b"]}});
        let out = smp(
            live.clone(),
            json!({"metadata": {"finalizers": ["c", "a"]}}),
            "Pod",
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["c", "a", "b"]));
        let out = smp(
            live.clone(),
            json!({"metadata": {
                "$setElementOrder/finalizers": ["b", "c"],
                "$deleteFromPrimitiveList/finalizers": ["a"],
                "finalizers": ["c"]
            }}),
            "Pod",
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["b", "c"]));
        // Unknown kinds replace lists like a merge patch.
        let out = smp(live, json!({"metadata": {"finalizers": ["c"]}}), "Widget");
        assert_eq!(out["metadata"]["finalizers"], json!(["c"]));
    }

    #[test]
    fn service_ports_and_node_status() {
        let svc = json!({"spec": {"ports": [
            {"name": "http", "port": 80, "targetPort": 8080},
            {"name": "https", "port": 443}
        ]}});
        let out = smp(
            svc,
            json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}]}}),
            "Service",
        );
        assert_eq!(
            out["spec"]["ports"][0],
            json!({"name": "http", "port": 80, "targetPort": 9090})
        );
        assert_eq!(out["spec"]["ports"].as_array().unwrap().len(), 2);

        let node = json!({"status": {
            "conditions": [{"type": "Ready", "status": "False"}, {"type": "MemoryPressure", "status": "False"}],
            "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]
        }});
        let out = smp(
            node,
            json!({"status": {"conditions": [{"type": "Ready", "status": "True"}],
                              "addresses": [{"type": "Hostname", "address": "n1"}]}}),
            "Node",
        );
        assert_eq!(
            out["status"]["conditions"][0],
            json!({"type": "Ready", "status": "True"})
        );
        assert_eq!(out["status"]["conditions"].as_array().unwrap().len(), 2);
        assert_eq!(out["status"]["addresses"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn nested_keyed_lists_and_owner_references() {
        let live = json!({"metadata": {"ownerReferences": [{"uid": "1", "name": "a"}]},
                          "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80, "name": "http"}],
                                                   "volumeMounts": [{"mountPath": "/a", "name": "v"}]}]}});
        let out = smp(
            live,
            json!({"metadata": {"ownerReferences": [{"uid": "2", "name": "b"}]},
                   "spec": {"containers": [{"name": "c",
                        "ports": [{"containerPort": 80.0, "protocol": "TCP"}],
                        "volumeMounts": [{"mountPath": "/a", "$patch": "delete"}, {"mountPath": "/b", "name": "w"}]}]}}),
            "Pod",
        );
        assert_eq!(
            out["metadata"]["ownerReferences"].as_array().unwrap().len(),
            2
        );
        let c = &out["spec"]["containers"][0];
        // 80.0 and 80 are the same merge key value.
        let ports = c["ports"].as_array().unwrap();
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0]["name"], "http");
        assert_eq!(ports[0]["protocol"], "TCP");
        assert_eq!(c["volumeMounts"], json!([{"mountPath": "/b", "name": "w"}]));
    }

    #[test]
    fn new_subtrees_are_cleaned() {
        let out = smp(
            json!({}),
            json!({"spec": {"containers": [{"name": "a", "env": [{"name": "X", "$patch": "delete"}],
                                             "args": null}],
                            "nodeSelector": {"a": null, "b": "1"}}}),
            "Pod",
        );
        assert_eq!(
            out,
            json!({"spec": {"containers": [{"name": "a", "env": []}], "nodeSelector": {"b": "1"}}})
        );
    }

    #[test]
    fn smp_errors() {
        let bad = [
            (
                json!({"spec": {"containers": [{"image": "x"}]}}),
                "missing merge key",
            ),
            (json!({"spec": {"containers": ["x"]}}), "element not object"),
            (
                json!({"spec": {"containers": [{"name": "a", "$patch": "bogus"}]}}),
                "bad element directive",
            ),
            (
                json!({"spec": {"containers": [{"$patch": "delete"}]}}),
                "delete without key",
            ),
            (json!({"spec": {"$patch": "nope"}}), "bad map directive"),
            (json!({"spec": {"$patch": 1}}), "non-string directive"),
            (
                json!({"spec": {"$retainKeys": "a"}}),
                "retainKeys not a list",
            ),
            (
                json!({"spec": {"$retainKeys": [1]}}),
                "retainKeys not strings",
            ),
            (
                json!({"spec": {"$setElementOrder/containers": {}}}),
                "order not a list",
            ),
            (
                json!({"spec": {"$setElementOrder/": []}}),
                "order without field",
            ),
            (
                json!({"metadata": {"$deleteFromPrimitiveList/finalizers": "a"}}),
                "delete list not a list",
            ),
            (json!({"spec": {"$bogus": 1}}), "unknown directive"),
        ];
        for (patch, why) in bad {
            let mut target = json!({"spec": {"containers": [{"name": "a"}]}});
            let before = target.clone();
            let result = strategic_merge_patch(&mut target, &patch, "Pod");
            let err = result.expect_err(why);
            assert_eq!(err.status_code(), 422, "{why}");
            assert_eq!(target, before, "{why}: target must be unchanged");
        }
        let err = strategic_merge_patch(&mut json!({}), &json!([1]), "Pod").unwrap_err();
        assert!(matches!(err, PatchError::WrongShape { .. }));
        let msg = strategic_merge_patch(
            &mut json!({}),
            &json!({"spec": {"containers": [{"image": "x"}]}}),
            "Pod",
        )
        .unwrap_err()
        .to_string();
        assert!(
            msg.contains("spec.containers") && msg.contains("\"name\""),
            "{msg}"
        );
    }

    #[test]
    fn apply_patch_is_strategic_merge() {
        let mut live = deployment();
        let applied = parse_body(
            PatchKind::Apply,
            b"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 3\n  template:\n    spec:\n      containers:\n      - name: app\n        image: nginx:1.27\n",
        )
        .unwrap();
        apply_patch(&mut live, &applied, "Deployment").unwrap();
        assert_eq!(live["spec"]["replicas"], 3);
        assert_eq!(containers(&live)[0]["image"], "nginx:1.27");
        // Not tracked: the sidecar the applied config omits is still there.
        assert_eq!(containers(&live).len(), 2);
        assert!(apply_patch(&mut live, &json!("x"), "Deployment").is_err());
    }

    #[test]
    fn json_patch_operations() {
        let mut doc =
            json!({"metadata": {"labels": {"a": "1"}}, "spec": {"replicas": 1, "list": [1, 2]}});
        json_patch(
            &mut doc,
            &json!([
                {"op": "test", "path": "/spec/replicas", "value": 1},
                {"op": "replace", "path": "/spec/replicas", "value": 3},
                {"op": "add", "path": "/metadata/labels/b", "value": "2"},
                {"op": "remove", "path": "/metadata/labels/a"},
                {"op": "add", "path": "/spec/list/-", "value": 3},
                {"op": "copy", "from": "/spec/list", "path": "/spec/copy"},
                {"op": "move", "from": "/spec/copy", "path": "/spec/moved"}
            ]),
        )
        .unwrap();
        assert_eq!(
            doc,
            json!({"metadata": {"labels": {"b": "2"}}, "spec": {"replicas": 3, "list": [1, 2, 3], "moved": [1, 2, 3]}})
        );
    }

    #[test]
    fn json_patch_failures_leave_target_unchanged() {
        let original = json!({"spec": {"replicas": 1}});
        let cases = [
            (
                json!([{"op": "replace", "path": "/spec/replicas", "value": 2},
                    {"op": "test", "path": "/spec/replicas", "value": 1}]),
                "failed",
            ),
            (json!([{"op": "remove", "path": "/spec/missing"}]), "failed"),
            (json!([{"op": "frobnicate", "path": "/a"}]), "invalid"),
            (json!([{"op": "add", "value": 1}]), "invalid"),
            (
                json!([{"op": "add", "path": "no-slash", "value": 1}]),
                "invalid",
            ),
            (json!(["add"]), "invalid"),
            (json!({"op": "add"}), "shape"),
        ];
        for (patch, what) in cases {
            let mut doc = original.clone();
            let err = json_patch(&mut doc, &patch).expect_err(what);
            assert_eq!(doc, original);
            let matches = match what {
                "failed" => matches!(err, PatchError::JsonPatchFailed { .. }),
                "invalid" => matches!(err, PatchError::InvalidJsonPatch { .. }),
                _ => matches!(err, PatchError::WrongShape { .. }),
            };
            assert!(matches, "{patch}: {err:?}");
        }
        let mut doc = original.clone();
        let err = json_patch(
            &mut doc,
            &json!([{"op": "test", "path": "/spec/replicas", "value": 7}]),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("test") && msg.contains("/spec/replicas"),
            "{msg}"
        );
    }

    #[test]
    fn json_patch_copy_amplification_is_bounded() {
        // Each copy doubles /c; without the limit 40 of them would need terabytes.
        let mut doc = json!({"c": ["x".repeat(1024)]});
        let ops: Vec<Value> = (0..40)
            .map(|_| json!({"op": "copy", "from": "/c", "path": "/c/-"}))
            .collect();
        let err = json_patch(&mut doc, &Value::Array(ops)).unwrap_err();
        assert!(matches!(err, PatchError::JsonPatchTooBig { .. }), "{err:?}");
        let many = Value::Array(vec![
            json!({"op": "test", "path": "", "value": null});
            MAX_JSON_PATCH_OPERATIONS + 1
        ]);
        assert!(matches!(
            json_patch(&mut doc, &many),
            Err(PatchError::JsonPatchTooBig { .. })
        ));
    }

    #[test]
    fn merge_patch_nulls() {
        let mut doc = json!({"a": {"b": 1, "c": 2}, "list": [1, 2], "keep": true});
        merge_patch(
            &mut doc,
            &json!({"a": {"b": null, "d": {"e": null, "f": 1}}, "list": [3], "gone": null}),
        );
        assert_eq!(
            doc,
            json!({"a": {"c": 2, "d": {"f": 1}}, "list": [3], "keep": true})
        );
        merge_patch(&mut doc, &json!({"keep": null}));
        assert_eq!(doc.get("keep"), None);
    }

    #[test]
    fn parse_bodies() {
        assert_eq!(
            parse_body(PatchKind::Merge, br#"{"a": 1}"#).unwrap(),
            json!({"a": 1})
        );
        assert!(parse_body(PatchKind::Json, br#"[{"op":"remove","path":"/a"}]"#).is_ok());
        let apply_json = parse_body(PatchKind::Apply, br#"{"kind": "Pod"}"#).unwrap();
        assert_eq!(apply_json, json!({"kind": "Pod"}));
        let yaml = parse_body(
            PatchKind::Apply,
            b"kind: Pod\nmetadata:\n  labels:\n    app: web\nspec:\n  containers:\n  - name: a\n    ports:\n    - containerPort: 80\n",
        )
        .unwrap();
        assert_eq!(
            yaml["spec"]["containers"][0]["ports"][0]["containerPort"],
            80
        );
        assert_eq!(yaml["metadata"]["labels"]["app"], "web");
    }

    #[test]
    fn bad_bodies_are_errors() {
        use PatchKind::*;
        let cases: Vec<(PatchKind, Vec<u8>)> = vec![
            (Merge, b"".to_vec()),
            (Merge, b"   \n".to_vec()),
            (Merge, b"{".to_vec()),
            (Merge, b"[1]".to_vec()),
            (Merge, b"null".to_vec()),
            (StrategicMerge, b"\"x\"".to_vec()),
            (StrategicMerge, b"{\"a\":1} trailing".to_vec()),
            (StrategicMerge, vec![0xff, 0xfe, 0x00]),
            (Json, b"{}".to_vec()),
            (Json, b"[".to_vec()),
            (Apply, b"- a\n- b\n".to_vec()),
            (Apply, b"a: [1, 2\n".to_vec()),
            (Apply, b"just a string".to_vec()),
            (Apply, b"a: 1\n---\nb: 2\n".to_vec()),
            (Apply, b"a: *missing\n".to_vec()),
            (Apply, vec![b'a', b':', b' ', 0xff]),
            (Apply, "[".repeat(10_000).into_bytes()),
            (Merge, "[".repeat(10_000).into_bytes()),
            (Apply, "a:\n".repeat(2).into_bytes()),
        ];
        for (kind, body) in cases {
            let result = parse_body(kind, &body);
            // Some inputs are valid YAML whose top level is not an object; all must be errors.
            let err = result.expect_err(&format!("{kind:?} {:?}", String::from_utf8_lossy(&body)));
            assert_eq!(err.status_code(), 400, "{err}");
        }
        let big = vec![b' '; MAX_PATCH_BYTES + 1];
        let err = parse_body(Merge, &big).unwrap_err();
        assert!(matches!(err, PatchError::TooLarge { .. }));
        assert_eq!(err.status_code(), 413);
        assert!(err.to_string().contains("limit"));
        let yaml_err = parse_body(Apply, b"a: [\n").unwrap_err().to_string();
        assert!(!yaml_err.contains('\n'), "{yaml_err}");
        assert!(yaml_err.contains("line 1"), "{yaml_err}");
    }

    #[test]
    fn deep_yaml_is_rejected_not_overflowing() {
        let mut deep = String::new();
        for i in 0..5000 {
            deep.push_str(&" ".repeat(i));
            deep.push_str("a:\n");
        }
        assert!(parse_body(PatchKind::Apply, deep.as_bytes()).is_err());
        let anchors = b"a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\ng: [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\n";
        // Either rejected by the alias budget or parsed; it must not hang or panic.
        let _ = parse_body(PatchKind::Apply, anchors);
    }

    #[test]
    fn odd_targets_and_patches_never_panic() {
        let patches = [
            json!({"spec": {"containers": [{"name": "a", "$patch": "merge", "x": 1}]}}),
            json!({"spec": {"containers": {"not": "a list"}}}),
            json!({"spec": {"containers": "scalar"}}),
            json!({"spec": {"$setElementOrder/containers": [1, "x", {"other": 1}]}}),
            json!({"spec": {"$setElementOrder/containers": [], "containers": null}}),
            json!({"metadata": {"finalizers": [{"$patch": "delete"}, [1], {"a": 1}]}}),
            json!({"$patch": "delete"}),
            json!({"$patch": "replace", "kind": "Pod"}),
        ];
        let targets = [
            json!(null),
            json!([1, 2]),
            json!({"spec": {"containers": [1, "x", {"noname": 1}, {"name": "a"}, {"name": "a"}]}}),
            json!({"spec": {"containers": {"a": 1}}}),
            json!({"metadata": {"finalizers": "x"}}),
        ];
        for kind in ["Pod", "Deployment", "Widget", ""] {
            for t in &targets {
                for p in &patches {
                    let mut target = t.clone();
                    let _ = strategic_merge_patch(&mut target, p, kind);
                    let mut target = t.clone();
                    merge_patch(&mut target, p);
                    let mut target = t.clone();
                    let _ = json_patch(&mut target, p);
                }
            }
        }
        let out = smp(json!({"a": 1}), json!({"$patch": "delete"}), "Pod");
        assert_eq!(out, json!({}));
    }
}
