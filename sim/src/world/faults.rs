//! Faults: link cuts and partitions starting and ending, keep-alive
//! noticing them, node crashes and restarts.

use super::{Ev, NodeIx, World};
use crate::scenario::FaultKind;
use std::time::Duration;

/// The link directions a partition fault cuts (none between a node and itself).
fn cut_directions(kind: FaultKind, a: NodeIx, b: NodeIx) -> Vec<(NodeIx, NodeIx)> {
    match kind {
        _ if a == b => Vec::new(),
        FaultKind::Partition | FaultKind::GatewayPartition => vec![(a, b), (b, a)],
        _ => vec![(a, b)],
    }
}

impl World<'_> {
    pub(super) fn fault_start(&mut self, i: usize) {
        let f = self.faults[i].clone();
        self.trace.line(self.now, "fault", || {
            format!("start {:?} a={} b={} for {:?}", f.kind, f.a, f.b, f.duration)
        });
        self.trace.hash_only(self.now, 9, i as u64, 1);
        let n = self.nodes.len() as u32;
        let (a, b) = (f.a.min(n - 1), f.b.min(n - 1));
        match f.kind {
            FaultKind::Partition | FaultKind::OneWayPartition | FaultKind::GatewayPartition => {
                for (x, y) in cut_directions(f.kind, a, b) {
                    let l = self.link_mut(x, y);
                    l.partitions += 1;
                    l.epoch += 1;
                    let epoch = l.epoch;
                    let keepalive =
                        Duration::from_secs(u64::from(self.s.network.keepalive_timeout_secs));
                    self.push(self.now + keepalive, Ev::KeepaliveCheck { from: x, to: y, epoch });
                }
            }
            FaultKind::Reset => {
                let ids: Vec<u64> = self
                    .conns
                    .iter()
                    .filter(|(_, c)| {
                        c.nodes == [a, b] || c.nodes == [b, a] || (a == b && c.nodes.contains(&a))
                    })
                    .map(|(id, _)| *id)
                    .collect();
                for id in ids {
                    self.kill_conn(id);
                }
                self.leg_lost(a, b);
            }
            FaultKind::LatencySpike => {
                self.link_mut(a, b).spikes.push(f.factor);
                self.link_mut(b, a).spikes.push(f.factor);
            }
            FaultKind::BandwidthDrop => {
                self.link_mut(a, b).drops.push(f.factor);
                self.link_mut(b, a).drops.push(f.factor);
            }
            FaultKind::Crash | FaultKind::Churn | FaultKind::HubOutage => {
                self.crash(a, i as u64 + 1)
            }
        }
    }

    pub(super) fn fault_end(&mut self, i: usize) {
        let f = self.faults[i].clone();
        self.trace.line(self.now, "fault", || format!("end {:?} a={} b={}", f.kind, f.a, f.b));
        self.trace.hash_only(self.now, 9, i as u64, 2);
        let n = self.nodes.len() as u32;
        let (a, b) = (f.a.min(n - 1), f.b.min(n - 1));
        match f.kind {
            FaultKind::Partition | FaultKind::OneWayPartition | FaultKind::GatewayPartition => {
                for (x, y) in cut_directions(f.kind, a, b) {
                    let l = self.link_mut(x, y);
                    l.partitions = l.partitions.saturating_sub(1);
                    if l.partitions == 0 {
                        let held = self.held.remove(&(x, y)).unwrap_or_default();
                        for (stream, side, chunk) in held {
                            if self.streams.get(&stream).is_some_and(|s| s.via.is_some()) {
                                // The other leg may still be cut.
                                self.arrive(stream, side, chunk);
                            } else {
                                self.deliver(stream, side, chunk);
                            }
                        }
                    }
                }
            }
            FaultKind::Reset => {}
            FaultKind::LatencySpike => {
                for (x, y) in [(a, b), (b, a)] {
                    let l = self.link_mut(x, y);
                    if let Some(p) = l.spikes.iter().position(|s| *s == f.factor) {
                        l.spikes.remove(p);
                    }
                }
            }
            FaultKind::BandwidthDrop => {
                for (x, y) in [(a, b), (b, a)] {
                    let l = self.link_mut(x, y);
                    if let Some(p) = l.drops.iter().position(|s| *s == f.factor) {
                        l.drops.remove(p);
                    }
                }
            }
            FaultKind::Crash | FaultKind::Churn | FaultKind::HubOutage => {
                self.restart(a, i as u64 + 1)
            }
        }
    }

    pub(super) fn keepalive_check(&mut self, from: NodeIx, to: NodeIx, epoch: u64) {
        let l = self.link(from, to);
        if l.partitions == 0 || l.epoch != epoch {
            return;
        }
        // Pings got no answer for the whole keep-alive window: both ends drop the connection.
        let ids: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| c.nodes == [from, to] || c.nodes == [to, from])
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.kill_conn(id);
        }
        self.leg_lost(from, to);
    }

    pub(super) fn crash(&mut self, n: NodeIx, crash: u64) {
        if self.nodes[n as usize].core.is_none() {
            return;
        }
        self.trace.line(self.now, "crash", || format!("n{n}"));
        self.admission_crashed(n);
        let node = &mut self.nodes[n as usize];
        node.core = None;
        node.generation += 1;
        node.timer_at = None;
        node.crash_id = crash;
        self.ingress_gateway_crashed(n);
        let conns: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| c.nodes.contains(&n) || c.via == Some(n))
            .map(|(id, _)| *id)
            .collect();
        for id in conns {
            self.kill_conn(id);
        }
        self.node_down(n);
        // Local streams (apps on a client, origins on an exit) are reset by the OS.
        let local: Vec<(u64, usize)> = self
            .streams
            .iter()
            .flat_map(|(id, st)| {
                (0..2).filter(move |&side| st.nodes[side] == Some(n)).map(move |side| (*id, side))
            })
            .collect();
        for (st, side) in local {
            self.abort_from(st, side);
        }
        self.node_streams.retain(|(m, _), _| *m != n);
        self.black_holes.retain(|(m, _), _| *m != n);
        let dead: Vec<u64> =
            self.splices.iter().filter(|(_, s)| s.node == n).map(|(id, _)| *id).collect();
        for id in dead {
            self.splices.remove(&id);
        }
    }

    pub(super) fn restart(&mut self, n: NodeIx, crash: u64) {
        let node = &self.nodes[n as usize];
        if node.core.is_some() || node.crash_id != crash {
            return;
        }
        self.nodes[n as usize].generation += 1;
        self.start_node(n);
    }
}
