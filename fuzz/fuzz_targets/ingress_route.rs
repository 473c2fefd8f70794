//! Fuzz target `ingress_route`: the check is `meshproxy_sim::fuzz::ingress_route`,
//! so the committed corpus also replays in the normal test suite.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meshproxy_sim::fuzz::ingress_route(data));
