//! The origins: the destinations exits dial, which read the app's header,
//! check routing and policy, and then behave as their `OriginKind` scripts.

use super::{Ev, Invariant, NodeIx, OriginConn, Owner, World, ORIGIN_RTT_HALF};
use crate::bytes_model::{Chunk, Payload, Verifier, CHUNK, HEADER_LEN};
use crate::oracle;
use crate::scenario::OriginKind;
use bytes::Bytes;
use meshproxy_core::ids::StreamId;
use meshproxy_core::io::{Close, Input};
use meshproxy_core::target::Status;
use std::net::SocketAddr;
use std::time::Duration;

const SLOW_TICK: Duration = Duration::from_millis(20);
const SLOW_BYTES: u32 = 4096;

impl World<'_> {
    pub(super) fn connect_origin(&mut self, n: NodeIx, sid: StreamId, addr: SocketAddr) {
        let own = self.nodes[n as usize].ip;
        if oracle::forbidden(addr.ip(), own) {
            self.violation(Invariant::Policy, format!("exit n{n} dialed forbidden {addr}"));
        }
        let host = self.hosts.get(&addr).copied();
        match host.map(|h| h.kind) {
            None | Some(OriginKind::Refuse) => {
                self.send_input(
                    n,
                    ORIGIN_RTT_HALF * 2,
                    Input::OriginFailed { stream: sid, status: Status::ConnectionRefused },
                );
            }
            Some(OriginKind::BlackHole) => {
                self.black_holes.insert((n, sid), ());
            }
            Some(kind) => {
                self.next_origin += 1;
                let c = self.next_origin;
                let stream = self.local_stream(n, sid, Owner::Origin(c));
                self.origin_conns.insert(
                    c,
                    OriginConn {
                        kind,
                        stream,
                        exit: n,
                        addr,
                        head: Vec::new(),
                        app: None,
                        up: None,
                        down_key: 0,
                        down_sent: 0,
                        down_total: 0,
                        ended: None,
                        got_fin: false,
                        released: false,
                    },
                );
                self.send_input(n, ORIGIN_RTT_HALF * 2, Input::OriginConnected { stream: sid });
            }
        }
    }

    pub(super) fn origin_chunk(&mut self, c: u64, chunk: Chunk) {
        let Some(o) = self.origin_conns.get_mut(&c) else { return };
        match chunk {
            Chunk::Data(p) => {
                let mut payload = p.clone();
                if o.head.len() < HEADER_LEN as usize {
                    let bytes = p.materialize();
                    let need = HEADER_LEN as usize - o.head.len();
                    o.head.extend_from_slice(&bytes[..need.min(bytes.len())]);
                    if o.head.len() < HEADER_LEN as usize {
                        if o.kind.echoes() {
                            self.origin_send(c, Chunk::Data(p));
                        }
                        return;
                    }
                    let tag = u64::from_be_bytes(o.head[..8].try_into().unwrap_or([0; 8]));
                    let wanted = u64::from_be_bytes(o.head[8..16].try_into().unwrap_or([0; 8]));
                    self.origin_learned(c, tag, wanted);
                    let Some(o) = self.origin_conns.get_mut(&c) else { return };
                    let mut v = match o.app {
                        Some(a) => Verifier::new(
                            self.apps[a as usize].up_key,
                            self.apps[a as usize].up_header.to_vec(),
                        ),
                        None => return,
                    };
                    // Re-check the whole chunk (header included) through the verifier.
                    let before = HEADER_LEN as usize - need.min(bytes.len());
                    let _ = before;
                    v.offset = 0;
                    let head = o.head.clone();
                    let _ = v.check(&Payload::Real(Bytes::from(head)));
                    let rest = bytes.slice(need.min(bytes.len())..);
                    o.up = Some(v);
                    payload = Payload::Real(rest);
                    if payload.len() == 0 {
                        if o.kind.echoes() {
                            self.origin_send(c, Chunk::Data(p));
                        }
                        return;
                    }
                    if o.kind.echoes() {
                        // Echo the header bytes that were in this chunk too.
                        let head_part = bytes.slice(..need.min(bytes.len()));
                        self.origin_send(c, Chunk::Data(Payload::Real(head_part)));
                    }
                }
                let Some(o) = self.origin_conns.get_mut(&c) else { return };
                let addr = o.addr;
                if let Some(Err(m)) = o.up.as_mut().map(|v| v.check(&payload)) {
                    let detail = format!("origin {addr} got byte {} wrong: {}", m.offset, m.detail);
                    self.violation(Invariant::Integrity, detail);
                }
                let Some(o) = self.origin_conns.get(&c) else { return };
                if o.kind.echoes() {
                    self.origin_send(c, Chunk::Data(payload));
                }
            }
            Chunk::Fin => {
                o.got_fin = true;
                // A clean end from the app: it must have sent everything, and ended cleanly.
                let received = o.up.as_ref().map_or(o.head.len() as u64, |v| v.offset);
                let (kind, addr, app) = (o.kind, o.addr, o.app);
                if let Some(a) = app {
                    let app = &self.apps[a as usize];
                    if !(app.fin_sent && app.up_sent == received) {
                        let detail = format!(
                            "origin {addr} saw a clean end after {received} bytes; app {a} sent {} (fin: {})",
                            app.up_sent, app.fin_sent
                        );
                        self.violation(Invariant::Integrity, detail);
                    }
                }
                if kind.echoes() || kind == OriginKind::Sink {
                    self.origin_send(c, Chunk::Fin);
                }
                self.origin_maybe_release(c);
            }
            Chunk::Reset => {
                o.got_fin = true;
                if o.ended.is_none() {
                    o.ended = Some(Close::Reset);
                }
                o.released = true;
            }
        }
    }

    /// The origin read the app's header: check routing, then behave.
    fn origin_learned(&mut self, c: u64, tag: u64, wanted: u64) {
        let Some(o) = self.origin_conns.get_mut(&c) else { return };
        let Some(app) = self.apps.get_mut(tag as usize) else {
            let addr = o.addr;
            self.violation(Invariant::Routing, format!("origin {addr} got a header naming no app"));
            return;
        };
        o.app = Some(tag as u32);
        app.exit = Some(o.exit);
        let addr = o.addr;
        let allowed = crate::topology::resolves_to(&self.dns, &app.target);
        if !allowed.contains(&addr) {
            let detail = format!(
                "app {tag} asked for {} but exit n{} connected it to {addr}",
                app.target, o.exit
            );
            self.violation(Invariant::Routing, detail);
        }
        let Some(o) = self.origin_conns.get_mut(&c) else { return };
        o.down_key = crate::key(tag, 2);
        o.down_total = match o.kind {
            OriginKind::CloseEarly | OriginKind::ResetMidStream => wanted / 2,
            _ => wanted,
        };
        match o.kind {
            OriginKind::Source | OriginKind::CloseEarly | OriginKind::ResetMidStream => {
                let mut writes = Vec::new();
                let mut sent = 0;
                while sent < o.down_total {
                    let len = (o.down_total - sent).min(u64::from(CHUNK)) as u32;
                    writes.push(Payload::Pattern { key: o.down_key, offset: sent, len });
                    sent += u64::from(len);
                }
                let end =
                    if o.kind == OriginKind::ResetMidStream { Chunk::Reset } else { Chunk::Fin };
                for p in writes {
                    self.origin_send(c, Chunk::Data(p));
                }
                self.origin_send(c, end);
            }
            OriginKind::Slow => self.origin_tick(c),
            _ => {}
        }
    }

    pub(super) fn origin_tick(&mut self, c: u64) {
        let Some(o) = self.origin_conns.get(&c) else { return };
        if o.ended.is_some() {
            return;
        }
        if o.down_sent >= o.down_total {
            self.origin_send(c, Chunk::Fin);
            return;
        }
        let len = (o.down_total - o.down_sent).min(u64::from(SLOW_BYTES)) as u32;
        let p = Payload::Pattern { key: o.down_key, offset: o.down_sent, len };
        self.origin_send(c, Chunk::Data(p));
        self.push(self.now + SLOW_TICK, Ev::OriginTick(c));
    }

    fn origin_send(&mut self, c: u64, chunk: Chunk) {
        let Some(o) = self.origin_conns.get_mut(&c) else { return };
        if o.ended.is_some() || o.released {
            return;
        }
        match &chunk {
            Chunk::Data(p) => o.down_sent += p.len(),
            Chunk::Fin => o.ended = Some(Close::Fin),
            Chunk::Reset => o.ended = Some(Close::Reset),
        }
        let stream = o.stream;
        let reset = chunk == Chunk::Reset;
        self.write(stream, 1, chunk);
        if reset {
            if let Some(o) = self.origin_conns.get_mut(&c) {
                o.released = true;
            }
            self.release(stream, 1);
        } else {
            self.origin_maybe_release(c);
        }
    }

    fn origin_maybe_release(&mut self, c: u64) {
        let Some(o) = self.origin_conns.get_mut(&c) else { return };
        if o.got_fin && o.ended.is_some() && !o.released {
            o.released = true;
            let stream = o.stream;
            self.release(stream, 1);
        }
    }
}
