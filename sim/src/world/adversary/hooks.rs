//! The world's side of the adversaries (`world/adversary`): what they
//! may read of it and how they open, write and release streams.

use crate::bytes_model::Chunk;
use crate::scenario::Scenario;
use crate::world::Invariant;
use crate::world::{Ev, NodeIx, Owner, World, LOCAL};
use meshproxy_core::ids::{ListenerId, PeerId};
use meshproxy_core::io::{Input, Protocol};
use meshproxy_core::time::Instant;
use std::net::SocketAddr;

impl<'s> World<'s> {
    pub(crate) fn scenario(&self) -> &'s Scenario {
        self.s
    }

    pub(crate) fn timeouts_of(&self, n: NodeIx) -> meshproxy_core::config::Timeouts {
        self.nodes[n as usize].config.timeouts
    }

    pub(crate) fn limits_of(&self, n: NodeIx) -> meshproxy_core::config::Limits {
        self.nodes[n as usize].config.limits
    }

    pub(crate) fn peer_of(&self, n: NodeIx) -> PeerId {
        self.nodes[n as usize].peer
    }

    pub(crate) fn hub_registered(&self, hub: NodeIx, peer: &PeerId) -> bool {
        self.nodes[hub as usize].core.as_ref().is_some_and(|c| c.hub_has_registered(peer))
    }

    pub(crate) fn adv_schedule(&mut self, at: Instant, ev: super::AdvEv) {
        self.push(at, Ev::Adversary(ev));
    }

    /// A hostile app connects to `client`'s listener from `source`; the
    /// stream's side 1 belongs to adversary connection `c`.
    pub(crate) fn adv_app_connect(
        &mut self,
        client: NodeIx,
        listener: u32,
        source: SocketAddr,
        c: u32,
    ) -> Option<u64> {
        self.nodes[client as usize].core.as_ref()?;
        let sid = self.new_sid(client);
        let stream = self.local_stream(client, sid, Owner::Adversary(c));
        let listener = ListenerId(u64::from(listener));
        self.send_input(client, LOCAL, Input::AppAccepted { listener, stream: sid, source });
        Some(stream)
    }

    /// A hostile peer `peer` (no simulated node) opens a `protocol` stream
    /// on `node`; side 1 belongs to adversary connection `c`.
    pub(crate) fn adv_peer_stream(
        &mut self,
        node: NodeIx,
        peer: PeerId,
        protocol: Protocol,
        c: u32,
    ) -> Option<u64> {
        self.nodes[node as usize].core.as_ref()?;
        let sid = self.new_sid(node);
        let stream = self.new_stream(
            [Owner::Node(node, sid), Owner::Adversary(c)],
            [Some(node), None],
            None,
            false,
        );
        self.node_streams.insert((node, sid), (stream, 0));
        self.send_input(node, LOCAL, Input::InboundStream { stream: sid, peer, protocol });
        Some(stream)
    }

    /// The adversary writes on its side (1) of `stream`.
    pub(crate) fn adv_write(&mut self, stream: u64, chunk: Chunk) {
        self.write(stream, 1, chunk);
    }

    /// The adversary is done with its side of `stream`.
    pub(crate) fn adv_release(&mut self, stream: u64) {
        self.release(stream, 1);
    }

    /// No splice may carry an adversary's connection.
    pub(crate) fn check_adversary_splice(&mut self, n: NodeIx, ends: [(u64, usize); 2]) {
        for (st, side) in ends {
            if let Some(Owner::Adversary(c)) = self.streams.get(&st).map(|s| s.owners[1 - side]) {
                let detail = format!("n{n} spliced hostile connection {c} to another stream");
                self.violation(Invariant::Adversary, detail);
            }
        }
    }
}
