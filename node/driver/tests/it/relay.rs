//! A hub as a circuit relay v2 server, against raw libp2p peers (TCP + Noise + Yamux,
//! relay client): strangers are refused, peers that passed the hub's challenge on
//! `/meshproxy/hub/1` (spoken here with the core's own codec and admission functions)
//! get reservations, and a circuit between two admitted peers carries far more than
//! libp2p's 128 KiB default.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns fail the test by panicking

use futures::{AsyncReadExt as _, AsyncWriteExt as _, StreamExt as _};
use libp2p::{
    identity, multiaddr::Protocol as Ma, noise, relay, swarm::SwarmEvent, tcp, yamux, Multiaddr,
    PeerId, Stream, StreamProtocol, Swarm, SwarmBuilder,
};
use meshproxy::ops::config::FileConfig;
use meshproxy::ops::identity::Identity;
use meshproxy::ops::launch::{start, NetNode};
use meshproxy::p2p::network::{from_core, to_core};
use meshproxy_core::admission::Credential;
use meshproxy_core::wire::frame::Decoded;
use meshproxy_core::wire::hub::{self as wire, HubMessage, Role, HUB_PROTOCOL, HUB_VERSION};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Every step of a test is bounded; a whole test by [`WHOLE`].
const STEP: Duration = Duration::from_secs(20);
const WHOLE: Duration = Duration::from_secs(60);

/// Well beyond libp2p's default circuit byte cap (128 KiB), each way.
const PAYLOAD: usize = 640 * 1024;

/// A protocol the two relayed peers speak to each other (echo).
const ECHO: StreamProtocol = StreamProtocol::new("/relay-test/echo/1");

#[derive(libp2p::swarm::NetworkBehaviour)]
struct PeerBehaviour {
    relay: relay::client::Behaviour,
    streams: libp2p_stream::Behaviour,
}

type Command = Box<dyn FnOnce(&mut Swarm<PeerBehaviour>) + Send>;

/// A raw libp2p peer driven by its own task; the test sends it closures and reads its events.
struct TestPeer {
    id: PeerId,
    control: libp2p_stream::Control,
    commands: mpsc::UnboundedSender<Command>,
    events: mpsc::UnboundedReceiver<SwarmEvent<PeerBehaviourEvent>>,
    task: JoinHandle<()>,
}

impl Drop for TestPeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestPeer {
    fn new() -> TestPeer {
        let key = identity::Keypair::generate_ed25519();
        let mut swarm = SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .unwrap()
            .with_relay_client(noise::Config::new, yamux::Config::default)
            .unwrap()
            .with_behaviour(|_, relay| PeerBehaviour {
                relay,
                streams: libp2p_stream::Behaviour::new(),
            })
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        let id = *swarm.local_peer_id();
        let control = swarm.behaviour().streams.new_control();
        let (commands, mut commands_rx) = mpsc::unbounded_channel::<Command>();
        let (events_tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    command = commands_rx.recv() => match command {
                        Some(command) => command(&mut swarm),
                        None => return,
                    },
                    event = swarm.select_next_some() => {
                        let _ = events_tx.send(event);
                    }
                }
            }
        });
        TestPeer { id, control, commands, events, task }
    }

    fn run(&self, command: impl FnOnce(&mut Swarm<PeerBehaviour>) + Send + 'static) {
        self.commands.send(Box::new(command)).unwrap();
    }

    /// Waits for the first event `pick` accepts (earlier ones are dropped).
    async fn wait_for<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&SwarmEvent<PeerBehaviourEvent>) -> Option<T>,
    ) -> T {
        let events = &mut self.events;
        timeout(STEP, async {
            loop {
                let event = events.recv().await.expect("the peer task runs");
                if let Some(t) = pick(&event) {
                    return t;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
    }

    async fn connect(&mut self, peer: PeerId, addr: Multiaddr) {
        self.run(move |s| s.dial(addr).unwrap());
        self.wait_for("a connection", |e| match e {
            SwarmEvent::ConnectionEstablished { peer_id, .. } if *peer_id == peer => Some(()),
            SwarmEvent::OutgoingConnectionError { error, .. } => panic!("dial failed: {error}"),
            _ => None,
        })
        .await;
    }

    /// Passes the hub's challenge as a client; the returned stream is the admission (it
    /// lasts as long as the stream stays open).
    async fn admit(&self, hub: PeerId, credential: &Credential) -> Stream {
        let mut control = self.control.clone();
        let mut stream = timeout(STEP, control.open_stream(hub, StreamProtocol::new(HUB_PROTOCOL)))
            .await
            .expect("hub stream in time")
            .expect("hub stream opened");
        let mut inbox = Vec::new();
        let HubMessage::Challenge { version, nonce } = read_msg(&mut stream, &mut inbox).await
        else {
            panic!("expected a challenge")
        };
        assert_eq!(version, HUB_VERSION);
        let proof = credential.prove(&nonce, &to_core(&hub), &to_core(&self.id), Role::Client);
        let auth = HubMessage::Auth {
            version: HUB_VERSION,
            role: Role::Client,
            key_id: credential.key_id.clone(),
            proof,
        };
        write_msg(&mut stream, &auth).await;
        let msg = read_msg(&mut stream, &mut inbox).await;
        assert!(matches!(msg, HubMessage::AuthOk { .. }), "expected AuthOk, got {msg:?}");
        stream
    }

    /// Asks `hub` for a reservation; once accepted, the circuit limits it states (bytes
    /// per direction, duration); `Err` if refused.
    async fn reserve(
        &mut self,
        hub: PeerId,
        hub_addr: &Multiaddr,
    ) -> Result<(Option<u64>, Option<Duration>), String> {
        let circuit = hub_addr.clone().with(Ma::P2p(hub)).with(Ma::P2pCircuit);
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.run(move |s| {
            let _ = tx.send(s.listen_on(circuit).unwrap());
        });
        let listener = rx.await.unwrap();
        self.wait_for("the reservation's answer", |e| match e {
            SwarmEvent::Behaviour(PeerBehaviourEvent::Relay(
                relay::client::Event::ReservationReqAccepted { relay_peer_id, limit, .. },
            )) if *relay_peer_id == hub => {
                let limit = limit.as_ref().expect("the relay states its limits");
                Some(Ok((limit.data_in_bytes(), limit.duration())))
            }
            SwarmEvent::ListenerClosed { listener_id, reason: Err(e), .. }
                if *listener_id == listener =>
            {
                Some(Err(format!("{e:?}")))
            }
            _ => None,
        })
        .await
    }
}

async fn read_msg(stream: &mut Stream, inbox: &mut Vec<u8>) -> HubMessage {
    loop {
        match wire::decode(inbox).expect("a valid hub frame") {
            Decoded::Complete { msg, consumed } => {
                inbox.drain(..consumed);
                return msg;
            }
            Decoded::Incomplete => {
                let mut chunk = [0u8; 1024];
                let n = timeout(STEP, stream.read(&mut chunk)).await.unwrap().unwrap();
                assert!(n > 0, "the hub closed the stream");
                inbox.extend_from_slice(&chunk[..n]);
            }
        }
    }
}

async fn write_msg(stream: &mut Stream, msg: &HubMessage) {
    let mut buf = Vec::new();
    wire::encode(msg, &mut buf);
    stream.write_all(&buf).await.unwrap();
    stream.flush().await.unwrap();
}

struct Hub {
    node: NetNode,
    id: PeerId,
    addr: Multiaddr,
}

async fn hub(extra: &str) -> Hub {
    let secret = [31; 32];
    let file = FileConfig::parse(&format!(
        r#"listen = ["/ip4/127.0.0.1/tcp/0"]
[hub]
keys = [{{ id = "client", token = "t-client-token-01234567" }}]
{extra}
"#
    ))
    .unwrap();
    let identity = Identity::from_secret(secret);
    let node = start(&file, &identity, 31).await.unwrap();
    let id = from_core(&identity.peer_id()).unwrap();
    let addr = node.p2p_addrs.first().expect("the hub listens").clone();
    Hub { node, id, addr }
}

fn credential() -> Credential {
    Credential::new("client", b"t-client-token-01234567")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_gets_no_reservation_and_an_admitted_peer_does() {
    timeout(WHOLE, async {
        let hub = hub("").await;

        // Connected, but never passed the challenge.
        let mut stranger = TestPeer::new();
        stranger.connect(hub.id, hub.addr.clone()).await;
        let refused = stranger.reserve(hub.id, &hub.addr).await;
        assert!(refused.is_err(), "a stranger got a reservation: {refused:?}");

        // A wrong token does not admit either.
        let mut pretender = TestPeer::new();
        pretender.connect(hub.id, hub.addr.clone()).await;
        let mut control = pretender.control.clone();
        let mut s = control.open_stream(hub.id, StreamProtocol::new(HUB_PROTOCOL)).await.unwrap();
        let mut inbox = Vec::new();
        let HubMessage::Challenge { nonce, .. } = read_msg(&mut s, &mut inbox).await else {
            panic!("expected a challenge")
        };
        let wrong = Credential::new("client", b"not the token");
        let proof = wrong.prove(&nonce, &to_core(&hub.id), &to_core(&pretender.id), Role::Client);
        let auth = HubMessage::Auth {
            version: HUB_VERSION,
            role: Role::Client,
            key_id: "client".into(),
            proof,
        };
        write_msg(&mut s, &auth).await;
        assert!(matches!(read_msg(&mut s, &mut inbox).await, HubMessage::Error { .. }));
        assert!(pretender.reserve(hub.id, &hub.addr).await.is_err());

        // Admitted: the reservation is granted with the hub's raised limits.
        let mut peer = TestPeer::new();
        peer.connect(hub.id, hub.addr.clone()).await;
        let _admission = peer.admit(hub.id, &credential()).await;
        let (bytes, duration) =
            peer.reserve(hub.id, &hub.addr).await.expect("admitted peers may reserve");
        assert_eq!(bytes, Some(1 << 30), "1 GiB, not libp2p's 128 KiB");
        assert_eq!(duration, Some(Duration::from_secs(3600)), "1 h, not 2 min");

        hub.node.node.shutdown().await;
    })
    .await
    .expect("the relay test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_circuit_between_admitted_peers_carries_more_than_the_libp2p_default() {
    timeout(WHOLE, async {
        let hub = hub("relay_max_circuit_bytes = 4194304").await;
        let mut listener = TestPeer::new();
        listener.connect(hub.id, hub.addr.clone()).await;
        let _l_admission = listener.admit(hub.id, &credential()).await;
        let (bytes, _) = listener.reserve(hub.id, &hub.addr).await.expect("reserved");
        assert_eq!(bytes, Some(4 << 20), "from the config");

        // The listener echoes every stream of the test protocol.
        let mut incoming = listener.control.clone().accept(ECHO).unwrap();
        let echo = tokio::spawn(async move {
            let (_, stream) = incoming.next().await.unwrap();
            let (mut r, mut w) = stream.split();
            let copied = futures::io::copy(&mut r, &mut w).await.unwrap();
            w.close().await.unwrap();
            copied
        });

        let via_hub = hub.addr.clone().with(Ma::P2p(hub.id)).with(Ma::P2pCircuit);
        let target = via_hub.clone().with(Ma::P2p(listener.id));

        // A stranger may not open a circuit, even to a peer that holds a reservation.
        let mut stranger = TestPeer::new();
        stranger.connect(hub.id, hub.addr.clone()).await;
        let to = target.clone();
        stranger.run(move |s| s.dial(to).unwrap());
        let listener_id = listener.id;
        stranger
            .wait_for("the circuit to be refused", |e| match e {
                SwarmEvent::OutgoingConnectionError { peer_id: Some(p), .. }
                    if *p == listener_id =>
                {
                    Some(())
                }
                SwarmEvent::ConnectionEstablished { peer_id, .. } if *peer_id == listener_id => {
                    panic!("a stranger got a circuit")
                }
                _ => None,
            })
            .await;

        let mut dialer = TestPeer::new();
        dialer.connect(hub.id, hub.addr.clone()).await;
        let _d_admission = dialer.admit(hub.id, &credential()).await;
        dialer.connect(listener.id, target).await;
        let mut control = dialer.control.clone();
        let stream = timeout(STEP, control.open_stream(listener.id, ECHO)).await.unwrap().unwrap();
        let payload: Vec<u8> =
            (0..PAYLOAD as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let (mut r, mut w) = stream.split();
        let send = async {
            w.write_all(&payload).await.unwrap();
            w.close().await.unwrap();
        };
        let mut echoed = Vec::new();
        let recv = async { r.read_to_end(&mut echoed).await.unwrap() };
        timeout(STEP, async { tokio::join!(send, recv) }).await.expect("echo in time");
        assert_eq!(echoed.len(), PAYLOAD);
        assert!(echoed == payload, "the echo differs from what was sent");
        let copied = timeout(STEP, echo).await.unwrap().unwrap();
        assert_eq!(copied, PAYLOAD as u64);

        hub.node.node.shutdown().await;
    })
    .await
    .expect("the relay test finished in time");
}
