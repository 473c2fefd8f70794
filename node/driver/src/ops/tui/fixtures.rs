//! Fixed status snapshots for the TUI's tests: the same figures on every run,
//! so the rendered screens can be compared with committed snapshots.

use crate::ops::control::events::LogLine;
use crate::ops::control::protocol::EventRecord;
use crate::ops::control::snapshot::{
    ConnectionsView, ControlView, ExitView, HubRoleView, HubView, ListenerView, PinView,
    StatusSnapshot, TrafficView,
};

/// A client with nothing known yet.
pub fn snapshot() -> StatusSnapshot {
    StatusSnapshot {
        version: "0.1.0".into(),
        peer_id: "12D3KooWClientPeerIdForTheTuiTests0000000000000000".into(),
        roles: vec!["client".into()],
        uptime_secs: 3725,
        reachability: "public".into(),
        p2p_addrs: vec!["/ip4/127.0.0.1/tcp/4001".into()],
        metrics: None,
        hubs: Vec::new(),
        exits: Vec::new(),
        listeners: Vec::new(),
        pins: Vec::new(),
        connections: ConnectionsView { direct: 0, relayed: 0, reservations: 0 },
        sessions: 0,
        hub: None,
        recent_warnings: Vec::new(),
        control: ControlView { event_clients: 1, dropped_lagged: 0, dropped_stalled: 0 },
        traffic: TrafficView::default(),
    }
}

/// An exit entry.
pub fn exit(peer: &str, path: Option<&str>, breaker: &str) -> ExitView {
    ExitView {
        peer: peer.into(),
        path: path.map(Into::into),
        via: None,
        breaker: breaker.into(),
        latency_ms: None,
        sessions: 0,
        failures: 0,
        direct_addrs: 1,
        relays: Vec::new(),
        country: None,
    }
}

/// A hub entry.
pub fn hub(peer: &str, admitted: bool, registered: bool) -> HubView {
    HubView {
        peer: peer.into(),
        connected: admitted.then(|| "direct".into()),
        admitted,
        link: if admitted { "ready" } else { "dialing" }.into(),
        registered,
        reservation: "none".into(),
    }
}

/// A busy client: two hubs, three exits (direct, relayed, broken), a listener, a pin,
/// a warning.
pub fn busy_client() -> StatusSnapshot {
    let mut s = snapshot();
    s.hubs = vec![
        hub("12D3KooWHubOneAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", true, false),
        hub("12D3KooWHubTwoBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB", false, false),
    ];
    let mut fast =
        exit("12D3KooWExitFastCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC", Some("direct"), "closed");
    fast.latency_ms = Some(12.4);
    fast.sessions = 3;
    fast.country = Some("NL".into());
    let mut relayed =
        exit("12D3KooWExitNatDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDD", Some("relayed"), "closed");
    relayed.via = Some(s.hubs[0].peer.clone());
    relayed.latency_ms = Some(88.0);
    relayed.sessions = 1;
    relayed.direct_addrs = 0;
    relayed.country = Some("DE".into());
    let mut broken = exit("12D3KooWExitDownEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEE", None, "open");
    broken.failures = 4;
    s.exits = vec![fast, relayed, broken];
    s.listeners = vec![ListenerView { index: 0, bind: Some("127.0.0.1:1080".into()), sessions: 4 }];
    s.pins =
        vec![PinView { listener: 0, session: None, exit: s.exits[0].peer.clone(), idle_secs: 42 }];
    s.connections = ConnectionsView { direct: 2, relayed: 1, reservations: 0 };
    s.sessions = 4;
    s.recent_warnings = vec![LogLine {
        at_ms: 1_765_138_000_123,
        message: "HubLinkLost { hub: 12D3KooWHubTwo… }: retrying".into(),
    }];
    s.traffic = TrafficView { bytes_up: 40_000, bytes_down: 2_500_000, sessions_closed: 17 };
    s
}

/// A hub holding two admitted peers and one directory entry.
pub fn hub_node() -> StatusSnapshot {
    let mut s = snapshot();
    s.peer_id = "12D3KooWHubNodePeerIdForTheTuiTests000000000000000".into();
    s.roles = vec!["hub".into()];
    s.hub = Some(HubRoleView { admitted_peers: 2, directory_entries: 1 });
    s.connections = ConnectionsView { direct: 2, relayed: 0, reservations: 0 };
    s
}

/// An event line as the node streams it.
pub fn event(at_ms: u64, level: &str, kind: &str, detail: &str) -> EventRecord {
    EventRecord { at_ms, level: level.into(), kind: kind.into(), detail: detail.into() }
}
