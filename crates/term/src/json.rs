//! The envelope of every JSON document and JSON line kubelan prints with `--output json`.
//!
//! Each one is a JSON object carrying two fields besides its own: `apiVersion`
//! ([`API_VERSION`]) and `type`, the name of the document's schema (`RoutesReport`,
//! `ConnectEvent`, ...). Scripts check both before reading the rest. Within one
//! `apiVersion`, fields are only added, never renamed, removed or given another meaning;
//! a breaking change bumps the version. `docs/json.md` lists every document.
//!
//! The field is `type` and not `kind` because an `expose` event already has a `kind` of its
//! own (the Kubernetes object it created), and the envelope must never change an existing
//! field.

use serde::Serialize;
use serde_json::Value;

/// The version of every JSON document kubelan prints.
pub const API_VERSION: &str = "kubelan.dev/v1";

/// The field that carries [`API_VERSION`].
pub const API_VERSION_FIELD: &str = "apiVersion";

/// The field that names the document's schema ([`Document::TYPE`]).
pub const TYPE_FIELD: &str = "type";

/// A value kubelan prints as a JSON document (or one JSON line of a stream).
pub trait Document: Serialize {
    /// The schema's name, the `type` field: `RoutesReport`, `ConnectEvent`, ...
    const TYPE: &'static str;

    /// The value as JSON, with `apiVersion` and `type` added.
    ///
    /// # Errors
    ///
    /// When the value has no JSON form (serde's error).
    fn to_document(&self) -> Result<Value, serde_json::Error> {
        Ok(enveloped(Self::TYPE, serde_json::to_value(self)?))
    }
}

/// `value` with `apiVersion` and `type` (`kind`) added, when it is an object (every
/// document is). A field of the value's own with either name is left as it was.
pub fn enveloped(kind: &str, mut value: Value) -> Value {
    if let Some(map) = value.as_object_mut() {
        map.entry(API_VERSION_FIELD).or_insert(API_VERSION.into());
        map.entry(TYPE_FIELD).or_insert(kind.into());
    }
    value
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[derive(Serialize)]
    struct Sample {
        name: &'static str,
    }

    impl Document for Sample {
        const TYPE: &'static str = "Sample";
    }

    #[test]
    fn documents_carry_version_and_type_beside_their_fields() {
        let doc = Sample { name: "a" }.to_document().unwrap();
        assert_eq!(
            doc,
            json!({"apiVersion": "kubelan.dev/v1", "type": "Sample", "name": "a"})
        );
    }

    #[test]
    fn existing_fields_are_never_overwritten() {
        let v = enveloped("X", json!({"type": "mine", "n": 1}));
        assert_eq!(
            v,
            json!({"apiVersion": API_VERSION, "type": "mine", "n": 1})
        );
        assert_eq!(enveloped("X", json!([1])), json!([1]));
    }
}
