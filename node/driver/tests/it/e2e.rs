//! End to end: real `meshproxy` nodes (hub, exits, client) over libp2p on
//! 127.0.0.1 carrying app connections to local origins — bulk transfers both
//! ways through SOCKS5 and HTTP CONNECT, an exit killed mid-run, a hub
//! restarted, and resets on either end staying resets.
//!
//! The bulk and reset tests run their nodes in this process
//! (`meshproxy::ops::launch::start`); the failover test runs its exits, and the
//! restart test its hub, as `meshproxy run` child processes that are killed
//! with SIGKILL. Tests take turns (see `serial`).
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns fail the test by panicking

use crate::common::e2e::*;
use std::io::ErrorKind;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio::time::Instant;

/// The bulk transfer size.
const BIG: u64 = 64 << 20;

/// Reads the whole stream `seed` of `BIG` bytes from an established tunnel,
/// then ends cleanly; prints and returns the throughput.
async fn download(what: &str, mut app: TcpStream, seed: u64) -> f64 {
    let t0 = Instant::now();
    let got = read_checked(&mut app, seed, None).await;
    let elapsed = t0.elapsed();
    assert_eq!(got, Received { bytes: BIG, mismatch: None, error: None }, "{what} download");
    app.shutdown().await.unwrap();
    let speed = mib_per_s(BIG, elapsed);
    println!("{what}: downloaded {} MiB in {elapsed:.2?}: {speed:.1} MiB/s", BIG >> 20);
    speed
}

/// Sends `BIG` bytes of the stream `seed` through an established tunnel to a
/// sink origin, which must have received exactly that; prints the throughput.
async fn upload(
    what: &str,
    app: TcpStream,
    seed: u64,
    reports: &mut tokio::sync::mpsc::UnboundedReceiver<Received>,
) -> f64 {
    let t0 = Instant::now();
    let (mut r, mut w) = app.into_split();
    write_stream(&mut w, seed, BIG).await.unwrap();
    w.shutdown().await.unwrap();
    let mut answer = Vec::new();
    r.read_to_end(&mut answer).await.unwrap();
    let elapsed = t0.elapsed();
    assert_eq!(answer, BIG.to_be_bytes(), "{what}: the sink's byte count");
    let seen = timeout(Duration::from_secs(5), reports.recv()).await.unwrap().unwrap();
    assert_eq!(seen, Received { bytes: BIG, mismatch: None, error: None }, "{what} upload");
    let speed = mib_per_s(BIG, elapsed);
    println!("{what}: uploaded {} MiB in {elapsed:.2?}: {speed:.1} MiB/s", BIG >> 20);
    speed
}

#[test]
fn socks5_carries_64_mib_each_way_intact() {
    serial(Duration::from_secs(120), async {
        let mesh = Mesh::start().await;
        let (source, _) = source_origin(1, BIG).await;
        let (code, app) = socks5(mesh.socks(), &Dest::Ip(source)).await.unwrap();
        assert_eq!(code, 0, "SOCKS5 success");
        download("SOCKS5", app, 1).await;

        // Uploading, the app names the origin (ATYP 3); the exit resolves it.
        let (sink, mut reports) = sink_origin(2).await;
        let named = Dest::Name("localhost".into(), sink.port());
        let (code, app) = socks5(mesh.socks(), &named).await.unwrap();
        assert_eq!(code, 0, "SOCKS5 success");
        upload("SOCKS5", app, 2, &mut reports).await;
        mesh.shutdown().await;
    });
}

#[test]
fn http_connect_carries_64_mib_each_way_intact() {
    serial(Duration::from_secs(120), async {
        let mesh = Mesh::start().await;
        let (source, _) = source_origin(3, BIG).await;
        let (code, app) = http_connect(mesh.http(), source).await.unwrap();
        assert_eq!(code, 200, "CONNECT established");
        download("HTTP CONNECT", app, 3).await;

        let (sink, mut reports) = sink_origin(4).await;
        let (code, app) = http_connect(mesh.http(), sink).await.unwrap();
        assert_eq!(code, 200, "CONNECT established");
        upload("HTTP CONNECT", app, 4, &mut reports).await;
        mesh.shutdown().await;
    });
}

/// Waits until none of the nodes holds a session, a data-plane stream or a
/// splice any more: an ended or reset connection leaves nothing behind.
async fn wait_idle(nodes: &[(&str, &meshproxy::ops::launch::NetNode)]) {
    for (name, n) in nodes {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = n.node.status().await.unwrap();
            // One pump stays: the node's hub link.
            let r = s.resources;
            if r.sessions == 0 && r.streams == 0 && s.pumps <= 1 && s.pending_splices == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "{name} still holds {s:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[test]
fn resets_stay_resets_end_to_end() {
    const PART: u64 = 256 << 10;
    serial(Duration::from_secs(60), async {
        let mesh = Mesh::start().await;

        // The origin sends PART bytes, waits until the app has them all, then
        // resets: the app must read them all and then see the reset, not an end.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = l.local_addr().unwrap();
        let resetter = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            write_stream(&mut s, 5, PART).await.unwrap();
            let mut ack = [0u8; 1];
            s.read_exact(&mut ack).await.unwrap();
            s.set_zero_linger().unwrap();
            drop(s);
        });
        let (code, mut app) = socks5(mesh.socks(), &Dest::Ip(origin)).await.unwrap();
        assert_eq!(code, 0, "SOCKS5 success");
        let got = read_checked(&mut app, 5, Some(PART)).await;
        assert_eq!(got, Received { bytes: PART, mismatch: None, error: None });
        app.write_all(&[1]).await.unwrap();
        resetter.await.unwrap();
        let end = timeout(Duration::from_secs(10), drain(&mut app)).await.unwrap();
        assert_eq!(end, Some(ErrorKind::ConnectionReset), "the app sees the origin's reset");
        drop(app);
        wait_idle(&[("client", &mesh.client), ("exit", &mesh.exit)]).await;

        // The other way: the app uploads PART bytes, waits until the origin
        // has them all, then resets; the origin must see the reset.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = l.local_addr().unwrap();
        let victim = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let got = read_checked(&mut s, 6, Some(PART)).await;
            s.write_all(&[1]).await.unwrap();
            (got, timeout(Duration::from_secs(10), drain(&mut s)).await)
        });
        let (code, mut app) = socks5(mesh.socks(), &Dest::Ip(origin)).await.unwrap();
        assert_eq!(code, 0, "SOCKS5 success");
        write_stream(&mut app, 6, PART).await.unwrap();
        let mut ack = [0u8; 1];
        app.read_exact(&mut ack).await.unwrap();
        app.set_zero_linger().unwrap();
        drop(app);
        let (got, end) = victim.await.unwrap();
        assert_eq!(got, Received { bytes: PART, mismatch: None, error: None });
        assert_eq!(end.unwrap(), Some(ErrorKind::ConnectionReset), "the origin sees the reset");
        wait_idle(&[("client", &mesh.client), ("exit", &mesh.exit)]).await;
        mesh.shutdown().await;
    });
}

/// Opens a SOCKS5 tunnel to `source` (which sends `total` bytes of stream
/// `seed`), checks it all arrived, and returns the origin-side address of
/// the exit's connection while the tunnel is still open, plus the stream.
async fn small_fetch(
    listener: std::net::SocketAddr,
    source: std::net::SocketAddr,
    seed: u64,
    total: u64,
    arrivals: &mut tokio::sync::mpsc::UnboundedReceiver<std::net::SocketAddr>,
) -> (std::net::SocketAddr, TcpStream) {
    let (code, mut app) = socks5(listener, &Dest::Ip(source)).await.unwrap();
    assert_eq!(code, 0, "SOCKS5 success");
    let got = read_checked(&mut app, seed, None).await;
    assert_eq!(got, Received { bytes: total, mismatch: None, error: None });
    let from = timeout(Duration::from_secs(5), arrivals.recv()).await.unwrap().unwrap();
    (from, app)
}

#[cfg(target_os = "linux")]
#[test]
fn a_killed_exit_is_routed_around() {
    serial(Duration::from_secs(90), async {
        let scratch = Scratch::new("failover");
        let hub_id = identity(31);
        let hub = node(&hub_toml(0), &hub_id, 31).await;
        let hubs = hubs_toml(&hub_id, &hub.p2p_addrs[0].to_string());
        let mut exits = vec![
            Proc::spawn("exit-a", &scratch, &identity(32), &exit_toml(&hubs)).await,
            Proc::spawn("exit-b", &scratch, &identity(33), &exit_toml(&hubs)).await,
        ];
        let pids: Vec<u32> = exits.iter().map(Proc::pid).collect();
        let client = node(&client_toml(&hubs), &identity(34), 34).await;
        wait_known_exits(&client, 2, Duration::from_secs(10)).await;
        let socks = client.node.listen_addrs[0];

        // A long download (1 GiB offered); find the exit carrying it and kill it.
        let (endless, mut arrivals) = source_origin(7, 1 << 30).await;
        let (code, mut long) = socks5(socks, &Dest::Ip(endless)).await.unwrap();
        assert_eq!(code, 0, "SOCKS5 success");
        let got = read_checked(&mut long, 7, Some(1 << 20)).await;
        assert_eq!(got, Received { bytes: 1 << 20, mismatch: None, error: None });
        let from = timeout(Duration::from_secs(5), arrivals.recv()).await.unwrap().unwrap();
        let carrier = owner_of(from.port(), endless.port(), &pids)
            .expect("one of the exit processes carries the download");
        let dead = pids.iter().position(|p| *p == carrier).unwrap();
        let survivor = pids[1 - dead];
        let killed = Instant::now();
        exits[dead].kill();

        // The running download ends in a reset, never a clean (short) end.
        let rest = read_checked_from(&mut long, 7, 1 << 20, None);
        let rest = timeout(Duration::from_secs(10), rest).await;
        let rest = rest.expect("the app learns the exit died");
        assert_eq!(rest.error, Some(ErrorKind::ConnectionReset), "{rest:?}");
        assert_eq!(rest.mismatch, None);
        drop(long);

        // Every new connection succeeds through the survivor.
        const SMALL: u64 = 64 << 10;
        let (source, mut arrivals) = source_origin(8, SMALL).await;
        let mut first_success = None;
        let mut slowest = Duration::ZERO;
        for i in 0..20 {
            let t0 = Instant::now();
            let fetch = small_fetch(socks, source, 8, SMALL, &mut arrivals);
            let (from, app) = timeout(Duration::from_secs(20), fetch)
                .await
                .unwrap_or_else(|_| panic!("connection {i} after the kill timed out"));
            slowest = slowest.max(t0.elapsed());
            first_success.get_or_insert_with(|| killed.elapsed());
            assert_eq!(owner_of(from.port(), source.port(), &pids), Some(survivor));
            drop(app);
        }
        let first = first_success.unwrap();
        println!(
            "exit killed: first new connection through the survivor {first:.2?} after the \
             kill; slowest of 20 {slowest:.2?}; all 20 done {:.2?} after the kill",
            killed.elapsed()
        );
        client.node.shutdown().await;
        drop(exits);
        hub.node.shutdown().await;
    });
}

#[test]
fn a_restarted_hub_gets_its_exits_and_clients_back() {
    serial(Duration::from_secs(90), async {
        let scratch = Scratch::new("restart");
        let hub_id = identity(41);
        let port = free_port();
        let mut hub = Proc::spawn("hub", &scratch, &hub_id, &hub_toml(port)).await;
        let hubs = hubs_toml(&hub_id, &format!("/ip4/127.0.0.1/tcp/{port}"));
        let exit = node(&exit_toml(&hubs), &identity(42), 42).await;
        let client = node(&client_toml(&hubs), &identity(43), 43).await;
        wait_registered(&exit, 1, Duration::from_secs(10)).await;
        wait_known_exits(&client, 1, Duration::from_secs(10)).await;
        const SMALL: u64 = 64 << 10;
        let (source, mut arrivals) = source_origin(9, SMALL).await;
        small_fetch(client.node.listen_addrs[0], source, 9, SMALL, &mut arrivals).await;

        hub.kill();
        wait_registered_at_most(&exit, 0).await;
        let restarted = Instant::now();
        let hub = Proc::spawn("hub-again", &scratch, &hub_id, &hub_toml(port)).await;
        let up = restarted.elapsed();
        // The exit's hub link redials after a seeded backoff: base 500 ms,
        // doubling per failed attempt up to 15 s (node/core/src/node.rs), so
        // with the hub back within a few seconds it re-registers within the
        // sum of a few ceilings (1 + 2 + 4 + 8 s) — 20 s is a generous bound.
        wait_registered(&exit, 1, Duration::from_secs(20)).await;
        let registered = restarted.elapsed();

        // A second exit that only the restarted hub knows: the old client
        // finding it shows the client re-linked to the hub too.
        let exit2 = node(&exit_toml(&hubs), &identity(44), 44).await;
        wait_known_exits(&client, 2, Duration::from_secs(20)).await;
        let relinked = restarted.elapsed();

        // A fresh client finds both exits through the restarted hub, and new
        // connections from either client work.
        let fresh = node(&client_toml(&hubs), &identity(45), 45).await;
        wait_known_exits(&fresh, 2, Duration::from_secs(10)).await;
        for c in [&client, &fresh] {
            for _ in 0..4 {
                let fetch = small_fetch(c.node.listen_addrs[0], source, 9, SMALL, &mut arrivals);
                timeout(Duration::from_secs(20), fetch).await.unwrap();
            }
        }
        println!(
            "hub restarted: up again after {up:.2?}; exit re-registered after {registered:.2?}; \
             client re-linked (saw a new exit) after {relinked:.2?}"
        );
        fresh.node.shutdown().await;
        client.node.shutdown().await;
        exit2.node.shutdown().await;
        exit.node.shutdown().await;
        drop(hub);
    });
}

/// Waits until an in-process exit has noticed it lost its hub registration.
async fn wait_registered_at_most(exit: &meshproxy::ops::launch::NetNode, n: usize) {
    poll_until("the exit noticing the hub is gone", Duration::from_secs(10), || async {
        let hubs = exit.node.status().await?.registered_hubs;
        (hubs <= n).then_some(())
    })
    .await;
}
