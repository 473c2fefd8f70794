//! A run's recorded inputs: the app connections of the workload and the
//! faults, drawn from the scenario and the seed up front, so a failing run
//! can be shrunk by dropping items and replayed exactly.

use crate::scenario::{FaultKind, OriginKind, Scenario};
use core::fmt;
use meshproxy_core::time::Instant;
use rand_chacha::ChaCha8Rng;
use rand_core::RngCore;
use std::time::Duration;

/// One app connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppSpec {
    pub at: Instant,
    pub client: u32,
    pub listener: u32,
    pub kind: OriginKind,
    /// Which origin (or hostile destination) of that kind.
    pub variant: u32,
    /// Ask by name (resolved at the exit) rather than by IP literal.
    pub by_name: bool,
    /// Bytes the app sends (echo, sink) or asks for (source, slow, …).
    pub size: u32,
    /// Sticky `session-…` parameter, if any.
    pub session: Option<u32>,
    /// Speak HTTP CONNECT rather than SOCKS5 (listeners that allow it).
    pub http: bool,
    /// Speak SOCKS4a rather than SOCKS5 (SOCKS listeners without auth,
    /// which SOCKS4 cannot give).
    pub socks4: bool,
    /// Send the first payload bytes right behind the request, unasked.
    pub pipelined: bool,
    /// Split the handshake into this many writes (1 = one write).
    pub splits: u8,
    /// A public HTTP request at a gateway instead of a proxied connection.
    pub ingress: Option<IngressSpec>,
}

/// A public HTTP request: which gateway, and which of the request shapes
/// of `crate::ingress_model` it sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IngressSpec {
    /// The gateway, counted among the gateways.
    pub gateway: u32,
    /// The request shape.
    pub shape: u8,
}

/// One fault, with its start and how long it lasts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultSpec {
    pub at: Instant,
    pub kind: FaultKind,
    /// The node it hits (and for link faults, the other end).
    pub a: u32,
    pub b: u32,
    pub duration: Duration,
    /// Latency multiplier or bandwidth divisor.
    pub factor: u32,
}

/// A recorded input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlanItem {
    App(AppSpec),
    Fault(FaultSpec),
}

/// Everything a run injects, in time order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub items: Vec<PlanItem>,
    /// The fault kinds this seed turned on (swarm testing).
    pub fault_kinds: Vec<FaultKind>,
}

impl Plan {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// When the last fault is over (zero without faults).
    pub fn faults_end(&self) -> Instant {
        self.items
            .iter()
            .filter_map(|i| match i {
                PlanItem::Fault(f) => Some(f.at + f.duration),
                PlanItem::App(_) => None,
            })
            .max()
            .unwrap_or(Instant::ZERO)
    }

    /// A one-line summary of the fault mix.
    pub fn fault_mix(&self) -> String {
        let faults = self.items.iter().filter(|i| matches!(i, PlanItem::Fault(_))).count();
        if self.fault_kinds.is_empty() || faults == 0 {
            return "no faults".into();
        }
        let kinds: Vec<String> = self.fault_kinds.iter().map(|k| format!("{k:?}")).collect();
        format!("{} ×{faults}", kinds.join("+"))
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for item in &self.items {
            match item {
                PlanItem::App(a) => writeln!(
                    f,
                    "{} app  client={} listener={} {:?}#{} {} size={} session={:?}{}{} splits={}",
                    a.at,
                    a.client,
                    a.listener,
                    a.kind,
                    a.variant,
                    if a.by_name { "by-name" } else { "by-ip" },
                    a.size,
                    a.session,
                    if a.http {
                        " http"
                    } else if a.socks4 {
                        " socks4a"
                    } else {
                        " socks5"
                    },
                    if a.pipelined { " pipelined" } else { "" },
                    a.splits
                )?,
                PlanItem::Fault(x) => writeln!(
                    f,
                    "{} fault {:?} a={} b={} for {:?} factor={}",
                    x.at, x.kind, x.a, x.b, x.duration, x.factor
                )?,
            }
        }
        Ok(())
    }
}

/// Floods start this long after `workload.start_secs`.
pub const FLOOD_AFTER_SECS: u64 = 6;

/// Uniform in `lo..=hi`.
pub(crate) fn between(rng: &mut ChaCha8Rng, lo: u64, hi: u64) -> u64 {
    if hi <= lo {
        return lo;
    }
    lo + rng.next_u64() % (hi - lo + 1)
}

/// Draws the plan for `seed`.
pub fn generate(s: &Scenario, rng: &mut ChaCha8Rng) -> Plan {
    let mut items = Vec::new();
    let total_weight: u64 = s.workload.destinations.iter().map(|d| u64::from(d.weight)).sum();
    let duration_us = u64::from(s.duration_secs) * 1_000_000;
    for client in 0..s.topology.clients {
        for _ in 0..s.workload.connections {
            let start_us = u64::from(s.workload.start_secs) * 1_000_000;
            let at = Instant::from_micros(
                start_us + between(rng, 0, duration_us.saturating_sub(start_us + 1)),
            );
            let listener = between(rng, 0, s.listeners.len() as u64 - 1) as u32;
            let mut pick = between(rng, 0, total_weight.saturating_sub(1));
            let mut kind = s.workload.destinations[0].kind;
            for d in &s.workload.destinations {
                if pick < u64::from(d.weight) {
                    kind = d.kind;
                    break;
                }
                pick -= u64::from(d.weight);
            }
            let spec = &s.listeners[listener as usize];
            let http = match spec.protocol {
                crate::scenario::ListenerProtocol::Socks5 => false,
                crate::scenario::ListenerProtocol::Http => true,
                crate::scenario::ListenerProtocol::Both => rng.next_u32() % 4 == 0,
            };
            // Drawn only where it can be true, so scenarios without SOCKS4
            // keep their plans.
            let socks4 = s.workload.socks4_fraction > 0.0
                && !http
                && !spec.auth
                && (rng.next_u64() % 1_000_000) < (s.workload.socks4_fraction * 1e6) as u64;
            let session =
                (rng.next_u32() % 4 != 0).then(|| rng.next_u32() % s.workload.session_ids.max(1));
            // Drawn only where it can be true, so scenarios without gateways
            // keep their plans.
            let ingress = (s.workload.ingress_fraction > 0.0
                && (rng.next_u64() % 1_000_000) < (s.workload.ingress_fraction * 1e6) as u64)
                .then(|| {
                    let gateway = rng.next_u32() % s.topology.ingress_gateways().max(1);
                    let mut shape =
                        (rng.next_u32() % u32::from(crate::ingress_model::SHAPES)) as u8;
                    // Drawn only where hostile requests are on, so other
                    // scenarios keep their plans.
                    let f = s.workload.ingress_hostile_fraction;
                    if f > 0.0 && (rng.next_u64() % 1_000_000) < (f * 1e6) as u64 {
                        shape = crate::ingress_model::SHAPES
                            + (rng.next_u32() % u32::from(crate::ingress_model::HOSTILE_SHAPES))
                                as u8;
                    }
                    IngressSpec { gateway, shape }
                });
            if ingress.is_some() {
                // The agents' service is an echo origin.
                kind = OriginKind::Echo;
            }
            items.push(PlanItem::App(AppSpec {
                at,
                client,
                listener,
                kind,
                variant: rng.next_u32() % 16,
                by_name: (rng.next_u64() % 1_000_000) < (s.workload.domain_fraction * 1e6) as u64,
                size: between(
                    rng,
                    u64::from(s.workload.payload_min),
                    u64::from(s.workload.payload_max),
                ) as u32,
                session,
                http,
                socks4,
                pipelined: rng.next_u32() % 3 == 0,
                splits: between(rng, 1, 4) as u8,
                ingress,
            }));
        }
    }
    // Swarm testing: each seed turns on a random, non-empty subset of the allowed fault kinds.
    let mut fault_kinds: Vec<FaultKind> =
        s.faults.kinds.iter().copied().filter(|_| rng.next_u32() % 2 == 0).collect();
    if fault_kinds.is_empty() && !s.faults.kinds.is_empty() {
        let i = between(rng, 0, s.faults.kinds.len() as u64 - 1) as usize;
        fault_kinds.push(s.faults.kinds[i]);
    }
    if !fault_kinds.is_empty() && s.faults.max_faults > 0 {
        let t = &s.topology;
        let nodes = u64::from(t.hubs + t.exits + t.clients + t.agents + t.gateways);
        let count = between(rng, 1, u64::from(s.faults.max_faults));
        for _ in 0..count {
            let kind = fault_kinds[between(rng, 0, fault_kinds.len() as u64 - 1) as usize];
            let at = Instant::from_micros(between(rng, 0, duration_us));
            let secs = between(rng, 1, u64::from(s.faults.max_fault_secs.max(1)));
            let duration = Duration::from_micros(secs * 1_000_000 - between(rng, 0, 999_999));
            let (a, b) = match kind {
                FaultKind::Crash => (between(rng, 0, nodes - 1) as u32, 0),
                FaultKind::Churn => {
                    let e = between(rng, 0, u64::from(s.topology.exits) - 1) as u32;
                    (s.topology.hubs + e, 0)
                }
                FaultKind::HubOutage => (between(rng, 0, u64::from(s.topology.hubs) - 1) as u32, 0),
                FaultKind::GatewayPartition => {
                    // A gateway, and a hub or an agent (nodes are numbered
                    // hubs, exits, clients, agents, gateways).
                    let t = &s.topology;
                    let first_agent = t.hubs + t.exits + t.clients;
                    let g =
                        first_agent + t.agents + between(rng, 0, u64::from(t.gateways) - 1) as u32;
                    let other = between(rng, 0, u64::from(t.hubs + t.agents) - 1) as u32;
                    let other = if other < t.hubs { other } else { first_agent + other - t.hubs };
                    (g, other)
                }
                _ => {
                    let a = between(rng, 0, nodes - 1);
                    let b = (a + between(rng, 1, nodes - 1)) % nodes;
                    (a as u32, b as u32)
                }
            };
            let factor = between(rng, 3, 20) as u32;
            items.push(PlanItem::Fault(FaultSpec { at, kind, a, b, duration, factor }));
        }
    }
    // Floods last, so scenarios without them keep their plans.
    for _ in 0..s.workload.ingress_floods {
        // Once the gateways have listed every agent (they ask the hubs every
        // 5 s): before, a gateway that knows fewer agents is full sooner.
        let start_us = (u64::from(s.workload.start_secs) + FLOOD_AFTER_SECS) * 1_000_000;
        let at = Instant::from_micros(between(rng, start_us, duration_us.saturating_sub(1)));
        // Agent routes only: `app.sim` (every agent) or `*.b.sim` (site b).
        let shape = if rng.next_u32() % 2 == 0 { 2 } else { 3 };
        for _ in 0..s.workload.ingress_flood_size {
            let size =
                between(rng, u64::from(s.workload.payload_min), u64::from(s.workload.payload_max));
            items.push(PlanItem::App(AppSpec {
                at,
                client: 0,
                listener: 0,
                kind: OriginKind::Echo,
                variant: 0,
                by_name: false,
                size: size as u32,
                session: None,
                http: false,
                socks4: false,
                pipelined: false,
                splits: 1,
                ingress: Some(IngressSpec { gateway: 0, shape }),
            }));
        }
    }
    items.sort_by_key(|i| match i {
        PlanItem::App(a) => a.at,
        PlanItem::Fault(f) => f.at,
    });
    Plan { items, fault_kinds }
}
