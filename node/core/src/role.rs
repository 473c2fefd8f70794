//! [`Role`]: what [`Node`](crate::Node) asks of every role that holds
//! streams, so that its dispatch is one lookup and one call whatever the role.
//!
//! A role adopts a stream by writing it into the context's table of owners
//! ([`Ctx::adopt`]) and lets it go with [`Ctx::release`]; `Node` routes every
//! event about a stream to the role the table names, and closes a stream
//! nobody holds. A new role is one [`Owner`] variant, one `impl Role`, one
//! field in [`Roles`], and — if peers open streams to it — one protocol
//! arm in [`Roles::for_protocol`]; if apps connect to it, one
//! [`Serves`] variant and an arm in [`Roles::for_listener`]; if it sets
//! timers, its [`TimerKey`] variants and their arms in [`TimerKey::owner`].
//!
//! Every method runs inside one `handle_*` call of `Node`: it may emit
//! outputs and set timers through `ctx`, and must leave the owner table
//! saying exactly which streams it still holds.

use crate::agent::AgentRole;
use crate::client::ClientRole;
use crate::ctx::{Ctx, Owner, TimerKey};
use crate::exit::ExitRole;
use crate::gateway::GatewayRole;
use crate::hub::HubRole;
use crate::hub_link::HubLinks;
use crate::ids::{ListenerId, PeerId, StreamId};
use crate::io::{Close, Output, Protocol, SpliceReport};
use crate::listener::Serves;
use crate::time::Instant;
use std::net::SocketAddr;

/// A role's answers to stream events. Defaults are for roles that never see
/// the event (they close what they are handed rather than leak it).
pub(crate) trait Role {
    /// An app connected to a listener this role serves. The role either
    /// adopts the stream or closes it.
    fn on_accept(
        &mut self,
        ctx: &mut Ctx,
        _now: Instant,
        _listener: ListenerId,
        stream: StreamId,
        _source: SocketAddr,
    ) {
        ctx.emit(Output::Close { stream, how: Close::Reset });
    }

    /// A peer opened a stream of this role's protocol to us. The role either
    /// adopts it or closes it.
    fn on_inbound(&mut self, ctx: &mut Ctx, _now: Instant, stream: StreamId, _peer: PeerId) {
        ctx.emit(Output::Close { stream, how: Close::Reset });
    }

    /// Bytes arrived on one of this role's streams.
    fn on_data(&mut self, ctx: &mut Ctx, now: Instant, stream: StreamId, data: &[u8]);

    /// The far side finished or reset one of this role's streams.
    fn on_closed(&mut self, ctx: &mut Ctx, now: Instant, stream: StreamId, how: Close);

    /// A stream this role asked for (`Output::OpenStream`) is open.
    fn on_stream_opened(&mut self, ctx: &mut Ctx, _now: Instant, stream: StreamId) {
        ctx.emit(Output::Close { stream, how: Close::Reset });
    }

    /// A stream this role asked for could not be opened.
    fn on_stream_refused(&mut self, _ctx: &mut Ctx, _now: Instant, _stream: StreamId) {}

    /// A splice this role started (`a` is its first stream) ended.
    fn on_splice_ended(
        &mut self,
        _ctx: &mut Ctx,
        _now: Instant,
        _a: StreamId,
        _report: SpliceReport,
    ) {
    }

    /// One of this role's timers (a key whose [`TimerKey::owner`] names this
    /// role) is due.
    fn on_timer(&mut self, _ctx: &mut Ctx, _now: Instant, _key: TimerKey) {}
}

/// The roles a node plays, as its config says; each is `None` if it does not.
#[derive(Debug)]
pub(crate) struct Roles {
    /// Listeners' sessions, exit choice.
    pub(crate) client: Option<ClientRole>,
    /// Proxy sessions for clients.
    pub(crate) exit: Option<ExitRole>,
    /// Admission, tickets, the directory.
    pub(crate) hub: Option<HubRole>,
    /// This node's links to its hubs.
    pub(crate) links: Option<HubLinks>,
    /// Public HTTP requests routed to agents.
    pub(crate) gateway: Option<GatewayRole>,
    /// Gateways' ingress streams to this node's services.
    pub(crate) agent: Option<AgentRole>,
}

impl Roles {
    /// The role that holds streams tagged `owner`, if this node plays it.
    pub(crate) fn get(&mut self, owner: Owner) -> Option<&mut dyn Role> {
        match owner {
            Owner::Client => self.client.as_mut().map(|r| r as &mut dyn Role),
            Owner::Exit => self.exit.as_mut().map(|r| r as &mut dyn Role),
            Owner::Hub => self.hub.as_mut().map(|r| r as &mut dyn Role),
            Owner::HubLink => self.links.as_mut().map(|r| r as &mut dyn Role),
            Owner::Gateway => self.gateway.as_mut().map(|r| r as &mut dyn Role),
            Owner::Agent => self.agent.as_mut().map(|r| r as &mut dyn Role),
        }
    }

    /// The role that serves a listener's app connections.
    pub(crate) fn for_listener(serves: Serves) -> Owner {
        match serves {
            Serves::Proxy => Owner::Client,
            // The driver speaks HTTP on these itself and hands the gateway
            // requests, not connections; an `AppAccepted` there is closed.
            Serves::Ingress(_) => Owner::Gateway,
        }
    }

    /// The role that serves streams peers open with `protocol`.
    pub(crate) fn for_protocol(protocol: Protocol) -> Owner {
        match protocol {
            Protocol::Proxy => Owner::Exit,
            Protocol::Hub => Owner::Hub,
            Protocol::Ingress => Owner::Agent,
        }
    }
}

impl Role for ClientRole {
    fn on_accept(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        listener: ListenerId,
        stream: StreamId,
        source: SocketAddr,
    ) {
        ClientRole::on_accept(self, ctx, now, listener, stream, source);
    }

    fn on_data(&mut self, ctx: &mut Ctx, now: Instant, stream: StreamId, data: &[u8]) {
        ClientRole::on_data(self, ctx, now, stream, data);
    }

    fn on_closed(&mut self, ctx: &mut Ctx, now: Instant, stream: StreamId, how: Close) {
        ClientRole::on_closed(self, ctx, now, stream, how);
    }

    fn on_stream_opened(&mut self, ctx: &mut Ctx, now: Instant, stream: StreamId) {
        ClientRole::on_stream_opened(self, ctx, now, stream);
    }

    fn on_stream_refused(&mut self, ctx: &mut Ctx, now: Instant, stream: StreamId) {
        ClientRole::on_stream_refused(self, ctx, now, stream);
    }

    fn on_splice_ended(&mut self, ctx: &mut Ctx, _now: Instant, a: StreamId, report: SpliceReport) {
        ClientRole::on_splice_ended(self, ctx, a, report);
    }

    fn on_timer(&mut self, ctx: &mut Ctx, now: Instant, key: TimerKey) {
        if let TimerKey::ClientSession(app) = key {
            self.on_deadline(ctx, now, app);
        }
    }
}

impl Role for ExitRole {
    fn on_inbound(&mut self, ctx: &mut Ctx, now: Instant, stream: StreamId, peer: PeerId) {
        ExitRole::on_inbound(self, ctx, now, stream, peer);
    }

    fn on_data(&mut self, ctx: &mut Ctx, now: Instant, stream: StreamId, data: &[u8]) {
        ExitRole::on_data(self, ctx, now, stream, data);
    }

    fn on_closed(&mut self, ctx: &mut Ctx, _now: Instant, stream: StreamId, how: Close) {
        ExitRole::on_closed(self, ctx, stream, how);
    }

    fn on_splice_ended(&mut self, ctx: &mut Ctx, _now: Instant, a: StreamId, report: SpliceReport) {
        ExitRole::on_splice_ended(self, ctx, a, report);
    }

    fn on_timer(&mut self, ctx: &mut Ctx, now: Instant, key: TimerKey) {
        if let TimerKey::ExitSession(stream) = key {
            self.on_deadline(ctx, now, stream);
        }
    }
}

impl Role for AgentRole {
    fn on_inbound(&mut self, ctx: &mut Ctx, now: Instant, stream: StreamId, peer: PeerId) {
        AgentRole::on_inbound(self, ctx, now, stream, peer);
    }

    fn on_data(&mut self, ctx: &mut Ctx, now: Instant, stream: StreamId, data: &[u8]) {
        AgentRole::on_data(self, ctx, now, stream, data);
    }

    fn on_closed(&mut self, ctx: &mut Ctx, _now: Instant, stream: StreamId, how: Close) {
        AgentRole::on_closed(self, ctx, stream, how);
    }

    fn on_splice_ended(&mut self, ctx: &mut Ctx, _now: Instant, a: StreamId, report: SpliceReport) {
        AgentRole::on_splice_ended(self, ctx, a, report);
    }

    fn on_timer(&mut self, ctx: &mut Ctx, now: Instant, key: TimerKey) {
        if let TimerKey::AgentStream(stream) = key {
            self.on_deadline(ctx, now, stream);
        }
    }
}

impl Role for HubRole {
    fn on_inbound(&mut self, ctx: &mut Ctx, now: Instant, stream: StreamId, peer: PeerId) {
        HubRole::on_inbound(self, ctx, now, stream, peer);
    }

    fn on_data(&mut self, ctx: &mut Ctx, now: Instant, stream: StreamId, data: &[u8]) {
        HubRole::on_data(self, ctx, now, stream, data);
    }

    fn on_closed(&mut self, ctx: &mut Ctx, _now: Instant, stream: StreamId, how: Close) {
        HubRole::on_closed(self, ctx, stream, how);
    }

    fn on_timer(&mut self, ctx: &mut Ctx, now: Instant, key: TimerKey) {
        match key {
            TimerKey::HubPeer(stream) => self.on_auth_deadline(ctx, stream),
            TimerKey::DirectoryExpiry => self.on_expiry(ctx, now),
            _ => {}
        }
    }
}

impl Role for HubLinks {
    fn on_data(&mut self, ctx: &mut Ctx, now: Instant, stream: StreamId, data: &[u8]) {
        HubLinks::on_data(self, ctx, now, stream, data);
    }

    fn on_closed(&mut self, ctx: &mut Ctx, now: Instant, stream: StreamId, how: Close) {
        HubLinks::on_closed(self, ctx, now, stream, how);
    }

    fn on_stream_opened(&mut self, _ctx: &mut Ctx, _now: Instant, stream: StreamId) {
        HubLinks::on_stream_opened(self, stream);
    }

    fn on_stream_refused(&mut self, ctx: &mut Ctx, now: Instant, stream: StreamId) {
        HubLinks::on_stream_refused(self, ctx, now, stream);
    }

    fn on_timer(&mut self, ctx: &mut Ctx, now: Instant, key: TimerKey) {
        if let TimerKey::HubLink(i) = key {
            HubLinks::on_timer(self, ctx, now, i);
        }
    }
}

impl Role for GatewayRole {
    fn on_data(&mut self, ctx: &mut Ctx, now: Instant, stream: StreamId, data: &[u8]) {
        GatewayRole::on_data(self, ctx, now, stream, data);
    }

    fn on_closed(&mut self, ctx: &mut Ctx, now: Instant, stream: StreamId, _how: Close) {
        GatewayRole::on_closed(self, ctx, now, stream);
    }

    fn on_stream_opened(&mut self, ctx: &mut Ctx, now: Instant, stream: StreamId) {
        GatewayRole::on_stream_opened(self, ctx, now, stream);
    }

    fn on_stream_refused(&mut self, ctx: &mut Ctx, now: Instant, stream: StreamId) {
        GatewayRole::on_stream_refused(self, ctx, now, stream);
    }

    fn on_timer(&mut self, ctx: &mut Ctx, now: Instant, key: TimerKey) {
        if let TimerKey::IngressRequest(request) = key {
            self.on_deadline(ctx, now, request);
        }
    }
}
