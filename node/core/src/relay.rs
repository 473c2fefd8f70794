//! Relay policy: reservations at hubs (so that a node behind NAT can be
//! dialed through them) and hole punching (so that relayed connections become
//! direct ones).
//!
//! ```text
//! reservation, per hub:  Idle ──Reserve──▶ Requested ──accepted──▶ Held ──(¾ of expiry)──▶ renew
//!                          ▲                   │ failed                │ lost / expired
//!                          └──── Backoff ◀─────┴───────────────────────┘ (retry after a seeded delay)
//! hole punching, per peer with a relayed connection we accepted:
//!                        Punching ──failed / timeout──▶ Waiting ──(backoff)──▶ Punching
//!                            └── a direct connection appears, or the relayed ones are gone: done
//! ```
//! A node reserves while it cannot be dialed directly ([`RelayMode::Auto`]
//! with [`Reachability::Private`]) or always ([`RelayMode::Always`]); a
//! reservation that is lost — the hub restarted, the connection to it broke,
//! a renewal was refused — is made again on the backoff, without waiting for
//! anyone to notice that the node became unreachable.

use crate::config::{RelayConfig, RelayMode};
use crate::ctx::{Ctx, TimerKey};
use crate::ids::PeerId;
use crate::io::{Event, Output, Reachability};
use crate::time::Instant;
use core::time::Duration;
use std::collections::{BTreeMap, VecDeque};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reservation {
    /// Not wanted (or not yet asked for).
    Idle,
    /// Asked for; no answer yet.
    Requested { failures: u32 },
    /// Granted. `renewing`: a renewal is out and the reservation ends at the
    /// timer unless it is accepted.
    Held { expires: Option<Instant>, renewing: bool },
    /// Failed or lost: asked for again at the timer.
    Backoff { failures: u32 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Punch {
    /// An attempt is out; its deadline is the timer.
    Punching { attempt: u32 },
    /// The last attempt failed; the next one starts at the timer.
    Waiting { attempt: u32 },
}

/// A reservation change the hub links must learn (to register as relayed or not).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RelayedAt {
    pub(crate) hub: PeerId,
    pub(crate) relayed: bool,
}

/// Reservations at this node's hubs and hole punching towards its peers.
#[derive(Debug)]
pub(crate) struct Relay {
    config: RelayConfig,
    mode: RelayMode,
    reachability: Reachability,
    hubs: Vec<(PeerId, Reservation)>,
    punches: BTreeMap<PeerId, Punch>,
    /// Reservation changes not yet passed on ([`Relay::poll_event`]).
    events: VecDeque<RelayedAt>,
}

impl Relay {
    /// `mode` is `None` for nodes that do not serve as exits: they never reserve.
    pub(crate) fn new(config: RelayConfig, mode: Option<RelayMode>, hubs: &[PeerId]) -> Relay {
        Relay {
            config,
            mode: mode.unwrap_or(RelayMode::Off),
            reachability: Reachability::Unknown,
            hubs: hubs.iter().map(|h| (*h, Reservation::Idle)).collect(),
            punches: BTreeMap::new(),
            events: VecDeque::new(),
        }
    }

    /// The next reservation change the hub links must learn of; `Node`
    /// drains these after every step.
    pub(crate) fn poll_event(&mut self) -> Option<RelayedAt> {
        self.events.pop_front()
    }

    /// Whether reservations are wanted right now.
    fn wants_reservations(&self) -> bool {
        match self.mode {
            RelayMode::Always => true,
            RelayMode::Auto => self.reachability == Reachability::Private,
            RelayMode::Off => false,
        }
    }

    /// Whether direct addresses are worth registering: not while this node
    /// knows it cannot be dialed directly and clients can come through a relay.
    pub(crate) fn hide_addrs(&self) -> bool {
        self.mode != RelayMode::Off && self.reachability == Reachability::Private
    }

    /// How many reservations are held right now.
    pub(crate) fn held(&self) -> usize {
        self.hubs.iter().filter(|(_, r)| matches!(r, Reservation::Held { .. })).count()
    }

    /// Where the reservation at `hub` stands, for the operator's status view.
    pub(crate) fn reservation_at(&self, hub: PeerId) -> crate::status::ReservationState {
        use crate::status::ReservationState as S;
        match self.hubs.iter().find(|(h, _)| *h == hub).map(|(_, r)| r) {
            None | Some(Reservation::Idle) => S::None,
            Some(Reservation::Requested { .. }) => S::Requested,
            Some(Reservation::Held { .. }) => S::Held,
            Some(Reservation::Backoff { .. }) => S::Backoff,
        }
    }

    /// How reachable this node is, as last reported.
    pub(crate) fn reachability(&self) -> Reachability {
        self.reachability
    }

    /// Starts (or stops) reserving as the mode and reachability say.
    pub(crate) fn start(&mut self, ctx: &mut Ctx) {
        let wanted = self.wants_reservations();
        for i in 0..self.hubs.len() {
            let (hub, state) = self.hubs[i];
            match (wanted, state) {
                (true, Reservation::Idle) => {
                    self.hubs[i].1 = Reservation::Requested { failures: 0 };
                    ctx.emit(Output::Reserve { hub });
                }
                (false, Reservation::Idle) => {}
                (false, state) => {
                    self.hubs[i].1 = Reservation::Idle;
                    ctx.timers.cancel(TimerKey::Reservation(i));
                    ctx.emit(Output::Unreserve { hub });
                    if matches!(state, Reservation::Held { .. }) {
                        self.events.push_back(RelayedAt { hub, relayed: false });
                    }
                }
                (true, _) => {}
            }
        }
    }

    /// This node learned whether it is directly reachable.
    pub(crate) fn on_reachability(&mut self, ctx: &mut Ctx, r: Reachability) {
        self.reachability = r;
        self.start(ctx);
    }

    fn index(&self, hub: PeerId) -> Option<usize> {
        self.hubs.iter().position(|(h, _)| *h == hub)
    }

    pub(crate) fn on_accepted(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        hub: PeerId,
        expires_in: Option<Duration>,
    ) {
        let Some(i) = self.index(hub) else { return };
        let was_held = matches!(self.hubs[i].1, Reservation::Held { .. });
        if matches!(self.hubs[i].1, Reservation::Idle) {
            // Answer to a reservation we gave up meanwhile: let it go.
            ctx.emit(Output::Unreserve { hub });
            return;
        }
        let expires = expires_in.map(|d| now + d);
        self.hubs[i].1 = Reservation::Held { expires, renewing: false };
        match expires_in {
            // Renew with a quarter of the lifetime left: one slow answer never
            // lets the reservation lapse.
            Some(d) => ctx.timers.set(TimerKey::Reservation(i), now + d.mul_f64(0.75)),
            None => ctx.timers.cancel(TimerKey::Reservation(i)),
        }
        if !was_held {
            ctx.event(Event::ReservationAccepted { hub });
            self.events.push_back(RelayedAt { hub, relayed: true });
        }
    }

    /// A reservation request failed, or a held reservation is gone.
    pub(crate) fn on_failed(&mut self, ctx: &mut Ctx, now: Instant, hub: PeerId) {
        let Some(i) = self.index(hub) else { return };
        let failures = match self.hubs[i].1 {
            Reservation::Idle => return,
            Reservation::Requested { failures } | Reservation::Backoff { failures } => failures,
            Reservation::Held { .. } => {
                ctx.event(Event::ReservationLost { hub });
                self.events.push_back(RelayedAt { hub, relayed: false });
                0
            }
        };
        let failures = failures.saturating_add(1);
        self.hubs[i].1 = Reservation::Backoff { failures };
        let delay = self.config.reservation_retry.delay(failures, &mut ctx.rng);
        ctx.timers.set(TimerKey::Reservation(i), now + delay);
    }

    pub(crate) fn on_timer(&mut self, ctx: &mut Ctx, now: Instant, i: usize) {
        let Some(&(hub, state)) = self.hubs.get(i) else { return };
        match state {
            Reservation::Idle | Reservation::Requested { .. } => {}
            Reservation::Backoff { failures } => {
                self.hubs[i].1 = Reservation::Requested { failures };
                ctx.emit(Output::Reserve { hub });
            }
            Reservation::Held { expires, renewing: false } => {
                self.hubs[i].1 = Reservation::Held { expires, renewing: true };
                ctx.emit(Output::Reserve { hub });
                if let Some(end) = expires {
                    ctx.timers.set(TimerKey::Reservation(i), end.max(now));
                }
            }
            // The renewal was not answered before the reservation ran out.
            Reservation::Held { renewing: true, .. } => self.on_failed(ctx, now, hub),
        }
    }

    /// A link to `hub` came up (it answered our challenge): a reservation
    /// there that is waiting out a backoff is asked for at once, with its
    /// failure count reset — the hub is evidently back.
    pub(crate) fn on_hub_ready(&mut self, ctx: &mut Ctx, hub: PeerId) {
        let Some(i) = self.index(hub) else { return };
        if matches!(self.hubs[i].1, Reservation::Backoff { .. }) {
            self.hubs[i].1 = Reservation::Requested { failures: 0 };
            ctx.timers.cancel(TimerKey::Reservation(i));
            ctx.emit(Output::Reserve { hub });
        }
    }

    /// A connection to `peer` came up. `accepted_relayed`: it is a relayed
    /// connection we did not dial, so (like DCUtR's listener side) we start
    /// hole punching.
    pub(crate) fn on_connected(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        peer: PeerId,
        accepted_relayed: bool,
        direct: bool,
    ) {
        if direct {
            if self.punches.remove(&peer).is_some() {
                ctx.timers.cancel(TimerKey::HolePunch(peer));
                ctx.event(Event::HolePunch { peer, ok: true });
            }
            return;
        }
        if accepted_relayed && !ctx.has_direct(peer) && !self.punches.contains_key(&peer) {
            self.punch(ctx, now, peer, 0);
        }
    }

    fn punch(&mut self, ctx: &mut Ctx, now: Instant, peer: PeerId, attempt: u32) {
        self.punches.insert(peer, Punch::Punching { attempt });
        ctx.emit(Output::HolePunch { peer });
        ctx.timers.set(TimerKey::HolePunch(peer), now + self.config.hole_punch_timeout);
    }

    /// A hole-punch attempt failed (or timed out): try again later while the
    /// relayed connection lives.
    pub(crate) fn on_punch_failed(&mut self, ctx: &mut Ctx, now: Instant, peer: PeerId) {
        let Some(Punch::Punching { attempt }) = self.punches.get(&peer).copied() else { return };
        ctx.event(Event::HolePunch { peer, ok: false });
        if !ctx.has_relayed(peer) || ctx.has_direct(peer) {
            self.forget(ctx, peer);
            return;
        }
        let attempt = attempt.saturating_add(1);
        self.punches.insert(peer, Punch::Waiting { attempt });
        let delay = self.config.hole_punch_retry.delay(attempt, &mut ctx.rng);
        ctx.timers.set(TimerKey::HolePunch(peer), now + delay);
    }

    pub(crate) fn on_punch_timer(&mut self, ctx: &mut Ctx, now: Instant, peer: PeerId) {
        match self.punches.get(&peer).copied() {
            Some(Punch::Punching { .. }) => self.on_punch_failed(ctx, now, peer),
            Some(Punch::Waiting { attempt }) => {
                if ctx.has_relayed(peer) && !ctx.has_direct(peer) {
                    self.punch(ctx, now, peer, attempt);
                } else {
                    self.forget(ctx, peer);
                }
            }
            None => {}
        }
    }

    /// A connection to `peer` went down: stop punching once no relayed one is left.
    pub(crate) fn on_disconnected(&mut self, ctx: &mut Ctx, peer: PeerId) {
        if !ctx.has_relayed(peer) {
            self.forget(ctx, peer);
        }
    }

    fn forget(&mut self, ctx: &mut Ctx, peer: PeerId) {
        if self.punches.remove(&peer).is_some() {
            ctx.timers.cancel(TimerKey::HolePunch(peer));
        }
    }
}
