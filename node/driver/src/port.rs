//! The interface between the runner (which drives the core) and the peer network actor.

use meshproxy_core::{
    ids::{ConnId, PeerId, StreamId},
    io::Protocol,
    record::PeerAddr,
};

/// A byte stream of the data plane (TCP, or a libp2p stream through tokio-util compat), boxed.
pub type BoxStream = Box<dyn AsyncStream>;

/// Anything the data plane can splice: a Tokio byte stream that can move between tasks.
pub trait AsyncStream:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static
{
}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> AsyncStream for T {}

/// What the runner asks of the peer network.
#[derive(Debug)]
pub enum NetCommand {
    /// Connect to a peer; answered by `PeerConnected` or `DialFailed`.
    Dial {
        /// The peer.
        peer: PeerId,
        /// Where it may be reached (binary multiaddrs).
        addrs: Vec<PeerAddr>,
    },
    /// Open a stream to a connected peer; answered by `StreamOpened` or `StreamRefused`.
    OpenStream {
        /// The id the core gave the stream.
        stream: StreamId,
        /// The peer.
        peer: PeerId,
        /// The protocol to negotiate.
        protocol: Protocol,
    },
}

/// What the peer network reports (to the runner's single event channel).
pub enum NetEvent {
    /// A connection to a peer is up (dialed or accepted).
    PeerConnected {
        /// The peer.
        peer: PeerId,
        /// The connection.
        conn: ConnId,
    },
    /// A connection to a peer went down.
    PeerDisconnected {
        /// The peer.
        peer: PeerId,
        /// The connection.
        conn: ConnId,
    },
    /// A `Dial` failed.
    DialFailed {
        /// The peer.
        peer: PeerId,
    },
    /// An `OpenStream` succeeded.
    StreamOpened {
        /// The stream the core named.
        stream: StreamId,
        /// The negotiated stream.
        io: BoxStream,
    },
    /// An `OpenStream` failed.
    StreamRefused {
        /// The stream the core named.
        stream: StreamId,
    },
    /// A peer opened a stream to us.
    InboundStream {
        /// The peer.
        peer: PeerId,
        /// The negotiated protocol.
        protocol: Protocol,
        /// The stream; the runner allocates the `StreamId::outside(n)`.
        io: BoxStream,
    },
}

impl std::fmt::Debug for NetEvent {
    /// Written by hand because a boxed stream has no `Debug`: the stream shows as `..`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetEvent::PeerConnected { peer, conn } => {
                f.debug_struct("PeerConnected").field("peer", peer).field("conn", conn).finish()
            }
            NetEvent::PeerDisconnected { peer, conn } => {
                f.debug_struct("PeerDisconnected").field("peer", peer).field("conn", conn).finish()
            }
            NetEvent::DialFailed { peer } => {
                f.debug_struct("DialFailed").field("peer", peer).finish()
            }
            NetEvent::StreamOpened { stream, .. } => {
                f.debug_struct("StreamOpened").field("stream", stream).finish_non_exhaustive()
            }
            NetEvent::StreamRefused { stream } => {
                f.debug_struct("StreamRefused").field("stream", stream).finish()
            }
            NetEvent::InboundStream { peer, protocol, .. } => f
                .debug_struct("InboundStream")
                .field("peer", peer)
                .field("protocol", protocol)
                .finish_non_exhaustive(),
        }
    }
}
