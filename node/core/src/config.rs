//! A node's configuration: which roles it plays and the limits it keeps.
//! The driver builds this from its CLI/TOML; the simulator from a scenario.

use crate::admission::{AdmissionKey, Credential};
use crate::directory::DirectoryConfig;
use crate::http_connect::HttpAuthPolicy;
use crate::ids::PeerId;
use crate::policy::{ExitPolicyConfig, PolicyRule};
use crate::record::{Attrs, PeerAddr, PeerFilter};
use crate::selection::backoff::Backoff;
use crate::selection::breaker::BreakerConfig;
use crate::socks::SocksAuthPolicy;
use crate::target::TargetAddr;
use crate::ticket::TicketSigner;
use crate::wire::ingress::ServiceName;
use core::time::Duration;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

/// Everything a [`Node`](crate::Node) needs to know at start.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's identity.
    pub peer_id: PeerId,
    /// Hubs to register with (exits) or to find exits through (clients).
    pub hubs: Vec<HubContact>,
    /// Present if this node serves as a hub.
    pub hub: Option<HubConfig>,
    /// Present if this node serves as an exit.
    pub exit: Option<ExitConfig>,
    /// Present if this node serves apps as a client.
    pub client: Option<ClientConfig>,
    /// Present if this node routes public HTTP requests to agents.
    pub gateway: Option<GatewayConfig>,
    /// Present if this node carries gateways' ingress streams to its services.
    /// A node lists itself in one role: not together with `exit`.
    pub agent: Option<AgentConfig>,
    /// Deadlines shared by all roles.
    pub timeouts: Timeouts,
    /// Bounds shared by all roles.
    pub limits: Limits,
    /// Relay reservations, hole punching and circuit caps.
    pub relay: RelayConfig,
    /// Unix time at the node's [`Instant::ZERO`](crate::time::Instant::ZERO):
    /// tickets expire by the wall clock, which hubs and exits share (within
    /// [`CLOCK_SKEW`](crate::ticket::CLOCK_SKEW)); the core reads no clock.
    pub wall_clock: Duration,
    /// 32 bytes of OS randomness for secrets the node hands strangers (hub
    /// challenge nonces). `None` draws them from the seed, which is right for
    /// the simulator only: a 64-bit seed is not a secret's worth of entropy.
    pub entropy: Option<[u8; 32]>,
}

/// Whether an exit or an agent holds relay reservations at its hubs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RelayMode {
    /// Reserve while this node is not known to be directly reachable
    /// ([`Reachability`](crate::io::Reachability) `Unknown` or `Private`).
    #[default]
    Auto,
    /// Always hold reservations.
    Always,
    /// Never reserve: peers reach this node only directly.
    Off,
}

/// How relayed paths are kept up and upgraded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayConfig {
    /// Retry delay after a reservation failed or was lost.
    pub reservation_retry: Backoff,
    /// Delay between hole-punch attempts on a relayed connection.
    pub hole_punch_retry: Backoff,
    /// A hole-punch attempt without an answer counts as failed after this.
    pub hole_punch_timeout: Duration,
    /// New streams avoid a relayed connection with less than this left
    /// before its duration cap.
    pub circuit_margin: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            reservation_retry: Backoff::new(Duration::from_millis(500), Duration::from_secs(30)),
            hole_punch_retry: Backoff::new(Duration::from_secs(5), Duration::from_secs(300)),
            hole_punch_timeout: Duration::from_secs(15),
            circuit_margin: Duration::from_secs(10),
        }
    }
}

/// How to reach one hub.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubContact {
    /// The hub's identity.
    pub peer: PeerId,
    /// Where to dial it.
    pub addrs: Vec<PeerAddr>,
    /// The Ed25519 key the hub signs tickets with (for an exit, to check the
    /// tickets its clients present); `None` if the hub has none we know of.
    /// The driver takes it from the hub's peer id.
    pub ticket_key: Option<[u8; 32]>,
}

/// Deadlines. Every read from a peer or app has one (DESIGN §6).
///
/// With the `serde` feature this is the `[timeouts]` table of the driver's
/// config file: each field is a `*_ms` key in integer milliseconds, at least 1
/// (a zero deadline would fire at once); missing keys keep the defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct Timeouts {
    /// An app must finish its SOCKS5/HTTP handshake within this.
    #[cfg_attr(
        feature = "serde",
        serde(rename = "handshake_ms", deserialize_with = "millis::positive")
    )]
    pub handshake: Duration,
    /// A peer must send its `ConnectRequest` (or hub `Auth`) within this.
    #[cfg_attr(
        feature = "serde",
        serde(rename = "request_ms", deserialize_with = "millis::positive")
    )]
    pub request: Duration,
    /// A client gives up on one exit attempt (open + response) after this.
    #[cfg_attr(
        feature = "serde",
        serde(rename = "attempt_ms", deserialize_with = "millis::positive")
    )]
    pub attempt: Duration,
    /// A client gives up on a whole session setup (all attempts) after this.
    #[cfg_attr(
        feature = "serde",
        serde(rename = "setup_budget_ms", deserialize_with = "millis::positive")
    )]
    pub setup_budget: Duration,
    /// An exit gives up connecting to an origin after this.
    #[cfg_attr(
        feature = "serde",
        serde(rename = "origin_connect_ms", deserialize_with = "millis::positive")
    )]
    pub origin_connect: Duration,
    /// A dial to a peer is abandoned after this.
    #[cfg_attr(
        feature = "serde",
        serde(rename = "dial_ms", deserialize_with = "millis::positive")
    )]
    pub dial: Duration,
    /// A hub request (auth, register, heartbeat, find) is abandoned after this.
    #[cfg_attr(
        feature = "serde",
        serde(rename = "hub_request_ms", deserialize_with = "millis::positive")
    )]
    pub hub_request: Duration,
    /// (Hubs) a peer must answer the challenge within this; honest peers do
    /// in one round trip, and an unadmitted stream is a stranger's.
    #[cfg_attr(
        feature = "serde",
        serde(rename = "auth_ms", deserialize_with = "millis::positive")
    )]
    pub auth: Duration,
    /// A splice with no traffic either way is reset after this.
    #[cfg_attr(
        feature = "serde",
        serde(rename = "idle_ms", deserialize_with = "millis::positive")
    )]
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            handshake: Duration::from_secs(10),
            request: Duration::from_secs(10),
            attempt: Duration::from_secs(15),
            setup_budget: Duration::from_secs(30),
            origin_connect: Duration::from_secs(10),
            dial: Duration::from_secs(10),
            hub_request: Duration::from_secs(10),
            auth: Duration::from_secs(3),
            idle: Duration::from_secs(300),
        }
    }
}

/// Bounds on tables and queues.
///
/// With the `serde` feature this is (part of) the `[limits]` table of the
/// driver's config file and of a simulator scenario; keys are the field names,
/// missing keys keep the defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct Limits {
    /// Client sessions (app connections) at once, all listeners together.
    pub max_client_sessions: usize,
    /// Exit sessions at once, all peers together.
    pub max_exit_sessions: usize,
    /// Exit sessions one client peer may hold at once.
    pub max_sessions_per_peer: usize,
    /// Hub streams (authenticated or not) at once.
    pub max_hub_streams: usize,
    /// (Hubs) hub streams one peer may hold at once, admitted or not (an
    /// honest node holds one per hub).
    pub max_hub_streams_per_peer: usize,
    /// (Hubs) unadmitted hub streams at once, all peers together. When full,
    /// a new stream displaces the oldest unadmitted one, so a flood must
    /// outpace honest peers' one round trip rather than merely fill a table.
    pub max_preauth_hub_streams: usize,
    /// Client sessions one listener may hold at once.
    pub max_sessions_per_listener: usize,
    /// Client sessions one app source address may hold at once (across
    /// listeners), so one local app cannot starve the others.
    pub max_sessions_per_source: usize,
    /// Dials to exits under way at once; sessions beyond it fail as overloaded.
    pub max_pending_dials: usize,
    /// (Hubs) directory entries registered under one admission key that
    /// does not set its own limit, so one leaked token cannot fill the
    /// directory. A fleet key says how many it needs.
    pub max_registrations_per_key: usize,
    /// (Clients) sessions under way at one exit (attempts and spliced). Each
    /// is a stream on the connection to that exit, and Yamux ends a connection
    /// — every session on it — whose peer opens more streams than its limit
    /// (1024 by default), so this stays well below it; beyond it new sessions
    /// go to other exits or wait.
    pub max_sessions_per_exit: usize,
    /// (Gateways) public requests being routed or forwarded at once; beyond
    /// it a request gets 503.
    pub max_ingress_requests: usize,
    /// (Gateways) requests one agent carries for this gateway at once
    /// (attempts and forwarded; each is a stream on the connection to it,
    /// so this stays below the muxer's stream limit like
    /// `max_sessions_per_exit`); beyond it other agents are chosen, or 503.
    pub max_requests_per_agent: usize,
    /// (Agents) ingress streams at once, all gateways together, from the
    /// `Open` to the end of the splice; beyond it a stream is answered
    /// `Busy`. Also the capacity the agent registers with.
    pub max_agent_streams: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_client_sessions: 4096,
            max_exit_sessions: 4096,
            max_sessions_per_peer: 512,
            max_hub_streams: 4096,
            max_hub_streams_per_peer: 4,
            max_preauth_hub_streams: 256,
            max_sessions_per_listener: 4096,
            max_sessions_per_source: 1024,
            max_pending_dials: 256,
            max_registrations_per_key: 1,
            max_sessions_per_exit: 768,
            max_ingress_requests: 4096,
            max_requests_per_agent: 512,
            max_agent_streams: 256,
        }
    }
}

/// The hub role.
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// Registration lifetime and table size.
    pub directory: DirectoryConfig,
    /// Who may register or look up, and as what.
    pub keys: Vec<AdmissionKey>,
    /// Most records one `Find` answer carries.
    pub max_find: usize,
    /// Signs the tickets of admitted peers (the hub's identity key).
    pub signer: TicketSigner,
    /// How long a ticket lasts; peers renew at half of it, so they keep
    /// working through a hub outage for at least half of it.
    pub ticket_lifetime: Duration,
}

/// The default [`HubConfig::ticket_lifetime`].
pub const DEFAULT_TICKET_LIFETIME: Duration = Duration::from_secs(20 * 60);

/// The exit role.
#[derive(Clone, Debug)]
pub struct ExitConfig {
    /// Which destinations may be dialed.
    pub policy: ExitPolicyConfig,
    /// This exit's own addresses, always denied as destinations.
    pub own_addrs: Vec<IpAddr>,
    /// What the exit advertises.
    pub attrs: Attrs,
    /// Where clients can dial this exit.
    pub addrs: Vec<PeerAddr>,
    /// Sessions the exit advertises it can carry.
    pub capacity: u32,
    /// Proof of admission at the hubs.
    pub credential: Credential,
    /// Relay reservations at the hubs.
    pub relay: RelayMode,
    /// Serve any peer, ticket or not: a public exit (an explicit opt-in;
    /// otherwise only peers with a ticket from one of `hubs` are served).
    pub open: bool,
}

/// The agent role: the far end of gateways' `/meshproxy/ingress/1` streams,
/// beside private services (see [`crate::agent`]).
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Proof of admission at the hubs (a key with the `agent` role).
    pub credential: Credential,
    /// Where gateways can dial this agent (often none: behind NAT it is
    /// reached through its hubs' relays).
    pub addrs: Vec<PeerAddr>,
    /// Relay reservations at the hubs.
    pub relay: RelayMode,
    /// `key=value` labels gateways select agents by; listed as record labels
    /// `key:value` ([`crate::agent::agent_labels`]).
    pub labels: BTreeMap<String, String>,
    /// The services by name, each with the origin it connects to.
    pub services: BTreeMap<ServiceName, TargetAddr>,
    /// What a named origin's resolved addresses may be (deny by default).
    pub allow: Vec<PolicyRule>,
}

/// The client role.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The listeners, in order; [`ListenerId`](crate::ids::ListenerId)`(i)` is the `i`th.
    pub listeners: Vec<ListenerConfig>,
    /// How exits are chosen.
    pub selection: SelectionConfig,
    /// Proof of admission at the hubs.
    pub credential: Credential,
}

/// A gateway's config: its public listeners, its routes and how it finds
/// agents. The listeners' sockets (and HTTP itself) are the driver's.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// The public listeners, in order; the node numbers them after the
    /// client's listeners ([`crate::listener::Listeners`]).
    pub listeners: Vec<GatewayListener>,
    /// The routes, validated ([`crate::ingress::Snapshot`]).
    pub routes: crate::ingress::Snapshot,
    /// How often the hubs are asked for agents.
    pub refresh: Duration,
    /// Proof of admission at the hubs (a key with the `gateway` role).
    pub credential: Credential,
}

/// One public listener of a gateway, as the core needs it (its socket and
/// TLS are the driver's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayListener {
    /// Its route table's name in [`GatewayConfig::routes`].
    pub name: String,
    /// The port the public reaches it on (`X-Forwarded-Port`).
    pub port: u16,
    /// Whether the public speaks https to it (`X-Forwarded-Proto`).
    pub https: bool,
}

/// Which handshakes a listener speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenerProtocol {
    /// SOCKS: SOCKS5, and SOCKS4/4a (told apart by the first byte, 5 or 4).
    /// SOCKS4 has no authentication, so a listener that requires SOCKS5
    /// credentials refuses it.
    Socks5,
    /// HTTP only: CONNECT, and plain requests in absolute form
    /// (`GET http://host/path`, see [`crate::http_forward`]).
    Http,
    /// SOCKS (4, 4a and 5) and HTTP (CONNECT and plain) on the same port, told apart by
    /// the first byte (5 = SOCKS5, 4 = SOCKS4/4a, anything else = HTTP).
    Both,
}

/// Whether and how a listener pins exits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StickyMode {
    /// Each connection picks afresh.
    Off,
    /// All connections on the listener share one pinned exit.
    Listener,
    /// Connections with the same `session-…` username parameter share one
    /// pinned exit; connections without one pick afresh.
    Session,
}

/// One client listener's behaviour (its socket is the driver's business).
#[derive(Clone, Debug)]
pub struct ListenerConfig {
    /// Handshakes spoken.
    pub protocol: ListenerProtocol,
    /// Exits must match this (username parameters may narrow it further).
    pub filter: PeerFilter,
    /// Pinning.
    pub sticky: StickyMode,
    /// Whether a pinned connection may move to another exit when its exit fails.
    pub fallback: bool,
    /// SOCKS5 authentication (when it requires credentials, SOCKS4 is refused).
    pub socks_auth: Arc<SocksAuthPolicy>,
    /// HTTP proxy authentication.
    pub http_auth: Arc<HttpAuthPolicy>,
    /// Further exits tried after the first fails at the exit (not at the
    /// destination). One failed direct dial to an exit with no known relay is
    /// not counted (its record may predate its move behind NAT).
    pub retries: u32,
    /// Whether this listener's sessions may run over relayed connections
    /// (false: only exits reachable directly, only direct connections).
    pub relayed: bool,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            protocol: ListenerProtocol::Both,
            filter: PeerFilter::default(),
            sticky: StickyMode::Off,
            fallback: true,
            socks_auth: Arc::new(SocksAuthPolicy::NoAuth),
            http_auth: Arc::new(HttpAuthPolicy::NoAuth),
            retries: 2,
            relayed: true,
        }
    }
}

/// Exit selection parameters.
#[derive(Clone, Debug)]
pub struct SelectionConfig {
    /// Per-exit retry delay after failures.
    pub backoff: Backoff,
    /// Per-exit circuit breaker.
    pub breaker: BreakerConfig,
    /// How often the exit list is refreshed from the hubs.
    pub refresh: Duration,
    /// Exits asked for per `Find`.
    pub find_limit: u16,
    /// Most pinned sessions remembered.
    pub sticky_capacity: usize,
    /// Pins unused this long are forgotten.
    pub sticky_ttl: Duration,
    /// Weight of a new latency sample in the moving average (0..=1).
    pub latency_alpha: f64,
}

impl Default for SelectionConfig {
    fn default() -> Self {
        SelectionConfig {
            backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(30)),
            breaker: BreakerConfig {
                failure_threshold: 5,
                open_for: Duration::from_secs(30),
                half_open_probes: 1,
            },
            refresh: Duration::from_secs(30),
            find_limit: 64,
            sticky_capacity: 10_000,
            sticky_ttl: Duration::from_secs(24 * 3600),
            latency_alpha: 0.2,
        }
    }
}

/// Durations as config files write them: whole milliseconds (the `*_ms` keys),
/// for `#[serde(deserialize_with = …)]` on the knob structs here and in the
/// driver, so every duration key reads the same way.
#[cfg(feature = "serde")]
pub mod millis {
    use core::time::Duration;
    use serde::de::{Error as _, Unexpected};
    use serde::{Deserialize as _, Deserializer};

    /// Any whole number of milliseconds, 0 included.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }

    /// At least 1 ms: a zero deadline would fire at once and make the node useless.
    pub fn positive<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match u64::deserialize(d)? {
            0 => {
                Err(D::Error::invalid_value(Unexpected::Unsigned(0), &"at least 1 (milliseconds)"))
            }
            ms => Ok(Duration::from_millis(ms)),
        }
    }
}

#[cfg(all(test, feature = "serde"))]
mod tests {
    use super::*;

    #[test]
    fn timeouts_read_milliseconds_under_their_ms_keys_and_keep_defaults() {
        let t: Timeouts = toml::from_str("handshake_ms = 5000\nidle_ms = 60000").expect("valid");
        assert_eq!(t.handshake, Duration::from_millis(5000));
        assert_eq!(t.idle, Duration::from_secs(60));
        assert_eq!(Timeouts { handshake: t.handshake, idle: t.idle, ..Timeouts::default() }, t);
        assert_eq!(toml::from_str::<Timeouts>("").expect("empty"), Timeouts::default());
    }

    #[test]
    fn a_zero_deadline_an_unknown_key_and_a_unitless_name_are_refused_at_their_line() {
        for (text, needle) in [
            ("attempt_ms = 1\nidle_ms = 0", "at least 1"),
            ("attempt_ms = 1\nidle = 5", "unknown field `idle`"),
            ("attempt_ms = 1\nidle_ms = -5", "idle_ms = -5"),
        ] {
            let err = toml::from_str::<Timeouts>(text).expect_err(text).to_string();
            assert!(err.contains("line 2") && err.contains(needle), "{text:?} → {err}");
        }
    }

    #[test]
    fn limits_read_every_field_by_name_and_keep_defaults() {
        let l: Limits =
            toml::from_str("max_sessions_per_exit = 3\nmax_client_sessions = 9").expect("valid");
        let want = Limits { max_sessions_per_exit: 3, max_client_sessions: 9, ..Limits::default() };
        assert_eq!(l, want);
        let err = toml::from_str::<Limits>("max_sessions = 3").expect_err("typo").to_string();
        assert!(err.contains("unknown field `max_sessions`"), "{err}");
    }
}
