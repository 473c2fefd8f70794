//! The libp2p ↔ core conversions: peer ids ([`to_core`], [`from_core`]) and addresses
//! ([`addr_to_core`], [`addr_from_core`]) in the core's binary forms, our stream protocols'
//! libp2p names, the parts of multiaddrs the actor reads (IP, relay, trailing peer id) and a
//! relay's circuit caps.

use libp2p::{multiaddr, Multiaddr, StreamProtocol};
use meshproxy_core::{
    ids::{PeerId, MAX_PEER_ID_LEN},
    io::Protocol,
    record::PeerAddr,
};

/// The core's view of a libp2p peer id: its binary form.
///
/// Ids of authenticated peers derive from public keys and are at most 44 bytes, well within
/// the core's [`MAX_PEER_ID_LEN`]; a longer id (only constructible by hand, never from a
/// handshake) is truncated, which `from_core` then rejects.
pub fn to_core(peer: &libp2p::PeerId) -> PeerId {
    let bytes = peer.to_bytes();
    let head = &bytes[..bytes.len().min(MAX_PEER_ID_LEN)];
    PeerId::from_bytes(head).unwrap_or_else(|| PeerId::from_u64(0))
}

/// The libp2p peer id behind a core id; `None` if the bytes are not a valid peer id
/// (e.g. the simulator's synthetic ids).
pub fn from_core(peer: &PeerId) -> Option<libp2p::PeerId> {
    libp2p::PeerId::from_bytes(peer.as_bytes()).ok()
}

/// The IP address a multiaddr starts with, if it does.
pub(super) fn ip_of(addr: &Multiaddr) -> Option<std::net::IpAddr> {
    match addr.iter().next()? {
        multiaddr::Protocol::Ip4(ip) => Some(ip.into()),
        multiaddr::Protocol::Ip6(ip) => Some(ip.into()),
        _ => None,
    }
}

/// The core's view of a multiaddr: its binary form.
pub fn addr_to_core(addr: &Multiaddr) -> PeerAddr {
    PeerAddr(addr.to_vec())
}

/// The multiaddr behind a core address; `None` if the bytes do not decode.
pub fn addr_from_core(addr: &PeerAddr) -> Option<Multiaddr> {
    Multiaddr::try_from(addr.0.clone()).ok()
}

/// The libp2p protocol name of one of our stream protocols.
pub(super) fn stream_protocol(protocol: Protocol) -> StreamProtocol {
    StreamProtocol::new(protocol.name())
}

/// The address without its trailing `/p2p/…` part, if any.
pub(super) fn without_peer(addr: &Multiaddr) -> Multiaddr {
    let mut a = addr.clone();
    while matches!(a.iter().last(), Some(multiaddr::Protocol::P2p(_))) {
        a.pop();
    }
    a
}

/// The part of a `/p2p-circuit` address before the circuit: the relay's address and,
/// if it names one, the relay's peer id.
pub(super) fn relay_part(addr: &Multiaddr) -> (Multiaddr, Option<libp2p::PeerId>) {
    let mut relay = Multiaddr::empty();
    let mut peer = None;
    for p in addr.iter() {
        match p {
            multiaddr::Protocol::P2pCircuit => break,
            multiaddr::Protocol::P2p(id) => peer = Some(id),
            other => relay.push(other),
        }
    }
    (relay, peer)
}

/// The core's view of a relay's circuit caps (libp2p does not name its type publicly).
macro_rules! circuit_limit {
    ($limit:expr) => {
        $limit.map(|l| CircuitLimit { duration: l.duration(), bytes: l.data_in_bytes() })
    };
}
pub(super) use circuit_limit;

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::identity;

    #[test]
    fn peer_ids_round_trip() {
        for _ in 0..8 {
            let id = identity::Keypair::generate_ed25519().public().to_peer_id();
            let core = to_core(&id);
            assert_eq!(core.as_bytes(), id.to_bytes().as_slice());
            assert_eq!(core.as_bytes().len(), 38);
            assert_eq!(from_core(&core), Some(id));
        }
    }

    #[test]
    fn synthetic_core_ids_are_not_libp2p_ids() {
        assert_eq!(from_core(&PeerId::from_u64(7)), None);
    }

    #[test]
    fn circuit_addresses_split_into_the_relay_and_its_id() {
        let hub = identity::Keypair::generate_ed25519().public().to_peer_id();
        let peer = identity::Keypair::generate_ed25519().public().to_peer_id();
        let named: Multiaddr =
            format!("/ip4/10.0.0.1/tcp/4001/p2p/{hub}/p2p-circuit/p2p/{peer}").parse().unwrap();
        let base: Multiaddr = "/ip4/10.0.0.1/tcp/4001".parse().unwrap();
        assert_eq!(relay_part(&named), (base.clone(), Some(hub)));
        // What the accepting side sees: the relay connection's address, no id.
        let accepted: Multiaddr = "/ip4/10.0.0.1/tcp/4001/p2p-circuit".parse().unwrap();
        assert_eq!(relay_part(&accepted), (base.clone(), None));
        let with_id: Multiaddr = format!("/ip4/10.0.0.1/tcp/4001/p2p/{hub}").parse().unwrap();
        assert_eq!(without_peer(&with_id), base);
        assert_eq!(without_peer(&base), base);
    }

    #[test]
    fn addrs_round_trip_and_garbage_is_rejected() {
        let addr: Multiaddr = "/ip4/127.0.0.1/udp/4001/quic-v1".parse().unwrap();
        assert_eq!(addr_from_core(&addr_to_core(&addr)), Some(addr));
        assert_eq!(addr_from_core(&PeerAddr(vec![0xff, 0xff, 0xff])), None);
    }
}
