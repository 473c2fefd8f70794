//! meshproxy simulator (being written).
#![forbid(unsafe_code)]

pub mod scenario;

// ─────────────────────────────────────────────────────────────────────────────
// STUB — replaced by the real engine at merge
//
// Implements the engine's public API trivially (no world, no network) so that
// xtask compiles and its plumbing (sweep, tables, replay, shrink, determinism
// check) can be exercised. The only "failures" it produces are with
// `RunOptions::bug` set, on seeds ≡ 3 (mod 7).
// ─────────────────────────────────────────────────────────────────────────────

use meshproxy_core::time::Instant;
use scenario::Scenario;
use std::fmt;

/// Runs one seed of a scenario.
pub fn run(scenario: &Scenario, seed: u64, opts: &RunOptions) -> RunReport {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    let mut mix = |x: u64| {
        hash ^= x;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        hash
    };
    for b in scenario.name.bytes() {
        mix(u64::from(b));
    }
    mix(seed);
    let kinds = &scenario.faults.kinds;
    let chosen: Vec<_> = kinds
        .iter()
        .enumerate()
        .filter(|(i, _)| (seed >> (i % 64)) & 1 == 1)
        .map(|(_, k)| *k)
        .collect();
    let fault_mix = if chosen.is_empty() {
        "none".to_owned()
    } else {
        chosen.iter().map(|k| k.as_str()).collect::<Vec<_>>().join("+")
    };
    let plan = Plan {
        entries: chosen.iter().enumerate().map(|(i, k)| format!("{}s {k}", i as u64 * 5)).collect(),
    };
    let per_client = u64::from(scenario.workload.connections);
    let conns = per_client * u64::from(scenario.topology.clients);
    let events = conns * 20;
    let mut trace = Vec::new();
    let mut step_hashes = Vec::new();
    for i in 0..events.min(64) {
        let h = mix(i);
        if opts.trace {
            trace.push(format!("{} client0 event {i}", Instant::from_micros(i * 1000)));
        }
        if opts.step_hashes {
            step_hashes.push(h);
        }
    }
    let secs = u64::from(scenario.duration_secs) + u64::from(scenario.settle_secs);
    let sim_time = Instant::from_micros(secs * 1_000_000);
    let mut violations = Vec::new();
    if opts.bug == Some(InjectedBug::ResetBecomesFin) && seed % 7 == 3 {
        violations.push(Violation {
            at: Instant::from_micros(secs * 500_000),
            invariant: "integrity",
            detail: "app saw a clean end of stream after an origin reset".to_owned(),
        });
    }
    RunReport {
        scenario: scenario.name.clone(),
        seed,
        hash,
        events,
        sim_time,
        violations,
        trace,
        step_hashes,
        fault_mix,
        plan: opts.plan.clone().unwrap_or(plan),
        stats: RunStats {
            app_connections: conns,
            succeeded: conns,
            failed: 0,
            bytes: conns * u64::from(scenario.workload.payload_max),
        },
    }
}

/// How to run a seed.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Record the trace lines.
    pub trace: bool,
    /// Record the running hash after every step.
    pub step_hashes: bool,
    /// Replay this plan instead of drawing one from the seed.
    pub plan: Option<Plan>,
    /// Inject a known bug, to prove the invariants catch it.
    pub bug: Option<InjectedBug>,
}

/// A deliberately broken behaviour the invariants must catch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InjectedBug {
    /// The splice reports a reset as a clean end of stream.
    ResetBecomesFin,
}

/// What one run did and found.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The scenario's name.
    pub scenario: String,
    /// The seed.
    pub seed: u64,
    /// The final running hash.
    pub hash: u64,
    /// Events processed.
    pub events: u64,
    /// Virtual time at the end.
    pub sim_time: Instant,
    /// Invariant violations, in order.
    pub violations: Vec<Violation>,
    /// Trace lines, if asked for.
    pub trace: Vec<String>,
    /// Running hash per step, if asked for.
    pub step_hashes: Vec<u64>,
    /// The fault kinds this seed turned on.
    pub fault_mix: String,
    /// The recorded inputs and faults.
    pub plan: Plan,
    /// Workload counters.
    pub stats: RunStats,
}

impl RunReport {
    /// Whether no invariant was violated.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Workload counters.
#[derive(Debug, Clone, Default)]
pub struct RunStats {
    /// App connections opened.
    pub app_connections: u64,
    /// Those that completed.
    pub succeeded: u64,
    /// Those that failed.
    pub failed: u64,
    /// Payload bytes moved.
    pub bytes: u64,
}

/// One broken invariant.
#[derive(Debug, Clone)]
pub struct Violation {
    /// When.
    pub at: Instant,
    /// Which invariant.
    pub invariant: &'static str,
    /// What happened.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.at, self.invariant, self.detail)
    }
}

/// The recorded inputs and faults of a run.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    entries: Vec<String>,
}

impl Plan {
    /// Number of recorded entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.entries {
            writeln!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Reduces a failing seed's plan to a minimal failing one; `None` if the seed passes.
pub fn shrink(
    scenario: &Scenario,
    seed: u64,
    progress: &mut dyn FnMut(&str),
) -> Option<ShrinkReport> {
    let report = run(scenario, seed, &RunOptions::default());
    if report.passed() {
        return None;
    }
    progress("stub: nothing to shrink");
    Some(ShrinkReport { original: report.plan.len(), minimal: report.plan.clone(), report })
}

/// The outcome of a shrink.
#[derive(Debug, Clone)]
pub struct ShrinkReport {
    /// Plan length before shrinking.
    pub original: usize,
    /// The smallest plan that still fails.
    pub minimal: Plan,
    /// The run of the minimal plan.
    pub report: RunReport,
}

/// Runs a seed twice and compares the step hashes.
pub fn check_determinism(scenario: &Scenario, seed: u64) -> Result<u64, Divergence> {
    let opts = RunOptions { step_hashes: true, ..RunOptions::default() };
    let a = run(scenario, seed, &opts);
    let b = run(scenario, seed, &opts);
    for (step, (x, y)) in a.step_hashes.iter().zip(&b.step_hashes).enumerate() {
        if x != y {
            return Err(Divergence {
                step,
                first: format!("{x:016x}"),
                second: format!("{y:016x}"),
            });
        }
    }
    Ok(a.hash)
}

/// Where two runs of one seed first differed.
#[derive(Debug, Clone)]
pub struct Divergence {
    /// The first differing step.
    pub step: usize,
    /// That step in the first run.
    pub first: String,
    /// That step in the second run.
    pub second: String,
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "step {}: first run {:?}, second run {:?}", self.step, self.first, self.second)
    }
}
