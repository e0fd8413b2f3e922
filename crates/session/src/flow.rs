//! Frame I/O on one stream, and the byte-stream view of an open TCP flow.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use kubelan_proto::{DATA_HEADER_LEN, Decoder, ErrorKind, FlowError, Frame, MAX_DATA, data_header};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::mpsc;

/// Reads frames from a stream.
#[derive(Debug)]
pub struct FrameReader<S> {
    io: S,
    buf: BytesMut,
    dec: Decoder,
}

impl<S: AsyncRead + Unpin> FrameReader<S> {
    /// Wraps a stream.
    pub fn new(io: S) -> FrameReader<S> {
        FrameReader {
            io,
            buf: BytesMut::new(),
            dec: Decoder::new(),
        }
    }

    /// The next frame, or `None` at a clean end of stream between frames.
    ///
    /// # Errors
    ///
    /// I/O errors, malformed frames (`InvalidData`) and a stream that ends inside a frame
    /// (`UnexpectedEof`).
    pub async fn next(&mut self) -> io::Result<Option<Frame>> {
        loop {
            if let Some(f) = self
                .dec
                .decode(&mut self.buf)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
            {
                return Ok(Some(f));
            }
            // Control frames are small; a large frame's header makes the decoder reserve
            // the whole frame. Keeping this small keeps 10 000 idle flows cheap.
            if self.buf.capacity() - self.buf.len() < 256 {
                self.buf.reserve(1024);
            }
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "stream ended inside a frame",
                    ))
                };
            }
        }
    }

    /// Wraps a stream with bytes already read from it.
    pub fn with_buffer(io: S, buf: BytesMut) -> FrameReader<S> {
        FrameReader {
            io,
            buf,
            dec: Decoder::new(),
        }
    }

    /// Gives back the stream and any bytes read past the last frame.
    pub fn into_parts(self) -> (S, BytesMut) {
        (self.io, self.buf)
    }
}

/// Encodes and writes one frame (flushes).
///
/// # Errors
///
/// I/O errors of the stream.
pub async fn write_frame<S: AsyncWrite + Unpin>(io: &mut S, frame: &Frame) -> io::Result<()> {
    buffer_frame(io, frame).await?;
    io.flush().await
}

/// Encodes and writes one frame without flushing: on a buffered stream (a multiplexer
/// stream) it leaves with the next flush, together with whatever follows it.
///
/// # Errors
///
/// I/O errors of the stream.
pub async fn buffer_frame<S: AsyncWrite + Unpin>(io: &mut S, frame: &Frame) -> io::Result<()> {
    let mut buf = BytesMut::new();
    frame.encode(&mut buf);
    io.write_all(&buf).await
}

/// Writes `data[*pos..]` to `io`, advancing `pos`, until all of it is written.
fn poll_write_out<W: AsyncWrite + Unpin + ?Sized>(
    io: &mut W,
    cx: &mut Context<'_>,
    data: &[u8],
    pos: &mut usize,
) -> Poll<io::Result<()>> {
    while *pos < data.len() {
        let n = ready!(Pin::new(&mut *io).poll_write(cx, &data[*pos..]))?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        *pos += n;
    }
    Poll::Ready(Ok(()))
}

/// A stream that can hand out the bytes it read as they are, without copying them into
/// a caller's buffer (a multiplexer stream keeps the carrier's payload as [`Bytes`]).
pub trait ReadChunk: AsyncRead + Unpin {
    /// Up to `max` (> 0) bytes as read; empty at the end of the stream. The default reads
    /// into a new buffer, for streams without pieces of their own.
    fn poll_read_chunk(&mut self, cx: &mut Context<'_>, max: usize) -> Poll<io::Result<Bytes>> {
        let mut buf = BytesMut::with_capacity(max.min(16 * 1024));
        ready!(tokio_util::io::poll_read_buf(Pin::new(self), cx, &mut buf))?;
        Poll::Ready(Ok(buf.freeze()))
    }

    /// Asks to be woken only once `bytes` are there to read (or the stream ended, or
    /// failed) when a read finds too few: a reader that needs the rest of a frame before
    /// it can use any of it is not woken for every piece. Streams may ignore it (the
    /// default) or cap it; a read still returns whatever is there.
    fn set_read_lowat(&mut self, _bytes: usize) {}
}

impl ReadChunk for tokio::io::DuplexStream {}

/// A stream that can take a buffer the caller gives away, instead of copying it (a
/// multiplexer stream keeps it as it is while the carrier is busy: see
/// [`crate::mux::HELD`]).
pub trait WriteChunk: AsyncWrite + Unpin {
    /// Writes `head` and then the front of `body` as one write (as a vectored write of the
    /// two would), taking from `body` the bytes it wrote; returns how many bytes of
    /// `head` and `body` together were written. The default copies them as a vectored
    /// write does.
    fn poll_write_owned(
        &mut self,
        cx: &mut Context<'_>,
        head: &[u8],
        body: &mut Bytes,
    ) -> Poll<io::Result<usize>> {
        let n = ready!(
            Pin::new(&mut *self).poll_write_vectored(cx, &[IoSlice::new(head), IoSlice::new(body)])
        )?;
        body.advance(n.saturating_sub(head.len()).min(body.len()));
        Poll::Ready(Ok(n))
    }
}

impl WriteChunk for tokio::io::DuplexStream {}

/// Turns a frame-level failure into an `io::Error` whose message carries the reason.
pub fn flow_io_error(e: &FlowError) -> io::Error {
    let kind = match e.kind {
        ErrorKind::ConnectionRefused => io::ErrorKind::ConnectionRefused,
        ErrorKind::Timeout => io::ErrorKind::TimedOut,
        ErrorKind::Reset => io::ErrorKind::ConnectionReset,
        ErrorKind::CarrierLost => io::ErrorKind::ConnectionAborted,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, e.clone())
}

/// An open TCP flow as a byte stream: [`AsyncRead`] yields the peer's data (EOF at its
/// `Fin`), [`AsyncWrite`] sends `Data` frames and `shutdown` sends `Fin`. A `Reset` from
/// the peer surfaces as `ConnectionReset`; the stream ending without `Fin` (carrier lost)
/// as `ConnectionAborted`. Used the same way by the client and the agent.
#[derive(Debug)]
pub struct FlowConn<S> {
    io: S,
    /// Bytes of frames other than `Data` (and of `Data` headers cut between two reads),
    /// gathered to be decoded.
    rbuf: BytesMut,
    dec: Decoder,
    /// A piece of the stream as `io` handed it out, not yet looked at (after `rbuf`).
    chunk: Bytes,
    /// Payload bytes of the current `Data` frame still to come from `rbuf` or `io`.
    owed: usize,
    /// Payload taken from the stream, not yet handed to the reader.
    rdata: Bytes,
    read_done: bool,
    /// An encoded frame not yet fully written to `io`.
    wbuf: BytesMut,
    fin_sent: bool,
    /// The agent's `Opened`/`Failed` has not been read yet (optimistic open). Until it
    /// is, a read flushes first: the `Open` may still be buffered in `io`, and the answer
    /// cannot come before the question is sent.
    awaiting_open: bool,
}

impl<S> FlowConn<S> {
    /// Wraps a stream whose `Open`/`Opened` exchange is done; `leftover` are bytes already
    /// read past that exchange.
    pub fn new(io: S, leftover: BytesMut) -> FlowConn<S> {
        FlowConn {
            io,
            rbuf: leftover,
            dec: Decoder::new(),
            chunk: Bytes::new(),
            owed: 0,
            rdata: Bytes::new(),
            read_done: false,
            wbuf: BytesMut::new(),
            fin_sent: false,
            awaiting_open: false,
        }
    }

    /// Wraps a stream on which `Open` was written (perhaps not yet flushed) but the agent's
    /// answer not yet read: data may be written at once (the agent buffers it until it has
    /// dialled) and leaves in one message with the `Open`; the first read (or flush)
    /// sends the `Open` if nothing did yet, then consumes the answer, and a `Failed`
    /// answer surfaces as the read error.
    pub fn opening(io: S) -> FlowConn<S> {
        let mut c = FlowConn::new(io, BytesMut::new());
        c.awaiting_open = true;
        c
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> FlowConn<S> {
    /// Aborts the flow: sends `Reset` with `reason` (best effort) and closes the stream.
    /// A `Data` frame begun before (a write that left part of it for later) is finished
    /// first: the `Reset` must not land inside it.
    pub async fn reset(mut self, reason: FlowError) {
        if std::future::poll_fn(|cx| self.poll_flush_wbuf(cx))
            .await
            .is_ok()
        {
            let _ = write_frame(&mut self.io, &Frame::Reset(reason)).await;
        }
        let _ = self.io.shutdown().await;
    }

    fn poll_flush_all(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_flush_wbuf(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_flush_wbuf(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut written = 0;
        let result = poll_write_out(&mut self.io, cx, &self.wbuf, &mut written);
        self.wbuf.advance(written);
        result
    }

    /// Before a `Data` frame: refused after shutdown; what an earlier write left over goes
    /// first.
    fn poll_ready_to_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.fin_sent {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after shutdown",
            )));
        }
        self.poll_flush_wbuf(cx)
    }

    /// Keeps what a write of a `Data` frame (`header`, then `data`) left after its first
    /// `k` bytes, to go before anything else.
    fn keep_unwritten(&mut self, header: &[u8], data: &[u8], k: usize) {
        if k < header.len() {
            self.wbuf.extend_from_slice(&header[k..]);
        }
        self.wbuf
            .extend_from_slice(&data[k.saturating_sub(header.len()).min(data.len())..]);
    }
}

impl<S: AsyncRead + WriteChunk> FlowConn<S> {
    /// Sends up to [`MAX_DATA`] bytes from the front of `data` as one `Data` frame, taking
    /// them from `data`, and returns how many. Unlike [`AsyncWrite::poll_write`] the bytes
    /// are given away: a multiplexer stream keeps them as they are while its carrier is
    /// busy, instead of copying them (see [`WriteChunk`]). On `Pending`, `data` is as it
    /// was.
    pub fn poll_write_payload(
        &mut self,
        cx: &mut Context<'_>,
        data: &mut Bytes,
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_ready_to_write(cx))?;
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = data.len().min(MAX_DATA);
        let mut header = [0u8; DATA_HEADER_LEN];
        kubelan_proto::encode_data_header(&mut header, n);
        let mut body = data.slice(..n);
        let k = ready!(self.io.poll_write_owned(cx, &header, &mut body))?;
        if k == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        // `body` is what the stream did not take.
        self.keep_unwritten(&header, &body, k.min(DATA_HEADER_LEN));
        data.advance(n);
        Poll::Ready(Ok(n))
    }
}

impl<S: ReadChunk + WriteChunk> FlowConn<S> {
    /// The peer's next data as it came off the stream, without copying: a `Data` frame's
    /// payload is handed on piece by piece as it arrives, not gathered first. Empty at
    /// the peer's `Fin`; the errors are those of [`AsyncRead`] on this type.
    pub fn poll_read_payload(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Bytes>> {
        if self.awaiting_open {
            ready!(self.poll_flush_all(cx))?;
        }
        loop {
            if !self.rdata.is_empty() {
                return Poll::Ready(Ok(std::mem::take(&mut self.rdata)));
            }
            if self.read_done {
                return Poll::Ready(Ok(Bytes::new()));
            }
            if self.owed > 0 {
                let piece = if !self.rbuf.is_empty() {
                    self.rbuf.split_to(self.owed.min(self.rbuf.len())).freeze()
                } else if !self.chunk.is_empty() {
                    self.chunk.split_to(self.owed.min(self.chunk.len()))
                } else {
                    ready!(self.poll_next_chunk(cx))?;
                    continue;
                };
                self.owed -= piece.len();
                self.rdata = piece;
                continue;
            }
            // At a frame boundary. A `Data` header starts the payload, wherever it lies.
            let header = if self.rbuf.is_empty() {
                data_header(&self.chunk).inspect(|_| {
                    self.chunk.advance(DATA_HEADER_LEN);
                    if self.chunk.is_empty() {
                        self.chunk = Bytes::new(); // let go of the carrier's buffer
                    }
                })
            } else {
                data_header(&self.rbuf).inspect(|_| self.rbuf.advance(DATA_HEADER_LEN))
            };
            if let Some(len) = header {
                self.owed = len;
                continue;
            }
            match self.dec.decode(&mut self.rbuf) {
                Ok(Some(Frame::Opened { .. })) if self.awaiting_open => self.awaiting_open = false,
                Ok(Some(Frame::Failed(e))) if self.awaiting_open => {
                    self.read_done = true;
                    return Poll::Ready(Err(flow_io_error(&e)));
                }
                // A whole `Data` frame the decoder read after skipping an optional frame
                // (compatibility rule 4) in the gathered bytes.
                Ok(Some(Frame::Data(d))) => self.rdata = d,
                Ok(Some(Frame::Fin)) => {
                    self.read_done = true;
                    return Poll::Ready(Ok(Bytes::new()));
                }
                Ok(Some(Frame::Reset(e))) => {
                    self.read_done = true;
                    let e = FlowError::new(ErrorKind::Reset, e.message);
                    return Poll::Ready(Err(flow_io_error(&e)));
                }
                Ok(Some(other)) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("unexpected {} frame inside a TCP flow", other.name()),
                    )));
                }
                Err(e) => return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e))),
                Ok(None) if !self.chunk.is_empty() => {
                    // Another frame, or a header cut between two pieces: gathered (these
                    // are small; a `Data` payload is never copied here).
                    self.rbuf.extend_from_slice(&self.chunk);
                    // Not `clear`: an empty view would still keep the carrier's buffer.
                    self.chunk = Bytes::new();
                }
                // The decoder skipped optional frames up to a `Data` header: streamed too.
                Ok(None) if data_header(&self.rbuf).is_some() => {}
                Ok(None) => ready!(self.poll_next_chunk(cx))?,
            }
        }
    }

    /// Whether the payload handed out so far ends inside a `Data` frame whose rest is still
    /// to come: the peer sent it whole, so it follows without anything on this side.
    pub fn mid_frame(&self) -> bool {
        self.owed > 0
    }

    /// Reads the stream's next piece into `chunk`; the stream ending is the carrier's loss
    /// (a flow ends at `Fin`).
    fn poll_next_chunk(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Mid-frame, the rest of the frame is what is worth waking up for.
        self.io.set_read_lowat(self.owed.max(1));
        let chunk = ready!(self.io.poll_read_chunk(cx, usize::MAX))?;
        if chunk.is_empty() {
            self.read_done = true;
            let e = FlowError::new(
                ErrorKind::CarrierLost,
                "the tunnel to the agent closed before the flow ended",
            );
            return Poll::Ready(Err(flow_io_error(&e)));
        }
        self.chunk = chunk;
        Poll::Ready(Ok(()))
    }
}

impl<S: ReadChunk + WriteChunk> AsyncRead for FlowConn<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.rdata.is_empty() {
            this.rdata = ready!(this.poll_read_payload(cx))?;
        }
        let n = this.rdata.len().min(out.remaining());
        out.put_slice(&this.rdata.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for FlowConn<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_ready_to_write(cx))?;
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = data.len().min(MAX_DATA);
        let mut header = [0u8; DATA_HEADER_LEN];
        kubelan_proto::encode_data_header(&mut header, n);
        if this.io.is_write_vectored() {
            // Header and data in one vectored write: a stream that frames what it is given
            // (the mux) copies them once, into its frame. Only what it did not take is
            // kept here, to go before anything else.
            let bufs = [IoSlice::new(&header), IoSlice::new(&data[..n])];
            let k = ready!(Pin::new(&mut this.io).poll_write_vectored(cx, &bufs))?;
            if k == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            this.keep_unwritten(&header, &data[..n], k);
            return Poll::Ready(Ok(n));
        }
        this.wbuf.reserve(DATA_HEADER_LEN + n);
        this.wbuf.extend_from_slice(&header);
        this.wbuf.extend_from_slice(&data[..n]);
        // Start sending now; whatever is left goes out on the next write or flush.
        match this.poll_flush_wbuf(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(n)),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_flush_all(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_flush_wbuf(cx))?;
        if !this.fin_sent {
            this.fin_sent = true;
            Frame::Fin.encode(&mut this.wbuf);
            ready!(this.poll_flush_wbuf(cx))?;
        }
        // Closing the stream's write side (mux FIN) after our Fin frame; reading goes on.
        // The shutdown flushes: Fin and FIN leave together.
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

/// A stream handed out in scripted pieces, always ready (as a multiplexer stream that
/// has them queued); takes every write. For tests and the fuzz target.
#[cfg(any(fuzzing, test, feature = "fuzz"))]
struct ScriptedPieces(std::collections::VecDeque<Bytes>);

#[cfg(any(fuzzing, test, feature = "fuzz"))]
impl ReadChunk for ScriptedPieces {
    fn poll_read_chunk(&mut self, _: &mut Context<'_>, max: usize) -> Poll<io::Result<Bytes>> {
        let Some(front) = self.0.front_mut() else {
            return Poll::Ready(Ok(Bytes::new()));
        };
        let piece = front.split_to(max.min(front.len()));
        if front.is_empty() {
            self.0.pop_front();
        }
        Poll::Ready(Ok(piece))
    }
}

#[cfg(any(fuzzing, test, feature = "fuzz"))]
impl AsyncRead for ScriptedPieces {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let piece = ready!(self.poll_read_chunk(cx, out.remaining()))?;
        out.put_slice(&piece);
        Poll::Ready(Ok(()))
    }
}

#[cfg(any(fuzzing, test, feature = "fuzz"))]
impl AsyncWrite for ScriptedPieces {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(b.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(any(fuzzing, test, feature = "fuzz"))]
impl WriteChunk for ScriptedPieces {}

/// The entry point of the `flow_payload` cargo-fuzz target (`fuzz/fuzz_targets/flow_payload.rs`)
/// and of its corpus replay (`crates/kubelan/tests/fuzz_corpus.rs`): a flow's stream read
/// with [`FlowConn::poll_read_payload`].
///
/// Input: one byte of setup (bits 0–3: the stream comes in pieces of 1–16 bytes; bit 4:
/// the flow is still opening, so `Opened` or `Failed` comes first), then the stream. Must
/// return normally for any input. Every piece handed out is non-empty; the payload and
/// how the flow ends do not depend on how the stream is cut; and when the decoder reads
/// the stream as `Data` frames up to a `Fin`, the payload is exactly theirs.
#[cfg(any(fuzzing, test, feature = "fuzz"))]
pub fn fuzz_entry(data: &[u8]) {
    let Some((&setup, stream)) = data.split_first() else {
        return;
    };
    let opening = setup & 0x10 != 0;
    let read = |cut: usize| -> (Vec<u8>, Result<(), io::ErrorKind>) {
        let pieces = stream.chunks(cut).map(Bytes::copy_from_slice).collect();
        let mut conn = if opening {
            FlowConn::opening(ScriptedPieces(pieces))
        } else {
            FlowConn::new(ScriptedPieces(pieces), BytesMut::new())
        };
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut got = Vec::new();
        loop {
            match conn.poll_read_payload(&mut cx) {
                Poll::Ready(Ok(p)) if p.is_empty() => return (got, Ok(())),
                Poll::Ready(Ok(p)) => got.extend_from_slice(&p),
                Poll::Ready(Err(e)) => return (got, Err(e.kind())),
                Poll::Pending => return (got, Err(io::ErrorKind::WouldBlock)),
            }
        }
    };
    let whole = read(stream.len().max(1));
    assert_ne!(
        whole.1,
        Err(io::ErrorKind::WouldBlock),
        "a ready stream waited"
    );
    let cut = read(usize::from(setup & 0x0f) + 1);
    assert_eq!(whole, cut, "the cut changed what was read");
    if opening {
        return;
    }
    let mut buf = BytesMut::from(stream);
    let mut dec = Decoder::new();
    let mut want = Vec::new();
    while let Ok(Some(frame)) = dec.decode(&mut buf) {
        match frame {
            Frame::Data(d) => want.extend_from_slice(&d),
            Frame::Fin => {
                assert_eq!(whole, (want, Ok(())), "a clean stream read otherwise");
                return;
            }
            _ => return,
        }
    }
}

/// Bridges a datagram flow to channels with one task.
pub(crate) fn datagram_channels<S>(
    reader: FrameReader<S>,
) -> (mpsc::Sender<Bytes>, mpsc::Receiver<Bytes>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (to_agent_tx, mut to_agent_rx) = mpsc::channel::<Bytes>(256);
    let (from_agent_tx, from_agent_rx) = mpsc::channel::<Bytes>(256);
    let (stream, leftover) = reader.into_parts();
    let (rd, mut wr) = tokio::io::split(stream);
    tokio::spawn(async move {
        let mut reader = FrameReader::with_buffer(rd, leftover);
        loop {
            tokio::select! {
                out = to_agent_rx.recv() => match out {
                    Some(d) => {
                        if write_frame(&mut wr, &Frame::Datagram(d)).await.is_err() {
                            break;
                        }
                    }
                    None => {
                        let _ = write_frame(&mut wr, &Frame::Fin).await;
                        break;
                    }
                },
                inp = reader.next() => match inp {
                    Ok(Some(Frame::Datagram(d))) => {
                        // UDP semantics: drop when the consumer is slow.
                        let _ = from_agent_tx.try_send(d);
                    }
                    _ => break,
                },
            }
        }
    });
    (to_agent_tx, from_agent_rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mux::{self, Side};
    use kubelan_proto::{FlowKind, Target};
    use std::time::Duration;

    /// Both ends of an in-memory carrier: the client's handle, the agent's handle and the
    /// agent's incoming streams.
    fn carrier() -> (
        mux::MuxHandle,
        mux::MuxHandle,
        tokio::sync::mpsc::UnboundedReceiver<mux::MuxStream>,
    ) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (client, _) = mux::spawn(a, Side::Client);
        let (agent, incoming) = mux::spawn(b, Side::Agent);
        (client, agent, incoming)
    }

    fn open_frame() -> Frame {
        Frame::Open {
            kind: FlowKind::Tcp,
            target: Target::Addr("192.0.2.1:80".parse().unwrap()),
            optimistic: true,
        }
    }

    #[tokio::test]
    async fn optimistic_open_rides_with_the_first_data_and_a_read_sends_it_alone() {
        let (client, _agent, mut incoming) = carrier();

        // Open buffered, data written and flushed: both arrive, in order.
        let mut s = client.open().await.unwrap();
        buffer_frame(&mut s, &open_frame()).await.unwrap();
        let mut conn = FlowConn::opening(s);
        conn.write_all(b"GET /").await.unwrap();
        conn.flush().await.unwrap();
        let mut r = FrameReader::new(incoming.recv().await.unwrap());
        assert_eq!(r.next().await.unwrap(), Some(open_frame()));
        assert_eq!(
            r.next().await.unwrap(),
            Some(Frame::Data(Bytes::from_static(b"GET /")))
        );

        // Open buffered and nothing written: nothing leaves until the flow is read.
        let mut s = client.open().await.unwrap();
        buffer_frame(&mut s, &open_frame()).await.unwrap();
        let mut conn = FlowConn::opening(s);
        let early = tokio::time::timeout(Duration::from_millis(100), incoming.recv()).await;
        assert!(early.is_err(), "an unflushed Open reached the agent");
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 16];
            conn.read(&mut buf).await.map(|n| buf[..n].to_vec())
        });
        let sent = tokio::time::timeout(Duration::from_secs(5), incoming.recv()).await;
        let mut r = FrameReader::new(sent.expect("reading sends the Open").unwrap());
        assert_eq!(r.next().await.unwrap(), Some(open_frame()));
        // The agent answers with Opened and data in one go; the reader gets the data.
        let (mut t, _) = r.into_parts();
        buffer_frame(
            &mut t,
            &Frame::Opened {
                peer: "192.0.2.1:80".parse().unwrap(),
            },
        )
        .await
        .unwrap();
        write_frame(&mut t, &Frame::Data(Bytes::from_static(b"banner")))
            .await
            .unwrap();
        assert_eq!(reader.await.unwrap().unwrap(), b"banner");
    }

    /// Both ends of one open flow over an in-memory carrier: (client, agent), plus the
    /// carrier handles (dropping them would not end it; `close` does).
    async fn flow_pair() -> (
        FlowConn<mux::MuxStream>,
        FlowConn<mux::MuxStream>,
        mux::MuxHandle,
        mux::MuxHandle,
    ) {
        let (client, agent, mut incoming) = carrier();
        let mut s = client.open().await.unwrap();
        s.write_all(b"x").await.unwrap(); // the stream's first byte opens it
        s.flush().await.unwrap();
        let mut t = incoming.recv().await.unwrap();
        t.read_exact(&mut [0u8; 1]).await.unwrap();
        (
            FlowConn::new(s, BytesMut::new()),
            FlowConn::new(t, BytesMut::new()),
            client,
            agent,
        )
    }

    /// Reads until the end: the bytes, and how it ended (`Ok` at `Fin`, else the error).
    async fn read_all(c: &mut FlowConn<mux::MuxStream>) -> (Vec<u8>, io::Result<()>) {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf))
                .await
                .expect("neither an end nor an error")
            {
                Ok(0) => return (got, Ok(())),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => return (got, Err(e)),
            }
        }
    }

    /// A carrier that dies mid-flow is an error for both ends' readers (after the bytes
    /// that came before), never an end of stream: only `Fin` is one.
    #[tokio::test]
    async fn a_carrier_lost_mid_flow_is_an_error_not_an_end() {
        for close_side in ["agent", "client"] {
            let (mut near, mut far, client, agent) = flow_pair().await;
            far.write_all(b"part of a stream").await.unwrap();
            far.flush().await.unwrap();
            let mut got = vec![0u8; 16];
            near.read_exact(&mut got).await.unwrap();
            if close_side == "agent" {
                agent.close();
            } else {
                client.close();
            }
            for (who, c) in [("client", &mut near), ("agent", &mut far)] {
                let (rest, end) = read_all(c).await;
                assert!(rest.is_empty(), "{close_side} closed: {who}");
                assert_eq!(
                    end.map_err(|e| e.kind()),
                    Err(io::ErrorKind::ConnectionAborted),
                    "{close_side} closed the carrier: {who}'s read"
                );
            }
            assert!(near.write_all(b"more").await.is_err());
        }
        // The clean end, for contrast.
        let (mut near, mut far, _c, _a) = flow_pair().await;
        far.write_all(b"all of it").await.unwrap();
        far.shutdown().await.unwrap();
        let (got, end) = read_all(&mut near).await;
        assert_eq!(got, b"all of it");
        assert!(end.is_ok());
    }

    /// The peer dropping its stream (mux RST) and its `Reset` frame are resets.
    #[tokio::test]
    async fn resets_from_the_peer_are_connection_reset() {
        let (mut near, far, _c, _a) = flow_pair().await;
        drop(far);
        assert_eq!(
            read_all(&mut near).await.1.map_err(|e| e.kind()),
            Err(io::ErrorKind::ConnectionReset)
        );
        let (mut near, far, _c, _a) = flow_pair().await;
        far.reset(FlowError::new(ErrorKind::Reset, "the destination reset"))
            .await;
        let end = read_all(&mut near).await.1.unwrap_err();
        assert_eq!(end.kind(), io::ErrorKind::ConnectionReset);
        assert!(end.to_string().contains("the destination reset"), "{end}");
    }

    /// A reset while a `Data` frame is half written (the peer's window is full) comes
    /// after that frame: the reader gets a prefix of the data, then the reset, never
    /// bytes of the `Reset` frame as data.
    #[tokio::test]
    async fn a_reset_waits_for_the_frame_it_interrupts() {
        let (mut near, mut far, _c, _a) = flow_pair().await;
        let data: Vec<u8> = (0..2_000_000u32).map(|i| (i % 253) as u8).collect();
        // Fills the window (256 KiB) and leaves part of a frame in the write buffer.
        let stalled = tokio::time::timeout(Duration::from_millis(200), far.write_all(&data)).await;
        assert!(stalled.is_err(), "the writer must wait for the reader");
        assert!(!far.wbuf.is_empty(), "part of a frame is waiting");
        let reset = tokio::spawn(far.reset(FlowError::new(ErrorKind::Reset, "cut")));
        let (got, end) = read_all(&mut near).await;
        assert_eq!(
            end.map_err(|e| e.kind()),
            Err(io::ErrorKind::ConnectionReset),
            "after {} bytes",
            got.len()
        );
        assert!(data.starts_with(&got), "{} bytes, not a prefix", got.len());
        reset.await.unwrap();
    }

    #[tokio::test]
    async fn bulk_through_flow_conns_beyond_the_window_arrives_whole() {
        let (client, _agent, mut incoming) = carrier();
        let mut s = client.open().await.unwrap();
        s.write_all(b"x").await.unwrap(); // the stream's first byte opens it
        s.flush().await.unwrap();
        let mut t = incoming.recv().await.unwrap();
        let mut one = [0u8; 1];
        t.read_exact(&mut one).await.unwrap();
        let (mut near, mut far) = (
            FlowConn::new(s, BytesMut::new()),
            FlowConn::new(t, BytesMut::new()),
        );
        // Writes of odd sizes: frames straddle the stream's credit, so some are taken
        // in part and finished from the write buffer.
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            for chunk in sent.chunks(70_001) {
                near.write_all(chunk).await.unwrap();
            }
            near.shutdown().await.unwrap();
            near
        });
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), far.read_to_end(&mut got))
            .await
            .expect("bulk transfer finishes")
            .unwrap();
        assert!(
            got == data,
            "{} bytes arrived, {} sent",
            got.len(),
            data.len()
        );
        writer.await.unwrap();
    }

    /// Payload given away as buffers ([`FlowConn::poll_write_payload`]) arrives whole and in
    /// order, mixed with copied writes, whatever the credit cuts; with many such flows at
    /// once the carrier is busy and holds the buffers themselves.
    #[tokio::test]
    async fn payload_written_as_bytes_arrives_framed_whole_and_in_order() {
        let (client, _agent, mut incoming) = carrier();
        let mut readers = Vec::new();
        let mut writers = Vec::new();
        for k in 0..8u32 {
            let mut s = client.open().await.unwrap();
            s.write_all(b"x").await.unwrap();
            s.flush().await.unwrap();
            let mut t = incoming.recv().await.unwrap();
            t.read_exact(&mut [0u8; 1]).await.unwrap();
            let (mut near, mut far) = (
                FlowConn::new(s, BytesMut::new()),
                FlowConn::new(t, BytesMut::new()),
            );
            let data: Vec<u8> = (0..700_000u32).map(|i| ((i + k) % 251) as u8).collect();
            let sent = data.clone();
            writers.push(tokio::spawn(async move {
                for (i, chunk) in sent.chunks(65_537).enumerate() {
                    if i % 3 == 2 {
                        near.write_all(chunk).await.unwrap();
                        continue;
                    }
                    let mut b = Bytes::copy_from_slice(chunk);
                    while !b.is_empty() {
                        std::future::poll_fn(|cx| near.poll_write_payload(cx, &mut b))
                            .await
                            .unwrap();
                    }
                }
                near.shutdown().await.unwrap();
                near
            }));
            readers.push(tokio::spawn(async move {
                let mut got = Vec::new();
                far.read_to_end(&mut got).await.unwrap();
                assert!(
                    got == data,
                    "flow {k}: {} bytes of {}",
                    got.len(),
                    data.len()
                );
            }));
        }
        for r in readers {
            tokio::time::timeout(Duration::from_secs(30), r)
                .await
                .expect("every flow finishes")
                .unwrap();
        }
        for w in writers {
            w.await.unwrap();
        }
    }

    /// A vectored sink that takes at most `step` bytes per write and is not ready every
    /// other time, as a busy mux stream can be.
    struct Stingy {
        out: Vec<u8>,
        step: usize,
        calls: usize,
    }

    impl AsyncRead for Stingy {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    impl AsyncWrite for Stingy {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(buf)])
        }
        fn poll_write_vectored(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            this.calls += 1;
            if this.calls.is_multiple_of(2) {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let mut left = this.step;
            for b in bufs {
                let take = b.len().min(left);
                this.out.extend_from_slice(&b[..take]);
                left -= take;
            }
            Poll::Ready(Ok(this.step - left))
        }
        fn is_write_vectored(&self) -> bool {
            true
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn frames_taken_in_part_by_a_vectored_stream_arrive_whole_and_in_order() {
        // Steps that cut inside the 4-byte header, right after it, and inside the data.
        for step in [1, 3, 4, 5, 1000, 70_000] {
            let mut conn = FlowConn::new(
                Stingy {
                    out: Vec::new(),
                    step,
                    calls: 0,
                },
                BytesMut::new(),
            );
            let writes: Vec<Vec<u8>> = [7usize, 1, 5000, 3]
                .iter()
                .enumerate()
                .map(|(i, &n)| vec![i as u8 + 1; n])
                .collect();
            for w in &writes {
                conn.write_all(w).await.unwrap();
            }
            conn.shutdown().await.unwrap();
            let mut wire = BytesMut::from(&conn.io.out[..]);
            let mut dec = Decoder::new();
            let mut got = Vec::new();
            while let Some(f) = dec.decode(&mut wire).unwrap() {
                got.push(f);
            }
            let mut want: Vec<Frame> = writes
                .iter()
                .map(|w| Frame::Data(Bytes::from(w.clone())))
                .collect();
            want.push(Frame::Fin);
            assert_eq!(got, want, "step {step}");
            assert!(wire.is_empty(), "step {step}: {} bytes left", wire.len());
        }
    }

    /// Every piece `conn` hands out until its end, and how it ended.
    async fn payload_pieces<S: ReadChunk + WriteChunk>(
        conn: &mut FlowConn<S>,
    ) -> (Vec<Bytes>, io::Result<()>) {
        let mut pieces = Vec::new();
        loop {
            match std::future::poll_fn(|cx| conn.poll_read_payload(cx)).await {
                Ok(p) if p.is_empty() => return (pieces, Ok(())),
                Ok(p) => pieces.push(p),
                Err(e) => return (pieces, Err(e)),
            }
        }
    }

    /// Whatever way the stream is cut into pieces (inside headers, between frames, an
    /// answer and data in one piece), the payload comes out whole and in order, and the
    /// frames around it are read.
    #[tokio::test]
    async fn payload_pieces_survive_any_cut_of_the_stream() {
        let big: Vec<u8> = (0..70_000u32).map(|i| (i % 249) as u8).collect();
        let mut wire = BytesMut::new();
        Frame::Opened {
            peer: "192.0.2.1:80".parse().unwrap(),
        }
        .encode(&mut wire);
        Frame::Data(Bytes::from_static(b"hello ")).encode(&mut wire);
        Frame::Data(Bytes::new()).encode(&mut wire);
        Frame::Data(Bytes::copy_from_slice(&big[..MAX_DATA])).encode(&mut wire);
        Frame::Data(Bytes::copy_from_slice(&big[MAX_DATA..])).encode(&mut wire);
        Frame::Fin.encode(&mut wire);
        let wire = wire.freeze();
        let mut want = b"hello ".to_vec();
        want.extend_from_slice(&big);
        for cut in [1, 2, 3, 4, 5, 7, 13, 4096, 16 * 1024, wire.len()] {
            let pieces = wire.chunks(cut).map(Bytes::copy_from_slice).collect();
            let mut conn = FlowConn::opening(ScriptedPieces(pieces));
            let (got, end) = payload_pieces(&mut conn).await;
            assert!(end.is_ok(), "cut {cut}: {end:?}");
            assert!(
                got.iter().all(|p| !p.is_empty()),
                "cut {cut}: an empty piece"
            );
            assert_eq!(got.concat(), want, "cut {cut}");
            // The byte view reads the same stream the same way.
            let pieces = wire.chunks(cut).map(Bytes::copy_from_slice).collect();
            let mut conn = FlowConn::opening(ScriptedPieces(pieces));
            let mut all = Vec::new();
            conn.read_to_end(&mut all).await.unwrap();
            assert_eq!(all, want, "cut {cut}, read");
        }
    }

    /// A `Data` frame that starts a piece is handed out as slices of that piece (no copy);
    /// a piece that ends inside the frame is followed by the rest as it comes.
    #[tokio::test]
    async fn payload_is_handed_out_as_slices_of_the_pieces() {
        let mut first = BytesMut::new();
        Frame::Data(Bytes::from(vec![7u8; 30_000])).encode(&mut first);
        let mut rest = first.split_off(10_000); // the frame goes on in the next piece
        Frame::Data(Bytes::from_static(b"tail")).encode(&mut rest);
        Frame::Fin.encode(&mut rest);
        let (first, rest) = (first.freeze(), rest.freeze());
        let within = |p: &Bytes, of: &Bytes| {
            let (start, end) = (of.as_ptr() as usize, of.as_ptr() as usize + of.len());
            p.as_ptr() as usize >= start && p.as_ptr() as usize + p.len() <= end
        };
        let mut conn = FlowConn::new(
            ScriptedPieces([first.clone(), rest.clone()].into()),
            BytesMut::new(),
        );
        let (got, end) = payload_pieces(&mut conn).await;
        assert!(end.is_ok());
        assert_eq!(
            got.iter().map(Bytes::len).collect::<Vec<_>>(),
            [9_996, 20_004, 4]
        );
        assert!(within(&got[0], &first), "copied from the first piece");
        assert!(
            within(&got[1], &rest) && within(&got[2], &rest),
            "copied from the second"
        );
    }

    /// The pieces' stream ending inside a frame, or between frames without `Fin`, is the
    /// carrier's loss, after the payload that came.
    #[tokio::test]
    async fn pieces_ending_without_fin_are_a_lost_carrier() {
        let mut wire = BytesMut::new();
        Frame::Data(Bytes::from_static(b"abcdef")).encode(&mut wire);
        for keep in [wire.len(), wire.len() - 2, 2] {
            let pieces = [Bytes::copy_from_slice(&wire[..keep])].into();
            let mut conn = FlowConn::new(ScriptedPieces(pieces), BytesMut::new());
            let (got, end) = payload_pieces(&mut conn).await;
            assert_eq!(
                end.map_err(|e| e.kind()),
                Err(io::ErrorKind::ConnectionAborted),
                "keep {keep}"
            );
            assert!(b"abcdef".starts_with(&got.concat()), "keep {keep}");
        }
    }

    /// The fuzz target's checks over a few thousand generated streams: frames of every
    /// kind a flow may meet (and some it must refuse), cut short at random.
    #[test]
    fn generated_streams_read_the_same_however_they_are_cut() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let kinds = [0x13u8, 0x13, 0x13, 0x14, 0x15, 0x80, 0x9f, 0x7f, 0x16, 0x11];
        for _ in 0..3000 {
            let mut input = vec![next(256) as u8];
            for _ in 0..next(6) {
                let ty = kinds[next(kinds.len() as u64) as usize];
                let len = if next(8) == 0 { next(70_000) } else { next(40) } as usize;
                input.extend_from_slice(&[ty, (len >> 16) as u8, (len >> 8) as u8, len as u8]);
                input.extend((0..len.min(70_000)).map(|i| i as u8));
            }
            let keep = input.len() - next(input.len().min(8) as u64 + 1) as usize;
            fuzz_entry(&input[..keep.max(1)]);
        }
    }
}
