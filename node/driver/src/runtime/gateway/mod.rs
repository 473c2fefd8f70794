//! The gateway's HTTP side (`DESIGN.md` §8): public listeners speaking
//! HTTP/1.1 and h2 (hyper), each request decided by the core's gateway role,
//! and the forwarded ones carried to an agent as HTTP/1.1 over one mesh
//! stream each.
//!
//! ```text
//! public client ─▶ server (accept loop, connection caps, hyper auto: h1 + h2)
//!                    └─ request: head ─▶ RunnerMsg::Ingress(Request) ─▶ core (route, choose agent)
//!                                                            ┌─────────────┘
//!                       ◀── Answer::Respond (static, redirect, 4xx/5xx) ────┤ bridge (in the runner):
//!                       ◀── Answer::Forward (the agent's stream, detached) ─┘ answers by RequestId
//!                    └─ forward: hygiene ─▶ hyper http1 client over the stream ─▶ response relayed,
//!                       bodies streamed both ways; an upgrade becomes a splice
//!                    └─ IngressDone { Complete | UpstreamFailed | ClientGone } ─▶ core
//! ```
//!
//! - [`server`]: binds nothing (the caller binds), accepts, caps connections
//!   per source IP and in all, serves each with hyper's limits.
//! - [`request`]: one request's way through the core.
//! - [`head`]: the core's [`meshproxy_core::http_head::RequestHead`]
//!   built from what hyper parsed.
//! - [`forward`]: the HTTP/1.1 client over the agent's stream, the relayed
//!   response, upgrades.
//! - [`hygiene`]: hop-by-hop headers out, the gateway's `X-Forwarded-*` and
//!   `Forwarded` in.
//! - [`bridge`]: the runner's side: who waits for which answer, streams on
//!   their way from a pump to a forward.
//! - [`report`]: the one `IngressDone` each request owes the core.

pub mod bridge;
pub mod forward;
pub mod head;
pub mod hygiene;
pub mod report;
pub mod request;
pub mod server;

use crate::p2p::BoxStream;
use bytes::Bytes;
use core::fmt;
use meshproxy_core::http_head::RequestHead;
use meshproxy_core::ids::{ListenerId, PeerId, RequestId};
use meshproxy_core::io::{IngressEnd, IngressResponse};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::oneshot;

/// What a gateway request task tells the runner.
pub enum IngressMsg {
    /// A public request: the core answers through `reply`.
    Request {
        /// The request's id (unique among the node's requests in flight).
        request: RequestId,
        /// The listener it came in on.
        listener: ListenerId,
        /// The public client.
        client: SocketAddr,
        /// Its head.
        head: RequestHead,
        /// Where the answer goes.
        reply: oneshot::Sender<Answer>,
    },
    /// The request is over, as [`meshproxy_core::io::Input::IngressDone`].
    Done {
        /// The request.
        request: RequestId,
        /// How it ended.
        end: IngressEnd,
    },
}

impl fmt::Debug for IngressMsg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IngressMsg::Request { request, listener, client, head, .. } => {
                write!(
                    f,
                    "Request({request:?}, {listener}, {client}, {} {})",
                    head.method, head.target
                )
            }
            IngressMsg::Done { request, end } => write!(f, "Done({request:?}, {end:?})"),
        }
    }
}

/// The core's answer to one request, as the request task receives it.
pub enum Answer {
    /// Answer the client with this.
    Respond(IngressResponse),
    /// Send the request to the agent at the far end of `io`.
    Forward {
        /// The `/meshproxy/ingress/1` stream, past the agent's `Ok`.
        io: BoxStream,
        /// Bytes already read from it (the start of the response).
        prefix: Bytes,
        /// The agent.
        agent: PeerId,
    },
    /// The agent's stream died while it was handed over: a 502, no retry.
    Lost,
}

impl fmt::Debug for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Respond(r) => write!(f, "Respond({})", r.status),
            Answer::Forward { agent, prefix, .. } => {
                write!(f, "Forward({agent}, {} bytes ahead)", prefix.len())
            }
            Answer::Lost => write!(f, "Lost"),
        }
    }
}

/// The gateway's HTTP limits and deadlines (`[gateway]` keys; see the README).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// A client must send a whole request head within this (hyper's
    /// `header_read_timeout`); then its connection is closed.
    pub header_read_timeout: Duration,
    /// Most bytes of a request head; beyond, 431 (hyper's read buffer, so at least 8192).
    pub max_head_bytes: usize,
    /// Most header fields of a request; beyond, 431.
    pub max_headers: usize,
    /// Most public connections open at once.
    pub max_connections: usize,
    /// Most public connections open at once from one source IP (an IPv6 /64).
    pub max_connections_per_ip: usize,
    /// How long an agent may take to send the response head once the request
    /// went to it; then 504.
    pub response_timeout: Duration,
    /// An upgraded connection (WebSocket) with nothing moving either way for
    /// this long is reset.
    pub upgrade_idle_timeout: Duration,
}

/// hyper's smallest read buffer: the floor of [`HttpLimits::max_head_bytes`].
pub const MIN_HEAD_BYTES: usize = 8192;

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_read_timeout: Duration::from_secs(10),
            max_head_bytes: 16 * 1024,
            max_headers: 100,
            max_connections: 4096,
            max_connections_per_ip: 256,
            response_timeout: Duration::from_secs(60),
            upgrade_idle_timeout: Duration::from_secs(600),
        }
    }
}

/// One public listener as the HTTP side needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicListener {
    /// The node's id of it.
    pub id: ListenerId,
    /// Where it is bound.
    pub bind: SocketAddr,
    /// The port the public reaches it on (`X-Forwarded-Port`).
    pub port: u16,
    /// Whether the public speaks https to it, through a TLS terminator in
    /// front (`X-Forwarded-Proto`).
    pub https: bool,
}
