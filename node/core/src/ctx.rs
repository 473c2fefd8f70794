//! State every role of a node shares: the output queue, the timer table, the
//! seeded RNG, id allocation and the table of peer connections.

use crate::config::{Limits, Timeouts};
use crate::ids::{ConnId, PeerId, QueryId, RequestId, StreamId};
use crate::io::{CircuitLimit, Event, Output, Path, TimerReason};
use crate::record::PeerAddr;
use crate::time::Instant;
use core::time::Duration;
use rand_chacha::{ChaCha20Rng, ChaCha8Rng};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// What a timer belongs to. Each key has at most one pending deadline.
///
/// The variants' order is the order timers due at the same instant fire in
/// (the derived `Ord`), so it is part of every simulator trace: add new
/// variants at the end.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(crate) enum TimerKey {
    /// A client session, by its app stream.
    ClientSession(StreamId),
    /// An exit session, by its peer stream.
    ExitSession(StreamId),
    /// A hub link, by its index in the config's hub list.
    HubLink(usize),
    /// An unauthenticated stream at a hub.
    HubPeer(StreamId),
    /// The hub directory's next expiry.
    DirectoryExpiry,
    /// The client's next exit-list refresh.
    ExitRefresh,
    /// A dial without an answer.
    Dial(PeerId),
    /// A relay reservation, by its hub's index in the config's hub list.
    Reservation(usize),
    /// Hole punching towards a peer (a retry, or an attempt's deadline).
    HolePunch(PeerId),
    /// A gateway request's attempt (or whole budget) deadline.
    IngressRequest(RequestId),
    /// The gateway's next agent-list refresh.
    AgentRefresh,
    /// An agent's ingress stream, by its gateway stream.
    AgentStream(StreamId),
}

impl TimerKey {
    /// The role whose timer this is (`Node` hands it to that role's
    /// [`Role::on_timer`](crate::role::Role::on_timer)), or `None` for the
    /// node's own timers (exit refresh, dials, the relay's).
    pub(crate) fn owner(self) -> Option<Owner> {
        match self {
            TimerKey::ClientSession(_) => Some(Owner::Client),
            TimerKey::ExitSession(_) => Some(Owner::Exit),
            TimerKey::HubLink(_) => Some(Owner::HubLink),
            TimerKey::HubPeer(_) | TimerKey::DirectoryExpiry => Some(Owner::Hub),
            TimerKey::IngressRequest(_) => Some(Owner::Gateway),
            TimerKey::AgentStream(_) => Some(Owner::Agent),
            TimerKey::ExitRefresh
            | TimerKey::Dial(_)
            | TimerKey::Reservation(_)
            | TimerKey::HolePunch(_)
            | TimerKey::AgentRefresh => None,
        }
    }

    /// Why the node wants to be woken for this timer.
    pub(crate) fn reason(self) -> TimerReason {
        match self {
            TimerKey::ClientSession(_) | TimerKey::ExitSession(_) | TimerKey::AgentStream(_) => {
                TimerReason::SessionDeadline
            }
            TimerKey::HubLink(_) => TimerReason::HubLink,
            TimerKey::HubPeer(_) => TimerReason::HubPeerDeadline,
            TimerKey::DirectoryExpiry => TimerReason::DirectoryExpiry,
            TimerKey::ExitRefresh => TimerReason::ExitRefresh,
            TimerKey::Dial(_) => TimerReason::DialDeadline,
            TimerKey::Reservation(_) => TimerReason::Reservation,
            TimerKey::HolePunch(_) => TimerReason::HolePunch,
            TimerKey::IngressRequest(_) => TimerReason::IngressDeadline,
            TimerKey::AgentRefresh => TimerReason::AgentRefresh,
        }
    }
}

/// Deadlines by owner, and by time for the earliest.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    by_key: BTreeMap<TimerKey, Instant>,
    by_time: BTreeSet<(Instant, TimerKey)>,
    /// How many keys are not periodic ones (kept up to date: read every step).
    non_periodic: usize,
}

impl Timers {
    /// Sets (or moves) `key`'s deadline.
    pub(crate) fn set(&mut self, key: TimerKey, at: Instant) {
        match self.by_key.insert(key, at) {
            Some(old) => {
                self.by_time.remove(&(old, key));
            }
            None => self.non_periodic += usize::from(!key.reason().is_periodic()),
        }
        self.by_time.insert((at, key));
    }

    /// `key`'s deadline, if any.
    pub(crate) fn get(&self, key: TimerKey) -> Option<Instant> {
        self.by_key.get(&key).copied()
    }

    /// Removes `key`'s deadline, if any.
    pub(crate) fn cancel(&mut self, key: TimerKey) {
        if let Some(old) = self.by_key.remove(&key) {
            self.by_time.remove(&(old, key));
            self.non_periodic -= usize::from(!key.reason().is_periodic());
        }
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<(Instant, TimerKey)> {
        self.by_time.first().copied()
    }

    /// Removes and returns one key whose deadline is at or before `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<TimerKey> {
        let &(at, key) = self.by_time.first()?;
        if at > now {
            return None;
        }
        self.by_time.remove(&(at, key));
        self.by_key.remove(&key);
        self.non_periodic -= usize::from(!key.reason().is_periodic());
        Some(key)
    }

    /// How many pending timers are not periodic ones.
    pub(crate) fn non_periodic(&self) -> usize {
        self.non_periodic
    }
}

/// Whether a peer can take a stream now.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Reach {
    /// At least one connection is up.
    Connected,
    /// A dial is under way; `PeerConnected` or a failure will follow.
    Dialing,
}

/// One connection to a peer, as the outside reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConnInfo {
    pub(crate) path: Path,
    pub(crate) limit: Option<CircuitLimit>,
    pub(crate) since: Instant,
}

impl ConnInfo {
    /// When a relay's duration cap ends this connection, if it has one.
    pub(crate) fn ends_at(&self) -> Option<Instant> {
        self.limit.and_then(|l| l.duration).map(|d| self.since + d)
    }
}

/// Connections to peers as the outside reported them, and our dials (with
/// the route each takes).
#[derive(Debug, Default)]
pub(crate) struct PeerTable {
    conns: BTreeMap<PeerId, BTreeMap<ConnId, ConnInfo>>,
    dialing: BTreeMap<PeerId, Route>,
}

/// How a dial of ours reaches its peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// To the peer's own addresses.
    Direct,
    /// Through this hub's relay.
    Via(PeerId),
}

impl Route {
    /// The hub whose relay the dial goes through, if any (`Output::Dial`'s `via`).
    pub(crate) fn via(self) -> Option<PeerId> {
        match self {
            Route::Direct => None,
            Route::Via(hub) => Some(hub),
        }
    }
}

/// Which role a stream belongs to. `Node` routes every stream event by this
/// one table; a new role that holds streams adds one variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    /// An app stream or a stream to an exit, of a client session.
    Client,
    /// A client's stream or an origin stream, of an exit session.
    Exit,
    /// A peer's `/meshproxy/hub/1` stream at this hub.
    Hub,
    /// This node's own stream to one of its hubs.
    HubLink,
    /// A gateway's stream to an agent, until the agent answers.
    Gateway,
    /// A gateway's ingress stream or an origin stream, of an agent session.
    Agent,
}

/// The context every role works in.
#[derive(Debug)]
pub(crate) struct Ctx {
    /// Every role's deadlines, from the node's config (one copy, read by all).
    pub(crate) timeouts: Timeouts,
    /// Every role's bounds, from the node's config (one copy, read by all).
    pub(crate) limits: Limits,
    pub(crate) out: VecDeque<Output>,
    pub(crate) timers: Timers,
    pub(crate) rng: ChaCha8Rng,
    /// For secrets handed to strangers (challenge nonces): seeded from the
    /// OS's 32 bytes in production, so its output cannot be predicted from
    /// what the main RNG's 64-bit seed lets an observer work out.
    pub(crate) secret_rng: ChaCha20Rng,
    pub(crate) peers: PeerTable,
    /// Every stream some role holds, and which: written when a role adopts a
    /// stream, cleared when it lets the stream go (closed, given up, spliced
    /// and ended).
    owners: BTreeMap<StreamId, Owner>,
    next_stream: u64,
    next_query: u64,
}

impl Ctx {
    pub(crate) fn new(
        timeouts: Timeouts,
        limits: Limits,
        rng: ChaCha8Rng,
        secret_rng: ChaCha20Rng,
    ) -> Ctx {
        Ctx {
            timeouts,
            limits,
            out: VecDeque::new(),
            timers: Timers::default(),
            rng,
            secret_rng,
            peers: PeerTable::default(),
            owners: BTreeMap::new(),
            next_stream: 0,
            next_query: 0,
        }
    }

    /// A fresh id for a stream the core asks for.
    pub(crate) fn stream_id(&mut self) -> StreamId {
        self.next_stream += 1;
        StreamId(self.next_stream & !StreamId::OUTSIDE_BIT)
    }

    /// `owner` holds `stream` from now on.
    pub(crate) fn adopt(&mut self, stream: StreamId, owner: Owner) {
        let previous = self.owners.insert(stream, owner);
        debug_assert!(previous.is_none(), "{stream:?} adopted twice");
    }

    /// `stream`'s owner lets it go.
    pub(crate) fn release(&mut self, stream: StreamId) {
        self.owners.remove(&stream);
    }

    /// The role that holds `stream`, if any does.
    pub(crate) fn owner(&self, stream: StreamId) -> Option<Owner> {
        self.owners.get(&stream).copied()
    }

    /// How many streams the roles hold.
    #[cfg(debug_assertions)]
    pub(crate) fn owned_streams(&self) -> usize {
        self.owners.len()
    }

    /// Every stream the roles hold, with its owner.
    #[cfg(debug_assertions)]
    pub(crate) fn owners(&self) -> impl Iterator<Item = (StreamId, Owner)> + '_ {
        self.owners.iter().map(|(s, o)| (*s, *o))
    }

    /// A fresh id for a DNS lookup.
    pub(crate) fn query_id(&mut self) -> QueryId {
        self.next_query += 1;
        QueryId(self.next_query)
    }

    pub(crate) fn emit(&mut self, o: Output) {
        self.out.push_back(o);
    }

    pub(crate) fn event(&mut self, e: Event) {
        self.out.push_back(Output::Event(e));
    }

    /// Makes sure a connection to `peer` exists or is being made.
    pub(crate) fn reach(
        &mut self,
        now: Instant,
        peer: PeerId,
        addrs: &[PeerAddr],
        dial_timeout: Duration,
    ) -> Reach {
        if self.peers.conns.get(&peer).is_some_and(|c| !c.is_empty()) {
            return Reach::Connected;
        }
        self.dial(now, peer, addrs, Route::Direct, dial_timeout);
        Reach::Dialing
    }

    /// Dials `peer` by `route` unless a dial to it is already under way;
    /// returns false if one was.
    pub(crate) fn dial(
        &mut self,
        now: Instant,
        peer: PeerId,
        addrs: &[PeerAddr],
        route: Route,
        dial_timeout: Duration,
    ) -> bool {
        if self.peers.dialing.contains_key(&peer) {
            return false;
        }
        self.peers.dialing.insert(peer, route);
        let addrs = match route {
            Route::Direct => addrs.to_vec(),
            Route::Via(_) => Vec::new(),
        };
        self.emit(Output::Dial { peer, addrs, via: route.via() });
        self.timers.set(TimerKey::Dial(peer), now + dial_timeout);
        true
    }

    /// Whether a dial to `peer` is under way.
    pub(crate) fn is_dialing(&self, peer: PeerId) -> bool {
        self.peers.dialing.contains_key(&peer)
    }

    /// The connection a new stream to `peer` should use: a direct one if
    /// any; otherwise (if `relayed` is allowed) a relayed one with more than
    /// `margin` left before its relay's duration cap, the freshest first.
    pub(crate) fn usable_conn(
        &self,
        peer: PeerId,
        now: Instant,
        relayed: bool,
        margin: Duration,
    ) -> Option<ConnId> {
        let conns = self.peers.conns.get(&peer)?;
        let direct = conns.iter().find(|(_, c)| c.path == Path::Direct);
        if let Some((id, _)) = direct {
            return Some(*id);
        }
        if !relayed {
            return None;
        }
        conns
            .iter()
            .filter(|(_, c)| c.ends_at().is_none_or(|end| now + margin < end))
            .max_by_key(|(id, c)| (c.since, **id))
            .map(|(id, _)| *id)
    }

    /// Whether any connection to `peer` is up.
    pub(crate) fn is_connected(&self, peer: PeerId) -> bool {
        self.peers.conns.get(&peer).is_some_and(|c| !c.is_empty())
    }

    /// Whether `peer` has a direct connection.
    pub(crate) fn has_direct(&self, peer: PeerId) -> bool {
        self.peers.conns.get(&peer).is_some_and(|c| c.values().any(|c| c.path == Path::Direct))
    }

    /// Whether `peer` has a relayed connection.
    pub(crate) fn has_relayed(&self, peer: PeerId) -> bool {
        self.peers.conns.get(&peer).is_some_and(|c| c.values().any(|c| c.path.is_relayed()))
    }

    /// The path of an open connection to `peer`, a direct one if there is
    /// one (what the node would use first), for the operator's status view.
    pub(crate) fn path_to(&self, peer: PeerId) -> Option<Path> {
        let conns = self.peers.conns.get(&peer)?;
        let paths = || conns.values().map(|c| c.path);
        paths().find(|p| *p == Path::Direct).or_else(|| paths().next())
    }

    /// Connections open now, as the outside reported them: (direct, relayed).
    pub(crate) fn conns_by_path(&self) -> (usize, usize) {
        let all = self.peers.conns.values().flat_map(BTreeMap::values);
        all.fold((0, 0), |(direct, relayed), c| {
            if c.path.is_relayed() {
                (direct, relayed + 1)
            } else {
                (direct + 1, relayed)
            }
        })
    }

    /// Records a connection; returns the route of the dial of ours it
    /// answers, if one was waiting.
    pub(crate) fn peer_connected(
        &mut self,
        now: Instant,
        peer: PeerId,
        conn: ConnId,
        path: Path,
        limit: Option<CircuitLimit>,
    ) -> Option<Route> {
        let info = ConnInfo { path, limit: limit.filter(|_| path.is_relayed()), since: now };
        self.peers.conns.entry(peer).or_default().insert(conn, info);
        // A direct connection does not answer a relayed dial (it may be a
        // hole punch landing while the circuit is still being built).
        let answers = match self.peers.dialing.get(&peer) {
            Some(Route::Via(_)) => path.is_relayed(),
            Some(Route::Direct) => true,
            None => false,
        };
        if !answers {
            return None;
        }
        self.timers.cancel(TimerKey::Dial(peer));
        self.peers.dialing.remove(&peer)
    }

    pub(crate) fn peer_disconnected(&mut self, peer: PeerId, conn: ConnId) {
        if let Some(c) = self.peers.conns.get_mut(&peer) {
            c.remove(&conn);
            if c.is_empty() {
                self.peers.conns.remove(&peer);
            }
        }
    }

    /// Records a failed (or timed out) dial; returns its route if it was ours.
    pub(crate) fn dial_failed(&mut self, peer: PeerId) -> Option<Route> {
        self.timers.cancel(TimerKey::Dial(peer));
        self.peers.dialing.remove(&peer)
    }

    pub(crate) fn pending_dials(&self) -> usize {
        self.peers.dialing.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::from_micros(ms * 1000)
    }

    #[test]
    fn timers_fire_in_order_and_moves_replace() {
        let mut t = Timers::default();
        t.set(TimerKey::ExitRefresh, at(30));
        t.set(TimerKey::ClientSession(StreamId(1)), at(10));
        t.set(TimerKey::ClientSession(StreamId(1)), at(20)); // moved, not added
        t.set(TimerKey::DirectoryExpiry, at(5));
        assert_eq!(t.next(), Some((at(5), TimerKey::DirectoryExpiry)));
        assert_eq!(t.non_periodic(), 1);
        assert_eq!(t.pop_due(at(4)), None);
        assert_eq!(t.pop_due(at(25)), Some(TimerKey::DirectoryExpiry));
        assert_eq!(t.pop_due(at(25)), Some(TimerKey::ClientSession(StreamId(1))));
        assert_eq!(t.pop_due(at(25)), None);
        assert_eq!(t.non_periodic(), 0);
        t.set(TimerKey::Dial(PeerId::from_u64(1)), at(40));
        t.cancel(TimerKey::Dial(PeerId::from_u64(1)));
        t.cancel(TimerKey::Dial(PeerId::from_u64(1)));
        assert_eq!(t.non_periodic(), 0);
        assert_eq!(t.next(), Some((at(30), TimerKey::ExitRefresh)));
    }
}
