//! Known answers for the transport's two AEADs, and a differential test
//! against snow.
//!
//! The pinned vectors were computed outside Rust, with Python's
//! `cryptography` (OpenSSL), from the Noise spec's definitions alone:
//!
//! ```python
//! SPLIT = bytes(range(0x20, 0x40)); PT = b"meshproxy noise known answer"
//! chacha = lambda k, n, pt: ChaCha20Poly1305(k).encrypt(b"\0"*4 + struct.pack("<Q", n), pt, b"")
//! aes = lambda k, n, pt: AESGCM(k).encrypt(b"\0"*4 + struct.pack(">Q", n), pt, b"")
//! rekey = lambda k: aes(k, 2**64 - 1, b"\0"*32)[:32]
//! derived = HKDF(SHA256(), 32, salt=None, info=b"meshproxy/noise AESGCM").derive(SPLIT)
//! # AES-GCM message n is sealed under rekey(derived) when the stream starts
//! # at n with `derived` and n is a positive multiple of 2**20 (REKEY falls due).
//! ```
//!
//! The runtime cross-checks use snow's stateless transport with an explicit
//! nonce: its own ChaChaPoly (the RustCrypto `chacha20poly1305` crate, not
//! ring) and ring's AES-GCM behind snow's nonce layout and REKEY.

use futures::io::Cursor;
use futures::{AsyncReadExt, AsyncWriteExt};
use proptest::prelude::*;
use snow::resolvers::{DefaultResolver, FallbackResolver, RingResolver};
use snow::StatelessTransportState;

use super::transport::LEN;
use super::{Aead, NoiseStream, MAX_PLAINTEXT, REKEY_EVERY};

/// The split key both directions use here (what each side calls sending and
/// receiving is set by the roles below).
const SPLIT: [u8; 32] = [
    0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e, 0x2f,
    0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x3b, 0x3c, 0x3d, 0x3e, 0x3f,
];
const PT: &[u8] = b"meshproxy noise known answer";
/// HKDF-SHA256(salt = empty, IKM = SPLIT, info = "meshproxy/noise AESGCM").
const DERIVED: &str = "10c3f017bd7ea8228e2c6bfb54b4dad254ce66ca2bf28f29ceee60a33ac7074b";

/// The counters of the brief: both ends of the 32-bit boundary, a high byte,
/// and the last message before the reserved 2^64 - 1.
const COUNTERS: [u64; 6] = [0, 1, (1 << 32) - 1, 1 << 32, 1 << 56, u64::MAX - 1];

/// `PT` sealed as message `COUNTERS[i]`: ciphertext and tag.
const CHACHA: [&str; 6] = [
    "ed062cb463fab865e308978e8cfa2b3dad07d4b9436fdbb7b6c7a65b75070bf625404d2f950208ac3308072b",
    "7f26c50573065af1ba5a2cfc83e5fd4473b1069208c66dc797eae2610f1ef75ab93c5c7fef5b0daeefd83789",
    "b610cb5a44da0ea746e0ae327f177704659801070078884b963ab1658631fb1098f42cb81806ca1517098bff",
    "90372c341b51cd39ffca46f917d990a4fe5b2a34d99e87b76c8d27cd68b39a8f2383271694c8d7e78f5fde42",
    "3e32a9de6677a876c3209ab145d46ab8bb40eebd969e07a1acdbc4adcc370427545ddae1ebe57c6dd27dc5ce",
    "a5e6d620b141d89f685c151e41355de294f4de17ad3d675f0a082285f1664cae98460e8d9dccc8ff1ff52869",
];
/// The same under AES-256-GCM (2^32 and 2^56 after one REKEY of `DERIVED`).
const AESGCM: [&str; 6] = [
    "ec24b642c90c539a4410968f8df10295f6f6d1d8e52185f890c099e917d2e491648692b4e4f7993d97a955df",
    "ac5a3c052bef403613254a9e9a4b51132c60b5ce0bbd635c43de287d3b8c60ddfe7eae59aedb1997e710a61b",
    "76674c506b59f1dcb85640909ca64263db48017605f53fd56f230400e2d2d980e830867b33e314b8ce006fc8",
    "d9a397b7787443e705dff26078e7b3cbbf918afdcd7259bfb95c73353f96ee53ee9a467f714bb5862a01bee6",
    "47f8867958b42d565aa680e988fb9e47d619a637a4b9c8da675aa922a9eb4a623d08ad06dea8670dc5a3a947",
    "3bce68359b23e9950b51ec88ff46eb8c8e193a40867c3b48f08aada90c9309b141882403c6124cc5c66984b5",
];
/// One AES-256-GCM stream from message 2^20 - 1 on, `PT` three times: the
/// last message under `DERIVED`, then two under REKEY(`DERIVED`).
const AESGCM_ACROSS_REKEY: [&str; 3] = [
    "37dfafb0977fc11f065edbe25ccaafebd9e1c373222f2ab4de229c5ddf5b462aaa5a3021fadca7813f5592a5",
    "d283715ab9850320c0a3ed97abb33ff6d6afcf35c5b9459a63306d57be3f441d5fb0a8330b3f481d69dc770a",
    "56bfbd9175371820bfd37a647adf9f584fbf1b38e276c27ef8a3295140aabee6145bee3e2068ff3dd0653011",
];

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

/// A length prefix and `message`: one message on the wire.
fn framed(message: &[u8]) -> Vec<u8> {
    let mut wire = u16::try_from(message.len()).expect("len").to_be_bytes().to_vec();
    wire.extend_from_slice(message);
    wire
}

/// What our sender (under `SPLIT`, having sealed `n` messages) puts on the
/// wire for each of `texts`, each flushed.
fn seal_at(aead: Aead, n: u64, texts: &[&[u8]]) -> Vec<u8> {
    let mut ours = NoiseStream::new(Cursor::new(Vec::new()), aead, &SPLIT, &[0; 32]);
    ours.set_counters(n, 0);
    futures::executor::block_on(async {
        for text in texts {
            ours.write_all(text).await.expect("write");
            ours.flush().await.expect("flush");
        }
    });
    ours.into_inner().into_inner()
}

/// What our receiver (under `SPLIT`, having opened `n` messages) reads from `wire`.
fn open_at(aead: Aead, n: u64, wire: Vec<u8>) -> std::io::Result<Vec<u8>> {
    let mut ours = NoiseStream::new(Cursor::new(wire), aead, &[0; 32], &SPLIT);
    ours.set_counters(0, n);
    let mut got = Vec::new();
    futures::executor::block_on(ours.read_to_end(&mut got)).map(|_| got)
}

#[test]
fn both_aeads_seal_the_known_answers_at_high_counters_and_open_them() {
    for (aead, vectors) in [(Aead::ChaChaPoly, CHACHA), (Aead::AesGcm, AESGCM)] {
        for (n, hex) in COUNTERS.into_iter().zip(vectors) {
            let want = framed(&unhex(hex));
            assert!(seal_at(aead, n, &[PT]) == want, "{aead:?} seals message {n} differently");
            let got = open_at(aead, n, want).expect("our receiver opens the known answer");
            assert_eq!(got, PT, "{aead:?} message {n}");
        }
    }
}

#[test]
fn aes_gcm_key_is_hkdf_of_the_split_key_and_chacha_takes_the_split_key() {
    assert_eq!(*Aead::AesGcm.transport_key(&SPLIT), *unhex(DERIVED));
    assert_eq!(*Aead::ChaChaPoly.transport_key(&SPLIT), SPLIT);
}

#[test]
fn aes_gcm_across_the_rekey_boundary_matches_the_known_answers() {
    let want: Vec<u8> = AESGCM_ACROSS_REKEY.iter().flat_map(|h| framed(&unhex(h))).collect();
    assert!(seal_at(Aead::AesGcm, REKEY_EVERY - 1, &[PT, PT, PT]) == want);
    assert_eq!(open_at(Aead::AesGcm, REKEY_EVERY - 1, want).expect("opens"), PT.repeat(3));
}

/// Noise reserves nonce 2^64 - 1: after message 2^64 - 2 a direction ends,
/// sealing and opening alike.
#[test]
fn nothing_is_sealed_or_opened_with_the_reserved_nonce() {
    for aead in [Aead::ChaChaPoly, Aead::AesGcm] {
        let mut ours = NoiseStream::new(Cursor::new(Vec::new()), aead, &SPLIT, &SPLIT);
        ours.set_counters(u64::MAX - 1, 0);
        futures::executor::block_on(async {
            ours.write_all(PT).await.expect("write");
            ours.flush().await.expect("the last message");
            ours.write_all(PT).await.expect("collecting");
            ours.flush().await.expect_err("a message with nonce 2^64 - 1 was sealed");
        });
        let wire = seal_at(aead, u64::MAX - 1, &[PT]);
        let mut two = wire.clone();
        two.extend_from_slice(&wire);
        // Refused for its counter (Other), not for failing authentication.
        let err = open_at(aead, u64::MAX - 1, two).expect_err("opened with nonce 2^64 - 1");
        assert_eq!(err.kind(), std::io::ErrorKind::Other, "{err}");
    }
}

/// snow's transport for the Noise cipher `cipher` ("ChaChaPoly" from snow's
/// own resolver, "AESGCM" from ring's), as the responder, under `i_to_r` for
/// what the initiator sends and `r_to_i` for what the responder sends.
fn snow_responder(cipher: &str, i_to_r: &[u8; 32], r_to_i: &[u8; 32]) -> StatelessTransportState {
    let params: snow::params::NoiseParams =
        format!("Noise_NN_25519_{cipher}_SHA256").parse().expect("params");
    let build = || {
        let resolver = FallbackResolver::new(Box::new(DefaultResolver), Box::new(RingResolver));
        snow::Builder::with_resolver(params.clone(), Box::new(resolver))
    };
    let mut initiator = build().build_initiator().expect("initiator");
    let mut responder = build().build_responder().expect("responder");
    let (mut m, mut p) = ([0; 256], [0; 256]);
    let n = initiator.write_message(&[], &mut m).expect("e");
    responder.read_message(&m[..n], &mut p).expect("e");
    let n = responder.write_message(&[], &mut m).expect("e, ee");
    initiator.read_message(&m[..n], &mut p).expect("e, ee");
    let mut snow = responder.into_stateless_transport_mode().expect("transport");
    snow.rekey_manually(Some(i_to_r), Some(r_to_i));
    snow
}

/// snow, receiving what our initiator sends under `SPLIT` with `aead` (the
/// derived key for AES-GCM), with the REKEY ours does when a stream set to
/// message `n` takes its next one.
fn snow_for(aead: Aead, n: u64) -> StatelessTransportState {
    let cipher = aead.name();
    let key = aead.transport_key(&SPLIT);
    let mut snow = snow_responder(cipher, &key, &key);
    if aead == Aead::AesGcm && n > 0 && n.is_multiple_of(REKEY_EVERY) {
        snow.rekey_incoming();
        snow.rekey_outgoing();
    }
    snow
}

#[test]
fn snow_agrees_with_the_known_answers() {
    for (aead, vectors) in [(Aead::ChaChaPoly, CHACHA), (Aead::AesGcm, AESGCM)] {
        for (n, hex) in COUNTERS.into_iter().zip(vectors) {
            let snow = snow_for(aead, n);
            let mut m = [0; 256];
            let len = snow.write_message(n, PT, &mut m).expect("snow seals");
            assert_eq!(hex, m[..len].iter().map(|b| format!("{b:02x}")).collect::<String>());
        }
    }
}

/// The derivation is what separates the keys: snow holding the raw split
/// key opens our ChaChaPoly messages but none of our AES-GCM ones.
#[test]
fn aes_gcm_messages_are_not_sealed_under_the_split_key() {
    let raw = snow_responder("AESGCM", &SPLIT, &SPLIT);
    let wire = seal_at(Aead::AesGcm, 0, &[PT]);
    assert!(raw.read_message(0, &wire[LEN..], &mut [0; 256]).is_err());
    let raw = snow_responder("ChaChaPoly", &SPLIT, &SPLIT);
    let wire = seal_at(Aead::ChaChaPoly, 0, &[PT]);
    assert!(raw.read_message(0, &wire[LEN..], &mut [0; 256]).is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Ours and snow's stateless transport, message `n` and `n + 1` at random
    /// counters, each way: ours seals and snow opens; snow seals and ours
    /// opens. Mostly ChaChaPoly (the brief's), AES-GCM a quarter of the time.
    #[test]
    fn ours_and_snow_agree_at_random_counters_both_ways(
        n in prop_oneof![0..u64::MAX - 1, Just(u64::MAX - 2), 0..1u64 << 21],
        aes in proptest::bool::weighted(0.25),
        first in proptest::collection::vec(any::<u8>(), 1..MAX_PLAINTEXT + 1),
        second in proptest::collection::vec(any::<u8>(), 1..300),
    ) {
        let aead = if aes { Aead::AesGcm } else { Aead::ChaChaPoly };
        // The second message may cross a REKEY that the first did not.
        let crosses = aead == Aead::AesGcm && (n + 1).is_multiple_of(REKEY_EVERY);
        let mut snow = snow_for(aead, n);
        let mut buf = vec![0; MAX_PLAINTEXT + 16];

        let wire = seal_at(aead, n, &[&first, &second]);
        let split = LEN + first.len() + 16;
        let got = snow.read_message(n, &wire[LEN..split], &mut buf).expect("snow opens ours");
        prop_assert!(buf[..got] == first[..]);
        if crosses {
            snow.rekey_incoming();
        }
        let got = snow.read_message(n + 1, &wire[split + LEN..], &mut buf).expect("second");
        prop_assert!(buf[..got] == second[..]);

        let mut snow = snow_for(aead, n);
        let mut wire = Vec::new();
        let len = snow.write_message(n, &first, &mut buf).expect("snow seals");
        wire.extend(framed(&buf[..len]));
        if crosses {
            snow.rekey_outgoing();
        }
        let len = snow.write_message(n + 1, &second, &mut buf).expect("snow seals");
        wire.extend(framed(&buf[..len]));
        let got = open_at(aead, n, wire).expect("ours opens snow's");
        prop_assert!(got == [first, second].concat());
    }
}
