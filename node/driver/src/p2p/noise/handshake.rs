//! The libp2p Noise XX handshake: three length-prefixed messages, the last
//! two carrying each side's identity key and its signature over the sender's
//! static Noise key.
//!
//! ```text
//! initiator -> e                                  (empty payload)
//! responder <- e, ee, s, es   + responder's identity
//! initiator -> s, se          + initiator's identity
//! ```
//!
//! The deadline for the whole handshake is the transport's connection timeout.
//!
//! Each identity payload may also list the AEADs its sender takes for
//! transport messages, best first, in the spec's `NoiseExtensions` under the
//! experimental code point 0x6d70 (which libp2p-noise and the
//! spec's other implementations skip as unknown). The transport uses the
//! first of the initiator's that the responder lists too; if the two share
//! none (or a side lists nothing), the spec's ChaCha20-Poly1305.
//! The lists travel inside the handshake's encrypted, authenticated payloads
//! (and its transcript hash), so unlike a multistream-select choice nobody on
//! the path can change them, and the choice costs no round trip.
//!
//! Both ends must compute the same choice: the rule in [`agree`],
//! [`MAX_AEADS`] and the exact, case-sensitive names are part of the wire
//! protocol, specified in docs/noise-aead-extension.md. AES-256-GCM keys are
//! derived from the split's under a label of their own
//! ([`Aead::transport_key`]), so a peer that chose differently fails at its
//! first transport message, and a key never serves two AEADs.

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::identity::{self, PeerId};
use snow::resolvers::{DefaultResolver, FallbackResolver, RingResolver};
use zeroize::Zeroizing;

use super::transport::{Aead, NoiseStream, LEN, MAX_MESSAGE};
use super::{NoiseError, PARAMS, STATIC_KEY_DOMAIN};

/// The handshake payload of the libp2p Noise spec. A received field we do
/// not know (the retired 3, or our own list's former top-level field 1000)
/// is skipped.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct HandshakePayload {
    /// The sender's libp2p public key, protobuf-encoded.
    #[prost(bytes = "vec", tag = "1")]
    pub(super) identity_key: Vec<u8>,
    /// The sender's signature over `noise-libp2p-static-key:` and its static
    /// Noise key.
    #[prost(bytes = "vec", tag = "2")]
    pub(super) identity_sig: Vec<u8>,
    /// The spec's extensions; absent when the sender lists no AEADs, so our
    /// payload is then exactly a stock one.
    #[prost(message, optional, tag = "4")]
    pub(super) extensions: Option<NoiseExtensions>,
}

/// The spec's `NoiseExtensions`, with only our experimental entry: the
/// registered ones (WebTransport certificate hashes, early muxer
/// negotiation) are for transports we do not run, so a received one is
/// skipped.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct NoiseExtensions {
    /// The AEADs the sender takes for transport messages, best first: their
    /// Noise names (`AESGCM`, `ChaChaPoly`) separated by commas. One string,
    /// not a repeated field, so a hostile payload costs one allocation
    /// bounded by the message, not one per entry. The field number is
    /// 0x6d70 ("mp"), in the range above 1024 the spec leaves to experiments.
    #[prost(string, tag = "28016")]
    pub(super) transport_aeads: String,
}

/// A payload's AEAD list ("" when it has none).
pub(super) fn listed_aeads(payload: &HandshakePayload) -> &str {
    payload.extensions.as_ref().map_or("", |e| e.transport_aeads.as_str())
}

/// Only the first this many names of a list count.
pub(super) const MAX_AEADS: usize = 8;

/// The AEADs a payload's list names, in its order: the first [`MAX_AEADS`]
/// entries, unknown names skipped.
pub(super) fn parse_aeads(list: &str) -> Vec<Aead> {
    list.split(',').take(MAX_AEADS).filter_map(Aead::from_name).collect()
}

/// The list our payload carries for `aeads`.
pub(super) fn list_aeads(aeads: &[Aead]) -> String {
    aeads.iter().map(|a| a.name()).collect::<Vec<_>>().join(",")
}

/// The transport AEAD for an initiator listing `initiator` and a responder
/// listing `responder` (each as [`parse_aeads`] read it): the first of the
/// initiator's the responder lists too, else ChaCha20-Poly1305.
pub(super) fn agree(initiator: &[Aead], responder: &[Aead]) -> Aead {
    initiator.iter().copied().find(|a| responder.contains(a)).unwrap_or(Aead::ChaChaPoly)
}

/// Our identity payload, encoded once, and the AEADs it lists (as the
/// remote will read them).
#[derive(Clone)]
pub(super) struct OurPayload {
    pub(super) encoded: Vec<u8>,
    pub(super) aeads: Vec<Aead>,
}

/// A snow builder for our parameters: ring for the cipher, hash and
/// randomness, snow's own X25519 (ring's resolver has no Diffie-Hellman).
pub(super) fn builder() -> Result<snow::Builder<'static>, NoiseError> {
    let params = PARAMS.parse()?;
    let resolver = FallbackResolver::new(Box::new(RingResolver), Box::new(DefaultResolver));
    Ok(snow::Builder::with_resolver(params, Box::new(resolver)))
}

/// Runs the handshake as the dialer.
pub(super) async fn initiate<T>(
    mut io: T,
    static_private: &[u8],
    payload: &OurPayload,
) -> Result<(PeerId, NoiseStream<T>), NoiseError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut state = builder()?.local_private_key(static_private)?.build_initiator()?;

    send(&mut io, &mut state, &[]).await?;
    let received = receive(&mut io, &mut state).await?;
    let (remote, theirs) = authenticate(&state, &received)?;
    send(&mut io, &mut state, &payload.encoded).await?;

    let aead = agree(&payload.aeads, &theirs);
    tracing::debug!(peer = %remote, aead = aead.name(), "noise: dialed; transport AEAD agreed");
    Ok((remote, split(state, aead, io)?))
}

/// Runs the handshake as the listener.
pub(super) async fn respond<T>(
    mut io: T,
    static_private: &[u8],
    payload: &OurPayload,
) -> Result<(PeerId, NoiseStream<T>), NoiseError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut state = builder()?.local_private_key(static_private)?.build_responder()?;

    if !receive(&mut io, &mut state).await?.is_empty() {
        return Err(NoiseError::UnexpectedPayload);
    }
    send(&mut io, &mut state, &payload.encoded).await?;
    let received = receive(&mut io, &mut state).await?;
    let (remote, theirs) = authenticate(&state, &received)?;

    let aead = agree(&theirs, &payload.aeads);
    tracing::debug!(peer = %remote, aead = aead.name(), "noise: accepted; transport AEAD agreed");
    Ok((remote, split(state, aead, io)?))
}

/// Room in a handshake message besides the payload: two public keys, two
/// tags and the prefix.
const HANDSHAKE_OVERHEAD: usize = 2 + 2 * 32 + 2 * 16;

/// Writes the next handshake message, carrying `payload`, and flushes it.
async fn send<T: AsyncWrite + Unpin>(
    io: &mut T,
    state: &mut snow::HandshakeState,
    payload: &[u8],
) -> Result<(), NoiseError> {
    let mut message = vec![0; (HANDSHAKE_OVERHEAD + payload.len()).min(LEN + MAX_MESSAGE)];
    let n = state.write_message(payload, &mut message[LEN..])?;
    let len = u16::try_from(n).map_err(|_| snow::Error::Input)?;
    message[..LEN].copy_from_slice(&len.to_be_bytes());
    io.write_all(&message[..LEN + n]).await?;
    io.flush().await?;
    Ok(())
}

/// Reads the next handshake message and returns its payload. The 16-bit
/// length prefix bounds the read to 64 KiB.
async fn receive<T: AsyncRead + Unpin>(
    io: &mut T,
    state: &mut snow::HandshakeState,
) -> Result<Vec<u8>, NoiseError> {
    let mut len = [0; LEN];
    io.read_exact(&mut len).await?;
    let mut message = vec![0; usize::from(u16::from_be_bytes(len))];
    io.read_exact(&mut message).await?;
    let mut payload = vec![0; message.len()];
    let n = state.read_message(&message, &mut payload)?;
    payload.truncate(n);
    Ok(payload)
}

/// Checks that the remote's identity key signed the static key it used in
/// the handshake, and names the peer and the AEADs it listed.
fn authenticate(
    state: &snow::HandshakeState,
    payload: &[u8],
) -> Result<(PeerId, Vec<Aead>), NoiseError> {
    let payload: HandshakePayload = prost::Message::decode(payload)?;
    let identity = identity::PublicKey::try_decode_protobuf(&payload.identity_key)?;
    // XX sends the static key before the payload that carries the identity.
    let static_key = state.get_remote_static().ok_or(NoiseError::BadSignature)?;
    let signed = [STATIC_KEY_DOMAIN, static_key].concat();
    if !identity.verify(&signed, &payload.identity_sig) {
        return Err(NoiseError::BadSignature);
    }
    Ok((identity.to_peer_id(), parse_aeads(listed_aeads(&payload))))
}

/// The transport keys of a finished handshake, for `aead`: the first for
/// what the initiator sends, the second for what the responder sends.
fn split<T>(
    mut state: snow::HandshakeState,
    aead: Aead,
    io: T,
) -> Result<NoiseStream<T>, NoiseError> {
    if !state.is_handshake_finished() {
        return Err(snow::Error::State(snow::error::StateProblem::HandshakeNotFinished).into());
    }
    let (first, second) = state.dangerously_get_raw_split();
    let (first, second) = (Zeroizing::new(first), Zeroizing::new(second));
    Ok(if state.is_initiator() {
        NoiseStream::new(io, aead, &first, &second)
    } else {
        NoiseStream::new(io, aead, &second, &first)
    })
}
