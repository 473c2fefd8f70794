//! Our Noise against libp2p-noise in both roles, against itself, and against
//! peers that lie.

use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo};
use libp2p::identity::Keypair;
use libp2p::noise;
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

use super::*;

pub(super) type Pipe = Compat<tokio::io::DuplexStream>;

pub(super) fn pipe() -> (Pipe, Pipe) {
    let (a, b) = tokio::io::duplex(256 * 1024);
    (a.compat(), b.compat())
}

/// Some bytes that are not all alike.
pub(super) fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// Sends `data` each way at once, in writes of `chunk` bytes, and checks
/// both sides receive it intact.
pub(super) async fn exchange<A, B>(mut a: A, mut b: B, data: &[u8], chunk: usize)
where
    A: futures::AsyncRead + futures::AsyncWrite + Unpin,
    B: futures::AsyncRead + futures::AsyncWrite + Unpin,
{
    async fn send<W: futures::AsyncWrite + Unpin>(w: &mut W, data: &[u8], chunk: usize) {
        for piece in data.chunks(chunk) {
            w.write_all(piece).await.expect("write");
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
        send(&mut aw, data, chunk),
        send(&mut bw, data, chunk),
        receive(&mut br, data.len()),
        receive(&mut ar, data.len()),
    );
    assert!(at_b == data, "initiator -> responder bytes differ");
    assert!(at_a == data, "responder -> initiator bytes differ");
}

/// Runs `dialer` (keys `kd`) against `listener` (keys `kl`) over a pipe,
/// checks each side names the other, and returns both streams.
pub(super) async fn connect<D, L, A, B>(
    dialer: D,
    kd: &Keypair,
    listener: L,
    kl: &Keypair,
) -> (A, B)
where
    D: OutboundConnectionUpgrade<Pipe, Output = (PeerId, A)> + UpgradeInfo<Info = &'static str>,
    L: InboundConnectionUpgrade<Pipe, Output = (PeerId, B)> + UpgradeInfo<Info = &'static str>,
    D::Error: std::fmt::Debug,
    L::Error: std::fmt::Debug,
{
    let (a, b) = pipe();
    let (out, inb) =
        tokio::join!(dialer.upgrade_outbound(a, "/noise"), listener.upgrade_inbound(b, "/noise"));
    let ((seen_l, a), (seen_d, b)) = (out.expect("dialer"), inb.expect("listener"));
    assert_eq!(seen_l, kl.public().to_peer_id());
    assert_eq!(seen_d, kd.public().to_peer_id());
    (a, b)
}

#[tokio::test]
async fn ours_to_ours_authenticates_both_sides_and_carries_data_intact() {
    let (ka, kb) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let ours = |k: &Keypair| Noise::new(k).expect("noise");
    let (a, b) = connect(ours(&ka), &ka, ours(&kb), &kb).await;
    assert_eq!(a.aead(), Aead::preferred()[0]);
    assert_eq!(b.aead(), Aead::preferred()[0]);
    // Writes larger than one message, and small ones.
    exchange(a, b, &pattern(3 * MAX_PLAINTEXT + 77, 1), 100_000).await;
}

/// libp2p-noise skips our payload's AEAD list (an unknown field) and lists
/// none, so the transport is the spec's ChaCha20-Poly1305 even when we
/// offer AES-GCM first.
#[tokio::test]
async fn ours_dialing_libp2p_noise_interoperates() {
    let (ka, kb) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let theirs = noise::Config::new(&kb).expect("libp2p-noise");
    let ours = Noise::with_aeads(&ka, &[Aead::AesGcm, Aead::ChaChaPoly]).expect("noise");
    let (a, b) = connect(ours, &ka, theirs, &kb).await;
    assert_eq!(a.aead(), Aead::ChaChaPoly);
    exchange(a, b, &pattern(200_000, 2), 63_500).await;
}

#[tokio::test]
async fn libp2p_noise_dialing_ours_interoperates() {
    let (ka, kb) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let theirs = noise::Config::new(&ka).expect("libp2p-noise");
    let ours = Noise::with_aeads(&kb, &[Aead::AesGcm, Aead::ChaChaPoly]).expect("noise");
    let (a, b) = connect(theirs, &ka, ours, &kb).await;
    assert_eq!(b.aead(), Aead::ChaChaPoly);
    exchange(a, b, &pattern(200_000, 3), 1_000).await;
}

/// Two of ours agree on the initiator's first AEAD the responder also takes,
/// whichever of them offers AES-GCM, and carry data under it.
#[tokio::test]
async fn ours_agree_on_the_transport_aead_from_both_offers() {
    use Aead::{AesGcm, ChaChaPoly};
    let cases: [(&[Aead], &[Aead], Aead); 8] = [
        (&[AesGcm, ChaChaPoly], &[AesGcm, ChaChaPoly], AesGcm),
        (&[AesGcm, ChaChaPoly], &[ChaChaPoly], ChaChaPoly),
        (&[ChaChaPoly], &[AesGcm, ChaChaPoly], ChaChaPoly),
        (&[AesGcm], &[ChaChaPoly, AesGcm], AesGcm),
        (&[ChaChaPoly, AesGcm], &[AesGcm, ChaChaPoly], ChaChaPoly),
        (&[], &[AesGcm], ChaChaPoly),
        (&[], &[], ChaChaPoly),
        (&[ChaChaPoly, ChaChaPoly, AesGcm], &[AesGcm, AesGcm], AesGcm),
    ];
    for (dialer, listener, want) in cases {
        let (ka, kb) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let d = Noise::with_aeads(&ka, dialer).expect("noise");
        let l = Noise::with_aeads(&kb, listener).expect("noise");
        let (a, b) = connect(d, &ka, l, &kb).await;
        assert_eq!((a.aead(), b.aead()), (want, want), "{dialer:?} dialing {listener:?}");
        exchange(a, b, &pattern(2 * MAX_PLAINTEXT, 4), 50_000).await;
    }
}

#[test]
fn lists_skip_unknown_names_and_count_only_their_first_entries() {
    use handshake::{agree, parse_aeads};
    assert_eq!(parse_aeads("AESGCM,ChaChaPoly"), [Aead::AesGcm, Aead::ChaChaPoly]);
    assert_eq!(parse_aeads("Rot13,,BLAKE2s,AESGCM"), [Aead::AesGcm]);
    assert_eq!(parse_aeads("aesgcm, AESGCM"), [], "names are exact");
    assert_eq!(parse_aeads(""), []);
    let long = format!("{}AESGCM", "junk,".repeat(handshake::MAX_AEADS));
    assert_eq!(parse_aeads(&long), [], "past the first entries nothing counts");
    let aes = parse_aeads("AESGCM");
    assert_eq!(agree(&aes, &aes), Aead::AesGcm);
    assert_eq!(agree(&aes, &parse_aeads(&long)), Aead::ChaChaPoly);
    assert_eq!(agree(&[], &[]), Aead::ChaChaPoly);
    // What we offer is what the remote reads back.
    let offer = [Aead::ChaChaPoly, Aead::AesGcm];
    assert_eq!(parse_aeads(&handshake::list_aeads(&offer)), offer);
}

proptest::proptest! {
    /// The choice is the first of the initiator's first entries (known
    /// names only) that the responder's first entries name too, else the
    /// spec's ChaCha20-Poly1305: a model written from the rule, by names.
    #[test]
    fn the_agreed_aead_is_the_initiators_first_shared_choice(
        initiator in proptest::collection::vec("AESGCM|ChaChaPoly|[a-z]{0,4}", 0..12),
        responder in proptest::collection::vec("AESGCM|ChaChaPoly|[a-z]{0,4}", 0..12),
    ) {
        let (i, r) = (initiator.join(","), responder.join(","));
        let got = handshake::agree(&handshake::parse_aeads(&i), &handshake::parse_aeads(&r));
        let counted = |l: &[String]| -> Vec<String> {
            l.iter().take(handshake::MAX_AEADS).cloned().collect()
        };
        let (ci, cr) = (counted(&initiator), counted(&responder));
        let want = ci
            .iter()
            .find(|n| (*n == "AESGCM" || *n == "ChaChaPoly") && cr.contains(n))
            .map_or("ChaChaPoly", String::as_str);
        proptest::prop_assert_eq!(got.name(), want);
    }
}

/// A responder presenting an identity that signed a different static key
/// (a replayed payload) is refused.
#[tokio::test]
async fn a_payload_signed_for_another_static_key_is_refused() {
    let (ka, kb) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let honest = Noise::new(&kb).expect("noise");
    let other = Noise::new(&kb).expect("noise");
    let liar = Noise {
        local: Arc::new(LocalKeys {
            static_private: honest.local.static_private.clone(),
            payload: other.local.payload.clone(),
        }),
    };
    let (a, b) = pipe();
    let (out, _) = tokio::join!(
        Noise::new(&ka).expect("noise").upgrade_outbound(a, "/noise"),
        liar.upgrade_inbound(b, "/noise"),
    );
    assert!(matches!(out, Err(NoiseError::BadSignature)), "{out:?}");
}

/// The spec's first message carries no payload; a responder refuses one.
#[tokio::test]
async fn a_first_message_with_a_payload_is_refused() {
    let (a, b) = pipe();
    let dialer = async move {
        let key = handshake::builder().expect("builder").generate_keypair().expect("key");
        let mut state = handshake::builder()
            .expect("builder")
            .local_private_key(&key.private)
            .expect("key")
            .build_initiator()
            .expect("initiator");
        let mut message = vec![0; 1024];
        let n = state.write_message(b"early", &mut message).expect("message");
        let mut a = a;
        a.write_all(&u16::try_from(n).expect("len").to_be_bytes()).await.expect("write");
        a.write_all(&message[..n]).await.expect("write");
        a.flush().await.expect("flush");
        a
    };
    let kb = Keypair::generate_ed25519();
    let (_a, inb) =
        tokio::join!(dialer, Noise::new(&kb).expect("noise").upgrade_inbound(b, "/noise"));
    assert!(matches!(inb, Err(NoiseError::UnexpectedPayload)), "{inb:?}");
}

/// A peer that hangs up mid-handshake is an I/O error, not a hang.
#[tokio::test]
async fn a_peer_hanging_up_mid_handshake_is_an_io_error() {
    let (a, b) = pipe();
    drop(a);
    let kb = Keypair::generate_ed25519();
    let inb = Noise::new(&kb).expect("noise").upgrade_inbound(b, "/noise").await;
    assert!(matches!(inb, Err(NoiseError::Io(_))), "{inb:?}");
}

/// Runs `check` on every input of `fuzz/corpus/<target>`.
fn replay(target: &str, check: fn(&[u8])) {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target);
    let mut ran = 0;
    for entry in std::fs::read_dir(&dir).expect("fuzz corpus") {
        let path = entry.expect("corpus entry").path();
        let data = std::fs::read(&path).expect("corpus input");
        let ok = std::panic::catch_unwind(|| check(&data));
        assert!(ok.is_ok(), "{} fails", path.display());
        ran += 1;
    }
    assert!(ran > 0, "the {target} corpus is empty");
}

/// The Noise fuzz targets' committed corpora replay here.
#[test]
fn the_fuzz_corpus_replays_clean() {
    replay("noise_transport", fuzz::received);
}

#[test]
fn the_noise_handshake_fuzz_corpus_replays_clean() {
    replay("noise_handshake", fuzz::handshake);
}

#[test]
fn the_noise_duplex_fuzz_corpus_replays_clean() {
    replay("noise_duplex", fuzz::duplex);
}

/// Each mode of the fuzz check runs on an honest receiver: an untouched wire
/// reads back whole, a flipped one yields only a prefix, garbage nothing.
#[test]
fn the_fuzz_check_accepts_honest_runs_of_each_mode() {
    let header = |mode: u8, flip_xor: u8| {
        let mut d = vec![mode];
        for v in [99u16, 7, 0, 150] {
            d.extend_from_slice(&v.to_le_bytes());
        }
        d.push(flip_xor);
        d.extend_from_slice(&pattern(1_000, 5));
        d
    };
    fuzz::received(&header(0, 0));
    fuzz::received(&header(0, 0x40));
    fuzz::received(&header(1, 0));
}
