//! What travels on simulated streams, and how apps and origins check it.
//!
//! Bulk data travels as *pattern* descriptors (a key, an offset, a length)
//! so a run moves megabytes without copying them; anything the core reads
//! (handshakes, early data) is materialised into real bytes. Every byte of a
//! stream is a pure function of its key and offset, so the receiving end can
//! verify each one — that is the integrity invariant's oracle.

use bytes::Bytes;

/// Length of the header an app sends first: `[tag u64][bytes wanted u64]`.
pub const HEADER_LEN: u64 = 16;
/// Size of the pattern chunks apps and origins write.
pub const CHUNK: u32 = 16 * 1024;

/// A run of stream bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// Literal bytes.
    Real(Bytes),
    /// `len` bytes of `pattern_byte(key, offset + i)`.
    Pattern { key: u64, offset: u64, len: u32 },
}

impl Payload {
    pub fn len(&self) -> u64 {
        match self {
            Payload::Real(b) => b.len() as u64,
            Payload::Pattern { len, .. } => u64::from(*len),
        }
    }

    /// The literal bytes (generated for a pattern).
    pub fn materialize(&self) -> Bytes {
        match self {
            Payload::Real(b) => b.clone(),
            Payload::Pattern { key, offset, len } => (0..u64::from(*len))
                .map(|i| pattern_byte(*key, offset + i))
                .collect::<Vec<u8>>()
                .into(),
        }
    }
}

/// One item written on a stream direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Chunk {
    Data(Payload),
    Fin,
    Reset,
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The byte at `offset` of the stream with `key`.
pub fn pattern_byte(key: u64, offset: u64) -> u8 {
    (splitmix(key ^ (offset >> 3).wrapping_mul(0x2545_f491_4f6c_dd1d)) >> ((offset & 7) * 8)) as u8
}

/// The app's header for connection `tag` asking for `wanted` bytes back.
pub fn header(tag: u64, wanted: u64) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(&tag.to_be_bytes());
    h[8..].copy_from_slice(&wanted.to_be_bytes());
    h
}

/// Checks a stream's bytes, in order, against what its writer must have sent:
/// an optional literal header, then `pattern_byte(key, offset)`.
#[derive(Clone, Debug)]
pub struct Verifier {
    key: u64,
    header: Vec<u8>,
    /// Bytes accepted so far.
    pub offset: u64,
}

/// A byte that is not what the writer sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    pub offset: u64,
    pub detail: String,
}

impl Verifier {
    pub fn new(key: u64, header: Vec<u8>) -> Verifier {
        Verifier { key, header, offset: 0 }
    }

    fn expected(&self, i: u64) -> u8 {
        match usize::try_from(i).ok().and_then(|i| self.header.get(i)) {
            Some(b) => *b,
            None => pattern_byte(self.key, i),
        }
    }

    /// Accepts the next run of bytes, or says where it went wrong.
    pub fn check(&mut self, p: &Payload) -> Result<(), Mismatch> {
        match p {
            Payload::Pattern { key, offset, len } => {
                if *key != self.key || *offset != self.offset || *offset < self.header.len() as u64
                {
                    return Err(Mismatch {
                        offset: self.offset,
                        detail: format!(
                            "pattern chunk (key {key:#x}, offset {offset}) where key {:#x} offset {} was due",
                            self.key, self.offset
                        ),
                    });
                }
                self.offset += u64::from(*len);
            }
            Payload::Real(bytes) => {
                for &b in bytes.iter() {
                    let want = self.expected(self.offset);
                    if b != want {
                        return Err(Mismatch {
                            offset: self.offset,
                            detail: format!("byte {b:#04x} where {want:#04x} was due"),
                        });
                    }
                    self.offset += 1;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifier_accepts_the_stream_in_any_mix_of_forms() {
        let h = header(7, 100).to_vec();
        let mut v = Verifier::new(42, h.clone());
        v.check(&Payload::Real(Bytes::from(h[..5].to_vec()))).unwrap();
        let mut rest = h[5..].to_vec();
        rest.extend((16..20).map(|i| pattern_byte(42, i)));
        v.check(&Payload::Real(Bytes::from(rest))).unwrap();
        v.check(&Payload::Pattern { key: 42, offset: 20, len: 100 }).unwrap();
        let real = Payload::Pattern { key: 42, offset: 120, len: 9 }.materialize();
        v.check(&Payload::Real(real)).unwrap();
        assert_eq!(v.offset, 129);
    }

    #[test]
    fn verifier_catches_gaps_reorders_and_corruption() {
        let mut v = Verifier::new(1, vec![]);
        assert!(v.check(&Payload::Pattern { key: 1, offset: 10, len: 5 }).is_err(), "gap");
        assert!(v.check(&Payload::Pattern { key: 2, offset: 0, len: 5 }).is_err(), "other stream");
        let mut b = Payload::Pattern { key: 1, offset: 0, len: 8 }.materialize().to_vec();
        b[3] ^= 1;
        assert!(v.check(&Payload::Real(Bytes::from(b))).is_err(), "flipped bit");
    }

    #[test]
    fn patterns_differ_between_keys_and_offsets() {
        let a: Vec<u8> = (0..64).map(|i| pattern_byte(1, i)).collect();
        let b: Vec<u8> = (0..64).map(|i| pattern_byte(2, i)).collect();
        let c: Vec<u8> = (64..128).map(|i| pattern_byte(1, i)).collect();
        assert_ne!(a, b);
        assert_ne!(a, c);
    }
}
