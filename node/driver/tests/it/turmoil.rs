//! Whole nodes — a hub, an exit and a client, each started from TOML with
//! `app::start_node_with` — as hosts of a seeded turmoil simulation, in
//! simulated time. Apps and origins are turmoil hosts too, speaking SOCKS5 and
//! echo over turmoil TCP; the nodes' client listeners and origin connects go
//! through the [`Sockets`] port, and their peer network is a test adapter
//! whose connections and streams are turmoil TCP connections. This drives the
//! driver's own Tokio glue (listeners, pumps, splices, timers, reconnect
//! loops) deterministically, with partitions and crashes.
//!
//! The adapter ([`SimNet`]) honours the peer-network contract of `p2p/mod.rs`:
//! - a *connection* to a peer is one turmoil TCP connection to the peer's host
//!   (port [`PEER_PORT`]) that carries only keep-alive bytes; it is up while
//!   bytes keep arriving ([`KEEPALIVE`], [`DEAD_AFTER`]; the stand-in for
//!   libp2p's ping) and its end is `PeerDisconnected` on both sides;
//! - each *stream* is a turmoil TCP connection of its own, opened with a tiny
//!   header (kind, dialer, dialee, protocol) and accepted only while the two
//!   peers are connected; when the connection dies, its streams are reset
//!   (as closing a yamux connection resets its streams).
//!
//! Resets: turmoil TCP has no way to abort a connection at will (it sends RST
//! only when a socket is dropped with unread data; a dropped socket otherwise
//! sends FIN). So every simulated TCP connection here — peer streams, app and
//! origin connections — is a [`Wire`]: data goes in small frames, and a
//! `Wire` dropped without a clean end both ways sends a *reset frame*, which
//! the far end reads as `ConnectionReset`. That is the test's own model of
//! RST, standing in for `TcpIo`'s zero-linger reset and yamux's stream reset.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers fail the test by panicking

use bytes::{Buf, BufMut, BytesMut};
use meshproxy::ops::assemble::{start_node_with, EventSink, NetworkStarter};
use meshproxy::ops::config::FileConfig;
use meshproxy::ops::identity::Identity;
use meshproxy::p2p::{BoxStream, NetCommand, NetEvent};
use meshproxy::runtime::runner::{RunnerMsg, RunnerStatus};
use meshproxy::runtime::sockets::{Acceptor, BoxAcceptor, BoxFuture, Sockets};
use meshproxy_core::ids::{ConnId, PeerId};
use meshproxy_core::io::{Path, Protocol, ResolveError};
use meshproxy_core::record::PeerAddr;
use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep, timeout, Instant};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use turmoil::net::{TcpListener, TcpStream};
use turmoil::Sim;

/// Where every node's peer network listens.
const PEER_PORT: u16 = 7000;
/// The client's SOCKS5 listener.
const SOCKS_PORT: u16 = 1080;
/// The origin host's streaming echo.
const ECHO_PORT: u16 = 9000;
/// The origin host's "read everything, then answer" echo (for half-close).
const REPLY_AFTER_EOF_PORT: u16 = 9001;
/// Keep-alive bytes on a peer connection, each way.
const KEEPALIVE: Duration = Duration::from_millis(500);
/// A peer connection with nothing read for this long is dead.
const DEAD_AFTER: Duration = Duration::from_millis(2000);
/// Transport-level bound on a connect plus header exchange (like a TCP/Noise
/// handshake timeout; the core's own deadlines are shorter).
const TRANSPORT_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Wire: turmoil TCP with a reset signal.

const FRAME_DATA: u8 = 0;
const FRAME_RESET: u8 = 1;
const FRAME_HEAD: usize = 5;
const MAX_FRAME: usize = 16 * 1024;

/// A simulated TCP connection that, like `TcpIo`, is reset when dropped
/// without a clean end both ways; optionally tied to a peer connection whose
/// death resets it.
struct Wire {
    inner: Option<TcpStream>,
    /// Received bytes not yet parsed or delivered.
    inbuf: BytesMut,
    /// Payload bytes of the current data frame still to deliver.
    data_left: usize,
    /// The peer's FIN was read.
    inner_eof: bool,
    /// Framed bytes not yet handed to turmoil.
    out: BytesMut,
    read_eof: bool,
    write_shut: bool,
    /// The peer reset it (reset frame read).
    reset: bool,
    /// The peer connection under it died.
    link_down: bool,
    link: Option<LinkWatch>,
}

/// Two waiters (read side, write side) on the peer connection's end.
struct LinkWatch {
    read: Pin<Box<WaitForCancellationFutureOwned>>,
    write: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl Wire {
    fn new(inner: TcpStream, link: Option<CancellationToken>) -> Wire {
        Wire {
            inner: Some(inner),
            inbuf: BytesMut::new(),
            data_left: 0,
            inner_eof: false,
            out: BytesMut::new(),
            read_eof: false,
            write_shut: false,
            reset: false,
            link_down: false,
            link: link.map(|t| LinkWatch {
                read: Box::pin(t.clone().cancelled_owned()),
                write: Box::pin(t.cancelled_owned()),
            }),
        }
    }

    fn tcp(&mut self) -> io::Result<&mut TcpStream> {
        self.inner.as_mut().ok_or_else(|| io::ErrorKind::NotConnected.into())
    }

    /// Whether the stream is reset: by the peer, or because the peer
    /// connection under it died.
    fn link_dead(&mut self, cx: &mut Context<'_>, reading: bool) -> bool {
        if let Some(link) = &mut self.link {
            let waiter = if reading { &mut link.read } else { &mut link.write };
            if waiter.as_mut().poll(cx).is_ready() {
                self.link_down = true;
            }
        }
        self.reset || self.link_down
    }

    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            let tcp = self.inner.as_mut().ok_or(io::ErrorKind::NotConnected)?;
            let n = ready!(Pin::new(tcp).poll_write(cx, &self.out))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out.advance(n);
        }
        Poll::Ready(Ok(()))
    }
}

fn reset_error() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "reset by peer")
}

impl Drop for Wire {
    fn drop(&mut self) {
        let clean = self.read_eof && self.write_shut;
        if clean || self.reset || !turmoil::in_simulation() {
            return;
        }
        let Some(tcp) = self.inner.take() else { return };
        // The reset frame follows whatever is still queued (frames must stay whole).
        let mut bytes = std::mem::take(&mut self.out);
        bytes.put_u8(FRAME_RESET);
        bytes.put_u32(0);
        if tcp.try_write(&bytes).ok() == Some(bytes.len()) {
            return;
        }
        // Send buffer full: finish from a task, then drop.
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(async move {
                let mut tcp = tcp;
                let _ = tcp.write_all(&bytes).await;
            });
        }
    }
}

impl AsyncRead for Wire {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.link_dead(cx, true) {
            return Poll::Ready(Err(reset_error()));
        }
        if buf.remaining() == 0 || this.read_eof {
            return Poll::Ready(Ok(()));
        }
        loop {
            if this.data_left > 0 && !this.inbuf.is_empty() {
                let n = this.data_left.min(this.inbuf.len()).min(buf.remaining());
                buf.put_slice(&this.inbuf[..n]);
                this.inbuf.advance(n);
                this.data_left -= n;
                return Poll::Ready(Ok(()));
            }
            if this.data_left == 0 && this.inbuf.len() >= FRAME_HEAD {
                let tag = this.inbuf.get_u8();
                let len = this.inbuf.get_u32() as usize;
                match tag {
                    FRAME_DATA if len <= MAX_FRAME => this.data_left = len,
                    FRAME_RESET => {
                        this.reset = true;
                        return Poll::Ready(Err(reset_error()));
                    }
                    _ => return Poll::Ready(Err(io::ErrorKind::InvalidData.into())),
                }
                continue;
            }
            if this.inner_eof {
                if this.data_left == 0 && this.inbuf.is_empty() {
                    this.read_eof = true;
                    return Poll::Ready(Ok(()));
                }
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
            let mut scratch = [0u8; 8 * 1024];
            let mut rb = ReadBuf::new(&mut scratch);
            let tcp = this.tcp()?;
            ready!(Pin::new(tcp).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                this.inner_eof = true;
            } else {
                this.inbuf.extend_from_slice(rb.filled());
            }
        }
    }
}

impl AsyncWrite for Wire {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.link_dead(cx, false) {
            return Poll::Ready(Err(reset_error()));
        }
        ready!(this.poll_drain(cx))?;
        let n = buf.len().min(MAX_FRAME);
        if n == 0 {
            return Poll::Ready(Ok(0));
        }
        this.out.put_u8(FRAME_DATA);
        this.out.put_u32(n as u32);
        this.out.extend_from_slice(&buf[..n]);
        // Hand it over now if turmoil takes it; otherwise flush finishes it.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.link_dead(cx, false) {
            return Poll::Ready(Err(reset_error()));
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(this.tcp()?).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.link_dead(cx, false) {
            return Poll::Ready(Err(reset_error()));
        }
        if this.write_shut {
            return Poll::Ready(Ok(()));
        }
        ready!(this.poll_drain(cx))?;
        ready!(Pin::new(this.tcp()?).poll_shutdown(cx))?;
        this.write_shut = true;
        Poll::Ready(Ok(()))
    }
}

// ---------------------------------------------------------------------------
// The Sockets port over turmoil.

/// Client listeners, origin connects and name lookups in the simulation.
struct SimSockets;

struct SimAcceptor(TcpListener);

impl Acceptor for SimAcceptor {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }

    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxStream, SocketAddr)>> {
        Box::pin(async move {
            let (s, source) = self.0.accept().await?;
            Ok((Box::new(Wire::new(s, None)) as BoxStream, source))
        })
    }
}

impl Sockets for SimSockets {
    fn bind(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<BoxAcceptor>> {
        Box::pin(async move {
            let l = TcpListener::bind(addr).await?;
            Ok(Box::new(SimAcceptor(l)) as BoxAcceptor)
        })
    }

    fn connect(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<BoxStream>> {
        Box::pin(async move {
            let s = TcpStream::connect(addr).await?;
            Ok(Box::new(Wire::new(s, None)) as BoxStream)
        })
    }

    fn resolve(&self, name: String) -> BoxFuture<'static, Result<Vec<IpAddr>, ResolveError>> {
        Box::pin(async move {
            match turmoil::net::lookup_host((name.as_str(), 0)).await {
                Ok(addrs) => Ok(addrs.map(|a| a.ip()).collect()),
                Err(_) => Err(ResolveError::NotFound),
            }
        })
    }
}

// ---------------------------------------------------------------------------
// The peer network adapter over turmoil TCP.

const KIND_CONN: u8 = 0;
const KIND_STREAM: u8 = 1;

/// A live peer connection.
struct Link {
    conn: ConnId,
    /// The peer's host (streams are opened to it).
    ip: IpAddr,
    /// Cancelled when the connection ends: resets its streams.
    down: CancellationToken,
}

/// One node's peer network.
#[derive(Clone)]
struct SimNet {
    me: PeerId,
    events: Arc<dyn Fn(NetEvent) + Send + Sync>,
    links: Arc<Mutex<BTreeMap<PeerId, Link>>>,
    next_conn: Arc<AtomicU64>,
}

/// What opens a peer connection or stream.
struct Header {
    kind: u8,
    from: PeerId,
    to: PeerId,
    protocol: Protocol,
}

fn encode_header(h: &Header) -> Vec<u8> {
    let mut out = vec![h.kind];
    for p in [&h.from, &h.to] {
        out.push(p.as_bytes().len() as u8);
        out.extend_from_slice(p.as_bytes());
    }
    out.push(match h.protocol {
        Protocol::Proxy => 0,
        Protocol::Hub => 1,
        Protocol::Ingress => 2,
    });
    out
}

async fn read_peer(s: &mut TcpStream) -> io::Result<PeerId> {
    let len = usize::from(s.read_u8().await?);
    if len > meshproxy_core::ids::MAX_PEER_ID_LEN {
        return Err(io::ErrorKind::InvalidData.into());
    }
    let mut b = vec![0u8; len];
    s.read_exact(&mut b).await?;
    PeerId::from_bytes(&b).ok_or_else(|| io::ErrorKind::InvalidData.into())
}

async fn read_header(s: &mut TcpStream) -> io::Result<Header> {
    let kind = s.read_u8().await?;
    let from = read_peer(s).await?;
    let to = read_peer(s).await?;
    let protocol = match s.read_u8().await? {
        0 => Protocol::Proxy,
        1 => Protocol::Hub,
        2 => Protocol::Ingress,
        _ => return Err(io::ErrorKind::InvalidData.into()),
    };
    Ok(Header { kind, from, to, protocol })
}

/// Sends the header and waits for the accept byte.
async fn open_wire(addr: (IpAddr, u16), header: &Header) -> io::Result<TcpStream> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(&encode_header(header)).await?;
    match s.read_u8().await? {
        1 => Ok(s),
        _ => Err(io::ErrorKind::ConnectionRefused.into()),
    }
}

impl SimNet {
    fn emit(&self, event: NetEvent) {
        (self.events)(event);
    }

    fn link(&self, peer: &PeerId) -> Option<(ConnId, IpAddr, CancellationToken)> {
        let links = self.links.lock().unwrap();
        links.get(peer).map(|l| (l.conn, l.ip, l.down.clone()))
    }

    async fn commands(self, mut rx: mpsc::Receiver<NetCommand>) {
        while let Some(cmd) = rx.recv().await {
            let net = self.clone();
            match cmd {
                // One kind of path in this network: a relayed dial goes direct.
                NetCommand::Dial { peer, addrs, .. } => {
                    tokio::spawn(net.dial(peer, addrs));
                }
                NetCommand::Reserve { hub } => net.emit(NetEvent::ReservationFailed { hub }),
                NetCommand::Unreserve { .. }
                | NetCommand::Admit { .. }
                | NetCommand::Revoke { .. } => {}
                NetCommand::HolePunch { peer } => net.emit(NetEvent::HolePunchFailed { peer }),
                NetCommand::OpenStream { stream, peer, protocol, .. } => {
                    tokio::spawn(async move {
                        let Some((_, ip, down)) = net.link(&peer) else {
                            net.emit(NetEvent::StreamRefused { stream });
                            return;
                        };
                        let header = Header { kind: KIND_STREAM, from: net.me, to: peer, protocol };
                        let opened =
                            timeout(TRANSPORT_TIMEOUT, open_wire((ip, PEER_PORT), &header));
                        match opened.await {
                            Ok(Ok(s)) if !down.is_cancelled() => {
                                let io = Box::new(Wire::new(s, Some(down)));
                                net.emit(NetEvent::StreamOpened { stream, io });
                            }
                            _ => net.emit(NetEvent::StreamRefused { stream }),
                        }
                    });
                }
            }
        }
    }

    async fn dial(self, peer: PeerId, addrs: Vec<PeerAddr>) {
        if let Some((conn, ..)) = self.link(&peer) {
            self.emit(NetEvent::PeerConnected { peer, conn, path: Path::Direct, limit: None });
            return;
        }
        let header = Header { kind: KIND_CONN, from: self.me, to: peer, protocol: Protocol::Hub };
        for addr in addrs {
            let host = String::from_utf8_lossy(&addr.0).into_owned();
            let Ok(ip) = turmoil::net::lookup_host((host.as_str(), 0)).await.map(|mut a| a.next())
            else {
                continue;
            };
            let Some(ip) = ip.map(|a| a.ip()) else { continue };
            if let Ok(Ok(s)) = timeout(TRANSPORT_TIMEOUT, open_wire((ip, PEER_PORT), &header)).await
            {
                self.link_up(peer, ip, s);
                return;
            }
        }
        self.emit(NetEvent::DialFailed { peer });
    }

    /// Registers a new connection to `peer` (replacing an older one) and keeps it alive.
    fn link_up(&self, peer: PeerId, ip: IpAddr, s: TcpStream) {
        let conn = ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed) + 1);
        let down = CancellationToken::new();
        let old = self.links.lock().unwrap().insert(peer, Link { conn, ip, down: down.clone() });
        if let Some(old) = old {
            old.down.cancel();
            self.emit(NetEvent::PeerDisconnected { peer, conn: old.conn });
        }
        self.emit(NetEvent::PeerConnected { peer, conn, path: Path::Direct, limit: None });
        tokio::spawn(self.clone().keep_alive(peer, conn, down, s));
    }

    fn link_down(&self, peer: PeerId, conn: ConnId) {
        let removed = {
            let mut links = self.links.lock().unwrap();
            if links.get(&peer).is_some_and(|l| l.conn == conn) {
                links.remove(&peer)
            } else {
                None
            }
        };
        if let Some(l) = removed {
            l.down.cancel();
            self.emit(NetEvent::PeerDisconnected { peer, conn });
        }
    }

    /// Sends keep-alive bytes and declares the connection dead when the peer
    /// goes quiet, ends it, or it is replaced.
    async fn keep_alive(self, peer: PeerId, conn: ConnId, down: CancellationToken, s: TcpStream) {
        let (mut r, mut w) = s.into_split();
        let mut tick = tokio::time::interval(KEEPALIVE);
        let mut deadline = Instant::now() + DEAD_AFTER;
        let mut byte = [0u8; 1];
        loop {
            tokio::select! {
                biased;
                () = down.cancelled() => break,
                read = r.read(&mut byte) => match read {
                    Ok(1) => deadline = Instant::now() + DEAD_AFTER,
                    _ => break,
                },
                () = tokio::time::sleep_until(deadline) => break,
                _ = tick.tick() => {
                    if w.write_all(&[0]).await.is_err() {
                        break;
                    }
                }
            }
        }
        self.link_down(peer, conn);
    }

    async fn accept_loop(self, listener: TcpListener) {
        while let Ok((s, source)) = listener.accept().await {
            tokio::spawn(self.clone().inbound(s, source.ip()));
        }
    }

    async fn inbound(self, mut s: TcpStream, ip: IpAddr) {
        let Ok(Ok(h)) = timeout(TRANSPORT_TIMEOUT, read_header(&mut s)).await else { return };
        if h.to != self.me {
            let _ = s.write_all(&[0]).await;
            return;
        }
        match h.kind {
            KIND_CONN => {
                if s.write_all(&[1]).await.is_ok() {
                    self.link_up(h.from, ip, s);
                }
            }
            _ => {
                // Streams ride on a connection: none, no stream.
                let Some((_, _, down)) = self.link(&h.from) else {
                    let _ = s.write_all(&[0]).await;
                    return;
                };
                if s.write_all(&[1]).await.is_ok() {
                    let io = Box::new(Wire::new(s, Some(down)));
                    self.emit(NetEvent::InboundStream { peer: h.from, protocol: h.protocol, io });
                }
            }
        }
    }
}

/// Binds the peer listener now (so early dials are not refused) and returns
/// the network for `start_node_with`.
async fn sim_network(me: PeerId) -> io::Result<NetworkStarter> {
    let listener = TcpListener::bind(("0.0.0.0", PEER_PORT)).await?;
    Ok(Box::new(move |sink: EventSink| {
        let net = SimNet {
            me,
            events: Arc::from(sink),
            links: Arc::default(),
            next_conn: Arc::default(),
        };
        tokio::spawn(net.clone().accept_loop(listener));
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(net.commands(rx));
        Ok(tx)
    }))
}

// ---------------------------------------------------------------------------
// The world: nodes, origin, registry.

/// The runners of the running nodes, by host name (re-published on restart).
#[derive(Clone, Default)]
struct Registry(Arc<Mutex<BTreeMap<&'static str, mpsc::Sender<RunnerMsg>>>>);

impl Registry {
    /// The node's status; `None` while it is down or not yet started.
    async fn status(&self, host: &str) -> Option<RunnerStatus> {
        let tx = self.0.lock().unwrap().get(host).cloned()?;
        let (reply, answer) = oneshot::channel();
        tx.send(RunnerMsg::Status(reply)).await.ok()?;
        answer.await.ok()
    }

    /// Polls `host`'s status until `ok` holds; panics after `within` (simulated).
    async fn wait(&self, host: &str, within: Duration, ok: impl Fn(&RunnerStatus) -> bool) {
        let deadline = Instant::now() + within;
        loop {
            if self.status(host).await.is_some_and(|s| ok(&s)) {
                return;
            }
            assert!(Instant::now() < deadline, "{host}: condition not reached in {within:?}");
            sleep(Duration::from_millis(50)).await;
        }
    }
}

const HUB: u8 = 1;
const EXIT: u8 = 2;
const CLIENT: u8 = 3;

fn identity(secret: u8) -> Identity {
    Identity::from_secret([secret; 32])
}

/// Peer addresses are turmoil host names.
fn host_addr(s: &str) -> Result<PeerAddr, String> {
    Ok(PeerAddr(s.as_bytes().to_vec()))
}

fn hubs_toml() -> String {
    format!("[[hubs]]\npeer = \"{}\"\naddrs = [\"hub\"]\n", identity(HUB).peer_id_string())
}

fn hub_toml() -> String {
    r#"[hub]
keys = [{ id = "exit", token = "t-exit-token-0123456789", roles = ["exit"], max_registrations = 4 }, { id = "client", token = "t-client-token-01234567" }]
"#
    .to_string()
}

fn exit_toml(timeouts: &str) -> String {
    format!(
        r#"{hubs}
[timeouts]
{timeouts}
[exit]
credential = {{ id = "exit", token = "t-exit-token-0123456789" }}
advertise = ["exit"]
allow = ["192.168.0.0/16"]
"#,
        hubs = hubs_toml()
    )
}

fn client_toml(timeouts: &str) -> String {
    format!(
        r#"{hubs}
[timeouts]
{timeouts}
[client]
credential = {{ id = "client", token = "t-client-token-01234567" }}
refresh_ms = 500
[[client.listeners]]
bind = "0.0.0.0:{SOCKS_PORT}"
protocol = "socks5"
"#,
        hubs = hubs_toml()
    )
}

/// A node's software: start it from TOML, publish its runner, run until crashed.
async fn run_node(
    name: &'static str,
    toml: String,
    secret: u8,
    registry: Registry,
) -> turmoil::Result {
    let file = FileConfig::parse(&toml)?;
    let id = identity(secret);
    let network = sim_network(id.peer_id()).await?;
    let node =
        start_node_with(&file, &id, u64::from(secret), &host_addr, network, Arc::new(SimSockets))
            .await?;
    registry.0.lock().unwrap().insert(name, node.runner());
    std::future::pending::<()>().await;
    drop(node);
    Ok(())
}

/// Serves both echoes: streaming, and "everything after EOF, then EOF".
async fn run_origin() -> turmoil::Result {
    let echo = TcpListener::bind(("0.0.0.0", ECHO_PORT)).await?;
    let after_eof = TcpListener::bind(("0.0.0.0", REPLY_AFTER_EOF_PORT)).await?;
    tokio::spawn(async move {
        while let Ok((s, _)) = after_eof.accept().await {
            tokio::spawn(async move {
                let mut s = Wire::new(s, None);
                let mut all = Vec::new();
                if s.read_to_end(&mut all).await.is_ok() {
                    let _ = s.write_all(&all).await;
                    let _ = s.shutdown().await;
                }
            });
        }
    });
    while let Ok((s, _)) = echo.accept().await {
        tokio::spawn(async move {
            let mut s = Wire::new(s, None);
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) => {
                        let _ = s.shutdown().await;
                        return;
                    }
                    Ok(n) => {
                        if s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
        });
    }
    Ok(())
}

/// Log lines carry the simulated time.
struct SimClock;

impl tracing_subscriber::fmt::time::FormatTime for SimClock {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        write!(w, "{:?}", turmoil::sim_elapsed().unwrap_or_default())
    }
}

/// A seeded simulation with hub, exit, client and origin hosts; `timeouts`
/// is the `[timeouts]` table of the exit and the client.
fn world(seed: u64, limit: Duration, timeouts: &str) -> (Sim<'static>, Registry) {
    // `MESHPROXY_SIM_SEED=N` replays every test under another seed.
    let seed =
        std::env::var("MESHPROXY_SIM_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(seed);
    // `RUST_LOG=meshproxy=debug` shows what the nodes do.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_timer(SimClock)
        .with_ansi(false)
        .with_test_writer()
        .try_init();
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .simulation_duration(limit)
        .max_message_latency(Duration::from_millis(20))
        .build();
    let registry = Registry::default();
    let nodes = [
        ("hub", hub_toml(), HUB),
        ("exit", exit_toml(timeouts), EXIT),
        ("client", client_toml(timeouts), CLIENT),
    ];
    for (name, toml, secret) in nodes {
        let registry = registry.clone();
        sim.host(name, move || run_node(name, toml.clone(), secret, registry.clone()));
    }
    sim.host("origin", run_origin);
    (sim, registry)
}

// ---------------------------------------------------------------------------
// Apps.

/// Target of a SOCKS5 CONNECT.
enum Target<'a> {
    Name(&'a str, u16),
    Ip(IpAddr, u16),
}

/// SOCKS5 CONNECT through the client; the reply code and the connection.
async fn socks_connect(target: Target<'_>) -> (u8, Wire) {
    let s = TcpStream::connect(("client", SOCKS_PORT)).await.expect("the listener is up");
    let mut app = Wire::new(s, None);
    let mut req = vec![5, 1, 0, 5, 1, 0];
    match target {
        Target::Name(name, port) => {
            req.push(3);
            req.push(name.len() as u8);
            req.extend_from_slice(name.as_bytes());
            req.extend_from_slice(&port.to_be_bytes());
        }
        Target::Ip(IpAddr::V4(ip), port) => {
            req.push(1);
            req.extend_from_slice(&ip.octets());
            req.extend_from_slice(&port.to_be_bytes());
        }
        Target::Ip(IpAddr::V6(_), _) => panic!("the simulation is IPv4"),
    }
    app.write_all(&req).await.unwrap();
    let mut head = [0u8; 6];
    app.read_exact(&mut head).await.expect("a SOCKS5 reply");
    assert_eq!(&head[..2], &[5, 0], "method selection");
    assert_eq!(head[2], 5, "reply version");
    let rest = match head[5] {
        1 => 4 + 2,
        4 => 16 + 2,
        other => panic!("unexpected bound address type {other}"),
    };
    let mut bound = vec![0u8; rest];
    app.read_exact(&mut bound).await.unwrap();
    (head[3], app)
}

fn payload(len: usize, salt: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_add(salt).wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// Writes `data`, shuts down, and returns everything read until EOF (concurrently).
async fn exchange(app: Wire, data: &[u8]) -> io::Result<Vec<u8>> {
    let (mut r, mut w) = tokio::io::split(app);
    let send = async {
        w.write_all(data).await?;
        w.shutdown().await
    };
    let mut got = Vec::new();
    let recv = r.read_to_end(&mut got);
    let (sent, read) = tokio::join!(send, recv);
    sent?;
    read?;
    Ok(got)
}

async fn mesh_ready(registry: &Registry) {
    registry.wait("exit", Duration::from_secs(10), |s| s.registered_hubs == 1).await;
    registry.wait("client", Duration::from_secs(10), |s| s.known_exits == 1).await;
}

async fn sessions_end(registry: &Registry) {
    for host in ["client", "exit"] {
        registry.wait(host, Duration::from_secs(10), |s| s.resources.sessions == 0).await;
    }
}

// ---------------------------------------------------------------------------
// Tests.

/// (a) SOCKS5 app → client → exit → echo origin, byte for byte both ways,
/// with the origin named (the exit resolves it through the sockets port).
#[test]
fn socks5_app_reaches_the_echo_origin_across_hosts() {
    let (mut sim, registry) = world(1, Duration::from_secs(60), "");
    sim.client("app", async move {
        mesh_ready(&registry).await;
        let (code, app) = socks_connect(Target::Name("origin", ECHO_PORT)).await;
        assert_eq!(code, 0, "SOCKS5 success");
        let data = payload(200 * 1024, 1);
        let echoed = exchange(app, &data).await?;
        assert!(
            echoed == data,
            "echoed {} bytes, differing from the {} sent",
            echoed.len(),
            200 * 1024
        );
        sessions_end(&registry).await;
        // A name the simulated DNS does not know: the exit reports it.
        let (code, _app) = socks_connect(Target::Name("nowhere", ECHO_PORT)).await;
        assert_eq!(code, 4, "an unknown name is host unreachable");
        Ok(())
    });
    sim.run().unwrap();
}

/// (b) The app shuts down its write side; the origin sees EOF only then and
/// answers; the answer still reaches the app, followed by a clean EOF.
#[test]
fn half_close_propagates_and_the_other_direction_keeps_flowing() {
    let (mut sim, registry) = world(2, Duration::from_secs(60), "");
    sim.client("app", async move {
        mesh_ready(&registry).await;
        let origin = turmoil::lookup("origin");
        let (code, app) = socks_connect(Target::Ip(origin, REPLY_AFTER_EOF_PORT)).await;
        assert_eq!(code, 0);
        let data = payload(50 * 1024, 2);
        // `exchange` fails on a reset: the answer must end in a clean EOF.
        let answer = exchange(app, &data).await?;
        assert!(answer == data, "got {} bytes back", answer.len());
        sessions_end(&registry).await;
        Ok(())
    });
    sim.run().unwrap();
}

/// (c) Timers in simulated time: the handshake deadline closes an app that
/// sends nothing, and the splice idle timeout resets an idle session.
#[test]
fn handshake_deadline_and_splice_idle_timeout_fire_in_simulated_time() {
    let (mut sim, registry) =
        world(3, Duration::from_secs(60), "handshake_ms = 2000\nidle_ms = 3000");
    sim.client("app", async move {
        mesh_ready(&registry).await;

        // Connects, says nothing.
        let s = TcpStream::connect(("client", SOCKS_PORT)).await?;
        let mut silent = Wire::new(s, None);
        let started = Instant::now();
        let mut buf = [0u8; 16];
        let ended = timeout(Duration::from_secs(30), silent.read(&mut buf)).await?;
        let took = started.elapsed();
        assert!(!matches!(ended, Ok(n) if n > 0), "no bytes for a silent app: {ended:?}");
        assert!(
            took >= Duration::from_millis(2000) && took < Duration::from_millis(2200),
            "the handshake deadline is 2 s, the app was dropped after {took:?}"
        );
        registry.wait("client", Duration::from_secs(1), |s| s.resources.sessions == 0).await;
        println!("silent app dropped after {took:?} (handshake_ms = 2000)");

        // One exchange, then silence: both splices give up after 3 s.
        let origin = turmoil::lookup("origin");
        let (code, mut app) = socks_connect(Target::Ip(origin, ECHO_PORT)).await;
        assert_eq!(code, 0);
        app.write_all(b"ping").await?;
        let mut pong = [0u8; 4];
        app.read_exact(&mut pong).await?;
        assert_eq!(&pong, b"ping");
        let quiet_since = Instant::now();
        let ended = timeout(Duration::from_secs(30), app.read(&mut buf)).await?;
        let took = quiet_since.elapsed();
        let err = ended.expect_err("an idle timeout is an abort, not a clean end");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
        assert!(
            took >= Duration::from_millis(2900) && took < Duration::from_millis(3200),
            "the idle timeout is 3 s, the session ended after {took:?} of silence"
        );
        println!("idle session reset after {took:?} of silence (idle_ms = 3000)");
        sessions_end(&registry).await;
        Ok(())
    });
    sim.run().unwrap();
}

/// (d) A partition between exit and hub: the exit's hub link notices, and
/// after the repair it reconnects and registers again; a new app connection
/// then succeeds.
#[test]
fn exit_reregisters_after_a_partition_heals() {
    let (mut sim, registry) =
        world(4, Duration::from_secs(120), "dial_ms = 1000\nhub_request_ms = 1000");
    sim.client("app", async move {
        mesh_ready(&registry).await;
        turmoil::partition("exit", "hub");
        let cut = Instant::now();
        registry.wait("exit", Duration::from_secs(20), |s| s.registered_hubs == 0).await;
        let noticed = cut.elapsed();
        // Stays unregistered while the partition lasts (the redials fail).
        sleep(Duration::from_secs(5)).await;
        assert_eq!(registry.status("exit").await.unwrap().registered_hubs, 0);
        turmoil::repair("exit", "hub");
        let healed = Instant::now();
        registry.wait("exit", Duration::from_secs(30), |s| s.registered_hubs == 1).await;
        let back = healed.elapsed();
        registry.wait("client", Duration::from_secs(10), |s| s.known_exits == 1).await;
        let (code, app) = socks_connect(Target::Ip(turmoil::lookup("origin"), ECHO_PORT)).await;
        assert_eq!(code, 0, "a new connection after the repair succeeds");
        let data = payload(4096, 4);
        assert!(exchange(app, &data).await? == data);
        println!("partition noticed after {noticed:?}; registered again {back:?} after repair");
        Ok(())
    });
    sim.run().unwrap();
}

/// (e) The exit host crashes: the client's next connection gets a SOCKS5
/// error reply within the setup budget instead of hanging; after the exit is
/// restarted (bounced) and registers again, connections succeed again.
#[test]
fn exit_crash_gives_a_prompt_socks_error_and_a_restart_recovers() {
    let timeouts = "dial_ms = 1000\nattempt_ms = 2000\nsetup_budget_ms = 4000";
    let (mut sim, registry) = world(5, Duration::from_secs(120), timeouts);
    let crash = Arc::new(AtomicBool::new(false));
    let bounce = Arc::new(AtomicBool::new(false));
    let (crash_req, bounce_req) = (crash.clone(), bounce.clone());
    sim.client("app", async move {
        mesh_ready(&registry).await;
        crash_req.store(true, Ordering::SeqCst);
        // Give the simulation a step to carry it out.
        sleep(Duration::from_millis(10)).await;
        assert!(registry.status("exit").await.is_none(), "the exit is down");
        let started = Instant::now();
        let (code, _app) = socks_connect(Target::Ip(turmoil::lookup("origin"), ECHO_PORT)).await;
        let took = started.elapsed();
        assert_ne!(code, 0, "no exit: the connection must fail");
        // One attempt, ended by the 1 s dial deadline (turmoil holds the SYN to a
        // crashed host: nothing answers), then the core's 5 s wait for another
        // usable exit (`NO_EXIT_WAIT` in core/src/client.rs) — well before the
        // session budget (handshake 10 s + setup 4 s) and nowhere near a hang.
        assert!(
            took >= Duration::from_secs(1) && took < Duration::from_millis(6500),
            "the error reply took {took:?}"
        );
        println!("SOCKS5 reply {code:#04x} after {took:?} with the exit crashed");

        bounce_req.store(true, Ordering::SeqCst);
        mesh_ready(&registry).await;
        let (code, app) = socks_connect(Target::Ip(turmoil::lookup("origin"), ECHO_PORT)).await;
        assert_eq!(code, 0, "the restarted exit serves again");
        let data = payload(4096, 5);
        assert!(exchange(app, &data).await? == data);
        Ok(())
    });
    while !sim.step().unwrap() {
        if crash.swap(false, Ordering::SeqCst) {
            sim.crash("exit");
        }
        if bounce.swap(false, Ordering::SeqCst) {
            sim.bounce("exit");
        }
    }
}
