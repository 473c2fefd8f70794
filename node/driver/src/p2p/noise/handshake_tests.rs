//! The handshake against peers that lie, that send malformed or oversized
//! payloads, or that run the version before the AEAD list moved into
//! `NoiseExtensions`; libp2p-noise at the largest messages; and a libp2p
//! swarm dialing our node under the wrong PeerId.

use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade};
use libp2p::identity::Keypair;
use libp2p::noise;

use super::tests::{connect, pattern, pipe, Pipe};
use super::*;

type Outcome = Result<(PeerId, NoiseStream<Pipe>), NoiseError>;

/// Runs `dialer` against `listener` over a pipe; both results.
async fn handshake(dialer: Noise, listener: Noise) -> (Outcome, Outcome) {
    let (a, b) = pipe();
    tokio::join!(dialer.upgrade_outbound(a, "/noise"), listener.upgrade_inbound(b, "/noise"))
}

fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
    out
}

/// A protobuf field `tag` with wire type LEN holding `bytes`.
fn field(tag: u64, bytes: &[u8]) -> Vec<u8> {
    [varint(tag << 3 | 2), varint(bytes.len() as u64), bytes.to_vec()].concat()
}

/// `NoiseExtensions` (field 4) holding our list (0x6d70).
fn extension(list: &str) -> Vec<u8> {
    field(4, &field(0x6d70, list.as_bytes()))
}

/// A node with `honest`'s static key and identity fields, whose payload is
/// those fields followed by `extra` (protobuf merges repeated fields: the
/// last scalar wins), and which agrees as if it listed `aeads`.
fn with_payload(honest: &Noise, extra: &[u8], aeads: &[Aead]) -> Noise {
    Noise {
        local: Arc::new(LocalKeys {
            static_private: honest.local.static_private.clone(),
            payload: OurPayload {
                encoded: [&honest.local.payload.encoded[..], extra].concat(),
                aeads: aeads.to_vec(),
            },
        }),
    }
}

/// A node listing nothing: its payload is the identity fields alone.
fn bare(k: &Keypair) -> Noise {
    Noise::with_aeads(k, &[]).expect("noise")
}

fn both() -> Noise {
    Noise::with_aeads(&Keypair::generate_ed25519(), &[Aead::AesGcm, Aead::ChaChaPoly])
        .expect("noise")
}

/// An initiator presenting an identity that signed a different static key
/// (the responder-side `BadSignature`; the dialer-side case is in tests.rs).
#[tokio::test]
async fn an_initiator_whose_identity_signed_another_static_key_is_refused() {
    let ka = Keypair::generate_ed25519();
    let (honest, other) = (bare(&ka), bare(&ka));
    let liar = Noise {
        local: Arc::new(LocalKeys {
            static_private: honest.local.static_private.clone(),
            payload: other.local.payload.clone(),
        }),
    };
    let (_, inb) = handshake(liar, both()).await;
    assert!(matches!(inb, Err(NoiseError::BadSignature)), "{inb:?}");
    // The same payloads with their own static keys are accepted.
    let (out, inb) = handshake(other, both()).await;
    assert!(out.is_ok() && inb.is_ok(), "{out:?} {inb:?}");
}

/// Only the ed25519 identity keys are built in: a secp256k1 one is refused.
#[tokio::test]
async fn an_identity_key_of_a_type_we_do_not_build_is_refused() {
    let secp = [&[0x08, 0x02][..], &field(2, &[0x02; 33])].concat();
    let k = Keypair::generate_ed25519();
    // identity_key (field 1) again: the last one counts.
    let liar = with_payload(&bare(&k), &field(1, &secp), &[]);
    let (out, _) = handshake(both(), liar).await;
    assert!(matches!(out, Err(NoiseError::IdentityKey(_))), "{out:?}");
}

/// Our list is `NoiseExtensions` field 0x6d70 (LEN), and nothing else is
/// added: a node that lists nothing sends a stock payload, and the former
/// top-level field 1000 is gone.
#[test]
fn the_list_travels_in_noise_extensions_under_0x6d70() {
    let k = Keypair::generate_ed25519();
    let listed = Noise::with_aeads(&k, &[Aead::AesGcm, Aead::ChaChaPoly]).expect("noise");
    let unlisted = bare(&k);
    let stock: handshake::HandshakePayload =
        prost::Message::decode(&unlisted.local.payload.encoded[..]).expect("decode");
    assert!(stock.extensions.is_none());
    let fields = [field(1, &stock.identity_key), field(2, &stock.identity_sig)].concat();
    assert_eq!(unlisted.local.payload.encoded, fields, "a stock payload: fields 1 and 2");
    let encoded = &listed.local.payload.encoded;
    let ours: handshake::HandshakePayload = prost::Message::decode(&encoded[..]).expect("decode");
    let fields = [field(1, &ours.identity_key), field(2, &ours.identity_sig)].concat();
    let ext = extension("AESGCM,ChaChaPoly");
    assert!(encoded.ends_with(&ext), "the list is NoiseExtensions 0x6d70");
    assert_eq!(encoded.len(), fields.len() + ext.len());
}

/// The payload of the version before this one: the list at top-level field
/// 1000 (the encoding the old code's prost struct produced).
#[derive(Clone, PartialEq, prost::Message)]
struct OldPayload {
    #[prost(bytes = "vec", tag = "1")]
    identity_key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    identity_sig: Vec<u8>,
    #[prost(string, tag = "1000")]
    transport_aeads: String,
}

/// A meshproxy node from before the list moved (and before AES-GCM keys were
/// derived) and one from after fall back to ChaCha20-Poly1305, the split's
/// own keys in both versions, and carry data. Neither reads the other's
/// list: the new node skips field 1000; the old one finds no field 1000 in
/// the new payload (checked by decoding it as the old code did). Had the new
/// node still read field 1000, the two would have picked AES-GCM under
/// different keys and failed at the first transport message.
#[tokio::test]
async fn a_node_from_before_the_move_and_a_new_one_fall_back_to_chacha() {
    let (ko, kn) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let new = Noise::with_aeads(&kn, &[Aead::AesGcm, Aead::ChaChaPoly]).expect("noise");
    let offer = [Aead::AesGcm, Aead::ChaChaPoly];
    // What the old code reads from the new payload, and so picks.
    let seen: OldPayload = prost::Message::decode(&new.local.payload.encoded[..]).expect("old");
    let theirs = handshake::parse_aeads(&seen.transport_aeads);
    assert_eq!(theirs, [], "the old node sees no list");
    for old_dials in [true, false] {
        let old_pick = if old_dials {
            handshake::agree(&offer, &theirs)
        } else {
            handshake::agree(&theirs, &offer)
        };
        assert_eq!(old_pick, Aead::ChaChaPoly);
        // The old node: its payload as it sent it, its pick as it made it.
        let old_list = field(1000, handshake::list_aeads(&offer).as_bytes());
        let old = with_payload(&bare(&ko), &old_list, &[old_pick]);
        let (a, b) = if old_dials {
            connect(old, &ko, new.clone(), &kn).await
        } else {
            connect(new.clone(), &kn, old, &ko).await
        };
        assert_eq!((a.aead(), b.aead()), (Aead::ChaChaPoly, Aead::ChaChaPoly), "{old_dials}");
        super::tests::exchange(a, b, &pattern(MAX_PLAINTEXT + 9, 6), 40_000).await;
    }
}

/// Field 0x6d70 with another wire type than LEN (a varint here), or
/// `extensions` itself as a varint: the payload does not decode and the
/// handshake fails, whichever side sent it. (Not skipped as unknown: a
/// malformed list is a broken peer, and refusing it keeps both ends from
/// guessing differently.)
#[tokio::test]
async fn a_list_field_of_the_wrong_wire_type_is_refused() {
    let varint_list = field(4, &[varint(0x6d70 << 3), vec![1]].concat());
    let varint_extensions = [varint(4 << 3), vec![1]].concat();
    for extra in [varint_list, varint_extensions] {
        let k = Keypair::generate_ed25519();
        let (_, inb) = handshake(with_payload(&bare(&k), &extra, &[]), both()).await;
        assert!(matches!(inb, Err(NoiseError::Payload(_))), "responder: {inb:?}");
        let (out, _) = handshake(both(), with_payload(&bare(&k), &extra, &[])).await;
        assert!(matches!(out, Err(NoiseError::Payload(_))), "initiator: {out:?}");
    }
}

/// A list sent twice (two `extensions`, merged as protobuf merges them)
/// counts as its last: the standard rule, so any protobuf decoder reads it
/// the same way.
#[tokio::test]
async fn a_list_sent_twice_counts_as_the_last() {
    for (first, last, want) in
        [("AESGCM", "ChaChaPoly", Aead::ChaChaPoly), ("ChaChaPoly", "AESGCM", Aead::AesGcm)]
    {
        let k = Keypair::generate_ed25519();
        let extra = [extension(first), extension(last)].concat();
        let dialer = with_payload(&bare(&k), &extra, &[want]);
        let (out, inb) = handshake(dialer, both()).await;
        let ((_, a), (_, b)) = (out.expect("dialer"), inb.expect("listener"));
        assert_eq!((a.aead(), b.aead()), (want, want), "{first} then {last}");
    }
}

/// The encoded payload of `k` listing AES-GCM first, padded with junk
/// entries to exactly `len` bytes.
fn padded(honest: &Noise, len: usize) -> Vec<u8> {
    let base = honest.local.payload.encoded.len();
    (0..len)
        .map(|junk| extension(&format!("AESGCM,{}", "x".repeat(junk))))
        .find(|e| base + e.len() == len)
        .expect("a padding that fits")
}

/// Message 2 carries the responder's payload plus 96 bytes (e, s and two
/// tags): a payload filling it to 65,535 bytes (its list one long entry
/// after `AESGCM`, past which nothing counts) is accepted, and one byte more
/// is refused by the sender, not truncated or sent.
#[tokio::test]
async fn a_largest_message_2_is_accepted_and_one_byte_more_is_not_sent() {
    let largest = MAX_PLAINTEXT + 16 - 96;
    let k = Keypair::generate_ed25519();
    let honest = bare(&k);
    let fits = with_payload(&honest, &padded(&honest, largest), &[Aead::AesGcm]);
    assert_eq!(fits.local.payload.encoded.len(), largest);
    let (out, inb) = handshake(both(), fits).await;
    let ((_, a), (_, b)) = (out.expect("dialer"), inb.expect("listener"));
    assert_eq!((a.aead(), b.aead()), (Aead::AesGcm, Aead::AesGcm));

    let over = with_payload(&honest, &padded(&honest, largest + 1), &[Aead::AesGcm]);
    let (out, inb) = handshake(both(), over).await;
    assert!(matches!(inb, Err(NoiseError::Noise(snow::Error::Input))), "{inb:?}");
    assert!(matches!(out, Err(NoiseError::Io(_))), "{out:?}");
}

/// Message 3 carries the initiator's payload plus 64 bytes (s and two tags).
#[tokio::test]
async fn a_largest_message_3_is_accepted() {
    let largest = MAX_PLAINTEXT + 16 - 64;
    let k = Keypair::generate_ed25519();
    let honest = bare(&k);
    let fits = with_payload(&honest, &padded(&honest, largest), &[Aead::AesGcm]);
    let (out, inb) = handshake(fits, both()).await;
    let ((_, a), (_, b)) = (out.expect("dialer"), inb.expect("listener"));
    assert_eq!((a.aead(), b.aead()), (Aead::AesGcm, Aead::AesGcm));
}

/// Sends writes of `sizes` bytes each way at once, each flushed, and checks
/// both sides receive exactly what the other sent.
async fn exchange_writes<A, B>(mut a: A, mut b: B, sizes: &[usize])
where
    A: futures::AsyncRead + futures::AsyncWrite + Unpin,
    B: futures::AsyncRead + futures::AsyncWrite + Unpin,
{
    let data: Vec<Vec<u8>> = sizes.iter().zip(1..).map(|(&n, seed)| pattern(n, seed)).collect();
    let all = data.concat();
    async fn send<W: futures::AsyncWrite + Unpin>(w: &mut W, data: &[Vec<u8>]) {
        for d in data {
            w.write_all(d).await.expect("write");
            w.flush().await.expect("flush");
        }
    }
    async fn receive<R: futures::AsyncRead + Unpin>(r: &mut R, len: usize) -> Vec<u8> {
        let mut got = vec![0; len];
        r.read_exact(&mut got).await.expect("read");
        got
    }
    let (mut ar, mut aw) = futures::AsyncReadExt::split(&mut a);
    let (mut br, mut bw) = futures::AsyncReadExt::split(&mut b);
    let (_, _, at_b, at_a) = tokio::join!(
        send(&mut aw, &data),
        send(&mut bw, &data),
        receive(&mut br, all.len()),
        receive(&mut ar, all.len()),
    );
    assert!(at_b == all, "dialer -> listener bytes differ");
    assert!(at_a == all, "listener -> dialer bytes differ");
}

/// Writes of exactly the largest plaintext (one 65,535-byte message) and of
/// one byte more (split into two), each way, with libp2p-noise dialing and
/// listening: byte-exact.
#[tokio::test]
async fn largest_messages_interoperate_with_libp2p_noise_both_ways() {
    let sizes = [MAX_PLAINTEXT, MAX_PLAINTEXT + 1, 1, MAX_PLAINTEXT];
    let (ka, kb) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let ours = Noise::with_aeads(&ka, &[Aead::AesGcm, Aead::ChaChaPoly]).expect("noise");
    let theirs = noise::Config::new(&kb).expect("libp2p-noise");
    let (a, b) = connect(ours, &ka, theirs, &kb).await;
    exchange_writes(a, b, &sizes).await;

    let theirs = noise::Config::new(&ka).expect("libp2p-noise");
    let ours = Noise::with_aeads(&kb, &[Aead::AesGcm, Aead::ChaChaPoly]).expect("noise");
    let (a, b) = connect(theirs, &ka, ours, &kb).await;
    exchange_writes(a, b, &sizes).await;
}

/// libp2p-noise reads our payload with its `NoiseExtensions` entry and
/// skips it, in both roles (tests.rs's interop tests cover the same with
/// our default list; this one pins the largest list we could send).
#[tokio::test]
async fn libp2p_noise_skips_a_long_list_in_both_roles() {
    let (ka, kb) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let long = with_payload(&bare(&ka), &padded(&bare(&ka), 60_000), &[Aead::AesGcm]);
    let (a, _) = connect(long.clone(), &ka, noise::Config::new(&kb).expect("c"), &kb).await;
    assert_eq!(a.aead(), Aead::ChaChaPoly);
    let (_, b) = connect(noise::Config::new(&kb).expect("c"), &kb, long, &ka).await;
    assert_eq!(b.aead(), Aead::ChaChaPoly);
}

/// The libp2p swarm compares the PeerId our upgrade authenticates with the
/// one the dial expected: a dial to our node under another PeerId fails
/// with `WrongPeerId` naming the real one, and the same dial under the right
/// PeerId connects (our Noise and muxer over libp2p's in-memory transport).
#[tokio::test]
async fn a_swarm_dialing_our_node_under_the_wrong_peer_id_fails_with_wrong_peer_id() {
    use futures::StreamExt;
    use libp2p::core::transport::{MemoryTransport, Transport};
    use libp2p::core::upgrade::Version;
    use libp2p::swarm::{dial_opts::DialOpts, dummy, DialError, Swarm, SwarmEvent};

    fn swarm(key: &Keypair) -> Swarm<dummy::Behaviour> {
        let transport = MemoryTransport::default()
            .upgrade(Version::V1Lazy)
            .authenticate(Noise::new(key).expect("noise"))
            .multiplex(crate::p2p::muxer::Yamux::new(8))
            .boxed();
        let config = libp2p::swarm::Config::with_tokio_executor();
        Swarm::new(transport, dummy::Behaviour, key.public().to_peer_id(), config)
    }
    let (kd, kl) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let (mut dialer, mut listener) = (swarm(&kd), swarm(&kl));
    let listener_id = kl.public().to_peer_id();
    listener.listen_on("/memory/0".parse().expect("addr")).expect("listen");
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = listener.select_next_some().await {
            break address;
        }
    };

    let guard = std::time::Duration::from_secs(20);
    let wrong = Keypair::generate_ed25519().public().to_peer_id();
    for expected in [wrong, listener_id] {
        dialer
            .dial(DialOpts::peer_id(expected).addresses(vec![addr.clone()]).build())
            .expect("dial");
        let outcome = tokio::time::timeout(guard, async {
            loop {
                tokio::select! {
                    _ = listener.select_next_some() => {}
                    event = dialer.select_next_some() => match event {
                        SwarmEvent::OutgoingConnectionError { error, .. } => break Err(error),
                        SwarmEvent::ConnectionEstablished { peer_id, .. } => break Ok(peer_id),
                        _ => {}
                    },
                }
            }
        })
        .await
        .expect("the dial ends");
        if expected == wrong {
            match outcome {
                Err(DialError::WrongPeerId { obtained, .. }) => assert_eq!(obtained, listener_id),
                other => panic!("dialing under the wrong PeerId: {other:?}"),
            }
        } else {
            assert_eq!(outcome.expect("dialing under the right PeerId"), listener_id);
        }
    }
}
