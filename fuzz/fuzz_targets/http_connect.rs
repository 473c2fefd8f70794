//! Fuzz target `http_connect`: the check is `meshproxy_sim::fuzz::http_connect`, so the
//! committed corpus also replays in the normal test suite.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meshproxy_sim::fuzz::http_connect(data));
