//! Bidirectional copy whose buffers grow with the traffic.
//!
//! `tokio::io::copy_bidirectional_with_sizes` allocates both buffers up front. With 64 KiB
//! buffers (needed for bulk throughput) that is 128 KiB per flow before a byte moves, so
//! 10 000 mostly idle flows would cost over a gigabyte in the proxy and the agent each.
//! Here each direction starts with [`START`] bytes and doubles, up to [`MAX`], whenever
//! a read fills the whole buffer — only flows that actually stream pay for big buffers.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

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
        }
    }

    /// Moves bytes from `r` to `w`; `Ready(Ok)` once `r` ended and `w` was shut down.
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut R,
        w: &mut W,
    ) -> Poll<io::Result<u64>>
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
    {
        loop {
            if self.pos == self.end && !self.read_done {
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
                            if n == self.buf.len() && self.buf.len() < MAX {
                                // A full read: this flow streams, give it room.
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
                let n = ready!(Pin::new(&mut *w).poll_write(cx, &self.buf[self.pos..self.end]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.pos += n;
                self.total += n as u64;
                self.need_flush = true;
            }
            if self.read_done {
                if !self.shut {
                    ready!(Pin::new(&mut *w).poll_shutdown(cx))?;
                    self.shut = true;
                }
                return Poll::Ready(Ok(self.total));
            }
        }
    }
}

/// Copies both ways between `a` and `b` until both directions ended (each end's EOF is
/// passed on as a shutdown of the other's write side). Returns bytes a→b and b→a.
///
/// # Errors
///
/// The first I/O error of either side; the other direction stops with it.
pub async fn copy_bidirectional<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut ab = Direction::new();
    let mut ba = Direction::new();
    let (mut ab_done, mut ba_done) = (None, None);
    poll_fn(|cx| {
        if ab_done.is_none()
            && let Poll::Ready(r) = ab.poll_copy(cx, a, b)
        {
            ab_done = Some(r?);
        }
        if ba_done.is_none()
            && let Poll::Ready(r) = ba.poll_copy(cx, b, a)
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
