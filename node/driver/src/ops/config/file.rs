//! The config file's schema: every table and key, as serde reads them. The
//! knobs that are someone's own type ([`Timeouts`], [`Limits`], [`NetLimits`],
//! [`RelayLimits`]) are read straight into it; the rest stay as written until
//! [`Settings`](super::Settings) checks and translates them.

use super::{ConfigError, NetLimits, RelayLimits};
use meshproxy_core::config::{Limits, Timeouts};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

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
    /// The control socket `meshproxy status` asks (mode 0600): a path, or `false` for
    /// none; default (or `true`): beside the state file, else the identity file, with
    /// the extension `.sock`.
    pub control: Option<ControlKey>,
    /// Where to serve Prometheus metrics (`GET /metrics`); none means no endpoint.
    /// Keep it on loopback or a private network: the metrics are unauthenticated.
    pub metrics: Option<SocketAddr>,
    /// Hubs to use.
    #[serde(default)]
    pub hubs: Vec<HubEntry>,
    /// Deadlines.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Bounds.
    #[serde(default)]
    pub limits: LimitsTable,
    /// The hub role, if served.
    pub hub: Option<HubFile>,
    /// The exit role, if served.
    pub exit: Option<ExitFile>,
    /// The client role, if served.
    pub client: Option<ClientFile>,
    /// The gateway role (public HTTP routed to agents), if served.
    pub gateway: Option<GatewayFile>,
    /// The agent role, if served (not together with `[exit]`).
    pub agent: Option<AgentFile>,
    /// `auto` (default: autonat finds out), `public` or `private`: whether other nodes can
    /// dial this one directly, as the operator knows it (behind NAT: `private`).
    pub reachability: Option<String>,
    /// Let autonat probe private and loopback addresses (LANs, test networks); default false.
    pub autonat_private_ips: Option<bool>,
    /// Worker threads of the node's runtime, 1 to [`MAX_THREADS`](super::MAX_THREADS); none
    /// means one per CPU.
    /// Bounds how many cores the node keeps busy on a machine it shares (name lookups and
    /// state-file writes run on tokio's blocking threads, outside the count).
    pub threads: Option<usize>,
}

/// `control = "PATH"`, or `control = false` (no socket) / `true` (the default path).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum ControlKey {
    /// On at the default path, or off.
    Switch(bool),
    /// On at this path.
    Path(PathBuf),
}

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

/// `[limits]`: the core's [`Limits`] and the peer network's [`NetLimits`]
/// share the table; each key belongs to one of them, and a key neither knows
/// is an error. (Flattened tables report a value of the wrong type at the
/// `[limits]` line rather than at the key's.)
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsTable {
    /// The core's bounds on tables and queues.
    #[serde(flatten)]
    pub core: Limits,
    /// Connections and streams of the peer network.
    #[serde(flatten)]
    pub net: NetLimits,
}

pub use crate::ops::keys::{CredentialFile, KeyFile};

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
    /// Who may register or look up, and as what (see [`crate::ops::keys`]).
    #[serde(default)]
    pub keys: Vec<KeyFile>,
    /// How long the tickets of admitted peers last (default 20 min, at least 10 s);
    /// clients keep working through a hub outage for at least half of it.
    pub ticket_lifetime_ms: Option<u64>,
    /// Serve as a circuit relay v2 for admitted peers (default true); strangers are refused.
    pub relay: Option<bool>,
    /// What the relay grants (the `relay_*` keys), when it is served.
    #[serde(flatten)]
    pub relay_limits: RelayLimits,
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

/// `[agent]`: carries gateways' ingress streams to local services.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgentFile {
    /// Proof of admission at the hubs (a key with the `agent` role).
    pub credential: CredentialFile,
    /// Multiaddrs gateways dial (default: the addresses `listen` bound; none when
    /// `reachability = "private"`, then gateways come through the hubs' relays).
    #[serde(default)]
    pub advertise: Vec<String>,
    /// `key = "value"` labels gateways select agents by: keys `[a-z0-9_.]+`, values
    /// `[a-z0-9_.]*`, `key:value` at most 32 bytes; the key `service` is reserved.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `name = "HOST:PORT"`: the services gateways may open, each with its origin. Names are
    /// `[a-z0-9_.]`, at most 24 bytes, starting with a letter or digit. An IP literal allows
    /// exactly that address; a name is resolved and must land inside `allow`.
    #[serde(default)]
    pub services: BTreeMap<String, String>,
    /// Where a service's origin *name* may resolve to (`NET`, `NET:PORTS`, `[NET6]:PORTS`, e.g.
    /// `10.0.0.0/8:80-443`); deny by default. Cloud metadata, unspecified, broadcast and
    /// multicast addresses are refused whatever this says.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Relay reservations at the hubs: `auto` (default: while not reachable directly),
    /// `always` or `off`.
    pub relay: Option<String>,
}

impl AgentFile {
    /// An agent with this credential and every other field at its default.
    pub fn new(credential: CredentialFile) -> AgentFile {
        AgentFile {
            credential,
            advertise: Vec::new(),
            labels: BTreeMap::new(),
            services: BTreeMap::new(),
            allow: Vec::new(),
            relay: None,
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

/// `[gateway]`: public HTTP listeners whose requests are routed to agents
/// (or answered at the gateway). Limits default as [`HttpLimits::default`](crate::runtime::gateway::HttpLimits).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GatewayFile {
    /// Proof of admission at the hubs (a key with `roles = ["gateway"]`).
    pub credential: CredentialFile,
    /// How often the hubs are asked for agents (default 10 s).
    pub refresh_ms: Option<u64>,
    /// A client must send a whole request head within this, or its
    /// connection is closed (default 10 s).
    pub header_read_timeout_ms: Option<u64>,
    /// Most bytes of a request head, at least 8192; beyond, 431 (default 16384).
    pub max_head_bytes: Option<usize>,
    /// Most header fields of a request; beyond, 431 (default 100).
    pub max_headers: Option<usize>,
    /// Most public connections open at once (default 4096).
    pub max_connections: Option<usize>,
    /// Most public connections from one IPv4 address or IPv6 /64 (default 256).
    pub max_connections_per_ip: Option<usize>,
    /// How long an agent may take to start its response; then 504 (default 60 s).
    pub response_timeout_ms: Option<u64>,
    /// An upgraded connection (WebSocket) idle both ways this long is reset (default 10 min).
    pub upgrade_idle_timeout_ms: Option<u64>,
    /// The public listeners (at least one).
    #[serde(default)]
    pub listeners: Vec<GatewayListenerFile>,
    /// The routes, over all listeners.
    #[serde(default)]
    pub routes: Vec<RouteFile>,
}

impl GatewayFile {
    /// A gateway with this credential, no listeners or routes yet and every
    /// other field at its default.
    pub fn new(credential: CredentialFile) -> GatewayFile {
        GatewayFile {
            credential,
            refresh_ms: None,
            header_read_timeout_ms: None,
            max_head_bytes: None,
            max_headers: None,
            max_connections: None,
            max_connections_per_ip: None,
            response_timeout_ms: None,
            upgrade_idle_timeout_ms: None,
            listeners: Vec::new(),
            routes: Vec::new(),
        }
    }
}

/// One `[[gateway.listeners]]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GatewayListenerFile {
    /// The name routes refer to: 1 to 64 of `A-Z a-z 0-9 . _ -`.
    pub name: String,
    /// Where to listen, e.g. `0.0.0.0:8080`.
    pub listen: SocketAddr,
    /// The public reaches it through a TLS terminator in front
    /// (`X-Forwarded-Proto: https`); default false.
    pub https: Option<bool>,
    /// The port the public uses (`X-Forwarded-Port`); default the bound port.
    pub public_port: Option<u16>,
}

/// One `[[gateway.routes]]`. A route with neither `host` nor `path` is its
/// listener's default route (at most one per listener).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    /// The listener's name; may be left out when there is one listener.
    pub listener: Option<String>,
    /// Unique per listener: 1 to 64 of `A-Z a-z 0-9 . _ -`.
    pub id: String,
    /// Lower first; ties in id order (default 100).
    pub priority: Option<u32>,
    /// `app.example.com` or `*.example.com` (exactly one label in front).
    pub host: Option<String>,
    /// A segment-aware path prefix: `/api` matches `/api` and `/api/x`, not `/apix`.
    pub path: Option<String>,
    /// Refuse encoded `/` and `\` (`%2F`, `%5C`) in paths (default true).
    pub strict: Option<bool>,
    /// What a match does.
    pub target: TargetFile,
}

/// A route's target: `{ agent = {…} }`, `{ static = {…} }` or `{ redirect = {…} }`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum TargetFile {
    /// Forward to an agent's service.
    Agent(AgentTargetFile),
    /// Answer at the gateway.
    Static(StaticTargetFile),
    /// Redirect.
    Redirect(RedirectTargetFile),
}

/// `target = { agent = { service, select | pools, balance } }`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgentTargetFile {
    /// The agent's named service.
    pub service: String,
    /// Agents carrying all these labels: `site=home,tier=web` (one pool,
    /// group 0, weight 1). Give this or `pools`.
    pub select: Option<String>,
    /// Pools with failover groups and weights.
    #[serde(default)]
    pub pools: Vec<PoolFile>,
    /// `round_robin` (default), `random`, `least_active`, `weighted`,
    /// `hash_ip`, `hash_header:NAME` or `hash_cookie:NAME`.
    pub balance: Option<String>,
}

/// One pool of an agent target.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PoolFile {
    /// The label selector.
    pub select: String,
    /// Failover group: the lowest group with an available agent is used (default 0).
    pub group: Option<u8>,
    /// Weight of each agent for `weighted`, 1 to 1000000 (default 1).
    pub weight: Option<u32>,
}

/// `target = { static = { status, body, content_type } }`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StaticTargetFile {
    /// 200 to 599 (default 200).
    pub status: Option<u16>,
    /// The body, at most 64 KiB (default empty).
    #[serde(default)]
    pub body: String,
    /// Default `text/plain; charset=utf-8`.
    pub content_type: Option<String>,
}

/// `target = { redirect = { status, to, keep_path, keep_query } }`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RedirectTargetFile {
    /// 301, 302, 307 or 308 (default 308).
    pub status: Option<u16>,
    /// An `http(s)://` URL or an absolute path.
    pub to: String,
    /// Append the request's path after the route's prefix (default false).
    pub keep_path: Option<bool>,
    /// Append the request's query (default false).
    pub keep_query: Option<bool>,
}

/// One `[[client.listeners]]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenerFile {
    /// Where to listen (default `127.0.0.1:1080`).
    pub bind: Option<SocketAddr>,
    /// `socks5` (SOCKS5 and SOCKS4/4a), `http` (HTTP CONNECT and plain
    /// `http://` proxy requests) or `both` (default: all of them, told apart
    /// by the first byte). SOCKS4 has no authentication: a listener with
    /// `users` refuses it.
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

    /// The identity key file.
    pub fn identity_path(&self) -> PathBuf {
        self.identity.clone().unwrap_or_else(|| PathBuf::from("meshproxy.key"))
    }

    /// Where the control socket goes, `None` if `control = false`.
    pub fn control_path(&self) -> Option<PathBuf> {
        match &self.control {
            Some(ControlKey::Switch(false)) => None,
            Some(ControlKey::Path(path)) => Some(path.clone()),
            None | Some(ControlKey::Switch(true)) => Some(crate::ops::control::default_path(
                self.state.as_deref(),
                &self.identity_path(),
            )),
        }
    }

    /// The sockets of the client listeners, in order.
    pub fn listener_sockets(&self) -> Vec<ListenerSocket> {
        self.client.as_ref().map_or_else(Vec::new, |c| {
            c.listeners
                .iter()
                .map(|l| ListenerSocket {
                    bind: l.bind.unwrap_or(crate::runtime::listener::DEFAULT_BIND),
                    has_auth: !l.users.is_empty(),
                })
                .collect()
        })
    }
}
