//! The `/metrics` endpoint of a real in-process mesh (hub, exit, client over
//! libp2p on 127.0.0.1): after one SOCKS5 session carrying known bytes and one
//! policy denial, each node's scrape shows what happened on it.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns fail the test by panicking

use crate::common::echo_origin;
use crate::common::live::{node, scrape, socks_connect, value};
use meshproxy::ops::assemble::StartError;
use meshproxy::ops::config::FileConfig;
use meshproxy::ops::identity::Identity;
use meshproxy::ops::launch::{start, RunError};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{sleep, timeout, Instant};

/// Scrapes until `series` reaches `at_least`, or fails at the deadline.
async fn until_at_least(addr: SocketAddr, series: &str, at_least: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let body = scrape(addr).await;
        if value(&body, series) >= at_least {
            return body;
        }
        assert!(Instant::now() < deadline, "{series} stayed below {at_least}:\n{body}");
        sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_node_scrape_shows_its_part_of_a_session_and_a_denial() {
    timeout(Duration::from_secs(60), async {
        let origin = echo_origin().await;
        let hub_id = Identity::from_secret([21; 32]);
        let hub = node(
            r#"listen = ["/ip4/127.0.0.1/tcp/0"]
metrics = "127.0.0.1:0"
[hub]
keys = [{ id = "exit", token = "t-exit-token-0123456789", roles = ["exit"], max_registrations = 4 }, { id = "client", token = "t-client-token-01234567" }]
"#,
            21,
        )
        .await;
        let hub_addr = hub.p2p_addrs.first().expect("hub listens").clone();
        let hubs =
            format!("[[hubs]]\npeer = \"{}\"\naddrs = [\"{hub_addr}\"]\n", hub_id.peer_id_string());
        let exit = node(
            &format!(
                r#"listen = ["/ip4/127.0.0.1/tcp/0"]
metrics = "127.0.0.1:0"
{hubs}
[exit]
credential = {{ id = "exit", token = "t-exit-token-0123456789" }}
allow = ["127.0.0.1:{}"]
"#,
                origin.port()
            ),
            22,
        )
        .await;
        let client = node(
            &format!(
                r#"metrics = "127.0.0.1:0"
{hubs}
[client]
credential = {{ id = "client", token = "t-client-token-01234567" }}
refresh_ms = 200
[[client.listeners]]
bind = "127.0.0.1:0"
protocol = "socks5"
"#
            ),
            23,
        )
        .await;
        let (hub_m, exit_m, client_m) = (
            hub.node.metrics_addr.expect("hub metrics"),
            exit.node.metrics_addr.expect("exit metrics"),
            client.node.metrics_addr.expect("client metrics"),
        );
        assert_ne!(client_m.port(), 0, "the real port is reported");
        while client.node.status().await.unwrap().known_exits == 0 {
            sleep(Duration::from_millis(20)).await;
        }

        // N bytes up, echoed back down; the session ends when both sides finish.
        const N: usize = 100_000;
        let listener = client.node.listen_addrs[0];
        let (code, mut app) = socks_connect(listener, origin).await;
        assert_eq!(code, 0, "SOCKS5 success");
        let payload: Vec<u8> = (0..N).map(|i| (i % 251) as u8).collect();
        let (mut r, mut w) = app.split();
        let send = async {
            w.write_all(&payload).await.unwrap();
            w.shutdown().await.unwrap();
        };
        let mut echoed = Vec::new();
        let recv = async { r.read_to_end(&mut echoed).await.unwrap() };
        tokio::join!(send, recv);
        assert_eq!(echoed.len(), N);
        drop(app);

        let n = N as f64;
        let body =
            until_at_least(client_m, "meshproxy_session_bytes_total{direction=\"down\"}", n).await;
        assert!(value(&body, "meshproxy_session_bytes_total{direction=\"up\"}") >= n, "{body}");
        assert!(value(&body, "meshproxy_sessions_established_total{role=\"client\"}") >= 1.0);
        assert!(value(&body, "meshproxy_session_setup_seconds_count") >= 1.0, "{body}");
        assert!(value(&body, "meshproxy_app_connections_total") >= 1.0);
        assert!(value(&body, "meshproxy_peer_connections{path=\"direct\"}") >= 1.0, "{body}");
        assert_eq!(value(&body, "meshproxy_sessions_open{role=\"client\"}"), 0.0, "{body}");

        let body =
            until_at_least(exit_m, "meshproxy_session_bytes_total{direction=\"up\"}", n).await;
        assert!(value(&body, "meshproxy_hub_registrations_total") >= 1.0, "{body}");
        assert_eq!(value(&body, "meshproxy_hubs_registered"), 1.0, "{body}");
        assert!(value(&body, "meshproxy_sessions_established_total{role=\"exit\"}") >= 1.0);
        assert_eq!(value(&body, "meshproxy_exit_denials_total"), 0.0, "nothing denied yet");

        let body = scrape(hub_m).await;
        assert_eq!(value(&body, "meshproxy_directory_exits"), 1.0, "{body}");
        assert_eq!(value(&body, "meshproxy_admitted_peers"), 2.0, "the exit and the client: {body}");
        assert!(value(&body, "meshproxy_directory_registrations_total") >= 1.0);
        assert_eq!(value(&body, "meshproxy_admission_denials_total{reason=\"bad_proof\"}"), 0.0);
        assert_eq!(value(&body, "meshproxy_exit_not_admitted_total{reason=\"missing\"}"), 0.0);

        // A loopback port the exit does not allow: counted as a denial on the exit,
        // and as a failed session (the destination refused) on the client.
        let denied = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (code, _app) = socks_connect(listener, denied.local_addr().unwrap()).await;
        assert_eq!(code, 2, "policy denial is SOCKS5 0x02");
        until_at_least(exit_m, "meshproxy_exit_denials_total", 1.0).await;
        until_at_least(client_m, "meshproxy_sessions_failed_total{reason=\"destination\"}", 1.0)
            .await;

        client.node.shutdown().await;
        exit.node.shutdown().await;
        hub.node.shutdown().await;
        assert!(TcpStream::connect(client_m).await.is_err(), "the endpoint stopped with the node");
    })
    .await
    .expect("the metrics mesh test finished in time");
}

#[tokio::test]
async fn an_address_in_use_is_a_start_error_naming_it() {
    timeout(Duration::from_secs(20), async {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        let file = FileConfig::parse(&format!("metrics = \"{addr}\"\n[hub]\n")).unwrap();
        let err = start(&file, &Identity::from_secret([24; 32]), 24).await.unwrap_err();
        assert!(matches!(err, RunError::Start(StartError::Metrics { addr: a, .. }) if a == addr));
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    })
    .await
    .expect("in time");
}
