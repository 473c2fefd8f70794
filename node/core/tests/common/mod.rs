//! A small harness for driving [`Node`]s through their public API only: the
//! test plays the driver (and often the remote peer), feeds inputs by hand and
//! reads back every output. Time is explicit; nothing sleeps.

// Each test binary uses a different part of the harness.
#![allow(dead_code)]

use bytes::Bytes;
use core::time::Duration;
use meshproxy_core::admission::{Credential, RoleSet};
use meshproxy_core::config::{
    ClientConfig, ExitConfig, HubConfig, HubContact, Limits, ListenerConfig, NodeConfig,
    SelectionConfig, Timeouts, DEFAULT_TICKET_LIFETIME,
};
use meshproxy_core::directory::DirectoryConfig;
use meshproxy_core::ids::{ConnId, ListenerId, PeerId, QueryId, StreamId};
use meshproxy_core::io::{Close, Event, Input, Output, Protocol, TimerReason};
use meshproxy_core::policy::ExitPolicyConfig;
use meshproxy_core::record::{Attrs, CountryCode, PeerAddr, PeerRecord};
use meshproxy_core::target::{Status, TargetAddr};
use meshproxy_core::ticket::{Ticket, TicketSigner};
use meshproxy_core::time::Instant;
use meshproxy_core::wire::frame::Decoded;
use meshproxy_core::wire::hub::{self as hubwire, HubMessage, Role, TicketGrant, HUB_VERSION};
use meshproxy_core::wire::proxy::{self, ConnectRequest, ConnectResponse};
use meshproxy_core::Node;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

// ---------------------------------------------------------------- identities

/// Where every test's clock starts (not zero, so "at or before zero" bugs show).
pub fn t0() -> Instant {
    Instant::from_micros(1_000_000)
}

pub fn hub_id() -> PeerId {
    PeerId::from_u64(1)
}

/// The `n`th exit.
pub fn exit_id(n: u64) -> PeerId {
    PeerId::from_u64(10 + n)
}

pub fn client_id() -> PeerId {
    PeerId::from_u64(100)
}

pub fn exit_cred() -> Credential {
    Credential::new("exits", b"exit token, 22+ random bytes")
}

pub fn client_cred() -> Credential {
    Credential::new("clients", b"client token, 22+ random bytes")
}

/// The key [`hub_id`] signs tickets with.
pub fn hub_signer() -> TicketSigner {
    TicketSigner::from_secret([1; 32])
}

/// [`hub_id`], with the key exits check its tickets with.
pub fn hub_contact() -> HubContact {
    HubContact {
        peer: hub_id(),
        addrs: vec![PeerAddr(b"hub".to_vec())],
        ticket_key: Some(hub_signer().public()),
    }
}

// ------------------------------------------------------------------- tickets

/// Unix time at every test node's [`Instant::ZERO`]: all nodes share one wall
/// clock, so a ticket one signs means the same to the others.
pub const WALL_CLOCK: Duration = Duration::from_secs(1_800_000_000);

/// How long the harness hub's tickets last.
pub const TICKET_LIFETIME: Duration = DEFAULT_TICKET_LIFETIME;

/// Unix seconds on the shared wall clock at `at`.
pub fn unix_at(at: Instant) -> u64 {
    (WALL_CLOCK + Duration::from_micros(at.as_micros())).as_secs()
}

/// A ticket signed by `signer` in the name of `hub`.
pub fn signed_ticket(
    signer: &TicketSigner,
    hub: PeerId,
    holder: PeerId,
    roles: RoleSet,
    expires: u64,
) -> Bytes {
    Bytes::from(signer.sign(&Ticket { hub, holder, roles, expires }))
}

/// The ticket [`hub_id`] issues `holder` at [`t0`], as a client.
pub fn ticket_for(holder: PeerId) -> Bytes {
    let expires = unix_at(t0()) + TICKET_LIFETIME.as_secs();
    signed_ticket(&hub_signer(), hub_id(), holder, RoleSet::CLIENT, expires)
}

/// The ticket [`hub_id`] issues [`client_id`] at [`t0`].
pub fn client_ticket() -> Bytes {
    ticket_for(client_id())
}

/// What the harness hub hands [`client_id`] with `AuthOk`.
pub fn client_grant() -> TicketGrant {
    let valid_secs = u32::try_from(TICKET_LIFETIME.as_secs()).unwrap();
    TicketGrant { valid_secs, ticket: client_ticket().to_vec() }
}

/// What the harness hub hands an exit with `AuthOk`.
pub fn exit_grant(exit: PeerId) -> TicketGrant {
    let valid_secs = u32::try_from(TICKET_LIFETIME.as_secs()).unwrap();
    let expires = unix_at(t0()) + TICKET_LIFETIME.as_secs();
    let ticket = signed_ticket(&hub_signer(), hub_id(), exit, RoleSet::EXIT, expires);
    TicketGrant { valid_secs, ticket: ticket.to_vec() }
}

/// A request for `target` carrying [`client_ticket`].
pub fn ticketed(target: TargetAddr) -> ConnectRequest {
    ConnectRequest::new(target, None).with_ticket(client_ticket())
}

/// A public address an exit may dial.
pub fn public_ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(93, 184, 216, last))
}

pub fn app_source() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40_000)
}

// ------------------------------------------------------------------- configs

pub fn base_config(peer: PeerId) -> NodeConfig {
    NodeConfig {
        peer_id: peer,
        hubs: Vec::new(),
        hub: None,
        exit: None,
        client: None,
        gateway: None,
        agent: None,
        timeouts: Timeouts::default(),
        limits: Limits::default(),
        relay: meshproxy_core::config::RelayConfig::default(),
        wall_clock: WALL_CLOCK,
        entropy: None,
    }
}

/// A hub admitting [`exit_cred`] as an exit and [`client_cred`] as a client
/// (each key holding the hub's default number of registrations).
pub fn hub_role(ttl: Duration) -> HubConfig {
    HubConfig {
        directory: DirectoryConfig { ttl, max_entries: 16 },
        keys: vec![
            exit_cred().admission_key(RoleSet::EXIT),
            client_cred().admission_key(RoleSet::CLIENT),
        ],
        max_find: 64,
        signer: hub_signer(),
        ticket_lifetime: TICKET_LIFETIME,
    }
}

pub fn hub_config(ttl: Duration) -> NodeConfig {
    NodeConfig { hub: Some(hub_role(ttl)), ..base_config(hub_id()) }
}

pub fn exit_role(country: Option<&str>) -> ExitConfig {
    ExitConfig {
        policy: ExitPolicyConfig::default(),
        own_addrs: vec![public_ip(200)],
        attrs: Attrs { country: country.and_then(CountryCode::parse), labels: Vec::new() },
        addrs: vec![PeerAddr(b"exit".to_vec())],
        capacity: 100,
        credential: exit_cred(),
        relay: meshproxy_core::config::RelayMode::default(),
        open: false,
    }
}

/// An exit with no hubs: it only answers proxy streams (and, trusting no
/// hub, serves none of them unless made `open`).
pub fn exit_config(peer: PeerId) -> NodeConfig {
    NodeConfig { exit: Some(exit_role(Some("de"))), ..base_config(peer) }
}

pub fn client_role(listeners: Vec<ListenerConfig>) -> ClientConfig {
    ClientConfig { listeners, selection: SelectionConfig::default(), credential: client_cred() }
}

/// A client that finds exits through [`hub_id`].
pub fn client_config(listeners: Vec<ListenerConfig>) -> NodeConfig {
    NodeConfig {
        hubs: vec![hub_contact()],
        client: Some(client_role(listeners)),
        ..base_config(client_id())
    }
}

/// What a hub would list for exit `n`.
pub fn exit_record(n: u64) -> PeerRecord {
    PeerRecord {
        peer: exit_id(n),
        role: Role::Exit,
        addrs: vec![PeerAddr(vec![b'e', n as u8])],
        attrs: Attrs { country: CountryCode::parse("de"), labels: Vec::new() },
        capacity: 100,
        relays: Vec::new(),
    }
}

// ------------------------------------------------------------- wire helpers

pub fn hub_bytes(msg: &HubMessage) -> Bytes {
    let mut buf = Vec::new();
    hubwire::encode(msg, &mut buf);
    Bytes::from(buf)
}

/// Every complete hub message in `buf`; panics on a malformed one.
pub fn hub_messages(buf: &[u8]) -> Vec<HubMessage> {
    let mut out = Vec::new();
    let mut rest = buf;
    while !rest.is_empty() {
        match hubwire::decode(rest) {
            Ok(Decoded::Complete { msg, consumed }) => {
                out.push(msg);
                rest = &rest[consumed..];
            }
            other => panic!("undecodable hub bytes {rest:?}: {other:?}"),
        }
    }
    out
}

pub fn request_bytes(req: &ConnectRequest) -> Vec<u8> {
    let mut buf = Vec::new();
    proxy::encode_request(req, &mut buf);
    buf
}

pub fn response_bytes(status: Status) -> Vec<u8> {
    let mut buf = Vec::new();
    proxy::encode_response(&ConnectResponse { status, bound: None }, &mut buf);
    buf
}

/// Decodes exactly one `ConnectRequest` filling `buf`.
pub fn decode_request(buf: &[u8]) -> ConnectRequest {
    match proxy::decode_request(buf) {
        Ok(Decoded::Complete { msg, consumed }) => {
            assert_eq!(consumed, buf.len(), "trailing bytes after the request");
            msg
        }
        other => panic!("not one ConnectRequest: {other:?}"),
    }
}

/// Decodes the `ConnectResponse` at the front of `buf`.
pub fn decode_response(buf: &[u8]) -> ConnectResponse {
    match proxy::decode_response(buf) {
        Ok(Decoded::Complete { msg, .. }) => msg,
        other => panic!("no ConnectResponse in {buf:?}: {other:?}"),
    }
}

pub const SOCKS_NO_AUTH_GREETING: [u8; 3] = [5, 1, 0];
pub const SOCKS_USERPASS_GREETING: [u8; 3] = [5, 1, 2];

pub fn socks_auth(user: &str, pass: &str) -> Vec<u8> {
    let mut v = vec![1, user.len() as u8];
    v.extend_from_slice(user.as_bytes());
    v.push(pass.len() as u8);
    v.extend_from_slice(pass.as_bytes());
    v
}

/// A SOCKS5 CONNECT request for `target`.
pub fn socks_connect(target: &TargetAddr) -> Vec<u8> {
    let mut v = vec![5, 1, 0];
    match target {
        TargetAddr::Ip(SocketAddr::V4(a)) => {
            v.push(1);
            v.extend_from_slice(&a.ip().octets());
        }
        TargetAddr::Ip(SocketAddr::V6(a)) => {
            v.push(4);
            v.extend_from_slice(&a.ip().octets());
        }
        TargetAddr::Domain(name, _) => {
            v.push(3);
            v.push(name.len() as u8);
            v.extend_from_slice(name.as_bytes());
        }
    }
    v.extend_from_slice(&target.port().to_be_bytes());
    v
}

/// The SOCKS5 reply with `status` and no bound address.
pub fn socks_reply(status: Status) -> Vec<u8> {
    vec![5, status.code(), 0, 1, 0, 0, 0, 0, 0, 0]
}

// ----------------------------------------------------------- output queries

/// Everything transmitted on `stream`, concatenated.
pub fn sent_on(outs: &[Output], stream: StreamId) -> Vec<u8> {
    let mut v = Vec::new();
    for o in outs {
        if let Output::Transmit { stream: s, data } = o {
            if *s == stream {
                v.extend_from_slice(data);
            }
        }
    }
    v
}

/// How `stream` was closed, if it was.
pub fn closed(outs: &[Output], stream: StreamId) -> Option<Close> {
    outs.iter().find_map(|o| match o {
        Output::Close { stream: s, how } if *s == stream => Some(*how),
        _ => None,
    })
}

pub fn dials(outs: &[Output]) -> Vec<PeerId> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Dial { peer, .. } => Some(*peer),
            _ => None,
        })
        .collect()
}

pub fn opens(outs: &[Output]) -> Vec<(StreamId, PeerId, Protocol)> {
    outs.iter()
        .filter_map(|o| match o {
            Output::OpenStream { stream, peer, protocol, .. } => Some((*stream, *peer, *protocol)),
            _ => None,
        })
        .collect()
}

/// Proxy streams opened (hub streams left out).
pub fn proxy_opens(outs: &[Output]) -> Vec<(StreamId, PeerId)> {
    opens(outs)
        .into_iter()
        .filter(|(_, _, p)| *p == Protocol::Proxy)
        .map(|(s, p, _)| (s, p))
        .collect()
}

pub fn events(outs: &[Output]) -> Vec<Event> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(*e),
            _ => None,
        })
        .collect()
}

pub fn origins(outs: &[Output]) -> Vec<(StreamId, SocketAddr)> {
    outs.iter()
        .filter_map(|o| match o {
            Output::ConnectOrigin { stream, addr } => Some((*stream, *addr)),
            _ => None,
        })
        .collect()
}

pub fn resolves(outs: &[Output]) -> Vec<(QueryId, String)> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Resolve { query, name } => Some((*query, name.clone())),
            _ => None,
        })
        .collect()
}

/// A splice: both sides and both prefixes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpliceOut {
    pub a: StreamId,
    pub b: StreamId,
    pub a_to_b: Bytes,
    pub b_to_a: Bytes,
}

pub fn splices(outs: &[Output]) -> Vec<SpliceOut> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Splice { a, b, a_to_b_prefix, b_to_a_prefix, .. } => Some(SpliceOut {
                a: *a,
                b: *b,
                a_to_b: a_to_b_prefix.clone(),
                b_to_a: b_to_a_prefix.clone(),
            }),
            _ => None,
        })
        .collect()
}

pub fn persists(outs: &[Output]) -> Vec<Vec<u8>> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Persist(s) => Some(s.sticky.clone()),
            _ => None,
        })
        .collect()
}

/// The position of the first output matching `f`.
pub fn position(outs: &[Output], f: impl Fn(&Output) -> bool) -> Option<usize> {
    outs.iter().position(f)
}

// ------------------------------------------------------------------ harness

/// One node, its clock, and every output it ever produced.
#[derive(Debug)]
pub struct Harness {
    pub node: Node,
    pub now: Instant,
    pub log: Vec<Output>,
    next_outside: u64,
    next_conn: u64,
}

impl Harness {
    /// A node started at [`t0`]; returns it with the outputs of the start.
    pub fn new(config: NodeConfig, seed: u64) -> (Harness, Vec<Output>) {
        let node = Node::new(config, seed, t0());
        let mut h = Harness { node, now: t0(), log: Vec::new(), next_outside: 1, next_conn: 1 };
        let outs = h.drain();
        (h, outs)
    }

    /// A fresh id for a stream the outside allocates.
    pub fn outside_stream(&mut self) -> StreamId {
        self.next_outside += 1;
        StreamId::outside(self.next_outside)
    }

    pub fn conn(&mut self) -> ConnId {
        self.next_conn += 1;
        ConnId(self.next_conn)
    }

    fn drain(&mut self) -> Vec<Output> {
        let mut outs = Vec::new();
        while let Some(o) = self.node.poll_output() {
            outs.push(o);
        }
        self.log.extend(outs.iter().cloned());
        outs
    }

    /// Feeds one input at the current instant and drains.
    pub fn input(&mut self, input: Input) -> Vec<Output> {
        self.node.handle_input(self.now, input);
        let outs = self.drain();
        if let Some((at, why)) = self.node.poll_timeout() {
            assert!(at >= self.now, "timer {why:?} at {at} is before now {}", self.now);
        }
        outs
    }

    pub fn data(&mut self, stream: StreamId, data: impl Into<Bytes>) -> Vec<Output> {
        self.input(Input::StreamData { stream, data: data.into() })
    }

    /// Fires every timer due at the current instant.
    pub fn fire_due(&mut self) -> Vec<Output> {
        self.node.handle_timeout(self.now);
        let outs = self.drain();
        if let Some((at, why)) = self.node.poll_timeout() {
            assert!(at > self.now, "timer {why:?} at {at} still due after handle_timeout");
        }
        outs
    }

    /// Lets time pass to `until`, firing every deadline on the way at its own
    /// instant, as a driver would.
    pub fn advance_to(&mut self, until: Instant) -> Vec<Output> {
        let mut outs = Vec::new();
        while let Some((at, _)) = self.node.poll_timeout() {
            if at > until {
                break;
            }
            self.now = self.now.max(at);
            outs.extend(self.fire_due());
        }
        self.now = self.now.max(until);
        outs
    }

    pub fn advance(&mut self, d: Duration) -> Vec<Output> {
        self.advance_to(self.now + d)
    }

    /// Jumps to the next deadline and fires it.
    pub fn fire_next(&mut self) -> (Instant, TimerReason, Vec<Output>) {
        let (at, why) = self.node.poll_timeout().expect("a timer is armed");
        self.now = self.now.max(at);
        let outs = self.fire_due();
        (at, why, outs)
    }
}

// -------------------------------------------------------------- exit fixture

/// The TTL the harness hub grants an exit it plays: long, so the link stays
/// quiet through a test (heartbeats every 20 min, the ticket renewed at 10).
pub const QUIET_TTL_SECS: u32 = 3600;

/// An exit node whose one hub, [`hub_id`], the test plays: connected,
/// admitted and registered, relay off (so no reservations), trusting the
/// hub's tickets. Returns it with its hub stream.
pub fn exit_behind_hub(mut config: NodeConfig, seed: u64) -> (Harness, StreamId) {
    config.hubs = vec![hub_contact()];
    if let Some(e) = &mut config.exit {
        e.relay = meshproxy_core::config::RelayMode::Off;
    }
    let exit = config.peer_id;
    let (mut h, outs) = Harness::new(config, seed);
    assert_eq!(dials(&outs), vec![hub_id()], "an exit dials its hub at start");
    let conn = h.conn();
    let outs = h.input(Input::PeerConnected {
        peer: hub_id(),
        conn,
        path: meshproxy_core::io::Path::Direct,
        limit: None,
    });
    let [(stream, _, Protocol::Hub)] = opens(&outs)[..] else { panic!("{outs:?}") };
    h.input(Input::StreamOpened { stream });
    let nonce = [9u8; 32];
    let outs = h.data(stream, hub_bytes(&HubMessage::Challenge { version: HUB_VERSION, nonce }));
    let [HubMessage::Auth { role: Role::Exit, ref key_id, proof, .. }] =
        hub_messages(&sent_on(&outs, stream))[..]
    else {
        panic!("expected an exit's Auth: {outs:?}")
    };
    let key = exit_cred().admission_key(RoleSet::EXIT);
    assert_eq!(*key_id, key.key_id);
    assert_eq!(key.check(&nonce, &hub_id(), &exit, Role::Exit, &proof), Ok(()));
    let outs = h.data(stream, hub_bytes(&HubMessage::AuthOk { grant: exit_grant(exit) }));
    assert!(matches!(hub_messages(&sent_on(&outs, stream))[..], [HubMessage::Register { .. }]));
    let outs = h.data(stream, hub_bytes(&HubMessage::Registered { ttl_secs: QUIET_TTL_SECS }));
    assert_eq!(events(&outs), vec![Event::HubRegistered { hub: hub_id() }]);
    (h, stream)
}

// ------------------------------------------------------------ client fixture

/// A client node whose hub link the test plays by hand; starts with the hub
/// authenticated and `exits` listed.
#[derive(Debug)]
pub struct ClientFixture {
    pub h: Harness,
    pub hub_stream: StreamId,
    pub connected: BTreeSet<PeerId>,
}

/// One attempt at an exit, up to the `ConnectRequest` the client sent.
#[derive(Debug)]
pub struct Attempt {
    pub exit: PeerId,
    pub stream: StreamId,
    pub request: ConnectRequest,
    /// Whether the attempt had to dial the exit first.
    pub dialed: bool,
}

impl ClientFixture {
    pub fn new(config: NodeConfig, exits: Vec<PeerRecord>, seed: u64) -> ClientFixture {
        let (mut h, outs) = Harness::new(config, seed);
        assert_eq!(dials(&outs), vec![hub_id()], "a client dials its hub at start");
        h.fire_due();
        let mut f = ClientFixture { h, hub_stream: StreamId(0), connected: BTreeSet::new() };
        f.hub_stream = f.auth_hub();
        let outs = f.h.data(f.hub_stream, hub_bytes(&HubMessage::AuthOk { grant: client_grant() }));
        let msgs = hub_messages(&sent_on(&outs, f.hub_stream));
        assert!(
            matches!(msgs.as_slice(), [HubMessage::Find { .. }]),
            "a ready link asks for exits at once: {msgs:?}"
        );
        f.h.data(f.hub_stream, hub_bytes(&HubMessage::Peers { peers: exits.clone() }));
        assert_eq!(f.h.node.known_exits(), exits.len());
        f
    }

    /// A fixture like [`new`](Self::new) whose node is first fed `restore`.
    pub fn restored(
        config: NodeConfig,
        exits: Vec<PeerRecord>,
        seed: u64,
        snapshot: Vec<u8>,
    ) -> ClientFixture {
        let (mut h, _) = Harness::new(config, seed);
        h.input(Input::Restore(meshproxy_core::io::StateSnapshot { sticky: snapshot }));
        h.fire_due();
        let mut f = ClientFixture { h, hub_stream: StreamId(0), connected: BTreeSet::new() };
        f.hub_stream = f.auth_hub();
        f.h.data(f.hub_stream, hub_bytes(&HubMessage::AuthOk { grant: client_grant() }));
        f.h.data(f.hub_stream, hub_bytes(&HubMessage::Peers { peers: exits }));
        f
    }

    /// Plays the hub up to the client's `Auth`, checking its proof.
    pub fn auth_hub(&mut self) -> StreamId {
        let conn = self.h.conn();
        let outs = self.h.input(Input::PeerConnected {
            peer: hub_id(),
            conn,
            path: meshproxy_core::io::Path::Direct,
            limit: None,
        });
        let [(stream, peer, Protocol::Hub)] = opens(&outs)[..] else {
            panic!("expected one hub stream: {outs:?}")
        };
        assert_eq!(peer, hub_id());
        assert!(self.h.input(Input::StreamOpened { stream }).is_empty());
        let nonce = [42u8; 32];
        let outs =
            self.h.data(stream, hub_bytes(&HubMessage::Challenge { version: HUB_VERSION, nonce }));
        let msgs = hub_messages(&sent_on(&outs, stream));
        let [HubMessage::Auth { version, role, key_id, proof }] = &msgs[..] else {
            panic!("expected Auth: {msgs:?}")
        };
        assert_eq!((*version, *role, key_id.as_str()), (HUB_VERSION, Role::Client, "clients"));
        let key = client_cred().admission_key(RoleSet::CLIENT);
        assert_eq!(key.check(&nonce, &hub_id(), &client_id(), Role::Client, proof), Ok(()));
        stream
    }

    /// An app connects on `listener`.
    pub fn accept(&mut self, listener: u64) -> StreamId {
        let stream = self.h.outside_stream();
        let outs = self.h.input(Input::AppAccepted {
            listener: ListenerId(listener),
            stream,
            source: app_source(),
        });
        assert_eq!(events(&outs), vec![Event::AppAccepted { listener: ListenerId(listener) }]);
        stream
    }

    /// Runs a SOCKS5 handshake (with a username if given) whose CONNECT for
    /// `target` carries `pipelined` after it; returns the outputs of the
    /// CONNECT.
    pub fn socks(
        &mut self,
        app: StreamId,
        target: &TargetAddr,
        username: Option<&str>,
        pipelined: &[u8],
    ) -> Vec<Output> {
        let outs = self.socks_raw(app, target, username, pipelined);
        assert!(sent_on(&outs, app).is_empty(), "no reply before the exit answered: {outs:?}");
        outs
    }

    /// Like [`socks`](Self::socks), without expecting the request to be pending.
    pub fn socks_raw(
        &mut self,
        app: StreamId,
        target: &TargetAddr,
        username: Option<&str>,
        pipelined: &[u8],
    ) -> Vec<Output> {
        match username {
            None => {
                let outs = self.h.data(app, SOCKS_NO_AUTH_GREETING.to_vec());
                assert_eq!(sent_on(&outs, app), vec![5, 0]);
            }
            Some(user) => {
                let outs = self.h.data(app, SOCKS_USERPASS_GREETING.to_vec());
                assert_eq!(sent_on(&outs, app), vec![5, 2]);
                let outs = self.h.data(app, socks_auth(user, "pw"));
                assert_eq!(sent_on(&outs, app), vec![1, 0]);
            }
        }
        let mut req = socks_connect(target);
        req.extend_from_slice(pipelined);
        self.h.data(app, req)
    }

    /// Follows the outputs of an attempt's start (a `Dial` or an
    /// `OpenStream`) up to the `ConnectRequest` the client sends the exit.
    pub fn reach_exit(&mut self, outs: &[Output]) -> Attempt {
        let mut outs = outs.to_vec();
        let mut dialed = false;
        if let [exit] = dials(&outs)[..] {
            dialed = true;
            assert!(opens(&outs).is_empty());
            let conn = self.h.conn();
            outs = self.h.input(Input::PeerConnected {
                peer: exit,
                conn,
                path: meshproxy_core::io::Path::Direct,
                limit: None,
            });
            self.connected.insert(exit);
        }
        let [(stream, exit, Protocol::Proxy)] = opens(&outs)[..] else {
            panic!("expected one proxy stream: {outs:?}")
        };
        let outs = self.h.input(Input::StreamOpened { stream });
        let request = decode_request(&sent_on(&outs, stream));
        Attempt { exit, stream, request, dialed }
    }

    /// The exit answers `status` (plus `after` bytes) on the attempt's stream.
    pub fn answer(&mut self, a: &Attempt, status: Status, after: &[u8]) -> Vec<Output> {
        let mut data = response_bytes(status);
        data.extend_from_slice(after);
        self.h.data(a.stream, data)
    }
}

// ---------------------------------------------------------------------- net

/// Several nodes wired together by hand: dials connect, opened streams pair
/// up, transmits arrive in order. Origins and DNS are not simulated.
#[derive(Debug)]
pub struct Net {
    pub now: Instant,
    pub nodes: BTreeMap<PeerId, Node>,
    /// Every output, with when and who.
    pub log: Vec<(Instant, PeerId, Output)>,
    /// Stream end → the other end.
    pairs: BTreeMap<(PeerId, StreamId), (PeerId, StreamId)>,
    conns: BTreeMap<(PeerId, PeerId), ConnId>,
    queue: VecDeque<(PeerId, Input)>,
    next_outside: u64,
    next_conn: u64,
}

impl Net {
    pub fn new(configs: Vec<NodeConfig>) -> Net {
        let mut net = Net {
            now: t0(),
            nodes: BTreeMap::new(),
            log: Vec::new(),
            pairs: BTreeMap::new(),
            conns: BTreeMap::new(),
            queue: VecDeque::new(),
            next_outside: 0,
            next_conn: 0,
        };
        for (i, c) in configs.into_iter().enumerate() {
            let peer = c.peer_id;
            net.nodes.insert(peer, Node::new(c, 7 + i as u64, t0()));
        }
        let peers: Vec<PeerId> = net.nodes.keys().copied().collect();
        for p in peers {
            net.collect(p);
        }
        net.settle();
        net
    }

    pub fn node(&self, peer: PeerId) -> &Node {
        &self.nodes[&peer]
    }

    fn collect(&mut self, from: PeerId) {
        let node = self.nodes.get_mut(&from).expect("known node");
        let mut outs = Vec::new();
        while let Some(o) = node.poll_output() {
            outs.push(o);
        }
        for o in outs {
            self.log.push((self.now, from, o.clone()));
            self.carry(from, o);
        }
    }

    fn carry(&mut self, from: PeerId, o: Output) {
        match o {
            Output::Transmit { stream, data } => {
                if let Some(&(to, s)) = self.pairs.get(&(from, stream)) {
                    self.queue.push_back((to, Input::StreamData { stream: s, data }));
                }
            }
            Output::Close { stream, how } => {
                if let Some((to, s)) = self.pairs.remove(&(from, stream)) {
                    self.pairs.remove(&(to, s));
                    self.queue.push_back((to, Input::StreamClosed { stream: s, how }));
                }
            }
            Output::Dial { peer, .. } => {
                if self.nodes.contains_key(&peer) {
                    self.next_conn += 1;
                    let conn = ConnId(self.next_conn);
                    self.conns.insert((from, peer), conn);
                    self.conns.insert((peer, from), conn);
                    self.queue.push_back((
                        peer,
                        Input::PeerConnected {
                            peer: from,
                            conn,
                            path: meshproxy_core::io::Path::Direct,
                            limit: None,
                        },
                    ));
                    self.queue.push_back((
                        from,
                        Input::PeerConnected {
                            peer,
                            conn,
                            path: meshproxy_core::io::Path::Direct,
                            limit: None,
                        },
                    ));
                } else {
                    self.queue.push_back((from, Input::DialFailed { peer }));
                }
            }
            Output::OpenStream { stream, peer, protocol, .. } => {
                if self.conns.contains_key(&(from, peer)) {
                    self.next_outside += 1;
                    let theirs = StreamId::outside(self.next_outside);
                    self.pairs.insert((from, stream), (peer, theirs));
                    self.pairs.insert((peer, theirs), (from, stream));
                    self.queue.push_back((
                        peer,
                        Input::InboundStream { stream: theirs, peer: from, protocol },
                    ));
                    self.queue.push_back((from, Input::StreamOpened { stream }));
                } else {
                    self.queue.push_back((from, Input::StreamRefused { stream }));
                }
            }
            _ => {}
        }
    }

    /// Delivers everything in flight.
    pub fn settle(&mut self) {
        while let Some((to, input)) = self.queue.pop_front() {
            let now = self.now;
            if let Some(node) = self.nodes.get_mut(&to) {
                node.handle_input(now, input);
                self.collect(to);
            }
        }
    }

    /// Feeds `input` to `peer` now (the test plays an app, origin or resolver)
    /// and delivers whatever follows.
    pub fn input(&mut self, peer: PeerId, input: Input) {
        self.queue.push_back((peer, input));
        self.settle();
    }

    /// `peer`'s outputs, in order.
    pub fn outputs_of(&self, peer: PeerId) -> Vec<Output> {
        self.log.iter().filter(|(_, p, _)| *p == peer).map(|(_, _, o)| o.clone()).collect()
    }

    /// Lets time pass to `until`, firing each node's deadlines at their instants.
    pub fn advance_to(&mut self, until: Instant) {
        loop {
            let next = self
                .nodes
                .iter()
                .filter_map(|(p, n)| n.poll_timeout().map(|(at, _)| (at, *p)))
                .min();
            match next {
                Some((at, peer)) if at <= until => {
                    self.now = self.now.max(at);
                    let now = self.now;
                    self.nodes.get_mut(&peer).expect("known").handle_timeout(now);
                    self.collect(peer);
                    self.settle();
                }
                _ => break,
            }
        }
        self.now = self.now.max(until);
    }

    pub fn advance(&mut self, d: Duration) {
        self.advance_to(self.now + d);
    }

    /// Resets both ends of `a`'s stream `stream` (as a muxer reset would).
    pub fn reset_stream(&mut self, a: PeerId, stream: StreamId) {
        if let Some((b, theirs)) = self.pairs.remove(&(a, stream)) {
            self.pairs.remove(&(b, theirs));
            self.queue.push_back((a, Input::StreamClosed { stream, how: Close::Reset }));
            self.queue.push_back((b, Input::StreamClosed { stream: theirs, how: Close::Reset }));
        }
        self.settle();
    }

    /// Takes the connection between `a` and `b` down, resetting its streams.
    pub fn disconnect(&mut self, a: PeerId, b: PeerId) {
        let streams: Vec<(PeerId, StreamId)> = self
            .pairs
            .iter()
            .filter(|((p, _), (q, _))| *p == a && *q == b)
            .map(|(k, _)| *k)
            .collect();
        for (p, s) in streams {
            self.reset_stream(p, s);
        }
        if let Some(conn) = self.conns.remove(&(a, b)) {
            self.conns.remove(&(b, a));
            self.queue.push_back((a, Input::PeerDisconnected { peer: b, conn }));
            self.queue.push_back((b, Input::PeerDisconnected { peer: a, conn }));
        }
        self.settle();
    }

    /// The streams of `a` paired with one of `b`.
    pub fn streams_between(&self, a: PeerId, b: PeerId) -> Vec<StreamId> {
        self.pairs
            .iter()
            .filter(|((p, _), (q, _))| *p == a && *q == b)
            .map(|((_, s), _)| *s)
            .collect()
    }

    /// Hub messages `from` sent, with when.
    pub fn hub_messages_from(&self, from: PeerId) -> Vec<(Instant, HubMessage)> {
        self.log
            .iter()
            .filter(|(_, p, _)| *p == from)
            .filter_map(|(at, _, o)| match o {
                Output::Transmit { data, .. } => hubwire::decode(data).ok().and_then(|d| match d {
                    Decoded::Complete { msg, consumed } if consumed == data.len() => {
                        Some((*at, msg))
                    }
                    _ => None,
                }),
                _ => None,
            })
            .collect()
    }

    pub fn events_of(&self, peer: PeerId) -> Vec<Event> {
        self.log
            .iter()
            .filter(|(_, p, _)| *p == peer)
            .filter_map(|(_, _, o)| match o {
                Output::Event(e) => Some(*e),
                _ => None,
            })
            .collect()
    }
}

/// A target an app might ask for.
pub fn ip_target(ip: IpAddr, port: u16) -> TargetAddr {
    TargetAddr::Ip(SocketAddr::new(ip, port))
}

pub fn domain_target(name: &str, port: u16) -> TargetAddr {
    TargetAddr::Domain(name.to_owned(), port)
}

/// The default listener with some fields changed.
pub fn listener(f: impl FnOnce(&mut ListenerConfig)) -> ListenerConfig {
    let mut l = ListenerConfig::default();
    f(&mut l);
    l
}
