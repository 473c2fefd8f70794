//! The frame every peer-to-peer message travels in, and the decode result
//! shape all codecs share.
//!
//! ```text
//! ┌──────────────────────┬──────────────────┬──────────────────────────┐
//! │ body length: u32 BE  │ message type: u8 │ fields (codec-specific)  │
//! └──────────────────────┴──────────────────┴──────────────────────────┘
//!   4 bytes               └──────────────── body ─────────────────────┘
//! ```
//!
//! A decoder looks at as few bytes as it can before it commits to waiting
//! for more, so a hostile peer cannot make it buffer what it will reject:
//!
//! 1. the 4-byte length, checked against the largest body of the stream's
//!    whole message set ([`DecodeError::TooLarge`] after 4 bytes);
//! 2. the type byte ([`DecodeError::UnknownType`]);
//! 3. for versioned messages, the version byte right after it
//!    ([`DecodeError::UnsupportedVersion`], checked before the per-type limit so
//!    a peer speaking a later version whose message is larger still gets the
//!    clean answer);
//! 4. the length against that message type's own maximum;
//! 5. only then the rest of the body. Running short of bytes before this point
//!    is [`Decoded::Incomplete`]; running short *inside* a complete body is
//!    [`DecodeError::Malformed`], and a body with bytes left after its last
//!    field is [`DecodeError::TrailingBytes`] — the encoding is canonical, one
//!    value has exactly one byte string.
//!
//! Every decoder returns [`DecodeResult`]: `Ok(Complete { msg, consumed })`
//! with `consumed` the frame's full length (prefix included, never more than
//! the input), `Ok(Incomplete)` when the input is a proper prefix of a frame
//! that could still turn out valid, or `Err` when no continuation can make it
//! valid. After an error the stream is out of sync and must be closed.

/// Bytes of the length prefix in front of every body.
pub const LEN_PREFIX: usize = 4;

/// What a decoder made of the bytes it was given.
#[derive(Clone, PartialEq, Eq, Debug)]
#[must_use]
pub enum Decoded<T> {
    /// A whole frame decoded; drop `consumed` bytes from the front of the
    /// buffer before decoding the next one.
    Complete {
        /// The message.
        msg: T,
        /// Length of the frame, prefix included.
        consumed: usize,
    },
    /// The input is a proper prefix of a frame: read more and try again with
    /// the longer buffer.
    Incomplete,
}

/// The result every wire decoder returns.
pub type DecodeResult<T> = Result<Decoded<T>, DecodeError>;

/// Why bytes from a peer are not a valid frame. Every variant is final: no
/// further input can repair the stream.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The announced body is longer than any message allowed here (the
    /// stream's limit, or the limit of the message type it turned out to be).
    #[error("frame body of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Body length the peer announced.
        len: usize,
        /// Largest body length allowed at this point.
        max: usize,
    },
    /// The message type byte names no message this stream carries.
    #[error("unknown message type {0:#04x}")]
    UnknownType(u8),
    /// The peer speaks a protocol version this node does not.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    /// A field breaks the encoding's rules; the reason names which.
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
    /// The body goes on after its last field (a non-canonical encoding).
    #[error("{extra} unused bytes at the end of the frame body")]
    TrailingBytes {
        /// How many bytes were left over.
        extra: usize,
    },
}

/// How a codec wants one message type treated before its body is read.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TypeRule {
    /// Largest body (type byte included) this message type can have.
    pub(crate) max_body: usize,
    /// The version byte that must follow the type byte, for versioned messages.
    pub(crate) version: Option<u8>,
}

/// Splits one frame off the front of `buf` and hands its fields (the body
/// after the type byte, version byte included) to `parse`.
///
/// `stream_max` bounds every body on this stream; `rule` says, per type byte,
/// whether the type exists and what its own limit and version are.
pub(crate) fn decode_frame<T>(
    buf: &[u8],
    stream_max: usize,
    rule: impl FnOnce(u8) -> Option<TypeRule>,
    parse: impl FnOnce(u8, &mut Reader<'_>) -> Result<T, DecodeError>,
) -> DecodeResult<T> {
    let Some((prefix, body_bytes)) = buf.split_first_chunk::<LEN_PREFIX>() else {
        return Ok(Decoded::Incomplete);
    };
    // A u32 always fits a usize on the targets we build for (≥ 32 bit); if it
    // ever did not, saturating makes it "too large", which is the truth.
    let len = usize::try_from(u32::from_be_bytes(*prefix)).unwrap_or(usize::MAX);
    if len > stream_max {
        return Err(DecodeError::TooLarge { len, max: stream_max });
    }
    if len == 0 {
        return Err(DecodeError::Malformed("empty frame body"));
    }
    let Some(&ty) = body_bytes.first() else {
        return Ok(Decoded::Incomplete);
    };
    let rule = rule(ty).ok_or(DecodeError::UnknownType(ty))?;
    if let Some(expected) = rule.version {
        if len < 2 {
            return Err(DecodeError::Malformed("missing version"));
        }
        let Some(&v) = body_bytes.get(1) else {
            return Ok(Decoded::Incomplete);
        };
        if v != expected {
            return Err(DecodeError::UnsupportedVersion(v));
        }
    }
    if len > rule.max_body {
        return Err(DecodeError::TooLarge { len, max: rule.max_body });
    }
    let Some((_, fields)) = body_bytes.get(..len).and_then(<[u8]>::split_first) else {
        return Ok(Decoded::Incomplete);
    };
    let mut fields = Reader { rest: fields };
    let msg = parse(ty, &mut fields)?;
    if !fields.rest.is_empty() {
        return Err(DecodeError::TrailingBytes { extra: fields.rest.len() });
    }
    Ok(Decoded::Complete { msg, consumed: LEN_PREFIX + len })
}

/// A field that cannot be encoded; the reason is for debugging only (the
/// peer sees its own decoder's reason).
pub(crate) type Invalid = &'static str;

/// Appends one frame of type `ty` whose fields `write_fields` produces.
///
/// Encoders take already-valid values, but they must not panic or emit a
/// frame that means something else when handed an invalid one. So when
/// `write_fields` reports a field it cannot encode, or the body comes out
/// longer than `max_body`, everything written is taken back and a *poison
/// frame* — the type byte alone — is appended instead. Every message with
/// fields rejects that as [`DecodeError::Malformed`], so the mistake surfaces
/// at the peer as a clean protocol error rather than as a wrong request.
pub(crate) fn encode_frame(
    out: &mut Vec<u8>,
    ty: u8,
    max_body: usize,
    write_fields: impl FnOnce(&mut Vec<u8>) -> Result<(), Invalid>,
) {
    let start = out.len();
    out.extend_from_slice(&[0; LEN_PREFIX]);
    out.push(ty);
    let written = write_fields(out);
    let body_len = out.len() - start - LEN_PREFIX;
    match (written, u32::try_from(body_len)) {
        (Ok(()), Ok(len)) if body_len <= max_body => {
            out[start..start + LEN_PREFIX].copy_from_slice(&len.to_be_bytes());
        }
        _ => {
            out.truncate(start);
            out.extend_from_slice(&1u32.to_be_bytes());
            out.push(ty);
        }
    }
}

/// Appends `bytes` behind a one-byte length, if its length is in `min..=max`
/// (`max` ≤ 255).
pub(crate) fn put_short_bytes(
    out: &mut Vec<u8>,
    bytes: &[u8],
    min: usize,
    max: usize,
    what: Invalid,
) -> Result<(), Invalid> {
    if bytes.len() < min || bytes.len() > max {
        return Err(what);
    }
    let len = u8::try_from(bytes.len()).map_err(|_| what)?;
    out.push(len);
    out.extend_from_slice(bytes);
    Ok(())
}

/// A one-byte count for a list of at most `max` (≤ 255) items.
pub(crate) fn put_count(
    out: &mut Vec<u8>,
    n: usize,
    max: usize,
    what: Invalid,
) -> Result<(), Invalid> {
    if n > max {
        return Err(what);
    }
    out.push(u8::try_from(n).map_err(|_| what)?);
    Ok(())
}

/// A cursor over the fields of one complete body. Running out of bytes here
/// means the peer's fields do not add up to the length it announced, so every
/// read fails with [`DecodeError::Malformed`] carrying the caller's reason.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// The next `n` bytes.
    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if n > self.rest.len() {
            return Err(DecodeError::Malformed(what));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    /// The next `N` bytes as an array.
    pub(crate) fn array<const N: usize>(
        &mut self,
        what: &'static str,
    ) -> Result<[u8; N], DecodeError> {
        let (head, tail) =
            self.rest.split_first_chunk::<N>().ok_or(DecodeError::Malformed(what))?;
        self.rest = tail;
        Ok(*head)
    }

    /// A byte.
    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        self.array::<1>(what).map(|[b]| b)
    }

    /// A big-endian u16.
    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        self.array(what).map(u16::from_be_bytes)
    }

    /// A big-endian u32.
    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        self.array(what).map(u32::from_be_bytes)
    }

    /// A big-endian u64.
    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        self.array(what).map(u64::from_be_bytes)
    }

    /// Bytes behind a one-byte length that must lie in `min..=max`.
    pub(crate) fn short_bytes(
        &mut self,
        min: usize,
        max: usize,
        what: &'static str,
    ) -> Result<&'a [u8], DecodeError> {
        let len = usize::from(self.u8(what)?);
        if len < min || len > max {
            return Err(DecodeError::Malformed(what));
        }
        self.take(len, what)
    }

    /// A one-byte list length that must not exceed `max`.
    pub(crate) fn count(&mut self, max: usize, what: &'static str) -> Result<usize, DecodeError> {
        let n = usize::from(self.u8(what)?);
        if n > max {
            return Err(DecodeError::Malformed(what));
        }
        Ok(n)
    }

    /// A presence flag: 0 absent, 1 present, anything else non-canonical.
    pub(crate) fn flag(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Malformed(what)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T_PLAIN: u8 = 1;
    const T_VERSIONED: u8 = 2;

    fn rule(ty: u8) -> Option<TypeRule> {
        match ty {
            T_PLAIN => Some(TypeRule { max_body: 5, version: None }),
            T_VERSIONED => Some(TypeRule { max_body: 3, version: Some(7) }),
            _ => None,
        }
    }

    /// A toy message set: type 1 carries a u32, type 2 a version and one byte.
    fn decode(buf: &[u8]) -> DecodeResult<u32> {
        decode_frame(buf, 10, rule, |ty, r| match ty {
            T_PLAIN => r.u32("truncated value"),
            _ => {
                let _version = r.u8("truncated version")?;
                r.u8("truncated value").map(u32::from)
            }
        })
    }

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut v = (body.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn complete_frame_reports_its_length_and_ignores_what_follows() {
        let mut buf = frame(&[T_PLAIN, 0, 0, 1, 2]);
        buf.extend_from_slice(&[9, 9, 9]);
        assert_eq!(decode(&buf), Ok(Decoded::Complete { msg: 0x102, consumed: 9 }));
    }

    #[test]
    fn every_proper_prefix_is_incomplete() {
        for buf in [frame(&[T_PLAIN, 0, 0, 1, 2]), frame(&[T_VERSIONED, 7, 3])] {
            for cut in 0..buf.len() {
                assert_eq!(decode(&buf[..cut]), Ok(Decoded::Incomplete), "cut at {cut}");
            }
            assert!(matches!(decode(&buf), Ok(Decoded::Complete { .. })));
        }
    }

    #[test]
    fn huge_length_is_rejected_after_the_prefix_alone() {
        assert_eq!(
            decode(&[0xff, 0xff, 0xff, 0xff]),
            Err(DecodeError::TooLarge { len: 0xffff_ffff, max: 10 })
        );
        assert_eq!(decode(&[0, 0, 0, 11]), Err(DecodeError::TooLarge { len: 11, max: 10 }));
    }

    #[test]
    fn per_type_limit_is_checked_once_the_type_is_known() {
        assert_eq!(decode(&[0, 0, 0, 6, T_PLAIN]), Err(DecodeError::TooLarge { len: 6, max: 5 }));
        assert_eq!(
            decode(&[0, 0, 0, 4, T_VERSIONED, 7]),
            Err(DecodeError::TooLarge { len: 4, max: 3 })
        );
    }

    #[test]
    fn version_is_checked_before_the_type_limit() {
        assert_eq!(decode(&[0, 0, 0, 9, T_VERSIONED, 8]), Err(DecodeError::UnsupportedVersion(8)));
        assert_eq!(
            decode(&[0, 0, 0, 1, T_VERSIONED]),
            Err(DecodeError::Malformed("missing version"))
        );
    }

    #[test]
    fn empty_body_unknown_type_short_and_long_fields() {
        assert_eq!(decode(&[0, 0, 0, 0]), Err(DecodeError::Malformed("empty frame body")));
        assert_eq!(decode(&[0, 0, 0, 0, 1]), Err(DecodeError::Malformed("empty frame body")));
        assert_eq!(decode(&[0, 0, 0, 1, 0x33]), Err(DecodeError::UnknownType(0x33)));
        assert_eq!(
            decode(&frame(&[T_PLAIN, 0, 1])),
            Err(DecodeError::Malformed("truncated value"))
        );
        assert_eq!(
            decode(&frame(&[T_VERSIONED, 7, 1, 2])),
            Err(DecodeError::TooLarge { len: 4, max: 3 })
        );
        assert_eq!(
            decode(&frame(&[T_PLAIN, 0, 0, 0, 1, 5])),
            Err(DecodeError::TooLarge { len: 6, max: 5 })
        );
    }

    #[test]
    fn trailing_bytes_inside_the_body_are_rejected() {
        let rule = |_| Some(TypeRule { max_body: 10, version: None });
        let buf = frame(&[T_PLAIN, 0, 0, 0, 1, 0xaa, 0xbb]);
        assert_eq!(
            decode_frame(&buf, 10, rule, |_, r| r.u32("x")),
            Err(DecodeError::TrailingBytes { extra: 2 })
        );
    }

    #[test]
    fn encode_frame_patches_the_length_or_poisons() {
        let mut out = vec![0xee];
        encode_frame(&mut out, 3, 10, |o| {
            o.extend_from_slice(&[1, 2]);
            Ok(())
        });
        assert_eq!(out, [0xee, 0, 0, 0, 3, 3, 1, 2]);

        let mut out = vec![0xee];
        encode_frame(&mut out, 3, 10, |o| {
            o.extend_from_slice(&[1, 2]);
            Err("bad field")
        });
        assert_eq!(out, [0xee, 0, 0, 0, 1, 3]);

        let mut out = Vec::new();
        encode_frame(&mut out, 3, 2, |o| {
            o.extend_from_slice(&[1, 2]);
            Ok(())
        });
        assert_eq!(out, [0, 0, 0, 1, 3], "a body over the type's limit is poisoned too");
    }

    #[test]
    fn reader_fields() {
        let mut r = Reader { rest: &[2, b'a', b'b', 3, 1, 0, 2] };
        assert_eq!(r.short_bytes(1, 2, "s"), Ok(&b"ab"[..]));
        assert_eq!(r.count(2, "c"), Err(DecodeError::Malformed("c")));
        assert_eq!(r.flag("f"), Ok(true));
        assert_eq!(r.flag("f"), Ok(false));
        assert_eq!(r.flag("f"), Err(DecodeError::Malformed("f")));
        assert_eq!(r.u8("end"), Err(DecodeError::Malformed("end")));
        let mut r = Reader { rest: &[0] };
        assert_eq!(r.short_bytes(1, 2, "empty"), Err(DecodeError::Malformed("empty")));
    }
}
