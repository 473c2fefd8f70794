//! Fuzz target `noise_duplex`: the check is `meshproxy::p2p::noise::fuzz::duplex`
//! (two Noise streams both ways over a pipe that writes and reads short and
//! returns Pending and Interrupted), so the committed corpus also replays in
//! the driver's tests.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meshproxy::p2p::noise::fuzz::duplex(data));
