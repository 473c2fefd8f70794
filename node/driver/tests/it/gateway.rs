//! The gateway's public side with real processes and a real client (curl):
//! a hub and a gateway as `meshproxy run` children on 127.0.0.1, requests by
//! Host header over HTTP/1.1 and h2, the router's answers (static, redirect,
//! 404, 400), the HTTP limits (431, the header deadline, connections per
//! source), and a route to agents when none is there (503).
// Helpers outside #[test] fns panic on purpose too: a failure there is a failed test.
#![allow(clippy::unwrap_used)]
// Test harness code outside the core: a wall-clock deadline is what it needs.
#![allow(clippy::disallowed_methods)]

use crate::common::e2e::{free_port, identity, serial, Proc, Scratch};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

const GW_TOKEN: &str = "t-gw-token-0123456789ab";

/// A hub that admits the gateway's key (role `gateway`).
fn hub_toml() -> String {
    format!(
        "listen = [\"/ip4/127.0.0.1/tcp/0\"]\n[hub]\n\
         keys = [{{ id = \"gw\", token = \"{GW_TOKEN}\", roles = [\"gateway\"] }}]\n"
    )
}

/// A gateway on `port` using `hub`, with `extra` keys in `[gateway]` and
/// the routes of these tests.
fn gateway_toml(hub: &Proc, port: u16, metrics: u16, extra: &str) -> String {
    let (addr, peer) = hub.p2p[0].rsplit_once("/p2p/").unwrap();
    format!(
        r#"metrics = "127.0.0.1:{metrics}"
[[hubs]]
peer = "{peer}"
addrs = ["{addr}"]
[timeouts]
setup_budget_ms = 3000
[gateway]
credential = {{ id = "gw", token = "{GW_TOKEN}" }}
{extra}
[[gateway.listeners]]
name = "public"
listen = "127.0.0.1:{port}"
[[gateway.routes]]
id = "hello"
host = "static.example.com"
target = {{ static = {{ status = 200, body = "hello from the gateway\n" }} }}
[[gateway.routes]]
id = "moved"
host = "old.example.com"
target = {{ redirect = {{ status = 301, to = "https://new.example.com/", keep_path = true, keep_query = true }} }}
[[gateway.routes]]
id = "app"
host = "app.example.com"
path = "/"
target = {{ agent = {{ service = "web", select = "site=home" }} }}
"#
    )
}

/// What curl got: its exit code, the status, the headers (names lowercased)
/// and the body.
#[derive(Debug)]
struct Got {
    exit: Option<i32>,
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// `curl -s -i` with `args` (bounded by `--max-time 20`).
fn curl(args: &[&str]) -> Got {
    let out = Command::new("curl")
        .args(["-s", "-i", "--max-time", "20"])
        .args(args)
        .output()
        .expect("curl is installed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Got { exit: out.status.code(), status, headers, body: body.to_owned() }
}

fn scrape(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// A hub and a gateway (listening on the returned port, metrics on the
/// second), as child processes.
async fn start(dir: &Scratch, extra: &str) -> (Proc, Proc, u16, u16) {
    let hub = Proc::spawn("hub", dir, &identity(61), &hub_toml()).await;
    let (port, metrics) = (free_port(), free_port());
    let toml = gateway_toml(&hub, port, metrics, extra);
    let gateway = Proc::spawn("gateway", dir, &identity(62), &toml).await;
    (hub, gateway, port, metrics)
}

#[test]
fn the_router_answers_static_redirect_404_and_400_over_http1_and_h2() {
    serial(Duration::from_secs(60), async {
        let dir = Scratch::new("gw-router");
        let (_hub, _gateway, port, metrics) = start(&dir, "").await;
        let base = format!("http://127.0.0.1:{port}");
        let got = curl(&["-H", "Host: static.example.com", &format!("{base}/")]);
        assert_eq!((got.status, got.body.as_str()), (200, "hello from the gateway\n"), "{got:?}");
        assert_eq!(got.header("content-type"), Some("text/plain; charset=utf-8"));
        assert_eq!(got.exit, Some(0), "a whole response");
        // h2 with prior knowledge: the host comes from :authority.
        let h2 = curl(&[
            "--http2-prior-knowledge",
            "-H",
            "Host: static.example.com",
            &format!("{base}/"),
        ]);
        assert!(h2.headers.is_empty() || h2.status == 200, "{h2:?}");
        assert_eq!((h2.status, h2.body.as_str()), (200, "hello from the gateway\n"), "{h2:?}");
        let moved = curl(&["-H", "Host: OLD.example.com.", &format!("{base}/a/b?x=1")]);
        assert_eq!(moved.status, 301, "{moved:?}");
        assert_eq!(moved.header("location"), Some("https://new.example.com/a/b?x=1"));
        let unknown = curl(&["-H", "Host: nope.example.com", &format!("{base}/")]);
        assert_eq!(unknown.status, 404, "{unknown:?}");
        let traversal = curl(&[
            "--path-as-is",
            "-H",
            "Host: static.example.com",
            &format!("{base}/a/%2e%2e/etc"),
        ]);
        assert_eq!(traversal.status, 400, "{traversal:?}");
        let text = scrape(metrics);
        let count = |outcome: &str| {
            metric(&text, &format!("meshproxy_ingress_requests_total{{outcome=\"{outcome}\"}}"))
        };
        assert_eq!(
            [count("static"), count("redirect"), count("no_route"), count("bad_request")],
            [2.0, 1.0, 1.0, 1.0],
            "{text}"
        );
        assert_eq!(count("forwarded"), 0.0, "every outcome is registered at zero: {text}");
        assert!(text.contains("meshproxy_ingress_request_duration_seconds_count 5"), "{text}");
    });
}

#[test]
fn a_huge_head_gets_431_and_a_client_that_never_finishes_its_head_is_cut_at_the_deadline() {
    serial(Duration::from_secs(60), async {
        let dir = Scratch::new("gw-limits");
        let extra = "header_read_timeout_ms = 1500\nmax_connections_per_ip = 2";
        let (_hub, _gateway, port, metrics) = start(&dir, extra).await;
        let base = format!("http://127.0.0.1:{port}/");
        let big = format!("X-Big: {}", "a".repeat(20_000));
        let got = curl(&["-H", "Host: static.example.com", "-H", &big, &base]);
        assert_eq!(got.status, 431, "{got:?}");
        // Slowloris: half a head, then nothing. Cut at the deadline, not before.
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut slow = TcpStream::connect(addr).unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nHost: static.example.com\r\nX-A: 1\r\n").unwrap();
        let sent = Instant::now();
        slow.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 256];
        let read = slow.read(&mut buf);
        let after = sent.elapsed();
        assert!(
            matches!(read, Ok(0))
                || read.as_ref().is_err_and(|e| e.kind() != std::io::ErrorKind::WouldBlock),
            "the connection is ended, not left open: {read:?}"
        );
        assert!(after >= Duration::from_millis(1400), "cut early: {after:?}");
        assert!(after < Duration::from_secs(5), "cut late: {after:?}");
        // Nothing at all, or half an h2 preface: cut at the same deadline.
        for first in [&b""[..], b"PRI * HTTP/2"] {
            let mut silent = TcpStream::connect(addr).unwrap();
            silent.write_all(first).unwrap();
            let sent = Instant::now();
            silent.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let read = silent.read(&mut buf);
            let after = sent.elapsed();
            assert!(
                matches!(read, Ok(0))
                    || read.as_ref().is_err_and(|e| e.kind() != std::io::ErrorKind::WouldBlock),
                "{first:?}: the connection is ended, not left open: {read:?}"
            );
            assert!(after >= Duration::from_millis(1400), "{first:?}: cut early: {after:?}");
            assert!(after < Duration::from_secs(5), "{first:?}: cut late: {after:?}");
        }
        // Two connections from one address are all it may hold: the third is turned away.
        let a = TcpStream::connect(addr).unwrap();
        let b = TcpStream::connect(addr).unwrap();
        let mut third = TcpStream::connect(addr).unwrap();
        third.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut answer = String::new();
        let _ = third.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
        drop((a, b));
        // Once they are gone, the address is served again (the count is released).
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let got = curl(&["-H", "Host: static.example.com", &base]);
            if got.status == 200 {
                break;
            }
            assert!(Instant::now() < deadline, "never served again: {got:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let text = scrape(metrics);
        let refused = "meshproxy_ingress_connections_refused_total{reason=\"per_ip_cap\"}";
        assert!(metric(&text, refused) >= 1.0, "{text}");
    });
}

#[test]
fn a_route_to_agents_without_any_answers_503_within_the_setup_budget() {
    serial(Duration::from_secs(60), async {
        let dir = Scratch::new("gw-noagent");
        let (_hub, _gateway, port, metrics) = start(&dir, "refresh_ms = 200").await;
        let asked = Instant::now();
        let got = curl(&["-H", "Host: app.example.com", &format!("http://127.0.0.1:{port}/x")]);
        assert_eq!(got.status, 503, "{got:?}");
        // The budget is 3 s; a gateway that knows no agent answers at once.
        assert!(asked.elapsed() < Duration::from_secs(4), "{:?}", asked.elapsed());
        let text = scrape(metrics);
        let no_agent = "meshproxy_ingress_requests_total{outcome=\"no_agent\"}";
        let busy = "meshproxy_ingress_requests_total{outcome=\"upstream_timeout\"}";
        assert_eq!(metric(&text, no_agent) + metric(&text, busy), 1.0, "{text}");
        assert_eq!(metric(&text, "meshproxy_ingress_agents_known"), 0.0, "{text}");
    });
}

#[test]
fn meshproxy_gateway_runs_from_flags_with_routes_given_as_specs() {
    serial(Duration::from_secs(60), async {
        let dir = Scratch::new("gw-flags");
        let hub = Proc::spawn("hub", &dir, &identity(63), &hub_toml()).await;
        let port = free_port();
        let key = dir.path("gw.key");
        let mut child = Command::new(env!("CARGO_BIN_EXE_meshproxy"))
            .args(["--log", "warn", "gateway", "--identity", key.to_str().unwrap()])
            .args(["--hub", &hub.p2p[0], "--credential", &format!("gw={GW_TOKEN}")])
            .args(["--listen-http", &format!("127.0.0.1:{port}")])
            .args(["--route", "host=static.example.com static=flags-work status=203"])
            .args(["--route", "path=/go redirect=/elsewhere status=302"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while !line.starts_with("gateway: ") {
            line.clear();
            let n = std::io::BufRead::read_line(&mut out, &mut line).unwrap();
            assert!(n > 0, "the gateway ended without printing its listener");
        }
        assert_eq!(line.trim(), format!("gateway: http://127.0.0.1:{port}/"));
        let base = format!("http://127.0.0.1:{port}");
        let got = curl(&["-H", "Host: static.example.com", &format!("{base}/")]);
        assert_eq!((got.status, got.body.as_str()), (203, "flags-work"), "{got:?}");
        let go = curl(&["-H", "Host: any.example.com", &format!("{base}/go/x")]);
        assert_eq!((go.status, go.header("location")), (302, Some("/elsewhere")), "{go:?}");
        let _ = child.kill();
        let _ = child.wait();
        // A bad spec is named with what is wrong.
        let out = Command::new(env!("CARGO_BIN_EXE_meshproxy"))
            .args(["gateway", "--hub", &hub.p2p[0], "--credential", &format!("gw={GW_TOKEN}")])
            .args(["--listen-http", "127.0.0.1:0", "--route", "host=a.example.com service=web"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("needs select="), "{err}");
    });
}
