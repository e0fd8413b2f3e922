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
//! socket is full the driver takes over and writers keep appending up to [`HIGH_WATER`]
//! bytes; then they wait for room in turns, one frame per turn, oldest first (see
//! `Out::waiting`). The driver also reads: it decodes frames and hands payload to the streams'
//! queues, waking their readers.
//!
//! Flow control is per stream (credit in WINDOW frames): a stream's window starts at
//! [`INITIAL_WINDOW`] and doubles each time its reader has consumed a whole window, up to
//! [`MAX_WINDOW`] — bulk streams get room for long, fast paths, idle ones stay cheap.
//!
//! Measured against yamux (which this replaced): see `docs/benchmarks.md`.

use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// Most streams a carrier may hold at once (flows plus the control stream).
pub const MAX_STREAMS: usize = 32_768;
/// Output bytes buffered for a busy carrier before writers wait.
pub const HIGH_WATER: usize = 1024 * 1024;
/// Buffered output bytes at which a write goes to the carrier without waiting for a flush.
const WRITE_THROUGH: usize = 64 * 1024;
/// Buffered output bytes from which a flush writes from the flushing task instead of
/// handing off to the driver: waiting for other streams pays only for small frames.
const FLUSH_INLINE: usize = 16 * 1024;
/// Bytes the driver asks of the carrier per read.
const READ_CHUNK: usize = 64 * 1024;

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

type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// The carrier's sending side.
struct Out {
    io: Option<Writer>,
    buf: BytesMut,
    /// Bytes went to `io` since its last successful flush (TLS holds records until then).
    unflushed: bool,
    /// The driver owns `io` until `buf` is drained; nobody else writes meanwhile.
    driver_owns: bool,
    driver: Option<Waker>,
    /// Streams whose writers wait for `buf` to drop below [`HIGH_WATER`], oldest first,
    /// each at most once. They get room in turns (see [`Out::next_turn`]): with hundreds of
    /// bulk streams, waking every one of them each time the buffer drained made each
    /// wake-up find the buffer full again, cost more than the data moved and let a few
    /// streams take the carrier while others starved.
    waiting: VecDeque<Arc<Cell>>,
}

impl Out {
    fn data(&mut self, flags: u8, stream: u32, payload: &[u8]) {
        wire::put_header(
            &mut self.buf,
            MuxKind::Data,
            flags,
            stream,
            payload.len() as u32,
        );
        self.buf.extend_from_slice(payload);
    }

    /// Hands the turn to write to the oldest stream still waiting for room; the waker of
    /// the task that last polled it, to wake once the lock is released.
    fn next_turn(&mut self) -> Option<Waker> {
        while let Some(cell) = self.waiting.pop_front() {
            let mut room = lock(&cell.room);
            if !room.queued {
                // It left the queue (dropped) after it joined.
                continue;
            }
            room.queued = false;
            if let Some(w) = room.waker.take() {
                room.turn = true;
                return Some(w);
            }
        }
        None
    }

    /// Queues `cell` for room with `waker` (the latest poll's: the task to wake). A stream
    /// polled from two tasks (a carrier nested in another's stream is written by its
    /// driver and by its writers) is queued once and wakes whichever polled last. `front`:
    /// it had the turn but others filled the buffer first; it keeps its place.
    fn wait_for_room(&mut self, cell: &Arc<Cell>, waker: &Waker, front: bool) {
        let mut room = lock(&cell.room);
        room.turn = false;
        match &room.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => room.waker = Some(waker.clone()),
        }
        if !room.queued {
            room.queued = true;
            drop(room);
            if front {
                self.waiting.push_front(cell.clone());
            } else {
                self.waiting.push_back(cell.clone());
            }
        }
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
        if self.driver_owns || self.io.is_none() || self.buf.is_empty() {
            return;
        }
        self.driver_owns = true;
        if let Some(w) = self.driver.take() {
            w.wake();
        }
    }

    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(io) = self.io.as_mut() else {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        };
        while !self.buf.is_empty() {
            let n = ready!(Pin::new(&mut *io).poll_write(cx, &self.buf))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.buf.advance(n);
            self.unflushed = true;
        }
        if self.unflushed {
            ready!(Pin::new(&mut *io).poll_flush(cx))?;
            self.unflushed = false;
        }
        Poll::Ready(Ok(()))
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
    /// Waiting for room in the output buffer. Locked after `state` and [`Shared::out`].
    room: Mutex<Room>,
}

impl Cell {
    fn new(id: u32, known: bool) -> Cell {
        Cell {
            id,
            state: Mutex::new(StreamState::new(known)),
            room: Mutex::new(Room::default()),
        }
    }
}

/// A stream's place in [`Out::waiting`].
#[derive(Default)]
struct Room {
    /// In the queue.
    queued: bool,
    /// Handed the turn to write; it passes the turn on if it does not use it.
    turn: bool,
    waker: Option<Waker>,
}

/// Streams woken when the output buffer has drained; each write that leaves room wakes the
/// next waiting stream, so the turn goes round them in order.
const TURNS: usize = 2;

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
        Ok(MuxStream {
            cell,
            shared: self.shared.clone(),
            urgent: false,
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
    let (rd, wr) = tokio::io::split(io);
    let mut buf = BytesMut::new();
    if side == Side::Client {
        buf.extend_from_slice(&PREFACE);
    }
    let shared = Arc::new(Shared {
        out: Mutex::new(Out {
            io: Some(Box::new(wr)),
            buf,
            unflushed: false,
            // The driver sends the preface (with whatever follows it).
            driver_owns: side == Side::Client,
            driver: None,
            waiting: VecDeque::new(),
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
    let ended = poll_fn(|cx| {
        loop {
            if shared.closed.is_cancelled() {
                return Poll::Ready(());
            }
            // Sending: drain the output buffer while the driver owns it.
            let woke = {
                let mut out = lock(&shared.out);
                out.driver = Some(cx.waker().clone());
                if out.driver_owns {
                    match out.poll_drain(cx) {
                        Poll::Ready(Ok(())) => {
                            out.driver_owns = false;
                            (0..TURNS).map_while(|_| out.next_turn()).collect()
                        }
                        Poll::Ready(Err(e)) => {
                            drop(out);
                            shared.fail(format!("writing to the carrier: {e}"));
                            return Poll::Ready(());
                        }
                        Poll::Pending => Vec::new(),
                    }
                } else if out.buf.is_empty() {
                    // Turns go to the task that last polled each waiting stream; one that
                    // gave up on its write keeps the turn until it writes again or drops
                    // the stream. The carrier is idle: the next waiting stream goes on.
                    out.next_turn().into_iter().collect()
                } else {
                    Vec::new()
                }
            };
            for w in woke {
                w.wake();
            }
            // Receiving.
            if rbuf.capacity() - rbuf.len() < READ_CHUNK / 4 {
                rbuf.reserve(READ_CHUNK);
            }
            match tokio_util::io::poll_read_buf(Pin::new(&mut rd), cx, &mut rbuf) {
                Poll::Ready(Ok(0)) => {
                    shared.fail("the peer closed the carrier".into());
                    return Poll::Ready(());
                }
                Poll::Ready(Ok(_)) => shared.heard(),
                Poll::Ready(Err(e)) => {
                    shared.fail(format!("reading from the carrier: {e}"));
                    return Poll::Ready(());
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
                        return Poll::Ready(());
                    }
                }
            }
            loop {
                match wire::decode(&mut rbuf) {
                    Ok(Some(frame)) => {
                        if let Err(e) = dispatch(&shared, frame, &inbound) {
                            shared.fail(e);
                            return Poll::Ready(());
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        shared.fail(e.to_string());
                        return Poll::Ready(());
                    }
                }
            }
        }
    });
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
                if let Some(w) = st.read_waker.take() {
                    w.wake();
                }
            }
            if new {
                // A dropped receiver means nobody accepts: dropping the stream resets it.
                let _ = inbound.send(MuxStream {
                    cell,
                    shared: shared.clone(),
                    urgent: false,
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
        for cell in out.waiting.drain(..) {
            if let Some(w) = lock(&cell.room).waker.take() {
                w.wake();
            }
        }
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
}

impl std::fmt::Debug for MuxStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MuxStream")
            .field("id", &self.cell.id)
            .finish()
    }
}

impl MuxStream {
    /// Makes this stream's writes skip the wait for a full output buffer to drain: for the
    /// control stream, whose pings and pongs are small and rare and must not queue behind
    /// hundreds of bulk streams that refill the buffer as soon as it has room (a carrier
    /// would otherwise be declared dead while it is only busy). Its frames still leave in
    /// order, after what is already buffered.
    pub fn set_urgent(&mut self) {
        self.urgent = true;
    }

    /// `poll_write` without the turn's bookkeeping; `turn`: this stream was handed the turn.
    fn write_frame(
        &mut self,
        cx: &mut Context<'_>,
        data: &[u8],
        turn: bool,
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
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if st.send_credit == 0 {
            st.write_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = data.len().min(st.send_credit as usize).min(MAX_PAYLOAD);
        let mut out = lock(&self.shared.out);
        if out.io.is_none() {
            drop(out);
            drop(st);
            return Poll::Ready(Err(self.closed_error()));
        }
        if !self.urgent {
            if out.buf.len() >= HIGH_WATER {
                // The driver is draining the buffer; its drain hands out turns.
                out.wait_for_room(&self.cell, cx.waker(), turn);
                return Poll::Pending;
            }
            if !turn && out.driver_owns && !out.waiting.is_empty() {
                // Others waited first, and the driver is draining: this stream queues
                // behind them (the drain hands out turns), one frame a turn, in order.
                out.wait_for_room(&self.cell, cx.waker(), false);
                return Poll::Pending;
            }
        }
        let flags = if st.known { 0 } else { SYN };
        st.known = true;
        st.send_credit -= n as u32;
        drop(st);
        out.data(flags, self.cell.id, &data[..n]);
        if out.buf.len() >= WRITE_THROUGH
            && let Some(e) = out.push(cx)
        {
            drop(out);
            self.shared.fail(format!("writing to the carrier: {e}"));
            return Poll::Ready(Ok(n));
        }
        // Room left: the next waiting stream may use it now.
        let next = if out.buf.len() < HIGH_WATER {
            out.next_turn()
        } else {
            None
        };
        drop(out);
        if let Some(w) = next {
            w.wake();
        }
        Poll::Ready(Ok(n))
    }

    /// Hands a turn this stream did not use to the next one waiting for room.
    fn pass_turn(&self) {
        let next = lock(&self.shared.out).next_turn();
        if let Some(w) = next {
            w.wake();
        }
    }

    fn closed_error(&self) -> io::Error {
        let reason = lock(&self.shared.reason).clone().unwrap_or_default();
        io::Error::new(
            io::ErrorKind::BrokenPipe,
            format!("the tunnel to the agent is closed: {reason}"),
        )
    }

    /// Queues an empty DATA frame with `flags` for the driver to send.
    fn send_flags(&self, flags: u8) {
        let mut out = lock(&self.shared.out);
        if out.io.is_none() {
            return;
        }
        out.data(flags, self.cell.id, &[]);
        out.hand_off();
    }
}

impl AsyncRead for MuxStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut st = lock(&this.cell.state);
        if st.queue.is_empty() {
            if st.fin_recv || st.carrier_closed {
                return Poll::Ready(Ok(()));
            }
            if st.reset_recv {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "the other end abandoned this stream",
                )));
            }
            st.read_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let mut n = 0usize;
        while out.remaining() > 0 {
            let Some(front) = st.queue.front_mut() else {
                break;
            };
            let k = front.len().min(out.remaining());
            out.put_slice(&front[..k]);
            front.advance(k);
            if front.is_empty() {
                st.queue.pop_front();
            }
            n += k;
        }
        st.consumed += n as u32;
        st.read_in_window += n as u32;
        let mut grant = 0;
        if st.consumed >= st.window / 2 && !st.reset_recv && !st.fin_recv && !st.carrier_closed {
            grant = st.consumed;
            if st.read_in_window >= st.window && st.window < MAX_WINDOW {
                // This stream streams: double its window.
                grant += st.window;
                st.window *= 2;
                st.read_in_window = 0;
            }
            st.consumed = 0;
            st.recv_credit += grant;
        }
        drop(st);
        if grant > 0 {
            let mut out = lock(&this.shared.out);
            if out.io.is_some() {
                out.window(this.cell.id, grant);
                out.hand_off();
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for MuxStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // A turn is used by this call or handed on: it never stays with a stream.
        let turn = std::mem::take(&mut lock(&this.cell.room).turn);
        let r = this.write_frame(cx, data, turn);
        if turn && !matches!(r, Poll::Ready(Ok(n)) if n > 0) && !lock(&this.cell.room).queued {
            this.pass_turn();
        }
        r
    }
    /// Hands what was written to the driver, which sends it with whatever other streams
    /// flush before it runs; from [`FLUSH_INLINE`] buffered bytes on (bulk data) writes it
    /// from this task. Frames in the carrier's buffer are its business: there is nothing
    /// to wait for.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut out = lock(&this.shared.out);
        if out.buf.len() < FLUSH_INLINE {
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
        let turn = {
            let mut room = lock(&self.cell.room);
            room.queued = false;
            room.waker = None;
            std::mem::take(&mut room.turn)
        };
        if turn {
            self.pass_turn();
        }
        let reset = {
            let st = lock(&self.cell.state);
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
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn pair() -> (
        (MuxHandle, mpsc::UnboundedReceiver<MuxStream>),
        (MuxHandle, mpsc::UnboundedReceiver<MuxStream>),
    ) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        (spawn(a, Side::Client), spawn(b, Side::Agent))
    }

    #[tokio::test]
    async fn streams_both_ways_and_close_ends_them() {
        let ((client, _in_c), (agent, mut in_a)) = pair();
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
        assert_eq!(s.read(&mut buf).await.unwrap(), 0);
        assert!(s.write_all(b"x").await.is_err());
        assert!(client.close_reason().unwrap().contains("closed"));
    }

    #[tokio::test]
    async fn streams_flushing_in_one_tick_share_one_carrier_write() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (logged, log) = crate::testio::Logged::new(a);
        let writes = || log.lock().unwrap().len();
        let (client, _in_c) = spawn(logged, Side::Client);
        let (_agent, mut in_a) = spawn(b, Side::Agent);
        // The preface and a first stream, so the carrier is idle afterwards.
        let mut first = client.open().await.unwrap();
        first.write_all(b"0").await.unwrap();
        first.flush().await.unwrap();
        let mut t = in_a.recv().await.unwrap();
        t.read_exact(&mut [0u8; 1]).await.unwrap();
        let before = writes();
        // Eight streams become ready together (as after one batch of socket events) and
        // each writes, flushes and half-closes.
        let tasks: Vec<_> = (0..8u8)
            .map(|i| {
                let client = client.clone();
                tokio::spawn(async move {
                    let mut s = client.open().await.unwrap();
                    s.write_all(&[i]).await.unwrap();
                    s.flush().await.unwrap();
                    s.shutdown().await.unwrap();
                    s
                })
            })
            .collect();
        // Held until the end: dropping a stream whose peer has not closed sends RST.
        let mut streams = Vec::new();
        for t in tasks {
            streams.push(t.await.unwrap());
        }
        let mut got = Vec::new();
        for _ in 0..8 {
            let mut t = in_a.recv().await.unwrap();
            let mut v = Vec::new();
            t.read_to_end(&mut v).await.unwrap();
            got.extend(v);
        }
        got.sort();
        assert_eq!(got, (0..8u8).collect::<Vec<_>>());
        assert_eq!(writes() - before, 1, "one write for all eight streams");
    }

    #[tokio::test]
    async fn bulk_beyond_the_window_with_many_streams_and_half_close() {
        let ((client, _in_c), (_agent, mut in_a)) = pair();
        // An echo server on the agent side.
        tokio::spawn(async move {
            while let Some(mut t) = in_a.recv().await {
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    t.read_to_end(&mut got).await.unwrap();
                    t.write_all(&got).await.unwrap();
                    t.shutdown().await.unwrap();
                });
            }
        });
        let mut tasks = Vec::new();
        for i in 0..8u32 {
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                let size = if i == 0 { 5_000_000 } else { 1000 * i as usize };
                let data: Vec<u8> = (0..size).map(|k| (k as u32 ^ i) as u8).collect();
                let s = client.open().await.unwrap();
                let (mut rd, mut wr) = tokio::io::split(s);
                let sent = data.clone();
                let w = tokio::spawn(async move {
                    wr.write_all(&sent).await.unwrap();
                    wr.shutdown().await.unwrap();
                    wr
                });
                let mut back = Vec::new();
                rd.read_to_end(&mut back).await.unwrap();
                let _ = w.await.unwrap();
                assert_eq!(back, data, "stream {i}");
            }));
        }
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(30), t)
                .await
                .unwrap()
                .unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hundreds_of_writers_waiting_for_room_all_finish() {
        let ((client, _in_c), (_agent, mut in_a)) = pair();
        // A sink on the agent side that reads every stream to its end.
        let sink = tokio::spawn(async move {
            let mut readers = Vec::new();
            while let Some(mut t) = in_a.recv().await {
                readers.push(tokio::spawn(async move {
                    let mut n = 0usize;
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        match t.read(&mut buf).await.unwrap() {
                            0 => return n,
                            m => n += m,
                        }
                    }
                }));
                if readers.len() == 300 {
                    break;
                }
            }
            let mut total = 0;
            for r in readers {
                total += r.await.unwrap();
            }
            total
        });
        // 300 writers of 600 KiB each: more than the buffer and their first window, so
        // they wait for room and for credit, over and over.
        let mut writers = Vec::new();
        for i in 0..300u32 {
            let mut s = client.open().await.unwrap();
            writers.push(tokio::spawn(async move {
                let data = vec![i as u8; 600 * 1024];
                s.write_all(&data).await.unwrap();
                s.shutdown().await.unwrap();
                s
            }));
        }
        let mut keep = Vec::new();
        for w in writers {
            keep.push(
                tokio::time::timeout(Duration::from_secs(60), w)
                    .await
                    .expect("a writer never got room")
                    .unwrap(),
            );
        }
        let total = tokio::time::timeout(Duration::from_secs(60), sink)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(total, 300 * 600 * 1024);
        assert!(lock(&client.shared.out).waiting.is_empty());
    }

    /// A waker that records that it was woken.
    struct Flag(std::sync::atomic::AtomicBool);

    impl std::task::Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    fn flag() -> (Arc<Flag>, Waker) {
        let f = Arc::new(Flag(std::sync::atomic::AtomicBool::new(false)));
        (f.clone(), Waker::from(f))
    }

    #[tokio::test]
    async fn a_stream_polled_from_two_tasks_wakes_the_one_that_polled_last() {
        // A carrier nested in a stream of another carrier (expose through the agent) writes
        // that stream from its driver and from its writers: whichever task polled last
        // must be woken when there is room, or the nested carrier stalls.
        let (a, mut far) = tokio::io::duplex(64 * 1024);
        let (client, _in_c) = spawn(a, Side::Client);
        // Fill the buffer without yielding: the driver (busy with the preface) sends nothing.
        let chunk = vec![7u8; INITIAL_WINDOW as usize];
        let (_, noop) = flag();
        let mut bulk = Vec::new();
        while lock(&client.shared.out).buf.len() < HIGH_WATER {
            let mut s = client.open_now().unwrap();
            let r = Pin::new(&mut s).poll_write(&mut Context::from_waker(&noop), &chunk);
            assert!(matches!(r, Poll::Ready(Ok(_))), "{r:?}");
            bulk.push(s);
        }
        let mut nested = client.open_now().unwrap();
        let (first, w1) = flag();
        let (last, w2) = flag();
        for w in [&w1, &w2] {
            let r = Pin::new(&mut nested).poll_write(&mut Context::from_waker(w), b"x");
            assert!(r.is_pending(), "the buffer is full");
        }
        // The far end reads: the buffer drains and the waiting stream gets its turn.
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            while far.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        });
        tokio::time::timeout(Duration::from_secs(10), async {
            while !last.0.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the task that polled last was never woken");
        let _ = first;
        let r = Pin::new(&mut nested).poll_write(&mut Context::from_waker(&w2), b"x");
        assert!(matches!(r, Poll::Ready(Ok(1))), "{r:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn streams_waiting_for_room_share_it_evenly() {
        // A slow carrier (a 16 KiB pipe) and 8 writers that always have data: each gets
        // its share of the carrier, none starves.
        let (a, b) = tokio::io::duplex(16 * 1024);
        let ((client, _in_c), (_agent, mut in_a)) = (spawn(a, Side::Client), spawn(b, Side::Agent));
        const WRITERS: usize = 8;
        const EACH: usize = 8 * 1024 * 1024;
        let counts: Arc<Vec<AtomicU64>> =
            Arc::new((0..WRITERS).map(|_| AtomicU64::new(0)).collect());
        let total = Arc::new(AtomicU64::new(0));
        let (c2, t2) = (counts.clone(), total.clone());
        tokio::spawn(async move {
            while let Some(mut t) = in_a.recv().await {
                let (c, tot) = (c2.clone(), t2.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut first = [0u8; 1];
                    if t.read_exact(&mut first).await.is_err() {
                        return;
                    }
                    let i = first[0] as usize;
                    while let Ok(n) = t.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                        c[i].fetch_add(n as u64, Ordering::Relaxed);
                        tot.fetch_add(n as u64, Ordering::Relaxed);
                    }
                });
            }
        });
        let mut keep = Vec::new();
        for i in 0..WRITERS {
            let mut s = client.open().await.unwrap();
            keep.push(tokio::spawn(async move {
                let mut data = vec![i as u8; EACH];
                data[0] = i as u8;
                let _ = s.write_all(&data).await;
                s
            }));
        }
        // Shares in the steady state: from a quarter of everything (every writer has
        // started; the last ones spawned start late) to three quarters.
        let at = |fraction: usize| {
            let total = total.clone();
            let counts = counts.clone();
            async move {
                tokio::time::timeout(Duration::from_secs(60), async {
                    while total.load(Ordering::Relaxed) < (WRITERS * EACH * fraction / 4) as u64 {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                })
                .await
                .expect("the writers stalled");
                counts
                    .iter()
                    .map(|c| c.load(Ordering::Relaxed))
                    .collect::<Vec<u64>>()
            }
        };
        let start = at(1).await;
        let end = at(3).await;
        let got: Vec<u64> = end.iter().zip(&start).map(|(e, s)| e - s).collect();
        let (min, max) = (*got.iter().min().unwrap(), *got.iter().max().unwrap());
        assert!(min * 4 >= max, "unfair shares of the carrier: {got:?}");
        for k in keep {
            k.abort();
        }
    }

    #[tokio::test]
    async fn streams_may_start_in_any_order() {
        let ((client, _in_c), (_agent, mut in_a)) = pair();
        let mut first = client.open().await.unwrap();
        let mut second = client.open().await.unwrap();
        second.write_all(b"2").await.unwrap();
        second.flush().await.unwrap();
        first.write_all(b"1").await.unwrap();
        first.flush().await.unwrap();
        let mut buf = [0u8; 1];
        for want in [b"2", b"1"] {
            let mut t = in_a.recv().await.unwrap();
            t.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, want);
        }
        assert!(!client.is_closed());
    }

    #[tokio::test]
    async fn dropping_a_stream_resets_it_after_its_data() {
        let ((client, _in_c), (_agent, mut in_a)) = pair();
        let mut s = client.open().await.unwrap();
        s.write_all(b"last words").await.unwrap();
        drop(s);
        let mut t = in_a.recv().await.unwrap();
        let mut buf = [0u8; 10];
        t.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"last words");
        let e = t.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
        assert_eq!(
            t.write_all(b"x").await.unwrap_err().kind(),
            io::ErrorKind::ConnectionReset
        );
    }

    #[tokio::test]
    async fn a_slow_reader_holds_at_most_its_window() {
        let ((client, _in_c), (_agent, mut in_a)) = pair();
        let mut s = client.open().await.unwrap();
        let big = vec![1u8; 4 * INITIAL_WINDOW as usize];
        let sent = tokio::time::timeout(Duration::from_millis(300), s.write_all(&big)).await;
        assert!(sent.is_err(), "the writer must wait for credit");
        let t = in_a.recv().await.unwrap();
        let queued: usize = lock(&t.cell.state).queue.iter().map(Bytes::len).sum();
        assert_eq!(queued, INITIAL_WINDOW as usize);
    }

    #[tokio::test]
    async fn the_control_stream_is_not_held_behind_bulk_data() {
        // Nobody reads the carrier: its output buffer fills up to the high water mark.
        let (a, _unread) = tokio::io::duplex(64 * 1024);
        let (client, _in_c) = spawn(a, Side::Client);
        let mut control = client.open().await.unwrap();
        control.set_urgent();
        let chunk = vec![7u8; INITIAL_WINDOW as usize];
        let mut bulk = Vec::new();
        for _ in 0..(HIGH_WATER / INITIAL_WINDOW as usize + 2) {
            let mut s = client.open().await.unwrap();
            let _ = tokio::time::timeout(Duration::from_millis(50), s.write_all(&chunk)).await;
            bulk.push(s);
        }
        {
            let out = lock(&client.shared.out);
            assert!(out.buf.len() >= HIGH_WATER || !out.waiting.is_empty());
        }
        // Another bulk stream waits for room; the control stream's ping goes in at once.
        let mut late = client.open().await.unwrap();
        let waited = tokio::time::timeout(Duration::from_millis(100), late.write_all(b"x")).await;
        assert!(
            waited.is_err(),
            "a bulk write must wait for the buffer to drain"
        );
        let ping =
            tokio::time::timeout(Duration::from_millis(100), control.write_all(b"ping")).await;
        assert!(ping.is_ok(), "the control stream waited behind bulk data");
    }

    #[tokio::test]
    async fn any_bytes_from_the_peer_count_as_signs_of_life() {
        let ((client, _in_c), (agent, mut in_a)) = pair();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(client.quiet_for() >= Duration::from_millis(250));
        // Data of some stream (not a pong) arrives: the carrier is not quiet any more.
        let mut s = client.open().await.unwrap();
        s.write_all(b"hi").await.unwrap();
        s.flush().await.unwrap();
        let mut t = in_a.recv().await.unwrap();
        let mut buf = [0u8; 2];
        t.read_exact(&mut buf).await.unwrap();
        assert!(agent.quiet_for() < Duration::from_millis(100));
        t.write_all(b"yo").await.unwrap();
        t.flush().await.unwrap();
        s.read_exact(&mut buf).await.unwrap();
        assert!(client.quiet_for() < Duration::from_millis(100));
    }

    #[tokio::test]
    async fn garbage_and_wrong_preface_close_the_carrier() {
        let (a, mut b) = tokio::io::duplex(1024);
        let (agent, mut inbound) = spawn(a, Side::Agent);
        // A yamux client: version 0, then a SYN for stream 1.
        b.write_all(&[0, 1, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0])
            .await
            .unwrap();
        agent.closed().await;
        assert!(inbound.recv().await.is_none());
        assert!(agent.close_reason().unwrap().contains("preface"));

        let (a, mut b) = tokio::io::duplex(1024);
        let (agent, _inbound) = spawn(a, Side::Agent);
        b.write_all(&PREFACE).await.unwrap();
        let mut frame = BytesMut::new();
        wire::put_header(&mut frame, MuxKind::Data, SYN, 1, 1 << 30);
        b.write_all(&frame).await.unwrap();
        agent.closed().await;
        assert!(agent.close_reason().unwrap().contains("exceeds"));
    }

    #[tokio::test]
    async fn a_peer_ignoring_flow_control_is_cut_off() {
        let (a, mut b) = tokio::io::duplex(4 << 20);
        let (agent, _inbound) = spawn(a, Side::Agent);
        let mut wire_bytes = BytesMut::from(&PREFACE[..]);
        let chunk = vec![0u8; MAX_PAYLOAD];
        for i in 0..2 {
            let flags = if i == 0 { SYN } else { 0 };
            wire::put_header(&mut wire_bytes, MuxKind::Data, flags, 1, chunk.len() as u32);
            wire_bytes.extend_from_slice(&chunk);
        }
        b.write_all(&wire_bytes).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), agent.closed())
            .await
            .unwrap();
        assert!(agent.close_reason().unwrap().contains("granted"));
    }
}
