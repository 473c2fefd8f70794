//! The check of the `noise_transport` fuzz target (`fuzz/`): what a
//! [`NoiseStream`] hands out from received bytes is always a prefix of what
//! the peer sent, whatever happened to the bytes on the way. The committed
//! corpus also replays in this crate's tests.

use futures::io::Cursor;
use futures::{AsyncReadExt, AsyncWriteExt};

use super::{Aead, NoiseStream};

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
