//! The peer network actor: one Tokio task that owns the libp2p [`Swarm`] and turns the
//! runner's [`NetCommand`]s into swarm calls and swarm events into [`NetEvent`]s.
//!
//! Transports: TCP (Noise + Yamux) and QUIC, with DNS names in multiaddrs. Our two byte-stream
//! protocols (`/meshproxy/proxy/1`, `/meshproxy/hub/1`) run over the small `streams`
//! behaviour below; identify and ping ride along so peers learn each other's protocols and
//! addresses, and dead connections are closed.
//!
//! A hub also serves as a libp2p circuit relay v2 (see [`RelayServerConfig`]), with limits
//! sized for proxied traffic rather than libp2p's 2 min / 128 KiB defaults, and only for
//! peers that passed the hub's challenge: the core reports admissions
//! (`Event::PeerAdmitted` / `Event::AdmissionEnded`), the runner keeps an [`AdmittedPeers`]
//! list in step, and the relay's limiters refuse everyone else's reservations and circuits.
//!
//! Every other node is a relay client: `Reserve` listens on `<hub>/p2p/<hub>/p2p-circuit`
//! (libp2p renews the reservation), `Dial { via }` dials `…/p2p-circuit/p2p/<peer>`, and
//! DCUtR upgrades relayed connections (it starts by itself on the side that accepted the
//! circuit; `HolePunch` reports its outcome and adds a plain dial to the peer's identify
//! addresses). Autonat (hubs answer probes, others ask) reports `Reachability`. Each
//! `PeerConnected` says whether the connection is direct or relayed through which hub,
//! with the relay's circuit caps when it announced them.
//!
//! Why not `libp2p-stream`: it hands inbound streams over a one-slot channel and drops the
//! ones that do not fit (a burst of proxied connections loses streams), and it negotiates one
//! outbound stream per connection at a time (one round trip each). Ours queues up to
//! [`crate::port::INBOUND_STREAM_QUEUE`] inbound streams (then resets new ones, counted)
//! and negotiates outbound streams concurrently.
//!
//! Contract (the same one the simulator honours):
//! - every `Dial` is answered by `PeerConnected` or `DialFailed`; a direct `Dial` to a peer
//!   that is already connected is answered at once with `PeerConnected` for an existing
//!   connection (a direct one if any); a `Dial { via }` always makes a new connection;
//! - `OpenStream` goes on the connection named, else on the newest direct connection, else
//!   the newest; to a peer without a connection (or a connection that is gone) it is
//!   answered with `StreamRefused` at once (the actor never dials implicitly: dialing is the
//!   core's decision);
//! - `Reserve` is answered by `ReservationAccepted` (at once if one is held) or
//!   `ReservationFailed`, later perhaps `ReservationLost`; `HolePunch` by a direct
//!   `PeerConnected` or `HolePunchFailed`;
//! - the actor sets no policy timers: deadlines belong to the core. One exception: a
//!   `Dial { via }` may wait up to [`IDENTIFY_WAIT`] for the hub's identify (see
//!   `NetworkActor::dial_via`), out of the core's dial deadline (10 s by default).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque},
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use futures::StreamExt as _;
use libp2p::{
    autonat,
    connection_limits::{self, ConnectionLimits},
    core::transport::ListenerId,
    dcutr, identify, identity, multiaddr, ping, relay,
    swarm::{
        behaviour::toggle::Toggle, dial_opts::DialOpts, dial_opts::PeerCondition, ConnectionId,
        SwarmEvent,
    },
    tcp, Multiaddr, StreamProtocol, Swarm, SwarmBuilder, Transport as _,
};
use meshproxy_core::{
    ids::{ConnId, PeerId, StreamId, MAX_PEER_ID_LEN},
    io::{CircuitLimit, Path, Protocol, Reachability},
    record::PeerAddr,
};
use tokio::sync::{mpsc, watch};

use crate::muxer::Yamux;
use crate::noise::{Noise, NoiseError};
use crate::port::{HolePunchStage, InboundGate, NetCommand, NetEvent};

/// The most streams a connection may carry; every configured value is clamped to this. (Each
/// stream may buffer yamux's 256 KiB window: see [`crate::muxer::receive_window`].)
pub const YAMUX_MAX_STREAMS_CEILING: usize = 4096;

/// How many commands the runner may queue before `send` waits.
const COMMAND_QUEUE: usize = 1024;

/// The identify protocol version we announce.
const IDENTIFY_PROTOCOL: &str = "/meshproxy/id/1";

/// How many connections the network accepts and makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetLimits {
    /// Established inbound connections, all peers together.
    pub max_established_incoming: u32,
    /// Established outbound connections, all peers together.
    pub max_established_outgoing: u32,
    /// Established connections to one peer (both directions).
    pub max_established_per_peer: u32,
    /// Inbound connections still in their handshake.
    pub max_pending_incoming: u32,
    /// Outbound connections still in their handshake.
    pub max_pending_outgoing: u32,
    /// Concurrent streams on one connection (Yamux and QUIC); clamped to
    /// [`YAMUX_MAX_STREAMS_CEILING`].
    pub max_streams_per_connection: usize,
    /// Inbound connections (in their handshake or established) from one IPv4 address or
    /// IPv6 /64; relayed connections are not counted (see [`crate::per_ip`]).
    pub max_connections_per_ip: u32,
}

impl Default for NetLimits {
    fn default() -> Self {
        NetLimits {
            max_established_incoming: 1024,
            max_established_outgoing: 1024,
            max_established_per_peer: 4,
            max_pending_incoming: 256,
            max_pending_outgoing: 256,
            max_streams_per_connection: 1024,
            max_connections_per_ip: 16,
        }
    }
}

/// How to start the peer network.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// The node's identity (Ed25519 in production); its peer id is the node's [`PeerId`].
    pub keypair: identity::Keypair,
    /// Where to listen, e.g. `/ip4/0.0.0.0/tcp/4001` and `/ip4/0.0.0.0/udp/4001/quic-v1`.
    pub listen: Vec<Multiaddr>,
    /// Connection and stream limits.
    pub limits: NetLimits,
    /// How long a connection without streams stays open. libp2p's 10 s default would drop
    /// a hub link between heartbeats and an exit link between sessions.
    pub idle_connection_timeout: Duration,
    /// Serve as a circuit relay (hubs); `None`: the relay protocol is not even offered.
    pub relay: Option<RelayServerConfig>,
    /// Use other nodes' relays: reserve at hubs, dial through them, and upgrade relayed
    /// connections by DCUtR hole punching. Off on hubs, which are reachable by design.
    pub relay_client: bool,
    /// Autonat (dial-back probes that tell whether this node is reachable directly);
    /// `None`: off, as when the operator states the reachability.
    pub autonat: Option<AutonatConfig>,
}

impl NetConfig {
    /// A configuration with default limits, a 60 s idle timeout, no listeners, no relay
    /// server, the relay client on, and autonat probing only global addresses.
    pub fn new(keypair: identity::Keypair) -> NetConfig {
        NetConfig {
            keypair,
            listen: Vec::new(),
            limits: NetLimits::default(),
            idle_connection_timeout: Duration::from_secs(60),
            relay: None,
            relay_client: true,
            autonat: Some(AutonatConfig::default()),
        }
    }
}

/// How autonat runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AutonatConfig {
    /// Ask connected peers to dial us back (clients and exits). Off: only answer others'
    /// probes (hubs serve as autonat servers).
    pub probe: bool,
    /// Probe and serve private and loopback addresses too (test networks, LANs); libp2p's
    /// default is global addresses only.
    pub private_ips: bool,
    /// Wait this long after start before the first probe (connections to hubs first).
    pub boot_delay: Duration,
    /// Probe again this often while the verdict is unsure.
    pub retry_interval: Duration,
}

impl Default for AutonatConfig {
    fn default() -> Self {
        AutonatConfig {
            probe: true,
            private_ips: false,
            boot_delay: Duration::from_secs(5),
            retry_interval: Duration::from_secs(90),
        }
    }
}

/// The longest reservation or circuit the relay grants: libp2p sends a circuit's duration
/// as `u32` seconds (and panics above that) and adds the reservation's to the wall clock.
pub const RELAY_MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// What the hub's relay grants. Defaults suit proxied sessions between admitted peers;
/// every count is a cap on state the hub holds, so none is unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayLimits {
    /// Reservations held at once, all peers together.
    pub max_reservations: usize,
    /// Reservations one peer holds at once (one per connection).
    pub max_reservations_per_peer: usize,
    /// How long a reservation lasts; the client renews it before it runs out.
    pub reservation_duration: Duration,
    /// Circuits open at once, all peers together.
    pub max_circuits: usize,
    /// Circuits one peer has open at once as their source.
    pub max_circuits_per_peer: usize,
    /// How long one circuit may live (clamped to [`RELAY_MAX_DURATION`]).
    pub max_circuit_duration: Duration,
    /// Bytes one circuit may carry in each direction before it is closed (at least 1: libp2p
    /// reads 0 as unlimited but would still advertise a limit of 0 to the peers).
    pub max_circuit_bytes: u64,
}

impl Default for RelayLimits {
    fn default() -> Self {
        RelayLimits {
            max_reservations: 1024,
            max_reservations_per_peer: 4,
            reservation_duration: Duration::from_secs(3600),
            max_circuits: 1024,
            max_circuits_per_peer: 64,
            max_circuit_duration: Duration::from_secs(3600),
            max_circuit_bytes: 1 << 30,
        }
    }
}

/// The relay a hub serves: its limits and who may use it.
#[derive(Clone, Debug, Default)]
pub struct RelayServerConfig {
    /// What the relay grants.
    pub limits: RelayLimits,
    /// The peers it serves; the runner keeps this in step with the core's admissions.
    pub admitted: AdmittedPeers,
}

/// The peers a hub has admitted (they passed its challenge and hold an admitted hub stream),
/// shared between the runner, which writes it on the core's admission events, and the relay,
/// which serves only these peers. Cloning shares the same list.
#[derive(Clone, Debug, Default)]
pub struct AdmittedPeers(Arc<RwLock<BTreeSet<PeerId>>>);

impl AdmittedPeers {
    /// `peer` passed admission.
    pub fn admit(&self, peer: PeerId) {
        // A panic elsewhere while holding the lock leaves a set that is still a valid set.
        self.0.write().unwrap_or_else(PoisonError::into_inner).insert(peer);
    }

    /// `peer`'s admission ended.
    pub fn revoke(&self, peer: &PeerId) {
        self.0.write().unwrap_or_else(PoisonError::into_inner).remove(peer);
    }

    /// Whether `peer` is admitted now.
    pub fn contains(&self, peer: &PeerId) -> bool {
        self.0.read().unwrap_or_else(PoisonError::into_inner).contains(peer)
    }

    /// How many peers are admitted.
    pub fn len(&self) -> usize {
        self.0.read().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether no peer is admitted.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A relay limiter that lets through admitted peers only. It stands in for libp2p's
    /// default per-peer and per-IP rate limiters, which would throttle admitted peers to a
    /// reservation or circuit every two minutes; the relay's count caps still apply.
    fn limiter(
        &self,
        what: &'static str,
    ) -> impl FnMut(libp2p::PeerId, &Multiaddr, std::time::Instant) -> bool + Send + 'static {
        let admitted = self.clone();
        move |peer, addr, _now| {
            let ok = admitted.contains(&to_core(&peer));
            if !ok {
                tracing::debug!(%peer, %addr, what, "relay: refused a peer that is not admitted");
            }
            ok
        }
    }
}

/// The relay behaviour for `config`, closed to every peer `config.admitted` does not hold.
fn relay_behaviour(local: libp2p::PeerId, config: &RelayServerConfig) -> relay::Behaviour {
    let mut behaviour = relay::Behaviour::new(local, relay_config(config));
    // A hub is reachable at its listen addresses by design; without this the relay would
    // wait for an external address to be confirmed (autonat) before offering its protocol.
    behaviour.set_status(Some(relay::Status::Enable));
    behaviour
}

/// libp2p's relay configuration for `config`, clamped to what libp2p can send.
fn relay_config(config: &RelayServerConfig) -> relay::Config {
    let l = config.limits;
    let mut c = relay::Config {
        max_reservations: l.max_reservations,
        max_reservations_per_peer: l.max_reservations_per_peer,
        reservation_duration: l.reservation_duration.min(RELAY_MAX_DURATION),
        max_circuits: l.max_circuits,
        max_circuits_per_peer: l.max_circuits_per_peer,
        max_circuit_duration: l.max_circuit_duration.min(RELAY_MAX_DURATION),
        max_circuit_bytes: l.max_circuit_bytes.max(1),
        ..relay::Config::default()
    };
    let reservation: Box<dyn relay::RateLimiter> = Box::new(config.admitted.limiter("reservation"));
    let circuit: Box<dyn relay::RateLimiter> = Box::new(config.admitted.limiter("circuit"));
    c.reservation_rate_limiters = vec![reservation];
    c.circuit_src_rate_limiters = vec![circuit];
    c
}

/// Why the network could not start.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// `spawn` was called outside a Tokio runtime.
    #[error("the network actor must be spawned inside a Tokio runtime")]
    NoRuntime,
    /// The Noise handshake configuration could not be built from the keypair.
    #[error("noise configuration: {0}")]
    Noise(#[from] NoiseError),
    /// The system DNS configuration could not be read.
    #[error("DNS resolver configuration: {0}")]
    Dns(#[source] std::io::Error),
    /// A listen address was refused (unsupported, or the port is taken).
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// The transport's reason.
        #[source]
        source: libp2p::TransportError<std::io::Error>,
    },
}

/// The core's view of a libp2p peer id: its binary form.
///
/// Ids of authenticated peers derive from public keys and are at most 44 bytes, well within
/// the core's [`MAX_PEER_ID_LEN`]; a longer id (only constructible by hand, never from a
/// handshake) is truncated, which `from_core` then rejects.
pub fn to_core(peer: &libp2p::PeerId) -> PeerId {
    let bytes = peer.to_bytes();
    let head = &bytes[..bytes.len().min(MAX_PEER_ID_LEN)];
    PeerId::from_bytes(head).unwrap_or_else(|| PeerId::from_u64(0))
}

/// The libp2p peer id behind a core id; `None` if the bytes are not a valid peer id
/// (e.g. the simulator's synthetic ids).
pub fn from_core(peer: &PeerId) -> Option<libp2p::PeerId> {
    libp2p::PeerId::from_bytes(peer.as_bytes()).ok()
}

/// The IP address a multiaddr starts with, if it does.
fn ip_of(addr: &Multiaddr) -> Option<std::net::IpAddr> {
    match addr.iter().next()? {
        multiaddr::Protocol::Ip4(ip) => Some(ip.into()),
        multiaddr::Protocol::Ip6(ip) => Some(ip.into()),
        _ => None,
    }
}

/// The core's view of a multiaddr: its binary form.
pub fn addr_to_core(addr: &Multiaddr) -> PeerAddr {
    PeerAddr(addr.to_vec())
}

/// The multiaddr behind a core address; `None` if the bytes do not decode.
pub fn addr_from_core(addr: &PeerAddr) -> Option<Multiaddr> {
    Multiaddr::try_from(addr.0.clone()).ok()
}

/// The libp2p protocol name of one of our stream protocols.
fn stream_protocol(protocol: Protocol) -> StreamProtocol {
    StreamProtocol::new(protocol.name())
}

/// Every behaviour the swarm runs.
#[derive(libp2p::swarm::NetworkBehaviour)]
struct SwarmBehaviour {
    /// Refuses connections beyond [`NetLimits`] before they cost a handler.
    limits: connection_limits::Behaviour,
    /// Refuses inbound connections beyond [`NetLimits::max_connections_per_ip`] before their
    /// handshake.
    per_ip: crate::per_ip::Behaviour,
    /// Our byte-stream protocols.
    streams: streams::ByteStreams,
    /// Tells peers our protocols and listen addresses, and us the address they see.
    identify: identify::Behaviour,
    /// Measures round trips and notices dead connections.
    ping: ping::Behaviour,
    /// The circuit relay v2 server, on hubs only.
    relay: Toggle<relay::Behaviour>,
    /// The circuit relay v2 client: reservations at hubs and circuits through them.
    relay_client: Toggle<relay::client::Behaviour>,
    /// Direct connection upgrade through relay (hole punching).
    dcutr: Toggle<dcutr::Behaviour>,
    /// Dial-back reachability probes (client side) and answers to others' (server side).
    autonat: Toggle<autonat::Behaviour>,
}

/// What the runner holds to talk to the network actor.
#[derive(Clone, Debug)]
pub struct NetHandle {
    /// Where the runner sends its commands; dropping every sender stops the actor.
    pub commands: mpsc::Sender<NetCommand>,
    local_peer_id: libp2p::PeerId,
    listening: watch::Receiver<Listening>,
}

impl NetHandle {
    /// Our own libp2p peer id.
    pub fn local_peer_id(&self) -> libp2p::PeerId {
        self.local_peer_id
    }

    /// Our own peer id as the core sees it.
    pub fn local_core_peer_id(&self) -> PeerId {
        to_core(&self.local_peer_id)
    }

    /// The actual listen addresses, once every configured listener has reported at least
    /// one (or failed): a port 0 in the config is resolved here.
    pub async fn listen_addrs(&self) -> Vec<Multiaddr> {
        let mut rx = self.listening.clone();
        let ready = rx.wait_for(|l| l.ready).await.map(|l| l.addrs.clone()).ok();
        // The actor is gone: its last word is all there is.
        ready.unwrap_or_else(|| self.listening.borrow().addrs.clone())
    }
}

/// The listen addresses the actor has learnt so far.
#[derive(Clone, Debug, Default)]
struct Listening {
    /// Every address we are listening on now.
    addrs: Vec<Multiaddr>,
    /// Whether every configured listener has reported (an address, or its end).
    ready: bool,
}

/// The task that owns the swarm. Construct it with [`NetworkActor::spawn`].
pub struct NetworkActor<F> {
    swarm: Swarm<SwarmBehaviour>,
    events: F,
    /// Events produced on connection tasks (opened, refused and accepted streams), forwarded
    /// in order through `events`, so the callback never needs to be `Sync`. Unbounded so no
    /// answer to an `OpenStream` is ever lost (the core's own stream limits bound those);
    /// accepted streams in it are capped by `inbound`.
    from_tasks: mpsc::UnboundedReceiver<NetEvent>,
    /// The accepted streams in `from_tasks`.
    inbound: InboundGate,
    /// Keeps `from_tasks` open while the actor lives.
    _to_actor: mpsc::UnboundedSender<NetEvent>,
    /// Our connections; `ConnId`s are never reused within a process.
    conns: HashMap<ConnectionId, ConnInfo>,
    by_conn: HashMap<ConnId, ConnectionId>,
    by_peer: BTreeMap<libp2p::PeerId, BTreeSet<ConnId>>,
    next_conn: u64,
    /// Dials the core asked for: only their failures are its `DialFailed`s (DCUtR and the
    /// relay client dial too, and answer for themselves).
    dials: HashMap<ConnectionId, libp2p::PeerId>,
    /// Where connected peers say they listen (identify), direct addresses only.
    identified: HashMap<libp2p::PeerId, Vec<Multiaddr>>,
    /// The addresses of the core's last direct `Dial` of each peer (how to reach a hub
    /// for a reservation or circuit before any connection to it exists).
    dial_addrs: HashMap<libp2p::PeerId, Vec<Multiaddr>>,
    /// Our use of the hubs' relays: reservations, relayed dials, circuit caps, hole punches.
    relay_client: RelayClient,
    /// Listeners that have not reported an address yet.
    pending_listeners: HashSet<ListenerId>,
    /// Our listen addresses, in the order the listeners reported them.
    listen_addrs: Vec<(ListenerId, Multiaddr)>,
    listening: watch::Sender<Listening>,
    /// Who the relay serves (hubs only), for the logs.
    relay_admitted: Option<AdmittedPeers>,
}

/// One connection as the actor tracks it.
#[derive(Clone, Debug)]
struct ConnInfo {
    peer: libp2p::PeerId,
    conn: ConnId,
    path: Path,
    limit: Option<CircuitLimit>,
    /// The address we dialed (direct outbound connections only): known to reach the peer.
    dialed: Option<Multiaddr>,
}

/// What this node holds as a client of the hubs' relays: reservations at hubs, dials
/// through hubs waiting for the hub's identify, the caps relays announced for circuits
/// whose connections are not up yet, and the hole punches (DCUtR and our own direct dials)
/// that try to replace relayed connections by direct ones.
#[derive(Debug, Default)]
struct RelayClient {
    /// Relay reservations asked for, by hub.
    reservations: HashMap<libp2p::PeerId, Reservation>,
    /// Dials through a hub that wait for the hub's identify (see
    /// [`NetworkActor::dial_via`]).
    parked: ParkedDials,
    /// Caps the relays announced for our outbound circuits, by relay, in order, until the
    /// connection over each circuit is up.
    out_limits: HashMap<libp2p::PeerId, VecDeque<CircuitLimit>>,
    /// The same for inbound circuits, by the peer that opened them.
    in_limits: HashMap<libp2p::PeerId, CircuitLimit>,
    /// Direct dials made to answer a `HolePunch`.
    punch_dials: HashMap<ConnectionId, libp2p::PeerId>,
    /// Peers whose relayed connection we accepted, while DCUtR works on it.
    punching: HashSet<libp2p::PeerId>,
    /// Peers whose `HolePunch` the core still waits to hear about.
    punch_asked: HashSet<libp2p::PeerId>,
}

impl RelayClient {
    /// Whether `listener` is a reservation's `/p2p-circuit` listener.
    fn is_reservation(&self, listener: ListenerId) -> bool {
        self.reservations.values().any(|r| r.listener == listener)
    }

    /// Takes the reservation whose listener is `listener`, with its hub.
    fn take_reservation(&mut self, listener: ListenerId) -> Option<(libp2p::PeerId, Reservation)> {
        let hub =
            self.reservations.iter().find(|(_, r)| r.listener == listener).map(|(h, _)| *h)?;
        let r = self.reservations.remove(&hub)?;
        Some((hub, r))
    }

    /// The hub of the one reservation granted, if exactly one is.
    fn only_held_hub(&self) -> Option<libp2p::PeerId> {
        let mut held = self.reservations.iter().filter(|(_, r)| r.accepted).map(|(h, _)| *h);
        match (held.next(), held.next()) {
            (Some(only), None) => Some(only),
            _ => None,
        }
    }

    /// Remembers the caps `relay` announced for an outbound circuit (at most
    /// [`MAX_PENDING_LIMITS`] per relay; the oldest goes first).
    fn push_out_limit(&mut self, relay: libp2p::PeerId, limit: CircuitLimit) {
        let q = self.out_limits.entry(relay).or_default();
        if q.len() >= MAX_PENDING_LIMITS {
            q.pop_front();
        }
        q.push_back(limit);
    }

    /// Takes the caps for the oldest outbound circuit through `relay`.
    fn take_out_limit(&mut self, relay: libp2p::PeerId) -> Option<CircuitLimit> {
        self.out_limits.get_mut(&relay).and_then(VecDeque::pop_front)
    }

    /// Whether a direct dial answering a `HolePunch` for `peer` is under way.
    fn punch_dialing(&self, peer: &libp2p::PeerId) -> bool {
        self.punch_dials.values().any(|p| p == peer)
    }

    /// Whether any hole-punch attempt for `peer` is under way (DCUtR or our own dial).
    fn punch_under_way(&self, peer: &libp2p::PeerId) -> bool {
        self.punching.contains(peer) || self.punch_dialing(peer)
    }
}

/// A reservation at one hub: its `/p2p-circuit` listener and whether the hub granted it.
#[derive(Clone, Copy, Debug)]
struct Reservation {
    listener: ListenerId,
    accepted: bool,
}

/// Most circuit caps remembered per relay before their connections come up.
const MAX_PENDING_LIMITS: usize = 64;
/// Most addresses kept per peer (identify, dials).
const MAX_ADDRS_PER_PEER: usize = 16;
/// Most peers whose dial addresses are kept.
const MAX_DIAL_ADDR_PEERS: usize = 4096;
/// How long a dial through a hub waits for the hub's identify before it goes anyway.
pub const IDENTIFY_WAIT: Duration = Duration::from_secs(2);
/// Dials that may wait for identify at once; more go at once.
const MAX_PARKED_DIALS: usize = 1024;

/// A dial to `peer` through `hub`'s relay, held until `until` at the latest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ParkedDial {
    peer: PeerId,
    hub: libp2p::PeerId,
    until: tokio::time::Instant,
}

/// Dials through hubs waiting for the hubs' identify, oldest first: every one waits the
/// same [`IDENTIFY_WAIT`], so the first is also the first due.
#[derive(Debug, Default)]
struct ParkedDials(VecDeque<ParkedDial>);

impl ParkedDials {
    /// Holds a dial to `peer` through `hub` until `now + IDENTIFY_WAIT` at the latest;
    /// `false` (hold nothing) when [`MAX_PARKED_DIALS`] already wait.
    fn park(&mut self, peer: PeerId, hub: libp2p::PeerId, now: tokio::time::Instant) -> bool {
        if self.0.len() >= MAX_PARKED_DIALS {
            return false;
        }
        self.0.push_back(ParkedDial { peer, hub, until: now + IDENTIFY_WAIT });
        true
    }

    /// When the first dial is due, if any waits.
    fn next_due(&self) -> Option<tokio::time::Instant> {
        self.0.front().map(|d| d.until)
    }

    /// Takes the dials due by `now`.
    fn take_due(&mut self, now: tokio::time::Instant) -> Vec<ParkedDial> {
        let due = self.0.iter().take_while(|d| d.until <= now).count();
        self.0.drain(..due).collect()
    }

    /// Takes the dials waiting for `hub`, keeping the others in order.
    fn take_hub(&mut self, hub: libp2p::PeerId) -> Vec<ParkedDial> {
        let taken = self.0.iter().filter(|d| d.hub == hub).copied().collect();
        self.0.retain(|d| d.hub != hub);
        taken
    }
}

impl<F> std::fmt::Debug for NetworkActor<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkActor")
            .field("local_peer_id", self.swarm.local_peer_id())
            .field("conns", &self.conns.len())
            .field("reservations", &self.relay_client.reservations.len())
            .finish_non_exhaustive()
    }
}

/// The address without its trailing `/p2p/…` part, if any.
fn without_peer(addr: &Multiaddr) -> Multiaddr {
    let mut a = addr.clone();
    while matches!(a.iter().last(), Some(multiaddr::Protocol::P2p(_))) {
        a.pop();
    }
    a
}

/// The part of a `/p2p-circuit` address before the circuit: the relay's address and,
/// if it names one, the relay's peer id.
fn relay_part(addr: &Multiaddr) -> (Multiaddr, Option<libp2p::PeerId>) {
    let mut relay = Multiaddr::empty();
    let mut peer = None;
    for p in addr.iter() {
        match p {
            multiaddr::Protocol::P2pCircuit => break,
            multiaddr::Protocol::P2p(id) => peer = Some(id),
            other => relay.push(other),
        }
    }
    (relay, peer)
}

/// The core's view of a relay's circuit caps (libp2p does not name its type publicly).
macro_rules! circuit_limit {
    ($limit:expr) => {
        $limit.map(|l| CircuitLimit { duration: l.duration(), bytes: l.data_in_bytes() })
    };
}

impl<F: Fn(NetEvent) + Send + 'static> NetworkActor<F> {
    /// Builds the swarm, starts listening and spawns the actor on the
    /// current Tokio runtime.
    ///
    /// `events` is called from the actor task for every [`NetEvent`], in order; it must not
    /// block (forward with `try_send` or an unbounded channel, never `blocking_send`).
    pub fn spawn(config: NetConfig, events: F) -> Result<NetHandle, NetError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(NetError::NoRuntime);
        }
        let (to_actor, from_tasks) = mpsc::unbounded_channel();
        let inbound = InboundGate::default();
        let mut swarm = build_swarm(&config, to_actor.clone(), inbound.clone())?;
        let local_peer_id = *swarm.local_peer_id();

        let mut pending_listeners = HashSet::new();
        for addr in &config.listen {
            let id = swarm
                .listen_on(addr.clone())
                .map_err(|source| NetError::Listen { addr: addr.clone(), source })?;
            pending_listeners.insert(id);
        }
        let (listening, listening_rx) =
            watch::channel(Listening { addrs: Vec::new(), ready: pending_listeners.is_empty() });

        let (commands, commands_rx) = mpsc::channel(COMMAND_QUEUE);
        let actor = NetworkActor {
            swarm,
            events,
            from_tasks,
            inbound,
            _to_actor: to_actor,
            conns: HashMap::new(),
            by_conn: HashMap::new(),
            by_peer: BTreeMap::new(),
            next_conn: 0,
            dials: HashMap::new(),
            identified: HashMap::new(),
            dial_addrs: HashMap::new(),
            relay_client: RelayClient::default(),
            pending_listeners,
            listen_addrs: Vec::new(),
            listening,
            relay_admitted: config.relay.as_ref().map(|r| r.admitted.clone()),
        };
        tokio::spawn(actor.run(commands_rx));
        Ok(NetHandle { commands, local_peer_id, listening: listening_rx })
    }

    async fn run(mut self, mut commands: mpsc::Receiver<NetCommand>) {
        loop {
            let unpark_at = self.relay_client.parked.next_due();
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break,
                },
                // `self.to_actor` keeps this channel open, so `None` never comes.
                Some(event) = self.from_tasks.recv() => {
                    if matches!(event, NetEvent::InboundStream { .. }) {
                        self.inbound.leave();
                    }
                    (self.events)(event)
                }
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                () = async {
                    match unpark_at {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {
                    let due = self.relay_client.parked.take_due(tokio::time::Instant::now());
                    self.dial_parked(due);
                }
            }
        }
    }

    fn on_command(&mut self, command: NetCommand) {
        match command {
            NetCommand::Dial { peer, addrs, via: None } => self.dial(peer, &addrs),
            NetCommand::Dial { peer, via: Some(hub), .. } => self.dial_via(peer, hub),
            NetCommand::OpenStream { stream, peer, conn, protocol } => {
                self.open_stream(stream, peer, conn, protocol)
            }
            NetCommand::Reserve { hub } => self.reserve(hub),
            NetCommand::Unreserve { hub } => self.unreserve(hub),
            NetCommand::HolePunch { peer } => self.hole_punch(peer),
        }
    }

    fn relay_client_on(&self) -> bool {
        self.swarm.behaviour().relay_client.is_enabled()
    }

    /// Announces an existing connection again (the answer to a `Dial` or `HolePunch`
    /// that some connection already satisfies).
    fn announce(&self, cid: ConnectionId) {
        if let Some(i) = self.conns.get(&cid) {
            (self.events)(NetEvent::PeerConnected {
                peer: to_core(&i.peer),
                conn: i.conn,
                path: i.path,
                limit: i.limit,
            });
        }
    }

    /// The connection new streams to `peer` should use: the newest direct one, else the
    /// newest at all.
    fn preferred_conn(&self, peer: &libp2p::PeerId) -> Option<ConnectionId> {
        let ids = self.by_peer.get(peer)?;
        let infos = ids.iter().rev().filter_map(|c| self.by_conn.get(c));
        let direct =
            infos.clone().find(|cid| self.conns.get(cid).is_some_and(|i| i.path == Path::Direct));
        direct.or_else(|| ids.iter().next_back().and_then(|c| self.by_conn.get(c))).copied()
    }

    fn direct_conn(&self, peer: &libp2p::PeerId) -> Option<ConnectionId> {
        self.preferred_conn(peer)
            .filter(|cid| self.conns.get(cid).is_some_and(|i| i.path == Path::Direct))
    }

    /// Where to reach `peer` directly: the address of a live outbound connection, else
    /// what the core last gave to dial it, else where it says it listens.
    fn addr_of(&self, peer: &libp2p::PeerId) -> Option<Multiaddr> {
        let live = self.by_peer.get(peer).into_iter().flatten().find_map(|c| {
            let info = self.by_conn.get(c).and_then(|cid| self.conns.get(cid))?;
            info.dialed.clone()
        });
        live.or_else(|| self.dial_addrs.get(peer).and_then(|a| a.first().cloned()))
            .or_else(|| self.identified.get(peer).and_then(|a| a.first().cloned()))
            .map(|a| without_peer(&a))
    }

    fn dial(&mut self, peer: PeerId, addrs: &[PeerAddr]) {
        let Some(id) = from_core(&peer) else {
            (self.events)(NetEvent::DialFailed { peer });
            return;
        };
        let decoded: Vec<Multiaddr> = addrs.iter().filter_map(addr_from_core).collect();
        if decoded.is_empty() && !addrs.is_empty() {
            // Nothing we could dial, and an empty list would make libp2p ask the behaviours,
            // which is not what the core asked for.
            (self.events)(NetEvent::DialFailed { peer });
            return;
        }
        if let Some(cid) = self.preferred_conn(&id) {
            // Already connected: answer with a connection we have.
            self.announce(cid);
            return;
        }
        if self.dials.values().any(|p| *p == id) {
            return; // the dial under way answers
        }
        if !decoded.is_empty() {
            if self.dial_addrs.len() >= MAX_DIAL_ADDR_PEERS && !self.dial_addrs.contains_key(&id) {
                self.dial_addrs.clear();
            }
            let keep = decoded.iter().take(MAX_ADDRS_PER_PEER).cloned().collect();
            self.dial_addrs.insert(id, keep);
        }
        let opts =
            DialOpts::peer_id(id).addresses(decoded).condition(PeerCondition::Always).build();
        let cid = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.dials.insert(cid, id);
            }
            // Synchronous failures (no addresses, our own id, denied) raise no swarm event.
            Err(_) => (self.events)(NetEvent::DialFailed { peer }),
        }
    }

    /// A new connection to `peer` through a circuit at `hub`'s relay, whatever else exists.
    ///
    /// While we are connected to the hub but its identify has not come yet, the dial waits
    /// for it (at most [`IDENTIFY_WAIT`]). DCUtR's hole punch offers the peer the addresses
    /// hubs saw us at, which identify brings: a circuit that came up before them made the
    /// punch fail at once with `NoAddresses` (1 run in 10 of `tests/relay_client.rs`, which
    /// dials through a hub right after connecting to it, as a freshly started client would).
    fn dial_via(&mut self, peer: PeerId, hub: PeerId) {
        let (Some(_), Some(hub_id), true) =
            (from_core(&peer), from_core(&hub), self.relay_client_on())
        else {
            (self.events)(NetEvent::DialFailed { peer });
            return;
        };
        let unidentified =
            self.by_peer.contains_key(&hub_id) && !self.identified.contains_key(&hub_id);
        if unidentified && self.relay_client.parked.park(peer, hub_id, tokio::time::Instant::now())
        {
            return;
        }
        self.dial_via_now(peer, hub_id);
    }

    /// Dials what waited for identify.
    fn dial_parked(&mut self, dials: Vec<ParkedDial>) {
        for d in dials {
            self.dial_via_now(d.peer, d.hub);
        }
    }

    fn dial_via_now(&mut self, peer: PeerId, hub_id: libp2p::PeerId) {
        let (Some(id), true) = (from_core(&peer), self.relay_client_on()) else {
            (self.events)(NetEvent::DialFailed { peer });
            return;
        };
        let Some(hub_addr) = self.addr_of(&hub_id) else {
            tracing::debug!(%id, hub = %hub_id, "no address of the relay to dial through");
            (self.events)(NetEvent::DialFailed { peer });
            return;
        };
        let circuit = hub_addr
            .with(multiaddr::Protocol::P2p(hub_id))
            .with(multiaddr::Protocol::P2pCircuit)
            .with(multiaddr::Protocol::P2p(id));
        let opts =
            DialOpts::peer_id(id).addresses(vec![circuit]).condition(PeerCondition::Always).build();
        let cid = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.dials.insert(cid, id);
            }
            Err(e) => {
                tracing::debug!(%id, hub = %hub_id, error = %e, "relayed dial refused");
                (self.events)(NetEvent::DialFailed { peer });
            }
        }
    }

    fn open_stream(
        &mut self,
        stream: StreamId,
        peer: PeerId,
        conn: Option<ConnId>,
        protocol: Protocol,
    ) {
        let Some(id) = from_core(&peer) else {
            (self.events)(NetEvent::StreamRefused { stream });
            return;
        };
        let target = match conn {
            Some(c) => self
                .by_conn
                .get(&c)
                .copied()
                .filter(|cid| self.conns.get(cid).is_some_and(|i| i.peer == id)),
            None => self.preferred_conn(&id),
        };
        let Some(cid) = target else {
            (self.events)(NetEvent::StreamRefused { stream });
            return;
        };
        // Answered from the connection task, through `from_tasks`.
        self.swarm.behaviour_mut().streams.open(id, cid, stream, protocol);
    }

    fn reserve(&mut self, hub: PeerId) {
        let Some(hub_id) = from_core(&hub).filter(|_| self.relay_client_on()) else {
            (self.events)(NetEvent::ReservationFailed { hub });
            return;
        };
        if let Some(r) = self.relay_client.reservations.get(&hub_id) {
            // libp2p renews a granted reservation by itself; a pending one answers later.
            if r.accepted {
                (self.events)(NetEvent::ReservationAccepted { hub });
            }
            return;
        }
        let Some(addr) = self.addr_of(&hub_id) else {
            tracing::info!(hub = %hub_id, "relay reservation: no address of the hub");
            (self.events)(NetEvent::ReservationFailed { hub });
            return;
        };
        let circuit =
            addr.with(multiaddr::Protocol::P2p(hub_id)).with(multiaddr::Protocol::P2pCircuit);
        match self.swarm.listen_on(circuit.clone()) {
            Ok(listener) => {
                tracing::debug!(%circuit, "asking for a relay reservation");
                self.relay_client
                    .reservations
                    .insert(hub_id, Reservation { listener, accepted: false });
            }
            Err(e) => {
                tracing::info!(%circuit, error = %e, "relay reservation refused locally");
                (self.events)(NetEvent::ReservationFailed { hub });
            }
        }
    }

    fn unreserve(&mut self, hub: PeerId) {
        let Some(hub_id) = from_core(&hub) else { return };
        if let Some(r) = self.relay_client.reservations.remove(&hub_id) {
            tracing::info!(hub = %hub_id, "relay reservation dropped");
            self.swarm.remove_listener(r.listener);
        }
    }

    fn hole_punch(&mut self, peer: PeerId) {
        let Some(id) = from_core(&peer) else {
            (self.events)(NetEvent::HolePunchFailed { peer });
            return;
        };
        if let Some(cid) = self.direct_conn(&id) {
            self.announce(cid);
            return;
        }
        self.punch_dial(id);
        if self.relay_client.punch_under_way(&id) {
            // An attempt is under way; its outcome answers.
            self.relay_client.punch_asked.insert(id);
        } else {
            (self.events)(NetEvent::HolePunchFailed { peer });
        }
    }

    /// Besides DCUtR (whose simultaneous open needs both dials to cross in time), a plain
    /// dial to where the peer says it listens: it gets through whenever the peer is
    /// reachable from here, e.g. an exit behind NAT dialing a public client. At most one at
    /// a time per peer; nothing without identify's addresses.
    fn punch_dial(&mut self, id: libp2p::PeerId) {
        let dialing = self.relay_client.punch_dialing(&id);
        let addrs: Vec<Multiaddr> = self.identified.get(&id).cloned().unwrap_or_default();
        if dialing || addrs.is_empty() || !self.swarm.behaviour().dcutr.is_enabled() {
            return;
        }
        let opts = DialOpts::peer_id(id).addresses(addrs).condition(PeerCondition::Always).build();
        let cid = opts.connection_id();
        if self.swarm.dial(opts).is_ok() {
            self.relay_client.punch_dials.insert(cid, id);
            (self.events)(NetEvent::HolePunch {
                peer: to_core(&id),
                stage: HolePunchStage::Started,
            });
        }
    }

    /// One hole-punch attempt for `peer` ended without a direct connection (its own entry
    /// is already gone); the core hears of it once no other attempt is left.
    fn punch_failed(&mut self, peer: libp2p::PeerId) {
        (self.events)(NetEvent::HolePunch { peer: to_core(&peer), stage: HolePunchStage::Failed });
        let others = self.relay_client.punch_under_way(&peer);
        if !others && self.relay_client.punch_asked.remove(&peer) {
            (self.events)(NetEvent::HolePunchFailed { peer: to_core(&peer) });
        }
    }

    /// Which hub relays a connection over the `/p2p-circuit` address `addr`.
    fn relay_of(&self, addr: &Multiaddr) -> Option<libp2p::PeerId> {
        let (relay_addr, named) = relay_part(addr);
        if named.is_some() {
            return named;
        }
        // An accepted circuit carries the relay connection's address, not the relay's id.
        let by_addr = self.conns.values().find(|i| {
            i.path == Path::Direct
                && i.dialed.as_ref().is_some_and(|d| without_peer(d) == relay_addr)
        });
        if let Some(i) = by_addr {
            return Some(i.peer);
        }
        self.relay_client.only_held_hub()
    }

    fn on_connection_established(
        &mut self,
        peer_id: libp2p::PeerId,
        connection_id: ConnectionId,
        endpoint: &libp2p::core::ConnectedPoint,
    ) {
        self.dials.remove(&connection_id);
        let punched = self.relay_client.punch_dials.remove(&connection_id).is_some();
        let had_direct = self.direct_conn(&peer_id).is_some();
        let had_relayed = self.by_peer.get(&peer_id).is_some_and(|ids| {
            ids.iter()
                .filter_map(|c| self.by_conn.get(c))
                .any(|cid| self.conns.get(cid).is_some_and(|i| i.path.is_relayed()))
        });
        let (path, limit, dialed) = if endpoint.is_relayed() {
            let addr = match endpoint {
                libp2p::core::ConnectedPoint::Dialer { address, .. } => address,
                libp2p::core::ConnectedPoint::Listener { local_addr, .. } => local_addr,
            };
            let hub = self.relay_of(addr);
            let limit = if endpoint.is_dialer() {
                hub.and_then(|h| self.relay_client.take_out_limit(h))
            } else {
                self.relay_client.in_limits.remove(&peer_id)
            };
            // An unknown relay is still a relay: id 0 says "relayed, by whom unknown".
            let via = hub.map_or_else(|| PeerId::from_u64(0), |h| to_core(&h));
            (Path::Relayed { via }, limit, None)
        } else {
            let dialed = match endpoint {
                libp2p::core::ConnectedPoint::Dialer { address, .. } => Some(address.clone()),
                libp2p::core::ConnectedPoint::Listener { .. } => None,
            };
            (Path::Direct, None, dialed)
        };
        self.next_conn += 1;
        let conn = ConnId(self.next_conn);
        self.conns.insert(connection_id, ConnInfo { peer: peer_id, conn, path, limit, dialed });
        self.by_conn.insert(conn, connection_id);
        self.by_peer.entry(peer_id).or_default().insert(conn);
        match path {
            Path::Relayed { via } => {
                tracing::info!(peer = %peer_id, %via, ?limit, inbound = !endpoint.is_dialer(), "peer connected through a relay");
                // DCUtR starts by itself on the side that accepted the circuit.
                if !endpoint.is_dialer() && self.swarm.behaviour().dcutr.is_enabled() {
                    self.relay_client.punching.insert(peer_id);
                    (self.events)(NetEvent::HolePunch {
                        peer: to_core(&peer_id),
                        stage: HolePunchStage::Started,
                    });
                }
            }
            Path::Direct if had_relayed && !had_direct => {
                tracing::info!(peer = %peer_id, "connection to a relayed peer upgraded to direct");
            }
            Path::Direct => {}
        }
        // Whichever side's dial got through, a direct connection ends the attempt: DCUtR
        // itself only credits its own dial (on loopback and behind some NATs the other
        // side's wins, and ours would then be reported as failed).
        let attempt = self.relay_client.punching.remove(&peer_id);
        if path == Path::Direct && (punched || attempt) && !had_direct {
            self.relay_client.punch_asked.remove(&peer_id);
            (self.events)(NetEvent::HolePunch {
                peer: to_core(&peer_id),
                stage: HolePunchStage::Succeeded,
            });
        } else if attempt {
            self.relay_client.punching.insert(peer_id);
        }
        if path == Path::Direct {
            self.relay_client.punch_asked.remove(&peer_id);
        }
        (self.events)(NetEvent::PeerConnected { peer: to_core(&peer_id), conn, path, limit });
    }

    fn on_connection_closed(&mut self, connection_id: ConnectionId) {
        let Some(info) = self.conns.remove(&connection_id) else { return };
        self.by_conn.remove(&info.conn);
        let mut relayed_left = false;
        if let Some(set) = self.by_peer.get_mut(&info.peer) {
            set.remove(&info.conn);
            relayed_left = set
                .iter()
                .filter_map(|c| self.by_conn.get(c))
                .any(|cid| self.conns.get(cid).is_some_and(|i| i.path.is_relayed()));
            if set.is_empty() {
                self.by_peer.remove(&info.peer);
                self.identified.remove(&info.peer);
                self.relay_client.in_limits.remove(&info.peer);
                // Nothing to wait for any more: the dial reconnects to the hub or fails.
                let waiting = self.relay_client.parked.take_hub(info.peer);
                self.dial_parked(waiting);
            }
        }
        if info.path.is_relayed() {
            tracing::info!(peer = %info.peer, conn = %info.conn, "relayed connection closed");
            if !relayed_left && self.relay_client.punching.remove(&info.peer) {
                self.punch_failed(info.peer);
            }
        }
        (self.events)(NetEvent::PeerDisconnected { peer: to_core(&info.peer), conn: info.conn });
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<SwarmBehaviourEvent>) {
        match event {
            SwarmEvent::ConnectionEstablished { peer_id, connection_id, endpoint, .. } => {
                self.on_connection_established(peer_id, connection_id, &endpoint)
            }
            SwarmEvent::ConnectionClosed { connection_id, .. } => {
                self.on_connection_closed(connection_id)
            }
            SwarmEvent::OutgoingConnectionError { connection_id, peer_id, error } => {
                if let Some(peer) = self.dials.remove(&connection_id) {
                    tracing::debug!(%peer, %error, "dial failed");
                    (self.events)(NetEvent::DialFailed { peer: to_core(&peer) });
                } else if let Some(peer) = self.relay_client.punch_dials.remove(&connection_id) {
                    tracing::info!(%peer, %error, "direct dial to a relayed peer failed");
                    self.punch_failed(peer);
                } else {
                    // DCUtR's and the relay client's own dials: they report for themselves.
                    tracing::debug!(peer = ?peer_id, %error, "dial failed");
                }
            }
            SwarmEvent::NewListenAddr { listener_id, address } => {
                if self.relay_client.is_reservation(listener_id) {
                    tracing::debug!(%address, "reachable through a relay");
                    return;
                }
                if self.relay_admitted.is_some() {
                    // Reservations tell the client where the relay is; libp2p clients refuse
                    // one without addresses. A hub is reachable where it listens.
                    self.swarm.add_external_address(address.clone());
                }
                self.listen_addrs.push((listener_id, address));
                self.pending_listeners.remove(&listener_id);
                self.publish_listening();
            }
            SwarmEvent::ExpiredListenAddr { listener_id, address } => {
                if self.relay_admitted.is_some() {
                    self.swarm.remove_external_address(&address);
                }
                self.listen_addrs.retain(|(l, a)| (*l, a) != (listener_id, &address));
                self.publish_listening();
            }
            SwarmEvent::ListenerClosed { listener_id, reason, .. } => {
                self.on_listener_closed(listener_id, reason.err().map(|e| e.to_string()));
                self.listen_addrs.retain(|(l, _)| *l != listener_id);
                self.pending_listeners.remove(&listener_id);
                self.publish_listening();
            }
            // libp2p-ping no longer closes a connection whose pings time out; a half-dead
            // TCP connection would otherwise hold streams (and the core's sessions) forever.
            SwarmEvent::Behaviour(SwarmBehaviourEvent::Ping(ping::Event {
                connection,
                result: Err(ping::Failure::Timeout | ping::Failure::Other { .. }),
                ..
            })) => {
                self.swarm.close_connection(connection);
            }
            SwarmEvent::Behaviour(SwarmBehaviourEvent::Relay(event)) => self.log_relay(event),
            SwarmEvent::Behaviour(SwarmBehaviourEvent::RelayClient(event)) => {
                self.on_relay_client(event)
            }
            SwarmEvent::Behaviour(SwarmBehaviourEvent::Dcutr(event)) => self.on_dcutr(event),
            SwarmEvent::Behaviour(SwarmBehaviourEvent::Autonat(event)) => self.on_autonat(event),
            SwarmEvent::Behaviour(SwarmBehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                let direct: Vec<Multiaddr> = info
                    .listen_addrs
                    .into_iter()
                    .filter(|a| !a.iter().any(|p| p == multiaddr::Protocol::P2pCircuit))
                    .take(MAX_ADDRS_PER_PEER)
                    .collect();
                if let Some(ip) = ip_of(&info.observed_addr) {
                    (self.events)(NetEvent::ObservedAddress { ip, by: Some(to_core(&peer_id)) });
                }
                if self.by_peer.contains_key(&peer_id) {
                    self.identified.insert(peer_id, direct);
                    // Identify emits the address it saw us at right after this event, and
                    // DCUtR reads the addresses only once the circuit is up, a round trip on.
                    let waiting = self.relay_client.parked.take_hub(peer_id);
                    self.dial_parked(waiting);
                    // A `HolePunch` that came before identify could not dial yet.
                    if self.relay_client.punch_asked.contains(&peer_id)
                        && self.direct_conn(&peer_id).is_none()
                    {
                        self.punch_dial(peer_id);
                    }
                }
            }
            // A hub whose identify failed will not bring addresses: its dials go now.
            SwarmEvent::Behaviour(SwarmBehaviourEvent::Identify(identify::Event::Error {
                peer_id,
                ..
            })) => {
                let waiting = self.relay_client.parked.take_hub(peer_id);
                self.dial_parked(waiting);
            }
            SwarmEvent::ExternalAddrConfirmed { address } => {
                if let Some(ip) = ip_of(&address) {
                    (self.events)(NetEvent::ObservedAddress { ip, by: None });
                }
            }
            // Incoming handshake failures, listener errors (the listener closes afterwards),
            // other identify reports, successful pings: nothing the core acts on.
            _ => {}
        }
    }

    fn on_listener_closed(&mut self, listener: ListenerId, error: Option<String>) {
        let Some((hub, r)) = self.relay_client.take_reservation(listener) else { return };
        if r.accepted {
            tracing::warn!(%hub, ?error, "relay reservation lost");
            (self.events)(NetEvent::ReservationLost { hub: to_core(&hub) });
        } else {
            tracing::info!(%hub, ?error, "relay reservation failed");
            (self.events)(NetEvent::ReservationFailed { hub: to_core(&hub) });
        }
    }

    fn on_relay_client(&mut self, event: relay::client::Event) {
        match event {
            relay::client::Event::ReservationReqAccepted { relay_peer_id, renewal, limit } => {
                let Some(r) = self.relay_client.reservations.get_mut(&relay_peer_id) else {
                    return;
                };
                if r.accepted {
                    tracing::debug!(hub = %relay_peer_id, renewal, "relay reservation renewed");
                    return;
                }
                r.accepted = true;
                tracing::info!(hub = %relay_peer_id, ?limit, "relay reservation accepted: reachable through the hub");
                (self.events)(NetEvent::ReservationAccepted { hub: to_core(&relay_peer_id) });
            }
            relay::client::Event::OutboundCircuitEstablished { relay_peer_id, limit } => {
                if let Some(l) = circuit_limit!(limit) {
                    self.relay_client.push_out_limit(relay_peer_id, l);
                }
            }
            relay::client::Event::InboundCircuitEstablished { src_peer_id, limit } => {
                if let Some(l) = circuit_limit!(limit) {
                    self.relay_client.in_limits.insert(src_peer_id, l);
                }
            }
        }
    }

    fn on_dcutr(&mut self, event: dcutr::Event) {
        let peer = event.remote_peer_id;
        let ours = self.relay_client.punching.remove(&peer);
        match event.result {
            Ok(_) => {
                tracing::info!(%peer, "hole punch succeeded: direct connection");
                if ours {
                    self.relay_client.punch_asked.remove(&peer);
                    (self.events)(NetEvent::HolePunch {
                        peer: to_core(&peer),
                        stage: HolePunchStage::Succeeded,
                    });
                }
            }
            Err(error) => {
                tracing::info!(%peer, %error, "hole punch failed");
                if ours {
                    self.punch_failed(peer);
                }
            }
        }
    }

    fn on_autonat(&mut self, event: autonat::Event) {
        if let autonat::Event::StatusChanged { old, new } = event {
            let verdict = match new {
                autonat::NatStatus::Public(_) => Reachability::Public,
                autonat::NatStatus::Private => Reachability::Private,
                autonat::NatStatus::Unknown => Reachability::Unknown,
            };
            tracing::info!(?old, ?new, "autonat: reachability changed");
            (self.events)(NetEvent::Reachability(verdict));
        }
    }

    /// The relay acts on its own; its events only go to the logs.
    fn log_relay(&self, event: relay::Event) {
        let admitted = |peer: &libp2p::PeerId| {
            self.relay_admitted.as_ref().is_some_and(|a| a.contains(&to_core(peer)))
        };
        match event {
            relay::Event::ReservationReqAccepted { src_peer_id, renewed } => {
                tracing::info!(peer = %src_peer_id, renewed, "relay: reservation accepted")
            }
            relay::Event::ReservationReqDenied { src_peer_id, status } => tracing::info!(
                peer = %src_peer_id,
                ?status,
                admitted = admitted(&src_peer_id),
                "relay: reservation denied"
            ),
            relay::Event::ReservationClosed { src_peer_id } => {
                tracing::debug!(peer = %src_peer_id, "relay: reservation closed")
            }
            relay::Event::ReservationTimedOut { src_peer_id } => {
                tracing::debug!(peer = %src_peer_id, "relay: reservation timed out")
            }
            relay::Event::CircuitReqAccepted { src_peer_id, dst_peer_id } => tracing::info!(
                src = %src_peer_id,
                dst = %dst_peer_id,
                "relay: circuit opened"
            ),
            relay::Event::CircuitReqDenied { src_peer_id, dst_peer_id, status } => tracing::info!(
                src = %src_peer_id,
                dst = %dst_peer_id,
                ?status,
                admitted = admitted(&src_peer_id),
                "relay: circuit denied"
            ),
            relay::Event::CircuitClosed { src_peer_id, dst_peer_id, error } => tracing::info!(
                src = %src_peer_id,
                dst = %dst_peer_id,
                error = ?error,
                "relay: circuit closed"
            ),
            other => tracing::debug!(event = ?other, "relay event"),
        }
    }

    fn publish_listening(&mut self) {
        let addrs = self.listen_addrs.iter().map(|(_, a)| a.clone()).collect();
        let ready = self.pending_listeners.is_empty();
        self.listening.send_replace(Listening { addrs, ready });
    }
}

/// libp2p's autonat (v1) settings for `a`.
fn autonat_settings(a: AutonatConfig) -> autonat::Config {
    autonat::Config {
        boot_delay: a.boot_delay,
        retry_interval: a.retry_interval,
        use_connected: a.probe,
        only_global_ips: !a.private_ips,
        // One verdict is enough to act on; later probes still correct it.
        confidence_max: 1,
        ..autonat::Config::default()
    }
}

fn build_swarm(
    config: &NetConfig,
    to_actor: mpsc::UnboundedSender<NetEvent>,
    inbound: InboundGate,
) -> Result<Swarm<SwarmBehaviour>, NetError> {
    let streams = config.limits.max_streams_per_connection.clamp(1, YAMUX_MAX_STREAMS_CEILING);
    let yamux_config = Yamux::new(streams);
    let quic_streams = u32::try_from(streams).unwrap_or(u32::MAX);

    let limits = config.limits;
    let connection_limits = ConnectionLimits::default()
        .with_max_established_incoming(Some(limits.max_established_incoming))
        .with_max_established_outgoing(Some(limits.max_established_outgoing))
        .with_max_established_per_peer(Some(limits.max_established_per_peer))
        .with_max_pending_incoming(Some(limits.max_pending_incoming))
        .with_max_pending_outgoing(Some(limits.max_pending_outgoing));
    let idle = config.idle_connection_timeout;

    let relay_yamux = yamux_config.clone();
    // What `with_tcp` builds, but with our `Noise` and `Yamux` (both for bulk
    // data; see their modules). The builder's connection timeout bounds the
    // whole upgrade.
    let tcp_transport = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
        .upgrade(libp2p::core::upgrade::Version::V1Lazy)
        .authenticate(Noise::new(&config.keypair)?)
        .multiplex(yamux_config);
    let relay_client = config.relay_client;
    let autonat_config = config.autonat;
    let swarm = SwarmBuilder::with_existing_identity(config.keypair.clone())
        .with_tokio()
        .with_quic_config(|mut c| {
            c.max_concurrent_stream_limit = quic_streams;
            c
        })
        .with_other_transport(move |_| tcp_transport)
        .unwrap_or_else(|never| match never {})
        .with_dns()
        .map_err(NetError::Dns)?
        .with_relay_client(Noise::new, move || relay_yamux)?
        .with_behaviour(|key, client| {
            let local = key.public().to_peer_id();
            SwarmBehaviour {
                limits: connection_limits::Behaviour::new(connection_limits),
                per_ip: crate::per_ip::Behaviour::new(limits.max_connections_per_ip),
                streams: streams::ByteStreams::new(to_actor, inbound),
                identify: identify::Behaviour::new(
                    identify::Config::new(IDENTIFY_PROTOCOL.to_owned(), key.public())
                        .with_agent_version(format!("meshproxy/{}", env!("CARGO_PKG_VERSION"))),
                ),
                ping: ping::Behaviour::default(),
                relay: Toggle::from(config.relay.as_ref().map(|r| relay_behaviour(local, r))),
                relay_client: Toggle::from(relay_client.then_some(client)),
                dcutr: Toggle::from(relay_client.then(|| dcutr::Behaviour::new(local))),
                autonat: Toggle::from(
                    autonat_config.map(|a| autonat::Behaviour::new(local, autonat_settings(a))),
                ),
            }
        })
        .unwrap_or_else(|never| match never {})
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
        .build();
    Ok(swarm)
}

/// Our byte-stream protocols as a libp2p behaviour: streams are opened on request and
/// inbound streams go to the actor, up to [`crate::port::INBOUND_STREAM_QUEUE`] waiting
/// there (more are reset and counted).
mod streams {
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

    use super::{stream_protocol, to_core};
    use crate::port::{shed_inbound_stream, InboundGate, NetEvent};

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

        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
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

    /// Accepts either of our protocols inbound and says which one was chosen.
    #[derive(Clone, Copy, Debug)]
    pub(super) struct Inbound;

    impl UpgradeInfo for Inbound {
        type Info = StreamProtocol;
        type InfoIter = std::array::IntoIter<StreamProtocol, 2>;

        fn protocol_info(&self) -> Self::InfoIter {
            [stream_protocol(Protocol::Proxy), stream_protocol(Protocol::Hub)].into_iter()
        }
    }

    impl InboundUpgrade<Stream> for Inbound {
        type Output = (Stream, Protocol);
        type Error = Infallible;
        type Future = Ready<Result<Self::Output, Infallible>>;

        fn upgrade_inbound(self, stream: Stream, info: StreamProtocol) -> Self::Future {
            let protocol =
                if info.as_ref() == Protocol::Hub.name() { Protocol::Hub } else { Protocol::Proxy };
            ready(Ok((stream, protocol)))
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

        fn poll(
            &mut self,
            _: &mut Context<'_>,
        ) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
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
            _: &mut Context<'_>,
        ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, Reply, Infallible>> {
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
                ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                    protocol: stream,
                    info: reply,
                }) => reply.opened(stream),
                // Unsupported protocol, negotiation timeout, I/O error: dropping the reply
                // refuses the stream.
                ConnectionEvent::DialUpgradeError(DialUpgradeError { info: reply, .. }) => {
                    drop(reply)
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parked_dials_go_when_due_or_when_their_hub_is_done_and_stay_bounded() {
        let hub = || identity::Keypair::generate_ed25519().public().to_peer_id();
        let (h1, h2) = (hub(), hub());
        let t0 = tokio::time::Instant::now();
        let step = Duration::from_millis(500);
        let mut parked = ParkedDials::default();
        assert_eq!(parked.next_due(), None, "nothing waits: no timer");
        assert!(parked.park(PeerId::from_u64(1), h1, t0));
        assert!(parked.park(PeerId::from_u64(2), h2, t0 + step));
        assert!(parked.park(PeerId::from_u64(3), h1, t0 + step * 2));
        assert_eq!(parked.next_due(), Some(t0 + IDENTIFY_WAIT));
        // Not due a moment before the wait ends; the first alone at its end.
        assert!(parked.take_due(t0 + IDENTIFY_WAIT - step / 2).is_empty());
        let due = parked.take_due(t0 + IDENTIFY_WAIT);
        assert_eq!(due.iter().map(|d| d.peer).collect::<Vec<_>>(), [PeerId::from_u64(1)]);
        assert_eq!(parked.next_due(), Some(t0 + step + IDENTIFY_WAIT));
        // Hub 1's identify (or its end) lets its dial go; hub 2's stays, still timed.
        let h1_dials = parked.take_hub(h1);
        assert_eq!(h1_dials.iter().map(|d| d.peer).collect::<Vec<_>>(), [PeerId::from_u64(3)]);
        assert!(parked.take_hub(h1).is_empty(), "each dial goes once");
        assert_eq!(parked.next_due(), Some(t0 + step + IDENTIFY_WAIT));
        assert_eq!(parked.take_due(t0 + step * 10).len(), 1);
        assert_eq!(parked.next_due(), None);
        // Bounded: beyond the cap a dial is not held (the caller dials at once).
        for i in 0..MAX_PARKED_DIALS {
            assert!(parked.park(PeerId::from_u64(i as u64), h2, t0), "{i}");
        }
        assert!(!parked.park(PeerId::from_u64(0), h2, t0));
        assert_eq!(parked.take_hub(h2).len(), MAX_PARKED_DIALS);
    }

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

    #[tokio::test]
    async fn a_reset_reads_as_a_reset_even_when_the_write_probe_must_wait() {
        use tokio::io::AsyncReadExt as _;
        // A reset stream whose command queue is full at first (yamux answers the probe
        // `Pending`): the end is undecided until the probe can tell.
        let reset = Ended { pending: 3, then: std::io::ErrorKind::BrokenPipe };
        let mut stream = streams::PeerStream::new(reset);
        let err = stream.read(&mut [0; 8]).await.expect_err("a reset, not an end");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
        assert!(stream.read(&mut [0; 8]).await.is_err(), "and stays one");
        // A finished stream (the write half still works) is a clean end, waiting or not.
        let finished = Ended { pending: 3, then: std::io::ErrorKind::Other };
        let mut stream = streams::PeerStream::new(finished);
        assert_eq!(stream.read(&mut [0; 8]).await.expect("an end"), 0);
        assert_eq!(stream.read(&mut [0; 8]).await.expect("an end"), 0);
    }

    #[test]
    fn peer_ids_round_trip() {
        for _ in 0..8 {
            let id = identity::Keypair::generate_ed25519().public().to_peer_id();
            let core = to_core(&id);
            assert_eq!(core.as_bytes(), id.to_bytes().as_slice());
            assert_eq!(core.as_bytes().len(), 38);
            assert_eq!(from_core(&core), Some(id));
        }
    }

    #[test]
    fn synthetic_core_ids_are_not_libp2p_ids() {
        assert_eq!(from_core(&PeerId::from_u64(7)), None);
    }

    #[test]
    fn the_relay_limiter_lets_admitted_peers_through_and_nobody_else() {
        let admitted = AdmittedPeers::default();
        let mut limiter = admitted.limiter("reservation");
        let peer = identity::Keypair::generate_ed25519().public().to_peer_id();
        let stranger = identity::Keypair::generate_ed25519().public().to_peer_id();
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
        let now = std::time::Instant::now();
        assert!(!limiter(peer, &addr, now), "nobody is admitted yet");
        // The runner's clone writes the very list the limiter reads.
        admitted.clone().admit(to_core(&peer));
        assert_eq!(admitted.len(), 1);
        // No rate limit for admitted peers: libp2p's defaults would refuse after a burst.
        for _ in 0..100 {
            assert!(limiter(peer, &addr, now));
        }
        assert!(!limiter(stranger, &addr, now));
        admitted.revoke(&to_core(&peer));
        assert!(!limiter(peer, &addr, now), "revoked");
        assert!(admitted.is_empty());
        admitted.revoke(&to_core(&peer));
        assert!(admitted.is_empty(), "revoking twice is harmless");
    }

    #[test]
    fn relay_limits_are_clamped_to_what_libp2p_can_send() {
        let config = RelayServerConfig {
            limits: RelayLimits {
                max_circuit_duration: Duration::from_secs(u64::MAX),
                reservation_duration: Duration::from_secs(u64::MAX),
                max_circuit_bytes: 0,
                ..RelayLimits::default()
            },
            admitted: AdmittedPeers::default(),
        };
        // Unclamped, libp2p would panic on the first reservation.
        let c = relay_config(&config);
        assert_eq!(c.max_circuit_duration, RELAY_MAX_DURATION);
        assert_eq!(c.reservation_duration, RELAY_MAX_DURATION);
        assert!(RELAY_MAX_DURATION.as_secs() <= u64::from(u32::MAX));
        assert_eq!(c.max_circuit_bytes, 1, "0 would be advertised as a 0-byte limit");
        // Only the allow-list limits who may reserve or open circuits: the default rate
        // limiters are replaced, not added to.
        assert_eq!(c.reservation_rate_limiters.len(), 1);
        assert_eq!(c.circuit_src_rate_limiters.len(), 1);
        let d = relay_config(&RelayServerConfig::default());
        assert_eq!(d.max_circuit_bytes, 1 << 30);
        assert_eq!(d.max_circuit_duration, Duration::from_secs(3600));
    }

    #[test]
    fn circuit_addresses_split_into_the_relay_and_its_id() {
        let hub = identity::Keypair::generate_ed25519().public().to_peer_id();
        let peer = identity::Keypair::generate_ed25519().public().to_peer_id();
        let named: Multiaddr =
            format!("/ip4/10.0.0.1/tcp/4001/p2p/{hub}/p2p-circuit/p2p/{peer}").parse().unwrap();
        let base: Multiaddr = "/ip4/10.0.0.1/tcp/4001".parse().unwrap();
        assert_eq!(relay_part(&named), (base.clone(), Some(hub)));
        // What the accepting side sees: the relay connection's address, no id.
        let accepted: Multiaddr = "/ip4/10.0.0.1/tcp/4001/p2p-circuit".parse().unwrap();
        assert_eq!(relay_part(&accepted), (base.clone(), None));
        let with_id: Multiaddr = format!("/ip4/10.0.0.1/tcp/4001/p2p/{hub}").parse().unwrap();
        assert_eq!(without_peer(&with_id), base);
        assert_eq!(without_peer(&base), base);
    }

    #[test]
    fn addrs_round_trip_and_garbage_is_rejected() {
        let addr: Multiaddr = "/ip4/127.0.0.1/udp/4001/quic-v1".parse().unwrap();
        assert_eq!(addr_from_core(&addr_to_core(&addr)), Some(addr));
        assert_eq!(addr_from_core(&PeerAddr(vec![0xff, 0xff, 0xff])), None);
    }
}
