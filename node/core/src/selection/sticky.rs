//! The sticky pool: which exit a listener's session is pinned to.
//!
//! An app that wants a stable egress address (a login session, a rate-limited
//! API) names a session; every connection in that session goes out through
//! the same exit for as long as the pin lives. Pins are keyed by listener and
//! session (`None` pins the whole listener), live until they have been idle
//! for the pool's `ttl`, and the pool is bounded: pinning into a full pool
//! evicts the least recently used pin.
//!
//! The pool survives restarts through [`StickyPool::snapshot`] and
//! [`StickyPool::restore`]. Idle times are stored relative to the most recently
//! used pin, because the clock axis of the next run is unrelated to this one;
//! time spent down therefore does not count towards a pin's idle time.
//!
//! # Snapshot format, version 1
//!
//! All integers big-endian.
//!
//! ```text
//! "MPSP"  version:u8=1  count:u32
//! count × { listener:u64  age_micros:u64  peer_len:u8 peer:[u8]
//!           has_session:u8 (0|1)  [session_len:u8 session:[u8] (UTF-8)] }
//! ```
//!
//! Entries are least recently used first, so `age_micros` (time since the
//! newest pin was used) never increases along the list.

use crate::ids::{ListenerId, PeerId, MAX_PEER_ID_LEN};
use crate::time::Instant;
use core::time::Duration;
use std::collections::BTreeMap;

/// Longest session name a pin persists (a session comes from a SOCKS5
/// username or an HTTP header, both far shorter in practice; SOCKS5 caps the
/// whole username at 255 bytes). Longer ones are pinned but not persisted.
pub const MAX_SESSION_LEN: usize = 255;

/// Most entries a snapshot may announce; a larger count is corruption.
pub const MAX_SNAPSHOT_ENTRIES: u32 = 1 << 20;

const MAGIC: [u8; 4] = *b"MPSP";
const VERSION: u8 = 1;

/// The sticky pool's limits.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct StickyConfig {
    /// Most pins held at once; 0 disables pinning.
    pub capacity: usize,
    /// How long a pin may stay unused before it expires.
    pub ttl: Duration,
}

/// What a pin is for: one listener, and optionally one session on it.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct StickyKey {
    /// The listener the connections arrive on.
    pub listener: ListenerId,
    /// The app's session name; `None` pins every connection on the listener.
    pub session: Option<String>,
}

#[derive(Clone, Copy, Debug)]
struct Pin {
    peer: PeerId,
    last_used: Instant,
    /// Breaks ties between pins used at the same instant, so the eviction
    /// order is deterministic: the one touched first goes first.
    seq: u64,
}

/// Why [`StickyPool::restore`] refused a snapshot.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The snapshot ends in the middle of a header or an entry.
    #[error("sticky pool snapshot is truncated")]
    Truncated,
    /// The snapshot does not start with the sticky pool's magic bytes.
    #[error("not a sticky pool snapshot (bad magic)")]
    BadMagic,
    /// The snapshot was written by a format version this build does not know.
    #[error("sticky pool snapshot version {0} is not supported")]
    UnsupportedVersion(u8),
    /// The entry count exceeds [`MAX_SNAPSHOT_ENTRIES`].
    #[error("sticky pool snapshot announces {0} entries, more than the limit")]
    TooManyEntries(u32),
    /// An entry's peer id is empty or longer than [`MAX_PEER_ID_LEN`].
    #[error("sticky pool snapshot holds an invalid peer id")]
    BadPeerId,
    /// An entry's session flag is neither 0 nor 1, or its name is not UTF-8.
    #[error("sticky pool snapshot holds an invalid session name")]
    BadSession,
    /// The entries are not in least-recently-used-first order.
    #[error("sticky pool snapshot entries are out of order")]
    OutOfOrder,
    /// Bytes follow the last announced entry.
    #[error("sticky pool snapshot has trailing bytes")]
    TrailingBytes,
}

/// The sticky pool. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct StickyPool {
    config: StickyConfig,
    pins: BTreeMap<StickyKey, Pin>,
    /// The same pins ordered by last use: the front is evicted or expires first.
    by_use: BTreeMap<(Instant, u64), StickyKey>,
    next_seq: u64,
}

impl StickyPool {
    /// An empty pool.
    pub fn new(config: StickyConfig) -> Self {
        StickyPool { config, pins: BTreeMap::new(), by_use: BTreeMap::new(), next_seq: 0 }
    }

    /// The pool's limits.
    pub fn config(&self) -> StickyConfig {
        self.config
    }

    /// How many pins are held (expired ones included until [`expire`](Self::expire)).
    pub fn len(&self) -> usize {
        self.pins.len()
    }

    /// Whether no pins are held.
    pub fn is_empty(&self) -> bool {
        self.pins.is_empty()
    }

    /// The exit `key` is pinned to, if the pin is live; counts as a use.
    /// An expired pin is dropped.
    pub fn get(&mut self, key: &StickyKey, now: Instant) -> Option<PeerId> {
        let pin = *self.pins.get(key)?;
        if self.is_expired(pin, now) {
            self.unpin(key);
            return None;
        }
        self.touch(key, pin, now);
        Some(pin.peer)
    }

    /// Pins `key` to `peer` (replacing any earlier pin of `key`) and counts it
    /// as a use. Returns the pin evicted to make room: the least recently
    /// used, or the new pin itself if the pool's capacity is 0.
    pub fn pin(
        &mut self,
        key: StickyKey,
        peer: PeerId,
        now: Instant,
    ) -> Option<(StickyKey, PeerId)> {
        if let Some(old) = self.pins.get(&key).copied() {
            self.touch(&key, Pin { peer, ..old }, now);
            return None;
        }
        if self.config.capacity == 0 {
            return Some((key, peer));
        }
        let evicted =
            if self.pins.len() >= self.config.capacity { self.pop_oldest() } else { None };
        let pin = Pin { peer, last_used: now, seq: self.bump_seq() };
        self.by_use.insert((pin.last_used, pin.seq), key.clone());
        self.pins.insert(key, pin);
        evicted
    }

    /// Drops the pin of `key`, returning the exit it was pinned to.
    pub fn unpin(&mut self, key: &StickyKey) -> Option<PeerId> {
        let pin = self.pins.remove(key)?;
        self.by_use.remove(&(pin.last_used, pin.seq));
        Some(pin.peer)
    }

    /// Drops every pin idle for `ttl` or longer, least recently used first.
    pub fn expire(&mut self, now: Instant) -> Vec<(StickyKey, PeerId)> {
        let mut expired = Vec::new();
        while let Some((&(last_used, _), _)) = self.by_use.first_key_value() {
            if now < last_used + self.config.ttl {
                break;
            }
            match self.pop_oldest() {
                Some(entry) => expired.push(entry),
                None => break,
            }
        }
        expired
    }

    /// When the next pin expires if left unused.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.by_use.first_key_value().map(|(&(last_used, _), _)| last_used + self.config.ttl)
    }

    /// The pins, least recently used first (the eviction order).
    pub fn iter(&self) -> impl Iterator<Item = (&StickyKey, PeerId)> + '_ {
        self.by_use.values().filter_map(|k| self.pins.get(k).map(|p| (k, p.peer)))
    }

    /// The pins with when each was last used, least recently used first.
    pub fn entries(&self) -> impl Iterator<Item = (&StickyKey, PeerId, Instant)> + '_ {
        self.by_use.values().filter_map(|k| self.pins.get(k).map(|p| (k, p.peer, p.last_used)))
    }

    /// The pool in the versioned binary format of the [module docs](self).
    pub fn snapshot(&self) -> Vec<u8> {
        let newest = self.by_use.last_key_value().map_or(Instant::ZERO, |(&(t, _), _)| t);
        let persisted: Vec<(&StickyKey, &Pin)> = self
            .by_use
            .values()
            .filter_map(|k| self.pins.get_key_value(k))
            .filter(|(k, _)| k.session.as_ref().is_none_or(|s| s.len() <= MAX_SESSION_LEN))
            .collect();
        let mut out = Vec::with_capacity(9 + persisted.len() * 32);
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        let count = u32::try_from(persisted.len()).unwrap_or(u32::MAX).min(MAX_SNAPSHOT_ENTRIES);
        out.extend_from_slice(&count.to_be_bytes());
        // If the pool somehow exceeds the entry limit, keep the newest pins.
        let skip = persisted.len().saturating_sub(count as usize);
        for (key, pin) in persisted.into_iter().skip(skip) {
            out.extend_from_slice(&key.listener.0.to_be_bytes());
            let age = newest.saturating_duration_since(pin.last_used);
            out.extend_from_slice(
                &u64::try_from(age.as_micros()).unwrap_or(u64::MAX).to_be_bytes(),
            );
            let peer = pin.peer.as_bytes();
            out.push(peer.len() as u8);
            out.extend_from_slice(peer);
            match &key.session {
                None => out.push(0),
                Some(s) => {
                    out.push(1);
                    out.push(s.len() as u8);
                    out.extend_from_slice(s.as_bytes());
                }
            }
        }
        out
    }

    /// A pool with limits `config` holding the pins of `snapshot`, the most
    /// recently used pin counting as used at `now`. Pins that do not fit
    /// `config.capacity` (the least recently used) or have been idle past
    /// `config.ttl` are left out.
    pub fn restore(
        config: StickyConfig,
        snapshot: &[u8],
        now: Instant,
    ) -> Result<StickyPool, SnapshotError> {
        let mut pool = StickyPool::new(config);
        for saved in decode(snapshot)? {
            let age = u64::try_from(saved.age.as_micros()).unwrap_or(u64::MAX);
            let last_used = Instant::from_micros(now.as_micros().saturating_sub(age));
            if now < last_used + config.ttl {
                // A repeated key replaces the earlier, older entry.
                let _evicted = pool.pin(saved.key, saved.peer, last_used);
            }
        }
        Ok(pool)
    }

    fn is_expired(&self, pin: Pin, now: Instant) -> bool {
        now >= pin.last_used + self.config.ttl
    }

    fn touch(&mut self, key: &StickyKey, pin: Pin, now: Instant) {
        self.by_use.remove(&(pin.last_used, pin.seq));
        // A clock that steps back must not make a pin look older than it is.
        let touched = Pin { last_used: now.max(pin.last_used), seq: self.bump_seq(), ..pin };
        self.by_use.insert((touched.last_used, touched.seq), key.clone());
        self.pins.insert(key.clone(), touched);
    }

    fn pop_oldest(&mut self) -> Option<(StickyKey, PeerId)> {
        let (_, key) = self.by_use.pop_first()?;
        let pin = self.pins.remove(&key)?;
        Some((key, pin.peer))
    }

    fn bump_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        seq
    }
}

/// One pin as a snapshot stores it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SavedPin {
    /// What it pins.
    pub key: StickyKey,
    /// The exit it pins to.
    pub peer: PeerId,
    /// How long before the snapshot's most recently used pin it was last used.
    pub age: Duration,
}

/// The pins of a snapshot in the [format](self) [`StickyPool::snapshot`]
/// writes, least recently used first, or why the bytes are not one: the one
/// reader of the format ([`StickyPool::restore`] and `meshproxy state show`
/// both use it).
pub fn decode(snapshot: &[u8]) -> Result<Vec<SavedPin>, SnapshotError> {
    let mut r = Reader(snapshot);
    let magic = r.take(MAGIC.len())?;
    if magic != MAGIC {
        return Err(SnapshotError::BadMagic);
    }
    let version = r.u8()?;
    if version != VERSION {
        return Err(SnapshotError::UnsupportedVersion(version));
    }
    let count = r.u32()?;
    if count > MAX_SNAPSHOT_ENTRIES {
        return Err(SnapshotError::TooManyEntries(count));
    }
    // Not reserved by `count`: a corrupt count must not size an allocation.
    let mut pins = Vec::new();
    let mut previous_age = u64::MAX;
    for _ in 0..count {
        let listener = ListenerId(r.u64()?);
        let age = r.u64()?;
        if age > previous_age {
            return Err(SnapshotError::OutOfOrder);
        }
        previous_age = age;
        let peer_len = usize::from(r.u8()?);
        let peer = PeerId::from_bytes(r.take(peer_len)?).ok_or(SnapshotError::BadPeerId)?;
        let session = match r.u8()? {
            0 => None,
            1 => {
                let len = usize::from(r.u8()?);
                let bytes = r.take(len)?;
                let s = core::str::from_utf8(bytes).map_err(|_| SnapshotError::BadSession)?;
                Some(s.to_owned())
            }
            _ => return Err(SnapshotError::BadSession),
        };
        let key = StickyKey { listener, session };
        pins.push(SavedPin { key, peer, age: Duration::from_micros(age) });
    }
    if !r.0.is_empty() {
        return Err(SnapshotError::TrailingBytes);
    }
    Ok(pins)
}

/// A cursor over snapshot bytes that reports a short read as truncation.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        if self.0.len() < n {
            return Err(SnapshotError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, SnapshotError> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, SnapshotError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, SnapshotError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
}

// The format stores both lengths in one byte.
const _: () = assert!(MAX_PEER_ID_LEN <= u8::MAX as usize);
const _: () = assert!(MAX_SESSION_LEN <= u8::MAX as usize);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SEC: Duration = Duration::from_secs(1);

    fn at(secs: u64) -> Instant {
        Instant::ZERO + Duration::from_secs(secs)
    }

    fn key(listener: u64, session: Option<&str>) -> StickyKey {
        StickyKey { listener: ListenerId(listener), session: session.map(str::to_owned) }
    }

    fn peer(n: u64) -> PeerId {
        PeerId::from_u64(n)
    }

    fn pool(capacity: usize, ttl_secs: u64) -> StickyPool {
        StickyPool::new(StickyConfig { capacity, ttl: Duration::from_secs(ttl_secs) })
    }

    #[test]
    fn pin_get_unpin() {
        let mut p = pool(4, 60);
        assert!(p.is_empty());
        assert_eq!(p.pin(key(0, Some("alice")), peer(1), at(0)), None);
        assert_eq!(p.pin(key(0, None), peer(2), at(0)), None);
        assert_eq!(p.get(&key(0, Some("alice")), at(1)), Some(peer(1)));
        assert_eq!(p.get(&key(0, None), at(1)), Some(peer(2)));
        assert_eq!(p.get(&key(1, Some("alice")), at(1)), None, "listeners are separate");
        assert_eq!(p.pin(key(0, Some("alice")), peer(3), at(2)), None, "re-pin replaces");
        assert_eq!(p.get(&key(0, Some("alice")), at(2)), Some(peer(3)));
        assert_eq!(p.len(), 2);
        assert_eq!(p.unpin(&key(0, Some("alice"))), Some(peer(3)));
        assert_eq!(p.unpin(&key(0, Some("alice"))), None);
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn full_pool_evicts_least_recently_used() {
        let mut p = pool(3, 600);
        p.pin(key(0, Some("a")), peer(1), at(0));
        p.pin(key(0, Some("b")), peer(2), at(1));
        p.pin(key(0, Some("c")), peer(3), at(2));
        // Using "a" makes "b" the least recently used.
        assert_eq!(p.get(&key(0, Some("a")), at(3)), Some(peer(1)));
        assert_eq!(p.pin(key(0, Some("d")), peer(4), at(4)), Some((key(0, Some("b")), peer(2))));
        assert_eq!(p.pin(key(0, Some("e")), peer(5), at(5)), Some((key(0, Some("c")), peer(3))));
        assert_eq!(p.len(), 3);
        let order: Vec<_> = p.iter().map(|(k, _)| k.session.clone()).collect();
        assert_eq!(order, [Some("a".into()), Some("d".into()), Some("e".into())]);
    }

    #[test]
    fn same_instant_ties_evict_the_first_touched() {
        let mut p = pool(2, 600);
        p.pin(key(0, Some("x")), peer(1), at(0));
        p.pin(key(0, Some("y")), peer(2), at(0));
        assert_eq!(p.pin(key(0, Some("z")), peer(3), at(0)), Some((key(0, Some("x")), peer(1))));
    }

    #[test]
    fn zero_capacity_pins_nothing() {
        let mut p = pool(0, 600);
        assert_eq!(p.pin(key(0, None), peer(1), at(0)), Some((key(0, None), peer(1))));
        assert!(p.is_empty());
        assert_eq!(p.get(&key(0, None), at(0)), None);
    }

    #[test]
    fn pins_expire_exactly_at_ttl_of_idleness() {
        let mut p = pool(4, 10);
        p.pin(key(0, Some("a")), peer(1), at(0));
        p.pin(key(0, Some("b")), peer(2), at(5));
        assert_eq!(p.next_expiry(), Some(at(10)));
        assert_eq!(p.expire(at(10) - Duration::from_micros(1)), []);
        assert_eq!(p.expire(at(10)), [(key(0, Some("a")), peer(1))]);
        // A use restarts the idle clock.
        assert_eq!(p.get(&key(0, Some("b")), at(14)), Some(peer(2)));
        assert_eq!(p.next_expiry(), Some(at(24)));
        assert_eq!(p.expire(at(20)), []);
        assert_eq!(p.get(&key(0, Some("b")), at(24)), None, "get drops an expired pin");
        assert!(p.is_empty());
        assert_eq!(p.next_expiry(), None);
    }

    #[test]
    fn a_clock_stepping_back_does_not_age_a_pin() {
        let mut p = pool(4, 10);
        p.pin(key(0, None), peer(1), at(100));
        assert_eq!(p.get(&key(0, None), at(50)), Some(peer(1)));
        assert_eq!(p.next_expiry(), Some(at(110)));
    }

    #[test]
    fn snapshot_round_trip_keeps_pins_and_order() {
        let mut p = pool(8, 100);
        p.pin(key(1, Some("alice")), peer(1), at(10));
        p.pin(key(1, None), peer(2), at(20));
        p.pin(key(2, Some("bob ü")), peer(3), at(20));
        p.pin(key(3, Some("")), peer(4), at(50));
        let bytes = p.snapshot();
        let restored = StickyPool::restore(p.config(), &bytes, at(1000)).expect("restore");
        let before: Vec<_> = p.iter().map(|(k, v)| (k.clone(), v)).collect();
        let after: Vec<_> = restored.iter().map(|(k, v)| (k.clone(), v)).collect();
        assert_eq!(before, after);
        // Idle times are kept relative to the newest pin.
        assert_eq!(restored.next_expiry(), Some(at(1000 - 40 + 100)));
        assert_eq!(restored.snapshot(), bytes);
    }

    #[test]
    fn restore_honours_a_smaller_capacity_and_the_ttl() {
        let mut p = pool(8, 100);
        for i in 0..5 {
            p.pin(key(i, None), peer(i), at(i * 30));
        }
        let bytes = p.snapshot();
        // Ages are 120, 90, 60, 30, 0 s: with ttl 100 s the first is dropped.
        let r = StickyPool::restore(p.config(), &bytes, at(500)).expect("restore");
        assert_eq!(r.iter().map(|(k, _)| k.listener.0).collect::<Vec<_>>(), [1, 2, 3, 4]);
        let small = StickyConfig { capacity: 2, ttl: 100 * SEC };
        let r = StickyPool::restore(small, &bytes, at(500)).expect("restore");
        assert_eq!(r.iter().map(|(k, _)| k.listener.0).collect::<Vec<_>>(), [3, 4]);
    }

    #[test]
    fn overlong_sessions_are_not_persisted() {
        let mut p = pool(4, 100);
        let long = "x".repeat(MAX_SESSION_LEN + 1);
        p.pin(key(0, Some(&long)), peer(1), at(0));
        p.pin(key(0, Some("ok")), peer(2), at(0));
        let r = StickyPool::restore(p.config(), &p.snapshot(), at(0)).expect("restore");
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn corrupt_snapshots_are_refused() {
        let mut p = pool(4, 100);
        p.pin(key(7, Some("s")), peer(9), at(0));
        p.pin(key(8, None), peer(9), at(1));
        let good = p.snapshot();
        let cfg = p.config();
        let restore = |b: &[u8]| StickyPool::restore(cfg, b, at(5)).map(|p| p.len());
        assert_eq!(restore(&good), Ok(2));
        for cut in 0..good.len() {
            assert_eq!(restore(&good[..cut]), Err(SnapshotError::Truncated), "cut at {cut}");
        }
        let mut extra = good.clone();
        extra.push(0);
        assert_eq!(restore(&extra), Err(SnapshotError::TrailingBytes));
        let mut magic = good.clone();
        magic[0] = b'X';
        assert_eq!(restore(&magic), Err(SnapshotError::BadMagic));
        let mut version = good.clone();
        version[4] = 2;
        assert_eq!(restore(&version), Err(SnapshotError::UnsupportedVersion(2)));
        let mut count = good.clone();
        count[5..9].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(restore(&count), Err(SnapshotError::TooManyEntries(u32::MAX)));
        // First entry: listener 9..17, age 17..25, peer len at 25.
        let mut no_peer = good.clone();
        no_peer[25] = 0;
        assert_eq!(restore(&no_peer), Err(SnapshotError::BadPeerId));
        let mut long_peer = good.clone();
        long_peer[25] = MAX_PEER_ID_LEN as u8 + 1;
        assert!(restore(&long_peer).is_err());
        let session_flag = 26 + 8;
        let mut flag = good.clone();
        flag[session_flag] = 2;
        assert_eq!(restore(&flag), Err(SnapshotError::BadSession));
        let mut utf8 = good.clone();
        utf8[session_flag + 2] = 0xff;
        assert_eq!(restore(&utf8), Err(SnapshotError::BadSession));
        let mut order = good.clone();
        order[17..25].copy_from_slice(&0u64.to_be_bytes());
        let second_age = session_flag + 3 + 8;
        order[second_age..second_age + 8].copy_from_slice(&5u64.to_be_bytes());
        assert_eq!(restore(&order), Err(SnapshotError::OutOfOrder));
    }

    #[derive(Clone, Debug)]
    enum Op {
        Pin(u8, u8),
        Get(u8),
        Unpin(u8),
        Expire,
        Wait(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..12, any::<u8>()).prop_map(|(k, p)| Op::Pin(k, p)),
            (0u8..12).prop_map(Op::Get),
            (0u8..12).prop_map(Op::Unpin),
            Just(Op::Expire),
            (0u8..30).prop_map(Op::Wait),
        ]
    }

    fn model_key(k: u8) -> StickyKey {
        key(u64::from(k % 3), if k < 3 { None } else { Some(["a", "b", "c"][usize::from(k % 3)]) })
    }

    /// The obvious model: a list in use order, most recent at the end.
    #[derive(Default)]
    struct Model {
        pins: Vec<(StickyKey, PeerId, Instant)>,
    }

    impl Model {
        fn live(&self, i: usize, now: Instant, ttl: Duration) -> bool {
            now < self.pins[i].2 + ttl
        }
    }

    fn run(
        ops: &[Op],
        capacity: usize,
        ttl: Duration,
    ) -> (StickyPool, Instant, Result<(), TestCaseError>) {
        let mut p = StickyPool::new(StickyConfig { capacity, ttl });
        let mut m = Model::default();
        let mut now = at(0);
        let mut check = || -> Result<(), TestCaseError> {
            for op in ops {
                match *op {
                    Op::Pin(k, n) => {
                        let (k, v) = (model_key(k), peer(u64::from(n)));
                        let got = p.pin(k.clone(), v, now);
                        let want = if let Some(i) = m.pins.iter().position(|e| e.0 == k) {
                            m.pins.remove(i);
                            m.pins.push((k, v, now));
                            None
                        } else if capacity == 0 {
                            Some((k, v))
                        } else {
                            let evicted = (m.pins.len() >= capacity).then(|| m.pins.remove(0));
                            m.pins.push((k, v, now));
                            evicted.map(|(k, v, _)| (k, v))
                        };
                        prop_assert_eq!(got, want);
                    }
                    Op::Get(k) => {
                        let k = model_key(k);
                        let want = match m.pins.iter().position(|e| e.0 == k) {
                            Some(i) if m.live(i, now, ttl) => {
                                let (k, v, _) = m.pins.remove(i);
                                m.pins.push((k, v, now));
                                Some(v)
                            }
                            Some(i) => {
                                m.pins.remove(i);
                                None
                            }
                            None => None,
                        };
                        prop_assert_eq!(p.get(&k, now), want);
                    }
                    Op::Unpin(k) => {
                        let k = model_key(k);
                        let want = m.pins.iter().position(|e| e.0 == k).map(|i| m.pins.remove(i).1);
                        prop_assert_eq!(p.unpin(&k), want);
                    }
                    Op::Expire => {
                        let mut want = Vec::new();
                        while !m.pins.is_empty() && !m.live(0, now, ttl) {
                            let (k, v, _) = m.pins.remove(0);
                            want.push((k, v));
                        }
                        prop_assert_eq!(p.expire(now), want);
                    }
                    Op::Wait(s) => now = now + Duration::from_secs(u64::from(s)),
                }
                prop_assert!(p.len() <= capacity);
                let order: Vec<_> = p.iter().map(|(k, v)| (k.clone(), v)).collect();
                let model: Vec<_> = m.pins.iter().map(|(k, v, _)| (k.clone(), *v)).collect();
                prop_assert_eq!(order, model);
            }
            Ok(())
        };
        let result = check();
        (p, now, result)
    }

    proptest! {
        #[test]
        fn behaves_like_the_model(
            ops in proptest::collection::vec(op(), 0..120),
            capacity in 0usize..6,
            ttl in 1u64..60,
        ) {
            run(&ops, capacity, Duration::from_secs(ttl)).2?;
        }

        #[test]
        fn snapshot_round_trips(
            ops in proptest::collection::vec(op(), 0..120),
            capacity in 0usize..6,
            later in 0u64..1_000_000,
        ) {
            let ttl = 40 * SEC;
            let (p, now, result) = run(&ops, capacity, ttl);
            result?;
            let mut p = p;
            p.expire(now);
            let bytes = p.snapshot();
            let restored = StickyPool::restore(p.config(), &bytes, now + Duration::from_secs(later))
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let a: Vec<_> = p.iter().map(|(k, v)| (k.clone(), v)).collect();
            let b: Vec<_> = restored.iter().map(|(k, v)| (k.clone(), v)).collect();
            prop_assert_eq!(a, b);
            prop_assert_eq!(restored.snapshot(), bytes.clone());
            // What `meshproxy state show` reads: every pin, in order, each
            // with its idle time relative to the newest.
            let decoded = decode(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let newest = p.entries().map(|(_, _, used)| used).max().unwrap_or(Instant::ZERO);
            let want: Vec<_> = p
                .entries()
                .map(|(k, peer, used)| SavedPin {
                    key: k.clone(),
                    peer,
                    age: newest.saturating_duration_since(used),
                })
                .collect();
            prop_assert_eq!(decoded, want);
        }

        #[test]
        fn arbitrary_bytes_never_panic_or_overfill(
            bytes in proptest::collection::vec(any::<u8>(), 0..400),
            capacity in 0usize..4,
        ) {
            let cfg = StickyConfig { capacity, ttl: 1000 * SEC };
            if let Ok(p) = StickyPool::restore(cfg, &bytes, at(1)) {
                prop_assert!(p.len() <= capacity);
            }
            // Also behind a valid header, so the entry parser gets exercised.
            let mut framed = MAGIC.to_vec();
            framed.push(VERSION);
            framed.extend_from_slice(&3u32.to_be_bytes());
            framed.extend_from_slice(&bytes);
            if let Ok(p) = StickyPool::restore(cfg, &framed, at(1)) {
                prop_assert!(p.len() <= capacity);
            }
        }

        #[test]
        fn mutated_snapshots_never_panic(
            ops in proptest::collection::vec(op(), 0..60),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
            cut in any::<usize>(),
        ) {
            let (p, now, _) = run(&ops, 5, 40 * SEC);
            let mut bytes = p.snapshot();
            for (i, x) in flips {
                let n = bytes.len();
                bytes[i % n] ^= x;
            }
            bytes.truncate(cut % (bytes.len() + 1));
            if let Ok(r) = StickyPool::restore(p.config(), &bytes, now) {
                prop_assert!(r.len() <= 5);
            }
        }
    }
}
