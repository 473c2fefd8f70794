//! TCP streams that reset instead of closing when dropped mid-flight.
//!
//! The data plane must never turn an abort into a clean end: when a splice or
//! pump gives up on a TCP connection, the far end must see a reset (RST), not
//! an end of stream (FIN). Dropping a plain socket sends FIN, so this wrapper
//! remembers whether the connection finished cleanly (our FIN sent *and* the
//! peer's FIN read) and otherwise sets `SO_LINGER` to zero before the socket
//! closes, which makes the kernel send RST. Every boxed stream type can thus be
//! aborted the same way: by dropping it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A TCP connection that is reset on drop unless it ended cleanly both ways.
#[derive(Debug)]
pub struct TcpIo {
    inner: TcpStream,
    read_eof: bool,
    write_shut: bool,
}

impl TcpIo {
    /// Wraps a connected socket.
    pub fn new(inner: TcpStream) -> TcpIo {
        let _ = inner.set_nodelay(true);
        TcpIo { inner, read_eof: false, write_shut: false }
    }

    /// The socket underneath.
    pub fn get_ref(&self) -> &TcpStream {
        &self.inner
    }

    /// Whether dropping now would close cleanly (FIN) rather than reset.
    pub fn ended_cleanly(&self) -> bool {
        self.read_eof && self.write_shut
    }
}

impl Drop for TcpIo {
    fn drop(&mut self) {
        if !self.ended_cleanly() {
            // Zero linger never blocks: close() discards the send queue and sends RST.
            let _ = self.inner.set_zero_linger();
        }
    }
}

impl AsyncRead for TcpIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let asked = buf.remaining() > 0;
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = res {
            if asked && buf.filled().len() == before {
                self.read_eof = true;
            }
        }
        res
    }
}

impl AsyncWrite for TcpIo {
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
        let res = Pin::new(&mut self.inner).poll_shutdown(cx);
        if let Poll::Ready(Ok(())) = res {
            self.write_shut = true;
        }
        res
    }
}
