//! How many of something (sessions, hub streams) each peer holds, with the
//! busiest peer's count at hand.
//!
//! The per-peer limits are checked on every new stream, and the bounds
//! invariant reads the busiest peer after every step: scanning every peer
//! for the maximum made that step cost grow with the number of peers (a
//! hub with 1,000 exits spent most of its simulated time there). A second
//! map, from a count to how many peers hold exactly that many, keeps the
//! maximum one lookup away.

use crate::ids::PeerId;
use std::collections::BTreeMap;

/// Per-peer counts and the histogram of those counts.
#[derive(Debug, Default)]
pub(crate) struct PeerCounts {
    by_peer: BTreeMap<PeerId, usize>,
    /// count → peers holding exactly that many (never a zero count or a
    /// zero number of peers).
    peers_at: BTreeMap<usize, usize>,
}

impl PeerCounts {
    /// How many `peer` holds.
    pub(crate) fn get(&self, peer: &PeerId) -> usize {
        self.by_peer.get(peer).copied().unwrap_or(0)
    }

    /// `peer` holds one more.
    pub(crate) fn add(&mut self, peer: PeerId) {
        let held = self.by_peer.entry(peer).or_default();
        let before = *held;
        *held += 1;
        let after = *held;
        self.moved(before, after);
    }

    /// `peer` holds one fewer (nothing if it held none).
    pub(crate) fn remove(&mut self, peer: &PeerId) {
        let Some(held) = self.by_peer.get_mut(peer) else { return };
        let before = *held;
        *held -= 1;
        let after = *held;
        if after == 0 {
            self.by_peer.remove(peer);
        }
        self.moved(before, after);
    }

    /// The most any one peer holds.
    pub(crate) fn busiest(&self) -> usize {
        self.peers_at.last_key_value().map_or(0, |(&count, _)| count)
    }

    fn moved(&mut self, before: usize, after: usize) {
        if before > 0 {
            if let Some(peers) = self.peers_at.get_mut(&before) {
                *peers -= 1;
                if *peers == 0 {
                    self.peers_at.remove(&before);
                }
            }
        }
        if after > 0 {
            *self.peers_at.entry(after).or_default() += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn peer(i: u8) -> PeerId {
        PeerId::from_u64(u64::from(i))
    }

    proptest! {
        /// Against a plain map scanned for its maximum: any sequence of adds
        /// and removes gives the same counts and the same busiest count.
        #[test]
        fn matches_a_scanned_map(ops in proptest::collection::vec((any::<bool>(), 0u8..6), 0..200)) {
            let mut counts = PeerCounts::default();
            let mut model: BTreeMap<u8, usize> = BTreeMap::new();
            for (add, p) in ops {
                if add {
                    counts.add(peer(p));
                    *model.entry(p).or_default() += 1;
                } else {
                    counts.remove(&peer(p));
                    if let Some(n) = model.get_mut(&p) {
                        *n -= 1;
                        if *n == 0 {
                            model.remove(&p);
                        }
                    }
                }
                prop_assert_eq!(counts.busiest(), model.values().copied().max().unwrap_or(0));
                for p in 0u8..6 {
                    prop_assert_eq!(counts.get(&peer(p)), model.get(&p).copied().unwrap_or(0));
                }
                prop_assert_eq!(counts.by_peer.len(), model.len());
            }
        }
    }
}
