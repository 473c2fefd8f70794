//! The processes of the ingress figures: a meshproxy hub that is also the
//! gateway plus an agent publishing the origin, and rathole (server, and a
//! client that dials out to it and on to the origin, the same shape), plain
//! TCP and with its Noise transport; rathole installed with `cargo install`
//! when missing.

use super::procs::{self, free_tcp_port, Binaries, Proc};
use super::BenchError;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The rathole release the comparison installs (pinned so runs compare).
pub const RATHOLE_VERSION: &str = "0.5.0";
/// rathole's Noise pattern in the comparison: its default handshake with
/// the AEAD meshproxy's Noise agrees on between two machines with AES
/// instructions, so the encrypted comparison is like for like.
pub const RATHOLE_NOISE: &str = "Noise_NK_25519_AESGCM_SHA256";

const GATEWAY_TOKEN: &str = "t-ingress-gw-0123456789";
const AGENT_TOKEN: &str = "t-ingress-agent-0123456";

/// How long a route may take to answer its first request.
const ROUTE_DEADLINE: Duration = Duration::from_secs(30);

/// The hub + gateway and the agent, as processes.
#[derive(Debug)]
pub struct Ingress {
    /// The hub that is also the gateway.
    pub gateway: Proc,
    /// The agent beside the origin.
    pub agent: Proc,
    /// The gateway's public HTTP listener.
    pub http: SocketAddr,
}

impl Ingress {
    /// Starts the hub + gateway (one public listener whose default route
    /// sends every request to service `web` of agents labelled
    /// `site=bench`) and an agent publishing `origin` as `web`, and waits
    /// until a request goes through.
    pub async fn start(
        bin: &Binaries,
        dir: &Path,
        origin: SocketAddr,
    ) -> Result<Ingress, BenchError> {
        let port = free_tcp_port()?;
        let name = "ingress-gateway";
        let mut gateway = procs::start_node(
            bin,
            dir,
            name,
            format!(
                "identity = \"{}\"\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\n\
                 [hub]\nkeys = [{{ id = \"gw\", token = \"{GATEWAY_TOKEN}\", roles = [\"gateway\"] }}, \
                 {{ id = \"agent\", token = \"{AGENT_TOKEN}\", roles = [\"agent\"] }}]\n\
                 [gateway]\ncredential = {{ id = \"gw\", token = \"{GATEWAY_TOKEN}\" }}\n\
                 refresh_ms = 200\n\
                 [[gateway.listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:{port}\"\n\
                 [[gateway.routes]]\nid = \"bench\"\n\
                 target = {{ agent = {{ service = \"web\", select = \"site=bench\" }} }}\n",
                procs::key(dir, name)
            ),
            false,
        )?;
        let line = gateway.wait_line(|l| l.starts_with("p2p: "))?;
        let full = line.trim_start_matches("p2p: ").trim();
        let (addr, peer) = full
            .split_once("/p2p/")
            .ok_or(BenchError::NotReady(name.into(), "p2p line without /p2p/"))?;
        let name = "ingress-agent";
        let agent = procs::start_node(
            bin,
            dir,
            name,
            format!(
                "identity = \"{}\"\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\n\
                 [[hubs]]\npeer = \"{peer}\"\naddrs = [\"{addr}\"]\n\
                 [agent]\ncredential = {{ id = \"agent\", token = \"{AGENT_TOKEN}\" }}\n\
                 labels = {{ site = \"bench\" }}\nservices = {{ web = \"{origin}\" }}\n",
                procs::key(dir, name)
            ),
            false,
        )?;
        let http = SocketAddr::from(([127, 0, 0, 1], port));
        wait_http_ok("gateway → agent", http).await?;
        Ok(Ingress { gateway, agent, http })
    }

    /// CPU seconds of the gateway and the agent so far.
    pub fn cpu(&self) -> f64 {
        self.gateway.cpu_seconds().unwrap_or(0.0) + self.agent.cpu_seconds().unwrap_or(0.0)
    }
}

/// rathole's server and client, as processes.
#[derive(Debug)]
pub struct Rathole {
    /// The server (the public side).
    pub server: Proc,
    /// The client beside the origin.
    pub client: Proc,
    /// The server's public port for the service.
    pub http: SocketAddr,
}

/// `rathole` as the comparison installs it: the pinned version in cargo's
/// install root (`cargo install` without `--root`, so it outlives the
/// target directory: CI's fresh clones reuse it), installed when missing
/// or of another version; `Err` is the reason to print.
pub fn install_rathole() -> Result<PathBuf, String> {
    let bin = cargo_bin_dir().join("rathole");
    if version_of(&bin).as_deref() == Some(RATHOLE_VERSION) {
        return Ok(bin);
    }
    // Only what the comparison runs: both ends and the Noise transport
    // (no TLS, so no OpenSSL to link, no WebSocket, no hot reload). Not
    // `--locked`: rathole 0.5.0's lock file pins `time` 0.3.29, which no
    // longer compiles on current Rust (E0282 in its format parser), so
    // its dependencies resolve to today's compatible releases.
    let args = [
        "install",
        "rathole",
        "--version",
        RATHOLE_VERSION,
        "--no-default-features",
        "--features",
        "server,client,noise",
    ];
    println!("bench: cargo {} (once; takes minutes)", args.join(" "));
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(args)
        .status()
        .map_err(|e| format!("cannot start cargo install: {e}"))?;
    if !status.success() {
        return Err(format!("cargo install rathole {RATHOLE_VERSION} failed ({status})"));
    }
    match version_of(&bin) {
        Some(v) if v == RATHOLE_VERSION => Ok(bin),
        other => Err(format!("{} is {other:?} after cargo install", bin.display())),
    }
}

/// Where `cargo install` puts binaries without `--root`.
fn cargo_bin_dir() -> PathBuf {
    if let Some(root) = std::env::var_os("CARGO_INSTALL_ROOT") {
        return PathBuf::from(root).join("bin");
    }
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        return PathBuf::from(home).join("bin");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cargo").join("bin")
}

/// The version `program --version` prints, if it runs: rathole 0.5 prints
/// its name, then build facts, the version on a `Build Version:` line.
fn version_of(program: &Path) -> Option<String> {
    let out = Command::new(program).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    out.status.success().then(|| version_in(&text)).flatten()
}

/// The version in a `--version` output: a `Build Version:` line's value,
/// else the first line's last word.
fn version_in(text: &str) -> Option<String> {
    let build = text.lines().find_map(|l| l.trim().strip_prefix("Build Version:"));
    let word = build.or_else(|| text.lines().next()?.split_whitespace().last())?;
    Some(word.trim().to_owned()).filter(|w| !w.is_empty())
}

/// A Noise key pair from `rathole --genkey` (base64 private, public).
fn genkey(rathole: &Path) -> Result<(String, String), BenchError> {
    let out = Command::new(rathole)
        .arg("--genkey")
        .output()
        .map_err(|e| BenchError::Io("rathole --genkey".into(), e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_genkey(&text)
        .ok_or(BenchError::NotReady("rathole --genkey".into(), "no key pair printed"))
}

/// Reads `Private Key:\nBASE64\n\nPublic Key:\nBASE64` (rathole 0.5's output).
fn parse_genkey(text: &str) -> Option<(String, String)> {
    let after = |label: &str| {
        let mut lines = text.lines().skip_while(|l| !l.trim().starts_with(label));
        lines.next()?;
        lines.map(str::trim).find(|l| !l.is_empty()).map(str::to_owned)
    };
    Some((after("Private Key")?, after("Public Key")?))
}

impl Rathole {
    /// Starts a rathole server and a client forwarding its service to
    /// `origin`, plain TCP or with Noise ([`RATHOLE_NOISE`]), and waits
    /// until a request goes through.
    pub async fn start(
        rathole: &Path,
        dir: &Path,
        origin: SocketAddr,
        noise: bool,
    ) -> Result<Rathole, BenchError> {
        let tag = if noise { "rathole-noise" } else { "rathole" };
        let control = free_tcp_port()?;
        let port = free_tcp_port()?;
        let token = "meshproxy-bench-rathole";
        let (server_transport, client_transport) = if noise {
            let (private, public) = genkey(rathole)?;
            (
                format!(
                    "[server.transport]\ntype = \"noise\"\n[server.transport.noise]\n\
                     pattern = \"{RATHOLE_NOISE}\"\nlocal_private_key = \"{private}\"\n"
                ),
                format!(
                    "[client.transport]\ntype = \"noise\"\n[client.transport.noise]\n\
                     pattern = \"{RATHOLE_NOISE}\"\nremote_public_key = \"{public}\"\n"
                ),
            )
        } else {
            // Plain TCP (rathole's default transport, TCP_NODELAY on by default).
            (String::new(), String::new())
        };
        let server_toml = format!(
            "[server]\nbind_addr = \"127.0.0.1:{control}\"\n{server_transport}\
             [server.services.web]\ntoken = \"{token}\"\nbind_addr = \"127.0.0.1:{port}\"\n"
        );
        let client_toml = format!(
            "[client]\nremote_addr = \"127.0.0.1:{control}\"\n{client_transport}\
             [client.services.web]\ntoken = \"{token}\"\nlocal_addr = \"{origin}\"\n"
        );
        let server =
            spawn_rathole(rathole, dir, &format!("{tag}-server"), "--server", &server_toml)?;
        let client =
            spawn_rathole(rathole, dir, &format!("{tag}-client"), "--client", &client_toml)?;
        let http = SocketAddr::from(([127, 0, 0, 1], port));
        wait_http_ok(tag, http).await?;
        Ok(Rathole { server, client, http })
    }

    /// CPU seconds of the server and the client so far.
    pub fn cpu(&self) -> f64 {
        self.server.cpu_seconds().unwrap_or(0.0) + self.client.cpu_seconds().unwrap_or(0.0)
    }
}

/// Writes `toml` as `name`'s config and starts `rathole MODE FILE`.
fn spawn_rathole(
    rathole: &Path,
    dir: &Path,
    name: &str,
    mode: &str,
    toml: &str,
) -> Result<Proc, BenchError> {
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(&config, toml).map_err(|e| BenchError::Io(config.display().to_string(), e))?;
    let config = config.display().to_string();
    Proc::spawn(name, rathole, &[mode, &config], &dir.join(format!("{name}.log")), false)
}

/// Polls `GET /` at `addr` until it answers 200 (each try bounded), or
/// fails after [`ROUTE_DEADLINE`].
pub async fn wait_http_ok(what: &str, addr: SocketAddr) -> Result<(), BenchError> {
    let deadline = Instant::now() + ROUTE_DEADLINE;
    let mut last = String::from("no answer");
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(2), status_of(addr)).await {
            Ok(Ok(200)) => return Ok(()),
            Ok(Ok(code)) => last = format!("status {code}"),
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "no answer within 2 s".into(),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(BenchError::Load(format!("{what} never answered 200 in {ROUTE_DEADLINE:?} (last: {last})")))
}

/// The status of `GET /` at `addr` over a fresh connection.
async fn status_of(addr: SocketAddr) -> std::io::Result<u16> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").await?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).await?;
    let code = std::str::from_utf8(head.get(9..12).unwrap_or_default()).unwrap_or_default();
    Ok(code.parse().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_genkey_output_gives_both_keys() {
        let text = "Private Key:\nAAAAprivate=\n\nPublic Key:\nBBBBpublic=\n";
        assert_eq!(parse_genkey(text), Some(("AAAAprivate=".to_owned(), "BBBBpublic=".to_owned())));
        assert_eq!(parse_genkey("Private Key:\nX=\n"), None);
        assert_eq!(parse_genkey(""), None);
    }

    #[test]
    fn the_version_is_read_from_ratholes_build_lines() {
        let text = "rathole \nBuild Timestamp:     2026-12-08T00:02:44Z\n\
                    Build Version:       0.5.0\nCommit SHA:          None\n";
        assert_eq!(version_in(text).as_deref(), Some("0.5.0"));
        assert_eq!(version_in("rathole 0.4.8\n").as_deref(), Some("0.4.8"));
        assert_eq!(version_in(""), None);
    }
}
