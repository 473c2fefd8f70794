//! Fuzz target `http_forward`: the check is `meshproxy_sim::fuzz::http_forward`, so the
//! committed corpus also replays in the normal test suite.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meshproxy_sim::fuzz::http_forward(data));
