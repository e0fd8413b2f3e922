//! The HTTP client under every [`kube::Client`] kubelan builds for a user: kube-rs' own
//! stack, with `TCP_NODELAY` on the sockets to the API server.
//!
//! kube-rs (`kube-client` 5, `client/builder.rs`) connects with hyper-util's
//! `HttpConnector::new()`, which leaves Nagle's algorithm on. Requests do not mind, but a
//! port-forward WebSocket does: a small message written while an earlier segment is still
//! unacknowledged waits for that ACK, and the API server delays its ACKs by up to 40 ms.
//! Every carrier and `kubelan forward` connection runs over such a WebSocket: on the
//! lab, 1 % of `kubelan expose`'s requests through a port-forward carrier waited ~45 ms
//! for that ACK (p99 45 ms; 0.5 ms with `TCP_NODELAY`, `docs/benchmarks.md`).
//!
//! kube-rs offers no switch for it, so the client is assembled here from the same public
//! parts, in the same order: kube's TLS connector (certificates, exec identities, CA
//! reloading, `tls-server-name`), its connect/read/write timeouts, base URI, retry, auth,
//! extra-header and tracing layers (a failed request is logged at ERROR under kube-rs'
//! target, which the CLI silences unless `-v`). What is left out: the client's
//! `valid_until` (the expiry of an exec plugin's client certificate, which kubelan does not
//! read). A kubeconfig with a `proxy-url` goes to kube-rs unchanged, which refuses
//! it (kubelan is built without kube's proxy features) with its own message.

use std::time::Duration;

use hyper_timeout::TimeoutConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::ConfigExt;
use kube::client::retry::RetryPolicy;
use tower::retry::RetryLayer;
use tower::{BoxError, ServiceBuilder};
use tower_http::classify::ServerErrorsFailureClass;
use tower_http::trace::TraceLayer;

/// The target of the client's log lines: kube-rs' own, so that every filter that treats
/// them as the Kubernetes client's (quiet unless `-v`) still does.
const LOG_TARGET: &str = "kube_client::client";

/// A client for `config`, like `kube::Client::try_from(config)` but with `TCP_NODELAY` set
/// on its connections.
///
/// # Errors
/// kube-rs' errors for a configuration it cannot use (TLS material, auth, headers, proxy).
pub fn client(config: kube::Config) -> Result<kube::Client, kube::Error> {
    if config.proxy_url.is_some() {
        return kube::Client::try_from(config);
    }
    let https = config.rustls_https_connector_with_connector(tcp_connector())?;
    let mut timed = TimeoutConnector::new(https);
    timed.set_connect_timeout(config.connect_timeout);
    timed.set_read_timeout(config.read_timeout);
    timed.set_write_timeout(config.write_timeout);
    timed.set_reset_reader_on_write(config.reset_reader_on_write);
    let hyper: hyper_util::client::legacy::Client<_, kube::client::Body> =
        hyper_util::client::legacy::Builder::new(TokioExecutor::new()).build(timed);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(
            config
                .default_retry
                .then(|| RetryLayer::new(RetryPolicy::server_retry())),
        )
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &http::Request<kube::client::Body>| {
                    tracing::debug_span!(
                        target: LOG_TARGET,
                        "HTTP",
                        http.method = %req.method(),
                        http.url = %req.uri()
                    )
                })
                .on_request(())
                .on_response(())
                .on_body_chunk(())
                .on_eos(())
                .on_failure(
                    |class: ServerErrorsFailureClass, _: Duration, _: &tracing::Span| match class {
                        ServerErrorsFailureClass::StatusCode(status) => {
                            tracing::error!(target: LOG_TARGET, "failed with status {status}");
                        }
                        ServerErrorsFailureClass::Error(e) => {
                            tracing::error!(target: LOG_TARGET, "failed with error {e}");
                        }
                    },
                ),
        )
        .map_err(BoxError::from)
        .service(hyper);
    Ok(kube::Client::new(service, config.default_namespace))
}

/// The TCP connector under TLS: kube-rs' settings plus `TCP_NODELAY`.
fn tcp_connector() -> HttpConnector {
    let mut http = HttpConnector::new();
    // https:// URIs are handled by the TLS connector around this one.
    http.enforce_http(false);
    http.set_nodelay(true);
    http
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tower::ServiceExt;

    /// The connector the client is built on hands out sockets with `TCP_NODELAY`.
    #[tokio::test]
    async fn sockets_have_nodelay() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri = format!("https://{}", listener.local_addr().unwrap());
        let io = tcp_connector().oneshot(uri.parse().unwrap()).await.unwrap();
        assert!(io.inner().nodelay().unwrap(), "TCP_NODELAY is off");
    }

    /// The assembled client sends requests to the configured server with its credentials.
    #[tokio::test]
    async fn requests_carry_base_uri_and_auth() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0);
                got.extend_from_slice(&buf[..n]);
            }
            let body = br#"{"major":"1","minor":"33"}"#;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            s.write_all(head.as_bytes()).await.unwrap();
            s.write_all(body).await.unwrap();
            String::from_utf8_lossy(&got).into_owned()
        });
        let mut config = kube::Config::new(format!("http://{addr}/prefix").parse().unwrap());
        config.auth_info.token = Some("secret-token".to_string().into());
        let client = client(config).unwrap();
        let req = http::Request::get("/version").body(Vec::new()).unwrap();
        let v: serde_json::Value = client.request(req).await.unwrap();
        assert_eq!(v["minor"], "33");
        let request = server.await.unwrap();
        assert!(request.starts_with("GET /prefix/version "), "{request}");
        assert!(
            request
                .to_ascii_lowercase()
                .contains("authorization: bearer secret-token"),
            "{request}"
        );
    }
}
