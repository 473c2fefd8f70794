//! meshproxy's deterministic simulator.
//!
//! One run = one scenario × one seed, on one thread: a binary heap of
//! `(virtual time, sequence, event)`, one ChaCha8 RNG from the seed, and the
//! real [`meshproxy_core::Node`] state machines for every hub, exit and
//! client. The simulator plays the outside world — the network (latency,
//! jitter, bandwidth, partitions, resets), the data plane (splices), DNS,
//! apps that verify every byte, origins with scripted behaviours — and checks
//! the invariants of DESIGN §4 as it goes. A run's trace hash is a pure
//! function of (scenario, seed, plan), so any failure replays exactly.
//!
//! ```text
//!  plan (from seed) ─▶ event heap ─▶ World::step ─▶ Node::handle_* ─▶ poll_output ─▶ network model
//!                          ▲                                                               │
//!                          └───────────────────────── scheduled arrivals ◀─────────────────┘
//! ```
//!
//! Layout: `scenario` (the file format; `scenario/adversaries` its
//! `[adversaries]` and `[limits]` tables), `plan` (what a seed injects),
//! `topology` (node configs, origins, DNS, the leaked admission keys),
//! `world` (the event loop, split by job into `world/{nodes, net, splice,
//! apps, origins, faults, checks}`; `world/relay` the NAT and relay model,
//! `world/admission` the admission invariants, `world/adversary` the
//! misbehaving apps and peers, `world/ingress` public requests at gateways,
//! `world/ingress_availability` and `world/ingress_load` their availability
//! and load checks), `ingress_model` (the gateways' route table and what
//! each request must get),
//! `nat` (NAT types' numbers and the per-pair table), `bytes_model` (self-verifying stream
//! contents), `app_proto` (the app side of SOCKS5/HTTP), `oracle` (an
//! independent exit-policy judge), `hostile` (the exit-policy destinations), `trace` (trace lines and running hash).
#![forbid(unsafe_code)]

mod app_proto;
mod bytes_model;
pub mod fuzz;
mod hostile;
mod ingress_model;
pub mod nat;
mod oracle;
pub mod plan;
pub mod scenario;
mod topology;
mod trace;
mod world;

pub use plan::Plan;
pub use scenario::*;

use core::fmt;
use meshproxy_core::time::Instant;
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;

/// A bug the simulator can plant (in its data plane, or in the nodes'
/// configs), to prove that the invariants catch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InjectedBug {
    /// A splice turns a reset on one side into a clean end on the other
    /// (silent truncation).
    ResetBecomesFin,
    /// Exits skip the ticket check: every exit is configured `open`, so it
    /// serves strangers a hub never admitted. (The core has no bug hooks;
    /// an exit that serves without a ticket is exactly what `open` does, so
    /// the simulator plants it through the config.) The `admission` and
    /// `adversary` invariants must catch it wherever ticketless strangers run.
    ExitSkipsTicket,
    /// Gateways try their routes in reverse priority order (planted through
    /// the route table, like `ExitSkipsTicket`): the ingress routing
    /// invariant must catch it.
    IngressPriorityReversed,
    /// The gateway's HTTP side never reports the end of a forwarded request
    /// (`IngressDone`): the gateway keeps it, and the no-leaks invariant
    /// must catch it.
    IngressForgetsDone,
    /// Gateways keep using an agent after their connection to it closed
    /// (planted by never telling a gateway that an agent connection closed,
    /// see `world/ingress_availability.rs`): the `availability` invariant
    /// must catch it.
    IngressStaleAgent,
}

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Collect the human-readable trace.
    pub trace: bool,
    /// Record the running hash after every step (for the determinism check).
    pub step_hashes: bool,
    /// Run this plan instead of the one the seed draws (shrinking).
    pub plan: Option<Plan>,
    /// Plant a bug in the data plane.
    pub bug: Option<InjectedBug>,
}

/// Counts of what the apps experienced.
#[derive(Debug, Clone, Default)]
pub struct RunStats {
    pub app_connections: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub bytes: u64,
}

/// An invariant that did not hold.
#[derive(Debug, Clone)]
pub struct Violation {
    pub at: Instant,
    pub invariant: &'static str,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}: {}", self.at, self.invariant, self.detail)
    }
}

/// What one run did.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub scenario: String,
    pub seed: u64,
    pub hash: u64,
    pub events: u64,
    pub sim_time: Instant,
    pub violations: Vec<Violation>,
    pub trace: Vec<String>,
    pub step_hashes: Vec<u64>,
    /// Index into `trace` where each step's lines begin.
    pub step_starts: Vec<usize>,
    pub fault_mix: String,
    pub plan: Plan,
    pub stats: RunStats,
    /// Sessions and hole punches per (client NAT, exit NAT) pair; empty
    /// unless the scenario models NAT.
    pub nat: nat::NatMatrix,
}

impl RunReport {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// A seeded RNG for one purpose (`stream`) of one run.
pub(crate) fn rng_for(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// The seed of node `n`'s core in its `generation`th life.
pub(crate) fn node_seed(draw: u64, n: u32, generation: u32) -> u64 {
    draw ^ (u64::from(n) << 32) ^ u64::from(generation)
}

/// The pattern key of direction `dir` of app connection `tag`.
pub(crate) fn key(tag: u64, dir: u64) -> u64 {
    tag.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ dir
}

/// Runs `scenario` with `seed`.
pub fn run(scenario: &Scenario, seed: u64, opts: &RunOptions) -> RunReport {
    let plan = match &opts.plan {
        Some(p) => p.clone(),
        None => plan::generate(scenario, &mut rng_for(seed, 0)),
    };
    let trace = trace::Trace::new(opts.trace, opts.step_hashes);
    let mut world = world::World::new(scenario, seed, &plan, trace, opts.bug);
    world.run();
    let sim_time = world.now;
    let events = world.events;
    let violations = std::mem::take(&mut world.violations);
    let stats = world.stats.clone();
    let nat = std::mem::take(&mut world.nat_matrix);
    let trace = std::mem::take(&mut world.trace);
    RunReport {
        scenario: scenario.name.clone(),
        seed,
        hash: trace.hash(),
        events,
        sim_time,
        violations,
        fault_mix: plan.fault_mix(),
        trace: trace.lines,
        step_hashes: trace.step_hashes,
        step_starts: trace.step_starts,
        plan,
        stats,
        nat,
    }
}

/// The result of shrinking a failing run.
#[derive(Debug, Clone)]
pub struct ShrinkReport {
    /// Items in the original plan.
    pub original: usize,
    /// The smallest plan found that still fails the same invariant.
    pub minimal: Plan,
    /// The run of the minimal plan.
    pub report: RunReport,
}

/// Reduces a failing seed's plan to a minimal one that still violates the
/// same invariant (greedy delta debugging: drop halves, then quarters, …,
/// then single items, while the failure persists). `None` if the seed passes.
pub fn shrink(
    scenario: &Scenario,
    seed: u64,
    bug: Option<InjectedBug>,
    progress: &mut dyn FnMut(&str),
) -> Option<ShrinkReport> {
    let first = run(scenario, seed, &RunOptions { bug, ..RunOptions::default() });
    let target = first.violations.first()?.invariant;
    let original = first.plan.len();
    let mut best = first.plan.clone();
    let mut best_report = first;
    let fails = |plan: &Plan| {
        let opts = RunOptions { plan: Some(plan.clone()), bug, ..RunOptions::default() };
        let r = run(scenario, seed, &opts);
        let hit = r.violations.iter().any(|v| v.invariant == target);
        (hit, r)
    };
    let mut chunk = best.len().div_ceil(2).max(1);
    loop {
        let mut i = 0;
        let mut removed_any = false;
        while i < best.items.len() {
            let mut candidate = best.clone();
            let end = (i + chunk).min(candidate.items.len());
            candidate.items.drain(i..end);
            let (hit, r) = fails(&candidate);
            if hit {
                progress(&format!(
                    "{} → {} items still fail {target}",
                    best.len(),
                    candidate.len()
                ));
                best = candidate;
                best_report = r;
                removed_any = true;
            } else {
                i += chunk;
            }
        }
        if chunk == 1 && !removed_any {
            break;
        }
        if !removed_any {
            chunk = chunk.div_ceil(2);
        }
    }
    Some(ShrinkReport { original, minimal: best, report: best_report })
}

/// Two runs of the same seed that did not agree.
#[derive(Debug, Clone)]
pub struct Divergence {
    /// The first step whose running hash differs.
    pub step: usize,
    /// That step's trace in the first run.
    pub first: String,
    /// That step's trace in the second run.
    pub second: String,
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "runs diverge at step {}:\n  first:  {}\n  second: {}",
            self.step, self.first, self.second
        )
    }
}

/// Runs `seed` twice and compares every step; the hash if they agree.
pub fn check_determinism(scenario: &Scenario, seed: u64) -> Result<u64, Divergence> {
    let opts = RunOptions { trace: true, step_hashes: true, ..RunOptions::default() };
    let a = run(scenario, seed, &opts);
    let b = run(scenario, seed, &opts);
    if a.hash == b.hash && a.step_hashes == b.step_hashes {
        return Ok(a.hash);
    }
    let step = a
        .step_hashes
        .iter()
        .zip(&b.step_hashes)
        .position(|(x, y)| x != y)
        .unwrap_or(a.step_hashes.len().min(b.step_hashes.len()));
    let lines = |r: &RunReport| {
        let start = if step == 0 { 0 } else { r.step_starts.get(step - 1).copied().unwrap_or(0) };
        let end = r.step_starts.get(step).copied().unwrap_or(r.trace.len());
        r.trace.get(start..end).map(|l| l.join(" | ")).unwrap_or_default()
    };
    Err(Divergence { step, first: lines(&a), second: lines(&b) })
}
