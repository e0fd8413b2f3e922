//! The HTTP proxy side (hyper): `CONNECT` tunnels and absolute-URI forwarding.
//!
//! A client connection may send requests for different hosts one after another; each
//! is forwarded over an HTTP/1.1 connection on a flow to its host. The last upstream
//! connection is kept and reused while requests go to the same host.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::client::{Counted, FlowGuard, ResetUnlessDone};
use crate::limiter::LoginOutcome;
use crate::pending::Handshake;
use crate::shared::Shared;
use crate::{ErrorKind, FlowError, Target};

type Body = Either<Incoming, Full<Bytes>>;

/// How long to wait for a kept upstream connection to accept the next request.
const UPSTREAM_READY_WAIT: Duration = Duration::from_secs(5);

const ORIGIN_FORM_HINT: &str = "kubelan proxy: this port is a proxy, not a web server.\n\
     Configure it as your HTTP proxy (curl -x http://HOST:PORT http://web.default.svc/) \
     or as a SOCKS5 proxy (curl --socks5-hostname HOST:PORT ...).\n";

/// One client connection's state, shared by its requests.
struct ClientConn {
    shared: Arc<Shared>,
    peer: SocketAddr,
    cancel: CancellationToken,
    /// The last upstream connection, kept for the next request to the same target.
    upstream: Mutex<Option<(Target, SendRequest<Incoming>)>>,
    /// The source's handshake slot, held until the first request head is read.
    handshake: Mutex<Option<Handshake>>,
}

pub(crate) async fn serve_http(
    shared: Arc<Shared>,
    client: Counted<TcpStream>,
    peer: SocketAddr,
    handshake: Handshake,
    cancel: CancellationToken,
) {
    let timeout = shared.config.handshake_timeout;
    let conn_state = Arc::new(ClientConn {
        shared,
        peer,
        cancel: cancel.clone(),
        upstream: Mutex::new(None),
        handshake: Mutex::new(Some(handshake)),
    });
    let service = hyper::service::service_fn(move |req| {
        let conn_state = conn_state.clone();
        async move { Ok::<_, Infallible>(handle(conn_state, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .serve_connection(TokioIo::new(client), service)
        .with_upgrades();
    tokio::select! {
        r = conn => if let Err(e) = r {
            debug!(%peer, "HTTP proxy client connection ended: {e}");
        },
        _ = cancel.cancelled() => {}
    }
}

async fn handle(conn: Arc<ClientConn>, req: Request<Incoming>) -> Response<Body> {
    // A request head arrived: the handshake is over.
    drop(
        conn.handshake
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(),
    );
    if conn.shared.config.auth.is_some() {
        match req.headers().get(header::PROXY_AUTHORIZATION) {
            // No credentials tried (browsers ask first): not a guess, not throttled —
            // unless the source is already blocked.
            None if conn.shared.admit(conn.peer) => {
                conn.shared.counters.auth_failure();
                debug!(peer = %conn.peer, "HTTP proxy: no Proxy-Authorization header; answering 407");
                return auth_required();
            }
            None => return throttled(),
            Some(presented) => {
                let value = presented.as_bytes();
                let user = crate::auth::basic_username(value);
                match conn
                    .shared
                    .login(conn.peer, &user, |c| c.matches_basic(value))
                {
                    LoginOutcome::Accepted => {}
                    LoginOutcome::Rejected { hold, .. } => {
                        conn.shared.hold_failure(hold).await;
                        return auth_required();
                    }
                    LoginOutcome::Throttled { .. } => return throttled(),
                }
            }
        }
    }
    if req.method() == Method::CONNECT {
        tunnel(conn, req).await
    } else {
        forward(conn, req).await
    }
}

/// `CONNECT host:port`: open the flow, answer 200, then splice the upgraded connection.
async fn tunnel(conn: Arc<ClientConn>, req: Request<Incoming>) -> Response<Body> {
    let Some(authority) = req.uri().authority() else {
        return text(
            StatusCode::BAD_REQUEST,
            "kubelan proxy: CONNECT needs host:port, e.g. CONNECT web.default.svc:443\n",
        );
    };
    let Some(port) = authority.port_u16() else {
        return text(
            StatusCode::BAD_REQUEST,
            "kubelan proxy: CONNECT needs a port (host:port)\n",
        );
    };
    let target = Target::from_host(authority.host(), port);
    let mut flow = match conn.shared.connector.connect(target.clone()).await {
        Ok(flow) => flow,
        Err(e) => return flow_error(&conn, &target, &e),
    };
    let guard = FlowGuard::new(conn.shared.clone());
    let (peer, cancel) = (conn.peer, conn.cancel.clone());
    tokio::spawn(async move {
        let splice = async {
            let upgraded = match hyper::upgrade::on(req).await {
                Ok(u) => u,
                Err(e) => return debug!(%peer, %target, "HTTP CONNECT upgrade failed: {e}"),
            };
            // Back to the client's own socket (and the bytes hyper read past the
            // request): the relay then writes to the kernel socket directly.
            let client = match upgraded.downcast::<TokioIo<Counted<TcpStream>>>() {
                Ok(parts) => {
                    let mut client = parts.io.into_inner();
                    if !parts.read_buf.is_empty() {
                        client.unread(parts.read_buf.to_vec());
                    }
                    client
                }
                Err(_) => {
                    return warn!(%peer, %target, "HTTP CONNECT: upgraded connection of an unexpected type; closing");
                }
            };
            match ResetUnlessDone::new(client).relay(&mut flow).await {
                Ok((up, down)) => debug!(%peer, %target, up, down, "HTTP CONNECT flow closed"),
                Err(e) => debug!(%peer, %target, "HTTP CONNECT flow cut, client reset: {e}"),
            }
        };
        tokio::select! {
            _ = splice => {}
            _ = cancel.cancelled() => {}
        }
        drop(guard);
    });
    let mut resp = Response::new(Either::Right(Full::new(Bytes::new())));
    resp.extensions_mut()
        .insert(hyper::ext::ReasonPhrase::from_static(
            b"Connection established",
        ));
    resp
}

/// An absolute-URI request: forward it in origin form to its host.
async fn forward(conn: Arc<ClientConn>, mut req: Request<Incoming>) -> Response<Body> {
    let uri = req.uri().clone();
    match uri.scheme_str() {
        Some("http") => {}
        None => return text(StatusCode::BAD_REQUEST, ORIGIN_FORM_HINT),
        Some("https") => {
            return text(
                StatusCode::BAD_REQUEST,
                "kubelan proxy: https:// URLs go through a tunnel: the client must use CONNECT \
                 (curl and browsers do this by themselves with an HTTP proxy)\n",
            );
        }
        Some(other) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!(
                    "kubelan proxy: cannot proxy {other}:// URLs, only http:// (and CONNECT)\n"
                ),
            );
        }
    }
    let Some(authority) = uri.authority() else {
        return text(
            StatusCode::BAD_REQUEST,
            "kubelan proxy: the URL has no host\n",
        );
    };
    let port = authority.port_u16().unwrap_or(80);
    let target = Target::from_host(authority.host(), port);
    let host_header = match authority.port() {
        Some(p) => format!("{}:{}", authority.host(), p.as_str()),
        None => authority.host().to_string(),
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let (Ok(origin), Ok(host_value)) = (path.parse::<Uri>(), HeaderValue::from_str(&host_header))
    else {
        return text(StatusCode::BAD_REQUEST, "kubelan proxy: malformed URL\n");
    };
    *req.uri_mut() = origin;
    *req.version_mut() = Version::HTTP_11;
    strip_hop_by_hop(req.headers_mut());
    req.headers_mut().insert(header::HOST, host_value);

    let mut sender = match upstream(&conn, &target).await {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    match sender.send_request(req).await {
        Ok(mut resp) => {
            *conn.upstream.lock().unwrap_or_else(|p| p.into_inner()) = Some((target, sender));
            strip_hop_by_hop(resp.headers_mut());
            resp.map(Either::Left)
        }
        Err(e) => {
            info!(peer = %conn.peer, %target, "HTTP proxy: upstream request failed: {e}");
            text(
                StatusCode::BAD_GATEWAY,
                format!("kubelan proxy: {target} did not answer the request: {e}\n"),
            )
        }
    }
}

/// The kept upstream connection if it goes to `target` and is free, else a new one.
async fn upstream(
    conn: &ClientConn,
    target: &Target,
) -> Result<SendRequest<Incoming>, Response<Body>> {
    let kept = conn
        .upstream
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    if let Some((kept_target, mut sender)) = kept
        && kept_target == *target
        && matches!(
            tokio::time::timeout(UPSTREAM_READY_WAIT, sender.ready()).await,
            Ok(Ok(()))
        )
    {
        return Ok(sender);
    }
    let flow = match conn.shared.connector.connect(target.clone()).await {
        Ok(flow) => flow,
        Err(e) => return Err(flow_error(conn, target, &e)),
    };
    let guard = FlowGuard::new(conn.shared.clone());
    let (sender, connection) = match hyper::client::conn::http1::handshake(TokioIo::new(flow)).await
    {
        Ok(v) => v,
        Err(e) => {
            return Err(text(
                StatusCode::BAD_GATEWAY,
                format!("kubelan proxy: HTTP handshake with {target} failed: {e}\n"),
            ));
        }
    };
    let (peer, cancel, target) = (conn.peer, conn.cancel.clone(), target.clone());
    tokio::spawn(async move {
        tokio::select! {
            r = connection => if let Err(e) = r {
                debug!(%peer, %target, "HTTP upstream connection ended: {e}");
            },
            _ = cancel.cancelled() => {}
        }
        drop(guard);
    });
    Ok(sender)
}

/// Removes hop-by-hop headers (RFC 9110 7.6.1), the ones `Connection` names, and every
/// `Proxy-*` header.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        HeaderName::from_static("keep-alive"),
    ] {
        headers.remove(name);
    }
    let proxy: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for name in proxy {
        headers.remove(name);
    }
}

/// The response for a flow that could not be opened.
fn flow_error(conn: &ClientConn, target: &Target, e: &FlowError) -> Response<Body> {
    conn.shared.counters.flow_error(e.kind);
    info!(peer = %conn.peer, %target, "HTTP proxy: cannot reach the target: {e}");
    let (status, what) = match e.kind {
        ErrorKind::Policy => (
            StatusCode::FORBIDDEN,
            "refused by the agent's destination policy",
        ),
        ErrorKind::NoSuchHost => (StatusCode::BAD_GATEWAY, "no such host in the cluster"),
        ErrorKind::ConnectionRefused => (StatusCode::BAD_GATEWAY, "connection refused"),
        ErrorKind::Timeout => (StatusCode::GATEWAY_TIMEOUT, "timed out"),
        ErrorKind::Unreachable => (StatusCode::BAD_GATEWAY, "unreachable"),
        ErrorKind::CarrierLost => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the tunnel to the cluster is down (reconnecting; retry)",
        ),
        _ => (StatusCode::BAD_GATEWAY, "failed"),
    };
    let detail = if e.message.is_empty() {
        String::new()
    } else {
        format!(" ({})", e.message)
    };
    text(status, format!("kubelan proxy: {what}: {target}{detail}\n"))
}

/// 407 with the challenge clients answer with Basic credentials.
fn auth_required() -> Response<Body> {
    let mut resp = text(
        StatusCode::PROXY_AUTHENTICATION_REQUIRED,
        "kubelan proxy: credentials required (curl: --proxy-user USER:PASSWORD)\n",
    );
    resp.headers_mut().insert(
        header::PROXY_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"kubelan\""),
    );
    resp
}

/// 429 for a source blocked after failed logins; the connection is closed after it.
fn throttled() -> Response<Body> {
    let mut resp = text(
        StatusCode::TOO_MANY_REQUESTS,
        "kubelan proxy: too many failed logins from this address; try again later\n",
    );
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Either::Right(Full::new(body.into())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_stripped() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic abc"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("accept", "*/*"),
            ("content-length", "3"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept", "content-length"]);
    }
}
