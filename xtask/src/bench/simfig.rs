//! Simulator figures: events per second per core and simulated seconds per
//! wall second for `smoke` and `mixed`, and the wall time of the default sweep.

use super::report::Figure;
use super::BenchError;
use crate::sim_cmd::{select, DEFAULT_DETERMINISM_SAMPLE};
use crate::sweep::{run_sweep, SweepPlan};
use meshproxy_sim::scenario::Scenario;
use meshproxy_sim::RunOptions;
use std::path::Path;
use std::time::Instant;

/// Runs `seeds` seeds of `smoke` and `mixed` on this thread (so the rates are
/// per core), and the default sweep on every core when `sweep` is set.
pub fn figures(workspace: &Path, seeds: u64, sweep: bool) -> Result<Vec<Figure>, BenchError> {
    let dir = workspace.join("scenarios");
    let mut out = Vec::new();
    let names = ["smoke".to_owned(), "mixed".to_owned()];
    let scenarios = select(&dir, &names).map_err(|e| BenchError::Sim(e.to_string()))?;
    for s in &scenarios {
        let (mut events, mut sim_micros) = (0u64, 0u64);
        let started = Instant::now();
        for seed in 0..seeds {
            let r = meshproxy_sim::run(s, seed, &RunOptions::default());
            events += r.events;
            sim_micros += r.sim_time.as_micros();
        }
        let wall = started.elapsed().as_secs_f64().max(1e-9);
        out.push(Figure::info(
            &format!("sim.{}.events_per_core_second", s.name),
            &format!("sim {}: events/s per core", s.name),
            "events/s",
            vec![events as f64 / wall],
        ));
        out.push(Figure::info(
            &format!("sim.{}.sim_seconds_per_wall_second", s.name),
            &format!("sim {}: simulated s per wall s", s.name),
            "x",
            vec![sim_micros as f64 / 1e6 / wall],
        ));
    }
    if sweep {
        let all = select(&dir, &[]).map_err(|e| BenchError::Sim(e.to_string()))?;
        out.extend(default_sweep(&all));
    }
    Ok(out)
}

/// The default sweep (`cargo xtask sim` without arguments), timed.
fn default_sweep(scenarios: &[Scenario]) -> Vec<Figure> {
    let jobs = std::thread::available_parallelism().map_or(1, usize::from);
    let plan = SweepPlan {
        scenarios,
        seeds: None,
        first_seed: 0,
        jobs,
        determinism_sample: DEFAULT_DETERMINISM_SAMPLE,
        replay_flags: String::new(),
        interactive: false,
    };
    let opts = RunOptions::default();
    let run = |s: &Scenario, seed: u64| meshproxy_sim::run(s, seed, &opts);
    let report = run_sweep(&plan, &run, &meshproxy_sim::check_determinism);
    let core_seconds: f64 = report.outcomes.iter().map(|o| o.wall.as_secs_f64()).sum();
    let events: u64 =
        report.outcomes.iter().filter_map(|o| o.result.as_ref().ok()).map(|r| r.events).sum();
    vec![
        Figure::info(
            "sim.default_sweep.wall_seconds",
            &format!("sim default sweep wall ({} runs, {jobs} workers)", report.outcomes.len()),
            "s",
            vec![report.elapsed.as_secs_f64()],
        ),
        Figure::info(
            "sim.default_sweep.events_per_core_second",
            "sim default sweep: events/s per core",
            "events/s",
            vec![events as f64 / core_seconds.max(1e-9)],
        ),
    ]
}
