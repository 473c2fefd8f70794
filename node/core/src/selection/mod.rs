//! The pieces a client uses to choose an exit (DESIGN.md §1, step 3).
//!
//! ```text
//! hub's Find answer ──▶ listener filters ──▶ sticky pool ──pinned?──▶ that exit
//!                                                │ no
//!                                                ▼
//!                        drop exits in backoff or with an open circuit breaker
//!                                                │
//!                                                ▼
//!                          power of two choices on measured latency (EWMA)
//! ```
//!
//! Every piece here is pure: time comes in as [`crate::time::Instant`],
//! randomness from a caller-provided seeded [`rand_core::RngCore`], and all
//! tables iterate in a deterministic order, so the simulator replays a choice
//! exactly from its seed.
//!
//! - [`backoff`]: how long to leave an exit alone after failures;
//! - [`breaker`]: a circuit breaker per exit, so a dead exit costs one probe
//!   per period rather than one failed attempt per app connection;
//! - [`latency`]: round-trip estimates and the power-of-two-choices pick;
//! - [`sticky`]: the sticky pool that pins a listener's session to one exit,
//!   bounded, expiring and persistable across restarts.

pub mod backoff;
pub mod breaker;
pub mod latency;
pub mod sticky;

pub use backoff::Backoff;
pub use breaker::{Admission, BreakerConfig, BreakerState, CircuitBreaker, Transition};
pub use latency::{pick_two, Ewma};
pub use sticky::{SnapshotError, StickyConfig, StickyKey, StickyPool};

use rand_core::RngCore;

/// A uniformly distributed number in `0..n` (`n > 0`), without the bias of a
/// plain `%`: draws in the incomplete last block of `n` are rejected.
pub(crate) fn uniform_below(rng: &mut impl RngCore, n: u64) -> u64 {
    if n <= 1 {
        return 0;
    }
    // 2^64 mod n: the draws below this fall in the incomplete block.
    let threshold = n.wrapping_neg() % n;
    loop {
        let r = rng.next_u64();
        if r >= threshold {
            return r % n;
        }
    }
}

/// A uniformly distributed number in `lo..=hi` (`lo <= hi`).
pub(crate) fn uniform_inclusive(rng: &mut impl RngCore, lo: u64, hi: u64) -> u64 {
    let span = hi.saturating_sub(lo);
    match span.checked_add(1) {
        Some(n) => lo + uniform_below(rng, n),
        None => rng.next_u64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha8Rng;
    use rand_core::SeedableRng;

    #[test]
    fn uniform_stays_in_range_and_covers_it() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut seen = [false; 5];
        for _ in 0..1000 {
            let x = uniform_inclusive(&mut rng, 10, 14);
            assert!((10..=14).contains(&x));
            seen[(x - 10) as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
        assert_eq!(uniform_below(&mut rng, 1), 0);
        assert_eq!(uniform_below(&mut rng, 0), 0);
        assert_eq!(uniform_inclusive(&mut rng, 3, 3), 3);
        let _ = uniform_inclusive(&mut rng, 0, u64::MAX);
    }
}
