//! A client, a hub and an exit wired together by [`Net`]: every wire message
//! between real nodes, the test playing only the app and the origin.

// Helpers outside `#[test]` fns may unwrap too: a panic there is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use core::time::Duration;
use meshproxy_core::config::ListenerConfig;
use meshproxy_core::ids::{ListenerId, StreamId};
use meshproxy_core::io::{Event, Input, Output};
use meshproxy_core::target::Status;
use std::net::SocketAddr;

/// The client's end of the proxy stream the exit spliced.
fn exit_splice_peer(net: &Net) -> StreamId {
    let [(stream, peer, _)] = opens(&net.outputs_of(client_id()))
        .into_iter()
        .filter(|(_, _, p)| *p == meshproxy_core::io::Protocol::Proxy)
        .collect::<Vec<_>>()[..]
    else {
        panic!("one proxy stream")
    };
    assert_eq!(peer, exit_id(1));
    stream
}

fn mesh() -> Net {
    let mut exit = exit_config(exit_id(1));
    exit.hubs = vec![hub_contact()];
    let mut net = Net::new(vec![
        hub_config(Duration::from_secs(30)),
        exit,
        client_config(vec![ListenerConfig::default()]),
    ]);
    net.advance(Duration::from_secs(2));
    assert!(net.node(hub_id()).hub_has_registered(&exit_id(1)));
    net
}

#[test]
fn an_app_reaches_an_origin_through_real_nodes() {
    let mut net = mesh();
    let app = StreamId::outside(1_000);
    let client = client_id();
    net.input(
        client,
        Input::AppAccepted { listener: ListenerId(0), stream: app, source: app_source() },
    );
    let target = SocketAddr::new(public_ip(7), 443);
    let mut hello = SOCKS_NO_AUTH_GREETING.to_vec();
    hello.extend(socks_connect(&meshproxy_core::target::TargetAddr::Ip(target)));
    hello.extend_from_slice(b"ping");
    net.input(client, Input::StreamData { stream: app, data: hello.into() });
    // Exits may only be listed at the next refresh: give it time.
    for _ in 0..20 {
        if !origins(&net.outputs_of(exit_id(1))).is_empty() {
            break;
        }
        net.advance(Duration::from_millis(500));
    }
    let [(origin, addr)] = origins(&net.outputs_of(exit_id(1)))[..] else {
        panic!("the exit never dialed: {:?}", net.outputs_of(exit_id(1)))
    };
    assert_eq!(addr, target);
    assert_eq!(sent_on(&net.outputs_of(client), app), vec![5, 0], "only the method choice so far");

    net.input(exit_id(1), Input::OriginConnected { stream: origin });
    assert_eq!(
        sent_on(&net.outputs_of(client), app),
        [vec![5, 0], socks_reply(Status::Succeeded)].concat()
    );
    let exit_splice = splices(&net.outputs_of(exit_id(1)));
    let client_splice = splices(&net.outputs_of(client));
    assert_eq!(exit_splice.len(), 1);
    assert_eq!(client_splice.len(), 1);
    assert_eq!(exit_splice[0].b, origin);
    assert!(exit_splice[0].a_to_b.is_empty(), "the client sent nothing after its request");
    assert_eq!((client_splice[0].a, client_splice[0].b), (app, exit_splice_peer(&net)));
    assert_eq!(&client_splice[0].a_to_b[..], b"ping", "the app's pipelined bytes go first");
    assert!(net.events_of(client).iter().any(
        |e| matches!(e, Event::SessionEstablished { exit, attempts: 1, .. } if *exit == exit_id(1))
    ));
    // The exit took the ticket the real hub signed for the client.
    assert!(!net.log.iter().any(|(_, _, o)| matches!(
        o,
        Output::Event(
            Event::PeerProtocolError { .. }
                | Event::AdmissionDenied { .. }
                | Event::ExitNotAdmitted { .. }
        )
    )));
}
