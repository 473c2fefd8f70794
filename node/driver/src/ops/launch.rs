//! Runs a node over the real peer network: the libp2p actor from
//! [`crate::p2p::network`] plugged into [`crate::ops::assemble::start_node`].

use crate::ops::assemble::{self, NetworkStarter, RunningNode, StartError};
use crate::ops::config::{FileConfig, Settings};
use crate::ops::identity::Identity;
use crate::p2p::network::{
    addr_to_core, AdmittedPeers, AutonatConfig, NetConfig, NetError, NetworkActor,
    RelayServerConfig,
};
use crate::runtime::sockets::{Sockets, TokioSockets};
use libp2p::Multiaddr;
use meshproxy_core::record::PeerAddr;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Why a node could not be started over libp2p.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The identity key is not a valid Ed25519 secret.
    #[error("identity: {0}")]
    Identity(#[source] libp2p::identity::DecodingError),
    /// A `listen` address is not a multiaddr.
    #[error("listen address `{addr}`: {source}")]
    Listen {
        /// The address as written.
        addr: String,
        /// Why it does not parse.
        source: libp2p::multiaddr::Error,
    },
    /// The peer network did not start.
    #[error("network: {0}")]
    Network(#[from] NetError),
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

/// Starts the node `file` describes, over libp2p, with `identity`. A hub also
/// serves as a circuit relay for the peers it admits (unless `[hub] relay = false`).
///
/// The network starts first, so that an exit without `advertise` addresses
/// advertises the addresses its listeners actually bound (port 0 resolved,
/// `0.0.0.0` expanded to the interfaces' addresses by libp2p).
pub async fn start(file: &FileConfig, identity: &Identity, seed: u64) -> Result<NetNode, RunError> {
    let settings = Settings::from_file(file, identity, &parse_addr).map_err(StartError::Config)?;
    start_with_settings(settings, identity, seed).await
}

/// [`start`] for settings already built.
pub async fn start_with_settings(
    mut settings: Settings,
    identity: &Identity,
    seed: u64,
) -> Result<NetNode, RunError> {
    let keypair = libp2p::identity::Keypair::ed25519_from_bytes(identity.secret_bytes())
        .map_err(RunError::Identity)?;
    let mut net = NetConfig::new(keypair);
    net.limits = settings.net;
    // The relay serves the peers the core admits (`Admit`/`Revoke` commands).
    net.relay = settings
        .relay
        .map(|limits| RelayServerConfig { limits, admitted: AdmittedPeers::default() });
    // A hub is reachable by design: it uses no relay and only answers autonat probes. Other
    // nodes reserve and hole-punch through hubs, and probe unless the operator says how
    // reachable they are.
    let stated = settings.reachability;
    let private_ips = settings.autonat_private_ips;
    net.relay_client = net.relay.is_none();
    net.autonat = if net.relay.is_some() {
        Some(AutonatConfig { probe: false, private_ips, ..AutonatConfig::default() })
    } else if stated.is_some() {
        None
    } else {
        Some(AutonatConfig { private_ips, ..AutonatConfig::default() })
    };
    for addr in &settings.listen {
        let parsed = addr
            .parse::<Multiaddr>()
            .map_err(|source| RunError::Listen { addr: addr.clone(), source })?;
        net.listen.push(parsed);
    }
    // Events the network reports before the runner exists wait here, in order.
    let (early_tx, mut early_rx) = mpsc::unbounded_channel();
    let handle = NetworkActor::spawn(net, move |event| {
        let _ = early_tx.send(event);
    })?;
    let p2p_addrs = handle.listen_addrs().await;
    let bound: Vec<String> = p2p_addrs.iter().map(ToString::to_string).collect();
    if settings.advertise_bound(&bound, &parse_addr) {
        tracing::warn!(
            "this exit listens nowhere and advertises no address: clients cannot reach it"
        );
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
    let node = assemble::start_with_settings(settings, identity, seed, starter, sockets).await?;
    Ok(NetNode { node, p2p_addrs })
}
