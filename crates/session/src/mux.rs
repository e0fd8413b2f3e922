//! yamux over any byte stream, driven by one task per carrier.
//!
//! yamux's `Connection` makes progress only while someone polls it, so [`spawn`] moves it
//! into a task that polls it continuously, hands inbound streams to a channel and opens
//! outbound streams on request.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::task::Poll;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};
use tokio_util::sync::CancellationToken;

/// One multiplexed stream, with tokio's I/O traits.
pub type MuxStream = Compat<yamux::Stream>;

/// Most streams a carrier may hold at once (flows plus the control stream).
pub const MAX_STREAMS: usize = 32_768;

/// Which end of the carrier this is (yamux numbers streams differently per side).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The kubelan client (opens the streams).
    Client,
    /// The agent (accepts them).
    Agent,
}

/// Opens streams on a carrier; cheap to clone.
#[derive(Clone, Debug)]
pub struct MuxHandle {
    open_tx: mpsc::Sender<oneshot::Sender<Result<yamux::Stream, yamux::ConnectionError>>>,
    closed: CancellationToken,
}

impl MuxHandle {
    /// Opens a new stream.
    ///
    /// # Errors
    ///
    /// The yamux error when the carrier is closed or broken.
    pub async fn open(&self) -> Result<MuxStream, yamux::ConnectionError> {
        let (tx, rx) = oneshot::channel();
        self.open_tx
            .send(tx)
            .await
            .map_err(|_| yamux::ConnectionError::Closed)?;
        let s = rx.await.map_err(|_| yamux::ConnectionError::Closed)??;
        Ok(s.compat())
    }

    /// Whether the carrier has ended.
    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Resolves when the carrier has ended.
    pub async fn closed(&self) {
        self.closed.cancelled().await;
    }

    /// Tears the carrier down: every stream on it fails.
    pub fn close(&self) {
        self.closed.cancel();
    }
}

fn config() -> yamux::Config {
    let mut cfg = yamux::Config::default();
    // Each stream's window starts at 256 KiB and grows only while the application reads,
    // so memory follows real use; the limit on streams is what bounds a peer.
    cfg.set_max_connection_receive_window(None);
    cfg.set_max_num_streams(MAX_STREAMS);
    cfg.set_split_send_size(64 * 1024);
    cfg
}

/// Runs yamux over `io` in a new task. Returns the handle for outbound streams and the
/// channel of inbound ones. The task ends when the carrier fails, the peer closes it, or
/// [`MuxHandle::close`] is called; the handle's `closed()` then resolves.
pub fn spawn<T>(io: T, side: Side) -> (MuxHandle, mpsc::UnboundedReceiver<MuxStream>)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mode = match side {
        Side::Client => yamux::Mode::Client,
        Side::Agent => yamux::Mode::Server,
    };
    let io = crate::coalesce::Coalesce::new(io);
    let mut conn = yamux::Connection::new(io.compat(), config(), mode);
    let (open_tx, mut open_rx) =
        mpsc::channel::<oneshot::Sender<Result<yamux::Stream, yamux::ConnectionError>>>(64);
    let (inbound_tx, inbound_rx) = mpsc::unbounded_channel();
    let closed = CancellationToken::new();
    let handle = MuxHandle {
        open_tx,
        closed: closed.clone(),
    };
    tokio::spawn(async move {
        let mut waiting: VecDeque<oneshot::Sender<_>> = VecDeque::new();
        let drive = poll_fn(|cx| {
            while let Poll::Ready(Some(req)) = open_rx.poll_recv(cx) {
                waiting.push_back(req);
            }
            while !waiting.is_empty() {
                match conn.poll_new_outbound(cx) {
                    Poll::Ready(Ok(s)) => {
                        if let Some(req) = waiting.pop_front() {
                            let _ = req.send(Ok(s));
                        }
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => break,
                }
            }
            loop {
                match conn.poll_next_inbound(cx) {
                    Poll::Ready(Some(Ok(s))) => {
                        // A dropped receiver means nobody accepts: the stream is reset.
                        let _ = inbound_tx.send(s.compat());
                    }
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                    Poll::Ready(None) => return Poll::Ready(Ok(())),
                    Poll::Pending => return Poll::Pending,
                }
            }
        });
        let result = tokio::select! {
            r = drive => r,
            () = closed.cancelled() => Ok(()),
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "carrier multiplexer ended");
        }
        for req in waiting {
            let _ = req.send(Err(yamux::ConnectionError::Closed));
        }
        closed.cancel();
    });
    (handle, inbound_rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn streams_both_ways_and_close_ends_them() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (client, _in_c) = spawn(a, Side::Client);
        let (agent, mut in_a) = spawn(b, Side::Agent);
        let mut s = client.open().await.unwrap();
        s.write_all(b"ping").await.unwrap();
        s.flush().await.unwrap();
        let mut t = in_a.recv().await.unwrap();
        let mut buf = [0u8; 4];
        t.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        t.write_all(b"pong").await.unwrap();
        t.flush().await.unwrap();
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
        agent.close();
        client.closed().await;
        assert!(client.open().await.is_err());
        assert!(s.read(&mut buf).await.map(|n| n == 0).unwrap_or(true));
    }
}
