//! The NAT and relay model: reachability verdicts, relay reservations at hubs,
//! relay circuits with caps, hole punching, and the relay invariants.
//!
//! - Every node has a NAT type (`[topology] exit_nat` / `client_nat`, hubs are
//!   public). A direct dial to a node behind NAT goes unanswered; a NATed node
//!   dials public nodes like anyone else. When the scenario models NAT, each
//!   node learns its reachability (`Input::Reachability`) a seeded autonat
//!   delay after every (re)start.
//! - A hub relays. `Reserve` is answered after a round trip: accepted (with the
//!   scenario's TTL) if the hub is up and reachable, else failed. A
//!   reservation lives until it expires unrenewed, the holder drops it, or the
//!   holder's connection to the hub dies (hub crash or restart, a reset, a
//!   partition noticed by keep-alive): then the holder gets `ReservationLost`.
//! - `Dial { via: hub }` opens a circuit iff the hub is up, neither leg is cut
//!   and the target holds a live reservation there. Its streams cross both
//!   legs (store and forward per chunk: latencies add, the slower link sets
//!   the pace). The hub cuts it at its duration cap, when a direction would
//!   pass its byte cap (nothing beyond the cap is let through), when the hub
//!   dies, or when a leg dies; both ends then see `PeerDisconnected` and every
//!   stream on it resets.
//! - `HolePunch` on a circuit succeeds after one to two round trips of the
//!   relayed path with the probability of [`crate::nat::PUNCH_PER_MILLE`] for
//!   the two NAT types: a new direct connection on both ends; otherwise
//!   `HolePunchFailed`.
//!
//! All of the model's randomness comes from its own seeded stream, so a
//! scenario without NAT draws exactly what it drew before the model existed.

use super::{Ev, Invariant, NodeIx, Outcome, Owner, PeerConn, World};
use crate::bytes_model::Chunk;
use crate::nat::{punch_per_mille, NAT_DIAL_TIMEOUT};
use crate::plan::between;
use crate::scenario::{NatType, OriginKind, Scenario};
use meshproxy_core::ids::{ConnId, PeerId};
use meshproxy_core::io::{CircuitLimit, Input, Path, Reachability};
use meshproxy_core::time::Instant;
use meshproxy_core::wire::hub::{decode, HubMessage};
use meshproxy_core::wire::Decoded;
use rand_chacha::ChaCha8Rng;
use rand_core::RngCore;
use std::collections::BTreeMap;
use std::time::Duration;

/// How often the relay invariants are sampled.
pub(super) const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Most bytes of an exit's hub stream kept while waiting for a whole frame.
const SNOOP_MAX: usize = 64 * 1024;

/// One reservation a hub holds for a node.
#[derive(Debug, Clone, Copy)]
struct Reservation {
    /// Which grant (or renewal) this is; an expiry event for an older one is stale.
    epoch: u64,
}

/// Where one (exit, hub) pair stands with respect to the reservation invariant.
#[derive(Debug, Clone, Copy)]
struct Watch {
    /// Since when the exit should hold a reservation there and does not.
    since: Instant,
    /// Already reported for this episode.
    reported: bool,
}

/// The model's state, beside the world's nodes, links and connections.
pub(super) struct RelayState {
    rng: ChaCha8Rng,
    nats: Vec<NatType>,
    models_nat: bool,
    limit: CircuitLimit,
    ttl: Duration,
    /// (holder, hub) → reservation.
    reservations: BTreeMap<(NodeIx, NodeIx), Reservation>,
    next_epoch: u64,
    /// (exit, hub) → the `relayed` flag of the last `Register` the exit sent there.
    registered_relayed: BTreeMap<(NodeIx, NodeIx), bool>,
    /// Partial frames of exit → hub streams; `None` once a stream stopped parsing.
    snoop: BTreeMap<u64, Option<Vec<u8>>>,
    watch: BTreeMap<(NodeIx, NodeIx), Watch>,
}

impl RelayState {
    pub(super) fn new(s: &Scenario, seed: u64) -> RelayState {
        let t = &s.topology;
        let pick = |list: &[NatType], i: u32| {
            if list.is_empty() {
                NatType::None
            } else {
                list[i as usize % list.len()]
            }
        };
        let mut nats = Vec::new();
        nats.extend((0..t.hubs).map(|_| NatType::None));
        nats.extend((0..t.exits).map(|i| pick(&t.exit_nat, i)));
        nats.extend((0..t.clients).map(|i| pick(&t.client_nat, i)));
        // Agents and gateways are public (the NAT model has no lists for them yet).
        nats.extend((0..t.agents + t.gateways).map(|_| NatType::None));
        RelayState {
            rng: crate::rng_for(seed, 2),
            nats,
            models_nat: t.models_nat(),
            limit: CircuitLimit {
                duration: s.relay.circuit_secs.map(|secs| Duration::from_secs(u64::from(secs))),
                bytes: s.relay.circuit_bytes,
            },
            ttl: Duration::from_secs(u64::from(s.relay.reservation_ttl_secs)),
            reservations: BTreeMap::new(),
            next_epoch: 0,
            registered_relayed: BTreeMap::new(),
            snoop: BTreeMap::new(),
            watch: BTreeMap::new(),
        }
    }

    /// Node `n`'s NAT type.
    pub(super) fn nat(&self, n: NodeIx) -> NatType {
        self.nats.get(n as usize).copied().unwrap_or_default()
    }
}

impl World<'_> {
    fn alive(&self, n: NodeIx, gen: u32) -> bool {
        let node = &self.nodes[n as usize];
        node.generation == gen && node.core.is_some()
    }

    fn gen(&self, n: NodeIx) -> u32 {
        self.nodes[n as usize].generation
    }

    fn rtt(&self, a: NodeIx, b: NodeIx) -> Duration {
        self.latency(a, b) + self.latency(b, a)
    }

    fn cut_between(&self, a: NodeIx, b: NodeIx) -> bool {
        self.partitioned(a, b) || self.partitioned(b, a)
    }

    fn is_hub(&self, n: NodeIx) -> bool {
        n < self.hubs
    }

    fn is_exit(&self, n: NodeIx) -> bool {
        (self.hubs..self.hubs + self.exits).contains(&n)
    }

    /// A new peer connection: direct (`via` None) or a circuit through a hub.
    pub(super) fn new_conn(
        &mut self,
        nodes: [NodeIx; 2],
        via: Option<NodeIx>,
        limit: Option<CircuitLimit>,
    ) -> u64 {
        self.next_conn += 1;
        let id = self.next_conn;
        let conn = PeerConn {
            nodes,
            streams: Vec::new(),
            via,
            limit,
            opened: self.now,
            carried: [0; 2],
            delivered: [0; 2],
            capped: false,
        };
        self.conns.insert(id, conn);
        id
    }

    /// The connection a new stream from `n` to `to` goes on: exactly `on` if
    /// named (and still there), else a direct one if any, else a circuit.
    pub(super) fn stream_conn(&self, n: NodeIx, to: NodeIx, on: Option<ConnId>) -> Option<u64> {
        let joins = |c: &PeerConn| (c.nodes == [n, to] || c.nodes == [to, n]) && !c.capped;
        match on {
            Some(ConnId(id)) => self.conns.get(&id).filter(|c| joins(c)).map(|_| id),
            None => self
                .conns
                .iter()
                .find(|(_, c)| joins(c) && c.via.is_none())
                .or_else(|| self.conns.iter().find(|(_, c)| joins(c)))
                .map(|(id, _)| *id),
        }
    }

    /// One-way latency from `n` to `to`, through `via` if relayed.
    pub(super) fn path_latency(&self, n: NodeIx, to: NodeIx, via: Option<NodeIx>) -> Duration {
        match via {
            Some(h) => self.latency(n, h) + self.latency(h, to),
            None => self.latency(n, to),
        }
    }

    /// When a chunk of `size` bytes handed to link `a → b` at `start` arrives.
    fn transit(&mut self, a: NodeIx, b: NodeIx, start: Instant, size: u64) -> Instant {
        let jitter_us = self.jitter_us();
        let j = if jitter_us > 0 { self.rng.next_u64() % (jitter_us + 1) } else { 0 };
        let (latency, bandwidth) = (self.latency(a, b), self.bandwidth());
        let l = self.link_mut(a, b);
        let spike = l.spikes.iter().copied().max().unwrap_or(1);
        let drop = u64::from(l.drops.iter().copied().max().unwrap_or(1));
        let bw = (bandwidth / drop).max(1);
        let begin = l.busy_until.max(start);
        let tx = Duration::from_micros(size * 1_000_000 / bw);
        l.busy_until = begin + tx;
        begin + tx + latency * spike + Duration::from_micros(j)
    }

    /// Writes a chunk on a circuit stream from node `path[0]` through hub
    /// `path[1]` to `path[2]`, enforcing the byte cap.
    pub(super) fn write_relayed(
        &mut self,
        stream: u64,
        side: usize,
        path: [NodeIx; 3],
        chunk: Chunk,
    ) {
        let [a, h, b] = path;
        let Some(conn) = self.streams.get(&stream).and_then(|s| s.conn) else { return };
        let Some(c) = self.conns.get_mut(&conn) else { return };
        if c.capped {
            // The relay has cut the circuit: nothing passes any more.
            return;
        }
        let size = match &chunk {
            Chunk::Data(p) => p.len(),
            _ => 0,
        };
        let dir = usize::from(c.nodes[0] != a);
        if let Some(cap) = c.limit.and_then(|l| l.bytes) {
            if c.carried[dir] + size > cap {
                c.capped = true;
                let carried = c.carried[dir];
                self.trace.line(self.now, "circuit", || {
                    format!("c{conn} byte cap {cap} reached ({carried} carried n{a}->n{b})")
                });
                self.trace.hash_only(self.now, 20, conn, carried);
                self.push(self.now, Ev::CircuitEnd(conn));
                return;
            }
        }
        c.carried[dir] += size;
        let at_hub = self.transit(a, h, self.now, size);
        let at_end = self.transit(h, b, at_hub, size);
        let Some(st) = self.streams.get_mut(&stream) else { return };
        let to = 1 - side;
        let at = at_end.max(st.last_arrival[to]);
        st.last_arrival[to] = at;
        self.push(at, Ev::Arrive(stream, to, chunk));
    }

    /// The *bounds* invariant for circuits, checked where bytes arrive (apart
    /// from where the cap is enforced): never more than the byte cap in a
    /// direction, nothing after the duration cap.
    pub(super) fn check_circuit_bounds(&mut self, stream: u64, side: usize, chunk: &Chunk) {
        let Some(st) = self.streams.get(&stream) else { return };
        let (Some(conn), Some(writer)) = (st.conn, st.nodes[1 - side]) else { return };
        let now = self.now;
        let Some(c) = self.conns.get_mut(&conn) else { return };
        let dir = usize::from(c.nodes[0] != writer);
        let mut broken = Vec::new();
        if let Chunk::Data(p) = chunk {
            c.delivered[dir] += p.len();
            if let Some(cap) = c.limit.and_then(|l| l.bytes) {
                if c.delivered[dir] > cap {
                    broken.push(format!(
                        "circuit c{conn} carried {} bytes one way, over its cap of {cap}",
                        c.delivered[dir]
                    ));
                }
            }
        }
        if let Some(d) = c.limit.and_then(|l| l.duration) {
            if now > c.opened + d {
                broken.push(format!("circuit c{conn} carried data after its {d:?} cap"));
            }
        }
        for detail in broken {
            self.violation(Invariant::Bounds, detail);
        }
    }

    /// Tells a (re)started node whether it is reachable, after autonat's delay.
    pub(super) fn tell_reachability(&mut self, n: NodeIx) {
        if !self.relay.models_nat {
            return;
        }
        let range = self.s.relay.autonat_ms;
        let ms = between(&mut self.relay.rng, u64::from(range.min), u64::from(range.max));
        let verdict = if self.relay.nat(n).is_public() {
            Reachability::Public
        } else {
            Reachability::Private
        };
        self.send_input(n, Duration::from_millis(ms), Input::Reachability(verdict));
    }

    /// Follows what exits tell hubs, to learn whether each registration says
    /// "relayed" (the hub core does not expose its records).
    pub(super) fn snoop_hub_stream(&mut self, n: NodeIx, stream: u64, data: &[u8]) {
        if !self.relay.models_nat || !self.is_exit(n) {
            return;
        }
        let Some(st) = self.streams.get(&stream) else { return };
        if !st.hub {
            return;
        }
        let Some(h) = st.nodes.iter().flatten().copied().find(|m| *m != n) else { return };
        if !self.is_hub(h) {
            return;
        }
        let entry = self.relay.snoop.entry(stream).or_insert_with(|| Some(Vec::new()));
        let Some(buf) = entry else { return };
        buf.extend_from_slice(data);
        let mut flags = Vec::new();
        loop {
            match decode(buf) {
                Ok(Decoded::Complete { msg, consumed }) => {
                    if let HubMessage::Register { relayed, .. } = msg {
                        flags.push(relayed);
                    }
                    buf.drain(..consumed.min(buf.len()));
                }
                Ok(Decoded::Incomplete) if buf.len() <= SNOOP_MAX => break,
                _ => {
                    *entry = None;
                    break;
                }
            }
        }
        if let Some(relayed) = flags.last() {
            self.relay.registered_relayed.insert((n, h), *relayed);
        }
    }

    // ------------------------------------------------------- reservations

    pub(super) fn reserve(&mut self, n: NodeIx, hub: PeerId) {
        let h = match self.by_peer.get(&hub) {
            Some(&h) if h != n && self.is_hub(h) => h,
            _ => {
                self.send_input(n, super::LOCAL, Input::ReservationFailed { hub });
                return;
            }
        };
        if self.cut_between(n, h) {
            self.send_input(n, NAT_DIAL_TIMEOUT, Input::ReservationFailed { hub });
        } else if self.nodes[h as usize].core.is_none() {
            let rtt = self.rtt(n, h);
            self.send_input(n, rtt, Input::ReservationFailed { hub });
        } else {
            let gen = [self.gen(n), self.gen(h)];
            let at = self.now + self.rtt(n, h);
            self.push(at, Ev::ReserveDone { node: n, hub: h, gen });
        }
    }

    pub(super) fn reserve_done(&mut self, n: NodeIx, h: NodeIx, gen: [u32; 2]) {
        if !self.alive(n, gen[0]) {
            return;
        }
        let hub = self.nodes[h as usize].peer;
        if !self.alive(h, gen[1]) || self.cut_between(n, h) {
            self.send_input(n, Duration::ZERO, Input::ReservationFailed { hub });
            return;
        }
        self.relay.next_epoch += 1;
        let epoch = self.relay.next_epoch;
        let renewal = self.relay.reservations.insert((n, h), Reservation { epoch }).is_some();
        self.trace.line(self.now, "reserve", || {
            format!("n{n} at n{h}{}", if renewal { " (renewed)" } else { "" })
        });
        self.trace.hash_only(self.now, 21, u64::from(n), u64::from(h));
        let ttl = self.relay.ttl;
        self.push(self.now + ttl, Ev::ReservationExpire { node: n, hub: h, epoch });
        self.send_input(
            n,
            Duration::ZERO,
            Input::ReservationAccepted { hub, expires_in: Some(ttl) },
        );
    }

    pub(super) fn reservation_expire(&mut self, n: NodeIx, h: NodeIx, epoch: u64) {
        if self.relay.reservations.get(&(n, h)).is_none_or(|r| r.epoch != epoch) {
            return;
        }
        self.relay.reservations.remove(&(n, h));
        self.trace.line(self.now, "reserve", || format!("n{n} at n{h} expired"));
        self.trace.hash_only(self.now, 22, u64::from(n), u64::from(h));
        let hub = self.nodes[h as usize].peer;
        if self.nodes[n as usize].core.is_some() {
            self.send_input(n, Duration::ZERO, Input::ReservationLost { hub });
        }
    }

    pub(super) fn unreserve(&mut self, n: NodeIx, hub: PeerId) {
        if let Some(&h) = self.by_peer.get(&hub) {
            if self.relay.reservations.remove(&(n, h)).is_some() {
                self.trace.line(self.now, "reserve", || format!("n{n} at n{h} dropped"));
            }
        }
    }

    /// Drops the reservations `lost` selects; their holders hear of it.
    fn lose_reservations(&mut self, lost: impl Fn(NodeIx, NodeIx) -> bool) {
        let gone: Vec<(NodeIx, NodeIx)> =
            self.relay.reservations.keys().copied().filter(|(n, h)| lost(*n, *h)).collect();
        for (n, h) in gone {
            self.relay.reservations.remove(&(n, h));
            self.trace.line(self.now, "reserve", || format!("n{n} at n{h} lost"));
            self.trace.hash_only(self.now, 23, u64::from(n), u64::from(h));
            if self.nodes[n as usize].core.is_some() {
                let hub = self.nodes[h as usize].peer;
                self.send_input(n, Duration::ZERO, Input::ReservationLost { hub });
            }
        }
    }

    /// The connection between `a` and `b` died (reset, or keep-alive gave up
    /// on a cut link; `a == b`: every connection of `a`): circuits with that
    /// leg end and reservations riding on it are lost.
    pub(super) fn leg_lost(&mut self, a: NodeIx, b: NodeIx) {
        let hit = |x: NodeIx, y: NodeIx| {
            if a == b {
                x == a || y == a
            } else {
                (x, y) == (a, b) || (x, y) == (b, a)
            }
        };
        let circuits: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.via
                    .is_some_and(|h| hit(c.nodes[0], h) || hit(h, c.nodes[1]) || (a == b && h == a))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in circuits {
            self.kill_conn(id);
        }
        self.lose_reservations(hit);
    }

    /// Node `n` crashed: reservations at it are lost (their holders' links to
    /// it died), its own are gone with it.
    pub(super) fn node_down(&mut self, n: NodeIx) {
        self.relay.reservations.retain(|(holder, _), _| *holder != n);
        self.lose_reservations(|_, h| h == n);
        self.relay.registered_relayed.retain(|(e, h), _| *e != n && *h != n);
    }

    // ---------------------------------------------------------- circuits

    pub(super) fn dial_via(&mut self, n: NodeIx, peer: PeerId, hub: PeerId) {
        let (to, h) = match (self.by_peer.get(&peer), self.by_peer.get(&hub)) {
            (Some(&to), Some(&h)) if to != n && h != n && h != to => (to, h),
            _ => {
                self.send_input(n, super::LOCAL, Input::DialFailed { peer });
                return;
            }
        };
        if self.cut_between(n, h) {
            self.send_input(n, NAT_DIAL_TIMEOUT, Input::DialFailed { peer });
        } else if self.nodes[h as usize].core.is_none() {
            let rtt = self.rtt(n, h);
            self.send_input(n, rtt, Input::DialFailed { peer });
        } else {
            let dial = self.s.network.dial_ms;
            let ms = between(&mut self.relay.rng, u64::from(dial.min), u64::from(dial.max));
            let at = self.now + self.rtt(n, h) + self.rtt(h, to) + Duration::from_millis(ms);
            let gen = [self.gen(n), self.gen(to), self.gen(h)];
            self.push(at, Ev::RelayDialDone { from: n, to, hub: h, gen });
        }
    }

    pub(super) fn relay_dial_done(&mut self, from: NodeIx, to: NodeIx, h: NodeIx, gen: [u32; 3]) {
        if !self.alive(from, gen[0]) {
            return;
        }
        let to_peer = self.nodes[to as usize].peer;
        let ok = self.alive(h, gen[2])
            && self.alive(to, gen[1])
            && !self.cut_between(from, h)
            && !self.cut_between(h, to)
            && self.relay.reservations.contains_key(&(to, h));
        if !ok {
            self.send_input(from, Duration::ZERO, Input::DialFailed { peer: to_peer });
            return;
        }
        let limit = self.relay.limit;
        let id = self.new_conn([from, to], Some(h), Some(limit));
        self.trace.line(self.now, "conn", || format!("c{id} n{from}->n{to} via n{h}"));
        self.trace.hash_only(self.now, 24, id, u64::from(h));
        if let Some(d) = limit.duration {
            self.push(self.now + d, Ev::CircuitEnd(id));
        }
        let hub = self.nodes[h as usize].peer;
        let from_peer = self.nodes[from as usize].peer;
        let path = Path::Relayed { via: hub };
        let conn = ConnId(id);
        let connected = |peer| Input::PeerConnected { peer, conn, path, limit: Some(limit) };
        self.send_input(from, Duration::ZERO, connected(to_peer));
        let lat = self.latency(h, to);
        self.send_input(to, lat, connected(from_peer));
    }

    /// A circuit reached a cap: the hub tears it down.
    pub(super) fn circuit_end(&mut self, id: u64) {
        if self.conns.get(&id).is_some_and(|c| c.via.is_some()) {
            self.trace.line(self.now, "circuit", || format!("c{id} cut by its cap"));
            self.trace.hash_only(self.now, 25, id, 0);
            self.kill_conn(id);
        }
    }

    // ------------------------------------------------------ hole punching

    fn circuit_between(&self, a: NodeIx, b: NodeIx) -> Option<NodeIx> {
        self.conns
            .values()
            .find(|c| (c.nodes == [a, b] || c.nodes == [b, a]) && !c.capped && c.via.is_some())
            .and_then(|c| c.via)
    }

    /// (client NAT, exit NAT) of a pair of nodes, whichever way round.
    fn pair_key(&self, a: NodeIx, b: NodeIx) -> (NatType, Option<NatType>) {
        let (client, exit) = if self.is_exit(a) { (b, a) } else { (a, b) };
        (self.relay.nat(client), Some(self.relay.nat(exit)))
    }

    pub(super) fn hole_punch(&mut self, n: NodeIx, peer: PeerId) {
        let found = self.by_peer.get(&peer).copied().and_then(|to| {
            let h = self.circuit_between(n, to)?;
            Some((to, h))
        });
        let Some((to, h)) = found else {
            self.send_input(n, super::LOCAL, Input::HolePunchFailed { peer });
            return;
        };
        let key = self.pair_key(n, to);
        self.nat_matrix.entry(key).or_default().punches += 1;
        let chance = punch_per_mille(self.relay.nat(n), self.relay.nat(to));
        let ok = self.relay.rng.next_u32() % 1000 < chance;
        let rtt = self.path_latency(n, to, Some(h)) + self.path_latency(to, n, Some(h));
        let rtt_us = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX / 4);
        let us = between(&mut self.relay.rng, rtt_us, rtt_us * 2);
        let gen = [self.gen(n), self.gen(to)];
        self.push(self.now + Duration::from_micros(us), Ev::PunchDone { from: n, to, gen, ok });
    }

    pub(super) fn punch_done(&mut self, from: NodeIx, to: NodeIx, gen: [u32; 2], ok: bool) {
        if !self.alive(from, gen[0]) {
            return;
        }
        let peer = self.nodes[to as usize].peer;
        let punched = ok
            && self.alive(to, gen[1])
            && !self.cut_between(from, to)
            && self.circuit_between(from, to).is_some();
        if !punched {
            self.trace.line(self.now, "punch", || format!("n{from}->n{to} failed"));
            self.trace.hash_only(self.now, 26, u64::from(from), u64::from(to));
            self.send_input(from, Duration::ZERO, Input::HolePunchFailed { peer });
            return;
        }
        let key = self.pair_key(from, to);
        self.nat_matrix.entry(key).or_default().punched += 1;
        let id = self.new_conn([from, to], None, None);
        self.trace.line(self.now, "conn", || format!("c{id} n{from}<->n{to} hole-punched"));
        self.trace.hash_only(self.now, 27, id, 0);
        let from_peer = self.nodes[from as usize].peer;
        let conn = ConnId(id);
        let connected = |peer| Input::PeerConnected { peer, conn, path: Path::Direct, limit: None };
        self.send_input(from, Duration::ZERO, connected(peer));
        self.send_input(to, Duration::ZERO, connected(from_peer));
    }

    // --------------------------------------------------------- invariants

    /// Every exit behind NAT holds a reservation at every hub it can reach,
    /// and is registered there as relayed, within the liveness bound of the
    /// hub (and the exit) being up and reachable — so it stays reachable
    /// while any hub is, and reservations are re-made after a hub returns.
    pub(super) fn relay_check(&mut self) {
        let bound = Duration::from_secs(u64::from(self.s.liveness_bound_secs));
        for e in self.hubs..self.hubs + self.exits {
            if self.relay.nat(e).is_public() {
                continue;
            }
            let exit = self.nodes[e as usize].peer;
            for h in 0..self.hubs {
                let should = self.nodes[e as usize].core.is_some()
                    && self.nodes[h as usize].core.is_some()
                    && !self.cut_between(e, h);
                let holds = self.relay.reservations.contains_key(&(e, h))
                    && self.relay.registered_relayed.get(&(e, h)) == Some(&true)
                    && self.nodes[h as usize]
                        .core
                        .as_ref()
                        .is_some_and(|c| c.hub_has_registered(&exit));
                if !should || holds {
                    self.relay.watch.remove(&(e, h));
                    continue;
                }
                let now = self.now;
                let w =
                    self.relay.watch.entry((e, h)).or_insert(Watch { since: now, reported: false });
                if w.reported || now.saturating_duration_since(w.since) <= bound {
                    continue;
                }
                w.reported = true;
                let since = w.since;
                let what = match (
                    self.relay.reservations.contains_key(&(e, h)),
                    self.relay.registered_relayed.get(&(e, h)),
                ) {
                    (false, _) => "holds no reservation",
                    (true, Some(true)) => "holds a reservation but is not registered",
                    (true, _) => "holds a reservation but is not registered as relayed",
                };
                let detail = format!(
                    "exit n{e} (behind {} NAT) {what} at hub n{h}, up and reachable since {since}",
                    self.relay.nat(e)
                );
                self.violation(Invariant::Relay, detail);
            }
        }
        if self.now + CHECK_EVERY <= self.end {
            self.push(self.now + CHECK_EVERY, Ev::RelayCheck);
        }
    }

    // ------------------------------------------------------ nat_matrix

    /// A client spliced an app stream to a peer stream: note which way it goes.
    pub(super) fn note_session_path(&mut self, a: (u64, usize), b: (u64, usize)) {
        if !self.relay.models_nat {
            return;
        }
        for (local, peer) in [(a, b), (b, a)] {
            let owner = self.streams.get(&local.0).map(|s| s.owners[1 - local.1]);
            if let Some(Owner::App(app)) = owner {
                let relayed = self.streams.get(&peer.0).is_some_and(|s| s.via.is_some());
                self.apps[app as usize].relayed = Some(relayed);
            }
        }
    }

    /// Counts an app connection in the per-NAT-pair table.
    pub(super) fn count_session(&mut self, a: u32, outcome: Outcome) {
        let app = &self.apps[a as usize];
        let counted = matches!(
            app.spec.kind,
            OriginKind::Echo
                | OriginKind::Source
                | OriginKind::Sink
                | OriginKind::Slow
                | OriginKind::MixedName
        );
        if !self.relay.models_nat || app.probe || !counted {
            return;
        }
        let client = self.hubs + self.exits + app.spec.client;
        let key = (self.relay.nat(client), app.exit.map(|e| self.relay.nat(e)));
        let relayed = app.relayed == Some(true);
        let counts = self.nat_matrix.entry(key).or_default();
        match outcome {
            Outcome::Complete if relayed => counts.relayed += 1,
            Outcome::Complete => counts.direct += 1,
            _ => counts.failed += 1,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test that panics on a surprise is doing its job
mod tests {
    use super::*;
    use crate::bytes_model::Payload;
    use crate::plan::Plan;
    use crate::trace::Trace;
    use meshproxy_core::io::Output;
    use std::cmp::Reverse;

    /// Hub n0; exits n1 (symmetric NAT), n2 (public); clients n3 (full cone),
    /// n4 (symmetric), n5 (public).
    const NAT: &str = r#"
name = "t"
description = ""
duration_secs = 30
settle_secs = 20
liveness_bound_secs = 15
[topology]
hubs = 1
exits = 2
clients = 3
exit_nat = ["symmetric", "none"]
client_nat = ["full_cone", "symmetric", "none"]
[[listeners]]
[workload]
connections = 1
payload_min = 0
payload_max = 0
destinations = [{ kind = "echo", weight = 1 }]
[relay]
reservation_ttl_secs = 40
circuit_secs = 20
circuit_bytes = 10000
"#;
    const HUB: NodeIx = 0;
    const NAT_EXIT: NodeIx = 1;
    const PUBLIC_EXIT: NodeIx = 2;
    const CONE_CLIENT: NodeIx = 3;
    const SYM_CLIENT: NodeIx = 4;
    const PUBLIC_CLIENT: NodeIx = 5;

    fn scenario() -> Scenario {
        crate::scenario::parse_str(std::path::Path::new("t.toml"), NAT).unwrap()
    }

    /// The NATed exit reserves by itself (relay mode `always`, so from the
    /// start); the public exit never does (`off`).
    fn world(s: &Scenario) -> World<'_> {
        world_with(s, meshproxy_core::config::RelayMode::Always)
    }

    fn world_with(s: &Scenario, nat_exit: meshproxy_core::config::RelayMode) -> World<'_> {
        use meshproxy_core::config::RelayMode;
        let mut w = World::new(s, 1, &Plan::default(), Trace::new(true, false), None);
        for (e, mode) in [(NAT_EXIT, nat_exit), (PUBLIC_EXIT, RelayMode::Off)] {
            let node = &mut w.nodes[e as usize];
            if let Some(exit) = node.config.exit.as_mut() {
                exit.relay = mode;
            }
            node.core = Some(meshproxy_core::Node::new(node.config.clone(), 7, Instant::ZERO));
            w.drain(e);
        }
        w
    }

    impl World<'_> {
        /// Runs every event up to `secs` of virtual time.
        fn run_to(&mut self, secs: f64) {
            let until = Instant::from_micros((secs * 1e6) as u64);
            while let Some(Reverse(next)) = self.queue.pop() {
                if next.at > until {
                    self.queue.push(Reverse(next));
                    break;
                }
                self.now = next.at;
                self.step(next.ev);
            }
            self.now = until;
        }

        fn peer(&self, n: NodeIx) -> PeerId {
            self.nodes[n as usize].peer
        }

        /// Trace lines of inputs to `n` containing `what`.
        fn inputs(&self, n: NodeIx, what: &str) -> usize {
            let prefix = format!(" in n{n} ");
            self.trace.lines.iter().filter(|l| l.contains(&prefix) && l.contains(what)).count()
        }

        fn circuits(&self) -> Vec<u64> {
            self.conns.iter().filter(|(_, c)| c.via.is_some()).map(|(id, _)| *id).collect()
        }

        fn dial_via_hub(&mut self, from: NodeIx, to: NodeIx) {
            let (peer, hub) = (self.peer(to), self.peer(HUB));
            self.output(from, Output::Dial { peer, addrs: Vec::new(), via: Some(hub) });
        }

        /// A stream on circuit `conn` from `from`, nobody reading at the far end.
        fn raw_stream(&mut self, conn: u64, from: NodeIx, to: NodeIx) -> u64 {
            let id = self.new_stream(
                [Owner::Gone, Owner::Gone],
                [Some(from), Some(to)],
                Some(conn),
                false,
            );
            self.streams.get_mut(&id).unwrap().via = self.conns[&conn].via;
            self.conns.get_mut(&conn).unwrap().streams.push(id);
            id
        }
    }

    #[test]
    fn nodes_learn_their_reachability_from_their_nat() {
        let s = scenario();
        let mut w = world(&s);
        w.run_to(3.5);
        for n in [HUB, PUBLIC_EXIT, PUBLIC_CLIENT] {
            assert_eq!(w.inputs(n, "Reachability(Public)"), 1, "n{n}");
        }
        for n in [NAT_EXIT, CONE_CLIENT, SYM_CLIENT] {
            assert_eq!(w.inputs(n, "Reachability(Private)"), 1, "n{n}");
        }
    }

    #[test]
    fn a_direct_dial_to_a_natted_node_fails_and_to_a_public_one_works() {
        let s = scenario();
        let mut w = world(&s);
        w.run_to(1.0);
        let (nat, public) = (w.peer(NAT_EXIT), w.peer(PUBLIC_EXIT));
        w.output(PUBLIC_CLIENT, Output::Dial { peer: nat, addrs: Vec::new(), via: None });
        w.output(SYM_CLIENT, Output::Dial { peer: public, addrs: Vec::new(), via: None });
        w.run_to(5.9);
        assert_eq!(w.inputs(PUBLIC_CLIENT, "DialFailed"), 0, "fails only after the timeout");
        w.run_to(6.1);
        assert_eq!(w.inputs(PUBLIC_CLIENT, "DialFailed"), 1);
        assert!(w.conns.values().any(|c| c.nodes == [SYM_CLIENT, PUBLIC_EXIT] && c.via.is_none()));
    }

    #[test]
    fn reservations_are_granted_renewed_expire_and_die_with_the_hub() {
        let s = scenario();
        let mut w = world(&s);
        w.run_to(1.0);
        assert!(w.relay.reservations.contains_key(&(NAT_EXIT, HUB)));
        assert!(
            w.inputs(NAT_EXIT, "ReservationAccepted { hub: peer:00000001, expires_in: Some(40s) }")
                == 1
        );
        // Renewals (the core's, at 3/4 of the 40 s) keep it alive.
        w.run_to(100.0);
        assert!(w.inputs(NAT_EXIT, "ReservationAccepted") >= 3);
        assert_eq!(w.inputs(NAT_EXIT, "ReservationLost"), 0);
        assert!(w.relay.reservations.contains_key(&(NAT_EXIT, HUB)));
        // Without renewals (the holder frozen) it expires 40 s after the last grant.
        let core = w.nodes[NAT_EXIT as usize].core.take();
        w.run_to(141.0);
        assert!(w.relay.reservations.is_empty());
        w.nodes[NAT_EXIT as usize].core = core;
        // Re-made; then the hub crashes: lost at once, and requests to the
        // dead hub fail until it is back.
        let hub = w.peer(HUB);
        w.output(NAT_EXIT, Output::Reserve { hub });
        w.run_to(142.0);
        assert!(w.relay.reservations.contains_key(&(NAT_EXIT, HUB)));
        let lost = w.inputs(NAT_EXIT, "ReservationLost");
        w.crash(HUB, 1);
        w.run_to(142.001);
        assert_eq!(w.inputs(NAT_EXIT, "ReservationLost"), lost + 1);
        w.run_to(150.0);
        assert!(w.inputs(NAT_EXIT, "ReservationFailed") >= 1);
        assert!(w.relay.reservations.is_empty());
        w.restart(HUB, 1);
        w.run_to(200.0);
        assert!(w.relay.reservations.contains_key(&(NAT_EXIT, HUB)), "re-made by the core");
        // An unreserve drops it silently.
        w.output(NAT_EXIT, Output::Unreserve { hub });
        assert!(w.relay.reservations.is_empty());
    }

    #[test]
    fn a_relayed_dial_needs_a_reservation_and_says_how_it_runs() {
        let s = scenario();
        let mut w = world(&s);
        w.run_to(1.0);
        w.dial_via_hub(CONE_CLIENT, PUBLIC_EXIT);
        w.run_to(2.0);
        assert_eq!(w.inputs(CONE_CLIENT, "DialFailed"), 1, "no reservation there");
        w.dial_via_hub(CONE_CLIENT, NAT_EXIT);
        w.run_to(4.0);
        let circuits = w.circuits();
        assert_eq!(circuits.len(), 1);
        let limit = "limit: Some(CircuitLimit { duration: Some(20s), bytes: Some(10000) })";
        for n in [CONE_CLIENT, NAT_EXIT] {
            assert_eq!(w.inputs(n, "path: Relayed"), 1, "n{n}");
            assert_eq!(w.inputs(n, limit), 1, "n{n}");
        }
        // A second dial makes a second circuit; streams go exactly where named.
        w.dial_via_hub(CONE_CLIENT, NAT_EXIT);
        w.run_to(5.0);
        let circuits = w.circuits();
        assert_eq!(circuits.len(), 2);
        assert_eq!(
            w.stream_conn(CONE_CLIENT, NAT_EXIT, Some(ConnId(circuits[1]))),
            Some(circuits[1])
        );
        assert_eq!(w.stream_conn(CONE_CLIENT, NAT_EXIT, Some(ConnId(999))), None);
        // The duration cap ends both, each end hearing of it.
        w.run_to(26.0);
        assert!(w.circuits().is_empty());
        assert_eq!(w.inputs(NAT_EXIT, "PeerDisconnected"), 2);
        assert_eq!(w.inputs(CONE_CLIENT, "PeerDisconnected"), 2);
    }

    #[test]
    fn the_byte_cap_cuts_a_circuit_without_letting_more_through() {
        let s = scenario();
        let mut w = world(&s);
        w.run_to(2.0);
        w.dial_via_hub(PUBLIC_CLIENT, NAT_EXIT);
        w.run_to(3.0);
        let conn = w.circuits()[0];
        let st = w.raw_stream(conn, PUBLIC_CLIENT, NAT_EXIT);
        let back = w.raw_stream(conn, NAT_EXIT, PUBLIC_CLIENT);
        // The other direction is counted on its own.
        w.write(back, 0, Chunk::Data(Payload::Pattern { key: 2, offset: 0, len: 9000 }));
        for i in 0..4 {
            let p = Payload::Pattern { key: 1, offset: i * 3000, len: 3000 };
            w.write(st, 0, Chunk::Data(p));
        }
        w.run_to(3.001);
        assert!(w.circuits().is_empty(), "9,000 + 3,000 > 10,000: cut");
        assert_eq!(w.inputs(PUBLIC_CLIENT, "PeerDisconnected"), 1);
        w.run_to(10.0);
        assert!(w.violations.is_empty(), "{:?}", w.violations);
        // The check itself catches a relay that lets too much through.
        w.dial_via_hub(PUBLIC_CLIENT, NAT_EXIT);
        w.run_to(11.0);
        let conn = w.circuits()[0];
        let st = w.raw_stream(conn, PUBLIC_CLIENT, NAT_EXIT);
        w.conns.get_mut(&conn).unwrap().limit = None;
        w.write(st, 0, Chunk::Data(Payload::Pattern { key: 1, offset: 0, len: 12_000 }));
        w.conns.get_mut(&conn).unwrap().limit = Some(w.relay.limit);
        w.run_to(12.0);
        assert_eq!(w.violations.len(), 1);
        assert_eq!(w.violations[0].invariant, "bounds");
    }

    #[test]
    fn hole_punching_follows_the_nat_table() {
        let s = scenario();
        let mut w = world(&s);
        w.run_to(2.0);
        w.dial_via_hub(SYM_CLIENT, NAT_EXIT);
        w.dial_via_hub(PUBLIC_CLIENT, NAT_EXIT);
        w.run_to(3.0);
        let (sym, public) = (w.peer(SYM_CLIENT), w.peer(PUBLIC_CLIENT));
        let direct_before = [NAT_EXIT, PUBLIC_CLIENT].map(|n| w.inputs(n, "path: Direct"));
        let direct = |w: &World<'_>, c: NodeIx| {
            w.conns.values().filter(|x| x.via.is_none() && x.nodes == [NAT_EXIT, c]).count()
        };
        let punched_before = direct(&w, PUBLIC_CLIENT);
        // Symmetric × symmetric never punches; symmetric × public always does.
        // (The exit's core punches once by itself on each circuit it accepts.)
        let failed_before = w.inputs(NAT_EXIT, "HolePunchFailed");
        for _ in 0..5 {
            w.output(NAT_EXIT, Output::HolePunch { peer: sym });
        }
        w.run_to(4.0);
        assert_eq!(w.inputs(NAT_EXIT, "HolePunchFailed"), failed_before + 5);
        w.output(NAT_EXIT, Output::HolePunch { peer: public });
        w.run_to(5.0);
        assert_eq!(w.inputs(NAT_EXIT, "HolePunchFailed"), failed_before + 5);
        let punched = direct(&w, PUBLIC_CLIENT);
        assert_eq!(punched, punched_before + 1);
        assert_eq!(direct(&w, SYM_CLIENT), 0);
        for (i, n) in [NAT_EXIT, PUBLIC_CLIENT].into_iter().enumerate() {
            assert_eq!(w.inputs(n, "path: Direct"), direct_before[i] + 1, "n{n}");
        }
        // New streams without a named connection prefer the direct one.
        let chosen = w.stream_conn(PUBLIC_CLIENT, NAT_EXIT, None).unwrap();
        assert!(w.conns[&chosen].via.is_none());
        // No circuit, nothing to punch.
        let cone = w.peer(CONE_CLIENT);
        w.output(NAT_EXIT, Output::HolePunch { peer: cone });
        w.run_to(6.0);
        assert_eq!(w.inputs(NAT_EXIT, "HolePunchFailed"), failed_before + 6);
        let m = &w.nat_matrix;
        let key = (NatType::Symmetric, Some(NatType::Symmetric));
        assert!(m[&key].punches >= 5 && m[&key].punched == 0);
        let key = (NatType::None, Some(NatType::Symmetric));
        assert!(m[&key].punched as usize >= punched);
        assert!(m[&key].punches as usize >= punched);
    }

    #[test]
    fn a_cut_leg_ends_circuits_and_loses_reservations() {
        let s = scenario();
        let mut w = world(&s);
        w.run_to(2.0);
        w.dial_via_hub(PUBLIC_CLIENT, NAT_EXIT);
        w.run_to(3.0);
        assert_eq!(w.circuits().len(), 1);
        w.leg_lost(NAT_EXIT, HUB);
        assert!(w.circuits().is_empty());
        assert!(w.relay.reservations.is_empty());
        w.run_to(3.001);
        assert_eq!(w.inputs(NAT_EXIT, "ReservationLost"), 1);
    }

    #[test]
    fn an_exit_without_a_reservation_is_reported_after_the_bound() {
        let s = scenario();
        // An exit that holds its reservation is fine.
        let mut w = world(&s);
        w.run_to(40.0);
        assert!(w.violations.is_empty(), "{:?}", w.violations);
        // One that never reserves (relay mode off behind NAT) is reported.
        let mut w = world_with(&s, meshproxy_core::config::RelayMode::Off);
        w.run_to(15.5);
        assert!(w.violations.iter().all(|v| v.invariant != "relay"));
        w.run_to(17.5);
        let relay: Vec<_> = w.violations.iter().filter(|v| v.invariant == "relay").collect();
        assert_eq!(relay.len(), 1, "{relay:?}");
        assert!(relay[0].detail.contains("exit n1 (behind symmetric NAT)"), "{relay:?}");
    }
}
