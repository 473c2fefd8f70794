//! What the attacked nodes send back, and how the adversaries react: exits'
//! answers on proxy streams (only failures may come), hubs' messages played
//! against each adversary's script, and the node ending a connection.

use super::{hub_frame, AdvEv, Kind, PROMPT, SLACK};
use crate::bytes_model::{Chunk, Payload};
use crate::plan::between;
use crate::topology::{leaked, leaked_client, LEAKED_CLIENT_KEY, LEAKED_KEY};
use crate::world::Invariant;
use crate::world::World;
use bytes::Bytes;
use meshproxy_core::ids::PeerId;
use meshproxy_core::io::Protocol;
use meshproxy_core::record::{Attrs, PeerAddr};
use meshproxy_core::target::Status;
use meshproxy_core::wire::frame::Decoded;
use meshproxy_core::wire::hub::{self as hubwire, HubErrorCode, HubMessage, Role, HUB_VERSION};
use meshproxy_core::wire::proxy as proxywire;
use std::time::Duration;

impl World<'_> {
    /// Bytes or an end arrived for adversary connection `c`.
    pub(crate) fn adv_chunk(&mut self, c: u32, chunk: Chunk) {
        let Some(conn) = self.adv.conns.get_mut(c as usize) else { return };
        if conn.ended.is_some() {
            return;
        }
        match chunk {
            Chunk::Data(p) => {
                if conn.inbox.len() < 1 << 20 {
                    conn.inbox.extend_from_slice(&p.materialize());
                }
                if let Some(stream) = conn.stream {
                    let hub_stream = matches!(
                        conn.kind,
                        Kind::Oversized { hub: true }
                            | Kind::WrongVersion { hub: true, wrong_protocol: false }
                            | Kind::Abandoned { hub: true, .. }
                            | Kind::Register { .. }
                            | Kind::Replay { .. }
                            | Kind::Escalate { .. }
                            | Kind::Preauth { .. }
                    );
                    if hub_stream {
                        self.adv_hub_data(c, stream);
                    } else if !matches!(
                        conn.kind,
                        Kind::Slowloris { .. }
                            | Kind::HalfOpen { .. }
                            | Kind::Garbage
                            | Kind::Flood { .. }
                    ) {
                        self.adv_proxy_data(c);
                    }
                }
            }
            Chunk::Fin | Chunk::Reset => {
                let reset = chunk == Chunk::Reset;
                if conn.kind == (Kind::Oversized { hub: true }) && !reset {
                    let node = conn.node;
                    let detail = format!(
                        "hub n{node} closed a pre-auth oversized frame's stream, not reset"
                    );
                    self.violation(Invariant::Adversary, detail);
                }
                let Some(conn) = self.adv.conns.get_mut(c as usize) else { return };
                conn.ended = Some((self.now, reset));
                let stream = conn.stream;
                if !reset {
                    self.adv_fin(c);
                }
                if let Some(stream) = stream {
                    self.adv_release(stream);
                }
                self.adv_ended(c);
            }
        }
    }

    /// An exit answered on a proxy stream: only a failure may come.
    fn adv_proxy_data(&mut self, c: u32) {
        let conn = &self.adv.conns[c as usize];
        if let Ok(Decoded::Complete { msg, .. }) = proxywire::decode_response(&conn.inbox) {
            // A stranger without a ticket is refused as not allowed; a frame
            // that does not decode is a general failure, ticket or not.
            let expected = match conn.kind {
                Kind::Ticketless { .. } => Some(Status::NotAllowed),
                Kind::Oversized { hub: false } | Kind::WrongVersion { hub: false, .. } => {
                    Some(Status::GeneralFailure)
                }
                _ => None,
            };
            if msg.status == Status::Succeeded || expected.is_some_and(|e| e != msg.status) {
                let detail = format!(
                    "exit n{} answered {:?} a hostile {:?} stream with {:?} (expected {})",
                    conn.node,
                    conn.peer,
                    conn.kind,
                    msg.status,
                    expected.map_or("a failure".to_string(), |e| format!("{e:?}"))
                );
                self.violation(Invariant::Adversary, detail);
            }
        }
    }

    /// A hub sent something: play the script on it.
    fn adv_hub_data(&mut self, c: u32, stream: u64) {
        loop {
            let conn = &mut self.adv.conns[c as usize];
            let msg = match hubwire::decode(&conn.inbox) {
                Ok(Decoded::Complete { msg, consumed }) => {
                    conn.inbox.drain(..consumed);
                    msg
                }
                Ok(Decoded::Incomplete) => return,
                Err(e) => {
                    let detail = format!(
                        "hub n{} sent undecodable bytes to {:?}: {e}",
                        conn.node, conn.kind
                    );
                    self.violation(Invariant::Adversary, detail);
                    return;
                }
            };
            conn.hub_msgs.push(msg.clone());
            let (kind, peer, node) =
                (conn.kind, conn.peer.unwrap_or(PeerId::from_u64(0)), conn.node);
            let hub = self.peer_of(node);
            let reply: Option<Vec<u8>> = match (kind, &msg) {
                (Kind::Oversized { .. }, HubMessage::Challenge { .. }) => {
                    self.expect_end(c, PROMPT);
                    Some(vec![0x7f, 0xff, 0xff, 0xff, 0x02])
                }
                (Kind::WrongVersion { .. }, HubMessage::Challenge { nonce, .. }) => {
                    self.expect_end(c, PROMPT);
                    let proof = leaked().prove(nonce, &hub, &peer, Role::Exit);
                    Some(hub_frame(&HubMessage::Auth {
                        version: HUB_VERSION + 1,
                        role: Role::Exit,
                        key_id: LEAKED_KEY.into(),
                        proof,
                    }))
                }
                (Kind::Abandoned { partial: true, .. }, HubMessage::Challenge { nonce, .. }) => {
                    let proof = leaked().prove(nonce, &hub, &peer, Role::Exit);
                    let mut f = hub_frame(&HubMessage::Auth {
                        version: HUB_VERSION,
                        role: Role::Exit,
                        key_id: LEAKED_KEY.into(),
                        proof,
                    });
                    f.truncate(f.len() / 2);
                    Some(f)
                }
                (Kind::Register { .. }, HubMessage::Challenge { nonce, .. }) => {
                    let proof = leaked().prove(nonce, &hub, &peer, Role::Exit);
                    Some(hub_frame(&HubMessage::Auth {
                        version: HUB_VERSION,
                        role: Role::Exit,
                        key_id: LEAKED_KEY.into(),
                        proof,
                    }))
                }
                (Kind::Register { .. }, HubMessage::AuthOk { .. }) => {
                    Some(hub_frame(&HubMessage::Register {
                        role: Role::Exit,
                        addrs: vec![PeerAddr(vec![250])],
                        attrs: Attrs::default(),
                        capacity: 1,
                        relayed: false,
                    }))
                }
                (Kind::Register { .. }, HubMessage::Registered { .. }) => {
                    self.check_registrations(c);
                    None
                }
                (Kind::Register { .. }, HubMessage::Error { code, .. }) => {
                    if *code != HubErrorCode::RateLimited {
                        let detail = format!(
                            "hub n{} refused a flood registration with {code:?}, not RateLimited",
                            self.adv.conns[c as usize].node
                        );
                        self.violation(Invariant::Adversary, detail);
                    }
                    self.expect_end(c, PROMPT);
                    None
                }
                (Kind::Replay { first: true, pair }, HubMessage::Challenge { nonce, .. }) => {
                    let proof = leaked().prove(nonce, &hub, &peer, Role::Exit);
                    let f = hub_frame(&HubMessage::Auth {
                        version: HUB_VERSION,
                        role: Role::Exit,
                        key_id: LEAKED_KEY.into(),
                        proof,
                    });
                    self.adv.captured[pair as usize] = Some(f.clone());
                    Some(f)
                }
                (Kind::Replay { first: true, pair }, HubMessage::AuthOk { .. }) => {
                    // Captured: replay it on a second stream of the same peer.
                    let node = self.adv.conns[c as usize].node;
                    let c2 = self.adv_conn(Kind::Replay { first: false, pair }, node, Some(peer));
                    if let Some(s2) = self.adv_peer_stream(node, peer, Protocol::Hub, c2) {
                        self.adv.conns[c2 as usize].stream = Some(s2);
                        let request = self.timeouts_of(node).request;
                        self.expect_end(c2, request + SLACK);
                    }
                    None
                }
                (Kind::Replay { first: false, pair }, HubMessage::Challenge { .. }) => {
                    self.expect_end(c, PROMPT);
                    self.adv.captured[pair as usize].clone()
                }
                (Kind::Replay { first: false, pair }, HubMessage::Error { code, .. }) => {
                    if *code != HubErrorCode::BadProof {
                        let detail = format!(
                            "hub n{} refused a replayed Auth with {code:?}, not BadProof",
                            self.adv.conns[c as usize].node
                        );
                        self.violation(Invariant::Adversary, detail);
                    }
                    // The capturing stream has served its purpose.
                    let first = self
                        .adv
                        .conns
                        .iter()
                        .position(|x| x.kind == Kind::Replay { first: true, pair });
                    if let Some(f) = first {
                        self.adv_let_go(f as u32);
                    }
                    None
                }
                (Kind::Replay { first: false, .. }, HubMessage::AuthOk { .. }) => {
                    let detail = format!(
                        "hub n{} admitted a replayed Auth",
                        self.adv.conns[c as usize].node
                    );
                    self.violation(Invariant::Adversary, detail);
                    None
                }
                (Kind::Escalate { register }, HubMessage::Challenge { nonce, .. }) => {
                    // Asks for the exit role, or the client role and then registers.
                    let role = if register { Role::Client } else { Role::Exit };
                    if !register {
                        self.expect_end(c, PROMPT);
                    }
                    let proof = leaked_client().prove(nonce, &hub, &peer, role);
                    Some(hub_frame(&HubMessage::Auth {
                        version: HUB_VERSION,
                        role,
                        key_id: LEAKED_CLIENT_KEY.into(),
                        proof,
                    }))
                }
                (Kind::Escalate { register: true }, HubMessage::AuthOk { .. }) => {
                    self.expect_end(c, PROMPT);
                    Some(hub_frame(&HubMessage::Register {
                        role: Role::Exit,
                        addrs: vec![PeerAddr(vec![251])],
                        attrs: Attrs::default(),
                        capacity: 1,
                        relayed: false,
                    }))
                }
                (Kind::Escalate { register }, HubMessage::Error { code, .. }) => {
                    if *code != HubErrorCode::Forbidden {
                        let detail = format!(
                            "hub n{node} refused a client key's {} with {code:?}, not Forbidden",
                            if register { "Register" } else { "exit Auth" }
                        );
                        self.violation(Invariant::Adversary, detail);
                    }
                    self.check_not_listed(c);
                    None
                }
                (Kind::Escalate { register: false }, HubMessage::AuthOk { .. })
                | (Kind::Escalate { register: true }, HubMessage::Registered { .. }) => {
                    let detail = format!(
                        "hub n{node} let {peer:?}, holding a client-role key, act as an exit: {msg:?}"
                    );
                    self.violation(Invariant::Admission, detail);
                    self.check_not_listed(c);
                    None
                }
                (Kind::Preauth { .. }, HubMessage::AuthOk { .. }) => {
                    let detail = format!("hub n{node} admitted {peer:?}, which never sent Auth");
                    self.violation(Invariant::Adversary, detail);
                    None
                }
                (Kind::Oversized { .. }, HubMessage::Error { code, .. }) => {
                    // Before admission a hub reads one `Auth` and resets
                    // anything else: no answer to log, no work done.
                    let detail = format!(
                        "hub n{} answered a pre-auth oversized frame with {code:?}, not a reset",
                        self.adv.conns[c as usize].node
                    );
                    self.violation(Invariant::Adversary, detail);
                    None
                }
                (Kind::WrongVersion { .. }, HubMessage::Error { code, .. })
                    if *code != HubErrorCode::UnsupportedVersion =>
                {
                    let detail = format!(
                        "hub n{} answered an Auth of version {} with {code:?}",
                        self.adv.conns[c as usize].node,
                        HUB_VERSION + 1
                    );
                    self.violation(Invariant::Adversary, detail);
                    None
                }
                (
                    Kind::WrongVersion { .. } | Kind::Oversized { .. } | Kind::Abandoned { .. },
                    HubMessage::AuthOk { .. },
                ) => {
                    let detail = format!(
                        "hub n{} admitted a hostile {kind:?} stream",
                        self.adv.conns[c as usize].node
                    );
                    self.violation(Invariant::Adversary, detail);
                    None
                }
                _ => None,
            };
            if let Some(bytes) = reply {
                self.adv_write(stream, Chunk::Data(Payload::Real(Bytes::from(bytes))));
            }
        }
    }

    /// The node ended connection `c`. A replay's second stream ending (with
    /// `BadProof`, or refused outright by a full stream table) ends the pair.
    fn adv_ended(&mut self, c: u32) {
        if let Kind::Preauth { group } = self.adv.conns[c as usize].kind {
            // Refused or timed out: the identity opens another while the flood lasts.
            let until = self.adv.preauth_until.get(&group).copied();
            if until.is_some_and(|u| self.now < u) {
                let gap = between(self.adv.rng(), 1_000, 3_000);
                self.adv_schedule(self.now + Duration::from_millis(gap), AdvEv::Reopen(c));
            }
        }
        if let Kind::Replay { first: false, pair } = self.adv.conns[c as usize].kind {
            let first =
                self.adv.conns.iter().position(|x| x.kind == Kind::Replay { first: true, pair });
            if let Some(f) = first {
                self.adv_let_go(f as u32);
            }
        }
    }
}
