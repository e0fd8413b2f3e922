//! Response bodies and the responses built from them.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::resources::ResourceInfo;
use crate::store::DeleteOptions;

/// Response body type.
pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// An empty response body.
pub(crate) fn empty_body() -> Body {
    full(Bytes::new())
}

pub(super) fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

pub(super) fn json_response(code: StatusCode, v: &Value) -> Response<Body> {
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
pub(super) fn add_propagation_warning(
    resp: &mut Response<Body>,
    res: &ResourceInfo,
    opts: &DeleteOptions,
) {
    if opts.propagation_policy.is_none()
        && let Some(w) = crate::store::default_propagation_warning(res)
    {
        add_warning(resp, w);
    }
}

pub(super) fn error_response(e: &ApiError) -> Response<Body> {
    json_response(
        StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &e.to_status(),
    )
}

pub(super) fn channel_body(rx: mpsc::Receiver<Bytes>) -> Body {
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::io::Error>(Frame::data(b)), rx))
    });
    StreamBody::new(stream).boxed_unsync()
}
