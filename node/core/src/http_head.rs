//! The HTTP/1.1 request head as every listener that speaks HTTP reads it: the
//! CONNECT handshake of a client listener today, the public requests of an
//! ingress gateway tomorrow (`DESIGN.md` §8).
//!
//! ```text
//! bytes ──feed──▶ HeadReader ──▶ Incomplete          read more, feed again
//!                            ├─▶ Complete(head, rest) the head; `rest` is body or the next request
//!                            └─▶ HeadError           answer 400/431/505, close
//! ```
//!
//! The syntax is `httparse`'s (pure, no allocation, fuzzed upstream); this
//! module adds what a server facing strangers needs around it: a bound on the
//! head's bytes and header count that holds however the bytes arrive, one
//! answer per head, typed errors, and the few readings of the head that decide
//! how to treat the rest of the connection (`Host`, body framing, `Connection`
//! and `Upgrade`). Those readings follow RFC 9112 and refuse what a proxy in
//! front of a server must not guess about (two lengths, a coding it does not
//! know), because a guess that differs from the server's is request smuggling.

use bytes::BytesMut;

/// Most bytes a request head may take (request line, headers, blank line),
/// unless a listener asks for other [`HeadLimits`].
pub const MAX_HEAD: usize = 8192;
/// Most header fields a request head may carry by default.
pub const MAX_HEADERS: usize = 64;

/// How much a head may hold. Both bounds are checked however the bytes
/// arrive: a reader never holds more than `max_bytes` of an unfinished head.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct HeadLimits {
    /// Most bytes of the head, blank line included.
    pub max_bytes: usize,
    /// Most header fields.
    pub max_headers: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        HeadLimits { max_bytes: MAX_HEAD, max_headers: MAX_HEADERS }
    }
}

/// Why a request head is refused; each has the status code to answer with.
#[derive(thiserror::Error, Clone, Copy, PartialEq, Eq, Debug)]
pub enum HeadError {
    /// No complete head within the byte limit (431).
    #[error("request head exceeds {limit} bytes")]
    TooLarge {
        /// The limit, [`HeadLimits::max_bytes`].
        limit: usize,
    },
    /// More header fields than the limit (431).
    #[error("more than {limit} header fields")]
    TooManyHeaders {
        /// The limit, [`HeadLimits::max_headers`].
        limit: usize,
    },
    /// Not HTTP/1.x syntax: a SOCKS client at the port, a typo, an attack (400).
    #[error("malformed request head: {0}")]
    Malformed(httparse::Error),
    /// A well-formed `HTTP/x.y` other than HTTP/1.0 or HTTP/1.1 (505).
    #[error("unsupported HTTP version (only HTTP/1.0 and HTTP/1.1)")]
    UnsupportedVersion,
    /// `Host` is missing from an HTTP/1.1 request, repeated, or not a
    /// plausible authority (400, RFC 9112 §3.2).
    #[error("bad Host header: {problem}")]
    BadHost {
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The body's length cannot be known without guessing (400, RFC 9112 §6.3).
    #[error("bad body framing: {problem}")]
    BadFraming {
        /// What is wrong with it.
        problem: &'static str,
    },
}

impl HeadError {
    /// The HTTP status code that answers this error.
    pub fn status(self) -> u16 {
        match self {
            HeadError::TooLarge { .. } | HeadError::TooManyHeaders { .. } => 431,
            HeadError::UnsupportedVersion => 505,
            HeadError::Malformed(_) | HeadError::BadHost { .. } | HeadError::BadFraming { .. } => {
                400
            }
        }
    }
}

/// The protocol version of a request.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Version {
    /// HTTP/1.0: one request per connection unless `Connection: keep-alive`.
    Http10,
    /// HTTP/1.1: persistent unless `Connection: close`; `Host` required.
    Http11,
}

/// One header field: the name as sent (a token, compare it case-blind) and
/// the value's bytes without surrounding whitespace (they may be `obs-text`,
/// so not necessarily UTF-8).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Header {
    /// The field name.
    pub name: String,
    /// The field value.
    pub value: Vec<u8>,
}

/// How the body after a head is delimited (RFC 9112 §6.3, request side).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum BodyLength {
    /// No body: the next bytes are the next request.
    Empty,
    /// Exactly this many bytes.
    Fixed(u64),
    /// `Transfer-Encoding: chunked`: chunks until the zero-size one.
    Chunked,
}

/// A complete, syntactically valid request head.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RequestHead {
    /// The method as sent (case matters: `connect` is not `CONNECT`).
    pub method: String,
    /// The request-target as sent: origin form (`/x?y`), absolute form,
    /// authority form (`host:port`, CONNECT) or `*`.
    pub target: String,
    /// The protocol version.
    pub version: Version,
    /// The header fields in the order sent.
    pub headers: Vec<Header>,
    /// Bytes the head took, blank line included.
    pub len: usize,
}

impl RequestHead {
    /// Values of every field called `name` (case-blind), in order.
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers.iter().filter(move |h| h.name.eq_ignore_ascii_case(name)).map(|h| &h.value[..])
    }

    /// The value of the first field called `name` (case-blind).
    pub fn value(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| &h.value[..])
    }

    /// How many fields are called `name` (case-blind): a field that must
    /// appear once is refused when this is above 1.
    pub fn count(&self, name: &str) -> usize {
        self.headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name)).count()
    }

    /// The `Host` the request names: required once in HTTP/1.1, optional in
    /// HTTP/1.0, never repeated, and made of characters an authority may hold.
    ///
    /// # Errors
    /// [`HeadError::BadHost`] when it is missing (1.1), repeated, empty or
    /// carries characters no `host[:port]` has.
    pub fn host(&self) -> Result<Option<&str>, HeadError> {
        let bad = |problem| HeadError::BadHost { problem };
        if self.count("host") > 1 {
            return Err(bad("repeated"));
        }
        let Some(raw) = self.value("host") else {
            return match self.version {
                Version::Http11 => Err(bad("missing")),
                Version::Http10 => Ok(None),
            };
        };
        let authority = |b: &u8| b.is_ascii_alphanumeric() || b"-._~:[]!$&'()*+,;=%".contains(b);
        if raw.is_empty() || !raw.iter().all(authority) {
            return Err(bad("not a host[:port]"));
        }
        // All ASCII by the check above.
        core::str::from_utf8(raw).map(Some).map_err(|_| bad("not a host[:port]"))
    }

    /// How the body is delimited. A request with both `Transfer-Encoding`
    /// and `Content-Length`, with lengths that disagree, or with a coding
    /// other than a final `chunked` is refused rather than read one way here
    /// and another way by the server behind us.
    ///
    /// # Errors
    /// [`HeadError::BadFraming`], naming the problem.
    pub fn body_length(&self) -> Result<BodyLength, HeadError> {
        let bad = |problem| HeadError::BadFraming { problem };
        let codings: Vec<&[u8]> = self.values("transfer-encoding").flat_map(list_items).collect();
        let mut lengths = self.values("content-length").flat_map(list_items);
        if !codings.is_empty() {
            if lengths.next().is_some() {
                return Err(bad("both Transfer-Encoding and Content-Length"));
            }
            if self.version == Version::Http10 {
                return Err(bad("Transfer-Encoding in an HTTP/1.0 request"));
            }
            return match codings.as_slice() {
                [only] if only.eq_ignore_ascii_case(b"chunked") => Ok(BodyLength::Chunked),
                _ => Err(bad("transfer coding other than a single chunked")),
            };
        }
        let mut length = None;
        for item in lengths {
            let n = parse_length(item).ok_or(bad("Content-Length is not a number"))?;
            if length.is_some_and(|l| l != n) {
                return Err(bad("Content-Length values disagree"));
            }
            length = Some(n);
        }
        Ok(match length {
            None | Some(0) => BodyLength::Empty,
            Some(n) => BodyLength::Fixed(n),
        })
    }

    /// Whether `token` is among the `Connection` options (case-blind).
    pub fn connection_has(&self, token: &str) -> bool {
        self.values("connection")
            .flat_map(list_items)
            .any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
    }

    /// Whether the client expects the connection to stay open after the
    /// response: HTTP/1.1 unless `Connection: close`, HTTP/1.0 only with
    /// `Connection: keep-alive`.
    pub fn keep_alive(&self) -> bool {
        match self.version {
            _ if self.connection_has("close") => false,
            Version::Http11 => true,
            Version::Http10 => self.connection_has("keep-alive"),
        }
    }

    /// The protocols the client asks to switch to (`Upgrade`, e.g.
    /// `websocket`), only when `Connection` names `upgrade` as RFC 9110 §7.8
    /// requires; `None` for a plain request.
    pub fn upgrade(&self) -> Option<&[u8]> {
        if !self.connection_has("upgrade") {
            return None;
        }
        if self.count("upgrade") != 1 {
            return None;
        }
        self.value("upgrade").filter(|v| !v.is_empty())
    }
}

/// The items of a comma-separated field value, trimmed, empty ones skipped.
fn list_items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(<[u8]>::trim_ascii).filter(|item| !item.is_empty())
}

/// A `Content-Length` value: digits only (no sign, no spaces), fits in u64.
fn parse_length(item: &[u8]) -> Option<u64> {
    if item.is_empty() || !item.iter().all(u8::is_ascii_digit) {
        return None;
    }
    core::str::from_utf8(item).ok()?.parse().ok()
}

/// Whether httparse's version error is about a version we do not speak
/// (`HTTP/2.0`, `HTTP/1.2`) rather than garbage: the request line's third
/// field starts with `HTTP/`. httparse stops at the first byte that differs
/// from `HTTP/1.0` and `HTTP/1.1`, so the answer does not depend on how much
/// of the line has arrived.
fn names_other_version(buf: &[u8]) -> bool {
    // httparse skips empty lines before the request line.
    let start = buf.iter().position(|b| !matches!(b, b'\r' | b'\n')).unwrap_or(buf.len());
    let line = buf.get(start..).unwrap_or_default();
    line.splitn(3, |&b| b == b' ').nth(2).is_some_and(|version| version.starts_with(b"HTTP/"))
}

/// The result of parsing: the head, or a sign that more bytes are needed.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Parsed {
    /// The head is not complete yet and still within the limits.
    Incomplete,
    /// The head; [`RequestHead::len`] bytes of the input.
    Complete(RequestHead),
}

/// Parses the request head at the front of `buf`.
///
/// A `buf` of `limits.max_bytes` or more without a complete head is
/// [`HeadError::TooLarge`]: a head ending exactly at the limit is accepted,
/// one byte longer is not.
///
/// # Errors
/// See [`HeadError`]; errors are final: more bytes cannot repair them.
pub fn parse(buf: &[u8], limits: HeadLimits) -> Result<Parsed, HeadError> {
    // Reading past the limit would let a head that is too large complete.
    let window = buf.get(..limits.max_bytes).unwrap_or(buf);
    let mut slots = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut request = httparse::Request::new(&mut slots);
    let len = match request.parse(window) {
        Ok(httparse::Status::Complete(len)) => len,
        // A full window that still is not a head can never become one.
        Ok(httparse::Status::Partial) if window.len() >= limits.max_bytes => {
            return Err(HeadError::TooLarge { limit: limits.max_bytes })
        }
        Ok(httparse::Status::Partial) => return Ok(Parsed::Incomplete),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HeadError::TooManyHeaders { limit: limits.max_headers })
        }
        Err(httparse::Error::Version) if names_other_version(window) => {
            return Err(HeadError::UnsupportedVersion)
        }
        Err(e) => return Err(HeadError::Malformed(e)),
    };
    // httparse fills every field of a complete request and reads only 1.0 and 1.1.
    let version = match request.version {
        Some(0) => Version::Http10,
        Some(1) => Version::Http11,
        _ => return Err(HeadError::UnsupportedVersion),
    };
    Ok(Parsed::Complete(RequestHead {
        method: request.method.unwrap_or_default().to_owned(),
        target: request.path.unwrap_or_default().to_owned(),
        version,
        headers: request
            .headers
            .iter()
            .map(|h| Header { name: h.name.to_owned(), value: h.value.to_vec() })
            .collect(),
        len,
    }))
}

/// What [`HeadReader::feed`] found.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum HeadStatus {
    /// Feed more bytes.
    Incomplete,
    /// The head, and every byte fed after it (a body, or the next request on
    /// a persistent connection): they belong to the caller.
    Complete {
        /// The head.
        head: RequestHead,
        /// The bytes past the head, in order.
        rest: BytesMut,
    },
}

/// Gathers a request head from bytes as they arrive, holding at most
/// [`HeadLimits::max_bytes`] of it whatever the size of each piece.
///
/// After a head (or an error) the reader is empty again, so a persistent
/// connection can reuse it for its next request once the body is consumed:
/// feed it the `rest` that is not body.
#[derive(Debug)]
pub struct HeadReader {
    limits: HeadLimits,
    /// The head so far; at most `limits.max_bytes`.
    buf: Vec<u8>,
}

impl HeadReader {
    /// An empty reader bound by `limits`.
    pub fn new(limits: HeadLimits) -> Self {
        HeadReader { limits, buf: Vec::new() }
    }

    /// Takes the next bytes of the connection.
    ///
    /// # Errors
    /// See [`HeadError`]. The reader is empty afterwards.
    pub fn feed(&mut self, data: &[u8]) -> Result<HeadStatus, HeadError> {
        let room = self.limits.max_bytes.saturating_sub(self.buf.len());
        let (now, later) = data.split_at(room.min(data.len()));
        self.buf.extend_from_slice(now);
        match parse(&self.buf, self.limits) {
            Ok(Parsed::Incomplete) => Ok(HeadStatus::Incomplete),
            Ok(Parsed::Complete(head)) => {
                let mut rest = BytesMut::with_capacity(self.buf.len() - head.len + later.len());
                rest.extend_from_slice(self.buf.get(head.len..).unwrap_or_default());
                rest.extend_from_slice(later);
                self.buf = Vec::new();
                Ok(HeadStatus::Complete { head, rest })
            }
            Err(e) => {
                self.buf = Vec::new();
                Err(e)
            }
        }
    }

    /// Bytes of the unfinished head held, never above the byte limit.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The limits this reader enforces.
    pub fn limits(&self) -> HeadLimits {
        self.limits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn complete(input: &[u8]) -> RequestHead {
        match parse(input, HeadLimits::default()) {
            Ok(Parsed::Complete(head)) => head,
            other => panic!("expected a head, got {other:?}"),
        }
    }

    fn error_of(input: &[u8], limits: HeadLimits) -> HeadError {
        match parse(input, limits) {
            Err(e) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    /// The reader's first final answer for `input` fed in `pieces`, and
    /// the most it held meanwhile.
    fn read_in(pieces: &[&[u8]], limits: HeadLimits) -> (Result<HeadStatus, HeadError>, usize) {
        let mut reader = HeadReader::new(limits);
        let mut held = 0;
        let mut fed: Vec<u8> = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            let status = reader.feed(piece);
            held = held.max(reader.buffered());
            match status {
                Ok(HeadStatus::Incomplete) => fed.extend_from_slice(piece),
                Ok(HeadStatus::Complete { head, mut rest }) => {
                    // What came after this piece is the caller's too.
                    pieces[i + 1..].iter().for_each(|p| rest.extend_from_slice(p));
                    return (Ok(HeadStatus::Complete { head, rest }), held);
                }
                Err(e) => return (Err(e), held),
            }
        }
        (Ok(HeadStatus::Incomplete), held)
    }

    #[test]
    fn a_get_with_headers() {
        let input = b"GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nX-Two:  spaced  \r\n\r\n";
        let head = complete(input);
        assert_eq!(head.method, "GET");
        assert_eq!(head.target, "/a?b=1");
        assert_eq!(head.version, Version::Http11);
        assert_eq!(head.len, input.len());
        assert_eq!(head.value("host"), Some(&b"example.com"[..]));
        assert_eq!(head.value("x-two"), Some(&b"spaced"[..]));
        assert_eq!(head.headers.len(), 2);
        assert_eq!(head.host(), Ok(Some("example.com")));
        assert_eq!(head.body_length(), Ok(BodyLength::Empty));
        assert!(head.keep_alive());
        assert_eq!(head.upgrade(), None);
    }

    #[test]
    fn every_proper_prefix_is_incomplete() {
        let input = b"CONNECT a:1 HTTP/1.0\r\nA: b\r\n\r\n";
        for cut in 0..input.len() {
            assert_eq!(
                parse(&input[..cut], HeadLimits::default()),
                Ok(Parsed::Incomplete),
                "{cut}"
            );
        }
        assert_eq!(complete(input).version, Version::Http10);
    }

    #[test]
    fn the_reader_hands_back_what_follows_the_head() {
        let (status, held) =
            read_in(&[b"POST / HTTP/1.1\r\nHost: h\r\nContent-", b"Length: 3\r\n\r\nabcGET"], {
                HeadLimits::default()
            });
        let Ok(HeadStatus::Complete { head, rest }) = status else { panic!("{status:?}") };
        assert_eq!(head.body_length(), Ok(BodyLength::Fixed(3)));
        assert_eq!(&rest[..], b"abcGET");
        assert!(held <= MAX_HEAD);
        // The reader is empty again and reads the next request.
        let mut reader = HeadReader::new(HeadLimits::default());
        assert!(matches!(
            reader.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"),
            Ok(HeadStatus::Complete { .. })
        ));
        assert_eq!(reader.buffered(), 0);
        assert!(matches!(
            reader.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"),
            Ok(HeadStatus::Complete { .. })
        ));
    }

    /// A head of exactly `len` bytes (len ≥ 26).
    fn head_of(len: usize) -> Vec<u8> {
        let start = "GET / HTTP/1.1\r\nX: ";
        let pad = "p".repeat(len - start.len() - 4);
        format!("{start}{pad}\r\n\r\n").into_bytes()
    }

    #[test]
    fn the_byte_limit_is_exact() {
        let limits = HeadLimits { max_bytes: 100, max_headers: 4 };
        let exact = head_of(100);
        assert!(matches!(parse(&exact, limits), Ok(Parsed::Complete(h)) if h.len == 100));
        let over = head_of(101);
        assert_eq!(error_of(&over, limits), HeadError::TooLarge { limit: 100 });
        assert_eq!(error_of(&over[..100], limits), HeadError::TooLarge { limit: 100 });
        // However it arrives.
        let pieces: Vec<&[u8]> = over.chunks(7).collect();
        let (status, held) = read_in(&pieces, limits);
        assert_eq!(status, Err(HeadError::TooLarge { limit: 100 }));
        assert!(held <= 100);
        assert_eq!(HeadError::TooLarge { limit: 100 }.status(), 431);
    }

    #[test]
    fn the_header_count_is_bounded() {
        let limits = HeadLimits { max_bytes: MAX_HEAD, max_headers: 3 };
        let three = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
        assert!(matches!(parse(three, limits), Ok(Parsed::Complete(h)) if h.headers.len() == 3));
        let four = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n";
        assert_eq!(error_of(four, limits), HeadError::TooManyHeaders { limit: 3 });
        assert_eq!(HeadError::TooManyHeaders { limit: 3 }.status(), 431);
    }

    #[test]
    fn versions_other_than_1_x_are_named_garbage_is_malformed() {
        let limits = HeadLimits::default();
        for input in [&b"GET / HTTP/2.0\r\n\r\n"[..], b"GET / HTTP/1.2\r\n\r\n", b"GET / HTTP/3"] {
            assert_eq!(error_of(input, limits), HeadError::UnsupportedVersion, "{input:?}");
        }
        assert_eq!(HeadError::UnsupportedVersion.status(), 505);
        for input in [&b"\x05\x01\x00"[..], b"GET / FOO/1.1\r\n\r\n", b"GET /a b HTTP/1.1\r\n\r\n"]
        {
            let e = error_of(input, limits);
            assert!(matches!(e, HeadError::Malformed(_)), "{input:?}: {e:?}");
            assert_eq!(e.status(), 400);
        }
    }

    #[test]
    fn host_rules() {
        let host = |input: &str| complete(input.as_bytes()).host().map(|h| h.map(str::to_owned));
        assert_eq!(
            host("GET / HTTP/1.1\r\nHost: a.b:8080\r\n\r\n"),
            Ok(Some("a.b:8080".to_owned()))
        );
        assert_eq!(
            host("GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n"),
            Ok(Some("[::1]:80".to_owned()))
        );
        assert_eq!(host("GET / HTTP/1.0\r\n\r\n"), Ok(None));
        for (input, problem) in [
            ("GET / HTTP/1.1\r\n\r\n", "missing"),
            ("GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", "repeated"),
            ("GET / HTTP/1.1\r\nHost:\r\n\r\n", "not a host[:port]"),
            ("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", "not a host[:port]"),
            ("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", "not a host[:port]"),
        ] {
            assert_eq!(host(input), Err(HeadError::BadHost { problem }), "{input:?}");
        }
    }

    #[test]
    fn body_framing_refuses_what_it_would_have_to_guess() {
        let framing = |headers: &str| {
            complete(format!("POST / HTTP/1.1\r\nHost: h\r\n{headers}\r\n").as_bytes())
                .body_length()
        };
        assert_eq!(framing(""), Ok(BodyLength::Empty));
        assert_eq!(framing("Content-Length: 0\r\n"), Ok(BodyLength::Empty));
        assert_eq!(framing("Content-Length: 42\r\n"), Ok(BodyLength::Fixed(42)));
        assert_eq!(
            framing("Content-Length: 42, 42\r\ncontent-length: 42\r\n"),
            Ok(BodyLength::Fixed(42))
        );
        assert_eq!(framing("Transfer-Encoding: Chunked\r\n"), Ok(BodyLength::Chunked));
        for (headers, problem) in [
            ("Content-Length: 1\r\nContent-Length: 2\r\n", "Content-Length values disagree"),
            ("Content-Length: -1\r\n", "Content-Length is not a number"),
            ("Content-Length: +1\r\n", "Content-Length is not a number"),
            ("Content-Length: 18446744073709551616\r\n", "Content-Length is not a number"),
            (
                "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
                "both Transfer-Encoding and Content-Length",
            ),
            ("Transfer-Encoding: gzip, chunked\r\n", "transfer coding other than a single chunked"),
            ("Transfer-Encoding: chunked, gzip\r\n", "transfer coding other than a single chunked"),
        ] {
            assert_eq!(framing(headers), Err(HeadError::BadFraming { problem }), "{headers:?}");
        }
        let old = complete(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(
            old.body_length(),
            Err(HeadError::BadFraming { problem: "Transfer-Encoding in an HTTP/1.0 request" })
        );
    }

    #[test]
    fn connection_options() {
        let head = |version: &str, headers: &str| {
            complete(format!("GET / HTTP/{version}\r\nHost: h\r\n{headers}\r\n").as_bytes())
        };
        assert!(!head("1.1", "Connection: Close\r\n").keep_alive());
        assert!(!head("1.0", "").keep_alive());
        assert!(head("1.0", "Connection: keep-alive\r\n").keep_alive());
        let ws = head("1.1", "Connection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n");
        assert_eq!(ws.upgrade(), Some(&b"websocket"[..]));
        // Upgrade without the Connection option is not a request to switch.
        assert_eq!(head("1.1", "Upgrade: websocket\r\n").upgrade(), None);
    }

    /// Splits `data` at the given (wrapped) offsets.
    fn split_at_cuts<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
        let mut at: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        at.sort_unstable();
        let mut pieces = Vec::new();
        let mut from = 0;
        for cut in at {
            pieces.push(&data[from..cut]);
            from = cut;
        }
        pieces.push(&data[from..]);
        pieces
    }

    fn valid_head() -> impl Strategy<Value = Vec<u8>> {
        (
            "[A-Z]{1,10}",
            "/[!-~]{0,60}",
            prop_oneof![Just("1.0"), Just("1.1")],
            proptest::collection::vec(("[A-Za-z0-9-]{1,20}", "[!-~]([ -~]{0,50}[!-~])?"), 0..20),
        )
            .prop_map(|(method, target, version, headers)| {
                let mut head = format!("{method} {target} HTTP/{version}\r\n");
                for (name, value) in headers {
                    head.push_str(&format!("{name}: {value}\r\n"));
                }
                head.push_str("\r\n");
                head.into_bytes()
            })
    }

    proptest! {
        #[test]
        fn any_split_of_a_valid_head_reads_as_one_feed(
            head in valid_head(),
            body in proptest::collection::vec(any::<u8>(), 0..200),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            let mut input = head.clone();
            input.extend_from_slice(&body);
            let whole = read_in(&[&input], HeadLimits::default()).0;
            let Ok(HeadStatus::Complete { head: parsed, rest }) = &whole else {
                return Err(TestCaseError::fail(format!("{whole:?}")));
            };
            prop_assert_eq!(parsed.len, head.len());
            prop_assert_eq!(&rest[..], &body[..]);
            let (split, held) = read_in(&split_at_cuts(&input, &cuts), HeadLimits::default());
            prop_assert_eq!(split, whole);
            prop_assert!(held <= MAX_HEAD);
        }

        #[test]
        fn arbitrary_bytes_are_bounded_and_split_independent(
            input in proptest::collection::vec(any::<u8>(), 0..600),
            max_bytes in 1usize..300,
            max_headers in 0usize..8,
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            let limits = HeadLimits { max_bytes, max_headers };
            let (whole, held_whole) = read_in(&[&input], limits);
            let (split, held) = read_in(&split_at_cuts(&input, &cuts), limits);
            prop_assert!(held_whole <= max_bytes && held <= max_bytes);
            if let Ok(HeadStatus::Complete { head, .. }) = &whole {
                prop_assert!(head.len <= max_bytes && head.headers.len() <= max_headers);
            }
            prop_assert_eq!(split, whole);
        }

        #[test]
        fn one_byte_over_the_limit_is_refused(len in 26usize..2000) {
            let head = head_of(len);
            let exact = HeadLimits { max_bytes: len, max_headers: 1 };
            prop_assert!(matches!(parse(&head, exact), Ok(Parsed::Complete(h)) if h.len == len));
            let short = HeadLimits { max_bytes: len - 1, max_headers: 1 };
            prop_assert_eq!(parse(&head, short), Err(HeadError::TooLarge { limit: len - 1 }));
            let (fed, held) = read_in(&head.chunks(5).collect::<Vec<_>>(), short);
            prop_assert_eq!(fed, Err(HeadError::TooLarge { limit: len - 1 }));
            prop_assert!(held < len);
        }
    }
}
