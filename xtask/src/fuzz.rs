//! `cargo xtask fuzz`: runs the cargo-fuzz targets in `fuzz/` (libFuzzer),
//! each for a bounded time, then replays its whole corpus.
//!
//! The machine's one stable toolchain builds them: cargo-fuzz passes nightly
//! flags (`-Zsanitizer`, `-Cpasses=sancov-module`, …), which stable rustc
//! accepts with `RUSTC_BOOTSTRAP=1`. That switch is set only for these
//! builds, never for the workspace. The sanitizer is off (`-s none`): the
//! code under test forbids `unsafe`, so AddressSanitizer would find nothing
//! the bounds checks do not, at several times the cost.
//!
//! New inputs that grow coverage are written to `fuzz/corpus/<target>/`;
//! commit the interesting ones (after `cargo fuzz cmin`), and CI replays them
//! through the same checks on every run (`sim/tests/fuzz_corpus.rs` and
//! `node/core/tests/machines_prop.rs`). A `--smoke` run reads the committed
//! corpus but writes what it finds to `target/fuzz-smoke/<target>/`, so CI
//! never grows the working tree (a commit once swept 3,000 such inputs in).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// The targets, as named in `fuzz/Cargo.toml`.
pub const TARGETS: [&str; 15] = [
    "socks5",
    "socks4",
    "http_connect",
    "http_forward",
    "http_head",
    "ingress_route",
    "proxy_wire",
    "hub_wire",
    "ingress_wire",
    "scenario",
    "core_model",
    "noise_transport",
    "noise_handshake",
    "noise_duplex",
    "control_request",
];

/// `cargo xtask fuzz` arguments.
#[derive(Debug, clap::Args)]
pub struct FuzzArgs {
    /// Targets to run (default: all).
    pub targets: Vec<String>,
    /// Seconds of fuzzing per target (default 600; --smoke: 20).
    #[arg(long)]
    pub seconds: Option<u64>,
    /// A short run of every target plus a corpus replay: proves the targets
    /// build and run, and the corpus is clean.
    #[arg(long)]
    pub smoke: bool,
    /// Only replay each target's corpus (no new inputs).
    #[arg(long, conflicts_with_all = ["smoke", "seconds"])]
    pub replay: bool,
}

/// Why fuzzing could not run.
#[derive(Debug, thiserror::Error)]
pub enum FuzzError {
    /// cargo-fuzz is not installed.
    #[error("cargo-fuzz is not installed: run `cargo install cargo-fuzz --locked`")]
    NoCargoFuzz,
    /// A target name is not one of ours.
    #[error("unknown fuzz target `{0}` (targets: {targets})", targets = TARGETS.join(", "))]
    UnknownTarget(String),
    /// A command could not be started.
    #[error("could not start `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// The smoke run's scratch corpus directory could not be made.
    #[error("could not create `{dir}`: {source}")]
    Scratch {
        /// The directory.
        dir: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Runs the fuzzers; `Ok(false)` when a target crashed or a replay failed
/// (the crashing input is in `fuzz/artifacts/<target>/`).
pub fn run(workspace: &Path, args: &FuzzArgs) -> Result<bool, FuzzError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let has_cargo_fuzz = Command::new(&cargo)
        .args(["fuzz", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !has_cargo_fuzz {
        return Err(FuzzError::NoCargoFuzz);
    }
    let targets: Vec<&str> = if args.targets.is_empty() {
        TARGETS.to_vec()
    } else {
        args.targets
            .iter()
            .map(|t| {
                TARGETS
                    .iter()
                    .find(|k| *k == t)
                    .copied()
                    .ok_or_else(|| FuzzError::UnknownTarget(t.clone()))
            })
            .collect::<Result<_, _>>()?
    };
    let seconds = args.seconds.unwrap_or(if args.smoke { 20 } else { 600 });
    let mut all_ok = true;
    for target in targets {
        let corpus = format!("fuzz/corpus/{target}");
        let mut runs = Vec::new();
        if !args.replay {
            let mut flags = vec![format!("-max_total_time={seconds}")];
            if args.smoke {
                // A fixed seed: a smoke run on any machine explores the same
                // inputs first, so a CI failure reproduces with the same command.
                flags.push("-seed=1".to_owned());
            }
            // libFuzzer writes new inputs to the first directory it is given.
            let dirs = if args.smoke {
                let scratch = format!("target/fuzz-smoke/{target}");
                let _ = std::fs::remove_dir_all(workspace.join(&scratch));
                std::fs::create_dir_all(workspace.join(&scratch))
                    .map_err(|source| FuzzError::Scratch { dir: scratch.clone(), source })?;
                vec![scratch, corpus.clone()]
            } else {
                vec![corpus.clone()]
            };
            runs.push(("fuzz", dirs, flags));
        }
        // -runs=0: execute every corpus input once, nothing new.
        runs.push(("replay", vec![corpus.clone()], vec!["-runs=0".to_owned()]));
        for (what, dirs, libfuzzer_args) in runs {
            let started = Instant::now();
            let mut cmd = Command::new(&cargo);
            cmd.current_dir(workspace)
                .env("RUSTC_BOOTSTRAP", "1")
                .args(["fuzz", "run", "-s", "none", target])
                .args(&dirs)
                .arg("--")
                .args(&libfuzzer_args);
            let line = format!(
                "cargo fuzz run -s none {target} {} -- {}",
                dirs.join(" "),
                libfuzzer_args.join(" ")
            );
            println!("fuzz: {target}: {what}: {line}");
            let status = cmd
                .status()
                .map_err(|source| FuzzError::Spawn { command: line.clone(), source })?;
            let files =
                std::fs::read_dir(workspace.join(&corpus)).map(Iterator::count).unwrap_or(0);
            let verdict = if status.success() { "ok" } else { "FAILED" };
            println!(
                "fuzz: {target}: {what} {verdict} in {:.1} s ({files} corpus inputs)",
                started.elapsed().as_secs_f64()
            );
            if !status.success() {
                all_ok = false;
                break;
            }
        }
    }
    Ok(all_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_has_a_source_file_and_a_corpus() {
        let root = crate::workspace_root();
        for t in TARGETS {
            assert!(root.join(format!("fuzz/fuzz_targets/{t}.rs")).is_file(), "{t}");
            assert!(root.join(format!("fuzz/corpus/{t}")).is_dir(), "{t}");
        }
        let manifest = std::fs::read_to_string(root.join("fuzz/Cargo.toml")).unwrap_or_default();
        for t in TARGETS {
            assert!(manifest.contains(&format!("name = \"{t}\"")), "{t} in fuzz/Cargo.toml");
        }
    }
}
