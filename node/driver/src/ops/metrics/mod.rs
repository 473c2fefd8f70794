//! Prometheus metrics: [`Metrics`], counted from the core's [`Event`]s and the
//! network's reports, and (in [`http`]) [`MetricsServer`], the HTTP endpoint
//! serving them as `GET /metrics` in the OpenMetrics text format.
//!
//! Counters count events. The gauges of what the node holds now (peer
//! connections by path, relay reservations, hubs registered at, directory
//! entries, admitted peers) are not kept in step with events here: each scrape reads them
//! from the node itself ([`Snapshot`], asked for through the probe
//! [`Metrics::derive_from`] installs), so there is no second copy of the
//! node's tables to drift from the first.
//!
//! Every label set is a small closed set of snake_case strings (roles,
//! reasons, directions, states): peer ids and addresses never become labels,
//! so the number of series stays fixed however many peers come and go.

use crate::p2p::{HolePunchStage, NetEvent};
use futures::future::BoxFuture;
use meshproxy_core::admission::Refusal;
use meshproxy_core::ids::PeerId;
use meshproxy_core::io::{Event, FailReason, SpliceEnd};
use meshproxy_core::selection::breaker::BreakerState;
use meshproxy_core::target::Status;
use meshproxy_core::ticket::TicketRefusal;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

mod agent;
pub mod http;
pub mod ingress;

use agent::AgentMetrics;

pub use http::{MetricsServer, ServeLimits};
pub use ingress::IngressMetrics;

/// The content type of a scrape: the registry is encoded as OpenMetrics 1.0
/// text (it ends with `# EOF`), which Prometheus negotiates and parses.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds (seconds) of the session setup histogram: from a loopback
/// exit (well under a millisecond) to a slow WAN path with retries (seconds).
pub const SETUP_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// How many exits the breaker gauges keep track of individually. The core
/// bounds the exits it knows far lower; this only keeps the bookkeeping
/// bounded if it ever did not (an exit beyond it is still counted by the
/// transition counter, not the gauges).
pub const MAX_TRACKED: usize = 65_536;

/// How long a scrape waits for the node's [`Snapshot`]; a node too busy to
/// answer in time is scraped with the gauges it showed last.
pub const SNAPSHOT_WAIT: Duration = Duration::from_secs(1);

/// What the node holds now, read at each scrape for the gauges of the same
/// names (the runner answers it from the core: see `RunnerStatus`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Peer connections open now that run directly (`peer_connections{path="direct"}`).
    pub direct_conns: usize,
    /// Peer connections open now through a hub's relay (`peer_connections{path="relayed"}`).
    pub relayed_conns: usize,
    /// (Exits) relay reservations held now (`relay_reservations`).
    pub reservations: usize,
    /// Hubs this node is registered at now (`hubs_registered`).
    pub registered_hubs: usize,
    /// (Hubs) exits in the directory now (`directory_exits`).
    pub directory_exits: usize,
    /// (Hubs) agents in the directory now (`directory_agents`).
    pub directory_agents: usize,
    /// (Hubs) peers admitted now (`admitted_peers`).
    pub admitted_peers: usize,
    /// (Gateways) agents known now (`ingress_agents_known`).
    pub agents_known: usize,
    /// (Gateways) requests carried by an agent's stream now (`ingress_forwards_open`).
    pub forwards_open: usize,
    /// (Agents) ingress streams spliced to an origin now (`agent_streams_open`).
    pub agent_streams_open: usize,
}

/// Asks the node for its [`Snapshot`]; `None` when it cannot answer (it stopped).
pub type SnapshotProbe = Box<dyn Fn() -> BoxFuture<'static, Option<Snapshot>> + Send + Sync>;

/// The label of a role that holds sessions.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabels {
    role: &'static str,
}

/// The label of a failed client session.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// The label of a byte counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

/// The label of how a spliced session ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HowLabels {
    how: &'static str,
}

/// The label of an exit's failure to reach a destination.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

/// The label of a peer connection's path.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathLabels {
    path: &'static str,
}

/// The label of a circuit breaker state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

const CLIENT: &str = "client";
const EXIT: &str = "exit";
const AGENT: &str = "agent";

/// How a peer connection reaches the peer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ConnPath {
    /// A direct transport connection (TCP or QUIC).
    Direct,
    /// Through a relay (a `/p2p-circuit` address).
    Relayed,
}

impl ConnPath {
    /// The `path` label value.
    pub fn label(self) -> &'static str {
        match self {
            ConnPath::Direct => "direct",
            ConnPath::Relayed => "relayed",
        }
    }
}

/// The `reason` label of a failed client session; stable across releases
/// because dashboards and alerts match on it.
pub fn fail_reason_label(reason: FailReason) -> &'static str {
    match reason {
        FailReason::Handshake => "handshake",
        FailReason::HandshakeTimeout => "handshake_timeout",
        FailReason::AppClosed => "app_closed",
        FailReason::NoExit => "no_exit",
        FailReason::StickyUnavailable => "sticky_unavailable",
        FailReason::Destination => "destination",
        FailReason::ExitFailed => "exit_failed",
        FailReason::Timeout => "timeout",
        FailReason::SourceLimit => "source_limit",
        FailReason::Overloaded => "overloaded",
        FailReason::NotAdmitted => "not_admitted",
    }
}

/// The `status` label of a SOCKS5-style status.
pub fn status_label(status: Status) -> &'static str {
    match status {
        Status::Succeeded => "succeeded",
        Status::GeneralFailure => "general_failure",
        Status::NotAllowed => "not_allowed",
        Status::NetworkUnreachable => "network_unreachable",
        Status::HostUnreachable => "host_unreachable",
        Status::ConnectionRefused => "connection_refused",
        Status::TtlExpired => "ttl_expired",
        Status::CommandNotSupported => "command_not_supported",
        Status::AddressTypeNotSupported => "address_type_not_supported",
    }
}

/// The `state` label of a circuit breaker state.
pub fn breaker_label(state: BreakerState) -> &'static str {
    match state {
        BreakerState::Closed { .. } => "closed",
        BreakerState::Open { .. } => "open",
        BreakerState::HalfOpen { .. } => "half_open",
    }
}

/// The `how` label of a finished splice. Which side reset is not kept: side
/// `a` is the app on a client but the peer stream on an exit, so the split
/// would mean different things on different nodes.
fn how_label(how: SpliceEnd) -> &'static str {
    match how {
        SpliceEnd::Clean => "clean",
        SpliceEnd::ResetA | SpliceEnd::ResetB => "reset",
        SpliceEnd::IdleTimeout => "idle_timeout",
    }
}

const FAIL_REASONS: [FailReason; 11] = [
    FailReason::Handshake,
    FailReason::HandshakeTimeout,
    FailReason::AppClosed,
    FailReason::NoExit,
    FailReason::StickyUnavailable,
    FailReason::Destination,
    FailReason::ExitFailed,
    FailReason::Timeout,
    FailReason::Overloaded,
    FailReason::SourceLimit,
    FailReason::NotAdmitted,
];

const FAILURE_STATUSES: [Status; 8] = [
    Status::GeneralFailure,
    Status::NotAllowed,
    Status::NetworkUnreachable,
    Status::HostUnreachable,
    Status::ConnectionRefused,
    Status::TtlExpired,
    Status::CommandNotSupported,
    Status::AddressTypeNotSupported,
];

const BREAKER_STATES: [&str; 3] = ["closed", "open", "half_open"];

/// The node's metrics. Shared (`Arc`) between the runner, which feeds it with
/// [`observe`](Self::observe) and [`observe_net`](Self::observe_net) and
/// answers its [`Snapshot`] probe, and the endpoint, which
/// [`refresh`](Self::refresh)es and [`encode`](Self::encode)s it per scrape.
pub struct Metrics {
    registry: Registry,
    app_connections: Counter,
    sessions_open: Family<RoleLabels, Gauge>,
    sessions_established: Family<RoleLabels, Counter>,
    sessions_failed: Family<ReasonLabels, Counter>,
    sessions_closed: Family<HowLabels, Counter>,
    bytes: Family<DirectionLabels, Counter>,
    setup: Histogram,
    exit_attempt_failures: Counter,
    exit_denials: Counter,
    exit_connect_failures: Family<StatusLabels, Counter>,
    peer_connections: Family<PathLabels, Gauge>,
    peer_connections_opened: Family<PathLabels, Counter>,
    peer_protocol_errors: Counter,
    breakers: Family<StateLabels, Gauge>,
    breaker_transitions: Family<StateLabels, Counter>,
    hub_registrations: Counter,
    hub_links_lost: Counter,
    hub_refusals: Counter,
    hubs_registered: Gauge,
    directory_exits: Gauge,
    directory_agents: Gauge,
    directory_registrations: Counter,
    directory_removals: Counter,
    admission_denials: Family<ReasonLabels, Counter>,
    exit_not_admitted: Family<ReasonLabels, Counter>,
    admitted_peers: Gauge,
    hole_punch_attempts: Counter,
    hole_punch_successes: Counter,
    hole_punch_failures: Counter,
    relay_reservations: Gauge,
    relay_reservations_accepted: Counter,
    relay_reservations_failed: Counter,
    relay_reservations_lost: Counter,
    ingress: Arc<IngressMetrics>,
    agent: AgentMetrics,
    /// The state each exit's breaker entered last, for the per-state gauge.
    /// The core's breakers cannot stand in for it: the gauge counts only
    /// exits whose breaker has tripped at least once, which a closed breaker
    /// does not remember.
    breaker_states: Mutex<BTreeMap<PeerId, &'static str>>,
    /// Held while the open-sessions gauges are read and changed together.
    sessions: Mutex<()>,
    /// Where the gauges of what the node holds are read (see [`Snapshot`]).
    probe: OnceLock<SnapshotProbe>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every metric and every label value registered at zero,
    /// so each series exists from the first scrape (`rate()` and alerts need
    /// a starting point, not a series that appears on the first failure).
    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Registry::with_prefix("meshproxy"),
            app_connections: Counter::default(),
            sessions_open: Family::default(),
            sessions_established: Family::default(),
            sessions_failed: Family::default(),
            sessions_closed: Family::default(),
            bytes: Family::default(),
            setup: Histogram::new(SETUP_BUCKETS),
            exit_attempt_failures: Counter::default(),
            exit_denials: Counter::default(),
            exit_connect_failures: Family::default(),
            peer_connections: Family::default(),
            peer_connections_opened: Family::default(),
            peer_protocol_errors: Counter::default(),
            breakers: Family::default(),
            breaker_transitions: Family::default(),
            hub_registrations: Counter::default(),
            hub_links_lost: Counter::default(),
            hub_refusals: Counter::default(),
            hubs_registered: Gauge::default(),
            directory_exits: Gauge::default(),
            directory_agents: Gauge::default(),
            directory_registrations: Counter::default(),
            directory_removals: Counter::default(),
            admission_denials: Family::default(),
            exit_not_admitted: Family::default(),
            admitted_peers: Gauge::default(),
            hole_punch_attempts: Counter::default(),
            hole_punch_successes: Counter::default(),
            hole_punch_failures: Counter::default(),
            relay_reservations: Gauge::default(),
            relay_reservations_accepted: Counter::default(),
            relay_reservations_failed: Counter::default(),
            relay_reservations_lost: Counter::default(),
            ingress: Arc::default(),
            agent: AgentMetrics::new(),
            breaker_states: Mutex::new(BTreeMap::new()),
            sessions: Mutex::new(()),
            probe: OnceLock::new(),
        };
        for role in [CLIENT, EXIT, AGENT] {
            drop(m.sessions_open.get_or_create(&RoleLabels { role }));
            drop(m.sessions_established.get_or_create(&RoleLabels { role }));
        }
        for reason in Refusal::ALL {
            drop(m.admission_denials.get_or_create(&ReasonLabels { reason: reason.name() }));
        }
        for why in TicketRefusal::ALL {
            drop(m.exit_not_admitted.get_or_create(&ReasonLabels { reason: why.name() }));
        }
        for reason in FAIL_REASONS {
            drop(
                m.sessions_failed
                    .get_or_create(&ReasonLabels { reason: fail_reason_label(reason) }),
            );
        }
        for how in ["clean", "reset", "idle_timeout"] {
            drop(m.sessions_closed.get_or_create(&HowLabels { how }));
        }
        for direction in ["up", "down"] {
            drop(m.bytes.get_or_create(&DirectionLabels { direction }));
        }
        for status in FAILURE_STATUSES {
            drop(
                m.exit_connect_failures
                    .get_or_create(&StatusLabels { status: status_label(status) }),
            );
        }
        for path in [ConnPath::Direct, ConnPath::Relayed] {
            drop(m.peer_connections.get_or_create(&PathLabels { path: path.label() }));
            drop(m.peer_connections_opened.get_or_create(&PathLabels { path: path.label() }));
        }
        for state in BREAKER_STATES {
            drop(m.breakers.get_or_create(&StateLabels { state }));
            drop(m.breaker_transitions.get_or_create(&StateLabels { state }));
        }
        m.register()
    }

    fn register(mut self) -> Metrics {
        let r = &mut self.registry;
        self.ingress.register(r);
        r.register(
            "app_connections",
            "App connections accepted on client listeners",
            self.app_connections.clone(),
        );
        r.register(
            "sessions_open",
            "Spliced sessions now open, by role (client: app to exit; exit: peer to origin; agent: gateway to service)",
            self.sessions_open.clone(),
        );
        r.register(
            "sessions_established",
            "Sessions spliced, by role",
            self.sessions_established.clone(),
        );
        r.register(
            "sessions_failed",
            "Client sessions that failed before they were spliced, by reason",
            self.sessions_failed.clone(),
        );
        r.register(
            "sessions_closed",
            "Spliced sessions that ended (either role), by how they ended",
            self.sessions_closed.clone(),
        );
        r.register_with_unit(
            "session",
            "Bytes carried by spliced sessions (either role), counted when a session ends; up is app or peer to the far side, down is back",
            Unit::Bytes,
            self.bytes.clone(),
        );
        r.register_with_unit(
            "session_setup",
            "Client session setup time, from app accept to the exit's success answer",
            Unit::Seconds,
            self.setup.clone(),
        );
        r.register(
            "exit_attempt_failures",
            "Client attempts at an exit that failed (another exit may then be tried)",
            self.exit_attempt_failures.clone(),
        );
        r.register(
            "exit_denials",
            "Destinations this exit refused by policy (nothing was dialed)",
            self.exit_denials.clone(),
        );
        r.register(
            "exit_connect_failures",
            "Allowed destinations this exit could not reach, by the status sent back",
            self.exit_connect_failures.clone(),
        );
        r.register(
            "peer_connections",
            "Peer-to-peer connections now open, by path",
            self.peer_connections.clone(),
        );
        r.register(
            "peer_connections_opened",
            "Peer-to-peer connections opened, by path",
            self.peer_connections_opened.clone(),
        );
        r.register(
            "peer_protocol_errors",
            "Protocol violations by peers (their stream was reset)",
            self.peer_protocol_errors.clone(),
        );
        r.register(
            "breakers",
            "Exits by circuit breaker state (exits whose breaker has never tripped are not counted)",
            self.breakers.clone(),
        );
        r.register(
            "breaker_transitions",
            "Circuit breaker transitions, by the state entered",
            self.breaker_transitions.clone(),
        );
        r.register(
            "hub_registrations",
            "Registrations of this node accepted by a hub",
            self.hub_registrations.clone(),
        );
        r.register(
            "hub_links_lost",
            "Links to a hub lost after being ready (the link retries)",
            self.hub_links_lost.clone(),
        );
        r.register(
            "hub_refusals",
            "Admissions of this node a hub refused (wrong credential, or a key without this role)",
            self.hub_refusals.clone(),
        );
        r.register(
            "hubs_registered",
            "Hubs this node is registered at now",
            self.hubs_registered.clone(),
        );
        r.register(
            "directory_exits",
            "(Hub) exits in the directory now",
            self.directory_exits.clone(),
        );
        r.register(
            "directory_agents",
            "(Hub) agents in the directory now",
            self.directory_agents.clone(),
        );
        r.register(
            "directory_registrations",
            "(Hub) exit registrations accepted (re-registrations included)",
            self.directory_registrations.clone(),
        );
        r.register(
            "directory_removals",
            "(Hub) directory entries removed (expired, or their link closed)",
            self.directory_removals.clone(),
        );
        r.register(
            "admission_denials",
            "(Hub) hub streams refused before or at admission, by reason (the peer is told only \
             `authentication failed` for unknown_key and bad_proof)",
            self.admission_denials.clone(),
        );
        r.register(
            "exit_not_admitted",
            "(Exit) requests refused because the peer had no valid ticket from one of this \
             exit's hubs, by what was wrong (status 0x02; nothing was dialed)",
            self.exit_not_admitted.clone(),
        );
        r.register(
            "admitted_peers",
            "(Hub) peers admitted now (with an authenticated hub stream; they may use the relay)",
            self.admitted_peers.clone(),
        );
        r.register(
            "hole_punch_attempts",
            "Hole-punch attempts this node started on relayed connections (DCUtR, or a direct dial to the peer's addresses)",
            self.hole_punch_attempts.clone(),
        );
        r.register(
            "hole_punch_successes",
            "Hole-punch attempts that produced a direct connection",
            self.hole_punch_successes.clone(),
        );
        r.register(
            "hole_punch_failures",
            "Hole-punch attempts that ended without a direct connection",
            self.hole_punch_failures.clone(),
        );
        r.register(
            "relay_reservations",
            "(Exits) relay reservations held now, one per hub",
            self.relay_reservations.clone(),
        );
        r.register(
            "relay_reservations_accepted",
            "(Exits) relay reservations granted by a hub",
            self.relay_reservations_accepted.clone(),
        );
        r.register(
            "relay_reservations_failed",
            "(Exits) relay reservations asked for and not granted",
            self.relay_reservations_failed.clone(),
        );
        r.register(
            "relay_reservations_lost",
            "(Exits) granted relay reservations that went away (hub restart, connection lost)",
            self.relay_reservations_lost.clone(),
        );
        self.agent.register(r);
        self
    }

    /// A panic elsewhere while holding one of the locks cannot leave what it
    /// guards inconsistent beyond one event, so poisoning is ignored.
    fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
        mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reads the gauges of what the node holds from `probe` at each
    /// [`refresh`](Self::refresh). Set once; a later call is ignored.
    pub fn derive_from(&self, probe: SnapshotProbe) {
        let _ = self.probe.set(probe);
    }

    /// Sets the gauges of what the node holds from `now`.
    pub fn show(&self, now: &Snapshot) {
        let conns = [(ConnPath::Direct, now.direct_conns), (ConnPath::Relayed, now.relayed_conns)];
        for (path, n) in conns {
            self.peer_connections
                .get_or_create(&PathLabels { path: path.label() })
                .set(gauge_len(n));
        }
        self.relay_reservations.set(gauge_len(now.reservations));
        self.hubs_registered.set(gauge_len(now.registered_hubs));
        self.directory_exits.set(gauge_len(now.directory_exits));
        self.directory_agents.set(gauge_len(now.directory_agents));
        self.admitted_peers.set(gauge_len(now.admitted_peers));
        self.agent.show(now.agent_streams_open);
        self.ingress.show(now.agents_known, now.forwards_open);
    }

    /// The gateway's metrics, which its HTTP side counts into too.
    pub fn ingress(&self) -> Arc<IngressMetrics> {
        Arc::clone(&self.ingress)
    }

    /// Reads the node's [`Snapshot`] (within [`SNAPSHOT_WAIT`]) into the
    /// gauges; the endpoint does this before it [`encode`](Self::encode)s a scrape.
    pub async fn refresh(&self) {
        if let Some(probe) = self.probe.get() {
            if let Ok(Some(now)) = tokio::time::timeout(SNAPSHOT_WAIT, probe()).await {
                self.show(&now);
            }
        }
    }

    fn open(&self, role: &'static str) -> i64 {
        self.sessions_open.get_or_create(&RoleLabels { role }).get()
    }

    /// Counts one core event.
    pub fn observe(&self, event: &Event) {
        if let Event::AgentStreamOpened { .. } = event {
            let _sessions = Self::lock(&self.sessions);
            self.sessions_established.get_or_create(&RoleLabels { role: AGENT }).inc();
            self.sessions_open.get_or_create(&RoleLabels { role: AGENT }).inc();
        }
        if self.agent.observe(event) {
            return;
        }
        match *event {
            Event::AppAccepted { .. } => {
                self.app_connections.inc();
            }
            // Relay events are counted from the network's own reports (#4).
            Event::ReservationAccepted { .. }
            | Event::ReservationLost { .. }
            | Event::HolePunch { .. } => {}
            // Durations and bytes are counted by the gateway's HTTP side.
            Event::IngressRequest { outcome, .. } => self.ingress.request(outcome),
            Event::IngressAttemptFailed { .. } => self.ingress.attempt_failed(),
            Event::IngressEnded { end, .. } => self.ingress.ended(end),
            // Logged; a reload's outcome is answered to whoever asked for it (ops/reload).
            Event::RoutesReloaded { .. } | Event::Reconfigured { .. } | Event::Revoked { .. } => {}
            Event::SessionEstablished { setup, .. } => {
                let _sessions = Self::lock(&self.sessions);
                self.sessions_established.get_or_create(&RoleLabels { role: CLIENT }).inc();
                self.sessions_open.get_or_create(&RoleLabels { role: CLIENT }).inc();
                self.setup.observe(setup.as_secs_f64());
            }
            Event::ExitConnected { .. } => {
                let _sessions = Self::lock(&self.sessions);
                self.sessions_established.get_or_create(&RoleLabels { role: EXIT }).inc();
                self.sessions_open.get_or_create(&RoleLabels { role: EXIT }).inc();
            }
            Event::SessionFailed { reason, .. } => {
                let reason = fail_reason_label(reason);
                self.sessions_failed.get_or_create(&ReasonLabels { reason }).inc();
            }
            Event::SessionClosed { up, down, how } => {
                self.session_closed();
                self.sessions_closed.get_or_create(&HowLabels { how: how_label(how) }).inc();
                self.bytes.get_or_create(&DirectionLabels { direction: "up" }).inc_by(up);
                self.bytes.get_or_create(&DirectionLabels { direction: "down" }).inc_by(down);
            }
            Event::ExitAttemptFailed { .. } => {
                self.exit_attempt_failures.inc();
            }
            Event::Breaker { exit, to } => self.breaker(exit, breaker_label(to)),
            Event::ExitDenied { .. } => {
                self.exit_denials.inc();
            }
            Event::ExitConnectFailed { status } => {
                let status = status_label(status);
                self.exit_connect_failures.get_or_create(&StatusLabels { status }).inc();
            }
            // The gauges of hubs and directory entries are read at scrape time.
            Event::HubRegistered { .. } => {
                self.hub_registrations.inc();
            }
            Event::HubRefused { .. } => {
                self.hub_refusals.inc();
            }
            Event::HubLinkLost { .. } => {
                self.hub_links_lost.inc();
            }
            Event::DirectoryRegistered { .. } => {
                self.directory_registrations.inc();
            }
            Event::DirectoryRemoved { .. } => {
                self.directory_removals.inc();
            }
            Event::AdmissionDenied { reason, .. } => {
                self.admission_denials.get_or_create(&ReasonLabels { reason: reason.name() }).inc();
            }
            Event::ExitNotAdmitted { why, .. } => {
                self.exit_not_admitted.get_or_create(&ReasonLabels { reason: why.name() }).inc();
            }
            // The gauge of admitted peers is read at scrape time.
            Event::PeerAdmitted { .. } | Event::AdmissionEnded { .. } => {}
            Event::PeerProtocolError { .. } => {
                self.peer_protocol_errors.inc();
            }
            // Counted by `self.agent` above.
            Event::AgentStreamOpened { .. }
            | Event::AgentStreamRefused { .. }
            | Event::AgentNotAdmitted { .. }
            | Event::AgentOriginDenied { .. } => {}
        }
    }

    /// A spliced session ended. The event does not say which role held it, so
    /// on a node serving one of client, exit and agent (the usual deployment)
    /// the attribution is exact; on a node serving several while more than
    /// one has open sessions, it goes to the role with the most of them. The
    /// sum over roles is always exact and no role ever goes negative.
    fn session_closed(&self) {
        let _sessions = Self::lock(&self.sessions);
        let mut busiest = None;
        for role in [CLIENT, EXIT, AGENT] {
            let open = self.open(role);
            if open > 0 && busiest.is_none_or(|(_, most)| open > most) {
                busiest = Some((role, open));
            }
        }
        if let Some((role, _)) = busiest {
            self.sessions_open.get_or_create(&RoleLabels { role }).dec();
        }
    }

    fn breaker(&self, exit: PeerId, to: &'static str) {
        self.breaker_transitions.get_or_create(&StateLabels { state: to }).inc();
        let mut states = Self::lock(&self.breaker_states);
        if states.len() >= MAX_TRACKED && !states.contains_key(&exit) {
            return;
        }
        if let Some(from) = states.insert(exit, to) {
            self.breakers.get_or_create(&StateLabels { state: from }).dec();
        }
        self.breakers.get_or_create(&StateLabels { state: to }).inc();
    }

    /// Counts what the peer network reports: connections opened, each labelled
    /// by its path (a connection through a hub's `/p2p-circuit` is `relayed`),
    /// hole-punch attempts and their outcomes, and relay reservations granted,
    /// refused and lost. (How many of each are open or held now is read from
    /// the node at scrape time.)
    pub fn observe_net(&self, event: &NetEvent) {
        match event {
            NetEvent::PeerConnected { path, .. } => {
                let path = if path.is_relayed() { ConnPath::Relayed } else { ConnPath::Direct };
                self.peer_connections_opened
                    .get_or_create(&PathLabels { path: path.label() })
                    .inc();
            }
            NetEvent::HolePunch { stage, .. } => {
                let counter = match stage {
                    HolePunchStage::Started => &self.hole_punch_attempts,
                    HolePunchStage::Succeeded => &self.hole_punch_successes,
                    HolePunchStage::Failed => &self.hole_punch_failures,
                };
                counter.inc();
            }
            NetEvent::ReservationAccepted { .. } => {
                self.relay_reservations_accepted.inc();
            }
            NetEvent::ReservationFailed { .. } => {
                self.relay_reservations_failed.inc();
            }
            NetEvent::ReservationLost { .. } => {
                self.relay_reservations_lost.inc();
            }
            _ => {}
        }
    }

    /// The whole exposition, in the OpenMetrics text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail, and every registered metric encodes.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

fn gauge_len(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshproxy_core::ids::ConnId;
    use meshproxy_core::wire::ingress::AnswerStatus;
    use proptest::prelude::*;
    use std::time::Duration;

    fn peer(n: u64) -> PeerId {
        PeerId::from_u64(n)
    }

    /// The sample lines of `name` (exact name, any labels) in an exposition.
    fn samples<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        text.lines()
            .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with(['{', ' '])))
            .collect()
    }

    fn value(text: &str, series: &str) -> f64 {
        let line = text
            .lines()
            .find(|l| l.strip_prefix(series).is_some_and(|rest| rest.starts_with(' ')))
            .unwrap_or_else(|| panic!("no sample {series} in\n{text}"));
        line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
    }

    #[test]
    fn a_fresh_registry_has_every_series_at_zero() {
        let text = Metrics::new().encode();
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(
            samples(&text, "meshproxy_sessions_failed_total").len(),
            FAIL_REASONS.len(),
            "one series per reason"
        );
        let mut open = samples(&text, "meshproxy_sessions_open");
        open.sort_unstable(); // a family's series come in hash order
        assert_eq!(
            open,
            [
                "meshproxy_sessions_open{role=\"agent\"} 0",
                "meshproxy_sessions_open{role=\"client\"} 0",
                "meshproxy_sessions_open{role=\"exit\"} 0"
            ]
        );
        let mut agent = samples(&text, "meshproxy_agent_streams_total");
        agent.sort_unstable();
        assert_eq!(agent.len(), AnswerStatus::ALL.len(), "one series per answer: {agent:?}");
        assert!(agent.iter().all(|l| l.ends_with(" 0")), "{agent:?}");
        assert!(text.contains("meshproxy_agent_streams_total{outcome=\"not_admitted\"} 0\n"));
        assert!(text.contains("meshproxy_agent_streams_open 0\n"));
        assert!(text.contains("# TYPE meshproxy_session_setup_seconds histogram\n"));
        assert!(text.contains("# UNIT meshproxy_session_setup_seconds seconds\n"));
        assert!(text.contains("meshproxy_session_setup_seconds_count 0\n"));
        assert!(text.contains("meshproxy_peer_connections{path=\"relayed\"} 0\n"));
        assert!(text.contains("meshproxy_exit_denials_total 0\n"));
    }

    #[test]
    fn agent_streams_are_counted_by_outcome_and_their_sessions_by_role() {
        let m = Metrics::new();
        let gw = peer(5);
        m.observe(&Event::AgentStreamOpened { peer: gw, upstream: 1 });
        m.observe(&Event::AgentStreamRefused { peer: gw, status: AnswerStatus::Forbidden });
        m.observe(&Event::AgentOriginDenied { ip: "10.0.0.1".parse().unwrap() });
        m.observe(&Event::AgentNotAdmitted { peer: gw, why: TicketRefusal::Expired });
        m.observe(&Event::AgentStreamRefused { peer: gw, status: AnswerStatus::NotAdmitted });
        let text = m.encode();
        for line in [
            "meshproxy_agent_streams_total{outcome=\"ok\"} 1\n",
            "meshproxy_agent_streams_total{outcome=\"forbidden\"} 1\n",
            "meshproxy_agent_streams_total{outcome=\"not_admitted\"} 1\n",
            "meshproxy_agent_streams_total{outcome=\"busy\"} 0\n",
            "meshproxy_agent_origin_denials_total 1\n",
            "meshproxy_agent_not_admitted_total{reason=\"expired\"} 1\n",
            "meshproxy_sessions_open{role=\"agent\"} 1\n",
            "meshproxy_sessions_established_total{role=\"agent\"} 1\n",
            "meshproxy_peer_protocol_errors_total 0\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        m.observe(&Event::SessionClosed { up: 3, down: 4, how: SpliceEnd::Clean });
        assert!(m.encode().contains("meshproxy_sessions_open{role=\"agent\"} 0\n"));
    }

    #[test]
    fn a_client_session_sequence_is_counted_exactly() {
        let m = Metrics::new();
        let l = meshproxy_core::ids::ListenerId(0);
        m.observe(&Event::AppAccepted { listener: l });
        m.observe(&Event::AppAccepted { listener: l });
        m.observe(&Event::SessionEstablished {
            listener: l,
            exit: peer(2),
            setup: Duration::from_millis(3),
            attempts: 1,
        });
        let reason = FailReason::NoExit;
        m.observe(&Event::SessionFailed { listener: l, reason, status: Status::GeneralFailure });
        let open = m.encode();
        assert!(open.contains("meshproxy_sessions_open{role=\"client\"} 1\n"), "{open}");
        m.observe(&Event::SessionClosed { up: 1000, down: 250, how: SpliceEnd::Clean });
        let text = m.encode();
        for line in [
            "meshproxy_app_connections_total 2\n",
            "meshproxy_sessions_established_total{role=\"client\"} 1\n",
            "meshproxy_sessions_established_total{role=\"exit\"} 0\n",
            "meshproxy_sessions_open{role=\"client\"} 0\n",
            "meshproxy_sessions_failed_total{reason=\"no_exit\"} 1\n",
            "meshproxy_sessions_failed_total{reason=\"timeout\"} 0\n",
            "meshproxy_sessions_closed_total{how=\"clean\"} 1\n",
            "meshproxy_session_bytes_total{direction=\"up\"} 1000\n",
            "meshproxy_session_bytes_total{direction=\"down\"} 250\n",
            "meshproxy_session_setup_seconds_count 1\n",
            "meshproxy_session_setup_seconds_sum 0.003\n",
            "meshproxy_session_setup_seconds_bucket{le=\"0.0025\"} 0\n",
            "meshproxy_session_setup_seconds_bucket{le=\"0.005\"} 1\n",
            "meshproxy_session_setup_seconds_bucket{le=\"+Inf\"} 1\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn exit_side_events_are_counted() {
        let m = Metrics::new();
        m.observe(&Event::ExitConnected { peer: peer(7) });
        m.observe(&Event::ExitConnected { peer: peer(7) });
        m.observe(&Event::ExitDenied { ip: None });
        m.observe(&Event::ExitConnectFailed { status: Status::ConnectionRefused });
        m.observe(&Event::SessionClosed { up: 5, down: 6, how: SpliceEnd::ResetB });
        m.observe(&Event::PeerProtocolError { peer: peer(7) });
        let text = m.encode();
        for line in [
            "meshproxy_sessions_established_total{role=\"exit\"} 2\n",
            "meshproxy_sessions_open{role=\"exit\"} 1\n",
            "meshproxy_sessions_open{role=\"client\"} 0\n",
            "meshproxy_sessions_closed_total{how=\"reset\"} 1\n",
            "meshproxy_exit_denials_total 1\n",
            "meshproxy_exit_connect_failures_total{status=\"connection_refused\"} 1\n",
            "meshproxy_peer_protocol_errors_total 1\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn breaker_gauges_follow_transitions_per_exit() {
        let m = Metrics::new();
        let open = BreakerState::Open { until: meshproxy_core::time::Instant::ZERO };
        let half = BreakerState::HalfOpen { probes_in_flight: 1 };
        let closed = BreakerState::Closed { consecutive_failures: 0 };
        m.observe(&Event::Breaker { exit: peer(1), to: open });
        m.observe(&Event::Breaker { exit: peer(2), to: open });
        m.observe(&Event::Breaker { exit: peer(1), to: half });
        m.observe(&Event::Breaker { exit: peer(1), to: closed });
        let text = m.encode();
        assert_eq!(value(&text, "meshproxy_breakers{state=\"open\"}"), 1.0);
        assert_eq!(value(&text, "meshproxy_breakers{state=\"half_open\"}"), 0.0);
        assert_eq!(value(&text, "meshproxy_breakers{state=\"closed\"}"), 1.0);
        assert_eq!(value(&text, "meshproxy_breaker_transitions_total{state=\"open\"}"), 2.0);
        assert_eq!(value(&text, "meshproxy_breaker_transitions_total{state=\"closed\"}"), 1.0);
    }

    #[test]
    fn hub_and_directory_events_are_counted() {
        let m = Metrics::new();
        m.observe(&Event::HubRegistered { hub: peer(1) });
        m.observe(&Event::HubRegistered { hub: peer(1) });
        m.observe(&Event::HubRegistered { hub: peer(2) });
        m.observe(&Event::HubLinkLost { hub: peer(2) });
        m.observe(&Event::DirectoryRegistered { peer: peer(5) });
        m.observe(&Event::DirectoryRegistered { peer: peer(5) });
        m.observe(&Event::DirectoryRegistered { peer: peer(6) });
        m.observe(&Event::DirectoryRemoved { peer: peer(6) });
        m.observe(&Event::DirectoryRemoved { peer: peer(9) });
        m.observe(&Event::AdmissionDenied { peer: peer(8), reason: Refusal::RoleNotAllowed });
        m.observe(&Event::ExitNotAdmitted { peer: peer(8), why: TicketRefusal::Expired });
        let text = m.encode();
        for line in [
            "meshproxy_hub_registrations_total 3\n",
            "meshproxy_hub_links_lost_total 1\n",
            // The gauges are the node's to say (a snapshot), not the events'.
            "meshproxy_hubs_registered 0\n",
            "meshproxy_directory_registrations_total 3\n",
            "meshproxy_directory_removals_total 2\n",
            "meshproxy_directory_exits 0\n",
            "meshproxy_agent_streams_open 0\n",
            "meshproxy_admission_denials_total{reason=\"role_not_allowed\"} 1\n",
            "meshproxy_admission_denials_total{reason=\"bad_proof\"} 0\n",
            "meshproxy_exit_not_admitted_total{reason=\"expired\"} 1\n",
            "meshproxy_exit_not_admitted_total{reason=\"missing\"} 0\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn network_reports_count_connections_by_path_hole_punches_and_reservations() {
        use meshproxy_core::io::Path;
        let m = Metrics::new();
        let (hub, exit) = (PeerId::from_u64(1), PeerId::from_u64(2));
        m.observe_net(&NetEvent::PeerConnected {
            peer: exit,
            conn: ConnId(1),
            path: Path::Relayed { via: hub },
            limit: None,
        });
        m.observe_net(&NetEvent::PeerConnected {
            peer: exit,
            conn: ConnId(2),
            path: Path::Direct,
            limit: None,
        });
        for stage in [HolePunchStage::Started, HolePunchStage::Succeeded, HolePunchStage::Started] {
            m.observe_net(&NetEvent::HolePunch { peer: exit, stage });
        }
        m.observe_net(&NetEvent::HolePunch { peer: exit, stage: HolePunchStage::Failed });
        m.observe_net(&NetEvent::ReservationAccepted { hub });
        m.observe_net(&NetEvent::ReservationAccepted { hub: exit });
        m.observe_net(&NetEvent::ReservationLost { hub });
        m.observe_net(&NetEvent::ReservationFailed { hub });
        m.observe_net(&NetEvent::PeerDisconnected { peer: exit, conn: ConnId(2) });
        let text = m.encode();
        for line in [
            "meshproxy_peer_connections_opened_total{path=\"direct\"} 1\n",
            "meshproxy_peer_connections_opened_total{path=\"relayed\"} 1\n",
            // How many are open or held now is read from the node (a snapshot).
            "meshproxy_peer_connections{path=\"direct\"} 0\n",
            "meshproxy_relay_reservations 0\n",
            "meshproxy_hole_punch_attempts_total 2\n",
            "meshproxy_hole_punch_successes_total 1\n",
            "meshproxy_hole_punch_failures_total 1\n",
            "meshproxy_relay_reservations_accepted_total 2\n",
            "meshproxy_relay_reservations_lost_total 1\n",
            "meshproxy_relay_reservations_failed_total 1\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    /// The gauges of what the node holds come from its snapshot, read afresh
    /// at every scrape; a node that cannot answer leaves the last figures.
    #[tokio::test]
    async fn each_scrape_reads_the_gauges_from_the_nodes_snapshot() {
        let m = Metrics::new();
        let node = Arc::new(Mutex::new(Some(Snapshot {
            direct_conns: 3,
            relayed_conns: 1,
            reservations: 2,
            registered_hubs: 2,
            directory_exits: 5,
            admitted_peers: 4,
            agents_known: 8,
            forwards_open: 7,
            agent_streams_open: 6,
            directory_agents: 7,
        })));
        let answers = node.clone();
        m.derive_from(Box::new(move || {
            let now = *Metrics::lock(&answers);
            Box::pin(async move { now })
        }));
        let expect = |text: &str, lines: &[&str]| {
            for line in lines {
                assert!(text.contains(line), "missing {line:?} in\n{text}");
            }
        };
        let first = [
            "meshproxy_peer_connections{path=\"direct\"} 3\n",
            "meshproxy_peer_connections{path=\"relayed\"} 1\n",
            "meshproxy_relay_reservations 2\n",
            "meshproxy_hubs_registered 2\n",
            "meshproxy_directory_exits 5\n",
            "meshproxy_admitted_peers 4\n",
            "meshproxy_ingress_agents_known 8\n",
            "meshproxy_ingress_forwards_open 7\n",
            "meshproxy_agent_streams_open 6\n",
            "meshproxy_directory_agents 7\n",
        ];
        expect(
            &{
                m.refresh().await;
                m.encode()
            },
            &first,
        );
        *Metrics::lock(&node) = Some(Snapshot { direct_conns: 1, ..Snapshot::default() });
        let second = [
            "meshproxy_peer_connections{path=\"direct\"} 1\n",
            "meshproxy_peer_connections{path=\"relayed\"} 0\n",
            "meshproxy_relay_reservations 0\n",
            "meshproxy_hubs_registered 0\n",
            "meshproxy_directory_exits 0\n",
            "meshproxy_admitted_peers 0\n",
            "meshproxy_agent_streams_open 0\n",
            "meshproxy_directory_agents 0\n",
        ];
        expect(
            &{
                m.refresh().await;
                m.encode()
            },
            &second,
        );
        *Metrics::lock(&node) = None;
        expect(
            &{
                m.refresh().await;
                m.encode()
            },
            &second,
        );
    }

    #[test]
    fn a_node_with_both_roles_never_goes_negative_and_keeps_the_sum() {
        let m = Metrics::new();
        m.observe(&Event::ExitConnected { peer: peer(1) });
        m.observe(&Event::SessionEstablished {
            listener: meshproxy_core::ids::ListenerId(0),
            exit: peer(2),
            setup: Duration::ZERO,
            attempts: 1,
        });
        let closed = Event::SessionClosed { up: 0, down: 0, how: SpliceEnd::Clean };
        m.observe(&closed);
        assert_eq!(m.open(CLIENT) + m.open(EXIT), 1);
        m.observe(&closed);
        m.observe(&closed); // one too many: ignored
        assert_eq!((m.open(CLIENT), m.open(EXIT)), (0, 0));
    }

    proptest! {
        /// Any sequence of session events keeps both open gauges non-negative.
        #[test]
        fn sessions_open_never_negative(ops in proptest::collection::vec(0u8..3, 0..64)) {
            let m = Metrics::new();
            for op in ops {
                let event = match op {
                    0 => Event::ExitConnected { peer: peer(1) },
                    1 => Event::SessionEstablished {
                        listener: meshproxy_core::ids::ListenerId(0),
                        exit: peer(2),
                        setup: Duration::ZERO,
                        attempts: 1,
                    },
                    _ => Event::SessionClosed { up: 1, down: 1, how: SpliceEnd::Clean },
                };
                m.observe(&event);
                prop_assert!(m.open(CLIENT) >= 0 && m.open(EXIT) >= 0);
            }
        }
    }
}
