use super::req;
use super::routes::{route, snapshot};
use crate::ids::PeerId;
use crate::ingress::balance::candidates;
use crate::ingress::{
    Affinity, Agent, AgentPool, AgentTarget, Balance, BalanceState, Candidate, HashOn,
    LabelSelector, Outcome, Router, TargetSpec,
};
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;
use std::collections::BTreeMap;

pub(super) fn agent(n: u64, labels: &str, available: bool, active: u32) -> Agent {
    Agent {
        id: PeerId::from_u64(n),
        labels: labels
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k.to_owned(), v.to_owned())
            })
            .collect(),
        services: vec!["web".into()],
        available,
        active,
    }
}

pub(super) fn target(pools: &[(u8, &str, u32)], balance: Balance) -> AgentTarget {
    AgentTarget {
        service: "web".into(),
        pools: pools
            .iter()
            .map(|(g, s, w)| AgentPool {
                group: *g,
                selector: LabelSelector::parse(s).unwrap(),
                weight: *w,
            })
            .collect(),
        balance,
    }
}

pub(super) const NO_AFFINITY: Affinity<'static> =
    Affinity { client_ip: &[127, 0, 0, 1], header: None, cookie: None };

fn ids(c: &[Candidate]) -> Vec<u64> {
    c.iter().map(|c| u64::from_be_bytes(c.id.as_bytes()[..8].try_into().unwrap())).collect()
}

fn n(id: PeerId) -> u64 {
    u64::from_be_bytes(id.as_bytes()[..8].try_into().unwrap())
}

#[test]
fn candidates_are_available_selected_service_offering_lowest_group() {
    let t = target(&[(1, "site=office", 1), (0, "site=home", 3)], Balance::RoundRobin);
    let mut agents = vec![
        agent(5, "site=home", true, 0),
        agent(2, "site=home,x=y", true, 0),
        agent(3, "site=office", true, 0),
        agent(4, "site=home", false, 0),
        agent(1, "site=elsewhere", true, 0),
    ];
    agents.push(Agent { services: vec!["db".into()], ..agent(6, "site=home", true, 0) });
    let c = candidates(&t, &agents);
    assert_eq!(ids(&c), [2, 5]);
    assert!(c.iter().all(|c| c.weight == 3));
    // Group 0 gone: failover to group 1.
    for a in &mut agents {
        if a.labels.get("site").map(String::as_str) == Some("home") {
            a.available = false;
        }
    }
    assert_eq!(ids(&candidates(&t, &agents)), [3]);
    agents[2].available = false;
    assert!(candidates(&t, &agents).is_empty());
    // An agent selected by two pools counts in the lower group, with its weight.
    let t = target(&[(2, "a=1", 7), (1, "a=1", 9), (1, "b=1", 4)], Balance::Weighted);
    let c = candidates(&t, &[agent(1, "a=1", true, 0), agent(2, "b=1", true, 0)]);
    assert_eq!(c.iter().map(|c| (n(c.id), c.weight)).collect::<Vec<_>>(), [(1, 9), (2, 4)]);
}

fn picks(balance: Balance, cands: &[Candidate], k: usize) -> Vec<u64> {
    let mut state = BalanceState::default();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    (0..k).map(|_| n(state.pick(&balance, cands, &NO_AFFINITY, &mut rng).unwrap())).collect()
}

fn cands(spec: &[(u64, u32, u32)]) -> Vec<Candidate> {
    spec.iter()
        .map(|&(i, weight, active)| Candidate { id: PeerId::from_u64(i), weight, active })
        .collect()
}

#[test]
fn round_robin_goes_in_id_order_and_survives_set_changes() {
    let c = cands(&[(1, 1, 0), (2, 1, 0), (3, 1, 0)]);
    assert_eq!(picks(Balance::RoundRobin, &c, 7), [1, 2, 3, 1, 2, 3, 1]);
    let mut state = BalanceState::default();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    assert_eq!(state.pick(&Balance::RoundRobin, &c, &NO_AFFINITY, &mut rng).map(n), Some(1));
    assert_eq!(state.pick(&Balance::RoundRobin, &c, &NO_AFFINITY, &mut rng).map(n), Some(2));
    // Agent 3 leaves, 4 joins: the turn goes on after 2.
    let c2 = cands(&[(1, 1, 0), (2, 1, 0), (4, 1, 0)]);
    assert_eq!(state.pick(&Balance::RoundRobin, &c2, &NO_AFFINITY, &mut rng).map(n), Some(4));
    assert_eq!(state.pick(&Balance::RoundRobin, &c2, &NO_AFFINITY, &mut rng).map(n), Some(1));
    // No candidate: None, and the state does not move.
    let before = state.clone();
    assert_eq!(state.pick(&Balance::RoundRobin, &[], &NO_AFFINITY, &mut rng), None);
    assert_eq!(state, before);
}

#[test]
fn random_is_seeded_and_covers_all() {
    let c = cands(&[(1, 1, 0), (2, 1, 0), (3, 1, 0)]);
    let a = picks(Balance::Random, &c, 300);
    assert_eq!(a, picks(Balance::Random, &c, 300), "same seed, same picks");
    for id in 1..=3 {
        let k = a.iter().filter(|&&x| x == id).count();
        assert!((60..=140).contains(&k), "agent {id} picked {k} times of 300");
    }
}

#[test]
fn least_active_picks_the_least_busy_ties_in_turn() {
    let c = cands(&[(1, 1, 4), (2, 1, 1), (3, 1, 9), (4, 1, 1)]);
    assert_eq!(picks(Balance::LeastActive, &c, 4), [2, 4, 2, 4]);
    let c = cands(&[(1, 1, 0), (2, 1, 5)]);
    assert_eq!(picks(Balance::LeastActive, &c, 3), [1, 1, 1]);
}

#[test]
fn smooth_weighted_interleaves_in_exact_proportions() {
    // nginx's example: weights 5, 1, 1 give a a b a c a a.
    let c = cands(&[(1, 5, 0), (2, 1, 0), (3, 1, 0)]);
    assert_eq!(picks(Balance::Weighted, &c, 7), [1, 1, 2, 1, 3, 1, 1]);
    let c = cands(&[(1, 3, 0), (2, 2, 0)]);
    assert_eq!(picks(Balance::Weighted, &c, 10), [1, 2, 1, 2, 1, 1, 2, 1, 2, 1]);
}

#[test]
fn hash_is_sticky_and_tagged_and_falls_back_to_client_ip() {
    let c = cands(&[(1, 1, 0), (2, 1, 0), (3, 1, 0), (4, 1, 0)]);
    let mut state = BalanceState::default();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let on = Balance::Hash(HashOn::Cookie("sid".into()));
    let mut seen = BTreeMap::new();
    for i in 0u32..200 {
        let key = i.to_be_bytes();
        let aff = Affinity { client_ip: &[10, 0, 0, 1], header: None, cookie: Some(&key) };
        let first = state.pick(&on, &c, &aff, &mut rng).unwrap();
        for _ in 0..3 {
            assert_eq!(state.pick(&on, &c, &aff, &mut rng), Some(first));
        }
        *seen.entry(first).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 4, "keys spread over every agent: {seen:?}");
    // Without the cookie: the client IP decides, as with HashOn::ClientIp.
    let ip = Affinity { client_ip: &[10, 0, 0, 9], header: None, cookie: None };
    let by_ip = state.pick(&Balance::Hash(HashOn::ClientIp), &c, &ip, &mut rng);
    assert_eq!(state.pick(&on, &c, &ip, &mut rng), by_ip);
    let by_header = Balance::Hash(HashOn::Header("x-user".into()));
    assert_eq!(state.pick(&by_header, &c, &ip, &mut rng), by_ip);
}

#[test]
fn router_choose_uses_the_decisions_target_and_keeps_state_per_route() {
    let agents_spec = |sel: &str| TargetSpec::Agents {
        service: "web".into(),
        pools: vec![(0, sel.to_owned(), 1)],
        balance: Balance::RoundRobin,
    };
    let mut r = route("app", 0, None, Some("/"));
    r.target = agents_spec("site=home");
    let mut router = Router::new(snapshot(1, &[r.clone()], None));
    let agents = [
        agent(1, "site=home", true, 0),
        agent(2, "site=home", true, 0),
        agent(3, "site=office", true, 0),
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let old = router.decide("web", &req("h", "/"));
    assert!(matches!(old.outcome, Outcome::Forward(_)));
    assert_eq!(router.choose(&old, &agents, &NO_AFFINITY, &mut rng).map(n), Some(1));
    // A reload moves the route to site=office; the old decision keeps site=home.
    r.target = agents_spec("site=office");
    router.reload(snapshot(2, &[r.clone()], None)).unwrap();
    assert_eq!(router.balance_states(), 1, "the route kept its state");
    assert_eq!(router.choose(&old, &agents, &NO_AFFINITY, &mut rng).map(n), Some(2));
    let new = router.decide("web", &req("h", "/"));
    assert_eq!(new.version, 2);
    assert_eq!(router.choose(&new, &agents, &NO_AFFINITY, &mut rng).map(n), Some(3));
    // Unavailable agents are never chosen; no candidate leaves state alone.
    let down = [agent(3, "site=office", false, 0)];
    assert_eq!(router.choose(&new, &down, &NO_AFFINITY, &mut rng), None);
    // A non-forward decision chooses nothing.
    let mut s = route("s", 0, None, Some("/"));
    s.target = super::routes::stat(200);
    router.reload(snapshot(3, &[s], None)).unwrap();
    assert_eq!(router.balance_states(), 0, "state of a route gone is dropped");
    let d = router.decide("web", &req("h", "/"));
    assert_eq!(router.choose(&d, &agents, &NO_AFFINITY, &mut rng), None);
    assert_eq!(router.balance_states(), 0);
}

#[test]
fn affinity_reads_the_named_header_or_cookie() {
    let h = super::head("GET / HTTP/1.1\r\nHost: h\r\nX-User: u1\r\nCookie: a=1; sid=s9\r\n\r\n");
    let ip = [10, 0, 0, 1];
    let by_header = Affinity::of(&Balance::Hash(HashOn::Header("x-user".into())), &h, &ip);
    assert_eq!((by_header.header, by_header.cookie), (Some(&b"u1"[..]), None));
    let by_cookie = Affinity::of(&Balance::Hash(HashOn::Cookie("sid".into())), &h, &ip);
    assert_eq!((by_cookie.header, by_cookie.cookie), (None, Some(&b"s9"[..])));
    let none = Affinity::of(&Balance::RoundRobin, &h, &ip);
    assert_eq!((none.header, none.cookie, none.client_ip), (None, None, &ip[..]));
}

#[test]
fn default_route_forwards_with_its_own_state() {
    let spec = TargetSpec::Agents {
        service: "web".into(),
        pools: vec![(0, "site=home".into(), 1)],
        balance: Balance::RoundRobin,
    };
    let table = crate::ingress::RouteTable::new("web", &[], Some((true, &spec))).unwrap();
    let snap =
        crate::ingress::Snapshot::new(1, BTreeMap::from([("web".to_owned(), table)])).unwrap();
    let mut router = Router::new(snap);
    let d = router.decide("web", &req("any.host", "/x"));
    assert_eq!(d.route, None);
    let agents = [agent(1, "site=home", true, 0), agent(2, "site=home", true, 0)];
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let got: Vec<u64> =
        (0..3).filter_map(|_| router.choose(&d, &agents, &NO_AFFINITY, &mut rng)).map(n).collect();
    assert_eq!(got, [1, 2, 1]);
    assert_eq!(router.balance_states(), 1);
}
