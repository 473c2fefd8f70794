//! SOCKS4 and SOCKS4a end to end with a real client: `curl --socks4` and
//! `curl --socks4a` through an in-process hub, exit and client (over libp2p
//! on 127.0.0.1) to a local HTTP origin, on a `socks5` listener and on a
//! `both` listener; and a listener that requires SOCKS5 credentials refusing
//! SOCKS4, as curl sees it; the client's metrics count each outcome by
//! its reason, as for SOCKS5.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns fail the test by panicking

use crate::common::e2e::*;
use crate::common::live::{scrape, value};
use std::net::SocketAddr;
use std::process::{Command, Output};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const BODY: &str = "hello over socks4\n";

/// A client with a `socks5` listener, a `both` listener and a `both`
/// listener that requires a user (in that order), with a metrics endpoint.
fn client_toml(hubs: &str) -> String {
    format!(
        r#"metrics = "127.0.0.1:0"
{hubs}
[client]
credential = {{ id = "client", token = "t-client-token-01234567" }}
refresh_ms = 200
[[client.listeners]]
bind = "127.0.0.1:0"
protocol = "socks5"
[[client.listeners]]
bind = "127.0.0.1:0"
protocol = "both"
[[client.listeners]]
bind = "127.0.0.1:0"
protocol = "both"
users = [{{ name = "alice", password = "pw" }}]
"#
    )
}

/// An HTTP origin answering every request with [`BODY`], then closing.
async fn page_origin() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
                    BODY.len()
                );
                let _ = s.write_all(answer.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// Runs curl (bounded by its own `--max-time`) off the runtime's threads.
async fn curl(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new("curl").args(["-sS", "--max-time", "20"]).args(&args).output().unwrap()
    })
    .await
    .unwrap()
}

fn fetched(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what}: curl failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), BODY, "{what}");
}

#[test]
fn curl_socks4_and_socks4a_fetch_through_the_mesh() {
    serial(Duration::from_secs(90), async {
        let hub_id = identity(41);
        let hub = node(&hub_toml(0), &hub_id, 41).await;
        let hubs = hubs_toml(&hub_id, &hub.p2p_addrs[0].to_string());
        let exit = node(&exit_toml(&hubs), &identity(42), 42).await;
        let client = node(&client_toml(&hubs), &identity(43), 43).await;
        wait_known_exits(&client, 1, Duration::from_secs(10)).await;
        let [socks5, both, strict] = client.node.listen_addrs[..] else {
            panic!("three listeners: {:?}", client.node.listen_addrs)
        };
        let origin = page_origin().await;
        let by_name = format!("http://localhost:{}/", origin.port());
        let by_ip = format!("http://{origin}/");

        // SOCKS4a: the name goes to the exit, which resolves it.
        for (what, listener) in [("socks5 listener", socks5), ("both listener", both)] {
            let out = curl(vec!["--socks4a".into(), listener.to_string(), by_name.clone()]).await;
            fetched(&format!("--socks4a on the {what}"), &out);
            let out = curl(vec!["--socks4".into(), listener.to_string(), by_ip.clone()]).await;
            fetched(&format!("--socks4 on the {what}"), &out);
        }
        // The user id carries session parameters like a SOCKS5 username.
        let proxy = format!("socks4a://u-session-abc@{both}");
        let out = curl(vec!["--proxy".into(), proxy, by_name.clone()]).await;
        fetched("socks4a with session params in the user id", &out);

        // SOCKS5 and HTTP CONNECT on the same `both` listener are unchanged.
        let out = curl(vec!["--socks5-hostname".into(), both.to_string(), by_name.clone()]).await;
        fetched("--socks5-hostname on the both listener", &out);
        let proxy = format!("http://{both}");
        let out = curl(vec!["--proxytunnel".into(), "--proxy".into(), proxy, by_ip.clone()]).await;
        fetched("HTTP CONNECT on the both listener", &out);

        // A listener that requires credentials refuses SOCKS4 (0x5B): curl
        // reports a proxy handshake error (CURLE_PROXY, 97) and fetches nothing.
        for flag in ["--socks4a", "--socks4"] {
            let out = curl(vec![flag.into(), strict.to_string(), by_ip.clone()]).await;
            assert_eq!(out.status.code(), Some(97), "{flag}: {out:?}");
            assert!(out.stdout.is_empty(), "{flag}");
        }
        // A destination failure is 0x5B too (nothing listens on the port).
        let closed = format!("http://127.0.0.1:{}/", free_port());
        let out = curl(vec!["--socks4".into(), both.to_string(), closed]).await;
        assert_eq!(out.status.code(), Some(97), "refused destination: {out:?}");

        // While SOCKS5 with the user's credentials still works there.
        let proxy = format!("socks5h://alice:pw@{strict}");
        let out = curl(vec!["--proxy".into(), proxy, by_name.clone()]).await;
        fetched("socks5 with credentials on the auth listener", &out);

        // Counted like SOCKS5: 8 fetches established, the two SOCKS4
        // refusals of the auth listener as handshake failures, the closed
        // port as a destination failure.
        let body = scrape(client.node.metrics_addr.expect("client metrics")).await;
        let count = |series: &str| value(&body, series);
        assert_eq!(count("meshproxy_sessions_established_total{role=\"client\"}"), 8.0);
        assert_eq!(count("meshproxy_sessions_failed_total{reason=\"handshake\"}"), 2.0);
        assert_eq!(count("meshproxy_sessions_failed_total{reason=\"destination\"}"), 1.0);

        client.node.shutdown().await;
        exit.node.shutdown().await;
        hub.node.shutdown().await;
    });
}
