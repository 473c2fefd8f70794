//! The exit role through the public API: the test plays the client peer, the
//! resolver and the origin's TCP stack.

// Helpers outside `#[test]` fns may unwrap too: a panic there is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::*;
use core::time::Duration;
use meshproxy_core::admission::RoleSet;
use meshproxy_core::config::{Limits, Timeouts};
use meshproxy_core::ids::{PeerId, StreamId};
use meshproxy_core::io::{
    Close, Event, Input, Output, Protocol, ResolveError, Resources, SpliceEnd, SpliceReport,
    TimerReason,
};
use meshproxy_core::target::{Status, TargetAddr};
use meshproxy_core::ticket::{TicketRefusal, TicketSigner, CLOCK_SKEW};
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

/// An exit with nothing under way (its hub link counts for nothing here).
fn idle() -> Resources {
    Resources::default()
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
    // The dial completes after all: the origin is closed at once, nothing else.
    let outs = h.input(Input::OriginConnected { stream: origin });
    assert_eq!(outs, vec![Output::Close { stream: origin, how: Close::Reset }]);
    assert_eq!(h.node.resources(), idle());
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
    let outs = h.input(Input::OriginConnected { stream: o1 });
    assert_eq!(outs, vec![Output::Close { stream: o1, how: Close::Reset }], "stale dial closed");
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
    // A dial that completes after all is closed at once, and nothing else.
    let outs = h.input(Input::OriginConnected { stream: origin });
    assert_eq!(outs, vec![Output::Close { stream: origin, how: Close::Reset }]);
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

// ------------------------------------------------------------------ tickets

/// Sends a request for `target` carrying `ticket` from `peer`.
fn request_with(
    h: &mut Harness,
    peer: PeerId,
    target: &TargetAddr,
    ticket: Bytes,
) -> (StreamId, Vec<Output>) {
    let stream = inbound(h, peer);
    let req = ConnectRequest::new(target.clone(), None).with_ticket(ticket);
    let outs = h.data(stream, request_bytes(&req));
    (stream, outs)
}

fn not_admitted(outs: &[Output]) -> Vec<(PeerId, TicketRefusal)> {
    events(outs)
        .into_iter()
        .filter_map(|e| match e {
            Event::ExitNotAdmitted { peer, why } => Some((peer, why)),
            _ => None,
        })
        .collect()
}

/// The refusal for want of a ticket: 0x02, `ExitNotAdmitted { why }`, and
/// nothing looked up or dialed.
fn assert_refused(
    h: &Harness,
    outs: &[Output],
    stream: StreamId,
    peer: PeerId,
    why: TicketRefusal,
) {
    assert_eq!(answered(outs, stream), Some(Status::NotAllowed), "{why:?}: {outs:?}");
    assert_eq!(sent_on(outs, stream), response_bytes(Status::NotAllowed), "exactly 0x02");
    assert_eq!(closed(outs, stream), Some(Close::Fin), "{why:?}");
    assert_eq!(not_admitted(outs), vec![(peer, why)]);
    assert!(denied(outs).is_empty(), "the policy is never consulted: {outs:?}");
    assert!(resolves(&h.log).is_empty(), "{why:?}: a lookup went out");
    never_dialed(h);
    assert_eq!(h.node.resources(), idle(), "{why:?}");
}

fn flip(ticket: &Bytes, at: usize) -> Bytes {
    let mut b = ticket.to_vec();
    b[at] ^= 0x01;
    Bytes::from(b)
}

#[test]
fn a_request_without_a_valid_ticket_is_refused_before_any_lookup_or_dial() {
    let good = client_ticket();
    let other = TicketSigner::from_secret([2; 32]);
    let expires = unix_at(t0()) + 600;
    let sig_at = good.len() - 64;
    let cases: Vec<(&str, Bytes, TicketRefusal)> = vec![
        ("none", Bytes::new(), TicketRefusal::Missing),
        ("garbage", Bytes::from_static(b"let me in"), TicketRefusal::Malformed),
        ("another peer's", ticket_for(PeerId::from_u64(555)), TicketRefusal::WrongHolder),
        (
            "from a hub the exit does not know",
            signed_ticket(&other, PeerId::from_u64(2), client_id(), RoleSet::CLIENT, expires),
            TicketRefusal::UnknownHub,
        ),
        (
            "forged in the name of the exit's hub",
            signed_ticket(&other, hub_id(), client_id(), RoleSet::CLIENT, expires),
            TicketRefusal::BadSignature,
        ),
        (
            "an exit's ticket",
            signed_ticket(&hub_signer(), hub_id(), client_id(), RoleSet::EXIT, expires),
            TicketRefusal::RoleNotAllowed,
        ),
        (
            "expired before it arrived",
            signed_ticket(
                &hub_signer(),
                hub_id(),
                client_id(),
                RoleSet::CLIENT,
                unix_at(t0()) - CLOCK_SKEW.as_secs(),
            ),
            TicketRefusal::Expired,
        ),
        ("with a changed signature", flip(&good, good.len() - 1), TicketRefusal::BadSignature),
        ("with a later expiry", flip(&good, sig_at - 1), TicketRefusal::BadSignature),
    ];
    for (what, ticket, why) in cases {
        for target in
            [TargetAddr::Ip(SocketAddr::new(public_ip(1), 443)), domain_target("example.com", 443)]
        {
            let mut h = exit_node(Limits::default());
            let (stream, outs) = request_with(&mut h, client_id(), &target, ticket.clone());
            assert_eq!(not_admitted(&outs), vec![(client_id(), why)], "{what} / {target}");
            assert_refused(&h, &outs, stream, client_id(), why);
        }
    }
}

#[test]
fn an_exit_that_has_no_key_for_its_hub_takes_none_of_its_tickets() {
    let mut config = exit_config(exit_id(1));
    config.hubs = vec![meshproxy_core::config::HubContact { ticket_key: None, ..hub_contact() }];
    let (mut h, _) = Harness::new(config, 1);
    let target = TargetAddr::Ip(SocketAddr::new(public_ip(1), 443));
    let (stream, outs) = request_with(&mut h, client_id(), &target, client_ticket());
    assert_eq!(answered(&outs, stream), Some(Status::NotAllowed));
    assert_eq!(not_admitted(&outs), vec![(client_id(), TicketRefusal::UnknownHub)]);
    never_dialed(&h);
}

#[test]
fn a_valid_ticket_serves_every_request_of_its_holder_and_no_one_else() {
    let mut h = exit_node(Limits::default());
    let target = TargetAddr::Ip(SocketAddr::new(public_ip(1), 443));
    for n in 1..=3 {
        let (stream, outs) = request_with(&mut h, client_id(), &target, client_ticket());
        assert!(not_admitted(&outs).is_empty(), "request {n}: {outs:?}");
        let [(origin, addr)] = origins(&outs)[..] else { panic!("request {n}: {outs:?}") };
        assert_eq!(addr, SocketAddr::new(public_ip(1), 443));
        let outs = h.input(Input::OriginConnected { stream: origin });
        assert_eq!(answered(&outs, stream), Some(Status::Succeeded));
    }
    // The exit keeps the holder's verified ticket; another peer presenting
    // the very same bytes is not its holder.
    let thief = PeerId::from_u64(555);
    let (stream, outs) = request_with(&mut h, thief, &target, client_ticket());
    assert_eq!(answered(&outs, stream), Some(Status::NotAllowed));
    assert_eq!(not_admitted(&outs), vec![(thief, TicketRefusal::WrongHolder)]);
    // A different (renewed) ticket of the holder replaces the kept one.
    let renewed = signed_ticket(
        &hub_signer(),
        hub_id(),
        client_id(),
        RoleSet::CLIENT,
        unix_at(t0()) + 2 * TICKET_LIFETIME.as_secs(),
    );
    let (_, outs) = request_with(&mut h, client_id(), &target, renewed);
    assert_eq!(origins(&outs).len(), 1, "{outs:?}");
    // And a tampered copy of the kept ticket is checked, not waved through.
    let tampered = flip(&client_ticket(), client_ticket().len() - 1);
    let (_, outs) = request_with(&mut h, client_id(), &target, tampered);
    assert_eq!(not_admitted(&outs), vec![(client_id(), TicketRefusal::BadSignature)]);
}

#[test]
fn a_ticket_expires_by_the_wall_clock_even_once_verified() {
    let mut h = exit_node(Limits::default());
    let expires = unix_at(t0()) + 30;
    let ticket = signed_ticket(&hub_signer(), hub_id(), client_id(), RoleSet::CLIENT, expires);
    let target = TargetAddr::Ip(SocketAddr::new(public_ip(1), 443));
    let (_, outs) = request_with(&mut h, client_id(), &target, ticket.clone());
    assert_eq!(origins(&outs).len(), 1, "fresh: served");
    // Clocks may differ by CLOCK_SKEW: served until then.
    h.advance(Duration::from_secs(30) + CLOCK_SKEW - Duration::from_secs(1));
    let (_, outs) = request_with(&mut h, client_id(), &target, ticket.clone());
    assert_eq!(origins(&outs).len(), 1, "within the skew: served");
    h.advance(Duration::from_secs(1));
    let (stream, outs) = request_with(&mut h, client_id(), &target, ticket);
    assert_eq!(answered(&outs, stream), Some(Status::NotAllowed));
    assert_eq!(not_admitted(&outs), vec![(client_id(), TicketRefusal::Expired)]);
    assert!(origins(&outs).is_empty());
}

#[test]
fn a_forger_gets_no_signature_checks_for_a_second() {
    let mut h = exit_node(Limits::default());
    let target = TargetAddr::Ip(SocketAddr::new(public_ip(1), 443));
    let forged = signed_ticket(
        &TicketSigner::from_secret([99; 32]),
        hub_id(),
        client_id(),
        RoleSet::CLIENT,
        unix_at(t0()) + 600,
    );
    let (_, outs) = request_with(&mut h, client_id(), &target, forged);
    assert_eq!(not_admitted(&outs), vec![(client_id(), TicketRefusal::BadSignature)]);
    // Within the penalty even a valid ticket is refused unchecked: a peer
    // that forged one is not owed a signature check per request.
    let (stream, outs) = request_with(&mut h, client_id(), &target, client_ticket());
    assert_eq!(answered(&outs, stream), Some(Status::NotAllowed));
    assert_eq!(not_admitted(&outs), vec![(client_id(), TicketRefusal::BadSignature)]);
    assert!(origins(&outs).is_empty());
    // Other peers are not affected.
    let other = PeerId::from_u64(777);
    let (_, outs) = request_with(&mut h, other, &target, ticket_for(other));
    assert_eq!(origins(&outs).len(), 1, "another peer is served");
    // After it the peer's valid ticket is checked and served again.
    h.advance(Duration::from_secs(1));
    let (_, outs) = request_with(&mut h, client_id(), &target, client_ticket());
    assert!(not_admitted(&outs).is_empty(), "{outs:?}");
    assert_eq!(origins(&outs).len(), 1, "served after the penalty");
}

#[test]
fn the_exit_clock_is_the_configured_wall_clock() {
    // The same ticket to an exit whose wall clock runs an hour ahead.
    let mut config = exit_config(exit_id(1));
    config.wall_clock = WALL_CLOCK + Duration::from_secs(3600);
    let (mut h, _) = exit_behind_hub(config, 1);
    let target = TargetAddr::Ip(SocketAddr::new(public_ip(1), 443));
    let (_, outs) = request_with(&mut h, client_id(), &target, client_ticket());
    assert_eq!(not_admitted(&outs), vec![(client_id(), TicketRefusal::Expired)]);
}

#[test]
fn an_open_exit_serves_without_a_ticket() {
    let mut config = exit_config(exit_id(1));
    if let Some(e) = &mut config.exit {
        e.open = true;
    }
    let (mut h, outs) = Harness::new(config, 1);
    assert!(outs.is_empty(), "no hubs: nothing at start");
    let (stream, outs) =
        request_with(&mut h, client_id(), &domain_target("example.com", 80), Bytes::new());
    assert!(not_admitted(&outs).is_empty());
    let [(query, _)] = resolves(&outs)[..] else { panic!("{outs:?}") };
    let outs = h.input(Input::Resolved { query, result: Ok(vec![public_ip(1)]) });
    let [(origin, _)] = origins(&outs)[..] else { panic!("{outs:?}") };
    let outs = h.input(Input::OriginConnected { stream: origin });
    assert_eq!(answered(&outs, stream), Some(Status::Succeeded));
    // Open is not lawless: the policy still holds.
    let private = TargetAddr::Ip("10.0.0.1:80".parse().unwrap());
    let (stream, outs) = request_with(&mut h, PeerId::from_u64(555), &private, Bytes::new());
    assert_eq!(answered(&outs, stream), Some(Status::NotAllowed));
    assert_eq!(denied(&outs), vec![Some("10.0.0.1".parse().unwrap())]);
}

#[test]
fn an_address_learned_at_run_time_is_denied_like_a_configured_one() {
    let mut h = exit_node(Limits::default());
    let learned = public_ip(5);
    let target = TargetAddr::Ip(SocketAddr::new(learned, 443));
    let (_, outs) = request(&mut h, &target, b"");
    assert_eq!(origins(&outs).len(), 1, "an ordinary public address until then");
    // A stranger's word does not count; the exit's own (autonat) or its hub's does.
    let stranger = PeerId::from_u64(555);
    assert!(h.input(Input::OwnAddress { ip: learned, by: Some(stranger) }).is_empty());
    let (_, outs) = request(&mut h, &target, b"");
    assert_eq!(origins(&outs).len(), 1, "a stranger cannot make the exit deny {learned}");
    for by in [None, Some(hub_id())] {
        let mut h = exit_node(Limits::default());
        h.input(Input::OwnAddress { ip: learned, by });
        let (stream, outs) = request(&mut h, &target, b"");
        assert_eq!(answered(&outs, stream), Some(Status::NotAllowed), "{by:?}");
        assert_eq!(denied(&outs), vec![Some(learned)], "{by:?}");
        assert!(origins(&outs).is_empty());
        // Also when a name resolves to it.
        let (stream, outs) = request(&mut h, &domain_target("me.example", 443), b"");
        let [(query, _)] = resolves(&outs)[..] else { panic!("{outs:?}") };
        let outs = h.input(Input::Resolved { query, result: Ok(vec![learned]) });
        assert_eq!(answered(&outs, stream), Some(Status::NotAllowed));
        // Other public addresses are unaffected.
        let (_, outs) = request(&mut h, &TargetAddr::Ip(SocketAddr::new(public_ip(6), 443)), b"");
        assert_eq!(origins(&outs).len(), 1);
    }
}

// --------------------------------------------------------------- early data

/// What an exit buffers after a request before it answers (`exit.rs`).
const EARLY_DATA_MAX: usize = 64 * 1024;

#[test]
fn early_data_is_bounded_on_every_path() {
    let target = TargetAddr::Ip(SocketAddr::new(public_ip(1), 443));
    // In the same chunk as the request: one byte too many resets.
    let mut h = exit_node(Limits::default());
    let (stream, outs) = request(&mut h, &target, &vec![7; EARLY_DATA_MAX + 1]);
    assert_eq!(closed(&outs, stream), Some(Close::Reset));
    assert!(origins(&outs).is_empty(), "nothing dialed for it");
    assert_eq!(h.node.resources(), idle());
    // Exactly the bound is fine, and arrives at the origin whole.
    let mut h = exit_node(Limits::default());
    let (stream, outs) = request(&mut h, &target, &vec![7; EARLY_DATA_MAX]);
    let [(origin, _)] = origins(&outs)[..] else { panic!("{outs:?}") };
    let outs = h.input(Input::OriginConnected { stream: origin });
    assert_eq!(splices(&outs)[0].a_to_b.len(), EARLY_DATA_MAX);
    assert!(closed(&outs, stream).is_none());
    // In later chunks while the origin is being dialed: the bound counts all.
    let mut h = exit_node(Limits::default());
    let (stream, outs) = request(&mut h, &target, &vec![1; EARLY_DATA_MAX / 2]);
    let [(origin, _)] = origins(&outs)[..] else { panic!("{outs:?}") };
    assert!(h.data(stream, vec![2; EARLY_DATA_MAX / 2]).is_empty());
    let outs = h.data(stream, vec![3]);
    assert_eq!(closed(&outs, stream), Some(Close::Reset));
    assert_eq!(closed(&outs, origin), Some(Close::Reset), "the dial is cancelled");
    assert_eq!(h.node.resources(), idle());
    // While the name is being resolved, too.
    let mut h = exit_node(Limits::default());
    let (stream, _) = request(&mut h, &domain_target("example.com", 443), b"");
    assert!(h.data(stream, vec![1; EARLY_DATA_MAX]).is_empty());
    let outs = h.data(stream, vec![1]);
    assert_eq!(closed(&outs, stream), Some(Close::Reset));
    assert_eq!(h.node.resources(), idle());
}

#[test]
fn early_data_in_many_one_byte_chunks_arrives_whole() {
    let mut h = exit_node(Limits::default());
    let stream = inbound(&mut h, client_id());
    let request = request_bytes(&ticketed(domain_target("example.org", 80)));
    let early: Vec<u8> = (0..5_000u32).map(|i| (i % 251) as u8).collect();
    for b in request.iter().chain(early.iter()) {
        let outs = h.data(stream, vec![*b]);
        assert!(closed(&outs, stream).is_none());
    }
    let [(query, _)] = resolves(&h.log)[..] else { panic!() };
    let outs = h.input(Input::Resolved { query, result: Ok(vec![public_ip(3)]) });
    let [(origin, _)] = origins(&outs)[..] else { panic!() };
    for b in [1u8, 2, 3] {
        assert!(h.data(stream, vec![b]).is_empty());
    }
    let outs = h.input(Input::OriginConnected { stream: origin });
    let mut want = early.clone();
    want.extend_from_slice(&[1, 2, 3]);
    assert_eq!(splices(&outs)[0].a_to_b, Bytes::from(want));
}
