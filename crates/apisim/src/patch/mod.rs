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

mod rules;
mod strategic;
#[cfg(test)]
mod tests;

pub use strategic::{apply_patch, strategic_merge_patch};

use serde_json::Value;

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
