//! The public listeners' accept loop: connections capped per source address
//! and in all, each served by hyper (HTTP/1.1 or h2 with prior knowledge,
//! told apart by hyper-util's auto builder) with the gateway's head limits
//! and header deadline.
//!
//! A connection over a cap is answered `503` with `Connection: close` at once
//! (an HTTP/1 client sees why; an h2 one sees its connection end) and counted.

use super::forward::Prefixed;
use super::request::{handle, Shared};
use super::{HttpLimits, PublicListener};
use crate::p2p::BoxStream;
use crate::runtime::sockets::Acceptor;
use bytes::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Public connections open now, in all and per source host.
#[derive(Debug, Default)]
pub struct Connections {
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// Why a connection was turned away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The gateway holds `max_connections`.
    Global,
    /// Its source holds `max_connections_per_ip`.
    PerIp,
}

impl Refused {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Refused::Global => "global_cap",
            Refused::PerIp => "per_ip_cap",
        }
    }
}

/// One open connection, counted until dropped.
#[derive(Debug)]
pub struct Admitted {
    conns: Arc<Connections>,
    host: IpAddr,
}

/// The host a source address counts against: its IPv4 address, or its IPv6
/// address's /64 (one host's usual allocation).
fn host_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

impl Connections {
    /// Counts a connection from `ip`, unless a cap is reached.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, limits: &HttpLimits) -> Result<Admitted, Refused> {
        let host = host_of(ip);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.0 >= limits.max_connections {
            return Err(Refused::Global);
        }
        let mine = open.1.entry(host).or_insert(0);
        if *mine >= limits.max_connections_per_ip {
            return Err(Refused::PerIp);
        }
        *mine += 1;
        open.0 += 1;
        Ok(Admitted { conns: Arc::clone(self), host })
    }

    /// Connections open now.
    pub fn count(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).0
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.conns.open.lock().unwrap_or_else(|p| p.into_inner());
        open.0 = open.0.saturating_sub(1);
        if let Some(n) = open.1.get_mut(&self.host) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.host);
            }
        }
    }
}

/// What a turned-away connection reads.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Length: 31\r\n\r\ntoo many connections, try later\n";

/// Accepts public connections on `acceptor` until aborted.
pub async fn accept_loop<A: Acceptor>(
    mut acceptor: A,
    listener: PublicListener,
    shared: Arc<Shared>,
    conns: Arc<Connections>,
) {
    loop {
        let (io, source) = match acceptor.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                // Out of descriptors and the like: back off rather than spin.
                tracing::warn!(listener = %listener.id, error = %e, "gateway accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match conns.admit(source.ip(), &shared.limits) {
            Ok(admitted) => {
                let (listener, shared) = (listener.clone(), Arc::clone(&shared));
                tokio::spawn(serve(io, listener, source, shared, admitted));
            }
            Err(why) => {
                if let Some(m) = &shared.metrics {
                    m.refused(why.label());
                }
                tokio::spawn(async move {
                    let mut io = io;
                    let _ = tokio::time::timeout(Duration::from_secs(1), async {
                        io.write_all(BUSY).await?;
                        io.shutdown().await
                    })
                    .await;
                });
            }
        }
    }
}

/// The first bytes of an h2 connection with prior knowledge (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads until the bytes tell HTTP/1 from h2 (a byte off the h2 preface, or
/// the whole preface), as hyper-util's version detection will: it has no
/// deadline of its own, so a client sending nothing (or half a preface)
/// would hold its connection past `header_read_timeout` without this.
async fn sniff(io: &mut BoxStream) -> std::io::Result<Vec<u8>> {
    let mut got = Vec::with_capacity(H2_PREFACE.len());
    let mut buf = [0u8; H2_PREFACE.len()];
    while got.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(&got) {
        let n = io.read(&mut buf[..H2_PREFACE.len() - got.len()]).await?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    Ok(got)
}

/// Serves one public connection.
async fn serve(
    mut io: BoxStream,
    listener: PublicListener,
    source: SocketAddr,
    shared: Arc<Shared>,
    _admitted: Admitted,
) {
    let limits = shared.limits;
    let first = match tokio::time::timeout(limits.header_read_timeout, sniff(&mut io)).await {
        Ok(Ok(first)) => first,
        // Silent past the deadline, or gone: dropping the connection resets it.
        Ok(Err(_)) | Err(_) => return,
    };
    let io = Prefixed::new(Bytes::from(first), io);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_head_bytes)
        .max_headers(limits.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_head_bytes).unwrap_or(u32::MAX));
    let service =
        service_fn(move |request| handle(request, listener.clone(), source, Arc::clone(&shared)));
    if let Err(e) = builder.serve_connection_with_upgrades(TokioIo::new(io), service).await {
        tracing::debug!(%source, error = %e, "gateway connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_capped_per_host_and_in_all_and_released_on_drop() {
        let limits =
            HttpLimits { max_connections: 3, max_connections_per_ip: 2, ..HttpLimits::default() };
        let conns = Arc::new(Connections::default());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let first = conns.admit(a, &limits).unwrap();
        let _second = conns.admit(a, &limits).unwrap();
        assert_eq!(conns.admit(a, &limits).unwrap_err(), Refused::PerIp);
        // One IPv6 host is its /64.
        let _v6 = conns.admit("2001:db8::1".parse().unwrap(), &limits).unwrap();
        assert_eq!(
            conns.admit("192.0.2.2".parse().unwrap(), &limits).unwrap_err(),
            Refused::Global
        );
        drop(first);
        assert_eq!(conns.count(), 2);
        let _third = conns.admit(a, &limits).unwrap();
        let limits = HttpLimits { max_connections_per_ip: 1, ..limits };
        let conns = Arc::new(Connections::default());
        let _one = conns.admit("2001:db8::1".parse().unwrap(), &limits).unwrap();
        assert_eq!(
            conns.admit("2001:db8::2".parse().unwrap(), &limits).unwrap_err(),
            Refused::PerIp,
            "the same /64"
        );
    }
}
