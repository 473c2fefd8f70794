//! Runs a node over the real peer network: the libp2p actor from
//! [`crate::network`] plugged into [`crate::app::start_node`].

use crate::app::{self, NetworkStarter, RunningNode, StartError};
use crate::config::FileConfig;
use crate::identity::Identity;
use crate::network::{
    addr_to_core, AdmittedPeers, AutonatConfig, NetConfig, NetLimits, NetworkActor,
    RelayServerConfig,
};
use crate::sockets::{Sockets, TokioSockets};
use libp2p::Multiaddr;
use meshproxy_core::record::PeerAddr;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Why a node could not be started over libp2p.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The identity key is not a valid Ed25519 secret.
    #[error("identity: {0}")]
    Identity(String),
    /// A `listen` address is not a multiaddr.
    #[error("listen address `{addr}`: {reason}")]
    Listen {
        /// The address as written.
        addr: String,
        /// Why it does not parse.
        reason: String,
    },
    /// The node did not start.
    #[error(transparent)]
    Start(#[from] StartError),
}

/// A multiaddr from the config, in the core's form.
pub fn parse_addr(s: &str) -> Result<PeerAddr, String> {
    s.parse::<Multiaddr>().map(|m| addr_to_core(&m)).map_err(|e| format!("`{s}`: {e}"))
}

/// A node running over libp2p, with the addresses its peer network listens on.
#[derive(Debug)]
pub struct NetNode {
    /// The node (runner, listeners).
    pub node: RunningNode,
    /// Where peers can reach it, with the real ports.
    pub p2p_addrs: Vec<Multiaddr>,
}

/// The peer network's limits: `[limits]` keys over the defaults.
fn net_limits(l: &crate::config::LimitsFile) -> NetLimits {
    let d = NetLimits::default();
    NetLimits {
        max_established_incoming: l.max_incoming_connections.unwrap_or(d.max_established_incoming),
        max_established_outgoing: l.max_outgoing_connections.unwrap_or(d.max_established_outgoing),
        max_established_per_peer: l.max_connections_per_peer.unwrap_or(d.max_established_per_peer),
        max_pending_incoming: l.max_pending_connections.unwrap_or(d.max_pending_incoming),
        max_pending_outgoing: l.max_pending_connections.unwrap_or(d.max_pending_outgoing),
        max_streams_per_connection: l
            .max_streams_per_connection
            .unwrap_or(d.max_streams_per_connection),
        max_connections_per_ip: l.max_connections_per_ip.unwrap_or(d.max_connections_per_ip),
    }
}

/// Starts the node `file` describes, over libp2p, with `identity`. A hub also
/// serves as a circuit relay for the peers it admits (unless `[hub] relay = false`).
///
/// The network starts first, so that an exit without `advertise` addresses
/// advertises the addresses its listeners actually bound (port 0 resolved,
/// `0.0.0.0` expanded to the interfaces' addresses by libp2p).
pub async fn start(file: &FileConfig, identity: &Identity, seed: u64) -> Result<NetNode, RunError> {
    let keypair = libp2p::identity::Keypair::ed25519_from_bytes(identity.secret_bytes())
        .map_err(|e| RunError::Identity(e.to_string()))?;
    let mut net = NetConfig::new(keypair);
    net.limits = net_limits(&file.limits);
    let relay = file.relay_limits().map_err(|e| RunError::Start(StartError::Config(e)))?;
    // The relay serves the peers the core admits (`Admit`/`Revoke` commands).
    net.relay =
        relay.map(|limits| RelayServerConfig { limits, admitted: AdmittedPeers::default() });
    // A hub is reachable by design: it uses no relay and only answers autonat probes. Other
    // nodes reserve and hole-punch through hubs, and probe unless the operator says how
    // reachable they are.
    let stated = file.reachability().map_err(|e| RunError::Start(StartError::Config(e)))?;
    let private_ips = file.autonat_private_ips.unwrap_or(false);
    net.relay_client = net.relay.is_none();
    net.autonat = if net.relay.is_some() {
        Some(AutonatConfig { probe: false, private_ips, ..AutonatConfig::default() })
    } else if stated.is_some() {
        None
    } else {
        Some(AutonatConfig { private_ips, ..AutonatConfig::default() })
    };
    for addr in &file.listen {
        let parsed = addr
            .parse::<Multiaddr>()
            .map_err(|e| RunError::Listen { addr: addr.clone(), reason: e.to_string() })?;
        net.listen.push(parsed);
    }
    // Events the network reports before the runner exists wait here, in order.
    let (early_tx, mut early_rx) = mpsc::unbounded_channel();
    let handle = NetworkActor::spawn(net, move |event| {
        let _ = early_tx.send(event);
    })
    .map_err(|e| StartError::Network(e.to_string()))?;
    let p2p_addrs = handle.listen_addrs().await;
    let mut file = file.clone();
    // Behind NAT the bound addresses reach nobody outside: advertise none unless told to
    // (the core registers through the relay instead).
    let private = stated == Some(meshproxy_core::io::Reachability::Private);
    if let Some(exit) = file.exit.as_mut().filter(|e| e.advertise.is_empty() && !private) {
        exit.advertise = p2p_addrs.iter().map(ToString::to_string).collect();
        if exit.advertise.is_empty() {
            tracing::warn!(
                "this exit listens nowhere and advertises no address: clients cannot reach it"
            );
        }
    }
    let commands = handle.commands.clone();
    let starter: NetworkStarter = Box::new(move |sink| {
        tokio::spawn(async move {
            while let Some(event) = early_rx.recv().await {
                sink(event);
            }
        });
        Ok(commands)
    });
    let sockets: Arc<dyn Sockets> = Arc::new(TokioSockets);
    let node = app::start_node_with(&file, identity, seed, &parse_addr, starter, sockets).await?;
    Ok(NetNode { node, p2p_addrs })
}
