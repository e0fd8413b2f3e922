//! The HTTPS front end: routing, authentication, authorization, list/watch streaming,
//! subresources, and the WebSocket port-forward.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::auth::{self, Attributes, Authenticator, UserInfo};
use crate::error::{ApiError, ApiResult};
use crate::patch::{self, PatchKind};
use crate::resources::{self, ResourceInfo};
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{DeleteOptions, EventKind, Store, Sub, with_type_meta};
use crate::{discovery, escalation, meta, portforward, table};

/// Largest request body accepted (the real API server's limit is 3 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;

/// Response body type.
pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// What the API server needs from the node side: reaching a pod's port and its logs.
pub trait PodBackend: Send + Sync + 'static {
    /// Opens a TCP connection to `port` inside the pod's network namespace.
    fn dial(
        &self,
        namespace: &str,
        pod: &str,
        port: u16,
    ) -> BoxFuture<'static, std::io::Result<TcpStream>>;

    /// The log file of a container (the previous instance's when `previous`).
    fn log_file(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        previous: bool,
    ) -> Option<PathBuf>;
}

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

/// An empty response body.
pub(crate) fn empty_body() -> Body {
    full(Bytes::new())
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

fn json_response(code: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(full(serde_json::to_vec(v).unwrap_or_default()));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

/// Adds a `Warning` header (RFC 7234 form, as the API server sends it).
pub(crate) fn add_warning(resp: &mut Response<Body>, text: &str) {
    // The text is an RFC 7230 quoted-string: backslash and quote are escaped.
    let escaped = text.replace('\\', "\\\\").replace('"', "\\\"");
    let v = format!("299 - \"{escaped}\"");
    if let Ok(v) = header::HeaderValue::from_str(&v) {
        resp.headers_mut().append(header::WARNING, v);
    }
}

/// Warns that a DELETE without a propagation policy orphans a Job's pods.
fn add_propagation_warning(resp: &mut Response<Body>, res: &ResourceInfo, opts: &DeleteOptions) {
    if opts.propagation_policy.is_none()
        && let Some(w) = crate::store::default_propagation_warning(res)
    {
        add_warning(resp, w);
    }
}

fn error_response(e: &ApiError) -> Response<Body> {
    json_response(
        StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &e.to_status(),
    )
}

/// Parsed query string (last value wins; `ports` keeps all).
#[derive(Debug, Default)]
struct Query {
    params: HashMap<String, String>,
    ports: Vec<String>,
}

impl Query {
    fn parse(q: Option<&str>) -> Self {
        let mut out = Self::default();
        for pair in q.unwrap_or("").split('&').filter(|s| !s.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = percent_decode(k);
            let v = percent_decode(v);
            if k == "ports" {
                out.ports.extend(v.split(',').map(str::to_string));
            }
            out.params.insert(k, v);
        }
        out
    }

    fn get(&self, k: &str) -> Option<&str> {
        self.params.get(k).map(String::as_str)
    }

    fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1"))
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where a request goes.
#[derive(Debug)]
enum Route {
    NonResource(String),
    ApiVersions,
    Resources(String, String),
    Groups,
    Group(String),
    Object {
        res: &'static ResourceInfo,
        ns: String,
        name: String,
        sub: String,
    },
    Collection {
        res: &'static ResourceInfo,
        ns: Option<String>,
    },
}

fn route(path: &str) -> ApiResult<Route> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        ["api"] => Ok(Route::ApiVersions),
        ["api", v] => Ok(Route::Resources(String::new(), v.to_string())),
        ["api", v, rest @ ..] => resource_route("", v, rest, path),
        ["apis"] => Ok(Route::Groups),
        ["apis", g] => Ok(Route::Group(g.to_string())),
        ["apis", g, v] => Ok(Route::Resources(g.to_string(), v.to_string())),
        ["apis", g, v, rest @ ..] => resource_route(g, v, rest, path),
        _ => Ok(Route::NonResource(path.to_string())),
    }
}

fn resource_route(group: &str, version: &str, rest: &[&str], path: &str) -> ApiResult<Route> {
    let find = |plural: &str| {
        resources::find(group, version, plural).ok_or_else(|| ApiError::no_route(path))
    };
    let ns_res = resources::find("", "v1", "namespaces").expect("namespaces resource");
    let namespace_sub =
        group.is_empty() && rest.len() == 3 && ns_res.subresources.contains(&rest[2]);
    match rest {
        ["namespaces", ns, plural, tail @ ..] if !namespace_sub => {
            let res = find(plural)?;
            if !res.namespaced {
                return Err(ApiError::no_route(path));
            }
            match tail {
                [] => Ok(Route::Collection {
                    res,
                    ns: Some(ns.to_string()),
                }),
                [name] => Ok(Route::Object {
                    res,
                    ns: ns.to_string(),
                    name: name.to_string(),
                    sub: String::new(),
                }),
                [name, sub] => Ok(Route::Object {
                    res,
                    ns: ns.to_string(),
                    name: name.to_string(),
                    sub: sub.to_string(),
                }),
                _ => Err(ApiError::no_route(path)),
            }
        }
        [plural] => Ok(Route::Collection {
            res: find(plural)?,
            ns: None,
        }),
        [plural, name] => {
            let res = find(plural)?;
            if res.namespaced {
                return Err(ApiError::no_route(path));
            }
            Ok(Route::Object {
                res,
                ns: String::new(),
                name: name.to_string(),
                sub: String::new(),
            })
        }
        [plural, name, sub] => {
            let res = find(plural)?;
            if res.namespaced {
                return Err(ApiError::no_route(path));
            }
            Ok(Route::Object {
                res,
                ns: String::new(),
                name: name.to_string(),
                sub: sub.to_string(),
            })
        }
        _ => Err(ApiError::no_route(path)),
    }
}

fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| {
            a.split(',')
                .next()
                .is_some_and(|first| first.contains("as=Table"))
        })
}

/// The name a list or watch is restricted to by `fieldSelector=metadata.name=<name>`, which
/// upstream authorizes like a request for that name (so `resourceNames` rules apply); empty
/// when there is none, the selector does not parse, or the name is not a valid path segment.
fn name_from_field_selector(selector: &str) -> String {
    FieldSelector::parse(selector)
        .ok()
        .and_then(|s| s.exact_match("metadata.name").map(str::to_string))
        .filter(|n| !matches!(n.as_str(), "." | "..") && !n.contains(['/', '%']))
        .unwrap_or_default()
}

/// The RBAC authorizer's refusal of `attrs` for `user`.
fn forbidden(user: &UserInfo, attrs: &Attributes) -> ApiError {
    match &attrs.path {
        Some(p) => ApiError::forbidden_msg(format!(
            "forbidden: User \"{}\" cannot {} path \"{p}\"",
            user.name, attrs.verb
        )),
        None => ApiError::forbidden(
            &user.name,
            &attrs.verb,
            &attrs.resource_with_sub(),
            &attrs.group,
            (!attrs.namespace.is_empty()).then_some(attrs.namespace.as_str()),
            (!attrs.name.is_empty()).then_some(attrs.name.as_str()),
        ),
    }
}

fn verb_for(method: &Method, route: &Route, q: &Query) -> &'static str {
    match (method, route) {
        (&Method::GET, Route::Collection { .. }) if q.flag("watch") => "watch",
        (&Method::GET, Route::Collection { .. }) => "list",
        // A watch of one object by its URL is authorized as `get`, as upstream (only a
        // request without a name becomes list or watch).
        (&Method::GET, Route::Object { sub, .. }) if sub == "portforward" || sub == "exec" => {
            "create"
        }
        (&Method::GET, _) | (&Method::HEAD, _) => "get",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, Route::Collection { .. }) => "deletecollection",
        (&Method::DELETE, _) => "delete",
        _ => "unknown",
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
            Route::NonResource(p) => self.non_resource(&p),
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

    fn non_resource(&self, path: &str) -> ApiResult<Response<Body>> {
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

    async fn read_body(req: Request<Incoming>) -> ApiResult<(Bytes, String)> {
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

    fn decode(body: &[u8], ct: &str) -> ApiResult<Value> {
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

    fn selectors(q: &Query) -> ApiResult<(LabelSelector, FieldSelector)> {
        let labels = LabelSelector::parse(q.get("labelSelector").unwrap_or(""))
            .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
        let fields = FieldSelector::parse(q.get("fieldSelector").unwrap_or(""))
            .map_err(|e| ApiError::bad_request(format!("invalid field selector: {e}")))?;
        Ok((labels, fields))
    }

    fn delete_options(q: &Query, body: &[u8]) -> ApiResult<DeleteOptions> {
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

    async fn collection(
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

    #[allow(clippy::too_many_arguments)]
    async fn object(
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
    fn pod_security_warnings(
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

    async fn patch_body(req: Request<Incoming>) -> ApiResult<(PatchKind, Value)> {
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

    async fn logs(&self, ns: &str, name: &str, q: &Query) -> ApiResult<Response<Body>> {
        let pods = resources::find("", "v1", "pods").expect("pods resource");
        let pod = self.store.get(pods, ns, name)?;
        let containers: Vec<String> = pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|c| meta::str_at(c, &["name"]).to_string())
                    .collect()
            })
            .unwrap_or_default();
        let container = match q.get("container") {
            Some(c) if !c.is_empty() => {
                if !containers.iter().any(|x| x == c) {
                    return Err(ApiError::bad_request(format!(
                        "container {c} is not valid for pod {name}"
                    )));
                }
                c.to_string()
            }
            _ if containers.len() == 1 => containers[0].clone(),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    containers.join(" ")
                )));
            }
        };
        let file = self
            .backend
            .log_file(ns, name, &container, q.flag("previous"))
            .ok_or_else(|| ApiError::bad_request(format!("container \"{container}\" in pod \"{name}\" is waiting to start: ContainerCreating")))?;
        let text = tokio::fs::read(&file).await.unwrap_or_default();
        let mut start = 0;
        if let Some(n) = q.get("tailLines").and_then(|s| s.parse::<usize>().ok()) {
            let mut seen = 0;
            for (i, b) in text.iter().enumerate().rev() {
                if *b == b'\n' && i + 1 < text.len() {
                    seen += 1;
                    if seen == n {
                        start = i + 1;
                        break;
                    }
                }
            }
        }
        let head = Bytes::from(text[start..].to_vec());
        if !q.flag("follow") {
            let mut r = Response::new(full(head));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain"),
            );
            return Ok(r);
        }
        // Follow: poll the file for appended bytes until the client goes away or the pod
        // is gone.
        let (tx, rx) = mpsc::channel::<Bytes>(16);
        let store = self.store.clone();
        let (ns, name, uid) = (
            ns.to_string(),
            name.to_string(),
            meta::uid(&pod).to_string(),
        );
        let mut offset = text.len() as u64;
        tokio::spawn(async move {
            if !head.is_empty() && tx.send(head).await.is_err() {
                return;
            }
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                if let Ok(data) = tokio::fs::read(&file).await
                    && (data.len() as u64) > offset
                {
                    let chunk = Bytes::from(data[offset as usize..].to_vec());
                    offset = data.len() as u64;
                    if tx.send(chunk).await.is_err() {
                        return;
                    }
                }
                let alive = store
                    .get(pods, &ns, &name)
                    .is_ok_and(|p| meta::uid(&p) == uid);
                if !alive || tx.is_closed() {
                    return;
                }
            }
        });
        let mut r = Response::new(channel_body(rx));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain"),
        );
        Ok(r)
    }

    fn watch(
        &self,
        res: &'static ResourceInfo,
        ns: Option<String>,
        labels: LabelSelector,
        fields: FieldSelector,
        q: &Query,
        table: bool,
    ) -> Response<Body> {
        let (tx, rx) = mpsc::channel::<Bytes>(256);
        let store = self.store.clone();
        let rv_param = q.get("resourceVersion").unwrap_or("").to_string();
        let send_initial = q.flag("sendInitialEvents");
        let bookmarks = q.flag("allowWatchBookmarks");
        let timeout = q
            .get("timeoutSeconds")
            .and_then(|s| s.parse::<u64>().ok())
            .map(Duration::from_secs)
            .unwrap_or(Duration::from_secs(1800));
        let include = table::parse_include_object(q.get("includeObject"));
        tokio::spawn(async move {
            let w = Watcher {
                res,
                ns,
                labels,
                fields,
                table,
                include,
                first_table: true,
            };
            w.run(store, tx, rv_param, send_initial, bookmarks, timeout)
                .await;
        });
        let mut r = Response::new(channel_body(rx));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        r
    }
}

fn channel_body(rx: mpsc::Receiver<Bytes>) -> Body {
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::io::Error>(Frame::data(b)), rx))
    });
    StreamBody::new(stream).boxed_unsync()
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

/// One watch request's filter and encoding.
struct Watcher {
    res: &'static ResourceInfo,
    ns: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    table: bool,
    include: table::IncludeObject,
    first_table: bool,
}

impl Watcher {
    fn matches(&self, obj: &Value) -> bool {
        self.labels.matches_object(obj) && self.fields.matches(obj)
    }

    fn in_scope(&self, ev_res: &ResourceInfo, obj: &Value) -> bool {
        ev_res.plural == self.res.plural
            && ev_res.group == self.res.group
            && self.ns.as_deref().is_none_or(|n| meta::namespace(obj) == n)
    }

    fn encode(&mut self, kind: &str, obj: &Value) -> Bytes {
        let object = if self.table {
            let rv = meta::str_at(obj, &["metadata", "resourceVersion"]).to_string();
            let mut t = table::to_table(
                self.res.kind,
                std::slice::from_ref(obj),
                time::OffsetDateTime::now_utc(),
                self.include,
                &rv,
            );
            if !self.first_table
                && let Some(o) = t.as_object_mut()
            {
                o.remove("columnDefinitions");
            }
            self.first_table = false;
            t
        } else {
            with_type_meta(self.res, obj.clone())
        };
        let mut line =
            serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
        line.push(b'\n');
        Bytes::from(line)
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut md = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            md["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let mut line = serde_json::to_vec(&json!({
            "type": "BOOKMARK",
            "object": {"kind": self.res.kind, "apiVersion": self.res.api_version(), "metadata": md},
        }))
        .unwrap_or_default();
        line.push(b'\n');
        Bytes::from(line)
    }

    async fn run(
        mut self,
        store: Arc<Store>,
        tx: mpsc::Sender<Bytes>,
        rv_param: String,
        send_initial: bool,
        bookmarks: bool,
        timeout: Duration,
    ) {
        let mut rx = store.subscribe();
        let explicit_rv = rv_param.parse::<u64>().ok().filter(|v| *v > 0);
        let mut last_rv;
        if send_initial || explicit_rv.is_none() {
            let (items, rv) = store.list(self.res, self.ns.as_deref(), &self.labels, &self.fields);
            last_rv = rv;
            for o in &items {
                let line = self.encode("ADDED", o);
                if tx.send(line).await.is_err() {
                    return;
                }
            }
            if send_initial {
                let _ = tx.send(self.bookmark(rv, true)).await;
            }
        } else {
            let from = explicit_rv.unwrap_or(0);
            match store.events_since(from) {
                Err(e) => {
                    let mut line =
                        serde_json::to_vec(&json!({"type": "ERROR", "object": e.to_status()}))
                            .unwrap_or_default();
                    line.push(b'\n');
                    let _ = tx.send(Bytes::from(line)).await;
                    return;
                }
                Ok((backlog, now)) => {
                    last_rv = now.max(from);
                    for ev in backlog {
                        if let Some(line) = self.event_line(&ev)
                            && tx.send(line).await.is_err()
                        {
                            return;
                        }
                    }
                }
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                _ = tick.tick(), if bookmarks => {
                    if tx.send(self.bookmark(last_rv, false)).await.is_err() {
                        return;
                    }
                }
                ev = rx.recv() => match ev {
                    Ok(ev) => {
                        if ev.rv <= last_rv {
                            continue;
                        }
                        last_rv = ev.rv;
                        if let Some(line) = self.event_line(&ev) && tx.send(line).await.is_err() {
                            return;
                        }
                    }
                    // A slow client: end the watch; it resumes from its last version.
                    Err(_) => return,
                },
            }
        }
    }

    fn event_line(&mut self, ev: &crate::store::Event) -> Option<Bytes> {
        if !self.in_scope(ev.res, &ev.object) {
            return None;
        }
        let now = self.matches(&ev.object);
        let before = ev.old.as_ref().is_some_and(|o| self.matches(o));
        let kind = match ev.kind {
            EventKind::Added => now.then_some("ADDED"),
            EventKind::Deleted => now.then_some("DELETED"),
            EventKind::Modified => match (before, now) {
                (true, true) => Some("MODIFIED"),
                (false, true) => Some("ADDED"),
                (true, false) => Some("DELETED"),
                (false, false) => None,
            },
        }?;
        Some(self.encode(kind, &ev.object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_and_watch_by_name_carry_the_name() {
        assert_eq!(name_from_field_selector("metadata.name=web"), "web");
        assert_eq!(
            name_from_field_selector("spec.type=ClusterIP,metadata.name==web"),
            "web"
        );
        for none in [
            "",
            "metadata.name!=web",
            "metadata.namespace=web",
            "metadata.name=..",
            "metadata.name=a/b",
            "metadata.name=a%2f",
            "=broken",
        ] {
            assert_eq!(name_from_field_selector(none), "", "{none}");
        }
        let route = route("/api/v1/namespaces/default/services/web").unwrap();
        let q = Query::parse(Some("watch=true"));
        assert_eq!(verb_for(&Method::GET, &route, &q), "get");
    }

    #[test]
    fn routes() {
        match route("/api/v1/namespaces/default/pods/web-1/portforward").unwrap() {
            Route::Object { res, ns, name, sub } => {
                assert_eq!(
                    (res.plural, ns.as_str(), name.as_str(), sub.as_str()),
                    ("pods", "default", "web-1", "portforward")
                );
            }
            r => panic!("{r:?}"),
        }
        match route("/api/v1/namespaces/default").unwrap() {
            Route::Object { res, name, .. } => {
                assert_eq!((res.plural, name.as_str()), ("namespaces", "default"))
            }
            r => panic!("{r:?}"),
        }
        match route("/api/v1/namespaces/kube-system/finalize").unwrap() {
            Route::Object { res, name, sub, .. } => {
                assert_eq!(
                    (res.plural, name.as_str(), sub.as_str()),
                    ("namespaces", "kube-system", "finalize")
                );
            }
            r => panic!("{r:?}"),
        }
        match route("/apis/apps/v1/deployments").unwrap() {
            Route::Collection { res, ns } => assert_eq!((res.plural, ns), ("deployments", None)),
            r => panic!("{r:?}"),
        }
        match route("/apis/discovery.k8s.io/v1/namespaces/x/endpointslices").unwrap() {
            Route::Collection { res, ns } => {
                assert_eq!((res.plural, ns.as_deref()), ("endpointslices", Some("x")))
            }
            r => panic!("{r:?}"),
        }
        assert!(matches!(route("/version").unwrap(), Route::NonResource(_)));
        assert_eq!(route("/api/v1/nodes/n1/bogus/x").unwrap_err().code, 404);
        assert_eq!(route("/apis/apps/v1/nope").unwrap_err().code, 404);
        assert_eq!(route("/api/v1/pods/x").unwrap_err().code, 404);
    }

    #[test]
    fn query_decoding() {
        let q = Query::parse(Some(
            "labelSelector=app%3Dweb%2Ctier+in+(a)&ports=80&ports=443,8080&watch=1",
        ));
        assert_eq!(q.get("labelSelector"), Some("app=web,tier in (a)"));
        assert_eq!(q.ports, vec!["80", "443", "8080"]);
        assert!(q.flag("watch"));
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
