//! The agent role: the far end of gateways' `/meshproxy/ingress/1` streams,
//! beside a private service. One session per inbound stream:
//!
//! ```text
//! AwaitOpen ──Open──▶ ticket ──▶ service ──▶ (name?) Resolving ──▶ allow-list ──▶ Connecting ──▶ Spliced
//!     │                 │           │                 │                │               │
//!     ├─ bytes after    └─ no valid └─ none by        └─ no answer /  └─ no answer    └─ next allowed
//!     │  Open → reset     ticket →    that name →       failed →         allowed →       address, or
//!     ├─ other version    NotAdmitted UnknownService    Unreachable /    Forbidden       Refused /
//!     │  → Failure                                      Failure          (no dial)       Unreachable /
//!     └─ malformed → reset                                                               Timeout
//! ```
//!
//! The rules are the codec's ([`crate::wire::ingress`]): exactly one `Open`,
//! nothing from the gateway until the answer (a byte early is a protocol
//! error and the stream is reset), exactly one answer, and after `Ok` the
//! agent only splices — it never parses HTTP. The gateway's ticket (a hub's,
//! naming the stream's peer and the gateway role) is checked before any
//! lookup or dial, and a named origin's resolved addresses before it is
//! dialed ([`allow`]). At [`Limits::max_agent_streams`] sessions a new
//! stream is answered `Busy` without reading it.
//!
//! [`Limits::max_agent_streams`]: crate::config::Limits::max_agent_streams

pub mod allow;
pub mod listing;

pub use allow::{parse_origin, AllowList, OriginError};
pub use listing::{agent_labels, ingress_agent, ListingError};

use crate::config::{AgentConfig, HubContact};
use crate::ctx::{Ctx, Owner, TimerKey};
use crate::ids::{PeerId, QueryId, StreamId};
use crate::io::{Close, Event, Output, ResolveError, SpliceLimits, SpliceReport};
use crate::record::Role;
use crate::target::{Status, TargetAddr};
use crate::ticket_gate::TicketGate;
use crate::time::Instant;
use crate::wire::frame::{DecodeError, Decoded};
use crate::wire::ingress::{self, Answer, AnswerStatus, Open, ServiceName};
use bytes::Bytes;
use core::time::Duration;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

#[derive(Debug)]
enum Phase {
    AwaitOpen { inbox: Vec<u8> },
    Resolving { query: QueryId, port: u16 },
    Connecting { origin: StreamId, rest: Vec<SocketAddr> },
    Spliced { origin: StreamId },
}

#[derive(Debug)]
struct Session {
    peer: PeerId,
    /// The gateway's id for the upstream connection (0 until the `Open`).
    upstream: u64,
    phase: Phase,
}

/// The agent side of `/meshproxy/ingress/1`.
#[derive(Debug)]
pub(crate) struct AgentRole {
    services: BTreeMap<ServiceName, TargetAddr>,
    allow: AllowList,
    tickets: TicketGate,
    sessions: BTreeMap<StreamId, Session>,
    /// Origin streams and DNS lookups back to their session.
    origins: BTreeMap<StreamId, StreamId>,
    queries: BTreeMap<QueryId, StreamId>,
}

impl AgentRole {
    pub(crate) fn new(config: &AgentConfig, hubs: &[HubContact], wall_clock: Duration) -> Self {
        AgentRole {
            services: config.services.clone(),
            allow: AllowList::new(config.allow.clone()),
            tickets: TicketGate::new(Role::Gateway, hubs, wall_clock),
            sessions: BTreeMap::new(),
            origins: BTreeMap::new(),
            queries: BTreeMap::new(),
        }
    }

    /// A reload's services and allow-list: every stream opened from now on
    /// (and every address dialed from now on) is checked against them;
    /// streams already spliced keep running.
    pub(crate) fn set_offer(&mut self, config: &AgentConfig) {
        self.services = config.services.clone();
        self.allow = AllowList::new(config.allow.clone());
    }

    pub(crate) fn session_count(&self) -> usize {
        self.sessions.len()
    }

    pub(crate) fn stream_count(&self) -> usize {
        self.sessions.len() + self.origins.len()
    }

    pub(crate) fn pending_queries(&self) -> usize {
        self.queries.len()
    }

    /// Sessions spliced to their origin right now.
    pub(crate) fn spliced_count(&self) -> usize {
        self.sessions.values().filter(|s| matches!(s.phase, Phase::Spliced { .. })).count()
    }

    /// The session a stream (gateway side or origin side) belongs to.
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
        if self.sessions.len() >= ctx.limits.max_agent_streams {
            // Answer rather than reset, so the gateway knows to try another agent.
            answer(ctx, stream, AnswerStatus::Busy);
            ctx.event(Event::AgentStreamRefused { peer, status: AnswerStatus::Busy });
            ctx.emit(Output::Close { stream, how: Close::Fin });
            return;
        }
        let phase = Phase::AwaitOpen { inbox: Vec::new() };
        self.sessions.insert(stream, Session { peer, upstream: 0, phase });
        ctx.adopt(stream, Owner::Agent);
        ctx.timers.set(TimerKey::AgentStream(stream), now + ctx.timeouts.request);
    }

    pub(crate) fn on_data(&mut self, ctx: &mut Ctx, now: Instant, stream: StreamId, data: &[u8]) {
        let Some(s) = self.sessions.get_mut(&stream) else { return };
        let peer = s.peer;
        let inbox = match &mut s.phase {
            Phase::AwaitOpen { inbox } => inbox,
            // The data plane owns a spliced stream's bytes; none come here.
            Phase::Spliced { .. } => return,
            // The gateway wrote before our answer (rule 1 of the codec).
            Phase::Resolving { .. } | Phase::Connecting { .. } => {
                ctx.event(Event::PeerProtocolError { peer });
                self.abort(ctx, stream, Close::Reset);
                return;
            }
        };
        inbox.extend_from_slice(data);
        match ingress::decode_open(inbox) {
            Ok(Decoded::Incomplete) => {}
            Ok(Decoded::Complete { consumed, .. }) if consumed < inbox.len() => {
                ctx.event(Event::PeerProtocolError { peer });
                self.abort(ctx, stream, Close::Reset);
            }
            Ok(Decoded::Complete { msg, .. }) => self.on_open(ctx, now, stream, msg),
            // Another version: an answer every version reads, then the end.
            Err(DecodeError::UnsupportedVersion(_)) => {
                ctx.event(Event::PeerProtocolError { peer });
                self.fail(ctx, stream, AnswerStatus::Failure);
            }
            Err(_) => {
                ctx.event(Event::PeerProtocolError { peer });
                self.abort(ctx, stream, Close::Reset);
            }
        }
    }

    fn on_open(&mut self, ctx: &mut Ctx, now: Instant, stream: StreamId, open: Open) {
        let Some(s) = self.sessions.get_mut(&stream) else { return };
        let peer = s.peer;
        s.upstream = open.upstream;
        // The ticket first: a stranger learns nothing and costs no lookup or dial.
        if let Err(why) = self.tickets.admit(now, peer, &open.ticket) {
            ctx.event(Event::AgentNotAdmitted { peer, why });
            self.fail(ctx, stream, AnswerStatus::NotAdmitted);
            return;
        }
        let Some(origin) = self.services.get(&open.service) else {
            self.fail(ctx, stream, AnswerStatus::UnknownService);
            return;
        };
        match origin.clone() {
            TargetAddr::Ip(addr) => {
                self.connect_next(ctx, now, stream, vec![addr], Status::HostUnreachable)
            }
            TargetAddr::Domain(name, port) => {
                let query = ctx.query_id();
                self.queries.insert(query, stream);
                if let Some(s) = self.sessions.get_mut(&stream) {
                    s.phase = Phase::Resolving { query, port };
                }
                ctx.emit(Output::Resolve { query, name });
                ctx.timers.set(TimerKey::AgentStream(stream), now + ctx.timeouts.origin_connect);
            }
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
        let ips = match result {
            Ok(ips) if !ips.is_empty() => ips,
            Ok(_) | Err(ResolveError::NotFound) => {
                self.fail(ctx, stream, AnswerStatus::Unreachable);
                return;
            }
            Err(ResolveError::Failed) => {
                self.fail(ctx, stream, AnswerStatus::Failure);
                return;
            }
        };
        // Every answer is checked; the allowed ones are dialed in the resolver's order.
        let mut allowed = Vec::with_capacity(ips.len());
        let mut first_refused = None;
        for ip in ips {
            match self.allow.check(ip, port) {
                Ok(()) => allowed.push(SocketAddr::new(ip, port)),
                Err(_) => {
                    first_refused.get_or_insert(ip);
                }
            }
        }
        match (allowed.is_empty(), first_refused) {
            (true, Some(ip)) => {
                ctx.event(Event::AgentOriginDenied { ip });
                self.fail(ctx, stream, AnswerStatus::Forbidden);
            }
            _ => {
                allowed.reverse(); // pop() takes them in the resolver's order
                self.connect_next(ctx, now, stream, allowed, Status::HostUnreachable);
            }
        }
    }

    /// Dials the next address of `rest` (last in, first out), or answers
    /// with `last`'s status when none is left.
    fn connect_next(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        stream: StreamId,
        mut rest: Vec<SocketAddr>,
        last: Status,
    ) {
        let Some(addr) = rest.pop() else {
            self.fail(ctx, stream, status_of(last));
            return;
        };
        let origin = ctx.stream_id();
        self.origins.insert(origin, stream);
        ctx.adopt(origin, Owner::Agent);
        if let Some(s) = self.sessions.get_mut(&stream) {
            s.phase = Phase::Connecting { origin, rest };
        }
        ctx.emit(Output::ConnectOrigin { stream: origin, addr });
        ctx.timers.set(TimerKey::AgentStream(stream), now + ctx.timeouts.origin_connect);
    }

    pub(crate) fn on_origin_connected(&mut self, ctx: &mut Ctx, origin: StreamId) {
        let Some(&stream) = self.origins.get(&origin) else { return };
        let Some(s) = self.sessions.get_mut(&stream) else { return };
        if !matches!(s.phase, Phase::Connecting { origin: o, .. } if o == origin) {
            return;
        }
        s.phase = Phase::Spliced { origin };
        let (peer, upstream) = (s.peer, s.upstream);
        ctx.timers.cancel(TimerKey::AgentStream(stream));
        answer(ctx, stream, AnswerStatus::Ok);
        ctx.event(Event::AgentStreamOpened { peer, upstream });
        ctx.emit(Output::Splice {
            a: stream,
            b: origin,
            a_to_b_prefix: Bytes::new(),
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
        let Phase::Connecting { origin: o, rest } = &mut s.phase else { return };
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

    /// The gateway (or, before the splice, the origin) ended a stream early.
    pub(crate) fn on_closed(&mut self, ctx: &mut Ctx, stream: StreamId, how: Close) {
        let Some(session) = self.session_of(stream) else { return };
        self.abort(ctx, session, how);
    }

    pub(crate) fn on_deadline(&mut self, ctx: &mut Ctx, now: Instant, stream: StreamId) {
        let Some(s) = self.sessions.get_mut(&stream) else { return };
        match &mut s.phase {
            Phase::AwaitOpen { .. } => {
                let peer = s.peer;
                ctx.event(Event::PeerProtocolError { peer });
                self.abort(ctx, stream, Close::Reset);
            }
            Phase::Resolving { .. } => self.fail(ctx, stream, AnswerStatus::Timeout),
            Phase::Connecting { origin, rest } => {
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

    /// Answers the gateway with a failure and ends the session.
    fn fail(&mut self, ctx: &mut Ctx, stream: StreamId, status: AnswerStatus) {
        let Some(s) = self.sessions.get(&stream) else { return };
        ctx.event(Event::AgentStreamRefused { peer: s.peer, status });
        answer(ctx, stream, status);
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
            Phase::AwaitOpen { .. } => {}
        }
        ctx.emit(Output::Close { stream, how });
        self.forget(ctx, stream);
        ctx.timers.cancel(TimerKey::AgentStream(stream));
    }

    /// Lets an origin stream go; returns the session it served.
    fn release_origin(&mut self, ctx: &mut Ctx, origin: StreamId) -> Option<StreamId> {
        let stream = self.origins.remove(&origin)?;
        ctx.release(origin);
        Some(stream)
    }

    fn forget(&mut self, ctx: &mut Ctx, stream: StreamId) {
        if self.sessions.remove(&stream).is_some() {
            ctx.release(stream);
        }
    }
}

/// The answer for how the last dial to the origin failed.
fn status_of(dial: Status) -> AnswerStatus {
    match dial {
        Status::ConnectionRefused => AnswerStatus::Refused,
        Status::HostUnreachable | Status::NetworkUnreachable => AnswerStatus::Unreachable,
        Status::TtlExpired => AnswerStatus::Timeout,
        _ => AnswerStatus::Failure,
    }
}

fn answer(ctx: &mut Ctx, stream: StreamId, status: AnswerStatus) {
    let mut buf = Vec::new();
    ingress::encode_answer(&Answer { status }, &mut buf);
    ctx.emit(Output::Transmit { stream, data: Bytes::from(buf) });
}
