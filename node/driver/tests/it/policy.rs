//! Exit policy through the driver: a real exit runner whose origin connects
//! and name lookups go through a scripted [`Sockets`] adapter that records
//! every connect and can change a name's answer from one lookup to the next
//! (DNS rebinding). The test plays the client peer on the in-memory peer
//! network and sends raw `ConnectRequest`s.
//!
//! What it shows: the policy is checked on the address actually connected —
//! `Sockets::connect` only ever receives an address the core let through, and
//! a name is looked up once per session, so an answer that changes after the
//! check cannot reach the dial — every denial is counted in the
//! `meshproxy_exit_denials_total` metric, and a denied destination is never
//! connected.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns fail the test by panicking

use crate::common::{base, pipe, FakeNet};
use meshproxy::ops::config::FileConfig;
use meshproxy::ops::identity::Identity;
use meshproxy::ops::metrics::Metrics;
use meshproxy::p2p::{BoxStream, NetCommand, NetEvent};
use meshproxy::runtime::runner::NodeRunner;
use meshproxy::runtime::sockets::{BoxAcceptor, BoxFuture, Sockets};
use meshproxy_core::admission::RoleSet;
use meshproxy_core::config::{ExitConfig, HubContact, NodeConfig};
use meshproxy_core::ids::{PeerId, StreamId};
use meshproxy_core::io::{Protocol, ResolveError};
use meshproxy_core::policy::ExitPolicyConfig;
use meshproxy_core::record::{Attrs, PeerAddr};
use meshproxy_core::target::{Status, TargetAddr};
use meshproxy_core::ticket::{Ticket, TicketSigner};
use meshproxy_core::wire::frame::Decoded;
use meshproxy_core::wire::proxy::{self, ConnectRequest};
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::{sleep, timeout, Instant};

const PORT: u16 = 443;
/// Every await in this file is bounded by this.
const BOUND: Duration = Duration::from_secs(10);

fn exit_id() -> PeerId {
    PeerId::from_u64(2)
}

fn probe_id() -> PeerId {
    PeerId::from_u64(3)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn public() -> IpAddr {
    ip("93.184.216.34")
}

fn own_v4() -> IpAddr {
    ip("198.51.100.7")
}

fn own_v6() -> IpAddr {
    ip("2001:db8::7")
}

// ------------------------------------------------------- scripted sockets

/// What the adapter saw.
#[derive(Default)]
struct Seen {
    /// Per name, the answers still to give; the last one repeats.
    script: BTreeMap<String, VecDeque<Vec<IpAddr>>>,
    lookups: Vec<String>,
    connects: Vec<SocketAddr>,
}

/// A resolver that follows a script and an origin network where every
/// connect succeeds (to an echo), recording both.
#[derive(Clone, Default)]
struct ScriptedSockets(Arc<Mutex<Seen>>);

impl ScriptedSockets {
    fn answer(&self, name: &str, answers: &[&[IpAddr]]) {
        let queue = answers.iter().map(|a| a.to_vec()).collect();
        self.0.lock().unwrap().script.insert(name.to_string(), queue);
    }

    fn connects(&self) -> Vec<SocketAddr> {
        self.0.lock().unwrap().connects.clone()
    }

    fn lookups(&self) -> Vec<String> {
        self.0.lock().unwrap().lookups.clone()
    }
}

impl Sockets for ScriptedSockets {
    fn bind(&self, _addr: SocketAddr) -> BoxFuture<'static, io::Result<BoxAcceptor>> {
        Box::pin(async { Err(io::Error::other("an exit test binds no listeners")) })
    }

    fn connect(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<BoxStream>> {
        self.0.lock().unwrap().connects.push(addr);
        Box::pin(async move {
            let (mine, theirs) = pipe();
            tokio::spawn(async move {
                let (mut r, mut w) = tokio::io::split(theirs);
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
            Ok(Box::new(mine) as BoxStream)
        })
    }

    fn resolve(&self, name: String) -> BoxFuture<'static, Result<Vec<IpAddr>, ResolveError>> {
        let mut seen = self.0.lock().unwrap();
        seen.lookups.push(name.clone());
        let answer = match seen.script.get_mut(&name) {
            Some(queue) if queue.len() > 1 => queue.pop_front(),
            Some(queue) => queue.front().cloned(),
            None => None,
        };
        Box::pin(async move { answer.ok_or(ResolveError::NotFound) })
    }
}

// ------------------------------------------------------------ the exit

/// An exit with the default policy, own addresses [`own_v4`] and [`own_v6`],
/// and no hub: open (it serves without tickets), since these tests are about
/// the policy.
fn exit_config() -> NodeConfig {
    let mut c = base(exit_id(), exit_id());
    c.hubs.clear();
    c.exit = Some(ExitConfig {
        policy: ExitPolicyConfig::default(),
        own_addrs: vec![own_v4(), own_v6()],
        attrs: Attrs::default(),
        addrs: Vec::new(),
        capacity: 16,
        credential: crate::common::credential("exit"),
        relay: meshproxy_core::config::RelayMode::default(),
        open: true,
    });
    c
}

struct World {
    exit: PeerId,
    sockets: ScriptedSockets,
    metrics: Arc<Metrics>,
    probe: mpsc::Sender<NetCommand>,
    events: mpsc::UnboundedReceiver<NetEvent>,
    next_stream: u64,
}

impl World {
    /// A running exit runner (for [`exit_config`]) and a probe peer connected to it.
    async fn start() -> World {
        World::start_with(exit_config()).await
    }

    async fn start_with(config: NodeConfig) -> World {
        let exit = config.peer_id;
        let net = FakeNet::default();
        let sockets = ScriptedSockets::default();
        let metrics = Arc::new(Metrics::new());
        let (cmd_tx, mut cmd_rx) = mpsc::channel::<NetCommand>(64);
        let runner = NodeRunner::new(config, 5, cmd_tx)
            .with_sockets(Arc::new(sockets.clone()))
            .with_metrics(metrics.clone());
        let net_tx = net.attach(exit, meshproxy::ops::assemble::event_sink(runner.sender()));
        tokio::spawn(async move {
            while let Some(cmd) = cmd_rx.recv().await {
                if net_tx.send(cmd).await.is_err() {
                    break;
                }
            }
        });
        tokio::spawn(runner.run());
        let (ev_tx, events) = mpsc::unbounded_channel();
        let probe = net.attach(probe_id(), Box::new(move |e| drop(ev_tx.send(e))));
        let mut w = World { exit, sockets, metrics, probe, events, next_stream: 0 };
        w.probe.send(NetCommand::Dial { peer: exit, addrs: Vec::new(), via: None }).await.unwrap();
        match w.next_event().await {
            NetEvent::PeerConnected { peer, .. } => assert_eq!(peer, exit),
            other => panic!("expected a connection, got {other:?}"),
        }
        w
    }

    async fn next_event(&mut self) -> NetEvent {
        timeout(BOUND, self.events.recv()).await.unwrap().unwrap()
    }

    /// One proxy stream to the exit asking for `target`; the exit's answer
    /// and the stream (spliced to the origin on success).
    async fn connect(&mut self, target: TargetAddr) -> (Status, BoxStream) {
        self.connect_with(target, bytes::Bytes::new()).await
    }

    /// [`connect`](Self::connect) presenting `ticket`.
    async fn connect_with(
        &mut self,
        target: TargetAddr,
        ticket: bytes::Bytes,
    ) -> (Status, BoxStream) {
        self.next_stream += 1;
        let stream = StreamId(self.next_stream);
        let cmd = NetCommand::OpenStream {
            stream,
            peer: self.exit,
            conn: None,
            protocol: Protocol::Proxy,
        };
        self.probe.send(cmd).await.unwrap();
        let mut io = match self.next_event().await {
            NetEvent::StreamOpened { stream: s, io } if s == stream => io,
            other => panic!("expected the stream, got {other:?}"),
        };
        let mut request = Vec::new();
        proxy::encode_request(&ConnectRequest::new(target, None).with_ticket(ticket), &mut request);
        timeout(BOUND, io.write_all(&request)).await.unwrap().unwrap();
        let mut buf = Vec::new();
        loop {
            if let Decoded::Complete { msg, .. } = proxy::decode_response(&buf).unwrap() {
                return (msg.status, io);
            }
            let mut chunk = [0u8; 64];
            let n = timeout(BOUND, io.read(&mut chunk)).await.unwrap().unwrap();
            assert!(n > 0, "the exit closed the stream without answering");
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn denials(&self) -> u64 {
        let text = self.metrics.encode();
        let line = text
            .lines()
            .find(|l| l.starts_with("meshproxy_exit_denials_total "))
            .unwrap_or_else(|| panic!("no denial counter in {text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }

    /// Waits (bounded) until the denial counter reads `want`.
    async fn until_denials(&self, want: u64) {
        let deadline = Instant::now() + BOUND;
        while self.denials() != want {
            assert!(Instant::now() < deadline, "denials stayed {} (want {want})", self.denials());
            sleep(Duration::from_millis(5)).await;
        }
    }

    /// The value of the metric line starting with `series ` (0 if absent).
    fn metric(&self, series: &str) -> u64 {
        let text = self.metrics.encode();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0)
    }
}

fn name(n: &str) -> TargetAddr {
    TargetAddr::Domain(n.to_string(), PORT)
}

fn literal(ip: IpAddr) -> TargetAddr {
    TargetAddr::Ip(SocketAddr::new(ip, PORT))
}

// ------------------------------------------------------------------ tests

#[tokio::test]
async fn a_rebinding_name_is_never_connected_at_its_private_answer() {
    timeout(Duration::from_secs(30), async {
        let mut w = World::start().await;
        let loopback = ip("127.0.0.1");
        let metadata = ip("169.254.169.254");
        // Public at the first lookup, then loopback, then the cloud metadata
        // service in mapped and NAT64 clothing, then public and private mixed.
        w.sockets.answer(
            "rebind.test",
            &[
                &[public()],
                &[loopback],
                &[ip("::ffff:169.254.169.254"), ip("64:ff9b::a9fe:a9fe"), metadata],
                &[loopback, public(), metadata],
            ],
        );
        assert_eq!(w.denials(), 0);

        let (status, mut origin) = w.connect(name("rebind.test")).await;
        assert_eq!(status, Status::Succeeded);
        // The splice is live: the bytes come back from the (echo) origin.
        origin.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        timeout(BOUND, origin.read_exact(&mut back)).await.unwrap().unwrap();
        assert_eq!(&back, b"ping");

        let (status, _s) = w.connect(name("rebind.test")).await;
        assert_eq!(status, Status::NotAllowed);
        w.until_denials(1).await;
        let (status, _s) = w.connect(name("rebind.test")).await;
        assert_eq!(status, Status::NotAllowed);
        w.until_denials(2).await;
        let (status, _s) = w.connect(name("rebind.test")).await;
        assert_eq!(status, Status::Succeeded, "the mixed answer's public address is dialed");
        assert_eq!(w.denials(), 2, "a partly denied answer is not a denial");

        // Exactly the public address was ever connected, once per allowed
        // session, and each session looked the name up exactly once: the
        // address checked is the address connected.
        let public_dial = SocketAddr::new(public(), PORT);
        assert_eq!(w.sockets.connects(), vec![public_dial, public_dial]);
        assert_eq!(w.sockets.lookups(), vec!["rebind.test".to_string(); 4]);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn denied_destinations_are_counted_and_never_connected() {
    timeout(Duration::from_secs(30), async {
        let mut w = World::start().await;
        w.sockets.answer("private.test", &[&[ip("10.0.0.1"), ip("fd00::1"), ip("::1")]]);
        w.sockets.answer("me.test", &[&[own_v4()]]);
        let targets = [
            literal(ip("127.0.0.1")),
            literal(ip("10.255.255.255")),
            literal(ip("169.254.169.254")),
            literal(ip("::1")),
            literal(ip("fe80::1")),
            literal(ip("ff02::1")),
            literal(ip("::ffff:192.168.0.1")),
            literal(ip("64:ff9b::7f00:1")),
            literal(ip("2002:a00:1::1")),
            literal(own_v4()),
            literal(own_v6()),
            literal(ip("::ffff:198.51.100.7")),
            name("2130706433"),
            name("0x7f.0.0.1"),
            name("0177.0.0.1"),
            name("127.1"),
            name("private.test"),
            name("me.test"),
        ];
        for (i, target) in targets.iter().enumerate() {
            let (status, _s) = w.connect(target.clone()).await;
            assert_eq!(status, Status::NotAllowed, "{target}");
            w.until_denials(i as u64 + 1).await;
        }
        assert_eq!(w.sockets.connects(), Vec::<SocketAddr>::new(), "nothing denied is connected");
        // Numeric spellings are judged as the addresses they are, not looked up.
        assert_eq!(w.sockets.lookups(), vec!["private.test".to_string(), "me.test".to_string()]);
        // And the exit still serves what is allowed.
        let (status, _s) = w.connect(literal(public())).await;
        assert_eq!(status, Status::Succeeded);
        assert_eq!(w.sockets.connects(), vec![SocketAddr::new(public(), PORT)]);
        assert_eq!(w.denials(), targets.len() as u64);
    })
    .await
    .unwrap();
}

/// DESIGN.md §6: the exit's own addresses are denied by default — the ones it
/// listens on and advertises, without the operator listing them in
/// `exit.own_addrs` (regression: they used to be denied only when listed, so a
/// client could reach services on the exit host through its public address).
#[tokio::test]
async fn an_exit_denies_its_listen_and_advertised_addresses_without_being_told() {
    timeout(Duration::from_secs(30), async {
        let hub = Identity::from_secret([1; 32]);
        let me = Identity::from_secret([2; 32]);
        let toml = format!(
            r#"listen = ["/ip4/203.0.113.9/tcp/4001"]
[[hubs]]
peer = "{}"
addrs = ["/ip4/203.0.113.1/tcp/4001"]
[exit]
credential = {{ id = "exit", token = "t-exit-token-0123456789" }}
advertise = ["/ip4/198.51.100.20/tcp/4001"]
open = true
"#,
            hub.peer_id_string()
        );
        let file = FileConfig::parse(&toml).unwrap();
        let config =
            file.to_node_config(&me, &|a: &str| Ok(PeerAddr(a.as_bytes().to_vec()))).unwrap();
        let mut w = World::start_with(config).await;
        for own in [ip("203.0.113.9"), ip("198.51.100.20")] {
            let (status, _s) = w.connect(TargetAddr::Ip(SocketAddr::new(own, 22))).await;
            assert_eq!(status, Status::NotAllowed, "the exit let a client reach its own {own}:22");
        }
        // Refused by the policy (the exit is open: no ticket question arises).
        w.until_denials(2).await;
        assert_eq!(w.sockets.connects(), Vec::<SocketAddr>::new());
    })
    .await
    .unwrap();
}

/// A ticket from the test hub's key `signer` for `holder`, valid until
/// `expires` (Unix seconds).
fn ticket(holder: PeerId, signer: &TicketSigner, expires: u64) -> bytes::Bytes {
    let roles = RoleSet::CLIENT;
    bytes::Bytes::from(signer.sign(&Ticket { hub: hub_id(), holder, roles, expires }))
}

// The exit runner reads the wall clock for tickets' expiry; so must the test.
#[allow(clippy::disallowed_methods)]
fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn hub_id() -> PeerId {
    PeerId::from_u64(1)
}

#[tokio::test]
async fn a_closed_exit_serves_only_peers_with_a_ticket_and_dials_nothing_for_the_rest() {
    timeout(Duration::from_secs(30), async {
        let mut config = exit_config();
        config.hubs = vec![HubContact {
            peer: hub_id(),
            addrs: Vec::new(),
            ticket_key: Some(crate::common::hub_signer().public()),
        }];
        if let Some(e) = config.exit.as_mut() {
            e.open = false;
        }
        let mut w = World::start_with(config).await;
        let hub = crate::common::hub_signer();
        let stranger = TicketSigner::from_secret([99; 32]);
        let in_an_hour = unix_now() + 3600;
        // With the hub's ticket a request goes through.
        let (status, _s) =
            w.connect_with(literal(public()), ticket(probe_id(), &hub, in_an_hour)).await;
        assert_eq!(status, Status::Succeeded);
        assert_eq!(w.sockets.connects(), vec![SocketAddr::new(public(), PORT)]);
        // The forged one last: after it the exit refuses this peer unchecked
        // for a second (the core's `a_forger_gets_no_signature_checks_for_a_second`).
        let refused = [
            (bytes::Bytes::new(), "missing"),
            (ticket(exit_id(), &hub, in_an_hour), "wrong_holder"),
            // Expired longer ago than the clock-skew allowance.
            (ticket(probe_id(), &hub, unix_now() - 600), "expired"),
            (bytes::Bytes::from_static(b"not a ticket"), "malformed"),
            (ticket(probe_id(), &stranger, in_an_hour), "bad_signature"),
        ];
        for (presented, reason) in refused {
            let (status, _s) = w.connect_with(literal(public()), presented).await;
            assert_eq!(status, Status::NotAllowed, "{reason}");
            let series = format!("meshproxy_exit_not_admitted_total{{reason=\"{reason}\"}}");
            assert_eq!(w.metric(&series), 1, "{reason}");
        }
        assert_eq!(w.sockets.connects().len(), 1, "a refused peer made the exit dial");
        assert!(w.sockets.lookups().is_empty(), "a refused peer made the exit resolve");
        assert_eq!(w.denials(), 0, "refusing a ticket is not a policy denial");
    })
    .await
    .unwrap();
}
