//! The simulated world: nodes running the real core, the network between
//! them, apps that verify every byte, origins with scripted behaviours, DNS,
//! faults, and the invariants checked as the run goes.
//!
//! This module holds the world's types, its construction, the event loop
//! (`run`) and the dispatch of each event (`step`). The behaviour is split by
//! job into `impl World` blocks, one file each: `nodes` (the node executor),
//! `net` (links, dials, streams), `splice` (the data plane), `apps`,
//! `origins`, `faults` (cuts, partitions, crashes, restarts), `checks`
//! (recording violations; probes, checkpoint and end-of-run checks),
//! `relay` (the NAT and relay model), `admission` (the admission invariants)
//! and `adversary` (misbehaving apps and peers, and the world's side of them
//! in `adversary/hooks`).

use crate::bytes_model::{Chunk, Verifier, HEADER_LEN};
use crate::plan::{between, AppSpec, FaultSpec, Plan, PlanItem};
use crate::scenario::{OriginKind, Scenario};
use crate::trace::Trace;
use crate::{InjectedBug, RunStats, Violation};
use meshproxy_core::config::NodeConfig;
use meshproxy_core::ids::{PeerId, StreamId};
use meshproxy_core::io::{CircuitLimit, Close, Input, StateSnapshot};
use meshproxy_core::target::TargetAddr;
use meshproxy_core::time::Instant;
use meshproxy_core::Node;
use rand_chacha::ChaCha8Rng;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use checks::Invariant;

mod admission;
mod adversary;
mod apps;
mod checks;
mod faults;
mod ingress;
mod ingress_availability;
mod ingress_load;
mod net;
mod nodes;
mod origins;
mod relay;
mod splice;

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
    /// A misbehaving app or peer (sim/src/world/adversary).
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

/// What is happening on one direction of the network between two nodes.
/// Kept only for links that carried traffic or a fault (`World::links`):
/// a table of every pair held ~0.5 MB per node at 3,300 nodes. The base
/// latency is in `World::latencies`; jitter and bandwidth are the
/// scenario's.
#[derive(Debug, Clone, Default)]
struct Link {
    busy_until: Instant,
    partitions: u32,
    epoch: u64,
    spikes: Vec<u32>,
    drops: Vec<u32>,
}

/// A chunk waiting on a cut link: (stream, the side it goes to, the chunk).
type HeldChunk = (u64, usize, Chunk);

/// A link with nothing on it.
static IDLE_LINK: Link = Link {
    busy_until: Instant::ZERO,
    partitions: 0,
    epoch: 0,
    spikes: Vec::new(),
    drops: Vec::new(),
};

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
    /// (Public requests) the gateway answered with this status itself.
    Http(u16),
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
    /// The app's side of `stream` (1 for its own connection to a client; a
    /// public request's is the gateway's side of the stream to the agent).
    side: usize,
    /// (Public requests) the route table version in force at the gateway
    /// when the request arrived there.
    routes_version: Option<u64>,
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
    /// A misbehaving app or peer acts (sim/src/world/adversary).
    Adversary(adversary::AdvEv),
    /// A gateway is handed a new route table (sim/src/world/ingress.rs).
    IngressReload(NodeIx),
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

pub(crate) struct World<'s> {
    s: &'s Scenario,
    pub(crate) now: Instant,
    queue: BinaryHeap<Reverse<Sched>>,
    seq: u64,
    rng: ChaCha8Rng,
    nodes: Vec<SimNode>,
    by_peer: BTreeMap<PeerId, NodeIx>,
    /// Base latency in ms of each pair `a ≤ b` (symmetric), packed as an
    /// upper triangle: see `net::pair_index`.
    latencies: Vec<u32>,
    links: BTreeMap<(NodeIx, NodeIx), Link>,
    /// Chunks that arrived on a partitioned link, released in order on heal
    /// (an entry only while it holds any).
    held: BTreeMap<(NodeIx, NodeIx), VecDeque<HeldChunk>>,
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
    /// Misbehaving apps and peers (sim/src/world/adversary).
    pub(crate) adv: adversary::AdvState,
    /// Tickets granted and held, for the admission invariants (sim/src/world/admission.rs).
    admission: admission::AdmissionState,
    /// The last route table version handed to a gateway.
    routes_version: u64,
    /// Closed gateway–agent connections (sim/src/world/ingress_availability.rs).
    avail: ingress_availability::AvailabilityState,
    /// The gateways' load, counted by the world (sim/src/world/ingress_load.rs).
    load: ingress_load::LoadState,
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
        if bug == Some(InjectedBug::IngressPriorityReversed) {
            for (_, config, _) in &mut nodes {
                if let Some(gateway) = config.gateway.as_mut() {
                    gateway.routes = crate::ingress_model::reversed_snapshot(1);
                }
            }
        }
        let n = nodes.len();
        // One draw per ordered pair, in row order, as the seed has always
        // drawn them; the pair a ≤ b keeps its draw and b → a mirrors it
        // (the other draws only advance the generator).
        let mut latencies = Vec::with_capacity(n * (n + 1) / 2);
        for a in 0..n {
            for b in 0..n {
                let ms = between(
                    &mut rng,
                    u64::from(s.network.latency_ms.min),
                    u64::from(s.network.latency_ms.max),
                );
                if a <= b {
                    latencies.push(u32::try_from(ms).unwrap_or(u32::MAX));
                }
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
            latencies,
            links: BTreeMap::new(),
            held: BTreeMap::new(),
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
            adv: adversary::AdvState::default(),
            admission: admission::AdmissionState::default(),
            routes_version: 1,
            avail: ingress_availability::AvailabilityState::default(),
            load: ingress_load::LoadState::default(),
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
        w.ingress_init(seed);
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
                        Invariant::Livelock,
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
                self.violation(Invariant::Bounds, "run exceeded 50M events".into());
                break;
            }
        }
        self.now = self.end;
        self.final_checks();
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
            Ev::IngressReload(n) => self.ingress_reload(n),
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
}
