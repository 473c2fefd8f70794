//! The peer-to-peer wire protocols, as pure codecs over `&[u8]`.
//!
//! No IO and no buffering here: a decoder looks at the bytes received so far
//! and says [`Decoded::Complete`] (the message and how many bytes it took),
//! [`Decoded::Incomplete`] (read more, call again with the longer buffer) or
//! [`DecodeError`] (close the stream). An encoder appends one frame to a
//! `Vec<u8>`. The encoding is hand-written and canonical: integers are
//! big-endian, every value has exactly one byte string, and a decoder rejects
//! every other byte string, so decode-then-encode reproduces the input.
//!
//! # Frames
//!
//! ```text
//! [body length: u32 BE][message type: u8][fields …]
//!                      └──────────── body ────────┘
//! ```
//!
//! The length is checked against the largest body the stream can carry as
//! soon as its 4 bytes arrive, then against the message type's own limit once
//! the type byte is there, and only then does the decoder wait for the rest —
//! a peer announcing 4 GiB is turned away after 4 bytes, never buffered for.
//! Details in [`frame`].
//!
//! # `/meshproxy/proxy/1` ([`proxy`])
//!
//! ```text
//! client                                   exit
//!   │── ConnectRequest { version, target, session } ─▶│  policy check, DNS, dial
//!   │◀─ ConnectResponse { status, bound } ────────────│
//!   │◀════════════ raw bytes, both ways ═════════════▶│  (only after Succeeded)
//! ```
//!
//! Limits: request body ≤ [`proxy::MAX_REQUEST`] (270 bytes, a 255-byte
//! domain), response body ≤ [`proxy::MAX_RESPONSE`] (21 bytes).
//!
//! # `/meshproxy/hub/1` ([`hub`])
//!
//! ```text
//! peer                                      hub
//!   │◀─ Challenge { version, nonce } ──────────│
//!   │── Auth { version, role, key_id, proof } ▶│  proof: HMAC(token, nonce)
//!   │◀─ AuthOk ────────────────────────────────│  (or Error, then close)
//! exit (any listed role: the role travels in Register, Find and records):
//!   │── Register { role, addrs, attrs, … } ───▶│
//!   │◀─ Registered { ttl_secs } ───────────────│
//!   │── Heartbeat { load } ───────────────────▶│  before the ttl runs out, repeated
//!   │◀─ HeartbeatAck { ttl_secs } ─────────────│
//! client:
//!   │── Find { role, filter, limit } ─────────▶│
//!   │◀─ Peers { peers } ───────────────────────│  at most MAX_PEERS records
//!   │── Resolve { peer } ─────────────────────▶│
//!   │◀─ Resolved { peer, record } ─────────────│
//! ```
//!
//! Limits: every field bound of [`crate::record`] (addresses, labels, peer
//! ids), key ids ≤ [`hub::MAX_KEY_ID_LEN`], error messages ≤
//! [`hub::MAX_ERROR_MESSAGE_LEN`], `Peers` ≤ [`hub::MAX_PEERS`]; per-type body
//! limits follow from those, the largest being [`hub::MAX_HUB_FRAME`].
//!
//! # `/meshproxy/ingress/1` ([`ingress`])
//!
//! ```text
//! gateway                                          agent
//!   │── Open { version, upstream, service, client, ▶│  ticket, service → origin,
//!   │         scheme, host, port, ticket }          │  allow-list, dial
//!   │◀─ Answer { status } ──────────────────────────│  Ok, or a failure → 403/502/503/504
//!   │◀═════════ raw HTTP/1.1 bytes, both ways ═════▶│  (only after Ok)
//! ```
//!
//! Limits: `Open` body ≤ [`ingress::MAX_OPEN`] (526 bytes: a 64-byte service,
//! a 255-byte host, the longest ticket), `Answer` body ≤
//! [`ingress::MAX_ANSWER`] (2 bytes). A failure answer may be retried on
//! another agent unless it is `Forbidden` ([`AnswerStatus::retryable`]).
//!
//! # Versions
//!
//! The messages that open a conversation (`ConnectRequest`, `Open`,
//! `Challenge`, `Auth`) carry a version byte right after the type byte. A decoder reports
//! any version but its own as [`DecodeError::UnsupportedVersion`] as soon as
//! that byte arrives, so the receiver can still answer with a clean error
//! (`ConnectResponse { status: GeneralFailure }`, `Answer { status: Failure }`,
//! `Error { UnsupportedVersion }`)
//! before closing.

pub mod frame;
pub mod hub;
pub mod ingress;
pub mod proxy;

pub use frame::{DecodeError, DecodeResult, Decoded};
pub use hub::{HubErrorCode, HubMessage, Role, HUB_PROTOCOL, HUB_VERSION};
pub use ingress::{Answer, AnswerStatus, Open, INGRESS_PROTOCOL, INGRESS_VERSION};
pub use proxy::{ConnectRequest, ConnectResponse, PROXY_PROTOCOL, PROXY_VERSION};

/// The longest encoded ticket (see [`crate::ticket`] for its layout:
/// version, hub and holder ids with a length byte each, roles, expiry, an
/// Ed25519 signature). Both protocols carry tickets as opaque bytes behind a
/// one-byte length and check this bound before they copy one, so it is a
/// wire fact; `ticket` builds and checks tickets within it.
pub const MAX_TICKET_LEN: usize = 1 + 2 * (1 + crate::ids::MAX_PEER_ID_LEN) + 1 + 8 + 64;

const _: () = assert!(MAX_TICKET_LEN <= u8::MAX as usize, "a ticket's length travels in one byte");
