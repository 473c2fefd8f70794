//! The simulated world: nodes running the real core, the network between
//! them, apps that verify every byte, origins with scripted behaviours, DNS,
//! faults, and the invariants checked as the run goes.

use crate::app_proto::{self, Reply};
use crate::bytes_model::{header, Chunk, Payload, Verifier, CHUNK, HEADER_LEN};
use crate::oracle;
use crate::plan::{between, AppSpec, FaultSpec, Plan, PlanItem};
use crate::scenario::{FaultKind, OriginKind, Scenario};
use crate::trace::Trace;
use crate::{InjectedBug, RunStats, Violation};
use bytes::Bytes;
use meshproxy_core::config::NodeConfig;
use meshproxy_core::ids::{ConnId, ListenerId, PeerId, StreamId};
use meshproxy_core::io::{
    CircuitLimit, Close, Input, Output, Protocol, ResolveError, SpliceEnd, SpliceReport,
    StateSnapshot,
};
use meshproxy_core::target::{Status, TargetAddr};
use meshproxy_core::time::Instant;
use meshproxy_core::Node;
use rand_chacha::ChaCha8Rng;
use rand_core::RngCore;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

mod admission;
mod relay;

pub(crate) type NodeIx = u32;

/// Who holds one side of a simulated stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    /// A node's core controls it.
    Node(NodeIx, StreamId),
    /// A node's data plane splices it; `which` is 0 for the splice's `a`, 1 for `b`.
    Splice(u64, u8),
    App(u32),
    Origin(u64),
    /// A misbehaving app or peer (sim/src/adversary.rs).
    Adversary(u32),
    /// Released: whatever arrives is dropped.
    Gone,
}

#[derive(Debug)]
struct SimStream {
    owners: [Owner; 2],
    /// The hub relaying it, for streams on a relay circuit.
    via: Option<NodeIx>,
    /// The node at each side, for link latency and partitions (None: local).
    nodes: [Option<NodeIx>; 2],
    conn: Option<u64>,
    /// Arrival time of the last chunk in each direction (index = receiving side).
    last_arrival: [Instant; 2],
    hub: bool,
}

#[derive(Debug)]
struct Splice {
    node: NodeIx,
    /// (stream, side of the node) for a and b.
    ends: [(u64, usize); 2],
    sids: [StreamId; 2],
    carried: [u64; 2],
    fin: [bool; 2],
}

#[derive(Debug)]
struct PeerConn {
    /// The dialer, then the dialed.
    nodes: [NodeIx; 2],
    streams: Vec<u64>,
    /// The hub, for a relay circuit.
    via: Option<NodeIx>,
    /// The relay's caps (circuits only).
    limit: Option<CircuitLimit>,
    opened: Instant,
    /// Bytes the relay let through per direction (0: nodes[0] → nodes[1]).
    carried: [u64; 2],
    /// Bytes that arrived per direction, checked against the cap independently.
    delivered: [u64; 2],
    /// The relay cut it: nothing more passes; it is torn down at once.
    capped: bool,
}

/// One direction of the network between two nodes.
#[derive(Debug, Clone)]
struct Link {
    latency: Duration,
    jitter: Duration,
    /// Bytes per second.
    bandwidth: u64,
    busy_until: Instant,
    partitions: u32,
    epoch: u64,
    spikes: Vec<u32>,
    drops: Vec<u32>,
    /// Chunks that arrived while partitioned, released in order on heal.
    held: VecDeque<(u64, usize, Chunk)>,
}

#[derive(Debug)]
struct SimNode {
    peer: PeerId,
    config: NodeConfig,
    core: Option<Node>,
    generation: u32,
    timer_at: Option<Instant>,
    snapshot: Option<StateSnapshot>,
    next_sid: u64,
    ip: IpAddr,
    crash_id: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AppPhase {
    Connecting,
    Handshake,
    Open,
    Done,
}

/// How an app connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Everything arrived and the stream ended cleanly.
    Complete,
    /// The proxy refused with this SOCKS5 code.
    Refused(u8),
    /// The connection was reset after the proxy said yes.
    Reset,
    /// The connection ended (reset or close) before any answer.
    NoAnswer,
}

#[derive(Debug)]
struct App {
    spec: AppSpec,
    probe: bool,
    strict: bool,
    target: TargetAddr,
    username: Option<String>,
    authed: bool,
    stream: u64,
    phase: AppPhase,
    inbox: Vec<u8>,
    up_key: u64,
    up_header: [u8; HEADER_LEN as usize],
    /// Bytes of the up stream written so far (header included).
    up_sent: u64,
    up_total: u64,
    fin_sent: bool,
    reply_ok: bool,
    down: Verifier,
    outcome: Option<Outcome>,
    started: Instant,
    deadline: Instant,
    /// The exit whose origin connection served us (for the sticky contract).
    exit: Option<NodeIx>,
    /// Whether the client carried us over a relay circuit (once spliced).
    relayed: Option<bool>,
}

#[derive(Debug)]
struct OriginConn {
    kind: OriginKind,
    stream: u64,
    exit: NodeIx,
    addr: SocketAddr,
    head: Vec<u8>,
    app: Option<u32>,
    up: Option<Verifier>,
    down_key: u64,
    down_sent: u64,
    down_total: u64,
    /// How the origin ended its sending side, once it did.
    ended: Option<Close>,
    got_fin: bool,
    released: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct OriginHost {
    kind: OriginKind,
}

#[derive(Debug)]
enum Ev {
    NodeTimer(NodeIx, u32),
    NodeInput(NodeIx, u32, Input),
    Arrive(u64, usize, Chunk),
    DialDone {
        from: NodeIx,
        to: NodeIx,
        gen: [u32; 2],
    },
    AppStart(u32),
    AppDeadline(u32),
    OriginTick(u64),
    FaultStart(usize),
    FaultEnd(usize),
    KeepaliveCheck {
        from: NodeIx,
        to: NodeIx,
        epoch: u64,
    },
    Probes,
    Checkpoint,
    /// The hub answers a reservation request.
    ReserveDone {
        node: NodeIx,
        hub: NodeIx,
        gen: [u32; 2],
    },
    /// A reservation runs out unless renewed since (`epoch` tells).
    ReservationExpire {
        node: NodeIx,
        hub: NodeIx,
        epoch: u64,
    },
    /// A dial through a hub's relay completes (or not).
    RelayDialDone {
        from: NodeIx,
        to: NodeIx,
        hub: NodeIx,
        gen: [u32; 3],
    },
    /// A circuit reaches its duration cap, or its byte cap was hit.
    CircuitEnd(u64),
    /// A hole punch ends; `ok` was drawn when it began.
    PunchDone {
        from: NodeIx,
        to: NodeIx,
        gen: [u32; 2],
        ok: bool,
    },
    /// The relay invariants are sampled.
    RelayCheck,
    /// The ticket and registration watches are sampled.
    AdmissionCheck,
    /// A misbehaving app or peer acts (sim/src/adversary.rs).
    Adversary(crate::adversary::AdvEv),
}

struct Sched {
    at: Instant,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Sched {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Sched {}
impl PartialOrd for Sched {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Sched {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// Local hops (app ↔ client, exit ↔ origin, DNS) take this long.
const LOCAL: Duration = Duration::from_micros(100);
const ORIGIN_RTT_HALF: Duration = Duration::from_millis(2);
const SLOW_TICK: Duration = Duration::from_millis(20);
const SLOW_BYTES: u32 = 4096;

/// The link directions a partition fault cuts (none between a node and itself).
fn cut_directions(kind: FaultKind, a: NodeIx, b: NodeIx) -> Vec<(NodeIx, NodeIx)> {
    match kind {
        _ if a == b => Vec::new(),
        FaultKind::Partition => vec![(a, b), (b, a)],
        _ => vec![(a, b)],
    }
}

pub(crate) struct World<'s> {
    s: &'s Scenario,
    pub(crate) now: Instant,
    queue: BinaryHeap<Reverse<Sched>>,
    seq: u64,
    rng: ChaCha8Rng,
    nodes: Vec<SimNode>,
    by_peer: BTreeMap<PeerId, NodeIx>,
    links: Vec<Link>,
    conns: BTreeMap<u64, PeerConn>,
    next_conn: u64,
    streams: BTreeMap<u64, SimStream>,
    next_stream: u64,
    node_streams: BTreeMap<(NodeIx, StreamId), (u64, usize)>,
    splices: BTreeMap<u64, Splice>,
    next_splice: u64,
    apps: Vec<App>,
    hosts: BTreeMap<SocketAddr, OriginHost>,
    origin_conns: BTreeMap<u64, OriginConn>,
    next_origin: u64,
    black_holes: BTreeMap<(NodeIx, StreamId), ()>,
    dns: BTreeMap<String, Vec<IpAddr>>,
    faults: Vec<FaultSpec>,
    pub(crate) trace: Trace,
    pub(crate) violations: Vec<Violation>,
    pub(crate) stats: RunStats,
    pub(crate) events: u64,
    bug: Option<InjectedBug>,
    sticky_exit: BTreeMap<(u32, u32, Option<u32>), NodeIx>,
    pub(crate) end: Instant,
    strict: bool,
    hubs: u32,
    exits: u32,
    /// The NAT and relay model's state (sim/src/world/relay.rs).
    relay: relay::RelayState,
    pub(crate) nat_matrix: crate::nat::NatMatrix,
    /// Misbehaving apps and peers (sim/src/adversary.rs).
    pub(crate) adv: crate::adversary::AdvState,
    /// Tickets granted and held, for the admission invariants (sim/src/world/admission.rs).
    admission: admission::AdmissionState,
}

impl<'s> World<'s> {
    pub(crate) fn new(
        s: &'s Scenario,
        seed: u64,
        plan: &Plan,
        trace: Trace,
        bug: Option<InjectedBug>,
    ) -> World<'s> {
        let mut rng = crate::rng_for(seed, 1);
        let mut nodes = crate::topology::build(s, seed);
        if bug == Some(InjectedBug::ExitSkipsTicket) {
            for (_, config, _) in &mut nodes {
                if let Some(exit) = config.exit.as_mut() {
                    exit.open = true;
                }
            }
        }
        let n = nodes.len();
        let mut links = Vec::with_capacity(n * n);
        for _ in 0..n * n {
            let ms = between(
                &mut rng,
                u64::from(s.network.latency_ms.min),
                u64::from(s.network.latency_ms.max),
            );
            links.push(Link {
                latency: Duration::from_millis(ms),
                jitter: Duration::from_millis(u64::from(s.network.jitter_ms)),
                bandwidth: u64::from(s.network.bandwidth_mbps.max(1)) * 125_000,
                busy_until: Instant::ZERO,
                partitions: 0,
                epoch: 0,
                spikes: Vec::new(),
                drops: Vec::new(),
                held: VecDeque::new(),
            });
        }
        // Symmetric base latency: the a→b link mirrors b→a.
        for a in 0..n {
            for b in 0..a {
                links[a * n + b].latency = links[b * n + a].latency;
            }
        }
        let by_peer = nodes.iter().enumerate().map(|(i, n)| (n.0, i as NodeIx)).collect();
        let sim_nodes = nodes
            .into_iter()
            .map(|(peer, config, ip)| SimNode {
                peer,
                config,
                core: None,
                generation: 0,
                timer_at: None,
                snapshot: None,
                next_sid: 0,
                ip,
                crash_id: 0,
            })
            .collect();
        let (hosts, dns) = crate::topology::origins();
        let faults: Vec<FaultSpec> = plan
            .items
            .iter()
            .filter_map(|i| match i {
                PlanItem::Fault(f) => Some(f.clone()),
                PlanItem::App(_) => None,
            })
            .collect();
        let workload_end = Instant::from_micros(u64::from(s.duration_secs) * 1_000_000);
        let quiet_at =
            workload_end.max(plan.faults_end()) + Duration::from_secs(u64::from(s.settle_secs));
        let mut w = World {
            s,
            now: Instant::ZERO,
            queue: BinaryHeap::new(),
            seq: 0,
            rng,
            nodes: sim_nodes,
            by_peer,
            links,
            conns: BTreeMap::new(),
            next_conn: 0,
            streams: BTreeMap::new(),
            next_stream: 0,
            node_streams: BTreeMap::new(),
            splices: BTreeMap::new(),
            next_splice: 0,
            apps: Vec::new(),
            hosts: hosts.into_iter().map(|(a, k)| (a, OriginHost { kind: k })).collect(),
            origin_conns: BTreeMap::new(),
            next_origin: 0,
            black_holes: BTreeMap::new(),
            dns,
            // Relay caps cut sessions on purpose, like faults do.
            strict: faults.is_empty()
                && !(s.topology.models_nat()
                    && (s.relay.circuit_secs.is_some() || s.relay.circuit_bytes.is_some())),
            faults,
            trace,
            violations: Vec::new(),
            stats: RunStats::default(),
            events: 0,
            bug,
            sticky_exit: BTreeMap::new(),
            end: quiet_at,
            hubs: s.topology.hubs,
            exits: s.topology.exits,
            relay: relay::RelayState::new(s, seed),
            nat_matrix: crate::nat::NatMatrix::new(),
            adv: crate::adversary::AdvState::default(),
            admission: admission::AdmissionState::default(),
        };
        for i in 0..w.nodes.len() {
            w.start_node(i as NodeIx);
        }
        for item in &plan.items {
            if let PlanItem::App(spec) = item {
                let ix = w.add_app(spec.clone(), false);
                w.push(spec.at, Ev::AppStart(ix));
            }
        }
        w.adv_init(seed);
        for (i, f) in w.faults.clone().iter().enumerate() {
            w.push(f.at, Ev::FaultStart(i));
            w.push(f.at + f.duration, Ev::FaultEnd(i));
        }
        if s.topology.models_nat() {
            w.push(Instant::ZERO + relay::CHECK_EVERY, Ev::RelayCheck);
        }
        w.push(Instant::ZERO + admission::CHECK_EVERY, Ev::AdmissionCheck);
        w.push(quiet_at, Ev::Probes);
        let bound = Duration::from_secs(u64::from(s.liveness_bound_secs));
        w.push(quiet_at + bound, Ev::Checkpoint);
        w.end = quiet_at + bound + Duration::from_secs(5);
        w
    }

    fn push(&mut self, at: Instant, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse(Sched { at: at.max(self.now), seq: self.seq, ev }));
    }

    /// Runs to the end, then checks the end-of-run invariants.
    pub(crate) fn run(&mut self) {
        let mut same_instant = 0u64;
        while let Some(Reverse(next)) = self.queue.pop() {
            if next.at > self.end {
                self.queue.push(Reverse(next));
                break;
            }
            if next.at == self.now {
                same_instant += 1;
                if same_instant > 1_000_000 {
                    self.violation(
                        "livelock",
                        format!("a million events at {} without time passing", self.now),
                    );
                    break;
                }
            } else {
                same_instant = 0;
            }
            self.now = next.at;
            self.events += 1;
            self.step(next.ev);
            self.trace.end_step();
            if self.events > 50_000_000 {
                self.violation("bounds", "run exceeded 50M events".into());
                break;
            }
        }
        self.now = self.end;
        self.final_checks();
    }

    pub(crate) fn violation(&mut self, invariant: &'static str, detail: String) {
        if self.violations.len() < 100 {
            self.trace.line(self.now, "VIOLATION", || format!("{invariant}: {detail}"));
            self.violations.push(Violation { at: self.now, invariant, detail });
        }
    }

    fn step(&mut self, ev: Ev) {
        match ev {
            Ev::NodeTimer(n, gen) => {
                let node = &mut self.nodes[n as usize];
                if node.generation != gen || node.timer_at.is_none_or(|t| t > self.now) {
                    self.trace.hash_only(self.now, 1, u64::from(n), 0);
                    return;
                }
                self.trace.line(self.now, "timer", || format!("n{n}"));
                self.trace.hash_only(self.now, 2, u64::from(n), 0);
                if let Some(core) = &mut self.nodes[n as usize].core {
                    core.handle_timeout(self.now);
                }
                self.drain(n);
            }
            Ev::NodeInput(n, gen, input) => {
                if self.nodes[n as usize].generation != gen || self.nodes[n as usize].core.is_none()
                {
                    self.trace.hash_only(self.now, 3, u64::from(n), 0);
                    return;
                }
                self.input(n, input);
            }
            Ev::Arrive(stream, side, chunk) => self.arrive(stream, side, chunk),
            Ev::DialDone { from, to, gen } => self.dial_done(from, to, gen),
            Ev::AppStart(a) => self.app_start(a),
            Ev::AppDeadline(a) => self.app_deadline(a),
            Ev::OriginTick(c) => self.origin_tick(c),
            Ev::FaultStart(i) => self.fault_start(i),
            Ev::FaultEnd(i) => self.fault_end(i),
            Ev::KeepaliveCheck { from, to, epoch } => self.keepalive_check(from, to, epoch),
            Ev::Probes => self.start_probes(),
            Ev::Checkpoint => self.checkpoint(),
            Ev::ReserveDone { node, hub, gen } => self.reserve_done(node, hub, gen),
            Ev::ReservationExpire { node, hub, epoch } => self.reservation_expire(node, hub, epoch),
            Ev::RelayDialDone { from, to, hub, gen } => self.relay_dial_done(from, to, hub, gen),
            Ev::CircuitEnd(id) => self.circuit_end(id),
            Ev::PunchDone { from, to, gen, ok } => self.punch_done(from, to, gen, ok),
            Ev::RelayCheck => self.relay_check(),
            Ev::AdmissionCheck => self.admission_check(),
            Ev::Adversary(e) => self.adv_event(e),
        }
    }

    // ---------------------------------------------------------------- nodes

    fn start_node(&mut self, n: NodeIx) {
        let seed = crate::node_seed(self.rng.next_u64(), n, self.nodes[n as usize].generation);
        let node = &mut self.nodes[n as usize];
        let core = Node::new(node.config.clone(), seed, self.now);
        node.core = Some(core);
        node.timer_at = None;
        self.trace.line(self.now, "start", || format!("n{n}"));
        self.trace.hash_only(self.now, 4, u64::from(n), 0);
        if let Some(snapshot) = self.nodes[n as usize].snapshot.clone() {
            self.input(n, Input::Restore(snapshot));
        } else {
            self.drain(n);
        }
        self.tell_reachability(n);
    }

    fn input(&mut self, n: NodeIx, input: Input) {
        self.trace.line(self.now, "in", || format!("n{n} {}", crate::trace::input_summary(&input)));
        self.trace.hash_only(self.now, 5, u64::from(n), crate::trace::input_code(&input));
        let prev = self.admission_cause(n, &input);
        if let Some(core) = &mut self.nodes[n as usize].core {
            core.handle_input(self.now, input);
        }
        self.drain(n);
        self.admission_cause_restore(prev);
    }

    fn send_input(&mut self, n: NodeIx, delay: Duration, input: Input) {
        let gen = self.nodes[n as usize].generation;
        if delay.is_zero() {
            self.push(self.now, Ev::NodeInput(n, gen, input));
        } else {
            self.push(self.now + delay, Ev::NodeInput(n, gen, input));
        }
    }

    /// Applies the drain rule: every output, then the next timeout.
    fn drain(&mut self, n: NodeIx) {
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
                "bounds",
                format!(
                    "n{n} holds {r} (busiest peer {}, directory {}, pre-auth hub streams {}, busiest peer's hub streams {}; limits: sessions {max_sessions}, per peer {}, directory {max_entries}, dials {max_dials}, hub streams {max_hub_streams}, pre-auth {max_preauth}, hub streams per peer {})",
                    r.busiest_peer_sessions, r.directory_entries, r.preauth_hub_streams,
                    r.busiest_peer_hub_streams, limits.max_sessions_per_peer,
                    limits.max_hub_streams_per_peer
                ),
            );
        }
        self.admission_directory(n);
        let node = &mut self.nodes[n as usize];
        if next != node.timer_at {
            node.timer_at = next;
            if let Some(at) = next {
                let gen = node.generation;
                self.push(at, Ev::NodeTimer(n, gen));
            }
        }
    }

    fn new_sid(&mut self, n: NodeIx) -> StreamId {
        let node = &mut self.nodes[n as usize];
        node.next_sid += 1;
        StreamId::outside(node.next_sid)
    }

    fn output(&mut self, n: NodeIx, out: Output) {
        self.admission_output(n, &out);
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
                let rtt = self.link(n, to).latency + self.link(to, n).latency;
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
            Output::Event(_) => {}
        }
    }

    // -------------------------------------------------------------- network

    fn link(&self, from: NodeIx, to: NodeIx) -> &Link {
        &self.links[from as usize * self.nodes.len() + to as usize]
    }

    fn link_mut(&mut self, from: NodeIx, to: NodeIx) -> &mut Link {
        let n = self.nodes.len();
        &mut self.links[from as usize * n + to as usize]
    }

    fn partitioned(&self, from: NodeIx, to: NodeIx) -> bool {
        from != to && self.link(from, to).partitions > 0
    }

    fn dial_done(&mut self, from: NodeIx, to: NodeIx, gen: [u32; 2]) {
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
        let lat = self.link(from, to).latency;
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

    fn open_stream(
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

    fn new_stream(
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
    fn local_stream(&mut self, n: NodeIx, sid: StreamId, other: Owner) -> u64 {
        let stream = self.new_stream([Owner::Node(n, sid), other], [Some(n), None], None, false);
        self.node_streams.insert((n, sid), (stream, 0));
        stream
    }

    /// Writes a chunk from `side` toward the other side, through the network model.
    fn write(&mut self, stream: u64, side: usize, chunk: Chunk) {
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
                let jitter_us = u64::try_from(self.link(a, b).jitter.as_micros()).unwrap_or(0);
                let j = if jitter_us > 0 { self.rng.next_u64() % (jitter_us + 1) } else { 0 };
                let now = self.now;
                let l = self.link_mut(a, b);
                let spike = l.spikes.iter().copied().max().unwrap_or(1);
                let drop = u64::from(l.drops.iter().copied().max().unwrap_or(1));
                let bw = (l.bandwidth / drop).max(1);
                let start = l.busy_until.max(now);
                let tx = Duration::from_micros(size * 1_000_000 / bw);
                l.busy_until = start + tx;
                (start + tx + l.latency * spike + Duration::from_micros(j))
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

    fn arrive(&mut self, stream: u64, side: usize, chunk: Chunk) {
        let Some(st) = self.streams.get(&stream) else {
            self.trace.hash_only(self.now, 7, stream, 0);
            return;
        };
        if let (Some(h), Some(from), Some(to)) = (st.via, st.nodes[1 - side], st.nodes[side]) {
            // A circuit stalls when either leg is cut, in order.
            for (x, y) in [(from, h), (h, to)] {
                if self.partitioned(x, y) || !self.link(x, y).held.is_empty() {
                    self.link_mut(x, y).held.push_back((stream, side, chunk));
                    return;
                }
            }
        } else if let (Some(from), Some(to)) = (st.nodes[1 - side], st.nodes[side]) {
            if self.partitioned(from, to) || !self.link(from, to).held.is_empty() {
                self.link_mut(from, to).held.push_back((stream, side, chunk));
                return;
            }
        }
        self.deliver(stream, side, chunk);
    }

    fn deliver(&mut self, stream: u64, side: usize, chunk: Chunk) {
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
    fn release(&mut self, stream: u64, side: usize) {
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
    fn abort_from(&mut self, stream: u64, dead_side: usize) {
        let Some(st) = self.streams.get_mut(&stream) else { return };
        st.owners[dead_side] = Owner::Gone;
        self.deliver(stream, 1 - dead_side, Chunk::Reset);
        self.kill_stream(stream);
    }

    fn kill_conn(&mut self, id: u64) {
        let Some(c) = self.conns.remove(&id) else { return };
        self.trace.line(self.now, "conn-down", || format!("c{id}"));
        for link in self.links.iter_mut() {
            link.held.retain(|(s, _, _)| !c.streams.contains(s));
        }
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
        for (i, n) in c.nodes.into_iter().enumerate() {
            let other = self.nodes[c.nodes[1 - i] as usize].peer;
            if self.nodes[n as usize].core.is_some() {
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

    // --------------------------------------------------------------- splices

    fn splice(&mut self, n: NodeIx, a: StreamId, b: StreamId, a_to_b: Bytes, b_to_a: Bytes) {
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
    fn splice_forward(&mut self, id: u64, which: usize, chunk: Chunk) {
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
    fn splice_reset(&mut self, id: u64, which: usize) {
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

    // ------------------------------------------------------------------ apps

    fn add_app(&mut self, spec: AppSpec, probe: bool) -> u32 {
        let ix = self.apps.len() as u32;
        let target = crate::topology::target_for(&spec);
        let listener = &self.s.listeners[spec.listener as usize];
        let mut user = None;
        if listener.auth || spec.session.is_some() {
            let mut u = app_proto::USER.to_string();
            if let Some(sess) = spec.session {
                u.push_str(&format!("-session-s{sess}"));
            }
            user = Some(u);
        }
        let tag = u64::from(ix);
        let wanted = match spec.kind {
            OriginKind::Echo | OriginKind::Sink => 0,
            _ => u64::from(spec.size),
        };
        let up_total = HEADER_LEN
            + match spec.kind {
                OriginKind::Echo
                | OriginKind::Sink
                | OriginKind::MixedName
                | OriginKind::Private
                | OriginKind::PrivateName => u64::from(spec.size),
                _ => 0,
            };
        let up_key = crate::key(tag, 1);
        let up_header = header(tag, wanted);
        let down = if spec.kind.echoes() {
            Verifier::new(up_key, up_header.to_vec())
        } else {
            Verifier::new(crate::key(tag, 2), Vec::new())
        };
        let budget = Duration::from_secs(150 + u64::from(self.s.faults.max_fault_secs));
        self.apps.push(App {
            strict: probe || self.strict,
            probe,
            target,
            authed: user.is_some(),
            username: user,
            stream: 0,
            phase: AppPhase::Connecting,
            inbox: Vec::new(),
            up_key,
            up_header,
            up_sent: 0,
            up_total,
            fin_sent: false,
            reply_ok: false,
            down,
            outcome: None,
            started: spec.at,
            deadline: spec.at + budget,
            exit: None,
            relayed: None,
            spec,
        });
        ix
    }

    fn app_start(&mut self, a: u32) {
        let app = &self.apps[a as usize];
        let client = self.s.topology.hubs + self.s.topology.exits + app.spec.client;
        self.stats.app_connections += 1;
        let deadline = if app.probe {
            self.now + Duration::from_secs(u64::from(self.s.liveness_bound_secs))
        } else {
            app.deadline
        };
        self.apps[a as usize].deadline = deadline;
        self.apps[a as usize].started = self.now;
        if !self.apps[a as usize].probe && self.adv_relaxes(self.now) {
            self.apps[a as usize].strict = false;
        }
        self.push(deadline, Ev::AppDeadline(a));
        if self.nodes[client as usize].core.is_none() {
            // The client process is down: connection refused.
            self.app_end(a, Outcome::NoAnswer);
            return;
        }
        let sid = self.new_sid(client);
        let stream = self.local_stream(client, sid, Owner::App(a));
        self.apps[a as usize].stream = stream;
        self.apps[a as usize].phase = AppPhase::Handshake;
        let listener = ListenerId(u64::from(self.apps[a as usize].spec.listener));
        let source = SocketAddr::from(([127, 0, 0, 1], 40_000 + (a % 20_000) as u16));
        self.send_input(client, LOCAL, Input::AppAccepted { listener, stream: sid, source });
        // The whole handshake goes out at once, split into `splits` writes.
        let app = &self.apps[a as usize];
        let mut bytes = if app.spec.http {
            app_proto::http_connect(&app.target, app.username.as_deref())
        } else {
            app_proto::socks5_handshake(&app.target, app.username.as_deref())
        };
        let pipelined = app.spec.pipelined && !app.spec.http;
        if pipelined {
            bytes.extend_from_slice(&app.up_header);
        }
        let splits = usize::from(app.spec.splits.max(1));
        let step = bytes.len().div_ceil(splits).max(1);
        let pieces: Vec<Bytes> = bytes.chunks(step).map(Bytes::copy_from_slice).collect();
        for piece in pieces {
            self.write(stream, 1, Chunk::Data(Payload::Real(piece)));
        }
        if pipelined {
            self.apps[a as usize].up_sent = HEADER_LEN;
        }
    }

    fn app_chunk(&mut self, a: u32, chunk: Chunk) {
        let app = &mut self.apps[a as usize];
        if app.outcome.is_some() {
            return;
        }
        match chunk {
            Chunk::Data(p) => {
                if app.phase == AppPhase::Handshake {
                    app.inbox.extend_from_slice(&p.materialize());
                    let reply = if app.spec.http {
                        app_proto::parse_http_reply(&app.inbox)
                    } else {
                        app_proto::parse_socks5_reply(&app.inbox, app.authed)
                    };
                    match reply {
                        None => {}
                        Some(Reply::Garbage) => {
                            self.violation(
                                "protocol",
                                format!("app {a} got an invalid proxy reply"),
                            );
                            self.app_end(a, Outcome::NoAnswer);
                        }
                        Some(Reply::Failure { code }) => self.app_refused(a, code),
                        Some(Reply::Success { used }) => {
                            let rest = Bytes::copy_from_slice(&app.inbox[used..]);
                            app.inbox = Vec::new();
                            app.phase = AppPhase::Open;
                            app.reply_ok = true;
                            self.app_success(a);
                            if !rest.is_empty() {
                                self.app_chunk(a, Chunk::Data(Payload::Real(rest)));
                            }
                        }
                    }
                    return;
                }
                if let Err(m) = app.down.check(&p) {
                    let detail =
                        format!("app {a} ({:?}) at byte {}: {}", app.spec.kind, m.offset, m.detail);
                    self.violation("integrity", detail);
                    self.app_end(a, Outcome::Reset);
                }
            }
            Chunk::Fin => {
                if !app.reply_ok {
                    self.app_end(a, Outcome::NoAnswer);
                    return;
                }
                // A clean end: the origin must have ended cleanly, after sending all of it.
                let origin = self.origin_conns.values().find(|c| c.app == Some(a));
                let received = app.down.offset;
                let ok = match origin {
                    Some(c) => c.ended == Some(Close::Fin) && c.down_sent == received,
                    None => false,
                };
                if !ok {
                    let what = match origin {
                        Some(c) => format!("origin sent {} and ended {:?}", c.down_sent, c.ended),
                        None => "no origin connection carries it".into(),
                    };
                    let detail = format!(
                        "app {a} ({:?}) saw a clean end after {received} bytes; {what}",
                        app.spec.kind
                    );
                    self.violation("integrity", detail);
                }
                self.app_end(a, Outcome::Complete);
            }
            Chunk::Reset => {
                let outcome = if app.reply_ok { Outcome::Reset } else { Outcome::NoAnswer };
                self.app_end(a, outcome);
            }
        }
    }

    fn app_success(&mut self, a: u32) {
        let app = &self.apps[a as usize];
        if !app.spec.kind.can_succeed() {
            let detail = format!(
                "app {a} asked for {:?} {} and was told it connected",
                app.spec.kind, app.target
            );
            self.violation("policy", detail);
        }
        let app = &self.apps[a as usize];
        let stream = app.stream;
        let mut writes = Vec::new();
        let mut sent = app.up_sent;
        if sent < HEADER_LEN {
            writes.push(Payload::Real(Bytes::copy_from_slice(&app.up_header)));
            sent = HEADER_LEN;
        }
        while sent < app.up_total {
            let len = (app.up_total - sent).min(u64::from(CHUNK)) as u32;
            writes.push(Payload::Pattern { key: app.up_key, offset: sent, len });
            sent += u64::from(len);
        }
        for p in writes {
            self.write(stream, 1, Chunk::Data(p));
        }
        self.write(stream, 1, Chunk::Fin);
        let app = &mut self.apps[a as usize];
        app.up_sent = sent;
        app.fin_sent = true;
    }

    fn app_refused(&mut self, a: u32, code: u8) {
        let app = &self.apps[a as usize];
        // HTTP can only tell 403, 504 and 502 apart.
        let expected =
            app.spec
                .kind
                .refusal()
                .map(|c| if app.spec.http { app_proto::http_class(c) } else { c });
        let wrong = match expected {
            // Must fail, and with exactly this code when nothing else is going wrong.
            Some(want) => app.strict && code != want,
            // Must succeed when nothing is going wrong.
            None => app.strict,
        };
        // 0x02 for a destination that is not denied: only a client without a
        // usable ticket (NotAdmitted) may say that, and never in a run held
        // to "must succeed".
        let client = self.hubs + self.exits + app.spec.client;
        let denied_wrongly = code == 0x02
            && expected != Some(0x02)
            && (app.strict || !self.not_admitted_excused(client));
        let app = &self.apps[a as usize];
        if wrong || denied_wrongly {
            let detail = format!(
                "app {a} asked for {:?} {} and got reply {code:#04x} (expected {})",
                app.spec.kind,
                app.target,
                expected.map_or("success".to_string(), |c| format!("{c:#04x}"))
            );
            self.violation(if app.probe { "liveness" } else { "outcome" }, detail);
        }
        self.app_end(a, Outcome::Refused(code));
    }

    fn app_end(&mut self, a: u32, outcome: Outcome) {
        let app = &mut self.apps[a as usize];
        if app.outcome.is_some() {
            return;
        }
        app.outcome = Some(outcome);
        app.phase = AppPhase::Done;
        let stream = app.stream;
        let strict_success = app.strict
            && app.spec.kind.refusal().is_none()
            && app.spec.kind != OriginKind::ResetMidStream;
        match outcome {
            Outcome::Complete => {
                self.stats.succeeded += 1;
                self.stats.bytes += app.up_sent + app.down.offset;
            }
            _ => self.stats.failed += 1,
        }
        if strict_success && outcome != Outcome::Complete && !matches!(outcome, Outcome::Refused(_))
        {
            let detail = format!(
                "app {a} ({:?} {}) ended {outcome:?} in a run without faults",
                app.spec.kind, app.target
            );
            let inv = if app.probe { "liveness" } else { "outcome" };
            self.violation(inv, detail);
        }
        if outcome == Outcome::Complete {
            self.check_sticky(a);
        }
        self.count_session(a, outcome);
        if let Some(st) = self.streams.get(&stream) {
            if st.owners[1] == Owner::App(a) {
                if outcome != Outcome::Complete && !self.apps[a as usize].fin_sent {
                    self.write(stream, 1, Chunk::Fin);
                }
                self.release(stream, 1);
            }
        }
    }

    fn app_deadline(&mut self, a: u32) {
        let app = &self.apps[a as usize];
        if app.outcome.is_none() {
            let waited = self.now.saturating_duration_since(app.started);
            let detail = format!(
                "app {a} ({:?} {}, {:?}) still unanswered after {waited:?}",
                app.spec.kind, app.target, app.phase
            );
            let (probe, stream) = (app.probe, app.stream);
            self.violation(if probe { "liveness" } else { "hang" }, detail);
            self.apps[a as usize].outcome = Some(Outcome::NoAnswer);
            if self.streams.contains_key(&stream) {
                self.abort_from(stream, 1);
            }
        }
    }

    /// The sticky contract: a pinned session on a listener without fallback
    /// never changes its exit.
    fn check_sticky(&mut self, a: u32) {
        let app = &self.apps[a as usize];
        let listener = &self.s.listeners[app.spec.listener as usize];
        if listener.fallback || app.probe {
            return;
        }
        let key = match listener.sticky {
            crate::scenario::StickyMode::Off => return,
            crate::scenario::StickyMode::Listener => (app.spec.client, app.spec.listener, None),
            crate::scenario::StickyMode::Session => match app.spec.session {
                Some(s) => (app.spec.client, app.spec.listener, Some(s)),
                None => return,
            },
        };
        let Some(exit) = app.exit else { return };
        match self.sticky_exit.get(&key) {
            Some(&pinned) if pinned != exit => {
                let detail = format!(
                    "app {a}: session {key:?} pinned to n{pinned} went out through n{exit}"
                );
                self.violation("sticky", detail);
            }
            Some(_) => {}
            None => {
                self.sticky_exit.insert(key, exit);
            }
        }
    }

    // --------------------------------------------------------------- origins

    fn connect_origin(&mut self, n: NodeIx, sid: StreamId, addr: SocketAddr) {
        let own = self.nodes[n as usize].ip;
        if oracle::forbidden(addr.ip(), own) {
            self.violation("policy", format!("exit n{n} dialed forbidden {addr}"));
        }
        let host = self.hosts.get(&addr).copied();
        match host.map(|h| h.kind) {
            None | Some(OriginKind::Refuse) => {
                self.send_input(
                    n,
                    ORIGIN_RTT_HALF * 2,
                    Input::OriginFailed { stream: sid, status: Status::ConnectionRefused },
                );
            }
            Some(OriginKind::BlackHole) => {
                self.black_holes.insert((n, sid), ());
            }
            Some(kind) => {
                self.next_origin += 1;
                let c = self.next_origin;
                let stream = self.local_stream(n, sid, Owner::Origin(c));
                self.origin_conns.insert(
                    c,
                    OriginConn {
                        kind,
                        stream,
                        exit: n,
                        addr,
                        head: Vec::new(),
                        app: None,
                        up: None,
                        down_key: 0,
                        down_sent: 0,
                        down_total: 0,
                        ended: None,
                        got_fin: false,
                        released: false,
                    },
                );
                self.send_input(n, ORIGIN_RTT_HALF * 2, Input::OriginConnected { stream: sid });
            }
        }
    }

    fn origin_chunk(&mut self, c: u64, chunk: Chunk) {
        let Some(o) = self.origin_conns.get_mut(&c) else { return };
        match chunk {
            Chunk::Data(p) => {
                let mut payload = p.clone();
                if o.head.len() < HEADER_LEN as usize {
                    let bytes = p.materialize();
                    let need = HEADER_LEN as usize - o.head.len();
                    o.head.extend_from_slice(&bytes[..need.min(bytes.len())]);
                    if o.head.len() < HEADER_LEN as usize {
                        if o.kind.echoes() {
                            self.origin_send(c, Chunk::Data(p));
                        }
                        return;
                    }
                    let tag = u64::from_be_bytes(o.head[..8].try_into().unwrap_or([0; 8]));
                    let wanted = u64::from_be_bytes(o.head[8..16].try_into().unwrap_or([0; 8]));
                    self.origin_learned(c, tag, wanted);
                    let Some(o) = self.origin_conns.get_mut(&c) else { return };
                    let mut v = match o.app {
                        Some(a) => Verifier::new(
                            self.apps[a as usize].up_key,
                            self.apps[a as usize].up_header.to_vec(),
                        ),
                        None => return,
                    };
                    // Re-check the whole chunk (header included) through the verifier.
                    let before = HEADER_LEN as usize - need.min(bytes.len());
                    let _ = before;
                    v.offset = 0;
                    let head = o.head.clone();
                    let _ = v.check(&Payload::Real(Bytes::from(head)));
                    let rest = bytes.slice(need.min(bytes.len())..);
                    o.up = Some(v);
                    payload = Payload::Real(rest);
                    if payload.len() == 0 {
                        if o.kind.echoes() {
                            self.origin_send(c, Chunk::Data(p));
                        }
                        return;
                    }
                    if o.kind.echoes() {
                        // Echo the header bytes that were in this chunk too.
                        let head_part = bytes.slice(..need.min(bytes.len()));
                        self.origin_send(c, Chunk::Data(Payload::Real(head_part)));
                    }
                }
                let Some(o) = self.origin_conns.get_mut(&c) else { return };
                let addr = o.addr;
                if let Some(Err(m)) = o.up.as_mut().map(|v| v.check(&payload)) {
                    let detail = format!("origin {addr} got byte {} wrong: {}", m.offset, m.detail);
                    self.violation("integrity", detail);
                }
                let Some(o) = self.origin_conns.get(&c) else { return };
                if o.kind.echoes() {
                    self.origin_send(c, Chunk::Data(payload));
                }
            }
            Chunk::Fin => {
                o.got_fin = true;
                // A clean end from the app: it must have sent everything, and ended cleanly.
                let received = o.up.as_ref().map_or(o.head.len() as u64, |v| v.offset);
                let (kind, addr, app) = (o.kind, o.addr, o.app);
                if let Some(a) = app {
                    let app = &self.apps[a as usize];
                    if !(app.fin_sent && app.up_sent == received) {
                        let detail = format!(
                            "origin {addr} saw a clean end after {received} bytes; app {a} sent {} (fin: {})",
                            app.up_sent, app.fin_sent
                        );
                        self.violation("integrity", detail);
                    }
                }
                if kind.echoes() || kind == OriginKind::Sink {
                    self.origin_send(c, Chunk::Fin);
                }
                self.origin_maybe_release(c);
            }
            Chunk::Reset => {
                o.got_fin = true;
                if o.ended.is_none() {
                    o.ended = Some(Close::Reset);
                }
                o.released = true;
            }
        }
    }

    /// The origin read the app's header: check routing, then behave.
    fn origin_learned(&mut self, c: u64, tag: u64, wanted: u64) {
        let Some(o) = self.origin_conns.get_mut(&c) else { return };
        let Some(app) = self.apps.get_mut(tag as usize) else {
            let addr = o.addr;
            self.violation("routing", format!("origin {addr} got a header naming no app"));
            return;
        };
        o.app = Some(tag as u32);
        app.exit = Some(o.exit);
        let addr = o.addr;
        let allowed = crate::topology::resolves_to(&self.dns, &app.target);
        if !allowed.contains(&addr) {
            let detail = format!(
                "app {tag} asked for {} but exit n{} connected it to {addr}",
                app.target, o.exit
            );
            self.violation("routing", detail);
        }
        let Some(o) = self.origin_conns.get_mut(&c) else { return };
        o.down_key = crate::key(tag, 2);
        o.down_total = match o.kind {
            OriginKind::CloseEarly | OriginKind::ResetMidStream => wanted / 2,
            _ => wanted,
        };
        match o.kind {
            OriginKind::Source | OriginKind::CloseEarly | OriginKind::ResetMidStream => {
                let mut writes = Vec::new();
                let mut sent = 0;
                while sent < o.down_total {
                    let len = (o.down_total - sent).min(u64::from(CHUNK)) as u32;
                    writes.push(Payload::Pattern { key: o.down_key, offset: sent, len });
                    sent += u64::from(len);
                }
                let end =
                    if o.kind == OriginKind::ResetMidStream { Chunk::Reset } else { Chunk::Fin };
                for p in writes {
                    self.origin_send(c, Chunk::Data(p));
                }
                self.origin_send(c, end);
            }
            OriginKind::Slow => self.origin_tick(c),
            _ => {}
        }
    }

    fn origin_tick(&mut self, c: u64) {
        let Some(o) = self.origin_conns.get(&c) else { return };
        if o.ended.is_some() {
            return;
        }
        if o.down_sent >= o.down_total {
            self.origin_send(c, Chunk::Fin);
            return;
        }
        let len = (o.down_total - o.down_sent).min(u64::from(SLOW_BYTES)) as u32;
        let p = Payload::Pattern { key: o.down_key, offset: o.down_sent, len };
        self.origin_send(c, Chunk::Data(p));
        self.push(self.now + SLOW_TICK, Ev::OriginTick(c));
    }

    fn origin_send(&mut self, c: u64, chunk: Chunk) {
        let Some(o) = self.origin_conns.get_mut(&c) else { return };
        if o.ended.is_some() || o.released {
            return;
        }
        match &chunk {
            Chunk::Data(p) => o.down_sent += p.len(),
            Chunk::Fin => o.ended = Some(Close::Fin),
            Chunk::Reset => o.ended = Some(Close::Reset),
        }
        let stream = o.stream;
        let reset = chunk == Chunk::Reset;
        self.write(stream, 1, chunk);
        if reset {
            if let Some(o) = self.origin_conns.get_mut(&c) {
                o.released = true;
            }
            self.release(stream, 1);
        } else {
            self.origin_maybe_release(c);
        }
    }

    fn origin_maybe_release(&mut self, c: u64) {
        let Some(o) = self.origin_conns.get_mut(&c) else { return };
        if o.got_fin && o.ended.is_some() && !o.released {
            o.released = true;
            let stream = o.stream;
            self.release(stream, 1);
        }
    }

    // ---------------------------------------------------------------- faults

    fn fault_start(&mut self, i: usize) {
        let f = self.faults[i].clone();
        self.trace.line(self.now, "fault", || {
            format!("start {:?} a={} b={} for {:?}", f.kind, f.a, f.b, f.duration)
        });
        self.trace.hash_only(self.now, 9, i as u64, 1);
        let n = self.nodes.len() as u32;
        let (a, b) = (f.a.min(n - 1), f.b.min(n - 1));
        match f.kind {
            FaultKind::Partition | FaultKind::OneWayPartition => {
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

    fn fault_end(&mut self, i: usize) {
        let f = self.faults[i].clone();
        self.trace.line(self.now, "fault", || format!("end {:?} a={} b={}", f.kind, f.a, f.b));
        self.trace.hash_only(self.now, 9, i as u64, 2);
        let n = self.nodes.len() as u32;
        let (a, b) = (f.a.min(n - 1), f.b.min(n - 1));
        match f.kind {
            FaultKind::Partition | FaultKind::OneWayPartition => {
                for (x, y) in cut_directions(f.kind, a, b) {
                    let l = self.link_mut(x, y);
                    l.partitions = l.partitions.saturating_sub(1);
                    if l.partitions == 0 {
                        let held: Vec<_> = l.held.drain(..).collect();
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

    fn keepalive_check(&mut self, from: NodeIx, to: NodeIx, epoch: u64) {
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

    fn crash(&mut self, n: NodeIx, crash: u64) {
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

    fn restart(&mut self, n: NodeIx, crash: u64) {
        let node = &self.nodes[n as usize];
        if node.core.is_some() || node.crash_id != crash {
            return;
        }
        self.nodes[n as usize].generation += 1;
        self.start_node(n);
    }

    // ------------------------------------------------------------- liveness

    fn start_probes(&mut self) {
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

    fn checkpoint(&mut self) {
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

    fn final_checks(&mut self) {
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

// ------------------------------------------------- hooks for adversary.rs
//
// The adversaries (sim/src/adversary.rs) live outside this module and reach
// the world only through these.
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

    pub(crate) fn adv_schedule(&mut self, at: Instant, ev: crate::adversary::AdvEv) {
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
    fn check_adversary_splice(&mut self, n: NodeIx, ends: [(u64, usize); 2]) {
        for (st, side) in ends {
            if let Some(Owner::Adversary(c)) = self.streams.get(&st).map(|s| s.owners[1 - side]) {
                let detail = format!("n{n} spliced hostile connection {c} to another stream");
                self.violation("adversary", detail);
            }
        }
    }
}
