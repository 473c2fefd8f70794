//! The sweep: scenarios × seeds on worker threads, then the summary table,
//! the failures with their replay commands, and the determinism check.
//!
//! The engine is passed in as plain functions so the reporting can be tested
//! with scripted outcomes; `sim_cmd` passes `meshproxy_sim::run` and
//! `meshproxy_sim::check_determinism`.

use crate::pool::{catch_panic, run_indexed};
use crate::table::{rate, thousands, Table};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use meshproxy_sim::nat::{merge_matrix, NatMatrix, PairCounts};
use meshproxy_sim::scenario::Scenario;
use meshproxy_sim::{Divergence, RunReport};
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// Runs one seed of a scenario.
pub type Runner<'a> = &'a (dyn Fn(&Scenario, u64) -> RunReport + Sync);
/// Runs one seed twice and compares.
pub type Checker<'a> = &'a (dyn Fn(&Scenario, u64) -> Result<u64, Divergence> + Sync);

/// What to sweep and how.
#[derive(Debug)]
pub struct SweepPlan<'a> {
    /// The scenarios, in report order.
    pub scenarios: &'a [Scenario],
    /// Seeds per scenario; `None` takes each scenario's own `seeds`.
    pub seeds: Option<u32>,
    /// The first seed of every scenario.
    pub first_seed: u64,
    /// Worker threads.
    pub jobs: usize,
    /// Seeds to re-run for the determinism check.
    pub determinism_sample: usize,
    /// Flags the printed replay commands need besides `--replay NAME:SEED`
    /// (a non-default scenarios directory, an injected bug), with a leading space.
    pub replay_flags: String,
    /// Whether to draw a progress bar (a terminal) or print a line per scenario (a log).
    pub interactive: bool,
}

impl SweepPlan<'_> {
    /// How many seeds scenario `s` runs.
    fn seed_count(&self, s: &Scenario) -> u32 {
        self.seeds.unwrap_or(s.seeds)
    }

    /// Every (scenario index, seed) to run, scenario by scenario.
    fn runs(&self) -> Vec<(usize, u64)> {
        self.scenarios
            .iter()
            .enumerate()
            .flat_map(|(i, s)| {
                (0..u64::from(self.seed_count(s)))
                    .map(move |k| (i, self.first_seed.saturating_add(k)))
            })
            .collect()
    }

    /// The command that replays one seed.
    pub fn replay_command(&self, scenario: &str, seed: u64) -> String {
        format!("cargo xtask sim --replay {scenario}:{seed}{}", self.replay_flags)
    }
}

/// Whether stdout is a terminal, so a progress bar can redraw in place.
pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}

/// What one run left for the report (not the whole report: a sweep holds
/// thousands of these).
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Index into the plan's scenarios.
    pub scenario: usize,
    /// The seed.
    pub seed: u64,
    /// Wall time of the run on its worker.
    pub wall: Duration,
    /// What the engine reported, or the panic that stopped it.
    pub result: Result<RunSummary, String>,
}

impl Outcome {
    /// Whether the run completed without violations.
    pub fn passed(&self) -> bool {
        self.result.as_ref().is_ok_and(|r| r.violations == 0)
    }
}

/// The parts of a `RunReport` the sweep reports.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Events processed.
    pub events: u64,
    /// Virtual time reached, in microseconds.
    pub sim_micros: u64,
    /// The fault kinds the seed turned on.
    pub fault_mix: String,
    /// How many invariant violations.
    pub violations: usize,
    /// The first violation, displayed.
    pub first_violation: Option<String>,
    /// Sessions and hole punches per (client NAT, exit NAT) pair.
    pub nat: NatMatrix,
}

impl From<&RunReport> for RunSummary {
    fn from(r: &RunReport) -> Self {
        RunSummary {
            events: r.events,
            sim_micros: r.sim_time.as_micros(),
            fault_mix: r.fault_mix.clone(),
            violations: r.violations.len(),
            first_violation: r.violations.first().map(ToString::to_string),
            nat: r.nat.clone(),
        }
    }
}

/// A determinism check that failed.
#[derive(Debug, Clone)]
pub struct DeterminismFailure {
    /// Index into the plan's scenarios.
    pub scenario: usize,
    /// The seed.
    pub seed: u64,
    /// The divergence, or the panic that stopped the check.
    pub what: String,
}

/// Everything a sweep found.
#[derive(Debug)]
pub struct SweepReport {
    /// One outcome per run, scenario by scenario, seeds ascending.
    pub outcomes: Vec<Outcome>,
    /// Wall time of the whole sweep (runs only).
    pub elapsed: Duration,
    /// The (scenario index, seed) pairs re-run for determinism.
    pub determinism_checked: Vec<(usize, u64)>,
    /// The checks that failed.
    pub divergences: Vec<DeterminismFailure>,
}

impl SweepReport {
    /// No failed run and no divergence.
    pub fn passed(&self) -> bool {
        self.divergences.is_empty() && self.outcomes.iter().all(Outcome::passed)
    }
}

/// Runs the sweep, printing progress as it goes; the caller prints
/// [`render_report`] afterwards.
pub fn run_sweep(plan: &SweepPlan<'_>, run: Runner<'_>, check: Checker<'_>) -> SweepReport {
    let runs = plan.runs();
    let bar = if plan.interactive {
        // On stdout, with the scenario lines, rather than indicatif's default stderr.
        let bar =
            ProgressBar::with_draw_target(Some(runs.len() as u64), ProgressDrawTarget::stdout());
        if let Ok(style) = ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40.cyan/blue}] {pos}/{len} runs, {msg} (eta {eta})",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message("0 failed");
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut lines = ScenarioLines::new(plan, &runs);
    let mut failed = 0usize;
    let started = Instant::now();
    let outcomes = run_indexed(
        runs.len(),
        plan.jobs,
        |i| {
            let (scenario, seed) = runs[i];
            let s = &plan.scenarios[scenario];
            let t0 = Instant::now();
            let result = catch_panic(|| RunSummary::from(&run(s, seed)));
            Outcome { scenario, seed, wall: t0.elapsed(), result }
        },
        |_, outcome| {
            if !outcome.passed() {
                failed += 1;
                bar.set_message(format!("{failed} failed"));
            }
            bar.inc(1);
            for line in lines.finished(outcome) {
                if plan.interactive {
                    bar.println(line);
                } else {
                    println!("{line}");
                }
            }
        },
    );
    let elapsed = started.elapsed();
    bar.finish_and_clear();

    let sample = determinism_sample(plan, plan.determinism_sample);
    let checks = run_indexed(
        sample.len(),
        plan.jobs,
        |i| {
            let (scenario, seed) = sample[i];
            match catch_panic(|| check(&plan.scenarios[scenario], seed)) {
                Ok(Ok(_hash)) => None,
                Ok(Err(divergence)) => {
                    Some(DeterminismFailure { scenario, seed, what: divergence.to_string() })
                }
                Err(panic) => Some(DeterminismFailure {
                    scenario,
                    seed,
                    what: format!("the check panicked: {panic}"),
                }),
            }
        },
        |_, _| {},
    );
    SweepReport {
        outcomes,
        elapsed,
        determinism_checked: sample,
        divergences: checks.into_iter().flatten().collect(),
    }
}

/// Prints a line per scenario as it completes, in scenario order whatever
/// order the workers finish in, so CI logs read the same on every machine.
struct ScenarioLines<'a> {
    plan: &'a SweepPlan<'a>,
    remaining: Vec<usize>,
    failed: Vec<usize>,
    wall: Vec<Duration>,
    next: usize,
}

impl<'a> ScenarioLines<'a> {
    fn new(plan: &'a SweepPlan<'a>, runs: &[(usize, u64)]) -> Self {
        let n = plan.scenarios.len();
        let mut remaining = vec![0; n];
        for &(s, _) in runs {
            remaining[s] += 1;
        }
        ScenarioLines {
            plan,
            remaining,
            failed: vec![0; n],
            wall: vec![Duration::ZERO; n],
            next: 0,
        }
    }

    fn finished(&mut self, outcome: &Outcome) -> Vec<String> {
        let s = outcome.scenario;
        self.remaining[s] = self.remaining[s].saturating_sub(1);
        self.wall[s] += outcome.wall;
        if !outcome.passed() {
            self.failed[s] += 1;
        }
        let mut lines = Vec::new();
        while self.next < self.remaining.len() && self.remaining[self.next] == 0 {
            let i = self.next;
            let scenario = &self.plan.scenarios[i];
            lines.push(format!(
                "{}: {} runs, {} failed, {:.2} s",
                scenario.name,
                self.plan.seed_count(scenario),
                self.failed[i],
                self.wall[i].as_secs_f64()
            ));
            self.next += 1;
        }
        lines
    }
}

/// Picks `k` (scenario, seed) pairs spread across the scenarios (all of them
/// when `k` allows, evenly spaced otherwise) and across each scenario's seeds.
pub fn determinism_sample(plan: &SweepPlan<'_>, k: usize) -> Vec<(usize, u64)> {
    let n = plan.scenarios.len();
    if n == 0 || k == 0 {
        return Vec::new();
    }
    let mut picks = vec![0usize; n];
    for i in 0..k {
        let s = if k < n { i * n / k } else { i % n };
        picks[s] += 1;
    }
    let mut sample = Vec::new();
    for (s, &p) in picks.iter().enumerate() {
        let count = u64::from(plan.seed_count(&plan.scenarios[s]));
        let p = (p as u64).min(count);
        let mut seeds: Vec<u64> =
            (0..p).map(|j| plan.first_seed.saturating_add((2 * j + 1) * count / (2 * p))).collect();
        seeds.dedup();
        sample.extend(seeds.into_iter().map(|seed| (s, seed)));
    }
    sample
}

/// The summary table, the failures with replay commands, and the
/// determinism verdict.
pub fn render_report(plan: &SweepPlan<'_>, report: &SweepReport) -> String {
    let mut out = String::new();
    let mut table = Table::new([
        "scenario",
        "runs",
        "failed",
        "events",
        "sim s",
        "wall s",
        "events/s/core",
        "sim s/wall s",
    ]);
    let mut total = Totals::default();
    for (i, scenario) in plan.scenarios.iter().enumerate() {
        let mut t = Totals::default();
        for o in report.outcomes.iter().filter(|o| o.scenario == i) {
            t.add(o);
        }
        table.row(t.cells(&scenario.name));
        total.merge(&t);
    }
    table.footer(total.cells("total"));
    out.push_str(&table.render());
    for (i, scenario) in plan.scenarios.iter().enumerate() {
        if let Some(text) = render_nat_matrix(&scenario.name, i, report) {
            out.push_str("\n\n");
            out.push_str(&text);
        }
    }
    let _ = writeln!(
        out,
        "\n\n{} runs in {:.2} s on {} worker{} (wall s sums each run's time on its core)",
        thousands(total.runs),
        report.elapsed.as_secs_f64(),
        plan.jobs,
        if plan.jobs == 1 { "" } else { "s" },
    );

    let failures: Vec<&Outcome> = report.outcomes.iter().filter(|o| !o.passed()).collect();
    if !failures.is_empty() {
        let _ = writeln!(out, "\nFAILURES ({}):", failures.len());
        for o in failures {
            let name = &plan.scenarios[o.scenario].name;
            match &o.result {
                Ok(r) => {
                    let _ = writeln!(out, "  {name} seed {} [faults: {}]", o.seed, r.fault_mix);
                    let more = r.violations.saturating_sub(1);
                    let first = r.first_violation.as_deref().unwrap_or("?");
                    let _ = write!(out, "    {first}");
                    if more > 0 {
                        let _ = write!(out, " (+{more} more)");
                    }
                    out.push('\n');
                }
                Err(panic) => {
                    let _ = writeln!(out, "  {name} seed {} [faults: unknown]", o.seed);
                    let _ = writeln!(out, "    the engine panicked: {panic}");
                }
            }
            let _ = writeln!(out, "    replay: {}", plan.replay_command(name, o.seed));
        }
    }

    out.push('\n');
    if report.determinism_checked.is_empty() {
        out.push_str("determinism: not checked (--determinism-sample 0)\n");
    } else if report.divergences.is_empty() {
        let seeds: Vec<String> = report
            .determinism_checked
            .iter()
            .map(|&(s, seed)| format!("{}:{seed}", plan.scenarios[s].name))
            .collect();
        let _ = writeln!(
            out,
            "determinism: {} seeds run twice, identical: {}",
            seeds.len(),
            seeds.join(" ")
        );
    } else {
        let _ = writeln!(
            out,
            "DETERMINISM: {} of {} seeds diverged:",
            report.divergences.len(),
            report.determinism_checked.len()
        );
        for d in &report.divergences {
            let name = &plan.scenarios[d.scenario].name;
            let _ = writeln!(out, "  {name}:{} {}", d.seed, d.what);
            let _ = writeln!(out, "    replay: {}", plan.replay_command(name, d.seed));
        }
    }
    let verdict = if report.passed() { "PASSED" } else { "FAILED" };
    let _ = writeln!(out, "sim: {verdict}");
    out
}

/// The per-NAT-pair table of scenario `i` (summed over its runs), if it
/// models NAT: how each (client NAT, exit NAT) pair's sessions went, and how
/// its hole punches went.
pub fn render_nat_matrix(name: &str, i: usize, report: &SweepReport) -> Option<String> {
    let mut matrix = NatMatrix::new();
    let mut runs = 0u64;
    for o in report.outcomes.iter().filter(|o| o.scenario == i) {
        if let Ok(r) = &o.result {
            merge_matrix(&mut matrix, &r.nat);
            runs += 1;
        }
    }
    if matrix.is_empty() {
        return None;
    }
    let mut table = Table::new([
        "client NAT × exit NAT",
        "sessions",
        "direct",
        "relayed",
        "failed",
        "direct %",
        "punches",
        "punched",
    ]);
    let cells = |label: String, c: &PairCounts| {
        let sessions = c.direct + c.relayed + c.failed;
        let share = if sessions == 0 {
            "-".to_owned()
        } else {
            format!("{:.0}", 100.0 * c.direct as f64 / sessions as f64)
        };
        vec![
            label,
            thousands(sessions),
            thousands(c.direct),
            thousands(c.relayed),
            thousands(c.failed),
            share,
            thousands(c.punches),
            thousands(c.punched),
        ]
    };
    let mut total = PairCounts::default();
    for ((client, exit), counts) in &matrix {
        let exit = exit.map_or_else(|| "(no exit)".to_owned(), |e| e.to_string());
        table.row(cells(format!("{client} × {exit}"), counts));
        total.merge(counts);
    }
    table.footer(cells("total".to_owned(), &total));
    Some(format!(
        "NAT pairs of {name} ({runs} runs; sessions that can complete, probes excluded):\n{}",
        table.render()
    ))
}

/// Sums for one table row.
#[derive(Debug, Default)]
struct Totals {
    runs: u64,
    failed: u64,
    events: u64,
    sim_micros: u64,
    wall: Duration,
}

impl Totals {
    fn add(&mut self, o: &Outcome) {
        self.runs += 1;
        self.wall += o.wall;
        if !o.passed() {
            self.failed += 1;
        }
        if let Ok(r) = &o.result {
            self.events = self.events.saturating_add(r.events);
            self.sim_micros = self.sim_micros.saturating_add(r.sim_micros);
        }
    }

    fn merge(&mut self, other: &Totals) {
        self.runs += other.runs;
        self.failed += other.failed;
        self.events = self.events.saturating_add(other.events);
        self.sim_micros = self.sim_micros.saturating_add(other.sim_micros);
        self.wall += other.wall;
    }

    fn cells(&self, name: &str) -> Vec<String> {
        let wall = self.wall.as_secs_f64();
        let sim = self.sim_micros as f64 / 1e6;
        vec![
            name.to_owned(),
            thousands(self.runs),
            thousands(self.failed),
            thousands(self.events),
            thousands(sim.round() as u64),
            format!("{wall:.2}"),
            rate(self.events as f64, wall),
            rate(sim, wall),
        ]
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test that panics on a surprise is doing its job
mod tests {
    use super::*;
    use meshproxy_core::time::Instant as SimInstant;
    use meshproxy_sim::scenario::parse_str;
    use meshproxy_sim::{Plan, RunStats, Violation};
    use std::path::Path;

    fn scenario(name: &str, seeds: u32) -> Scenario {
        let text = format!(
            r#"
name = "{name}"
description = ""
seeds = {seeds}
duration_secs = 30
settle_secs = 20
liveness_bound_secs = 15
topology = {{ hubs = 1, exits = 1, clients = 1 }}
listeners = [{{}}]
[workload]
connections = 1
payload_min = 0
payload_max = 0
destinations = [{{ kind = "echo", weight = 1 }}]
"#
        );
        parse_str(Path::new(&format!("{name}.toml")), &text).unwrap()
    }

    fn report(s: &Scenario, seed: u64, failing: bool) -> RunReport {
        let violations = if failing {
            vec![
                Violation {
                    at: SimInstant::from_micros(2_500_000),
                    invariant: "integrity",
                    detail: format!("byte 7 differs (seed {seed})"),
                },
                Violation {
                    at: SimInstant::from_micros(3_000_000),
                    invariant: "no leaks",
                    detail: String::new(),
                },
            ]
        } else {
            Vec::new()
        };
        RunReport {
            scenario: s.name.clone(),
            seed,
            hash: seed,
            events: 100,
            sim_time: SimInstant::from_micros(50_000_000),
            violations,
            trace: Vec::new(),
            step_hashes: Vec::new(),
            step_starts: Vec::new(),
            fault_mix: "partition".to_owned(),
            plan: Plan::default(),
            stats: RunStats::default(),
            nat: NatMatrix::new(),
        }
    }

    fn plan<'a>(scenarios: &'a [Scenario], seeds: Option<u32>, sample: usize) -> SweepPlan<'a> {
        SweepPlan {
            scenarios,
            seeds,
            first_seed: 10,
            jobs: 3,
            determinism_sample: sample,
            replay_flags: " --scenarios elsewhere".to_owned(),
            interactive: false,
        }
    }

    #[test]
    fn failures_are_reported_in_order_with_replay_commands() {
        let scenarios = [scenario("alpha", 5), scenario("beta", 4)];
        let plan = plan(&scenarios, None, 3);
        let run = |s: &Scenario, seed: u64| {
            if s.name == "beta" && seed == 12 {
                panic!("engine fell over");
            }
            report(s, seed, s.name == "alpha" && seed % 2 == 1)
        };
        let check = |s: &Scenario, seed: u64| {
            if s.name == "beta" {
                Err(Divergence { step: 42, first: "a".into(), second: "b".into() })
            } else {
                Ok(seed)
            }
        };
        let report = run_sweep(&plan, &run, &check);
        let order: Vec<_> = report.outcomes.iter().map(|o| (o.scenario, o.seed)).collect();
        assert_eq!(
            order,
            [(0, 10), (0, 11), (0, 12), (0, 13), (0, 14), (1, 10), (1, 11), (1, 12), (1, 13)]
        );
        assert!(!report.passed());

        let text = render_report(&plan, &report);
        let alpha_row = text.lines().find(|l| l.starts_with("alpha")).unwrap();
        let cells: Vec<_> = alpha_row.split_whitespace().collect();
        assert_eq!(&cells[..5], ["alpha", "5", "2", "500", "250"]);
        let total_row = text.lines().find(|l| l.starts_with("total")).unwrap();
        assert_eq!(
            &total_row.split_whitespace().collect::<Vec<_>>()[..4],
            ["total", "9", "3", "800"]
        );

        let failures = &text[text.find("FAILURES (3):").unwrap()..];
        let a11 = failures.find("alpha seed 11 [faults: partition]").unwrap();
        let a13 = failures.find("alpha seed 13").unwrap();
        let b12 = failures.find("beta seed 12 [faults: unknown]").unwrap();
        assert!(a11 < a13 && a13 < b12, "{failures}");
        assert!(
            failures.contains("[2.500000s] integrity: byte 7 differs (seed 11) (+1 more)"),
            "{failures}"
        );
        assert!(
            failures.contains("replay: cargo xtask sim --replay alpha:11 --scenarios elsewhere")
        );
        assert!(failures.contains("the engine panicked: engine fell over (at "), "{failures}");

        assert_eq!(report.determinism_checked, [(0, 11), (0, 13), (1, 12)]);
        assert!(text.contains("DETERMINISM: "), "{text}");
        assert!(text.contains("step 42"), "{text}");
        assert!(text.ends_with("sim: FAILED\n"));
    }

    #[test]
    fn a_clean_sweep_passes_and_names_the_seeds_it_rechecked() {
        let scenarios = [scenario("alpha", 3)];
        let plan = plan(&scenarios, Some(2), 4);
        let report = run_sweep(&plan, &|s, seed| report(s, seed, false), &|_, seed| Ok(seed));
        assert!(report.passed());
        assert_eq!(report.outcomes.len(), 2);
        let text = render_report(&plan, &report);
        assert!(
            text.contains("determinism: 2 seeds run twice, identical: alpha:10 alpha:11"),
            "{text}"
        );
        assert!(!text.contains("FAILURES"));
        assert!(text.ends_with("sim: PASSED\n"));
    }

    #[test]
    fn the_determinism_sample_spreads_over_scenarios_and_seeds() {
        let scenarios: Vec<_> = ["a", "b", "c", "d"].iter().map(|n| scenario(n, 100)).collect();
        let mut p = plan(&scenarios, None, 0);
        p.first_seed = 0;
        // Fewer picks than scenarios: spaced out, not just the first ones.
        assert_eq!(determinism_sample(&p, 2), [(0, 50), (2, 50)]);
        // More: every scenario, seeds evenly spaced within each.
        assert_eq!(
            determinism_sample(&p, 6),
            [(0, 25), (0, 75), (1, 25), (1, 75), (2, 50), (3, 50)]
        );
        assert!(determinism_sample(&p, 0).is_empty());
        // Never more picks than a scenario has seeds.
        p.seeds = Some(1);
        assert_eq!(determinism_sample(&p, 16), [(0, 0), (1, 0), (2, 0), (3, 0)]);
    }

    #[test]
    fn the_nat_table_sums_pairs_over_runs_and_only_for_nat_scenarios() {
        use meshproxy_sim::scenario::NatType;
        let scenarios = [scenario("nat", 2), scenario("plain", 1)];
        let plan = plan(&scenarios, None, 0);
        let run = |s: &Scenario, seed: u64| {
            let mut r = report(s, seed, false);
            if s.name == "nat" {
                let pair = r.nat.entry((NatType::Symmetric, Some(NatType::FullCone))).or_default();
                pair.direct = 3;
                pair.relayed = 1;
                pair.punches = 2;
                pair.punched = 1;
                r.nat.entry((NatType::None, None)).or_default().failed = 1;
            }
            r
        };
        let report = run_sweep(&plan, &run, &|_, seed| Ok(seed));
        let text = render_report(&plan, &report);
        assert!(text.contains("NAT pairs of nat (2 runs;"), "{text}");
        assert!(!text.contains("NAT pairs of plain"), "{text}");
        let row = |label: &str| {
            // The last match: the summary table has a total row too.
            let line = text.lines().rev().find(|l| l.starts_with(label)).unwrap();
            line[label.len()..].split_whitespace().map(str::to_owned).collect::<Vec<_>>()
        };
        assert_eq!(row("symmetric × full_cone"), ["8", "6", "2", "0", "75", "4", "2"]);
        assert_eq!(row("none × (no exit)"), ["2", "0", "0", "2", "0", "0", "0"]);
        assert_eq!(row("total"), ["10", "6", "2", "2", "60", "4", "2"]);
    }

    #[test]
    fn scenario_lines_come_out_in_scenario_order() {
        let scenarios = [scenario("a", 2), scenario("b", 1)];
        let p = plan(&scenarios, None, 0);
        let runs = p.runs();
        let mut lines = ScenarioLines::new(&p, &runs);
        let outcome = |scenario, seed| Outcome {
            scenario,
            seed,
            wall: Duration::from_millis(500),
            result: Ok(RunSummary::from(&report(&scenarios[scenario], seed, false))),
        };
        assert!(lines.finished(&outcome(1, 10)).is_empty());
        assert!(lines.finished(&outcome(0, 11)).is_empty());
        assert_eq!(
            lines.finished(&outcome(0, 10)),
            ["a: 2 runs, 0 failed, 1.00 s", "b: 1 runs, 0 failed, 0.50 s"]
        );
    }
}
