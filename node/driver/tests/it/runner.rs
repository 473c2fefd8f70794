//! Runners end to end over an in-memory fake peer network (duplex pipes as
//! peer streams), with real loopback TCP for the app and the origin.
// Helpers outside #[test] fns panic on purpose too: a failure there is a failed test.
#![allow(clippy::unwrap_used)]

use crate::common::{base, credential, echo_origin, exit_config, hub_config, status, FakeNet};
use meshproxy::runtime::runner::RunnerMsg;
use meshproxy::runtime::tcp::TcpIo;
use meshproxy_core::config::{ClientConfig, ListenerConfig, ListenerProtocol, SelectionConfig};
use meshproxy_core::ids::{ListenerId, PeerId};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;

const T: Duration = Duration::from_secs(20);

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
        Mesh {
            hub: net.spawn_runner(hub_config(hub), 1),
            exit: net.spawn_runner(exit_config(exit, hub), 2),
            client: net.spawn_runner(client_cfg, 3),
        }
    }

    async fn wait_for_exit(&self) {
        crate::common::wait_for_exit(&self.client).await;
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

#[tokio::test]
async fn the_core_timer_fires_an_app_that_never_finishes_its_handshake_is_dropped() {
    timeout(T, async {
        let net = FakeNet::default();
        let (hub, client) = (PeerId::from_u64(1), PeerId::from_u64(3));
        let mut config = base(client, hub);
        config.timeouts.handshake = Duration::from_millis(300);
        config.client = Some(ClientConfig {
            listeners: vec![ListenerConfig::default()],
            selection: SelectionConfig::default(),
            credential: credential("client"),
        });
        let runner = net.spawn_runner(config, 7);
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (app, accepted) = tokio::join!(TcpStream::connect(l.local_addr().unwrap()), l.accept());
        let (io, source) = accepted.unwrap();
        let started = tokio::time::Instant::now();
        let msg = RunnerMsg::AppAccepted {
            listener: ListenerId(0),
            source,
            io: Box::new(TcpIo::new(io)),
        };
        runner.send(msg).await.unwrap();
        let mut app = app.unwrap();
        app.write_all(&[5]).await.unwrap(); // half a greeting, then silence
        let mut buf = [0u8; 16];
        let _ = app.read(&mut buf).await; // EOF or reset: either way, closed by the deadline
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(250), "closed too early: {waited:?}");
        assert!(waited < Duration::from_secs(5), "the deadline did not fire: {waited:?}");
        let _ = runner.send(RunnerMsg::Shutdown).await;
    })
    .await
    .unwrap();
}

/// Reads until something other than data: Ok(()) for EOF, the error kind otherwise.
async fn read_until_end(s: &mut TcpStream) -> (Vec<u8>, Result<(), std::io::ErrorKind>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf).await {
            Ok(0) => return (got, Ok(())),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return (got, Err(e.kind())),
        }
    }
}

/// An origin that takes one connection and hands it to the test.
async fn one_shot_origin() -> (SocketAddr, oneshot::Receiver<TcpStream>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        if let Ok((s, _)) = l.accept().await {
            let _ = tx.send(s);
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn an_app_reset_reaches_the_origin_as_a_reset_through_both_nodes() {
    timeout(T, async {
        let (addr, origin) = one_shot_origin().await;
        let mesh = Mesh::start();
        mesh.wait_for_exit().await;
        let mut app = mesh.app().await;
        app.write_all(&socks_connect(addr)).await.unwrap();
        let mut head = [0u8; 12];
        app.read_exact(&mut head).await.unwrap();
        let mut origin = origin.await.unwrap();
        app.write_all(b"some").await.unwrap();
        let mut four = [0u8; 4];
        origin.read_exact(&mut four).await.unwrap();
        app.set_zero_linger().unwrap();
        drop(app);
        let (_, end) = read_until_end(&mut origin).await;
        assert_eq!(end, Err(std::io::ErrorKind::ConnectionReset), "never a clean end");
        mesh.shutdown().await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn an_origin_reset_reaches_the_app_as_a_reset_through_both_nodes() {
    timeout(T, async {
        let (addr, origin) = one_shot_origin().await;
        let mesh = Mesh::start();
        mesh.wait_for_exit().await;
        let mut app = mesh.app().await;
        app.write_all(&socks_connect(addr)).await.unwrap();
        let mut head = [0u8; 12];
        app.read_exact(&mut head).await.unwrap();
        let origin = origin.await.unwrap();
        origin.set_zero_linger().unwrap();
        drop(origin);
        let (_, end) = read_until_end(&mut app).await;
        assert_eq!(end, Err(std::io::ErrorKind::ConnectionReset), "never a clean end");
        mesh.shutdown().await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_half_close_carries_through_both_nodes_while_the_origin_keeps_talking() {
    timeout(T, async {
        let (addr, origin) = one_shot_origin().await;
        let mesh = Mesh::start();
        mesh.wait_for_exit().await;
        let mut app = mesh.app().await;
        app.write_all(&socks_connect(addr)).await.unwrap();
        let mut head = [0u8; 12];
        app.read_exact(&mut head).await.unwrap();
        let mut origin = origin.await.unwrap();
        app.write_all(b"question").await.unwrap();
        app.shutdown().await.unwrap();
        let (asked, end) = read_until_end(&mut origin).await;
        assert_eq!((asked.as_slice(), end), (&b"question"[..], Ok(())), "FIN after the data");
        for part in [&b"answer, "[..], b"after ", b"your FIN"] {
            origin.write_all(part).await.unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        origin.shutdown().await.unwrap();
        let (answer, end) = read_until_end(&mut app).await;
        assert_eq!((answer.as_slice(), end), (&b"answer, after your FIN"[..], Ok(())));
        mesh.shutdown().await;
    })
    .await
    .unwrap();
}

/// The queue from the runner to the network is bounded (`COMMAND_QUEUE` in
/// production). When it is full, the runner answers the core at once — a dial
/// fails — rather than waiting on the network or queueing without bound: a
/// stuck network costs no memory and the core's retry logic takes over.
#[tokio::test]
async fn a_full_network_queue_fails_the_command_at_once() {
    timeout(T, async {
        let me = PeerId::from_u64(9);
        let mut config = base(me, PeerId::from_u64(1));
        // Two hubs: two dials at start, for a queue with room for one.
        config.hubs.push(meshproxy_core::config::HubContact {
            peer: PeerId::from_u64(2),
            addrs: Vec::new(),
            ticket_key: None,
        });
        config.client = Some(ClientConfig {
            listeners: vec![ListenerConfig::default()],
            selection: SelectionConfig::default(),
            credential: credential("client"),
        });
        let (net_tx, mut net_rx) = mpsc::channel(1);
        let runner = meshproxy::runtime::runner::NodeRunner::new(config, 9, net_tx);
        let tx = runner.sender();
        tokio::spawn(runner.run());
        // Nobody reads the queue: one dial waits in it, the other was refused
        // and answered as failed, so the core waits on exactly one.
        let s = status(&tx).await;
        assert_eq!(s.resources.pending_dials, 1, "{s:?}");
        let queued = net_rx.try_recv().expect("one command queued");
        assert!(matches!(queued, meshproxy::p2p::NetCommand::Dial { .. }), "{queued:?}");
        assert!(net_rx.try_recv().is_err(), "nothing else was queued");
    })
    .await
    .unwrap();
}
