//! How the runner logs the core's events: per-connection events are debug
//! noise, changes of the node's standing info or warn (with an explanation
//! the control socket's warning ring keeps).

use meshproxy_core::io::{Event, IngressEnd};
use meshproxy_core::wire::hub::HubErrorCode;
use tracing::Level;

/// Per-connection events are debug noise; changes of the node's standing are
/// info or warn. Returns the level and the explanation logged with it.
pub(super) fn log_event(event: &Event) -> (Level, Option<&'static str>) {
    match event {
        Event::HubRegistered { .. }
        | Event::Breaker { .. }
        | Event::DirectoryRegistered { .. }
        | Event::ReservationAccepted { .. }
        | Event::ReservationLost { .. }
        | Event::HolePunch { .. } => {
            tracing::info!(?event, "node event");
            (Level::INFO, None)
        }
        Event::Reconfigured { admissions_ended } => {
            tracing::info!(admissions_ended, "reload applied");
            (Level::INFO, None)
        }
        Event::Revoked { streams_ended } => {
            tracing::warn!(streams_ended, "revoked by the operator");
            (Level::WARN, None)
        }
        Event::IngressAttemptFailed { agent, status } => {
            tracing::info!(%agent, ?status, "ingress: an agent failed an attempt");
            (Level::INFO, None)
        }
        Event::IngressEnded { agent, end: IngressEnd::UpstreamFailed } => {
            tracing::info!(%agent, "ingress: a forwarded request failed at the agent's side");
            (Level::INFO, None)
        }
        Event::HubRefused { hub, code } => {
            let why = match code {
                HubErrorCode::Forbidden => "this node's key does not admit its role here",
                HubErrorCode::BadProof | HubErrorCode::UnknownKey => {
                    "authentication failed (check the credential's id and token)"
                }
                HubErrorCode::UnsupportedVersion => "the hub speaks another protocol version",
                _ => "see the hub's log",
            };
            tracing::warn!(%hub, ?code, "the hub refused admission: {why}; retrying on backoff");
            (Level::WARN, Some(why))
        }
        Event::AgentStreamRefused { peer, status } => {
            tracing::info!(%peer, status = status.name(), "ingress stream refused");
            (Level::INFO, None)
        }
        Event::AgentOriginDenied { ip } => {
            let why = "a service's origin resolved outside the agent's allow list";
            tracing::warn!(%ip, "{why}");
            (Level::WARN, Some(why))
        }
        Event::HubLinkLost { .. }
        | Event::AdmissionDenied { .. }
        | Event::ExitNotAdmitted { .. }
        | Event::AgentNotAdmitted { .. }
        | Event::PeerProtocolError { .. } => {
            tracing::warn!(?event, "node event");
            (Level::WARN, None)
        }
        _ => {
            tracing::debug!(?event, "node event");
            (Level::DEBUG, None)
        }
    }
}
