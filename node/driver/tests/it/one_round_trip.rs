//! One round trip per proxied connection: a hub, an exit and a client on 127.0.0.1, the
//! client reaching the exit only through a TCP forwarder that delays each direction by
//! [`DELAY`]. On a warm connection, the app's SOCKS request must reach the origin (the exit
//! dials it when the `ConnectRequest` arrives) in less than a round trip of the delayed
//! link: the request leaves with the stream's protocol proposal (multistream-select
//! `V1Lazy`), one one-way delay. Waiting for the exit to confirm the protocol first (`V1`)
//! takes three.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns fail the test by panicking

use crate::common::live::{node, socks_connect};
use meshproxy::ops::identity::Identity;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep, sleep_until, timeout, Instant};

/// Added to each direction of the client ↔ exit link.
const DELAY: Duration = Duration::from_millis(250);
/// Measured connections; the fastest counts (scheduling noise on a busy machine only ever
/// adds time, and a second round trip would be in every one of them).
const SAMPLES: usize = 3;

/// Copies `from` to `to`, each chunk [`DELAY`] after it was read: a delay line, so chunks
/// in flight overlap as on a long link, instead of queueing behind each other's delays.
async fn delay_line(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let read = async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = from.read(&mut buf).await {
            if tx.send((Instant::now() + DELAY, buf[..n].to_vec())).is_err() {
                break;
            }
        }
    };
    let write = async move {
        while let Some((due, chunk)) = rx.recv().await {
            sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(read, write);
}

/// A forwarder listening now, forwarding to the address sent on the returned channel
/// (the exit's, known only once the exit has started with this forwarder advertised).
async fn delayed_forwarder() -> (SocketAddr, watch::Sender<Option<SocketAddr>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (target_tx, target) = watch::channel(None);
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let mut target = target.clone();
            tokio::spawn(async move {
                let Ok(to) = target.wait_for(Option::is_some).await.map(|t| t.unwrap()) else {
                    return;
                };
                let Ok(outbound) = TcpStream::connect(to).await else { return };
                let _ = (inbound.set_nodelay(true), outbound.set_nodelay(true));
                let (in_r, in_w) = inbound.into_split();
                let (out_r, out_w) = outbound.into_split();
                tokio::join!(delay_line(in_r, out_w), delay_line(out_r, in_w));
            });
        }
    });
    (addr, target_tx)
}

/// An origin that reports when each connection arrived and echoes it.
async fn timed_origin() -> (SocketAddr, mpsc::UnboundedReceiver<Instant>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, arrivals) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let _ = tx.send(Instant::now());
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    (addr, arrivals)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxied_request_reaches_the_exit_in_one_one_way_delay() {
    timeout(Duration::from_secs(90), async {
        let (origin, mut arrivals) = timed_origin().await;
        let (forwarder, exit_addr) = delayed_forwarder().await;
        let hub_id = Identity::from_secret([41; 32]);
        let hub = node(
            r#"listen = ["/ip4/127.0.0.1/tcp/0"]
[hub]
keys = [{ id = "exit", token = "t-exit-token-0123456789", roles = ["exit"], max_registrations = 4 }, { id = "client", token = "t-client-token-01234567" }]
"#,
            41,
        )
        .await;
        let hub_addr = hub.p2p_addrs.first().expect("hub listens").clone();
        let hubs =
            format!("[[hubs]]\npeer = \"{}\"\naddrs = [\"{hub_addr}\"]\n", hub_id.peer_id_string());
        // Clients learn only the forwarder's address, and no relay path exists.
        let exit = node(
            &format!(
                r#"listen = ["/ip4/127.0.0.1/tcp/0"]
{hubs}
[exit]
credential = {{ id = "exit", token = "t-exit-token-0123456789" }}
advertise = ["/ip4/127.0.0.1/tcp/{}"]
relay = "off"
allow = ["127.0.0.1:{}"]
"#,
                forwarder.port(),
                origin.port()
            ),
            42,
        )
        .await;
        let exit_tcp = exit.p2p_addrs.iter().find_map(|a| {
            let mut parts = a.iter();
            match (parts.next(), parts.next()) {
                (
                    Some(libp2p::multiaddr::Protocol::Ip4(ip)),
                    Some(libp2p::multiaddr::Protocol::Tcp(port)),
                ) => Some(SocketAddr::from((ip, port))),
                _ => None,
            }
        });
        exit_addr.send(Some(exit_tcp.expect("the exit listens on TCP"))).unwrap();
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
            43,
        )
        .await;
        while client.node.status().await.unwrap().known_exits == 0 {
            sleep(Duration::from_millis(20)).await;
        }
        let listener = client.node.listen_addrs[0];

        // Warm up: the first connection dials the exit through the forwarder.
        let (code, mut app) = socks_connect(listener, origin).await;
        assert_eq!(code, 0, "SOCKS5 success through the delayed link");
        arrivals.recv().await.unwrap();
        app.write_all(b"warm").await.unwrap();
        let mut echo = [0u8; 4];
        app.read_exact(&mut echo).await.unwrap();
        drop(app);

        let mut took = Vec::new();
        for _ in 0..SAMPLES {
            let asked = Instant::now();
            let (code, app) = socks_connect(listener, origin).await;
            assert_eq!(code, 0, "SOCKS5 success");
            let arrived = arrivals.recv().await.unwrap();
            took.push(arrived.duration_since(asked));
            drop(app);
        }
        let fastest = *took.iter().min().unwrap();
        eprintln!("SOCKS request → origin dial over a {DELAY:?} each-way link: {took:?}");
        // At least one crossing of the link: the request did take the delayed path.
        assert!(fastest >= DELAY, "{fastest:?} < {DELAY:?}: the link was not in the path");
        // Under a round trip: the request did not wait for the exit's confirmation.
        assert!(
            fastest < 2 * DELAY,
            "SOCKS request → origin dial took {took:?}, a round trip ({:?}) or more",
            2 * DELAY
        );

        client.node.shutdown().await;
        exit.node.shutdown().await;
        hub.node.shutdown().await;
    })
    .await
    .expect("the one-round-trip test finished in time");
}
