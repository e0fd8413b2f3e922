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
//!
//! The edges of a flow live here too, shared by every side that ends a flow on a socket
//! (the agent towards pods, the client towards local targets of reverse flows, the
//! per-session relay towards the pods that connected): [`relay_tcp`] relays a flow and a
//! TCP socket so that a cut on either side is a reset on the other, never a clean end
//! ([`ResetUnlessDone`]); [`relay_datagrams`] relays a datagram flow and a connected UDP
//! (or ICMP) socket; [`dial_error`] types a failed dial.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use kubelan_proto::{ErrorKind, FlowError, Frame};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::net::{TcpStream, UdpSocket};

use crate::flow::{FlowConn, FrameReader, ReadChunk, WriteChunk, write_frame};

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

/// A flow's `Fin` already follows its last data in the same carrier write.
impl<S: ReadChunk + WriteChunk> RelayEnd for FlowConn<S> {}

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
    p: Progress,
}

impl Direction {
    fn new() -> Direction {
        Direction {
            buf: Vec::new(),
            pos: 0,
            end: 0,
            p: Progress::default(),
        }
    }

    /// After a read that left room, reads once more without waiting: the reader may have
    /// more bytes, or its end of stream, queued already. Cheap when it has neither (tokio
    /// sockets know a short read drained them and do not ask the kernel again).
    fn look_ahead<R: AsyncRead + Unpin + ?Sized>(&mut self, cx: &mut Context<'_>, r: &mut R) {
        let mut rb = ReadBuf::new(&mut self.buf[self.end..]);
        match Pin::new(&mut *r).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => match rb.filled().len() {
                0 => self.p.read_done = true,
                m => self.end += m,
            },
            Poll::Ready(Err(e)) => self.p.error = Some(e),
            Poll::Pending => {}
        }
    }
}

/// The flow end of a relay: hands out the peer's data as the carrier delivered it, and
/// takes the data to send as buffers it may keep.
trait FlowEnd: AsyncWrite + Unpin {
    /// As [`FlowConn::poll_read_payload`].
    fn poll_read_payload(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Bytes>>;

    /// As [`FlowConn::poll_write_payload`].
    fn poll_write_payload(
        &mut self,
        cx: &mut Context<'_>,
        data: &mut Bytes,
    ) -> Poll<io::Result<usize>>;

    /// As [`FlowConn::mid_frame`].
    fn mid_frame(&self) -> bool {
        false
    }
}

impl<S: ReadChunk + WriteChunk> FlowEnd for FlowConn<S> {
    fn poll_read_payload(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Bytes>> {
        FlowConn::poll_read_payload(self, cx)
    }

    fn poll_write_payload(
        &mut self,
        cx: &mut Context<'_>,
        data: &mut Bytes,
    ) -> Poll<io::Result<usize>> {
        FlowConn::poll_write_payload(self, cx, data)
    }

    fn mid_frame(&self) -> bool {
        FlowConn::mid_frame(self)
    }
}

/// How far one direction of a relay got, besides the bytes it holds.
#[derive(Debug, Default)]
struct Progress {
    read_done: bool,
    shut: bool,
    need_flush: bool,
    total: u64,
    /// A read error met while looking ahead; returned once the bytes before it are out.
    error: Option<io::Error>,
}

impl Progress {
    fn wrote(&mut self, n: usize) {
        self.total += n as u64;
        self.need_flush = true;
    }

    /// Nothing to move now: flushes what was written, then waits.
    fn poll_idle<W: AsyncWrite + Unpin + ?Sized>(
        &mut self,
        cx: &mut Context<'_>,
        w: &mut W,
    ) -> Poll<io::Result<u64>> {
        if self.need_flush {
            ready!(Pin::new(&mut *w).poll_flush(cx))?;
            self.need_flush = false;
        }
        Poll::Pending
    }

    /// All bytes are out: shuts `w` down once, straight after the last bytes (`last` may
    /// be holding them for this), and returns how many moved.
    fn poll_end<W: AsyncWrite + Unpin + ?Sized>(
        &mut self,
        cx: &mut Context<'_>,
        w: &mut W,
    ) -> Poll<io::Result<u64>> {
        if !self.shut {
            ready!(Pin::new(&mut *w).poll_shutdown(cx))?;
            self.shut = true;
        }
        Poll::Ready(Ok(self.total))
    }
}

/// Most pieces one vectored write carries.
const MAX_IOV: usize = 64;

/// The socket → flow direction: each read of the socket goes into a buffer of its own,
/// which is handed to the flow as it is ([`FlowEnd::poll_write_payload`]): a busy carrier
/// keeps it for the stream's turn instead of copying it (a [`Direction`] reuses one
/// buffer, so whatever takes its bytes must copy them).
#[derive(Debug)]
struct Chunked {
    /// Room for the next read (the rest of the last read's buffer, while it lasts).
    room: BytesMut,
    /// Size of the buffer a read gets: from [`START`], doubled after each read that
    /// filled it, up to [`MAX`] (a flow that streams).
    size: usize,
    /// Read, not yet taken by the flow.
    data: Bytes,
    p: Progress,
}

impl Chunked {
    fn new() -> Chunked {
        Chunked {
            room: BytesMut::new(),
            size: START,
            data: Bytes::new(),
            p: Progress::default(),
        }
    }

    /// Reads once into `room`: `Ok(true)` if bytes came, `Ok(false)` at the end.
    fn poll_read_room<R: AsyncRead + Unpin + ?Sized>(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut R,
    ) -> Poll<io::Result<bool>> {
        let n = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut *r),
            cx,
            &mut self.room
        ))?;
        Poll::Ready(Ok(n > 0))
    }
}

impl<R, W> Pump<R, W> for Chunked
where
    R: AsyncRead + Unpin + ?Sized,
    W: FlowEnd + ?Sized,
{
    /// Moves bytes from `r` to the flow `w`; `Ready(Ok)` once `r` ended and `w` was shut
    /// down. A flow has no use for knowing its last bytes: `last` is not used.
    fn poll_pump(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut R,
        w: &mut W,
        _last: WriteLast<W>,
        turn: &mut usize,
    ) -> Poll<io::Result<u64>> {
        loop {
            if self.data.is_empty() && !self.p.read_done {
                if let Some(e) = self.p.error.take() {
                    return Poll::Ready(Err(e));
                }
                if *turn == 0 {
                    return self.p.poll_idle(cx, w);
                }
                if self.room.capacity() < self.size / 2 {
                    // What is left of the last buffer is too little for a streaming
                    // flow's read. If the flow let go of all of it (it copied the bytes:
                    // an uncontended carrier does), the same buffer is reused from its
                    // start; else a new one comes (the old one lives on in what the
                    // carrier still holds of it). Reusing it spares the uncontended path
                    // an allocation and a free per read (with glibc's default trim
                    // threshold those also cost page faults: docs/benchmarks.md, session 20).
                    self.room.reserve(self.size);
                }
                let asked = self.room.capacity();
                match self.poll_read_room(cx, r) {
                    Poll::Ready(Ok(false)) => self.p.read_done = true,
                    Poll::Ready(Ok(true)) => {
                        if self.room.len() == asked {
                            // A full buffer: this flow streams, give it room.
                            self.size = (self.size * 2).min(MAX);
                        } else {
                            // The reader may have more bytes, or its end, queued
                            // already (cheap when it has neither: tokio sockets know a
                            // short read drained them).
                            match self.poll_read_room(cx, r) {
                                Poll::Ready(Ok(false)) => self.p.read_done = true,
                                Poll::Ready(Err(e)) => self.p.error = Some(e),
                                Poll::Ready(Ok(true)) | Poll::Pending => {}
                            }
                        }
                        self.data = self.room.split().freeze();
                        *turn = turn.saturating_sub(self.data.len());
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        return self.p.poll_idle(cx, w);
                    }
                }
            }
            while !self.data.is_empty() {
                let n = ready!(w.poll_write_payload(cx, &mut self.data))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.p.wrote(n);
            }
            if self.p.read_done {
                return self.p.poll_end(cx, w);
            }
        }
    }
}

/// The flow → socket direction: the flow's payload arrives as pieces of the carrier's
/// reads ([`Bytes`]) and goes to the socket as they are, several in one vectored write,
/// never copied in between (a [`Direction`] would copy each byte into its buffer first).
#[derive(Debug, Default)]
struct Pieces {
    queue: VecDeque<Bytes>,
    queued: usize,
    p: Progress,
}

impl Pieces {
    /// Drops the first `n` bytes of the queue.
    fn consume(&mut self, mut n: usize) {
        self.queued -= n;
        while n > 0 {
            let Some(front) = self.queue.front_mut() else {
                return;
            };
            if front.len() > n {
                front.advance(n);
                return;
            }
            n -= front.len();
            self.queue.pop_front();
        }
    }
}

/// One direction of a relay: moves bytes from `r` to `w` until `r` ended and `w` was shut
/// down, the last bytes through `last`. Each read takes its bytes from `turn`; once that
/// is spent the pump reads no more in this poll and returns `Pending` with nothing to wake
/// it (its caller yields and polls it again: [`TURN`]).
trait Pump<R: ?Sized, W: ?Sized> {
    fn poll_pump(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut R,
        w: &mut W,
        last: WriteLast<W>,
        turn: &mut usize,
    ) -> Poll<io::Result<u64>>;
}

impl<R, W> Pump<R, W> for Direction
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    /// Moves bytes from `r` to `w`; `Ready(Ok)` once `r` ended and `w` was shut down.
    /// The bytes right before the end go through `last`.
    fn poll_pump(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut R,
        w: &mut W,
        last: WriteLast<W>,
        turn: &mut usize,
    ) -> Poll<io::Result<u64>> {
        loop {
            if self.pos == self.end && !self.p.read_done {
                if let Some(e) = self.p.error.take() {
                    return Poll::Ready(Err(e));
                }
                if *turn == 0 {
                    return self.p.poll_idle(cx, w);
                }
                if self.buf.is_empty() {
                    self.buf = vec![0; START];
                }
                let mut rb = ReadBuf::new(&mut self.buf);
                match Pin::new(&mut *r).poll_read(cx, &mut rb) {
                    Poll::Ready(Ok(())) => {
                        let n = rb.filled().len();
                        if n == 0 {
                            self.p.read_done = true;
                        } else {
                            self.pos = 0;
                            self.end = n;
                            if n < self.buf.len() {
                                self.look_ahead(cx, r);
                            }
                            *turn = turn.saturating_sub(self.end);
                            if self.end == self.buf.len() && self.buf.len() < MAX {
                                // A full buffer: this flow streams, give it room.
                                let grown = (self.buf.len() * 2).min(MAX);
                                self.buf.resize(grown, 0);
                            }
                        }
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        return self.p.poll_idle(cx, w);
                    }
                }
            }
            while self.pos < self.end {
                let chunk = &self.buf[self.pos..self.end];
                let n = if self.p.read_done {
                    ready!(last(Pin::new(&mut *w), cx, chunk))?
                } else {
                    ready!(Pin::new(&mut *w).poll_write(cx, chunk))?
                };
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.pos += n;
                self.p.wrote(n);
            }
            if self.p.read_done {
                return self.p.poll_end(cx, w);
            }
        }
    }
}

impl<R, W> Pump<R, W> for Pieces
where
    R: FlowEnd + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    /// Moves the flow's payload to `w`; `Ready(Ok)` once the flow ended and `w` was shut
    /// down. The last piece before the end goes through `last`.
    fn poll_pump(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut R,
        w: &mut W,
        last: WriteLast<W>,
        turn: &mut usize,
    ) -> Poll<io::Result<u64>> {
        loop {
            // Everything the flow has now, up to MAX bytes: it leaves in one write.
            let mut hold = false;
            while !self.p.read_done
                && *turn > 0
                && self.p.error.is_none()
                && self.queued < MAX
                && self.queue.len() < MAX_IOV
            {
                match r.poll_read_payload(cx) {
                    Poll::Ready(Ok(piece)) if piece.is_empty() => self.p.read_done = true,
                    Poll::Ready(Ok(piece)) => {
                        *turn = turn.saturating_sub(piece.len());
                        self.queued += piece.len();
                        self.queue.push_back(piece);
                    }
                    Poll::Ready(Err(e)) => self.p.error = Some(e),
                    Poll::Pending => {
                        // The rest of a frame is on its way (a busy carrier sends a frame
                        // in turns): wait for it and write the frame in one go. Writes of
                        // a turn's size would cost the socket's whole path (segments,
                        // wakeups at the far end) several times per frame.
                        hold = r.mid_frame() && self.queued < MAX;
                        break;
                    }
                }
            }
            if self.queue.is_empty() || hold {
                if let Some(e) = self.p.error.take() {
                    return Poll::Ready(Err(e));
                }
                if self.p.read_done {
                    return self.p.poll_end(cx, w);
                }
                return self.p.poll_idle(cx, w);
            }
            let n = if self.p.read_done && self.queue.len() == 1 {
                ready!(last(Pin::new(&mut *w), cx, &self.queue[0]))?
            } else {
                // Before the end, the last piece waits to go alone through `last`.
                let k = self.queue.len() - usize::from(self.p.read_done);
                let mut slices = [IoSlice::new(&[]); MAX_IOV];
                for (slot, piece) in slices.iter_mut().zip(self.queue.iter().take(k)) {
                    *slot = IoSlice::new(piece);
                }
                ready!(Pin::new(&mut *w).poll_write_vectored(cx, &slices[..k]))?
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.consume(n);
            self.p.wrote(n);
        }
    }
}

/// Bytes each direction of a relay reads in one poll of its task before it lets the
/// others run: a relay between two ends that are always ready (a bulk flow on a carrier
/// with room) would otherwise go on until the runtime's own budget stops it, 128 reads of
/// up to 64 KiB, several milliseconds in which nothing else on its thread runs — not the
/// flows that wait, nor the new ones, whose set-up waited behind those turns (a new
/// request through the agent beside three bulk downloads: 4–25 ms from its carrier frame's
/// arrival to the agent's dial). A relay that used its turn yields
/// ([`tokio::task::yield_now`]), which lets the runtime look at its sockets first.
pub const TURN: usize = 256 * 1024;

/// Runs both directions between `a` and `b` until both ended; the first error stops both.
async fn both_ways<A, B>(
    a: &mut A,
    b: &mut B,
    mut ab: impl Pump<A, B>,
    mut ba: impl Pump<B, A>,
) -> io::Result<(u64, u64)>
where
    A: RelayEnd + ?Sized,
    B: AsyncWrite + Unpin + ?Sized,
{
    let (mut ab_done, mut ba_done) = (None, None);
    loop {
        let step = poll_fn(|cx| {
            let (mut ab_turn, mut ba_turn) = (TURN, TURN);
            if ab_done.is_none()
                && let Poll::Ready(r) =
                    ab.poll_pump(cx, a, b, |w, cx, buf| w.poll_write(cx, buf), &mut ab_turn)
            {
                ab_done = Some(r?);
            }
            if ba_done.is_none()
                && let Poll::Ready(r) = ba.poll_pump(cx, b, a, A::poll_write_last, &mut ba_turn)
            {
                ba_done = Some(r?);
            }
            match (ab_done, ba_done) {
                (Some(x), Some(y)) => Poll::Ready(io::Result::Ok(Some((x, y)))),
                // A direction that used its turn has nothing to wake it: yield.
                _ if (ab_done.is_none() && ab_turn == 0) || (ba_done.is_none() && ba_turn == 0) => {
                    Poll::Ready(Ok(None))
                }
                _ => Poll::Pending,
            }
        })
        .await?;
        match step {
            Some(totals) => return Ok(totals),
            None => tokio::task::yield_now().await,
        }
    }
}

/// [`copy_bidirectional`] between a socket (`a`) and a flow (`b`), whose payload goes to
/// the socket without a copy ([`Pieces`]) and which keeps the buffers the socket is read
/// into ([`Chunked`]).
async fn copy_flow<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: RelayEnd + ?Sized,
    B: FlowEnd + ?Sized,
{
    both_ways(a, b, Chunked::new(), Pieces::default()).await
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
    both_ways(a, b, Direction::new(), Direction::new()).await
}

/// Relays an opened flow and the socket at its edge until both ended, and returns the
/// bytes moved (socket → flow, flow → socket). Only a clean end of both directions closes
/// the socket normally; a flow cut on either side resets the other: the socket is reset
/// (SO_LINGER 0, also when this future is dropped — see [`ResetUnlessDone`]) and the flow
/// gets a [`Frame::Reset`] naming the cause.
///
/// # Errors
///
/// The I/O error that cut the flow, after both sides were reset.
pub async fn relay_tcp<S>(tcp: TcpStream, conn: FlowConn<S>) -> io::Result<(u64, u64)>
where
    S: ReadChunk + WriteChunk,
{
    relay_tcp_metered(tcp, conn, None).await
}

/// Live byte counters of a relayed flow: added to as bytes move, so they also count the
/// bytes of flows that end in a reset (which [`relay_tcp`]'s totals cannot) and of flows
/// still running.
#[derive(Debug, Clone, Copy)]
pub struct Meter<'a> {
    /// Bytes from the socket into the flow.
    pub up: &'a AtomicU64,
    /// Bytes from the flow to the socket.
    pub down: &'a AtomicU64,
}

/// [`relay_tcp`], counting into `meter` as the bytes move.
///
/// # Errors
///
/// As [`relay_tcp`].
pub async fn relay_tcp_metered<S>(
    tcp: TcpStream,
    conn: FlowConn<S>,
    meter: Option<Meter<'_>>,
) -> io::Result<(u64, u64)>
where
    S: ReadChunk + WriteChunk,
{
    relay_guarded(tcp, conn, meter, None).await
}

/// [`relay_tcp_metered`], with the socket's receive buffer kept at its share of `shares`
/// when given.
async fn relay_guarded<S>(
    tcp: TcpStream,
    mut conn: FlowConn<S>,
    meter: Option<Meter<'_>>,
    shares: Option<&EdgeShares>,
) -> io::Result<(u64, u64)>
where
    S: ReadChunk + WriteChunk,
{
    let mut tcp = ResetUnlessDone::new(tcp);
    let moved = match shares {
        Some(shares) => {
            let mut edge = EdgeTcp::new(tcp.get_mut(), shares);
            copy_metered(&mut edge, &mut conn, meter).await
        }
        None => copy_metered(tcp.get_mut(), &mut conn, meter).await,
    };
    match moved {
        Ok(moved) => {
            tcp.done();
            Ok(moved)
        }
        Err(e) => {
            // The socket's peer reset, or the flow was cut (carrier lost, the other side's
            // `Reset`): tell the flow's other end (best effort); dropping `tcp` resets the
            // socket's peer.
            conn.reset(FlowError::new(ErrorKind::Reset, e.to_string()))
                .await;
            Err(e)
        }
    }
}

/// [`copy_bidirectional`] between a socket and a flow, through `meter` when given.
async fn copy_metered<A, S>(
    a: &mut A,
    conn: &mut FlowConn<S>,
    meter: Option<Meter<'_>>,
) -> io::Result<(u64, u64)>
where
    A: RelayEnd,
    S: ReadChunk + WriteChunk,
{
    match meter {
        Some(meter) => copy_flow(a, &mut Metered { inner: conn, meter }).await,
        None => copy_flow(a, conn).await,
    }
}

/// A flow's end that counts what is written to it (up) and read from it (down).
struct Metered<'a, 'm, S> {
    inner: &'a mut S,
    meter: Meter<'m>,
}

impl<F: FlowEnd> FlowEnd for Metered<'_, '_, F> {
    fn poll_read_payload(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Bytes>> {
        let r = self.inner.poll_read_payload(cx);
        if let Poll::Ready(Ok(piece)) = &r {
            self.meter
                .down
                .fetch_add(piece.len() as u64, Ordering::Relaxed);
        }
        r
    }

    fn mid_frame(&self) -> bool {
        self.inner.mid_frame()
    }

    fn poll_write_payload(
        &mut self,
        cx: &mut Context<'_>,
        data: &mut Bytes,
    ) -> Poll<io::Result<usize>> {
        let r = self.inner.poll_write_payload(cx, data);
        if let Poll::Ready(Ok(n)) = r {
            self.meter.up.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<'_, '_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut *self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.meter.up.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

/// The socket at a flow's edge: reset when dropped unless [`done`](Self::done) (the flow
/// ended cleanly both ways). A flow cut on the tunnel's side (the carrier died, the other
/// end's application reset) then reaches the socket's peer as an RST, never as a FIN that
/// would make a truncated upload look complete. This also holds when the task is dropped
/// (an agent whose drain is over exits with flows still running). The normal end costs
/// nothing.
#[derive(Debug)]
pub struct ResetUnlessDone {
    tcp: TcpStream,
    done: bool,
}

impl ResetUnlessDone {
    /// Guards `tcp`.
    pub fn new(tcp: TcpStream) -> ResetUnlessDone {
        ResetUnlessDone { tcp, done: false }
    }

    /// The socket.
    pub fn get_mut(&mut self) -> &mut TcpStream {
        &mut self.tcp
    }

    /// The flow ended cleanly: a drop closes the socket normally.
    pub fn done(&mut self) {
        self.done = true;
    }
}

impl Drop for ResetUnlessDone {
    fn drop(&mut self) {
        if !self.done
            && let Err(e) = self.tcp.set_zero_linger()
        {
            tracing::debug!("cannot reset a cut flow's socket: {e}");
        }
    }
}

/// Share of the TCP sockets at a relay's edges while few flows are open (their receive
/// buffer as asked of the kernel, and a window cap from it: [`edge_window_clamp`]), and
/// the receive buffer their listener or dial starts them with, which sets their window
/// scale: the connections `connect` and the gateway accept from their clients, and the
/// ones the agent dials to pods. One flow through connect on the lab needs about this
/// much: its reader is a busy process, so the window must cover more than the path's round
/// trip (128 KiB cost a single flow 28 %). With many flows each socket gets a share of
/// [`EDGE_BUDGET`] instead ([`edge_share`]), and a young one no more than
/// [`EDGE_MIN_SHARE`] ([`EDGE_YOUNG`]).
pub const EDGE_RECV_BUFFER: u32 = 512 * 1024;

/// What the shares of one process's edge sockets may add up to (each socket's window is
/// capped at 1.25× its share: [`edge_window_clamp`]). Those sockets are read only as fast
/// as the shared carrier goes, so whatever the kernel lets them buffer beyond that is
/// queue, not speed — and the queue of one flow is wait for all the others. With the
/// kernel's autotuning (up to `tcp_rmem`'s maximum, 32 MiB on our machines) 1 000 bulk
/// flows filled 1.3 GB of socket buffers, the host passed `tcp_mem`'s pressure mark, and
/// under pressure Linux cuts every socket's window to a few segments — the carrier's too,
/// which then stalled while the CPUs idled. A fixed
/// 512 KiB per socket (together with the clients' send buffers, see [`EDGE_MSS`]) still
/// reached the mark at 1 000 flows and let 50 LAN clients' shares drift apart (max/min
/// 1.7); a fixed 128 KiB was fair but slow for one flow. See docs/benchmarks.md.
pub const EDGE_BUDGET: usize = 8 * 1024 * 1024;

/// Smallest share an edge socket is given, however many flows are open (from 129
/// flows on, so it takes over from the budget there). Each read of an edge socket, and
/// each wake-up of its relay, costs about the same however few bytes it brings: with
/// 16 KiB, 1 000 bulk flows through connect spent 3× the CPU per byte of 8 flows outside
/// AES and copies (system calls, wake-ups, socket lookups), and moved 2.5 Gbit/s; with
/// 64 KiB they move 3.6–4.1 (docs/benchmarks.md, session 17). The host's TCP memory at
/// 1 000 flows rises with it (0.65–0.97 → 1.2–1.37 GB here, mostly the clients' own send
/// buffers following the larger windows), still under `tcp_mem`'s pressure mark.
pub const EDGE_MIN_SHARE: u32 = 64 * 1024;

/// For this long after it opens, an edge socket gets no more than [`EDGE_MIN_SHARE`]
/// as its share, whatever the budget allows. Flows come in bursts (a test suite, 50 LAN
/// PCs at 9 o'clock, `iperf3 -P 128`): the first sockets of a burst saw few others open
/// and took the full 512 KiB, their senders' windows and congestion windows grew to it
/// within a millisecond on a local path, and when the burst had arrived and their share
/// fell to 64 KiB the kernel dropped what those windows had already let in. A single
/// flow loses nothing measurable (its first 100 ms at an 80 KB window).
pub const EDGE_YOUNG: Duration = Duration::from_millis(100);

/// The share each edge socket gets while `open` of them are open in this process:
/// [`EDGE_RECV_BUFFER`] while [`EDGE_BUDGET`] covers that for all, else an equal share of
/// the budget, rounded down to a power of two (sockets are told again only when the share
/// halves or doubles) and never below [`EDGE_MIN_SHARE`].
pub fn edge_share(open: usize) -> u32 {
    let share = EDGE_BUDGET / open.max(1);
    if share >= EDGE_RECV_BUFFER as usize {
        return EDGE_RECV_BUFFER;
    }
    let pow2 = 1usize << (usize::BITS - 1 - share.max(1).leading_zeros());
    (pow2 as u32).max(EDGE_MIN_SHARE)
}

/// The cap on the window of an edge socket whose share is `share` ([`edge_share`];
/// `TCP_WINDOW_CLAMP`): about the window the kernel itself advertises for a receive buffer
/// of that size (79 KB for 64 KiB asked, with 1448-byte segments), so the cap takes from a
/// socket only what it kept from a bigger share. A smaller buffer alone does not take that
/// back: the kernel keeps the threshold the window grew to (`rcv_ssthresh`). Of 50 LAN
/// clients downloading through one gateway, the first few to start kept windows of up to
/// 117 KB against the others' 79 KB and got 1.2–2.4× their throughput
/// (docs/benchmarks.md, session 21). A cap at the size asked (64 KiB, below
/// what the kernel gives anyway) was far worse: a third of the flows ran at half speed.
pub fn edge_window_clamp(share: u32) -> u32 {
    share.saturating_add(share / 4)
}

/// Maximum segment size a redirect listener announces to the clients it accepts, and
/// [`dial_edge`] to the targets it dials: an Ethernet path's. A local client's connection
/// is delivered over loopback, which would announce 64 KiB; the client's kernel then sizes
/// its send buffer by that (twice or three times the congestion window in segments, each
/// counted as the announced size rounded up to a power of two), so every bulk upload held
/// megabytes of send queue, and 1 000 of them took the host into `tcp_mem` pressure
/// (1.5 GB), which then clamps every socket's buffers, the carrier's too. The client's own
/// route (the TUN, MTU 1400) keeps its segments below this anyway; LAN clients of a gateway
/// announce about this themselves. [`dial_edge`] announces it once more than 16 edge
/// sockets are open.
pub const EDGE_MSS: u32 = 1460;

/// The edge sockets open in one process, which share [`EDGE_BUDGET`].
#[derive(Debug, Default)]
pub struct EdgeShares {
    open: AtomicUsize,
}

/// This process's edge sockets (the agent's dials to pods; connect's and the gateway's
/// redirected connections).
pub static EDGES: EdgeShares = EdgeShares::new();

impl EdgeShares {
    /// No socket open yet.
    pub const fn new() -> EdgeShares {
        EdgeShares {
            open: AtomicUsize::new(0),
        }
    }

    /// Edge sockets open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// The share each socket should have now (its receive buffer, as asked).
    pub fn share(&self) -> u32 {
        edge_share(self.open())
    }

    fn join(&self) -> EdgeSeat<'_> {
        self.open.fetch_add(1, Ordering::Relaxed);
        EdgeSeat(self)
    }
}

/// One open edge socket, counted for as long as it lives.
struct EdgeSeat<'a>(&'a EdgeShares);

impl Drop for EdgeSeat<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An edge socket that keeps its buffer and window cap at its share: looked at before
/// every read (one atomic load, and a clock read while the socket is young), told the
/// kernel only when the share changed. Windows already advertised are kept by the kernel;
/// the next ones follow the new cap, so a socket opened while few flows ran gives up its
/// big window as others arrive, and gets it back as they leave (its window scale was set
/// when it opened at [`EDGE_RECV_BUFFER`]).
struct EdgeTcp<'a> {
    tcp: &'a mut TcpStream,
    shares: &'a EdgeShares,
    /// The share last told the kernel: a young one at first ([`edge_opened`]).
    applied: u32,
    /// Until when the socket is young (see [`EDGE_YOUNG`]); `None` once it is not.
    young_until: Option<Instant>,
}

impl<'a> EdgeTcp<'a> {
    fn new(tcp: &'a mut TcpStream, shares: &'a EdgeShares) -> EdgeTcp<'a> {
        EdgeTcp {
            tcp,
            shares,
            applied: EDGE_MIN_SHARE,
            young_until: Some(Instant::now() + EDGE_YOUNG),
        }
    }

    fn retune(&mut self) {
        let mut want = self.shares.share();
        if let Some(until) = self.young_until {
            if Instant::now() < until {
                want = want.min(EDGE_MIN_SHARE);
            } else {
                self.young_until = None;
            }
        }
        if want != self.applied {
            self.applied = want;
            apply_share(self.tcp, want);
        }
    }
}

/// Tells the kernel a socket's share: its receive buffer (as asked; the kernel doubles
/// it) and the cap on its window ([`edge_window_clamp`]).
fn apply_share(tcp: &TcpStream, share: u32) {
    if let Err(e) = socket2::SockRef::from(tcp).set_recv_buffer_size(share as usize) {
        tracing::debug!("cannot resize an edge socket's receive buffer: {e}");
    }
    if let Err(e) = kubelan_sys::set_tcp_window_clamp(tcp, edge_window_clamp(share)) {
        tracing::debug!("cannot cap an edge socket's window: {e}");
    }
}

/// Gives a socket that has just joined a relay's edge (accepted from a redirect listener,
/// or dialled by [`dial_edge`]) the share of a young socket ([`EDGE_YOUNG`]) at once,
/// before any byte is relayed: data that arrives while the flow is still being set up
/// would otherwise be let in under the listener's full window.
pub fn edge_opened(tcp: &TcpStream) {
    apply_share(tcp, EDGE_MIN_SHARE);
}

impl AsyncRead for EdgeTcp<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.retune();
        Pin::new(&mut *self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for EdgeTcp<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.tcp).poll_shutdown(cx)
    }
}

impl RelayEnd for EdgeTcp<'_> {
    fn poll_write_last(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.tcp).poll_write_last(cx, buf)
    }
}

/// [`relay_tcp_metered`] for a socket at a relay's edge (accepted by a listener or dialled
/// with [`EDGE_RECV_BUFFER`], and given its young share with [`edge_opened`] right after,
/// as [`dial_edge`] does): while it runs, the socket counts in [`EDGES`] and its buffer and
/// window cap follow its share ([`edge_share`]).
///
/// # Errors
///
/// As [`relay_tcp`].
pub async fn relay_edge<S>(
    tcp: TcpStream,
    conn: FlowConn<S>,
    meter: Option<Meter<'_>>,
) -> io::Result<(u64, u64)>
where
    S: ReadChunk + WriteChunk,
{
    relay_edge_in(&EDGES, tcp, conn, meter).await
}

async fn relay_edge_in<S>(
    shares: &EdgeShares,
    tcp: TcpStream,
    conn: FlowConn<S>,
    meter: Option<Meter<'_>>,
) -> io::Result<(u64, u64)>
where
    S: ReadChunk + WriteChunk,
{
    let _seat = shares.join();
    relay_guarded(tcp, conn, meter, Some(shares)).await
}

/// A TCP socket for a relay's edge, before it listens or connects: its receive buffer is
/// [`EDGE_RECV_BUFFER`], which also sets the window scale it will announce (for a
/// listener: the one its accepted sockets inherit).
///
/// # Errors
///
/// As creating a socket.
pub fn edge_socket(v6: bool) -> io::Result<tokio::net::TcpSocket> {
    let socket = if v6 {
        tokio::net::TcpSocket::new_v6()?
    } else {
        tokio::net::TcpSocket::new_v4()?
    };
    socket.set_recv_buffer_size(EDGE_RECV_BUFFER)?;
    Ok(socket)
}

/// Listens on `addr` for edge sockets: accepted connections inherit [`EDGE_RECV_BUFFER`]
/// (and the window scale it implies); give each its young share with [`edge_opened`] as it
/// is accepted, and relay it with [`relay_edge`]. For a relay whose clients are pods (the
/// relay pod of `expose`, `replace` and `run`); `connect` and the gateway make their own
/// redirect listener.
///
/// # Errors
///
/// As binding and listening on a socket.
pub fn listen_edge(addr: SocketAddr) -> io::Result<tokio::net::TcpListener> {
    let socket = edge_socket(addr.is_ipv6())?;
    // As `TcpListener::bind` does: a restarted relay rebinds a port in TIME-WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Whether a socket dialled now announces [`EDGE_MSS`] instead of its path's: once the
/// edge sockets' shares are below [`EDGE_RECV_BUFFER`] (more than 16 open). A target on
/// this host (expose's servers on 127.0.0.1) is reached over loopback, whose 64 KiB
/// segments fill a small share's window with one: 1 000 downloads through one expose
/// session moved 1.20 Gbit/s that way, 2.92 with Ethernet's segments. A lone flow keeps
/// loopback's (with them, expose's one-flow download measured 2.25-3.05 Gbit/s against
/// 2.91-3.59; docs/benchmarks.md, session 26). Only a cap: a path with a smaller MTU
/// announces less, as before.
fn caps_segments(shares: &EdgeShares) -> bool {
    edge_share(shares.open() + 1) < EDGE_RECV_BUFFER
}

/// Dials `addr` with [`EDGE_RECV_BUFFER`] (its window scale follows from it), then gives
/// the socket its young share ([`edge_opened`]); relay it with [`relay_edge`].
///
/// # Errors
///
/// As `TcpStream::connect`.
pub async fn dial_edge(addr: SocketAddr) -> io::Result<tokio::net::TcpStream> {
    let socket = edge_socket(addr.is_ipv6())?;
    if caps_segments(&EDGES) {
        socket2::SockRef::from(&socket).set_tcp_mss(EDGE_MSS)?;
    }
    let tcp = socket.connect(addr).await?;
    edge_opened(&tcp);
    Ok(tcp)
}

/// A failed dial of `addr`, typed for the flow's other end.
pub fn dial_error(addr: SocketAddr, e: &io::Error) -> FlowError {
    let kind = match e.kind() {
        io::ErrorKind::ConnectionRefused => ErrorKind::ConnectionRefused,
        io::ErrorKind::TimedOut => ErrorKind::Timeout,
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
            ErrorKind::Unreachable
        }
        _ => ErrorKind::Other,
    };
    FlowError::new(kind, format!("{addr}: {e}"))
}

/// What to do with one datagram from the flow.
#[derive(Debug)]
pub enum Outgoing {
    /// Send it on the socket.
    Send(Bytes),
    /// Answer the flow directly (the agent's DNS answers from its cache).
    Reply(Bytes),
    /// Drop it (malformed).
    Skip,
}

/// Serves an opened datagram flow: sends `Opened { peer }`, then relays between the
/// flow's `Datagram` frames and `sock` (connected to `peer`) until either side ends, the
/// socket fails (the flow gets a `Reset` with the reason; ICMP port unreachable shows up
/// here for UDP) or nothing arrives either way for `idle`. `outbound` decides per
/// datagram from the flow, `inbound` turns what the socket received into a datagram for
/// the flow. Returns the datagrams moved (socket → flow, flow → socket).
pub async fn relay_datagrams<S>(
    mut stream: S,
    leftover: BytesMut,
    sock: &UdpSocket,
    peer: SocketAddr,
    idle: Duration,
    mut outbound: impl FnMut(Bytes) -> Outgoing,
    inbound: impl Fn(&[u8]) -> Option<Bytes>,
) -> (u64, u64)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut down, mut up) = (0u64, 0u64);
    if write_frame(&mut stream, &Frame::Opened { peer })
        .await
        .is_err()
    {
        return (down, up);
    }
    let (rd, mut wr) = tokio::io::split(stream);
    let mut reader = FrameReader::with_buffer(rd, leftover);
    let mut buf = vec![0u8; 65_536];
    loop {
        let failed = tokio::select! {
            f = tokio::time::timeout(idle, reader.next()) => match f {
                Ok(Ok(Some(Frame::Datagram(d)))) => match outbound(d) {
                    Outgoing::Send(d) => {
                        up += 1;
                        sock.send(&d).await.err()
                    }
                    Outgoing::Reply(r) => {
                        if write_frame(&mut wr, &Frame::Datagram(r)).await.is_err() {
                            break;
                        }
                        None
                    }
                    Outgoing::Skip => None,
                },
                _ => break,
            },
            r = sock.recv(&mut buf) => match r {
                Ok(n) => {
                    if let Some(d) = inbound(&buf[..n]) {
                        if write_frame(&mut wr, &Frame::Datagram(d)).await.is_err() {
                            break;
                        }
                        down += 1;
                    }
                    None
                }
                Err(e) => Some(e),
            },
        };
        if let Some(e) = failed {
            let _ = write_frame(&mut wr, &Frame::Reset(dial_error(peer, &e))).await;
            break;
        }
    }
    let _ = wr.shutdown().await;
    (down, up)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testio::{Call, Log, Logged};
    use std::sync::Arc;
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

    /// A flow end that hands out scripted pieces (then its end, or an error) and takes
    /// every write. `None` is a read that is not ready yet (woken at once); after a piece
    /// marked `true` more of its frame is to come.
    struct Script {
        steps: VecDeque<Option<(io::Result<Bytes>, bool)>>,
        mid: bool,
    }

    impl Script {
        fn new(steps: impl IntoIterator<Item = Option<(io::Result<Bytes>, bool)>>) -> Script {
            Script {
                steps: steps.into_iter().collect(),
                mid: false,
            }
        }
    }

    impl FlowEnd for Script {
        fn poll_read_payload(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Bytes>> {
            match self.steps.pop_front() {
                Some(Some((r, mid))) => {
                    self.mid = mid;
                    Poll::Ready(r)
                }
                Some(None) => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                None => Poll::Ready(Ok(Bytes::new())),
            }
        }

        fn mid_frame(&self) -> bool {
            self.mid
        }

        fn poll_write_payload(
            &mut self,
            _: &mut Context<'_>,
            data: &mut Bytes,
        ) -> Poll<io::Result<usize>> {
            let n = data.len();
            data.advance(n);
            Poll::Ready(Ok(n))
        }
    }

    crate::testio::sink_writes!(Script);

    fn piece(b: &'static [u8], mid: bool) -> Option<(io::Result<Bytes>, bool)> {
        Some((Ok(Bytes::from_static(b)), mid))
    }

    /// Runs [`Pieces`] from a flow scripted with `steps` to a logged socket: its result,
    /// the socket's log, and what the socket's far side read.
    async fn pump(
        steps: impl IntoIterator<Item = Option<(io::Result<Bytes>, bool)>>,
    ) -> (io::Result<u64>, Vec<Call>, Vec<u8>) {
        let (mut a, mut a_app, _b, _b_app, log) = logged_pair();
        let mut flow = Script::new(steps);
        let mut dir = Pieces::default();
        let r = poll_fn(|cx| {
            dir.poll_pump(cx, &mut flow, &mut a, Logged::poll_write_last, &mut {
                usize::MAX
            })
        })
        .await;
        drop(a);
        let mut got = Vec::new();
        a_app.read_to_end(&mut got).await.unwrap();
        let calls = std::mem::take(&mut *log.lock().unwrap());
        (r, calls, got)
    }

    /// One read of a scripted socket.
    enum Read {
        /// Fills the buffer the read was given.
        Fill,
        Some(&'static [u8]),
        /// Not ready (woken at once).
        Wait,
        Fail,
    }

    /// A socket whose reads follow a script (then its end), noting each read's room.
    struct Reads {
        steps: VecDeque<Read>,
        rooms: Vec<usize>,
    }

    impl AsyncRead for Reads {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let room = buf.remaining();
            self.rooms.push(room);
            match self.steps.pop_front() {
                Some(Read::Fill) => buf.put_slice(&vec![b'f'; room]),
                Some(Read::Some(b)) => buf.put_slice(b),
                Some(Read::Wait) => {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Some(Read::Fail) => return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into())),
                None => {}
            }
            Poll::Ready(Ok(()))
        }
    }

    /// A flow end that keeps the buffers it is given and notes its shutdown.
    #[derive(Default)]
    struct Keeps {
        kept: Vec<Bytes>,
        shut: bool,
    }

    impl FlowEnd for Keeps {
        fn poll_read_payload(&mut self, _: &mut Context<'_>) -> Poll<io::Result<Bytes>> {
            Poll::Pending
        }

        fn poll_write_payload(
            &mut self,
            _: &mut Context<'_>,
            data: &mut Bytes,
        ) -> Poll<io::Result<usize>> {
            let n = data.len();
            self.kept.push(data.split_to(n));
            Poll::Ready(Ok(n))
        }
    }

    impl AsyncWrite for Keeps {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &[u8],
        ) -> Poll<io::Result<usize>> {
            panic!("a flow end is given its bytes as buffers, not copied")
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.shut = true;
            Poll::Ready(Ok(()))
        }
    }

    /// Runs [`Chunked`] from a socket scripted with `steps` into a [`Keeps`].
    async fn chunked(steps: impl IntoIterator<Item = Read>) -> (io::Result<u64>, Reads, Keeps) {
        let mut r = Reads {
            steps: steps.into_iter().collect(),
            rooms: Vec::new(),
        };
        let mut w = Keeps::default();
        let mut dir = Chunked::new();
        let res = poll_fn(|cx| {
            dir.poll_pump(
                cx,
                &mut r,
                &mut w,
                |w, cx, buf| w.poll_write(cx, buf),
                &mut { usize::MAX },
            )
        })
        .await;
        (res, r, w)
    }

    /// Each read goes to the flow as the buffer it was read into; a flow that fills its
    /// reads gets bigger ones, up to MAX, and short reads share what is left of one.
    #[tokio::test]
    async fn socket_reads_are_given_to_the_flow_as_they_are() {
        let (res, r, w) = chunked([
            Read::Fill,
            Read::Fill,
            Read::Wait,
            Read::Some(b"ab"),
            Read::Wait,
            Read::Some(b"cd"),
            Read::Wait,
            Read::Fill,
            Read::Fill,
            Read::Fill,
            Read::Fill,
            Read::Fill,
        ])
        .await;
        let total = res.unwrap();
        let sizes: Vec<usize> = w.kept.iter().map(Bytes::len).collect();
        assert_eq!(total, sizes.iter().sum::<usize>() as u64);
        assert_eq!(&sizes[..2], [START, 2 * START]);
        assert_eq!(&w.kept[2][..], b"ab");
        assert_eq!(&w.kept[3][..], b"cd");
        // "cd" was read into the room "ab" left in the same buffer.
        assert_eq!(w.kept[2].as_ptr().wrapping_add(2), w.kept[3].as_ptr());
        assert_eq!(r.rooms[4], r.rooms[3] - 2);
        assert_eq!(*sizes.last().unwrap(), MAX);
        assert!(w.shut, "the socket's end shuts the flow");
    }

    /// An error met while looking ahead comes after the bytes read before it; the flow is
    /// not shut (a cut socket is a reset, never a clean end).
    #[tokio::test]
    async fn a_socket_error_comes_after_the_bytes_before_it() {
        let (res, _, w) = chunked([Read::Some(b"last words"), Read::Fail]).await;
        assert_eq!(res.unwrap_err().kind(), io::ErrorKind::ConnectionReset);
        assert_eq!(w.kept, [Bytes::from_static(b"last words")]);
        assert!(!w.shut);
    }

    /// A frame that comes in pieces with waits between them is written whole, once its
    /// last piece is in; whole frames go at once.
    #[tokio::test]
    async fn a_frame_in_pieces_is_written_whole() {
        let (r, calls, got) = pump([
            piece(b"one", false),
            None,
            piece(b"tw", true),
            None,
            piece(b"o", true),
            None,
            piece(b"!", false),
            None,
        ])
        .await;
        assert_eq!(r.unwrap(), 7);
        let two = Call::Writev(b"two!".to_vec());
        assert_eq!(calls, [Call::Writev(b"one".to_vec()), two, Call::Shutdown]);
        assert_eq!(got, b"onetwo!");
    }

    /// A flow's pieces that are there together leave in one vectored write; the last one
    /// before the flow's end goes alone, as the last write, then the shutdown.
    #[tokio::test]
    async fn flow_pieces_leave_together_and_the_last_with_the_end() {
        let (r, calls, got) = pump([
            piece(b"ab", false),
            piece(b"cd", false),
            piece(b"ef", false),
        ])
        .await;
        assert_eq!(r.unwrap(), 6);
        let last = Call::Last(b"ef".to_vec());
        assert_eq!(
            calls,
            [Call::Writev(b"abcd".to_vec()), last, Call::Shutdown]
        );
        assert_eq!(got, b"abcdef");
    }

    /// A flow that fails after some pieces: they go out, then the error, and no shutdown
    /// (the relay resets the socket instead).
    #[tokio::test]
    async fn a_flow_error_comes_after_the_pieces_before_it() {
        let cut = Some((Err(io::ErrorKind::ConnectionAborted.into()), false));
        let (r, calls, got) = pump([piece(b"abc", false), cut]).await;
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::ConnectionAborted);
        assert_eq!(calls, [Call::Writev(b"abc".to_vec())]);
        assert_eq!(got, b"abc");
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
        let res = poll_fn(|cx| {
            dir.poll_pump(cx, &mut r, &mut w, |w, cx, b| w.poll_write(cx, b), &mut {
                usize::MAX
            })
        })
        .await;
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

    crate::testio::sink_writes!(CutFlow);

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

    /// How a test cuts a relayed flow.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Cut {
        /// The carrier dies (the far machine lost its link).
        CarrierLost,
        /// The flow's far end drops it (its application reset).
        FarReset,
        /// The relaying task is dropped (an agent's drain is over and it exits).
        TaskDropped,
        /// The socket's peer resets its connection.
        SocketReset,
        /// Nothing: both sides end cleanly.
        None,
    }

    /// A flow cut on the tunnel's side or by a stop resets the socket's peer (never a
    /// FIN, which would end a truncated upload cleanly); a socket reset reaches the far
    /// end of the flow as a reset. A clean end stays a FIN both ways.
    #[tokio::test]
    async fn a_cut_flow_is_a_reset_at_both_edges() {
        use crate::mux::{self, Side};
        for cut in [
            Cut::CarrierLost,
            Cut::FarReset,
            Cut::TaskDropped,
            Cut::SocketReset,
            Cut::None,
        ] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let tcp = TcpStream::connect(addr).await.unwrap();
            let (mut dest, _) = listener.accept().await.unwrap();
            let (c, b) = tokio::io::duplex(256 * 1024);
            let (far_mux, _) = mux::spawn(c, Side::Client);
            let (_near_mux, mut incoming) = mux::spawn(b, Side::Agent);
            let mut s = far_mux.open().await.unwrap();
            s.write_all(b"x").await.unwrap(); // the stream's first byte opens it
            s.flush().await.unwrap();
            let mut t = incoming.recv().await.unwrap();
            t.read_exact(&mut [0u8; 1]).await.unwrap();
            let mut far = Some(FlowConn::new(s, BytesMut::new()));
            let conn = far.as_mut().unwrap();
            let up: &'static AtomicU64 = Box::leak(Box::new(AtomicU64::new(0)));
            let down: &'static AtomicU64 = Box::leak(Box::new(AtomicU64::new(0)));
            let relay = tokio::spawn(async move {
                let meter = Meter { up, down };
                relay_tcp_metered(tcp, FlowConn::new(t, BytesMut::new()), Some(meter)).await
            });
            dest.write_all(b"hello").await.unwrap();
            let mut got = [0u8; 5];
            conn.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"hello");
            conn.write_all(b"upload").await.unwrap();
            conn.flush().await.unwrap();
            let mut uploaded = [0u8; 6];
            dest.read_exact(&mut uploaded).await.unwrap();
            // Counted as they moved, whatever the end: 5 bytes up, 6 down.
            assert_eq!(
                (up.load(Ordering::Relaxed), down.load(Ordering::Relaxed)),
                (5, 6),
                "{cut:?}"
            );
            match cut {
                Cut::CarrierLost => far_mux.close(),
                Cut::FarReset => far = None,
                Cut::TaskDropped => relay.abort(),
                Cut::SocketReset => {
                    dest.set_zero_linger().unwrap();
                    drop(dest);
                    let e = conn.read(&mut [0u8; 16]).await.unwrap_err();
                    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
                    let ended = tokio::time::timeout(Duration::from_secs(5), relay).await;
                    assert!(
                        ended.unwrap().unwrap().is_err(),
                        "the relay reports the cut"
                    );
                    continue;
                }
                Cut::None => {
                    conn.shutdown().await.unwrap();
                    dest.shutdown().await.unwrap();
                    let mut rest = Vec::new();
                    conn.read_to_end(&mut rest).await.unwrap();
                }
            }
            let ended = tokio::time::timeout(Duration::from_secs(5), relay)
                .await
                .unwrap_or_else(|_| panic!("{cut:?}: the relay did not end"));
            match cut {
                Cut::TaskDropped => assert!(ended.is_err(), "{cut:?}: {ended:?}"),
                Cut::None => assert_eq!(ended.unwrap().unwrap(), (5, 6)),
                _ => assert!(
                    ended.unwrap().is_err(),
                    "{cut:?}: the relay reports the cut"
                ),
            }
            let end = dest.read(&mut [0u8; 16]).await.map_err(|e| e.kind());
            if cut == Cut::None {
                assert_eq!(end, Ok(0), "a clean end is a FIN");
                continue;
            }
            assert_eq!(end, Err(io::ErrorKind::ConnectionReset), "{cut:?}");
            if let (Cut::TaskDropped, Some(conn)) = (cut, far.as_mut()) {
                let e = conn.read(&mut [0u8; 16]).await.unwrap_err();
                assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
            }
        }
    }

    /// The window cap is a quarter above the buffer asked, whatever its size.
    #[test]
    fn an_edge_sockets_window_cap_follows_its_buffer() {
        assert_eq!(edge_window_clamp(64 * 1024), 80 * 1024);
        assert_eq!(edge_window_clamp(EDGE_RECV_BUFFER), 640 * 1024);
        assert_eq!(edge_window_clamp(u32::MAX), u32::MAX);
    }

    /// Few flows get the full buffer; many share the budget, in powers of two, never
    /// below the floor; more flows never get more each.
    #[test]
    fn edge_sockets_share_the_budget() {
        assert_eq!(edge_share(0), EDGE_RECV_BUFFER);
        assert_eq!(edge_share(1), EDGE_RECV_BUFFER);
        assert_eq!(edge_share(16), EDGE_RECV_BUFFER);
        assert_eq!(edge_share(17), 256 * 1024);
        assert_eq!(edge_share(50), 128 * 1024);
        assert_eq!(edge_share(128), 64 * 1024);
        assert_eq!(edge_share(129), EDGE_MIN_SHARE);
        assert_eq!(edge_share(1000), EDGE_MIN_SHARE);
        assert_eq!(edge_share(usize::MAX), EDGE_MIN_SHARE);
        let mut last = EDGE_RECV_BUFFER;
        for open in 1..5000 {
            let b = edge_share(open);
            assert!(b <= last && b.is_power_of_two(), "{open}: {b}");
            let floor = open * EDGE_MIN_SHARE as usize;
            assert!(open * b as usize <= EDGE_BUDGET.max(floor), "{open}: {b}");
            last = b;
        }
    }

    /// Edge sockets start on edge terms however they came: accepted from [`listen_edge`],
    /// a connection has [`EDGE_RECV_BUFFER`] (not an autotuned buffer); dialled by
    /// [`dial_edge`] while more than 16 edges are open, the target is told [`EDGE_MSS`]
    /// (over loopback it would be told 64 KiB).
    #[tokio::test]
    async fn edge_sockets_start_on_edge_terms() {
        let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(usize::MAX);
        let rcvbuf = |tcp: &TcpStream| socket2::SockRef::from(tcp).recv_buffer_size().unwrap();

        let listener = listen_edge("127.0.0.1:0".parse().unwrap()).unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let asked = (EDGE_RECV_BUFFER as usize).min(rmem_max);
        assert_eq!(rcvbuf(&accepted), 2 * asked);
        // The plain client got loopback's segment size: what the cap below prevents.
        let plain = socket2::SockRef::from(&accepted).tcp_mss().unwrap();
        assert!(plain > EDGE_MSS, "loopback's segments: {plain}");
        drop(client);

        // Dialled while the edges are busy: Ethernet's segments (the test cannot hold 17
        // of this process's edge seats without disturbing other tests, so it checks the
        // rule and a socket given the cap as `dial_edge` gives it).
        let shares = EdgeShares::new();
        assert!(!caps_segments(&shares));
        let seats: Vec<_> = (0..16).map(|_| shares.join()).collect();
        assert!(caps_segments(&shares), "the 17th edge socket");
        drop(seats);
        assert!(!caps_segments(&shares));
        let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket2::SockRef::from(&socket)
            .set_tcp_mss(EDGE_MSS)
            .unwrap();
        let _dialled = socket.connect(target.local_addr().unwrap()).await.unwrap();
        let (at_target, _) = target.accept().await.unwrap();
        let told = socket2::SockRef::from(&at_target).tcp_mss().unwrap();
        assert!(told <= EDGE_MSS, "the target's segments: {told}");
    }

    /// An edge socket's receive buffer and the cap on its window follow its share as flows
    /// come and go, a young socket gets no more than the floor, and the count of open edge
    /// sockets is right again after the relay ended.
    #[tokio::test]
    async fn an_edge_sockets_buffer_follows_its_share() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut tcp = dial_edge(addr).await.unwrap();
        let (mut peer, _) = listener.accept().await.unwrap();
        // The kernel doubles the buffer it is asked for (its bookkeeping), after capping
        // it at `rmem_max` (212 992 on many hosts).
        let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(usize::MAX);
        let rcvbuf = |tcp: &TcpStream| socket2::SockRef::from(tcp).recv_buffer_size().unwrap();
        let clamp = |tcp: &TcpStream| kubelan_sys::tcp_window_clamp(tcp).unwrap();
        let holds = |tcp: &TcpStream, share: u32| {
            let asked = (share as usize).min(rmem_max);
            assert_eq!(rcvbuf(tcp), 2 * asked, "buffer for {share}");
            assert_eq!(
                clamp(tcp),
                edge_window_clamp(share),
                "window cap for {share}"
            );
        };
        // Dialled: young from the start, before any read.
        holds(&tcp, EDGE_MIN_SHARE);

        let shares = EdgeShares::new();
        let _mine = shares.join();
        assert_eq!(shares.share(), EDGE_RECV_BUFFER);
        let mut buf = [0u8; 8];
        {
            let mut edge = EdgeTcp::new(&mut tcp, &shares);
            let mut read_one = async |edge: &mut EdgeTcp<'_>| {
                peer.write_all(b"a").await.unwrap();
                edge.read_exact(&mut buf[..1]).await.unwrap();
            };
            // Alone, but young: the floor.
            read_one(&mut edge).await;
            holds(edge.tcp, EDGE_MIN_SHARE);
            // Grown up: the whole share.
            std::thread::sleep(EDGE_YOUNG);
            read_one(&mut edge).await;
            assert_eq!(edge.young_until, None);
            holds(edge.tcp, EDGE_RECV_BUFFER);
            // 99 others come: a hundredth of the budget, rounded down to a power of two.
            let others: Vec<_> = (0..99).map(|_| shares.join()).collect();
            assert_eq!(shares.share(), 64 * 1024);
            read_one(&mut edge).await;
            holds(edge.tcp, 64 * 1024);
            // They leave: the full share again.
            drop(others);
            read_one(&mut edge).await;
            holds(edge.tcp, EDGE_RECV_BUFFER);
        }

        // relay_edge counts its socket while it runs, and only then.
        let shares: &'static EdgeShares = Box::leak(Box::new(EdgeShares::new()));
        let (c, b) = tokio::io::duplex(64 * 1024);
        let mut far = FlowConn::new(c, BytesMut::new());
        let relay = tokio::spawn(relay_edge_in(
            shares,
            tcp,
            FlowConn::new(b, BytesMut::new()),
            None,
        ));
        peer.write_all(b"hi").await.unwrap();
        let mut got = [0u8; 2];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(shares.open(), 1);
        peer.shutdown().await.unwrap();
        far.shutdown().await.unwrap();
        let _ = far.read_to_end(&mut Vec::new()).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), relay)
            .await
            .unwrap();
        assert_eq!(shares.open(), 0);
    }

    /// A datagram flow relays both ways through a connected socket and ends when idle.
    #[tokio::test]
    async fn datagrams_relay_both_ways_and_end_when_idle() {
        use crate::mux::{self, Side};
        let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = echo.recv_from(&mut buf).await {
                let _ = echo.send_to(&buf[..n], from).await;
            }
        });
        let (c, b) = tokio::io::duplex(256 * 1024);
        let (far_mux, _) = mux::spawn(c, Side::Client);
        let (_near_mux, mut incoming) = mux::spawn(b, Side::Agent);
        let mut s = far_mux.open().await.unwrap();
        write_frame(&mut s, &Frame::Datagram(Bytes::from_static(b"one")))
            .await
            .unwrap();
        let t = incoming.recv().await.unwrap();
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        sock.connect(echo_addr).await.unwrap();
        let relay = tokio::spawn(async move {
            relay_datagrams(
                t,
                BytesMut::new(),
                &sock,
                echo_addr,
                Duration::from_millis(300),
                Outgoing::Send,
                |d| Some(Bytes::copy_from_slice(d)),
            )
            .await
        });
        let mut r = FrameReader::new(s);
        assert_eq!(
            r.next().await.unwrap(),
            Some(Frame::Opened { peer: echo_addr })
        );
        assert_eq!(
            r.next().await.unwrap(),
            Some(Frame::Datagram(Bytes::from_static(b"one")))
        );
        let t0 = std::time::Instant::now();
        let moved = tokio::time::timeout(Duration::from_secs(5), relay)
            .await
            .expect("an idle flow ends")
            .unwrap();
        assert_eq!(moved, (1, 1));
        assert!(
            t0.elapsed() >= Duration::from_millis(250),
            "{:?}",
            t0.elapsed()
        );
        assert_eq!(r.next().await.unwrap(), None, "ended with the stream's FIN");
    }

    #[test]
    fn dial_errors_are_typed() {
        let a: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let e = dial_error(a, &io::ErrorKind::ConnectionRefused.into());
        assert_eq!(e.kind, ErrorKind::ConnectionRefused);
        assert!(e.message.starts_with("127.0.0.1:9: "), "{}", e.message);
        assert_eq!(
            dial_error(a, &io::ErrorKind::TimedOut.into()).kind,
            ErrorKind::Timeout
        );
        assert_eq!(
            dial_error(a, &io::ErrorKind::HostUnreachable.into()).kind,
            ErrorKind::Unreachable
        );
    }

    /// An end that is always ready: reads give `left` bytes (then the end of stream),
    /// writes take everything; counts what it gave.
    struct Eager {
        left: usize,
        gave: Arc<AtomicUsize>,
    }

    impl AsyncRead for Eager {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let n = buf.remaining().min(self.left);
            buf.put_slice(&vec![7; n]);
            self.left -= n;
            self.gave.fetch_add(n, Ordering::Relaxed);
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Eager {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            b: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Ok(b.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl RelayEnd for Eager {}

    #[tokio::test(flavor = "current_thread")]
    async fn a_relay_between_ends_that_are_always_ready_lets_others_run() {
        let gave = Arc::new(AtomicUsize::new(0));
        let total = 64 * TURN;
        let mut a = Eager {
            left: total,
            gave: gave.clone(),
        };
        let mut b = Eager {
            left: 0,
            gave: Arc::new(AtomicUsize::new(0)),
        };
        let relay = tokio::spawn(async move { copy_bidirectional(&mut a, &mut b).await });
        // Spawned after the relay, so it runs after the relay's first poll: by then the
        // relay may have read one turn (and one more read), not everything.
        let seen = tokio::spawn({
            let gave = gave.clone();
            async move { gave.load(Ordering::Relaxed) }
        });
        let seen = seen.await.unwrap();
        assert!(seen > 0, "the relay had not run first");
        assert!(
            seen <= TURN + MAX,
            "the relay read {seen} bytes before anything else ran"
        );
        assert_eq!(relay.await.unwrap().unwrap(), (total as u64, 0));
    }
}
