//! meshproxy's developer tasks, run as `cargo xtask <command>`:
//!
//! - `sim`: sweep scenarios × seeds through the deterministic simulator on
//!   every core, replay one seed with its trace, or shrink a failing seed;
//! - `purity`: prove the core and the simulator do not depend on a runtime;
//! - `fuzz`: run the cargo-fuzz targets in `fuzz/` for a bounded time and
//!   replay their corpora;
//! - `ci`: everything CI checks, in order;
//! - `bench`: performance figures of the release binaries on 127.0.0.1;
//! - `deb`: the Debian package (cargo-deb), and with `--check` its install check;
//! - `loadtest`: thousands of concurrent SOCKS5 connections through the
//!   release binaries, checking none is lost and nothing leaks.
//!
//! Layout: `sim_cmd` (the `sim` arguments and the replay/shrink modes),
//! `sweep` (the sweep and its report), `pool` (the worker threads), `table`
//! (text tables), `purity`, `ci`, `bench` (the benchmark harness, whose
//! processes and load generator `loadtest` reuses).
#![forbid(unsafe_code)]
// xtask is tooling around the simulator, not simulated code: it measures real
// wall time, which the workspace's clippy.toml bans for the core and the sim.
#![allow(clippy::disallowed_methods)]

mod bench;
mod ci;
mod deb;
mod fuzz;
mod loadtest;
mod pool;
mod purity;
mod sim_cmd;
mod sweep;
mod table;

use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// meshproxy developer tasks.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run simulator scenarios: a sweep over scenarios × seeds (default), or
    /// --replay / --shrink one seed.
    ///
    /// A sweep runs every named scenario (all in the scenarios directory when
    /// none are named) with seeds FIRST_SEED.. (each scenario's own `seeds`
    /// count unless --seeds), on --jobs worker threads. It prints a summary
    /// table per scenario ("wall s" is the summed run time, i.e. core-seconds,
    /// so the rates are per core), every failure with the command that replays
    /// it, and re-runs a sample of seeds to check determinism. It exits
    /// non-zero on any failure or divergence.
    Sim(sim_cmd::SimArgs),
    /// Check that meshproxy-core and meshproxy-sim depend (normal and build
    /// dependencies; dev-dependencies are not shipped) on no async runtime or
    /// socket crate: tokio, mio, socket2, futures-timer, async-std, smol, libp2p*.
    Purity,
    /// Fuzz the handshakes, wire codecs, scenario parser and core model with
    /// cargo-fuzz (libFuzzer) for a bounded time each, then replay each
    /// corpus. Needs `cargo install cargo-fuzz`; builds with RUSTC_BOOTSTRAP=1
    /// on the stable toolchain.
    Fuzz(fuzz::FuzzArgs),
    /// Run what CI runs, stopping at the first failure: rustfmt check, clippy
    /// with -D warnings, the workspace tests (fuzz corpora replay among them),
    /// the purity check, the default simulator sweep, a fuzz smoke run (skipped
    /// outside CI without cargo-fuzz), the bench harness and the load test
    /// in --quick mode.
    Ci,
    /// Measure throughput, connect latency, connects per second, memory per
    /// idle connection and simulator speed on 127.0.0.1 with the release
    /// binaries (against direct loopback and shadowsocks-rust), print a
    /// table with the targets, and write target/bench/result.json
    /// and target/bench/bench.svg. `--quick` checks the harness in CI.
    Bench(bench::BenchArgs),
    /// Open N SOCKS5 connections (at most C at once) through a release
    /// client, exit and a local echo origin on 127.0.0.1 within a deadline;
    /// report success rate, connect latency p50/p99, peak RSS and fds of each
    /// process before, at peak and after the load, and write
    /// target/loadtest/result.json. Exits non-zero if any connection was lost
    /// or a process kept fds or memory after the load.
    Loadtest(loadtest::LoadtestArgs),
    /// Build the Debian package with cargo-deb (the release binary, example configs in
    /// /etc/meshproxy, man pages, bash/zsh/fish completions, systemd units, the meshproxy
    /// user) into `<target>/debian/`. `--check` then installs it (root), checks it and purges it.
    Deb(deb::DebArgs),
}

/// Why a task could not run at all (as opposed to running and finding failures).
#[derive(Debug, thiserror::Error)]
enum TaskError {
    /// The sim command could not start or finish its work.
    #[error(transparent)]
    Sim(#[from] sim_cmd::SimError),
    /// The dependency graph could not be read.
    #[error(transparent)]
    Purity(#[from] purity::PurityError),
    /// The fuzzers could not run.
    #[error(transparent)]
    Fuzz(#[from] fuzz::FuzzError),
    /// A CI step could not be started.
    #[error(transparent)]
    Ci(#[from] ci::CiError),
    /// The bench could not run.
    #[error(transparent)]
    Bench(#[from] bench::BenchError),
    /// The load test could not run.
    #[error(transparent)]
    Loadtest(#[from] loadtest::LoadtestError),
    /// The package could not be built or checked.
    #[error(transparent)]
    Deb(#[from] deb::DebError),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome: Result<bool, TaskError> = match cli.command {
        Command::Sim(args) => sim_cmd::run(&args).map_err(Into::into),
        Command::Purity => purity::run(&workspace_root()).map_err(Into::into),
        Command::Fuzz(args) => fuzz::run(&workspace_root(), &args).map_err(Into::into),
        Command::Ci => ci::run(&workspace_root()).map_err(Into::into),
        Command::Bench(args) => bench::run(&workspace_root(), &args).map_err(Into::into),
        Command::Loadtest(args) => loadtest::run(&workspace_root(), &args).map_err(Into::into),
        Command::Deb(args) => deb::run(&workspace_root(), &args).map_err(Into::into),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// The workspace root: xtask always lives directly below it.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_workspace_root_holds_the_scenarios() {
        assert!(workspace_root().join("scenarios").is_dir());
        assert!(workspace_root().join("Cargo.toml").is_file());
    }
}
