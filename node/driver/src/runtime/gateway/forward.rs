//! A forwarded request: HTTP/1.1 to the agent's service over the mesh stream
//! the core handed over, the response relayed to the public client.
//!
//! - **One stream, one request.** hyper's HTTP/1.1 client runs over the
//!   stream (the bytes the core already read behind the agent's answer fed
//!   first) for exactly this request; keep-alive to the agent would need a
//!   pool, which waits for a measurement that it helps.
//! - **Streaming.** The request body goes to the agent as the client sends
//!   it, the response body to the client as the agent sends it; neither is
//!   buffered whole.
//! - **No replay, no silent truncation.** Whatever fails after the hand-over
//!   is the client's 502 (504 when the response head is late) while no
//!   response head went out; after that the client's connection (or h2
//!   stream) is aborted, never ended cleanly on a short body. The request is
//!   never sent anywhere else.
//! - **Upgrades** (WebSocket): the `101` is passed on, then both upgraded
//!   connections are spliced ([`crate::runtime::splice`]: faithful FIN, a
//!   reset on one side resets the other).

use super::hygiene::{self, ClientView};
use super::report::Report;
use super::HttpLimits;
use crate::ops::metrics::IngressMetrics;
use crate::p2p::BoxStream;
use crate::runtime::splice::splice;
use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderValue, HOST, UPGRADE};
use hyper::http::{StatusCode, Uri, Version};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use meshproxy_core::io::{IngressEnd, SpliceEnd, SpliceLimits};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The error type of the bodies the gateway sends.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body of every response the gateway sends.
pub type GatewayBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// A whole body.
pub fn full(bytes: impl Into<Bytes>) -> GatewayBody {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

/// A short plain-text error answer of the gateway's own.
pub fn error_response(status: StatusCode) -> Response<GatewayBody> {
    let text = format!("{} {}\n", status.as_u16(), status.canonical_reason().unwrap_or("error"));
    let mut resp = Response::new(full(text));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

/// Sends `request` to the agent's service over `io` (after `prefix`, the
/// bytes already read from it) and returns the response for the client;
/// `report` tells the core how it ended.
pub async fn forward(
    request: Request<Incoming>,
    io: BoxStream,
    prefix: Bytes,
    view: ClientView,
    limits: HttpLimits,
    report: Report,
) -> Response<GatewayBody> {
    let (mut parts, body) = request.into_parts();
    let upgrade =
        if parts.version == Version::HTTP_11 { hygiene::upgrade_of(&parts.headers) } else { None };
    let client_upgrade =
        upgrade.as_ref().and_then(|_| parts.extensions.remove::<hyper::upgrade::OnUpgrade>());
    let mut headers = hygiene::upstream(&parts.headers, upgrade.clone(), &view);
    // An absolute-form or h2 target names the host in its authority, which
    // wins over (or stands in for) `Host` (RFC 9112 §3.2.2).
    if let Some(authority) = parts.uri.authority() {
        if let Ok(v) = HeaderValue::from_str(authority.as_str()) {
            headers.insert(HOST, v);
        }
    }
    let origin_form = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let uri = origin_form.parse::<Uri>().unwrap_or_else(|_| Uri::from_static("/"));
    let meter = report.metrics();
    let up = meter.clone();
    let body = body.map_frame(move |frame| {
        if let (Some(m), Some(data)) = (&up, frame.data_ref()) {
            m.bytes_up(data.len() as u64);
        }
        frame
    });
    let mut upstream = Request::new(body);
    *upstream.method_mut() = parts.method;
    *upstream.uri_mut() = uri;
    *upstream.version_mut() = Version::HTTP_11;
    *upstream.headers_mut() = headers;

    let io = TokioIo::new(Prefixed { prefix, inner: io });
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(io).await {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "ingress: HTTP/1.1 to the agent failed to start");
            report.finish(IngressEnd::UpstreamFailed);
            return error_response(StatusCode::BAD_GATEWAY);
        }
    };
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "ingress: connection to the agent failed");
        }
    });
    let answer = tokio::time::timeout(limits.response_timeout, sender.send_request(upstream)).await;
    drop(sender); // one request: the connection ends with its response
    let mut resp = match answer {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "ingress: the agent's service did not answer");
            report.finish(IngressEnd::UpstreamFailed);
            return error_response(StatusCode::BAD_GATEWAY);
        }
        Err(_) => {
            report.finish(IngressEnd::UpstreamFailed);
            return error_response(StatusCode::GATEWAY_TIMEOUT);
        }
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            // A 101 nobody asked for cannot be relayed as a response.
            report.finish(IngressEnd::UpstreamFailed);
            return error_response(StatusCode::BAD_GATEWAY);
        };
        let protocol = resp.headers().get(UPGRADE).cloned().or(upgrade);
        let agent_upgrade = hyper::upgrade::on(&mut resp);
        let (head, _) = resp.into_parts();
        let mut out = Response::from_parts(head, full(Bytes::new()));
        hygiene::downstream(out.headers_mut(), protocol);
        let idle = SpliceLimits { idle_timeout: limits.upgrade_idle_timeout };
        tokio::spawn(relay_upgrade(client_upgrade, agent_upgrade, idle, meter, report));
        return out;
    }
    let (mut head, body) = resp.into_parts();
    hygiene::downstream(&mut head.headers, None);
    let relay = RelayBody { inner: body, meter, report: Some(report) };
    Response::from_parts(head, relay.boxed())
}

/// Splices the client's and the agent's upgraded connections once both are
/// ready, and reports how it ended.
async fn relay_upgrade(
    client: hyper::upgrade::OnUpgrade,
    agent: hyper::upgrade::OnUpgrade,
    limits: SpliceLimits,
    meter: Option<Arc<IngressMetrics>>,
    report: Report,
) {
    let (client, agent) = match (client.await, agent.await) {
        (Ok(c), Ok(a)) => (c, a),
        (Err(_), _) => return report.finish(IngressEnd::ClientGone),
        (_, Err(_)) => return report.finish(IngressEnd::UpstreamFailed),
    };
    let a: BoxStream = Box::new(TokioIo::new(client));
    let b: BoxStream = Box::new(TokioIo::new(agent));
    let r = splice(a, b, Bytes::new(), Bytes::new(), limits).await;
    if let Some(m) = &meter {
        m.bytes_up(r.a_to_b);
        m.bytes_down(r.b_to_a);
    }
    report.finish(match r.how {
        SpliceEnd::Clean => IngressEnd::Complete,
        SpliceEnd::ResetA => IngressEnd::ClientGone,
        SpliceEnd::ResetB | SpliceEnd::IdleTimeout => IngressEnd::UpstreamFailed,
    });
}

/// The agent's response body on its way to the client: counted, and its end
/// reported — `Complete` at its clean end, `UpstreamFailed` on an error
/// (which hyper turns into an aborted client connection or h2 stream, never
/// a clean end), `ClientGone` when hyper drops it before its end.
struct RelayBody {
    inner: Incoming,
    meter: Option<Arc<IngressMetrics>>,
    report: Option<Report>,
}

impl Body for RelayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(m), Some(data)) = (&self.meter, frame.data_ref()) {
                    m.bytes_down(data.remaining() as u64);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(r) = self.report.take() {
                    r.finish(IngressEnd::UpstreamFailed);
                }
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Ready(None) => {
                if let Some(r) = self.report.take() {
                    r.finish(IngressEnd::Complete);
                }
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for RelayBody {
    /// hyper stops polling a body that says it is at its end (its length
    /// reached) and drops it: that is a complete response. Dropped before
    /// its end, the client went away.
    fn drop(&mut self) {
        if let Some(r) = self.report.take() {
            let whole = self.inner.is_end_stream();
            r.finish(if whole { IngressEnd::Complete } else { IngressEnd::ClientGone });
        }
    }
}

/// A stream read after `prefix`, the bytes already taken from it.
pub(super) struct Prefixed {
    prefix: Bytes,
    inner: BoxStream,
}

impl Prefixed {
    /// `inner`, with `prefix` read first.
    pub(super) fn new(prefix: Bytes, inner: BoxStream) -> Prefixed {
        Prefixed { prefix, inner }
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.is_empty() {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let n = self.prefix.len().min(buf.remaining());
        let head = self.prefix.split_to(n);
        buf.put_slice(&head);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
