//! Requests for one object and its subresources.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::{escalation, meta, patch, resources, table};

use super::portforward;
use crate::auth::UserInfo;
use crate::error::{ApiError, ApiResult};
use crate::patch::PatchKind;
use crate::resources::ResourceInfo;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{Sub, with_type_meta};

use super::ApiServer;
use super::body::{Body, add_propagation_warning, add_warning, json_response};
use super::route::{Query, wants_table};

impl ApiServer {
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn object(
        self: Arc<Self>,
        req: Request<Incoming>,
        res: &'static ResourceInfo,
        ns: &str,
        name: &str,
        sub: &str,
        q: &Query,
        user: &UserInfo,
    ) -> ApiResult<Response<Body>> {
        if !sub.is_empty() && !res.subresources.contains(&sub) {
            return Err(ApiError::no_route(req.uri().path()));
        }
        let table = wants_table(req.headers());
        let dry = q.get("dryRun").is_some();
        match (sub, req.method().clone()) {
            ("", Method::GET) if q.flag("watch") => {
                let labels = LabelSelector::everything();
                let fields = FieldSelector::parse(&format!("metadata.name={name}"))
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
                let ns = res.namespaced.then(|| ns.to_string());
                Ok(self.watch(res, ns, labels, fields, q, table))
            }
            ("" | "status", Method::GET) => {
                let obj = self.store.get(res, ns, name)?;
                if table {
                    let rv = meta::str_at(&obj, &["metadata", "resourceVersion"]).to_string();
                    return Ok(json_response(
                        StatusCode::OK,
                        &table::to_table(
                            res.kind,
                            &[obj],
                            time::OffsetDateTime::now_utc(),
                            table::parse_include_object(q.get("includeObject")),
                            &rv,
                        ),
                    ));
                }
                Ok(json_response(StatusCode::OK, &with_type_meta(res, obj)))
            }
            ("" | "status" | "finalize", Method::PUT) => {
                let (body, ct) = Self::read_body(req).await?;
                let obj = Self::decode(&body, &ct)?;
                let s = match sub {
                    "status" => Sub::Status,
                    "finalize" => Sub::Finalize,
                    _ => Sub::Main,
                };
                let guard = |inner: &_, new: &_, old: Option<&_>| {
                    escalation::check(inner, user, res, ns, name, new, old)
                };
                let out = self
                    .store
                    .update_guarded(res, ns, name, obj, s, dry, &guard)?;
                let mut resp = json_response(StatusCode::OK, &with_type_meta(res, out.clone()));
                if s == Sub::Main {
                    self.pod_security_warnings(&mut resp, res, &out, false);
                }
                Ok(resp)
            }
            ("" | "status", Method::PATCH) => {
                let (kind, patch) = Self::patch_body(req).await?;
                let s = if sub == "status" {
                    Sub::Status
                } else {
                    Sub::Main
                };
                let exists = self.store.get(res, ns, name).is_ok();
                if !exists && kind == PatchKind::Apply {
                    // Server-side apply that creates the object needs `create` (for this
                    // name) as well as `patch`, as upstream.
                    self.require(user, "create", res, ns, name)?;
                }
                let guard = |inner: &_, new: &_, old: Option<&_>| {
                    escalation::check(inner, user, res, ns, name, new, old)
                };
                let out = self
                    .store
                    .patch_guarded(res, ns, name, kind, &patch, s, dry, &guard)?;
                let code = if exists {
                    StatusCode::OK
                } else {
                    StatusCode::CREATED
                };
                let mut resp = json_response(code, &with_type_meta(res, out.clone()));
                if s == Sub::Main {
                    self.pod_security_warnings(&mut resp, res, &out, !exists);
                }
                Ok(resp)
            }
            ("", Method::DELETE) => {
                let (body, _) = Self::read_body(req).await?;
                let opts = Self::delete_options(q, &body)?;
                let out = self.store.delete(res, ns, name, &opts)?;
                let mut resp = json_response(StatusCode::OK, &with_type_meta(res, out));
                add_propagation_warning(&mut resp, res, &opts);
                Ok(resp)
            }
            ("scale", Method::GET) => Ok(json_response(
                StatusCode::OK,
                &scale_of(&self.store.get(res, ns, name)?),
            )),
            ("scale", Method::PUT | Method::PATCH) => {
                let current = scale_of(&self.store.get(res, ns, name)?);
                let wanted = if req.method() == Method::PUT {
                    let (body, ct) = Self::read_body(req).await?;
                    Self::decode(&body, &ct)?
                } else {
                    let (kind, p) = Self::patch_body(req).await?;
                    let mut s = current.clone();
                    match kind {
                        PatchKind::Json => patch::json_patch(&mut s, &p)
                            .map_err(|e| crate::store::patch_error(&e))?,
                        PatchKind::Merge => patch::merge_patch(&mut s, &p),
                        PatchKind::StrategicMerge | PatchKind::Apply => {
                            patch::strategic_merge_patch(&mut s, &p, "Scale")
                                .map_err(|e| crate::store::patch_error(&e))?
                        }
                    }
                    s
                };
                let replicas = wanted
                    .pointer("/spec/replicas")
                    .and_then(Value::as_i64)
                    .ok_or_else(|| ApiError::bad_request("spec.replicas must be an integer"))?;
                if replicas < 0 {
                    return Err(ApiError::invalid(
                        "Scale",
                        name,
                        vec![crate::error::FieldError::invalid(
                            "spec.replicas",
                            replicas.to_string(),
                            "must be greater than or equal to 0",
                        )],
                    ));
                }
                let out = self.store.modify(res, ns, name, Sub::Main, |o| {
                    meta::set_at(o, &["spec", "replicas"], json!(replicas));
                    Ok(())
                })?;
                Ok(json_response(StatusCode::OK, &scale_of(&out)))
            }
            ("portforward", _) => {
                let pod = self.store.get(res, ns, name)?;
                portforward::handle(req, pod, &q.ports, self.backend.clone())
            }
            ("log", Method::GET) => self.logs(ns, name, q).await,
            ("exec", _) => Err(ApiError::bad_request(
                "kubelan lab: pods/exec is not simulated; use `kubelan lab exec <pod> -- CMD` instead",
            )),
            ("binding", Method::POST) => {
                let (body, ct) = Self::read_body(req).await?;
                let b = Self::decode(&body, &ct)?;
                let node = meta::str_at(&b, &["target", "name"]).to_string();
                if node.is_empty() {
                    return Err(ApiError::invalid(
                        "Binding",
                        name,
                        vec![crate::error::FieldError::required("target.name", "")],
                    ));
                }
                self.store.modify(res, ns, name, Sub::Main, |p| {
                    let cur = meta::str_at(p, &["spec", "nodeName"]);
                    if !cur.is_empty() && cur != node {
                        return Err(ApiError::conflict(
                            res,
                            name,
                            &format!("pod {name} is already assigned to node \"{cur}\""),
                        ));
                    }
                    meta::set_at(p, &["spec", "nodeName"], json!(node));
                    Ok(())
                })?;
                Ok(json_response(
                    StatusCode::CREATED,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
                ))
            }
            ("eviction", Method::POST) => {
                let (body, ct) = Self::read_body(req).await?;
                let ev = Self::decode(&body, &ct)?;
                let opts = ev
                    .get("deleteOptions")
                    .map(|d| Self::delete_options(&Query::default(), d.to_string().as_bytes()))
                    .transpose()?
                    .unwrap_or_default();
                self.store.delete(res, ns, name, &opts)?;
                Ok(json_response(
                    StatusCode::CREATED,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
                ))
            }
            ("token", Method::POST) => {
                self.store.get(res, ns, name)?;
                let (body, ct) = Self::read_body(req).await?;
                let mut tr = Self::decode(&body, &ct)?;
                let pod = tr
                    .pointer("/spec/boundObjectRef")
                    .filter(|r| meta::str_at(r, &["kind"]) == "Pod")
                    .map(|r| {
                        (
                            meta::str_at(r, &["name"]).to_string(),
                            meta::str_at(r, &["uid"]).to_string(),
                        )
                    });
                let token = self.auth.mint_service_account_token(
                    ns,
                    name,
                    pod.as_ref().map(|(n, u)| (n.as_str(), u.as_str())),
                );
                let secs = tr
                    .pointer("/spec/expirationSeconds")
                    .and_then(Value::as_i64)
                    .unwrap_or(3600);
                tr["status"] = json!({
                    "token": token,
                    "expirationTimestamp": meta::format_time(time::OffsetDateTime::now_utc() + time::Duration::seconds(secs)),
                });
                tr["apiVersion"] = json!("authentication.k8s.io/v1");
                tr["kind"] = json!("TokenRequest");
                Ok(json_response(StatusCode::CREATED, &tr))
            }
            _ => Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({}{})",
                res.plural,
                if sub.is_empty() {
                    String::new()
                } else {
                    format!("/{sub}")
                }
            ))),
        }
    }

    /// Adds Pod Security `Warning` headers for a written pod (warn level, on creation) or
    /// workload pod template (enforce and warn levels).
    pub(super) fn pod_security_warnings(
        &self,
        resp: &mut Response<Body>,
        res: &ResourceInfo,
        obj: &Value,
        created: bool,
    ) {
        let Some((spec, template)) = crate::podsecurity::pod_spec_of(res.kind, obj) else {
            return;
        };
        if !template && !created {
            return;
        }
        let nsres = resources::find("", "v1", "namespaces").expect("namespaces resource");
        let Ok(ns) = self.store.get(nsres, "", meta::namespace(obj)) else {
            return;
        };
        let policy = crate::podsecurity::policy(&ns);
        for w in crate::podsecurity::warning(&policy, spec, template) {
            add_warning(resp, &w);
        }
    }
}

fn scale_of(obj: &Value) -> Value {
    let selector = obj
        .pointer("/spec/selector")
        .and_then(|s| LabelSelector::from_json(s).ok())
        .map(|s| s.to_string())
        .unwrap_or_default();
    let md = meta::metadata(obj);
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": md.get("name"),
            "namespace": md.get("namespace"),
            "uid": md.get("uid"),
            "resourceVersion": md.get("resourceVersion"),
            "creationTimestamp": md.get("creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {
            "replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector,
        },
    })
}
