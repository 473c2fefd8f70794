//! The actor as a client of the hubs' relays: [`RelayClient`] holds the state (reservations,
//! dials parked until the hub's identify, circuit caps, hole punches), and the `impl
//! NetworkActor` block here acts on it: `Reserve`/`Unreserve`, `Dial { via }`, `HolePunch`,
//! and the relay client's, DCUtR's and reservation listeners' events.

use std::collections::{HashMap, HashSet, VecDeque};

use libp2p::{
    core::transport::ListenerId,
    dcutr, multiaddr, relay,
    swarm::{dial_opts::DialOpts, dial_opts::PeerCondition, ConnectionId},
    Multiaddr,
};
use meshproxy_core::{ids::PeerId, io::CircuitLimit, io::Path};

use super::actor::NetworkActor;
use super::convert::{circuit_limit, from_core, relay_part, to_core, without_peer};
use super::parked::{ParkedDial, ParkedDials};
use crate::p2p::{HolePunchStage, NetEvent};

/// What this node holds as a client of the hubs' relays: reservations at hubs, dials
/// through hubs waiting for the hub's identify, the caps relays announced for circuits
/// whose connections are not up yet, and the hole punches (DCUtR and our own direct dials)
/// that try to replace relayed connections by direct ones.
#[derive(Debug, Default)]
pub(super) struct RelayClient {
    /// Relay reservations asked for, by hub.
    pub(super) reservations: HashMap<libp2p::PeerId, Reservation>,
    /// Dials through a hub that wait for the hub's identify (see
    /// [`NetworkActor::dial_via`]).
    pub(super) parked: ParkedDials,
    /// Caps the relays announced for our outbound circuits, by relay, in order, until the
    /// connection over each circuit is up.
    pub(super) out_limits: HashMap<libp2p::PeerId, VecDeque<CircuitLimit>>,
    /// The same for inbound circuits, by the peer that opened them.
    pub(super) in_limits: HashMap<libp2p::PeerId, CircuitLimit>,
    /// Direct dials made to answer a `HolePunch`.
    pub(super) punch_dials: HashMap<ConnectionId, libp2p::PeerId>,
    /// Peers whose relayed connection we accepted, while DCUtR works on it.
    pub(super) punching: HashSet<libp2p::PeerId>,
    /// Peers whose `HolePunch` the core still waits to hear about.
    pub(super) punch_asked: HashSet<libp2p::PeerId>,
}

impl RelayClient {
    /// Whether `listener` is a reservation's `/p2p-circuit` listener.
    pub(super) fn is_reservation(&self, listener: ListenerId) -> bool {
        self.reservations.values().any(|r| r.listener == listener)
    }

    /// Takes the reservation whose listener is `listener`, with its hub.
    pub(super) fn take_reservation(
        &mut self,
        listener: ListenerId,
    ) -> Option<(libp2p::PeerId, Reservation)> {
        let hub =
            self.reservations.iter().find(|(_, r)| r.listener == listener).map(|(h, _)| *h)?;
        let r = self.reservations.remove(&hub)?;
        Some((hub, r))
    }

    /// The hub of the one reservation granted, if exactly one is.
    pub(super) fn only_held_hub(&self) -> Option<libp2p::PeerId> {
        let mut held = self.reservations.iter().filter(|(_, r)| r.accepted).map(|(h, _)| *h);
        match (held.next(), held.next()) {
            (Some(only), None) => Some(only),
            _ => None,
        }
    }

    /// Remembers the caps `relay` announced for an outbound circuit (at most
    /// [`MAX_PENDING_LIMITS`] per relay; the oldest goes first).
    pub(super) fn push_out_limit(&mut self, relay: libp2p::PeerId, limit: CircuitLimit) {
        let q = self.out_limits.entry(relay).or_default();
        if q.len() >= MAX_PENDING_LIMITS {
            q.pop_front();
        }
        q.push_back(limit);
    }

    /// Takes the caps for the oldest outbound circuit through `relay`.
    pub(super) fn take_out_limit(&mut self, relay: libp2p::PeerId) -> Option<CircuitLimit> {
        self.out_limits.get_mut(&relay).and_then(VecDeque::pop_front)
    }

    /// Whether a direct dial answering a `HolePunch` for `peer` is under way.
    pub(super) fn punch_dialing(&self, peer: &libp2p::PeerId) -> bool {
        self.punch_dials.values().any(|p| p == peer)
    }

    /// Whether any hole-punch attempt for `peer` is under way (DCUtR or our own dial).
    pub(super) fn punch_under_way(&self, peer: &libp2p::PeerId) -> bool {
        self.punching.contains(peer) || self.punch_dialing(peer)
    }
}

/// A reservation at one hub: its `/p2p-circuit` listener and whether the hub granted it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Reservation {
    listener: ListenerId,
    accepted: bool,
}

/// Most circuit caps remembered per relay before their connections come up.
const MAX_PENDING_LIMITS: usize = 64;

impl<F: Fn(NetEvent) + Send + 'static> NetworkActor<F> {
    /// A new connection to `peer` through a circuit at `hub`'s relay, whatever else exists.
    ///
    /// While we are connected to the hub but its identify has not come yet, the dial waits
    /// for it (at most [`IDENTIFY_WAIT`]). DCUtR's hole punch offers the peer the addresses
    /// hubs saw us at, which identify brings: a circuit that came up before them made the
    /// punch fail at once with `NoAddresses` (1 run in 10 of `tests/it/relay_client.rs`, which
    /// dials through a hub right after connecting to it, as a freshly started client would).
    pub(super) fn dial_via(&mut self, peer: PeerId, hub: PeerId) {
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
    pub(super) fn dial_parked(&mut self, dials: Vec<ParkedDial>) {
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

    pub(super) fn reserve(&mut self, hub: PeerId) {
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

    pub(super) fn unreserve(&mut self, hub: PeerId) {
        let Some(hub_id) = from_core(&hub) else { return };
        if let Some(r) = self.relay_client.reservations.remove(&hub_id) {
            tracing::info!(hub = %hub_id, "relay reservation dropped");
            self.swarm.remove_listener(r.listener);
        }
    }

    pub(super) fn hole_punch(&mut self, peer: PeerId) {
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
    pub(super) fn punch_dial(&mut self, id: libp2p::PeerId) {
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
    pub(super) fn punch_failed(&mut self, peer: libp2p::PeerId) {
        (self.events)(NetEvent::HolePunch { peer: to_core(&peer), stage: HolePunchStage::Failed });
        let others = self.relay_client.punch_under_way(&peer);
        if !others && self.relay_client.punch_asked.remove(&peer) {
            (self.events)(NetEvent::HolePunchFailed { peer: to_core(&peer) });
        }
    }

    /// Which hub relays a connection over the `/p2p-circuit` address `addr`.
    pub(super) fn relay_of(&self, addr: &Multiaddr) -> Option<libp2p::PeerId> {
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

    pub(super) fn on_listener_closed(&mut self, listener: ListenerId, error: Option<String>) {
        let Some((hub, r)) = self.relay_client.take_reservation(listener) else { return };
        if r.accepted {
            tracing::warn!(%hub, ?error, "relay reservation lost");
            (self.events)(NetEvent::ReservationLost { hub: to_core(&hub) });
        } else {
            tracing::info!(%hub, ?error, "relay reservation failed");
            (self.events)(NetEvent::ReservationFailed { hub: to_core(&hub) });
        }
    }

    pub(super) fn on_relay_client(&mut self, event: relay::client::Event) {
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

    pub(super) fn on_dcutr(&mut self, event: dcutr::Event) {
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
}
