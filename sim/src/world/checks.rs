//! Recording violations, and the liveness checks: probes once the network
//! is quiet, the checkpoint after the liveness bound, and the end-of-run
//! checks.

use super::{AppPhase, Ev, NodeIx, World};
use crate::plan::AppSpec;
use crate::scenario::OriginKind;
use crate::Violation;

impl World<'_> {
    pub(crate) fn violation(&mut self, invariant: &'static str, detail: String) {
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
                    pipelined: false,
                    splits: 1,
                };
                let ix = self.add_app(spec, true);
                self.push(self.now, Ev::AppStart(ix));
            }
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
                        "liveness",
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
                self.violation("no-leaks", format!("n{n} still holds {r} after the run quiesced"));
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
            self.violation("no-leaks", format!("streams left open: {}", leaked.join(", ")));
        }
        if !self.splices.is_empty() {
            self.violation("no-leaks", format!("{} splices left running", self.splices.len()));
        }
    }

    fn hub_streams_of(&self, n: NodeIx) -> usize {
        self.streams.values().filter(|st| st.hub && st.nodes.contains(&Some(n))).count()
    }
}
