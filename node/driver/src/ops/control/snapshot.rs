//! [`StatusSnapshot`]: the answer to the control protocol's `status`, typed
//! and serialisable. It is a translation, made at the moment it is asked
//! for, of the core's [`NodeStatus`] plus what only the driver knows
//! (uptime, addresses bound, recent warnings, the endpoint's own counts):
//! no part of it is kept in step with events.

use super::events::{EventFeed, LogLine};
use crate::ops::identity::base58;
use meshproxy_core::ids::PeerId;
use meshproxy_core::io::{Path, Reachability};
use meshproxy_core::selection::breaker::BreakerState;
use meshproxy_core::status::{LinkState, NodeStatus, ReservationState};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;

/// A node's status, as `meshproxy status --json` prints it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusSnapshot {
    /// The meshproxy version running.
    pub version: String,
    /// The node's peer id (base58, `12D3KooW…`).
    pub peer_id: String,
    /// The roles it plays: `hub`, `exit`, `client`.
    pub roles: Vec<String>,
    /// Seconds since the node started.
    pub uptime_secs: u64,
    /// `unknown`, `public` or `private` (behind NAT).
    pub reachability: String,
    /// Where the peer network listens.
    pub p2p_addrs: Vec<String>,
    /// Where `/metrics` is served, if anywhere.
    pub metrics: Option<String>,
    /// (Exits and clients) the configured hubs, in config order.
    pub hubs: Vec<HubView>,
    /// (Clients) the exits known.
    pub exits: Vec<ExitView>,
    /// (Clients) the listeners, in config order.
    pub listeners: Vec<ListenerView>,
    /// (Clients) the sticky pins, least recently used first.
    pub pins: Vec<PinView>,
    /// Peer connections open now, by path.
    pub connections: ConnectionsView,
    /// Client and exit sessions open now.
    pub sessions: usize,
    /// (Hubs) what the hub holds.
    pub hub: Option<HubRoleView>,
    /// The last node events logged as warnings (hub refusals, lost hub links, peers
    /// refused, protocol errors), oldest first.
    pub recent_warnings: Vec<LogLine>,
    /// The control endpoint's own counts.
    pub control: ControlView,
    /// Bytes carried by the sessions that ended since start (absent from nodes before it
    /// was added: read as zeros).
    #[serde(default)]
    pub traffic: TrafficView,
}

/// One configured hub.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubView {
    /// Its peer id.
    pub peer: String,
    /// `direct` or `relayed` if a connection is open, else none.
    pub connected: Option<String>,
    /// Whether the hub admitted this node (its link is ready).
    pub admitted: bool,
    /// The link's state: `idle`, `dialing`, `authenticating` or `ready`.
    pub link: String,
    /// (Exits) whether the hub confirmed this node's registration.
    pub registered: bool,
    /// The relay reservation there: `none`, `requested`, `held` or `backoff`.
    pub reservation: String,
}

/// One exit a client knows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExitView {
    /// Its peer id.
    pub peer: String,
    /// `direct` or `relayed` if a connection is open, else none.
    pub path: Option<String>,
    /// The hub relaying that connection, if relayed.
    pub via: Option<String>,
    /// The circuit breaker: `closed`, `open` or `half-open`.
    pub breaker: String,
    /// Measured round trip of its answers (moving average), in ms.
    pub latency_ms: Option<f64>,
    /// This client's sessions through it now.
    pub sessions: u32,
    /// Failures in a row.
    pub failures: u32,
    /// Direct addresses its record lists (0: only by relay).
    pub direct_addrs: usize,
    /// Hubs whose relays reach it.
    pub relays: Vec<String>,
    /// Its country, if it says.
    pub country: Option<String>,
}

/// One client listener.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerView {
    /// Its position in the config.
    pub index: u64,
    /// The address it is bound to.
    pub bind: Option<String>,
    /// Sessions open on it now.
    pub sessions: usize,
}

/// One sticky pin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinView {
    /// The listener (position in the config).
    pub listener: u64,
    /// The app's session name; none pins the whole listener.
    pub session: Option<String>,
    /// The exit's peer id.
    pub exit: String,
    /// Seconds since the pin was last used.
    pub idle_secs: u64,
}

/// Peer connections by path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionsView {
    /// Direct (TCP or QUIC).
    pub direct: usize,
    /// Through a hub's relay.
    pub relayed: usize,
    /// (Exits) relay reservations held.
    pub reservations: usize,
}

/// What a hub holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubRoleView {
    /// Peers admitted now.
    pub admitted_peers: usize,
    /// Exits in the directory.
    pub directory_entries: usize,
}

/// The control endpoint's counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlView {
    /// Clients following `events` now.
    pub event_clients: usize,
    /// Event clients dropped because they fell more than the queue behind.
    pub dropped_lagged: u64,
    /// Event clients dropped because a write to them stalled past the deadline.
    pub dropped_stalled: u64,
}

/// What the sessions that ended carried, since the node started. A session's bytes
/// count when it ends (the core reports them then), so a long download shows at its end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficView {
    /// Bytes from the app (or the gateway's client) towards the destination.
    pub bytes_up: u64,
    /// Bytes back towards the app.
    pub bytes_down: u64,
    /// Sessions that ended.
    pub sessions_closed: u64,
}

/// What the driver adds to the core's status.
#[derive(Clone, Debug, Default)]
pub struct NodeInfo {
    /// The peer network's listen addresses (from the network actor at start).
    pub p2p_addrs: Vec<String>,
    /// The client listeners' bound addresses, in config order.
    pub listeners: Vec<SocketAddr>,
    /// The `/metrics` address, if served.
    pub metrics: Option<SocketAddr>,
}

/// A peer id as libp2p prints it.
pub fn peer_string(peer: &PeerId) -> String {
    base58(peer.as_bytes())
}

fn path_name(path: Path) -> &'static str {
    match path {
        Path::Direct => "direct",
        Path::Relayed { .. } => "relayed",
    }
}

fn link_name(link: LinkState) -> &'static str {
    match link {
        LinkState::Idle => "idle",
        LinkState::Dialing => "dialing",
        LinkState::Authenticating => "authenticating",
        LinkState::Ready => "ready",
    }
}

fn reservation_name(r: ReservationState) -> &'static str {
    match r {
        ReservationState::None => "none",
        ReservationState::Requested => "requested",
        ReservationState::Held => "held",
        ReservationState::Backoff => "backoff",
    }
}

fn breaker_name(b: BreakerState) -> &'static str {
    match b {
        BreakerState::Closed { .. } => "closed",
        BreakerState::Open { .. } => "open",
        BreakerState::HalfOpen { .. } => "half-open",
    }
}

impl StatusSnapshot {
    /// The snapshot of a node whose core reports `status` after `uptime`.
    pub fn new(status: &NodeStatus, uptime: Duration, info: &NodeInfo, feed: &EventFeed) -> Self {
        let roles = [(status.roles.hub, "hub"), (status.roles.exit, "exit")]
            .into_iter()
            .chain([(status.roles.client, "client")])
            .filter(|(on, _)| *on)
            .map(|(_, name)| name.to_owned())
            .collect();
        let reachability = match status.reachability {
            Reachability::Unknown => "unknown",
            Reachability::Public => "public",
            Reachability::Private => "private",
        };
        let hubs = status
            .hubs
            .iter()
            .map(|h| HubView {
                peer: peer_string(&h.peer),
                connected: h.connection.map(|p| path_name(p).to_owned()),
                admitted: h.link == LinkState::Ready,
                link: link_name(h.link).to_owned(),
                registered: h.registered,
                reservation: reservation_name(h.reservation).to_owned(),
            })
            .collect();
        let exits = status
            .exits
            .iter()
            .map(|e| ExitView {
                peer: peer_string(&e.peer),
                path: e.connection.map(|p| path_name(p).to_owned()),
                via: match e.connection {
                    Some(Path::Relayed { via }) => Some(peer_string(&via)),
                    _ => None,
                },
                breaker: breaker_name(e.breaker).to_owned(),
                latency_ms: e.latency.map(|l| l.as_secs_f64() * 1000.0),
                sessions: e.sessions,
                failures: e.failures,
                direct_addrs: e.direct_addrs,
                relays: e.relays.iter().map(peer_string).collect(),
                country: e.country.clone(),
            })
            .collect();
        let listeners = status
            .listeners
            .iter()
            .map(|l| ListenerView {
                index: l.listener.0,
                bind: usize::try_from(l.listener.0)
                    .ok()
                    .and_then(|i| info.listeners.get(i))
                    .map(ToString::to_string),
                sessions: l.sessions,
            })
            .collect();
        let pins = status
            .pins
            .iter()
            .map(|p| PinView {
                listener: p.listener.0,
                session: p.session.clone(),
                exit: peer_string(&p.exit),
                idle_secs: p.idle.as_secs(),
            })
            .collect();
        let reservations =
            status.hubs.iter().filter(|h| h.reservation == ReservationState::Held).count();
        StatusSnapshot {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            peer_id: peer_string(&status.peer_id),
            roles,
            uptime_secs: uptime.as_secs(),
            reachability: reachability.to_owned(),
            p2p_addrs: info.p2p_addrs.clone(),
            metrics: info.metrics.map(|a| a.to_string()),
            hubs,
            exits,
            listeners,
            pins,
            connections: ConnectionsView {
                direct: status.connections.direct,
                relayed: status.connections.relayed,
                reservations,
            },
            sessions: status.resources.sessions,
            hub: status.roles.hub.then_some(HubRoleView {
                admitted_peers: status.admitted_peers,
                directory_entries: status.resources.directory_entries,
            }),
            recent_warnings: feed.recent_warnings(),
            control: feed.counts(),
            traffic: feed.traffic(),
        }
    }
}
