//! Collection requests: list, create, deletecollection.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::auth::UserInfo;
use crate::error::{ApiError, ApiResult};
use crate::resources::ResourceInfo;
use crate::store::with_type_meta;
use crate::{escalation, meta, table};

use super::ApiServer;
use super::body::{Body, add_propagation_warning, json_response};
use super::route::{Query, wants_table};

impl ApiServer {
    pub(super) async fn collection(
        self: Arc<Self>,
        req: Request<Incoming>,
        res: &'static ResourceInfo,
        ns: Option<String>,
        q: &Query,
        user: &UserInfo,
    ) -> ApiResult<Response<Body>> {
        let table = wants_table(req.headers());
        match *req.method() {
            Method::GET if q.flag("watch") => {
                let (labels, fields) = Self::selectors(q)?;
                Ok(self.watch(res, ns, labels, fields, q, table))
            }
            Method::GET => {
                let (labels, fields) = Self::selectors(q)?;
                let (items, rv) = self.store.list(res, ns.as_deref(), &labels, &fields);
                if table {
                    let now = time::OffsetDateTime::now_utc();
                    return Ok(json_response(
                        StatusCode::OK,
                        &table::to_table(
                            res.kind,
                            &items,
                            now,
                            table::parse_include_object(q.get("includeObject")),
                            &rv.to_string(),
                        ),
                    ));
                }
                let items: Vec<Value> = items.into_iter().map(|o| with_type_meta(res, o)).collect();
                Ok(json_response(
                    StatusCode::OK,
                    &json!({
                        "kind": format!("{}List", res.kind),
                        "apiVersion": res.api_version(),
                        "metadata": {"resourceVersion": rv.to_string()},
                        "items": items,
                    }),
                ))
            }
            Method::POST => {
                let ns = ns.unwrap_or_default();
                let (body, ct) = Self::read_body(req).await?;
                let obj = Self::decode(&body, &ct)?;
                if !res.is_stored() {
                    return self.review(res, obj, user);
                }
                let dry = q.get("dryRun").is_some();
                let guard = |inner: &_, new: &_, old: Option<&_>| {
                    escalation::check(inner, user, res, &ns, "", new, old)
                };
                let created = self.store.create_guarded(res, &ns, obj, dry, &guard)?;
                let mut resp =
                    json_response(StatusCode::CREATED, &with_type_meta(res, created.clone()));
                self.pod_security_warnings(&mut resp, res, &created, true);
                Ok(resp)
            }
            Method::DELETE => {
                let (labels, fields) = Self::selectors(q)?;
                let (body, _) = Self::read_body(req).await?;
                let opts = Self::delete_options(q, &body)?;
                let (items, _) = self.store.list(res, ns.as_deref(), &labels, &fields);
                let mut deleted = Vec::new();
                for o in items {
                    if let Ok(d) =
                        self.store
                            .delete(res, meta::namespace(&o), meta::name(&o), &opts)
                    {
                        deleted.push(with_type_meta(res, d));
                    }
                }
                let mut resp = json_response(
                    StatusCode::OK,
                    &json!({
                        "kind": format!("{}List", res.kind),
                        "apiVersion": res.api_version(),
                        "metadata": {"resourceVersion": self.store.current_rv().to_string()},
                        "items": deleted,
                    }),
                );
                add_propagation_warning(&mut resp, res, &opts);
                Ok(resp)
            }
            _ => Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({})",
                res.plural
            ))),
        }
    }
}
