//! The exits the client knows of (from the hubs' listings), how it picks
//! one for an attempt, and when it asks the hubs again.

use crate::ctx::{Ctx, Route};
use crate::ids::{PeerId, StreamId};
use crate::io::FailReason;
use crate::record::PeerRecord;
use crate::selection::breaker::CircuitBreaker;
use crate::selection::latency::{pick_two, Ewma};
use crate::time::Instant;
use bytes::Bytes;
use core::time::Duration;
use std::collections::BTreeSet;

use super::{ClientRole, DIRECT_RETRY, MIN_REFRESH, MIN_WAIT, NO_EXIT_WAIT, UNMEASURED_LATENCY};

#[derive(Debug)]
pub(super) struct KnownExit {
    pub(super) record: PeerRecord,
    pub(super) seen: Instant,
    pub(super) failures: u32,
    pub(super) retry_at: Instant,
    pub(super) breaker: CircuitBreaker,
    pub(super) latency: Ewma,
    pub(super) active: u32,
    /// Hubs whose relay reaches the exit, each as that hub itself said.
    pub(super) relays: BTreeSet<PeerId>,
    /// When a direct dial to the exit last failed.
    pub(super) direct_failed: Option<Instant>,
    /// Hubs that listed it (their tickets are the ones it most likely takes).
    pub(super) listed_by: BTreeSet<PeerId>,
}

/// Why no attempt starts right now.
pub(super) enum Pick {
    Exit(PeerId),
    /// Wait until this instant (or until new exits arrive).
    Wait(Instant),
    Fail(FailReason),
}

impl ClientRole {
    pub(crate) fn wants_refresh(&self, now: Instant) -> bool {
        !self.finding(now)
    }

    /// Whether a `Find` is out and may still be answered.
    pub(super) fn finding(&self, now: Instant) -> bool {
        self.finds_pending > 0 && now < self.finds_deadline
    }

    /// How to dial `exit`, or `None` if there is no way this session may use.
    pub(super) fn route(&self, exit: PeerId, relayed: bool, now: Instant) -> Option<Route> {
        let e = self.exits.get(&exit)?;
        let has_addrs = !e.record.addrs.is_empty();
        let direct_failed_lately =
            e.direct_failed.is_some_and(|at| now.saturating_duration_since(at) < DIRECT_RETRY);
        let relay = e.relays.iter().next().copied().filter(|_| relayed);
        match (has_addrs, direct_failed_lately, relay) {
            (true, false, _) => Some(Route::Direct),
            (_, _, Some(hub)) => Some(Route::Via(hub)),
            (true, true, None) => Some(Route::Direct),
            (false, _, None) => None,
        }
    }

    /// Chooses the exit for the session's next attempt.
    pub(super) fn pick(&mut self, ctx: &mut Ctx, now: Instant, app: StreamId) -> Pick {
        let Some(s) = self.sessions.get(&app) else { return Pick::Fail(FailReason::AppClosed) };
        let Some(req) = &s.req else { return Pick::Fail(FailReason::Handshake) };
        let fallback = s.settings.fallback;
        let listing_known = self.refreshed.is_some();
        // No exit serves a client without a ticket: wait a little for one
        // (admission may be under way) before giving up.
        if !self.wallet.any_usable(now) {
            let waited =
                s.waiting_since.map_or(Duration::ZERO, |w| now.saturating_duration_since(w));
            if waited < NO_EXIT_WAIT {
                return Pick::Wait(s.waiting_since.unwrap_or(now) + NO_EXIT_WAIT);
            }
            return Pick::Fail(FailReason::NotAdmitted);
        }

        if let Some(key) = &req.sticky {
            if let Some(pinned) = self.sticky.get(key, now) {
                let usable = self.exits.get_mut(&pinned).is_some_and(|e| {
                    req.filter.matches(&e.record.attrs)
                        && e.retry_at <= now
                        && e.breaker.allows(now)
                });
                if usable && !s.tried.contains(&pinned) {
                    return Pick::Exit(pinned);
                }
                if !fallback {
                    let unknown = !self.exits.contains_key(&pinned);
                    if unknown && (!listing_known || self.finding(now)) {
                        return Pick::Wait(s.budget_end);
                    }
                    return Pick::Fail(FailReason::StickyUnavailable);
                }
            }
        }
        let mut candidates = Vec::new();
        let mut next_retry = None::<Instant>;
        let relayed = s.settings.relayed;
        let unmeasured = average_latency(self.exits.values()).unwrap_or(UNMEASURED_LATENCY);
        for (peer, e) in &self.exits {
            if s.tried.contains(peer) || !req.filter.matches(&e.record.attrs) {
                continue;
            }
            // A listener that refuses relayed paths can use only exits it can
            // reach directly (by address, or over a hole-punched connection).
            let reachable = !e.record.addrs.is_empty()
                || (relayed && !e.relays.is_empty())
                || ctx.usable_conn(*peer, now, relayed, self.circuit_margin).is_some();
            if !reachable {
                continue;
            }
            // Full for us: try the others, or wait for a session there to end.
            if e.active as usize >= ctx.limits.max_sessions_per_exit {
                next_retry = Some(next_retry.map_or(now + MIN_WAIT, |n| n.min(now + MIN_WAIT)));
                continue;
            }
            let reopens = e.breaker.reopens_at().filter(|&at| at > now);
            if e.retry_at > now || reopens.is_some() {
                let at = e.retry_at.max(reopens.unwrap_or(Instant::ZERO));
                next_retry = Some(next_retry.map_or(at, |n| n.min(at)));
                continue;
            }
            let latency = e.latency.get().unwrap_or(unmeasured);
            let score = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
            candidates.push((*peer, score.saturating_mul(u64::from(e.active) + 1)));
        }
        // A half-open exit admits only its probes: skip it if they are out.
        while let Some(&(exit, score)) = pick_two(&candidates, &mut ctx.rng, |c| c.1) {
            if self.exits.get_mut(&exit).is_some_and(|e| e.breaker.allows(now)) {
                return Pick::Exit(exit);
            }
            candidates.retain(|c| *c != (exit, score));
        }
        // Exits may simply not have registered yet (the mesh is starting, or
        // recovering): wait a little, refreshing the list, before giving up.
        let waited = s.waiting_since.map_or(Duration::ZERO, |w| now.saturating_duration_since(w));
        if !listing_known || self.finding(now) || waited < NO_EXIT_WAIT {
            let until = s.waiting_since.unwrap_or(now) + NO_EXIT_WAIT;
            return Pick::Wait(match next_retry {
                Some(at) => at.min(until),
                None => until,
            });
        }
        match next_retry {
            Some(at) => Pick::Wait(at),
            None if s.attempts > 0 => Pick::Fail(FailReason::ExitFailed),
            None => Pick::Fail(FailReason::NoExit),
        }
    }

    /// An attempt ended without a verdict on the exit (the app left).
    pub(super) fn attempt_abandoned(&mut self, exit: PeerId) {
        if let Some(e) = self.exits.get_mut(&exit) {
            e.active = e.active.saturating_sub(1);
            e.breaker.on_cancelled();
        }
    }

    /// A hub answered `Find`: merge the exits and wake sessions that wait.
    pub(crate) fn on_peers(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        hub: PeerId,
        peers: Vec<PeerRecord>,
    ) {
        self.finds_pending = self.finds_pending.saturating_sub(1);
        self.refreshed = Some(now);
        self.stale = false;
        let breaker = self.config.selection.breaker;
        let alpha = self.config.selection.latency_alpha;
        let mut gained_relay = Vec::new();
        for record in peers {
            let peer = record.peer;
            let e = self.exits.entry(peer).or_insert_with(|| KnownExit {
                record: record.clone(),
                seen: now,
                failures: 0,
                retry_at: Instant::ZERO,
                breaker: CircuitBreaker::new(breaker),
                latency: Ewma::new(alpha),
                active: 0,
                relays: BTreeSet::new(),
                direct_failed: None,
                listed_by: BTreeSet::new(),
            });
            e.listed_by.insert(hub);
            // Each hub speaks only for its own relay: another hub's answer
            // neither adds nor removes it.
            if record.relays.contains(&hub) {
                // A new way to reach it: earlier failures (a direct dial to a
                // NATed exit) say nothing about this one.
                if e.relays.insert(hub) && e.relays.len() == 1 {
                    e.retry_at = now;
                    e.failures = 0;
                    e.breaker = CircuitBreaker::new(breaker);
                    gained_relay.push(peer);
                }
            } else {
                e.relays.remove(&hub);
            }
            e.record = record;
            e.seen = now;
        }
        for s in self.sessions.values_mut() {
            s.tried.retain(|p| !gained_relay.contains(p));
        }
        // Exits no hub has listed for three refreshes are gone.
        let stale = self.config.selection.refresh * 3;
        self.exits.retain(|_, e| e.active > 0 || now.saturating_duration_since(e.seen) < stale);
        self.wake_waiting(ctx, now);
    }

    /// A hub handed us a ticket: keep it, and wake sessions that waited for one.
    pub(crate) fn on_ticket(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        hub: PeerId,
        ticket: Bytes,
        until: Instant,
    ) {
        let had = self.wallet.any_usable(now);
        self.wallet.hold(hub, ticket, until);
        if !had {
            self.wake_waiting(ctx, now);
        }
    }

    /// A hub request was lost with its link.
    pub(crate) fn on_link_lost(&mut self, ctx: &mut Ctx, now: Instant) {
        if self.finds_pending > 0 {
            self.finds_pending -= 1;
            if self.finds_pending == 0 {
                self.wake_waiting(ctx, now);
            }
        }
    }

    pub(super) fn wake_waiting(&mut self, ctx: &mut Ctx, now: Instant) {
        let waiting: Vec<StreamId> = self.waiting.iter().copied().collect();
        for app in waiting {
            self.attempt(ctx, now, app);
        }
    }

    /// Records that `n` hubs were asked for exits.
    pub(crate) fn finds_sent(&mut self, ctx: &Ctx, now: Instant, n: usize) {
        self.finds_pending = n;
        self.finds_deadline = now + ctx.timeouts.hub_request;
        self.stale = false;
    }

    /// When sessions that wait for an exit want the list fetched again.
    pub(crate) fn refresh_due(&self, now: Instant) -> Option<Instant> {
        if (self.waiting.is_empty() && !self.stale) || self.finding(now) {
            return None;
        }
        // Never at or before `now`: if the refresh cannot go out yet (no hub
        // link is up), time must pass before trying again — a stale record
        // alone is worth one try a second, waiting sessions more.
        let soonest = if self.waiting.is_empty() { MIN_REFRESH } else { MIN_WAIT };
        Some(self.refreshed.map_or(now, |at| at + MIN_REFRESH).max(now + soonest))
    }

    /// Whether the exit list should be fetched now: none was ever fetched, or
    /// sessions wait and the last fetch is not brand new (so waiting sessions
    /// cannot turn into a storm of `Find`s).
    pub(crate) fn needs_exits(&self, now: Instant) -> bool {
        !self.finding(now)
            && match self.refreshed {
                None => true,
                Some(at) => {
                    (!self.waiting.is_empty() || self.stale)
                        && now.saturating_duration_since(at) >= MIN_REFRESH
                }
            }
    }
}

/// The mean of the exits' measured latencies, if any is measured.
pub(super) fn average_latency<'a>(exits: impl Iterator<Item = &'a KnownExit>) -> Option<Duration> {
    let (sum, n) = exits
        .filter_map(|e| e.latency.get())
        .fold((Duration::ZERO, 0u32), |(sum, n), l| (sum.saturating_add(l), n + 1));
    (n > 0).then(|| sum / n)
}
