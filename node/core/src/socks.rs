//! The SOCKS5 server side of a client listener (RFC 1928, with RFC 1929
//! username/password authentication), as a pure machine: the driver feeds it
//! whatever the app wrote and then does exactly what [`SocksHandshake::poll`]
//! says, until the handshake ends in a CONNECT request or a rejection.
//!
//! ```text
//! app bytes ──feed──▶ SocksHandshake ──poll──▶ Send(bytes)   write to the app, poll again
//!                                            ├▶ NeedMore      read from the app, feed
//!                                            ├▶ Request(..)   pick an exit; answer with reply(..)
//!                                            └▶ Reject{..}    write the reply, close
//! ```
//!
//! The machine parses eagerly inside `feed`: an app that pipelines its
//! greeting, credentials, request and first payload bytes in one write gets the
//! same answers, in the same order, as one that waits for each reply. Payload
//! past the request is kept whole for [`SocksHandshake::take_leftover`], however
//! large, while the handshake buffer itself never holds more than
//! [`MAX_BUFFERED`] bytes.
//!
//! Choices where the RFCs leave room or real clients stray from them:
//! - Under [`SocksAuthPolicy::NoAuth`] a client that offers USERNAME/PASSWORD
//!   gets it, even if it also offers NO AUTH: accepting costs nothing, and it is
//!   how parameters in the username (sticky session, country, labels) reach us
//!   from clients such as curl that offer both whenever a user is configured.
//! - Empty usernames and passwords are accepted although RFC 1929 says
//!   1..=255 bytes: curl sends a zero-length password for `user@host`, and
//!   sticky-session parameters are commonly passed that way.
//! - The request's RSV byte is ignored: it carries no meaning, and strictness
//!   would only break odd clients.
//! - A zero-length domain is answered with GENERAL FAILURE (0x01): the address
//!   type is supported, the address is malformed.
//! - A domain that spells an IP literal becomes [`TargetAddr::Ip`], so later
//!   stages never see an address twice in different forms.
//! - An unsupported command is answered only once the whole request has
//!   arrived, so the app reads the reply instead of a reset caused by unread
//!   input when the driver closes.

use crate::record::{valid_label, CountryCode, PeerFilter, MAX_LABELS};
use crate::target::{Status, TargetAddr};
use bytes::{Bytes, BytesMut};
use core::fmt;
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

/// Most handshake input the machine holds while waiting for the rest of a
/// message. The largest legal message is an RFC 1929 authentication request
/// (1 + 1 + 255 + 1 + 255 = 513 bytes).
pub const MAX_BUFFERED: usize = 1024;

const SOCKS_VERSION: u8 = 0x05;
const AUTH_VERSION: u8 = 0x01;
const METHOD_NO_AUTH: u8 = 0x00;
const METHOD_USER_PASS: u8 = 0x02;
const METHOD_NONE_ACCEPTABLE: u8 = 0xFF;
const CMD_CONNECT: u8 = 0x01;
const ATYP_IPV4: u8 = 0x01;
const ATYP_DOMAIN: u8 = 0x03;
const ATYP_IPV6: u8 = 0x04;
const AUTH_SUCCEEDED: u8 = 0x00;
const AUTH_FAILED: u8 = 0x01;

/// Who may use a SOCKS5 listener.
#[derive(Clone, PartialEq, Eq)]
pub enum SocksAuthPolicy {
    /// Anyone. NO AUTH is accepted; USERNAME/PASSWORD is accepted too (and
    /// preferred when offered) with any credentials, so the username can carry
    /// parameters.
    NoAuth,
    /// Only these `(username, password)` pairs. The username's base (the part
    /// before the first `-`, see [`UserParams`]) and the password must match
    /// an entry, so configured usernames must not contain `-`.
    UserPass(Vec<(String, String)>),
}

impl fmt::Debug for SocksAuthPolicy {
    /// Lists usernames only: passwords must not reach logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocksAuthPolicy::NoAuth => f.write_str("NoAuth"),
            SocksAuthPolicy::UserPass(entries) => f
                .debug_tuple("UserPass")
                .field(&entries.iter().map(|(u, _)| u.as_str()).collect::<Vec<_>>())
                .finish(),
        }
    }
}

/// What the driver must do next for one SOCKS5 app connection.
#[derive(Clone, PartialEq, Eq, Debug)]
#[must_use]
pub enum SocksAction {
    /// Wait for the app to send more, then [`SocksHandshake::feed`] it.
    NeedMore,
    /// Write these bytes to the app (method selection or authentication
    /// status), then poll again.
    Send(Vec<u8>),
    /// The handshake is complete: connect to the target, then answer the app
    /// with [`reply`]. Pipelined payload waits in
    /// [`SocksHandshake::take_leftover`].
    Request(SocksRequest),
    /// The handshake failed: write `reply` (possibly empty), then close.
    Reject {
        /// The bytes that tell the app why, in its protocol's terms.
        reply: Vec<u8>,
        /// Why, for logs and metrics.
        error: SocksError,
    },
}

/// A completed SOCKS5 CONNECT request.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SocksRequest {
    /// Where the app wants to go.
    pub target: TargetAddr,
    /// The RFC 1929 username as sent, if the app authenticated with a
    /// non-empty one.
    pub username: Option<String>,
    /// The parameters carried in the username (defaults when there is none).
    pub params: UserParams,
}

/// Why a SOCKS5 handshake failed.
#[derive(thiserror::Error, Clone, PartialEq, Eq, Debug)]
pub enum SocksError {
    /// The first byte is not 5: an HTTP client or noise reached the port
    /// (a SOCKS4 client is handed to [`crate::socks4`] by the listener's
    /// dispatch before this machine sees it). Answered with nothing.
    #[error("not a SOCKS5 client (version byte {version:#04x})")]
    NotSocks5 {
        /// The version byte the client sent.
        version: u8,
    },
    /// The greeting offers zero methods, which leaves nothing to select.
    #[error("greeting offers no authentication methods")]
    NoMethods,
    /// None of the offered methods is acceptable under the listener's policy.
    #[error("no acceptable authentication method offered")]
    NoAcceptableMethod,
    /// The RFC 1929 sub-negotiation carries a version other than 1.
    #[error("username/password sub-negotiation version {version:#04x}, expected 0x01")]
    BadAuthVersion {
        /// The version byte the client sent.
        version: u8,
    },
    /// The username is not UTF-8, so its parameters cannot be read.
    #[error("username is not UTF-8")]
    UsernameNotUtf8,
    /// The credentials match no entry of the listener's policy.
    #[error("wrong username or password")]
    BadCredentials,
    /// The username's parameters do not parse.
    #[error("bad username parameters: {0}")]
    BadUserParams(#[from] UserParamsError),
    /// The request carries a version other than 5.
    #[error("request version {version:#04x}, expected 0x05")]
    BadRequestVersion {
        /// The version byte the client sent.
        version: u8,
    },
    /// BIND, UDP ASSOCIATE or an unknown command: only CONNECT is carried.
    #[error("unsupported command {command:#04x}")]
    UnsupportedCommand {
        /// The command byte the client sent.
        command: u8,
    },
    /// An address type other than IPv4, domain or IPv6.
    #[error("unsupported address type {atyp:#04x}")]
    UnsupportedAddressType {
        /// The address type byte the client sent.
        atyp: u8,
    },
    /// A domain-name target of length zero.
    #[error("empty domain name")]
    EmptyDomain,
    /// A domain-name target that is not UTF-8.
    #[error("domain name is not UTF-8")]
    DomainNotUtf8,
    /// Destination port 0, which nothing can be connected to.
    #[error("destination port 0")]
    ZeroPort,
    /// More than [`MAX_BUFFERED`] bytes of an unfinished message. The RFCs'
    /// length fields keep every message smaller, so this is the buffer's
    /// backstop rather than a path a client can take.
    #[error("more than {MAX_BUFFERED} bytes of unfinished handshake input")]
    TooMuchInput,
    /// Input or a poll after the handshake already ended in a request or a
    /// rejection: a driver bug.
    #[error("the handshake already ended")]
    AlreadyFinished,
}

/// The RFC 1928 §6 reply to a CONNECT request. Without a `bound` address the
/// reply says `0.0.0.0:0`, which clients accept: the address an exit bound
/// means nothing to an app on the client side anyway.
pub fn reply(status: Status, bound: Option<SocketAddr>) -> Vec<u8> {
    let bound = bound.unwrap_or(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0));
    let mut out = Vec::with_capacity(22);
    out.extend_from_slice(&[SOCKS_VERSION, status.code(), 0x00]);
    match bound.ip() {
        IpAddr::V4(ip) => {
            out.push(ATYP_IPV4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(ATYP_IPV6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&bound.port().to_be_bytes());
    out
}

/// Where a handshake is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stage {
    /// Waiting for VER NMETHODS METHODS.
    Greeting,
    /// USERNAME/PASSWORD selected; waiting for the RFC 1929 request.
    Auth,
    /// Waiting for the CONNECT request.
    Request,
    /// A request came out; only the leftover remains to be taken.
    Accepted,
    /// A rejection came out.
    Rejected,
}

/// The SOCKS5 handshake of one app connection. Cheap to create: the policy is
/// shared by all connections of a listener.
#[derive(Debug)]
pub struct SocksHandshake {
    policy: Arc<SocksAuthPolicy>,
    stage: Stage,
    /// Input not yet consumed by a complete message; at most [`MAX_BUFFERED`].
    input: Vec<u8>,
    /// Actions found by `feed`, in the order the app must see them.
    actions: VecDeque<SocksAction>,
    username: Option<String>,
    params: UserParams,
    /// Bytes the app sent past its request.
    leftover: BytesMut,
}

impl SocksHandshake {
    /// A handshake for a new app connection on a listener with `policy`.
    pub fn new(policy: Arc<SocksAuthPolicy>) -> Self {
        SocksHandshake {
            policy,
            stage: Stage::Greeting,
            input: Vec::new(),
            actions: VecDeque::new(),
            username: None,
            params: UserParams::default(),
            leftover: BytesMut::new(),
        }
    }

    /// Takes bytes the app sent and advances the handshake as far as they
    /// allow; the driver then polls. Bytes past a complete request go to the
    /// leftover, whatever their amount.
    ///
    /// # Errors
    /// [`SocksError::AlreadyFinished`] once a request or rejection was
    /// produced (the input is not taken); [`SocksError::TooMuchInput`] if the
    /// unfinished message outgrows [`MAX_BUFFERED`] (a rejection follows).
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), SocksError> {
        if matches!(self.stage, Stage::Accepted | Stage::Rejected) {
            return Err(SocksError::AlreadyFinished);
        }
        // Taken in slices no larger than the buffer's free room, so the buffer
        // stays bounded even when the app pipelines a large payload.
        while !data.is_empty() {
            let room = MAX_BUFFERED.saturating_sub(self.input.len());
            if room == 0 {
                self.reject(Vec::new(), SocksError::TooMuchInput);
                return Err(SocksError::TooMuchInput);
            }
            let (now, later) = data.split_at(room.min(data.len()));
            self.input.extend_from_slice(now);
            data = later;
            self.advance();
            match self.stage {
                Stage::Accepted => {
                    self.leftover.extend_from_slice(&self.input);
                    self.leftover.extend_from_slice(data);
                    self.input = Vec::new();
                    return Ok(());
                }
                Stage::Rejected => return Ok(()),
                Stage::Greeting | Stage::Auth | Stage::Request => {}
            }
        }
        Ok(())
    }

    /// The next thing to do. Call after every `feed` until it returns
    /// [`SocksAction::NeedMore`], [`SocksAction::Request`] or
    /// [`SocksAction::Reject`]; polling after a request or rejection was
    /// returned yields `Reject` with [`SocksError::AlreadyFinished`].
    pub fn poll(&mut self) -> SocksAction {
        if let Some(action) = self.actions.pop_front() {
            return action;
        }
        match self.stage {
            Stage::Greeting | Stage::Auth | Stage::Request => SocksAction::NeedMore,
            Stage::Accepted | Stage::Rejected => {
                SocksAction::Reject { reply: Vec::new(), error: SocksError::AlreadyFinished }
            }
        }
    }

    /// The bytes the app sent past its request (optimistic payload), for the
    /// driver to forward before anything it reads later. Empty before the
    /// request and after the first call.
    pub fn take_leftover(&mut self) -> Bytes {
        core::mem::take(&mut self.leftover).freeze()
    }

    /// How many bytes of unfinished handshake input are held.
    pub fn buffered(&self) -> usize {
        self.input.len()
    }

    /// Consumes every complete message in the buffer.
    fn advance(&mut self) {
        loop {
            let step = match self.stage {
                Stage::Greeting => self.greeting(),
                Stage::Auth => self.auth(),
                Stage::Request => self.request(),
                Stage::Accepted | Stage::Rejected => return,
            };
            match step {
                Ok(Some(used)) => {
                    self.input.drain(..used);
                }
                Ok(None) => return,
                Err((reply, error)) => {
                    self.reject(reply, error);
                    return;
                }
            }
        }
    }

    fn reject(&mut self, reply: Vec<u8>, error: SocksError) {
        self.stage = Stage::Rejected;
        self.input = Vec::new();
        self.actions.push_back(SocksAction::Reject { reply, error });
    }

    /// Handles a greeting; `Ok(Some(len))` once one of `len` bytes was used.
    fn greeting(&mut self) -> Result<Option<usize>, Failure> {
        let Some(offer) = parse_greeting(&self.input)? else {
            return Ok(None);
        };
        let method = match &*self.policy {
            _ if offer.user_pass => METHOD_USER_PASS,
            SocksAuthPolicy::NoAuth if offer.no_auth => METHOD_NO_AUTH,
            _ => {
                return Err((
                    vec![SOCKS_VERSION, METHOD_NONE_ACCEPTABLE],
                    SocksError::NoAcceptableMethod,
                ))
            }
        };
        self.actions.push_back(SocksAction::Send(vec![SOCKS_VERSION, method]));
        self.stage = if method == METHOD_USER_PASS { Stage::Auth } else { Stage::Request };
        Ok(Some(offer.len))
    }

    /// Handles an RFC 1929 request.
    fn auth(&mut self) -> Result<Option<usize>, Failure> {
        let Some(AuthRequest { len, username, password }) = parse_auth(&self.input)? else {
            return Ok(None);
        };
        let failed = |error| (vec![AUTH_VERSION, AUTH_FAILED], error);
        let username = core::str::from_utf8(username)
            .map_err(|_| failed(SocksError::UsernameNotUtf8))?
            .to_owned();
        if let SocksAuthPolicy::UserPass(entries) = &*self.policy {
            if !credentials_match(entries, username_base(&username), password) {
                return Err(failed(SocksError::BadCredentials));
            }
        }
        self.params = UserParams::parse(&username).map_err(|e| failed(e.into()))?;
        self.username = (!username.is_empty()).then_some(username);
        self.actions.push_back(SocksAction::Send(vec![AUTH_VERSION, AUTH_SUCCEEDED]));
        self.stage = Stage::Request;
        Ok(Some(len))
    }

    /// Handles the CONNECT request.
    fn request(&mut self) -> Result<Option<usize>, Failure> {
        let Some((len, target)) = parse_request(&self.input)? else {
            return Ok(None);
        };
        self.actions.push_back(SocksAction::Request(SocksRequest {
            target,
            username: self.username.take(),
            params: core::mem::take(&mut self.params),
        }));
        self.stage = Stage::Accepted;
        Ok(Some(len))
    }
}

/// A rejection: the bytes to send, and why.
type Failure = (Vec<u8>, SocksError);

/// The methods a greeting offers that we could accept.
struct Offer {
    /// The greeting's length.
    len: usize,
    no_auth: bool,
    user_pass: bool,
}

/// Parses VER NMETHODS METHODS; `Ok(None)` on short input.
fn parse_greeting(b: &[u8]) -> Result<Option<Offer>, Failure> {
    let Some(&version) = b.first() else { return Ok(None) };
    if version != SOCKS_VERSION {
        return Err((Vec::new(), SocksError::NotSocks5 { version }));
    }
    let Some(&n) = b.get(1) else { return Ok(None) };
    if n == 0 {
        return Err((vec![SOCKS_VERSION, METHOD_NONE_ACCEPTABLE], SocksError::NoMethods));
    }
    let len = 2 + usize::from(n);
    let Some(methods) = b.get(2..len) else { return Ok(None) };
    Ok(Some(Offer {
        len,
        no_auth: methods.contains(&METHOD_NO_AUTH),
        user_pass: methods.contains(&METHOD_USER_PASS),
    }))
}

/// An RFC 1929 request as it lies in the buffer.
struct AuthRequest<'a> {
    /// The message's length.
    len: usize,
    username: &'a [u8],
    password: &'a [u8],
}

/// Parses VER ULEN UNAME PLEN PASSWD.
fn parse_auth(b: &[u8]) -> Result<Option<AuthRequest<'_>>, Failure> {
    let Some(&version) = b.first() else { return Ok(None) };
    if version != AUTH_VERSION {
        return Err((vec![AUTH_VERSION, AUTH_FAILED], SocksError::BadAuthVersion { version }));
    }
    let Some(&ulen) = b.get(1) else { return Ok(None) };
    let user_end = 2 + usize::from(ulen);
    let Some(username) = b.get(2..user_end) else { return Ok(None) };
    let Some(&plen) = b.get(user_end) else { return Ok(None) };
    let len = user_end + 1 + usize::from(plen);
    let Some(password) = b.get(user_end + 1..len) else { return Ok(None) };
    Ok(Some(AuthRequest { len, username, password }))
}

/// Parses VER CMD RSV ATYP DST.ADDR DST.PORT into (length, target).
fn parse_request(b: &[u8]) -> Result<Option<(usize, TargetAddr)>, Failure> {
    let general = |error| (reply(Status::GeneralFailure, None), error);
    let Some(&version) = b.first() else { return Ok(None) };
    if version != SOCKS_VERSION {
        return Err(general(SocksError::BadRequestVersion { version }));
    }
    let (Some(&command), Some(&atyp)) = (b.get(1), b.get(3)) else { return Ok(None) };
    let addr_len = match atyp {
        ATYP_IPV4 => 4,
        ATYP_IPV6 => 16,
        ATYP_DOMAIN => match b.get(4) {
            Some(&n) => 1 + usize::from(n),
            None => return Ok(None),
        },
        _ => {
            return Err((
                reply(Status::AddressTypeNotSupported, None),
                SocksError::UnsupportedAddressType { atyp },
            ))
        }
    };
    let len = 4 + addr_len + 2;
    let (Some(addr), Some(&[hi, lo])) = (b.get(4..4 + addr_len), b.get(len - 2..len)) else {
        return Ok(None);
    };
    if command != CMD_CONNECT {
        return Err((
            reply(Status::CommandNotSupported, None),
            SocksError::UnsupportedCommand { command },
        ));
    }
    let port = u16::from_be_bytes([hi, lo]);
    if port == 0 {
        return Err(general(SocksError::ZeroPort));
    }
    let ip = match atyp {
        ATYP_IPV4 => <[u8; 4]>::try_from(addr).ok().map(IpAddr::from),
        ATYP_IPV6 => <[u8; 16]>::try_from(addr).ok().map(IpAddr::from),
        _ => None,
    };
    let target = match ip {
        Some(ip) => TargetAddr::Ip(SocketAddr::new(ip, port)),
        None => {
            let name = addr.get(1..).unwrap_or_default();
            if name.is_empty() {
                return Err(general(SocksError::EmptyDomain));
            }
            let name =
                core::str::from_utf8(name).map_err(|_| general(SocksError::DomainNotUtf8))?;
            match name.parse::<IpAddr>() {
                Ok(ip) => TargetAddr::Ip(SocketAddr::new(ip, port)),
                Err(_) => TargetAddr::Domain(name.to_owned(), port),
            }
        }
    };
    Ok(Some((len, target)))
}

/// The part of a username that names the user: everything before the first `-`.
pub(crate) fn username_base(username: &str) -> &str {
    username.split('-').next().unwrap_or_default()
}

/// Whether `(base, password)` matches one of `entries`. Every entry is
/// compared in full, without early exit, so the time taken does not tell an
/// attacker how close a guess came.
pub(crate) fn credentials_match(entries: &[(String, String)], base: &str, password: &[u8]) -> bool {
    let mut found = false;
    for (user, pass) in entries {
        found |= constant_time_eq(user.as_bytes(), base.as_bytes())
            & constant_time_eq(pass.as_bytes(), password);
    }
    found
}

/// Equal contents, compared by `subtle` in time that depends only on the
/// lengths (which `credentials_match` does not hide: a name's length is no
/// secret worth a padded compare).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(a.ct_eq(b))
}

/// Longest sticky-session value in a username.
pub const MAX_SESSION_LEN: usize = 64;

/// What an app asks for through its proxy username, e.g.
/// `alice-session-42-country-de-label-residential`.
///
/// Grammar: `base ( "-" key "-" value )*` with keys `session` (1..=64 of
/// `[A-Za-z0-9_]`), `country` (ISO 3166-1 alpha-2, either case) and `label`
/// (repeatable, see [`valid_label`]). Shared by the SOCKS5 and HTTP CONNECT
/// listeners.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct UserParams {
    /// The part that names the user (matched against the listener's
    /// credentials); may be empty.
    pub base: String,
    /// A sticky-session key: connections with the same key keep the same exit.
    pub session: Option<String>,
    /// The exit must be in this country.
    pub country: Option<CountryCode>,
    /// The exit must carry all these labels, at most [`MAX_LABELS`].
    pub labels: Vec<String>,
}

/// Why a username's parameters do not parse.
#[derive(thiserror::Error, Clone, PartialEq, Eq, Debug)]
pub enum UserParamsError {
    /// A key other than `session`, `country` and `label`.
    #[error("unknown username parameter {key:?}")]
    UnknownKey {
        /// The key as written.
        key: String,
    },
    /// The username ends right after a key.
    #[error("username parameter {key:?} has no value")]
    MissingValue {
        /// The key.
        key: &'static str,
    },
    /// `session` or `country` given twice.
    #[error("username parameter {key:?} given more than once")]
    Repeated {
        /// The key.
        key: &'static str,
    },
    /// A value outside its key's grammar.
    #[error("username parameter {key:?} has invalid value {value:?}: {problem}")]
    InvalidValue {
        /// The key.
        key: &'static str,
        /// The value as written.
        value: String,
        /// What the value must look like.
        problem: &'static str,
    },
    /// More `label` parameters than an exit can carry.
    #[error("more than {max} labels in username", max = MAX_LABELS)]
    TooManyLabels,
}

impl UserParams {
    /// Parses a username; one without `-` (or an empty one) is all base.
    ///
    /// # Errors
    /// The first [`UserParamsError`] met, left to right.
    pub fn parse(username: &str) -> Result<UserParams, UserParamsError> {
        let mut parts = username.split('-');
        let base = parts.next().unwrap_or_default().to_owned();
        let mut params = UserParams { base, ..UserParams::default() };
        while let Some(key) = parts.next() {
            let value = parts.next();
            match key {
                "session" => {
                    let value = value.ok_or(UserParamsError::MissingValue { key: "session" })?;
                    if params.session.is_some() {
                        return Err(UserParamsError::Repeated { key: "session" });
                    }
                    if !valid_session(value) {
                        return Err(UserParamsError::InvalidValue {
                            key: "session",
                            value: value.to_owned(),
                            problem: "must be 1 to 64 of A-Z a-z 0-9 _",
                        });
                    }
                    params.session = Some(value.to_owned());
                }
                "country" => {
                    let value = value.ok_or(UserParamsError::MissingValue { key: "country" })?;
                    if params.country.is_some() {
                        return Err(UserParamsError::Repeated { key: "country" });
                    }
                    let country =
                        CountryCode::parse(value).ok_or_else(|| UserParamsError::InvalidValue {
                            key: "country",
                            value: value.to_owned(),
                            problem: "must be a two-letter country code",
                        })?;
                    params.country = Some(country);
                }
                "label" => {
                    let value = value.ok_or(UserParamsError::MissingValue { key: "label" })?;
                    if !valid_label(value) {
                        return Err(UserParamsError::InvalidValue {
                            key: "label",
                            value: value.to_owned(),
                            problem: "must be 1 to 32 of a-z 0-9 _ . :",
                        });
                    }
                    if params.labels.len() == MAX_LABELS {
                        return Err(UserParamsError::TooManyLabels);
                    }
                    params.labels.push(value.to_owned());
                }
                other => return Err(UserParamsError::UnknownKey { key: other.to_owned() }),
            }
        }
        Ok(params)
    }

    /// The exit filter the parameters ask for.
    pub fn filter(&self) -> PeerFilter {
        PeerFilter { country: self.country, labels: self.labels.clone() }
    }
}

impl fmt::Display for UserParams {
    /// The username that parses back to these parameters.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base)?;
        if let Some(session) = &self.session {
            write!(f, "-session-{session}")?;
        }
        if let Some(country) = self.country {
            write!(f, "-country-{country}")?;
        }
        for label in &self.labels {
            write!(f, "-label-{label}")?;
        }
        Ok(())
    }
}

fn valid_session(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_SESSION_LEN
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv6Addr;

    fn no_auth() -> SocksHandshake {
        SocksHandshake::new(Arc::new(SocksAuthPolicy::NoAuth))
    }

    fn user_pass() -> SocksHandshake {
        SocksHandshake::new(Arc::new(SocksAuthPolicy::UserPass(vec![
            ("alice".into(), "secret".into()),
            ("bob".into(), "hunter2".into()),
        ])))
    }

    fn auth_msg(user: &str, pass: &str) -> Vec<u8> {
        let mut m = vec![AUTH_VERSION, user.len() as u8];
        m.extend_from_slice(user.as_bytes());
        m.push(pass.len() as u8);
        m.extend_from_slice(pass.as_bytes());
        m
    }

    fn request_msg(target: &TargetAddr) -> Vec<u8> {
        let mut m = vec![SOCKS_VERSION, CMD_CONNECT, 0x00];
        match target {
            TargetAddr::Ip(SocketAddr::V4(a)) => {
                m.push(ATYP_IPV4);
                m.extend_from_slice(&a.ip().octets());
            }
            TargetAddr::Ip(SocketAddr::V6(a)) => {
                m.push(ATYP_IPV6);
                m.extend_from_slice(&a.ip().octets());
            }
            TargetAddr::Domain(d, _) => {
                m.push(ATYP_DOMAIN);
                m.push(d.len() as u8);
                m.extend_from_slice(d.as_bytes());
            }
        }
        m.extend_from_slice(&target.port().to_be_bytes());
        m
    }

    fn domain(d: &str, port: u16) -> TargetAddr {
        TargetAddr::Domain(d.into(), port)
    }

    /// What a driver saw: everything written to the app, the final action,
    /// and the input it never had to feed because the handshake had ended.
    #[derive(Debug)]
    struct Run {
        sent: Vec<u8>,
        end: Option<SocksAction>,
        unfed: Vec<u8>,
        max_buffered: usize,
    }

    /// Feeds `chunks` the way a driver would: poll after each feed until the
    /// machine waits or ends, stop feeding once it has ended.
    fn drive(hs: &mut SocksHandshake, chunks: &[&[u8]]) -> Run {
        let mut run = Run { sent: Vec::new(), end: None, unfed: Vec::new(), max_buffered: 0 };
        for chunk in chunks {
            if run.end.is_some() {
                run.unfed.extend_from_slice(chunk);
                continue;
            }
            if let Err(e) = hs.feed(chunk) {
                panic!("feed refused input before the end: {e}");
            }
            run.max_buffered = run.max_buffered.max(hs.buffered());
            loop {
                match hs.poll() {
                    SocksAction::NeedMore => break,
                    SocksAction::Send(b) => run.sent.extend_from_slice(&b),
                    end => {
                        run.end = Some(end);
                        break;
                    }
                }
            }
        }
        run
    }

    fn drive_all(hs: &mut SocksHandshake, input: &[u8]) -> Run {
        drive(hs, &[input])
    }

    fn request_of(run: &Run) -> &SocksRequest {
        match &run.end {
            Some(SocksAction::Request(r)) => r,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    fn reject_of(run: &Run) -> (&[u8], &SocksError) {
        match &run.end {
            Some(SocksAction::Reject { reply, error }) => (reply, error),
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn no_auth_connect_ipv4() {
        let mut hs = no_auth();
        let target = TargetAddr::Ip("192.0.2.7:443".parse().expect("valid in test"));
        let run = drive_all(&mut hs, &cat(&[&[5, 1, 0], &request_msg(&target)]));
        assert_eq!(run.sent, [5, 0]);
        let req = request_of(&run);
        assert_eq!(req.target, target);
        assert_eq!(req.username, None);
        assert_eq!(req.params, UserParams::default());
        assert!(hs.take_leftover().is_empty());
    }

    #[test]
    fn connect_ipv6_and_domain() {
        for target in [
            TargetAddr::Ip("[2001:db8::1]:8443".parse().expect("valid in test")),
            domain("example.com", 80),
            domain(&"a".repeat(255), 1),
        ] {
            let mut hs = no_auth();
            let run = drive_all(&mut hs, &cat(&[&[5, 1, 0], &request_msg(&target)]));
            assert_eq!(request_of(&run).target, target);
        }
    }

    #[test]
    fn domain_spelling_an_ip_becomes_an_ip() {
        let mut hs = no_auth();
        let run = drive_all(&mut hs, &cat(&[&[5, 1, 0], &request_msg(&domain("10.1.2.3", 22))]));
        assert_eq!(
            request_of(&run).target,
            TargetAddr::Ip("10.1.2.3:22".parse().expect("valid in test"))
        );
    }

    #[test]
    fn no_auth_prefers_user_pass_and_accepts_any_credentials() {
        let mut hs = no_auth();
        let input = cat(&[
            &[5, 2, 0, 2],
            &auth_msg("anyone-session-s1-country-de-label-residential", "whatever"),
            &request_msg(&domain("example.org", 443)),
        ]);
        let run = drive_all(&mut hs, &input);
        assert_eq!(run.sent, [5, 2, 1, 0]);
        let req = request_of(&run);
        assert_eq!(req.username.as_deref(), Some("anyone-session-s1-country-de-label-residential"));
        assert_eq!(req.params.base, "anyone");
        assert_eq!(req.params.session.as_deref(), Some("s1"));
        assert_eq!(req.params.country, CountryCode::parse("DE"));
        assert_eq!(req.params.labels, ["residential"]);
    }

    #[test]
    fn no_auth_accepts_only_user_pass_offer_and_empty_fields() {
        let mut hs = no_auth();
        let input = cat(&[&[5, 1, 2], &auth_msg("", ""), &request_msg(&domain("a.b", 1))]);
        let run = drive_all(&mut hs, &input);
        assert_eq!(run.sent, [5, 2, 1, 0]);
        assert_eq!(request_of(&run).username, None);
    }

    #[test]
    fn user_pass_success() {
        let mut hs = user_pass();
        let input = cat(&[
            &[5, 2, 0, 2],
            &auth_msg("bob-session-x", "hunter2"),
            &request_msg(&domain("example.net", 443)),
        ]);
        let run = drive_all(&mut hs, &input);
        assert_eq!(run.sent, [5, 2, 1, 0]);
        let req = request_of(&run);
        assert_eq!(req.username.as_deref(), Some("bob-session-x"));
        assert_eq!(req.params.base, "bob");
        assert_eq!(req.params.session.as_deref(), Some("x"));
    }

    #[test]
    fn user_pass_wrong_credentials() {
        for (user, pass) in [("alice", "hunter2"), ("carol", "secret"), ("alice", ""), ("", "")] {
            let mut hs = user_pass();
            let run = drive_all(&mut hs, &cat(&[&[5, 1, 2], &auth_msg(user, pass)]));
            assert_eq!(run.sent, [5, 2]);
            let (reply, error) = reject_of(&run);
            assert_eq!(reply, [1, 1]);
            assert_eq!(error, &SocksError::BadCredentials);
        }
    }

    #[test]
    fn user_pass_requires_method_two() {
        let mut hs = user_pass();
        let run = drive_all(&mut hs, &[5, 1, 0]);
        assert!(run.sent.is_empty());
        let (reply, error) = reject_of(&run);
        assert_eq!(reply, [5, 0xFF]);
        assert_eq!(error, &SocksError::NoAcceptableMethod);
    }

    #[test]
    fn no_acceptable_method_under_no_auth() {
        let mut hs = no_auth();
        let run = drive_all(&mut hs, &[5, 2, 1, 0x80]);
        assert_eq!(reject_of(&run), (&[5, 0xFF][..], &SocksError::NoAcceptableMethod));
    }

    #[test]
    fn zero_methods() {
        let mut hs = no_auth();
        let run = drive_all(&mut hs, &[5, 0]);
        assert_eq!(reject_of(&run), (&[5, 0xFF][..], &SocksError::NoMethods));
    }

    /// The SOCKS5 machine alone answers a non-SOCKS5 first byte with nothing;
    /// the client's dispatch never hands it one on a SOCKS listener for SOCKS4
    /// (first byte 4 goes to [`crate::socks4`]).
    #[test]
    fn non_socks5_first_bytes_get_no_reply_from_the_socks5_machine() {
        for first in [&b"\x04\x01\x00\x50"[..], b"GET / HTTP/1.1\r\n", b"CONNECT", b"\x00"] {
            let mut hs = no_auth();
            let run = drive_all(&mut hs, first);
            let (reply, error) = reject_of(&run);
            assert!(reply.is_empty());
            assert_eq!(error, &SocksError::NotSocks5 { version: first[0] });
        }
    }

    #[test]
    fn bad_auth_version() {
        let mut hs = user_pass();
        let mut msg = auth_msg("alice", "secret");
        msg[0] = 5;
        let run = drive_all(&mut hs, &cat(&[&[5, 1, 2], &msg]));
        assert_eq!(reject_of(&run), (&[1, 1][..], &SocksError::BadAuthVersion { version: 5 }));
    }

    #[test]
    fn username_not_utf8() {
        let mut hs = no_auth();
        let run = drive_all(&mut hs, &[5, 1, 2, 1, 2, 0xC3, 0x28, 0]);
        assert_eq!(reject_of(&run), (&[1, 1][..], &SocksError::UsernameNotUtf8));
    }

    #[test]
    fn bad_params_fail_authentication() {
        for policy in
            [SocksAuthPolicy::NoAuth, SocksAuthPolicy::UserPass(vec![("u".into(), "p".into())])]
        {
            let mut hs = SocksHandshake::new(Arc::new(policy));
            let run = drive_all(&mut hs, &cat(&[&[5, 1, 2], &auth_msg("u-color-red", "p")]));
            let (reply, error) = reject_of(&run);
            assert_eq!(reply, [1, 1]);
            assert_eq!(
                error,
                &SocksError::BadUserParams(UserParamsError::UnknownKey { key: "color".into() })
            );
        }
    }

    #[test]
    fn unsupported_commands() {
        for command in [0x02, 0x03, 0x00, 0x09, 0xFF] {
            let mut hs = no_auth();
            let mut req = request_msg(&domain("example.com", 80));
            req[1] = command;
            let run = drive_all(&mut hs, &cat(&[&[5, 1, 0], &req]));
            let (reply, error) = reject_of(&run);
            assert_eq!(reply, super::reply(Status::CommandNotSupported, None));
            assert_eq!(reply[1], 0x07);
            assert_eq!(error, &SocksError::UnsupportedCommand { command });
        }
    }

    #[test]
    fn unsupported_command_waits_for_the_whole_request() {
        let mut hs = no_auth();
        let mut req = request_msg(&domain("example.com", 80));
        req[1] = 0x02;
        let run = drive_all(&mut hs, &cat(&[&[5, 1, 0], &req[..req.len() - 1]]));
        assert!(run.end.is_none());
        let run = drive_all(&mut hs, &req[req.len() - 1..]);
        assert_eq!(reject_of(&run).0[1], 0x07);
    }

    #[test]
    fn unknown_address_type() {
        let mut hs = no_auth();
        let run = drive_all(&mut hs, &[5, 1, 0, 5, 1, 0, 0x02]);
        let (reply, error) = reject_of(&run);
        assert_eq!(reply, super::reply(Status::AddressTypeNotSupported, None));
        assert_eq!(reply[1], 0x08);
        assert_eq!(error, &SocksError::UnsupportedAddressType { atyp: 0x02 });
    }

    #[test]
    fn malformed_requests_are_general_failures() {
        let cases: [(&[u8], SocksError); 4] = [
            (&[5, 1, 0, 3, 0, 0, 80], SocksError::EmptyDomain),
            (&[5, 1, 0, 3, 2, 0xFF, 0xFE, 0, 80], SocksError::DomainNotUtf8),
            (&[5, 1, 0, 1, 1, 2, 3, 4, 0, 0], SocksError::ZeroPort),
            (&[4, 1, 0, 1, 1, 2, 3, 4, 0, 80], SocksError::BadRequestVersion { version: 4 }),
        ];
        for (req, want) in cases {
            let mut hs = no_auth();
            let run = drive_all(&mut hs, &cat(&[&[5, 1, 0], req]));
            let (reply, error) = reject_of(&run);
            assert_eq!(reply, super::reply(Status::GeneralFailure, None));
            assert_eq!(error, &want);
        }
    }

    #[test]
    fn reserved_byte_is_ignored() {
        let mut hs = no_auth();
        let mut req = request_msg(&domain("example.com", 80));
        req[2] = 0xAB;
        let run = drive_all(&mut hs, &cat(&[&[5, 1, 0], &req]));
        assert_eq!(request_of(&run).target, domain("example.com", 80));
    }

    #[test]
    fn pipelined_payload_is_leftover_and_later_input_is_refused() {
        let mut hs = user_pass();
        let payload = vec![0x16; 5000];
        let input = cat(&[
            &[5, 1, 2],
            &auth_msg("alice", "secret"),
            &request_msg(&domain("example.com", 443)),
            &payload,
        ]);
        let run = drive_all(&mut hs, &input);
        assert_eq!(run.sent, [5, 2, 1, 0]);
        assert!(run.max_buffered <= MAX_BUFFERED);
        request_of(&run);
        assert_eq!(hs.take_leftover(), payload);
        assert!(hs.take_leftover().is_empty());
        assert_eq!(hs.feed(b"more"), Err(SocksError::AlreadyFinished));
        assert!(matches!(
            hs.poll(),
            SocksAction::Reject { error: SocksError::AlreadyFinished, .. }
        ));
    }

    #[test]
    fn one_byte_at_a_time() {
        let mut hs = user_pass();
        let input = cat(&[
            &[5, 2, 0, 2],
            &auth_msg("alice-country-us", "secret"),
            &request_msg(&TargetAddr::Ip("[::1]:80".parse().expect("valid in test"))),
            b"GET /",
        ]);
        let chunks: Vec<&[u8]> = input.chunks(1).collect();
        let run = drive(&mut hs, &chunks);
        assert_eq!(run.sent, [5, 2, 1, 0]);
        assert_eq!(request_of(&run).params.country, CountryCode::parse("us"));
        let mut rest = hs.take_leftover().to_vec();
        rest.extend_from_slice(&run.unfed);
        assert_eq!(rest, b"GET /");
    }

    #[test]
    fn replies_follow_rfc_1928() {
        assert_eq!(reply(Status::Succeeded, None), [5, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            reply(Status::HostUnreachable, Some("1.2.3.4:258".parse().expect("valid in test"))),
            [5, 4, 0, 1, 1, 2, 3, 4, 1, 2]
        );
        let v6 = reply(Status::Succeeded, Some("[::2]:80".parse().expect("valid in test")));
        assert_eq!(v6.len(), 22);
        assert_eq!(&v6[..4], [5, 0, 0, 4]);
        assert_eq!(&v6[4..20], Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 2).octets());
        assert_eq!(&v6[20..], [0, 80]);
    }

    #[test]
    fn policy_debug_hides_passwords() {
        let shown = format!("{:?}", SocksAuthPolicy::UserPass(vec![("u".into(), "pw".into())]));
        assert!(shown.contains("\"u\""));
        assert!(!shown.contains("pw"));
    }

    #[test]
    fn constant_time_eq_is_eq() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"abc\0", b"abc"));
    }

    #[test]
    fn user_params_examples() {
        let p = UserParams::parse("alice-session-42-country-de-label-residential")
            .expect("valid in test");
        assert_eq!(p.base, "alice");
        assert_eq!(p.session.as_deref(), Some("42"));
        assert_eq!(p.country, CountryCode::parse("DE"));
        assert_eq!(p.labels, ["residential"]);
        assert_eq!(p.filter(), PeerFilter { country: p.country, labels: p.labels.clone() });
        assert_eq!(UserParams::parse("").expect("valid in test"), UserParams::default());
        assert_eq!(UserParams::parse("bob").expect("valid in test").base, "bob");
        let two = UserParams::parse("-label-a-label-b").expect("valid in test");
        assert_eq!((two.base.as_str(), two.labels), ("", vec!["a".to_owned(), "b".to_owned()]));
    }

    #[test]
    fn user_params_errors() {
        use UserParamsError as E;
        let invalid = |key, value: &str| (key, value.to_owned());
        let cases: Vec<(&str, E)> = vec![
            ("a-colour-red", E::UnknownKey { key: "colour".into() }),
            ("a-", E::UnknownKey { key: "".into() }),
            ("a-session", E::MissingValue { key: "session" }),
            ("a-country", E::MissingValue { key: "country" }),
            ("a-label", E::MissingValue { key: "label" }),
            ("a-session-1-session-2", E::Repeated { key: "session" }),
            ("a-country-de-country-fr", E::Repeated { key: "country" }),
        ];
        for (name, want) in cases {
            assert_eq!(UserParams::parse(name), Err(want), "{name}");
        }
        for (name, (key, value)) in [
            ("a-session-", invalid("session", "")),
            ("a-session-x.y", invalid("session", "x.y")),
            (&*format!("a-session-{}", "s".repeat(65)), invalid("session", &"s".repeat(65))),
            ("a-country-deu", invalid("country", "deu")),
            ("a-label-Upper", invalid("label", "Upper")),
        ] {
            match UserParams::parse(name) {
                Err(E::InvalidValue { key: k, value: v, .. }) => assert_eq!((k, v), (key, value)),
                other => panic!("{name}: {other:?}"),
            }
        }
        let many = format!("a{}", "-label-x".repeat(MAX_LABELS + 1));
        assert_eq!(UserParams::parse(&many), Err(E::TooManyLabels));
        assert!(UserParams::parse(&format!("a-session-{}", "s".repeat(64))).is_ok());
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

    fn target_strategy() -> impl Strategy<Value = TargetAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), 1..=u16::MAX).prop_map(|(ip, port)| TargetAddr::Ip(
                SocketAddr::new(Ipv4Addr::from(ip).into(), port)
            )),
            (any::<[u8; 16]>(), 1..=u16::MAX).prop_map(|(ip, port)| TargetAddr::Ip(
                SocketAddr::new(Ipv6Addr::from(ip).into(), port)
            )),
            ("[a-z][a-z0-9-]{0,20}(\\.[a-z][a-z0-9-]{0,20}){0,3}", 1..=u16::MAX)
                .prop_map(|(d, port)| TargetAddr::Domain(d, port)),
            ("[a-z]{255}", 1..=u16::MAX).prop_map(|(d, port)| TargetAddr::Domain(d, port)),
        ]
    }

    /// Valid parameters with at most `max_labels` labels (four keep the
    /// rendered username within SOCKS5's 255 bytes).
    pub(crate) fn user_params_strategy(max_labels: usize) -> impl Strategy<Value = UserParams> {
        (
            "[a-zA-Z0-9_.]{0,12}",
            proptest::option::of("[A-Za-z0-9_]{1,64}"),
            proptest::option::of("[a-zA-Z]{2}"),
            proptest::collection::vec("[a-z0-9_.:]{1,32}", 0..=max_labels),
        )
            .prop_map(|(base, session, country, labels)| UserParams {
                base,
                session,
                country: country.and_then(|c| CountryCode::parse(&c)),
                labels,
            })
    }

    proptest! {
        #[test]
        fn arbitrary_input_stays_bounded(
            input in proptest::collection::vec(any::<u8>(), 0..2048),
            prefix in prop_oneof![Just(vec![]), Just(vec![5u8, 1, 0]), Just(vec![5u8, 1, 2]), Just(vec![5u8, 2, 0, 2, 1])],
            cuts in proptest::collection::vec(any::<usize>(), 0..16),
            strict in any::<bool>(),
        ) {
            let mut hs = if strict { user_pass() } else { no_auth() };
            let data = cat(&[&prefix, &input]);
            let mut ended = false;
            for chunk in split(&data, &cuts) {
                let fed = hs.feed(chunk);
                prop_assert!(hs.buffered() <= MAX_BUFFERED);
                if ended {
                    prop_assert_eq!(fed, Err(SocksError::AlreadyFinished));
                    continue;
                }
                prop_assert!(fed.is_ok());
                let mut sends = 0;
                loop {
                    match hs.poll() {
                        SocksAction::NeedMore => break,
                        SocksAction::Send(_) => sends += 1,
                        SocksAction::Request(_) | SocksAction::Reject { .. } => { ended = true; break }
                    }
                    prop_assert!(sends <= 2);
                }
            }
        }

        #[test]
        fn valid_requests_survive_any_split(
            target in target_strategy(),
            creds in proptest::option::of((user_params_strategy(4), "[ -~]{0,40}")),
            offer_no_auth in any::<bool>(),
            strict in any::<bool>(),
            payload in proptest::collection::vec(any::<u8>(), 0..3000),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            let strict = strict && creds.is_some();
            let mut input = Vec::new();
            let mut expect_sent = Vec::new();
            let (policy, username, params) = match &creds {
                Some((params, pass)) => {
                    let username = params.to_string();
                    input.extend_from_slice(if offer_no_auth { &[5, 2, 0, 2][..] } else { &[5, 1, 2] });
                    input.extend(auth_msg(&username, pass));
                    expect_sent.extend_from_slice(&[5, 2, 1, 0]);
                    let policy = if strict {
                        SocksAuthPolicy::UserPass(vec![("zed".into(), "x".into()), (params.base.clone(), pass.clone())])
                    } else {
                        SocksAuthPolicy::NoAuth
                    };
                    (policy, (!username.is_empty()).then_some(username), params.clone())
                }
                None => {
                    input.extend_from_slice(&[5, 1, 0]);
                    expect_sent.extend_from_slice(&[5, 0]);
                    (SocksAuthPolicy::NoAuth, None, UserParams::default())
                }
            };
            input.extend(request_msg(&target));
            input.extend_from_slice(&payload);
            let mut hs = SocksHandshake::new(Arc::new(policy));
            let run = drive(&mut hs, &split(&input, &cuts));
            prop_assert!(run.max_buffered <= MAX_BUFFERED);
            prop_assert_eq!(&run.sent, &expect_sent);
            let want = SocksRequest { target, username, params };
            prop_assert_eq!(run.end, Some(SocksAction::Request(want)));
            let mut rest = hs.take_leftover().to_vec();
            rest.extend_from_slice(&run.unfed);
            prop_assert_eq!(rest, payload);
        }

        #[test]
        fn user_params_round_trip(params in user_params_strategy(MAX_LABELS)) {
            prop_assert_eq!(UserParams::parse(&params.to_string()), Ok(params));
        }
    }
}
