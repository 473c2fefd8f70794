//! `meshproxy demo`: a whole mesh in one process on 127.0.0.1 — a hub, two
//! exits, a client and a small web page; an agent beside a small site and a
//! gateway routing `Host: app.demo` to it — that proves itself by fetching the
//! page through the mesh and the site through the gateway, shows the exit
//! policy refusing what it was not told to allow, and prints curl commands for
//! the user to try.
//!
//! Every node is the real thing (libp2p TCP + Noise + Yamux, the same runner
//! as `meshproxy run`), built from the same TOML a user would write; only the
//! identities are fresh and kept in memory, so the demo leaves no files.

use crate::ops::config::FileConfig;
use crate::ops::identity::Identity;
use crate::ops::launch::{self, NetNode};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};

/// What the page says.
pub const PAGE: &str = "Hello from the meshproxy demo: this page reached you through a client, \
                        an exit and libp2p.\n";

/// What the site behind the agent says.
pub const SITE: &str = "Hello from the meshproxy demo site: this page reached you through a \
                        gateway, the mesh and an agent.\n";

/// The host the gateway routes to the agent's site.
pub const SITE_HOST: &str = "app.demo";

/// Largest request head the page server reads.
const MAX_HEAD: usize = 8 * 1024;
/// How long the page server waits for a request head.
const HEAD_DEADLINE: Duration = Duration::from_secs(10);
/// How long the demo waits for its first fetch (exits register first).
const FIRST_FETCH: Duration = Duration::from_secs(20);
/// How long one fetch may take.
const FETCH_DEADLINE: Duration = Duration::from_secs(10);

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The page server could not bind.
    #[error("page server: {0}")]
    Origin(std::io::Error),
    /// A node did not start.
    #[error("{role}: {source}")]
    Node {
        /// Which node.
        role: &'static str,
        /// Why.
        source: Box<launch::RunError>,
    },
    /// A node started without the address the demo needs.
    #[error("{0} has no address")]
    NoAddress(&'static str),
    /// The page could not be fetched through the mesh.
    #[error("fetching the page through the mesh: {0}")]
    Fetch(String),
    /// The exit policy let through what it should have denied.
    #[error("the exit policy did not deny {0} (SOCKS reply {1:#04x})")]
    PolicyNotApplied(SocketAddr, u8),
}

/// A running demo mesh.
#[derive(Debug)]
pub struct Demo {
    /// The page server.
    pub origin: SocketAddr,
    /// The client's SOCKS5 + HTTP CONNECT listener.
    pub proxy: SocketAddr,
    /// The site behind the agent (its service `web`).
    pub site: SocketAddr,
    /// The gateway's public HTTP listener.
    pub ingress: SocketAddr,
    /// The page fetched through the mesh at start.
    pub fetched: String,
    /// The site fetched through the gateway and the agent at start.
    pub published: String,
    /// A destination the exits refused, and the SOCKS reply they gave.
    pub denied: (SocketAddr, u8),
    nodes: Vec<NetNode>,
    servers: Vec<JoinHandle<()>>,
}

fn parse(role: &'static str, toml: &str) -> Result<FileConfig, DemoError> {
    // The demo writes these tables itself; failing to parse one is a bug here.
    FileConfig::parse(toml).map_err(|e| DemoError::Fetch(format!("{role} config: {e}")))
}

async fn start_node(role: &'static str, toml: &str) -> Result<(NetNode, Identity), DemoError> {
    let file = parse(role, toml)?;
    let identity = Identity::generate();
    let seed = rand::random::<u64>();
    let node = launch::start(&file, &identity, seed)
        .await
        .map_err(|e| DemoError::Node { role, source: Box::new(e) })?;
    Ok((node, identity))
}

impl Demo {
    /// Starts the page server and the mesh, then fetches the page through it
    /// and checks that the policy denies a destination it does not allow.
    pub async fn start() -> Result<Demo, DemoError> {
        let listener = TcpListener::bind("127.0.0.1:0").await.map_err(DemoError::Origin)?;
        let origin = listener.local_addr().map_err(DemoError::Origin)?;
        let site_listener = TcpListener::bind("127.0.0.1:0").await.map_err(DemoError::Origin)?;
        let site = site_listener.local_addr().map_err(DemoError::Origin)?;
        let servers = vec![
            tokio::spawn(serve_page(listener, PAGE)),
            tokio::spawn(serve_page(site_listener, SITE)),
        ];
        let (hub, hub_id) = start_node(
            "hub",
            r#"listen = ["/ip4/127.0.0.1/tcp/0"]
[hub]
keys = [
  { id = "demo-exit", token = "demo-exit-token-0123456789", roles = ["exit"], max_registrations = 2 },
  { id = "demo-client", token = "demo-client-token-0123456789" },
  { id = "demo-agent", token = "demo-agent-token-0123456789", roles = ["agent"] },
  { id = "demo-gateway", token = "demo-gateway-token-0123456789", roles = ["gateway"] },
]
"#,
        )
        .await?;
        let hub_addr = hub.p2p_addrs.first().ok_or(DemoError::NoAddress("the hub"))?;
        let hubs =
            format!("[[hubs]]\npeer = \"{}\"\naddrs = [\"{hub_addr}\"]\n", hub_id.peer_id_string());
        let mut nodes = vec![hub];
        for label in ["a", "b"] {
            // Exactly the page's address and port is allowed; DESIGN §6's
            // defaults deny the rest of loopback, private ranges and so on.
            let toml = format!(
                r#"listen = ["/ip4/127.0.0.1/tcp/0"]
{hubs}
[exit]
credential = {{ id = "demo-exit", token = "demo-exit-token-0123456789" }}
labels = ["demo_{label}"]
allow = ["{origin}"]
"#
            );
            nodes.push(start_node("an exit", &toml).await?.0);
        }
        let (client, _) = start_node(
            "the client",
            &format!(
                r#"{hubs}
[client]
credential = {{ id = "demo-client", token = "demo-client-token-0123456789" }}
refresh_ms = 500
[[client.listeners]]
bind = "127.0.0.1:0"
protocol = "both"
"#
            ),
        )
        .await?;
        let proxy = *client.node.listen_addrs.first().ok_or(DemoError::NoAddress("the client"))?;
        nodes.push(client);
        // The agent is told the site's address; nothing else is.
        let (agent, _) = start_node(
            "the agent",
            &format!(
                r#"listen = ["/ip4/127.0.0.1/tcp/0"]
{hubs}
[agent]
credential = {{ id = "demo-agent", token = "demo-agent-token-0123456789" }}
labels = {{ site = "demo" }}
services = {{ web = "{site}" }}
"#
            ),
        )
        .await?;
        nodes.push(agent);
        let (gateway, _) = start_node(
            "the gateway",
            &format!(
                r#"{hubs}
[gateway]
credential = {{ id = "demo-gateway", token = "demo-gateway-token-0123456789" }}
refresh_ms = 500
[[gateway.listeners]]
name = "public"
listen = "127.0.0.1:0"
[[gateway.routes]]
id = "app"
host = "{SITE_HOST}"
path = "/"
target = {{ agent = {{ service = "web", select = "site=demo" }} }}
"#
            ),
        )
        .await?;
        let ingress =
            *gateway.node.gateway_addrs.first().ok_or(DemoError::NoAddress("the gateway"))?;
        nodes.push(gateway);
        let mut demo = Demo {
            origin,
            proxy,
            site,
            ingress,
            fetched: String::new(),
            published: String::new(),
            denied: (proxy, 0),
            nodes,
            servers,
        };
        match demo.prove().await {
            Ok(()) => Ok(demo),
            Err(e) => {
                demo.shutdown().await;
                Err(e)
            }
        }
    }

    /// Fetches the page (retrying while the exits register), then asks for a
    /// destination the policy denies.
    async fn prove(&mut self) -> Result<(), DemoError> {
        let deadline = Instant::now() + FIRST_FETCH;
        let page = loop {
            match fetch_page(self.proxy, self.origin).await {
                Ok(page) => break page,
                Err(e) if Instant::now() >= deadline => return Err(DemoError::Fetch(e)),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        if !page.ends_with(PAGE) {
            return Err(DemoError::Fetch(format!("unexpected answer: {page:?}")));
        }
        self.fetched = page;
        // The gateway answers 503 until its hubs list the agent.
        let site = loop {
            match fetch_published(self.ingress).await {
                Ok(site) if site.starts_with("HTTP/1.1 200") => break site,
                Ok(other) if Instant::now() >= deadline => {
                    return Err(DemoError::Fetch(format!("through the gateway: {other:?}")))
                }
                Err(e) if Instant::now() >= deadline => {
                    return Err(DemoError::Fetch(format!("through the gateway: {e}")))
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        if !site.ends_with(SITE) {
            return Err(DemoError::Fetch(format!("unexpected answer from the gateway: {site:?}")));
        }
        self.published = site;
        // The client's own listener: loopback, and not the allowed port.
        let denied = self.proxy;
        let reply = socks_connect(self.proxy, denied).await.map_err(DemoError::Fetch)?.0;
        if reply != 0x02 {
            return Err(DemoError::PolicyNotApplied(denied, reply));
        }
        self.denied = (denied, reply);
        Ok(())
    }

    /// The curl command that fetches the page through the demo's client.
    pub fn curl_line(&self) -> String {
        format!("curl --socks5-hostname {} http://{}/", self.proxy, self.origin)
    }

    /// The curl command that fetches the site through the gateway and the agent.
    pub fn ingress_curl_line(&self) -> String {
        format!("curl -H 'Host: {SITE_HOST}' http://{}/", self.ingress)
    }

    /// Tells the user what runs and how to try it.
    pub fn print_intro(&self) {
        println!(
            "meshproxy demo: a hub, two exits, a client, an agent and a gateway on 127.0.0.1, \
             all in this process."
        );
        println!(
            "  page server:  http://{}/ (only reachable through the exits' allow rule)",
            self.origin
        );
        println!("  client proxy: {} (SOCKS5 and HTTP CONNECT)", self.proxy);
        println!("  site:         http://{}/ (the agent's service `web`)", self.site);
        println!("  gateway:      http://{}/ (Host: {SITE_HOST} goes to the agent)", self.ingress);
        println!();
        println!("Fetched through the mesh:");
        for line in self.fetched.lines() {
            println!("  | {line}");
        }
        println!("Published through gateway -> mesh -> agent -> site:");
        if let Some(body) = self.published.split("\r\n\r\n").nth(1) {
            for line in body.lines() {
                println!("  | {line}");
            }
        }
        println!(
            "Policy at work: CONNECT {} was refused by the exit (SOCKS reply {:#04x}, not allowed by ruleset).",
            self.denied.0, self.denied.1
        );
        println!();
        println!("Try it from another terminal:");
        println!("{}", self.curl_line());
        println!("curl -p --proxy http://{} http://{}/", self.proxy, self.origin);
        println!("{}", self.ingress_curl_line());
        println!();
        println!("Press Ctrl-C to stop.");
    }

    /// Stops every node and the page servers.
    pub async fn shutdown(self) {
        for n in self.nodes.into_iter().rev() {
            n.node.shutdown().await;
        }
        for s in self.servers {
            s.abort();
        }
    }
}

/// Serves `page` to every GET, one task per connection.
async fn serve_page(listener: TcpListener, page: &'static str) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(async move {
            let _ = timeout(HEAD_DEADLINE, answer(stream, page)).await;
        });
    }
}

async fn answer(mut stream: TcpStream, page: &'static str) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let status = loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&head) {
            Ok(httparse::Status::Complete(_)) if req.method == Some("GET") => break "200 OK",
            Ok(httparse::Status::Complete(_)) => break "405 Method Not Allowed",
            Ok(httparse::Status::Partial) if head.len() < MAX_HEAD => continue,
            Ok(httparse::Status::Partial) => break "431 Request Header Fields Too Large",
            Err(_) => break "400 Bad Request",
        }
    };
    let body = if status.starts_with("200") { page } else { "" };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// SOCKS5 CONNECT (no auth, domain form as `curl --socks5-hostname` sends it).
/// Returns the reply code and the stream.
pub async fn socks_connect(
    proxy: SocketAddr,
    target: SocketAddr,
) -> Result<(u8, TcpStream), String> {
    timeout(FETCH_DEADLINE, async {
        let mut s = TcpStream::connect(proxy).await.map_err(|e| format!("connect {proxy}: {e}"))?;
        let host = target.ip().to_string();
        let len = u8::try_from(host.len()).map_err(|_| "host name too long".to_owned())?;
        let mut req = vec![5, 1, 0, 5, 1, 0, 3, len];
        req.extend_from_slice(host.as_bytes());
        req.extend_from_slice(&target.port().to_be_bytes());
        s.write_all(&req).await.map_err(|e| format!("send: {e}"))?;
        let mut method = [0u8; 2];
        s.read_exact(&mut method).await.map_err(|e| format!("method reply: {e}"))?;
        if method != [5, 0] {
            return Err(format!("method reply {method:?}"));
        }
        // VER REP RSV ATYP, then an address whose length depends on ATYP.
        let mut reply = [0u8; 4];
        s.read_exact(&mut reply).await.map_err(|e| format!("reply: {e}"))?;
        let rest = match reply[3] {
            1 => 4 + 2,
            4 => 16 + 2,
            3 => {
                let mut l = [0u8; 1];
                s.read_exact(&mut l).await.map_err(|e| format!("reply: {e}"))?;
                usize::from(l[0]) + 2
            }
            other => return Err(format!("reply address type {other}")),
        };
        let mut addr = vec![0u8; rest];
        s.read_exact(&mut addr).await.map_err(|e| format!("reply: {e}"))?;
        Ok((reply[1], s))
    })
    .await
    .map_err(|_| "timed out".to_owned())?
}

/// GET / from `origin` through the SOCKS5 proxy; the whole response.
pub async fn fetch_page(proxy: SocketAddr, origin: SocketAddr) -> Result<String, String> {
    let (reply, mut s) = socks_connect(proxy, origin).await?;
    if reply != 0 {
        return Err(format!("SOCKS reply {reply:#04x}"));
    }
    timeout(FETCH_DEADLINE, async {
        let req = format!("GET / HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.map_err(|e| format!("send: {e}"))?;
        let mut body = Vec::new();
        s.read_to_end(&mut body).await.map_err(|e| format!("read: {e}"))?;
        String::from_utf8(body).map_err(|_| "the answer is not UTF-8".to_owned())
    })
    .await
    .map_err(|_| "timed out".to_owned())?
}

/// GET / with `Host: app.demo` from the gateway at `ingress`; the whole response.
pub async fn fetch_published(ingress: SocketAddr) -> Result<String, String> {
    timeout(FETCH_DEADLINE, async {
        let mut s =
            TcpStream::connect(ingress).await.map_err(|e| format!("connect {ingress}: {e}"))?;
        let req = format!("GET / HTTP/1.1\r\nHost: {SITE_HOST}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.map_err(|e| format!("send: {e}"))?;
        let mut body = Vec::new();
        s.read_to_end(&mut body).await.map_err(|e| format!("read: {e}"))?;
        String::from_utf8(body).map_err(|_| "the answer is not UTF-8".to_owned())
    })
    .await
    .map_err(|_| "timed out".to_owned())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn page_server_answers_get_and_refuses_the_rest() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve_page(listener, PAGE));
        let ask = |req: &'static str| async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(req.as_bytes()).await.unwrap();
            let mut out = String::new();
            timeout(Duration::from_secs(5), s.read_to_string(&mut out)).await.unwrap().unwrap();
            out
        };
        let ok = ask("GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK") && ok.ends_with(PAGE), "{ok}");
        let post = ask("POST / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
        let bad = ask("\x00\x01garbage\r\n\r\n").await;
        assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
        server.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_demo_fetches_through_the_mesh_and_shows_a_denial() {
        let demo = timeout(Duration::from_secs(60), Demo::start()).await.unwrap().unwrap();
        assert!(demo.fetched.starts_with("HTTP/1.1 200 OK"), "{}", demo.fetched);
        assert_eq!(demo.denied.1, 0x02);
        assert!(demo.published.ends_with(SITE), "{}", demo.published);
        assert_eq!(
            demo.ingress_curl_line(),
            format!("curl -H 'Host: app.demo' http://127.0.0.1:{}/", demo.ingress.port())
        );
        assert_eq!(
            demo.curl_line(),
            format!(
                "curl --socks5-hostname 127.0.0.1:{} http://127.0.0.1:{}/",
                demo.proxy.port(),
                demo.origin.port()
            )
        );
        // A second fetch works too (the mesh stays up after the proof).
        let again = fetch_page(demo.proxy, demo.origin).await.unwrap();
        assert!(again.ends_with(PAGE));
        let site = fetch_published(demo.ingress).await.unwrap();
        assert!(site.starts_with("HTTP/1.1 200") && site.ends_with(SITE), "{site}");
        demo.shutdown().await;
    }
}
