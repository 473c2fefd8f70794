//! Command-line flags of the role commands (`meshproxy hub|exit|client|agent`).
//!
//! Every flag is a config key: the flags build (or, with `--config`, amend) a
//! [`FileConfig`], so a node started from flags and one started from the
//! equivalent file behave the same, and `--help` names the key each flag sets.
//! A flag that is given replaces the file's value (lists included), so what
//! the command line says always wins and nothing is silently merged.

use crate::ops::config::{
    AgentFile, AgentTargetFile, ClientFile, ConfigError, ControlKey, CredentialFile, ExitFile,
    FileConfig, GatewayFile, GatewayListenerFile, HubEntry, HubFile, ListenerFile,
    RedirectTargetFile, RouteFile, StaticTargetFile, TargetFile, UserFile,
};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Flags every role command takes.
// The fields' doc comments are their `--help` text: brackets there are literal.
#[allow(rustdoc::private_intra_doc_links)]
#[derive(Clone, Debug, Default, clap::Args)]
pub struct CommonFlags {
    /// TOML config file to start from; flags given here replace its values.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Ed25519 key file, created (mode 0600) if missing [key: identity]
    /// (default without --config: ROLE.key, e.g. hub.key).
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// File that keeps sticky pins across restarts [key: state].
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// Control socket for `meshproxy status`, or `off` [key: control]
    /// (default: the state file's, else the identity file's, name with .sock).
    #[arg(long, value_name = "PATH|off")]
    pub control: Option<String>,
    /// Peer-to-peer listen multiaddr, repeatable [key: listen].
    #[arg(long = "listen", value_name = "MULTIADDR")]
    pub listen: Vec<String>,
    /// A hub to use, as printed by `meshproxy hub`: MULTIADDR/p2p/PEER_ID; repeatable [key: [[hubs]]].
    #[arg(long = "hub", value_name = "MULTIADDR/p2p/PEER_ID")]
    pub hubs: Vec<String>,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics [key: metrics].
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<SocketAddr>,
    /// Whether other nodes can dial this one directly: auto (autonat finds out), public,
    /// or private (behind NAT) [key: reachability].
    #[arg(long, value_name = "auto|public|private")]
    pub reachability: Option<String>,
    /// Let autonat probe private and loopback addresses (LANs, test networks) [key: autonat_private_ips].
    #[arg(long, value_name = "BOOL")]
    pub autonat_private_ips: Option<bool>,
    /// Runtime worker threads, 1 to 1024 (default: one per CPU) [key: threads].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

/// Flags of `meshproxy hub`.
// The fields' doc comments are their `--help` text: brackets there are literal.
#[allow(rustdoc::broken_intra_doc_links)]
#[derive(Clone, Debug, Default, clap::Args)]
pub struct HubFlags {
    /// Admit nodes holding this token: ID=TOKEN[,roles=exit+client][,peer=PEER_ID][,max=N]
    /// (roles default to client; max: directory entries an exit key may hold); repeatable
    /// [key: hub.keys].
    #[arg(long = "key", value_name = "ID=TOKEN[,…]")]
    pub keys: Vec<String>,
    /// Admit by the verifier `meshproxy token new` printed (the hub then holds nothing that
    /// logs in): ID=HEX[,roles=…][,peer=…][,max=N]; repeatable [key: hub.keys].
    #[arg(long = "key-verifier", value_name = "ID=HEX[,…]")]
    pub key_verifiers: Vec<String>,
    /// How long an exit's registration lasts without a heartbeat [key: hub.ttl_ms].
    #[arg(long, value_name = "MS")]
    pub ttl_ms: Option<u64>,
}

/// Flags of `meshproxy exit`.
// The fields' doc comments are their `--help` text: brackets there are literal.
#[allow(rustdoc::broken_intra_doc_links)]
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ExitFlags {
    /// Admission at the hubs: ID=TOKEN [key: exit.credential]. Command lines are
    /// visible to other local users: prefer the config file on shared hosts.
    #[arg(long, value_name = "ID=TOKEN")]
    pub credential: Option<String>,
    /// Multiaddr clients dial, repeatable [key: exit.advertise] (default: what --listen bound).
    #[arg(long = "advertise", value_name = "MULTIADDR")]
    pub advertise: Vec<String>,
    /// Allow a destination otherwise denied: NET, NET:PORTS or [NET6]:PORTS; repeatable [key: exit.allow].
    #[arg(long = "allow", value_name = "RULE")]
    pub allow: Vec<String>,
    /// Deny a destination: NET, NET:PORTS or [NET6]:PORTS; repeatable [key: exit.deny].
    #[arg(long = "deny", value_name = "RULE")]
    pub deny: Vec<String>,
    /// Only these destination ports (443, 8000-8080); repeatable [key: exit.allowed_ports].
    #[arg(long = "allowed-port", value_name = "PORTS")]
    pub allowed_ports: Vec<String>,
    /// Two-letter country of this exit's egress [key: exit.country].
    #[arg(long, value_name = "CC")]
    pub country: Option<String>,
    /// A label clients can filter on, repeatable [key: exit.labels].
    #[arg(long = "label", value_name = "LABEL")]
    pub labels: Vec<String>,
    /// Sessions advertised [key: exit.capacity].
    #[arg(long, value_name = "N")]
    pub capacity: Option<u32>,
    /// Hold relay reservations at the hubs: auto (while not reachable directly), always or
    /// off [key: exit.relay].
    #[arg(long, value_name = "auto|always|off")]
    pub relay: Option<String>,
    /// Serve peers without a ticket from this exit's hubs: a public exit, anyone who learns
    /// its address may use it [key: exit.open].
    #[arg(long)]
    pub open: bool,
}

/// Flags of `meshproxy client`. The listener flags describe the listeners
/// made by `--listener`; with none given, the config's listeners are kept (or,
/// without a config, one listener on 127.0.0.1:1080).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ClientFlags {
    /// Admission at the hubs: ID=TOKEN [key: client.credential]. Command lines
    /// are visible to other local users: prefer the config file on shared hosts.
    #[arg(long, value_name = "ID=TOKEN")]
    pub credential: Option<String>,
    /// A listener for apps, repeatable [key: client.listeners[].bind].
    #[arg(long = "listener", value_name = "ADDR:PORT")]
    pub listeners: Vec<SocketAddr>,
    /// What the listeners speak: socks5 (with SOCKS4/4a), http (CONNECT and plain http:// requests) or both [key: client.listeners[].protocol].
    #[arg(long, value_name = "PROTO")]
    pub protocol: Option<String>,
    /// Only exits in this country [key: client.listeners[].country].
    #[arg(long, value_name = "CC")]
    pub country: Option<String>,
    /// Only exits with this label, repeatable [key: client.listeners[].labels].
    #[arg(long = "label", value_name = "LABEL")]
    pub labels: Vec<String>,
    /// Pin connections to exits: off, listener or session [key: client.listeners[].sticky].
    #[arg(long, value_name = "MODE")]
    pub sticky: Option<String>,
    /// Require this user (SOCKS5 user/pass, HTTP Basic): NAME:PASSWORD; repeatable [key: client.listeners[].users].
    #[arg(long = "user", value_name = "NAME:PASSWORD")]
    pub users: Vec<String>,
    /// Whether sessions may run through a hub's relay (false: direct exits and connections
    /// only) [key: client.listeners[].relayed].
    #[arg(long, value_name = "BOOL")]
    pub relayed: Option<bool>,
}

/// Flags of `meshproxy gateway`.
// The fields' doc comments are their `--help` text: brackets there are literal.
#[allow(rustdoc::broken_intra_doc_links)]
#[derive(Clone, Debug, Default, clap::Args)]
pub struct GatewayFlags {
    /// Admission at the hubs: ID=TOKEN, a key with roles=gateway [key: gateway.credential].
    /// Command lines are visible to other local users: prefer the config file on shared hosts.
    #[arg(long, value_name = "ID=TOKEN")]
    pub credential: Option<String>,
    /// A public HTTP listener (HTTP/1.1 and h2), repeatable; the first is named `http`, the
    /// next `http-2`, … [key: gateway.listeners[].listen].
    #[arg(long = "listen-http", value_name = "ADDR:PORT")]
    pub listen_http: Vec<SocketAddr>,
    /// A route, repeatable [key: gateway.routes]: space-separated KEY=VALUE among
    /// id, listener, host (app.example.com or *.example.com), path (/api), priority (lower
    /// first), strict (true), and one target: service=NAME select=K=V,… [balance=round_robin]
    /// | static=BODY [status=200] | redirect=URL [status=308] [keep_path=true] [keep_query=true].
    /// Without host and path it is the listener's default route. Example:
    /// 'host=app.example.com path=/ service=web select=site=home'.
    #[arg(long = "route", value_name = "SPEC")]
    pub routes: Vec<String>,
}

/// Flags of `meshproxy agent`. `--service`, `--label` and `--allow` given
/// here replace the config's tables (all of each, not one entry).
// The fields' doc comments are their `--help` text: brackets there are literal.
#[allow(rustdoc::broken_intra_doc_links)]
#[derive(Clone, Debug, Default, clap::Args)]
pub struct AgentFlags {
    /// Admission at the hubs: ID=TOKEN, a key with the agent role [key: agent.credential].
    /// Command lines are visible to other local users: prefer the config file on shared hosts.
    #[arg(long, value_name = "ID=TOKEN")]
    pub credential: Option<String>,
    /// A service gateways may open: NAME=HOST:PORT, e.g. web=127.0.0.1:8080 (names: a-z 0-9 _ .,
    /// at most 24). An IP literal allows exactly that origin; a host name is resolved and must
    /// land inside --allow. Repeatable [key: agent.services].
    #[arg(long = "service", value_name = "NAME=HOST:PORT")]
    pub services: Vec<String>,
    /// A label gateways select this agent by: KEY=VALUE, e.g. site=home (a-z 0-9 _ .);
    /// repeatable [key: agent.labels].
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Where a service's host name may resolve to: NET, NET:PORTS or [NET6]:PORTS, e.g.
    /// 10.0.0.0/8:80-443; repeatable; nothing is allowed by default [key: agent.allow].
    #[arg(long = "allow", value_name = "RULE")]
    pub allow: Vec<String>,
    /// Multiaddr gateways dial, repeatable [key: agent.advertise] (default: what --listen bound).
    #[arg(long = "advertise", value_name = "MULTIADDR")]
    pub advertise: Vec<String>,
    /// Hold relay reservations at the hubs: auto (while not reachable directly), always or
    /// off [key: agent.relay].
    #[arg(long, value_name = "auto|always|off")]
    pub relay: Option<String>,
}

/// Which role command is being run, with its flags.
#[derive(Clone, Copy, Debug)]
pub enum RoleFlags<'a> {
    /// `meshproxy hub`.
    Hub(&'a HubFlags),
    /// `meshproxy exit`.
    Exit(&'a ExitFlags),
    /// `meshproxy client`.
    Client(&'a ClientFlags),
    /// `meshproxy gateway`.
    Gateway(&'a GatewayFlags),
    /// `meshproxy agent`.
    Agent(&'a AgentFlags),
}

impl RoleFlags<'_> {
    fn name(self) -> &'static str {
        match self {
            RoleFlags::Hub(_) => "hub",
            RoleFlags::Exit(_) => "exit",
            RoleFlags::Client(_) => "client",
            RoleFlags::Gateway(_) => "gateway",
            RoleFlags::Agent(_) => "agent",
        }
    }
}

fn invalid(msg: String) -> ConfigError {
    ConfigError::Invalid(msg)
}

/// `ID=VALUE` (or `NAME:VALUE` with `sep = ':'`), both parts non-empty.
fn pair<'a>(flag: &str, s: &'a str, sep: char) -> Result<(&'a str, &'a str), ConfigError> {
    match s.split_once(sep) {
        Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok((a, b)),
        _ => {
            Err(invalid(format!("--{flag} `{s}`: expected two non-empty parts joined by `{sep}`")))
        }
    }
}

fn credential(flag: &str, s: &str) -> Result<CredentialFile, ConfigError> {
    let (id, token) = pair(flag, s, '=')?;
    Ok(CredentialFile { id: id.to_owned(), token: token.to_owned() })
}

/// `--control PATH|off`: `off` (or `false`) turns the socket off; a file
/// really named `off` is `./off`.
pub fn control_flag(s: &str) -> ControlKey {
    match s {
        "off" | "false" => ControlKey::Switch(false),
        path => ControlKey::Path(PathBuf::from(path)),
    }
}

/// `--hub MULTIADDR/p2p/PEER_ID`: entries for the same peer are merged.
fn hubs(list: &[String]) -> Result<Vec<HubEntry>, ConfigError> {
    let mut out: Vec<HubEntry> = Vec::new();
    for s in list {
        let Some((addr, peer)) = s.rsplit_once("/p2p/") else {
            return Err(invalid(format!(
                "--hub `{s}`: expected MULTIADDR/p2p/PEER_ID (the `p2p:` line `meshproxy hub` prints)"
            )));
        };
        if peer.is_empty() || peer.contains('/') {
            return Err(invalid(format!("--hub `{s}`: the peer id must end the address")));
        }
        let addrs = if addr.is_empty() { Vec::new() } else { vec![addr.to_owned()] };
        match out.iter_mut().find(|h| h.peer == peer) {
            Some(h) => h.addrs.extend(addrs),
            None => out.push(HubEntry { peer: peer.to_owned(), addrs }),
        }
    }
    Ok(out)
}

/// Replaces `target` with `flags` when any were given.
fn replace<T: Clone>(target: &mut Vec<T>, flags: &[T]) {
    if !flags.is_empty() {
        *target = flags.to_vec();
    }
}

/// Where a role listens when neither the config nor `--listen` says: hubs on
/// the well-known port, exits and agents anywhere (they advertise what they bound).
fn default_listen(role: RoleFlags<'_>) -> Vec<String> {
    match role {
        RoleFlags::Hub(_) => vec!["/ip4/0.0.0.0/tcp/4001".into()],
        RoleFlags::Exit(_) | RoleFlags::Agent(_) => vec!["/ip4/0.0.0.0/tcp/0".into()],
        RoleFlags::Client(_) | RoleFlags::Gateway(_) => Vec::new(),
    }
}

/// The config a role command runs: `--config` (if given) amended by the flags.
/// A missing role table is created from the flags; a required value missing
/// from both (an exit's or client's credential) is an error naming the flag
/// and the key.
pub fn build(common: &CommonFlags, role: RoleFlags<'_>) -> Result<FileConfig, ConfigError> {
    let mut file = match &common.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig {
            identity: Some(PathBuf::from(format!("{}.key", role.name()))),
            listen: default_listen(role),
            ..FileConfig::default()
        },
    };
    if common.identity.is_some() {
        file.identity.clone_from(&common.identity);
    }
    if common.state.is_some() {
        file.state.clone_from(&common.state);
    }
    if common.metrics.is_some() {
        file.metrics = common.metrics;
    }
    if let Some(control) = &common.control {
        file.control = Some(control_flag(control));
    }
    if common.reachability.is_some() {
        file.reachability.clone_from(&common.reachability);
    }
    if common.autonat_private_ips.is_some() {
        file.autonat_private_ips = common.autonat_private_ips;
    }
    if common.threads.is_some() {
        file.threads = common.threads;
    }
    replace(&mut file.listen, &common.listen);
    replace(&mut file.hubs, &hubs(&common.hubs)?);
    match role {
        RoleFlags::Hub(f) => apply_hub(&mut file, f)?,
        RoleFlags::Exit(f) => apply_exit(&mut file, f)?,
        RoleFlags::Client(f) => apply_client(&mut file, f)?,
        RoleFlags::Gateway(f) => apply_gateway(&mut file, f)?,
        RoleFlags::Agent(f) => apply_agent(&mut file, f)?,
    }
    Ok(file)
}

fn apply_hub(file: &mut FileConfig, f: &HubFlags) -> Result<(), ConfigError> {
    let hub = file.hub.get_or_insert_with(HubFile::default);
    let mut keys = Vec::new();
    for k in &f.keys {
        keys.push(crate::ops::keys::key_flag("key", k, false)?);
    }
    for k in &f.key_verifiers {
        keys.push(crate::ops::keys::key_flag("key-verifier", k, true)?);
    }
    replace(&mut hub.keys, &keys);
    if f.ttl_ms.is_some() {
        hub.ttl_ms = f.ttl_ms;
    }
    if hub.keys.is_empty() {
        return Err(invalid(
            "a hub with no keys admits no one: give --key ID=TOKEN (key: hub.keys)".into(),
        ));
    }
    Ok(())
}

fn apply_exit(file: &mut FileConfig, f: &ExitFlags) -> Result<(), ConfigError> {
    let given = f.credential.as_deref().map(|c| credential("credential", c)).transpose()?;
    let exit = match (file.exit.as_mut(), given.clone()) {
        (Some(exit), _) => exit,
        (None, Some(credential)) => file.exit.insert(ExitFile::new(credential)),
        (None, None) => {
            return Err(invalid(
                "an exit needs a credential: give --credential ID=TOKEN (key: exit.credential)"
                    .into(),
            ))
        }
    };
    if let Some(c) = given {
        exit.credential = c;
    }
    replace(&mut exit.advertise, &f.advertise);
    replace(&mut exit.allow, &f.allow);
    replace(&mut exit.deny, &f.deny);
    replace(&mut exit.allowed_ports, &f.allowed_ports);
    replace(&mut exit.labels, &f.labels);
    if f.country.is_some() {
        exit.country.clone_from(&f.country);
    }
    if f.capacity.is_some() {
        exit.capacity = f.capacity;
    }
    if f.relay.is_some() {
        exit.relay.clone_from(&f.relay);
    }
    if f.open {
        exit.open = Some(true);
    }
    Ok(())
}

fn apply_agent(file: &mut FileConfig, f: &AgentFlags) -> Result<(), ConfigError> {
    let given = f.credential.as_deref().map(|c| credential("credential", c)).transpose()?;
    let agent =
        match (file.agent.as_mut(), given.clone()) {
            (Some(agent), _) => agent,
            (None, Some(credential)) => file.agent.insert(AgentFile::new(credential)),
            (None, None) => return Err(invalid(
                "an agent needs a credential: give --credential ID=TOKEN (key: agent.credential)"
                    .into(),
            )),
        };
    if let Some(c) = given {
        agent.credential = c;
    }
    let table = |flag: &str, list: &[String]| -> Result<_, ConfigError> {
        let mut out = std::collections::BTreeMap::new();
        for item in list {
            let (k, v) = pair(flag, item, '=')?;
            if out.insert(k.to_owned(), v.to_owned()).is_some() {
                return Err(invalid(format!("--{flag} `{k}` is given twice")));
            }
        }
        Ok(out)
    };
    if !f.services.is_empty() {
        agent.services = table("service", &f.services)?;
    }
    if !f.labels.is_empty() {
        agent.labels = table("label", &f.labels)?;
    }
    replace(&mut agent.allow, &f.allow);
    replace(&mut agent.advertise, &f.advertise);
    if f.relay.is_some() {
        agent.relay.clone_from(&f.relay);
    }
    if agent.services.is_empty() {
        return Err(invalid(
            "an agent without services serves nothing: give --service NAME=HOST:PORT \
             (key: agent.services)"
                .into(),
        ));
    }
    Ok(())
}

fn apply_client(file: &mut FileConfig, f: &ClientFlags) -> Result<(), ConfigError> {
    let given = f.credential.as_deref().map(|c| credential("credential", c)).transpose()?;
    let client =
        match (file.client.as_mut(), given.clone()) {
            (Some(client), _) => client,
            (None, Some(credential)) => file.client.insert(ClientFile::new(credential)),
            (None, None) => return Err(invalid(
                "a client needs a credential: give --credential ID=TOKEN (key: client.credential)"
                    .into(),
            )),
        };
    if let Some(c) = given {
        client.credential = c;
    }
    let mut users = Vec::new();
    for u in &f.users {
        let (name, password) = pair("user", u, ':')?;
        users.push(UserFile { name: name.into(), password: password.into() });
    }
    let listener_flags = f.protocol.is_some()
        || f.country.is_some()
        || f.sticky.is_some()
        || f.relayed.is_some()
        || !f.labels.is_empty()
        || !users.is_empty();
    let binds: Vec<Option<SocketAddr>> = if !f.listeners.is_empty() {
        f.listeners.iter().copied().map(Some).collect()
    } else if client.listeners.is_empty() {
        vec![None]
    } else if listener_flags {
        return Err(invalid(
            "listener flags (--protocol, --country, --label, --sticky, --user, --relayed) describe the \
             listeners made by --listener; give --listener too (the config's listeners are kept \
             as written otherwise)"
                .into(),
        ));
    } else {
        return Ok(());
    };
    client.listeners = binds
        .into_iter()
        .map(|bind| ListenerFile {
            bind,
            protocol: f.protocol.clone(),
            country: f.country.clone(),
            labels: f.labels.clone(),
            sticky: f.sticky.clone(),
            fallback: None,
            retries: None,
            users: users.clone(),
            relayed: f.relayed,
        })
        .collect();
    Ok(())
}

fn apply_gateway(file: &mut FileConfig, f: &GatewayFlags) -> Result<(), ConfigError> {
    let given = f.credential.as_deref().map(|c| credential("credential", c)).transpose()?;
    let gateway = match (file.gateway.as_mut(), given.clone()) {
        (Some(gateway), _) => gateway,
        (None, Some(credential)) => file.gateway.insert(GatewayFile::new(credential)),
        (None, None) => return Err(invalid(
            "a gateway needs a credential: give --credential ID=TOKEN (key: gateway.credential)"
                .into(),
        )),
    };
    if let Some(c) = given {
        gateway.credential = c;
    }
    if !f.listen_http.is_empty() {
        gateway.listeners = f
            .listen_http
            .iter()
            .enumerate()
            .map(|(i, &listen)| GatewayListenerFile {
                name: if i == 0 { "http".to_owned() } else { format!("http-{}", i + 1) },
                listen,
                https: None,
                public_port: None,
            })
            .collect();
    }
    if !f.routes.is_empty() {
        gateway.routes =
            f.routes.iter().enumerate().map(|(i, r)| route(i, r)).collect::<Result<_, _>>()?;
    }
    if gateway.listeners.is_empty() {
        return Err(invalid(
            "a gateway needs a public listener: give --listen-http ADDR:PORT \
             (key: gateway.listeners)"
                .into(),
        ));
    }
    Ok(())
}

/// One `--route` spec (see [`GatewayFlags::routes`]).
fn route(i: usize, spec: &str) -> Result<RouteFile, ConfigError> {
    let bad = |problem: String| invalid(format!("--route `{spec}`: {problem}"));
    let mut fields = std::collections::BTreeMap::new();
    for item in spec.split_whitespace() {
        let (k, v) =
            item.split_once('=').ok_or_else(|| bad(format!("`{item}` is not KEY=VALUE")))?;
        if fields.insert(k, v).is_some() {
            return Err(bad(format!("`{k}` given twice")));
        }
    }
    let mut take = |k: &str| fields.remove(k).map(str::to_owned);
    let flag = |k: &str, v: Option<String>| -> Result<Option<bool>, ConfigError> {
        v.map(|v| v.parse().map_err(|_| bad(format!("{k}: `{v}` is not true or false"))))
            .transpose()
    };
    let number = |k: &str, v: Option<String>| -> Result<Option<u32>, ConfigError> {
        v.map(|v| v.parse().map_err(|_| bad(format!("{k}: `{v}` is not a number")))).transpose()
    };
    let id = take("id").unwrap_or_else(|| format!("route-{}", i + 1));
    let listener = take("listener");
    let host = take("host");
    let path = take("path");
    let priority = number("priority", take("priority"))?;
    let strict = flag("strict", take("strict"))?;
    let status = number("status", take("status"))?
        .map(|s| u16::try_from(s).map_err(|_| bad(format!("status: `{s}` is not a status"))))
        .transpose()?;
    let target = match (take("service"), take("static"), take("redirect")) {
        (Some(service), None, None) => TargetFile::Agent(AgentTargetFile {
            service,
            select: Some(take("select").ok_or_else(|| bad("service=… needs select=K=V,…".into()))?),
            pools: Vec::new(),
            balance: take("balance"),
        }),
        (None, Some(body), None) => {
            TargetFile::Static(StaticTargetFile { status, body, content_type: None })
        }
        (None, None, Some(to)) => TargetFile::Redirect(RedirectTargetFile {
            status,
            to,
            keep_path: flag("keep_path", take("keep_path"))?,
            keep_query: flag("keep_query", take("keep_query"))?,
        }),
        _ => return Err(bad("give exactly one of service=, static= and redirect=".into())),
    };
    if let Some(k) = fields.keys().next() {
        return Err(bad(format!("`{k}` is not a route key here")));
    }
    Ok(RouteFile { listener, id, priority, host, path, strict, target })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::identity::Identity;

    fn hub_peer() -> String {
        Identity::from_secret([9; 32]).peer_id_string()
    }

    fn hub_arg() -> String {
        format!("/ip4/127.0.0.1/tcp/4001/p2p/{}", hub_peer())
    }

    fn common() -> CommonFlags {
        CommonFlags { hubs: vec![hub_arg()], ..CommonFlags::default() }
    }

    fn node_config(file: &FileConfig) -> meshproxy_core::config::NodeConfig {
        file.to_node_config(&Identity::from_secret([1; 32]), &crate::ops::launch::parse_addr)
            .expect("valid config")
    }

    #[test]
    fn threads_flag_sets_the_key() {
        let flags = HubFlags {
            keys: vec!["exit-1=secret-token-0123456789ab".into()],
            ..HubFlags::default()
        };
        let file = build(&CommonFlags::default(), RoleFlags::Hub(&flags)).unwrap();
        assert_eq!(file.threads, None, "one per CPU unless asked");
        let common = CommonFlags { threads: Some(1), ..CommonFlags::default() };
        let file = build(&common, RoleFlags::Hub(&flags)).unwrap();
        let identity = Identity::from_secret([1; 32]);
        let settings = crate::ops::config::Settings::from_file(
            &file,
            &identity,
            &crate::ops::launch::parse_addr,
        )
        .expect("valid config");
        assert_eq!(settings.threads, Some(1));
    }

    #[test]
    fn hub_from_flags_only() {
        let flags = HubFlags {
            keys: vec!["exit-1=secret-token-0123456789ab".into()],
            ..HubFlags::default()
        };
        let metrics = Some("127.0.0.1:9091".parse().unwrap());
        let common = CommonFlags { metrics, ..CommonFlags::default() };
        let file = build(&common, RoleFlags::Hub(&flags)).unwrap();
        assert_eq!(file.metrics, metrics);
        assert_eq!(file.identity, Some(PathBuf::from("hub.key")));
        assert_eq!(file.listen, vec!["/ip4/0.0.0.0/tcp/4001".to_owned()]);
        let hub = node_config(&file).hub.expect("hub role");
        assert_eq!(hub.keys.len(), 1);
        assert_eq!(hub.keys[0].key_id, "exit-1");
    }

    #[test]
    fn hub_without_keys_is_refused_with_the_flag_named() {
        let err = build(&CommonFlags::default(), RoleFlags::Hub(&HubFlags::default()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--key") && err.contains("hub.keys"), "{err}");
    }

    #[test]
    fn exit_from_flags_only() {
        let flags = ExitFlags {
            credential: Some("exit-1=secret-token-0123456789ab".into()),
            allow: vec!["127.0.0.1:8080".into()],
            country: Some("DE".into()),
            ..ExitFlags::default()
        };
        let file = build(&common(), RoleFlags::Exit(&flags)).unwrap();
        assert_eq!(file.hubs.len(), 1);
        assert_eq!(file.hubs[0].peer, hub_peer());
        assert_eq!(file.hubs[0].addrs, vec!["/ip4/127.0.0.1/tcp/4001".to_owned()]);
        let exit = file.exit.as_ref().unwrap();
        assert_eq!(exit.credential.id, "exit-1");
        assert_eq!(exit.allow, vec!["127.0.0.1:8080".to_owned()]);
        assert_eq!(exit.country.as_deref(), Some("DE"));
    }

    #[test]
    fn nat_flags_set_their_keys() {
        let nat = CommonFlags {
            reachability: Some("private".into()),
            autonat_private_ips: Some(true),
            ..common()
        };
        let exit = ExitFlags {
            credential: Some("exit-1=secret-token-0123456789ab".into()),
            relay: Some("always".into()),
            ..ExitFlags::default()
        };
        let file = build(&nat, RoleFlags::Exit(&exit)).unwrap();
        assert_eq!(file.reachability.as_deref(), Some("private"));
        assert_eq!(file.autonat_private_ips, Some(true));
        assert_eq!(file.exit.as_ref().unwrap().relay.as_deref(), Some("always"));
        let node = node_config(&file);
        assert_eq!(node.exit.unwrap().relay, meshproxy_core::config::RelayMode::Always);
        let client = ClientFlags {
            credential: Some("alice=alice-token-0123456789ab".into()),
            listeners: vec!["127.0.0.1:1080".parse().unwrap()],
            relayed: Some(false),
            ..ClientFlags::default()
        };
        let file = build(&common(), RoleFlags::Client(&client)).unwrap();
        assert_eq!(file.client.as_ref().unwrap().listeners[0].relayed, Some(false));
        assert!(!node_config(&file).client.unwrap().listeners[0].relayed);
    }

    #[test]
    fn exit_needs_a_credential_from_somewhere() {
        let err = build(&common(), RoleFlags::Exit(&ExitFlags::default())).unwrap_err().to_string();
        assert!(err.contains("--credential") && err.contains("exit.credential"), "{err}");
    }

    #[test]
    fn hub_addresses_of_one_peer_are_merged_and_bad_ones_named() {
        let other = format!("/ip4/10.0.0.1/tcp/4001/p2p/{}", hub_peer());
        let merged = hubs(&[hub_arg(), other]).unwrap();
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].addrs.len(), 2);
        let err = hubs(&["/ip4/1.2.3.4/tcp/1".into()]).unwrap_err().to_string();
        assert!(err.contains("/ip4/1.2.3.4/tcp/1") && err.contains("/p2p/"), "{err}");
    }

    #[test]
    fn client_flags_make_listeners() {
        let flags = ClientFlags {
            credential: Some("alice=alice-token-0123456789ab".into()),
            listeners: vec!["127.0.0.1:1080".parse().unwrap(), "127.0.0.1:8118".parse().unwrap()],
            protocol: Some("socks5".into()),
            sticky: Some("session".into()),
            users: vec!["bob:hunter2".into()],
            ..ClientFlags::default()
        };
        let file = build(&common(), RoleFlags::Client(&flags)).unwrap();
        let client = file.client.as_ref().unwrap();
        assert_eq!(client.listeners.len(), 2);
        assert!(client.listeners.iter().all(|l| l.protocol.as_deref() == Some("socks5")));
        assert_eq!(client.listeners[1].users[0].name, "bob");
        assert_eq!(node_config(&file).client.unwrap().listeners.len(), 2);
    }

    #[test]
    fn client_without_listener_flags_gets_the_default_listener() {
        let flags = ClientFlags {
            credential: Some("alice=alice-token-0123456789ab".into()),
            ..ClientFlags::default()
        };
        let file = build(&common(), RoleFlags::Client(&flags)).unwrap();
        let sockets = file.listener_sockets();
        assert_eq!(sockets.len(), 1);
        assert_eq!(sockets[0].bind, crate::runtime::listener::DEFAULT_BIND);
    }

    #[test]
    fn flags_replace_what_the_config_file_says() {
        let dir = std::env::temp_dir().join(format!("meshproxy-flags-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("exit.toml");
        std::fs::write(
            &path,
            "identity = \"x.key\"\n[[hubs]]\npeer = \"12D3KooWOld\"\n[exit]\n\
             credential = { id = \"a\", token = \"b-token-0123456789abcdef\" }\nallow = [\"10.0.0.1\"]\n\
             country = \"FR\"\n",
        )
        .unwrap();
        let flags = ExitFlags { allow: vec!["10.0.0.2".into()], ..ExitFlags::default() };
        let common = CommonFlags { config: Some(path), ..common() };
        let file = build(&common, RoleFlags::Exit(&flags)).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(file.identity, Some(PathBuf::from("x.key")), "kept from the file");
        assert_eq!(file.hubs[0].peer, hub_peer(), "replaced by --hub");
        let exit = file.exit.unwrap();
        assert_eq!(exit.allow, vec!["10.0.0.2".to_owned()], "replaced by --allow");
        assert_eq!(exit.country.as_deref(), Some("FR"), "kept from the file");
        assert_eq!(exit.credential.id, "a", "kept from the file");
    }

    #[test]
    fn malformed_pairs_are_named() {
        let flags = ClientFlags {
            credential: Some("alice=alice-token-0123456789ab".into()),
            listeners: vec!["127.0.0.1:1080".parse().unwrap()],
            users: vec!["nopassword".into()],
            ..ClientFlags::default()
        };
        let err = build(&common(), RoleFlags::Client(&flags)).unwrap_err().to_string();
        assert!(err.contains("--user `nopassword`"), "{err}");
    }

    #[test]
    fn agent_from_flags_only_and_its_missing_pieces_named() {
        let flags = AgentFlags {
            credential: Some("agent-1=agent-token-0123456789abcdef".into()),
            services: vec!["web=127.0.0.1:8080".into(), "wiki=wiki.lan:80".into()],
            labels: vec!["site=home".into()],
            allow: vec!["192.168.1.0/24:80".into()],
            ..AgentFlags::default()
        };
        let file = build(&common(), RoleFlags::Agent(&flags)).expect("valid flags");
        assert_eq!(file.identity, Some(PathBuf::from("agent.key")));
        let agent = node_config(&file).agent.expect("an agent");
        assert_eq!(agent.services.len(), 2);
        assert_eq!(agent.labels.get("site").map(String::as_str), Some("home"));
        assert_eq!(agent.allow.len(), 1);
        let err = |f: &AgentFlags| build(&common(), RoleFlags::Agent(f)).unwrap_err().to_string();
        let no_cred = AgentFlags { credential: None, ..flags.clone() };
        assert!(err(&no_cred).contains("key: agent.credential"), "{}", err(&no_cred));
        let no_service = AgentFlags { services: vec![], ..flags.clone() };
        assert!(err(&no_service).contains("key: agent.services"), "{}", err(&no_service));
        let twice = AgentFlags { services: vec!["a=h:1".into(), "a=h:2".into()], ..flags };
        assert!(err(&twice).contains("--service `a` is given twice"), "{}", err(&twice));
    }
}
