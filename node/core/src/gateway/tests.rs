//! The gateway role driven directly: requests in, answers and streams out.

use super::*;
use crate::config::{Limits, Timeouts};
use crate::ingress::{Balance, RouteSpec, RouteTable, Snapshot, TargetSpec};
use crate::io::{Path, TimerReason};
use crate::record::{Attrs, PeerAddr, Role};
use crate::wire::frame::Decoded;
use crate::wire::ingress::{self as wire, Answer};
use rand_chacha::{ChaCha20Rng, ChaCha8Rng};
use rand_core::SeedableRng;

const L: ListenerId = ListenerId(0);
const HUB: u64 = 100;

fn at(ms: u64) -> Instant {
    Instant::from_micros(ms * 1000)
}

fn agents_target(balance: Balance) -> TargetSpec {
    TargetSpec::Agents { service: "web".into(), pools: vec![(0, "site=home".into(), 1)], balance }
}

fn routes(balance: Balance) -> Snapshot {
    let route = |id: &str, prio, prefix: &str, target| RouteSpec {
        id: id.into(),
        priority: prio,
        host: Some("app.example.com".into()),
        path_prefix: Some(prefix.into()),
        strict: true,
        target,
    };
    let specs = [
        route(
            "static",
            0,
            "/hello",
            TargetSpec::Static {
                status: 200,
                content_type: "text/plain".into(),
                body: b"hi".to_vec(),
            },
        ),
        route(
            "moved",
            1,
            "/old",
            TargetSpec::Redirect {
                status: 308,
                to: "/new".into(),
                keep_path: true,
                keep_query: false,
            },
        ),
        route("app", 2, "/", agents_target(balance)),
    ];
    let table = RouteTable::new("web", &specs, None).expect("valid routes");
    Snapshot::new(1, BTreeMap::from([("web".to_owned(), table)])).expect("valid snapshot")
}

struct T {
    g: GatewayRole,
    ctx: Ctx,
    now: Instant,
}

impl T {
    fn new(balance: Balance, limits: Limits) -> T {
        let config = GatewayConfig {
            listeners: vec![GatewayListener { name: "web".into(), port: 8080, https: false }],
            routes: routes(balance),
            refresh: Duration::from_secs(5),
            credential: crate::admission::Credential::new("gw", b"a token long enough to be one"),
        };
        let ctx = Ctx::new(
            Timeouts::default(),
            limits,
            ChaCha8Rng::seed_from_u64(7),
            ChaCha20Rng::seed_from_u64(8),
        );
        let g = GatewayRole::new(&config, [(L, 0)], Duration::from_secs(5));
        T { g, ctx, now: at(1) }
    }

    fn list(&mut self, agents: &[u64]) {
        let records = agents.iter().map(|&n| record(n)).collect();
        self.g.on_agents(&mut self.ctx, self.now, PeerId::from_u64(HUB), records);
    }

    fn request(&mut self, id: u64, host: &str, target: &str) {
        let text = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let head = match crate::http_head::parse(text.as_bytes(), Default::default()) {
            Ok(crate::http_head::Parsed::Complete(h)) => h,
            other => panic!("{other:?}"),
        };
        let client: SocketAddr = "203.0.113.9:5555".parse().expect("address");
        self.g.on_request(&mut self.ctx, self.now, RequestId(id), L, client, head);
    }

    fn out(&mut self) -> Vec<Output> {
        self.ctx.out.drain(..).collect()
    }

    /// Connects `agent` and returns the stream the gateway opens to it.
    fn connect(&mut self, agent: u64) -> StreamId {
        let peer = PeerId::from_u64(agent);
        self.ctx.peer_connected(self.now, peer, crate::ids::ConnId(agent), Path::Direct, None);
        self.g.on_peer_connected(&mut self.ctx, self.now, peer);
        let opened = self.out().into_iter().find_map(|o| match o {
            Output::OpenStream {
                stream, peer: p, protocol: crate::io::Protocol::Ingress, ..
            } if p == peer => Some(stream),
            _ => None,
        });
        opened.expect("the gateway opens an ingress stream to the agent")
    }

    /// Opens `stream` and returns the `Open` the gateway sends on it.
    fn open(&mut self, stream: StreamId) -> wire::Open {
        self.g.on_stream_opened(&mut self.ctx, self.now, stream);
        let sent = self.out().into_iter().find_map(|o| match o {
            Output::Transmit { stream: s, data } if s == stream => Some(data),
            _ => None,
        });
        let sent = sent.expect("Open sent");
        match wire::decode_open(&sent) {
            Ok(Decoded::Complete { msg, consumed }) if consumed == sent.len() => msg,
            other => panic!("not one Open: {other:?}"),
        }
    }

    fn answer(&mut self, stream: StreamId, status: AnswerStatus, after: &[u8]) {
        let mut buf = Vec::new();
        wire::encode_answer(&Answer { status }, &mut buf);
        buf.extend_from_slice(after);
        self.g.on_data(&mut self.ctx, self.now, stream, &buf);
    }
}

fn record(n: u64) -> PeerRecord {
    PeerRecord {
        peer: PeerId::from_u64(n),
        role: Role::Agent,
        addrs: vec![PeerAddr(vec![n as u8])],
        attrs: Attrs { country: None, labels: vec!["service:web".into(), "site:home".into()] },
        capacity: 64,
        relays: Vec::new(),
    }
}

fn responded(out: &[Output]) -> Vec<(RequestId, u16, IngressOutcome)> {
    out.iter()
        .filter_map(|o| match o {
            Output::IngressRespond { request, response } => {
                Some((*request, response.status, response.outcome))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn static_redirect_no_route_and_bad_path_are_answered_at_once_without_an_agent() {
    let mut t = T::new(Balance::RoundRobin, Limits::default());
    t.request(1, "app.example.com", "/hello");
    t.request(2, "APP.example.com.", "/old/x");
    t.request(3, "other.example.com", "/");
    t.request(4, "app.example.com", "/a/%2e%2e/b");
    let out = t.out();
    assert_eq!(
        responded(&out),
        [
            (RequestId(1), 200, IngressOutcome::Static),
            (RequestId(2), 308, IngressOutcome::Redirect),
            (RequestId(3), 404, IngressOutcome::NoRoute),
            (RequestId(4), 400, IngressOutcome::BadRequest),
        ]
    );
    let location = out.iter().find_map(|o| match o {
        Output::IngressRespond { response, .. } => response.location.clone(),
        _ => None,
    });
    assert_eq!(location.as_deref(), Some("/new/x"));
    assert!(!out.iter().any(|o| matches!(o, Output::Dial { .. } | Output::OpenStream { .. })));
    assert_eq!(t.g.request_count(), 0);
}

#[test]
fn a_request_goes_to_a_listed_agent_with_its_open_and_is_handed_over_after_ok() {
    let mut t = T::new(Balance::RoundRobin, Limits::default());
    t.list(&[1]);
    t.request(7, "app.example.com", "/x");
    let dialed = t
        .out()
        .into_iter()
        .any(|o| matches!(o, Output::Dial { peer, .. } if peer == PeerId::from_u64(1)));
    assert!(dialed, "an unconnected agent is dialed");
    let stream = t.connect(1);
    let open = t.open(stream);
    assert_eq!(open.service.as_str(), "web");
    assert_eq!(open.host.as_str(), "app.example.com");
    assert_eq!(open.port, 8080);
    assert_eq!(open.upstream, 7);
    assert_eq!(open.client, "203.0.113.9:5555".parse().expect("address"));
    t.answer(stream, AnswerStatus::Ok, b"HTTP/1.1 200 OK\r\n");
    let out = t.out();
    let forward = out.iter().find_map(|o| match o {
        Output::IngressForward { request, stream: s, agent, prefix, .. } => {
            Some((*request, *s, *agent, prefix.clone()))
        }
        _ => None,
    });
    let (request, s, agent, prefix) = forward.expect("forwarded");
    assert_eq!((request, s, agent), (RequestId(7), stream, PeerId::from_u64(1)));
    assert_eq!(&prefix[..], b"HTTP/1.1 200 OK\r\n", "bytes behind the answer are handed over");
    assert_eq!(t.g.stream_count(), 0, "the stream is the outside's now");
    assert_eq!(t.ctx.owner(stream), None);
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Event(Event::IngressRequest {
            outcome: IngressOutcome::Forwarded,
            attempts: 1,
            ..
        })
    )));
    assert_eq!(t.g.agents.view(usize::MAX)[0].active, 1);
    t.g.on_done(&mut t.ctx, RequestId(7), IngressEnd::Complete);
    assert_eq!(t.g.agents.view(usize::MAX)[0].active, 0);
    assert_eq!(t.g.request_count(), 0);
    assert!(t.out().iter().any(|o| matches!(o, Output::Event(Event::IngressEnded { .. }))));
}

#[test]
fn a_refusal_before_any_byte_is_retried_on_another_agent_never_the_same_one() {
    let mut t = T::new(Balance::RoundRobin, Limits::default());
    t.list(&[1, 2]);
    t.request(1, "app.example.com", "/");
    let first = t.connect(1);
    t.open(first);
    t.answer(first, AnswerStatus::Refused, b"");
    let out = t.out();
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Close { stream, how: Close::Reset } if *stream == first)));
    assert!(responded(&out).is_empty(), "no answer while another agent is left");
    let second = t.connect(2);
    t.open(second);
    t.answer(second, AnswerStatus::Unreachable, b"");
    let out = t.out();
    assert_eq!(responded(&out), [(RequestId(1), 502, IngressOutcome::UpstreamError)]);
    assert!(!out.iter().any(|o| matches!(o, Output::OpenStream { .. } | Output::Dial { .. })));
}

#[test]
fn forbidden_is_answered_403_and_never_retried() {
    let mut t = T::new(Balance::RoundRobin, Limits::default());
    t.list(&[1, 2]);
    t.request(1, "app.example.com", "/");
    let s = t.connect(1);
    t.open(s);
    t.answer(s, AnswerStatus::Forbidden, b"");
    let out = t.out();
    assert_eq!(responded(&out), [(RequestId(1), 403, IngressOutcome::Forbidden)]);
    assert!(!out.iter().any(|o| matches!(o, Output::OpenStream { .. } | Output::Dial { .. })));
}

#[test]
fn no_listed_agent_waits_for_a_fresh_listing_then_503_and_a_disconnected_one_is_not_chosen() {
    let mut t = T::new(Balance::RoundRobin, Limits::default());
    // No agent known: the request asks for a listing and waits for it.
    t.request(1, "app.example.com", "/");
    assert!(responded(&t.out()).is_empty(), "it waits for a listing");
    assert!(t.g.take_refresh_now(), "and asks the hubs at once");
    // No listing comes: it is answered at the wait's end.
    let (deadline, _) = t.ctx.timers.next().expect("the wait's end");
    assert_eq!(deadline, t.now + attempt::AGENT_WAIT);
    t.now = deadline;
    t.g.on_deadline(&mut t.ctx, t.now, RequestId(1));
    assert_eq!(responded(&t.out()), [(RequestId(1), 503, IngressOutcome::NoAgent)]);
    // A listing without an agent answers a waiting request at once.
    t.request(9, "app.example.com", "/");
    t.list(&[]);
    assert_eq!(responded(&t.out()), [(RequestId(9), 503, IngressOutcome::NoAgent)]);
    // A waiting request goes on as soon as a listing brings an agent.
    t.request(2, "app.example.com", "/");
    assert!(responded(&t.out()).is_empty());
    t.list(&[1]);
    assert!(t.out().iter().any(|o| matches!(o, Output::Dial { .. })), "listed: chosen at once");
    let s = t.connect(1);
    t.open(s);
    t.answer(s, AnswerStatus::Ok, b"");
    t.out();
    // The agent drops off: the request in flight keeps going (the outside
    // owns it), new ones do not go there.
    t.now = at(10);
    t.ctx.peer_disconnected(PeerId::from_u64(1), crate::ids::ConnId(1));
    t.g.on_peer_gone(t.now, PeerId::from_u64(1));
    t.request(3, "app.example.com", "/");
    assert!(!t.out().iter().any(|o| matches!(o, Output::Dial { .. } | Output::OpenStream { .. })));
    t.now = at(20);
    t.list(&[1]);
    assert!(t.out().iter().any(|o| matches!(o, Output::Dial { .. })), "listed again: chosen");
}

#[test]
fn an_agent_that_does_not_answer_times_out_and_the_next_one_is_tried_then_504() {
    let mut t = T::new(Balance::RoundRobin, Limits::default());
    t.list(&[1, 2]);
    t.request(1, "app.example.com", "/");
    let s = t.connect(1);
    t.open(s);
    let (deadline, reason) = t.ctx.timers.next().map(|(at, k)| (at, k.reason())).expect("deadline");
    assert_eq!(reason, TimerReason::IngressDeadline);
    t.now = deadline;
    t.g.on_deadline(&mut t.ctx, t.now, RequestId(1));
    let out = t.out();
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Close { stream, how: Close::Reset } if *stream == s)));
    let s2 = t.connect(2);
    t.open(s2);
    t.now = t.ctx.timers.next().expect("deadline").0;
    t.g.on_deadline(&mut t.ctx, t.now, RequestId(1));
    assert_eq!(responded(&t.out()), [(RequestId(1), 504, IngressOutcome::UpstreamTimeout)]);
    assert_eq!(t.g.request_count(), 0);
    assert_eq!(t.g.stream_count(), 0);
}

#[test]
fn a_client_that_leaves_mid_attempt_gets_nothing_and_the_stream_is_reset() {
    let mut t = T::new(Balance::RoundRobin, Limits::default());
    t.list(&[1]);
    t.request(1, "app.example.com", "/");
    let s = t.connect(1);
    t.open(s);
    t.g.on_done(&mut t.ctx, RequestId(1), IngressEnd::ClientGone);
    let out = t.out();
    assert!(responded(&out).is_empty());
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Close { stream, how: Close::Reset } if *stream == s)));
    assert_eq!((t.g.request_count(), t.g.stream_count()), (0, 0));
    assert_eq!(t.g.agents.view(usize::MAX)[0].active, 0);
    // A late answer on the reset stream changes nothing.
    t.answer(s, AnswerStatus::Ok, b"");
    assert!(t.out().is_empty());
}

#[test]
fn the_gateway_and_per_agent_limits_answer_503_busy() {
    let limits = Limits { max_ingress_requests: 2, max_requests_per_agent: 1, ..Limits::default() };
    let mut t = T::new(Balance::RoundRobin, limits);
    t.list(&[1]);
    t.request(1, "app.example.com", "/");
    t.out();
    t.request(2, "app.example.com", "/");
    assert_eq!(responded(&t.out()), [(RequestId(2), 503, IngressOutcome::Busy)], "agent full");
    t.request(3, "app.example.com", "/hello");
    assert_eq!(responded(&t.out()), [(RequestId(3), 200, IngressOutcome::Static)]);
    t.list(&[1, 2]);
    t.request(4, "app.example.com", "/");
    assert!(responded(&t.out()).is_empty(), "agent 2 takes it");
    t.request(5, "app.example.com", "/hello");
    assert_eq!(responded(&t.out()), [(RequestId(5), 503, IngressOutcome::Busy)], "gateway full");
}

#[test]
fn a_stream_reset_before_the_answer_is_a_retryable_failure() {
    let mut t = T::new(Balance::RoundRobin, Limits::default());
    t.list(&[1, 2]);
    t.request(1, "app.example.com", "/");
    let s = t.connect(1);
    t.open(s);
    t.g.on_closed(&mut t.ctx, t.now, s);
    let out = t.out();
    assert!(!out.iter().any(|o| matches!(o, Output::Close { stream, .. } if *stream == s)));
    let s2 = t.connect(2);
    t.open(s2);
    t.answer(s2, AnswerStatus::Ok, b"");
    assert!(t.out().iter().any(|o| matches!(o, Output::IngressForward { .. })));
}
