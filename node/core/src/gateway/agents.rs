//! The agents a gateway knows: what the hubs list in role `agent`, whether
//! each is available now, and how to reach it.
//!
//! An agent is **available** while at least one hub lists it and it has not
//! dropped off since: when the gateway's last connection to it goes down, or
//! a dial to it fails, it is unavailable at once, and only a listing that
//! arrives later (or a new connection) brings it back. So a request is never
//! sent to an agent the gateway has seen disconnect, and a dead agent costs
//! at most one failed attempt before every gateway stops choosing it.

use crate::agent::ingress_agent;
use crate::ctx::Route;
use crate::ids::PeerId;
use crate::ingress::Agent;
use crate::record::PeerRecord;
use crate::time::Instant;
use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet};

/// A direct dial that failed is not tried again for this long while the
/// agent has a relay to try instead (the agent may have moved behind NAT).
const DIRECT_RETRY: Duration = Duration::from_secs(30);

/// What the gateway knows of one agent.
#[derive(Clone, Debug)]
struct Known {
    record: PeerRecord,
    labels: BTreeMap<String, String>,
    services: Vec<String>,
    /// The hubs whose last listing named it.
    listed_by: BTreeSet<PeerId>,
    /// When it last dropped off (disconnect, failed dial); a listing that
    /// arrives later clears it.
    down_since: Option<Instant>,
    /// When a direct dial last failed.
    direct_failed: Option<Instant>,
    /// Requests in flight to it from this gateway.
    active: u32,
}

/// The gateway's agent table, bounded by what the hubs list (each answers
/// at most `wire::hub::MAX_PEERS` records per `Find`).
#[derive(Debug, Default)]
pub(crate) struct Agents {
    known: BTreeMap<PeerId, Known>,
}

impl Agents {
    /// A hub's answer to a `Find` for agents: the agents it lists now. One it
    /// listed before and not now is no longer listed by it (dropped when no
    /// hub lists it).
    pub(crate) fn on_listing(&mut self, now: Instant, hub: PeerId, records: Vec<PeerRecord>) {
        let listed: BTreeSet<PeerId> = records.iter().map(|r| r.peer).collect();
        for k in self.known.values_mut() {
            if !listed.contains(&k.record.peer) {
                k.listed_by.remove(&hub);
            }
        }
        // An agent with requests in flight stays known until they end, so
        // their counts stay right; it is not chosen while no hub lists it.
        self.known.retain(|_, k| !k.listed_by.is_empty() || k.active > 0);
        for record in records {
            let Some(Agent { labels, services, .. }) = ingress_agent(&record) else { continue };
            let k = self.known.entry(record.peer).or_insert_with(|| Known {
                record: record.clone(),
                labels: BTreeMap::new(),
                services: Vec::new(),
                listed_by: BTreeSet::new(),
                down_since: None,
                direct_failed: None,
                active: 0,
            });
            k.record = record;
            k.labels = labels;
            k.services = services;
            k.listed_by.insert(hub);
            if k.down_since.is_some_and(|at| at < now) {
                k.down_since = None;
            }
        }
    }

    /// How many agents the gateway knows (listed, or with requests in flight).
    pub(crate) fn len(&self) -> usize {
        self.known.len()
    }

    /// The table as the router's balancer sees it.
    pub(crate) fn view(&self, limit: usize) -> Vec<Agent> {
        self.known
            .values()
            .map(|k| Agent {
                id: k.record.peer,
                labels: k.labels.clone(),
                services: k.services.clone(),
                available: !k.listed_by.is_empty()
                    && k.down_since.is_none()
                    && (k.active as usize) < limit,
                active: k.active,
            })
            .collect()
    }

    /// The gateway's last connection to `agent` went down, or a dial to it
    /// failed: unavailable until a later listing or connection.
    pub(crate) fn on_down(&mut self, now: Instant, agent: PeerId) {
        if let Some(k) = self.known.get_mut(&agent) {
            k.down_since = Some(now);
        }
    }

    /// A connection to `agent` is up.
    pub(crate) fn on_up(&mut self, agent: PeerId) {
        if let Some(k) = self.known.get_mut(&agent) {
            k.down_since = None;
        }
    }

    /// A direct dial to `agent` failed; its relays are tried next.
    pub(crate) fn on_direct_failed(&mut self, now: Instant, agent: PeerId) {
        if let Some(k) = self.known.get_mut(&agent) {
            k.direct_failed = Some(now);
        }
    }

    /// A dial through `hub`'s relay failed: that relay is not tried again
    /// until a listing names it anew.
    pub(crate) fn on_relay_failed(&mut self, agent: PeerId, hub: PeerId) {
        if let Some(k) = self.known.get_mut(&agent) {
            k.record.relays.retain(|r| *r != hub);
        }
    }

    /// How to dial `agent`: directly while it lists addresses and no direct
    /// dial failed lately, else through a relay it holds a reservation at.
    pub(crate) fn route(&self, agent: PeerId, now: Instant) -> Option<(Route, &PeerRecord)> {
        let k = self.known.get(&agent)?;
        let has_addrs = !k.record.addrs.is_empty();
        let failed_lately =
            k.direct_failed.is_some_and(|at| now.saturating_duration_since(at) < DIRECT_RETRY);
        let relay = k.record.relays.first().copied();
        let route = match (has_addrs, failed_lately, relay) {
            (true, false, _) | (true, true, None) => Route::Direct,
            (_, _, Some(hub)) => Route::Via(hub),
            (false, _, None) => return None,
        };
        Some((route, &k.record))
    }

    /// One more request in flight to `agent`.
    pub(crate) fn start(&mut self, agent: PeerId) {
        if let Some(k) = self.known.get_mut(&agent) {
            k.active += 1;
        }
    }

    /// One request in flight to `agent` ended (or its attempt failed).
    pub(crate) fn finish(&mut self, agent: PeerId) {
        if let Some(k) = self.known.get_mut(&agent) {
            k.active = k.active.saturating_sub(1);
            if k.active == 0 && k.listed_by.is_empty() {
                self.known.remove(&agent);
            }
        }
    }
}
