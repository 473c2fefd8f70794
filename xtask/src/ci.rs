//! `cargo xtask ci`: every check CI makes, in the order that fails fastest,
//! stopping at the first failure; the Debian package's install check last.

use crate::sim_cmd::{self, SimArgs};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// Why CI could not run a step at all (a failing step is `Ok(false)`).
#[derive(Debug, thiserror::Error)]
pub enum CiError {
    /// A cargo command could not be started.
    #[error("ci: could not start `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// The purity check could not read the dependency graph.
    #[error("ci: {0}")]
    Purity(#[from] crate::purity::PurityError),
    /// The simulator sweep could not start.
    #[error("ci: {0}")]
    Sim(#[from] sim_cmd::SimError),
    /// The fuzzers could not run.
    #[error("ci: {0}")]
    Fuzz(#[from] crate::fuzz::FuzzError),
    /// The bench harness could not run.
    #[error("ci: {0}")]
    Bench(#[from] crate::bench::BenchError),
    /// The load test could not run.
    #[error("ci: {0}")]
    Loadtest(#[from] crate::loadtest::LoadtestError),
    /// The package could not be built or checked.
    #[error("ci: {0}")]
    Deb(#[from] crate::deb::DebError),
}

/// Seconds each fuzz target runs in CI (then its corpus replays).
const CI_FUZZ_SECONDS: u64 = 10;

/// One external cargo step.
struct CargoStep {
    name: &'static str,
    args: &'static [&'static str],
    /// Environment the step runs with, besides ours.
    env: &'static [(&'static str, &'static str)],
}

/// The external cargo steps.
const CARGO_STEPS: [CargoStep; 4] = [
    CargoStep { name: "fmt", args: &["fmt", "--all", "--", "--check"], env: &[] },
    CargoStep {
        name: "clippy",
        args: &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"],
        env: &[],
    },
    // Warnings (broken doc links, say) fail the step.
    CargoStep {
        name: "doc",
        args: &["doc", "--workspace", "--no-deps"],
        env: &[("RUSTDOCFLAGS", "-D warnings")],
    },
    CargoStep { name: "test", args: &["test", "--workspace"], env: &[] },
];

/// Runs every step; `Ok(false)` when one fails (the rest are skipped).
pub fn run(workspace: &Path) -> Result<bool, CiError> {
    let started = Instant::now();
    // The cargo that launched xtask, so CI uses one toolchain throughout.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    for CargoStep { name: step, args: cargo_args, env } in CARGO_STEPS {
        let vars: String = env.iter().map(|(k, v)| format!("{k}='{v}' ")).collect();
        let command = format!("{vars}cargo {}", cargo_args.join(" "));
        let ok = timed(step, &command, || {
            let status = Command::new(&cargo)
                .args(cargo_args)
                .envs(env.iter().copied())
                .current_dir(workspace)
                .status()
                .map_err(|source| CiError::Spawn { command: command.clone(), source })?;
            Ok(status.success())
        })?;
        if !ok {
            return Ok(false);
        }
    }
    if !timed("purity", "cargo xtask purity", || Ok(crate::purity::run(workspace)?))? {
        return Ok(false);
    }
    if !timed("sim", "cargo xtask sim", || Ok(sim_cmd::run(&SimArgs::default_sweep())?))? {
        return Ok(false);
    }
    let fuzz_cmd = format!("cargo xtask fuzz --smoke --seconds {CI_FUZZ_SECONDS}");
    // Outside CI, a machine without cargo-fuzz skips this step (the corpora
    // still replayed in the tests); `.ci/run` installs it, so CI never skips.
    let ci = std::env::var_os("CI").is_some();
    let fuzz = |args: &crate::fuzz::FuzzArgs| match crate::fuzz::run(workspace, args) {
        Err(crate::fuzz::FuzzError::NoCargoFuzz) if !ci => {
            println!("ci: cargo-fuzz is not installed: fuzz smoke skipped (CI installs it)");
            Ok(true)
        }
        other => other,
    };
    let args = crate::fuzz::FuzzArgs {
        targets: Vec::new(),
        seconds: Some(CI_FUZZ_SECONDS),
        smoke: true,
        replay: false,
    };
    if !timed("fuzz", &fuzz_cmd, || Ok(fuzz(&args)?))? {
        return Ok(false);
    }
    let bench = crate::bench::BenchArgs::quick();
    if !timed("bench", "cargo xtask bench --quick", || Ok(crate::bench::run(workspace, &bench)?))? {
        return Ok(false);
    }
    // Reuses the release build the bench step just made.
    let load = crate::loadtest::LoadtestArgs::quick();
    let load_cmd = "cargo xtask loadtest --quick";
    if !timed("loadtest", load_cmd, || Ok(crate::loadtest::run(workspace, &load)?))? {
        return Ok(false);
    }
    // Reuses the same release build again: only the man page generator and
    // the packaging are new. It installs with dpkg, so it needs root; outside
    // CI a machine without root or cargo-deb skips it (`.ci/run` installs
    // cargo-deb and CI runs as root, so CI never skips).
    let deb_cmd = "cargo xtask deb --check";
    let deb = || match crate::deb::run(workspace, &crate::deb::DebArgs { check: true }) {
        Err(e @ (crate::deb::DebError::NoCargoDeb | crate::deb::DebError::NotRoot(_))) if !ci => {
            println!("ci: {e}: the package step is skipped outside CI");
            Ok(true)
        }
        other => other,
    };
    if !timed("deb", deb_cmd, || Ok(deb()?))? {
        return Ok(false);
    }
    println!("\nci: all steps passed in {:.1} s", started.elapsed().as_secs_f64());
    Ok(true)
}

/// Runs one step between a header and a verdict line with its wall time.
fn timed(
    step: &str,
    command: &str,
    f: impl FnOnce() -> Result<bool, CiError>,
) -> Result<bool, CiError> {
    println!("\n==> ci step `{step}`: {command}");
    let started = Instant::now();
    let ok = f()?;
    let secs = started.elapsed().as_secs_f64();
    if ok {
        println!("<== ci step `{step}` passed in {secs:.1} s");
    } else {
        println!("<== ci step `{step}` FAILED after {secs:.1} s: fix it and rerun `{command}`");
        println!("ci: FAILED at step `{step}` (later steps were not run)");
    }
    Ok(ok)
}
