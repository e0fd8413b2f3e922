//! Reading request bodies and options.

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::patch;
use crate::patch::PatchKind;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::DeleteOptions;

use super::ApiServer;
use super::route::Query;

/// Largest request body accepted (the real API server's limit is 3 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;

impl ApiServer {
    pub(super) async fn read_body(req: Request<Incoming>) -> ApiResult<(Bytes, String)> {
        let ct = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .to_string();
        let body = Limited::new(req.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    ApiError {
                        code: 413,
                        reason: "RequestEntityTooLarge",
                        message: format!("the request body is larger than {MAX_BODY} bytes"),
                        details: None,
                    }
                } else {
                    ApiError::bad_request(format!("cannot read the request body: {e}"))
                }
            })?
            .to_bytes();
        Ok((body, ct))
    }

    pub(super) fn decode(body: &[u8], ct: &str) -> ApiResult<Value> {
        let base = ct.split(';').next().unwrap_or("").trim();
        let v: Value = match base {
            "application/json" | "" | "*/*" => serde_json::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!("the request body is not valid JSON: {e}"))
            })?,
            "application/yaml" | "application/x-yaml" | "text/yaml" => {
                let text = std::str::from_utf8(body)
                    .map_err(|_| ApiError::bad_request("the request body is not UTF-8"))?;
                serde_saphyr::from_str(text).map_err(|e| {
                    ApiError::bad_request(format!("the request body is not valid YAML: {e}"))
                })?
            }
            crate::protobuf::CONTENT_TYPE => {
                crate::protobuf::decode(body).map_err(|e| match e {
                    crate::protobuf::ProtoError::Unsupported(_) => ApiError {
                        code: 415,
                        reason: "UnsupportedMediaType",
                        message: e.to_string(),
                        details: None,
                    },
                    crate::protobuf::ProtoError::Malformed(_) => {
                        ApiError::bad_request(e.to_string())
                    }
                })?
            }
            other => return Err(ApiError::unsupported_media_type(other)),
        };
        if !v.is_object() {
            return Err(ApiError::bad_request("the request body must be an object"));
        }
        Ok(v)
    }

    pub(super) fn selectors(q: &Query) -> ApiResult<(LabelSelector, FieldSelector)> {
        let labels = LabelSelector::parse(q.get("labelSelector").unwrap_or(""))
            .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
        let fields = FieldSelector::parse(q.get("fieldSelector").unwrap_or(""))
            .map_err(|e| ApiError::bad_request(format!("invalid field selector: {e}")))?;
        Ok((labels, fields))
    }

    pub(super) fn delete_options(q: &Query, body: &[u8]) -> ApiResult<DeleteOptions> {
        let mut o = DeleteOptions::default();
        if !body.is_empty() {
            let v: Value = serde_json::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!("DeleteOptions is not valid JSON: {e}"))
            })?;
            o.propagation_policy = v
                .get("propagationPolicy")
                .and_then(Value::as_str)
                .map(String::from);
            if o.propagation_policy.is_none()
                && v.get("orphanDependents").and_then(Value::as_bool) == Some(true)
            {
                o.propagation_policy = Some("Orphan".into());
            }
            o.grace_period_seconds = v.get("gracePeriodSeconds").and_then(Value::as_i64);
            o.precondition_uid = v
                .pointer("/preconditions/uid")
                .and_then(Value::as_str)
                .map(String::from);
            o.precondition_rv = v
                .pointer("/preconditions/resourceVersion")
                .and_then(Value::as_str)
                .map(String::from);
            o.dry_run = v
                .get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty());
        }
        if let Some(p) = q.get("propagationPolicy") {
            o.propagation_policy = Some(p.to_string());
        }
        if let Some(g) = q.get("gracePeriodSeconds") {
            o.grace_period_seconds = Some(
                g.parse()
                    .map_err(|_| ApiError::bad_request("gracePeriodSeconds must be an integer"))?,
            );
        }
        if q.get("dryRun").is_some() {
            o.dry_run = true;
        }
        Ok(o)
    }

    pub(super) async fn patch_body(req: Request<Incoming>) -> ApiResult<(PatchKind, Value)> {
        let ct = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let kind = PatchKind::from_content_type(&ct)
            .ok_or_else(|| ApiError::unsupported_media_type(&ct))?;
        let (body, _) = Self::read_body(req).await?;
        let v = patch::parse_body(kind, &body).map_err(|e| crate::store::patch_error(&e))?;
        Ok((kind, v))
    }
}
