//! The origin and the load generator, on tokio inside xtask.
//!
//! The origin greets every connection with one byte (so "first byte from the
//! origin" is observable through any proxy), then counts what it receives
//! until end of stream and answers with the count as 8 big-endian bytes (so a
//! throughput run ends only when every byte has crossed the proxy). The
//! load test's origin greets the same way, then echoes what it receives
//! until end of stream, so every connection can check its own bytes.
//!
//! The request origin waits for the app to speak first: it answers one
//! request byte with the greeting. Proxies that dial only once the app has
//! sent something (sslocal holds a new connection up to 500 ms for its
//! first bytes, to send them with the address) can be timed against it: the
//! app sends the byte right after the SOCKS5 reply ([`FirstWord::App`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;
use tokio::time::timeout;

/// The byte the origin sends first.
const HELLO: u8 = 0x2a;
/// The byte the app sends first to a request origin.
const REQUEST: u8 = 0x3f;
/// Bound on any single connection setup.
const CONNECT_DEADLINE: Duration = Duration::from_secs(15);
/// Bound on one throughput transfer.
const TRANSFER_DEADLINE: Duration = Duration::from_secs(300);
/// The origin's listen backlog (the kernel caps it at `net.core.somaxconn`).
const ORIGIN_BACKLOG: u32 = 4096;
/// Write chunk size of the load generator.
const CHUNK: usize = 64 * 1024;

/// Why a load operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A socket operation failed.
    #[error("{0}: {1}")]
    Io(&'static str, std::io::Error),
    /// The SOCKS5 server answered something other than success.
    #[error("SOCKS5 reply {0:#04x}")]
    Refused(u8),
    /// The SOCKS5 server spoke something else.
    #[error("malformed SOCKS5 reply")]
    Protocol,
    /// The origin's greeting byte was wrong.
    #[error("the origin's first byte was {0:#04x}")]
    Greeting(u8),
    /// The origin counted a different number of bytes than were sent.
    #[error("sent {sent} bytes, the origin counted {counted}")]
    Count {
        /// Bytes written.
        sent: u64,
        /// Bytes the origin saw.
        counted: u64,
    },
    /// Something took longer than its bound.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// The echo origin sent back other bytes than were sent.
    #[error("echo mismatch")]
    Mismatch,
}

/// What the origin does after its greeting byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginMode {
    /// Counts the bytes until end of stream and answers the count.
    Count,
    /// Echoes every byte until end of stream, then closes.
    Echo,
    /// Sends no greeting until the app's first byte, then greets, reads
    /// until end of stream and closes.
    Request,
}

/// Who speaks first on a new connection, and so which origin it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstWord {
    /// The origin greets on its own (counting and echo origins).
    Origin,
    /// The app sends one byte right after the SOCKS5 reply (or the TCP
    /// connect, direct), and the request origin answers it.
    App,
}

/// The origin server.
#[derive(Debug)]
pub struct Origin {
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Origin {
    /// Starts the counting origin on 127.0.0.1, an ephemeral port.
    pub async fn start() -> Result<Origin, LoadError> {
        Origin::start_mode(OriginMode::Count).await
    }

    /// Starts an origin of `mode` on 127.0.0.1, an ephemeral port.
    pub async fn start_mode(mode: OriginMode) -> Result<Origin, LoadError> {
        // `TcpListener::bind` listens with a backlog of 128 (mio follows
        // std): a burst of connections from the exit would overflow it, and
        // an overflowed handshake towards an origin that speaks first is lost
        // for good (SYN cookies: the exit believes it is connected).
        let socket = TcpSocket::new_v4().map_err(|e| LoadError::Io("origin socket", e))?;
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .map_err(|e| LoadError::Io("origin bind", e))?;
        let listener =
            socket.listen(ORIGIN_BACKLOG).map_err(|e| LoadError::Io("origin listen", e))?;
        let addr = listener.local_addr().map_err(|e| LoadError::Io("origin addr", e))?;
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    // Out of fds or similar: back off rather than spin.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                match mode {
                    OriginMode::Count => tokio::spawn(serve(stream)),
                    OriginMode::Echo => tokio::spawn(serve_echo(stream)),
                    OriginMode::Request => tokio::spawn(serve_request(stream)),
                };
            }
        });
        Ok(Origin { addr, task })
    }
}

async fn serve(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    if stream.write_all(&[HELLO]).await.is_err() {
        return;
    }
    // Idle connections wait here with a tiny buffer; the big one is only
    // allocated once data flows (10,000 idle × 64 KiB would dominate RSS).
    let mut first = [0u8; 16];
    let mut counted = match stream.read(&mut first).await {
        Ok(0) | Err(_) => {
            // End of stream without data: answer 0 so a transfer of 0 ends too.
            let _ = stream.write_all(&0u64.to_be_bytes()).await;
            return;
        }
        Ok(n) => n as u64,
    };
    let mut buf = vec![0u8; CHUNK];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => counted += n as u64,
            Err(_) => return,
        }
    }
    let _ = stream.write_all(&counted.to_be_bytes()).await;
    let _ = stream.shutdown().await;
}

async fn serve_echo(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    if stream.write_all(&[HELLO]).await.is_err() {
        return;
    }
    // Small: thousands of these are open at once and each echoes a few bytes.
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                if stream.write_all(buf.get(..n).unwrap_or(&buf)).await.is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
    let _ = stream.shutdown().await;
}

async fn serve_request(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = [0u8; 64];
    // Any first byte will do: the answer is what is timed, not the request.
    match stream.read(&mut buf).await {
        Ok(0) | Err(_) => return,
        Ok(_) => {}
    }
    if stream.write_all(&[HELLO]).await.is_err() {
        return;
    }
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
    let _ = stream.shutdown().await;
}

/// Sends `payload` on a stream opened to an echo origin, ends the sending
/// side, and checks that exactly `payload` comes back before end of stream
/// (within `within`); the stream is then closed by the caller dropping it.
pub async fn echo(s: &mut TcpStream, payload: &[u8], within: Duration) -> Result<(), LoadError> {
    let run = async {
        s.write_all(payload).await.map_err(|e| LoadError::Io("echo send", e))?;
        s.shutdown().await.map_err(|e| LoadError::Io("echo shutdown", e))?;
        // One byte more than expected, so a longer answer shows as a mismatch.
        let mut back = Vec::with_capacity(payload.len() + 1);
        (&mut *s)
            .take(payload.len() as u64 + 1)
            .read_to_end(&mut back)
            .await
            .map_err(|e| LoadError::Io("echo receive", e))?;
        if back != payload {
            return Err(LoadError::Mismatch);
        }
        Ok(())
    };
    timeout(within, run).await.map_err(|_| LoadError::Timeout("echo"))?
}

/// How the load generator reaches the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Straight to the origin (the loopback baseline).
    Direct,
    /// Through a SOCKS5 proxy at this address.
    Socks(SocketAddr),
}

/// Opens a connection to `origin` along `route` and reads the origin's
/// greeting byte, so the returned stream is fully set up end to end.
pub async fn open(route: Route, origin: SocketAddr) -> Result<TcpStream, LoadError> {
    open_as(route, origin, FirstWord::Origin).await
}

/// [`open`] for an origin that waits for `first`'s side to speak: with
/// [`FirstWord::App`] one request byte goes out right after the SOCKS5 reply
/// (right after the connect, direct) and the origin's answer is read.
pub async fn open_as(
    route: Route,
    origin: SocketAddr,
    first: FirstWord,
) -> Result<TcpStream, LoadError> {
    // The step a timeout interrupted names the timeout: a full listen
    // backlog stalls the connect, a slow proxy the reply.
    let mut step = "TCP connect";
    let outcome = timeout(CONNECT_DEADLINE, open_unbounded(route, origin, first, &mut step)).await;
    outcome.map_err(|_| LoadError::Timeout(step))?
}

async fn open_unbounded(
    route: Route,
    origin: SocketAddr,
    first: FirstWord,
    step: &mut &'static str,
) -> Result<TcpStream, LoadError> {
    let dial = match route {
        Route::Direct => origin,
        Route::Socks(proxy) => proxy,
    };
    let mut s = TcpStream::connect(dial).await.map_err(|e| LoadError::Io("connect", e))?;
    let _ = s.set_nodelay(true);
    if let Route::Socks(_) = route {
        // Greeting (no auth) and CONNECT in one write, as fast clients do.
        let mut request = vec![5, 1, 0, 5, 1, 0];
        match origin {
            SocketAddr::V4(a) => {
                request.push(1);
                request.extend_from_slice(&a.ip().octets());
            }
            SocketAddr::V6(a) => {
                request.push(4);
                request.extend_from_slice(&a.ip().octets());
            }
        }
        request.extend_from_slice(&origin.port().to_be_bytes());
        *step = "SOCKS5 reply";
        s.write_all(&request).await.map_err(|e| LoadError::Io("socks request", e))?;
        let mut head = [0u8; 6];
        s.read_exact(&mut head).await.map_err(|e| LoadError::Io("socks reply", e))?;
        if head[0] != 5 || head[1] != 0 || head[2] != 5 {
            return Err(LoadError::Protocol);
        }
        if head[3] != 0 {
            return Err(LoadError::Refused(head[3]));
        }
        let rest = match head[5] {
            1 => 4 + 2,
            4 => 16 + 2,
            3 => {
                let mut len = [0u8; 1];
                s.read_exact(&mut len).await.map_err(|e| LoadError::Io("socks reply", e))?;
                usize::from(len[0]) + 2
            }
            _ => return Err(LoadError::Protocol),
        };
        let mut bound = vec![0u8; rest];
        s.read_exact(&mut bound).await.map_err(|e| LoadError::Io("socks reply", e))?;
    }
    if first == FirstWord::App {
        *step = "app's request byte";
        s.write_all(&[REQUEST]).await.map_err(|e| LoadError::Io("request byte", e))?;
    }
    *step = "origin's first byte";
    let mut hello = [0u8; 1];
    s.read_exact(&mut hello).await.map_err(|e| LoadError::Io("origin greeting", e))?;
    if hello[0] != HELLO {
        return Err(LoadError::Greeting(hello[0]));
    }
    Ok(s)
}

/// Opens connections along `route` until one succeeds (the client may not
/// know the exit yet), for up to `within`.
pub async fn wait_route(
    route: Route,
    origin: SocketAddr,
    within: Duration,
) -> Result<(), LoadError> {
    let deadline = Instant::now() + within;
    loop {
        match open(route, origin).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
}

/// Sends `total` bytes split over `streams` connections and returns the wall
/// time from the moment every connection is set up to the last count
/// received from the origin.
pub async fn transfer(
    route: Route,
    origin: SocketAddr,
    total: u64,
    streams: usize,
) -> Result<Duration, LoadError> {
    let streams = streams.max(1);
    let per_stream = total / streams as u64;
    let barrier = Arc::new(tokio::sync::Barrier::new(streams));
    let payload: Arc<Vec<u8>> =
        Arc::new((0..CHUNK).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect());
    let mut set = JoinSet::new();
    for _ in 0..streams {
        let barrier = barrier.clone();
        let payload = payload.clone();
        set.spawn(async move {
            let opened = open(route, origin).await;
            barrier.wait().await;
            // Each sender times itself: whoever awaits the tasks may be woken
            // late, after a fast route has already finished.
            let started = Instant::now();
            send_and_count(opened?, &payload, per_stream).await?;
            Ok::<_, LoadError>((started, Instant::now()))
        });
    }
    let run = async {
        let mut span: Option<(Instant, Instant)> = None;
        while let Some(joined) = set.join_next().await {
            let (a, b) = match joined {
                Ok(result) => result?,
                Err(_) => return Err(LoadError::Timeout("a sender task died")),
            };
            span = Some(match span {
                Some((s, e)) => (s.min(a), e.max(b)),
                None => (a, b),
            });
        }
        Ok(span.map_or(Duration::ZERO, |(s, e)| e.duration_since(s)))
    };
    timeout(TRANSFER_DEADLINE, run).await.map_err(|_| LoadError::Timeout("transfer"))?
}

async fn send_and_count(mut s: TcpStream, payload: &[u8], bytes: u64) -> Result<(), LoadError> {
    let (mut r, mut w) = s.split();
    let send = async {
        let mut left = bytes;
        while left > 0 {
            let n = left.min(payload.len() as u64) as usize;
            w.write_all(payload.get(..n).unwrap_or(payload))
                .await
                .map_err(|e| LoadError::Io("send", e))?;
            left -= n as u64;
        }
        w.shutdown().await.map_err(|e| LoadError::Io("shutdown", e))
    };
    let recv = async {
        let mut count = [0u8; 8];
        r.read_exact(&mut count).await.map_err(|e| LoadError::Io("read count", e))?;
        Ok::<u64, LoadError>(u64::from_be_bytes(count))
    };
    let (sent, counted) = tokio::join!(send, recv);
    sent?;
    let counted = counted?;
    if counted != bytes {
        return Err(LoadError::Count { sent: bytes, counted });
    }
    Ok(())
}

/// Connect latencies: `samples` sequential connections, each timed from the
/// TCP connect (SOCKS5 greeting) to the origin's first byte (which, with
/// [`FirstWord::App`], answers the app's request byte).
pub async fn latencies(
    route: Route,
    origin: SocketAddr,
    first: FirstWord,
    samples: usize,
) -> Result<Vec<Duration>, LoadError> {
    let mut out = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t0 = Instant::now();
        let s = open_as(route, origin, first).await?;
        out.push(t0.elapsed());
        // Reset rather than close: thousands of closes would park thousands
        // of ports in TIME_WAIT on the loopback.
        let _ = s.set_zero_linger();
    }
    Ok(out)
}

/// What a connects-per-second run achieved.
#[derive(Debug, Clone, Copy)]
pub struct ConnectRate {
    /// Connections that reached the origin's first byte.
    pub ok: u64,
    /// Connections that failed.
    pub failed: u64,
    /// The run's wall time.
    pub elapsed: Duration,
}

/// `workers` loops opening (to the first byte) and resetting connections for `duration`.
pub async fn connect_rate(
    route: Route,
    origin: SocketAddr,
    first: FirstWord,
    workers: usize,
    duration: Duration,
) -> ConnectRate {
    let started = Instant::now();
    let deadline = started + duration;
    let mut set = JoinSet::new();
    for _ in 0..workers.max(1) {
        set.spawn(async move {
            let (mut ok, mut failed) = (0u64, 0u64);
            while Instant::now() < deadline {
                match open_as(route, origin, first).await {
                    Ok(s) => {
                        ok += 1;
                        let _ = s.set_zero_linger();
                    }
                    Err(_) => failed += 1,
                }
            }
            (ok, failed)
        });
    }
    let (mut ok, mut failed) = (0, 0);
    while let Some(joined) = set.join_next().await {
        if let Ok((o, f)) = joined {
            ok += o;
            failed += f;
        }
    }
    ConnectRate { ok, failed, elapsed: started.elapsed() }
}

/// Opens `n` connections along `route` (at most `parallel` at a time) and
/// keeps them open; returns them and how many failed.
pub async fn open_idle(
    route: Route,
    origin: SocketAddr,
    n: usize,
    parallel: usize,
) -> (Vec<TcpStream>, usize) {
    let mut held = Vec::with_capacity(n);
    let mut failed = 0;
    let mut left = n;
    while left > 0 {
        let batch = left.min(parallel.max(1));
        let mut set = JoinSet::new();
        for _ in 0..batch {
            set.spawn(open(route, origin));
        }
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok(Ok(s)) => held.push(s),
                _ => failed += 1,
            }
        }
        left -= batch;
    }
    (held, failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build();
        rt.unwrap_or_else(|e| panic!("tokio runtime: {e}"))
    }

    #[test]
    fn the_request_origin_answers_the_apps_first_byte() {
        runtime().block_on(async {
            let origin =
                Origin::start_mode(OriginMode::Request).await.unwrap_or_else(|e| panic!("{e}"));
            let got = latencies(Route::Direct, origin.addr, FirstWord::App, 20).await;
            assert_eq!(got.map(|v| v.len()).unwrap_or_else(|e| panic!("{e}")), 20);
            let rate = connect_rate(
                Route::Direct,
                origin.addr,
                FirstWord::App,
                4,
                Duration::from_millis(100),
            )
            .await;
            assert!(rate.ok > 0, "{rate:?}");
            assert_eq!(rate.failed, 0);
        });
    }

    #[test]
    fn the_request_origin_stays_silent_until_the_app_speaks() {
        runtime().block_on(async {
            let origin =
                Origin::start_mode(OriginMode::Request).await.unwrap_or_else(|e| panic!("{e}"));
            let mut s = TcpStream::connect(origin.addr).await.unwrap_or_else(|e| panic!("{e}"));
            let mut byte = [0u8; 1];
            let early = timeout(Duration::from_millis(200), s.read(&mut byte)).await;
            assert!(early.is_err(), "the origin spoke first: {early:?}");
            s.write_all(&[REQUEST]).await.unwrap_or_else(|e| panic!("{e}"));
            let n = timeout(Duration::from_secs(5), s.read(&mut byte)).await;
            assert!(matches!(n, Ok(Ok(1))), "{n:?}");
            assert_eq!(byte[0], HELLO);
        });
    }

    #[test]
    fn the_counting_origin_still_greets_first() {
        runtime().block_on(async {
            let origin = Origin::start().await.unwrap_or_else(|e| panic!("{e}"));
            let s = open_as(Route::Direct, origin.addr, FirstWord::Origin).await;
            assert!(s.is_ok(), "{:?}", s.err());
        });
    }
}
