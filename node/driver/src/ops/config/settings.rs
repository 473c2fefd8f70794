//! [`Settings`]: everything a node runs with, built from the config file once,
//! in one function ([`Settings::from_file`]), checked as it is built; the
//! start path reads its fields and parses nothing again.

use super::file::{FileConfig, ListenerSocket};
use super::gateway::{gateway_config, GatewaySettings};
use super::roles::{agent_config, check_limits, client_config, exit_config, hub_config};
use super::{invalid, ConfigError, NetLimits, RelayLimits};
use crate::ops::identity::{parse_peer_id, Identity};
use meshproxy_core::config::{HubContact, NodeConfig, RelayConfig};
use meshproxy_core::io::Reachability;
use meshproxy_core::record::PeerAddr;
use meshproxy_core::ticket::ed25519_key_of;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// The most worker threads `threads` may ask for.
pub const MAX_THREADS: usize = 1024;

/// A node's settings, typed and checked: the core's configuration and what the
/// driver around it needs (peer network, runtime, listeners, files).
#[derive(Clone, Debug)]
pub struct Settings {
    /// The core's configuration; the driver fills in `wall_clock` and
    /// `entropy` when it starts the node.
    pub node: NodeConfig,
    /// The peer network's connection and stream limits.
    pub net: NetLimits,
    /// The circuit relay this node serves: `Some` for a hub unless `[hub] relay = false`.
    pub relay: Option<RelayLimits>,
    /// The reachability the operator states: `None` for `auto` (autonat decides).
    pub reachability: Option<Reachability>,
    /// Whether autonat probes private and loopback addresses too.
    pub autonat_private_ips: bool,
    /// Worker threads of the node's runtime (1 to [`MAX_THREADS`]); `None`: one per CPU.
    pub threads: Option<usize>,
    /// Peer-to-peer listen multiaddrs, as written (the network parses them).
    pub listen: Vec<String>,
    /// The client listeners' sockets, in the order of the core's listeners.
    pub listeners: Vec<ListenerSocket>,
    /// Where to serve `GET /metrics`, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// The state file for sticky pins, if any.
    pub state: Option<PathBuf>,
    /// The control socket's path, unless `control = false`.
    pub control: Option<PathBuf>,
    /// (Gateways) the public listeners' sockets and HTTP limits.
    pub gateway: Option<GatewaySettings>,
}

impl Settings {
    /// Checks `file` and builds the settings of the node with `identity` (a hub
    /// signs tickets with its key). `parse_addr` turns a multiaddr string into
    /// its binary form (the network layer's business).
    pub fn from_file(
        file: &FileConfig,
        identity: &Identity,
        parse_addr: &dyn Fn(&str) -> Result<PeerAddr, String>,
    ) -> Result<Settings, ConfigError> {
        if file.hub.is_none()
            && file.exit.is_none()
            && file.client.is_none()
            && file.agent.is_none()
            && file.gateway.is_none()
        {
            return Err(invalid(
                "no role: add a [hub], [exit], [agent], [client] and/or [gateway] table",
            ));
        }
        if file.exit.is_some() && file.agent.is_some() {
            return Err(invalid(
                "[exit] and [agent] together: a node is listed at its hubs in one role for now; \
                 run the agent as a second node (its own identity and listen address)",
            ));
        }
        let threads = match file.threads {
            Some(n) if n == 0 || n > MAX_THREADS => {
                return Err(invalid(format!("threads = {n}: must be 1 to {MAX_THREADS}")))
            }
            threads => threads,
        };
        let addrs = |list: &[String], field: &str| -> Result<Vec<PeerAddr>, ConfigError> {
            list.iter()
                .map(|a| parse_addr(a).map_err(|e| invalid(format!("{field}: `{a}`: {e}"))))
                .collect()
        };
        let mut hubs = Vec::new();
        for (i, h) in file.hubs.iter().enumerate() {
            let peer = parse_peer_id(&h.peer)
                .ok_or_else(|| invalid(format!("hubs[{i}].peer: `{}` is not a peer id", h.peer)))?;
            let ticket_key = ed25519_key_of(&peer);
            let checks_tickets =
                file.exit.as_ref().is_some_and(|e| e.open != Some(true)) || file.agent.is_some();
            if ticket_key.is_none() && checks_tickets {
                return Err(invalid(format!(
                    "hubs[{i}].peer: `{}` is not an Ed25519 peer id, so this node cannot check \
                     the tickets it signs",
                    h.peer
                )));
            }
            let addrs = addrs(&h.addrs, &format!("hubs[{i}].addrs"))?;
            hubs.push(HubContact { peer, addrs, ticket_key });
        }
        if (file.exit.is_some() || file.client.is_some() || file.agent.is_some()) && hubs.is_empty()
        {
            return Err(invalid("exits, agents and clients need at least one [[hubs]] entry"));
        }
        // A hub that is also the gateway reads its own directory.
        if file.gateway.is_some() && file.hub.is_none() && hubs.is_empty() {
            return Err(invalid(
                "a gateway finds agents through hubs: add a [[hubs]] entry (or run it on a hub)",
            ));
        }
        let hub = file.hub.as_ref().map(|h| hub_config(h, identity)).transpose()?;
        let reachability = match file.reachability.as_deref().unwrap_or("auto") {
            "auto" => None,
            "public" => Some(Reachability::Public),
            "private" => Some(Reachability::Private),
            other => {
                return Err(invalid(format!(
                    "reachability: `{other}`, expected auto, public or private"
                )))
            }
        };
        // A bad value under `relay = false` is ignored: nothing uses it.
        let relay = file.hub.as_ref().filter(|h| h.relay != Some(false)).map(|h| h.relay_limits);
        relay.as_ref().map(RelayLimits::check).transpose().map_err(invalid)?;
        let exit = match &file.exit {
            Some(e) => {
                let own = own_ips(&file.listen, &e.advertise, &e.own_addrs);
                Some(exit_config(e, addrs(&e.advertise, "exit.advertise")?, own)?)
            }
            None => None,
        };
        let client = file.client.as_ref().map(client_config).transpose()?;
        let (gateway, gateway_settings) = match &file.gateway {
            Some(g) => {
                let (config, settings) = gateway_config(g)?;
                (Some(config), Some(settings))
            }
            None => (None, None),
        };
        let agent = match &file.agent {
            Some(a) => Some(agent_config(a, addrs(&a.advertise, "agent.advertise")?)?),
            None => None,
        };
        check_limits(&file.limits.core)?;
        let mut control = file.control_path();
        let max = crate::ops::control::MAX_SOCKET_PATH;
        if let Some(path) = control.as_ref().filter(|p| !(1..=max).contains(&p.as_os_str().len())) {
            let len = path.as_os_str().len();
            if file.control.is_none() {
                // The default path, derived from a deep state or identity path: not worth
                // refusing to start over; the operator can name a shorter one.
                tracing::warn!(
                    path = %path.display(),
                    "control socket off: the default path is {len} bytes, more than a Unix socket \
                     path may have ({max}); set `control` to a shorter path"
                );
                control = None;
            } else {
                return Err(invalid(format!(
                    "control: `{}` is {len} bytes; a Unix socket path must be 1 to {max} (set \
                     `control` to a shorter path, or `control = false`)",
                    path.display(),
                )));
            }
        }
        let node = NodeConfig {
            peer_id: identity.peer_id(),
            hubs,
            hub,
            exit,
            client,
            gateway,
            agent,
            timeouts: file.timeouts,
            limits: file.limits.core,
            relay: RelayConfig::default(),
            wall_clock: Duration::ZERO,
            entropy: None,
        };
        Ok(Settings {
            node,
            net: file.limits.net,
            relay,
            reachability,
            autonat_private_ips: file.autonat_private_ips.unwrap_or(false),
            threads,
            listen: file.listen.clone(),
            listeners: file.listener_sockets(),
            metrics: file.metrics,
            state: file.state.clone(),
            control,
            gateway: gateway_settings,
        })
    }

    /// An exit (or agent) configured without `advertise` advertises `bound`, the
    /// addresses its peer network actually listens on (port 0 resolved,
    /// `0.0.0.0` expanded), and denies them as destinations too. Behind NAT
    /// (`reachability = "private"`) bound addresses reach nobody outside, so
    /// it advertises none (the core registers through the relay instead).
    /// Returns whether the exit now advertises nothing at all.
    pub fn advertise_bound(
        &mut self,
        bound: &[String],
        parse_addr: &dyn Fn(&str) -> Result<PeerAddr, String>,
    ) -> bool {
        let private = self.reachability == Some(Reachability::Private);
        // An agent is dialed by gateways the same way; behind NAT, through its hubs' relays.
        if let Some(agent) = self.node.agent.as_mut().filter(|a| a.addrs.is_empty() && !private) {
            agent.addrs = bound.iter().filter_map(|a| parse_addr(a).ok()).collect();
        }
        let Some(exit) = self.node.exit.as_mut() else { return false };
        if !exit.addrs.is_empty() || private {
            return false;
        }
        exit.addrs = bound.iter().filter_map(|a| parse_addr(a).ok()).collect();
        exit.own_addrs.extend(own_ips(&[], bound, &[]));
        exit.own_addrs.sort();
        exit.own_addrs.dedup();
        exit.addrs.is_empty()
    }
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

impl FileConfig {
    /// The core's part of the [`Settings`] of the node with `identity` (see
    /// [`Settings::from_file`], which checks the whole file).
    pub fn to_node_config(
        &self,
        identity: &Identity,
        parse_addr: &dyn Fn(&str) -> Result<PeerAddr, String>,
    ) -> Result<NodeConfig, ConfigError> {
        Settings::from_file(self, identity, parse_addr).map(|s| s.node)
    }
}
