//! The exit role through the public API: the test plays the client peer, the
//! resolver and the origin's TCP stack.

// Helpers outside `#[test]` fns may unwrap too: a panic there is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::*;
use core::time::Duration;
use meshproxy_core::config::{Limits, Timeouts};
use meshproxy_core::ids::{PeerId, StreamId};
use meshproxy_core::io::{
    Close, Event, Input, Output, Protocol, ResolveError, Resources, SpliceEnd, SpliceReport,
    TimerReason,
};
use meshproxy_core::target::{Status, TargetAddr};
use meshproxy_core::wire::proxy::{ConnectRequest, PROXY_VERSION};
use std::net::{IpAddr, SocketAddr};

/// An exit registered at [`hub_id`] (played by the harness), which trusts
/// that hub's tickets; requests built here carry [`client_ticket`].
fn exit_node(limits: Limits) -> Harness {
    let mut config = exit_config(exit_id(1));
    config.limits = limits;
    let (h, _) = exit_behind_hub(config, 1);
    assert_eq!(h.node.resources(), idle(), "only the hub link");
    assert_eq!(h.node.poll_timeout().map(|(_, why)| why), Some(TimerReason::HubLink));
    h
}

fn inbound(h: &mut Harness, peer: PeerId) -> StreamId {
    let stream = h.outside_stream();
    let outs = h.input(Input::InboundStream { stream, peer, protocol: Protocol::Proxy });
    assert!(outs.is_empty(), "{outs:?}");
    stream
}

/// A client's proxy stream with `target` requested and `early` bytes after it.
fn request(h: &mut Harness, target: &TargetAddr, early: &[u8]) -> (StreamId, Vec<Output>) {
    let stream = inbound(h, client_id());
    let mut data = request_bytes(&ticketed(target.clone()));
    data.extend_from_slice(early);
    let outs = h.data(stream, data);
    (stream, outs)
}

/// The status the exit answered on `stream`, if it did.
fn answered(outs: &[Output], stream: StreamId) -> Option<Status> {
    let bytes = sent_on(outs, stream);
    (!bytes.is_empty()).then(|| decode_response(&bytes).status)
}

fn denied(outs: &[Output]) -> Vec<Option<IpAddr>> {
    events(outs)
        .into_iter()
        .filter_map(|e| match e {
            Event::ExitDenied { ip } => Some(ip),
            _ => None,
        })
        .collect()
}

fn never_dialed(h: &Harness) {
    assert!(origins(&h.log).is_empty(), "an origin was dialed: {:?}", h.log);
}

/// How many times `stream` was closed.
fn close_count(outs: &[Output], stream: StreamId) -> usize {
    outs.iter().filter(|o| matches!(o, Output::Close { stream: s, .. } if *s == stream)).count()
}

/// An exit with nothing under way: just its hub link's stream and timer.
fn idle() -> Resources {
    Resources { streams: 1, timers: 1, ..Resources::default() }
}

#[test]
fn literal_private_and_own_addresses_are_refused_without_a_dial() {
    let targets: [&str; 8] = [
        "10.0.0.1:80",
        "127.0.0.1:443",
        "[::1]:22",
        "[::ffff:10.0.0.1]:80",
        "169.254.169.254:80",
        "192.168.1.1:8080",
        "[fd00::1]:443",
        "93.184.216.200:443", // the exit's own address
    ];
    for t in targets {
        let mut h = exit_node(Limits::default());
        let sa: SocketAddr = t.parse().unwrap();
        let (stream, outs) = request(&mut h, &TargetAddr::Ip(sa), b"");
        assert_eq!(answered(&outs, stream), Some(Status::NotAllowed), "{t}");
        assert_eq!(closed(&outs, stream), Some(Close::Fin), "{t}");
        assert_eq!(denied(&outs), vec![Some(sa.ip())], "{t}");
        assert!(resolves(&outs).is_empty());
        h.advance(Duration::from_secs(60));
        never_dialed(&h);
        assert_eq!(h.node.resources(), idle(), "{t}");
    }
}

#[test]
fn numeric_names_are_read_as_addresses_not_resolved() {
    for name in ["2130706433", "0x7f000001", "127.1", "0177.0.0.1", "10.1"] {
        let mut h = exit_node(Limits::default());
        let (stream, outs) = request(&mut h, &domain_target(name, 80), b"");
        assert_eq!(answered(&outs, stream), Some(Status::NotAllowed), "{name}");
        assert!(resolves(&h.log).is_empty(), "{name} went to the resolver");
        never_dialed(&h);
    }
}

#[test]
fn a_public_literal_is_dialed_and_spliced_with_early_data() {
    let mut h = exit_node(Limits::default());
    let target = SocketAddr::new(public_ip(1), 443);
    let (stream, outs) = request(&mut h, &TargetAddr::Ip(target), b"hello");
    assert!(answered(&outs, stream).is_none(), "no answer before the origin is up");
    let [(origin, addr)] = origins(&outs)[..] else { panic!("{outs:?}") };
    assert_eq!(addr, target);
    assert!(h.data(stream, b" world".to_vec()).is_empty(), "kept for the origin");
    let outs = h.input(Input::OriginConnected { stream: origin });
    let resp = position(&outs, |o| matches!(o, Output::Transmit { stream: s, .. } if *s == stream));
    let splice = position(&outs, |o| matches!(o, Output::Splice { .. }));
    assert!(resp.unwrap() < splice.unwrap(), "response is written before the splice");
    assert_eq!(answered(&outs, stream), Some(Status::Succeeded));
    assert_eq!(
        splices(&outs),
        vec![SpliceOut {
            a: stream,
            b: origin,
            a_to_b: Bytes::from_static(b"hello world"),
            b_to_a: Bytes::new(),
        }]
    );
    assert_eq!(events(&outs), vec![Event::ExitConnected { peer: client_id() }]);
    assert_eq!(h.node.resources().sessions, 1);
    // Spliced: no deadline applies any more (only the hub link's).
    assert_eq!(h.node.poll_timeout().map(|(_, why)| why), Some(TimerReason::HubLink));
    let report = SpliceReport { a_to_b: 11, b_to_a: 5, how: SpliceEnd::ResetB };
    let outs = h.input(Input::SpliceEnded { a: stream, b: origin, report });
    assert_eq!(
        events(&outs),
        vec![Event::SessionClosed { up: 11, down: 5, how: SpliceEnd::ResetB }]
    );
    assert_eq!(h.node.resources(), idle());
}

#[test]
fn a_name_is_resolved_and_only_public_answers_are_dialed() {
    let mut h = exit_node(Limits::default());
    let (stream, outs) = request(&mut h, &domain_target("example.com", 443), b"early");
    assert!(origins(&outs).is_empty() && answered(&outs, stream).is_none());
    let [(query, ref name)] = resolves(&outs)[..] else { panic!("{outs:?}") };
    assert_eq!(name, "example.com");
    assert_eq!(h.node.resources().pending_queries, 1);
    let ips = vec!["10.0.0.5".parse().unwrap(), public_ip(1), "127.0.0.1".parse().unwrap()];
    let outs = h.input(Input::Resolved { query, result: Ok(ips) });
    assert_eq!(origins(&outs), vec![(origins(&outs)[0].0, SocketAddr::new(public_ip(1), 443))]);
    assert_eq!(h.node.resources().pending_queries, 0);
    let origin = origins(&outs)[0].0;
    let outs = h.input(Input::OriginConnected { stream: origin });
    assert_eq!(answered(&outs, stream), Some(Status::Succeeded));
    assert_eq!(splices(&outs)[0].a_to_b, Bytes::from_static(b"early"));
    let all: Vec<SocketAddr> = origins(&h.log).into_iter().map(|(_, a)| a).collect();
    assert_eq!(all, vec![SocketAddr::new(public_ip(1), 443)]);
}

#[test]
fn resolved_addresses_are_tried_in_order_skipping_private_ones() {
    let mut h = exit_node(Limits::default());
    let (stream, outs) = request(&mut h, &domain_target("example.com", 80), b"");
    let [(query, _)] = resolves(&outs)[..] else { panic!() };
    let ips = vec![public_ip(1), "10.9.9.9".parse().unwrap(), public_ip(2)];
    let outs = h.input(Input::Resolved { query, result: Ok(ips) });
    let [(o1, a1)] = origins(&outs)[..] else { panic!("{outs:?}") };
    assert_eq!(a1.ip(), public_ip(1));
    let outs = h.input(Input::OriginFailed { stream: o1, status: Status::ConnectionRefused });
    let [(o2, a2)] = origins(&outs)[..] else { panic!("{outs:?}") };
    assert_eq!(a2.ip(), public_ip(2));
    assert!(answered(&outs, stream).is_none());
    let outs = h.input(Input::OriginFailed { stream: o2, status: Status::HostUnreachable });
    assert_eq!(answered(&outs, stream), Some(Status::HostUnreachable), "the last failure counts");
    assert_eq!(closed(&outs, stream), Some(Close::Fin));
    assert_eq!(origins(&h.log).len(), 2);
    assert_eq!(h.node.resources(), idle());
}

#[test]
fn a_name_with_only_private_answers_is_not_allowed() {
    let mut h = exit_node(Limits::default());
    let (stream, outs) = request(&mut h, &domain_target("intranet.example", 443), b"");
    let [(query, _)] = resolves(&outs)[..] else { panic!() };
    let first: IpAddr = "192.168.0.10".parse().unwrap();
    let ips = vec![first, "::1".parse().unwrap(), "::ffff:127.0.0.1".parse().unwrap()];
    let outs = h.input(Input::Resolved { query, result: Ok(ips) });
    assert_eq!(answered(&outs, stream), Some(Status::NotAllowed));
    assert_eq!(denied(&outs), vec![Some(first)]);
    never_dialed(&h);
    assert_eq!(h.node.resources(), idle());
}

#[test]
fn resolver_failures_map_to_statuses() {
    let cases = [
        (Err(ResolveError::NotFound), Status::HostUnreachable),
        (Ok(vec![]), Status::HostUnreachable),
        (Err(ResolveError::Failed), Status::GeneralFailure),
    ];
    for (result, status) in cases {
        let mut h = exit_node(Limits::default());
        let (stream, outs) = request(&mut h, &domain_target("nx.example", 443), b"");
        let [(query, _)] = resolves(&outs)[..] else { panic!() };
        let outs = h.input(Input::Resolved { query, result: result.clone() });
        assert_eq!(answered(&outs, stream), Some(status), "{result:?}");
        assert_eq!(closed(&outs, stream), Some(Close::Fin));
        never_dialed(&h);
        assert_eq!(h.node.resources(), idle());
    }
}

#[test]
fn a_resolver_that_never_answers_times_out() {
    let mut h = exit_node(Limits::default());
    let (stream, _) = request(&mut h, &domain_target("slow.example", 443), b"");
    let (at, why, outs) = h.fire_next();
    assert_eq!(
        (at, why),
        (t0() + Timeouts::default().origin_connect, TimerReason::SessionDeadline)
    );
    assert_eq!(answered(&outs, stream), Some(Status::HostUnreachable));
    assert_eq!(h.node.resources(), idle());
}

#[test]
fn origin_refusal_is_passed_back() {
    let mut h = exit_node(Limits::default());
    let (stream, outs) = request(&mut h, &TargetAddr::Ip(SocketAddr::new(public_ip(1), 25)), b"");
    let [(origin, _)] = origins(&outs)[..] else { panic!() };
    let outs = h.input(Input::OriginFailed { stream: origin, status: Status::ConnectionRefused });
    assert_eq!(answered(&outs, stream), Some(Status::ConnectionRefused));
    assert_eq!(closed(&outs, stream), Some(Close::Fin));
    assert!(closed(&outs, origin).is_none(), "a failed dial needs no close: {outs:?}");
    assert!(events(&outs).contains(&Event::ExitConnectFailed { status: Status::ConnectionRefused }));
    assert_eq!(h.node.resources(), idle());
}

#[test]
fn origin_connect_deadline_expires_the_only_address() {
    let mut h = exit_node(Limits::default());
    let (stream, outs) = request(&mut h, &TargetAddr::Ip(SocketAddr::new(public_ip(1), 443)), b"");
    let [(origin, _)] = origins(&outs)[..] else { panic!() };
    let (at, why, outs) = h.fire_next();
    assert_eq!(
        (at, why),
        (t0() + Timeouts::default().origin_connect, TimerReason::SessionDeadline)
    );
    assert_eq!(closed(&outs, origin), Some(Close::Reset), "the dial is cancelled");
    assert_eq!(close_count(&outs, origin), 1, "closed exactly once: {outs:?}");
    assert_eq!(answered(&outs, stream), Some(Status::TtlExpired));
    assert_eq!(closed(&outs, stream), Some(Close::Fin));
    assert_eq!(h.node.resources(), idle());
    // The dial completes after all: nothing happens.
    assert!(h.input(Input::OriginConnected { stream: origin }).is_empty());
}

#[test]
fn origin_connect_deadline_moves_to_the_next_address() {
    let mut h = exit_node(Limits::default());
    let (stream, outs) = request(&mut h, &domain_target("two.example", 443), b"");
    let [(query, _)] = resolves(&outs)[..] else { panic!() };
    let outs = h.input(Input::Resolved { query, result: Ok(vec![public_ip(1), public_ip(2)]) });
    let [(o1, _)] = origins(&outs)[..] else { panic!() };
    let (_, _, outs) = h.fire_next();
    assert_eq!(closed(&outs, o1), Some(Close::Reset));
    let [(o2, a2)] = origins(&outs)[..] else { panic!("{outs:?}") };
    assert_eq!(a2.ip(), public_ip(2));
    assert!(answered(&outs, stream).is_none());
    assert!(h.input(Input::OriginConnected { stream: o1 }).is_empty(), "stale dial ignored");
    let outs = h.input(Input::OriginConnected { stream: o2 });
    assert_eq!(answered(&outs, stream), Some(Status::Succeeded));
    assert_eq!((splices(&outs)[0].a, splices(&outs)[0].b), (stream, o2));
}

#[test]
fn a_silent_client_is_reset_at_the_request_deadline() {
    for partial in
        [&b""[..], &request_bytes(&ConnectRequest::new(domain_target("a.example", 1), None))[..5]]
    {
        let mut h = exit_node(Limits::default());
        let stream = inbound(&mut h, client_id());
        assert!(h.data(stream, partial.to_vec()).is_empty());
        let (at, why, outs) = h.fire_next();
        assert_eq!((at, why), (t0() + Timeouts::default().request, TimerReason::SessionDeadline));
        assert_eq!(closed(&outs, stream), Some(Close::Reset));
        assert!(answered(&outs, stream).is_none());
        assert_eq!(events(&outs), vec![Event::PeerProtocolError { peer: client_id() }]);
        assert_eq!(h.node.resources(), idle());
    }
}

#[test]
fn another_protocol_version_gets_general_failure() {
    let mut h = exit_node(Limits::default());
    let stream = inbound(&mut h, client_id());
    let req = ConnectRequest {
        version: PROXY_VERSION + 1,
        target: TargetAddr::Ip(SocketAddr::new(public_ip(1), 443)),
        session: None,
        ticket: client_ticket(),
    };
    let outs = h.data(stream, request_bytes(&req));
    assert_eq!(answered(&outs, stream), Some(Status::GeneralFailure));
    assert_eq!(closed(&outs, stream), Some(Close::Fin));
    assert!(events(&outs).contains(&Event::PeerProtocolError { peer: client_id() }));
    never_dialed(&h);
    assert_eq!(h.node.resources(), idle());
}

#[test]
fn garbage_gets_general_failure() {
    let mut h = exit_node(Limits::default());
    let stream = inbound(&mut h, client_id());
    let outs = h.data(stream, b"GET / HTTP/1.1\r\n\r\n".to_vec());
    assert_eq!(answered(&outs, stream), Some(Status::GeneralFailure));
    assert_eq!(closed(&outs, stream), Some(Close::Fin));
    never_dialed(&h);
}

#[test]
fn a_request_split_into_single_bytes_still_works() {
    let mut h = exit_node(Limits::default());
    let stream = inbound(&mut h, client_id());
    let mut bytes = request_bytes(&ticketed(domain_target("example.org", 80)));
    bytes.extend_from_slice(b"xy");
    let mut outs = Vec::new();
    for b in bytes {
        outs.extend(h.data(stream, vec![b]));
    }
    let [(query, ref name)] = resolves(&outs)[..] else { panic!("{outs:?}") };
    assert_eq!(name, "example.org");
    let outs = h.input(Input::Resolved { query, result: Ok(vec![public_ip(3)]) });
    let [(origin, _)] = origins(&outs)[..] else { panic!() };
    let outs = h.input(Input::OriginConnected { stream: origin });
    assert_eq!(splices(&outs)[0].a_to_b, Bytes::from_static(b"xy"));
}

#[test]
fn per_peer_session_limit_answers_general_failure() {
    let limits = Limits { max_sessions_per_peer: 2, ..Limits::default() };
    let mut h = exit_node(limits);
    let first = inbound(&mut h, client_id());
    let _second = inbound(&mut h, client_id());
    let third = h.outside_stream();
    let outs = h.input(Input::InboundStream {
        stream: third,
        peer: client_id(),
        protocol: Protocol::Proxy,
    });
    assert_eq!(answered(&outs, third), Some(Status::GeneralFailure));
    assert_eq!(closed(&outs, third), Some(Close::Fin));
    assert_eq!(h.node.resources().sessions, 2);
    // Another peer is not affected.
    let _other = inbound(&mut h, PeerId::from_u64(555));
    assert_eq!(h.node.resources().sessions, 3);
    // Once one of the peer's sessions ends it may open another.
    let outs = h.input(Input::StreamClosed { stream: first, how: Close::Reset });
    assert_eq!(closed(&outs, first), Some(Close::Reset));
    let _fourth = inbound(&mut h, client_id());
    assert_eq!(h.node.resources().sessions, 3);
}

#[test]
fn total_session_limit_answers_general_failure() {
    let limits = Limits { max_exit_sessions: 3, ..Limits::default() };
    let mut h = exit_node(limits);
    for n in 0..3 {
        inbound(&mut h, PeerId::from_u64(500 + n));
    }
    let extra = h.outside_stream();
    let peer = PeerId::from_u64(600);
    let outs = h.input(Input::InboundStream { stream: extra, peer, protocol: Protocol::Proxy });
    assert_eq!(answered(&outs, extra), Some(Status::GeneralFailure));
    assert_eq!(h.node.resources().sessions, 3);
}

#[test]
fn a_client_reset_while_connecting_cancels_the_dial() {
    let mut h = exit_node(Limits::default());
    let (stream, outs) = request(&mut h, &TargetAddr::Ip(SocketAddr::new(public_ip(1), 443)), b"");
    let [(origin, _)] = origins(&outs)[..] else { panic!() };
    let outs = h.input(Input::StreamClosed { stream, how: Close::Reset });
    assert_eq!(closed(&outs, origin), Some(Close::Reset));
    assert_eq!(closed(&outs, stream), Some(Close::Reset));
    assert_eq!(h.node.resources(), idle());
    assert!(h.input(Input::OriginConnected { stream: origin }).is_empty());
    assert!(h.advance(Duration::from_secs(60)).is_empty());
}

#[test]
fn a_client_gone_before_the_resolver_answers() {
    let mut h = exit_node(Limits::default());
    let (stream, outs) = request(&mut h, &domain_target("example.com", 443), b"");
    let [(query, _)] = resolves(&outs)[..] else { panic!() };
    h.input(Input::StreamClosed { stream, how: Close::Fin });
    assert_eq!(h.node.resources(), idle());
    assert!(h.input(Input::Resolved { query, result: Ok(vec![public_ip(1)]) }).is_empty());
    never_dialed(&h);
}

#[test]
fn a_client_node_refuses_proxy_streams() {
    let (mut h, _) = Harness::new(client_config(vec![Default::default()]), 1);
    let stream = h.outside_stream();
    let outs =
        h.input(Input::InboundStream { stream, peer: exit_id(2), protocol: Protocol::Proxy });
    assert_eq!(closed(&outs, stream), Some(Close::Reset));
    let _ = Duration::ZERO;
}
