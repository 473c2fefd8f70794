//! Reloads through the public API (`Input::Reconfigure`, `Input::Revoke`):
//! what changes at once, and what work already under way keeps.

// Helpers outside `#[test]` fns may unwrap too: a panic there is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use core::time::Duration;
use meshproxy_core::admission::{Credential, Refusal, RoleSet};
use meshproxy_core::config::{Limits, NodeConfig};
use meshproxy_core::ids::{PeerId, StreamId};
use meshproxy_core::io::{Close, Event, Input, NewConfig, Output, Protocol, Revocation};
use meshproxy_core::policy::ExitPolicyConfig;
use meshproxy_core::target::{Status, TargetAddr};
use meshproxy_core::wire::hub::{HubMessage, Role, HUB_VERSION};
use std::net::SocketAddr;
use std::sync::Arc;

fn reload(h: &mut Harness, config: NodeConfig) -> Vec<Output> {
    h.input(Input::Reconfigure(NewConfig(Arc::new(config))))
}

// ------------------------------------------------------------------- exits

fn exit_node(limits: Limits) -> (Harness, NodeConfig) {
    exit_node_and_link(limits).0
}

/// The exit, its config and its (ready, registered) hub stream.
fn exit_node_and_link(limits: Limits) -> ((Harness, NodeConfig), StreamId) {
    let mut config = exit_config(exit_id(1));
    config.limits = limits;
    let (h, hub_stream) = exit_behind_hub(config.clone(), 1);
    config.hubs = vec![hub_contact()];
    if let Some(e) = &mut config.exit {
        e.relay = meshproxy_core::config::RelayMode::Off;
    }
    ((h, config), hub_stream)
}

fn request(h: &mut Harness, target: SocketAddr) -> (StreamId, Vec<Output>) {
    let stream = h.outside_stream();
    let mut outs =
        h.input(Input::InboundStream { stream, peer: client_id(), protocol: Protocol::Proxy });
    outs.extend(h.data(stream, request_bytes(&ticketed(TargetAddr::Ip(target)))));
    (stream, outs)
}

fn answered(outs: &[Output], stream: StreamId) -> Option<Status> {
    let bytes = sent_on(outs, stream);
    (!bytes.is_empty()).then(|| decode_response(&bytes).status)
}

/// A session to `target`, spliced to its origin.
fn spliced(h: &mut Harness, target: SocketAddr) -> (StreamId, StreamId) {
    let (stream, outs) = request(h, target);
    let [(origin, _)] = origins(&outs)[..] else { panic!("{outs:?}") };
    let outs = h.input(Input::OriginConnected { stream: origin });
    assert_eq!(answered(&outs, stream), Some(Status::Succeeded));
    (stream, origin)
}

#[test]
fn a_reloaded_exit_policy_refuses_new_sessions_and_keeps_open_ones() {
    let (mut h, mut config) = exit_node(Limits::default());
    let target = SocketAddr::new(public_ip(1), 443);
    let (open, origin) = spliced(&mut h, target);
    let deny = format!("{}/32", public_ip(1)).parse().unwrap();
    if let Some(e) = &mut config.exit {
        e.policy = ExitPolicyConfig { deny: vec![deny], ..ExitPolicyConfig::default() };
    }
    let outs = reload(&mut h, config);
    assert!(closed(&outs, open).is_none() && closed(&outs, origin).is_none(), "{outs:?}");
    assert_eq!(events(&outs), vec![Event::Reconfigured { admissions_ended: 0 }]);
    assert_eq!(h.node.resources().sessions, 1, "the open session runs on");
    let (refused, outs) = request(&mut h, target);
    assert_eq!(answered(&outs, refused), Some(Status::NotAllowed));
    assert!(origins(&outs).is_empty(), "never dialed");
    // Another destination is still served under the new policy.
    let (_, outs) = request(&mut h, SocketAddr::new(public_ip(2), 443));
    assert_eq!(origins(&outs).len(), 1);
}

#[test]
fn a_limit_lowered_below_the_open_count_closes_nothing_and_refuses_until_under() {
    let (mut h, mut config) = exit_node(Limits::default());
    let target = SocketAddr::new(public_ip(1), 443);
    let sessions: Vec<_> = (0..3).map(|_| spliced(&mut h, target)).collect();
    config.limits.max_exit_sessions = 2;
    let outs = reload(&mut h, config);
    assert!(outs.iter().all(|o| !matches!(o, Output::Close { .. })), "{outs:?}");
    assert_eq!(h.node.resources().sessions, 3);
    let (refused, outs) = request(&mut h, target);
    assert_eq!(answered(&outs, refused), Some(Status::GeneralFailure));
    // Two end: one under the new bound, so a new session is served again.
    for (stream, origin) in &sessions[..2] {
        let report = meshproxy_core::io::SpliceReport {
            a_to_b: 0,
            b_to_a: 0,
            how: meshproxy_core::io::SpliceEnd::Clean,
        };
        h.input(Input::SpliceEnded { a: *stream, b: *origin, report });
    }
    assert_eq!(h.node.resources().sessions, 1);
    let (_, outs) = request(&mut h, target);
    assert_eq!(origins(&outs).len(), 1, "{outs:?}");
}

#[test]
fn reloaded_timeouts_apply_to_deadlines_armed_afterwards() {
    let (mut h, mut config) = exit_node(Limits::default());
    config.timeouts.request = Duration::from_millis(300);
    reload(&mut h, config);
    let stream = h.outside_stream();
    h.input(Input::InboundStream { stream, peer: client_id(), protocol: Protocol::Proxy });
    let (at, _, outs) = h.fire_next();
    assert_eq!(at, t0() + Duration::from_millis(300), "the new request deadline");
    assert_eq!(closed(&outs, stream), Some(Close::Reset), "{outs:?}");
}

#[test]
fn a_reloaded_listing_is_registered_again() {
    let ((mut h, mut config), hub_stream) = exit_node_and_link(Limits::default());
    if let Some(e) = &mut config.exit {
        e.attrs.labels = vec!["fast".into()];
    }
    let outs = reload(&mut h, config.clone());
    let sent = hub_messages(&sent_on(&outs, hub_stream));
    let [HubMessage::Register { attrs, .. }] = &sent[..] else { panic!("{sent:?}") };
    assert_eq!(attrs.labels, vec!["fast".to_owned()]);
    // The same config again sends nothing.
    let outs = reload(&mut h, config);
    assert!(sent_on(&outs, hub_stream).is_empty());
}

// -------------------------------------------------------------------- hubs

fn auth(h: &mut Harness, cred: &Credential, peer: PeerId, role: Role) -> (StreamId, Vec<Output>) {
    let stream = h.outside_stream();
    let outs = h.input(Input::InboundStream { stream, peer, protocol: Protocol::Hub });
    let msgs = hub_messages(&sent_on(&outs, stream));
    let [HubMessage::Challenge { nonce, .. }] = msgs[..] else { panic!("{outs:?}") };
    let msg = HubMessage::Auth {
        version: HUB_VERSION,
        role,
        key_id: cred.key_id.clone(),
        proof: cred.prove(&nonce, &hub_id(), &peer, role),
    };
    let outs = h.data(stream, hub_bytes(&msg));
    (stream, outs)
}

fn admitted(h: &mut Harness, cred: &Credential, peer: PeerId, role: Role) -> StreamId {
    let (stream, outs) = auth(h, cred, peer, role);
    let msgs = hub_messages(&sent_on(&outs, stream));
    assert!(matches!(msgs[..], [HubMessage::AuthOk { .. }]), "{msgs:?}");
    stream
}

fn registered_exit(h: &mut Harness, peer: PeerId) -> StreamId {
    let stream = admitted(h, &exit_cred(), peer, Role::Exit);
    let r = exit_record(1);
    let msg = HubMessage::Register {
        role: Role::Exit,
        addrs: r.addrs,
        attrs: r.attrs,
        capacity: r.capacity,
        relayed: false,
    };
    h.data(stream, hub_bytes(&msg));
    assert!(h.node.hub_has_registered(&peer));
    stream
}

fn revoked_peers(outs: &[Output]) -> Vec<PeerId> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Revoke { peer } => Some(*peer),
            _ => None,
        })
        .collect()
}

fn hub() -> (Harness, NodeConfig) {
    let config = hub_config(Duration::from_secs(30));
    let (h, _) = Harness::new(config.clone(), 3);
    (h, config)
}

#[test]
fn a_key_removed_by_a_reload_ends_its_admissions_and_registrations_only() {
    let (mut h, mut config) = hub();
    let exit = exit_id(1);
    let exit_stream = registered_exit(&mut h, exit);
    let client_stream = admitted(&mut h, &client_cred(), client_id(), Role::Client);
    if let Some(hub) = &mut config.hub {
        hub.keys.retain(|k| k.key_id != exit_cred().key_id);
    }
    let outs = reload(&mut h, config);
    assert_eq!(closed(&outs, exit_stream), Some(Close::Fin));
    assert!(closed(&outs, client_stream).is_none(), "another key's peer stays");
    assert_eq!(revoked_peers(&outs), vec![exit], "the relay forgets it");
    assert!(!h.node.hub_has_registered(&exit), "its registration is gone");
    assert!(events(&outs).contains(&Event::Reconfigured { admissions_ended: 1 }));
    // It cannot come back with the old key.
    let (again, outs) = auth(&mut h, &exit_cred(), exit, Role::Exit);
    assert_eq!(closed(&outs, again), Some(Close::Fin));
    assert!(
        events(&outs).contains(&Event::AdmissionDenied { peer: exit, reason: Refusal::UnknownKey })
    );
}

#[test]
fn a_key_whose_roles_change_ends_its_admissions_and_an_unchanged_one_keeps_them() {
    let (mut h, mut config) = hub();
    let client_stream = admitted(&mut h, &client_cred(), client_id(), Role::Client);
    let exit_stream = admitted(&mut h, &exit_cred(), exit_id(1), Role::Exit);
    if let Some(hub) = &mut config.hub {
        // Reordered (indexes move) and the exit key loses its role.
        hub.keys.reverse();
        hub.keys[1] = exit_cred().admission_key(RoleSet::CLIENT);
    }
    let outs = reload(&mut h, config);
    assert_eq!(closed(&outs, exit_stream), Some(Close::Fin));
    assert!(closed(&outs, client_stream).is_none());
    // The client's stream still works under its (moved) key.
    let outs = h.data(client_stream, hub_bytes(&HubMessage::RenewTicket));
    let msgs = hub_messages(&sent_on(&outs, client_stream));
    assert!(matches!(msgs[..], [HubMessage::Ticket { .. }]), "{msgs:?}");
}

#[test]
fn a_revoked_peer_is_cut_off_and_refused_until_a_reload_changes_the_keys() {
    let (mut h, mut config) = hub();
    let exit = exit_id(1);
    let stream = registered_exit(&mut h, exit);
    let client_stream = admitted(&mut h, &client_cred(), client_id(), Role::Client);
    let outs = h.input(Input::Revoke(Revocation::Peer(exit)));
    assert_eq!(closed(&outs, stream), Some(Close::Fin));
    assert_eq!(revoked_peers(&outs), vec![exit]);
    assert!(events(&outs).contains(&Event::Revoked { streams_ended: 1 }));
    assert!(!h.node.hub_has_registered(&exit));
    assert!(closed(&outs, client_stream).is_none());
    // Its next dial, with a valid proof, is refused.
    let (again, outs) = auth(&mut h, &exit_cred(), exit, Role::Exit);
    assert_eq!(closed(&outs, again), Some(Close::Fin));
    assert!(
        events(&outs).contains(&Event::AdmissionDenied { peer: exit, reason: Refusal::Revoked })
    );
    // A reload that leaves the keys alone does not lift it...
    reload(&mut h, config.clone());
    let (again, outs) = auth(&mut h, &exit_cred(), exit, Role::Exit);
    assert_eq!(closed(&outs, again), Some(Close::Fin));
    // ...one that changes them does.
    if let Some(hub) = &mut config.hub {
        hub.keys.push(Credential::new("new", b"t").admission_key(RoleSet::CLIENT));
    }
    reload(&mut h, config);
    admitted(&mut h, &exit_cred(), exit, Role::Exit);
}

#[test]
fn a_revoked_key_ends_every_peer_admitted_under_it() {
    let (mut h, _) = hub();
    let a = admitted(&mut h, &exit_cred(), exit_id(1), Role::Exit);
    let b = admitted(&mut h, &exit_cred(), exit_id(2), Role::Exit);
    let c = admitted(&mut h, &client_cred(), client_id(), Role::Client);
    let outs = h.input(Input::Revoke(Revocation::Key(exit_cred().key_id.clone())));
    assert_eq!((closed(&outs, a), closed(&outs, b)), (Some(Close::Fin), Some(Close::Fin)));
    assert!(closed(&outs, c).is_none());
    assert!(events(&outs).contains(&Event::Revoked { streams_ended: 2 }));
    let (again, outs) = auth(&mut h, &exit_cred(), exit_id(3), Role::Exit);
    assert_eq!(closed(&outs, again), Some(Close::Fin), "a new peer with the key is refused too");
}
