//! The data plane on real loopback TCP sockets.
// Helpers outside #[test] fns panic on purpose too: a failure there is a failed test.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use meshproxy::p2p::BoxStream;
use meshproxy::runtime::splice::splice;
use meshproxy::runtime::tcp::TcpIo;
use meshproxy_core::io::{SpliceEnd, SpliceLimits, SpliceReport};
use std::io::ErrorKind;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::timeout;

const T: Duration = Duration::from_secs(20);

/// A connected pair: (the socket the test holds, the accepted side as the splice sees it).
async fn pair() -> (TcpStream, BoxStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (c, s) = tokio::join!(TcpStream::connect(addr), l.accept());
    (c.unwrap(), Box::new(TcpIo::new(s.unwrap().0)))
}

/// Test end `app` ⇄ splice side a, splice side b ⇄ test end `origin`.
async fn spliced(
    a_to_b: &'static [u8],
    b_to_a: &'static [u8],
    idle: Duration,
) -> (TcpStream, TcpStream, JoinHandle<SpliceReport>) {
    let (app, a) = pair().await;
    let (origin, b) = pair().await;
    let limits = SpliceLimits { idle_timeout: idle };
    let task =
        tokio::spawn(splice(a, b, Bytes::from_static(a_to_b), Bytes::from_static(b_to_a), limits));
    (app, origin, task)
}

fn checksum(data: &[u8]) -> u64 {
    data.iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8).collect()
}

#[tokio::test]
async fn prefixes_and_bytes_both_ways_then_clean_end() {
    timeout(T, async {
        let (mut app, mut origin, task) = spliced(b"GET ", b"HTTP", Duration::from_secs(30)).await;
        app.write_all(b"/ now").await.unwrap();
        let mut got = [0u8; 9];
        origin.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"GET / now");
        origin.write_all(b"/1.1 200").await.unwrap();
        let mut got = [0u8; 12];
        app.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"HTTP/1.1 200");
        app.shutdown().await.unwrap();
        origin.shutdown().await.unwrap();
        let mut rest = Vec::new();
        assert_eq!(origin.read_to_end(&mut rest).await.unwrap(), 0);
        assert_eq!(app.read_to_end(&mut rest).await.unwrap(), 0);
        let report = task.await.unwrap();
        assert_eq!(report, SpliceReport { a_to_b: 9, b_to_a: 12, how: SpliceEnd::Clean });
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn eight_mib_each_way_concurrently_with_checksums() {
    timeout(T, async {
        let (app, origin, task) = spliced(b"", b"", Duration::from_secs(30)).await;
        let up = pattern(8 << 20, 1);
        let down = pattern(8 << 20, 7);
        let (up_sum, down_sum) = (checksum(&up), checksum(&down));
        let run = |mut s: TcpStream, send: Vec<u8>| async move {
            let (mut r, mut w) = s.split();
            let writer = async {
                w.write_all(&send).await.unwrap();
                w.shutdown().await.unwrap();
            };
            let reader = async {
                let mut got = Vec::new();
                r.read_to_end(&mut got).await.unwrap();
                got
            };
            let ((), got) = tokio::join!(writer, reader);
            got
        };
        let (at_app, at_origin) = tokio::join!(run(app, up), run(origin, down));
        assert_eq!(at_origin.len(), 8 << 20);
        assert_eq!(checksum(&at_origin), up_sum);
        assert_eq!(at_app.len(), 8 << 20);
        assert_eq!(checksum(&at_app), down_sum);
        let report = task.await.unwrap();
        assert_eq!(report.how, SpliceEnd::Clean);
        assert_eq!((report.a_to_b, report.b_to_a), (8 << 20, 8 << 20));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn half_close_carries_through_while_the_other_way_flows() {
    timeout(T, async {
        let (mut app, mut origin, task) = spliced(b"", b"", Duration::from_secs(30)).await;
        app.write_all(b"request").await.unwrap();
        app.shutdown().await.unwrap();
        let mut got = Vec::new();
        origin.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"request", "the app's FIN reaches the origin as EOF after the data");
        // The other direction still flows after the half-close.
        for i in 0..3u8 {
            origin.write_all(&[b'r', b'0' + i]).await.unwrap();
            let mut two = [0u8; 2];
            app.read_exact(&mut two).await.unwrap();
            assert_eq!(two, [b'r', b'0' + i]);
        }
        assert!(!task.is_finished(), "one open direction keeps the splice alive");
        origin.shutdown().await.unwrap();
        let mut rest = Vec::new();
        app.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        let report = task.await.unwrap();
        assert_eq!(report, SpliceReport { a_to_b: 7, b_to_a: 6, how: SpliceEnd::Clean });
    })
    .await
    .unwrap();
}

/// Reads until something other than data: Ok(()) for EOF, the error otherwise.
async fn read_until_end(s: &mut TcpStream) -> Result<(), ErrorKind> {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf).await {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(e.kind()),
        }
    }
}

#[tokio::test]
async fn a_reset_from_the_app_reaches_the_origin_as_a_reset() {
    timeout(T, async {
        let (app, mut origin, task) = spliced(b"", b"", Duration::from_secs(30)).await;
        app.set_zero_linger().unwrap();
        drop(app);
        assert_eq!(read_until_end(&mut origin).await, Err(ErrorKind::ConnectionReset));
        let report = task.await.unwrap();
        assert_eq!(report.how, SpliceEnd::ResetA);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_reset_from_the_origin_after_a_half_close_still_reaches_the_app_as_a_reset() {
    timeout(T, async {
        let (mut app, mut origin, task) = spliced(b"", b"", Duration::from_secs(30)).await;
        origin.write_all(b"partial").await.unwrap();
        let mut got = [0u8; 7];
        app.read_exact(&mut got).await.unwrap();
        app.shutdown().await.unwrap();
        let mut none = Vec::new();
        origin.read_to_end(&mut none).await.unwrap();
        origin.set_zero_linger().unwrap();
        drop(origin);
        assert_eq!(read_until_end(&mut app).await, Err(ErrorKind::ConnectionReset));
        assert_eq!(task.await.unwrap().how, SpliceEnd::ResetB);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn idle_timeout_resets_both_sides() {
    timeout(T, async {
        let (mut app, mut origin, task) = spliced(b"", b"", Duration::from_millis(300)).await;
        app.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        origin.read_exact(&mut one).await.unwrap();
        let started = tokio::time::Instant::now();
        let report = task.await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(250));
        assert_eq!(report, SpliceReport { a_to_b: 1, b_to_a: 0, how: SpliceEnd::IdleTimeout });
        assert_eq!(read_until_end(&mut app).await, Err(ErrorKind::ConnectionReset));
        assert_eq!(read_until_end(&mut origin).await, Err(ErrorKind::ConnectionReset));
    })
    .await
    .unwrap();
}

/// Eight gaps of 100 ms span 800 ms against a 300 ms idle timer: only a timer
/// that traffic resets survives. The streams are in-memory pipes and the clock
/// is Tokio's paused test clock, so the gaps are exact however loaded the
/// machine is (real sockets and real sleeps made this a race against the load).
#[tokio::test(start_paused = true)]
async fn traffic_keeps_an_idle_timer_from_firing() {
    timeout(T, async {
        let (mut app, a) = tokio::io::duplex(1024);
        let (mut origin, b) = tokio::io::duplex(1024);
        let idle = Duration::from_millis(300);
        let limits = SpliceLimits { idle_timeout: idle };
        let task =
            tokio::spawn(splice(Box::new(a), Box::new(b), Bytes::new(), Bytes::new(), limits));
        let started = tokio::time::Instant::now();
        for _ in 0..8 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            app.write_all(b"k").await.unwrap();
            let mut one = [0u8; 1];
            origin.read_exact(&mut one).await.unwrap();
        }
        assert!(started.elapsed() > idle * 2, "the traffic outlasted the timer");
        assert!(!task.is_finished(), "traffic reset the idle timer");
        app.shutdown().await.unwrap();
        origin.shutdown().await.unwrap();
        let report = task.await.unwrap();
        assert_eq!(report, SpliceReport { a_to_b: 8, b_to_a: 0, how: SpliceEnd::Clean });
    })
    .await
    .unwrap();
}

/// A writer that takes a few bytes at a time (an in-memory pipe of 61 bytes)
/// makes nearly every read leave a backlog: the bytes must still arrive
/// complete and in order, both ways at once.
#[tokio::test]
async fn a_slow_writer_loses_and_reorders_nothing() {
    timeout(T, async {
        let (app, a) = tokio::io::duplex(61);
        let (origin, b) = tokio::io::duplex(61);
        let limits = SpliceLimits { idle_timeout: Duration::from_secs(30) };
        let task = tokio::spawn(splice(
            Box::new(a),
            Box::new(b),
            Bytes::from_static(b"up:"),
            Bytes::from_static(b"down:"),
            limits,
        ));
        let up = pattern(300_000, 1);
        let down = pattern(200_000, 2);
        let (mut app_r, mut app_w) = tokio::io::split(app);
        let (mut origin_r, mut origin_w) = tokio::io::split(origin);
        let (up2, down2) = (up.clone(), down.clone());
        let writers = tokio::spawn(async move {
            let w1 = async {
                app_w.write_all(&up2).await.unwrap();
                app_w.shutdown().await.unwrap();
            };
            let w2 = async {
                origin_w.write_all(&down2).await.unwrap();
                origin_w.shutdown().await.unwrap();
            };
            tokio::join!(w1, w2);
        });
        let (mut at_origin, mut at_app) = (Vec::new(), Vec::new());
        let (r1, r2) =
            tokio::join!(origin_r.read_to_end(&mut at_origin), app_r.read_to_end(&mut at_app));
        r1.unwrap();
        r2.unwrap();
        writers.await.unwrap();
        assert_eq!(at_origin.get(..3), Some(&b"up:"[..]));
        assert_eq!(checksum(&at_origin[3..]), checksum(&up));
        assert_eq!(at_app.get(..5), Some(&b"down:"[..]));
        assert_eq!(checksum(&at_app[5..]), checksum(&down));
        let report = task.await.unwrap();
        assert_eq!(report.how, SpliceEnd::Clean);
        assert_eq!(report.a_to_b, 300_003);
        assert_eq!(report.b_to_a, 200_005);
    })
    .await
    .unwrap();
}
