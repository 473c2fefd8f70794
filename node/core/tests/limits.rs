//! Every table limit of the core, hit on purpose: the offender gets a clear
//! refusal and everyone else keeps being served.

// Helpers outside `#[test]` fns may unwrap too: a panic there is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use core::time::Duration;
use meshproxy_core::config::{Limits, NodeConfig};
use meshproxy_core::ids::{ListenerId, PeerId, StreamId};
use meshproxy_core::io::{Close, Event, FailReason, Input, Output, Path, Protocol};
use meshproxy_core::record::{CountryCode, PeerFilter, PeerRecord};
use meshproxy_core::target::Status;
use meshproxy_core::wire::hub::{HubErrorCode, HubMessage, Role, HUB_VERSION};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

fn with_limits(mut config: NodeConfig, f: impl FnOnce(&mut Limits)) -> NodeConfig {
    f(&mut config.limits);
    config
}

fn source(last: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)), 40_000)
}

/// An app connects from `from`; returns its stream and the node's outputs.
fn accept(f: &mut ClientFixture, listener: u64, from: SocketAddr) -> (StreamId, Vec<Output>) {
    let stream = f.h.outside_stream();
    let outs =
        f.h.input(Input::AppAccepted { listener: ListenerId(listener), stream, source: from });
    (stream, outs)
}

fn refused(outs: &[Output], stream: StreamId) -> Option<FailReason> {
    (closed(outs, stream) == Some(Close::Reset)).then_some(())?;
    events(outs).into_iter().find_map(|e| match e {
        Event::SessionFailed { reason, status: Status::GeneralFailure, .. } => Some(reason),
        _ => None,
    })
}

fn admitted(outs: &[Output]) -> bool {
    events(outs).iter().any(|e| matches!(e, Event::AppAccepted { .. }))
}

#[test]
fn a_full_listener_refuses_new_apps_and_the_others_keep_accepting() {
    let config = client_config(vec![listener(|_| {}), listener(|_| {})]);
    let config = with_limits(config, |l| l.max_sessions_per_listener = 2);
    let mut f = ClientFixture::new(config, vec![exit_record(1)], 1);
    let (a, outs) = accept(&mut f, 0, source(1));
    assert!(admitted(&outs));
    let (_, outs) = accept(&mut f, 0, source(2));
    assert!(admitted(&outs));
    let (third, outs) = accept(&mut f, 0, source(3));
    assert_eq!(refused(&outs, third), Some(FailReason::Overloaded), "{outs:?}");
    let (_, outs) = accept(&mut f, 1, source(3));
    assert!(admitted(&outs), "the other listener is unaffected");
    // A session that ends frees its place.
    f.h.input(Input::StreamClosed { stream: a, how: Close::Fin });
    let (_, outs) = accept(&mut f, 0, source(3));
    assert!(admitted(&outs));
}

#[test]
fn one_source_address_cannot_take_every_session() {
    let config = client_config(vec![listener(|_| {}), listener(|_| {})]);
    let config = with_limits(config, |l| l.max_sessions_per_source = 2);
    let mut f = ClientFixture::new(config, vec![exit_record(1)], 1);
    let (a, _) = accept(&mut f, 0, source(7));
    accept(&mut f, 1, source(7));
    let (third, outs) = accept(&mut f, 0, source(7));
    assert_eq!(refused(&outs, third), Some(FailReason::SourceLimit), "across listeners");
    let (_, outs) = accept(&mut f, 0, source(8));
    assert!(admitted(&outs), "another source is unaffected");
    f.h.input(Input::StreamClosed { stream: a, how: Close::Reset });
    let (_, outs) = accept(&mut f, 0, source(7));
    assert!(admitted(&outs), "the limit counts open sessions, not a history");
}

#[test]
fn the_node_wide_session_limit_holds() {
    let config = client_config(vec![listener(|_| {})]);
    let config = with_limits(config, |l| l.max_client_sessions = 3);
    let mut f = ClientFixture::new(config, vec![exit_record(1)], 1);
    for n in 0..3 {
        assert!(admitted(&accept(&mut f, 0, source(n)).1));
    }
    let (fourth, outs) = accept(&mut f, 0, source(9));
    assert_eq!(refused(&outs, fourth), Some(FailReason::Overloaded));
    assert_eq!(f.h.node.resources().sessions, 3);
}

fn exit_in(n: u64, country: &str) -> PeerRecord {
    let mut r = exit_record(n);
    r.attrs.country = CountryCode::parse(country);
    r
}

fn in_country(country: &str) -> PeerFilter {
    PeerFilter { country: CountryCode::parse(country), labels: Vec::new() }
}

#[test]
fn dials_beyond_the_pending_limit_fail_the_session_as_overloaded() {
    let config = client_config(vec![
        listener(|l| l.filter = in_country("de")),
        listener(|l| l.filter = in_country("us")),
    ]);
    let config = with_limits(config, |l| l.max_pending_dials = 1);
    let mut f = ClientFixture::new(config, vec![exit_in(1, "de"), exit_in(2, "us")], 1);
    let target = ip_target(IpAddr::V4(Ipv4Addr::new(93, 184, 216, 34)), 80);
    let de = f.accept(0);
    let outs = f.socks(de, &target, None, b"");
    assert_eq!(dials(&outs), vec![exit_id(1)]);
    let us = f.accept(1);
    let outs = f.socks_raw(us, &target, None, b"");
    assert!(dials(&outs).is_empty(), "{outs:?}");
    assert!(events(&outs)
        .iter()
        .any(|e| matches!(e, Event::SessionFailed { reason: FailReason::Overloaded, .. })));
    assert_eq!(sent_on(&outs, us), socks_reply(Status::GeneralFailure), "a clear SOCKS error");
    // The first dial answers: the limit has room again.
    let conn = f.h.conn();
    f.h.input(Input::PeerConnected { peer: exit_id(1), conn, path: Path::Direct, limit: None });
    let us = f.accept(1);
    let outs = f.socks(us, &target, None, b"");
    assert_eq!(dials(&outs), vec![exit_id(2)]);
    assert_eq!(f.h.node.resources().pending_dials, 1);
}

// --------------------------------------------------------------------- hub

fn register(h: &mut Harness, exit: PeerId) -> (StreamId, Vec<Output>) {
    let stream = h.outside_stream();
    let outs = h.input(Input::InboundStream { stream, peer: exit, protocol: Protocol::Hub });
    let [HubMessage::Challenge { nonce, .. }] = hub_messages(&sent_on(&outs, stream))[..] else {
        panic!("{outs:?}")
    };
    let cred = exit_cred();
    let auth = HubMessage::Auth {
        version: HUB_VERSION,
        role: Role::Exit,
        key_id: cred.key_id.clone(),
        proof: cred.prove(&nonce, &hub_id(), &exit, Role::Exit),
    };
    h.data(stream, hub_bytes(&auth));
    let r = exit_record(0);
    let msg = HubMessage::Register {
        role: r.role,
        addrs: r.addrs,
        attrs: r.attrs,
        capacity: 1,
        relayed: false,
    };
    let outs = h.data(stream, hub_bytes(&msg));
    (stream, outs)
}

#[test]
fn one_admission_key_holds_at_most_its_share_of_the_directory() {
    let config = with_limits(hub_config(Duration::from_secs(30)), |l| {
        l.max_registrations_per_key = 2;
    });
    let (mut h, _) = Harness::new(config, 3);
    let (first, outs) = register(&mut h, exit_id(1));
    assert_eq!(hub_messages(&sent_on(&outs, first)), vec![HubMessage::Registered { ttl_secs: 30 }]);
    register(&mut h, exit_id(2));
    let (third, outs) = register(&mut h, exit_id(3));
    let msgs = hub_messages(&sent_on(&outs, third));
    assert!(
        matches!(msgs[..], [HubMessage::Error { code: HubErrorCode::RateLimited, .. }]),
        "{msgs:?}"
    );
    assert_eq!(closed(&outs, third), Some(Close::Fin));
    assert_eq!(h.node.resources().directory_entries, 2);
    assert!(!h.node.hub_has_registered(&exit_id(3)));
    // A registered exit may always register again (it is not a new entry)...
    let r = exit_record(0);
    let again = HubMessage::Register {
        role: r.role,
        addrs: r.addrs,
        attrs: r.attrs,
        capacity: 9,
        relayed: false,
    };
    let outs = h.data(first, hub_bytes(&again));
    assert_eq!(hub_messages(&sent_on(&outs, first)), vec![HubMessage::Registered { ttl_secs: 30 }]);
    // ...and a registration that ends frees its place.
    h.input(Input::StreamClosed { stream: first, how: Close::Fin });
    let (fourth, outs) = register(&mut h, exit_id(3));
    assert_eq!(
        hub_messages(&sent_on(&outs, fourth)),
        vec![HubMessage::Registered { ttl_secs: 30 }]
    );
}

#[test]
fn an_exit_at_capacity_is_paced_but_never_tripped_like_a_dead_one() {
    // Five failures open the breaker of an exit that does not answer; an exit
    // that answers "general failure" (full for us, say) is alive.
    let config = client_config(vec![listener(|l| l.retries = 0)]);
    let mut f = ClientFixture::new(config, vec![exit_record(1)], 1);
    let target = ip_target(IpAddr::V4(Ipv4Addr::new(93, 184, 216, 34)), 80);
    for round in 0..8 {
        let app = f.accept(0);
        let outs = f.socks(app, &target, None, b"");
        let attempt = f.reach_exit(&outs);
        let outs = f.answer(&attempt, Status::GeneralFailure, b"");
        assert!(
            !events(&outs).iter().any(|e| matches!(e, Event::Breaker { .. })),
            "round {round}: {outs:?}"
        );
        assert_eq!(sent_on(&outs, app), socks_reply(Status::GeneralFailure), "a clear error");
        // One short backoff step, not a growing one: 1 s is always enough.
        f.h.advance(Duration::from_secs(1));
    }
}

#[test]
fn a_client_keeps_its_sessions_at_one_exit_under_the_cap_and_uses_the_others() {
    // Two sessions at most per exit: the third goes to the other exit, the
    // fifth waits for a place (here: none frees up, so it ends as no exit).
    let config = client_config(vec![listener(|_| {})]);
    let config = with_limits(config, |l| l.max_sessions_per_exit = 2);
    let mut f = ClientFixture::new(config, vec![exit_record(1), exit_record(2)], 3);
    let target = ip_target(IpAddr::V4(Ipv4Addr::new(93, 184, 216, 34)), 80);
    let mut per_exit = std::collections::BTreeMap::<PeerId, usize>::new();
    for _ in 0..4 {
        let app = f.accept(0);
        let outs = f.socks(app, &target, None, b"");
        let attempt = f.reach_exit(&outs);
        *per_exit.entry(attempt.exit).or_default() += 1;
        let outs = f.answer(&attempt, Status::Succeeded, b"");
        assert_eq!(splices(&outs).len(), 1);
    }
    assert_eq!(per_exit.values().copied().collect::<Vec<_>>(), vec![2, 2], "{per_exit:?}");
    let app = f.accept(0);
    let outs = f.socks(app, &target, None, b"");
    assert!(dials(&outs).is_empty() && opens(&outs).is_empty(), "both are full: {outs:?}");
    let outs = f.h.advance(Duration::from_secs(40));
    assert!(
        events(&outs).iter().any(|e| matches!(e, Event::SessionFailed { .. })),
        "the waiting session ends with an answer: {outs:?}"
    );
}
