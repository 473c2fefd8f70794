//! Noise for our peer connections: libp2p's `/noise` handshake, and a
//! transport that seals and opens each message in place.
//!
//! libp2p-noise copies every proxied byte three times on the way out (into
//! its send buffer, inside snow from the plaintext to the ciphertext buffer,
//! into the length-prefixed writer) and twice on the way in, besides zeroing a
//! fresh buffer for each message. Under `cargo xtask bench` those copies were
//! a third of the client's CPU samples, each costing about as much as the
//! ChaCha20-Poly1305 itself.
//!
//! This module speaks the same protocol (the libp2p Noise spec: the XX
//! pattern with X25519, ChaCha20-Poly1305 and SHA-256, each side proving its
//! libp2p identity by signing its static Noise key) so peers running
//! libp2p-noise interoperate (tests below). snow runs the handshake; after it,
//! [`NoiseStream`] seals and opens messages in place with ring under the keys
//! of the handshake's split, so a byte is copied once into the message being
//! built and not again.
//!
//! Two meshproxy nodes whose CPUs have AES instructions seal transport
//! messages with AES-256-GCM instead, agreed inside the handshake (see
//! `handshake`): on the bench machine ChaCha20-Poly1305 was 31 % of the
//! client's CPU samples, and ring's AES-256-GCM seals 3–4 times as fast.

#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;
mod handshake;
mod transport;

use std::fmt;
use std::future::Future;
use std::iter;
use std::pin::Pin;
use std::sync::Arc;

use futures::{AsyncRead, AsyncWrite};
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo};
use libp2p::identity::{self, PeerId};
use zeroize::Zeroizing;

use handshake::{HandshakePayload, OurPayload};
pub use transport::{Aead, NoiseStream, MAX_PLAINTEXT, REKEY_EVERY};

/// The Noise protocol name libp2p uses (for the handshake, whichever AEAD
/// the transport then uses).
const PARAMS: &str = "Noise_XX_25519_ChaChaPoly_SHA256";

/// What a peer signs with its identity key to bind its static Noise key to it.
const STATIC_KEY_DOMAIN: &[u8] = b"noise-libp2p-static-key:";

/// Why a Noise handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum NoiseError {
    /// The connection failed or ended during the handshake.
    #[error("noise handshake i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A handshake message did not decrypt, or the Noise state refused it.
    #[error("noise handshake: {0}")]
    Noise(#[from] snow::Error),
    /// The remote's handshake payload is not a valid protobuf payload.
    #[error("noise handshake payload: {0}")]
    Payload(#[from] prost::DecodeError),
    /// The first handshake message carried a payload; the spec requires none.
    #[error("noise handshake: the first message must carry no payload")]
    UnexpectedPayload,
    /// The remote's identity key does not decode.
    #[error("noise handshake: remote identity key: {0}")]
    IdentityKey(#[from] identity::DecodingError),
    /// The remote's signature over its static Noise key does not verify.
    #[error("noise handshake: the remote's identity did not sign its static key")]
    BadSignature,
    /// Our identity key could not sign our static Noise key.
    #[error("noise: signing our static key: {0}")]
    Signing(#[from] identity::SigningError),
}

/// The `/noise` security upgrade for a node's identity.
///
/// The static Noise key is made (and signed) once, like libp2p-noise's
/// `Config`; each connection then runs its own handshake.
#[derive(Clone)]
pub struct Noise {
    local: Arc<LocalKeys>,
}

struct LocalKeys {
    static_private: Zeroizing<Vec<u8>>,
    /// Our handshake payload: identity key, signature over the static key,
    /// and the transport AEADs we take.
    payload: OurPayload,
}

impl fmt::Debug for Noise {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Noise").finish_non_exhaustive()
    }
}

impl Noise {
    /// A fresh static Noise key signed by `identity`, offering the AEADs
    /// this machine seals fastest with ([`Aead::preferred`]).
    pub fn new(identity: &identity::Keypair) -> Result<Noise, NoiseError> {
        Noise::with_aeads(identity, Aead::preferred())
    }

    /// A fresh static Noise key signed by `identity`, offering `aeads` for
    /// transport messages, best first (an empty list or one the remote does
    /// not share means ChaCha20-Poly1305; the remote looks at the first
    /// eight only).
    pub fn with_aeads(identity: &identity::Keypair, aeads: &[Aead]) -> Result<Noise, NoiseError> {
        let static_key = handshake::builder()?.generate_keypair()?;
        let signed = [STATIC_KEY_DOMAIN, &static_key.public].concat();
        let listed = handshake::list_aeads(aeads);
        // What we agree with is what the remote reads from our list.
        let aeads = handshake::parse_aeads(&listed);
        let payload = HandshakePayload {
            identity_key: identity.public().encode_protobuf(),
            identity_sig: identity.sign(&signed)?,
            extensions: (!listed.is_empty())
                .then_some(handshake::NoiseExtensions { transport_aeads: listed }),
        };
        Ok(Noise {
            local: Arc::new(LocalKeys {
                static_private: Zeroizing::new(static_key.private),
                payload: OurPayload { encoded: prost::Message::encode_to_vec(&payload), aeads },
            }),
        })
    }
}

impl UpgradeInfo for Noise {
    type Info = &'static str;
    type InfoIter = iter::Once<&'static str>;

    fn protocol_info(&self) -> Self::InfoIter {
        iter::once("/noise")
    }
}

type Upgrade<T> =
    Pin<Box<dyn Future<Output = Result<(PeerId, NoiseStream<T>), NoiseError>> + Send>>;

impl<T> InboundConnectionUpgrade<T> for Noise
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Output = (PeerId, NoiseStream<T>);
    type Error = NoiseError;
    type Future = Upgrade<T>;

    fn upgrade_inbound(self, io: T, _: Self::Info) -> Self::Future {
        Box::pin(async move {
            handshake::respond(io, &self.local.static_private, &self.local.payload).await
        })
    }
}

impl<T> OutboundConnectionUpgrade<T> for Noise
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Output = (PeerId, NoiseStream<T>);
    type Error = NoiseError;
    type Future = Upgrade<T>;

    fn upgrade_outbound(self, io: T, _: Self::Info) -> Self::Future {
        Box::pin(async move {
            handshake::initiate(io, &self.local.static_private, &self.local.payload).await
        })
    }
}

#[cfg(test)]
mod handshake_tests;
#[cfg(test)]
mod kat_tests;
#[cfg(test)]
mod tests;
