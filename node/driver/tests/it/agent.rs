//! The agent role through the driver: a real agent runner (real sockets: its
//! origins are TCP servers on 127.0.0.1, its names go to the system
//! resolver) and a real hub runner on the in-memory peer network. The test
//! plays the gateway: it opens `/meshproxy/ingress/1` streams to the agent
//! with hand-made `Open`s and tickets, and, as a client of the hub, asks the
//! directory for agents.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns fail the test by panicking

use crate::common::{base, credential, echo_origin, hub_config, hub_signer, status, FakeNet};
use bytes::Bytes;
use meshproxy::ops::metrics::Metrics;
use meshproxy::p2p::{BoxStream, NetCommand, NetEvent};
use meshproxy::runtime::runner::NodeRunner;
use meshproxy_core::admission::RoleSet;
use meshproxy_core::agent::ingress_agent;
use meshproxy_core::config::{AgentConfig, NodeConfig, RelayMode};
use meshproxy_core::ids::{PeerId, StreamId};
use meshproxy_core::io::Protocol;
use meshproxy_core::record::{PeerAddr, PeerFilter};
use meshproxy_core::target::TargetAddr;
use meshproxy_core::ticket::Ticket;
use meshproxy_core::wire::frame::Decoded;
use meshproxy_core::wire::hub::{self as hubwire, HubMessage, Role, HUB_VERSION};
use meshproxy_core::wire::ingress::{
    self, AnswerStatus, ForwardedHost, Open, Scheme, ServiceName, INGRESS_VERSION,
};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::{sleep, timeout, Instant};

/// Every await in this file is bounded by this.
const BOUND: Duration = Duration::from_secs(10);

fn hub_id() -> PeerId {
    PeerId::from_u64(41)
}

fn agent_id() -> PeerId {
    PeerId::from_u64(42)
}

fn gateway_id() -> PeerId {
    PeerId::from_u64(43)
}

/// A TCP server on 127.0.0.1 that counts the connections it accepts (and
/// closes them at once).
async fn counting_origin() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            drop(s);
        }
    });
    (addr, count)
}

/// A ticket the test hub signs for `holder` in `roles`, valid for ten minutes
/// of real time (the runner gives the core the system's wall clock).
#[allow(clippy::disallowed_methods)] // the wall clock the agent's runner reads too
fn ticket(holder: PeerId, roles: RoleSet) -> Bytes {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let t = Ticket { hub: hub_id(), holder, roles, expires: now.as_secs() + 600 };
    Bytes::from(hub_signer().sign(&t))
}

struct World {
    net: FakeNet,
    agent: mpsc::Sender<meshproxy::runtime::runner::RunnerMsg>,
    metrics: Arc<Metrics>,
    gateway: mpsc::Sender<NetCommand>,
    events: mpsc::UnboundedReceiver<NetEvent>,
    next_stream: u64,
}

impl World {
    /// A hub admitting `agent` keys, an agent with `web` = `web` (a literal)
    /// and `local` = `localhost:PORT` of `local` (a name its allow-list,
    /// `10.0.0.0/8:80`, does not cover), and the test's gateway peer
    /// connected to the agent.
    async fn start(web: SocketAddr, local: SocketAddr) -> World {
        let net = FakeNet::default();
        let mut hub = hub_config(hub_id());
        if let Some(h) = &mut hub.hub {
            h.keys.push(credential("agent").admission_key(RoleSet::of(Role::Agent)));
        }
        net.spawn_runner(hub, 1);
        let service = |s: &str| ServiceName::new(s).unwrap();
        let config = NodeConfig {
            agent: Some(AgentConfig {
                credential: credential("agent"),
                addrs: vec![PeerAddr(b"fake-agent".to_vec())],
                relay: RelayMode::Off,
                labels: BTreeMap::from([("site".to_owned(), "home".to_owned())]),
                services: BTreeMap::from([
                    (service("web"), TargetAddr::Ip(web)),
                    (service("local"), TargetAddr::Domain("localhost".into(), local.port())),
                ]),
                allow: vec!["10.0.0.0/8:80".parse().unwrap()],
            }),
            ..base(agent_id(), hub_id())
        };
        let metrics = Arc::new(Metrics::new());
        let (cmd_tx, mut cmd_rx) = mpsc::channel::<NetCommand>(64);
        let runner = NodeRunner::new(config, 2, cmd_tx).with_metrics(metrics.clone());
        let agent = runner.sender();
        let net_tx = net.attach(agent_id(), meshproxy::ops::assemble::event_sink(agent.clone()));
        tokio::spawn(async move {
            while let Some(cmd) = cmd_rx.recv().await {
                if net_tx.send(cmd).await.is_err() {
                    break;
                }
            }
        });
        tokio::spawn(runner.run());
        let (ev_tx, events) = mpsc::unbounded_channel();
        let gateway = net.attach(gateway_id(), Box::new(move |e| drop(ev_tx.send(e))));
        let mut w = World { net, agent, metrics, gateway, events, next_stream: 0 };
        w.dial(agent_id()).await;
        w
    }

    async fn next_event(&mut self) -> NetEvent {
        timeout(BOUND, self.events.recv()).await.unwrap().unwrap()
    }

    async fn dial(&mut self, peer: PeerId) {
        let cmd = NetCommand::Dial { peer, addrs: Vec::new(), via: None };
        self.gateway.send(cmd).await.unwrap();
        loop {
            if let NetEvent::PeerConnected { peer: p, .. } = self.next_event().await {
                if p == peer {
                    return;
                }
            }
        }
    }

    async fn open_stream(&mut self, peer: PeerId, protocol: Protocol) -> BoxStream {
        self.next_stream += 1;
        let stream = StreamId(self.next_stream);
        let cmd = NetCommand::OpenStream { stream, peer, conn: None, protocol };
        self.gateway.send(cmd).await.unwrap();
        loop {
            match self.next_event().await {
                NetEvent::StreamOpened { stream: s, io } if s == stream => return io,
                NetEvent::StreamRefused { stream: s } if s == stream => panic!("refused"),
                _ => {}
            }
        }
    }

    /// An ingress stream to the agent asking for `service` with `ticket`:
    /// the agent's answer, and the stream (carrying the origin's bytes after `Ok`).
    async fn open(&mut self, service: &str, ticket: Bytes) -> (AnswerStatus, BoxStream) {
        let mut io = self.open_stream(agent_id(), Protocol::Ingress).await;
        let open = Open {
            version: INGRESS_VERSION,
            upstream: self.next_stream,
            service: ServiceName::new(service).unwrap(),
            client: "203.0.113.9:5555".parse().unwrap(),
            scheme: Scheme::Http,
            host: ForwardedHost::new("app.example.com").unwrap(),
            port: 80,
            ticket,
        };
        let mut bytes = Vec::new();
        ingress::encode_open(&open, &mut bytes);
        timeout(BOUND, io.write_all(&bytes)).await.unwrap().unwrap();
        let mut buf = Vec::new();
        loop {
            if let Decoded::Complete { msg, consumed } = ingress::decode_answer(&buf).unwrap() {
                assert_eq!(consumed, buf.len(), "nothing follows the answer before the request");
                return (msg.status, io);
            }
            let mut byte = [0u8; 1];
            let n = timeout(BOUND, io.read(&mut byte)).await.unwrap().unwrap();
            assert!(n > 0, "the agent closed the stream without answering");
            buf.push(byte[0]);
        }
    }

    fn metric(&self, series: &str) -> u64 {
        let text = self.metrics.encode();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    }

    /// Waits (bounded) until the metric reads `want`.
    async fn until_metric(&self, series: &str, want: u64) {
        let deadline = Instant::now() + BOUND;
        while self.metric(series) != want {
            assert!(Instant::now() < deadline, "{series} stayed {}", self.metric(series));
            sleep(Duration::from_millis(5)).await;
        }
    }

    /// Reads one hub message from `io`.
    async fn hub_message(io: &mut BoxStream, buf: &mut Vec<u8>) -> HubMessage {
        loop {
            if let Decoded::Complete { msg, consumed } = hubwire::decode(buf).unwrap() {
                buf.drain(..consumed);
                return msg;
            }
            let mut chunk = [0u8; 512];
            let n = timeout(BOUND, io.read(&mut chunk)).await.unwrap().unwrap();
            assert!(n > 0, "the hub closed the stream");
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Authenticates at the hub as a client and asks for peers in `role`.
    async fn find(&mut self, role: Role) -> Vec<meshproxy_core::record::PeerRecord> {
        let mut io = self.open_stream(hub_id(), Protocol::Hub).await;
        let mut buf = Vec::new();
        let HubMessage::Challenge { nonce, .. } = Self::hub_message(&mut io, &mut buf).await else {
            panic!("expected a challenge")
        };
        let cred = credential("client");
        let auth = HubMessage::Auth {
            version: HUB_VERSION,
            role: Role::Client,
            key_id: cred.key_id.clone(),
            proof: cred.prove(&nonce, &hub_id(), &gateway_id(), Role::Client),
        };
        let find = HubMessage::Find { role, filter: PeerFilter::default(), limit: 16 };
        for msg in [auth, find] {
            let mut out = Vec::new();
            hubwire::encode(&msg, &mut out);
            timeout(BOUND, io.write_all(&out)).await.unwrap().unwrap();
        }
        let msg = Self::hub_message(&mut io, &mut buf).await;
        assert!(matches!(msg, HubMessage::AuthOk { .. }), "{msg:?}");
        match Self::hub_message(&mut io, &mut buf).await {
            HubMessage::Peers { peers } => peers,
            other => panic!("expected peers, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn an_agent_carries_a_listed_service_and_refuses_the_rest() {
    timeout(Duration::from_secs(60), async {
        let web = echo_origin().await;
        let (local, local_connects) = counting_origin().await;
        let mut w = World::start(web, local).await;
        let gateway = ticket(gateway_id(), RoleSet::of(Role::Gateway));

        // A listed service reaches its origin; bytes go both ways, then a clean end.
        let (status, mut io) = w.open("web", gateway.clone()).await;
        assert_eq!(status, AnswerStatus::Ok);
        let request = b"GET / HTTP/1.1\r\nHost: app.example.com\r\n\r\n";
        timeout(BOUND, io.write_all(request)).await.unwrap().unwrap();
        timeout(BOUND, io.shutdown()).await.unwrap().unwrap();
        let mut back = Vec::new();
        timeout(BOUND, io.read_to_end(&mut back)).await.unwrap().unwrap();
        assert_eq!(back, request, "the echo origin's bytes, and its clean end");
        w.until_metric("meshproxy_agent_streams_total{outcome=\"ok\"}", 1).await;

        // A service the agent does not have.
        let (status, _io) = w.open("nosuch", gateway.clone()).await;
        assert_eq!(status, AnswerStatus::UnknownService);

        // A name that resolves (through the system resolver) outside the allow-list.
        let (status, _io) = w.open("local", gateway.clone()).await;
        assert_eq!(status, AnswerStatus::Forbidden);
        w.until_metric("meshproxy_agent_origin_denials_total", 1).await;

        // No ticket, and a client's ticket instead of a gateway's.
        let (status, _io) = w.open("web", Bytes::new()).await;
        assert_eq!(status, AnswerStatus::NotAdmitted);
        let (status, _io) = w.open("web", ticket(gateway_id(), RoleSet::CLIENT)).await;
        assert_eq!(status, AnswerStatus::NotAdmitted);

        for (outcome, want) in [
            ("ok", 1),
            ("unknown_service", 1),
            ("forbidden", 1),
            ("not_admitted", 2),
            ("busy", 0),
            ("refused", 0),
        ] {
            let series = format!("meshproxy_agent_streams_total{{outcome=\"{outcome}\"}}");
            w.until_metric(&series, want).await;
        }
        w.until_metric("meshproxy_agent_not_admitted_total{reason=\"missing\"}", 1).await;
        w.until_metric("meshproxy_agent_not_admitted_total{reason=\"role_not_allowed\"}", 1).await;
        // The refused name's origin never saw a connection.
        assert_eq!(local_connects.load(Ordering::SeqCst), 0);
        drop(w.net);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn the_hub_lists_the_agent_with_its_labels_and_services_under_role_agent() {
    timeout(Duration::from_secs(60), async {
        let web = echo_origin().await;
        let (local, _) = counting_origin().await;
        let mut w = World::start(web, local).await;
        let deadline = Instant::now() + BOUND;
        while status(&w.agent).await.registered_hubs == 0 {
            assert!(Instant::now() < deadline, "the agent never registered at its hub");
            sleep(Duration::from_millis(10)).await;
        }
        w.dial(hub_id()).await;
        let agents = w.find(Role::Agent).await;
        let [ref record] = agents[..] else { panic!("expected one agent: {agents:?}") };
        assert_eq!((record.peer, record.role), (agent_id(), Role::Agent));
        assert_eq!(record.attrs.labels, ["service:local", "service:web", "site:home"]);
        assert_eq!(record.capacity, 256, "the agent's stream limit");
        let seen = ingress_agent(record).unwrap();
        assert_eq!(seen.labels.get("site").map(String::as_str), Some("home"));
        assert_eq!(seen.services, ["local", "web"]);
        assert!(w.find(Role::Exit).await.is_empty(), "an agent is not an exit");
    })
    .await
    .unwrap();
}
