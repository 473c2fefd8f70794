//! End-to-end fixtures: meshes of real `meshproxy` nodes over libp2p on
//! 127.0.0.1 (in-process or as child processes of the built binary), config
//! text for each role, app-side SOCKS5 / HTTP CONNECT handshakes, and origins
//! that send or check a deterministic pseudo-random byte stream.

use meshproxy::ops::config::FileConfig;
use meshproxy::ops::identity::Identity;
use meshproxy::ops::launch::{start, NetNode};
use std::future::Future;
use std::io::{self, BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio::time::{sleep, timeout};

/// A TCP port nothing listens on right now (a restarted hub must come back on
/// the same one).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Runs one end-to-end test body on its own multi-threaded runtime, bounded by
/// `limit`, and never at the same time as another such body in this binary:
/// throughput figures and failover deadlines mean little when four meshes
/// share two cores.
pub fn serial<F: Future<Output = ()>>(limit: Duration, body: F) {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime
        .block_on(async { timeout(limit, body).await })
        .unwrap_or_else(|_| panic!("the test did not finish within {limit:?}"));
    // Whatever the body left running (node tasks) is dropped with the runtime.
    runtime.shutdown_timeout(Duration::from_secs(5));
}

/// Polls `probe` every 20 ms until it yields a value or `within` has passed.
pub async fn poll_until<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------
// Config text. Every node config of these tests is built here, so a change in
// what the file needs (say, `advertise` defaulting to the bound listen
// addresses) is a change in one place.

/// Admitted credentials: `exit` for exits, `client` for clients.
const HUB_KEYS: &str = r#"keys = [{ id = "exit", token = "t-exit-token-0123456789", roles = ["exit"], max_registrations = 4 }, { id = "client", token = "t-client-token-01234567" }]"#;

/// A hub listening on `127.0.0.1:port` (0: any port).
pub fn hub_toml(port: u16) -> String {
    format!("listen = [\"/ip4/127.0.0.1/tcp/{port}\"]\n[hub]\n{HUB_KEYS}\n")
}

/// The `[[hubs]]` entry pointing at one hub.
pub fn hubs_toml(hub: &Identity, addr: &str) -> String {
    format!("[[hubs]]\npeer = \"{}\"\naddrs = [\"{addr}\"]\n", hub.peer_id_string())
}

/// An exit on any free port (it advertises the one it bound) that may reach
/// any loopback origin.
pub fn exit_toml(hubs: &str) -> String {
    format!(
        r#"listen = ["/ip4/127.0.0.1/tcp/0"]
{hubs}
[exit]
credential = {{ id = "exit", token = "t-exit-token-0123456789" }}
allow = ["127.0.0.0/8"]
"#
    )
}

/// A client with a SOCKS5 listener and an HTTP CONNECT listener (in that
/// order), not sticky, refreshing its exit list every 200 ms.
pub fn client_toml(hubs: &str) -> String {
    format!(
        r#"{hubs}
[client]
credential = {{ id = "client", token = "t-client-token-01234567" }}
refresh_ms = 200
[[client.listeners]]
bind = "127.0.0.1:0"
protocol = "socks5"
[[client.listeners]]
bind = "127.0.0.1:0"
protocol = "http"
"#
    )
}

/// Starts an in-process node over libp2p.
pub async fn node(toml: &str, id: &Identity, seed: u64) -> NetNode {
    let file = FileConfig::parse(toml).unwrap();
    start(&file, id, seed).await.unwrap()
}

/// The identity a test gives the node numbered `n`.
pub fn identity(n: u8) -> Identity {
    Identity::from_secret([n; 32])
}

/// Waits until an in-process client knows at least `n` exits.
pub async fn wait_known_exits(client: &NetNode, n: usize, within: Duration) {
    poll_until("the client learning its exits", within, || async {
        let known = client.node.status().await?.known_exits;
        (known >= n).then_some(())
    })
    .await;
}

/// Waits until an in-process exit is registered at `n` hubs.
pub async fn wait_registered(exit: &NetNode, n: usize, within: Duration) {
    poll_until("the exit registering", within, || async {
        let hubs = exit.node.status().await?.registered_hubs;
        (hubs >= n).then_some(())
    })
    .await;
}

/// A hub, one exit and a client, all in this process.
#[derive(Debug)]
pub struct Mesh {
    /// The hub.
    pub hub: NetNode,
    /// The exit.
    pub exit: NetNode,
    /// The client (SOCKS5 listener first, then HTTP CONNECT).
    pub client: NetNode,
}

impl Mesh {
    /// Starts the three nodes and waits until the client knows the exit.
    pub async fn start() -> Mesh {
        let hub_id = identity(21);
        let hub = node(&hub_toml(0), &hub_id, 21).await;
        let hubs = hubs_toml(&hub_id, &hub.p2p_addrs[0].to_string());
        let exit = node(&exit_toml(&hubs), &identity(22), 22).await;
        let client = node(&client_toml(&hubs), &identity(23), 23).await;
        wait_known_exits(&client, 1, Duration::from_secs(10)).await;
        Mesh { hub, exit, client }
    }

    /// The client's SOCKS5 listener.
    pub fn socks(&self) -> SocketAddr {
        self.client.node.listen_addrs[0]
    }

    /// The client's HTTP CONNECT listener.
    pub fn http(&self) -> SocketAddr {
        self.client.node.listen_addrs[1]
    }

    /// Stops the nodes, client first.
    pub async fn shutdown(self) {
        self.client.node.shutdown().await;
        self.exit.node.shutdown().await;
        self.hub.node.shutdown().await;
    }
}

// ---------------------------------------------------------------------------
// Nodes as child processes.

/// A scratch directory, removed on drop.
#[derive(Debug)]
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// A new empty directory under the system temp dir.
    pub fn new(tag: &str) -> Scratch {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "meshproxy-e2e-{}-{tag}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// A path inside.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `meshproxy run` child process, SIGKILLed and reaped on drop.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
    /// Its peer id, as it printed it.
    pub peer_id: String,
    /// Its peer-to-peer addresses, `/p2p/…` included.
    pub p2p: Vec<String>,
    /// Its client listeners.
    pub listeners: Vec<SocketAddr>,
}

impl Proc {
    /// Runs `meshproxy run` on `toml` with the identity `id` (its key file is
    /// written into `dir` unless already there; `name` names the config and
    /// log files) and waits until the node
    /// printed its addresses, i.e. is ready.
    pub async fn spawn(name: &str, dir: &Scratch, id: &Identity, toml: &str) -> Proc {
        // Named by the peer id: a node started again with the same identity
        // finds its key file.
        let key = dir.path(&format!("{}.key", id.peer_id_string()));
        if !key.exists() {
            id.create(&key).unwrap();
        }
        let text = format!("identity = \"{}\"\n{toml}", key.display());
        let file = FileConfig::parse(&text).unwrap();
        let (want_p2p, want_listeners) = (file.listen.len(), file.listener_sockets().len());
        let config = dir.path(&format!("{name}.toml"));
        std::fs::write(&config, text).unwrap();
        let log = dir.path(&format!("{name}.log"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_meshproxy"))
            .args(["--log", "info", "run", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, mut lines) = mpsc::unbounded_channel();
        // Reads until the child is gone, also once nobody listens: a closed
        // pipe would make the child's next `println!` fail.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let _ = tx.send(line);
            }
        });
        let mut proc = Proc {
            name: name.to_owned(),
            child,
            log,
            peer_id: String::new(),
            p2p: Vec::new(),
            listeners: Vec::new(),
        };
        let ready = async {
            while proc.peer_id.is_empty()
                || proc.p2p.len() < want_p2p
                || proc.listeners.len() < want_listeners
            {
                let Some(line) = lines.recv().await else { return false };
                if let Some(id) = line.strip_prefix("peer id: ") {
                    proc.peer_id = id.to_owned();
                } else if let Some(addr) = line.strip_prefix("p2p: ") {
                    proc.p2p.push(addr.to_owned());
                } else if let Some(addr) = line.strip_prefix("listener: ") {
                    proc.listeners.push(addr.parse().unwrap());
                }
            }
            true
        };
        let started = timeout(Duration::from_secs(20), ready).await;
        assert!(
            matches!(started, Ok(true)),
            "{name} did not start; its log:\n{}",
            std::fs::read_to_string(&proc.log).unwrap_or_default()
        );
        assert_eq!(proc.peer_id, id.peer_id_string());
        proc
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no goodbye to any peer, the kernel closes its sockets.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let mut text = String::new();
            if let Ok(mut f) = std::fs::File::open(&self.log) {
                let _ = f.read_to_string(&mut text);
            }
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            eprintln!("--- last log lines of {} ---", self.name);
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// Which of `pids` owns the local end of the loopback TCP connection whose
/// local port is `port` and remote port `remote_port` (Linux `/proc`).
#[cfg(target_os = "linux")]
pub fn owner_of(port: u16, remote_port: u16, pids: &[u32]) -> Option<u32> {
    let port_of =
        |field: &str| field.rsplit_once(':').and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let inode = table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (local, remote, inode) = (f.get(1)?, f.get(2)?, f.get(9)?);
        (port_of(local)? == port && port_of(remote)? == remote_port).then(|| inode.to_string())
    })?;
    let wanted = format!("socket:[{inode}]");
    pids.iter().copied().find(|pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
            fds.flatten().any(|fd| {
                std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == wanted.as_str())
            })
        })
    })
}

// ---------------------------------------------------------------------------
// The deterministic stream.

/// Byte `pos` of the stream numbered `seed` (splitmix64 of the 8-byte block).
fn word(seed: u64, block: u64) -> u64 {
    let mut z = seed.wrapping_add(block.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Fills `buf` with bytes `offset..` of the stream `seed`.
pub fn fill(seed: u64, offset: u64, buf: &mut [u8]) {
    let mut pos = offset;
    let mut i = 0;
    while i < buf.len() {
        let bytes = word(seed, pos / 8).to_le_bytes();
        let skip = (pos % 8) as usize;
        let n = (8 - skip).min(buf.len() - i);
        buf[i..i + n].copy_from_slice(&bytes[skip..skip + n]);
        i += n;
        pos += n as u64;
    }
}

/// What a reader of the stream saw.
#[derive(Debug, PartialEq, Eq)]
pub struct Received {
    /// Bytes read before the end or the error.
    pub bytes: u64,
    /// The first offset that differed from the stream, if any.
    pub mismatch: Option<u64>,
    /// How reading ended: `None` for a clean end of stream.
    pub error: Option<io::ErrorKind>,
}

/// Reads until the end (or an error, or `stop_after` bytes), checking every
/// byte against the stream `seed`.
pub async fn read_checked(
    r: &mut (impl AsyncRead + Unpin),
    seed: u64,
    stop_after: Option<u64>,
) -> Received {
    read_checked_from(r, seed, 0, stop_after).await
}

/// [`read_checked`] for a reader already `offset` bytes into the stream
/// (`bytes` counts from there, `mismatch` is an offset in the stream).
pub async fn read_checked_from(
    r: &mut (impl AsyncRead + Unpin),
    seed: u64,
    offset: u64,
    stop_after: Option<u64>,
) -> Received {
    let mut buf = vec![0u8; 64 * 1024];
    let mut want = vec![0u8; 64 * 1024];
    let mut got = Received { bytes: 0, mismatch: None, error: None };
    loop {
        let room = stop_after.map_or(buf.len() as u64, |s| (s - got.bytes).min(buf.len() as u64));
        if room == 0 {
            return got;
        }
        match r.read(&mut buf[..room as usize]).await {
            Ok(0) => return got,
            Ok(n) => {
                if got.mismatch.is_none() {
                    fill(seed, offset + got.bytes, &mut want[..n]);
                    if let Some(at) = buf[..n].iter().zip(&want[..n]).position(|(a, b)| a != b) {
                        got.mismatch = Some(offset + got.bytes + at as u64);
                    }
                }
                got.bytes += n as u64;
            }
            Err(e) => {
                got.error = Some(e.kind());
                return got;
            }
        }
    }
}

/// Writes `total` bytes of the stream `seed`.
pub async fn write_stream(
    w: &mut (impl AsyncWrite + Unpin),
    seed: u64,
    total: u64,
) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut sent = 0u64;
    while sent < total {
        let n = (total - sent).min(buf.len() as u64) as usize;
        fill(seed, sent, &mut buf[..n]);
        w.write_all(&buf[..n]).await?;
        sent += n as u64;
    }
    Ok(())
}

/// An origin that sends `total` bytes of the stream `seed` to each
/// connection, then ends its side and waits for the peer's end. Reports where
/// each connection came from (which tells which exit carried it).
pub async fn source_origin(
    seed: u64,
    total: u64,
) -> (SocketAddr, mpsc::UnboundedReceiver<SocketAddr>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, from)) = l.accept().await {
            let _ = tx.send(from);
            tokio::spawn(async move {
                if write_stream(&mut s, seed, total).await.is_ok() && s.shutdown().await.is_ok() {
                    let mut rest = Vec::new();
                    let _ = s.read_to_end(&mut rest).await;
                }
            });
        }
    });
    (addr, rx)
}

/// An origin that checks what each connection sends against the stream
/// `seed`, reports it on the channel, answers the byte count (8 bytes, big
/// endian) and ends cleanly.
pub async fn sink_origin(seed: u64) -> (SocketAddr, mpsc::UnboundedReceiver<Received>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let got = read_checked(&mut s, seed, None).await;
                if got.error.is_none() {
                    let _ = s.write_all(&got.bytes.to_be_bytes()).await;
                    let _ = s.shutdown().await;
                }
                let _ = tx.send(got);
            });
        }
    });
    (addr, rx)
}

// ---------------------------------------------------------------------------
// The app side.

/// Where an app asks to go.
#[derive(Clone, Debug)]
pub enum Dest {
    /// An address (SOCKS5 ATYP 1).
    Ip(SocketAddr),
    /// A name and port (SOCKS5 ATYP 3).
    Name(String, u16),
}

/// SOCKS5 CONNECT (no auth) through `listener`; the reply code and the stream.
pub async fn socks5(listener: SocketAddr, dest: &Dest) -> io::Result<(u8, TcpStream)> {
    let mut app = TcpStream::connect(listener).await?;
    let mut req = vec![5, 1, 0, 5, 1, 0];
    match dest {
        Dest::Ip(SocketAddr::V4(a)) => {
            req.push(1);
            req.extend_from_slice(&a.ip().octets());
            req.extend_from_slice(&a.port().to_be_bytes());
        }
        Dest::Ip(SocketAddr::V6(a)) => {
            req.push(4);
            req.extend_from_slice(&a.ip().octets());
            req.extend_from_slice(&a.port().to_be_bytes());
        }
        Dest::Name(host, port) => {
            req.push(3);
            req.push(u8::try_from(host.len()).unwrap());
            req.extend_from_slice(host.as_bytes());
            req.extend_from_slice(&port.to_be_bytes());
        }
    }
    app.write_all(&req).await?;
    let mut head = [0u8; 6];
    app.read_exact(&mut head).await?;
    assert_eq!(&head[..2], &[5, 0], "method selection");
    assert_eq!(head[2], 5, "reply version");
    let rest = match head[5] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => {
            let mut len = [0u8; 1];
            app.read_exact(&mut len).await?;
            usize::from(len[0]) + 2
        }
        other => panic!("reply address type {other}"),
    };
    let mut bound = vec![0u8; rest];
    app.read_exact(&mut bound).await?;
    Ok((head[3], app))
}

/// HTTP CONNECT through `listener`; the status code and the stream (nothing
/// read past the response head).
pub async fn http_connect(listener: SocketAddr, dest: SocketAddr) -> io::Result<(u16, TcpStream)> {
    let mut app = TcpStream::connect(listener).await?;
    app.write_all(format!("CONNECT {dest} HTTP/1.1\r\nHost: {dest}\r\n\r\n").as_bytes()).await?;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        app.read_exact(&mut b).await?;
        head.push(b[0]);
        assert!(head.len() < 4096, "response head too long");
    }
    let text = String::from_utf8_lossy(&head);
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((code, app))
}

/// MiB/s for `bytes` in `elapsed`.
pub fn mib_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / elapsed.as_secs_f64()
}

/// Reads whatever the peer still sends until it ends; the error kind if it
/// was not a clean end.
pub async fn drain(s: &mut TcpStream) -> Option<io::ErrorKind> {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf).await {
            Ok(0) => return None,
            Ok(_) => {}
            Err(e) => return Some(e.kind()),
        }
    }
}
