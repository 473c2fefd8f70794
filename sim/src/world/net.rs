//! The network model: links and their partitions, dials, streams and their
//! chunks in flight (latency, jitter, bandwidth, flow control), connection
//! kills, and handing resets to whoever owns a stream's side.

use super::{
    Ev, HeldChunk, Link, NodeIx, Owner, SimStream, World, IDLE_LINK, LOCAL, ORIGIN_RTT_HALF,
};
use crate::bytes_model::Chunk;
use meshproxy_core::ids::{ConnId, PeerId, StreamId};
use meshproxy_core::io::{Close, Input, Protocol};
use rand_core::RngCore;
use std::time::Duration;

impl World<'_> {
    pub(super) fn link(&self, from: NodeIx, to: NodeIx) -> &Link {
        self.links.get(&(from, to)).unwrap_or(&IDLE_LINK)
    }

    pub(super) fn link_mut(&mut self, from: NodeIx, to: NodeIx) -> &mut Link {
        self.links.entry((from, to)).or_default()
    }

    /// The base latency between two nodes (the same both ways).
    pub(super) fn latency(&self, from: NodeIx, to: NodeIx) -> Duration {
        let i = pair_index(self.nodes.len(), from.min(to), from.max(to));
        Duration::from_millis(u64::from(self.latencies[i]))
    }

    /// The scenario's jitter, in µs.
    pub(super) fn jitter_us(&self) -> u64 {
        u64::from(self.s.network.jitter_ms) * 1_000
    }

    /// Each link's bandwidth, in bytes per second.
    pub(super) fn bandwidth(&self) -> u64 {
        u64::from(self.s.network.bandwidth_mbps.max(1)) * 125_000
    }

    /// Whether chunks wait on link `from → to` (later ones queue behind them).
    pub(super) fn holds(&self, from: NodeIx, to: NodeIx) -> bool {
        self.held.contains_key(&(from, to))
    }

    pub(super) fn hold(&mut self, from: NodeIx, to: NodeIx, held: HeldChunk) {
        self.held.entry((from, to)).or_default().push_back(held);
    }

    pub(super) fn partitioned(&self, from: NodeIx, to: NodeIx) -> bool {
        from != to && self.link(from, to).partitions > 0
    }

    pub(super) fn dial_done(&mut self, from: NodeIx, to: NodeIx, gen: [u32; 2]) {
        let alive = |w: &Self, n: NodeIx, g: u32| {
            w.nodes[n as usize].generation == g && w.nodes[n as usize].core.is_some()
        };
        let to_peer = self.nodes[to as usize].peer;
        if !alive(self, from, gen[0]) {
            return;
        }
        if !alive(self, to, gen[1]) || self.partitioned(from, to) || self.partitioned(to, from) {
            self.send_input(from, Duration::ZERO, Input::DialFailed { peer: to_peer });
            return;
        }
        let id = self.new_conn([from, to], None, None);
        let from_peer = self.nodes[from as usize].peer;
        self.trace.line(self.now, "conn", || format!("c{id} n{from}->n{to}"));
        self.send_input(
            from,
            Duration::ZERO,
            Input::PeerConnected {
                peer: to_peer,
                conn: ConnId(id),
                path: meshproxy_core::io::Path::Direct,
                limit: None,
            },
        );
        let lat = self.latency(from, to);
        self.send_input(
            to,
            lat,
            Input::PeerConnected {
                peer: from_peer,
                conn: ConnId(id),
                path: meshproxy_core::io::Path::Direct,
                limit: None,
            },
        );
    }

    pub(super) fn open_stream(
        &mut self,
        n: NodeIx,
        sid: StreamId,
        peer: PeerId,
        on: Option<ConnId>,
        protocol: Protocol,
    ) {
        let to = self.by_peer.get(&peer).copied();
        let conn = to.and_then(|to| self.stream_conn(n, to, on));
        let (Some(to), Some(conn)) = (to, conn) else {
            self.send_input(n, Duration::ZERO, Input::StreamRefused { stream: sid });
            return;
        };
        let via = self.conns.get(&conn).and_then(|c| c.via);
        let remote_sid = self.new_sid(to);
        let id = self.new_stream(
            [Owner::Node(n, sid), Owner::Node(to, remote_sid)],
            [Some(n), Some(to)],
            Some(conn),
            protocol == Protocol::Hub,
        );
        if let Some(st) = self.streams.get_mut(&id) {
            st.via = via;
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.streams.push(id);
        }
        self.node_streams.insert((n, sid), (id, 0));
        self.node_streams.insert((to, remote_sid), (id, 1));
        self.send_input(n, Duration::ZERO, Input::StreamOpened { stream: sid });
        let lat = self.path_latency(n, to, via);
        let at = self.now + lat;
        if let Some(st) = self.streams.get_mut(&id) {
            st.last_arrival[1] = at;
        }
        let me = self.nodes[n as usize].peer;
        self.send_input(to, lat, Input::InboundStream { stream: remote_sid, peer: me, protocol });
    }

    pub(super) fn new_stream(
        &mut self,
        owners: [Owner; 2],
        nodes: [Option<NodeIx>; 2],
        conn: Option<u64>,
        hub: bool,
    ) -> u64 {
        self.next_stream += 1;
        let id = self.next_stream;
        self.streams.insert(
            id,
            SimStream { owners, via: None, nodes, conn, last_arrival: [self.now; 2], hub },
        );
        id
    }

    /// A stream between node `n` (side 0, as `sid`) and a local app or origin (side 1).
    pub(super) fn local_stream(&mut self, n: NodeIx, sid: StreamId, other: Owner) -> u64 {
        let stream = self.new_stream([Owner::Node(n, sid), other], [Some(n), None], None, false);
        self.node_streams.insert((n, sid), (stream, 0));
        stream
    }

    /// Writes a chunk from `side` toward the other side, through the network model.
    pub(super) fn write(&mut self, stream: u64, side: usize, chunk: Chunk) {
        let Some(st) = self.streams.get(&stream) else { return };
        let to = 1 - side;
        if let (Some(h), Some(a), Some(b)) = (st.via, st.nodes[side], st.nodes[to]) {
            self.write_relayed(stream, side, [a, h, b], chunk);
            return;
        }
        let delay = match (st.nodes[side], st.nodes[to]) {
            (Some(a), Some(b)) if a != b => {
                let size = match &chunk {
                    Chunk::Data(p) => p.len(),
                    _ => 0,
                };
                let jitter_us = self.jitter_us();
                let j = if jitter_us > 0 { self.rng.next_u64() % (jitter_us + 1) } else { 0 };
                let now = self.now;
                let (latency, bandwidth) = (self.latency(a, b), self.bandwidth());
                let l = self.link_mut(a, b);
                let spike = l.spikes.iter().copied().max().unwrap_or(1);
                let drop = u64::from(l.drops.iter().copied().max().unwrap_or(1));
                let bw = (bandwidth / drop).max(1);
                let start = l.busy_until.max(now);
                let tx = Duration::from_micros(size * 1_000_000 / bw);
                l.busy_until = start + tx;
                (start + tx + latency * spike + Duration::from_micros(j))
                    .saturating_duration_since(now)
            }
            (None, _) | (_, None) => {
                if st.nodes[side].is_some() && matches!(st.owners[to], Owner::Origin(_))
                    || st.nodes[to].is_some() && matches!(st.owners[side], Owner::Origin(_))
                {
                    ORIGIN_RTT_HALF
                } else {
                    LOCAL
                }
            }
            _ => LOCAL,
        };
        let Some(st) = self.streams.get_mut(&stream) else { return };
        let at = (self.now + delay).max(st.last_arrival[to]);
        st.last_arrival[to] = at;
        self.push(at, Ev::Arrive(stream, to, chunk));
    }

    pub(super) fn arrive(&mut self, stream: u64, side: usize, chunk: Chunk) {
        let Some(st) = self.streams.get(&stream) else {
            self.trace.hash_only(self.now, 7, stream, 0);
            return;
        };
        if let (Some(h), Some(from), Some(to)) = (st.via, st.nodes[1 - side], st.nodes[side]) {
            // A circuit stalls when either leg is cut, in order.
            for (x, y) in [(from, h), (h, to)] {
                if self.partitioned(x, y) || self.holds(x, y) {
                    self.hold(x, y, (stream, side, chunk));
                    return;
                }
            }
        } else if let (Some(from), Some(to)) = (st.nodes[1 - side], st.nodes[side]) {
            if self.partitioned(from, to) || self.holds(from, to) {
                self.hold(from, to, (stream, side, chunk));
                return;
            }
        }
        self.deliver(stream, side, chunk);
    }

    pub(super) fn deliver(&mut self, stream: u64, side: usize, chunk: Chunk) {
        let Some(st) = self.streams.get(&stream) else { return };
        if st.via.is_some() {
            self.check_circuit_bounds(stream, side, &chunk);
        }
        let Some(st) = self.streams.get(&stream) else { return };
        let owner = st.owners[side];
        self.trace.line(self.now, "arrive", || {
            format!("st{stream}.{side} {} to {owner:?}", crate::trace::chunk_summary(&chunk))
        });
        self.trace.hash_only(self.now, 8, stream, crate::trace::chunk_code(&chunk));
        let reset = chunk == Chunk::Reset;
        match owner {
            Owner::Node(n, sid) => {
                if reset {
                    self.node_streams.remove(&(n, sid));
                }
                self.snoop_grant_received(n, stream, &chunk);
                let input = match chunk {
                    Chunk::Data(p) => Input::StreamData { stream: sid, data: p.materialize() },
                    Chunk::Fin => Input::StreamClosed { stream: sid, how: Close::Fin },
                    Chunk::Reset => Input::StreamClosed { stream: sid, how: Close::Reset },
                };
                if self.nodes[n as usize].core.is_some() {
                    self.input(n, input);
                }
            }
            Owner::Splice(id, which) => self.splice_forward(id, which as usize, chunk),
            Owner::App(a) => self.app_chunk(a, chunk),
            Owner::Origin(c) => self.origin_chunk(c, chunk),
            Owner::Adversary(c) => self.adv_chunk(c, chunk),
            Owner::Gone => {}
        }
        if reset {
            self.kill_stream(stream);
        }
    }

    /// A side's owner is done with the stream; the stream goes once both are.
    pub(super) fn release(&mut self, stream: u64, side: usize) {
        let Some(st) = self.streams.get_mut(&stream) else { return };
        st.owners[side] = Owner::Gone;
        if st.owners[1 - side] == Owner::Gone {
            self.kill_stream(stream);
        }
    }

    fn kill_stream(&mut self, stream: u64) {
        if let Some(st) = self.streams.remove(&stream) {
            if let Some(c) = st.conn.and_then(|c| self.conns.get_mut(&c)) {
                c.streams.retain(|s| *s != stream);
            }
            for owner in st.owners {
                if let Owner::Node(n, sid) = owner {
                    self.node_streams.remove(&(n, sid));
                }
            }
        }
    }

    /// Aborts a stream from `dead_side`: the other side learns at once (the
    /// local stack notices a dead connection or process), data in flight is lost.
    pub(super) fn abort_from(&mut self, stream: u64, dead_side: usize) {
        let Some(st) = self.streams.get_mut(&stream) else { return };
        st.owners[dead_side] = Owner::Gone;
        self.deliver(stream, 1 - dead_side, Chunk::Reset);
        self.kill_stream(stream);
    }

    pub(super) fn kill_conn(&mut self, id: u64) {
        let Some(c) = self.conns.remove(&id) else { return };
        self.trace.line(self.now, "conn-down", || format!("c{id}"));
        for held in self.held.values_mut() {
            held.retain(|(s, _, _)| !c.streams.contains(s));
        }
        self.held.retain(|_, held| !held.is_empty());
        for stream in c.streams {
            // Both sides see the reset.
            if let Some(st) = self.streams.get(&stream) {
                let owners = st.owners;
                self.streams.remove(&stream);
                for (side, owner) in owners.into_iter().enumerate() {
                    if let Owner::Node(n, sid) = owner {
                        self.node_streams.remove(&(n, sid));
                    }
                    self.dispatch_reset(owner, side);
                }
            }
        }
        let untold = self.ingress_conn_closed(id, c.nodes);
        for (i, n) in c.nodes.into_iter().enumerate() {
            let other = self.nodes[c.nodes[1 - i] as usize].peer;
            if self.nodes[n as usize].core.is_some() && untold != Some(n) {
                self.send_input(
                    n,
                    Duration::ZERO,
                    Input::PeerDisconnected { peer: other, conn: ConnId(id) },
                );
            }
        }
    }

    /// Tells an owner its stream was reset (the stream is already gone).
    fn dispatch_reset(&mut self, owner: Owner, _side: usize) {
        match owner {
            Owner::Node(n, sid) => {
                if self.nodes[n as usize].core.is_some() {
                    self.input(n, Input::StreamClosed { stream: sid, how: Close::Reset });
                }
            }
            Owner::Splice(id, which) => self.splice_reset(id, which as usize),
            Owner::App(a) => self.app_chunk(a, Chunk::Reset),
            Owner::Origin(c) => self.origin_chunk(c, Chunk::Reset),
            Owner::Adversary(c) => self.adv_chunk(c, Chunk::Reset),
            Owner::Gone => {}
        }
    }
}

/// Where the pair `a ≤ b` sits in an upper triangle of `n` nodes stored row
/// by row (row `a` holds `b = a..n`).
pub(super) fn pair_index(n: usize, a: NodeIx, b: NodeIx) -> usize {
    let (a, b) = (a as usize, b as usize);
    debug_assert!(a <= b && b < n);
    a * n - a * a.saturating_sub(1) / 2 + (b - a)
}
