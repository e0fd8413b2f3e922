//! What the stack hands to the caller: TCP connections, ICMP echo requests, and the
//! [`Handler`] that receives them (UDP flows are in [`crate::udp`]).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::UdpFlow;
use crate::stack::Resets;

/// Receives the flows the stack accepts. Each method returns a future the stack spawns on
/// the current tokio runtime; the futures are aborted when the stack stops.
///
/// Flows come from any source address that routes into the TUN device, not only from
/// this machine (the LAN gateway forwards other hosts' traffic into it).
pub trait Handler: Send + Sync + 'static {
    /// A new TCP connection from `flow.src` to `flow.dst`, already accepted by the stack
    /// (the application's `connect` has succeeded).
    fn tcp(&self, flow: TcpFlow) -> BoxFuture<'static, ()>;

    /// A new UDP flow; its first datagram is already in `flow.rx`.
    fn udp(&self, flow: UdpFlow) -> BoxFuture<'static, ()>;

    /// An ICMP echo request. Resolve to `true` to have the stack write the echo reply
    /// (after a real ping of `req.dst` succeeded), `false` to write nothing so the ping
    /// times out.
    fn icmp_echo(&self, req: EchoRequest) -> BoxFuture<'static, bool>;
}

/// A TCP connection from an application (`src`) to `dst`.
#[derive(Debug)]
#[non_exhaustive]
pub struct TcpFlow {
    /// The application's address.
    pub src: SocketAddr,
    /// The address the application connected to.
    pub dst: SocketAddr,
    /// The byte stream; reading gives what the application sent, writing sends to it.
    pub stream: TcpStream,
}

impl TcpFlow {
    pub(crate) fn new(
        src: SocketAddr,
        dst: SocketAddr,
        stream: netstack_smoltcp::TcpStream,
        resets: Arc<Resets>,
    ) -> Self {
        Self {
            src,
            dst,
            stream: TcpStream {
                inner: stream,
                resets,
            },
        }
    }
}

/// The stack's end of a TCP connection.
///
/// Dropping it closes the connection gracefully (FIN after the data written so far):
/// the application reads a clean end of stream. [`TcpStream::abort`] resets it instead,
/// for a flow that was cut. `shutdown` queues a FIN after the data written so far and
/// returns at once, like a kernel socket's `shutdown(SHUT_WR)`; reading continues until
/// the application closes its side. Reading returns `ConnectionReset` when the
/// application reset the connection, and end of stream only after its FIN.
pub struct TcpStream {
    inner: netstack_smoltcp::TcpStream,
    resets: Arc<Resets>,
}

impl TcpStream {
    /// Ends the connection with a reset instead of a FIN: the application's next read
    /// fails with `ECONNRESET` once it has read what reached it before, and data still
    /// queued toward it is discarded. For a flow whose other end failed (the tunnel
    /// died, the destination reset), so that the application never takes the cut for
    /// the end of the stream.
    ///
    /// When the stack cannot reset the connection (smoltcp has not answered the
    /// application's SYN yet, or the stack tracks too many connections to follow this
    /// one) it is closed as on drop.
    pub async fn abort(self) {
        let Self { inner, resets } = self;
        resets
            .abort(*inner.local_addr(), *inner.remote_addr())
            .await;
        // netstack-smoltcp closes its socket with a FIN on drop; the stack drops that FIN
        // (and anything else smoltcp still sends) since `abort` marked the connection.
        drop(inner);
    }
}

impl std::fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpStream")
            .field("src", self.inner.local_addr())
            .field("dst", self.inner.remote_addr())
            .finish()
    }
}

impl AsyncRead for TcpStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        // netstack-smoltcp reports the application's RST as an end of stream; the stack
        // saw which it was (once per connection, at its end).
        if buf.filled().len() == before
            && buf.remaining() > 0
            && self
                .resets
                .reset_by_app(*self.inner.local_addr(), *self.inner.remote_addr())
        {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "the application reset the connection",
            )));
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // netstack-smoltcp's shutdown stays pending until the connection is fully closed
        // (both FINs exchanged, and TIME-WAIT over when we close first), which would stall
        // `tokio::io::copy_bidirectional` and friends. Its first poll already marks the
        // write half closed; the runner then sends the FIN once the buffered data is out.
        match Pin::new(&mut self.inner).poll_shutdown(cx) {
            Poll::Ready(result) => Poll::Ready(result),
            Poll::Pending => Poll::Ready(Ok(())),
        }
    }
}

/// An ICMP echo request (a ping) from `src` to `dst`. Plain data, so that handlers can be
/// tested with requests built by hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EchoRequest {
    /// Who pings.
    pub src: IpAddr,
    /// The address pinged.
    pub dst: IpAddr,
    /// The ICMP identifier.
    pub ident: u16,
    /// The ICMP sequence number.
    pub seq: u16,
    /// The data after the ICMP header (echoed back in the reply).
    pub payload: Bytes,
    /// The request's IP TTL as it arrived.
    pub ttl: u8,
}
