//! Yamux for our peer connections, with frames sized for bulk data.
//!
//! libp2p-yamux leaves yamux's frame size at 16 KiB, and yamux flushes the
//! connection after every frame. Over Noise that made every 16 KiB of proxied
//! data one Noise message, one AEAD call, one `send(2)` and one TCP segment
//! on each hop (seen with `strace` under `cargo xtask bench`). This upgrade
//! speaks the same `/yamux/1.0.0` (peers running stock libp2p-yamux
//! interoperate: frame size is the sender's choice) but sends data frames of up
//! to [`FRAME_BODY`] bytes, which still fit one Noise message.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::{ready, Ready};
use std::iter;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use futures::{AsyncRead, AsyncWrite};
use libp2p::core::muxing::{StreamMuxer, StreamMuxerEvent};
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo};

/// Largest data frame body we send. A Noise transport message carries at most
/// 65,535 bytes, of which libp2p-noise keeps 1,024 for the AEAD tag and key
/// material; a frame's 12-byte header and this body stay below the 64,511
/// left, so one frame is one Noise message.
pub const FRAME_BODY: usize = 62 * 1024;

/// Inbound streams held for the swarm between its polls; beyond this (yamux's
/// own acknowledgement backlog, which well-behaved peers never exceed) new
/// inbound streams are dropped, which resets them.
const MAX_WAITING_INBOUND: usize = 256;

/// The `/yamux/1.0.0` upgrade with our frame size.
#[derive(Debug, Clone)]
pub struct Yamux {
    config: yamux::Config,
}

impl Yamux {
    /// Yamux allowing `max_streams` concurrent streams per connection (at
    /// most 4,096: see [`crate::network::YAMUX_MAX_STREAMS_CEILING`]).
    pub fn new(max_streams: usize) -> Yamux {
        let mut config = yamux::Config::default();
        config.set_max_num_streams(max_streams);
        config.set_split_send_size(FRAME_BODY);
        Yamux { config }
    }

    fn muxer<C>(self, io: C, mode: yamux::Mode) -> Ready<Result<Muxer<C>, Infallible>>
    where
        C: AsyncRead + AsyncWrite + Unpin + 'static,
    {
        ready(Ok(Muxer {
            connection: yamux::Connection::new(io, self.config, mode),
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
    connection: yamux::Connection<C>,
    inbound: VecDeque<yamux::Stream>,
    inbound_waker: Option<Waker>,
}

impl<C> Muxer<C>
where
    C: AsyncRead + AsyncWrite + Unpin + 'static,
{
    fn next_inbound(
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
