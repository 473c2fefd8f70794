//! The peer network's knobs, as the config file names them: connection and
//! stream limits ([`NetLimits`], keys of `[limits]`) and the relay a hub
//! serves ([`RelayLimits`], the `relay_*` keys of `[hub]`). They live here,
//! beside the file they are read from, and [`crate::p2p::network`] takes them as
//! they are: one definition per knob.

use meshproxy_core::config::millis;
use serde::Deserialize;
use std::time::Duration;

/// How many connections the network accepts and makes (the peer network's
/// keys of `[limits]`; missing keys keep the defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetLimits {
    /// Established inbound connections, all peers together.
    #[serde(rename = "max_incoming_connections")]
    pub max_established_incoming: u32,
    /// Established outbound connections, all peers together.
    #[serde(rename = "max_outgoing_connections")]
    pub max_established_outgoing: u32,
    /// Established connections to one peer (both directions).
    #[serde(rename = "max_connections_per_peer")]
    pub max_established_per_peer: u32,
    /// Connections still in their handshake, in each direction.
    #[serde(rename = "max_pending_connections")]
    pub max_pending: u32,
    /// Concurrent streams on one connection (Yamux and QUIC); clamped to
    /// [`YAMUX_MAX_STREAMS_CEILING`](crate::p2p::network::YAMUX_MAX_STREAMS_CEILING), where
    /// Yamux would panic. Yamux ends the connection of a peer that opens more.
    pub max_streams_per_connection: usize,
    /// Inbound connections (in their handshake or established) from one IPv4 address or
    /// IPv6 /64; relayed connections are not counted (see [`crate::p2p::per_ip`]).
    pub max_connections_per_ip: u32,
}

impl Default for NetLimits {
    fn default() -> Self {
        NetLimits {
            max_established_incoming: 1024,
            max_established_outgoing: 1024,
            max_established_per_peer: 4,
            max_pending: 256,
            max_streams_per_connection: 1024,
            max_connections_per_ip: 16,
        }
    }
}

/// The longest reservation or circuit the relay grants: libp2p sends a circuit's duration
/// as `u32` seconds (and panics above that) and adds the reservation's to the wall clock.
pub const RELAY_MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// What the hub's relay grants (the `relay_*` keys of `[hub]`, durations in
/// milliseconds; missing keys keep the defaults). Defaults suit proxied sessions between
/// admitted peers; every count is a cap on state the hub holds, so none is unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayLimits {
    /// Reservations held at once, all peers together.
    #[serde(rename = "relay_max_reservations")]
    pub max_reservations: usize,
    /// Reservations one peer holds at once (one per connection).
    #[serde(rename = "relay_max_reservations_per_peer")]
    pub max_reservations_per_peer: usize,
    /// How long a reservation lasts; the client renews it before it runs out.
    #[serde(rename = "relay_reservation_ms", deserialize_with = "millis::deserialize")]
    pub reservation_duration: Duration,
    /// Circuits open at once, all peers together.
    #[serde(rename = "relay_max_circuits")]
    pub max_circuits: usize,
    /// Circuits one peer has open at once as their source.
    #[serde(rename = "relay_max_circuits_per_peer")]
    pub max_circuits_per_peer: usize,
    /// How long one circuit may live (clamped to [`RELAY_MAX_DURATION`]).
    #[serde(rename = "relay_max_circuit_ms", deserialize_with = "millis::deserialize")]
    pub max_circuit_duration: Duration,
    /// Bytes one circuit may carry in each direction before it is closed (at least 1: libp2p
    /// reads 0 as unlimited but would still advertise a limit of 0 to the peers).
    #[serde(rename = "relay_max_circuit_bytes")]
    pub max_circuit_bytes: u64,
}

impl Default for RelayLimits {
    fn default() -> Self {
        RelayLimits {
            max_reservations: 1024,
            max_reservations_per_peer: 4,
            reservation_duration: Duration::from_secs(3600),
            max_circuits: 1024,
            max_circuits_per_peer: 64,
            max_circuit_duration: Duration::from_secs(3600),
            max_circuit_bytes: 1 << 30,
        }
    }
}

impl RelayLimits {
    /// Refuses what would make the relay useless or that libp2p cannot send, naming the
    /// `[hub]` key.
    pub(super) fn check(&self) -> Result<(), String> {
        let counts = [
            ("relay_max_reservations", self.max_reservations),
            ("relay_max_reservations_per_peer", self.max_reservations_per_peer),
            ("relay_max_circuits", self.max_circuits),
            ("relay_max_circuits_per_peer", self.max_circuits_per_peer),
        ];
        if let Some((name, _)) = counts.iter().find(|(_, v)| *v == 0) {
            return Err(format!(
                "hub.{name}: must be greater than 0 (set `relay = false` to serve no relay)"
            ));
        }
        let max_ms = RELAY_MAX_DURATION.as_millis();
        for (name, v) in [
            ("relay_reservation_ms", self.reservation_duration),
            ("relay_max_circuit_ms", self.max_circuit_duration),
        ] {
            if v.is_zero() || v > RELAY_MAX_DURATION {
                return Err(format!("hub.{name}: must be within 1..={max_ms}"));
            }
        }
        if self.max_circuit_bytes == 0 {
            return Err("hub.relay_max_circuit_bytes: must be greater than 0".into());
        }
        Ok(())
    }
}
