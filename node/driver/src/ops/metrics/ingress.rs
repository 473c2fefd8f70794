//! The gateway's metrics: requests by outcome (from the core's events),
//! request durations, bytes both ways and turned-away connections (from the
//! HTTP side), and the gauges of agents known and forwards open (read from
//! the node at scrape time, like the other gauges of what it holds).

use meshproxy_core::io::{IngressEnd, IngressOutcome};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::time::Duration;

/// Upper bounds (seconds) of the request-duration histogram: a static answer
/// (well under a millisecond) to a long download (minutes).
pub const DURATION_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
    300.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndLabels {
    end: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// The label of how a forwarded request ended.
pub fn end_label(end: IngressEnd) -> &'static str {
    match end {
        IngressEnd::Complete => "complete",
        IngressEnd::UpstreamFailed => "upstream_failed",
        IngressEnd::ClientGone => "client_gone",
    }
}

/// The gateway's counters, histogram and gauges.
#[derive(Debug)]
pub struct IngressMetrics {
    requests: Family<OutcomeLabels, Counter>,
    attempt_failures: Counter,
    ended: Family<EndLabels, Counter>,
    duration: Histogram,
    bytes: Family<DirectionLabels, Counter>,
    refused: Family<ReasonLabels, Counter>,
    agents_known: Gauge,
    forwards_open: Gauge,
}

impl Default for IngressMetrics {
    fn default() -> Self {
        let m = IngressMetrics {
            requests: Family::default(),
            attempt_failures: Counter::default(),
            ended: Family::default(),
            duration: Histogram::new(DURATION_BUCKETS),
            bytes: Family::default(),
            refused: Family::default(),
            agents_known: Gauge::default(),
            forwards_open: Gauge::default(),
        };
        for outcome in IngressOutcome::ALL {
            drop(m.requests.get_or_create(&OutcomeLabels { outcome: outcome.name() }));
        }
        for end in [IngressEnd::Complete, IngressEnd::UpstreamFailed, IngressEnd::ClientGone] {
            drop(m.ended.get_or_create(&EndLabels { end: end_label(end) }));
        }
        for direction in ["up", "down"] {
            drop(m.bytes.get_or_create(&DirectionLabels { direction }));
        }
        for reason in ["global_cap", "per_ip_cap"] {
            drop(m.refused.get_or_create(&ReasonLabels { reason }));
        }
        m
    }
}

impl IngressMetrics {
    /// Adds every metric to `r`.
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "ingress_requests",
            "(Gateways) public requests by what became of them (forwarded, static, redirect, no_route, no_agent, …)",
            self.requests.clone(),
        );
        r.register(
            "ingress_attempt_failures",
            "(Gateways) attempts at an agent that failed before it took the request (another may be tried)",
            self.attempt_failures.clone(),
        );
        r.register(
            "ingress_forwards_ended",
            "(Gateways) forwarded requests ended, by how (complete, upstream_failed, client_gone)",
            self.ended.clone(),
        );
        r.register_with_unit(
            "ingress_request_duration",
            "(Gateways) public requests from arrival to the end of the response",
            Unit::Seconds,
            self.duration.clone(),
        );
        r.register_with_unit(
            "ingress",
            "(Gateways) body bytes carried for forwarded requests; up is client to agent, down is back",
            Unit::Bytes,
            self.bytes.clone(),
        );
        r.register(
            "ingress_connections_refused",
            "(Gateways) public connections turned away at a connection cap",
            self.refused.clone(),
        );
        r.register(
            "ingress_agents_known",
            "(Gateways) agents the hubs listed, now",
            self.agents_known.clone(),
        );
        r.register(
            "ingress_forwards_open",
            "(Gateways) requests carried by a stream to an agent, now",
            self.forwards_open.clone(),
        );
    }

    /// The core decided a request.
    pub fn request(&self, outcome: IngressOutcome) {
        self.requests.get_or_create(&OutcomeLabels { outcome: outcome.name() }).inc();
    }

    /// An attempt at an agent failed.
    pub fn attempt_failed(&self) {
        self.attempt_failures.inc();
    }

    /// A forwarded request ended.
    pub fn ended(&self, end: IngressEnd) {
        self.ended.get_or_create(&EndLabels { end: end_label(end) }).inc();
    }

    /// A request took this long, arrival to the end of its response.
    pub fn duration(&self, d: Duration) {
        self.duration.observe(d.as_secs_f64());
    }

    /// Body bytes from the client to the agent.
    pub fn bytes_up(&self, n: u64) {
        self.bytes.get_or_create(&DirectionLabels { direction: "up" }).inc_by(n);
    }

    /// Body bytes from the agent to the client.
    pub fn bytes_down(&self, n: u64) {
        self.bytes.get_or_create(&DirectionLabels { direction: "down" }).inc_by(n);
    }

    /// A connection was turned away (`global_cap` or `per_ip_cap`).
    pub fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// The gauges of what the node holds now.
    pub fn show(&self, agents_known: usize, forwards_open: usize) {
        self.agents_known.set(i64::try_from(agents_known).unwrap_or(i64::MAX));
        self.forwards_open.set(i64::try_from(forwards_open).unwrap_or(i64::MAX));
    }
}
