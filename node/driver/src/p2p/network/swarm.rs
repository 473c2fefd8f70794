//! How the swarm is built: the composed [`SwarmBehaviour`] (every behaviour it runs), the
//! transports (TCP with our Noise and Yamux, QUIC, DNS, the relay client's), and why
//! building it can fail ([`NetError`]).

use libp2p::{
    autonat,
    connection_limits::{self, ConnectionLimits},
    dcutr, identify, ping, relay,
    swarm::behaviour::toggle::Toggle,
    tcp, Multiaddr, Swarm, SwarmBuilder, Transport as _,
};
use tokio::sync::mpsc;

use super::config::{
    autonat_settings, relay_config, NetConfig, RelayServerConfig, YAMUX_MAX_STREAMS_CEILING,
};
use super::{negotiation, streams};
use crate::p2p::muxer::Yamux;
use crate::p2p::noise::{Noise, NoiseError};
use crate::p2p::{InboundGate, NetEvent};

/// The identify protocol version we announce.
const IDENTIFY_PROTOCOL: &str = "/meshproxy/id/1";

/// Every behaviour the swarm runs.
#[derive(libp2p::swarm::NetworkBehaviour)]
pub(super) struct SwarmBehaviour {
    /// Refuses connections beyond [`NetLimits`] before they cost a handler.
    limits: connection_limits::Behaviour,
    /// Refuses inbound connections beyond [`NetLimits::max_connections_per_ip`] before their
    /// handshake.
    per_ip: crate::p2p::per_ip::Behaviour,
    /// Our byte-stream protocols.
    pub(super) streams: streams::ByteStreams,
    /// Tells peers our protocols and listen addresses, and us the address they see.
    identify: identify::Behaviour,
    /// Measures round trips and notices dead connections.
    ping: ping::Behaviour,
    /// The circuit relay v2 server, on hubs only.
    relay: Toggle<relay::Behaviour>,
    /// The circuit relay v2 client: reservations at hubs and circuits through them.
    pub(super) relay_client: Toggle<relay::client::Behaviour>,
    /// Direct connection upgrade through relay (hole punching).
    pub(super) dcutr: Toggle<dcutr::Behaviour>,
    /// Dial-back reachability probes (client side) and answers to others' (server side).
    autonat: Toggle<autonat::Behaviour>,
}

/// The relay behaviour for `config`, closed to every peer `config.admitted` does not hold.
fn relay_behaviour(local: libp2p::PeerId, config: &RelayServerConfig) -> relay::Behaviour {
    let mut behaviour = relay::Behaviour::new(local, relay_config(config));
    // A hub is reachable at its listen addresses by design; without this the relay would
    // wait for an external address to be confirmed (autonat) before offering its protocol.
    behaviour.set_status(Some(relay::Status::Enable));
    behaviour
}

/// Why the network could not start.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// `spawn` was called outside a Tokio runtime.
    #[error("the network actor must be spawned inside a Tokio runtime")]
    NoRuntime,
    /// The Noise handshake configuration could not be built from the keypair.
    #[error("noise configuration: {0}")]
    Noise(#[from] NoiseError),
    /// The system DNS configuration could not be read.
    #[error("DNS resolver configuration: {0}")]
    Dns(#[source] std::io::Error),
    /// A listen address was refused (unsupported, or the port is taken).
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// The transport's reason.
        #[source]
        source: libp2p::TransportError<std::io::Error>,
    },
}

pub(super) fn build_swarm(
    config: &NetConfig,
    to_actor: mpsc::UnboundedSender<NetEvent>,
    inbound: InboundGate,
) -> Result<Swarm<SwarmBehaviour>, NetError> {
    let streams = config.limits.max_streams_per_connection.clamp(1, YAMUX_MAX_STREAMS_CEILING);
    let yamux_config = Yamux::new(streams);
    let quic_streams = u32::try_from(streams).unwrap_or(u32::MAX);

    let limits = config.limits;
    let connection_limits = ConnectionLimits::default()
        .with_max_established_incoming(Some(limits.max_established_incoming))
        .with_max_established_outgoing(Some(limits.max_established_outgoing))
        .with_max_established_per_peer(Some(limits.max_established_per_peer))
        .with_max_pending_incoming(Some(limits.max_pending))
        .with_max_pending_outgoing(Some(limits.max_pending));
    let idle = config.idle_connection_timeout;

    let relay_yamux = yamux_config.clone();
    // What `with_tcp` builds, but with our `Noise` and `Yamux` (both for bulk
    // data; see their modules). The builder's connection timeout bounds the
    // whole upgrade.
    let tcp_transport = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
        .upgrade(libp2p::core::upgrade::Version::V1Lazy)
        .authenticate(Noise::new(&config.keypair)?)
        .multiplex(yamux_config);
    let relay_client = config.relay_client;
    let autonat_config = config.autonat;
    let swarm = SwarmBuilder::with_existing_identity(config.keypair.clone())
        .with_tokio()
        .with_quic_config(|mut c| {
            c.max_concurrent_stream_limit = quic_streams;
            c
        })
        .with_other_transport(move |_| tcp_transport)
        .unwrap_or_else(|never| match never {})
        .with_dns()
        .map_err(NetError::Dns)?
        .with_relay_client(Noise::new, move || relay_yamux)?
        .with_behaviour(|key, client| {
            let local = key.public().to_peer_id();
            SwarmBehaviour {
                limits: connection_limits::Behaviour::new(connection_limits),
                per_ip: crate::p2p::per_ip::Behaviour::new(limits.max_connections_per_ip),
                streams: streams::ByteStreams::new(to_actor, inbound),
                identify: identify::Behaviour::new(
                    identify::Config::new(IDENTIFY_PROTOCOL.to_owned(), key.public())
                        .with_agent_version(format!("meshproxy/{}", env!("CARGO_PKG_VERSION"))),
                ),
                ping: ping::Behaviour::default(),
                relay: Toggle::from(config.relay.as_ref().map(|r| relay_behaviour(local, r))),
                relay_client: Toggle::from(relay_client.then_some(client)),
                dcutr: Toggle::from(relay_client.then(|| dcutr::Behaviour::new(local))),
                autonat: Toggle::from(
                    autonat_config.map(|a| autonat::Behaviour::new(local, autonat_settings(a))),
                ),
            }
        })
        .unwrap_or_else(|never| match never {})
        // Outbound substreams send their first message with the protocol proposal
        // (negotiation.rs says why, and what it changes for the other protocols).
        .with_swarm_config(|c| {
            c.with_idle_connection_timeout(idle)
                .with_substream_upgrade_protocol_override(negotiation::OUTBOUND)
        })
        .build();
    Ok(swarm)
}
