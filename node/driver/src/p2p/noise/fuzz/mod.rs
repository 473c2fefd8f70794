//! The checks of the Noise fuzz targets (`fuzz/`), here so the committed
//! corpora also replay in this crate's tests:
//!
//! * `noise_transport` ([`received`]): what a [`NoiseStream`] hands out from
//!   received bytes is always a prefix of what the peer sent, whatever
//!   happened to the bytes on the way;
//! * `noise_handshake` ([`handshake()`]): our initiator and responder
//!   against raw bytes and against real keys with a hostile payload;
//! * `noise_duplex` ([`duplex()`]): two streams over a pipe that writes and
//!   reads short, returns `Pending` and `Interrupted`, byte-exact both ways.

mod duplex;
mod handshake;
mod pipe;

use futures::io::Cursor;
use futures::{AsyncReadExt, AsyncWriteExt};

use super::{Aead, NoiseStream};

pub use duplex::duplex;
pub use handshake::handshake;

const SEND_KEY: [u8; 32] = [0x11; 32];
const RECEIVE_KEY: [u8; 32] = [0x22; 32];

/// Reads `u16` little-endian from the front of `data`, or 0.
fn take_u16(data: &mut &[u8]) -> usize {
    match data {
        [a, b, rest @ ..] => {
            let v = u16::from_le_bytes([*a, *b]);
            *data = rest;
            usize::from(v)
        }
        _ => 0,
    }
}

/// `data` is `[mode, write, read, cut: u16, flip_at: u16, flip_xor, plaintext…]`.
/// Even modes send the plaintext in writes of `write + 1` bytes (each
/// flushed: one message), then flip one byte of the wire and cut it short;
/// odd modes take the rest of `data` as the wire itself. Mode bit 1 picks
/// the AEAD (ChaCha20-Poly1305, or AES-256-GCM). The receiver reads in
/// pieces of `read + 1` bytes.
///
/// # Panics
/// When the receiver hands out bytes the sender did not send, or loses
/// bytes of an untouched wire.
pub fn received(mut data: &[u8]) {
    let mode = data.first().copied().unwrap_or(0);
    data = data.get(1..).unwrap_or_default();
    let write = take_u16(&mut data) + 1;
    let read = take_u16(&mut data) + 1;
    let cut = take_u16(&mut data);
    let flip_at = take_u16(&mut data);
    let flip_xor = data.first().copied().unwrap_or(0);
    let plaintext = data.get(1..).unwrap_or_default();
    let aead = if mode & 2 == 0 { Aead::ChaChaPoly } else { Aead::AesGcm };

    let (wire, sent) = if mode % 2 == 1 {
        (plaintext.to_vec(), &[][..])
    } else {
        let mut wire = send(aead, plaintext, write);
        if let Some(b) = wire.get_mut(flip_at) {
            *b ^= flip_xor;
        }
        let untouched = flip_xor == 0 || flip_at >= wire.len();
        if cut > 0 && cut < wire.len() {
            wire.truncate(cut);
        } else if untouched {
            let got = receive(aead, wire, read);
            assert!(got.as_deref() == Ok(plaintext), "an untouched wire lost bytes: {got:?}");
            return;
        }
        (wire, plaintext)
    };
    let got = match receive(aead, wire, read) {
        Ok(got) | Err(got) => got,
    };
    assert!(sent.starts_with(&got), "handed out {} bytes that were not sent", got.len());
}

/// The wire for `plaintext` sealed with `aead` and sent in flushed writes of `write` bytes.
fn send(aead: Aead, plaintext: &[u8], write: usize) -> Vec<u8> {
    futures::executor::block_on(async {
        let mut sender = NoiseStream::new(Cursor::new(Vec::new()), aead, &SEND_KEY, &RECEIVE_KEY);
        for piece in plaintext.chunks(write) {
            sender.write_all(piece).await.expect("writing to memory");
            sender.flush().await.expect("writing to memory");
        }
        sender.into_inner().into_inner()
    })
}

/// What a receiver hands out from `wire` in reads of `read` bytes: `Ok` if
/// it ended cleanly, `Err` with what came before the error otherwise.
fn receive(aead: Aead, wire: Vec<u8>, read: usize) -> Result<Vec<u8>, Vec<u8>> {
    futures::executor::block_on(async {
        let mut receiver = NoiseStream::new(Cursor::new(wire), aead, &RECEIVE_KEY, &SEND_KEY);
        let mut got = Vec::new();
        let mut buf = vec![0; read];
        loop {
            match receiver.read(&mut buf).await {
                Ok(0) => return Ok(got),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) => return Err(got),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
        out
    }

    fn field(tag: u64, bytes: &[u8]) -> Vec<u8> {
        [varint(tag << 3 | 2), varint(bytes.len() as u64), bytes.to_vec()].concat()
    }

    /// The handshake check reaches completion where it should (so its
    /// assertions on a completed handshake run), and not where it must not.
    #[test]
    fn the_handshake_check_completes_exactly_with_a_signed_payload() {
        let aes = field(4, &field(0x6d70, b"AESGCM"));
        for mode in [2u8, 3] {
            assert_eq!(handshake::completed(&[mode]), Some(Aead::ChaChaPoly), "{mode}");
            let listed = [&[mode][..], &aes].concat();
            assert_eq!(handshake::completed(&listed), Some(Aead::AesGcm), "{mode}");
            // Alone, the payload carries no identity.
            assert_eq!(handshake::completed(&[&[mode | 4][..], &aes].concat()), None);
            // Raw bytes never complete.
            assert_eq!(handshake::completed(&[&[mode & 1][..], &[0, 32], &[9; 32]].concat()), None);
        }
    }

    /// The duplex check's pipe does misbehave in every way, and the bytes
    /// still arrive: a run with a small pipe and a busy script.
    #[test]
    fn the_duplex_check_meets_every_misbehaviour_and_carries_the_bytes() {
        // AES-GCM; side 0 writes twice, side 1 once; pipes of 7 and 3 bytes.
        let mut data = vec![1, 2, 1];
        let u16s = |data: &mut Vec<u8>, vs: &[u16]| {
            vs.iter().for_each(|v| data.extend_from_slice(&v.to_le_bytes()));
        };
        u16s(&mut data, &[6, 2]);
        // Writes (size - 1, flush): 3,000 and 40,001 bytes, then 10,000.
        for size in [2_999, 40_000, 9_999] {
            u16s(&mut data, &[size]);
            data.push(1);
        }
        // Reads of 1 and 100 bytes, then the script.
        u16s(&mut data, &[0, 99]);
        data.extend([0u8, 16, 24, 130, 255, 7, 20, 60].repeat(64));
        let (carried, [pending, interrupted, short]) = duplex::run(&data);
        assert_eq!(carried, [3_000 + 40_001, 10_000]);
        assert!(pending > 10 && interrupted > 10 && short > 10, "{pending} {interrupted} {short}");
    }
}
