//! The agent's metrics: how gateways' ingress streams ended, by the answer
//! they got, and how many are spliced to an origin now.

use super::ReasonLabels;
use meshproxy_core::io::Event;
use meshproxy_core::ticket::TicketRefusal;
use meshproxy_core::wire::ingress::AnswerStatus;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The label of an ingress stream's answer (`AnswerStatus::name`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// The agent's series; every outcome and reason registered at zero.
#[derive(Debug, Default)]
pub(super) struct AgentMetrics {
    streams: Family<OutcomeLabels, Counter>,
    open: Gauge,
    not_admitted: Family<ReasonLabels, Counter>,
    origin_denials: Counter,
}

impl AgentMetrics {
    pub(super) fn new() -> AgentMetrics {
        let m = AgentMetrics::default();
        for status in AnswerStatus::ALL {
            drop(m.streams.get_or_create(&OutcomeLabels { outcome: status.name() }));
        }
        for why in TicketRefusal::ALL {
            drop(m.not_admitted.get_or_create(&ReasonLabels { reason: why.name() }));
        }
        m
    }

    pub(super) fn register(&self, r: &mut Registry) {
        r.register(
            "agent_streams",
            "(Agent) gateways' ingress streams answered, by outcome (ok: spliced to the origin; \
             otherwise the failure answer sent)",
            self.streams.clone(),
        );
        r.register(
            "agent_streams_open",
            "(Agent) ingress streams spliced to an origin now",
            self.open.clone(),
        );
        r.register(
            "agent_not_admitted",
            "(Agent) ingress streams refused because the gateway had no valid ticket from one \
             of this agent's hubs, by what was wrong (answer not_admitted; nothing was dialed)",
            self.not_admitted.clone(),
        );
        r.register(
            "agent_origin_denials",
            "(Agent) named origins whose resolved addresses the allow-list refused (answer \
             forbidden; nothing was dialed)",
            self.origin_denials.clone(),
        );
    }

    /// Counts an agent event; false if `event` is not one.
    pub(super) fn observe(&self, event: &Event) -> bool {
        match *event {
            Event::AgentStreamOpened { .. } => {
                self.streams
                    .get_or_create(&OutcomeLabels { outcome: AnswerStatus::Ok.name() })
                    .inc();
            }
            Event::AgentStreamRefused { status, .. } => {
                self.streams.get_or_create(&OutcomeLabels { outcome: status.name() }).inc();
            }
            Event::AgentNotAdmitted { why, .. } => {
                self.not_admitted.get_or_create(&ReasonLabels { reason: why.name() }).inc();
            }
            Event::AgentOriginDenied { .. } => {
                self.origin_denials.inc();
            }
            _ => return false,
        }
        true
    }

    /// Sets the open-streams gauge from the node's count.
    pub(super) fn show(&self, open: usize) {
        self.open.set(i64::try_from(open).unwrap_or(i64::MAX));
    }
}
