//! What flows into and out of a [`Node`](crate::Node): inputs from the outside
//! world, outputs for the driver or simulator to carry out, and events for
//! operators to count.

use crate::http_head::RequestHead;
use crate::ids::{ConnId, ListenerId, PeerId, QueryId, RequestId, StreamId};
use crate::record::PeerAddr;
use crate::target::Status;
use bytes::Bytes;
use core::fmt;
use core::time::Duration;
use std::net::{IpAddr, SocketAddr};

mod event;

pub use event::{Event, FailReason, IngressOutcome};

/// The peer-to-peer protocols the core speaks.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Protocol {
    /// `/meshproxy/proxy/1`: one proxied connection per stream.
    Proxy,
    /// `/meshproxy/hub/1`: registration and lookup at a hub.
    Hub,
    /// `/meshproxy/ingress/1`: one upstream HTTP connection from a gateway to an agent's service per stream.
    Ingress,
}

impl Protocol {
    /// The protocol name negotiated on the stream.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Proxy => crate::wire::proxy::PROXY_PROTOCOL,
            Protocol::Hub => crate::wire::hub::HUB_PROTOCOL,
            Protocol::Ingress => crate::wire::ingress::INGRESS_PROTOCOL,
        }
    }
}

/// How one direction of a stream ended.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Close {
    /// A clean end of stream (TCP FIN, yamux/QUIC stream finish).
    Fin,
    /// An abort (TCP RST, stream reset); data in flight may be lost.
    Reset,
}

/// How a DNS lookup failed.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum ResolveError {
    /// The name does not exist (NXDOMAIN) or has no address records.
    NotFound,
    /// The resolver failed or timed out.
    Failed,
}

/// How a splice ended, as the data plane reports it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum SpliceEnd {
    /// Both directions finished with a clean end of stream.
    Clean,
    /// Side `a` was reset (or failed); `b` was reset in turn.
    ResetA,
    /// Side `b` was reset (or failed); `a` was reset in turn.
    ResetB,
    /// Nothing moved for longer than the idle timeout; both sides were reset.
    IdleTimeout,
}

/// What the data plane carried in one splice.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SpliceReport {
    /// Bytes written to `b` that came from `a` (prefix included).
    pub a_to_b: u64,
    /// Bytes written to `a` that came from `b` (prefix included).
    pub b_to_a: u64,
    /// How it ended.
    pub how: SpliceEnd,
}

/// Limits the data plane applies to one splice.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SpliceLimits {
    /// Reset both sides when no byte moved either way for this long.
    pub idle_timeout: Duration,
}

/// How a connection to a peer is carried.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Path {
    /// Straight between the two peers (TCP or QUIC).
    Direct,
    /// Through a relay circuit at a hub.
    Relayed {
        /// The hub relaying it.
        via: PeerId,
    },
}

impl Path {
    /// Whether the connection goes through a relay.
    pub fn is_relayed(self) -> bool {
        matches!(self, Path::Relayed { .. })
    }
}

/// Caps a relay put on one circuit; the relay cuts the circuit when either is
/// reached.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct CircuitLimit {
    /// The circuit ends this long after it was opened.
    pub duration: Option<Duration>,
    /// The circuit ends after this many bytes (each direction counted alone).
    pub bytes: Option<u64>,
}

/// Whether others can dial this node directly, as far as it knows (autonat in
/// production, the NAT model in the simulator).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub enum Reachability {
    /// Not known yet.
    #[default]
    Unknown,
    /// Dial-back probes succeeded: direct dials reach this node.
    Public,
    /// Dial-back probes failed: this node is behind NAT or a firewall.
    Private,
}

/// State the node wants kept across restarts (written atomically by the driver,
/// kept across a simulated crash by the simulator), fed back with
/// [`Input::Restore`].
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct StateSnapshot {
    /// The client's sticky pool, in [`crate::selection::sticky`]'s format.
    pub sticky: Vec<u8>,
}

/// The config of a reload ([`Input::Reconfigure`]). Two are equal only if
/// they are the same reload: a config holds signing keys and floats, which
/// have no useful equality, and inputs compare only in tests and traces.
#[derive(Clone, Debug)]
pub struct NewConfig(pub std::sync::Arc<crate::config::NodeConfig>);

impl PartialEq for NewConfig {
    fn eq(&self, other: &NewConfig) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for NewConfig {}

/// What an operator revokes at a hub ([`Input::Revoke`]).
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Revocation {
    /// Every peer admitted under this key id.
    Key(String),
    /// This peer, whatever key it used.
    Peer(PeerId),
}

/// An event from the outside world. Every input is timestamped by the `now`
/// passed to [`Node::handle_input`](crate::Node::handle_input).
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Input {
    /// An app connected to one of the node's listeners; it goes to the role
    /// that serves that listener ([`crate::listener::Serves`]).
    AppAccepted {
        /// The listener ([`crate::listener::Listeners`]).
        listener: ListenerId,
        /// The new connection (allocated by the outside: [`StreamId::outside`]).
        stream: StreamId,
        /// The app's address.
        source: SocketAddr,
    },
    /// Bytes arrived on a stream the core still controls (not spliced).
    StreamData {
        /// The stream.
        stream: StreamId,
        /// The bytes, in order.
        data: Bytes,
    },
    /// The remote side of a core-controlled stream finished or reset it.
    StreamClosed {
        /// The stream.
        stream: StreamId,
        /// Fin or Reset.
        how: Close,
    },
    /// A connection to a peer is up (after [`Output::Dial`], or inbound).
    PeerConnected {
        /// The peer.
        peer: PeerId,
        /// The connection.
        conn: ConnId,
        /// Direct, or through which relay.
        path: Path,
        /// The relay's caps on this connection (relayed connections only).
        limit: Option<CircuitLimit>,
    },
    /// A connection to a peer went down; streams on it are reported separately.
    PeerDisconnected {
        /// The peer.
        peer: PeerId,
        /// The connection.
        conn: ConnId,
    },
    /// An [`Output::Dial`] failed.
    DialFailed {
        /// The peer.
        peer: PeerId,
    },
    /// An [`Output::OpenStream`] succeeded: the stream is writable.
    StreamOpened {
        /// The stream the core named.
        stream: StreamId,
    },
    /// An [`Output::OpenStream`] failed (no connection, protocol refused, limit).
    StreamRefused {
        /// The stream the core named.
        stream: StreamId,
    },
    /// A peer opened a stream to us.
    InboundStream {
        /// The new stream (allocated by the outside).
        stream: StreamId,
        /// Who opened it.
        peer: PeerId,
        /// Which protocol was negotiated.
        protocol: Protocol,
    },
    /// An [`Output::Resolve`] finished.
    Resolved {
        /// The lookup.
        query: QueryId,
        /// The addresses, in the resolver's order.
        result: Result<Vec<IpAddr>, ResolveError>,
    },
    /// An [`Output::ConnectOrigin`] succeeded.
    OriginConnected {
        /// The stream the core named.
        stream: StreamId,
    },
    /// An [`Output::ConnectOrigin`] failed; the driver maps the OS error to a status
    /// (refused, host/network unreachable, timed out).
    OriginFailed {
        /// The stream the core named.
        stream: StreamId,
        /// What went wrong.
        status: Status,
    },
    /// An [`Output::Splice`] finished; both streams are gone.
    SpliceEnded {
        /// Side a of the splice.
        a: StreamId,
        /// Side b of the splice.
        b: StreamId,
        /// What was carried and how it ended.
        report: SpliceReport,
    },
    /// State persisted by an earlier run of this node; feed once, right after `new`.
    Restore(StateSnapshot),
    /// This node learned (or re-learned) whether it is directly reachable.
    Reachability(Reachability),
    /// Others see this node at `ip`: an exit denies it as a destination from
    /// now on, like the addresses it was configured with (a cloud host's
    /// public address under 1:1 NAT is on no interface).
    OwnAddress {
        /// The address.
        ip: IpAddr,
        /// The peer that reported it (identify's observed address); `None`
        /// when this node confirmed it itself (autonat's dial-back). Only
        /// this node's hubs are believed, so strangers cannot make it deny
        /// arbitrary destinations.
        by: Option<PeerId>,
    },
    /// A reservation asked for with [`Output::Reserve`] was granted or renewed.
    ReservationAccepted {
        /// The hub holding it.
        hub: PeerId,
        /// How long it lasts unless renewed; `None` when the transport renews
        /// it by itself (libp2p's relay client does).
        expires_in: Option<Duration>,
    },
    /// An [`Output::Reserve`] failed (hub unreachable, refused, out of slots).
    ReservationFailed {
        /// The hub.
        hub: PeerId,
    },
    /// A reservation that was granted is gone (hub restarted, connection lost,
    /// renewal refused).
    ReservationLost {
        /// The hub.
        hub: PeerId,
    },
    /// An [`Output::HolePunch`] did not produce a direct connection. (Success
    /// shows up as a `PeerConnected` with [`Path::Direct`].)
    HolePunchFailed {
        /// The peer.
        peer: PeerId,
    },
    /// (Gateways) a public HTTP request arrived on an ingress listener; the
    /// core answers it with exactly one [`Output::IngressRespond`] or
    /// [`Output::IngressForward`]. The outside parsed the head (hyper in the
    /// driver) and holds the body: no byte of it goes anywhere before the core
    /// has chosen an agent that answered `Ok`.
    IngressRequest {
        /// The outside's name for the request, unique among the node's
        /// requests in flight.
        request: RequestId,
        /// The listener ([`crate::listener::Serves::Ingress`]).
        listener: ListenerId,
        /// The public client's address.
        client: SocketAddr,
        /// The request head.
        head: RequestHead,
    },
    /// (Gateways) a new route table: swapped in whole if its version is
    /// higher than the one in force (else refused, nothing changes).
    /// Requests already admitted keep the version they were decided under;
    /// answered by [`Event::RoutesReloaded`].
    ReloadRoutes(crate::ingress::Snapshot),
    /// A reload: a new config, whole and already validated by the outside,
    /// whose live parts take effect at once (the rest must equal the config
    /// the node runs with; the outside refuses a reload that changes it).
    /// What changes and what open work keeps is `Node::reconfigure`'s rule.
    /// Answered by [`Event::Reconfigured`].
    Reconfigure(NewConfig),
    /// (Hubs) the operator revokes a key or a peer: its admitted hub streams
    /// end (and with them its registrations and relay admission), and it is
    /// refused admission until a reload changes `hub.keys`. Answered by
    /// [`Event::Revoked`].
    Revoke(Revocation),
    /// (Gateways) the outside is finished with a request: after
    /// [`Output::IngressForward`] when the response ended or failed and the
    /// stream is closed; at any time before the core's answer when the
    /// public client went away (the core then gives the request up and
    /// answers nothing).
    IngressDone {
        /// The request.
        request: RequestId,
        /// How it ended.
        end: IngressEnd,
    },
}

/// How a request the gateway forwarded ended, as the outside saw it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum IngressEnd {
    /// The response went to the client whole (or the upgraded connection
    /// closed cleanly).
    Complete,
    /// The agent's side failed after the request was sent: the client got a
    /// 502/504, or its response was cut off with a reset (never a clean end).
    UpstreamFailed,
    /// The public client went away first.
    ClientGone,
}

/// What the gateway tells a public client itself.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct IngressResponse {
    /// The status code.
    pub status: u16,
    /// Why, for metrics and logs.
    pub outcome: IngressOutcome,
    /// The route table version the request was decided under (the one in
    /// force when it arrived).
    pub version: u64,
    /// `Location`, for redirects.
    pub location: Option<String>,
    /// `Content-Type` of the body.
    pub content_type: String,
    /// The body.
    pub body: Bytes,
}

/// Something the node wants done, pulled with [`Node::poll_output`](crate::Node::poll_output).
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Output {
    /// Write bytes on a core-controlled stream.
    Transmit {
        /// The stream.
        stream: StreamId,
        /// The bytes.
        data: Bytes,
    },
    /// Close a core-controlled stream after earlier transmits (Fin) or abort it
    /// (Reset). The core forgets the stream; anything later about it is ignored.
    ///
    /// A stream the outside hands over (`AppAccepted`, `InboundStream`,
    /// `StreamOpened`, `OriginConnected`) that no role keeps — refused, or
    /// its session already gone — is closed with this at once, so the
    /// outside never has to ask whether the core still tracks a stream.
    Close {
        /// The stream.
        stream: StreamId,
        /// Fin or Reset.
        how: Close,
    },
    /// Connect to a peer; answered by `PeerConnected` or `DialFailed`.
    Dial {
        /// The peer.
        peer: PeerId,
        /// Where it may be reached (may be empty if the driver knows better).
        /// Ignored when `via` is set.
        addrs: Vec<PeerAddr>,
        /// `Some(hub)`: dial through a relay circuit at this hub (the peer
        /// holds a reservation there) instead of directly.
        via: Option<PeerId>,
    },
    /// Open a stream to a connected peer; answered by `StreamOpened` or `StreamRefused`.
    OpenStream {
        /// The id the core gives the stream.
        stream: StreamId,
        /// The peer.
        peer: PeerId,
        /// The connection to open it on; `None` lets the outside choose (it
        /// prefers a direct connection). If the named connection is gone the
        /// stream is refused.
        conn: Option<ConnId>,
        /// The protocol to negotiate.
        protocol: Protocol,
    },
    /// Hold a relay reservation at `hub` so that others can dial this node
    /// through it (and renew it if one is held); answered by
    /// `ReservationAccepted` or `ReservationFailed`.
    Reserve {
        /// The hub.
        hub: PeerId,
    },
    /// Give up the reservation at `hub` (this node became directly reachable).
    Unreserve {
        /// The hub.
        hub: PeerId,
    },
    /// Try to turn the relayed connection to `peer` into a direct one (DCUtR
    /// hole punching); answered by a `PeerConnected` with [`Path::Direct`] or
    /// by `HolePunchFailed`.
    HolePunch {
        /// The peer.
        peer: PeerId,
    },
    /// (Hubs) `peer` passed admission and holds no other admitted hub
    /// stream: the hub's relay serves its reservations and circuits from now
    /// on. No answer.
    Admit {
        /// The peer.
        peer: PeerId,
    },
    /// (Hubs) the last admitted hub stream of `peer` ended: the relay serves
    /// it no more. Follows an [`Output::Admit`] for the same peer. No answer.
    Revoke {
        /// The peer.
        peer: PeerId,
    },
    /// Look a name up; answered by `Resolved`.
    Resolve {
        /// The id the core gives the lookup.
        query: QueryId,
        /// The name, as the app sent it.
        name: String,
    },
    /// Open a TCP connection to an origin (on an exit; the address already
    /// passed the exit policy); answered by `OriginConnected` or `OriginFailed`.
    ConnectOrigin {
        /// The id the core gives the connection.
        stream: StreamId,
        /// The address to dial — exactly this one.
        addr: SocketAddr,
    },
    /// Hand two streams to the data plane: copy both ways with faithful
    /// half-close and reset propagation, then report `SpliceEnded`.
    Splice {
        /// One side (the app on a client, the peer stream on an exit).
        a: StreamId,
        /// The other side (the peer stream on a client, the origin on an exit).
        b: StreamId,
        /// Bytes already read from `a` that must be written to `b` first.
        a_to_b_prefix: Bytes,
        /// Bytes already read from `b` that must be written to `a` first.
        b_to_a_prefix: Bytes,
        /// Limits for the data plane.
        limits: SpliceLimits,
    },
    /// (Gateways) answer an [`Input::IngressRequest`] here, without an
    /// agent: a static target, a redirect, or an error status.
    IngressRespond {
        /// The request.
        request: RequestId,
        /// The response.
        response: IngressResponse,
    },
    /// (Gateways) an agent answered `Ok` on `stream` for this request: the
    /// outside now owns the stream (the core sends and reads nothing more on
    /// it), writes the request to it as HTTP/1.1 with its header hygiene,
    /// relays the response (or the upgraded connection) and reports
    /// [`Input::IngressDone`]. Never a second time for the same request: a
    /// failure after this is a 502/504 for the client, not a retry.
    IngressForward {
        /// The request.
        request: RequestId,
        /// The open `/meshproxy/ingress/1` stream, past the agent's answer.
        stream: StreamId,
        /// The agent at its far end.
        agent: PeerId,
        /// Bytes already read behind the answer (the start of the response).
        prefix: Bytes,
        /// The route table version the request was decided under.
        version: u64,
    },
    /// Persist this state (replacing the previous snapshot).
    Persist(StateSnapshot),
    /// Something worth counting or logging.
    Event(Event),
}

/// Why the node wants to be woken, returned with the instant by
/// [`Node::poll_timeout`](crate::Node::poll_timeout).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum TimerReason {
    /// A session's current step has a deadline.
    SessionDeadline,
    /// A hub link retries, sends a heartbeat, or times out a request.
    HubLink,
    /// The hub directory expires registrations.
    DirectoryExpiry,
    /// The client refreshes its list of exits.
    ExitRefresh,
    /// A hub-side stream did not authenticate in time.
    HubPeerDeadline,
    /// A dial did not answer in time.
    DialDeadline,
    /// A relay reservation is due (renewal, or a retry after a failure).
    Reservation,
    /// A hole-punch retry is due, or an attempt did not answer in time.
    HolePunch,
    /// A gateway request's attempt or budget ran out.
    IngressDeadline,
    /// The gateway refreshes its list of agents.
    AgentRefresh,
}

impl TimerReason {
    /// Whether this timer exists for as long as the node runs, or as long as a
    /// peer connection it watches (so it is not a leak).
    pub fn is_periodic(self) -> bool {
        matches!(
            self,
            TimerReason::HubLink
                | TimerReason::DirectoryExpiry
                | TimerReason::ExitRefresh
                | TimerReason::Reservation
                | TimerReason::HolePunch
                | TimerReason::AgentRefresh
        )
    }
}

/// Peer connections open now, by path ([`Node::peer_connections`](crate::Node::peer_connections)).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct PeerConnections {
    /// Connections that run directly (TCP or QUIC).
    pub direct: usize,
    /// Connections that run through a hub's relay.
    pub relayed: usize,
}

/// How many of each resource a node holds, for leak and bound checks.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Resources {
    /// Client, exit and agent sessions not yet ended.
    pub sessions: usize,
    /// Streams the core tracks (controlled or spliced).
    pub streams: usize,
    /// Dials without an answer.
    pub pending_dials: usize,
    /// DNS lookups without an answer.
    pub pending_queries: usize,
    /// Timers other than the periodic ones.
    pub timers: usize,
    /// Hub directory entries (hubs only).
    pub directory_entries: usize,
    /// The most exit sessions one client peer holds (exits only).
    pub busiest_peer_sessions: usize,
    /// Unadmitted hub streams (hubs only).
    pub preauth_hub_streams: usize,
    /// The most hub streams one peer holds, admitted or not (hubs only).
    pub busiest_peer_hub_streams: usize,
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sessions={} streams={} dials={} queries={} timers={}",
            self.sessions, self.streams, self.pending_dials, self.pending_queries, self.timers
        )
    }
}
