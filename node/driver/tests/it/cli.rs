//! The `meshproxy` binary's subcommands.
// Helpers outside #[test] fns panic on purpose too: a failure there is a failed test.
#![allow(clippy::unwrap_used)]
// Test harness code outside the core: a wall-clock deadline is what it needs.
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader, Lines, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn meshproxy(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshproxy")).args(args).output().unwrap()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("meshproxy-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn keygen_then_id_print_the_same_peer_id_and_keygen_never_overwrites() {
    let dir = temp_dir("keygen");
    let key = dir.join("node.key");
    let key = key.to_str().unwrap();
    let made = meshproxy(&["keygen", "--out", key]);
    assert!(made.status.success(), "{}", text(&made.stderr));
    let peer = text(&made.stdout).trim().to_string();
    assert!(peer.starts_with("12D3KooW"), "{peer}");
    let shown = meshproxy(&["id", "--identity", key]);
    assert!(shown.status.success());
    assert_eq!(text(&shown.stdout).trim(), peer);
    let again = meshproxy(&["keygen", "--out", key]);
    assert!(!again.status.success());
    assert!(text(&again.stderr).contains("already exists"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_validates_and_unknown_keys_are_named() {
    let dir = temp_dir("check");
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        format!(
            "identity = \"{}\"\n[client]\ncredential = {{ id = \"c\", token = \"{ALICE_TOKEN}\" }}\n\
             [[client.listeners]]\nbind = \"0.0.0.0:1080\"\n\
             [[hubs]]\npeer = \"12D3KooWBhbrxj5U4PNaMF1ZLsVPUBMBYQELFnTzVkGEjcLdKjBv\"\naddrs = [\"/ip4/127.0.0.1/tcp/4001\"]\n",
            dir.join("k.key").display()
        ),
    )
    .unwrap();
    let ok = meshproxy(&["check", "--config", good.to_str().unwrap()]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    let out = text(&ok.stdout);
    assert!(out.contains("roles: client"), "{out}");
    assert!(out.contains("without authentication"), "{out}");
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[client]\ncredentials = 1\n").unwrap();
    let err = meshproxy(&["check", "--config", bad.to_str().unwrap()]);
    assert!(!err.status.success());
    assert!(text(&err.stderr).contains("credentials"), "{}", text(&err.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_role_command_names_the_flag_and_key_it_is_missing() {
    for (role, needle) in [
        ("hub", "--key"),
        ("exit", "--credential"),
        ("client", "--credential"),
        ("gateway", "--credential"),
    ] {
        let out = meshproxy(&[role]);
        assert_eq!(out.status.code(), Some(1), "{role}");
        let err = text(&out.stderr);
        assert!(err.contains(needle) && err.contains(&format!("{role}.")), "{role}: {err}");
    }
    let dir = temp_dir("role");
    let hub_only = dir.join("hub.toml");
    std::fs::write(
        &hub_only,
        format!("[hub]\nkeys = [{{ id = \"a\", token = \"{ALICE_TOKEN}\" }}]\n"),
    )
    .unwrap();
    let out = meshproxy(&["client", "--config", hub_only.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("a client needs a credential"), "{}", text(&out.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_thread_count_is_refused_before_anything_is_written() {
    let dir = temp_dir("threads");
    let key = dir.join("hub.key");
    let key = key.to_str().unwrap();
    for bad in ["0", "1025"] {
        let key_flag = format!("a={ALICE_TOKEN}");
        let out = meshproxy(&["hub", "--identity", key, "--key", &key_flag, "--threads", bad]);
        assert_eq!(out.status.code(), Some(1), "--threads {bad}");
        let err = text(&out.stderr);
        assert!(err.contains(&format!("threads = {bad}: must be 1 to 1024")), "{err}");
        assert!(!dir.join("hub.key").exists(), "--threads {bad} created the identity file");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A `meshproxy` process that is killed if the test ends early.
struct Proc {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Proc {
    fn spawn(args: &[&str]) -> Proc {
        Proc::spawn_with(args, Stdio::inherit())
    }

    /// Like [`spawn`](Self::spawn), its log (stderr) going to `stderr`.
    fn spawn_with(args: &[&str], stderr: impl Into<Stdio>) -> Proc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_meshproxy"))
            .args(args)
            .arg("--log=warn")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Proc { child, lines }
    }

    /// The rest of the first stdout line starting with `prefix` (the process
    /// prints its addresses once ready; a dead process ends the search).
    fn line_after(&mut self, prefix: &str) -> String {
        for line in self.lines.by_ref() {
            let line = line.unwrap();
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.to_owned();
            }
        }
        panic!("the process ended without printing `{prefix}`");
    }

    /// SIGTERM, then the exit status (within a deadline).
    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "no exit within 20 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `body` with a deadline on a Tokio runtime (the SOCKS5 helper is async).
fn within<F: std::future::Future>(secs: u64, body: F) -> F::Output {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(secs), body).await.unwrap() })
}

/// Fetches the demo page through `proxy`, retrying while exits register.
fn fetch_eventually(proxy: SocketAddr, origin: SocketAddr) -> String {
    within(30, async {
        loop {
            match meshproxy::ops::demo::fetch_page(proxy, origin).await {
                Ok(page) => return page,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
}

#[test]
fn demo_fetches_prints_working_curl_lines_for_the_proxy_and_the_gateway_and_stops_on_sigterm() {
    let mut demo = Proc::spawn(&["demo"]);
    let curl = demo.line_after("curl --socks5-hostname ");
    // Exactly `curl --socks5-hostname 127.0.0.1:PORT http://127.0.0.1:PORT/`.
    let (proxy, url) = curl.split_once(' ').unwrap();
    let origin = url.strip_prefix("http://").and_then(|u| u.strip_suffix('/')).unwrap();
    let proxy: SocketAddr = proxy.parse().unwrap();
    let origin: SocketAddr = origin.parse().unwrap();
    assert!(proxy.ip().is_loopback() && origin.ip().is_loopback());
    let page = fetch_eventually(proxy, origin);
    assert!(
        page.starts_with("HTTP/1.1 200 OK") && page.ends_with(meshproxy::ops::demo::PAGE),
        "{page}"
    );
    // The ingress line, run as a user pastes it: curl → gateway → mesh → agent → site.
    let ingress = format!("curl -H {}", demo.line_after("curl -H "));
    assert!(ingress.starts_with("curl -H 'Host: app.demo' http://127.0.0.1:"), "{ingress}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let site = loop {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("{ingress} -s --max-time 10 -w '\n%{{http_code}}'"))
            .output()
            .unwrap();
        let text = text(&out.stdout);
        if out.status.success() && text.ends_with("\n200") {
            break text;
        }
        assert!(Instant::now() < deadline, "`{ingress}` never served the site: {text}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(site, format!("{}\n200", meshproxy::ops::demo::SITE));
    assert_eq!(demo.terminate().code(), Some(0));
}

#[test]
fn hub_exit_and_client_processes_from_flags_carry_a_fetch() {
    let dir = temp_dir("flags-mesh");
    let key = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let (origin, page_server) = page_origin();
    let (hub_key, exit_key, client_key) = (key("hub.key"), key("exit.key"), key("client.key"));
    let mut hub = Proc::spawn(&[
        "hub",
        "--identity",
        &hub_key,
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--key",
        &format!("exit-1={EXIT_TOKEN},roles=exit"),
        "--key",
        &format!("alice={ALICE_TOKEN}"),
    ]);
    let hub_addr = hub.line_after("p2p: ");
    let allow = origin.to_string();
    let mut exit = Proc::spawn(&[
        "exit",
        "--identity",
        &exit_key,
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--hub",
        &hub_addr,
        "--credential",
        &format!("exit-1={EXIT_TOKEN}"),
        "--allow",
        &allow,
    ]);
    exit.line_after("p2p: ");
    let mut client = Proc::spawn(&[
        "client",
        "--identity",
        &client_key,
        "--hub",
        &hub_addr,
        "--credential",
        &format!("alice={ALICE_TOKEN}"),
        "--listener",
        "127.0.0.1:0",
    ]);
    let proxy: SocketAddr = client.line_after("listener: ").parse().unwrap();
    let page = fetch_eventually(proxy, origin);
    assert!(page.ends_with(PAGE_BODY), "{page}");
    for p in [client, exit, hub] {
        assert_eq!(p.terminate().code(), Some(0), "graceful stop exits 0");
    }
    page_server.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

const PAGE_BODY: &str = "hello through processes\n";
/// Test tokens (a real one comes from `meshproxy token new`).
const EXIT_TOKEN: &str = "exit-token-0123456789abcdef";
const ALICE_TOKEN: &str = "alice-token-0123456789abcdef";

/// One `GET /metrics` from a node's endpoint.
fn scrape(addr: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

/// The value of `series` in a scrape (0 when absent).
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Polls `addr`'s metrics (bounded) until `series` reaches `at_least`.
fn until_metric(addr: &str, series: &str, at_least: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = scrape(addr);
        if metric(&text, series) >= at_least {
            return text;
        }
        assert!(Instant::now() < deadline, "{series} stayed below {at_least}:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A SOCKS5 CONNECT to `target` through `proxy`: the reply code.
fn socks_reply(proxy: SocketAddr, target: SocketAddr) -> u8 {
    let mut s = std::net::TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(&[5, 1, 0]).unwrap();
    let mut method = [0u8; 2];
    s.read_exact(&mut method).unwrap();
    assert_eq!(method, [5, 0]);
    let std::net::IpAddr::V4(ip) = target.ip() else { panic!("an IPv4 target") };
    let mut req = vec![5, 1, 0, 1];
    req.extend_from_slice(&ip.octets());
    req.extend_from_slice(&target.port().to_be_bytes());
    s.write_all(&req).unwrap();
    let mut reply = [0u8; 2];
    s.read_exact(&mut reply).unwrap();
    reply[1]
}

#[test]
fn a_client_key_cannot_register_an_exit() {
    let dir = temp_dir("roles");
    let key = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let mut hub = Proc::spawn(&[
        "hub",
        "--identity",
        &key("hub.key"),
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--metrics",
        "127.0.0.1:0",
        "--key",
        &format!("exit-1={EXIT_TOKEN},roles=exit"),
        "--key",
        &format!("alice={ALICE_TOKEN}"),
    ]);
    let hub_addr = hub.line_after("p2p: ");
    let hub_metrics = hub.line_after("metrics: http://").trim_end_matches("/metrics").to_owned();
    // An exit presenting alice's (client-only) key.
    let exit_log = dir.join("exit.log");
    let mut exit = Proc::spawn_with(
        &[
            "exit",
            "--identity",
            &key("exit.key"),
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--metrics",
            "127.0.0.1:0",
            "--hub",
            &hub_addr,
            "--credential",
            &format!("alice={ALICE_TOKEN}"),
            "--allow",
            "127.0.0.1:9",
        ],
        std::fs::File::create(&exit_log).unwrap(),
    );
    exit.line_after("p2p: ");
    let exit_metrics = exit.line_after("metrics: http://").trim_end_matches("/metrics").to_owned();
    // The hub refuses it, and goes on refusing as the exit retries on its backoff.
    let denied = "meshproxy_admission_denials_total{reason=\"role_not_allowed\"}";
    let text = until_metric(&hub_metrics, denied, 2.0);
    assert_eq!(metric(&text, "meshproxy_directory_exits"), 0.0, "{text}");
    assert_eq!(metric(&text, "meshproxy_directory_registrations_total"), 0.0, "{text}");
    until_metric(&exit_metrics, "meshproxy_hub_refusals_total", 2.0);
    let log = std::fs::read_to_string(&exit_log).unwrap();
    assert!(
        log.contains("the hub refused admission: this node's key does not admit its role here"),
        "{log}"
    );
    // A client finds no exit: its app gets a SOCKS error (0x03, no exit to carry it).
    let mut client = Proc::spawn(&[
        "client",
        "--identity",
        &key("client.key"),
        "--hub",
        &hub_addr,
        "--credential",
        &format!("alice={ALICE_TOKEN}"),
        "--listener",
        "127.0.0.1:0",
    ]);
    let proxy: SocketAddr = client.line_after("listener: ").parse().unwrap();
    assert_eq!(socks_reply(proxy, "127.0.0.1:9".parse().unwrap()), 0x03);
    let text = scrape(&hub_metrics);
    assert_eq!(metric(&text, "meshproxy_directory_exits"), 0.0, "{text}");
    for p in [client, exit, hub] {
        assert_eq!(p.terminate().code(), Some(0), "graceful stop exits 0");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_agent_process_from_flags_is_listed_at_a_hub_process_as_an_agent() {
    let dir = temp_dir("agent");
    let key = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let mut hub = Proc::spawn(&[
        "hub",
        "--identity",
        &key("hub.key"),
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--metrics",
        "127.0.0.1:0",
        "--key",
        &format!("agent-1={EXIT_TOKEN},roles=agent"),
    ]);
    let hub_addr = hub.line_after("p2p: ");
    let hub_metrics = hub.line_after("metrics: http://").trim_end_matches("/metrics").to_owned();
    let mut agent = Proc::spawn(&[
        "agent",
        "--identity",
        &key("agent.key"),
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--metrics",
        "127.0.0.1:0",
        "--hub",
        &hub_addr,
        "--credential",
        &format!("agent-1={EXIT_TOKEN}"),
        "--service",
        "web=127.0.0.1:8080",
        "--label",
        "site=home",
    ]);
    agent.line_after("p2p: ");
    let agent_metrics =
        agent.line_after("metrics: http://").trim_end_matches("/metrics").to_owned();
    let text = until_metric(&hub_metrics, "meshproxy_directory_agents", 1.0);
    assert_eq!(metric(&text, "meshproxy_directory_exits"), 0.0, "an agent is not an exit: {text}");
    let text = until_metric(&agent_metrics, "meshproxy_hubs_registered", 1.0);
    let ok = "meshproxy_agent_streams_total{outcome=\"ok\"} 0\n";
    assert!(text.contains(ok), "every outcome is there from the start: {text}");
    for p in [agent, hub] {
        assert_eq!(p.terminate().code(), Some(0), "graceful stop exits 0");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn token_new_prints_a_token_the_examples_and_a_hub_accept() {
    let out = meshproxy(&["token", "new", "--id", "exit-9", "--roles", "exit"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    let field = |name: &str| {
        printed.lines().find_map(|l| l.strip_prefix(name)).map(str::trim).unwrap().to_owned()
    };
    let (token, verifier) = (field("token:"), field("verifier:"));
    assert!(token.len() >= 43 && verifier.len() == 64, "{printed}");
    assert!(printed.contains(&format!("--key-verifier exit-9={verifier},roles=exit")), "{printed}");
    let again = text(&meshproxy(&["token", "new"]).stdout);
    assert!(!again.contains(&token), "two tokens alike");
    let bad = meshproxy(&["token", "new", "--roles", "root"]);
    assert!(!bad.status.success() && text(&bad.stderr).contains("`root` is not a role"));
    // The shipped example configs pass `check` (with a real hub peer id in place).
    let dir = temp_dir("examples");
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    for name in ["hub.toml", "exit.toml", "client.toml", "agent.toml", "gateway.toml"] {
        let body = std::fs::read_to_string(examples.join(name))
            .unwrap()
            .replace("HUB_PEER_ID", "12D3KooWBhbrxj5U4PNaMF1ZLsVPUBMBYQELFnTzVkGEjcLdKjBv");
        let path = dir.join(name);
        std::fs::write(&path, body).unwrap();
        let out = meshproxy(&["check", "--config", path.to_str().unwrap()]);
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A one-shot HTTP origin on 127.0.0.1 port 0 (std only, so it needs no runtime).
fn page_origin() -> (SocketAddr, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 512];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "request ended early");
            head.extend_from_slice(&buf[..n]);
        }
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{PAGE_BODY}",
            PAGE_BODY.len()
        );
        s.write_all(answer.as_bytes()).unwrap();
    });
    (addr, server)
}
