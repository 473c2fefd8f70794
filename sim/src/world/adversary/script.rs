//! What the adversaries do: start each actor (its connections or streams,
//! and the deadline by which the node must end each), play their scripted
//! steps, reopen pre-auth flood streams, present abused tickets, and let go.

use super::{denied, release_at, target, ActorKind, AdvEv, Kind, TicketAbuse, HOLD, PROMPT, SLACK};
use crate::bytes_model::{Chunk, Payload};
use crate::plan::between;
use crate::world::{NodeIx, World};
use bytes::Bytes;
use meshproxy_core::admission::RoleSet;
use meshproxy_core::ids::PeerId;
use meshproxy_core::io::Protocol;
use meshproxy_core::target::TargetAddr;
use meshproxy_core::ticket::{Ticket, TicketSigner, CLOCK_SKEW};
use meshproxy_core::wire::proxy::{self as proxywire, ConnectRequest, PROXY_VERSION};
use rand_core::RngCore;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

impl World<'_> {
    pub(super) fn adv_start(&mut self, i: u32) {
        let kind = self.adv.actors[i as usize].kind;
        let s = self.scenario();
        let clients_from = s.topology.hubs + s.topology.exits;
        let listeners = s.listeners.len() as u64;
        match kind {
            ActorKind::App { client, kind } => {
                let node = clients_from + client;
                let c = self.adv_conn(kind, node, None);
                let src = SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1 + (i % 250) as u8)),
                    50_000,
                );
                let listener = (self.adv.rng().next_u64() % listeners) as u32;
                let Some(stream) = self.adv_app_connect(node, listener, src, c) else { return };
                self.adv.conns[c as usize].stream = Some(stream);
                let handshake = self.timeouts_of(node).handshake;
                match kind {
                    Kind::Slowloris { http, stall } => {
                        let mut bytes = if http {
                            crate::app_proto::http_connect(&target(), None)
                        } else {
                            crate::app_proto::socks5_handshake(&target(), None)
                        };
                        if stall {
                            bytes.truncate(2);
                        }
                        self.adv.conns[c as usize].script = bytes;
                        self.adv_tick(c);
                    }
                    Kind::HalfOpen { fin } => {
                        if fin {
                            self.adv_write(
                                stream,
                                Chunk::Data(Payload::Real(Bytes::from_static(&[5, 1, 0]))),
                            );
                            self.adv_fin(c);
                        }
                    }
                    _ => {
                        let rng = self.adv.rng();
                        let len = 1 + (rng.next_u32() % 64) as usize;
                        let mut bytes = vec![0u8; len];
                        rng.fill_bytes(&mut bytes);
                        let fin = rng.next_u32() % 2 == 0;
                        self.adv_write(stream, Chunk::Data(Payload::Real(Bytes::from(bytes))));
                        if fin {
                            self.adv_fin(c);
                        }
                    }
                }
                self.expect_end(c, handshake + SLACK);
            }
            ActorKind::Flood { client, group, connect } => {
                let node = clients_from + client;
                let size = s.adversaries.flood_size;
                let src = SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::new(127, 0, 2, 1 + (group % 250) as u8)),
                    50_000,
                );
                let t = self.timeouts_of(node);
                for _ in 0..size {
                    let c = self.adv_conn(Kind::Flood { group, connect }, node, None);
                    let Some(stream) = self.adv_app_connect(node, 0, src, c) else { continue };
                    self.adv.conns[c as usize].stream = Some(stream);
                    if connect {
                        let bytes = crate::app_proto::socks5_handshake(&denied(), None);
                        self.adv_write(stream, Chunk::Data(Payload::Real(Bytes::from(bytes))));
                        self.expect_end(c, t.setup_budget + SLACK);
                    } else {
                        self.expect_end(c, t.handshake + SLACK);
                    }
                }
                self.adv_schedule(self.now + PROMPT, AdvEv::FloodCheck(group));
            }
            ActorKind::Peer { node, kind } => {
                let peer = self.hostile_peer();
                let c = self.adv_conn(kind, node, Some(peer));
                let protocol = match kind {
                    Kind::WrongVersion { hub, wrong_protocol: true } => {
                        if hub {
                            Protocol::Proxy
                        } else {
                            Protocol::Hub
                        }
                    }
                    Kind::Oversized { hub: true }
                    | Kind::WrongVersion { hub: true, .. }
                    | Kind::Abandoned { hub: true, .. } => Protocol::Hub,
                    _ => Protocol::Proxy,
                };
                let Some(stream) = self.adv_peer_stream(node, peer, protocol, c) else { return };
                self.adv.conns[c as usize].stream = Some(stream);
                let request = self.timeouts_of(node).request;
                match kind {
                    Kind::WrongVersion { wrong_protocol: true, .. } => self.expect_end(c, PROMPT),
                    Kind::Abandoned { hub, partial } => {
                        if partial && !hub {
                            let mut req = Vec::new();
                            proxywire::encode_request(
                                &ConnectRequest::new(target(), None),
                                &mut req,
                            );
                            req.truncate(3);
                            self.adv_write(stream, Chunk::Data(Payload::Real(Bytes::from(req))));
                        }
                        self.expect_end(c, request + SLACK);
                    }
                    Kind::Oversized { hub: false } | Kind::WrongVersion { hub: false, .. } => {
                        // Sent on the next tick, after the exit saw the stream.
                        self.adv_schedule(self.now + Duration::from_millis(1), AdvEv::Tick(c));
                        self.expect_end(c, PROMPT);
                    }
                    // Hub streams act on the challenge.
                    _ => self.expect_end(c, request + SLACK),
                }
            }
            ActorKind::RegFlood { hub, group } => {
                let size = s.adversaries.registration_flood_size;
                let request = self.timeouts_of(hub).request;
                for _ in 0..size {
                    let peer = self.hostile_peer();
                    let c = self.adv_conn(Kind::Register { group }, hub, Some(peer));
                    let Some(stream) = self.adv_peer_stream(hub, peer, Protocol::Hub, c) else {
                        continue;
                    };
                    self.adv.conns[c as usize].stream = Some(stream);
                    // Refused ones must end at once; admitted ones end when we let go.
                    self.expect_end(c, HOLD + request + SLACK);
                }
                let release = release_at(s, self.now);
                self.adv_schedule(release, AdvEv::Release(group));
            }
            ActorKind::StreamFlood { node } => {
                let hub = node < s.topology.hubs;
                let protocol = if hub { Protocol::Hub } else { Protocol::Proxy };
                let peer = self.hostile_peer();
                let request = self.timeouts_of(node).request;
                for _ in 0..s.adversaries.stream_flood_size {
                    let kind = Kind::Abandoned { hub, partial: false };
                    let c = self.adv_conn(kind, node, Some(peer));
                    let Some(stream) = self.adv_peer_stream(node, peer, protocol, c) else {
                        continue;
                    };
                    self.adv.conns[c as usize].stream = Some(stream);
                    self.expect_end(c, request + SLACK);
                }
            }
            ActorKind::Escalate { hub } => {
                let peer = self.hostile_peer();
                let auth = self.timeouts_of(hub).auth;
                for register in [false, true] {
                    let c = self.adv_conn(Kind::Escalate { register }, hub, Some(peer));
                    let Some(stream) = self.adv_peer_stream(hub, peer, Protocol::Hub, c) else {
                        continue;
                    };
                    self.adv.conns[c as usize].stream = Some(stream);
                    self.expect_end(c, auth + SLACK);
                }
            }
            ActorKind::Ticketless { exit } => {
                for how in TicketAbuse::ALL {
                    // A fresh identity per abuse: after a forged signature an
                    // exit refuses that peer unchecked for a second, which
                    // would hide the refusals of the abuses after it.
                    let peer = self.hostile_peer();
                    let c = self.adv_conn(Kind::Ticketless { how }, exit, Some(peer));
                    let Some(stream) = self.adv_peer_stream(exit, peer, Protocol::Proxy, c) else {
                        continue;
                    };
                    self.adv.conns[c as usize].stream = Some(stream);
                    // Sent on the next tick, after the exit saw the stream.
                    self.adv_schedule(self.now + Duration::from_millis(1), AdvEv::Tick(c));
                    self.expect_end(c, PROMPT);
                }
            }
            ActorKind::PreauthFlood { hub, group } => {
                let secs = s.adversaries.preauth_flood_secs.unwrap_or(15);
                let until = self.now + Duration::from_secs(u64::from(secs));
                self.adv.preauth_until.insert(group, until);
                let per_peer = self.limits_of(hub).max_hub_streams_per_peer;
                for _ in 0..s.adversaries.preauth_flood_peers {
                    let peer = self.hostile_peer();
                    for _ in 0..per_peer {
                        self.preauth_open(hub, group, peer);
                    }
                }
            }
            ActorKind::Replay { hub, pair } => {
                let peer = self.hostile_peer();
                let c = self.adv_conn(Kind::Replay { first: true, pair }, hub, Some(peer));
                let Some(stream) = self.adv_peer_stream(hub, peer, Protocol::Hub, c) else {
                    return;
                };
                self.adv.conns[c as usize].stream = Some(stream);
            }
        }
    }

    /// A scripted step: the next slowloris byte, or a peer adversary's frame.
    pub(super) fn adv_tick(&mut self, c: u32) {
        let conn = &mut self.adv.conns[c as usize];
        let (Some(stream), None) = (conn.stream, conn.ended) else { return };
        match conn.kind {
            Kind::Slowloris { .. } => {
                if conn.script.is_empty() {
                    return;
                }
                let byte = conn.script.remove(0);
                self.adv_write(stream, Chunk::Data(Payload::Real(Bytes::copy_from_slice(&[byte]))));
                let gap = between(self.adv.rng(), 1_000, 3_000);
                self.adv_schedule(self.now + Duration::from_millis(gap), AdvEv::Tick(c));
            }
            Kind::Oversized { hub: false } => {
                self.adv_write(
                    stream,
                    Chunk::Data(Payload::Real(Bytes::from_static(&[0x7f, 0xff, 0xff, 0xff, 0x01]))),
                );
            }
            Kind::Ticketless { how } => {
                let peer = conn.peer.unwrap_or(PeerId::from_u64(0));
                let ticket = self.abused_ticket(how, peer);
                // Half by name (a lookup would be the first thing done), half by address.
                let target = if c % 2 == 0 {
                    TargetAddr::Domain("echo-0.sim".into(), 8000)
                } else {
                    target()
                };
                let r = ConnectRequest::new(target, None).with_ticket(ticket);
                let mut req = Vec::new();
                proxywire::encode_request(&r, &mut req);
                self.adv_write(stream, Chunk::Data(Payload::Real(Bytes::from(req))));
            }
            Kind::WrongVersion { hub: false, .. } => {
                let mut req = Vec::new();
                let r = ConnectRequest {
                    version: PROXY_VERSION + 1,
                    ..ConnectRequest::new(target(), None)
                };
                proxywire::encode_request(&r, &mut req);
                self.adv_write(stream, Chunk::Data(Payload::Real(Bytes::from(req))));
            }
            _ => {}
        }
    }

    /// A pre-auth flood's identity `peer` opens one more hub stream at `hub`.
    fn preauth_open(&mut self, hub: NodeIx, group: u32, peer: PeerId) {
        let c = self.adv_conn(Kind::Preauth { group }, hub, Some(peer));
        let Some(stream) = self.adv_peer_stream(hub, peer, Protocol::Hub, c) else { return };
        self.adv.conns[c as usize].stream = Some(stream);
        // Refused at once, displaced, or reset at the auth deadline.
        let auth = self.timeouts_of(hub).auth;
        self.expect_end(c, auth + SLACK);
    }

    pub(super) fn preauth_reopen(&mut self, c: u32) {
        let conn = &self.adv.conns[c as usize];
        let (Kind::Preauth { group }, Some(peer), hub) = (conn.kind, conn.peer, conn.node) else {
            return;
        };
        if self.adv.preauth_until.get(&group).is_some_and(|u| self.now < *u) {
            self.preauth_open(hub, group, peer);
        }
    }

    /// The ticket a ticketless stranger `peer` presents.
    fn abused_ticket(&mut self, how: TicketAbuse, peer: PeerId) -> Bytes {
        let hub = self.peer_of(0);
        let now = self.wall_now();
        let mint = |signer: &TicketSigner, hub: PeerId, roles: RoleSet, expires: u64| {
            Bytes::from(signer.sign(&Ticket { hub, holder: peer, roles, expires }))
        };
        let stranger = TicketSigner::from_secret([0x66; 32]);
        let forged = mint(&stranger, hub, RoleSet::CLIENT, now + 600);
        match how {
            TicketAbuse::Missing => Bytes::new(),
            TicketAbuse::Replayed => self.honest_ticket().map_or(forged, |(_, t)| t),
            TicketAbuse::Forged => forged,
            TicketAbuse::Expired => {
                let expired = now.saturating_sub(CLOCK_SKEW.as_secs() + 60);
                mint(&crate::topology::hub_signer(0), hub, RoleSet::CLIENT, expired)
            }
            TicketAbuse::ExitRole => {
                mint(&crate::topology::hub_signer(0), hub, RoleSet::EXIT, now + 600)
            }
            TicketAbuse::UnknownHub => {
                mint(&stranger, PeerId::from_u64(999_999), RoleSet::CLIENT, now + 600)
            }
        }
    }

    /// We close our side cleanly (registration hold over, capture done).
    pub(super) fn adv_let_go(&mut self, c: u32) {
        let conn = &self.adv.conns[c as usize];
        if let (Some(_), None, node) = (conn.stream, conn.ended, conn.node) {
            self.adv_fin(c);
            let request = self.timeouts_of(node).request;
            self.expect_end(c, PROMPT.min(request));
        }
    }

    pub(super) fn reg_release(&mut self, group: u32) {
        let ids: Vec<u32> = (0..self.adv.conns.len() as u32)
            .filter(|&c| self.adv.conns[c as usize].kind == Kind::Register { group })
            .collect();
        for c in ids {
            self.adv_let_go(c);
        }
    }
}
