//! One public request's way through the core: its head goes to the runner,
//! the core's answer comes back, and the request is answered here or
//! forwarded ([`super::forward`]).
//!
//! No byte of the request body is read before the core forwarded it: hyper
//! reads a body only when it is polled, and it is first polled by the
//! agent's connection. (A client waiting for `100 Continue` gets it then.)

use super::forward::{error_response, forward, full, GatewayBody};
use super::head::request_head;
use super::hygiene::ClientView;
use super::report::Report;
use super::{Answer, HttpLimits, IngressMsg, PublicListener};
use crate::ops::metrics::IngressMetrics;
use crate::runtime::runner::RunnerMsg;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE, LOCATION};
use hyper::http::StatusCode;
use hyper::{Request, Response};
use meshproxy_core::ids::RequestId;
use meshproxy_core::ingress::Request as Normalised;
use meshproxy_core::io::{IngressEnd, IngressResponse};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// What every request task of a node shares.
#[derive(Debug)]
pub struct Shared {
    /// The runner.
    pub runner: mpsc::Sender<RunnerMsg>,
    /// Where requests and bytes are counted.
    pub metrics: Option<Arc<IngressMetrics>>,
    /// The HTTP limits.
    pub limits: HttpLimits,
    next: AtomicU64,
}

impl Shared {
    /// Shared state for the request tasks of the runner behind `runner`.
    pub fn new(
        runner: mpsc::Sender<RunnerMsg>,
        metrics: Option<Arc<IngressMetrics>>,
        limits: HttpLimits,
    ) -> Shared {
        Shared { runner, metrics, limits, next: AtomicU64::new(1) }
    }

    /// A request id no other request of this node has.
    fn next_id(&self) -> RequestId {
        RequestId(self.next.fetch_add(1, Ordering::Relaxed))
    }
}

/// Answers one public request on `listener` from `client`.
pub async fn handle(
    request: Request<Incoming>,
    listener: PublicListener,
    client: SocketAddr,
    shared: Arc<Shared>,
) -> Result<Response<GatewayBody>, Infallible> {
    let started = Instant::now();
    let id = shared.next_id();
    let (parts, body) = request.into_parts();
    let head = request_head(&parts);
    let host = Normalised::from_head(&head).ok().and_then(|r| r.host);
    let report = Report::new(id, shared.runner.clone(), shared.metrics.clone(), started);
    let (reply, answer) = oneshot::channel();
    let msg = IngressMsg::Request { request: id, listener: listener.id, client, head, reply };
    if shared.runner.send(RunnerMsg::Ingress(msg)).await.is_err() {
        report.answered(); // the node is stopping: nobody is owed anything
        return Ok(error_response(StatusCode::SERVICE_UNAVAILABLE));
    }
    Ok(match answer.await {
        Err(_) => {
            report.answered();
            error_response(StatusCode::SERVICE_UNAVAILABLE)
        }
        Ok(Answer::Respond(r)) => {
            report.answered();
            respond(r)
        }
        Ok(Answer::Lost) => {
            report.finish(IngressEnd::UpstreamFailed);
            error_response(StatusCode::BAD_GATEWAY)
        }
        Ok(Answer::Forward { io, prefix, agent }) => {
            tracing::debug!(request = %id, %agent, "ingress: forwarding");
            let view = ClientView {
                client: client.ip(),
                https: listener.https,
                host,
                port: listener.port,
            };
            let request = Request::from_parts(parts, body);
            forward(request, io, prefix, view, shared.limits, report).await
        }
    })
}

/// The client's response to an answer of the core's own.
fn respond(r: IngressResponse) -> Response<GatewayBody> {
    let Ok(status) = StatusCode::from_u16(r.status) else {
        return error_response(StatusCode::INTERNAL_SERVER_ERROR);
    };
    let mut resp = Response::new(full(r.body));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&r.content_type) {
        headers.insert(CONTENT_TYPE, v);
    }
    if let Some(v) = r.location.as_deref().and_then(|l| HeaderValue::from_str(l).ok()) {
        headers.insert(LOCATION, v);
    }
    resp
}
