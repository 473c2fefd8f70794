//! Builds a scenario's world: node configs (hubs, exits, clients), the origin
//! hosts with their behaviours, hostile destinations, and DNS.

use crate::plan::AppSpec;
use crate::scenario::{ListenerProtocol, OriginKind, Scenario, StickyMode, Topology};
use meshproxy_core::admission::{Credential, RoleSet};
use meshproxy_core::config::{
    AgentConfig, ClientConfig, ExitConfig, GatewayConfig, GatewayListener, HubConfig, HubContact,
    ListenerConfig, NodeConfig, SelectionConfig, Timeouts,
};
use meshproxy_core::directory::DirectoryConfig;
use meshproxy_core::http_connect::HttpAuthPolicy;
use meshproxy_core::ids::PeerId;
use meshproxy_core::policy::ExitPolicyConfig;
use meshproxy_core::record::Role;
use meshproxy_core::record::{Attrs, CountryCode, PeerAddr, PeerFilter};
use meshproxy_core::socks::SocksAuthPolicy;
use meshproxy_core::target::TargetAddr;
use meshproxy_core::ticket::TicketSigner;
use meshproxy_core::wire::ingress::ServiceName;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

impl OriginKind {
    /// Whether the origin sends back what it receives.
    pub(crate) fn echoes(self) -> bool {
        matches!(
            self,
            OriginKind::Echo
                | OriginKind::MixedName
                | OriginKind::Private
                | OriginKind::PrivateName
        )
    }

    /// The SOCKS5 code the app must get when nothing else goes wrong; `None`
    /// when the connection must succeed.
    pub(crate) fn refusal(self) -> Option<u8> {
        match self {
            OriginKind::Refuse => Some(0x05),
            OriginKind::BlackHole => Some(0x06),
            OriginKind::Private | OriginKind::PrivateName => Some(0x02),
            OriginKind::Unresolvable => Some(0x04),
            _ => None,
        }
    }

    /// Whether a success reply can ever be right.
    pub(crate) fn can_succeed(self) -> bool {
        self.refusal().is_none()
    }
}

const KINDS_HOSTED: [OriginKind; 8] = [
    OriginKind::Echo,
    OriginKind::Source,
    OriginKind::Sink,
    OriginKind::Slow,
    OriginKind::Refuse,
    OriginKind::BlackHole,
    OriginKind::ResetMidStream,
    OriginKind::CloseEarly,
];

fn kind_index(k: OriginKind) -> u8 {
    KINDS_HOSTED.iter().position(|x| *x == k).unwrap_or(0) as u8
}

/// The public address of origin `variant` of `kind`.
fn public_addr(kind: OriginKind, variant: u32) -> SocketAddr {
    let k = kind_index(kind);
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(52, 0, k, 1 + (variant % 4) as u8)),
        8000 + u16::from(k),
    )
}

/// Destinations every exit must refuse, each of which hosts a live echo
/// server in the simulation — so a policy hole would "work" and be seen.
const PRIVATE: [&str; 12] = [
    "10.0.0.5:80",
    "127.0.0.1:80",
    "192.168.1.1:80",
    "169.254.169.254:80",
    "172.16.0.1:80",
    "100.64.0.1:80",
    "0.0.0.0:80",
    "[::1]:80",
    "[fd00::1]:80",
    "[::ffff:10.0.0.5]:80",
    "[64:ff9b::a00:5]:80",
    "[fe80::1]:80",
];

/// Names that are really IPv4 literals in the spellings resolvers accept, or
/// that resolve to private addresses.
const PRIVATE_NAMES: [&str; 6] =
    ["2130706433", "0x7f.1", "0177.0.0.1", "10.1", "internal.sim", "metadata.sim"];

fn sock(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}

/// The simulated DNS: name → addresses, in answer order.
pub(crate) type Dns = BTreeMap<String, Vec<IpAddr>>;

/// Origin hosts (address → behaviour) and the DNS table.
pub(crate) fn origins() -> (Vec<(SocketAddr, OriginKind)>, Dns) {
    let mut hosts = Vec::new();
    let mut dns = BTreeMap::new();
    for kind in KINDS_HOSTED {
        for v in 0..4 {
            let addr = public_addr(kind, v);
            hosts.push((addr, kind));
            dns.insert(name_of(kind, v), vec![addr.ip()]);
        }
    }
    for p in PRIVATE {
        hosts.push((sock(p), OriginKind::Echo));
    }
    dns.insert("internal.sim".into(), vec![sock("10.0.0.5:80").ip()]);
    dns.insert("metadata.sim".into(), vec![sock("169.254.169.254:80").ip()]);
    for v in 0..4 {
        // Private first: the exit must skip it and dial the public answer.
        let public = public_addr(OriginKind::Echo, v).ip();
        let private = sock(PRIVATE[v as usize % PRIVATE.len()]).ip();
        dns.insert(format!("mixed-{v}.sim"), vec![private, public]);
    }
    crate::hostile::extend(&mut hosts, &mut dns, |v| public_addr(OriginKind::Echo, v).ip());
    (hosts, dns)
}

fn name_of(kind: OriginKind, v: u32) -> String {
    format!("{kind:?}-{v}.sim").to_ascii_lowercase()
}

/// Where an app connection asks to go.
pub(crate) fn target_for(spec: &AppSpec) -> TargetAddr {
    let v = spec.variant;
    match spec.kind {
        OriginKind::Private => {
            let classic = PRIVATE.map(sock);
            TargetAddr::Ip(crate::hostile::literal_for(spec, &classic).unwrap_or(classic[0]))
        }
        OriginKind::PrivateName => TargetAddr::Domain(
            crate::hostile::name_for(spec, &PRIVATE_NAMES).unwrap_or_else(|| "10.1".into()),
            80,
        ),
        OriginKind::MixedName => TargetAddr::Domain(
            crate::hostile::mixed_for(spec, v % 4, format!("mixed-{}.sim", v % 4)),
            public_addr(OriginKind::Echo, v).port(),
        ),
        OriginKind::Unresolvable => TargetAddr::Domain(format!("nx-{v}.sim"), 80),
        kind => {
            let addr = public_addr(kind, v);
            if spec.by_name {
                TargetAddr::Domain(name_of(kind, v % 4), addr.port())
            } else {
                TargetAddr::Ip(addr)
            }
        }
    }
}

/// Every address `target` may legitimately be dialed at.
pub(crate) fn resolves_to(
    dns: &BTreeMap<String, Vec<IpAddr>>,
    target: &TargetAddr,
) -> Vec<SocketAddr> {
    match target {
        TargetAddr::Ip(sa) => vec![*sa],
        TargetAddr::Domain(name, port) => dns.get(name).map_or_else(Vec::new, |ips| {
            ips.iter().map(|ip| SocketAddr::new(*ip, *port)).collect()
        }),
    }
}

fn credential(i: usize) -> Credential {
    Credential::new(format!("node-{i}"), format!("token-{i}-0123456789abcdefghij").as_bytes())
}

/// Unix time at every node's `Instant::ZERO` (2027-01-15): all clocks agree.
pub(crate) const WALL_CLOCK: Duration = Duration::from_secs(1_800_000_000);

/// The ticket signer of hub `i`, derived from its index (the simulator can
/// mint real tickets with it, e.g. expired ones for the adversaries).
pub(crate) fn hub_signer(i: usize) -> TicketSigner {
    let mut secret = [0x5au8; 32];
    secret[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    TicketSigner::from_secret(secret)
}

/// The origin agent `i` (counted among the agents) serves as `web`.
pub(crate) fn agent_origin(i: u32) -> SocketAddr {
    public_addr(OriginKind::Echo, i)
}

/// Peer id, config and address of every node: hubs, then exits, clients,
/// agents and gateways.
pub(crate) fn build(s: &Scenario, _seed: u64) -> Vec<(PeerId, NodeConfig, IpAddr)> {
    let t = &s.topology;
    let first_agent = (t.hubs + t.exits + t.clients) as usize;
    let agents = first_agent..first_agent + t.agents as usize;
    let total = agents.end + t.gateways as usize;
    let peer = |i: usize| PeerId::from_u64(i as u64 + 1);
    let hubs: Vec<HubContact> = (0..t.hubs as usize)
        .map(|i| HubContact {
            peer: peer(i),
            addrs: vec![PeerAddr(vec![i as u8])],
            ticket_key: Some(hub_signer(i).public()),
        })
        .collect();
    // Exits' keys admit the exit role only, clients' the client role only.
    let exits = t.hubs as usize..(t.hubs + t.exits) as usize;
    let keys = (t.hubs as usize..total)
        .map(|i| {
            let roles = if exits.contains(&i) {
                RoleSet::EXIT
            } else if agents.contains(&i) {
                RoleSet::of(Role::Agent)
            } else if i >= agents.end {
                RoleSet::of(Role::Gateway)
            } else {
                RoleSet::CLIENT
            };
            credential(i).admission_key(roles)
        })
        .collect::<Vec<_>>();
    let ticket_lifetime = Duration::from_secs(u64::from(s.hubs.ticket_lifetime_secs));
    let gateway = |i: usize| GatewayConfig {
        listeners: vec![GatewayListener {
            name: crate::ingress_model::LISTENER.into(),
            port: crate::ingress_model::PORT,
            https: false,
        }],
        routes: crate::ingress_model::snapshot(1),
        refresh: Duration::from_secs(5),
        credential: credential(i),
    };
    let mut out = Vec::with_capacity(total);
    for i in 0..total {
        let ip = IpAddr::V4(Ipv4Addr::new(52, 1, (i / 250) as u8, (i % 250) as u8 + 1));
        let mut config = NodeConfig {
            peer_id: peer(i),
            hubs: hubs.clone(),
            hub: None,
            exit: None,
            client: None,
            gateway: None,
            agent: None,
            timeouts: Timeouts::default(),
            limits: s.limits.nodes,
            relay: meshproxy_core::config::RelayConfig::default(),
            wall_clock: WALL_CLOCK,
            entropy: None,
        };
        if i < t.hubs as usize {
            config.hubs = Vec::new();
            config.hub = Some(HubConfig {
                directory: DirectoryConfig {
                    ttl: Duration::from_secs(30),
                    max_entries: s
                        .limits
                        .max_directory_entries
                        .map_or(default_directory_entries(t), |n| n as usize),
                },
                keys: keys.clone(),
                max_find: 64,
                signer: hub_signer(i),
                ticket_lifetime,
            });
            if i == 0 && t.hub_gateway {
                config.gateway = Some(gateway(i));
            }
        } else if i < (t.hubs + t.exits) as usize {
            let e = i - t.hubs as usize;
            let country = (!t.countries.is_empty())
                .then(|| CountryCode::parse(&t.countries[e % t.countries.len()]))
                .flatten();
            let mut labels =
                if t.labels.is_empty() { Vec::new() } else { t.labels[e % t.labels.len()].clone() };
            labels.sort();
            labels.dedup();
            config.exit = Some(ExitConfig {
                policy: ExitPolicyConfig::default(),
                own_addrs: vec![ip],
                attrs: Attrs { country, labels },
                addrs: vec![PeerAddr(vec![i as u8])],
                capacity: 256,
                credential: credential(i),
                relay: meshproxy_core::config::RelayMode::default(),
                open: false,
            });
        } else if agents.contains(&i) {
            let a = (i - first_agent) as u32;
            let web =
                ServiceName::new(crate::ingress_model::SERVICE).expect("a valid service name");
            config.agent = Some(AgentConfig {
                credential: credential(i),
                addrs: vec![PeerAddr(vec![i as u8])],
                relay: meshproxy_core::config::RelayMode::default(),
                labels: BTreeMap::from([("site".into(), crate::ingress_model::site(a).into())]),
                services: BTreeMap::from([(web, TargetAddr::Ip(agent_origin(a)))]),
                allow: Vec::new(),
            });
        } else if i >= agents.end {
            config.gateway = Some(gateway(i));
        } else {
            let listeners = s
                .listeners
                .iter()
                .map(|l| {
                    let creds = vec![(
                        crate::app_proto::USER.to_string(),
                        crate::app_proto::PASSWORD.to_string(),
                    )];
                    ListenerConfig {
                        protocol: match l.protocol {
                            ListenerProtocol::Socks5 => {
                                meshproxy_core::config::ListenerProtocol::Socks5
                            }
                            ListenerProtocol::Http => {
                                meshproxy_core::config::ListenerProtocol::Http
                            }
                            ListenerProtocol::Both => {
                                meshproxy_core::config::ListenerProtocol::Both
                            }
                        },
                        filter: PeerFilter {
                            country: l.country.as_deref().and_then(CountryCode::parse),
                            labels: l.labels.clone(),
                        },
                        sticky: match l.sticky {
                            StickyMode::Off => meshproxy_core::config::StickyMode::Off,
                            StickyMode::Listener => meshproxy_core::config::StickyMode::Listener,
                            StickyMode::Session => meshproxy_core::config::StickyMode::Session,
                        },
                        fallback: l.fallback,
                        socks_auth: Arc::new(if l.auth {
                            SocksAuthPolicy::UserPass(creds.clone())
                        } else {
                            SocksAuthPolicy::NoAuth
                        }),
                        http_auth: Arc::new(if l.auth {
                            HttpAuthPolicy::Basic(creds)
                        } else {
                            HttpAuthPolicy::NoAuth
                        }),
                        retries: l.retries,
                        relayed: l.relayed,
                    }
                })
                .collect();
            config.client = Some(ClientConfig {
                listeners,
                selection: SelectionConfig {
                    refresh: Duration::from_secs(10),
                    ..SelectionConfig::default()
                },
                credential: credential(i),
            });
        }
        if let Some(hub) = config.hub.as_mut().filter(|_| s.adversaries.any()) {
            admit_leaked_keys(s, hub);
        }
        out.push((peer(i), config, ip));
    }
    out
}

/// A hub's directory size when the scenario sets none: room for every exit
/// and agent of the topology (the liveness check expects each registered at
/// every hub after a heal), and never less than 1,024. A fixed 1,024 made a
/// 3,000-exit world fail liveness for ever: the hubs rightly refused the
/// rest as full (issue #20).
pub(crate) fn default_directory_entries(t: &Topology) -> usize {
    (t.exits as usize + t.agents as usize).max(1024)
}

/// The admission key id of the token the registration flood and the replay
/// use: a token that leaked, registered at every hub, held by no honest node.
pub(crate) const LEAKED_KEY: &str = "leaked";
const LEAKED_TOKEN: &[u8] = b"leaked-token-0123456789abcdef";
/// The key id of a leaked token that admits clients only.
pub(crate) const LEAKED_CLIENT_KEY: &str = "leaked-client";
const LEAKED_CLIENT_TOKEN: &[u8] = b"leaked-client-token-0123456789";

pub(crate) fn leaked() -> Credential {
    Credential::new(LEAKED_KEY, LEAKED_TOKEN)
}

/// A leaked client-role token (the role escalations hold it).
pub(crate) fn leaked_client() -> Credential {
    Credential::new(LEAKED_CLIENT_KEY, LEAKED_CLIENT_TOKEN)
}

/// Registers the leaked keys at a hub, for the adversaries that hold them.
fn admit_leaked_keys(s: &Scenario, hub: &mut HubConfig) {
    // A fleet key: exits only, with its own registration limit (absent: the
    // hub's `max_registrations_per_key`, as for any key).
    let mut key = leaked().admission_key(RoleSet::EXIT);
    key.max_registrations = s.adversaries.leaked_key_registrations.map(|v| v as usize);
    hub.keys.push(key);
    hub.keys.push(leaked_client().admission_key(RoleSet::CLIENT));
}
