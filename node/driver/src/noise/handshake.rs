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

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::identity::{self, PeerId};
use snow::resolvers::{DefaultResolver, FallbackResolver, RingResolver};
use zeroize::Zeroizing;

use super::transport::{NoiseStream, MAX_MESSAGE};
use super::{NoiseError, PARAMS, STATIC_KEY_DOMAIN};

/// The handshake payload of the libp2p Noise spec. The spec's `extensions`
/// (field 4: WebTransport certificate hashes, early muxer negotiation) are
/// for transports we do not run, so a received one is skipped.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HandshakePayload {
    /// The sender's libp2p public key, protobuf-encoded.
    #[prost(bytes = "vec", tag = "1")]
    pub identity_key: Vec<u8>,
    /// The sender's signature over [`STATIC_KEY_DOMAIN`] and its static Noise key.
    #[prost(bytes = "vec", tag = "2")]
    pub identity_sig: Vec<u8>,
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
    payload: &[u8],
) -> Result<(PeerId, NoiseStream<T>), NoiseError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut state = builder()?.local_private_key(static_private)?.build_initiator()?;
    let mut message = Zeroizing::new(vec![0; MAX_MESSAGE]);
    let mut received = Zeroizing::new(vec![0; MAX_MESSAGE]);

    let n = state.write_message(&[], &mut message)?;
    send(&mut io, &message[..n]).await?;

    let n = receive(&mut io, &mut state, &mut message, &mut received).await?;
    let remote = authenticate(&state, &received[..n])?;

    let n = state.write_message(payload, &mut message)?;
    send(&mut io, &message[..n]).await?;

    Ok((remote, split(state, io)))
}

/// Runs the handshake as the listener.
pub(super) async fn respond<T>(
    mut io: T,
    static_private: &[u8],
    payload: &[u8],
) -> Result<(PeerId, NoiseStream<T>), NoiseError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut state = builder()?.local_private_key(static_private)?.build_responder()?;
    let mut message = Zeroizing::new(vec![0; MAX_MESSAGE]);
    let mut received = Zeroizing::new(vec![0; MAX_MESSAGE]);

    if receive(&mut io, &mut state, &mut message, &mut received).await? != 0 {
        return Err(NoiseError::UnexpectedPayload);
    }

    let n = state.write_message(payload, &mut message)?;
    send(&mut io, &message[..n]).await?;

    let n = receive(&mut io, &mut state, &mut message, &mut received).await?;
    let remote = authenticate(&state, &received[..n])?;

    Ok((remote, split(state, io)))
}

/// Writes one length-prefixed handshake message and flushes it.
async fn send<T: AsyncWrite + Unpin>(io: &mut T, message: &[u8]) -> Result<(), NoiseError> {
    let len = u16::try_from(message.len()).map_err(|_| snow::Error::Input)?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(message).await?;
    io.flush().await?;
    Ok(())
}

/// Reads one length-prefixed handshake message and decrypts its payload into
/// `payload`, returning the payload's length. The 16-bit length prefix bounds
/// the read to 64 KiB.
async fn receive<T: AsyncRead + Unpin>(
    io: &mut T,
    state: &mut snow::HandshakeState,
    message: &mut [u8],
    payload: &mut [u8],
) -> Result<usize, NoiseError> {
    let mut len = [0; 2];
    io.read_exact(&mut len).await?;
    let message = &mut message[..usize::from(u16::from_be_bytes(len))];
    io.read_exact(message).await?;
    Ok(state.read_message(message, payload)?)
}

/// Checks that the remote's identity key signed the static key it used in
/// the handshake, and names the peer.
fn authenticate(state: &snow::HandshakeState, payload: &[u8]) -> Result<PeerId, NoiseError> {
    let payload: HandshakePayload = prost::Message::decode(payload)?;
    let identity = identity::PublicKey::try_decode_protobuf(&payload.identity_key)?;
    // XX sends the static key before the payload that carries the identity.
    let static_key = state.get_remote_static().ok_or(NoiseError::BadSignature)?;
    let signed = [STATIC_KEY_DOMAIN, static_key].concat();
    if !identity.verify(&signed, &payload.identity_sig) {
        return Err(NoiseError::BadSignature);
    }
    Ok(identity.to_peer_id())
}

/// The transport keys of a finished handshake: the first for what the
/// initiator sends, the second for what the responder sends.
fn split<T>(mut state: snow::HandshakeState, io: T) -> NoiseStream<T> {
    let (first, second) = state.dangerously_get_raw_split();
    let (first, second) = (Zeroizing::new(first), Zeroizing::new(second));
    if state.is_initiator() {
        NoiseStream::new(io, &first, &second)
    } else {
        NoiseStream::new(io, &second, &first)
    }
}
