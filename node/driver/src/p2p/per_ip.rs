//! Inbound peer connections per remote address, as a libp2p behaviour.
//!
//! Peer identities cost nothing, so the per-peer connection limit does not
//! stop one host from opening connections up to the node's whole incoming
//! limit, each of which holds buffers (see the README's limits). This counts
//! inbound connections, from the moment they are accepted (still in their
//! handshake) until they close, by the remote IPv4 address or IPv6 /64
//! (one host's usual allocation), and refuses a connection beyond the limit
//! before its handshake starts. Connections relayed by a hub
//! (`/p2p-circuit`) all come from the hub's address and are not counted
//! here: the hub's relay limits them per peer.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv6Addr};
use std::task::{Context, Poll};

use libp2p::core::{transport::PortUse, Endpoint};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{
    dummy, ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm, ListenFailure,
    NetworkBehaviour, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};

/// The behaviour: refuses an inbound connection from an address that already
/// has `max` of them.
#[derive(Debug)]
pub struct Behaviour {
    max: u32,
    by_conn: HashMap<ConnectionId, IpAddr>,
    counts: HashMap<IpAddr, u32>,
}

/// Why a connection was refused.
#[derive(Debug, thiserror::Error)]
#[error("{max} inbound connections from {from} already")]
pub struct TooManyFromAddress {
    /// The address (an IPv6 address's /64).
    pub from: IpAddr,
    /// The limit.
    pub max: u32,
}

impl Behaviour {
    /// At most `max` inbound connections (pending or established) per address.
    pub fn new(max: u32) -> Behaviour {
        Behaviour { max, by_conn: HashMap::new(), counts: HashMap::new() }
    }

    /// Inbound connections counted against `addr`'s host now.
    pub fn count(&self, addr: &Multiaddr) -> u32 {
        host(addr).and_then(|h| self.counts.get(&h).copied()).unwrap_or(0)
    }

    fn release(&mut self, id: ConnectionId) {
        let Some(from) = self.by_conn.remove(&id) else { return };
        if let Some(n) = self.counts.get_mut(&from) {
            *n -= 1;
            if *n == 0 {
                self.counts.remove(&from);
            }
        }
    }
}

/// The host a remote address counts against: its IPv4 address, or its IPv6
/// address's /64; `None` for relayed connections and addresses without an IP.
pub fn host(addr: &Multiaddr) -> Option<IpAddr> {
    if addr.iter().any(|p| p == Protocol::P2pCircuit) {
        return None;
    }
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => match ip.to_ipv4_mapped() {
            Some(v4) => Some(IpAddr::V4(v4)),
            None => {
                let prefix = u128::from(ip) & !((1u128 << 64) - 1);
                Some(IpAddr::V6(Ipv6Addr::from(prefix)))
            }
        },
        _ => None,
    })
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        _: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        let Some(from) = host(remote) else { return Ok(()) };
        let n = self.counts.entry(from).or_insert(0);
        if *n >= self.max {
            tracing::debug!(%remote, max = self.max, "inbound connection refused: per-address limit");
            return Err(ConnectionDenied::new(TooManyFromAddress { from, max: self.max }));
        }
        *n += 1;
        self.by_conn.insert(id, from);
        Ok(())
    }

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. })
            | FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) => {
                self.release(connection_id)
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().expect("multiaddr")
    }

    #[test]
    fn hosts_are_ipv4_addresses_and_ipv6_prefixes_and_relays_are_nobody() {
        let v4 = host(&addr("/ip4/10.1.2.3/tcp/4001"));
        assert_eq!(v4, Some("10.1.2.3".parse().expect("ip")));
        let a = host(&addr("/ip6/2001:db8:1:2:aaaa::1/tcp/4001"));
        let b = host(&addr("/ip6/2001:db8:1:2:bbbb::9/udp/4001/quic-v1"));
        assert_eq!(a, b, "one /64");
        assert_ne!(a, host(&addr("/ip6/2001:db8:1:3::1/tcp/4001")));
        let mapped = host(&addr("/ip6/::ffff:10.1.2.3/tcp/1"));
        assert_eq!(mapped, v4);
        assert_eq!(host(&addr("/ip4/10.0.0.1/tcp/4001/p2p-circuit")), None);
        assert_eq!(host(&addr("/dns4/example.com/tcp/1")), None);
    }

    #[test]
    fn the_limit_counts_pending_and_established_and_frees_on_close_or_failure() {
        let mut b = Behaviour::new(2);
        let local = addr("/ip4/127.0.0.1/tcp/4001");
        let from = addr("/ip4/192.0.2.7/tcp/5000");
        let other = addr("/ip4/192.0.2.8/tcp/5000");
        let ids: Vec<_> = (1000..1004).map(ConnectionId::new_unchecked).collect();
        assert!(b.handle_pending_inbound_connection(ids[0], &local, &from).is_ok());
        assert!(b.handle_pending_inbound_connection(ids[1], &local, &from).is_ok());
        assert!(b.handle_pending_inbound_connection(ids[2], &local, &from).is_err(), "third");
        assert!(b.handle_pending_inbound_connection(ids[3], &local, &other).is_ok());
        assert_eq!(b.count(&from), 2);
        // A refused connection was never counted; releasing it changes nothing.
        b.release(ids[2]);
        assert_eq!(b.count(&from), 2);
        b.release(ids[0]);
        assert_eq!(b.count(&from), 1);
        assert!(b.handle_pending_inbound_connection(ids[2], &local, &from).is_ok());
        for id in &ids {
            b.release(*id);
        }
        assert!(b.counts.is_empty() && b.by_conn.is_empty());
        let relayed = addr("/ip4/192.0.2.7/tcp/4001/p2p-circuit");
        for id in &ids {
            assert!(b.handle_pending_inbound_connection(*id, &local, &relayed).is_ok());
        }
    }
}
