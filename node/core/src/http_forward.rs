//! Plain HTTP forward proxying: an absolute-form request (`GET
//! http://host[:port]/path HTTP/1.1`, any method but CONNECT) as an HTTP
//! client listener reads it, turned into the target to reach through an exit
//! and the origin-form head the origin gets (RFC 9112 §3.2.2, RFC 9110 §7.6).
//!
//! ```text
//! GET http://h:8080/p?q HTTP/1.1       GET /p?q HTTP/1.1
//! Host: whatever                 ──▶   Host: h:8080            (from the URI, once)
//! Proxy-Authorization: …               Accept: */*             (end-to-end fields kept, in order)
//! Connection: keep-alive, X-A          Connection: close       (one request per session)
//! X-A: 1                                                        (hop-by-hop and Proxy-* dropped)
//! Accept: */*
//! ```
//!
//! Only the head is rewritten: the body (content-length or chunked) and
//! anything after it go to the origin unchanged, spliced. A request whose
//! body length would need a guess (two lengths, a coding other than a final
//! `chunked`) is refused, because a guess that differs from the origin's is
//! request smuggling. The keep-alive rule: every forwarded request carries
//! `Connection: close`, so the origin closes after its response and the end
//! reaches the app; each app connection therefore carries one request (a
//! client opens a new connection for its next one, as it does whenever a
//! server closes). Nothing has to frame the response, so nothing can frame it
//! wrongly.

use crate::http_head::{HeadError, RequestHead, Version};
use crate::target::{TargetAddr, MAX_DOMAIN_LEN};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The port of an `http://` URI that names none.
pub const DEFAULT_PORT: u16 = 80;
/// Most characters of a request-target quoted back in an error body.
const ECHO_MAX: usize = 100;

/// Header fields that describe one hop and never reach the origin (RFC 9110
/// §7.6.1), besides those `Connection` names and every `Proxy-*` field.
/// `Host` is here because the URI's authority replaces it.
const HOP_BY_HOP: [&str; 6] = ["connection", "keep-alive", "te", "trailer", "upgrade", "host"];
/// Fields kept even when `Connection` names them: the body is forwarded
/// as it came, so its framing must reach the origin with it.
const FRAMING: [&str; 2] = ["content-length", "transfer-encoding"];

/// Why an absolute-form request is not forwarded; each is answered with 400.
#[derive(thiserror::Error, Clone, PartialEq, Eq, Debug)]
pub enum ForwardError {
    /// `https://` in absolute form: the proxy would have to speak TLS to the
    /// origin for the app. The app should tunnel with CONNECT instead.
    #[error("https:// URIs are not forwarded in plain text: use CONNECT (an HTTPS proxy tunnel)")]
    Https,
    /// Another scheme (`ftp://`, `ws://`, …).
    #[error("only http:// URIs are forwarded, not {scheme:?}")]
    Scheme {
        /// The scheme as sent, cut to a short length.
        scheme: String,
    },
    /// The URI does not name a reachable `host[:port]`.
    #[error("bad URI {uri:?}: {problem}")]
    BadUri {
        /// The request-target as sent, cut to a short length.
        uri: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The body's length cannot be known without guessing.
    #[error(transparent)]
    Framing(HeadError),
}

/// An absolute-form request, ready to go through an exit.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Forward {
    /// The origin to connect to (port 80 unless the URI names one).
    pub target: TargetAddr,
    /// The origin-form head to send first: request line, `Host`, the
    /// end-to-end fields as sent, `Connection: close`, blank line.
    pub head: Vec<u8>,
}

/// Whether a request-target is in absolute form (`scheme://…`), the form
/// a client uses toward a forward proxy.
pub fn is_absolute_form(target: &str) -> bool {
    split_scheme(target).is_some()
}

/// The scheme and what follows its `://`, if `target` starts with one.
fn split_scheme(target: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = target.split_once("://")?;
    let mut bytes = scheme.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphabetic());
    let rest_ok = bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    (first_ok && rest_ok).then_some((scheme, rest))
}

/// Cuts `s` to at most [`ECHO_MAX`] characters for an error body.
fn echo(s: &str) -> String {
    s.chars().take(ECHO_MAX).collect()
}

/// Judges an absolute-form request head and builds what the origin gets.
///
/// # Errors
/// See [`ForwardError`].
pub fn rewrite(head: &RequestHead) -> Result<Forward, ForwardError> {
    let uri = parse_uri(&head.target)?;
    head.body_length().map_err(ForwardError::Framing)?;
    let named: Vec<&[u8]> = head
        .values("connection")
        .flat_map(|v| v.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
        .collect();
    let path = match uri.path {
        // RFC 9112 §3.2.4: OPTIONS to a whole server is `*` in origin form.
        "" if head.method == "OPTIONS" => "*".to_owned(),
        "" => "/".to_owned(),
        // `http://h?q` is `/?q` in origin form.
        query if query.starts_with('?') => format!("/{query}"),
        path => path.to_owned(),
    };
    let version = match head.version {
        Version::Http10 => "HTTP/1.0",
        Version::Http11 => "HTTP/1.1",
    };
    let mut out = Vec::with_capacity(head.len + 64);
    out.extend_from_slice(
        format!("{} {path} {version}\r\nHost: {}\r\n", head.method, uri.host).as_bytes(),
    );
    for field in &head.headers {
        if is_dropped(&field.name, &named) {
            continue;
        }
        out.extend_from_slice(field.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(&field.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    Ok(Forward { target: uri.target, head: out })
}

/// Whether a field stays on this hop: a hop-by-hop field, a `Proxy-*` field
/// (credentials for us, not for the origin), or one `Connection` names.
pub fn is_dropped(name: &str, connection_names: &[&[u8]]) -> bool {
    let lower = name.to_ascii_lowercase();
    if FRAMING.contains(&lower.as_str()) {
        return false;
    }
    HOP_BY_HOP.contains(&lower.as_str())
        || lower.starts_with("proxy-")
        || connection_names.iter().any(|t| t.eq_ignore_ascii_case(lower.as_bytes()))
}

/// An `http://` URI taken apart.
#[derive(Debug)]
struct Uri<'a> {
    target: TargetAddr,
    /// `host[:port]` for the `Host` field, as the URI spells it.
    host: &'a str,
    /// Path and query (fragment cut); empty when the URI has neither.
    path: &'a str,
}

fn parse_uri(raw: &str) -> Result<Uri<'_>, ForwardError> {
    let bad = |problem| ForwardError::BadUri { uri: echo(raw), problem };
    let (scheme, rest) = split_scheme(raw).ok_or(bad("not an absolute URI"))?;
    if scheme.eq_ignore_ascii_case("https") {
        return Err(ForwardError::Https);
    }
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(ForwardError::Scheme { scheme: echo(scheme) });
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    // A fragment is the client's own business (RFC 9110 §4.2.5): never sent.
    let path = tail.split('#').next().unwrap_or_default();
    if authority.contains('@') {
        // Deprecated (RFC 9110 §4.2.4) and a classic way to disguise a host.
        return Err(bad("userinfo (user@) in the URI"));
    }
    let (target, host) = parse_host(authority).map_err(bad)?;
    Ok(Uri { target, host, path })
}

/// The target and the `Host` value of an authority: `host`, `host:port`,
/// `[v6]`, `[v6]:port` (an empty port means the default, RFC 3986 §3.2.3).
fn parse_host(authority: &str) -> Result<(TargetAddr, &str), &'static str> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (literal, after) = rest.split_once(']').ok_or("unclosed '['")?;
        let ip: Ipv6Addr = literal.parse().map_err(|_| "invalid IPv6 literal")?;
        let port = match after {
            "" => "",
            _ => after.strip_prefix(':').ok_or("junk after the IPv6 literal")?,
        };
        (Err(ip), port)
    } else {
        let (host, port) = authority.rsplit_once(':').unwrap_or((authority, ""));
        if host.is_empty() {
            return Err("empty host");
        }
        if host.len() > MAX_DOMAIN_LEN {
            return Err("host longer than 255 bytes");
        }
        let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
        if !host.bytes().all(allowed) {
            return Err("invalid character in host (IPv6 literals go in brackets)");
        }
        (Ok(host), port)
    };
    let port = if port.is_empty() { DEFAULT_PORT } else { crate::http_connect::parse_port(port)? };
    let target = match host {
        Err(ip) => TargetAddr::Ip(SocketAddr::new(IpAddr::V6(ip), port)),
        Ok(name) => match name.parse::<Ipv4Addr>() {
            Ok(ip) => TargetAddr::Ip(SocketAddr::new(IpAddr::V4(ip), port)),
            Err(_) => TargetAddr::Domain(name.to_owned(), port),
        },
    };
    // `Host` names the authority as the URI spells it, less an empty port.
    Ok((target, authority.strip_suffix(':').unwrap_or(authority)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http_head::{parse, HeadLimits, Parsed};
    use proptest::prelude::*;

    fn head_of(input: &str) -> RequestHead {
        match parse(input.as_bytes(), HeadLimits::default()) {
            Ok(Parsed::Complete(head)) => head,
            other => panic!("expected a head, got {other:?}"),
        }
    }

    fn rewritten(input: &str) -> (TargetAddr, String) {
        let fwd = rewrite(&head_of(input)).unwrap_or_else(|e| panic!("{input}: {e}"));
        (fwd.target, String::from_utf8(fwd.head).expect("ASCII in test"))
    }

    fn error_of(input: &str) -> ForwardError {
        match rewrite(&head_of(input)) {
            Err(e) => e,
            Ok(fwd) => panic!("{input}: forwarded as {:?}", String::from_utf8_lossy(&fwd.head)),
        }
    }

    #[test]
    fn absolute_form_becomes_origin_form_with_host_from_the_uri() {
        let (target, head) = rewritten(
            "GET http://Example.com:8080/a/b?c=d#frag HTTP/1.1\r\nHost: other.example\r\nAccept: */*\r\n\r\n",
        );
        assert_eq!(target, TargetAddr::Domain("Example.com".into(), 8080));
        assert_eq!(
            head,
            "GET /a/b?c=d HTTP/1.1\r\nHost: Example.com:8080\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn ports_paths_and_literals() {
        for (uri, target, host, path) in [
            ("http://h", "h:80", "h", "/"),
            ("http://h:", "h:80", "h", "/"),
            ("http://h:81", "h:81", "h:81", "/"),
            ("HTTP://h/", "h:80", "h", "/"),
            ("http://h?q=1", "h:80", "h", "/?q=1"),
            ("http://1.2.3.4:8000/x", "1.2.3.4:8000", "1.2.3.4:8000", "/x"),
            ("http://[::1]/x", "[::1]:80", "[::1]", "/x"),
            ("http://[::1]:9/x", "[::1]:9", "[::1]:9", "/x"),
        ] {
            let (t, head) = rewritten(&format!("GET {uri} HTTP/1.1\r\nHost: x\r\n\r\n"));
            assert_eq!(t.to_string(), target, "{uri}");
            assert!(
                head.starts_with(&format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n")),
                "{uri}: {head}"
            );
        }
        let (_, head) = rewritten("OPTIONS http://h HTTP/1.1\r\nHost: h\r\n\r\n");
        assert!(head.starts_with("OPTIONS * HTTP/1.1\r\n"), "{head}");
        // HTTP/1.0 stays 1.0, and needs no Host of its own.
        let (_, head) = rewritten("GET http://h/ HTTP/1.0\r\n\r\n");
        assert_eq!(head, "GET / HTTP/1.0\r\nHost: h\r\nConnection: close\r\n\r\n");
    }

    #[test]
    fn hop_by_hop_and_proxy_fields_stay_here() {
        let (_, head) = rewritten(
            "POST http://h/ HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Secret, Content-Length\r\n\
             Keep-Alive: timeout=5\r\nTE: trailers\r\nTrailer: X-T\r\nUpgrade: websocket\r\n\
             Proxy-Connection: keep-alive\r\nProxy-Authorization: Basic YTpi\r\nProxy-Foo: 1\r\n\
             X-Secret: s\r\nx-secret: t\r\nContent-Length: 2\r\nX-Keep: k\r\n\r\n",
        );
        assert_eq!(
            head,
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nX-Keep: k\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn chunked_bodies_keep_their_framing() {
        let (_, head) = rewritten(
            "POST http://h/u HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: transfer-encoding\r\n\r\n",
        );
        assert_eq!(
            head,
            "POST /u HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn refusals_name_the_problem() {
        let cases: [(&str, &str); 12] = [
            ("https://h/", "use CONNECT"),
            ("ftp://h/", "only http://"),
            ("http:///x", "empty host"),
            ("http://user:pw@h/", "userinfo"),
            ("http://h:0/", "port 0"),
            ("http://h:99999/", "port above 65535"),
            ("http://h:x/", "port is not a number"),
            ("http://[::1/", "unclosed"),
            ("http://[zz]/", "invalid IPv6"),
            ("http://[::1]x/", "junk after"),
            ("http://a,b/", "invalid character"),
            ("http://::1/", "IPv6 literals go in brackets"),
        ];
        for (uri, says) in cases {
            let e = error_of(&format!("GET {uri} HTTP/1.1\r\nHost: h\r\n\r\n"));
            assert!(e.to_string().contains(says), "{uri}: {e}");
        }
        let long = format!("http://{}/", "a".repeat(256));
        let e = error_of(&format!("GET {long} HTTP/1.1\r\nHost: h\r\n\r\n"));
        assert!(e.to_string().contains("255"), "{e}");
        assert!(e.to_string().len() < 200, "the URI is echoed cut: {e}");
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        for fields in [
            "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
            "Content-Length: 3\r\nContent-Length: 4\r\n",
            "Transfer-Encoding: gzip, chunked\r\n",
            "Transfer-Encoding: chunked, gzip\r\n",
            "Content-Length: -1\r\n",
        ] {
            let e = error_of(&format!("POST http://h/ HTTP/1.1\r\nHost: h\r\n{fields}\r\n"));
            assert!(
                matches!(e, ForwardError::Framing(HeadError::BadFraming { .. })),
                "{fields}: {e}"
            );
        }
        let e = error_of("POST http://h/ HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(matches!(e, ForwardError::Framing(_)), "{e}");
    }

    #[test]
    fn absolute_form_is_scheme_colon_slash_slash() {
        for yes in ["http://h", "HTTP://h/", "web+x://h", "ftp://h"] {
            assert!(is_absolute_form(yes), "{yes}");
        }
        for no in ["/", "*", "h:80", "/x?u=http://h", "1http://h", "://h", ""] {
            assert!(!is_absolute_form(no), "{no}");
        }
    }

    fn field_name() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("Connection".to_owned()),
            Just("Keep-Alive".to_owned()),
            Just("TE".to_owned()),
            Just("Trailer".to_owned()),
            Just("Upgrade".to_owned()),
            Just("Host".to_owned()),
            Just("Proxy-Connection".to_owned()),
            Just("Proxy-Authorization".to_owned()),
            Just("proxy-x".to_owned()),
            "X-[A-Za-z0-9-]{1,8}",
            "[A-Za-z][A-Za-z0-9-]{0,10}",
        ]
    }

    fn field_value() -> impl Strategy<Value = String> {
        prop_oneof![
            "[!-~]([ -~]{0,20}[!-~])?",
            Just("close, X-A".to_owned()),
            Just("keep-alive".to_owned()),
        ]
    }

    proptest! {
        /// Whatever the fields: none the hop-by-hop rules name reaches the
        /// origin, `Host` appears once and equals the URI's authority, the
        /// end-to-end fields keep their order and bytes, and the bytes after
        /// the head (the body) are left to the caller untouched.
        #[test]
        fn the_rewrite_keeps_only_end_to_end_fields(
            host in "[a-z][a-z0-9-]{0,15}(\\.[a-z]{1,5}){0,2}",
            port in proptest::option::of(1..=u16::MAX),
            path in "(/[A-Za-z0-9._~%!$&'()*+,;=:@-]{0,10}){0,3}(\\?[A-Za-z0-9=&]{0,10})?",
            fields in proptest::collection::vec((field_name(), field_value()), 0..12),
            minor in 0u8..=1,
            body in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let authority = match port {
                Some(p) => format!("{host}:{p}"),
                None => host.clone(),
            };
            let mut input = format!("PUT http://{authority}{path} HTTP/1.{minor}\r\n");
            for (name, value) in &fields {
                input.push_str(&format!("{name}: {value}\r\n"));
            }
            input.push_str("\r\n");
            let raw = [input.as_bytes(), &body].concat();
            let (head, rest) = match crate::http_head::HeadReader::new(HeadLimits::default()).feed(&raw) {
                Ok(crate::http_head::HeadStatus::Complete { head, rest }) => (head, rest),
                other => panic!("generated head did not parse: {other:?}"),
            };
            prop_assert_eq!(&rest[..], &body[..]);
            let fwd = rewrite(&head).expect("generated requests are forwardable");
            prop_assert_eq!(fwd.target, TargetAddr::Domain(host.clone(), port.unwrap_or(DEFAULT_PORT)));
            let out = match parse(&fwd.head, HeadLimits { max_bytes: 1 << 16, max_headers: 128 }) {
                Ok(Parsed::Complete(out)) => out,
                other => panic!("rewritten head does not parse: {other:?}"),
            };
            prop_assert_eq!(out.len, fwd.head.len());
            prop_assert_eq!(&out.method, "PUT");
            let want_path = if path.is_empty() { "/".to_owned() } else if path.starts_with('?') { format!("/{path}") } else { path.clone() };
            prop_assert_eq!(&out.target, &want_path);
            prop_assert_eq!(out.version, head.version);
            prop_assert_eq!(out.count("host"), 1);
            prop_assert_eq!(out.value("host"), Some(authority.as_bytes()));
            prop_assert_eq!(out.values("connection").collect::<Vec<_>>(), vec![&b"close"[..]]);
            let named: Vec<String> = head
                .values("connection")
                .flat_map(|v| v.split(|&b| b == b','))
                .map(|t| String::from_utf8_lossy(t.trim_ascii()).to_ascii_lowercase())
                .collect();
            let kept: Vec<(String, Vec<u8>)> = out.headers.iter()
                .filter(|h| !h.name.eq_ignore_ascii_case("host") && !h.name.eq_ignore_ascii_case("connection"))
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect();
            for (name, _) in &kept {
                let lower = name.to_ascii_lowercase();
                prop_assert!(!HOP_BY_HOP.contains(&lower.as_str()), "{} forwarded", name);
                prop_assert!(!lower.starts_with("proxy-"), "{} forwarded", name);
                prop_assert!(!named.contains(&lower), "{} is named by Connection", name);
            }
            let expected: Vec<(String, Vec<u8>)> = head.headers.iter()
                .filter(|h| !is_dropped(&h.name, &named.iter().map(|n| n.as_bytes()).collect::<Vec<_>>()))
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect();
            prop_assert_eq!(kept, expected);
        }
    }
}
