//! The client's part of the operator's status view ([`crate::status`]), read
//! from the tables the client decides with.

use super::ClientRole;
use crate::ctx::Ctx;
use crate::ids::ListenerId;
use crate::status::{ExitStatus, ListenerStatus, PinStatus};
use crate::time::Instant;

impl ClientRole {
    /// The exits known, by peer id.
    pub(crate) fn exit_statuses(&self, ctx: &Ctx) -> Vec<ExitStatus> {
        self.exits
            .iter()
            .map(|(peer, e)| ExitStatus {
                peer: *peer,
                connection: ctx.path_to(*peer),
                breaker: e.breaker.state(),
                latency: e.latency.get(),
                sessions: e.active,
                failures: e.failures,
                direct_addrs: e.record.addrs.len(),
                relays: e.relays.iter().copied().collect(),
                country: e.record.attrs.country.map(|c| c.to_string()),
            })
            .collect()
    }

    /// Open sessions on every listener, in config order (idle ones too).
    pub(crate) fn listener_statuses(&self) -> Vec<ListenerStatus> {
        (0..self.listeners.len() as u64)
            .map(ListenerId)
            .map(|listener| ListenerStatus {
                listener,
                sessions: self.per_listener.get(&listener).copied().unwrap_or(0),
            })
            .collect()
    }

    /// The sticky pins, least recently used first.
    pub(crate) fn pin_statuses(&self, now: Instant) -> Vec<PinStatus> {
        self.sticky
            .entries()
            .map(|(key, exit, last_used)| PinStatus {
                listener: key.listener,
                session: key.session.clone(),
                exit,
                idle: now.saturating_duration_since(last_used),
            })
            .collect()
    }
}
