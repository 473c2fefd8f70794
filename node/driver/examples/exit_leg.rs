//! The exit leg alone, for `cargo xtask bench`: a load generator that is a
//! meshproxy client without the client.
//!
//! The bench's "through meshproxy" figures mix two proxy processes (client
//! and exit). To see what the exit costs on its own, this speaks to an exit
//! the way a client's data plane does — libp2p TCP + Noise + Yamux through
//! the driver's own [`NetworkActor`], then `/meshproxy/proxy/1` — but it
//! generates the bytes itself instead of relaying an app's. It asks the exit
//! to connect to the bench's counting origin (which greets with one byte,
//! counts what it receives until end of stream, and answers the count as 8
//! big-endian bytes), exactly like `xtask bench`'s `load::transfer`.
//!
//! ```text
//! exit_leg --hub /ip4/127.0.0.1/tcp/PORT/p2p/HUB --credential ID=TOKEN \
//!          --exit /ip4/127.0.0.1/tcp/PORT/p2p/PEER --origin 127.0.0.1:PORT
//! ```
//!
//! Exits serve only peers a hub admitted, so it first passes the hub's
//! challenge as a client (holding that hub stream open for its lifetime) and
//! presents the ticket the hub hands out in every request, like a client.
//!
//! Once one proxied connection has reached the origin it prints `ready`.
//! Each stdin line `transfer TOTAL STREAMS` then sends TOTAL bytes split
//! over STREAMS proxy streams and prints `took: SECONDS` (from the moment
//! every stream is set up to the last count back from the origin), or
//! `error: WHY`. The libp2p connection stays up between transfers, as a warm
//! client's does; it is dialed again if the exit dropped it.
#![forbid(unsafe_code)]
// A bench tool owns its clock and its lookup table's order does not matter.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use bytes::Bytes;
use libp2p::{multiaddr::Protocol as Ma, Multiaddr};
use meshproxy::p2p::network::{addr_to_core, to_core, NetConfig, NetHandle, NetworkActor};
use meshproxy::p2p::{BoxStream, NetCommand, NetEvent};
use meshproxy_core::admission::Credential;
use meshproxy_core::ids::{PeerId, StreamId};
use meshproxy_core::io::Protocol;
use meshproxy_core::target::{Status, TargetAddr};
use meshproxy_core::wire::hub::{self as hubwire, HubMessage, Role, HUB_VERSION};
use meshproxy_core::wire::proxy::{decode_response, encode_request, ConnectRequest};
use meshproxy_core::wire::Decoded;
use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::timeout;

/// The counting origin's greeting (`HELLO` in xtask's `bench/load.rs`).
const HELLO: u8 = 0x2a;
/// Write chunk size, the same as xtask's load generator.
const CHUNK: usize = 64 * 1024;
/// Bound on dialing the exit, and on setting up one proxied connection.
const SETUP_DEADLINE: Duration = Duration::from_secs(15);
/// Bound on one transfer, as xtask's.
const TRANSFER_DEADLINE: Duration = Duration::from_secs(300);

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    // The harness reads these lines; a closed stdout means nobody is asking.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Outbound streams waiting for the network's answer, by the id we gave them.
type Pending = Arc<Mutex<HashMap<StreamId, oneshot::Sender<Option<BoxStream>>>>>;

/// A libp2p peer network with the exit as its only peer.
struct Leg {
    net: NetHandle,
    pending: Pending,
    /// Answers to our dials: whether a connection to the exit is up.
    dialed: tokio::sync::Mutex<mpsc::UnboundedReceiver<bool>>,
    exit: PeerId,
    exit_addr: Multiaddr,
    origin: SocketAddr,
    next_stream: AtomicU64,
    /// The hub's ticket, presented in every request.
    ticket: std::sync::OnceLock<Bytes>,
    /// The admitted hub stream: the admission lasts as long as it is open.
    hub_stream: tokio::sync::Mutex<Option<BoxStream>>,
}

impl Leg {
    fn start(exit: &Multiaddr, origin: SocketAddr) -> Result<Leg, String> {
        let mut exit_addr = exit.clone();
        let Some(Ma::P2p(peer)) = exit_addr.pop() else {
            return Err(format!("{exit}: the exit address must end in /p2p/PEER"));
        };
        let mut config = NetConfig::new(libp2p::identity::Keypair::generate_ed25519());
        // A plain dialer, like a client that is directly reachable: no relay, no autonat.
        config.relay_client = false;
        config.autonat = None;
        // Other routes run between two transfers; the link must outlive them.
        config.idle_connection_timeout = Duration::from_secs(3600);
        let pending: Pending = Arc::default();
        let (dial_tx, dial_rx) = mpsc::unbounded_channel();
        let waiting = pending.clone();
        let net = NetworkActor::spawn(config, move |event| match event {
            NetEvent::StreamOpened { stream, io } => answer(&waiting, stream, Some(io)),
            NetEvent::StreamRefused { stream } => answer(&waiting, stream, None),
            NetEvent::PeerConnected { .. } => {
                let _ = dial_tx.send(true);
            }
            NetEvent::DialFailed { .. } => {
                let _ = dial_tx.send(false);
            }
            // Nobody opens streams to a load generator; dropping one closes it.
            _ => {}
        })
        .map_err(|e| format!("network: {e}"))?;
        Ok(Leg {
            net,
            pending,
            dialed: tokio::sync::Mutex::new(dial_rx),
            exit: to_core(&peer),
            exit_addr,
            origin,
            next_stream: AtomicU64::new(0),
            ticket: std::sync::OnceLock::new(),
            hub_stream: tokio::sync::Mutex::new(None),
        })
    }

    /// Dials the hub at `hub` (`MULTIADDR/p2p/PEER`), passes its challenge as
    /// a client with `credential`, and keeps the ticket it hands out.
    async fn admit(&self, hub: &Multiaddr, credential: &Credential) -> Result<(), String> {
        let mut hub_addr = hub.clone();
        let Some(Ma::P2p(hub_peer)) = hub_addr.pop() else {
            return Err(format!("{hub}: the hub address must end in /p2p/PEER"));
        };
        let hub_peer = to_core(&hub_peer);
        self.dial(hub_peer, &hub_addr).await?;
        let mut io = self.open_stream(hub_peer, Protocol::Hub).await?;
        let mut inbox = Vec::new();
        let run = async {
            let HubMessage::Challenge { nonce, .. } = read_hub(&mut io, &mut inbox).await? else {
                return Err("the hub did not send a challenge".to_owned());
            };
            let proof =
                credential.prove(&nonce, &hub_peer, &self.net.local_core_peer_id(), Role::Client);
            let auth = HubMessage::Auth {
                version: HUB_VERSION,
                role: Role::Client,
                key_id: credential.key_id.clone(),
                proof,
            };
            let mut bytes = Vec::new();
            hubwire::encode(&auth, &mut bytes);
            io.write_all(&bytes).await.map_err(|e| format!("sending Auth: {e}"))?;
            match read_hub(&mut io, &mut inbox).await? {
                HubMessage::AuthOk { grant } => Ok(Bytes::from(grant.ticket)),
                other => Err(format!("the hub refused admission: {other:?}")),
            }
        };
        let ticket = timeout(SETUP_DEADLINE, run).await.map_err(|_| "admission timed out")??;
        let _ = self.ticket.set(ticket);
        *self.hub_stream.lock().await = Some(io);
        Ok(())
    }

    /// Makes sure a connection to the exit is up (the actor answers at once
    /// when one is).
    async fn connect(&self) -> Result<(), String> {
        self.dial(self.exit, &self.exit_addr).await
    }

    async fn dial(&self, peer: PeerId, addr: &Multiaddr) -> Result<(), String> {
        let mut answers = self.dialed.lock().await;
        while answers.try_recv().is_ok() {}
        let dial = NetCommand::Dial { peer, addrs: vec![addr_to_core(addr)], via: None };
        self.net.commands.send(dial).await.map_err(|_| "the network actor is gone".to_owned())?;
        match timeout(SETUP_DEADLINE, answers.recv()).await {
            Ok(Some(true)) => Ok(()),
            Ok(Some(false)) => Err(format!("dialing {addr} failed")),
            Ok(None) => Err("the network actor is gone".to_owned()),
            Err(_) => Err(format!("dialing {addr} timed out")),
        }
    }

    /// An outbound stream to `peer` on `protocol`.
    async fn open_stream(&self, peer: PeerId, protocol: Protocol) -> Result<BoxStream, String> {
        let stream = StreamId::outside(self.next_stream.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap_or_else(PoisonError::into_inner).insert(stream, tx);
        let open = NetCommand::OpenStream { stream, peer, conn: None, protocol };
        self.net.commands.send(open).await.map_err(|_| "the network actor is gone")?;
        rx.await.ok().flatten().ok_or_else(|| "the peer refused the stream".to_owned())
    }

    /// A `/meshproxy/proxy/1` stream the exit has connected to the origin,
    /// with the origin's greeting read.
    async fn open(&self) -> Result<BoxStream, String> {
        let run = async {
            let mut io = self
                .open_stream(self.exit, Protocol::Proxy)
                .await
                .map_err(|_| "the exit refused the stream")?;
            let ticket = self.ticket.get().cloned().unwrap_or_default();
            let req = ConnectRequest::new(TargetAddr::Ip(self.origin), None).with_ticket(ticket);
            let mut request = Vec::new();
            encode_request(&req, &mut request);
            io.write_all(&request).await.map_err(|_| "sending the connect request failed")?;
            // The response, then the origin's greeting, which may share a read.
            let mut got = Vec::with_capacity(64);
            let mut buf = [0u8; 64];
            let rest = loop {
                let n = io.read(&mut buf).await.map_err(|_| "reading the response failed")?;
                if n == 0 {
                    return Err("the exit closed the stream before answering");
                }
                got.extend_from_slice(buf.get(..n).unwrap_or(&buf));
                match decode_response(&got) {
                    Ok(Decoded::Complete { msg, consumed }) => {
                        if msg.status != Status::Succeeded {
                            return Err("the exit did not connect to the origin");
                        }
                        break got.split_off(consumed.min(got.len()));
                    }
                    Ok(Decoded::Incomplete) => {}
                    Err(_) => return Err("malformed connect response"),
                }
            };
            let hello = match rest.first() {
                Some(b) => *b,
                None => io.read_u8().await.map_err(|_| "no greeting from the origin")?,
            };
            if hello != HELLO || rest.len() > 1 {
                return Err("unexpected bytes instead of the origin's greeting");
            }
            Ok(io)
        };
        match timeout(SETUP_DEADLINE, run).await {
            Ok(r) => r.map_err(str::to_owned),
            Err(_) => Err("setting up a proxied connection timed out".to_owned()),
        }
    }

    /// Sends `total` bytes over `streams` proxied connections; the wall time
    /// from all set up to the last count back.
    async fn transfer(self: &Arc<Leg>, total: u64, streams: usize) -> Result<Duration, String> {
        self.connect().await?;
        let streams = streams.max(1);
        let per_stream = total / streams as u64;
        let barrier = Arc::new(tokio::sync::Barrier::new(streams));
        let payload: Arc<Vec<u8>> =
            Arc::new((0..CHUNK).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect());
        let mut set = JoinSet::new();
        for _ in 0..streams {
            let (leg, barrier, payload) = (self.clone(), barrier.clone(), payload.clone());
            set.spawn(async move {
                let opened = leg.open().await;
                barrier.wait().await;
                let started = Instant::now();
                send_and_count(opened?, &payload, per_stream).await?;
                Ok::<_, String>((started, Instant::now()))
            });
        }
        let run = async {
            let mut span: Option<(Instant, Instant)> = None;
            while let Some(joined) = set.join_next().await {
                let (a, b) = joined.map_err(|_| "a sender task died".to_owned())??;
                span = Some(span.map_or((a, b), |(s, e)| (s.min(a), e.max(b))));
            }
            Ok(span.map_or(Duration::ZERO, |(s, e)| e.duration_since(s)))
        };
        timeout(TRANSFER_DEADLINE, run).await.map_err(|_| "transfer timed out".to_owned())?
    }
}

/// Reads one hub message from `io`, `inbox` keeping what came after it.
async fn read_hub(io: &mut BoxStream, inbox: &mut Vec<u8>) -> Result<HubMessage, String> {
    let mut buf = [0u8; 1024];
    loop {
        match hubwire::decode(inbox) {
            Ok(Decoded::Complete { msg, consumed }) => {
                inbox.drain(..consumed);
                return Ok(msg);
            }
            Ok(Decoded::Incomplete) => {}
            Err(e) => return Err(format!("malformed hub message: {e}")),
        }
        let n = io.read(&mut buf).await.map_err(|e| format!("reading the hub: {e}"))?;
        if n == 0 {
            return Err("the hub closed the stream".to_owned());
        }
        inbox.extend_from_slice(buf.get(..n).unwrap_or(&buf));
    }
}

fn answer(pending: &Pending, stream: StreamId, io: Option<BoxStream>) {
    let waiter = pending.lock().unwrap_or_else(PoisonError::into_inner).remove(&stream);
    if let Some(tx) = waiter {
        let _ = tx.send(io);
    }
}

/// Writes `bytes`, ends the sending side, and checks the origin's count.
async fn send_and_count(io: BoxStream, payload: &[u8], bytes: u64) -> Result<(), String> {
    let (mut r, mut w) = tokio::io::split(io);
    let send = async {
        let mut left = bytes;
        while left > 0 {
            let n = left.min(payload.len() as u64) as usize;
            w.write_all(payload.get(..n).unwrap_or(payload)).await.map_err(|e| e.to_string())?;
            left -= n as u64;
        }
        w.shutdown().await.map_err(|e| e.to_string())
    };
    let recv = async {
        let mut count = [0u8; 8];
        r.read_exact(&mut count).await.map_err(|e| format!("reading the count: {e}"))?;
        Ok::<u64, String>(u64::from_be_bytes(count))
    };
    let (sent, counted) = tokio::join!(send, recv);
    sent?;
    let counted = counted?;
    if counted != bytes {
        return Err(format!("sent {bytes} bytes, the origin counted {counted}"));
    }
    Ok(())
}

/// `transfer TOTAL STREAMS`.
fn parse_transfer(line: &str) -> Option<(u64, usize)> {
    let mut words = line.split_whitespace();
    match (words.next(), words.next(), words.next(), words.next()) {
        (Some("transfer"), Some(total), Some(streams), None) => {
            Some((total.parse().ok()?, streams.parse().ok()?))
        }
        _ => None,
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: exit_leg --hub MULTIADDR/p2p/HUB --credential ID=TOKEN \
                 --exit MULTIADDR/p2p/PEER --origin IP:PORT";
    let (hub, credential, exit, origin) = match args.as_slice() {
        [h, hub, c, cred, e, exit, o, origin]
            if (h.as_str(), c.as_str(), e.as_str(), o.as_str())
                == ("--hub", "--credential", "--exit", "--origin") =>
        {
            let cred =
                cred.split_once('=').map(|(id, token)| Credential::new(id, token.as_bytes()));
            match (hub.parse::<Multiaddr>(), cred, exit.parse::<Multiaddr>(), origin.parse()) {
                (Ok(h), Some(c), Ok(e), Ok(o)) => (h, c, e, o),
                _ => {
                    eprintln!("exit_leg: unreadable arguments; {usage}");
                    return ExitCode::FAILURE;
                }
            }
        }
        _ => {
            eprintln!("{usage}");
            return ExitCode::FAILURE;
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("exit_leg: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let leg = Arc::new(Leg::start(&exit, origin)?);
        leg.admit(&hub, &credential).await?;
        leg.connect().await?;
        drop(leg.open().await?);
        say("ready");
        // Read stdin on a plain thread; the transfers run on the runtime.
        let (line_tx, mut lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::stdin().lines() {
                let Ok(line) = line else { break };
                if line_tx.send(line).is_err() {
                    break;
                }
            }
        });
        while let Some(line) = lines.recv().await {
            match parse_transfer(&line) {
                Some((total, streams)) => match leg.transfer(total, streams).await {
                    Ok(took) => say(&format!("took: {}", took.as_secs_f64())),
                    Err(e) => say(&format!("error: {e}")),
                },
                None => say(&format!("error: expected `transfer TOTAL STREAMS`, got `{line}`")),
            }
        }
        Ok::<(), String>(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("exit_leg: {e}");
            ExitCode::FAILURE
        }
    }
}
