//! [`NodeRunner`]: owns the core [`Node`], feeds it inputs and the passage of
//! time, and carries out its outputs with Tokio.
//!
//! One task, one bounded event channel ([`RunnerMsg`]), one timer. After every
//! input or timeout the runner drains the node's outputs (the drain rule) and
//! re-arms its timer from `poll_timeout`. Inputs that executing an output
//! produces at once (a full queue refusing a dial, say) are queued and fed
//! after the drain, never in the middle of it.
//!
//! Streams the core controls each get a pump task ([`crate::runtime::pump`]). On
//! `Splice` both pumps are detached; data they read before detaching arrives
//! ahead of their `Detached` report on the same channel and is appended to
//! the splice prefix, so nothing is lost at the hand-over.

use crate::ops::control::EventFeed;
use crate::ops::metrics::{Metrics, Snapshot};
use crate::ops::state;
use crate::p2p::{BoxStream, NetCommand, NetEvent};
use crate::runtime::gateway::{bridge::Bridge, IngressMsg};
use crate::runtime::pump::{self, PumpCmd, PumpEvent, PUMP_QUEUE};
use crate::runtime::sockets::{Sockets, TokioSockets};
use crate::runtime::splice::splice_from;
use bytes::BytesMut;
use core::fmt;
use meshproxy_core::config::NodeConfig;
use meshproxy_core::ids::{ListenerId, QueryId, StreamId};
use meshproxy_core::io::{
    Close, Event, Input, NewConfig, Output, Reachability, ResolveError, Resources, Revocation,
    SpliceEnd, SpliceLimits, SpliceReport, StateSnapshot,
};
use meshproxy_core::status::NodeStatus;
use meshproxy_core::target::Status;
use meshproxy_core::time::Instant as CoreInstant;
use meshproxy_core::wire::hub::Role;
use meshproxy_core::Node;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

/// Capacity of the runner's event channel; senders wait when it is full.
pub const RUNNER_QUEUE: usize = 1024;

/// Everything that reaches the runner, on one ordered channel.
pub enum RunnerMsg {
    /// Something the peer network reports.
    Net(NetEvent),
    /// An app connected to a client listener.
    AppAccepted {
        /// The listener, by position in the config.
        listener: ListenerId,
        /// The app's address.
        source: SocketAddr,
        /// The connection.
        io: BoxStream,
    },
    /// What the pump of a core-controlled stream reports about it.
    Pump(StreamId, PumpEvent),
    /// A DNS lookup finished.
    Resolved {
        /// The lookup.
        query: QueryId,
        /// Addresses or why not.
        result: Result<Vec<IpAddr>, ResolveError>,
    },
    /// An origin connection attempt finished.
    OriginDone {
        /// The stream the core named.
        stream: StreamId,
        /// The connection, or the status to report.
        result: Result<BoxStream, Status>,
    },
    /// A splice finished.
    SpliceDone {
        /// Side a.
        a: StreamId,
        /// Side b.
        b: StreamId,
        /// What it carried.
        report: SpliceReport,
    },
    /// A gateway request task asks or reports.
    Ingress(IngressMsg),
    /// Asks for a summary of the node (for status output and tests).
    Status(oneshot::Sender<RunnerStatus>),
    /// Asks for the core's full status (the control endpoint's `status`).
    Inspect(oneshot::Sender<Inspection>),
    /// A reload's validated config: its live parts take effect in one input
    /// (`crate::ops::reload`); answered once applied.
    Reconfigure(NewConfig, oneshot::Sender<()>),
    /// (Hubs) the operator revokes a key or a peer; answered with the
    /// admitted hub streams it ended.
    Revoke(Revocation, oneshot::Sender<usize>),
    /// Stop the runner; every stream it holds is aborted.
    Shutdown,
}

impl fmt::Debug for RunnerMsg {
    // By hand because boxed streams have no Debug of their own.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunnerMsg::Net(e) => write!(f, "Net({e:?})"),
            RunnerMsg::AppAccepted { listener, source, .. } => {
                write!(f, "AppAccepted({listener}, {source})")
            }
            RunnerMsg::Pump(stream, event) => write!(f, "Pump({stream}, {event:?})"),
            RunnerMsg::Resolved { query, result } => write!(f, "Resolved({query}, {result:?})"),
            RunnerMsg::OriginDone { stream, result } => {
                write!(f, "OriginDone({stream}, ok={})", result.is_ok())
            }
            RunnerMsg::SpliceDone { a, b, report } => write!(f, "SpliceDone({a}, {b}, {report:?})"),
            RunnerMsg::Ingress(m) => write!(f, "Ingress({m:?})"),
            RunnerMsg::Status(_) => write!(f, "Status"),
            RunnerMsg::Inspect(_) => write!(f, "Inspect"),
            RunnerMsg::Reconfigure(..) => write!(f, "Reconfigure"),
            RunnerMsg::Revoke(what, _) => write!(f, "Revoke({what:?})"),
            RunnerMsg::Shutdown => write!(f, "Shutdown"),
        }
    }
}

impl From<(StreamId, PumpEvent)> for RunnerMsg {
    fn from((stream, event): (StreamId, PumpEvent)) -> RunnerMsg {
        RunnerMsg::Pump(stream, event)
    }
}

/// A summary of the node, answered to [`RunnerMsg::Status`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunnerStatus {
    /// What the core holds.
    pub resources: Resources,
    /// (Clients) exits known.
    pub known_exits: usize,
    /// (Exits) hubs registered at.
    pub registered_hubs: usize,
    /// Streams with a live pump.
    pub pumps: usize,
    /// Splices waiting for their streams to detach.
    pub pending_splices: usize,
    /// Peer connections open now that run directly (as the core counts them).
    pub direct_conns: usize,
    /// Peer connections open now that run through a hub's relay (as the core counts them).
    pub relayed_conns: usize,
    /// (Exits) relay reservations held now (as the core counts them).
    pub reservations: usize,
    /// (Hubs) peers admitted now (as the core counts them).
    pub admitted_peers: usize,
    /// (Gateways) agents known now (as the core counts them).
    pub agents_known: usize,
    /// (Gateways) requests carried by an agent's stream now.
    pub forwards_open: usize,
    /// (Agents) ingress streams spliced to an origin now (as the core counts them).
    pub agent_streams_open: usize,
    /// (Hubs) exits in the directory now.
    pub directory_exits: usize,
    /// (Hubs) agents in the directory now.
    pub directory_agents: usize,
}

impl RunnerStatus {
    /// What the `/metrics` gauges of what the node holds show.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            direct_conns: self.direct_conns,
            relayed_conns: self.relayed_conns,
            reservations: self.reservations,
            registered_hubs: self.registered_hubs,
            directory_exits: self.directory_exits,
            directory_agents: self.directory_agents,
            admitted_peers: self.admitted_peers,
            agents_known: self.agents_known,
            forwards_open: self.forwards_open,
            agent_streams_open: self.agent_streams_open,
        }
    }
}

/// The core's status and how long the node has run, answered to [`RunnerMsg::Inspect`].
#[derive(Clone, Debug, PartialEq)]
pub struct Inspection {
    /// What the core holds, from its own tables.
    pub status: NodeStatus,
    /// Time since the runner started.
    pub uptime: Duration,
}

/// A splice waiting for both pumps to hand their streams back.
struct PendingSplice {
    ids: [StreamId; 2],
    /// Bytes to write to the *other* side first: `prefix[0]` goes a→b.
    prefix: [BytesMut; 2],
    io: [Option<BoxStream>; 2],
    eof: [bool; 2],
    failed: [bool; 2],
    waiting: [bool; 2],
    limits: SpliceLimits,
}

/// Runs one [`Node`].
pub struct NodeRunner {
    node: Node,
    start: Instant,
    rx: mpsc::Receiver<RunnerMsg>,
    tx: mpsc::Sender<RunnerMsg>,
    net: mpsc::Sender<NetCommand>,
    pumps: HashMap<StreamId, mpsc::Sender<PumpCmd>>,
    origins: HashMap<StreamId, AbortHandle>,
    splices: HashMap<StreamId, PendingSplice>,
    /// Detaching stream → (side a of its splice, 0 for a / 1 for b).
    detaching: HashMap<StreamId, (StreamId, usize)>,
    tasks: JoinSet<()>,
    deferred: VecDeque<Input>,
    busy: bool,
    next_outside: u64,
    state_file: Option<PathBuf>,
    persist: Option<watch::Sender<Option<StateSnapshot>>>,
    metrics: Option<Arc<Metrics>>,
    /// Where the events it logs go for the control endpoint.
    events: Option<Arc<EventFeed>>,
    /// Origin connects and name lookups.
    sockets: Arc<dyn Sockets>,
    /// `Admit`/`Revoke` commands the network's full queue could not take
    /// yet, in order: sent before any later one, as soon as there is room.
    admissions: VecDeque<NetCommand>,
    /// The operator stated the reachability: autonat verdicts are not fed to the core.
    reachability_fixed: bool,
    /// (Gateways) answers owed to request tasks, streams on their way to them.
    ingress: Bridge,
    /// (Hubs) what the last `Input::Revoke` ended, for its answer.
    revoked_streams: usize,
}

impl fmt::Debug for NodeRunner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeRunner")
            .field("peer", &self.node.peer_id())
            .field("pumps", &self.pumps.len())
            .field("splices", &self.splices.len())
            .finish_non_exhaustive()
    }
}

impl NodeRunner {
    /// A runner for a node built from `config`; its randomness derives from
    /// `seed` (take it from the OS in production). Time starts now.
    ///
    /// The core's clock starts at zero now, so the runner tells it the Unix
    /// time of that zero (tickets expire by the wall clock) and, unless the
    /// config carries some, 32 bytes of OS randomness for its secrets.
    pub fn new(mut config: NodeConfig, seed: u64, net: mpsc::Sender<NetCommand>) -> NodeRunner {
        let start = Instant::now();
        config.wall_clock =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        config.entropy.get_or_insert_with(rand::random);
        let (tx, rx) = mpsc::channel(RUNNER_QUEUE);
        NodeRunner {
            node: Node::new(config, seed, CoreInstant::ZERO),
            start,
            rx,
            tx,
            net,
            pumps: HashMap::new(),
            origins: HashMap::new(),
            splices: HashMap::new(),
            detaching: HashMap::new(),
            tasks: JoinSet::new(),
            deferred: VecDeque::new(),
            busy: false,
            next_outside: 0,
            state_file: None,
            persist: None,
            metrics: None,
            events: None,
            sockets: Arc::new(TokioSockets),
            admissions: VecDeque::new(),
            reachability_fixed: false,
            ingress: Bridge::default(),
            revoked_streams: 0,
        }
    }

    /// Tells the core how reachable this node is, as the operator configured it, instead of
    /// waiting for autonat (whose later verdicts are then ignored); call before
    /// [`run`](Self::run).
    pub fn set_reachability(&mut self, reachability: Reachability) {
        self.reachability_fixed = true;
        self.input(Input::Reachability(reachability));
    }

    /// Connects to origins and resolves names through `sockets` instead of the
    /// operating system (simulated networks in tests).
    pub fn with_sockets(mut self, sockets: Arc<dyn Sockets>) -> NodeRunner {
        self.sockets = sockets;
        self
    }

    /// Where `Persist` outputs are written (atomically).
    pub fn with_state_file(mut self, path: PathBuf) -> NodeRunner {
        self.state_file = Some(path);
        self
    }

    /// Where core events and peer connections are counted; the gauges of what
    /// the node holds are read from this runner's status at each scrape.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> NodeRunner {
        // Weak: the endpoint must not keep a stopped runner's channel open.
        let runner = self.tx.downgrade();
        metrics.derive_from(Box::new(move || {
            let runner = runner.clone();
            Box::pin(async move {
                let (reply, answer) = oneshot::channel();
                runner.upgrade()?.send(RunnerMsg::Status(reply)).await.ok()?;
                answer.await.ok().map(|status| status.snapshot())
            })
        }));
        self.metrics = Some(metrics);
        self
    }

    /// Where the events it logs are published for the control endpoint
    /// (its `events` stream and `status`'s recent warnings).
    pub fn with_events(mut self, feed: Arc<EventFeed>) -> NodeRunner {
        self.events = Some(feed);
        self
    }

    /// Feeds state saved by an earlier run; call once, before [`run`](Self::run).
    pub fn restore(&mut self, snapshot: StateSnapshot) {
        self.input(Input::Restore(snapshot));
    }

    /// A sender into the runner's event channel (for listeners, the network, tests).
    pub fn sender(&self) -> mpsc::Sender<RunnerMsg> {
        self.tx.clone()
    }

    /// Runs until [`RunnerMsg::Shutdown`]; aborts every stream and task on the way out.
    pub async fn run(mut self) {
        if let Some(path) = self.state_file.clone() {
            let (tx, rx) = watch::channel(None);
            self.persist = Some(tx);
            self.tasks.spawn(persister(path, rx));
        }
        self.busy = true;
        self.drain();
        self.flush_deferred();
        let sleep = tokio::time::sleep_until(self.start);
        tokio::pin!(sleep);
        enum Step {
            Msg(Option<RunnerMsg>),
            Timer,
            Admission,
        }
        loop {
            let deadline = self
                .node
                .poll_timeout()
                .and_then(|(at, _)| self.start.checked_add(Duration::from_micros(at.as_micros())));
            if let Some(at) = deadline {
                sleep.as_mut().reset(at);
            }
            let step = tokio::select! {
                msg = self.rx.recv() => Step::Msg(msg),
                () = &mut sleep, if deadline.is_some() => Step::Timer,
                permit = self.net.reserve(), if !self.admissions.is_empty() => {
                    match (permit, self.admissions.pop_front()) {
                        (Ok(permit), Some(cmd)) => permit.send(cmd),
                        // The network is gone: nobody is left to tell.
                        _ => self.admissions.clear(),
                    }
                    Step::Admission
                }
            };
            match step {
                Step::Msg(None | Some(RunnerMsg::Shutdown)) => break,
                Step::Msg(Some(msg)) => self.on_msg(msg),
                Step::Timer => {
                    self.busy = true;
                    let now = self.now();
                    self.node.handle_timeout(now);
                    self.drain();
                    self.flush_deferred();
                }
                Step::Admission => {}
            }
            while self.tasks.try_join_next().is_some() {}
        }
        self.tasks.shutdown().await;
    }

    /// The core's clock: microseconds since the runner started.
    fn now(&self) -> CoreInstant {
        CoreInstant::from_micros(
            u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX),
        )
    }

    /// Feeds an input and drains; if called while draining, queues it for after.
    fn input(&mut self, input: Input) {
        self.deferred.push_back(input);
        if self.busy {
            return;
        }
        self.busy = true;
        self.flush_deferred();
    }

    fn flush_deferred(&mut self) {
        while let Some(input) = self.deferred.pop_front() {
            let now = self.now();
            self.node.handle_input(now, input);
            self.drain();
        }
        self.busy = false;
    }

    fn drain(&mut self) {
        while let Some(out) = self.node.poll_output() {
            self.execute(out);
        }
    }

    fn next_stream(&mut self) -> StreamId {
        self.next_outside += 1;
        StreamId::outside(self.next_outside)
    }

    fn spawn_pump(&mut self, stream: StreamId, io: BoxStream) {
        let (tx, rx) = mpsc::channel(PUMP_QUEUE);
        self.pumps.insert(stream, tx);
        self.tasks.spawn(pump::run(stream, io, rx, self.tx.clone()));
    }

    fn on_msg(&mut self, msg: RunnerMsg) {
        match msg {
            RunnerMsg::Net(event) => self.on_net(event),
            RunnerMsg::AppAccepted { listener, source, io } => {
                let stream = self.next_stream();
                self.spawn_pump(stream, io);
                self.input(Input::AppAccepted { listener, stream, source });
            }
            RunnerMsg::Pump(stream, event) if self.ingress.is_handing(stream) => {
                self.ingress.on_pump(stream, event);
            }
            RunnerMsg::Pump(stream, PumpEvent::Data(data)) => {
                if let Some(&(key, side)) = self.detaching.get(&stream) {
                    if let Some(p) = self.splices.get_mut(&key) {
                        if let Some(buf) = p.prefix.get_mut(side) {
                            buf.extend_from_slice(&data);
                        }
                    }
                } else if self.pumps.contains_key(&stream) {
                    self.input(Input::StreamData { stream, data });
                }
            }
            RunnerMsg::Pump(stream, PumpEvent::Closed(how)) => {
                if let Some(&(key, side)) = self.detaching.get(&stream) {
                    if let Some(p) = self.splices.get_mut(&key) {
                        if how == Close::Reset {
                            // The pump ended with the stream: no Detached will come.
                            set(&mut p.failed, side, true);
                            set(&mut p.waiting, side, false);
                            self.detaching.remove(&stream);
                            self.maybe_start(key);
                        } else {
                            set(&mut p.eof, side, true);
                        }
                    }
                } else if self.pumps.contains_key(&stream) {
                    if how == Close::Reset {
                        self.pumps.remove(&stream);
                    }
                    self.input(Input::StreamClosed { stream, how });
                }
            }
            RunnerMsg::Pump(stream, PumpEvent::Detached { io, state }) => {
                let Some((key, side)) = self.detaching.remove(&stream) else { return };
                if let Some(p) = self.splices.get_mut(&key) {
                    if let Some(slot) = p.io.get_mut(side) {
                        *slot = Some(io);
                    }
                    if state.read_eof {
                        set(&mut p.eof, side, true);
                    }
                    set(&mut p.waiting, side, false);
                }
                self.maybe_start(key);
            }
            RunnerMsg::Resolved { query, result } => self.input(Input::Resolved { query, result }),
            RunnerMsg::OriginDone { stream, result } => {
                if self.origins.remove(&stream).is_none() {
                    return; // the core closed it meanwhile; dropping aborts
                }
                match result {
                    Ok(io) => {
                        self.spawn_pump(stream, io);
                        self.input(Input::OriginConnected { stream });
                    }
                    Err(status) => self.input(Input::OriginFailed { stream, status }),
                }
            }
            RunnerMsg::SpliceDone { a, b, report } => {
                tracing::debug!(%a, %b, ?report, "splice ended");
                self.input(Input::SpliceEnded { a, b, report });
            }
            RunnerMsg::Ingress(IngressMsg::Request { request, listener, client, head, reply }) => {
                self.ingress.wait(request, reply);
                self.input(Input::IngressRequest { request, listener, client, head });
            }
            RunnerMsg::Ingress(IngressMsg::Done { request, end }) => {
                self.ingress.done(request);
                self.input(Input::IngressDone { request, end });
            }
            RunnerMsg::Status(reply) => {
                let conns = self.node.peer_connections();
                let _ = reply.send(RunnerStatus {
                    resources: self.node.resources(),
                    known_exits: self.node.known_exits(),
                    registered_hubs: self.node.registered_hubs(),
                    pumps: self.pumps.len(),
                    pending_splices: self.splices.len(),
                    agent_streams_open: self.node.agent_streams_open(),
                    directory_exits: self.node.directory_entries(Role::Exit),
                    directory_agents: self.node.directory_entries(Role::Agent),
                    direct_conns: conns.direct,
                    relayed_conns: conns.relayed,
                    reservations: self.node.reservations_held(),
                    admitted_peers: self.node.admitted_peers(),
                    agents_known: self.node.known_agents(),
                    forwards_open: self.ingress.forwards(),
                });
            }
            RunnerMsg::Inspect(reply) => {
                let status = self.node.status(self.now());
                let _ = reply.send(Inspection { status, uptime: self.start.elapsed() });
            }
            RunnerMsg::Reconfigure(config, applied) => {
                self.input(Input::Reconfigure(config));
                let _ = applied.send(());
            }
            RunnerMsg::Revoke(what, answer) => {
                self.revoked_streams = 0;
                self.input(Input::Revoke(what));
                let _ = answer.send(self.revoked_streams);
            }
            RunnerMsg::Shutdown => {}
        }
    }

    fn on_net(&mut self, event: NetEvent) {
        if let Some(m) = &self.metrics {
            m.observe_net(&event);
        }
        match event {
            NetEvent::PeerConnected { peer, conn, path, limit } => {
                self.input(Input::PeerConnected { peer, conn, path, limit })
            }
            NetEvent::PeerDisconnected { peer, conn } => {
                self.input(Input::PeerDisconnected { peer, conn })
            }
            NetEvent::ReservationAccepted { hub } => {
                self.input(Input::ReservationAccepted { hub, expires_in: None })
            }
            NetEvent::ReservationFailed { hub } => self.input(Input::ReservationFailed { hub }),
            NetEvent::ReservationLost { hub } => self.input(Input::ReservationLost { hub }),
            NetEvent::HolePunchFailed { peer } => self.input(Input::HolePunchFailed { peer }),
            // Metrics and logs only: the core hears the answer to its own `HolePunch`.
            NetEvent::HolePunch { .. } => {}
            NetEvent::ObservedAddress { ip, by } => self.input(Input::OwnAddress { ip, by }),
            NetEvent::Reachability(r) => {
                if self.reachability_fixed {
                    tracing::debug!(?r, "autonat verdict ignored: reachability is configured");
                } else {
                    self.input(Input::Reachability(r))
                }
            }
            NetEvent::DialFailed { peer } => self.input(Input::DialFailed { peer }),
            NetEvent::StreamOpened { stream, io } => {
                self.spawn_pump(stream, io);
                self.input(Input::StreamOpened { stream });
            }
            NetEvent::StreamRefused { stream } => self.input(Input::StreamRefused { stream }),
            NetEvent::InboundStream { peer, protocol, io } => {
                let stream = self.next_stream();
                self.spawn_pump(stream, io);
                self.input(Input::InboundStream { stream, peer, protocol });
            }
        }
    }

    fn execute(&mut self, out: Output) {
        match out {
            Output::IngressRespond { request, response } => self.ingress.respond(request, response),
            Output::IngressForward { request, stream, agent, prefix, .. } => {
                // Like a splice's streams: the pump hands the stream back
                // behind whatever it read meanwhile.
                let detaching = self
                    .pumps
                    .remove(&stream)
                    .is_some_and(|pump| pump.try_send(PumpCmd::Detach).is_ok());
                self.ingress.forward(request, stream, agent, &prefix, detaching);
            }
            Output::Transmit { stream, data } => {
                let Some(pump) = self.pumps.get(&stream) else { return };
                if pump.try_send(PumpCmd::Write(data)).is_err() {
                    // Stuck or gone: abort rather than silently drop bytes.
                    self.pumps.remove(&stream);
                    self.input(Input::StreamClosed { stream, how: Close::Reset });
                }
            }
            Output::Close { stream, how } => {
                if let Some(pump) = self.pumps.remove(&stream) {
                    let _ = pump.try_send(PumpCmd::Close(how));
                } else if let Some(task) = self.origins.remove(&stream) {
                    task.abort();
                }
            }
            Output::Dial { peer, addrs, via } => {
                if self.net.try_send(NetCommand::Dial { peer, addrs, via }).is_err() {
                    self.input(Input::DialFailed { peer });
                }
            }
            Output::OpenStream { stream, peer, conn, protocol } => {
                let cmd = NetCommand::OpenStream { stream, peer, conn, protocol };
                if self.net.try_send(cmd).is_err() {
                    self.input(Input::StreamRefused { stream });
                }
            }
            Output::Reserve { hub } => {
                if self.net.try_send(NetCommand::Reserve { hub }).is_err() {
                    self.input(Input::ReservationFailed { hub });
                }
            }
            Output::Unreserve { hub } => {
                if self.net.try_send(NetCommand::Unreserve { hub }).is_err() {
                    tracing::warn!(%hub, "network congested: reservation not dropped");
                }
            }
            Output::HolePunch { peer } => {
                if self.net.try_send(NetCommand::HolePunch { peer }).is_err() {
                    self.input(Input::HolePunchFailed { peer });
                }
            }
            Output::Resolve { query, name } => {
                let tx = self.tx.clone();
                let lookup = self.sockets.resolve(name);
                self.tasks.spawn(async move {
                    let result = lookup.await;
                    let _ = tx.send(RunnerMsg::Resolved { query, result }).await;
                });
            }
            Output::ConnectOrigin { stream, addr } => {
                let tx = self.tx.clone();
                let connect = self.sockets.connect(addr);
                let task = self.tasks.spawn(async move {
                    let result = connect.await.map_err(|e| connect_status(&e));
                    let _ = tx.send(RunnerMsg::OriginDone { stream, result }).await;
                });
                self.origins.insert(stream, task);
            }
            Output::Splice { a, b, a_to_b_prefix, b_to_a_prefix, limits } => {
                let mut p = PendingSplice {
                    ids: [a, b],
                    prefix: [
                        BytesMut::from(&a_to_b_prefix[..]),
                        BytesMut::from(&b_to_a_prefix[..]),
                    ],
                    io: [None, None],
                    eof: [false, false],
                    failed: [false, false],
                    waiting: [false, false],
                    limits,
                };
                for (side, stream) in [a, b].into_iter().enumerate() {
                    let detached = self
                        .pumps
                        .remove(&stream)
                        .is_some_and(|pump| pump.try_send(PumpCmd::Detach).is_ok());
                    if detached {
                        set(&mut p.waiting, side, true);
                        self.detaching.insert(stream, (a, side));
                    } else {
                        set(&mut p.failed, side, true);
                    }
                }
                self.splices.insert(a, p);
                self.maybe_start(a);
            }
            Output::Persist(snapshot) => {
                if let Some(persist) = &self.persist {
                    persist.send_replace(Some(snapshot));
                }
            }
            Output::Admit { peer } => self.send_admission(NetCommand::Admit { peer }),
            Output::Revoke { peer } => self.send_admission(NetCommand::Revoke { peer }),
            Output::Event(event) => {
                if let Event::Revoked { streams_ended } = event {
                    self.revoked_streams = streams_ended;
                }
                let (level, note) = super::event_log::log_event(&event);
                if let Some(feed) = &self.events {
                    feed.publish(level, &event, note);
                }
                if let Some(m) = &self.metrics {
                    m.observe(&event);
                }
            }
        }
    }

    /// Passes an admission change to the hub's relay. Unlike a dial, it
    /// cannot fail back to the core: if the queue is full it waits (in
    /// order) for room, so a revocation is never lost or overtaken.
    fn send_admission(&mut self, cmd: NetCommand) {
        if self.admissions.is_empty() {
            match self.net.try_send(cmd) {
                Err(mpsc::error::TrySendError::Full(cmd)) => self.admissions.push_back(cmd),
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        } else {
            self.admissions.push_back(cmd);
        }
    }

    /// Starts a pending splice once both sides are back (or reports it failed).
    fn maybe_start(&mut self, key: StreamId) {
        let ready = self.splices.get(&key).is_some_and(|p| p.waiting == [false, false]);
        if !ready {
            return;
        }
        let Some(p) = self.splices.remove(&key) else { return };
        let [a, b] = p.ids;
        let [io_a, io_b] = p.io;
        let [pre_a, pre_b] = p.prefix;
        match (io_a, io_b, p.failed) {
            (Some(io_a), Some(io_b), [false, false]) => {
                let tx = self.tx.clone();
                let (limits, eof) = (p.limits, p.eof);
                self.tasks.spawn(async move {
                    let report =
                        splice_from(io_a, io_b, pre_a.freeze(), pre_b.freeze(), limits, eof).await;
                    let _ = tx.send(RunnerMsg::SpliceDone { a, b, report }).await;
                });
            }
            // A side died before the hand-over: abort the other (dropping it) and report.
            _ => {
                let how = if p.failed[0] { SpliceEnd::ResetA } else { SpliceEnd::ResetB };
                let report = SpliceReport { a_to_b: 0, b_to_a: 0, how };
                self.input(Input::SpliceEnded { a, b, report });
            }
        }
    }
}

fn set(flags: &mut [bool; 2], side: usize, value: bool) {
    if let Some(f) = flags.get_mut(side) {
        *f = value;
    }
}

/// Maps a failed origin connect to the status the app is told.
pub fn connect_status(e: &io::Error) -> Status {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => Status::ConnectionRefused,
        io::ErrorKind::HostUnreachable => Status::HostUnreachable,
        io::ErrorKind::NetworkUnreachable => Status::NetworkUnreachable,
        io::ErrorKind::TimedOut => Status::TtlExpired,
        _ => Status::GeneralFailure,
    }
}

/// Writes the newest snapshot whenever it changes, one write at a time, so an
/// older snapshot can never overwrite a newer one.
async fn persister(path: PathBuf, mut rx: watch::Receiver<Option<StateSnapshot>>) {
    while rx.changed().await.is_ok() {
        let Some(snapshot) = rx.borrow_and_update().clone() else { continue };
        let path = path.clone();
        let written = tokio::task::spawn_blocking(move || state::save(&path, &snapshot)).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not persist state"),
            Err(e) => tracing::warn!(error = %e, "state writer failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshproxy_core::config::{ExitConfig, Limits, Timeouts};
    use meshproxy_core::ids::PeerId;
    use meshproxy_core::io::Protocol;
    use meshproxy_core::policy::ExitPolicyConfig;
    use meshproxy_core::record::Attrs;
    use meshproxy_core::target::TargetAddr;
    use meshproxy_core::wire::frame::Decoded;
    use meshproxy_core::wire::proxy::{decode_response, encode_request, ConnectRequest};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn exit_config() -> NodeConfig {
        NodeConfig {
            peer_id: PeerId::from_u64(2),
            hubs: Vec::new(),
            hub: None,
            exit: Some(ExitConfig {
                policy: ExitPolicyConfig {
                    allow: vec!["127.0.0.0/8".parse().expect("valid rule")],
                    ..ExitPolicyConfig::default()
                },
                own_addrs: Vec::new(),
                attrs: Attrs::default(),
                addrs: Vec::new(),
                capacity: 4,
                credential: meshproxy_core::admission::Credential::new("exit", b"t"),
                relay: meshproxy_core::config::RelayMode::default(),
                // No hub: these tests drive the exit directly.
                open: true,
            }),
            client: None,
            gateway: None,
            agent: None,
            timeouts: Timeouts::default(),
            limits: Limits::default(),
            relay: meshproxy_core::config::RelayConfig::default(),
            wall_clock: std::time::Duration::ZERO,
            entropy: None,
        }
    }

    async fn next(r: &mut NodeRunner) -> RunnerMsg {
        r.rx.recv().await.expect("the runner holds a sender")
    }

    /// The core reads no clock and no OS randomness: the runner hands it the
    /// Unix time of its clock's zero (tickets expire by it) and 32 bytes of
    /// OS entropy for challenge nonces, fresh for every node.
    #[tokio::test]
    async fn the_runner_gives_the_core_the_wall_clock_and_fresh_entropy() {
        let before =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970");
        let (net, _) = mpsc::channel(1);
        let a = NodeRunner::new(exit_config(), 1, net.clone());
        let b = NodeRunner::new(exit_config(), 1, net);
        let (a, b) = (a.node.config(), b.node.config());
        assert!(a.wall_clock >= before && a.wall_clock - before < Duration::from_secs(60));
        assert!(a.entropy.is_some() && b.entropy.is_some());
        assert_ne!(a.entropy, b.entropy, "same seed, fresh entropy per node");
    }

    /// The exact race the detach protocol exists for: the peer's bytes are read
    /// by the pump after the core decided to splice but before the pump got
    /// `Detach`. The core would ignore them; the runner must put them into the
    /// splice prefix.
    #[tokio::test]
    async fn bytes_read_during_the_hand_over_go_into_the_splice_prefix() {
        let echo = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let origin = echo.local_addr().expect("addr");
        tokio::spawn(async move {
            if let Ok((mut s, _)) = echo.accept().await {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            }
        });
        tokio::time::timeout(Duration::from_secs(10), async {
            let (net_tx, _net_rx) = mpsc::channel(8);
            let mut r = NodeRunner::new(exit_config(), 1, net_tx);
            let (mine, mut peer) = tokio::io::duplex(64 * 1024);
            let inbound = NetEvent::InboundStream {
                peer: PeerId::from_u64(9),
                protocol: Protocol::Proxy,
                io: Box::new(mine),
            };
            r.on_msg(RunnerMsg::Net(inbound));
            let mut req = Vec::new();
            encode_request(&ConnectRequest::new(TargetAddr::Ip(origin), None), &mut req);
            peer.write_all(&req).await.expect("write request");
            let connected = loop {
                let m = next(&mut r).await;
                if matches!(m, RunnerMsg::OriginDone { .. }) {
                    break m;
                }
                r.on_msg(m);
            };
            // Held back: the peer's next bytes are queued before the splice.
            peer.write_all(b"late bytes").await.expect("write");
            let late = next(&mut r).await;
            assert!(matches!(late, RunnerMsg::Pump(_, PumpEvent::Data(_))), "{late:?}");
            r.on_msg(connected);
            assert_eq!(r.detaching.len(), 2, "both pumps are detaching");
            r.on_msg(late);
            while !r.detaching.is_empty() {
                let m = next(&mut r).await;
                r.on_msg(m);
            }
            assert!(r.splices.is_empty(), "the splice started");
            // The response, then the echo of the late bytes.
            let mut got = Vec::new();
            let mut buf = [0u8; 256];
            while !got.ends_with(b"late bytes") {
                let n = peer.read(&mut buf).await.expect("read");
                assert!(n > 0, "stream ended early: {got:?}");
                got.extend_from_slice(&buf[..n]);
            }
            let decoded = decode_response(&got).expect("a valid response frame");
            let Decoded::Complete { msg, consumed } = decoded else { panic!("partial: {got:?}") };
            assert_eq!(msg.status, Status::Succeeded);
            assert_eq!(got.get(consumed..), Some(&b"late bytes"[..]), "nothing else, nothing lost");
            peer.shutdown().await.expect("shutdown");
            let done = next(&mut r).await;
            let RunnerMsg::SpliceDone { report, .. } = &done else { panic!("{done:?}") };
            assert_eq!(report.how, SpliceEnd::Clean);
            assert_eq!(report.a_to_b, 10, "the late bytes went to the origin");
            r.on_msg(done);
            assert_eq!(r.node.resources().sessions, 0);
        })
        .await
        .expect("in time");
    }
}
