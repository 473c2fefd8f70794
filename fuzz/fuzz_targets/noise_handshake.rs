//! Fuzz target `noise_handshake`: the check is `meshproxy::p2p::noise::fuzz::handshake`
//! (our initiator and responder against raw bytes, and against real keys
//! carrying a hostile payload), so the committed corpus also replays in the
//! driver's tests.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meshproxy::p2p::noise::fuzz::handshake(data));
