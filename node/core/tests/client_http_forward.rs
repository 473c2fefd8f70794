//! Plain HTTP forward requests (absolute form) on client listeners, through
//! the public API: the test plays the hub, the exits and the apps, and checks
//! every output — no answer of ours before the origin's, the rewritten head
//! and the body as the splice's first bytes, failures as HTTP responses.

// Helpers outside `#[test]` fns may unwrap too: a panic there is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::*;
use meshproxy_core::config::{ListenerConfig, ListenerProtocol};
use meshproxy_core::http_connect::HttpAuthPolicy;
use meshproxy_core::io::{Close, Event, FailReason, Output, Resources};
use meshproxy_core::target::Status;
use meshproxy_core::wire::hub::HubMessage;
use std::sync::Arc;

fn fixture(listeners: Vec<ListenerConfig>, seed: u64) -> ClientFixture {
    ClientFixture::new(client_config(listeners), vec![exit_record(1)], seed)
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

fn status_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes).to_string();
    text.split("\r\n").next().unwrap_or_default().to_owned()
}

const REQUEST: &[u8] =
    b"POST http://example.com:8080/up?x=1 HTTP/1.1\r\nHost: example.com:8080\r\n\
Proxy-Connection: keep-alive\r\nProxy-Authorization: Basic dTpw\r\nContent-Length: 7\r\n\
User-Agent: t\r\n\r\n";
const REWRITTEN: &[u8] =
    b"POST /up?x=1 HTTP/1.1\r\nHost: example.com:8080\r\nContent-Length: 7\r\n\
User-Agent: t\r\nConnection: close\r\n\r\n";

/// On an `http` and on a `both` listener: the exit is asked for the URI's
/// host and port, the app gets no answer of ours, and the splice starts with
/// the origin-form head then the body, sent before and while the exit
/// answered, in order.
#[test]
fn a_forward_request_splices_its_rewritten_head_and_body() {
    for (seed, protocol) in [(61, ListenerProtocol::Http), (62, ListenerProtocol::Both)] {
        let mut f = fixture(vec![listener(|l| l.protocol = protocol)], seed);
        let app = f.accept(0);
        let outs = f.h.data(app, [REQUEST, b"body"].concat());
        assert!(sent_on(&outs, app).is_empty(), "{outs:?}");
        let a = f.reach_exit(&outs);
        assert_eq!(a.request, ticketed(domain_target("example.com", 8080)));
        assert!(f.h.data(app, &b"-42"[..]).is_empty(), "body while the exit answers is held");
        let outs = f.answer(&a, Status::Succeeded, b"HTTP/1.1 200 OK\r\n");
        assert!(sent_on(&outs, app).is_empty(), "the origin answers, not us: {outs:?}");
        assert_eq!(
            splices(&outs),
            vec![SpliceOut {
                a: app,
                b: a.stream,
                a_to_b: Bytes::from([REWRITTEN, b"body-42"].concat()),
                b_to_a: Bytes::from_static(b"HTTP/1.1 200 OK\r\n"),
            }]
        );
        assert!(events(&outs).iter().any(|e| matches!(e, Event::SessionEstablished { .. })));
    }
}

/// The exit's answers become the HTTP statuses a browser understands: 403
/// for its policy, 502 for an unreachable origin, 504 for a timeout; each a
/// complete response that closes, nothing left behind.
#[test]
fn exit_failures_are_http_error_responses() {
    for (seed, status, code) in [
        (63, Status::NotAllowed, "403 Forbidden"),
        (64, Status::HostUnreachable, "502 Bad Gateway"),
        (65, Status::ConnectionRefused, "502 Bad Gateway"),
        (66, Status::TtlExpired, "504 Gateway Timeout"),
    ] {
        let mut f = fixture(vec![ListenerConfig::default()], seed);
        let app = f.accept(0);
        let outs =
            f.h.data(app, b"GET http://10.0.0.1/ HTTP/1.1\r\nHost: 10.0.0.1\r\n\r\n".to_vec());
        let a = f.reach_exit(&outs);
        let outs = f.answer(&a, status, b"");
        let sent = sent_on(&outs, app);
        assert_eq!(status_line(&sent), format!("HTTP/1.1 {code}"), "{status}");
        let text = String::from_utf8_lossy(&sent).to_string();
        assert!(text.contains("\r\nConnection: close\r\n"), "{text}");
        assert!(text.ends_with(&format!("{status}\n")), "{text}");
        assert_eq!(closed(&outs, app), Some(Close::Fin));
        assert_eq!(failed(&outs), vec![(FailReason::Destination, status)]);
        assert!(splices(&outs).is_empty());
        assert_eq!(f.h.node.resources(), Resources::default());
    }
}

/// No exit at all: 502, the same as for CONNECT.
#[test]
fn no_exit_is_502() {
    let mut f = ClientFixture::new(client_config(vec![ListenerConfig::default()]), vec![], 67);
    let app = f.accept(0);
    let mut outs = f.h.data(app, b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n".to_vec());
    // The client keeps asking its hub while it waits; the hub knows none.
    for _ in 0..50 {
        let (_, _, o) = f.h.fire_next();
        if !sent_on(&o, f.hub_stream).is_empty() {
            f.h.data(f.hub_stream, hub_bytes(&HubMessage::Peers { peers: vec![] }));
        }
        outs.extend(o);
        if closed(&outs, app).is_some() {
            break;
        }
    }
    assert_eq!(status_line(&sent_on(&outs, app)), "HTTP/1.1 502 Bad Gateway", "{outs:?}");
    assert_eq!(failed(&outs), vec![(FailReason::NoExit, Status::NetworkUnreachable)]);
}

/// Refused before any exit is asked: credentials (407), an https:// URI, a
/// smuggling shape, a request meant for an origin (400).
#[test]
fn bad_requests_are_refused_before_any_exit() {
    let strict = listener(|l| {
        l.http_auth = Arc::new(HttpAuthPolicy::Basic(vec![("alice".into(), "pw".into())]))
    });
    let cases: [(&[u8], &str, &str); 5] = [
        (b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n", "407 Proxy Authentication Required", "authentication"),
        (
            b"GET https://h/ HTTP/1.1\r\nHost: h\r\nProxy-Authorization: Basic YWxpY2U6cHc=\r\n\r\n",
            "400 Bad Request",
            "use CONNECT",
        ),
        (
            b"POST http://h/ HTTP/1.1\r\nHost: h\r\nProxy-Authorization: Basic YWxpY2U6cHc=\r\n\
              Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "400 Bad Request",
            "both Transfer-Encoding and Content-Length",
        ),
        (b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", "400 Bad Request", "not a proxy request"),
        (b"GET http://h\r\n\r\n", "400 Bad Request", "malformed"),
    ];
    for (request, code, says) in cases {
        let mut f = fixture(vec![strict.clone()], 68);
        let app = f.accept(0);
        let outs = f.h.data(app, request.to_vec());
        let sent = sent_on(&outs, app);
        let text = String::from_utf8_lossy(&sent).to_string();
        assert_eq!(status_line(&sent), format!("HTTP/1.1 {code}"), "{text}");
        assert!(text.contains(says), "{text}");
        assert_eq!(closed(&outs, app), Some(Close::Fin));
        assert_eq!(failed(&outs), vec![(FailReason::Handshake, Status::GeneralFailure)]);
        assert!(dials(&outs).is_empty() && proxy_opens(&outs).is_empty(), "{outs:?}");
        assert_eq!(f.h.node.resources(), Resources::default());
    }
    // With the credentials the same listener forwards, and the origin never
    // sees them.
    let mut f = fixture(vec![strict], 69);
    let app = f.accept(0);
    let outs = f.h.data(
        app,
        b"GET http://h/ HTTP/1.1\r\nHost: h\r\nProxy-Authorization: Basic YWxpY2U6cHc=\r\n\r\n"
            .to_vec(),
    );
    let a = f.reach_exit(&outs);
    let outs = f.answer(&a, Status::Succeeded, b"");
    let [splice] = &splices(&outs)[..] else { panic!("{outs:?}") };
    assert_eq!(splice.a_to_b, &b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"[..]);
}
