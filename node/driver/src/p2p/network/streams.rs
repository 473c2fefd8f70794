//! Our byte-stream protocols as a libp2p behaviour ([`ByteStreams`]): streams are opened on
//! request and inbound streams go to the actor, up to [`crate::p2p::INBOUND_STREAM_QUEUE`]
//! waiting there (more are reset and counted). [`PeerStream`] makes an aborted stream read
//! as an error, never as a clean end.

use std::{
    collections::VecDeque,
    convert::Infallible,
    future::{ready, Ready},
    task::{Context, Poll},
};

use libp2p::{
    core::{
        transport::PortUse,
        upgrade::{InboundUpgrade, ReadyUpgrade, UpgradeInfo},
        Endpoint,
    },
    swarm::{
        handler::{
            ConnectionEvent, DialUpgradeError, FullyNegotiatedInbound, FullyNegotiatedOutbound,
        },
        ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm,
        NetworkBehaviour, NotifyHandler, SubstreamProtocol, THandler, THandlerInEvent,
        THandlerOutEvent, ToSwarm,
    },
    Multiaddr, Stream, StreamProtocol,
};
use meshproxy_core::{ids::StreamId, io::Protocol};
use std::pin::Pin;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_util::compat::FuturesAsyncReadCompatExt as _;

use super::convert::{stream_protocol, to_core};
use crate::p2p::{shed_inbound_stream, InboundGate, NetEvent};

/// A libp2p stream as the data plane needs it: an aborted stream reads as
/// an error, never as a clean end.
///
/// Neither muxer tells its reader about an abort: a Yamux stream that the
/// peer reset (or whose connection died) reads `Ok(0)`, exactly like one
/// the peer finished, and a dropped QUIC stream is finished (plus
/// `STOP_SENDING`) rather than reset. Passed on as an end, an abort would
/// make a truncated transfer look complete to the app at the far end. What
/// does differ is the write half: after an abort it fails (Yamux: the
/// stream is closed; QUIC: the peer stopped reading), after a mere
/// half-close it still works. So at an end of stream, while our own write
/// half is open, a zero-length write tells the two apart. Once we have
/// finished writing ourselves the muxers cannot tell them apart at all,
/// and an end stays an end.
pub(super) struct PeerStream<S> {
    inner: S,
    /// We finished our write half (sent our end of stream).
    write_shut: bool,
    /// The inner stream read its end; whether it was an abort is not decided yet.
    at_end: bool,
    /// How reading ended, once it has: `true` for an abort.
    ended: Option<bool>,
}

impl<S> PeerStream<S> {
    pub(super) fn new(inner: S) -> PeerStream<S> {
        PeerStream { inner, write_shut: false, at_end: false, ended: None }
    }
}

fn reset() -> std::io::Error {
    std::io::ErrorKind::ConnectionReset.into()
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for PeerStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.ended {
            Some(true) => return Poll::Ready(Err(reset())),
            Some(false) => return Poll::Ready(Ok(())),
            None => {}
        }
        let this = &mut *self;
        if !this.at_end {
            let before = buf.filled().len();
            let asked = buf.remaining() > 0;
            std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
            if !asked || buf.filled().len() > before {
                return Poll::Ready(Ok(()));
            }
            this.at_end = true;
        }
        // End of stream: a finish or an abort? A failed write means an
        // abort, a working one a live stream. A write that cannot go out
        // right now decides nothing (yamux answers `Pending` while the
        // stream's command queue is full, before it looks at the stream's
        // state): ask again when it can.
        let aborted = !this.write_shut
            && match Pin::new(&mut this.inner).poll_write(cx, &[]) {
                Poll::Ready(result) => result.is_err(),
                Poll::Pending => return Poll::Pending,
            };
        this.ended = Some(aborted);
        Poll::Ready(if aborted { Err(reset()) } else { Ok(()) })
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PeerStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let res = std::task::ready!(Pin::new(&mut self.inner).poll_shutdown(cx));
        if res.is_ok() {
            self.write_shut = true;
        }
        Poll::Ready(res)
    }
}

/// The answer owed to one `OpenStream`. Whatever path drops it unanswered (connection
/// closed while queued or negotiating, event undeliverable) answers `StreamRefused`, so
/// the core always hears back.
pub(super) struct Reply {
    stream: StreamId,
    to_actor: mpsc::UnboundedSender<NetEvent>,
    answered: bool,
}

impl Reply {
    fn opened(mut self, io: Stream) {
        self.answered = true;
        let _ = self.to_actor.send(NetEvent::StreamOpened {
            stream: self.stream,
            io: Box::new(PeerStream::new(io.compat())),
        });
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if !self.answered {
            let _ = self.to_actor.send(NetEvent::StreamRefused { stream: self.stream });
        }
    }
}

/// A request from the behaviour to a connection: open a stream of `protocol`.
pub(super) struct OpenRequest {
    protocol: Protocol,
    reply: Reply,
}

impl std::fmt::Debug for OpenRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenRequest")
            .field("stream", &self.reply.stream)
            .field("protocol", &self.protocol)
            .finish()
    }
}

/// The protocols every node accepts inbound; the core closes a stream of a
/// role the node does not play.
const OFFERED: [Protocol; 3] = [Protocol::Proxy, Protocol::Hub, Protocol::Ingress];

/// Accepts any of our protocols inbound and says which one was chosen.
#[derive(Clone, Copy, Debug)]
pub(super) struct Inbound;

/// A negotiated name that is none of [`OFFERED`] (multistream-select only
/// picks an offered one, so this means a bug; the stream is dropped).
#[derive(Debug)]
pub(super) struct UnknownProtocol;

impl UpgradeInfo for Inbound {
    type Info = StreamProtocol;
    type InfoIter = std::array::IntoIter<StreamProtocol, 3>;

    fn protocol_info(&self) -> Self::InfoIter {
        OFFERED.map(stream_protocol).into_iter()
    }
}

impl InboundUpgrade<Stream> for Inbound {
    type Output = (Stream, Protocol);
    type Error = UnknownProtocol;
    type Future = Ready<Result<Self::Output, UnknownProtocol>>;

    fn upgrade_inbound(self, stream: Stream, info: StreamProtocol) -> Self::Future {
        let protocol = OFFERED.into_iter().find(|p| p.name() == info.as_ref());
        ready(protocol.map(|p| (stream, p)).ok_or(UnknownProtocol))
    }
}

/// Our byte-stream protocols, the swarm-side half: turns open requests into handler
/// notifications.
pub(super) struct ByteStreams {
    to_actor: mpsc::UnboundedSender<NetEvent>,
    inbound: InboundGate,
    queue: VecDeque<ToSwarm<Infallible, OpenRequest>>,
}

impl ByteStreams {
    pub(super) fn new(
        to_actor: mpsc::UnboundedSender<NetEvent>,
        inbound: InboundGate,
    ) -> ByteStreams {
        ByteStreams { to_actor, inbound, queue: VecDeque::new() }
    }

    /// Opens a stream on the connection `conn` to `peer`; the answer comes through the
    /// actor's channel (a connection that is gone by then refuses it, as the dropped
    /// request's reply). Called from the swarm's own task, which polls the behaviour next.
    pub(super) fn open(
        &mut self,
        peer: libp2p::PeerId,
        conn: ConnectionId,
        stream: StreamId,
        protocol: Protocol,
    ) {
        let reply = Reply { stream, to_actor: self.to_actor.clone(), answered: false };
        self.queue.push_back(ToSwarm::NotifyHandler {
            peer_id: peer,
            handler: NotifyHandler::One(conn),
            event: OpenRequest { protocol, reply },
        });
    }

    fn handler(&self, peer: libp2p::PeerId) -> Handler {
        Handler {
            peer,
            to_actor: self.to_actor.clone(),
            inbound: self.inbound.clone(),
            queue: VecDeque::new(),
            proposing: Vec::new(),
        }
    }
}

impl NetworkBehaviour for ByteStreams {
    type ConnectionHandler = Handler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        peer: libp2p::PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(peer))
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: libp2p::PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(peer))
    }

    fn on_swarm_event(&mut self, _: FromSwarm) {}

    fn on_connection_handler_event(
        &mut self,
        _: libp2p::PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        self.queue.pop_front().map_or(Poll::Pending, Poll::Ready)
    }
}

/// The per-connection half: negotiates outbound streams (concurrently) and hands every
/// negotiated inbound stream to the actor.
pub(super) struct Handler {
    peer: libp2p::PeerId,
    to_actor: mpsc::UnboundedSender<NetEvent>,
    inbound: InboundGate,
    queue: VecDeque<OpenRequest>,
    /// Outbound streams whose protocol proposal is being flushed, before they are handed
    /// over (see [`Handler::flush_proposals`]).
    proposing: Vec<(Stream, Reply)>,
}

impl Handler {
    /// Sends the lazily proposed protocol (negotiation.rs) of each new outbound stream to
    /// the muxer, then hands the stream over. Left to the stream's first write, the
    /// proposal would wait for the opener's first message, and a peer that speaks first
    /// (a hub's challenge) would never hear of the stream; flushed here, the peer learns of
    /// it at once, as with `V1`, and the first message still follows without waiting for
    /// the peer: the muxer takes both without a round trip.
    fn flush_proposals(&mut self, cx: &mut Context<'_>) {
        let mut i = 0;
        while i < self.proposing.len() {
            let (stream, _) = &mut self.proposing[i];
            match futures::AsyncWrite::poll_flush(Pin::new(stream), cx) {
                Poll::Pending => i += 1,
                Poll::Ready(result) => {
                    let (stream, reply) = self.proposing.swap_remove(i);
                    match result {
                        Ok(()) => reply.opened(stream),
                        // The stream is gone already: dropping the reply refuses it.
                        Err(_) => drop(reply),
                    }
                }
            }
        }
    }
}

impl ConnectionHandler for Handler {
    type FromBehaviour = OpenRequest;
    type ToBehaviour = Infallible;
    type InboundProtocol = Inbound;
    type OutboundProtocol = ReadyUpgrade<StreamProtocol>;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = Reply;

    fn listen_protocol(&self) -> SubstreamProtocol<Inbound> {
        SubstreamProtocol::new(Inbound, ())
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, Reply, Infallible>> {
        self.flush_proposals(cx);
        match self.queue.pop_front() {
            Some(OpenRequest { protocol, reply }) => {
                Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                    protocol: SubstreamProtocol::new(
                        ReadyUpgrade::new(stream_protocol(protocol)),
                        reply,
                    ),
                })
            }
            None => Poll::Pending,
        }
    }

    fn on_behaviour_event(&mut self, request: OpenRequest) {
        self.queue.push_back(request);
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<Inbound, Self::OutboundProtocol, (), Reply>,
    ) {
        match event {
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol: (stream, protocol),
                ..
            }) => {
                if !self.inbound.enter() {
                    shed_inbound_stream("network actor");
                    return; // dropping the stream resets it
                }
                let _ = self.to_actor.send(NetEvent::InboundStream {
                    peer: to_core(&self.peer),
                    protocol,
                    io: Box::new(PeerStream::new(stream.compat())),
                });
            }
            // Polled next (the connection polls its handler after every event).
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: stream,
                info: reply,
            }) => self.proposing.push((stream, reply)),
            // The muxer could not open the stream (I/O error, timeout): dropping the reply
            // refuses it. A peer that does not offer the protocol is no longer told here:
            // the proposal is lazy (negotiation.rs), so the stream's first read fails.
            ConnectionEvent::DialUpgradeError(DialUpgradeError { info: reply, .. }) => drop(reply),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream at its end whose zero-length write waits `pending` times, then gives `then`.
    struct Ended {
        pending: usize,
        then: std::io::ErrorKind,
    }

    impl tokio::io::AsyncRead for Ended {
        fn poll_read(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            _: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    impl tokio::io::AsyncWrite for Ended {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            _: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            if self.pending > 0 {
                self.pending -= 1;
                cx.waker().wake_by_ref();
                return std::task::Poll::Pending;
            }
            std::task::Poll::Ready(match self.then {
                std::io::ErrorKind::Other => Ok(0),
                kind => Err(kind.into()),
            })
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

    #[test]
    fn every_offered_name_is_distinct_and_ingress_is_among_them() {
        let offered: Vec<String> = Inbound.protocol_info().map(|p| p.as_ref().to_owned()).collect();
        assert_eq!(offered, ["/meshproxy/proxy/1", "/meshproxy/hub/1", "/meshproxy/ingress/1"]);
        for p in OFFERED {
            assert_eq!(OFFERED.into_iter().find(|q| q.name() == p.name()), Some(p));
        }
    }

    #[tokio::test]
    async fn a_reset_reads_as_a_reset_even_when_the_write_probe_must_wait() {
        use tokio::io::AsyncReadExt as _;
        // A reset stream whose command queue is full at first (yamux answers the probe
        // `Pending`): the end is undecided until the probe can tell.
        let reset = Ended { pending: 3, then: std::io::ErrorKind::BrokenPipe };
        let mut stream = PeerStream::new(reset);
        let err = stream.read(&mut [0; 8]).await.expect_err("a reset, not an end");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
        assert!(stream.read(&mut [0; 8]).await.is_err(), "and stays one");
        // A finished stream (the write half still works) is a clean end, waiting or not.
        let finished = Ended { pending: 3, then: std::io::ErrorKind::Other };
        let mut stream = PeerStream::new(finished);
        assert_eq!(stream.read(&mut [0; 8]).await.expect("an end"), 0);
        assert_eq!(stream.read(&mut [0; 8]).await.expect("an end"), 0);
    }
}
