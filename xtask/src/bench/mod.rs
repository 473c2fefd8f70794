//! `cargo xtask bench`: meshproxy's performance figures on 127.0.0.1.
//!
//! The harness builds the release `meshproxy` (and `examples/heap_probe`,
//! the same node with a counting allocator, and `examples/exit_leg`, a
//! libp2p load generator for the exit alone), starts hubs, exits and clients
//! as processes, and drives them from a tokio load generator and origins in
//! this process. Figures: throughput (1 and 8 streams; direct loopback, the
//! mesh over libp2p TCP and over QUIC, shadowsocks-rust with
//! ChaCha20-Poly1305, with AES-256-GCM and with no cipher (the cost of the
//! two-hop shape alone), the exit leg alone), connect latency (warm and cold, p50/p99;
//! also with the app speaking first, which shadowsocks-rust needs),
//! connects per second and CPU per connect, memory per idle proxied
//! connection (RSS, heap, fds), public HTTP ingress (gateway → agent
//! against the origin directly and rathole: requests/s, p50/p99, one-stream
//! download, loaded by wrk), and simulator speed. Full mode takes the
//! median of alternating runs; `--quick` runs everything once at small sizes
//! to prove the harness works (CI).
//!
//! Layout: `procs` (binaries, configs, processes, /proc), `load` (origin and
//! load generator), `figures` (the network figures), `memory` (the idle
//! connection figures), `ingress` (the ingress figures) with
//! `ingress_procs` (gateway, agent, rathole), `http_origin` (their hyper
//! origin) and `wrk` (their load generator), `report` (figures, table,
//! JSON, SVG), `simfig`.

mod figures;
mod http_origin;
mod ingress;
mod ingress_procs;
pub mod load;
mod memory;
pub mod procs;
pub mod report;
mod simfig;
mod wrk;

use clap::Args;
use figures::{network_figures, Origins};
use ingress::{ingress_figures, IngressTools};
use load::{Origin, OriginMode};
use memory::memory_figures;
use procs::Binaries;
use report::Skipped;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Arguments of `cargo xtask bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// One run at small sizes, no shadowsocks-rust: checks the harness works
    /// (what CI runs).
    #[arg(long)]
    pub quick: bool,
    /// Alternating runs whose median each figure reports (full mode).
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub runs: usize,
    /// Skip the shadowsocks-rust comparison (and its install).
    #[arg(long)]
    pub no_shadowsocks: bool,
    /// Skip the rathole comparison of the ingress figures (and its install).
    #[arg(long)]
    pub no_rathole: bool,
    /// Idle proxied connections for the memory figures [default: 10000; 200 with --quick].
    #[arg(long, value_name = "N")]
    pub idle: Option<usize>,
    /// Internal: only serve the origin (printing `origin: ADDR`) until stdin
    /// closes. The memory figure runs its origin in such a child so that
    /// 10,000 connections' two ends do not share one process's fd limit.
    #[arg(long, hide = true)]
    pub serve_origin: bool,
    /// Measure only these parts (comma-separated) [default: all].
    #[arg(long, value_enum, value_delimiter = ',', value_name = "PART")]
    pub only: Vec<Part>,
    /// Worker threads of every proxy process: `threads = N` in the nodes'
    /// configs and `--worker-threads N` for shadowsocks-rust [default: one per CPU].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,
}

/// A part of the bench `--only` can select.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// Throughput and CPU per GB, one and eight streams (also the exit leg alone).
    Throughput,
    /// Warm connect latency (origin speaks first, and app speaks first).
    Latency,
    /// Cold connect latency.
    Cold,
    /// CONNECTs per second through a warm mesh (both ways round).
    Connects,
    /// Memory per idle proxied connection.
    Memory,
    /// Simulator speed.
    Sim,
    /// Public HTTP ingress: gateway → agent against direct and rathole.
    Ingress,
}

impl BenchArgs {
    /// `--quick`, as CI runs it.
    pub fn quick() -> BenchArgs {
        BenchArgs {
            quick: true,
            runs: 1,
            no_shadowsocks: true,
            no_rathole: false,
            idle: None,
            serve_origin: false,
            only: Vec::new(),
            threads: None,
        }
    }

    /// Whether `part` is measured in this run.
    fn wants(&self, part: Part) -> bool {
        self.only.is_empty() || self.only.contains(&part)
    }
}

/// Why the bench could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The release build failed.
    #[error("bench: build: {0}")]
    Build(String),
    /// A file or socket operation failed.
    #[error("bench: {0}: {1}")]
    Io(String, std::io::Error),
    /// A process did not come up.
    #[error("bench: {0}: {1}")]
    NotReady(String, &'static str),
    /// Load through a route failed.
    #[error("bench: {0}")]
    Load(String),
    /// The simulator could not run.
    #[error("bench: simulator: {0}")]
    Sim(String),
}

/// Sizes of one mode.
#[derive(Debug, Clone, Copy)]
struct Plan {
    runs: usize,
    transfer_bytes: u64,
    latency_samples: usize,
    connect_workers: usize,
    connect_duration: Duration,
    cold_samples: usize,
    idle: usize,
    sim_seeds: u64,
    sim_sweep: bool,
    /// wrk's keep-alive connections in the ingress figures.
    ingress_connections: usize,
    /// How long wrk loads each ingress route per run.
    ingress_duration: Duration,
    /// The ingress figures' one-connection download.
    ingress_big_bytes: u64,
    /// Which parts run, indexed by `Part as usize`.
    parts: [bool; 7],
}

impl Plan {
    fn of(args: &BenchArgs) -> Plan {
        let parts = [
            Part::Throughput,
            Part::Latency,
            Part::Cold,
            Part::Connects,
            Part::Memory,
            Part::Sim,
            Part::Ingress,
        ]
        .map(|p| args.wants(p));
        if args.quick {
            Plan {
                runs: 1,
                transfer_bytes: 8 << 20,
                latency_samples: 100,
                connect_workers: 16,
                connect_duration: Duration::from_millis(500),
                cold_samples: 1,
                idle: args.idle.unwrap_or(200),
                sim_seeds: 10,
                sim_sweep: false,
                ingress_connections: 16,
                ingress_duration: Duration::from_secs(2),
                ingress_big_bytes: 32 << 20,
                parts,
            }
        } else {
            Plan {
                runs: args.runs.max(1),
                transfer_bytes: 256 << 20,
                latency_samples: 1000,
                connect_workers: 32,
                connect_duration: Duration::from_secs(2),
                cold_samples: args.runs.max(1),
                idle: args.idle.unwrap_or(10_000),
                sim_seeds: 100,
                sim_sweep: true,
                ingress_connections: 16,
                ingress_duration: Duration::from_secs(5),
                ingress_big_bytes: 256 << 20,
                parts,
            }
        }
    }

    fn wants(&self, part: Part) -> bool {
        self.parts.get(part as usize).copied().unwrap_or(false)
    }
}

/// Idle connections one client carries at most: a client keeps at most 768
/// sessions on one exit by default (`max_sessions_per_exit`, below the 1024
/// streams one libp2p connection carries), so the memory figure spreads
/// larger counts over several clients. (With 1000 here, 232 of every 1000
/// opens waited out their deadline once that limit existed.)
const IDLE_PER_CLIENT: usize = 750;

/// The parts [`network_figures`] measures (the ones shadowsocks-rust is in).
const NETWORK: [Part; 4] = [Part::Throughput, Part::Latency, Part::Cold, Part::Connects];

/// Runs the bench; `Ok(false)` when a part of the harness failed.
pub fn run(workspace: &Path, args: &BenchArgs) -> Result<bool, BenchError> {
    if args.serve_origin {
        return serve_origin();
    }
    let started = Instant::now();
    let plan = Plan::of(args);
    let out_dir = output_dir(workspace);
    let work = out_dir.join("run");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| BenchError::Io(work.display().to_string(), e))?;

    let mut skipped = Vec::new();
    let mut failures = Vec::new();
    raise_fd_limit(plan.idle, &mut skipped);
    let bin = Binaries { threads: args.threads, ..procs::build(workspace)? };
    let built = Instant::now();
    let ss = if args.quick {
        skipped.push(Skipped {
            what: "shadowsocks-rust".into(),
            reason: "--quick never installs it (minutes of build)".into(),
        });
        None
    } else if args.no_shadowsocks {
        skipped
            .push(Skipped { what: "shadowsocks-rust".into(), reason: "--no-shadowsocks".into() });
        None
    } else if !NETWORK.iter().any(|p| plan.wants(*p)) {
        // Only the network figures compare with it (`--only ingress`, …).
        None
    } else {
        match procs::install_shadowsocks(workspace) {
            // Its latency and connect rate are in the app-first figures only
            // (`warm_req`, `connects_per_second_req`): see `network_figures`.
            Ok(tools) => Some(tools),
            Err(reason) => {
                println!("bench: skipping shadowsocks-rust: {reason}");
                skipped.push(Skipped { what: "shadowsocks-rust".into(), reason });
                None
            }
        }
    };

    let ingress_tools =
        if plan.wants(Part::Ingress) { ingress_tools(args, &mut skipped) } else { None };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| BenchError::Io("tokio runtime".into(), e))?;
    let mut figures = Vec::new();
    runtime.block_on(async {
        let origin = Origin::start().await.map_err(|e| BenchError::Load(e.to_string()))?;
        let request_origin = Origin::start_mode(OriginMode::Request)
            .await
            .map_err(|e| BenchError::Load(e.to_string()))?;
        let origins = Origins { counting: origin.addr, request: request_origin.addr };
        if NETWORK.iter().any(|p| plan.wants(*p)) {
            match network_figures(&bin, &work, &plan, ss.as_ref(), origins).await {
                Ok(mut f) => figures.append(&mut f),
                Err(e) => failures.push(e.to_string()),
            }
        }
        if plan.wants(Part::Memory) {
            match memory_figures(&bin, &work, &plan).await {
                Ok(mut f) => figures.append(&mut f),
                Err(e) => failures.push(e.to_string()),
            }
        }
        if let Some(tools) = &ingress_tools {
            match ingress_figures(&bin, &work, &plan, tools).await {
                Ok(mut f) => figures.append(&mut f),
                Err(e) => failures.push(e.to_string()),
            }
        }
        Ok::<(), BenchError>(())
    })?;
    if plan.wants(Part::Sim) {
        println!("bench: simulator figures");
        match simfig::figures(workspace, plan.sim_seeds, plan.sim_sweep) {
            Ok(mut f) => figures.append(&mut f),
            Err(e) => failures.push(e.to_string()),
        }
    }
    if !plan.sim_sweep && plan.wants(Part::Sim) {
        skipped.push(Skipped {
            what: "default sweep wall time".into(),
            reason: "--quick (CI times the sweep in its own step)".into(),
        });
    }
    for f in &failures {
        skipped.push(Skipped { what: "FAILED".into(), reason: f.clone() });
    }

    let mode = if args.quick { "quick" } else { "full" };
    let threads = args.threads.map_or("one per CPU".to_owned(), |n| n.to_string());
    println!(
        "\nbench ({mode}, {} run{}, proxy worker threads: {threads}, {:.0} s after a {:.0} s build; \
         load average {}):\n{}",
        plan.runs,
        if plan.runs == 1 { "" } else { "s" },
        built.elapsed().as_secs_f64(),
        built.duration_since(started).as_secs_f64(),
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        report::render(&figures, &skipped)
    );
    let file = report::result_file(mode, plan.runs, args.threads, &figures, &skipped);
    let result = out_dir.join("result.json");
    let text = serde_json::to_string_pretty(&file).unwrap_or_default();
    std::fs::write(&result, text).map_err(|e| BenchError::Io(result.display().to_string(), e))?;
    let svg = out_dir.join("bench.svg");
    if let Err(e) = report::plot(&svg, &figures) {
        failures.push(format!("plot: {e}"));
    }
    println!("bench: wrote {} and {}", result.display(), svg.display());
    if !failures.is_empty() {
        println!("bench: {} part(s) FAILED: {}", failures.len(), failures.join("; "));
    }
    Ok(failures.is_empty())
}

/// wrk and rathole for the ingress figures, installed where missing; none
/// (the part skipped, the reason in `skipped`) without wrk.
fn ingress_tools(args: &BenchArgs, skipped: &mut Vec<Skipped>) -> Option<IngressTools> {
    let wrk = match wrk::install() {
        Ok(wrk) => wrk,
        Err(reason) => {
            println!("bench: skipping the ingress figures: {reason}");
            skipped.push(Skipped { what: "ingress".into(), reason });
            return None;
        }
    };
    let rathole = if args.no_rathole {
        skipped.push(Skipped { what: "rathole".into(), reason: "--no-rathole".into() });
        None
    } else {
        match ingress_procs::install_rathole() {
            Ok(path) => Some(path),
            Err(reason) => {
                println!("bench: skipping rathole: {reason}");
                skipped.push(Skipped { what: "rathole".into(), reason });
                None
            }
        }
    };
    Some(IngressTools { wrk, rathole })
}

/// Raises this process's open-file limit (children inherit it): `idle`
/// connections cost one fd here (the app side), one in the origin child and
/// one or two in each node.
fn raise_fd_limit(idle: usize, skipped: &mut Vec<Skipped>) {
    let want = idle as u64 + 4096;
    let got = procs::raise_fd_limit(want);
    if got < want {
        skipped.push(Skipped {
            what: "fd limit".into(),
            reason: format!(
                "RLIMIT_NOFILE could only be raised to {got} (wanted {want}); \
                 the idle-connection figure may fall short of {idle}"
            ),
        });
    }
}

/// Where the bench writes its result file and plot.
pub fn output_dir(workspace: &Path) -> PathBuf {
    procs::target_dir(workspace).join("bench")
}

/// Starts `xtask bench --serve-origin` and reads the origin's address.
fn origin_child(work: &Path) -> Result<(procs::Proc, std::net::SocketAddr), BenchError> {
    let exe = std::env::current_exe().map_err(|e| BenchError::Io("current exe".into(), e))?;
    let mut p = procs::Proc::spawn(
        "origin",
        &exe,
        &["bench", "--serve-origin"],
        &work.join("origin.log"),
        true,
    )?;
    let line = p.wait_line(|l| l.starts_with("origin: "))?;
    let addr = line
        .trim_start_matches("origin: ")
        .trim()
        .parse()
        .map_err(|_| BenchError::NotReady("origin".into(), "unreadable origin line"))?;
    Ok((p, addr))
}

/// The body of `--serve-origin`.
fn serve_origin() -> Result<bool, BenchError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| BenchError::Io("tokio runtime".into(), e))?;
    runtime.block_on(async {
        let origin = Origin::start().await.map_err(|e| BenchError::Load(e.to_string()))?;
        println!("origin: {}", origin.addr);
        // Runs until the harness closes stdin (or kills this process).
        let _ = tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {
                sink.clear();
            }
        })
        .await;
        Ok(true)
    })
}
