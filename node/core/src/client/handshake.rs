//! Driving an app's SOCKS5, SOCKS4/4a or HTTP proxy handshake (CONNECT, or
//! a plain absolute-form request) up to its request, and answering the app in
//! the dialect it spoke.
//!
//! Which handshake an app speaks is told by its first byte: a listener that
//! speaks SOCKS (`Socks5` or `Both`) speaks SOCKS4, 4a and 5 (first byte 4
//! or 5); on a `Both` listener every other first byte is HTTP; an `Http`
//! listener speaks HTTP whatever comes.

use crate::config::{ListenerConfig, ListenerProtocol, StickyMode};
use crate::ctx::Ctx;
use crate::http_connect::{self, HttpAction, HttpConnectHandshake};
use crate::ids::{ListenerId, SessionId, StreamId};
use crate::io::{Close, Event, FailReason, Output};
use crate::record::PeerFilter;
use crate::selection::sticky::StickyKey;
use crate::socks::{self, SocksAction, SocksHandshake, UserParams};
use crate::socks4::{self, Socks4Action, Socks4Handshake};
use crate::target::{Status, TargetAddr};
use crate::time::Instant;
use bytes::Bytes;

use super::{ClientRole, Phase};

#[derive(Debug)]
pub(super) enum Handshake {
    Detect,
    Socks(SocksHandshake),
    Socks4(Socks4Handshake),
    Http(HttpConnectHandshake),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AppKind {
    Socks,
    Socks4,
    Http,
    /// A plain HTTP request forwarded to its origin: the origin's response
    /// is the answer on success; failures are HTTP error responses.
    HttpForward,
}

#[derive(Debug)]
pub(super) struct AppRequest {
    pub(super) target: TargetAddr,
    pub(super) filter: PeerFilter,
    pub(super) sticky: Option<StickyKey>,
    pub(super) session: Option<SessionId>,
}

impl ClientRole {
    pub(super) fn on_handshake_data(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        app: StreamId,
        data: &[u8],
    ) {
        let Some(s) = self.sessions.get_mut(&app) else { return };
        let (listener_id, listener) = (s.listener, s.settings.clone());
        let Phase::Handshake(hs) = &mut s.phase else { return };
        if matches!(hs, Handshake::Detect) {
            let Some(&first) = data.first() else { return };
            *hs = match (listener.protocol, first) {
                (ListenerProtocol::Socks5 | ListenerProtocol::Both, socks4::VERSION) => {
                    // SOCKS4 has no authentication: the handshake refuses it
                    // on a listener that requires SOCKS5 credentials.
                    Handshake::Socks4(Socks4Handshake::new(listener.socks_auth.clone()))
                }
                (ListenerProtocol::Socks5, _) | (ListenerProtocol::Both, 5) => {
                    Handshake::Socks(SocksHandshake::new(listener.socks_auth.clone()))
                }
                _ => Handshake::Http(HttpConnectHandshake::new(listener.http_auth.clone())),
            };
        }
        let outcome = match hs {
            Handshake::Detect => return,
            Handshake::Socks(h) => drive_socks(ctx, app, h, data),
            Handshake::Socks4(h) => drive_socks4(ctx, app, h, data),
            Handshake::Http(h) => drive_http(ctx, app, h, data),
        };
        match outcome {
            HandshakeOutcome::More => {}
            HandshakeOutcome::Rejected => {
                self.forget(ctx, app);
                ctx.emit(Output::Close { stream: app, how: Close::Fin });
                ctx.event(Event::SessionFailed {
                    listener: listener_id,
                    reason: FailReason::Handshake,
                    status: Status::GeneralFailure,
                });
            }
            HandshakeOutcome::Request { kind, target, params, leftover } => {
                if let Some(s) = self.sessions.get_mut(&app) {
                    s.kind = Some(kind);
                }
                let Some(req) = app_request(listener_id, &listener, target, params) else {
                    // The username asks for a country the listener excludes.
                    self.fail(ctx, app, FailReason::NoExit, Status::NetworkUnreachable);
                    return;
                };
                let Some(s) = self.sessions.get_mut(&app) else { return };
                s.req = Some(req);
                s.leftover = leftover.to_vec();
                s.phase = Phase::Waiting;
                self.attempt(ctx, now, app);
            }
        }
    }
}

pub(super) enum HandshakeOutcome {
    More,
    Rejected,
    Request { kind: AppKind, target: TargetAddr, params: UserParams, leftover: Bytes },
}

pub(super) fn drive_socks(
    ctx: &mut Ctx,
    app: StreamId,
    h: &mut SocksHandshake,
    data: &[u8],
) -> HandshakeOutcome {
    if h.feed(data).is_err() {
        return HandshakeOutcome::Rejected;
    }
    loop {
        match h.poll() {
            SocksAction::NeedMore => return HandshakeOutcome::More,
            SocksAction::Send(bytes) => {
                ctx.emit(Output::Transmit { stream: app, data: Bytes::from(bytes) })
            }
            SocksAction::Request(r) => {
                let leftover = h.take_leftover();
                return HandshakeOutcome::Request {
                    kind: AppKind::Socks,
                    target: r.target,
                    params: r.params,
                    leftover,
                };
            }
            SocksAction::Reject { reply, .. } => {
                if !reply.is_empty() {
                    ctx.emit(Output::Transmit { stream: app, data: Bytes::from(reply) });
                }
                return HandshakeOutcome::Rejected;
            }
        }
    }
}

pub(super) fn drive_socks4(
    ctx: &mut Ctx,
    app: StreamId,
    h: &mut Socks4Handshake,
    data: &[u8],
) -> HandshakeOutcome {
    if h.feed(data).is_err() {
        return HandshakeOutcome::Rejected;
    }
    match h.poll() {
        Socks4Action::NeedMore => HandshakeOutcome::More,
        Socks4Action::Request(r) => HandshakeOutcome::Request {
            kind: AppKind::Socks4,
            target: r.target,
            params: r.params,
            leftover: h.take_leftover(),
        },
        Socks4Action::Reject { reply, .. } => {
            if !reply.is_empty() {
                ctx.emit(Output::Transmit { stream: app, data: Bytes::from(reply) });
            }
            HandshakeOutcome::Rejected
        }
    }
}

pub(super) fn drive_http(
    ctx: &mut Ctx,
    app: StreamId,
    h: &mut HttpConnectHandshake,
    data: &[u8],
) -> HandshakeOutcome {
    if h.feed(data).is_err() {
        ctx.emit(Output::Transmit {
            stream: app,
            data: Bytes::from(http_connect::response(Status::GeneralFailure)),
        });
        return HandshakeOutcome::Rejected;
    }
    match h.poll() {
        HttpAction::NeedMore => HandshakeOutcome::More,
        HttpAction::Request(r) => {
            let leftover = h.take_leftover();
            HandshakeOutcome::Request {
                kind: AppKind::Http,
                target: r.target,
                params: r.params,
                leftover,
            }
        }
        HttpAction::Forward(r) => {
            // The rewritten head goes to the origin first, then whatever the
            // app sent after its head (body, as it came).
            let mut first = r.head;
            first.extend_from_slice(&h.take_leftover());
            HandshakeOutcome::Request {
                kind: AppKind::HttpForward,
                target: r.target,
                params: r.params,
                leftover: Bytes::from(first),
            }
        }
        HttpAction::Reject { response, .. } => {
            ctx.emit(Output::Transmit { stream: app, data: Bytes::from(response) });
            HandshakeOutcome::Rejected
        }
    }
}

/// Combines the listener's settings with the username's parameters; `None`
/// when they contradict each other (two different countries).
pub(super) fn app_request(
    id: ListenerId,
    listener: &ListenerConfig,
    target: TargetAddr,
    params: UserParams,
) -> Option<AppRequest> {
    let mut filter = listener.filter.clone();
    match (filter.country, params.country) {
        (Some(a), Some(b)) if a != b => return None,
        (None, Some(b)) => filter.country = Some(b),
        _ => {}
    }
    for label in params.labels {
        if !filter.labels.contains(&label) {
            filter.labels.push(label);
        }
    }
    let sticky = match listener.sticky {
        StickyMode::Off => None,
        StickyMode::Listener => Some(StickyKey { listener: id, session: None }),
        StickyMode::Session => {
            params.session.clone().map(|s| StickyKey { listener: id, session: Some(s) })
        }
    };
    let session = params.session.as_deref().map(|s| SessionId(fnv1a(s.as_bytes())));
    Some(AppRequest { target, filter, sticky, session })
}

/// A stable 64-bit hash (FNV-1a), so a session id means the same on every run.
pub(super) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// The SOCKS5 reply, SOCKS4 reply or HTTP response carrying `status`, in
/// the app's dialect (SOCKS4 has one failure code: every failure is `0x5B`).
/// Empty for a forwarded request's success: the origin answers it.
pub(super) fn answer(kind: Option<AppKind>, status: Status) -> Vec<u8> {
    match kind {
        Some(AppKind::HttpForward) if status == Status::Succeeded => Vec::new(),
        Some(AppKind::Http | AppKind::HttpForward) => http_connect::response(status),
        Some(AppKind::Socks4) => socks4::reply(status),
        _ => socks::reply(status, None),
    }
}
