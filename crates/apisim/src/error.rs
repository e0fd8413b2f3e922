//! API errors, rendered as Kubernetes `Status` objects with the codes and reasons real
//! clients branch on (kubectl and kube-rs both look at `reason` and `code`).

use serde_json::{Value, json};

use crate::resources::ResourceInfo;

/// An error returned to an API client as a `Status` object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// Machine-readable reason (`NotFound`, `AlreadyExists`, `Conflict`, `Invalid`, …).
    pub reason: &'static str,
    /// Human-readable message, worded like the real API server's.
    pub message: String,
    /// `details` of the Status (name, group, kind, causes), if any.
    pub details: Option<Value>,
}

/// Result alias for API operations.
pub type ApiResult<T> = Result<T, ApiError>;

fn details(res: &ResourceInfo, name: &str) -> Value {
    json!({ "name": name, "group": res.group, "kind": res.plural })
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 401 Unauthorized.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 403 Forbidden with the message format of the RBAC authorizer.
    pub fn forbidden(
        user: &str,
        verb: &str,
        res_desc: &str,
        group: &str,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> Self {
        let what = match name {
            Some(n) => format!("{res_desc} \"{n}\" is forbidden"),
            None => format!("{res_desc} is forbidden"),
        };
        let scope = match namespace {
            Some(ns) => format!(" in the namespace \"{ns}\""),
            None => " at the cluster scope".to_string(),
        };
        Self::new(
            403,
            "Forbidden",
            format!(
                "{what}: User \"{user}\" cannot {verb} resource \"{res_desc}\" in API group \"{group}\"{scope}"
            ),
        )
    }

    /// 403 Forbidden with a custom message (admission refusals).
    pub fn forbidden_msg(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    /// 404 NotFound for an object.
    pub fn not_found(res: &ResourceInfo, name: &str) -> Self {
        Self {
            details: Some(details(res, name)),
            ..Self::new(
                404,
                "NotFound",
                format!("{} \"{name}\" not found", res.group_resource()),
            )
        }
    }

    /// 404 NotFound for a path that names no resource.
    pub fn no_route(path: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    /// 409 AlreadyExists.
    pub fn already_exists(res: &ResourceInfo, name: &str) -> Self {
        Self {
            details: Some(details(res, name)),
            ..Self::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", res.group_resource()),
            )
        }
    }

    /// 409 Conflict: stale resourceVersion or failed precondition.
    pub fn conflict(res: &ResourceInfo, name: &str, why: &str) -> Self {
        Self {
            details: Some(details(res, name)),
            ..Self::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": {why}",
                    res.group_resource()
                ),
            )
        }
    }

    /// 409 Conflict for an update based on an old version.
    pub fn stale(res: &ResourceInfo, name: &str) -> Self {
        Self::conflict(
            res,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 410 Gone: a watch asked for a resourceVersion that is no longer kept.
    pub fn gone(requested: u64, oldest: u64) -> Self {
        Self::new(
            410,
            "Expired",
            format!("too old resource version: {requested} ({oldest})"),
        )
    }

    /// 415 UnsupportedMediaType.
    pub fn unsupported_media_type(ct: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml (got {ct:?})"
            ),
        )
    }

    /// 422 Invalid with one or more field causes, formatted like the API server:
    /// `Kind "name" is invalid: field: Reason value: detail`.
    pub fn invalid(kind: &str, name: &str, causes: Vec<FieldError>) -> Self {
        let list: Vec<String> = causes.iter().map(FieldError::to_string).collect();
        let joined = if list.len() == 1 {
            list[0].clone()
        } else {
            format!("[{}]", list.join(", "))
        };
        Self {
            details: Some(json!({
                "name": name,
                "kind": kind,
                "causes": causes.iter().map(|c| json!({
                    "reason": c.reason.as_field_reason(),
                    "message": c.to_string(),
                    "field": c.field,
                })).collect::<Vec<_>>(),
            })),
            ..Self::new(
                422,
                "Invalid",
                format!("{kind} \"{name}\" is invalid: {joined}"),
            )
        }
    }

    /// 500 InternalError.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// 503 ServiceUnavailable.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message)
    }

    /// The `Status` object sent to clients.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

/// Why a field is invalid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldReason {
    /// The field must be set.
    Required,
    /// The value is not acceptable (the string is the value as the server prints it).
    Invalid(String),
    /// The field may not be set or changed.
    Forbidden,
    /// The value is a duplicate.
    Duplicate(String),
    /// The value is not one of the supported values.
    NotSupported(String),
}

impl FieldReason {
    fn as_field_reason(&self) -> &'static str {
        match self {
            Self::Required => "FieldValueRequired",
            Self::Invalid(_) => "FieldValueInvalid",
            Self::Forbidden => "FieldValueForbidden",
            Self::Duplicate(_) => "FieldValueDuplicate",
            Self::NotSupported(_) => "FieldValueNotSupported",
        }
    }
}

/// A validation failure on one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Field path (`spec.containers[0].image`).
    pub field: String,
    /// Kind of failure.
    pub reason: FieldReason,
    /// Explanation.
    pub detail: String,
}

impl FieldError {
    /// A required field is missing.
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: FieldReason::Required,
            detail: detail.into(),
        }
    }

    /// A field has a bad value.
    pub fn invalid(
        field: impl Into<String>,
        value: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            reason: FieldReason::Invalid(value.into()),
            detail: detail.into(),
        }
    }

    /// A field may not be set or changed.
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: FieldReason::Forbidden,
            detail: detail.into(),
        }
    }

    /// A value is duplicated.
    pub fn duplicate(field: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: FieldReason::Duplicate(value.into()),
            detail: String::new(),
        }
    }

    /// A value is not one of the supported ones.
    pub fn not_supported(
        field: impl Into<String>,
        value: impl Into<String>,
        supported: &[&str],
    ) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("\"{s}\"")).collect();
        Self {
            field: field.into(),
            reason: FieldReason::NotSupported(value.into()),
            detail: format!("supported values: {}", list.join(", ")),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tail = |f: &mut std::fmt::Formatter<'_>| {
            if self.detail.is_empty() {
                Ok(())
            } else {
                write!(f, ": {}", self.detail)
            }
        };
        match &self.reason {
            FieldReason::Required => {
                write!(f, "{}: Required value", self.field)?;
                tail(f)
            }
            FieldReason::Invalid(v) => {
                write!(f, "{}: Invalid value: {v}", self.field)?;
                tail(f)
            }
            FieldReason::Forbidden => {
                write!(f, "{}: Forbidden", self.field)?;
                tail(f)
            }
            FieldReason::Duplicate(v) => write!(f, "{}: Duplicate value: {v}", self.field),
            FieldReason::NotSupported(v) => {
                write!(f, "{}: Unsupported value: {v}", self.field)?;
                tail(f)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;

    #[test]
    fn status_shapes() {
        let pods = find("", "v1", "pods").unwrap();
        let s = ApiError::not_found(pods, "web-1").to_status();
        assert_eq!(s["code"], 404);
        assert_eq!(s["reason"], "NotFound");
        assert_eq!(s["message"], "pods \"web-1\" not found");
        let deploy = find("apps", "v1", "deployments").unwrap();
        assert_eq!(
            ApiError::already_exists(deploy, "web").message,
            "deployments.apps \"web\" already exists"
        );
        let inv = ApiError::invalid(
            "Service",
            "x",
            vec![FieldError::invalid(
                "spec.clusterIPs",
                "[]string{\"1.1.1.1\"}",
                "failed to allocate IP 1.1.1.1",
            )],
        );
        assert_eq!(inv.code, 422);
        assert!(
            inv.message
                .starts_with("Service \"x\" is invalid: spec.clusterIPs: Invalid value")
        );
        let f = ApiError::forbidden(
            "system:serviceaccount:default:x",
            "list",
            "pods",
            "",
            Some("default"),
            None,
        );
        assert_eq!(
            f.message,
            "pods is forbidden: User \"system:serviceaccount:default:x\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
        );
    }
}
