//! The gateway role: public HTTP requests routed to agents (`DESIGN.md` §8).
//!
//! The driver speaks HTTP to the public (hyper) and hands the core each
//! request's head ([`Input::IngressRequest`]); the core decides it with the
//! [`Router`] and answers exactly once:
//!
//! ```text
//! IngressRequest ─ normalise, route ─┬─ refused / static / redirect ──────────▶ IngressRespond
//!                                    └─ agent target: choose an agent ─┐
//!        ┌──────────────────────────────────────────────────────────────┘
//!        └▶ dial (direct or relayed) ▶ OpenStream ▶ Open ▶ Answer ─┬─ Ok ───────────▶ IngressForward
//!                ▲                                                 ├─ Forbidden ────▶ IngressRespond 403
//!                └──────────── another agent, none tried before ◀──┴─ other failure, timeout
//!                              (none left, or the budget spent: 502 / 504 / 503)
//! ```
//!
//! **No replay.** The driver writes no byte of the request before
//! `IngressForward`, and the core sends nothing but `Open` before the agent's
//! answer, so every retry happens while no byte of the request has reached
//! an agent. After the hand-over a failure is the client's 502/504 (the
//! driver's), never a second attempt.
//!
//! **Availability.** An agent is chosen only while a hub lists it and the
//! gateway has not seen it drop off since ([`agents`]); a request already
//! under way keeps the routing decision (and config version) it was admitted
//! under, whatever reloads happen meanwhile.

mod agents;
mod attempt;

use crate::config::{GatewayConfig, GatewayListener};
use crate::ctx::{Ctx, Owner, TimerKey};
use crate::http_head::RequestHead;
use crate::ids::{ListenerId, PeerId, RequestId, StreamId};
use crate::ingress::{Decision, Outcome, Request, Router, Snapshot, StaleVersion};
use crate::io::{Close, Event, IngressEnd, IngressOutcome, IngressResponse, Output};
use crate::record::PeerRecord;
use crate::ticket::TicketWallet;
use crate::time::Instant;
use crate::wire::ingress::AnswerStatus;
use bytes::Bytes;
use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

pub(crate) use agents::Agents;

/// Where one request is.
#[derive(Debug)]
enum Phase {
    /// No agent chosen yet.
    Choosing,
    /// No agent was available: waiting (at most [`AGENT_WAIT`]) for a fresh
    /// listing from the hubs, asked for at once.
    Waiting,
    /// Waiting for a connection to `agent`.
    Dialing { agent: PeerId },
    /// Waiting for the stream to `agent` to open.
    Opening { agent: PeerId, stream: StreamId },
    /// `Open` sent; waiting for the answer.
    Awaiting { agent: PeerId, stream: StreamId, inbox: Vec<u8> },
    /// Handed to the outside with `IngressForward`; waiting for `IngressDone`.
    Forwarded { agent: PeerId },
}

impl Phase {
    fn agent(&self) -> Option<PeerId> {
        match self {
            Phase::Choosing | Phase::Waiting => None,
            Phase::Dialing { agent }
            | Phase::Opening { agent, .. }
            | Phase::Awaiting { agent, .. }
            | Phase::Forwarded { agent } => Some(*agent),
        }
    }

    fn stream(&self) -> Option<StreamId> {
        match self {
            Phase::Opening { stream, .. } | Phase::Awaiting { stream, .. } => Some(*stream),
            Phase::Choosing | Phase::Waiting | Phase::Dialing { .. } | Phase::Forwarded { .. } => {
                None
            }
        }
    }
}

/// One public request being forwarded.
#[derive(Debug)]
struct Pending {
    listener: ListenerId,
    /// The gateway listener's index in the config.
    index: usize,
    client: SocketAddr,
    head: RequestHead,
    /// The normalised host, as `Open` carries it.
    host: Option<String>,
    decision: Decision,
    started: Instant,
    budget_end: Instant,
    attempts: u32,
    tried: BTreeSet<PeerId>,
    /// The last failure, which the client gets when no agent is left.
    last: Option<AnswerStatus>,
    /// Whether it already waited once for a fresh listing.
    waited: bool,
    phase: Phase,
}

/// The gateway role.
#[derive(Debug)]
pub(crate) struct GatewayRole {
    listeners: Vec<GatewayListener>,
    /// Listener id → index in `listeners`.
    ids: BTreeMap<ListenerId, usize>,
    router: Router,
    agents: Agents,
    wallet: TicketWallet,
    requests: BTreeMap<RequestId, Pending>,
    /// Streams to agents this role holds (opening or awaiting an answer).
    streams: BTreeMap<StreamId, RequestId>,
    /// Requests waiting for a connection to an agent.
    dial_waiters: BTreeMap<PeerId, BTreeSet<RequestId>>,
    /// Requests that found no agent, waiting for the next listing.
    waiting: BTreeSet<RequestId>,
    /// A request found no agent: the node asks the hubs at once.
    refresh_now: bool,
    refresh: Duration,
    /// When the hubs were last asked for agents.
    refreshed: Option<Instant>,
    circuit_margin: Duration,
}

impl GatewayRole {
    /// A gateway; `ids` names each of `config.listeners` as the node numbers it.
    pub(crate) fn new(
        config: &GatewayConfig,
        ids: impl IntoIterator<Item = (ListenerId, usize)>,
        circuit_margin: Duration,
    ) -> GatewayRole {
        GatewayRole {
            listeners: config.listeners.clone(),
            ids: ids.into_iter().collect(),
            router: Router::new(config.routes.clone()),
            agents: Agents::default(),
            wallet: TicketWallet::default(),
            requests: BTreeMap::new(),
            streams: BTreeMap::new(),
            dial_waiters: BTreeMap::new(),
            waiting: BTreeSet::new(),
            refresh_now: false,
            refresh: config.refresh,
            refreshed: None,
            circuit_margin,
        }
    }

    /// Swaps the routes for a newer version; requests under way keep theirs.
    pub(crate) fn reload(&mut self, routes: Snapshot) -> Result<(), StaleVersion> {
        self.router.reload(routes)
    }

    /// The version of the route table in force.
    pub(crate) fn routes_version(&self) -> u64 {
        self.router.snapshot().version()
    }

    /// A public request arrived.
    pub(crate) fn on_request(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        request: RequestId,
        listener: ListenerId,
        client: SocketAddr,
        head: RequestHead,
    ) {
        let Some(&index) = self.ids.get(&listener) else {
            self.respond(ctx, now, request, listener, error(404, IngressOutcome::NoRoute), 0);
            return;
        };
        if self.requests.contains_key(&request) {
            return; // the outside named two requests alike: keep the first
        }
        if self.requests.len() >= ctx.limits.max_ingress_requests {
            self.respond(ctx, now, request, listener, error(503, IngressOutcome::Busy), 0);
            return;
        }
        let normalised = match Request::from_head(&head) {
            Ok(r) => r,
            Err(e) => {
                let answer = error(e.status(), IngressOutcome::BadRequest);
                self.respond(ctx, now, request, listener, answer, 0);
                return;
            }
        };
        let decision = self.router.decide(&self.listeners[index].name, &normalised);
        let answer = match &decision.outcome {
            Outcome::Refuse(r) => {
                let outcome = if r.status() == 404 {
                    IngressOutcome::NoRoute
                } else {
                    IngressOutcome::BadRequest
                };
                error(r.status(), outcome)
            }
            Outcome::Static(s) => IngressResponse {
                status: s.status,
                outcome: IngressOutcome::Static,
                version: decision.version,
                location: None,
                content_type: s.content_type.clone(),
                body: s.body.clone(),
            },
            Outcome::Redirect { status, location } => IngressResponse {
                status: *status,
                outcome: IngressOutcome::Redirect,
                version: decision.version,
                location: Some(location.clone()),
                content_type: "text/plain; charset=utf-8".to_owned(),
                body: Bytes::from(format!("redirecting to {location}\n")),
            },
            Outcome::Forward(_) => {
                let pending = Pending {
                    listener,
                    index,
                    client,
                    head,
                    host: normalised.host,
                    decision,
                    started: now,
                    budget_end: now + ctx.timeouts.setup_budget,
                    attempts: 0,
                    tried: BTreeSet::new(),
                    last: None,
                    waited: false,
                    phase: Phase::Choosing,
                };
                self.requests.insert(request, pending);
                self.attempt(ctx, now, request);
                return;
            }
        };
        self.respond(ctx, now, request, listener, answer, 0);
    }

    /// The outside is done with `request`.
    pub(crate) fn on_done(&mut self, ctx: &mut Ctx, request: RequestId, end: IngressEnd) {
        let Some(p) = self.requests.remove(&request) else { return };
        ctx.timers.cancel(TimerKey::IngressRequest(request));
        self.waiting.remove(&request);
        match p.phase {
            Phase::Forwarded { agent } => {
                self.agents.finish(agent);
                ctx.event(Event::IngressEnded { agent, end });
            }
            phase => {
                // The client left before an answer: give the attempt up.
                self.abandon(ctx, request, &phase);
            }
        }
    }

    /// Undoes what an attempt in `phase` holds: its stream, its dial wait,
    /// its count at the agent.
    fn abandon(&mut self, ctx: &mut Ctx, request: RequestId, phase: &Phase) {
        let Some(agent) = phase.agent() else { return };
        if let Some(stream) = phase.stream() {
            self.streams.remove(&stream);
            ctx.release(stream);
            ctx.emit(Output::Close { stream, how: Close::Reset });
        }
        if let Phase::Dialing { .. } = phase {
            if let Some(w) = self.dial_waiters.get_mut(&agent) {
                w.remove(&request);
                if w.is_empty() {
                    self.dial_waiters.remove(&agent);
                }
            }
        }
        self.agents.finish(agent);
    }

    /// Answers `request` without an agent and forgets it.
    fn respond(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        request: RequestId,
        listener: ListenerId,
        mut response: IngressResponse,
        attempts: u32,
    ) {
        let (started, version) = match self.requests.remove(&request) {
            Some(p) => (p.started, p.decision.version),
            // Decided in this very step, under the version in force.
            None => (now, self.router.snapshot().version()),
        };
        response.version = version;
        ctx.timers.cancel(TimerKey::IngressRequest(request));
        let outcome = response.outcome;
        ctx.emit(Output::IngressRespond { request, response });
        ctx.event(Event::IngressRequest {
            listener,
            outcome,
            attempts,
            setup: now.saturating_duration_since(started),
        });
    }

    /// A hub listed agents: requests waiting for one try again (once).
    pub(crate) fn on_agents(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        hub: PeerId,
        records: Vec<PeerRecord>,
    ) {
        self.agents.on_listing(now, hub, records);
        for request in std::mem::take(&mut self.waiting) {
            self.attempt(ctx, now, request);
        }
    }

    /// Whether a request asked for a listing now (cleared by asking).
    pub(crate) fn take_refresh_now(&mut self) -> bool {
        std::mem::take(&mut self.refresh_now)
    }

    /// A hub handed this node a ticket.
    pub(crate) fn on_ticket(&mut self, hub: PeerId, ticket: Bytes, until: Instant) {
        self.wallet.hold(hub, ticket, until);
    }

    /// Whether the hubs should be asked for agents now.
    pub(crate) fn wants_refresh(&self, now: Instant) -> bool {
        self.refreshed.is_none_or(|at| now.saturating_duration_since(at) >= self.refresh)
    }

    /// When the hubs should next be asked for agents.
    pub(crate) fn refresh_due(&self) -> Option<Instant> {
        self.refreshed.map(|at| at + self.refresh)
    }

    /// The hubs were asked for agents at `now`.
    pub(crate) fn refreshed(&mut self, now: Instant) {
        self.refreshed = Some(now);
    }

    /// How many requests are in flight (decided, not yet done).
    pub(crate) fn request_count(&self) -> usize {
        self.requests.len()
    }

    /// How many streams this role holds.
    pub(crate) fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// How many agents it knows.
    pub(crate) fn agent_count(&self) -> usize {
        self.agents.len()
    }

    /// Whether this role holds `stream`.
    #[cfg(debug_assertions)]
    pub(crate) fn owns(&self, stream: StreamId) -> bool {
        self.streams.contains_key(&stream)
    }

    pub(crate) fn adopt(&mut self, ctx: &mut Ctx, stream: StreamId, request: RequestId) {
        self.streams.insert(stream, request);
        ctx.adopt(stream, Owner::Gateway);
    }
}

/// An error answer with a short plain-text body.
pub(crate) fn error(status: u16, outcome: IngressOutcome) -> IngressResponse {
    let text = match status {
        400 => "bad request",
        403 => "forbidden by the service's agent",
        404 => "no route for this host and path",
        502 => "the service could not be reached",
        503 => "the service is unavailable",
        504 => "the service did not answer in time",
        _ => "error",
    };
    IngressResponse {
        status,
        outcome,
        version: 0, // set where it is sent
        location: None,
        content_type: "text/plain; charset=utf-8".to_owned(),
        body: Bytes::from(format!("{status} {text}\n")),
    }
}

#[cfg(test)]
mod tests;
