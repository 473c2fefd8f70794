//! The SOCKS4 and SOCKS4a server side of a client listener, as a pure
//! machine beside the SOCKS5 one ([`crate::socks`]), with the same shape:
//! the driver feeds whatever the app wrote, polls, and does what it is told.
//!
//! ```text
//! app bytes ──feed──▶ Socks4Handshake ──poll──▶ NeedMore      read from the app, feed
//!                                             ├▶ Request(..)   pick an exit; answer with reply(..)
//!                                             └▶ Reject{..}    write the reply, close
//! ```
//!
//! The request is one message (no greeting, no reply before the answer):
//! `VN=4 CD DSTPORT(2) DSTIP(4) USERID… NUL`, and for SOCKS4a, when DSTIP is
//! `0.0.0.x` with `x ≠ 0`, `DOMAIN… NUL` after the user id. The answer is
//! 8 bytes, `VN=0 CD DSTPORT DSTIP`, with CD `0x5A` (granted) or `0x5B`
//! (rejected or failed) — SOCKS4 has one failure code, so every failure the
//! client knows (no exit, not admitted, denied by policy, unreachable,
//! refused, timed out) is `0x5B`; the client's events still carry the precise
//! [`Status`], so metrics by reason are the same as for SOCKS5.
//!
//! Bounds: the user id and the domain are each at most 255 bytes
//! ([`MAX_USER_ID`], [`MAX_DOMAIN_LEN`]), so a request is at most
//! [`MAX_REQUEST`] bytes and the machine never holds more. A user id or
//! domain that runs past its bound without its NUL is refused (`0x5B`) as
//! soon as the bound is passed, without waiting for a terminator that may
//! never come. Every decision depends only on the bytes, never on how they
//! were split: a prefix that is refused is refused whatever follows it.
//!
//! Choices:
//! - **No authentication exists in SOCKS4**, so a listener that requires
//!   SOCKS5 username/password ([`SocksAuthPolicy::UserPass`]) refuses every
//!   SOCKS4 request with `0x5B`: authentication cannot be bypassed by
//!   speaking the older protocol. The user id is never taken as a password.
//! - **The user id carries session parameters** like a SOCKS5 username
//!   ([`UserParams`], e.g. `alice-session-42-country-de`) when it parses as
//!   them. Many SOCKS4 clients send the OS login name by default (`root`,
//!   `john-doe`), so a user id that does not parse is ignored (default
//!   parameters) — unless one of its `-`-separated parts after the first is a
//!   parameter key (`session`, `country`, `label`): then the app meant
//!   parameters and got them wrong, and the request is refused rather than
//!   silently served without its country or session. A user id that is not
//!   UTF-8 is ignored.
//! - BIND (`CD=2`) and unknown commands are refused with `0x5B`, once the
//!   whole request has arrived (so the app reads the reply rather than a
//!   reset caused by unread input).
//! - A SOCKS4a domain that spells an IP literal becomes [`TargetAddr::Ip`];
//!   an empty or non-UTF-8 domain and port 0 are refused.
//! - Plain SOCKS4 with DSTIP `0.0.0.0` is passed on as that address, like a
//!   SOCKS5 request for it: the exit's policy decides.

use crate::socks::{SocksAuthPolicy, UserParams, UserParamsError};
use crate::target::{Status, TargetAddr, MAX_DOMAIN_LEN};
use bytes::{Bytes, BytesMut};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

/// The version byte of a SOCKS4 request (the first byte the app sends).
pub const VERSION: u8 = 0x04;
/// The longest user id accepted, without its NUL.
pub const MAX_USER_ID: usize = 255;
/// The largest request: the 8-byte header, a user id and a SOCKS4a domain,
/// each with its NUL. The machine never buffers more.
pub const MAX_REQUEST: usize = HEADER + MAX_USER_ID + 1 + MAX_DOMAIN_LEN + 1;

const HEADER: usize = 8;
const CMD_CONNECT: u8 = 0x01;
const REPLY_VERSION: u8 = 0x00;
/// CD of a granted request.
pub const GRANTED: u8 = 0x5A;
/// CD of a rejected or failed request.
pub const REJECTED: u8 = 0x5B;

/// What the driver must do next for one SOCKS4 app connection.
#[derive(Clone, PartialEq, Eq, Debug)]
#[must_use]
pub enum Socks4Action {
    /// Wait for the app to send more, then [`Socks4Handshake::feed`] it.
    NeedMore,
    /// The request is complete: connect to the target, then answer the app
    /// with [`reply`]. Pipelined payload waits in
    /// [`Socks4Handshake::take_leftover`].
    Request(Socks4Request),
    /// The request is refused: write `reply` (possibly empty), then close.
    Reject {
        /// The bytes that tell the app (an 8-byte `0x5B` reply, or nothing
        /// for a client that is not speaking SOCKS4).
        reply: Vec<u8>,
        /// Why, for logs and metrics.
        error: Socks4Error,
    },
}

/// A completed SOCKS4 or SOCKS4a CONNECT request.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Socks4Request {
    /// Where the app wants to go.
    pub target: TargetAddr,
    /// The user id as sent, if it is non-empty UTF-8.
    pub user_id: Option<String>,
    /// The parameters the user id carries (defaults when it carries none or
    /// was ignored).
    pub params: UserParams,
}

/// Why a SOCKS4 request was refused.
#[derive(thiserror::Error, Clone, PartialEq, Eq, Debug)]
pub enum Socks4Error {
    /// The first byte is not 4. Answered with nothing.
    #[error("not a SOCKS4 client (version byte {version:#04x})")]
    NotSocks4 {
        /// The version byte the client sent.
        version: u8,
    },
    /// The user id runs past [`MAX_USER_ID`] bytes without its NUL.
    #[error("user id longer than {MAX_USER_ID} bytes")]
    UserIdTooLong,
    /// The SOCKS4a domain runs past [`MAX_DOMAIN_LEN`] bytes without its NUL.
    #[error("domain longer than {MAX_DOMAIN_LEN} bytes")]
    DomainTooLong,
    /// BIND or an unknown command: only CONNECT is carried.
    #[error("unsupported command {command:#04x}")]
    UnsupportedCommand {
        /// The command byte the client sent.
        command: u8,
    },
    /// The listener requires SOCKS5 username/password authentication, which
    /// SOCKS4 cannot provide.
    #[error("the listener requires authentication, which SOCKS4 cannot provide")]
    AuthRequired,
    /// A SOCKS4a domain of length zero.
    #[error("empty domain name")]
    EmptyDomain,
    /// A SOCKS4a domain that is not UTF-8.
    #[error("domain name is not UTF-8")]
    DomainNotUtf8,
    /// Destination port 0, which nothing can be connected to.
    #[error("destination port 0")]
    ZeroPort,
    /// The user id names parameters that do not parse.
    #[error("bad user id parameters: {0}")]
    BadUserParams(#[from] UserParamsError),
    /// Input or a poll after the handshake already ended: a driver bug.
    #[error("the handshake already ended")]
    AlreadyFinished,
}

/// The 8-byte SOCKS4 reply: `0x5A` for [`Status::Succeeded`], `0x5B` for
/// every failure. DSTPORT and DSTIP are zero: clients ignore them for CONNECT.
pub fn reply(status: Status) -> Vec<u8> {
    let code = if status == Status::Succeeded { GRANTED } else { REJECTED };
    vec![REPLY_VERSION, code, 0, 0, 0, 0, 0, 0]
}

/// Where a handshake is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stage {
    /// Waiting for the rest of the request.
    Request,
    /// The request or rejection was produced; `poll` has not returned it yet.
    Ended,
    /// The end was returned; only the leftover remains to be taken.
    Done,
}

/// The SOCKS4/4a handshake of one app connection. Cheap to create: the
/// policy is shared by all connections of a listener.
#[derive(Debug)]
pub struct Socks4Handshake {
    policy: Arc<SocksAuthPolicy>,
    stage: Stage,
    /// The request so far; at most [`MAX_REQUEST`] bytes.
    input: Vec<u8>,
    /// The request or rejection, once known.
    end: Option<Socks4Action>,
    /// Bytes the app sent past its request.
    leftover: BytesMut,
}

impl Socks4Handshake {
    /// A handshake for a new app connection on a listener with `policy`.
    pub fn new(policy: Arc<SocksAuthPolicy>) -> Self {
        Socks4Handshake {
            policy,
            stage: Stage::Request,
            input: Vec::new(),
            end: None,
            leftover: BytesMut::new(),
        }
    }

    /// Takes bytes the app sent and advances as far as they allow; the driver
    /// then polls. Bytes past a complete request go to the leftover, whatever
    /// their amount; bytes past a refused one are dropped.
    ///
    /// # Errors
    /// [`Socks4Error::AlreadyFinished`] once a request or rejection was
    /// produced (the input is not taken).
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), Socks4Error> {
        if self.stage != Stage::Request {
            return Err(Socks4Error::AlreadyFinished);
        }
        // Taken in slices no larger than the buffer's free room: a prefix of
        // MAX_REQUEST bytes is always decided, so the buffer stays bounded.
        while !data.is_empty() {
            let room = MAX_REQUEST.saturating_sub(self.input.len());
            let (now, later) = data.split_at(room.min(data.len()));
            self.input.extend_from_slice(now);
            data = later;
            match parse(&self.input) {
                Parsed::Incomplete if room > 0 => {}
                // Unreachable by MAX_REQUEST's construction; refused, not
                // buffered, if it ever were.
                Parsed::Incomplete => self.finish(Err(Socks4Error::UserIdTooLong)),
                Parsed::Done(len, outcome) => {
                    let outcome = outcome.and_then(|raw| self.decide(raw));
                    if outcome.is_ok() {
                        self.leftover.extend_from_slice(self.input.get(len..).unwrap_or_default());
                        self.leftover.extend_from_slice(data);
                    }
                    self.finish(outcome);
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The next thing to do: [`Socks4Action::NeedMore`] until the request is
    /// whole, then the request or the rejection once; polling after that
    /// yields `Reject` with [`Socks4Error::AlreadyFinished`].
    pub fn poll(&mut self) -> Socks4Action {
        match self.stage {
            Stage::Request => Socks4Action::NeedMore,
            Stage::Ended => {
                self.stage = Stage::Done;
                self.end.take().unwrap_or(Socks4Action::NeedMore)
            }
            Stage::Done => {
                Socks4Action::Reject { reply: Vec::new(), error: Socks4Error::AlreadyFinished }
            }
        }
    }

    /// The bytes the app sent past its request (optimistic payload), for the
    /// driver to forward first. Empty before the request and after the first
    /// call.
    pub fn take_leftover(&mut self) -> Bytes {
        core::mem::take(&mut self.leftover).freeze()
    }

    /// How many bytes of unfinished request are held.
    pub fn buffered(&self) -> usize {
        self.input.len()
    }

    fn finish(&mut self, outcome: Result<Socks4Request, Socks4Error>) {
        self.stage = Stage::Ended;
        self.input = Vec::new();
        self.end = Some(match outcome {
            Ok(request) => Socks4Action::Request(request),
            Err(error) => {
                let reply = match error {
                    Socks4Error::NotSocks4 { .. } => Vec::new(),
                    _ => reply(Status::GeneralFailure),
                };
                Socks4Action::Reject { reply, error }
            }
        });
    }

    /// The checks on a whole request, in a fixed order.
    fn decide(&self, raw: Raw<'_>) -> Result<Socks4Request, Socks4Error> {
        if raw.command != CMD_CONNECT {
            return Err(Socks4Error::UnsupportedCommand { command: raw.command });
        }
        if matches!(*self.policy, SocksAuthPolicy::UserPass(_)) {
            return Err(Socks4Error::AuthRequired);
        }
        if raw.port == 0 {
            return Err(Socks4Error::ZeroPort);
        }
        let target = match raw.domain {
            None => TargetAddr::Ip(SocketAddr::new(IpAddr::V4(raw.ip), raw.port)),
            Some([]) => return Err(Socks4Error::EmptyDomain),
            Some(name) => {
                let name = core::str::from_utf8(name).map_err(|_| Socks4Error::DomainNotUtf8)?;
                match name.parse::<IpAddr>() {
                    Ok(ip) => TargetAddr::Ip(SocketAddr::new(ip, raw.port)),
                    Err(_) => TargetAddr::Domain(name.to_owned(), raw.port),
                }
            }
        };
        let user_id = core::str::from_utf8(raw.user_id).ok().filter(|u| !u.is_empty());
        let params = match user_id.map(user_id_params) {
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(params)) => params,
            None => UserParams::default(),
        };
        Ok(Socks4Request { target, user_id: user_id.map(str::to_owned), params })
    }
}

/// The parameters a user id carries: parsed as a SOCKS5 username; ignored
/// (defaults) when it does not parse and names no parameter key.
///
/// # Errors
/// The parse error, when a part after the first is a parameter key.
pub fn user_id_params(user_id: &str) -> Result<UserParams, UserParamsError> {
    UserParams::parse(user_id).or_else(|e| {
        let names_a_key =
            user_id.split('-').skip(1).any(|p| matches!(p, "session" | "country" | "label"));
        if names_a_key {
            Err(e)
        } else {
            Ok(UserParams::default())
        }
    })
}

/// A whole request as it lies in the buffer.
struct Raw<'a> {
    command: u8,
    port: u16,
    ip: Ipv4Addr,
    user_id: &'a [u8],
    /// The SOCKS4a domain, when DSTIP is `0.0.0.x` with `x ≠ 0`.
    domain: Option<&'a [u8]>,
}

/// What a prefix of the input decides.
enum Parsed<'a> {
    /// Not yet whole, and nothing wrong so far.
    Incomplete,
    /// Whole (`len` bytes) or refused.
    Done(usize, Result<Raw<'a>, Socks4Error>),
}

/// Parses a request; refusals that a longer input could not undo come as
/// soon as the prefix shows them.
fn parse(b: &[u8]) -> Parsed<'_> {
    let refuse = |e| Parsed::Done(0, Err(e));
    let Some(&version) = b.first() else { return Parsed::Incomplete };
    if version != VERSION {
        return refuse(Socks4Error::NotSocks4 { version });
    }
    let Some(&[_, command, p0, p1, a, b2, c, d]) = b.get(..HEADER) else {
        return Parsed::Incomplete;
    };
    let ip = Ipv4Addr::new(a, b2, c, d);
    let (user_id, user_end) = match nul_terminated(b, HEADER, MAX_USER_ID) {
        Field::Incomplete => return Parsed::Incomplete,
        Field::TooLong => return refuse(Socks4Error::UserIdTooLong),
        Field::Found(s, end) => (s, end),
    };
    let socks4a = a == 0 && b2 == 0 && c == 0 && d != 0;
    let (domain, len) = if socks4a {
        match nul_terminated(b, user_end, MAX_DOMAIN_LEN) {
            Field::Incomplete => return Parsed::Incomplete,
            Field::TooLong => return refuse(Socks4Error::DomainTooLong),
            Field::Found(s, end) => (Some(s), end),
        }
    } else {
        (None, user_end)
    };
    let port = u16::from_be_bytes([p0, p1]);
    Parsed::Done(len, Ok(Raw { command, port, ip, user_id, domain }))
}

/// A NUL-terminated field starting at `start`.
enum Field<'a> {
    Incomplete,
    TooLong,
    /// The field (without its NUL) and the index just past the NUL.
    Found(&'a [u8], usize),
}

fn nul_terminated(b: &[u8], start: usize, max: usize) -> Field<'_> {
    let window = b.get(start..).unwrap_or_default();
    let window = window.get(..window.len().min(max + 1)).unwrap_or_default();
    match window.iter().position(|&x| x == 0) {
        Some(n) => Field::Found(window.get(..n).unwrap_or_default(), start + n + 1),
        None if window.len() > max => Field::TooLong,
        None => Field::Incomplete,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::socks::tests::user_params_strategy;
    use proptest::prelude::*;

    fn open() -> Socks4Handshake {
        Socks4Handshake::new(Arc::new(SocksAuthPolicy::NoAuth))
    }

    fn strict() -> Socks4Handshake {
        Socks4Handshake::new(Arc::new(SocksAuthPolicy::UserPass(vec![(
            "alice".into(),
            "secret".into(),
        )])))
    }

    /// A request: SOCKS4 for an IPv4 target, SOCKS4a (`0.0.0.1`) for a domain.
    fn request(command: u8, target: &TargetAddr, user_id: &[u8]) -> Vec<u8> {
        let mut m = vec![VERSION, command];
        m.extend_from_slice(&target.port().to_be_bytes());
        match target {
            TargetAddr::Ip(SocketAddr::V4(a)) => m.extend_from_slice(&a.ip().octets()),
            _ => m.extend_from_slice(&[0, 0, 0, 1]),
        }
        m.extend_from_slice(user_id);
        m.push(0);
        if let TargetAddr::Domain(d, _) = target {
            m.extend_from_slice(d.as_bytes());
            m.push(0);
        }
        m
    }

    fn connect(target: &TargetAddr, user_id: &str) -> Vec<u8> {
        request(CMD_CONNECT, target, user_id.as_bytes())
    }

    fn ip(a: [u8; 4], port: u16) -> TargetAddr {
        TargetAddr::Ip(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), port))
    }

    fn domain(d: &str, port: u16) -> TargetAddr {
        TargetAddr::Domain(d.into(), port)
    }

    /// Feeds `chunks` like a driver: poll after each feed, stop at the end.
    /// Returns the end (if any), the unfed input and the most ever buffered.
    fn drive(hs: &mut Socks4Handshake, chunks: &[&[u8]]) -> (Option<Socks4Action>, Vec<u8>, usize) {
        let (mut end, mut unfed, mut max) = (None, Vec::new(), 0);
        for chunk in chunks {
            if end.is_some() {
                unfed.extend_from_slice(chunk);
                continue;
            }
            assert_eq!(hs.feed(chunk), Ok(()));
            max = max.max(hs.buffered());
            match hs.poll() {
                Socks4Action::NeedMore => {}
                other => end = Some(other),
            }
        }
        (end, unfed, max)
    }

    fn run(hs: &mut Socks4Handshake, input: &[u8]) -> Option<Socks4Action> {
        drive(hs, &[input]).0
    }

    fn refused(error: Socks4Error) -> Option<Socks4Action> {
        Some(Socks4Action::Reject { reply: vec![0, REJECTED, 0, 0, 0, 0, 0, 0], error })
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

    #[test]
    fn replies_are_eight_bytes_granted_or_rejected() {
        assert_eq!(reply(Status::Succeeded), [0, 0x5A, 0, 0, 0, 0, 0, 0]);
        for status in [
            Status::GeneralFailure,
            Status::NotAllowed,
            Status::NetworkUnreachable,
            Status::HostUnreachable,
            Status::ConnectionRefused,
            Status::TtlExpired,
            Status::CommandNotSupported,
            Status::AddressTypeNotSupported,
        ] {
            assert_eq!(reply(status), [0, 0x5B, 0, 0, 0, 0, 0, 0], "{status}");
        }
    }

    #[test]
    fn socks4_connect_to_an_ip_with_pipelined_payload() {
        let mut hs = open();
        let target = ip([93, 184, 216, 34], 80);
        let mut input = connect(&target, "");
        input.extend_from_slice(b"GET / HTTP/1.0\r\n");
        let want = Socks4Request { target, user_id: None, params: UserParams::default() };
        assert_eq!(run(&mut hs, &input), Some(Socks4Action::Request(want)));
        assert_eq!(&hs.take_leftover()[..], b"GET / HTTP/1.0\r\n");
        assert!(hs.take_leftover().is_empty(), "taken once");
        assert_eq!(hs.feed(b"x"), Err(Socks4Error::AlreadyFinished));
        assert!(matches!(
            hs.poll(),
            Socks4Action::Reject { error: Socks4Error::AlreadyFinished, .. }
        ));
    }

    #[test]
    fn socks4a_connect_to_a_domain_and_to_an_ip_literal() {
        let mut hs = open();
        let target = domain("example.com", 443);
        let got = run(&mut hs, &connect(&target, "nobody"));
        let want = Socks4Request {
            target,
            user_id: Some("nobody".into()),
            params: UserParams::parse("nobody").unwrap(),
        };
        assert_eq!(got, Some(Socks4Action::Request(want)));

        let mut hs = open();
        let got = run(&mut hs, &connect(&domain("10.1.2.3", 22), ""));
        let Some(Socks4Action::Request(r)) = got else { panic!("{got:?}") };
        assert_eq!(r.target, ip([10, 1, 2, 3], 22), "an IP literal is an IP target");
    }

    #[test]
    fn user_id_carries_params_or_is_ignored() {
        let mut hs = open();
        let got = run(&mut hs, &connect(&ip([1, 2, 3, 4], 80), "alice-session-42-country-de"));
        let Some(Socks4Action::Request(r)) = got else { panic!("{got:?}") };
        assert_eq!(r.params.session.as_deref(), Some("42"));
        assert_eq!(r.params.country.map(|c| c.to_string()), Some("DE".into()));
        assert_eq!(r.user_id.as_deref(), Some("alice-session-42-country-de"));

        // A login name that is not params is ignored.
        for login in ["john-doe", "root", "a--b"] {
            let mut hs = open();
            let got = run(&mut hs, &connect(&ip([1, 2, 3, 4], 80), login));
            let Some(Socks4Action::Request(r)) = got else { panic!("{login}: {got:?}") };
            assert_eq!(r.params.session, None);
            assert_eq!(r.params.country, None);
        }
        // Not UTF-8: ignored too.
        let mut hs = open();
        let got = run(&mut hs, &request(CMD_CONNECT, &ip([1, 2, 3, 4], 80), b"\xC3\x28"));
        let Some(Socks4Action::Request(r)) = got else { panic!("{got:?}") };
        assert_eq!((r.user_id, r.params), (None, UserParams::default()));

        // Params meant but malformed: refused, never served without them.
        for bad in ["alice-country-deu", "alice-session-", "alice-country-de-foo-session-1"] {
            let mut hs = open();
            let got = run(&mut hs, &connect(&ip([1, 2, 3, 4], 80), bad));
            assert!(
                matches!(&got, Some(Socks4Action::Reject { reply, error: Socks4Error::BadUserParams(_) }) if reply[1] == REJECTED),
                "{bad}: {got:?}"
            );
        }
    }

    #[test]
    fn bind_and_unknown_commands_are_refused_once_whole() {
        for command in [2u8, 0, 3, 0xFF] {
            let mut hs = open();
            let input = request(command, &domain("example.com", 80), b"u");
            let (end, ..) = drive(&mut hs, &[&input[..input.len() - 1]]);
            assert_eq!(end, None, "no answer before the request is whole");
            assert_eq!(hs.feed(&input[input.len() - 1..]), Ok(()));
            assert_eq!(Some(hs.poll()), refused(Socks4Error::UnsupportedCommand { command }));
        }
    }

    #[test]
    fn auth_required_listener_refuses_socks4() {
        for user in ["", "alice", "alice-secret", "secret"] {
            let mut hs = strict();
            let got = run(&mut hs, &connect(&ip([1, 2, 3, 4], 80), user));
            assert_eq!(got, refused(Socks4Error::AuthRequired), "{user}");
            assert!(hs.take_leftover().is_empty());
        }
    }

    #[test]
    fn malformed_requests_are_refused() {
        let mut hs = open();
        assert_eq!(
            run(&mut hs, &connect(&ip([1, 2, 3, 4], 0), "")),
            refused(Socks4Error::ZeroPort)
        );
        let mut hs = open();
        let empty = [VERSION, 1, 0, 80, 0, 0, 0, 7, 0, 0];
        assert_eq!(run(&mut hs, &empty), refused(Socks4Error::EmptyDomain));
        let mut hs = open();
        let bad = [VERSION, 1, 0, 80, 0, 0, 0, 7, 0, 0xC3, 0x28, 0];
        assert_eq!(run(&mut hs, &bad), refused(Socks4Error::DomainNotUtf8));
        for first in [&b"\x05\x01\x00"[..], b"GET / HTTP/1.1", b"\x00"] {
            let mut hs = open();
            let want = Socks4Action::Reject {
                reply: Vec::new(),
                error: Socks4Error::NotSocks4 { version: first[0] },
            };
            assert_eq!(run(&mut hs, first), Some(want));
        }
    }

    #[test]
    fn absurd_user_ids_and_domains_are_refused_at_the_bound() {
        // A user id of exactly MAX_USER_ID bytes is fine.
        let mut hs = open();
        let longest = "u".repeat(MAX_USER_ID);
        assert!(matches!(
            run(&mut hs, &connect(&ip([1, 2, 3, 4], 80), &longest)),
            Some(Socks4Action::Request(_))
        ));
        // One more byte without a NUL: refused as soon as it arrives.
        let mut hs = open();
        let mut input = vec![VERSION, 1, 0, 80, 1, 2, 3, 4];
        input.extend(std::iter::repeat_n(b'u', MAX_USER_ID));
        assert_eq!(run(&mut hs, &input), None);
        assert_eq!(hs.feed(b"u"), Ok(()));
        assert_eq!(Some(hs.poll()), refused(Socks4Error::UserIdTooLong));

        // An endless user id streamed in: refused, never buffered past the bound.
        let mut hs = open();
        let mut max = 0;
        assert_eq!(hs.feed(&[VERSION, 1, 0, 80, 1, 2, 3, 4]), Ok(()));
        for _ in 0..1000 {
            if hs.feed(&[b'x'; 64]).is_err() {
                break;
            }
            max = max.max(hs.buffered());
            if let Socks4Action::Reject { error, .. } = hs.poll() {
                assert_eq!(error, Socks4Error::UserIdTooLong);
                break;
            }
        }
        assert!(max <= MAX_REQUEST, "{max}");
        assert_eq!(hs.buffered(), 0);

        let mut hs = open();
        let mut input = vec![VERSION, 1, 0, 80, 0, 0, 0, 1, b'u', 0];
        input.extend(std::iter::repeat_n(b'd', MAX_DOMAIN_LEN + 1));
        assert_eq!(run(&mut hs, &input), refused(Socks4Error::DomainTooLong));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_stay_bounded(
            body in proptest::collection::vec(any::<u8>(), 0..1200),
            socks4 in any::<bool>(),
            cuts in proptest::collection::vec(any::<usize>(), 0..16),
            auth in any::<bool>(),
        ) {
            let data = if socks4 { [&[VERSION][..], &body].concat() } else { body };
            let mut hs = if auth { strict() } else { open() };
            let (end, unfed, max) = drive(&mut hs, &split(&data, &cuts));
            prop_assert!(max <= MAX_REQUEST);
            // Any split of the same bytes ends the same way.
            let mut whole = if auth { strict() } else { open() };
            prop_assert_eq!(&run(&mut whole, &data), &end);
            match &end {
                Some(Socks4Action::Request(_)) => {
                    prop_assert!(!auth, "an auth-required listener never serves SOCKS4");
                    let mut rest = hs.take_leftover().to_vec();
                    rest.extend_from_slice(&unfed);
                    prop_assert_eq!(rest, whole.take_leftover().to_vec());
                }
                Some(Socks4Action::Reject { reply, .. }) => {
                    prop_assert!(reply.is_empty() || reply == &[0, REJECTED, 0, 0, 0, 0, 0, 0]);
                }
                Some(Socks4Action::NeedMore) => prop_assert!(false, "NeedMore is not an end"),
                None => prop_assert!(data.len() < MAX_REQUEST, "a whole bound's worth is decided"),
            }
        }

        #[test]
        fn valid_requests_survive_any_split(
            target in prop_oneof![
                (any::<[u8; 4]>().prop_filter("not 0.0.0.x", |a| a[..3] != [0, 0, 0]), 1..=u16::MAX)
                    .prop_map(|(a, port)| ip(a, port)),
                ("[a-z][a-z0-9-]{0,20}(\\.[a-z][a-z0-9-]{0,20}){0,3}", 1..=u16::MAX)
                    .prop_map(|(d, port)| domain(&d, port)),
                ("[a-z]{255}", 1..=u16::MAX).prop_map(|(d, port)| domain(&d, port)),
            ],
            params in proptest::option::of(user_params_strategy(4)),
            payload in proptest::collection::vec(any::<u8>(), 0..3000),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            let user_id = params.as_ref().map(ToString::to_string).unwrap_or_default();
            let mut input = connect(&target, &user_id);
            input.extend_from_slice(&payload);
            let mut hs = open();
            let (end, unfed, max) = drive(&mut hs, &split(&input, &cuts));
            prop_assert!(max <= MAX_REQUEST);
            let want = Socks4Request {
                target,
                user_id: (!user_id.is_empty()).then_some(user_id),
                params: params.unwrap_or_default(),
            };
            prop_assert_eq!(end, Some(Socks4Action::Request(want)));
            let mut rest = hs.take_leftover().to_vec();
            rest.extend_from_slice(&unfed);
            prop_assert_eq!(rest, payload);
        }
    }
}
