//! Shared test fixtures: an in-memory peer network and small origins.
#![allow(clippy::unwrap_used, dead_code)]

use meshproxy::app::{event_sink, EventSink, NetworkStarter};
use meshproxy::port::{NetCommand, NetEvent};
use meshproxy::runner::{NodeRunner, RunnerMsg, RunnerStatus};
use meshproxy_core::admission::Credential;
use meshproxy_core::config::{ExitConfig, HubConfig, HubContact, Limits, NodeConfig, Timeouts};
use meshproxy_core::directory::DirectoryConfig;
use meshproxy_core::ids::{ConnId, PeerId};
use meshproxy_core::policy::ExitPolicyConfig;
use meshproxy_core::record::Attrs;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
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
                            events(NetEvent::PeerConnected { peer, conn });
                            other(NetEvent::PeerConnected { peer: me, conn });
                        }
                        None => events(NetEvent::DialFailed { peer }),
                    },
                    NetCommand::OpenStream { stream, peer, protocol } => match net.sink(&peer) {
                        Some(other) => {
                            let (mine, theirs) = tokio::io::duplex(64 * 1024);
                            events(NetEvent::StreamOpened { stream, io: Box::new(mine) });
                            other(NetEvent::InboundStream {
                                peer: me,
                                protocol,
                                io: Box::new(theirs),
                            });
                        }
                        None => events(NetEvent::StreamRefused { stream }),
                    },
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
    Credential::new(name, format!("token-{name}").as_bytes())
}

pub fn base(peer: PeerId, hub: PeerId) -> NodeConfig {
    NodeConfig {
        peer_id: peer,
        hubs: vec![HubContact { peer: hub, addrs: Vec::new() }],
        hub: None,
        exit: None,
        client: None,
        timeouts: Timeouts::default(),
        limits: Limits::default(),
    }
}

/// A hub admitting the credentials named `exit` and `client`.
pub fn hub_config(hub: PeerId) -> NodeConfig {
    let mut c = base(hub, hub);
    c.hubs.clear();
    c.hub = Some(HubConfig {
        directory: DirectoryConfig { ttl: Duration::from_secs(30), max_entries: 64 },
        keys: vec![credential("exit").admission_key(), credential("client").admission_key()],
        max_find: 16,
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
        addrs: Vec::new(),
        capacity: 16,
        credential: credential("exit"),
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
