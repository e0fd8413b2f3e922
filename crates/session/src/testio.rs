//! Test helper: a stream wrapper that logs the writes and shutdowns reaching it, and counts
//! the bytes read through it.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::relay::RelayEnd;

/// What the wrapped stream was asked to do, in order. Writes are logged with the bytes
/// they actually took, and only when they took some.
#[derive(Debug, PartialEq)]
pub(crate) enum Call {
    Write(Vec<u8>),
    /// A vectored write, with the bytes it took from all its slices.
    Writev(Vec<u8>),
    /// A [`RelayEnd::poll_write_last`].
    Last(Vec<u8>),
    Shutdown,
}

/// The shared log of a [`Logged`].
pub(crate) type Log = Arc<Mutex<Vec<Call>>>;

/// `io` with every write and shutdown logged; the log is shared with the test, and so is
/// the count of bytes read ([`Logged::bytes_read`]).
pub(crate) struct Logged<T> {
    io: T,
    log: Log,
    read: Arc<AtomicUsize>,
}

impl<T: AsyncWrite + Unpin> Logged<T> {
    pub(crate) fn new(io: T) -> (Logged<T>, Log) {
        let log = Arc::new(Mutex::new(Vec::new()));
        (
            Logged {
                io,
                log: log.clone(),
                read: Arc::new(AtomicUsize::new(0)),
            },
            log,
        )
    }

    /// The count of bytes read through this stream so far, shared.
    pub(crate) fn bytes_read(&self) -> Arc<AtomicUsize> {
        self.read.clone()
    }

    fn write(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
        as_: fn(Vec<u8>) -> Call,
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r
            && n > 0
        {
            self.log.lock().unwrap().push(as_(buf[..n].to_vec()));
        }
        r
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Logged<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        self.read
            .fetch_add(buf.filled().len() - before, Ordering::Relaxed);
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Logged<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().write(cx, buf, Call::Write)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let all: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
        self.get_mut().write(cx, &all, Call::Writev)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.log.lock().unwrap().push(Call::Shutdown);
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> RelayEnd for Logged<T> {
    fn poll_write_last(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().write(cx, buf, Call::Last)
    }
}

/// Implements `AsyncWrite` for a test stream as a sink that takes every write at once.
macro_rules! sink_writes {
    ($t:ty) => {
        impl tokio::io::AsyncWrite for $t {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::task::Poll::Ready(Ok(buf.len()))
            }

            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::task::Poll::Ready(Ok(()))
            }

            fn poll_shutdown(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::task::Poll::Ready(Ok(()))
            }
        }
    };
}
pub(crate) use sink_writes;
