//! The check of the `noise_handshake` fuzz target: our initiator and
//! responder fed what a hostile peer sends.
//!
//! * Raw: the peer's messages are the fuzz bytes themselves. Nobody without
//!   our ephemeral key's secret can make message 2 or 3 decrypt, so the
//!   handshake must fail (never complete), and never panic.
//! * Honest keys, hostile payload: the peer runs the real XX handshake (snow,
//!   a fixed identity) but its identity payload is the fuzz bytes, or its
//!   valid identity fields followed by them (protobuf merges, so the fuzz
//!   bytes may override fields, add extensions, lists, junk). The handshake
//!   may complete only as that identity, and then the peer's transport
//!   message opens under the AEAD we chose, which is AES-GCM only if the
//!   payload names it.
//!
//! Allocation is bounded by construction: a handshake message is read into
//! a buffer sized from its 16-bit prefix (at most 64 KiB, twice), and the
//! list is one string within it.

use futures::io::Cursor;
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::identity::Keypair;

use super::pipe::{pipe, End};
use crate::p2p::noise::handshake::{self, HandshakePayload, OurPayload};
use crate::p2p::noise::transport::LEN;
use crate::p2p::noise::{Aead, Noise, NoiseError, NoiseStream, STATIC_KEY_DOMAIN};

/// Reads from the fuzz bytes, writes into a sink.
struct Scripted {
    input: Cursor<Vec<u8>>,
}

impl futures::AsyncRead for Scripted {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.input).poll_read(cx, buf)
    }
}

impl futures::AsyncWrite for Scripted {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_close(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// Our side: a fresh static key and identity, offering both AEADs.
fn ours() -> (Vec<u8>, OurPayload) {
    let noise = Noise::with_aeads(&Keypair::generate_ed25519(), &[Aead::AesGcm, Aead::ChaChaPoly])
        .expect("noise");
    (noise.local.static_private.to_vec(), noise.local.payload.clone())
}

/// `data` is `[mode, bytes…]`: mode bit 0 picks our role (0: we respond),
/// bit 1 the peer (0: raw bytes; 1: honest keys, hostile payload), bit 2
/// whether the hostile payload follows valid identity fields (0) or stands
/// alone (1).
///
/// # Panics
/// When a handshake completes without the peer's valid keys and signature,
/// names another peer, or yields a transport that does not open the peer's
/// messages.
pub fn handshake(data: &[u8]) {
    completed(data);
}

/// [`handshake`]; the AEAD agreed if the handshake completed.
pub(super) fn completed(data: &[u8]) -> Option<Aead> {
    let mode = data.first().copied().unwrap_or(0);
    let rest = data.get(1..).unwrap_or_default();
    let we_initiate = mode & 1 == 1;
    let (private, payload) = ours();
    if mode & 2 == 0 {
        let io = Scripted { input: Cursor::new(rest.to_vec()) };
        let result = futures::executor::block_on(async {
            if we_initiate {
                handshake::initiate(io, &private, &payload).await
            } else {
                handshake::respond(io, &private, &payload).await
            }
        });
        assert!(result.is_err(), "completed a handshake against raw bytes");
        return None;
    }
    let identity = Keypair::ed25519_from_bytes([7; 32]).expect("a fixed identity");
    let (_, mine, theirs) = pipe([1 << 17; 2], &[]);
    let (outcome, honest) = futures::executor::block_on(futures::future::join(
        async {
            if we_initiate {
                handshake::initiate(mine, &private, &payload).await
            } else {
                handshake::respond(mine, &private, &payload).await
            }
        },
        peer(theirs, &identity, mode & 4 == 0, rest, !we_initiate),
    ));
    let Ok((remote, mut stream)) = outcome else { return None };
    assert_eq!(remote, identity.public().to_peer_id(), "completed as another peer");
    let (io, split) = honest.expect("we completed, so the peer did");
    if stream.aead() == Aead::AesGcm {
        let named = rest.windows(6).any(|w| w == b"AESGCM");
        assert!(named, "AES-GCM chosen though the payload never names it");
    }
    // The peer seals under its split keys with the AEAD we chose: what we
    // derived from ours must be the same key.
    let mut theirs = NoiseStream::new(io, stream.aead(), &split.0, &split.1);
    let opened = futures::executor::block_on(async {
        theirs.write_all(b"ping").await.expect("send");
        theirs.flush().await.expect("send");
        let mut got = [0; 4];
        stream.read_exact(&mut got).await.map(|()| got)
    });
    assert_eq!(opened.expect("our side opens the peer's message"), *b"ping");
    Some(stream.aead())
}

/// The peer: XX with real keys and `identity`, whose payload is `fuzz`
/// after valid identity fields (`signed`) or alone. Returns its end and its
/// split keys (for what it sends, for what it receives).
async fn peer(
    mut io: End,
    identity: &Keypair,
    signed: bool,
    fuzz: &[u8],
    initiator: bool,
) -> Result<(End, ([u8; 32], [u8; 32])), NoiseError> {
    let builder = handshake::builder()?;
    let key = builder.generate_keypair()?;
    let builder = handshake::builder()?.local_private_key(&key.private)?;
    let mut state =
        if initiator { builder.build_initiator()? } else { builder.build_responder()? };
    let mut encoded = Vec::new();
    if signed {
        let sig = identity.sign(&[STATIC_KEY_DOMAIN, &key.public].concat())?;
        let fields = HandshakePayload {
            identity_key: identity.public().encode_protobuf(),
            identity_sig: sig,
            extensions: None,
        };
        encoded = prost::Message::encode_to_vec(&fields);
    }
    encoded.extend_from_slice(fuzz);
    let mut buf = vec![0; LEN + 65_535];
    if initiator {
        send(&mut io, &mut state, &[], &mut buf).await?;
        receive(&mut io, &mut state, &mut buf).await?;
        send(&mut io, &mut state, &encoded, &mut buf).await?;
    } else {
        receive(&mut io, &mut state, &mut buf).await?;
        send(&mut io, &mut state, &encoded, &mut buf).await?;
        receive(&mut io, &mut state, &mut buf).await?;
    }
    let (first, second) = state.dangerously_get_raw_split();
    // (what the peer sends, what it receives)
    Ok((io, if initiator { (first, second) } else { (second, first) }))
}

async fn send(
    io: &mut End,
    state: &mut snow::HandshakeState,
    payload: &[u8],
    buf: &mut [u8],
) -> Result<(), NoiseError> {
    let n = state.write_message(payload, &mut buf[LEN..])?;
    buf[..LEN].copy_from_slice(&u16::try_from(n).map_err(|_| snow::Error::Input)?.to_be_bytes());
    io.write_all(&buf[..LEN + n]).await?;
    Ok(())
}

async fn receive(
    io: &mut End,
    state: &mut snow::HandshakeState,
    buf: &mut [u8],
) -> Result<(), NoiseError> {
    let mut len = [0; LEN];
    io.read_exact(&mut len).await?;
    let len = usize::from(u16::from_be_bytes(len));
    let mut message = vec![0; len];
    io.read_exact(&mut message).await?;
    state.read_message(&message, buf)?;
    Ok(())
}
