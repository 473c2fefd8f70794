//! The exit role: one session per inbound `/meshproxy/proxy/1` stream.
//!
//! ```text
//! AwaitRequest ──decode──▶ ticket ──▶ (domain?) Resolving ──▶ Connecting ──▶ Spliced ──▶ gone
//!       │                    │               │                     │
//!       └─ bad frame /       └─ no valid     └─ policy: nothing    └─ next allowed address,
//!          version → 0x01       ticket → 0x02   allowed → 0x02        or the failure status
//! ```
//! Unless the exit is `open`, a request is served only with a ticket from one
//! of the exit's hubs naming the peer it came from ([`crate::ticket`]); the
//! check comes before any lookup or dial ([`TicketGate`] keeps verified
//! tickets per peer, so a client's later requests cost a byte comparison).
//!
//! The policy is checked on every address right before it is dialed, so a
//! name that resolves to a private address is caught exactly like a literal.

use crate::config::{ExitConfig, HubContact};
use crate::ctx::{Ctx, Owner, TimerKey};
use crate::ids::{PeerId, QueryId, StreamId};
use crate::io::{Close, Event, Output, ResolveError, SpliceLimits, SpliceReport};
use crate::peer_counts::PeerCounts;
use crate::policy::{parse_inet_aton, ExitPolicy};
use crate::record::Role;
use crate::target::{Status, TargetAddr};
use crate::ticket::TicketRefusal;
use crate::ticket_gate::TicketGate;
use crate::time::Instant;
use crate::wire::frame::Decoded;
use crate::wire::proxy::{self, ConnectRequest, ConnectResponse};
use bytes::Bytes;
use bytes::BytesMut;
use core::time::Duration;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

#[derive(Debug)]
enum Phase {
    AwaitRequest { inbox: Vec<u8> },
    Resolving { query: QueryId, port: u16 },
    Connecting { origin: StreamId, rest: Vec<SocketAddr> },
    Spliced { origin: StreamId },
}

#[derive(Debug)]
struct ExitSession {
    peer: PeerId,
    phase: Phase,
    /// Bytes the client sent after its request (the app's pipelined data).
    early: BytesMut,
}

/// Most addresses learned at run time ([`ExitRole::add_own_address`]), so
/// peers reporting made-up observed addresses cannot grow the policy.
const MAX_LEARNED_OWN_ADDRS: usize = 32;

/// The exit side of `/meshproxy/proxy/1`.
#[derive(Debug)]
pub(crate) struct ExitRole {
    policy: ExitPolicy,
    sessions: BTreeMap<StreamId, ExitSession>,
    per_peer: PeerCounts,
    /// Origin streams and DNS lookups back to their session.
    origins: BTreeMap<StreamId, StreamId>,
    queries: BTreeMap<QueryId, StreamId>,
    /// Serve peers without a ticket.
    open: bool,
    /// Clients' tickets from the hubs.
    tickets: TicketGate,
    policy_config: crate::policy::ExitPolicyConfig,
    own_addrs: Vec<IpAddr>,
    learned_addrs: usize,
}

impl ExitRole {
    pub(crate) fn new(config: &ExitConfig, hubs: &[HubContact], wall_clock: Duration) -> ExitRole {
        ExitRole {
            policy: ExitPolicy::new(&config.policy, &config.own_addrs),
            sessions: BTreeMap::new(),
            per_peer: PeerCounts::default(),
            origins: BTreeMap::new(),
            queries: BTreeMap::new(),
            open: config.open,
            tickets: TicketGate::new(Role::Client, hubs, wall_clock),
            policy_config: config.policy.clone(),
            own_addrs: config.own_addrs.clone(),
            learned_addrs: 0,
        }
    }

    /// A reload's policy: every address dialed from now on is checked
    /// against it (sessions already spliced keep running).
    pub(crate) fn set_policy(&mut self, policy: &crate::policy::ExitPolicyConfig) {
        self.policy_config = policy.clone();
        self.policy = ExitPolicy::new(&self.policy_config, &self.own_addrs);
    }

    /// Others see this exit at `ip`: deny it as a destination from now on.
    pub(crate) fn add_own_address(&mut self, ip: IpAddr) {
        if self.own_addrs.contains(&ip) || self.learned_addrs >= MAX_LEARNED_OWN_ADDRS {
            return;
        }
        self.learned_addrs += 1;
        self.own_addrs.push(ip);
        self.policy = ExitPolicy::new(&self.policy_config, &self.own_addrs);
    }

    /// Checks `peer`'s ticket (unless the exit is open).
    fn admit(
        &mut self,
        now: Instant,
        peer: PeerId,
        presented: &Bytes,
    ) -> Result<(), TicketRefusal> {
        if self.open {
            return Ok(());
        }
        self.tickets.admit(now, peer, presented)
    }

    pub(crate) fn session_count(&self) -> usize {
        self.sessions.len()
    }

    pub(crate) fn stream_count(&self) -> usize {
        self.sessions.len() + self.origins.len()
    }

    /// The most sessions any one client peer holds here.
    pub(crate) fn busiest_peer(&self) -> usize {
        self.per_peer.busiest()
    }

    pub(crate) fn pending_queries(&self) -> usize {
        self.queries.len()
    }

    /// Whether `query` is one of this exit's lookups.
    pub(crate) fn asked(&self, query: QueryId) -> bool {
        self.queries.contains_key(&query)
    }

    /// The session a stream (peer side or origin side) belongs to.
    pub(crate) fn session_of(&self, stream: StreamId) -> Option<StreamId> {
        if self.sessions.contains_key(&stream) {
            Some(stream)
        } else {
            self.origins.get(&stream).copied()
        }
    }

    pub(crate) fn on_inbound(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        stream: StreamId,
        peer: PeerId,
    ) {
        let mine = self.per_peer.get(&peer);
        if self.sessions.len() >= ctx.limits.max_exit_sessions
            || mine >= ctx.limits.max_sessions_per_peer
        {
            // Answer rather than reset, so the client knows to try elsewhere.
            respond(ctx, stream, Status::GeneralFailure);
            ctx.emit(Output::Close { stream, how: Close::Fin });
            return;
        }
        self.per_peer.add(peer);
        let phase = Phase::AwaitRequest { inbox: Vec::new() };
        self.sessions.insert(stream, ExitSession { peer, phase, early: BytesMut::new() });
        ctx.adopt(stream, Owner::Exit);
        ctx.timers.set(TimerKey::ExitSession(stream), now + ctx.timeouts.request);
    }

    pub(crate) fn on_data(&mut self, ctx: &mut Ctx, now: Instant, stream: StreamId, data: &[u8]) {
        let Some(s) = self.sessions.get_mut(&stream) else { return };
        let Phase::AwaitRequest { inbox } = &mut s.phase else {
            // Data before our response: keep it for the origin, bounded.
            if s.early.len() + data.len() > EARLY_DATA_MAX {
                self.abort(ctx, stream, Close::Reset);
                return;
            }
            s.early.extend_from_slice(data);
            return;
        };
        inbox.extend_from_slice(data);
        match proxy::decode_request(inbox) {
            Ok(Decoded::Incomplete) => {}
            Ok(Decoded::Complete { msg: req, consumed: used }) => {
                let rest = &inbox[used..];
                if rest.len() > EARLY_DATA_MAX {
                    self.abort(ctx, stream, Close::Reset);
                    return;
                }
                s.early.extend_from_slice(rest);
                let peer = s.peer;
                if let Err(why) = self.admit(now, peer, &req.ticket) {
                    ctx.event(Event::ExitNotAdmitted { peer, why });
                    respond(ctx, stream, Status::NotAllowed);
                    self.abort(ctx, stream, Close::Fin);
                    return;
                }
                self.on_request(ctx, now, stream, req);
            }
            // Whatever the decode error, the client broke the protocol.
            Err(_) => {
                let peer = s.peer;
                ctx.event(Event::PeerProtocolError { peer });
                respond(ctx, stream, Status::GeneralFailure);
                self.abort(ctx, stream, Close::Fin);
            }
        }
    }

    fn on_request(&mut self, ctx: &mut Ctx, now: Instant, stream: StreamId, req: ConnectRequest) {
        let port = req.target.port();
        let literal = match &req.target {
            TargetAddr::Ip(sa) => Some(sa.ip()),
            // A resolver would read "2130706433" or "0x7f.1" as an address, so we do too.
            TargetAddr::Domain(name, _) => parse_inet_aton(name).map(IpAddr::V4),
        };
        match (literal, req.target) {
            (Some(ip), _) => self.dial(ctx, now, stream, vec![SocketAddr::new(ip, port)]),
            (None, TargetAddr::Domain(name, _)) => {
                let query = ctx.query_id();
                self.queries.insert(query, stream);
                if let Some(s) = self.sessions.get_mut(&stream) {
                    s.phase = Phase::Resolving { query, port };
                }
                ctx.emit(Output::Resolve { query, name });
                ctx.timers.set(TimerKey::ExitSession(stream), now + ctx.timeouts.origin_connect);
            }
            (None, TargetAddr::Ip(_)) => unreachable!("an IP target is a literal"),
        }
    }

    pub(crate) fn on_resolved(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        query: QueryId,
        result: Result<Vec<IpAddr>, ResolveError>,
    ) {
        let Some(stream) = self.queries.remove(&query) else { return };
        let Some(s) = self.sessions.get(&stream) else { return };
        let Phase::Resolving { port, .. } = s.phase else { return };
        match result {
            Ok(ips) if !ips.is_empty() => {
                let addrs = ips.into_iter().map(|ip| SocketAddr::new(ip, port)).collect();
                self.dial(ctx, now, stream, addrs);
            }
            Ok(_) | Err(ResolveError::NotFound) => self.fail(ctx, stream, Status::HostUnreachable),
            Err(ResolveError::Failed) => self.fail(ctx, stream, Status::GeneralFailure),
        }
    }

    /// Dials the first address the policy allows; the rest are kept to try next.
    fn dial(&mut self, ctx: &mut Ctx, now: Instant, stream: StreamId, candidates: Vec<SocketAddr>) {
        let mut allowed = Vec::with_capacity(candidates.len());
        let mut first_denied = None;
        for addr in candidates {
            match self.policy.check(addr.ip(), addr.port()) {
                Ok(()) => allowed.push(addr),
                Err(_) => {
                    first_denied.get_or_insert(addr.ip());
                }
            }
        }
        if allowed.is_empty() {
            ctx.event(Event::ExitDenied { ip: first_denied });
            self.fail(ctx, stream, Status::NotAllowed);
            return;
        }
        allowed.reverse(); // pop() takes them in the resolver's order
        self.connect_next(ctx, now, stream, allowed, Status::HostUnreachable);
    }

    fn connect_next(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        stream: StreamId,
        mut rest: Vec<SocketAddr>,
        last: Status,
    ) {
        let Some(addr) = rest.pop() else {
            self.fail(ctx, stream, last);
            return;
        };
        let origin = ctx.stream_id();
        self.origins.insert(origin, stream);
        ctx.adopt(origin, Owner::Exit);
        if let Some(s) = self.sessions.get_mut(&stream) {
            s.phase = Phase::Connecting { origin, rest };
        }
        ctx.emit(Output::ConnectOrigin { stream: origin, addr });
        ctx.timers.set(TimerKey::ExitSession(stream), now + ctx.timeouts.origin_connect);
    }

    pub(crate) fn on_origin_connected(&mut self, ctx: &mut Ctx, origin: StreamId) {
        let Some(&stream) = self.origins.get(&origin) else { return };
        let Some(s) = self.sessions.get_mut(&stream) else { return };
        if !matches!(s.phase, Phase::Connecting { origin: o, .. } if o == origin) {
            return;
        }
        s.phase = Phase::Spliced { origin };
        let peer = s.peer;
        let early = core::mem::take(&mut s.early).freeze();
        ctx.timers.cancel(TimerKey::ExitSession(stream));
        respond(ctx, stream, Status::Succeeded);
        ctx.event(Event::ExitConnected { peer });
        ctx.emit(Output::Splice {
            a: stream,
            b: origin,
            a_to_b_prefix: early,
            b_to_a_prefix: Bytes::new(),
            limits: SpliceLimits { idle_timeout: ctx.timeouts.idle },
        });
    }

    pub(crate) fn on_origin_failed(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        origin: StreamId,
        status: Status,
    ) {
        let Some(stream) = self.release_origin(ctx, origin) else { return };
        let Some(s) = self.sessions.get_mut(&stream) else { return };
        let Phase::Connecting { origin: o, rest, .. } = &mut s.phase else { return };
        if *o != origin {
            return;
        }
        let rest = core::mem::take(rest);
        self.connect_next(ctx, now, stream, rest, status);
    }

    pub(crate) fn on_splice_ended(
        &mut self,
        ctx: &mut Ctx,
        stream: StreamId,
        report: SpliceReport,
    ) {
        let Some(s) = self.sessions.get(&stream) else { return };
        let Phase::Spliced { origin } = s.phase else { return };
        self.release_origin(ctx, origin);
        self.forget(ctx, stream);
        ctx.event(Event::SessionClosed { up: report.a_to_b, down: report.b_to_a, how: report.how });
    }

    /// The client went away (or reset) before the splice.
    pub(crate) fn on_closed(&mut self, ctx: &mut Ctx, stream: StreamId, how: Close) {
        let Some(stream) = self.session_of(stream) else { return };
        self.abort(ctx, stream, how);
    }

    pub(crate) fn on_deadline(&mut self, ctx: &mut Ctx, now: Instant, stream: StreamId) {
        let Some(s) = self.sessions.get_mut(&stream) else { return };
        match &mut s.phase {
            Phase::AwaitRequest { .. } => {
                let peer = s.peer;
                ctx.event(Event::PeerProtocolError { peer });
                self.abort(ctx, stream, Close::Reset);
            }
            Phase::Resolving { .. } => self.fail(ctx, stream, Status::HostUnreachable),
            Phase::Connecting { origin, rest, .. } => {
                // Abandon this address (the driver cancels its dial) and try the next.
                let origin = *origin;
                let rest = core::mem::take(rest);
                self.release_origin(ctx, origin);
                ctx.emit(Output::Close { stream: origin, how: Close::Reset });
                self.connect_next(ctx, now, stream, rest, Status::TtlExpired);
            }
            Phase::Spliced { .. } => {}
        }
    }

    /// Answers the client with a failure and ends the session.
    fn fail(&mut self, ctx: &mut Ctx, stream: StreamId, status: Status) {
        ctx.event(Event::ExitConnectFailed { status });
        respond(ctx, stream, status);
        self.abort(ctx, stream, Close::Fin);
    }

    /// Ends a session that is not spliced: closes its streams and forgets it.
    fn abort(&mut self, ctx: &mut Ctx, stream: StreamId, how: Close) {
        let Some(s) = self.sessions.get(&stream) else { return };
        match &s.phase {
            Phase::Resolving { query, .. } => {
                self.queries.remove(query);
            }
            Phase::Connecting { origin, .. } | Phase::Spliced { origin } => {
                // Only a live origin needs closing: one whose dial failed, or
                // that a deadline already closed, is gone from `origins`.
                let origin = *origin;
                if self.release_origin(ctx, origin).is_some() {
                    ctx.emit(Output::Close { stream: origin, how: Close::Reset });
                }
            }
            Phase::AwaitRequest { .. } => {}
        }
        ctx.emit(Output::Close { stream, how });
        self.forget(ctx, stream);
        ctx.timers.cancel(TimerKey::ExitSession(stream));
    }

    /// Lets an origin stream go; returns the session it served.
    fn release_origin(&mut self, ctx: &mut Ctx, origin: StreamId) -> Option<StreamId> {
        let stream = self.origins.remove(&origin)?;
        ctx.release(origin);
        Some(stream)
    }

    fn forget(&mut self, ctx: &mut Ctx, stream: StreamId) {
        if let Some(s) = self.sessions.remove(&stream) {
            ctx.release(stream);
            self.per_peer.remove(&s.peer);
        }
    }
}

/// Early data an exit buffers beyond the request before it answers.
const EARLY_DATA_MAX: usize = 64 * 1024;

fn respond(ctx: &mut Ctx, stream: StreamId, status: Status) {
    let mut buf = Vec::new();
    proxy::encode_response(&ConnectResponse { status, bound: None }, &mut buf);
    ctx.emit(Output::Transmit { stream, data: Bytes::from(buf) });
}
