//! Client listeners: accept loops that hand each app connection to the runner.
//!
//! Listeners bind loopback by default (DESIGN §6); binding anything else
//! without authentication opens the proxy to whoever can reach the address,
//! so it is logged as a warning.

use crate::runtime::runner::RunnerMsg;
use crate::runtime::sockets::Acceptor;
use meshproxy_core::ids::ListenerId;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// The default bind address of a SOCKS5/HTTP listener.
pub const DEFAULT_BIND: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 1080);

/// Whether a listener on `addr` without authentication is reachable from other
/// hosts (and so deserves a warning).
pub fn exposed_without_auth(addr: SocketAddr, has_auth: bool) -> bool {
    !has_auth && !addr.ip().is_loopback()
}

/// Warns when a listener on `addr` is open to other hosts without auth.
pub fn warn_if_exposed(addr: SocketAddr, has_auth: bool) {
    if exposed_without_auth(addr, has_auth) {
        tracing::warn!(
            %addr,
            "client listener bound to a non-loopback address without authentication: \
             anyone who can reach it can use this proxy"
        );
    }
}

/// Binds a client listener, warning when it is open to other hosts without auth.
pub async fn bind(addr: SocketAddr, has_auth: bool) -> io::Result<TcpListener> {
    warn_if_exposed(addr, has_auth);
    crate::runtime::sockets::listen_tcp(addr)
}

/// Accepts connections until the runner goes away, handing each one over as
/// [`RunnerMsg::AppAccepted`] (the runner allocates its stream id and pump).
/// The listener is a Tokio [`TcpListener`] or any other [`Acceptor`].
pub async fn accept_loop<A: Acceptor>(
    mut listener: A,
    id: ListenerId,
    runner: mpsc::Sender<RunnerMsg>,
) {
    loop {
        match listener.accept().await {
            Ok((io, source)) => {
                if runner.send(RunnerMsg::AppAccepted { listener: id, source, io }).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                // Out of descriptors and the like: back off rather than spin.
                tracing::warn!(listener = %id, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
