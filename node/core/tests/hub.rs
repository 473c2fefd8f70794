//! The hub role through the public API: the test plays exits and clients on
//! `/meshproxy/hub/1` streams.

// Helpers outside `#[test]` fns may unwrap too: a panic there is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use core::time::Duration;
use meshproxy_core::admission::{Credential, Refusal, RoleSet};
use meshproxy_core::config::{NodeConfig, Timeouts};
use meshproxy_core::ids::{PeerId, StreamId};
use meshproxy_core::io::{Close, Event, Input, Output, Protocol, TimerReason};
use meshproxy_core::record::{Attrs, CountryCode, PeerFilter, PeerRecord};
use meshproxy_core::ticket::{self, Ticket};
use meshproxy_core::wire::hub::{HubErrorCode, HubMessage, Role, TicketGrant, HUB_VERSION};
use proptest::prelude::*;

const TTL: Duration = Duration::from_secs(30);

fn hub() -> Harness {
    hub_with(hub_config(TTL))
}

fn hub_with(config: NodeConfig) -> Harness {
    let (h, outs) = Harness::new(config, 3);
    assert!(outs.is_empty(), "a hub waits to be contacted: {outs:?}");
    h
}

/// A hub whose exit key is a fleet key holding up to `n` registrations.
fn fleet_hub(n: usize) -> Harness {
    let mut config = hub_config(TTL);
    if let Some(hub) = &mut config.hub {
        hub.keys[0].max_registrations = Some(n);
    }
    hub_with(config)
}

/// The ticket in a grant, checked against the hub's signer; returns it.
fn granted(grant: &TicketGrant, holder: PeerId, at: meshproxy_core::time::Instant) -> Ticket {
    assert_eq!(u64::from(grant.valid_secs), TICKET_LIFETIME.as_secs());
    let (t, _, _) = ticket::decode(&grant.ticket).unwrap();
    assert_eq!((t.hub, t.holder), (hub_id(), holder));
    assert_eq!(t.expires, unix_at(at) + TICKET_LIFETIME.as_secs());
    let trusted = [(hub_id(), hub_signer().public())];
    if t.roles.contains(Role::Client) {
        assert_eq!(
            ticket::verify(&grant.ticket, holder, Role::Client, unix_at(at), &trusted),
            Ok(t.clone())
        );
    }
    t
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
        proof: cred.prove(nonce, &hub_id(), &peer, role),
    }
}

/// A peer admitted in `role` (with the harness's key for that role).
fn admitted(h: &mut Harness, peer: PeerId, role: Role) -> StreamId {
    let cred = if role == Role::Exit { exit_cred() } else { client_cred() };
    admitted_with(h, &cred, peer, role).0
}

/// A peer admitted in `role` with `cred`; returns the stream and its ticket.
fn admitted_with(
    h: &mut Harness,
    cred: &Credential,
    peer: PeerId,
    role: Role,
) -> (StreamId, Ticket) {
    let (stream, nonce) = open(h, peer);
    let outs = h.data(stream, hub_bytes(&auth_msg(cred, &nonce, peer, role)));
    let m = msgs(&outs, stream);
    let [HubMessage::AuthOk { grant }] = &m[..] else { panic!("expected AuthOk: {m:?}") };
    assert!(closed(&outs, stream).is_none());
    let t = granted(grant, peer, h.now);
    (stream, t)
}

fn record(n: u64, country: &str) -> PeerRecord {
    PeerRecord {
        role: Role::Exit,
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
            role: Role::Exit,
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
    let outs = h.data(stream, hub_bytes(&HubMessage::Find { role: Role::Exit, filter, limit }));
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
        Some((t0() + Timeouts::default().auth, TimerReason::HubPeerDeadline))
    );
    assert_eq!(Timeouts::default().auth, Duration::from_secs(3));
    let (_, other_nonce) = open(&mut h, exit_id(2));
    assert_ne!(nonce, other_nonce, "every stream gets a fresh nonce");
    let outs = h.data(stream, hub_bytes(&auth_msg(&exit_cred(), &nonce, exit_id(1), Role::Exit)));
    let m = msgs(&outs, stream);
    let [HubMessage::AuthOk { grant }] = &m[..] else { panic!("{m:?}") };
    let t = granted(grant, exit_id(1), h.now);
    assert_eq!(t.roles, RoleSet::EXIT, "the ticket names the key's roles");
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
    let token = b"exit token, 22+ random bytes";
    let cases: Vec<(&str, AuthFor, Refusal)> = vec![
        (
            "wrong token",
            Box::new(move |n| {
                auth_msg(
                    &Credential::new("exits", b"a guess, 22+ random bytes"),
                    n,
                    peer,
                    Role::Exit,
                )
            }),
            Refusal::BadProof,
        ),
        (
            "unknown key id",
            Box::new(move |n| auth_msg(&Credential::new("nobody", token), n, peer, Role::Exit)),
            Refusal::UnknownKey,
        ),
        (
            "proof made for another peer",
            Box::new(move |n| auth_msg(&exit_cred(), n, exit_id(2), Role::Exit)),
            Refusal::BadProof,
        ),
        (
            "proof made for another nonce",
            Box::new(move |_| auth_msg(&exit_cred(), &[0; 32], peer, Role::Exit)),
            Refusal::BadProof,
        ),
        (
            "proof made for another hub",
            Box::new(move |n| {
                let cred = exit_cred();
                HubMessage::Auth {
                    version: HUB_VERSION,
                    role: Role::Exit,
                    key_id: cred.key_id.clone(),
                    proof: cred.prove(n, &PeerId::from_u64(2), &peer, Role::Exit),
                }
            }),
            Refusal::BadProof,
        ),
        (
            "proof made for another role",
            Box::new(move |n| {
                let cred = exit_cred();
                HubMessage::Auth {
                    version: HUB_VERSION,
                    role: Role::Exit,
                    key_id: cred.key_id.clone(),
                    proof: cred.prove(n, &hub_id(), &peer, Role::Client),
                }
            }),
            Refusal::BadProof,
        ),
    ];
    for (what, make, reason) in cases {
        let mut h = hub();
        let (stream, nonce) = open(&mut h, peer);
        let outs = h.data(stream, hub_bytes(&make(&nonce)));
        let m = msgs(&outs, stream);
        // Every one of them looks the same from outside.
        let failed = HubMessage::Error {
            code: HubErrorCode::BadProof,
            message: "authentication failed".into(),
        };
        assert_eq!(m, vec![failed], "{what}");
        assert_eq!(closed(&outs, stream), Some(Close::Fin), "{what}");
        assert_eq!(events(&outs), vec![Event::AdmissionDenied { peer, reason }], "{what}");
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
    assert_eq!((at, why), (t0() + Timeouts::default().auth, TimerReason::HubPeerDeadline));
    assert_eq!(closed(&outs, stream), Some(Close::Reset));
    assert!(sent_on(&outs, stream).is_empty(), "a reset, no answer");
    let reason = Refusal::AuthTimeout;
    assert_eq!(events(&outs), vec![Event::AdmissionDenied { peer: exit_id(1), reason }]);
    assert_eq!(h.node.resources().streams, 0);
    assert_eq!(h.node.resources().preauth_hub_streams, 0);
    assert!(h.node.poll_timeout().is_none());
}

#[test]
fn anything_but_auth_first_is_reset() {
    let mut h = hub();
    let (stream, _) = open(&mut h, exit_id(1));
    let outs = h.data(
        stream,
        hub_bytes(&HubMessage::Find { role: Role::Exit, filter: PeerFilter::default(), limit: 5 }),
    );
    assert!(sent_on(&outs, stream).is_empty(), "no answer to a stranger: {outs:?}");
    assert_eq!(closed(&outs, stream), Some(Close::Reset));
    let reason = Refusal::NotAuth;
    assert_eq!(events(&outs), vec![Event::AdmissionDenied { peer: exit_id(1), reason }]);
    assert!(!h.node.tracks_stream(stream));
}

#[test]
fn undecodable_bytes_before_admission_are_reset() {
    let mut h = hub();
    let (stream, _) = open(&mut h, exit_id(1));
    let outs = h.data(stream, vec![0, 0, 0, 2, 0xEE, 0xEE]);
    assert!(sent_on(&outs, stream).is_empty());
    assert_eq!(closed(&outs, stream), Some(Close::Reset));
    let reason = Refusal::NotAuth;
    assert_eq!(events(&outs), vec![Event::AdmissionDenied { peer: exit_id(1), reason }]);
}

#[test]
fn undecodable_bytes_after_admission_are_a_protocol_error() {
    let mut h = hub();
    let stream = admitted(&mut h, exit_id(1), Role::Exit);
    let outs = h.data(stream, vec![0, 0, 0, 2, 0xEE, 0xEE]);
    assert!(matches!(
        &msgs(&outs, stream)[..],
        [HubMessage::Error { code: HubErrorCode::Malformed, .. }]
    ));
    assert_eq!(closed(&outs, stream), Some(Close::Fin));
    assert_eq!(
        events(&outs),
        vec![
            Event::PeerProtocolError { peer: exit_id(1) },
            Event::AdmissionEnded { peer: exit_id(1) }
        ]
    );
}

#[test]
fn an_auth_of_another_version_gets_a_clean_answer() {
    let mut h = hub();
    let (stream, nonce) = open(&mut h, exit_id(1));
    let HubMessage::Auth { role, key_id, proof, .. } =
        auth_msg(&exit_cred(), &nonce, exit_id(1), Role::Exit)
    else {
        unreachable!()
    };
    let old = HubMessage::Auth { version: HUB_VERSION - 1, role, key_id, proof };
    let outs = h.data(stream, hub_bytes(&old));
    assert!(matches!(
        &msgs(&outs, stream)[..],
        [HubMessage::Error { code: HubErrorCode::UnsupportedVersion, .. }]
    ));
    assert_eq!(closed(&outs, stream), Some(Close::Fin));
    let reason = Refusal::NotAuth;
    assert_eq!(events(&outs), vec![Event::AdmissionDenied { peer: exit_id(1), reason }]);
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
            role: Role::Exit,
            addrs: r.addrs,
            attrs: r.attrs,
            capacity: 1,
            relayed: false,
        }),
    );
    assert!(matches!(
        &msgs(&outs, stream)[..],
        [HubMessage::Error { code: HubErrorCode::Forbidden, .. }]
    ));
    assert_eq!(closed(&outs, stream), Some(Close::Fin));
    assert_eq!(
        events(&outs),
        vec![
            Event::AdmissionDenied { peer: client_id(), reason: Refusal::RoleNotAllowed },
            Event::AdmissionEnded { peer: client_id() }
        ]
    );
    assert!(!h.node.hub_has_registered(&client_id()));
    assert_eq!(h.node.resources().directory_entries, 0);
}

#[test]
fn find_returns_registered_exits_matching_the_filter() {
    let mut h = fleet_hub(3);
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
        hub_bytes(&HubMessage::Find { role: Role::Exit, filter: PeerFilter::default(), limit: 8 })
            .to_vec();
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
            role: Role::Exit,
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
/// streams that never passed the challenge count for nothing. `Node::admitted_peers`
/// (the driver's `admitted_peers` gauge) says the same at every step.
#[test]
fn admission_is_reported_per_peer_and_ends_with_its_last_stream() {
    let mut h = hub();
    let (pending, _) = open(&mut h, client_id());
    assert_eq!(h.node.admitted_peers(), 0);
    let (first, nonce) = open(&mut h, client_id());
    let outs =
        h.data(first, hub_bytes(&auth_msg(&client_cred(), &nonce, client_id(), Role::Client)));
    assert_eq!(events(&outs), vec![Event::PeerAdmitted { peer: client_id() }]);
    assert_eq!(h.node.admitted_peers(), 1);
    let (second, nonce) = open(&mut h, client_id());
    let outs =
        h.data(second, hub_bytes(&auth_msg(&client_cred(), &nonce, client_id(), Role::Client)));
    assert!(events(&outs).is_empty(), "already admitted: {outs:?}");
    assert_eq!(h.node.admitted_peers(), 1, "one peer, however many streams");

    // An unauthenticated stream ending changes nothing, nor does one of two admitted ones.
    let outs = h.input(Input::StreamClosed { stream: pending, how: Close::Reset });
    assert!(events(&outs).is_empty(), "{outs:?}");
    let outs = h.input(Input::StreamClosed { stream: first, how: Close::Fin });
    assert!(events(&outs).is_empty(), "{outs:?}");
    assert_eq!(h.node.admitted_peers(), 1);
    let outs = h.input(Input::StreamClosed { stream: second, how: Close::Reset });
    assert_eq!(events(&outs), vec![Event::AdmissionEnded { peer: client_id() }]);
    assert_eq!(h.node.admitted_peers(), 0);

    // A failed challenge never admits; a later success does, afresh.
    let (bad, nonce) = open(&mut h, client_id());
    let wrong = Credential::new(client_cred().key_id, b"not the token, 22+ bytes");
    let outs = h.data(bad, hub_bytes(&auth_msg(&wrong, &nonce, client_id(), Role::Client)));
    let reason = Refusal::BadProof;
    assert_eq!(events(&outs), vec![Event::AdmissionDenied { peer: client_id(), reason }]);
    assert_eq!(h.node.admitted_peers(), 0);
    admitted(&mut h, client_id(), Role::Client);

    // A hub-side failure (a protocol error) ends the admission too.
    let other = admitted(&mut h, exit_id(2), Role::Exit);
    assert_eq!(h.node.admitted_peers(), 2);
    let outs = h.data(other, vec![0, 0, 0, 2, 0xEE, 0xEE]);
    assert!(events(&outs).contains(&Event::AdmissionEnded { peer: exit_id(2) }), "{outs:?}");
    assert_eq!(h.node.admitted_peers(), 1);
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
    assert_eq!(
        outs,
        vec![
            Output::Event(Event::AdmissionDenied { peer: exit_id(3), reason: Refusal::HubFull }),
            Output::Close { stream: extra, how: Close::Reset }
        ]
    );
    assert_eq!(h.node.resources().streams, 2);
}

// ------------------------------------------------------ roles, pins, limits

fn register_msg(r: &PeerRecord) -> HubMessage {
    HubMessage::Register {
        role: Role::Exit,
        addrs: r.addrs.clone(),
        attrs: r.attrs.clone(),
        capacity: r.capacity,
        relayed: false,
    }
}

#[test]
fn a_client_key_cannot_authenticate_as_an_exit() {
    let mut h = hub();
    let peer = exit_id(1);
    let (stream, nonce) = open(&mut h, peer);
    // A valid proof, made for the exit role, with the client key.
    let outs = h.data(stream, hub_bytes(&auth_msg(&client_cred(), &nonce, peer, Role::Exit)));
    assert!(
        matches!(
            &msgs(&outs, stream)[..],
            [HubMessage::Error { code: HubErrorCode::Forbidden, .. }]
        ),
        "{outs:?}"
    );
    assert_eq!(closed(&outs, stream), Some(Close::Fin));
    let reason = Refusal::RoleNotAllowed;
    assert_eq!(events(&outs), vec![Event::AdmissionDenied { peer, reason }]);
    // Whatever follows on the stream is ignored: nothing is registered.
    assert!(h.data(stream, hub_bytes(&register_msg(&record(1, "de")))).is_empty());
    assert_eq!(h.node.resources().directory_entries, 0);
    assert!(!h.node.hub_has_registered(&peer));
    assert!(h.node.registrations().is_empty());
    // And the exit key cannot log in as a client.
    let (stream, nonce) = open(&mut h, peer);
    let outs = h.data(stream, hub_bytes(&auth_msg(&exit_cred(), &nonce, peer, Role::Client)));
    assert!(matches!(
        &msgs(&outs, stream)[..],
        [HubMessage::Error { code: HubErrorCode::Forbidden, .. }]
    ));
}

#[test]
fn only_a_stream_admitted_as_exit_may_register_even_with_a_two_role_key() {
    let both = Credential::new("both", b"a two-role token, 22+ bytes");
    let mut config = hub_config(TTL);
    if let Some(hub) = &mut config.hub {
        hub.keys.push(both.admission_key(RoleSet::CLIENT.with(Role::Exit)));
    }
    let mut h = hub_with(config);
    let r = record(1, "de");
    let (as_client, t) = admitted_with(&mut h, &both, r.peer, Role::Client);
    assert_eq!(t.roles, RoleSet::CLIENT.with(Role::Exit), "the ticket names every role of the key");
    let outs = h.data(as_client, hub_bytes(&register_msg(&r)));
    assert!(matches!(
        &msgs(&outs, as_client)[..],
        [HubMessage::Error { code: HubErrorCode::Forbidden, .. }]
    ));
    assert!(!h.node.hub_has_registered(&r.peer));
    let (as_exit, _) = admitted_with(&mut h, &both, r.peer, Role::Exit);
    let outs = h.data(as_exit, hub_bytes(&register_msg(&r)));
    assert_eq!(msgs(&outs, as_exit), vec![HubMessage::Registered { ttl_secs: 30 }]);
    assert_eq!(h.node.registrations(), vec![(r.peer, RoleSet::CLIENT.with(Role::Exit))]);
}

#[test]
fn a_pinned_key_admits_only_its_peer() {
    let mut config = hub_config(TTL);
    if let Some(hub) = &mut config.hub {
        hub.keys[0].peer = Some(exit_id(1));
    }
    let mut h = hub_with(config);
    let (stream, nonce) = open(&mut h, exit_id(2));
    let outs = h.data(stream, hub_bytes(&auth_msg(&exit_cred(), &nonce, exit_id(2), Role::Exit)));
    assert!(
        matches!(
            &msgs(&outs, stream)[..],
            [HubMessage::Error { code: HubErrorCode::Forbidden, .. }]
        ),
        "{outs:?}"
    );
    assert_eq!(closed(&outs, stream), Some(Close::Fin));
    let reason = Refusal::PeerNotAllowed;
    assert_eq!(events(&outs), vec![Event::AdmissionDenied { peer: exit_id(2), reason }]);
    // The peer it is pinned to gets in.
    register(&mut h, &record(1, "de"));
    assert_eq!(h.node.resources().directory_entries, 1);
}

#[test]
fn an_unknown_key_and_a_bad_proof_get_the_same_answer() {
    let peer = exit_id(1);
    let answer = |cred: &Credential| {
        let mut h = hub();
        let (stream, nonce) = open(&mut h, peer);
        let outs = h.data(stream, hub_bytes(&auth_msg(cred, &nonce, peer, Role::Exit)));
        (sent_on(&outs, stream), closed(&outs, stream), events(&outs))
    };
    let (unknown, unknown_close, unknown_events) =
        answer(&Credential::new("no-such-key", b"exit token, 22+ random bytes"));
    let (bad, bad_close, bad_events) =
        answer(&Credential::new("exits", b"a wrong token, 22+ bytes"));
    assert_eq!(unknown, bad, "byte for byte the same frame");
    assert_eq!(
        hub_messages(&unknown),
        vec![HubMessage::Error {
            code: HubErrorCode::BadProof,
            message: "authentication failed".into()
        }]
    );
    assert_eq!((unknown_close, bad_close), (Some(Close::Fin), Some(Close::Fin)));
    // Only the hub's own count tells them apart.
    assert_eq!(unknown_events, vec![Event::AdmissionDenied { peer, reason: Refusal::UnknownKey }]);
    assert_eq!(bad_events, vec![Event::AdmissionDenied { peer, reason: Refusal::BadProof }]);
}

/// Registers `r` under the exit key; returns the answer.
fn try_register(h: &mut Harness, r: &PeerRecord) -> (StreamId, Vec<HubMessage>) {
    let stream = admitted(h, r.peer, Role::Exit);
    let outs = h.data(stream, hub_bytes(&register_msg(r)));
    (stream, msgs(&outs, stream))
}

#[test]
fn a_key_without_its_own_limit_holds_one_registration() {
    let mut h = hub();
    assert_eq!(meshproxy_core::config::Limits::default().max_registrations_per_key, 1);
    let (_, m) = try_register(&mut h, &record(1, "de"));
    assert_eq!(m, vec![HubMessage::Registered { ttl_secs: 30 }]);
    let (second, m) = try_register(&mut h, &record(2, "de"));
    assert!(matches!(&m[..], [HubMessage::Error { code: HubErrorCode::RateLimited, .. }]), "{m:?}");
    assert!(!h.node.tracks_stream(second));
    assert_eq!(h.node.resources().directory_entries, 1);
    assert_eq!(h.node.registrations(), vec![(exit_id(1), RoleSet::EXIT)]);
}

#[test]
fn a_fleet_key_holds_as_many_registrations_as_it_says() {
    const N: u64 = 5;
    let mut h = fleet_hub(N as usize);
    for n in 1..=N {
        let (_, m) = try_register(&mut h, &record(n, "de"));
        assert_eq!(m, vec![HubMessage::Registered { ttl_secs: 30 }], "exit {n}");
    }
    let (_, m) = try_register(&mut h, &record(N + 1, "de"));
    assert!(matches!(&m[..], [HubMessage::Error { code: HubErrorCode::RateLimited, .. }]));
    assert_eq!(h.node.resources().directory_entries, N as usize);
    // The key's own number wins over the hub's default, both ways.
    let mut config = hub_config(TTL);
    config.limits.max_registrations_per_key = 10;
    if let Some(hub) = &mut config.hub {
        hub.keys[0].max_registrations = Some(2);
    }
    let mut h = hub_with(config);
    for n in 1..=2 {
        assert_eq!(try_register(&mut h, &record(n, "de")).1.len(), 1);
    }
    let (_, m) = try_register(&mut h, &record(3, "de"));
    assert!(matches!(&m[..], [HubMessage::Error { code: HubErrorCode::RateLimited, .. }]));
}

#[test]
fn a_ticket_is_renewed_on_request() {
    let mut h = hub();
    let (stream, first) = admitted_with(&mut h, &client_cred(), client_id(), Role::Client);
    assert_eq!(first.roles, RoleSet::CLIENT);
    h.advance(Duration::from_secs(600));
    let outs = h.data(stream, hub_bytes(&HubMessage::RenewTicket));
    let m = msgs(&outs, stream);
    let [HubMessage::Ticket { grant }] = &m[..] else { panic!("{m:?}") };
    let renewed = granted(grant, client_id(), h.now);
    assert_eq!(renewed.expires, first.expires + 600, "a full lifetime from now");
    assert!(closed(&outs, stream).is_none());
}

#[test]
fn an_admitted_peer_may_not_send_what_only_a_hub_sends() {
    let hub_only = [
        HubMessage::Challenge { version: HUB_VERSION, nonce: [1; 32] },
        HubMessage::Peers { peers: vec![record(1, "de")] },
        HubMessage::AuthOk { grant: client_grant() },
        HubMessage::Ticket { grant: client_grant() },
        HubMessage::Registered { ttl_secs: 1 },
        HubMessage::Resolved { peer: exit_id(1), record: None },
    ];
    for msg in hub_only {
        let mut h = hub();
        let stream = admitted(&mut h, client_id(), Role::Client);
        let outs = h.data(stream, hub_bytes(&msg));
        assert!(
            matches!(
                &msgs(&outs, stream)[..],
                [HubMessage::Error { code: HubErrorCode::Malformed, .. }]
            ),
            "{msg:?}: {outs:?}"
        );
        assert_eq!(closed(&outs, stream), Some(Close::Fin), "{msg:?}");
        assert!(events(&outs).contains(&Event::PeerProtocolError { peer: client_id() }));
        assert!(!h.node.tracks_stream(stream));
    }
    // A second Auth on an admitted stream is no better.
    let mut h = hub();
    let stream = admitted(&mut h, client_id(), Role::Client);
    let outs =
        h.data(stream, hub_bytes(&auth_msg(&exit_cred(), &[0; 32], client_id(), Role::Exit)));
    assert_eq!(closed(&outs, stream), Some(Close::Fin));
    assert_eq!(h.node.resources().directory_entries, 0);
}

// ---------------------------------------------------------------- pre-auth

/// The hub-stream bounds every [`Resources`] report must keep.
fn assert_bounds(h: &Harness) {
    let r = h.node.resources();
    let l = h.node.config().limits;
    assert!(r.preauth_hub_streams <= l.max_preauth_hub_streams, "{r:?}");
    assert!(r.busiest_peer_hub_streams <= l.max_hub_streams_per_peer, "{r:?}");
    assert!(r.streams <= l.max_hub_streams, "{r:?}");
}

fn refusals(outs: &[Output]) -> Vec<Refusal> {
    events(outs)
        .into_iter()
        .filter_map(|e| match e {
            Event::AdmissionDenied { reason, .. } => Some(reason),
            _ => None,
        })
        .collect()
}

fn resets(outs: &[Output]) -> usize {
    outs.iter().filter(|o| matches!(o, Output::Close { how: Close::Reset, .. })).count()
}

#[test]
fn one_peer_cannot_hold_more_than_its_share_of_pre_auth_streams() {
    let mut h = hub();
    let cap = h.node.config().limits.max_hub_streams_per_peer;
    assert_eq!(cap, 4);
    let flooder = PeerId::from_u64(666);
    let mut refused = 0;
    for _ in 0..5_000 {
        let stream = h.outside_stream();
        let outs = h.input(Input::InboundStream { stream, peer: flooder, protocol: Protocol::Hub });
        if closed(&outs, stream) == Some(Close::Reset) {
            assert!(sent_on(&outs, stream).is_empty(), "no challenge for a refused stream");
            assert_eq!(refusals(&outs), vec![Refusal::PeerStreamLimit]);
            refused += 1;
        }
        assert_bounds(&h);
    }
    assert_eq!(refused, 5_000 - cap);
    let r = h.node.resources();
    assert_eq!((r.streams, r.preauth_hub_streams, r.busiest_peer_hub_streams), (cap, cap, cap));
    // An honest peer is not affected.
    let (_, t) = admitted_with(&mut h, &client_cred(), client_id(), Role::Client);
    assert_eq!(t.holder, client_id());
    assert_bounds(&h);
    // The flooder's streams still die at the auth deadline, freeing its share.
    let outs = h.advance(Timeouts::default().auth);
    assert_eq!(refusals(&outs), vec![Refusal::AuthTimeout; cap]);
    assert_eq!(h.node.resources().preauth_hub_streams, 0);
    assert_eq!(h.node.resources().streams, 1, "only the honest peer's");
}

#[test]
fn a_flood_of_identities_is_displaced_and_a_prompt_honest_auth_gets_through() {
    let mut h = hub();
    let budget = h.node.config().limits.max_preauth_hub_streams;
    assert_eq!(budget, 256);
    let flood = |h: &mut Harness, from: u64, n: u64| -> Vec<Output> {
        let mut all = Vec::new();
        for i in from..from + n {
            let stream = h.outside_stream();
            let peer = PeerId::from_u64(10_000 + i);
            let outs = h.input(Input::InboundStream { stream, peer, protocol: Protocol::Hub });
            assert!(closed(&outs, stream).is_none(), "a new stream is always challenged");
            assert_bounds(h);
            all.extend(outs);
        }
        all
    };
    let outs = flood(&mut h, 0, 5_000);
    assert_eq!(h.node.resources().preauth_hub_streams, budget);
    assert_eq!(resets(&outs), 5_000 - budget);
    assert!(refusals(&outs).iter().all(|r| *r == Refusal::Displaced));

    // The honest client answers after another 100 flood streams: still there.
    let (honest, nonce) = open(&mut h, client_id());
    flood(&mut h, 5_000, 100);
    let outs =
        h.data(honest, hub_bytes(&auth_msg(&client_cred(), &nonce, client_id(), Role::Client)));
    assert!(matches!(&msgs(&outs, honest)[..], [HubMessage::AuthOk { .. }]), "{outs:?}");
    assert_eq!(h.node.resources().preauth_hub_streams, budget - 1, "admitted: out of the budget");
    // Admitted streams are never displaced.
    let outs = flood(&mut h, 5_100, 1_000);
    assert!(closed(&outs, honest).is_none());
    assert!(h.node.tracks_stream(honest));

    // One that waits until a whole budget of newer streams arrived is displaced.
    let (slow, nonce) = open(&mut h, exit_id(1));
    let outs = flood(&mut h, 6_100, budget as u64);
    assert_eq!(closed(&outs, slow), Some(Close::Reset));
    let reason = Refusal::Displaced;
    assert!(events(&outs).contains(&Event::AdmissionDenied { peer: exit_id(1), reason }));
    let late = h.data(slow, hub_bytes(&auth_msg(&exit_cred(), &nonce, exit_id(1), Role::Exit)));
    assert!(late.is_empty(), "{late:?}");
    assert_bounds(&h);
}

#[test]
fn a_huge_length_before_admission_is_reset_within_five_bytes() {
    let mut h = hub();
    let (stream, _) = open(&mut h, exit_id(1));
    let header = [0u8, 1, 0xc5, 0x42, 0x09];
    let mut reset_at = None;
    for (i, b) in header.iter().enumerate() {
        let outs = h.data(stream, vec![*b]);
        if closed(&outs, stream) == Some(Close::Reset) {
            assert!(sent_on(&outs, stream).is_empty());
            assert_eq!(refusals(&outs), vec![Refusal::NotAuth]);
            reset_at = Some(i + 1);
            break;
        }
        assert!(outs.is_empty(), "byte {i}: {outs:?}");
    }
    let at = reset_at.expect("reset within the five bytes");
    assert!(at >= 4, "the length is not known before its four bytes");
    assert!(!h.node.tracks_stream(stream));
    assert_eq!(h.node.resources().preauth_hub_streams, 0);
}

#[test]
fn no_frame_but_auth_is_read_before_admission() {
    let r = record(1, "de");
    let others = [
        register_msg(&r),
        HubMessage::Heartbeat { load: 1 },
        HubMessage::Find { role: Role::Exit, filter: PeerFilter::default(), limit: 1 },
        HubMessage::Resolve { peer: exit_id(1) },
        HubMessage::RenewTicket,
        HubMessage::Challenge { version: HUB_VERSION, nonce: [0; 32] },
        HubMessage::AuthOk { grant: client_grant() },
        HubMessage::Error { code: HubErrorCode::Internal, message: "hi".into() },
    ];
    for msg in others {
        let mut h = hub();
        let (stream, _) = open(&mut h, exit_id(1));
        let outs = h.data(stream, hub_bytes(&msg));
        assert_eq!(closed(&outs, stream), Some(Close::Reset), "{msg:?}");
        assert!(sent_on(&outs, stream).is_empty(), "{msg:?}");
        assert_eq!(refusals(&outs), vec![Refusal::NotAuth], "{msg:?}");
        assert_eq!(h.node.resources().directory_entries, 0);
        assert_eq!(h.node.resources().streams, 0);
    }
}

#[test]
fn the_auth_deadline_resets_every_silent_stream_at_its_own_time() {
    let mut h = hub();
    let auth = Timeouts::default().auth;
    let (a, _) = open(&mut h, exit_id(1));
    h.advance(Duration::from_secs(1));
    let (b, _) = open(&mut h, exit_id(2));
    // Half an Auth is as good as none.
    let (_, nonce) = (b, [0u8; 32]);
    let partial = hub_bytes(&auth_msg(&exit_cred(), &nonce, exit_id(2), Role::Exit));
    assert!(h.data(b, partial.slice(..20)).is_empty());
    let (at, why, outs) = h.fire_next();
    assert_eq!((at, why), (t0() + auth, TimerReason::HubPeerDeadline));
    assert_eq!(closed(&outs, a), Some(Close::Reset));
    assert!(closed(&outs, b).is_none());
    let (at, _, outs) = h.fire_next();
    assert_eq!(at, t0() + Duration::from_secs(1) + auth);
    assert_eq!(closed(&outs, b), Some(Close::Reset));
    assert_eq!(refusals(&outs), vec![Refusal::AuthTimeout]);
    assert_eq!(h.node.resources(), Default::default());
}

// --------------------------------------------------------------- property

/// What a peer holding only the client key might send a hub.
#[derive(Clone, Debug)]
enum ClientMove {
    Open,
    AuthAs { exit_role: bool, stream: usize },
    Register { stream: usize },
    Heartbeat { stream: usize },
    Renew { stream: usize },
    Find { stream: usize },
    Close { stream: usize },
    Wait { ms: u16 },
}

fn client_move() -> impl Strategy<Value = ClientMove> {
    prop_oneof![
        2 => Just(ClientMove::Open),
        3 => (any::<bool>(), any::<usize>())
            .prop_map(|(exit_role, stream)| ClientMove::AuthAs { exit_role, stream }),
        4 => any::<usize>().prop_map(|stream| ClientMove::Register { stream }),
        1 => any::<usize>().prop_map(|stream| ClientMove::Heartbeat { stream }),
        1 => any::<usize>().prop_map(|stream| ClientMove::Renew { stream }),
        1 => any::<usize>().prop_map(|stream| ClientMove::Find { stream }),
        1 => any::<usize>().prop_map(|stream| ClientMove::Close { stream }),
        1 => (0..5_000u16).prop_map(|ms| ClientMove::Wait { ms }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// However a holder of the client key plays it — under any peer id,
    /// asking for any role, registering on any stream — the directory
    /// holds no more than the one exit that registered with the exit key.
    #[test]
    fn no_sequence_from_a_client_key_grows_the_directory(
        moves in proptest::collection::vec((0..3u64, client_move()), 0..60),
    ) {
        let mut h = hub();
        let exit = record(1, "de");
        register(&mut h, &exit);
        let mut streams: Vec<(StreamId, PeerId, [u8; 32])> = Vec::new();
        for (who, m) in moves {
            // Impostors include the registered exit's own peer id.
            let peer = [client_id(), exit_id(1), exit_id(2)][who as usize];
            let pick = |streams: &[(StreamId, PeerId, [u8; 32])], i: usize| {
                (!streams.is_empty()).then(|| streams[i % streams.len()])
            };
            match m {
                ClientMove::Open => {
                    let stream = h.outside_stream();
                    let outs = h.input(Input::InboundStream { stream, peer, protocol: Protocol::Hub });
                    if let [HubMessage::Challenge { nonce, .. }] = msgs(&outs, stream)[..] {
                        streams.push((stream, peer, nonce));
                    }
                }
                ClientMove::AuthAs { exit_role, stream } => {
                    if let Some((s, p, nonce)) = pick(&streams, stream) {
                        let role = if exit_role { Role::Exit } else { Role::Client };
                        h.data(s, hub_bytes(&auth_msg(&client_cred(), &nonce, p, role)));
                    }
                }
                ClientMove::Register { stream } => {
                    if let Some((s, p, _)) = pick(&streams, stream) {
                        let mut r = record(1, "fr");
                        r.peer = p;
                        h.data(s, hub_bytes(&register_msg(&r)));
                    }
                }
                ClientMove::Heartbeat { stream } => {
                    if let Some((s, ..)) = pick(&streams, stream) {
                        h.data(s, hub_bytes(&HubMessage::Heartbeat { load: 0 }));
                    }
                }
                ClientMove::Renew { stream } => {
                    if let Some((s, ..)) = pick(&streams, stream) {
                        let outs = h.data(s, hub_bytes(&HubMessage::RenewTicket));
                        for m in msgs(&outs, s) {
                            if let HubMessage::Ticket { grant } = m {
                                let (t, ..) = ticket::decode(&grant.ticket).unwrap();
                                prop_assert_eq!(t.roles, RoleSet::CLIENT);
                            }
                        }
                    }
                }
                ClientMove::Find { stream } => {
                    if let Some((s, ..)) = pick(&streams, stream) {
                        let find = HubMessage::Find { role: Role::Exit, filter: PeerFilter::default(), limit: 9 };
                        h.data(s, hub_bytes(&find));
                    }
                }
                ClientMove::Close { stream } => {
                    if let Some((s, ..)) = pick(&streams, stream) {
                        if h.node.tracks_stream(s) {
                            h.input(Input::StreamClosed { stream: s, how: Close::Reset });
                        }
                    }
                }
                ClientMove::Wait { ms } => {
                    h.advance(Duration::from_millis(u64::from(ms)));
                }
            }
            streams.retain(|(s, ..)| h.node.tracks_stream(*s));
            assert_bounds(&h);
            let r = h.node.resources();
            prop_assert!(r.directory_entries <= 1, "{:?}", r);
            for (peer, roles) in h.node.registrations() {
                prop_assert_eq!(peer, exit.peer);
                prop_assert_eq!(roles, RoleSet::EXIT);
            }
        }
    }
}

/// Challenge nonces come from the OS entropy the driver passes in, not from
/// the 64-bit seed (review L1): two hubs with the same seed and different
/// entropy challenge differently, and the same entropy repeats its nonces
/// (so the simulator, which passes none, stays deterministic).
#[test]
fn challenge_nonces_come_from_the_entropy_not_the_seed() {
    let nonces = |entropy: Option<[u8; 32]>| {
        let mut config = hub_config(TTL);
        config.entropy = entropy;
        let mut h = hub_with(config);
        [open(&mut h, client_id()).1, open(&mut h, exit_id(1)).1]
    };
    let (a, b) = (nonces(Some([1; 32])), nonces(Some([2; 32])));
    assert_ne!(a, b, "same seed, other entropy: other nonces");
    assert_ne!(a[0], a[1], "each stream gets a fresh nonce");
    assert_eq!(a, nonces(Some([1; 32])), "the nonces are a function of the entropy");
    assert_ne!(nonces(None), a, "without entropy they come from the seed");
    assert_eq!(nonces(None), nonces(None), "and repeat with it, as the simulator needs");
}

#[test]
fn agents_and_exits_are_listed_apart_and_found_only_by_their_own_role() {
    let agents = Credential::new("agents", b"an agent token, 22+ bytes");
    let mut config = hub_config(TTL);
    if let Some(hub) = &mut config.hub {
        hub.keys.push(agents.admission_key(RoleSet::of(Role::Agent)));
    }
    let mut h = hub_with(config);
    let exit = record(1, "de");
    register(&mut h, &exit);
    let agent = PeerRecord {
        role: Role::Agent,
        attrs: Attrs { country: None, labels: vec!["service:web".into(), "site:home".into()] },
        ..record(2, "de")
    };
    // An exit's key does not list its holder as an agent.
    let (as_exit, _) = admitted_with(&mut h, &exit_cred(), agent.peer, Role::Exit);
    let register_agent = HubMessage::Register {
        role: Role::Agent,
        addrs: agent.addrs.clone(),
        attrs: agent.attrs.clone(),
        capacity: agent.capacity,
        relayed: false,
    };
    let outs = h.data(as_exit, hub_bytes(&register_agent));
    assert!(matches!(
        &msgs(&outs, as_exit)[..],
        [HubMessage::Error { code: HubErrorCode::Forbidden, .. }]
    ));
    assert!(!h.node.hub_has_registered(&agent.peer));
    // An agent's key does.
    let (as_agent, t) = admitted_with(&mut h, &agents, agent.peer, Role::Agent);
    assert_eq!(t.roles, RoleSet::of(Role::Agent));
    let outs = h.data(as_agent, hub_bytes(&register_agent));
    assert_eq!(msgs(&outs, as_agent), vec![HubMessage::Registered { ttl_secs: 30 }]);
    let client = admitted(&mut h, client_id(), Role::Client);
    let find = |h: &mut Harness, role| {
        let msg = HubMessage::Find { role, filter: PeerFilter::default(), limit: 10 };
        let outs = h.data(client, hub_bytes(&msg));
        let [HubMessage::Peers { peers }] = &msgs(&outs, client)[..] else { panic!("{outs:?}") };
        peers.clone()
    };
    assert_eq!(find(&mut h, Role::Agent), vec![agent.clone()]);
    assert_eq!(
        (h.node.directory_entries(Role::Agent), h.node.directory_entries(Role::Exit)),
        (1, 1)
    );
    assert_eq!(find(&mut h, Role::Exit), vec![exit.clone()]);
}
