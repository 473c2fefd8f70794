//! The gateway's forward path against a real origin and real clients (curl,
//! raw sockets), without the mesh: a hyper server whose requests go through
//! `runtime::gateway::forward` over a TCP connection to the origin — what the
//! agent's stream is once the agent answered `Ok` (it relays bytes). What it
//! checks: header hygiene as the origin sees it, bodies streamed whole both
//! ways, a response cut at the origin reaching the client as an error (never
//! a clean short body), an upgraded connection echoing both ways with a
//! clean end, and the `IngressDone` each request reports.
// Helpers outside #[test] fns panic on purpose too: a failure there is a failed test.
#![allow(clippy::unwrap_used)]
// Test harness code outside the core: a wall-clock deadline is what it needs.
#![allow(clippy::disallowed_methods)]

use crate::common::e2e::{read_checked, serial, write_stream, Scratch};
use bytes::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use meshproxy::runtime::gateway::forward::forward;
use meshproxy::runtime::gateway::hygiene::ClientView;
use meshproxy::runtime::gateway::report::Report;
use meshproxy::runtime::gateway::{HttpLimits, IngressMsg};
use meshproxy::runtime::runner::RunnerMsg;
use meshproxy::runtime::tcp::TcpIo;
use meshproxy_core::ids::RequestId;
use meshproxy_core::io::IngressEnd;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};

pub const BIG: u64 = 4 << 20;
const UPLOAD: u64 = 3 << 20;

/// Reads a request head (bounded); the head's text.
pub async fn read_head(s: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await.ok()? == 0 || head.len() > 64 * 1024 {
            return None;
        }
        head.push(b[0]);
    }
    String::from_utf8(head).ok()
}

/// An origin: `/echo` answers the request head it got, `/big` a 4 MiB
/// stream, `/cut` announces 4 MiB and resets after 256 KiB, `/upload` checks
/// a 3 MiB stream and answers its length, `/ws` switches to an echo.
async fn origin() -> SocketAddr {
    origin_named("origin").await.0
}

/// [`origin`], which also answers `/who` with `name` and serves `/slow`
/// (4 MiB in 64 KiB steps 20 ms apart); each path it starts serving is
/// reported on the receiver.
pub async fn origin_named(name: &'static str) -> (SocketAddr, mpsc::UnboundedReceiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let Some(head) = read_head(&mut s).await else { return };
                let target = head.split_whitespace().nth(1).unwrap_or("");
                let path = target.split('?').next().unwrap_or("").to_owned();
                let _ = tx.send(path.clone());
                match path.as_str() {
                    "/who" => {
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{name}",
                            name.len()
                        );
                        let _ = s.write_all(answer.as_bytes()).await;
                    }
                    "/slow" => {
                        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {BIG}\r\n\r\n");
                        s.write_all(head.as_bytes()).await.unwrap();
                        let mut buf = vec![0u8; 64 * 1024];
                        let mut sent = 0u64;
                        while sent < BIG {
                            crate::common::e2e::fill(7, sent, &mut buf);
                            if s.write_all(&buf).await.is_err() {
                                return;
                            }
                            sent += buf.len() as u64;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                    "/echo" => {
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\nX-Hop: 1\r\n\r\n{head}",
                            head.len()
                        );
                        let _ = s.write_all(answer.as_bytes()).await;
                    }
                    "/big" | "/cut" => {
                        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {BIG}\r\n\r\n");
                        s.write_all(head.as_bytes()).await.unwrap();
                        let n = if path == "/big" { BIG } else { 256 * 1024 };
                        if write_stream(&mut s, 7, n).await.is_ok() && path == "/cut" {
                            s.set_zero_linger().unwrap(); // an abort, not an end
                        }
                    }
                    "/upload" => {
                        let got = read_checked(&mut s, 9, Some(UPLOAD)).await;
                        let body = format!("{} {:?}", got.bytes, got.mismatch);
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = s.write_all(answer.as_bytes()).await;
                    }
                    "/ws" => {
                        let switch = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n";
                        s.write_all(switch.as_bytes()).await.unwrap();
                        let (mut r, mut w) = s.split();
                        let _ = tokio::io::copy(&mut r, &mut w).await;
                        let _ = w.shutdown().await;
                    }
                    _ => {}
                }
            });
        }
    });
    (addr, rx)
}

/// A gateway front whose every request is forwarded to `origin` over a
/// fresh TCP connection; the `IngressDone`s come out of the receiver.
async fn front(origin: SocketAddr) -> (SocketAddr, mpsc::Receiver<RunnerMsg>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::channel(64);
    let ids = Arc::new(AtomicU64::new(1));
    tokio::spawn(async move {
        while let Ok((s, client)) = l.accept().await {
            let (tx, ids) = (tx.clone(), Arc::clone(&ids));
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let (tx, ids) = (tx.clone(), Arc::clone(&ids));
                    async move {
                        let id = RequestId(ids.fetch_add(1, Ordering::Relaxed));
                        let agent = TcpIo::new(TcpStream::connect(origin).await.unwrap());
                        let report = Report::new(id, tx, None, Instant::now());
                        let view = ClientView {
                            client: client.ip(),
                            https: false,
                            host: Some("app.example.com".into()),
                            port: 8080,
                        };
                        let limits = HttpLimits::default();
                        let resp =
                            forward(req, Box::new(agent), Bytes::new(), view, limits, report);
                        Ok::<_, Infallible>(resp.await)
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(TcpIo::new(s)), service)
                    .await;
            });
        }
    });
    (addr, rx)
}

/// The next `IngressDone` the front reported.
async fn done(rx: &mut mpsc::Receiver<RunnerMsg>) -> IngressEnd {
    let msg = timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
    match msg {
        RunnerMsg::Ingress(IngressMsg::Done { end, .. }) => end,
        other => panic!("{other:?}"),
    }
}

fn curl(args: &[&str]) -> (Option<i32>, Vec<u8>) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "30"])
        .args(args)
        .output()
        .expect("curl is installed");
    (out.status.code(), out.stdout)
}

#[test]
fn forwarded_requests_are_clean_streamed_and_never_silently_truncated() {
    let _ =
        tracing_subscriber::fmt().with_env_filter("meshproxy=debug").with_test_writer().try_init();
    serial(Duration::from_secs(90), async {
        let dir = Scratch::new("gw-forward");
        let (front, mut ends) = front(origin().await).await;
        let base = format!("http://127.0.0.1:{}", front.port());
        // Hygiene, as the origin sees the request.
        let (code, body) = curl(&[
            "-i",
            "-H",
            "Host: app.example.com",
            "-H",
            "Connection: keep-alive, X-Secret",
            "-H",
            "X-Secret: s",
            "-H",
            "X-Forwarded-For: 6.6.6.6",
            "-H",
            "Forwarded: for=6.6.6.6",
            "-H",
            "Proxy-Authorization: Basic eA==",
            "-H",
            "X-Kept: yes",
            &format!("{base}/echo?q=1"),
        ]);
        let text = String::from_utf8_lossy(&body).to_ascii_lowercase();
        assert_eq!(code, Some(0), "{text}");
        let (resp_head, seen) = text.split_once("\r\n\r\n").unwrap();
        assert!(seen.starts_with("get /echo?q=1 http/1.1\r\n"), "{seen}");
        for line in [
            "host: app.example.com",
            "x-forwarded-for: 127.0.0.1",
            "x-forwarded-proto: http",
            "x-forwarded-host: app.example.com",
            "x-forwarded-port: 8080",
            "forwarded: for=127.0.0.1;proto=http;host=\"app.example.com\"",
            "x-kept: yes",
        ] {
            assert!(seen.contains(&format!("{line}\r\n")), "{line:?} missing in {seen}");
        }
        for gone in ["x-secret", "6.6.6.6", "proxy-authorization", "keep-alive"] {
            assert!(!seen.contains(gone), "{gone:?} crossed the gateway: {seen}");
        }
        assert!(!resp_head.contains("x-hop") || resp_head.contains("x-hop: 1"));
        assert!(
            !resp_head.contains("connection: close"),
            "hop-by-hop in the response: {resp_head}"
        );
        assert_eq!(done(&mut ends).await, IngressEnd::Complete);
        // A large download arrives whole and byte for byte.
        let file = dir.path("big");
        let (code, _) = curl(&[
            "-H",
            "Host: app.example.com",
            "-o",
            file.to_str().unwrap(),
            &format!("{base}/big"),
        ]);
        assert_eq!(code, Some(0));
        let mut f = tokio::fs::File::open(&file).await.unwrap();
        let got = read_checked(&mut f, 7, None).await;
        assert_eq!((got.bytes, got.mismatch), (BIG, None));
        assert_eq!(done(&mut ends).await, IngressEnd::Complete);
        // An upload streams to the origin whole.
        let upload = dir.path("upload");
        let mut w = tokio::fs::File::create(&upload).await.unwrap();
        write_stream(&mut w, 9, UPLOAD).await.unwrap();
        w.flush().await.unwrap();
        let (code, body) = curl(&[
            "-H",
            "Host: app.example.com",
            "--data-binary",
            &format!("@{}", upload.display()),
            &format!("{base}/upload"),
        ]);
        assert_eq!((code, String::from_utf8_lossy(&body).as_ref()), (Some(0), "3145728 None"));
        assert_eq!(done(&mut ends).await, IngressEnd::Complete);
        // The origin aborts mid-body: the client sees an error, not a clean short body.
        let (code, body) = curl(&["-H", "Host: app.example.com", &format!("{base}/cut")]);
        assert!(matches!(code, Some(18 | 56)), "curl exit {code:?} after {} bytes", body.len());
        assert!((body.len() as u64) < BIG);
        assert_eq!(done(&mut ends).await, IngressEnd::UpstreamFailed);
        // An upgrade: the 101 passes, then bytes both ways, then a clean end both ways.
        let mut ws = TcpStream::connect(front).await.unwrap();
        ws.write_all(b"GET /ws HTTP/1.1\r\nHost: app.example.com\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
            .await
            .unwrap();
        let head = read_head(&mut ws).await.unwrap().to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 101"), "{head}");
        assert!(
            head.contains("upgrade: echo\r\n") && head.contains("connection: upgrade\r\n"),
            "{head}"
        );
        ws.write_all(b"ping through the gateway").await.unwrap();
        let mut echo = [0u8; 24];
        ws.read_exact(&mut echo).await.unwrap();
        assert_eq!(&echo, b"ping through the gateway");
        ws.shutdown().await.unwrap();
        let mut rest = Vec::new();
        assert_eq!(ws.read_to_end(&mut rest).await.unwrap(), 0, "a clean end comes back");
        assert_eq!(done(&mut ends).await, IngressEnd::Complete);
    });
}
