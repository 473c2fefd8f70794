//! The checks behind the fuzz targets in `fuzz/` (cargo-fuzz, outside the
//! workspace), kept here so that the committed corpora replay in the normal
//! test suite on the stable toolchain (`sim/tests/fuzz_corpus.rs`).
//!
//! Each function takes arbitrary bytes and panics only when a parser breaks a
//! promise: a panic of its own, unbounded buffering, a non-canonical round
//! trip, input consumed twice or lost, or a parse that ends neither in an
//! answer nor in "need more".

use bytes::Bytes;
use meshproxy_core::http_connect::{HttpAction, HttpAuthPolicy, HttpConnectHandshake, MAX_HEAD};
use meshproxy_core::http_head::{self, HeadLimits, HeadReader, HeadStatus, Parsed};
use meshproxy_core::ingress;
use meshproxy_core::socks::{SocksAction, SocksAuthPolicy, SocksHandshake, MAX_BUFFERED};
use meshproxy_core::socks4::{Socks4Action, Socks4Handshake, MAX_REQUEST};
use meshproxy_core::wire::frame::{DecodeResult, Decoded};
use meshproxy_core::wire::ingress::{
    self as ingress_codec, AnswerStatus, ForwardedHost, ServiceName,
};
use meshproxy_core::wire::{hub, proxy};
use std::path::Path;
use std::sync::Arc;

/// The fuzz targets, by the name of their `fuzz/fuzz_targets/*.rs` file and
/// corpus directory.
pub const TARGETS: [&str; 10] = [
    "socks5",
    "socks4",
    "http_connect",
    "http_forward",
    "http_head",
    "proxy_wire",
    "hub_wire",
    "ingress_wire",
    "scenario",
    "ingress_route",
];

/// Runs the check of target `name` on `data`; `false` for an unknown name.
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "socks5" => socks5(data),
        "socks4" => socks4(data),
        "http_connect" => http_connect(data),
        "http_forward" => http_forward(data),
        "http_head" => http_head(data),
        "proxy_wire" => proxy_wire(data),
        "hub_wire" => hub_wire(data),
        "ingress_wire" => ingress_wire(data),
        "scenario" => scenario(data),
        "ingress_route" => ingress_route(data),
        _ => return false,
    }
    true
}

/// Splits `data` into a configuration byte and chunks whose sizes the
/// configuration byte varies (1 to 64 bytes), so the same input also tests
/// how a parser copes with the message arriving in pieces.
fn chunks(data: &[u8]) -> (u8, impl Iterator<Item = &[u8]>) {
    let (config, rest) = data.split_first().map_or((0, &[][..]), |(c, r)| (*c, r));
    let size = usize::from(config >> 2) + 1;
    (config, rest.chunks(size))
}

/// Polls a handshake until it settles; a parser that keeps producing actions
/// would loop forever, so the loop is bounded.
const MAX_ACTIONS: usize = 16;

/// SOCKS5 handshake: bounded buffer, every byte either consumed by the
/// handshake or handed back as leftover, a single final answer.
pub fn socks5(data: &[u8]) {
    let (config, pieces) = chunks(data);
    let policy = if config & 1 == 0 {
        SocksAuthPolicy::NoAuth
    } else {
        SocksAuthPolicy::UserPass(vec![("alice".into(), "secret".into())])
    };
    let mut hs = SocksHandshake::new(Arc::new(policy));
    let mut fed = 0usize;
    let mut done = false;
    for piece in pieces {
        if done {
            assert!(hs.feed(piece).is_err(), "a finished handshake took more input");
            break;
        }
        if hs.feed(piece).is_ok() {
            fed += piece.len();
        }
        assert!(hs.buffered() <= MAX_BUFFERED, "buffered {} > {MAX_BUFFERED}", hs.buffered());
        for _ in 0..MAX_ACTIONS {
            match hs.poll() {
                SocksAction::NeedMore => break,
                SocksAction::Send(bytes) => assert!(!bytes.is_empty() && bytes.len() <= 2),
                SocksAction::Request(req) => {
                    let leftover = hs.take_leftover();
                    assert!(leftover.len() <= fed, "leftover {} > fed {fed}", leftover.len());
                    assert!(req.target.to_string().len() <= 262, "target {}", req.target);
                    done = true;
                    break;
                }
                SocksAction::Reject { reply, .. } => {
                    assert!(reply.len() <= 22, "reply of {} bytes", reply.len());
                    done = true;
                    break;
                }
            }
        }
    }
}

/// SOCKS4/4a request: bounded buffer, one end (an 8-byte 0x5B reply or
/// nothing for a refusal), never a request on a listener that requires
/// authentication, and the same end and leftover whether the input comes in
/// pieces or whole.
pub fn socks4(data: &[u8]) {
    let (config, pieces) = chunks(data);
    let policy = Arc::new(if config & 1 == 0 {
        SocksAuthPolicy::NoAuth
    } else {
        SocksAuthPolicy::UserPass(vec![("alice".into(), "secret".into())])
    });
    let mut hs = Socks4Handshake::new(policy.clone());
    let (mut end, mut fed, mut unfed) = (None, 0usize, 0usize);
    for piece in pieces {
        if end.is_some() {
            assert!(hs.feed(piece).is_err(), "a finished handshake took more input");
            unfed += piece.len();
            continue;
        }
        assert!(hs.feed(piece).is_ok(), "an unfinished handshake refused input");
        fed += piece.len();
        assert!(hs.buffered() <= MAX_REQUEST, "buffered {} > {MAX_REQUEST}", hs.buffered());
        match hs.poll() {
            Socks4Action::NeedMore => {}
            other => end = Some(other),
        }
    }
    let rest = data.get(1..).unwrap_or_default();
    let mut whole = Socks4Handshake::new(policy);
    assert!(whole.feed(rest).is_ok());
    let whole_end = match whole.poll() {
        Socks4Action::NeedMore => None,
        other => Some(other),
    };
    assert_eq!(end, whole_end, "the split changed the outcome");
    match &end {
        Some(Socks4Action::Request(req)) => {
            assert_eq!(config & 1, 0, "SOCKS4 served on a listener that requires auth");
            let leftover = hs.take_leftover();
            assert!(leftover.len() <= fed, "leftover {} > fed {fed}", leftover.len());
            assert_eq!(leftover.len() + unfed, whole.take_leftover().len(), "bytes lost");
            assert!(req.target.to_string().len() <= 262, "target {}", req.target);
        }
        Some(Socks4Action::Reject { reply, .. }) => {
            assert!(reply.is_empty() || reply == &[0, 0x5B, 0, 0, 0, 0, 0, 0], "{reply:?}");
        }
        Some(Socks4Action::NeedMore) => unreachable!("not an end"),
        None => assert!(rest.len() < MAX_REQUEST, "{} bytes left undecided", rest.len()),
    }
}

/// HTTP CONNECT handshake: bounded head, a well-formed HTTP answer to every
/// refusal, leftover never more than what was fed.
pub fn http_connect(data: &[u8]) {
    let (config, pieces) = chunks(data);
    let policy = if config & 1 == 0 {
        HttpAuthPolicy::NoAuth
    } else {
        HttpAuthPolicy::Basic(vec![("alice".into(), "secret".into())])
    };
    let mut hs = HttpConnectHandshake::new(Arc::new(policy));
    let mut fed = 0usize;
    for piece in pieces {
        if hs.feed(piece).is_err() {
            break;
        }
        fed += piece.len();
        assert!(hs.buffered() <= MAX_HEAD, "buffered {} > {MAX_HEAD}", hs.buffered());
        match hs.poll() {
            HttpAction::NeedMore => {}
            HttpAction::Request(_) | HttpAction::Forward(_) => {
                assert!(hs.take_leftover().len() <= fed);
                break;
            }
            HttpAction::Reject { response, .. } => {
                assert!(response.starts_with(b"HTTP/1.1 "), "{response:?}");
                assert!(response.windows(4).any(|w| w == b"\r\n\r\n"), "{response:?}");
                break;
            }
        }
    }
}

/// Plain HTTP forward requests (absolute form) on an HTTP listener: bounded
/// head; a forwarded head that parses again whole, in origin form, with one
/// `Host`, `Connection: close` and no hop-by-hop or `Proxy-*` field; leftover
/// never more than what was fed; a well-formed HTTP answer to every refusal.
/// The configuration byte's bit 1 puts `GET http://` in front, so the
/// fuzzer spends its time past the request line.
pub fn http_forward(data: &[u8]) {
    let (config, pieces) = chunks(data);
    let policy = if config & 1 == 0 {
        HttpAuthPolicy::NoAuth
    } else {
        HttpAuthPolicy::Basic(vec![("alice".into(), "secret".into())])
    };
    let mut hs = HttpConnectHandshake::new(Arc::new(policy));
    let mut fed = 0usize;
    let prefix: &[u8] = if config & 2 == 0 { b"" } else { b"GET http://" };
    for piece in std::iter::once(prefix).chain(pieces) {
        if hs.feed(piece).is_err() {
            break;
        }
        fed += piece.len();
        assert!(hs.buffered() <= MAX_HEAD, "buffered {} > {MAX_HEAD}", hs.buffered());
        match hs.poll() {
            HttpAction::NeedMore => {}
            HttpAction::Forward(r) => {
                check_forwarded_head(&r.head);
                assert!(hs.take_leftover().len() <= fed);
                break;
            }
            HttpAction::Request(_) => {
                assert!(hs.take_leftover().len() <= fed);
                break;
            }
            HttpAction::Reject { response, .. } => {
                assert!(response.starts_with(b"HTTP/1.1 "), "{response:?}");
                assert!(response.windows(4).any(|w| w == b"\r\n\r\n"), "{response:?}");
                break;
            }
        }
    }
}

/// What the origin of a forwarded request gets: one whole head in origin
/// form, nothing hop-by-hop.
fn check_forwarded_head(bytes: &[u8]) {
    // The rewrite adds `Host` and `Connection` to a head that was within the
    // default limits: room for both.
    let limits = HeadLimits { max_bytes: MAX_HEAD + 1024, max_headers: http_head::MAX_HEADERS + 2 };
    let head = match http_head::parse(bytes, limits) {
        Ok(Parsed::Complete(head)) => head,
        other => panic!("forwarded head does not parse: {other:?} {bytes:?}"),
    };
    assert_eq!(head.len, bytes.len(), "forwarded head has bytes after it");
    assert!(head.target.starts_with('/') || head.target == "*", "target {:?}", head.target);
    assert_eq!(head.count("host"), 1, "Host count");
    assert!(head.host().is_ok(), "Host {:?}", head.value("host"));
    let connection: Vec<&[u8]> = head.values("connection").collect();
    assert_eq!(connection, [&b"close"[..]]);
    for field in &head.headers {
        let name = field.name.to_ascii_lowercase();
        let hop = ["keep-alive", "te", "trailer", "upgrade"].contains(&name.as_str());
        assert!(!hop && !name.starts_with("proxy-"), "{name} forwarded");
    }
}

/// The HTTP/1.1 request-head reader under small limits the input chooses:
/// never holds more than the byte limit, reads the same head (or the same
/// error) in pieces as in one feed, hands back exactly the bytes after the
/// head, and the head's readings (`Host`, body framing, `Connection`) never
/// panic.
pub fn http_head(data: &[u8]) {
    let (config, rest) = data.split_first().map_or((0, &[][..]), |(c, r)| (*c, r));
    // Small limits reach the bounds often; 0 selects the defaults.
    let limits = match config & 0b11 {
        0 => HeadLimits::default(),
        n => HeadLimits { max_bytes: usize::from(n) * 96, max_headers: usize::from(config >> 5) },
    };
    let whole = http_head::parse(rest, limits);
    let mut reader = HeadReader::new(limits);
    let (_, pieces) = chunks(data);
    let mut fed = 0usize;
    let mut answer = Ok(HeadStatus::Incomplete);
    for piece in pieces {
        answer = reader.feed(piece);
        assert!(reader.buffered() <= limits.max_bytes, "held {} > {limits:?}", reader.buffered());
        fed += piece.len();
        if !matches!(answer, Ok(HeadStatus::Incomplete)) {
            break;
        }
    }
    match (&whole, &answer) {
        (Ok(Parsed::Incomplete), Ok(HeadStatus::Incomplete)) => {}
        (Ok(Parsed::Complete(one)), Ok(HeadStatus::Complete { head, rest: after })) => {
            assert_eq!(one, head, "a split read another head");
            assert!(head.len <= limits.max_bytes && head.headers.len() <= limits.max_headers);
            assert_eq!(after[..], rest[head.len..fed], "bytes after the head lost or changed");
            let _ = (head.host(), head.body_length(), head.keep_alive(), head.upgrade());
        }
        (Err(a), Err(b)) => assert_eq!(a, b, "a split changed the error"),
        _ => panic!("one feed gave {whole:?}, pieces gave {answer:?}"),
    }
}

/// Checks one decoder: a complete message re-encodes to exactly the bytes it
/// was decoded from (the codecs are canonical), and decoding never reads past
/// the buffer.
fn round_trip<T>(
    data: &[u8],
    decode: impl Fn(&[u8]) -> DecodeResult<T>,
    encode: impl Fn(&T, &mut Vec<u8>),
) {
    let mut rest = data;
    // Several messages back to back, as a stream delivers them.
    for _ in 0..8 {
        match decode(rest) {
            Ok(Decoded::Complete { msg, consumed }) => {
                assert!(consumed > 0 && consumed <= rest.len(), "consumed {consumed}");
                let mut again = Vec::new();
                encode(&msg, &mut again);
                assert_eq!(again, rest[..consumed], "not canonical");
                // Every proper prefix of a complete message is incomplete, never an error.
                for cut in [0, 1, consumed / 2, consumed - 1] {
                    if cut < consumed {
                        assert!(
                            matches!(decode(&rest[..cut]), Ok(Decoded::Incomplete)),
                            "prefix {cut} of {consumed} not incomplete"
                        );
                    }
                }
                rest = &rest[consumed..];
            }
            Ok(Decoded::Incomplete) | Err(_) => return,
        }
    }
}

/// The `/meshproxy/proxy/1` codec, both directions.
pub fn proxy_wire(data: &[u8]) {
    let (first, rest) = data.split_first().map_or((0, &[][..]), |(c, r)| (*c, r));
    if first & 1 == 0 {
        round_trip(rest, proxy::decode_request, proxy::encode_request);
    } else {
        round_trip(rest, proxy::decode_response, proxy::encode_response);
    }
}

/// The `/meshproxy/hub/1` codec.
pub fn hub_wire(data: &[u8]) {
    round_trip(data, hub::decode, hub::encode);
    // What a hub reads before and after admission: the same message as the
    // full decoder, or a refusal — never more bytes than the narrower limit.
    for (narrow, max) in [
        (hub::decode_auth as fn(&[u8]) -> _, hub::AUTH_MAX),
        (hub::decode_from_peer, hub::MAX_FROM_PEER_FRAME),
    ] {
        if let Ok(Decoded::Complete { msg, consumed }) = narrow(data) {
            assert!(consumed <= 4 + max, "read past its limit");
            assert_eq!(hub::decode(data), Ok(Decoded::Complete { msg, consumed }));
        }
    }
    if let Ok(Decoded::Complete { msg: hub::HubMessage::Auth { .. }, consumed }) = hub::decode(data)
    {
        assert!(
            matches!(hub::decode_auth(data), Ok(Decoded::Complete { consumed: c, .. }) if c == consumed)
        );
    }
    // Ticket bytes: decode never panics, and nothing unsigned verifies.
    let _ = meshproxy_core::ticket::decode(data);
    let trusted = [(meshproxy_core::ids::PeerId::from_u64(1), [9u8; 32])];
    let holder = meshproxy_core::ids::PeerId::from_u64(2);
    assert!(meshproxy_core::ticket::verify(
        data,
        holder,
        meshproxy_core::record::Role::Client,
        0,
        &trusted,
    )
    .is_err());
}

/// The `/meshproxy/ingress/1` codec, both directions (the first byte picks
/// which, and the chunk size): what `round_trip` checks, plus the same
/// messages when the bytes arrive in pieces, decoded names that pass their
/// own validators, and statuses that keep the retry rule (every failure but
/// `Forbidden` is retryable, every status but `Ok` has an HTTP answer).
pub fn ingress_wire(data: &[u8]) {
    let (config, rest) = data.split_first().map_or((0, &[][..]), |(c, r)| (*c, r));
    if config & 1 == 0 {
        round_trip(rest, ingress_codec::decode_open, ingress_codec::encode_open);
        let whole = in_pieces(rest, usize::MAX, ingress_codec::decode_open);
        assert_eq!(
            in_pieces(rest, usize::from(config >> 2) + 1, ingress_codec::decode_open),
            whole
        );
        for open in whole {
            assert_eq!(ServiceName::new(open.service.as_str()).as_ref(), Ok(&open.service));
            assert_eq!(ForwardedHost::new(open.host.as_str()).as_ref(), Ok(&open.host));
            assert_eq!(open.version, ingress_codec::INGRESS_VERSION);
        }
    } else {
        round_trip(rest, ingress_codec::decode_answer, ingress_codec::encode_answer);
        let whole = in_pieces(rest, usize::MAX, ingress_codec::decode_answer);
        assert_eq!(
            in_pieces(rest, usize::from(config >> 2) + 1, ingress_codec::decode_answer),
            whole
        );
        for ingress_codec::Answer { status } in whole {
            assert_eq!(AnswerStatus::from_code(status.code()), Some(status));
            assert_eq!(
                status.retryable(),
                !matches!(status, AnswerStatus::Ok | AnswerStatus::Forbidden)
            );
            assert_eq!(status.http_status().is_none(), status == AnswerStatus::Ok);
        }
    }
}

/// Feeds `data` to a reader's buffer `size` bytes at a time, decoding after
/// each piece, and returns the messages in order until the first error or
/// the end of the input (at most 8, as in [`round_trip`]).
fn in_pieces<T>(data: &[u8], size: usize, decode: impl Fn(&[u8]) -> DecodeResult<T>) -> Vec<T> {
    let mut buf = Vec::new();
    let mut got = Vec::new();
    for piece in data.chunks(size.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match decode(&buf) {
                Ok(Decoded::Complete { msg, consumed }) if got.len() < 8 => {
                    got.push(msg);
                    buf.drain(..consumed);
                }
                Ok(Decoded::Incomplete) => break,
                Ok(Decoded::Complete { .. }) | Err(_) => return got,
            }
        }
    }
    got
}

/// Scenario files: any text is either a scenario or an error naming a field
/// or a line — never a panic.
pub fn scenario(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(e) = crate::scenario::parse_str(Path::new("fuzz.toml"), text) {
        assert!(!e.to_string().is_empty());
    }
}

/// The ingress router's fixed table for [`ingress_route`]: every kind of
/// host pattern, prefix, strictness and target, and a default.
fn ingress_snapshot() -> ingress::Snapshot {
    use ingress::{Balance, HashOn, RouteSpec, RouteTable, TargetSpec};
    let agents = |balance| TargetSpec::Agents {
        service: "web".into(),
        pools: vec![(0, "site=home".into(), 3), (1, "site=office".into(), 1)],
        balance,
    };
    let route =
        |id: &str, priority, host: Option<&str>, prefix: Option<&str>, strict, target| RouteSpec {
            id: id.into(),
            priority,
            host: host.map(Into::into),
            path_prefix: prefix.map(Into::into),
            strict,
            target,
        };
    let redirect = TargetSpec::Redirect {
        status: 308,
        to: "https://new.example/base/".into(),
        keep_path: true,
        keep_query: true,
    };
    let routes = [
        route("api", 1, Some("app.example"), Some("/api"), true, agents(Balance::RoundRobin)),
        route(
            "git",
            1,
            None,
            Some("/git"),
            false,
            agents(Balance::Hash(HashOn::Cookie("sid".into()))),
        ),
        route("wild", 2, Some("*.example"), None, true, agents(Balance::Weighted)),
        route("old", 0, None, Some("/old"), true, redirect),
        route("least", 3, Some("[::1]"), Some("/"), true, agents(Balance::LeastActive)),
        route("rand", 3, Some("r.test"), None, true, agents(Balance::Random)),
        route("ip", 3, Some("ip.test"), None, true, agents(Balance::Hash(HashOn::ClientIp))),
    ];
    let teapot = TargetSpec::Static {
        status: 418,
        content_type: "text/plain".into(),
        body: b"tea".to_vec(),
    };
    let table =
        RouteTable::new("web", &routes, Some((true, &teapot))).unwrap_or_else(|e| panic!("{e}"));
    ingress::Snapshot::new(1, std::collections::BTreeMap::from([("web".to_owned(), table)]))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Ingress routing: normalises a request head (the input as a whole head
/// when the first byte is even, else `host\ntarget` around a fixed request
/// line) and routes it against a fixed table. Checks that nothing panics,
/// that what normalisation accepts is canonical (lowercase host without port
/// or trailing dot, no dot segment or control byte, normalising it again
/// changes nothing), that the decision is the first matching route in
/// (priority, id) order or the default, that a strict route never passes an
/// encoded separator, that a redirect's `Location` is visible ASCII, and that
/// the chosen agent is available and in the lowest group with one.
pub fn ingress_route(data: &[u8]) {
    use ingress::{Affinity, Agent, Outcome, Refusal, Request, Router};
    let (config, rest) = data.split_first().map_or((0, &[][..]), |(c, r)| (*c, r));
    let head = if config & 1 == 0 {
        match http_head::parse(rest, HeadLimits::default()) {
            Ok(Parsed::Complete(head)) => head,
            _ => return,
        }
    } else {
        let text = String::from_utf8_lossy(rest);
        let (host, target) = text.split_once('\n').unwrap_or(("app.example", &text));
        let line = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nCookie: sid={config}\r\n\r\n");
        match http_head::parse(line.as_bytes(), HeadLimits::default()) {
            Ok(Parsed::Complete(head)) => head,
            _ => return,
        }
    };
    let Ok(request) = Request::from_head(&head) else { return };
    if let Some(host) = &request.host {
        assert!(!host.ends_with('.') && host.len() <= 255, "{host}");
        assert_eq!(host, &host.to_ascii_lowercase());
        assert!(host.starts_with('[') || !host.contains(':'), "{host}");
    }
    assert!(request.path.raw().starts_with('/'));
    for seg in request.path.segments() {
        assert!(seg != b"." && seg != b"..", "dot segment passed");
        assert!(!seg.iter().any(|&b| b < 0x20 || b == 0x7f), "control byte passed");
    }
    let again = match &request.query {
        Some(q) => format!("GET {}?{q} HTTP/1.1\r\n", request.path.raw()),
        None => format!("GET {} HTTP/1.1\r\n", request.path.raw()),
    };
    let again = format!("{again}Host: {}\r\n\r\n", request.host.as_deref().unwrap_or("h"));
    if request.host.is_some() {
        match http_head::parse(again.as_bytes(), HeadLimits::default()) {
            Ok(Parsed::Complete(h)) => assert_eq!(Request::from_head(&h).as_ref(), Ok(&request)),
            other => panic!("normalised request does not parse again: {other:?}"),
        }
    }
    let snapshot = ingress_snapshot();
    let decision = snapshot.decide("web", &request);
    let table = snapshot.table("web").unwrap_or_else(|| panic!("no table"));
    let first = table.routes().iter().position(|r| r.matches(&request));
    assert_eq!(decision.route, first.map(|i| table.routes()[i].id.clone()));
    let strict = first.is_none_or(|i| table.routes()[i].strict);
    if strict && request.path.encoded_separator().is_some() {
        assert!(matches!(decision.outcome, Outcome::Refuse(Refusal::Path(_))));
    }
    match &decision.outcome {
        Outcome::Redirect { location, .. } => {
            assert!(location.bytes().all(|b| b.is_ascii_graphic()), "{location:?}");
        }
        Outcome::Forward(target) => {
            let agent = |n, site: &str, available| Agent {
                id: meshproxy_core::ids::PeerId::from_u64(n),
                labels: [("site".to_owned(), site.to_owned())].into(),
                services: vec!["web".into()],
                available,
                active: u32::from(config) % (n as u32 + 1),
            };
            let agents = [
                agent(1, "home", config & 2 == 0),
                agent(2, "home", config & 4 == 0),
                agent(3, "office", true),
                agent(4, "office", false),
            ];
            let mut router = Router::new(snapshot.clone());
            let mut rng = <rand_chacha::ChaCha8Rng as rand_core::SeedableRng>::seed_from_u64(
                u64::from(config),
            );
            let ip = [192, 0, 2, config];
            let affinity = Affinity::of(&target.balance, &head, &ip);
            let home_up = agents[..2].iter().any(|a| a.available);
            for _ in 0..3 {
                let id = router.choose(&decision, &agents, &affinity, &mut rng);
                let chosen =
                    agents.iter().find(|a| Some(a.id) == id).unwrap_or_else(|| panic!("no agent"));
                assert!(chosen.available, "an unavailable agent was chosen");
                assert_eq!(chosen.labels["site"] == "home", home_up, "not the lowest group");
            }
            assert_eq!(target.service, "web");
        }
        Outcome::Refuse(_) | Outcome::Static(_) => {}
    }
}

/// Replays every file under `dir/<target>/` through its check; returns how
/// many inputs ran. Unknown directories are an error, so a renamed target
/// cannot silently stop replaying.
pub fn replay_corpus(dir: &Path) -> Result<usize, String> {
    let mut ran = 0;
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| e.to_string())?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !TARGETS.contains(&name.as_str()) {
            // Targets checked elsewhere (the core model replays in node/core's tests).
            continue;
        }
        for input in std::fs::read_dir(entry.path()).map_err(|e| e.to_string())? {
            let path = input.map_err(|e| e.to_string())?.path();
            let data = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let data = Bytes::from(data);
            let ok = std::panic::catch_unwind(|| run(&name, &data));
            if ok.is_err() {
                return Err(format!("{name}: {} fails", path.display()));
            }
            ran += 1;
        }
    }
    Ok(ran)
}
