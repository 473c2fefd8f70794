//! The TOML configuration file (`meshproxy run --config FILE`).
//!
//! Every table and field is listed in [`FileConfig`]; unknown keys are errors
//! that name the key (`deny_unknown_fields`), so a typo never silently falls
//! back to a default. Durations are integer milliseconds (`*_ms`).
//!
//! ```toml
//! identity = "meshproxy.key"        # Ed25519 key file, created 0600 if missing
//! state = "meshproxy.state"         # optional: sticky pins across restarts
//! listen = ["/ip4/0.0.0.0/tcp/4001"] # peer-to-peer listen multiaddrs
//! metrics = "127.0.0.1:9091"        # optional: Prometheus `GET /metrics` endpoint
//! reachability = "auto"             # auto (autonat decides) | public | private (behind NAT)
//! autonat_private_ips = false       # let autonat probe private/loopback addresses (LANs, tests)
//! threads = 2                       # optional: runtime worker threads (default: one per CPU)
//!
//! [[hubs]]                          # hubs to register with / find exits through
//! peer = "12D3KooW…"
//! addrs = ["/ip4/203.0.113.7/tcp/4001"]
//!
//! [hub]                             # serve as a hub
//! ttl_ms = 30000
//! ticket_lifetime_ms = 1200000      # tickets exits accept (default 20 min)
//! keys = [{ id = "alice", verifier = "…64 hex digits…" },          # clients (see crate::keys)
//!         { id = "exit-1", verifier = "…", roles = ["exit"] }]
//! relay = true                      # circuit relay v2 for admitted peers only (default true)
//! relay_max_reservations = 1024     # all peers together (default 1024)
//! relay_max_reservations_per_peer = 4
//! relay_reservation_ms = 3600000    # renewed by the client (default 1 h)
//! relay_max_circuits = 1024         # all peers together (default 1024)
//! relay_max_circuits_per_peer = 64  # as the circuit's source (default 64)
//! relay_max_circuit_ms = 3600000    # one circuit's lifetime (default 1 h, at most 7 days)
//! relay_max_circuit_bytes = 1073741824 # per direction (default 1 GiB, at least 1)
//!
//! [exit]                            # serve as an exit
//! credential = { id = "exit-1", token = "…" }
//! open = false                      # true: serve peers without a hub's ticket (a public exit)
//! allow = ["127.0.0.1:8080"]
//! country = "DE"
//! relay = "auto"                    # reserve at the hubs' relays: auto (when not reachable) | always | off
//!
//! [client]                          # serve local apps
//! credential = { id = "alice", token = "…" }
//! [[client.listeners]]
//! bind = "127.0.0.1:1080"
//! protocol = "both"                 # socks5 | http | both
//! relayed = true                    # may sessions run through a hub's relay (default true)
//! ```

use crate::identity::{parse_peer_id, Identity};
use crate::keys;
use crate::network::{RelayLimits, RELAY_MAX_DURATION};
use meshproxy_core::config::{
    ClientConfig, ExitConfig, HubConfig, HubContact, Limits, ListenerConfig, ListenerProtocol,
    NodeConfig, RelayMode, SelectionConfig, StickyMode, Timeouts, DEFAULT_TICKET_LIFETIME,
};
use meshproxy_core::directory::DirectoryConfig;
use meshproxy_core::http_connect::HttpAuthPolicy;
use meshproxy_core::io::Reachability;
use meshproxy_core::policy::{ExitPolicyConfig, PolicyRule, PortRange};
use meshproxy_core::record::{
    valid_label, Attrs, CountryCode, PeerAddr, PeerFilter, MAX_LABELS, MAX_LABEL_LEN,
};
use meshproxy_core::selection::backoff::Backoff;
use meshproxy_core::selection::breaker::BreakerConfig;
use meshproxy_core::socks::SocksAuthPolicy;
use meshproxy_core::ticket::{ed25519_key_of, TicketSigner};
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TOML is malformed, has an unknown key, or a value of the wrong type.
    #[error("config file {path}: {source}")]
    Toml {
        /// The file.
        path: PathBuf,
        /// What toml says (it names the key and line).
        source: toml::de::Error,
    },
    /// A value parsed but makes no sense (the message names the field).
    #[error("config: {0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

/// The whole file.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Ed25519 key file (default `meshproxy.key`).
    pub identity: Option<PathBuf>,
    /// State file for sticky pins; none means pins do not survive restarts.
    pub state: Option<PathBuf>,
    /// Peer-to-peer listen multiaddrs.
    #[serde(default)]
    pub listen: Vec<String>,
    /// Where to serve Prometheus metrics (`GET /metrics`); none means no endpoint.
    /// Keep it on loopback or a private network: the metrics are unauthenticated.
    pub metrics: Option<SocketAddr>,
    /// Hubs to use.
    #[serde(default)]
    pub hubs: Vec<HubEntry>,
    /// Deadlines.
    #[serde(default)]
    pub timeouts: TimeoutsFile,
    /// Bounds.
    #[serde(default)]
    pub limits: LimitsFile,
    /// The hub role, if served.
    pub hub: Option<HubFile>,
    /// The exit role, if served.
    pub exit: Option<ExitFile>,
    /// The client role, if served.
    pub client: Option<ClientFile>,
    /// `auto` (default: autonat finds out), `public` or `private`: whether other nodes can
    /// dial this one directly, as the operator knows it (behind NAT: `private`).
    pub reachability: Option<String>,
    /// Let autonat probe private and loopback addresses (LANs, test networks); default false.
    pub autonat_private_ips: Option<bool>,
    /// Worker threads of the node's runtime, 1 to [`MAX_THREADS`]; none means one per CPU.
    /// Bounds how many cores the node keeps busy on a machine it shares (name lookups and
    /// state-file writes run on tokio's blocking threads, outside the count).
    pub threads: Option<usize>,
}

/// The most worker threads `threads` may ask for.
pub const MAX_THREADS: usize = 1024;

/// One hub to use.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HubEntry {
    /// The hub's peer id (base58, `12D3KooW…`).
    pub peer: String,
    /// Where to dial it (multiaddrs).
    #[serde(default)]
    pub addrs: Vec<String>,
}

/// `[timeouts]`, in milliseconds; missing fields keep the defaults.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsFile {
    /// App handshake deadline.
    pub handshake_ms: Option<u64>,
    /// Peer request deadline.
    pub request_ms: Option<u64>,
    /// One exit attempt.
    pub attempt_ms: Option<u64>,
    /// A whole session setup.
    pub setup_budget_ms: Option<u64>,
    /// An exit's origin connect.
    pub origin_connect_ms: Option<u64>,
    /// A peer dial.
    pub dial_ms: Option<u64>,
    /// A hub request.
    pub hub_request_ms: Option<u64>,
    /// (Hubs) an unadmitted peer's answer to the challenge.
    pub auth_ms: Option<u64>,
    /// A splice with no traffic.
    pub idle_ms: Option<u64>,
}

/// `[limits]`; missing fields keep the defaults.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    /// Client sessions at once.
    pub max_client_sessions: Option<usize>,
    /// Exit sessions at once.
    pub max_exit_sessions: Option<usize>,
    /// Exit sessions per client peer.
    pub max_sessions_per_peer: Option<usize>,
    /// Hub streams at once.
    pub max_hub_streams: Option<usize>,
    /// (Hubs) hub streams one peer holds at once.
    pub max_hub_streams_per_peer: Option<usize>,
    /// (Hubs) unadmitted hub streams at once, all peers together.
    pub max_preauth_hub_streams: Option<usize>,
    /// Client sessions per listener.
    pub max_sessions_per_listener: Option<usize>,
    /// Client sessions per app source address.
    pub max_sessions_per_source: Option<usize>,
    /// Exit dials under way at once.
    pub max_pending_dials: Option<usize>,
    /// (Hubs) registrations under one admission key without its own `max_registrations`.
    pub max_registrations_per_key: Option<usize>,
    /// (Clients) sessions under way at one exit.
    pub max_sessions_per_exit: Option<usize>,
    /// Concurrent streams on one peer connection (clamped to 4096, where Yamux
    /// would panic); Yamux ends the connection of a peer that opens more.
    pub max_streams_per_connection: Option<usize>,
    /// Established peer connections to one peer (both directions).
    pub max_connections_per_peer: Option<u32>,
    /// Established inbound peer connections.
    pub max_incoming_connections: Option<u32>,
    /// Established outbound peer connections.
    pub max_outgoing_connections: Option<u32>,
    /// Peer connections still in their handshake, each direction.
    pub max_pending_connections: Option<u32>,
    /// Inbound peer connections (in their handshake or established) from one
    /// IPv4 address or IPv6 /64; relayed connections are not counted.
    pub max_connections_per_ip: Option<u32>,
}

pub use crate::keys::{CredentialFile, KeyFile};

/// `[hub]`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HubFile {
    /// Registration lifetime (default 30 s).
    pub ttl_ms: Option<u64>,
    /// Most exits registered (default 4096).
    pub max_entries: Option<usize>,
    /// Most records per lookup answer (default 64).
    pub max_find: Option<usize>,
    /// Who may register or look up, and as what (see [`crate::keys`]).
    #[serde(default)]
    pub keys: Vec<KeyFile>,
    /// How long the tickets of admitted peers last (default 20 min, at least 10 s);
    /// clients keep working through a hub outage for at least half of it.
    pub ticket_lifetime_ms: Option<u64>,
    /// Serve as a circuit relay v2 for admitted peers (default true); strangers are refused.
    pub relay: Option<bool>,
    /// Relay reservations at once, all peers together (default 1024).
    pub relay_max_reservations: Option<usize>,
    /// Relay reservations one peer holds at once (default 4).
    pub relay_max_reservations_per_peer: Option<usize>,
    /// How long a relay reservation lasts before the client must renew it (default 1 h).
    pub relay_reservation_ms: Option<u64>,
    /// Relayed circuits at once, all peers together (default 1024).
    pub relay_max_circuits: Option<usize>,
    /// Relayed circuits one peer opens at once (default 64).
    pub relay_max_circuits_per_peer: Option<usize>,
    /// How long one relayed circuit may live (default 1 h, at most 7 days).
    pub relay_max_circuit_ms: Option<u64>,
    /// Bytes one relayed circuit may carry in each direction (default 1 GiB).
    pub relay_max_circuit_bytes: Option<u64>,
}

/// `[exit]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExitFile {
    /// Proof of admission at the hubs.
    pub credential: CredentialFile,
    /// Multiaddrs clients can dial (default: the addresses `listen` bound).
    #[serde(default)]
    pub advertise: Vec<String>,
    /// Sessions advertised (default 256).
    pub capacity: Option<u32>,
    /// Two-letter country of the egress.
    pub country: Option<String>,
    /// Labels (at most 16).
    #[serde(default)]
    pub labels: Vec<String>,
    /// This host's own addresses (always denied as destinations).
    #[serde(default)]
    pub own_addrs: Vec<IpAddr>,
    /// Allow rules (`NET`, `NET:PORTS`, `[NET]:PORTS`).
    #[serde(default)]
    pub allow: Vec<String>,
    /// Deny rules.
    #[serde(default)]
    pub deny: Vec<String>,
    /// The only ports dialed (`443`, `8000-8080`); empty = all.
    #[serde(default)]
    pub allowed_ports: Vec<String>,
    /// Whether private/loopback/link-local ranges are refused (default true).
    pub default_deny_ranges: Option<bool>,
    /// Relay reservations at the hubs: `auto` (default: while not reachable directly),
    /// `always` or `off`.
    pub relay: Option<String>,
    /// Serve peers without a ticket from one of this exit's hubs: a public exit
    /// (default false; the node warns at start when true).
    pub open: Option<bool>,
}

impl ExitFile {
    /// An exit with this credential and every other field at its default.
    pub fn new(credential: CredentialFile) -> ExitFile {
        ExitFile {
            credential,
            advertise: Vec::new(),
            capacity: None,
            country: None,
            labels: Vec::new(),
            own_addrs: Vec::new(),
            allow: Vec::new(),
            deny: Vec::new(),
            allowed_ports: Vec::new(),
            default_deny_ranges: None,
            relay: None,
            open: None,
        }
    }
}

/// `[client]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClientFile {
    /// Proof of admission at the hubs.
    pub credential: CredentialFile,
    /// The listeners (at least one).
    pub listeners: Vec<ListenerFile>,
    /// Exit list refresh period (default 30 s).
    pub refresh_ms: Option<u64>,
    /// Exits asked for per lookup (default 64).
    pub find_limit: Option<u16>,
    /// Most pins remembered (default 10000).
    pub sticky_capacity: Option<usize>,
    /// Unused pins are forgotten after (default 24 h).
    pub sticky_ttl_ms: Option<u64>,
    /// Latency moving-average weight, 0..=1 (default 0.2).
    pub latency_alpha: Option<f64>,
    /// Per-exit retry delay after a failure (default 500 ms).
    pub backoff_base_ms: Option<u64>,
    /// Largest per-exit retry delay (default 30 s).
    pub backoff_max_ms: Option<u64>,
    /// Consecutive failures that open an exit's circuit breaker (default 5).
    pub breaker_failures: Option<u32>,
    /// How long an open breaker stays open (default 30 s).
    pub breaker_open_ms: Option<u64>,
    /// Probes let through a half-open breaker (default 1).
    pub breaker_half_open_probes: Option<u32>,
}

impl ClientFile {
    /// A client with this credential, no listeners yet and every other field
    /// at its default.
    pub fn new(credential: CredentialFile) -> ClientFile {
        ClientFile {
            credential,
            listeners: Vec::new(),
            refresh_ms: None,
            find_limit: None,
            sticky_capacity: None,
            sticky_ttl_ms: None,
            latency_alpha: None,
            backoff_base_ms: None,
            backoff_max_ms: None,
            breaker_failures: None,
            breaker_open_ms: None,
            breaker_half_open_probes: None,
        }
    }
}

/// One `[[client.listeners]]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenerFile {
    /// Where to listen (default `127.0.0.1:1080`).
    pub bind: Option<SocketAddr>,
    /// `socks5`, `http` or `both` (default).
    pub protocol: Option<String>,
    /// Exits must be in this country.
    pub country: Option<String>,
    /// Exits must carry these labels.
    #[serde(default)]
    pub labels: Vec<String>,
    /// `off` (default), `listener` or `session`.
    pub sticky: Option<String>,
    /// Whether a pinned connection may move to another exit (default true).
    pub fallback: Option<bool>,
    /// Further exits tried after one fails (default 2).
    pub retries: Option<u32>,
    /// Users allowed (SOCKS5 user/pass and HTTP Basic); none = no auth.
    #[serde(default)]
    pub users: Vec<UserFile>,
    /// Whether sessions may run over a hub's relay (default true); false: only exits
    /// reachable directly, over direct connections.
    pub relayed: Option<bool>,
}

/// A listener user.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UserFile {
    /// Username (without `-`: parameters follow a `-`).
    pub name: String,
    /// Password.
    pub password: String,
}

/// A listener's socket side, which the core does not see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenerSocket {
    /// Bind address.
    pub bind: SocketAddr,
    /// Whether it requires authentication.
    pub has_auth: bool,
}

impl FileConfig {
    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Io { path: path.to_owned(), source })?;
        FileConfig::parse(&text)
            .map_err(|source| ConfigError::Toml { path: path.to_owned(), source })
    }

    /// Parses config text.
    pub fn parse(text: &str) -> Result<FileConfig, toml::de::Error> {
        toml::from_str(text)
    }

    /// The node runtime's worker threads (`threads`), checked; none means one per CPU.
    pub fn worker_threads(&self) -> Result<Option<usize>, ConfigError> {
        match self.threads {
            Some(n) if n == 0 || n > MAX_THREADS => {
                Err(invalid(format!("threads = {n}: must be 1 to {MAX_THREADS}")))
            }
            threads => Ok(threads),
        }
    }

    /// The identity key file.
    pub fn identity_path(&self) -> PathBuf {
        self.identity.clone().unwrap_or_else(|| PathBuf::from("meshproxy.key"))
    }

    /// The sockets of the client listeners, in order.
    pub fn listener_sockets(&self) -> Vec<ListenerSocket> {
        self.client.as_ref().map_or_else(Vec::new, |c| {
            c.listeners
                .iter()
                .map(|l| ListenerSocket {
                    bind: l.bind.unwrap_or(crate::listener::DEFAULT_BIND),
                    has_auth: !l.users.is_empty(),
                })
                .collect()
        })
    }

    /// The core's configuration for the node with `identity` (a hub signs
    /// tickets with its key). `parse_addr` turns a multiaddr string into its
    /// binary form (the network layer's business). The driver fills in
    /// `wall_clock` and `entropy` when it starts the node.
    pub fn to_node_config(
        &self,
        identity: &Identity,
        parse_addr: &dyn Fn(&str) -> Result<PeerAddr, String>,
    ) -> Result<NodeConfig, ConfigError> {
        let peer_id = identity.peer_id();
        if self.hub.is_none() && self.exit.is_none() && self.client.is_none() {
            return Err(invalid("no role: add a [hub], [exit] and/or [client] table"));
        }
        self.worker_threads()?;
        let addrs = |list: &[String], field: &str| -> Result<Vec<PeerAddr>, ConfigError> {
            list.iter()
                .map(|a| parse_addr(a).map_err(|e| invalid(format!("{field}: `{a}`: {e}"))))
                .collect()
        };
        let mut hubs = Vec::new();
        for (i, h) in self.hubs.iter().enumerate() {
            let peer = parse_peer_id(&h.peer)
                .ok_or_else(|| invalid(format!("hubs[{i}].peer: `{}` is not a peer id", h.peer)))?;
            let ticket_key = ed25519_key_of(&peer);
            if ticket_key.is_none() && self.exit.as_ref().is_some_and(|e| e.open != Some(true)) {
                return Err(invalid(format!(
                    "hubs[{i}].peer: `{}` is not an Ed25519 peer id, so this exit cannot check                      the tickets it signs",
                    h.peer
                )));
            }
            let addrs = addrs(&h.addrs, &format!("hubs[{i}].addrs"))?;
            hubs.push(HubContact { peer, addrs, ticket_key });
        }
        if (self.exit.is_some() || self.client.is_some()) && hubs.is_empty() {
            return Err(invalid("exits and clients need at least one [[hubs]] entry"));
        }
        let hub = self.hub.as_ref().map(|h| hub_config(h, identity)).transpose()?;
        self.reachability()?;
        // Checked here too, so `check` and every start path refuse a bad relay table.
        self.relay_limits()?;
        let exit = match &self.exit {
            Some(e) => {
                let own = own_ips(&self.listen, &e.advertise, &e.own_addrs);
                Some(exit_config(e, addrs(&e.advertise, "exit.advertise")?, own)?)
            }
            None => None,
        };
        let client = self.client.as_ref().map(client_config).transpose()?;
        Ok(NodeConfig {
            peer_id,
            hubs,
            hub,
            exit,
            client,
            timeouts: timeouts(&self.timeouts)?,
            limits: limits(&self.limits)?,
            relay: meshproxy_core::config::RelayConfig::default(),
            wall_clock: Duration::ZERO,
            entropy: None,
        })
    }
}

impl FileConfig {
    /// The reachability the operator states: `None` for `auto` (autonat decides).
    pub fn reachability(&self) -> Result<Option<Reachability>, ConfigError> {
        match self.reachability.as_deref().unwrap_or("auto") {
            "auto" => Ok(None),
            "public" => Ok(Some(Reachability::Public)),
            "private" => Ok(Some(Reachability::Private)),
            other => {
                Err(invalid(format!("reachability: `{other}`, expected auto, public or private")))
            }
        }
    }

    /// The relay a hub serves: `None` unless there is a `[hub]` table whose `relay` is not
    /// `false`.
    pub fn relay_limits(&self) -> Result<Option<RelayLimits>, ConfigError> {
        let Some(h) = &self.hub else { return Ok(None) };
        if h.relay == Some(false) {
            return Ok(None);
        }
        let counts = [
            ("relay_max_reservations", h.relay_max_reservations),
            ("relay_max_reservations_per_peer", h.relay_max_reservations_per_peer),
            ("relay_max_circuits", h.relay_max_circuits),
            ("relay_max_circuits_per_peer", h.relay_max_circuits_per_peer),
        ];
        if let Some((name, _)) = counts.iter().find(|(_, v)| *v == Some(0)) {
            return Err(invalid(format!(
                "hub.{name}: must be greater than 0 (set `relay = false` to serve no relay)"
            )));
        }
        let max_ms = RELAY_MAX_DURATION.as_millis();
        for (name, v) in [
            ("relay_reservation_ms", h.relay_reservation_ms),
            ("relay_max_circuit_ms", h.relay_max_circuit_ms),
        ] {
            if v.is_some_and(|v| v == 0 || u128::from(v) > max_ms) {
                return Err(invalid(format!("hub.{name}: must be within 1..={max_ms}")));
            }
        }
        if h.relay_max_circuit_bytes == Some(0) {
            return Err(invalid("hub.relay_max_circuit_bytes: must be greater than 0"));
        }
        let d = RelayLimits::default();
        Ok(Some(RelayLimits {
            max_reservations: h.relay_max_reservations.unwrap_or(d.max_reservations),
            max_reservations_per_peer: h
                .relay_max_reservations_per_peer
                .unwrap_or(d.max_reservations_per_peer),
            reservation_duration: ms(h.relay_reservation_ms, d.reservation_duration),
            max_circuits: h.relay_max_circuits.unwrap_or(d.max_circuits),
            max_circuits_per_peer: h.relay_max_circuits_per_peer.unwrap_or(d.max_circuits_per_peer),
            max_circuit_duration: ms(h.relay_max_circuit_ms, d.max_circuit_duration),
            max_circuit_bytes: h.relay_max_circuit_bytes.unwrap_or(d.max_circuit_bytes),
        }))
    }
}

fn ms(v: Option<u64>, default: Duration) -> Duration {
    v.map_or(default, Duration::from_millis)
}

fn timeouts(t: &TimeoutsFile) -> Result<Timeouts, ConfigError> {
    let all = [
        ("handshake_ms", t.handshake_ms),
        ("request_ms", t.request_ms),
        ("attempt_ms", t.attempt_ms),
        ("setup_budget_ms", t.setup_budget_ms),
        ("origin_connect_ms", t.origin_connect_ms),
        ("dial_ms", t.dial_ms),
        ("hub_request_ms", t.hub_request_ms),
        ("auth_ms", t.auth_ms),
        ("idle_ms", t.idle_ms),
    ];
    // A zero deadline would fire at once and make the node useless.
    if let Some((name, _)) = all.iter().find(|(_, v)| *v == Some(0)) {
        return Err(invalid(format!("timeouts.{name}: must be greater than 0")));
    }
    let d = Timeouts::default();
    Ok(Timeouts {
        handshake: ms(t.handshake_ms, d.handshake),
        request: ms(t.request_ms, d.request),
        attempt: ms(t.attempt_ms, d.attempt),
        setup_budget: ms(t.setup_budget_ms, d.setup_budget),
        origin_connect: ms(t.origin_connect_ms, d.origin_connect),
        dial: ms(t.dial_ms, d.dial),
        hub_request: ms(t.hub_request_ms, d.hub_request),
        auth: ms(t.auth_ms, d.auth),
        idle: ms(t.idle_ms, d.idle),
    })
}

fn limits(l: &LimitsFile) -> Result<Limits, ConfigError> {
    let d = Limits::default();
    for (name, v) in [
        ("max_hub_streams_per_peer", l.max_hub_streams_per_peer),
        ("max_preauth_hub_streams", l.max_preauth_hub_streams),
        ("max_registrations_per_key", l.max_registrations_per_key),
    ] {
        if v == Some(0) {
            return Err(invalid(format!("limits.{name}: must be at least 1")));
        }
    }
    Ok(Limits {
        max_client_sessions: l.max_client_sessions.unwrap_or(d.max_client_sessions),
        max_exit_sessions: l.max_exit_sessions.unwrap_or(d.max_exit_sessions),
        max_sessions_per_peer: l.max_sessions_per_peer.unwrap_or(d.max_sessions_per_peer),
        max_hub_streams: l.max_hub_streams.unwrap_or(d.max_hub_streams),
        max_hub_streams_per_peer: l.max_hub_streams_per_peer.unwrap_or(d.max_hub_streams_per_peer),
        max_preauth_hub_streams: l.max_preauth_hub_streams.unwrap_or(d.max_preauth_hub_streams),
        max_sessions_per_listener: l
            .max_sessions_per_listener
            .unwrap_or(d.max_sessions_per_listener),
        max_sessions_per_source: l.max_sessions_per_source.unwrap_or(d.max_sessions_per_source),
        max_pending_dials: l.max_pending_dials.unwrap_or(d.max_pending_dials),
        max_registrations_per_key: l
            .max_registrations_per_key
            .unwrap_or(d.max_registrations_per_key),
        max_sessions_per_exit: l.max_sessions_per_exit.unwrap_or(d.max_sessions_per_exit),
    })
}

/// The shortest ticket lifetime a hub may configure: renewal at half of it
/// must leave room for a round trip.
const MIN_TICKET_LIFETIME: Duration = Duration::from_secs(10);

fn hub_config(h: &HubFile, identity: &Identity) -> Result<HubConfig, ConfigError> {
    let keys = keys::admission_keys(&h.keys)?;
    let ticket_lifetime = ms(h.ticket_lifetime_ms, DEFAULT_TICKET_LIFETIME);
    if ticket_lifetime < MIN_TICKET_LIFETIME || ticket_lifetime.as_secs() > u64::from(u32::MAX) {
        return Err(invalid(format!(
            "hub.ticket_lifetime_ms: must be within {}..={}",
            MIN_TICKET_LIFETIME.as_millis(),
            u64::from(u32::MAX) * 1000
        )));
    }
    let d = DirectoryConfig::default();
    Ok(HubConfig {
        directory: DirectoryConfig {
            ttl: ms(h.ttl_ms, d.ttl),
            max_entries: h.max_entries.unwrap_or(d.max_entries),
        },
        keys,
        max_find: h.max_find.unwrap_or(64),
        signer: TicketSigner::from_secret(identity.secret_bytes()),
        ticket_lifetime,
    })
}

fn country(field: &str, v: &Option<String>) -> Result<Option<CountryCode>, ConfigError> {
    match v {
        None => Ok(None),
        Some(s) => CountryCode::parse(s)
            .map(Some)
            .ok_or_else(|| invalid(format!("{field}: `{s}` is not a two-letter country code"))),
    }
}

fn labels(field: &str, v: &[String]) -> Result<Vec<String>, ConfigError> {
    if let Some(bad) = v.iter().find(|l| !valid_label(l)) {
        return Err(invalid(format!(
            "{field}: `{bad}` is not a label (1 to {MAX_LABEL_LEN} of a-z 0-9 _ . :, no `-`, \
             which separates parameters in SOCKS5 usernames)"
        )));
    }
    let mut out = v.to_vec();
    out.sort();
    out.dedup();
    if out.len() > MAX_LABELS {
        return Err(invalid(format!("{field}: at most {MAX_LABELS} labels")));
    }
    Ok(out)
}

fn rules(field: &str, v: &[String]) -> Result<Vec<PolicyRule>, ConfigError> {
    v.iter().map(|r| r.parse().map_err(|e| invalid(format!("{field}: {e}")))).collect()
}

/// The IP addresses this node is known by: `exit.own_addrs`, the IPs in its
/// `listen` and `exit.advertise` multiaddrs, and every interface address when
/// it listens on an unspecified one. An exit denies all of them as
/// destinations (DESIGN §6), so a client cannot reach services on the exit
/// host through its public address unless `exit.allow` says so.
fn own_ips(listen: &[String], advertise: &[String], extra: &[IpAddr]) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = extra.to_vec();
    for addr in listen.iter().chain(advertise) {
        let mut parts = addr.split('/').skip(1);
        let ip = match (parts.next(), parts.next()) {
            (Some("ip4" | "ip6"), Some(ip)) => ip.parse::<IpAddr>().ok(),
            _ => None,
        };
        match ip {
            Some(ip) if ip.is_unspecified() => {
                // Best effort: without the interface list, the explicit
                // addresses above are still denied.
                let ifaces = if_addrs::get_if_addrs().unwrap_or_default();
                ips.extend(ifaces.iter().map(if_addrs::Interface::ip));
            }
            Some(ip) => ips.push(ip),
            None => {}
        }
    }
    ips.sort();
    ips.dedup();
    ips
}

fn exit_config(
    e: &ExitFile,
    addrs: Vec<PeerAddr>,
    own_addrs: Vec<IpAddr>,
) -> Result<ExitConfig, ConfigError> {
    let allowed_ports = e
        .allowed_ports
        .iter()
        .map(|p| {
            p.parse::<PortRange>().map_err(|err| invalid(format!("exit.allowed_ports: {err}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ExitConfig {
        policy: ExitPolicyConfig {
            allow: rules("exit.allow", &e.allow)?,
            deny: rules("exit.deny", &e.deny)?,
            allowed_ports,
            default_deny_ranges: e.default_deny_ranges.unwrap_or(true),
        },
        own_addrs,
        attrs: Attrs {
            country: country("exit.country", &e.country)?,
            labels: labels("exit.labels", &e.labels)?,
        },
        addrs,
        capacity: e.capacity.unwrap_or(256),
        credential: keys::credential("exit.credential", &e.credential)?,
        open: e.open.unwrap_or(false),
        relay: match e.relay.as_deref().unwrap_or("auto") {
            "auto" => RelayMode::Auto,
            "always" => RelayMode::Always,
            "off" => RelayMode::Off,
            other => {
                return Err(invalid(format!("exit.relay: `{other}`, expected auto, always or off")))
            }
        },
    })
}

fn client_config(c: &ClientFile) -> Result<ClientConfig, ConfigError> {
    if c.listeners.is_empty() {
        return Err(invalid("client.listeners: at least one listener"));
    }
    let mut listeners = Vec::new();
    for (i, l) in c.listeners.iter().enumerate() {
        let field = |f: &str| format!("client.listeners[{i}].{f}");
        let protocol = match l.protocol.as_deref().unwrap_or("both") {
            "socks5" => ListenerProtocol::Socks5,
            "http" => ListenerProtocol::Http,
            "both" => ListenerProtocol::Both,
            other => {
                return Err(invalid(format!(
                    "{}: `{other}`, expected socks5, http or both",
                    field("protocol")
                )))
            }
        };
        let sticky = match l.sticky.as_deref().unwrap_or("off") {
            "off" => StickyMode::Off,
            "listener" => StickyMode::Listener,
            "session" => StickyMode::Session,
            other => {
                return Err(invalid(format!(
                    "{}: `{other}`, expected off, listener or session",
                    field("sticky")
                )))
            }
        };
        let users: Vec<(String, String)> =
            l.users.iter().map(|u| (u.name.clone(), u.password.clone())).collect();
        if let Some(u) = users.iter().find(|(name, _)| name.contains('-') || name.is_empty()) {
            return Err(invalid(format!(
                "{}: `{}` must be non-empty and contain no `-` (parameters follow a `-`)",
                field("users"),
                u.0
            )));
        }
        let (socks_auth, http_auth) = if users.is_empty() {
            (SocksAuthPolicy::NoAuth, HttpAuthPolicy::NoAuth)
        } else {
            (SocksAuthPolicy::UserPass(users.clone()), HttpAuthPolicy::Basic(users))
        };
        let d = ListenerConfig::default();
        listeners.push(ListenerConfig {
            protocol,
            filter: PeerFilter {
                country: country(&field("country"), &l.country)?,
                labels: labels(&field("labels"), &l.labels)?,
            },
            sticky,
            fallback: l.fallback.unwrap_or(d.fallback),
            socks_auth: Arc::new(socks_auth),
            http_auth: Arc::new(http_auth),
            retries: l.retries.unwrap_or(d.retries),
            relayed: l.relayed.unwrap_or(d.relayed),
        });
    }
    let d = SelectionConfig::default();
    let alpha = c.latency_alpha.unwrap_or(d.latency_alpha);
    if !(0.0..=1.0).contains(&alpha) {
        return Err(invalid("client.latency_alpha: must be within 0..=1"));
    }
    let backoff = match (c.backoff_base_ms, c.backoff_max_ms) {
        (None, None) => d.backoff,
        (base, max) => {
            Backoff::new(ms(base, Duration::from_millis(500)), ms(max, Duration::from_secs(30)))
        }
    };
    Ok(ClientConfig {
        listeners,
        selection: SelectionConfig {
            backoff,
            breaker: BreakerConfig {
                failure_threshold: c.breaker_failures.unwrap_or(d.breaker.failure_threshold),
                open_for: ms(c.breaker_open_ms, d.breaker.open_for),
                half_open_probes: c.breaker_half_open_probes.unwrap_or(d.breaker.half_open_probes),
            },
            refresh: ms(c.refresh_ms, d.refresh),
            find_limit: c.find_limit.unwrap_or(d.find_limit),
            sticky_capacity: c.sticky_capacity.unwrap_or(d.sticky_capacity),
            sticky_ttl: ms(c.sticky_ttl_ms, d.sticky_ttl),
            latency_alpha: alpha,
        },
        credential: keys::credential("client.credential", &c.credential)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use meshproxy_core::admission::RoleSet;
    use meshproxy_core::wire::hub::Role;

    fn hub_id() -> String {
        Identity::from_secret([1; 32]).peer_id_string()
    }

    fn fake_addr(s: &str) -> Result<PeerAddr, String> {
        if s.starts_with('/') {
            Ok(PeerAddr(s.as_bytes().to_vec()))
        } else {
            Err("not a multiaddr".into())
        }
    }

    fn full() -> String {
        format!(
            r#"
identity = "k.key"
state = "s.state"
listen = ["/ip4/0.0.0.0/tcp/4001"]
metrics = "127.0.0.1:9091"

[[hubs]]
peer = "{hub}"
addrs = ["/ip4/203.0.113.7/tcp/4001"]

[timeouts]
handshake_ms = 5000
idle_ms = 60000

[limits]
max_client_sessions = 10
max_sessions_per_listener = 9
max_sessions_per_source = 8
max_pending_dials = 7
max_registrations_per_key = 6

[hub]
ttl_ms = 20000
keys = [{{ id = "a", token = "a-token-0123456789abcdef" }}, {{ id = "b", verifier = "{sha}", roles = ["exit", "client"], peer = "{hub}", max_registrations = 3 }}]

[exit]
credential = {{ id = "e", token = "x-token-0123456789abcdef" }}
country = "de"
labels = ["dc", "dc", "isp:foo"]
allow = ["127.0.0.1:8080"]
allowed_ports = ["443", "8000-8080"]

[client]
credential = {{ id = "c", token = "y-token-0123456789abcdef" }}
refresh_ms = 1000

[[client.listeners]]
bind = "127.0.0.1:1080"
protocol = "socks5"
sticky = "session"
users = [{{ name = "u", password = "p" }}]

[[client.listeners]]
"#,
            hub = hub_id(),
            sha = "00".repeat(32)
        )
    }

    #[test]
    fn a_full_config_maps_onto_the_core_config() {
        let file = FileConfig::parse(&full()).expect("parses");
        let node = file.to_node_config(&Identity::from_secret([5; 32]), &fake_addr).expect("valid");
        assert_eq!(node.hubs.len(), 1);
        assert_eq!(node.timeouts.handshake, Duration::from_millis(5000));
        assert_eq!(node.timeouts.request, Timeouts::default().request);
        assert_eq!(node.limits.max_client_sessions, 10);
        let l = node.limits;
        assert_eq!(
            (
                l.max_sessions_per_listener,
                l.max_sessions_per_source,
                l.max_pending_dials,
                l.max_registrations_per_key
            ),
            (9, 8, 7, 6)
        );
        let hub = node.hub.expect("hub role");
        assert_eq!(hub.keys.len(), 2);
        assert_eq!(hub.keys[0].roles, RoleSet::CLIENT);
        assert_eq!(hub.keys[1].verifier.0, [0; 32]);
        assert_eq!(hub.keys[1].roles, RoleSet::EXIT.with(Role::Client));
        assert_eq!(hub.keys[1].peer, parse_peer_id(&hub_id()));
        assert_eq!(hub.keys[1].max_registrations, Some(3));
        assert_eq!(hub.ticket_lifetime, DEFAULT_TICKET_LIFETIME);
        assert_eq!(node.hubs[0].ticket_key, ed25519_key_of(&node.hubs[0].peer));
        assert!(node.hubs[0].ticket_key.is_some());
        let exit = node.exit.expect("exit role");
        assert_eq!(exit.attrs.country, CountryCode::parse("DE"));
        assert_eq!(exit.attrs.labels, vec!["dc".to_string(), "isp:foo".to_string()]);
        assert_eq!(exit.policy.allowed_ports.len(), 2);
        let client = node.client.expect("client role");
        assert_eq!(client.listeners.len(), 2);
        assert_eq!(client.listeners[0].protocol, ListenerProtocol::Socks5);
        assert_eq!(client.listeners[0].sticky, StickyMode::Session);
        assert_eq!(client.listeners[1].protocol, ListenerProtocol::Both);
        let sockets = file.listener_sockets();
        assert!(sockets[0].has_auth && !sockets[1].has_auth);
        assert_eq!(sockets[1].bind, crate::listener::DEFAULT_BIND);
        assert_eq!(file.identity_path(), PathBuf::from("k.key"));
        assert_eq!(file.metrics, Some(SocketAddr::from(([127, 0, 0, 1], 9091))));
    }

    #[test]
    fn the_metrics_address_is_optional_and_must_be_a_socket_address() {
        assert_eq!(FileConfig::parse("").expect("parses").metrics, None);
        let err = FileConfig::parse("metrics = \"localhost\"").expect_err("no port").to_string();
        assert!(err.contains("metrics"), "{err}");
    }

    #[test]
    fn hubs_relay_by_default_and_the_relay_table_is_checked() {
        let hub = |extra: &str| FileConfig::parse(&format!("[hub]\n{extra}")).expect("parses");
        assert_eq!(hub("").relay_limits().expect("valid"), Some(RelayLimits::default()));
        assert_eq!(hub("relay = false").relay_limits().expect("valid"), None);
        assert_eq!(FileConfig::parse("").expect("parses").relay_limits().expect("valid"), None);
        let set = hub("relay_max_reservations = 10\nrelay_max_reservations_per_peer = 2\n\
             relay_reservation_ms = 60000\nrelay_max_circuits = 20\n\
             relay_max_circuits_per_peer = 3\nrelay_max_circuit_ms = 1000\n\
             relay_max_circuit_bytes = 4096")
        .relay_limits()
        .expect("valid")
        .expect("relay on");
        assert_eq!(
            set,
            RelayLimits {
                max_reservations: 10,
                max_reservations_per_peer: 2,
                reservation_duration: Duration::from_secs(60),
                max_circuits: 20,
                max_circuits_per_peer: 3,
                max_circuit_duration: Duration::from_secs(1),
                max_circuit_bytes: 4096,
            }
        );
        for bad in [
            "relay_max_circuits = 0",
            "relay_max_reservations_per_peer = 0",
            "relay_max_circuit_ms = 0",
            "relay_reservation_ms = 604800001",
            "relay_max_circuit_bytes = 0",
        ] {
            let name = bad.split(' ').next().unwrap_or_default();
            let file = hub(bad);
            let err = file.relay_limits().expect_err(bad).to_string();
            assert!(err.contains(&format!("hub.{name}")), "{bad} → {err}");
            let err =
                file.to_node_config(&Identity::from_secret([1; 32]), &fake_addr).expect_err(bad);
            assert!(err.to_string().contains(name), "{bad} → {err}");
        }
        // A bad value under `relay = false` is ignored: nothing uses it.
        assert!(hub("relay = false\nrelay_max_circuits = 0").relay_limits().is_ok());
        let err = FileConfig::parse("[hub]\nrelay_max_circuit = 5").expect_err("typo").to_string();
        assert!(err.contains("relay_max_circuit"), "{err}");
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        for (text, key) in [
            ("idenity = \"x\"", "idenity"),
            ("[timeouts]\nhandshake = 5", "handshake"),
            (
                "[client]\ncredential = { id = \"c\", token = \"t-token-0123456789abcdef\", extra = 1 }\nlisteners = []",
                "extra",
            ),
            ("[[hubs]]\npeer = \"x\"\naddr = []", "addr"),
        ] {
            let err = FileConfig::parse(text).expect_err(text).to_string();
            assert!(err.contains(key), "{text:?} → {err}");
        }
    }

    #[test]
    fn nonsense_values_are_rejected_with_the_field_named() {
        // A hub alone needs no [[hubs]].
        assert!(FileConfig::parse("[hub]")
            .expect("parses")
            .to_node_config(&Identity::from_secret([1; 32]), &fake_addr)
            .is_ok());
        for (text, needle) in [
            (
                "[exit]\ncredential = { id = \"e\", token = \"x-token-0123456789abcdef\" }",
                "[[hubs]]",
            ),
            ("", "no role"),
        ] {
            let err = FileConfig::parse(text)
                .expect("parses")
                .to_node_config(&Identity::from_secret([1; 32]), &fake_addr)
                .expect_err(text)
                .to_string();
            assert!(err.contains(needle), "{text:?} → {err}");
        }
        let bad = full().replace("protocol = \"socks5\"", "protocol = \"socks4\"");
        let err = FileConfig::parse(&bad)
            .expect("parses")
            .to_node_config(&Identity::from_secret([1; 32]), &fake_addr)
            .expect_err("socks4")
            .to_string();
        assert!(err.contains("client.listeners[0].protocol"), "{err}");
        let bad = full().replace("/ip4/203.0.113.7/tcp/4001", "203.0.113.7:4001");
        let err = FileConfig::parse(&bad)
            .expect("parses")
            .to_node_config(&Identity::from_secret([1; 32]), &fake_addr)
            .expect_err("addr")
            .to_string();
        assert!(err.contains("hubs[0].addrs"), "{err}");
        let bad = full().replace("idle_ms = 60000", "idle_ms = 0");
        let err = FileConfig::parse(&bad)
            .expect("parses")
            .to_node_config(&Identity::from_secret([1; 32]), &fake_addr)
            .expect_err("zero idle")
            .to_string();
        assert!(err.contains("timeouts.idle_ms"), "{err}");
    }

    /// Regression: a label with `-` passed the config but failed to encode on
    /// the wire, so the exit never registered (found by `meshproxy demo`).
    #[test]
    fn labels_the_wire_cannot_carry_are_rejected_at_load() {
        let bad = full().replace("\"isp:foo\"", "\"exit-a\"");
        assert_ne!(bad, full(), "the fixture has the label");
        let err = FileConfig::parse(&bad)
            .expect("parses")
            .to_node_config(&Identity::from_secret([1; 32]), &fake_addr)
            .expect_err("label with -")
            .to_string();
        assert!(err.contains("exit.labels") && err.contains("`exit-a`"), "{err}");
    }

    #[test]
    fn nat_keys_map_onto_the_core_config_and_bad_values_are_named() {
        let base = |top: &str, exit: &str, listener: &str| {
            format!(
                "{top}\n[[hubs]]\npeer = \"{}\"\n[exit]\ncredential = {{ id = \"e\", token = \"x-token-0123456789abcdef\" }}\n{exit}\n\
                 [client]\ncredential = {{ id = \"c\", token = \"y-token-0123456789abcdef\" }}\n[[client.listeners]]\n{listener}\n",
                hub_id()
            )
        };
        let node = |text: &str| {
            FileConfig::parse(text)
                .expect("parses")
                .to_node_config(&Identity::from_secret([5; 32]), &fake_addr)
        };
        // Defaults: autonat decides, reserve when unreachable, relayed paths allowed.
        let defaults = FileConfig::parse(&base("", "", "")).expect("parses");
        assert_eq!(defaults.reachability().expect("valid"), None);
        let d = node(&base("", "", "")).expect("valid");
        assert_eq!(d.exit.expect("exit").relay, RelayMode::Auto);
        assert!(d.client.expect("client").listeners[0].relayed);
        for (word, mode) in
            [("auto", RelayMode::Auto), ("always", RelayMode::Always), ("off", RelayMode::Off)]
        {
            let n = node(&base("", &format!("relay = \"{word}\""), "")).expect("valid");
            assert_eq!(n.exit.expect("exit").relay, mode);
        }
        let n = node(&base("", "", "relayed = false")).expect("valid");
        assert!(!n.client.expect("client").listeners[0].relayed);
        for (word, r) in [
            ("auto", None),
            ("public", Some(Reachability::Public)),
            ("private", Some(Reachability::Private)),
        ] {
            let f = FileConfig::parse(&base(&format!("reachability = \"{word}\""), "", ""))
                .expect("parses");
            assert_eq!(f.reachability().expect("valid"), r);
        }
        let f = FileConfig::parse(&base("autonat_private_ips = true", "", "")).expect("parses");
        assert_eq!(f.autonat_private_ips, Some(true));
        let err =
            node(&base("reachability = \"behind-nat\"", "", "")).expect_err("bad").to_string();
        assert!(err.contains("reachability") && err.contains("behind-nat"), "{err}");
        let err = node(&base("", "relay = \"sometimes\"", "")).expect_err("bad").to_string();
        assert!(err.contains("exit.relay") && err.contains("sometimes"), "{err}");
        let err =
            FileConfig::parse(&base("", "", "relayed = \"no\"")).expect_err("bool").to_string();
        assert!(err.contains("relayed"), "{err}");
    }

    #[test]
    fn threads_are_one_per_cpu_unless_set_and_out_of_range_counts_are_named() {
        let with = |top: &str| format!("{top}\n[hub]\n");
        let parse = |top: &str| FileConfig::parse(&with(top)).expect("parses");
        assert_eq!(parse("").worker_threads().expect("valid"), None);
        assert_eq!(parse("threads = 1").worker_threads().expect("valid"), Some(1));
        let most = format!("threads = {MAX_THREADS}");
        assert_eq!(parse(&most).worker_threads().expect("valid"), Some(MAX_THREADS));
        for bad in ["threads = 0", "threads = 1025"] {
            let file = parse(bad);
            let err = file.worker_threads().expect_err(bad).to_string();
            assert!(err.contains(bad) && err.contains("1 to 1024"), "{err}");
            // The core config is refused as well, whatever path loads the file.
            let err =
                file.to_node_config(&Identity::from_secret([5; 32]), &fake_addr).expect_err(bad);
            assert!(err.to_string().contains("threads"), "{err}");
        }
        let err = FileConfig::parse(&with("threads = -1")).expect_err("negative").to_string();
        assert!(err.contains("threads"), "{err}");
    }

    #[test]
    fn admission_settings_are_checked_where_they_are_read() {
        let node = |text: &str| {
            FileConfig::parse(text)
                .expect("parses")
                .to_node_config(&Identity::from_secret([5; 32]), &fake_addr)
        };
        let exit = |extra: &str, hub_peer: &str| {
            format!(
                "[[hubs]]\npeer = \"{hub_peer}\"\n[exit]\n\
                 credential = {{ id = \"e\", token = \"e-token-0123456789abcdef\" }}\n{extra}"
            )
        };
        // Exits are closed unless they say otherwise.
        assert!(!node(&exit("", &hub_id())).expect("valid").exit.expect("exit").open);
        assert!(node(&exit("open = true", &hub_id())).expect("valid").exit.expect("exit").open);
        // A closed exit must be able to check its hubs' tickets: an RSA-style
        // (SHA-256) peer id carries no Ed25519 key.
        let rsa = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N";
        let err = node(&exit("", rsa)).expect_err("no ticket key").to_string();
        assert!(err.contains("hubs[0].peer") && err.contains("tickets"), "{err}");
        assert!(node(&exit("open = true", rsa)).is_ok(), "an open exit checks no tickets");
        // Short tokens, anywhere a token is given.
        let short =
            "[[hubs]]\npeer = \"P\"\n[exit]\ncredential = { id = \"e\", token = \"tiny\" }\n"
                .replace('P', &hub_id());
        let err = node(&short).expect_err("short token").to_string();
        assert!(err.contains("exit.credential.token") && err.contains("token new"), "{err}");
        let hub = |keys: &str| format!("[hub]\n{keys}");
        let err = node(&hub("keys = [{ id = \"a\", token_sha256 = \"00\" }]"))
            .expect_err("old")
            .to_string();
        assert!(err.contains("token_sha256: no longer accepted"), "{err}");
        for (bad, field) in [
            ("ticket_lifetime_ms = 5000", "hub.ticket_lifetime_ms"),
            (
                "keys = [{ id = \"a\", token = \"a-token-0123456789abcdef\", roles = [\"root\"] }]",
                "hub.keys[0].roles",
            ),
        ] {
            let err = node(&hub(bad)).expect_err(bad).to_string();
            assert!(err.contains(field), "{bad}: {err}");
        }
        let err =
            node("[limits]\nmax_hub_streams_per_peer = 0\n[hub]\n").expect_err("zero").to_string();
        assert!(err.contains("limits.max_hub_streams_per_peer"), "{err}");
    }
}
