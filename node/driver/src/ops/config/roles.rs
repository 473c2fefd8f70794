//! Translation of the role tables (`[hub]`, `[exit]`, `[client]`, `[agent]`) into the
//! core's role configs, checking each value where it is read and naming its
//! key when it makes no sense.

use super::file::{AgentFile, ClientFile, ExitFile, HubFile};
use super::{invalid, ConfigError};
use crate::ops::identity::Identity;
use crate::ops::keys;
use meshproxy_core::agent::{agent_labels, parse_origin};
use meshproxy_core::config::{
    AgentConfig, ClientConfig, ExitConfig, HubConfig, Limits, ListenerConfig, ListenerProtocol,
    RelayMode, SelectionConfig, StickyMode, DEFAULT_TICKET_LIFETIME,
};
use meshproxy_core::directory::DirectoryConfig;
use meshproxy_core::http_connect::HttpAuthPolicy;
use meshproxy_core::policy::{ExitPolicyConfig, PolicyRule, PortRange};
use meshproxy_core::record::{
    valid_label, Attrs, CountryCode, PeerAddr, PeerFilter, MAX_LABELS, MAX_LABEL_LEN,
};
use meshproxy_core::selection::backoff::Backoff;
use meshproxy_core::selection::breaker::BreakerConfig;
use meshproxy_core::socks::SocksAuthPolicy;
use meshproxy_core::ticket::TicketSigner;
use meshproxy_core::wire::ingress::ServiceName;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

fn ms(v: Option<u64>, default: Duration) -> Duration {
    v.map_or(default, Duration::from_millis)
}

/// Refuses the core limits that cannot be 0: a hub that admits no stream per
/// peer, no unadmitted stream or no registration per key serves no one.
pub(super) fn check_limits(l: &Limits) -> Result<(), ConfigError> {
    for (name, v) in [
        ("max_hub_streams_per_peer", l.max_hub_streams_per_peer),
        ("max_preauth_hub_streams", l.max_preauth_hub_streams),
        ("max_registrations_per_key", l.max_registrations_per_key),
    ] {
        if v == 0 {
            return Err(invalid(format!("limits.{name}: must be at least 1")));
        }
    }
    Ok(())
}

/// The shortest ticket lifetime a hub may configure: renewal at half of it
/// must leave room for a round trip.
const MIN_TICKET_LIFETIME: Duration = Duration::from_secs(10);

pub(super) fn hub_config(h: &HubFile, identity: &Identity) -> Result<HubConfig, ConfigError> {
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

pub(super) fn exit_config(
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
        relay: relay_mode("exit.relay", e.relay.as_deref())?,
    })
}

fn relay_mode(field: &str, v: Option<&str>) -> Result<RelayMode, ConfigError> {
    match v.unwrap_or("auto") {
        "auto" => Ok(RelayMode::Auto),
        "always" => Ok(RelayMode::Always),
        "off" => Ok(RelayMode::Off),
        other => Err(invalid(format!("{field}: `{other}`, expected auto, always or off"))),
    }
}

pub(super) fn agent_config(
    a: &AgentFile,
    addrs: Vec<PeerAddr>,
) -> Result<AgentConfig, ConfigError> {
    if a.services.is_empty() {
        return Err(invalid(
            "agent.services: at least one service (name = \"HOST:PORT\"): an agent without one \
             serves nothing",
        ));
    }
    let mut services = BTreeMap::new();
    for (name, origin) in &a.services {
        let service = ServiceName::new(name)
            .map_err(|e| invalid(format!("agent.services.{name}: not a service name: {e}")))?;
        let origin =
            parse_origin(origin).map_err(|e| invalid(format!("agent.services.{name}: {e}")))?;
        services.insert(service, origin);
    }
    // What the agent will list at its hubs must fit a record: checked here, once.
    agent_labels(&a.labels, services.keys()).map_err(|e| invalid(format!("agent.{e}")))?;
    Ok(AgentConfig {
        credential: keys::credential("agent.credential", &a.credential)?,
        addrs,
        relay: relay_mode("agent.relay", a.relay.as_deref())?,
        labels: a.labels.clone(),
        services,
        allow: rules("agent.allow", &a.allow)?,
    })
}

pub(super) fn client_config(c: &ClientFile) -> Result<ClientConfig, ConfigError> {
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
