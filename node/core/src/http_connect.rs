//! The HTTP proxy server side of a client listener (CONNECT tunnels and
//! plain forward requests), as a pure machine with the same shape as
//! [`crate::socks::SocksHandshake`]: the driver feeds it what the app wrote
//! and does what [`HttpConnectHandshake::poll`] says.
//!
//! ```text
//! app bytes ──feed──▶ HttpConnectHandshake ──poll──▶ NeedMore     read from the app, feed
//!                                                  ├▶ Request(..)  pick an exit; answer with response(..)
//!                                                  ├▶ Forward(..)  pick an exit; send its head, splice
//!                                                  └▶ Reject{..}   write the response, close
//! ```
//!
//! Two requests are accepted, HTTP/1.0 or HTTP/1.1: `CONNECT host:port` in
//! authority form, and any other method with an absolute `http://` URI,
//! which [`crate::http_forward`] rewrites for the origin. Credentials come from `Proxy-Authorization: Basic`; the username
//! carries [`UserParams`] exactly as a SOCKS5 username does. Everything after
//! the head's blank line is the app's first tunnel payload and is kept whole
//! for [`HttpConnectHandshake::take_leftover`].
//!
//! Basic user-ids cannot contain `:` (RFC 7617), so labels with a colon
//! (`isp:foo`) can only be asked for over SOCKS5.
//!
//! Checks run in this order, so an unauthenticated client learns nothing about
//! how its target would have been judged: request shape (400 unless CONNECT
//! or an absolute-form URI), credentials (407, or 400 for a malformed header
//! under [`HttpAuthPolicy::NoAuth`]), target and, for a forward request, body
//! framing (400), username parameters (400).

use crate::http_forward::{self, ForwardError};
use crate::http_head::{HeadError, HeadLimits, HeadReader, HeadStatus, RequestHead};
use crate::socks::{credentials_match, username_base, UserParams, UserParamsError};
use crate::target::{Status, TargetAddr, MAX_DOMAIN_LEN};
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine};
use bytes::{Bytes, BytesMut};
use core::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

pub use crate::http_head::{MAX_HEAD, MAX_HEADERS};
/// The `Proxy-Authenticate` challenge sent with every 407.
pub const CHALLENGE: &str = "Basic realm=\"meshproxy\"";

/// Base64 as browsers and curl send it; padding is optional because some
/// hand-written clients drop it and it carries no information.
const BASIC_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Who may use an HTTP listener (CONNECT and plain forward requests alike).
#[derive(Clone, PartialEq, Eq)]
pub enum HttpAuthPolicy {
    /// Anyone. `Proxy-Authorization` is optional; if it carries Basic
    /// credentials their username still supplies [`UserParams`].
    NoAuth,
    /// Only these `(username, password)` pairs, matched against the
    /// username's base (see [`UserParams`]) and the password.
    Basic(Vec<(String, String)>),
}

impl fmt::Debug for HttpAuthPolicy {
    /// Lists usernames only: passwords must not reach logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpAuthPolicy::NoAuth => f.write_str("NoAuth"),
            HttpAuthPolicy::Basic(entries) => f
                .debug_tuple("Basic")
                .field(&entries.iter().map(|(u, _)| u.as_str()).collect::<Vec<_>>())
                .finish(),
        }
    }
}

/// What the driver must do next for one HTTP CONNECT app connection.
#[derive(Clone, PartialEq, Eq, Debug)]
#[must_use]
pub enum HttpAction {
    /// Wait for the app to send more, then [`HttpConnectHandshake::feed`] it.
    NeedMore,
    /// The request is complete: connect to the target, then answer the app
    /// with [`response`]. Pipelined payload waits in
    /// [`HttpConnectHandshake::take_leftover`].
    Request(HttpConnectRequest),
    /// A plain request for an origin (absolute form): connect to the
    /// target, send [`HttpForwardRequest::head`] then the leftover, splice.
    /// No answer of ours precedes the origin's response.
    Forward(HttpForwardRequest),
    /// The request is refused: write `response`, then close.
    Reject {
        /// The HTTP response that tells the app why.
        response: Vec<u8>,
        /// Why, for logs and metrics.
        error: HttpConnectError,
    },
}

/// A completed CONNECT request.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct HttpConnectRequest {
    /// Where the app wants to go.
    pub target: TargetAddr,
    /// The Basic username as sent, if the app sent a non-empty one.
    pub username: Option<String>,
    /// The parameters carried in the username (defaults when there is none).
    pub params: UserParams,
}

/// A completed absolute-form request, rewritten for the origin.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct HttpForwardRequest {
    /// The origin (port 80 unless the URI names one).
    pub target: TargetAddr,
    /// The Basic username as sent, if the app sent a non-empty one.
    pub username: Option<String>,
    /// The parameters carried in the username (defaults when there is none).
    pub params: UserParams,
    /// The origin-form head, hop-by-hop fields removed (see
    /// [`crate::http_forward`]).
    pub head: Vec<u8>,
}

/// Why an HTTP proxy request was refused.
#[derive(thiserror::Error, Clone, PartialEq, Eq, Debug)]
pub enum HttpConnectError {
    /// The head is refused as such (see [`crate::http_head`]): larger than
    /// [`MAX_HEAD`] bytes or [`MAX_HEADERS`] fields (431), not HTTP/1.x
    /// syntax, e.g. a SOCKS client at the port, or another version (400).
    #[error(transparent)]
    Head(#[from] HeadError),
    /// Neither CONNECT nor an absolute-form URI, e.g. `GET /` sent to the
    /// proxy as if it were the origin (400).
    #[error(
        "not a proxy request: {method} {target:?} (send CONNECT host:port, or an absolute http:// URI)"
    )]
    NotAProxyRequest {
        /// The method as sent.
        method: String,
        /// The request-target as sent, cut to a short length.
        target: String,
    },
    /// An absolute-form request that cannot be forwarded (400).
    #[error(transparent)]
    Forward(#[from] ForwardError),
    /// The request-target is not `host:port` in authority form (400).
    #[error("bad CONNECT target {target:?}: {problem}")]
    BadTarget {
        /// The request-target as sent.
        target: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The listener requires credentials and none in the Basic scheme came (407).
    #[error("proxy authentication required")]
    AuthRequired,
    /// The Basic credentials match no entry of the listener's policy (407).
    #[error("wrong username or password")]
    BadCredentials,
    /// `Proxy-Authorization` is repeated or its Basic credentials do not
    /// decode (407 when credentials are required, else 400).
    #[error("malformed Proxy-Authorization: {problem}")]
    MalformedAuthorization {
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The username's parameters do not parse (400).
    #[error("bad username parameters: {0}")]
    BadUserParams(#[from] UserParamsError),
    /// Input or a poll after the handshake already ended in a request or a
    /// rejection: a driver bug.
    #[error("the handshake already ended")]
    AlreadyFinished,
}

/// The answer to a CONNECT request once the exit reported `status`.
pub fn response(status: Status) -> Vec<u8> {
    let code = match status {
        Status::Succeeded => return b"HTTP/1.1 200 Connection established\r\n\r\n".to_vec(),
        Status::NotAllowed => 403,
        Status::TtlExpired => 504,
        Status::CommandNotSupported => 501,
        Status::GeneralFailure
        | Status::NetworkUnreachable
        | Status::HostUnreachable
        | Status::ConnectionRefused
        | Status::AddressTypeNotSupported => 502,
    };
    error_response(code, &[], &status.to_string())
}

/// A complete error response that closes the connection; `body` becomes its
/// text/plain body.
fn error_response(code: u16, extra_headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let reason = match code {
        400 => "Bad Request",
        403 => "Forbidden",
        407 => "Proxy Authentication Required",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        504 => "Gateway Timeout",
        _ => "Error",
    };
    let mut out = format!("HTTP/1.1 {code} {reason}\r\n");
    for (name, value) in extra_headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!(
        "Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}\n",
        body.len() + 1
    ));
    out.into_bytes()
}

/// A rejection: the response to send, and why.
type Failure = (Vec<u8>, HttpConnectError);

/// A rejection with status `code`, the error's text as body.
fn fail(code: u16, error: HttpConnectError) -> Failure {
    let extra: &[(&str, &str)] = match code {
        407 => &[("Proxy-Authenticate", CHALLENGE)],
        _ => &[],
    };
    (error_response(code, extra, &error.to_string()), error)
}

/// The HTTP CONNECT handshake of one app connection. Cheap to create: the
/// policy is shared by all connections of a listener.
#[derive(Debug)]
pub struct HttpConnectHandshake {
    policy: Arc<HttpAuthPolicy>,
    /// The head so far; at most [`MAX_HEAD`] bytes.
    head: HeadReader,
    /// The request or rejection, until polled.
    outcome: Option<HttpAction>,
    ended: bool,
    /// Bytes the app sent past the head.
    leftover: BytesMut,
}

impl HttpConnectHandshake {
    /// A handshake for a new app connection on a listener with `policy`.
    pub fn new(policy: Arc<HttpAuthPolicy>) -> Self {
        HttpConnectHandshake {
            policy,
            head: HeadReader::new(HeadLimits::default()),
            outcome: None,
            ended: false,
            leftover: BytesMut::new(),
        }
    }

    /// Takes bytes the app sent and judges the head once it is complete; the
    /// driver then polls. Bytes past the head go to the leftover, whatever
    /// their amount. An oversized head is not an error here: it is answered
    /// with 431 through `poll`.
    ///
    /// # Errors
    /// [`HttpConnectError::AlreadyFinished`] once a request or rejection was
    /// produced (the input is not taken).
    pub fn feed(&mut self, data: &[u8]) -> Result<(), HttpConnectError> {
        if self.ended {
            return Err(HttpConnectError::AlreadyFinished);
        }
        let judged = match self.head.feed(data) {
            Ok(HeadStatus::Incomplete) => return Ok(()),
            Ok(HeadStatus::Complete { head, rest }) => {
                let judged = judge_head(&head, &self.policy);
                if judged.is_ok() {
                    self.leftover = rest;
                }
                judged
            }
            Err(e) => Err(refuse_head(e)),
        };
        match judged {
            Ok(action) => self.end(action),
            Err((response, error)) => self.end(HttpAction::Reject { response, error }),
        }
        Ok(())
    }

    /// The next thing to do: [`HttpAction::NeedMore`] until the head is
    /// judged, then the request or rejection once; polling after that yields
    /// `Reject` with [`HttpConnectError::AlreadyFinished`].
    pub fn poll(&mut self) -> HttpAction {
        match self.outcome.take() {
            Some(action) => action,
            None if self.ended => HttpAction::Reject {
                response: Vec::new(),
                error: HttpConnectError::AlreadyFinished,
            },
            None => HttpAction::NeedMore,
        }
    }

    /// The bytes the app sent past its request head, for the driver to
    /// forward before anything it reads later. Empty before the request and
    /// after the first call.
    pub fn take_leftover(&mut self) -> Bytes {
        core::mem::take(&mut self.leftover).freeze()
    }

    /// How many bytes of the unfinished head are held.
    pub fn buffered(&self) -> usize {
        self.head.buffered()
    }

    fn end(&mut self, action: HttpAction) {
        self.ended = true;
        self.outcome = Some(action);
    }
}

/// The answer to a head refused before it could be judged. CONNECT clients
/// get 400 for every syntax problem, another version included (a 505 would
/// tell a SOCKS client at the wrong port nothing more).
fn refuse_head(e: HeadError) -> Failure {
    let code = match e.status() {
        431 => 431,
        _ => 400,
    };
    fail(code, e.into())
}

/// Judges a complete head: the request ([`HttpAction::Request`] or
/// [`HttpAction::Forward`]), or the rejection.
fn judge_head(head: &RequestHead, policy: &HttpAuthPolicy) -> Result<HttpAction, Failure> {
    let forward = head.method != "CONNECT";
    if forward && !http_forward::is_absolute_form(&head.target) {
        let method = head.method.clone();
        let target = head.target.chars().take(100).collect();
        return Err(fail(400, HttpConnectError::NotAProxyRequest { method, target }));
    }
    let username = authenticate(policy, head)?;
    let params = |username: &Option<String>| match username {
        Some(name) => UserParams::parse(name).map_err(|e| fail(400, e.into())),
        None => Ok(UserParams::default()),
    };
    if forward {
        let rewritten = http_forward::rewrite(head).map_err(|e| fail(400, e.into()))?;
        let params = params(&username)?;
        return Ok(HttpAction::Forward(HttpForwardRequest {
            target: rewritten.target,
            username,
            params,
            head: rewritten.head,
        }));
    }
    let raw_target = head.target.as_str();
    let target = parse_authority(raw_target).map_err(|problem| {
        fail(400, HttpConnectError::BadTarget { target: raw_target.to_owned(), problem })
    })?;
    let params = params(&username)?;
    Ok(HttpAction::Request(HttpConnectRequest { target, username, params }))
}

/// Checks `Proxy-Authorization` against the policy; the username it carried,
/// if non-empty.
fn authenticate(policy: &HttpAuthPolicy, head: &RequestHead) -> Result<Option<String>, Failure> {
    let value = head.value("proxy-authorization");
    let repeated = head.count("proxy-authorization") > 1;
    let non_empty = |user: String| (!user.is_empty()).then_some(user);
    match policy {
        HttpAuthPolicy::NoAuth => {
            let malformed =
                |problem| fail(400, HttpConnectError::MalformedAuthorization { problem });
            if repeated {
                return Err(malformed("header repeated"));
            }
            match value.map(basic_credentials).transpose().map_err(malformed)?.flatten() {
                Some((user, _)) => Ok(non_empty(user)),
                // Absent, or a scheme we do not read: nothing to learn from it.
                None => Ok(None),
            }
        }
        HttpAuthPolicy::Basic(entries) => {
            let malformed =
                |problem| fail(407, HttpConnectError::MalformedAuthorization { problem });
            if repeated {
                return Err(malformed("header repeated"));
            }
            let Some(value) = value else {
                return Err(fail(407, HttpConnectError::AuthRequired));
            };
            match basic_credentials(value).map_err(malformed)? {
                Some((user, pass)) if credentials_match(entries, username_base(&user), &pass) => {
                    Ok(non_empty(user))
                }
                Some(_) => Err(fail(407, HttpConnectError::BadCredentials)),
                None => Err(fail(407, HttpConnectError::AuthRequired)),
            }
        }
    }
}

/// The `(username, password)` of a Basic `Proxy-Authorization` value;
/// `Ok(None)` for another scheme.
fn basic_credentials(value: &[u8]) -> Result<Option<(String, Vec<u8>)>, &'static str> {
    let mut parts = value.trim_ascii().splitn(2, |b| b.is_ascii_whitespace());
    let scheme = parts.next().unwrap_or_default();
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return Ok(None);
    }
    let encoded = parts.next().unwrap_or_default().trim_ascii();
    let decoded = BASIC_BASE64.decode(encoded).map_err(|_| "credentials are not base64")?;
    let colon = decoded
        .iter()
        .position(|&b| b == b':')
        .ok_or("credentials lack the ':' between username and password")?;
    let user = decoded.get(..colon).unwrap_or_default();
    let pass = decoded.get(colon + 1..).unwrap_or_default();
    let user = String::from_utf8(user.to_vec()).map_err(|_| "username is not UTF-8")?;
    Ok(Some((user, pass.to_vec())))
}

/// Parses an authority-form request-target: `host:port` or `[ipv6]:port`.
fn parse_authority(s: &str) -> Result<TargetAddr, &'static str> {
    if let Some(rest) = s.strip_prefix('[') {
        let (literal, after) = rest.split_once(']').ok_or("unclosed '['")?;
        let port = after.strip_prefix(':').ok_or("missing port")?;
        let ip: Ipv6Addr = literal.parse().map_err(|_| "invalid IPv6 literal")?;
        return Ok(TargetAddr::Ip(SocketAddr::new(IpAddr::V6(ip), parse_port(port)?)));
    }
    let (host, port) = s.rsplit_once(':').ok_or("missing port")?;
    if host.is_empty() {
        return Err("empty host");
    }
    if host.len() > MAX_DOMAIN_LEN {
        return Err("host longer than 255 bytes");
    }
    // DNS names and IPv4 literals need no more; anything else (userinfo,
    // paths, bare IPv6) is a client mistake or an attempt to confuse.
    if !host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')) {
        return Err("invalid character in host (IPv6 literals go in brackets)");
    }
    let port = parse_port(port)?;
    Ok(match host.parse::<Ipv4Addr>() {
        Ok(ip) => TargetAddr::Ip(SocketAddr::new(IpAddr::V4(ip), port)),
        Err(_) => TargetAddr::Domain(host.to_owned(), port),
    })
}

/// A port number: digits only, 1 to 65535.
pub(crate) fn parse_port(s: &str) -> Result<u16, &'static str> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err("port is not a number");
    }
    match s.parse::<u16>() {
        Ok(0) => Err("port 0"),
        Ok(port) => Ok(port),
        Err(_) => Err("port above 65535"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::CountryCode;
    use crate::socks::tests::user_params_strategy;
    use proptest::prelude::*;

    fn no_auth() -> HttpConnectHandshake {
        HttpConnectHandshake::new(Arc::new(HttpAuthPolicy::NoAuth))
    }

    fn basic() -> HttpConnectHandshake {
        HttpConnectHandshake::new(Arc::new(HttpAuthPolicy::Basic(vec![
            ("alice".into(), "secret".into()),
            ("bob".into(), "pa:ss".into()),
        ])))
    }

    fn auth_header(user: &str, pass: &str) -> String {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        format!("Proxy-Authorization: Basic {token}\r\n")
    }

    fn connect(target: &str, headers: &str) -> Vec<u8> {
        format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{headers}\r\n").into_bytes()
    }

    /// What a driver saw: the final action and the input it never had to
    /// feed because the handshake had ended.
    struct Run {
        end: Option<HttpAction>,
        unfed: Vec<u8>,
        max_buffered: usize,
    }

    fn drive(hs: &mut HttpConnectHandshake, chunks: &[&[u8]]) -> Run {
        let mut run = Run { end: None, unfed: Vec::new(), max_buffered: 0 };
        for chunk in chunks {
            if run.end.is_some() {
                run.unfed.extend_from_slice(chunk);
                continue;
            }
            if let Err(e) = hs.feed(chunk) {
                panic!("feed refused input before the end: {e}");
            }
            run.max_buffered = run.max_buffered.max(hs.buffered());
            match hs.poll() {
                HttpAction::NeedMore => {}
                end => run.end = Some(end),
            }
        }
        run
    }

    fn run_all(hs: &mut HttpConnectHandshake, input: &[u8]) -> Run {
        drive(hs, &[input])
    }

    fn request_of(run: &Run) -> &HttpConnectRequest {
        match &run.end {
            Some(HttpAction::Request(r)) => r,
            Some(HttpAction::Reject { response, error }) => {
                panic!("rejected ({error}): {}", String::from_utf8_lossy(response))
            }
            other => panic!("expected a request, got {:?}", other),
        }
    }

    /// The rejection's status code, full response text and error.
    fn reject_of(run: &Run) -> (u16, String, &HttpConnectError) {
        match &run.end {
            Some(HttpAction::Reject { response, error }) => {
                let text = String::from_utf8_lossy(response).into_owned();
                let code = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
                (code, text, error)
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    /// Checks a response is well-formed: Content-Length matches the body.
    fn assert_well_formed(text: &str) {
        let (head, body) = text.split_once("\r\n\r\n").expect("response has a head");
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .map(|n| n.parse::<usize>().expect("numeric length"));
        assert_eq!(length, Some(body.len()), "{text}");
        assert!(head.contains("\r\nConnection: close"), "{text}");
    }

    #[test]
    fn connect_domain_ipv4_ipv6() {
        for (raw, want) in [
            ("example.com:443", TargetAddr::Domain("example.com".into(), 443)),
            ("EXAMPLE.com:80", TargetAddr::Domain("EXAMPLE.com".into(), 80)),
            ("192.0.2.1:8080", TargetAddr::Ip("192.0.2.1:8080".parse().expect("valid in test"))),
            (
                "[2001:db8::1]:443",
                TargetAddr::Ip("[2001:db8::1]:443".parse().expect("valid in test")),
            ),
            ("[::1]:65535", TargetAddr::Ip("[::1]:65535".parse().expect("valid in test"))),
        ] {
            let mut hs = no_auth();
            let run = run_all(&mut hs, &connect(raw, ""));
            let req = request_of(&run);
            assert_eq!(req.target, want);
            assert_eq!(req.username, None);
            assert_eq!(req.params, UserParams::default());
        }
    }

    #[test]
    fn http_1_0_is_accepted() {
        let mut hs = no_auth();
        let run = run_all(&mut hs, b"CONNECT example.com:443 HTTP/1.0\r\n\r\n");
        assert_eq!(request_of(&run).target, TargetAddr::Domain("example.com".into(), 443));
    }

    #[test]
    fn requests_that_are_not_for_a_proxy_get_400() {
        for line in
            ["GET / HTTP/1.1", "POST /x HTTP/1.1", "connect a:1 HTTP/1.1", "OPTIONS * HTTP/1.1"]
        {
            let mut hs = basic();
            let run = run_all(&mut hs, format!("{line}\r\n\r\n").as_bytes());
            let (code, text, error) = reject_of(&run);
            assert_eq!(code, 400, "{line}");
            assert!(text.contains("not a proxy request"), "{text}");
            assert!(matches!(error, HttpConnectError::NotAProxyRequest { .. }));
            assert_well_formed(&text);
        }
    }

    #[test]
    fn bad_targets_get_400() {
        let long = format!("{}:80", "a".repeat(256));
        for raw in [
            "example.com",
            "example.com:",
            "example.com:0",
            "example.com:65536",
            "example.com:+80",
            "example.com:http",
            ":443",
            "[::1]",
            "[::1]443",
            "[::1:443",
            "[1.2.3.4]:80",
            "::1:443",
            "user@example.com:443",
            "http://example.com:80",
            "example.com/x:80",
            &long,
        ] {
            let mut hs = no_auth();
            let run = run_all(&mut hs, &connect(raw, ""));
            let (code, text, error) = reject_of(&run);
            assert_eq!(code, 400, "{raw}");
            assert!(matches!(error, HttpConnectError::BadTarget { .. }), "{raw}: {error}");
            assert_well_formed(&text);
        }
        let max = format!("{}:80", "a".repeat(255));
        let run = run_all(&mut no_auth(), &connect(&max, ""));
        assert_eq!(request_of(&run).target.port(), 80);
    }

    #[test]
    fn malformed_heads_get_400() {
        for input in [&b"\x05\x01\x00"[..], b"CONNECT a:1 HTTP/2.0\r\n\r\n", b"CONNECT  \r\n\r\n"] {
            let mut hs = no_auth();
            let run = run_all(&mut hs, input);
            let (code, _, error) = reject_of(&run);
            assert_eq!(code, 400);
            assert!(matches!(error, HttpConnectError::Head(_)), "{error}");
        }
    }

    #[test]
    fn oversized_head_gets_431() {
        let mut hs = no_auth();
        let input = format!("CONNECT a:1 HTTP/1.1\r\nX-Pad: {}\r\n\r\n", "p".repeat(MAX_HEAD));
        let run = drive(&mut hs, &input.as_bytes().chunks(1000).collect::<Vec<_>>());
        assert!(run.max_buffered <= MAX_HEAD);
        let (code, text, error) = reject_of(&run);
        assert_eq!(
            (code, error),
            (431, &HttpConnectError::Head(HeadError::TooLarge { limit: MAX_HEAD }))
        );
        assert_well_formed(&text);
    }

    #[test]
    fn head_of_exactly_max_size_is_accepted() {
        let start = "CONNECT a:1 HTTP/1.1\r\nX-Pad: ";
        let pad = "p".repeat(MAX_HEAD - start.len() - 4);
        let input = format!("{start}{pad}\r\n\r\npayload");
        let mut hs = no_auth();
        let run = run_all(&mut hs, input.as_bytes());
        request_of(&run);
        assert_eq!(hs.take_leftover(), &b"payload"[..]);
    }

    #[test]
    fn too_many_headers_get_431() {
        let headers: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        let mut hs = no_auth();
        let run = run_all(&mut hs, &connect("a:1", &headers));
        assert_eq!(
            reject_of(&run).2,
            &HttpConnectError::Head(HeadError::TooManyHeaders { limit: MAX_HEADERS })
        );
        assert_eq!(reject_of(&run).0, 431);
    }

    #[test]
    fn basic_auth_success_carries_params() {
        for (user, pass) in [("alice-session-abc-country-fr", "secret"), ("bob", "pa:ss")] {
            let mut hs = basic();
            let run = run_all(&mut hs, &connect("example.com:443", &auth_header(user, pass)));
            let req = request_of(&run);
            assert_eq!(req.username.as_deref(), Some(user));
            assert_eq!(req.params, UserParams::parse(user).expect("valid in test"));
        }
        let run =
            run_all(&mut basic(), &connect("a:1", &auth_header("alice-country-fr", "secret")));
        assert_eq!(request_of(&run).params.country, CountryCode::parse("FR"));
    }

    #[test]
    fn basic_auth_failures_get_407() {
        let lower = format!("proxy-authorization: basic {}\r\n", "YWxpY2U6c2VjcmV0");
        let cases: Vec<(String, HttpConnectError)> = vec![
            (String::new(), HttpConnectError::AuthRequired),
            (auth_header("alice", "wrong"), HttpConnectError::BadCredentials),
            (auth_header("carol", "secret"), HttpConnectError::BadCredentials),
            (auth_header("", ""), HttpConnectError::BadCredentials),
            ("Proxy-Authorization: Bearer abc\r\n".into(), HttpConnectError::AuthRequired),
            (
                "Proxy-Authorization: Basic !!!\r\n".into(),
                HttpConnectError::MalformedAuthorization { problem: "credentials are not base64" },
            ),
            (
                format!("{}{}", auth_header("alice", "secret"), auth_header("alice", "secret")),
                HttpConnectError::MalformedAuthorization { problem: "header repeated" },
            ),
        ];
        for (headers, want) in cases {
            let mut hs = basic();
            let run = run_all(&mut hs, &connect("example.com:443", &headers));
            let (code, text, error) = reject_of(&run);
            assert_eq!((code, error), (407, &want), "{headers}");
            assert!(text.contains("\r\nProxy-Authenticate: Basic realm=\"meshproxy\"\r\n"));
            assert_well_formed(&text);
        }
        // Lower-case header name and scheme, unpadded base64 are all fine.
        let run = run_all(&mut basic(), &connect("a:1", &lower));
        assert_eq!(request_of(&run).username.as_deref(), Some("alice"));
        let token = base64::engine::general_purpose::STANDARD_NO_PAD.encode("bob-label-a:pa:ss");
        let unpadded = format!("Proxy-Authorization: Basic {token}\r\n");
        let run = run_all(&mut basic(), &connect("a:1", &unpadded));
        assert_eq!(request_of(&run).username.as_deref(), Some("bob-label-a"));
    }

    #[test]
    fn basic_user_id_ends_at_the_first_colon() {
        // RFC 7617 user-ids cannot hold ':', so a label such as `isp:x` cannot
        // travel in a Basic username: the rest reads as the password.
        let run = run_all(&mut no_auth(), &connect("a:1", &auth_header("u-label-isp:x", "")));
        assert_eq!(request_of(&run).username.as_deref(), Some("u-label-isp"));
    }

    #[test]
    fn auth_is_checked_before_the_target() {
        let run = run_all(&mut basic(), &connect("no-port", ""));
        assert_eq!(reject_of(&run).0, 407);
    }

    #[test]
    fn no_auth_reads_optional_credentials() {
        let mut hs = no_auth();
        let run = run_all(&mut hs, &connect("a:1", &auth_header("x-session-s_1-label-dc", "")));
        let req = request_of(&run);
        assert_eq!(req.username.as_deref(), Some("x-session-s_1-label-dc"));
        assert_eq!(req.params.session.as_deref(), Some("s_1"));
        assert_eq!(req.params.labels, ["dc"]);
        let run = run_all(&mut no_auth(), &connect("a:1", "Proxy-Authorization: Bearer t\r\n"));
        assert_eq!(request_of(&run).username, None);
        let run = run_all(&mut no_auth(), &connect("a:1", &auth_header("", "pw")));
        assert_eq!(request_of(&run).username, None);
    }

    #[test]
    fn no_auth_rejects_malformed_credentials_with_400() {
        let run =
            run_all(&mut no_auth(), &connect("a:1", "Proxy-Authorization: Basic bm9jb2xvbg==\r\n"));
        let (code, _, error) = reject_of(&run);
        assert_eq!(code, 400);
        assert!(matches!(error, HttpConnectError::MalformedAuthorization { .. }));
    }

    #[test]
    fn bad_params_get_400_naming_the_problem() {
        for mut hs in [no_auth(), basic()] {
            let run =
                run_all(&mut hs, &connect("a:1", &auth_header("alice-country-xyz", "secret")));
            let (code, text, error) = reject_of(&run);
            assert_eq!(code, 400);
            assert!(matches!(error, HttpConnectError::BadUserParams(_)));
            assert!(text.contains("\"country\""), "{text}");
            assert!(text.contains("\"xyz\""), "{text}");
            assert_well_formed(&text);
        }
    }

    #[test]
    fn pipelined_payload_is_leftover_and_later_input_is_refused() {
        let mut hs = no_auth();
        let payload = vec![0x16u8; 20_000];
        let mut input = connect("example.com:443", "");
        input.extend_from_slice(&payload);
        let run = run_all(&mut hs, &input);
        assert!(run.max_buffered <= MAX_HEAD);
        request_of(&run);
        assert_eq!(hs.take_leftover(), payload);
        assert!(hs.take_leftover().is_empty());
        assert_eq!(hs.feed(b"x"), Err(HttpConnectError::AlreadyFinished));
        assert!(matches!(
            hs.poll(),
            HttpAction::Reject { error: HttpConnectError::AlreadyFinished, .. }
        ));
    }

    #[test]
    fn one_byte_at_a_time() {
        let mut hs = basic();
        let mut input = connect("[::1]:443", &auth_header("alice-label-fast", "secret"));
        input.extend_from_slice(b"\x16\x03\x01");
        let run = drive(&mut hs, &input.chunks(1).collect::<Vec<_>>());
        let req = request_of(&run);
        assert_eq!(req.target, TargetAddr::Ip("[::1]:443".parse().expect("valid in test")));
        assert_eq!(req.params.labels, ["fast"]);
        let mut rest = hs.take_leftover().to_vec();
        rest.extend_from_slice(&run.unfed);
        assert_eq!(rest, b"\x16\x03\x01");
    }

    #[test]
    fn responses_by_status() {
        assert_eq!(response(Status::Succeeded), b"HTTP/1.1 200 Connection established\r\n\r\n");
        for (status, code) in [
            (Status::NotAllowed, 403),
            (Status::TtlExpired, 504),
            (Status::HostUnreachable, 502),
            (Status::NetworkUnreachable, 502),
            (Status::ConnectionRefused, 502),
            (Status::GeneralFailure, 502),
            (Status::AddressTypeNotSupported, 502),
            (Status::CommandNotSupported, 501),
        ] {
            let text = String::from_utf8(response(status)).expect("valid in test");
            assert!(text.starts_with(&format!("HTTP/1.1 {code} ")), "{text}");
            assert!(text.contains("Content-Type: text/plain"));
            assert!(text.ends_with(&format!("{status}\n")));
            assert_well_formed(&text);
        }
    }

    #[test]
    fn policy_debug_hides_passwords() {
        let shown = format!("{:?}", HttpAuthPolicy::Basic(vec![("u".into(), "pw".into())]));
        assert!(shown.contains("\"u\""));
        assert!(!shown.contains("pw"));
    }

    fn split<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        cuts.sort_unstable();
        let mut out = Vec::new();
        let mut from = 0;
        for c in cuts {
            out.push(&data[from..c]);
            from = c;
        }
        out.push(&data[from..]);
        out
    }

    fn target_strategy() -> impl Strategy<Value = (String, TargetAddr)> {
        prop_oneof![
            (any::<[u8; 4]>(), 1..=u16::MAX).prop_map(|(ip, port)| {
                let sa = SocketAddr::new(Ipv4Addr::from(ip).into(), port);
                (sa.to_string(), TargetAddr::Ip(sa))
            }),
            (any::<[u8; 16]>(), 1..=u16::MAX).prop_map(|(ip, port)| {
                let sa = SocketAddr::new(Ipv6Addr::from(ip).into(), port);
                (sa.to_string(), TargetAddr::Ip(sa))
            }),
            ("[a-zA-Z][a-zA-Z0-9_-]{0,20}(\\.[a-z][a-z0-9-]{0,20}){0,3}", 1..=u16::MAX)
                .prop_map(|(d, port)| (format!("{d}:{port}"), TargetAddr::Domain(d, port))),
            ("[a-z]{255}", 1..=u16::MAX)
                .prop_map(|(d, port)| (format!("{d}:{port}"), TargetAddr::Domain(d, port))),
        ]
    }

    fn extra_headers() -> impl Strategy<Value = Vec<(String, String)>> {
        proptest::collection::vec(("X-[A-Za-z0-9-]{1,15}", "[!-~]([ -~]{0,38}[!-~])?"), 0..8)
    }

    /// Valid parameters a Basic user-id can carry: no ':' in labels.
    fn basic_user_params() -> impl Strategy<Value = UserParams> {
        user_params_strategy(crate::record::MAX_LABELS).prop_map(|mut p| {
            for label in &mut p.labels {
                *label = label.replace(':', ".");
            }
            p
        })
    }

    proptest! {
        #[test]
        fn arbitrary_input_stays_bounded(
            input in proptest::collection::vec(any::<u8>(), 0..10_000),
            prefix in prop_oneof![
                Just(&b""[..]),
                Just(&b"CONNECT "[..]),
                Just(&b"CONNECT a:1 HTTP/1.1\r\n"[..]),
                Just(&b"CONNECT a:1 HTTP/1.1\r\nProxy-Authorization: Basic "[..]),
            ],
            cuts in proptest::collection::vec(any::<usize>(), 0..16),
            strict in any::<bool>(),
        ) {
            let mut hs = if strict { basic() } else { no_auth() };
            let data = [prefix, &input[..]].concat();
            let mut ended = false;
            for chunk in split(&data, &cuts) {
                let fed = hs.feed(chunk);
                prop_assert!(hs.buffered() <= MAX_HEAD);
                if ended {
                    prop_assert_eq!(fed, Err(HttpConnectError::AlreadyFinished));
                    continue;
                }
                prop_assert!(fed.is_ok());
                match hs.poll() {
                    HttpAction::NeedMore => {}
                    HttpAction::Request(_) | HttpAction::Forward(_) => ended = true,
                    HttpAction::Reject { response, .. } => {
                        prop_assert!(response.starts_with(b"HTTP/1.1 4"));
                        ended = true;
                    }
                }
            }
        }

        #[test]
        fn valid_requests_survive_any_split(
            (raw_target, target) in target_strategy(),
            minor in 0u8..=1,
            creds in proptest::option::of((basic_user_params(), "[ -~]{0,40}")),
            strict in any::<bool>(),
            headers in extra_headers(),
            payload in proptest::collection::vec(any::<u8>(), 0..3000),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            let strict = strict && creds.is_some();
            let mut head = format!("CONNECT {raw_target} HTTP/1.{minor}\r\n");
            for (name, value) in &headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            let (policy, username, params) = match &creds {
                Some((params, pass)) => {
                    let username = params.to_string();
                    head.push_str(&auth_header(&username, pass));
                    let policy = if strict {
                        HttpAuthPolicy::Basic(vec![(params.base.clone(), pass.clone())])
                    } else {
                        HttpAuthPolicy::NoAuth
                    };
                    (policy, (!username.is_empty()).then_some(username), params.clone())
                }
                None => (HttpAuthPolicy::NoAuth, None, UserParams::default()),
            };
            head.push_str("\r\n");
            let input = [head.as_bytes(), &payload].concat();
            let mut hs = HttpConnectHandshake::new(Arc::new(policy));
            let run = drive(&mut hs, &split(&input, &cuts));
            prop_assert!(run.max_buffered <= MAX_HEAD);
            let want = HttpConnectRequest { target, username, params };
            prop_assert_eq!(run.end, Some(HttpAction::Request(want)));
            let mut rest = hs.take_leftover().to_vec();
            rest.extend_from_slice(&run.unfed);
            prop_assert_eq!(rest, payload);
        }
    }
}
