//! One attempt of a request at an agent: choose, dial, open the stream, send
//! `Open`, read the answer — then hand the stream over, or count the failure
//! and try another agent while none of the request has left the gateway.

use super::{error, GatewayRole, Pending, Phase};
use crate::ctx::{Ctx, Route, TimerKey};
use crate::ids::{ConnId, PeerId, RequestId, StreamId};
use crate::ingress::{balance, Affinity, Outcome};
use crate::io::{Close, Event, IngressOutcome, Output, Protocol};
use crate::time::Instant;
use crate::wire::frame::Decoded;
use crate::wire::ingress::{self as wire, AnswerStatus, ForwardedHost, Open, Scheme, ServiceName};
use bytes::Bytes;
use std::collections::BTreeSet;
use std::net::IpAddr;

/// How long a request that finds no agent waits for a fresh listing.
pub(super) const AGENT_WAIT: core::time::Duration = core::time::Duration::from_secs(3);

/// The client address's bytes, as consistent hashing on the client IP keys it.
fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// What the client gets when no agent is left after failures.
fn after_failures(last: Option<AnswerStatus>) -> (u16, IngressOutcome) {
    match last {
        Some(AnswerStatus::Timeout) | None => (504, IngressOutcome::UpstreamTimeout),
        Some(AnswerStatus::Busy) => (503, IngressOutcome::Busy),
        Some(AnswerStatus::Forbidden) => (403, IngressOutcome::Forbidden),
        Some(other) => (other.http_status().unwrap_or(502), IngressOutcome::UpstreamError),
    }
}

impl GatewayRole {
    /// Chooses the next agent for `request` and starts on it, or answers
    /// the client when there is none.
    pub(super) fn attempt(&mut self, ctx: &mut Ctx, now: Instant, request: RequestId) {
        let Some(p) = self.requests.get(&request) else { return };
        let listener = p.listener;
        if now >= p.budget_end {
            let (status, outcome) = after_failures(p.last.or(Some(AnswerStatus::Timeout)));
            let attempts = p.attempts;
            self.respond(ctx, now, request, listener, error(status, outcome), attempts);
            return;
        }
        let Outcome::Forward(target) = &p.decision.outcome else { return };
        let mut view = self.agents.view(ctx.limits.max_requests_per_agent);
        for a in &mut view {
            a.available &= !p.tried.contains(&a.id);
        }
        let ip = ip_bytes(p.client.ip());
        let affinity = Affinity::of(&target.balance, &p.head, &ip);
        let Some(agent) = self.router.choose(&p.decision, &view, &affinity, &mut ctx.rng) else {
            // None yet (a gateway just started, an agent just registered):
            // ask the hubs at once and wait a little, once, before a 503.
            if p.attempts == 0 && !p.waited && !self.only_busy(ctx, request) {
                let Some(p) = self.requests.get_mut(&request) else { return };
                p.waited = true;
                p.phase = Phase::Waiting;
                let until = (now + AGENT_WAIT).min(p.budget_end);
                ctx.timers.set(TimerKey::IngressRequest(request), until);
                self.waiting.insert(request);
                self.refresh_now = true;
                return;
            }
            let (status, outcome) = if p.attempts > 0 {
                after_failures(p.last)
            } else if self.only_busy(ctx, request) {
                (503, IngressOutcome::Busy)
            } else {
                (503, IngressOutcome::NoAgent)
            };
            let attempts = p.attempts;
            self.respond(ctx, now, request, listener, error(status, outcome), attempts);
            return;
        };
        let Some(p) = self.requests.get_mut(&request) else { return };
        p.attempts += 1;
        p.tried.insert(agent);
        p.phase = Phase::Dialing { agent };
        let deadline = (now + ctx.timeouts.attempt).min(p.budget_end);
        self.agents.start(agent);
        ctx.timers.set(TimerKey::IngressRequest(request), deadline);
        self.connect(ctx, now, request, agent);
    }

    /// Whether `request` found no agent only because every candidate it has
    /// not tried is at its limit of requests in flight.
    fn only_busy(&self, ctx: &Ctx, request: RequestId) -> bool {
        let Some(p) = self.requests.get(&request) else { return false };
        let Outcome::Forward(target) = &p.decision.outcome else { return false };
        let mut unlimited = self.agents.view(usize::MAX);
        unlimited.retain(|a| !p.tried.contains(&a.id));
        let any = !balance::candidates(target, &unlimited).is_empty();
        any && ctx.limits.max_requests_per_agent < usize::MAX
    }

    /// Opens the attempt's stream on a usable connection to `agent`, or
    /// dials one (directly, or through a relay) and waits for it.
    fn connect(&mut self, ctx: &mut Ctx, now: Instant, request: RequestId, agent: PeerId) {
        if let Some(conn) = ctx.usable_conn(agent, now, true, self.circuit_margin) {
            self.open(ctx, request, agent, conn);
            return;
        }
        if !ctx.is_dialing(agent) {
            if ctx.pending_dials() >= ctx.limits.max_pending_dials {
                self.attempt_failed(ctx, now, request, AnswerStatus::Busy);
                return;
            }
            let Some((route, record)) = self.agents.route(agent, now) else {
                self.agents.on_down(now, agent);
                self.attempt_failed(ctx, now, request, AnswerStatus::Unreachable);
                return;
            };
            let addrs = record.addrs.clone();
            ctx.dial(now, agent, &addrs, route, ctx.timeouts.dial);
        }
        self.dial_waiters.entry(agent).or_default().insert(request);
    }

    fn open(&mut self, ctx: &mut Ctx, request: RequestId, agent: PeerId, conn: ConnId) {
        let stream = ctx.stream_id();
        let Some(p) = self.requests.get_mut(&request) else { return };
        p.phase = Phase::Opening { agent, stream };
        self.adopt(ctx, stream, request);
        let conn = Some(conn);
        ctx.emit(Output::OpenStream { stream, peer: agent, conn, protocol: Protocol::Ingress });
    }

    /// A connection to `peer` is up: the requests waiting for it go on.
    pub(crate) fn on_peer_connected(&mut self, ctx: &mut Ctx, now: Instant, peer: PeerId) {
        self.agents.on_up(peer);
        for request in self.dial_waiters.remove(&peer).unwrap_or_default() {
            let dialing = self
                .requests
                .get(&request)
                .is_some_and(|p| matches!(p.phase, Phase::Dialing { agent } if agent == peer));
            if dialing {
                self.connect(ctx, now, request, peer);
            }
        }
    }

    /// The last connection to `peer` went down: if it is an agent, it is
    /// unavailable from now on (until a hub lists it again).
    pub(crate) fn on_peer_gone(&mut self, now: Instant, peer: PeerId) {
        self.agents.on_down(now, peer);
    }

    /// A dial to `peer` failed; `route` is the way it went (`None`: not a
    /// dial of ours). A failed direct dial falls back to the agent's relays.
    pub(crate) fn on_dial_failed(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        peer: PeerId,
        route: Option<Route>,
    ) {
        match route {
            Some(Route::Direct) => self.agents.on_direct_failed(now, peer),
            Some(Route::Via(hub)) => self.agents.on_relay_failed(peer, hub),
            None => {}
        }
        let relay_left = route == Some(Route::Direct)
            && matches!(self.agents.route(peer, now), Some((Route::Via(_), _)));
        if !relay_left {
            self.agents.on_down(now, peer);
        }
        for request in self.dial_waiters.remove(&peer).unwrap_or_default() {
            let dialing = self
                .requests
                .get(&request)
                .is_some_and(|p| matches!(p.phase, Phase::Dialing { agent } if agent == peer));
            if !dialing {
                continue;
            }
            if relay_left {
                self.connect(ctx, now, request, peer);
            } else {
                self.attempt_failed(ctx, now, request, AnswerStatus::Unreachable);
            }
        }
    }

    /// The attempt's stream is open: send `Open`, nothing else until the answer.
    pub(crate) fn on_stream_opened(&mut self, ctx: &mut Ctx, now: Instant, stream: StreamId) {
        let Some(&request) = self.streams.get(&stream) else { return };
        let Some(p) = self.requests.get_mut(&request) else { return };
        let Phase::Opening { agent, .. } = p.phase else { return };
        let Some(open) = open_message(p, &self.listeners[p.index], request, &self.wallet, now)
        else {
            // The route names a service no agent could carry: a config error
            // the router's validation should have caught. Not the agent's fault.
            self.attempt_failed(ctx, now, request, AnswerStatus::Failure);
            return;
        };
        let mut buf = Vec::new();
        wire::encode_open(&open, &mut buf);
        ctx.emit(Output::Transmit { stream, data: Bytes::from(buf) });
        p.phase = Phase::Awaiting { agent, stream, inbox: Vec::new() };
    }

    /// The attempt's stream could not be opened.
    pub(crate) fn on_stream_refused(&mut self, ctx: &mut Ctx, now: Instant, stream: StreamId) {
        if let Some(&request) = self.streams.get(&stream) {
            self.attempt_failed(ctx, now, request, AnswerStatus::Failure);
        }
    }

    /// Bytes from the agent: its answer, and perhaps the response's start.
    pub(crate) fn on_data(&mut self, ctx: &mut Ctx, now: Instant, stream: StreamId, data: &[u8]) {
        let Some(&request) = self.streams.get(&stream) else { return };
        let Some(p) = self.requests.get_mut(&request) else { return };
        let (listener, attempts) = (p.listener, p.attempts);
        let Phase::Awaiting { agent, inbox, .. } = &mut p.phase else {
            // Data before our `Open`: the agent broke the conversation.
            self.attempt_failed(ctx, now, request, AnswerStatus::Failure);
            return;
        };
        let agent = *agent;
        inbox.extend_from_slice(data);
        let (status, consumed) = match wire::decode_answer(inbox) {
            Ok(Decoded::Incomplete) => return,
            Ok(Decoded::Complete { msg, consumed }) => (msg.status, consumed),
            Err(_) => {
                ctx.event(Event::PeerProtocolError { peer: agent });
                self.attempt_failed(ctx, now, request, AnswerStatus::Failure);
                return;
            }
        };
        match status {
            AnswerStatus::Ok => {
                let prefix = Bytes::copy_from_slice(&inbox[consumed..]);
                self.forward(ctx, now, request, agent, stream, prefix);
            }
            AnswerStatus::Forbidden => {
                // A policy answer: the same at every agent, so not retried.
                ctx.event(Event::IngressAttemptFailed { agent, status });
                self.abandon_attempt(ctx, request, Close::Fin);
                let answer = error(403, IngressOutcome::Forbidden);
                self.respond(ctx, now, request, listener, answer, attempts);
            }
            failure => self.attempt_failed(ctx, now, request, failure),
        }
    }

    /// The agent ended the stream before answering.
    pub(crate) fn on_closed(&mut self, ctx: &mut Ctx, now: Instant, stream: StreamId) {
        if let Some(&request) = self.streams.get(&stream) {
            // The stream is gone: nothing to close.
            self.streams.remove(&stream);
            ctx.release(stream);
            self.attempt_failed(ctx, now, request, AnswerStatus::Failure);
        }
    }

    /// The attempt's (or the request's) deadline passed.
    pub(crate) fn on_deadline(&mut self, ctx: &mut Ctx, now: Instant, request: RequestId) {
        if self.waiting.remove(&request) {
            // No listing brought an agent in time: answer now.
            self.attempt(ctx, now, request);
            return;
        }
        let waiting = self
            .requests
            .get(&request)
            .is_some_and(|p| !matches!(p.phase, Phase::Forwarded { .. } | Phase::Choosing));
        if waiting {
            self.attempt_failed(ctx, now, request, AnswerStatus::Timeout);
        }
    }

    /// The agent said `Ok`: the stream and the request go to the outside.
    fn forward(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        request: RequestId,
        agent: PeerId,
        stream: StreamId,
        prefix: Bytes,
    ) {
        self.streams.remove(&stream);
        ctx.release(stream);
        ctx.timers.cancel(TimerKey::IngressRequest(request));
        let Some(p) = self.requests.get_mut(&request) else { return };
        p.phase = Phase::Forwarded { agent };
        let version = p.decision.version;
        ctx.emit(Output::IngressForward { request, stream, agent, prefix, version });
        ctx.event(Event::IngressRequest {
            listener: p.listener,
            outcome: IngressOutcome::Forwarded,
            attempts: p.attempts,
            setup: now.saturating_duration_since(p.started),
        });
    }

    /// Lets go of what the current attempt holds (closing its stream `how`).
    fn abandon_attempt(&mut self, ctx: &mut Ctx, request: RequestId, how: Close) {
        let Some(p) = self.requests.get_mut(&request) else { return };
        let phase = std::mem::replace(&mut p.phase, Phase::Choosing);
        if let Some(stream) = phase.stream() {
            if self.streams.remove(&stream).is_some() {
                ctx.release(stream);
                ctx.emit(Output::Close { stream, how });
            }
        }
        if let (Phase::Dialing { agent }, Some(w)) =
            (&phase, phase.agent().and_then(|a| self.dial_waiters.get_mut(&a)))
        {
            w.remove(&request);
            if w.is_empty() {
                let agent = *agent;
                self.dial_waiters.remove(&agent);
            }
        }
        if let Some(agent) = phase.agent() {
            self.agents.finish(agent);
        }
    }

    /// The current attempt failed with `status` before any of the request
    /// left the gateway: count it and try another agent.
    fn attempt_failed(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        request: RequestId,
        status: AnswerStatus,
    ) {
        let Some(p) = self.requests.get_mut(&request) else { return };
        if let Some(agent) = p.phase.agent() {
            ctx.event(Event::IngressAttemptFailed { agent, status });
        }
        p.last = Some(status);
        self.abandon_attempt(ctx, request, Close::Reset);
        self.attempt(ctx, now, request);
    }
}

/// The `Open` for `p`'s current attempt; `None` if the route's service
/// name cannot travel.
fn open_message(
    p: &Pending,
    listener: &crate::config::GatewayListener,
    request: RequestId,
    wallet: &crate::ticket::TicketWallet,
    now: Instant,
) -> Option<Open> {
    let Outcome::Forward(target) = &p.decision.outcome else { return None };
    let service = ServiceName::new(&target.service).ok()?;
    // The normalised host is in the forwarded charset; an IPv6 literal or an
    // odd one that is not travels as "none" rather than failing the request.
    let host = p.host.as_deref().and_then(|h| ForwardedHost::new(h).ok()).unwrap_or_default();
    Some(Open {
        version: wire::INGRESS_VERSION,
        upstream: request.0,
        service,
        client: p.client,
        scheme: if listener.https { Scheme::Https } else { Scheme::Http },
        host,
        port: listener.port,
        ticket: wallet.pick(now, &BTreeSet::new()).unwrap_or_default(),
    })
}
