//! The apps: honest applications that connect to a client's listener,
//! speak SOCKS5, SOCKS4a or HTTP CONNECT, verify every byte that comes back, and
//! judge how their connection ended (including the sticky-exit check).

use super::{App, AppPhase, Ev, Invariant, Outcome, Owner, World, LOCAL};
use crate::app_proto::{self, Reply};
use crate::bytes_model::{header, Chunk, Payload, Verifier, CHUNK, HEADER_LEN};
use crate::plan::AppSpec;
use crate::scenario::OriginKind;
use bytes::Bytes;
use meshproxy_core::ids::ListenerId;
use meshproxy_core::io::{Close, Input};
use std::net::SocketAddr;
use std::time::Duration;

impl World<'_> {
    pub(super) fn add_app(&mut self, spec: AppSpec, probe: bool) -> u32 {
        let ix = self.apps.len() as u32;
        let target = crate::topology::target_for(&spec);
        let listener = &self.s.listeners[spec.listener as usize];
        let mut user = None;
        if listener.auth || spec.session.is_some() {
            let mut u = app_proto::USER.to_string();
            if let Some(sess) = spec.session {
                u.push_str(&format!("-session-s{sess}"));
            }
            user = Some(u);
        }
        let tag = u64::from(ix);
        let wanted = match spec.kind {
            OriginKind::Echo | OriginKind::Sink => 0,
            _ => u64::from(spec.size),
        };
        let up_total = HEADER_LEN
            + match spec.kind {
                OriginKind::Echo
                | OriginKind::Sink
                | OriginKind::MixedName
                | OriginKind::Private
                | OriginKind::PrivateName => u64::from(spec.size),
                _ => 0,
            };
        let up_key = crate::key(tag, 1);
        let up_header = header(tag, wanted);
        let down = if spec.kind.echoes() {
            Verifier::new(up_key, up_header.to_vec())
        } else {
            Verifier::new(crate::key(tag, 2), Vec::new())
        };
        let budget = Duration::from_secs(150 + u64::from(self.s.faults.max_fault_secs));
        self.apps.push(App {
            strict: probe || self.strict,
            probe,
            target,
            authed: user.is_some(),
            username: user,
            stream: 0,
            side: 1,
            routes_version: None,
            phase: AppPhase::Connecting,
            inbox: Vec::new(),
            up_key,
            up_header,
            up_sent: 0,
            up_total,
            fin_sent: false,
            reply_ok: false,
            down,
            outcome: None,
            started: spec.at,
            deadline: spec.at + budget,
            exit: None,
            relayed: None,
            spec,
        });
        ix
    }

    pub(super) fn app_start(&mut self, a: u32) {
        if self.apps[a as usize].spec.ingress.is_some() {
            self.ingress_start(a);
            return;
        }
        let app = &self.apps[a as usize];
        let client = self.s.topology.hubs + self.s.topology.exits + app.spec.client;
        self.stats.app_connections += 1;
        let deadline = if app.probe {
            self.now + Duration::from_secs(u64::from(self.s.liveness_bound_secs))
        } else {
            app.deadline
        };
        self.apps[a as usize].deadline = deadline;
        self.apps[a as usize].started = self.now;
        if !self.apps[a as usize].probe && self.adv_relaxes(self.now) {
            self.apps[a as usize].strict = false;
        }
        self.push(deadline, Ev::AppDeadline(a));
        if self.nodes[client as usize].core.is_none() {
            // The client process is down: connection refused.
            self.app_end(a, Outcome::NoAnswer);
            return;
        }
        let sid = self.new_sid(client);
        let stream = self.local_stream(client, sid, Owner::App(a));
        self.apps[a as usize].stream = stream;
        self.apps[a as usize].phase = AppPhase::Handshake;
        let listener = ListenerId(u64::from(self.apps[a as usize].spec.listener));
        let source = SocketAddr::from(([127, 0, 0, 1], 40_000 + (a % 20_000) as u16));
        self.send_input(client, LOCAL, Input::AppAccepted { listener, stream: sid, source });
        // The whole handshake goes out at once, split into `splits` writes.
        let app = &self.apps[a as usize];
        let mut bytes = if app.spec.http {
            app_proto::http_connect(&app.target, app.username.as_deref())
        } else if app.spec.socks4 {
            app_proto::socks4a_request(&app.target, app.username.as_deref())
        } else {
            app_proto::socks5_handshake(&app.target, app.username.as_deref())
        };
        let pipelined = app.spec.pipelined && !app.spec.http;
        if pipelined {
            bytes.extend_from_slice(&app.up_header);
        }
        let splits = usize::from(app.spec.splits.max(1));
        let step = bytes.len().div_ceil(splits).max(1);
        let pieces: Vec<Bytes> = bytes.chunks(step).map(Bytes::copy_from_slice).collect();
        for piece in pieces {
            self.write(stream, 1, Chunk::Data(Payload::Real(piece)));
        }
        if pipelined {
            self.apps[a as usize].up_sent = HEADER_LEN;
        }
    }

    pub(super) fn app_chunk(&mut self, a: u32, chunk: Chunk) {
        let app = &mut self.apps[a as usize];
        if app.outcome.is_some() {
            return;
        }
        match chunk {
            Chunk::Data(p) => {
                if app.phase == AppPhase::Handshake {
                    app.inbox.extend_from_slice(&p.materialize());
                    let reply = if app.spec.http {
                        app_proto::parse_http_reply(&app.inbox)
                    } else if app.spec.socks4 {
                        app_proto::parse_socks4_reply(&app.inbox)
                    } else {
                        app_proto::parse_socks5_reply(&app.inbox, app.authed)
                    };
                    match reply {
                        None => {}
                        Some(Reply::Garbage) => {
                            self.violation(
                                Invariant::Protocol,
                                format!("app {a} got an invalid proxy reply"),
                            );
                            self.app_end(a, Outcome::NoAnswer);
                        }
                        Some(Reply::Failure { code }) => self.app_refused(a, code),
                        Some(Reply::Success { used }) => {
                            let rest = Bytes::copy_from_slice(&app.inbox[used..]);
                            app.inbox = Vec::new();
                            app.phase = AppPhase::Open;
                            app.reply_ok = true;
                            self.app_success(a);
                            if !rest.is_empty() {
                                self.app_chunk(a, Chunk::Data(Payload::Real(rest)));
                            }
                        }
                    }
                    return;
                }
                if let Err(m) = app.down.check(&p) {
                    let detail =
                        format!("app {a} ({:?}) at byte {}: {}", app.spec.kind, m.offset, m.detail);
                    self.violation(Invariant::Integrity, detail);
                    self.app_end(a, Outcome::Reset);
                }
            }
            Chunk::Fin => {
                if !app.reply_ok {
                    self.app_end(a, Outcome::NoAnswer);
                    return;
                }
                // A clean end: the origin must have ended cleanly, after sending all of it.
                let origin = self.origin_conns.values().find(|c| c.app == Some(a));
                let received = app.down.offset;
                let ok = match origin {
                    Some(c) => c.ended == Some(Close::Fin) && c.down_sent == received,
                    None => false,
                };
                if !ok {
                    let what = match origin {
                        Some(c) => format!("origin sent {} and ended {:?}", c.down_sent, c.ended),
                        None => "no origin connection carries it".into(),
                    };
                    let detail = format!(
                        "app {a} ({:?}) saw a clean end after {received} bytes; {what}",
                        app.spec.kind
                    );
                    self.violation(Invariant::Integrity, detail);
                }
                self.app_end(a, Outcome::Complete);
            }
            Chunk::Reset => {
                let outcome = if app.reply_ok { Outcome::Reset } else { Outcome::NoAnswer };
                self.app_end(a, outcome);
            }
        }
    }

    pub(super) fn app_success(&mut self, a: u32) {
        let app = &self.apps[a as usize];
        if !app.spec.kind.can_succeed() {
            let detail = format!(
                "app {a} asked for {:?} {} and was told it connected",
                app.spec.kind, app.target
            );
            self.violation(Invariant::Policy, detail);
        }
        let app = &self.apps[a as usize];
        let stream = app.stream;
        let mut writes = Vec::new();
        let mut sent = app.up_sent;
        if sent < HEADER_LEN {
            writes.push(Payload::Real(Bytes::copy_from_slice(&app.up_header)));
            sent = HEADER_LEN;
        }
        while sent < app.up_total {
            let len = (app.up_total - sent).min(u64::from(CHUNK)) as u32;
            writes.push(Payload::Pattern { key: app.up_key, offset: sent, len });
            sent += u64::from(len);
        }
        let side = app.side;
        for p in writes {
            self.write(stream, side, Chunk::Data(p));
        }
        self.write(stream, side, Chunk::Fin);
        let app = &mut self.apps[a as usize];
        app.up_sent = sent;
        app.fin_sent = true;
    }

    fn app_refused(&mut self, a: u32, code: u8) {
        let app = &self.apps[a as usize];
        // HTTP can only tell 403, 504 and 502 apart; SOCKS4 has one failure code.
        let expected = app.spec.kind.refusal().map(|c| {
            if app.spec.http {
                app_proto::http_class(c)
            } else if app.spec.socks4 {
                app_proto::SOCKS4_REJECTED
            } else {
                c
            }
        });
        let wrong = match expected {
            // Must fail, and with exactly this code when nothing else is going wrong.
            Some(want) => app.strict && code != want,
            // Must succeed when nothing is going wrong.
            None => app.strict,
        };
        // 0x02 for a destination that is not denied: only a client without a
        // usable ticket (NotAdmitted) may say that, and never in a run held
        // to "must succeed".
        let client = self.hubs + self.exits + app.spec.client;
        let denied_wrongly = code == 0x02
            && expected != Some(0x02)
            && (app.strict || !self.not_admitted_excused(client));
        let app = &self.apps[a as usize];
        if wrong || denied_wrongly {
            let detail = format!(
                "app {a} asked for {:?} {} and got reply {code:#04x} (expected {})",
                app.spec.kind,
                app.target,
                expected.map_or("success".to_string(), |c| format!("{c:#04x}"))
            );
            self.violation(
                if app.probe { Invariant::Liveness } else { Invariant::Outcome },
                detail,
            );
        }
        self.app_end(a, Outcome::Refused(code));
    }

    pub(super) fn app_end(&mut self, a: u32, outcome: Outcome) {
        let app = &mut self.apps[a as usize];
        if app.outcome.is_some() {
            return;
        }
        app.outcome = Some(outcome);
        app.phase = AppPhase::Done;
        let stream = app.stream;
        // A public request's answers are judged where they arrive (ingress.rs).
        let strict_success = app.strict
            && app.spec.ingress.is_none()
            && app.spec.kind.refusal().is_none()
            && app.spec.kind != OriginKind::ResetMidStream;
        match outcome {
            Outcome::Complete => {
                self.stats.succeeded += 1;
                self.stats.bytes += app.up_sent + app.down.offset;
            }
            _ => self.stats.failed += 1,
        }
        if strict_success && outcome != Outcome::Complete && !matches!(outcome, Outcome::Refused(_))
        {
            let detail = format!(
                "app {a} ({:?} {}) ended {outcome:?} in a run without faults",
                app.spec.kind, app.target
            );
            let inv = if app.probe { Invariant::Liveness } else { Invariant::Outcome };
            self.violation(inv, detail);
        }
        if self.apps[a as usize].spec.ingress.is_some() {
            self.ingress_end(a, outcome);
        } else {
            if outcome == Outcome::Complete {
                self.check_sticky(a);
            }
            self.count_session(a, outcome);
        }
        let side = self.apps[a as usize].side;
        if let Some(st) = self.streams.get(&stream) {
            if st.owners[side] == Owner::App(a) {
                if outcome != Outcome::Complete && !self.apps[a as usize].fin_sent {
                    self.write(stream, side, Chunk::Fin);
                }
                self.release(stream, side);
            }
        }
    }

    pub(super) fn app_deadline(&mut self, a: u32) {
        let app = &self.apps[a as usize];
        if app.outcome.is_none() {
            let waited = self.now.saturating_duration_since(app.started);
            let detail = format!(
                "app {a} ({:?} {}, {:?}) still unanswered after {waited:?}",
                app.spec.kind, app.target, app.phase
            );
            let (probe, stream, side) = (app.probe, app.stream, app.side);
            self.violation(if probe { Invariant::Liveness } else { Invariant::Hang }, detail);
            self.apps[a as usize].outcome = Some(Outcome::NoAnswer);
            if self.apps[a as usize].spec.ingress.is_some() {
                self.ingress_end(a, Outcome::NoAnswer);
            }
            if self.streams.contains_key(&stream) {
                self.abort_from(stream, side);
            }
        }
    }

    /// The sticky contract: a pinned session on a listener without fallback
    /// never changes its exit.
    fn check_sticky(&mut self, a: u32) {
        let app = &self.apps[a as usize];
        let listener = &self.s.listeners[app.spec.listener as usize];
        if listener.fallback || app.probe {
            return;
        }
        let key = match listener.sticky {
            crate::scenario::StickyMode::Off => return,
            crate::scenario::StickyMode::Listener => (app.spec.client, app.spec.listener, None),
            crate::scenario::StickyMode::Session => match app.spec.session {
                Some(s) => (app.spec.client, app.spec.listener, Some(s)),
                None => return,
            },
        };
        let Some(exit) = app.exit else { return };
        match self.sticky_exit.get(&key) {
            Some(&pinned) if pinned != exit => {
                let detail = format!(
                    "app {a}: session {key:?} pinned to n{pinned} went out through n{exit}"
                );
                self.violation(Invariant::Sticky, detail);
            }
            Some(_) => {}
            None => {
                self.sticky_exit.insert(key, exit);
            }
        }
    }
}
