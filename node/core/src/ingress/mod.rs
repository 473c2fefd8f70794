//! Ingress routing for the gateway role (`DESIGN.md` §8): which route a
//! public HTTP request takes, what its target does, and which agent serves
//! it. Pure: no clock, no I/O; randomness is the caller's seeded RNG.
//!
//! ```text
//! RequestHead ──Request::from_head──▶ Request ──Router::decide──▶ Decision { version, outcome }
//!  (http_head)   normalise, path rules         route table of         ├─ Refuse(400 / 404)
//!                (400 on refusal)              the listener           ├─ Static / Redirect
//!                                                                     └─ Forward(target) ──Router::choose──▶ agent | none (503)
//! ```
//!
//! The simulator's reference router and the gateway role follow the rules
//! below; the tests in `ingress/tests/` check this module against a naive
//! reference matcher of their own.
//!
//! # Normalisation ([`normalize`])
//! - **Host**: from the absolute-form target if the request has one (it wins
//!   over `Host`, RFC 9112 §3.2.2), else from `Host`; `Host` is checked
//!   either way by [`RequestHead::host`](crate::http_head::RequestHead::host)
//!   (required once in HTTP/1.1). User info is refused; the port is checked
//!   (1–5 digits, ≤ 65535) and dropped; ASCII is lowercased; **one** trailing
//!   dot is stripped. The result must be an IPv6 literal in brackets or
//!   dot-separated labels of `a-z 0-9 - _` (1–63 bytes each, 253 in all).
//!   **IDNA is left as is**: non-ASCII hosts are refused and `xn--` names are
//!   compared byte for byte, so routes name hosts in their ASCII form. An
//!   HTTP/1.0 origin-form request without `Host` has no host, and matches
//!   only routes without a host pattern (and the default).
//! - **Target**: origin form (`/p?q`) or absolute form (`http(s)://h/p?q`);
//!   authority form, `*`, `CONNECT`, fragments and other schemes are refused.
//! - **Path**: split on raw `/`; each segment percent-decoded **once**
//!   (`percent-encoding`). Routes compare decoded segments, so `/a%2Fb` is
//!   the one segment `a/b`. The raw path is kept (it is what is forwarded)
//!   and so is the decoded one. The query is kept raw and not checked.
//!
//! # Path security
//! Refused on **every** route (400, [`PathError`]): a dot segment `.` or
//! `..`, raw or encoded (`%2e`, `%2E%2e`, …; dots *inside* a segment are
//! fine), a raw `\`, a control byte once decoded (`%00`–`%1F`, `%7F`), a
//! malformed escape (`%` without two hex digits). Refused on **strict** routes
//! (the default in config): an encoded separator, `%2F` or `%5C`
//! ([`PathError::EncodedSlash`], [`PathError::EncodedBackslash`]). Strictness
//! is checked *after* matching: a strict route that matches refuses the
//! request (400); the request does not fall through to later routes.
//!
//! # Matching ([`routes`])
//! Each listener has a [`RouteTable`]: routes sorted by `(priority, id)`
//! (lower priority first, then id in byte order; ids are unique per
//! listener), and an optional default. The **first** route whose host
//! pattern and path prefix both match wins; a route without a host pattern
//! matches any host, one without a prefix any path, but a route must have at
//! least one of the two. Nothing matched → the default route; no default →
//! 404. An unknown listener → 404. Specificity plays no part: priority does.
//! - **Host patterns**: `example.com` (exact) or `*.example.com`, which
//!   matches **exactly one** label in front (`a.example.com`), not
//!   `a.b.example.com` and not the apex `example.com` — the rule of TLS
//!   wildcard certificates (RFC 6125 §6.4.3) and Caddy, so a route and a
//!   wildcard certificate always cover the same names. Deeper names need
//!   their own pattern (`*.b.example.com`).
//! - **Path prefixes** are segment-aware: `/api` matches `/api`, `/api/` and
//!   `/api/x`, never `/apix`; `/` matches every path. A prefix is written
//!   like a path (escapes allowed, compared decoded) without a trailing `/`.
//!
//! # Targets
//! - **Agents** ([`AgentTarget`]): a service name and pools, each a
//!   [`LabelSelector`] (`key=value,…`; an agent must carry **all** of them),
//!   a failover group number and a weight. A matched route with no available
//!   agent answers 503; the default is not tried.
//! - **Static** ([`StaticResponse`]): status 200–599, content type, body ≤ 64 KiB.
//! - **Redirect** ([`Redirect`]): 301/302/307/308 to an `http(s)://` URL or
//!   an absolute path; `keep_path` appends the raw path after the route's
//!   prefix, `keep_query` the query.
//!
//! # Agent choice ([`balance`])
//! Candidates are the agents that are **available** (an unavailable agent is
//! never chosen), offer the target's service, and are selected by a pool; an
//! agent selected by several pools counts in the lowest group among them.
//! Only the **lowest-numbered group with a candidate** is used (failover).
//! Within it ([`Balance`]):
//! - round robin: agents in id order, each after the last one picked;
//! - random: uniform, from the caller's seeded RNG;
//! - least active: the fewest requests in flight; never an agent busier than
//!   the least busy; ties in id order after the last pick;
//! - weighted: nginx's smooth weighted round robin on the pools' weights:
//!   over `sum(weights)` picks of an unchanged candidate set, each agent is
//!   picked exactly `weight` times, interleaved; a changed set starts afresh;
//! - hash (client IP, a header, a cookie; a request without the header or
//!   cookie hashes its client IP): **rendezvous** (highest random weight)
//!   hashing with SHA-256. Chosen over a ring because candidate sets are
//!   small (O(n) per pick is nothing), it needs no state or virtual-node
//!   tuning, it is the same on every gateway (unseeded), and removing an
//!   agent moves exactly the keys it had and no others. Weights are ignored.
//!
//! Balancing state (round robin's last pick, the weighted counters) belongs
//! to the [`Router`], keyed by listener and route id: it survives a reload
//! for routes that keep their id and is dropped for routes that go. Only a
//! forwarded request touches it: a refused, static or redirected request,
//! or one with no candidate, leaves it unchanged.
//!
//! # Versions
//! A [`Snapshot`] is an immutable, validated config with a version number.
//! [`Router::reload`] swaps it whole, only for a higher version. A
//! [`Decision`] carries the version it was made under and its own handle on
//! that version's target, so a later reload never changes the decision (or
//! the agent choice) of a request already admitted.

pub mod balance;
pub mod normalize;
pub mod routes;
#[cfg(test)]
mod tests;

pub use balance::{Affinity, Agent, Balance, BalanceState, Candidate, HashOn};
pub use normalize::{NormalizeError, Path, PathError, Request};
pub use routes::{
    AgentPool, AgentTarget, ConfigError, HostPattern, LabelSelector, PathPrefix, Redirect, Route,
    RouteSpec, RouteTable, StaticResponse, Target, TargetSpec,
};

use crate::ids::PeerId;
use rand_core::RngCore;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Most listeners a snapshot may have.
pub const MAX_LISTENERS: usize = 64;
/// Longest listener name.
pub const MAX_LISTENER_NAME_LEN: usize = 64;

/// An immutable, validated routing config and its version.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Snapshot {
    version: u64,
    listeners: BTreeMap<String, RouteTable>,
}

impl Snapshot {
    /// A snapshot of `listeners` (name → table) as version `version`.
    ///
    /// # Errors
    /// More than [`MAX_LISTENERS`], or a name that is not 1–64 of
    /// `[A-Za-z0-9._-]`.
    pub fn new(
        version: u64,
        listeners: BTreeMap<String, RouteTable>,
    ) -> Result<Snapshot, ConfigError> {
        let err = |listener: &str, problem: &str| ConfigError {
            listener: listener.to_owned(),
            route: None,
            field: "listener",
            problem: problem.to_owned(),
        };
        if listeners.len() > MAX_LISTENERS {
            return Err(err("*", "more than 64 listeners"));
        }
        for name in listeners.keys() {
            let ok = |b: u8| b.is_ascii_alphanumeric() || b"._-".contains(&b);
            if name.is_empty() || name.len() > MAX_LISTENER_NAME_LEN || !name.bytes().all(ok) {
                return Err(err(name, "name must be 1-64 of [A-Za-z0-9._-]"));
            }
        }
        Ok(Snapshot { version, listeners })
    }

    /// The version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The same tables as version `version` (a reload numbers the table it
    /// swaps in above the one in force).
    #[must_use]
    pub fn with_version(self, version: u64) -> Snapshot {
        Snapshot { version, ..self }
    }

    /// Whether `other` routes exactly as this one does, whatever the versions.
    pub fn same_routes(&self, other: &Snapshot) -> bool {
        self.listeners == other.listeners
    }

    /// The table of `listener`.
    pub fn table(&self, listener: &str) -> Option<&RouteTable> {
        self.listeners.get(listener)
    }

    /// The decision for `request` on `listener` under this snapshot.
    pub fn decide(&self, listener: &str, request: &Request) -> Decision {
        let decision = |route: Option<&str>, outcome| Decision {
            version: self.version,
            listener: listener.to_owned(),
            route: route.map(str::to_owned),
            outcome,
        };
        let Some(table) = self.listeners.get(listener) else {
            return decision(None, Outcome::Refuse(Refusal::NoRoute));
        };
        let (route, strict, target, prefix_len) = match table.first_match(request) {
            Some(r) => (
                Some(r.id.as_str()),
                r.strict,
                &r.target,
                r.path_prefix.as_ref().map_or(0, PathPrefix::len),
            ),
            None => match table.default_target() {
                Some((strict, target)) => (None, strict, target, 0),
                None => return decision(None, Outcome::Refuse(Refusal::NoRoute)),
            },
        };
        if let Some(e) = request.path.encoded_separator().filter(|_| strict) {
            return decision(route, Outcome::Refuse(Refusal::Path(e)));
        }
        let outcome = match target {
            Target::Agents(t) => Outcome::Forward(Arc::clone(t)),
            Target::Static(s) => Outcome::Static(Arc::clone(s)),
            Target::Redirect(r) => Outcome::Redirect {
                status: r.status,
                location: r.location(request.path.raw_suffix(prefix_len), request.query.as_deref()),
            },
        };
        decision(route, outcome)
    }
}

/// Why the router answers a request itself with an error.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Refusal {
    /// No route matched and the listener has no default (or no such listener).
    NoRoute,
    /// The matched route is strict and the path has an encoded separator.
    Path(PathError),
}

impl Refusal {
    /// The status: 404 for no route, 400 for a path.
    pub fn status(self) -> u16 {
        match self {
            Refusal::NoRoute => 404,
            Refusal::Path(e) => e.status(),
        }
    }
}

/// What to do with a request.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Outcome {
    /// Answer with an error status.
    Refuse(Refusal),
    /// Answer with this response.
    Static(Arc<StaticResponse>),
    /// Answer with a redirect.
    Redirect {
        /// 301, 302, 307 or 308.
        status: u16,
        /// The `Location`.
        location: String,
    },
    /// Forward to an agent of this target (choose with [`Router::choose`]).
    Forward(Arc<AgentTarget>),
}

/// A routing decision and the config version it was made under.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Decision {
    /// The snapshot's version.
    pub version: u64,
    /// The listener.
    pub listener: String,
    /// The route that matched; `None` for the default route (or none).
    pub route: Option<String>,
    /// What to do.
    pub outcome: Outcome,
}

/// Why a reload is refused.
#[derive(thiserror::Error, Clone, Copy, PartialEq, Eq, Debug)]
#[error("config version {offered} is not above the current {current}")]
pub struct StaleVersion {
    /// The version in force.
    pub current: u64,
    /// The version offered.
    pub offered: u64,
}

/// The routing config in force and the balancing state of its routes.
#[derive(Debug)]
pub struct Router {
    current: Arc<Snapshot>,
    /// Per (listener, route id; `None` = the default route).
    balance: BTreeMap<(String, Option<String>), BalanceState>,
}

impl Router {
    /// A router with `snapshot` in force.
    pub fn new(snapshot: Snapshot) -> Router {
        Router { current: Arc::new(snapshot), balance: BTreeMap::new() }
    }

    /// The snapshot in force.
    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.current
    }

    /// Swaps in `snapshot` whole if its version is higher, keeping the
    /// balancing state of routes still present (same listener and id, still
    /// forwarding) and dropping the rest.
    ///
    /// # Errors
    /// [`StaleVersion`]; nothing changes then.
    pub fn reload(&mut self, snapshot: Snapshot) -> Result<(), StaleVersion> {
        if snapshot.version <= self.current.version {
            return Err(StaleVersion { current: self.current.version, offered: snapshot.version });
        }
        self.balance.retain(|(listener, route), _| {
            let Some(table) = snapshot.table(listener) else { return false };
            let target = match route {
                Some(id) => table.routes().iter().find(|r| r.id == *id).map(|r| &r.target),
                None => table.default_target().map(|(_, t)| t),
            };
            matches!(target, Some(Target::Agents(_)))
        });
        self.current = Arc::new(snapshot);
        Ok(())
    }

    /// The decision for `request` on `listener` under the snapshot in force.
    pub fn decide(&self, listener: &str, request: &Request) -> Decision {
        self.current.decide(listener, request)
    }

    /// The agent for a [`Outcome::Forward`] decision, chosen among `agents`
    /// with the decision's own target (whatever the version in force now);
    /// `None` for another outcome or when no agent is a candidate (503), and
    /// then no state changes.
    pub fn choose(
        &mut self,
        decision: &Decision,
        agents: &[Agent],
        affinity: &Affinity<'_>,
        rng: &mut impl RngCore,
    ) -> Option<PeerId> {
        let Outcome::Forward(target) = &decision.outcome else { return None };
        let candidates = balance::candidates(target, agents);
        if candidates.is_empty() {
            return None;
        }
        let key = (decision.listener.clone(), decision.route.clone());
        self.balance.entry(key).or_default().pick(&target.balance, &candidates, affinity, rng)
    }

    /// How many routes hold balancing state (bounded by the routes in force
    /// plus those admitted under older versions since the last reload).
    pub fn balance_states(&self) -> usize {
        self.balance.len()
    }
}
