//! A real NAT: Linux network namespaces, veth pairs, and a router namespace that
//! masquerades (nftables, or iptables if that is what the host has).
//!
//! ```text
//!   public 10.200.0.0/24 (a bridge in its own namespace)        private 192.168.77.0/24
//!   hub    10.200.0.2 :4001  + origin 10.200.0.2:8080
//!   client 10.200.0.3 :4001  (SOCKS5 on its own 127.0.0.1:1080)
//!   router 10.200.0.1 (wan) ── masquerade ── 192.168.77.1 (lan) ── exit 192.168.77.2 :4001
//! ```
//!
//! The hub, exit and client are the real `meshproxy` binary, started with `ip netns exec`.
//! The exit runs with `reachability = "auto"`: autonat (the hub answers probes) finds it
//! unreachable, it reserves at the hub's relay, and the client reaches it through a relay
//! circuit; a SOCKS5 fetch to the origin must get through, and the nodes' own `/metrics`
//! (scraped inside their namespaces) must show the reservation and the relayed connection.
//! Whether the relayed connection was then upgraded to a direct one (DCUtR, or the exit's
//! direct dial to the public client) is printed, not asserted: it depends on the NAT.
//!
//! Needs root (or CAP_NET_ADMIN + CAP_SYS_ADMIN), `ip` (iproute2) and `nft` or `iptables`;
//! without them the test prints why and passes without running. The origin and the SOCKS5
//! app are this test binary itself, re-run inside a namespace (the `nat_helper_*` tests,
//! ignored in a normal run so that they never show up as passing tests that did nothing).
#![allow(clippy::unwrap_used)]
// a panic in a test helper is a failed test
// The driver's tests run on real clocks: deadlines for real processes and namespaces.
#![allow(clippy::disallowed_methods)]

use meshproxy::ops::identity::Identity;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_meshproxy");
const ORIGIN_ENV: &str = "MESHPROXY_NAT_ORIGIN";
const FETCH_ENV: &str = "MESHPROXY_NAT_FETCH";

const HUB_IP: &str = "10.200.0.2";
const ORIGIN: &str = "10.200.0.2:8080";
const SOCKS: &str = "127.0.0.1:1080";
/// Where the exit and the client serve `/metrics`, each inside its own namespace.
const METRICS: &str = "127.0.0.1:9464";
/// The fetch, from start to echoed payload (autonat's first probe waits 5 s).
const FETCH_DEADLINE: Duration = Duration::from_secs(90);
/// How long to wait, after the fetch, for a direct upgrade to show in the logs.
const UPGRADE_WAIT: Duration = Duration::from_secs(30);
const PAYLOAD: usize = 64 * 1024;

/// Runs a command to completion (bounded), returning its stderr on failure.
fn run(args: &[&str]) -> Result<(), String> {
    run_with_input(args, None)
}

/// One `GET /metrics` from the endpoint at [`METRICS`] inside namespace `ns` (bash's
/// `/dev/tcp`: the test process cannot reach into the namespace itself).
fn scrape(ns: &str) -> String {
    let (ip, port) = METRICS.split_once(':').unwrap();
    let get = format!(
        "exec 3<>/dev/tcp/{ip}/{port} && printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3 && \
         timeout 10 cat <&3"
    );
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "timeout", "15", "bash", "-c", &get])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of one sample (`name{labels}`, exactly) in a scrape; 0 when absent.
fn sample(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

fn run_with_input(args: &[&str], input: Option<&str>) -> Result<(), String> {
    let (program, rest) = args.split_first().ok_or("empty command")?;
    let mut child = Command::new(program)
        .args(rest)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(text.as_bytes()).map_err(|e| e.to_string())?;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            if status.success() {
                return Ok(());
            }
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            return Err(format!("`{}` failed ({status}): {}", args.join(" "), err.trim()));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("`{}` timed out", args.join(" ")));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .is_some_and(|effective| effective == "0")
    })
}

/// The namespaces of one run; deleting a namespace also deletes its veth ends (and
/// their peers) and kills nothing else: the processes are [`Proc`]s.
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = run(&["ip", "netns", "del", ns]);
        }
    }
}

/// A child process, killed and reaped when dropped.
struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn start(
        name: &'static str,
        ns: &str,
        args: &[&str],
        env: &[(&str, &str)],
        dir: &Path,
    ) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).args(args).stdin(Stdio::null()).stdout(out).stderr(err);
        cmd.env("RUST_LOG", "info").env("NO_COLOR", "1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        Proc { name, child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails the test (with every log) if the process has exited.
    fn alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!("{} exited ({status}):\n{}", self.name, self.log())),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// A scratch directory, removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Creates the namespaces; `Err` says why they could not be (the test is then skipped).
fn create(ns: &Namespaces) -> Result<(), String> {
    for n in &ns.0 {
        run(&["ip", "netns", "add", n])?;
        run(&["ip", "-n", n, "link", "set", "lo", "up"])?;
    }
    Ok(())
}

/// Wires the namespaces up; an error here is a failure, not a reason to skip.
fn build(ns: &Namespaces, nat_tool: &str) -> Result<(), String> {
    let [public, router, hub, client, exit] = [0, 1, 2, 3, 4].map(|i| ns.0[i].as_str());
    run(&["ip", "-n", public, "link", "add", "br0", "type", "bridge"])?;
    run(&["ip", "-n", public, "link", "set", "br0", "up"])?;
    for (port, other, dev) in [("ph", hub, "eth0"), ("pc", client, "eth0"), ("pr", router, "wan")] {
        run(&[
            "ip", "-n", public, "link", "add", port, "type", "veth", "peer", "name", dev, "netns",
            other,
        ])?;
        run(&["ip", "-n", public, "link", "set", port, "master", "br0"])?;
        run(&["ip", "-n", public, "link", "set", port, "up"])?;
    }
    run(&[
        "ip", "-n", router, "link", "add", "lan", "type", "veth", "peer", "name", "eth0", "netns",
        exit,
    ])?;
    for (n, dev, addr) in [
        (router, "wan", "10.200.0.1/24"),
        (hub, "eth0", "10.200.0.2/24"),
        (client, "eth0", "10.200.0.3/24"),
        (router, "lan", "192.168.77.1/24"),
        (exit, "eth0", "192.168.77.2/24"),
    ] {
        run(&["ip", "-n", n, "addr", "add", addr, "dev", dev])?;
        run(&["ip", "-n", n, "link", "set", dev, "up"])?;
    }
    // Only the exit routes through the router: the public side has no route to the
    // private network, as on the internet.
    run(&["ip", "-n", exit, "route", "add", "default", "via", "192.168.77.1"])?;
    run(&["ip", "netns", "exec", router, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"])?;
    // Masquerade what leaves on the public side; drop what comes in unasked.
    if nat_tool == "nft" {
        let rules = "add table ip nat\n\
            add chain ip nat post { type nat hook postrouting priority 100 ; }\n\
            add rule ip nat post oifname \"wan\" masquerade\n\
            add table ip filter\n\
            add chain ip filter inbound { type filter hook forward priority 0 ; policy accept ; }\n\
            add rule ip filter inbound iifname \"wan\" oifname \"lan\" ct state new drop\n";
        run_with_input(&["ip", "netns", "exec", router, "nft", "-f", "-"], Some(rules))?;
    } else {
        run(&[
            "ip",
            "netns",
            "exec",
            router,
            "iptables",
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-o",
            "wan",
            "-j",
            "MASQUERADE",
        ])?;
        run(&[
            "ip",
            "netns",
            "exec",
            router,
            "iptables",
            "-A",
            "FORWARD",
            "-i",
            "wan",
            "-o",
            "lan",
            "-m",
            "conntrack",
            "--ctstate",
            "NEW",
            "-j",
            "DROP",
        ])?;
    }
    Ok(())
}

fn identity(dir: &Path, name: &str, secret: u8) -> (PathBuf, Identity) {
    let path = dir.join(format!("{name}.key"));
    let id = Identity::from_secret([secret; 32]);
    id.create(&path).unwrap();
    (path, id)
}

fn config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Says why the test cannot run here and passes — unless the environment says
/// it must run (`MESHPROXY_NAT_REQUIRED`, which `.ci/run` sets where it made
/// sure root, iproute2 and nft are present), where not running is a failure.
fn skip(why: &str) {
    assert!(
        std::env::var_os("MESHPROXY_NAT_REQUIRED").is_none(),
        "the real NAT test must run here (MESHPROXY_NAT_REQUIRED) but cannot: {why}"
    );
    println!("SKIPPED: {why}");
}

#[test]
fn socks5_through_an_exit_behind_a_real_nat() {
    if !is_root() {
        return skip(
            "network namespaces need root (CAP_NET_ADMIN); run as root to test a real NAT",
        );
    }
    if run(&["ip", "-V"]).is_err() {
        return skip("no `ip` command (iproute2)");
    }
    let nat_tool = if run(&["nft", "--version"]).is_ok() {
        "nft"
    } else if run(&["iptables", "--version"]).is_ok() {
        "iptables"
    } else {
        return skip("neither `nft` nor `iptables` to masquerade with (Debian package: nftables)");
    };
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tag = format!("mp{:x}{:x}", std::process::id() & 0xffff, stamp & 0xfff);
    let ns = Namespaces(
        ["pub", "rtr", "hub", "cli", "exit"].iter().map(|r| format!("{tag}-{r}")).collect(),
    );
    if let Err(e) = create(&ns) {
        return skip(&format!("could not create network namespaces: {e}"));
    }
    build(&ns, nat_tool).unwrap();
    let [_, _, hub_ns, client_ns, exit_ns] = [0, 1, 2, 3, 4].map(|i| ns.0[i].as_str());
    let dir = TempDir(std::env::temp_dir().join(format!("{tag}-nat")));
    std::fs::create_dir_all(&dir.0).unwrap();
    let d = dir.0.as_path();

    let (hub_key, hub_id) = identity(d, "hub", 41);
    let (exit_key, _) = identity(d, "exit", 42);
    let (client_key, _) = identity(d, "client", 43);
    let hub_addr = format!("/ip4/{HUB_IP}/tcp/4001");
    let hubs =
        format!("[[hubs]]\npeer = \"{}\"\naddrs = [\"{hub_addr}\"]\n", hub_id.peer_id_string());
    let hub_cfg = config(
        d,
        "hub",
        &format!(
            "identity = \"{}\"\nlisten = [\"{hub_addr}\"]\nautonat_private_ips = true\n\
             [hub]\nkeys = [{{ id = \"exit\", token = \"t-exit-token-0123456789\", roles = [\"exit\"], max_registrations = 4 }}, {{ id = \"client\", token = \"t-client-token-01234567\" }}]\n",
            hub_key.display()
        ),
    );
    let exit_cfg = config(
        d,
        "exit",
        &format!(
            "identity = \"{}\"\nlisten = [\"/ip4/0.0.0.0/tcp/4001\"]\nautonat_private_ips = true\n\
             reachability = \"auto\"\nmetrics = \"{METRICS}\"\n{hubs}\
             [exit]\ncredential = {{ id = \"exit\", token = \"t-exit-token-0123456789\" }}\nallow = [\"{ORIGIN}\"]\nrelay = \"auto\"\n",
            exit_key.display()
        ),
    );
    let client_cfg = config(
        d,
        "client",
        &format!(
            "identity = \"{}\"\nlisten = [\"/ip4/0.0.0.0/tcp/4001\"]\nautonat_private_ips = true\n\
             metrics = \"{METRICS}\"\n{hubs}\
             [client]\ncredential = {{ id = \"client\", token = \"t-client-token-01234567\" }}\nrefresh_ms = 500\n\
             [[client.listeners]]\nbind = \"{SOCKS}\"\nprotocol = \"socks5\"\n",
            client_key.display()
        ),
    );

    let me = std::env::current_exe().unwrap();
    let me = me.to_str().unwrap();
    let helper = |name| vec![me, "--exact", name, "--ignored", "--nocapture", "--test-threads=1"];
    let _origin = Proc::start(
        "origin",
        hub_ns,
        &helper("nat::nat_helper_origin"),
        &[(ORIGIN_ENV, ORIGIN)],
        d,
    );
    let mut hub =
        Proc::start("hub", hub_ns, &[BIN, "run", "--config", hub_cfg.to_str().unwrap()], &[], d);
    let mut exit =
        Proc::start("exit", exit_ns, &[BIN, "run", "--config", exit_cfg.to_str().unwrap()], &[], d);
    let mut client = Proc::start(
        "client",
        client_ns,
        &[BIN, "run", "--config", client_cfg.to_str().unwrap()],
        &[],
        d,
    );
    let target = format!("{SOCKS} {ORIGIN}");
    let mut fetch = Proc::start(
        "fetch",
        client_ns,
        &helper("nat::nat_helper_fetch"),
        &[(FETCH_ENV, &target)],
        d,
    );

    let logs = |procs: [&Proc; 4]| {
        procs
            .iter()
            .map(|p| format!("--- {} ---\n{}", p.name, p.log()))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let deadline = Instant::now() + FETCH_DEADLINE + Duration::from_secs(10);
    let fetched = loop {
        if let Some(status) = fetch.child.try_wait().unwrap() {
            break status.success();
        }
        for p in [&mut hub, &mut exit, &mut client] {
            if let Err(e) = p.alive() {
                panic!("{e}");
            }
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        fetched,
        "the SOCKS5 fetch through the NAT failed:\n{}",
        logs([&fetch, &hub, &exit, &client])
    );
    println!(
        "{}",
        fetch.log().lines().filter(|l| l.contains("NAT-FETCH")).collect::<Vec<_>>().join("\n")
    );

    // What the nodes say of themselves, not how their logs word it.
    let (exit_says, client_says) = (scrape(exit_ns), scrape(client_ns));
    assert!(
        sample(&exit_says, "meshproxy_relay_reservations_accepted_total") >= 1.0,
        "the exit never held a reservation:\n{exit_says}\n{}",
        exit.log()
    );
    assert!(
        sample(&client_says, "meshproxy_peer_connections_opened_total{path=\"relayed\"}") >= 1.0,
        "the client never used a relayed connection:\n{client_says}\n{}",
        client.log()
    );
    let exit_log = exit.log();
    let verdict = exit_log
        .lines()
        .find(|l| l.contains("autonat: reachability changed"))
        .unwrap_or("(no autonat verdict logged)")
        .to_owned();
    println!("exit autonat: {verdict}");

    // The exit (which accepted the circuit) tries to upgrade; wait a while for the outcome.
    let until = Instant::now() + UPGRADE_WAIT;
    let upgraded = loop {
        let exit_log = exit.log();
        if exit_log.contains("upgraded to direct") {
            break true;
        }
        if Instant::now() > until {
            break false;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let exit_log = exit.log();
    let punch_lines: Vec<&str> = exit_log
        .lines()
        .filter(|l| {
            l.contains("hole punch")
                || l.contains("upgraded to direct")
                || l.contains("direct dial")
        })
        .collect();
    println!(
        "direct upgrade after relaying: {}\n{}",
        if upgraded { "YES" } else { "no" },
        punch_lines.join("\n")
    );
}

/// (Run inside the hub's namespace by the NAT test.) An echo origin.
#[test]
#[ignore = "a helper the NAT test runs inside a namespace"]
fn nat_helper_origin() {
    let Ok(addr) = std::env::var(ORIGIN_ENV) else { return };
    let listener = TcpListener::bind(addr.as_str()).unwrap();
    // Ends with the test that started it (killed), or after this long at most.
    let end = Instant::now() + FETCH_DEADLINE + UPGRADE_WAIT + Duration::from_secs(30);
    listener.set_nonblocking(true).unwrap();
    while Instant::now() < end {
        match listener.accept() {
            Ok((mut s, _)) => {
                std::thread::spawn(move || {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                    let mut r = s.try_clone().unwrap();
                    let _ = std::io::copy(&mut r, &mut s);
                    let _ = s.shutdown(std::net::Shutdown::Write);
                });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// One SOCKS5 CONNECT to `target` through `socks`: the reply code and the stream.
fn socks_connect(socks: SocketAddr, target: SocketAddr) -> std::io::Result<(u8, TcpStream)> {
    let mut s = TcpStream::connect_timeout(&socks, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let SocketAddr::V4(t) = target else { return Err(std::io::ErrorKind::InvalidInput.into()) };
    let mut request = vec![5, 1, 0, 5, 1, 0, 1];
    request.extend_from_slice(&t.ip().octets());
    request.extend_from_slice(&t.port().to_be_bytes());
    s.write_all(&request)?;
    let mut reply = [0u8; 12];
    s.read_exact(&mut reply)?;
    Ok((reply[3], s))
}

/// (Run inside the client's namespace by the NAT test.) SOCKS5 CONNECTs until one
/// succeeds, then 64 KiB must come back from the echo origin intact.
#[test]
#[ignore = "a helper the NAT test runs inside a namespace"]
fn nat_helper_fetch() {
    let Ok(spec) = std::env::var(FETCH_ENV) else { return };
    let (socks, target) = spec.split_once(' ').unwrap();
    let (socks, target): (SocketAddr, SocketAddr) =
        (socks.parse().unwrap(), target.parse().unwrap());
    let start = Instant::now();
    let mut attempts = 0;
    let mut stream = loop {
        attempts += 1;
        match socks_connect(socks, target) {
            Ok((0, s)) => break s,
            Ok((code, _)) => println!("NAT-FETCH attempt {attempts}: SOCKS5 reply {code}"),
            Err(e) => println!("NAT-FETCH attempt {attempts}: {e}"),
        }
        assert!(start.elapsed() < FETCH_DEADLINE, "no SOCKS5 success in {FETCH_DEADLINE:?}");
        std::thread::sleep(Duration::from_millis(500));
    };
    let payload: Vec<u8> = (0..PAYLOAD).map(|i| (i * 31 % 251) as u8).collect();
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        writer.write_all(&payload).unwrap();
        writer.shutdown(std::net::Shutdown::Write).unwrap();
        payload
    });
    let mut echoed = Vec::new();
    stream.read_to_end(&mut echoed).unwrap();
    let payload = sender.join().unwrap();
    assert!(echoed == payload, "echoed {} bytes, not the {} sent", echoed.len(), payload.len());
    println!(
        "NAT-FETCH OK: {} bytes echoed through the exit behind NAT after {attempts} attempt(s), {:.1} s",
        echoed.len(),
        start.elapsed().as_secs_f64()
    );
}
