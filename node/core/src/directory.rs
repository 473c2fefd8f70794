//! The hub's directory of registered peers: exits today, agents tomorrow
//! (any [`Role`] that [`Role::is_listed`]; each record says which).
//!
//! Peers register with a hub and then heartbeat; a registration lives for the
//! directory's `ttl` after the last register or heartbeat, so a peer that
//! vanishes without a word drops out on its own. Clients ask the directory to
//! find peers of one role matching their filters. A peer has one registration
//! at a time: registering again, in any role, replaces it.
//!
//! Expiry is driven by the caller: [`Directory::next_expiry`] says when to
//! call [`Directory::expire`] (the hub's `poll_timeout`). Until that call an
//! entry whose time is up is still listed by `find` and `resolve`, but a
//! heartbeat can no longer revive it: the peer must register again.
//!
//! # Spreading load
//!
//! If every `Find` returned the same first `limit` exits, those would carry
//! every client. `find` therefore starts each scan just after where the
//! previous one for the same role stopped (a cursor per role over the peer-id
//! order), so successive answers rotate through all matching peers; within one answer, exits with
//! a lower load-to-capacity ratio come first, and exits at or over capacity
//! are offered only when there are not enough others.

use crate::ids::PeerId;
use crate::record::{PeerFilter, PeerRecord, Role};
use crate::time::Instant;
use core::cmp::Ordering;
use core::ops::Bound;
use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet};

/// The directory's limits.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct DirectoryConfig {
    /// How long a registration lives after the last register or heartbeat.
    pub ttl: Duration,
    /// Most peers registered at once, all roles together.
    pub max_entries: usize,
}

impl Default for DirectoryConfig {
    fn default() -> Self {
        DirectoryConfig { ttl: Duration::from_secs(90), max_entries: 10_000 }
    }
}

/// Why [`Directory::register`] refused a peer.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum RegisterError {
    /// The directory holds `max_entries` other peers already.
    #[error("the directory is full ({max_entries} exits)")]
    Full {
        /// The directory's limit.
        max_entries: usize,
    },
}

/// Why [`Directory::heartbeat`] refused a heartbeat.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum HeartbeatError {
    /// The peer is not registered, or its registration has run out: it must
    /// register again.
    #[error("{0} is not registered")]
    NotRegistered(PeerId),
}

#[derive(Clone, Debug)]
struct Entry {
    record: PeerRecord,
    expires: Instant,
    load: u32,
}

impl Entry {
    fn saturated(&self) -> bool {
        self.load >= self.record.capacity
    }

    /// Orders by `load / capacity` without division (capacity 0 counts as full).
    fn cmp_load(&self, other: &Entry) -> Ordering {
        match (self.saturated(), other.saturated()) {
            (false, true) => Ordering::Less,
            (true, false) => Ordering::Greater,
            _ => {
                let mine = u64::from(self.load) * u64::from(other.record.capacity);
                let theirs = u64::from(other.load) * u64::from(self.record.capacity);
                mine.cmp(&theirs)
            }
        }
    }
}

/// The hub's directory of registered peers. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct Directory {
    config: DirectoryConfig,
    entries: BTreeMap<PeerId, Entry>,
    /// The same entries by expiry, for `expire` and `next_expiry`.
    by_expiry: BTreeSet<(Instant, PeerId)>,
    /// Where the last `find` for each role stopped; the next one starts
    /// after it.
    cursors: BTreeMap<Role, PeerId>,
}

impl Directory {
    /// An empty directory.
    pub fn new(config: DirectoryConfig) -> Self {
        Directory {
            config,
            entries: BTreeMap::new(),
            by_expiry: BTreeSet::new(),
            cursors: BTreeMap::new(),
        }
    }

    /// The directory's limits.
    pub fn config(&self) -> DirectoryConfig {
        self.config
    }

    /// Registers `record.peer` until `now + ttl`, returning the ttl for the
    /// `Registered` answer. Registering a known peer again replaces its record
    /// (keeping its last reported load) and never counts against the limit.
    pub fn register(
        &mut self,
        now: Instant,
        record: PeerRecord,
    ) -> Result<Duration, RegisterError> {
        let peer = record.peer;
        let expires = now + self.config.ttl;
        let load = match self.entries.get(&peer) {
            Some(old) => {
                self.by_expiry.remove(&(old.expires, peer));
                old.load
            }
            None if self.entries.len() >= self.config.max_entries => {
                return Err(RegisterError::Full { max_entries: self.config.max_entries });
            }
            None => 0,
        };
        self.entries.insert(peer, Entry { record, expires, load });
        self.by_expiry.insert((expires, peer));
        Ok(self.config.ttl)
    }

    /// Extends `peer`'s registration to `now + ttl` and records its current
    /// load (sessions carried), returning the ttl.
    pub fn heartbeat(
        &mut self,
        now: Instant,
        peer: PeerId,
        load: u32,
    ) -> Result<Duration, HeartbeatError> {
        let entry = match self.entries.get_mut(&peer) {
            Some(e) if now < e.expires => e,
            _ => return Err(HeartbeatError::NotRegistered(peer)),
        };
        self.by_expiry.remove(&(entry.expires, peer));
        entry.expires = now + self.config.ttl;
        entry.load = load;
        self.by_expiry.insert((entry.expires, peer));
        Ok(self.config.ttl)
    }

    /// Removes `peer` (it said goodbye, or its connection was refused);
    /// whether it was registered.
    pub fn remove(&mut self, peer: PeerId) -> bool {
        match self.entries.remove(&peer) {
            Some(e) => {
                self.by_expiry.remove(&(e.expires, peer));
                true
            }
            None => false,
        }
    }

    /// Removes every peer whose registration ran out at or before `now`,
    /// returning them in order of expiry (ties by peer id).
    pub fn expire(&mut self, now: Instant) -> Vec<PeerId> {
        let mut gone = Vec::new();
        while let Some(&(expires, peer)) = self.by_expiry.first() {
            if expires > now {
                break;
            }
            self.by_expiry.pop_first();
            self.entries.remove(&peer);
            gone.push(peer);
        }
        gone
    }

    /// When the next registration runs out.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.by_expiry.first().map(|&(t, _)| t)
    }

    /// Up to `limit` peers registered as `role` matching `filter`, rotating
    /// between calls and least loaded first (see the [module docs](self)).
    pub fn find(&mut self, role: Role, filter: &PeerFilter, limit: usize) -> Vec<PeerRecord> {
        if limit == 0 {
            return Vec::new();
        }
        // Scan from just after the cursor to the end, then wrap around to it.
        let cursor = self.cursors.get(&role).copied();
        let tail = match cursor {
            Some(c) => self.entries.range((Bound::Excluded(c), Bound::Unbounded)),
            None => self.entries.range(..),
        };
        let head = cursor.map(|c| self.entries.range(..=c));
        let rotated = tail.chain(head.into_iter().flatten());
        let mut picked: Vec<(&PeerId, &Entry)> = Vec::new();
        let mut saturated: Vec<(&PeerId, &Entry)> = Vec::new();
        for (peer, entry) in rotated {
            if entry.record.role != role || !filter.matches(&entry.record.attrs) {
                continue;
            }
            if !entry.saturated() {
                picked.push((peer, entry));
                if picked.len() == limit {
                    break;
                }
            } else if saturated.len() < limit {
                saturated.push((peer, entry));
            }
        }
        let missing = limit - picked.len();
        picked.extend(saturated.into_iter().take(missing));
        // The next scan starts after the last unsaturated exit offered, so
        // saturated ones do not hold the rotation back.
        if let Some((peer, _)) = picked.iter().rev().find(|(_, e)| !e.saturated()).or(picked.last())
        {
            self.cursors.insert(role, **peer);
        }
        picked.sort_by(|(_, a), (_, b)| a.cmp_load(b));
        picked.into_iter().map(|(_, e)| e.record.clone()).collect()
    }

    /// What the directory holds about `peer`.
    pub fn resolve(&self, peer: PeerId) -> Option<&PeerRecord> {
        self.entries.get(&peer).map(|e| &e.record)
    }

    /// The load `peer` last reported.
    pub fn load(&self, peer: PeerId) -> Option<u32> {
        self.entries.get(&peer).map(|e| e.load)
    }

    /// How many peers are registered, all roles together.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// How many peers are registered as `role`.
    pub fn len_of(&self, role: Role) -> usize {
        self.entries.values().filter(|e| e.record.role == role).count()
    }

    /// Whether no peer is registered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `peer` is registered.
    pub fn contains(&self, peer: PeerId) -> bool {
        self.entries.contains_key(&peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Attrs, CountryCode, PeerAddr};
    use proptest::prelude::*;

    const SEC: Duration = Duration::from_secs(1);

    fn at(secs: u64) -> Instant {
        Instant::ZERO + Duration::from_secs(secs)
    }

    fn record(n: u64, country: &str, labels: &[&str], capacity: u32) -> PeerRecord {
        PeerRecord {
            peer: PeerId::from_u64(n),
            role: Role::Exit,
            addrs: vec![PeerAddr(n.to_be_bytes().to_vec())],
            attrs: Attrs {
                country: CountryCode::parse(country),
                labels: labels.iter().map(|l| (*l).to_owned()).collect(),
            },
            capacity,
            relays: Vec::new(),
        }
    }

    fn dir(max_entries: usize) -> Directory {
        Directory::new(DirectoryConfig { ttl: 30 * SEC, max_entries })
    }

    fn ids(records: &[PeerRecord]) -> Vec<PeerId> {
        records.iter().map(|r| r.peer).collect()
    }

    #[test]
    fn register_resolve_remove() {
        let mut d = dir(10);
        assert!(d.is_empty());
        assert_eq!(d.register(at(0), record(1, "de", &[], 10)), Ok(30 * SEC));
        assert!(d.contains(PeerId::from_u64(1)));
        assert_eq!(d.resolve(PeerId::from_u64(1)), Some(&record(1, "de", &[], 10)));
        assert_eq!(d.resolve(PeerId::from_u64(2)), None);
        assert!(d.remove(PeerId::from_u64(1)));
        assert!(!d.remove(PeerId::from_u64(1)));
        assert_eq!(d.len(), 0);
        assert_eq!(d.next_expiry(), None);
    }

    #[test]
    fn full_refuses_new_peers_but_not_known_ones() {
        let mut d = dir(2);
        assert!(d.register(at(0), record(1, "de", &[], 1)).is_ok());
        assert!(d.register(at(0), record(2, "de", &[], 1)).is_ok());
        assert_eq!(
            d.register(at(0), record(3, "de", &[], 1)),
            Err(RegisterError::Full { max_entries: 2 })
        );
        // Re-registering replaces the record and refreshes the expiry.
        assert_eq!(d.heartbeat(at(1), PeerId::from_u64(1), 7), Ok(30 * SEC));
        assert_eq!(d.register(at(5), record(1, "us", &["dc"], 9)), Ok(30 * SEC));
        assert_eq!(d.resolve(PeerId::from_u64(1)), Some(&record(1, "us", &["dc"], 9)));
        assert_eq!(d.load(PeerId::from_u64(1)), Some(7), "load survives a re-register");
        assert_eq!(d.len(), 2);
        assert_eq!(d.expire(at(30)), [PeerId::from_u64(2)]);
        assert_eq!(d.next_expiry(), Some(at(35)));
        assert!(d.register(at(30), record(3, "de", &[], 1)).is_ok(), "room again");
        assert!(Directory::new(DirectoryConfig { ttl: SEC, max_entries: 0 })
            .register(at(0), record(1, "de", &[], 1))
            .is_err());
    }

    #[test]
    fn expiry_is_exactly_at_the_ttl() {
        let mut d = dir(10);
        d.register(at(0), record(1, "de", &[], 1)).expect("room");
        d.register(at(0), record(2, "de", &[], 1)).expect("room");
        d.register(at(10), record(3, "de", &[], 1)).expect("room");
        assert_eq!(d.next_expiry(), Some(at(30)));
        assert_eq!(d.expire(at(30) - Duration::from_micros(1)), []);
        assert_eq!(d.len(), 3);
        assert_eq!(d.expire(at(30)), [PeerId::from_u64(1), PeerId::from_u64(2)]);
        assert_eq!(d.next_expiry(), Some(at(40)));
        // At the boundary a heartbeat is too late, even before `expire` runs.
        assert_eq!(
            d.heartbeat(at(40), PeerId::from_u64(3), 0),
            Err(HeartbeatError::NotRegistered(PeerId::from_u64(3)))
        );
        assert_eq!(d.expire(at(40)), [PeerId::from_u64(3)]);
        assert!(d.is_empty());
    }

    #[test]
    fn heartbeat_extends_and_unknown_peers_are_refused() {
        let mut d = dir(10);
        assert_eq!(
            d.heartbeat(at(0), PeerId::from_u64(1), 0),
            Err(HeartbeatError::NotRegistered(PeerId::from_u64(1)))
        );
        d.register(at(0), record(1, "de", &[], 4)).expect("room");
        assert_eq!(d.heartbeat(at(29), PeerId::from_u64(1), 3), Ok(30 * SEC));
        assert_eq!(d.next_expiry(), Some(at(59)));
        assert_eq!(d.expire(at(58)), []);
        assert_eq!(d.load(PeerId::from_u64(1)), Some(3));
        assert_eq!(d.expire(at(59)), [PeerId::from_u64(1)]);
    }

    #[test]
    fn find_filters() {
        let mut d = dir(10);
        d.register(at(0), record(1, "de", &["dc"], 10)).expect("room");
        d.register(at(0), record(2, "us", &["dc"], 10)).expect("room");
        d.register(at(0), record(3, "de", &["residential"], 10)).expect("room");
        d.register(at(0), record(4, "de", &["dc", "fast"], 10)).expect("room");
        let de_dc = PeerFilter { country: CountryCode::parse("de"), labels: vec!["dc".into()] };
        let mut found = ids(&d.find(Role::Exit, &de_dc, 10));
        found.sort();
        assert_eq!(found, [PeerId::from_u64(1), PeerId::from_u64(4)]);
        let nowhere = PeerFilter { country: CountryCode::parse("fr"), labels: vec![] };
        assert!(d.find(Role::Exit, &nowhere, 10).is_empty());
        assert_eq!(d.find(Role::Exit, &PeerFilter::default(), 10).len(), 4);
        assert!(d.find(Role::Exit, &PeerFilter::default(), 0).is_empty());
    }

    #[test]
    fn find_rotates_through_all_matching_exits() {
        let mut d = dir(10);
        for n in 1..=5 {
            d.register(at(0), record(n, "de", &[], 10)).expect("room");
        }
        let any = PeerFilter::default();
        let p = PeerId::from_u64;
        assert_eq!(ids(&d.find(Role::Exit, &any, 2)), [p(1), p(2)]);
        assert_eq!(ids(&d.find(Role::Exit, &any, 2)), [p(3), p(4)]);
        assert_eq!(ids(&d.find(Role::Exit, &any, 2)), [p(5), p(1)]);
        assert_eq!(ids(&d.find(Role::Exit, &any, 2)), [p(2), p(3)]);
        // The cursor survives its peer leaving.
        d.remove(p(3));
        assert_eq!(ids(&d.find(Role::Exit, &any, 2)), [p(4), p(5)]);
        assert_eq!(ids(&d.find(Role::Exit, &any, 10)), [p(1), p(2), p(4), p(5)]);
    }

    #[test]
    fn find_prefers_spare_capacity() {
        let mut d = dir(10);
        let p = PeerId::from_u64;
        d.register(at(0), record(1, "de", &[], 10)).expect("room");
        d.register(at(0), record(2, "de", &[], 10)).expect("room");
        d.register(at(0), record(3, "de", &[], 100)).expect("room");
        d.register(at(0), record(4, "de", &[], 0)).expect("room");
        d.heartbeat(at(1), p(1), 9).expect("registered");
        d.heartbeat(at(1), p(2), 10).expect("registered");
        d.heartbeat(at(1), p(3), 50).expect("registered");
        let any = PeerFilter::default();
        // Saturated exits (2 at capacity, 4 with none) only fill up the answer.
        assert_eq!(ids(&d.find(Role::Exit, &any, 10)), [p(3), p(1), p(2), p(4)]);
        assert_eq!(ids(&d.find(Role::Exit, &any, 2)), [p(3), p(1)]);
    }

    #[test]
    fn find_names_the_role_and_each_role_rotates_on_its_own() {
        let p = PeerId::from_u64;
        let mut d = Directory::new(DirectoryConfig::default());
        // Client records stand in for tomorrow's second listed role (agents):
        // the directory keeps any role apart, the codec decides which are listed.
        for n in 1..=6 {
            let role = if n % 2 == 0 { Role::Client } else { Role::Exit };
            let rec = PeerRecord { role, ..record(n, "de", &[], 10) };
            assert!(d.register(at(0), rec).is_ok());
        }
        let any = PeerFilter::default();
        let roles = |found: &[PeerRecord]| found.iter().map(|r| r.role).collect::<Vec<_>>();
        let exits = d.find(Role::Exit, &any, 10);
        assert_eq!(ids(&exits), [p(1), p(3), p(5)]);
        assert_eq!(roles(&exits), [Role::Exit; 3]);
        assert_eq!(ids(&d.find(Role::Client, &any, 10)), [p(2), p(4), p(6)]);
        // One role's finds do not move the other's rotation.
        assert_eq!(ids(&d.find(Role::Exit, &any, 1)), [p(1)]);
        assert_eq!(ids(&d.find(Role::Client, &any, 1)), [p(2)]);
        assert_eq!(ids(&d.find(Role::Client, &any, 1)), [p(4)]);
        assert_eq!(ids(&d.find(Role::Exit, &any, 1)), [p(3)]);
        // Registering again in another role replaces the registration.
        assert!(d.register(at(1), record(2, "de", &[], 10)).is_ok());
        assert_eq!(ids(&d.find(Role::Exit, &any, 10)).len(), 4);
        assert_eq!(d.len(), 6);
    }

    proptest! {
        #[test]
        fn stays_consistent_and_bounded(
            ops in proptest::collection::vec((0u8..5, 0u64..8, 0u32..20, 0u64..40), 0..200),
            max_entries in 0usize..6,
        ) {
            let mut d = Directory::new(DirectoryConfig { ttl: 30 * SEC, max_entries });
            let mut now = at(0);
            for (op, n, load, wait) in ops {
                let peer = PeerId::from_u64(n);
                match op {
                    0 => {
                        let was = d.contains(peer);
                        let full = d.len() >= max_entries;
                        let r = d.register(now, record(n, "de", &[], 10));
                        prop_assert_eq!(r.is_ok(), was || !full);
                    }
                    1 => { let _ = d.heartbeat(now, peer, load); }
                    2 => { d.remove(peer); }
                    3 => {
                        for gone in d.expire(now) {
                            prop_assert!(!d.contains(gone));
                        }
                        prop_assert!(d.next_expiry().is_none_or(|t| t > now));
                    }
                    _ => {
                        let limit = (load % 4) as usize;
                        let found = d.find(Role::Exit, &PeerFilter::default(), limit);
                        prop_assert_eq!(found.len(), limit.min(d.len()));
                        let mut unique = ids(&found);
                        unique.sort();
                        unique.dedup();
                        prop_assert_eq!(unique.len(), found.len());
                    }
                }
                now = now + Duration::from_secs(wait) / 4;
                prop_assert!(d.len() <= max_entries);
                prop_assert_eq!(d.by_expiry.len(), d.entries.len());
                for (p, e) in &d.entries {
                    prop_assert!(d.by_expiry.contains(&(e.expires, *p)));
                }
            }
        }
    }
}
