//! An exit's link to its hub: against a real hub [`Node`] wired up by [`Net`],
//! and against a hub the test plays by hand.

// Helpers outside `#[test]` fns may unwrap too: a panic there is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use core::time::Duration;
use meshproxy_core::admission::RoleSet;
use meshproxy_core::config::NodeConfig;
use meshproxy_core::ids::StreamId;
use meshproxy_core::io::{Close, Event, Input, Output, Protocol, TimerReason};
use meshproxy_core::time::Instant;
use meshproxy_core::wire::hub::{HubErrorCode, HubMessage, Role, HUB_VERSION};

const TTL: Duration = Duration::from_secs(30);

fn exit_with_hub() -> NodeConfig {
    let mut c = exit_config(exit_id(1));
    c.hubs = vec![hub_contact()];
    c
}

fn registered_events(net: &Net) -> usize {
    net.events_of(exit_id(1))
        .iter()
        .filter(|e| matches!(e, Event::HubRegistered { hub } if *hub == hub_id()))
        .count()
}

fn exit_dials(net: &Net) -> Vec<Instant> {
    net.log
        .iter()
        .filter(|(_, p, o)| {
            *p == exit_id(1) && matches!(o, Output::Dial { peer, .. } if *peer == hub_id())
        })
        .map(|(at, _, _)| *at)
        .collect()
}

fn exit_hub_opens(net: &Net) -> Vec<Instant> {
    net.log
        .iter()
        .filter(|(_, p, o)| {
            *p == exit_id(1) && matches!(o, Output::OpenStream { protocol: Protocol::Hub, .. })
        })
        .map(|(at, _, _)| *at)
        .collect()
}

fn registered_net() -> Net {
    let net = Net::new(vec![hub_config(TTL), exit_with_hub()]);
    assert!(net.node(hub_id()).hub_has_registered(&exit_id(1)), "registered at start");
    assert_eq!(net.node(exit_id(1)).registered_hubs(), 1);
    assert_eq!(registered_events(&net), 1);
    net
}

#[test]
fn an_exit_authenticates_and_registers_at_its_hub() {
    let net = registered_net();
    let sent: Vec<HubMessage> =
        net.hub_messages_from(exit_id(1)).into_iter().map(|m| m.1).collect();
    match &sent[..] {
        [HubMessage::Auth { version, role, key_id, .. }, HubMessage::Register { role: Role::Exit, addrs, attrs, capacity, relayed: false }] =>
        {
            assert_eq!((*version, *role, key_id.as_str()), (HUB_VERSION, Role::Exit, "exits"));
            let mine = exit_role(Some("de"));
            assert_eq!((addrs, attrs, *capacity), (&mine.addrs, &mine.attrs, mine.capacity));
        }
        other => panic!("unexpected messages: {other:?}"),
    }
    assert!(net.events_of(hub_id()).contains(&Event::DirectoryRegistered { peer: exit_id(1) }));
    assert!(!net.events_of(hub_id()).iter().any(|e| matches!(e, Event::AdmissionDenied { .. })));
    assert_eq!(net.node(exit_id(1)).poll_timeout(), Some((t0() + TTL / 3, TimerReason::HubLink)));
}

#[test]
fn heartbeats_go_out_every_third_of_the_ttl() {
    let mut net = registered_net();
    net.advance(Duration::from_secs(95));
    let beats: Vec<Instant> = net
        .hub_messages_from(exit_id(1))
        .into_iter()
        .filter(|(_, m)| matches!(m, HubMessage::Heartbeat { .. }))
        .map(|(at, _)| at)
        .collect();
    let expected: Vec<Instant> = (1..=9).map(|k| t0() + TTL / 3 * k).collect();
    assert_eq!(beats, expected);
    assert!(net.node(hub_id()).hub_has_registered(&exit_id(1)));
    assert!(!net.events_of(hub_id()).contains(&Event::DirectoryRemoved { peer: exit_id(1) }));
    assert_eq!(registered_events(&net), 1, "never had to register again");
}

#[test]
fn a_reset_hub_stream_is_reopened_after_a_backoff() {
    let mut net = registered_net();
    net.advance(Duration::from_secs(5));
    let [stream] = net.streams_between(exit_id(1), hub_id())[..] else { panic!() };
    let lost_at = net.now;
    net.reset_stream(exit_id(1), stream);
    assert!(net.events_of(exit_id(1)).contains(&Event::HubLinkLost { hub: hub_id() }));
    assert!(!net.node(hub_id()).hub_has_registered(&exit_id(1)));
    assert_eq!(net.node(exit_id(1)).registered_hubs(), 0);

    let (retry, why) = net.node(exit_id(1)).poll_timeout().unwrap();
    assert_eq!(why, TimerReason::HubLink);
    assert!(retry >= lost_at + Duration::from_millis(500), "backs off: {retry} vs {lost_at}");
    assert!(retry <= lost_at + Duration::from_secs(15));
    net.advance_to(retry - Duration::from_micros(1));
    assert_eq!(exit_hub_opens(&net).len(), 1, "nothing before the backoff ends");

    net.advance_to(retry);
    assert_eq!(exit_hub_opens(&net), vec![t0(), retry], "the connection is still up: no dial");
    assert_eq!(exit_dials(&net).len(), 1);
    assert!(net.node(hub_id()).hub_has_registered(&exit_id(1)));
    assert_eq!(net.node(exit_id(1)).registered_hubs(), 1);
    assert_eq!(registered_events(&net), 2);

    // And it keeps beating on the new stream.
    net.advance(Duration::from_secs(60));
    assert!(net.node(hub_id()).hub_has_registered(&exit_id(1)));
}

#[test]
fn a_lost_connection_is_redialed() {
    let mut net = registered_net();
    net.disconnect(exit_id(1), hub_id());
    assert!(!net.node(hub_id()).hub_has_registered(&exit_id(1)));
    net.advance(Duration::from_secs(20));
    let d = exit_dials(&net);
    assert_eq!(d.len(), 2, "{d:?}");
    assert!(d[1] > t0());
    assert!(net.node(hub_id()).hub_has_registered(&exit_id(1)));
    assert_eq!(registered_events(&net), 2);
}

#[test]
fn an_unreachable_hub_is_retried_with_bounded_backoff() {
    // No hub node: every dial fails at once.
    let mut net = Net::new(vec![exit_with_hub()]);
    net.advance(Duration::from_secs(180));
    let d = exit_dials(&net);
    assert!(d.len() >= 12, "keeps trying: {d:?}");
    for w in d.windows(2) {
        let gap = w[1].saturating_duration_since(w[0]);
        assert!(gap >= Duration::from_millis(500) && gap <= Duration::from_secs(15), "{gap:?}");
    }
    assert_eq!(net.node(exit_id(1)).resources().pending_dials, 0);
    assert_eq!(net.node(exit_id(1)).registered_hubs(), 0);
}

// ----------------------------------------------- a hub played by the test

/// An exit whose hub the test plays; returns it registered, with its stream.
fn hand_registered() -> (Harness, StreamId) {
    let (mut h, outs) = Harness::new(exit_with_hub(), 5);
    assert_eq!(dials(&outs), vec![hub_id()]);
    let conn = h.conn();
    let outs = h.input(Input::PeerConnected {
        peer: hub_id(),
        conn,
        path: meshproxy_core::io::Path::Direct,
        limit: None,
    });
    let [(s, _, Protocol::Hub)] = opens(&outs)[..] else { panic!("{outs:?}") };
    h.input(Input::StreamOpened { stream: s });
    let nonce = [9u8; 32];
    let outs = h.data(s, hub_bytes(&HubMessage::Challenge { version: HUB_VERSION, nonce }));
    let [HubMessage::Auth { role, ref key_id, proof, .. }] = hub_messages(&sent_on(&outs, s))[..]
    else {
        panic!("{outs:?}")
    };
    assert_eq!(role, Role::Exit);
    let key = exit_cred().admission_key(RoleSet::EXIT);
    assert_eq!(*key_id, key.key_id);
    assert_eq!(key.check(&nonce, &hub_id(), &exit_id(1), Role::Exit, &proof), Ok(()));
    let outs = h.data(s, hub_bytes(&HubMessage::AuthOk { grant: exit_grant(exit_id(1)) }));
    assert!(matches!(hub_messages(&sent_on(&outs, s))[..], [HubMessage::Register { .. }]));
    let outs = h.data(s, hub_bytes(&HubMessage::Registered { ttl_secs: 30 }));
    assert_eq!(events(&outs), vec![Event::HubRegistered { hub: hub_id() }]);
    (h, s)
}

#[test]
fn a_hub_that_forgot_the_exit_gets_a_new_registration() {
    let (mut h, s) = hand_registered();
    let (at, why, outs) = h.fire_next();
    assert_eq!((at, why), (t0() + Duration::from_secs(10), TimerReason::HubLink));
    assert!(matches!(hub_messages(&sent_on(&outs, s))[..], [HubMessage::Heartbeat { .. }]));
    let outs = h.data(
        s,
        hub_bytes(&HubMessage::Error { code: HubErrorCode::NotRegistered, message: "who?".into() }),
    );
    assert!(matches!(hub_messages(&sent_on(&outs, s))[..], [HubMessage::Register { .. }]));
    assert!(closed(&outs, s).is_none(), "the link itself is fine");
    assert_eq!(h.node.registered_hubs(), 0);
    h.data(s, hub_bytes(&HubMessage::Registered { ttl_secs: 60 }));
    assert_eq!(h.node.registered_hubs(), 1);
    assert_eq!(
        h.node.poll_timeout(),
        Some((h.now + Duration::from_secs(20), TimerReason::HubLink))
    );
}

#[test]
fn an_unanswered_heartbeat_tears_the_link_down() {
    let (mut h, s) = hand_registered();
    let (_, _, outs) = h.fire_next();
    assert!(matches!(hub_messages(&sent_on(&outs, s))[..], [HubMessage::Heartbeat { .. }]));
    let sent = h.now;
    let (at, _, outs) = h.fire_next();
    assert_eq!(at, sent + meshproxy_core::config::Timeouts::default().hub_request);
    assert_eq!(closed(&outs, s), Some(Close::Reset));
    assert_eq!(events(&outs), vec![Event::HubLinkLost { hub: hub_id() }]);
    assert_eq!(h.node.registered_hubs(), 0);
    // After the backoff a new stream is opened on the live connection.
    let (_, why, outs) = h.fire_next();
    assert_eq!(why, TimerReason::HubLink);
    assert!(matches!(opens(&outs)[..], [(s2, p, Protocol::Hub)] if s2 != s && p == hub_id()));
}

#[test]
fn a_hub_that_speaks_out_of_turn_is_dropped() {
    let (mut h, s) = hand_registered();
    let outs = h.data(s, hub_bytes(&HubMessage::AuthOk { grant: exit_grant(exit_id(1)) }));
    assert_eq!(closed(&outs, s), Some(Close::Reset));
    assert!(events(&outs).contains(&Event::PeerProtocolError { peer: hub_id() }));
    assert!(!h.node.tracks_stream(s));
}

#[test]
fn an_unanswered_dial_times_out_and_is_retried() {
    let (mut h, outs) = Harness::new(exit_with_hub(), 6);
    assert_eq!(dials(&outs), vec![hub_id()]);
    assert_eq!(h.node.resources().pending_dials, 1);
    let dial = meshproxy_core::config::Timeouts::default().dial;
    let (at, why, outs) = h.fire_next();
    assert_eq!((at, why), (t0() + dial, TimerReason::DialDeadline));
    assert!(dials(&outs).is_empty(), "backs off before dialing again");
    assert_eq!(h.node.resources().pending_dials, 0);
    let (at2, why, outs) = h.fire_next();
    assert_eq!(why, TimerReason::HubLink);
    assert!(at2 >= at + Duration::from_millis(500));
    assert_eq!(dials(&outs), vec![hub_id()]);
    // The answer to the abandoned first dial still brings the link up.
    let conn = h.conn();
    let outs = h.input(Input::PeerConnected {
        peer: hub_id(),
        conn,
        path: meshproxy_core::io::Path::Direct,
        limit: None,
    });
    assert!(matches!(opens(&outs)[..], [(_, p, Protocol::Hub)] if p == hub_id()));
    assert_eq!(h.node.resources().pending_dials, 0);
}
