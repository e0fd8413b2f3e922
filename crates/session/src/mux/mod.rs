//! The carrier multiplexer: many streams over one byte stream (wire format in
//! [`kubelan_proto::mux`]).
//!
//! Built for latency and few system calls. A stream's `poll_write` encodes its frame into
//! the carrier's one output buffer — no channel, no copy per stream. Its `poll_flush` (or
//! `poll_shutdown`) hands the buffer to the carrier's driver task, which is woken at once
//! but runs after the tasks that are already ready: when one batch of socket events wakes
//! many streams, the frames they all flush leave in one `send` (and one TLS record), and a
//! response, its end and the stream's FIN always do. Writers must flush, as with any
//! buffered writer. A flush of 16 KiB or more, or 64 KiB written, goes to the carrier from
//! the writing task itself, so bulk data does not wait for a hand-off; when the carrier's
//! socket is full the driver takes over and writers keep appending while it holds less
//! than 256 KiB. From then on, and while any stream has bytes held back, a write goes to its
//! stream's own small queue (a chunk per write, until it holds [`HELD`] bytes) and the
//! driver takes [`QUANTUM`] bytes from each such stream in turn as the carrier drains,
//! moving the chunks into one vectored write without copying them — round robin in bytes, so
//! streams share a busy carrier evenly whatever the size of their writes, and a writer only
//! waits for its own stream's buffer. The driver also reads: it decodes frames and hands
//! payload to the streams' queues, waking their readers.
//!
//! Flow control is per stream (credit in WINDOW frames): a stream's window starts at
//! [`INITIAL_WINDOW`] and doubles each time its reader has consumed a whole window, up to
//! [`MAX_WINDOW`] — bulk streams get room for long, fast paths, idle ones stay cheap.
//! The windows of one carrier share [`RECV_BUDGET`]: a window grows only while the
//! carrier's windows sum to less, and when many streams push the sum beyond it (each
//! starts with [`INITIAL_WINDOW`]), grown windows give back half at their next credit,
//! down to [`MIN_WINDOW`]. What a peer can make this side queue is then bounded by the
//! budget and the number of streams, not by [`MAX_WINDOW`] per stream.
//!
//! Measured against yamux (which this replaced): see `docs/benchmarks.md`.

use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, Bytes, BytesMut};
use kubelan_proto::mux::{
    self as wire, FIN, INITIAL_WINDOW, MAX_PAYLOAD, MAX_WINDOW, MuxFrame, MuxKind, PREFACE, RST,
    SYN,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::flow::{ReadChunk, WriteChunk};

/// Most streams a carrier may hold at once (flows plus the control stream).
pub const MAX_STREAMS: usize = 32_768;
/// What the receive windows of one carrier's streams may sum to before they stop growing
/// (see the module's documentation). One stream can still grow to [`MAX_WINDOW`]; eight
/// bulk streams to 8 MiB each.
pub const RECV_BUDGET: usize = 64 * 1024 * 1024;
/// The smallest a window shrinks to while the carrier is over [`RECV_BUDGET`]: the window
/// every stream starts with. (Measured with 1 000 bulk flows: windows of 128 KiB left the
/// senders' buffers waiting for credit, and their memory grew by half.)
pub const MIN_WINDOW: u32 = INITIAL_WINDOW;
/// Output bytes buffered for a busy carrier before streams take turns (see [`QUANTUM`]).
pub const HIGH_WATER: usize = 1024 * 1024;
/// Buffered output bytes at which a write goes to the carrier without waiting for a flush.
const WRITE_THROUGH: usize = 64 * 1024;
/// Buffered output bytes from which a flush writes from the flushing task instead of
/// handing off to the driver: waiting for other streams pays only for small frames.
const FLUSH_INLINE: usize = 16 * 1024;
/// Bytes the driver asks of the carrier per read.
const READ_CHUNK: usize = 64 * 1024;
/// Bytes the driver reads from the carrier in one poll before it yields
/// ([`tokio::task::yield_now`]): the streams' readers and the runtime's sockets get their
/// turn (as a relay's: [`crate::relay::TURN`]) instead of waiting while it decrypts and
/// dispatches megabytes.
const READ_TURN: usize = 256 * 1024;

/// Which end of the carrier this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The kubelan client (opens the streams, sends the preface).
    Client,
    /// The agent (accepts them).
    Agent,
}

/// Why a stream could not be opened.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MuxError {
    /// The carrier has ended.
    #[error("the carrier is closed{}", .0.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    Closed(Option<String>),
    /// [`MAX_STREAMS`] streams are open.
    #[error("{MAX_STREAMS} streams are already open on this carrier")]
    TooManyStreams,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind; carry on.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Appends the first `n` bytes of `bufs` to `dst`.
fn put_first(dst: &mut BytesMut, bufs: &[IoSlice<'_>], mut n: usize) {
    for b in bufs {
        if n == 0 {
            break;
        }
        let take = b.len().min(n);
        dst.extend_from_slice(&b[..take]);
        n -= take;
    }
}

type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// The carrier's sending side.
struct Out {
    io: Option<Writer>,
    /// Frames to send, in order, before `buf`: held bytes moved here by [`Out::fill`]
    /// without a copy (the carrier is written with vectored writes).
    segs: VecDeque<Bytes>,
    /// Bytes in `segs`.
    segs_len: usize,
    /// Frames encoded here (control frames, the direct writes of an uncontended carrier),
    /// after `segs`.
    buf: BytesMut,
    /// Bytes went to `io` since its last successful flush (TLS holds records until then).
    unflushed: bool,
    /// The driver owns `io` until `buf` is drained; nobody else writes meanwhile.
    driver_owns: bool,
    driver: Option<Waker>,
    /// Streams with bytes in their [`Held`] buffers, each at most once, served in turn a
    /// [`QUANTUM`] at a time by [`Out::fill`]. (Earlier designs woke every waiting writer
    /// when the buffer drained — each wake-up found it full again and a few streams took
    /// the carrier — then handed writers turns of one frame, which is not one share when
    /// one relay writes 2 KiB and another 64 KiB, and chained wake-ups through hundreds of
    /// tasks.)
    ready: VecDeque<Arc<Cell>>,
}

impl Out {
    fn data(&mut self, flags: u8, stream: u32, payload: &[u8]) {
        self.data_from(flags, stream, &[IoSlice::new(payload)], payload.len());
    }

    /// A Data frame carrying the first `n` bytes of `bufs`.
    fn data_from(&mut self, flags: u8, stream: u32, bufs: &[IoSlice<'_>], n: usize) {
        wire::put_header(&mut self.buf, MuxKind::Data, flags, stream, n as u32);
        put_first(&mut self.buf, bufs, n);
    }

    /// Bytes waiting to be written to the carrier.
    fn queued(&self) -> usize {
        self.segs_len + self.buf.len()
    }

    /// Moves what `buf` holds to the end of `segs`, so that what follows may be a
    /// segment of its own.
    fn seal(&mut self) {
        if !self.buf.is_empty() {
            let b = self.buf.split().freeze();
            self.segs_len += b.len();
            self.segs.push_back(b);
        }
    }

    /// Frames held bytes, [`QUANTUM`] bytes from each ready stream in turn, until
    /// [`FILL`] bytes wait for the carrier or nothing is held. The held chunks themselves
    /// go to `segs` (no copy); only the frame headers are written. Collects the wakers
    /// of writers whose stream has room again, to wake once the lock is released.
    fn fill(&mut self, woken: &mut Vec<Waker>) {
        while self.queued() < FILL {
            let Some(cell) = self.ready.pop_front() else {
                break;
            };
            let mut held = lock(&cell.held);
            let n = held.len.min(QUANTUM);
            let mut flags = if std::mem::take(&mut held.syn) {
                SYN
            } else {
                0
            };
            if n == held.len && std::mem::take(&mut held.fin) {
                flags |= FIN;
            }
            if n > 0 || flags != 0 {
                wire::put_header(&mut self.buf, MuxKind::Data, flags, cell.id, n as u32);
                if n > 0 {
                    self.seal();
                    self.segs_len += held.take_into(n, &mut self.segs);
                }
            }
            if held.len == 0 {
                if std::mem::take(&mut held.rst) {
                    self.data(RST, cell.id, &[]);
                }
                held.queued = false;
            } else {
                self.ready.push_back(cell.clone());
            }
            if held.len <= HELD / 2
                && let Some(w) = held.waker.take()
            {
                woken.push(w);
            }
        }
    }

    /// Whether `cell`'s frames must queue behind what it holds (they keep their order).
    fn holds(cell: &Cell) -> bool {
        lock(&cell.held).queued
    }

    fn window(&mut self, stream: u32, increment: u32) {
        wire::put_header(&mut self.buf, MuxKind::Window, 0, stream, increment);
    }

    /// Writes what is buffered, with `cx`'s task as the one to wake. Unless it all went
    /// out, the driver takes over (it polls again, so its waker replaces this one).
    /// Returns the write error, if the carrier failed.
    fn push(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        if self.driver_owns || self.io.is_none() {
            return None;
        }
        match self.poll_drain(cx) {
            Poll::Ready(Ok(())) => None,
            Poll::Ready(Err(e)) => Some(e),
            Poll::Pending => {
                self.driver_owns = true;
                if let Some(w) = self.driver.take() {
                    w.wake();
                }
                None
            }
        }
    }

    /// Asks the driver to write what is buffered. The driver is woken now but runs after
    /// the tasks that are already ready, so the frames those tasks flush in the meantime
    /// (many streams woken by one batch of socket events) leave in the same write.
    fn hand_off(&mut self) {
        if self.driver_owns || self.io.is_none() || self.queued() == 0 {
            return;
        }
        self.driver_owns = true;
        if let Some(w) = self.driver.take() {
            w.wake();
        }
    }

    /// One write of what waits: `buf` alone, or the segments and then `buf` as one
    /// vectored write.
    fn poll_write_some(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.io.as_ref().is_some_and(|io| !io.is_write_vectored()) {
            // A carrier that writes one slice at a time would send each frame header
            // alone: give it one buffer.
            self.flatten();
        }
        let Some(io) = self.io.as_mut() else {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        };
        if self.segs.is_empty() {
            return Pin::new(&mut **io).poll_write(cx, &self.buf);
        }
        let mut iov = [IoSlice::new(&[]); MAX_IOV];
        let mut k = 0;
        for seg in self.segs.iter().take(MAX_IOV - 1) {
            iov[k] = IoSlice::new(seg);
            k += 1;
        }
        if k == self.segs.len() && !self.buf.is_empty() {
            iov[k] = IoSlice::new(&self.buf);
            k += 1;
        }
        Pin::new(&mut **io).poll_write_vectored(cx, &iov[..k])
    }

    /// Copies the segments in front of `buf` into it: everything queued, in one buffer.
    fn flatten(&mut self) {
        if self.segs.is_empty() {
            return;
        }
        let mut flat = BytesMut::with_capacity(self.queued());
        for seg in self.segs.drain(..) {
            flat.extend_from_slice(&seg);
        }
        flat.extend_from_slice(&self.buf);
        self.buf = flat;
        self.segs_len = 0;
    }

    /// Drops the first `n` bytes written: whole segments, then the front of `buf`.
    fn consume(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.segs.front_mut() else {
                self.buf.advance(n);
                return;
            };
            let k = front.len().min(n);
            front.advance(k);
            self.segs_len -= k;
            n -= k;
            if front.is_empty() {
                self.segs.pop_front();
            }
        }
    }

    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.io.is_none() {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        while self.queued() > 0 {
            let n = ready!(self.poll_write_some(cx))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.consume(n);
            self.unflushed = true;
        }
        let Some(io) = self.io.as_mut() else {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        };
        if self.unflushed {
            ready!(Pin::new(&mut **io).poll_flush(cx))?;
            self.unflushed = false;
        }
        Poll::Ready(Ok(()))
    }
}

/// Slices given to one vectored write of the carrier.
const MAX_IOV: usize = 64;

/// A stream's bytes waiting for their turn on a busy carrier (see [`Out::ready`]).
/// Locked after [`Shared::out`].
#[derive(Default)]
struct Held {
    /// The bytes, as written (one chunk per write).
    chunks: VecDeque<Bytes>,
    /// Bytes in `chunks`.
    len: usize,
    /// In [`Out::ready`] (or flags still to send).
    queued: bool,
    /// The first frame out of `data` opens the stream.
    syn: bool,
    /// FIN after `data`.
    fin: bool,
    /// RST after `data` (the stream was dropped).
    rst: bool,
    /// The task that last found `data` full, woken when there is room again.
    waker: Option<Waker>,
}

/// Where [`MuxStream::write_frame`] puts a frame's payload.
enum Place<'a> {
    /// Straight into the carrier's buffer, as a Data frame with these flags on this stream.
    Out(&'a mut Out, u8, u32),
    /// Into the stream's held bytes, framed when its turn comes.
    Held(&'a mut Held),
}

impl Place<'_> {
    /// Puts the first `n` bytes of `bufs` there (their one copy).
    fn put_first(self, bufs: &[IoSlice<'_>], n: usize) {
        match self {
            Place::Out(out, flags, id) => out.data_from(flags, id, bufs, n),
            Place::Held(held) => held.put(bufs, n),
        }
    }
}

impl Held {
    /// Appends `head` (copied) and `body` (as it is): a writer's own buffer is kept, not
    /// copied, until the stream's turn sends it.
    fn put_owned(&mut self, head: &[u8], body: Bytes) {
        if !head.is_empty() {
            self.len += head.len();
            self.chunks.push_back(Bytes::copy_from_slice(head));
        }
        self.len += body.len();
        self.chunks.push_back(body);
    }

    /// Appends the first `n` bytes of `bufs` as one chunk (their one copy).
    fn put(&mut self, bufs: &[IoSlice<'_>], n: usize) {
        let mut chunk = Vec::with_capacity(n);
        let mut left = n;
        for b in bufs {
            let k = b.len().min(left);
            chunk.extend_from_slice(&b[..k]);
            left -= k;
        }
        self.len += n;
        self.chunks.push_back(Bytes::from(chunk));
    }

    /// Moves the first `n` bytes (at most `len`), as the chunks that hold them, to the
    /// end of `into`; returns how many bytes moved.
    fn take_into(&mut self, n: usize, into: &mut VecDeque<Bytes>) -> usize {
        let mut moved = 0;
        while moved < n {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            let chunk = if front.len() <= n - moved {
                self.chunks.pop_front().unwrap_or_default()
            } else {
                front.split_to(n - moved)
            };
            moved += chunk.len();
            into.push_back(chunk);
        }
        self.len -= moved;
        moved
    }
}

#[derive(Default)]
struct StreamState {
    queue: VecDeque<Bytes>,
    /// Credit granted to the peer and not yet used by it.
    recv_credit: u32,
    /// Current receive window.
    window: u32,
    /// Payload read by the application since the last WINDOW frame.
    consumed: u32,
    /// Payload read in the current window (for growing it).
    read_in_window: u32,
    fin_recv: bool,
    reset_recv: bool,
    read_waker: Option<Waker>,
    /// Payload bytes in `queue`.
    queued: usize,
    /// Queued bytes at which the waiting reader is woken (1: any byte; more while it waits
    /// for the rest of a frame, see [`ReadChunk::set_read_lowat`]). The end of the stream,
    /// a reset and the carrier's loss wake it whatever is queued.
    read_lowat: usize,
    send_credit: u32,
    /// The peer knows this stream (we sent SYN, or the peer opened it).
    known: bool,
    fin_sent: bool,
    write_waker: Option<Waker>,
    carrier_closed: bool,
}

impl StreamState {
    fn new(known: bool) -> StreamState {
        StreamState {
            recv_credit: INITIAL_WINDOW,
            window: INITIAL_WINDOW,
            send_credit: INITIAL_WINDOW,
            known,
            ..StreamState::default()
        }
    }

    fn wake_all(&mut self) {
        if let Some(w) = self.read_waker.take() {
            w.wake();
        }
        if let Some(w) = self.write_waker.take() {
            w.wake();
        }
    }
}

struct Cell {
    id: u32,
    state: Mutex<StreamState>,
    held: Mutex<Held>,
}

impl Cell {
    fn new(id: u32, known: bool) -> Cell {
        Cell {
            id,
            state: Mutex::new(StreamState::new(known)),
            held: Mutex::new(Held::default()),
        }
    }
}

/// Bytes a busy carrier takes from one stream before the next stream's turn: fair in
/// bytes, small enough that fifty streams take turns within a few milliseconds.
pub const QUANTUM: usize = 16 * 1024;
/// Bytes the driver frames from the streams' turns for one write to a busy carrier: enough
/// for few system calls, little enough that what is already framed (first come, first
/// served) stays a small part of what waits.
const FILL: usize = 256 * 1024;
/// Bytes one stream holds while the carrier is busy before its writer waits (a write is
/// taken whole up to this size, so a stream holds less than twice this); the writer is
/// woken when turns have taken it down to half: it has two rounds of turns to run again
/// before its stream runs dry, and is woken once per two quanta, not per one.
pub const HELD: usize = 4 * QUANTUM;

struct Streams {
    map: HashMap<u32, Arc<Cell>>,
    next_id: u32,
    closed: bool,
}

struct Shared {
    out: Mutex<Out>,
    streams: Mutex<Streams>,
    closed: CancellationToken,
    reason: Mutex<Option<String>>,
    side: Side,
    /// When the carrier was set up; [`Shared::last_rx`] counts from here.
    born: std::time::Instant,
    /// Milliseconds after `born` when bytes last arrived from the peer.
    last_rx: AtomicU64,
    /// The receive windows of the streams in `streams`, summed.
    committed: AtomicUsize,
    /// [`RECV_BUDGET`] (smaller in tests).
    budget: usize,
}

impl Shared {
    /// Notes that bytes arrived from the peer.
    fn heard(&self) {
        let ms = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_rx.store(ms, Ordering::Relaxed);
    }

    /// Ends the carrier with `reason` (the first reason wins).
    fn fail(&self, reason: String) {
        lock(&self.reason).get_or_insert(reason);
        self.closed.cancel();
    }

    fn peer_opens(&self, id: u32) -> bool {
        match self.side {
            Side::Agent => !id.is_multiple_of(2),
            Side::Client => id.is_multiple_of(2),
        }
    }
}

/// Opens streams on a carrier; cheap to clone.
#[derive(Clone)]
pub struct MuxHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for MuxHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MuxHandle")
            .field("side", &self.shared.side)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl MuxHandle {
    /// Opens a new stream. Nothing is sent until the first write (its frame carries SYN),
    /// so opening costs no round trip and no task hand-off.
    ///
    /// # Errors
    ///
    /// [`MuxError::Closed`] once the carrier ended, [`MuxError::TooManyStreams`].
    pub async fn open(&self) -> Result<MuxStream, MuxError> {
        self.open_now()
    }

    fn open_now(&self) -> Result<MuxStream, MuxError> {
        let mut s = lock(&self.shared.streams);
        if s.closed || self.shared.closed.is_cancelled() {
            return Err(MuxError::Closed(self.close_reason()));
        }
        if s.map.len() >= MAX_STREAMS || s.next_id > u32::MAX - 2 {
            return Err(MuxError::TooManyStreams);
        }
        let id = s.next_id;
        s.next_id += 2;
        let cell = Arc::new(Cell::new(id, false));
        s.map.insert(id, cell.clone());
        self.shared
            .committed
            .fetch_add(INITIAL_WINDOW as usize, Ordering::Relaxed);
        Ok(MuxStream {
            cell,
            shared: self.shared.clone(),
            urgent: false,
            lowat: 1,
        })
    }

    /// Which end of the carrier this is.
    pub fn side(&self) -> Side {
        self.shared.side
    }

    /// Whether the carrier has ended.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.is_cancelled()
    }

    /// Resolves when the carrier has ended.
    pub async fn closed(&self) {
        self.shared.closed.cancelled().await;
    }

    /// Tears the carrier down: every stream on it ends.
    pub fn close(&self) {
        self.shared.fail("closed by this side".into());
    }

    /// Streams open on this carrier (the control stream included); a carrier being
    /// retired closes when only its control stream is left. Takes the stream table's lock:
    /// for occasional checks, not for every flow.
    pub fn open_streams(&self) -> usize {
        lock(&self.shared.streams).map.len()
    }

    /// How long nothing arrived from the peer. A carrier busy with other streams' data is
    /// alive even when its control frames wait behind that data, so keep-alive checks
    /// count any bytes received, not only answers to pings.
    pub fn quiet_for(&self) -> std::time::Duration {
        let last = std::time::Duration::from_millis(self.shared.last_rx.load(Ordering::Relaxed));
        self.shared.born.elapsed().saturating_sub(last)
    }

    /// Why the carrier ended (`None` while it runs).
    pub fn close_reason(&self) -> Option<String> {
        if !self.is_closed() {
            return None;
        }
        lock(&self.shared.reason).clone()
    }
}

/// Runs the multiplexer over `io` with a driver task. Returns the handle for outbound
/// streams and the channel of inbound ones. The carrier ends when it fails, the peer
/// closes it, breaks the protocol, or [`MuxHandle::close`] is called; the handle's
/// `closed()` then resolves and every stream reads EOF (or fails writing).
pub fn spawn<T>(io: T, side: Side) -> (MuxHandle, mpsc::UnboundedReceiver<MuxStream>)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    spawn_with_budget(io, side, RECV_BUDGET)
}

fn spawn_with_budget<T>(
    io: T,
    side: Side,
    budget: usize,
) -> (MuxHandle, mpsc::UnboundedReceiver<MuxStream>)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (rd, wr) = tokio::io::split(io);
    let mut buf = BytesMut::new();
    if side == Side::Client {
        buf.extend_from_slice(&PREFACE);
    }
    let shared = Arc::new(Shared {
        out: Mutex::new(Out {
            io: Some(Box::new(wr)),
            segs: VecDeque::new(),
            segs_len: 0,
            buf,
            unflushed: false,
            // The driver sends the preface (with whatever follows it).
            driver_owns: side == Side::Client,
            driver: None,
            ready: VecDeque::new(),
        }),
        streams: Mutex::new(Streams {
            map: HashMap::new(),
            next_id: if side == Side::Client { 1 } else { 2 },
            closed: false,
        }),
        closed: CancellationToken::new(),
        reason: Mutex::new(None),
        side,
        born: std::time::Instant::now(),
        last_rx: AtomicU64::new(0),
        committed: AtomicUsize::new(0),
        budget,
    });
    let (inbound_tx, inbound_rx) = mpsc::unbounded_channel();
    tokio::spawn(drive(shared.clone(), rd, inbound_tx));
    (MuxHandle { shared }, inbound_rx)
}

async fn drive<R: AsyncRead + Unpin>(
    shared: Arc<Shared>,
    mut rd: R,
    inbound: mpsc::UnboundedSender<MuxStream>,
) {
    let mut rbuf = BytesMut::new();
    let mut preface = shared.side == Side::Client;
    // Ready(true) once the carrier ended; Ready(false) when this poll read its turn.
    let mut step = |cx: &mut Context<'_>| -> Poll<bool> {
        let mut read = 0;
        loop {
            if shared.closed.is_cancelled() {
                return Poll::Ready(true);
            }
            // Sending: drain the output buffer while the driver owns it.
            let mut woken = Vec::new();
            {
                let mut out = lock(&shared.out);
                out.driver = Some(cx.waker().clone());
                while out.driver_owns {
                    // The streams holding bytes take their turns, into the same write as
                    // what is buffered already.
                    out.fill(&mut woken);
                    match out.poll_drain(cx) {
                        Poll::Ready(Ok(())) => {
                            if out.ready.is_empty() {
                                out.driver_owns = false;
                            }
                        }
                        Poll::Ready(Err(e)) => {
                            drop(out);
                            shared.fail(format!("writing to the carrier: {e}"));
                            return Poll::Ready(true);
                        }
                        Poll::Pending => break,
                    }
                }
            }
            for w in woken {
                w.wake();
            }
            // Receiving.
            if rbuf.capacity() - rbuf.len() < READ_CHUNK / 4 {
                rbuf.reserve(READ_CHUNK);
            }
            match tokio_util::io::poll_read_buf(Pin::new(&mut rd), cx, &mut rbuf) {
                Poll::Ready(Ok(0)) => {
                    shared.fail("the peer closed the carrier".into());
                    return Poll::Ready(true);
                }
                Poll::Ready(Ok(n)) => {
                    shared.heard();
                    read += n;
                }
                Poll::Ready(Err(e)) => {
                    shared.fail(format!("reading from the carrier: {e}"));
                    return Poll::Ready(true);
                }
                // A writer handing the buffer over wakes the waker stored above.
                Poll::Pending => return Poll::Pending,
            }
            if !preface {
                match wire::take_preface(&mut rbuf) {
                    Ok(true) => preface = true,
                    Ok(false) => continue,
                    Err(e) => {
                        shared.fail(e.to_string());
                        return Poll::Ready(true);
                    }
                }
            }
            loop {
                match wire::decode(&mut rbuf) {
                    Ok(Some(frame)) => {
                        if let Err(e) = dispatch(&shared, frame, &inbound) {
                            shared.fail(e);
                            return Poll::Ready(true);
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        shared.fail(e.to_string());
                        return Poll::Ready(true);
                    }
                }
            }
            if read >= READ_TURN {
                return Poll::Ready(false);
            }
        }
    };
    let ended = async {
        while !poll_fn(&mut step).await {
            tokio::task::yield_now().await;
        }
    };
    tokio::select! {
        () = ended => {}
        () = shared.closed.cancelled() => {}
    }
    teardown(&shared).await;
}

/// Applies one frame from the peer.
fn dispatch(
    shared: &Arc<Shared>,
    frame: MuxFrame,
    inbound: &mpsc::UnboundedSender<MuxStream>,
) -> Result<(), String> {
    match frame {
        MuxFrame::Window { stream, increment } => {
            let cell = lock(&shared.streams).map.get(&stream).cloned();
            if let Some(cell) = cell {
                let mut st = lock(&cell.state);
                let credit = u64::from(st.send_credit) + u64::from(increment);
                if credit > u64::from(MAX_WINDOW) + u64::from(INITIAL_WINDOW) {
                    return Err(format!(
                        "the peer granted stream {stream} {credit} bytes, beyond any window"
                    ));
                }
                st.send_credit = credit as u32;
                if let Some(w) = st.write_waker.take() {
                    w.wake();
                }
            }
            Ok(())
        }
        MuxFrame::Data {
            stream,
            flags,
            payload,
        } => {
            let (cell, new) = {
                let mut s = lock(&shared.streams);
                match s.map.get(&stream) {
                    Some(c) => (c.clone(), false),
                    None if flags & SYN != 0 && shared.peer_opens(stream) => {
                        if s.map.len() >= MAX_STREAMS || s.closed {
                            drop(s);
                            refuse(shared, stream);
                            return Ok(());
                        }
                        let cell = Arc::new(Cell::new(stream, true));
                        s.map.insert(stream, cell.clone());
                        shared
                            .committed
                            .fetch_add(INITIAL_WINDOW as usize, Ordering::Relaxed);
                        (cell, true)
                    }
                    // A stream this side already dropped (it sent RST): late frames.
                    None => return Ok(()),
                }
            };
            {
                let mut st = lock(&cell.state);
                let len = payload.len() as u32;
                if len > st.recv_credit {
                    return Err(format!(
                        "the peer sent {len} bytes on stream {stream} with {} granted",
                        st.recv_credit
                    ));
                }
                st.recv_credit -= len;
                if !payload.is_empty() {
                    st.queued += payload.len();
                    st.queue.push_back(payload);
                }
                if flags & FIN != 0 {
                    st.fin_recv = true;
                }
                if flags & RST != 0 {
                    st.reset_recv = true;
                    if let Some(w) = st.write_waker.take() {
                        w.wake();
                    }
                }
                if (st.queued >= st.read_lowat || flags & (FIN | RST) != 0)
                    && let Some(w) = st.read_waker.take()
                {
                    w.wake();
                }
            }
            if new {
                // A dropped receiver means nobody accepts: dropping the stream resets it.
                let _ = inbound.send(MuxStream {
                    cell,
                    shared: shared.clone(),
                    urgent: false,
                    lowat: 1,
                });
            }
            Ok(())
        }
    }
}

/// Resets a stream the peer opened that this side will not take.
fn refuse(shared: &Shared, stream: u32) {
    let mut out = lock(&shared.out);
    out.data(RST, stream, &[]);
    out.driver_owns = true;
}

async fn teardown(shared: &Shared) {
    shared.closed.cancel();
    let cells: Vec<Arc<Cell>> = {
        let mut s = lock(&shared.streams);
        s.closed = true;
        s.map.drain().map(|(_, c)| c).collect()
    };
    for cell in cells {
        let mut st = lock(&cell.state);
        st.carrier_closed = true;
        st.wake_all();
    }
    // What is already buffered (a refusal, a last Fin) still goes out, briefly.
    let mut io = {
        let mut out = lock(&shared.out);
        out.driver_owns = true;
        for cell in out.ready.drain(..) {
            let mut held = lock(&cell.held);
            held.chunks.clear();
            held.len = 0;
            held.queued = false;
            if let Some(w) = held.waker.take() {
                w.wake();
            }
        }
        out.flatten();
        out.io.take().map(|io| (io, std::mem::take(&mut out.buf)))
    };
    if let Some((io, buf)) = io.as_mut() {
        use tokio::io::AsyncWriteExt;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
            io.write_all(buf).await?;
            io.shutdown().await
        })
        .await;
    }
    if let Some(reason) = lock(&shared.reason).as_deref() {
        tracing::debug!(reason, "carrier multiplexer ended");
    }
}

/// One multiplexed stream, with tokio's I/O traits. Dropping it before both directions
/// finished resets it at the peer.
pub struct MuxStream {
    cell: Arc<Cell>,
    shared: Arc<Shared>,
    /// Writes are never held back by a full output buffer (see [`MuxStream::set_urgent`]).
    urgent: bool,
    /// See [`ReadChunk::set_read_lowat`].
    lowat: usize,
}

impl std::fmt::Debug for MuxStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MuxStream")
            .field("id", &self.cell.id)
            .finish()
    }
}

impl MuxStream {
    /// Makes this stream's writes skip the turns of a busy carrier: for the control
    /// stream, whose pings and pongs are small and rare and must not queue behind hundreds
    /// of bulk streams (a carrier would otherwise be declared dead while it is only busy).
    /// Its frames still leave in order, after what is already in the output buffer.
    pub fn set_urgent(&mut self) {
        self.urgent = true;
    }

    /// Frames up to `len` bytes (as many as credit and the carrier allow) into one Data
    /// frame, which `place` puts where they go: straight into the carrier's buffer when
    /// it has room and no stream holds bytes back (the common, uncontended case), or else
    /// into this stream's [`Held`] buffer for the driver to take in turn. Returns how many
    /// bytes were taken.
    fn write_frame(
        &mut self,
        cx: &mut Context<'_>,
        len: usize,
        place: impl FnOnce(Place<'_>, usize),
    ) -> Poll<io::Result<usize>> {
        let mut st = lock(&self.cell.state);
        if st.carrier_closed {
            drop(st);
            return Poll::Ready(Err(self.closed_error()));
        }
        if st.reset_recv {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "the other end abandoned this stream",
            )));
        }
        if st.fin_sent {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after shutdown",
            )));
        }
        if len == 0 {
            return Poll::Ready(Ok(0));
        }
        if st.send_credit == 0 {
            st.write_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = len.min(st.send_credit as usize).min(MAX_PAYLOAD);
        let mut out = lock(&self.shared.out);
        if out.io.is_none() {
            drop(out);
            drop(st);
            return Poll::Ready(Err(self.closed_error()));
        }
        // Once streams hold bytes for their turns, or the driver owns a buffer of FILL
        // bytes (the carrier's socket was full), bytes take turns: a write appended then
        // would be first come, first served, and a stream writing 256 KiB at a time would
        // take the carrier from one writing 2 KiB. Below that a write goes straight in, so
        // one busy stream alone is not woken every other quantum.
        let direct = self.urgent
            || (out.ready.is_empty()
                && !Out::holds(&self.cell)
                && out.queued() < if out.driver_owns { FILL } else { HIGH_WATER });
        if direct {
            let flags = if st.known { 0 } else { SYN };
            st.known = true;
            st.send_credit -= n as u32;
            drop(st);
            place(Place::Out(&mut out, flags, self.cell.id), n);
            if out.queued() >= WRITE_THROUGH
                && let Some(e) = out.push(cx)
            {
                drop(out);
                self.shared.fail(format!("writing to the carrier: {e}"));
            }
            return Poll::Ready(Ok(n));
        }
        // The carrier is busy: this stream's bytes wait for its turn.
        let mut held = lock(&self.cell.held);
        if held.len >= HELD {
            // Woken by the turn that leaves room; the task that polled last is the one
            // to wake (a nested carrier writes one stream from two tasks).
            match &held.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => held.waker = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        }
        // Taken whole (up to HELD), not cut to the room left: a writer given part of a
        // flow frame would copy the rest aside until the next turn.
        let n = n.min(HELD);
        if !st.known {
            held.syn = true;
            st.known = true;
        }
        st.send_credit -= n as u32;
        drop(st);
        place(Place::Held(&mut held), n);
        if !held.queued {
            held.queued = true;
            out.ready.push_back(self.cell.clone());
        }
        drop(held);
        // The driver serves the turns (it may be draining already).
        if !out.driver_owns {
            out.driver_owns = true;
            if let Some(w) = out.driver.take() {
                w.wake();
            }
        }
        Poll::Ready(Ok(n))
    }

    fn closed_error(&self) -> io::Error {
        let reason = lock(&self.shared.reason).clone().unwrap_or_default();
        io::Error::new(
            io::ErrorKind::BrokenPipe,
            format!("the tunnel to the agent is closed: {reason}"),
        )
    }

    /// Queues an empty DATA frame with `flags` for the driver to send, after any bytes
    /// this stream holds.
    fn send_flags(&self, flags: u8) {
        let mut out = lock(&self.shared.out);
        if out.io.is_none() {
            return;
        }
        {
            let mut held = lock(&self.cell.held);
            if held.queued {
                held.fin |= flags & FIN != 0;
                held.rst |= flags & RST != 0;
                if flags & SYN != 0 {
                    held.syn = true;
                }
                return;
            }
        }
        out.data(flags, self.cell.id, &[]);
        out.hand_off();
    }
}

impl MuxStream {
    /// Takes bytes from the front of the stream's queue with `take` (which returns how
    /// many it took), or says why there are none: `Ok(None)` at the end of the stream,
    /// `ConnectionReset` when the peer abandoned it, `Pending` (reader woken later) when
    /// nothing came yet. Whatever is taken is credited back to the peer as the window
    /// allows.
    fn poll_take<T>(
        &mut self,
        cx: &mut Context<'_>,
        take: impl FnOnce(&mut VecDeque<Bytes>) -> (T, usize),
    ) -> Poll<io::Result<Option<T>>> {
        let mut st = lock(&self.cell.state);
        if st.queue.is_empty() {
            if st.fin_recv || st.carrier_closed {
                return Poll::Ready(Ok(None));
            }
            if st.reset_recv {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "the other end abandoned this stream",
                )));
            }
            // At most a quarter of the window: the peer always has credit to send it.
            st.read_lowat = self.lowat.clamp(1, st.window as usize / 4);
            st.read_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let (taken, n) = take(&mut st.queue);
        st.queued -= n;
        st.consumed += n as u32;
        st.read_in_window += n as u32;
        let mut grant = 0;
        if st.consumed >= st.window / 2 && !st.reset_recv && !st.fin_recv && !st.carrier_closed {
            grant = st.consumed;
            let committed = &self.shared.committed;
            let budget = self.shared.budget;
            if st.window > MIN_WINDOW && committed.load(Ordering::Relaxed) > budget {
                // The carrier's windows are over budget: give half of this one back
                // (less than it consumed, so the credit stays positive).
                let smaller = (st.window / 2).max(MIN_WINDOW);
                let back = st.window - smaller;
                grant -= back;
                st.window = smaller;
                st.read_in_window = 0;
                committed.fetch_sub(back as usize, Ordering::Relaxed);
            } else if st.read_in_window >= st.window
                && st.window < MAX_WINDOW
                && committed
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                        (c + st.window as usize <= budget).then_some(c + st.window as usize)
                    })
                    .is_ok()
            {
                // This stream streams, and the carrier has room: double its window.
                grant += st.window;
                st.window *= 2;
                st.read_in_window = 0;
            }
            st.consumed = 0;
            st.recv_credit += grant;
        }
        drop(st);
        if grant > 0 {
            let mut out = lock(&self.shared.out);
            if out.io.is_some() {
                out.window(self.cell.id, grant);
                out.hand_off();
            }
        }
        Poll::Ready(Ok(Some(taken)))
    }
}

/// On a busy carrier the body is held as it is, not copied: only `head` is (a flow's
/// 4-byte frame header).
impl WriteChunk for MuxStream {
    fn poll_write_owned(
        &mut self,
        cx: &mut Context<'_>,
        head: &[u8],
        body: &mut Bytes,
    ) -> Poll<io::Result<usize>> {
        let len = head.len() + body.len();
        self.write_frame(cx, len, |place, n| match place {
            Place::Held(held) if n > head.len() => {
                held.put_owned(head, body.split_to(n - head.len()));
            }
            place => {
                place.put_first(&[IoSlice::new(head), IoSlice::new(body)], n);
                body.advance(n.saturating_sub(head.len()));
            }
        })
    }
}

/// The payload as the carrier delivered it: the queue's front chunk (up to `max` bytes of
/// it), without copying.
impl ReadChunk for MuxStream {
    fn poll_read_chunk(&mut self, cx: &mut Context<'_>, max: usize) -> Poll<io::Result<Bytes>> {
        let taken = ready!(self.poll_take(cx, |queue| {
            let front = queue
                .front_mut()
                .expect("poll_take calls with a chunk queued");
            let chunk = if front.len() <= max {
                queue.pop_front().unwrap_or_default()
            } else {
                front.split_to(max)
            };
            let n = chunk.len();
            (chunk, n)
        }))?;
        Poll::Ready(Ok(taken.unwrap_or_default()))
    }

    fn set_read_lowat(&mut self, bytes: usize) {
        self.lowat = bytes;
    }
}

impl AsyncRead for MuxStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        ready!(self.get_mut().poll_take(cx, |queue| {
            let mut n = 0usize;
            while out.remaining() > 0 {
                let Some(front) = queue.front_mut() else {
                    break;
                };
                let k = front.len().min(out.remaining());
                out.put_slice(&front[..k]);
                front.advance(k);
                if front.is_empty() {
                    queue.pop_front();
                }
                n += k;
            }
            ((), n)
        }))?;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for MuxStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(data)])
    }
    /// The slices go into one frame, copied once (a flow's header and its data).
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let len = bufs.iter().map(|b| b.len()).sum();
        self.get_mut()
            .write_frame(cx, len, |place, n| place.put_first(bufs, n))
    }
    fn is_write_vectored(&self) -> bool {
        true
    }
    /// Hands what was written to the driver, which sends it with whatever other streams
    /// flush before it runs; from `FLUSH_INLINE` buffered bytes on (bulk data) writes it
    /// from this task. Frames in the carrier's buffer are its business: there is nothing
    /// to wait for.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut out = lock(&this.shared.out);
        if out.queued() < FLUSH_INLINE {
            out.hand_off();
        } else if let Some(e) = out.push(cx) {
            drop(out);
            this.shared.fail(format!("writing to the carrier: {e}"));
            return Poll::Ready(Err(this.closed_error()));
        }
        Poll::Ready(Ok(()))
    }

    /// Sends FIN: the peer reads EOF after the data written before it; reading goes on.
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut st = lock(&this.cell.state);
        if st.fin_sent || st.reset_recv || st.carrier_closed {
            return Poll::Ready(Ok(()));
        }
        let flags = if st.known { FIN } else { SYN | FIN };
        st.known = true;
        st.fin_sent = true;
        drop(st);
        this.send_flags(flags);
        Poll::Ready(Ok(()))
    }
}

impl Drop for MuxStream {
    fn drop(&mut self) {
        lock(&self.cell.held).waker = None;
        let reset = {
            let st = lock(&self.cell.state);
            self.shared
                .committed
                .fetch_sub(st.window as usize, Ordering::Relaxed);
            let finished = st.fin_sent && st.fin_recv;
            st.known && !st.carrier_closed && !st.reset_recv && !finished
        };
        lock(&self.shared.streams).map.remove(&self.cell.id);
        if reset {
            self.send_flags(RST);
        }
    }
}

#[cfg(test)]
mod tests;
