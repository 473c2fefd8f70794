//! The agent role through the public API: the test plays the hub, the
//! gateway peer, the resolver and the origins' TCP stacks.

// Helpers outside `#[test]` fns may unwrap too: a panic there is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::*;
use core::time::Duration;
use meshproxy_core::admission::{Credential, RoleSet};
use meshproxy_core::config::{AgentConfig, Limits, NodeConfig, RelayMode, Timeouts};
use meshproxy_core::ids::{PeerId, QueryId, StreamId};
use meshproxy_core::io::{
    Close, Event, Input, Output, Protocol, ResolveError, Resources, SpliceEnd, SpliceReport,
};
use meshproxy_core::record::PeerAddr;
use meshproxy_core::target::{Status, TargetAddr};
use meshproxy_core::ticket::TicketRefusal;
use meshproxy_core::wire::frame::Decoded;
use meshproxy_core::wire::hub::{HubMessage, Role, TicketGrant, HUB_VERSION};
use meshproxy_core::wire::ingress::{
    self, AnswerStatus, ForwardedHost, Open, Scheme, ServiceName, INGRESS_VERSION,
};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

fn agent_id() -> PeerId {
    PeerId::from_u64(50)
}

fn gateway_id() -> PeerId {
    PeerId::from_u64(200)
}

fn agent_cred() -> Credential {
    Credential::new("agents", b"an agent token, 22+ bytes")
}

/// A ticket [`hub_id`] signed for `holder` in `roles`, valid from [`t0`].
fn ticket(holder: PeerId, roles: RoleSet) -> Bytes {
    let expires = unix_at(t0()) + TICKET_LIFETIME.as_secs();
    signed_ticket(&hub_signer(), hub_id(), holder, roles, expires)
}

fn gateway_ticket() -> Bytes {
    ticket(gateway_id(), RoleSet::of(Role::Gateway))
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// `web` = 127.0.0.1:8080 (a literal), `app` = app.internal:80 (a name the
/// allow-list `10.0.0.0/8:80` governs), `meta` = 169.254.169.254:81 (a
/// literal metadata address: the operator's explicit choice).
fn agent_role() -> AgentConfig {
    let service = |s: &str| ServiceName::new(s).unwrap();
    AgentConfig {
        credential: agent_cred(),
        addrs: vec![PeerAddr(b"agent".to_vec())],
        relay: RelayMode::Off,
        labels: BTreeMap::from([("site".to_owned(), "home".to_owned())]),
        services: BTreeMap::from([
            (service("web"), TargetAddr::Ip(sa("127.0.0.1:8080"))),
            (service("app"), TargetAddr::Domain("app.internal".into(), 80)),
            (service("meta"), TargetAddr::Ip(sa("169.254.169.254:81"))),
        ]),
        allow: vec!["10.0.0.0/8:80".parse().unwrap()],
    }
}

/// The addresses [`agent_role`] may ever dial.
fn dialable() -> BTreeSet<SocketAddr> {
    ["127.0.0.1:8080", "169.254.169.254:81", "10.0.0.5:80", "10.0.0.6:80", "[::ffff:10.0.0.5]:80"]
        .into_iter()
        .map(sa)
        .collect()
}

/// An agent admitted and registered at [`hub_id`], which the test plays.
fn agent(limits: Limits) -> Harness {
    let config = NodeConfig {
        hubs: vec![hub_contact()],
        agent: Some(agent_role()),
        limits,
        ..base_config(agent_id())
    };
    let (mut h, outs) = Harness::new(config, 5);
    assert_eq!(dials(&outs), vec![hub_id()], "an agent dials its hub at start");
    let conn = h.conn();
    let path = meshproxy_core::io::Path::Direct;
    let outs = h.input(Input::PeerConnected { peer: hub_id(), conn, path, limit: None });
    let [(stream, _, Protocol::Hub)] = opens(&outs)[..] else { panic!("{outs:?}") };
    h.input(Input::StreamOpened { stream });
    let nonce = [9u8; 32];
    let outs = h.data(stream, hub_bytes(&HubMessage::Challenge { version: HUB_VERSION, nonce }));
    let [HubMessage::Auth { role: Role::Agent, ref key_id, proof, .. }] =
        hub_messages(&sent_on(&outs, stream))[..]
    else {
        panic!("expected an agent's Auth: {outs:?}")
    };
    let key = agent_cred().admission_key(RoleSet::of(Role::Agent));
    assert_eq!(*key_id, key.key_id);
    assert_eq!(key.check(&nonce, &hub_id(), &agent_id(), Role::Agent, &proof), Ok(()));
    let valid_secs = u32::try_from(TICKET_LIFETIME.as_secs()).unwrap();
    let own = ticket(agent_id(), RoleSet::of(Role::Agent)).to_vec();
    let outs = h.data(
        stream,
        hub_bytes(&HubMessage::AuthOk { grant: TicketGrant { valid_secs, ticket: own } }),
    );
    let [HubMessage::Register { role, ref addrs, ref attrs, capacity, relayed }] =
        hub_messages(&sent_on(&outs, stream))[..]
    else {
        panic!("expected a Register: {outs:?}")
    };
    assert_eq!(role, Role::Agent);
    assert_eq!(addrs, &[PeerAddr(b"agent".to_vec())]);
    assert_eq!(attrs.labels, ["service:app", "service:meta", "service:web", "site:home"]);
    assert_eq!(attrs.country, None);
    assert_eq!(capacity as usize, limits.max_agent_streams, "capacity is the stream limit");
    assert!(!relayed);
    let outs = h.data(stream, hub_bytes(&HubMessage::Registered { ttl_secs: QUIET_TTL_SECS }));
    assert_eq!(events(&outs), vec![Event::HubRegistered { hub: hub_id() }]);
    assert_eq!(h.node.registered_hubs(), 1);
    assert_eq!(h.node.resources(), Resources::default());
    h
}

fn open_bytes(service: &str, ticket: Bytes, version: u8) -> Vec<u8> {
    let open = Open {
        version,
        upstream: 7,
        service: ServiceName::new(service).unwrap(),
        client: sa("203.0.113.9:5555"),
        scheme: Scheme::Https,
        host: ForwardedHost::new("app.example.com").unwrap(),
        port: 443,
        ticket,
    };
    let mut out = Vec::new();
    ingress::encode_open(&open, &mut out);
    out
}

fn inbound(h: &mut Harness) -> (StreamId, Vec<Output>) {
    let stream = h.outside_stream();
    let outs =
        h.input(Input::InboundStream { stream, peer: gateway_id(), protocol: Protocol::Ingress });
    (stream, outs)
}

/// A gateway's stream with an `Open` for `service` carrying `ticket`.
fn open_with(h: &mut Harness, service: &str, ticket: Bytes) -> (StreamId, Vec<Output>) {
    let (stream, outs) = inbound(h);
    assert!(outs.is_empty(), "{outs:?}");
    let outs = h.data(stream, open_bytes(service, ticket, INGRESS_VERSION));
    (stream, outs)
}

fn open(h: &mut Harness, service: &str) -> (StreamId, Vec<Output>) {
    open_with(h, service, gateway_ticket())
}

/// The answer the agent wrote on `stream`, if any (exactly one frame, nothing after).
fn answered(outs: &[Output], stream: StreamId) -> Option<AnswerStatus> {
    let bytes = sent_on(outs, stream);
    if bytes.is_empty() {
        return None;
    }
    let Ok(Decoded::Complete { msg, consumed }) = ingress::decode_answer(&bytes) else {
        panic!("not an answer: {bytes:?}")
    };
    assert_eq!(consumed, bytes.len(), "one answer, nothing after it");
    Some(msg.status)
}

fn refused(outs: &[Output]) -> Vec<AnswerStatus> {
    events(outs)
        .into_iter()
        .filter_map(|e| match e {
            Event::AgentStreamRefused { peer, status } => {
                assert_eq!(peer, gateway_id());
                Some(status)
            }
            _ => None,
        })
        .collect()
}

/// Asserts `outs` end the stream with a failure answer and a clean end.
fn assert_answered(outs: &[Output], stream: StreamId, status: AnswerStatus) {
    assert_eq!(answered(outs, stream), Some(status), "{outs:?}");
    assert_eq!(closed(outs, stream), Some(Close::Fin), "{outs:?}");
    assert_eq!(refused(outs), vec![status]);
}

fn never_dialed(h: &Harness) {
    assert!(origins(&h.log).is_empty(), "an origin was dialed: {:?}", h.log);
}

fn never_resolved(h: &Harness) {
    assert!(resolves(&h.log).is_empty(), "a name was resolved: {:?}", h.log);
}

#[test]
fn a_literal_service_is_dialed_then_answered_ok_and_spliced() {
    let mut h = agent(Limits::default());
    let (stream, outs) = open(&mut h, "web");
    let [(origin, addr)] = origins(&outs)[..] else { panic!("{outs:?}") };
    assert_eq!(addr, sa("127.0.0.1:8080"));
    assert_eq!(answered(&outs, stream), None, "no answer before the origin is connected");
    let outs = h.input(Input::OriginConnected { stream: origin });
    assert_eq!(answered(&outs, stream), Some(AnswerStatus::Ok));
    let answer = position(&outs, |o| matches!(o, Output::Transmit { .. })).unwrap();
    let splice = position(&outs, |o| matches!(o, Output::Splice { .. })).unwrap();
    assert!(answer < splice, "the answer is written before the origin's bytes");
    let [ref s] = splices(&outs)[..] else { panic!("{outs:?}") };
    assert_eq!((s.a, s.b), (stream, origin));
    assert!(s.a_to_b.is_empty() && s.b_to_a.is_empty());
    assert_eq!(events(&outs), vec![Event::AgentStreamOpened { peer: gateway_id(), upstream: 7 }]);
    assert_eq!(h.node.agent_streams_open(), 1);
    assert_eq!(h.node.resources().sessions, 1);
    let report = SpliceReport { a_to_b: 10, b_to_a: 20, how: SpliceEnd::Clean };
    let outs = h.input(Input::SpliceEnded { a: stream, b: origin, report });
    assert_eq!(
        events(&outs),
        vec![Event::SessionClosed { up: 10, down: 20, how: SpliceEnd::Clean }]
    );
    assert_eq!(h.node.agent_streams_open(), 0);
    assert_eq!(h.node.resources(), Resources::default());
}

#[test]
fn a_named_service_dials_only_its_allowed_answers_in_order_and_maps_failures() {
    let mut h = agent(Limits::default());
    let (stream, outs) = open(&mut h, "app");
    let [(query, ref name)] = resolves(&outs)[..] else { panic!("{outs:?}") };
    assert_eq!(name, "app.internal");
    let answers = vec![ip("11.0.0.1"), ip("10.0.0.5"), ip("127.0.0.1"), ip("10.0.0.6")];
    let outs = h.input(Input::Resolved { query, result: Ok(answers) });
    let [(first, addr)] = origins(&outs)[..] else { panic!("{outs:?}") };
    assert_eq!(addr, sa("10.0.0.5:80"));
    let outs = h.input(Input::OriginFailed { stream: first, status: Status::HostUnreachable });
    let [(second, addr)] = origins(&outs)[..] else { panic!("{outs:?}") };
    assert_eq!(addr, sa("10.0.0.6:80"), "the next allowed answer, never 11.0.0.1 or 127.0.0.1");
    let outs = h.input(Input::OriginFailed { stream: second, status: Status::ConnectionRefused });
    assert_answered(&outs, stream, AnswerStatus::Refused);
    assert_eq!(h.node.resources(), Resources::default());
    let dialed: Vec<SocketAddr> = origins(&h.log).into_iter().map(|(_, a)| a).collect();
    assert_eq!(dialed, [sa("10.0.0.5:80"), sa("10.0.0.6:80")]);
}

#[test]
fn dial_and_lookup_failures_map_to_their_answers() {
    let mut h = agent(Limits::default());
    for (status, want) in [
        (Status::ConnectionRefused, AnswerStatus::Refused),
        (Status::HostUnreachable, AnswerStatus::Unreachable),
        (Status::NetworkUnreachable, AnswerStatus::Unreachable),
        (Status::TtlExpired, AnswerStatus::Timeout),
        (Status::GeneralFailure, AnswerStatus::Failure),
    ] {
        let (stream, outs) = open(&mut h, "web");
        let [(origin, _)] = origins(&outs)[..] else { panic!("{outs:?}") };
        let outs = h.input(Input::OriginFailed { stream: origin, status });
        assert_answered(&outs, stream, want);
    }
    // The agent's own dial deadline.
    let (stream, outs) = open(&mut h, "web");
    assert_eq!(origins(&outs).len(), 1);
    let outs = h.advance(Timeouts::default().origin_connect);
    assert_answered(&outs, stream, AnswerStatus::Timeout);
    // Lookups: no such name, a failed resolver, one that never answers.
    for (result, want) in [
        (Err(ResolveError::NotFound), AnswerStatus::Unreachable),
        (Ok(Vec::new()), AnswerStatus::Unreachable),
        (Err(ResolveError::Failed), AnswerStatus::Failure),
    ] {
        let (stream, outs) = open(&mut h, "app");
        let [(query, _)] = resolves(&outs)[..] else { panic!("{outs:?}") };
        let outs = h.input(Input::Resolved { query, result });
        assert_answered(&outs, stream, want);
    }
    let (stream, _) = open(&mut h, "app");
    let outs = h.advance(Timeouts::default().origin_connect);
    assert_answered(&outs, stream, AnswerStatus::Timeout);
    assert_eq!(h.node.resources(), Resources::default());
}

#[test]
fn a_name_resolving_outside_the_allow_list_is_forbidden_and_never_dialed() {
    let mut h = agent(Limits::default());
    let (stream, outs) = open(&mut h, "app");
    let [(query, _)] = resolves(&outs)[..] else { panic!("{outs:?}") };
    // Metadata stays refused in every form; the rest is not listed.
    let answers = ["169.254.169.254", "::ffff:169.254.169.254", "192.168.1.1", "11.0.0.1"];
    let outs =
        h.input(Input::Resolved { query, result: Ok(answers.into_iter().map(ip).collect()) });
    assert_answered(&outs, stream, AnswerStatus::Forbidden);
    assert!(events(&outs).contains(&Event::AgentOriginDenied { ip: ip("169.254.169.254") }));
    never_dialed(&h);
    assert_eq!(h.node.resources(), Resources::default());
    // A literal metadata service is the operator's explicit choice: dialed.
    let (stream, outs) = open(&mut h, "meta");
    let [(_, addr)] = origins(&outs)[..] else { panic!("{outs:?}") };
    assert_eq!(addr, sa("169.254.169.254:81"));
    assert_eq!(answered(&outs, stream), None);
}

#[test]
fn the_ticket_is_checked_before_any_lookup_or_dial() {
    let mut h = agent(Limits::default());
    for (ticket, why) in [
        (Bytes::new(), TicketRefusal::Missing),
        (ticket(PeerId::from_u64(201), RoleSet::of(Role::Gateway)), TicketRefusal::WrongHolder),
        (ticket(gateway_id(), RoleSet::CLIENT.with(Role::Exit)), TicketRefusal::RoleNotAllowed),
        (Bytes::from_static(b"\x01not a ticket"), TicketRefusal::Malformed),
    ] {
        for service in ["app", "web", "nosuch"] {
            let (stream, outs) = open_with(&mut h, service, ticket.clone());
            assert_answered(&outs, stream, AnswerStatus::NotAdmitted);
            assert!(
                events(&outs).contains(&Event::AgentNotAdmitted { peer: gateway_id(), why }),
                "{outs:?}"
            );
        }
    }
    never_resolved(&h);
    never_dialed(&h);
    assert_eq!(h.node.resources(), Resources::default());
}

#[test]
fn an_unknown_service_is_answered_so_and_nothing_is_looked_up() {
    let mut h = agent(Limits::default());
    let (stream, outs) = open(&mut h, "nosuch");
    assert_answered(&outs, stream, AnswerStatus::UnknownService);
    never_resolved(&h);
    never_dialed(&h);
}

#[test]
fn bytes_before_the_answer_reset_the_stream() {
    let mut h = agent(Limits::default());
    // Behind the Open, in the same chunk: nothing is looked up.
    let (stream, outs) = inbound(&mut h);
    assert!(outs.is_empty());
    let mut bytes = open_bytes("app", gateway_ticket(), INGRESS_VERSION);
    bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
    let outs = h.data(stream, bytes);
    assert_eq!(closed(&outs, stream), Some(Close::Reset));
    assert_eq!(answered(&outs, stream), None);
    assert!(events(&outs).contains(&Event::PeerProtocolError { peer: gateway_id() }));
    never_resolved(&h);
    // While the lookup runs: the lookup is dropped.
    let (stream, outs) = open(&mut h, "app");
    let [(query, _)] = resolves(&outs)[..] else { panic!("{outs:?}") };
    let outs = h.data(stream, &b"G"[..]);
    assert_eq!(closed(&outs, stream), Some(Close::Reset));
    assert_eq!(answered(&outs, stream), None);
    assert!(h.input(Input::Resolved { query, result: Ok(vec![ip("10.0.0.5")]) }).is_empty());
    // While the origin is dialed: the dial is cancelled.
    let (stream, outs) = open(&mut h, "web");
    let [(origin, _)] = origins(&outs)[..] else { panic!("{outs:?}") };
    let outs = h.data(stream, &b"G"[..]);
    assert_eq!(closed(&outs, stream), Some(Close::Reset));
    assert_eq!(closed(&outs, origin), Some(Close::Reset));
    let late = h.input(Input::OriginConnected { stream: origin });
    assert_eq!(closed(&late, origin), Some(Close::Reset), "a late connect is closed");
    assert_eq!(h.node.resources(), Resources::default());
    assert_eq!(origins(&h.log).len(), 1);
}

#[test]
fn an_open_of_another_version_gets_failure_and_garbage_a_reset() {
    let mut h = agent(Limits::default());
    let (stream, _) = inbound(&mut h);
    let outs = h.data(stream, open_bytes("web", gateway_ticket(), INGRESS_VERSION + 1));
    assert_answered(&outs, stream, AnswerStatus::Failure);
    let (stream, _) = inbound(&mut h);
    let outs = h.data(stream, &[0, 0, 0, 2, 0x09, 0x00][..]);
    assert_eq!(closed(&outs, stream), Some(Close::Reset));
    assert_eq!(answered(&outs, stream), None);
    // An Open announced longer than any Open is refused at its length prefix.
    let (stream, _) = inbound(&mut h);
    let outs = h.data(stream, &[0, 0, 0x10, 0, 0x01][..]);
    assert_eq!(closed(&outs, stream), Some(Close::Reset));
    // Silence past the deadline is a reset too.
    let (stream, _) = inbound(&mut h);
    h.data(stream, open_bytes("web", gateway_ticket(), INGRESS_VERSION)[..3].to_vec());
    let outs = h.advance(Timeouts::default().request);
    assert_eq!(closed(&outs, stream), Some(Close::Reset));
    never_dialed(&h);
    assert_eq!(h.node.resources(), Resources::default());
}

#[test]
fn at_the_stream_limit_new_streams_are_busy_and_a_closed_one_frees_its_slot() {
    let limits = Limits { max_agent_streams: 2, ..Limits::default() };
    let mut h = agent(limits);
    let (first, outs) = open(&mut h, "web");
    let [(origin, _)] = origins(&outs)[..] else { panic!("{outs:?}") };
    let (_waiting, _) = inbound(&mut h);
    let (busy, outs) = inbound(&mut h);
    assert_answered(&outs, busy, AnswerStatus::Busy);
    assert_eq!(h.node.resources().sessions, 2);
    // The gateway gives up on the first while its origin is being dialed.
    let outs = h.input(Input::StreamClosed { stream: first, how: Close::Reset });
    assert_eq!(closed(&outs, origin), Some(Close::Reset), "its dial is cancelled");
    assert_eq!(h.node.resources().sessions, 1);
    let (next, outs) = open(&mut h, "web");
    assert_eq!(answered(&outs, next), None, "admitted, not busy");
    assert_eq!(origins(&outs).len(), 1);
}

// ----------------------------------------------------------- property test

#[derive(Clone, Debug)]
enum Move {
    Inbound,
    Open { stream: usize, service: usize, ticket: bool },
    Garbage { stream: usize },
    Resolve { query: usize, answers: Vec<usize> },
    Connected { origin: usize },
    Failed { origin: usize, status: usize },
    Close { stream: usize },
    Advance { ms: u64 },
}

const POOL: [&str; 11] = [
    "10.0.0.5",
    "10.0.0.6",
    "11.0.0.1",
    "127.0.0.1",
    "169.254.169.254",
    "::ffff:10.0.0.5",
    "::ffff:169.254.169.254",
    "192.168.1.1",
    "0.0.0.0",
    "224.0.0.1",
    "fd00:ec2::254",
];

const SERVICES: [&str; 4] = ["web", "app", "meta", "nosuch"];

fn moves() -> impl Strategy<Value = Move> {
    prop_oneof![
        2 => Just(Move::Inbound),
        3 => (0..8usize, 0..SERVICES.len(), any::<bool>())
            .prop_map(|(stream, service, ticket)| Move::Open { stream, service, ticket }),
        1 => (0..8usize).prop_map(|stream| Move::Garbage { stream }),
        3 => (0..8usize, proptest::collection::vec(0..POOL.len(), 0..5))
            .prop_map(|(query, answers)| Move::Resolve { query, answers }),
        2 => (0..8usize).prop_map(|origin| Move::Connected { origin }),
        2 => (0..8usize, 0..4usize).prop_map(|(origin, status)| Move::Failed { origin, status }),
        1 => (0..8usize).prop_map(|stream| Move::Close { stream }),
        1 => (0..12_000u64).prop_map(|ms| Move::Advance { ms }),
    ]
}

fn pick<T: Copy>(list: &[T], i: usize) -> Option<T> {
    (!list.is_empty()).then(|| list[i % list.len()])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Whatever gateways send, resolvers answer and origins do, the agent
    /// dials only its literal services' addresses and allowed answers, keeps
    /// its stream bound, and answers every stream at most once.
    #[test]
    fn no_input_makes_the_agent_dial_outside_its_allow_list(
        script in proptest::collection::vec(moves(), 1..60),
    ) {
        let limits = Limits { max_agent_streams: 3, ..Limits::default() };
        let mut h = agent(limits);
        let mut streams: Vec<StreamId> = Vec::new();
        let mut queries: Vec<QueryId> = Vec::new();
        let mut dials: Vec<StreamId> = Vec::new();
        for m in script {
            let outs = match m {
                Move::Inbound => {
                    let (s, outs) = inbound(&mut h);
                    streams.push(s);
                    outs
                }
                Move::Open { stream, service, ticket } => match pick(&streams, stream) {
                    Some(s) => {
                        let t = if ticket { gateway_ticket() } else { Bytes::new() };
                        h.data(s, open_bytes(SERVICES[service], t, INGRESS_VERSION))
                    }
                    None => Vec::new(),
                },
                Move::Garbage { stream } => match pick(&streams, stream) {
                    Some(s) => h.data(s, &b"\x00\x00\x00\x01\x02"[..]),
                    None => Vec::new(),
                },
                Move::Resolve { query, answers } => match pick(&queries, query) {
                    Some(q) => {
                        let ips = answers.into_iter().map(|i| ip(POOL[i])).collect();
                        h.input(Input::Resolved { query: q, result: Ok(ips) })
                    }
                    None => Vec::new(),
                },
                Move::Connected { origin } => match pick(&dials, origin) {
                    Some(o) => h.input(Input::OriginConnected { stream: o }),
                    None => Vec::new(),
                },
                Move::Failed { origin, status } => match pick(&dials, origin) {
                    Some(o) => {
                        let status = [
                            Status::ConnectionRefused,
                            Status::HostUnreachable,
                            Status::TtlExpired,
                            Status::GeneralFailure,
                        ][status];
                        h.input(Input::OriginFailed { stream: o, status })
                    }
                    None => Vec::new(),
                },
                Move::Close { stream } => match pick(&streams, stream) {
                    Some(s) => h.input(Input::StreamClosed { stream: s, how: Close::Fin }),
                    None => Vec::new(),
                },
                Move::Advance { ms } => h.advance(Duration::from_millis(ms)),
            };
            for (o, addr) in origins(&outs) {
                prop_assert!(dialable().contains(&addr), "dialed {addr}");
                dials.push(o);
            }
            queries.extend(resolves(&outs).into_iter().map(|(q, _)| q));
            prop_assert!(h.node.resources().sessions <= limits.max_agent_streams);
        }
        for s in streams {
            let bytes = sent_on(&h.log, s);
            if !bytes.is_empty() {
                let Ok(Decoded::Complete { consumed, .. }) = ingress::decode_answer(&bytes) else {
                    panic!("not an answer: {bytes:?}")
                };
                prop_assert_eq!(consumed, bytes.len(), "at most one answer per stream");
            }
        }
    }
}
