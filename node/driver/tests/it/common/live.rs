//! Helpers for tests that run whole nodes over real libp2p on 127.0.0.1 in
//! this process: start a node from TOML, speak SOCKS5 to a client listener,
//! scrape a `/metrics` endpoint.
#![allow(clippy::unwrap_used)]

use meshproxy::ops::config::FileConfig;
use meshproxy::ops::identity::Identity;
use meshproxy::ops::launch::{start, NetNode};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A node from `toml`, with the identity (and seed) `secret` names.
pub async fn node(toml: &str, secret: u8) -> NetNode {
    let file = FileConfig::parse(toml).unwrap();
    start(&file, &Identity::from_secret([secret; 32]), u64::from(secret)).await.unwrap()
}

/// SOCKS5 CONNECT through the client listener; returns the reply code and the stream.
pub async fn socks_connect(listener: SocketAddr, target: SocketAddr) -> (u8, TcpStream) {
    let mut app = TcpStream::connect(listener).await.unwrap();
    let SocketAddr::V4(t) = target else { panic!("IPv4 target expected") };
    let mut request = vec![5, 1, 0, 5, 1, 0, 1];
    request.extend_from_slice(&t.ip().octets());
    request.extend_from_slice(&t.port().to_be_bytes());
    app.write_all(&request).await.unwrap();
    let mut reply = [0u8; 12];
    app.read_exact(&mut reply).await.unwrap();
    assert_eq!(&reply[..2], &[5, 0], "method selection");
    (reply[3], app)
}

/// One scrape with a plain HTTP/1.1 GET; checks the head and returns the body.
pub async fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n").await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("Content-Type: application/openmetrics-text"), "{head}");
    assert!(body.ends_with("# EOF\n"), "a complete exposition");
    body.to_owned()
}

/// The value of one series (`name` or `name{labels}`, exactly as encoded).
pub fn value(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in\n{body}"))
}
