//! Dials through a hub that wait for the hub's identify ([`ParkedDials`]): DCUtR offers the
//! peer the addresses hubs saw us at, which identify brings, so a circuit opened before
//! them would make the hole punch fail at once.

use std::{collections::VecDeque, time::Duration};

use meshproxy_core::ids::PeerId;

/// How long a dial through a hub waits for the hub's identify before it goes anyway.
pub const IDENTIFY_WAIT: Duration = Duration::from_secs(2);
/// Dials that may wait for identify at once; more go at once.
const MAX_PARKED_DIALS: usize = 1024;

/// A dial to `peer` through `hub`'s relay, held until `until` at the latest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ParkedDial {
    pub(super) peer: PeerId,
    pub(super) hub: libp2p::PeerId,
    until: tokio::time::Instant,
}

/// Dials through hubs waiting for the hubs' identify, oldest first: every one waits the
/// same [`IDENTIFY_WAIT`], so the first is also the first due.
#[derive(Debug, Default)]
pub(super) struct ParkedDials(VecDeque<ParkedDial>);

impl ParkedDials {
    /// Holds a dial to `peer` through `hub` until `now + IDENTIFY_WAIT` at the latest;
    /// `false` (hold nothing) when [`MAX_PARKED_DIALS`] already wait.
    pub(super) fn park(
        &mut self,
        peer: PeerId,
        hub: libp2p::PeerId,
        now: tokio::time::Instant,
    ) -> bool {
        if self.0.len() >= MAX_PARKED_DIALS {
            return false;
        }
        self.0.push_back(ParkedDial { peer, hub, until: now + IDENTIFY_WAIT });
        true
    }

    /// When the first dial is due, if any waits.
    pub(super) fn next_due(&self) -> Option<tokio::time::Instant> {
        self.0.front().map(|d| d.until)
    }

    /// Takes the dials due by `now`.
    pub(super) fn take_due(&mut self, now: tokio::time::Instant) -> Vec<ParkedDial> {
        let due = self.0.iter().take_while(|d| d.until <= now).count();
        self.0.drain(..due).collect()
    }

    /// Takes the dials waiting for `hub`, keeping the others in order.
    pub(super) fn take_hub(&mut self, hub: libp2p::PeerId) -> Vec<ParkedDial> {
        let taken = self.0.iter().filter(|d| d.hub == hub).copied().collect();
        self.0.retain(|d| d.hub != hub);
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::identity;

    #[test]
    pub(super) fn parked_dials_go_when_due_or_when_their_hub_is_done_and_stay_bounded() {
        let hub = || identity::Keypair::generate_ed25519().public().to_peer_id();
        let (h1, h2) = (hub(), hub());
        let t0 = tokio::time::Instant::now();
        let step = Duration::from_millis(500);
        let mut parked = ParkedDials::default();
        assert_eq!(parked.next_due(), None, "nothing waits: no timer");
        assert!(parked.park(PeerId::from_u64(1), h1, t0));
        assert!(parked.park(PeerId::from_u64(2), h2, t0 + step));
        assert!(parked.park(PeerId::from_u64(3), h1, t0 + step * 2));
        assert_eq!(parked.next_due(), Some(t0 + IDENTIFY_WAIT));
        // Not due a moment before the wait ends; the first alone at its end.
        assert!(parked.take_due(t0 + IDENTIFY_WAIT - step / 2).is_empty());
        let due = parked.take_due(t0 + IDENTIFY_WAIT);
        assert_eq!(due.iter().map(|d| d.peer).collect::<Vec<_>>(), [PeerId::from_u64(1)]);
        assert_eq!(parked.next_due(), Some(t0 + step + IDENTIFY_WAIT));
        // Hub 1's identify (or its end) lets its dial go; hub 2's stays, still timed.
        let h1_dials = parked.take_hub(h1);
        assert_eq!(h1_dials.iter().map(|d| d.peer).collect::<Vec<_>>(), [PeerId::from_u64(3)]);
        assert!(parked.take_hub(h1).is_empty(), "each dial goes once");
        assert_eq!(parked.next_due(), Some(t0 + step + IDENTIFY_WAIT));
        assert_eq!(parked.take_due(t0 + step * 10).len(), 1);
        assert_eq!(parked.next_due(), None);
        // Bounded: beyond the cap a dial is not held (the caller dials at once).
        for i in 0..MAX_PARKED_DIALS {
            assert!(parked.park(PeerId::from_u64(i as u64), h2, t0), "{i}");
        }
        assert!(!parked.park(PeerId::from_u64(0), h2, t0));
        assert_eq!(parked.take_hub(h2).len(), MAX_PARKED_DIALS);
    }
}
