//! [`Node`]: one value that owns all of a node's logic, whatever roles it plays.

use crate::client::ClientRole;
use crate::config::NodeConfig;
use crate::ctx::{Ctx, TimerKey};
use crate::exit::ExitRole;
use crate::hub::HubRole;
use crate::hub_link::{HubLinks, LinkEvent, Registration};
use crate::ids::{PeerId, StreamId};
use crate::io::{Close, Input, Output, Path, Protocol, Resources, TimerReason};
use crate::relay::{Relay, RelayedAt};
use crate::selection::backoff::Backoff;
use crate::time::Instant;
use core::time::Duration;
use rand_chacha::{ChaCha20Rng, ChaCha8Rng};
use rand_core::SeedableRng;

/// A meshproxy node: hub, exit and/or client, as its config says.
///
/// Sans-IO: it never touches a socket, a clock or OS randomness. Feed it
/// [`Input`]s and the passage of time, then pull [`Output`]s. **Drain rule**:
/// after every `handle_*` call, call [`poll_output`](Node::poll_output) until
/// it returns `None`, then re-read [`poll_timeout`](Node::poll_timeout)
/// before the next input.
#[derive(Debug)]
pub struct Node {
    config: NodeConfig,
    ctx: Ctx,
    hub: Option<HubRole>,
    exit: Option<ExitRole>,
    client: Option<ClientRole>,
    links: Option<HubLinks>,
    relay: Relay,
}

impl Node {
    /// A node that starts at `now`; all its randomness derives from `seed`.
    pub fn new(config: NodeConfig, seed: u64, now: Instant) -> Node {
        // Secrets come from the driver's OS entropy; in the simulator from
        // the seed (the constant keeps the two streams apart).
        let secret_rng = match config.entropy {
            Some(bytes) => ChaCha20Rng::from_seed(bytes),
            None => ChaCha20Rng::seed_from_u64(seed ^ 0x005e_c2e7_5eed),
        };
        let ctx = Ctx::new(ChaCha8Rng::seed_from_u64(seed), secret_rng);
        let wall_clock = config.wall_clock;
        let hub = config.hub.clone().map(|h| HubRole::new(config.peer_id, h, wall_clock));
        let exit = config.exit.as_ref().map(|e| ExitRole::new(e, &config.hubs, wall_clock));
        let margin = config.relay.circuit_margin;
        let limits = config.limits;
        let client = config.client.clone().map(|c| ClientRole::new(c, limits, margin));
        let credential = config
            .exit
            .as_ref()
            .map(|e| e.credential.clone())
            .or_else(|| config.client.as_ref().map(|c| c.credential.clone()));
        let registration = config.exit.as_ref().map(|e| Registration {
            addrs: e.addrs.clone(),
            attrs: e.attrs.clone(),
            capacity: e.capacity,
        });
        let links = match credential {
            Some(credential) if !config.hubs.is_empty() => Some(HubLinks::new(
                config.peer_id,
                &config.hubs,
                credential,
                registration,
                Backoff::new(Duration::from_millis(500), Duration::from_secs(15)),
            )),
            _ => None,
        };
        let hubs: Vec<PeerId> = config.hubs.iter().map(|h| h.peer).collect();
        let relay = Relay::new(config.relay.clone(), config.exit.as_ref().map(|e| e.relay), &hubs);
        let mut node = Node { config, ctx, hub, exit, client, links, relay };
        if let Some(links) = &mut node.links {
            links.start(&mut node.ctx, now, &node.config.timeouts);
        }
        let mut changes = Vec::new();
        node.relay.start(&mut node.ctx, &mut changes);
        node.relayed_changed(now, changes);
        if node.client.is_some() {
            node.ctx.timers.set(TimerKey::ExitRefresh, now);
        }
        node
    }

    /// This node's identity.
    pub fn peer_id(&self) -> PeerId {
        self.config.peer_id
    }

    /// The configuration the node runs with.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Something happened in the outside world at `now`.
    pub fn handle_input(&mut self, now: Instant, input: Input) {
        let t = self.config.timeouts;
        let limits = self.config.limits;
        let ctx = &mut self.ctx;
        match input {
            Input::AppAccepted { listener, stream, source } => match &mut self.client {
                Some(c) => c.on_accept(ctx, now, &t, listener, stream, source),
                None => ctx.emit(Output::Close { stream, how: Close::Reset }),
            },
            Input::StreamData { stream, data } => {
                if let Some(c) = self.client.as_mut().filter(|c| c.session_of(stream).is_some()) {
                    c.on_data(ctx, now, &t, stream, &data);
                } else if let Some(e) =
                    self.exit.as_mut().filter(|e| e.session_of(stream).is_some())
                {
                    e.on_data(ctx, now, &t, stream, &data);
                } else if let Some(h) = self.hub.as_mut().filter(|h| h.owns(stream)) {
                    h.on_data(ctx, now, &limits, stream, &data);
                } else if let Some(l) = self.links.as_mut().filter(|l| l.owns(stream)) {
                    l.on_data(ctx, now, &t, stream, &data);
                }
            }
            Input::StreamClosed { stream, how } => {
                if let Some(c) = self.client.as_mut().filter(|c| c.session_of(stream).is_some()) {
                    c.on_closed(ctx, now, &t, stream, how);
                } else if let Some(e) =
                    self.exit.as_mut().filter(|e| e.session_of(stream).is_some())
                {
                    e.on_closed(ctx, stream, how);
                } else if let Some(h) = self.hub.as_mut().filter(|h| h.owns(stream)) {
                    h.on_closed(ctx, stream, how);
                } else if let Some(l) = self.links.as_mut().filter(|l| l.owns(stream)) {
                    l.on_closed(ctx, now, stream, how);
                }
            }
            Input::PeerConnected { peer, conn, path, limit } => {
                let dialed = ctx.peer_connected(now, peer, conn, path, limit);
                let accepted_relayed = path.is_relayed() && dialed.is_none();
                self.relay.on_connected(ctx, now, peer, accepted_relayed, path == Path::Direct);
                if let Some(c) = &mut self.client {
                    c.on_peer_connected(ctx, now, &t, peer);
                }
                if let Some(l) = &mut self.links {
                    l.on_peer_connected(ctx, now, &t, peer);
                }
            }
            Input::PeerDisconnected { peer, conn } => {
                ctx.peer_disconnected(peer, conn);
                self.relay.on_disconnected(ctx, peer);
            }
            Input::DialFailed { peer } => self.dial_failed(now, peer),
            Input::StreamOpened { stream } => {
                if let Some(c) = &mut self.client {
                    c.on_stream_opened(ctx, now, stream);
                }
                if let Some(l) = &mut self.links {
                    l.on_stream_opened(stream);
                }
            }
            Input::StreamRefused { stream } => {
                if let Some(c) = &mut self.client {
                    c.on_stream_refused(ctx, now, &t, stream);
                }
                if let Some(l) = &mut self.links {
                    l.on_stream_refused(ctx, now, stream);
                }
            }
            Input::InboundStream { stream, peer, protocol } => match protocol {
                Protocol::Proxy => match &mut self.exit {
                    Some(e) => e.on_inbound(ctx, now, &t, &limits, stream, peer),
                    None => ctx.emit(Output::Close { stream, how: Close::Reset }),
                },
                Protocol::Hub => match &mut self.hub {
                    Some(h) => h.on_inbound(ctx, now, &t, &limits, stream, peer),
                    None => ctx.emit(Output::Close { stream, how: Close::Reset }),
                },
            },
            Input::Resolved { query, result } => {
                if let Some(e) = &mut self.exit {
                    e.on_resolved(ctx, now, &t, query, result);
                }
            }
            Input::OriginConnected { stream } => {
                if let Some(e) = &mut self.exit {
                    e.on_origin_connected(ctx, &t, stream);
                }
            }
            Input::OriginFailed { stream, status } => {
                if let Some(e) = &mut self.exit {
                    e.on_origin_failed(ctx, now, &t, stream, status);
                }
            }
            Input::SpliceEnded { a, report, .. } => {
                if let Some(c) = self.client.as_mut().filter(|c| c.session_of(a).is_some()) {
                    c.on_splice_ended(ctx, a, report);
                } else if let Some(e) = &mut self.exit {
                    e.on_splice_ended(ctx, a, report);
                }
            }
            Input::Restore(snapshot) => {
                if let Some(c) = &mut self.client {
                    c.restore(now, &snapshot);
                }
            }
            Input::Reachability(r) => {
                let mut changes = Vec::new();
                self.relay.on_reachability(ctx, r, &mut changes);
                let hide = self.relay.hide_addrs();
                let hide_changed = self.links.as_mut().is_some_and(|l| l.set_hide_addrs(hide));
                self.relayed_changed(now, changes);
                if let Some(l) = self.links.as_mut().filter(|_| hide_changed) {
                    l.reregister_all(&mut self.ctx, now, &t);
                }
            }
            Input::OwnAddress { ip, by } => {
                let trusted = by.is_none_or(|p| self.config.hubs.iter().any(|h| h.peer == p));
                if let Some(e) = self.exit.as_mut().filter(|_| trusted) {
                    e.add_own_address(ip);
                }
            }
            Input::ReservationAccepted { hub, expires_in } => {
                let mut changes = Vec::new();
                self.relay.on_accepted(ctx, now, hub, expires_in, &mut changes);
                self.relayed_changed(now, changes);
            }
            Input::ReservationFailed { hub } | Input::ReservationLost { hub } => {
                let mut changes = Vec::new();
                self.relay.on_failed(ctx, now, hub, &mut changes);
                self.relayed_changed(now, changes);
            }
            Input::HolePunchFailed { peer } => self.relay.on_punch_failed(ctx, now, peer),
        }
        self.after(now);
    }

    /// Tells the hub links where this node now holds (or lost) a reservation.
    fn relayed_changed(&mut self, now: Instant, changes: Vec<RelayedAt>) {
        let Some(l) = &mut self.links else { return };
        for RelayedAt { hub, relayed } in changes {
            l.set_relayed(&mut self.ctx, now, &self.config.timeouts, hub, relayed);
        }
    }

    fn dial_failed(&mut self, now: Instant, peer: PeerId) {
        let t = self.config.timeouts;
        let route = self.ctx.dial_failed(peer);
        if let Some(c) = &mut self.client {
            c.on_dial_failed(&mut self.ctx, now, &t, peer, route);
        }
        if let Some(l) = &mut self.links {
            l.on_dial_failed(&mut self.ctx, now, peer);
        }
    }

    /// Time has passed: fire every deadline at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let t = self.config.timeouts;
        while let Some(key) = self.ctx.timers.pop_due(now) {
            let ctx = &mut self.ctx;
            match key {
                TimerKey::ClientSession(app) => {
                    if let Some(c) = &mut self.client {
                        c.on_deadline(ctx, now, &t, app);
                    }
                }
                TimerKey::ExitSession(stream) => {
                    if let Some(e) = &mut self.exit {
                        e.on_deadline(ctx, now, &t, stream);
                    }
                }
                TimerKey::HubLink(i) => {
                    if let Some(l) = &mut self.links {
                        l.on_timer(ctx, now, &t, i);
                    }
                }
                TimerKey::HubPeer(stream) => {
                    if let Some(h) = &mut self.hub {
                        h.on_auth_deadline(ctx, stream);
                    }
                }
                TimerKey::DirectoryExpiry => {
                    if let Some(h) = &mut self.hub {
                        h.on_expiry(ctx, now);
                    }
                }
                TimerKey::ExitRefresh => {
                    self.refresh_exits(now);
                    let every = self.config.client.as_ref().map(|c| c.selection.refresh);
                    if let Some(every) = every {
                        self.ctx.timers.set(TimerKey::ExitRefresh, now + every);
                    }
                }
                TimerKey::Dial(peer) => self.dial_failed(now, peer),
                TimerKey::Reservation(i) => {
                    let mut changes = Vec::new();
                    self.relay.on_timer(ctx, now, i, &mut changes);
                    self.relayed_changed(now, changes);
                }
                TimerKey::HolePunch(peer) => self.relay.on_punch_timer(ctx, now, peer),
            }
            self.after(now);
        }
    }

    /// Asks the hubs for exits, if a client and no request is outstanding.
    fn refresh_exits(&mut self, now: Instant) {
        let (Some(c), Some(l)) = (&mut self.client, &mut self.links) else { return };
        if !c.wants_refresh(now) {
            return;
        }
        let limit = self.config.client.as_ref().map_or(64, |c| c.selection.find_limit);
        if l.find(&mut self.ctx, now, &self.config.timeouts, limit) {
            let ready = l.ready_count();
            c.finds_sent(now, &self.config.timeouts, ready);
        }
    }

    /// Routes what the hub links learned to the roles that care.
    fn after(&mut self, now: Instant) {
        let t = self.config.timeouts;
        while let Some(event) = self.links.as_mut().and_then(|l| l.events.pop_front()) {
            if let LinkEvent::Ready { hub } = event {
                // The hub is back: a reservation waiting out its backoff
                // there is asked for now, not up to a backoff step later.
                self.relay.on_hub_ready(&mut self.ctx, hub);
            }
            let Some(c) = &mut self.client else { continue };
            match event {
                LinkEvent::Ready { .. } => {
                    if c.needs_exits(now) {
                        self.refresh_exits(now);
                    }
                }
                LinkEvent::Peers { hub, peers } => c.on_peers(&mut self.ctx, now, &t, hub, peers),
                LinkEvent::Lost => c.on_link_lost(&mut self.ctx, now, &t),
                LinkEvent::Ticket { hub, ticket, until } => {
                    c.on_ticket(&mut self.ctx, now, &t, hub, ticket, until);
                }
            }
        }
        if self.client.as_ref().is_some_and(|c| c.needs_exits(now)) {
            self.refresh_exits(now);
        }
        // Sessions waiting for an exit pull the next refresh forward.
        if let Some(due) = self.client.as_ref().and_then(|c| c.refresh_due(now)) {
            if self.ctx.timers.get(TimerKey::ExitRefresh).is_none_or(|at| due < at) {
                self.ctx.timers.set(TimerKey::ExitRefresh, due);
            }
        }
    }

    /// The next thing the outside must do.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.ctx.out.pop_front()
    }

    /// When to call [`handle_timeout`](Node::handle_timeout) next, and why.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<(Instant, TimerReason)> {
        self.ctx.timers.next().map(|(at, key)| (at, key.reason()))
    }

    /// What the node holds right now, for leak and bound checks.
    pub fn resources(&self) -> Resources {
        Resources {
            sessions: self.client.as_ref().map_or(0, ClientRole::session_count)
                + self.exit.as_ref().map_or(0, ExitRole::session_count),
            streams: self.client.as_ref().map_or(0, ClientRole::stream_count)
                + self.exit.as_ref().map_or(0, ExitRole::stream_count)
                + self.hub.as_ref().map_or(0, HubRole::stream_count),
            pending_dials: self.ctx.pending_dials(),
            pending_queries: self.exit.as_ref().map_or(0, ExitRole::pending_queries),
            timers: self.ctx.timers.non_periodic(),
            directory_entries: self.hub.as_ref().map_or(0, HubRole::directory_len),
            busiest_peer_sessions: self.exit.as_ref().map_or(0, ExitRole::busiest_peer),
            preauth_hub_streams: self.hub.as_ref().map_or(0, HubRole::preauth_count),
            busiest_peer_hub_streams: self.hub.as_ref().map_or(0, HubRole::busiest_peer_streams),
        }
    }

    /// (Hubs) every registered exit with the roles of the key it registered
    /// under, for the simulator's admission invariant.
    pub fn registrations(&self) -> Vec<(PeerId, crate::admission::RoleSet)> {
        self.hub.as_ref().map_or_else(Vec::new, |h| {
            h.registrations().map(|(peer, key)| (peer, key.roles)).collect()
        })
    }

    /// (Hubs) whether `peer` is in the directory.
    pub fn hub_has_registered(&self, peer: &PeerId) -> bool {
        self.hub.as_ref().is_some_and(|h| h.is_registered(peer))
    }

    /// Peer connections open now, by path, as the outside reported them (the
    /// driver's status and `/metrics` gauges read them here rather than keep
    /// a copy of the connection table).
    pub fn peer_connections(&self) -> crate::io::PeerConnections {
        let (direct, relayed) = self.ctx.conns_by_path();
        crate::io::PeerConnections { direct, relayed }
    }

    /// (Exits) at how many hubs this node holds a relay reservation.
    pub fn reservations_held(&self) -> usize {
        self.relay.held()
    }

    /// (Exits) at how many hubs this node is registered, as far as it knows.
    pub fn registered_hubs(&self) -> usize {
        self.links.as_ref().map_or(0, HubLinks::registered_at)
    }

    /// (Clients) how many exits the client knows of.
    pub fn known_exits(&self) -> usize {
        self.client.as_ref().map_or(0, ClientRole::known_exits)
    }

    /// Whether the core still tracks `stream` (for the data plane's bookkeeping).
    pub fn tracks_stream(&self, stream: StreamId) -> bool {
        self.client.as_ref().is_some_and(|c| c.session_of(stream).is_some())
            || self.exit.as_ref().is_some_and(|e| e.session_of(stream).is_some())
            || self.hub.as_ref().is_some_and(|h| h.owns(stream))
            || self.links.as_ref().is_some_and(|l| l.owns(stream))
    }
}
