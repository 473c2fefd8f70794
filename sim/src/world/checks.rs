//! The invariants (`Invariant`, named as violations print them), recording
//! violations, and the liveness checks: probes once the network
//! is quiet, the checkpoint after the liveness bound, and the end-of-run
//! checks.

use super::{AppPhase, Ev, NodeIx, World};
use crate::plan::AppSpec;
use crate::scenario::OriginKind;
use crate::Violation;

/// The invariants a run checks; [`Invariant::name`] is how a [`Violation`]
/// (and the trace) names each one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Invariant {
    /// Every byte an app or origin receives is the byte the other end sent,
    /// and a reset is never turned into a clean end.
    Integrity,
    /// The nodes' tables stay within their limits, and a run within its
    /// event budget.
    Bounds,
    /// Nothing is left over once the run has quiesced: sessions, streams,
    /// splices.
    NoLeaks,
    /// An origin hears from the app its header names.
    Routing,
    /// No exit dials a destination its policy forbids; apps are refused only
    /// as the policy says.
    Policy,
    /// A sticky app comes back through the exit it was pinned to.
    Sticky,
    /// The relay model: exits hold reservations, circuits respect their caps.
    Relay,
    /// Misbehaving apps and peers are ended, the right way, in time, and
    /// never spliced.
    Adversary,
    /// Only admitted peers are listed by hubs and served by exits.
    Admission,
    /// Clients that can reach a hub hold a usable ticket.
    Tickets,
    /// Exits that can reach a hub are registered there (with pre-auth floods).
    Registration,
    /// Probes after the network healed succeed; exits are registered again.
    Liveness,
    /// An honest app in a run without faults ends as it must.
    Outcome,
    /// An app never waits past its deadline without an answer.
    Hang,
    /// An app gets a valid proxy reply.
    Protocol,
    /// Virtual time keeps moving.
    Livelock,
    /// A gateway sends no new request to an agent it saw disconnect
    /// (sim/src/world/ingress_availability.rs).
    Availability,
}

impl Invariant {
    /// The invariant's name, as violations and traces print it.
    pub(super) fn name(self) -> &'static str {
        match self {
            Invariant::Integrity => "integrity",
            Invariant::Bounds => "bounds",
            Invariant::NoLeaks => "no-leaks",
            Invariant::Routing => "routing",
            Invariant::Policy => "policy",
            Invariant::Sticky => "sticky",
            Invariant::Relay => "relay",
            Invariant::Adversary => "adversary",
            Invariant::Admission => "admission",
            Invariant::Tickets => "tickets",
            Invariant::Registration => "registration",
            Invariant::Liveness => "liveness",
            Invariant::Outcome => "outcome",
            Invariant::Hang => "hang",
            Invariant::Protocol => "protocol",
            Invariant::Livelock => "livelock",
            Invariant::Availability => "availability",
        }
    }
}

impl World<'_> {
    /// Records that `invariant` did not hold (the first 100 per run).
    pub(super) fn violation(&mut self, invariant: Invariant, detail: String) {
        let invariant = invariant.name();
        if self.violations.len() < 100 {
            self.trace.line(self.now, "VIOLATION", || format!("{invariant}: {detail}"));
            self.violations.push(Violation { at: self.now, invariant, detail });
        }
    }

    pub(super) fn start_probes(&mut self) {
        self.trace.line(self.now, "probes", String::new);
        for client in 0..self.s.topology.clients {
            for listener in 0..self.s.listeners.len() as u32 {
                let http = self.s.listeners[listener as usize].protocol
                    == crate::scenario::ListenerProtocol::Http;
                let spec = AppSpec {
                    at: self.now,
                    client,
                    listener,
                    kind: OriginKind::Echo,
                    variant: client + listener,
                    by_name: false,
                    size: 4096,
                    session: None,
                    http,
                    socks4: false,
                    pipelined: false,
                    splits: 1,
                    ingress: None,
                };
                let ix = self.add_app(spec, true);
                self.push(self.now, Ev::AppStart(ix));
            }
        }
        // Every gateway forwards to an agent again after the heal.
        for gateway in 0..self.s.topology.ingress_gateways() {
            let spec = AppSpec {
                at: self.now,
                client: 0,
                listener: 0,
                kind: OriginKind::Echo,
                variant: gateway,
                by_name: false,
                size: 4096,
                session: None,
                http: false,
                socks4: false,
                pipelined: false,
                splits: 1,
                ingress: Some(crate::plan::IngressSpec { gateway, shape: 2 }),
            };
            let ix = self.add_app(spec, true);
            self.push(self.now, Ev::AppStart(ix));
        }
    }

    pub(super) fn checkpoint(&mut self) {
        // Every exit is registered again at every hub.
        for h in 0..self.hubs {
            for e in 0..self.exits {
                let exit = self.hubs + e;
                let peer = self.nodes[exit as usize].peer;
                let registered = self.nodes[h as usize]
                    .core
                    .as_ref()
                    .is_some_and(|c| c.hub_has_registered(&peer));
                if !registered {
                    self.violation(
                        Invariant::Liveness,
                        format!(
                            "exit n{exit} is not registered at hub n{h} after the network healed"
                        ),
                    );
                }
            }
        }
    }

    pub(super) fn final_checks(&mut self) {
        self.adv_final();
        for h in 0..self.hubs {
            self.admission_directory(h);
        }
        self.load_final();
        for a in 0..self.apps.len() as u32 {
            if self.apps[a as usize].outcome.is_none()
                && self.apps[a as usize].phase != AppPhase::Connecting
            {
                self.app_deadline(a);
            }
        }
        for n in 0..self.nodes.len() {
            let Some(core) = &self.nodes[n].core else { continue };
            let r = core.resources();
            if r.sessions + r.pending_dials + r.pending_queries + r.timers > 0
                || r.streams > r.sessions + self.hub_streams_of(n as NodeIx)
            {
                self.violation(
                    Invariant::NoLeaks,
                    format!("n{n} still holds {r} after the run quiesced"),
                );
            }
        }
        let leaked: Vec<String> = self
            .streams
            .iter()
            .filter(|(_, st)| !st.hub)
            .take(5)
            .map(|(id, st)| format!("st{id} {:?}", st.owners))
            .collect();
        if !leaked.is_empty() {
            self.violation(Invariant::NoLeaks, format!("streams left open: {}", leaked.join(", ")));
        }
        if !self.splices.is_empty() {
            self.violation(
                Invariant::NoLeaks,
                format!("{} splices left running", self.splices.len()),
            );
        }
    }

    fn hub_streams_of(&self, n: NodeIx) -> usize {
        self.streams.values().filter(|st| st.hub && st.nodes.contains(&Some(n))).count()
    }
}
