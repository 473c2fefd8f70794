//! The node's Ed25519 identity key file.
//!
//! Format: exactly 32 bytes, the raw Ed25519 secret key (the seed), nothing
//! else. The network loads it with `libp2p::identity::Keypair::ed25519_from_bytes`.
//! The file is created with mode 0600 on first run and never rewritten.
//!
//! The peer id is the libp2p one: the identity multihash of the protobuf
//! encoding of the public key (38 bytes for Ed25519), shown in base58btc
//! (`12D3KooW…`).

use meshproxy_core::ids::PeerId;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Length of the key file.
pub const SECRET_LEN: usize = 32;

/// Why the identity could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The key file could not be read or written.
    #[error("identity file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The key file is not exactly 32 bytes.
    #[error("identity file {path} holds {len} bytes, expected {SECRET_LEN}")]
    BadLength {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: u64,
    },
    /// The file already exists (for `keygen`, which never overwrites).
    #[error("identity file {0} already exists; refusing to overwrite it")]
    Exists(PathBuf),
}

/// An Ed25519 identity.
#[derive(Clone)]
pub struct Identity {
    secret: [u8; SECRET_LEN],
}

impl std::fmt::Debug for Identity {
    // Never print the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({})", self.peer_id_string())
    }
}

impl Identity {
    /// An identity from a raw secret key.
    pub fn from_secret(secret: [u8; SECRET_LEN]) -> Identity {
        Identity { secret }
    }

    /// A new random identity (OS randomness).
    pub fn generate() -> Identity {
        Identity { secret: rand::random() }
    }

    /// The raw secret, for `Keypair::ed25519_from_bytes`.
    pub fn secret_bytes(&self) -> [u8; SECRET_LEN] {
        self.secret
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        ed25519_dalek::SigningKey::from_bytes(&self.secret).verifying_key().to_bytes()
    }

    /// The libp2p peer id bytes: identity multihash of the protobuf public key.
    pub fn peer_id_bytes(&self) -> Vec<u8> {
        // PublicKey { Type = Ed25519 (1), Data = 32 bytes } in protobuf.
        let mut proto = vec![0x08, 0x01, 0x12, 0x20];
        proto.extend_from_slice(&self.public_key());
        // Multihash: code 0x00 (identity), length, digest.
        let mut id = vec![0x00, proto.len() as u8];
        id.extend_from_slice(&proto);
        id
    }

    /// The core's view of the peer id.
    pub fn peer_id(&self) -> PeerId {
        // 38 bytes always fits the core's 48-byte bound; fall back to a hash
        // of nothing rather than panic should that ever change.
        PeerId::from_bytes(&self.peer_id_bytes()).unwrap_or_else(|| PeerId::from_u64(0))
    }

    /// The peer id as libp2p prints it.
    pub fn peer_id_string(&self) -> String {
        base58(&self.peer_id_bytes())
    }

    /// Loads the key file, creating it (0600) with a new key if it is missing.
    pub fn load_or_create(path: &Path) -> Result<Identity, IdentityError> {
        match Identity::load(path) {
            Err(IdentityError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                let id = Identity::generate();
                id.create(path)?;
                tracing::info!(path = %path.display(), peer = %id.peer_id_string(), "created identity");
                Ok(id)
            }
            other => other,
        }
    }

    /// Loads an existing key file.
    pub fn load(path: &Path) -> Result<Identity, IdentityError> {
        let err = |source| IdentityError::Io { path: path.to_owned(), source };
        let len = fs::metadata(path).map_err(err)?.len();
        if len != SECRET_LEN as u64 {
            return Err(IdentityError::BadLength { path: path.to_owned(), len });
        }
        let bytes = fs::read(path).map_err(err)?;
        let secret: [u8; SECRET_LEN] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| IdentityError::BadLength { path: path.to_owned(), len })?;
        warn_if_readable_by_others(path);
        Ok(Identity { secret })
    }

    /// Writes a new key file (mode 0600); never overwrites an existing one.
    pub fn create(&self, path: &Path) -> Result<(), IdentityError> {
        if path.exists() {
            return Err(IdentityError::Exists(path.to_owned()));
        }
        crate::ops::state::write_atomic(path, &self.secret, true)
            .map_err(|source| IdentityError::Io { path: path.to_owned(), source })
    }
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = fs::metadata(path) {
        if m.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "identity file is readable by others; chmod 600 it");
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

const ALPHABET: &[u8; 58] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

/// Base58 (bitcoin alphabet), as libp2p prints peer ids.
pub fn base58(bytes: &[u8]) -> String {
    let zeros = bytes.iter().take_while(|&&b| b == 0).count();
    // Little-endian base-58 digits.
    let mut digits: Vec<u8> = Vec::with_capacity(bytes.len() * 138 / 100 + 1);
    for &byte in bytes {
        let mut carry = u32::from(byte);
        for d in digits.iter_mut() {
            carry += u32::from(*d) << 8;
            *d = (carry % 58) as u8;
            carry /= 58;
        }
        while carry > 0 {
            digits.push((carry % 58) as u8);
            carry /= 58;
        }
    }
    let mut out = String::with_capacity(zeros + digits.len());
    out.extend(std::iter::repeat_n('1', zeros));
    out.extend(digits.iter().rev().map(|&d| char::from(ALPHABET[usize::from(d)])));
    out
}

/// Decodes base58 (bitcoin alphabet); `None` on a foreign character.
pub fn base58_decode(s: &str) -> Option<Vec<u8>> {
    let zeros = s.bytes().take_while(|&c| c == b'1').count();
    let mut bytes: Vec<u8> = Vec::with_capacity(s.len());
    for c in s.bytes() {
        let mut carry = ALPHABET.iter().position(|&a| a == c)? as u32;
        for b in bytes.iter_mut() {
            carry += u32::from(*b) * 58;
            *b = (carry & 0xff) as u8;
            carry >>= 8;
        }
        while carry > 0 {
            bytes.push((carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    let mut out = vec![0u8; zeros];
    out.extend(bytes.iter().rev());
    Some(out)
}

/// Parses a peer id as libp2p prints it (base58 of a multihash) into the
/// core's form; libp2p-identity checks it is a well-formed peer id, not just
/// any base58 text.
pub fn parse_peer_id(s: &str) -> Option<PeerId> {
    let peer: libp2p::PeerId = s.parse().ok()?;
    PeerId::from_bytes(&peer.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_ids_look_like_libp2p_ed25519_ids_and_round_trip() {
        let id = Identity::from_secret([7; 32]);
        let s = id.peer_id_string();
        assert!(s.starts_with("12D3KooW"), "{s}");
        assert_eq!(id.peer_id_bytes().len(), 38);
        assert_eq!(parse_peer_id(&s), Some(id.peer_id()));
        // Base58 that is no multihash is no peer id.
        assert_eq!(parse_peer_id("nope"), None);
        assert_eq!(parse_peer_id("StV1DL6CwTryKyV"), None);
        assert_ne!(Identity::from_secret([8; 32]).peer_id(), id.peer_id());
    }

    #[test]
    fn base58_known_vectors() {
        assert_eq!(base58(b""), "");
        assert_eq!(base58(&[0, 0, 1]), "112");
        assert_eq!(base58(b"hello world"), "StV1DL6CwTryKyV");
        assert_eq!(base58_decode("StV1DL6CwTryKyV").as_deref(), Some(&b"hello world"[..]));
        assert_eq!(base58_decode("112").as_deref(), Some(&[0u8, 0, 1][..]));
        assert_eq!(base58_decode("0OIl"), None);
    }

    #[test]
    fn key_file_is_created_private_once_and_reloaded() {
        let dir = std::env::temp_dir().join(format!("meshproxy-id-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("node.key");
        let first = Identity::load_or_create(&path).expect("created");
        let again = Identity::load_or_create(&path).expect("loaded");
        assert_eq!(first.secret_bytes(), again.secret_bytes());
        assert_eq!(fs::metadata(&path).expect("exists").len(), 32);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).expect("exists").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(matches!(first.create(&path), Err(IdentityError::Exists(_))));
        fs::write(&path, b"short").expect("write");
        assert!(matches!(Identity::load(&path), Err(IdentityError::BadLength { len: 5, .. })));
        let _ = fs::remove_dir_all(&dir);
    }
}
