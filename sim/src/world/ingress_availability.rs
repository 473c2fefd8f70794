//! The `availability` invariant of public ingress: a gateway sends no new
//! request to an agent it has seen disconnect.
//!
//! When the last connection between a gateway and an agent closes, the
//! world (the driver, in production) tells the gateway at once
//! (`PeerDisconnected`). From the next instant on the gateway must not
//!
//! - open a stream to the agent over a connection that closed (it knows it
//!   is gone), ever;
//! - open a stream to, or dial, the agent at all, until a hub may have
//!   listed it again (data arrived on one of the gateway's hub streams
//!   since: the world does not decode listings, so any hub data counts,
//!   which only makes the check more lenient) or a new connection to it
//!   came up.
//!
//! (A hub that is its own gateway lists its own directory without a
//! stream, so for it only the first part is checked.)
//!
//! A request already under way keeps nothing on a closed connection: its
//! streams were reset with it. `--inject-bug ingress-stale-agent` plants a
//! gateway that keeps using an agent after its connection closed: the core
//! has no bug hooks, and a core that ignored the close would act exactly as
//! one that is never told, so the world withholds `PeerDisconnected` from
//! gateways for their agent connections.

use super::{Invariant, NodeIx, World};
use crate::InjectedBug;
use meshproxy_core::ids::{ConnId, PeerId};
use meshproxy_core::io::{Input, Output, Protocol};
use meshproxy_core::time::Instant;

/// What the world remembers of closed gateway–agent connections.
#[derive(Debug, Default)]
pub(super) struct AvailabilityState {
    /// (gateway, agent) → when their last connection closed; cleared by a
    /// new connection between them or hub data reaching the gateway later.
    down: std::collections::BTreeMap<(NodeIx, NodeIx), Instant>,
    /// Gateway–agent connections that closed, and when.
    closed: std::collections::BTreeMap<u64, Instant>,
}

impl World<'_> {
    fn is_agent(&self, n: NodeIx) -> bool {
        let t = &self.s.topology;
        let first = t.hubs + t.exits + t.clients;
        (first..first + t.agents).contains(&n)
    }

    fn is_gateway(&self, n: NodeIx) -> bool {
        self.nodes[n as usize].config.gateway.is_some()
    }

    /// Connection `id` between `nodes` closed (the world removed it): the
    /// gateway among them that must *not* be told, under the injected
    /// stale-agent bug.
    pub(super) fn ingress_conn_closed(&mut self, id: u64, nodes: [NodeIx; 2]) -> Option<NodeIx> {
        let (g, a) = match nodes {
            [x, y] if self.is_gateway(x) && self.is_agent(y) => (x, y),
            [x, y] if self.is_gateway(y) && self.is_agent(x) => (y, x),
            _ => return None,
        };
        // A crashed gateway forgets everything; its next life starts afresh.
        self.nodes[g as usize].core.as_ref()?;
        self.avail.closed.insert(id, self.now);
        let left = self.conns.values().any(|c| c.nodes == [g, a] || c.nodes == [a, g]);
        if !left {
            self.avail.down.insert((g, a), self.now);
        }
        (self.bug == Some(InjectedBug::IngressStaleAgent)).then_some(g)
    }

    /// Input about to reach node `n`: a new connection, or hub data, may
    /// make an agent available again.
    pub(super) fn ingress_availability_input(&mut self, n: NodeIx, input: &Input) {
        if self.avail.down.is_empty() || !self.is_gateway(n) {
            return;
        }
        match input {
            Input::PeerConnected { peer, .. } => {
                if let Some(&a) = self.by_peer.get(peer) {
                    self.avail.down.remove(&(n, a));
                }
            }
            Input::StreamData { stream, .. } => {
                let hub = self
                    .node_streams
                    .get(&(n, *stream))
                    .and_then(|(st, _)| self.streams.get(st))
                    .is_some_and(|st| st.hub);
                if hub {
                    let now = self.now;
                    self.avail.down.retain(|(g, _), at| *g != n || *at >= now);
                }
            }
            _ => {}
        }
    }

    /// Gateway `n` started afresh (it knows no agent yet).
    pub(super) fn ingress_availability_restart(&mut self, n: NodeIx) {
        self.avail.down.retain(|(g, _), _| *g != n);
    }

    /// Node `n` asked for a stream or a dial: not to an agent it saw go.
    pub(super) fn ingress_availability_output(&mut self, n: NodeIx, out: &Output) {
        if !self.is_gateway(n) {
            return;
        }
        let (peer, conn, what): (PeerId, Option<ConnId>, &str) = match out {
            Output::OpenStream { peer, conn, protocol: Protocol::Ingress, .. } => {
                (*peer, *conn, "opened an ingress stream to")
            }
            Output::Dial { peer, .. } => (*peer, None, "dialed"),
            _ => return,
        };
        let Some(&a) = self.by_peer.get(&peer) else { return };
        let now = self.now;
        // A hub that is a gateway lists its own directory on a timer, over
        // no stream: only the closed-connection part applies to it.
        let own = self.nodes[n as usize].config.hub.is_some();
        if let Some(at) = conn.and_then(|c| self.avail.closed.get(&c.0)).filter(|at| **at < now) {
            let detail = format!(
                "gateway n{n} opened an ingress stream to agent n{a} over connection {} that closed at {at}",
                conn.map_or(0, |c| c.0)
            );
            self.violation(Invariant::Availability, detail);
        } else if let Some(at) = self.avail.down.get(&(n, a)).filter(|at| **at < now && !own) {
            let detail = format!(
                "gateway n{n} {what} agent n{a}, whose last connection closed at {at}, with no listing or connection since"
            );
            self.violation(Invariant::Availability, detail);
        }
    }
}
