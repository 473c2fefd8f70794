//! The hub role: admits peers by challenge–response, keeps the directory of
//! exits, and answers `Find` and `Resolve`.
//!
//! One [`HubStream`] per inbound `/meshproxy/hub/1` stream. An exit's
//! registration lives as long as the stream that made it (or until its TTL
//! passes without a heartbeat, which catches partitions where no reset ever
//! arrives).

use crate::config::{HubConfig, Timeouts};
use crate::ctx::{Ctx, TimerKey};
use crate::directory::Directory;
use crate::ids::{PeerId, StreamId};
use crate::io::{Close, Event, Output};
use crate::time::Instant;
use crate::wire::frame::Decoded;
use crate::wire::hub::{self as wire, HubErrorCode, HubMessage, Role, HUB_VERSION};
use bytes::Bytes;
use rand_core::RngCore;
use std::collections::BTreeMap;

#[derive(Debug)]
enum Phase {
    /// Challenge sent; waiting for `Auth` until the deadline.
    AwaitAuth { nonce: [u8; 32] },
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
    /// This hub's own identity (named in records of exits its relay reaches).
    local: PeerId,
    config: HubConfig,
    directory: Directory,
    streams: BTreeMap<StreamId, HubStream>,
    /// Which stream made each registration (so only its end removes it),
    /// and under which admission key (for the per-key limit).
    registered_by: BTreeMap<PeerId, (StreamId, usize)>,
    /// Most directory entries one admission key may hold.
    max_per_key: usize,
    /// How many admitted streams each peer holds: a peer stays admitted (for
    /// the driver's relay) until its last one ends, however many it opened.
    admitted: BTreeMap<PeerId, usize>,
}

impl HubRole {
    pub(crate) fn new(local: PeerId, config: HubConfig, max_per_key: usize) -> HubRole {
        let directory = Directory::new(config.directory);
        HubRole {
            local,
            config,
            directory,
            streams: BTreeMap::new(),
            registered_by: BTreeMap::new(),
            max_per_key,
            admitted: BTreeMap::new(),
        }
    }

    pub(crate) fn owns(&self, stream: StreamId) -> bool {
        self.streams.contains_key(&stream)
    }

    pub(crate) fn stream_count(&self) -> usize {
        self.streams.len()
    }

    pub(crate) fn directory_len(&self) -> usize {
        self.directory.len()
    }

    /// Whether `peer` is registered (for the simulator's liveness check).
    pub(crate) fn is_registered(&self, peer: &PeerId) -> bool {
        self.directory.contains(*peer)
    }

    /// A peer opened a hub stream: challenge it.
    pub(crate) fn on_inbound(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        t: &Timeouts,
        max_streams: usize,
        stream: StreamId,
        peer: PeerId,
    ) {
        if self.streams.len() >= max_streams {
            ctx.emit(Output::Close { stream, how: Close::Reset });
            return;
        }
        let mut nonce = [0u8; 32];
        ctx.rng.fill_bytes(&mut nonce);
        send(ctx, stream, &HubMessage::Challenge { version: HUB_VERSION, nonce });
        ctx.timers.set(TimerKey::HubPeer(stream), now + t.request);
        self.streams.insert(
            stream,
            HubStream { peer, phase: Phase::AwaitAuth { nonce }, inbox: Vec::new() },
        );
    }

    pub(crate) fn on_data(&mut self, ctx: &mut Ctx, now: Instant, stream: StreamId, data: &[u8]) {
        let Some(s) = self.streams.get_mut(&stream) else { return };
        s.inbox.extend_from_slice(data);
        loop {
            let Some(s) = self.streams.get_mut(&stream) else { return };
            match wire::decode(&s.inbox) {
                Ok(Decoded::Incomplete) => return,
                Ok(Decoded::Complete { msg, consumed: used }) => {
                    s.inbox.drain(..used);
                    if !self.on_message(ctx, now, stream, msg) {
                        return;
                    }
                }
                Err(err) => {
                    let peer = s.peer;
                    let code = match err {
                        crate::wire::frame::DecodeError::UnsupportedVersion(_) => {
                            HubErrorCode::UnsupportedVersion
                        }
                        _ => HubErrorCode::Malformed,
                    };
                    ctx.event(Event::PeerProtocolError { peer });
                    self.fail(ctx, stream, code, "undecodable hub message");
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
            (Phase::AwaitAuth { nonce }, HubMessage::Auth { version, role, key_id, proof }) => {
                if version != HUB_VERSION {
                    self.fail(ctx, stream, HubErrorCode::UnsupportedVersion, "unsupported version");
                    return false;
                }
                let found = self.config.keys.iter().enumerate().find(|(_, k)| k.key_id == key_id);
                let Some((key_index, key)) = found else {
                    ctx.event(Event::AdmissionDenied { peer });
                    self.fail(ctx, stream, HubErrorCode::UnknownKey, "unknown key id");
                    return false;
                };
                if !key.verify(nonce, &peer, role, &proof) {
                    ctx.event(Event::AdmissionDenied { peer });
                    self.fail(ctx, stream, HubErrorCode::BadProof, "bad proof");
                    return false;
                }
                s.phase = Phase::Admitted { role, key: key_index };
                ctx.timers.cancel(TimerKey::HubPeer(stream));
                send(ctx, stream, &HubMessage::AuthOk);
                let held = self.admitted.entry(peer).or_insert(0);
                *held += 1;
                if *held == 1 {
                    ctx.event(Event::PeerAdmitted { peer });
                }
                true
            }
            (Phase::AwaitAuth { .. }, _) => {
                self.fail(ctx, stream, HubErrorCode::Malformed, "expected Auth");
                false
            }
            (
                &Phase::Admitted { role: Role::Exit, key },
                HubMessage::Register { addrs, attrs, capacity, relayed },
            ) => {
                let renewal = self.registered_by.contains_key(&peer);
                let under_key = self.registered_by.values().filter(|(_, k)| *k == key).count();
                if !renewal && under_key >= self.max_per_key {
                    let message = "too many registrations under this key";
                    self.fail(ctx, stream, HubErrorCode::RateLimited, message);
                    return false;
                }
                let relays = if relayed { vec![self.local] } else { Vec::new() };
                let record = crate::record::PeerRecord { peer, addrs, attrs, capacity, relays };
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
            (Phase::Admitted { role: Role::Exit, .. }, HubMessage::Heartbeat { load }) => {
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
            (Phase::Admitted { .. }, HubMessage::Find { filter, limit }) => {
                let limit = usize::from(limit).min(self.config.max_find).min(wire::MAX_PEERS);
                let peers = self.directory.find(&filter, limit);
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

    /// Answers with an error and ends the stream.
    fn fail(&mut self, ctx: &mut Ctx, stream: StreamId, code: HubErrorCode, message: &str) {
        send(ctx, stream, &HubMessage::Error { code, message: message.into() });
        ctx.emit(Output::Close { stream, how: Close::Fin });
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
        ctx.timers.cancel(TimerKey::HubPeer(stream));
        if self.registered_by.get(&s.peer).is_some_and(|(by, _)| *by == stream) {
            self.registered_by.remove(&s.peer);
            if self.directory.remove(s.peer) {
                ctx.event(Event::DirectoryRemoved { peer: s.peer });
            }
        }
        if matches!(s.phase, Phase::Admitted { .. }) {
            if let Some(held) = self.admitted.get_mut(&s.peer) {
                *held = held.saturating_sub(1);
                if *held == 0 {
                    self.admitted.remove(&s.peer);
                    ctx.event(Event::AdmissionEnded { peer: s.peer });
                }
            }
        }
    }

    pub(crate) fn on_auth_deadline(&mut self, ctx: &mut Ctx, stream: StreamId) {
        if let Some(s) = self.streams.get(&stream) {
            ctx.event(Event::PeerProtocolError { peer: s.peer });
            ctx.emit(Output::Close { stream, how: Close::Reset });
            self.forget(ctx, stream);
        }
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
