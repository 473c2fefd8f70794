//! The hub role: admits peers by challenge–response, keeps the directory of
//! exits, hands admitted peers their tickets, and answers `Find` and
//! `Resolve`.
//!
//! One [`HubStream`] per inbound `/meshproxy/hub/1` stream. An exit's
//! registration lives as long as the stream that made it (or until its TTL
//! passes without a heartbeat, which catches partitions where no reset ever
//! arrives).
//!
//! # Strangers get a small budget
//! Before a peer is admitted it may hold at most `max_hub_streams_per_peer`
//! hub streams, must answer within the `auth` deadline, and may send one
//! `Auth` frame (≤ [`wire::AUTH_MAX`] bytes) and nothing else; anything else
//! resets the stream. Unadmitted streams of all peers together share
//! `max_preauth_hub_streams`; when that is full the oldest is displaced, so
//! free identities cannot lock honest peers out by merely holding streams —
//! they would have to open them faster than an honest peer answers.

use crate::admission::{AdmissionKey, Refusal, RoleSet};
use crate::config::HubConfig;
use crate::ctx::{Ctx, Owner, TimerKey};
use crate::directory::Directory;
use crate::ids::{PeerId, StreamId};
use crate::io::{Close, Event, Output};
use crate::peer_counts::PeerCounts;
use crate::record::{PeerFilter, PeerRecord};
use crate::ticket::{Ticket, TicketSigner};
use crate::time::Instant;
use crate::wire::frame::{DecodeError, Decoded};
use crate::wire::hub::{self as wire, HubErrorCode, HubMessage, Role, TicketGrant, HUB_VERSION};
use bytes::Bytes;
use core::time::Duration;
use rand_core::RngCore;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug)]
enum Phase {
    /// Challenge sent; waiting for `Auth` until the deadline. `order` ranks
    /// the stream among the unadmitted ones (oldest is displaced first).
    AwaitAuth { nonce: [u8; 32], order: u64 },
    /// Admitted in this role, with the admission key at this index.
    Admitted { role: Role, key: usize },
}

#[derive(Debug)]
struct HubStream {
    peer: PeerId,
    phase: Phase,
    inbox: Vec<u8>,
}

/// The hub side of `/meshproxy/hub/1`.
#[derive(Debug)]
pub(crate) struct HubRole {
    /// This hub's own identity (named in records of exits its relay reaches,
    /// bound into admission proofs and tickets).
    local: PeerId,
    directory: Directory,
    keys: Vec<AdmissionKey>,
    max_find: usize,
    signer: TicketSigner,
    ticket_lifetime: Duration,
    /// Unix time at `Instant::ZERO`, for tickets' expiry.
    wall_clock: Duration,
    streams: BTreeMap<StreamId, HubStream>,
    /// Unadmitted streams, oldest first.
    preauth: BTreeSet<(u64, StreamId)>,
    next_order: u64,
    /// Hub streams each peer holds, admitted or not.
    per_peer: PeerCounts,
    /// Which stream made each registration (so only its end removes it),
    /// and under which admission key (for the per-key limit).
    registered_by: BTreeMap<PeerId, (StreamId, usize)>,
    /// How many admitted streams each peer holds: a peer stays admitted (for
    /// the driver's relay) until its last one ends, however many it opened.
    admitted: BTreeMap<PeerId, usize>,
    /// Key ids and peers the operator revoked ([`HubRole::revoke`]): refused
    /// admission until a reload changes the keys.
    revoked_keys: BTreeSet<String>,
    revoked_peers: BTreeSet<PeerId>,
}

impl HubRole {
    pub(crate) fn new(local: PeerId, config: HubConfig, wall_clock: Duration) -> HubRole {
        HubRole {
            local,
            directory: Directory::new(config.directory),
            keys: config.keys,
            max_find: config.max_find,
            signer: config.signer,
            ticket_lifetime: config.ticket_lifetime,
            wall_clock,
            streams: BTreeMap::new(),
            preauth: BTreeSet::new(),
            next_order: 0,
            per_peer: PeerCounts::default(),
            registered_by: BTreeMap::new(),
            admitted: BTreeMap::new(),
            revoked_keys: BTreeSet::new(),
            revoked_peers: BTreeSet::new(),
        }
    }

    #[cfg(debug_assertions)] // only the owner table's check asks
    pub(crate) fn owns(&self, stream: StreamId) -> bool {
        self.streams.contains_key(&stream)
    }

    pub(crate) fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Unadmitted streams held now.
    pub(crate) fn preauth_count(&self) -> usize {
        self.preauth.len()
    }

    /// The most hub streams any one peer holds.
    pub(crate) fn busiest_peer_streams(&self) -> usize {
        self.per_peer.busiest()
    }

    /// Peers admitted now: those holding at least one admitted hub stream
    /// (each counted once, however many streams it holds).
    pub(crate) fn admitted_peers(&self) -> usize {
        self.admitted.len()
    }

    pub(crate) fn directory_len(&self) -> usize {
        self.directory.len()
    }

    pub(crate) fn directory_len_of(&self, role: Role) -> usize {
        self.directory.len_of(role)
    }

    /// Whether `peer` is registered (for the simulator's liveness check).
    pub(crate) fn is_registered(&self, peer: &PeerId) -> bool {
        self.directory.contains(*peer)
    }

    /// The admission key each registered exit registered under.
    pub(crate) fn registrations(&self) -> impl Iterator<Item = (PeerId, &AdmissionKey)> + '_ {
        self.registered_by.iter().filter_map(|(peer, (_, key))| Some((*peer, self.keys.get(*key)?)))
    }

    /// A peer opened a hub stream: challenge it, if its budget allows.
    pub(crate) fn on_inbound(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        stream: StreamId,
        peer: PeerId,
    ) {
        let held = self.per_peer.get(&peer);
        let refusal = if held >= ctx.limits.max_hub_streams_per_peer {
            Some(Refusal::PeerStreamLimit)
        } else if self.streams.len() >= ctx.limits.max_hub_streams {
            Some(Refusal::HubFull)
        } else {
            None
        };
        if let Some(reason) = refusal {
            ctx.event(Event::AdmissionDenied { peer, reason });
            ctx.emit(Output::Close { stream, how: Close::Reset });
            return;
        }
        if self.preauth.len() >= ctx.limits.max_preauth_hub_streams.max(1) {
            if let Some(&(_, oldest)) = self.preauth.first() {
                self.refuse(ctx, oldest, Refusal::Displaced);
            }
        }
        let mut nonce = [0u8; 32];
        ctx.secret_rng.fill_bytes(&mut nonce);
        send(ctx, stream, &HubMessage::Challenge { version: HUB_VERSION, nonce });
        ctx.timers.set(TimerKey::HubPeer(stream), now + ctx.timeouts.auth);
        let order = self.next_order;
        self.next_order += 1;
        self.preauth.insert((order, stream));
        self.per_peer.add(peer);
        let phase = Phase::AwaitAuth { nonce, order };
        self.streams.insert(stream, HubStream { peer, phase, inbox: Vec::new() });
        ctx.adopt(stream, Owner::Hub);
    }

    pub(crate) fn on_data(&mut self, ctx: &mut Ctx, now: Instant, stream: StreamId, data: &[u8]) {
        let Some(s) = self.streams.get_mut(&stream) else { return };
        s.inbox.extend_from_slice(data);
        loop {
            let Some(s) = self.streams.get_mut(&stream) else { return };
            let admitted = matches!(s.phase, Phase::Admitted { .. });
            let decoded = if admitted {
                wire::decode_from_peer(&s.inbox)
            } else {
                wire::decode_auth(&s.inbox)
            };
            match decoded {
                Ok(Decoded::Incomplete) => return,
                Ok(Decoded::Complete { msg, consumed: used }) => {
                    s.inbox.drain(..used);
                    if !self.on_message(ctx, now, stream, msg) {
                        return;
                    }
                }
                Err(DecodeError::UnsupportedVersion(_)) if !admitted => {
                    // A peer of another version gets a clean answer it can log.
                    let peer = s.peer;
                    ctx.event(Event::AdmissionDenied { peer, reason: Refusal::NotAuth });
                    self.fail(ctx, stream, HubErrorCode::UnsupportedVersion, "unsupported version");
                    return;
                }
                Err(_) if !admitted => {
                    self.refuse(ctx, stream, Refusal::NotAuth);
                    return;
                }
                Err(_) => {
                    let peer = s.peer;
                    ctx.event(Event::PeerProtocolError { peer });
                    self.fail(ctx, stream, HubErrorCode::Malformed, "undecodable hub message");
                    return;
                }
            }
        }
    }

    /// Handles one message; false if the stream was closed.
    fn on_message(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        stream: StreamId,
        msg: HubMessage,
    ) -> bool {
        let Some(s) = self.streams.get_mut(&stream) else { return false };
        let peer = s.peer;
        match (&s.phase, msg) {
            (&Phase::AwaitAuth { nonce, order }, HubMessage::Auth { role, key_id, proof, .. }) => {
                let found = self.keys.iter().enumerate().find(|(_, k)| k.key_id == key_id);
                let checked = match found {
                    None => Err(Refusal::UnknownKey),
                    Some((i, key)) => {
                        key.check(&nonce, &self.local, &peer, role, &proof).and_then(|()| {
                            // Checked after the proof: a stranger learns nothing of revocations.
                            let revoked = self.revoked_keys.contains(&key.key_id)
                                || self.revoked_peers.contains(&peer);
                            if revoked {
                                Err(Refusal::Revoked)
                            } else {
                                Ok(i)
                            }
                        })
                    }
                };
                let key = match checked {
                    Ok(key) => key,
                    Err(reason) => {
                        ctx.event(Event::AdmissionDenied { peer, reason });
                        let (code, message) = match reason {
                            Refusal::RoleNotAllowed => {
                                (HubErrorCode::Forbidden, "key does not admit this role")
                            }
                            Refusal::PeerNotAllowed => {
                                (HubErrorCode::Forbidden, "key is pinned to another peer")
                            }
                            Refusal::Revoked => (HubErrorCode::Forbidden, "admission revoked"),
                            // Unknown key and bad proof look the same from outside.
                            _ => (HubErrorCode::BadProof, "authentication failed"),
                        };
                        self.fail(ctx, stream, code, message);
                        return false;
                    }
                };
                s.phase = Phase::Admitted { role, key };
                self.preauth.remove(&(order, stream));
                ctx.timers.cancel(TimerKey::HubPeer(stream));
                // The relay learns of the admission before the peer does, so
                // a reservation it asks for right after `AuthOk` is served.
                let held = self.admitted.entry(peer).or_insert(0);
                *held += 1;
                if *held == 1 {
                    ctx.emit(Output::Admit { peer });
                    ctx.event(Event::PeerAdmitted { peer });
                }
                let grant = self.grant(now, peer, key);
                send(ctx, stream, &HubMessage::AuthOk { grant });
                true
            }
            (Phase::AwaitAuth { .. }, _) => {
                self.refuse(ctx, stream, Refusal::NotAuth);
                false
            }
            (
                &Phase::Admitted { role, key },
                HubMessage::Register { role: listed, addrs, attrs, capacity, relayed },
            ) => {
                // A peer is listed only as what its key admitted it as.
                if listed != role {
                    let message = match listed {
                        Role::Exit => "not admitted as an exit",
                        Role::Agent => "not admitted as an agent",
                        Role::Client | Role::Gateway => "this role is not listed",
                    };
                    ctx.event(Event::AdmissionDenied { peer, reason: Refusal::RoleNotAllowed });
                    self.fail(ctx, stream, HubErrorCode::Forbidden, message);
                    return false;
                }
                let renewal = self.registered_by.contains_key(&peer);
                let under_key = self.registered_by.values().filter(|(_, k)| *k == key).count();
                let max = self
                    .keys
                    .get(key)
                    .and_then(|k| k.max_registrations)
                    .unwrap_or(ctx.limits.max_registrations_per_key);
                if !renewal && under_key >= max {
                    let message = "too many registrations under this key";
                    self.fail(ctx, stream, HubErrorCode::RateLimited, message);
                    return false;
                }
                let relays = if relayed { vec![self.local] } else { Vec::new() };
                let record =
                    crate::record::PeerRecord { peer, role, addrs, attrs, capacity, relays };
                match self.directory.register(now, record) {
                    Ok(ttl) => {
                        self.registered_by.insert(peer, (stream, key));
                        ctx.event(Event::DirectoryRegistered { peer });
                        let ttl_secs = u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX);
                        send(ctx, stream, &HubMessage::Registered { ttl_secs });
                        self.arm_expiry(ctx);
                        true
                    }
                    Err(_) => {
                        self.fail(ctx, stream, HubErrorCode::DirectoryFull, "directory full");
                        false
                    }
                }
            }
            (&Phase::Admitted { role, .. }, HubMessage::Heartbeat { load }) if role.is_listed() => {
                match self.directory.heartbeat(now, peer, load) {
                    Ok(ttl) => {
                        let ttl_secs = u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX);
                        send(ctx, stream, &HubMessage::HeartbeatAck { ttl_secs });
                        self.arm_expiry(ctx);
                    }
                    Err(_) => send(
                        ctx,
                        stream,
                        &HubMessage::Error {
                            code: HubErrorCode::NotRegistered,
                            message: "not registered".into(),
                        },
                    ),
                }
                true
            }
            (&Phase::Admitted { key, .. }, HubMessage::RenewTicket) => {
                let grant = self.grant(now, peer, key);
                send(ctx, stream, &HubMessage::Ticket { grant });
                true
            }
            (Phase::Admitted { .. }, HubMessage::Find { role: wanted, filter, limit }) => {
                let limit = usize::from(limit).min(self.max_find).min(wire::MAX_PEERS);
                let peers = self.directory.find(wanted, &filter, limit);
                send(ctx, stream, &HubMessage::Peers { peers });
                true
            }
            (Phase::Admitted { .. }, HubMessage::Resolve { peer: wanted }) => {
                let record = self.directory.resolve(wanted).cloned();
                send(ctx, stream, &HubMessage::Resolved { peer: wanted, record });
                true
            }
            (Phase::Admitted { .. }, _) => {
                ctx.event(Event::PeerProtocolError { peer });
                self.fail(ctx, stream, HubErrorCode::Malformed, "unexpected message");
                false
            }
        }
    }

    /// A fresh ticket for `peer`, admitted under the key at index `key` (the
    /// ticket names every role the key admits, so a node that is both exit
    /// and client uses one), valid for the configured lifetime from `now`.
    fn grant(&self, now: Instant, peer: PeerId, key: usize) -> TicketGrant {
        let unix_now = (self.wall_clock + Duration::from_micros(now.as_micros())).as_secs();
        let ticket = Ticket {
            hub: self.local,
            holder: peer,
            roles: self.keys.get(key).map_or(RoleSet::NONE, |k| k.roles),
            expires: unix_now.saturating_add(self.ticket_lifetime.as_secs()),
        };
        let valid_secs = u32::try_from(self.ticket_lifetime.as_secs()).unwrap_or(u32::MAX);
        TicketGrant { valid_secs, ticket: self.signer.sign(&ticket) }
    }

    /// A hub that is also a gateway lists agents from its own directory and
    /// admits itself: every agent registered here, and a ticket with the
    /// gateway role that this hub signs for this node (the agents trust its
    /// key like any of their hubs'), lasting until the returned instant.
    pub(crate) fn serve_own_gateway(&mut self, now: Instant) -> (Vec<PeerRecord>, Bytes, Instant) {
        let agents = self.directory_len_of(Role::Agent);
        let records = self.directory.find(Role::Agent, &PeerFilter::default(), agents);
        let unix_now = (self.wall_clock + Duration::from_micros(now.as_micros())).as_secs();
        let ticket = Ticket {
            hub: self.local,
            holder: self.local,
            roles: RoleSet::of(Role::Gateway),
            expires: unix_now.saturating_add(self.ticket_lifetime.as_secs()),
        };
        (records, Bytes::from(self.signer.sign(&ticket)), now + self.ticket_lifetime)
    }

    /// A reload's admission keys. A peer admitted under a key that is
    /// still there unchanged (same id, verifier, roles and pin) stays
    /// admitted; every other admitted stream ends (with its registration
    /// and, once the peer holds no other, its relay admission). A change to
    /// the keys also lifts the operator's revocations: the config is the
    /// truth again. Returns the admitted streams ended.
    pub(crate) fn set_keys(&mut self, ctx: &mut Ctx, keys: Vec<AdmissionKey>) -> usize {
        if keys == self.keys {
            return 0;
        }
        let old = core::mem::replace(&mut self.keys, keys);
        self.revoked_keys.clear();
        self.revoked_peers.clear();
        let same = |a: &AdmissionKey, b: &AdmissionKey| {
            a.key_id == b.key_id
                && a.verifier == b.verifier
                && a.roles == b.roles
                && a.peer == b.peer
        };
        let new_index = |keys: &[AdmissionKey], i: usize| {
            let was = old.get(i)?;
            keys.iter().position(|k| same(k, was))
        };
        let mut ended = Vec::new();
        for (stream, s) in &mut self.streams {
            if let Phase::Admitted { key, .. } = &mut s.phase {
                match new_index(&self.keys, *key) {
                    Some(i) => *key = i,
                    None => ended.push(*stream),
                }
            }
        }
        for (_, key) in self.registered_by.values_mut() {
            // An unmatched one ends with its stream below.
            if let Some(i) = new_index(&self.keys, *key) {
                *key = i;
            }
        }
        for stream in &ended {
            self.fail(ctx, *stream, HubErrorCode::Forbidden, "admission revoked");
        }
        ended.len()
    }

    /// The operator revokes a key id or a peer: its admitted streams end
    /// (registrations and relay admission with them) and it is refused
    /// admission until a reload changes the keys. Returns the streams ended.
    pub(crate) fn revoke(&mut self, ctx: &mut Ctx, what: &crate::io::Revocation) -> usize {
        use crate::io::Revocation;
        match what {
            Revocation::Key(id) => self.revoked_keys.insert(id.clone()),
            Revocation::Peer(peer) => self.revoked_peers.insert(*peer),
        };
        let hit = |s: &HubStream| match (&s.phase, what) {
            (Phase::Admitted { .. }, Revocation::Peer(peer)) => s.peer == *peer,
            (Phase::Admitted { key, .. }, Revocation::Key(id)) => {
                self.keys.get(*key).is_some_and(|k| k.key_id == *id)
            }
            (Phase::AwaitAuth { .. }, _) => false,
        };
        let ended: Vec<StreamId> =
            self.streams.iter().filter(|(_, s)| hit(s)).map(|(id, _)| *id).collect();
        for stream in &ended {
            self.fail(ctx, *stream, HubErrorCode::Forbidden, "admission revoked");
        }
        ended.len()
    }

    /// Answers with an error and ends the stream.
    fn fail(&mut self, ctx: &mut Ctx, stream: StreamId, code: HubErrorCode, message: &str) {
        send(ctx, stream, &HubMessage::Error { code, message: message.into() });
        ctx.emit(Output::Close { stream, how: Close::Fin });
        self.forget(ctx, stream);
    }

    /// Resets a stream that spent its budget, counting why.
    fn refuse(&mut self, ctx: &mut Ctx, stream: StreamId, reason: Refusal) {
        let Some(s) = self.streams.get(&stream) else { return };
        ctx.event(Event::AdmissionDenied { peer: s.peer, reason });
        ctx.emit(Output::Close { stream, how: Close::Reset });
        self.forget(ctx, stream);
    }

    /// The stream ended from the far side.
    pub(crate) fn on_closed(&mut self, ctx: &mut Ctx, stream: StreamId, how: Close) {
        if how == Close::Fin {
            ctx.emit(Output::Close { stream, how: Close::Fin });
        }
        self.forget(ctx, stream);
    }

    fn forget(&mut self, ctx: &mut Ctx, stream: StreamId) {
        let Some(s) = self.streams.remove(&stream) else { return };
        ctx.release(stream);
        ctx.timers.cancel(TimerKey::HubPeer(stream));
        self.per_peer.remove(&s.peer);
        if self.registered_by.get(&s.peer).is_some_and(|(by, _)| *by == stream) {
            self.registered_by.remove(&s.peer);
            if self.directory.remove(s.peer) {
                ctx.event(Event::DirectoryRemoved { peer: s.peer });
            }
        }
        match s.phase {
            Phase::AwaitAuth { order, .. } => {
                self.preauth.remove(&(order, stream));
            }
            Phase::Admitted { .. } => {
                if let Some(held) = self.admitted.get_mut(&s.peer) {
                    *held = held.saturating_sub(1);
                    if *held == 0 {
                        self.admitted.remove(&s.peer);
                        ctx.emit(Output::Revoke { peer: s.peer });
                        ctx.event(Event::AdmissionEnded { peer: s.peer });
                    }
                }
            }
        }
    }

    pub(crate) fn on_auth_deadline(&mut self, ctx: &mut Ctx, stream: StreamId) {
        self.refuse(ctx, stream, Refusal::AuthTimeout);
    }

    pub(crate) fn on_expiry(&mut self, ctx: &mut Ctx, now: Instant) {
        for peer in self.directory.expire(now) {
            self.registered_by.remove(&peer);
            ctx.event(Event::DirectoryRemoved { peer });
        }
        self.arm_expiry(ctx);
    }

    fn arm_expiry(&mut self, ctx: &mut Ctx) {
        match self.directory.next_expiry() {
            Some(at) => ctx.timers.set(TimerKey::DirectoryExpiry, at),
            None => ctx.timers.cancel(TimerKey::DirectoryExpiry),
        }
    }
}

pub(crate) fn send(ctx: &mut Ctx, stream: StreamId, msg: &HubMessage) {
    let mut buf = Vec::new();
    wire::encode(msg, &mut buf);
    ctx.emit(Output::Transmit { stream, data: Bytes::from(buf) });
}
