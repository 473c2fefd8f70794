//! Fuzz target `core_model`: a `Node` of each role driven through an
//! arbitrary input sequence by the faithful model driver of the core's
//! property tests, which checks every output and, at the end, that nothing
//! leaked. The corpus replays in `node/core/tests/machines_prop.rs`.
#![no_main]
// The model is test code shared by path: helpers may unwrap, and not all are used.
#![allow(dead_code, clippy::unwrap_used)]

#[path = "../../node/core/tests/common/mod.rs"]
mod common;
#[path = "../../node/core/tests/model/mod.rs"]
mod model;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (config, seed, ops) = model::from_fuzz(data);
    model::run(config, seed, &ops);
});
