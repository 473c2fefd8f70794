//! Translation of `[gateway]` into the core's [`GatewayConfig`] (routes
//! validated whole by the core's router types, errors naming the listener,
//! the route id and the field) and the HTTP side's [`HttpLimits`].

use super::file::{AgentTargetFile, GatewayFile, RouteFile, TargetFile};
use super::{invalid, ConfigError};
use crate::ops::keys;
use crate::runtime::gateway::{HttpLimits, MIN_HEAD_BYTES};
use meshproxy_core::config::{GatewayConfig, GatewayListener};
use meshproxy_core::ingress::{Balance, HashOn, RouteSpec, RouteTable, Snapshot, TargetSpec};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// How often a gateway asks its hubs for agents unless `refresh_ms` says.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(10);
/// A route's priority unless it says.
pub const DEFAULT_PRIORITY: u32 = 100;

/// What the driver needs of `[gateway]` besides the core's part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewaySettings {
    /// Where each listener binds, in the order of the core's gateway listeners.
    pub binds: Vec<SocketAddr>,
    /// Whether the core's `port` of each listener is to be replaced by the
    /// port it bound (it listens on port 0 and no `public_port` was given).
    pub port_from_bind: Vec<bool>,
    /// The HTTP limits.
    pub limits: HttpLimits,
}

fn ms(v: Option<u64>, default: Duration) -> Duration {
    v.map_or(default, Duration::from_millis)
}

/// `balance = "…"`.
fn balance(field: &str, s: &str) -> Result<Balance, ConfigError> {
    Ok(match s {
        "round_robin" => Balance::RoundRobin,
        "random" => Balance::Random,
        "least_active" => Balance::LeastActive,
        "weighted" => Balance::Weighted,
        "hash_ip" => Balance::Hash(HashOn::ClientIp),
        _ => match s.split_once(':') {
            Some(("hash_header", name)) => Balance::Hash(HashOn::Header(name.to_owned())),
            Some(("hash_cookie", name)) => Balance::Hash(HashOn::Cookie(name.to_owned())),
            _ => {
                return Err(invalid(format!(
                    "{field}: `{s}`, expected round_robin, random, least_active, weighted, \
                     hash_ip, hash_header:NAME or hash_cookie:NAME"
                )))
            }
        },
    })
}

fn agent_target(field: &str, a: &AgentTargetFile) -> Result<TargetSpec, ConfigError> {
    let pools: Vec<(u8, String, u32)> = match (&a.select, a.pools.is_empty()) {
        (Some(select), true) => vec![(0, select.clone(), 1)],
        (None, false) => a
            .pools
            .iter()
            .map(|p| (p.group.unwrap_or(0), p.select.clone(), p.weight.unwrap_or(1)))
            .collect(),
        _ => return Err(invalid(format!("{field}: give either `select` or `pools`"))),
    };
    let balance = match &a.balance {
        Some(b) => balance(&format!("{field}.balance"), b)?,
        None => Balance::RoundRobin,
    };
    Ok(TargetSpec::Agents { service: a.service.clone(), pools, balance })
}

fn target(field: &str, t: &TargetFile) -> Result<TargetSpec, ConfigError> {
    Ok(match t {
        TargetFile::Agent(a) => agent_target(&format!("{field}.agent"), a)?,
        TargetFile::Static(s) => TargetSpec::Static {
            status: s.status.unwrap_or(200),
            content_type: s
                .content_type
                .clone()
                .unwrap_or_else(|| "text/plain; charset=utf-8".to_owned()),
            body: s.body.clone().into_bytes(),
        },
        TargetFile::Redirect(r) => TargetSpec::Redirect {
            status: r.status.unwrap_or(308),
            to: r.to.clone(),
            keep_path: r.keep_path.unwrap_or(false),
            keep_query: r.keep_query.unwrap_or(false),
        },
    })
}

/// The listener a route belongs to.
fn route_listener<'a>(
    g: &'a GatewayFile,
    i: usize,
    r: &'a RouteFile,
) -> Result<&'a str, ConfigError> {
    match (&r.listener, g.listeners.as_slice()) {
        (Some(name), _) => {
            if g.listeners.iter().any(|l| &l.name == name) {
                Ok(name)
            } else {
                Err(invalid(format!(
                    "gateway.routes[{i}] (`{}`).listener: no listener is called `{name}`",
                    r.id
                )))
            }
        }
        (None, [only]) => Ok(&only.name),
        (None, _) => Err(invalid(format!(
            "gateway.routes[{i}] (`{}`).listener: name it (the gateway has several listeners)",
            r.id
        ))),
    }
}

/// One listener's routes as read: the routes, and its default (strictness, target).
type ListenerRoutes = (Vec<RouteSpec>, Option<(bool, TargetSpec)>);

/// `[gateway]` as the core's config and the driver's settings.
pub(super) fn gateway_config(
    g: &GatewayFile,
) -> Result<(GatewayConfig, GatewaySettings), ConfigError> {
    if g.listeners.is_empty() {
        return Err(invalid("gateway.listeners: at least one listener"));
    }
    let mut specs: BTreeMap<&str, ListenerRoutes> = BTreeMap::new();
    for (i, l) in g.listeners.iter().enumerate() {
        if specs.insert(&l.name, (Vec::new(), None)).is_some() {
            return Err(invalid(format!("gateway.listeners[{i}].name: `{}` used twice", l.name)));
        }
    }
    for (i, r) in g.routes.iter().enumerate() {
        let listener = route_listener(g, i, r)?;
        let field = format!("gateway.routes[{i}] (`{}`).target", r.id);
        let spec = target(&field, &r.target)?;
        let strict = r.strict.unwrap_or(true);
        let Some(table) = specs.get_mut(listener) else { continue };
        if r.host.is_none() && r.path.is_none() {
            if table.1.is_some() {
                return Err(invalid(format!(
                    "gateway.routes[{i}] (`{}`): listener `{listener}` has a default route \
                     (one without host and path) already",
                    r.id
                )));
            }
            table.1 = Some((strict, spec));
            continue;
        }
        table.0.push(RouteSpec {
            id: r.id.clone(),
            priority: r.priority.unwrap_or(DEFAULT_PRIORITY),
            host: r.host.clone(),
            path_prefix: r.path.clone(),
            strict,
            target: spec,
        });
    }
    let mut tables = BTreeMap::new();
    for (name, (routes, default)) in &specs {
        let default = default.as_ref().map(|(strict, t)| (*strict, t));
        let table = RouteTable::new(name, routes, default)
            .map_err(|e| invalid(format!("gateway.routes: {e}")))?;
        tables.insert((*name).to_owned(), table);
    }
    let routes =
        Snapshot::new(1, tables).map_err(|e| invalid(format!("gateway.listeners: {e}")))?;
    let listeners = g
        .listeners
        .iter()
        .map(|l| GatewayListener {
            name: l.name.clone(),
            port: l.public_port.unwrap_or(l.listen.port()),
            https: l.https.unwrap_or(false),
        })
        .collect();
    let config = GatewayConfig {
        listeners,
        routes,
        refresh: ms(g.refresh_ms, DEFAULT_REFRESH),
        credential: keys::credential("gateway.credential", &g.credential)?,
    };
    let settings = GatewaySettings {
        binds: g.listeners.iter().map(|l| l.listen).collect(),
        port_from_bind: g.listeners.iter().map(|l| l.public_port.is_none()).collect(),
        limits: http_limits(g)?,
    };
    Ok((config, settings))
}

fn http_limits(g: &GatewayFile) -> Result<HttpLimits, ConfigError> {
    let d = HttpLimits::default();
    let limits = HttpLimits {
        header_read_timeout: ms(g.header_read_timeout_ms, d.header_read_timeout),
        max_head_bytes: g.max_head_bytes.unwrap_or(d.max_head_bytes),
        max_headers: g.max_headers.unwrap_or(d.max_headers),
        max_connections: g.max_connections.unwrap_or(d.max_connections),
        max_connections_per_ip: g.max_connections_per_ip.unwrap_or(d.max_connections_per_ip),
        response_timeout: ms(g.response_timeout_ms, d.response_timeout),
        upgrade_idle_timeout: ms(g.upgrade_idle_timeout_ms, d.upgrade_idle_timeout),
    };
    if limits.max_head_bytes < MIN_HEAD_BYTES {
        return Err(invalid(format!("gateway.max_head_bytes: at least {MIN_HEAD_BYTES}")));
    }
    for (name, v) in [
        ("max_headers", limits.max_headers),
        ("max_connections", limits.max_connections),
        ("max_connections_per_ip", limits.max_connections_per_ip),
    ] {
        if v == 0 {
            return Err(invalid(format!("gateway.{name}: must be at least 1")));
        }
    }
    for (name, v) in [
        ("header_read_timeout_ms", limits.header_read_timeout),
        ("response_timeout_ms", limits.response_timeout),
        ("upgrade_idle_timeout_ms", limits.upgrade_idle_timeout),
    ] {
        if v.is_zero() {
            return Err(invalid(format!("gateway.{name}: must be at least 1")));
        }
    }
    Ok(limits)
}
