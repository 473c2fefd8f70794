//! Tickets: a hub's signed word that a peer is admitted, which exits check
//! before they serve it.
//!
//! A hub signs a short-lived ticket for every peer it admits, with its own
//! libp2p identity key (Ed25519). A client presents its ticket in each
//! `ConnectRequest`; an exit accepts it only if it is signed by a hub the exit
//! trusts, names the peer the stream came from (Noise-authenticated, so a
//! stolen ticket is useless), admits the client role and has not expired. So
//! an exit serves only peers some trusted hub admitted within the ticket's
//! lifetime, and keeps serving them through a hub outage until then.
//!
//! ```text
//! ticket   version u8 (1) | hub: len u8, id | holder: len u8, id | roles u8 | expires u64 | signature [64]
//! signed   CONTEXT | everything before the signature
//! ```
//!
//! `expires` is Unix time in seconds: hub and exit compare wall clocks, with
//! [`CLOCK_SKEW`] of tolerance. Verifying costs one Ed25519 check; an exit
//! keeps the tickets it verified (see `exit.rs`), so a client's next requests
//! cost a byte comparison.

use crate::admission::RoleSet;
use crate::ids::PeerId;
use crate::time::Instant;
use bytes::Bytes;
use core::time::Duration;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier as _, VerifyingKey};
use std::collections::{BTreeMap, BTreeSet};

/// The ticket format's version.
pub const TICKET_VERSION: u8 = 1;
pub use crate::wire::MAX_TICKET_LEN;
/// How far apart a hub's and an exit's clocks may be before tickets look
/// expired (or not yet usable) to the exit.
pub const CLOCK_SKEW: Duration = Duration::from_secs(120);

const CONTEXT: &[u8] = b"meshproxy ticket v1";

/// A decoded ticket.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Ticket {
    /// The hub that signed it.
    pub hub: PeerId,
    /// The peer it admits.
    pub holder: PeerId,
    /// What the holder was admitted as.
    pub roles: RoleSet,
    /// Unix seconds after which it is void.
    pub expires: u64,
}

/// Why an exit refused a ticket (or the lack of one).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum TicketRefusal {
    /// The request carried no ticket.
    Missing,
    /// The bytes are not a ticket.
    Malformed,
    /// Signed by a hub this exit does not trust.
    UnknownHub,
    /// Issued to another peer.
    WrongHolder,
    /// Does not admit the role the server requires (client at an exit,
    /// gateway at an agent).
    RoleNotAllowed,
    /// Past its expiry.
    Expired,
    /// The signature does not verify.
    BadSignature,
}

impl TicketRefusal {
    /// Every refusal, for metrics that show each from the start.
    pub const ALL: [TicketRefusal; 7] = [
        TicketRefusal::Missing,
        TicketRefusal::Malformed,
        TicketRefusal::UnknownHub,
        TicketRefusal::WrongHolder,
        TicketRefusal::RoleNotAllowed,
        TicketRefusal::Expired,
        TicketRefusal::BadSignature,
    ];

    /// The refusal's name in metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            TicketRefusal::Missing => "missing",
            TicketRefusal::Malformed => "malformed",
            TicketRefusal::UnknownHub => "unknown_hub",
            TicketRefusal::WrongHolder => "wrong_holder",
            TicketRefusal::RoleNotAllowed => "role_not_allowed",
            TicketRefusal::Expired => "expired",
            TicketRefusal::BadSignature => "bad_signature",
        }
    }
}

/// A hub's signing key (its Ed25519 identity key).
#[derive(Clone)]
pub struct TicketSigner {
    key: SigningKey,
}

impl core::fmt::Debug for TicketSigner {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TicketSigner").field("public", &self.public()).finish_non_exhaustive()
    }
}

impl PartialEq for TicketSigner {
    fn eq(&self, other: &Self) -> bool {
        self.public() == other.public()
    }
}

impl Eq for TicketSigner {}

impl TicketSigner {
    /// The signer for a 32-byte Ed25519 secret key.
    pub fn from_secret(secret: [u8; 32]) -> TicketSigner {
        TicketSigner { key: SigningKey::from_bytes(&secret) }
    }

    /// The public key exits check this hub's tickets with.
    pub fn public(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// Signs `ticket` and returns its encoding.
    pub fn sign(&self, ticket: &Ticket) -> Vec<u8> {
        let mut out = body(ticket);
        let signature = self.key.sign(&signed_message(&out));
        out.extend_from_slice(&signature.to_bytes());
        out
    }
}

fn body(t: &Ticket) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAX_TICKET_LEN);
    out.push(TICKET_VERSION);
    for peer in [t.hub, t.holder] {
        let id = peer.as_bytes();
        out.push(id.len() as u8); // ≤ MAX_PEER_ID_LEN
        out.extend_from_slice(id);
    }
    out.push(t.roles.bits());
    out.extend_from_slice(&t.expires.to_be_bytes());
    out
}

fn signed_message(body: &[u8]) -> Vec<u8> {
    [CONTEXT, body].concat()
}

/// Decodes a ticket's fields without checking its signature; also returns the
/// signed part and the signature.
pub fn decode(bytes: &[u8]) -> Result<(Ticket, &[u8], [u8; 64]), TicketRefusal> {
    let bad = TicketRefusal::Malformed;
    if bytes.len() > MAX_TICKET_LEN || bytes.len() < 64 {
        return Err(bad);
    }
    let (signed, sig) = bytes.split_at(bytes.len() - 64);
    let mut r = signed;
    let mut take = |n: usize| -> Result<&[u8], TicketRefusal> {
        if r.len() < n {
            return Err(bad);
        }
        let (head, tail) = r.split_at(n);
        r = tail;
        Ok(head)
    };
    if take(1)? != [TICKET_VERSION] {
        return Err(bad);
    }
    let mut peer = || -> Result<PeerId, TicketRefusal> {
        let len = usize::from(take(1)?[0]);
        PeerId::from_bytes(take(len)?).ok_or(bad)
    };
    let hub = peer()?;
    let holder = peer()?;
    let roles = RoleSet::from_bits(take(1)?[0]).ok_or(bad)?;
    let expires = u64::from_be_bytes(take(8)?.try_into().map_err(|_| bad)?);
    if !r.is_empty() {
        return Err(bad);
    }
    let sig: [u8; 64] = sig.try_into().map_err(|_| bad)?;
    Ok((Ticket { hub, holder, roles, expires }, signed, sig))
}

/// Checks `bytes` as a ticket for `holder` admitting `role` (an exit serves
/// clients, an agent gateways) at Unix time `now_unix`, signed by one of
/// `trusted` (hub peer id and public key); returns the ticket.
pub fn verify(
    bytes: &[u8],
    holder: PeerId,
    role: crate::record::Role,
    now_unix: u64,
    trusted: &[(PeerId, [u8; 32])],
) -> Result<Ticket, TicketRefusal> {
    if bytes.is_empty() {
        return Err(TicketRefusal::Missing);
    }
    let (ticket, signed, sig) = decode(bytes)?;
    let Some((_, public)) = trusted.iter().find(|(hub, _)| *hub == ticket.hub) else {
        return Err(TicketRefusal::UnknownHub);
    };
    if ticket.holder != holder {
        return Err(TicketRefusal::WrongHolder);
    }
    if !ticket.roles.contains(role) {
        return Err(TicketRefusal::RoleNotAllowed);
    }
    if ticket.expires.saturating_add(CLOCK_SKEW.as_secs()) <= now_unix {
        return Err(TicketRefusal::Expired);
    }
    let key = VerifyingKey::from_bytes(public).map_err(|_| TicketRefusal::BadSignature)?;
    key.verify(&signed_message(signed), &Signature::from_bytes(&sig))
        .map_err(|_| TicketRefusal::BadSignature)?;
    Ok(ticket)
}

/// The public key inside a libp2p Ed25519 peer id (an identity multihash of
/// the protobuf-encoded key), if `peer` is one; how an exit learns the key
/// its hubs sign with from nothing but their configured peer ids.
pub fn ed25519_key_of(peer: &PeerId) -> Option<[u8; 32]> {
    // identity multihash (0x00, length 36) | protobuf: KeyType = Ed25519 (0x08 0x01),
    // Data = 32 bytes (0x12 0x20) | key
    const PREFIX: [u8; 6] = [0x00, 0x24, 0x08, 0x01, 0x12, 0x20];
    let b = peer.as_bytes();
    let key = b.strip_prefix(&PREFIX[..])?;
    key.try_into().ok()
}

/// The tickets a node holds, one per hub, each usable until a local instant
/// (the hub's stated lifetime from when it arrived, so clocks do not matter
/// on this side).
#[derive(Debug, Default)]
pub(crate) struct TicketWallet {
    held: BTreeMap<PeerId, (Bytes, Instant)>,
}

impl TicketWallet {
    /// Keeps `ticket` from `hub`, replacing the one held from it.
    pub(crate) fn hold(&mut self, hub: PeerId, ticket: Bytes, until: Instant) {
        self.held.insert(hub, (ticket, until));
    }

    /// A ticket usable at `now`: one from a hub in `prefer` (the hubs that
    /// listed the exit, which it most likely trusts) if any, else the one that
    /// lasts longest.
    pub(crate) fn pick(&self, now: Instant, prefer: &BTreeSet<PeerId>) -> Option<Bytes> {
        let usable = self.held.iter().filter(|(_, (_, until))| *until > now);
        let best = usable.max_by_key(|(hub, (_, until))| (prefer.contains(hub), *until));
        best.map(|(_, (ticket, _))| ticket.clone())
    }

    /// Whether any ticket is usable at `now`.
    pub(crate) fn any_usable(&self, now: Instant) -> bool {
        self.held.values().any(|(_, until)| *until > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Role;

    fn signer(n: u8) -> TicketSigner {
        TicketSigner::from_secret([n; 32])
    }

    fn ticket(hub: PeerId, holder: PeerId, expires: u64) -> Ticket {
        Ticket { hub, holder, roles: RoleSet::CLIENT, expires }
    }

    #[test]
    fn a_signed_ticket_verifies_for_its_holder_only_until_it_expires() {
        let (hub, alice, bob) = (PeerId::from_u64(1), PeerId::from_u64(2), PeerId::from_u64(3));
        let s = signer(7);
        let trusted = [(hub, s.public())];
        let bytes = s.sign(&ticket(hub, alice, 1_000));
        assert!(bytes.len() <= MAX_TICKET_LEN);
        assert_eq!(
            verify(&bytes, alice, Role::Client, 900, &trusted),
            Ok(ticket(hub, alice, 1_000))
        );
        assert_eq!(
            verify(&bytes, bob, Role::Client, 900, &trusted),
            Err(TicketRefusal::WrongHolder)
        );
        let skew = CLOCK_SKEW.as_secs();
        assert!(
            verify(&bytes, alice, Role::Client, 1_000 + skew - 1, &trusted).is_ok(),
            "within the skew"
        );
        assert_eq!(
            verify(&bytes, alice, Role::Client, 1_000 + skew, &trusted),
            Err(TicketRefusal::Expired)
        );
        assert_eq!(verify(&[], alice, Role::Client, 0, &trusted), Err(TicketRefusal::Missing));
    }

    #[test]
    fn only_trusted_hubs_signatures_count() {
        let (hub, other_hub, alice) =
            (PeerId::from_u64(1), PeerId::from_u64(9), PeerId::from_u64(2));
        let trusted = [(hub, signer(7).public())];
        // Signed by another key but claiming the trusted hub.
        let forged = signer(8).sign(&ticket(hub, alice, 1_000));
        assert_eq!(
            verify(&forged, alice, Role::Client, 0, &trusted),
            Err(TicketRefusal::BadSignature)
        );
        let foreign = signer(8).sign(&ticket(other_hub, alice, 1_000));
        assert_eq!(
            verify(&foreign, alice, Role::Client, 0, &trusted),
            Err(TicketRefusal::UnknownHub)
        );
        let exit_only =
            signer(7).sign(&Ticket { roles: RoleSet::EXIT, ..ticket(hub, alice, 1_000) });
        assert_eq!(
            verify(&exit_only, alice, Role::Client, 0, &trusted),
            Err(TicketRefusal::RoleNotAllowed)
        );
        let both = signer(7)
            .sign(&Ticket { roles: RoleSet::EXIT.with(Role::Client), ..ticket(hub, alice, 1_000) });
        assert!(verify(&both, alice, Role::Client, 0, &trusted).is_ok());
    }

    #[test]
    fn any_changed_byte_is_refused() {
        let (hub, alice) = (PeerId::from_u64(1), PeerId::from_u64(2));
        let s = signer(7);
        let trusted = [(hub, s.public())];
        let bytes = s.sign(&ticket(hub, alice, u64::MAX / 2));
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert!(
                verify(&b, alice, Role::Client, 0, &trusted).is_err(),
                "byte {i} flipped still verified"
            );
        }
        for cut in 0..bytes.len() {
            assert!(
                verify(&bytes[..cut], alice, Role::Client, 0, &trusted).is_err(),
                "cut at {cut}"
            );
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(verify(&long, alice, Role::Client, 0, &trusted).is_err());
    }

    #[test]
    fn the_wallet_prefers_the_listing_hub_and_drops_what_ran_out() {
        let (h1, h2) = (PeerId::from_u64(1), PeerId::from_u64(2));
        let at = Instant::from_micros;
        let mut w = TicketWallet::default();
        assert_eq!(w.pick(at(0), &BTreeSet::new()), None);
        w.hold(h1, Bytes::from_static(b"one"), at(100));
        w.hold(h2, Bytes::from_static(b"two"), at(200));
        assert_eq!(w.pick(at(0), &BTreeSet::new()).as_deref(), Some(&b"two"[..]), "longest");
        assert_eq!(
            w.pick(at(0), &BTreeSet::from([h1])).as_deref(),
            Some(&b"one"[..]),
            "listing hub"
        );
        assert_eq!(
            w.pick(at(150), &BTreeSet::from([h1])).as_deref(),
            Some(&b"two"[..]),
            "h1's ran out"
        );
        assert!(w.any_usable(at(199)) && !w.any_usable(at(200)));
        assert_eq!(w.pick(at(200), &BTreeSet::new()), None);
    }

    #[test]
    fn the_key_inside_an_ed25519_peer_id() {
        let key = [5u8; 32];
        let mut id = vec![0x00, 0x24, 0x08, 0x01, 0x12, 0x20];
        id.extend_from_slice(&key);
        let peer = PeerId::from_bytes(&id).unwrap_or_else(|| unreachable!());
        assert_eq!(ed25519_key_of(&peer), Some(key));
        assert_eq!(ed25519_key_of(&PeerId::from_u64(1)), None);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_never_verify(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let trusted = [(PeerId::from_u64(1), signer(7).public())];
            proptest::prop_assert!(verify(&bytes, PeerId::from_u64(2), Role::Client, 0, &trusted).is_err());
        }
    }
}
