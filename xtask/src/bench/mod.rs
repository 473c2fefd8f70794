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
//! connection (RSS, heap, fds), and simulator speed. Full mode takes the
//! median of alternating runs; `--quick` runs everything once at small sizes
//! to prove the harness works (CI).
//!
//! Layout: `procs` (binaries, configs, processes, /proc), `load` (origin and
//! load generator), `report` (figures, table, JSON, SVG), `simfig`.

pub mod load;
pub mod procs;
pub mod report;
mod simfig;

use clap::Args;
use load::{FirstWord, Origin, OriginMode, Route};
use procs::{Binaries, ExitLeg, Mesh, SsPair, Transport};
use report::{quantile, Bound, Figure, Skipped};
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
}

impl BenchArgs {
    /// `--quick`, as CI runs it.
    pub fn quick() -> BenchArgs {
        BenchArgs {
            quick: true,
            runs: 1,
            no_shadowsocks: true,
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
    /// Which parts run, indexed by `Part as usize`.
    parts: [bool; 6],
}

impl Plan {
    fn of(args: &BenchArgs) -> Plan {
        let parts =
            [Part::Throughput, Part::Latency, Part::Cold, Part::Connects, Part::Memory, Part::Sim]
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
        let network = [Part::Throughput, Part::Latency, Part::Cold, Part::Connects];
        if network.iter().any(|p| plan.wants(*p)) {
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

/// The origins the network figures reach.
#[derive(Debug, Clone, Copy)]
struct Origins {
    /// Greets first, then counts (throughput, and the existing latency figures).
    counting: std::net::SocketAddr,
    /// Answers the app's first byte ([`OriginMode::Request`]).
    request: std::net::SocketAddr,
}

/// The routes the network figures compare, by name.
struct Routes {
    list: Vec<(&'static str, Route)>,
    tcp: Mesh,
    quic: Mesh,
    /// shadowsocks-rust by route name (`ss`, `ss_aes`, `ss_plain`; none
    /// without shadowsocks).
    ss: Vec<(&'static str, SsPair)>,
    /// The generator that talks to the TCP mesh's exit directly (throughput only).
    exit_leg: Option<ExitLeg>,
}

impl Routes {
    /// CPU seconds so far of the proxy processes on `name`'s data path.
    fn cpu(&self, name: &str) -> Option<f64> {
        match name {
            "tcp" => Some(self.tcp.data_path_cpu()),
            "quic" => Some(self.quic.data_path_cpu()),
            // The generator stands in for the client: only the exit is the proxy.
            "exit_leg" => self.tcp.exit.cpu_seconds(),
            _ => self.ss.iter().find(|(n, _)| *n == name).map(|(_, s)| s.data_path_cpu()),
        }
    }

    /// Sends `bytes` over `streams` connections along the route `name`.
    async fn transfer(
        &mut self,
        name: &str,
        origin: std::net::SocketAddr,
        bytes: u64,
        streams: usize,
    ) -> Result<Duration, BenchError> {
        let route = self.list.iter().find(|(n, _)| *n == name).map(|(_, r)| *r);
        match (route, self.exit_leg.as_mut()) {
            (Some(route), _) => load::transfer(route, origin, bytes, streams)
                .await
                .map_err(|e| BenchError::Load(format!("{name} transfer: {e}"))),
            // The generator runs in its own process; waiting for its answer
            // must not take a worker from the origin, which counts the bytes.
            (None, Some(leg)) if name == "exit_leg" => {
                tokio::task::block_in_place(|| leg.transfer(bytes, streams))
            }
            _ => Err(BenchError::Load(format!("no route {name}"))),
        }
    }
}

/// Per-run p50 and p99 of sequential connect latencies along each route,
/// appended to `p50`/`p99` (indexed like `routes`).
async fn latency_run(
    routes: &[(&'static str, Route)],
    origin: std::net::SocketAddr,
    first: FirstWord,
    samples: usize,
    p50: &mut [(String, Vec<f64>)],
    p99: &mut [(String, Vec<f64>)],
) -> Result<(), BenchError> {
    for (i, (name, route)) in routes.iter().enumerate() {
        let got = load::latencies(*route, origin, first, samples)
            .await
            .map_err(|e| BenchError::Load(format!("{name} latency ({first:?} first): {e}")))?;
        let mut ms: Vec<f64> = got.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        if let (Some(a), Some(b)) = (p50.get_mut(i), p99.get_mut(i)) {
            a.1.push(quantile(&ms, 0.5));
            b.1.push(quantile(&ms, 0.99));
        }
    }
    Ok(())
}

/// The p50/p99 figures of [`latency_run`]'s series, as `latency.ROUTE.KIND.p50|p99`.
fn latency_figures(
    p50: &[(String, Vec<f64>)],
    p99: &[(String, Vec<f64>)],
    kind: &str,
    what: &str,
) -> Vec<Figure> {
    let mut figures = Vec::new();
    for ((key, a), (_, b)) in p50.iter().zip(p99).filter(|((_, a), _)| !a.is_empty()) {
        let name = key.trim_start_matches("latency.");
        figures.push(Figure::info(
            &format!("{key}.{kind}.p50"),
            &format!("connect {name} {what} p50"),
            "ms",
            a.clone(),
        ));
        figures.push(Figure::info(
            &format!("{key}.{kind}.p99"),
            &format!("connect {name} {what} p99"),
            "ms",
            b.clone(),
        ));
    }
    figures
}

/// One connect-rate run along each route of `list`, appended to `cps` and
/// (CPU-µs of the route's proxies per connection) `cpu` (both indexed like `list`).
async fn connect_rate_run(
    routes: &Routes,
    list: &[(&'static str, Route)],
    origin: std::net::SocketAddr,
    first: FirstWord,
    plan: &Plan,
    cps: &mut [(String, Vec<f64>)],
    cpu: &mut [(String, Vec<f64>)],
) {
    for (i, (name, route)) in list.iter().enumerate() {
        let cpu0 = routes.cpu(name);
        let r =
            load::connect_rate(*route, origin, first, plan.connect_workers, plan.connect_duration)
                .await;
        if let Some(c) = cps.get_mut(i) {
            c.1.push(r.ok as f64 / r.elapsed.as_secs_f64());
        }
        if let (Some(a), Some(b), Some(c)) = (cpu0, routes.cpu(name), cpu.get_mut(i)) {
            if r.ok > 0 {
                c.1.push((b - a) * 1e6 / r.ok as f64);
            }
        }
        if r.failed > 0 {
            println!("bench:   {} connects failed on {name} ({first:?} first)", r.failed);
        }
    }
}

/// Throughput, CPU per GB, latency (warm and cold) and connects per second.
async fn network_figures(
    bin: &Binaries,
    work: &Path,
    plan: &Plan,
    ss_tools: Option<&procs::Shadowsocks>,
    origins: Origins,
) -> Result<Vec<Figure>, BenchError> {
    let origin = origins.counting;
    let allow = [origins.counting, origins.request];
    println!("bench: starting the TCP and QUIC meshes");
    let tcp = Mesh::start(bin, work, "tcp", Transport::Tcp, &allow, 1, false)?;
    let quic = Mesh::start(bin, work, "quic", Transport::Quic, &allow, 1, false)?;
    let mut ss = Vec::new();
    if let Some(tools) = ss_tools {
        for (name, method) in [
            ("ss", procs::SHADOWSOCKS_CIPHER),
            ("ss_aes", procs::SHADOWSOCKS_AES),
            // No cipher: what the shape alone costs.
            ("ss_plain", procs::SHADOWSOCKS_PLAIN),
        ] {
            ss.push((name, SsPair::start(tools, work, method, bin.threads)?));
        }
    }
    let mut list = vec![("direct", Route::Direct)];
    for (name, socks) in [("tcp", tcp.socks()), ("quic", quic.socks())] {
        if let Some(addr) = socks {
            list.push((name, Route::Socks(addr)));
        }
    }
    list.extend(ss.iter().map(|(name, pair)| (*name, Route::Socks(pair.socks))));
    let exit_leg = if plan.wants(Part::Throughput) {
        println!("bench: starting the exit-leg generator against the TCP mesh's exit");
        Some(ExitLeg::start(bin, work, &tcp.hub_p2p, &tcp.exit_p2p, origin)?)
    } else {
        None
    };
    let mut routes = Routes { list, tcp, quic, ss, exit_leg };
    for (name, route) in &routes.list {
        load::wait_route(*route, origin, Duration::from_secs(30)).await.map_err(|e| {
            BenchError::Load(format!("route {name} never carried a connection: {e}"))
        })?;
    }

    let mut figures = Vec::new();
    // Throughput also runs the exit leg alone, last in each run.
    let mut names: Vec<&str> = routes.list.iter().map(|(n, _)| *n).collect();
    if routes.exit_leg.is_some() {
        names.push("exit_leg");
    }
    let series = |prefix: &str| -> Vec<(String, Vec<f64>)> {
        names.iter().map(|n| (format!("{prefix}.{n}"), Vec::new())).collect()
    };

    // Throughput, alternating routes within each run so load drifts hit all alike.
    let mb = plan.transfer_bytes as f64 / 1e6;
    let stream_counts: &[usize] = if plan.wants(Part::Throughput) { &[1, 8] } else { &[] };
    for &streams in stream_counts {
        let mut rates = series("throughput");
        let mut cpu = series("cpu");
        for run in 0..plan.runs {
            println!("bench: throughput, {streams} stream(s), run {}/{}", run + 1, plan.runs);
            for (i, name) in names.iter().enumerate() {
                let cpu0 = routes.cpu(name);
                let took = routes.transfer(name, origin, plan.transfer_bytes, streams).await?;
                if let Some(r) = rates.get_mut(i) {
                    r.1.push(mb / took.as_secs_f64());
                }
                if let (Some(a), Some(b)) = (cpu0, routes.cpu(name)) {
                    if let Some(c) = cpu.get_mut(i) {
                        c.1.push((b - a) / (plan.transfer_bytes as f64 / 1e9));
                    }
                }
            }
        }
        let by = |n: &str| rates.iter().position(|(k, _)| k.ends_with(&format!(".{n}")));
        for (key, samples) in &rates {
            let name = key.trim_start_matches("throughput.");
            figures.push(Figure::info(
                &format!("{key}.{streams}"),
                &format!("throughput {name}, {streams} stream(s)"),
                "MB/s",
                samples.clone(),
            ));
        }
        for (key, samples) in cpu.iter().filter(|(_, s)| !s.is_empty()) {
            let name = key.trim_start_matches("cpu.");
            let whose = if name == "exit_leg" { "the exit alone" } else { "both proxy processes" };
            figures.push(Figure::info(
                &format!("cpu_per_gb.{name}.{streams}"),
                &format!("CPU {name} ({whose}), {streams} stream(s)"),
                "CPU-s/GB",
                samples.clone(),
            ));
        }
        // Ratios per run (same run, same load), then their median.
        let ratio = |a: &str, b: &str| -> Option<Vec<f64>> {
            let (ia, ib) = (by(a)?, by(b)?);
            let (ra, rb) = (&rates.get(ia)?.1, &rates.get(ib)?.1);
            Some(ra.iter().zip(rb).map(|(x, y)| x / y).collect())
        };
        for (a, b, target) in [
            ("tcp", "ss", Some(1.0)),
            // Against shadowsocks with the AEAD our Noise agrees on, where it does.
            ("tcp", "ss_aes", procs::cpu_has_aes().then_some(1.0)),
            ("tcp", "direct", Some(0.25)),
            ("quic", "tcp", Some(0.7)),
            ("exit_leg", "direct", None),
            // What the shape costs without a cipher, and how close the mesh
            // comes to that ceiling.
            ("ss_plain", "direct", None),
            ("tcp", "ss_plain", None),
        ] {
            if let Some(samples) = ratio(a, b) {
                let f = Figure::info(
                    &format!("ratio.{a}_over_{b}.{streams}"),
                    &format!("ratio {a} / {b}, {streams} stream(s)"),
                    "x",
                    samples,
                );
                // The targets are for one stream; eight is for information.
                figures.push(match target {
                    Some(t) if streams == 1 => f.with_target(Bound::AtLeast, t),
                    _ => f,
                });
            }
        }
    }

    // The origin-first figures leave shadowsocks (both) out: sslocal holds a new
    // connection up to 500 ms waiting for the app's first bytes before it
    // dials (to send them with the address), so with an origin that speaks
    // first it would measure that timer. The app-first figures (the app
    // sends one byte right after the SOCKS5 reply, the request origin
    // answers it) run every route, shadowsocks included, in the same runs.
    let quick_routes: Vec<(&'static str, Route)> =
        routes.list.iter().copied().filter(|(n, _)| !n.starts_with("ss")).collect();
    let all_routes = routes.list.clone();
    let series_of = |routes: &[(&'static str, Route)], prefix: &str| -> Vec<(String, Vec<f64>)> {
        routes.iter().map(|(n, _)| (format!("{prefix}.{n}"), Vec::new())).collect()
    };

    // Warm connect latency: per run, p50 and p99 of sequential connections.
    let mut p50 = series_of(&quick_routes, "latency");
    let mut p99 = series_of(&quick_routes, "latency");
    let mut req_p50 = series_of(&all_routes, "latency");
    let mut req_p99 = series_of(&all_routes, "latency");
    let latency_runs = if plan.wants(Part::Latency) { plan.runs } else { 0 };
    for run in 0..latency_runs {
        println!("bench: warm connect latency, run {}/{}", run + 1, plan.runs);
        let n = plan.latency_samples;
        latency_run(&quick_routes, origin, FirstWord::Origin, n, &mut p50, &mut p99).await?;
        let req = origins.request;
        latency_run(&all_routes, req, FirstWord::App, n, &mut req_p50, &mut req_p99).await?;
    }
    figures.append(&mut latency_figures(&p50, &p99, "warm", "warm"));
    figures.append(&mut latency_figures(&req_p50, &req_p99, "warm_req", "warm, app first"));
    if let (Some(direct), Some(tcp)) = (
        p99.iter().find(|(k, _)| k == "latency.direct"),
        p99.iter().find(|(k, s)| k == "latency.tcp" && !s.is_empty()),
    ) {
        let added: Vec<f64> = tcp.1.iter().zip(&direct.1).map(|(t, d)| t - d).collect();
        figures.push(
            Figure::info(
                "latency_added.tcp.warm.p99",
                "connect tcp warm p99 added over direct",
                "ms",
                added,
            )
            .with_target(Bound::AtMost, 1.0),
        );
    }

    // Cold connect: the first connection through a freshly started client.
    let cold_transports: &[Transport] =
        if plan.wants(Part::Cold) { &[Transport::Tcp, Transport::Quic] } else { &[] };
    for &transport in cold_transports {
        let mut cold = Vec::new();
        for i in 0..plan.cold_samples {
            println!(
                "bench: cold connect {}, sample {}/{}",
                transport.name(),
                i + 1,
                plan.cold_samples
            );
            let mesh = match transport {
                Transport::Tcp => &mut routes.tcp,
                Transport::Quic => &mut routes.quic,
            };
            let (client, socks) = mesh.new_client(bin, work, false)?;
            cold.push(cold_connect(Route::Socks(socks), origin).await?);
            drop(client);
        }
        cold.sort_by(f64::total_cmp);
        let name = transport.name();
        figures.push(Figure::info(
            &format!("latency.{name}.cold.p50"),
            &format!("connect {name} cold p50 ({} fresh clients)", cold.len()),
            "ms",
            vec![quantile(&cold, 0.5)],
        ));
        figures.push(Figure::info(
            &format!("latency.{name}.cold.p99"),
            &format!("connect {name} cold p99 ({} fresh clients)", cold.len()),
            "ms",
            vec![quantile(&cold, 0.99)],
        ));
    }

    // Connects per second through a warm client, origin first and app first.
    let mut cps = series_of(&quick_routes, "connects");
    let mut cps_cpu = series_of(&quick_routes, "connects");
    let mut req_cps = series_of(&all_routes, "connects");
    let mut req_cps_cpu = series_of(&all_routes, "connects");
    let connect_runs = if plan.wants(Part::Connects) { plan.runs } else { 0 };
    for run in 0..connect_runs {
        println!("bench: connects per second, run {}/{}", run + 1, plan.runs);
        let (origin_first, app_first) = (FirstWord::Origin, FirstWord::App);
        let r = &routes;
        connect_rate_run(r, &quick_routes, origin, origin_first, plan, &mut cps, &mut cps_cpu)
            .await;
        let req = origins.request;
        connect_rate_run(r, &all_routes, req, app_first, plan, &mut req_cps, &mut req_cps_cpu)
            .await;
    }
    for (key, samples) in cps.into_iter().filter(|(_, s)| !s.is_empty()) {
        let name = key.trim_start_matches("connects.");
        let f = Figure::info(
            &format!("connects_per_second.{name}"),
            &format!("CONNECTs/s {name} warm ({} workers)", plan.connect_workers),
            "1/s",
            samples,
        );
        figures.push(if name == "tcp" { f.with_target(Bound::AtLeast, 10_000.0) } else { f });
    }
    for (key, samples) in req_cps.into_iter().filter(|(_, s)| !s.is_empty()) {
        let name = key.trim_start_matches("connects.");
        figures.push(Figure::info(
            &format!("connects_per_second_req.{name}"),
            &format!("CONNECTs/s {name} warm, app first ({} workers)", plan.connect_workers),
            "1/s",
            samples,
        ));
    }
    // What each connection costs the route's proxies (direct has none).
    for (kind, what, series) in [("", "", cps_cpu), ("_req", ", app first", req_cps_cpu)] {
        for (key, samples) in series.into_iter().filter(|(_, s)| !s.is_empty()) {
            let name = key.trim_start_matches("connects.");
            figures.push(Figure::info(
                &format!("cpu_per_connect{kind}.{name}"),
                &format!("CPU {name} per CONNECT{what} (both proxy processes)"),
                "CPU-us",
                samples,
            ));
        }
    }
    Ok(figures)
}

/// The first successful connection through a fresh client, in ms. Attempts
/// before the client has learned the exit from the hub fail fast without
/// dialing it, so the one that succeeds includes the dial and handshakes.
async fn cold_connect(route: Route, origin: std::net::SocketAddr) -> Result<f64, BenchError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let t0 = Instant::now();
        match load::open(route, origin).await {
            Ok(_) => return Ok(t0.elapsed().as_secs_f64() * 1e3),
            Err(e) if Instant::now() >= deadline => {
                return Err(BenchError::Load(format!("cold connect never succeeded: {e}")))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// One mesh holding `plan.idle` idle proxied connections: the usage of its
/// clients and exit before and after, and how many connections were open.
struct MemoryPass {
    before: Snapshot,
    after: Snapshot,
    open: usize,
}

/// Opens `plan.idle` idle connections over `clients` clients and one exit,
/// run as heap probes when `probe` (for the heap figures) and as the shipped
/// `meshproxy` otherwise (RSS and fds: the probe's counting allocator is the
/// system one, not the binary's).
async fn memory_pass(
    bin: &Binaries,
    work: &Path,
    plan: &Plan,
    clients: usize,
    probe: bool,
) -> Result<MemoryPass, BenchError> {
    let what = if probe { "heap probes" } else { "meshproxy" };
    println!(
        "bench: memory: {} idle connections over {clients} client(s), one exit ({what})",
        plan.idle
    );
    let (_origin_proc, origin) = origin_child(work)?;
    let name = if probe { "memheap" } else { "mem" };
    let mut mesh = Mesh::start(bin, work, name, Transport::Tcp, &[origin], clients, probe)?;
    let routes: Vec<Route> = mesh.clients.iter().map(|(_, a)| Route::Socks(*a)).collect();
    for route in &routes {
        // Also sets up each client's libp2p connection, which is not per-connection cost.
        load::wait_route(*route, origin, Duration::from_secs(30)).await.map_err(|e| {
            BenchError::Load(format!("memory mesh never carried a connection: {e}"))
        })?;
    }
    let before = snapshot(&mut mesh, probe)?;
    let mut held = Vec::new();
    let mut failed = 0;
    let mut left = plan.idle;
    for route in &routes {
        let n = left.min(IDLE_PER_CLIENT);
        left -= n;
        let (mut conns, f) = load::open_idle(*route, origin, n, 64).await;
        held.append(&mut conns);
        failed += f;
    }
    // Let the nodes finish any work the last opens queued before sampling.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = snapshot(&mut mesh, probe)?;
    let open = held.len();
    if failed > 0 {
        println!("bench:   {failed} of {} idle connections failed to open", plan.idle);
    }
    drop(held);
    if open == 0 {
        return Err(BenchError::Load("no idle connection opened".into()));
    }
    Ok(MemoryPass { before, after, open })
}

/// RSS, heap and fds per idle proxied connection on the clients and the exit.
async fn memory_figures(
    bin: &Binaries,
    work: &Path,
    plan: &Plan,
) -> Result<Vec<Figure>, BenchError> {
    let clients = plan.idle.div_ceil(IDLE_PER_CLIENT).max(1);
    let MemoryPass { before, after, open } = memory_pass(bin, work, plan, clients, false).await?;
    let heap = memory_pass(bin, work, plan, clients, true).await?;

    let mut figures = vec![Figure::info(
        "memory.idle_connections",
        &format!("idle proxied connections held ({clients} clients)"),
        "conns",
        vec![open as f64],
    )];
    let per = |a: u64, b: u64, n: usize| (b as f64 - a as f64) / n.max(1) as f64;
    // Each client carried its share; the exit carried all of them.
    let client_conns = open as f64 / clients as f64;
    let mut client_rss = Vec::new();
    let mut client_heap = Vec::new();
    let mut client_fds = Vec::new();
    for (b, a) in before.clients.iter().zip(&after.clients) {
        client_rss.push((a.rss as f64 - b.rss as f64) / client_conns / 1024.0);
        client_fds.push((a.fds as f64 - b.fds as f64) / client_conns);
    }
    let heap_client_conns = heap.open as f64 / clients as f64;
    for (b, a) in heap.before.clients.iter().zip(&heap.after.clients) {
        client_heap.push((a.heap as f64 - b.heap as f64) / heap_client_conns / 1024.0);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    figures.push(
        Figure::info(
            "memory.rss_per_conn.client",
            "RSS per idle conn, client",
            "KiB",
            vec![mean(&client_rss)],
        )
        .with_target(Bound::AtMost, 16.0),
    );
    figures.push(
        Figure::info(
            "memory.rss_per_conn.exit",
            "RSS per idle conn, exit",
            "KiB",
            vec![per(before.exit.rss, after.exit.rss, open) / 1024.0],
        )
        .with_target(Bound::AtMost, 16.0),
    );
    figures.push(Figure::info(
        "memory.heap_per_conn.client",
        "heap per idle conn, client",
        "KiB",
        vec![mean(&client_heap)],
    ));
    figures.push(Figure::info(
        "memory.heap_per_conn.exit",
        "heap per idle conn, exit",
        "KiB",
        vec![per(heap.before.exit.heap, heap.after.exit.heap, heap.open) / 1024.0],
    ));
    figures.push(Figure::info(
        "memory.fds_per_conn.client",
        "fds per idle conn, client",
        "fds",
        vec![mean(&client_fds)],
    ));
    figures.push(Figure::info(
        "memory.fds_per_conn.exit",
        "fds per idle conn, exit",
        "fds",
        vec![per(before.exit.fds, after.exit.fds, open)],
    ));
    figures.push(Figure::info(
        "memory.rss.exit",
        &format!("RSS of the exit with {open} idle conns"),
        "MiB",
        vec![after.exit.rss as f64 / (1024.0 * 1024.0)],
    ));
    Ok(figures)
}

/// What one node's process holds.
#[derive(Debug, Clone, Copy)]
struct Usage {
    rss: u64,
    heap: u64,
    fds: u64,
}

/// The clients' and the exit's usage.
#[derive(Debug)]
struct Snapshot {
    clients: Vec<Usage>,
    exit: Usage,
}

/// `p`'s usage; the heap only from a heap probe (0 otherwise).
fn usage(p: &mut procs::Proc, probe: bool) -> Result<Usage, BenchError> {
    let heap = if probe { p.heap_bytes()? } else { 0 };
    Ok(Usage { rss: p.rss_bytes().unwrap_or(0), heap, fds: p.fds().unwrap_or(0) })
}

fn snapshot(mesh: &mut Mesh, probe: bool) -> Result<Snapshot, BenchError> {
    let mut clients = Vec::new();
    for (c, _) in &mut mesh.clients {
        clients.push(usage(c, probe)?);
    }
    Ok(Snapshot { clients, exit: usage(&mut mesh.exit, probe)? })
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
