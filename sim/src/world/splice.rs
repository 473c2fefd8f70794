//! The splice data plane: the bytes a node hands over when it splices two
//! streams, forwarding between them, and how a splice ends.

use super::{NodeIx, Owner, Splice, World};
use crate::bytes_model::{Chunk, Payload};
use crate::InjectedBug;
use bytes::Bytes;
use meshproxy_core::ids::StreamId;
use meshproxy_core::io::{Input, SpliceEnd, SpliceReport};
use std::time::Duration;

impl World<'_> {
    pub(super) fn splice(
        &mut self,
        n: NodeIx,
        a: StreamId,
        b: StreamId,
        a_to_b: Bytes,
        b_to_a: Bytes,
    ) {
        let (Some(&ea), Some(&eb)) =
            (self.node_streams.get(&(n, a)), self.node_streams.get(&(n, b)))
        else {
            // One side died before the splice began: the data plane resets the
            // other and reports at once.
            let live: Vec<(u64, usize)> =
                [a, b].iter().filter_map(|s| self.node_streams.get(&(n, *s)).copied()).collect();
            for (st, side) in live {
                self.node_streams.retain(|_, v| *v != (st, side));
                self.abort_from(st, side);
            }
            let how = if self.node_streams.contains_key(&(n, a)) {
                SpliceEnd::ResetB
            } else {
                SpliceEnd::ResetA
            };
            let report = SpliceReport { a_to_b: 0, b_to_a: 0, how };
            self.send_input(n, Duration::ZERO, Input::SpliceEnded { a, b, report });
            return;
        };
        self.note_session_path(ea, eb);
        self.check_adversary_splice(n, [ea, eb]);
        self.next_splice += 1;
        let id = self.next_splice;
        self.node_streams.remove(&(n, a));
        self.node_streams.remove(&(n, b));
        for (which, (st, side)) in [ea, eb].into_iter().enumerate() {
            if let Some(s) = self.streams.get_mut(&st) {
                s.owners[side] = Owner::Splice(id, which as u8);
            }
        }
        let carried = [a_to_b.len() as u64, b_to_a.len() as u64];
        self.splices
            .insert(id, Splice { node: n, ends: [ea, eb], sids: [a, b], carried, fin: [false; 2] });
        if !a_to_b.is_empty() {
            self.write(eb.0, eb.1, Chunk::Data(Payload::Real(a_to_b)));
        }
        if !b_to_a.is_empty() {
            self.write(ea.0, ea.1, Chunk::Data(Payload::Real(b_to_a)));
        }
    }

    /// A chunk arrived at splice side `which`: carry it to the other side.
    pub(super) fn splice_forward(&mut self, id: u64, which: usize, chunk: Chunk) {
        let Some(sp) = self.splices.get_mut(&id) else { return };
        let (st, side) = sp.ends[1 - which];
        match chunk {
            Chunk::Data(p) => {
                sp.carried[which] += p.len();
                self.write(st, side, Chunk::Data(p));
            }
            Chunk::Fin => {
                sp.fin[which] = true;
                let done = sp.fin == [true, true];
                self.write(st, side, Chunk::Fin);
                if done {
                    self.end_splice(id, SpliceEnd::Clean);
                }
            }
            Chunk::Reset => self.splice_reset(id, which),
        }
    }

    /// Side `which` of a splice was reset: abort the other side, or — with the
    /// injected bug — end it cleanly, which the integrity invariant must catch.
    pub(super) fn splice_reset(&mut self, id: u64, which: usize) {
        let Some(sp) = self.splices.get(&id) else { return };
        let (st, side) = sp.ends[1 - which];
        if self.bug == Some(InjectedBug::ResetBecomesFin) {
            self.write(st, side, Chunk::Fin);
            self.release(st, side);
        } else {
            self.write(st, side, Chunk::Reset);
            self.release(st, side);
        }
        let how = if which == 0 { SpliceEnd::ResetA } else { SpliceEnd::ResetB };
        self.end_splice(id, how);
    }

    fn end_splice(&mut self, id: u64, how: SpliceEnd) {
        let Some(sp) = self.splices.remove(&id) else { return };
        for (st, side) in sp.ends {
            if self.streams.get(&st).is_some_and(|s| {
                s.owners[side] == Owner::Splice(id, 0) || s.owners[side] == Owner::Splice(id, 1)
            }) {
                self.release(st, side);
            }
        }
        let report = SpliceReport { a_to_b: sp.carried[0], b_to_a: sp.carried[1], how };
        if self.nodes[sp.node as usize].core.is_some() {
            self.send_input(
                sp.node,
                Duration::ZERO,
                Input::SpliceEnded { a: sp.sids[0], b: sp.sids[1], report },
            );
        }
    }
}
