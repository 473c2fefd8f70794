//! `/meshproxy/ingress/1`: a gateway asks an agent to carry one upstream HTTP
//! connection to one of the agent's named services; the agent says how that
//! went, then the stream carries raw HTTP/1.1 bytes both ways.
//!
//! ```text
//! public client     gateway                                   agent              service
//!   │── HTTP ──────▶│ route → agent choice                      │                   │
//!   │               │── Open { version, upstream, service,     ▶│ ticket check,     │
//!   │               │         client, scheme, host, port,       │ service → origin, │
//!   │               │         ticket }                          │ allow-list, dial ─▶│
//!   │               │◀─ Answer { status } ──────────────────────│                   │
//!   │               │◀═══ raw HTTP/1.1 bytes, both ways ═══════▶│◀═════ splice ════▶│
//!   │               │     (only after status Ok)                │                   │
//! ```
//!
//! One stream carries one upstream connection: the gateway writes the
//! request head (its header hygiene already applied — hop-by-hop headers
//! stripped, `X-Forwarded-*` and `Forwarded` replaced) and body, possibly
//! further keep-alive requests, or an `Upgrade` that turns into a plain
//! splice. The agent never parses HTTP: after `Ok` it copies bytes between
//! the stream and its origin connection with faithful FIN and reset.
//!
//! # Rules of the conversation
//!
//! 1. The gateway writes exactly one `Open` and then **nothing until it has
//!    read the `Answer`**: no pipelined request bytes. This is what makes a
//!    failure answer safe to retry elsewhere (below).
//! 2. The agent reads one `Open` frame. Bytes behind it before its answer
//!    break rule 1: a protocol error (the agent resets the stream). An `Open`
//!    it cannot decode gets `Answer { status: Failure }` when the error leaves
//!    room for one (another version), otherwise a reset.
//! 3. The agent answers exactly once, after its ticket, service, allow-list
//!    and dial steps. After a failure answer it ends the stream; after `Ok`
//!    the next byte it writes is the origin's.
//! 4. The gateway reads one `Answer` frame; [`Decoded::Complete::consumed`]
//!    marks where the HTTP response starts (an origin may be fast).
//! 5. A stream that ends or resets before its `Answer`, or an answer that
//!    does not arrive within the gateway's deadline (which should exceed the
//!    agent's dial timeout, so a slow origin reads as `Timeout`), counts like
//!    `Failure` — or like `Timeout` for the deadline — and is retryable: the
//!    request never left the gateway.
//!
//! [`Decoded::Complete::consumed`]: super::frame::Decoded::Complete
//!
//! # Byte layout
//!
//! Bodies, integers big-endian; see [`super::frame`] for the length prefix in
//! front:
//!
//! ```text
//! Open      0x01 | version u8 (1) | upstream u64 | service | client | scheme u8 | host | port u16 | ticket
//!   service   len u8 (1..=64) | name [len]                  (charset below)
//!   client    0x01 | IPv4 [4] | port u16
//!           | 0x04 | IPv6 [16] | port u16
//!   scheme    0x00 http | 0x01 https
//!   host      len u8 (0..=255) | host [len]                  (0 = the request had none)
//!   ticket    len u8 (0 = none, ..=MAX_TICKET_LEN) | ticket [len]   (crate::ticket)
//! Answer    0x02 | status u8 (0x00..=0x08, table below)
//! ```
//!
//! Address type codes are SOCKS5's, as in [`super::proxy`]; an IPv6 client
//! address travels without flow info and scope id and decodes with both zero.
//!
//! # Fields of `Open`
//!
//! - `upstream`: the gateway's id for this upstream connection. It means
//!   nothing to the agent, which logs it next to its dial so the two ends'
//!   logs (and the simulator's trace) name the same connection.
//! - `service`: a name from the agent's own service table
//!   ([`ServiceName`]: 1..=[`MAX_SERVICE_LEN`] bytes of `a-z`, `0-9`, `-`,
//!   `_`, `.`, starting with a letter or digit). The gateway never names an
//!   address: the agent maps the name to an origin from its own config and
//!   checks that origin's *resolved* address against its allow-list, so a
//!   compromised or misconfigured gateway can reach nothing the agent's
//!   operator did not list (p2pstream's agent dials whatever address it is
//!   sent). The charset keeps one spelling per service and lets the name go
//!   unescaped into config keys, flags (`--service web=…`), label values,
//!   metrics and logs.
//! - `client`, `scheme`, `host`, `port`: the gateway's view of the public
//!   request that made it open this stream — the client's address (after any
//!   trusted PROXY header), whether it spoke http or https, the host it asked
//!   for as the router normalised it ([`ForwardedHost`]: lowercase, no port, no
//!   trailing dot; 0..=[`MAX_HOST_LEN`] bytes of `a-z`, `0-9`, `-`, `.`, `_`,
//!   `:`, `[`, `]`) and the gateway listener's port. The gateway itself writes
//!   `X-Forwarded-For/-Proto/-Host/-Port` and `Forwarded` from these values
//!   into the HTTP it sends; the copy in `Open` lets the agent, which does not
//!   parse HTTP, log the request, apply client-address policy, or later hand
//!   the origin a PROXY header. The charset has no space, control, comma,
//!   semicolon or quote, so the host goes into a header or a log line as is.
//! - `ticket`: the gateway's hub-signed ticket ([`crate::ticket`]), the same
//!   bytes `ConnectRequest::ticket` carries: an agent checks tickets like an
//!   exit does, before any side effect. Empty means none (an agent that
//!   requires one answers [`AnswerStatus::NotAdmitted`]).
//!
//! # Statuses and what the gateway answers
//!
//! | code | [`AnswerStatus`] | meaning | HTTP | retry elsewhere |
//! |------|------------------|---------|------|-----------------|
//! | 0x00 | `Ok` | origin connected; raw HTTP follows | the origin's | — |
//! | 0x01 | `Refused` | the origin refused the connection | 502 | yes |
//! | 0x02 | `Unreachable` | origin host or network unreachable, or its name does not resolve | 502 | yes |
//! | 0x03 | `Timeout` | the agent's dial to the origin timed out | 504 | yes |
//! | 0x04 | `Forbidden` | the agent's allow-list or policy refuses | 403 | **never** |
//! | 0x05 | `NotAdmitted` | the gateway's ticket is missing, invalid or expired | 502 | yes |
//! | 0x06 | `UnknownService` | the agent has no service of that name | 502 | yes |
//! | 0x07 | `Busy` | the agent is at its limit of open ingress streams | 503 | yes |
//! | 0x08 | `Failure` | anything else: an `Open` the agent cannot read (another version, malformed), an internal error | 502 | yes |
//!
//! **Retry rule.** The gateway may send the request to another agent only
//! while no byte of it reached an agent — and the gateway writes no request
//! byte before it reads an answer, so every failure answer qualifies
//! ([`AnswerStatus::retryable`]), except `Forbidden`: a policy refusal is the
//! answer, and shopping it around the agents until one is laxer would turn
//! the strictest agent's allow-list into the weakest one's. After `Ok` the
//! request's bytes are on their way, so a stream that fails then ends in
//! 502/504 (or a reset if the response had begun), never a replay.
//!
//! `NotAdmitted` is 502, not 403: the refusal is about the gateway, not the
//! public client, and a 403 would blame the client for a mesh configuration
//! fault (and tell caches the resource is off limits). `UnknownService` is
//! 502, not 404: the route chose this agent for the service, so the gateway's
//! and agent's configs disagree (or the agent's registration is stale) — a
//! server-side fault another agent may not share, and a 404 would tell
//! clients and caches that the URL does not exist.
//!
//! # Limits and versions
//!
//! `Open` body ≤ [`MAX_OPEN`] (526 bytes: a 64-byte service, an IPv6
//! client, a 255-byte host and the longest ticket), `Answer` body ≤
//! [`MAX_ANSWER`] (2 bytes); both are checked as soon as the length prefix
//! arrives, before anything is buffered for the body. Only `Open` carries a
//! version: an agent that reads [`DecodeError::UnsupportedVersion`] still
//! answers `Answer { status: Failure }`, which every version agrees on, then
//! closes.

use super::frame::{
    decode_frame, encode_frame, put_short_bytes, DecodeError, DecodeResult, Reader, TypeRule,
};
use crate::target::MAX_DOMAIN_LEN;
use crate::ticket::MAX_TICKET_LEN;
use bytes::Bytes;
use core::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// The libp2p protocol name of ingress streams.
pub const INGRESS_PROTOCOL: &str = "/meshproxy/ingress/1";
/// The version this node writes into, and accepts in, an `Open`.
pub const INGRESS_VERSION: u8 = 1;

const TYPE_OPEN: u8 = 0x01;
const TYPE_ANSWER: u8 = 0x02;

const ATYP_IPV4: u8 = 0x01;
const ATYP_IPV6: u8 = 0x04;

/// The longest service name.
pub const MAX_SERVICE_LEN: usize = 64;
/// The longest forwarded host (a DNS name's wire limit; an IPv6 literal in
/// brackets is at most 41 bytes).
pub const MAX_HOST_LEN: usize = MAX_DOMAIN_LEN;

/// Largest `Open` body: type, version, upstream id, service length and name,
/// address type, IPv6, client port, scheme, host length and host, listener
/// port, ticket length, ticket.
pub const MAX_OPEN: usize =
    1 + 1 + 8 + 1 + MAX_SERVICE_LEN + 1 + 16 + 2 + 1 + 1 + MAX_HOST_LEN + 2 + 1 + MAX_TICKET_LEN;
/// Largest `Answer` body: type, status.
pub const MAX_ANSWER: usize = 1 + 1;

const _: () = assert!(MAX_HOST_LEN <= u8::MAX as usize, "host length travels in one byte");
const _: () = assert!(MAX_OPEN == 526, "the module docs state this figure");

/// Why a string is not a valid [`ServiceName`] or [`ForwardedHost`].
#[derive(thiserror::Error, Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameError {
    /// A service name must have at least one byte.
    #[error("empty name")]
    Empty,
    /// Longer than the field allows.
    #[error("{len} bytes, more than the limit of {max}")]
    TooLong {
        /// The length given.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A byte outside the field's charset (or a service name not starting
    /// with a letter or digit).
    #[error("byte {byte:#04x} at offset {at} is not allowed")]
    BadByte {
        /// The byte.
        byte: u8,
        /// Where it is.
        at: usize,
    },
}

/// A service name: 1..=[`MAX_SERVICE_LEN`] bytes of lowercase ASCII letters,
/// digits, `-`, `_` and `.`, starting with a letter or digit.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct ServiceName(String);

impl ServiceName {
    /// Checks `name` against the charset and length.
    pub fn new(name: &str) -> Result<Self, NameError> {
        let b = name.as_bytes();
        if b.is_empty() {
            return Err(NameError::Empty);
        }
        if b.len() > MAX_SERVICE_LEN {
            return Err(NameError::TooLong { len: b.len(), max: MAX_SERVICE_LEN });
        }
        if let Some(at) = b.iter().enumerate().position(|(i, &c)| !service_byte(i, c)) {
            return Err(NameError::BadByte { byte: b[at], at });
        }
        Ok(ServiceName(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn service_byte(at: usize, c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || (at > 0 && matches!(c, b'-' | b'_' | b'.'))
}

/// The host a public client asked for, as the gateway's router normalised it
/// (lowercase, port and trailing dot stripped): 0..=[`MAX_HOST_LEN`] bytes of
/// lowercase ASCII letters, digits, `-`, `.`, `_`, and `:`, `[`, `]` for IPv6
/// literals. Empty when the request named no host.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct ForwardedHost(String);

impl ForwardedHost {
    /// Checks `host` against the charset and length.
    pub fn new(host: &str) -> Result<Self, NameError> {
        let b = host.as_bytes();
        if b.len() > MAX_HOST_LEN {
            return Err(NameError::TooLong { len: b.len(), max: MAX_HOST_LEN });
        }
        if let Some(at) = b.iter().position(|&c| !host_byte(c)) {
            return Err(NameError::BadByte { byte: b[at], at });
        }
        Ok(ForwardedHost(host.to_owned()))
    }

    /// The host.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ForwardedHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn host_byte(c: u8) -> bool {
    c.is_ascii_lowercase()
        || c.is_ascii_digit()
        || matches!(c, b'-' | b'.' | b'_' | b':' | b'[' | b']')
}

/// The scheme the public client spoke to the gateway.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

impl Scheme {
    /// The name, as `X-Forwarded-Proto` carries it.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// The first message on an ingress stream, gateway → agent.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Open {
    /// The protocol version the gateway speaks; [`INGRESS_VERSION`] unless a
    /// test pretends to be another node.
    pub version: u8,
    /// The gateway's id for this upstream connection, for logs and traces.
    pub upstream: u64,
    /// The agent's service to connect to.
    pub service: ServiceName,
    /// The public client's address, as the gateway sees it.
    pub client: SocketAddr,
    /// The scheme the client spoke.
    pub scheme: Scheme,
    /// The host the client asked for, normalised.
    pub host: ForwardedHost,
    /// The gateway listener's port the client connected to.
    pub port: u16,
    /// The gateway's ticket from a hub (empty: none); at most
    /// [`MAX_TICKET_LEN`] bytes.
    pub ticket: Bytes,
}

/// How the agent's attempt to reach the service ended; codes and HTTP mapping
/// in the module docs.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
#[repr(u8)]
pub enum AnswerStatus {
    /// Connected to the origin: raw HTTP/1.1 bytes follow, both ways.
    Ok = 0x00,
    /// The origin refused the connection.
    Refused = 0x01,
    /// The origin's host or network is unreachable, or its name does not resolve.
    Unreachable = 0x02,
    /// The agent's dial to the origin timed out.
    Timeout = 0x03,
    /// The agent's allow-list or policy refuses: never retried elsewhere.
    Forbidden = 0x04,
    /// The gateway's ticket is missing, invalid or expired.
    NotAdmitted = 0x05,
    /// The agent has no service of that name.
    UnknownService = 0x06,
    /// The agent is at its limit of open ingress streams.
    Busy = 0x07,
    /// Anything else, including an `Open` the agent could not read.
    Failure = 0x08,
}

impl AnswerStatus {
    /// Every status, in code order (for metrics that show each from the start).
    pub const ALL: [AnswerStatus; 9] = [
        AnswerStatus::Ok,
        AnswerStatus::Refused,
        AnswerStatus::Unreachable,
        AnswerStatus::Timeout,
        AnswerStatus::Forbidden,
        AnswerStatus::NotAdmitted,
        AnswerStatus::UnknownService,
        AnswerStatus::Busy,
        AnswerStatus::Failure,
    ];

    /// The wire code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The status of a wire code, `None` for codes this version does not know.
    pub fn from_code(code: u8) -> Option<AnswerStatus> {
        Self::ALL.get(usize::from(code)).copied()
    }

    /// A stable lowercase name, for logs and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            AnswerStatus::Ok => "ok",
            AnswerStatus::Refused => "refused",
            AnswerStatus::Unreachable => "unreachable",
            AnswerStatus::Timeout => "timeout",
            AnswerStatus::Forbidden => "forbidden",
            AnswerStatus::NotAdmitted => "not_admitted",
            AnswerStatus::UnknownService => "unknown_service",
            AnswerStatus::Busy => "busy",
            AnswerStatus::Failure => "failure",
        }
    }

    /// The HTTP status the gateway answers the public client with, `None`
    /// for `Ok` (the origin answers).
    pub fn http_status(self) -> Option<u16> {
        match self {
            AnswerStatus::Ok => None,
            AnswerStatus::Forbidden => Some(403),
            AnswerStatus::Timeout => Some(504),
            AnswerStatus::Busy => Some(503),
            AnswerStatus::Refused
            | AnswerStatus::Unreachable
            | AnswerStatus::NotAdmitted
            | AnswerStatus::UnknownService
            | AnswerStatus::Failure => Some(502),
        }
    }

    /// Whether the gateway may send the request to another agent instead:
    /// true for every failure (no byte of the request has reached the agent
    /// before its answer) except `Forbidden`, a policy decision; false for
    /// `Ok`, after which the request is on its way and is never replayed.
    pub fn retryable(self) -> bool {
        !matches!(self, AnswerStatus::Ok | AnswerStatus::Forbidden)
    }
}

/// The agent's one message, agent → gateway.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Answer {
    /// The outcome.
    pub status: AnswerStatus,
}

/// Appends `open` as one frame.
///
/// A ticket longer than [`MAX_TICKET_LEN`] cannot be encoded; rather than
/// panic or cut it, the encoder then writes a frame the agent rejects as
/// [`DecodeError::Malformed`].
pub fn encode_open(open: &Open, out: &mut Vec<u8>) {
    encode_frame(out, TYPE_OPEN, MAX_OPEN, |out| {
        out.push(open.version);
        out.extend_from_slice(&open.upstream.to_be_bytes());
        put_short_bytes(out, open.service.0.as_bytes(), 1, MAX_SERVICE_LEN, "bad service")?;
        put_socket_addr(out, open.client);
        out.push(match open.scheme {
            Scheme::Http => 0,
            Scheme::Https => 1,
        });
        put_short_bytes(out, open.host.0.as_bytes(), 0, MAX_HOST_LEN, "bad host")?;
        out.extend_from_slice(&open.port.to_be_bytes());
        put_short_bytes(out, &open.ticket, 0, MAX_TICKET_LEN, "bad ticket")
    });
}

/// Decodes an `Open` from the front of `buf`.
///
/// An `Open` of another protocol version fails with
/// [`DecodeError::UnsupportedVersion`] as soon as its version byte arrives.
pub fn decode_open(buf: &[u8]) -> DecodeResult<Open> {
    let rule = |ty| {
        (ty == TYPE_OPEN).then_some(TypeRule { max_body: MAX_OPEN, version: Some(INGRESS_VERSION) })
    };
    decode_frame(buf, MAX_OPEN, rule, |_, r| {
        let version = r.u8("truncated version")?;
        let upstream = r.u64("truncated upstream id")?;
        let service = r.short_bytes(1, MAX_SERVICE_LEN, "bad service length")?;
        let service = ServiceName::new(ascii(service, "bad service name")?)
            .map_err(|_| DecodeError::Malformed("bad service name"))?;
        let client = match r.u8("truncated client address")? {
            ATYP_IPV4 => read_ipv4(r)?,
            ATYP_IPV6 => read_ipv6(r)?,
            _ => return Err(DecodeError::Malformed("bad client address type")),
        };
        let scheme = match r.u8("truncated scheme")? {
            0 => Scheme::Http,
            1 => Scheme::Https,
            _ => return Err(DecodeError::Malformed("unknown scheme")),
        };
        let host = r.short_bytes(0, MAX_HOST_LEN, "bad host length")?;
        let host = ForwardedHost::new(ascii(host, "bad host")?)
            .map_err(|_| DecodeError::Malformed("bad host"))?;
        let port = r.u16("truncated port")?;
        let ticket =
            Bytes::copy_from_slice(r.short_bytes(0, MAX_TICKET_LEN, "bad ticket length")?);
        Ok(Open { version, upstream, service, client, scheme, host, port, ticket })
    })
}

/// Appends `answer` as one frame.
pub fn encode_answer(answer: &Answer, out: &mut Vec<u8>) {
    encode_frame(out, TYPE_ANSWER, MAX_ANSWER, |out| {
        out.push(answer.status.code());
        Ok(())
    });
}

/// Decodes an `Answer` from the front of `buf`.
pub fn decode_answer(buf: &[u8]) -> DecodeResult<Answer> {
    let rule = |ty| (ty == TYPE_ANSWER).then_some(TypeRule { max_body: MAX_ANSWER, version: None });
    decode_frame(buf, MAX_ANSWER, rule, |_, r| {
        let status = AnswerStatus::from_code(r.u8("truncated status")?)
            .ok_or(DecodeError::Malformed("unknown status"))?;
        Ok(Answer { status })
    })
}

/// The bytes as a `&str`, if they are ASCII (both charsets are).
fn ascii<'a>(bytes: &'a [u8], what: &'static str) -> Result<&'a str, DecodeError> {
    match core::str::from_utf8(bytes) {
        Ok(s) if s.is_ascii() => Ok(s),
        _ => Err(DecodeError::Malformed(what)),
    }
}

fn put_socket_addr(out: &mut Vec<u8>, sa: SocketAddr) {
    match sa {
        SocketAddr::V4(v4) => {
            out.push(ATYP_IPV4);
            out.extend_from_slice(&v4.ip().octets());
        }
        SocketAddr::V6(v6) => {
            out.push(ATYP_IPV6);
            out.extend_from_slice(&v6.ip().octets());
        }
    }
    out.extend_from_slice(&sa.port().to_be_bytes());
}

fn read_ipv4(r: &mut Reader<'_>) -> Result<SocketAddr, DecodeError> {
    let ip = Ipv4Addr::from(r.array::<4>("truncated IPv4 address")?);
    let port = r.u16("truncated client port")?;
    Ok(SocketAddr::V4(SocketAddrV4::new(ip, port)))
}

fn read_ipv6(r: &mut Reader<'_>) -> Result<SocketAddr, DecodeError> {
    let ip = Ipv6Addr::from(r.array::<16>("truncated IPv6 address")?);
    let port = r.u16("truncated client port")?;
    Ok(SocketAddr::V6(SocketAddrV6::new(ip, port, 0, 0)))
}

#[cfg(test)]
mod tests {
    use super::super::frame::Decoded;
    use super::*;
    use proptest::prelude::*;

    fn open_bytes(open: &Open) -> Vec<u8> {
        let mut v = Vec::new();
        encode_open(open, &mut v);
        v
    }

    fn answer_bytes(status: AnswerStatus) -> Vec<u8> {
        let mut v = Vec::new();
        encode_answer(&Answer { status }, &mut v);
        v
    }

    fn complete<T>(msg: T, consumed: usize) -> DecodeResult<T> {
        Ok(Decoded::Complete { msg, consumed })
    }

    fn name(s: &str) -> ServiceName {
        ServiceName::new(s).expect("valid service name")
    }

    fn host(s: &str) -> ForwardedHost {
        ForwardedHost::new(s).expect("valid host")
    }

    fn open(service: &str, client: &str) -> Open {
        Open {
            version: INGRESS_VERSION,
            upstream: 7,
            service: name(service),
            client: client.parse().expect("literal"),
            scheme: Scheme::Http,
            host: ForwardedHost::default(),
            port: 80,
            ticket: Bytes::new(),
        }
    }

    /// The largest `Open` there is.
    fn largest_open() -> Open {
        Open {
            version: INGRESS_VERSION,
            upstream: u64::MAX,
            service: name(&"s".repeat(MAX_SERVICE_LEN)),
            client: "[2001:db8::1]:65535".parse().expect("literal"),
            scheme: Scheme::Https,
            host: host(&"h".repeat(MAX_HOST_LEN)),
            port: 443,
            ticket: Bytes::from(vec![0xee; MAX_TICKET_LEN]),
        }
    }

    /// Re-frames `body` with a correct length prefix.
    fn frame(body: &[u8]) -> Vec<u8> {
        let mut v = (body.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    /// An `Open` body up to (not including) the host field, for hand-made frames.
    fn head_v4(service: &[u8]) -> Vec<u8> {
        let mut v = vec![TYPE_OPEN, INGRESS_VERSION, 0, 0, 0, 0, 0, 0, 0, 1];
        v.push(service.len() as u8);
        v.extend_from_slice(service);
        v.extend_from_slice(&[ATYP_IPV4, 192, 0, 2, 9, 0x1f, 0x90, 0]);
        v
    }

    #[test]
    fn open_layout_is_as_documented() {
        let mut msg = open("web", "192.0.2.9:8080");
        msg.upstream = 0x0102_0304_0506_0708;
        msg.scheme = Scheme::Https;
        msg.host = host("app.example");
        msg.port = 443;
        msg.ticket = Bytes::from_static(&[7, 8, 9]);
        let bytes = open_bytes(&msg);
        #[rustfmt::skip]
        let expect = [
            0, 0, 0, 40,                        // body length
            0x01, 1,                            // type Open, version 1
            1, 2, 3, 4, 5, 6, 7, 8,             // upstream id
            3, b'w', b'e', b'b',                // service
            0x01, 192, 0, 2, 9, 0x1f, 0x90,     // client 192.0.2.9:8080
            0x01,                               // https
            11, b'a', b'p', b'p', b'.', b'e', b'x', b'a', b'm', b'p', b'l', b'e',
            0x01, 0xbb,                         // listener port 443
            3, 7, 8, 9,                         // ticket
        ];
        assert_eq!(bytes, expect);
        assert_eq!(decode_open(&bytes), complete(msg, bytes.len()));

        // IPv6 client, no host, no ticket.
        let msg = open("a", "[::1]:1");
        let bytes = open_bytes(&msg);
        let mut expect = vec![0, 0, 0, 36, 0x01, 1, 0, 0, 0, 0, 0, 0, 0, 7, 1, b'a', 0x04];
        expect.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        expect.extend_from_slice(&[0, 1, 0x00, 0, 0, 80, 0]);
        assert_eq!(bytes, expect);
        assert_eq!(decode_open(&bytes), complete(msg, bytes.len()));
    }

    #[test]
    fn answer_layout_is_as_documented() {
        for (status, code, http) in [
            (AnswerStatus::Ok, 0x00, None),
            (AnswerStatus::Refused, 0x01, Some(502)),
            (AnswerStatus::Unreachable, 0x02, Some(502)),
            (AnswerStatus::Timeout, 0x03, Some(504)),
            (AnswerStatus::Forbidden, 0x04, Some(403)),
            (AnswerStatus::NotAdmitted, 0x05, Some(502)),
            (AnswerStatus::UnknownService, 0x06, Some(502)),
            (AnswerStatus::Busy, 0x07, Some(503)),
            (AnswerStatus::Failure, 0x08, Some(502)),
        ] {
            let bytes = answer_bytes(status);
            assert_eq!(bytes, [0, 0, 0, 2, 0x02, code], "{status:?}");
            assert_eq!(decode_answer(&bytes), complete(Answer { status }, 6));
            assert_eq!(status.http_status(), http, "{status:?}");
            assert_eq!(AnswerStatus::from_code(code), Some(status));
        }
        assert_eq!(AnswerStatus::from_code(0x09), None);
        assert_eq!(AnswerStatus::from_code(0xff), None);
    }

    #[test]
    fn retry_rule() {
        let retryable: Vec<_> = AnswerStatus::ALL.into_iter().filter(|s| s.retryable()).collect();
        assert_eq!(
            retryable,
            [
                AnswerStatus::Refused,
                AnswerStatus::Unreachable,
                AnswerStatus::Timeout,
                AnswerStatus::NotAdmitted,
                AnswerStatus::UnknownService,
                AnswerStatus::Busy,
                AnswerStatus::Failure,
            ]
        );
        assert!(!AnswerStatus::Forbidden.retryable(), "a policy refusal is never shopped around");
        assert!(!AnswerStatus::Ok.retryable(), "after Ok the request is on its way: no replay");
        // Every status but Ok has an HTTP answer; names are distinct.
        for s in AnswerStatus::ALL {
            assert_eq!(s.http_status().is_none(), s == AnswerStatus::Ok);
            assert_eq!(AnswerStatus::ALL.iter().filter(|t| t.name() == s.name()).count(), 1);
        }
    }

    #[test]
    fn largest_messages_hit_the_limits_exactly() {
        let msg = largest_open();
        let bytes = open_bytes(&msg);
        assert_eq!(bytes.len(), 4 + MAX_OPEN);
        assert_eq!(decode_open(&bytes), complete(msg, bytes.len()));
        assert_eq!(answer_bytes(AnswerStatus::Failure).len(), 4 + MAX_ANSWER);
    }

    #[test]
    fn one_byte_over_the_limit_is_refused_after_the_prefix() {
        let over = (MAX_OPEN as u32 + 1).to_be_bytes();
        let too_large = Err(DecodeError::TooLarge { len: MAX_OPEN + 1, max: MAX_OPEN });
        assert_eq!(decode_open(&over), too_large);
        // Whatever follows the prefix does not matter: nothing waits for the body.
        let mut bytes = open_bytes(&largest_open());
        bytes[..4].copy_from_slice(&over);
        assert_eq!(decode_open(&bytes), too_large);
        let over = (MAX_ANSWER as u32 + 1).to_be_bytes();
        assert_eq!(
            decode_answer(&over),
            Err(DecodeError::TooLarge { len: MAX_ANSWER + 1, max: MAX_ANSWER })
        );
        for d in [decode_open(&[0xff; 4]).err(), decode_answer(&[0xff; 4]).err()] {
            assert!(
                matches!(d, Some(DecodeError::TooLarge { len, .. }) if len == u32::MAX as usize)
            );
        }
    }

    #[test]
    fn field_limits_one_over_are_malformed() {
        // A 65-byte service.
        let long = vec![b's'; MAX_SERVICE_LEN + 1];
        let mut body = head_v4(&long);
        body.extend_from_slice(&[0, 0, 80, 0]);
        assert_eq!(decode_open(&frame(&body)), Err(DecodeError::Malformed("bad service length")));
        // A ticket one byte longer than any ticket.
        let mut body = head_v4(b"web");
        body.extend_from_slice(&[0, 0, 80, MAX_TICKET_LEN as u8 + 1]);
        body.resize(body.len() + MAX_TICKET_LEN + 1, 0xaa);
        assert_eq!(decode_open(&frame(&body)), Err(DecodeError::Malformed("bad ticket length")));
        // An empty service.
        let mut body = head_v4(b"");
        body.extend_from_slice(&[0, 0, 80, 0]);
        assert_eq!(decode_open(&frame(&body)), Err(DecodeError::Malformed("bad service length")));
    }

    #[test]
    fn names_and_hosts_charsets() {
        for ok in ["web", "a", "0", "my-app_2.v1", &"x".repeat(MAX_SERVICE_LEN)] {
            assert_eq!(ServiceName::new(ok).map(|n| n.to_string()), Ok(ok.to_owned()));
        }
        assert_eq!(ServiceName::new(""), Err(NameError::Empty));
        assert_eq!(
            ServiceName::new(&"x".repeat(MAX_SERVICE_LEN + 1)),
            Err(NameError::TooLong { len: 65, max: 64 })
        );
        for (bad, byte, at) in [
            ("Web", b'W', 0),
            ("-web", b'-', 0),
            ("we b", b' ', 2),
            ("a=b", b'=', 1),
            ("ü", 0xc3, 0),
        ] {
            assert_eq!(ServiceName::new(bad), Err(NameError::BadByte { byte, at }), "{bad}");
        }
        for ok in ["", "app.example.com", "[2001:db8::1]", "_acme.x-y", &"h".repeat(255)] {
            assert_eq!(ForwardedHost::new(ok).map(|h| h.to_string()), Ok(ok.to_owned()));
        }
        for (bad, byte, at) in [
            ("App.example", b'A', 0),
            ("a b", b' ', 1),
            ("a,b", b',', 1),
            ("a\r\nX: y", b'\r', 1),
            ("a\"", b'"', 1),
            ("a;b", b';', 1),
        ] {
            assert_eq!(ForwardedHost::new(bad), Err(NameError::BadByte { byte, at }), "{bad:?}");
        }
        assert_eq!(
            ForwardedHost::new(&"h".repeat(256)),
            Err(NameError::TooLong { len: 256, max: 255 })
        );
        // The decoder holds the wire to the same charsets.
        let mut body = head_v4(b"Web");
        body.extend_from_slice(&[0, 0, 80, 0]);
        assert_eq!(decode_open(&frame(&body)), Err(DecodeError::Malformed("bad service name")));
        let mut body = head_v4(b"web");
        body.extend_from_slice(&[3, b'a', b'\n', b'b', 0, 80, 0]);
        assert_eq!(decode_open(&frame(&body)), Err(DecodeError::Malformed("bad host")));
        let mut body = head_v4(b"web");
        body.extend_from_slice(&[2, 0xc3, 0xbc, 0, 80, 0]);
        assert_eq!(decode_open(&frame(&body)), Err(DecodeError::Malformed("bad host")));
    }

    #[test]
    fn other_versions_are_reported_as_soon_as_the_version_byte_arrives() {
        for v in [0, 2, 0xff] {
            let mut msg = open("web", "192.0.2.1:1");
            msg.version = v;
            let bytes = open_bytes(&msg);
            assert_eq!(decode_open(&bytes[..6]), Err(DecodeError::UnsupportedVersion(v)));
            assert_eq!(decode_open(&bytes), Err(DecodeError::UnsupportedVersion(v)));
        }
        // Past the stream limit the length speaks first; within it, the version.
        let mut big = (MAX_OPEN as u32 + 100).to_be_bytes().to_vec();
        big.extend_from_slice(&[TYPE_OPEN, 2]);
        assert_eq!(
            decode_open(&big),
            Err(DecodeError::TooLarge { len: MAX_OPEN + 100, max: MAX_OPEN })
        );
        let mut later = (MAX_OPEN as u32).to_be_bytes().to_vec();
        later.extend_from_slice(&[TYPE_OPEN, 2]);
        assert_eq!(decode_open(&later), Err(DecodeError::UnsupportedVersion(2)));
    }

    #[test]
    fn unknown_types_statuses_schemes_and_address_types() {
        assert_eq!(decode_open(&frame(&[TYPE_ANSWER, 0])), Err(DecodeError::UnknownType(2)));
        assert_eq!(decode_answer(&frame(&[TYPE_OPEN, 1])), Err(DecodeError::UnknownType(1)));
        assert_eq!(
            decode_answer(&frame(&[TYPE_ANSWER, 0x09])),
            Err(DecodeError::Malformed("unknown status"))
        );
        assert_eq!(
            decode_answer(&frame(&[TYPE_ANSWER])),
            Err(DecodeError::Malformed("truncated status"))
        );
        let mut body = head_v4(b"web");
        body[14] = 0x03; // the client address type, after 10 + 1 + 3 bytes
        assert_eq!(
            decode_open(&frame(&body)),
            Err(DecodeError::Malformed("bad client address type"))
        );
        let mut body = head_v4(b"web");
        *body.last_mut().expect("scheme") = 2;
        body.extend_from_slice(&[0, 0, 80, 0]);
        assert_eq!(decode_open(&frame(&body)), Err(DecodeError::Malformed("unknown scheme")));
    }

    #[test]
    fn trailing_and_short_fields_inside_the_body() {
        assert_eq!(
            decode_answer(&frame(&[TYPE_ANSWER, 0, 0])),
            Err(DecodeError::TooLarge { len: 3, max: 2 })
        );
        let mut bytes = open_bytes(&open("web", "192.0.2.1:1"));
        bytes.push(0xaa);
        let len = bytes.len() as u32 - 4;
        bytes[..4].copy_from_slice(&len.to_be_bytes());
        assert_eq!(decode_open(&bytes), Err(DecodeError::TrailingBytes { extra: 1 }));
        // The body ends inside a field: malformed, not incomplete.
        let body = head_v4(b"web");
        assert_eq!(decode_open(&frame(&body)), Err(DecodeError::Malformed("bad host length")));
        assert_eq!(
            decode_open(&frame(&[TYPE_OPEN, INGRESS_VERSION, 0, 0])),
            Err(DecodeError::Malformed("truncated upstream id"))
        );
    }

    #[test]
    fn oversized_fields_poison_the_frame() {
        let mut msg = open("web", "192.0.2.1:1");
        msg.ticket = Bytes::from(vec![1; MAX_TICKET_LEN + 1]);
        let bytes = open_bytes(&msg);
        assert_eq!(bytes, [0, 0, 0, 1, TYPE_OPEN], "unencodable input poisons the frame");
        assert_eq!(decode_open(&bytes), Err(DecodeError::Malformed("missing version")));
    }

    #[test]
    fn ipv6_scope_is_not_carried() {
        let mut msg = open("web", "[::1]:9");
        msg.client = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 9, 7, 3));
        let bytes = open_bytes(&msg);
        msg.client = "[::1]:9".parse().expect("literal");
        assert_eq!(decode_open(&bytes), complete(msg, bytes.len()));
    }

    #[test]
    fn every_proper_prefix_is_incomplete() {
        let bytes = open_bytes(&largest_open());
        for cut in 0..bytes.len() {
            assert_eq!(decode_open(&bytes[..cut]), Ok(Decoded::Incomplete), "cut {cut}");
        }
        for status in AnswerStatus::ALL {
            let bytes = answer_bytes(status);
            for cut in 0..bytes.len() {
                assert_eq!(decode_answer(&bytes[..cut]), Ok(Decoded::Incomplete), "cut {cut}");
            }
        }
    }

    fn socket_addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>())
                .prop_map(|(ip, port)| SocketAddr::V4(SocketAddrV4::new(ip.into(), port))),
            (any::<[u8; 16]>(), any::<u16>())
                .prop_map(|(ip, port)| SocketAddr::V6(SocketAddrV6::new(ip.into(), port, 0, 0))),
        ]
    }

    fn open_msg() -> impl Strategy<Value = Open> {
        (
            any::<u64>(),
            "[a-z0-9][a-z0-9._-]{0,63}",
            socket_addr(),
            any::<bool>(),
            "[a-z0-9._:\\[\\]-]{0,255}",
            any::<u16>(),
            proptest::collection::vec(any::<u8>(), 0..=MAX_TICKET_LEN),
        )
            .prop_map(|(upstream, service, client, tls, h, port, ticket)| Open {
                version: INGRESS_VERSION,
                upstream,
                service: name(&service),
                client,
                scheme: if tls { Scheme::Https } else { Scheme::Http },
                host: host(&h),
                port,
                ticket: Bytes::from(ticket),
            })
    }

    fn status() -> impl Strategy<Value = AnswerStatus> {
        proptest::sample::select(AnswerStatus::ALL.to_vec())
    }

    proptest! {
        #[test]
        fn opens_round_trip(msg in open_msg(), tail in proptest::collection::vec(any::<u8>(), 0..8)) {
            let mut bytes = open_bytes(&msg);
            let len = bytes.len();
            prop_assert!(len <= 4 + MAX_OPEN);
            bytes.extend_from_slice(&tail);
            prop_assert_eq!(decode_open(&bytes), complete(msg, len));
            for cut in 0..len {
                prop_assert_eq!(decode_open(&bytes[..cut]), Ok(Decoded::Incomplete));
            }
        }

        #[test]
        fn answers_round_trip(status in status(), tail in proptest::collection::vec(any::<u8>(), 0..8)) {
            let mut bytes = answer_bytes(status);
            bytes.extend_from_slice(&tail);
            prop_assert_eq!(decode_answer(&bytes), complete(Answer { status }, 4 + MAX_ANSWER));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(Decoded::Complete { consumed, msg }) = decode_open(&bytes) {
                prop_assert!(consumed <= bytes.len());
                // Whatever decodes re-encodes to exactly the bytes it came from.
                prop_assert_eq!(&open_bytes(&msg)[..], &bytes[..consumed]);
            }
            if let Ok(Decoded::Complete { consumed, msg }) = decode_answer(&bytes) {
                prop_assert!(consumed <= bytes.len());
                prop_assert_eq!(&answer_bytes(msg.status)[..], &bytes[..consumed]);
            }
        }

        #[test]
        fn plausible_frames_decode_canonically(
            ty in 1u8..=2,
            fields in proptest::collection::vec(
                prop_oneof![any::<u8>(), 0u8..4, Just(b'a')], 0..60),
        ) {
            // Valid prefix, type and version, random fields: reaches the field parsers.
            let mut body = vec![ty, INGRESS_VERSION];
            body.extend_from_slice(&fields);
            let bytes = frame(&body);
            if let Ok(Decoded::Complete { consumed, msg }) = decode_open(&bytes) {
                prop_assert_eq!(consumed, bytes.len());
                prop_assert_eq!(open_bytes(&msg), bytes.clone());
            }
            if let Ok(Decoded::Complete { consumed, msg }) = decode_answer(&bytes) {
                prop_assert_eq!(consumed, bytes.len());
                prop_assert_eq!(answer_bytes(msg.status), bytes);
            }
        }

        #[test]
        fn mutated_opens_decode_canonically_or_not_at_all(
            msg in open_msg(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            // One byte of a valid frame changed anywhere (prefix included):
            // either an error, a wait for more, or a message that re-encodes
            // to exactly the bytes it came from.
            let mut bytes = open_bytes(&msg);
            let i = at.index(bytes.len());
            bytes[i] = byte;
            match decode_open(&bytes) {
                Ok(Decoded::Complete { consumed, msg }) => {
                    prop_assert_eq!(consumed, bytes.len());
                    prop_assert_eq!(open_bytes(&msg), bytes);
                }
                Ok(Decoded::Incomplete) => prop_assert!(i < 4, "only a longer length waits"),
                Err(_) => {}
            }
        }

        #[test]
        fn concatenated_frames_decode_in_turn_under_any_chunking(
            opens in proptest::collection::vec(open_msg(), 1..4),
            answers in proptest::collection::vec(status(), 1..4),
            cuts in proptest::collection::vec(1usize..80, 1..40),
        ) {
            for direction in 0..2 {
                let mut stream = Vec::new();
                if direction == 0 {
                    opens.iter().for_each(|o| encode_open(o, &mut stream));
                } else {
                    answers.iter().for_each(|&status| encode_answer(&Answer { status }, &mut stream));
                }
                // Feed the stream in chunks of the drawn sizes, decoding
                // whatever the buffer holds after each, as a reader would.
                let (mut got_opens, mut got_answers) = (Vec::new(), Vec::new());
                let (mut buf, mut fed, mut i) = (Vec::new(), 0, 0);
                while fed < stream.len() {
                    let n = cuts[i % cuts.len()].min(stream.len() - fed);
                    buf.extend_from_slice(&stream[fed..fed + n]);
                    fed += n;
                    i += 1;
                    loop {
                        let consumed = if direction == 0 {
                            match decode_open(&buf) {
                                Ok(Decoded::Complete { msg, consumed }) => { got_opens.push(msg); consumed }
                                Ok(Decoded::Incomplete) => break,
                                Err(e) => { prop_assert!(false, "error {:?}", e); break }
                            }
                        } else {
                            match decode_answer(&buf) {
                                Ok(Decoded::Complete { msg, consumed }) => { got_answers.push(msg.status); consumed }
                                Ok(Decoded::Incomplete) => break,
                                Err(e) => { prop_assert!(false, "error {:?}", e); break }
                            }
                        };
                        buf.drain(..consumed);
                    }
                }
                prop_assert!(buf.is_empty());
                if direction == 0 {
                    prop_assert_eq!(&got_opens, &opens);
                } else {
                    prop_assert_eq!(&got_answers, &answers);
                }
            }
        }
    }
}
