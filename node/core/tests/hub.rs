//! The hub role through the public API: the test plays exits and clients on
//! `/meshproxy/hub/1` streams.

// Helpers outside `#[test]` fns may unwrap too: a panic there is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use core::time::Duration;
use meshproxy_core::admission::Credential;
use meshproxy_core::config::Timeouts;
use meshproxy_core::ids::{PeerId, StreamId};
use meshproxy_core::io::{Close, Event, Input, Output, Protocol, TimerReason};
use meshproxy_core::record::{Attrs, CountryCode, PeerFilter, PeerRecord};
use meshproxy_core::wire::hub::{HubErrorCode, HubMessage, Role, HUB_VERSION};

const TTL: Duration = Duration::from_secs(30);

fn hub() -> Harness {
    let (h, outs) = Harness::new(hub_config(TTL), 3);
    assert!(outs.is_empty(), "a hub waits to be contacted: {outs:?}");
    h
}

fn msgs(outs: &[Output], stream: StreamId) -> Vec<HubMessage> {
    hub_messages(&sent_on(outs, stream))
}

/// A peer opens a hub stream; returns it and the challenge's nonce.
fn open(h: &mut Harness, peer: PeerId) -> (StreamId, [u8; 32]) {
    let stream = h.outside_stream();
    let outs = h.input(Input::InboundStream { stream, peer, protocol: Protocol::Hub });
    let [HubMessage::Challenge { version, nonce }] = msgs(&outs, stream)[..] else {
        panic!("expected a challenge: {outs:?}")
    };
    assert_eq!(version, HUB_VERSION);
    (stream, nonce)
}

fn auth_msg(cred: &Credential, nonce: &[u8; 32], peer: PeerId, role: Role) -> HubMessage {
    HubMessage::Auth {
        version: HUB_VERSION,
        role,
        key_id: cred.key_id.clone(),
        proof: cred.prove(nonce, &peer, role),
    }
}

/// A peer admitted in `role`.
fn admitted(h: &mut Harness, peer: PeerId, role: Role) -> StreamId {
    let (stream, nonce) = open(h, peer);
    let cred = if role == Role::Exit { exit_cred() } else { client_cred() };
    let outs = h.data(stream, hub_bytes(&auth_msg(&cred, &nonce, peer, role)));
    assert_eq!(msgs(&outs, stream), vec![HubMessage::AuthOk]);
    assert!(closed(&outs, stream).is_none());
    stream
}

fn record(n: u64, country: &str) -> PeerRecord {
    PeerRecord {
        peer: exit_id(n),
        addrs: vec![meshproxy_core::record::PeerAddr(vec![n as u8])],
        attrs: Attrs { country: CountryCode::parse(country), labels: vec![] },
        capacity: 10,
        relays: vec![],
    }
}

fn register(h: &mut Harness, r: &PeerRecord) -> StreamId {
    let stream = admitted(h, r.peer, Role::Exit);
    let outs = h.data(
        stream,
        hub_bytes(&HubMessage::Register {
            addrs: r.addrs.clone(),
            attrs: r.attrs.clone(),
            capacity: r.capacity,
            relayed: !r.relays.is_empty(),
        }),
    );
    assert_eq!(msgs(&outs, stream), vec![HubMessage::Registered { ttl_secs: 30 }]);
    assert_eq!(events(&outs), vec![Event::DirectoryRegistered { peer: r.peer }]);
    assert!(h.node.hub_has_registered(&r.peer));
    stream
}

fn find(h: &mut Harness, stream: StreamId, filter: PeerFilter, limit: u16) -> Vec<PeerRecord> {
    let outs = h.data(stream, hub_bytes(&HubMessage::Find { filter, limit }));
    match &msgs(&outs, stream)[..] {
        [HubMessage::Peers { peers }] => peers.clone(),
        other => panic!("expected Peers: {other:?}"),
    }
}

fn heartbeat(h: &mut Harness, stream: StreamId) -> Vec<HubMessage> {
    let outs = h.data(stream, hub_bytes(&HubMessage::Heartbeat { load: 1 }));
    assert!(closed(&outs, stream).is_none());
    msgs(&outs, stream)
}

#[test]
fn a_valid_proof_is_admitted() {
    let mut h = hub();
    let (stream, nonce) = open(&mut h, exit_id(1));
    assert_eq!(
        h.node.poll_timeout(),
        Some((t0() + Timeouts::default().request, TimerReason::HubPeerDeadline))
    );
    let (_, other_nonce) = open(&mut h, exit_id(2));
    assert_ne!(nonce, other_nonce, "every stream gets a fresh nonce");
    let outs = h.data(stream, hub_bytes(&auth_msg(&exit_cred(), &nonce, exit_id(1), Role::Exit)));
    assert_eq!(msgs(&outs, stream), vec![HubMessage::AuthOk]);
    assert_eq!(events(&outs), vec![Event::PeerAdmitted { peer: exit_id(1) }]);
    assert!(h.node.tracks_stream(stream));
    // Admitted streams have no deadline; only the other stream's remains.
    let (_, why) = h.node.poll_timeout().unwrap();
    assert_eq!(why, TimerReason::HubPeerDeadline);
    assert_eq!(h.node.resources().timers, 1);
}

/// Builds an `Auth` answer to a nonce.
type AuthFor = Box<dyn Fn(&[u8; 32]) -> HubMessage>;

#[test]
fn bad_proofs_are_refused() {
    let peer = exit_id(1);
    let cases: Vec<(&str, AuthFor, HubErrorCode)> = vec![
        (
            "wrong token",
            Box::new(move |n| auth_msg(&Credential::new("exits", b"guess"), n, peer, Role::Exit)),
            HubErrorCode::BadProof,
        ),
        (
            "unknown key id",
            Box::new(move |n| {
                auth_msg(&Credential::new("nobody", b"exit token"), n, peer, Role::Exit)
            }),
            HubErrorCode::UnknownKey,
        ),
        (
            "proof made for another peer",
            Box::new(move |n| auth_msg(&exit_cred(), n, exit_id(2), Role::Exit)),
            HubErrorCode::BadProof,
        ),
        (
            "proof made for another nonce",
            Box::new(move |_| auth_msg(&exit_cred(), &[0; 32], peer, Role::Exit)),
            HubErrorCode::BadProof,
        ),
        (
            "proof made for another role",
            Box::new(move |n| {
                let cred = exit_cred();
                HubMessage::Auth {
                    version: HUB_VERSION,
                    role: Role::Exit,
                    key_id: cred.key_id.clone(),
                    proof: cred.prove(n, &peer, Role::Client),
                }
            }),
            HubErrorCode::BadProof,
        ),
    ];
    for (what, make, code) in cases {
        let mut h = hub();
        let (stream, nonce) = open(&mut h, peer);
        let outs = h.data(stream, hub_bytes(&make(&nonce)));
        let m = msgs(&outs, stream);
        assert!(
            matches!(&m[..], [HubMessage::Error { code: c, .. }] if *c == code),
            "{what}: {m:?}"
        );
        assert_eq!(closed(&outs, stream), Some(Close::Fin), "{what}");
        assert_eq!(events(&outs), vec![Event::AdmissionDenied { peer }], "{what}");
        assert!(!h.node.tracks_stream(stream));
        assert_eq!(h.node.resources().streams, 0);
        assert_eq!(h.node.resources().timers, 0, "{what}: the auth deadline is gone");
        // Whatever it sends next is ignored.
        let again = h.data(stream, hub_bytes(&auth_msg(&exit_cred(), &nonce, peer, Role::Exit)));
        assert!(again.is_empty(), "{what}: {again:?}");
    }
}

#[test]
fn no_auth_before_the_deadline_resets_the_stream() {
    let mut h = hub();
    let (stream, _) = open(&mut h, exit_id(1));
    let (at, why, outs) = h.fire_next();
    assert_eq!((at, why), (t0() + Timeouts::default().request, TimerReason::HubPeerDeadline));
    assert_eq!(closed(&outs, stream), Some(Close::Reset));
    assert_eq!(events(&outs), vec![Event::PeerProtocolError { peer: exit_id(1) }]);
    assert_eq!(h.node.resources().streams, 0);
    assert!(h.node.poll_timeout().is_none());
}

#[test]
fn anything_but_auth_first_is_refused() {
    let mut h = hub();
    let (stream, _) = open(&mut h, exit_id(1));
    let outs =
        h.data(stream, hub_bytes(&HubMessage::Find { filter: PeerFilter::default(), limit: 5 }));
    assert!(matches!(
        &msgs(&outs, stream)[..],
        [HubMessage::Error { code: HubErrorCode::Malformed, .. }]
    ));
    assert_eq!(closed(&outs, stream), Some(Close::Fin));
}

#[test]
fn undecodable_bytes_are_a_protocol_error() {
    let mut h = hub();
    let (stream, _) = open(&mut h, exit_id(1));
    let outs = h.data(stream, vec![0, 0, 0, 2, 0xEE, 0xEE]);
    assert!(matches!(&msgs(&outs, stream)[..], [HubMessage::Error { .. }]));
    assert_eq!(closed(&outs, stream), Some(Close::Fin));
    assert_eq!(events(&outs), vec![Event::PeerProtocolError { peer: exit_id(1) }]);
}

#[test]
fn register_answers_with_the_ttl() {
    let mut h = hub();
    let r = record(1, "de");
    let before = h.now;
    register(&mut h, &r);
    assert_eq!(h.node.resources().directory_entries, 1);
    assert_eq!(h.node.poll_timeout(), Some((before + TTL, TimerReason::DirectoryExpiry)));
}

#[test]
fn a_client_may_not_register() {
    let mut h = hub();
    let stream = admitted(&mut h, client_id(), Role::Client);
    let r = record(1, "de");
    let outs = h.data(
        stream,
        hub_bytes(&HubMessage::Register {
            addrs: r.addrs,
            attrs: r.attrs,
            capacity: 1,
            relayed: false,
        }),
    );
    assert!(matches!(
        &msgs(&outs, stream)[..],
        [HubMessage::Error { code: HubErrorCode::Malformed, .. }]
    ));
    assert_eq!(closed(&outs, stream), Some(Close::Fin));
    assert!(!h.node.hub_has_registered(&client_id()));
}

#[test]
fn find_returns_registered_exits_matching_the_filter() {
    let mut h = hub();
    let (de, fr, de2) = (record(1, "de"), record(2, "fr"), record(3, "de"));
    for r in [&de, &fr, &de2] {
        register(&mut h, r);
    }
    let c = admitted(&mut h, client_id(), Role::Client);
    let mut all = find(&mut h, c, PeerFilter::default(), 64);
    all.sort();
    assert_eq!(all, vec![de.clone(), fr.clone(), de2.clone()]);

    let only_de = PeerFilter { country: CountryCode::parse("de"), labels: vec![] };
    let mut got = find(&mut h, c, only_de, 64);
    got.sort();
    assert_eq!(got, vec![de.clone(), de2.clone()]);

    let nl = PeerFilter { country: CountryCode::parse("nl"), labels: vec![] };
    assert!(find(&mut h, c, nl, 64).is_empty());

    let labelled = PeerFilter { country: None, labels: vec!["residential".into()] };
    assert!(find(&mut h, c, labelled, 64).is_empty());

    assert_eq!(find(&mut h, c, PeerFilter::default(), 2).len(), 2, "the limit is kept");

    // Resolve answers with the record, or None.
    let outs = h.data(c, hub_bytes(&HubMessage::Resolve { peer: fr.peer }));
    assert_eq!(msgs(&outs, c), vec![HubMessage::Resolved { peer: fr.peer, record: Some(fr) }]);
    let outs = h.data(c, hub_bytes(&HubMessage::Resolve { peer: exit_id(9) }));
    assert_eq!(msgs(&outs, c), vec![HubMessage::Resolved { peer: exit_id(9), record: None }]);
}

#[test]
fn several_messages_in_one_chunk_are_all_answered() {
    let mut h = hub();
    register(&mut h, &record(1, "de"));
    let c = admitted(&mut h, client_id(), Role::Client);
    let mut data =
        hub_bytes(&HubMessage::Find { filter: PeerFilter::default(), limit: 8 }).to_vec();
    data.extend_from_slice(&hub_bytes(&HubMessage::Resolve { peer: exit_id(1) }));
    let outs = h.data(c, data);
    let m = msgs(&outs, c);
    assert!(matches!(&m[..], [HubMessage::Peers { .. }, HubMessage::Resolved { .. }]), "{m:?}");
}

#[test]
fn heartbeats_keep_the_entry_and_silence_expires_it() {
    let mut h = hub();
    let r = record(1, "de");
    let s = register(&mut h, &r);
    // Beat every 20 s for a minute: far past one TTL, still listed.
    for _ in 0..3 {
        let outs = h.advance(Duration::from_secs(20));
        assert!(events(&outs).is_empty(), "{outs:?}");
        assert!(h.node.hub_has_registered(&r.peer));
        assert_eq!(heartbeat(&mut h, s), vec![HubMessage::HeartbeatAck { ttl_secs: 30 }]);
    }
    let last_beat = h.now;
    let outs = h.advance(TTL - Duration::from_secs(1));
    assert!(events(&outs).is_empty());
    assert!(h.node.hub_has_registered(&r.peer));

    let outs = h.advance(Duration::from_secs(2));
    assert_eq!(events(&outs), vec![Event::DirectoryRemoved { peer: r.peer }]);
    assert!(!h.node.hub_has_registered(&r.peer));
    assert!(h.now >= last_beat + TTL);
    assert!(closed(&outs, s).is_none(), "the stream outlives its registration");
    assert_eq!(h.node.resources().directory_entries, 0);
    assert!(h.node.poll_timeout().is_none(), "no expiry left to watch");

    let m = heartbeat(&mut h, s);
    assert!(
        matches!(&m[..], [HubMessage::Error { code: HubErrorCode::NotRegistered, .. }]),
        "{m:?}"
    );
    let c = admitted(&mut h, client_id(), Role::Client);
    assert!(find(&mut h, c, PeerFilter::default(), 64).is_empty());

    // Registering again on the same stream works.
    let outs = h.data(
        s,
        hub_bytes(&HubMessage::Register {
            addrs: r.addrs.clone(),
            attrs: r.attrs.clone(),
            capacity: 5,
            relayed: false,
        }),
    );
    assert_eq!(msgs(&outs, s), vec![HubMessage::Registered { ttl_secs: 30 }]);
    assert!(h.node.hub_has_registered(&r.peer));
}

#[test]
fn closing_the_stream_removes_the_registration() {
    for how in [Close::Reset, Close::Fin] {
        let mut h = hub();
        let r = record(1, "de");
        let s = register(&mut h, &r);
        let outs = h.input(Input::StreamClosed { stream: s, how });
        assert_eq!(
            events(&outs),
            vec![Event::DirectoryRemoved { peer: r.peer }, Event::AdmissionEnded { peer: r.peer }]
        );
        assert_eq!(
            closed(&outs, s),
            (how == Close::Fin).then_some(Close::Fin),
            "a Fin is answered"
        );
        assert!(!h.node.hub_has_registered(&r.peer));
        assert_eq!(h.node.resources().directory_entries, 0);
        assert_eq!(h.node.resources().streams, 0);
        let c = admitted(&mut h, client_id(), Role::Client);
        assert!(find(&mut h, c, PeerFilter::default(), 64).is_empty());
    }
}

#[test]
fn only_the_registering_stream_removes_the_registration() {
    let mut h = hub();
    let r = record(1, "de");
    let old = register(&mut h, &r);
    let new = register(&mut h, &r);
    let outs = h.input(Input::StreamClosed { stream: old, how: Close::Reset });
    assert!(events(&outs).is_empty(), "{outs:?}");
    assert!(h.node.hub_has_registered(&r.peer), "the newer stream's registration stays");
    let outs = h.input(Input::StreamClosed { stream: new, how: Close::Reset });
    assert!(!h.node.hub_has_registered(&r.peer));
    assert_eq!(
        events(&outs),
        vec![Event::DirectoryRemoved { peer: r.peer }, Event::AdmissionEnded { peer: r.peer }]
    );
}

/// The driver's relay serves exactly the admitted peers, so admission is reported once
/// per peer, however many hub streams it holds, and ends with its last admitted stream;
/// streams that never passed the challenge count for nothing.
#[test]
fn admission_is_reported_per_peer_and_ends_with_its_last_stream() {
    let mut h = hub();
    let (pending, _) = open(&mut h, client_id());
    let (first, nonce) = open(&mut h, client_id());
    let outs =
        h.data(first, hub_bytes(&auth_msg(&client_cred(), &nonce, client_id(), Role::Client)));
    assert_eq!(events(&outs), vec![Event::PeerAdmitted { peer: client_id() }]);
    let (second, nonce) = open(&mut h, client_id());
    let outs =
        h.data(second, hub_bytes(&auth_msg(&client_cred(), &nonce, client_id(), Role::Client)));
    assert!(events(&outs).is_empty(), "already admitted: {outs:?}");

    // An unauthenticated stream ending changes nothing, nor does one of two admitted ones.
    let outs = h.input(Input::StreamClosed { stream: pending, how: Close::Reset });
    assert!(events(&outs).is_empty(), "{outs:?}");
    let outs = h.input(Input::StreamClosed { stream: first, how: Close::Fin });
    assert!(events(&outs).is_empty(), "{outs:?}");
    let outs = h.input(Input::StreamClosed { stream: second, how: Close::Reset });
    assert_eq!(events(&outs), vec![Event::AdmissionEnded { peer: client_id() }]);

    // A failed challenge never admits; a later success does, afresh.
    let (bad, nonce) = open(&mut h, client_id());
    let wrong = Credential::new(client_cred().key_id, b"not the token");
    let outs = h.data(bad, hub_bytes(&auth_msg(&wrong, &nonce, client_id(), Role::Client)));
    assert_eq!(events(&outs), vec![Event::AdmissionDenied { peer: client_id() }]);
    admitted(&mut h, client_id(), Role::Client);

    // A hub-side failure (a protocol error) ends the admission too.
    let other = admitted(&mut h, exit_id(2), Role::Exit);
    let outs = h.data(other, vec![0, 0, 0, 2, 0xEE, 0xEE]);
    assert!(events(&outs).contains(&Event::AdmissionEnded { peer: exit_id(2) }), "{outs:?}");
}

#[test]
fn the_stream_limit_resets_extra_streams() {
    let mut config = hub_config(TTL);
    config.limits.max_hub_streams = 2;
    let (mut h, _) = Harness::new(config, 4);
    open(&mut h, exit_id(1));
    open(&mut h, exit_id(2));
    let extra = h.outside_stream();
    let outs =
        h.input(Input::InboundStream { stream: extra, peer: exit_id(3), protocol: Protocol::Hub });
    assert_eq!(outs, vec![Output::Close { stream: extra, how: Close::Reset }]);
    assert_eq!(h.node.resources().streams, 2);
}
