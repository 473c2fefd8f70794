//! The NAT model's numbers: who can be dialed, and how often hole punching
//! (DCUtR) turns a relayed connection into a direct one for each pair of NAT
//! types; plus the per-NAT-pair counts a run reports (`nat_matrix`).
//!
//! The model (see `sim/README.md` or the `scenarios/README.md` NAT section):
//! a node behind any NAT cannot be dialed directly (the dial fails after
//! `NAT_DIAL_TIMEOUT`, as a SYN into a NAT without a mapping goes
//! unanswered); it can dial out to public nodes. Hubs are public and relay.

use crate::scenario::NatType;
use std::collections::BTreeMap;
use std::time::Duration;

/// A direct dial to a node behind NAT gets no answer; the dialer gives up
/// after this (the same as a dial into a partition).
pub(crate) const NAT_DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// Hole-punch success, per mille, indexed by [`NatType::ALL`] order. Symmetric
/// in its arguments. Why these numbers: with a public side the NATed side
/// simply dials out (connection reversal), so it always works; cone NATs keep
/// one mapping per inside port, so simultaneous dials meet unless both sides
/// filter on ports; a symmetric NAT picks a new port per destination, which
/// the other side can only hit if it accepts from any port (full cone, often)
/// or any port of a known address (restricted, sometimes), never when both
/// sides filter by port.
pub const PUNCH_PER_MILLE: [[u32; 5]; 5] = [
    //  none  full  restr  port   sym
    [1000, 1000, 1000, 1000, 1000], // none
    [1000, 950, 900, 800, 500],     // full cone
    [1000, 900, 850, 750, 300],     // restricted
    [1000, 800, 750, 700, 0],       // port restricted
    [1000, 500, 300, 0, 0],         // symmetric
];

fn index(n: NatType) -> usize {
    NatType::ALL.iter().position(|x| *x == n).unwrap_or(0)
}

/// The chance, per mille, that a hole punch between `a` and `b` succeeds.
pub fn punch_per_mille(a: NatType, b: NatType) -> u32 {
    PUNCH_PER_MILLE[index(a)][index(b)]
}

/// What happened to the sessions (and hole punches) of one (client NAT,
/// exit NAT) pair.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PairCounts {
    /// Sessions that completed over a direct connection.
    pub direct: u64,
    /// Sessions that completed over a relay circuit.
    pub relayed: u64,
    /// Sessions that did not complete.
    pub failed: u64,
    /// Hole-punch attempts between such a client and exit.
    pub punches: u64,
    /// Of those, how many produced a direct connection.
    pub punched: u64,
}

impl PairCounts {
    /// Adds `other` in.
    pub fn merge(&mut self, other: &PairCounts) {
        self.direct += other.direct;
        self.relayed += other.relayed;
        self.failed += other.failed;
        self.punches += other.punches;
        self.punched += other.punched;
    }
}

/// Per-pair counts of a run, keyed by (client NAT, exit NAT); the exit is
/// `None` for sessions that failed before any exit carried them.
pub type NatMatrix = BTreeMap<(NatType, Option<NatType>), PairCounts>;

/// Adds every pair of `from` into `into`.
pub fn merge_matrix(into: &mut NatMatrix, from: &NatMatrix) {
    for (k, v) in from {
        into.entry(*k).or_default().merge(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_symmetric_and_public_always_punches() {
        for a in NatType::ALL {
            for b in NatType::ALL {
                assert_eq!(punch_per_mille(a, b), punch_per_mille(b, a), "{a} × {b}");
                assert!(punch_per_mille(a, b) <= 1000);
            }
            assert_eq!(punch_per_mille(NatType::None, a), 1000);
        }
        assert_eq!(punch_per_mille(NatType::Symmetric, NatType::Symmetric), 0);
        assert_eq!(punch_per_mille(NatType::PortRestricted, NatType::Symmetric), 0);
        assert_eq!(punch_per_mille(NatType::FullCone, NatType::FullCone), 950);
        assert_eq!(punch_per_mille(NatType::FullCone, NatType::Symmetric), 500);
    }

    #[test]
    fn stricter_nats_never_punch_better() {
        // Moving either side to a stricter NAT never raises the odds.
        for (a, row) in PUNCH_PER_MILLE.iter().enumerate() {
            for (b, pair) in row.windows(2).enumerate() {
                assert!(pair[1] <= pair[0], "{a},{b}");
            }
        }
    }

    #[test]
    fn matrices_merge_by_pair() {
        let mut a = NatMatrix::new();
        let key = (NatType::FullCone, Some(NatType::Symmetric));
        a.entry(key).or_default().direct = 2;
        let mut b = NatMatrix::new();
        b.entry(key).or_default().direct = 3;
        b.entry((NatType::None, None)).or_default().failed = 1;
        merge_matrix(&mut a, &b);
        assert_eq!(a[&key].direct, 5);
        assert_eq!(a[&(NatType::None, None)].failed, 1);
    }
}
