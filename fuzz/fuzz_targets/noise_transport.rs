//! Fuzz target `noise_transport`: the check is `meshproxy::p2p::noise::fuzz::received`
//! (received Noise transport bytes, honest, tampered or garbage), so the
//! committed corpus also replays in the driver's tests.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meshproxy::p2p::noise::fuzz::received(data));
