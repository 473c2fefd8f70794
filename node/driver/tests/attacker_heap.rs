//! Memory an attacker pins per byte it sends (security review M2, L3).
//!
//! A hub runs in this process over real libp2p on 127.0.0.1, under a
//! counting allocator. The attacker is this test binary again, as a child
//! process (so its own buffers are not counted): it opens [`CONNS`]
//! connections that complete the Noise handshake and yamux negotiation, opens
//! streams on each (some negotiated to `/meshproxy/hub/1` with a partial
//! request, some bare), then sends a data-frame header announcing a 1 MiB
//! body, and finally the length prefix of a 65,535-byte Noise message plus a
//! few KiB of it, and stalls. The test asserts the node's live heap per
//! attacker byte and per connection against the bounds below, and that the
//! heap comes back once the attacker is gone.
//!
//! This is a test binary of its own, not a module of `tests/it`: the
//! counting global allocator counts every allocation in the process, so any
//! other test running beside it would show up in the figures.
#![allow(clippy::unwrap_used)]

use futures::{AsyncReadExt as _, AsyncWriteExt as _};
use libp2p::core::upgrade::OutboundConnectionUpgrade as _;
use meshproxy::ops::config::FileConfig;
use meshproxy::ops::identity::Identity;
use meshproxy::p2p::noise::Noise;
use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;
use std::io::Write as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};
use tokio_util::compat::TokioAsyncReadCompatExt as _;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Attacker connections (the default `max_connections_per_ip`).
const CONNS: usize = 16;
/// Streams per connection negotiated to the hub protocol, each with a partial request.
const NEGOTIATED: u32 = 32;
/// Streams per connection only opened (a yamux SYN, nothing else).
const BARE: u32 = 32;
/// Bytes of the stalled Noise message sent after its length prefix (above the
/// 4 KiB the transport used to park in a small buffer).
const PARTIAL_NOISE: usize = 5_000;

/// Live node heap per attacker byte sent, at most, for this script. (Measured
/// 41; before the fixes of review M2, 251 on a cold node.) A connection
/// that only completes its handshake costs the node about 116 KB of libp2p
/// connection state for about 700 bytes sent; `max_connections_per_ip` bounds
/// how many of those one address holds.
const MAX_HEAP_PER_BYTE: f64 = 48.0;
/// Live node heap per attacker connection, at most, for this script: the
/// connection, [`NEGOTIATED`] streams at about 4 KB each, one split yamux
/// frame body (62 KiB) and the parked partial Noise message. (Measured
/// 321 KB; before, 1.97 MB: a 1 MiB frame body, a 131 KB Noise buffer and a
/// 16 KiB pump buffer per stream.)
const MAX_HEAP_PER_CONN: usize = 384 * 1024;
/// How close to its baseline the heap must come once the attacker is gone:
/// the Noise buffer pools (4 read and 4 write buffers per thread) and the
/// allocator's view of libp2p's bookkeeping may keep some.
const RETURN_SLACK: usize = 2 << 20;

const CHILD_ENV: &str = "MESHPROXY_ATTACK_ADDR";

fn live_heap() -> usize {
    let s = GLOBAL.stats();
    s.bytes_allocated.saturating_sub(s.bytes_deallocated)
}

/// Samples the heap until it has stayed within 1 % (or 64 KiB) for 400 ms, or
/// `within` has passed; returns the last sample.
async fn settled_heap(within: Duration) -> usize {
    let deadline = Instant::now() + within;
    let mut window = std::collections::VecDeque::new();
    loop {
        let now = live_heap();
        window.push_back(now);
        if window.len() > 16 {
            window.pop_front();
        }
        let (lo, hi) = window.iter().fold((usize::MAX, 0), |(l, h), &v| (l.min(v), h.max(v)));
        if window.len() == 16 && hi - lo <= (hi / 100).max(64 << 10) {
            return now;
        }
        if Instant::now() >= deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

type Lines = tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>;

/// The attacker's report of a round: `<what><bytes sent> <connections up> <refused>`; the
/// bytes sent.
async fn report(lines: &mut Lines, what: &str) -> u64 {
    let line = timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            // (after libtest's `test attacker_child ... `)
            if let Some((_, rest)) = line.split_once(what) {
                return rest.to_owned();
            }
        }
        panic!("the attacker ended without a report");
    })
    .await
    .expect("the attacker reports within 60 s");
    let fields: Vec<u64> = line.split_whitespace().map(|f| f.parse().unwrap()).collect();
    let [sent, connected, refused] = fields[..] else { panic!("report: {line}") };
    assert_eq!(connected, CONNS as u64, "every connection within the per-IP limit is up");
    assert_eq!(refused, 1, "the connection beyond the per-IP limit is refused");
    sent
}

#[test]
fn an_attacker_pins_little_heap_per_byte_and_none_once_gone() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return; // the child runs `attacker_child` only
    }
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime
        .block_on(async { timeout(Duration::from_secs(120), measure()).await })
        .expect("within 2 min");
    runtime.shutdown_timeout(Duration::from_secs(5));
}

async fn measure() {
    // The hub's pre-auth budgets (4 hub streams per peer, 256 unadmitted in
    // all) would reset most of the attacker's streams; they are raised so the
    // test measures what the network layer lets one connection pin.
    let toml = format!(
        "listen = [\"/ip4/127.0.0.1/tcp/0\"]\n[limits]\nmax_connections_per_ip = {CONNS}\n\
         max_hub_streams_per_peer = 4096\nmax_preauth_hub_streams = 4096\n\
         [hub]\nkeys = [{{ id = \"exit\", token = \"t-exit-token-0123456789\" }}]\n"
    );
    let file = FileConfig::parse(&toml).unwrap();
    let hub =
        meshproxy::ops::launch::start(&file, &Identity::from_secret([7; 32]), 7).await.unwrap();
    let addr = hub.p2p_addrs[0].to_string();
    let cold = settled_heap(Duration::from_secs(5)).await;

    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["attacker_child", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &addr)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    // The warm-up round, then its end: every connection closed.
    report(&mut lines, "warm: ").await;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"done\n").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = hub.node.status().await.unwrap();
        if status.direct_conns == 0 && status.pumps == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the warm-up connections did not close: {status:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let baseline = settled_heap(Duration::from_secs(5)).await;
    stdin.write_all(b"go\n").await.unwrap();
    let sent = report(&mut lines, "attack: ").await;

    // Every negotiated stream reached the hub's core (a pump each).
    let want = CONNS * NEGOTIATED as usize;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = hub.node.status().await.unwrap();
        if status.pumps >= want {
            break;
        }
        assert!(Instant::now() < deadline, "{want} streams did not reach the hub: {status:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pinned = settled_heap(Duration::from_secs(10)).await;
    let delta = pinned.saturating_sub(baseline);
    let per_byte = delta as f64 / sent as f64;
    let per_conn = delta / CONNS;
    println!(
        "attacker: {CONNS} connections, {sent} bytes sent; node heap {baseline} -> {pinned} \
         (+{delta}): {per_conn} bytes per connection, {per_byte:.1} per attacker byte"
    );

    drop(stdin);
    timeout(Duration::from_secs(10), child.wait()).await.expect("the attacker exits").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let after = loop {
        let now = settled_heap(Duration::from_secs(2)).await;
        if now <= baseline + RETURN_SLACK || Instant::now() >= deadline {
            break now;
        }
    };
    println!("after the attacker left: node heap {after} (baseline {baseline}, cold {cold})");
    hub.node.shutdown().await;

    assert!(per_byte <= MAX_HEAP_PER_BYTE, "{per_byte:.1} heap bytes per attacker byte");
    assert!(per_conn <= MAX_HEAP_PER_CONN, "{per_conn} heap bytes per attacker connection");
    assert!(after <= baseline + RETURN_SLACK, "heap {after} after the attack, baseline {baseline}");
}

// ---------------------------------------------------------------------------
// The attacker (child process).

/// The child: attacks the node at `$MESHPROXY_ATTACK_ADDR`, reports
/// `attack: <bytes sent> <connections up> <connections refused>`, and holds
/// its connections until its stdin closes.
#[test]
#[ignore = "the attacker process of an_attacker_pins_little_heap_per_byte_and_none_once_gone"]
fn attacker_child() {
    let Some(addr) = std::env::var_os(CHILD_ENV) else { return };
    let addr: libp2p::Multiaddr = addr.to_str().unwrap().parse().unwrap();
    let mut parts = addr.iter();
    let (Some(libp2p::multiaddr::Protocol::Ip4(ip)), Some(libp2p::multiaddr::Protocol::Tcp(port))) =
        (parts.next(), parts.next())
    else {
        panic!("{addr}")
    };
    let target = SocketAddr::from((ip, port));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        // Round one warms the node (buffer pools, table capacities), round
        // two is measured.
        for round in ["warm", "attack"] {
            let sent = Arc::new(AtomicU64::new(0));
            let mut held = Vec::new();
            let mut refused = 0;
            for _ in 0..=CONNS {
                match timeout(Duration::from_secs(10), attack(target, sent.clone())).await {
                    Ok(Ok(conn)) => held.push(conn),
                    _ => refused += 1,
                }
            }
            let mut out = std::io::stdout().lock();
            let sent = sent.load(Ordering::Relaxed);
            writeln!(out, "{round}: {sent} {} {refused}", held.len()).unwrap();
            out.flush().unwrap();
            drop(out);
            // Hold everything until the parent is done measuring.
            let _ = stdin.next_line().await;
            drop(held);
            // The next round when the parent asks.
            let _ = stdin.next_line().await;
        }
    });
}

/// A TCP stream that counts the bytes written to it.
struct Counted {
    inner: TcpStream,
    sent: Arc<AtomicU64>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.sent.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// One multistream-select message: a varint length, the name, a newline.
fn ms(name: &str) -> Vec<u8> {
    let len = name.len() + 1;
    assert!(len < 128);
    let mut m = vec![len as u8];
    m.extend_from_slice(name.as_bytes());
    m.push(b'\n');
    m
}

/// Proposes `protocol` as a multistream-select dialer and reads the answer.
async fn select<S: futures::AsyncRead + futures::AsyncWrite + Unpin>(
    io: &mut S,
    protocol: &str,
) -> std::io::Result<()> {
    let propose = [ms("/multistream/1.0.0"), ms(protocol)].concat();
    io.write_all(&propose).await?;
    io.flush().await?;
    let mut answer = vec![0; propose.len()];
    io.read_exact(&mut answer).await?;
    if answer != propose {
        return Err(std::io::Error::other(format!("refused {protocol}")));
    }
    Ok(())
}

/// A yamux frame header.
fn header(kind: u8, flags: u16, stream: u32, len: u32) -> [u8; 12] {
    let mut h = [0; 12];
    h[1] = kind;
    h[2..4].copy_from_slice(&flags.to_be_bytes());
    h[4..8].copy_from_slice(&stream.to_be_bytes());
    h[8..12].copy_from_slice(&len.to_be_bytes());
    h
}

const DATA: u8 = 0;
const WINDOW: u8 = 1;
const PING: u8 = 2;
const SYN: u16 = 1;
const ACK: u16 = 2;

/// What an attacker connection holds open.
type Held =
    (meshproxy::p2p::noise::NoiseStream<tokio_util::compat::Compat<Counted>>, std::net::TcpStream);

/// One attacker connection: handshake, streams, a 1 MiB data header, a stalled Noise message.
async fn attack(target: SocketAddr, sent: Arc<AtomicU64>) -> std::io::Result<Held> {
    let tcp = TcpStream::connect(target).await?;
    tcp.set_nodelay(true)?;
    let raw = tcp.into_std()?;
    let side = raw.try_clone()?;
    let mut io = Counted { inner: TcpStream::from_std(raw)?, sent: sent.clone() }.compat();
    select(&mut io, "/noise").await?;
    let key = libp2p::identity::Keypair::generate_ed25519();
    let noise = Noise::new(&key).map_err(std::io::Error::other)?;
    let (_, mut io) = noise.upgrade_outbound(io, "/noise").await.map_err(std::io::Error::other)?;
    select(&mut io, "/yamux/1.0.0").await?;

    // Streams: negotiated ones with a partial request (3 bytes of a frame's
    // length), bare ones with nothing; then a ping.
    let mut frames = Vec::new();
    let request = [ms("/multistream/1.0.0"), ms("/meshproxy/hub/1"), vec![0, 0, 0]];
    let request = request.concat();
    for s in 0..NEGOTIATED + BARE {
        let id = 2 * s + 1;
        frames.extend_from_slice(&header(WINDOW, SYN, id, 0));
        if s < NEGOTIATED {
            frames.extend_from_slice(&header(DATA, 0, id, request.len() as u32));
            frames.extend_from_slice(&request);
        }
    }
    frames.extend_from_slice(&header(PING, SYN, 0, 0x5eed));
    io.write_all(&frames).await?;
    io.flush().await?;
    // Read until the ping's answer: yamux has taken every frame before it.
    loop {
        let mut h = [0; 12];
        io.read_exact(&mut h).await?;
        let len = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
        if h[1] == PING && u16::from_be_bytes([h[2], h[3]]) & ACK != 0 && len == 0x5eed {
            break;
        }
        if h[1] == DATA {
            let mut body = vec![0; len as usize];
            io.read_exact(&mut body).await?;
        }
    }

    // A new stream whose first data frame announces 1 MiB, with 8 bytes of it.
    let id = 2 * (NEGOTIATED + BARE) + 1;
    let mut big = header(DATA, SYN, id, 1 << 20).to_vec();
    big.extend_from_slice(&[0; 8]);
    io.write_all(&big).await?;
    io.flush().await?;

    // The start of a whole Noise message, on the raw socket.
    let mut partial = vec![0xff, 0xff];
    partial.extend(std::iter::repeat_n(0x5a, PARTIAL_NOISE));
    (&side).write_all(&partial)?;
    sent.fetch_add(partial.len() as u64, Ordering::Relaxed);
    Ok((io, side))
}
