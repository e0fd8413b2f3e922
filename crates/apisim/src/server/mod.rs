//! The HTTPS front end: routing, authentication, authorization, list/watch streaming,
//! subresources, and the WebSocket port-forward.

mod backend;
mod body;
mod collection;
mod logs;
mod object;
mod portforward;
mod request;
mod route;
mod watch;

pub use backend::PodBackend;
pub use body::Body;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::{Attributes, Authenticator, UserInfo};
use crate::error::{ApiError, ApiResult};
use crate::resources::ResourceInfo;
use crate::store::{Store, with_type_meta};
use crate::{auth, discovery, meta};

use body::{error_response, full, json_response};
use route::{Query, Route, forbidden, name_from_field_selector, route, verb_for};

/// Version facts served at `/version`.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// Kubernetes minor version simulated (e.g. 33).
    pub minor: u32,
    /// Address advertised in `/api` (`10.4.7.11:6443`).
    pub advertise: String,
}

/// The API server.
pub struct ApiServer {
    store: Arc<Store>,
    auth: Arc<Authenticator>,
    backend: Arc<dyn PodBackend>,
    info: ServerInfo,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl ApiServer {
    /// A server over a store.
    pub fn new(
        store: Arc<Store>,
        auth: Arc<Authenticator>,
        backend: Arc<dyn PodBackend>,
        info: ServerInfo,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            auth,
            backend,
            info,
        })
    }

    /// Serves HTTPS (HTTP/1.1 and HTTP/2 by ALPN) on `listener` until `shutdown`.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        shutdown: CancellationToken,
    ) {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        loop {
            let (tcp, peer) = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let me = self.clone();
            let acceptor = acceptor.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp))
                    .await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
                let io = hyper_util::rt::TokioIo::new(tls);
                let svc = hyper::service::service_fn(move |req| {
                    let me = me.clone();
                    async move { Ok::<_, Infallible>(me.handle(req, peer).await) }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                );
                let conn = builder.serve_connection_with_upgrades(io, svc);
                tokio::select! {
                    r = conn => if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    },
                    _ = shutdown.cancelled() => {}
                }
            });
        }
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let started = std::time::Instant::now();
        let resp = match self.clone().handle_inner(req).await {
            Ok(r) => r,
            Err(e) => error_response(&e),
        };
        tracing::debug!(%peer, %method, %path, status = resp.status().as_u16(), ms = started.elapsed().as_millis() as u64, "request");
        resp
    }

    fn authenticate(&self, headers: &HeaderMap) -> Option<UserInfo> {
        let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let token = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))?;
        self.auth.authenticate(&self.store, token.trim())
    }

    async fn handle_inner(self: Arc<Self>, req: Request<Incoming>) -> ApiResult<Response<Body>> {
        let path = req.uri().path().to_string();
        let q = Query::parse(req.uri().query());
        let public = matches!(
            path.as_str(),
            "/healthz" | "/livez" | "/readyz" | "/version"
        );
        let user = match self.authenticate(req.headers()) {
            Some(u) => u,
            None if public => UserInfo::new("system:anonymous", &["system:unauthenticated"]),
            None => return Err(ApiError::unauthorized()),
        };
        let route = route(&path)?;
        let verb = verb_for(req.method(), &route, &q);
        let attrs = match &route {
            Route::Object { res, ns, name, sub } => Attributes {
                verb: verb.into(),
                group: res.group.into(),
                resource: res.plural.into(),
                subresource: sub.clone(),
                namespace: ns.clone(),
                name: name.clone(),
                path: None,
            },
            Route::Collection { res, ns } => Attributes {
                verb: verb.into(),
                group: res.group.into(),
                resource: res.plural.into(),
                namespace: ns.clone().unwrap_or_default(),
                name: if matches!(verb, "list" | "watch") {
                    name_from_field_selector(q.get("fieldSelector").unwrap_or(""))
                } else {
                    String::new()
                },
                ..Attributes::default()
            },
            _ => Attributes {
                verb: verb.into(),
                path: Some(path.clone()),
                ..Attributes::default()
            },
        };
        if !public && !auth::authorize(&self.store, &user, &attrs).0 {
            return Err(forbidden(&user, &attrs));
        }
        // Resources newer than the simulated version are not there: 404 after
        // authorization, as from a real API server of that version.
        if let Route::Collection { res, .. } | Route::Object { res, .. } = &route
            && !res.served_in(self.info.minor)
        {
            return Err(ApiError::no_route(&path));
        }
        match route {
            Route::NonResource(p) => self.non_resource(&p, req.headers()),
            Route::ApiVersions => Ok(json_response(
                StatusCode::OK,
                &discovery::api_versions(&self.info.advertise),
            )),
            Route::Groups => Ok(json_response(
                StatusCode::OK,
                &discovery::group_list(self.info.minor),
            )),
            Route::Group(g) => discovery::group(&g, self.info.minor)
                .map(|d| json_response(StatusCode::OK, &d))
                .ok_or_else(|| ApiError::no_route(&path)),
            Route::Resources(g, v) => discovery::resource_list(&g, &v, self.info.minor)
                .map(|d| json_response(StatusCode::OK, &d))
                .ok_or_else(|| ApiError::no_route(&path)),
            Route::Collection { res, ns } => self.collection(req, res, ns, &q, &user).await,
            Route::Object { res, ns, name, sub } => {
                self.object(req, res, &ns, &name, &sub, &q, &user).await
            }
        }
    }

    fn non_resource(&self, path: &str, headers: &HeaderMap) -> ApiResult<Response<Body>> {
        match path {
            "/healthz" | "/livez" | "/readyz" => {
                let mut r = Response::new(full("ok"));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("text/plain"),
                );
                Ok(r)
            }
            "/version" => Ok(json_response(
                StatusCode::OK,
                &json!({
                    "major": "1",
                    "minor": self.info.minor.to_string(),
                    "gitVersion": format!("v1.{}.0-kubelan-lab", self.info.minor),
                    "gitCommit": "0000000000000000000000000000000000000000",
                    "gitTreeState": "clean",
                    "buildDate": "2026-01-01T00:00:00Z",
                    "goVersion": "n/a (kubelan API simulator)",
                    "compiler": "rustc",
                    "platform": "linux/amd64",
                }),
            )),
            "/openapi/v2" => {
                let accept = headers
                    .get(header::ACCEPT)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if accept.contains(discovery::OPENAPI_V2_PROTOBUF) {
                    let mut r =
                        Response::new(full(discovery::openapi_v2_protobuf(self.info.minor)));
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        // Go's MIME parser refuses the `@` of the requested type, so the
                        // body goes back as plain bytes, as the API server's handler does.
                        header::HeaderValue::from_static("application/octet-stream"),
                    );
                    Ok(r)
                } else {
                    Ok(json_response(
                        StatusCode::OK,
                        &discovery::openapi_v2_json(self.info.minor),
                    ))
                }
            }
            "/openapi/v3" | "/openapi/v3/" => Ok(json_response(
                StatusCode::OK,
                &discovery::openapi_v3_root(self.info.minor),
            )),
            p if p.starts_with("/openapi/v3/") => {
                let rest = &p["/openapi/v3/".len()..];
                let doc = match rest.split('/').collect::<Vec<_>>().as_slice() {
                    ["api", v] => discovery::openapi_v3_doc("", v, self.info.minor),
                    ["apis", g, v] => discovery::openapi_v3_doc(g, v, self.info.minor),
                    _ => None,
                };
                doc.map(|d| json_response(StatusCode::OK, &d))
                    .ok_or_else(|| ApiError::no_route(path))
            }
            _ => Err(ApiError::no_route(path)),
        }
    }

    /// Refuses (403) unless `user` may `verb` the object `name` of `res` in `ns`.
    fn require(
        &self,
        user: &UserInfo,
        verb: &str,
        res: &ResourceInfo,
        ns: &str,
        name: &str,
    ) -> ApiResult<()> {
        let attrs = Attributes {
            verb: verb.into(),
            group: res.group.into(),
            resource: res.plural.into(),
            namespace: if res.namespaced {
                ns.into()
            } else {
                String::new()
            },
            name: name.into(),
            ..Attributes::default()
        };
        if auth::authorize(&self.store, user, &attrs).0 {
            Ok(())
        } else {
            Err(forbidden(user, &attrs))
        }
    }

    fn review(
        &self,
        res: &'static ResourceInfo,
        mut obj: Value,
        user: &UserInfo,
    ) -> ApiResult<Response<Body>> {
        match res.kind {
            "SelfSubjectAccessReview" => {
                let attrs = if let Some(ra) = obj.pointer("/spec/resourceAttributes") {
                    Attributes {
                        verb: meta::str_at(ra, &["verb"]).into(),
                        group: meta::str_at(ra, &["group"]).into(),
                        resource: meta::str_at(ra, &["resource"]).into(),
                        subresource: meta::str_at(ra, &["subresource"]).into(),
                        namespace: meta::str_at(ra, &["namespace"]).into(),
                        name: meta::str_at(ra, &["name"]).into(),
                        path: None,
                    }
                } else if let Some(nra) = obj.pointer("/spec/nonResourceAttributes") {
                    Attributes {
                        verb: meta::str_at(nra, &["verb"]).into(),
                        path: Some(meta::str_at(nra, &["path"]).into()),
                        ..Attributes::default()
                    }
                } else {
                    return Err(ApiError::invalid(
                        res.kind,
                        "",
                        vec![crate::error::FieldError::required(
                            "spec.resourceAttributes",
                            "exactly one of nonResourceAttributes or resourceAttributes must be specified",
                        )],
                    ));
                };
                let (allowed, reason) = auth::authorize(&self.store, user, &attrs);
                obj["status"] = json!({"allowed": allowed, "reason": reason});
                if !allowed {
                    obj["status"]["denied"] = json!(false);
                }
            }
            "SelfSubjectRulesReview" => {
                let ns = meta::str_at(&obj, &["spec", "namespace"]).to_string();
                let (resource_rules, non_resource_rules) = auth::rules_for(&self.store, user, &ns);
                obj["status"] = json!({
                    "resourceRules": resource_rules,
                    "nonResourceRules": non_resource_rules,
                    "incomplete": false,
                });
            }
            "SelfSubjectReview" => {
                obj["status"] = json!({"userInfo": {"username": user.name, "groups": user.groups}});
            }
            _ => return Err(ApiError::method_not_allowed("not a review resource")),
        }
        meta::set_at(&mut obj, &["metadata", "creationTimestamp"], Value::Null);
        Ok(json_response(
            StatusCode::CREATED,
            &with_type_meta(res, obj),
        ))
    }
}
