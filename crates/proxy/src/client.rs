//! A client's connection: guards that count clients and flows, a stream that counts the
//! bytes it carries, and how the connection ends (lingering close, reset unless done).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};
use std::time::Duration;

use kubelan_session::relay::RelayEnd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tracing::debug;

use crate::shared::Shared;

/// Counts a connected client while alive.
pub(crate) struct ClientGuard(Arc<Shared>);

impl ClientGuard {
    pub(crate) fn new(shared: Arc<Shared>) -> ClientGuard {
        shared.counters.clients.fetch_add(1, Relaxed);
        ClientGuard(shared)
    }
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.counters.clients.fetch_sub(1, Relaxed);
    }
}

/// Counts an open flow while alive.
pub(crate) struct FlowGuard(Arc<Shared>);

impl FlowGuard {
    pub(crate) fn new(shared: Arc<Shared>) -> FlowGuard {
        shared.counters.flows_open.fetch_add(1, Relaxed);
        shared.counters.flows_total.fetch_add(1, Relaxed);
        FlowGuard(shared)
    }
}

impl Drop for FlowGuard {
    fn drop(&mut self) {
        self.0.counters.flows_open.fetch_sub(1, Relaxed);
    }
}

/// A client stream that counts bytes read (up) and written (down) as they pass, so the
/// status line moves during long transfers.
pub(crate) struct Counted<S> {
    inner: S,
    shared: Arc<Shared>,
    /// Bytes already read (and counted) that reads return again first.
    unread: Vec<u8>,
}

impl<S> Counted<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Counted<S> {
        Counted {
            inner,
            shared,
            unread: Vec::new(),
        }
    }

    /// Puts `bytes` back: the next reads return them before anything new.
    pub(crate) fn unread(&mut self, bytes: Vec<u8>) {
        debug_assert!(self.unread.is_empty());
        self.unread = bytes;
    }

    pub(crate) fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Counts the bytes a write to the client reports written.
    fn count_down(&self, r: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        if let Poll::Ready(Ok(n)) = r {
            self.shared.counters.down(n);
        }
        r
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.unread.is_empty() {
            let n = self.unread.len().min(buf.remaining());
            buf.put_slice(&self.unread[..n]);
            self.unread.drain(..n);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        if n > 0 {
            self.shared.counters.up(n);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.count_down(r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.count_down(r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S: RelayEnd> RelayEnd for Counted<S> {
    fn poll_write_last(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_last(cx, buf);
        self.count_down(r)
    }
}

/// Closes after a final answer without losing it: a close with unread input makes the
/// kernel send a reset, which can destroy the answer in flight. So: send FIN, then read
/// and discard briefly until the client closes too.
pub(crate) async fn linger_close<S: AsyncRead + tokio::io::AsyncWrite + Unpin>(client: &mut S) {
    if client.shutdown().await.is_err() {
        return;
    }
    let drain = async {
        let mut sink = [0u8; 1024];
        let mut total = 0usize;
        while total < 64 * 1024 {
            match client.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
}

/// A client's connection carrying a flow: reset when dropped (SO_LINGER 0, then the
/// close sends an RST and discards what was still queued) unless [`relay`](Self::relay)
/// ended cleanly. Only the flow's real end (the agent's `Fin`) thus reaches the client as
/// a FIN; a relay that fails (the tunnel died, the destination or the client reset) or is
/// dropped (the proxy stops), or a flow that breaks before it, resets the client's
/// connection, so that nothing takes the cut for the end of the stream (a close-delimited
/// download would look complete). The normal end costs nothing.
pub(crate) struct ResetUnlessDone {
    client: Counted<TcpStream>,
    done: bool,
}

impl ResetUnlessDone {
    pub(crate) fn new(client: Counted<TcpStream>) -> ResetUnlessDone {
        ResetUnlessDone {
            client,
            done: false,
        }
    }

    pub(crate) fn get_mut(&mut self) -> &mut Counted<TcpStream> {
        &mut self.client
    }

    /// Relays the connection and `flow` until both ended; the flow, dropped by the caller
    /// after an error, is reset at the agent.
    ///
    /// # Errors
    ///
    /// The relay's first I/O error.
    pub(crate) async fn relay(
        &mut self,
        flow: &mut Box<dyn crate::FlowIo>,
    ) -> io::Result<(u64, u64)> {
        let result = kubelan_session::relay::copy_bidirectional(&mut self.client, flow).await;
        self.done = result.is_ok();
        result
    }
}

impl Drop for ResetUnlessDone {
    fn drop(&mut self) {
        if !self.done
            && let Err(e) = self.client.get_ref().set_zero_linger()
        {
            debug!("proxy: cannot reset a cut client connection: {e}");
        }
    }
}
