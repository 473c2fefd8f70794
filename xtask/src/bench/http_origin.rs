//! The HTTP origin of the ingress figures: hyper 1 (HTTP/1.1, keep-alive)
//! on tokio inside xtask, so the service behind every route is an
//! established server that costs little per request and is not what the
//! figures measure.
//!
//! `GET /` answers a small fixed body ([`SMALL_BODY`]); `GET /bytes/N`
//! answers `N` zero bytes (at most [`MAX_BODY`]) streamed from one shared
//! 64 KiB buffer, with `Content-Length`, so a large download costs the
//! origin no copy and a short body is visible to the client. Anything else
//! is 404.

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::net::TcpListener;

/// The small response body (`GET /`).
pub const SMALL_BODY: &[u8] = b"meshproxy bench origin: small response\n";
/// The largest body `GET /bytes/N` serves (4 GiB).
pub const MAX_BODY: u64 = 4 << 30;
/// The buffer large bodies are cut from.
const CHUNK: usize = 64 * 1024;

/// The origin: listening until dropped (its accept task is aborted then).
#[derive(Debug)]
pub struct HttpOrigin {
    /// Where it listens (127.0.0.1).
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HttpOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HttpOrigin {
    /// Binds 127.0.0.1:0 and serves on the current tokio runtime.
    pub async fn start() -> std::io::Result<HttpOrigin> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let zeros = Bytes::from(vec![0u8; CHUNK]);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                // Small responses: each answer goes out at once.
                let _ = stream.set_nodelay(true);
                let zeros = zeros.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let zeros = zeros.clone();
                        async move { Ok::<_, Infallible>(answer(&req, zeros)) }
                    });
                    let _ = http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(HttpOrigin { addr, task })
    }
}

/// The response to `req` (see the module doc).
fn answer<B>(req: &Request<B>, zeros: Bytes) -> Response<Repeat> {
    let path = req.uri().path();
    let (status, body) = if path == "/" {
        (StatusCode::OK, Repeat::once(Bytes::from_static(SMALL_BODY)))
    } else if let Some(n) = path.strip_prefix("/bytes/").and_then(|n| n.parse::<u64>().ok()) {
        if n <= MAX_BODY {
            (StatusCode::OK, Repeat { left: n, chunk: zeros })
        } else {
            (StatusCode::RANGE_NOT_SATISFIABLE, Repeat::once(Bytes::from_static(b"too large\n")))
        }
    } else {
        (StatusCode::NOT_FOUND, Repeat::once(Bytes::from_static(b"not found\n")))
    };
    let len = body.left;
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut().insert(hyper::header::CONTENT_LENGTH, hyper::header::HeaderValue::from(len));
    resp
}

/// A body of `left` bytes cut from `chunk` (repeated as needed).
#[derive(Debug)]
pub struct Repeat {
    left: u64,
    chunk: Bytes,
}

impl Repeat {
    /// `chunk` exactly once.
    fn once(chunk: Bytes) -> Repeat {
        Repeat { left: chunk.len() as u64, chunk }
    }
}

impl Body for Repeat {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 || self.chunk.is_empty() {
            return Poll::Ready(None);
        }
        let n = self.chunk.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        self.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One request over a fresh connection; the whole answer.
    async fn get(addr: SocketAddr, path: &str) -> Vec<u8> {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("{e}"));
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap_or_else(|e| panic!("{e}"));
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap_or_else(|e| panic!("{e}"));
        out
    }

    #[tokio::test]
    async fn serves_small_and_sized_bodies_and_refuses_the_rest() {
        let origin = HttpOrigin::start().await.unwrap_or_else(|e| panic!("{e}"));
        let small = get(origin.addr, "/").await;
        let text = String::from_utf8_lossy(&small);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.contains(&format!("content-length: {}", SMALL_BODY.len())), "{text}");
        assert!(small.ends_with(SMALL_BODY), "{text}");

        // Over a chunk, not a multiple of it: every byte and no more.
        let n = 3 * CHUNK + 17;
        let big = get(origin.addr, &format!("/bytes/{n}")).await;
        let head_end = big.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
        let head_end = head_end.unwrap_or_else(|| panic!("no head end"));
        assert_eq!(big.len() - head_end, n);
        assert!(big[head_end..].iter().all(|b| *b == 0));

        let too_big = get(origin.addr, &format!("/bytes/{}", MAX_BODY + 1)).await;
        assert!(too_big.starts_with(b"HTTP/1.1 416"), "{}", String::from_utf8_lossy(&too_big));
        assert!(get(origin.addr, "/nope").await.starts_with(b"HTTP/1.1 404"));
    }
}
