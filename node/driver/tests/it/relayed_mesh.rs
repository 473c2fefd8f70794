//! A hub, an exit that says it is behind NAT (`reachability = "private"`, `relay =
//! "always"`, no address advertised) and a client, each from TOML over real libp2p on
//! 127.0.0.1: the exit reserves at the hub's relay, the client reaches it only through a
//! relay circuit, a SOCKS5 fetch gets through, and the status and metrics say so.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns fail the test by panicking

use crate::common::echo_origin;
use crate::common::live::{node, scrape, socks_connect, value};
use meshproxy::ops::identity::Identity;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{sleep, timeout, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks5_reaches_an_exit_behind_nat_through_the_hubs_relay() {
    timeout(Duration::from_secs(60), async {
        let origin = echo_origin().await;
        let hub_id = Identity::from_secret([21; 32]);
        let hub = node(
            r#"listen = ["/ip4/127.0.0.1/tcp/0"]
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
reachability = "private"
{hubs}
[exit]
credential = {{ id = "exit", token = "t-exit-token-0123456789" }}
allow = ["127.0.0.1:{}"]
relay = "always"
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
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let exit_status = exit.node.status().await.unwrap();
            let client_status = client.node.status().await.unwrap();
            if exit_status.reservations == 1 && client_status.known_exits > 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no reservation or no exit known: exit {exit_status:?}, client {client_status:?}"
            );
            sleep(Duration::from_millis(20)).await;
        }

        // 256 KiB each way through client → relay circuit → exit → origin, byte for byte.
        let listener = client.node.listen_addrs[0];
        let (code, mut app) = socks_connect(listener, origin).await;
        assert_eq!(code, 0, "SOCKS5 success through the relay");
        let payload: Vec<u8> =
            (0..1u32 << 18).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let (mut r, mut w) = app.split();
        let send = async {
            w.write_all(&payload).await.unwrap();
            w.shutdown().await.unwrap();
        };
        let mut echoed = Vec::new();
        let recv = async { r.read_to_end(&mut echoed).await.unwrap() };
        tokio::join!(send, recv);
        assert!(echoed == payload, "echoed {} bytes, differing from what was sent", echoed.len());

        // The exit was dialed through the relay: it advertised no address to dial.
        let client_metrics = scrape(client.node.metrics_addr.unwrap()).await;
        let relayed = "meshproxy_peer_connections_opened_total{path=\"relayed\"}";
        assert!(value(&client_metrics, relayed) >= 1.0, "{client_metrics}");
        let exit_metrics = scrape(exit.node.metrics_addr.unwrap()).await;
        assert!(value(&exit_metrics, relayed) >= 1.0, "{exit_metrics}");
        assert_eq!(value(&exit_metrics, "meshproxy_relay_reservations"), 1.0);
        assert!(value(&exit_metrics, "meshproxy_relay_reservations_accepted_total") >= 1.0);
        let status = client.node.status().await.unwrap();
        assert!(status.relayed_conns + status.direct_conns >= 2, "hub and exit: {status:?}");
        // On loopback DCUtR gets through: the relayed connection is upgraded.
        let attempts = value(&exit_metrics, "meshproxy_hole_punch_attempts_total");
        let upgraded = value(&exit_metrics, "meshproxy_hole_punch_successes_total");
        println!(
            "client status {status:?}; exit hole punches: {attempts} attempted, {upgraded} upgraded to direct"
        );
        assert!(attempts >= 1.0, "the exit, which accepted the circuit, tries to hole-punch");

        client.node.shutdown().await;
        exit.node.shutdown().await;
        hub.node.shutdown().await;
    })
    .await
    .expect("the relayed mesh test finished in time");
}
