//! Runners end to end over an in-memory fake peer network (duplex pipes as
//! peer streams), with real loopback TCP for the app and the origin.
// Helpers outside #[test] fns panic on purpose too: a failure there is a failed test.
#![allow(clippy::unwrap_used)]

use meshproxy::port::{NetCommand, NetEvent};
use meshproxy::runner::{NodeRunner, RunnerMsg, RunnerStatus};
use meshproxy::tcp::TcpIo;
use meshproxy_core::admission::Credential;
use meshproxy_core::config::{
    ClientConfig, ExitConfig, HubConfig, HubContact, Limits, ListenerConfig, ListenerProtocol,
    NodeConfig, SelectionConfig, Timeouts,
};
use meshproxy_core::directory::DirectoryConfig;
use meshproxy_core::ids::{ConnId, ListenerId, PeerId};
use meshproxy_core::policy::ExitPolicyConfig;
use meshproxy_core::record::Attrs;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;

const T: Duration = Duration::from_secs(20);

/// Every runner's event sender, by peer: the fake network's routing table.
#[derive(Clone, Default)]
struct FakeNet {
    nodes: Arc<Mutex<BTreeMap<PeerId, mpsc::Sender<RunnerMsg>>>>,
    conns: Arc<AtomicU64>,
}

impl FakeNet {
    fn sender(&self, peer: &PeerId) -> Option<mpsc::Sender<RunnerMsg>> {
        self.nodes.lock().unwrap().get(peer).cloned()
    }

    /// Carries out one node's commands the way the libp2p actor would.
    fn attach(&self, me: PeerId, events: mpsc::Sender<RunnerMsg>) -> mpsc::Sender<NetCommand> {
        self.nodes.lock().unwrap().insert(me, events.clone());
        let (tx, mut rx) = mpsc::channel::<NetCommand>(64);
        let net = self.clone();
        tokio::spawn(async move {
            while let Some(cmd) = rx.recv().await {
                match cmd {
                    NetCommand::Dial { peer, .. } => match net.sender(&peer) {
                        Some(other) => {
                            let conn = ConnId(net.conns.fetch_add(1, Ordering::Relaxed) + 1);
                            let _ = events
                                .send(RunnerMsg::Net(NetEvent::PeerConnected { peer, conn }))
                                .await;
                            let up = NetEvent::PeerConnected { peer: me, conn };
                            let _ = other.send(RunnerMsg::Net(up)).await;
                        }
                        None => {
                            let _ =
                                events.send(RunnerMsg::Net(NetEvent::DialFailed { peer })).await;
                        }
                    },
                    NetCommand::OpenStream { stream, peer, protocol } => match net.sender(&peer) {
                        Some(other) => {
                            let (mine, theirs) = tokio::io::duplex(64 * 1024);
                            let opened = NetEvent::StreamOpened { stream, io: Box::new(mine) };
                            let _ = events.send(RunnerMsg::Net(opened)).await;
                            let inbound = NetEvent::InboundStream {
                                peer: me,
                                protocol,
                                io: Box::new(theirs),
                            };
                            let _ = other.send(RunnerMsg::Net(inbound)).await;
                        }
                        None => {
                            let refused = NetEvent::StreamRefused { stream };
                            let _ = events.send(RunnerMsg::Net(refused)).await;
                        }
                    },
                }
            }
        });
        tx
    }
}

fn credential(name: &str) -> Credential {
    Credential::new(name, format!("token-{name}").as_bytes())
}

fn base(peer: PeerId, hub: PeerId) -> NodeConfig {
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

struct Mesh {
    client: mpsc::Sender<RunnerMsg>,
    exit: mpsc::Sender<RunnerMsg>,
    hub: mpsc::Sender<RunnerMsg>,
}

impl Mesh {
    /// A hub, an exit allowed to reach loopback, and a SOCKS5 client, all running.
    fn start() -> Mesh {
        let net = FakeNet::default();
        let (hub, exit, client) = (PeerId::from_u64(1), PeerId::from_u64(2), PeerId::from_u64(3));
        let mut hub_cfg = base(hub, hub);
        hub_cfg.hubs.clear();
        hub_cfg.hub = Some(HubConfig {
            directory: DirectoryConfig { ttl: Duration::from_secs(30), max_entries: 64 },
            keys: vec![credential("exit").admission_key(), credential("client").admission_key()],
            max_find: 16,
        });
        let mut exit_cfg = base(exit, hub);
        exit_cfg.exit = Some(ExitConfig {
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
        let mut client_cfg = base(client, hub);
        client_cfg.client = Some(ClientConfig {
            listeners: vec![ListenerConfig {
                protocol: ListenerProtocol::Socks5,
                ..ListenerConfig::default()
            }],
            selection: SelectionConfig {
                refresh: Duration::from_millis(200),
                ..SelectionConfig::default()
            },
            credential: credential("client"),
        });
        let mut senders = Vec::new();
        for (seed, config) in [hub_cfg, exit_cfg, client_cfg].into_iter().enumerate() {
            let peer = config.peer_id;
            // The runner needs the network handle and the network needs the
            // runner's sender: bridge through a channel created first.
            let (cmd_tx, mut cmd_rx) = mpsc::channel::<NetCommand>(64);
            let runner = NodeRunner::new(config, seed as u64, cmd_tx);
            let events = runner.sender();
            let net_tx = net.attach(peer, events.clone());
            tokio::spawn(async move {
                while let Some(cmd) = cmd_rx.recv().await {
                    if net_tx.send(cmd).await.is_err() {
                        break;
                    }
                }
            });
            tokio::spawn(runner.run());
            senders.push(events);
        }
        let client = senders.pop().unwrap();
        let exit = senders.pop().unwrap();
        let hub = senders.pop().unwrap();
        Mesh { client, exit, hub }
    }

    async fn wait_for_exit(&self) {
        loop {
            if status(&self.client).await.known_exits > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A fake listener: an accepted loopback connection handed to the client runner.
    async fn app(&self) -> TcpStream {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (app, accepted) = tokio::join!(TcpStream::connect(l.local_addr().unwrap()), l.accept());
        let (io, source) = accepted.unwrap();
        let msg = RunnerMsg::AppAccepted {
            listener: ListenerId(0),
            source,
            io: Box::new(TcpIo::new(io)),
        };
        self.client.send(msg).await.unwrap();
        app.unwrap()
    }

    async fn shutdown(self) {
        for tx in [self.client, self.exit, self.hub] {
            let _ = tx.send(RunnerMsg::Shutdown).await;
        }
    }
}

async fn status(tx: &mpsc::Sender<RunnerMsg>) -> RunnerStatus {
    let (reply, rx) = oneshot::channel();
    tx.send(RunnerMsg::Status(reply)).await.unwrap();
    rx.await.unwrap()
}

/// A loopback TCP echo server; each connection echoes until EOF, then closes.
async fn echo_origin() -> SocketAddr {
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

fn socks_connect(addr: SocketAddr) -> Vec<u8> {
    let SocketAddr::V4(v4) = addr else { panic!("test origin is IPv4") };
    let mut req = vec![5, 1, 0, 5, 1, 0, 1];
    req.extend_from_slice(&v4.ip().octets());
    req.extend_from_slice(&v4.port().to_be_bytes());
    req
}

#[tokio::test]
async fn socks5_connect_end_to_end_with_pipelined_bytes() {
    timeout(T, async {
        let origin = echo_origin().await;
        let mesh = Mesh::start();
        mesh.wait_for_exit().await;
        let mut app = mesh.app().await;
        // Greeting, CONNECT and the first application bytes in one write:
        // the bytes after the request must reach the origin, not be lost.
        let mut first = socks_connect(origin);
        first.extend_from_slice(b"pipelined!");
        app.write_all(&first).await.unwrap();
        let mut method = [0u8; 2];
        app.read_exact(&mut method).await.unwrap();
        assert_eq!(method, [5, 0]);
        let mut reply = [0u8; 10];
        app.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply[..4], &[5, 0, 0, 1], "CONNECT succeeded with an IPv4 bound address");
        let mut echoed = [0u8; 10];
        app.read_exact(&mut echoed).await.unwrap();
        assert_eq!(&echoed, b"pipelined!");
        // Bulk data through the splice, both ways.
        let data: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
        let (mut r, mut w) = app.split();
        let send = async {
            w.write_all(&data).await.unwrap();
            w.shutdown().await.unwrap();
        };
        let recv = async {
            let mut got = Vec::new();
            r.read_to_end(&mut got).await.unwrap();
            got
        };
        let ((), got) = tokio::join!(send, recv);
        assert_eq!(got.len(), data.len());
        assert!(got == data, "echo matches byte for byte");
        mesh.shutdown().await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_written_while_the_session_is_set_up_all_arrive_in_order() {
    timeout(T, async {
        let origin = echo_origin().await;
        let mesh = Mesh::start();
        mesh.wait_for_exit().await;
        for round in 0..10u8 {
            let app = mesh.app().await;
            let (mut r, mut w) = app.into_split();
            w.write_all(&socks_connect(origin)).await.unwrap();
            // Without waiting for the reply: a stream of small writes that
            // races the splice hand-over on both runners.
            // (A FIN before the session is up means the app gave up: the
            // writer holds its shutdown until the reply came.)
            let (replied, wait_reply) = oneshot::channel::<()>();
            let writer = tokio::spawn(async move {
                let mut sent = Vec::new();
                for i in 0..400u16 {
                    let chunk = [round, (i >> 8) as u8, i as u8, b'.'];
                    w.write_all(&chunk).await.unwrap();
                    sent.extend_from_slice(&chunk);
                    if i % 8 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                wait_reply.await.unwrap();
                w.shutdown().await.unwrap();
                sent
            });
            let mut got = vec![0u8; 12];
            r.read_exact(&mut got).await.unwrap();
            replied.send(()).unwrap();
            r.read_to_end(&mut got).await.unwrap();
            let sent = writer.await.unwrap();
            assert_eq!(&got[..2], &[5, 0]);
            assert_eq!(&got[2..6], &[5, 0, 0, 1]);
            assert!(got[12..] == sent[..], "round {round}: every early byte echoed in order");
        }
        mesh.shutdown().await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn connect_to_a_closed_port_is_reported_as_refused() {
    timeout(T, async {
        let closed = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap()
        };
        let mesh = Mesh::start();
        mesh.wait_for_exit().await;
        let mut app = mesh.app().await;
        app.write_all(&socks_connect(closed)).await.unwrap();
        let mut method = [0u8; 2];
        app.read_exact(&mut method).await.unwrap();
        let mut reply = [0u8; 2];
        app.read_exact(&mut reply).await.unwrap();
        assert_eq!(reply, [5, 5], "SOCKS5 reply code 5: connection refused");
        mesh.shutdown().await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn sessions_leave_nothing_behind() {
    timeout(T, async {
        let origin = echo_origin().await;
        let mesh = Mesh::start();
        mesh.wait_for_exit().await;
        for _ in 0..3 {
            let mut app = mesh.app().await;
            app.write_all(&socks_connect(origin)).await.unwrap();
            let mut head = [0u8; 12];
            app.read_exact(&mut head).await.unwrap();
            app.write_all(b"bye").await.unwrap();
            app.shutdown().await.unwrap();
            let mut rest = Vec::new();
            app.read_to_end(&mut rest).await.unwrap();
            assert_eq!(rest, b"bye");
        }
        // Splice ends are reported asynchronously: wait for the books to settle.
        loop {
            let (c, e) = (status(&mesh.client).await, status(&mesh.exit).await);
            if c.resources.sessions == 0 && e.resources.sessions == 0 {
                assert_eq!(c.pending_splices + e.pending_splices, 0);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        mesh.shutdown().await;
    })
    .await
    .unwrap();
}
