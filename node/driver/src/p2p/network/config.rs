//! How the peer network is configured: connection and stream limits ([`NetLimits`],
//! defined with the config file they are read from, like [`RelayLimits`]), the start-up
//! settings ([`NetConfig`], [`AutonatConfig`]), the relay a hub serves
//! ([`RelayServerConfig`], [`RelayLimits`]) with its allow-list ([`AdmittedPeers`]), and
//! their translation to libp2p's relay and autonat configurations (clamped to what libp2p
//! can send).

use std::{
    collections::BTreeSet,
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use libp2p::{autonat, identity, relay, Multiaddr};
use meshproxy_core::ids::PeerId;

use super::convert::to_core;
pub use crate::ops::config::{NetLimits, RelayLimits, RELAY_MAX_DURATION};

/// The most streams a connection may carry; every configured value is clamped to this. (Each
/// stream may buffer yamux's 256 KiB window: see [`crate::p2p::muxer::receive_window`].)
pub const YAMUX_MAX_STREAMS_CEILING: usize = 4096;

/// How to start the peer network.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// The node's identity (Ed25519 in production); its peer id is the node's [`PeerId`].
    pub keypair: identity::Keypair,
    /// Where to listen, e.g. `/ip4/0.0.0.0/tcp/4001` and `/ip4/0.0.0.0/udp/4001/quic-v1`.
    pub listen: Vec<Multiaddr>,
    /// Connection and stream limits.
    pub limits: NetLimits,
    /// How long a connection without streams stays open. libp2p's 10 s default would drop
    /// a hub link between heartbeats and an exit link between sessions.
    pub idle_connection_timeout: Duration,
    /// Serve as a circuit relay (hubs); `None`: the relay protocol is not even offered.
    pub relay: Option<RelayServerConfig>,
    /// Use other nodes' relays: reserve at hubs, dial through them, and upgrade relayed
    /// connections by DCUtR hole punching. Off on hubs, which are reachable by design.
    pub relay_client: bool,
    /// Autonat (dial-back probes that tell whether this node is reachable directly);
    /// `None`: off, as when the operator states the reachability.
    pub autonat: Option<AutonatConfig>,
}

impl NetConfig {
    /// A configuration with default limits, a 60 s idle timeout, no listeners, no relay
    /// server, the relay client on, and autonat probing only global addresses.
    pub fn new(keypair: identity::Keypair) -> NetConfig {
        NetConfig {
            keypair,
            listen: Vec::new(),
            limits: NetLimits::default(),
            idle_connection_timeout: Duration::from_secs(60),
            relay: None,
            relay_client: true,
            autonat: Some(AutonatConfig::default()),
        }
    }
}

/// How autonat runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AutonatConfig {
    /// Ask connected peers to dial us back (clients and exits). Off: only answer others'
    /// probes (hubs serve as autonat servers).
    pub probe: bool,
    /// Probe and serve private and loopback addresses too (test networks, LANs); libp2p's
    /// default is global addresses only.
    pub private_ips: bool,
    /// Wait this long after start before the first probe (connections to hubs first).
    pub boot_delay: Duration,
    /// Probe again this often while the verdict is unsure.
    pub retry_interval: Duration,
}

impl Default for AutonatConfig {
    fn default() -> Self {
        AutonatConfig {
            probe: true,
            private_ips: false,
            boot_delay: Duration::from_secs(5),
            retry_interval: Duration::from_secs(90),
        }
    }
}

/// The relay a hub serves: its limits and who may use it.
#[derive(Clone, Debug, Default)]
pub struct RelayServerConfig {
    /// What the relay grants.
    pub limits: RelayLimits,
    /// The peers it serves; the actor keeps this in step with the core's
    /// admissions (`NetCommand::Admit` / `Revoke`).
    pub admitted: AdmittedPeers,
}

/// The peers a hub has admitted (they passed its challenge and hold an admitted hub stream),
/// shared between the network actor, which writes it on the core's `Admit` / `Revoke`
/// commands, and the relay, which serves only these peers. Cloning shares the same list.
#[derive(Clone, Debug, Default)]
pub struct AdmittedPeers(Arc<RwLock<BTreeSet<PeerId>>>);

impl AdmittedPeers {
    /// `peer` passed admission.
    pub fn admit(&self, peer: PeerId) {
        // A panic elsewhere while holding the lock leaves a set that is still a valid set.
        self.0.write().unwrap_or_else(PoisonError::into_inner).insert(peer);
    }

    /// `peer`'s admission ended.
    pub fn revoke(&self, peer: &PeerId) {
        self.0.write().unwrap_or_else(PoisonError::into_inner).remove(peer);
    }

    /// Whether `peer` is admitted now.
    pub fn contains(&self, peer: &PeerId) -> bool {
        self.0.read().unwrap_or_else(PoisonError::into_inner).contains(peer)
    }

    /// How many peers are admitted.
    pub fn len(&self) -> usize {
        self.0.read().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether no peer is admitted.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A relay limiter that lets through admitted peers only. It stands in for libp2p's
    /// default per-peer and per-IP rate limiters, which would throttle admitted peers to a
    /// reservation or circuit every two minutes; the relay's count caps still apply.
    fn limiter(
        &self,
        what: &'static str,
    ) -> impl FnMut(libp2p::PeerId, &Multiaddr, std::time::Instant) -> bool + Send + 'static {
        let admitted = self.clone();
        move |peer, addr, _now| {
            let ok = admitted.contains(&to_core(&peer));
            if !ok {
                tracing::debug!(%peer, %addr, what, "relay: refused a peer that is not admitted");
            }
            ok
        }
    }
}

/// libp2p's relay configuration for `config`, clamped to what libp2p can send.
pub(super) fn relay_config(config: &RelayServerConfig) -> relay::Config {
    let l = config.limits;
    let mut c = relay::Config {
        max_reservations: l.max_reservations,
        max_reservations_per_peer: l.max_reservations_per_peer,
        reservation_duration: l.reservation_duration.min(RELAY_MAX_DURATION),
        max_circuits: l.max_circuits,
        max_circuits_per_peer: l.max_circuits_per_peer,
        max_circuit_duration: l.max_circuit_duration.min(RELAY_MAX_DURATION),
        max_circuit_bytes: l.max_circuit_bytes.max(1),
        ..relay::Config::default()
    };
    let reservation: Box<dyn relay::RateLimiter> = Box::new(config.admitted.limiter("reservation"));
    let circuit: Box<dyn relay::RateLimiter> = Box::new(config.admitted.limiter("circuit"));
    c.reservation_rate_limiters = vec![reservation];
    c.circuit_src_rate_limiters = vec![circuit];
    c
}

/// libp2p's autonat (v1) settings for `a`.
pub(super) fn autonat_settings(a: AutonatConfig) -> autonat::Config {
    autonat::Config {
        boot_delay: a.boot_delay,
        retry_interval: a.retry_interval,
        use_connected: a.probe,
        only_global_ips: !a.private_ips,
        // One verdict is enough to act on; later probes still correct it.
        confidence_max: 1,
        ..autonat::Config::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relay_limiter_lets_admitted_peers_through_and_nobody_else() {
        let admitted = AdmittedPeers::default();
        let mut limiter = admitted.limiter("reservation");
        let peer = identity::Keypair::generate_ed25519().public().to_peer_id();
        let stranger = identity::Keypair::generate_ed25519().public().to_peer_id();
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
        let now = std::time::Instant::now();
        assert!(!limiter(peer, &addr, now), "nobody is admitted yet");
        // The runner's clone writes the very list the limiter reads.
        admitted.clone().admit(to_core(&peer));
        assert_eq!(admitted.len(), 1);
        // No rate limit for admitted peers: libp2p's defaults would refuse after a burst.
        for _ in 0..100 {
            assert!(limiter(peer, &addr, now));
        }
        assert!(!limiter(stranger, &addr, now));
        admitted.revoke(&to_core(&peer));
        assert!(!limiter(peer, &addr, now), "revoked");
        assert!(admitted.is_empty());
        admitted.revoke(&to_core(&peer));
        assert!(admitted.is_empty(), "revoking twice is harmless");
    }

    #[test]
    fn relay_limits_are_clamped_to_what_libp2p_can_send() {
        let config = RelayServerConfig {
            limits: RelayLimits {
                max_circuit_duration: Duration::from_secs(u64::MAX),
                reservation_duration: Duration::from_secs(u64::MAX),
                max_circuit_bytes: 0,
                ..RelayLimits::default()
            },
            admitted: AdmittedPeers::default(),
        };
        // Unclamped, libp2p would panic on the first reservation.
        let c = relay_config(&config);
        assert_eq!(c.max_circuit_duration, RELAY_MAX_DURATION);
        assert_eq!(c.reservation_duration, RELAY_MAX_DURATION);
        assert!(RELAY_MAX_DURATION.as_secs() <= u64::from(u32::MAX));
        assert_eq!(c.max_circuit_bytes, 1, "0 would be advertised as a 0-byte limit");
        // Only the allow-list limits who may reserve or open circuits: the default rate
        // limiters are replaced, not added to.
        assert_eq!(c.reservation_rate_limiters.len(), 1);
        assert_eq!(c.circuit_src_rate_limiters.len(), 1);
        let d = relay_config(&RelayServerConfig::default());
        assert_eq!(d.max_circuit_bytes, 1 << 30);
        assert_eq!(d.max_circuit_duration, Duration::from_secs(3600));
    }
}
