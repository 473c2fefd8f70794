//! Noise transport messages, sealed and opened in place.
//!
//! On the wire each message is a 16-bit big-endian length and that many
//! bytes of AEAD ciphertext with its 16-byte tag. The AEAD is the one the
//! handshake agreed ([`Aead`]): ChaCha20-Poly1305 (libp2p's `/noise`; nonce
//! = 32 zero bits, then the message's number in its direction as 64 bits
//! little-endian) or AES-256-GCM (the same number big-endian, as the Noise
//! spec defines it, under a key derived from the split's, with a rekey every
//! [`REKEY_EVERY`] messages; docs/noise-aead-extension.md). Writes are
//! collected into one message until it is full or flushed (yamux writes a
//! frame's header and body separately and flushes after each frame, so a
//! frame is one message).
//!
//! Buffers are held only while bytes are in flight: an idle connection holds
//! none. Released buffers go to a small per-thread pool instead of the
//! allocator, so a busy connection does not allocate and zero a fresh one
//! for every message.

use std::cell::RefCell;
use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::thread::LocalKey;

use futures::{AsyncRead, AsyncWrite};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, CHACHA20_POLY1305};
use ring::hkdf::{Salt, HKDF_SHA256};
use zeroize::Zeroizing;

/// Largest Noise message, tag included.
pub const MAX_MESSAGE: usize = 65_535;
/// The AEAD tag (both AEADs).
const TAG: usize = 16;
/// Largest plaintext one message carries.
pub const MAX_PLAINTEXT: usize = MAX_MESSAGE - TAG;
/// The length prefix.
pub(super) const LEN: usize = 2;
/// Plaintext starts at this alignment in the write buffer: copying into and
/// sealing a buffer 2 bytes past a cache line (prefix first) made the copy
/// cost almost as much as the cipher.
const ALIGN: usize = 64;
/// An outgoing message: room to align, prefix, plaintext (sealed in place)
/// and tag.
const WRITE_BUFFER: usize = ALIGN + LEN + MAX_MESSAGE;
/// Received bytes: room to align and for two whole messages, so one socket
/// read can take in a full message while a partial one is still being
/// completed.
const READ_BUFFER: usize = ALIGN + 2 * (LEN + MAX_MESSAGE);
/// Where in `buffer` a message's length prefix goes so that what follows it
/// (plaintext to seal, or ciphertext to open) starts on an [`ALIGN`] boundary.
fn prefix_at(buffer: &[u8]) -> usize {
    buffer[LEN..].as_ptr().align_offset(ALIGN) % ALIGN
}

/// Released buffers each thread keeps for reuse, per kind.
const POOLED: usize = 4;
/// A partial message of at most this many bytes is moved out of the read
/// buffer while the socket waits, so a peer that sends the start of a
/// message and stalls pins what it sent, not a whole read buffer. Above it
/// the read buffer stays: a peer must send more than this to pin one
/// [`READ_BUFFER`] (about 8 bytes held per byte sent, at most). Moving costs a copy
/// of the partial message out and back, only when the socket runs dry in
/// the middle of a message.
const PARKED: usize = 16 * 1024;

thread_local! {
    static READ_POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    static WRITE_POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer of `size` bytes from `pool`, zeroed only when newly allocated.
fn take(pool: &'static LocalKey<RefCell<Vec<Vec<u8>>>>, size: usize) -> Vec<u8> {
    pool.with(|p| p.borrow_mut().pop()).unwrap_or_else(|| vec![0; size])
}

/// Returns `buffer` (if it is one of `size` bytes) to `pool`, or frees it
/// when the pool is full.
fn give(pool: &'static LocalKey<RefCell<Vec<Vec<u8>>>>, size: usize, buffer: Vec<u8>) {
    if buffer.len() != size {
        return;
    }
    pool.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOLED {
            p.push(buffer);
        }
    });
}

/// The AEAD that seals transport messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aead {
    /// ChaCha20-Poly1305: libp2p's `/noise`, and what peers fall back to.
    ChaChaPoly,
    /// AES-256-GCM: three to four times the speed where the CPU has AES and
    /// carry-less multiply instructions (ring, on this project's 2-core bench
    /// machine: 7.9–8.5 GB/s against 2.0–2.5 GB/s sealing 64 KiB messages).
    AesGcm,
}

impl Aead {
    /// The AEADs this machine seals fastest with, best first; ChaCha20-Poly1305
    /// always, AES-256-GCM first when the CPU has instructions for it
    /// (without them, software AES is slower than ChaCha20).
    pub fn preferred() -> &'static [Aead] {
        if hardware_aes() {
            &[Aead::AesGcm, Aead::ChaChaPoly]
        } else {
            &[Aead::ChaChaPoly]
        }
    }

    /// The Noise spec's name for the cipher functions.
    pub fn name(self) -> &'static str {
        match self {
            Aead::ChaChaPoly => "ChaChaPoly",
            Aead::AesGcm => "AESGCM",
        }
    }

    /// The AEAD a Noise name stands for, if we know it.
    pub fn from_name(name: &str) -> Option<Aead> {
        [Aead::ChaChaPoly, Aead::AesGcm].into_iter().find(|a| a.name() == name)
    }

    fn algorithm(self) -> &'static ring::aead::Algorithm {
        match self {
            Aead::ChaChaPoly => &CHACHA20_POLY1305,
            Aead::AesGcm => &AES_256_GCM,
        }
    }

    /// The Noise spec's nonce for message number `n`: 32 zero bits, then `n`
    /// (little-endian for ChaChaPoly, big-endian for AESGCM).
    fn nonce(self, n: u64) -> Nonce {
        let mut nonce = [0; 12];
        nonce[4..].copy_from_slice(&match self {
            Aead::ChaChaPoly => n.to_le_bytes(),
            Aead::AesGcm => n.to_be_bytes(),
        });
        Nonce::assume_unique_for_key(nonce)
    }

    /// The key this AEAD seals a direction's messages with, from that
    /// direction's key of the handshake's split. ChaCha20-Poly1305 takes the
    /// split key itself (libp2p's `/noise`); AES-256-GCM takes
    /// HKDF-SHA256(salt = empty, IKM = split key, info = [`AESGCM_KEY_INFO`]),
    /// so a split key is never used by two AEADs and the choice is bound into
    /// the key (docs/noise-aead-extension.md).
    pub(super) fn transport_key(self, split_key: &[u8; 32]) -> Zeroizing<[u8; 32]> {
        let mut key = Zeroizing::new(*split_key);
        if self == Aead::AesGcm {
            Salt::new(HKDF_SHA256, &[])
                .extract(split_key)
                .expand(&[AESGCM_KEY_INFO], HKDF_SHA256)
                .and_then(|okm| okm.fill(&mut key[..]))
                // 32 bytes is far below HKDF-SHA256's 255 * 32.
                .unwrap_or_else(|_| unreachable!("32 bytes of HKDF-SHA256"));
        }
        key
    }

    fn key(self, key: &[u8; 32]) -> LessSafeKey {
        UnboundKey::new(self.algorithm(), key)
            .map(LessSafeKey::new)
            // Both take any 32-byte key.
            .unwrap_or_else(|_| unreachable!("a 32-byte {} key", self.name()))
    }
}

/// The HKDF `info` that derives an AES-256-GCM transport key from a split
/// key (wire protocol: both ends must use exactly these bytes).
pub(super) const AESGCM_KEY_INFO: &[u8] = b"meshproxy/noise AESGCM";

/// Whether the CPU has the instructions ring's fast, constant-time AES-GCM
/// needs.
fn hardware_aes() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// An AES-256-GCM direction takes a new key (the Noise spec's `REKEY`) every
/// this many messages, as TLS 1.3 bounds AES-GCM records per key (RFC 8446
/// §5.5): GCM's confidentiality margin shrinks with the square of the blocks
/// sealed under one key. 2^20 messages of at most 64 KiB are 2^32 blocks,
/// which keeps the margin near 2^-65 per key. ChaCha20-Poly1305's margin
/// does not need it, and libp2p's `/noise` has no rekey.
pub const REKEY_EVERY: u64 = 1 << 20;

/// One direction's key and message counter.
struct Cipher {
    aead: Aead,
    key: LessSafeKey,
    sent_or_received: u64,
}

impl Cipher {
    /// A direction under `split_key`, its key of the handshake's split.
    fn new(aead: Aead, split_key: &[u8; 32]) -> Cipher {
        Cipher { aead, key: aead.key(&aead.transport_key(split_key)), sent_or_received: 0 }
    }

    /// The next message's nonce, taking a new key first when one is due.
    /// Noise reserves 2^64 - 1, so a direction ends before it (after
    /// 2^64 - 1 messages, which nobody reaches).
    fn next_nonce(&mut self) -> io::Result<Nonce> {
        let n = self.sent_or_received;
        if n == u64::MAX {
            return Err(io::Error::other("noise: message counter exhausted"));
        }
        if self.aead == Aead::AesGcm && n > 0 && n.is_multiple_of(REKEY_EVERY) {
            self.rekey()?;
        }
        self.sent_or_received += 1;
        Ok(self.aead.nonce(n))
    }

    /// The Noise spec's `REKEY(k)`: the first 32 bytes of 32 zero bytes
    /// sealed under `k` with the reserved nonce 2^64 - 1. Both sides do it
    /// at the same message number, so nothing is sent.
    fn rekey(&mut self) -> io::Result<()> {
        let mut next = Zeroizing::new([0; 32]);
        // The tag is not part of the new key.
        let _tag = self
            .key
            .seal_in_place_separate_tag(self.aead.nonce(u64::MAX), Aad::empty(), &mut next[..])
            .map_err(|_| io::Error::other("noise: rekey failed"))?;
        self.key = self.aead.key(&next);
        Ok(())
    }

    /// Encrypts `plaintext` in place and returns its tag.
    fn seal(&mut self, plaintext: &mut [u8]) -> io::Result<[u8; TAG]> {
        let nonce = self.next_nonce()?;
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce, Aad::empty(), plaintext)
            .map_err(|_| io::Error::other("noise: sealing failed"))?;
        let mut out = [0; TAG];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Decrypts `message` (ciphertext and tag) in place and returns the
    /// plaintext's length.
    fn open(&mut self, message: &mut [u8]) -> io::Result<usize> {
        let nonce = self.next_nonce()?;
        self.key.open_in_place(nonce, Aad::empty(), message).map(|p| p.len()).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidData, "noise: message failed authentication")
        })
    }
}

/// A connection after the Noise handshake.
pub struct NoiseStream<T> {
    io: T,
    sealer: Cipher,
    opener: Cipher,
    /// Received bytes are `read[..filled]`; the opened plaintext not yet
    /// handed out is `read[plain]`; the next message starts at `next`.
    read: Vec<u8>,
    plain: Range<usize>,
    next: usize,
    filled: usize,
    /// A message failed authentication: the stream is dead.
    broken: bool,
    /// The outgoing message: plaintext from `write[head]` to `written` while
    /// collecting; once sealed, the whole message (prefix at `head - LEN`),
    /// `sent` bytes of which the socket has taken.
    write: Vec<u8>,
    head: usize,
    written: usize,
    sealed: bool,
    sent: usize,
}

impl<T> std::fmt::Debug for NoiseStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoiseStream").finish_non_exhaustive()
    }
}

impl<T> NoiseStream<T> {
    /// Wraps `io` with the keys of a finished handshake's split (one per
    /// direction), for messages sealed with `aead` (which derives its own
    /// keys from them: [`Aead::transport_key`]).
    pub(super) fn new(
        io: T,
        aead: Aead,
        send_key: &[u8; 32],
        receive_key: &[u8; 32],
    ) -> NoiseStream<T> {
        NoiseStream {
            io,
            sealer: Cipher::new(aead, send_key),
            opener: Cipher::new(aead, receive_key),
            read: Vec::new(),
            plain: 0..0,
            next: 0,
            filled: 0,
            broken: false,
            write: Vec::new(),
            head: LEN,
            written: 0,
            sealed: false,
            sent: 0,
        }
    }

    /// The AEAD the handshake agreed.
    pub fn aead(&self) -> Aead {
        self.sealer.aead
    }

    /// The connection underneath.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(super) fn into_inner(self) -> T {
        self.io
    }

    /// Sets the number of messages already sealed and opened, as if the
    /// stream had carried that many (the keys stay the current ones: a
    /// REKEY that falls due at the next message still happens), so tests
    /// can reach the counters a real connection never does.
    #[cfg(test)]
    pub(super) fn set_counters(&mut self, sealed: u64, opened: u64) {
        self.sealer.sent_or_received = sealed;
        self.opener.sent_or_received = opened;
    }

    /// Opens the next message if it has arrived whole; false if it has not.
    fn open_next(&mut self) -> io::Result<bool> {
        let Some(prefix) = self.read.get(self.next..self.next + LEN) else {
            return Ok(false);
        };
        if self.filled - self.next < LEN {
            return Ok(false);
        }
        let len = usize::from(u16::from_be_bytes([prefix[0], prefix[1]]));
        if len < TAG {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "noise: message shorter than its tag",
            ));
        }
        let start = self.next + LEN;
        let end = start + len;
        if end > self.filled {
            return Ok(false);
        }
        let plain = self.opener.open(&mut self.read[start..end]).inspect_err(|_| {
            self.broken = true;
        })?;
        self.plain = start..start + plain;
        self.next = end;
        Ok(true)
    }

    /// Makes room after `filled` for at least one whole message.
    fn make_room(&mut self) {
        // A message placed at `front` has its ciphertext aligned.
        if self.read.len() != READ_BUFFER {
            // No buffer yet, or a parked partial message: take a full one.
            let mut full = take(&READ_POOL, READ_BUFFER);
            let front = prefix_at(&full);
            let partial = self.filled - self.next;
            full[front..front + partial].copy_from_slice(&self.read[self.next..self.filled]);
            self.read = full;
            self.next = front;
            self.filled = front + partial;
        }
        let front = prefix_at(&self.read);
        if self.next == self.filled {
            self.next = front;
            self.filled = front;
        } else if self.next + LEN + MAX_MESSAGE > self.read.len() {
            // A partial message near the end: move it to the front.
            self.read.copy_within(self.next..self.filled, front);
            self.filled = front + self.filled - self.next;
            self.next = front;
        }
        self.plain = 0..0;
    }

    /// Releases the read buffer if it holds nothing unread, or parks a
    /// small partial message in a buffer of its own.
    fn release_read(&mut self) {
        let partial = self.filled - self.next;
        if partial <= PARKED && self.read.len() == READ_BUFFER {
            let parked = self.read[self.next..self.filled].to_vec();
            give(&READ_POOL, READ_BUFFER, std::mem::replace(&mut self.read, parked));
            self.next = 0;
            self.filled = partial;
            self.plain = 0..0;
        }
    }

    /// Seals the collected plaintext into a message.
    fn seal(&mut self) -> io::Result<()> {
        let head = self.head;
        let len = self.written - head + TAG;
        let len = u16::try_from(len).map_err(|_| io::Error::other("noise: message too long"))?;
        let tag = self.sealer.seal(&mut self.write[head..self.written])?;
        self.write[self.written..self.written + TAG].copy_from_slice(&tag);
        self.written += TAG;
        self.write[head - LEN..head].copy_from_slice(&len.to_be_bytes());
        self.sealed = true;
        self.sent = head - LEN;
        Ok(())
    }
}

impl<T: AsyncWrite + Unpin> NoiseStream<T> {
    /// Writes the sealed message out, then releases the write buffer.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.written {
            let n = ready!(
                Pin::new(&mut self.io).poll_write(cx, &self.write[self.sent..self.written])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.sealed = false;
        self.written = 0;
        self.sent = 0;
        give(&WRITE_POOL, WRITE_BUFFER, std::mem::take(&mut self.write));
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for NoiseStream<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.broken {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "noise: an earlier message failed authentication",
            )));
        }
        loop {
            if !this.plain.is_empty() {
                let n = this.plain.len().min(out.len());
                let from = this.plain.start;
                out[..n].copy_from_slice(&this.read[from..from + n]);
                this.plain.start += n;
                if this.plain.is_empty() && this.next == this.filled {
                    this.release_read();
                }
                return Poll::Ready(Ok(n));
            }
            if this.open_next()? {
                continue;
            }
            this.make_room();
            let filled = this.filled;
            match Pin::new(&mut this.io).poll_read(cx, &mut this.read[filled..]) {
                Poll::Ready(Ok(0)) => {
                    if this.next != this.filled {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "noise: connection ended inside a message",
                        )));
                    }
                    this.release_read();
                    return Poll::Ready(Ok(0));
                }
                Poll::Ready(Ok(n)) => this.filled += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    this.release_read();
                    return Poll::Pending;
                }
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for NoiseStream<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.sealed {
            ready!(this.poll_send(cx))?;
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.write.is_empty() {
            this.write = take(&WRITE_POOL, WRITE_BUFFER);
            this.head = prefix_at(&this.write) + LEN;
            this.written = this.head;
        }
        let end = this.head + MAX_PLAINTEXT;
        let n = (end - this.written).min(buf.len());
        this.write[this.written..this.written + n].copy_from_slice(&buf[..n]);
        this.written += n;
        if this.written == end {
            this.seal()?;
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.sealed && this.written > this.head {
            this.seal()?;
        }
        if this.sealed {
            ready!(this.poll_send(cx))?;
        }
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.io).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use futures::io::Cursor;
    use futures::{AsyncReadExt, AsyncWriteExt};
    use proptest::prelude::*;

    use super::*;

    const KEY_A: [u8; 32] = [7; 32];
    const KEY_B: [u8; 32] = [9; 32];
    const AEADS: [Aead; 2] = [Aead::ChaChaPoly, Aead::AesGcm];

    /// What a sender with `KEY_A` puts on the wire for `writes`, each flushed.
    fn wire(writes: &[&[u8]]) -> Vec<u8> {
        wire_with(Aead::ChaChaPoly, writes)
    }

    /// What a sender sealing with `aead` puts on the wire for `writes`.
    fn wire_with(aead: Aead, writes: &[&[u8]]) -> Vec<u8> {
        futures::executor::block_on(async {
            let mut sender = NoiseStream::new(Cursor::new(Vec::new()), aead, &KEY_A, &KEY_B);
            for w in writes {
                sender.write_all(w).await.expect("write");
                sender.flush().await.expect("flush");
            }
            sender.io.into_inner()
        })
    }

    /// A receiver of `bytes` (keys the other way round), reading all of it
    /// in reads of at most `read_size`.
    fn receive(bytes: Vec<u8>, read_size: usize) -> io::Result<Vec<u8>> {
        receive_with(Aead::ChaChaPoly, bytes, read_size)
    }

    /// [`receive`], opening with `aead`.
    fn receive_with(aead: Aead, bytes: Vec<u8>, read_size: usize) -> io::Result<Vec<u8>> {
        futures::executor::block_on(async {
            let mut receiver = NoiseStream::new(Cursor::new(bytes), aead, &KEY_B, &KEY_A);
            let mut got = Vec::new();
            let mut buf = vec![0; read_size];
            loop {
                match receiver.read(&mut buf).await? {
                    0 => return Ok(got),
                    n => got.extend_from_slice(&buf[..n]),
                }
            }
        })
    }

    #[test]
    fn a_flushed_write_is_one_message_of_prefix_ciphertext_and_tag() {
        let bytes = wire(&[b"hello", b"world!"]);
        assert_eq!(bytes.len(), 2 * LEN + 5 + 6 + 2 * TAG);
        assert_eq!(&bytes[..LEN], &u16::try_from(5 + TAG).expect("len").to_be_bytes());
        assert_ne!(&bytes[LEN..LEN + 5], b"hello", "not sent in the clear");
        assert_eq!(receive(bytes, 3).expect("receive"), b"helloworld!");
    }

    #[test]
    fn a_write_larger_than_a_message_is_split_at_the_largest_plaintext() {
        let data = vec![0x5a; MAX_PLAINTEXT + 10];
        let bytes = wire(&[&data]);
        assert_eq!(bytes.len(), 2 * (LEN + TAG) + data.len());
        assert_eq!(&bytes[..LEN], &65_535u16.to_be_bytes());
        assert_eq!(receive(bytes, 70_000).expect("receive"), data);
    }

    #[test]
    fn a_flipped_bit_anywhere_in_a_message_fails_authentication() {
        for aead in AEADS {
            let clean = wire_with(aead, &[b"the quick brown fox"]);
            for i in LEN..clean.len() {
                let mut bytes = clean.clone();
                bytes[i] ^= 0x01;
                let err = receive_with(aead, bytes, 64).expect_err("tampered message accepted");
                assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{aead:?} byte {i}: {err}");
            }
        }
    }

    #[test]
    fn each_aead_round_trips_and_neither_opens_the_others_messages() {
        let data = vec![0x61; 3 * MAX_PLAINTEXT / 2];
        for aead in AEADS {
            let bytes = wire_with(aead, &[&data, b"tail"]);
            let mut want = data.clone();
            want.extend_from_slice(b"tail");
            assert!(receive_with(aead, bytes.clone(), 10_000).expect("receive") == want);
            let other = AEADS.into_iter().find(|&a| a != aead).expect("two AEADs");
            let err = receive_with(other, bytes, 10_000).expect_err("opened with the wrong AEAD");
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        }
    }

    /// Our AES-256-GCM messages against snow's, the Noise spec's reference
    /// here: the same nonces (big-endian) and the same REKEY at the same
    /// message, each way (snow given the derived keys).
    #[test]
    fn aes_gcm_messages_match_snow_both_ways_and_across_a_rekey() {
        use snow::resolvers::{DefaultResolver, FallbackResolver, RingResolver};
        let build = || {
            let params = "Noise_NN_25519_AESGCM_SHA256".parse().expect("params");
            let resolver = FallbackResolver::new(Box::new(RingResolver), Box::new(DefaultResolver));
            snow::Builder::with_resolver(params, Box::new(resolver))
        };
        let mut initiator = build().build_initiator().expect("initiator");
        let mut responder = build().build_responder().expect("responder");
        let (mut m, mut p) = ([0; 1024], [0; 1024]);
        let n = initiator.write_message(&[], &mut m).expect("e");
        responder.read_message(&m[..n], &mut p).expect("e");
        let n = responder.write_message(&[], &mut m).expect("e, ee");
        initiator.read_message(&m[..n], &mut p).expect("e, ee");
        let (to_responder, to_initiator) = initiator.dangerously_get_raw_split();
        // Stateless, so the test names each message's number; under the
        // AES-GCM keys derived from the split's (checked against
        // independent vectors in kat_tests.rs).
        let mut snow = responder.into_stateless_transport_mode().expect("transport");
        snow.rekey_manually(
            Some(&Aead::AesGcm.transport_key(&to_responder)),
            Some(&Aead::AesGcm.transport_key(&to_initiator)),
        );
        let boundary = [REKEY_EVERY - 1, REKEY_EVERY, REKEY_EVERY + 1];

        // Ours seals (as the initiator), snow opens.
        let mut ours =
            NoiseStream::new(Cursor::new(Vec::new()), Aead::AesGcm, &to_responder, &to_initiator);
        let mut seal = |n: u64, text: &[u8]| {
            ours.sealer.sent_or_received = n;
            futures::executor::block_on(async {
                ours.write_all(text).await.expect("write");
                ours.flush().await.expect("flush");
            });
            let wire = std::mem::take(ours.io.get_mut());
            ours.io.set_position(0);
            assert_eq!(usize::from(u16::from_be_bytes([wire[0], wire[1]])), wire.len() - LEN);
            wire[LEN..].to_vec()
        };
        for n in [0, 1, 2] {
            let got = snow.read_message(n, &seal(n, b"early"), &mut p).expect("snow opens ours");
            assert_eq!(&p[..got], b"early");
        }
        let old_key = seal(boundary[0], b"old key");
        let got = snow.read_message(boundary[0], &old_key, &mut p).expect("last of the old key");
        assert_eq!(&p[..got], b"old key");
        // Ours took a new key before message REKEY_EVERY (it steps the
        // counter itself from here); snow opens it only after its REKEY.
        let new_key = seal(boundary[0] + 1, b"new key");
        assert!(snow.read_message(boundary[1], &new_key, &mut p).is_err(), "still the old key");
        snow.rekey_incoming();
        let got = snow.read_message(boundary[1], &new_key, &mut p).expect("after snow's REKEY");
        assert_eq!(&p[..got], b"new key");

        // Snow seals, ours opens: early messages, then across snow's REKEY.
        /// Appends snow's message number `n` carrying `text` to `wire`.
        fn sealed(
            snow: &mut snow::StatelessTransportState,
            n: u64,
            text: &[u8],
            wire: &mut Vec<u8>,
        ) {
            let mut m = [0; 1024];
            let len = snow.write_message(n, text, &mut m).expect("snow seals");
            wire.extend_from_slice(&u16::try_from(len).expect("len").to_be_bytes());
            wire.extend_from_slice(&m[..len]);
        }
        let mut wire = Vec::new();
        for (n, text) in [(0, &b"alpha"[..]), (1, b"beta"), (2, b"gamma")] {
            sealed(&mut snow, n, text, &mut wire);
        }
        let mut opener =
            NoiseStream::new(Cursor::new(wire), Aead::AesGcm, &to_responder, &to_initiator);
        let mut got = Vec::new();
        futures::executor::block_on(opener.read_to_end(&mut got)).expect("ours opens snow's");
        assert_eq!(got, b"alphabetagamma");

        let mut wire = Vec::new();
        sealed(&mut snow, boundary[0], b"last old,", &mut wire);
        snow.rekey_outgoing();
        sealed(&mut snow, boundary[1], b" first new,", &mut wire);
        sealed(&mut snow, boundary[2], b" second new", &mut wire);
        let mut opener =
            NoiseStream::new(Cursor::new(wire), Aead::AesGcm, &to_responder, &to_initiator);
        opener.opener.sent_or_received = boundary[0];
        let mut got = Vec::new();
        futures::executor::block_on(opener.read_to_end(&mut got)).expect("across snow's REKEY");
        assert_eq!(got, b"last old, first new, second new");
    }

    /// Both ends take AES-GCM's new key at the same message, so messages on
    /// either side of the boundary open, and the messages after it are not
    /// sealed under the old key (the new key is the Noise spec's REKEY: the
    /// snow test above).
    #[test]
    fn aes_gcm_rekeys_every_so_many_messages_on_both_ends() {
        let texts = [&b"two before"[..], b"last of the old key", b"first of the new", b"next"];
        let bytes = futures::executor::block_on(async {
            let mut sender =
                NoiseStream::new(Cursor::new(Vec::new()), Aead::AesGcm, &KEY_A, &KEY_B);
            sender.sealer.sent_or_received = REKEY_EVERY - 2;
            for m in texts {
                sender.write_all(m).await.expect("write");
                sender.flush().await.expect("flush");
            }
            sender.io.into_inner()
        });
        // The third message, opened as if under the old key, fails.
        let third = 2 * LEN + texts[0].len() + texts[1].len() + 2 * TAG;
        let mut message = bytes[third + LEN..third + LEN + texts[2].len() + TAG].to_vec();
        let old = Aead::AesGcm.key(&Aead::AesGcm.transport_key(&KEY_A));
        let opened = old.open_in_place(Aead::AesGcm.nonce(REKEY_EVERY), Aad::empty(), &mut message);
        assert!(opened.is_err(), "message REKEY_EVERY was sealed under the old key");

        futures::executor::block_on(async {
            let mut receiver = NoiseStream::new(Cursor::new(bytes), Aead::AesGcm, &KEY_B, &KEY_A);
            receiver.opener.sent_or_received = REKEY_EVERY - 2;
            let mut got = Vec::new();
            receiver.read_to_end(&mut got).await.expect("in step");
            assert_eq!(got, texts.concat());
        });
    }

    #[test]
    fn a_replayed_or_reordered_message_fails_authentication() {
        for aead in AEADS {
            let bytes = wire_with(aead, &[b"first", b"second"]);
            let first = LEN + 5 + TAG;
            let mut replayed = bytes[..first].to_vec();
            replayed.extend_from_slice(&bytes[..first]);
            let err = receive_with(aead, replayed, 64).expect_err("replay accepted");
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
            let mut swapped = bytes[first..].to_vec();
            swapped.extend_from_slice(&bytes[..first]);
            assert_eq!(
                receive_with(aead, swapped, 64).expect_err("reorder accepted").kind(),
                io::ErrorKind::InvalidData
            );
        }
    }

    #[test]
    fn after_a_forged_message_the_stream_stays_broken() {
        let mut bytes = wire(&[b"forged"]);
        bytes[LEN] ^= 1;
        bytes.extend(wire(&[b"honest"]));
        futures::executor::block_on(async {
            let mut receiver =
                NoiseStream::new(Cursor::new(bytes), Aead::ChaChaPoly, &KEY_B, &KEY_A);
            let mut buf = [0; 64];
            for _ in 0..2 {
                let err = receiver.read(&mut buf).await.expect_err("forged message accepted");
                assert_eq!(err.kind(), io::ErrorKind::InvalidData);
            }
        });
    }

    /// Serves `bytes`, then stays pending forever (a peer that stalls).
    struct Stalling(Cursor<Vec<u8>>);

    impl AsyncRead for Stalling {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            match Pin::new(&mut self.0).poll_read(cx, buf) {
                Poll::Ready(Ok(0)) => Poll::Pending,
                other => other,
            }
        }
    }

    #[test]
    fn a_peer_stalling_inside_a_message_pins_only_what_it_sent() {
        let message = wire(&[&[0x33; 20_000]]);
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        for sent in [1, 100, 10_000, PARKED, PARKED + 1, message.len() - 1] {
            let io = Stalling(Cursor::new(message[..sent].to_vec()));
            let mut receiver = NoiseStream::new(io, Aead::ChaChaPoly, &KEY_B, &KEY_A);
            let mut buf = [0; 64];
            assert!(Pin::new(&mut receiver).poll_read(&mut cx, &mut buf).is_pending());
            if sent <= PARKED {
                assert_eq!(receiver.read.len(), sent, "parked exactly the partial message");
            } else {
                // About 8 bytes held per byte sent, at most.
                assert_eq!(receiver.read.len(), READ_BUFFER, "{sent} bytes sent");
                assert!(READ_BUFFER < 9 * sent);
            }
            // The rest arriving later completes it.
            receiver.io.0 = Cursor::new(message.clone());
            receiver.io.0.set_position(u64::try_from(sent).expect("position"));
            let mut got = vec![0; 20_000];
            let read = Pin::new(&mut receiver).poll_read(&mut cx, &mut got);
            assert!(matches!(read, Poll::Ready(Ok(20_000))), "{read:?}");
            assert!(got.iter().all(|&b| b == 0x33));
        }
    }

    #[test]
    fn a_message_shorter_than_its_tag_is_refused() {
        let err = receive(vec![0, 15, 1, 2, 3], 64).expect_err("short message accepted");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn a_connection_ending_inside_a_message_is_an_error_not_an_end() {
        let bytes = wire(&[b"complete", b"cut short"]);
        for cut in [bytes.len() - 1, LEN + 8 + TAG + 1] {
            let err = receive(bytes[..cut].to_vec(), 64).expect_err("truncation accepted");
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        }
    }

    /// Counts the reads that reach the socket.
    struct CountingReader {
        inner: Cursor<Vec<u8>>,
        reads: usize,
    }

    impl AsyncRead for CountingReader {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            self.reads += 1;
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    /// The reason this module reads for itself: libp2p-noise took 8 KiB per
    /// socket read, eight reads per full message.
    #[test]
    fn full_messages_cost_about_one_socket_read_each() {
        let messages = 50;
        let data = vec![0xa5; messages * MAX_PLAINTEXT];
        let bytes = wire(&[&data]);
        let got = futures::executor::block_on(async {
            let inner = CountingReader { inner: Cursor::new(bytes), reads: 0 };
            let mut receiver = NoiseStream::new(inner, Aead::ChaChaPoly, &KEY_B, &KEY_A);
            let mut got = Vec::new();
            receiver.read_to_end(&mut got).await.expect("read");
            assert!(
                receiver.io.reads <= messages + 2,
                "{} socket reads for {messages} messages",
                receiver.io.reads
            );
            got
        });
        assert!(got == data);
    }

    /// Plaintext being sealed and ciphertext being opened start on a 64-byte
    /// boundary (unaligned, the copy into the message cost as much as the cipher).
    #[test]
    fn plaintext_and_received_ciphertext_are_aligned() {
        let bytes = wire(&[&[0x44; 1000]]);
        futures::executor::block_on(async {
            let mut sender =
                NoiseStream::new(Cursor::new(Vec::new()), Aead::ChaChaPoly, &KEY_A, &KEY_B);
            sender.write_all(b"x").await.expect("write");
            assert_eq!(sender.write[sender.head..].as_ptr().align_offset(ALIGN), 0);

            let mut receiver =
                NoiseStream::new(Cursor::new(bytes), Aead::ChaChaPoly, &KEY_B, &KEY_A);
            let mut one = [0; 1];
            receiver.read_exact(&mut one).await.expect("read");
            // The first plaintext byte (handed out) sat where the ciphertext began.
            let opened_at = receiver.plain.start - 1;
            assert_eq!(receiver.read[opened_at..].as_ptr().align_offset(ALIGN), 0);
        });
    }

    #[test]
    fn an_idle_stream_holds_no_buffers() {
        let bytes = wire(&[b"some bytes"]);
        futures::executor::block_on(async {
            let mut receiver =
                NoiseStream::new(Cursor::new(bytes), Aead::ChaChaPoly, &KEY_B, &KEY_A);
            let mut got = Vec::new();
            receiver.read_to_end(&mut got).await.expect("read");
            assert!(receiver.read.is_empty() && receiver.write.is_empty());
            receiver.write_all(b"reply").await.expect("write");
            assert!(!receiver.write.is_empty(), "collecting");
            receiver.flush().await.expect("flush");
            assert!(receiver.write.is_empty(), "released once sent");
        });
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any mix of write and read sizes carries the bytes intact.
        #[test]
        fn any_chunking_round_trips(
            writes in proptest::collection::vec(1usize..150_000, 1..6),
            read_size in 1usize..140_000,
        ) {
            let data: Vec<Vec<u8>> = writes
                .iter()
                .enumerate()
                .map(|(i, &len)| (0..len).map(|j| (i * 7 + j) as u8).collect())
                .collect();
            let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
            let got = receive(wire(&refs), read_size).expect("receive");
            prop_assert!(got == data.concat());
        }

        /// Arbitrary received bytes end in an error or a clean end, never a
        /// panic, and yield no plaintext (nothing forged authenticates).
        #[test]
        fn arbitrary_bytes_yield_nothing(bytes in proptest::collection::vec(any::<u8>(), 0..70_000)) {
            let empty = bytes.is_empty();
            match receive(bytes, 4096) {
                Ok(got) => prop_assert!(empty && got.is_empty()),
                Err(e) => prop_assert!(matches!(e.kind(), io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof)),
            }
        }
    }
}
