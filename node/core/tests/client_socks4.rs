//! SOCKS4 and SOCKS4a on client listeners, through the public API: the test
//! plays the hub, the exits and the apps, and checks every output.

// Helpers outside `#[test]` fns may unwrap too: a panic there is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::*;
use core::time::Duration;
use meshproxy_core::config::{ListenerConfig, ListenerProtocol, StickyMode};
use meshproxy_core::io::{Close, Event, FailReason, Input, Output, Resources, TimerReason};
use meshproxy_core::socks::SocksAuthPolicy;
use meshproxy_core::target::{Status, TargetAddr};
use std::net::SocketAddr;
use std::sync::Arc;

const GRANTED: [u8; 8] = [0, 0x5A, 0, 0, 0, 0, 0, 0];
const REJECTED: [u8; 8] = [0, 0x5B, 0, 0, 0, 0, 0, 0];

fn fixture(listeners: Vec<ListenerConfig>, exits: u64, seed: u64) -> ClientFixture {
    ClientFixture::new(client_config(listeners), (1..=exits).map(exit_record).collect(), seed)
}

fn failed(outs: &[Output]) -> Vec<(FailReason, Status)> {
    events(outs)
        .into_iter()
        .filter_map(|e| match e {
            Event::SessionFailed { reason, status, .. } => Some((reason, status)),
            _ => None,
        })
        .collect()
}

/// A SOCKS4 request for an IPv4 target, SOCKS4a (`0.0.0.1`) for a domain.
fn socks4(target: &TargetAddr, user_id: &str) -> Vec<u8> {
    let mut m = vec![4, 1];
    m.extend_from_slice(&target.port().to_be_bytes());
    match target {
        TargetAddr::Ip(SocketAddr::V4(a)) => m.extend_from_slice(&a.ip().octets()),
        _ => m.extend_from_slice(&[0, 0, 0, 1]),
    }
    m.extend_from_slice(user_id.as_bytes());
    m.push(0);
    if let TargetAddr::Domain(d, _) = target {
        m.extend_from_slice(d.as_bytes());
        m.push(0);
    }
    m
}

fn with_payload(mut request: Vec<u8>, payload: &[u8]) -> Vec<u8> {
    request.extend_from_slice(payload);
    request
}

/// SOCKS4a CONNECT on a `both` listener: no reply before the exit's answer,
/// then 0x5A before the splice, with pipelined bytes both ways.
#[test]
fn socks4a_on_a_both_listener_splices_after_success() {
    let mut f = fixture(vec![ListenerConfig::default()], 1, 31);
    let app = f.accept(0);
    let target = domain_target("example.com", 80);
    let outs = f.h.data(app, with_payload(socks4(&target, ""), b"GET / HTTP/1.0\r\n"));
    assert!(sent_on(&outs, app).is_empty(), "no reply before the exit's: {outs:?}");
    let a = f.reach_exit(&outs);
    assert_eq!(a.request, ticketed(target));
    let outs = f.answer(&a, Status::Succeeded, b"HTTP/1.0 200 OK");
    let reply = position(&outs, |o| matches!(o, Output::Transmit { stream, .. } if *stream == app));
    let splice = position(&outs, |o| matches!(o, Output::Splice { .. }));
    assert!(reply.unwrap() < splice.unwrap(), "reply before the splice: {outs:?}");
    assert_eq!(sent_on(&outs, app), GRANTED);
    assert_eq!(
        splices(&outs),
        vec![SpliceOut {
            a: app,
            b: a.stream,
            a_to_b: Bytes::from_static(b"GET / HTTP/1.0\r\n"),
            b_to_a: Bytes::from_static(b"HTTP/1.0 200 OK"),
        }]
    );
    assert!(events(&outs).iter().any(|e| matches!(e, Event::SessionEstablished { .. })));
}

/// A `socks5` listener speaks SOCKS4 too; the request arrives byte by byte.
#[test]
fn socks4_on_a_socks5_listener_in_single_bytes() {
    let mut f = fixture(vec![listener(|l| l.protocol = ListenerProtocol::Socks5)], 1, 32);
    let app = f.accept(0);
    let target = ip_target(public_ip(7), 8080);
    let bytes = socks4(&target, "nobody");
    let (last, head) = bytes.split_last().unwrap();
    for b in head {
        assert!(f.h.data(app, vec![*b]).is_empty(), "nothing before the request is whole");
    }
    let outs = f.h.data(app, vec![*last]);
    let a = f.reach_exit(&outs);
    assert_eq!(a.request, ticketed(target));
    let outs = f.answer(&a, Status::Succeeded, b"");
    assert_eq!(sent_on(&outs, app), GRANTED);
    assert_eq!(splices(&outs).len(), 1);
}

/// Every failure is 0x5B for SOCKS4, while the event keeps the precise status
/// (metrics by reason and status stay those of SOCKS5).
#[test]
fn a_destination_failure_is_0x5b_and_counted_with_its_status() {
    for (seed, status) in
        [(33, Status::HostUnreachable), (34, Status::NotAllowed), (35, Status::TtlExpired)]
    {
        let mut f = fixture(vec![ListenerConfig::default()], 1, seed);
        let app = f.accept(0);
        let outs = f.h.data(app, socks4(&ip_target(public_ip(1), 443), ""));
        let a = f.reach_exit(&outs);
        let outs = f.answer(&a, status, b"");
        assert_eq!(sent_on(&outs, app), REJECTED, "{status}");
        assert_eq!(closed(&outs, app), Some(Close::Fin));
        assert_eq!(failed(&outs), vec![(FailReason::Destination, status)]);
        assert!(splices(&outs).is_empty());
        assert_eq!(f.h.node.resources(), Resources::default());
    }
}

/// A listener that requires SOCKS5 credentials refuses SOCKS4 (which has
/// none) with 0x5B: no exit is contacted, nothing is kept.
#[test]
fn an_auth_required_listener_refuses_socks4() {
    let strict = listener(|l| {
        l.socks_auth = Arc::new(SocksAuthPolicy::UserPass(vec![("alice".into(), "pw".into())]))
    });
    for protocol in [ListenerProtocol::Socks5, ListenerProtocol::Both] {
        let mut l = strict.clone();
        l.protocol = protocol;
        let mut f = fixture(vec![l], 1, 36);
        let app = f.accept(0);
        let outs = f.h.data(app, socks4(&domain_target("example.com", 80), "alice"));
        assert_eq!(sent_on(&outs, app), REJECTED);
        assert_eq!(closed(&outs, app), Some(Close::Fin));
        assert_eq!(failed(&outs), vec![(FailReason::Handshake, Status::GeneralFailure)]);
        assert!(dials(&outs).is_empty() && proxy_opens(&outs).is_empty(), "{outs:?}");
        assert_eq!(f.h.node.resources(), Resources::default());
    }
}

/// BIND and absurd user ids are refused with 0x5B and counted as handshake
/// failures; an unterminated user id is refused at its bound.
#[test]
fn bind_and_absurd_user_ids_are_refused() {
    let mut f = fixture(vec![ListenerConfig::default()], 1, 37);
    let app = f.accept(0);
    let mut bind = socks4(&ip_target(public_ip(1), 80), "");
    bind[1] = 2;
    let outs = f.h.data(app, bind);
    assert_eq!(sent_on(&outs, app), REJECTED);
    assert_eq!(failed(&outs), vec![(FailReason::Handshake, Status::GeneralFailure)]);

    let app = f.accept(0);
    let mut outs = f.h.data(app, vec![4, 1, 0, 80, 1, 2, 3, 4]);
    for _ in 0..8 {
        outs.extend(f.h.data(app, vec![b'u'; 64]));
        if closed(&outs, app).is_some() {
            break;
        }
    }
    assert_eq!(sent_on(&outs, app), REJECTED);
    assert_eq!(closed(&outs, app), Some(Close::Fin));
    assert_eq!(failed(&outs), vec![(FailReason::Handshake, Status::GeneralFailure)]);
    assert_eq!(f.h.node.resources(), Resources::default());
}

/// The user id carries session parameters like a SOCKS5 username: two
/// connections of one session follow one exit; a country no listener allows
/// fails at once with 0x5B.
#[test]
fn the_user_id_carries_session_params() {
    let sticky = listener(|l| {
        l.sticky = StickyMode::Session;
        l.fallback = false;
    });
    let mut f = fixture(vec![sticky], 3, 38);
    let app1 = f.accept(0);
    let outs1 = f.h.data(app1, socks4(&ip_target(public_ip(1), 443), "u-session-abc"));
    let app2 = f.accept(0);
    let outs2 = f.h.data(app2, socks4(&domain_target("example.org", 443), "u-session-abc"));
    let [exit] = dials(&outs1)[..] else { panic!("{outs1:?}") };
    assert!(dials(&outs2).is_empty(), "the second waits on the same dial: {outs2:?}");
    let conn = f.h.conn();
    let outs = f.h.input(Input::PeerConnected {
        peer: exit,
        conn,
        path: meshproxy_core::io::Path::Direct,
        limit: None,
    });
    let o = opens(&outs);
    assert_eq!(o.len(), 2);
    assert!(o.iter().all(|(_, p, _)| *p == exit));

    let de = listener(|l| l.filter.country = meshproxy_core::record::CountryCode::parse("de"));
    let mut f = fixture(vec![de], 3, 39);
    let app = f.accept(0);
    let outs = f.h.data(app, socks4(&ip_target(public_ip(1), 443), "u-country-fr"));
    assert_eq!(sent_on(&outs, app), REJECTED);
    assert_eq!(failed(&outs), vec![(FailReason::NoExit, Status::NetworkUnreachable)]);
}

/// No exit at all: after the wait the app gets 0x5B, counted as NoExit.
#[test]
fn no_exit_is_0x5b() {
    let mut f = fixture(vec![ListenerConfig::default()], 0, 40);
    let app = f.accept(0);
    let outs = f.h.data(app, socks4(&domain_target("example.com", 80), ""));
    assert!(failed(&outs).is_empty(), "exits may still register: wait a little");
    let mut outs = Vec::new();
    for _ in 0..50 {
        let (_, _, o) = f.h.fire_next();
        for m in hub_messages(&sent_on(&o, f.hub_stream)) {
            assert!(matches!(m, meshproxy_core::wire::hub::HubMessage::Find { .. }));
            f.h.data(
                f.hub_stream,
                hub_bytes(&meshproxy_core::wire::hub::HubMessage::Peers { peers: vec![] }),
            );
        }
        outs.extend(o);
        if !failed(&outs).is_empty() {
            break;
        }
    }
    assert_eq!(failed(&outs), vec![(FailReason::NoExit, Status::NetworkUnreachable)]);
    assert_eq!(sent_on(&outs, app), REJECTED);
    assert!(f.h.now <= t0() + Duration::from_secs(10), "gave up within the wait");
}

/// A half-sent SOCKS4 request runs into the handshake deadline like SOCKS5.
#[test]
fn a_half_request_times_out() {
    let mut f = fixture(vec![ListenerConfig::default()], 1, 41);
    let app = f.accept(0);
    assert!(f.h.data(app, vec![4, 1, 0, 80, 1, 2, 3, 4, b'u']).is_empty());
    let (_, why, outs) = f.h.fire_next();
    assert_eq!(why, TimerReason::SessionDeadline);
    assert_eq!(closed(&outs, app), Some(Close::Reset));
    assert_eq!(failed(&outs), vec![(FailReason::HandshakeTimeout, Status::GeneralFailure)]);
}

/// An `http` listener still speaks only HTTP: a SOCKS4 first byte gets 400.
#[test]
fn an_http_listener_answers_socks4_with_http() {
    let mut f = fixture(vec![listener(|l| l.protocol = ListenerProtocol::Http)], 1, 42);
    let app = f.accept(0);
    let outs = f.h.data(app, socks4(&ip_target(public_ip(1), 80), "").repeat(64));
    let reply = sent_on(&outs, app);
    assert!(reply.starts_with(b"HTTP/1.1 4"), "{:?}", String::from_utf8_lossy(&reply));
    assert_eq!(failed(&outs), vec![(FailReason::Handshake, Status::GeneralFailure)]);
}
