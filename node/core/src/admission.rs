//! Hub admission: who may use the network, and as what.
//!
//! A node proves it holds a per-node **token** by answering the hub's random
//! challenge; the hub stores only a **verifier** that checks such answers but
//! cannot produce one. The split is SCRAM's (RFC 5802 §3, RFC 7677), with the
//! token already a ≥ 128-bit random secret, so no password stretching:
//!
//! ```text
//! ClientKey  = HMAC-SHA256(token, "meshproxy/hub admission client key")   the node keeps this
//! StoredKey  = SHA-256(ClientKey)                                          the hub keeps this (the verifier)
//! AuthMsg    = CONTEXT | nonce | hub | peer | key_id | role               (each id length-prefixed)
//! Signature  = HMAC-SHA256(StoredKey, AuthMsg)
//! Proof      = ClientKey XOR Signature                                     what travels in `Auth`
//! hub checks   SHA-256(Proof XOR Signature) == StoredKey                   (constant time)
//! ```
//!
//! So a hub's key file — or a hub operator — holds nothing that logs in
//! anywhere, and a proof is bound to one nonce, both peer ids, the key id and
//! the role: a recorded answer is useless elsewhere. (As in SCRAM, whoever
//! holds the verifier *and* sees a proof learns the ClientKey; proofs travel
//! inside the Noise channel to the hub itself, and a key pinned to one peer id
//! is useless to anyone without that peer's identity key.)
//!
//! Each [`AdmissionKey`] also says which [`Role`]s it admits (client only
//! unless it says otherwise), optionally the one peer id that may use it, and
//! (for exit keys) how many directory entries it may hold.

use crate::ids::PeerId;
use crate::record::Role;
use core::fmt;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Domain separation, so a proof can never be replayed into another protocol.
const CONTEXT: &[u8] = b"meshproxy/hub/2 admission";
/// The label the ClientKey is derived under.
const CLIENT_KEY_LABEL: &[u8] = b"meshproxy/hub admission client key";

/// The shortest token accepted: 22 characters is what 128 random bits take
/// in base64 (`meshproxy token new` prints 256 bits, 43 characters).
pub const MIN_TOKEN_LEN: usize = 22;

/// What a node holds: the id the hub knows it by and the key derived from its
/// secret token.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// The key id sent in `Auth`.
    pub key_id: String,
    /// `ClientKey`, derived from the token.
    client_key: [u8; 32],
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

/// What a hub stores for one key: `SHA-256(ClientKey)`. It verifies proofs and
/// cannot make one.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Verifier(pub [u8; 32]);

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Verifier(…)")
    }
}

impl Verifier {
    /// The verifier in the 64 lower-case hex digits config files hold.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses 64 hex digits; `None` otherwise.
    pub fn from_hex(s: &str) -> Option<Verifier> {
        let s = s.trim();
        if s.len() != 64 || !s.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Verifier(out))
    }
}

/// A set of [`Role`]s, e.g. what one admission key admits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct RoleSet(u8);

impl RoleSet {
    /// No role.
    pub const NONE: RoleSet = RoleSet(0);
    /// Clients only: the default for a key that names no roles.
    pub const CLIENT: RoleSet = RoleSet(1 << 1);
    /// Exits only.
    pub const EXIT: RoleSet = RoleSet(1 << 0);

    /// The set with just `role`.
    pub fn of(role: Role) -> RoleSet {
        RoleSet(1 << (role.code() - 1))
    }

    /// This set and `role`.
    #[must_use]
    pub fn with(self, role: Role) -> RoleSet {
        RoleSet(self.0 | RoleSet::of(role).0)
    }

    /// Whether `role` is in the set.
    pub fn contains(self, role: Role) -> bool {
        self.0 & RoleSet::of(role).0 != 0
    }

    /// The wire byte (bit `code - 1` for each role).
    pub fn bits(self) -> u8 {
        self.0
    }

    /// The set for a wire byte; `None` if it names a role that does not exist.
    pub fn from_bits(bits: u8) -> Option<RoleSet> {
        let all = Role::ALL.iter().fold(0u8, |acc, r| acc | RoleSet::of(*r).0);
        (bits & !all == 0).then_some(RoleSet(bits))
    }

    /// The roles in the set, in wire order.
    pub fn iter(self) -> impl Iterator<Item = Role> {
        Role::ALL.into_iter().filter(move |r| self.contains(*r))
    }
}

impl fmt::Debug for RoleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for RoleSet {
    /// `client+exit`, or `none`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Role::name).collect();
        if names.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&names.join("+"))
        }
    }
}

/// What a hub holds for one key.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct AdmissionKey {
    /// The key id the node presents.
    pub key_id: String,
    /// Checks the node's proof.
    pub verifier: Verifier,
    /// The roles this key admits.
    pub roles: RoleSet,
    /// If set, only this peer may use the key.
    pub peer: Option<PeerId>,
    /// Directory entries (exits) this key may hold at once; `None` takes the
    /// hub's default (`max_registrations_per_key`, 1 unless configured).
    pub max_registrations: Option<usize>,
}

/// Why a hub refused a peer's hub stream or its `Auth`. The peer is told
/// only "authentication failed" for `UnknownKey` and `BadProof`, so a stranger
/// cannot learn which key ids exist; the budget refusals are resets.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Refusal {
    /// No key has that id.
    UnknownKey,
    /// The proof does not verify.
    BadProof,
    /// The proof verifies, but the key does not admit the role asked for
    /// (or the stream was admitted in another role than the request needs).
    RoleNotAllowed,
    /// The proof verifies, but the key is pinned to another peer.
    PeerNotAllowed,
    /// The peer holds as many hub streams as one peer may.
    PeerStreamLimit,
    /// The hub holds as many hub streams as it may.
    HubFull,
    /// An unadmitted stream was displaced by a newer one (the pre-auth
    /// budget was full).
    Displaced,
    /// No `Auth` within the auth deadline.
    AuthTimeout,
    /// Before admission the peer sent something other than a well-formed
    /// `Auth` of this protocol version.
    NotAuth,
    /// The operator revoked the key or the peer (`Input::Revoke`).
    Revoked,
}

impl Refusal {
    /// Every reason, for metrics that show each from the start.
    pub const ALL: [Refusal; 10] = [
        Refusal::UnknownKey,
        Refusal::BadProof,
        Refusal::RoleNotAllowed,
        Refusal::PeerNotAllowed,
        Refusal::PeerStreamLimit,
        Refusal::HubFull,
        Refusal::Displaced,
        Refusal::AuthTimeout,
        Refusal::NotAuth,
        Refusal::Revoked,
    ];

    /// The reason's name in metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::UnknownKey => "unknown_key",
            Refusal::BadProof => "bad_proof",
            Refusal::RoleNotAllowed => "role_not_allowed",
            Refusal::PeerNotAllowed => "peer_not_allowed",
            Refusal::PeerStreamLimit => "peer_stream_limit",
            Refusal::HubFull => "hub_full",
            Refusal::Displaced => "displaced",
            Refusal::AuthTimeout => "auth_timeout",
            Refusal::NotAuth => "not_auth",
            Refusal::Revoked => "revoked",
        }
    }
}

impl Credential {
    /// A credential from the token an operator handed out.
    pub fn new(key_id: impl Into<String>, token: &[u8]) -> Credential {
        let mut mac = hmac_sha256(token);
        mac.update(CLIENT_KEY_LABEL);
        Credential { key_id: key_id.into(), client_key: mac.finalize().into_bytes().into() }
    }

    /// The verifier a hub stores for this credential.
    pub fn verifier(&self) -> Verifier {
        Verifier(Sha256::digest(self.client_key).into())
    }

    /// The hub-side key for this credential admitting `roles`, unpinned, with
    /// the hub's default registration limit.
    pub fn admission_key(&self, roles: RoleSet) -> AdmissionKey {
        AdmissionKey {
            key_id: self.key_id.clone(),
            verifier: self.verifier(),
            roles,
            peer: None,
            max_registrations: None,
        }
    }

    /// The answer to `nonce` from hub `hub` for `peer` acting as `role`.
    pub fn prove(&self, nonce: &[u8; 32], hub: &PeerId, peer: &PeerId, role: Role) -> [u8; 32] {
        let verifier = self.verifier();
        let signature = signature(&verifier, nonce, hub, peer, &self.key_id, role);
        xor(&self.client_key, &signature)
    }
}

impl AdmissionKey {
    /// Whether `proof` answers `nonce` from `hub` for `peer` in `role` under
    /// this key, and the key admits that peer in that role.
    ///
    /// The proof is checked first, so what the key admits is revealed only to
    /// someone who holds its token.
    pub fn check(
        &self,
        nonce: &[u8; 32],
        hub: &PeerId,
        peer: &PeerId,
        role: Role,
        proof: &[u8; 32],
    ) -> Result<(), Refusal> {
        let signature = signature(&self.verifier, nonce, hub, peer, &self.key_id, role);
        let client_key = xor(proof, &signature);
        let stored: [u8; 32] = Sha256::digest(client_key).into();
        if !bool::from(stored.ct_eq(&self.verifier.0)) {
            return Err(Refusal::BadProof);
        }
        if self.peer.is_some_and(|pinned| pinned != *peer) {
            return Err(Refusal::PeerNotAllowed);
        }
        if !self.roles.contains(role) {
            return Err(Refusal::RoleNotAllowed);
        }
        Ok(())
    }
}

fn hmac_sha256(key: &[u8]) -> Hmac<Sha256> {
    // Keys of any length are valid for HMAC, so this cannot fail.
    <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!())
}

fn signature(
    verifier: &Verifier,
    nonce: &[u8; 32],
    hub: &PeerId,
    peer: &PeerId,
    key_id: &str,
    role: Role,
) -> [u8; 32] {
    let mut mac = hmac_sha256(&verifier.0);
    mac.update(CONTEXT);
    mac.update(nonce);
    for field in [hub.as_bytes(), peer.as_bytes(), key_id.as_bytes()] {
        // Ids are at most 64 bytes (peer ids 48, key ids 64): one length byte.
        mac.update(&[u8::try_from(field.len()).unwrap_or(u8::MAX)]);
        mac.update(field);
    }
    mac.update(&[role.code()]);
    mac.finalize().into_bytes().into()
}

fn xor(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    core::array::from_fn(|i| a[i] ^ b[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &[u8] = b"0123456789abcdefghijklmnop";

    fn key(roles: RoleSet) -> (Credential, AdmissionKey) {
        let cred = Credential::new("exit-1", TOKEN);
        let key = cred.admission_key(roles);
        (cred, key)
    }

    #[test]
    fn proof_binds_nonce_hub_peer_key_id_role_and_token() {
        let (cred, key) = key(RoleSet::EXIT.with(Role::Client));
        let (hub, a, b) = (PeerId::from_u64(9), PeerId::from_u64(1), PeerId::from_u64(2));
        let nonce = [7u8; 32];
        let p = cred.prove(&nonce, &hub, &a, Role::Exit);
        assert_eq!(key.check(&nonce, &hub, &a, Role::Exit, &p), Ok(()));
        let bad = Err(Refusal::BadProof);
        assert_eq!(key.check(&[8u8; 32], &hub, &a, Role::Exit, &p), bad, "fresh nonce");
        assert_eq!(key.check(&nonce, &a, &a, Role::Exit, &p), bad, "other hub");
        assert_eq!(key.check(&nonce, &hub, &b, Role::Exit, &p), bad, "other peer");
        assert_eq!(key.check(&nonce, &hub, &a, Role::Client, &p), bad, "other role");
        let other =
            Credential::new("exit-1", b"another token of enough length").admission_key(key.roles);
        assert_eq!(other.check(&nonce, &hub, &a, Role::Exit, &p), bad, "other token");
        let renamed = AdmissionKey { key_id: "exit-2".into(), ..key.clone() };
        assert_eq!(renamed.check(&nonce, &hub, &a, Role::Exit, &p), bad, "other key id");
    }

    #[test]
    fn the_verifier_cannot_answer_a_challenge() {
        // Someone with the hub's stored verifier tries the old scheme's trick:
        // use what the hub holds as the key. It must not verify.
        let (cred, key) = key(RoleSet::CLIENT);
        let (hub, peer, nonce) = (PeerId::from_u64(9), PeerId::from_u64(1), [3u8; 32]);
        let forged_cred = Credential { key_id: cred.key_id.clone(), client_key: key.verifier.0 };
        let forged = forged_cred.prove(&nonce, &hub, &peer, Role::Client);
        assert_eq!(key.check(&nonce, &hub, &peer, Role::Client, &forged), Err(Refusal::BadProof));
        // The signature alone (proof with a zero ClientKey) does not either.
        let sig = signature(&key.verifier, &nonce, &hub, &peer, &key.key_id, Role::Client);
        assert_eq!(key.check(&nonce, &hub, &peer, Role::Client, &sig), Err(Refusal::BadProof));
    }

    #[test]
    fn roles_and_pins_are_checked_after_the_proof() {
        let (cred, key) = key(RoleSet::CLIENT);
        let (hub, peer, nonce) = (PeerId::from_u64(9), PeerId::from_u64(1), [3u8; 32]);
        let exit_proof = cred.prove(&nonce, &hub, &peer, Role::Exit);
        assert_eq!(
            key.check(&nonce, &hub, &peer, Role::Exit, &exit_proof),
            Err(Refusal::RoleNotAllowed)
        );
        let pinned = AdmissionKey { peer: Some(PeerId::from_u64(2)), ..key.clone() };
        let proof = cred.prove(&nonce, &hub, &peer, Role::Client);
        assert_eq!(
            pinned.check(&nonce, &hub, &peer, Role::Client, &proof),
            Err(Refusal::PeerNotAllowed)
        );
        let pinned_here = AdmissionKey { peer: Some(peer), ..key };
        assert_eq!(pinned_here.check(&nonce, &hub, &peer, Role::Client, &proof), Ok(()));
        // A wrong proof says nothing about the pin or the roles.
        assert_eq!(pinned.check(&nonce, &hub, &peer, Role::Exit, &[0; 32]), Err(Refusal::BadProof));
    }

    #[test]
    fn verifier_hex_round_trips_and_rejects_junk() {
        let v = Credential::new("k", TOKEN).verifier();
        assert_eq!(Verifier::from_hex(&v.to_hex()), Some(v));
        assert_eq!(Verifier::from_hex(&v.to_hex().to_uppercase()), Some(v));
        for bad in ["", "00", &"0".repeat(63), &"0".repeat(65), &"g".repeat(64), &"é".repeat(32)] {
            assert_eq!(Verifier::from_hex(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn role_sets() {
        let both = RoleSet::CLIENT.with(Role::Exit);
        assert!(both.contains(Role::Exit) && both.contains(Role::Client));
        assert!(!RoleSet::CLIENT.contains(Role::Exit));
        assert_eq!(both.to_string(), "exit+client");
        assert_eq!(RoleSet::NONE.to_string(), "none");
        assert_eq!(RoleSet::from_bits(both.bits()), Some(both));
        assert_eq!(RoleSet::from_bits(0x80), None);
    }

    #[test]
    fn debug_never_shows_the_keys() {
        let cred = Credential::new("k", TOKEN);
        let shown = format!("{cred:?} {:?}", cred.admission_key(RoleSet::CLIENT));
        assert!(!shown.contains(&cred.verifier().to_hex()));
        assert!(!shown.contains(&format!("{:?}", cred.client_key)));
    }
}
