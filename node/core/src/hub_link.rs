//! A node's links to its hubs: dial, answer the challenge, register (exits
//! and agents) and heartbeat, carry `Find`/`Resolve` for clients, and keep clients'
//! tickets fresh (renewed at half their lifetime, so a hub outage of up to
//! half a lifetime costs nothing). A link that fails in
//! any way — reset, timeout, protocol error — is torn down and redialed after
//! a seeded backoff, which is how registrations come back after a hub restarts
//! or a partition heals.

use crate::admission::Credential;
use crate::config::HubContact;
use crate::ctx::{Ctx, Owner, Reach, TimerKey};
use crate::hub::send;
use crate::ids::{PeerId, StreamId};
use crate::io::{Close, Event, Output, Protocol};
use crate::record::{Attrs, PeerAddr, PeerFilter, PeerRecord};
use crate::selection::backoff::Backoff;
use crate::time::Instant;
use crate::wire::frame::Decoded;
use crate::wire::hub::{self as wire, HubErrorCode, HubMessage, Role, HUB_VERSION};
use core::time::Duration;
use std::collections::VecDeque;

/// What a listed node (an exit or an agent) registers.
#[derive(Clone, Debug)]
pub(crate) struct Registration {
    /// What it is listed as; one that [`Role::is_listed`].
    pub(crate) role: Role,
    pub(crate) addrs: Vec<PeerAddr>,
    pub(crate) attrs: Attrs,
    pub(crate) capacity: u32,
}

/// Something a link learned that the rest of the node cares about.
#[derive(Debug)]
pub(crate) enum LinkEvent {
    /// A link is up and can carry requests.
    Ready {
        /// The hub it links to.
        hub: PeerId,
    },
    /// A `Find` answered.
    Peers {
        /// The hub that answered.
        hub: PeerId,
        /// The role asked for.
        role: Role,
        /// The peers it listed in that role.
        peers: Vec<PeerRecord>,
    },
    /// A link went down with requests outstanding; they are lost.
    Lost,
    /// A hub handed this node a ticket (at admission, or renewed).
    Ticket {
        /// The hub that signed it.
        hub: PeerId,
        /// The ticket.
        ticket: bytes::Bytes,
        /// When it stops being usable, by this node's clock.
        until: Instant,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Request {
    Register,
    Heartbeat,
    /// Peers listed in this role (exits for a client, agents for a gateway).
    Find(Role),
    RenewTicket,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Waiting to (re)dial at the link's timer.
    Idle,
    Dialing,
    Opening(StreamId),
    AwaitChallenge(StreamId),
    AwaitAuthOk(StreamId),
    Ready(StreamId),
}

#[derive(Debug)]
struct Link {
    hub: HubContact,
    state: State,
    failures: u32,
    inbox: Vec<u8>,
    queue: VecDeque<Request>,
    in_flight: Option<(Request, Instant)>,
    next_heartbeat: Option<Instant>,
    heartbeat_every: Duration,
    registered: bool,
    /// Whether we hold a relay reservation at this hub (registered as such).
    relayed: bool,
    /// When to ask for a fresh ticket (half its lifetime after the last).
    renew_at: Option<Instant>,
}

/// All of a node's hub links.
#[derive(Debug)]
pub(crate) struct HubLinks {
    local: PeerId,
    links: Vec<Link>,
    role: Role,
    credential: Credential,
    registration: Option<Registration>,
    /// Register without direct addresses (this node is not directly reachable).
    hide_addrs: bool,
    backoff: Backoff,
    /// What the links learned, not yet passed on ([`HubLinks::poll_event`]).
    events: VecDeque<LinkEvent>,
}

impl HubLinks {
    pub(crate) fn new(
        local: PeerId,
        hubs: &[HubContact],
        credential: Credential,
        role: Role,
        registration: Option<Registration>,
        backoff: Backoff,
    ) -> HubLinks {
        let links = hubs
            .iter()
            .map(|hub| Link {
                hub: hub.clone(),
                state: State::Idle,
                failures: 0,
                inbox: Vec::new(),
                queue: VecDeque::new(),
                in_flight: None,
                next_heartbeat: None,
                heartbeat_every: Duration::from_secs(10),
                registered: false,
                relayed: false,
                renew_at: None,
            })
            .collect();
        HubLinks {
            local,
            links,
            role,
            credential,
            registration,
            hide_addrs: false,
            backoff,
            events: VecDeque::new(),
        }
    }

    /// The next thing the links learned that other roles care about; `Node`
    /// drains these after every step.
    pub(crate) fn poll_event(&mut self) -> Option<LinkEvent> {
        self.events.pop_front()
    }

    /// Records whether this node holds a relay reservation at `hub`, and
    /// registers again there if that changed.
    pub(crate) fn set_relayed(&mut self, ctx: &mut Ctx, now: Instant, hub: PeerId, relayed: bool) {
        for i in 0..self.links.len() {
            if self.links[i].hub.peer == hub && self.links[i].relayed != relayed {
                self.links[i].relayed = relayed;
                self.reregister(ctx, now, i);
            }
        }
    }

    /// Registers without (or again with) direct addresses from now on;
    /// returns whether that changed (then [`Self::reregister_all`] tells the hubs).
    pub(crate) fn set_hide_addrs(&mut self, hide: bool) -> bool {
        let changed = self.hide_addrs != hide;
        self.hide_addrs = hide;
        changed
    }

    /// A reload's attributes and capacity for this node's listing; true if
    /// they changed (then [`Self::reregister_all`] tells the hubs).
    pub(crate) fn set_listing(&mut self, attrs: crate::record::Attrs, capacity: u32) -> bool {
        let Some(r) = &mut self.registration else { return false };
        let changed = r.attrs != attrs || r.capacity != capacity;
        r.attrs = attrs;
        r.capacity = capacity;
        changed
    }

    /// Sends a fresh `Register` on every ready link.
    pub(crate) fn reregister_all(&mut self, ctx: &mut Ctx, now: Instant) {
        for i in 0..self.links.len() {
            self.reregister(ctx, now, i);
        }
    }

    /// Sends a fresh `Register` on a ready link (a link not ready yet will
    /// register with the current values once it is).
    fn reregister(&mut self, ctx: &mut Ctx, now: Instant, i: usize) {
        let l = &mut self.links[i];
        if self.registration.is_none() || !matches!(l.state, State::Ready(_)) {
            return;
        }
        if !l.queue.contains(&Request::Register) {
            l.queue.push_back(Request::Register);
        }
        self.pump(ctx, now, i, 0);
    }

    /// Dials every hub.
    pub(crate) fn start(&mut self, ctx: &mut Ctx, now: Instant) {
        for i in 0..self.links.len() {
            self.connect(ctx, now, i);
        }
    }

    #[cfg(debug_assertions)] // only the owner table's check asks
    pub(crate) fn owns(&self, stream: StreamId) -> bool {
        self.links.iter().any(|l| l.stream() == Some(stream))
    }

    /// How many links hold a stream now.
    #[cfg(debug_assertions)] // only the owner table's check asks
    pub(crate) fn stream_count(&self) -> usize {
        self.links.iter().filter(|l| l.stream().is_some()).count()
    }

    /// How many hubs the exit is registered at right now, as far as it knows.
    pub(crate) fn registered_at(&self) -> usize {
        self.links.iter().filter(|l| l.registered).count()
    }

    /// Asks every ready hub for peers listed in `role`; false if none is ready.
    pub(crate) fn find(&mut self, ctx: &mut Ctx, now: Instant, role: Role, limit: u16) -> bool {
        self.request_all(ctx, now, Request::Find(role), limit)
    }

    fn request_all(&mut self, ctx: &mut Ctx, now: Instant, r: Request, limit: u16) -> bool {
        let mut any = false;
        for i in 0..self.links.len() {
            let l = &mut self.links[i];
            if !matches!(l.state, State::Ready(_)) {
                continue;
            }
            any = true;
            if l.in_flight.map(|(q, _)| q) != Some(r) && !l.queue.contains(&r) {
                l.queue.push_back(r);
            }
            self.pump(ctx, now, i, limit);
        }
        any
    }

    fn connect(&mut self, ctx: &mut Ctx, now: Instant, i: usize) {
        let l = &mut self.links[i];
        match ctx.reach(now, l.hub.peer, &l.hub.addrs, ctx.timeouts.dial) {
            Reach::Connected => self.open(ctx, now, i),
            Reach::Dialing => {
                l.state = State::Dialing;
                ctx.timers.cancel(TimerKey::HubLink(i));
            }
        }
    }

    fn open(&mut self, ctx: &mut Ctx, now: Instant, i: usize) {
        let stream = ctx.stream_id();
        let l = &mut self.links[i];
        l.state = State::Opening(stream);
        ctx.adopt(stream, Owner::HubLink);
        l.inbox.clear();
        ctx.emit(Output::OpenStream {
            stream,
            peer: l.hub.peer,
            conn: None,
            protocol: Protocol::Hub,
        });
        ctx.timers.set(TimerKey::HubLink(i), now + ctx.timeouts.hub_request);
    }

    pub(crate) fn on_peer_connected(&mut self, ctx: &mut Ctx, now: Instant, peer: PeerId) {
        for i in 0..self.links.len() {
            if self.links[i].hub.peer == peer && self.links[i].state == State::Dialing {
                self.open(ctx, now, i);
            }
        }
    }

    pub(crate) fn on_dial_failed(&mut self, ctx: &mut Ctx, now: Instant, peer: PeerId) {
        for i in 0..self.links.len() {
            if self.links[i].hub.peer == peer && self.links[i].state == State::Dialing {
                self.fail(ctx, now, i, None);
            }
        }
    }

    fn index_of(&self, stream: StreamId) -> Option<usize> {
        self.links.iter().position(|l| l.stream() == Some(stream))
    }

    pub(crate) fn on_stream_opened(&mut self, stream: StreamId) {
        if let Some(i) = self.index_of(stream) {
            if self.links[i].state == State::Opening(stream) {
                self.links[i].state = State::AwaitChallenge(stream);
            }
        }
    }

    pub(crate) fn on_stream_refused(&mut self, ctx: &mut Ctx, now: Instant, stream: StreamId) {
        if let Some(i) = self.index_of(stream) {
            self.fail(ctx, now, i, None);
        }
    }

    pub(crate) fn on_closed(&mut self, ctx: &mut Ctx, now: Instant, stream: StreamId, how: Close) {
        if let Some(i) = self.index_of(stream) {
            // The hub ended the stream; answer a Fin with ours so nothing lingers.
            let close = if how == Close::Fin { Some(Close::Fin) } else { None };
            self.fail(ctx, now, i, close);
        }
    }

    pub(crate) fn on_data(&mut self, ctx: &mut Ctx, now: Instant, stream: StreamId, data: &[u8]) {
        let Some(i) = self.index_of(stream) else { return };
        self.links[i].inbox.extend_from_slice(data);
        loop {
            let l = &mut self.links[i];
            if l.stream() != Some(stream) {
                return;
            }
            match wire::decode(&l.inbox) {
                Ok(Decoded::Incomplete) => return,
                Ok(Decoded::Complete { msg, consumed: used }) => {
                    l.inbox.drain(..used);
                    self.on_message(ctx, now, i, stream, msg);
                }
                Err(_) => {
                    let hub = l.hub.peer;
                    ctx.event(Event::PeerProtocolError { peer: hub });
                    self.fail(ctx, now, i, Some(Close::Reset));
                    return;
                }
            }
        }
    }

    fn on_message(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        i: usize,
        stream: StreamId,
        msg: HubMessage,
    ) {
        let l = &mut self.links[i];
        match (l.state, msg) {
            (State::AwaitChallenge(_), HubMessage::Challenge { version, nonce })
                if version == HUB_VERSION =>
            {
                let proof = self.credential.prove(&nonce, &l.hub.peer, &self.local, self.role);
                send(
                    ctx,
                    stream,
                    &HubMessage::Auth {
                        version: HUB_VERSION,
                        role: self.role,
                        key_id: self.credential.key_id.clone(),
                        proof,
                    },
                );
                l.state = State::AwaitAuthOk(stream);
                ctx.timers.set(TimerKey::HubLink(i), now + ctx.timeouts.hub_request);
            }
            (State::AwaitAuthOk(_), HubMessage::AuthOk { grant }) => {
                l.state = State::Ready(stream);
                l.failures = 0;
                let hub = l.hub.peer;
                self.on_grant(now, i, grant);
                let l = &mut self.links[i];
                if self.registration.is_some() {
                    l.queue.push_front(Request::Register);
                }
                self.events.push_back(LinkEvent::Ready { hub });
                self.pump(ctx, now, i, 0);
            }
            (State::Ready(_), msg) => self.on_response(ctx, now, i, msg),
            (State::AwaitAuthOk(_), HubMessage::Error { code, .. }) => {
                // Refused (a wrong token, a key without this role): say so, and
                // try again on the backoff — the operator may fix the hub's keys.
                let hub = l.hub.peer;
                ctx.event(Event::HubRefused { hub, code });
                self.fail(ctx, now, i, Some(Close::Fin));
            }
            _ => {
                let hub = l.hub.peer;
                ctx.event(Event::PeerProtocolError { peer: hub });
                self.fail(ctx, now, i, Some(Close::Reset));
            }
        }
    }

    fn on_response(&mut self, ctx: &mut Ctx, now: Instant, i: usize, msg: HubMessage) {
        let l = &mut self.links[i];
        let Some((req, _)) = l.in_flight.take() else {
            let hub = l.hub.peer;
            ctx.event(Event::PeerProtocolError { peer: hub });
            self.fail(ctx, now, i, Some(Close::Reset));
            return;
        };
        match (req, msg) {
            (Request::Register, HubMessage::Registered { ttl_secs })
            | (Request::Heartbeat, HubMessage::HeartbeatAck { ttl_secs }) => {
                // Three heartbeats per TTL: one lost or late beat never expires us.
                let ttl = Duration::from_secs(u64::from(ttl_secs.max(3)));
                l.heartbeat_every = ttl / 3;
                l.next_heartbeat = Some(now + l.heartbeat_every);
                if req == Request::Register {
                    l.registered = true;
                    let hub = l.hub.peer;
                    ctx.event(Event::HubRegistered { hub });
                }
            }
            (Request::Heartbeat, HubMessage::Error { code: HubErrorCode::NotRegistered, .. }) => {
                // The hub forgot us (it restarted, or our TTL ran out during a partition).
                l.registered = false;
                l.queue.push_front(Request::Register);
            }
            (Request::Find(role), HubMessage::Peers { mut peers }) => {
                // A hub answers with the role asked for; a record of another
                // role is not what was asked for, whatever else it says.
                peers.retain(|p| p.role == role);
                let hub = l.hub.peer;
                self.events.push_back(LinkEvent::Peers { hub, role, peers });
            }
            (Request::RenewTicket, HubMessage::Ticket { grant }) => self.on_grant(now, i, grant),
            _ => {
                let hub = l.hub.peer;
                ctx.event(Event::PeerProtocolError { peer: hub });
                self.fail(ctx, now, i, Some(Close::Reset));
                return;
            }
        }
        self.pump(ctx, now, i, 0);
    }

    /// Sends the next queued request if none is in flight, and arms the timer.
    fn pump(&mut self, ctx: &mut Ctx, now: Instant, i: usize, find_limit: u16) {
        let l = &mut self.links[i];
        let State::Ready(stream) = l.state else { return };
        if l.in_flight.is_none() {
            if let Some(req) = l.queue.pop_front() {
                let msg = match req {
                    Request::Register => {
                        let Some(r) = &self.registration else { return };
                        HubMessage::Register {
                            role: self.role,
                            addrs: if self.hide_addrs { Vec::new() } else { r.addrs.clone() },
                            attrs: r.attrs.clone(),
                            capacity: r.capacity,
                            relayed: l.relayed,
                        }
                    }
                    Request::Heartbeat => HubMessage::Heartbeat { load: 0 },
                    Request::RenewTicket => HubMessage::RenewTicket,
                    Request::Find(role) => HubMessage::Find {
                        role,
                        filter: PeerFilter::default(),
                        limit: if find_limit == 0 { wire::MAX_PEERS as u16 } else { find_limit },
                    },
                };
                send(ctx, stream, &msg);
                l.in_flight = Some((req, now + ctx.timeouts.hub_request));
            }
        }
        let wake = [l.in_flight.map(|(_, deadline)| deadline), l.next_heartbeat, l.renew_at]
            .into_iter()
            .flatten()
            .min();
        match wake {
            Some(at) => ctx.timers.set(TimerKey::HubLink(i), at),
            None => ctx.timers.cancel(TimerKey::HubLink(i)),
        }
    }

    pub(crate) fn on_timer(&mut self, ctx: &mut Ctx, now: Instant, i: usize) {
        let Some(l) = self.links.get_mut(i) else { return };
        match l.state {
            State::Idle => self.connect(ctx, now, i),
            State::Dialing => {}
            State::Opening(_) | State::AwaitChallenge(_) | State::AwaitAuthOk(_) => {
                self.fail(ctx, now, i, Some(Close::Reset));
            }
            State::Ready(_) => {
                if l.in_flight.is_some_and(|(_, deadline)| deadline <= now) {
                    self.fail(ctx, now, i, Some(Close::Reset));
                    return;
                }
                if l.renew_at.is_some_and(|at| at <= now) {
                    l.renew_at = None;
                    if !l.queue.contains(&Request::RenewTicket) {
                        l.queue.push_back(Request::RenewTicket);
                    }
                }
                if l.next_heartbeat.is_some_and(|hb| hb <= now) {
                    l.next_heartbeat = None;
                    if !l.queue.contains(&Request::Heartbeat)
                        && !l.queue.contains(&Request::Register)
                    {
                        l.queue.push_back(Request::Heartbeat);
                    }
                }
                self.pump(ctx, now, i, 0);
            }
        }
    }

    /// Tears the link down and schedules a redial after a backoff.
    fn fail(&mut self, ctx: &mut Ctx, now: Instant, i: usize, close: Option<Close>) {
        let l = &mut self.links[i];
        if let Some(stream) = l.stream() {
            ctx.release(stream);
            if let Some(how) = close {
                ctx.emit(Output::Close { stream, how });
            }
        }
        let was_ready = matches!(l.state, State::Ready(_));
        let had_requests = l.in_flight.is_some() || !l.queue.is_empty();
        l.state = State::Idle;
        l.inbox.clear();
        l.in_flight = None;
        l.queue.clear();
        l.next_heartbeat = None;
        l.renew_at = None;
        l.registered = false;
        l.failures = l.failures.saturating_add(1);
        let delay = self.backoff.delay(l.failures, &mut ctx.rng);
        ctx.timers.set(TimerKey::HubLink(i), now + delay);
        if was_ready {
            let hub = l.hub.peer;
            ctx.event(Event::HubLinkLost { hub });
        }
        if had_requests || was_ready {
            self.events.push_back(LinkEvent::Lost);
        }
    }
}

impl HubLinks {
    /// Passes a hub's ticket on (clients use it with exits) and schedules its
    /// renewal at half its lifetime.
    fn on_grant(&mut self, now: Instant, i: usize, grant: wire::TicketGrant) {
        let l = &mut self.links[i];
        let lifetime = Duration::from_secs(u64::from(grant.valid_secs));
        // At least a second apart, whatever a hub claims.
        l.renew_at = Some(now + (lifetime / 2).max(Duration::from_secs(1)));
        let hub = l.hub.peer;
        let ticket = bytes::Bytes::from(grant.ticket);
        self.events.push_back(LinkEvent::Ticket { hub, ticket, until: now + lifetime });
    }
}

impl Link {
    fn stream(&self) -> Option<StreamId> {
        match self.state {
            State::Idle | State::Dialing => None,
            State::Opening(s)
            | State::AwaitChallenge(s)
            | State::AwaitAuthOk(s)
            | State::Ready(s) => Some(s),
        }
    }
}

impl HubLinks {
    /// Each link's hub, state and whether the hub confirmed the registration,
    /// in config order, for the operator's status view.
    pub(crate) fn states(
        &self,
    ) -> impl Iterator<Item = (PeerId, crate::status::LinkState, bool)> + '_ {
        use crate::status::LinkState as S;
        self.links.iter().map(|l| {
            let state = match l.state {
                State::Idle => S::Idle,
                State::Dialing => S::Dialing,
                State::Opening(_) | State::AwaitChallenge(_) | State::AwaitAuthOk(_) => {
                    S::Authenticating
                }
                State::Ready(_) => S::Ready,
            };
            (l.hub.peer, state, l.registered)
        })
    }

    /// How many links can carry a request now.
    pub(crate) fn ready_count(&self) -> usize {
        self.links.iter().filter(|l| matches!(l.state, State::Ready(_))).count()
    }
}
