//! Relay policy through the public API: reservations at hubs, relayed dials,
//! hole punching, circuit caps and listeners that refuse relayed paths.

// Helpers outside `#[test]` fns may unwrap too: a panic there is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use core::time::Duration;
use meshproxy_core::config::{HubContact, NodeConfig, RelayMode};
use meshproxy_core::ids::{ConnId, PeerId, StreamId};
use meshproxy_core::io::{
    CircuitLimit, Event, FailReason, Input, Output, Path, Protocol, Reachability,
};
use meshproxy_core::record::{PeerAddr, PeerRecord};
use meshproxy_core::target::Status;
use meshproxy_core::wire::hub::{HubMessage, HUB_VERSION};
use std::net::{IpAddr, Ipv4Addr};

fn second_hub() -> PeerId {
    PeerId::from_u64(0x5ec0)
}

fn reserves(outs: &[Output]) -> Vec<PeerId> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Reserve { hub } => Some(*hub),
            _ => None,
        })
        .collect()
}

fn punches(outs: &[Output]) -> Vec<PeerId> {
    outs.iter()
        .filter_map(|o| match o {
            Output::HolePunch { peer } => Some(*peer),
            _ => None,
        })
        .collect()
}

fn relayed_dials(outs: &[Output]) -> Vec<(PeerId, Option<PeerId>)> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Dial { peer, via, .. } => Some((*peer, *via)),
            _ => None,
        })
        .collect()
}

fn stream_conns(outs: &[Output]) -> Vec<Option<ConnId>> {
    outs.iter()
        .filter_map(|o| match o {
            Output::OpenStream { conn, protocol: Protocol::Proxy, .. } => Some(*conn),
            _ => None,
        })
        .collect()
}

/// `Register` messages sent on `stream`, as (addrs empty?, relayed).
fn registers(outs: &[Output], stream: StreamId) -> Vec<(bool, bool)> {
    hub_messages(&sent_on(outs, stream))
        .into_iter()
        .filter_map(|m| match m {
            HubMessage::Register { addrs, relayed, .. } => Some((addrs.is_empty(), relayed)),
            _ => None,
        })
        .collect()
}

/// An exit with two hubs and the given relay mode.
fn exit_node(mode: RelayMode) -> Harness {
    let mut config: NodeConfig = exit_config(exit_id(1));
    config.hubs =
        vec![hub_contact(), HubContact { peer: second_hub(), addrs: Vec::new(), ticket_key: None }];
    if let Some(e) = &mut config.exit {
        e.relay = mode;
    }
    let (mut h, outs) = Harness::new(config, 11);
    assert_eq!(dials(&outs), vec![hub_id(), second_hub()]);
    h.fire_due();
    h
}

/// Plays `hub` up to the exit's first `Register` (answered); returns the hub
/// stream and the outputs that carried the `Register`.
fn link_up(h: &mut Harness, hub: PeerId) -> (StreamId, Vec<Output>) {
    let conn = h.conn();
    let outs = h.input(Input::PeerConnected { peer: hub, conn, path: Path::Direct, limit: None });
    let [(stream, _, Protocol::Hub)] = opens(&outs)[..] else { panic!("{outs:?}") };
    h.input(Input::StreamOpened { stream });
    h.data(stream, hub_bytes(&HubMessage::Challenge { version: HUB_VERSION, nonce: [1; 32] }));
    let outs = h.data(stream, hub_bytes(&HubMessage::AuthOk { grant: exit_grant(exit_id(1)) }));
    h.data(stream, hub_bytes(&HubMessage::Registered { ttl_secs: 30 }));
    (stream, outs)
}

/// The exit's `Register` in `outs` is answered, as a hub would.
fn registered(h: &mut Harness, stream: StreamId) {
    h.data(stream, hub_bytes(&HubMessage::Registered { ttl_secs: 30 }));
}

#[test]
fn an_exit_behind_nat_reserves_at_every_hub_and_registers_through_them() {
    let mut h = exit_node(RelayMode::Auto);
    let (stream, outs) = link_up(&mut h, hub_id());
    assert_eq!(registers(&outs, stream), vec![(false, false)], "unknown reachability: direct");
    let outs = h.input(Input::Reachability(Reachability::Private));
    assert_eq!(reserves(&outs), vec![hub_id(), second_hub()]);
    assert_eq!(
        registers(&outs, stream),
        vec![(true, false)],
        "behind NAT its direct addresses are useless: registered without them"
    );
    registered(&mut h, stream);
    let outs = h.input(Input::ReservationAccepted {
        hub: hub_id(),
        expires_in: Some(Duration::from_secs(60)),
    });
    assert_eq!(events(&outs), vec![Event::ReservationAccepted { hub: hub_id() }]);
    assert_eq!(registers(&outs, stream), vec![(true, true)]);
    assert_eq!(h.node.reservations_held(), 1);
    // The other hub's reservation does not re-register at this one.
    let outs = h.input(Input::ReservationAccepted { hub: second_hub(), expires_in: None });
    assert!(registers(&outs, stream).is_empty());
    assert_eq!(h.node.reservations_held(), 2);
}

#[test]
fn reservations_are_renewed_before_they_expire_and_made_again_when_lost() {
    // No hub link comes up here: reservations do not depend on it.
    let mut h = exit_node(RelayMode::Always);
    let start = h.now;
    let ttl = Duration::from_secs(60);
    h.input(Input::ReservationAccepted { hub: hub_id(), expires_in: Some(ttl) });
    h.input(Input::ReservationFailed { hub: second_hub() });
    // Renewal with a quarter of the lifetime left.
    let outs = h.advance_to(start + ttl.mul_f64(0.75) - Duration::from_millis(1));
    assert!(!reserves(&outs).contains(&hub_id()), "{outs:?}");
    let outs = h.advance_to(start + ttl.mul_f64(0.75));
    assert_eq!(reserves(&outs).iter().filter(|h| **h == hub_id()).count(), 1);
    // The renewal is never answered: at expiry the reservation counts as lost,
    // the hub learns we are no longer reachable through it, and it is retried.
    let outs = h.advance_to(start + ttl);
    assert!(events(&outs).contains(&Event::ReservationLost { hub: hub_id() }));
    let outs = h.advance(Duration::from_secs(2));
    assert!(reserves(&outs).contains(&hub_id()), "retried after the backoff: {outs:?}");
    // A lost reservation (the hub restarted) is made again, not waited for.
    h.input(Input::ReservationAccepted { hub: hub_id(), expires_in: None });
    let outs = h.input(Input::ReservationLost { hub: hub_id() });
    assert_eq!(events(&outs), vec![Event::ReservationLost { hub: hub_id() }]);
    let outs = h.advance(Duration::from_secs(2));
    assert!(reserves(&outs).contains(&hub_id()));
    // The second hub kept being retried on its own backoff all along.
    assert!(h.log.iter().filter(|o| **o == Output::Reserve { hub: second_hub() }).count() >= 2);
}

#[test]
fn an_exit_found_reachable_gives_its_reservations_up() {
    let mut h = exit_node(RelayMode::Auto);
    let (stream, _) = link_up(&mut h, hub_id());
    h.input(Input::Reachability(Reachability::Private));
    registered(&mut h, stream);
    h.input(Input::ReservationAccepted { hub: hub_id(), expires_in: None });
    registered(&mut h, stream);
    let outs = h.input(Input::Reachability(Reachability::Public));
    let unreserved: Vec<_> = outs
        .iter()
        .filter_map(|o| match o {
            Output::Unreserve { hub } => Some(*hub),
            _ => None,
        })
        .collect();
    assert_eq!(unreserved, vec![hub_id(), second_hub()]);
    assert_eq!(registers(&outs, stream), vec![(false, false)], "direct again, not relayed");
    // An `Off` exit never reserves, whatever its reachability.
    let mut off = exit_node(RelayMode::Off);
    let outs = off.input(Input::Reachability(Reachability::Private));
    assert!(reserves(&outs).is_empty());
}

#[test]
fn the_accepting_side_punches_holes_on_a_backoff_until_a_direct_connection_exists() {
    let mut h = exit_node(RelayMode::Always);
    let client = client_id();
    let relayed = h.conn();
    let limit = Some(CircuitLimit { duration: Some(Duration::from_secs(120)), bytes: None });
    let outs = h.input(Input::PeerConnected {
        peer: client,
        conn: relayed,
        path: Path::Relayed { via: hub_id() },
        limit,
    });
    assert_eq!(punches(&outs), vec![client]);
    let outs = h.input(Input::HolePunchFailed { peer: client });
    assert_eq!(events(&outs), vec![Event::HolePunch { peer: client, ok: false }]);
    assert!(punches(&outs).is_empty(), "not at once: on a backoff");
    let outs = h.advance(Duration::from_secs(10));
    assert_eq!(punches(&outs), vec![client], "retried");
    // An attempt nobody answers times out and counts as failed.
    let outs = h.advance(Duration::from_secs(15));
    assert!(events(&outs).contains(&Event::HolePunch { peer: client, ok: false }));
    let direct = h.conn();
    let outs = h.advance(Duration::from_secs(20));
    assert_eq!(punches(&outs), vec![client]);
    let outs = h.input(Input::PeerConnected {
        peer: client,
        conn: direct,
        path: Path::Direct,
        limit: None,
    });
    assert_eq!(events(&outs), vec![Event::HolePunch { peer: client, ok: true }]);
    let outs = h.advance(Duration::from_secs(3600));
    assert!(punches(&outs).is_empty(), "done once direct: {outs:?}");
}

#[test]
fn hole_punching_stops_when_the_relayed_connection_is_gone() {
    let mut h = exit_node(RelayMode::Always);
    let conn = h.conn();
    let relayed = Path::Relayed { via: hub_id() };
    h.input(Input::PeerConnected { peer: client_id(), conn, path: relayed, limit: None });
    h.input(Input::HolePunchFailed { peer: client_id() });
    h.input(Input::PeerDisconnected { peer: client_id(), conn });
    let outs = h.advance(Duration::from_secs(3600));
    assert!(punches(&outs).is_empty(), "{outs:?}");
}

// ------------------------------------------------------------------ client

fn relayed_exit(n: u64, direct: bool) -> PeerRecord {
    let mut r = exit_record(n);
    if !direct {
        r.addrs.clear();
    }
    r.relays = vec![hub_id()];
    r
}

fn client(exits: Vec<PeerRecord>, relayed_listener: bool) -> ClientFixture {
    let config = client_config(vec![listener(|_| {}), listener(|l| l.relayed = relayed_listener)]);
    ClientFixture::new(config, exits, 5)
}

/// Completes the attempt whose `OpenStream` is in `outs`: the stream opens
/// and the exit answers success, so the session is spliced and holds no timer.
fn establish(f: &mut ClientFixture, outs: &[Output]) {
    let [(stream, _, Protocol::Proxy)] = opens(outs)[..] else { panic!("{outs:?}") };
    f.h.input(Input::StreamOpened { stream });
    let outs = f.h.data(stream, response_bytes(Status::Succeeded));
    assert_eq!(splices(&outs).len(), 1, "{outs:?}");
}

fn target() -> meshproxy_core::target::TargetAddr {
    ip_target(IpAddr::V4(Ipv4Addr::new(93, 184, 216, 34)), 443)
}

#[test]
fn an_exit_reachable_only_through_a_relay_is_dialed_via_the_hub() {
    let mut f = client(vec![relayed_exit(1, false)], true);
    let app = f.accept(0);
    let outs = f.socks(app, &target(), None, b"");
    assert_eq!(relayed_dials(&outs), vec![(exit_id(1), Some(hub_id()))]);
    let conn = f.h.conn();
    let limit =
        Some(CircuitLimit { duration: Some(Duration::from_secs(120)), bytes: Some(1 << 20) });
    let outs = f.h.input(Input::PeerConnected {
        peer: exit_id(1),
        conn,
        path: Path::Relayed { via: hub_id() },
        limit,
    });
    assert_eq!(stream_conns(&outs), vec![Some(conn)]);
    assert!(punches(&outs).is_empty(), "the dialing side leaves hole punching to the exit");
}

#[test]
fn a_failed_direct_dial_falls_back_to_the_relay_without_blaming_the_exit() {
    let mut f = client(vec![relayed_exit(1, true)], true);
    let app = f.accept(0);
    let outs = f.socks(app, &target(), None, b"");
    assert_eq!(relayed_dials(&outs), vec![(exit_id(1), None)]);
    let outs = f.h.input(Input::DialFailed { peer: exit_id(1) });
    assert_eq!(relayed_dials(&outs), vec![(exit_id(1), Some(hub_id()))]);
    assert!(events(&outs).is_empty(), "not an attempt failure yet: {outs:?}");
    // The relay fails too: now the attempt fails and nothing else is left.
    let outs = f.h.input(Input::DialFailed { peer: exit_id(1) });
    assert!(events(&outs).contains(&Event::ExitAttemptFailed { exit: exit_id(1) }));
}

#[test]
fn new_streams_move_to_a_direct_connection_once_one_exists() {
    let mut f = client(vec![relayed_exit(1, false)], true);
    let app = f.accept(0);
    f.socks(app, &target(), None, b"");
    let relayed = f.h.conn();
    let outs = f.h.input(Input::PeerConnected {
        peer: exit_id(1),
        conn: relayed,
        path: Path::Relayed { via: hub_id() },
        limit: None,
    });
    assert_eq!(stream_conns(&outs), vec![Some(relayed)]);
    let direct = f.h.conn();
    let outs = f.h.input(Input::PeerConnected {
        peer: exit_id(1),
        conn: direct,
        path: Path::Direct,
        limit: None,
    });
    assert!(stream_conns(&outs).is_empty(), "a hole punch landing dials nothing: {outs:?}");
    let app = f.accept(0);
    let outs = f.socks(app, &target(), None, b"");
    assert_eq!(stream_conns(&outs), vec![Some(direct)]);
    assert!(relayed_dials(&outs).is_empty());
}

#[test]
fn streams_avoid_a_circuit_close_to_its_cap_and_a_fresh_one_is_dialed() {
    let mut f = client(vec![relayed_exit(1, false)], true);
    let app = f.accept(0);
    f.socks(app, &target(), None, b"");
    let old = f.h.conn();
    let cap = Duration::from_secs(60);
    let limit = Some(CircuitLimit { duration: Some(cap), bytes: None });
    let relayed = Path::Relayed { via: hub_id() };
    let outs =
        f.h.input(Input::PeerConnected { peer: exit_id(1), conn: old, path: relayed, limit });
    establish(&mut f, &outs);
    // Well before the cap the circuit is reused...
    f.h.advance(Duration::from_secs(30));
    let app = f.accept(0);
    let outs = f.socks(app, &target(), None, b"");
    assert_eq!(stream_conns(&outs), vec![Some(old)]);
    establish(&mut f, &outs);
    // ...but not within the margin (10 s by default) of it.
    f.h.advance(Duration::from_secs(21));
    let app = f.accept(0);
    let outs = f.socks(app, &target(), None, b"");
    assert!(stream_conns(&outs).is_empty(), "{outs:?}");
    assert_eq!(relayed_dials(&outs), vec![(exit_id(1), Some(hub_id()))]);
    let fresh = f.h.conn();
    let outs =
        f.h.input(Input::PeerConnected { peer: exit_id(1), conn: fresh, path: relayed, limit });
    assert_eq!(stream_conns(&outs), vec![Some(fresh)]);
}

#[test]
fn a_listener_that_refuses_relayed_paths_never_uses_one() {
    // Exit 1 is reachable only through the relay; exit 2 directly.
    let mut f = client(vec![relayed_exit(1, false), relayed_exit(2, true)], false);
    for _ in 0..8 {
        let app = f.accept(1);
        let outs = f.socks(app, &target(), None, b"");
        let dials = relayed_dials(&outs);
        let opens = stream_conns(&outs);
        assert!(
            dials.iter().all(|(peer, via)| *peer == exit_id(2) && via.is_none()),
            "only direct dials to exit 2: {outs:?}"
        );
        assert!(!dials.is_empty() || opens.len() == 1, "{outs:?}");
        if let [(exit, _)] = dials[..] {
            let conn = f.h.conn();
            f.h.input(Input::PeerConnected { peer: exit, conn, path: Path::Direct, limit: None });
        }
    }
    // With only the relayed exit listed, the refusing listener fails cleanly...
    let mut f = client(vec![relayed_exit(1, false)], false);
    let app = f.accept(1);
    let outs = f.socks_raw(app, &target(), None, b"");
    assert!(relayed_dials(&outs).is_empty());
    let outs = f.h.advance(Duration::from_secs(30));
    assert!(
        events(&outs).iter().any(|e| matches!(
            e,
            Event::SessionFailed {
                reason: FailReason::NoExit,
                status: Status::NetworkUnreachable,
                ..
            }
        )),
        "{outs:?}"
    );
    // ...while the default listener of the same client goes through the relay.
    let app = f.accept(0);
    let outs = f.socks(app, &target(), None, b"");
    assert_eq!(relayed_dials(&outs), vec![(exit_id(1), Some(hub_id()))]);
}

#[test]
fn a_hub_lists_an_exit_registered_as_relayed_with_itself_as_its_relay() {
    let (mut h, _) = Harness::new(hub_config(Duration::from_secs(30)), 3);
    let exit = exit_id(4);
    let stream = h.outside_stream();
    let outs = h.input(Input::InboundStream { stream, peer: exit, protocol: Protocol::Hub });
    let [HubMessage::Challenge { nonce, .. }] = hub_messages(&sent_on(&outs, stream))[..] else {
        panic!("{outs:?}")
    };
    let role = meshproxy_core::wire::hub::Role::Exit;
    let cred = exit_cred();
    let auth = HubMessage::Auth {
        version: HUB_VERSION,
        role,
        key_id: cred.key_id.clone(),
        proof: cred.prove(&nonce, &hub_id(), &exit, role),
    };
    h.data(stream, hub_bytes(&auth));
    h.data(
        stream,
        hub_bytes(&HubMessage::Register {
            role: meshproxy_core::wire::hub::Role::Exit,
            addrs: vec![PeerAddr(vec![1])],
            attrs: Default::default(),
            capacity: 1,
            relayed: true,
        }),
    );
    let find = h.outside_stream();
    let outs =
        h.input(Input::InboundStream { stream: find, peer: client_id(), protocol: Protocol::Hub });
    let [HubMessage::Challenge { nonce, .. }] = hub_messages(&sent_on(&outs, find))[..] else {
        panic!("{outs:?}")
    };
    let role = meshproxy_core::wire::hub::Role::Client;
    let cred = client_cred();
    let auth = HubMessage::Auth {
        version: HUB_VERSION,
        role,
        key_id: cred.key_id.clone(),
        proof: cred.prove(&nonce, &hub_id(), &client_id(), role),
    };
    h.data(find, hub_bytes(&auth));
    let outs = h.data(
        find,
        hub_bytes(&HubMessage::Find {
            role: meshproxy_core::wire::hub::Role::Exit,
            filter: Default::default(),
            limit: 10,
        }),
    );
    let msgs = hub_messages(&sent_on(&outs, find));
    let [HubMessage::Peers { peers }] = &msgs[..] else { panic!("{msgs:?}") };
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].relays, vec![hub_id()]);
}

#[test]
fn a_hub_that_comes_back_gets_the_reservation_at_once_not_after_the_backoff() {
    let mut h = exit_node(RelayMode::Always);
    // The hub is away for a while: the reservation keeps failing and its
    // backoff grows towards its 30 s ceiling.
    for _ in 0..8 {
        h.input(Input::ReservationFailed { hub: hub_id() });
        let outs = h.advance(Duration::from_secs(31));
        assert!(reserves(&outs).contains(&hub_id()), "retried within the ceiling");
    }
    h.input(Input::ReservationFailed { hub: hub_id() });
    // Wait for the hub link's next dial; a reservation retry on the way
    // fails again (the hub is still away).
    let mut redialed = false;
    for _ in 0..600 {
        let outs = h.advance(Duration::from_millis(100));
        if reserves(&outs).contains(&hub_id()) {
            h.input(Input::ReservationFailed { hub: hub_id() });
        }
        if dials(&outs).contains(&hub_id()) {
            redialed = true;
            break;
        }
    }
    assert!(redialed, "the hub link redials within a minute");
    // The hub is back: the link comes up, and the reservation is asked for in
    // that same step rather than when its backoff (up to 30 s) runs out.
    let (_, outs) = link_up(&mut h, hub_id());
    assert!(reserves(&outs).contains(&hub_id()), "{outs:?}");
}

#[test]
fn the_session_whose_direct_dial_found_the_record_stale_waits_for_the_fresh_one() {
    // (The list is fetched again within a couple of seconds, not at the
    // periodic refresh of 30 s.)
    // The only exit was listed before its autonat verdict; it now sits behind
    // NAT and is reachable only through the hub.
    let mut f = client(vec![exit_record(1)], true);
    let app = f.accept(0);
    let outs = f.socks(app, &target(), None, b"");
    assert_eq!(relayed_dials(&outs), vec![(exit_id(1), None)]);
    let outs = f.h.input(Input::DialFailed { peer: exit_id(1) });
    assert!(sent_on(&outs, app).is_empty(), "the app is not answered yet: {outs:?}");
    let outs = f.h.advance(Duration::from_secs(2));
    assert!(hub_messages(&sent_on(&outs, f.hub_stream))
        .iter()
        .any(|m| matches!(m, HubMessage::Find { .. })));
    // The fresh listing sends the same session through the relay.
    let peers = vec![relayed_exit(1, false)];
    let outs = f.h.data(f.hub_stream, hub_bytes(&HubMessage::Peers { peers }));
    assert_eq!(relayed_dials(&outs), vec![(exit_id(1), Some(hub_id()))]);
    let conn = f.h.conn();
    let relayed = Path::Relayed { via: hub_id() };
    let outs =
        f.h.input(Input::PeerConnected { peer: exit_id(1), conn, path: relayed, limit: None });
    establish(&mut f, &outs);
}

#[test]
fn an_exit_that_is_simply_down_still_fails_the_session() {
    let mut f = client(vec![exit_record(1)], true);
    let app = f.accept(0);
    f.socks(app, &target(), None, b"");
    f.h.input(Input::DialFailed { peer: exit_id(1) });
    f.h.advance(Duration::from_secs(2));
    // The fresh listing says the same (direct addresses, no relay): nothing
    // new to try, and the session ends with an answer within its wait.
    let peers = vec![exit_record(1)];
    let mut outs = f.h.data(f.hub_stream, hub_bytes(&HubMessage::Peers { peers }));
    assert!(relayed_dials(&outs).is_empty(), "{outs:?}");
    outs.extend(f.h.advance(Duration::from_secs(30)));
    assert!(events(&outs).iter().any(|e| matches!(e, Event::SessionFailed { .. })), "{outs:?}");
    // Its one attempt was given back, so it ends as "no usable exit".
    assert_eq!(sent_on(&outs, app), socks_reply(Status::NetworkUnreachable));
}

/// The driver's status and connection gauges read this count instead of a
/// copy of their own: every connection reported up and not yet down, once,
/// by its path; a disconnect never reported up changes nothing.
#[test]
fn peer_connections_are_counted_by_path_while_they_are_up() {
    let mut h = exit_node(RelayMode::Auto);
    let idle = h.node.peer_connections();
    let (direct, relayed) = (h.conn(), h.conn());
    let peer = client_id();
    h.input(Input::PeerConnected { peer, conn: direct, path: Path::Direct, limit: None });
    let via = Path::Relayed { via: hub_id() };
    h.input(Input::PeerConnected { peer, conn: relayed, path: via, limit: None });
    let up = h.node.peer_connections();
    assert_eq!((up.direct - idle.direct, up.relayed - idle.relayed), (1, 1));
    h.input(Input::PeerDisconnected { peer, conn: direct });
    h.input(Input::PeerDisconnected { peer, conn: direct });
    let never_up = h.conn();
    h.input(Input::PeerDisconnected { peer, conn: never_up });
    let after = h.node.peer_connections();
    assert_eq!((after.direct, after.relayed - idle.relayed), (idle.direct, 1));
}
