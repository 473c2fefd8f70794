//! `/meshproxy/hub/1`: how exits and agents (any [`Role`] that
//! [`Role::is_listed`]) register with a hub and how clients find them. One [`HubMessage`] enum covers both directions; which side may send
//! what is the hub machine's business, not the codec's.
//!
//! ```text
//! hub → peer     Challenge { version, nonce }          first frame on every hub stream
//! peer → hub     Auth { version, role, key_id, proof } the only frame a hub reads before it
//!                                                      admits; proof: see crate::admission
//! hub → peer     AuthOk { ticket }                     (or Error, then close)
//! exit:          Register → Registered, then Heartbeat → HeartbeatAck, …
//! client:        Find → Peers, Resolve → Resolved, …
//! any admitted:  RenewTicket → Ticket                  a fresh ticket (crate::ticket)
//! either way     Error { code, message }
//! ```
//!
//! Byte layout of the bodies (integers big-endian; see [`super::frame`] for
//! the length prefix in front):
//!
//! ```text
//! Challenge     0x01 | version u8 | nonce [32]
//! Auth          0x02 | version u8 | role u8 | key_id: len u8 (1..=64), [A-Za-z0-9_.-] | proof [32]
//! AuthOk        0x03 | grant
//! Register      0x04 | listed | addrs | attrs | capacity u32 | relayed u8 (0x00 | 0x01: reachable through this hub's relay)
//! Registered    0x05 | ttl_secs u32
//! Heartbeat     0x06 | load u32
//! HeartbeatAck  0x07 | ttl_secs u32
//! Find          0x08 | listed | filter | limit u16
//! Peers         0x09 | count u8 (≤ MAX_PEERS) | record × count
//! Resolve       0x0a | peer
//! Resolved      0x0b | peer | 0x00                      (unknown to the hub)
//!                           | 0x01 | record             (record.peer == peer)
//! Error         0x0c | code u8 | len u16 (≤ 256) | message [len], UTF-8
//! RenewTicket   0x0d
//! Ticket        0x0e | grant
//!
//! grant    valid_secs u32 | len u8 (1..=MAX_TICKET_LEN) | ticket [len]
//! role     0x01 exit | 0x02 client | 0x03 agent | 0x04 gateway
//! listed   a role that registers in a directory (Role::is_listed): 0x01 exit | 0x03 agent
//! code     0x01 UnsupportedVersion | 0x02 BadProof | 0x03 UnknownKey | 0x04 NotRegistered
//!          | 0x05 DirectoryFull | 0x06 RateLimited | 0x07 Malformed | 0x08 Internal
//!          | 0x09 Forbidden
//! peer     len u8 (1..=MAX_PEER_ID_LEN) | peer id bytes
//! addrs    count u8 (≤ MAX_ADDRS) | (len u8 (1..=MAX_ADDR_LEN) | address bytes) × count
//! country  0x00 (none) | 0x01 | two upper-case ASCII letters
//! labels   count u8 (≤ MAX_LABELS) | (len u8 | label) × count, each passing valid_label
//! attrs    country | labels, labels strictly ascending (sorted, no duplicates)
//! filter   country | labels, in the client's order
//! record   peer | listed | addrs | attrs | capacity u32 | relays
//! relays   count u8 (≤ MAX_RELAYS) | peer × count   (hubs whose relay reaches the exit)
//! ```
//!
//! Decoding enforces every limit and rule above (otherwise
//! [`DecodeError::Malformed`] with the reason), so a decoded message always
//! satisfies what an encoder requires, and re-encodes to the same bytes.
//! `Find.limit` is not bounded here: the hub answers with at most
//! `min(limit, MAX_PEERS)` records.
//!
//! A hub decodes what an unadmitted peer sends with [`decode_auth`] (an
//! `Auth` and nothing else, at most [`AUTH_MAX`] bytes, refused after five
//! bytes otherwise) and what an admitted one sends with [`decode_from_peer`]
//! (only the peer → hub types, so never the 116 KB a `Peers` may take).
//!
//! Size limits: each message type has its own largest body, derived from the
//! `record` limits ([`MAX_ADDRS`], [`MAX_ADDR_LEN`], [`MAX_LABELS`],
//! [`MAX_LABEL_LEN`], [`MAX_PEER_ID_LEN`]) by adding up the largest encoding of
//! each field. The largest of them is `Peers` with [`MAX_PEERS`] records of the
//! largest size, which makes [`MAX_HUB_FRAME`] (116 226 bytes with today's
//! limits) — the bound checked on the length prefix before the type is known.

use super::frame::{
    decode_frame, encode_frame, put_count, put_short_bytes, DecodeError, DecodeResult, Invalid,
    Reader, TypeRule,
};
use super::MAX_TICKET_LEN;
use crate::ids::{PeerId, MAX_PEER_ID_LEN};
/// The roles are the directory's vocabulary too; they live in
/// [`crate::record`] and keep this path for the admission side.
pub use crate::record::Role;
use crate::record::{
    valid_label, Attrs, CountryCode, PeerAddr, PeerFilter, PeerRecord, MAX_ADDRS, MAX_ADDR_LEN,
    MAX_LABELS, MAX_LABEL_LEN, MAX_RELAYS,
};

/// The libp2p protocol name of hub streams.
pub const HUB_PROTOCOL: &str = "/meshproxy/hub/1";
/// The version this node writes into, and accepts in, `Challenge` and `Auth`.
/// 3: `Register`, `Find` and every record carry the listed role.
pub const HUB_VERSION: u8 = 3;

/// Most records one `Peers` answer carries.
pub const MAX_PEERS: usize = 64;
/// Longest key id, in bytes.
pub const MAX_KEY_ID_LEN: usize = 64;
/// Longest `Error` message, in bytes.
pub const MAX_ERROR_MESSAGE_LEN: usize = 256;

// Every length and count below travels in one byte.
const _: () = assert!(
    MAX_PEERS <= 255
        && MAX_KEY_ID_LEN <= 255
        && MAX_ADDRS <= 255
        && MAX_ADDR_LEN <= 255
        && MAX_LABELS <= 255
        && MAX_LABEL_LEN <= 255
        && MAX_PEER_ID_LEN <= 255
        && MAX_RELAYS <= 255
);
const _: () = assert!(MAX_ERROR_MESSAGE_LEN <= u16::MAX as usize);

const TYPE_CHALLENGE: u8 = 0x01;
const TYPE_AUTH: u8 = 0x02;
const TYPE_AUTH_OK: u8 = 0x03;
const TYPE_REGISTER: u8 = 0x04;
const TYPE_REGISTERED: u8 = 0x05;
const TYPE_HEARTBEAT: u8 = 0x06;
const TYPE_HEARTBEAT_ACK: u8 = 0x07;
const TYPE_FIND: u8 = 0x08;
const TYPE_PEERS: u8 = 0x09;
const TYPE_RESOLVE: u8 = 0x0a;
const TYPE_RESOLVED: u8 = 0x0b;
const TYPE_ERROR: u8 = 0x0c;
const TYPE_RENEW_TICKET: u8 = 0x0d;
const TYPE_TICKET: u8 = 0x0e;

const NONCE_LEN: usize = 32;
const PROOF_LEN: usize = 32;

// Largest encoding of each field, then of each body (type byte included).
const PEER_MAX: usize = 1 + MAX_PEER_ID_LEN;
const ADDRS_MAX: usize = 1 + MAX_ADDRS * (1 + MAX_ADDR_LEN);
const COUNTRY_MAX: usize = 1 + 2;
const LABELS_MAX: usize = 1 + MAX_LABELS * (1 + MAX_LABEL_LEN);
const ATTRS_MAX: usize = COUNTRY_MAX + LABELS_MAX;
const RELAYS_MAX: usize = 1 + MAX_RELAYS * PEER_MAX;
const LISTED_MAX: usize = 1;
const RECORD_MAX: usize = PEER_MAX + LISTED_MAX + ADDRS_MAX + ATTRS_MAX + 4 + RELAYS_MAX;

const CHALLENGE_MAX: usize = 1 + 1 + NONCE_LEN;
/// The largest `Auth` body: the most an unadmitted peer may send a hub.
pub const AUTH_MAX: usize = 1 + 1 + 1 + 1 + MAX_KEY_ID_LEN + PROOF_LEN;
const GRANT_MAX: usize = 4 + 1 + MAX_TICKET_LEN;
const AUTH_OK_MAX: usize = 1 + GRANT_MAX;
const RENEW_TICKET_MAX: usize = 1;
const TICKET_MAX: usize = 1 + GRANT_MAX;
const REGISTER_MAX: usize = 1 + LISTED_MAX + ADDRS_MAX + ATTRS_MAX + 4 + 1;
const U32_MSG_MAX: usize = 1 + 4;
const FIND_MAX: usize = 1 + LISTED_MAX + ATTRS_MAX + 2;
const PEERS_MAX: usize = 1 + 1 + MAX_PEERS * RECORD_MAX;
const RESOLVE_MAX: usize = 1 + PEER_MAX;
const RESOLVED_MAX: usize = 1 + PEER_MAX + 1 + RECORD_MAX;
const ERROR_MAX: usize = 1 + 1 + 2 + MAX_ERROR_MESSAGE_LEN;

const fn max_of(xs: &[usize]) -> usize {
    let mut m = 0;
    let mut i = 0;
    while i < xs.len() {
        if xs[i] > m {
            m = xs[i];
        }
        i += 1;
    }
    m
}

/// Largest body any hub message can have: the bound on every length prefix
/// on a hub stream. See the module docs for how it is derived.
pub const MAX_HUB_FRAME: usize = max_of(&[
    CHALLENGE_MAX,
    AUTH_MAX,
    AUTH_OK_MAX,
    REGISTER_MAX,
    U32_MSG_MAX,
    FIND_MAX,
    PEERS_MAX,
    RESOLVE_MAX,
    RESOLVED_MAX,
    ERROR_MAX,
    RENEW_TICKET_MAX,
    TICKET_MAX,
]);

/// The largest body an admitted peer may send a hub (the peer → hub types).
pub const MAX_FROM_PEER_FRAME: usize =
    max_of(&[REGISTER_MAX, U32_MSG_MAX, FIND_MAX, RESOLVE_MAX, ERROR_MAX, RENEW_TICKET_MAX]);

/// Why a hub (or a peer) refuses what the other side sent.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum HubErrorCode {
    /// The peer's protocol version is not one this side speaks.
    UnsupportedVersion,
    /// The challenge response does not match the key's token.
    BadProof,
    /// The hub knows no key by that id.
    UnknownKey,
    /// A heartbeat or request that needs a registration came without one.
    NotRegistered,
    /// The directory has no room for another exit.
    DirectoryFull,
    /// The peer sends faster than the hub allows.
    RateLimited,
    /// The peer's frame did not decode, or came out of order.
    Malformed,
    /// The hub failed on its own account.
    Internal,
    /// The peer authenticated, but its key does not admit it in this role
    /// (or is pinned to another peer).
    Forbidden,
}

impl HubErrorCode {
    /// Every code, in wire order.
    pub const ALL: [HubErrorCode; 9] = [
        HubErrorCode::UnsupportedVersion,
        HubErrorCode::BadProof,
        HubErrorCode::UnknownKey,
        HubErrorCode::NotRegistered,
        HubErrorCode::DirectoryFull,
        HubErrorCode::RateLimited,
        HubErrorCode::Malformed,
        HubErrorCode::Internal,
        HubErrorCode::Forbidden,
    ];

    /// The wire byte.
    pub fn code(self) -> u8 {
        match self {
            HubErrorCode::UnsupportedVersion => 0x01,
            HubErrorCode::BadProof => 0x02,
            HubErrorCode::UnknownKey => 0x03,
            HubErrorCode::NotRegistered => 0x04,
            HubErrorCode::DirectoryFull => 0x05,
            HubErrorCode::RateLimited => 0x06,
            HubErrorCode::Malformed => 0x07,
            HubErrorCode::Internal => 0x08,
            HubErrorCode::Forbidden => 0x09,
        }
    }

    /// The code for a wire byte, `None` if no code has it.
    pub fn from_code(code: u8) -> Option<HubErrorCode> {
        HubErrorCode::ALL.into_iter().find(|c| c.code() == code)
    }
}

/// Whether a key id is acceptable: 1..=64 bytes of `[A-Za-z0-9_.-]`, so it
/// can sit in config files and logs without quoting.
pub fn valid_key_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_KEY_ID_LEN
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// One message on a hub stream, either direction.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum HubMessage {
    /// Hub → peer, first on every stream: the nonce the peer must prove its
    /// token over.
    Challenge {
        /// The hub's protocol version.
        version: u8,
        /// Fresh random bytes (from the OS in production, see
        /// `NodeConfig::entropy`).
        nonce: [u8; 32],
    },
    /// Peer → hub: who it is and the proof that it holds the key's token.
    Auth {
        /// The peer's protocol version.
        version: u8,
        /// What the peer wants to do.
        role: Role,
        /// Which admission key it claims, see [`valid_key_id`].
        key_id: String,
        /// The SCRAM-style proof of [`crate::admission`], bound to the
        /// nonce, both peer ids, the key id and the role.
        proof: [u8; 32],
    },
    /// Hub → peer: authenticated; here is the peer's first ticket.
    AuthOk {
        /// A ticket exits accept as proof of this admission.
        grant: TicketGrant,
    },
    /// Exit → hub: put me in the directory.
    Register {
        /// The role to be listed under; must be the role the peer was
        /// admitted in, and one that [`Role::is_listed`].
        role: Role,
        /// Where clients can dial the exit, at most [`MAX_ADDRS`].
        addrs: Vec<PeerAddr>,
        /// Its country and labels (labels sorted, unique).
        attrs: Attrs,
        /// Concurrent sessions it is willing to carry.
        capacity: u32,
        /// The exit holds a relay reservation at this hub: clients may dial
        /// it through the hub.
        relayed: bool,
    },
    /// Hub → exit: registered; heartbeat before `ttl_secs` run out.
    Registered {
        /// Seconds the registration lives without a heartbeat.
        ttl_secs: u32,
    },
    /// Exit → hub: still here.
    Heartbeat {
        /// Sessions the exit carries right now.
        load: u32,
    },
    /// Hub → exit: registration extended.
    HeartbeatAck {
        /// Seconds the registration now lives without another heartbeat.
        ttl_secs: u32,
    },
    /// Client → hub: which exits match?
    Find {
        /// The role of the peers wanted (one that [`Role::is_listed`]).
        role: Role,
        /// What the exits must satisfy.
        filter: PeerFilter,
        /// Most records wanted; the hub also caps at [`MAX_PEERS`].
        limit: u16,
    },
    /// Hub → client: the exits that matched, at most [`MAX_PEERS`].
    Peers {
        /// The matching exits' records.
        peers: Vec<PeerRecord>,
    },
    /// Client → hub: how do I reach this exit?
    Resolve {
        /// The exit asked about.
        peer: PeerId,
    },
    /// Hub → client: the exit's record, or `None` if the hub does not know it.
    Resolved {
        /// The exit asked about.
        peer: PeerId,
        /// Its record; `record.peer == peer`.
        record: Option<PeerRecord>,
    },
    /// Admitted peer → hub: a fresh ticket, please (before the last runs out).
    RenewTicket,
    /// Hub → peer: the fresh ticket.
    Ticket {
        /// The ticket and how long it lasts.
        grant: TicketGrant,
    },
    /// Either way: a refusal; the sender closes the stream after it.
    Error {
        /// What went wrong, for the peer's logic.
        code: HubErrorCode,
        /// What went wrong, for a human; at most [`MAX_ERROR_MESSAGE_LEN`] bytes.
        message: String,
    },
}

/// A ticket as a hub hands it out.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TicketGrant {
    /// Seconds the ticket lasts from now (by the hub's reckoning; the holder
    /// renews on its own clock, not on the ticket's wall-clock expiry).
    pub valid_secs: u32,
    /// The signed ticket, 1..=[`MAX_TICKET_LEN`] bytes, opaque to the holder.
    pub ticket: Vec<u8>,
}

fn type_rule(ty: u8) -> Option<TypeRule> {
    let (max_body, version) = match ty {
        TYPE_CHALLENGE => (CHALLENGE_MAX, Some(HUB_VERSION)),
        TYPE_AUTH => (AUTH_MAX, Some(HUB_VERSION)),
        TYPE_AUTH_OK => (AUTH_OK_MAX, None),
        TYPE_REGISTER => (REGISTER_MAX, None),
        TYPE_REGISTERED | TYPE_HEARTBEAT | TYPE_HEARTBEAT_ACK => (U32_MSG_MAX, None),
        TYPE_FIND => (FIND_MAX, None),
        TYPE_PEERS => (PEERS_MAX, None),
        TYPE_RESOLVE => (RESOLVE_MAX, None),
        TYPE_RESOLVED => (RESOLVED_MAX, None),
        TYPE_ERROR => (ERROR_MAX, None),
        TYPE_RENEW_TICKET => (RENEW_TICKET_MAX, None),
        TYPE_TICKET => (TICKET_MAX, None),
        _ => return None,
    };
    Some(TypeRule { max_body, version })
}

/// Appends `msg` as one frame.
///
/// Encoders expect values within the limits above. Handed one outside them
/// they neither panic nor truncate it into a different message: they write a
/// frame of the message's type with no fields, which the peer rejects as
/// [`DecodeError::Malformed`] (`RenewTicket` has no fields and so nothing to
/// get wrong).
pub fn encode(msg: &HubMessage, out: &mut Vec<u8>) {
    let put_u32 = |ty: u8, v: u32, out: &mut Vec<u8>| {
        encode_frame(out, ty, U32_MSG_MAX, |out| {
            out.extend_from_slice(&v.to_be_bytes());
            Ok(())
        })
    };
    match msg {
        HubMessage::Challenge { version, nonce } => {
            encode_frame(out, TYPE_CHALLENGE, CHALLENGE_MAX, |out| {
                out.push(*version);
                out.extend_from_slice(nonce);
                Ok(())
            })
        }
        HubMessage::Auth { version, role, key_id, proof } => {
            encode_frame(out, TYPE_AUTH, AUTH_MAX, |out| {
                out.push(*version);
                out.push(role.code());
                if !valid_key_id(key_id) {
                    return Err("bad key id");
                }
                put_short_bytes(out, key_id.as_bytes(), 1, MAX_KEY_ID_LEN, "bad key id")?;
                out.extend_from_slice(proof);
                Ok(())
            })
        }
        HubMessage::AuthOk { grant } => {
            encode_frame(out, TYPE_AUTH_OK, AUTH_OK_MAX, |out| put_grant(out, grant))
        }
        HubMessage::RenewTicket => {
            encode_frame(out, TYPE_RENEW_TICKET, RENEW_TICKET_MAX, |_| Ok(()))
        }
        HubMessage::Ticket { grant } => {
            encode_frame(out, TYPE_TICKET, TICKET_MAX, |out| put_grant(out, grant))
        }
        HubMessage::Register { role, addrs, attrs, capacity, relayed } => {
            encode_frame(out, TYPE_REGISTER, REGISTER_MAX, |out| {
                put_listed(out, *role)?;
                put_addrs(out, addrs)?;
                put_attrs(out, attrs)?;
                out.extend_from_slice(&capacity.to_be_bytes());
                out.push(u8::from(*relayed));
                Ok(())
            })
        }
        HubMessage::Registered { ttl_secs } => put_u32(TYPE_REGISTERED, *ttl_secs, out),
        HubMessage::Heartbeat { load } => put_u32(TYPE_HEARTBEAT, *load, out),
        HubMessage::HeartbeatAck { ttl_secs } => put_u32(TYPE_HEARTBEAT_ACK, *ttl_secs, out),
        HubMessage::Find { role, filter, limit } => encode_frame(out, TYPE_FIND, FIND_MAX, |out| {
            put_listed(out, *role)?;
            put_country(out, filter.country);
            put_labels(out, &filter.labels, false)?;
            out.extend_from_slice(&limit.to_be_bytes());
            Ok(())
        }),
        HubMessage::Peers { peers } => encode_frame(out, TYPE_PEERS, PEERS_MAX, |out| {
            put_count(out, peers.len(), MAX_PEERS, "too many peers")?;
            peers.iter().try_for_each(|p| put_record(out, p))
        }),
        HubMessage::Resolve { peer } => {
            encode_frame(out, TYPE_RESOLVE, RESOLVE_MAX, |out| put_peer(out, peer))
        }
        HubMessage::Resolved { peer, record } => {
            encode_frame(out, TYPE_RESOLVED, RESOLVED_MAX, |out| {
                put_peer(out, peer)?;
                match record {
                    None => out.push(0),
                    Some(rec) if rec.peer == *peer => {
                        out.push(1);
                        put_record(out, rec)?;
                    }
                    Some(_) => return Err("resolved record is for another peer"),
                }
                Ok(())
            })
        }
        HubMessage::Error { code, message } => encode_frame(out, TYPE_ERROR, ERROR_MAX, |out| {
            out.push(code.code());
            let len = u16::try_from(message.len())
                .ok()
                .filter(|&l| usize::from(l) <= MAX_ERROR_MESSAGE_LEN)
                .ok_or("error message too long")?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(message.as_bytes());
            Ok(())
        }),
    }
}

/// Decodes one hub message from the front of `buf`.
///
/// `Challenge` and `Auth` of another protocol version fail with
/// [`DecodeError::UnsupportedVersion`] as soon as the version byte arrives.
pub fn decode(buf: &[u8]) -> DecodeResult<HubMessage> {
    decode_frame(buf, MAX_HUB_FRAME, type_rule, parse)
}

/// Decodes what a hub reads before it admits a peer: one `Auth`, nothing
/// else. A longer length is [`DecodeError::TooLarge`] after four bytes, any
/// other type [`DecodeError::UnknownType`] after five.
pub fn decode_auth(buf: &[u8]) -> DecodeResult<HubMessage> {
    let rule = |ty| (ty == TYPE_AUTH).then(|| type_rule(ty)).flatten();
    decode_frame(buf, AUTH_MAX, rule, parse)
}

/// Decodes what a hub reads from an admitted peer: only the peer → hub types
/// (a peer has no business sending a hub `Peers` or `Challenge`).
pub fn decode_from_peer(buf: &[u8]) -> DecodeResult<HubMessage> {
    let rule = |ty| {
        matches!(
            ty,
            TYPE_REGISTER
                | TYPE_HEARTBEAT
                | TYPE_FIND
                | TYPE_RESOLVE
                | TYPE_RENEW_TICKET
                | TYPE_ERROR
        )
        .then(|| type_rule(ty))
        .flatten()
    };
    decode_frame(buf, MAX_FROM_PEER_FRAME, rule, parse)
}

fn parse(ty: u8, r: &mut Reader<'_>) -> Result<HubMessage, DecodeError> {
    {
        Ok(match ty {
            TYPE_CHALLENGE => HubMessage::Challenge {
                version: r.u8("truncated version")?,
                nonce: r.array("truncated nonce")?,
            },
            TYPE_AUTH => HubMessage::Auth {
                version: r.u8("truncated version")?,
                role: Role::from_code(r.u8("truncated role")?)
                    .ok_or(DecodeError::Malformed("unknown role"))?,
                key_id: {
                    let raw = r.short_bytes(1, MAX_KEY_ID_LEN, "bad key id length")?;
                    core::str::from_utf8(raw)
                        .ok()
                        .filter(|k| valid_key_id(k))
                        .ok_or(DecodeError::Malformed("bad key id"))?
                        .to_owned()
                },
                proof: r.array("truncated proof")?,
            },
            TYPE_AUTH_OK => HubMessage::AuthOk { grant: read_grant(r)? },
            TYPE_RENEW_TICKET => HubMessage::RenewTicket,
            TYPE_TICKET => HubMessage::Ticket { grant: read_grant(r)? },
            TYPE_REGISTER => HubMessage::Register {
                role: read_listed(r)?,
                addrs: read_addrs(r)?,
                attrs: read_attrs(r)?,
                capacity: r.u32("truncated capacity")?,
                relayed: match r.u8("truncated relayed flag")? {
                    0 => false,
                    1 => true,
                    _ => return Err(DecodeError::Malformed("bad relayed flag")),
                },
            },
            TYPE_REGISTERED => HubMessage::Registered { ttl_secs: r.u32("truncated ttl")? },
            TYPE_HEARTBEAT => HubMessage::Heartbeat { load: r.u32("truncated load")? },
            TYPE_HEARTBEAT_ACK => HubMessage::HeartbeatAck { ttl_secs: r.u32("truncated ttl")? },
            TYPE_FIND => HubMessage::Find {
                role: read_listed(r)?,
                filter: PeerFilter { country: read_country(r)?, labels: read_labels(r, false)? },
                limit: r.u16("truncated limit")?,
            },
            TYPE_PEERS => {
                let n = r.count(MAX_PEERS, "too many peers")?;
                let mut peers = Vec::with_capacity(n);
                for _ in 0..n {
                    peers.push(read_record(r)?);
                }
                HubMessage::Peers { peers }
            }
            TYPE_RESOLVE => HubMessage::Resolve { peer: read_peer(r)? },
            TYPE_RESOLVED => {
                let peer = read_peer(r)?;
                let record = match r.flag("bad record flag")? {
                    false => None,
                    true => Some(read_record(r)?),
                };
                if record.as_ref().is_some_and(|rec| rec.peer != peer) {
                    return Err(DecodeError::Malformed("resolved record is for another peer"));
                }
                HubMessage::Resolved { peer, record }
            }
            TYPE_ERROR => {
                let code = HubErrorCode::from_code(r.u8("truncated error code")?)
                    .ok_or(DecodeError::Malformed("unknown error code"))?;
                let len = usize::from(r.u16("truncated message length")?);
                if len > MAX_ERROR_MESSAGE_LEN {
                    return Err(DecodeError::Malformed("error message too long"));
                }
                let raw = r.take(len, "truncated error message")?;
                let message = core::str::from_utf8(raw)
                    .map_err(|_| DecodeError::Malformed("error message is not UTF-8"))?
                    .to_owned();
                HubMessage::Error { code, message }
            }
            // `type_rule` admitted only the types above.
            _ => return Err(DecodeError::UnknownType(ty)),
        })
    }
}

fn put_grant(out: &mut Vec<u8>, grant: &TicketGrant) -> Result<(), Invalid> {
    out.extend_from_slice(&grant.valid_secs.to_be_bytes());
    put_short_bytes(out, &grant.ticket, 1, MAX_TICKET_LEN, "bad ticket")
}

fn read_grant(r: &mut Reader<'_>) -> Result<TicketGrant, DecodeError> {
    Ok(TicketGrant {
        valid_secs: r.u32("truncated ticket lifetime")?,
        ticket: r.short_bytes(1, MAX_TICKET_LEN, "bad ticket length")?.to_vec(),
    })
}

fn put_peer(out: &mut Vec<u8>, peer: &PeerId) -> Result<(), Invalid> {
    put_short_bytes(out, peer.as_bytes(), 1, MAX_PEER_ID_LEN, "bad peer id")
}

fn read_peer(r: &mut Reader<'_>) -> Result<PeerId, DecodeError> {
    let raw = r.short_bytes(1, MAX_PEER_ID_LEN, "bad peer id length")?;
    PeerId::from_bytes(raw).ok_or(DecodeError::Malformed("bad peer id"))
}

fn put_addrs(out: &mut Vec<u8>, addrs: &[PeerAddr]) -> Result<(), Invalid> {
    put_count(out, addrs.len(), MAX_ADDRS, "too many addresses")?;
    addrs.iter().try_for_each(|a| put_short_bytes(out, &a.0, 1, MAX_ADDR_LEN, "bad address"))
}

fn read_addrs(r: &mut Reader<'_>) -> Result<Vec<PeerAddr>, DecodeError> {
    let n = r.count(MAX_ADDRS, "too many addresses")?;
    let mut addrs = Vec::with_capacity(n);
    for _ in 0..n {
        addrs.push(PeerAddr(r.short_bytes(1, MAX_ADDR_LEN, "bad address length")?.to_vec()));
    }
    Ok(addrs)
}

fn put_country(out: &mut Vec<u8>, country: Option<CountryCode>) {
    match country {
        None => out.push(0),
        Some(c) => {
            out.push(1);
            out.extend_from_slice(&c.as_bytes());
        }
    }
}

fn read_country(r: &mut Reader<'_>) -> Result<Option<CountryCode>, DecodeError> {
    if !r.flag("bad country flag")? {
        return Ok(None);
    }
    let raw = r.array::<2>("truncated country")?;
    // `from_bytes` also takes lower case; the wire takes only the stored,
    // upper-case form, so that each country has one encoding.
    match CountryCode::from_bytes(raw) {
        Some(c) if c.as_bytes() == raw => Ok(Some(c)),
        _ => Err(DecodeError::Malformed("bad country code")),
    }
}

fn put_labels(out: &mut Vec<u8>, labels: &[String], sorted: bool) -> Result<(), Invalid> {
    put_count(out, labels.len(), MAX_LABELS, "too many labels")?;
    if sorted && !labels.windows(2).all(|w| w[0] < w[1]) {
        return Err("labels not sorted and unique");
    }
    labels.iter().try_for_each(|l| {
        if !valid_label(l) {
            return Err("bad label");
        }
        put_short_bytes(out, l.as_bytes(), 1, MAX_LABEL_LEN, "bad label")
    })
}

/// Labels of a filter (`sorted == false`) or of an exit's attributes, which
/// must be strictly ascending.
fn read_labels(r: &mut Reader<'_>, sorted: bool) -> Result<Vec<String>, DecodeError> {
    let n = r.count(MAX_LABELS, "too many labels")?;
    let mut labels: Vec<String> = Vec::with_capacity(n);
    for _ in 0..n {
        let raw = r.short_bytes(1, MAX_LABEL_LEN, "bad label length")?;
        let label = core::str::from_utf8(raw)
            .ok()
            .filter(|l| valid_label(l))
            .ok_or(DecodeError::Malformed("bad label"))?;
        if sorted && labels.last().is_some_and(|prev| prev.as_str() >= label) {
            return Err(DecodeError::Malformed("labels not sorted and unique"));
        }
        labels.push(label.to_owned());
    }
    Ok(labels)
}

fn put_attrs(out: &mut Vec<u8>, attrs: &Attrs) -> Result<(), Invalid> {
    put_country(out, attrs.country);
    put_labels(out, &attrs.labels, true)
}

fn read_attrs(r: &mut Reader<'_>) -> Result<Attrs, DecodeError> {
    Ok(Attrs { country: read_country(r)?, labels: read_labels(r, true)? })
}

/// A role that registers in a directory; any other is not encoded.
fn put_listed(out: &mut Vec<u8>, role: Role) -> Result<(), Invalid> {
    if !role.is_listed() {
        return Err("role is not listed in a directory");
    }
    out.push(role.code());
    Ok(())
}

fn read_listed(r: &mut Reader<'_>) -> Result<Role, DecodeError> {
    Role::from_code(r.u8("truncated listed role")?)
        .filter(|role| role.is_listed())
        .ok_or(DecodeError::Malformed("role not listed in a directory"))
}

fn put_record(out: &mut Vec<u8>, rec: &PeerRecord) -> Result<(), Invalid> {
    put_peer(out, &rec.peer)?;
    put_listed(out, rec.role)?;
    put_addrs(out, &rec.addrs)?;
    put_attrs(out, &rec.attrs)?;
    out.extend_from_slice(&rec.capacity.to_be_bytes());
    put_count(out, rec.relays.len(), MAX_RELAYS, "too many relays")?;
    rec.relays.iter().try_for_each(|p| put_peer(out, p))
}

fn read_record(r: &mut Reader<'_>) -> Result<PeerRecord, DecodeError> {
    Ok(PeerRecord {
        peer: read_peer(r)?,
        role: read_listed(r)?,
        addrs: read_addrs(r)?,
        attrs: read_attrs(r)?,
        capacity: r.u32("truncated capacity")?,
        relays: {
            let n = r.count(MAX_RELAYS, "too many relays")?;
            let mut relays = Vec::with_capacity(n);
            for _ in 0..n {
                relays.push(read_peer(r)?);
            }
            relays
        },
    })
}

#[cfg(test)]
mod tests {
    use super::super::frame::Decoded;
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn bytes(msg: &HubMessage) -> Vec<u8> {
        let mut v = Vec::new();
        encode(msg, &mut v);
        v
    }

    fn complete(msg: HubMessage, consumed: usize) -> DecodeResult<HubMessage> {
        Ok(Decoded::Complete { msg, consumed })
    }

    fn round_trips(msg: &HubMessage) -> usize {
        let b = bytes(msg);
        assert_eq!(decode(&b), complete(msg.clone(), b.len()), "{msg:?}");
        b.len()
    }

    /// A frame around `ty` and `fields`, with a correct length prefix.
    fn raw(ty: u8, fields: &[u8]) -> Vec<u8> {
        let mut v = ((fields.len() + 1) as u32).to_be_bytes().to_vec();
        v.push(ty);
        v.extend_from_slice(fields);
        v
    }

    fn malformed(ty: u8, fields: &[u8]) -> &'static str {
        match decode(&raw(ty, fields)) {
            Err(DecodeError::Malformed(why)) => why,
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    fn peer(n: u8, len: usize) -> PeerId {
        PeerId::from_bytes(&vec![n; len]).expect("valid peer id")
    }

    fn de() -> Option<CountryCode> {
        CountryCode::parse("de")
    }

    /// 16 distinct, sorted, 32-byte labels.
    fn max_labels() -> Vec<String> {
        (0..MAX_LABELS).map(|i| format!("{i:02}").repeat(MAX_LABEL_LEN / 2)).collect()
    }

    fn max_attrs() -> Attrs {
        Attrs { country: de(), labels: max_labels() }
    }

    fn max_addrs() -> Vec<PeerAddr> {
        (0..MAX_ADDRS).map(|i| PeerAddr(vec![i as u8; MAX_ADDR_LEN])).collect()
    }

    fn max_record(n: u8) -> PeerRecord {
        PeerRecord {
            peer: peer(n, MAX_PEER_ID_LEN),
            role: Role::Exit,
            addrs: max_addrs(),
            attrs: max_attrs(),
            capacity: u32::MAX,
            relays: (0..MAX_RELAYS as u8).map(|i| peer(i, MAX_PEER_ID_LEN)).collect(),
        }
    }

    fn small_record() -> PeerRecord {
        PeerRecord {
            peer: PeerId::from_u64(7),
            role: Role::Exit,
            addrs: vec![PeerAddr(vec![1, 2, 3])],
            attrs: Attrs { country: None, labels: vec!["dc".into(), "fast".into()] },
            capacity: 100,
            relays: vec![PeerId::from_u64(9)],
        }
    }

    /// One of each message type, small.
    fn samples() -> Vec<HubMessage> {
        vec![
            HubMessage::Challenge { version: HUB_VERSION, nonce: [9; 32] },
            HubMessage::Auth {
                version: HUB_VERSION,
                role: Role::Client,
                key_id: "ops-key_1.A".into(),
                proof: [3; 32],
            },
            HubMessage::AuthOk { grant: grant(3) },
            HubMessage::RenewTicket,
            HubMessage::Ticket { grant: grant(1) },
            HubMessage::Register {
                role: Role::Exit,
                addrs: vec![PeerAddr(vec![4, 127, 0, 0, 1])],
                attrs: Attrs { country: de(), labels: vec!["residential".into()] },
                capacity: 50,
                relayed: true,
            },
            HubMessage::Registered { ttl_secs: 90 },
            HubMessage::Heartbeat { load: 3 },
            HubMessage::HeartbeatAck { ttl_secs: 90 },
            HubMessage::Find {
                role: Role::Exit,
                filter: PeerFilter { country: de(), labels: vec!["fast".into(), "dc".into()] },
                limit: 5,
            },
            HubMessage::Peers { peers: vec![small_record()] },
            HubMessage::Resolve { peer: PeerId::from_u64(7) },
            HubMessage::Resolved { peer: PeerId::from_u64(7), record: Some(small_record()) },
            HubMessage::Error { code: HubErrorCode::BadProof, message: "bad proof".into() },
        ]
    }

    /// One message of each type at its largest, with its type's limit.
    fn largest() -> Vec<(HubMessage, usize)> {
        let long_key = "k".repeat(MAX_KEY_ID_LEN);
        vec![
            (HubMessage::Challenge { version: HUB_VERSION, nonce: [0xff; 32] }, CHALLENGE_MAX),
            (
                HubMessage::Auth {
                    version: HUB_VERSION,
                    role: Role::Exit,
                    key_id: long_key,
                    proof: [0; 32],
                },
                AUTH_MAX,
            ),
            (HubMessage::AuthOk { grant: max_grant() }, AUTH_OK_MAX),
            (HubMessage::RenewTicket, RENEW_TICKET_MAX),
            (HubMessage::Ticket { grant: max_grant() }, TICKET_MAX),
            (
                HubMessage::Register {
                    role: Role::Exit,
                    addrs: max_addrs(),
                    attrs: max_attrs(),
                    capacity: 1,
                    relayed: true,
                },
                REGISTER_MAX,
            ),
            (HubMessage::Registered { ttl_secs: u32::MAX }, U32_MSG_MAX),
            (HubMessage::Heartbeat { load: u32::MAX }, U32_MSG_MAX),
            (HubMessage::HeartbeatAck { ttl_secs: u32::MAX }, U32_MSG_MAX),
            (
                HubMessage::Find {
                    role: Role::Exit,
                    filter: PeerFilter { country: de(), labels: max_labels() },
                    limit: u16::MAX,
                },
                FIND_MAX,
            ),
            (
                HubMessage::Peers { peers: (0..MAX_PEERS as u8).map(max_record).collect() },
                PEERS_MAX,
            ),
            (HubMessage::Resolve { peer: peer(1, MAX_PEER_ID_LEN) }, RESOLVE_MAX),
            (
                HubMessage::Resolved {
                    peer: peer(5, MAX_PEER_ID_LEN),
                    record: Some(max_record(5)),
                },
                RESOLVED_MAX,
            ),
            (
                HubMessage::Error {
                    code: HubErrorCode::Internal,
                    message: "é".repeat(MAX_ERROR_MESSAGE_LEN / 2),
                },
                ERROR_MAX,
            ),
        ]
    }

    fn grant(len: usize) -> TicketGrant {
        TicketGrant { valid_secs: 600, ticket: vec![0xab; len] }
    }

    fn max_grant() -> TicketGrant {
        TicketGrant { valid_secs: u32::MAX, ticket: vec![0xff; MAX_TICKET_LEN] }
    }

    fn type_of(msg: &HubMessage) -> u8 {
        bytes(msg)[4]
    }

    #[test]
    fn layout_is_as_documented() {
        let mut challenge = vec![0, 0, 0, 34, 0x01, 3];
        challenge.extend_from_slice(&[9; 32]);
        assert_eq!(bytes(&samples()[0]), challenge);
        assert_eq!(
            bytes(&HubMessage::AuthOk {
                grant: TicketGrant { valid_secs: 0x0102_0304, ticket: vec![7, 8] }
            }),
            [0, 0, 0, 8, 0x03, 1, 2, 3, 4, 2, 7, 8]
        );
        assert_eq!(bytes(&HubMessage::RenewTicket), [0, 0, 0, 1, 0x0d]);
        assert_eq!(
            bytes(&HubMessage::Ticket { grant: TicketGrant { valid_secs: 1, ticket: vec![9] } }),
            [0, 0, 0, 7, 0x0e, 0, 0, 0, 1, 1, 9]
        );
        assert_eq!(
            bytes(&HubMessage::Heartbeat { load: 0x0102_0304 }),
            [0, 0, 0, 5, 0x06, 1, 2, 3, 4]
        );
        assert_eq!(
            bytes(&HubMessage::Resolve { peer: PeerId::from_bytes(&[0xaa, 0xbb]).expect("id") }),
            [0, 0, 0, 4, 0x0a, 2, 0xaa, 0xbb]
        );
        assert_eq!(
            bytes(&HubMessage::Error { code: HubErrorCode::RateLimited, message: "slow".into() }),
            [0, 0, 0, 8, 0x0c, 0x06, 0, 4, b's', b'l', b'o', b'w']
        );
        assert_eq!(
            bytes(&HubMessage::Register {
                role: Role::Exit,
                addrs: vec![PeerAddr(vec![7])],
                attrs: Attrs { country: de(), labels: vec!["dc".into()] },
                capacity: 2,
                relayed: true,
            }),
            // The listed role (0x01 exit) comes first.
            [0, 0, 0, 17, 0x04, 0x01, 1, 1, 7, 1, b'D', b'E', 1, 2, b'd', b'c', 0, 0, 0, 2, 1]
        );
        assert_eq!(
            bytes(&HubMessage::Find {
                role: Role::Exit,
                filter: PeerFilter::default(),
                limit: 0x0102
            }),
            [0, 0, 0, 6, 0x08, 0x01, 0, 0, 1, 2]
        );
    }

    #[test]
    fn only_listed_roles_register_find_and_fill_records() {
        assert!(Role::Exit.is_listed() && Role::Agent.is_listed());
        assert!(!Role::Client.is_listed() && !Role::Gateway.is_listed());
        let register = |role| HubMessage::Register {
            role,
            addrs: Vec::new(),
            attrs: Attrs::default(),
            capacity: 1,
            relayed: false,
        };
        let find = |role| HubMessage::Find { role, filter: PeerFilter::default(), limit: 1 };
        let peers = |role| HubMessage::Peers { peers: vec![PeerRecord { role, ..small_record() }] };
        for role in [Role::Exit, Role::Agent] {
            for msg in [register(role), find(role), peers(role)] {
                round_trips(&msg);
            }
        }
        for unlisted in [Role::Client, Role::Gateway] {
            for msg in [register(unlisted), find(unlisted), peers(unlisted)] {
                assert!(matches!(decode(&bytes(&msg)), Err(DecodeError::Malformed(_))), "{msg:?}");
            }
        }
        // The encoder writes no role that is not listed (an empty body the
        // peer refuses), and the decoder takes none.
        for (listed, refused) in [
            (register(Role::Exit), register(Role::Client)),
            (find(Role::Exit), find(Role::Client)),
            (peers(Role::Exit), peers(Role::Client)),
        ] {
            assert!(matches!(decode(&bytes(&refused)), Err(DecodeError::Malformed(_))));
            let mut forged = bytes(&listed);
            // The role is the first field of Register and Find, the second
            // (after the peer id) of a record.
            let at = match type_of(&listed) {
                TYPE_PEERS => 4 + 1 + 1 + 1 + usize::from(forged[4 + 1 + 1]),
                _ => 4 + 1,
            };
            assert_eq!(forged[at], Role::Exit.code());
            forged[at] = Role::Client.code();
            assert_eq!(
                decode(&forged),
                Err(DecodeError::Malformed("role not listed in a directory")),
                "{listed:?}"
            );
        }
    }

    #[test]
    fn every_message_type_round_trips() {
        for msg in samples() {
            round_trips(&msg);
        }
        round_trips(&HubMessage::Resolved { peer: PeerId::from_u64(1), record: None });
        round_trips(&HubMessage::Peers { peers: vec![] });
        round_trips(&HubMessage::Error { code: HubErrorCode::Malformed, message: String::new() });
        for code in HubErrorCode::ALL {
            round_trips(&HubMessage::Error { code, message: format!("{code:?}") });
        }
        round_trips(&HubMessage::Auth {
            version: HUB_VERSION,
            role: Role::Exit,
            key_id: "k".into(),
            proof: [0; 32],
        });
    }

    #[test]
    fn largest_message_of_each_type_is_exactly_at_its_limit() {
        for (msg, max) in largest() {
            assert_eq!(round_trips(&msg), 4 + max, "{:?}", type_of(&msg));
        }
        assert_eq!(MAX_HUB_FRAME, PEERS_MAX);
        // 116 162 before records carried their role (one byte each, HUB_VERSION 3).
        assert_eq!(MAX_HUB_FRAME, 116_226);
    }

    #[test]
    fn one_byte_over_a_type_limit_is_too_large_before_the_body_arrives() {
        for (msg, max) in largest() {
            let b = bytes(&msg);
            let mut head = ((max + 1) as u32).to_be_bytes().to_vec();
            // Type byte, and the version byte for versioned messages.
            head.extend_from_slice(&b[4..6.min(b.len())]);
            assert_eq!(
                decode(&head),
                Err(DecodeError::TooLarge { len: max + 1, max }),
                "type {:#x}",
                b[4]
            );
        }
    }

    #[test]
    fn huge_declared_length_fails_after_four_bytes() {
        assert_eq!(
            decode(&[0xff; 4]),
            Err(DecodeError::TooLarge { len: u32::MAX as usize, max: MAX_HUB_FRAME })
        );
        let over = ((MAX_HUB_FRAME + 1) as u32).to_be_bytes();
        assert_eq!(
            decode(&over),
            Err(DecodeError::TooLarge { len: MAX_HUB_FRAME + 1, max: MAX_HUB_FRAME })
        );
        // Exactly the stream limit is fine until the type says otherwise.
        let at = (MAX_HUB_FRAME as u32).to_be_bytes();
        assert_eq!(decode(&at), Ok(Decoded::Incomplete));
    }

    #[test]
    fn every_prefix_is_incomplete() {
        let mut all: Vec<HubMessage> = samples();
        all.extend(
            largest()
                .into_iter()
                .map(|(m, _)| m)
                .filter(|m| !matches!(m, HubMessage::Peers { .. })),
        );
        for msg in all {
            let b = bytes(&msg);
            for cut in 0..b.len() {
                assert_eq!(decode(&b[..cut]), Ok(Decoded::Incomplete), "{msg:?} cut at {cut}");
            }
        }
        // The 100 KiB one: every prefix too, but without the Debug noise.
        let (peers, _) =
            largest().into_iter().find(|(m, _)| type_of(m) == TYPE_PEERS).expect("peers");
        let b = bytes(&peers);
        assert!((0..b.len()).all(|cut| decode(&b[..cut]) == Ok(Decoded::Incomplete)));
    }

    #[test]
    fn unknown_types_and_versions() {
        assert_eq!(decode(&raw(0x00, &[])), Err(DecodeError::UnknownType(0)));
        assert_eq!(decode(&raw(0x0f, &[])), Err(DecodeError::UnknownType(0x0f)));
        assert_eq!(decode(&raw(0xff, &[1, 2])), Err(DecodeError::UnknownType(0xff)));
        for v in [0, 1, 2, 4, 0xff] {
            let challenge = HubMessage::Challenge { version: v, nonce: [0; 32] };
            let b = bytes(&challenge);
            assert_eq!(decode(&b[..6]), Err(DecodeError::UnsupportedVersion(v)));
            assert_eq!(decode(&b), Err(DecodeError::UnsupportedVersion(v)));
            let auth = HubMessage::Auth {
                version: v,
                role: Role::Exit,
                key_id: "k".into(),
                proof: [0; 32],
            };
            assert_eq!(decode(&bytes(&auth)), Err(DecodeError::UnsupportedVersion(v)));
        }
        // A later version's Auth larger than this version's limit still gets
        // the version answer.
        let mut big = ((AUTH_MAX + 50) as u32).to_be_bytes().to_vec();
        big.extend_from_slice(&[TYPE_AUTH, HUB_VERSION + 1]);
        assert_eq!(decode(&big), Err(DecodeError::UnsupportedVersion(HUB_VERSION + 1)));
    }

    #[test]
    fn before_admission_only_one_auth_of_at_most_auth_max_is_read() {
        let auth = HubMessage::Auth {
            version: HUB_VERSION,
            role: Role::Client,
            key_id: "k".repeat(MAX_KEY_ID_LEN),
            proof: [1; 32],
        };
        let b = bytes(&auth);
        assert_eq!(b.len(), 4 + AUTH_MAX, "the longest Auth fits exactly");
        assert_eq!(decode_auth(&b), complete(auth, b.len()));
        for cut in 0..b.len() {
            assert_eq!(decode_auth(&b[..cut]), Ok(Decoded::Incomplete), "cut at {cut}");
        }
        // A huge announced length is refused after the four length bytes,
        // whatever type follows: nothing is buffered for it.
        let huge = [0, 1, 0xc5, 0x42, TYPE_PEERS];
        let too_large = Err(DecodeError::TooLarge { len: 0x0001_c542, max: AUTH_MAX });
        assert_eq!(decode_auth(&huge[..4]), too_large);
        assert_eq!(decode_auth(&huge), too_large);
        assert_eq!(
            decode_auth(&[0, 0, 0, AUTH_MAX as u8 + 1]),
            Err(DecodeError::TooLarge { len: AUTH_MAX + 1, max: AUTH_MAX })
        );
        // Any other type, however small, is refused at its type byte.
        for msg in samples().into_iter().filter(|m| type_of(m) != TYPE_AUTH) {
            let b = bytes(&msg);
            let ty = type_of(&msg);
            let got = decode_auth(&b[..5.min(b.len())]);
            assert!(
                got == Err(DecodeError::UnknownType(ty))
                    || matches!(got, Err(DecodeError::TooLarge { max: AUTH_MAX, .. })),
                "{msg:?}: {got:?}"
            );
        }
        // An Auth of another version gets the version answer.
        let old =
            HubMessage::Auth { version: 1, role: Role::Exit, key_id: "k".into(), proof: [0; 32] };
        assert_eq!(decode_auth(&bytes(&old)[..6]), Err(DecodeError::UnsupportedVersion(1)));
    }

    #[test]
    fn an_admitted_peer_may_send_only_peer_to_hub_types() {
        let from_peer =
            [TYPE_REGISTER, TYPE_HEARTBEAT, TYPE_FIND, TYPE_RESOLVE, TYPE_RENEW_TICKET, TYPE_ERROR];
        let mut seen = BTreeSet::new();
        for (msg, _) in largest() {
            let b = bytes(&msg);
            let ty = type_of(&msg);
            let got = decode_from_peer(&b);
            if from_peer.contains(&ty) {
                assert_eq!(got, complete(msg.clone(), b.len()), "{msg:?}");
                seen.insert(ty);
            } else {
                // Refused at the length (Peers' 116 KB) or the type byte,
                // never buffered or parsed.
                let early = decode_from_peer(&b[..5]);
                assert!(
                    early == Err(DecodeError::UnknownType(ty))
                        || matches!(
                            early,
                            Err(DecodeError::TooLarge { max: MAX_FROM_PEER_FRAME, .. })
                        ),
                    "type {ty:#04x}: {early:?}"
                );
                assert!(got.is_err(), "type {ty:#04x}: {got:?}");
            }
        }
        assert_eq!(seen.len(), from_peer.len(), "every peer → hub type was tried");
        for ty in
            [TYPE_CHALLENGE, TYPE_AUTH, TYPE_AUTH_OK, TYPE_PEERS, TYPE_TICKET, TYPE_REGISTERED]
        {
            assert_eq!(
                decode_from_peer(&raw(ty, &[HUB_VERSION])),
                Err(DecodeError::UnknownType(ty))
            );
        }
        // The largest Peers a hub may send announces more than a peer may.
        const { assert!(MAX_FROM_PEER_FRAME < MAX_HUB_FRAME) };
        let huge = ((MAX_FROM_PEER_FRAME + 1) as u32).to_be_bytes();
        assert_eq!(
            decode_from_peer(&huge),
            Err(DecodeError::TooLarge { len: MAX_FROM_PEER_FRAME + 1, max: MAX_FROM_PEER_FRAME })
        );
    }

    #[test]
    fn unknown_role_and_error_code() {
        let auth = |role: u8| {
            let mut f = vec![HUB_VERSION, role, 1, b'k'];
            f.extend_from_slice(&[0; 32]);
            f
        };
        assert_eq!(malformed(TYPE_AUTH, &auth(0)), "unknown role");
        assert_eq!(malformed(TYPE_AUTH, &auth(5)), "unknown role");
        for role in Role::ALL {
            let auth = auth(role.code());
            assert!(matches!(decode(&raw(TYPE_AUTH, &auth)), Ok(Decoded::Complete { .. })));
        }
        assert_eq!(malformed(TYPE_ERROR, &[0, 0, 0]), "unknown error code");
        assert_eq!(malformed(TYPE_ERROR, &[10, 0, 0]), "unknown error code");
        for (i, code) in HubErrorCode::ALL.into_iter().enumerate() {
            assert_eq!(code.code(), i as u8 + 1);
            assert_eq!(HubErrorCode::from_code(code.code()), Some(code));
        }
        assert_eq!(Role::from_code(Role::Exit.code()), Some(Role::Exit));
        assert_eq!(Role::from_code(Role::Client.code()), Some(Role::Client));
    }

    #[test]
    fn key_id_limits() {
        let auth = |key: &[u8]| {
            let mut f = vec![HUB_VERSION, 1, key.len() as u8];
            f.extend_from_slice(key);
            f.extend_from_slice(&[0; 32]);
            f
        };
        assert!(matches!(
            decode(&raw(TYPE_AUTH, &auth(&[b'a'; 64]))),
            Ok(Decoded::Complete { .. })
        ));
        let mut over = raw(TYPE_AUTH, &auth(&[b'a'; 65]));
        // Keep the frame within Auth's limit so the field check is what fires.
        over.truncate(over.len() - 32);
        let len = (over.len() - 4) as u32;
        over[..4].copy_from_slice(&len.to_be_bytes());
        assert_eq!(decode(&over), Err(DecodeError::Malformed("bad key id length")));
        assert_eq!(malformed(TYPE_AUTH, &auth(b"")), "bad key id length");
        assert_eq!(malformed(TYPE_AUTH, &auth(b"a b")), "bad key id");
        assert_eq!(malformed(TYPE_AUTH, &auth(b"a:b")), "bad key id");
        assert_eq!(malformed(TYPE_AUTH, &auth(&[0xc3, 0x28])), "bad key id");
        assert!(valid_key_id("Az09_.-"));
        assert!(!valid_key_id(&"a".repeat(MAX_KEY_ID_LEN + 1)));
        assert!(!valid_key_id(""));
    }

    #[test]
    fn address_limits() {
        // listed role | count | len | bytes… | attrs (no country, no labels) | capacity
        let register = |addrs: &[Vec<u8>]| {
            let mut f = vec![Role::Exit.code(), addrs.len() as u8];
            for a in addrs {
                f.push(a.len() as u8);
                f.extend_from_slice(a);
            }
            f.extend_from_slice(&[0, 0, 0, 0, 0, 1, 0]);
            f
        };
        let ok = register(&vec![vec![1; MAX_ADDR_LEN]; MAX_ADDRS]);
        assert!(matches!(decode(&raw(TYPE_REGISTER, &ok)), Ok(Decoded::Complete { .. })));
        assert_eq!(
            malformed(TYPE_REGISTER, &register(&vec![vec![1]; MAX_ADDRS + 1])),
            "too many addresses"
        );
        assert_eq!(
            malformed(TYPE_REGISTER, &register(&[vec![1; MAX_ADDR_LEN + 1]])),
            "bad address length"
        );
        assert_eq!(malformed(TYPE_REGISTER, &register(&[vec![]])), "bad address length");
    }

    #[test]
    fn label_and_country_rules() {
        // Register as an exit with no addresses: country | labels | capacity.
        let register = |country: &[u8], labels: &[&[u8]]| {
            let mut f = vec![Role::Exit.code(), 0];
            f.extend_from_slice(country);
            f.push(labels.len() as u8);
            for l in labels {
                f.push(l.len() as u8);
                f.extend_from_slice(l);
            }
            f.extend_from_slice(&[0, 0, 0, 1, 1]);
            f
        };
        let ok =
            |f: Vec<u8>| matches!(decode(&raw(TYPE_REGISTER, &f)), Ok(Decoded::Complete { .. }));
        let max_label = [b'z'; MAX_LABEL_LEN];
        assert!(ok(register(&[1, b'U', b'S'], &[b"a", &max_label])));
        assert_eq!(
            malformed(TYPE_REGISTER, &register(&[0], &[&[b'z'; MAX_LABEL_LEN + 1]])),
            "bad label length"
        );
        assert_eq!(malformed(TYPE_REGISTER, &register(&[0], &[b""])), "bad label length");
        assert_eq!(malformed(TYPE_REGISTER, &register(&[0], &[b"Dc"])), "bad label");
        assert_eq!(malformed(TYPE_REGISTER, &register(&[0], &[b"a-b"])), "bad label");
        assert_eq!(
            malformed(TYPE_REGISTER, &register(&[0], &[b"b", b"a"])),
            "labels not sorted and unique"
        );
        assert_eq!(
            malformed(TYPE_REGISTER, &register(&[0], &[b"a", b"a"])),
            "labels not sorted and unique"
        );
        let sixteen: Vec<Vec<u8>> = (b'a'..=b'p').map(|c| vec![c]).collect();
        let refs: Vec<&[u8]> = sixteen.iter().map(Vec::as_slice).collect();
        assert!(ok(register(&[0], &refs)));
        let seventeen: Vec<Vec<u8>> = (b'a'..=b'q').map(|c| vec![c]).collect();
        let refs: Vec<&[u8]> = seventeen.iter().map(Vec::as_slice).collect();
        assert_eq!(malformed(TYPE_REGISTER, &register(&[0], &refs)), "too many labels");
        assert_eq!(malformed(TYPE_REGISTER, &register(&[1, b'd', b'e'], &[])), "bad country code");
        assert_eq!(malformed(TYPE_REGISTER, &register(&[1, b'D', b'1'], &[])), "bad country code");
        assert_eq!(malformed(TYPE_REGISTER, &register(&[2, b'D', b'E'], &[])), "bad country flag");

        // A filter's labels keep the client's order and need not be unique.
        let find = |labels: &[&[u8]]| {
            let mut f = vec![Role::Exit.code(), 0, labels.len() as u8];
            for l in labels {
                f.push(l.len() as u8);
                f.extend_from_slice(l);
            }
            f.extend_from_slice(&[0, 1]);
            f
        };
        assert!(matches!(
            decode(&raw(TYPE_FIND, &find(&[b"b", b"a", b"a"]))),
            Ok(Decoded::Complete { .. })
        ));
        assert_eq!(malformed(TYPE_FIND, &find(&[b"B"])), "bad label");
        assert_eq!(malformed(TYPE_FIND, &find(&refs)), "too many labels");
    }

    #[test]
    fn peer_id_and_peers_limits() {
        let resolve = |id: &[u8]| {
            let mut f = vec![id.len() as u8];
            f.extend_from_slice(id);
            f
        };
        assert!(matches!(
            decode(&raw(TYPE_RESOLVE, &resolve(&[1; MAX_PEER_ID_LEN]))),
            Ok(Decoded::Complete { .. })
        ));
        // 49 bytes of id would exceed Resolve's body limit, so the length
        // byte alone says it: a frame of the right size with a bad length.
        let mut over = resolve(&[1; MAX_PEER_ID_LEN]);
        over[0] = MAX_PEER_ID_LEN as u8 + 1;
        assert_eq!(malformed(TYPE_RESOLVE, &over), "bad peer id length");
        assert_eq!(malformed(TYPE_RESOLVE, &[0]), "bad peer id length");

        assert_eq!(malformed(TYPE_PEERS, &[MAX_PEERS as u8 + 1]), "too many peers");
        let too_many = HubMessage::Peers { peers: vec![small_record(); MAX_PEERS + 1] };
        assert_eq!(decode(&bytes(&too_many)), Err(DecodeError::Malformed("too many peers")));
        let sixty_four = HubMessage::Peers { peers: vec![small_record(); MAX_PEERS] };
        round_trips(&sixty_four);
    }

    #[test]
    fn error_message_limits() {
        let error = |msg: &[u8]| {
            let mut f = vec![0x07];
            f.extend_from_slice(&(msg.len() as u16).to_be_bytes());
            f.extend_from_slice(msg);
            f
        };
        assert!(matches!(
            decode(&raw(TYPE_ERROR, &error(&[b'x'; MAX_ERROR_MESSAGE_LEN]))),
            Ok(Decoded::Complete { .. })
        ));
        let mut over = error(&[]);
        over[1..3].copy_from_slice(&(MAX_ERROR_MESSAGE_LEN as u16 + 1).to_be_bytes());
        assert_eq!(malformed(TYPE_ERROR, &over), "error message too long");
        assert_eq!(malformed(TYPE_ERROR, &error(&[0xff])), "error message is not UTF-8");
        let long = HubMessage::Error {
            code: HubErrorCode::Internal,
            message: "x".repeat(MAX_ERROR_MESSAGE_LEN + 1),
        };
        assert_eq!(decode(&bytes(&long)), Err(DecodeError::Malformed("truncated error code")));
    }

    #[test]
    fn resolved_record_must_be_for_the_peer_asked_about() {
        let mismatch =
            HubMessage::Resolved { peer: PeerId::from_u64(1), record: Some(small_record()) };
        let b = bytes(&mismatch);
        assert_eq!(b, [0, 0, 0, 1, TYPE_RESOLVED], "encoder refuses it");
        // Hand-built: peer 1, then a record for peer 7.
        let mut f = vec![8];
        f.extend_from_slice(&1u64.to_be_bytes());
        f.push(1);
        let rec = bytes(&HubMessage::Peers { peers: vec![small_record()] });
        f.extend_from_slice(&rec[6..]);
        assert_eq!(malformed(TYPE_RESOLVED, &f), "resolved record is for another peer");
        let mut f = vec![8];
        f.extend_from_slice(&7u64.to_be_bytes());
        f.push(2);
        assert_eq!(malformed(TYPE_RESOLVED, &f), "bad record flag");
    }

    #[test]
    fn short_fields_and_trailing_bytes() {
        assert_eq!(malformed(TYPE_HEARTBEAT, &[0, 0, 1]), "truncated load");
        assert_eq!(malformed(TYPE_CHALLENGE, &[HUB_VERSION, 1, 2]), "truncated nonce");
        assert_eq!(malformed(TYPE_CHALLENGE, &[]), "missing version");
        assert_eq!(
            decode(&raw(TYPE_RENEW_TICKET, &[0])),
            Err(DecodeError::TooLarge { len: 2, max: 1 })
        );
        assert_eq!(malformed(TYPE_AUTH_OK, &[]), "truncated ticket lifetime");
        assert_eq!(malformed(TYPE_AUTH_OK, &[0, 0, 1]), "truncated ticket lifetime");
        assert_eq!(malformed(TYPE_AUTH_OK, &[0, 0, 0, 1]), "bad ticket length");
        assert_eq!(malformed(TYPE_AUTH_OK, &[0, 0, 0, 1, 0]), "bad ticket length");
        assert_eq!(malformed(TYPE_TICKET, &[0, 0, 0, 1, 2, 9]), "bad ticket length");
        // A length beyond any ticket is refused at the length byte.
        assert_eq!(
            malformed(TYPE_TICKET, &[0, 0, 0, 1, MAX_TICKET_LEN as u8 + 1, 0, 0]),
            "bad ticket length"
        );
        let mut b = bytes(&HubMessage::Peers { peers: vec![small_record()] });
        b.push(0);
        let len = (b.len() - 4) as u32;
        b[..4].copy_from_slice(&len.to_be_bytes());
        assert_eq!(decode(&b), Err(DecodeError::TrailingBytes { extra: 1 }));
    }

    #[test]
    fn invalid_input_encodes_to_a_frame_the_peer_rejects() {
        let bad_attrs = |labels: Vec<String>| HubMessage::Register {
            role: Role::Exit,
            addrs: vec![],
            attrs: Attrs { country: None, labels },
            capacity: 1,
            relayed: false,
        };
        let cases = vec![
            HubMessage::Auth {
                version: HUB_VERSION,
                role: Role::Exit,
                key_id: "no spaces".into(),
                proof: [0; 32],
            },
            HubMessage::Auth {
                version: HUB_VERSION,
                role: Role::Exit,
                key_id: "k".repeat(MAX_KEY_ID_LEN + 1),
                proof: [0; 32],
            },
            HubMessage::Register {
                role: Role::Exit,
                addrs: vec![PeerAddr(vec![])],
                attrs: Attrs::default(),
                capacity: 1,
                relayed: false,
            },
            HubMessage::Register {
                role: Role::Exit,
                addrs: vec![PeerAddr(vec![0; MAX_ADDR_LEN + 1])],
                attrs: Attrs::default(),
                capacity: 1,
                relayed: false,
            },
            HubMessage::Register {
                role: Role::Exit,
                addrs: vec![PeerAddr(vec![1]); MAX_ADDRS + 1],
                attrs: Attrs::default(),
                capacity: 1,
                relayed: false,
            },
            bad_attrs(vec!["b".into(), "a".into()]),
            bad_attrs(vec!["a".into(), "a".into()]),
            bad_attrs(vec!["Upper".into()]),
            bad_attrs(vec!["x".repeat(MAX_LABEL_LEN + 1)]),
            bad_attrs((0..=MAX_LABELS).map(|i| format!("l{i:03}")).collect()),
            HubMessage::Find {
                role: Role::Exit,
                filter: PeerFilter { country: None, labels: vec!["no-dash".into()] },
                limit: 1,
            },
            HubMessage::Peers { peers: vec![small_record(); MAX_PEERS + 1] },
            HubMessage::Peers {
                peers: vec![PeerRecord { addrs: vec![PeerAddr(vec![])], ..small_record() }],
            },
            HubMessage::Error {
                code: HubErrorCode::Internal,
                message: "x".repeat(MAX_ERROR_MESSAGE_LEN + 1),
            },
        ];
        for msg in cases {
            let b = bytes(&msg);
            assert_eq!(b.len(), 5, "{msg:?} poisons the frame");
            assert!(matches!(decode(&b), Err(DecodeError::Malformed(_))), "{msg:?}");
        }
        // Appending after earlier frames leaves those intact.
        let mut out = bytes(&HubMessage::RenewTicket);
        encode(&HubMessage::Peers { peers: vec![small_record(); MAX_PEERS + 1] }, &mut out);
        assert_eq!(out, [0, 0, 0, 1, TYPE_RENEW_TICKET, 0, 0, 0, 1, TYPE_PEERS]);
    }

    // ---- property tests ----

    fn label() -> impl Strategy<Value = String> {
        "[a-z0-9_.:]{1,32}"
    }

    fn country() -> impl Strategy<Value = Option<CountryCode>> {
        proptest::option::of("[A-Za-z]{2}".prop_filter_map("letters", |s| CountryCode::parse(&s)))
    }

    fn attrs() -> impl Strategy<Value = Attrs> {
        (country(), proptest::collection::btree_set(label(), 0..=MAX_LABELS))
            .prop_map(|(country, labels)| Attrs { country, labels: labels.into_iter().collect() })
    }

    fn filter() -> impl Strategy<Value = PeerFilter> {
        (country(), proptest::collection::vec(label(), 0..=MAX_LABELS))
            .prop_map(|(country, labels)| PeerFilter { country, labels })
    }

    fn addrs() -> impl Strategy<Value = Vec<PeerAddr>> {
        proptest::collection::vec(
            proptest::collection::vec(any::<u8>(), 1..=MAX_ADDR_LEN).prop_map(PeerAddr),
            0..=MAX_ADDRS,
        )
    }

    fn peer_id() -> impl Strategy<Value = PeerId> {
        proptest::collection::vec(any::<u8>(), 1..=MAX_PEER_ID_LEN)
            .prop_filter_map("in range", |b| PeerId::from_bytes(&b))
    }

    fn record() -> impl Strategy<Value = PeerRecord> {
        (
            peer_id(),
            addrs(),
            attrs(),
            any::<u32>(),
            proptest::collection::vec(peer_id(), 0..=MAX_RELAYS),
        )
            .prop_map(|(peer, addrs, attrs, capacity, relays)| PeerRecord {
                role: Role::Exit,
                peer,
                addrs,
                attrs,
                capacity,
                relays,
            })
    }

    fn role() -> impl Strategy<Value = Role> {
        prop_oneof![Just(Role::Exit), Just(Role::Client)]
    }

    fn error_code() -> impl Strategy<Value = HubErrorCode> {
        proptest::sample::select(HubErrorCode::ALL.to_vec())
    }

    /// Any UTF-8, cut to the byte limit on a char boundary.
    fn error_message() -> impl Strategy<Value = String> {
        ".{0,256}".prop_map(|mut s: String| {
            while s.len() > MAX_ERROR_MESSAGE_LEN {
                s.pop();
            }
            s
        })
    }

    fn message() -> impl Strategy<Value = HubMessage> {
        prop_oneof![
            any::<[u8; 32]>()
                .prop_map(|nonce| HubMessage::Challenge { version: HUB_VERSION, nonce }),
            (role(), "[A-Za-z0-9_.-]{1,64}", any::<[u8; 32]>()).prop_map(
                |(role, key_id, proof)| {
                    HubMessage::Auth { version: HUB_VERSION, role, key_id, proof }
                }
            ),
            (any::<u32>(), proptest::collection::vec(any::<u8>(), 1..=MAX_TICKET_LEN)).prop_map(
                |(valid_secs, ticket)| HubMessage::AuthOk {
                    grant: TicketGrant { valid_secs, ticket }
                }
            ),
            Just(HubMessage::RenewTicket),
            (any::<u32>(), proptest::collection::vec(any::<u8>(), 1..=MAX_TICKET_LEN)).prop_map(
                |(valid_secs, ticket)| HubMessage::Ticket {
                    grant: TicketGrant { valid_secs, ticket }
                }
            ),
            (addrs(), attrs(), any::<u32>(), any::<bool>()).prop_map(
                |(addrs, attrs, capacity, relayed)| HubMessage::Register {
                    role: Role::Exit,
                    addrs,
                    attrs,
                    capacity,
                    relayed
                }
            ),
            any::<u32>().prop_map(|ttl_secs| HubMessage::Registered { ttl_secs }),
            any::<u32>().prop_map(|load| HubMessage::Heartbeat { load }),
            any::<u32>().prop_map(|ttl_secs| HubMessage::HeartbeatAck { ttl_secs }),
            (filter(), any::<u16>()).prop_map(|(filter, limit)| HubMessage::Find {
                role: Role::Exit,
                filter,
                limit,
            }),
            proptest::collection::vec(record(), 0..=MAX_PEERS)
                .prop_map(|peers| HubMessage::Peers { peers }),
            peer_id().prop_map(|peer| HubMessage::Resolve { peer }),
            (peer_id(), proptest::option::of(record())).prop_map(|(peer, record)| {
                HubMessage::Resolved { peer, record: record.map(|r| PeerRecord { peer, ..r }) }
            }),
            (error_code(), error_message())
                .prop_map(|(code, message)| HubMessage::Error { code, message }),
        ]
    }

    /// Messages built with no regard for the limits: strings of any
    /// characters, lists and byte strings a little past their bounds.
    fn loose_message() -> impl Strategy<Value = HubMessage> {
        let loose_labels = proptest::collection::vec(".{0,40}", 0..=MAX_LABELS + 2);
        let loose_addrs = proptest::collection::vec(
            proptest::collection::vec(any::<u8>(), 0..=MAX_ADDR_LEN + 2).prop_map(PeerAddr),
            0..=MAX_ADDRS + 2,
        );
        prop_oneof![
            (role(), ".{0,70}").prop_map(|(role, key_id)| HubMessage::Auth {
                version: HUB_VERSION,
                role,
                key_id,
                proof: [0; 32],
            }),
            (loose_addrs, country(), loose_labels.clone(), any::<u32>()).prop_map(
                |(addrs, country, labels, capacity)| HubMessage::Register {
                    role: Role::Exit,
                    addrs,
                    attrs: Attrs { country, labels },
                    capacity,
                    relayed: false,
                }
            ),
            (country(), loose_labels).prop_map(|(country, labels)| HubMessage::Find {
                role: Role::Exit,
                filter: PeerFilter { country, labels },
                limit: 1,
            }),
            (error_code(), ".{0,300}")
                .prop_map(|(code, message)| HubMessage::Error { code, message }),
            (peer_id(), record())
                .prop_map(|(peer, record)| HubMessage::Resolved { peer, record: Some(record) }),
        ]
    }

    proptest! {
        #[test]
        fn messages_round_trip(msg in message(), tail in proptest::collection::vec(any::<u8>(), 0..8)) {
            let mut b = bytes(&msg);
            let len = b.len();
            prop_assert!(len <= 4 + MAX_HUB_FRAME);
            prop_assert!(len <= 4 + type_rule(b[4]).map_or(0, |r| r.max_body));
            b.extend_from_slice(&tail);
            prop_assert_eq!(decode(&b), complete(msg, len));
        }

        #[test]
        fn prefixes_of_valid_frames_are_incomplete(msg in message(), cut in any::<proptest::sample::Index>()) {
            let b = bytes(&msg);
            let cut = cut.index(b.len());
            prop_assert_eq!(decode(&b[..cut]), Ok(Decoded::Incomplete));
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(Decoded::Complete { msg, consumed }) = decode(&b) {
                prop_assert!(consumed <= b.len());
                prop_assert_eq!(&bytes(&msg)[..], &b[..consumed]);
            }
        }

        #[test]
        fn plausible_frames_decode_canonically(
            ty in 1u8..=12,
            fields in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            // Correct prefix, known type, right version: the field parsers
            // see arbitrary input.
            let mut f = vec![HUB_VERSION];
            f.extend_from_slice(&fields);
            let b = raw(ty, &f);
            if let Ok(Decoded::Complete { msg, consumed }) = decode(&b) {
                prop_assert_eq!(consumed, b.len());
                prop_assert_eq!(bytes(&msg), b);
            }
        }

        #[test]
        fn loose_messages_encode_faithfully_or_not_at_all(msg in loose_message()) {
            match decode(&bytes(&msg)) {
                Ok(Decoded::Complete { msg: back, .. }) => prop_assert_eq!(back, msg),
                Err(DecodeError::Malformed(_)) => {}
                other => prop_assert!(false, "unexpected {:?}", other),
            }
        }

        #[test]
        fn concatenated_frames_decode_in_turn_whatever_the_chunking(
            msgs in proptest::collection::vec(message(), 1..6),
            chunk_lens in proptest::collection::vec(1usize..300, 1..50),
        ) {
            let mut stream = Vec::new();
            for m in &msgs {
                encode(m, &mut stream);
            }
            // Feed the stream in chunks into a receive buffer, decoding all
            // complete frames after each chunk, as a driver would.
            let mut received = Vec::new();
            let mut buffer: Vec<u8> = Vec::new();
            let mut fed = 0;
            let mut chunks = chunk_lens.iter().cycle();
            while fed < stream.len() {
                let n = chunks.next().copied().unwrap_or(1).min(stream.len() - fed);
                buffer.extend_from_slice(&stream[fed..fed + n]);
                fed += n;
                loop {
                    match decode(&buffer) {
                        Ok(Decoded::Complete { msg, consumed }) => {
                            prop_assert!(consumed <= buffer.len());
                            buffer.drain(..consumed);
                            received.push(msg);
                        }
                        Ok(Decoded::Incomplete) => break,
                        Err(e) => prop_assert!(false, "error mid-stream: {}", e),
                    }
                }
            }
            prop_assert!(buffer.is_empty());
            prop_assert_eq!(received, msgs);
        }
    }
}
