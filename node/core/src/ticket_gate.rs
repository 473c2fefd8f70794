//! [`TicketGate`]: how a serving role (an exit for clients, an agent for
//! gateways) checks the tickets peers present, cheaply and safely enough to
//! do it on every stream.
//!
//! A verified ticket is kept per peer (bounded), so the holder's next
//! streams cost a byte comparison; a peer whose ticket carried a forged
//! signature is refused without another signature check for a while, since
//! forging costs nothing and checking an Ed25519 signature about 50 µs.

use crate::config::HubContact;
use crate::ids::PeerId;
use crate::record::Role;
use crate::ticket::{self, TicketRefusal, CLOCK_SKEW};
use crate::time::Instant;
use bytes::Bytes;
use core::time::Duration;
use std::collections::BTreeMap;

/// Most verified tickets kept (one per peer); beyond it the one that
/// expires first is dropped and its holder verified again next time.
const MAX_VERIFIED_TICKETS: usize = 4096;
/// How long a peer that presented a forged signature is refused without
/// another signature check.
const FORGERY_PENALTY: Duration = Duration::from_secs(1);

/// A ticket this gate verified, kept so the holder's next streams skip the
/// signature check.
#[derive(Debug)]
struct Verified {
    ticket: Bytes,
    /// Unix seconds.
    expires: u64,
}

/// Checks peers' tickets for one role against the node's hubs.
#[derive(Debug)]
pub(crate) struct TicketGate {
    /// The role a ticket must admit.
    role: Role,
    /// The hubs whose tickets count, with their signing keys.
    trusted: Vec<(PeerId, [u8; 32])>,
    verified: BTreeMap<PeerId, Verified>,
    /// Peers whose last ticket carried a forged signature, and until when
    /// their tickets are refused unchecked (bounded like `verified`).
    forgers: BTreeMap<PeerId, Instant>,
    /// Unix time at `Instant::ZERO`.
    wall_clock: Duration,
}

impl TicketGate {
    /// A gate admitting holders of `role` tickets signed by one of `hubs`.
    pub(crate) fn new(role: Role, hubs: &[HubContact], wall_clock: Duration) -> TicketGate {
        TicketGate {
            role,
            trusted: hubs.iter().filter_map(|h| Some((h.peer, h.ticket_key?))).collect(),
            verified: BTreeMap::new(),
            forgers: BTreeMap::new(),
            wall_clock,
        }
    }

    /// Checks `presented` as `peer`'s ticket at `now`.
    pub(crate) fn admit(
        &mut self,
        now: Instant,
        peer: PeerId,
        presented: &Bytes,
    ) -> Result<(), TicketRefusal> {
        let unix_now = (self.wall_clock + Duration::from_micros(now.as_micros())).as_secs();
        let fresh = |v: &Verified| v.expires.saturating_add(CLOCK_SKEW.as_secs()) > unix_now;
        if self.verified.get(&peer).is_some_and(|v| v.ticket == presented && fresh(v)) {
            return Ok(());
        }
        if self.forgers.get(&peer).is_some_and(|&until| until > now) {
            return Err(TicketRefusal::BadSignature);
        }
        let t = match ticket::verify(presented, peer, self.role, unix_now, &self.trusted) {
            Ok(t) => t,
            Err(TicketRefusal::BadSignature) => {
                if self.forgers.len() >= MAX_VERIFIED_TICKETS {
                    self.forgers.retain(|_, until| *until > now);
                }
                if self.forgers.len() < MAX_VERIFIED_TICKETS || self.forgers.contains_key(&peer) {
                    self.forgers.insert(peer, now + FORGERY_PENALTY);
                }
                return Err(TicketRefusal::BadSignature);
            }
            Err(other) => return Err(other),
        };
        self.forgers.remove(&peer);
        if self.verified.len() >= MAX_VERIFIED_TICKETS && !self.verified.contains_key(&peer) {
            let first = self.verified.iter().min_by_key(|(_, v)| v.expires).map(|(p, _)| *p);
            if let Some(first) = first {
                self.verified.remove(&first);
            }
        }
        self.verified.insert(peer, Verified { ticket: presented.clone(), expires: t.expires });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::RoleSet;
    use crate::ticket::{Ticket, TicketSigner};

    const WALL: Duration = Duration::from_secs(1_000_000);

    fn hub() -> PeerId {
        PeerId::from_u64(1)
    }

    fn signer() -> TicketSigner {
        TicketSigner::from_secret([3; 32])
    }

    fn gate(role: Role) -> TicketGate {
        let contact =
            HubContact { peer: hub(), addrs: Vec::new(), ticket_key: Some(signer().public()) };
        TicketGate::new(role, &[contact], WALL)
    }

    fn ticket(signer: &TicketSigner, holder: PeerId, roles: RoleSet) -> Bytes {
        let t = Ticket { hub: hub(), holder, roles, expires: WALL.as_secs() + 600 };
        Bytes::from(signer.sign(&t))
    }

    #[test]
    fn it_admits_the_role_it_guards_and_remembers_at_most_its_bound() {
        let now = Instant::ZERO;
        let mut g = gate(Role::Gateway);
        let gw = RoleSet::of(Role::Gateway);
        let p = PeerId::from_u64(9);
        assert_eq!(g.admit(now, p, &ticket(&signer(), p, gw)), Ok(()));
        assert_eq!(g.admit(now, p, &ticket(&signer(), p, gw)), Ok(()), "again, from the cache");
        let client = ticket(&signer(), p, RoleSet::CLIENT);
        assert_eq!(g.admit(now, p, &client), Err(TicketRefusal::RoleNotAllowed));
        for n in 0..(MAX_VERIFIED_TICKETS as u64 + 10) {
            let peer = PeerId::from_u64(100 + n);
            assert_eq!(g.admit(now, peer, &ticket(&signer(), peer, gw)), Ok(()));
        }
        assert_eq!(g.verified.len(), MAX_VERIFIED_TICKETS);
    }

    #[test]
    fn a_forger_is_refused_unchecked_for_the_penalty_then_checked_again() {
        let mut g = gate(Role::Client);
        let p = PeerId::from_u64(9);
        let forged = ticket(&TicketSigner::from_secret([4; 32]), p, RoleSet::CLIENT);
        let honest = ticket(&signer(), p, RoleSet::CLIENT);
        let t0 = Instant::ZERO;
        assert_eq!(g.admit(t0, p, &forged), Err(TicketRefusal::BadSignature));
        assert_eq!(g.admit(t0, p, &honest), Err(TicketRefusal::BadSignature), "still penalised");
        assert_eq!(g.admit(t0 + FORGERY_PENALTY, p, &honest), Ok(()));
        assert!(g.forgers.is_empty());
    }
}
