//! `cargo xtask sim`: the arguments, scenario selection, and the three modes
//! (sweep, `--replay NAME:SEED`, `--shrink NAME:SEED`).

use crate::sweep::{render_report, run_sweep, stdout_is_terminal, SweepPlan};
use clap::{value_parser, Args, ValueEnum};
use meshproxy_sim::scenario::{load_dir, Scenario, ScenarioError};
use meshproxy_sim::{InjectedBug, RunOptions};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

/// Seeds a sweep re-runs to check determinism unless told otherwise.
pub const DEFAULT_DETERMINISM_SAMPLE: usize = 16;

/// Arguments of `cargo xtask sim`.
#[derive(Debug, Clone, Args)]
pub struct SimArgs {
    /// Scenarios to sweep, by name (the file stem); all in the scenarios
    /// directory when none are given.
    #[arg(value_name = "SCENARIO")]
    pub names: Vec<String>,

    /// Seeds per scenario, instead of each scenario's own `seeds`.
    #[arg(long, value_name = "N", value_parser = value_parser!(u32).range(1..))]
    pub seeds: Option<u32>,

    /// First seed: each scenario runs seeds S, S+1, … S+N-1.
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub first_seed: u64,

    /// Worker threads [default: all cores].
    #[arg(long, short = 'j', value_name = "J")]
    pub jobs: Option<NonZeroUsize>,

    /// Directory of scenario files [default: the workspace's scenarios/].
    #[arg(long = "scenarios", value_name = "DIR")]
    pub scenarios_dir: Option<PathBuf>,

    /// After the sweep, run this many seeds twice (spread across the
    /// scenarios) and compare their step hashes; 0 skips the check.
    #[arg(long, value_name = "K", default_value_t = DEFAULT_DETERMINISM_SAMPLE)]
    pub determinism_sample: usize,

    /// Replay one seed: print its trace, hash, fault mix, plan and
    /// violations, then run it again to confirm the hash is identical.
    #[arg(
        long,
        value_name = "NAME:SEED",
        conflicts_with_all = ["names", "seeds", "first_seed", "jobs", "determinism_sample", "shrink"]
    )]
    pub replay: Option<RunTarget>,

    /// With --replay: write the trace to FILE instead of printing it.
    #[arg(long, value_name = "FILE", requires = "replay")]
    pub trace_out: Option<PathBuf>,

    /// Shrink a failing seed: reduce its recorded inputs and faults to a
    /// minimal set that still fails, and print it.
    #[arg(
        long,
        value_name = "NAME:SEED",
        conflicts_with_all = ["names", "seeds", "first_seed", "jobs", "determinism_sample"]
    )]
    pub shrink: Option<RunTarget>,

    /// Run with a deliberately injected engine bug, to prove the invariants
    /// catch it (the sweep is then expected to fail). With --shrink, shrinks
    /// the failure the bug causes.
    #[arg(long, value_enum, value_name = "BUG")]
    pub inject_bug: Option<BugArg>,
}

impl SimArgs {
    /// The sweep CI runs: every scenario at its default seeds, from seed 0.
    pub fn default_sweep() -> Self {
        SimArgs {
            names: Vec::new(),
            seeds: None,
            first_seed: 0,
            jobs: None,
            scenarios_dir: None,
            determinism_sample: DEFAULT_DETERMINISM_SAMPLE,
            replay: None,
            trace_out: None,
            shrink: None,
            inject_bug: None,
        }
    }

    fn dir(&self) -> PathBuf {
        self.scenarios_dir.clone().unwrap_or_else(|| crate::workspace_root().join("scenarios"))
    }

    fn bug(&self) -> Option<InjectedBug> {
        self.inject_bug.map(|b| match b {
            BugArg::ResetBecomesFin => InjectedBug::ResetBecomesFin,
            BugArg::ExitSkipsTicket => InjectedBug::ExitSkipsTicket,
            BugArg::IngressPriorityReversed => InjectedBug::IngressPriorityReversed,
            BugArg::IngressForgetsDone => InjectedBug::IngressForgetsDone,
            BugArg::IngressStaleAgent => InjectedBug::IngressStaleAgent,
        })
    }

    /// Flags a replay command must repeat to reproduce a run of this invocation.
    fn replay_flags(&self) -> String {
        let mut flags = String::new();
        if let Some(dir) = &self.scenarios_dir {
            flags.push_str(&format!(" --scenarios {}", dir.display()));
        }
        if let Some(bug) = self.inject_bug {
            if let Some(value) = bug.to_possible_value() {
                flags.push_str(&format!(" --inject-bug {}", value.get_name()));
            }
        }
        flags
    }
}

/// Engine bugs that can be injected from the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BugArg {
    /// The splice reports an origin's reset to the app as a clean end of stream.
    ResetBecomesFin,
    /// Exits serve peers without a valid ticket (as if every exit were `open`).
    ExitSkipsTicket,
    /// Gateways try their routes in reverse priority order.
    IngressPriorityReversed,
    /// The gateway's HTTP side never reports a forwarded request's end.
    IngressForgetsDone,
    /// Gateways keep using an agent after their connection to it closed.
    IngressStaleAgent,
}

/// One seed of one scenario, written `NAME:SEED`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunTarget {
    /// The scenario's name.
    pub scenario: String,
    /// The seed.
    pub seed: u64,
}

/// Why a `NAME:SEED` argument was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunTargetError {
    /// There is no `:` separating the name from the seed.
    #[error("expected NAME:SEED, e.g. smoke:17 (no `:` in {0:?})")]
    MissingColon(String),
    /// The part before the `:` is empty.
    #[error("expected NAME:SEED, e.g. smoke:17 (the name is empty)")]
    EmptyName,
    /// The part after the `:` is not a u64.
    #[error("expected NAME:SEED, e.g. smoke:17 (the seed {0:?} is not a whole number ≤ 2^64-1)")]
    BadSeed(String),
}

impl FromStr for RunTarget {
    type Err = RunTargetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, seed) =
            s.rsplit_once(':').ok_or_else(|| RunTargetError::MissingColon(s.to_owned()))?;
        if name.is_empty() {
            return Err(RunTargetError::EmptyName);
        }
        let seed = seed.parse().map_err(|_| RunTargetError::BadSeed(seed.to_owned()))?;
        Ok(RunTarget { scenario: name.to_owned(), seed })
    }
}

/// Why the sim command could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A scenario file failed to load.
    #[error("{0}")]
    Load(#[from] ScenarioError),
    /// A name on the command line matches no scenario file.
    #[error("unknown scenario `{name}` in {dir}; available: {available}")]
    UnknownScenario {
        /// The name asked for.
        name: String,
        /// The directory searched.
        dir: String,
        /// The names there, comma-separated.
        available: String,
    },
    /// The scenarios directory has no scenario files.
    #[error("no scenario files (*.toml) in {0}")]
    NoScenarios(String),
    /// `--first-seed` plus the seed count does not fit in a u64.
    #[error("seeds {first}.. plus {count} runs past the largest seed (2^64-1)")]
    SeedOverflow {
        /// The first seed.
        first: u64,
        /// The most seeds any selected scenario runs.
        count: u32,
    },
    /// The trace file could not be written.
    #[error("cannot write the trace to {path}: {source}")]
    TraceOut {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Runs `cargo xtask sim`; `Ok(false)` means it ran and found failures.
pub fn run(args: &SimArgs) -> Result<bool, SimError> {
    if let Some(target) = &args.replay {
        replay(args, target)
    } else if let Some(target) = &args.shrink {
        shrink(args, target)
    } else {
        sweep(args)
    }
}

/// The named scenarios from `dir` in the order given (duplicates dropped), or
/// all of them in name order when none are named.
pub fn select(dir: &Path, names: &[String]) -> Result<Vec<Scenario>, SimError> {
    let all = load_dir(dir)?;
    if all.is_empty() {
        return Err(SimError::NoScenarios(dir.display().to_string()));
    }
    if names.is_empty() {
        return Ok(all);
    }
    let mut chosen: Vec<Scenario> = Vec::new();
    for name in names {
        if chosen.iter().any(|s| &s.name == name) {
            continue;
        }
        match all.iter().find(|s| &s.name == name) {
            Some(s) => chosen.push(s.clone()),
            None => {
                return Err(SimError::UnknownScenario {
                    name: name.clone(),
                    dir: dir.display().to_string(),
                    available: all.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", "),
                })
            }
        }
    }
    Ok(chosen)
}

fn sweep(args: &SimArgs) -> Result<bool, SimError> {
    let dir = args.dir();
    let scenarios = select(&dir, &args.names)?;
    let most = scenarios.iter().map(|s| args.seeds.unwrap_or(s.seeds)).max().unwrap_or(0);
    if args.first_seed.checked_add(u64::from(most)).is_none() {
        return Err(SimError::SeedOverflow { first: args.first_seed, count: most });
    }
    let jobs = args
        .jobs
        .or_else(|| std::thread::available_parallelism().ok())
        .map_or(1, NonZeroUsize::get);
    let plan = SweepPlan {
        scenarios: &scenarios,
        seeds: args.seeds,
        first_seed: args.first_seed,
        jobs,
        determinism_sample: args.determinism_sample,
        replay_flags: args.replay_flags(),
        interactive: stdout_is_terminal(),
    };
    let runs: u64 = scenarios.iter().map(|s| u64::from(args.seeds.unwrap_or(s.seeds))).sum();
    println!(
        "sim: {} scenario{} from {}, {runs} runs from seed {}, {jobs} worker{}{}",
        scenarios.len(),
        if scenarios.len() == 1 { "" } else { "s" },
        dir.display(),
        args.first_seed,
        if jobs == 1 { "" } else { "s" },
        match args.bug() {
            Some(bug) => format!(", injected bug {bug:?}"),
            None => String::new(),
        }
    );
    let opts = RunOptions { bug: args.bug(), ..RunOptions::default() };
    let run = |s: &Scenario, seed: u64| meshproxy_sim::run(s, seed, &opts);
    let report = run_sweep(&plan, &run, &meshproxy_sim::check_determinism);
    print!("\n{}", render_report(&plan, &report));
    Ok(report.passed())
}

fn one_scenario(args: &SimArgs, target: &RunTarget) -> Result<Scenario, SimError> {
    let mut chosen = select(&args.dir(), std::slice::from_ref(&target.scenario))?;
    chosen.pop().ok_or_else(|| SimError::NoScenarios(args.dir().display().to_string()))
}

fn replay(args: &SimArgs, target: &RunTarget) -> Result<bool, SimError> {
    let scenario = one_scenario(args, target)?;
    let opts = RunOptions { trace: true, bug: args.bug(), ..RunOptions::default() };
    let started = Instant::now();
    let report = meshproxy_sim::run(&scenario, target.seed, &opts);
    let wall = started.elapsed();

    match &args.trace_out {
        Some(path) => {
            let mut text = report.trace.join("\n");
            text.push('\n');
            std::fs::write(path, text).map_err(|source| SimError::TraceOut {
                path: path.display().to_string(),
                source,
            })?;
            println!("trace: {} lines written to {}", report.trace.len(), path.display());
        }
        None => {
            for line in &report.trace {
                println!("{line}");
            }
        }
    }
    println!();
    println!("scenario   {} seed {}", report.scenario, report.seed);
    println!("hash       {:#018x}", report.hash);
    println!("events     {}", report.events);
    println!("sim time   {}", report.sim_time);
    println!("wall time  {:.3} s", wall.as_secs_f64());
    println!("fault mix  {}", report.fault_mix);
    let s = &report.stats;
    println!(
        "apps       {} connections, {} succeeded, {} failed, {} bytes",
        s.app_connections, s.succeeded, s.failed, s.bytes
    );
    println!("plan       {} entries", report.plan.len());
    for line in report.plan.to_string().lines() {
        println!("  {line}");
    }
    if report.violations.is_empty() {
        println!("violations none");
    } else {
        println!("violations {}", report.violations.len());
        for v in &report.violations {
            println!("  {v}");
        }
    }

    let again = meshproxy_sim::run(&scenario, target.seed, &opts);
    let identical = again.hash == report.hash;
    if identical {
        println!("determinism: ran it again, hash identical ({:#018x})", again.hash);
    } else {
        println!(
            "DETERMINISM: ran it again, hash differs ({:#018x} then {:#018x}); \
             `cargo xtask sim {} --seeds 1 --first-seed {}` finds the first divergent step",
            report.hash, again.hash, report.scenario, report.seed
        );
    }
    let passed = report.passed() && identical;
    println!("replay: {}", if passed { "PASSED" } else { "FAILED" });
    Ok(passed)
}

fn shrink(args: &SimArgs, target: &RunTarget) -> Result<bool, SimError> {
    let scenario = one_scenario(args, target)?;
    let started = Instant::now();
    let mut progress = |line: &str| println!("shrink: {line}");
    let outcome = meshproxy_sim::shrink(&scenario, target.seed, args.bug(), &mut progress);
    let wall = started.elapsed().as_secs_f64();
    match outcome {
        None => {
            println!("{}:{} passes: nothing to shrink ({wall:.2} s)", scenario.name, target.seed);
            Ok(true)
        }
        Some(shrunk) => {
            println!(
                "\nminimal plan: {} of {} entries ({wall:.2} s)",
                shrunk.minimal.len(),
                shrunk.original
            );
            for line in shrunk.minimal.to_string().lines() {
                println!("  {line}");
            }
            match shrunk.report.violations.first() {
                Some(v) => println!("still fails with: {v}"),
                None => println!("(the minimal plan's run reported no violation)"),
            }
            println!("fault mix: {}", shrunk.report.fault_mix);
            Ok(false)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test that panics on a surprise is doing its job
mod tests {
    use super::*;

    #[test]
    fn run_targets_parse_name_and_seed() {
        assert_eq!(
            "smoke:17".parse::<RunTarget>(),
            Ok(RunTarget { scenario: "smoke".into(), seed: 17 })
        );
        let max = format!("a:b:{}", u64::MAX);
        assert_eq!(max.parse::<RunTarget>().unwrap().scenario, "a:b");
        assert_eq!("smoke".parse::<RunTarget>(), Err(RunTargetError::MissingColon("smoke".into())));
        assert_eq!(":3".parse::<RunTarget>(), Err(RunTargetError::EmptyName));
        assert_eq!("smoke:-1".parse::<RunTarget>(), Err(RunTargetError::BadSeed("-1".into())));
        assert_eq!("smoke:".parse::<RunTarget>(), Err(RunTargetError::BadSeed(String::new())));
    }

    fn real_dir() -> PathBuf {
        crate::workspace_root().join("scenarios")
    }

    #[test]
    fn selection_keeps_the_requested_order_and_drops_repeats() {
        let names = ["sticky", "smoke", "sticky"].map(String::from);
        let chosen = select(&real_dir(), &names).unwrap();
        let got: Vec<_> = chosen.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(got, ["sticky", "smoke"]);
        let all = select(&real_dir(), &[]).unwrap();
        assert!(all.windows(2).all(|w| w[0].name < w[1].name));
    }

    #[test]
    fn an_unknown_scenario_lists_the_available_ones() {
        let err = select(&real_dir(), &["smok".into()]).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("unknown scenario `smok` in "), "{text}");
        assert!(text.contains("; available: "), "{text}");
        assert!(text.contains("churn, crash_restart,"), "{text}");
        assert!(text.contains("smoke"), "{text}");
    }

    #[test]
    fn replay_commands_repeat_the_flags_that_change_the_run() {
        let mut args = SimArgs::default_sweep();
        assert_eq!(args.replay_flags(), "");
        args.scenarios_dir = Some("/tmp/sc".into());
        args.inject_bug = Some(BugArg::ResetBecomesFin);
        assert_eq!(args.replay_flags(), " --scenarios /tmp/sc --inject-bug reset-becomes-fin");
    }

    #[test]
    fn the_command_line_parses_each_mode() {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct Cli {
            #[command(flatten)]
            sim: SimArgs,
        }
        let cli =
            Cli::try_parse_from(["sim", "smoke", "partition", "--seeds", "5", "-j", "2"]).unwrap();
        assert_eq!(cli.sim.names, ["smoke", "partition"]);
        assert_eq!((cli.sim.seeds, cli.sim.jobs.map(NonZeroUsize::get)), (Some(5), Some(2)));
        assert_eq!(cli.sim.determinism_sample, 16);

        let cli =
            Cli::try_parse_from(["sim", "--replay", "smoke:3", "--trace-out", "t.trace"]).unwrap();
        assert_eq!(cli.sim.replay, Some(RunTarget { scenario: "smoke".into(), seed: 3 }));

        assert!(Cli::try_parse_from(["sim", "--seeds", "0"]).is_err());
        assert!(Cli::try_parse_from(["sim", "--replay", "smoke"]).is_err());
        assert!(Cli::try_parse_from(["sim", "smoke", "--replay", "smoke:1"]).is_err());
        assert!(Cli::try_parse_from(["sim", "--trace-out", "x"]).is_err());
        // A planted bug's failure can be shrunk.
        let cli =
            Cli::try_parse_from(["sim", "--shrink", "a:1", "--inject-bug", "reset-becomes-fin"])
                .unwrap();
        assert_eq!(cli.sim.inject_bug, Some(BugArg::ResetBecomesFin));
        assert!(Cli::try_parse_from(["sim", "--replay", "a:1", "--shrink", "a:1"]).is_err());
    }
}
