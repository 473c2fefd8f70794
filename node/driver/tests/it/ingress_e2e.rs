//! Public HTTP through the whole chain, all real: curl → gateway → mesh →
//! agent → origin, each node a `meshproxy run` child process on 127.0.0.1.
//! Routing by Host and path, header hygiene as the origin sees it, an
//! upgraded connection echoing through the agent, load balancing across two
//! agents, and an agent killed mid-download: the client sees an error (never
//! a clean short body) and new requests go to the other agent.
// Helpers outside #[test] fns panic on purpose too: a failure there is a failed test.
#![allow(clippy::unwrap_used)]
// Test harness code outside the core: a wall-clock deadline is what it needs.
#![allow(clippy::disallowed_methods)]

use crate::common::e2e::{free_port, identity, serial, Proc, Scratch};
use crate::gateway_forward::{origin_named, read_head, BIG};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const GW: &str = "t-gw-token-0123456789ab";
const AG1: &str = "t-ag1-token-0123456789a";
const AG2: &str = "t-ag2-token-0123456789a";

fn hub_toml() -> String {
    format!(
        "listen = [\"/ip4/127.0.0.1/tcp/0\"]\n[hub]\nkeys = [\
         {{ id = \"gw\", token = \"{GW}\", roles = [\"gateway\"] }}, \
         {{ id = \"ag1\", token = \"{AG1}\", roles = [\"agent\"] }}, \
         {{ id = \"ag2\", token = \"{AG2}\", roles = [\"agent\"] }}]\n"
    )
}

fn hubs(hub: &Proc) -> String {
    let (addr, peer) = hub.p2p[0].rsplit_once("/p2p/").unwrap();
    format!("[[hubs]]\npeer = \"{peer}\"\naddrs = [\"{addr}\"]\n")
}

fn gateway_toml(hub: &Proc, port: u16, metrics: u16) -> String {
    format!(
        r#"metrics = "127.0.0.1:{metrics}"
{}
[gateway]
credential = {{ id = "gw", token = "{GW}" }}
refresh_ms = 200
[[gateway.listeners]]
name = "public"
listen = "127.0.0.1:{port}"
[[gateway.routes]]
id = "app"
host = "app.example.com"
path = "/"
target = {{ agent = {{ service = "web", select = "site=home", balance = "round_robin" }} }}
"#,
        hubs(hub)
    )
}

fn agent_toml(hub: &Proc, key: &str, token: &str, origin: SocketAddr) -> String {
    format!(
        r#"listen = ["/ip4/127.0.0.1/tcp/0"]
{}
[agent]
credential = {{ id = "{key}", token = "{token}" }}
labels = {{ site = "home" }}
services = {{ web = "{origin}" }}
"#,
        hubs(hub)
    )
}

/// curl's exit code, the status and the body (`Host: app.example.com` unless
/// `extra` names one).
fn curl(port: u16, path: &str, extra: &[&str]) -> (Option<i32>, u16, String) {
    let own_host = extra.iter().any(|a| a.to_ascii_lowercase().starts_with("host:"));
    let host: &[&str] = if own_host { &[] } else { &["-H", "Host: app.example.com"] };
    let out = Command::new("curl")
        .args(["-s", "--max-time", "20", "-w", "\n%{http_code}"])
        .args(host)
        .args(extra)
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl is installed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (out.status.code(), code.trim().parse().unwrap_or(0), body.to_owned())
}

/// Polls `GET /who` until an agent answers; its name.
async fn until_served(port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, status, body) = curl(port, "/who", &[]);
        if status == 200 {
            return body;
        }
        assert!(Instant::now() < deadline, "never served through an agent (last: {status} {body})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn requests_go_gateway_mesh_agent_origin_with_hygiene_and_upgrades() {
    serial(Duration::from_secs(120), async {
        let dir = Scratch::new("ingress-e2e");
        let (origin, _paths) = origin_named("home").await;
        let hub = Proc::spawn("hub", &dir, &identity(71), &hub_toml()).await;
        let port = free_port();
        let metrics = free_port();
        let _gw =
            Proc::spawn("gateway", &dir, &identity(72), &gateway_toml(&hub, port, metrics)).await;
        let _agent =
            Proc::spawn("agent", &dir, &identity(73), &agent_toml(&hub, "ag1", AG1, origin)).await;
        assert_eq!(until_served(port).await, "home");
        // Another host is not routed to the agent.
        let (_, status, _) = curl(port, "/who", &["-H", "Host: other.example.com"]);
        assert_eq!(status, 404);
        // What the origin saw.
        let (code, status, seen) = curl(
            port,
            "/echo?x=1",
            &[
                "-H",
                "X-Forwarded-For: 6.6.6.6",
                "-H",
                "Connection: X-Drop",
                "-H",
                "X-Drop: 1",
                "-H",
                "Proxy-Authorization: Basic eA==",
            ],
        );
        assert_eq!((code, status), (Some(0), 200), "{seen}");
        let seen = seen.to_ascii_lowercase();
        assert!(seen.starts_with("get /echo?x=1 http/1.1\r\n"), "{seen}");
        for line in [
            "host: app.example.com",
            "x-forwarded-for: 127.0.0.1",
            "x-forwarded-proto: http",
            &format!("x-forwarded-port: {port}"),
            "x-forwarded-host: app.example.com",
        ] {
            assert!(seen.contains(&format!("{line}\r\n")), "{line:?} missing in {seen}");
        }
        for gone in ["6.6.6.6", "x-drop", "proxy-authorization"] {
            assert!(!seen.contains(gone), "{gone:?} reached the origin: {seen}");
        }
        // A 4 MiB download arrives whole.
        let file = dir.path("big");
        let (code, status, _) = curl(port, "/big", &["-o", file.to_str().unwrap()]);
        assert_eq!((code, status), (Some(0), 200));
        let mut f = tokio::fs::File::open(&file).await.unwrap();
        let got = crate::common::e2e::read_checked(&mut f, 7, None).await;
        assert_eq!((got.bytes, got.mismatch), (BIG, None));
        // An upgraded connection echoes through the agent and ends cleanly.
        let mut ws = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        ws.write_all(b"GET /ws HTTP/1.1\r\nHost: app.example.com\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
            .await
            .unwrap();
        let head = read_head(&mut ws).await.unwrap().to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 101"), "{head}");
        ws.write_all(b"hello over the mesh").await.unwrap();
        let mut echo = [0u8; 19];
        ws.read_exact(&mut echo).await.unwrap();
        assert_eq!(&echo, b"hello over the mesh");
        ws.shutdown().await.unwrap();
        let mut rest = Vec::new();
        assert_eq!(ws.read_to_end(&mut rest).await.unwrap(), 0, "a clean end comes back");
        // The gateway counted it all: requests forwarded, the download's bytes, the agent.
        let text = scrape(metrics).await;
        let value = |series: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        assert!(value("meshproxy_ingress_requests_total{outcome=\"forwarded\"}") >= 4.0, "{text}");
        assert_eq!(value("meshproxy_ingress_requests_total{outcome=\"no_route\"}"), 1.0, "{text}");
        assert!(value("meshproxy_ingress_bytes_total{direction=\"down\"}") >= BIG as f64, "{text}");
        assert_eq!(value("meshproxy_ingress_agents_known"), 1.0, "{text}");
        assert!(value("meshproxy_ingress_forwards_ended_total{end=\"complete\"}") >= 3.0, "{text}");
    });
}

/// One scrape of the metrics endpoint on `port`.
async fn scrape(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    text
}

#[test]
fn two_agents_share_the_load_and_a_killed_one_fails_its_download_and_gets_no_more() {
    serial(Duration::from_secs(120), async {
        let dir = Scratch::new("ingress-lb");
        let (origin_a, mut paths_a) = origin_named("a").await;
        let (origin_b, mut paths_b) = origin_named("b").await;
        let hub = Proc::spawn("hub", &dir, &identity(74), &hub_toml()).await;
        let port = free_port();
        let _gw =
            Proc::spawn("gateway", &dir, &identity(75), &gateway_toml(&hub, port, free_port()))
                .await;
        let mut agent_a =
            Proc::spawn("agent-a", &dir, &identity(76), &agent_toml(&hub, "ag1", AG1, origin_a))
                .await;
        let mut agent_b =
            Proc::spawn("agent-b", &dir, &identity(77), &agent_toml(&hub, "ag2", AG2, origin_b))
                .await;
        until_served(port).await;
        // Round robin: both agents serve, once the gateway knows both.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = BTreeSet::new();
        while seen.len() < 2 {
            let (_, status, body) = curl(port, "/who", &[]);
            if status == 200 {
                seen.insert(body);
            }
            assert!(Instant::now() < deadline, "only {seen:?} served");
        }
        // A slow download; the agent carrying it is killed halfway.
        while paths_a.try_recv().is_ok() || paths_b.try_recv().is_ok() {}
        let download = Command::new("curl")
            .args(["-s", "--max-time", "30", "-o", "/dev/null", "-w", "%{size_download}"])
            .args(["-H", "Host: app.example.com", &format!("http://127.0.0.1:{port}/slow")])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let which = tokio::select! {
            p = paths_a.recv() => { assert_eq!(p.as_deref(), Some("/slow")); "a" }
            p = paths_b.recv() => { assert_eq!(p.as_deref(), Some("/slow")); "b" }
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        let survivor = if which == "a" {
            agent_a.kill();
            "b"
        } else {
            agent_b.kill();
            "a"
        };
        let out = tokio::task::spawn_blocking(move || download.wait_with_output().unwrap())
            .await
            .unwrap();
        let got: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0);
        assert!(
            matches!(out.status.code(), Some(18 | 56)),
            "curl exit {:?} after {got} of {BIG} bytes: a cut download must look cut",
            out.status.code()
        );
        assert!(got < BIG, "{got}");
        // New requests go to the other agent (a few may fail while the gateway learns it).
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut in_a_row = 0;
        while in_a_row < 10 {
            let (_, status, body) = curl(port, "/who", &[]);
            if status == 200 {
                assert_eq!(body, survivor, "a request reached the killed agent's side");
                in_a_row += 1;
            } else {
                in_a_row = 0;
            }
            assert!(Instant::now() < deadline, "the survivor does not serve (last {status})");
        }
    });
}

/// A hub may also be the gateway: it lists the agents of its own directory
/// and signs its own gateway ticket, with no link to itself.
#[test]
fn a_hub_that_is_also_the_gateway_serves_its_own_agents() {
    serial(Duration::from_secs(90), async {
        let dir = Scratch::new("ingress-hub-gateway");
        let (origin, _paths) = origin_named("home").await;
        let port = free_port();
        let config = format!(
            r#"{}
[gateway]
credential = {{ id = "gw", token = "{GW}" }}
refresh_ms = 200
[[gateway.listeners]]
name = "public"
listen = "127.0.0.1:{port}"
[[gateway.routes]]
id = "app"
host = "app.example.com"
path = "/"
target = {{ agent = {{ service = "web", select = "site=home" }} }}
"#,
            hub_toml()
        );
        let hub = Proc::spawn("hub-gateway", &dir, &identity(81), &config).await;
        let _agent =
            Proc::spawn("agent", &dir, &identity(82), &agent_toml(&hub, "ag1", AG1, origin)).await;
        assert_eq!(until_served(port).await, "home");
        let (_, status, _) = curl(port, "/who", &["-H", "Host: other.example.com"]);
        assert_eq!(status, 404);
    });
}
