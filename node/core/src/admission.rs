//! Hub admission: a node proves it holds a per-node token by answering the
//! hub's random challenge with an HMAC, so the token itself never crosses the
//! wire and a recorded answer is useless against a fresh nonce.
//!
//! The HMAC key is `SHA-256(token)`, which is also all a hub stores: a hub's
//! key file alone does not reveal the token an operator handed out.

use crate::ids::PeerId;
use crate::wire::hub::Role;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Domain separation, so a proof can never be replayed into another protocol.
const CONTEXT: &[u8] = b"meshproxy/hub/1 admission";

/// What a node holds: the id the hub knows it by and its secret token.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// The key id sent in `Auth`.
    pub key_id: String,
    /// The HMAC key, `SHA-256(token)`.
    key: [u8; 32],
}

impl core::fmt::Debug for Credential {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Credential").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

/// What a hub holds for one admitted node.
#[derive(Clone, PartialEq, Eq)]
pub struct AdmissionKey {
    /// The key id the node presents.
    pub key_id: String,
    /// `SHA-256(token)`.
    pub key: [u8; 32],
}

impl core::fmt::Debug for AdmissionKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AdmissionKey").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

/// `SHA-256(token)`: the form a hub stores.
pub fn hash_token(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

impl Credential {
    /// A credential from the token an operator handed out.
    pub fn new(key_id: impl Into<String>, token: &[u8]) -> Credential {
        Credential { key_id: key_id.into(), key: hash_token(token) }
    }

    /// The hub-side key matching this credential.
    pub fn admission_key(&self) -> AdmissionKey {
        AdmissionKey { key_id: self.key_id.clone(), key: self.key }
    }

    /// The answer to `nonce` for `peer` acting as `role`.
    pub fn prove(&self, nonce: &[u8; 32], peer: &PeerId, role: Role) -> [u8; 32] {
        proof(&self.key, nonce, peer, role)
    }
}

impl AdmissionKey {
    /// Whether `proof` answers `nonce` for `peer` in `role` (constant-time compare).
    pub fn verify(
        &self,
        nonce: &[u8; 32],
        peer: &PeerId,
        role: Role,
        proof_bytes: &[u8; 32],
    ) -> bool {
        mac(&self.key, nonce, peer, role).verify_slice(proof_bytes).is_ok()
    }
}

fn mac(key: &[u8; 32], nonce: &[u8; 32], peer: &PeerId, role: Role) -> Hmac<Sha256> {
    // Keys of any length are valid for HMAC, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(CONTEXT);
    mac.update(nonce);
    mac.update(&[peer.as_bytes().len() as u8]);
    mac.update(peer.as_bytes());
    mac.update(&[role_byte(role)]);
    mac
}

fn role_byte(role: Role) -> u8 {
    match role {
        Role::Exit => 1,
        Role::Client => 2,
    }
}

fn proof(key: &[u8; 32], nonce: &[u8; 32], peer: &PeerId, role: Role) -> [u8; 32] {
    mac(key, nonce, peer, role).finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proof_binds_nonce_peer_role_and_token() {
        let cred = Credential::new("exit-1", b"secret token");
        let key = cred.admission_key();
        let (a, b) = (PeerId::from_u64(1), PeerId::from_u64(2));
        let nonce = [7u8; 32];
        let p = cred.prove(&nonce, &a, Role::Exit);
        assert!(key.verify(&nonce, &a, Role::Exit, &p));
        assert!(!key.verify(&[8u8; 32], &a, Role::Exit, &p), "fresh nonce");
        assert!(!key.verify(&nonce, &b, Role::Exit, &p), "other peer");
        assert!(!key.verify(&nonce, &a, Role::Client, &p), "other role");
        let other = Credential::new("exit-1", b"other token").admission_key();
        assert!(!other.verify(&nonce, &a, Role::Exit, &p), "other token");
    }

    #[test]
    fn debug_never_shows_the_key() {
        let cred = Credential::new("k", b"super secret");
        let shown = format!("{cred:?} {:?}", cred.admission_key());
        assert!(!shown.contains(&format!("{:?}", hash_token(b"super secret"))));
    }
}
