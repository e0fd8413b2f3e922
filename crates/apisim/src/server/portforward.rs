//! `pods/portforward` over WebSocket, as the kubelet serves it to kube-rs and client-go's
//! WebSocket port-forward: channel-prefixed binary frames (`v4.channel.k8s.io`, or
//! `v5.channel.k8s.io` which adds close signals). Port `i` of the `ports` query uses data
//! channel `2i` and error channel `2i+1`; each channel first carries the port number
//! (little-endian u16). Every port gets one TCP connection into the pod.
//!
//! As with the kubelet and containerd, a connection into the pod that fails (reset, or a
//! write into it fails) is reported on its error channel before the WebSocket closes; one
//! that ends with a FIN just closes it. That is how a client tells a cut stream from one
//! that ended.

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use futures::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use super::backend::PodBackend;
use super::body::{Body, empty_body};
use crate::error::{ApiError, ApiResult};
use crate::meta;

const V4: &str = "v4.channel.k8s.io";
const V5: &str = "v5.channel.k8s.io";
/// v5 close signal: `[255, channel]`.
const CLOSE_SIGNAL: u8 = 255;
/// Largest data frame we send; also bounds the relay's buffer per port.
const CHUNK: usize = 32 * 1024;

/// Answers the upgrade request and starts relaying in the background.
pub(crate) fn handle(
    req: Request<Incoming>,
    pod: Value,
    ports: &[String],
    backend: Arc<dyn PodBackend>,
) -> ApiResult<Response<Body>> {
    let headers = req.headers();
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !upgrade {
        return Err(ApiError::bad_request(
            "kubelan lab: pods/portforward is served over WebSocket (v4.channel.k8s.io / v5.channel.k8s.io, as kube-rs speaks it); SPDY upgrades are not simulated",
        ));
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or_else(|| ApiError::bad_request("missing Sec-WebSocket-Key"))?
        .as_bytes()
        .to_vec();
    let offered: Vec<String> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_string())
        .collect();
    let protocol = if offered.iter().any(|p| p == V5) {
        V5
    } else if offered.iter().any(|p| p == V4) {
        V4
    } else {
        return Err(ApiError::bad_request(format!(
            "unsupported port-forward subprotocol(s) {offered:?}; the lab speaks {V5} and {V4}"
        )));
    };
    let mut port_numbers = Vec::new();
    for p in ports {
        match p.trim().parse::<u16>() {
            Ok(n) if n > 0 => port_numbers.push(n),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "invalid port {p:?}: ports must be numbers between 1 and 65535"
                )));
            }
        }
    }
    if port_numbers.is_empty() {
        return Err(ApiError::bad_request(
            "query parameter \"ports\" is required",
        ));
    }
    if port_numbers.len() > 64 {
        return Err(ApiError::bad_request(
            "at most 64 ports per port-forward request",
        ));
    }
    if meta::str_at(&pod, &["status", "phase"]) != "Running" {
        return Err(ApiError::bad_request(format!(
            "unable to upgrade connection: pod {} is not running",
            meta::name(&pod)
        )));
    }
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
    let ns = meta::namespace(&pod).to_string();
    let name = meta::name(&pod).to_string();
    let uid = meta::uid(&pod).to_string();
    let v5 = protocol == V5;
    tokio::spawn(async move {
        let upgraded = match hyper::upgrade::on(req).await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "port-forward upgrade failed");
                return;
            }
        };
        let io = hyper_util::rt::TokioIo::new(upgraded);
        let mut cfg = WebSocketConfig::default();
        cfg.max_message_size = Some(4 * 1024 * 1024);
        cfg.max_frame_size = Some(4 * 1024 * 1024);
        let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(cfg)).await;
        relay(ws, backend, ns, name, uid, port_numbers, v5).await;
    });
    let mut r = Response::new(empty_body());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(
        header::UPGRADE,
        header::HeaderValue::from_static("websocket"),
    );
    h.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("Upgrade"),
    );
    if let Ok(v) = header::HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    h.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        header::HeaderValue::from_static(if v5 { V5 } else { V4 }),
    );
    Ok(r)
}

/// How the kubelet starts the errors it reports on a port's error channel.
fn forwarding_error_prefix(port: u16, ns: &str, name: &str, uid: &str) -> String {
    format!("error forwarding port {port} to pod {name}_{ns}, uid {uid}")
}

fn frame(ch: u8, data: &[u8]) -> Message {
    let mut b = BytesMut::with_capacity(data.len() + 1);
    b.put_u8(ch);
    b.put_slice(data);
    Message::Binary(b.freeze())
}

enum Out {
    Frame(Message),
    PortDone,
}

async fn relay<S>(
    ws: WebSocketStream<S>,
    backend: Arc<dyn PodBackend>,
    ns: String,
    name: String,
    uid: String,
    ports: Vec<u16>,
    v5: bool,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut stream) = ws.split();
    for (i, p) in ports.iter().enumerate() {
        let le = p.to_le_bytes();
        for ch in [2 * i as u8, 2 * i as u8 + 1] {
            if sink.send(frame(ch, &le)).await.is_err() {
                return;
            }
        }
    }
    let (out_tx, mut out_rx) = mpsc::channel::<Out>(16);
    let mut writers: Vec<Option<tokio::net::tcp::OwnedWriteHalf>> = Vec::new();
    let mut live = 0usize;
    for (i, port) in ports.iter().enumerate() {
        match backend.dial(&ns, &name, *port).await {
            Ok(tcp) => {
                let _ = tcp.set_nodelay(true);
                let (mut rd, wr) = tcp.into_split();
                writers.push(Some(wr));
                live += 1;
                let tx = out_tx.clone();
                let ch = 2 * i as u8;
                let who = forwarding_error_prefix(*port, &ns, &name, &uid);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; CHUNK];
                    loop {
                        match rd.read(&mut buf).await {
                            Ok(0) => break,
                            Ok(n) => {
                                if tx.send(Out::Frame(frame(ch, &buf[..n]))).await.is_err() {
                                    return;
                                }
                            }
                            Err(e) => {
                                let msg = format!(
                                    "{who}: error copying from local connection to remote stream: {e}"
                                );
                                let _ = tx.send(Out::Frame(frame(ch + 1, msg.as_bytes()))).await;
                                break;
                            }
                        }
                    }
                    let _ = tx.send(Out::PortDone).await;
                });
            }
            Err(e) => {
                writers.push(None);
                let who = forwarding_error_prefix(*port, &ns, &name, &uid);
                let msg = format!(
                    "{who}: failed to connect to localhost:{port} inside the pod's network namespace: {e}"
                );
                tracing::info!(pod = %format!("{ns}/{name}"), port, error = %e, "port-forward dial failed");
                if sink
                    .send(frame(2 * i as u8 + 1, msg.as_bytes()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
    drop(out_tx);
    if live == 0 {
        let _ = sink.send(Message::Close(None)).await;
        return;
    }
    loop {
        tokio::select! {
            out = out_rx.recv() => match out {
                Some(Out::Frame(m)) => {
                    if sink.send(m).await.is_err() {
                        break;
                    }
                }
                Some(Out::PortDone) => {
                    live -= 1;
                    if live == 0 {
                        let _ = sink.send(Message::Close(None)).await;
                        break;
                    }
                }
                None => break,
            },
            msg = stream.next() => match msg {
                Some(Ok(Message::Binary(data))) => {
                    let Some((&ch, payload)) = data.split_first() else { continue };
                    if v5 && ch == CLOSE_SIGNAL {
                        if let Some(&closed) = payload.first()
                            && let Some(Some(w)) = writers.get_mut(usize::from(closed) / 2)
                        {
                            let _ = w.shutdown().await;
                        }
                        continue;
                    }
                    if ch % 2 == 1 {
                        continue;
                    }
                    let i = usize::from(ch) / 2;
                    if let Some(Some(w)) = writers.get_mut(i)
                        && let Err(e) = w.write_all(payload).await
                    {
                        writers[i] = None;
                        let who = forwarding_error_prefix(ports[i], &ns, &name, &uid);
                        let msg = format!(
                            "{who}: error copying from remote stream to local connection: {e}"
                        );
                        if sink.send(frame(ch + 1, msg.as_bytes())).await.is_err() {
                            break;
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    for w in writers.iter_mut().flatten() {
                        let _ = w.shutdown().await;
                    }
                    break;
                }
                Some(Ok(_)) => {}
            },
        }
    }
}
