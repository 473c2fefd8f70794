//! The ingress figures: public HTTP through gateway → mesh → agent →
//! origin, against the same origin directly and through rathole (plain TCP
//! and Noise), all measured in the same run. Per route: requests/s and
//! p50/p99 latency of small responses over keep-alive connections (wrk),
//! CPU of the route's proxies per request, and the throughput of one large
//! download over one connection (curl). Ratios are taken run by run.

use super::http_origin::HttpOrigin;
use super::ingress_procs::{Ingress, Rathole};
use super::procs::Binaries;
use super::report::{Bound, Figure};
use super::wrk::{self, Load};
use super::{BenchError, Plan};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The generators and tunnels the ingress figures run.
#[derive(Debug, Clone)]
pub(super) struct IngressTools {
    /// `wrk`.
    pub(super) wrk: PathBuf,
    /// `rathole`, unless skipped.
    pub(super) rathole: Option<PathBuf>,
}

/// The issue's targets on small requests.
const TARGET_OVER_RATHOLE: f64 = 1.0;
const TARGET_OVER_DIRECT: f64 = 0.8;

/// One route's processes (dropped, and so killed, with it).
enum Procs {
    Direct,
    Mesh(Ingress),
    Rathole(Rathole),
}

struct Route {
    name: &'static str,
    addr: SocketAddr,
    procs: Procs,
}

impl Route {
    /// CPU seconds of the route's proxies so far (none for direct).
    fn cpu(&self) -> Option<f64> {
        match &self.procs {
            Procs::Direct => None,
            Procs::Mesh(m) => Some(m.cpu()),
            Procs::Rathole(r) => Some(r.cpu()),
        }
    }
}

/// Samples per route, one per run.
#[derive(Default)]
struct Samples {
    rps: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    cpu_us: Vec<f64>,
    mbps: Vec<f64>,
}

/// Measures every route `plan.runs` times, alternating, and returns the figures.
pub(super) async fn ingress_figures(
    bin: &Binaries,
    work: &Path,
    plan: &Plan,
    tools: &IngressTools,
) -> Result<Vec<Figure>, BenchError> {
    let origin = HttpOrigin::start().await.map_err(|e| BenchError::Io("HTTP origin".into(), e))?;
    println!("bench: ingress: starting hub+gateway and agent, rathole");
    let mut routes = vec![Route { name: "direct", addr: origin.addr, procs: Procs::Direct }];
    let mesh = Ingress::start(bin, work, origin.addr).await?;
    routes.push(Route { name: "meshproxy", addr: mesh.http, procs: Procs::Mesh(mesh) });
    if let Some(rathole) = &tools.rathole {
        for (name, noise) in [("rathole", false), ("rathole_noise", true)] {
            let r = Rathole::start(rathole, work, origin.addr, noise).await?;
            routes.push(Route { name, addr: r.http, procs: Procs::Rathole(r) });
        }
    }
    let load =
        Load { connections: plan.ingress_connections, threads: 1, duration: plan.ingress_duration };
    // Connections set up and caches warm before anything counts.
    let warm = Load { duration: Duration::from_secs(1), ..load };
    for r in &routes {
        blocking_wrk(tools, work, r, warm).await.map_err(BenchError::Load)?;
    }
    let mut samples: Vec<Samples> = routes.iter().map(|_| Samples::default()).collect();
    for run in 0..plan.runs {
        println!("bench: ingress, run {}/{}", run + 1, plan.runs);
        for (r, s) in routes.iter().zip(samples.iter_mut()) {
            let cpu0 = r.cpu();
            let got = blocking_wrk(tools, work, r, load).await.map_err(BenchError::Load)?;
            s.rps.push(got.rps());
            s.p50.push(got.p50_ms);
            s.p99.push(got.p99_ms);
            if let (Some(a), Some(b)) = (cpu0, r.cpu()) {
                s.cpu_us.push((b - a) * 1e6 / got.requests as f64);
            }
            let bytes = plan.ingress_big_bytes;
            let took = download(r.addr, bytes)
                .await
                .map_err(|e| BenchError::Load(format!("ingress {} download: {e}", r.name)))?;
            s.mbps.push(bytes as f64 / 1e6 / took.as_secs_f64());
        }
    }
    drop(routes);
    Ok(figures(&names(plan, tools), &samples, plan))
}

/// The route names in measuring order.
fn names(_plan: &Plan, tools: &IngressTools) -> Vec<&'static str> {
    let mut n = vec!["direct", "meshproxy"];
    if tools.rathole.is_some() {
        n.extend(["rathole", "rathole_noise"]);
    }
    n
}

/// wrk against `GET /` on `route`, off the async workers (the origin runs on them).
async fn blocking_wrk(
    tools: &IngressTools,
    work: &Path,
    route: &Route,
    load: Load,
) -> Result<wrk::WrkResult, String> {
    let (wrk, dir) = (tools.wrk.clone(), work.to_owned());
    let url = format!("http://{}/", route.addr);
    let name = route.name;
    tokio::task::spawn_blocking(move || wrk::run(&wrk, &dir, &url, load))
        .await
        .map_err(|e| format!("wrk task: {e}"))?
        .map_err(|e| format!("ingress {name}: {e}"))
}

/// Downloads `bytes` from `GET /bytes/N` at `addr` over one connection with
/// curl; its total time. Anything but a 200 with every byte is an error.
async fn download(addr: SocketAddr, bytes: u64) -> Result<Duration, String> {
    let url = format!("http://{addr}/bytes/{bytes}");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .args(["-s", "-o", "/dev/null", "--max-time", "300"])
            .args(["-w", "%{http_code} %{size_download} %{time_total}"])
            .arg(&url)
            .output()
    })
    .await
    .map_err(|e| format!("curl task: {e}"))?
    .map_err(|e| format!("cannot start curl: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut words = text.split_whitespace();
    let code = words.next().unwrap_or_default();
    let size: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
    let secs: f64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0.0);
    if !out.status.success() || code != "200" || size != bytes || secs.is_nan() || secs <= 0.0 {
        return Err(format!("curl {} wanted 200 and {bytes} bytes, got: {text}", out.status));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The figures of the samples (indexed like `names`), ratios per run.
fn figures(names: &[&'static str], samples: &[Samples], plan: &Plan) -> Vec<Figure> {
    let conns = plan.ingress_connections;
    let mut out = Vec::new();
    for (name, s) in names.iter().zip(samples) {
        out.push(Figure::info(
            &format!("ingress.rps.{name}"),
            &format!("ingress {name} req/s ({conns} conns, keep-alive)"),
            "req/s",
            s.rps.clone(),
        ));
        out.push(Figure::info(
            &format!("ingress.latency.{name}.p50"),
            &format!("ingress {name} p50"),
            "ms",
            s.p50.clone(),
        ));
        out.push(Figure::info(
            &format!("ingress.latency.{name}.p99"),
            &format!("ingress {name} p99"),
            "ms",
            s.p99.clone(),
        ));
        if !s.cpu_us.is_empty() {
            out.push(Figure::info(
                &format!("ingress.cpu_per_request.{name}"),
                &format!("ingress {name} CPU per request (both proxy processes)"),
                "CPU-µs",
                s.cpu_us.clone(),
            ));
        }
        out.push(Figure::info(
            &format!("ingress.throughput.{name}"),
            &format!("ingress {name} download, 1 connection"),
            "MB/s",
            s.mbps.clone(),
        ));
    }
    let by = |n: &str| names.iter().position(|x| *x == n).and_then(|i| samples.get(i));
    let per_run = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x / y).collect::<Vec<_>>();
    for (a, b, target) in [
        ("meshproxy", "rathole_noise", Some(TARGET_OVER_RATHOLE)),
        ("meshproxy", "rathole", None),
        ("meshproxy", "direct", Some(TARGET_OVER_DIRECT)),
        ("rathole", "direct", None),
    ] {
        let (Some(sa), Some(sb)) = (by(a), by(b)) else { continue };
        let rps = Figure::info(
            &format!("ingress.ratio.{a}_over_{b}.rps"),
            &format!("ingress ratio {a} / {b}, req/s"),
            "x",
            per_run(&sa.rps, &sb.rps),
        );
        out.push(match target {
            Some(t) => rps.with_target(Bound::AtLeast, t),
            None => rps,
        });
        out.push(Figure::info(
            &format!("ingress.ratio.{a}_over_{b}.throughput"),
            &format!("ingress ratio {a} / {b}, download"),
            "x",
            per_run(&sa.mbps, &sb.mbps),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_are_per_run_and_carry_the_issue_targets() {
        let s = |rps: [f64; 2], mbps: [f64; 2]| Samples {
            rps: rps.to_vec(),
            p50: vec![0.1, 0.2],
            p99: vec![1.0, 2.0],
            cpu_us: vec![],
            mbps: mbps.to_vec(),
        };
        let names = ["direct", "meshproxy", "rathole", "rathole_noise"];
        let samples = [
            s([100.0, 200.0], [1000.0, 1000.0]),
            s([50.0, 180.0], [500.0, 250.0]),
            s([50.0, 90.0], [500.0, 500.0]),
            s([25.0, 90.0], [250.0, 250.0]),
        ];
        let plan = Plan::of(&super::super::BenchArgs::quick());
        let f = figures(&names, &samples, &plan);
        let get = |k: &str| {
            f.iter().find(|f| f.key == k).unwrap_or_else(|| panic!("no {k} in {f:?}")).clone()
        };
        // Run 1: 0.5, run 2: 0.9 → median 0.7, below the 0.8 target.
        let over_direct = get("ingress.ratio.meshproxy_over_direct.rps");
        assert_eq!(over_direct.samples, vec![0.5, 0.9]);
        assert_eq!(over_direct.pass(), Some(false));
        // 2.0 and 2.0 over rathole with Noise: passes.
        let over_noise = get("ingress.ratio.meshproxy_over_rathole_noise.rps");
        assert_eq!(over_noise.samples, vec![2.0, 2.0]);
        assert_eq!(over_noise.pass(), Some(true));
        assert_eq!(get("ingress.ratio.meshproxy_over_rathole.rps").pass(), None);
        assert_eq!(get("ingress.ratio.meshproxy_over_direct.throughput").samples, vec![0.5, 0.25]);
        assert_eq!(get("ingress.latency.meshproxy.p99").value, 1.5);
        // Without rathole, no rathole ratios (and nothing fails for it).
        let f = figures(&names[..2], &samples[..2], &plan);
        assert!(f.iter().all(|f| !f.key.contains("rathole")));
        assert!(f.iter().any(|f| f.key == "ingress.ratio.meshproxy_over_direct.rps"));
    }
}
