//! Round-trip estimates and the power-of-two-choices pick.
//!
//! Always taking the exit with the lowest measured latency sends every new
//! connection of every client to the same exit until its latency rises — a
//! herd that oscillates. Picking two exits at random and taking the better one
//! keeps most of the benefit while spreading load (Mitzenmacher, "The Power of
//! Two Choices in Randomized Load Balancing").

use super::uniform_below;
use core::time::Duration;
use rand_core::RngCore;

/// Fixed-point scale of [`Ewma`]'s smoothing factor: integer arithmetic keeps
/// estimates bit-identical on every platform the simulator runs on.
const ALPHA_ONE: u64 = 1 << 16;

/// An exponentially weighted moving average of round-trip times.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Ewma {
    /// The weight of a new sample, in units of 1/[`ALPHA_ONE`].
    alpha: u64,
    micros: Option<u64>,
}

impl Ewma {
    /// An empty average giving each new sample the weight `alpha`, clamped to
    /// `(0, 1]` (NaN counts as 1: follow the latest sample). Larger values
    /// react faster; 0.1–0.3 suit RTTs.
    pub fn new(alpha: f64) -> Ewma {
        let scaled = if alpha.is_nan() { ALPHA_ONE as f64 } else { alpha * ALPHA_ONE as f64 };
        // `as` saturates out-of-range floats, so the clamp covers ±∞ too.
        let alpha = (scaled.round() as u64).clamp(1, ALPHA_ONE);
        Ewma { alpha, micros: None }
    }

    /// Feeds one measured round trip. The first sample is taken as is, so a
    /// fresh exit is not ranked by an invented prior.
    pub fn observe(&mut self, rtt: Duration) {
        let sample = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX);
        self.micros = Some(match self.micros {
            None => sample,
            Some(old) => {
                let weighted = u128::from(old) * u128::from(ALPHA_ONE - self.alpha)
                    + u128::from(sample) * u128::from(self.alpha)
                    + u128::from(ALPHA_ONE / 2);
                // A weighted mean of two u64 values fits in u64.
                u64::try_from(weighted / u128::from(ALPHA_ONE)).unwrap_or(u64::MAX)
            }
        });
    }

    /// The current estimate; `None` before the first sample.
    pub fn get(&self) -> Option<Duration> {
        self.micros.map(Duration::from_micros)
    }

    /// The estimate in microseconds, for scoring; `None` before the first sample.
    pub fn micros(&self) -> Option<u64> {
        self.micros
    }
}

/// Power of two choices: draws two distinct candidates at random and returns
/// the one with the lower `score` (the first drawn on a tie). One candidate is
/// returned as is; none gives `None`.
pub fn pick_two<'a, T>(
    candidates: &'a [T],
    rng: &mut impl RngCore,
    score: impl Fn(&T) -> u64,
) -> Option<&'a T> {
    let n = candidates.len();
    if n <= 1 {
        return candidates.first();
    }
    let n64 = u64::try_from(n).unwrap_or(u64::MAX);
    let first = usize::try_from(uniform_below(rng, n64)).unwrap_or(0);
    // Drawing from n − 1 and skipping over `first` makes the pair distinct
    // without a retry loop.
    let mut second = usize::try_from(uniform_below(rng, n64 - 1)).unwrap_or(0);
    if second >= first {
        second += 1;
    }
    let a = candidates.get(first)?;
    let b = candidates.get(second)?;
    Some(if score(b) < score(a) { b } else { a })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand_chacha::ChaCha8Rng;
    use rand_core::SeedableRng;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn first_sample_is_taken_as_is() {
        let mut e = Ewma::new(0.25);
        assert_eq!(e.get(), None);
        e.observe(80 * MS);
        assert_eq!(e.get(), Some(80 * MS));
        e.observe(40 * MS);
        assert_eq!(e.get(), Some(70 * MS));
        e.observe(70 * MS);
        assert_eq!(e.micros(), Some(70_000));
    }

    #[test]
    fn converges_towards_a_steady_rtt() {
        let mut e = Ewma::new(0.2);
        e.observe(500 * MS);
        for _ in 0..100 {
            e.observe(20 * MS);
        }
        // Rounding to nearest settles within a few microseconds of the target.
        assert!(e.micros().is_some_and(|v| v.abs_diff(20_000) <= 2), "{e:?}");
    }

    #[test]
    fn alpha_is_clamped() {
        let mut follow = Ewma::new(5.0);
        follow.observe(10 * MS);
        follow.observe(30 * MS);
        assert_eq!(follow.get(), Some(30 * MS));
        let mut nan = Ewma::new(f64::NAN);
        nan.observe(10 * MS);
        nan.observe(30 * MS);
        assert_eq!(nan.get(), Some(30 * MS));
        assert_eq!(Ewma::new(-1.0), Ewma::new(0.0));
        let mut slowest = Ewma::new(0.0);
        slowest.observe(10 * MS);
        slowest.observe(10_000 * MS);
        // alpha is never zero: 10 ms + 9990 ms / 65536.
        assert_eq!(slowest.micros(), Some(10_152));
    }

    #[test]
    fn huge_samples_do_not_overflow() {
        let mut e = Ewma::new(0.5);
        e.observe(Duration::MAX);
        e.observe(Duration::MAX);
        assert_eq!(e.micros(), Some(u64::MAX));
        e.observe(Duration::ZERO);
        assert_eq!(e.micros(), Some(u64::MAX / 2 + 1));
    }

    #[test]
    fn pick_two_edge_cases() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let none: [u64; 0] = [];
        assert_eq!(pick_two(&none, &mut rng, |x| *x), None);
        assert_eq!(pick_two(&[7u64], &mut rng, |x| *x), Some(&7));
        // With two candidates both are always drawn: the lower score wins.
        for _ in 0..50 {
            assert_eq!(pick_two(&[9u64, 3], &mut rng, |x| *x), Some(&3));
        }
    }

    #[test]
    fn ties_go_to_the_first_drawn() {
        // Same scores, distinct identities: the winner must vary with the draw
        // order, i.e. both get picked over many draws.
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut wins = [0u32; 2];
        for _ in 0..200 {
            let picked = pick_two(&[0usize, 1], &mut rng, |_| 42).copied().unwrap_or(9);
            wins[picked] += 1;
        }
        assert!(wins[0] > 50 && wins[1] > 50, "{wins:?}");
    }

    #[test]
    fn the_worst_candidate_is_never_picked() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let scores = [50u64, 10, 30, 90, 20];
        let mut counts = [0u32; 5];
        for _ in 0..2000 {
            let picked = pick_two(&scores, &mut rng, |s| *s).copied().unwrap_or(0);
            if let Some(i) = scores.iter().position(|s| *s == picked) {
                counts[i] += 1;
            }
        }
        assert_eq!(counts[3], 0, "the slowest loses every pair it is in");
        assert!(counts[1] > counts[4] && counts[4] > counts[2] && counts[2] > counts[0]);
    }

    proptest! {
        #[test]
        fn pick_two_returns_a_candidate_no_worse_than_some_other(
            scores in proptest::collection::vec(any::<u64>(), 0..20),
            seed in any::<u64>(),
        ) {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let indexed: Vec<(usize, u64)> = scores.iter().copied().enumerate().collect();
            match pick_two(&indexed, &mut rng, |(_, s)| *s) {
                None => prop_assert!(scores.is_empty()),
                Some((i, s)) => {
                    prop_assert!(*i < scores.len());
                    if scores.len() >= 2 {
                        // It beat (or tied) some other candidate.
                        prop_assert!(indexed.iter().any(|(j, t)| j != i && s <= t));
                    }
                }
            }
        }

        #[test]
        fn ewma_stays_between_min_and_max_sample(
            alpha in 0.0f64..=1.0,
            samples in proptest::collection::vec(0u64..10_000_000, 1..50),
        ) {
            let mut e = Ewma::new(alpha);
            for s in &samples {
                e.observe(Duration::from_micros(*s));
            }
            let v = e.micros().unwrap_or(u64::MAX);
            let lo = samples.iter().copied().min().unwrap_or(0);
            let hi = samples.iter().copied().max().unwrap_or(0);
            prop_assert!(lo <= v && v <= hi);
        }
    }
}
