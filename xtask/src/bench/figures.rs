//! The network figures: throughput and CPU per GB, connect latency (warm
//! and cold), connects per second and CPU per connect, along every route
//! (direct, the mesh over TCP and QUIC, shadowsocks-rust, the exit leg).

use super::load::{self, FirstWord, Route};
use super::procs::{self, Binaries, ExitLeg, Mesh, SsPair, Transport};
use super::report::{quantile, Bound, Figure};
use super::{BenchError, Part, Plan};
use std::path::Path;
use std::time::{Duration, Instant};

/// Figures of one kind per route, in route order: `(key, samples)`.
type Series = Vec<(String, Vec<f64>)>;

/// The origins the network figures reach.
#[derive(Debug, Clone, Copy)]
pub(super) struct Origins {
    /// Greets first, then counts (throughput, and the existing latency figures).
    pub(super) counting: std::net::SocketAddr,
    /// Answers the app's first byte ([`load::OriginMode::Request`]).
    pub(super) request: std::net::SocketAddr,
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
    /// The routes for figures where the origin speaks first: all but
    /// shadowsocks. sslocal holds a new connection up to 500 ms waiting for
    /// the app's first bytes before it dials (to send them with the
    /// address), so with an origin that speaks first it would measure that
    /// timer. The app-first figures (the app sends one byte right after the
    /// SOCKS5 reply, the request origin answers it) run every route.
    fn origin_first(&self) -> Vec<(&'static str, Route)> {
        self.list.iter().copied().filter(|(n, _)| !n.starts_with("ss")).collect()
    }

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
    p50: &mut Series,
    p99: &mut Series,
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
fn latency_figures(p50: &Series, p99: &Series, kind: &str, what: &str) -> Vec<Figure> {
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
    cps: &mut Series,
    cpu: &mut Series,
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
pub(super) async fn network_figures(
    bin: &Binaries,
    work: &Path,
    plan: &Plan,
    ss_tools: Option<&procs::Shadowsocks>,
    origins: Origins,
) -> Result<Vec<Figure>, BenchError> {
    let mut routes = start_routes(bin, work, plan, ss_tools, origins).await?;
    let mut figures = Vec::new();
    if plan.wants(Part::Throughput) {
        // Which AEAD the mesh's Noise agreed on decides what `tcp / ss_aes` compares.
        let aead = procs::agreed_aead(&work.join("tcp-exit.log"));
        match &aead {
            Some(name) => println!("bench: the TCP mesh's Noise agreed on {name}"),
            None => println!("bench:   no agreed AEAD in tcp-exit.log; tcp / ss_aes has no target"),
        }
        let aes = aead.as_deref() == Some(procs::NOISE_AESGCM);
        for streams in [1, 8] {
            figures
                .append(&mut throughput_figures(&mut routes, plan, origins, streams, aes).await?);
        }
    }
    if plan.wants(Part::Latency) {
        figures.append(&mut warm_latency_figures(&routes, plan, origins).await?);
    }
    if plan.wants(Part::Cold) {
        for transport in [Transport::Tcp, Transport::Quic] {
            figures
                .append(&mut cold_figures(&mut routes, bin, work, plan, origins, transport).await?);
        }
    }
    if plan.wants(Part::Connects) {
        figures.append(&mut connect_figures(&routes, plan, origins).await);
    }
    Ok(figures)
}

/// Starts the meshes, shadowsocks pairs and the exit-leg generator, and
/// waits until every route carries a connection.
async fn start_routes(
    bin: &Binaries,
    work: &Path,
    plan: &Plan,
    ss_tools: Option<&procs::Shadowsocks>,
    origins: Origins,
) -> Result<Routes, BenchError> {
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
    let routes = Routes { list, tcp, quic, ss, exit_leg };
    for (name, route) in &routes.list {
        load::wait_route(*route, origin, Duration::from_secs(30)).await.map_err(|e| {
            BenchError::Load(format!("route {name} never carried a connection: {e}"))
        })?;
    }
    Ok(routes)
}

/// One empty series per route name, keyed `PREFIX.NAME`.
fn series_of<'a>(names: impl IntoIterator<Item = &'a str>, prefix: &str) -> Series {
    names.into_iter().map(|n| (format!("{prefix}.{n}"), Vec::new())).collect()
}

/// Throughput and CPU per GB over `streams` streams, alternating routes
/// within each run so load drifts hit all alike, and the ratios between
/// routes. `aes`: the mesh's Noise agreed on AES-256-GCM, so `tcp / ss_aes`
/// compares like with like and carries a target.
async fn throughput_figures(
    routes: &mut Routes,
    plan: &Plan,
    origins: Origins,
    streams: usize,
    aes: bool,
) -> Result<Vec<Figure>, BenchError> {
    // The exit leg alone runs last in each run.
    let mut names: Vec<&'static str> = routes.list.iter().map(|(n, _)| *n).collect();
    if routes.exit_leg.is_some() {
        names.push("exit_leg");
    }
    let mb = plan.transfer_bytes as f64 / 1e6;
    let mut rates = series_of(names.iter().copied(), "throughput");
    let mut cpu = series_of(names.iter().copied(), "cpu");
    for run in 0..plan.runs {
        println!("bench: throughput, {streams} stream(s), run {}/{}", run + 1, plan.runs);
        for (i, name) in names.iter().enumerate() {
            let cpu0 = routes.cpu(name);
            let took =
                routes.transfer(name, origins.counting, plan.transfer_bytes, streams).await?;
            if let Some(r) = rates.get_mut(i) {
                r.1.push(mb / took.as_secs_f64());
            }
            if let (Some(a), Some(b), Some(c)) = (cpu0, routes.cpu(name), cpu.get_mut(i)) {
                c.1.push((b - a) / (plan.transfer_bytes as f64 / 1e9));
            }
        }
    }
    let mut figures = Vec::new();
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
    figures.append(&mut ratio_figures(&rates, streams, aes));
    Ok(figures)
}

/// Throughput ratios between routes per run (same run, same load), with the
/// issue's targets on one stream; eight is for information.
fn ratio_figures(rates: &Series, streams: usize, aes: bool) -> Vec<Figure> {
    let by = |n: &str| rates.iter().position(|(k, _)| k.ends_with(&format!(".{n}")));
    let ratio = |a: &str, b: &str| -> Option<Vec<f64>> {
        let (ia, ib) = (by(a)?, by(b)?);
        let (ra, rb) = (&rates.get(ia)?.1, &rates.get(ib)?.1);
        Some(ra.iter().zip(rb).map(|(x, y)| x / y).collect())
    };
    let mut figures = Vec::new();
    for (a, b, target) in [
        ("tcp", "ss", Some(1.0)),
        // Against shadowsocks with the AEAD our Noise agreed on, where it did.
        ("tcp", "ss_aes", aes.then_some(1.0)),
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
            figures.push(match target {
                Some(t) if streams == 1 => f.with_target(Bound::AtLeast, t),
                _ => f,
            });
        }
    }
    figures
}

/// Warm connect latency, origin first and app first: per run, p50 and p99
/// of sequential connections along each route, and what the mesh adds to
/// direct at p99.
async fn warm_latency_figures(
    routes: &Routes,
    plan: &Plan,
    origins: Origins,
) -> Result<Vec<Figure>, BenchError> {
    let origin_first = routes.origin_first();
    let all = routes.list.clone();
    let names = |list: &[(&'static str, Route)]| list.iter().map(|(n, _)| *n).collect::<Vec<_>>();
    let mut p50 = series_of(names(&origin_first), "latency");
    let mut p99 = series_of(names(&origin_first), "latency");
    let mut req_p50 = series_of(names(&all), "latency");
    let mut req_p99 = series_of(names(&all), "latency");
    for run in 0..plan.runs {
        println!("bench: warm connect latency, run {}/{}", run + 1, plan.runs);
        let n = plan.latency_samples;
        let origin = origins.counting;
        latency_run(&origin_first, origin, FirstWord::Origin, n, &mut p50, &mut p99).await?;
        let req = origins.request;
        latency_run(&all, req, FirstWord::App, n, &mut req_p50, &mut req_p99).await?;
    }
    let mut figures = latency_figures(&p50, &p99, "warm", "warm");
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
    Ok(figures)
}

/// Cold connect over `transport`: the first connection through each of
/// `plan.cold_samples` freshly started clients, p50 and p99.
async fn cold_figures(
    routes: &mut Routes,
    bin: &Binaries,
    work: &Path,
    plan: &Plan,
    origins: Origins,
    transport: Transport,
) -> Result<Vec<Figure>, BenchError> {
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
        cold.push(cold_connect(Route::Socks(socks), origins.counting).await?);
        drop(client);
    }
    cold.sort_by(f64::total_cmp);
    let name = transport.name();
    Ok(vec![
        Figure::info(
            &format!("latency.{name}.cold.p50"),
            &format!("connect {name} cold p50 ({} fresh clients)", cold.len()),
            "ms",
            vec![quantile(&cold, 0.5)],
        ),
        Figure::info(
            &format!("latency.{name}.cold.p99"),
            &format!("connect {name} cold p99 ({} fresh clients)", cold.len()),
            "ms",
            vec![quantile(&cold, 0.99)],
        ),
    ])
}

/// Connects per second through a warm client, origin first and app first,
/// and what each connection costs the route's proxies (direct has none).
async fn connect_figures(routes: &Routes, plan: &Plan, origins: Origins) -> Vec<Figure> {
    let origin_first = routes.origin_first();
    let all = routes.list.clone();
    let names = |list: &[(&'static str, Route)]| list.iter().map(|(n, _)| *n).collect::<Vec<_>>();
    let mut cps = series_of(names(&origin_first), "connects");
    let mut cps_cpu = series_of(names(&origin_first), "connects");
    let mut req_cps = series_of(names(&all), "connects");
    let mut req_cps_cpu = series_of(names(&all), "connects");
    for run in 0..plan.runs {
        println!("bench: connects per second, run {}/{}", run + 1, plan.runs);
        let (origin, req) = (origins.counting, origins.request);
        let first = FirstWord::Origin;
        connect_rate_run(routes, &origin_first, origin, first, plan, &mut cps, &mut cps_cpu).await;
        let first = FirstWord::App;
        connect_rate_run(routes, &all, req, first, plan, &mut req_cps, &mut req_cps_cpu).await;
    }
    let mut figures = Vec::new();
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
    figures
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
