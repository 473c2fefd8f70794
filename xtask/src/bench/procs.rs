//! The processes under test: building the release binaries, writing node
//! configs, starting hubs, exits, clients and shadowsocks-rust, and reading
//! what the kernel knows about them (RSS, CPU time, open fds).

use super::BenchError;
use std::io::{BufRead, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How long a process may take to print that it is ready.
const READY_DEADLINE: Duration = Duration::from_secs(30);

/// The shadowsocks-rust release the comparison installs (pinned so runs compare).
pub const SHADOWSOCKS_VERSION: &str = "1.25.0";
/// The cipher the issue asks for.
pub const SHADOWSOCKS_CIPHER: &str = "chacha20-ietf-poly1305";
/// The cipher meshproxy's Noise agrees on between two machines with AES
/// instructions (like the bench's), so `tcp / ss_aes` compares like with like.
pub const SHADOWSOCKS_AES: &str = "aes-256-gcm";
/// shadowsocks-rust without a cipher: the same two hops, SOCKS5 and remote
/// dial, so its throughput is what the shape itself costs on this machine.
pub const SHADOWSOCKS_PLAIN: &str = "none";

/// The Noise name of AES-256-GCM, as the node logs the AEAD it agreed.
pub const NOISE_AESGCM: &str = "AESGCM";

/// The log filter of the bench's nodes: the default `info`, plus the one
/// debug line per Noise handshake that names the AEAD agreed, so the bench
/// reports what the mesh really ran rather than guessing it from the CPU
/// (a second copy of the node's own check, which could drift from it).
const NODE_LOG: &str = "info,meshproxy::p2p::noise::handshake=debug";

/// The transport AEAD of the last Noise handshake in a node's log
/// (`noise: dialed|accepted; transport AEAD agreed … aead=NAME`); `None`
/// when there is none (or the log cannot be read).
pub fn agreed_aead(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    aead_in(&text)
}

/// [`agreed_aead`] on a log's text.
fn aead_in(text: &str) -> Option<String> {
    let line = text.lines().rev().find(|l| l.contains("transport AEAD agreed"))?;
    let line = without_ansi(line);
    let value = line.split_whitespace().find_map(|w| w.strip_prefix("aead="))?;
    let name = value.trim_matches('"');
    (!name.is_empty()).then(|| name.to_owned())
}

/// `line` without terminal colour codes (`ESC [ … letter`): the node's
/// tracing output colours field names even when stderr is a file.
fn without_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip to the sequence's final letter.
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The cargo that launched xtask, so the bench builds with the same toolchain.
fn cargo() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// The workspace's target directory (honouring `CARGO_TARGET_DIR`).
pub fn target_dir(workspace: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace.join(dir),
        None => workspace.join("target"),
    }
}

/// The binaries the bench runs.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `meshproxy`, release build.
    pub meshproxy: PathBuf,
    /// `examples/heap_probe`: the same node with a counting allocator.
    pub heap_probe: PathBuf,
    /// `examples/exit_leg`: a libp2p + `/meshproxy/proxy/1` load generator
    /// that talks to an exit directly (the exit leg alone).
    pub exit_leg: PathBuf,
    /// Worker threads every node is started with (`threads`); none: one per CPU.
    pub threads: Option<u16>,
}

/// Builds `meshproxy`, the heap probe and the exit-leg generator in release mode.
pub fn build(workspace: &Path) -> Result<Binaries, BenchError> {
    let args = [
        "build",
        "--release",
        "-p",
        "meshproxy",
        "--bin",
        "meshproxy",
        "--example",
        "heap_probe",
        "--example",
        "exit_leg",
    ];
    println!("bench: cargo {}", args.join(" "));
    let status = Command::new(cargo())
        .args(args)
        .current_dir(workspace)
        .status()
        .map_err(|e| BenchError::Build(format!("cannot start cargo: {e}")))?;
    if !status.success() {
        return Err(BenchError::Build(format!("cargo build failed ({status})")));
    }
    let release = target_dir(workspace).join("release");
    Ok(Binaries {
        meshproxy: release.join("meshproxy"),
        heap_probe: release.join("examples").join("heap_probe"),
        exit_leg: release.join("examples").join("exit_leg"),
        threads: None,
    })
}

/// `sslocal` and `ssserver`.
#[derive(Debug, Clone)]
pub struct Shadowsocks {
    /// The local SOCKS5 side.
    pub sslocal: PathBuf,
    /// The remote side.
    pub ssserver: PathBuf,
}

/// Installs shadowsocks-rust into `target/bench-tools` unless it is there;
/// `Err` carries the reason to print when it cannot.
pub fn install_shadowsocks(workspace: &Path) -> Result<Shadowsocks, String> {
    let root = target_dir(workspace).join("bench-tools");
    let tools = Shadowsocks {
        sslocal: root.join("bin").join("sslocal"),
        ssserver: root.join("bin").join("ssserver"),
    };
    let marker = root.join(format!("shadowsocks-rust-{SHADOWSOCKS_VERSION}"));
    if tools.sslocal.is_file() && tools.ssserver.is_file() && marker.is_file() {
        return Ok(tools);
    }
    // Only what the comparison runs: the SOCKS5 local, the server, the
    // original AEAD ciphers (chacha20-ietf-poly1305), multi-threaded tokio.
    let args = [
        "install",
        "shadowsocks-rust",
        "--version",
        SHADOWSOCKS_VERSION,
        "--locked",
        "--no-default-features",
        "--features",
        "local,server,multi-threaded,aead-cipher",
        "--bin",
        "sslocal",
        "--bin",
        "ssserver",
        "--root",
    ];
    println!("bench: cargo {} {} (once; takes minutes)", args.join(" "), root.display());
    let status = Command::new(cargo())
        .args(args)
        .arg(&root)
        .current_dir(workspace)
        .status()
        .map_err(|e| format!("cannot start cargo install: {e}"))?;
    if !status.success() {
        return Err(format!(
            "cargo install shadowsocks-rust {SHADOWSOCKS_VERSION} failed ({status})"
        ));
    }
    if !(tools.sslocal.is_file() && tools.ssserver.is_file()) {
        return Err(format!("cargo install left no sslocal/ssserver in {}", root.display()));
    }
    // Remembers which version is there, so a pin bump reinstalls.
    let _ = std::fs::write(&marker, SHADOWSOCKS_VERSION);
    Ok(tools)
}

/// A TCP port on 127.0.0.1 nothing listens on right now (exits must
/// advertise a fixed port, so the harness picks one).
pub fn free_tcp_port() -> Result<u16, BenchError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| BenchError::Io("bind".into(), e))?;
    Ok(l.local_addr().map_err(|e| BenchError::Io("local_addr".into(), e))?.port())
}

/// A UDP port on 127.0.0.1 nothing is bound to right now (for QUIC exits).
pub fn free_udp_port() -> Result<u16, BenchError> {
    let s = UdpSocket::bind("127.0.0.1:0").map_err(|e| BenchError::Io("bind".into(), e))?;
    Ok(s.local_addr().map_err(|e| BenchError::Io("local_addr".into(), e))?.port())
}

/// A process under test; killed when dropped so no run leaves one behind.
#[derive(Debug)]
pub struct Proc {
    /// What it is, for messages (`tcp-exit`, `sslocal`, …).
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// Every stdout line read so far.
    pub seen: Vec<String>,
}

impl Proc {
    /// Starts `program args…`, stdout piped (read on a thread), stderr to `log`.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[&str],
        log: &Path,
        with_stdin: bool,
    ) -> Result<Proc, BenchError> {
        let stderr =
            std::fs::File::create(log).map_err(|e| BenchError::Io(log.display().to_string(), e))?;
        let mut child = Command::new(program)
            .args(args)
            .stdin(if with_stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| BenchError::Io(format!("start {}", program.display()), e))?;
        let (tx, lines) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let stdin = child.stdin.take();
        Ok(Proc { name: name.to_owned(), child, stdin, lines, seen: Vec::new() })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reads stdout lines until one satisfies `done`; returns that line.
    pub fn wait_line(&mut self, done: impl Fn(&str) -> bool) -> Result<String, BenchError> {
        self.wait_line_within(READY_DEADLINE, done)
    }

    /// [`Proc::wait_line`] with its own bound.
    pub fn wait_line_within(
        &mut self,
        within: Duration,
        done: impl Fn(&str) -> bool,
    ) -> Result<String, BenchError> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if done(&line) {
                        return Ok(line);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(BenchError::NotReady(self.name.clone(), "no expected line in time"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(BenchError::NotReady(self.name.clone(), "exited (see its log)"))
                }
            }
        }
    }

    /// Writes `line` and a newline to the process's stdin.
    pub fn send_line(&mut self, line: &str) -> Result<(), BenchError> {
        let stdin =
            self.stdin.as_mut().ok_or(BenchError::NotReady(self.name.clone(), "no stdin"))?;
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .map_err(|e| BenchError::Io(format!("write to {}", self.name), e))
    }

    /// Asks a heap probe for its live heap bytes.
    pub fn heap_bytes(&mut self) -> Result<u64, BenchError> {
        self.send_line("heap")?;
        let line = self.wait_line(|l| l.starts_with("heap: "))?;
        line.trim_start_matches("heap: ")
            .trim()
            .parse()
            .map_err(|_| BenchError::NotReady(self.name.clone(), "unreadable heap line"))
    }

    /// Resident set size in bytes (`VmRSS`).
    pub fn rss_bytes(&self) -> Option<u64> {
        rss_bytes(self.pid())
    }

    /// User + system CPU time so far, in seconds.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).ok()?;
        // Fields after the `(comm)`, which may contain spaces: state is the
        // first, utime the 12th, stime the 13th.
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        Some((utime + stime) / clock_ticks_per_second())
    }

    /// Open file descriptors.
    pub fn fds(&self) -> Option<u64> {
        open_fds(self.pid())
    }
}

/// A `Vm*` line of `/proc/PID/status` (kB there), in bytes.
fn vm_status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line =
        status.lines().find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Resident set size of `pid` in bytes (`VmRSS`).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    vm_status_bytes(pid, "VmRSS")
}

/// The largest resident set size `pid` ever had, in bytes (`VmHWM`): the
/// kernel keeps it, so a peak between two samples is not missed.
pub fn peak_rss_bytes(pid: u32) -> Option<u64> {
    vm_status_bytes(pid, "VmHWM")
}

/// Open file descriptors of `pid`.
pub fn open_fds(pid: u32) -> Option<u64> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(dir.count() as u64)
}

/// The soft open-file limit `pid` runs with (`Max open files` in /proc/PID/limits).
pub fn fd_soft_limit(pid: u32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files").split_whitespace().next()?.parse().ok()
}

/// Raises this process's soft open-file limit to `want` (children inherit
/// it), and the hard one too where privilege allows; otherwise to the hard
/// limit. Returns the soft limit now in force.
pub fn raise_fd_limit(want: u64) -> u64 {
    let Ok((soft, hard)) = rlimit::Resource::NOFILE.get() else { return 0 };
    if soft >= want {
        return soft;
    }
    if rlimit::Resource::NOFILE.set(want, want.max(hard)).is_ok() {
        return want;
    }
    let _ = rlimit::Resource::NOFILE.set(hard, hard);
    rlimit::Resource::NOFILE.get().map_or(soft, |(s, _)| s)
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The kernel's clock ticks per second for /proc CPU times (`getconf CLK_TCK`).
fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Which transport the client uses to reach the exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// libp2p TCP + Noise + Yamux.
    Tcp,
    /// libp2p QUIC.
    Quic,
}

impl Transport {
    /// Short name for figures.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Quic => "quic",
        }
    }
}

/// Generous session limits and deadlines: the memory figure holds thousands
/// of idle connections, which the defaults (4096 sessions, 512 per peer,
/// 300 s idle) would cap or reap; and every node dials from 127.0.0.1, which
/// the default 16 inbound connections per address would cap.
const LIMITS: &str = "[limits]
max_client_sessions = 50000
max_exit_sessions = 50000
max_sessions_per_peer = 50000
max_connections_per_ip = 4096

[timeouts]
idle_ms = 3600000
";

/// A hub, one exit, and clients, as processes.
#[derive(Debug)]
pub struct Mesh {
    /// The hub.
    pub hub: Proc,
    /// The exit.
    pub exit: Proc,
    /// The exit's full address (`/ip4/…/p2p/PEER`), for the exit-leg generator.
    pub exit_p2p: String,
    /// The hub's `MULTIADDR/p2p/PEER`, for generators that get admitted there.
    pub hub_p2p: String,
    /// The clients, each with its SOCKS5 listener.
    pub clients: Vec<(Proc, SocketAddr)>,
    /// The `[[hubs]]` section clients use.
    hubs: String,
    /// Prefix of process names.
    tag: String,
    /// Number of the next client started.
    next_client: usize,
}

/// The identity file of node `name`.
pub(super) fn key(dir: &Path, name: &str) -> String {
    dir.join(format!("{name}.key")).display().to_string()
}

/// Writes `toml` as `name`'s config and starts the node (as a heap probe if `probe`).
pub(super) fn start_node(
    bin: &Binaries,
    dir: &Path,
    name: &str,
    toml: String,
    probe: bool,
) -> Result<Proc, BenchError> {
    let config = dir.join(format!("{name}.toml"));
    // A top-level key, so it goes before the first table.
    let toml = match bin.threads {
        Some(n) => format!("threads = {n}\n{toml}"),
        None => toml,
    };
    std::fs::write(&config, toml).map_err(|e| BenchError::Io(config.display().to_string(), e))?;
    let config = config.display().to_string();
    let log = dir.join(format!("{name}.log"));
    if probe {
        Proc::spawn(name, &bin.heap_probe, &["--config", &config], &log, true)
    } else {
        let args = ["run", "--config", &config, "--log", NODE_LOG];
        Proc::spawn(name, &bin.meshproxy, &args, &log, false)
    }
}

impl Mesh {
    /// Starts a mesh over `transport` whose exit allows the origins `allow`,
    /// with `clients` client processes. `probe` runs the nodes as heap probes.
    pub fn start(
        bin: &Binaries,
        dir: &Path,
        tag: &str,
        transport: Transport,
        allow: &[SocketAddr],
        clients: usize,
        probe: bool,
    ) -> Result<Mesh, BenchError> {
        let hub_name = format!("{tag}-hub");
        let mut hub = start_node(
            bin,
            dir,
            &hub_name,
            format!(
                "identity = \"{}\"\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\n{LIMITS}\n[hub]\n\
                 keys = [{{ id = \"exit\", token = \"t-exit-token-0123456789\", roles = [\"exit\"], max_registrations = 4 }}, {{ id = \"client\", token = \"t-client-token-01234567\" }}]\n",
                key(dir, &hub_name)
            ),
            false,
        )?;
        let line = hub.wait_line(|l| l.starts_with("p2p: "))?;
        let full = line.trim_start_matches("p2p: ").trim();
        let (addr, peer) = full
            .split_once("/p2p/")
            .ok_or(BenchError::NotReady(hub_name.clone(), "p2p line without /p2p/"))?;
        let hubs = format!("[[hubs]]\npeer = \"{peer}\"\naddrs = [\"{addr}\"]\n");
        let hub_p2p = full.to_owned();

        let exit_addr = match transport {
            Transport::Tcp => format!("/ip4/127.0.0.1/tcp/{}", free_tcp_port()?),
            Transport::Quic => format!("/ip4/127.0.0.1/udp/{}/quic-v1", free_udp_port()?),
        };
        let exit_name = format!("{tag}-exit");
        let allow: Vec<String> = allow.iter().map(|a| format!("\"{a}\"")).collect();
        let allow = allow.join(", ");
        let mut exit = start_node(
            bin,
            dir,
            &exit_name,
            format!(
                "identity = \"{}\"\nlisten = [\"{exit_addr}\"]\n{hubs}{LIMITS}\n[exit]\n\
                 credential = {{ id = \"exit\", token = \"t-exit-token-0123456789\" }}\n\
                 advertise = [\"{exit_addr}\"]\ncapacity = 100000\nallow = [{allow}]\n",
                key(dir, &exit_name)
            ),
            probe,
        )?;
        let exit_p2p = exit.wait_line(|l| l.starts_with("p2p: "))?;
        let exit_p2p = exit_p2p.trim_start_matches("p2p: ").trim().to_owned();

        let mut mesh = Mesh {
            hub,
            exit,
            exit_p2p,
            hub_p2p,
            clients: Vec::new(),
            hubs,
            tag: tag.to_owned(),
            next_client: 0,
        };
        for _ in 0..clients {
            let client = mesh.new_client(bin, dir, probe)?;
            mesh.clients.push(client);
        }
        Ok(mesh)
    }

    /// Starts another client of this mesh (not added to `clients`), and
    /// waits for its SOCKS5 listener.
    pub fn new_client(
        &mut self,
        bin: &Binaries,
        dir: &Path,
        probe: bool,
    ) -> Result<(Proc, SocketAddr), BenchError> {
        let name = format!("{}-client{}", self.tag, self.next_client);
        self.next_client += 1;
        let mut client = start_node(
            bin,
            dir,
            &name,
            format!(
                "identity = \"{}\"\n{}{LIMITS}\n[client]\n\
                 credential = {{ id = \"client\", token = \"t-client-token-01234567\" }}\nrefresh_ms = 200\n\
                 [[client.listeners]]\nbind = \"127.0.0.1:0\"\nprotocol = \"socks5\"\n",
                key(dir, &name),
                self.hubs
            ),
            probe,
        )?;
        let line = client.wait_line(|l| l.starts_with("listener: "))?;
        let listener: SocketAddr = line
            .trim_start_matches("listener: ")
            .trim()
            .parse()
            .map_err(|_| BenchError::NotReady(name.clone(), "unreadable listener line"))?;
        Ok((client, listener))
    }

    /// The first client's SOCKS5 listener.
    pub fn socks(&self) -> Option<SocketAddr> {
        self.clients.first().map(|(_, a)| *a)
    }

    /// CPU seconds of the proxy processes on the data path (client + exit).
    pub fn data_path_cpu(&self) -> f64 {
        self.clients.iter().filter_map(|(c, _)| c.cpu_seconds()).sum::<f64>()
            + self.exit.cpu_seconds().unwrap_or(0.0)
    }
}

/// sslocal + ssserver as processes.
#[derive(Debug)]
pub struct SsPair {
    /// The local SOCKS5 side.
    pub local: Proc,
    /// The remote side.
    pub server: Proc,
    /// sslocal's SOCKS5 listener.
    pub socks: SocketAddr,
}

impl SsPair {
    /// Starts ssserver and sslocal with `method` ([`SHADOWSOCKS_CIPHER`],
    /// [`SHADOWSOCKS_AES`] or [`SHADOWSOCKS_PLAIN`]) and `threads` workers
    /// (none: one per CPU) on free ports and waits until both accept.
    pub fn start(
        tools: &Shadowsocks,
        dir: &Path,
        method: &str,
        threads: Option<u16>,
    ) -> Result<SsPair, BenchError> {
        let server_addr = format!("127.0.0.1:{}", free_tcp_port()?);
        let local_addr = format!("127.0.0.1:{}", free_tcp_port()?);
        let password = "meshproxy-bench";
        let threads = threads.map(|n| n.to_string());
        let mut common = vec!["-m", method, "-k", password];
        if let Some(n) = &threads {
            common.extend(["--worker-threads", n.as_str()]);
        }
        let mut server_args = vec!["-s", server_addr.as_str()];
        server_args.extend(&common);
        let server = Proc::spawn(
            "ssserver",
            &tools.ssserver,
            &server_args,
            &dir.join(format!("ssserver-{method}.log")),
            false,
        )?;
        let mut local_args = vec!["-b", local_addr.as_str(), "-s", server_addr.as_str()];
        local_args.extend(common);
        let local = Proc::spawn(
            "sslocal",
            &tools.sslocal,
            &local_args,
            &dir.join(format!("sslocal-{method}.log")),
            false,
        )?;
        for (name, addr) in [("ssserver", &server_addr), ("sslocal", &local_addr)] {
            let addr: SocketAddr = addr
                .parse()
                .map_err(|_| BenchError::NotReady(name.to_owned(), "unparsable address"))?;
            wait_accepting(name, addr)?;
        }
        let socks = local_addr
            .parse()
            .map_err(|_| BenchError::NotReady("sslocal".to_owned(), "unparsable address"))?;
        Ok(SsPair { local, server, socks })
    }

    /// CPU seconds of sslocal + ssserver.
    pub fn data_path_cpu(&self) -> f64 {
        self.local.cpu_seconds().unwrap_or(0.0) + self.server.cpu_seconds().unwrap_or(0.0)
    }
}

/// Polls until `addr` accepts TCP connections (shadowsocks prints no ready line).
fn wait_accepting(name: &str, addr: SocketAddr) -> Result<(), BenchError> {
    let deadline = Instant::now() + READY_DEADLINE;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(BenchError::NotReady(name.to_owned(), "not accepting after 30 s"))
}

/// `examples/exit_leg` talking to one exit: the exit leg alone, without a
/// client process (libp2p TCP + Noise + Yamux and `/meshproxy/proxy/1`
/// straight from the load generator to the exit).
#[derive(Debug)]
pub struct ExitLeg {
    proc: Proc,
}

impl ExitLeg {
    /// Starts the generator against the exit at `exit_p2p` (`/ip4/…/p2p/PEER`),
    /// admitted as a client at `hub_p2p` (the exit serves only peers with a
    /// hub's ticket), and waits until one proxied connection has reached
    /// `origin` through it.
    pub fn start(
        bin: &Binaries,
        dir: &Path,
        hub_p2p: &str,
        exit_p2p: &str,
        origin: SocketAddr,
    ) -> Result<ExitLeg, BenchError> {
        let origin = origin.to_string();
        let mut proc = Proc::spawn(
            "exit-leg",
            &bin.exit_leg,
            &[
                "--hub",
                hub_p2p,
                "--credential",
                "client=t-client-token-01234567",
                "--exit",
                exit_p2p,
                "--origin",
                &origin,
            ],
            &dir.join("exit-leg.log"),
            true,
        )?;
        proc.wait_line(|l| l == "ready")?;
        Ok(ExitLeg { proc })
    }

    /// Sends `total` bytes over `streams` proxied connections to the origin
    /// and returns the generator's own timing (all streams set up to the last
    /// count back). Blocks: call it off the async workers.
    pub fn transfer(&mut self, total: u64, streams: usize) -> Result<Duration, BenchError> {
        self.proc.send_line(&format!("transfer {total} {streams}"))?;
        // The generator bounds a transfer at 300 s itself; this only guards a hang.
        let line = self.proc.wait_line_within(Duration::from_secs(330), |l| {
            l.starts_with("took: ") || l.starts_with("error: ")
        })?;
        match line.strip_prefix("took: ").and_then(|s| s.trim().parse::<f64>().ok()) {
            Some(secs) if secs.is_finite() && secs >= 0.0 => Ok(Duration::from_secs_f64(secs)),
            _ => Err(BenchError::Load(format!("exit leg: {line}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agreed_aead_is_read_from_the_last_handshake_line() {
        let log = "\
2026-12-07T18:00:00Z  INFO meshproxy::runtime::runner: listening
2026-12-07T18:00:01Z DEBUG meshproxy::p2p::noise::handshake: noise: dialed; transport AEAD agreed peer=12D3KooWA aead=\"ChaChaPoly\"
2026-12-07T18:00:02Z DEBUG meshproxy::p2p::noise::handshake: noise: accepted; transport AEAD agreed peer=12D3KooWB aead=\"AESGCM\"
2026-12-07T18:00:03Z  INFO meshproxy::runtime::runner: peer connected
";
        assert_eq!(aead_in(log).as_deref(), Some(NOISE_AESGCM));
        // As the node really writes it: coloured, even into a file.
        let coloured = "\u{1b}[2m2026-12-07T18:27:46.083473Z\u{1b}[0m \u{1b}[34mDEBUG\u{1b}[0m \u{1b}[2mmeshproxy::p2p::noise::handshake\u{1b}[0m\u{1b}[2m:\u{1b}[0m noise: dialed; transport AEAD agreed \u{1b}[3mpeer\u{1b}[0m\u{1b}[2m=\u{1b}[0m12D3KooWQ \u{1b}[3maead\u{1b}[0m\u{1b}[2m=\u{1b}[0m\"AESGCM\"";
        assert_eq!(aead_in(coloured).as_deref(), Some(NOISE_AESGCM));
        assert_eq!(
            aead_in("x transport AEAD agreed aead=ChaChaPoly").as_deref(),
            Some("ChaChaPoly")
        );
        assert_eq!(aead_in("INFO meshproxy: no handshake yet\n"), None);
        assert_eq!(aead_in("transport AEAD agreed aead=\"\""), None);
    }
}
