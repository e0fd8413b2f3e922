//! Write coalescing under the multiplexer.
//!
//! yamux writes a frame as two writes (12-byte header, then body) and flushes after every
//! frame. Straight onto TLS that makes two records and two system calls per frame — a
//! 12-byte record for every header. [`Coalesce`] gathers writes until the next flush (or
//! 64 KiB), so each frame becomes one TLS record and one `send`, and frames that are
//! written back to back share one.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Most bytes held before they are written through.
const CAP: usize = 64 * 1024;

/// Buffers writes until flush; reads pass through.
#[derive(Debug)]
pub struct Coalesce<T> {
    io: T,
    buf: Vec<u8>,
    pos: usize,
}

impl<T> Coalesce<T> {
    /// Wraps a byte stream.
    pub fn new(io: T) -> Coalesce<T> {
        Coalesce {
            io,
            buf: Vec::new(),
            pos: 0,
        }
    }
}

impl<T: AsyncWrite + Unpin> Coalesce<T> {
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(poll_write_out(&mut self.io, cx, &self.buf, &mut self.pos))?;
        self.buf.clear();
        self.pos = 0;
        if self.buf.capacity() > CAP {
            self.buf.shrink_to(CAP);
        }
        Poll::Ready(Ok(()))
    }
}

/// Writes `data[*pos..]` to `io`, advancing `pos`, until all of it is written.
pub(crate) fn poll_write_out<W: AsyncWrite + Unpin + ?Sized>(
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

impl<T: AsyncRead + Unpin> AsyncRead for Coalesce<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, out)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesce<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.buf.len() >= CAP {
            ready!(this.poll_drain(cx))?;
        }
        let n = data.len().min(CAP.saturating_sub(this.buf.len()).max(1));
        let n = n.min(data.len());
        this.buf.extend_from_slice(&data[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn holds_writes_until_flush() {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let mut c = Coalesce::new(a);
        c.write_all(b"head").await.unwrap();
        c.write_all(b"body").await.unwrap();
        let mut buf = [0u8; 8];
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), b.read(&mut buf))
                .await
                .is_err(),
            "nothing is written before the flush"
        );
        c.flush().await.unwrap();
        b.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"headbody");
        let big = vec![7u8; 200_000];
        c.write_all(&big).await.unwrap();
        c.shutdown().await.unwrap();
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, big);
    }
}
