//! The scenario file format: what world a simulator run builds, what the apps
//! in it do, and which faults it may suffer.
//!
//! A scenario is a TOML file in `scenarios/` whose `name` equals its file stem;
//! `scenarios/README.md` documents every field. Loading is strict on purpose:
//! a typo in a field name would otherwise silently fall back to a default and
//! the sweep would test something other than what its author meant. So every
//! table denies unknown fields, type errors name the field path, and a
//! validation pass checks every limit, each reported as one [`ScenarioError`]
//! naming the file and the field.

mod adversaries;

pub use adversaries::{AdversarySpec, ScenarioLimits};
use meshproxy_core::record::{valid_label, CountryCode, MAX_LABELS};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

/// Seeds a sweep runs when the scenario names no count.
pub const DEFAULT_SEEDS: u32 = 100;
/// Largest payload one app connection may ask for: bigger ones only make
/// runs slower without exercising more of the byte path.
pub const MAX_PAYLOAD: u32 = 64 * 1024 * 1024;
/// Most retries a listener may make before answering the app.
pub const MAX_RETRIES: u32 = 8;

/// One simulated world and its workload. Read from `scenarios/<name>.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a scenario document")]
pub struct Scenario {
    /// The scenario's name; equals the file stem so that `NAME:SEED` finds the file.
    pub name: String,
    /// What the scenario exercises, in a sentence or two.
    pub description: String,
    /// How many seeds a default sweep runs.
    #[serde(default = "default_seeds")]
    pub seeds: u32,
    /// The workload window: app connections start in `[0, duration)`.
    pub duration_secs: u32,
    /// Quiet time after the last fault heals before liveness probes start.
    pub settle_secs: u32,
    /// A liveness probe connection must complete within this.
    pub liveness_bound_secs: u32,
    /// How many nodes of each role, and the exits' attributes.
    pub topology: Topology,
    /// The client listeners (the same set on every client); at least one.
    pub listeners: Vec<ListenerSpec>,
    /// What the apps do.
    pub workload: Workload,
    /// Link characteristics.
    #[serde(default)]
    pub network: Network,
    /// Which faults a run may inject, and how many.
    #[serde(default)]
    pub faults: Faults,
    /// The hubs' relay: reservation lifetime, circuit caps, autonat delay.
    #[serde(default)]
    pub relay: Relay,
    /// Misbehaving apps and peers (sim/src/world/adversary); none by default.
    #[serde(default)]
    pub adversaries: AdversarySpec,
    /// The nodes' table limits; the core's defaults by default.
    #[serde(default)]
    pub limits: ScenarioLimits,
    /// The hubs' admission tickets.
    #[serde(default)]
    pub hubs: Hubs,
}

/// `[hubs]`: how the hubs admit peers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a [hubs] table")]
pub struct Hubs {
    /// How long a hub's ticket lasts (`HubConfig::ticket_lifetime`); holders
    /// renew at half of it. At least 2.
    pub ticket_lifetime_secs: u32,
}

impl Default for Hubs {
    fn default() -> Self {
        let secs = meshproxy_core::config::DEFAULT_TICKET_LIFETIME.as_secs();
        Hubs { ticket_lifetime_secs: u32::try_from(secs).unwrap_or(u32::MAX) }
    }
}

/// Node counts and the attributes exits declare.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [topology] table")]
pub struct Topology {
    /// Hubs; at least one, since exits are only found through a hub.
    pub hubs: u32,
    /// Exits; at least one.
    pub exits: u32,
    /// Client nodes (each with every listener); at least one.
    pub clients: u32,
    /// Country codes handed to exits round-robin (exit `i` gets `countries[i % len]`).
    #[serde(default)]
    pub countries: Vec<String>,
    /// Label sets handed to exits round-robin, like `countries`.
    #[serde(default)]
    pub labels: Vec<Vec<String>>,
    /// NAT types handed to exits round-robin; empty: every exit is public.
    #[serde(default)]
    pub exit_nat: Vec<NatType>,
    /// NAT types handed to clients round-robin; empty: every client is public.
    #[serde(default)]
    pub client_nat: Vec<NatType>,
    /// Ingress agents (numbered after the clients), each with the service
    /// `web` on an echo origin and the label `site=a` (even) or `site=b` (odd).
    #[serde(default)]
    pub agents: u32,
    /// Ingress gateways (numbered after the agents), each with the route
    /// table `crate::ingress_model` describes on its listener `web`.
    #[serde(default)]
    pub gateways: u32,
    /// The first hub is a gateway too (`HubRole::serve_own_gateway`: it
    /// lists its own directory's agents), counted after the `gateways`.
    #[serde(default)]
    pub hub_gateway: bool,
}

impl Topology {
    /// Every node that runs a gateway: the `gateways`, and the first hub
    /// if `hub_gateway`.
    pub fn ingress_gateways(&self) -> u32 {
        self.gateways + u32::from(self.hub_gateway && self.hubs > 0)
    }

    /// The node index of gateway `g` (counted as [`Topology::ingress_gateways`] counts).
    pub fn gateway_node(&self, g: u32) -> u32 {
        if g < self.gateways {
            self.hubs + self.exits + self.clients + self.agents + g
        } else {
            0
        }
    }

    /// Whether the scenario models NAT at all (any NAT list given). Without
    /// it nodes are never told their reachability, so NAT-free runs behave
    /// exactly as they did before the NAT model existed.
    pub fn models_nat(&self) -> bool {
        !self.exit_nat.is_empty() || !self.client_nat.is_empty()
    }
}

/// What sits between a node and the internet; hubs are always public.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NatType {
    /// No NAT: a public address, directly dialable.
    #[default]
    None,
    /// Full cone: one mapping per inside port, anyone may send to it once it exists.
    FullCone,
    /// Address-restricted cone: only hosts the inside has sent to may answer.
    Restricted,
    /// Port-restricted cone: only the exact host:port sent to may answer.
    PortRestricted,
    /// Symmetric: a new mapping (new port) per destination.
    Symmetric,
}

impl NatType {
    /// Every type, in declaration order (most to least permissive).
    pub const ALL: [NatType; 5] = [
        NatType::None,
        NatType::FullCone,
        NatType::Restricted,
        NatType::PortRestricted,
        NatType::Symmetric,
    ];

    /// The name used in scenario files.
    pub const fn as_str(self) -> &'static str {
        match self {
            NatType::None => "none",
            NatType::FullCone => "full_cone",
            NatType::Restricted => "restricted",
            NatType::PortRestricted => "port_restricted",
            NatType::Symmetric => "symmetric",
        }
    }

    /// Whether a node behind it is directly dialable.
    pub const fn is_public(self) -> bool {
        matches!(self, NatType::None)
    }
}

impl fmt::Display for NatType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The hubs' relay service (libp2p relay v2 in production).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a [relay] table")]
pub struct Relay {
    /// A reservation lasts this long unless renewed; at least 1.
    pub reservation_ttl_secs: u32,
    /// A relay circuit is cut this long after it opened; absent: no duration cap.
    pub circuit_secs: Option<u32>,
    /// A relay circuit is cut when either direction has carried this many bytes;
    /// absent: no byte cap.
    pub circuit_bytes: Option<u64>,
    /// How long after (re)start a node learns its reachability (autonat).
    pub autonat_ms: MsRange,
}

impl Default for Relay {
    fn default() -> Self {
        Relay {
            reservation_ttl_secs: 3600,
            circuit_secs: None,
            circuit_bytes: None,
            autonat_ms: MsRange { min: 500, max: 3000 },
        }
    }
}

/// One client listener and the selection settings behind it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [[listeners]] table")]
pub struct ListenerSpec {
    /// Which proxy protocol apps speak to it.
    #[serde(default)]
    pub protocol: ListenerProtocol,
    /// Only exits in this country.
    #[serde(default)]
    pub country: Option<String>,
    /// Only exits carrying all of these labels.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Whether and how connections are pinned to one exit.
    #[serde(default)]
    pub sticky: StickyMode,
    /// Whether a pinned connection may move to another exit when its own fails.
    #[serde(default = "default_true")]
    pub fallback: bool,
    /// Whether apps must authenticate (SOCKS5 user/pass, HTTP Proxy-Authorization).
    #[serde(default)]
    pub auth: bool,
    /// Other exits tried before the app gets an error; at most [`MAX_RETRIES`].
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Whether connections may go through a hub's relay (exits behind NAT
    /// are reachable only that way).
    #[serde(default = "default_true")]
    pub relayed: bool,
}

/// The proxy protocol a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListenerProtocol {
    /// SOCKS5 only.
    Socks5,
    /// HTTP CONNECT only.
    Http,
    /// Either, detected from the first byte; apps use both.
    #[default]
    Both,
}

/// How a listener pins connections to exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StickyMode {
    /// Every connection selects afresh.
    #[default]
    Off,
    /// All connections through the listener share one pinned exit.
    Listener,
    /// Connections carrying the same session id share one pinned exit.
    Session,
}

/// What the apps on each client do.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [workload] table")]
pub struct Workload {
    /// App connections each client opens during the workload window; at least one.
    pub connections: u32,
    /// Smallest payload, in bytes.
    pub payload_min: u32,
    /// Largest payload, in bytes; at most [`MAX_PAYLOAD`].
    pub payload_max: u32,
    /// Which kinds of destination apps ask for, weighted.
    pub destinations: Vec<DestinationWeight>,
    /// Distinct session ids apps draw from (for `sticky = "session"`).
    #[serde(default = "default_session_ids")]
    pub session_ids: u32,
    /// Share of connections that name the destination by domain rather than IP.
    #[serde(default = "default_domain_fraction")]
    pub domain_fraction: f64,
    /// Share of connections on SOCKS listeners without auth that speak
    /// SOCKS4a instead of SOCKS5 (default 0: no plan draws change).
    #[serde(default)]
    pub socks4_fraction: f64,
    /// Share of app connections that are instead public HTTP requests at a
    /// gateway (needs `topology.gateways`; default 0: no plan draws change).
    #[serde(default)]
    pub ingress_fraction: f64,
    /// Route table reloads at random gateways at random times during the
    /// workload window (each a new version alternating the model's two
    /// tables; default 0).
    #[serde(default)]
    pub ingress_reloads: u32,
    /// Share of public requests that are hostile (traversal encodings,
    /// backslashes, unknown or doubled hosts, the biggest head the driver
    /// lets through; default 0: no plan draws change).
    #[serde(default)]
    pub ingress_hostile_fraction: f64,
    /// Floods: bursts of `ingress_flood_size` agent requests at the first
    /// gateway in one instant, at random times (default 0).
    #[serde(default)]
    pub ingress_floods: u32,
    /// Requests per flood.
    #[serde(default)]
    pub ingress_flood_size: u32,
    /// App connections start no earlier than this (the mesh forms first);
    /// less than `duration_secs`.
    #[serde(default)]
    pub start_secs: u32,
}

/// One kind of destination and how often apps pick it, relative to the others.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table like { kind = \"echo\", weight = 1 }")]
pub struct DestinationWeight {
    /// What the destination does.
    pub kind: OriginKind,
    /// Relative weight; zero turns the kind off.
    pub weight: u32,
}

/// How a simulated destination (origin) behaves; `scenarios/README.md` has the details.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OriginKind {
    /// Echoes what it gets.
    Echo,
    /// Sends the requested number of bytes, then closes.
    Source,
    /// Reads everything, sends nothing until the app closes.
    Sink,
    /// A source at low bandwidth.
    Slow,
    /// Refuses the connection.
    Refuse,
    /// Never answers the connect (the exit's connect timeout fires).
    BlackHole,
    /// Sends part of the payload, then resets.
    ResetMidStream,
    /// Sends part of the payload, then closes cleanly.
    CloseEarly,
    /// A literal private or loopback address, which exit policy must deny.
    Private,
    /// A domain that resolves to a private address.
    PrivateName,
    /// A domain resolving to both private and public addresses; only the public may be dialed.
    MixedName,
    /// A domain that does not resolve (NXDOMAIN).
    Unresolvable,
}

impl OriginKind {
    /// Every kind, in declaration order.
    pub const ALL: [OriginKind; 12] = [
        OriginKind::Echo,
        OriginKind::Source,
        OriginKind::Sink,
        OriginKind::Slow,
        OriginKind::Refuse,
        OriginKind::BlackHole,
        OriginKind::ResetMidStream,
        OriginKind::CloseEarly,
        OriginKind::Private,
        OriginKind::PrivateName,
        OriginKind::MixedName,
        OriginKind::Unresolvable,
    ];

    /// The name used in scenario files.
    pub const fn as_str(self) -> &'static str {
        match self {
            OriginKind::Echo => "echo",
            OriginKind::Source => "source",
            OriginKind::Sink => "sink",
            OriginKind::Slow => "slow",
            OriginKind::Refuse => "refuse",
            OriginKind::BlackHole => "black_hole",
            OriginKind::ResetMidStream => "reset_mid_stream",
            OriginKind::CloseEarly => "close_early",
            OriginKind::Private => "private",
            OriginKind::PrivateName => "private_name",
            OriginKind::MixedName => "mixed_name",
            OriginKind::Unresolvable => "unresolvable",
        }
    }
}

impl fmt::Display for OriginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Link characteristics shared by every peer connection and origin dial.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a [network] table")]
pub struct Network {
    /// One-way latency per link, drawn per link from this range.
    pub latency_ms: MsRange,
    /// Random extra delay per message, up to this.
    pub jitter_ms: u32,
    /// Per-link bandwidth; at least 1.
    pub bandwidth_mbps: u32,
    /// How long dialing an origin or a peer takes, drawn per dial.
    pub dial_ms: MsRange,
    /// A peer connection silent this long is declared dead; at least 1.
    pub keepalive_timeout_secs: u32,
}

impl Default for Network {
    fn default() -> Self {
        Network {
            latency_ms: MsRange { min: 1, max: 40 },
            jitter_ms: 2,
            bandwidth_mbps: 200,
            dial_ms: MsRange { min: 1, max: 60 },
            keepalive_timeout_secs: 10,
        }
    }
}

/// An inclusive range of milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table like { min = 1, max = 40 }")]
pub struct MsRange {
    /// Lower bound.
    pub min: u32,
    /// Upper bound; at least `min`.
    pub max: u32,
}

/// The fault bounds a run draws its fault plan from (swarm testing: each seed
/// turns on a subset of `kinds`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a [faults] table")]
pub struct Faults {
    /// Fault kinds a seed may choose from; empty means a fault-free scenario.
    pub kinds: Vec<FaultKind>,
    /// Most faults one run injects.
    pub max_faults: u32,
    /// Longest a single fault lasts before it heals; at least 1.
    pub max_fault_secs: u32,
}

impl Default for Faults {
    fn default() -> Self {
        Faults { kinds: Vec::new(), max_faults: 0, max_fault_secs: 10 }
    }
}

/// A kind of fault the simulator can inject; `scenarios/README.md` has the details.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// Both directions between two nodes cut, then healed.
    Partition,
    /// One direction between two nodes cut, then healed.
    OneWayPartition,
    /// One peer connection killed.
    Reset,
    /// A link's latency jumps for a while.
    LatencySpike,
    /// A link's bandwidth drops for a while.
    BandwidthDrop,
    /// A node crashes and restarts later from its persisted snapshot.
    Crash,
    /// An exit leaves the network and rejoins.
    Churn,
    /// A hub goes down and comes back.
    HubOutage,
    /// Both directions between a gateway and an agent or a hub cut, then
    /// healed (scenarios with gateways).
    GatewayPartition,
}

impl FaultKind {
    /// Every kind, in declaration order.
    pub const ALL: [FaultKind; 9] = [
        FaultKind::Partition,
        FaultKind::OneWayPartition,
        FaultKind::Reset,
        FaultKind::LatencySpike,
        FaultKind::BandwidthDrop,
        FaultKind::Crash,
        FaultKind::Churn,
        FaultKind::HubOutage,
        FaultKind::GatewayPartition,
    ];

    /// The name used in scenario files.
    pub const fn as_str(self) -> &'static str {
        match self {
            FaultKind::Partition => "partition",
            FaultKind::OneWayPartition => "one_way_partition",
            FaultKind::Reset => "reset",
            FaultKind::LatencySpike => "latency_spike",
            FaultKind::BandwidthDrop => "bandwidth_drop",
            FaultKind::Crash => "crash",
            FaultKind::Churn => "churn",
            FaultKind::HubOutage => "hub_outage",
            FaultKind::GatewayPartition => "gateway_partition",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn default_seeds() -> u32 {
    DEFAULT_SEEDS
}
fn default_true() -> bool {
    true
}
fn default_retries() -> u32 {
    2
}
fn default_session_ids() -> u32 {
    4
}
fn default_domain_fraction() -> f64 {
    0.5
}

/// Why a scenario file could not be loaded: the file, the field (a path such
/// as `listeners[1].retries`; `None` when the file is not even valid TOML,
/// cannot be read, or the document itself is wrong) and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct ScenarioError {
    /// The file the error is in.
    pub file: PathBuf,
    /// The field path, `None` for syntax and I/O errors and for the document
    /// as a whole (a missing or unknown top-level field, named in `message`).
    pub field: Option<String>,
    /// What is wrong: toml's own report for syntax and type errors (line,
    /// column, the offending line and serde's message: the unknown key, the
    /// expected type or variants), or the rule the value breaks (`expected …`).
    pub message: String,
}

impl ScenarioError {
    fn render(&self) -> String {
        match &self.field {
            Some(field) => format!("{}: field `{}`: {}", self.file.display(), field, self.message),
            None => format!("{}: {}", self.file.display(), self.message),
        }
    }
}

/// Loads and validates one scenario file.
pub fn load_file(path: &Path) -> Result<Scenario, ScenarioError> {
    let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
        file: path.to_path_buf(),
        field: None,
        message: format!("expected a readable UTF-8 file ({e})"),
    })?;
    parse_str(path, &text)
}

/// Loads every `*.toml` in `dir`, sorted by name; the first bad file is the error.
pub fn load_dir(dir: &Path) -> Result<Vec<Scenario>, ScenarioError> {
    let io_error = |e: std::io::Error| ScenarioError {
        file: dir.to_path_buf(),
        field: None,
        message: format!("expected a readable directory of scenario files ({e})"),
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error)? {
        let path = entry.map_err(io_error)?.path();
        if path.extension().is_some_and(|ext| ext == "toml") && path.is_file() {
            paths.push(path);
        }
    }
    // Sorting paths in one directory sorts by stem, which is the name.
    paths.sort();
    paths.iter().map(|p| load_file(p)).collect()
}

/// Parses and validates scenario text; `name_for_errors` names the file in
/// errors, and its stem is the name the scenario must declare.
pub fn parse_str(name_for_errors: &Path, text: &str) -> Result<Scenario, ScenarioError> {
    let error = |field: Option<String>, message: String| ScenarioError {
        file: name_for_errors.to_path_buf(),
        field,
        message,
    };
    // Syntax first, so that a malformed document is reported as such rather
    // than as a type error at whichever field the deserializer had reached.
    if let Err(e) = text.parse::<toml::Table>() {
        return Err(error(None, e.to_string().trim_end().to_owned()));
    }
    let scenario: Scenario = serde_path_to_error::deserialize(toml::Deserializer::new(text))
        .map_err(|e| {
            let path = e.path().to_string();
            let field = (path != ".").then_some(path);
            error(field, e.inner().to_string().trim_end().to_owned())
        })?;
    let stem = name_for_errors.file_stem().map(|s| s.to_string_lossy());
    scenario
        .validate(stem.as_deref())
        .map_err(|(field, expected)| error(Some(field), format!("expected {expected}")))?;
    Ok(scenario)
}

/// A rule broken: the field path and what was expected there.
type Broken = (String, String);

fn ensure(
    ok: bool,
    field: impl Into<String>,
    expected: impl FnOnce() -> String,
) -> Result<(), Broken> {
    if ok {
        Ok(())
    } else {
        Err((field.into(), expected()))
    }
}

fn at_least_one(value: u32, field: &str) -> Result<(), Broken> {
    ensure(value >= 1, field, || format!("a value ≥ 1 (got {value})"))
}

fn ms_range(range: MsRange, field: &str) -> Result<(), Broken> {
    ensure(range.min <= range.max, format!("{field}.min"), || {
        format!("a value ≤ {field}.max (got {} > {})", range.min, range.max)
    })
}

fn label_set(labels: &[String], field: &str) -> Result<(), Broken> {
    ensure(labels.len() <= MAX_LABELS, field, || {
        format!("at most {MAX_LABELS} labels (got {})", labels.len())
    })?;
    let mut seen = BTreeSet::new();
    for (i, label) in labels.iter().enumerate() {
        ensure(valid_label(label), format!("{field}[{i}]"), || {
            format!("a label of 1..=32 characters from [a-z0-9_.:] (got {label:?})")
        })?;
        ensure(seen.insert(label), format!("{field}[{i}]"), || {
            format!("labels without repeats (got {label:?} twice)")
        })?;
    }
    Ok(())
}

fn country(code: &str, field: &str) -> Result<(), Broken> {
    ensure(CountryCode::parse(code).is_some(), field, || {
        format!("a two-letter country code (got {code:?})")
    })
}

impl Scenario {
    /// Checks every rule the field docs state; the first broken one is the error.
    /// `stem` is the file stem the name must equal, if there is a file.
    fn validate(&self, stem: Option<&str>) -> Result<(), Broken> {
        ensure(!self.name.is_empty(), "name", || "a non-empty name".to_owned())?;
        if let Some(stem) = stem {
            ensure(self.name == stem, "name", || {
                format!("the file stem {stem:?} (got {:?})", self.name)
            })?;
        }
        at_least_one(self.seeds, "seeds")?;
        at_least_one(self.duration_secs, "duration_secs")?;
        at_least_one(self.liveness_bound_secs, "liveness_bound_secs")?;

        let t = &self.topology;
        at_least_one(t.hubs, "topology.hubs")?;
        at_least_one(t.exits, "topology.exits")?;
        at_least_one(t.clients, "topology.clients")?;
        for (i, code) in t.countries.iter().enumerate() {
            country(code, &format!("topology.countries[{i}]"))?;
        }
        for (i, set) in t.labels.iter().enumerate() {
            label_set(set, &format!("topology.labels[{i}]"))?;
        }

        ensure(!self.listeners.is_empty(), "listeners", || "at least one listener".to_owned())?;
        for (i, l) in self.listeners.iter().enumerate() {
            if let Some(code) = &l.country {
                country(code, &format!("listeners[{i}].country"))?;
            }
            label_set(&l.labels, &format!("listeners[{i}].labels"))?;
            ensure(l.retries <= MAX_RETRIES, format!("listeners[{i}].retries"), || {
                format!("a value ≤ {MAX_RETRIES} (got {})", l.retries)
            })?;
        }

        let w = &self.workload;
        at_least_one(w.connections, "workload.connections")?;
        ensure(w.payload_min <= w.payload_max, "workload.payload_min", || {
            format!("a value ≤ workload.payload_max (got {} > {})", w.payload_min, w.payload_max)
        })?;
        ensure(w.payload_max <= MAX_PAYLOAD, "workload.payload_max", || {
            format!("a value ≤ {MAX_PAYLOAD} (64 MiB) (got {})", w.payload_max)
        })?;
        ensure(!w.destinations.is_empty(), "workload.destinations", || {
            "at least one destination".to_owned()
        })?;
        let total: u64 = w.destinations.iter().map(|d| u64::from(d.weight)).sum();
        ensure(total > 0, "workload.destinations", || {
            "weights that sum to more than 0 (got 0)".to_owned()
        })?;
        at_least_one(w.session_ids, "workload.session_ids")?;
        ensure(w.start_secs < self.duration_secs, "workload.start_secs", || {
            format!("a value < duration_secs (got {} ≥ {})", w.start_secs, self.duration_secs)
        })?;
        ensure((0.0..=1.0).contains(&w.domain_fraction), "workload.domain_fraction", || {
            format!("a fraction in [0, 1] (got {})", w.domain_fraction)
        })?;
        ensure((0.0..=1.0).contains(&w.socks4_fraction), "workload.socks4_fraction", || {
            format!("a fraction in [0, 1] (got {})", w.socks4_fraction)
        })?;
        ensure((0.0..=1.0).contains(&w.ingress_fraction), "workload.ingress_fraction", || {
            format!("a fraction in [0, 1] (got {})", w.ingress_fraction)
        })?;
        ensure(
            w.ingress_fraction == 0.0 || self.topology.ingress_gateways() > 0,
            "workload.ingress_fraction",
            || "public requests need at least one gateway (topology.gateways)".to_string(),
        )?;
        let f = w.ingress_hostile_fraction;
        ensure((0.0..=1.0).contains(&f), "workload.ingress_hostile_fraction", || {
            format!("a fraction in [0, 1] (got {f})")
        })?;
        ensure(
            w.ingress_floods == 0
                || (self.topology.ingress_gateways() > 0 && w.ingress_flood_size > 0),
            "workload.ingress_floods",
            || "floods need a gateway (topology.gateways) and ingress_flood_size ≥ 1".to_string(),
        )?;
        ensure(w.ingress_flood_size <= 1000, "workload.ingress_flood_size", || {
            format!("at most 1000 (got {})", w.ingress_flood_size)
        })?;

        let n = &self.network;
        ms_range(n.latency_ms, "network.latency_ms")?;
        at_least_one(n.bandwidth_mbps, "network.bandwidth_mbps")?;
        ms_range(n.dial_ms, "network.dial_ms")?;
        at_least_one(n.keepalive_timeout_secs, "network.keepalive_timeout_secs")?;

        at_least_one(self.faults.max_fault_secs, "faults.max_fault_secs")?;
        let t = &self.topology;
        ensure(
            !self.faults.kinds.contains(&FaultKind::GatewayPartition)
                || (t.gateways > 0 && t.hubs + t.agents > 0),
            "faults.kinds",
            || "gateway_partition needs a gateway (topology.gateways) and a hub or an agent".into(),
        )?;

        let r = &self.relay;
        at_least_one(r.reservation_ttl_secs, "relay.reservation_ttl_secs")?;
        if let Some(secs) = r.circuit_secs {
            at_least_one(secs, "relay.circuit_secs")?;
        }
        if let Some(bytes) = r.circuit_bytes {
            ensure(bytes >= 1, "relay.circuit_bytes", || format!("a value ≥ 1 (got {bytes})"))?;
        }
        ms_range(r.autonat_ms, "relay.autonat_ms")?;
        let lifetime = self.hubs.ticket_lifetime_secs;
        ensure(lifetime >= 2, "hubs.ticket_lifetime_secs", || {
            format!("a value ≥ 2 (got {lifetime})")
        })?;
        Ok(())
    }

    /// The total relative weight of the destinations (more than zero once loaded).
    pub fn destination_weight_total(&self) -> u64 {
        self.workload.destinations.iter().map(|d| u64::from(d.weight)).sum()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test that panics on a surprise is doing its job
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FILE: &str = "scenarios/t.toml";

    /// A valid scenario that names every field, so each test can break one.
    const FULL: &str = r#"
name = "t"
description = "a test scenario"
seeds = 7
duration_secs = 30
settle_secs = 20
liveness_bound_secs = 15

[topology]
hubs = 1
exits = 3
clients = 2
countries = ["de", "US"]
labels = [["residential"], ["dc", "isp:foo"]]
exit_nat = ["symmetric", "none"]
client_nat = ["full_cone"]

[[listeners]]
protocol = "socks5"
country = "DE"
labels = ["dc"]
sticky = "session"
fallback = false
auth = true
retries = 3
relayed = false

[[listeners]]

[workload]
connections = 20
payload_min = 100
payload_max = 5000
destinations = [{ kind = "echo", weight = 3 }, { kind = "black_hole", weight = 1 }]
session_ids = 2
domain_fraction = 0.25
start_secs = 3

[network]
latency_ms = { min = 2, max = 30 }
jitter_ms = 1
bandwidth_mbps = 50
dial_ms = { min = 1, max = 20 }
keepalive_timeout_secs = 5

[faults]
kinds = ["partition", "one_way_partition", "hub_outage"]
max_faults = 3
max_fault_secs = 8

[relay]
reservation_ttl_secs = 90
circuit_secs = 120
circuit_bytes = 131072
autonat_ms = { min = 100, max = 200 }
"#;

    fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        parse_str(Path::new(FILE), text)
    }

    /// `FULL` with one piece of text replaced (which must be there).
    fn with(from: &str, to: &str) -> String {
        assert!(FULL.contains(from), "test bug: {from:?} not in FULL");
        FULL.replacen(from, to, 1)
    }

    fn error(text: &str) -> ScenarioError {
        match parse(text) {
            Ok(s) => panic!("expected an error, parsed {s:?}"),
            Err(e) => {
                assert_eq!(e.file, Path::new(FILE));
                assert!(e.to_string().starts_with("scenarios/t.toml: "), "{e}");
                e
            }
        }
    }

    /// A broken rule: the field and what was expected there.
    fn assert_field(text: &str, field: &str, expected_part: &str) {
        let e = error(text);
        assert_eq!(e.field.as_deref(), Some(field), "{e}");
        assert!(e.message.contains(expected_part), "{e} should mention {expected_part:?}");
        assert!(e.to_string().contains(&format!("field `{field}`: expected ")), "{e}");
    }

    /// What toml and serde report, in their words: the field path (`None`:
    /// the document itself), the key facts of the message, and the line (the
    /// first holding `at`) that toml points at.
    fn assert_toml(text: &str, field: Option<&str>, part: &str, at: &str) {
        let e = error(text);
        assert_eq!(e.field.as_deref(), field, "{e}");
        assert!(e.message.contains(part), "{e} should mention {part:?}");
        let line = text.lines().position(|l| l.contains(at)).unwrap() + 1;
        assert!(e.message.contains(&format!("line {line}, column ")), "{e}: not at line {line}");
    }

    #[test]
    fn full_file_reads_every_field() {
        let s = parse(FULL).unwrap();
        assert_eq!(s.name, "t");
        assert_eq!(s.seeds, 7);
        assert_eq!((s.duration_secs, s.settle_secs, s.liveness_bound_secs), (30, 20, 15));
        assert_eq!((s.topology.hubs, s.topology.exits, s.topology.clients), (1, 3, 2));
        assert_eq!(s.topology.countries, ["de", "US"]);
        assert_eq!(s.topology.labels[1], ["dc", "isp:foo"]);
        let l = &s.listeners[0];
        assert_eq!(l.protocol, ListenerProtocol::Socks5);
        assert_eq!(l.country.as_deref(), Some("DE"));
        assert_eq!(l.sticky, StickyMode::Session);
        assert!(!l.fallback && l.auth);
        assert_eq!(l.retries, 3);
        assert_eq!(s.workload.destinations[1].kind, OriginKind::BlackHole);
        assert_eq!(s.workload.destinations[1].weight, 1);
        assert_eq!(s.destination_weight_total(), 4);
        assert_eq!(s.workload.domain_fraction, 0.25);
        assert_eq!(s.workload.start_secs, 3);
        assert_eq!(s.network.latency_ms, MsRange { min: 2, max: 30 });
        assert_eq!(s.network.keepalive_timeout_secs, 5);
        assert_eq!(
            s.faults.kinds,
            [FaultKind::Partition, FaultKind::OneWayPartition, FaultKind::HubOutage]
        );
        assert_eq!((s.faults.max_faults, s.faults.max_fault_secs), (3, 8));
        assert_eq!(s.topology.exit_nat, [NatType::Symmetric, NatType::None]);
        assert_eq!(s.topology.client_nat, [NatType::FullCone]);
        assert!(s.topology.models_nat());
        assert!(!s.listeners[0].relayed && s.listeners[1].relayed);
        assert_eq!(s.relay.reservation_ttl_secs, 90);
        assert_eq!((s.relay.circuit_secs, s.relay.circuit_bytes), (Some(120), Some(131072)));
        assert_eq!(s.relay.autonat_ms, MsRange { min: 100, max: 200 });
    }

    #[test]
    fn omitted_fields_take_their_defaults() {
        let text = r#"
name = "t"
description = ""
duration_secs = 30
settle_secs = 20
liveness_bound_secs = 15
topology = { hubs = 1, exits = 1, clients = 1 }
listeners = [{}]
[workload]
connections = 1
payload_min = 0
payload_max = 0
destinations = [{ kind = "echo", weight = 1 }]
"#;
        let s = parse(text).unwrap();
        assert_eq!(s.seeds, DEFAULT_SEEDS);
        assert!(s.topology.countries.is_empty() && s.topology.labels.is_empty());
        let l = &s.listeners[0];
        assert_eq!(l.protocol, ListenerProtocol::Both);
        assert_eq!(l.country, None);
        assert!(l.labels.is_empty());
        assert_eq!(l.sticky, StickyMode::Off);
        assert!(l.fallback && !l.auth);
        assert_eq!(l.retries, 2);
        assert_eq!(s.workload.session_ids, 4);
        assert_eq!(s.workload.domain_fraction, 0.5);
        let n = &s.network;
        assert_eq!(n.latency_ms, MsRange { min: 1, max: 40 });
        assert_eq!((n.jitter_ms, n.bandwidth_mbps, n.keepalive_timeout_secs), (2, 200, 10));
        assert_eq!(n.dial_ms, MsRange { min: 1, max: 60 });
        assert!(s.faults.kinds.is_empty());
        assert_eq!((s.faults.max_faults, s.faults.max_fault_secs), (0, 10));
        assert!(s.topology.exit_nat.is_empty() && !s.topology.models_nat());
        assert!(s.listeners[0].relayed);
        assert_eq!(s.relay.reservation_ttl_secs, 3600);
        assert_eq!((s.relay.circuit_secs, s.relay.circuit_bytes), (None, None));
        assert_eq!(s.relay.autonat_ms, MsRange { min: 500, max: 3000 });
    }

    #[test]
    fn a_partial_network_table_keeps_the_other_defaults() {
        let s = parse(&with("jitter_ms = 1\n", "")).unwrap();
        assert_eq!(s.network.jitter_ms, 2);
        assert_eq!(s.network.bandwidth_mbps, 50);
    }

    #[test]
    fn every_kind_name_parses_and_matches_as_str() {
        for kind in OriginKind::ALL {
            let text = with(r#"kind = "echo""#, &format!("kind = {:?}", kind.as_str()));
            assert_eq!(parse(&text).unwrap().workload.destinations[0].kind, kind);
            assert_eq!(kind.to_string(), kind.as_str());
        }
        for nat in NatType::ALL {
            let text = with(r#""symmetric", "none""#, &format!("{:?}", nat.as_str()));
            assert_eq!(parse(&text).unwrap().topology.exit_nat, [nat]);
            assert_eq!(nat.to_string(), nat.as_str());
        }
        assert_toml(
            &with(r#"client_nat = ["full_cone"]"#, r#"client_nat = ["cone"]"#),
            Some("topology.client_nat[0]"),
            "unknown variant `cone`, expected one of `none`, `full_cone`",
            "client_nat =",
        );
        for kind in FaultKind::ALL {
            let mut text = with(r#""partition","#, &format!("{:?},", kind.as_str()));
            if kind == FaultKind::GatewayPartition {
                text = text.replace("clients = 2", "clients = 2\ngateways = 1");
            }
            assert_eq!(parse(&text).unwrap().faults.kinds[0], kind);
            assert_eq!(kind.to_string(), kind.as_str());
        }
    }

    #[test]
    fn gateway_partitions_need_a_gateway() {
        let text = with(r#""partition","#, r#""gateway_partition","#);
        let e = error(&text).to_string();
        assert!(e.contains("faults.kinds") && e.contains("gateway_partition"), "{e}");
    }

    #[test]
    fn a_syntax_error_names_the_file_line_and_column() {
        let e = error(&with("hubs = 1", "hubs = = 1"));
        assert_eq!(e.field, None);
        let line = FULL.lines().position(|l| l.starts_with("hubs")).unwrap() + 1;
        assert!(e.message.starts_with(&format!("TOML parse error at line {line}, column ")), "{e}");
        assert!(e.message.contains("hubs = = 1"), "{e} shows the line");
        assert!(e.to_string().starts_with("scenarios/t.toml: TOML parse error at line "), "{e}");
        // Duplicate keys and unterminated strings are syntax errors too.
        assert_eq!(error(&with("seeds = 7", "seeds = 7\nseeds = 8")).field, None);
        assert_eq!(error(&with(r#""a test scenario""#, r#""unterminated"#)).field, None);
        assert_eq!(error("\u{0}").field, None);
    }

    #[test]
    fn unknown_fields_are_named_at_every_depth() {
        let unknown = |from: &str, to: &str, field: &str, key: &str| {
            let part = format!("unknown field `{key}`");
            assert_toml(&with(from, to), Some(field), &part, &format!("{key} ="));
        };
        unknown("seeds = 7", "seeds = 7\nseed = 3", "seed", "seed");
        unknown("hubs = 1", "hubs = 1\nhub = 1", "topology.hub", "hub");
        unknown("auth = true", "auth = true\nuser = \"x\"", "listeners[0].user", "user");
        unknown("session_ids = 2", "sessions = 2", "workload.sessions", "sessions");
        let field = "workload.destinations[0].wieght";
        unknown("weight = 3", "weight = 3, wieght = 1", field, "wieght");
        unknown("jitter_ms = 1", "jitter = 1", "network.jitter", "jitter");
        let field = "network.latency_ms.avg";
        unknown("min = 2, max = 30", "min = 2, max = 30, avg = 9", field, "avg");
        unknown("max_faults = 3", "max_fault = 3", "faults.max_fault", "max_fault");
        // serde names the keys that would have been right.
        let text = with("jitter_ms = 1", "jitter = 1");
        assert_toml(&text, Some("network.jitter"), "`jitter_ms`", "jitter =");
    }

    #[test]
    fn wrong_types_name_the_field_and_the_expected_type() {
        let wrong = |from: &str, to: &str, field: &str, part: &str| {
            assert_toml(&with(from, to), Some(field), part, to.lines().last().unwrap());
        };
        wrong("seeds = 7", r#"seeds = "many""#, "seeds", "expected u32");
        wrong("seeds = 7", "seeds = -1", "seeds", "expected u32");
        wrong("seeds = 7", "seeds = 4294967296", "seeds", "expected u32");
        wrong("hubs = 1", "hubs = 1.5", "topology.hubs", "expected u32");
        wrong(r#"["de", "US"]"#, r#""de""#, "topology.countries", "expected a sequence");
        wrong("[\"dc\", \"isp:foo\"]", "[1]", "topology.labels[1][0]", "expected a string");
        wrong("fallback = false", "fallback = 0", "listeners[0].fallback", "a boolean");
        wrong(
            r#"sticky = "session""#,
            r#"sticky = "sometimes""#,
            "listeners[0].sticky",
            "`off`, `listener`",
        );
        wrong(
            r#"protocol = "socks5""#,
            r#"protocol = "socks4""#,
            "listeners[0].protocol",
            "unknown variant `socks4`",
        );
        wrong(
            r#"kind = "black_hole""#,
            r#"kind = "BlackHole""#,
            "workload.destinations[1].kind",
            "`black_hole`",
        );
        wrong(
            "domain_fraction = 0.25",
            r#"domain_fraction = "half""#,
            "workload.domain_fraction",
            "expected f64",
        );
        wrong(
            r#""one_way_partition""#,
            r#""split_brain""#,
            "faults.kinds[1]",
            "`one_way_partition`",
        );
        assert_toml(
            &with("[topology]", "topology = 3\n[other]"),
            Some("topology"),
            "integer `3`, expected a [topology] table",
            "topology = 3",
        );
    }

    #[test]
    fn missing_required_fields_are_named() {
        // toml points at the table that lacks the field, serde names it.
        let text = with("duration_secs = 30\n", "");
        assert_toml(&text, None, "missing field `duration_secs`", "");
        let text = with("payload_max = 5000\n", "");
        assert_toml(&text, Some("workload"), "missing field `payload_max`", "[workload]");
        let text = with("clients = 2\n", "");
        assert_toml(&text, Some("topology"), "missing field `clients`", "[topology]");
        let text = with("{ kind = \"echo\", weight = 3 }", "{ kind = \"echo\" }");
        let field = Some("workload.destinations[0]");
        assert_toml(&text, field, "missing field `weight`", "destinations =");
        let text = with("min = 2, max = 30", "min = 2");
        assert_toml(&text, Some("network.latency_ms"), "missing field `max`", "latency_ms =");
    }

    #[test]
    fn the_display_format_is_file_field_expected() {
        let e = error(&with("payload_min = 100", "payload_min = 10").replace("5000", "5"));
        assert_eq!(
            e.to_string(),
            "scenarios/t.toml: field `workload.payload_min`: expected a value ≤ \
             workload.payload_max (got 10 > 5)"
        );
    }

    #[test]
    fn every_validation_rule_names_its_field() {
        let cases: &[(&str, &str, &str, &str)] = &[
            (r#"name = "t""#, r#"name = "other""#, "name", "the file stem \"t\""),
            ("seeds = 7", "seeds = 0", "seeds", "≥ 1"),
            ("duration_secs = 30", "duration_secs = 0", "duration_secs", "≥ 1"),
            ("liveness_bound_secs = 15", "liveness_bound_secs = 0", "liveness_bound_secs", "≥ 1"),
            ("hubs = 1", "hubs = 0", "topology.hubs", "≥ 1"),
            ("exits = 3", "exits = 0", "topology.exits", "≥ 1"),
            ("clients = 2", "clients = 0", "topology.clients", "≥ 1"),
            (r#""US"]"#, r#""USA"]"#, "topology.countries[1]", "country code (got \"USA\")"),
            (r#""isp:foo""#, r#""ISP""#, "topology.labels[1][1]", "[a-z0-9_.:]"),
            (r#""isp:foo""#, r#""dc""#, "topology.labels[1][1]", "without repeats"),
            (r#""isp:foo""#, r#""a-b""#, "topology.labels[1][1]", "label"),
            (r#"country = "DE""#, r#"country = "D1""#, "listeners[0].country", "country code"),
            (r#"labels = ["dc"]"#, r#"labels = [""]"#, "listeners[0].labels[0]", "label"),
            ("retries = 3", "retries = 9", "listeners[0].retries", "≤ 8 (got 9)"),
            ("connections = 20", "connections = 0", "workload.connections", "≥ 1"),
            ("payload_max = 5000", "payload_max = 99", "workload.payload_min", "(got 100 > 99)"),
            ("payload_max = 5000", "payload_max = 67108865", "workload.payload_max", "64 MiB"),
            ("session_ids = 2", "session_ids = 0", "workload.session_ids", "≥ 1"),
            ("start_secs = 3", "start_secs = 30", "workload.start_secs", "(got 30 ≥ 30)"),
            (
                "domain_fraction = 0.25",
                "domain_fraction = 1.5",
                "workload.domain_fraction",
                "[0, 1]",
            ),
            (
                "domain_fraction = 0.25",
                "domain_fraction = -0.1",
                "workload.domain_fraction",
                "[0, 1]",
            ),
            ("domain_fraction = 0.25", "domain_fraction = nan", "workload.domain_fraction", "NaN"),
            (
                "min = 2, max = 30",
                "min = 31, max = 30",
                "network.latency_ms.min",
                "≤ network.latency_ms.max",
            ),
            ("bandwidth_mbps = 50", "bandwidth_mbps = 0", "network.bandwidth_mbps", "≥ 1"),
            ("min = 1, max = 20", "min = 21, max = 20", "network.dial_ms.min", "(got 21 > 20)"),
            (
                "keepalive_timeout_secs = 5",
                "keepalive_timeout_secs = 0",
                "network.keepalive_timeout_secs",
                "≥ 1",
            ),
            ("max_fault_secs = 8", "max_fault_secs = 0", "faults.max_fault_secs", "≥ 1"),
            (
                "reservation_ttl_secs = 90",
                "reservation_ttl_secs = 0",
                "relay.reservation_ttl_secs",
                "≥ 1",
            ),
            ("circuit_secs = 120", "circuit_secs = 0", "relay.circuit_secs", "≥ 1"),
            ("circuit_bytes = 131072", "circuit_bytes = 0", "relay.circuit_bytes", "≥ 1"),
            (
                "min = 100, max = 200",
                "min = 300, max = 200",
                "relay.autonat_ms.min",
                "(got 300 > 200)",
            ),
        ];
        for (from, to, field, expected) in cases {
            assert_field(&with(from, to), field, expected);
        }
        let seventeen: Vec<String> = (0..17).map(|i| format!("\"l{i}\"")).collect();
        assert_field(
            &with(r#"["residential"]"#, &format!("[{}]", seventeen.join(","))),
            "topology.labels[0]",
            "at most 16 labels",
        );
        // An empty listener list and an empty destination list.
        let text = format!("listeners = []\n{}", without_listeners(FULL));
        assert_field(&text, "listeners", "at least one listener");
        assert_field(
            &with(
                r#"destinations = [{ kind = "echo", weight = 3 }, { kind = "black_hole", weight = 1 }]"#,
                "destinations = []",
            ),
            "workload.destinations",
            "at least one destination",
        );
        assert_field(
            &with("weight = 3", "weight = 0").replace("weight = 1 }", "weight = 0 }"),
            "workload.destinations",
            "sum to more than 0",
        );
    }

    /// `text` without its `[[listeners]]` tables.
    fn without_listeners(text: &str) -> String {
        let mut out = String::new();
        let mut in_listener = false;
        for line in text.lines() {
            if line.starts_with('[') {
                in_listener = line == "[[listeners]]";
            }
            if !in_listener {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    #[test]
    fn names_are_checked_against_the_file_stem() {
        let e = parse_str(Path::new("elsewhere/other.toml"), FULL).unwrap_err();
        assert_eq!(e.file, Path::new("elsewhere/other.toml"));
        assert_eq!(e.field.as_deref(), Some("name"));
        assert_field(&with(r#"name = "t""#, r#"name = """#), "name", "non-empty");
    }

    /// A fresh, empty directory under the system temp dir for one test.
    fn scratch_dir(test: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("meshproxy-scenario-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn load_dir_reads_only_toml_files_sorted_by_name() {
        let dir = scratch_dir("sorted");
        for name in ["zeta", "alpha", "mid"] {
            std::fs::write(
                dir.join(format!("{name}.toml")),
                FULL.replace(r#"name = "t""#, &format!("name = {name:?}")),
            )
            .unwrap();
        }
        std::fs::write(dir.join("README.md"), "not a scenario").unwrap();
        let names: Vec<_> = load_dir(&dir).unwrap().into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["alpha", "mid", "zeta"]);

        std::fs::write(
            dir.join("broken.toml"),
            with("hubs = 1", "hubs = 0").replace(r#"name = "t""#, r#"name = "broken""#),
        )
        .unwrap();
        let e = load_dir(&dir).unwrap_err();
        assert_eq!(e.file, dir.join("broken.toml"));
        assert_eq!(e.field.as_deref(), Some("topology.hubs"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unreadable_paths_are_errors_without_a_field() {
        let missing = Path::new("/nonexistent/meshproxy/x.toml");
        let e = load_file(missing).unwrap_err();
        assert_eq!((e.file.as_path(), e.field.as_deref()), (missing, None));
        assert!(e.message.contains("readable"), "{e}");
        let e = load_dir(Path::new("/nonexistent/meshproxy")).unwrap_err();
        assert_eq!(e.field, None);
    }

    fn real_scenarios() -> Vec<Scenario> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        load_dir(&dir).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `[limits]` is the core's `Limits` (the keys a node's config file
    /// takes), so a scenario can set any of them, `max_sessions_per_exit`
    /// included, and every node runs with them.
    /// Without `max_directory_entries` a hub has room for every exit and
    /// agent (a 3,000-exit world failed liveness against a fixed 1,024).
    #[test]
    fn the_default_directory_holds_every_exit_and_agent() {
        let mut s = parse(FULL).unwrap();
        s.limits.max_directory_entries = None;
        s.topology.exits = 3_000;
        s.topology.agents = 5;
        assert_eq!(crate::topology::default_directory_entries(&s.topology), 3_005);
        s.topology.exits = 6;
        assert_eq!(crate::topology::default_directory_entries(&s.topology), 1_024);
    }

    #[test]
    fn a_scenario_sets_any_core_limit_for_every_node() {
        let text = format!(
            "{FULL}\n[limits]\nmax_sessions_per_exit = 3\nmax_client_sessions = 9\n\
             max_directory_entries = 8\n"
        );
        let s = parse(&text).unwrap();
        let want = meshproxy_core::config::Limits {
            max_sessions_per_exit: 3,
            max_client_sessions: 9,
            ..Default::default()
        };
        assert_eq!(s.limits.nodes, want);
        assert_eq!(s.limits.max_directory_entries, Some(8));
        let nodes = crate::topology::build(&s, 1);
        assert!(nodes.iter().all(|(_, config, _)| config.limits == want));
        let hub = nodes[0].1.hub.as_ref().unwrap();
        assert_eq!(hub.directory.max_entries, 8);
        // The flattened table reports at its header, naming the key.
        let typo = format!("{FULL}\n[limits]\nmax_sessions = 3\n");
        assert_toml(&typo, Some("limits"), "unknown field `max_sessions`", "[limits]");
    }

    #[test]
    fn every_file_in_scenarios_loads() {
        let names: Vec<_> = real_scenarios().into_iter().map(|s| s.name).collect();
        for expected in [
            "churn",
            "crash_restart",
            "hostile_destinations",
            "hub_outage",
            "latency",
            "mixed",
            "nat_matrix",
            "partition",
            "relay_caps",
            "relay_only_exits",
            "relay_restart",
            "smoke",
            "sticky",
        ] {
            assert!(names.iter().any(|n| n == expected), "scenarios/{expected}.toml missing");
        }
    }

    /// The default sweep must stay within a few minutes on two cores, so the
    /// shipped scenarios keep to the budget the sweep was sized for.
    #[test]
    fn shipped_scenarios_stay_light() {
        for s in real_scenarios() {
            let t = &s.topology;
            let w = &s.workload;
            // nat_matrix needs one client per NAT type.
            let clients = if s.name == "nat_matrix" { 5 } else { 3 };
            if s.name.starts_with("scale_") {
                // The scale family (issue #20) is big on purpose and pays
                // for it with few seeds: ~2.5 CPU-s a run at 1,104 nodes.
                let nodes = t.hubs + t.exits + t.clients + t.agents + t.gateways;
                assert!(nodes <= 1_200 && s.seeds <= 2, "{}: scale budget", s.name);
            } else {
                assert!(
                    t.hubs <= 2 && t.exits <= 6 && t.clients <= clients,
                    "{}: topology",
                    s.name
                );
            }
            assert!((20..=60).contains(&w.connections), "{}: connections", s.name);
            let max_payload = if s.name == "smoke" { 64 << 10 } else { 256 << 10 };
            assert!(w.payload_max <= max_payload, "{}: payload_max", s.name);
            assert!((30..=120).contains(&s.duration_secs), "{}: duration", s.name);
            assert!((20..=40).contains(&s.settle_secs), "{}: settle", s.name);
            assert!((15..=30).contains(&s.liveness_bound_secs), "{}: liveness", s.name);
            assert!(
                s.faults.max_faults <= 6 && s.faults.max_fault_secs <= 20,
                "{}: faults",
                s.name
            );
        }
        // The default sweep must be at least 1,000 runs and stay fast.
        let runs: u32 = real_scenarios().iter().map(|s| s.seeds).sum();
        assert!((1_000..=10_000).contains(&runs), "default sweep of {runs} runs");
    }

    #[test]
    fn mixed_covers_every_origin_and_fault_kind() {
        let mixed = real_scenarios().into_iter().find(|s| s.name == "mixed").unwrap();
        for kind in OriginKind::ALL {
            assert!(
                mixed.workload.destinations.iter().any(|d| d.kind == kind && d.weight > 0),
                "mixed lacks {kind}"
            );
        }
        // `mixed` has no gateways; `ingress_partition` is the one with gateway partitions.
        for kind in FaultKind::ALL.into_iter().filter(|k| *k != FaultKind::GatewayPartition) {
            assert!(mixed.faults.kinds.contains(&kind), "mixed lacks {kind}");
        }
        assert!(mixed.faults.max_faults > 0);
    }

    #[test]
    fn nat_matrix_covers_every_pair_of_nat_types() {
        let s = real_scenarios().into_iter().find(|s| s.name == "nat_matrix").unwrap();
        for nat in NatType::ALL {
            assert!(s.topology.exit_nat.contains(&nat), "no exit behind {nat}");
            assert!(s.topology.client_nat.contains(&nat), "no client behind {nat}");
        }
        assert!(s.faults.kinds.is_empty(), "every session must succeed");
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
            let _ = parse(&text);
        }

        #[test]
        fn toml_like_text_never_panics(text in "[a-z_\\[\\]{}=\",.0-9 \\n-]{0,300}") {
            if let Err(e) = parse(&text) {
                prop_assert_eq!(e.file, Path::new(FILE));
            }
        }

        /// Small edits to a valid file reach the deeper layers (types and
        /// validation); every outcome is a value or an error naming the file.
        #[test]
        fn edited_valid_files_never_panic(
            at in 0usize..FULL.len(),
            cut in 0usize..8,
            insert in "[a-z0-9_=\"\\[\\]{},.\\n -]{0,6}",
        ) {
            let mut text = FULL.to_owned();
            let start = (0..=at).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
            let end = (start..=(start + cut).min(text.len())).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(start);
            text.replace_range(start..end, &insert);
            if let Err(e) = parse(&text) {
                prop_assert_eq!(e.file, Path::new(FILE));
                prop_assert!(!e.message.is_empty());
            }
        }
    }
}
