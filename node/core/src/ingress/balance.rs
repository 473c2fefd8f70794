//! Agent choice: failover groups, then a load-balancing strategy among the
//! available agents of the lowest group that has one.

use super::routes::AgentTarget;
use crate::http_head::RequestHead;
use crate::ids::PeerId;
use rand_core::RngCore;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Longest header or cookie name a hash strategy may name.
pub const MAX_KEY_NAME_LEN: usize = 64;

/// What consistent hashing hashes.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum HashOn {
    /// The client's IP address.
    ClientIp,
    /// The value of a request header (first field of that name).
    Header(String),
    /// The value of a cookie.
    Cookie(String),
}

/// How an agent is chosen among the candidates.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub enum Balance {
    /// Each candidate in turn, in agent-id order.
    #[default]
    RoundRobin,
    /// Uniformly at random (the caller's seeded RNG).
    Random,
    /// Fewest active requests; ties in turn.
    LeastActive,
    /// Smooth weighted round robin on the pools' weights.
    Weighted,
    /// Rendezvous hashing on a key: the same key goes to the same agent
    /// while it is available.
    Hash(HashOn),
}

impl Balance {
    /// Checks a hash strategy's header or cookie name.
    ///
    /// # Errors
    /// What is wrong with it.
    pub fn validate(&self) -> Result<(), &'static str> {
        match self {
            Balance::Hash(HashOn::Header(n) | HashOn::Cookie(n)) => {
                let ok = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
                if n.is_empty() || n.len() > MAX_KEY_NAME_LEN || !n.bytes().all(ok) {
                    return Err("a hash key name must be a 1-64 byte token");
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// What the gateway knows of one agent when it chooses.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Agent {
    /// Its identity.
    pub id: PeerId,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// The services it offers.
    pub services: Vec<String>,
    /// Connected, registered and not in cooldown: only these are chosen.
    pub available: bool,
    /// Requests in flight to it (for [`Balance::LeastActive`]).
    pub active: u32,
}

/// A candidate of the chosen group, with its weight.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Candidate {
    /// The agent.
    pub id: PeerId,
    /// Its weight (from the first pool of the group that selects it).
    pub weight: u32,
    /// Its active requests.
    pub active: u32,
}

/// The candidates for `target`: the available agents offering its service
/// that a pool selects, in the lowest group that has any; sorted by id. An
/// agent selected by several pools belongs to the lowest group among them,
/// with the weight of the first such pool in configured order.
pub fn candidates(target: &AgentTarget, agents: &[Agent]) -> Vec<Candidate> {
    let mut best: Option<u8> = None;
    let mut out: BTreeMap<PeerId, Candidate> = BTreeMap::new();
    for agent in agents {
        if !agent.available || !agent.services.contains(&target.service) {
            continue;
        }
        let mut own: Option<(u8, u32)> = None;
        for pool in &target.pools {
            if pool.selector.matches(&agent.labels) && own.is_none_or(|(g, _)| pool.group < g) {
                own = Some((pool.group, pool.weight));
            }
        }
        let Some((group, weight)) = own else { continue };
        if best.is_some_and(|b| group > b) {
            continue;
        }
        if best.is_none_or(|b| group < b) {
            best = Some(group);
            out.clear();
        }
        out.insert(agent.id, Candidate { id: agent.id, weight, active: agent.active });
    }
    out.into_values().collect()
}

/// The hash key of a request for [`HashOn`]: the header or cookie value,
/// or the client IP when the request has none.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Affinity<'a> {
    /// The client address's bytes (4 or 16).
    pub client_ip: &'a [u8],
    /// The named header's value, if present.
    pub header: Option<&'a [u8]>,
    /// The named cookie's value, if present.
    pub cookie: Option<&'a [u8]>,
}

impl<'a> Affinity<'a> {
    /// The affinity of a request for `balance`: the header or cookie it
    /// names read from `head` (the first field of that name; the first
    /// cookie of that name), with the client address's bytes (4 or 16).
    pub fn of(balance: &Balance, head: &'a RequestHead, client_ip: &'a [u8]) -> Affinity<'a> {
        let (header, cookie) = match balance {
            Balance::Hash(HashOn::Header(name)) => (head.value(name), None),
            Balance::Hash(HashOn::Cookie(name)) => (None, super::normalize::cookie(head, name)),
            _ => (None, None),
        };
        Affinity { client_ip, header, cookie }
    }

    /// The bytes to hash for `on`, and a tag so a header value never
    /// collides with an equal IP or cookie.
    fn key(&self, on: &HashOn) -> (u8, &[u8]) {
        match on {
            HashOn::Header(_) => self.header.map_or((0, self.client_ip), |h| (1, h)),
            HashOn::Cookie(_) => self.cookie.map_or((0, self.client_ip), |c| (2, c)),
            HashOn::ClientIp => (0, self.client_ip),
        }
    }
}

/// The rendezvous weight of `agent` for `key`: the first 8 bytes of
/// SHA-256(tag, len(key), key, agent id). Fixed, not seeded, so every
/// gateway maps a key to the same agent.
pub fn rendezvous(tag: u8, key: &[u8], agent: &PeerId) -> u64 {
    let mut h = Sha256::new();
    h.update([tag]);
    h.update((key.len() as u64).to_be_bytes());
    h.update(key);
    h.update(agent.as_bytes());
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    u64::from_be_bytes(first)
}

/// A uniform index below `n` (> 0) from `rng` (Lemire's multiply; the bias
/// is at most n / 2^64).
fn below(rng: &mut impl RngCore, n: usize) -> usize {
    ((u128::from(rng.next_u64()) * n as u128) >> 64) as usize
}

/// One target's balancing state: what round robin, least active and
/// weighted remember between picks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BalanceState {
    /// The agent picked last (round robin and least-active ties go on after it).
    last: Option<PeerId>,
    /// Smooth weighted round robin: the candidate set and weights it runs
    /// on, and each one's current weight. A different set starts afresh.
    wrr: Vec<(PeerId, u32, i64)>,
}

impl BalanceState {
    /// Chooses among `candidates` (sorted by id, as [`candidates`] returns
    /// them) with `balance`; `None` if there are none, and then the state is
    /// unchanged.
    pub fn pick(
        &mut self,
        balance: &Balance,
        candidates: &[Candidate],
        affinity: &Affinity<'_>,
        rng: &mut impl RngCore,
    ) -> Option<PeerId> {
        if candidates.is_empty() {
            return None;
        }
        let chosen = match balance {
            Balance::RoundRobin => self.after_last(candidates.iter().map(|c| c.id))?,
            Balance::Random => candidates[below(rng, candidates.len())].id,
            Balance::LeastActive => {
                let least = candidates.iter().map(|c| c.active).min().unwrap_or(0);
                self.after_last(candidates.iter().filter(|c| c.active == least).map(|c| c.id))?
            }
            Balance::Weighted => self.smooth_weighted(candidates),
            Balance::Hash(on) => {
                let (tag, key) = affinity.key(on);
                // Highest weight wins; equal weights (practically never) by id.
                candidates.iter().max_by_key(|c| (rendezvous(tag, key, &c.id), c.id))?.id
            }
        };
        self.last = Some(chosen);
        Some(chosen)
    }

    /// The first id after the last pick (wrapping), from ids sorted ascending.
    fn after_last(&self, mut ids: impl Iterator<Item = PeerId> + Clone) -> Option<PeerId> {
        let next = self.last.and_then(|last| ids.clone().find(|id| *id > last));
        next.or_else(|| ids.next())
    }

    /// nginx's smooth weighted round robin: every candidate gains its weight,
    /// the highest current weight (first in id order on a tie) is picked and
    /// loses the total. Over `sum(weights)` picks on an unchanged set each
    /// candidate is picked exactly `weight` times.
    fn smooth_weighted(&mut self, candidates: &[Candidate]) -> PeerId {
        let same = self.wrr.len() == candidates.len()
            && self.wrr.iter().zip(candidates).all(|(s, c)| s.0 == c.id && s.1 == c.weight);
        if !same {
            self.wrr = candidates.iter().map(|c| (c.id, c.weight, 0)).collect();
        }
        let total: i64 = self.wrr.iter().map(|s| i64::from(s.1)).sum();
        for s in &mut self.wrr {
            s.2 += i64::from(s.1);
        }
        let mut best = 0;
        for i in 1..self.wrr.len() {
            if self.wrr[i].2 > self.wrr[best].2 {
                best = i;
            }
        }
        self.wrr[best].2 -= total;
        self.wrr[best].0
    }
}
