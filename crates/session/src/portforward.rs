//! The API-server port-forward as a transport: one WebSocket upgrade per connection, its
//! channel protocol ([`channel`]), and a byte stream over it ([`PortForwardIo`]).
//!
//! Shared by the session's port-forward carrier ([`crate::carrier::PortForwardDialer`])
//! and `kubelan forward` (one WebSocket per local connection, with its own relay loop).
//!
//! The upgrade is `GET /api/v1/namespaces/NS/pods/POD/portforward?ports=P` through kube-rs'
//! [`kube::Client::connect`], so every kubeconfig credential kind works. kubelan builds the
//! request itself rather than using `Api::portforward`, for two reasons: that one refuses a
//! port listed twice, which the protocol allows (forward's tests measure it), and its relay
//! reads 4 KiB at a time and sends and flushes one WebSocket message per read, which held
//! uploads through a carrier to about a third of the download rate (`docs/benchmarks.md`).
//! Here a write becomes one message of up to [`MAX_PAYLOAD`] bytes, queued in the
//! WebSocket's buffer, and goes out at the caller's flush, with no task or copy between.

pub mod channel;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use channel::{Channels, Incoming, ports_query};

/// The most payload one WebSocket message carries (larger writes are split). 32 KiB: large
/// enough that per-message costs (framing, masking setup, the API server's and kubelet's
/// per-message work) are small next to the bytes, small enough for any server's limits.
pub const MAX_PAYLOAD: usize = 32 * 1024;

/// A WebSocket as kube-rs returns it, behind a trait object so tests can use in-memory ones.
pub trait WsIo:
    Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Send + Unpin
{
}

impl<T> WsIo for T where
    T: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Send + Unpin
{
}

/// An open port-forward WebSocket.
pub struct PortForward {
    /// The WebSocket.
    pub ws: Box<dyn WsIo>,
    /// Its channel state.
    pub channels: Channels,
}

impl std::fmt::Debug for PortForward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortForward")
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

/// Opens a port-forward WebSocket to `port` of `namespace/pod`, listing the port `slots`
/// times (1 for a connection of kubelan's own). No timeout: callers bound it.
///
/// # Errors
/// kube-rs' error: `kube::Error::Api` with the API server's status for a refusal (403:
/// RBAC; 404 or 400: the pod is gone or not running), anything else for the network, TLS
/// or a failed upgrade.
pub async fn upgrade(
    client: &kube::Client,
    namespace: &str,
    pod: &str,
    port: u16,
    slots: usize,
) -> Result<PortForward, kube::Error> {
    let uri = format!(
        "/api/v1/namespaces/{namespace}/pods/{pod}/portforward?ports={}",
        ports_query(port, slots)
    );
    let req = http::Request::get(uri)
        .body(Vec::new())
        .map_err(kube::Error::HttpError)?;
    let conn = client.connect(req).await?;
    let v5 = conn.supports_stream_close();
    let ports = vec![port; slots.clamp(1, 127)];
    Ok(PortForward {
        ws: Box::new(conn.into_stream()),
        channels: Channels::new(&ports, v5),
    })
}

/// Whether a WebSocket close frame is a normal close (no frame at all counts as one: the
/// API server and the lab's simulator send none).
pub fn normal_close(frame: Option<&CloseFrame>) -> bool {
    frame.is_none_or(|f| f.code == CloseCode::Normal)
}

/// How the pod side of a [`PortForwardIo`] ended, once it has.
#[derive(Debug)]
enum ReadEnd {
    /// A normal close or a v5 close signal: reads return end of stream.
    Eof,
    /// Anything else: reads fail with this kind and message.
    Failed(io::ErrorKind, String),
}

/// One port-forwarded connection (slot 0 of a [`PortForward`]) as a byte stream.
///
/// - Reads return the pod's bytes. A normal WebSocket close (or a v5 close signal) is the
///   end of stream. An error the kubelet reports on the error channel (the dial inside the
///   pod failed, the pod's connection was reset) fails the read with `ConnectionReset` and
///   the kubelet's text; a WebSocket that breaks, closes abnormally or just ends fails it
///   with `ConnectionAborted`; a message that breaks the channel protocol with
///   `InvalidData`. So a cut is never mistaken for a clean end.
/// - Each write becomes one WebSocket message (at most [`MAX_PAYLOAD`] bytes), buffered by
///   the WebSocket and sent at the next flush (or when its buffer fills).
/// - Shutdown: a v5 server gets the close signal for the data channel (reads go on); a v4
///   server cannot be told, so the WebSocket is closed.
/// - Dropping it drops the WebSocket's connection to the API server, which ends the
///   forward in the pod.
pub struct PortForwardIo {
    ws: Box<dyn WsIo>,
    channels: Channels,
    /// Pod bytes received and not yet read.
    pending: Bytes,
    ended: Option<ReadEnd>,
    shut: bool,
}

impl PortForwardIo {
    /// The stream over `pf`'s first port.
    pub fn new(pf: PortForward) -> PortForwardIo {
        PortForwardIo {
            ws: pf.ws,
            channels: pf.channels,
            pending: Bytes::new(),
            ended: None,
            shut: false,
        }
    }

    /// Decodes one message into `pending` or `ended`.
    fn take(&mut self, msg: Message) {
        match msg {
            Message::Binary(b) => match self.channels.receive(&b) {
                Ok(Incoming::Data { data, .. }) => {
                    let data = b.slice_ref(data);
                    self.pending = data;
                }
                Ok(Incoming::Error { message, .. }) => {
                    let text = String::from_utf8_lossy(message).trim().to_string();
                    self.ended = Some(ReadEnd::Failed(
                        io::ErrorKind::ConnectionReset,
                        format!("the kubelet reported: {text}"),
                    ));
                }
                Ok(Incoming::Closed { .. }) => self.ended = Some(ReadEnd::Eof),
                Ok(Incoming::Nothing) => {}
                Err(e) => {
                    self.ended = Some(ReadEnd::Failed(io::ErrorKind::InvalidData, e.to_string()));
                }
            },
            Message::Close(frame) => {
                self.ended = Some(if normal_close(frame.as_ref()) {
                    ReadEnd::Eof
                } else {
                    ReadEnd::Failed(
                        io::ErrorKind::ConnectionAborted,
                        format!(
                            "the API server closed the port-forward: {}",
                            frame.map(|f| f.to_string()).unwrap_or_default()
                        ),
                    )
                });
            }
            // Pings are answered by the WebSocket itself; text and pongs carry nothing.
            _ => {}
        }
    }
}

fn ws_error(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        WsError::ConnectionClosed | WsError::AlreadyClosed => io::Error::new(
            io::ErrorKind::BrokenPipe,
            "the port-forward WebSocket is closed",
        ),
        e => io::Error::new(
            io::ErrorKind::ConnectionAborted,
            format!("the port-forward WebSocket failed: {e}"),
        ),
    }
}

impl AsyncRead for PortForwardIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending.split_to(n));
                return Poll::Ready(Ok(()));
            }
            match &this.ended {
                Some(ReadEnd::Eof) => return Poll::Ready(Ok(())),
                Some(ReadEnd::Failed(kind, message)) => {
                    return Poll::Ready(Err(io::Error::new(*kind, message.clone())));
                }
                None => {}
            }
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                Some(Ok(msg)) => this.take(msg),
                Some(Err(e)) => {
                    this.ended = Some(ReadEnd::Failed(
                        io::ErrorKind::ConnectionAborted,
                        format!("the WebSocket to the API server failed: {e}"),
                    ));
                }
                None => {
                    this.ended = Some(ReadEnd::Failed(
                        io::ErrorKind::ConnectionAborted,
                        "the WebSocket to the API server ended without a close".into(),
                    ));
                }
            }
        }
    }
}

impl AsyncWrite for PortForwardIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.shut {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        ready!(Pin::new(&mut this.ws).poll_ready(cx)).map_err(ws_error)?;
        let n = buf.len().min(MAX_PAYLOAD);
        let msg = Message::Binary(Bytes::from(this.channels.data(0, &buf[..n])));
        Pin::new(&mut this.ws).start_send(msg).map_err(ws_error)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().ws)
            .poll_flush(cx)
            .map_err(ws_error)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.channels.close(0) {
            Some(signal) => {
                if !this.shut {
                    ready!(Pin::new(&mut this.ws).poll_ready(cx)).map_err(ws_error)?;
                    Pin::new(&mut this.ws)
                        .start_send(Message::Binary(Bytes::from(signal)))
                        .map_err(ws_error)?;
                    this.shut = true;
                }
                Pin::new(&mut this.ws).poll_flush(cx).map_err(ws_error)
            }
            None => {
                this.shut = true;
                Pin::new(&mut this.ws).poll_close(cx).map_err(ws_error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::protocol::Role;

    /// A stream over an in-memory WebSocket, and the server's end.
    async fn pair(
        port: u16,
        v5: bool,
    ) -> (PortForwardIo, WebSocketStream<tokio::io::DuplexStream>) {
        let (a, b) = tokio::io::duplex(4 << 20);
        let client = WebSocketStream::from_raw_socket(a, Role::Client, None).await;
        let server = WebSocketStream::from_raw_socket(b, Role::Server, None).await;
        let io = PortForwardIo::new(PortForward {
            ws: Box::new(client),
            channels: Channels::new(&[port], v5),
        });
        (io, server)
    }

    fn bin(v: &[u8]) -> Message {
        Message::Binary(Bytes::copy_from_slice(v))
    }

    async fn prefixes(server: &mut WebSocketStream<tokio::io::DuplexStream>, port: u16) {
        let [lo, hi] = port.to_le_bytes();
        server.send(bin(&[0, lo, hi])).await.unwrap();
        server.send(bin(&[1, lo, hi])).await.unwrap();
    }

    /// A large write leaves as few large messages (not one per 4 KiB), all on the data
    /// channel, and reaches the server whole.
    #[tokio::test]
    async fn writes_become_large_messages() {
        let (mut io, mut server) = pair(7444, false).await;
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        io.write_all(&data).await.unwrap();
        io.flush().await.unwrap();
        let mut got = Vec::new();
        let mut messages = 0;
        while got.len() < data.len() {
            let Message::Binary(b) = server.next().await.unwrap().unwrap() else {
                panic!("binary messages only");
            };
            assert_eq!(b[0], 0, "data channel");
            assert!(b.len() - 1 <= MAX_PAYLOAD);
            got.extend_from_slice(&b[1..]);
            messages += 1;
        }
        assert_eq!(got, data);
        assert_eq!(messages, data.len().div_ceil(MAX_PAYLOAD));
    }

    /// The pod's bytes are read after the port prefixes; a normal close is the end.
    #[tokio::test]
    async fn reads_pod_bytes_then_eof_on_a_normal_close() {
        let (mut io, mut server) = pair(80, false).await;
        prefixes(&mut server, 80).await;
        server.send(bin(b"\0hello ")).await.unwrap();
        server.send(bin(b"\0world")).await.unwrap();
        server.send(Message::Close(None)).await.unwrap();
        let mut all = Vec::new();
        io.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"hello world");
    }

    /// Every way the forward can be cut fails the read: the kubelet's error (with its
    /// text), an abnormal close, a WebSocket that just ends, a protocol violation.
    #[tokio::test]
    async fn a_cut_is_an_error_not_an_end() {
        #[derive(Debug, Clone, Copy)]
        enum Cut {
            KubeletError,
            AbnormalClose,
            Vanish,
            WrongPort,
        }
        for cut in [
            Cut::KubeletError,
            Cut::AbnormalClose,
            Cut::Vanish,
            Cut::WrongPort,
        ] {
            let (mut io, mut server) = pair(80, false).await;
            if matches!(cut, Cut::WrongPort) {
                server.send(bin(&[0, 81, 0])).await.unwrap();
            } else {
                prefixes(&mut server, 80).await;
                server.send(bin(b"\0abc")).await.unwrap();
            }
            match cut {
                Cut::KubeletError => {
                    server
                        .send(bin(b"\x01error forwarding port 80: connection refused"))
                        .await
                        .unwrap();
                    server.send(Message::Close(None)).await.unwrap();
                }
                Cut::AbnormalClose => server
                    .send(Message::Close(Some(CloseFrame {
                        code: CloseCode::Error,
                        reason: "internal error".into(),
                    })))
                    .await
                    .unwrap(),
                Cut::Vanish => drop(server),
                Cut::WrongPort => {}
            }
            let mut all = Vec::new();
            let e = io.read_to_end(&mut all).await.unwrap_err();
            let want = match cut {
                Cut::KubeletError => io::ErrorKind::ConnectionReset,
                Cut::AbnormalClose | Cut::Vanish => io::ErrorKind::ConnectionAborted,
                Cut::WrongPort => io::ErrorKind::InvalidData,
            };
            assert_eq!(e.kind(), want, "{cut:?}: {e}");
            if matches!(cut, Cut::KubeletError) {
                assert!(e.to_string().contains("connection refused"), "{e}");
            }
            if !matches!(cut, Cut::WrongPort) {
                assert_eq!(all, b"abc", "{cut:?}");
            }
        }
    }

    /// v5: shutdown sends the close signal and the pod's answer still arrives; v4: shutdown
    /// closes the WebSocket.
    #[tokio::test]
    async fn shutdown_signals_on_v5_and_closes_on_v4() {
        let (mut io, mut server) = pair(7, true).await;
        prefixes(&mut server, 7).await;
        io.write_all(b"req").await.unwrap();
        io.shutdown().await.unwrap();
        assert_eq!(server.next().await.unwrap().unwrap(), bin(b"\0req"));
        assert_eq!(server.next().await.unwrap().unwrap(), bin(&[255, 0]));
        server.send(bin(b"\0answer")).await.unwrap();
        server.send(bin(&[255, 0])).await.unwrap();
        let mut all = Vec::new();
        io.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"answer");

        let (mut io, mut server) = pair(7, false).await;
        io.write_all(b"req").await.unwrap();
        io.shutdown().await.unwrap();
        assert_eq!(server.next().await.unwrap().unwrap(), bin(b"\0req"));
        assert!(server.next().await.unwrap().unwrap().is_close());
        assert!(io.write_all(b"more").await.is_err());
    }
}
