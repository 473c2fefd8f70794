//! Yamux for our peer connections, with frames sized for bulk data.
//!
//! libp2p-yamux leaves yamux's frame size at 16 KiB, and yamux flushes the
//! connection after every frame. Over Noise that made every 16 KiB of proxied
//! data one Noise message, one AEAD call, one `send(2)` and one TCP segment
//! on each hop (seen with `strace` under `cargo xtask bench`). This upgrade
//! speaks the same `/yamux/1.0.0` (peers running stock libp2p-yamux
//! interoperate: frame size is the sender's choice) but sends data frames of up
//! to [`FRAME_BODY`] bytes, which still fit one Noise message. And it holds
//! back yamux's flush after every frame until yamux has nothing more to do
//! (see `Cork`), so many small frames share one Noise message.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::{ready, Ready};
use std::io;
use std::iter;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll, Waker};

use futures::{AsyncRead, AsyncWrite};
use libp2p::core::muxing::{StreamMuxer, StreamMuxerEvent};
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo};

/// Largest data frame body we send. A Noise transport message carries at most
/// 65,535 bytes, 16 of them the AEAD tag; a frame's 12-byte header and this
/// body stay below [`crate::p2p::noise::MAX_PLAINTEXT`] (and below the 64,511
/// bytes libp2p-noise puts in one message, for relayed peers that run it),
/// so one frame is one Noise message.
pub const FRAME_BODY: usize = 62 * 1024;
const _: () = assert!(12 + FRAME_BODY <= crate::p2p::noise::MAX_PLAINTEXT);

/// A data frame announcing a longer body reaches yamux split into frames of
/// at most this many bytes. yamux allocates a frame's whole body (up to
/// 1 MiB) as soon as its 12-byte header arrives, so a peer could pin 1 MiB
/// per connection with a header and silence; split, it pins at most this.
/// Our peers send frames of at most [`FRAME_BODY`] bytes, which pass whole.
pub const MAX_RECEIVED_FRAME: u32 = FRAME_BODY as u32;

/// The receive window a connection may grant beyond yamux's 256 KiB per
/// stream: what one busy stream's window can grow to (yamux's auto-tuning
/// doubles a stream's window towards the bandwidth-delay product) while the
/// others idle. Yamux's own default, 1 GiB for the whole connection, would let
/// one peer have that much in flight towards us.
pub const WINDOW_HEADROOM: usize = 16 << 20;

/// Inbound streams held for the swarm between its polls; beyond this (yamux's
/// own acknowledgement backlog, which well-behaved peers never exceed) new
/// inbound streams are dropped, which resets them.
const MAX_WAITING_INBOUND: usize = 256;

/// A connection's receive window for `max_streams` streams.
pub fn receive_window(max_streams: usize) -> usize {
    max_streams.saturating_mul(yamux::DEFAULT_CREDIT as usize).saturating_add(WINDOW_HEADROOM)
}

/// The `/yamux/1.0.0` upgrade with our frame size.
#[derive(Debug, Clone)]
pub struct Yamux {
    config: yamux::Config,
}

impl Yamux {
    /// Yamux allowing `max_streams` concurrent streams per connection (at
    /// most 4,096: see [`crate::p2p::network::YAMUX_MAX_STREAMS_CEILING`]), with a
    /// connection receive window of 256 KiB per stream (yamux asserts at
    /// least that) plus [`WINDOW_HEADROOM`].
    pub fn new(max_streams: usize) -> Yamux {
        let mut config = yamux::Config::default();
        config.set_max_num_streams(max_streams);
        config.set_max_connection_receive_window(Some(receive_window(max_streams)));
        config.set_split_send_size(FRAME_BODY);
        Yamux { config }
    }

    fn muxer<C>(self, io: C, mode: yamux::Mode) -> Ready<Result<Muxer<C>, Infallible>>
    where
        C: AsyncRead + AsyncWrite + Unpin + 'static,
    {
        let cork = Arc::new(Cork::default());
        let io = Corked { io, cork: cork.clone(), frames: Frames::default() };
        ready(Ok(Muxer {
            connection: yamux::Connection::new(io, self.config, mode),
            cork,
            inbound: VecDeque::new(),
            inbound_waker: None,
        }))
    }
}

impl UpgradeInfo for Yamux {
    type Info = &'static str;
    type InfoIter = iter::Once<&'static str>;

    fn protocol_info(&self) -> Self::InfoIter {
        iter::once("/yamux/1.0.0")
    }
}

impl<C> InboundConnectionUpgrade<C> for Yamux
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = Muxer<C>;
    type Error = Infallible;
    type Future = Ready<Result<Muxer<C>, Infallible>>;

    fn upgrade_inbound(self, io: C, _: Self::Info) -> Self::Future {
        self.muxer(io, yamux::Mode::Server)
    }
}

impl<C> OutboundConnectionUpgrade<C> for Yamux
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = Muxer<C>;
    type Error = Infallible;
    type Future = Ready<Result<Muxer<C>, Infallible>>;

    fn upgrade_outbound(self, io: C, _: Self::Info) -> Self::Future {
        self.muxer(io, yamux::Mode::Client)
    }
}

/// One yamux connection as libp2p's [`StreamMuxer`].
///
/// Yamux makes progress (reads frames, writes queued ones) only inside
/// `poll_next_inbound`, which also yields the peer's new streams. The swarm
/// drives [`StreamMuxer::poll`] continuously and asks for inbound streams
/// separately, so streams that turn up while it drives wait here.
#[derive(Debug)]
pub struct Muxer<C> {
    connection: yamux::Connection<Corked<C>>,
    cork: Arc<Cork>,
    inbound: VecDeque<yamux::Stream>,
    inbound_waker: Option<Waker>,
}

impl<C> Muxer<C>
where
    C: AsyncRead + AsyncWrite + Unpin + 'static,
{
    /// Drives yamux with its flushes corked; once it has nothing more to do,
    /// drives it once more uncorked, so what it wrote leaves in one flush.
    fn next_inbound(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<yamux::Stream, yamux::ConnectionError>> {
        self.cork.corked.store(true, Ordering::Relaxed);
        let corked = self.poll_connection(cx);
        self.cork.corked.store(false, Ordering::Relaxed);
        if corked.is_ready() || !self.cork.dirty.swap(false, Ordering::Relaxed) {
            // Ready: the caller polls again, and the flush comes when yamux idles.
            return corked;
        }
        // yamux flushes first thing each time round its loop.
        self.poll_connection(cx)
    }

    fn poll_connection(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<yamux::Stream, yamux::ConnectionError>> {
        match self.connection.poll_next_inbound(cx) {
            Poll::Ready(Some(result)) => Poll::Ready(result),
            Poll::Ready(None) => Poll::Ready(Err(yamux::ConnectionError::Closed)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Whether the connection's flushes are deferred, and whether one was.
///
/// yamux flushes its socket after every frame. Under Noise each flush is a
/// sealed message and a `send(2)`, and on loopback a `send` also runs the
/// receiver's TCP stack: under CONNECT-heavy load (many short streams, each
/// a few small frames) those sends were 30 % of the client's CPU. While the
/// [`Muxer`] drives yamux, a flush only marks the socket dirty; the muxer
/// flushes once when yamux has nothing more to do, so the frames of one round
/// leave together. Nothing waits longer: the real flush happens in the same
/// poll.
#[derive(Debug, Default)]
struct Cork {
    corked: AtomicBool,
    dirty: AtomicBool,
}

/// The connection's transport, with flushes deferred while corked and long
/// received data frames split (see [`Frames`]).
#[derive(Debug)]
struct Corked<C> {
    io: C,
    cork: Arc<Cork>,
    frames: Frames,
}

impl<C: AsyncRead + Unpin> AsyncRead for Corked<C> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.frames.poll_read(Pin::new(&mut this.io), cx, buf)
    }
}

const HEADER: usize = 12;
const TYPE_DATA: u8 = 0;
const FLAG_SYN: u16 = 1;
const FLAG_ACK: u16 = 2;

/// The frames read from the peer on their way to yamux, with each data frame
/// longer than [`MAX_RECEIVED_FRAME`] handed over as several shorter ones on
/// the same stream: the first keeps the opening flags (SYN, ACK), the last
/// the closing ones (FIN, RST). The stream sees the same bytes and flags in
/// the same order; only yamux's body buffer is smaller.
#[derive(Debug, Default)]
struct Frames {
    /// The peer's header being read.
    header: [u8; HEADER],
    got: usize,
    /// The header yamux is being given, and how much of it is still to give.
    out: [u8; HEADER],
    to_give: usize,
    /// Body bytes left of the frame yamux is reading.
    body: u32,
    /// Of a split frame: the body bytes after the current part, the stream,
    /// and the flags for its last part.
    rest: u32,
    stream: [u8; 4],
    last_flags: u16,
}

impl Frames {
    fn poll_read<C: AsyncRead + Unpin>(
        &mut self,
        mut io: Pin<&mut C>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        loop {
            if self.to_give > 0 {
                let from = HEADER - self.to_give;
                let n = self.to_give.min(buf.len());
                buf[..n].copy_from_slice(&self.out[from..from + n]);
                self.to_give -= n;
                return Poll::Ready(Ok(n));
            }
            if self.body > 0 {
                let want = buf.len().min(self.body as usize);
                let n = ready!(io.as_mut().poll_read(cx, &mut buf[..want]))?;
                // n ≤ want ≤ body, a u32.
                self.body -= n as u32;
                return Poll::Ready(Ok(n));
            }
            if self.rest > 0 {
                let len = self.rest.min(MAX_RECEIVED_FRAME);
                self.rest -= len;
                let flags = if self.rest == 0 { self.last_flags } else { 0 };
                self.give(flags, self.stream, len);
                continue;
            }
            while self.got < HEADER {
                let n = ready!(io.as_mut().poll_read(cx, &mut self.header[self.got..]))?;
                if n == 0 {
                    return Poll::Ready(if self.got == 0 {
                        Ok(0)
                    } else {
                        Err(io::ErrorKind::UnexpectedEof.into())
                    });
                }
                self.got += n;
            }
            self.got = 0;
            let h = self.header;
            let len = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
            let stream = [h[4], h[5], h[6], h[7]];
            let flags = u16::from_be_bytes([h[2], h[3]]);
            // Version 0 data frames only; yamux rejects anything else itself.
            if h[0] == 0 && h[1] == TYPE_DATA && len > MAX_RECEIVED_FRAME {
                self.rest = len - MAX_RECEIVED_FRAME;
                self.stream = stream;
                self.last_flags = flags & !(FLAG_SYN | FLAG_ACK);
                self.give(flags & (FLAG_SYN | FLAG_ACK), stream, MAX_RECEIVED_FRAME);
            } else {
                self.out = h;
                self.to_give = HEADER;
                self.body = if h[1] == TYPE_DATA { len } else { 0 };
            }
        }
    }

    /// Hands yamux a data frame header for `len` body bytes.
    fn give(&mut self, flags: u16, stream: [u8; 4], len: u32) {
        self.out = [0; HEADER];
        self.out[1] = TYPE_DATA;
        self.out[2..4].copy_from_slice(&flags.to_be_bytes());
        self.out[4..8].copy_from_slice(&stream);
        self.out[8..12].copy_from_slice(&len.to_be_bytes());
        self.to_give = HEADER;
        self.body = len;
    }
}

impl<C: AsyncWrite + Unpin> AsyncWrite for Corked<C> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.cork.corked.load(Ordering::Relaxed) {
            self.cork.dirty.store(true, Ordering::Relaxed);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_close(cx)
    }
}

impl<C> StreamMuxer for Muxer<C>
where
    C: AsyncRead + AsyncWrite + Unpin + 'static,
{
    type Substream = yamux::Stream;
    type Error = yamux::ConnectionError;

    fn poll_inbound(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<yamux::Stream, yamux::ConnectionError>> {
        if let Some(stream) = self.inbound.pop_front() {
            return Poll::Ready(Ok(stream));
        }
        if let Poll::Ready(result) = self.next_inbound(cx) {
            return Poll::Ready(result);
        }
        self.inbound_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn poll_outbound(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<yamux::Stream, yamux::ConnectionError>> {
        self.connection.poll_new_outbound(cx)
    }

    fn poll_close(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), yamux::ConnectionError>> {
        self.connection.poll_close(cx)
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, yamux::ConnectionError>> {
        let this = self.get_mut();
        let stream = match this.next_inbound(cx) {
            Poll::Ready(Ok(stream)) => stream,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        };
        if this.inbound.len() < MAX_WAITING_INBOUND {
            this.inbound.push_back(stream);
            if let Some(waker) = this.inbound_waker.take() {
                waker.wake();
            }
        } else {
            tracing::warn!("dropping an inbound stream: {MAX_WAITING_INBOUND} already wait");
            drop(stream);
        }
        // Come back at once: yamux may have more to do than this one stream.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::future::poll_fn;
    use futures::{AsyncReadExt as _, AsyncWriteExt as _};
    use std::sync::atomic::AtomicUsize;
    use std::sync::Mutex;
    use tokio_util::compat::TokioAsyncReadCompatExt as _;

    /// The transport under a muxer, recording the size of every write and
    /// counting flushes.
    struct Recording<T> {
        inner: T,
        writes: Arc<Mutex<Vec<usize>>>,
        flushes: Arc<AtomicUsize>,
    }

    impl<T: AsyncRead + Unpin> AsyncRead for Recording<T> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<std::io::Result<usize>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl<T: AsyncWrite + Unpin> AsyncWrite for Recording<T> {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let r = Pin::new(&mut self.inner).poll_write(cx, buf);
            if let Poll::Ready(Ok(n)) = r {
                self.writes.lock().unwrap().push(n);
            }
            r
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            self.flushes.fetch_add(1, Ordering::Relaxed);
            Pin::new(&mut self.inner).poll_flush(cx)
        }
        fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_close(cx)
        }
    }

    /// Drives a muxer's connection forever (run it beside the stream I/O).
    async fn drive<C: AsyncRead + AsyncWrite + Unpin + 'static>(muxer: &mut Muxer<C>) {
        poll_fn(|cx| {
            while let Poll::Ready(Ok(_)) = Pin::new(&mut *muxer).poll(cx) {}
            Poll::<()>::Pending
        })
        .await;
    }

    #[tokio::test]
    async fn bulk_data_crosses_intact_in_frames_of_up_to_frame_body() {
        let (a, b) = tokio::io::duplex(4 << 20);
        let writes = Arc::new(Mutex::new(Vec::new()));
        let flushes = Arc::new(AtomicUsize::new(0));
        let client_io = Recording { inner: a.compat(), writes: writes.clone(), flushes };
        let mut client = Yamux::new(16).muxer(client_io, yamux::Mode::Client).await.unwrap();
        let mut server = Yamux::new(16).muxer(b.compat(), yamux::Mode::Server).await.unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();

        let sent = data.clone();
        let sender = tokio::spawn(async move {
            let mut stream = poll_fn(|cx| Pin::new(&mut client).poll_outbound(cx)).await.unwrap();
            tokio::select! {
                () = drive(&mut client) => unreachable!(),
                r = async {
                    stream.write_all(&sent).await?;
                    stream.close().await
                } => r.unwrap(),
            }
            // Keep the connection up until the receiver has read everything.
            tokio::time::timeout(std::time::Duration::from_secs(10), drive(&mut client)).await
        });
        let received = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            let mut stream = poll_fn(|cx| Pin::new(&mut server).poll_inbound(cx)).await.unwrap();
            let mut got = Vec::new();
            tokio::select! {
                () = drive(&mut server) => unreachable!(),
                r = stream.read_to_end(&mut got) => { r.unwrap(); }
            }
            got
        })
        .await
        .expect("the receiver got the stream's end in time");
        sender.abort();

        assert_eq!(received, data);
        let writes = writes.lock().unwrap();
        let body = writes.iter().copied().filter(|&n| n > 12).max().unwrap();
        // Header and body go down separately; the largest body is a whole frame.
        assert_eq!(body, FRAME_BODY, "write sizes: {:?}", &writes[..writes.len().min(20)]);
    }

    #[tokio::test]
    async fn frames_written_in_one_round_leave_in_one_flush() {
        let (a, _b) = tokio::io::duplex(1 << 20);
        let writes = Arc::new(Mutex::new(Vec::new()));
        let flushes = Arc::new(AtomicUsize::new(0));
        let io = Recording { inner: a.compat(), writes: writes.clone(), flushes: flushes.clone() };
        let mut client = Yamux::new(64).muxer(io, yamux::Mode::Client).await.unwrap();
        let mut streams = Vec::new();
        for _ in 0..20 {
            streams.push(poll_fn(|cx| Pin::new(&mut client).poll_outbound(cx)).await.unwrap());
        }
        for stream in &mut streams {
            stream.write_all(b"0123456789").await.unwrap();
        }
        // One round of the connection writes every stream's frame.
        poll_fn(|cx| {
            let _ = Pin::new(&mut client).poll(cx);
            Poll::Ready(())
        })
        .await;
        let headers = writes.lock().unwrap().iter().filter(|&&n| n == 12).count();
        assert!(headers >= 20, "{headers} frame headers written");
        // Without the cork yamux would have flushed after every frame.
        assert_eq!(flushes.load(Ordering::Relaxed), 1, "flushes for {headers} frames");
    }

    #[tokio::test]
    async fn a_long_data_frame_reaches_the_stream_whole_in_shorter_frames() {
        let (a, b) = tokio::io::duplex(1 << 20);
        let mut server = Yamux::new(16).muxer(b.compat(), yamux::Mode::Server).await.unwrap();
        let mut peer = a.compat();
        let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        // One frame opens stream 1, carries 200,000 bytes and finishes it.
        let mut frame = vec![0, TYPE_DATA];
        frame.extend_from_slice(&(FLAG_SYN | 4).to_be_bytes());
        frame.extend_from_slice(&1u32.to_be_bytes());
        frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
        frame.extend_from_slice(&body);
        peer.write_all(&frame).await.unwrap();
        let received = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            let mut stream = poll_fn(|cx| Pin::new(&mut server).poll_inbound(cx)).await.unwrap();
            let mut got = Vec::new();
            tokio::select! {
                () = drive(&mut server) => unreachable!(),
                r = stream.read_to_end(&mut got) => { r.unwrap(); }
            }
            got
        })
        .await
        .expect("the stream and its end arrive");
        assert_eq!(received, body);
        assert!(body.len() > 3 * MAX_RECEIVED_FRAME as usize, "split into four");
    }
}
