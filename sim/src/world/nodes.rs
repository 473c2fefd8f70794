//! The node executor: starts a node's core, feeds it input, and drains its
//! output into the world (checking the cores' tables against their limits
//! after every drain).

use super::{Ev, Invariant, NodeIx, World, LOCAL};
use crate::bytes_model::{Chunk, Payload};
use crate::plan::between;
use meshproxy_core::ids::StreamId;
use meshproxy_core::io::{Close, Input, Output, ResolveError};
use meshproxy_core::Node;
use rand_core::RngCore;
use std::time::Duration;

impl World<'_> {
    pub(super) fn start_node(&mut self, n: NodeIx) {
        let seed = crate::node_seed(self.rng.next_u64(), n, self.nodes[n as usize].generation);
        let node = &mut self.nodes[n as usize];
        let core = Node::new(node.config.clone(), seed, self.now);
        node.core = Some(core);
        node.timer_at = None;
        self.ingress_availability_restart(n);
        self.trace.line(self.now, "start", || format!("n{n}"));
        self.trace.hash_only(self.now, 4, u64::from(n), 0);
        if let Some(snapshot) = self.nodes[n as usize].snapshot.clone() {
            self.input(n, Input::Restore(snapshot));
        } else {
            self.drain(n);
        }
        self.tell_reachability(n);
    }

    pub(super) fn input(&mut self, n: NodeIx, input: Input) {
        self.trace.line(self.now, "in", || format!("n{n} {}", crate::trace::input_summary(&input)));
        self.trace.hash_only(self.now, 5, u64::from(n), crate::trace::input_code(&input));
        let prev = self.admission_cause(n, &input);
        if let Input::IngressRequest { request, .. } = &input {
            self.ingress_admitted(n, *request);
        }
        self.ingress_availability_input(n, &input);
        self.load_input(n, &input);
        if let Some(core) = &mut self.nodes[n as usize].core {
            core.handle_input(self.now, input);
        }
        self.drain(n);
        self.admission_cause_restore(prev);
    }

    pub(super) fn send_input(&mut self, n: NodeIx, delay: Duration, input: Input) {
        let gen = self.nodes[n as usize].generation;
        if delay.is_zero() {
            self.push(self.now, Ev::NodeInput(n, gen, input));
        } else {
            self.push(self.now + delay, Ev::NodeInput(n, gen, input));
        }
    }

    /// Applies the drain rule: every output, then the next timeout.
    pub(super) fn drain(&mut self, n: NodeIx) {
        loop {
            let Some(core) = &mut self.nodes[n as usize].core else { return };
            let Some(out) = core.poll_output() else { break };
            self.trace
                .line(self.now, "out", || format!("n{n} {}", crate::trace::output_summary(&out)));
            self.trace.hash_only(self.now, 6, u64::from(n), crate::trace::output_code(&out));
            self.output(n, out);
        }
        let Some(core) = &self.nodes[n as usize].core else { return };
        let r = core.resources();
        let next = core.poll_timeout().map(|(at, _)| at);
        let config = &self.nodes[n as usize].config;
        let limits = config.limits;
        let max_entries = config.hub.as_ref().map_or(0, |h| h.directory.max_entries);
        // Each role's own table against its own limit (a node has one role here).
        let max_sessions = if config.client.is_some() {
            limits.max_client_sessions
        } else if config.exit.is_some() {
            limits.max_exit_sessions
        } else if config.agent.is_some() {
            limits.max_agent_streams
        } else if config.gateway.is_some() {
            limits.max_ingress_requests
        } else {
            0
        };
        // Hub links dial hubs too; the limit is on dials to exits.
        let max_dials = limits.max_pending_dials + config.hubs.len();
        let max_hub_streams =
            if config.hub.is_some() && config.exit.is_none() && config.client.is_none() {
                limits.max_hub_streams
            } else {
                usize::MAX
            };
        let max_preauth = limits.max_preauth_hub_streams.max(1);
        if r.sessions > max_sessions
            || r.busiest_peer_sessions > limits.max_sessions_per_peer
            || r.directory_entries > max_entries
            || r.pending_dials > max_dials
            || r.streams > max_hub_streams
            || r.preauth_hub_streams > max_preauth
            || r.busiest_peer_hub_streams > limits.max_hub_streams_per_peer
        {
            self.violation(
                Invariant::Bounds,
                format!(
                    "n{n} holds {r} (busiest peer {}, directory {}, pre-auth hub streams {}, busiest peer's hub streams {}; limits: sessions {max_sessions}, per peer {}, directory {max_entries}, dials {max_dials}, hub streams {max_hub_streams}, pre-auth {max_preauth}, hub streams per peer {})",
                    r.busiest_peer_sessions, r.directory_entries, r.preauth_hub_streams,
                    r.busiest_peer_hub_streams, limits.max_sessions_per_peer,
                    limits.max_hub_streams_per_peer
                ),
            );
        }
        let node = &mut self.nodes[n as usize];
        if next != node.timer_at {
            node.timer_at = next;
            if let Some(at) = next {
                let gen = node.generation;
                self.push(at, Ev::NodeTimer(n, gen));
            }
        }
    }

    pub(super) fn new_sid(&mut self, n: NodeIx) -> StreamId {
        let node = &mut self.nodes[n as usize];
        node.next_sid += 1;
        StreamId::outside(node.next_sid)
    }

    pub(super) fn output(&mut self, n: NodeIx, out: Output) {
        self.admission_output(n, &out);
        self.ingress_availability_output(n, &out);
        self.load_output(&out);
        match out {
            Output::Transmit { stream, data } => {
                self.snoop_grant_sent(n, &data);
                if let Some(&(st, side)) = self.node_streams.get(&(n, stream)) {
                    self.snoop_hub_stream(n, st, &data);
                    self.write(st, side, Chunk::Data(Payload::Real(data)));
                }
            }
            Output::Close { stream, how } => {
                if self.black_holes.remove(&(n, stream)).is_some() {
                    return;
                }
                if let Some((st, side)) = self.node_streams.remove(&(n, stream)) {
                    let chunk = if how == Close::Fin { Chunk::Fin } else { Chunk::Reset };
                    self.write(st, side, chunk);
                    self.release(st, side);
                }
            }
            Output::Reserve { hub } => self.reserve(n, hub),
            Output::Unreserve { hub } => self.unreserve(n, hub),
            Output::HolePunch { peer } => self.hole_punch(n, peer),
            Output::Dial { peer, via: Some(hub), .. } => self.dial_via(n, peer, hub),
            Output::Dial { peer, via: None, .. } => {
                let Some(&to) = self.by_peer.get(&peer) else {
                    self.send_input(n, LOCAL, Input::DialFailed { peer });
                    return;
                };
                let up = self.nodes[to as usize].core.is_some();
                let cut = self.partitioned(n, to) || self.partitioned(to, n);
                let rtt = self.latency(n, to) + self.latency(to, n);
                if !self.relay.nat(to).is_public() {
                    // No mapping for an unsolicited SYN: it goes unanswered.
                    self.send_input(n, crate::nat::NAT_DIAL_TIMEOUT, Input::DialFailed { peer });
                } else if !up {
                    // Host up, process gone: refused after one round trip.
                    self.send_input(n, rtt, Input::DialFailed { peer });
                } else if cut {
                    self.send_input(n, Duration::from_secs(5), Input::DialFailed { peer });
                } else {
                    let ms = between(
                        &mut self.rng,
                        u64::from(self.s.network.dial_ms.min),
                        u64::from(self.s.network.dial_ms.max),
                    );
                    let gen =
                        [self.nodes[n as usize].generation, self.nodes[to as usize].generation];
                    self.push(
                        self.now + rtt + Duration::from_millis(ms),
                        Ev::DialDone { from: n, to, gen },
                    );
                }
            }
            Output::OpenStream { stream, peer, protocol, conn } => {
                self.open_stream(n, stream, peer, conn, protocol)
            }
            Output::Resolve { query, name } => {
                let result = match crate::hostile::lookup(&self.dns, &name, query) {
                    Some(ips) => Ok(ips),
                    None => Err(ResolveError::NotFound),
                };
                self.send_input(n, Duration::from_millis(2), Input::Resolved { query, result });
            }
            Output::ConnectOrigin { stream, addr } => self.connect_origin(n, stream, addr),
            Output::Splice { a, b, a_to_b_prefix, b_to_a_prefix, .. } => {
                self.splice(n, a, b, a_to_b_prefix, b_to_a_prefix)
            }
            Output::Persist(snapshot) => self.nodes[n as usize].snapshot = Some(snapshot),
            // The simulated relay serves any peer: admission to it is not
            // modelled (the hub's own admission of streams is).
            Output::Admit { .. } | Output::Revoke { .. } => {}
            Output::IngressRespond { request, response } => {
                self.ingress_answered(n, request, &response)
            }
            Output::IngressForward { request, stream, agent, prefix, version } => {
                self.ingress_forwarded(n, request, stream, agent, prefix, version)
            }
            Output::Event(_) => {}
        }
    }
}
