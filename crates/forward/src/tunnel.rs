//! One port-forward WebSocket through the API server, and the relay of one local
//! connection over it.
//!
//! The WebSocket and its channel protocol are the session crate's
//! ([`kubelan_session::portforward`], shared with the port-forward carrier); the request is
//! built there rather than with `Api::portforward`, because that one refuses a port listed
//! twice, which the protocol allows (see [`crate::channel`]) and the tests measure.
//!
//! The relay runs both directions at once (a slow reader on one side never stalls the other)
//! and keeps the WebSocket alive with pings while the connection idles. When the local client
//! finishes sending, v5 servers get a close signal; v4 servers (every kubelet today) cannot be
//! told, so the WebSocket is closed once the pod has been silent for [`LINGER`] since the
//! client's EOF or its own last bytes — about the grace containerd gives a half-closed
//! port-forward stream before it closes the pod connection.
//!
//! Only a clean end from the pod side reaches the local client as a FIN: the WebSocket
//! closed normally with nothing on the error channel (the kubelet closes it that way when
//! the pod's connection ended with a FIN), or a v5 close signal. When the port-forward
//! ends any other way — the kubelet reports an error (the pod's connection was reset, its
//! network namespace went away), the WebSocket or the API server connection breaks, the
//! forward stops — the local connection is reset, so that a close-delimited download
//! never looks complete when it was cut.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use kubelan_session::portforward::normal_close;

use crate::channel::Incoming;

/// How long the pod may stay silent after the local client finished sending before the
/// WebSocket is closed (v4 has no half-close).
pub const LINGER: Duration = Duration::from_secs(1);

/// WebSocket ping period on an open connection: keeps load balancers and NATs between here
/// and the API server from dropping an idle port-forward.
pub const PING_EVERY: Duration = Duration::from_secs(30);

/// How much is read from the local client at once (one WebSocket message).
const READ_CHUNK: usize = kubelan_session::portforward::MAX_PAYLOAD;

pub use kubelan_session::portforward::{PortForward, WsIo};

/// Why a port-forward could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The pod is gone or not running (404, or 400 "not running"): try another pod.
    #[error("pod {pod} is gone or not running: {message}")]
    Gone {
        /// The pod.
        pod: String,
        /// The API server's message.
        message: String,
    },
    /// RBAC refused it.
    #[error(
        "the API server refused the port-forward ({message}); you need `create pods/portforward` in namespace {namespace}: `kubelan rbac forward` prints a role that grants it"
    )]
    Forbidden {
        /// The namespace.
        namespace: String,
        /// The API server's message.
        message: String,
    },
    /// No answer in time.
    #[error("the API server did not answer the port-forward request within {0:?}")]
    Timeout(Duration),
    /// Anything else (network, TLS, the API server's 5xx).
    #[error("port-forward to pod {pod}: {}", kubelan_cluster::error::describe(.source))]
    Other {
        /// The pod.
        pod: String,
        /// kube-rs' error.
        #[source]
        source: kube::Error,
    },
}

/// Opens a port-forward to `port` of `namespace/pod`, listing the port `slots` times (1 for
/// kubelan's own connections).
///
/// # Errors
/// [`OpenError`], classified so callers know whether another pod may do better.
pub async fn open(
    client: &kube::Client,
    namespace: &str,
    pod: &str,
    port: u16,
    slots: usize,
    timeout: Duration,
) -> Result<PortForward, OpenError> {
    match tokio::time::timeout(
        timeout,
        kubelan_session::portforward::upgrade(client, namespace, pod, port, slots),
    )
    .await
    {
        Err(_) => Err(OpenError::Timeout(timeout)),
        Ok(Err(e)) => Err(classify(e, namespace, pod)),
        Ok(Ok(pf)) => Ok(pf),
    }
}

fn classify(e: kube::Error, namespace: &str, pod: &str) -> OpenError {
    match &e {
        kube::Error::Api(s) if s.code == 404 || (s.code == 400 && is_not_running(&s.message)) => {
            OpenError::Gone {
                pod: pod.to_string(),
                message: s.message.clone(),
            }
        }
        kube::Error::Api(s) if s.code == 403 => OpenError::Forbidden {
            namespace: namespace.to_string(),
            message: s.message.clone(),
        },
        _ => OpenError::Other {
            pod: pod.to_string(),
            source: e,
        },
    }
}

fn is_not_running(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("not running")
        || m.contains("does not have a host assigned")
        || m.contains("terminat")
}

/// Byte counters a relay adds to while it runs (shared with the live table).
#[derive(Debug, Default)]
pub struct ByteCounters {
    /// Bytes sent to the pod.
    pub up: AtomicU64,
    /// Bytes received from the pod.
    pub down: AtomicU64,
}

/// How a relay ended.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RelayEnd {
    /// Bytes sent to the pod.
    pub up: u64,
    /// Bytes received from the pod.
    pub down: u64,
    /// What the kubelet reported on the error channel (e.g. the dial inside the pod failed).
    pub pod_error: Option<String>,
    /// A protocol or WebSocket error, if the relay ended because of one.
    pub broken: Option<String>,
    /// The local connection was reset (the port-forward ended uncleanly) rather than
    /// closed with a FIN.
    pub reset: bool,
}

/// How the pod side of a relay ended, as far as the local client is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PodEnd {
    /// The WebSocket closed normally and nothing was reported on the error channel: the
    /// pod's connection ended with a FIN, and so does the local one.
    Clean,
    /// Anything else: the local connection is reset.
    Cut,
}

/// Relays `local` over `pf` (slot 0) until either side is done, `cancel` fires, or the
/// WebSocket breaks.
pub async fn relay(
    local: TcpStream,
    pf: PortForward,
    counters: &ByteCounters,
    cancel: &CancellationToken,
) -> RelayEnd {
    let PortForward { ws, mut channels } = pf;
    let framer = channels.clone();
    let (mut sink, mut stream) = ws.split();
    let (mut local_rd, mut local_wr) = local.into_split();
    let start = Instant::now();
    let last_from_pod = AtomicU64::new(0);
    let since_start = || u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    let up_bytes = AtomicU64::new(0);
    let down_bytes = AtomicU64::new(0);

    let up = async {
        let mut buf = vec![0u8; READ_CHUNK];
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
        loop {
            tokio::select! {
                r = local_rd.read(&mut buf) => match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let frame = framer.data(0, &buf[..n]);
                        if sink.send(Message::Binary(Bytes::from(frame))).await.is_err() {
                            return Some("the WebSocket to the API server closed".to_string());
                        }
                        up_bytes.fetch_add(n as u64, Ordering::Relaxed);
                        counters.up.fetch_add(n as u64, Ordering::Relaxed);
                    }
                },
                _ = ping.tick() => {
                    if sink.send(Message::Ping(Bytes::new())).await.is_err() {
                        return Some("the WebSocket to the API server closed".to_string());
                    }
                }
            }
        }
        // The client finished sending.
        if let Some(close) = framer.close(0) {
            let _ = sink.send(Message::Binary(Bytes::from(close))).await;
        }
        let eof_at = since_start();
        loop {
            let last = last_from_pod.load(Ordering::Relaxed).max(eof_at);
            let silent = since_start().saturating_sub(last);
            let linger = u64::try_from(LINGER.as_millis()).unwrap_or(1000);
            if silent >= linger {
                break;
            }
            tokio::time::sleep(Duration::from_millis(linger - silent)).await;
        }
        let _ = sink.send(Message::Close(None)).await;
        None
    };

    let down = async {
        let mut pod_error: Option<String> = None;
        let mut broken = None;
        let mut end = PodEnd::Cut;
        let mut local_gone = false;
        while let Some(msg) = stream.next().await {
            match msg {
                Ok(Message::Binary(b)) => match channels.receive(&b) {
                    Ok(Incoming::Data { data, .. }) => {
                        last_from_pod.store(since_start(), Ordering::Relaxed);
                        if local_wr.write_all(data).await.is_err() {
                            // The local client is gone.
                            local_gone = true;
                            break;
                        }
                        down_bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                        counters
                            .down
                            .fetch_add(data.len() as u64, Ordering::Relaxed);
                    }
                    Ok(Incoming::Error { message, .. }) => {
                        pod_error
                            .get_or_insert_with(String::new)
                            .push_str(&String::from_utf8_lossy(message));
                    }
                    Ok(Incoming::Closed { .. }) => {
                        let _ = local_wr.shutdown().await;
                    }
                    Ok(Incoming::Nothing) => {}
                    Err(e) => {
                        broken = Some(e.to_string());
                        break;
                    }
                },
                Ok(Message::Close(frame)) => {
                    if normal_close(frame.as_ref()) {
                        end = PodEnd::Clean;
                    } else {
                        broken = Some(format!(
                            "the API server closed the port-forward: {}",
                            frame.map(|f| f.to_string()).unwrap_or_default()
                        ));
                    }
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    broken = Some(format!("the WebSocket to the API server failed: {e}"));
                    break;
                }
            }
        }
        if broken.is_none() && end == PodEnd::Cut && !local_gone {
            broken = Some("the WebSocket to the API server ended without a close".into());
        }
        if pod_error.is_some() {
            end = PodEnd::Cut;
        }
        (pod_error, broken, end)
    };

    let (pod_error, broken, end) = tokio::select! {
        // The client finished and the pod fell silent (or the WebSocket failed).
        b = up => {
            let end = if b.is_none() { PodEnd::Clean } else { PodEnd::Cut };
            (None, b, end)
        }
        r = down => r,
        _ = cancel.cancelled() => (None, None, PodEnd::Cut),
    };
    // A clean end passes on as a FIN; anything else resets the local connection:
    // SO_LINGER 0, no shutdown (the write half would send a FIN when dropped), and the
    // close when the read half is dropped sends the RST.
    let reset = match end {
        PodEnd::Clean => {
            let _ = local_wr.shutdown().await;
            false
        }
        PodEnd::Cut => {
            if let Err(e) = local_wr.as_ref().set_zero_linger() {
                tracing::debug!("cannot reset the local connection: {e}");
            }
            local_wr.forget();
            true
        }
    };
    RelayEnd {
        up: up_bytes.load(Ordering::Relaxed),
        down: down_bytes.load(Ordering::Relaxed),
        pod_error: pod_error.map(|e| e.trim().to_string()),
        broken,
        reset,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::Channels;
    use tokio::net::TcpListener;
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::protocol::Role;

    /// A local connection pair: (what `relay` gets, what the test's "client" uses).
    async fn local_pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        (server, client)
    }

    /// An in-memory WebSocket pair: (client side for `relay`, server side for the test).
    async fn ws_pair() -> (Box<dyn WsIo>, WebSocketStream<tokio::io::DuplexStream>) {
        let (a, b) = tokio::io::duplex(1 << 20);
        let client = WebSocketStream::from_raw_socket(a, Role::Client, None).await;
        let server = WebSocketStream::from_raw_socket(b, Role::Server, None).await;
        (Box::new(client), server)
    }

    fn bin(v: Vec<u8>) -> Message {
        Message::Binary(Bytes::from(v))
    }

    /// A v4 server (the kubelet): prefixes, echo, no close signal; it ends the WebSocket
    /// only when the pod side closes.
    #[tokio::test]
    async fn v4_echo_and_linger_after_client_eof() {
        let (local, mut client) = local_pair().await;
        let (ws, mut server) = ws_pair().await;
        let pf = PortForward {
            ws,
            channels: Channels::new(&[80], false),
        };
        let counters = ByteCounters::default();
        let cancel = CancellationToken::new();
        let kubelet = async {
            server.send(bin(vec![0, 80, 0])).await.unwrap();
            server.send(bin(vec![1, 80, 0])).await.unwrap();
            // Echo until the client closes the WebSocket.
            while let Some(Ok(m)) = server.next().await {
                match m {
                    Message::Binary(b) => {
                        assert_eq!(b[0], 0, "v4: data channel only");
                        server.send(bin(b.to_vec())).await.unwrap();
                    }
                    Message::Close(_) => break,
                    _ => {}
                }
            }
        };
        let user = async {
            client.write_all(b"hello").await.unwrap();
            let mut buf = [0u8; 5];
            client.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"hello");
            let t = Instant::now();
            client.shutdown().await.unwrap();
            let mut rest = Vec::new();
            client.read_to_end(&mut rest).await.unwrap();
            t.elapsed()
        };
        let (end, (), closed_after) =
            tokio::join!(relay(local, pf, &counters, &cancel), kubelet, user);
        assert_eq!((end.up, end.down), (5, 5));
        assert_eq!(end.pod_error, None);
        // v4: the WebSocket closes once the pod was silent for LINGER after the client's EOF.
        assert!(
            closed_after >= LINGER - Duration::from_millis(50),
            "{closed_after:?}"
        );
        assert!(closed_after < LINGER * 3, "{closed_after:?}");
    }

    /// v4: a pod that answers a while after the client's EOF (within the linger) is heard.
    #[tokio::test]
    async fn v4_late_answer_after_client_eof() {
        let (local, mut client) = local_pair().await;
        let (ws, mut server) = ws_pair().await;
        let pf = PortForward {
            ws,
            channels: Channels::new(&[80], false),
        };
        let counters = ByteCounters::default();
        let cancel = CancellationToken::new();
        let kubelet = async {
            server.send(bin(vec![0, 80, 0])).await.unwrap();
            server.send(bin(vec![1, 80, 0])).await.unwrap();
            // Some time passes before the request comes in.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let req = server.next().await.unwrap().unwrap();
            assert_eq!(&req.into_data()[..], b"\0req");
            tokio::time::sleep(LINGER * 6 / 10).await;
            server.send(bin(b"\0answer".to_vec())).await.unwrap();
            while let Some(Ok(m)) = server.next().await {
                if m.is_close() {
                    break;
                }
            }
        };
        let user = async {
            tokio::time::sleep(Duration::from_millis(1400)).await;
            client.write_all(b"req").await.unwrap();
            client.shutdown().await.unwrap();
            let mut all = Vec::new();
            client.read_to_end(&mut all).await.unwrap();
            all
        };
        let (_, (), got) = tokio::join!(relay(local, pf, &counters, &cancel), kubelet, user);
        assert_eq!(got, b"answer");
    }

    /// v5: the half-close is signalled, and the pod's answer after it still arrives.
    #[tokio::test]
    async fn v5_half_close_is_signalled() {
        let (local, mut client) = local_pair().await;
        let (ws, mut server) = ws_pair().await;
        let pf = PortForward {
            ws,
            channels: Channels::new(&[7], true),
        };
        let counters = ByteCounters::default();
        let cancel = CancellationToken::new();
        let apisim = async {
            server.send(bin(vec![0, 7, 0])).await.unwrap();
            server.send(bin(vec![1, 7, 0])).await.unwrap();
            let mut got = Vec::new();
            while let Some(Ok(m)) = server.next().await {
                if let Message::Binary(b) = m {
                    if b[..] == [255, 0] {
                        break;
                    }
                    got.extend_from_slice(&b[1..]);
                }
            }
            // Answer after the client's EOF, then end like a server that closes.
            let mut answer = vec![0];
            answer.extend_from_slice(&got);
            answer.extend_from_slice(b"!");
            server.send(bin(answer)).await.unwrap();
            server.send(Message::Close(None)).await.unwrap();
            got
        };
        let user = async {
            client.write_all(b"request").await.unwrap();
            client.shutdown().await.unwrap();
            let mut all = Vec::new();
            client.read_to_end(&mut all).await.unwrap();
            all
        };
        let (end, got, answer) = tokio::join!(relay(local, pf, &counters, &cancel), apisim, user);
        assert_eq!(got, b"request");
        assert_eq!(answer, b"request!");
        assert_eq!(end.down, 8);
        assert_eq!(counters.up.load(Ordering::Relaxed), 7);
    }

    /// An idle connection keeps its WebSocket busy with pings, so nothing in between
    /// drops it; the pod sees no extra bytes.
    #[tokio::test(start_paused = true)]
    async fn idle_connections_are_pinged() {
        let (local, mut client) = local_pair().await;
        let (ws, mut server) = ws_pair().await;
        let pf = PortForward {
            ws,
            channels: Channels::new(&[80], false),
        };
        let counters = ByteCounters::default();
        let cancel = CancellationToken::new();
        let kubelet = async {
            server.send(bin(vec![0, 80, 0])).await.unwrap();
            server.send(bin(vec![1, 80, 0])).await.unwrap();
            let mut pings = 0;
            while let Some(Ok(m)) = server.next().await {
                match m {
                    Message::Ping(_) => {
                        pings += 1;
                        if pings == 3 {
                            break;
                        }
                    }
                    Message::Binary(_) => panic!("no data was sent"),
                    _ => {}
                }
            }
            server.send(Message::Close(None)).await.unwrap();
            pings
        };
        let user = async {
            let mut all = Vec::new();
            client.read_to_end(&mut all).await.unwrap();
            all
        };
        let t = tokio::time::Instant::now();
        let (end, pings, got) = tokio::join!(relay(local, pf, &counters, &cancel), kubelet, user);
        assert_eq!(pings, 3);
        assert!(t.elapsed() >= PING_EVERY * 3);
        assert!(got.is_empty() && end.up == 0);
    }

    /// The kubelet's dial failed: the error channel's text is reported and the client's
    /// connection is reset (as a refused connection would be).
    #[tokio::test]
    async fn pod_error_is_reported() {
        let (local, mut client) = local_pair().await;
        let (ws, mut server) = ws_pair().await;
        let pf = PortForward {
            ws,
            channels: Channels::new(&[81], false),
        };
        let counters = ByteCounters::default();
        let cancel = CancellationToken::new();
        let kubelet = async {
            server.send(bin(vec![0, 81, 0])).await.unwrap();
            server.send(bin(vec![1, 81, 0])).await.unwrap();
            let mut e = vec![1];
            e.extend_from_slice(b"error forwarding port 81: connection refused");
            server.send(bin(e)).await.unwrap();
            server.send(Message::Close(None)).await.unwrap();
        };
        let user = read_until_end(&mut client);
        let (end, (), got) = tokio::join!(relay(local, pf, &counters, &cancel), kubelet, user);
        assert_eq!(got, (0, Some(std::io::ErrorKind::ConnectionReset)));
        assert!(end.reset);
        assert!(end.pod_error.unwrap().contains("connection refused"));
    }

    /// Reads until the end of stream or an error: the bytes, and the error if any.
    async fn read_until_end(client: &mut TcpStream) -> (usize, Option<std::io::ErrorKind>) {
        let mut total = 0;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match tokio::time::timeout(Duration::from_secs(10), client.read(&mut buf))
                .await
                .expect("neither an end nor an error")
            {
                Ok(0) => return (total, None),
                Ok(n) => total += n,
                Err(e) => return (total, Some(e.kind())),
            }
        }
    }

    /// How the pod side ends decides how the local connection does: a normal close with
    /// no error is a FIN; an error on the error channel (the pod's connection was reset,
    /// its sandbox went away), an abnormal close, a WebSocket that just stops, or the
    /// forward stopping reset it, after the bytes that came before.
    #[tokio::test]
    async fn only_a_clean_pod_end_is_a_fin() {
        use tokio_tungstenite::tungstenite::protocol::CloseFrame;
        use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
        #[derive(Debug, Clone, Copy)]
        enum Ending {
            Close,
            ErrorThenClose,
            AbnormalClose,
            Vanish,
            Cancel,
        }
        for ending in [
            Ending::Close,
            Ending::ErrorThenClose,
            Ending::AbnormalClose,
            Ending::Vanish,
            Ending::Cancel,
        ] {
            let (local, mut client) = local_pair().await;
            let (ws, mut server) = ws_pair().await;
            let pf = PortForward {
                ws,
                channels: Channels::new(&[80], false),
            };
            let counters = ByteCounters::default();
            let cancel = CancellationToken::new();
            let kubelet = async {
                server.send(bin(vec![0, 80, 0])).await.unwrap();
                server.send(bin(vec![1, 80, 0])).await.unwrap();
                let mut data = vec![0u8];
                data.extend_from_slice(&[7u8; 1000]);
                server.send(bin(data)).await.unwrap();
                // Let the data reach the client before the end.
                tokio::time::sleep(Duration::from_millis(100)).await;
                match ending {
                    Ending::Close => server.send(Message::Close(None)).await.unwrap(),
                    Ending::ErrorThenClose => {
                        let mut e = vec![1];
                        e.extend_from_slice(b"error forwarding port 80 to pod web_default: read: connection reset by peer");
                        server.send(bin(e)).await.unwrap();
                        server.send(Message::Close(None)).await.unwrap();
                    }
                    Ending::AbnormalClose => server
                        .send(Message::Close(Some(CloseFrame {
                            code: CloseCode::Error,
                            reason: "internal error".into(),
                        })))
                        .await
                        .unwrap(),
                    Ending::Vanish => drop(server),
                    Ending::Cancel => {
                        cancel.cancel();
                        // Stay open: the cancel ends the relay.
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            };
            let user = read_until_end(&mut client);
            let (end, (), got) = tokio::join!(relay(local, pf, &counters, &cancel), kubelet, user);
            let clean = matches!(ending, Ending::Close);
            let want = if clean {
                None
            } else {
                Some(std::io::ErrorKind::ConnectionReset)
            };
            assert_eq!(got, (1000, want), "{ending:?}");
            assert_eq!(end.reset, !clean, "{ending:?}");
            assert_eq!(end.down, 1000, "{ending:?}");
        }
    }

    /// A server that breaks the protocol ends the relay with a reason, not a panic.
    #[tokio::test]
    async fn protocol_errors_end_the_relay() {
        let (local, _client) = local_pair().await;
        let (ws, mut server) = ws_pair().await;
        let pf = PortForward {
            ws,
            channels: Channels::new(&[80], false),
        };
        let counters = ByteCounters::default();
        let cancel = CancellationToken::new();
        let bad = async {
            server.send(bin(vec![0, 81, 0])).await.unwrap();
            // Keep the server open until the relay gives up.
            let _ = tokio::time::timeout(Duration::from_secs(2), server.next()).await;
        };
        let (end, ()) = tokio::join!(relay(local, pf, &counters, &cancel), bad);
        assert!(end.broken.unwrap().contains("port 81"));
    }
}
