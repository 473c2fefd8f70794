//! The client role: one session per app connection on a listener.
//!
//! ```text
//! Handshake ──request──▶ Waiting ◀──────────────┐ (no usable exit yet:
//!    │                      │ pick an exit      │  exit list refresh, backoff)
//!    │                      ▼                   │
//!    │                   Dialing ──▶ Opening ──▶ Awaiting ──success──▶ Spliced
//!    │                      └───────────┴──────────┴── exit's fault: retry ──┘
//!    └─ malformed / auth / timeout: reply, close          destination's fault: reply, close
//! ```
//! The app gets its SOCKS5/HTTP answer only once the exit has answered, so
//! its status is the destination's real one.

use crate::config::{ClientConfig, Limits, ListenerConfig, ListenerProtocol, StickyMode, Timeouts};
use crate::ctx::{Ctx, TimerKey};
use crate::http_connect::{self, HttpAction, HttpConnectHandshake};
use crate::ids::{ConnId, ListenerId, PeerId, SessionId, StreamId};
use crate::io::{
    Close, Event, FailReason, Output, Protocol, SpliceLimits, SpliceReport, StateSnapshot,
};
use crate::record::{PeerFilter, PeerRecord};
use crate::selection::breaker::CircuitBreaker;
use crate::selection::latency::{pick_two, Ewma};
use crate::selection::sticky::{StickyConfig, StickyKey, StickyPool};
use crate::socks::{self, SocksAction, SocksHandshake, UserParams};
use crate::target::{Status, TargetAddr};
use crate::ticket::TicketWallet;
use crate::time::Instant;
use crate::wire::frame::Decoded;
use crate::wire::proxy::{self, ConnectRequest, PROXY_VERSION};
use bytes::Bytes;
use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Most app bytes buffered between the handshake and the splice.
const LEFTOVER_MAX: usize = 64 * 1024;
/// Sessions waiting for exits refresh the list at most this often.
const MIN_REFRESH: Duration = Duration::from_secs(1);
/// How long a session waits for a usable exit to appear before it fails.
const NO_EXIT_WAIT: Duration = Duration::from_secs(5);
/// The shortest wait before a session re-evaluates its choice.
const MIN_WAIT: Duration = Duration::from_millis(50);
/// Latency assumed for an exit never measured while no exit is measured
/// either; once some are, an unmeasured exit counts as their average, so a
/// newcomer (or a hostile exit) is tried but not preferred.
const UNMEASURED_LATENCY: Duration = Duration::from_millis(50);
/// After a direct dial to an exit failed, its relays are used for this long
/// before a direct dial is tried again.
const DIRECT_RETRY: Duration = Duration::from_secs(60);

#[derive(Debug)]
enum Handshake {
    Detect,
    Socks(SocksHandshake),
    Http(HttpConnectHandshake),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AppKind {
    Socks,
    Http,
}

#[derive(Debug)]
struct AppRequest {
    target: TargetAddr,
    filter: PeerFilter,
    sticky: Option<StickyKey>,
    session: Option<SessionId>,
}

#[derive(Debug)]
enum Phase {
    Handshake(Handshake),
    /// No usable exit right now; re-evaluated on new exits or at the deadline.
    Waiting,
    Dialing {
        exit: PeerId,
    },
    Opening {
        exit: PeerId,
        stream: StreamId,
    },
    Awaiting {
        exit: PeerId,
        stream: StreamId,
        inbox: Vec<u8>,
        sent: Instant,
    },
    Spliced {
        exit: PeerId,
        stream: StreamId,
    },
}

#[derive(Debug)]
struct ClientSession {
    listener: ListenerId,
    /// The app's address, for the per-source limit.
    source: IpAddr,
    settings: Arc<ListenerConfig>,
    /// Which handshake the app spoke, once known (for the answer's format).
    kind: Option<AppKind>,
    accepted: Instant,
    budget_end: Instant,
    phase: Phase,
    req: Option<AppRequest>,
    tried: Vec<PeerId>,
    attempts: u32,
    last_status: Status,
    /// Since when the session has found no usable exit.
    waiting_since: Option<Instant>,
    /// App bytes received after its request, for the exit.
    leftover: Vec<u8>,
    /// Whether an attempt was already given back (see `refund_attempt`).
    refunded: bool,
}

#[derive(Debug)]
struct KnownExit {
    record: PeerRecord,
    seen: Instant,
    failures: u32,
    retry_at: Instant,
    breaker: CircuitBreaker,
    latency: Ewma,
    active: u32,
    /// Hubs whose relay reaches the exit, each as that hub itself said.
    relays: BTreeSet<PeerId>,
    /// When a direct dial to the exit last failed.
    direct_failed: Option<Instant>,
    /// Hubs that listed it (their tickets are the ones it most likely takes).
    listed_by: BTreeSet<PeerId>,
}

/// Why no attempt starts right now.
enum Pick {
    Exit(PeerId),
    /// Wait until this instant (or until new exits arrive).
    Wait(Instant),
    Fail(FailReason),
}

/// The client side: listeners' sessions, the known exits and the sticky pool.
#[derive(Debug)]
pub(crate) struct ClientRole {
    config: ClientConfig,
    /// Shared with each session, so a session holds its listener's settings cheaply.
    listeners: Vec<Arc<ListenerConfig>>,
    sessions: BTreeMap<StreamId, ClientSession>,
    /// Peer stream → the app stream whose session owns it.
    peer_streams: BTreeMap<StreamId, StreamId>,
    exits: BTreeMap<PeerId, KnownExit>,
    sticky: StickyPool,
    waiting: BTreeSet<StreamId>,
    dial_waiters: BTreeMap<PeerId, BTreeSet<StreamId>>,
    finds_pending: usize,
    /// After this, answers still missing are taken as lost.
    finds_deadline: Instant,
    refreshed: Option<Instant>,
    /// New streams avoid relayed connections this close to their relay's cap.
    circuit_margin: Duration,
    limits: Limits,
    /// Open sessions per listener and per app source address, for their limits.
    per_listener: BTreeMap<ListenerId, usize>,
    per_source: BTreeMap<IpAddr, usize>,
    /// A listed exit could not be dialed directly and no relay for it is
    /// known: its record may be stale (it moved behind a relay), so the list
    /// is fetched again soon rather than at the next periodic refresh.
    stale: bool,
    /// Tickets from the hubs, presented to exits.
    wallet: TicketWallet,
}

fn count_up<K: Ord>(counts: &mut BTreeMap<K, usize>, key: K) {
    *counts.entry(key).or_insert(0) += 1;
}

fn count_down<K: Ord>(counts: &mut BTreeMap<K, usize>, key: K) {
    if let Some(n) = counts.get_mut(&key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(&key);
        }
    }
}

impl ClientRole {
    pub(crate) fn new(
        config: ClientConfig,
        limits: Limits,
        circuit_margin: Duration,
    ) -> ClientRole {
        let sticky = StickyPool::new(sticky_config(&config));
        ClientRole {
            listeners: config.listeners.iter().cloned().map(Arc::new).collect(),
            config,
            sessions: BTreeMap::new(),
            peer_streams: BTreeMap::new(),
            exits: BTreeMap::new(),
            sticky,
            waiting: BTreeSet::new(),
            dial_waiters: BTreeMap::new(),
            finds_pending: 0,
            finds_deadline: Instant::ZERO,
            refreshed: None,
            circuit_margin,
            limits,
            per_listener: BTreeMap::new(),
            per_source: BTreeMap::new(),
            stale: false,
            wallet: TicketWallet::default(),
        }
    }

    pub(crate) fn session_count(&self) -> usize {
        self.sessions.len()
    }

    pub(crate) fn stream_count(&self) -> usize {
        self.sessions.len() + self.peer_streams.len()
    }

    pub(crate) fn known_exits(&self) -> usize {
        self.exits.len()
    }

    pub(crate) fn restore(&mut self, now: Instant, snapshot: &StateSnapshot) -> bool {
        match StickyPool::restore(sticky_config(&self.config), &snapshot.sticky, now) {
            Ok(pool) => {
                self.sticky = pool;
                true
            }
            Err(_) => false,
        }
    }

    /// The session (by app stream) a stream belongs to.
    pub(crate) fn session_of(&self, stream: StreamId) -> Option<StreamId> {
        if self.sessions.contains_key(&stream) {
            Some(stream)
        } else {
            self.peer_streams.get(&stream).copied()
        }
    }

    pub(crate) fn wants_refresh(&self, now: Instant) -> bool {
        !self.finding(now)
    }

    /// Whether a `Find` is out and may still be answered.
    fn finding(&self, now: Instant) -> bool {
        self.finds_pending > 0 && now < self.finds_deadline
    }

    pub(crate) fn on_accept(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        t: &Timeouts,
        listener: ListenerId,
        stream: StreamId,
        source: SocketAddr,
    ) {
        let source = source.ip();
        let settings = usize::try_from(listener.0).ok().and_then(|i| self.listeners.get(i));
        let on_listener = self.per_listener.get(&listener).copied().unwrap_or(0);
        let from_source = self.per_source.get(&source).copied().unwrap_or(0);
        let refusal = if self.sessions.len() >= self.limits.max_client_sessions
            || on_listener >= self.limits.max_sessions_per_listener
        {
            Some(FailReason::Overloaded)
        } else if from_source >= self.limits.max_sessions_per_source {
            Some(FailReason::SourceLimit)
        } else {
            None
        };
        let settings = match (settings, refusal) {
            (Some(settings), None) => settings.clone(),
            (_, refusal) => {
                // A reset, not an answer: the app has not spoken yet, and a
                // refused connection must cost us nothing more.
                ctx.emit(Output::Close { stream, how: Close::Reset });
                let reason = refusal.unwrap_or(FailReason::Overloaded);
                ctx.event(Event::SessionFailed {
                    listener,
                    reason,
                    status: Status::GeneralFailure,
                });
                return;
            }
        };
        count_up(&mut self.per_listener, listener);
        count_up(&mut self.per_source, source);
        ctx.event(Event::AppAccepted { listener });
        let session = ClientSession {
            listener,
            source,
            settings,
            kind: None,
            accepted: now,
            budget_end: now + t.handshake + t.setup_budget,
            phase: Phase::Handshake(Handshake::Detect),
            req: None,
            tried: Vec::new(),
            attempts: 0,
            last_status: Status::GeneralFailure,
            waiting_since: None,
            leftover: Vec::new(),
            refunded: false,
        };
        self.sessions.insert(stream, session);
        ctx.timers.set(TimerKey::ClientSession(stream), now + t.handshake);
    }

    pub(crate) fn on_data(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        t: &Timeouts,
        stream: StreamId,
        data: &[u8],
    ) {
        if let Some(&app) = self.peer_streams.get(&stream) {
            self.on_peer_data(ctx, now, t, app, stream, data);
            return;
        }
        let Some(s) = self.sessions.get_mut(&stream) else { return };
        match &mut s.phase {
            Phase::Handshake(_) => self.on_handshake_data(ctx, now, t, stream, data),
            Phase::Spliced { .. } => {}
            _ => {
                // The app is talking before we answered it: keep it for the exit, bounded.
                if s.leftover.len() + data.len() > LEFTOVER_MAX {
                    self.fail(ctx, stream, FailReason::Handshake, Status::GeneralFailure);
                } else {
                    s.leftover.extend_from_slice(data);
                }
            }
        }
    }

    fn on_handshake_data(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        t: &Timeouts,
        app: StreamId,
        data: &[u8],
    ) {
        let Some(s) = self.sessions.get_mut(&app) else { return };
        let (listener_id, listener) = (s.listener, s.settings.clone());
        let Phase::Handshake(hs) = &mut s.phase else { return };
        if matches!(hs, Handshake::Detect) {
            let Some(&first) = data.first() else { return };
            *hs = match (listener.protocol, first) {
                (ListenerProtocol::Socks5, _) | (ListenerProtocol::Both, 5) => {
                    Handshake::Socks(SocksHandshake::new(listener.socks_auth.clone()))
                }
                _ => Handshake::Http(HttpConnectHandshake::new(listener.http_auth.clone())),
            };
        }
        let outcome = match hs {
            Handshake::Detect => return,
            Handshake::Socks(h) => drive_socks(ctx, app, h, data),
            Handshake::Http(h) => drive_http(ctx, app, h, data),
        };
        match outcome {
            HandshakeOutcome::More => {}
            HandshakeOutcome::Rejected => {
                self.forget(ctx, app);
                ctx.emit(Output::Close { stream: app, how: Close::Fin });
                ctx.event(Event::SessionFailed {
                    listener: listener_id,
                    reason: FailReason::Handshake,
                    status: Status::GeneralFailure,
                });
            }
            HandshakeOutcome::Request { kind, target, params, leftover } => {
                if let Some(s) = self.sessions.get_mut(&app) {
                    s.kind = Some(kind);
                }
                let Some(req) = app_request(listener_id, &listener, target, params) else {
                    // The username asks for a country the listener excludes.
                    self.fail(ctx, app, FailReason::NoExit, Status::NetworkUnreachable);
                    return;
                };
                let Some(s) = self.sessions.get_mut(&app) else { return };
                s.req = Some(req);
                s.leftover = leftover.to_vec();
                s.phase = Phase::Waiting;
                self.attempt(ctx, now, t, app);
            }
        }
    }

    /// Starts the next attempt: picks an exit, or waits, or fails the session.
    fn attempt(&mut self, ctx: &mut Ctx, now: Instant, t: &Timeouts, app: StreamId) {
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
                ctx.timers.set(TimerKey::ClientSession(app), (now + t.attempt).min(s.budget_end));
                s.phase = Phase::Dialing { exit };
                self.connect(ctx, now, t, app, exit);
            }
        }
    }

    /// Opens the session's stream on a usable connection to `exit`, or dials
    /// one (directly, or through a relay) and waits for it.
    fn connect(&mut self, ctx: &mut Ctx, now: Instant, t: &Timeouts, app: StreamId, exit: PeerId) {
        let Some(s) = self.sessions.get(&app) else { return };
        let relayed = s.settings.relayed;
        if let Some(conn) = ctx.usable_conn(exit, now, relayed, self.circuit_margin) {
            self.open(ctx, app, exit, conn);
            return;
        }
        if !ctx.is_dialing(exit) {
            if ctx.pending_dials() >= self.limits.max_pending_dials {
                self.fail(ctx, app, FailReason::Overloaded, Status::GeneralFailure);
                return;
            }
            let Some(route) = self.route(exit, relayed, now) else {
                self.exit_failed(ctx, now, t, app, Status::NetworkUnreachable);
                return;
            };
            let addrs = self.exits.get(&exit).map(|e| e.record.addrs.clone()).unwrap_or_default();
            ctx.dial(now, exit, &addrs, route, t.dial);
        }
        self.dial_waiters.entry(exit).or_default().insert(app);
    }

    /// How to dial `exit`: `Some(None)` directly, `Some(Some(hub))` through
    /// `hub`'s relay, `None` if there is no way this session may use.
    fn route(&self, exit: PeerId, relayed: bool, now: Instant) -> Option<Option<PeerId>> {
        let e = self.exits.get(&exit)?;
        let has_addrs = !e.record.addrs.is_empty();
        let direct_failed_lately =
            e.direct_failed.is_some_and(|at| now.saturating_duration_since(at) < DIRECT_RETRY);
        let relay = e.relays.iter().next().copied().filter(|_| relayed);
        match (has_addrs, direct_failed_lately, relay) {
            (true, false, _) => Some(None),
            (_, _, Some(hub)) => Some(Some(hub)),
            (true, true, None) => Some(None),
            (false, _, None) => None,
        }
    }

    fn open(&mut self, ctx: &mut Ctx, app: StreamId, exit: PeerId, conn: ConnId) {
        let Some(s) = self.sessions.get_mut(&app) else { return };
        let stream = ctx.stream_id();
        s.phase = Phase::Opening { exit, stream };
        self.peer_streams.insert(stream, app);
        let conn = Some(conn);
        ctx.emit(Output::OpenStream { stream, peer: exit, conn, protocol: Protocol::Proxy });
    }

    /// Chooses the exit for the session's next attempt.
    fn pick(&mut self, ctx: &mut Ctx, now: Instant, app: StreamId) -> Pick {
        let Some(s) = self.sessions.get(&app) else { return Pick::Fail(FailReason::AppClosed) };
        let Some(req) = &s.req else { return Pick::Fail(FailReason::Handshake) };
        let fallback = s.settings.fallback;
        let listing_known = self.refreshed.is_some();
        // No exit serves a client without a ticket: wait a little for one
        // (admission may be under way) before giving up.
        if !self.wallet.any_usable(now) {
            let waited =
                s.waiting_since.map_or(Duration::ZERO, |w| now.saturating_duration_since(w));
            if waited < NO_EXIT_WAIT {
                return Pick::Wait(s.waiting_since.unwrap_or(now) + NO_EXIT_WAIT);
            }
            return Pick::Fail(FailReason::NotAdmitted);
        }

        if let Some(key) = &req.sticky {
            if let Some(pinned) = self.sticky.get(key, now) {
                let usable = self.exits.get_mut(&pinned).is_some_and(|e| {
                    req.filter.matches(&e.record.attrs)
                        && e.retry_at <= now
                        && e.breaker.allows(now)
                });
                if usable && !s.tried.contains(&pinned) {
                    return Pick::Exit(pinned);
                }
                if !fallback {
                    let unknown = !self.exits.contains_key(&pinned);
                    if unknown && (!listing_known || self.finding(now)) {
                        return Pick::Wait(s.budget_end);
                    }
                    return Pick::Fail(FailReason::StickyUnavailable);
                }
            }
        }
        let mut candidates = Vec::new();
        let mut next_retry = None::<Instant>;
        let relayed = s.settings.relayed;
        let unmeasured = average_latency(self.exits.values()).unwrap_or(UNMEASURED_LATENCY);
        for (peer, e) in &self.exits {
            if s.tried.contains(peer) || !req.filter.matches(&e.record.attrs) {
                continue;
            }
            // A listener that refuses relayed paths can use only exits it can
            // reach directly (by address, or over a hole-punched connection).
            let reachable = !e.record.addrs.is_empty()
                || (relayed && !e.relays.is_empty())
                || ctx.usable_conn(*peer, now, relayed, self.circuit_margin).is_some();
            if !reachable {
                continue;
            }
            // Full for us: try the others, or wait for a session there to end.
            if e.active as usize >= self.limits.max_sessions_per_exit {
                next_retry = Some(next_retry.map_or(now + MIN_WAIT, |n| n.min(now + MIN_WAIT)));
                continue;
            }
            let reopens = e.breaker.reopens_at().filter(|&at| at > now);
            if e.retry_at > now || reopens.is_some() {
                let at = e.retry_at.max(reopens.unwrap_or(Instant::ZERO));
                next_retry = Some(next_retry.map_or(at, |n| n.min(at)));
                continue;
            }
            let latency = e.latency.get().unwrap_or(unmeasured);
            let score = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
            candidates.push((*peer, score.saturating_mul(u64::from(e.active) + 1)));
        }
        // A half-open exit admits only its probes: skip it if they are out.
        while let Some(&(exit, score)) = pick_two(&candidates, &mut ctx.rng, |c| c.1) {
            if self.exits.get_mut(&exit).is_some_and(|e| e.breaker.allows(now)) {
                return Pick::Exit(exit);
            }
            candidates.retain(|c| *c != (exit, score));
        }
        // Exits may simply not have registered yet (the mesh is starting, or
        // recovering): wait a little, refreshing the list, before giving up.
        let waited = s.waiting_since.map_or(Duration::ZERO, |w| now.saturating_duration_since(w));
        if !listing_known || self.finding(now) || waited < NO_EXIT_WAIT {
            let until = s.waiting_since.unwrap_or(now) + NO_EXIT_WAIT;
            return Pick::Wait(match next_retry {
                Some(at) => at.min(until),
                None => until,
            });
        }
        match next_retry {
            Some(at) => Pick::Wait(at),
            None if s.attempts > 0 => Pick::Fail(FailReason::ExitFailed),
            None => Pick::Fail(FailReason::NoExit),
        }
    }

    pub(crate) fn on_peer_connected(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        t: &Timeouts,
        peer: PeerId,
    ) {
        for app in self.dial_waiters.remove(&peer).unwrap_or_default() {
            if self.is_dialing(app, peer) {
                self.connect(ctx, now, t, app, peer);
            }
        }
    }

    /// A direct dial failed where the exit's record may be stale (it may have
    /// moved behind a relay): the attempt does not use up the session's
    /// retries — once per session, so a dead exit still fails it.
    fn refund_attempt(&mut self, app: StreamId) {
        if let Some(s) = self.sessions.get_mut(&app).filter(|s| !s.refunded) {
            s.refunded = true;
            s.attempts = s.attempts.saturating_sub(1);
        }
    }

    fn is_dialing(&self, app: StreamId, peer: PeerId) -> bool {
        matches!(self.sessions.get(&app).map(|s| &s.phase), Some(Phase::Dialing { exit }) if *exit == peer)
    }

    /// A dial to `peer` failed; `route` is the relay it went through
    /// (`Some(None)`: it was direct; `None`: not a dial of ours). A failed
    /// direct dial falls back to the exit's relays before it counts against
    /// the exit.
    pub(crate) fn on_dial_failed(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        t: &Timeouts,
        peer: PeerId,
        route: Option<Option<PeerId>>,
    ) {
        if let Some(e) = self.exits.get_mut(&peer) {
            match route {
                Some(None) => {
                    e.direct_failed = Some(now);
                    self.stale |= e.relays.is_empty();
                }
                // Try another of its relays next time; the next listing
                // brings this one back if the exit still holds it.
                Some(Some(hub)) => {
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
            let via_relay =
                route == Some(None) && self.route(peer, relayed, now).is_some_and(|r| r.is_some());
            if via_relay {
                self.connect(ctx, now, t, app, peer);
            } else {
                if route == Some(None) && self.stale {
                    self.refund_attempt(app);
                }
                // One failed dial is one failure of the exit, however many
                // sessions waited on it (it used to open the breaker alone).
                let first = !counted;
                counted = true;
                self.exit_failed_as(ctx, now, t, app, Status::GeneralFailure, first);
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

    pub(crate) fn on_stream_refused(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        t: &Timeouts,
        stream: StreamId,
    ) {
        let Some(app) = self.peer_streams.remove(&stream) else { return };
        self.exit_failed(ctx, now, t, app, Status::GeneralFailure);
    }

    fn on_peer_data(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        t: &Timeouts,
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
                self.exit_failed(ctx, now, t, app, Status::GeneralFailure);
                return;
            }
        };
        let from_exit = Bytes::copy_from_slice(&inbox[used..]);
        let status = response.status;
        s.last_status = status;
        if status == Status::Succeeded {
            self.established(ctx, now, t, app, exit, stream, sent, from_exit);
        } else if status.is_destination_failure() || status == Status::TtlExpired {
            // The exit works; the destination does not. Another exit would not help.
            if let Some(e) = self.exits.get_mut(&exit) {
                e.active = e.active.saturating_sub(1);
                if let Some(to) = e.breaker.on_success(now) {
                    ctx.event(Event::Breaker { exit, to: to.to });
                }
            }
            self.peer_streams.remove(&stream);
            ctx.emit(Output::Close { stream, how: Close::Fin });
            self.fail(ctx, app, FailReason::Destination, status);
        } else {
            self.exit_answered_failure(ctx, now, t, app, exit, status);
        }
    }

    /// The exit answered a failure of its own (at capacity, resolver down):
    /// it is alive, so its breaker counts a success, and it is avoided only
    /// for one short backoff step — not the growing one of an exit that does
    /// not answer — while the session tries elsewhere.
    fn exit_answered_failure(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        t: &Timeouts,
        app: StreamId,
        exit: PeerId,
        status: Status,
    ) {
        if let Some(e) = self.exits.get_mut(&exit) {
            if let Some(to) = e.breaker.on_success(now) {
                ctx.event(Event::Breaker { exit, to: to.to });
            }
        }
        self.exit_failed_as(ctx, now, t, app, status, false);
    }

    #[allow(clippy::too_many_arguments)]
    fn established(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        t: &Timeouts,
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
        ctx.emit(Output::Transmit { stream: app, data: Bytes::from(reply) });
        ctx.emit(Output::Splice {
            a: app,
            b: stream,
            a_to_b_prefix: Bytes::from(core::mem::take(&mut s.leftover)),
            b_to_a_prefix: from_exit,
            limits: SpliceLimits { idle_timeout: t.idle },
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
    fn exit_failed(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        t: &Timeouts,
        app: StreamId,
        status: Status,
    ) {
        self.exit_failed_as(ctx, now, t, app, status, true);
    }

    /// `unresponsive`: the exit did not answer (dial, stream, timeout, reset,
    /// garbage), which counts against its breaker and grows its backoff.
    fn exit_failed_as(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        t: &Timeouts,
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
            if self.peer_streams.remove(&stream).is_some() {
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
            self.attempt(ctx, now, t, app);
        }
    }

    pub(crate) fn on_deadline(&mut self, ctx: &mut Ctx, now: Instant, t: &Timeouts, app: StreamId) {
        let Some(s) = self.sessions.get(&app) else { return };
        match s.phase {
            Phase::Handshake(_) => {
                let listener = s.listener;
                self.forget(ctx, app);
                ctx.emit(Output::Close { stream: app, how: Close::Reset });
                let reason = FailReason::HandshakeTimeout;
                ctx.event(Event::SessionFailed {
                    listener,
                    reason,
                    status: Status::GeneralFailure,
                });
            }
            Phase::Waiting => self.attempt(ctx, now, t, app),
            Phase::Dialing { .. } | Phase::Opening { .. } | Phase::Awaiting { .. } => {
                self.exit_failed(ctx, now, t, app, Status::TtlExpired);
            }
            Phase::Spliced { .. } => {}
        }
    }

    /// The app or the exit closed a stream before the splice.
    pub(crate) fn on_closed(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        t: &Timeouts,
        stream: StreamId,
        how: Close,
    ) {
        if let Some(&app) = self.peer_streams.get(&stream) {
            // The exit ended the stream without a (complete) answer.
            let _ = how;
            self.exit_failed(ctx, now, t, app, Status::GeneralFailure);
            return;
        }
        let Some(s) = self.sessions.get(&stream) else { return };
        if matches!(s.phase, Phase::Spliced { .. }) {
            return;
        }
        // The app gave up (or half-closed) before it had an answer: abandon the
        // session; there is no one left to answer.
        let listener = s.listener;
        self.forget(ctx, stream);
        ctx.emit(Output::Close { stream, how });
        let reason = FailReason::AppClosed;
        ctx.event(Event::SessionFailed { listener, reason, status: Status::GeneralFailure });
    }

    pub(crate) fn on_splice_ended(&mut self, ctx: &mut Ctx, app: StreamId, report: SpliceReport) {
        let Some(s) = self.sessions.remove(&app) else { return };
        self.uncount(&s);
        if let Phase::Spliced { exit, stream } = s.phase {
            self.peer_streams.remove(&stream);
            if let Some(e) = self.exits.get_mut(&exit) {
                e.active = e.active.saturating_sub(1);
            }
        }
        ctx.event(Event::SessionClosed { up: report.a_to_b, down: report.b_to_a, how: report.how });
    }

    /// Answers the app with `status` (if it got as far as a request) and ends the session.
    fn fail(&mut self, ctx: &mut Ctx, app: StreamId, reason: FailReason, status: Status) {
        let Some(s) = self.sessions.get(&app) else { return };
        let listener = s.listener;
        if s.kind.is_some() {
            ctx.emit(Output::Transmit { stream: app, data: Bytes::from(answer(s.kind, status)) });
        }
        self.forget(ctx, app);
        ctx.emit(Output::Close { stream: app, how: Close::Fin });
        ctx.event(Event::SessionFailed { listener, reason, status });
    }

    /// Drops every trace of an unspliced session (its peer stream is reset).
    fn forget(&mut self, ctx: &mut Ctx, app: StreamId) {
        let Some(s) = self.sessions.remove(&app) else { return };
        self.uncount(&s);
        ctx.timers.cancel(TimerKey::ClientSession(app));
        self.waiting.remove(&app);
        match s.phase {
            Phase::Dialing { exit } => {
                if let Some(set) = self.dial_waiters.get_mut(&exit) {
                    set.remove(&app);
                }
                self.attempt_abandoned(exit);
            }
            Phase::Opening { exit, stream } | Phase::Awaiting { exit, stream, .. } => {
                if self.peer_streams.remove(&stream).is_some() {
                    ctx.emit(Output::Close { stream, how: Close::Reset });
                }
                self.attempt_abandoned(exit);
            }
            Phase::Spliced { stream, .. } => {
                self.peer_streams.remove(&stream);
            }
            Phase::Handshake(_) | Phase::Waiting => {}
        }
    }

    fn uncount(&mut self, s: &ClientSession) {
        count_down(&mut self.per_listener, s.listener);
        count_down(&mut self.per_source, s.source);
    }

    /// An attempt ended without a verdict on the exit (the app left).
    fn attempt_abandoned(&mut self, exit: PeerId) {
        if let Some(e) = self.exits.get_mut(&exit) {
            e.active = e.active.saturating_sub(1);
            e.breaker.on_cancelled();
        }
    }

    /// A hub answered `Find`: merge the exits and wake sessions that wait.
    pub(crate) fn on_peers(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        t: &Timeouts,
        hub: PeerId,
        peers: Vec<PeerRecord>,
    ) {
        self.finds_pending = self.finds_pending.saturating_sub(1);
        self.refreshed = Some(now);
        self.stale = false;
        let breaker = self.config.selection.breaker;
        let alpha = self.config.selection.latency_alpha;
        let mut gained_relay = Vec::new();
        for record in peers {
            let peer = record.peer;
            let e = self.exits.entry(peer).or_insert_with(|| KnownExit {
                record: record.clone(),
                seen: now,
                failures: 0,
                retry_at: Instant::ZERO,
                breaker: CircuitBreaker::new(breaker),
                latency: Ewma::new(alpha),
                active: 0,
                relays: BTreeSet::new(),
                direct_failed: None,
                listed_by: BTreeSet::new(),
            });
            e.listed_by.insert(hub);
            // Each hub speaks only for its own relay: another hub's answer
            // neither adds nor removes it.
            if record.relays.contains(&hub) {
                // A new way to reach it: earlier failures (a direct dial to a
                // NATed exit) say nothing about this one.
                if e.relays.insert(hub) && e.relays.len() == 1 {
                    e.retry_at = now;
                    e.failures = 0;
                    e.breaker = CircuitBreaker::new(breaker);
                    gained_relay.push(peer);
                }
            } else {
                e.relays.remove(&hub);
            }
            e.record = record;
            e.seen = now;
        }
        for s in self.sessions.values_mut() {
            s.tried.retain(|p| !gained_relay.contains(p));
        }
        // Exits no hub has listed for three refreshes are gone.
        let stale = self.config.selection.refresh * 3;
        self.exits.retain(|_, e| e.active > 0 || now.saturating_duration_since(e.seen) < stale);
        self.wake_waiting(ctx, now, t);
    }

    /// A hub handed us a ticket: keep it, and wake sessions that waited for one.
    pub(crate) fn on_ticket(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        t: &Timeouts,
        hub: PeerId,
        ticket: Bytes,
        until: Instant,
    ) {
        let had = self.wallet.any_usable(now);
        self.wallet.hold(hub, ticket, until);
        if !had {
            self.wake_waiting(ctx, now, t);
        }
    }

    /// A hub request was lost with its link.
    pub(crate) fn on_link_lost(&mut self, ctx: &mut Ctx, now: Instant, t: &Timeouts) {
        if self.finds_pending > 0 {
            self.finds_pending -= 1;
            if self.finds_pending == 0 {
                self.wake_waiting(ctx, now, t);
            }
        }
    }

    fn wake_waiting(&mut self, ctx: &mut Ctx, now: Instant, t: &Timeouts) {
        let waiting: Vec<StreamId> = self.waiting.iter().copied().collect();
        for app in waiting {
            self.attempt(ctx, now, t, app);
        }
    }

    /// Records that `n` hubs were asked for exits.
    pub(crate) fn finds_sent(&mut self, now: Instant, t: &Timeouts, n: usize) {
        self.finds_pending = n;
        self.finds_deadline = now + t.hub_request;
        self.stale = false;
    }

    /// When sessions that wait for an exit want the list fetched again.
    pub(crate) fn refresh_due(&self, now: Instant) -> Option<Instant> {
        if (self.waiting.is_empty() && !self.stale) || self.finding(now) {
            return None;
        }
        // Never at or before `now`: if the refresh cannot go out yet (no hub
        // link is up), time must pass before trying again — a stale record
        // alone is worth one try a second, waiting sessions more.
        let soonest = if self.waiting.is_empty() { MIN_REFRESH } else { MIN_WAIT };
        Some(self.refreshed.map_or(now, |at| at + MIN_REFRESH).max(now + soonest))
    }

    /// Whether the exit list should be fetched now: none was ever fetched, or
    /// sessions wait and the last fetch is not brand new (so waiting sessions
    /// cannot turn into a storm of `Find`s).
    pub(crate) fn needs_exits(&self, now: Instant) -> bool {
        !self.finding(now)
            && match self.refreshed {
                None => true,
                Some(at) => {
                    (!self.waiting.is_empty() || self.stale)
                        && now.saturating_duration_since(at) >= MIN_REFRESH
                }
            }
    }
}

enum HandshakeOutcome {
    More,
    Rejected,
    Request { kind: AppKind, target: TargetAddr, params: UserParams, leftover: Bytes },
}

fn drive_socks(
    ctx: &mut Ctx,
    app: StreamId,
    h: &mut SocksHandshake,
    data: &[u8],
) -> HandshakeOutcome {
    if h.feed(data).is_err() {
        return HandshakeOutcome::Rejected;
    }
    loop {
        match h.poll() {
            SocksAction::NeedMore => return HandshakeOutcome::More,
            SocksAction::Send(bytes) => {
                ctx.emit(Output::Transmit { stream: app, data: Bytes::from(bytes) })
            }
            SocksAction::Request(r) => {
                let leftover = h.take_leftover();
                return HandshakeOutcome::Request {
                    kind: AppKind::Socks,
                    target: r.target,
                    params: r.params,
                    leftover,
                };
            }
            SocksAction::Reject { reply, .. } => {
                if !reply.is_empty() {
                    ctx.emit(Output::Transmit { stream: app, data: Bytes::from(reply) });
                }
                return HandshakeOutcome::Rejected;
            }
        }
    }
}

fn drive_http(
    ctx: &mut Ctx,
    app: StreamId,
    h: &mut HttpConnectHandshake,
    data: &[u8],
) -> HandshakeOutcome {
    if h.feed(data).is_err() {
        ctx.emit(Output::Transmit {
            stream: app,
            data: Bytes::from(http_connect::response(Status::GeneralFailure)),
        });
        return HandshakeOutcome::Rejected;
    }
    match h.poll() {
        HttpAction::NeedMore => HandshakeOutcome::More,
        HttpAction::Request(r) => {
            let leftover = h.take_leftover();
            HandshakeOutcome::Request {
                kind: AppKind::Http,
                target: r.target,
                params: r.params,
                leftover,
            }
        }
        HttpAction::Reject { response, .. } => {
            ctx.emit(Output::Transmit { stream: app, data: Bytes::from(response) });
            HandshakeOutcome::Rejected
        }
    }
}

/// Combines the listener's settings with the username's parameters; `None`
/// when they contradict each other (two different countries).
fn app_request(
    id: ListenerId,
    listener: &ListenerConfig,
    target: TargetAddr,
    params: UserParams,
) -> Option<AppRequest> {
    let mut filter = listener.filter.clone();
    match (filter.country, params.country) {
        (Some(a), Some(b)) if a != b => return None,
        (None, Some(b)) => filter.country = Some(b),
        _ => {}
    }
    for label in params.labels {
        if !filter.labels.contains(&label) {
            filter.labels.push(label);
        }
    }
    let sticky = match listener.sticky {
        StickyMode::Off => None,
        StickyMode::Listener => Some(StickyKey { listener: id, session: None }),
        StickyMode::Session => {
            params.session.clone().map(|s| StickyKey { listener: id, session: Some(s) })
        }
    };
    let session = params.session.as_deref().map(|s| SessionId(fnv1a(s.as_bytes())));
    Some(AppRequest { target, filter, sticky, session })
}

/// The mean of the exits' measured latencies, if any is measured.
fn average_latency<'a>(exits: impl Iterator<Item = &'a KnownExit>) -> Option<Duration> {
    let (sum, n) = exits
        .filter_map(|e| e.latency.get())
        .fold((Duration::ZERO, 0u32), |(sum, n), l| (sum.saturating_add(l), n + 1));
    (n > 0).then(|| sum / n)
}

/// A stable 64-bit hash (FNV-1a), so a session id means the same on every run.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

fn sticky_config(config: &ClientConfig) -> StickyConfig {
    StickyConfig { capacity: config.selection.sticky_capacity, ttl: config.selection.sticky_ttl }
}

/// The SOCKS5 reply or HTTP response carrying `status`, in the app's dialect.
fn answer(kind: Option<AppKind>, status: Status) -> Vec<u8> {
    match kind {
        Some(AppKind::Http) => http_connect::response(status),
        _ => socks::reply(status, None),
    }
}
