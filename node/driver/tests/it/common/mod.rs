//! Shared test fixtures: an in-memory peer network and small origins.
#![allow(clippy::unwrap_used, dead_code)]

pub mod e2e;
pub mod live;

use meshproxy::ops::assemble::{event_sink, EventSink, NetworkStarter};
use meshproxy::p2p::{NetCommand, NetEvent};
use meshproxy::runtime::runner::{NodeRunner, RunnerMsg, RunnerStatus};
use meshproxy_core::admission::{AdmissionKey, Credential, RoleSet};
use meshproxy_core::config::DEFAULT_TICKET_LIFETIME;
use meshproxy_core::config::{ExitConfig, HubConfig, HubContact, Limits, NodeConfig, Timeouts};
use meshproxy_core::directory::DirectoryConfig;
use meshproxy_core::ids::{ConnId, PeerId};
use meshproxy_core::io::Path;
use meshproxy_core::policy::ExitPolicyConfig;
use meshproxy_core::record::{Attrs, PeerAddr};
use meshproxy_core::ticket::TicketSigner;
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

type Sink = Arc<dyn Fn(NetEvent) + Send + Sync>;

/// Every node's event sink, by peer: the fake network's routing table.
/// Peer streams are in-memory duplex pipes.
#[derive(Clone, Default)]
pub struct FakeNet {
    nodes: Arc<Mutex<BTreeMap<PeerId, Sink>>>,
    conns: Arc<AtomicU64>,
}

impl FakeNet {
    fn sink(&self, peer: &PeerId) -> Option<Sink> {
        self.nodes.lock().unwrap().get(peer).cloned()
    }

    /// Carries out one node's commands the way the libp2p actor would.
    pub fn attach(&self, me: PeerId, events: EventSink) -> mpsc::Sender<NetCommand> {
        let events: Sink = Arc::from(events);
        self.nodes.lock().unwrap().insert(me, events.clone());
        let (tx, mut rx) = mpsc::channel::<NetCommand>(64);
        let net = self.clone();
        tokio::spawn(async move {
            while let Some(cmd) = rx.recv().await {
                match cmd {
                    NetCommand::Dial { peer, .. } => match net.sink(&peer) {
                        Some(other) => {
                            let conn = ConnId(net.conns.fetch_add(1, Ordering::Relaxed) + 1);
                            events(NetEvent::PeerConnected {
                                peer,
                                conn,
                                path: Path::Direct,
                                limit: None,
                            });
                            other(NetEvent::PeerConnected {
                                peer: me,
                                conn,
                                path: Path::Direct,
                                limit: None,
                            });
                        }
                        None => events(NetEvent::DialFailed { peer }),
                    },
                    NetCommand::OpenStream { stream, peer, protocol, .. } => {
                        match net.sink(&peer) {
                            Some(other) => {
                                let (mine, theirs) = pipe();
                                events(NetEvent::StreamOpened { stream, io: Box::new(mine) });
                                other(NetEvent::InboundStream {
                                    peer: me,
                                    protocol,
                                    io: Box::new(theirs),
                                });
                            }
                            None => events(NetEvent::StreamRefused { stream }),
                        }
                    }
                    // No relays in the fake: reservations and hole punches fail at once.
                    NetCommand::Reserve { hub } => events(NetEvent::ReservationFailed { hub }),
                    NetCommand::Unreserve { .. }
                    | NetCommand::Admit { .. }
                    | NetCommand::Revoke { .. } => {}
                    NetCommand::HolePunch { peer } => events(NetEvent::HolePunchFailed { peer }),
                }
            }
        });
        tx
    }

    /// The network for `app::start_node`.
    pub fn starter(&self, me: PeerId) -> NetworkStarter {
        let net = self.clone();
        Box::new(move |sink| Ok(net.attach(me, sink)))
    }

    /// Starts a runner for `config` on this network; returns its sender.
    pub fn spawn_runner(&self, config: NodeConfig, seed: u64) -> mpsc::Sender<RunnerMsg> {
        let peer = config.peer_id;
        // The runner needs the network's command sender and the network needs
        // the runner's event sender: bridge through a channel made first.
        let (cmd_tx, mut cmd_rx) = mpsc::channel::<NetCommand>(64);
        let runner = NodeRunner::new(config, seed, cmd_tx);
        let events = runner.sender();
        let net_tx = self.attach(peer, event_sink(events.clone()));
        tokio::spawn(async move {
            while let Some(cmd) = cmd_rx.recv().await {
                if net_tx.send(cmd).await.is_err() {
                    break;
                }
            }
        });
        tokio::spawn(runner.run());
        events
    }
}

pub fn credential(name: &str) -> Credential {
    Credential::new(name, format!("token-{name}-0123456789abcdef").as_bytes())
}

/// The test hub's ticket signer (every test hub uses the same key).
pub fn hub_signer() -> TicketSigner {
    TicketSigner::from_secret([7; 32])
}

pub fn base(peer: PeerId, hub: PeerId) -> NodeConfig {
    NodeConfig {
        peer_id: peer,
        hubs: vec![HubContact {
            peer: hub,
            addrs: Vec::new(),
            ticket_key: Some(hub_signer().public()),
        }],
        hub: None,
        exit: None,
        client: None,
        gateway: None,
        agent: None,
        timeouts: Timeouts::default(),
        limits: Limits::default(),
        relay: meshproxy_core::config::RelayConfig::default(),
        wall_clock: Duration::ZERO,
        entropy: None,
    }
}

/// A hub admitting the credentials named `exit` and `client`.
pub fn hub_config(hub: PeerId) -> NodeConfig {
    let mut c = base(hub, hub);
    c.hubs.clear();
    c.hub = Some(HubConfig {
        directory: DirectoryConfig { ttl: Duration::from_secs(30), max_entries: 64 },
        keys: vec![
            AdmissionKey {
                max_registrations: Some(8),
                ..credential("exit").admission_key(RoleSet::EXIT)
            },
            credential("client").admission_key(RoleSet::CLIENT),
        ],
        max_find: 16,
        signer: hub_signer(),
        ticket_lifetime: DEFAULT_TICKET_LIFETIME,
    });
    c
}

/// An exit allowed to reach loopback (for the test origins).
pub fn exit_config(exit: PeerId, hub: PeerId) -> NodeConfig {
    let mut c = base(exit, hub);
    c.exit = Some(ExitConfig {
        policy: ExitPolicyConfig {
            allow: vec!["127.0.0.0/8".parse().unwrap()],
            ..ExitPolicyConfig::default()
        },
        own_addrs: Vec::new(),
        attrs: Attrs::default(),
        // The fake network ignores addresses, but clients skip an exit that
        // advertises none and has no relay (they could not reach it).
        addrs: vec![PeerAddr(b"fake-exit".to_vec())],
        capacity: 16,
        credential: credential("exit"),
        relay: meshproxy_core::config::RelayMode::default(),
        open: false,
    });
    c
}

pub async fn status(tx: &mpsc::Sender<RunnerMsg>) -> RunnerStatus {
    let (reply, rx) = oneshot::channel();
    tx.send(RunnerMsg::Status(reply)).await.unwrap();
    rx.await.unwrap()
}

pub async fn wait_for_exit(client: &mpsc::Sender<RunnerMsg>) {
    while status(client).await.known_exits == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A loopback TCP echo server; each connection echoes until EOF, then closes.
pub async fn echo_origin() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// One end of an in-memory peer stream that, like a yamux stream, can be
/// reset: dropped without a clean end both ways, it makes the other end's
/// reads fail with `ConnectionReset` instead of seeing an end of stream.
pub struct Pipe {
    inner: DuplexStream,
    /// Set by the other end when it is dropped without a clean end.
    reset_by_peer: Arc<AtomicBool>,
    /// Set by this end on an unclean drop.
    reset_by_me: Arc<AtomicBool>,
    read_eof: bool,
    write_shut: bool,
}

/// A connected pair of [`Pipe`]s.
pub fn pipe() -> (Pipe, Pipe) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let (a_reset, b_reset) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let end = |inner, mine: &Arc<AtomicBool>, theirs: &Arc<AtomicBool>| Pipe {
        inner,
        reset_by_peer: theirs.clone(),
        reset_by_me: mine.clone(),
        read_eof: false,
        write_shut: false,
    };
    (end(a, &a_reset, &b_reset), end(b, &b_reset, &a_reset))
}

impl Drop for Pipe {
    fn drop(&mut self) {
        if !(self.read_eof && self.write_shut) {
            self.reset_by_me.store(true, Ordering::SeqCst);
        }
    }
}

impl AsyncRead for Pipe {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() == before && buf.remaining() > 0 => {
                if self.reset_by_peer.load(Ordering::SeqCst) {
                    return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
                }
                self.read_eof = true;
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl AsyncWrite for Pipe {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let res = Pin::new(&mut self.inner).poll_shutdown(cx);
        if let Poll::Ready(Ok(())) = res {
            self.write_shut = true;
        }
        res
    }
}
