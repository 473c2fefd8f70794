//! The network actor on loopback: two real swarms, TCP and QUIC, and a stock libp2p peer.

// Test helpers may unwrap: a panic there is a failed test, which is the point.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use futures::StreamExt as _;

use libp2p::{identity::Keypair, Multiaddr};
use meshproxy::{
    p2p::network::{addr_to_core, to_core, NetConfig, NetHandle, NetworkActor},
    p2p::{BoxStream, NetCommand, NetEvent},
};
use meshproxy_core::{
    ids::{ConnId, PeerId, StreamId},
    io::Protocol,
    record::PeerAddr,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::mpsc,
    time::timeout,
};

const LIMIT: Duration = Duration::from_secs(20);
const MIB: usize = 1 << 20;

struct Node {
    handle: NetHandle,
    events: mpsc::UnboundedReceiver<NetEvent>,
    addrs: Vec<Multiaddr>,
}

impl Node {
    async fn start(listen: &[&str]) -> Node {
        Node::start_with(listen, |_| {}).await
    }

    /// A node whose config `tune` adjusts first (limits, say).
    async fn start_with(listen: &[&str], tune: impl FnOnce(&mut NetConfig)) -> Node {
        let mut config = NetConfig::new(Keypair::generate_ed25519());
        config.listen = listen.iter().map(|a| a.parse().unwrap()).collect();
        tune(&mut config);
        let (tx, events) = mpsc::unbounded_channel();
        let handle = NetworkActor::spawn(config, move |e| {
            let _ = tx.send(e);
        })
        .unwrap();
        let addrs = handle.listen_addrs().await;
        assert_eq!(addrs.len(), listen.len(), "one address per loopback listener: {addrs:?}");
        Node { handle, events, addrs }
    }

    fn peer(&self) -> PeerId {
        to_core(&self.handle.local_peer_id())
    }

    async fn send(&self, command: NetCommand) {
        self.handle.commands.send(command).await.unwrap();
    }

    /// The next event `pick` accepts, skipping others (e.g. a `PeerConnected` before the
    /// stream event the test waits for).
    async fn next<T>(&mut self, mut pick: impl FnMut(NetEvent) -> Option<T>) -> T {
        loop {
            let event = self.events.recv().await.expect("actor alive");
            if let Some(t) = pick(event) {
                return t;
            }
        }
    }

    async fn connected(&mut self) -> (PeerId, ConnId) {
        self.next(|e| match e {
            NetEvent::PeerConnected { peer, conn, .. } => Some((peer, conn)),
            _ => None,
        })
        .await
    }
}

/// Deterministic, non-repeating-looking payload (xorshift), so a reordered or dropped chunk
/// shows up as a mismatch.
fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// FNV-1a, to report a short checksum alongside the full comparison.
fn checksum(data: &[u8]) -> u64 {
    data.iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// A dials B at `addr_index`, both see the connection; A opens a proxy stream, B accepts it;
/// 1 MiB flows A→B, A's write-shutdown is EOF at B, then (half-close) 1 MiB flows B→A.
async fn connect_and_stream(listen: &[&str], addr_index: usize) {
    let mut a = Node::start(listen).await;
    let mut b = Node::start(listen).await;
    let addr = b.addrs[addr_index].clone();
    a.send(NetCommand::Dial { peer: b.peer(), addrs: vec![addr_to_core(&addr)], via: None }).await;
    let (peer_at_a, conn_at_a) = a.connected().await;
    assert_eq!(peer_at_a, b.peer());
    let (peer_at_b, _) = b.connected().await;
    assert_eq!(peer_at_b, a.peer());

    let sid = StreamId(1);
    a.send(NetCommand::OpenStream {
        stream: sid,
        peer: b.peer(),
        conn: None,
        protocol: Protocol::Proxy,
    })
    .await;
    let mut io_a: BoxStream = a
        .next(|e| match e {
            NetEvent::StreamOpened { stream, io } => {
                assert_eq!(stream, sid);
                Some(io)
            }
            NetEvent::StreamRefused { stream } => panic!("{stream} refused"),
            _ => None,
        })
        .await;
    let (from, mut io_b) = b
        .next(|e| match e {
            NetEvent::InboundStream { peer, protocol, io } => {
                assert_eq!(protocol, Protocol::Proxy);
                Some((peer, io))
            }
            _ => None,
        })
        .await;
    assert_eq!(from, a.peer());

    let up = payload(1, MIB);
    let down = payload(2, MIB);
    let writer = {
        let up = up.clone();
        async move {
            io_a.write_all(&up).await.unwrap();
            io_a.shutdown().await.unwrap();
            io_a
        }
    };
    let reader = async {
        let mut got = Vec::new();
        io_b.read_to_end(&mut got).await.unwrap();
        got
    };
    let (mut io_a, got) = tokio::join!(writer, reader);
    assert_eq!(got.len(), MIB);
    assert_eq!(checksum(&got), checksum(&up));
    assert!(got == up, "A→B bytes differ");

    // A finished writing; B can still send, and A still reads.
    let writer = async {
        io_b.write_all(&down).await.unwrap();
        io_b.shutdown().await.unwrap();
    };
    let reader = async {
        let mut got = Vec::new();
        io_a.read_to_end(&mut got).await.unwrap();
        got
    };
    let ((), got) = tokio::join!(writer, reader);
    assert_eq!(checksum(&got), checksum(&down));
    assert!(got == down, "B→A bytes differ");

    // Stopping B closes the connection, and A hears of exactly that connection. (A QUIC
    // stream holds its connection open, so the streams go first, as in a real shutdown.)
    drop((io_a, io_b));
    drop(b);
    let (peer, conn) = a
        .next(|e| match e {
            NetEvent::PeerDisconnected { peer, conn } => Some((peer, conn)),
            _ => None,
        })
        .await;
    assert_eq!(peer, peer_at_a);
    assert_eq!(conn, conn_at_a);
}

#[tokio::test]
async fn tcp_connect_stream_both_ways_and_half_close() {
    timeout(LIMIT, connect_and_stream(&["/ip4/127.0.0.1/tcp/0"], 0)).await.unwrap();
}

#[tokio::test]
async fn quic_connect_stream_both_ways_and_half_close() {
    timeout(LIMIT, connect_and_stream(&["/ip4/127.0.0.1/udp/0/quic-v1"], 0)).await.unwrap();
}

#[tokio::test]
async fn hub_streams_are_told_apart_from_proxy_streams() {
    timeout(LIMIT, async {
        let mut a = Node::start(&["/ip4/127.0.0.1/tcp/0"]).await;
        let mut b = Node::start(&["/ip4/127.0.0.1/tcp/0"]).await;
        let addrs = b.addrs.iter().map(addr_to_core).collect();
        a.send(NetCommand::Dial { peer: b.peer(), addrs, via: None }).await;
        a.connected().await;
        a.send(NetCommand::OpenStream {
            stream: StreamId(9),
            peer: b.peer(),
            conn: None,
            protocol: Protocol::Hub,
        })
        .await;
        let protocol = b
            .next(|e| match e {
                NetEvent::InboundStream { protocol, .. } => Some(protocol),
                _ => None,
            })
            .await;
        assert_eq!(protocol, Protocol::Hub);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn dial_to_a_dead_address_fails() {
    timeout(LIMIT, async {
        let mut a = Node::start(&["/ip4/127.0.0.1/tcp/0"]).await;
        // A port that was just free: nothing listens there.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let ghost = to_core(&Keypair::generate_ed25519().public().to_peer_id());
        let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
        a.send(NetCommand::Dial { peer: ghost, addrs: vec![addr_to_core(&addr)], via: None }).await;
        let failed = a
            .next(|e| match e {
                NetEvent::DialFailed { peer } => Some(peer),
                NetEvent::PeerConnected { .. } => panic!("connected to a dead address"),
                _ => None,
            })
            .await;
        assert_eq!(failed, ghost);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn dials_without_a_usable_address_or_peer_id_fail_at_once() {
    timeout(LIMIT, async {
        let mut a = Node::start(&[]).await;
        let ghost = to_core(&Keypair::generate_ed25519().public().to_peer_id());
        let cases = [
            (ghost, vec![PeerAddr(vec![0xff, 0x00, 0x13])]), // undecodable multiaddr
            (ghost, vec![]),                                 // no address at all
            (PeerId::from_u64(3), vec![]),                   // not a libp2p peer id
        ];
        for (peer, addrs) in cases {
            a.send(NetCommand::Dial { peer, addrs, via: None }).await;
            let failed = a
                .next(|e| match e {
                    NetEvent::DialFailed { peer } => Some(peer),
                    _ => None,
                })
                .await;
            assert_eq!(failed, peer);
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn stream_to_an_unconnected_peer_is_refused_without_dialing() {
    timeout(LIMIT, async {
        let mut a = Node::start(&["/ip4/127.0.0.1/tcp/0"]).await;
        let b = Node::start(&["/ip4/127.0.0.1/tcp/0"]).await;
        // B is reachable, but the core never asked to dial it: no implicit dial either.
        for (i, peer) in [b.peer(), PeerId::from_u64(5)].into_iter().enumerate() {
            let sid = StreamId(i as u64 + 1);
            a.send(NetCommand::OpenStream {
                stream: sid,
                peer,
                conn: None,
                protocol: Protocol::Proxy,
            })
            .await;
            let refused = a
                .next(|e| match e {
                    NetEvent::StreamRefused { stream } => Some(stream),
                    NetEvent::StreamOpened { .. } => panic!("opened without a connection"),
                    NetEvent::PeerConnected { .. } => panic!("dialed implicitly"),
                    _ => None,
                })
                .await;
            assert_eq!(refused, sid);
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn dial_to_a_connected_peer_reports_the_existing_connection() {
    timeout(LIMIT, async {
        let mut a = Node::start(&["/ip4/127.0.0.1/tcp/0"]).await;
        let b = Node::start(&["/ip4/127.0.0.1/tcp/0"]).await;
        let addrs: Vec<PeerAddr> = b.addrs.iter().map(addr_to_core).collect();
        a.send(NetCommand::Dial { peer: b.peer(), addrs: addrs.clone(), via: None }).await;
        let (_, first) = a.connected().await;
        a.send(NetCommand::Dial { peer: b.peer(), addrs, via: None }).await;
        let (peer, again) = a.connected().await;
        assert_eq!(peer, b.peer());
        assert_eq!(again, first);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn listen_addrs_resolve_port_zero() {
    timeout(LIMIT, async {
        let a = Node::start(&["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"]).await;
        for addr in &a.addrs {
            let text = addr.to_string();
            assert!(text.starts_with("/ip4/127.0.0.1/"), "{text}");
            assert!(!text.contains("/tcp/0") && !text.contains("/udp/0/"), "{text}");
        }
    })
    .await
    .unwrap();
}

/// Many streams opened at once on one connection all open, all arrive, and each carries its
/// own bytes: no inbound stream may be dropped when the actor is slower than the muxer
/// (libp2p-stream dropped most of these, which is why the driver has its own behaviour).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_streams_all_arrive_intact() {
    const N: u64 = 64;
    timeout(LIMIT, async {
        let mut a = Node::start(&["/ip4/127.0.0.1/tcp/0"]).await;
        let mut b = Node::start(&["/ip4/127.0.0.1/tcp/0"]).await;
        let addrs = b.addrs.iter().map(addr_to_core).collect();
        a.send(NetCommand::Dial { peer: b.peer(), addrs, via: None }).await;
        a.connected().await;
        for i in 0..N {
            let stream = StreamId(i);
            a.send(NetCommand::OpenStream {
                stream,
                peer: b.peer(),
                conn: None,
                protocol: Protocol::Proxy,
            })
            .await;
        }
        // B echoes every inbound stream back.
        let echo = tokio::spawn(async move {
            for _ in 0..N {
                let mut io = b
                    .next(|e| match e {
                        NetEvent::InboundStream { io, .. } => Some(io),
                        _ => None,
                    })
                    .await;
                tokio::spawn(async move {
                    let (mut r, mut w) = tokio::io::split(&mut io);
                    tokio::io::copy(&mut r, &mut w).await.unwrap();
                    w.shutdown().await.unwrap();
                });
            }
            b
        });
        let mut checks = Vec::new();
        for _ in 0..N {
            let (stream, mut io) = a
                .next(|e| match e {
                    NetEvent::StreamOpened { stream, io } => Some((stream, io)),
                    NetEvent::StreamRefused { stream } => panic!("{stream} refused"),
                    _ => None,
                })
                .await;
            checks.push(tokio::spawn(async move {
                let sent = payload(stream.0 + 10, 4096);
                io.write_all(&sent).await.unwrap();
                io.shutdown().await.unwrap();
                let mut got = Vec::new();
                io.read_to_end(&mut got).await.unwrap();
                assert!(got == sent, "{stream}: echo differs");
            }));
        }
        for check in checks {
            check.await.unwrap();
        }
        drop(echo.await.unwrap());
    })
    .await
    .unwrap();
}

/// A connected pair of nodes with one proxy stream A→B open: (A, B, A's end, B's end).
/// Opens proxy stream `stream` from `a` to the connected `b`; both ends.
async fn open_proxy_stream(a: &mut Node, b: &mut Node, stream: StreamId) -> (BoxStream, BoxStream) {
    let (a_peer, b_peer) = (a.peer(), b.peer());
    a.send(NetCommand::OpenStream { stream, peer: b_peer, conn: None, protocol: Protocol::Proxy })
        .await;
    let io_a = a
        .next(|e| match e {
            NetEvent::StreamOpened { io, .. } => Some(io),
            NetEvent::StreamRefused { stream } => panic!("{stream} refused"),
            _ => None,
        })
        .await;
    let io_b = b
        .next(|e| match e {
            NetEvent::InboundStream { peer, io, .. } if peer == a_peer => Some(io),
            _ => None,
        })
        .await;
    (io_a, io_b)
}

async fn stream_pair(listen: &[&str]) -> (Node, Node, BoxStream, BoxStream) {
    let mut a = Node::start(listen).await;
    let mut b = Node::start(listen).await;
    let addr = b.addrs[0].clone();
    a.send(NetCommand::Dial { peer: b.peer(), addrs: vec![addr_to_core(&addr)], via: None }).await;
    a.connected().await;
    let (io_a, io_b) = open_proxy_stream(&mut a, &mut b, StreamId(1)).await;
    (a, b, io_a, io_b)
}

/// The data plane's contract: a stream its peer dropped without finishing it
/// (and, over TCP, one whose connection died) reads as a reset — never as a
/// clean end, which the far app would take for a complete transfer. (A QUIC
/// stream keeps its connection alive in-process, so a dead QUIC connection is
/// only seen after the idle timeout, as an error too.)
async fn aborts_read_as_resets(listen: &[&str], whole_node: bool) {
    // The peer drops its end mid-stream.
    let (_a, _b, mut io_a, mut io_b) = stream_pair(listen).await;
    io_a.write_all(b"partial").await.unwrap();
    io_a.flush().await.unwrap();
    let mut got = [0u8; 7];
    io_b.read_exact(&mut got).await.unwrap();
    drop(io_a);
    let mut rest = Vec::new();
    let end = io_b.read_to_end(&mut rest).await;
    assert_eq!(end.map_err(|e| e.kind()), Err(std::io::ErrorKind::ConnectionReset));

    if !whole_node {
        return;
    }
    // The peer's whole node goes away mid-stream.
    let (a, _b, mut io_a, mut io_b) = stream_pair(listen).await;
    io_a.write_all(b"partial").await.unwrap();
    io_a.flush().await.unwrap();
    io_b.read_exact(&mut got).await.unwrap();
    drop(a);
    let end = io_b.read_to_end(&mut rest).await;
    assert!(end.is_err(), "a dead connection read as a clean end");
    drop(io_a);
}

#[tokio::test]
async fn tcp_aborted_streams_read_as_resets() {
    timeout(LIMIT, aborts_read_as_resets(&["/ip4/127.0.0.1/tcp/0"], true)).await.unwrap();
}

#[tokio::test]
async fn quic_aborted_streams_read_as_resets() {
    timeout(LIMIT, aborts_read_as_resets(&["/ip4/127.0.0.1/udp/0/quic-v1"], false)).await.unwrap();
}

/// `[limits] max_streams_per_connection`: Yamux ends a connection whose peer
/// opens more streams than the limit (the offender loses its connection and
/// every stream on it), and the node keeps serving everyone else. Honest
/// clients stay below it: the core caps sessions per exit
/// (`limits.max_sessions_per_exit`) under the default stream limit.
#[tokio::test]
async fn a_peer_opening_streams_beyond_the_limit_loses_only_its_own_connection() {
    const LIMIT_STREAMS: usize = 6;
    timeout(LIMIT, async {
        let mut b = Node::start_with(&["/ip4/127.0.0.1/tcp/0"], |c| {
            c.limits.max_streams_per_connection = LIMIT_STREAMS;
        })
        .await;
        let b_peer = b.peer();
        let open = |n: u64| NetCommand::OpenStream {
            stream: StreamId(n),
            peer: b_peer,
            conn: None,
            protocol: Protocol::Proxy,
        };
        // The offender opens twice the limit at once.
        let mut offender = Node::start(&["/ip4/127.0.0.1/tcp/0"]).await;
        let addrs: Vec<PeerAddr> = b.addrs.iter().map(addr_to_core).collect();
        offender.send(NetCommand::Dial { peer: b_peer, addrs: addrs.clone(), via: None }).await;
        let (_, conn) = offender.connected().await;
        for n in 0..2 * LIMIT_STREAMS as u64 {
            offender.send(open(n)).await;
        }
        // Waits for that connection to go down (the test's deadline fails it otherwise).
        offender
            .next(|e| match e {
                NetEvent::PeerDisconnected { conn: gone, .. } if gone == conn => Some(()),
                _ => None,
            })
            .await;
        // An honest peer connects and streams as usual.
        let mut honest = Node::start(&["/ip4/127.0.0.1/tcp/0"]).await;
        honest.send(NetCommand::Dial { peer: b_peer, addrs, via: None }).await;
        honest.connected().await;
        let (mut io, mut inbound) = open_proxy_stream(&mut honest, &mut b, StreamId(100)).await;
        io.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        inbound.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
    })
    .await
    .unwrap();
}

/// `[limits] max_incoming_connections`: a node at its limit refuses the next
/// peer's connection (the dialer sees it fail or drop at once, the node never
/// reports it) and keeps serving the peers it has.
#[tokio::test]
async fn connections_beyond_the_incoming_limit_are_refused() {
    timeout(LIMIT, async {
        let mut b = Node::start_with(&["/ip4/127.0.0.1/tcp/0"], |c| {
            c.limits.max_established_incoming = 1;
        })
        .await;
        let b_peer = b.peer();
        let addrs: Vec<PeerAddr> = b.addrs.iter().map(addr_to_core).collect();
        let mut first = Node::start(&["/ip4/127.0.0.1/tcp/0"]).await;
        first.send(NetCommand::Dial { peer: b_peer, addrs: addrs.clone(), via: None }).await;
        first.connected().await;
        let mut second = Node::start(&["/ip4/127.0.0.1/tcp/0"]).await;
        second.send(NetCommand::Dial { peer: b_peer, addrs, via: None }).await;
        // B denies it as soon as the handshake ends: the dialer sees the dial
        // fail, or the connection drop at once.
        second
            .next(|e| match e {
                NetEvent::DialFailed { peer } | NetEvent::PeerDisconnected { peer, .. }
                    if peer == b_peer =>
                {
                    Some(())
                }
                _ => None,
            })
            .await;
        let second_peer = second.peer();
        while let Ok(e) = b.events.try_recv() {
            assert!(
                !matches!(e, NetEvent::PeerConnected { peer, .. } if peer == second_peer),
                "B admitted the second peer"
            );
        }
        // The first keeps working.
        let (mut io, mut inbound) = open_proxy_stream(&mut first, &mut b, StreamId(1)).await;
        io.write_all(b"ok").await.unwrap();
        let mut got = [0u8; 2];
        inbound.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ok");
    })
    .await
    .unwrap();
}

#[derive(libp2p::swarm::NetworkBehaviour)]
struct StockBehaviour {
    identify: libp2p::identify::Behaviour,
    ping: libp2p::ping::Behaviour,
    streams: libp2p_stream::Behaviour,
}

/// A stock rust-libp2p peer (its own Noise and Yamux, multistream-select `V1` when it
/// opens streams) offering identify, ping and `/meshproxy/hub/1` (an echo), but not
/// `/meshproxy/proxy/1`; driven by its own task until dropped.
struct StockPeer {
    id: libp2p::PeerId,
    addr: Multiaddr,
    control: libp2p_stream::Control,
    events: mpsc::UnboundedReceiver<libp2p::swarm::SwarmEvent<StockBehaviourEvent>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StockPeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StockPeer {
    async fn start() -> StockPeer {
        use libp2p::{identify, noise, ping, swarm::SwarmEvent, tcp, yamux};
        let mut swarm = libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .unwrap()
            .with_behaviour(|key| StockBehaviour {
                identify: identify::Behaviour::new(identify::Config::new(
                    "/stock/1".to_owned(),
                    key.public(),
                )),
                ping: ping::Behaviour::new(
                    ping::Config::new().with_interval(Duration::from_millis(200)),
                ),
                streams: libp2p_stream::Behaviour::new(),
            })
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap()).unwrap();
        let addr = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                break address;
            }
        };
        let id = *swarm.local_peer_id();
        let control = swarm.behaviour().streams.new_control();
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let _ = tx.send(swarm.select_next_some().await);
            }
        });
        StockPeer { id, addr, control, events, task }
    }
}

/// Our streams propose their protocol lazily (multistream-select `V1Lazy`). Against a
/// stock peer that does not offer `/meshproxy/proxy/1`, a proxy stream must fail at its
/// first read, fast, as an error (the pump's reset, which the core handles like a refused
/// stream), never hang or read as a clean end; and the connection, identify and ping with
/// the stock peer, and a protocol it does offer must keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_peer_without_our_proxy_protocol_fails_the_stream_fast_and_keeps_working() {
    use libp2p::swarm::SwarmEvent;
    use meshproxy_core::wire::hub::HUB_PROTOCOL;
    timeout(LIMIT, async {
        let mut stock = StockPeer::start().await;
        let mut hub_streams =
            stock.control.accept(libp2p::StreamProtocol::new(HUB_PROTOCOL)).unwrap();
        tokio::spawn(async move {
            use futures::{AsyncReadExt as _, AsyncWriteExt as _};
            while let Some((_, mut s)) = hub_streams.next().await {
                let mut four = [0u8; 4];
                if s.read_exact(&mut four).await.is_ok() {
                    let _ = s.write_all(&four).await;
                    let _ = s.close().await;
                }
            }
        });
        let mut a = Node::start(&["/ip4/127.0.0.1/tcp/0"]).await;
        let stock_peer = to_core(&stock.id);
        let addrs = vec![addr_to_core(&stock.addr)];
        a.send(NetCommand::Dial { peer: stock_peer, addrs, via: None }).await;
        let (peer, conn) = a.connected().await;
        assert_eq!(peer, stock_peer);

        // Our identify, proposed lazily, against the stock listener: it saw us.
        let by = a
            .next(|e| match e {
                NetEvent::ObservedAddress { by, .. } => Some(by),
                _ => None,
            })
            .await;
        assert_eq!(by, Some(stock_peer));

        // Twice: a refusal leaves the connection usable for the next stream.
        for n in 1..=2 {
            let asked = tokio::time::Instant::now();
            a.send(NetCommand::OpenStream {
                stream: StreamId(n),
                peer: stock_peer,
                conn: Some(conn),
                protocol: Protocol::Proxy,
            })
            .await;
            let opened = a
                .next(|e| match e {
                    NetEvent::StreamOpened { stream, io } if stream == StreamId(n) => {
                        Some(Some(io))
                    }
                    NetEvent::StreamRefused { stream } if stream == StreamId(n) => Some(None),
                    NetEvent::PeerDisconnected { .. } => panic!("the connection went down"),
                    _ => None,
                })
                .await;
            let mut io = opened.expect("lazy: the stream opens before the peer answers");
            // What a client sends first: a frame, length prefix first.
            io.write_all(&[0, 0, 0, 2, 1, 2]).await.unwrap();
            io.flush().await.unwrap();
            let mut buf = [0u8; 16];
            let read = timeout(Duration::from_secs(5), io.read(&mut buf))
                .await
                .expect("the refusal arrives within a round trip, not never");
            assert!(read.is_err(), "a refused proxy stream read {read:?}, not an error");
            eprintln!("proxy stream to a stock peer: failed after {:?}: {read:?}", asked.elapsed());
        }

        // A protocol the stock peer offers, first bytes sent before its confirmation: echoed.
        a.send(NetCommand::OpenStream {
            stream: StreamId(3),
            peer: stock_peer,
            conn: Some(conn),
            protocol: Protocol::Hub,
        })
        .await;
        let mut io = a
            .next(|e| match e {
                NetEvent::StreamOpened { stream: StreamId(3), io } => Some(io),
                NetEvent::StreamRefused { .. } => panic!("hub stream refused"),
                NetEvent::PeerDisconnected { .. } => panic!("the connection went down"),
                _ => None,
            })
            .await;
        io.write_all(b"mesh").await.unwrap();
        let mut echo = [0u8; 4];
        io.read_exact(&mut echo).await.unwrap();
        assert_eq!(&echo, b"mesh");

        // The stock peer's own outbound identify and pings reach us (our listener side).
        let (mut identified, mut pinged) = (false, false);
        while !(identified && pinged) {
            match stock.events.recv().await.expect("the stock peer runs") {
                SwarmEvent::Behaviour(StockBehaviourEvent::Identify(
                    libp2p::identify::Event::Received { peer_id, .. },
                )) if peer_id == a.handle.local_peer_id() => identified = true,
                SwarmEvent::Behaviour(StockBehaviourEvent::Ping(libp2p::ping::Event {
                    result: Ok(_),
                    ..
                })) => pinged = true,
                SwarmEvent::ConnectionClosed { cause, .. } => {
                    panic!("the stock peer lost its connection: {cause:?}")
                }
                _ => {}
            }
        }
        while let Ok(event) = a.events.try_recv() {
            assert!(!matches!(event, NetEvent::PeerDisconnected { .. }), "{event:?}");
        }
    })
    .await
    .unwrap();
}
