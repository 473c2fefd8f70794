//! The peer network: its interface to the runner (the types in this file), the
//! libp2p actor in [`network`], our [`noise`] and [`muxer`] upgrades built for bulk
//! data, and the inbound connection limit per address ([`per_ip`]). The network
//! (libp2p) lives in `network/`; the runner only sees these types, so either
//! side can be tested against a fake of the other.

pub mod muxer;
pub mod network;
pub mod noise;
pub mod per_ip;

use core::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use meshproxy_core::{
    ids::{ConnId, PeerId, StreamId},
    io::{CircuitLimit, Path, Protocol, Reachability},
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

/// Inbound streams that one hop towards the runner (the network actor's queue, then the
/// event sink's) holds at most. Beyond it a new inbound stream is reset, not queued: each
/// queued stream pins its muxer state and up to its receive window of buffered data.
pub const INBOUND_STREAM_QUEUE: usize = 1024;

/// Inbound streams reset because a hop towards the runner was full, since the process began.
static SHED: AtomicU64 = AtomicU64::new(0);

/// How many inbound streams were reset because a hop towards the runner was full.
pub fn inbound_streams_shed() -> u64 {
    SHED.load(Ordering::Relaxed)
}

/// Counts and logs a shed inbound stream (the caller drops it, which resets it); the log
/// says so for the first and then every 1024th, so a flood does not flood the log.
pub(crate) fn shed_inbound_stream(hop: &'static str) {
    let n = SHED.fetch_add(1, Ordering::Relaxed) + 1;
    if n == 1 || n.is_multiple_of(1024) {
        tracing::warn!(hop, shed = n, "an inbound stream was reset: {INBOUND_STREAM_QUEUE} wait");
    }
}

/// The inbound streams queued in one hop, capped at [`INBOUND_STREAM_QUEUE`]. Clones share
/// the count.
#[derive(Clone, Debug, Default)]
pub(crate) struct InboundGate(Arc<AtomicUsize>);

impl InboundGate {
    /// Takes a place for one more stream; `false` when the hop is full.
    pub(crate) fn enter(&self) -> bool {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < INBOUND_STREAM_QUEUE).then_some(n + 1)
            })
            .is_ok()
    }

    /// A stream left the hop.
    pub(crate) fn leave(&self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What the runner asks of the peer network.
#[derive(Debug)]
pub enum NetCommand {
    /// Connect to `peer`; answered by `PeerConnected` or `DialFailed`.
    Dial {
        /// The peer.
        peer: PeerId,
        /// Where it may be reached (binary multiaddrs); ignored with `via`.
        addrs: Vec<PeerAddr>,
        /// `Some(hub)`: through a new relay circuit at this hub (the peer holds a
        /// reservation there), even if some connection to the peer exists.
        via: Option<PeerId>,
    },
    /// Open a stream to a connected peer; answered by `StreamOpened` or `StreamRefused`.
    OpenStream {
        /// The id the core gave the stream.
        stream: StreamId,
        /// The peer.
        peer: PeerId,
        /// Exactly this connection (refused if it is gone); `None`: a direct one if any.
        conn: Option<ConnId>,
        /// The protocol to negotiate.
        protocol: Protocol,
    },
    /// Hold (or renew) a relay reservation at `hub`; answered by `ReservationAccepted`
    /// or `ReservationFailed`, later perhaps `ReservationLost`.
    Reserve {
        /// The hub.
        hub: PeerId,
    },
    /// Drop the reservation at `hub`. No answer.
    Unreserve {
        /// The hub.
        hub: PeerId,
    },
    /// (Hubs) serve `peer`'s relay reservations and circuits from now on. No answer.
    Admit {
        /// The peer the core admitted.
        peer: PeerId,
    },
    /// (Hubs) serve `peer`'s relay requests no more. No answer.
    Revoke {
        /// The peer whose admission ended.
        peer: PeerId,
    },
    /// Turn the relayed connection to `peer` into a direct one; answered by a
    /// `PeerConnected` with [`Path::Direct`] or by `HolePunchFailed`.
    HolePunch {
        /// The peer.
        peer: PeerId,
    },
}

/// One step of a hole-punch attempt, for metrics and logs (the core only hears
/// the answer to its own `HolePunch`: a direct `PeerConnected` or `HolePunchFailed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HolePunchStage {
    /// This node started an attempt (DCUtR on an accepted relayed connection,
    /// or a direct dial to the peer's known addresses).
    Started,
    /// A direct connection came out of it.
    Succeeded,
    /// It ended without a direct connection.
    Failed,
}

/// What the peer network reports (to the runner's single event channel).
pub enum NetEvent {
    /// A connection to a peer is up.
    PeerConnected {
        /// The peer.
        peer: PeerId,
        /// The connection.
        conn: ConnId,
        /// Direct, or through which hub's relay.
        path: Path,
        /// The relay's caps on a relayed connection, when it announced them.
        limit: Option<CircuitLimit>,
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
    /// An outbound stream is open and writable. Its protocol is proposed but not yet
    /// confirmed (multistream-select `V1Lazy`, so the first message need not wait for the
    /// peer): a peer that does not offer the protocol makes its first read fail, a reset to
    /// the core.
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
    /// A peer saw this node at `ip` (identify), or autonat confirmed it (`by` is `None`).
    ObservedAddress {
        /// The address.
        ip: std::net::IpAddr,
        /// Who reported it.
        by: Option<PeerId>,
    },
    /// A reservation at `hub` was granted (libp2p renews it by itself from now on).
    ReservationAccepted {
        /// The hub.
        hub: PeerId,
    },
    /// A `Reserve` failed before anything was granted.
    ReservationFailed {
        /// The hub.
        hub: PeerId,
    },
    /// A granted reservation is gone (hub connection lost, renewal refused).
    ReservationLost {
        /// The hub.
        hub: PeerId,
    },
    /// The answer to a `HolePunch` that produced no direct connection.
    HolePunchFailed {
        /// The peer.
        peer: PeerId,
    },
    /// A hole-punch attempt moved on (metrics and logs only).
    HolePunch {
        /// The peer.
        peer: PeerId,
        /// What happened.
        stage: HolePunchStage,
    },
    /// Whether this node is reachable directly, as autonat judges it now.
    Reachability(Reachability),
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
            NetEvent::PeerConnected { peer, conn, path, limit } => {
                write!(f, "PeerConnected({peer}, {conn}, {path:?}, {limit:?})")
            }
            NetEvent::PeerDisconnected { peer, conn } => {
                write!(f, "PeerDisconnected({peer}, {conn})")
            }
            NetEvent::DialFailed { peer } => write!(f, "DialFailed({peer})"),
            NetEvent::StreamOpened { stream, .. } => write!(f, "StreamOpened({stream})"),
            NetEvent::StreamRefused { stream } => write!(f, "StreamRefused({stream})"),
            NetEvent::ReservationAccepted { hub } => write!(f, "ReservationAccepted({hub})"),
            NetEvent::ReservationFailed { hub } => write!(f, "ReservationFailed({hub})"),
            NetEvent::ReservationLost { hub } => write!(f, "ReservationLost({hub})"),
            NetEvent::HolePunchFailed { peer } => write!(f, "HolePunchFailed({peer})"),
            NetEvent::HolePunch { peer, stage } => write!(f, "HolePunch({peer}, {stage:?})"),
            NetEvent::Reachability(r) => write!(f, "Reachability({r:?})"),
            NetEvent::ObservedAddress { ip, by } => write!(f, "ObservedAddress({ip}, {by:?})"),
            NetEvent::InboundStream { peer, protocol, .. } => {
                write!(f, "InboundStream({peer}, {protocol:?})")
            }
        }
    }
}
