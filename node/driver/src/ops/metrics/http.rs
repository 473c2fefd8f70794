//! The `/metrics` endpoint: HTTP/1.1 served by hyper, one request per
//! connection, bounded in head size, time and connections at once.
//!
//! What a client sees (the README's "Metrics" section):
//!
//! - `GET /metrics` (or `HEAD`): 200 with [`CONTENT_TYPE`] and the registry's
//!   encoding; any other path 404; any other method on `/metrics` 405 with
//!   `Allow: GET, HEAD`. These answers are built by [`respond`].
//! - A request head longer than [`ServeLimits::max_head`] bytes, or with more
//!   than [`MAX_HEADERS`] headers: 431; not HTTP/1.x: 400. Both are hyper's
//!   own answers (no body), sent before closing.
//! - No complete head within [`ServeLimits::read_deadline`]: 408, then close.
//!   hyper's header timer only ends the connection; it hands the socket back
//!   with its timeout error before anything was written, and the 408 is
//!   written here.
//!   The whole exchange, answer included, ends within twice that deadline.
//! - Every answer carries `Connection: close` and ends the connection. (An
//!   HTTP/1.0 request is answered as HTTP/1.0, hyper's rule.)
//! - At most [`ServeLimits::max_connections`] connections are served at once;
//!   more are not accepted until one ends, so they wait in the listen backlog.

use super::{Metrics, CONTENT_TYPE};
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};

/// Bounds on the endpoint's clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServeLimits {
    /// Largest request head (request line and headers) read; larger is 431.
    pub max_head: usize,
    /// Time for a client to send its whole request head (408 after); the
    /// whole exchange, the answer taken too, ends within twice this.
    pub read_deadline: Duration,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for ServeLimits {
    fn default() -> ServeLimits {
        ServeLimits {
            max_head: 8 * 1024,
            read_deadline: Duration::from_secs(5),
            max_connections: 64,
        }
    }
}

/// Headers a request may carry (more is 431); a scraper sends a handful.
pub const MAX_HEADERS: usize = 32;

/// The running `/metrics` endpoint; stopped by [`stop`](Self::stop) or when dropped.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl MetricsServer {
    /// Binds `addr` and serves `metrics` there.
    pub async fn bind(
        addr: SocketAddr,
        metrics: Arc<Metrics>,
        limits: ServeLimits,
    ) -> io::Result<MetricsServer> {
        let listener = TcpListener::bind(addr).await?;
        MetricsServer::serve(listener, metrics, limits)
    }

    /// Serves `metrics` on an already bound listener.
    pub fn serve(
        listener: TcpListener,
        metrics: Arc<Metrics>,
        limits: ServeLimits,
    ) -> io::Result<MetricsServer> {
        let addr = listener.local_addr()?;
        let task = tokio::spawn(accept_loop(listener, metrics, limits));
        Ok(MetricsServer { addr, task })
    }

    /// Where it listens (the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and aborts every connection being served.
    pub async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, metrics: Arc<Metrics>, limits: ServeLimits) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    // Dropping the set (when this task is aborted) aborts every connection.
    let mut conns = JoinSet::new();
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else { return };
        while conns.try_join_next().is_some() {}
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: back off rather than spin.
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        conns.spawn(async move {
            let _permit = permit;
            serve_connection(stream, metrics, limits).await;
        });
    }
}

/// The answer to a request for `path` (without its query) by `method`.
pub fn respond(method: &Method, path: &str, metrics: &Metrics) -> Response<String> {
    if path != "/metrics" {
        return plain(StatusCode::NOT_FOUND, None);
    }
    if method == Method::GET || method == Method::HEAD {
        // For HEAD, hyper sends the head (its Content-Length included) and drops the body.
        answer(StatusCode::OK, CONTENT_TYPE, metrics.encode(), None)
    } else {
        plain(StatusCode::METHOD_NOT_ALLOWED, Some(HeaderValue::from_static("GET, HEAD")))
    }
}

/// A short text answer: the status line again as the body.
fn plain(status: StatusCode, allow: Option<HeaderValue>) -> Response<String> {
    let reason = status.canonical_reason().unwrap_or_default();
    let body = format!("{} {reason}\n", status.as_u16());
    answer(status, "text/plain; charset=utf-8", body, allow)
}

/// The headers in the order the endpoint always sent them; hyper writes them
/// in this order (title-cased) and adds none (no `Date`).
fn answer(
    status: StatusCode,
    content_type: &'static str,
    body: String,
    allow: Option<HeaderValue>,
) -> Response<String> {
    let len = HeaderValue::from(body.len());
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_LENGTH, len);
    if let Some(allow) = allow {
        headers.insert(header::ALLOW, allow);
    }
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// What the endpoint writes itself when the head did not arrive in time.
const REQUEST_TIMEOUT: &[u8] = b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 20\r\nConnection: close\r\n\r\n408 Request Timeout\n";

/// Serves one request (bounded in size and time), then closes.
async fn serve_connection(mut stream: TcpStream, metrics: Arc<Metrics>, limits: ServeLimits) {
    let deadline = limits.read_deadline;
    let exchange = async {
        let service = hyper::service::service_fn(|request: Request<hyper::body::Incoming>| {
            let metrics = metrics.clone();
            async move {
                // The gauges of what the node holds are read from it per scrape.
                if request.uri().path() == "/metrics" {
                    metrics.refresh().await;
                }
                Ok::<_, Infallible>(respond(request.method(), request.uri().path(), &metrics))
            }
        });
        let served = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(deadline)
            .max_header_size(limits.max_head)
            .max_headers(MAX_HEADERS)
            .keep_alive(false)
            .title_case_headers(true)
            .auto_date_header(false)
            .serve_connection(TokioIo::new(&mut stream), service)
            .await;
        match served {
            // No complete head in time (hyper has written nothing): say so.
            Err(e) if e.is_timeout() => {
                stream.write_all(REQUEST_TIMEOUT).await?;
                stream.shutdown().await
            }
            _ => Ok(()),
        }
    };
    // The head within the deadline (hyper's timer), and the answer within one more.
    if let Ok(Ok(())) = tokio::time::timeout(deadline.saturating_mul(2), exchange).await {
        // Closing with unread request bytes (an oversized head, a body, say)
        // would reset the connection and could destroy the answer before the
        // client reads it; so read on briefly, bounded in bytes and time,
        // until the client closes its side too.
        let _ = stream.shutdown().await;
        let linger = deadline.min(LINGER);
        let _ = tokio::time::timeout(linger, drain(&mut stream, MAX_DRAIN)).await;
    }
}

/// How long a connection is kept after its answer, for the client to close first.
const LINGER: Duration = Duration::from_secs(1);

/// Request bytes discarded after the answer before closing anyway.
const MAX_DRAIN: usize = 64 * 1024;

async fn drain(stream: &mut TcpStream, max: usize) {
    let mut chunk = [0u8; 1024];
    let mut left = max;
    while left > 0 {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::{timeout, Instant};

    #[test]
    fn requests_route() {
        let m = Metrics::new();
        let ok = respond(&Method::GET, "/metrics", &m);
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(
            ok.headers().get(header::CONTENT_TYPE).map(|v| v.as_bytes()),
            Some(CONTENT_TYPE.as_bytes())
        );
        assert!(ok.body().ends_with("# EOF\n"));
        assert_eq!(respond(&Method::HEAD, "/metrics", &m).status(), StatusCode::OK);
        assert_eq!(respond(&Method::GET, "/", &m).status(), StatusCode::NOT_FOUND);
        assert_eq!(respond(&Method::POST, "/other", &m).status(), StatusCode::NOT_FOUND);
        let post = respond(&Method::POST, "/metrics", &m);
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(
            post.headers().get(header::ALLOW).map(|v| v.as_bytes()),
            Some(&b"GET, HEAD"[..])
        );
        assert_eq!(post.body(), "405 Method Not Allowed\n");
    }

    async fn server(limits: ServeLimits) -> MetricsServer {
        let addr: SocketAddr = ([127, 0, 0, 1], 0).into();
        MetricsServer::bind(addr, Arc::new(Metrics::new()), limits).await.expect("bind")
    }

    /// Sends `request`, reads until the server closes.
    async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(request).await.expect("write");
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn the_endpoint_answers_scrapes_and_refuses_the_rest() {
        let srv = server(ServeLimits::default()).await;
        let addr = srv.local_addr();
        timeout(Duration::from_secs(10), async {
            let ok = exchange(addr, b"GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n").await;
            let head = format!("HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: ");
            assert!(ok.starts_with(&head), "{ok}");
            assert!(ok.contains("\r\nConnection: close\r\n\r\n# HELP "), "{ok}");
            assert!(ok.ends_with("# EOF\n"));
            let head_only = exchange(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n").await;
            assert!(head_only.starts_with("HTTP/1.1 200 OK\r\n"), "{head_only}");
            assert!(head_only.ends_with("Connection: close\r\n\r\n"), "HEAD has no body: {head_only}");
            let missing = exchange(addr, b"GET /other HTTP/1.1\r\n\r\n").await;
            assert_eq!(
                missing,
                "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 14\r\nConnection: close\r\n\r\n404 Not Found\n"
            );
            let post = exchange(addr, b"PUT /metrics HTTP/1.1\r\n\r\n").await;
            assert!(post.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{post}");
            assert!(post.contains("\r\nAllow: GET, HEAD\r\nConnection: close\r\n"), "{post}");
            // hyper's own answer to a head it cannot parse: no body.
            let junk = exchange(addr, b"\x16\x03\x01 not http\r\n\r\n").await;
            assert_eq!(junk, "HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
            // An HTTP/1.0 client is answered in HTTP/1.0 (hyper's rule).
            let old = exchange(addr, b"GET /metrics HTTP/1.0\r\n\r\n").await;
            assert!(old.starts_with("HTTP/1.0 200 OK\r\n"), "{old}");
            assert!(old.contains("\r\nConnection: close\r\n\r\n# HELP "), "{old}");
        })
        .await
        .expect("in time");
        srv.stop().await;
    }

    #[tokio::test]
    async fn an_oversized_head_is_refused_without_reading_on() {
        let limits = ServeLimits { max_head: 256, ..ServeLimits::default() };
        let srv = server(limits).await;
        let mut request = b"GET /metrics HTTP/1.1\r\n".to_vec();
        request.extend(std::iter::repeat_n(b'a', 300));
        let answer = timeout(Duration::from_secs(10), exchange(srv.local_addr(), &request))
            .await
            .expect("in time");
        assert!(answer.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"), "{answer}");
    }

    #[tokio::test]
    async fn the_default_head_bound_is_8_kib_and_the_answer_survives_unread_bytes() {
        let srv = server(ServeLimits::default()).await;
        timeout(Duration::from_secs(10), async {
            // Fits: 8 KiB of head in all.
            let mut fits = b"GET /metrics HTTP/1.1\r\nX-Pad: ".to_vec();
            fits.resize(8 * 1024 - 4, b'a');
            fits.extend_from_slice(b"\r\n\r\n");
            let ok = exchange(srv.local_addr(), &fits).await;
            assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{}", ok.get(..200).unwrap_or(&ok));
            // One byte more: hyper's own 431, no body.
            let mut over = b"GET /metrics HTTP/1.1\r\nX-Pad: ".to_vec();
            over.resize(8 * 1024 - 3, b'a');
            over.extend_from_slice(b"\r\n\r\n");
            let answer = exchange(srv.local_addr(), &over).await;
            assert_eq!(
                answer,
                "HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
            );
            // An unending head: 56 KiB are still unread when the server answers,
            // and the answer still arrives (no reset).
            let mut endless = b"GET /metrics HTTP/1.1\r\nX-Pad: ".to_vec();
            endless.resize(64 * 1024, b'a');
            let answer = exchange(srv.local_addr(), &endless).await;
            assert!(answer.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"), "{answer}");
        })
        .await
        .expect("in time");
    }

    #[tokio::test]
    async fn too_many_headers_is_431() {
        let srv = server(ServeLimits::default()).await;
        let mut request = b"GET /metrics HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            request.extend_from_slice(format!("X-{i}: a\r\n").as_bytes());
        }
        request.extend_from_slice(b"\r\n");
        let answer = timeout(Duration::from_secs(10), exchange(srv.local_addr(), &request))
            .await
            .expect("in time");
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    }

    #[tokio::test]
    async fn a_slow_client_gets_408_at_the_deadline() {
        let deadline = Duration::from_millis(300);
        let srv = server(ServeLimits { read_deadline: deadline, ..ServeLimits::default() }).await;
        let started = Instant::now();
        let answer = timeout(
            Duration::from_secs(10),
            exchange(srv.local_addr(), b"GET /metrics HTTP/1.1\r\n"),
        )
        .await
        .expect("the server closed the connection");
        assert_eq!(answer.as_bytes(), REQUEST_TIMEOUT);
        assert!(answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{answer}");
        assert!(started.elapsed() >= deadline, "not before the deadline");
    }

    #[tokio::test]
    async fn a_silent_client_gets_408_at_the_deadline() {
        let deadline = Duration::from_millis(300);
        let srv = server(ServeLimits { read_deadline: deadline, ..ServeLimits::default() }).await;
        let answer = timeout(Duration::from_secs(10), exchange(srv.local_addr(), b""))
            .await
            .expect("the server closed the connection");
        assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    }

    #[tokio::test]
    async fn connections_beyond_the_bound_wait_for_a_free_slot() {
        let deadline = Duration::from_millis(400);
        let limits =
            ServeLimits { read_deadline: deadline, max_connections: 1, ..ServeLimits::default() };
        let srv = server(limits).await;
        let addr = srv.local_addr();
        timeout(Duration::from_secs(10), async {
            let started = Instant::now();
            // Holds the only slot, saying nothing, until its deadline.
            // (Accepted first: the listen backlog is first in, first out.)
            let idle = TcpStream::connect(addr).await.expect("connect");
            let ok = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
            assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
            assert!(started.elapsed() >= deadline, "served while the slot was held");
            drop(idle);
        })
        .await
        .expect("in time");
    }
}
