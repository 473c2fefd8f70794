//! The adversaries' own checks: a connection left open past its deadline,
//! flood and registration counts against their limits, role escalations kept
//! out of the directories, and nothing hostile left open at the end.

use super::{leaked_key_limit, Conn, Kind};
use crate::bytes_model::Chunk;
use crate::world::Invariant;
use crate::world::World;
use meshproxy_core::ids::PeerId;

impl World<'_> {
    /// Registrations under the leaked key at a hub stay within the per-key limit.
    pub(super) fn check_registrations(&mut self, c: u32) {
        let node = self.adv.conns[c as usize].node;
        let max = leaked_key_limit(self.scenario(), &self.limits_of(node));
        let peers: Vec<PeerId> = self
            .adv
            .conns
            .iter()
            .filter(|x| x.node == node && matches!(x.kind, Kind::Register { .. }))
            .filter_map(|x| x.peer)
            .collect();
        let held = peers.iter().filter(|p| self.hub_registered(node, p)).count();
        if held > max {
            let detail =
                format!("hub n{node} holds {held} registrations under one key (limit {max})");
            self.violation(Invariant::Bounds, detail);
        }
    }

    /// A role escalation's peer is in no hub's directory.
    pub(super) fn check_not_listed(&mut self, c: u32) {
        let Some(peer) = self.adv.conns[c as usize].peer else { return };
        let hubs = self.scenario().topology.hubs;
        for h in 0..hubs {
            if self.hub_registered(h, &peer) {
                let detail = format!("hub n{h} lists {peer:?}, which holds only a client-role key");
                self.violation(Invariant::Admission, detail);
            }
        }
    }

    pub(super) fn adv_deadline(&mut self, c: u32) {
        let conn = &self.adv.conns[c as usize];
        if conn.ended.is_some() || conn.deadline.is_some_and(|d| d > self.now) {
            return;
        }
        let Some(stream) = conn.stream else { return };
        let detail = format!(
            "n{} left a hostile {:?} connection open {:?} after it began",
            conn.node,
            conn.kind,
            self.now.saturating_duration_since(conn.opened)
        );
        self.violation(Invariant::Adversary, detail);
        let conn = &mut self.adv.conns[c as usize];
        conn.ended = Some((self.now, true));
        self.adv_write(stream, Chunk::Reset);
        self.adv_release(stream);
    }

    /// A silent flood may hold at most `max_sessions_per_source` sessions:
    /// the rest must have been refused by now.
    pub(super) fn flood_check(&mut self, group: u32) {
        let conns: Vec<&Conn> = self
            .adv
            .conns
            .iter()
            .filter(|x| x.kind == Kind::Flood { group, connect: false })
            .collect();
        let Some(first) = conns.first() else { return };
        let node = first.node;
        let open = conns.iter().filter(|x| x.ended.is_none()).count();
        let max = self.limits_of(node).max_sessions_per_source;
        if open > max {
            let detail =
                format!("n{node} holds {open} sessions from one flooding source (limit {max})");
            self.violation(Invariant::Bounds, detail);
        }
    }

    /// End of run: every adversary connection ended; none is left.
    pub(crate) fn adv_final(&mut self) {
        let open: Vec<String> = self
            .adv
            .conns
            .iter()
            .filter(|x| x.stream.is_some() && x.ended.is_none())
            .take(5)
            .map(|x| format!("n{} {:?}", x.node, x.kind))
            .collect();
        if !open.is_empty() {
            self.violation(
                Invariant::Adversary,
                format!("hostile connections never ended: {}", open.join(", ")),
            );
        }
    }
}
