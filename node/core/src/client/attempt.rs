//! One attempt of a session at an exit: dial, open the stream, send the
//! request, read the answer, then splice — or count the failure and retry.

use crate::ctx::{Ctx, Owner, Route, TimerKey};
use crate::ids::{ConnId, PeerId, StreamId};
use crate::io::{Close, Event, FailReason, Output, Protocol, SpliceLimits, StateSnapshot};
use crate::target::Status;
use crate::time::Instant;
use crate::wire::frame::Decoded;
use crate::wire::proxy::{self, ConnectRequest, PROXY_VERSION};
use bytes::Bytes;
use std::collections::BTreeSet;

use super::exits::Pick;
use super::handshake::answer;
use super::{ClientRole, Phase, MIN_WAIT};

impl ClientRole {
    /// Starts the next attempt: picks an exit, or waits, or fails the session.
    pub(super) fn attempt(&mut self, ctx: &mut Ctx, now: Instant, app: StreamId) {
        let Some(s) = self.sessions.get(&app) else { return };
        let (attempts, last_status, budget_end) = (s.attempts, s.last_status, s.budget_end);
        if now >= budget_end {
            let status = if attempts == 0 { Status::NetworkUnreachable } else { last_status };
            let reason = if attempts == 0 { FailReason::NoExit } else { FailReason::Timeout };
            self.fail(ctx, app, reason, status);
            return;
        }
        match self.pick(ctx, now, app) {
            Pick::Fail(reason) => {
                let status = match (reason, attempts) {
                    (FailReason::NoExit, _) | (FailReason::StickyUnavailable, 0) => {
                        Status::NetworkUnreachable
                    }
                    (FailReason::NotAdmitted, _) => Status::NotAllowed,
                    _ => last_status,
                };
                self.fail(ctx, app, reason, status);
            }
            Pick::Wait(until) => {
                // Never wake at or before `now`: a wait must let time pass.
                let until = until.min(budget_end).max(now + MIN_WAIT);
                self.waiting.insert(app);
                if let Some(s) = self.sessions.get_mut(&app) {
                    s.phase = Phase::Waiting;
                    s.waiting_since.get_or_insert(now);
                }
                ctx.timers.set(TimerKey::ClientSession(app), until);
            }
            Pick::Exit(exit) => {
                self.waiting.remove(&app);
                if let Some(s) = self.sessions.get_mut(&app) {
                    s.waiting_since = None;
                }
                let Some(known) = self.exits.get_mut(&exit) else { return };
                known.active += 1;
                let Some(s) = self.sessions.get_mut(&app) else { return };
                // Pin at choice, not at success: concurrent connections of one
                // session must follow the same exit from the very first one.
                if let Some(key) = s.req.as_ref().and_then(|r| r.sticky.as_ref()) {
                    if self.sticky.get(key, now) != Some(exit) {
                        self.sticky.pin(key.clone(), exit, now);
                        ctx.emit(Output::Persist(StateSnapshot { sticky: self.sticky.snapshot() }));
                    }
                }
                s.attempts += 1;
                s.tried.push(exit);
                ctx.timers.set(
                    TimerKey::ClientSession(app),
                    (now + ctx.timeouts.attempt).min(s.budget_end),
                );
                s.phase = Phase::Dialing { exit };
                self.connect(ctx, now, app, exit);
            }
        }
    }

    /// Opens the session's stream on a usable connection to `exit`, or dials
    /// one (directly, or through a relay) and waits for it.
    pub(super) fn connect(&mut self, ctx: &mut Ctx, now: Instant, app: StreamId, exit: PeerId) {
        let Some(s) = self.sessions.get(&app) else { return };
        let relayed = s.settings.relayed;
        if let Some(conn) = ctx.usable_conn(exit, now, relayed, self.circuit_margin) {
            self.open(ctx, app, exit, conn);
            return;
        }
        if !ctx.is_dialing(exit) {
            if ctx.pending_dials() >= ctx.limits.max_pending_dials {
                self.fail(ctx, app, FailReason::Overloaded, Status::GeneralFailure);
                return;
            }
            let Some(route) = self.route(exit, relayed, now) else {
                self.exit_failed(ctx, now, app, Status::NetworkUnreachable);
                return;
            };
            let addrs = self.exits.get(&exit).map(|e| e.record.addrs.clone()).unwrap_or_default();
            ctx.dial(now, exit, &addrs, route, ctx.timeouts.dial);
        }
        self.dial_waiters.entry(exit).or_default().insert(app);
    }

    pub(super) fn open(&mut self, ctx: &mut Ctx, app: StreamId, exit: PeerId, conn: ConnId) {
        let Some(s) = self.sessions.get_mut(&app) else { return };
        let stream = ctx.stream_id();
        s.phase = Phase::Opening { exit, stream };
        self.peer_streams.insert(stream, app);
        ctx.adopt(stream, Owner::Client);
        let conn = Some(conn);
        ctx.emit(Output::OpenStream { stream, peer: exit, conn, protocol: Protocol::Proxy });
    }

    pub(crate) fn on_peer_connected(&mut self, ctx: &mut Ctx, now: Instant, peer: PeerId) {
        for app in self.dial_waiters.remove(&peer).unwrap_or_default() {
            if self.is_dialing(app, peer) {
                self.connect(ctx, now, app, peer);
            }
        }
    }

    /// A direct dial failed where the exit's record may be stale (it may have
    /// moved behind a relay): the attempt does not use up the session's
    /// retries — once per session, so a dead exit still fails it.
    pub(super) fn refund_attempt(&mut self, app: StreamId) {
        if let Some(s) = self.sessions.get_mut(&app).filter(|s| !s.refunded) {
            s.refunded = true;
            s.attempts = s.attempts.saturating_sub(1);
        }
    }

    pub(super) fn is_dialing(&self, app: StreamId, peer: PeerId) -> bool {
        matches!(self.sessions.get(&app).map(|s| &s.phase), Some(Phase::Dialing { exit }) if *exit == peer)
    }

    /// A dial to `peer` failed; `route` is the way it went (`None`: not a
    /// dial of ours). A failed direct dial falls back to the exit's relays
    /// before it counts against the exit.
    pub(crate) fn on_dial_failed(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        peer: PeerId,
        route: Option<Route>,
    ) {
        if let Some(e) = self.exits.get_mut(&peer) {
            match route {
                Some(Route::Direct) => {
                    e.direct_failed = Some(now);
                    self.stale |= e.relays.is_empty();
                }
                // Try another of its relays next time; the next listing
                // brings this one back if the exit still holds it.
                Some(Route::Via(hub)) => {
                    e.relays.remove(&hub);
                }
                None => {}
            }
        }
        let mut counted = false;
        for app in self.dial_waiters.remove(&peer).unwrap_or_default() {
            if !self.is_dialing(app, peer) {
                continue;
            }
            let relayed = self.sessions.get(&app).is_some_and(|s| s.settings.relayed);
            let via_relay = route == Some(Route::Direct)
                && matches!(self.route(peer, relayed, now), Some(Route::Via(_)));
            if via_relay {
                self.connect(ctx, now, app, peer);
            } else {
                if route == Some(Route::Direct) && self.stale {
                    self.refund_attempt(app);
                }
                // One failed dial is one failure of the exit, however many
                // sessions waited on it (it used to open the breaker alone).
                let first = !counted;
                counted = true;
                self.exit_failed_as(ctx, now, app, Status::GeneralFailure, first);
            }
        }
    }

    pub(crate) fn on_stream_opened(&mut self, ctx: &mut Ctx, now: Instant, stream: StreamId) {
        let Some(&app) = self.peer_streams.get(&stream) else { return };
        let Some(s) = self.sessions.get_mut(&app) else { return };
        let Phase::Opening { exit, stream: st } = s.phase else { return };
        if st != stream {
            return;
        }
        let Some(req) = &s.req else { return };
        let mut buf = Vec::new();
        let prefer = self.exits.get(&exit).map(|e| &e.listed_by);
        let ticket = self.wallet.pick(now, prefer.unwrap_or(&BTreeSet::new())).unwrap_or_default();
        let request = ConnectRequest {
            version: PROXY_VERSION,
            target: req.target.clone(),
            session: req.session,
            ticket,
        };
        proxy::encode_request(&request, &mut buf);
        ctx.emit(Output::Transmit { stream, data: Bytes::from(buf) });
        s.phase = Phase::Awaiting { exit, stream, inbox: Vec::new(), sent: now };
    }

    pub(crate) fn on_stream_refused(&mut self, ctx: &mut Ctx, now: Instant, stream: StreamId) {
        let Some(app) = self.release_peer_stream(ctx, stream) else { return };
        self.exit_failed(ctx, now, app, Status::GeneralFailure);
    }

    pub(super) fn on_peer_data(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        app: StreamId,
        stream: StreamId,
        data: &[u8],
    ) {
        let Some(s) = self.sessions.get_mut(&app) else { return };
        let Phase::Awaiting { exit, inbox, sent, .. } = &mut s.phase else { return };
        let (exit, sent) = (*exit, *sent);
        inbox.extend_from_slice(data);
        let (response, used) = match proxy::decode_response(inbox) {
            Ok(Decoded::Incomplete) => return,
            Ok(Decoded::Complete { msg, consumed }) => (msg, consumed),
            Err(_) => {
                ctx.event(Event::PeerProtocolError { peer: exit });
                self.exit_failed(ctx, now, app, Status::GeneralFailure);
                return;
            }
        };
        let from_exit = Bytes::copy_from_slice(&inbox[used..]);
        let status = response.status;
        s.last_status = status;
        if status == Status::Succeeded {
            self.established(ctx, now, app, exit, stream, sent, from_exit);
        } else if status.is_destination_failure() || status == Status::TtlExpired {
            // The exit works; the destination does not. Another exit would not help.
            if let Some(e) = self.exits.get_mut(&exit) {
                e.active = e.active.saturating_sub(1);
                if let Some(to) = e.breaker.on_success(now) {
                    ctx.event(Event::Breaker { exit, to: to.to });
                }
            }
            self.release_peer_stream(ctx, stream);
            ctx.emit(Output::Close { stream, how: Close::Fin });
            self.fail(ctx, app, FailReason::Destination, status);
        } else {
            self.exit_answered_failure(ctx, now, app, exit, status);
        }
    }

    /// The exit answered a failure of its own (at capacity, resolver down):
    /// it is alive, so its breaker counts a success, and it is avoided only
    /// for one short backoff step — not the growing one of an exit that does
    /// not answer — while the session tries elsewhere.
    pub(super) fn exit_answered_failure(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        app: StreamId,
        exit: PeerId,
        status: Status,
    ) {
        if let Some(e) = self.exits.get_mut(&exit) {
            if let Some(to) = e.breaker.on_success(now) {
                ctx.event(Event::Breaker { exit, to: to.to });
            }
        }
        self.exit_failed_as(ctx, now, app, status, false);
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn established(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        app: StreamId,
        exit: PeerId,
        stream: StreamId,
        sent: Instant,
        from_exit: Bytes,
    ) {
        if let Some(e) = self.exits.get_mut(&exit) {
            e.latency.observe(now.saturating_duration_since(sent));
            e.failures = 0;
            e.retry_at = Instant::ZERO;
            if let Some(to) = e.breaker.on_success(now) {
                ctx.event(Event::Breaker { exit, to: to.to });
            }
        }
        let Some(s) = self.sessions.get_mut(&app) else { return };
        let reply = answer(s.kind, Status::Succeeded);
        ctx.timers.cancel(TimerKey::ClientSession(app));
        if !reply.is_empty() {
            ctx.emit(Output::Transmit { stream: app, data: Bytes::from(reply) });
        }
        ctx.emit(Output::Splice {
            a: app,
            b: stream,
            a_to_b_prefix: Bytes::from(core::mem::take(&mut s.leftover)),
            b_to_a_prefix: from_exit,
            limits: SpliceLimits { idle_timeout: ctx.timeouts.idle },
        });
        ctx.event(Event::SessionEstablished {
            listener: s.listener,
            exit,
            setup: now.saturating_duration_since(s.accepted),
            attempts: s.attempts,
        });
        s.phase = Phase::Spliced { exit, stream };
    }

    /// An attempt failed at or on the way to the exit: count it against the
    /// exit and try another one if the listener's budget allows.
    pub(super) fn exit_failed(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        app: StreamId,
        status: Status,
    ) {
        self.exit_failed_as(ctx, now, app, status, true);
    }

    /// `unresponsive`: the exit did not answer (dial, stream, timeout, reset,
    /// garbage), which counts against its breaker and grows its backoff.
    pub(super) fn exit_failed_as(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        app: StreamId,
        status: Status,
        unresponsive: bool,
    ) {
        let Some(s) = self.sessions.get_mut(&app) else { return };
        let (exit, stream) = match s.phase {
            Phase::Dialing { exit } => (exit, None),
            Phase::Opening { exit, stream } | Phase::Awaiting { exit, stream, .. } => {
                (exit, Some(stream))
            }
            _ => return,
        };
        s.last_status = status;
        s.phase = Phase::Waiting;
        let (retries, attempts) = (s.settings.retries, s.attempts);
        if let Some(stream) = stream {
            if self.release_peer_stream(ctx, stream).is_some() {
                ctx.emit(Output::Close { stream, how: Close::Reset });
            }
        }
        if let Some(set) = self.dial_waiters.get_mut(&exit) {
            set.remove(&app);
        }
        ctx.event(Event::ExitAttemptFailed { exit });
        if let Some(e) = self.exits.get_mut(&exit) {
            e.active = e.active.saturating_sub(1);
            let backoff = &self.config.selection.backoff;
            if unresponsive {
                e.failures = e.failures.saturating_add(1);
                e.retry_at = now + backoff.delay(e.failures, &mut ctx.rng);
                if let Some(to) = e.breaker.on_failure(now) {
                    ctx.event(Event::Breaker { exit, to: to.to });
                }
            } else {
                e.retry_at = e.retry_at.max(now + backoff.delay(1, &mut ctx.rng));
            }
        }
        if attempts > retries {
            self.fail(ctx, app, FailReason::ExitFailed, status);
        } else {
            self.attempt(ctx, now, app);
        }
    }
}
