//! What the node reports for operators to count and log: [`Event`]s, and
//! the reasons and outcomes they carry.

use crate::ids::{ListenerId, PeerId};
use crate::target::Status;
use core::time::Duration;

use super::{IngressEnd, SpliceEnd};
use std::net::IpAddr;

/// What became of a public request at a gateway.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum IngressOutcome {
    /// Handed to an agent that answered `Ok`.
    Forwarded,
    /// Answered by a static target.
    Static,
    /// Answered by a redirect target.
    Redirect,
    /// Refused by normalisation or path security (400).
    BadRequest,
    /// No route matched and the listener has no default (404).
    NoRoute,
    /// The route's target has no available agent (503).
    NoAgent,
    /// The gateway or every candidate agent is at its limit of requests
    /// in flight (503).
    Busy,
    /// The agent's allow-list or policy refused (403, never retried).
    Forbidden,
    /// Every agent tried failed (502).
    UpstreamError,
    /// The last agent tried did not answer in time, or the request's budget
    /// ran out (504).
    UpstreamTimeout,
}

impl IngressOutcome {
    /// Every outcome, for metrics registered at zero.
    pub const ALL: [IngressOutcome; 10] = [
        IngressOutcome::Forwarded,
        IngressOutcome::Static,
        IngressOutcome::Redirect,
        IngressOutcome::BadRequest,
        IngressOutcome::NoRoute,
        IngressOutcome::NoAgent,
        IngressOutcome::Busy,
        IngressOutcome::Forbidden,
        IngressOutcome::UpstreamError,
        IngressOutcome::UpstreamTimeout,
    ];

    /// The metric label and log name.
    pub fn name(self) -> &'static str {
        match self {
            IngressOutcome::Forwarded => "forwarded",
            IngressOutcome::Static => "static",
            IngressOutcome::Redirect => "redirect",
            IngressOutcome::BadRequest => "bad_request",
            IngressOutcome::NoRoute => "no_route",
            IngressOutcome::NoAgent => "no_agent",
            IngressOutcome::Busy => "busy",
            IngressOutcome::Forbidden => "forbidden",
            IngressOutcome::UpstreamError => "upstream_error",
            IngressOutcome::UpstreamTimeout => "upstream_timeout",
        }
    }
}

/// Why a client session failed.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum FailReason {
    /// The app's handshake was malformed, refused or unsupported.
    Handshake,
    /// The app did not finish its handshake in time.
    HandshakeTimeout,
    /// The app went away before the session was set up.
    AppClosed,
    /// No exit matched the listener's filters (or all were backing off).
    NoExit,
    /// The pinned exit was unavailable and the listener forbids fallback.
    StickyUnavailable,
    /// The exit reported a failure of the destination (the status says which).
    Destination,
    /// Every attempt failed at the exit or on the way to it.
    ExitFailed,
    /// The session's setup budget ran out.
    Timeout,
    /// The node (or the listener) is at its session limit, or has too many
    /// dials under way.
    Overloaded,
    /// The app's source address holds as many sessions as it may.
    SourceLimit,
    /// The client holds no usable ticket from a hub (not admitted, or every
    /// hub unreachable for longer than its tickets last): no exit would serve it.
    NotAdmitted,
}

/// What an operator would want to count. Cheap to build: no heap data.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Event {
    /// An app connection was accepted on a listener.
    AppAccepted {
        /// The listener.
        listener: ListenerId,
    },
    /// A client session is spliced to an exit.
    SessionEstablished {
        /// The listener.
        listener: ListenerId,
        /// The exit carrying it.
        exit: PeerId,
        /// From app accept to the exit's success answer.
        setup: Duration,
        /// How many exits were tried (1 = first try).
        attempts: u32,
    },
    /// A client session failed before it was spliced; the app got `status`.
    SessionFailed {
        /// The listener.
        listener: ListenerId,
        /// Why.
        reason: FailReason,
        /// What the app was told.
        status: Status,
    },
    /// A spliced session (client or exit side) ended.
    SessionClosed {
        /// Bytes from app/peer to the far side.
        up: u64,
        /// Bytes from the far side back.
        down: u64,
        /// How it ended.
        how: SpliceEnd,
    },
    /// One attempt at an exit failed and another exit may be tried.
    ExitAttemptFailed {
        /// The exit.
        exit: PeerId,
    },
    /// A circuit breaker changed state.
    Breaker {
        /// The exit.
        exit: PeerId,
        /// The new state.
        to: crate::selection::breaker::BreakerState,
    },
    /// An exit accepted a proxy stream and connected to the origin.
    ExitConnected {
        /// The client peer.
        peer: PeerId,
    },
    /// An exit refused a destination by policy; nothing was dialed.
    ExitDenied {
        /// The address that was denied (for a name: the first denied answer).
        ip: Option<IpAddr>,
    },
    /// An exit could not reach an allowed destination.
    ExitConnectFailed {
        /// The status sent back.
        status: Status,
    },
    /// This node's registration at a hub was accepted.
    HubRegistered {
        /// The hub.
        hub: PeerId,
    },
    /// A hub refused this node's admission (it retries on its backoff).
    HubRefused {
        /// The hub.
        hub: PeerId,
        /// Why, as the hub said.
        code: crate::wire::hub::HubErrorCode,
    },
    /// This node lost its link to a hub and will retry.
    HubLinkLost {
        /// The hub.
        hub: PeerId,
    },
    /// (Hub) an exit registered.
    DirectoryRegistered {
        /// The exit.
        peer: PeerId,
    },
    /// (Hub) an exit's registration expired or its link closed.
    DirectoryRemoved {
        /// The exit.
        peer: PeerId,
    },
    /// (Hub) a peer passed admission and holds no other admitted hub stream:
    /// from now on it is admitted. For logs and metrics; the relay learns it
    /// from [`Output::Admit`](super::Output::Admit).
    PeerAdmitted {
        /// The peer.
        peer: PeerId,
    },
    /// (Hub) the last admitted hub stream of a peer ended: it is no longer
    /// admitted. Follows a [`Event::PeerAdmitted`] for the same peer. For
    /// logs and metrics; the relay learns it from [`Output::Revoke`](super::Output::Revoke).
    AdmissionEnded {
        /// The peer.
        peer: PeerId,
    },
    /// (Hub) a peer's hub stream or `Auth` was refused.
    AdmissionDenied {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: crate::admission::Refusal,
    },
    /// (Exit) a peer without a valid ticket asked for a connection; it was
    /// refused (status 0x02) before anything was resolved or dialed.
    ExitNotAdmitted {
        /// The peer.
        peer: PeerId,
        /// What was wrong with its ticket.
        why: crate::ticket::TicketRefusal,
    },
    /// A protocol violation by a peer (bad frame, unknown version); its stream was reset.
    PeerProtocolError {
        /// The peer.
        peer: PeerId,
    },
    /// A relay reservation was granted (or renewed): others can reach this
    /// node through `hub`.
    ReservationAccepted {
        /// The hub.
        hub: PeerId,
    },
    /// A relay reservation was refused or lost; it will be asked for again.
    ReservationLost {
        /// The hub.
        hub: PeerId,
    },
    /// (Agent) a gateway's ingress stream reached its service's origin: the
    /// agent answered `Ok` and spliced the two (its end is a
    /// [`Event::SessionClosed`]).
    AgentStreamOpened {
        /// The gateway.
        peer: PeerId,
        /// The gateway's id for this upstream connection (for matching logs).
        upstream: u64,
    },
    /// (Agent) a gateway's ingress stream was answered with a failure and ended.
    AgentStreamRefused {
        /// The gateway.
        peer: PeerId,
        /// The answer; never `Ok`.
        status: crate::wire::ingress::AnswerStatus,
    },
    /// (Agent) a named origin resolved only to addresses the allow-list
    /// refuses; nothing was dialed (followed by a `Forbidden` refusal).
    AgentOriginDenied {
        /// The first refused address.
        ip: IpAddr,
    },
    /// (Agent) a gateway's ticket was refused (followed by a `NotAdmitted`
    /// refusal) before anything was looked up or dialed.
    AgentNotAdmitted {
        /// The gateway.
        peer: PeerId,
        /// What was wrong with its ticket.
        why: crate::ticket::TicketRefusal,
    },
    /// A hole-punch attempt ended.
    HolePunch {
        /// The peer.
        peer: PeerId,
        /// Whether a direct connection came out of it.
        ok: bool,
    },
    /// (Gateways) a public request was answered or forwarded.
    IngressRequest {
        /// The listener it came in on.
        listener: ListenerId,
        /// What became of it.
        outcome: IngressOutcome,
        /// Agents tried (0 for an answer without one).
        attempts: u32,
        /// From the request's arrival to the answer or the hand-over.
        setup: Duration,
    },
    /// (Gateways) an agent answered a failure status or the attempt failed on
    /// the way; another agent may be tried.
    IngressAttemptFailed {
        /// The agent.
        agent: PeerId,
        /// Its answer (`Failure` or `Timeout` when it gave none).
        status: crate::wire::ingress::AnswerStatus,
    },
    /// (Gateways) a new route table was offered.
    RoutesReloaded {
        /// Its version.
        version: u64,
        /// Whether it is in force now (false: not newer than the one in force).
        accepted: bool,
    },
    /// A reload's new config is in force (`Input::Reconfigure`).
    Reconfigured {
        /// (Hubs) admissions ended because their key left or changed.
        admissions_ended: usize,
    },
    /// (Hubs) the operator revoked a key or a peer (`Input::Revoke`).
    Revoked {
        /// Admitted hub streams it ended.
        streams_ended: usize,
    },
    /// (Gateways) a forwarded request ended.
    IngressEnded {
        /// The agent that served it.
        agent: PeerId,
        /// How.
        end: IngressEnd,
    },
}
