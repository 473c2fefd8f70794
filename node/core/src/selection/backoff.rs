//! Exponential backoff with jitter: how long a client leaves an exit alone
//! after it failed.
//!
//! The jitter is **full jitter bounded below by `base`**: after `n` failures
//! the delay is drawn uniformly from `[base, min(max, base · 2ⁿ)]`. Full
//! jitter (rather than a fixed schedule) spreads the retries of many clients
//! that lost the same exit at the same moment, so a recovering exit is not hit
//! by all of them at once; the floor keeps a failure from ever being retried
//! immediately. The draw is stateless (it depends only on `n` and the RNG),
//! so the caller keeps just a failure count per exit.

use super::uniform_inclusive;
use core::time::Duration;
use rand_core::RngCore;

/// The smallest delay after a failure: one tick of the core's clock.
const MIN_DELAY_MICROS: u64 = 1;

/// An exponential backoff schedule. See the [module docs](self) for the jitter.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Backoff {
    base_micros: u64,
    max_micros: u64,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Backoff {
    /// A schedule that starts around `base` and never exceeds `max`. A zero
    /// `base` is raised to 1 µs (a failure always waits), and `max` below
    /// `base` is raised to `base`.
    pub fn new(base: Duration, max: Duration) -> Backoff {
        let base_micros = micros(base).max(MIN_DELAY_MICROS);
        Backoff { base_micros, max_micros: micros(max).max(base_micros) }
    }

    /// The shortest delay after a failure.
    pub fn base(&self) -> Duration {
        Duration::from_micros(self.base_micros)
    }

    /// The longest delay.
    pub fn max(&self) -> Duration {
        Duration::from_micros(self.max_micros)
    }

    /// The longest delay `failures` consecutive failures can draw:
    /// `min(max, base · 2^failures)`, or zero without failures.
    pub fn ceiling(&self, failures: u32) -> Duration {
        Duration::from_micros(self.ceiling_micros(failures))
    }

    fn ceiling_micros(&self, failures: u32) -> u64 {
        if failures == 0 {
            return 0;
        }
        let factor = 1u64.checked_shl(failures).unwrap_or(u64::MAX);
        self.base_micros.saturating_mul(factor).min(self.max_micros)
    }

    /// How long to wait before trying again after `failures` consecutive
    /// failures: zero for none, else a draw from `[base, ceiling(failures)]`.
    pub fn delay(&self, failures: u32, rng: &mut impl RngCore) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let ceiling = self.ceiling_micros(failures);
        Duration::from_micros(uniform_inclusive(rng, self.base_micros.min(ceiling), ceiling))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand_chacha::ChaCha8Rng;
    use rand_core::SeedableRng;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn grows_exponentially_up_to_max() {
        let b = Backoff::new(100 * MS, 10_000 * MS);
        assert_eq!(b.ceiling(0), Duration::ZERO);
        assert_eq!(b.ceiling(1), 200 * MS);
        assert_eq!(b.ceiling(2), 400 * MS);
        assert_eq!(b.ceiling(6), 6_400 * MS);
        assert_eq!(b.ceiling(7), 10_000 * MS);
        assert_eq!(b.ceiling(63), 10_000 * MS);
        assert_eq!(b.ceiling(64), 10_000 * MS);
        assert_eq!(b.ceiling(u32::MAX), 10_000 * MS);
    }

    #[test]
    fn no_failures_no_delay() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        assert_eq!(Backoff::new(MS, MS).delay(0, &mut rng), Duration::ZERO);
    }

    #[test]
    fn jitter_spreads_and_is_reproducible() {
        let b = Backoff::new(100 * MS, 60_000 * MS);
        let draws = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            (0..50).map(|_| b.delay(5, &mut rng)).collect::<Vec<_>>()
        };
        let first = draws(9);
        assert_eq!(first, draws(9), "same seed, same delays");
        assert_ne!(first, draws(10));
        assert!(first.iter().all(|d| (100 * MS..=3_200 * MS).contains(d)));
        // Spread over the range, not clustered at one end.
        assert!(first.iter().any(|d| *d < 1_000 * MS));
        assert!(first.iter().any(|d| *d > 2_000 * MS));
    }

    #[test]
    fn degenerate_settings_still_wait() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let zero = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(zero.base(), Duration::from_micros(1));
        assert_eq!(zero.delay(1, &mut rng), Duration::from_micros(1));
        let inverted = Backoff::new(5 * MS, MS);
        assert_eq!(inverted.max(), 5 * MS);
        assert_eq!(inverted.delay(3, &mut rng), 5 * MS);
        let huge = Backoff::new(Duration::MAX, Duration::MAX);
        assert!(huge.delay(u32::MAX, &mut rng) > Duration::ZERO);
    }

    proptest! {
        #[test]
        fn delay_is_bounded_and_never_zero_after_a_failure(
            base in 0u64..10_000_000_000,
            max in 0u64..100_000_000_000,
            failures in 1u32..=u32::MAX,
            seed in any::<u64>(),
        ) {
            let b = Backoff::new(Duration::from_micros(base), Duration::from_micros(max));
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let d = b.delay(failures, &mut rng);
            prop_assert!(d > Duration::ZERO);
            prop_assert!(d <= b.max());
            prop_assert!(d <= b.ceiling(failures));
            prop_assert!(d >= b.base().min(b.ceiling(failures)));
            prop_assert!(b.ceiling(failures) <= b.ceiling(failures.saturating_add(1)));
        }
    }
}
