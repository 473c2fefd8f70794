//! The run's trace and running hash. Every step folds a compact record (time,
//! kind, ids, lengths) into the hash; the human-readable lines are built only
//! when tracing is on, from the same records, so a replay's trace and a
//! sweep's hash describe the same run. Nothing process-specific (addresses,
//! global counters) goes in.

use crate::bytes_model::{Chunk, Payload};
use meshproxy_core::io::{Input, Output};
use meshproxy_core::time::Instant;

#[derive(Debug, Default)]
pub struct Trace {
    enabled: bool,
    record_steps: bool,
    pub lines: Vec<String>,
    /// Index into `lines` where each step's lines begin.
    pub step_starts: Vec<usize>,
    pub step_hashes: Vec<u64>,
    hash: u64,
}

const PRIME: u64 = 0x0000_0100_0000_01b3;

impl Trace {
    pub fn new(enabled: bool, record_steps: bool) -> Trace {
        Trace { enabled, record_steps, hash: 0xcbf2_9ce4_8422_2325, ..Trace::default() }
    }

    pub fn hash(&self) -> u64 {
        self.hash
    }

    fn mix(&mut self, w: u64) {
        self.hash = (self.hash ^ w).wrapping_mul(PRIME).rotate_left(23);
    }

    /// Folds a record into the hash.
    pub fn hash_only(&mut self, now: Instant, code: u64, a: u64, b: u64) {
        self.mix(now.as_micros());
        self.mix(code);
        self.mix(a);
        self.mix(b);
    }

    /// Adds a line (built only when tracing is on).
    pub fn line(&mut self, now: Instant, kind: &str, f: impl FnOnce() -> String) {
        if self.enabled {
            self.lines.push(format!("{now} {kind} {}", f()));
        }
    }

    /// Closes a step of the event loop.
    pub fn end_step(&mut self) {
        if self.record_steps {
            self.step_hashes.push(self.hash);
            self.step_starts.push(self.lines.len());
        }
    }
}

fn sid(s: meshproxy_core::ids::StreamId) -> u64 {
    s.0
}

pub fn input_code(i: &Input) -> u64 {
    match i {
        Input::AppAccepted { stream, .. } => 1 << 56 | sid(*stream),
        Input::StreamData { stream, data } => 2 << 56 | sid(*stream) << 20 | data.len() as u64,
        Input::StreamClosed { stream, how } => 3 << 56 | sid(*stream) << 1 | *how as u64,
        Input::PeerConnected { conn, .. } => 4 << 56 | conn.0,
        Input::PeerDisconnected { conn, .. } => 5 << 56 | conn.0,
        Input::DialFailed { .. } => 6 << 56,
        Input::StreamOpened { stream } => 7 << 56 | sid(*stream),
        Input::StreamRefused { stream } => 8 << 56 | sid(*stream),
        Input::InboundStream { stream, .. } => 9 << 56 | sid(*stream),
        Input::Resolved { query, result } => {
            10 << 56 | query.0 << 8 | result.as_ref().map_or(0, |v| v.len() as u64)
        }
        Input::OriginConnected { stream } => 11 << 56 | sid(*stream),
        Input::OriginFailed { stream, status } => {
            12 << 56 | sid(*stream) << 8 | status.code() as u64
        }
        Input::SpliceEnded { a, report, .. } => 13 << 56 | sid(*a) << 8 | report.how as u64,
        Input::Restore(s) => 14 << 56 | s.sticky.len() as u64,
        Input::Reachability(r) => 15 << 56 | *r as u64,
        Input::ReservationAccepted { hub, .. } => 16 << 56 | last_byte(hub),
        Input::ReservationFailed { hub } => 17 << 56 | last_byte(hub),
        Input::ReservationLost { hub } => 18 << 56 | last_byte(hub),
        Input::HolePunchFailed { peer } => 19 << 56 | last_byte(peer),
        Input::OwnAddress { ip, .. } => {
            20 << 56
                | u64::from(
                    ip.to_string().bytes().fold(0u32, |h, b| h.wrapping_mul(31) ^ u32::from(b)),
                )
        }
        Input::IngressRequest { request, head, .. } => 21 << 56 | request.0 << 16 | head.len as u64,
        Input::IngressDone { request, end } => 22 << 56 | request.0 << 2 | *end as u64,
        Input::ReloadRoutes(routes) => 23 << 56 | routes.version(),
        Input::Reconfigure(config) => 24 << 56 | config.0.limits.max_exit_sessions as u64,
        Input::Revoke(meshproxy_core::io::Revocation::Key(id)) => 25 << 56 | id.len() as u64,
        Input::Revoke(meshproxy_core::io::Revocation::Peer(_)) => 26 << 56,
    }
}

pub fn output_code(o: &Output) -> u64 {
    match o {
        Output::Transmit { stream, data } => 1 << 56 | sid(*stream) << 20 | data.len() as u64,
        Output::Close { stream, how } => 2 << 56 | sid(*stream) << 1 | *how as u64,
        Output::Dial { peer, .. } => {
            3 << 56 | u64::from(peer.as_bytes().last().copied().unwrap_or(0))
        }
        Output::OpenStream { stream, .. } => 4 << 56 | sid(*stream),
        Output::Resolve { query, .. } => 5 << 56 | query.0,
        Output::ConnectOrigin { stream, addr } => {
            6 << 56 | sid(*stream) << 16 | u64::from(addr.port())
        }
        Output::Splice { a, b, .. } => 7 << 56 | sid(*a) << 24 | sid(*b),
        Output::Persist(s) => 8 << 56 | s.sticky.len() as u64,
        Output::Event(e) => 9 << 56 | event_code(e),
        Output::Reserve { hub } => 10 << 56 | last_byte(hub),
        Output::Unreserve { hub } => 11 << 56 | last_byte(hub),
        Output::HolePunch { peer } => 12 << 56 | last_byte(peer),
        Output::Admit { peer } => 13 << 56 | last_byte(peer),
        Output::Revoke { peer } => 14 << 56 | last_byte(peer),
        Output::IngressRespond { request, response } => {
            15 << 56 | request.0 << 16 | u64::from(response.status)
        }
        Output::IngressForward { request, stream, .. } => 16 << 56 | request.0 << 24 | sid(*stream),
    }
}

fn last_byte(peer: &meshproxy_core::ids::PeerId) -> u64 {
    u64::from(peer.as_bytes().last().copied().unwrap_or(0))
}

fn event_code(e: &meshproxy_core::io::Event) -> u64 {
    // The variant's position is enough: details are in the surrounding outputs.
    let s = format!("{e:?}");
    s.bytes()
        .take_while(|b| b.is_ascii_alphanumeric())
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
}

pub fn chunk_code(c: &Chunk) -> u64 {
    match c {
        Chunk::Data(p) => 1 << 60 | p.len(),
        Chunk::Fin => 2 << 60,
        Chunk::Reset => 3 << 60,
    }
}

pub fn chunk_summary(c: &Chunk) -> String {
    match c {
        Chunk::Data(Payload::Real(b)) => format!("{}B", b.len()),
        Chunk::Data(Payload::Pattern { offset, len, .. }) => format!("{len}B@{offset}"),
        Chunk::Fin => "FIN".into(),
        Chunk::Reset => "RST".into(),
    }
}

pub fn input_summary(i: &Input) -> String {
    match i {
        Input::StreamData { stream, data } => format!("StreamData {stream} {}B", data.len()),
        other => format!("{other:?}"),
    }
}

pub fn output_summary(o: &Output) -> String {
    match o {
        Output::Transmit { stream, data } => format!("Transmit {stream} {}B", data.len()),
        Output::Splice { a, b, a_to_b_prefix, b_to_a_prefix, .. } => {
            format!("Splice {a}<->{b} prefix {}B/{}B", a_to_b_prefix.len(), b_to_a_prefix.len())
        }
        Output::Persist(s) => format!("Persist {}B", s.sticky.len()),
        other => format!("{other:?}"),
    }
}
