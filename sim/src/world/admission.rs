//! The admission invariants (issue #15 item 8): who the hubs list, who the
//! exits serve, whether honest nodes stay admitted, and the pre-auth budgets.
//!
//! The simulator watches the hub protocol from outside the cores:
//!
//! - every ticket a hub hands out (`AuthOk` / `Ticket` frames a hub core
//!   transmits) is decoded: the holder, its roles and its wall-clock expiry
//!   make the record of which peers some hub admitted as clients, and until
//!   when;
//! - every grant a client receives is its *wallet* as the simulator sees it:
//!   usable until the arrival plus the grant's `valid_secs`, exactly as the
//!   client core reckons it, and lost when the client crashes.
//!
//! Invariants:
//!
//! - *admission*: at every step no hub's directory holds an exit registered
//!   under a key that lacks the exit role (`Node::registrations`); no exit
//!   resolves or dials for a request from a peer that holds no unexpired
//!   client ticket from a hub (outputs are attributed to the peer whose
//!   stream data the exit was handling);
//! - *tickets*: sampled every second, a client that has been up and
//!   reachable from some up hub for longer than `liveness_bound_secs` holds a
//!   usable ticket (so renewals work, and re-admission after an outage or a
//!   pre-auth flood comes within the bound); an honest app refused with 0x02
//!   for a destination that is not denied is excused only while its client
//!   holds no usable ticket (`NotAdmitted`), and never in a run held to
//!   "must succeed";
//! - *registration* (with pre-auth floods): an exit up and reachable from an
//!   up hub for longer than the bound is registered there;
//! - *bounds*: `preauth_hub_streams ≤ max_preauth_hub_streams` and
//!   `busiest_peer_hub_streams ≤ max_hub_streams_per_peer` on every hub after
//!   every step (checked with the other tables in `World::drain`).

use super::{Ev, Invariant, NodeIx, Owner, World};
use crate::bytes_model::Chunk;
use bytes::Bytes;
use meshproxy_core::admission::RoleSet;
use meshproxy_core::ids::{PeerId, StreamId};
use meshproxy_core::io::{Input, Output};
use meshproxy_core::ticket::{self, CLOCK_SKEW};
use meshproxy_core::time::Instant;
use meshproxy_core::wire::hub::{decode, HubMessage, Role, TicketGrant};
use meshproxy_core::wire::Decoded;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// How often the ticket and registration watches are sampled.
pub(super) const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The admission model's state.
#[derive(Debug, Default)]
pub(super) struct AdmissionState {
    /// Holder → the latest expiry (Unix seconds) of a client-role ticket any
    /// hub granted it, and that ticket.
    granted: BTreeMap<PeerId, (u64, Bytes)>,
    /// Client → hub → until when the client can use that hub's ticket.
    wallets: BTreeMap<NodeIx, BTreeMap<NodeIx, Instant>>,
    /// Client → the last instant it was seen holding no usable ticket.
    uncovered: BTreeMap<NodeIx, Instant>,
    /// (node, hub) → since when both are up (in these generations) and
    /// nothing cuts them apart.
    reach: BTreeMap<(NodeIx, NodeIx), (Instant, [u32; 2])>,
    /// Watches already reported (one violation per episode).
    reported: BTreeSet<(NodeIx, NodeIx)>,
    /// The exit and the peer whose stream data the exit is handling now.
    cause: Option<(NodeIx, PeerId)>,
    /// Exit outputs checked against the tickets (a test's sanity count).
    pub(super) checked_dials: u64,
}

impl World<'_> {
    fn unix_now(&self) -> u64 {
        (crate::topology::WALL_CLOCK + Duration::from_micros(self.now.as_micros())).as_secs()
    }

    /// Whether `peer` holds a client ticket an exit would still take.
    pub(super) fn peer_admitted(&self, peer: &PeerId) -> bool {
        let now = self.unix_now();
        self.admission
            .granted
            .get(peer)
            .is_some_and(|(expires, _)| expires.saturating_add(CLOCK_SKEW.as_secs()) > now)
    }

    /// A ticket some hub granted an honest client (for replays), if any.
    pub(crate) fn honest_ticket(&self) -> Option<(PeerId, Bytes)> {
        self.admission
            .granted
            .iter()
            .filter(|(p, _)| self.by_peer.contains_key(p))
            .max_by_key(|(_, (expires, _))| *expires)
            .map(|(p, (_, t))| (*p, t.clone()))
    }

    /// Unix seconds now (for the adversaries' tickets).
    pub(crate) fn wall_now(&self) -> u64 {
        self.unix_now()
    }

    /// A hub core transmitted `data`: note the tickets it grants.
    pub(super) fn snoop_grant_sent(&mut self, n: NodeIx, data: &[u8]) {
        if n >= self.hubs {
            return;
        }
        let Some(grant) = grant_in(data) else { return };
        let Ok((t, _, _)) = ticket::decode(&grant.ticket) else { return };
        if !t.roles.contains(Role::Client) {
            return;
        }
        let e = self.admission.granted.entry(t.holder).or_insert((0, Bytes::new()));
        if t.expires >= e.0 {
            *e = (t.expires, Bytes::from(grant.ticket));
        }
    }

    /// A chunk arrives at node `n` on `stream`: a client receiving a grant
    /// adds it to its wallet.
    pub(super) fn snoop_grant_received(&mut self, n: NodeIx, stream: u64, chunk: &Chunk) {
        if n < self.hubs + self.exits {
            return;
        }
        let Chunk::Data(p) = chunk else { return };
        let Some(st) = self.streams.get(&stream) else { return };
        if !st.hub {
            return;
        }
        let Some(hub) = st.nodes.iter().flatten().copied().find(|m| *m != n) else { return };
        let Some(grant) = grant_in(&p.materialize()) else { return };
        let now = self.now;
        if !self.holds_ticket(n) {
            self.admission.uncovered.insert(n, now);
        }
        let until = now + Duration::from_secs(u64::from(grant.valid_secs));
        self.admission.wallets.entry(n).or_default().insert(hub, until);
    }

    /// Whether client `n` holds a usable ticket now, as the simulator sees it.
    fn holds_ticket(&self, n: NodeIx) -> bool {
        let now = self.now;
        self.admission.wallets.get(&n).is_some_and(|w| w.values().any(|until| *until > now))
    }

    /// A client refused an app with 0x02 for a destination that is not
    /// denied: excused only while it holds no usable ticket (it failed the
    /// session `NotAdmitted`).
    pub(super) fn not_admitted_excused(&self, client: NodeIx) -> bool {
        let recently =
            self.admission.uncovered.get(&client).is_some_and(|at| {
                self.now.saturating_duration_since(*at) <= Duration::from_millis(10)
            });
        !self.holds_ticket(client) || recently
    }

    /// Node `n` crashed: its wallet is gone.
    pub(super) fn admission_crashed(&mut self, n: NodeIx) {
        self.admission.wallets.remove(&n);
        self.admission.uncovered.insert(n, self.now);
    }

    /// Before node `n` handles `input`: if it is an exit reading a peer's
    /// stream, what it emits next is on that peer's behalf.
    pub(super) fn admission_cause(&mut self, n: NodeIx, input: &Input) -> Option<(NodeIx, PeerId)> {
        let prev = self.admission.cause.take();
        if !(self.hubs..self.hubs + self.exits).contains(&n) {
            return prev;
        }
        if let Input::StreamData { stream, .. } = input {
            self.admission.cause = self.stream_peer(n, *stream).map(|p| (n, p));
        }
        prev
    }

    pub(super) fn admission_cause_restore(&mut self, prev: Option<(NodeIx, PeerId)>) {
        self.admission.cause = prev;
    }

    /// The peer at the other end of node `n`'s stream `sid`.
    fn stream_peer(&self, n: NodeIx, sid: StreamId) -> Option<PeerId> {
        let &(st, side) = self.node_streams.get(&(n, sid))?;
        match self.streams.get(&st)?.owners[1 - side] {
            Owner::Node(m, _) => Some(self.nodes[m as usize].peer),
            Owner::Adversary(c) => self.adv_conn_peer(c),
            _ => None,
        }
    }

    /// An exit emitted `out`: a lookup or a dial must be for an admitted peer.
    pub(super) fn admission_output(&mut self, n: NodeIx, out: &Output) {
        let Some((exit, peer)) = self.admission.cause else { return };
        if exit != n || !matches!(out, Output::Resolve { .. } | Output::ConnectOrigin { .. }) {
            return;
        }
        self.admission.checked_dials += 1;
        if !self.peer_admitted(&peer) {
            let what = match out {
                Output::Resolve { name, .. } => format!("resolved {name}"),
                Output::ConnectOrigin { addr, .. } => format!("dialed {addr}"),
                _ => String::new(),
            };
            let detail = format!("exit n{n} {what} for {peer:?}, which holds no client ticket");
            self.violation(Invariant::Admission, detail);
        }
    }

    /// Sampled every second and at the end of the run (not after every
    /// step: the check walks the hub's whole directory, which would make
    /// each step's cost grow with the network): no peer in its directory
    /// registered under a key that lacks the role it is listed in (agents
    /// are the topology's agents; everyone else registers as an exit). A
    /// wrong listing lasts until its registration expires (tens of
    /// seconds), so a one-second sample sees every one.
    pub(super) fn admission_directory(&mut self, n: NodeIx) {
        if n >= self.hubs {
            return;
        }
        let Some(core) = &self.nodes[n as usize].core else { return };
        let t = &self.s.topology;
        let first_agent = t.hubs + t.exits + t.clients;
        let agents = first_agent..first_agent + t.agents;
        let listed_as = |peer: &PeerId| match self.by_peer.get(peer) {
            Some(n) if agents.contains(n) => Role::Agent,
            _ => Role::Exit,
        };
        let bad: Vec<(PeerId, RoleSet)> = core
            .registrations()
            .into_iter()
            .filter(|(peer, r)| !r.contains(listed_as(peer)))
            .collect();
        for (peer, roles) in bad {
            let detail =
                format!("hub n{n} lists {peer:?}, registered under a key admitting only {roles}");
            self.violation(Invariant::Admission, detail);
        }
    }

    /// Sampled every second: the ticket and registration watches.
    pub(super) fn admission_check(&mut self) {
        let bound = Duration::from_secs(u64::from(self.s.liveness_bound_secs));
        let now = self.now;
        let floods = self.s.adversaries.preauth_floods > 0;
        let first_client = self.hubs + self.exits;
        let clients = first_client..first_client + self.s.topology.clients;
        for h in 0..self.hubs {
            self.admission_directory(h);
        }
        let total = self.nodes.len() as NodeIx;
        for n in self.hubs..total {
            let is_client = clients.contains(&n);
            if !is_client && !floods {
                continue;
            }
            let mut covered_since: Option<Instant> = None;
            for h in 0..self.hubs {
                let up = self.nodes[n as usize].core.is_some()
                    && self.nodes[h as usize].core.is_some()
                    && !self.partitioned(n, h)
                    && !self.partitioned(h, n);
                let gens = [self.nodes[n as usize].generation, self.nodes[h as usize].generation];
                let since = if up {
                    let e = self.admission.reach.entry((n, h)).or_insert((now, gens));
                    if e.1 != gens {
                        *e = (now, gens);
                    }
                    Some(e.0)
                } else {
                    self.admission.reach.remove(&(n, h));
                    None
                };
                if is_client {
                    covered_since = match (covered_since, since) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    continue;
                }
                // An exit up and reachable from an up hub is registered there.
                let peer = self.nodes[n as usize].peer;
                let overdue = since.is_some_and(|s| now.saturating_duration_since(s) > bound);
                if overdue && !self.hub_registered(h, &peer) {
                    if self.admission.reported.insert((n, h)) {
                        let detail = format!(
                            "exit n{n} is not registered at hub n{h}, both up and reachable since {}",
                            since.unwrap_or(now)
                        );
                        self.violation(Invariant::Registration, detail);
                    }
                } else {
                    self.admission.reported.remove(&(n, h));
                }
            }
            if !is_client {
                continue;
            }
            let overdue = covered_since.is_some_and(|s| now.saturating_duration_since(s) > bound);
            if overdue && !self.holds_ticket(n) {
                if self.admission.reported.insert((n, n)) {
                    let detail = format!(
                        "client n{n} holds no usable ticket, though a hub has been up and reachable since {}",
                        covered_since.unwrap_or(now)
                    );
                    self.violation(Invariant::Tickets, detail);
                }
            } else {
                self.admission.reported.remove(&(n, n));
            }
        }
        if self.now + CHECK_EVERY <= self.end {
            self.push(self.now + CHECK_EVERY, Ev::AdmissionCheck);
        }
    }
}

/// The grant in one hub frame (`AuthOk` or `Ticket`), if it is one.
fn grant_in(data: &[u8]) -> Option<TicketGrant> {
    match decode(data) {
        Ok(Decoded::Complete { msg: HubMessage::AuthOk { grant }, .. })
        | Ok(Decoded::Complete { msg: HubMessage::Ticket { grant }, .. }) => Some(grant),
        _ => None,
    }
}
