//! The network actor's relay client on loopback, driven by `NetCommand`s as the runner
//! would: an exit reserves at a hub's relay, a client dials the exit through it, streams go
//! on exactly the connection named, DCUtR upgrades the relayed connection to a direct one,
//! and a hub that goes away takes the reservation with it.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns fail the test by panicking

use std::time::Duration;

use libp2p::{identity::Keypair, Multiaddr};
use meshproxy::{
    p2p::network::{
        addr_to_core, to_core, AdmittedPeers, NetConfig, NetHandle, NetworkActor, RelayServerConfig,
    },
    p2p::{HolePunchStage, NetCommand, NetEvent},
};
use meshproxy_core::{
    ids::{ConnId, PeerId, StreamId},
    io::{CircuitLimit, Path, Protocol},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::mpsc,
    time::timeout,
};

const STEP: Duration = Duration::from_secs(20);
const WHOLE: Duration = Duration::from_secs(90);

struct Node {
    handle: Option<NetHandle>,
    events: mpsc::UnboundedReceiver<NetEvent>,
    addrs: Vec<Multiaddr>,
    peer: PeerId,
    /// Every hole-punch stage reported so far, whichever wait saw it.
    punches: Vec<HolePunchStage>,
}

impl Node {
    async fn start(relay: Option<AdmittedPeers>) -> Node {
        let mut config = NetConfig::new(Keypair::generate_ed25519());
        config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
        config.relay_client = relay.is_none();
        config.relay = relay.map(|admitted| RelayServerConfig { admitted, ..Default::default() });
        let (tx, events) = mpsc::unbounded_channel();
        let handle = NetworkActor::spawn(config, move |e| {
            let _ = tx.send(e);
        })
        .unwrap();
        let addrs = handle.listen_addrs().await;
        let peer = to_core(&handle.local_peer_id());
        Node { handle: Some(handle), events, addrs, peer, punches: Vec::new() }
    }

    async fn send(&self, command: NetCommand) {
        self.handle.as_ref().unwrap().commands.send(command).await.unwrap();
    }

    /// The next event `pick` accepts, skipping others; bounded by [`STEP`].
    async fn next<T>(&mut self, what: &str, mut pick: impl FnMut(NetEvent) -> Option<T>) -> T {
        timeout(STEP, async {
            loop {
                let event = self.events.recv().await.expect("actor alive");
                eprintln!("{}: {event:?}", self.peer);
                if let NetEvent::HolePunch { stage, .. } = &event {
                    self.punches.push(*stage);
                }
                if let Some(t) = pick(event) {
                    return t;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
    }

    async fn dial(&mut self, other: &Node) -> ConnId {
        let addrs = other.addrs.iter().map(addr_to_core).collect();
        self.send(NetCommand::Dial { peer: other.peer, addrs, via: None }).await;
        let want = other.peer;
        self.next("a direct connection", |e| match e {
            NetEvent::PeerConnected { peer, conn, path: Path::Direct, .. } if peer == want => {
                Some(conn)
            }
            _ => None,
        })
        .await
    }
}

#[tokio::test]
async fn an_exit_is_reached_through_its_reservation_and_upgraded_to_direct() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    timeout(WHOLE, async {
        let admitted = AdmittedPeers::default();
        let mut hub = Node::start(Some(admitted.clone())).await;
        let mut exit = Node::start(None).await;
        let mut client = Node::start(None).await;
        // The core admits both at the hub (challenge on /meshproxy/hub/1) before they reserve.
        admitted.admit(exit.peer);
        admitted.admit(client.peer);

        // Reserve before any connection to the hub: the actor has no address for it.
        exit.send(NetCommand::Reserve { hub: hub.peer }).await;
        let h = hub.peer;
        exit.next("ReservationFailed", |e| match e {
            NetEvent::ReservationFailed { hub } if hub == h => Some(()),
            _ => None,
        })
        .await;

        exit.dial(&hub).await;
        exit.send(NetCommand::Reserve { hub: hub.peer }).await;
        exit.next("ReservationAccepted", |e| match e {
            NetEvent::ReservationAccepted { hub } if hub == h => Some(()),
            NetEvent::ReservationFailed { .. } | NetEvent::ReservationLost { .. } => {
                panic!("{e:?}")
            }
            _ => None,
        })
        .await;
        // A reservation held is answered at once (libp2p renews it by itself).
        exit.send(NetCommand::Reserve { hub: hub.peer }).await;
        exit.next("ReservationAccepted again", |e| match e {
            NetEvent::ReservationAccepted { hub } if hub == h => Some(()),
            _ => None,
        })
        .await;

        // The client dials the exit through the hub: a relayed connection with the relay's caps.
        client.dial(&hub).await;
        client
            .send(NetCommand::Dial { peer: exit.peer, addrs: Vec::new(), via: Some(hub.peer) })
            .await;
        let x = exit.peer;
        let (relayed, limit) = client
            .next("a relayed connection to the exit", |e| match e {
                NetEvent::PeerConnected { peer, conn, path, limit } if peer == x => {
                    assert_eq!(path, Path::Relayed { via: h }, "{conn}");
                    Some((conn, limit))
                }
                NetEvent::DialFailed { .. } => panic!("{e:?}"),
                _ => None,
            })
            .await;
        let hour = Some(Duration::from_secs(3600));
        assert_eq!(limit, Some(CircuitLimit { duration: hour, bytes: Some(1 << 30) }));
        let c = client.peer;
        let (exit_side, exit_limit) = exit
            .next("the exit sees the relayed connection", |e| match e {
                NetEvent::PeerConnected { peer, conn, path, limit } if peer == c => {
                    assert_eq!(path, Path::Relayed { via: h }, "the accepting side knows the hub");
                    Some((conn, limit))
                }
                _ => None,
            })
            .await;
        assert!(exit_side.0 > 0);
        assert_eq!(exit_limit, limit, "both ends learn the same caps");

        // A stream on exactly the relayed connection; one on a connection that never was is refused.
        client
            .send(NetCommand::OpenStream {
                stream: StreamId(1),
                peer: exit.peer,
                conn: Some(relayed),
                protocol: Protocol::Proxy,
            })
            .await;
        client
            .send(NetCommand::OpenStream {
                stream: StreamId(2),
                peer: exit.peer,
                conn: Some(ConnId(9_999)),
                protocol: Protocol::Proxy,
            })
            .await;
        let mut opened = None;
        let mut refused = false;
        while opened.is_none() || !refused {
            match client
                .next("stream answers", |e| match e {
                    NetEvent::StreamOpened { stream, io } => Some(Ok((stream, io))),
                    NetEvent::StreamRefused { stream } => Some(Err(stream)),
                    _ => None,
                })
                .await
            {
                Ok((stream, io)) => {
                    assert_eq!(stream, StreamId(1));
                    opened = Some(io);
                }
                Err(stream) => {
                    assert_eq!(stream, StreamId(2), "only the stream on a made-up connection");
                    refused = true;
                }
            }
        }
        let mut io = opened.unwrap();
        let mut inbound = exit
            .next("the inbound stream", |e| match e {
                NetEvent::InboundStream { peer, io, .. } if peer == c => Some(io),
                _ => None,
            })
            .await;
        io.write_all(b"through the relay").await.unwrap();
        io.flush().await.unwrap();
        let mut buf = [0u8; 17];
        timeout(STEP, inbound.read_exact(&mut buf)).await.unwrap().unwrap();
        assert_eq!(&buf, b"through the relay");

        // DCUtR starts by itself on the side that accepted the circuit (the exit); on
        // loopback it succeeds, and both ends see a direct connection.
        let direct = exit
            .next("a direct connection from the hole punch", |e| match e {
                NetEvent::PeerConnected { peer, conn, path: Path::Direct, .. } if peer == c => {
                    Some(conn)
                }
                _ => None,
            })
            .await;
        assert_eq!(exit.punches.first(), Some(&HolePunchStage::Started), "{:?}", exit.punches);
        // The core's `HolePunch` after the fact is answered with the direct connection.
        exit.send(NetCommand::HolePunch { peer: client.peer }).await;
        let answer = exit
            .next("the answer to HolePunch", |e| match e {
                NetEvent::PeerConnected { peer, conn, path: Path::Direct, .. } if peer == c => {
                    Some(conn)
                }
                NetEvent::HolePunchFailed { .. } => panic!("{e:?}"),
                _ => None,
            })
            .await;
        assert_eq!(answer, direct);
        // New streams without a named connection now prefer the direct one: the relayed
        // stream still works, and a fresh stream arrives too.
        client
            .send(NetCommand::OpenStream {
                stream: StreamId(3),
                peer: exit.peer,
                conn: None,
                protocol: Protocol::Proxy,
            })
            .await;
        client
            .next("the stream on the preferred connection", |e| match e {
                NetEvent::StreamOpened { stream, .. } => Some(stream),
                NetEvent::StreamRefused { .. } => panic!("{e:?}"),
                _ => None,
            })
            .await
            .eq(&StreamId(3))
            .then_some(())
            .expect("stream 3 opened");
        io.write_all(b"!").await.unwrap();
        io.flush().await.unwrap();
        timeout(STEP, inbound.read_exact(&mut buf[..1])).await.unwrap().unwrap();
        assert_eq!(buf[0], b'!');

        if !exit.punches.contains(&HolePunchStage::Succeeded) {
            exit.next("the hole punch's success", |e| match e {
                NetEvent::HolePunch { stage: HolePunchStage::Succeeded, .. } => Some(()),
                _ => None,
            })
            .await;
        }
        assert_eq!(
            exit.punches,
            [HolePunchStage::Started, HolePunchStage::Succeeded],
            "one attempt, reported by the side that started it"
        );
        assert!(client.punches.is_empty(), "the dialing side starts no attempt of its own");

        // The hub goes away: the exit's reservation is lost, and the relayed connection ends.
        hub.handle = None;
        drop(hub.events);
        exit.next("ReservationLost", |e| match e {
            NetEvent::ReservationLost { hub } if hub == h => Some(()),
            _ => None,
        })
        .await;
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn a_hole_punch_without_a_relayed_connection_fails_at_once_or_names_the_direct_one() {
    timeout(WHOLE, async {
        let mut a = Node::start(None).await;
        let b = Node::start(None).await;
        // Unknown peer: nothing to punch through.
        a.send(NetCommand::HolePunch { peer: b.peer }).await;
        let p = b.peer;
        a.next("HolePunchFailed", |e| match e {
            NetEvent::HolePunchFailed { peer } if peer == p => Some(()),
            _ => None,
        })
        .await;
        // Connected directly already: the answer is that connection.
        let conn = a.dial(&b).await;
        a.send(NetCommand::HolePunch { peer: b.peer }).await;
        let again = a
            .next("the existing direct connection", |e| match e {
                NetEvent::PeerConnected { peer, conn, path: Path::Direct, .. } if peer == p => {
                    Some(conn)
                }
                _ => None,
            })
            .await;
        assert_eq!(again, conn);
        // A relayed dial through a peer that is no relay, or through nobody known, fails.
        let stranger = to_core(&Keypair::generate_ed25519().public().to_peer_id());
        a.send(NetCommand::Dial { peer: stranger, addrs: Vec::new(), via: Some(b.peer) }).await;
        a.next("DialFailed", |e| match e {
            NetEvent::DialFailed { peer } if peer == stranger => Some(()),
            _ => None,
        })
        .await;
        let nobody = to_core(&Keypair::generate_ed25519().public().to_peer_id());
        a.send(NetCommand::Dial { peer: b.peer, addrs: Vec::new(), via: Some(nobody) }).await;
        a.next("DialFailed", |e| match e {
            NetEvent::DialFailed { peer } if peer == p => Some(()),
            _ => None,
        })
        .await;
        drop(b);
    })
    .await
    .expect("in time");
}
