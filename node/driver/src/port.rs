//! The interface between the runner and the peer network actor. The network
//! (libp2p) lives in `network.rs`; the runner only sees these types, so either
//! side can be tested against a fake of the other.

use core::fmt;
use meshproxy_core::{
    ids::{ConnId, PeerId, StreamId},
    io::Protocol,
    record::PeerAddr,
};

/// A byte stream of the data plane (TCP, or a libp2p stream through tokio-util compat), boxed.
pub type BoxStream = Box<dyn AsyncStream>;

/// Anything the data plane can read from and write to.
pub trait AsyncStream:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static
{
}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> AsyncStream for T {}

/// What the runner asks of the peer network.
#[derive(Debug)]
pub enum NetCommand {
    /// Connect to `peer`; answered by `PeerConnected` or `DialFailed`.
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
    /// A connection to a peer is up.
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
    /// A dial failed.
    DialFailed {
        /// The peer.
        peer: PeerId,
    },
    /// An outbound stream is open and writable.
    StreamOpened {
        /// The id the core gave it.
        stream: StreamId,
        /// The stream.
        io: BoxStream,
    },
    /// An outbound stream could not be opened.
    StreamRefused {
        /// The id the core gave it.
        stream: StreamId,
    },
    /// A peer opened a stream to us; the runner allocates its `StreamId::outside(n)`.
    InboundStream {
        /// Who opened it.
        peer: PeerId,
        /// The negotiated protocol.
        protocol: Protocol,
        /// The stream.
        io: BoxStream,
    },
}

impl fmt::Debug for NetEvent {
    // By hand because a boxed stream has no Debug of its own.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetEvent::PeerConnected { peer, conn } => {
                write!(f, "PeerConnected({peer}, {conn})")
            }
            NetEvent::PeerDisconnected { peer, conn } => {
                write!(f, "PeerDisconnected({peer}, {conn})")
            }
            NetEvent::DialFailed { peer } => write!(f, "DialFailed({peer})"),
            NetEvent::StreamOpened { stream, .. } => write!(f, "StreamOpened({stream})"),
            NetEvent::StreamRefused { stream } => write!(f, "StreamRefused({stream})"),
            NetEvent::InboundStream { peer, protocol, .. } => {
                write!(f, "InboundStream({peer}, {protocol:?})")
            }
        }
    }
}
