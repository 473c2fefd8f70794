//! A hub, an exit and a client, each configured from TOML, talking over real
//! libp2p (TCP + Noise + Yamux) on 127.0.0.1, carrying a SOCKS5 app to a local
//! origin — and the exit's policy refusing what it does not allow.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns fail the test by panicking

use crate::common::echo_origin;
use crate::common::live::{node, socks_connect};
use meshproxy::ops::identity::Identity;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::{sleep, timeout};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks5_through_a_real_libp2p_mesh_and_policy_denial() {
    timeout(Duration::from_secs(60), async {
        let origin = echo_origin().await;
        let hub_id = Identity::from_secret([11; 32]);
        let hub = node(
            r#"listen = ["/ip4/127.0.0.1/tcp/0"]
[hub]
keys = [{ id = "exit", token = "t-exit-token-0123456789", roles = ["exit"], max_registrations = 4 }, { id = "client", token = "t-client-token-01234567" }]
"#,
            11,
        )
        .await;
        let hub_addr = hub.p2p_addrs.first().expect("hub listens").clone();
        let hubs =
            format!("[[hubs]]\npeer = \"{}\"\naddrs = [\"{hub_addr}\"]\n", hub_id.peer_id_string());
        let exit = node(
            &format!(
                r#"listen = ["/ip4/127.0.0.1/tcp/0"]
{hubs}
[exit]
credential = {{ id = "exit", token = "t-exit-token-0123456789" }}
allow = ["127.0.0.1:{}"]
"#,
                origin.port()
            ),
            12,
        )
        .await;
        let client = node(
            &format!(
                r#"{hubs}
[client]
credential = {{ id = "client", token = "t-client-token-01234567" }}
refresh_ms = 200
[[client.listeners]]
bind = "127.0.0.1:0"
protocol = "socks5"
"#
            ),
            13,
        )
        .await;
        while client.node.status().await.unwrap().known_exits == 0 {
            sleep(Duration::from_millis(20)).await;
        }

        // 1 MiB each way through client → libp2p → exit → origin, byte for byte.
        let listener = client.node.listen_addrs[0];
        let (code, mut app) = socks_connect(listener, origin).await;
        assert_eq!(code, 0, "SOCKS5 success");
        let payload: Vec<u8> =
            (0..1u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let (mut r, mut w) = app.split();
        let send = async {
            w.write_all(&payload).await.unwrap();
            w.shutdown().await.unwrap();
        };
        let mut echoed = Vec::new();
        let recv = async { r.read_to_end(&mut echoed).await.unwrap() };
        tokio::join!(send, recv);
        assert!(echoed == payload, "echoed {} bytes, differing from what was sent", echoed.len());

        // A loopback port the exit does not allow: 0x02, and nothing is dialed.
        let denied = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (code, _app) = socks_connect(listener, denied.local_addr().unwrap()).await;
        assert_eq!(code, 2, "policy denial is SOCKS5 0x02");
        let nothing = timeout(Duration::from_millis(300), denied.accept()).await;
        assert!(nothing.is_err(), "the exit dialed a denied destination");

        client.node.shutdown().await;
        exit.node.shutdown().await;
        hub.node.shutdown().await;
    })
    .await
    .expect("the mesh test finished in time");
}
