//! Fuzz target `control_request`: the check is
//! `meshproxy::ops::control::protocol::fuzz_request` (bytes split into
//! request lines as the control socket splits them, each parsed), so the
//! committed corpus also replays in the driver's tests.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| meshproxy::ops::control::protocol::fuzz_request(data));
