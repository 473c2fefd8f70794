//! Property tests: a [`Node`] of each role, driven by a faithful model driver
//! through arbitrary sequences of inputs, never panics, keeps its deadlines
//! and bounds, never touches a stream it gave up, and holds nothing once
//! every stream is closed and every deadline has passed.

// Helpers outside `#[test]` fns may unwrap too: a panic there is a failed test.
#![allow(clippy::unwrap_used)]

mod common;
mod model;

use meshproxy_core::wire::proxy::PROXY_VERSION;
use model::*;
use proptest::prelude::*;

fn payload() -> impl Strategy<Value = Payload> {
    let leaf = prop_oneof![
        3 => proptest::collection::vec(any::<u8>(), 0..48).prop_map(Payload::Raw),
        1 => Just(Payload::SocksGreeting),
        4 => (0..6usize, proptest::option::of(0..3usize))
            .prop_map(|(target, user)| Payload::SocksAll { target, user }),
        2 => (0..6usize).prop_map(|target| Payload::HttpConnect { target }),
        4 => (
            0..6usize,
            prop_oneof![4 => Just(PROXY_VERSION), 1 => any::<u8>()],
            any::<bool>(),
            prop_oneof![3 => Just(1u8), 1 => 0..5u8],
        )
            .prop_map(|(target, version, session, ticket)| {
                Payload::ProxyRequest { target, version, session, ticket }
            }),
        1 => (0..2_000u32).prop_map(Payload::HubTicket),
        1 => Just(Payload::HubRenewTicket),
        4 => (0..10u8, proptest::collection::vec(any::<u8>(), 0..8))
            .prop_map(|(status, trailing)| Payload::ProxyResponse { status, trailing }),
        2 => any::<[u8; 4]>().prop_map(Payload::HubChallenge),
        3 => (any::<bool>(), prop_oneof![4 => Just(true), 1 => Just(false)])
            .prop_map(|(role, good)| Payload::HubAuth { role, good }),
        2 => Just(Payload::HubAuthOk),
        2 => proptest::collection::vec(0..3u8, 0..3).prop_map(Payload::HubPeers),
        1 => (0..120u32).prop_map(Payload::HubRegistered),
        1 => (0..120u32).prop_map(Payload::HubHeartbeatAck),
        1 => (0..10u8).prop_map(Payload::HubError),
        2 => Just(Payload::HubRegister),
        2 => Just(Payload::HubHeartbeat),
        2 => (0..70u16).prop_map(Payload::HubFind),
        1 => (0..3u8).prop_map(Payload::HubResolve),
    ];
    let any_payload = leaf.prop_recursive(1, 2, 1, |inner| {
        (inner, 0..64usize).prop_map(|(p, n)| Payload::Truncated(Box::new(p), n))
    });
    prop_oneof![
        2 => any_payload,
        3 => any::<u8>().prop_map(Payload::Fitting),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..4u8).prop_map(|listener| Op::Accept { listener }),
        4 => (0..6usize, any::<bool>()).prop_map(|(peer, hub)| Op::Inbound { peer, hub }),
        14 => (any::<usize>(), payload(), proptest::option::of(0..80usize))
            .prop_map(|(stream, payload, split)| Op::Data { stream, payload, split }),
        3 => (any::<usize>(), any::<bool>()).prop_map(|(stream, reset)| Op::Closed { stream, reset }),
        4 => (0..6usize, any::<bool>()).prop_map(|(peer, relayed)| Op::PeerUp { peer, relayed }),
        1 => (0..6usize, 0..3u8).prop_map(|(peer, which)| Op::PeerDown { peer, which }),
        1 => (0..3u8).prop_map(Op::Reachability),
        2 => (0..2usize, 0..3u8, proptest::option::of(0..120u16))
            .prop_map(|(hub, answer, expires_s)| Op::Reservation { hub, answer, expires_s }),
        1 => any::<usize>().prop_map(|which| Op::PunchFailed { which }),
        2 => (0..6usize).prop_map(|peer| Op::DialFailed { peer }),
        5 => any::<usize>().prop_map(|which| Op::Opened { which }),
        1 => any::<usize>().prop_map(|which| Op::Refused { which }),
        3 => (
            any::<usize>(),
            prop_oneof![
                3 => proptest::collection::vec(0..5usize, 0..4).prop_map(Ok),
                1 => any::<bool>().prop_map(Err),
            ]
        )
            .prop_map(|(which, result)| Op::Resolved { which, result }),
        3 => any::<usize>().prop_map(|which| Op::OriginUp { which }),
        1 => (any::<usize>(), 0..9u8).prop_map(|(which, status)| Op::OriginFailed { which, status }),
        2 => (any::<usize>(), 0..4u8).prop_map(|(which, how)| Op::SpliceEnded { which, how }),
        5 => prop_oneof![3 => 0..2_000u32, 1 => 0..40_000u32].prop_map(|ms| Op::Advance { ms }),
        1 => (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..24))
            .prop_map(|(persisted, raw)| Op::Restore { persisted, raw }),
        60 => any::<u8>().prop_map(Op::Progress),
    ]
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op(), 0..200)
}

/// The committed `core_model` fuzz corpus replays as part of the tests.
#[test]
fn core_model_fuzz_corpus_replays() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/core_model");
    let mut ran = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        let (config, seed, ops) = from_fuzz(&data);
        run(config, seed, &ops);
        ran += 1;
    }
    assert!(ran > 0, "no corpus in {}", dir.display());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn client_node_stays_sound(seed in any::<u64>(), ops in ops()) {
        run(client_node(), seed, &ops);
    }

    #[test]
    fn exit_node_stays_sound(seed in any::<u64>(), ops in ops()) {
        run(exit_node(), seed, &ops);
    }

    #[test]
    fn hub_node_stays_sound(seed in any::<u64>(), ops in ops()) {
        run(hub_node(), seed, &ops);
    }

    #[test]
    fn all_roles_node_stays_sound(seed in any::<u64>(), ops in ops()) {
        run(all_roles(), seed, &ops);
    }
}
