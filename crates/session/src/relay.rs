//! Bidirectional copy whose buffers grow with the traffic.
//!
//! `tokio::io::copy_bidirectional_with_sizes` allocates both buffers up front. With 64 KiB
//! buffers (needed for bulk throughput) that is 128 KiB per flow before a byte moves, so
//! 10 000 mostly idle flows would cost over a gigabyte in the proxy and the agent each.
//! Here each direction starts with [`START`] bytes and doubles, up to [`MAX`], whenever
//! a read fills the whole buffer — only flows that actually stream pay for big buffers.
//!
//! After a read that did not fill the buffer the relay looks once more: a reader whose end
//! of stream is already queued (a flow whose `Fin` came in the same carrier read as its
//! last data, a socket that got data and FIN together) says so at once. The relay then
//! knows those bytes are the direction's last and hands them to
//! [`RelayEnd::poll_write_last`] before the shutdown, so a kernel TCP socket sends the
//! bytes and its FIN in one segment. On a short request/response connection that is one
//! packet, and one wakeup of the receiving program, less.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::net::TcpStream;

/// The end of a relay whose writes may be told which bytes are its last.
///
/// [`copy_bidirectional`] calls [`poll_write_last`](RelayEnd::poll_write_last) for bytes
/// that are followed by the direction's end of stream, then shuts the end down at once.
/// Ends that cannot use the hint keep the default, a plain write.
pub trait RelayEnd: AsyncRead + AsyncWrite + Unpin {
    /// Writes like [`AsyncWrite::poll_write`]; a shutdown follows these bytes. An
    /// implementation may hold them back until that shutdown, never longer.
    fn poll_write_last(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write(cx, buf)
    }
}

/// `send(MSG_MORE)`: the kernel keeps a last partial segment until the shutdown that
/// follows, which then leaves as one segment carrying the bytes and the FIN.
impl RelayEnd for TcpStream {
    #[cfg(target_os = "linux")]
    fn poll_write_last(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        use nix::sys::socket::{MsgFlags, send};
        use std::os::fd::AsRawFd;
        let this = self.get_mut();
        let fd = this.as_raw_fd();
        loop {
            ready!(this.poll_write_ready(cx))?;
            match this.try_io(tokio::io::Interest::WRITABLE, || {
                let more = MsgFlags::from_bits_retain(nix::libc::MSG_MORE);
                send(fd, buf, more | MsgFlags::MSG_NOSIGNAL).map_err(io::Error::from)
            }) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }
}

impl RelayEnd for DuplexStream {}

impl<T: RelayEnd + ?Sized> RelayEnd for Box<T> {
    fn poll_write_last(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut **self).poll_write_last(cx, buf)
    }
}

/// How a direction writes the bytes that precede its end of stream.
type WriteLast<W> = fn(Pin<&mut W>, &mut Context<'_>, &[u8]) -> Poll<io::Result<usize>>;

/// First buffer size of each direction.
pub const START: usize = 2 * 1024;
/// Largest buffer size.
pub const MAX: usize = 64 * 1024;

#[derive(Debug)]
struct Direction {
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    read_done: bool,
    shut: bool,
    need_flush: bool,
    total: u64,
    /// A read error met while looking ahead; returned once the bytes before it are out.
    error: Option<io::Error>,
}

impl Direction {
    fn new() -> Direction {
        Direction {
            buf: Vec::new(),
            pos: 0,
            end: 0,
            read_done: false,
            shut: false,
            need_flush: false,
            total: 0,
            error: None,
        }
    }

    /// Moves bytes from `r` to `w`; `Ready(Ok)` once `r` ended and `w` was shut down.
    /// The bytes right before the end go through `last`.
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut R,
        w: &mut W,
        last: WriteLast<W>,
    ) -> Poll<io::Result<u64>>
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
    {
        loop {
            if self.pos == self.end && !self.read_done {
                if let Some(e) = self.error.take() {
                    return Poll::Ready(Err(e));
                }
                if self.buf.is_empty() {
                    self.buf = vec![0; START];
                }
                let mut rb = ReadBuf::new(&mut self.buf);
                match Pin::new(&mut *r).poll_read(cx, &mut rb) {
                    Poll::Ready(Ok(())) => {
                        let n = rb.filled().len();
                        if n == 0 {
                            self.read_done = true;
                        } else {
                            self.pos = 0;
                            self.end = n;
                            if n < self.buf.len() {
                                self.look_ahead(cx, r);
                            }
                            if self.end == self.buf.len() && self.buf.len() < MAX {
                                // A full buffer: this flow streams, give it room.
                                let grown = (self.buf.len() * 2).min(MAX);
                                self.buf.resize(grown, 0);
                            }
                        }
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        if self.need_flush {
                            ready!(Pin::new(&mut *w).poll_flush(cx))?;
                            self.need_flush = false;
                        }
                        return Poll::Pending;
                    }
                }
            }
            while self.pos < self.end {
                let chunk = &self.buf[self.pos..self.end];
                let n = if self.read_done {
                    ready!(last(Pin::new(&mut *w), cx, chunk))?
                } else {
                    ready!(Pin::new(&mut *w).poll_write(cx, chunk))?
                };
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.pos += n;
                self.total += n as u64;
                self.need_flush = true;
            }
            if self.read_done {
                if !self.shut {
                    // Straight after the last bytes: `last` may be holding them for this.
                    ready!(Pin::new(&mut *w).poll_shutdown(cx))?;
                    self.shut = true;
                }
                return Poll::Ready(Ok(self.total));
            }
        }
    }

    /// After a read that left room, reads once more without waiting: the reader may have
    /// more bytes, or its end of stream, queued already. Cheap when it has neither (tokio
    /// sockets know a short read drained them and do not ask the kernel again).
    fn look_ahead<R: AsyncRead + Unpin + ?Sized>(&mut self, cx: &mut Context<'_>, r: &mut R) {
        let mut rb = ReadBuf::new(&mut self.buf[self.end..]);
        match Pin::new(&mut *r).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => match rb.filled().len() {
                0 => self.read_done = true,
                m => self.end += m,
            },
            Poll::Ready(Err(e)) => self.error = Some(e),
            Poll::Pending => {}
        }
    }
}

/// Copies both ways between `a` and `b` until both directions ended (each end's EOF is
/// passed on as a shutdown of the other's write side). Returns bytes a→b and b→a.
///
/// `a` is the end that may be told which bytes are its last ([`RelayEnd`]); put the
/// kernel socket there.
///
/// # Errors
///
/// The first I/O error of either side; the other direction stops with it.
pub async fn copy_bidirectional<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: RelayEnd + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut ab = Direction::new();
    let mut ba = Direction::new();
    let (mut ab_done, mut ba_done) = (None, None);
    poll_fn(|cx| {
        if ab_done.is_none()
            && let Poll::Ready(r) = ab.poll_copy(cx, a, b, |w, cx, buf| w.poll_write(cx, buf))
        {
            ab_done = Some(r?);
        }
        if ba_done.is_none()
            && let Poll::Ready(r) = ba.poll_copy(cx, b, a, A::poll_write_last)
        {
            ba_done = Some(r?);
        }
        match (ab_done, ba_done) {
            (Some(x), Some(y)) => Poll::Ready(Ok((x, y))),
            _ => Poll::Pending,
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testio::{Call, Log, Logged};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The relay's two ends (`a` logged) and the programs at their far sides, plus the log.
    fn logged_pair() -> (
        Logged<DuplexStream>,
        DuplexStream,
        DuplexStream,
        DuplexStream,
        Log,
    ) {
        let (io, a_app) = tokio::io::duplex(4096);
        let (b, b_app) = tokio::io::duplex(4096);
        let (a, log) = Logged::new(io);
        (a, a_app, b, b_app, log)
    }

    #[tokio::test]
    async fn bytes_queued_before_the_end_go_out_as_the_last_write() {
        let (mut a, mut a_app, mut b, mut b_app, log) = logged_pair();
        // The response and its end are both queued before the relay first reads.
        b_app.write_all(b"response").await.unwrap();
        b_app.shutdown().await.unwrap();
        a_app.shutdown().await.unwrap();
        let (ab, ba) = copy_bidirectional(&mut a, &mut b).await.unwrap();
        assert_eq!((ab, ba), (0, 8));
        assert_eq!(
            *log.lock().unwrap(),
            [Call::Last(b"response".to_vec()), Call::Shutdown]
        );
        let mut got = Vec::new();
        a_app.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"response");
    }

    #[tokio::test]
    async fn bytes_with_more_to_come_are_plain_writes() {
        let (mut a, mut a_app, mut b, mut b_app, log) = logged_pair();
        let relay = tokio::spawn(async move { copy_bidirectional(&mut a, &mut b).await });
        b_app.write_all(b"one").await.unwrap();
        let mut got = [0u8; 3];
        a_app.read_exact(&mut got).await.unwrap();
        b_app.shutdown().await.unwrap();
        a_app.shutdown().await.unwrap();
        relay.await.unwrap().unwrap();
        assert_eq!(
            *log.lock().unwrap(),
            [Call::Write(b"one".to_vec()), Call::Shutdown]
        );
    }

    /// Yields `first`, then fails.
    struct FailsAfter(Option<&'static [u8]>);

    impl AsyncRead for FailsAfter {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            match self.0.take() {
                Some(b) => {
                    buf.put_slice(b);
                    Poll::Ready(Ok(()))
                }
                None => Poll::Ready(Err(io::ErrorKind::ConnectionReset.into())),
            }
        }
    }

    #[tokio::test]
    async fn an_error_seen_while_looking_ahead_comes_after_the_bytes_before_it() {
        let mut dir = Direction::new();
        let mut r = FailsAfter(Some(b"abc"));
        let (mut w, mut w_app) = tokio::io::duplex(64);
        let res =
            poll_fn(|cx| dir.poll_copy(cx, &mut r, &mut w, |w, cx, b| w.poll_write(cx, b))).await;
        assert_eq!(res.unwrap_err().kind(), io::ErrorKind::ConnectionReset);
        drop(w);
        let mut got = Vec::new();
        w_app.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"abc");
    }

    /// A flow (as `FlowConn` on a dead carrier) that yields its bytes, then fails; takes
    /// every write.
    struct CutFlow(FailsAfter);

    impl AsyncRead for CutFlow {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for CutFlow {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A flow that fails is the relay's error, and the other end gets its bytes but no
    /// shutdown: the caller decides how that end is cut (a reset), never a FIN.
    #[tokio::test]
    async fn a_failing_flow_is_an_error_and_never_a_shutdown() {
        let (mut a, _a_app, _b, _b_app, log) = logged_pair();
        let mut flow = CutFlow(FailsAfter(Some(b"partial")));
        let e = copy_bidirectional(&mut a, &mut flow).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
        assert_eq!(*log.lock().unwrap(), [Call::Write(b"partial".to_vec())]);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_tcp_socket_holds_its_last_bytes_for_the_fin() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut peer = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut end, _) = listener.accept().await.unwrap();
        end.set_nodelay(true).unwrap();
        let n = poll_fn(|cx| Pin::new(&mut end).poll_write_last(cx, b"last"))
            .await
            .unwrap();
        assert_eq!(n, 4);
        // Held back (a plain write with TCP_NODELAY would be here at once)...
        let mut byte = [0u8; 1];
        let early = tokio::time::timeout(Duration::from_millis(50), peer.read(&mut byte)).await;
        assert!(
            early.is_err(),
            "bytes arrived before the shutdown: {early:?}"
        );
        // ...until the shutdown sends them with the FIN.
        end.shutdown().await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), peer.read_to_end(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, b"last");
    }

    #[tokio::test]
    async fn copies_both_ways_passes_eof_and_grows() {
        let (mut a_app, mut a) = tokio::io::duplex(1 << 20);
        let (mut b, mut b_app) = tokio::io::duplex(1 << 20);
        let relay = tokio::spawn(async move { copy_bidirectional(&mut a, &mut b).await });
        let big: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        let sent = big.clone();
        let writer = tokio::spawn(async move {
            a_app.write_all(&sent).await.unwrap();
            a_app.shutdown().await.unwrap();
            let mut back = Vec::new();
            a_app.read_to_end(&mut back).await.unwrap();
            back
        });
        let mut got = Vec::new();
        b_app.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, big);
        b_app.write_all(b"reply").await.unwrap();
        b_app.shutdown().await.unwrap();
        assert_eq!(writer.await.unwrap(), b"reply");
        assert_eq!(relay.await.unwrap().unwrap(), (300_000, 5));
    }
}
