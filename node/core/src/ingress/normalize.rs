//! Request-head normalisation: what the router reads of a request, in one
//! canonical form, or the typed reason the request is refused (400).
//!
//! Built on [`crate::http_head`]: the head is parsed there, this module only
//! reads its request-target and `Host`.

use crate::http_head::{HeadError, RequestHead};
use core::ops::Range;
use percent_encoding::percent_decode;

/// Longest host name (RFC 1035 §2.3.4), after the port and trailing dot go.
pub const MAX_HOST_LEN: usize = 253;
/// Longest label of a host name.
pub const MAX_LABEL_LEN: usize = 63;

/// Why a request cannot be routed at all; every one is answered with 400.
#[derive(thiserror::Error, Clone, Copy, PartialEq, Eq, Debug)]
pub enum NormalizeError {
    /// The `Host` header is missing (HTTP/1.1), repeated or not an authority.
    #[error(transparent)]
    Head(#[from] HeadError),
    /// The host (from `Host` or the absolute-form target) is not a valid name.
    #[error("bad host: {0}")]
    BadHost(&'static str),
    /// The request-target is not one a gateway routes (authority form,
    /// `*`, a fragment, user info, a scheme other than http/https).
    #[error("bad request target: {0}")]
    BadTarget(&'static str),
    /// The path breaks a rule every route enforces.
    #[error("refused path: {0}")]
    Path(#[from] PathError),
}

impl NormalizeError {
    /// The HTTP status that answers this error.
    pub fn status(self) -> u16 {
        match self {
            NormalizeError::Head(e) => e.status(),
            _ => 400,
        }
    }
}

/// Why a path is refused. [`PathError::EncodedSlash`] and
/// [`PathError::EncodedBackslash`] are refused only on strict routes (see
/// [`Path::encoded_separator`]); the others on every route.
#[derive(thiserror::Error, Clone, Copy, PartialEq, Eq, Debug)]
pub enum PathError {
    /// `%2F` (an encoded `/`) in the path: refused on strict routes.
    #[error("encoded slash (%2F)")]
    EncodedSlash,
    /// `%5C` (an encoded `\`) in the path: refused on strict routes.
    #[error("encoded backslash (%5C)")]
    EncodedBackslash,
    /// A raw `\`: some servers read it as `/`.
    #[error("backslash")]
    Backslash,
    /// A `.` or `..` segment, raw or encoded (`%2e`, `%2E.`, …).
    #[error("dot segment")]
    DotSegment,
    /// A NUL or other control byte once decoded (`%00`–`%1F`, `%7F`).
    #[error("control byte")]
    ControlByte,
    /// A `%` not followed by two hex digits.
    #[error("malformed percent escape")]
    BadEscape,
    /// The path does not start with `/`.
    #[error("path does not start with /")]
    NotAbsolute,
}

impl PathError {
    /// The HTTP status that answers it: always 400.
    pub fn status(self) -> u16 {
        400
    }
}

/// One `/`-separated segment of the path: where it is in the raw path and
/// in the decoded bytes.
#[derive(Clone, PartialEq, Eq, Debug)]
struct Segment {
    raw: Range<usize>,
    decoded: Range<usize>,
}

/// A request path, raw and decoded, that passed the rules every route
/// enforces.
///
/// Segments are split on the **raw** `/` only, then each is percent-decoded
/// once: `/a%2Fb` is one segment `a/b`, never two. Routes match decoded
/// segments, so an encoded slash can never make a path look like another
/// route's prefix.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Path {
    raw: String,
    decoded: Vec<u8>,
    segments: Vec<Segment>,
    encoded_separator: Option<PathError>,
}

impl Path {
    /// Checks and decodes a raw path (no query).
    ///
    /// # Errors
    /// The first always-refused [`PathError`] found, scanning left to right.
    pub fn parse(raw: &str) -> Result<Path, PathError> {
        let bytes = raw.as_bytes();
        if bytes.first() != Some(&b'/') {
            return Err(PathError::NotAbsolute);
        }
        let mut decoded = Vec::with_capacity(bytes.len());
        let mut segments = Vec::new();
        let mut encoded_separator = None;
        let mut start = 1;
        for piece in raw[1..].split('/') {
            let end = start + piece.len();
            check_escapes(piece.as_bytes())?;
            if piece.contains('\\') {
                return Err(PathError::Backslash);
            }
            decoded.push(b'/');
            let from = decoded.len();
            decoded.extend(percent_decode(piece.as_bytes()));
            let seg = &decoded[from..];
            if seg == b"." || seg == b".." {
                return Err(PathError::DotSegment);
            }
            if seg.iter().any(|&b| b < 0x20 || b == 0x7f) {
                return Err(PathError::ControlByte);
            }
            if encoded_separator.is_none() {
                if seg.contains(&b'/') {
                    encoded_separator = Some(PathError::EncodedSlash);
                } else if seg.contains(&b'\\') {
                    encoded_separator = Some(PathError::EncodedBackslash);
                }
            }
            segments.push(Segment { raw: start..end, decoded: from..decoded.len() });
            start = end + 1;
        }
        Ok(Path { raw: raw.to_owned(), decoded, segments, encoded_separator })
    }

    /// The path as sent (what is forwarded to the agent).
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// The percent-decoded path (decoded once; may not be UTF-8).
    pub fn decoded(&self) -> &[u8] {
        &self.decoded
    }

    /// The decoded segments: `/a/b/` is `a`, `b`, `` (empty).
    pub fn segments(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.segments.iter().map(|s| &self.decoded[s.decoded.clone()])
    }

    /// How many segments the path has (`/` has one, empty).
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// The raw path after the first `n` segments: `""` or `/…`. For `n`
    /// beyond the segments, `""`.
    pub fn raw_suffix(&self, n: usize) -> &str {
        match n.checked_sub(1).and_then(|i| self.segments.get(i)) {
            None if n == 0 => &self.raw,
            None => "",
            Some(s) => &self.raw[s.raw.end..],
        }
    }

    /// [`PathError::EncodedSlash`] or [`PathError::EncodedBackslash`] if the
    /// path carries one (the first found): a strict route refuses it.
    pub fn encoded_separator(&self) -> Option<PathError> {
        self.encoded_separator
    }
}

/// Every `%` starts a two-hex-digit escape.
fn check_escapes(b: &[u8]) -> Result<(), PathError> {
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let ok = b.get(i + 1..i + 3).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
            if !ok {
                return Err(PathError::BadEscape);
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    Ok(())
}

/// A request as the router reads it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Request {
    /// The normalised host: lowercase ASCII, no port, no trailing dot; `None`
    /// only for an HTTP/1.0 request in origin form without `Host`.
    pub host: Option<String>,
    /// The path.
    pub path: Path,
    /// The query after `?`, raw (not decoded, not checked); `None` without `?`.
    pub query: Option<String>,
}

impl Request {
    /// Normalises `head`.
    ///
    /// The host comes from the absolute-form target if there is one (RFC 9112
    /// §3.2.2: the target wins over `Host`), else from `Host`; `Host` is
    /// checked either way ([`RequestHead::host`]: required once in HTTP/1.1).
    ///
    /// # Errors
    /// See [`NormalizeError`].
    pub fn from_head(head: &RequestHead) -> Result<Request, NormalizeError> {
        let header_host = head.host()?;
        if head.method == "CONNECT" {
            return Err(NormalizeError::BadTarget("CONNECT"));
        }
        let target = head.target.as_str();
        if target.contains('#') {
            return Err(NormalizeError::BadTarget("fragment"));
        }
        let (authority, rest) = if target.starts_with('/') {
            (header_host, target)
        } else if let Some((scheme, after)) = target.split_once("://") {
            if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
                return Err(NormalizeError::BadTarget("scheme other than http/https"));
            }
            let end = after.find(['/', '?']).unwrap_or(after.len());
            (Some(&after[..end]), &after[end..])
        } else {
            return Err(NormalizeError::BadTarget("not origin or absolute form"));
        };
        let host = authority.map(normalize_authority).transpose()?;
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q.to_owned())),
            None => (rest, None),
        };
        let path = Path::parse(if path.is_empty() { "/" } else { path })?;
        Ok(Request { host, path, query })
    }
}

/// A `host[:port]` authority, normalised: user info refused, port checked
/// and dropped, then [`normalize_host`].
///
/// # Errors
/// [`NormalizeError::BadHost`].
pub fn normalize_authority(authority: &str) -> Result<String, NormalizeError> {
    if authority.contains('@') {
        return Err(NormalizeError::BadHost("user info"));
    }
    let (host, port) = if authority.starts_with('[') {
        let close = authority.find(']').ok_or(NormalizeError::BadHost("unclosed ["))?;
        let port = match &authority[close + 1..] {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or(NormalizeError::BadHost("junk after ]"))?),
        };
        (&authority[..=close], port)
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if let Some(p) = port {
        let digits = !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit());
        if !digits || p.parse::<u32>().map_or(true, |n| n > 65535) {
            return Err(NormalizeError::BadHost("bad port"));
        }
    }
    normalize_host(host).map_err(NormalizeError::BadHost)
}

/// A host name (no port) in canonical form: ASCII lowercased, one trailing
/// dot stripped, then checked: an IPv6 literal in brackets, or dot-separated
/// labels of `a-z 0-9 - _`, each 1–63 bytes, 253 bytes in all.
///
/// Internationalised names are **not** converted: a non-ASCII byte is
/// refused, so routes and clients must use the ASCII (`xn--…`) form, which
/// is compared as it is.
///
/// # Errors
/// What is wrong with it.
pub fn normalize_host(host: &str) -> Result<String, &'static str> {
    let lower = host.to_ascii_lowercase();
    if let Some(inner) = lower.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or("unclosed [")?;
        return match inner.parse::<core::net::Ipv6Addr>() {
            Ok(_) => Ok(lower),
            Err(_) => Err("bad IPv6 literal"),
        };
    }
    let name = lower.strip_suffix('.').unwrap_or(&lower);
    if name.is_empty() {
        return Err("empty");
    }
    if name.len() > MAX_HOST_LEN {
        return Err("longer than 253 bytes");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("empty label");
        }
        if label.len() > MAX_LABEL_LEN {
            return Err("label longer than 63 bytes");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err("character not allowed in a host name");
        }
    }
    Ok(name.to_owned())
}

/// The value of cookie `name` in the request's `Cookie` headers (the first
/// one, `name=value` pairs separated by `;`), if any.
pub fn cookie<'a>(head: &'a RequestHead, name: &str) -> Option<&'a [u8]> {
    head.values("cookie").flat_map(|v| v.split(|&b| b == b';')).find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        (pair[..eq].trim_ascii() == name.as_bytes()).then(|| pair[eq + 1..].trim_ascii())
    })
}
