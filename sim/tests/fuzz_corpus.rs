//! The committed fuzz corpora (`fuzz/corpus/<target>/`) replay through the
//! same checks the fuzz targets run, on the stable toolchain, in every test
//! run: a crash once found and committed stays fixed.

use meshproxy_sim::fuzz::{replay_corpus, TARGETS};
use std::path::Path;

#[test]
fn every_target_has_a_corpus_and_it_replays_clean() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    for target in TARGETS {
        let n = std::fs::read_dir(dir.join(target)).map(Iterator::count).unwrap_or(0);
        assert!(n > 0, "fuzz/corpus/{target} is empty or missing");
    }
    let ran = replay_corpus(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert!(ran >= TARGETS.len());
}

#[test]
fn the_checks_catch_what_they_promise_to() {
    // A valid SOCKS5 greeting + CONNECT in one piece, then in 1-byte pieces.
    let connect = [5u8, 1, 0, 5, 1, 0, 1, 93, 184, 216, 34, 0, 80, b'x'];
    for config in [0u8, 0b0000_0000, 0b1111_1100] {
        let mut input = vec![config];
        input.extend_from_slice(&connect);
        meshproxy_sim::fuzz::socks5(&input);
    }
    // SOCKS4a CONNECT for example.com:80, open listener and auth-required one.
    for config in [0u8, 1, 0b1111_1100] {
        let mut input = vec![config, 4, 1, 0, 80, 0, 0, 0, 1, b'u', 0];
        input.extend_from_slice(b"example.com\0GET /");
        meshproxy_sim::fuzz::socks4(&input);
    }
    meshproxy_sim::fuzz::http_connect(b"\x00CONNECT example.com:443 HTTP/1.1\r\nHost: e\r\n\r\n");
    meshproxy_sim::fuzz::http_forward(b"\x02h:81/x HTTP/1.1\r\nHost: e\r\nProxy-A: 1\r\n\r\nbody");
    meshproxy_sim::fuzz::http_head(
        b"\x00POST / HTTP/1.1\r\nHost: e\r\nContent-Length: 2\r\n\r\nhi",
    );
    meshproxy_sim::fuzz::ingress_route(
        b"\x00GET /api/x?q HTTP/1.1\r\nHost: App.Example:80\r\n\r\n",
    );
    meshproxy_sim::fuzz::ingress_route(b"\x01a.example\n/git/a%2Fb");
    meshproxy_sim::fuzz::ingress_route(b"\x03app.example\n/old/x?y=1");
    // An ingress Open (the documented layout) then an Answer per status, fed in 5-byte pieces.
    let mut open = vec![0b0001_0000u8, 0, 0, 0, 40, 1, 1, 1, 2, 3, 4, 5, 6, 7, 8, 3];
    open.extend_from_slice(
        b"web\x01\xc0\x00\x02\x09\x1f\x90\x01\x0bapp.example\x01\xbb\x03\x07\x08\x09",
    );
    meshproxy_sim::fuzz::ingress_wire(&open);
    let decoded = meshproxy_core::wire::ingress::decode_open(&open[1..]);
    assert!(matches!(decoded, Ok(meshproxy_core::wire::Decoded::Complete { consumed: 44, .. })));
    let answers: Vec<u8> = (0..=8u8).flat_map(|code| [0, 0, 0, 2, 2, code]).collect();
    meshproxy_sim::fuzz::ingress_wire(&[&[0b0001_0001u8][..], &answers].concat());
    meshproxy_sim::fuzz::scenario(b"not = [toml");
    assert!(!meshproxy_sim::fuzz::run("no_such_target", b""));
}
