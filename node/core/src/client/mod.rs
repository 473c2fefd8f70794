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
//! The app gets its SOCKS5/SOCKS4/HTTP answer only once the exit has answered, so
//! its status is the destination's real one.

mod attempt;
mod exits;
mod handshake;
mod status;

use crate::config::{ClientConfig, ListenerConfig};
use crate::ctx::{Ctx, Owner, TimerKey};
use crate::ids::{ListenerId, PeerId, StreamId};
use crate::io::{Close, Event, FailReason, Output, SpliceReport, StateSnapshot};
use crate::selection::sticky::{StickyConfig, StickyPool};
use crate::target::Status;
use crate::ticket::TicketWallet;
use crate::time::Instant;
use bytes::Bytes;
use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use exits::KnownExit;
use handshake::{answer, AppKind, AppRequest, Handshake};

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
    pub(crate) fn new(config: ClientConfig, circuit_margin: Duration) -> ClientRole {
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
    #[cfg(debug_assertions)] // only the owner table's check asks
    pub(crate) fn session_of(&self, stream: StreamId) -> Option<StreamId> {
        if self.sessions.contains_key(&stream) {
            Some(stream)
        } else {
            self.peer_streams.get(&stream).copied()
        }
    }

    pub(crate) fn on_accept(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        listener: ListenerId,
        stream: StreamId,
        source: SocketAddr,
    ) {
        let source = source.ip();
        let settings = usize::try_from(listener.0).ok().and_then(|i| self.listeners.get(i));
        let on_listener = self.per_listener.get(&listener).copied().unwrap_or(0);
        let from_source = self.per_source.get(&source).copied().unwrap_or(0);
        let refusal = if self.sessions.len() >= ctx.limits.max_client_sessions
            || on_listener >= ctx.limits.max_sessions_per_listener
        {
            Some(FailReason::Overloaded)
        } else if from_source >= ctx.limits.max_sessions_per_source {
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
            budget_end: now + ctx.timeouts.handshake + ctx.timeouts.setup_budget,
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
        ctx.adopt(stream, Owner::Client);
        ctx.timers.set(TimerKey::ClientSession(stream), now + ctx.timeouts.handshake);
    }

    pub(crate) fn on_data(&mut self, ctx: &mut Ctx, now: Instant, stream: StreamId, data: &[u8]) {
        if let Some(&app) = self.peer_streams.get(&stream) {
            self.on_peer_data(ctx, now, app, stream, data);
            return;
        }
        let Some(s) = self.sessions.get_mut(&stream) else { return };
        match &mut s.phase {
            Phase::Handshake(_) => self.on_handshake_data(ctx, now, stream, data),
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

    pub(crate) fn on_deadline(&mut self, ctx: &mut Ctx, now: Instant, app: StreamId) {
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
            Phase::Waiting => self.attempt(ctx, now, app),
            Phase::Dialing { .. } | Phase::Opening { .. } | Phase::Awaiting { .. } => {
                self.exit_failed(ctx, now, app, Status::TtlExpired);
            }
            Phase::Spliced { .. } => {}
        }
    }

    /// The app or the exit closed a stream before the splice.
    pub(crate) fn on_closed(&mut self, ctx: &mut Ctx, now: Instant, stream: StreamId, how: Close) {
        if let Some(&app) = self.peer_streams.get(&stream) {
            // The exit ended the stream (a FIN or a reset alike) without a
            // (complete) answer.
            self.exit_failed(ctx, now, app, Status::GeneralFailure);
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
        ctx.release(app);
        self.uncount(&s);
        if let Phase::Spliced { exit, stream } = s.phase {
            self.release_peer_stream(ctx, stream);
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
        ctx.release(app);
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
                if self.release_peer_stream(ctx, stream).is_some() {
                    ctx.emit(Output::Close { stream, how: Close::Reset });
                }
                self.attempt_abandoned(exit);
            }
            Phase::Spliced { stream, .. } => {
                self.release_peer_stream(ctx, stream);
            }
            Phase::Handshake(_) | Phase::Waiting => {}
        }
    }

    /// Lets a session's stream to an exit go; returns the app stream it served.
    fn release_peer_stream(&mut self, ctx: &mut Ctx, stream: StreamId) -> Option<StreamId> {
        let app = self.peer_streams.remove(&stream)?;
        ctx.release(stream);
        Some(app)
    }

    fn uncount(&mut self, s: &ClientSession) {
        count_down(&mut self.per_listener, s.listener);
        count_down(&mut self.per_source, s.source);
    }
}

fn sticky_config(config: &ClientConfig) -> StickyConfig {
    StickyConfig { capacity: config.selection.sticky_capacity, ttl: config.selection.sticky_ttl }
}
