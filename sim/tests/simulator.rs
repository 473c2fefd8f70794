//! The simulator must find bugs, not only pass: these tests plant one, check
//! that runs replay exactly, and pin the trace of small runs so an unintended
//! change of behaviour shows up in review.

use meshproxy_sim::{
    check_determinism, load_dir, parse_str, run, shrink, InjectedBug, RunOptions, Scenario,
};
use std::path::{Path, PathBuf};

fn scenarios() -> Vec<Scenario> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    load_dir(&dir).expect("the shipped scenarios load")
}

fn scenario(name: &str) -> Scenario {
    scenarios().into_iter().find(|s| s.name == name).expect("scenario exists")
}

/// A splice that turns a reset into a clean end of stream is silent
/// truncation; the integrity invariant must catch it on every seed that
/// carries a mid-stream reset, and the same seeds must pass without the bug.
#[test]
fn integrity_catches_a_reset_turned_into_a_clean_end() {
    let s = scenario("mixed");
    let bug = RunOptions { bug: Some(InjectedBug::ResetBecomesFin), ..RunOptions::default() };
    let mut caught = 0;
    for seed in 0..12 {
        let clean = run(&s, seed, &RunOptions::default());
        assert!(
            clean.passed(),
            "seed {seed} fails without the bug: {:?}",
            clean.violations.first()
        );
        let buggy = run(&s, seed, &bug);
        if buggy.violations.iter().any(|v| v.invariant == "integrity") {
            caught += 1;
        }
    }
    assert!(caught >= 10, "the injected bug was caught on only {caught} of 12 seeds");
}

/// Shrinking a planted failure ends with a plan that still fails the same way
/// and is a small fraction of the original.
#[test]
fn shrink_reduces_a_failure_to_a_minimal_plan() {
    let s = scenario("mixed");
    let report = shrink(&s, 3, Some(InjectedBug::ResetBecomesFin), &mut |_| {})
        .expect("seed 3 fails with the bug");
    assert!(
        report.minimal.len() <= 3,
        "minimal plan has {} items:\n{}",
        report.minimal.len(),
        report.minimal
    );
    assert!(report.original > 50);
    assert!(report.report.violations.iter().any(|v| v.invariant == "integrity"));
    let again = run(
        &s,
        3,
        &RunOptions {
            plan: Some(report.minimal.clone()),
            bug: Some(InjectedBug::ResetBecomesFin),
            ..RunOptions::default()
        },
    );
    assert_eq!(again.hash, report.report.hash, "the minimal plan replays exactly");
}

/// Every scenario replays step for step.
#[test]
fn every_scenario_is_deterministic() {
    for s in scenarios() {
        for seed in [1, 7] {
            if let Err(d) = check_determinism(&s, seed) {
                panic!("{}:{seed}: {d}", s.name);
            }
        }
    }
}

/// Different seeds really do different things (the hash is not a constant).
#[test]
fn seeds_change_the_run() {
    let s = scenario("smoke");
    let a = run(&s, 1, &RunOptions::default());
    let b = run(&s, 2, &RunOptions::default());
    assert_ne!(a.hash, b.hash);
    assert!(a.stats.succeeded > 0 && a.stats.bytes > 0, "{:?}", a.stats);
}

const TINY: &str = r#"
name = "tiny"
description = "one hub, one exit, one client, three app connections"
seeds = 1
duration_secs = 2
settle_secs = 2
liveness_bound_secs = 5

[topology]
hubs = 1
exits = 1
clients = 1

[[listeners]]
protocol = "socks5"

[workload]
connections = 3
payload_min = 100
payload_max = 40000
destinations = [{ kind = "echo", weight = 1 }, { kind = "source", weight = 1 }, { kind = "refuse", weight = 1 }]
"#;

/// The full trace of a tiny run, pinned: any change in what the nodes do,
/// in what order, shows up as a snapshot diff to review.
#[test]
fn tiny_run_trace_snapshot() {
    let s = parse_str(Path::new("tiny.toml"), TINY).expect("valid scenario");
    let r = run(&s, 42, &RunOptions { trace: true, ..RunOptions::default() });
    assert!(r.passed(), "{:?}", r.violations);
    let mut text = format!("hash {:#018x}\nplan:\n{}\n", r.hash, r.plan);
    text.push_str(&r.trace.join("\n"));
    insta::assert_snapshot!("tiny_seed_42", text);
}

/// A fault-free smoke seed, pinned by its hash and outcome counts only (its
/// trace is long): a change in behaviour changes the hash.
#[test]
fn smoke_seed_hash_snapshot() {
    let s = scenario("smoke");
    let r = run(&s, 7, &RunOptions::default());
    assert!(r.passed());
    let summary = format!(
        "hash {:#018x}\nevents {}\napps {} ok {} failed {} bytes {}",
        r.hash, r.events, r.stats.app_connections, r.stats.succeeded, r.stats.failed, r.stats.bytes
    );
    insta::assert_snapshot!("smoke_seed_7", summary);
}

/// Scenarios without NAT report no NAT pairs; `nat_matrix` passes and its
/// sessions cover every (client NAT, exit NAT) pair within a few seeds, each
/// pair completing direct or relayed as its NATs allow.
#[test]
fn nat_matrix_covers_every_pair() {
    use meshproxy_sim::nat::{merge_matrix, NatMatrix};
    use meshproxy_sim::NatType;
    assert!(run(&scenario("smoke"), 1, &RunOptions::default()).nat.is_empty());
    let s = scenario("nat_matrix");
    let mut matrix = NatMatrix::new();
    for seed in 0..4 {
        let r = run(&s, seed, &RunOptions::default());
        assert!(r.passed(), "nat_matrix:{seed}: {:?}", r.violations.first());
        merge_matrix(&mut matrix, &r.nat);
    }
    for client in NatType::ALL {
        for exit in NatType::ALL {
            let c = matrix.get(&(client, Some(exit))).copied().unwrap_or_default();
            assert!(c.direct + c.relayed > 0, "{client} × {exit}: no session");
            assert_eq!(c.failed, 0, "{client} × {exit}");
            let punchable = meshproxy_sim::nat::punch_per_mille(client, exit) > 0;
            if !punchable {
                assert_eq!(c.direct, 0, "{client} × {exit} went direct");
            }
            if !client.is_public() && !exit.is_public() {
                assert!(c.relayed > 0, "{client} × {exit} never relayed");
            }
        }
    }
}

/// Capped circuits cut sessions (the apps see errors), and no seed breaks an
/// invariant doing so: the caps are never exceeded.
#[test]
fn relay_caps_cut_sessions_without_breaking_invariants() {
    let s = scenario("relay_caps");
    let mut failed = 0;
    for seed in 0..3 {
        let r = run(&s, seed, &RunOptions::default());
        assert!(r.passed(), "relay_caps:{seed}: {:?}", r.violations.first());
        failed += r.stats.failed;
    }
    assert!(failed > 0, "no cap ever cut a session");
}

/// Gateways that try their routes in reverse priority order send requests
/// for the static route to agents: the ingress routing check (against the
/// model's hand-written table) must catch it on every seed, and the same
/// seeds must pass without the bug.
#[test]
fn ingress_routing_catches_reversed_route_priorities() {
    let s = scenario("ingress_smoke");
    let bug =
        RunOptions { bug: Some(InjectedBug::IngressPriorityReversed), ..RunOptions::default() };
    for seed in 0..6 {
        let clean = run(&s, seed, &RunOptions::default());
        assert!(
            clean.passed(),
            "seed {seed} fails without the bug: {:?}",
            clean.violations.first()
        );
        let buggy = run(&s, seed, &bug);
        assert!(
            buggy.violations.iter().any(|v| v.invariant == "routing"),
            "seed {seed}: reversed priorities went unnoticed: {:?}",
            buggy.violations.first()
        );
    }
}

/// A gateway HTTP side that never reports the end of a forwarded request
/// leaves the request in the gateway's table: the no-leaks check must say so.
#[test]
fn ingress_leak_check_catches_a_forgotten_request_end() {
    let s = scenario("ingress_smoke");
    let bug = RunOptions { bug: Some(InjectedBug::IngressForgetsDone), ..RunOptions::default() };
    for seed in 0..6 {
        let buggy = run(&s, seed, &bug);
        assert!(
            buggy.violations.iter().any(|v| v.invariant == "no-leaks"),
            "seed {seed}: the leak went unnoticed: {:?}",
            buggy.violations.first()
        );
    }
}

/// A gateway that keeps using an agent after its connection to it closed
/// (never told of the close) opens streams over the dead connection: the
/// availability check must catch it wherever a partition kills a
/// gateway–agent connection and a request follows. Of the first 20 seeds of
/// `ingress_partition`, six do today (3, 6, 7, 10, 12, 17; 49 of the
/// sweep's 200 seeds): at least four must, and each must pass without the
/// bug.
#[test]
fn ingress_availability_catches_a_gateway_using_a_closed_agent_connection() {
    let s = scenario("ingress_partition");
    let bug = RunOptions { bug: Some(InjectedBug::IngressStaleAgent), ..RunOptions::default() };
    let mut caught = Vec::new();
    for seed in 0..20 {
        let buggy = run(&s, seed, &bug);
        if buggy.violations.iter().any(|v| v.invariant == "availability") {
            caught.push(seed);
        }
    }
    assert!(caught.len() >= 4, "the stale agent was caught only on seeds {caught:?} of 0..20");
    for seed in caught {
        let clean = run(&s, seed, &RunOptions::default());
        assert!(
            clean.passed(),
            "seed {seed} fails without the bug: {:?}",
            clean.violations.first()
        );
    }
}
