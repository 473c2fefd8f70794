//! Load on gateways, counted by the world independently of the core: which
//! agent requests each gateway holds (admitted, not yet answered, and not
//! yet ended by its `IngressDone`), so a `503 Busy` can be judged, and how
//! many answers the gateways gave against how many they counted.
//!
//! A `503 Busy` to an agent request is right only when the gateway was
//! full: it held at least `limits.max_ingress_requests` requests, or at
//! least `limits.max_requests_per_agent` × the route's candidate agents
//! (below that, some candidate had room — each request holds at most one
//! agent at a time). Every answer and hand-over must be counted once in
//! the gateway's `IngressRequest` event (its metrics).

use super::{Invariant, NodeIx, World};
use crate::ingress_model::{self, Expect};
use meshproxy_core::io::{Event, IngressOutcome, Input, Output};
use std::collections::{BTreeMap, BTreeSet};

/// What the world counts of the gateways' load.
#[derive(Debug, Default)]
pub(super) struct LoadState {
    /// Gateway → the agent requests it holds.
    held: BTreeMap<NodeIx, BTreeSet<u32>>,
    /// App → how many requests its gateway held when it arrived.
    load_at_arrival: BTreeMap<u32, usize>,
    /// Answers and hand-overs the gateways gave.
    answers: u64,
    /// `IngressRequest` events they counted.
    counted: u64,
}

impl World<'_> {
    /// App `a`'s request (to an agent route, `expect`) reaches gateway `n`.
    pub(super) fn load_arrived(&mut self, n: NodeIx, a: u32, expect: Expect) {
        if !matches!(expect, Expect::Agent(_)) {
            return;
        }
        let held = self.load.held.entry(n).or_default();
        self.load.load_at_arrival.insert(a, held.len());
        held.insert(a);
    }

    /// Gateway `n` is done with app `a`'s request.
    fn load_done(&mut self, n: NodeIx, a: u32) {
        if let Some(held) = self.load.held.get_mut(&n) {
            held.remove(&a);
        }
    }

    /// Gateway `n` answered app `a`'s request itself.
    pub(super) fn load_answered(&mut self, n: NodeIx, a: u32) {
        self.load_done(n, a);
    }

    /// Gateway `n` crashed: it holds nothing.
    pub(super) fn load_crashed(&mut self, n: NodeIx) {
        self.load.held.remove(&n);
    }

    /// Input about to reach gateway `n`: an `IngressDone` ends a request.
    pub(super) fn load_input(&mut self, n: NodeIx, input: &Input) {
        if let Input::IngressDone { request, .. } = input {
            if let Ok(a) = u32::try_from(request.0) {
                self.load_done(n, a);
            }
        }
    }

    /// Output of any node: answers and the events that count them.
    pub(super) fn load_output(&mut self, out: &Output) {
        match out {
            Output::IngressRespond { .. } | Output::IngressForward { .. } => self.load.answers += 1,
            Output::Event(Event::IngressRequest { .. }) => self.load.counted += 1,
            _ => {}
        }
    }

    /// Whether gateway `n` was full when app `a`'s request (to an agent
    /// route for `sites`) arrived; a violation if it answered `503 Busy`
    /// while it was not.
    pub(super) fn busy_excused(
        &mut self,
        n: NodeIx,
        a: u32,
        sites: &[&str],
        outcome: IngressOutcome,
    ) -> bool {
        if outcome != IngressOutcome::Busy {
            return false;
        }
        let limits = self.nodes[n as usize].config.limits;
        let candidates = (0..self.s.topology.agents)
            .filter(|i| sites.contains(&ingress_model::site(*i)))
            .count();
        let room = limits
            .max_ingress_requests
            .min(limits.max_requests_per_agent.saturating_mul(candidates));
        let load = self.load.load_at_arrival.get(&a).copied().unwrap_or(0);
        if load < room {
            let detail = format!(
                "request {a} got 503 busy at gateway n{n}, which held {load} requests when it arrived (room for {room}: {} in all, {} per agent × {candidates} agents)",
                limits.max_ingress_requests, limits.max_requests_per_agent
            );
            self.violation(Invariant::Outcome, detail);
            return false;
        }
        true
    }

    /// End of run: every answer was counted once.
    pub(super) fn load_final(&mut self) {
        let (answers, counted) = (self.load.answers, self.load.counted);
        if answers != counted {
            let detail = format!(
                "gateways gave {answers} answers and hand-overs but counted {counted} (IngressRequest events)"
            );
            self.violation(Invariant::Outcome, detail);
        }
    }
}
