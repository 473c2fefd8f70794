//! [`Node`]: one value that owns all of a node's logic, whatever roles it plays.

mod reload;

use crate::agent::AgentRole;
use crate::client::ClientRole;
use crate::config::NodeConfig;
use crate::ctx::{Ctx, Owner, TimerKey};
use crate::exit::ExitRole;
use crate::gateway::GatewayRole;
use crate::hub::HubRole;
use crate::hub_link::{HubLinks, LinkEvent, Registration};
use crate::ids::{PeerId, StreamId};
use crate::io::{Close, Event, IngressOutcome, Input, Output, Path, Resources, TimerReason};
use crate::listener::Listeners;
use crate::record::Role;
use crate::relay::{Relay, RelayedAt};
use crate::role::Roles;
use crate::selection::backoff::Backoff;
use crate::status::{HubStatus, NodeStatus, RoleSet};
use crate::time::Instant;
use core::time::Duration;
use rand_chacha::{ChaCha20Rng, ChaCha8Rng};
use rand_core::SeedableRng;

/// A meshproxy node: hub, exit or agent, and/or client, as its config says.
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
    roles: Roles,
    listeners: Listeners,
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
        let ctx =
            Ctx::new(config.timeouts, config.limits, ChaCha8Rng::seed_from_u64(seed), secret_rng);
        let wall_clock = config.wall_clock;
        let hub = config.hub.clone().map(|h| HubRole::new(config.peer_id, h, wall_clock));
        let exit = config.exit.as_ref().map(|e| ExitRole::new(e, &config.hubs, wall_clock));
        let margin = config.relay.circuit_margin;
        let client = config.client.clone().map(|c| ClientRole::new(c, margin));
        let agent = config.agent.as_ref().map(|a| AgentRole::new(a, &config.hubs, wall_clock));
        // A node lists itself in one role (config checks refuse exit and
        // agent together); the exit's wins here.
        let credential = config
            .exit
            .as_ref()
            .map(|e| e.credential.clone())
            .or_else(|| config.agent.as_ref().map(|a| a.credential.clone()))
            .or_else(|| config.client.as_ref().map(|c| c.credential.clone()))
            .or_else(|| config.gateway.as_ref().map(|g| g.credential.clone()));
        let registration = reload::listing(&config).map(|(role, attrs, capacity)| Registration {
            role,
            addrs: match (&config.exit, &config.agent) {
                (Some(e), _) => e.addrs.clone(),
                (None, Some(a)) => a.addrs.clone(),
                (None, None) => Vec::new(),
            },
            attrs,
            capacity,
        });
        // The role this node authenticates in at its hubs: the one it is
        // listed in, if any, else the one it looks peers up for.
        let auth_role = match (&registration, &config.client, &config.gateway) {
            (Some(r), _, _) => r.role,
            (None, None, Some(_)) => Role::Gateway,
            _ => Role::Client,
        };
        let links = match credential {
            Some(credential) if !config.hubs.is_empty() => Some(HubLinks::new(
                config.peer_id,
                &config.hubs,
                credential,
                auth_role,
                registration,
                Backoff::new(Duration::from_millis(500), Duration::from_secs(15)),
            )),
            _ => None,
        };
        let hubs: Vec<PeerId> = config.hubs.iter().map(|h| h.peer).collect();
        let relay_mode =
            config.exit.as_ref().map(|e| e.relay).or(config.agent.as_ref().map(|a| a.relay));
        let relay = Relay::new(config.relay.clone(), relay_mode, &hubs);
        let listeners = Listeners::from_config(&config);
        let gateway = config.gateway.as_ref().map(|g| {
            let ids = (0..g.listeners.len()).filter_map(|i| Some((listeners.ingress(i)?, i)));
            GatewayRole::new(g, ids, margin)
        });
        let roles = Roles { client, exit, hub, links, gateway, agent };
        let mut node = Node { config, ctx, roles, listeners, relay };
        if let Some(links) = &mut node.roles.links {
            links.start(&mut node.ctx, now);
        }
        node.relay.start(&mut node.ctx);
        node.relay_changed(now);
        if node.roles.client.is_some() {
            node.ctx.timers.set(TimerKey::ExitRefresh, now);
        }
        if node.roles.gateway.is_some() {
            node.ctx.timers.set(TimerKey::AgentRefresh, now);
        }
        node
    }

    /// (Gateways) the version of the route table in force.
    pub fn routes_version(&self) -> Option<u64> {
        self.roles.gateway.as_ref().map(GatewayRole::routes_version)
    }

    /// This node's identity.
    pub fn peer_id(&self) -> PeerId {
        self.config.peer_id
    }

    /// The node's listeners: what each [`ListenerId`](crate::ids::ListenerId) serves.
    pub fn listeners(&self) -> &Listeners {
        &self.listeners
    }

    /// The configuration the node runs with.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Something happened in the outside world at `now`.
    pub fn handle_input(&mut self, now: Instant, input: Input) {
        let ctx = &mut self.ctx;
        let roles = &mut self.roles;
        match input {
            Input::AppAccepted { listener, stream, source } => {
                let owner = self.listeners.serves(listener).map(Roles::for_listener);
                match owner.and_then(|o| roles.get(o)) {
                    Some(role) => role.on_accept(ctx, now, listener, stream, source),
                    None => ctx.emit(Output::Close { stream, how: Close::Reset }),
                }
            }
            Input::StreamData { stream, data } => {
                if let Some(role) = ctx.owner(stream).and_then(|o| roles.get(o)) {
                    role.on_data(ctx, now, stream, &data);
                }
            }
            Input::StreamClosed { stream, how } => {
                if let Some(role) = ctx.owner(stream).and_then(|o| roles.get(o)) {
                    role.on_closed(ctx, now, stream, how);
                }
            }
            Input::PeerConnected { peer, conn, path, limit } => {
                let dialed = ctx.peer_connected(now, peer, conn, path, limit);
                let accepted_relayed = path.is_relayed() && dialed.is_none();
                self.relay.on_connected(ctx, now, peer, accepted_relayed, path == Path::Direct);
                if let Some(c) = &mut self.roles.client {
                    c.on_peer_connected(ctx, now, peer);
                }
                if let Some(l) = &mut self.roles.links {
                    l.on_peer_connected(ctx, now, peer);
                }
                if let Some(g) = &mut self.roles.gateway {
                    g.on_peer_connected(ctx, now, peer);
                }
            }
            Input::PeerDisconnected { peer, conn } => {
                ctx.peer_disconnected(peer, conn);
                self.relay.on_disconnected(ctx, peer);
                if let Some(g) = self.roles.gateway.as_mut().filter(|_| !ctx.is_connected(peer)) {
                    g.on_peer_gone(now, peer);
                }
            }
            Input::DialFailed { peer } => self.dial_failed(now, peer),
            Input::StreamOpened { stream } => match ctx.owner(stream).and_then(|o| roles.get(o)) {
                Some(role) => role.on_stream_opened(ctx, now, stream),
                // Nobody holds it any more (its session ended while it was
                // being opened): close it, so the outside drops it too.
                None => ctx.emit(Output::Close { stream, how: Close::Reset }),
            },
            Input::StreamRefused { stream } => {
                if let Some(role) = ctx.owner(stream).and_then(|o| roles.get(o)) {
                    role.on_stream_refused(ctx, now, stream);
                }
            }
            Input::InboundStream { stream, peer, protocol } => {
                match roles.get(Roles::for_protocol(protocol)) {
                    Some(role) => role.on_inbound(ctx, now, stream, peer),
                    None => ctx.emit(Output::Close { stream, how: Close::Reset }),
                }
            }
            // Each role answers only the lookups it asked for (query ids are the node's).
            Input::Resolved { query, result } => match (&mut roles.exit, &mut roles.agent) {
                (Some(e), _) if e.asked(query) => e.on_resolved(ctx, now, query, result),
                (_, Some(a)) => a.on_resolved(ctx, now, query, result),
                _ => {}
            },
            Input::OriginConnected { stream } => {
                match (ctx.owner(stream), &mut roles.exit, &mut roles.agent) {
                    (Some(Owner::Exit), Some(e), _) => e.on_origin_connected(ctx, stream),
                    (Some(Owner::Agent), _, Some(a)) => a.on_origin_connected(ctx, stream),
                    // Its session gave up on it (a deadline, the peer left).
                    _ => ctx.emit(Output::Close { stream, how: Close::Reset }),
                }
            }
            Input::OriginFailed { stream, status } => {
                match (ctx.owner(stream), &mut roles.exit, &mut roles.agent) {
                    (Some(Owner::Exit), Some(e), _) => e.on_origin_failed(ctx, now, stream, status),
                    (Some(Owner::Agent), _, Some(a)) => {
                        a.on_origin_failed(ctx, now, stream, status);
                    }
                    _ => {}
                }
            }
            Input::SpliceEnded { a, report, .. } => {
                if let Some(role) = ctx.owner(a).and_then(|o| roles.get(o)) {
                    role.on_splice_ended(ctx, now, a, report);
                }
            }
            Input::Restore(snapshot) => {
                if let Some(c) = &mut self.roles.client {
                    c.restore(now, &snapshot);
                }
            }
            Input::Reachability(r) => self.relay.on_reachability(ctx, r),
            Input::OwnAddress { ip, by } => {
                let trusted = by.is_none_or(|p| self.config.hubs.iter().any(|h| h.peer == p));
                if let Some(e) = self.roles.exit.as_mut().filter(|_| trusted) {
                    e.add_own_address(ip);
                }
            }
            Input::ReservationAccepted { hub, expires_in } => {
                self.relay.on_accepted(ctx, now, hub, expires_in);
            }
            Input::ReservationFailed { hub } | Input::ReservationLost { hub } => {
                self.relay.on_failed(ctx, now, hub);
            }
            Input::HolePunchFailed { peer } => self.relay.on_punch_failed(ctx, now, peer),
            Input::IngressRequest { request, listener, client, head } => match &mut roles.gateway {
                Some(g) => g.on_request(ctx, now, request, listener, client, head),
                // Only a gateway has ingress listeners; answer anyway, so
                // every request the outside names gets exactly one answer.
                None => ctx.emit(Output::IngressRespond {
                    request,
                    response: crate::gateway::error(404, IngressOutcome::NoRoute),
                }),
            },
            Input::ReloadRoutes(routes) => {
                let version = routes.version();
                let accepted = match &mut roles.gateway {
                    Some(g) => g.reload(routes).is_ok(),
                    None => false,
                };
                ctx.event(Event::RoutesReloaded { version, accepted });
            }
            Input::Reconfigure(config) => self.reconfigure(now, &config.0),
            Input::Revoke(what) => {
                let streams_ended = match &mut self.roles.hub {
                    Some(h) => h.revoke(&mut self.ctx, &what),
                    None => 0,
                };
                self.ctx.event(Event::Revoked { streams_ended });
            }
            Input::IngressDone { request, end } => {
                if let Some(g) = &mut roles.gateway {
                    g.on_done(ctx, request, end);
                }
            }
        }
        self.after(now);
    }

    /// Tells the hub links what the relay changed: whether to register
    /// without direct addresses (set first, so a `Register` sent now carries
    /// it), where this node now holds (or lost) a reservation, and — if the
    /// addresses changed — to register again everywhere.
    fn relay_changed(&mut self, now: Instant) {
        let hide = self.relay.hide_addrs();
        let hide_changed = self.roles.links.as_mut().is_some_and(|l| l.set_hide_addrs(hide));
        while let Some(RelayedAt { hub, relayed }) = self.relay.poll_event() {
            if let Some(l) = &mut self.roles.links {
                l.set_relayed(&mut self.ctx, now, hub, relayed);
            }
        }
        if let Some(l) = self.roles.links.as_mut().filter(|_| hide_changed) {
            l.reregister_all(&mut self.ctx, now);
        }
    }

    fn dial_failed(&mut self, now: Instant, peer: PeerId) {
        let route = self.ctx.dial_failed(peer);
        if let Some(c) = &mut self.roles.client {
            c.on_dial_failed(&mut self.ctx, now, peer, route);
        }
        if let Some(l) = &mut self.roles.links {
            l.on_dial_failed(&mut self.ctx, now, peer);
        }
        if let Some(g) = &mut self.roles.gateway {
            g.on_dial_failed(&mut self.ctx, now, peer, route);
        }
    }

    /// Time has passed: fire every deadline at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(key) = self.ctx.timers.pop_due(now) {
            let ctx = &mut self.ctx;
            if let Some(owner) = key.owner() {
                if let Some(role) = self.roles.get(owner) {
                    role.on_timer(ctx, now, key);
                }
                self.after(now);
                continue;
            }
            match key {
                TimerKey::ExitRefresh => {
                    self.refresh_exits(now);
                    let every = self.config.client.as_ref().map(|c| c.selection.refresh);
                    if let Some(every) = every {
                        self.ctx.timers.set(TimerKey::ExitRefresh, now + every);
                    }
                }
                TimerKey::Dial(peer) => self.dial_failed(now, peer),
                TimerKey::AgentRefresh => self.refresh_agents(now, true),
                TimerKey::Reservation(i) => self.relay.on_timer(ctx, now, i),
                TimerKey::HolePunch(peer) => self.relay.on_punch_timer(ctx, now, peer),
                // A role's (`TimerKey::owner` names it): handed over above.
                _ => {}
            }
            self.after(now);
        }
    }

    /// Asks the hubs for exits, if a client and no request is outstanding.
    fn refresh_exits(&mut self, now: Instant) {
        let (Some(c), Some(l)) = (&mut self.roles.client, &mut self.roles.links) else { return };
        if !c.wants_refresh(now) {
            return;
        }
        let limit = self.config.client.as_ref().map_or(64, |c| c.selection.find_limit);
        if l.find(&mut self.ctx, now, Role::Exit, limit) {
            let ready = l.ready_count();
            c.finds_sent(&self.ctx, now, ready);
        }
    }

    /// Asks the ready hubs for agents if the gateway's list is due (or
    /// `now`, if `force`); a try with no hub ready counts as one, so the
    /// next comes a refresh period later (or when a hub link is ready).
    fn refresh_agents(&mut self, now: Instant, force: bool) {
        let Some(g) = &mut self.roles.gateway else { return };
        if !force && !g.wants_refresh(now) {
            return;
        }
        // A hub that is a gateway is its own first source of agents (and of
        // its ticket): it needs no link to itself.
        if let Some(h) = &mut self.roles.hub {
            let (records, ticket, until) = h.serve_own_gateway(now);
            g.on_ticket(self.config.peer_id, ticket, until);
            g.on_agents(&mut self.ctx, now, self.config.peer_id, records);
        }
        if let Some(l) = &mut self.roles.links {
            l.find(&mut self.ctx, now, Role::Agent, 0);
        }
        g.refreshed(now);
        if let Some(at) = g.refresh_due() {
            self.ctx.timers.set(TimerKey::AgentRefresh, at);
        }
    }

    /// Checks that the table of stream owners says what the roles hold: every
    /// stream in it is held by the role it names, and no role holds another.
    #[cfg(debug_assertions)]
    fn check_owners(&self) {
        let held = self.roles.client.as_ref().map_or(0, ClientRole::stream_count)
            + self.roles.exit.as_ref().map_or(0, ExitRole::stream_count)
            + self.roles.hub.as_ref().map_or(0, HubRole::stream_count)
            + self.roles.links.as_ref().map_or(0, HubLinks::stream_count)
            + self.roles.gateway.as_ref().map_or(0, GatewayRole::stream_count)
            + self.roles.agent.as_ref().map_or(0, AgentRole::stream_count);
        assert_eq!(
            held,
            self.ctx.owned_streams(),
            "the roles hold other streams than the table says"
        );
        for (stream, owner) in self.ctx.owners() {
            let holds = match owner {
                Owner::Client => {
                    self.roles.client.as_ref().is_some_and(|c| c.session_of(stream).is_some())
                }
                Owner::Exit => {
                    self.roles.exit.as_ref().is_some_and(|e| e.session_of(stream).is_some())
                }
                Owner::Hub => self.roles.hub.as_ref().is_some_and(|h| h.owns(stream)),
                Owner::HubLink => self.roles.links.as_ref().is_some_and(|l| l.owns(stream)),
                Owner::Gateway => self.roles.gateway.as_ref().is_some_and(|g| g.owns(stream)),
                Owner::Agent => {
                    self.roles.agent.as_ref().is_some_and(|a| a.session_of(stream).is_some())
                }
            };
            assert!(holds, "{stream:?} is in the table as {owner:?}'s, which does not hold it");
        }
    }

    /// The one place the sub-machines' queues are drained, after every
    /// input and every fired timer: what the relay changed (for the hub
    /// links), then what the hub links learned (for the relay and the client).
    fn after(&mut self, now: Instant) {
        self.relay_changed(now);
        while let Some(event) = self.roles.links.as_mut().and_then(HubLinks::poll_event) {
            if let LinkEvent::Ready { hub } = event {
                // The hub is back: a reservation waiting out its backoff
                // there is asked for now, not up to a backoff step later.
                self.relay.on_hub_ready(&mut self.ctx, hub);
            }
            if let Some(g) = &mut self.roles.gateway {
                match &event {
                    // A gateway without agents asks as soon as a hub can answer.
                    LinkEvent::Ready { .. } if g.agent_count() == 0 => {
                        self.refresh_agents(now, true);
                    }
                    LinkEvent::Peers { hub, role: Role::Agent, peers } => {
                        g.on_agents(&mut self.ctx, now, *hub, peers.clone());
                    }
                    LinkEvent::Ticket { hub, ticket, until } => {
                        g.on_ticket(*hub, ticket.clone(), *until);
                    }
                    _ => {}
                }
            }
            let Some(c) = &mut self.roles.client else { continue };
            match event {
                LinkEvent::Ready { .. } => {
                    if c.needs_exits(now) {
                        self.refresh_exits(now);
                    }
                }
                LinkEvent::Peers { hub, role: Role::Exit, peers } => {
                    c.on_peers(&mut self.ctx, now, hub, peers);
                }
                LinkEvent::Peers { .. } => {}
                LinkEvent::Lost => c.on_link_lost(&mut self.ctx, now),
                LinkEvent::Ticket { hub, ticket, until } => {
                    c.on_ticket(&mut self.ctx, now, hub, ticket, until);
                }
            }
        }
        if self.roles.client.as_ref().is_some_and(|c| c.needs_exits(now)) {
            self.refresh_exits(now);
        }
        if self.roles.gateway.as_mut().is_some_and(GatewayRole::take_refresh_now) {
            self.refresh_agents(now, true);
        }
        // Sessions waiting for an exit pull the next refresh forward.
        if let Some(due) = self.roles.client.as_ref().and_then(|c| c.refresh_due(now)) {
            if self.ctx.timers.get(TimerKey::ExitRefresh).is_none_or(|at| due < at) {
                self.ctx.timers.set(TimerKey::ExitRefresh, due);
            }
        }
        #[cfg(debug_assertions)]
        self.check_owners();
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
            sessions: self.roles.client.as_ref().map_or(0, ClientRole::session_count)
                + self.roles.exit.as_ref().map_or(0, ExitRole::session_count)
                + self.roles.gateway.as_ref().map_or(0, GatewayRole::request_count)
                + self.roles.agent.as_ref().map_or(0, AgentRole::session_count),
            streams: self.roles.client.as_ref().map_or(0, ClientRole::stream_count)
                + self.roles.exit.as_ref().map_or(0, ExitRole::stream_count)
                + self.roles.hub.as_ref().map_or(0, HubRole::stream_count)
                + self.roles.gateway.as_ref().map_or(0, GatewayRole::stream_count)
                + self.roles.agent.as_ref().map_or(0, AgentRole::stream_count),
            pending_dials: self.ctx.pending_dials(),
            pending_queries: self.roles.exit.as_ref().map_or(0, ExitRole::pending_queries)
                + self.roles.agent.as_ref().map_or(0, AgentRole::pending_queries),
            timers: self.ctx.timers.non_periodic(),
            directory_entries: self.roles.hub.as_ref().map_or(0, HubRole::directory_len),
            busiest_peer_sessions: self.roles.exit.as_ref().map_or(0, ExitRole::busiest_peer),
            preauth_hub_streams: self.roles.hub.as_ref().map_or(0, HubRole::preauth_count),
            busiest_peer_hub_streams: self
                .roles
                .hub
                .as_ref()
                .map_or(0, HubRole::busiest_peer_streams),
        }
    }

    /// (Hubs) every registered exit with the roles of the key it registered
    /// under, for the simulator's admission invariant.
    pub fn registrations(&self) -> Vec<(PeerId, crate::admission::RoleSet)> {
        self.roles.hub.as_ref().map_or_else(Vec::new, |h| {
            h.registrations().map(|(peer, key)| (peer, key.roles)).collect()
        })
    }

    /// (Hubs) whether `peer` is in the directory.
    pub fn hub_has_registered(&self, peer: &PeerId) -> bool {
        self.roles.hub.as_ref().is_some_and(|h| h.is_registered(peer))
    }

    /// Peer connections open now, by path, as the outside reported them (the
    /// driver's status and `/metrics` gauges read them here rather than keep
    /// a copy of the connection table).
    pub fn peer_connections(&self) -> crate::io::PeerConnections {
        let (direct, relayed) = self.ctx.conns_by_path();
        crate::io::PeerConnections { direct, relayed }
    }

    /// (Hubs) how many peers are admitted now (hold an authenticated hub
    /// stream): those a [`Event::PeerAdmitted`]
    /// announced and no [`Event::AdmissionEnded`]
    /// took back since.
    pub fn admitted_peers(&self) -> usize {
        self.roles.hub.as_ref().map_or(0, HubRole::admitted_peers)
    }

    /// (Exits) at how many hubs this node holds a relay reservation.
    pub fn reservations_held(&self) -> usize {
        self.relay.held()
    }

    /// (Exits) at how many hubs this node is registered, as far as it knows.
    pub fn registered_hubs(&self) -> usize {
        self.roles.links.as_ref().map_or(0, HubLinks::registered_at)
    }

    /// (Hubs) how many peers the directory lists as `role` now.
    pub fn directory_entries(&self, role: Role) -> usize {
        self.roles.hub.as_ref().map_or(0, |h| h.directory_len_of(role))
    }

    /// (Agents) how many gateway streams are spliced to an origin now.
    pub fn agent_streams_open(&self) -> usize {
        self.roles.agent.as_ref().map_or(0, AgentRole::spliced_count)
    }

    /// (Clients) how many exits the client knows of.
    pub fn known_exits(&self) -> usize {
        self.roles.client.as_ref().map_or(0, ClientRole::known_exits)
    }

    /// What the node holds at `now`, for the people operating it (the
    /// driver's control endpoint): built from the roles' own tables, never
    /// from a copy kept in step with events.
    pub fn status(&self, now: Instant) -> NodeStatus {
        let client = self.roles.client.as_ref();
        let hubs = self.roles.links.as_ref().map_or_else(Vec::new, |links| {
            links
                .states()
                .map(|(peer, link, registered)| HubStatus {
                    peer,
                    connection: self.ctx.path_to(peer),
                    link,
                    registered,
                    reservation: self.relay.reservation_at(peer),
                })
                .collect()
        });
        NodeStatus {
            peer_id: self.config.peer_id,
            roles: RoleSet {
                hub: self.roles.hub.is_some(),
                exit: self.roles.exit.is_some(),
                client: client.is_some(),
            },
            reachability: self.relay.reachability(),
            hubs,
            exits: client.map_or_else(Vec::new, |c| c.exit_statuses(&self.ctx)),
            listeners: client.map_or_else(Vec::new, ClientRole::listener_statuses),
            pins: client.map_or_else(Vec::new, |c| c.pin_statuses(now)),
            connections: self.peer_connections(),
            admitted_peers: self.admitted_peers(),
            resources: self.resources(),
        }
    }

    /// (Gateways) how many agents the gateway knows of.
    pub fn known_agents(&self) -> usize {
        self.roles.gateway.as_ref().map_or(0, GatewayRole::agent_count)
    }

    /// Whether the core still tracks `stream` (for the data plane's bookkeeping).
    pub fn tracks_stream(&self, stream: StreamId) -> bool {
        self.ctx.owner(stream).is_some()
    }
}
