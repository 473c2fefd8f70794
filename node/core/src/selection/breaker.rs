//! A circuit breaker per exit.
//!
//! ```text
//!            failure_threshold consecutive failures
//!   Closed ─────────────────────────────────────────▶ Open{until}
//!     ▲                                                 │ now ≥ until: next
//!     │ a probe succeeds                                ▼ admission probes
//!     └────────────────────────────────────────── HalfOpen{probes}
//!                     a probe fails: Open again ◀───────┘
//! ```
//!
//! While an exit is failing, clients stop sending app connections to it and
//! instead let a few probes through once per `open_for`; the first probe to
//! succeed closes the circuit. Results arriving while the circuit is Open came
//! from attempts admitted before it opened and are ignored: only the probes
//! decide. Every attempt that [`CircuitBreaker::allows`] admitted must end in
//! exactly one of [`on_success`](CircuitBreaker::on_success),
//! [`on_failure`](CircuitBreaker::on_failure) or
//! [`on_cancelled`](CircuitBreaker::on_cancelled), or a half-open circuit
//! would wait forever for its probes.

use crate::time::Instant;
use core::time::Duration;

/// How a circuit breaker trips and recovers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct BreakerConfig {
    /// Consecutive failures that open the circuit (0 is taken as 1).
    pub failure_threshold: u32,
    /// How long the circuit stays open before probing.
    pub open_for: Duration,
    /// Attempts let through at once while half-open (0 is taken as 1).
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 3,
            open_for: Duration::from_secs(30),
            half_open_probes: 1,
        }
    }
}

/// Where a circuit breaker stands.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum BreakerState {
    /// Attempts flow; counting failures in a row.
    Closed {
        /// Failures since the last success.
        consecutive_failures: u32,
    },
    /// Attempts are refused until `until`.
    Open {
        /// When probing may start.
        until: Instant,
    },
    /// A few probe attempts are let through to test the exit.
    HalfOpen {
        /// Probes admitted and not yet finished.
        probes_in_flight: u32,
    },
}

/// A change between Closed, Open and HalfOpen, for the caller to report.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Transition {
    /// The state left; a Closed one counts the failure that tripped it.
    pub from: BreakerState,
    /// The state after.
    pub to: BreakerState,
}

/// The answer to [`CircuitBreaker::admit`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Admission {
    /// Whether the attempt may go ahead.
    pub allowed: bool,
    /// The Open → HalfOpen change the question caused, if any.
    pub transition: Option<Transition>,
}

/// One exit's circuit breaker. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    state: BreakerState,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        let config = BreakerConfig {
            failure_threshold: config.failure_threshold.max(1),
            half_open_probes: config.half_open_probes.max(1),
            ..config
        };
        CircuitBreaker { config, state: BreakerState::Closed { consecutive_failures: 0 } }
    }

    /// The current state, as of the last call (an Open circuit whose time
    /// is up turns HalfOpen only when next asked to admit).
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// When an Open circuit may start probing; `None` in other states.
    pub fn reopens_at(&self) -> Option<Instant> {
        match self.state {
            BreakerState::Open { until } => Some(until),
            _ => None,
        }
    }

    /// Whether an attempt may go ahead now; an admitted attempt must be
    /// reported back (see the module docs).
    pub fn allows(&mut self, now: Instant) -> bool {
        self.admit(now).allowed
    }

    /// Like [`allows`](Self::allows), also returning the Open → HalfOpen
    /// transition so the caller can report it.
    pub fn admit(&mut self, now: Instant) -> Admission {
        let mut transition = None;
        if let BreakerState::Open { until } = self.state {
            if now < until {
                return Admission { allowed: false, transition: None };
            }
            transition = self.move_to(BreakerState::HalfOpen { probes_in_flight: 0 });
        }
        let allowed = match &mut self.state {
            BreakerState::Closed { .. } => true,
            BreakerState::HalfOpen { probes_in_flight } => {
                let admit = *probes_in_flight < self.config.half_open_probes;
                if admit {
                    *probes_in_flight += 1;
                }
                admit
            }
            BreakerState::Open { .. } => false,
        };
        // Report the state the caller now sees, with this probe counted.
        let transition = transition.map(|t| Transition { to: self.state, ..t });
        Admission { allowed, transition }
    }

    /// An admitted attempt succeeded.
    pub fn on_success(&mut self, _now: Instant) -> Option<Transition> {
        match &mut self.state {
            BreakerState::Closed { consecutive_failures } => {
                *consecutive_failures = 0;
                None
            }
            BreakerState::Open { .. } => None,
            BreakerState::HalfOpen { .. } => {
                self.move_to(BreakerState::Closed { consecutive_failures: 0 })
            }
        }
    }

    /// An admitted attempt failed because of the exit.
    pub fn on_failure(&mut self, now: Instant) -> Option<Transition> {
        let open = BreakerState::Open { until: now + self.config.open_for };
        match &mut self.state {
            BreakerState::Closed { consecutive_failures } => {
                *consecutive_failures = consecutive_failures.saturating_add(1);
                if *consecutive_failures >= self.config.failure_threshold {
                    self.move_to(open)
                } else {
                    None
                }
            }
            BreakerState::Open { .. } => None,
            BreakerState::HalfOpen { .. } => self.move_to(open),
        }
    }

    /// An admitted attempt ended without a verdict on the exit (the app went
    /// away, or the failure was the destination's): frees its probe slot.
    pub fn on_cancelled(&mut self) {
        if let BreakerState::HalfOpen { probes_in_flight } = &mut self.state {
            *probes_in_flight = probes_in_flight.saturating_sub(1);
        }
    }

    fn move_to(&mut self, to: BreakerState) -> Option<Transition> {
        let from = core::mem::replace(&mut self.state, to);
        Some(Transition { from, to })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SEC: Duration = Duration::from_secs(1);

    fn at(secs: u64) -> Instant {
        Instant::ZERO + Duration::from_secs(secs)
    }

    fn breaker(threshold: u32, probes: u32) -> CircuitBreaker {
        CircuitBreaker::new(BreakerConfig {
            failure_threshold: threshold,
            open_for: 10 * SEC,
            half_open_probes: probes,
        })
    }

    #[test]
    fn opens_after_threshold_consecutive_failures() {
        let mut b = breaker(3, 1);
        assert!(b.allows(at(0)));
        assert_eq!(b.on_failure(at(0)), None);
        assert_eq!(b.on_failure(at(1)), None);
        assert_eq!(b.state(), BreakerState::Closed { consecutive_failures: 2 });
        assert_eq!(
            b.on_failure(at(2)),
            Some(Transition {
                from: BreakerState::Closed { consecutive_failures: 3 },
                to: BreakerState::Open { until: at(12) },
            })
        );
        assert!(!b.allows(at(2)));
        assert!(!b.allows(at(11)));
        assert_eq!(b.reopens_at(), Some(at(12)));
    }

    #[test]
    fn a_success_resets_the_count() {
        let mut b = breaker(2, 1);
        assert_eq!(b.on_failure(at(0)), None);
        assert_eq!(b.on_success(at(1)), None);
        assert_eq!(b.on_failure(at(2)), None);
        assert_eq!(b.state(), BreakerState::Closed { consecutive_failures: 1 });
    }

    #[test]
    fn half_open_admits_limited_probes_exactly_at_until() {
        let mut b = breaker(1, 2);
        b.on_failure(at(0));
        assert!(!b.allows(at(10) - Duration::from_micros(1)));
        let first = b.admit(at(10));
        assert_eq!(
            first,
            Admission {
                allowed: true,
                transition: Some(Transition {
                    from: BreakerState::Open { until: at(10) },
                    to: BreakerState::HalfOpen { probes_in_flight: 1 },
                }),
            }
        );
        assert_eq!(b.admit(at(10)), Admission { allowed: true, transition: None });
        assert!(!b.allows(at(11)), "third probe refused");
        assert_eq!(b.state(), BreakerState::HalfOpen { probes_in_flight: 2 });
        b.on_cancelled();
        assert!(b.allows(at(11)), "a cancelled probe frees its slot");
    }

    #[test]
    fn half_open_success_closes() {
        let mut b = breaker(1, 1);
        b.on_failure(at(0));
        assert!(b.allows(at(10)));
        assert_eq!(
            b.on_success(at(11)),
            Some(Transition {
                from: BreakerState::HalfOpen { probes_in_flight: 1 },
                to: BreakerState::Closed { consecutive_failures: 0 },
            })
        );
        assert!(b.allows(at(11)));
    }

    #[test]
    fn half_open_failure_opens_again() {
        let mut b = breaker(1, 1);
        b.on_failure(at(0));
        assert!(b.allows(at(10)));
        assert_eq!(
            b.on_failure(at(13)),
            Some(Transition {
                from: BreakerState::HalfOpen { probes_in_flight: 1 },
                to: BreakerState::Open { until: at(23) },
            })
        );
        assert!(!b.allows(at(22)));
        assert!(b.allows(at(23)));
    }

    #[test]
    fn results_while_open_are_ignored() {
        let mut b = breaker(1, 1);
        b.on_failure(at(0));
        assert_eq!(b.on_success(at(1)), None);
        assert_eq!(b.on_failure(at(5)), None);
        assert_eq!(b.state(), BreakerState::Open { until: at(10) });
        b.on_cancelled();
        assert_eq!(b.state(), BreakerState::Open { until: at(10) });
    }

    #[test]
    fn zero_settings_are_raised_to_one() {
        let mut b = breaker(0, 0);
        assert!(b.on_failure(at(0)).is_some());
        assert!(b.allows(at(10)), "one probe even with half_open_probes = 0");
        assert!(!b.allows(at(10)));
    }

    #[derive(Clone, Debug)]
    enum Event {
        Ask,
        Success,
        Failure,
        Cancel,
        Wait(u64),
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            Just(Event::Ask),
            Just(Event::Success),
            Just(Event::Failure),
            Just(Event::Cancel),
            (0u64..20).prop_map(Event::Wait),
        ]
    }

    proptest! {
        #[test]
        fn invariants_hold_for_any_history(
            threshold in 0u32..5,
            probes in 0u32..4,
            events in proptest::collection::vec(event(), 0..200),
        ) {
            let mut b = breaker(threshold, probes);
            let mut now = at(0);
            for e in events {
                let before = b.state();
                let transition = match e {
                    Event::Ask => b.admit(now).transition,
                    Event::Success => b.on_success(now),
                    Event::Failure => b.on_failure(now),
                    Event::Cancel => { b.on_cancelled(); None }
                    Event::Wait(s) => { now = now + Duration::from_secs(s); None }
                };
                if let Some(t) = transition {
                    prop_assert_eq!(
                        core::mem::discriminant(&t.from),
                        core::mem::discriminant(&before)
                    );
                    prop_assert_eq!(t.to, b.state());
                    prop_assert_ne!(
                        core::mem::discriminant(&t.from),
                        core::mem::discriminant(&t.to)
                    );
                }
                match b.state() {
                    BreakerState::Closed { consecutive_failures } => {
                        prop_assert!(consecutive_failures < threshold.max(1));
                    }
                    BreakerState::Open { until } => prop_assert!(until <= now + 10 * SEC),
                    BreakerState::HalfOpen { probes_in_flight } => {
                        prop_assert!(probes_in_flight <= probes.max(1));
                    }
                }
            }
        }
    }
}
