//! The network actor itself: [`NetworkActor`] owns the swarm, runs the task loop, turns
//! commands into swarm calls (dials, streams) and swarm events into [`NetEvent`]s, and keeps
//! the tables behind them: connections by libp2p id, core id and peer, dials under way,
//! identify's addresses, and listen addresses (published through [`NetHandle`]). Its relay
//! client part lives in `relay_client.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use futures::StreamExt as _;
use libp2p::{
    autonat,
    core::transport::ListenerId,
    identify, multiaddr, ping, relay,
    swarm::{dial_opts::DialOpts, dial_opts::PeerCondition, ConnectionId, SwarmEvent},
    Multiaddr, Swarm,
};
use meshproxy_core::{
    ids::{ConnId, PeerId, StreamId},
    io::{CircuitLimit, Path, Protocol, Reachability},
    record::PeerAddr,
};
use tokio::sync::{mpsc, watch};

use super::config::{AdmittedPeers, NetConfig};
use super::convert::{addr_from_core, from_core, ip_of, to_core, without_peer};
use super::negotiation::refused_by_peer;
use super::relay_client::RelayClient;
use super::swarm::{build_swarm, NetError, SwarmBehaviour, SwarmBehaviourEvent};
use crate::p2p::{HolePunchStage, InboundGate, NetCommand, NetEvent};

/// How many commands the runner may queue before `send` waits.
const COMMAND_QUEUE: usize = 1024;
/// Most addresses kept per peer (identify, dials).
const MAX_ADDRS_PER_PEER: usize = 16;
/// Most peers whose dial addresses are kept.
const MAX_DIAL_ADDR_PEERS: usize = 4096;

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
    pub(super) swarm: Swarm<SwarmBehaviour>,
    pub(super) events: F,
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
    pub(super) conns: HashMap<ConnectionId, ConnInfo>,
    pub(super) by_conn: HashMap<ConnId, ConnectionId>,
    pub(super) by_peer: BTreeMap<libp2p::PeerId, BTreeSet<ConnId>>,
    next_conn: u64,
    /// Dials the core asked for: only their failures are its `DialFailed`s (DCUtR and the
    /// relay client dial too, and answer for themselves).
    pub(super) dials: HashMap<ConnectionId, libp2p::PeerId>,
    /// Where connected peers say they listen (identify), direct addresses only.
    pub(super) identified: HashMap<libp2p::PeerId, Vec<Multiaddr>>,
    /// The addresses of the core's last direct `Dial` of each peer (how to reach a hub
    /// for a reservation or circuit before any connection to it exists).
    dial_addrs: HashMap<libp2p::PeerId, Vec<Multiaddr>>,
    /// Our use of the hubs' relays: reservations, relayed dials, circuit caps, hole punches.
    pub(super) relay_client: RelayClient,
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
pub(super) struct ConnInfo {
    pub(super) peer: libp2p::PeerId,
    pub(super) conn: ConnId,
    pub(super) path: Path,
    pub(super) limit: Option<CircuitLimit>,
    /// The address we dialed (direct outbound connections only): known to reach the peer.
    pub(super) dialed: Option<Multiaddr>,
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
            NetCommand::Admit { peer } => {
                if let Some(admitted) = &self.relay_admitted {
                    admitted.admit(peer);
                }
            }
            NetCommand::Revoke { peer } => {
                if let Some(admitted) = &self.relay_admitted {
                    admitted.revoke(&peer);
                }
            }
        }
    }

    pub(super) fn relay_client_on(&self) -> bool {
        self.swarm.behaviour().relay_client.is_enabled()
    }

    /// Announces an existing connection again (the answer to a `Dial` or `HolePunch`
    /// that some connection already satisfies).
    pub(super) fn announce(&self, cid: ConnectionId) {
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
    pub(super) fn preferred_conn(&self, peer: &libp2p::PeerId) -> Option<ConnectionId> {
        let ids = self.by_peer.get(peer)?;
        let infos = ids.iter().rev().filter_map(|c| self.by_conn.get(c));
        let direct =
            infos.clone().find(|cid| self.conns.get(cid).is_some_and(|i| i.path == Path::Direct));
        direct.or_else(|| ids.iter().next_back().and_then(|c| self.by_conn.get(c))).copied()
    }

    pub(super) fn direct_conn(&self, peer: &libp2p::PeerId) -> Option<ConnectionId> {
        self.preferred_conn(peer)
            .filter(|cid| self.conns.get(cid).is_some_and(|i| i.path == Path::Direct))
    }

    /// Where to reach `peer` directly: the address of a live outbound connection, else
    /// what the core last gave to dial it, else where it says it listens.
    pub(super) fn addr_of(&self, peer: &libp2p::PeerId) -> Option<Multiaddr> {
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
            // A peer that refuses ping (lazily proposed, see negotiation.rs) is not dead.
            SwarmEvent::Behaviour(SwarmBehaviourEvent::Ping(ping::Event {
                connection,
                peer,
                result: Err(failure),
            })) => match failure {
                ping::Failure::Other { error } if refused_by_peer(error.as_ref()) => {
                    tracing::debug!(%peer, "the peer does not offer ping");
                }
                ping::Failure::Timeout | ping::Failure::Other { .. } => {
                    self.swarm.close_connection(connection);
                }
                ping::Failure::Unsupported => {}
            },
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
