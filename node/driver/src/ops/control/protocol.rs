//! The control protocol, version 1: JSON lines over the control socket
//! (`docs/control.md` is its reference).
//!
//! One request per line, one reply per line (`events` then streams event
//! lines until either side hangs up). Every reply carries `"v"` and `"ok"`;
//! a refusal carries `"error"`, a sentence meant for a person. A request
//! names the version it speaks; a node answers only the version it knows,
//! and a change that would alter the meaning of an existing field or op
//! takes a new version number (new fields and ops do not).

use super::snapshot::StatusSnapshot;
use serde::{Deserialize, Serialize};

/// The protocol version this node speaks.
pub const VERSION: u32 = 1;

/// Longest request line read (newline excluded); a longer one is answered
/// with an error and the connection is closed.
pub const MAX_REQUEST_LINE: usize = 4096;

/// Longest op name echoed back in an error (the rest is cut).
const MAX_ECHO: usize = 64;

/// What a client asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// A status snapshot.
    Status,
    /// A live stream of the node's events.
    Events,
    /// Re-read and apply the config file.
    Reload,
    /// (Hubs) revoke a key id or a peer id.
    Revoke(String),
}

/// Why a request line was refused; the message is what the client is told.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The line is longer than [`MAX_REQUEST_LINE`].
    #[error("request line longer than {MAX_REQUEST_LINE} bytes; closing")]
    TooLong,
    /// The line is not UTF-8 text.
    #[error("request line is not UTF-8 text")]
    NotText,
    /// The line is not a JSON object.
    #[error("malformed request ({0}); send one JSON object per line, e.g. {{\"v\":1,\"op\":\"status\"}}")]
    Malformed(String),
    /// The request names no version.
    #[error(
        "request without \"v\": name the protocol version, e.g. {{\"v\":1,\"op\":\"status\"}}"
    )]
    NoVersion,
    /// The request speaks another version.
    #[error("protocol version {0} is not supported: this node speaks v{VERSION}")]
    Version(u64),
    /// The request names no op.
    #[error("request without \"op\": the v1 ops are status, events, reload and revoke")]
    NoOp,
    /// The op is not one of this version's.
    #[error("unknown op `{0}`: the v1 ops are status, events, reload and revoke")]
    UnknownOp(String),
    /// `revoke` without a string `target`.
    #[error("revoke needs \"target\": a key id or a peer id, e.g. {{\"v\":1,\"op\":\"revoke\",\"target\":\"alice\"}}")]
    NoTarget,
}

/// A request as it arrives; fields other than these are ignored, so a
/// later client may send more.
#[derive(Deserialize)]
struct Wire {
    v: Option<serde_json::Value>,
    op: Option<serde_json::Value>,
    target: Option<serde_json::Value>,
}

/// Reads one request line (without its newline).
pub fn parse_request(line: &[u8]) -> Result<Request, RequestError> {
    if line.len() > MAX_REQUEST_LINE {
        return Err(RequestError::TooLong);
    }
    let text = std::str::from_utf8(line).map_err(|_| RequestError::NotText)?;
    let wire: Wire =
        // serde quotes what it could not read (a 4 KiB string, say): cut it too.
        serde_json::from_str(text).map_err(|e| RequestError::Malformed(echo_long(&e.to_string())))?;
    match wire.v {
        None => return Err(RequestError::NoVersion),
        Some(v) => match v.as_u64() {
            Some(1) => {}
            Some(other) => return Err(RequestError::Version(other)),
            None => {
                let v = echo(&v.to_string());
                return Err(RequestError::Malformed(format!("\"v\" must be a number, not {v}")));
            }
        },
    }
    let op = match wire.op {
        None => return Err(RequestError::NoOp),
        Some(serde_json::Value::String(op)) => op,
        Some(other) => {
            return Err(RequestError::Malformed(format!(
                "\"op\" must be a string, not {}",
                echo(&other.to_string())
            )))
        }
    };
    match op.as_str() {
        "status" => Ok(Request::Status),
        "events" => Ok(Request::Events),
        "reload" => Ok(Request::Reload),
        // A key id is at most 64 characters, a peer id about 52: a longer target is no target.
        "revoke" => match wire.target {
            Some(serde_json::Value::String(t)) if !t.is_empty() && t.len() <= 128 => {
                Ok(Request::Revoke(t))
            }
            _ => Err(RequestError::NoTarget),
        },
        other => Err(RequestError::UnknownOp(echo(other))),
    }
}

/// `s`, cut to [`MAX_ECHO`] characters.
fn echo(s: &str) -> String {
    cut(s, MAX_ECHO)
}

/// A parser's message, cut to 120 characters: room for serde's wording
/// and position while a reply stays well under 1 KiB even JSON-escaped.
fn echo_long(s: &str) -> String {
    cut(s, 120)
}

fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_owned(),
    }
}

/// One reply line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// The protocol version ([`VERSION`]).
    pub v: u32,
    /// Whether the request was served.
    pub ok: bool,
    /// Why not, for a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The answer to `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Box<StatusSnapshot>>,
    /// The answer to `events`: `"streaming"`, then one [`EventLine`] per line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<String>,
    /// The answer to `reload`: the config keys it changed (empty: the file
    /// says what the node runs with).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed: Option<Vec<String>>,
    /// The answer to `revoke`: the admitted hub streams it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<usize>,
}

impl Reply {
    /// A refusal.
    pub fn error(message: impl Into<String>) -> Reply {
        Reply { ok: false, error: Some(message.into()), ..Reply::ok() }
    }

    fn ok() -> Reply {
        Reply {
            v: VERSION,
            ok: true,
            error: None,
            status: None,
            events: None,
            changed: None,
            ended: None,
        }
    }

    /// The answer to `status`.
    pub fn status(snapshot: StatusSnapshot) -> Reply {
        Reply { status: Some(Box::new(snapshot)), ..Reply::ok() }
    }

    /// The first line of an event stream.
    pub fn streaming() -> Reply {
        Reply { events: Some("streaming".into()), ..Reply::ok() }
    }

    /// The answer to a `reload` that applied (or found nothing to change).
    pub fn reloaded(changed: Vec<String>) -> Reply {
        Reply { changed: Some(changed), ..Reply::ok() }
    }

    /// The answer to a `revoke` that took effect.
    pub fn revoked(ended: usize) -> Reply {
        Reply { ended: Some(ended), ..Reply::ok() }
    }

    /// The reply as one line, newline included. (serde_json escapes
    /// newlines inside strings, so the line is whole.)
    pub fn to_line(&self) -> Vec<u8> {
        line(self)
    }
}

/// One event of an `events` stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventLine {
    /// The protocol version ([`VERSION`]).
    pub v: u32,
    /// The event.
    pub event: EventRecord,
}

/// An event the node logged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// `debug`, `info` or `warn`: the level the node logs it at.
    pub level: String,
    /// The event's name (`SessionEstablished`, `HubRefused`, …).
    pub kind: String,
    /// The event with its fields, as the node's log prints it (for people:
    /// its form may change between releases).
    pub detail: String,
}

/// `value` as one JSON line, newline included.
pub fn line<T: Serialize>(value: &T) -> Vec<u8> {
    // Our own types only: plain fields, string keys, so encoding cannot fail.
    let mut out = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    out.push(b'\n');
    out
}

/// The check of the `control_request` fuzz target (`fuzz/`): arbitrary
/// bytes split into lines as the endpoint splits them. Panics if a line
/// yields neither a request nor a refusal whose reply is one bounded JSON
/// line that reads back the same, or if the framing holds more than the
/// line limit.
#[cfg(any(test, feature = "fuzzing"))]
pub fn fuzz_request(data: &[u8]) {
    use bytes::BytesMut;
    use tokio_util::codec::Decoder;
    let (config, rest) = data.split_first().map_or((0, &[][..]), |(c, r)| (*c, r));
    let mut codec = framing();
    let mut buf = BytesMut::new();
    for chunk in rest.chunks(usize::from(config) + 1) {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(line)) => check_line(&line),
                Ok(None) => break,
                // Over the limit: the endpoint answers and closes.
                Err(_) => return,
            }
        }
        assert!(buf.len() <= MAX_REQUEST_LINE, "the framing holds {} bytes", buf.len());
    }
    fn check_line(line: &[u8]) {
        assert!(line.len() <= MAX_REQUEST_LINE);
        if let Err(e) = parse_request(line) {
            let reply = Reply::error(e.to_string()).to_line();
            assert!(reply.len() < 1024, "a {}-byte error reply", reply.len());
            let body = &reply[..reply.len() - 1];
            assert!(!body.contains(&b'\n'), "a reply spans lines");
            let back: Reply = serde_json::from_slice(body).expect("the reply reads back");
            assert_eq!(back, Reply::error(e.to_string()));
        }
    }
}

/// How the endpoint splits its input into request lines: at `\n`, each at
/// most [`MAX_REQUEST_LINE`] bytes (a `\r` before the `\n` is kept and is
/// JSON whitespace).
pub fn framing() -> tokio_util::codec::AnyDelimiterCodec {
    tokio_util::codec::AnyDelimiterCodec::new_with_max_length(
        b"\n".to_vec(),
        Vec::new(),
        MAX_REQUEST_LINE,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_op_and_refusal_is_named() {
        assert_eq!(parse_request(br#"{"v":1,"op":"status"}"#), Ok(Request::Status));
        assert_eq!(
            parse_request(b" {\"op\":\"events\", \"v\":1, \"later\":true}\r"),
            Ok(Request::Events)
        );
        let refused = |line: &[u8]| parse_request(line).expect_err("refused").to_string();
        assert!(refused(b"status").starts_with("malformed request"));
        assert!(refused(br#"{"op":"status"}"#).contains("without \"v\""));
        assert!(refused(br#"{"v":2,"op":"status"}"#).contains("version 2 is not supported"));
        assert!(refused(br#"{"v":"1","op":"status"}"#).contains("must be a number"));
        assert!(refused(br#"{"v":1}"#).contains("without \"op\""));
        assert!(refused(br#"{"v":1,"op":"dance"}"#).contains("unknown op `dance`"));
        assert_eq!(parse_request(br#"{"v":1,"op":"reload"}"#), Ok(Request::Reload));
        assert_eq!(
            parse_request(br#"{"v":1,"op":"revoke","target":"alice"}"#),
            Ok(Request::Revoke("alice".into()))
        );
        for line in [
            &br#"{"v":1,"op":"revoke"}"#[..],
            br#"{"v":1,"op":"revoke","target":7}"#,
            br#"{"v":1,"op":"revoke","target":""}"#,
        ] {
            assert!(refused(line).contains("revoke needs \"target\""), "{line:?}");
        }
        assert!(refused(&[b' '; MAX_REQUEST_LINE + 1]).contains("longer than 4096"));
        assert!(refused(&[0xff, b'{']).contains("UTF-8"));
        let long = format!(r#"{{"v":1,"op":"{}"}}"#, "x".repeat(1000));
        assert!(refused(long.as_bytes()).len() < 200, "the op is echoed cut short");
    }

    #[test]
    fn the_fuzz_corpus_replays_clean() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/corpus/control_request");
        let mut ran = 0;
        for entry in std::fs::read_dir(&dir).expect("the control_request corpus") {
            let path = entry.expect("corpus entry").path();
            let data = std::fs::read(&path).expect("corpus input");
            let ok = std::panic::catch_unwind(|| fuzz_request(&data));
            assert!(ok.is_ok(), "{} fails", path.display());
            ran += 1;
        }
        assert!(ran > 0, "the control_request corpus is empty");
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_get_a_request_or_a_one_line_refusal(
            data in proptest::collection::vec(any::<u8>(), 0..6000),
        ) {
            fuzz_request(&data);
        }

        #[test]
        fn any_object_with_another_version_is_refused_by_version(
            v in 2u64..,
            op in "[a-z]{0,12}",
        ) {
            let line = format!(r#"{{"v":{v},"op":"{op}"}}"#);
            prop_assert_eq!(parse_request(line.as_bytes()), Err(RequestError::Version(v)));
        }

        #[test]
        fn json_text_never_breaks_the_parser(text in "\\PC{0,200}") {
            let _ = parse_request(text.as_bytes());
            let wrapped = format!(r#"{{"v":1,"op":{}}}"#, serde_json::Value::String(text));
            let _ = parse_request(wrapped.as_bytes());
        }
    }
}
