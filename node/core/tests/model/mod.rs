//! A faithful model driver for [`Node`]: arbitrary sequences of inputs
//! ([`Op`]), fed the way a correct driver would (never reusing ids, never
//! reporting on a stream that is gone or handed to the data plane), with every
//! output checked against what the driver knows. Shared by the property tests
//! (`machines_prop.rs`, proptest strategies) and the `core_model` fuzz target
//! (`fuzz/`, `Arbitrary`), whose corpus also replays here.

use crate::common::*;
use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use core::time::Duration;
use meshproxy_core::config::{ListenerConfig, ListenerProtocol, NodeConfig, StickyMode};
use meshproxy_core::ids::{ConnId, ListenerId, PeerId, QueryId, SessionId, StreamId};
use meshproxy_core::io::{
    CircuitLimit, Close, Input, Output, Path, Protocol, Reachability, ResolveError, SpliceEnd,
    SpliceReport, StateSnapshot,
};
use meshproxy_core::record::PeerFilter;
use meshproxy_core::target::{Status, TargetAddr};
use meshproxy_core::time::Instant;
use meshproxy_core::wire::frame::Decoded;
use meshproxy_core::wire::hub::{
    self as hubwire, HubErrorCode, HubMessage, Role, TicketGrant, HUB_VERSION,
};
use meshproxy_core::wire::proxy::{ConnectRequest, ConnectResponse, PROXY_VERSION};
use meshproxy_core::Node;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

// ------------------------------------------------------------------ inputs

fn peers() -> [PeerId; 6] {
    [hub_id(), exit_id(1), exit_id(2), exit_id(3), client_id(), PeerId::from_u64(555)]
}

fn targets() -> Vec<TargetAddr> {
    vec![
        ip_target(public_ip(1), 443),
        ip_target("10.0.0.1".parse().unwrap(), 80),
        domain_target("example.com", 443),
        domain_target("2130706433", 80),
        ip_target("::1".parse().unwrap(), 22),
        ip_target("2606:2800:220:1::1".parse().unwrap(), 80),
    ]
}

fn resolved_ips() -> [IpAddr; 5] {
    [
        public_ip(1),
        public_ip(2),
        "10.0.0.1".parse().unwrap(),
        "::1".parse().unwrap(),
        "127.0.0.1".parse().unwrap(),
    ]
}

const USERS: [&str; 3] = ["u-session-abc", "u-session-xyz", "u-country-de"];

/// Bytes a peer or app might send, valid-looking or not.
#[derive(Clone, Debug, Arbitrary)]
pub enum Payload {
    Raw(Vec<u8>),
    SocksGreeting,
    /// Greeting, optional user/pass, CONNECT, and some pipelined bytes.
    SocksAll {
        target: usize,
        user: Option<usize>,
    },
    HttpConnect {
        target: usize,
    },
    /// A `ConnectRequest`; `ticket` picks what it carries: 0 none, 1 the
    /// harness hub's ticket for the stream's peer, 2 one for another peer,
    /// 3 one from an unknown hub, else garbage.
    ProxyRequest {
        target: usize,
        version: u8,
        session: bool,
        ticket: u8,
    },
    ProxyResponse {
        status: u8,
        trailing: Vec<u8>,
    },
    HubChallenge([u8; 4]),
    /// Answers the challenge this node sent on the stream (good or bad proof).
    HubAuth {
        role: bool,
        good: bool,
    },
    HubAuthOk,
    /// A renewed ticket lasting this many seconds.
    HubTicket(u32),
    HubRenewTicket,
    HubPeers(Vec<u8>),
    HubRegistered(u32),
    HubHeartbeatAck(u32),
    HubError(u8),
    HubRegister,
    HubHeartbeat,
    HubFind(u16),
    HubResolve(u8),
    /// A prefix of another payload.
    Truncated(Box<Payload>, usize),
    /// What the stream's far side would plausibly send next (the number varies it).
    Fitting(u8),
}

/// What a stream is, as the driver knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    App,
    InboundProxy,
    InboundHub,
    OutProxy,
    OutHub,
    Origin,
}

#[derive(Clone, Debug, Arbitrary)]
pub enum Op {
    Accept {
        listener: u8,
    },
    Inbound {
        peer: usize,
        hub: bool,
    },
    Data {
        stream: usize,
        payload: Payload,
        split: Option<usize>,
    },
    Closed {
        stream: usize,
        reset: bool,
    },
    /// A new connection (a fresh id, as a real driver allocates), direct or
    /// through the hub's relay.
    PeerUp {
        peer: usize,
        relayed: bool,
    },
    /// One of a peer's connections goes down.
    PeerDown {
        peer: usize,
        which: u8,
    },
    /// Autonat's verdict (0 unknown, 1 public, 2 private).
    Reachability(u8),
    /// The answer to a reservation (0 accepted, 1 failed, 2 lost), with an
    /// expiry in seconds if any.
    Reservation {
        hub: usize,
        answer: u8,
        expires_s: Option<u16>,
    },
    /// A hole punch asked for fails.
    PunchFailed {
        which: usize,
    },
    DialFailed {
        peer: usize,
    },
    Opened {
        which: usize,
    },
    Refused {
        which: usize,
    },
    Resolved {
        which: usize,
        result: Result<Vec<usize>, bool>,
    },
    OriginUp {
        which: usize,
    },
    OriginFailed {
        which: usize,
        status: u8,
    },
    SpliceEnded {
        which: usize,
        how: u8,
    },
    Advance {
        ms: u32,
    },
    Restore {
        persisted: bool,
        raw: Vec<u8>,
    },
    /// The natural next step of something under way: a dial connects, a
    /// stream opens, an origin answers, a name resolves, or a stream's far
    /// side says what it would say next.
    Progress(u8),
}

// ------------------------------------------------------------------ driver

/// A faithful driver: it never reuses ids, never reports on a stream that is
/// gone or handed to the data plane, answers only what was asked — and checks
/// every output against what it knows.
struct Driver {
    node: Node,
    now: Instant,
    max_sessions: usize,
    max_hub_streams: Option<usize>,
    /// (Hubs) the pre-auth budget and the per-peer stream cap.
    hub_budgets: Option<(usize, usize)>,
    next_outside: u64,
    /// Every stream ever named, in order of first sight.
    pool: Vec<StreamId>,
    /// Streams that carry data under the core's control.
    live: BTreeSet<StreamId>,
    /// Streams the core closed, or that failed or ended: never to be touched again.
    dead: BTreeSet<StreamId>,
    spliced: BTreeSet<StreamId>,
    splices: Vec<(StreamId, StreamId)>,
    /// Dials without an answer, with the relay each goes through.
    pending_dials: BTreeMap<PeerId, Option<PeerId>>,
    /// Most exit dials the client may have under way (plus one per hub link).
    max_dials: usize,
    hubs: BTreeSet<PeerId>,
    /// Live connections per peer, and whether each is relayed.
    conns: BTreeMap<PeerId, BTreeMap<ConnId, bool>>,
    next_conn: u64,
    pending_reserves: BTreeSet<PeerId>,
    /// Peers the node's relay serves, by its `Admit`/`Revoke`.
    admitted: BTreeSet<PeerId>,
    pending_punches: BTreeSet<PeerId>,
    pending_opens: Vec<StreamId>,
    pending_origins: Vec<StreamId>,
    queries: Vec<QueryId>,
    stream_peer: BTreeMap<StreamId, PeerId>,
    kinds: BTreeMap<StreamId, Kind>,
    /// How many fitting payloads went on each stream.
    said: BTreeMap<StreamId, usize>,
    nonces: BTreeMap<StreamId, [u8; 32]>,
    persisted: Option<Vec<u8>>,
}

fn pick<T: Copy>(v: &[T], i: usize) -> Option<T> {
    (!v.is_empty()).then(|| v[i % v.len()])
}

impl Driver {
    fn new(config: NodeConfig, seed: u64) -> Driver {
        let limits = config.limits;
        let mut max_sessions = 0;
        if config.client.is_some() {
            max_sessions += limits.max_client_sessions;
        }
        if config.exit.is_some() {
            max_sessions += limits.max_exit_sessions;
        }
        let only_hub = config.client.is_none() && config.exit.is_none() && config.hub.is_some();
        let has_hub = config.hub.is_some();
        let hubs: BTreeSet<PeerId> = config.hubs.iter().map(|h| h.peer).collect();
        let max_dials = limits.max_pending_dials + hubs.len();
        let node = Node::new(config, seed, t0());
        let mut d = Driver {
            node,
            now: t0(),
            max_sessions,
            max_hub_streams: only_hub.then_some(limits.max_hub_streams),
            hub_budgets: has_hub
                .then_some((limits.max_preauth_hub_streams, limits.max_hub_streams_per_peer)),
            next_outside: 0,
            pool: Vec::new(),
            live: BTreeSet::new(),
            dead: BTreeSet::new(),
            spliced: BTreeSet::new(),
            splices: Vec::new(),
            pending_dials: BTreeMap::new(),
            max_dials,
            hubs,
            conns: BTreeMap::new(),
            next_conn: 0,
            pending_reserves: BTreeSet::new(),
            admitted: BTreeSet::new(),
            pending_punches: BTreeSet::new(),
            pending_opens: Vec::new(),
            pending_origins: Vec::new(),
            queries: Vec::new(),
            stream_peer: BTreeMap::new(),
            kinds: BTreeMap::new(),
            said: BTreeMap::new(),
            nonces: BTreeMap::new(),
            persisted: None,
        };
        d.collect();
        d.fire_due();
        d
    }

    fn fresh(&mut self) -> StreamId {
        self.next_outside += 1;
        let s = StreamId::outside(self.next_outside);
        self.pool.push(s);
        s
    }

    /// Whether the driver may still report data or a close on `s`.
    fn usable(&self, s: StreamId) -> bool {
        self.live.contains(&s) && !self.dead.contains(&s) && !self.spliced.contains(&s)
    }

    fn usable_streams(&self) -> Vec<StreamId> {
        self.live.iter().copied().filter(|s| self.usable(*s)).collect()
    }

    fn collect(&mut self) {
        let mut closed = Vec::new();
        while let Some(o) = self.node.poll_output() {
            if let Output::Close { stream, .. } = &o {
                closed.push(*stream);
            }
            self.check_output(o);
        }
        for s in closed {
            assert!(!self.node.tracks_stream(s), "{s:?} closed but still tracked");
        }
        for s in &self.spliced {
            assert!(self.node.tracks_stream(*s), "spliced {s:?} forgotten before its end");
        }
        let r = self.node.resources();
        assert!(
            r.sessions <= self.max_sessions,
            "sessions {} over {}",
            r.sessions,
            self.max_sessions
        );
        if let Some(max) = self.max_hub_streams {
            assert!(r.streams <= max, "hub streams {} over {max}", r.streams);
        }
        if let Some((preauth, per_peer)) = self.hub_budgets {
            assert!(
                r.preauth_hub_streams <= preauth,
                "{} unadmitted hub streams",
                r.preauth_hub_streams
            );
            assert!(
                r.busiest_peer_hub_streams <= per_peer,
                "one peer holds {} hub streams",
                r.busiest_peer_hub_streams
            );
        } else {
            assert_eq!((r.preauth_hub_streams, r.busiest_peer_hub_streams), (0, 0));
        }
        assert!(
            r.pending_dials <= self.pending_dials.len(),
            "the node waits on {} dials, {} were asked and unanswered",
            r.pending_dials,
            self.pending_dials.len()
        );
        // The node's own count: dials it gave up at their deadline stay
        // unanswered here, but no longer count against its limit (the fuzzer
        // found this model's first version counting them).
        assert!(
            r.pending_dials <= self.max_dials,
            "{} dials under way, over the limit {}",
            r.pending_dials,
            self.max_dials
        );
    }

    fn check_output(&mut self, o: Output) {
        match o {
            Output::Transmit { stream, data } => {
                assert!(!self.dead.contains(&stream), "transmit on closed {stream:?}");
                assert!(!self.spliced.contains(&stream), "transmit on spliced {stream:?}");
                if let Ok(Decoded::Complete { msg: HubMessage::Challenge { nonce, .. }, .. }) =
                    hubwire::decode(&data)
                {
                    self.nonces.insert(stream, nonce);
                }
            }
            Output::Close { stream, .. } => {
                assert!(!self.dead.contains(&stream), "{stream:?} closed twice or after it failed");
                assert!(!self.spliced.contains(&stream), "close of spliced {stream:?}");
                self.dead.insert(stream);
                self.live.remove(&stream);
                self.pending_opens.retain(|s| *s != stream);
                self.pending_origins.retain(|s| *s != stream);
            }
            Output::Dial { peer, via, .. } => {
                if let Some(hub) = via {
                    assert!(self.hubs.contains(&hub), "dial via {hub}, not a hub of ours");
                }
                // A second dial to the same peer replaces the first: the node
                // gave that one up at its deadline.
                self.pending_dials.insert(peer, via);
            }
            Output::Reserve { hub } => {
                assert!(self.hubs.contains(&hub), "reservation at {hub}, not a hub of ours");
                self.pending_reserves.insert(hub);
            }
            Output::Unreserve { hub } => {
                assert!(self.hubs.contains(&hub), "unreserve at {hub}, not a hub of ours");
                self.pending_reserves.remove(&hub);
            }
            // These machines run no gateway.
            Output::IngressRespond { .. } | Output::IngressForward { .. } => {
                panic!("an ingress output from a node without a gateway: {o:?}")
            }
            Output::Admit { peer } => {
                assert!(self.admitted.insert(peer), "{peer} admitted twice without a revoke");
            }
            Output::Revoke { peer } => {
                assert!(self.admitted.remove(&peer), "{peer} revoked but not admitted");
            }
            Output::HolePunch { peer } => {
                let relayed = self.conns.get(&peer).is_some_and(|c| c.values().any(|r| *r));
                assert!(relayed, "hole punch towards {peer} without a relayed connection");
                self.pending_punches.insert(peer);
            }
            Output::OpenStream { stream, peer, conn, protocol } => {
                if let Some(conn) = conn {
                    let live = self.conns.get(&peer).is_some_and(|c| c.contains_key(&conn));
                    assert!(live, "stream on {conn:?} to {peer}, which is not up");
                }
                assert!(!stream.is_outside() && !self.pool.contains(&stream), "reused {stream:?}");
                let kind = if protocol == Protocol::Hub { Kind::OutHub } else { Kind::OutProxy };
                self.kinds.insert(stream, kind);
                self.pool.push(stream);
                self.pending_opens.push(stream);
            }
            Output::ConnectOrigin { stream, addr } => {
                assert!(!stream.is_outside() && !self.pool.contains(&stream), "reused {stream:?}");
                let policy = meshproxy_core::policy::ExitPolicy::new(
                    &Default::default(),
                    &self
                        .node
                        .config()
                        .exit
                        .as_ref()
                        .map(|e| e.own_addrs.clone())
                        .unwrap_or_default(),
                );
                assert!(policy.check(addr.ip(), addr.port()).is_ok(), "dialed denied {addr}");
                self.kinds.insert(stream, Kind::Origin);
                self.pool.push(stream);
                self.pending_origins.push(stream);
            }
            Output::Resolve { query, .. } => self.queries.push(query),
            Output::Splice { a, b, .. } => {
                for s in [a, b] {
                    assert!(!self.dead.contains(&s) && !self.spliced.contains(&s), "splice {s:?}");
                    self.spliced.insert(s);
                    self.live.remove(&s);
                }
                self.splices.push((a, b));
            }
            Output::Persist(s) => self.persisted = Some(s.sticky),
            Output::Event(_) => {}
        }
    }

    /// Fires the deadlines due now, as a driver does before anything else.
    fn fire_due(&mut self) {
        if self.node.poll_timeout().is_some_and(|(at, _)| at <= self.now) {
            self.node.handle_timeout(self.now);
            self.collect();
        }
        if let Some((at, why)) = self.node.poll_timeout() {
            assert!(at > self.now, "{why:?} at {at} still due after handle_timeout({})", self.now);
        }
    }

    fn input(&mut self, input: Input) {
        self.node.handle_input(self.now, input);
        self.collect();
        if let Some((at, why)) = self.node.poll_timeout() {
            assert!(at >= self.now, "{why:?} armed at {at}, before now {}", self.now);
        }
        self.fire_due();
    }

    fn advance(&mut self, d: Duration) {
        let until = self.now + d;
        while let Some((at, _)) = self.node.poll_timeout() {
            if at > until {
                break;
            }
            self.now = self.now.max(at);
            self.fire_due();
        }
        self.now = until;
    }

    fn bytes(&self, stream: StreamId, p: &Payload) -> Vec<u8> {
        let t = targets();
        match p {
            Payload::Raw(v) => v.clone(),
            Payload::SocksGreeting => SOCKS_NO_AUTH_GREETING.to_vec(),
            Payload::SocksAll { target, user } => {
                let mut v = match user {
                    None => SOCKS_NO_AUTH_GREETING.to_vec(),
                    Some(u) => {
                        let mut v = SOCKS_USERPASS_GREETING.to_vec();
                        v.extend(socks_auth(USERS[*u % USERS.len()], "pw"));
                        v
                    }
                };
                v.extend(socks_connect(&t[*target % t.len()]));
                v.extend_from_slice(b"pipelined");
                v
            }
            Payload::HttpConnect { target } => {
                let authority = match &t[*target % t.len()] {
                    TargetAddr::Ip(sa) => sa.to_string(),
                    TargetAddr::Domain(n, p) => format!("{n}:{p}"),
                };
                format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\nearly")
                    .into_bytes()
            }
            Payload::ProxyRequest { target, version, session, ticket } => {
                let peer = self.stream_peer.get(&stream).copied().unwrap_or(client_id());
                let ticket = match ticket % 5 {
                    0 => Bytes::new(),
                    1 => ticket_for(peer),
                    2 => ticket_for(PeerId::from_u64(999)),
                    3 => signed_ticket(
                        &meshproxy_core::ticket::TicketSigner::from_secret([2; 32]),
                        PeerId::from_u64(2),
                        peer,
                        meshproxy_core::admission::RoleSet::CLIENT,
                        u64::MAX,
                    ),
                    _ => Bytes::from_static(b"not a ticket"),
                };
                request_bytes(&ConnectRequest {
                    version: *version,
                    target: t[*target % t.len()].clone(),
                    session: session.then_some(SessionId(7)),
                    ticket,
                })
            }
            Payload::ProxyResponse { status, trailing } => {
                let mut v = Vec::new();
                let status = Status::from_code(*status).unwrap_or(Status::GeneralFailure);
                meshproxy_core::wire::proxy::encode_response(
                    &ConnectResponse { status, bound: None },
                    &mut v,
                );
                v.extend_from_slice(trailing);
                v
            }
            Payload::HubChallenge(seed) => {
                let mut nonce = [0u8; 32];
                nonce[..4].copy_from_slice(seed);
                hub_bytes(&HubMessage::Challenge { version: HUB_VERSION, nonce }).to_vec()
            }
            Payload::HubAuth { role, good } => {
                let nonce = self.nonces.get(&stream).copied().unwrap_or([0; 32]);
                let peer = self.stream_peer.get(&stream).copied().unwrap_or(exit_id(1));
                let (role, cred) =
                    if *role { (Role::Exit, exit_cred()) } else { (Role::Client, client_cred()) };
                let cred = if *good {
                    cred
                } else {
                    meshproxy_core::admission::Credential::new(cred.key_id.clone(), b"wrong")
                };
                let proof = cred.prove(&nonce, &self.node.peer_id(), &peer, role);
                hub_bytes(&HubMessage::Auth {
                    version: HUB_VERSION,
                    role,
                    key_id: cred.key_id,
                    proof,
                })
                .to_vec()
            }
            Payload::HubAuthOk => hub_bytes(&HubMessage::AuthOk { grant: client_grant() }).to_vec(),
            Payload::HubTicket(valid_secs) => {
                let grant =
                    TicketGrant { valid_secs: *valid_secs, ticket: client_ticket().to_vec() };
                hub_bytes(&HubMessage::Ticket { grant }).to_vec()
            }
            Payload::HubRenewTicket => hub_bytes(&HubMessage::RenewTicket).to_vec(),
            Payload::HubPeers(ns) => {
                // Some exits are reachable through the hub's relay, some only so.
                let peers = ns
                    .iter()
                    .map(|n| {
                        let mut r = exit_record(u64::from(*n) + 1);
                        if n % 2 == 1 {
                            r.relays = vec![hub_id()];
                        }
                        if n % 4 == 3 {
                            r.addrs.clear();
                        }
                        r
                    })
                    .collect();
                hub_bytes(&HubMessage::Peers { peers }).to_vec()
            }
            Payload::HubRegistered(ttl_secs) => {
                hub_bytes(&HubMessage::Registered { ttl_secs: *ttl_secs }).to_vec()
            }
            Payload::HubHeartbeatAck(ttl_secs) => {
                hub_bytes(&HubMessage::HeartbeatAck { ttl_secs: *ttl_secs }).to_vec()
            }
            Payload::HubError(code) => {
                let code = HubErrorCode::ALL[usize::from(*code) % HubErrorCode::ALL.len()];
                hub_bytes(&HubMessage::Error { code, message: "no".into() }).to_vec()
            }
            Payload::HubRegister => {
                let r = exit_record(1);
                hub_bytes(&HubMessage::Register {
                    role: r.role,
                    addrs: r.addrs,
                    attrs: r.attrs,
                    capacity: 3,
                    relayed: false,
                })
                .to_vec()
            }
            Payload::HubHeartbeat => hub_bytes(&HubMessage::Heartbeat { load: 1 }).to_vec(),
            Payload::HubFind(limit) => hub_bytes(&HubMessage::Find {
                role: Role::Exit,
                filter: PeerFilter::default(),
                limit: *limit,
            })
            .to_vec(),
            Payload::HubResolve(n) => {
                hub_bytes(&HubMessage::Resolve { peer: exit_id(u64::from(*n) + 1) }).to_vec()
            }
            Payload::Truncated(inner, n) => {
                let mut v = self.bytes(stream, inner);
                v.truncate(*n);
                v
            }
            Payload::Fitting(k) => {
                let nth = self.said.get(&stream).copied().unwrap_or(0);
                let k = *k;
                let target = usize::from(k) % 6;
                let fitting = match self.kinds.get(&stream) {
                    Some(Kind::App) => match k % 4 {
                        0 => Payload::HttpConnect { target },
                        1 => Payload::SocksAll { target, user: None },
                        _ => Payload::SocksAll { target, user: Some(usize::from(k / 4) % 3) },
                    },
                    Some(Kind::InboundProxy) => Payload::ProxyRequest {
                        target,
                        version: PROXY_VERSION,
                        session: k % 2 == 0,
                        // Mostly a good ticket; sometimes none or a bad one.
                        ticket: if k % 8 < 5 { 1 } else { k / 8 },
                    },
                    Some(Kind::InboundHub) => {
                        let exit = self.stream_peer.get(&stream).is_some_and(|p| {
                            [exit_id(1), exit_id(2), exit_id(3), PeerId::from_u64(555)].contains(p)
                        });
                        match (nth, k % 4) {
                            (0, _) => Payload::HubAuth { role: exit, good: true },
                            (_, 0 | 1) => Payload::HubRegister,
                            (_, 2) if k % 8 == 2 => Payload::HubRenewTicket,
                            (_, 2) => Payload::HubHeartbeat,
                            _ => Payload::HubFind(u16::from(k)),
                        }
                    }
                    Some(Kind::OutProxy) => Payload::ProxyResponse {
                        status: if k % 2 == 0 { 0 } else { k % 9 },
                        trailing: vec![k; usize::from(k % 3)],
                    },
                    Some(Kind::OutHub) => match (nth, k % 3) {
                        (0, _) => Payload::HubChallenge([k; 4]),
                        (1, _) => Payload::HubAuthOk,
                        (_, 0) => Payload::HubPeers(
                            vec![0, 1, 2].into_iter().take(usize::from(k % 4)).collect(),
                        ),
                        (_, 1) => Payload::HubRegistered(u32::from(k % 60)),
                        (_, _) if k % 6 == 5 => Payload::HubTicket(u32::from(k)),
                        _ => Payload::HubHeartbeatAck(u32::from(k % 60)),
                    },
                    Some(Kind::Origin) | None => Payload::Raw(vec![k; 3]),
                };
                self.bytes(stream, &fitting)
            }
        }
    }

    fn apply(&mut self, op: &Op) {
        let peers = peers();
        match op {
            Op::Accept { listener } => {
                let stream = self.fresh();
                self.live.insert(stream);
                self.kinds.insert(stream, Kind::App);
                let listener = ListenerId(u64::from(*listener));
                self.input(Input::AppAccepted { listener, stream, source: app_source() });
            }
            Op::Inbound { peer, hub } => {
                let stream = self.fresh();
                self.live.insert(stream);
                let peer = peers[*peer % peers.len()];
                self.stream_peer.insert(stream, peer);
                let protocol = if *hub { Protocol::Hub } else { Protocol::Proxy };
                let kind = if *hub { Kind::InboundHub } else { Kind::InboundProxy };
                self.kinds.insert(stream, kind);
                self.input(Input::InboundStream { stream, peer, protocol });
            }
            Op::Data { stream, payload, split } => {
                let Some(s) = pick(&self.usable_streams(), *stream) else { return };
                let bytes = self.bytes(s, payload);
                if matches!(payload, Payload::Fitting(_)) {
                    *self.said.entry(s).or_default() += 1;
                }
                let cut = split.map_or(bytes.len(), |c| c.min(bytes.len()));
                for chunk in [&bytes[..cut], &bytes[cut..]] {
                    if !chunk.is_empty() && self.usable(s) {
                        self.input(Input::StreamData {
                            stream: s,
                            data: Bytes::copy_from_slice(chunk),
                        });
                    }
                }
            }
            Op::Closed { stream, reset } => {
                let Some(s) = pick(&self.usable_streams(), *stream) else { return };
                self.live.remove(&s);
                let how = if *reset { Close::Reset } else { Close::Fin };
                self.input(Input::StreamClosed { stream: s, how });
            }
            Op::PeerUp { peer, relayed } => {
                let peer = peers[*peer % peers.len()];
                let path = if *relayed { Path::Relayed { via: hub_id() } } else { Path::Direct };
                self.connect(peer, path);
            }
            Op::PeerDown { peer, which } => {
                let peer = peers[*peer % peers.len()];
                let ids: Vec<ConnId> =
                    self.conns.get(&peer).map(|c| c.keys().copied().collect()).unwrap_or_default();
                let Some(conn) = pick(&ids, usize::from(*which)) else { return };
                if let Some(c) = self.conns.get_mut(&peer) {
                    c.remove(&conn);
                }
                self.input(Input::PeerDisconnected { peer, conn });
            }
            Op::DialFailed { peer } => {
                let peer = peers[*peer % peers.len()];
                if self.pending_dials.remove(&peer).is_some() {
                    self.input(Input::DialFailed { peer });
                }
            }
            Op::Reachability(r) => {
                let r = [Reachability::Unknown, Reachability::Public, Reachability::Private]
                    [usize::from(*r) % 3];
                self.input(Input::Reachability(r));
            }
            Op::Reservation { hub, answer, expires_s } => {
                let hubs: Vec<PeerId> = self.hubs.iter().copied().collect();
                let Some(hub) = pick(&hubs, *hub) else { return };
                let input = match answer % 3 {
                    0 if self.pending_reserves.remove(&hub) => Input::ReservationAccepted {
                        hub,
                        expires_in: expires_s.map(|s| Duration::from_secs(u64::from(s) + 1)),
                    },
                    1 if self.pending_reserves.remove(&hub) => Input::ReservationFailed { hub },
                    2 => Input::ReservationLost { hub },
                    _ => return,
                };
                self.input(input);
            }
            Op::PunchFailed { which } => {
                let punches: Vec<PeerId> = self.pending_punches.iter().copied().collect();
                let Some(peer) = pick(&punches, *which) else { return };
                self.pending_punches.remove(&peer);
                self.input(Input::HolePunchFailed { peer });
            }
            Op::Opened { which } => {
                let Some(s) = pick(&self.pending_opens, *which) else { return };
                self.pending_opens.retain(|x| *x != s);
                self.live.insert(s);
                self.input(Input::StreamOpened { stream: s });
            }
            Op::Refused { which } => {
                let Some(s) = pick(&self.pending_opens, *which) else { return };
                self.pending_opens.retain(|x| *x != s);
                self.dead.insert(s);
                self.input(Input::StreamRefused { stream: s });
            }
            Op::Resolved { which, result } => {
                let Some(q) = pick(&self.queries, *which) else { return };
                self.queries.retain(|x| *x != q);
                let ips = resolved_ips();
                let result = match result {
                    Ok(v) => Ok(v.iter().map(|i| ips[*i % ips.len()]).collect()),
                    Err(true) => Err(ResolveError::NotFound),
                    Err(false) => Err(ResolveError::Failed),
                };
                self.input(Input::Resolved { query: q, result });
            }
            Op::OriginUp { which } => {
                let Some(s) = pick(&self.pending_origins, *which) else { return };
                self.pending_origins.retain(|x| *x != s);
                self.live.insert(s);
                self.input(Input::OriginConnected { stream: s });
            }
            Op::OriginFailed { which, status } => {
                let Some(s) = pick(&self.pending_origins, *which) else { return };
                self.pending_origins.retain(|x| *x != s);
                self.dead.insert(s);
                let status = Status::from_code(*status).unwrap_or(Status::GeneralFailure);
                self.input(Input::OriginFailed { stream: s, status });
            }
            Op::SpliceEnded { which, how } => {
                let Some((a, b)) = pick(&self.splices, *which) else { return };
                self.end_splice(a, b, *how);
            }
            // At most 40 s a step (as the property strategy draws): longer
            // jumps only replay periodic timers and slow a fuzz run down.
            Op::Advance { ms } => self.advance(Duration::from_millis(u64::from(*ms % 40_001))),
            Op::Progress(k) => self.progress(*k),
            Op::Restore { persisted, raw } => {
                let sticky = match (&self.persisted, persisted) {
                    (Some(p), true) => p.clone(),
                    _ => raw.clone(),
                };
                self.input(Input::Restore(StateSnapshot { sticky }));
            }
        }
    }

    /// A fresh connection to `peer` comes up (answering a dial to it, if any).
    fn connect(&mut self, peer: PeerId, path: Path) {
        self.next_conn += 1;
        let conn = ConnId(self.next_conn);
        if path.is_relayed() || self.pending_dials.get(&peer) == Some(&None) {
            self.pending_dials.remove(&peer);
        }
        self.conns.entry(peer).or_default().insert(conn, path.is_relayed());
        let limit = path.is_relayed().then_some(CircuitLimit {
            duration: Some(Duration::from_secs(120)),
            bytes: Some(1 << 20),
        });
        self.input(Input::PeerConnected { peer, conn, path, limit });
    }

    fn progress(&mut self, k: u8) {
        let k = usize::from(k);
        if let Some((&peer, &via)) =
            self.pending_dials.iter().nth(k % self.pending_dials.len().max(1))
        {
            // Not through `Op::PeerUp`: the node may dial exits a hub answer
            // named that are not among `peers()` (found by the fuzzer).
            let path = via.map_or(Path::Direct, |via| Path::Relayed { via });
            self.connect(peer, path);
        } else if let Some(&hub) = self.pending_reserves.iter().next() {
            self.pending_reserves.remove(&hub);
            let expires_in = (k % 2 == 0).then(|| Duration::from_secs(30 + k as u64));
            self.input(Input::ReservationAccepted { hub, expires_in });
        } else if let Some(&peer) = self.pending_punches.iter().next() {
            self.pending_punches.remove(&peer);
            if k % 2 == 0 {
                self.connect(peer, Path::Direct);
            } else {
                self.input(Input::HolePunchFailed { peer });
            }
        } else if !self.pending_opens.is_empty() {
            self.apply(&Op::Opened { which: k });
        } else if !self.pending_origins.is_empty() {
            self.apply(&Op::OriginUp { which: k });
        } else if !self.queries.is_empty() {
            self.apply(&Op::Resolved { which: k, result: Ok(vec![k % 5, 0]) });
        } else {
            let split = (k % 3 == 0).then_some(k % 7);
            self.apply(&Op::Data { stream: k, payload: Payload::Fitting(k as u8), split });
        }
    }

    fn end_splice(&mut self, a: StreamId, b: StreamId, how: u8) {
        self.splices.retain(|x| *x != (a, b));
        for s in [a, b] {
            self.spliced.remove(&s);
            self.dead.insert(s);
        }
        let how = [SpliceEnd::Clean, SpliceEnd::ResetA, SpliceEnd::ResetB, SpliceEnd::IdleTimeout]
            [usize::from(how) % 4];
        let report = SpliceReport { a_to_b: 3, b_to_a: 4, how };
        self.input(Input::SpliceEnded { a, b, report });
    }

    /// Answers everything outstanding with a failure and resets every stream.
    fn fail_everything(&mut self) -> bool {
        let mut any = false;
        for _ in 0..64 {
            let mut did = false;
            if let Some(&(a, b)) = self.splices.first() {
                self.end_splice(a, b, 1);
                did = true;
            } else if let Some(&peer) = self.pending_dials.keys().next() {
                self.pending_dials.remove(&peer);
                self.input(Input::DialFailed { peer });
                did = true;
            } else if let Some(&hub) = self.pending_reserves.iter().next() {
                self.pending_reserves.remove(&hub);
                self.input(Input::ReservationFailed { hub });
                did = true;
            } else if let Some(&peer) = self.pending_punches.iter().next() {
                self.pending_punches.remove(&peer);
                self.input(Input::HolePunchFailed { peer });
                did = true;
            } else if let Some(&s) = self.pending_opens.first() {
                self.pending_opens.remove(0);
                self.dead.insert(s);
                self.input(Input::StreamRefused { stream: s });
                did = true;
            } else if let Some(&s) = self.pending_origins.first() {
                self.pending_origins.remove(0);
                self.dead.insert(s);
                let status = Status::GeneralFailure;
                self.input(Input::OriginFailed { stream: s, status });
                did = true;
            } else if let Some(&q) = self.queries.first() {
                self.queries.remove(0);
                self.input(Input::Resolved { query: q, result: Err(ResolveError::Failed) });
                did = true;
            } else if let Some(&s) = self.live.iter().find(|s| self.usable(**s)) {
                self.live.remove(&s);
                self.input(Input::StreamClosed { stream: s, how: Close::Reset });
                did = true;
            }
            if !did {
                return any;
            }
            any = true;
        }
        panic!("the node keeps asking for more while everything fails");
    }
}

pub fn run(config: NodeConfig, seed: u64, ops: &[Op]) {
    let mut d = Driver::new(config, seed);
    for op in ops {
        d.apply(op);
    }
    // Wind down: fail everything, let every deadline pass, repeat.
    for _ in 0..40 {
        d.fail_everything();
        d.advance(Duration::from_secs(5));
    }
    d.fail_everything();
    let r = d.node.resources();
    assert_eq!(r.sessions, 0, "{r}");
    assert_eq!(r.pending_dials, 0, "{r}");
    assert_eq!(r.streams, 0, "{r}");
    assert_eq!(r.pending_queries, 0, "{r}");
    assert_eq!(r.timers, 0, "non-periodic timers left: {r}");
    for s in &d.pool {
        if d.dead.contains(s) {
            assert!(!d.node.tracks_stream(*s), "the node still tracks {s:?}");
        }
    }
}

// ----------------------------------------------------------------- configs

fn small_limits(c: &mut NodeConfig) {
    c.limits.max_client_sessions = 3;
    c.limits.max_exit_sessions = 3;
    c.limits.max_sessions_per_peer = 2;
    c.limits.max_hub_streams = 3;
    c.limits.max_hub_streams_per_peer = 2;
    c.limits.max_preauth_hub_streams = 2;
    c.limits.max_sessions_per_listener = 2;
    c.limits.max_pending_dials = 2;
    c.limits.max_registrations_per_key = 1;
}

fn listeners() -> Vec<ListenerConfig> {
    vec![
        ListenerConfig::default(),
        listener(|l| {
            l.protocol = ListenerProtocol::Socks5;
            l.sticky = StickyMode::Session;
            l.fallback = false;
            l.retries = 1;
        }),
        listener(|l| {
            l.protocol = ListenerProtocol::Http;
            l.sticky = StickyMode::Listener;
            l.retries = 0;
        }),
    ]
}

pub fn client_node() -> NodeConfig {
    let mut c = client_config(listeners());
    small_limits(&mut c);
    c
}

pub fn exit_node() -> NodeConfig {
    let mut c = exit_config(exit_id(1));
    c.hubs = vec![hub_contact()];
    small_limits(&mut c);
    c
}

pub fn hub_node() -> NodeConfig {
    let mut c = hub_config(Duration::from_secs(30));
    small_limits(&mut c);
    c
}

pub fn all_roles() -> NodeConfig {
    let mut c = base_config(PeerId::from_u64(777));
    c.hubs = vec![hub_contact()];
    c.hub = Some(hub_role(Duration::from_secs(30)));
    c.exit = Some(exit_role(Some("de")));
    c.client = Some(client_role(listeners()));
    small_limits(&mut c);
    c
}

/// Most ops one fuzz input drives (longer inputs are cut, so one input is
/// always fast).
pub const MAX_FUZZ_OPS: usize = 256;

/// Decodes a fuzz input: the role mix, the seed and the op sequence.
pub fn from_fuzz(data: &[u8]) -> (NodeConfig, u64, Vec<Op>) {
    let mut u = Unstructured::new(data);
    let config = match u.arbitrary::<u8>().unwrap_or(0) % 4 {
        0 => client_node(),
        1 => exit_node(),
        2 => hub_node(),
        _ => all_roles(),
    };
    let seed = u.arbitrary::<u64>().unwrap_or(0);
    let ops = u.arbitrary_iter::<Op>().map_or_else(
        |_| Vec::new(),
        |iter| iter.take(MAX_FUZZ_OPS).map_while(Result::ok).collect(),
    );
    (config, seed, ops)
}
