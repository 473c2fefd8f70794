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
            "identity = \"{}\"\n[client]\ncredential = {{ id = \"c\", token = \"t\" }}\n\
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
    for (role, needle) in [("hub", "--key"), ("exit", "--credential"), ("client", "--credential")] {
        let out = meshproxy(&[role]);
        assert_eq!(out.status.code(), Some(1), "{role}");
        let err = text(&out.stderr);
        assert!(err.contains(needle) && err.contains(&format!("{role}.")), "{role}: {err}");
    }
    let dir = temp_dir("role");
    let hub_only = dir.join("hub.toml");
    std::fs::write(&hub_only, "[hub]\nkeys = [{ id = \"a\", token = \"t\" }]\n").unwrap();
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
        let out = meshproxy(&["hub", "--identity", key, "--key", "a=t", "--threads", bad]);
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
        let mut child = Command::new(env!("CARGO_BIN_EXE_meshproxy"))
            .args(args)
            .arg("--log=warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
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
            match meshproxy::demo::fetch_page(proxy, origin).await {
                Ok(page) => return page,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
}

#[test]
fn demo_fetches_prints_a_working_curl_line_and_stops_cleanly_on_sigterm() {
    let mut demo = Proc::spawn(&["demo"]);
    let curl = demo.line_after("curl --socks5-hostname ");
    // Exactly `curl --socks5-hostname 127.0.0.1:PORT http://127.0.0.1:PORT/`.
    let (proxy, url) = curl.split_once(' ').unwrap();
    let origin = url.strip_prefix("http://").and_then(|u| u.strip_suffix('/')).unwrap();
    let proxy: SocketAddr = proxy.parse().unwrap();
    let origin: SocketAddr = origin.parse().unwrap();
    assert!(proxy.ip().is_loopback() && origin.ip().is_loopback());
    let page = fetch_eventually(proxy, origin);
    assert!(page.starts_with("HTTP/1.1 200 OK") && page.ends_with(meshproxy::demo::PAGE), "{page}");
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
        "exit-1=e-token",
        "--key",
        "alice=c-token",
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
        "exit-1=e-token",
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
        "alice=c-token",
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
