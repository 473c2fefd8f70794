//! Public HTTP requests at gateways (`crate::ingress_model`): the world
//! plays the public client and the gateway's HTTP side (the driver's job in
//! production). A request goes in as `IngressRequest`; the gateway's one
//! answer is judged against the model's hand-written expectation; a
//! forwarded request's stream becomes the app's, which then sends its
//! payload to the agent's echo origin and verifies every byte back, exactly
//! like a proxied app; its end is reported with `IngressDone`.
//!
//! Invariants checked here: **routing** (the answer, or the agent's labels,
//! are what the model says), **one answer** per request (never two, never an
//! answer after a hand-over, so never a replay), and through the app's own
//! checks, **integrity** and no silent truncation of what was forwarded.

use super::{AppPhase, Invariant, NodeIx, Outcome, Owner, World, LOCAL};
use crate::bytes_model::{Chunk, Payload};
use crate::ingress_model::{self, Expect};
use crate::InjectedBug;
use bytes::Bytes;
use meshproxy_core::ids::{PeerId, RequestId, StreamId};
use meshproxy_core::io::{IngressEnd, IngressOutcome, IngressResponse, Input};
use meshproxy_core::target::TargetAddr;
use rand_core::RngCore;
use std::net::SocketAddr;

impl World<'_> {
    fn first_agent(&self) -> NodeIx {
        let t = &self.s.topology;
        t.hubs + t.exits + t.clients
    }

    fn first_gateway(&self) -> NodeIx {
        self.first_agent() + self.s.topology.agents
    }

    /// The gateway app `a` sends its request to.
    fn gateway_of(&self, a: u32) -> Option<NodeIx> {
        let spec = self.apps[a as usize].spec.ingress?;
        Some(self.s.topology.gateway_node(spec.gateway))
    }

    /// What app `a`'s request must get, under the table in force when it
    /// reached its gateway.
    fn expectation(&self, a: u32) -> Option<(u8, Expect)> {
        let app = &self.apps[a as usize];
        let spec = app.spec.ingress?;
        let version = app.routes_version.unwrap_or(1);
        Some((spec.shape, ingress_model::request(spec.shape, u64::from(a), version).1))
    }

    /// Draws the scenario's route reloads (their own random stream, so
    /// scenarios without them keep their plans).
    pub(super) fn ingress_init(&mut self, seed: u64) {
        let (reloads, gateways) =
            (self.s.workload.ingress_reloads, self.s.topology.ingress_gateways());
        if reloads == 0 || gateways == 0 {
            return;
        }
        let mut rng = crate::rng_for(seed, 9);
        let from = u64::from(self.s.workload.start_secs) * 1_000_000;
        let to = u64::from(self.s.duration_secs) * 1_000_000;
        for _ in 0..reloads {
            let at = meshproxy_core::time::Instant::from_micros(crate::plan::between(
                &mut rng, from, to,
            ));
            let gateway = self.s.topology.gateway_node(rng.next_u32() % gateways);
            self.push(at, super::Ev::IngressReload(gateway));
        }
    }

    /// Hands gateway `n` the next route table version.
    pub(super) fn ingress_reload(&mut self, n: NodeIx) {
        self.routes_version += 1;
        let routes = ingress_model::snapshot(self.routes_version);
        if self.nodes[n as usize].core.is_some() {
            self.send_input(n, LOCAL, Input::ReloadRoutes(routes));
        }
    }

    /// App `request`'s request is about to reach gateway `n`: note the
    /// route table version in force there.
    pub(super) fn ingress_admitted(&mut self, n: NodeIx, request: RequestId) {
        let version = self.nodes[n as usize].core.as_ref().and_then(|c| c.routes_version());
        if let Some(app) = usize::try_from(request.0).ok().and_then(|a| self.apps.get_mut(a)) {
            app.routes_version = version;
        }
        let Ok(a) = u32::try_from(request.0) else { return };
        if let Some((_, expect)) = self.expectation(a) {
            self.load_arrived(n, a, expect);
        }
    }

    /// Every answer carries the version its request arrived under: a reload
    /// never changes the decision of a request already admitted.
    fn check_version(&mut self, a: u32, got: u64) {
        let want = self.apps[a as usize].routes_version;
        if want != Some(got) {
            let detail = format!(
                "request {a} arrived under route table version {want:?} but was decided under {got}"
            );
            self.violation(Invariant::Routing, detail);
        }
    }

    /// App `a`'s request reaches its gateway.
    pub(super) fn ingress_start(&mut self, a: u32) {
        let Some(gw) = self.gateway_of(a) else { return };
        let budget = if self.apps[a as usize].probe {
            self.now + std::time::Duration::from_secs(u64::from(self.s.liveness_bound_secs))
        } else {
            self.apps[a as usize].deadline
        };
        self.apps[a as usize].deadline = budget;
        self.apps[a as usize].started = self.now;
        if !self.apps[a as usize].probe && self.adv_relaxes(self.now) {
            self.apps[a as usize].strict = false;
        }
        self.push(budget, super::Ev::AppDeadline(a));
        self.stats.app_connections += 1;
        let listener = self.nodes[gw as usize].core.as_ref().and_then(|c| c.listeners().ingress(0));
        let Some(listener) = listener else {
            // The gateway process is down: connection refused.
            self.app_end(a, Outcome::NoAnswer);
            return;
        };
        let shape = self.apps[a as usize].spec.ingress.map_or(0, |s| s.shape);
        let (head, _) = ingress_model::request(shape, u64::from(a), 1);
        let client =
            SocketAddr::from(([198, 51, 100, (a % 250) as u8 + 1], 40_000 + (a % 20_000) as u16));
        self.apps[a as usize].phase = AppPhase::Handshake;
        let input =
            Input::IngressRequest { request: RequestId(u64::from(a)), listener, client, head };
        self.send_input(gw, LOCAL, input);
    }

    /// The app named by `request`, if it is a public request still waiting
    /// for its gateway's answer; a second answer is a violation.
    fn waiting_app(&mut self, n: NodeIx, request: RequestId, what: &str) -> Option<u32> {
        let a = u32::try_from(request.0).ok().filter(|a| (*a as usize) < self.apps.len())?;
        let app = &self.apps[a as usize];
        if app.spec.ingress.is_none() || self.gateway_of(a) != Some(n) {
            let detail =
                format!("gateway n{n} answered request {request:?}, which it was not sent");
            self.violation(Invariant::Protocol, detail);
            return None;
        }
        match app.phase {
            AppPhase::Handshake => Some(a),
            // The app gave up (its deadline) and told the gateway: a late
            // answer may cross that `IngressDone` on the way.
            AppPhase::Done if app.outcome == Some(Outcome::NoAnswer) => None,
            phase => {
                let detail = format!("request {a} got a second answer ({what}) in phase {phase:?}");
                self.violation(Invariant::Protocol, detail);
                None
            }
        }
    }

    /// The gateway answered a request itself.
    pub(super) fn ingress_answered(
        &mut self,
        n: NodeIx,
        request: RequestId,
        response: &IngressResponse,
    ) {
        let Some(a) = self.waiting_app(n, request, "a response") else { return };
        self.load_answered(n, a);
        self.check_version(a, response.version);
        let Some((shape, expect)) = self.expectation(a) else { return };
        let status = response.status;
        let wrong = match expect {
            Expect::Status(want) => status != want,
            Expect::Agent(_) => !matches!(status, 502..=504),
        };
        // Each refusal is counted as what it is (the gateway's metrics).
        let miscounted = match status {
            400 => response.outcome != IngressOutcome::BadRequest,
            404 => response.outcome != IngressOutcome::NoRoute,
            _ => false,
        };
        // A full gateway may refuse an agent request; only a full one.
        let excused = match expect {
            Expect::Agent(sites) if status == 503 => {
                self.busy_excused(n, a, sites, response.outcome)
            }
            _ => false,
        };
        if miscounted {
            let detail = format!(
                "request {a} (shape {shape}) got {status} counted as {:?}",
                response.outcome
            );
            self.violation(Invariant::Outcome, detail);
        }
        if wrong && !excused {
            let detail = format!(
                "request {a} (shape {shape}) got {status} ({:?}); the model says {expect:?}",
                response.outcome
            );
            self.violation(Invariant::Routing, detail);
        } else if matches!(expect, Expect::Agent(_)) && self.apps[a as usize].strict && !excused {
            let probe = self.apps[a as usize].probe;
            let when = if probe { "after the heal" } else { "in a run without faults" };
            let detail =
                format!("request {a} (shape {shape}) got {status} ({:?}) {when}", response.outcome);
            self.violation(if probe { Invariant::Liveness } else { Invariant::Outcome }, detail);
        }
        self.app_end(a, Outcome::Http(status));
    }

    /// The gateway handed a request's stream to an agent over to the world
    /// (the driver, in production).
    pub(super) fn ingress_forwarded(
        &mut self,
        n: NodeIx,
        request: RequestId,
        sid: StreamId,
        agent: PeerId,
        prefix: Bytes,
        version: u64,
    ) {
        let taken = self.node_streams.remove(&(n, sid));
        let Some(a) = self.waiting_app(n, request, "a hand-over") else {
            if let Some((st, side)) = taken {
                self.write(st, side, Chunk::Reset);
                self.release(st, side);
            }
            return;
        };
        self.check_version(a, version);
        let Some((shape, expect)) = self.expectation(a) else { return };
        let first = self.first_agent();
        let ix =
            self.by_peer.get(&agent).copied().filter(|i| (first..self.first_gateway()).contains(i));
        match (ix, expect) {
            (Some(i), Expect::Agent(sites)) if sites.contains(&ingress_model::site(i - first)) => {
                self.apps[a as usize].target =
                    TargetAddr::Ip(crate::topology::agent_origin(i - first));
            }
            _ => {
                let detail = format!(
                    "request {a} (shape {shape}) went to {agent:?} (n{ix:?}); the model says {expect:?}"
                );
                self.violation(Invariant::Routing, detail);
            }
        }
        let Some((st, side)) = taken else {
            // The stream died on the way (the agent reset it): the client
            // sees a failure, never a clean empty answer.
            self.app_end(a, Outcome::NoAnswer);
            return;
        };
        if let Some(s) = self.streams.get_mut(&st) {
            s.owners[side] = Owner::App(a);
        }
        let app = &mut self.apps[a as usize];
        app.stream = st;
        app.side = side;
        app.phase = AppPhase::Open;
        app.reply_ok = true;
        self.app_success(a);
        if !prefix.is_empty() {
            self.app_chunk(a, Chunk::Data(Payload::Real(prefix)));
        }
    }

    /// Gateway `n` crashed: its public clients' connections are reset with
    /// it (its HTTP side is part of the same process).
    pub(super) fn ingress_gateway_crashed(&mut self, n: NodeIx) {
        self.load_crashed(n);
        for a in 0..self.apps.len() as u32 {
            let app = &self.apps[a as usize];
            let live = app.outcome.is_none() && app.phase != AppPhase::Connecting;
            if live && self.gateway_of(a) == Some(n) {
                let outcome = if app.reply_ok { Outcome::Reset } else { Outcome::NoAnswer };
                self.app_end(a, outcome);
            }
        }
    }

    /// App `a` (a public request) ended: tell its gateway, as the driver does.
    pub(super) fn ingress_end(&mut self, a: u32, outcome: Outcome) {
        let Some(gw) = self.gateway_of(a) else { return };
        let app = &self.apps[a as usize];
        let end = match (app.reply_ok, outcome) {
            (_, Outcome::Http(_)) => return, // answered by the gateway: nothing in flight
            (true, Outcome::Complete) => IngressEnd::Complete,
            (true, _) => IngressEnd::UpstreamFailed,
            (false, _) => IngressEnd::ClientGone,
        };
        if self.bug == Some(InjectedBug::IngressForgetsDone) && end != IngressEnd::ClientGone {
            return;
        }
        if self.nodes[gw as usize].core.is_some() {
            self.send_input(
                gw,
                LOCAL,
                Input::IngressDone { request: RequestId(u64::from(a)), end },
            );
        }
    }
}
