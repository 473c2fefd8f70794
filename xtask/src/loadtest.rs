//! `cargo xtask loadtest`: thousands of concurrent SOCKS5 connections
//! through the release `meshproxy` (app → client → exit → origin, all on
//! 127.0.0.1), bounded in count and in time.
//!
//! It reuses the bench harness: `bench::procs` builds the binary, writes the
//! hub, exit and client configs and reads /proc; `bench::load` supplies the
//! origin (here in echo mode) and the SOCKS5 handshake. Each connection does
//! the greeting and CONNECT, reads the origin's first byte (its connect
//! latency ends there), holds the connection open for a moment, sends a few
//! bytes naming itself, half-closes, and checks the same bytes come back
//! before end of stream. Any failure, mismatch or connection unfinished at
//! the deadline is lost.
//!
//! Leak checks: a warm-up round, the same size as the measured one, first
//! brings the nodes to their steady state (tables and caches sized, glibc's
//! arenas grown to the working set: freed memory stays in them, so RSS
//! after one burst says little). The baseline is taken after it has
//! closed; after the measured round the open fds must come back to it
//! (within `FD_SLACK`) and RSS must not have grown by more than
//! `RSS_SLACK`. With `--heap` the exit and clients run as heap probes and
//! their live heap must come back within `HEAP_SLACK`, which tells a leak
//! of a few bytes per connection from the allocator's retention.

use crate::bench::load::{self, LoadError, Origin, OriginMode, Route};
use crate::bench::procs::{self, Mesh, Transport};
use crate::bench::report::quantile;
use crate::bench::BenchError;
use crate::table::Table;
use clap::Args;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// Open fds a process may hold after the load beyond its baseline: a
/// libp2p or timer fd opened in between is not a per-connection leak (a
/// leak of one per connection shows as thousands).
const FD_SLACK: u64 = 8;
/// RSS a process may have grown by after the measured round, against the
/// baseline taken after the warm-up round. Measured growth is within ±3 MiB
/// (allocator noise); a leak of 2 KiB per connection over the default
/// 5,000 connections (10 MiB) exceeds it. `--heap` is the precise check.
const RSS_SLACK: u64 = 8 << 20;
/// Live heap a heap probe may have grown by after the measured round
/// (`--heap`): measured growth is 0 over 5,000 connections; 16 bytes per
/// connection over 5,000 (80 KiB) exceed it.
const HEAP_SLACK: u64 = 64 << 10;
/// How long the fds may take to come back after the load (closing sessions
/// is asynchronous in the nodes); polled, not slept.
const SETTLE_DEADLINE: Duration = Duration::from_secs(15);
/// Bound on the echo after a connection is set up.
const ECHO_DEADLINE: Duration = Duration::from_secs(15);
/// How often the sampler counts the processes' fds during the load (peak
/// RSS needs no sampling: the kernel keeps `VmHWM`).
const SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// Arguments of `cargo xtask loadtest`.
#[derive(Debug, Clone, Args)]
pub struct LoadtestArgs {
    /// SOCKS5 connections in the measured load [default: 5000; 500 with --quick].
    #[arg(long, value_name = "N")]
    pub connections: Option<usize>,
    /// Connections held open at once at most [default: 1000; 200 with --quick].
    /// Above 1000 the load is spread over several clients (one libp2p
    /// connection carries at most 1024 streams).
    #[arg(long, value_name = "C")]
    pub concurrency: Option<usize>,
    /// Hard deadline for the measured load, in seconds; connections not done
    /// by then are lost [default: 120; 20 with --quick].
    #[arg(long, value_name = "S")]
    pub duration_limit: Option<u64>,
    /// How long each connection stays open between the origin's first byte
    /// and its echo, so that `concurrency` connections really are open at
    /// once [default: 100].
    #[arg(long, value_name = "MS")]
    pub hold_ms: Option<u64>,
    /// Run the exit and the clients as `examples/heap_probe` (the same node
    /// with a counting allocator) and also report their live heap before and
    /// after, which tells a leak from memory the allocator keeps.
    #[arg(long)]
    pub heap: bool,
    /// Small sizes, for CI (`cargo xtask ci` runs this).
    #[arg(long)]
    pub quick: bool,
}

impl LoadtestArgs {
    /// `--quick`, as CI runs it.
    pub fn quick() -> LoadtestArgs {
        LoadtestArgs {
            connections: None,
            concurrency: None,
            duration_limit: None,
            hold_ms: None,
            heap: false,
            quick: true,
        }
    }
}

/// Why the load test could not run at all (lost connections or a leak are
/// `Ok(false)`).
#[derive(Debug, thiserror::Error)]
pub enum LoadtestError {
    /// The harness (build, processes, origin) failed.
    #[error("loadtest: {0}")]
    Harness(#[from] BenchError),
    /// The mesh never carried a first connection.
    #[error("loadtest: the mesh never carried a connection: {0}")]
    Warm(LoadError),
    /// A file could not be written.
    #[error("loadtest: {0}: {1}")]
    Io(String, std::io::Error),
}

/// Sizes of one run.
#[derive(Debug, Clone, Copy)]
struct Plan {
    connections: usize,
    concurrency: usize,
    deadline: Duration,
    hold: Duration,
    heap: bool,
}

impl Plan {
    fn of(args: &LoadtestArgs) -> Plan {
        let (n, c, s) = if args.quick { (500, 200, 20) } else { (5000, 1000, 120) };
        let connections = args.connections.unwrap_or(n).max(1);
        Plan {
            connections,
            concurrency: args.concurrency.unwrap_or(c).clamp(1, connections),
            deadline: Duration::from_secs(args.duration_limit.unwrap_or(s).max(1)),
            hold: Duration::from_millis(args.hold_ms.unwrap_or(100)),
            heap: args.heap,
        }
    }
}

/// What the kernel says about one process at one moment; in the result
/// file as `{"fds": …, "rss_bytes": …}`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct Usage {
    fds: u64,
    #[serde(rename = "rss_bytes")]
    rss: u64,
}

fn usage(pid: u32) -> Usage {
    Usage { rss: procs::rss_bytes(pid).unwrap_or(0), fds: procs::open_fds(pid).unwrap_or(0) }
}

/// One node process and its figures.
#[derive(Debug, Clone)]
struct Watched {
    name: String,
    pid: u32,
    /// Its soft open-file limit (inherited from this process).
    fd_limit: Option<u64>,
    /// Before the warm-up round (mesh up, one connection done).
    cold: Usage,
    /// The baseline: after the warm-up round closed.
    before: Usage,
    /// The most fds seen during the load, and `VmHWM` at the end.
    peak: Usage,
    /// After the load closed and the fds settled.
    after: Usage,
    /// Live heap bytes cold, before and after (with `--heap`; not the hub).
    heap: [Option<u64>; 3],
}

/// Live heap bytes of each watched process (hub, exit, clients), where it
/// runs as a heap probe.
fn heaps(mesh: &mut Mesh, probe: bool) -> Vec<Option<u64>> {
    let mut out = vec![None];
    if !probe {
        out.resize(2 + mesh.clients.len(), None);
        return out;
    }
    out.push(mesh.exit.heap_bytes().ok());
    for (c, _) in &mut mesh.clients {
        out.push(c.heap_bytes().ok());
    }
    out
}

/// What one wave of connections achieved.
#[derive(Debug, Default)]
struct Outcome {
    /// Connect latencies of the connections that completed, greeting → first byte.
    latencies: Vec<Duration>,
    /// Failures by kind.
    errors: BTreeMap<String, usize>,
    /// Connections not finished at the deadline.
    unfinished: usize,
    /// Most connections open at once on the app side.
    peak_open: usize,
    /// Wall time.
    elapsed: Duration,
    /// How much each of `TCP_COUNTERS` grew during the wave.
    tcp: [u64; 3],
}

impl Outcome {
    fn lost(&self) -> usize {
        self.errors.values().sum::<usize>() + self.unfinished
    }
}

/// Counts a connection as open while it lives.
struct OpenGuard(Arc<AtomicUsize>);

impl OpenGuard {
    fn new(open: &Arc<AtomicUsize>, peak: &AtomicUsize) -> OpenGuard {
        let now = open.fetch_add(1, Ordering::Relaxed) + 1;
        peak.fetch_max(now, Ordering::Relaxed);
        OpenGuard(open.clone())
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One connection: SOCKS5 CONNECT to the origin, its first byte, a hold,
/// the echo of bytes naming this connection, close. Returns the connect latency.
async fn one(
    route: Route,
    origin: SocketAddr,
    index: usize,
    hold: Duration,
) -> Result<Duration, LoadError> {
    let started = Instant::now();
    let mut stream = load::open(route, origin).await?;
    let latency = started.elapsed();
    if !hold.is_zero() {
        tokio::time::sleep(hold).await;
    }
    let payload = format!("meshproxy loadtest connection {index:08}\n");
    load::echo(&mut stream, payload.as_bytes(), ECHO_DEADLINE).await?;
    Ok(latency)
}

/// Opens `n` connections, at most `concurrency` at once, spread round-robin
/// over `routes`, all within `deadline`.
async fn wave(
    routes: &[Route],
    origin: SocketAddr,
    n: usize,
    concurrency: usize,
    hold: Duration,
    deadline: Duration,
) -> Outcome {
    let started = Instant::now();
    let tcp_before = tcp_counters();
    let next = Arc::new(AtomicUsize::new(0));
    let open = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let tally: Arc<Mutex<Outcome>> = Arc::default();
    let mut workers = JoinSet::new();
    let routes: Arc<[Route]> = routes.into();
    for _ in 0..concurrency.min(n) {
        let (next, open, peak, tally, routes) =
            (next.clone(), open.clone(), peak.clone(), tally.clone(), routes.clone());
        workers.spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= n {
                    break;
                }
                let Some(route) = routes.get(index % routes.len().max(1)).copied() else {
                    break;
                };
                let result = {
                    let _open = OpenGuard::new(&open, &peak);
                    one(route, origin, index, hold).await
                };
                if let Ok(mut t) = tally.lock() {
                    match result {
                        Ok(latency) => t.latencies.push(latency),
                        Err(e) => *t.errors.entry(e.to_string()).or_default() += 1,
                    }
                }
            }
        });
    }
    let all = async { while workers.join_next().await.is_some() {} };
    // Past the deadline, whatever is unfinished counts as lost below.
    let _ = tokio::time::timeout(deadline, all).await;
    // Dropping the workers closes whatever they still hold.
    workers.abort_all();
    while workers.join_next().await.is_some() {}
    let mut outcome = match Arc::try_unwrap(tally) {
        Ok(m) => m.into_inner().unwrap_or_default(),
        Err(shared) => shared.lock().map(|mut t| std::mem::take(&mut *t)).unwrap_or_default(),
    };
    let done = outcome.latencies.len() + outcome.errors.values().sum::<usize>();
    outcome.unfinished = n.saturating_sub(done);
    outcome.peak_open = peak.load(Ordering::Relaxed);
    outcome.elapsed = started.elapsed();
    let tcp_after = tcp_counters();
    for (i, grew) in outcome.tcp.iter_mut().enumerate() {
        let (a, b) = (tcp_before.get(i).copied(), tcp_after.get(i).copied());
        *grew = b.unwrap_or(0).saturating_sub(a.unwrap_or(0));
    }
    outcome
}

/// Loopback TCP counters that explain stalled connects (machine-wide, so
/// other work on the machine adds to them): accept queues that overflowed
/// and SYNs sent again.
const TCP_COUNTERS: [&str; 3] = ["ListenOverflows", "ListenDrops", "TCPSynRetrans"];

/// The `TcpExt` counters of /proc/net/netstat named in `TCP_COUNTERS`.
fn tcp_counters() -> [u64; 3] {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else { return [0; 3] };
    let pairs: Vec<(&str, u64)> = names
        .split_whitespace()
        .zip(values.split_whitespace())
        .map(|(n, v)| (n, v.parse().unwrap_or(0)))
        .collect();
    TCP_COUNTERS.map(|want| pairs.iter().find(|(n, _)| *n == want).map_or(0, |(_, v)| *v))
}

/// Polls until every process holds at most `limit(i)` fds, or the deadline.
async fn settle(watched: &[Watched], limit: impl Fn(&Watched) -> u64) {
    let deadline = Instant::now() + SETTLE_DEADLINE;
    while Instant::now() < deadline {
        if watched.iter().all(|w| procs::open_fds(w.pid).unwrap_or(u64::MAX) <= limit(w)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the load test; `Ok(false)` when a connection was lost or a process
/// kept fds or memory after the load.
pub fn run(workspace: &Path, args: &LoadtestArgs) -> Result<bool, LoadtestError> {
    let plan = Plan::of(args);
    let out_dir = procs::target_dir(workspace).join("loadtest");
    let work = out_dir.join("run");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| LoadtestError::Io(work.display().to_string(), e))?;

    // This process holds both ends (app side and origin side) of every open
    // connection; the nodes inherit the limit.
    let want_fds = 2 * plan.concurrency as u64 + 4096;
    let fd_limit = procs::raise_fd_limit(want_fds);
    if fd_limit < want_fds {
        println!("loadtest: RLIMIT_NOFILE is {fd_limit} (wanted {want_fds}); connections may fail");
    }
    let bin = procs::build(workspace)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| LoadtestError::Io("tokio runtime".into(), e))?;
    let result = runtime.block_on(drive(&bin, &work, &plan))?;
    let (warm, measured, watched) = result;

    // Verdicts.
    let mut problems = Vec::new();
    if warm.lost() > 0 {
        problems.push(format!("{} of the warm-up connections lost", warm.lost()));
    }
    if measured.lost() > 0 {
        problems.push(format!("{} of {} connections lost", measured.lost(), plan.connections));
    }
    for w in &watched {
        if w.after.fds > w.before.fds + FD_SLACK {
            problems.push(format!(
                "{}: {} fds after the load, {} before (slack {FD_SLACK})",
                w.name, w.after.fds, w.before.fds
            ));
        }
        if let [_, Some(before), Some(after)] = w.heap {
            if after > before + HEAP_SLACK {
                problems.push(format!(
                    "{}: live heap {after} bytes after the load, {before} before (slack {HEAP_SLACK})",
                    w.name
                ));
            }
        }
        if w.after.rss > w.before.rss + RSS_SLACK {
            problems.push(format!(
                "{}: RSS {:.1} MiB after the load, {:.1} MiB before (slack {:.0} MiB)",
                w.name,
                mib(w.after.rss),
                mib(w.before.rss),
                mib(RSS_SLACK)
            ));
        }
    }

    let mode = if args.quick { "quick" } else { "full" };
    let mut ms: Vec<f64> = measured.latencies.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let (p50, p99, max) = (quantile(&ms, 0.5), quantile(&ms, 0.99), quantile(&ms, 1.0));
    let rate = measured.latencies.len() as f64 / measured.elapsed.as_secs_f64().max(1e-9);

    let mut summary = Table::new(["load", "value"]);
    let rows: [(&str, String); 11] = [
        ("connections", plan.connections.to_string()),
        ("concurrency (workers)", plan.concurrency.to_string()),
        ("most open at once", measured.peak_open.to_string()),
        ("succeeded", measured.latencies.len().to_string()),
        ("lost", measured.lost().to_string()),
        (
            "success rate",
            format!("{:.2} %", 100.0 * measured.latencies.len() as f64 / plan.connections as f64),
        ),
        ("connect p50", format!("{p50:.2} ms")),
        ("connect p99", format!("{p99:.2} ms")),
        ("connect max", format!("{max:.2} ms")),
        (
            "wall time",
            format!(
                "{:.2} s (limit {} s)",
                measured.elapsed.as_secs_f64(),
                plan.deadline.as_secs()
            ),
        ),
        ("connections/s", format!("{rate:.0}")),
    ];
    for (k, v) in rows {
        summary.row(vec![k.to_owned(), v]);
    }
    let mut header = vec![
        "process",
        "fd limit",
        "RSS cold",
        "RSS before",
        "RSS peak",
        "RSS after",
        "after-before",
        "fds cold",
        "fds before",
        "fds peak",
        "fds after",
    ];
    if plan.heap {
        header.extend(["heap cold", "heap before", "heap after"]);
    }
    let mut per_proc = Table::new(header);
    for w in &watched {
        let mut row = vec![
            w.name.clone(),
            w.fd_limit.map_or("-".into(), |l| l.to_string()),
            format!("{:.1} MiB", mib(w.cold.rss)),
            format!("{:.1} MiB", mib(w.before.rss)),
            format!("{:.1} MiB", mib(w.peak.rss)),
            format!("{:.1} MiB", mib(w.after.rss)),
            format!("{:+.1} MiB", (w.after.rss as f64 - w.before.rss as f64) / f64::from(1 << 20)),
            w.cold.fds.to_string(),
            w.before.fds.to_string(),
            w.peak.fds.to_string(),
            w.after.fds.to_string(),
        ];
        if plan.heap {
            let kib =
                |h: Option<u64>| h.map_or("-".into(), |b| format!("{:.0} KiB", b as f64 / 1024.0));
            row.extend(w.heap.iter().map(|h| kib(*h)));
        }
        per_proc.row(row);
    }
    println!(
        "\nloadtest ({mode}; {} warm-up connections first, {} lost; hold {} ms; load average {}):\n{}\n\n{}",
        warm.latencies.len() + warm.lost(),
        warm.lost(),
        plan.hold.as_millis(),
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        summary.render(),
        per_proc.render()
    );
    for (error, count) in measured.errors.iter().chain(&warm.errors) {
        println!("loadtest:   {count} x {error}");
    }
    let counters: Vec<String> =
        TCP_COUNTERS.iter().zip(measured.tcp).map(|(n, v)| format!("{n} +{v}")).collect();
    println!("loadtest: during the load (machine-wide): {}", counters.join(", "));
    if measured.unfinished > 0 {
        println!("loadtest:   {} x unfinished at the deadline", measured.unfinished);
    }

    let file = result_file(mode, &plan, &warm, &measured, &watched, [p50, p99, max], &problems);
    let path = out_dir.join("result.json");
    let text = serde_json::to_string_pretty(&file).unwrap_or_default();
    std::fs::write(&path, text).map_err(|e| LoadtestError::Io(path.display().to_string(), e))?;
    println!("loadtest: wrote {}", path.display());
    if problems.is_empty() {
        println!("loadtest: PASS (0 lost; fds within {FD_SLACK} and RSS within {:.0} MiB of the baseline)", mib(RSS_SLACK));
    } else {
        println!("loadtest: FAILED: {}", problems.join("; "));
    }
    Ok(problems.is_empty())
}

/// Connections one client holds open at most: one libp2p connection carries
/// at most 1,024 streams (the loadtest raises the session limits).
const OPEN_PER_CLIENT: usize = 1000;

/// Starts the mesh, warms it, takes the baseline, runs the measured load
/// with a sampler alongside, and waits for the processes to settle.
async fn drive(
    bin: &procs::Binaries,
    work: &Path,
    plan: &Plan,
) -> Result<(Outcome, Outcome, Vec<Watched>), LoadtestError> {
    let origin = Origin::start_mode(OriginMode::Echo)
        .await
        .map_err(|e| BenchError::Load(format!("origin: {e}")))?;
    let clients = plan.concurrency.div_ceil(OPEN_PER_CLIENT).max(1);
    println!(
        "loadtest: hub, exit and {clients} client(s); {} connections, {} at once",
        plan.connections, plan.concurrency
    );
    let mut mesh =
        Mesh::start(bin, work, "load", Transport::Tcp, &[origin.addr], clients, plan.heap)?;
    let routes: Vec<Route> = mesh.clients.iter().map(|(_, a)| Route::Socks(*a)).collect();
    for route in &routes {
        load::wait_route(*route, origin.addr, Duration::from_secs(30))
            .await
            .map_err(LoadtestError::Warm)?;
    }
    let mut watched: Vec<Watched> = std::iter::once(&mesh.hub)
        .chain(std::iter::once(&mesh.exit))
        .chain(mesh.clients.iter().map(|(c, _)| c))
        .map(|p| {
            let cold = usage(p.pid());
            Watched {
                name: p.name.clone(),
                pid: p.pid(),
                fd_limit: procs::fd_soft_limit(p.pid()),
                cold,
                before: cold,
                peak: Usage::default(),
                after: Usage::default(),
                heap: [None; 3],
            }
        })
        .collect();
    for (w, h) in watched.iter_mut().zip(heaps(&mut mesh, plan.heap)) {
        w.heap[0] = h;
    }

    println!(
        "loadtest: warm-up round: {} connections, at most {} at once",
        plan.connections, plan.concurrency
    );
    let warm =
        wave(&routes, origin.addr, plan.connections, plan.concurrency, plan.hold, plan.deadline)
            .await;
    settle(&watched, |w| w.cold.fds + FD_SLACK).await;
    for (w, h) in watched.iter_mut().zip(heaps(&mut mesh, plan.heap)) {
        w.before = usage(w.pid);
        w.heap[1] = h;
    }

    println!("loadtest: {} connections, at most {} at once", plan.connections, plan.concurrency);
    let pids: Vec<u32> = watched.iter().map(|w| w.pid).collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut most = vec![0u64; pids.len()];
            while !stop.load(Ordering::Relaxed) {
                for (m, pid) in most.iter_mut().zip(&pids) {
                    *m = (*m).max(procs::open_fds(*pid).unwrap_or(0));
                }
                tokio::time::sleep(SAMPLE_EVERY).await;
            }
            most
        })
    };
    let measured =
        wave(&routes, origin.addr, plan.connections, plan.concurrency, plan.hold, plan.deadline)
            .await;
    stop.store(true, Ordering::Relaxed);
    let most_fds = sampler.await.unwrap_or_default();
    settle(&watched, |w| w.before.fds + FD_SLACK).await;
    let after_heaps = heaps(&mut mesh, plan.heap);
    for (i, w) in watched.iter_mut().enumerate() {
        w.after = usage(w.pid);
        w.heap[2] = after_heaps.get(i).copied().flatten();
        w.peak = Usage {
            rss: procs::peak_rss_bytes(w.pid).unwrap_or(0),
            fds: most_fds.get(i).copied().unwrap_or(0),
        };
    }
    drop(mesh);
    Ok((warm, measured, watched))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

/// `target/loadtest/result.json`.
///
/// Fields here and in the records below are declared in alphabetical order:
/// serde writes them in declaration order, and the file has always had its
/// keys sorted (it was built with `json!`, whose maps are sorted), so the
/// bytes stay as they were.
#[derive(Debug, Serialize)]
struct ResultFile<'a> {
    concurrency: usize,
    /// Connect latency of the measured round, greeting → first origin byte;
    /// null when nothing connected.
    connect_ms: ConnectMs,
    connections: usize,
    duration_limit_s: u64,
    /// Failures of the measured round by kind.
    errors: &'a BTreeMap<String, usize>,
    fd_slack: u64,
    heap_slack_bytes: u64,
    hold_ms: u64,
    lost: usize,
    mode: &'a str,
    pass: bool,
    peak_open: usize,
    problems: &'a [String],
    processes: Vec<ProcessRecord<'a>>,
    rss_slack_bytes: u64,
    succeeded: usize,
    /// Machine-wide growth of each of `TCP_COUNTERS` during the measured round.
    tcp_counters_during_load: BTreeMap<&'static str, u64>,
    unfinished: usize,
    wall_s: f64,
    warmup: Warmup,
}

/// Connect-latency quantiles, ms; null when not measured (JSON has no NaN).
#[derive(Debug, Serialize)]
struct ConnectMs {
    max: Option<f64>,
    p50: Option<f64>,
    p99: Option<f64>,
}

/// The warm-up round.
#[derive(Debug, Serialize)]
struct Warmup {
    connections: usize,
    lost: usize,
}

/// One [`Watched`] process.
#[derive(Debug, Serialize)]
struct ProcessRecord<'a> {
    after: Usage,
    before: Usage,
    cold: Usage,
    fd_soft_limit: Option<u64>,
    heap_bytes: HeapBytes,
    name: &'a str,
    peak: Usage,
}

/// Live heap bytes (null unless `--heap`, and always for the hub).
#[derive(Debug, Serialize)]
struct HeapBytes {
    after: Option<u64>,
    before: Option<u64>,
    cold: Option<u64>,
}

/// The result file of a run.
fn result_file<'a>(
    mode: &'a str,
    plan: &Plan,
    warm: &Outcome,
    measured: &'a Outcome,
    watched: &'a [Watched],
    [p50, p99, max]: [f64; 3],
    problems: &'a [String],
) -> ResultFile<'a> {
    let finite = |v: f64| v.is_finite().then_some(v);
    ResultFile {
        concurrency: plan.concurrency,
        connect_ms: ConnectMs { max: finite(max), p50: finite(p50), p99: finite(p99) },
        connections: plan.connections,
        duration_limit_s: plan.deadline.as_secs(),
        errors: &measured.errors,
        fd_slack: FD_SLACK,
        heap_slack_bytes: HEAP_SLACK,
        hold_ms: plan.hold.as_millis() as u64,
        lost: measured.lost(),
        mode,
        pass: problems.is_empty(),
        peak_open: measured.peak_open,
        problems,
        processes: watched
            .iter()
            .map(|w| ProcessRecord {
                after: w.after,
                before: w.before,
                cold: w.cold,
                fd_soft_limit: w.fd_limit,
                heap_bytes: HeapBytes { after: w.heap[2], before: w.heap[1], cold: w.heap[0] },
                name: &w.name,
                peak: w.peak,
            })
            .collect(),
        rss_slack_bytes: RSS_SLACK,
        succeeded: measured.latencies.len(),
        tcp_counters_during_load: TCP_COUNTERS.into_iter().zip(measured.tcp).collect(),
        unfinished: measured.unfinished,
        wall_s: measured.elapsed.as_secs_f64(),
        warmup: Warmup { connections: warm.latencies.len() + warm.lost(), lost: warm.lost() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> LoadtestArgs {
        LoadtestArgs {
            connections: None,
            concurrency: None,
            duration_limit: None,
            hold_ms: None,
            heap: false,
            quick: false,
        }
    }

    #[test]
    fn the_default_and_quick_plans_match_the_documented_sizes() {
        let full = Plan::of(&args());
        assert_eq!((full.connections, full.concurrency), (5000, 1000));
        assert_eq!(full.deadline, Duration::from_secs(120));
        let quick = Plan::of(&LoadtestArgs::quick());
        assert_eq!((quick.connections, quick.concurrency), (500, 200));
        assert_eq!(quick.deadline, Duration::from_secs(20));
    }

    #[test]
    fn concurrency_never_exceeds_the_connections() {
        let plan =
            Plan::of(&LoadtestArgs { connections: Some(10), concurrency: Some(50), ..args() });
        assert_eq!((plan.connections, plan.concurrency), (10, 10));
    }

    fn runtime() -> tokio::runtime::Runtime {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build();
        rt.unwrap_or_else(|e| panic!("tokio runtime: {e}"))
    }

    #[test]
    fn a_wave_against_the_echo_origin_loses_nothing() {
        runtime().block_on(async {
            let origin =
                Origin::start_mode(OriginMode::Echo).await.unwrap_or_else(|e| panic!("{e}"));
            let out = wave(
                &[Route::Direct],
                origin.addr,
                200,
                50,
                Duration::from_millis(1),
                Duration::from_secs(30),
            )
            .await;
            assert_eq!(out.latencies.len(), 200, "errors: {:?}", out.errors);
            assert_eq!(out.lost(), 0);
            assert!(out.peak_open <= 50 && out.peak_open > 1, "peak {}", out.peak_open);
        });
    }

    #[test]
    fn connections_unfinished_at_the_deadline_are_lost() {
        runtime().block_on(async {
            let origin =
                Origin::start_mode(OriginMode::Echo).await.unwrap_or_else(|e| panic!("{e}"));
            // Each holds 10 s; the deadline cuts the wave after 200 ms.
            let out = wave(
                &[Route::Direct],
                origin.addr,
                20,
                5,
                Duration::from_secs(10),
                Duration::from_millis(200),
            )
            .await;
            assert_eq!(out.latencies.len(), 0);
            assert_eq!(out.unfinished, 20);
            assert_eq!(out.lost(), 20);
        });
    }

    #[test]
    fn a_counting_origin_is_an_echo_mismatch() {
        runtime().block_on(async {
            let origin =
                Origin::start_mode(OriginMode::Count).await.unwrap_or_else(|e| panic!("{e}"));
            let out =
                wave(&[Route::Direct], origin.addr, 3, 3, Duration::ZERO, Duration::from_secs(30))
                    .await;
            assert_eq!(out.lost(), 3);
            assert_eq!(out.errors.get("echo mismatch"), Some(&3), "{:?}", out.errors);
        });
    }

    #[test]
    fn the_tcp_counters_are_read_from_proc() {
        // Present on any Linux; the values only ever grow.
        let a = tcp_counters();
        let b = tcp_counters();
        assert!(a.iter().zip(&b).all(|(x, y)| y >= x));
    }

    /// Asserts `keys` are first written in this order in `text`.
    fn written_in_order(text: &str, keys: &[&str]) {
        let at: Vec<usize> = keys
            .iter()
            .map(|k| text.find(&format!("\"{k}\":")).unwrap_or_else(|| panic!("{k} in {text}")))
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{keys:?} in {text}");
    }

    /// The result file's schema, which README.md and whatever reads
    /// `target/loadtest/result.json` rely on: every key, every type.
    #[test]
    fn the_result_file_keeps_its_keys_and_shape() {
        use serde_json::{json, Value};

        let plan = Plan::of(&LoadtestArgs::quick());
        let warm = Outcome {
            latencies: vec![Duration::from_millis(3); 7],
            errors: BTreeMap::from([("refused".to_owned(), 2)]),
            ..Outcome::default()
        };
        let measured = Outcome {
            latencies: vec![Duration::from_millis(3); 5],
            errors: BTreeMap::from([("echo mismatch".to_owned(), 1)]),
            unfinished: 3,
            peak_open: 9,
            elapsed: Duration::from_millis(1500),
            tcp: [4, 5, 6],
        };
        let watched = vec![Watched {
            name: "exit".into(),
            pid: 1,
            fd_limit: Some(1024),
            cold: Usage { fds: 1, rss: 10 },
            before: Usage { fds: 2, rss: 20 },
            peak: Usage { fds: 3, rss: 30 },
            after: Usage { fds: 4, rss: 40 },
            heap: [Some(100), None, Some(300)],
        }];
        let problems = vec!["4 lost".to_owned()];
        let file = result_file(
            "quick",
            &plan,
            &warm,
            &measured,
            &watched,
            [1.5, f64::NAN, 9.0],
            &problems,
        );
        let text = serde_json::to_string(&file).unwrap_or_else(|e| panic!("{e}"));
        let json: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));

        let top = [
            "concurrency",
            "connect_ms",
            "connections",
            "duration_limit_s",
            "errors",
            "fd_slack",
            "heap_slack_bytes",
            "hold_ms",
            "lost",
            "mode",
            "pass",
            "peak_open",
            "problems",
            "processes",
            "rss_slack_bytes",
            "succeeded",
            "tcp_counters_during_load",
            "unfinished",
            "wall_s",
            "warmup",
        ];
        let keys: Vec<&str> =
            json.as_object().map_or(vec![], |m| m.keys().map(String::as_str).collect());
        assert_eq!(keys, top);
        // Written sorted, as the file always was.
        written_in_order(&text, &top);

        let expect = json!({
            "concurrency": 200,
            "connect_ms": { "max": 9.0, "p50": 1.5, "p99": null },
            "connections": 500,
            "duration_limit_s": 20,
            "errors": { "echo mismatch": 1 },
            "fd_slack": FD_SLACK,
            "heap_slack_bytes": HEAP_SLACK,
            "hold_ms": 100,
            "lost": 4,
            "mode": "quick",
            "pass": false,
            "peak_open": 9,
            "problems": ["4 lost"],
            "processes": [{
                "after": { "fds": 4, "rss_bytes": 40 },
                "before": { "fds": 2, "rss_bytes": 20 },
                "cold": { "fds": 1, "rss_bytes": 10 },
                "fd_soft_limit": 1024,
                "heap_bytes": { "after": 300, "before": null, "cold": 100 },
                "name": "exit",
                "peak": { "fds": 3, "rss_bytes": 30 },
            }],
            "rss_slack_bytes": RSS_SLACK,
            "succeeded": 5,
            "tcp_counters_during_load": {
                "ListenDrops": 5,
                "ListenOverflows": 4,
                "TCPSynRetrans": 6,
            },
            "unfinished": 3,
            "wall_s": 1.5,
            "warmup": { "connections": 9, "lost": 2 },
        });
        assert_eq!(json, expect, "{text}");
        written_in_order(
            &text,
            &["after", "before", "cold", "fd_soft_limit", "heap_bytes", "name", "peak"],
        );
        assert!(text.contains(r#""cold":{"fds":1,"rss_bytes":10}"#), "{text}");
        assert!(text.contains(r#""heap_bytes":{"after":300,"before":null,"cold":100}"#), "{text}");
    }
}
