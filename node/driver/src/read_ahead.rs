//! Large socket reads under Noise.
//!
//! libp2p-noise reads its transport in 8 KiB pieces, so a 62 KiB Noise
//! message (one [`crate::muxer`] frame) took eight `recv(2)` calls. This
//! wrapper reads the socket in [`READ_SIZE`] chunks and serves the small reads
//! from memory. While the socket has nothing to read the buffer is freed, so
//! an idle connection holds none.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{AsyncRead, AsyncWrite};

/// Most bytes one socket read takes.
pub const READ_SIZE: usize = 64 * 1024;

/// A stream whose reads go through a read-ahead buffer; writes pass through.
#[derive(Debug)]
pub struct ReadAhead<S> {
    inner: S,
    buf: Vec<u8>,
    /// Unread bytes are `buf[start..]`.
    start: usize,
}

impl<S> ReadAhead<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> ReadAhead<S> {
        ReadAhead { inner, buf: Vec::new(), start: 0 }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.start == this.buf.len() {
            if out.len() >= READ_SIZE {
                // A read as large as ours gains nothing from the copy.
                return Pin::new(&mut this.inner).poll_read(cx, out);
            }
            this.buf.resize(READ_SIZE, 0);
            match Pin::new(&mut this.inner).poll_read(cx, &mut this.buf) {
                Poll::Ready(Ok(n)) if n > 0 => {
                    this.buf.truncate(n);
                    this.start = 0;
                }
                other => {
                    // Idle, ended or failed: keep no buffer.
                    this.buf = Vec::new();
                    this.start = 0;
                    return other;
                }
            }
        }
        let unread = this.buf.get(this.start..).unwrap_or_default();
        let n = unread.len().min(out.len());
        if let (Some(dst), Some(src)) = (out.get_mut(..n), unread.get(..n)) {
            dst.copy_from_slice(src);
        }
        this.start += n;
        Poll::Ready(Ok(n))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use futures::io::{AsyncReadExt, Cursor};

    /// A reader that hands out at most `step` bytes a call and counts calls.
    struct Trickle {
        data: Cursor<Vec<u8>>,
        step: usize,
        calls: usize,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            self.calls += 1;
            let step = self.step.min(buf.len());
            let this = &mut *self;
            Pin::new(&mut this.data).poll_read(cx, &mut buf[..step])
        }
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn small_reads_see_every_byte_in_order_with_few_socket_reads() {
        let data = pattern(300_000);
        let inner = Trickle { data: Cursor::new(data.clone()), step: usize::MAX, calls: 0 };
        let mut r = ReadAhead::new(inner);
        let mut got = Vec::new();
        let mut piece = [0u8; 8192];
        loop {
            let n = block_on(r.read(&mut piece)).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&piece[..n]);
        }
        assert_eq!(got, data);
        // One socket read per READ_SIZE bytes, and the one that saw the end.
        assert_eq!(r.inner.calls, data.len().div_ceil(READ_SIZE) + 1);
        assert!(r.buf.capacity() == 0, "the buffer is freed at the end");
    }

    #[test]
    fn short_socket_reads_and_large_reads_pass_through_intact() {
        let data = pattern(200_000);
        let inner = Trickle { data: Cursor::new(data.clone()), step: 1000, calls: 0 };
        let mut r = ReadAhead::new(inner);
        let mut got = Vec::new();
        let mut small = [0u8; 300];
        let mut large = vec![0u8; READ_SIZE];
        for round in 0.. {
            let n = if round % 2 == 0 {
                let n = block_on(r.read(&mut small)).unwrap();
                got.extend_from_slice(&small[..n]);
                n
            } else {
                let n = block_on(r.read(&mut large)).unwrap();
                got.extend_from_slice(&large[..n]);
                n
            };
            if n == 0 {
                break;
            }
        }
        assert_eq!(got, data);
    }
}
