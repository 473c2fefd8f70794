//! The client role through the public API: the test plays the hub, the exits
//! and the apps, and checks every output.

// Helpers outside `#[test]` fns may unwrap too: a panic there is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::*;
use core::time::Duration;
use meshproxy_core::config::{ListenerConfig, ListenerProtocol, StickyMode};
use meshproxy_core::ids::{ListenerId, PeerId, StreamId};
use meshproxy_core::io::{
    Close, Event, FailReason, Input, Output, Resources, SpliceEnd, SpliceReport, TimerReason,
};
use meshproxy_core::listener::Serves;
use meshproxy_core::target::{Status, TargetAddr};
use std::collections::BTreeSet;

fn fixture(listeners: Vec<ListenerConfig>, exits: u64, seed: u64) -> ClientFixture {
    ClientFixture::new(client_config(listeners), (1..=exits).map(exit_record).collect(), seed)
}

/// What a node holds when nothing is going on (periodic timers aside).
fn idle() -> Resources {
    Resources::default()
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

fn attempt_failures(outs: &[Output]) -> Vec<PeerId> {
    events(outs)
        .into_iter()
        .filter_map(|e| match e {
            Event::ExitAttemptFailed { exit } => Some(exit),
            _ => None,
        })
        .collect()
}

/// A SOCKS5 CONNECT goes out only after the exit answered, and the splice
/// carries the app's pipelined bytes one way and the exit's early bytes back.
fn socks_connect_splices_after_success(target: TargetAddr) {
    let mut f = fixture(vec![ListenerConfig::default()], 1, 1);
    let app = f.accept(0);
    let outs = f.socks(app, &target, None, b"GET / HTTP/1.1\r\n");
    let a = f.reach_exit(&outs);
    assert!(a.dialed, "the exit was not connected yet");
    assert_eq!(a.exit, exit_id(1));
    assert_eq!(a.request, ticketed(target), "the ticket from AuthOk goes with the request");
    assert_eq!(f.h.node.resources().sessions, 1);

    // The app keeps talking before it has an answer: nothing goes anywhere yet.
    assert!(f.h.data(app, b"Host: x\r\n\r\n".to_vec()).is_empty());

    let outs = f.answer(&a, Status::Succeeded, b"HTTP/1.1 200 OK");
    let reply = position(&outs, |o| matches!(o, Output::Transmit { stream, .. } if *stream == app));
    let splice = position(&outs, |o| matches!(o, Output::Splice { .. }));
    assert!(reply.unwrap() < splice.unwrap(), "reply is written before the splice: {outs:?}");
    assert_eq!(sent_on(&outs, app), socks_reply(Status::Succeeded));
    assert_eq!(
        splices(&outs),
        vec![SpliceOut {
            a: app,
            b: a.stream,
            a_to_b: Bytes::from_static(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            b_to_a: Bytes::from_static(b"HTTP/1.1 200 OK"),
        }]
    );
    assert!(closed(&outs, app).is_none() && closed(&outs, a.stream).is_none());
    assert!(events(&outs).iter().any(|e| matches!(
        e,
        Event::SessionEstablished { listener: ListenerId(0), exit, attempts: 1, .. }
            if *exit == exit_id(1)
    )));

    // Spliced: setup deadlines no longer apply.
    let later = f.h.advance(Duration::from_secs(120));
    assert!(sent_on(&later, app).is_empty() && closed(&later, app).is_none(), "{later:?}");
    assert!(f.h.node.tracks_stream(app));

    let report = SpliceReport { a_to_b: 10, b_to_a: 20, how: SpliceEnd::Clean };
    let outs = f.h.input(Input::SpliceEnded { a: app, b: a.stream, report });
    assert_eq!(
        events(&outs),
        vec![Event::SessionClosed { up: 10, down: 20, how: SpliceEnd::Clean }]
    );
    assert_eq!(f.h.node.resources(), idle());
}

#[test]
fn socks_connect_to_an_ip() {
    socks_connect_splices_after_success(ip_target(public_ip(1), 443));
}

#[test]
fn socks_connect_to_a_domain() {
    socks_connect_splices_after_success(domain_target("example.com", 443));
}

#[test]
fn socks_connect_to_an_ipv6_literal() {
    socks_connect_splices_after_success(ip_target("2606:2800:220:1::1".parse().unwrap(), 80));
}

#[test]
fn destination_failure_is_reported_and_not_retried() {
    let mut f = fixture(vec![listener(|l| l.retries = 2)], 3, 2);
    let app = f.accept(0);
    let outs = f.socks(app, &ip_target(public_ip(1), 80), None, b"");
    let a = f.reach_exit(&outs);
    let outs = f.answer(&a, Status::ConnectionRefused, b"");
    assert_eq!(sent_on(&outs, app), socks_reply(Status::ConnectionRefused));
    assert_eq!(closed(&outs, app), Some(Close::Fin));
    assert_eq!(closed(&outs, a.stream), Some(Close::Fin), "the exit did its job: end cleanly");
    assert_eq!(failed(&outs), vec![(FailReason::Destination, Status::ConnectionRefused)]);
    assert!(attempt_failures(&outs).is_empty());
    assert!(dials(&outs).is_empty() && opens(&outs).is_empty());
    let later = f.h.advance(Duration::from_secs(60));
    assert!(proxy_opens(&later).is_empty(), "no retry: {later:?}");
    assert!(dials(&later).iter().all(|p| *p == hub_id()), "no retry: {later:?}");
    assert_eq!(f.h.node.resources(), idle());
}

#[test]
fn exit_failures_move_to_other_exits_then_fail() {
    // One failure of each kind: the dial, the stream, the exit's answer.
    let mut f = fixture(vec![listener(|l| l.retries = 2)], 4, 3);
    let app = f.accept(0);
    let outs = f.socks(app, &domain_target("example.com", 443), None, b"");
    let mut tried = Vec::new();

    let [first] = dials(&outs)[..] else { panic!("{outs:?}") };
    tried.push(first);
    let outs = f.h.input(Input::DialFailed { peer: first });
    assert_eq!(attempt_failures(&outs), vec![first]);
    assert!(sent_on(&outs, app).is_empty(), "the app waits during retries");

    let [second] = dials(&outs)[..] else { panic!("{outs:?}") };
    tried.push(second);
    let conn = f.h.conn();
    let outs = f.h.input(Input::PeerConnected {
        peer: second,
        conn,
        path: meshproxy_core::io::Path::Direct,
        limit: None,
    });
    let [(stream, peer, _)] = opens(&outs)[..] else { panic!("{outs:?}") };
    assert_eq!(peer, second);
    let outs = f.h.input(Input::StreamRefused { stream });
    assert_eq!(attempt_failures(&outs), vec![second]);
    assert!(closed(&outs, stream).is_none(), "a refused stream needs no close");
    assert!(sent_on(&outs, app).is_empty());

    let third = f.reach_exit(&outs);
    tried.push(third.exit);
    let outs = f.answer(&third, Status::GeneralFailure, b"");
    assert_eq!(attempt_failures(&outs), vec![third.exit]);
    assert_eq!(closed(&outs, third.stream), Some(Close::Reset));
    assert!(sent_on(&outs, app).is_empty());

    // The failed direct dial to an exit with no known relay was given back
    // (its record may have been stale: the exit may sit behind NAT now), once.
    let [fourth] = dials(&outs)[..] else { panic!("{outs:?}") };
    tried.push(fourth);
    let outs = f.h.input(Input::DialFailed { peer: fourth });
    assert_eq!(attempt_failures(&outs), vec![fourth]);
    assert_eq!(sent_on(&outs, app), socks_reply(Status::GeneralFailure));
    assert_eq!(closed(&outs, app), Some(Close::Fin));
    assert_eq!(failed(&outs), vec![(FailReason::ExitFailed, Status::GeneralFailure)]);
    assert!(dials(&outs).is_empty() && opens(&outs).is_empty(), "retries are used up");

    let distinct: BTreeSet<PeerId> = tried.iter().copied().collect();
    assert_eq!(distinct.len(), 4, "every retry picks another exit: {tried:?}");
    assert_eq!(f.h.node.resources().sessions, 0);
    assert_eq!(f.h.node.resources().streams, 0);
}

#[test]
fn retries_bound_the_attempts() {
    for retries in 0..=3u32 {
        let mut f = fixture(vec![listener(|l| l.retries = retries)], 5, 10 + u64::from(retries));
        let app = f.accept(0);
        let mut outs = f.socks(app, &ip_target(public_ip(9), 443), None, b"");
        let mut tried = BTreeSet::new();
        for n in 0..=retries {
            let a = f.reach_exit(&outs);
            assert!(tried.insert(a.exit), "exit tried twice");
            outs = f.answer(&a, Status::GeneralFailure, b"");
            let last = n == retries;
            assert_eq!(!failed(&outs).is_empty(), last, "retries={retries} attempt {n}");
        }
        assert_eq!(sent_on(&outs, app), socks_reply(Status::GeneralFailure));
        assert_eq!(tried.len() as u32, retries + 1);
    }
}

#[test]
fn an_exit_that_never_answers_times_out_and_is_replaced() {
    let mut f = fixture(vec![listener(|l| l.retries = 1)], 2, 4);
    let app = f.accept(0);
    let outs = f.socks(app, &ip_target(public_ip(1), 443), None, b"");
    let a = f.reach_exit(&outs);
    let (at, why, outs) = f.h.fire_next();
    assert_eq!(why, TimerReason::SessionDeadline);
    assert_eq!(at, t0() + meshproxy_core::config::Timeouts::default().attempt);
    assert_eq!(attempt_failures(&outs), vec![a.exit]);
    assert_eq!(closed(&outs, a.stream), Some(Close::Reset));
    let b = f.reach_exit(&outs);
    assert_ne!(b.exit, a.exit);
    // A late answer on the abandoned stream changes nothing.
    assert!(f.answer(&a, Status::Succeeded, b"").is_empty());
    let outs = f.answer(&b, Status::Succeeded, b"");
    assert_eq!(sent_on(&outs, app), socks_reply(Status::Succeeded));
}

#[test]
fn handshake_deadline_closes_the_app() {
    let mut f = fixture(vec![ListenerConfig::default()], 1, 5);
    let app = f.accept(0);
    assert!(f.h.data(app, vec![5u8]).is_empty(), "half a greeting");
    let start = f.h.now;
    let (at, why, outs) = f.h.fire_next();
    assert_eq!((at, why), (start + Duration::from_secs(10), TimerReason::SessionDeadline));
    assert_eq!(closed(&outs, app), Some(Close::Reset));
    assert_eq!(failed(&outs), vec![(FailReason::HandshakeTimeout, Status::GeneralFailure)]);
    assert_eq!(f.h.node.resources(), idle());
    // The rest of the greeting arrives too late.
    assert!(f.h.data(app, vec![1u8, 0]).is_empty());
}

#[test]
fn app_closing_while_awaiting_the_exit_resets_the_peer_stream() {
    let mut f = fixture(vec![ListenerConfig::default()], 1, 6);
    let app = f.accept(0);
    let outs = f.socks(app, &ip_target(public_ip(1), 443), None, b"");
    let a = f.reach_exit(&outs);
    let outs = f.h.input(Input::StreamClosed { stream: app, how: Close::Fin });
    assert_eq!(closed(&outs, a.stream), Some(Close::Reset));
    assert_eq!(closed(&outs, app), Some(Close::Fin));
    assert_eq!(failed(&outs), vec![(FailReason::AppClosed, Status::GeneralFailure)]);
    assert!(sent_on(&outs, app).is_empty(), "nobody left to answer");
    assert_eq!(f.h.node.resources(), idle());
    assert!(!f.h.node.tracks_stream(app) && !f.h.node.tracks_stream(a.stream));
    // The exit's late success is ignored.
    assert!(f.answer(&a, Status::Succeeded, b"").is_empty());
    let later = f.h.advance(Duration::from_secs(60));
    assert!(closed(&later, app).is_none() && closed(&later, a.stream).is_none());
    assert!(proxy_opens(&later).is_empty());
}

#[test]
fn app_closing_while_the_exit_is_dialed_leaves_nothing_behind() {
    let mut f = fixture(vec![ListenerConfig::default()], 1, 7);
    let app = f.accept(0);
    let outs = f.socks(app, &ip_target(public_ip(1), 443), None, b"");
    assert_eq!(dials(&outs), vec![exit_id(1)]);
    let outs = f.h.input(Input::StreamClosed { stream: app, how: Close::Reset });
    assert_eq!(closed(&outs, app), Some(Close::Reset));
    assert_eq!(f.h.node.resources().sessions, 0);
    // The dial completes after all: no stream is opened for the dead session.
    let conn = f.h.conn();
    let outs = f.h.input(Input::PeerConnected {
        peer: exit_id(1),
        conn,
        path: meshproxy_core::io::Path::Direct,
        limit: None,
    });
    assert!(opens(&outs).is_empty(), "{outs:?}");
    assert_eq!(f.h.node.resources(), idle());
}

#[test]
fn app_closing_while_the_stream_opens() {
    let mut f = fixture(vec![ListenerConfig::default()], 1, 8);
    let app = f.accept(0);
    let outs = f.socks(app, &ip_target(public_ip(1), 443), None, b"");
    let conn = f.h.conn();
    let outs2 = f.h.input(Input::PeerConnected {
        peer: exit_id(1),
        conn,
        path: meshproxy_core::io::Path::Direct,
        limit: None,
    });
    let _ = outs;
    let [(stream, _, _)] = opens(&outs2)[..] else { panic!("{outs2:?}") };
    let outs = f.h.input(Input::StreamClosed { stream: app, how: Close::Fin });
    assert_eq!(closed(&outs, stream), Some(Close::Reset));
    assert_eq!(f.h.node.resources(), idle());
    // It opens after all: no request on it, and it is closed at once, so the
    // outside drops it without asking whether the core still tracks it.
    let outs = f.h.input(Input::StreamOpened { stream });
    assert_eq!(
        outs,
        vec![Output::Close { stream, how: Close::Reset }],
        "no request on a dead stream"
    );
    assert!(!f.h.node.tracks_stream(stream));
}

const HTTP_CONNECT: &[u8] = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n";

fn http_session(status: Status) -> (Vec<Output>, StreamId, Attempt) {
    let mut f = fixture(vec![listener(|l| l.protocol = ListenerProtocol::Http)], 1, 9);
    let app = f.accept(0);
    let mut data = HTTP_CONNECT.to_vec();
    data.extend_from_slice(b"\x16\x03\x01");
    let outs = f.h.data(app, data);
    assert!(sent_on(&outs, app).is_empty(), "no answer before the exit's");
    let a = f.reach_exit(&outs);
    assert_eq!(a.request.target, domain_target("example.com", 443));
    let outs = f.answer(&a, status, b"");
    (outs, app, a)
}

#[test]
fn http_connect_success_answers_200_and_splices() {
    let (outs, app, a) = http_session(Status::Succeeded);
    let reply = sent_on(&outs, app);
    assert!(reply.starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&reply));
    let s = splices(&outs);
    assert_eq!(s.len(), 1);
    assert_eq!((s[0].a, s[0].b), (app, a.stream));
    assert_eq!(s[0].a_to_b, Bytes::from_static(b"\x16\x03\x01"), "the TLS hello pipelined");
}

#[test]
fn http_connect_not_allowed_answers_403() {
    let (outs, app, _) = http_session(Status::NotAllowed);
    let reply = sent_on(&outs, app);
    assert!(reply.starts_with(b"HTTP/1.1 403"), "{:?}", String::from_utf8_lossy(&reply));
    assert_eq!(closed(&outs, app), Some(Close::Fin));
    assert!(splices(&outs).is_empty());
}

#[test]
fn both_listener_tells_socks_from_http() {
    let mut f = fixture(vec![ListenerConfig::default()], 1, 11);
    let app = f.accept(0);
    let outs = f.h.data(app, HTTP_CONNECT.to_vec());
    let a = f.reach_exit(&outs);
    let outs = f.answer(&a, Status::HostUnreachable, b"");
    assert!(sent_on(&outs, app).starts_with(b"HTTP/1.1 502"));
}

// ------------------------------------------------------------------ sticky

const SESSION_USER: &str = "u-session-abc";

fn sticky_listener(fallback: bool) -> ListenerConfig {
    listener(|l| {
        l.sticky = StickyMode::Session;
        l.fallback = fallback;
        l.retries = 2;
    })
}

/// One sticky connection up to its attempt.
fn sticky_attempt(f: &mut ClientFixture, user: &str) -> (StreamId, Attempt, Vec<Output>) {
    let app = f.accept(0);
    let outs = f.socks(app, &ip_target(public_ip(1), 443), Some(user), b"");
    let a = f.reach_exit(&outs);
    (app, a, outs)
}

#[test]
fn sticky_session_without_fallback_stays_on_its_exit() {
    let mut f = fixture(vec![sticky_listener(false)], 3, 12);
    let (app1, a1, outs) = sticky_attempt(&mut f, SESSION_USER);
    assert_eq!(persists(&outs).len(), 1, "pinned at choice");
    assert!(a1.request.session.is_some(), "the exit hears of the session");
    let outs = f.answer(&a1, Status::Succeeded, b"");
    assert_eq!(sent_on(&outs, app1), socks_reply(Status::Succeeded));

    let (app2, a2, outs) = sticky_attempt(&mut f, SESSION_USER);
    assert_eq!(a2.exit, a1.exit, "same session, same exit");
    assert!(!a2.dialed);
    assert_eq!(a2.request.session, a1.request.session);
    assert!(persists(&outs).is_empty(), "the pin did not change");
    f.answer(&a2, Status::Succeeded, b"");
    let _ = app2;

    // The pinned exit fails: the session fails; no other exit is tried.
    let (app3, a3, _) = sticky_attempt(&mut f, SESSION_USER);
    assert_eq!(a3.exit, a1.exit);
    let outs = f.answer(&a3, Status::GeneralFailure, b"");
    assert_eq!(attempt_failures(&outs), vec![a1.exit]);
    assert!(dials(&outs).is_empty() && opens(&outs).is_empty(), "no fallback: {outs:?}");
    assert_eq!(failed(&outs), vec![(FailReason::StickyUnavailable, Status::GeneralFailure)]);
    assert_eq!(sent_on(&outs, app3), socks_reply(Status::GeneralFailure));
    assert!(persists(&outs).is_empty());

    // While the exit backs off, the session's next connection fails at once.
    let app4 = f.accept(0);
    let outs = f.socks_raw(app4, &ip_target(public_ip(1), 443), Some(SESSION_USER), b"");
    assert!(dials(&outs).is_empty() && opens(&outs).is_empty(), "{outs:?}");
    assert_eq!(failed(&outs).len(), 1);
    assert_eq!(failed(&outs)[0].0, FailReason::StickyUnavailable);

    // Another session is free to use any exit.
    let (_, other, _) = sticky_attempt(&mut f, "u-session-other");
    assert_ne!(other.exit, a1.exit, "the failed exit is backing off");
}

#[test]
fn concurrent_connections_of_one_session_follow_one_exit() {
    for seed in 20..28 {
        let mut f = fixture(vec![sticky_listener(false)], 3, seed);
        let app1 = f.accept(0);
        let outs1 = f.socks(app1, &ip_target(public_ip(1), 443), Some(SESSION_USER), b"");
        let app2 = f.accept(0);
        let outs2 = f.socks(app2, &ip_target(public_ip(2), 443), Some(SESSION_USER), b"");
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
    }
}

#[test]
fn sticky_session_with_fallback_moves_and_repins() {
    let mut f = fixture(vec![sticky_listener(true)], 3, 13);
    let (_, a1, outs) = sticky_attempt(&mut f, SESSION_USER);
    let first_pin = persists(&outs).pop().expect("pinned");
    f.answer(&a1, Status::Succeeded, b"");

    let (app2, a2, _) = sticky_attempt(&mut f, SESSION_USER);
    assert_eq!(a2.exit, a1.exit);
    let outs = f.answer(&a2, Status::GeneralFailure, b"");
    assert!(sent_on(&outs, app2).is_empty(), "moved rather than failed");
    let moved_pin = persists(&outs).pop().expect("the pin moved, so it is persisted");
    assert_ne!(moved_pin, first_pin);
    let b = f.reach_exit(&outs);
    assert_ne!(b.exit, a1.exit);
    let outs = f.answer(&b, Status::Succeeded, b"");
    assert_eq!(sent_on(&outs, app2), socks_reply(Status::Succeeded));
    assert!(persists(&outs).is_empty());

    let (_, a3, outs) = sticky_attempt(&mut f, SESSION_USER);
    assert_eq!(a3.exit, b.exit, "re-pinned to the exit that worked");
    assert!(persists(&outs).is_empty());

    // A restarted client keeps its pins, whatever its seed.
    for seed in 0..6 {
        for (snapshot, expected) in [(&first_pin, a1.exit), (&moved_pin, b.exit)] {
            let exits = (1..=3).map(exit_record).collect();
            let mut r = ClientFixture::restored(
                client_config(vec![sticky_listener(true)]),
                exits,
                seed,
                snapshot.clone(),
            );
            let (_, a, _) = sticky_attempt(&mut r, SESSION_USER);
            assert_eq!(a.exit, expected, "seed {seed}");
        }
    }
}

#[test]
fn session_limit_refuses_extra_apps() {
    let mut config = client_config(vec![ListenerConfig::default()]);
    config.limits.max_client_sessions = 2;
    let mut f = ClientFixture::new(config, vec![exit_record(1)], 14);
    let _a = f.accept(0);
    let _b = f.accept(0);
    let c = f.h.outside_stream();
    let outs =
        f.h.input(Input::AppAccepted { listener: ListenerId(0), stream: c, source: app_source() });
    assert_eq!(closed(&outs, c), Some(Close::Reset));
    assert_eq!(failed(&outs), vec![(FailReason::Overloaded, Status::GeneralFailure)]);
    assert_eq!(f.h.node.resources().sessions, 2);
}

#[test]
fn no_exits_at_all_fails_with_network_unreachable() {
    let mut f = fixture(vec![ListenerConfig::default()], 0, 15);
    let app = f.accept(0);
    let outs = f.socks(app, &ip_target(public_ip(1), 443), None, b"");
    assert!(failed(&outs).is_empty(), "exits may still register: wait a little");
    // The client keeps asking its hub while it waits; the hub knows none.
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
    assert_eq!(sent_on(&outs, app), socks_reply(Status::NetworkUnreachable));
    assert!(f.h.now <= t0() + Duration::from_secs(10), "gave up within the wait");
}

#[test]
fn a_response_in_single_bytes_is_reassembled() {
    let mut f = fixture(vec![ListenerConfig::default()], 1, 16);
    let app = f.accept(0);
    let outs = f.socks(app, &ip_target(public_ip(1), 443), None, b"");
    let a = f.reach_exit(&outs);
    let data = response_bytes(Status::Succeeded);
    let (head, last) = data.split_at(data.len() - 1);
    for b in head {
        let outs = f.h.data(a.stream, vec![*b]);
        assert!(outs.is_empty(), "acted on a partial response: {outs:?}");
    }
    let outs = f.h.data(a.stream, [last, b"Z"].concat());
    assert_eq!(sent_on(&outs, app), socks_reply(Status::Succeeded));
    assert_eq!(splices(&outs)[0].b_to_a, Bytes::from_static(b"Z"));
}

#[test]
fn an_exit_closing_without_an_answer_is_an_exit_failure() {
    let mut f = fixture(vec![listener(|l| l.retries = 1)], 2, 17);
    let app = f.accept(0);
    let outs = f.socks(app, &ip_target(public_ip(1), 443), None, b"");
    let a = f.reach_exit(&outs);
    let outs = f.h.input(Input::StreamClosed { stream: a.stream, how: Close::Fin });
    assert_eq!(attempt_failures(&outs), vec![a.exit]);
    assert!(sent_on(&outs, app).is_empty());
    let b = f.reach_exit(&outs);
    assert_ne!(b.exit, a.exit);
}

/// The driver proposes `/meshproxy/proxy/1` lazily (its request leaves with the proposal),
/// so a peer that does not offer the protocol is no longer a refused stream but a stream
/// that opens and then resets before any answer. The session must take both alike: the
/// same exit counted as failed, the app still waiting, the same next exit.
#[test]
fn a_reset_before_the_answer_is_handled_like_a_refused_stream() {
    let next_after = |reset: bool| {
        let mut f = fixture(vec![listener(|l| l.retries = 2)], 3, 23);
        let app = f.accept(0);
        let outs = f.socks(app, &ip_target(public_ip(1), 443), None, b"");
        let exit = if let [exit] = dials(&outs)[..] { exit } else { panic!("{outs:?}") };
        let conn = f.h.conn();
        let outs = f.h.input(Input::PeerConnected {
            peer: exit,
            conn,
            path: meshproxy_core::io::Path::Direct,
            limit: None,
        });
        let [(stream, _, _)] = opens(&outs)[..] else { panic!("{outs:?}") };
        let outs = if reset {
            let opened = f.h.input(Input::StreamOpened { stream });
            assert!(!sent_on(&opened, stream).is_empty(), "the request went out");
            f.h.input(Input::StreamClosed { stream, how: Close::Reset })
        } else {
            f.h.input(Input::StreamRefused { stream })
        };
        assert_eq!(attempt_failures(&outs), vec![exit]);
        assert!(sent_on(&outs, app).is_empty(), "the app waits for the next exit");
        let next = f.reach_exit(&outs);
        assert_ne!(next.exit, exit);
        next.exit
    };
    assert_eq!(next_after(true), next_after(false));
}

#[test]
fn a_timeout_at_the_destination_is_not_retried() {
    let mut f = fixture(vec![listener(|l| l.retries = 2)], 3, 18);
    let app = f.accept(0);
    let outs = f.socks(app, &ip_target(public_ip(1), 443), None, b"");
    let a = f.reach_exit(&outs);
    let outs = f.answer(&a, Status::TtlExpired, b"");
    assert_eq!(sent_on(&outs, app), socks_reply(Status::TtlExpired));
    assert!(proxy_opens(&outs).is_empty() && dials(&outs).is_empty());
    assert_eq!(failed(&outs), vec![(FailReason::Destination, Status::TtlExpired)]);
}

#[test]
fn a_listener_pin_is_shared_by_every_connection() {
    let sticky = listener(|l| l.sticky = StickyMode::Listener);
    let mut f = fixture(vec![sticky, ListenerConfig::default()], 3, 19);
    let mut exits = BTreeSet::new();
    for n in 0..6 {
        let app = f.accept(0);
        let outs = f.socks(app, &ip_target(public_ip(n), 443), Some(&format!("u{n}")), b"");
        let a = f.reach_exit(&outs);
        exits.insert(a.exit);
        assert!(a.request.session.is_none(), "no session was named");
        f.answer(&a, Status::Succeeded, b"");
    }
    assert_eq!(exits.len(), 1, "{exits:?}");
}

#[test]
fn a_country_no_exit_has_fails_after_a_short_wait() {
    let mut f = fixture(vec![ListenerConfig::default()], 3, 20);
    let app = f.accept(0);
    let outs = f.socks(app, &ip_target(public_ip(1), 443), Some("u-country-fr"), b"");
    assert!(dials(&outs).is_empty() && proxy_opens(&outs).is_empty(), "every exit is in de");
    let mut outs = Vec::new();
    while failed(&outs).is_empty() {
        let (_, _, o) = f.h.fire_next();
        // Answer the refreshes the waiting session pulls forward.
        for m in hub_messages(&sent_on(&o, f.hub_stream)) {
            if matches!(m, meshproxy_core::wire::hub::HubMessage::Find { .. }) {
                let peers = (1..=3).map(exit_record).collect();
                f.h.data(
                    f.hub_stream,
                    hub_bytes(&meshproxy_core::wire::hub::HubMessage::Peers { peers }),
                );
            }
        }
        assert!(dials(&o).iter().all(|p| *p == hub_id()) && proxy_opens(&o).is_empty());
        outs.extend(o);
        assert!(f.h.now < t0() + Duration::from_secs(30), "still waiting");
    }
    assert_eq!(failed(&outs), vec![(FailReason::NoExit, Status::NetworkUnreachable)]);
    assert_eq!(sent_on(&outs, app), socks_reply(Status::NetworkUnreachable));
}

#[test]
fn a_username_country_contradicting_the_listener_fails_at_once() {
    let de = listener(|l| l.filter.country = meshproxy_core::record::CountryCode::parse("de"));
    let mut f = fixture(vec![de], 3, 21);
    let app = f.accept(0);
    let outs = f.socks_raw(app, &ip_target(public_ip(1), 443), Some("u-country-fr"), b"");
    assert_eq!(sent_on(&outs, app), socks_reply(Status::NetworkUnreachable));
    assert_eq!(failed(&outs), vec![(FailReason::NoExit, Status::NetworkUnreachable)]);
    assert_eq!(f.h.node.resources().sessions, 0);
}

#[test]
fn one_failed_dial_is_one_failure_however_many_sessions_waited_on_it() {
    // Breaker threshold 5: seven sessions waiting on one dial used to open it.
    let mut f = fixture(vec![listener(|l| l.retries = 0)], 1, 7);
    let mut apps = Vec::new();
    for _ in 0..7 {
        let app = f.accept(0);
        f.socks(app, &ip_target(public_ip(9), 443), None, b"");
        apps.push(app);
    }
    let exit = exit_id(1);
    let outs = f.h.input(Input::DialFailed { peer: exit });
    assert!(
        !events(&outs).iter().any(|e| matches!(e, Event::Breaker { .. })),
        "the breaker stays closed: {outs:?}"
    );
}

// ------------------------------------------------------------------ tickets

use meshproxy_core::admission::RoleSet;
use meshproxy_core::record::{CountryCode, PeerFilter, PeerRecord};
use meshproxy_core::wire::hub::{HubMessage, TicketGrant};

/// Hub messages the client sent on its hub stream in `outs`.
fn to_hub(f: &ClientFixture, outs: &[Output]) -> Vec<HubMessage> {
    hub_messages(&sent_on(outs, f.hub_stream))
}

/// Lets time pass to `until`, answering every `Find` with `exits` (as a
/// live hub would); returns every other hub message with when it went out.
fn run_hub_until(
    f: &mut ClientFixture,
    until: meshproxy_core::time::Instant,
    exits: &[PeerRecord],
) -> Vec<(meshproxy_core::time::Instant, HubMessage)> {
    let mut other = Vec::new();
    while let Some((at, _)) = f.h.node.poll_timeout() {
        if at > until {
            break;
        }
        let (_, _, outs) = f.h.fire_next();
        other.extend(answer_finds(f, outs, exits));
    }
    f.h.now = f.h.now.max(until);
    other
}

/// Answers every `Find` the client sent in `outs` (and in what those answers
/// set off) with `exits`; returns the other hub messages, with when.
fn answer_finds(
    f: &mut ClientFixture,
    mut outs: Vec<Output>,
    exits: &[PeerRecord],
) -> Vec<(meshproxy_core::time::Instant, HubMessage)> {
    let mut other = Vec::new();
    while !outs.is_empty() {
        let mut next = Vec::new();
        for m in to_hub(f, &outs) {
            match m {
                HubMessage::Find { .. } => {
                    let peers = HubMessage::Peers { peers: exits.to_vec() };
                    next.extend(f.h.data(f.hub_stream, hub_bytes(&peers)));
                }
                m => other.push((f.h.now, m)),
            }
        }
        outs = next;
    }
    other
}

/// A request through a fresh app on `listener`; returns the attempt, answered.
fn one_session(f: &mut ClientFixture, listener: u64) -> Attempt {
    let app = f.accept(listener);
    let outs = f.socks(app, &ip_target(public_ip(1), 443), None, b"");
    let a = f.reach_exit(&outs);
    f.answer(&a, Status::Succeeded, b"");
    let report = SpliceReport { a_to_b: 0, b_to_a: 0, how: SpliceEnd::Clean };
    f.h.input(Input::SpliceEnded { a: app, b: a.stream, report });
    a
}

#[test]
fn the_ticket_is_renewed_at_half_its_lifetime_and_the_new_one_used() {
    let mut f = fixture(vec![ListenerConfig::default()], 1, 21);
    let exits = vec![exit_record(1)];
    assert_eq!(one_session(&mut f, 0).request.ticket, client_ticket());
    let half = t0() + TICKET_LIFETIME / 2;
    let before = run_hub_until(&mut f, half - Duration::from_millis(1), &exits);
    assert!(before.is_empty(), "nothing but Finds before half the lifetime: {before:?}");
    let sent = run_hub_until(&mut f, half, &exits);
    assert_eq!(sent, vec![(half, HubMessage::RenewTicket)]);
    // Until the answer comes, the old ticket goes on being used.
    assert_eq!(one_session(&mut f, 0).request.ticket, client_ticket());
    let fresh = signed_ticket(
        &hub_signer(),
        hub_id(),
        client_id(),
        RoleSet::CLIENT,
        unix_at(f.h.now) + TICKET_LIFETIME.as_secs(),
    );
    assert_ne!(fresh, client_ticket());
    let grant = TicketGrant { valid_secs: 600, ticket: fresh.to_vec() };
    let outs = f.h.data(f.hub_stream, hub_bytes(&HubMessage::Ticket { grant }));
    assert!(closed(&outs, f.hub_stream).is_none());
    assert!(answer_finds(&mut f, outs, &exits).is_empty());
    assert_eq!(one_session(&mut f, 0).request.ticket, fresh, "the renewed ticket from now on");
    // The next renewal comes at half the new lifetime (300 s from now).
    let now = f.h.now;
    let sent = run_hub_until(&mut f, now + Duration::from_secs(300), &exits);
    assert_eq!(sent, vec![(now + Duration::from_secs(300), HubMessage::RenewTicket)]);
}

#[test]
fn without_a_ticket_a_session_waits_then_fails_as_not_admitted() {
    // The hub never answers the dial: no admission, no ticket.
    let (mut h, outs) = Harness::new(client_config(vec![ListenerConfig::default()]), 22);
    assert_eq!(dials(&outs), vec![hub_id()]);
    h.fire_due();
    let mut f = ClientFixture { h, hub_stream: StreamId(0), connected: BTreeSet::new() };
    let app = f.accept(0);
    let start = f.h.now;
    let outs = f.socks(app, &ip_target(public_ip(1), 443), None, b"");
    assert!(proxy_opens(&outs).is_empty() && dials(&outs).is_empty());
    let outs = f.h.advance(Duration::from_secs(5) - Duration::from_millis(1));
    assert!(failed(&outs).is_empty(), "it waits: {outs:?}");
    let outs = f.h.advance(Duration::from_millis(1));
    assert_eq!(f.h.now, start + Duration::from_secs(5));
    assert_eq!(failed(&outs), vec![(FailReason::NotAdmitted, Status::NotAllowed)]);
    assert_eq!(sent_on(&outs, app), socks_reply(Status::NotAllowed));
    assert_eq!(socks_reply(Status::NotAllowed)[1], 0x02);
    assert_eq!(closed(&outs, app), Some(Close::Fin));
    assert!(proxy_opens(&f.h.log).is_empty(), "no exit was ever asked");
}

#[test]
fn a_session_waiting_for_a_ticket_goes_on_when_admission_completes() {
    let (mut h, _) = Harness::new(client_config(vec![ListenerConfig::default()]), 23);
    h.fire_due();
    let mut f = ClientFixture { h, hub_stream: StreamId(0), connected: BTreeSet::new() };
    let app = f.accept(0);
    let outs = f.socks(app, &ip_target(public_ip(1), 443), None, b"");
    assert!(proxy_opens(&outs).is_empty() && dials(&outs).is_empty());
    f.h.advance(Duration::from_secs(2));
    f.hub_stream = f.auth_hub();
    let outs = f.h.data(f.hub_stream, hub_bytes(&HubMessage::AuthOk { grant: client_grant() }));
    assert!(dials(&outs).is_empty(), "no exit known yet");
    let outs =
        f.h.data(f.hub_stream, hub_bytes(&HubMessage::Peers { peers: vec![exit_record(1)] }));
    let a = f.reach_exit(&outs);
    assert_eq!(a.request, ticketed(ip_target(public_ip(1), 443)));
    let outs = f.answer(&a, Status::Succeeded, b"");
    assert_eq!(sent_on(&outs, app), socks_reply(Status::Succeeded));
}

#[test]
fn a_ticket_that_ran_out_unrenewed_fails_new_sessions_as_not_admitted() {
    let mut f = fixture(vec![ListenerConfig::default()], 1, 24);
    // The hub goes silent: the renewal is never answered, the link drops,
    // and every redial fails.
    f.h.input(Input::StreamClosed { stream: f.hub_stream, how: Close::Reset });
    let (hub, conn) = (hub_id(), meshproxy_core::ids::ConnId(2));
    f.h.input(Input::PeerDisconnected { peer: hub, conn });
    let mut now = f.h.now;
    while now < t0() + TICKET_LIFETIME {
        let outs = f.h.advance(Duration::from_secs(5));
        for peer in dials(&outs) {
            f.h.input(Input::DialFailed { peer });
        }
        now = f.h.now;
    }
    let app = f.accept(0);
    f.socks(app, &ip_target(public_ip(1), 443), None, b"");
    let outs = f.h.advance(Duration::from_secs(5));
    assert_eq!(failed(&outs), vec![(FailReason::NotAdmitted, Status::NotAllowed)]);
    assert!(proxy_opens(&outs).is_empty());
}

fn exit_in(n: u64, country: &str) -> PeerRecord {
    PeerRecord {
        attrs: meshproxy_core::record::Attrs {
            country: CountryCode::parse(country),
            labels: Vec::new(),
        },
        ..exit_record(n)
    }
}

/// Measures exit 1 (de) at `a` and exit 2 (fr) at `b`, then lists exit 3
/// (de, never measured); returns which exit a German session picks.
fn pick_after_measuring(a: Duration, b: Duration, seed: u64) -> PeerId {
    let de = PeerFilter { country: CountryCode::parse("de"), labels: Vec::new() };
    let fr = PeerFilter { country: CountryCode::parse("fr"), labels: Vec::new() };
    let listeners = vec![listener(|l| l.filter = de), listener(|l| l.filter = fr)];
    let first = vec![exit_in(1, "de"), exit_in(2, "fr")];
    let mut f = ClientFixture::new(client_config(listeners), first, seed);
    for (listener, rtt, exit) in [(0, a, exit_id(1)), (1, b, exit_id(2))] {
        let app = f.accept(listener);
        let outs = f.socks(app, &ip_target(public_ip(1), 443), None, b"");
        let att = f.reach_exit(&outs);
        assert_eq!(att.exit, exit);
        f.h.advance(rtt);
        f.answer(&att, Status::Succeeded, b"");
        let report = SpliceReport { a_to_b: 0, b_to_a: 0, how: SpliceEnd::Clean };
        f.h.input(Input::SpliceEnded { a: app, b: att.stream, report });
    }
    let all = vec![exit_in(1, "de"), exit_in(2, "fr"), exit_in(3, "de")];
    let until = f.h.now + Duration::from_secs(31);
    run_hub_until(&mut f, until, &all);
    assert_eq!(f.h.node.known_exits(), 3);
    let app = f.accept(0);
    let outs = f.socks(app, &ip_target(public_ip(1), 443), None, b"");
    f.reach_exit(&outs).exit
}

#[test]
fn an_unmeasured_exit_counts_as_the_average_of_the_measured_ones() {
    let ms = Duration::from_millis;
    for seed in 0..8 {
        // Average 300 ms: the measured 200 ms exit beats the newcomer (which a
        // fixed 50 ms guess would have preferred).
        assert_eq!(pick_after_measuring(ms(200), ms(400), seed), exit_id(1), "seed {seed}");
        // Average 250 ms: the newcomer beats the measured 400 ms exit.
        assert_eq!(pick_after_measuring(ms(400), ms(100), seed), exit_id(3), "seed {seed}");
    }
}

/// `AppAccepted` goes to the role that serves its listener; a listener the
/// node does not have is closed at once and costs nothing.
#[test]
fn an_app_on_a_listener_the_node_lacks_is_closed_at_once() {
    let mut f = fixture(vec![ListenerConfig::default()], 1, 8);
    assert_eq!(f.h.node.listeners().serves(ListenerId(0)), Some(Serves::Proxy));
    assert_eq!(f.h.node.listeners().serves(ListenerId(1)), None);
    let stream = f.h.outside_stream();
    let outs =
        f.h.input(Input::AppAccepted { listener: ListenerId(1), stream, source: app_source() });
    assert_eq!(outs, vec![Output::Close { stream, how: Close::Reset }]);
    assert!(!f.h.node.tracks_stream(stream));
    assert_eq!(f.h.node.resources(), idle());
    // The listener it has still serves.
    let app = f.accept(0);
    assert!(f.h.node.tracks_stream(app));
}

/// `Node::status` reads the client's own tables: the hub link admitted, the
/// exit with its path, breaker, latency and session, sessions per listener,
/// and a pin once a sticky session reached its exit.
#[test]
fn status_shows_what_the_client_holds() {
    use meshproxy_core::io::Path;
    use meshproxy_core::selection::breaker::BreakerState;
    use meshproxy_core::status::{LinkState, ReservationState};
    let sticky = ListenerConfig { sticky: StickyMode::Listener, ..ListenerConfig::default() };
    let mut f = fixture(vec![ListenerConfig::default(), sticky], 2, 7);
    let before = f.h.node.status(f.h.now);
    assert!(before.roles.client && !before.roles.exit && !before.roles.hub);
    let [hub] = &before.hubs[..] else { panic!("one hub: {:?}", before.hubs) };
    assert_eq!((hub.peer, hub.link, hub.registered), (hub_id(), LinkState::Ready, false));
    assert_eq!(hub.reservation, ReservationState::None, "a client reserves nowhere");
    assert_eq!(before.exits.len(), 2);
    assert!(before.exits.iter().all(|e| e.connection.is_none() && e.latency.is_none()));
    assert!(before.pins.is_empty());

    let app = f.accept(1);
    let outs = f.socks(app, &TargetAddr::Ip(([192, 0, 2, 1], 80).into()), None, b"");
    let a = f.reach_exit(&outs);
    f.h.advance(Duration::from_millis(30));
    f.answer(&a, Status::Succeeded, b"");
    let s = f.h.node.status(f.h.now);
    let e = s.exits.iter().find(|e| e.peer == a.exit).expect("the exit used");
    assert_eq!(e.connection, Some(Path::Direct));
    assert_eq!(e.breaker, BreakerState::Closed { consecutive_failures: 0 });
    assert_eq!((e.sessions, e.failures), (1, 0));
    assert!(e.latency.is_some_and(|l| l >= Duration::from_millis(30)), "{e:?}");
    let per_listener: Vec<usize> = s.listeners.iter().map(|l| l.sessions).collect();
    assert_eq!(per_listener, [0, 1]);
    let [pin] = &s.pins[..] else { panic!("one pin: {:?}", s.pins) };
    assert_eq!((pin.listener, pin.session.as_deref(), pin.exit), (ListenerId(1), None, a.exit));
    assert_eq!(s.resources.sessions, 1);
}
