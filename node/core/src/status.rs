//! [`NodeStatus`]: what a node holds right now, for the people operating it
//! (the driver's control endpoint and `meshproxy status`).
//!
//! Built on demand by [`Node::status`](crate::Node::status) from the roles'
//! own tables: nothing here is kept in step with events, so the view cannot
//! drift from what the node decides with.

use crate::ids::{ListenerId, PeerId};
use crate::io::{Path, PeerConnections, Reachability, Resources};
use crate::selection::breaker::BreakerState;
use core::time::Duration;

/// A node's state at one instant.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeStatus {
    /// This node's identity.
    pub peer_id: PeerId,
    /// The roles it plays.
    pub roles: RoleSet,
    /// How reachable the node is, as autonat (or the operator) said.
    pub reachability: Reachability,
    /// (Exits and clients) one entry per configured hub, in config order.
    pub hubs: Vec<HubStatus>,
    /// (Clients) the exits the client knows of, by peer id.
    pub exits: Vec<ExitStatus>,
    /// (Clients) open sessions on each listener, in config order.
    pub listeners: Vec<ListenerStatus>,
    /// (Clients) the sticky pins, least recently used first.
    pub pins: Vec<PinStatus>,
    /// Peer connections open now, by path.
    pub connections: PeerConnections,
    /// (Hubs) peers admitted now.
    pub admitted_peers: usize,
    /// What the node holds (sessions, streams, directory entries, …).
    pub resources: Resources,
}

/// Which roles a node plays.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoleSet {
    /// Serves as a hub.
    pub hub: bool,
    /// Serves as an exit.
    pub exit: bool,
    /// Serves local apps.
    pub client: bool,
}

/// Where a node's link to one of its hubs stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// Waiting to (re)dial after a failure or before the first dial.
    Idle,
    /// Dialing the hub.
    Dialing,
    /// Connected; opening the hub stream or proving the credential.
    Authenticating,
    /// The hub admitted this node: the link carries requests.
    Ready,
}

/// A relay reservation at a hub (exits behind NAT hold one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReservationState {
    /// Not wanted (a reachable node, or relaying is off).
    None,
    /// Asked for; no answer yet.
    Requested,
    /// Granted and held.
    Held,
    /// Failed or lost; asked for again after a backoff.
    Backoff,
}

/// One configured hub.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubStatus {
    /// The hub.
    pub peer: PeerId,
    /// The path of the connection to it, if one is open (direct preferred).
    pub connection: Option<Path>,
    /// The hub link's state; [`LinkState::Ready`] means admitted.
    pub link: LinkState,
    /// (Exits) whether the hub confirmed this node's registration.
    pub registered: bool,
    /// The relay reservation held there.
    pub reservation: ReservationState,
}

/// One exit a client knows of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitStatus {
    /// The exit.
    pub peer: PeerId,
    /// The path of the connection to it, if one is open (direct preferred).
    pub connection: Option<Path>,
    /// The circuit breaker's state.
    pub breaker: BreakerState,
    /// The measured round trip of its answers (moving average), if any.
    pub latency: Option<Duration>,
    /// This client's sessions through it now (those being set up included).
    pub sessions: u32,
    /// Failures in a row (the retry backoff's count).
    pub failures: u32,
    /// How many direct addresses its record lists (0: reachable only by relay).
    pub direct_addrs: usize,
    /// Hubs whose relays reach it.
    pub relays: Vec<PeerId>,
    /// Its two-letter country, if it says.
    pub country: Option<String>,
}

/// One client listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenerStatus {
    /// The listener, by position in the config.
    pub listener: ListenerId,
    /// Sessions open on it now.
    pub sessions: usize,
}

/// One sticky pin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinStatus {
    /// The listener whose connections it pins.
    pub listener: ListenerId,
    /// The app's session name; `None` pins the whole listener.
    pub session: Option<String>,
    /// The exit it pins them to.
    pub exit: PeerId,
    /// How long the pin has been unused.
    pub idle: Duration,
}
