//! Property tests. The reference matcher here is written from the rules in
//! the module docs, sharing no code with `routes.rs` or `normalize.rs`.

use super::balance::NO_AFFINITY;
use super::head;
use super::routes::stat;
use crate::http_head::{self, HeadLimits, Parsed};
use crate::ids::PeerId;
use crate::ingress::{
    Affinity, Balance, BalanceState, Candidate, HashOn, Outcome, Refusal, Request, RouteSpec,
    RouteTable, Snapshot,
};
use proptest::prelude::*;
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;
use std::collections::BTreeMap;

/// Naive percent-decoding (valid escapes assumed).
fn decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

fn ref_segments(raw: &str) -> Vec<Vec<u8>> {
    if raw == "/" {
        return vec![vec![]];
    }
    raw[1..].split('/').map(decode).collect()
}

fn ref_host_matches(pattern: &str, host: &str) -> bool {
    let p = pattern.to_ascii_lowercase();
    let p = p.strip_suffix('.').unwrap_or(&p);
    let host_labels: Vec<&str> = host.split('.').collect();
    match p.strip_prefix("*.") {
        Some(suffix) => {
            let suffix_labels: Vec<&str> = suffix.split('.').collect();
            host_labels.len() == suffix_labels.len() + 1 && host_labels[1..] == suffix_labels[..]
        }
        None => host_labels == p.split('.').collect::<Vec<_>>(),
    }
}

fn ref_prefix_matches(prefix: &str, path: &[Vec<u8>]) -> bool {
    if prefix == "/" {
        return true;
    }
    let want = ref_segments(prefix);
    path.len() >= want.len() && path[..want.len()] == want[..]
}

#[derive(Debug, PartialEq, Eq)]
enum Expect {
    NoRoute,
    Refused(Option<String>),
    Routed(Option<String>),
}

fn reference(
    routes: &[RouteSpec],
    default: Option<bool>,
    host: Option<&str>,
    raw_path: &str,
) -> Expect {
    let segs = ref_segments(raw_path);
    let mut best: Option<&RouteSpec> = None;
    for r in routes {
        let host_ok = match (&r.host, host) {
            (None, _) => true,
            (Some(p), Some(h)) => ref_host_matches(p, h),
            (Some(_), None) => false,
        };
        let path_ok = r.path_prefix.as_ref().is_none_or(|p| ref_prefix_matches(p, &segs));
        if host_ok && path_ok && best.is_none_or(|b| (r.priority, &r.id) < (b.priority, &b.id)) {
            best = Some(r);
        }
    }
    let (id, strict) = match (best, default) {
        (Some(r), _) => (Some(r.id.clone()), r.strict),
        (None, Some(strict)) => (None, strict),
        (None, None) => return Expect::NoRoute,
    };
    let encoded_sep = segs.iter().any(|s| s.contains(&b'/') || s.contains(&b'\\'));
    if strict && encoded_sep {
        Expect::Refused(id)
    } else {
        Expect::Routed(id)
    }
}

const PATTERNS: [&str; 6] =
    ["a.example", "*.example", "*.a.example", "example", "A.Example.", "b.example"];
const HOSTS: [&str; 6] =
    ["a.example", "b.example", "x.a.example", "example", "y.x.a.example", "c.other"];
const PREFIXES: [&str; 6] = ["/", "/api", "/api/v1", "/%61pi", "/b", "/api/%76%31"];
const SEGMENTS: [&str; 10] = ["api", "apix", "v1", "%61pi", "a%2Fb", "", "b", "x", "%5c", "%76%31"];

fn arb_route(i: usize) -> impl Strategy<Value = RouteSpec> {
    (
        0u32..4,
        prop::option::of(prop::sample::select(&PATTERNS[..])),
        prop::option::of(prop::sample::select(&PREFIXES[..])),
        any::<bool>(),
    )
        .prop_filter("host or prefix", |(_, h, p, _)| h.is_some() || p.is_some())
        .prop_map(move |(priority, host, prefix, strict)| RouteSpec {
            id: format!("r{}", (i * 7) % 10),
            priority,
            host: host.map(Into::into),
            path_prefix: prefix.map(Into::into),
            strict,
            target: stat(200),
        })
}

fn arb_table() -> impl Strategy<Value = Vec<RouteSpec>> {
    (0usize..10).prop_flat_map(|n| (0..n).map(arb_route).collect::<Vec<_>>())
}

fn arb_path() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(&SEGMENTS[..]), 1..4)
        .prop_map(|s| format!("/{}", s.join("/")))
}

proptest! {
    #[test]
    fn table_decision_equals_reference(
        routes in arb_table(),
        default in prop::option::of(any::<bool>()),
        host in prop::sample::select(&HOSTS[..]),
        no_host in prop::bool::weighted(0.1),
        path in arb_path(),
    ) {
        let target = stat(200);
        let table = RouteTable::new("web", &routes, default.map(|s| (s, &target))).unwrap();
        let snap = Snapshot::new(9, BTreeMap::from([("web".to_owned(), table)])).unwrap();
        let text = if no_host {
            format!("GET {path} HTTP/1.0\r\n\r\n")
        } else {
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n")
        };
        let req = Request::from_head(&head(&text)).unwrap();
        let d = snap.decide("web", &req);
        prop_assert_eq!(d.version, 9);
        let got = match d.outcome {
            Outcome::Refuse(Refusal::NoRoute) => Expect::NoRoute,
            Outcome::Refuse(Refusal::Path(_)) => Expect::Refused(d.route),
            _ => Expect::Routed(d.route),
        };
        let want = reference(&routes, default, (!no_host).then_some(host), &path);
        prop_assert_eq!(got, want);
    }

    #[test]
    fn normalisation_is_idempotent(
        host in "[A-Za-z0-9.:\\[\\]-]{1,20}",
        path in "/[a-zA-Z0-9%./\\\\~-]{0,30}",
        query in prop::option::of("[a-z=&%0-9]{0,10}"),
    ) {
        let target = match &query { Some(q) => format!("{path}?{q}"), None => path.clone() };
        let text = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let Ok(Parsed::Complete(h)) = http_head::parse(text.as_bytes(), HeadLimits::default()) else {
            return Ok(());
        };
        let Ok(once) = Request::from_head(&h) else { return Ok(()) };
        let host2 = once.host.clone().unwrap();
        let target2 = match &once.query { Some(q) => format!("{}?{q}", once.path.raw()), None => once.path.raw().to_owned() };
        let again = Request::from_head(&head(&format!("GET {target2} HTTP/1.1\r\nHost: {host2}\r\n\r\n"))).unwrap();
        prop_assert_eq!(&again, &once);
        // The decoded path equals the reference decoder's.
        let mut joined = Vec::new();
        for s in ref_segments(once.path.raw()) {
            joined.push(b'/');
            joined.extend(s);
        }
        prop_assert_eq!(once.path.decoded(), &joined[..]);
    }

    #[test]
    fn arbitrary_heads_and_paths_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200), path in ".{0,40}") {
        let mut text = b"GET ".to_vec();
        text.extend_from_slice(&bytes);
        if let Ok(Parsed::Complete(h)) = http_head::parse(&text, HeadLimits::default()) {
            let _ = Request::from_head(&h);
        }
        let _ = crate::ingress::Path::parse(&path);
        let _ = crate::ingress::PathPrefix::parse(&path);
        let _ = crate::ingress::HostPattern::parse(&path);
        let _ = crate::ingress::normalize::normalize_authority(&path);
    }

    #[test]
    fn removing_an_agent_moves_only_its_keys(agents in 2u64..12, removed in 0u64..12, keys in prop::collection::vec(any::<u32>(), 1..200)) {
        let removed = removed % agents;
        let all: Vec<Candidate> = (0..agents).map(|i| Candidate { id: PeerId::from_u64(i), weight: 1, active: 0 }).collect();
        let rest: Vec<Candidate> = all.iter().copied().filter(|c| c.id != PeerId::from_u64(removed)).collect();
        let on = Balance::Hash(HashOn::Header("x-k".into()));
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut state = BalanceState::default();
        let mut moved = 0;
        let mut owned = 0;
        for k in &keys {
            let key = k.to_be_bytes();
            let aff = Affinity { client_ip: &[1, 2, 3, 4], header: Some(&key), cookie: None };
            let before = state.pick(&on, &all, &aff, &mut rng).unwrap();
            let after = state.pick(&on, &rest, &aff, &mut rng).unwrap();
            if before == PeerId::from_u64(removed) {
                owned += 1;
            } else {
                prop_assert_eq!(before, after, "a key not on the removed agent moved");
            }
            if before != after {
                moved += 1;
            }
        }
        prop_assert!(moved <= owned);
    }

    #[test]
    fn least_active_never_picks_a_busier_agent(active in prop::collection::vec(0u32..5, 1..10), rounds in 1usize..20) {
        let mut c: Vec<Candidate> = active.iter().enumerate()
            .map(|(i, &a)| Candidate { id: PeerId::from_u64(i as u64), weight: 1, active: a }).collect();
        let mut state = BalanceState::default();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..rounds {
            let least = c.iter().map(|c| c.active).min().unwrap();
            let id = state.pick(&Balance::LeastActive, &c, &NO_AFFINITY, &mut rng).unwrap();
            let chosen = c.iter_mut().find(|c| c.id == id).unwrap();
            prop_assert_eq!(chosen.active, least);
            chosen.active += 1;
        }
    }

    #[test]
    fn weighted_gives_exact_proportions_over_a_cycle(weights in prop::collection::vec(1u32..20, 1..8), cycles in 1usize..3) {
        let c: Vec<Candidate> = weights.iter().enumerate()
            .map(|(i, &w)| Candidate { id: PeerId::from_u64(i as u64), weight: w, active: 0 }).collect();
        let total: u32 = weights.iter().sum();
        let mut state = BalanceState::default();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..cycles {
            let mut count = BTreeMap::new();
            for _ in 0..total {
                *count.entry(state.pick(&Balance::Weighted, &c, &NO_AFFINITY, &mut rng).unwrap()).or_insert(0u32) += 1;
            }
            for cand in &c {
                prop_assert_eq!(count.get(&cand.id).copied().unwrap_or(0), cand.weight);
            }
        }
    }
}
