//! The ingress figures' load generator: `wrk` (Debian's package, C, one
//! event loop per thread), installed with apt-get when missing, its
//! results read through a Lua `done` hook that prints exact counts and
//! percentiles instead of its rounded human summary.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The Lua hook: one line the harness parses (latencies in µs).
const SCRIPT: &str = r#"done = function(summary, latency, requests)
  io.write(string.format(
    "wrk-result requests=%d duration_us=%d bytes=%d p50_us=%.1f p99_us=%.1f " ..
    "status=%d connect=%d read=%d write=%d timeout=%d\n",
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50.0), latency:percentile(99.0),
    summary.errors.status, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.timeout))
end
"#;

/// `wrk` on PATH, or installs it (`apt-get install wrk`, after an
/// `apt-get update` if the first try fails); `Err` is the reason to print.
pub fn install() -> Result<PathBuf, String> {
    if let Some(path) = on_path("wrk") {
        return Ok(path);
    }
    let apt = |args: &[&str]| {
        println!("bench: apt-get {}", args.join(" "));
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map_err(|e| format!("cannot start apt-get: {e}"))
    };
    let install = ["install", "-y", "--no-install-recommends", "wrk"];
    if !apt(&install)?.success() {
        let _ = apt(&["update"])?;
        let status = apt(&install)?;
        if !status.success() {
            return Err(format!("apt-get install wrk failed ({status})"));
        }
    }
    on_path("wrk").ok_or_else(|| "apt-get installed no wrk on PATH".to_owned())
}

/// `name` in a directory of PATH.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// What one wrk run measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WrkResult {
    /// Responses completed.
    pub requests: u64,
    /// The run's length.
    pub duration: Duration,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th-percentile latency, ms.
    pub p99_ms: f64,
}

impl WrkResult {
    /// Requests per second.
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.duration.as_secs_f64().max(1e-9)
    }
}

/// How wrk loads a URL.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Open keep-alive connections.
    pub connections: usize,
    /// Generator threads.
    pub threads: usize,
    /// How long it runs.
    pub duration: Duration,
}

/// Runs wrk against `url` (the script goes to `dir`); every answer must be
/// 2xx/3xx and no socket may fail, else `Err` says what went wrong (a
/// proxy answering 503 fast must not pass for a fast proxy).
pub fn run(wrk: &Path, dir: &Path, url: &str, load: Load) -> Result<WrkResult, String> {
    let script = dir.join("wrk-result.lua");
    std::fs::write(&script, SCRIPT).map_err(|e| format!("{}: {e}", script.display()))?;
    let out = Command::new(wrk)
        .arg(format!("-t{}", load.threads.clamp(1, load.connections.max(1))))
        .arg(format!("-c{}", load.connections.max(1)))
        // wrk takes whole seconds (s, m, h; no ms).
        .arg(format!("-d{}s", load.duration.as_secs().max(1)))
        .args(["--timeout", "5s", "-s"])
        .arg(&script)
        .arg(url)
        .output()
        .map_err(|e| format!("cannot start {}: {e}", wrk.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(format!("wrk failed ({}): {stdout}{stderr}", out.status));
    }
    parse(&stdout)
}

/// Reads the `wrk-result` line of a run's output and checks it is clean.
pub fn parse(stdout: &str) -> Result<WrkResult, String> {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("wrk-result "))
        .ok_or_else(|| format!("no wrk-result line in: {stdout}"))?;
    let field = |name: &str| -> Result<f64, String> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| format!("wrk-result without a number for {name}: {line}"))
    };
    let errors: Vec<String> = ["status", "connect", "read", "write", "timeout"]
        .iter()
        .filter_map(|k| match field(k) {
            Ok(v) => (v != 0.0).then(|| format!("{k} {v}")),
            Err(e) => Some(e),
        })
        .collect();
    if !errors.is_empty() {
        return Err(format!("wrk saw errors ({}): {line}", errors.join(", ")));
    }
    let requests = field("requests")? as u64;
    if requests == 0 {
        return Err(format!("wrk completed no request: {line}"));
    }
    Ok(WrkResult {
        requests,
        duration: Duration::from_micros(field("duration_us")? as u64),
        p50_ms: field("p50_us")? / 1e3,
        p99_ms: field("p99_us")? / 1e3,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLEAN: &str = "Running 2s test @ http://127.0.0.1:1/\n  1 threads and 16 connections\n\
        wrk-result requests=20000 duration_us=2000000 bytes=1 p50_us=512.0 p99_us=2048.5 \
        status=0 connect=0 read=0 write=0 timeout=0\n";

    #[test]
    fn a_clean_run_gives_rate_and_latencies() {
        let r = parse(CLEAN).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.requests, 20_000);
        assert_eq!(r.duration, Duration::from_secs(2));
        assert!((r.rps() - 10_000.0).abs() < 1e-6);
        assert!((r.p50_ms - 0.512).abs() < 1e-9 && (r.p99_ms - 2.0485).abs() < 1e-9);
    }

    #[test]
    fn error_answers_socket_errors_and_garbage_are_refused() {
        let bad_status = CLEAN.replace("status=0", "status=7");
        let e = parse(&bad_status).err().unwrap_or_default();
        assert!(e.contains("status 7"), "{e}");
        let timeouts = CLEAN.replace("timeout=0", "timeout=3");
        assert!(parse(&timeouts).err().unwrap_or_default().contains("timeout 3"));
        assert!(parse("Running 2s test\n").is_err());
        assert!(parse(&CLEAN.replace("requests=20000", "requests=0")).is_err());
        assert!(parse(&CLEAN.replace("p99_us=2048.5", "p99_us=nan")).is_err());
        assert!(parse(&CLEAN.replace(" p50_us=512.0", "")).is_err());
    }
}
