//! The node's sockets outside the peer network: client listeners, origin
//! connects and name lookups, behind one port ([`Sockets`]).
//!
//! Production uses [`TokioSockets`] (the OS through Tokio, with
//! [`TcpIo`]'s reset-on-abort). The port exists so tests can
//! run whole nodes over a simulated network (turmoil) and drive the driver's
//! own glue — listeners, splices, timers — deterministically.

use crate::p2p::BoxStream;
use crate::runtime::tcp::TcpIo;
use meshproxy_core::io::ResolveError;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;

/// A boxed, sendable future (what the object-safe ports return).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A bound client listener.
pub trait Acceptor: Send + 'static {
    /// The address it is bound to.
    fn local_addr(&self) -> io::Result<SocketAddr>;
    /// The next app connection and its source address.
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxStream, SocketAddr)>>;
}

/// A bound client listener, boxed.
pub type BoxAcceptor = Box<dyn Acceptor>;

impl<A: Acceptor + ?Sized> Acceptor for Box<A> {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        (**self).local_addr()
    }

    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxStream, SocketAddr)>> {
        (**self).accept()
    }
}

/// Everything the node does with sockets other than peer-to-peer.
///
/// An aborted stream must look aborted to the far end (a reset, never a clean
/// end of stream): the data plane aborts a stream by dropping it.
pub trait Sockets: Send + Sync + 'static {
    /// Binds a client listener on `addr`.
    fn bind(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<BoxAcceptor>>;
    /// Connects to an origin (the exit's egress).
    fn connect(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<BoxStream>>;
    /// Looks a name up; the addresses in resolver order, without duplicates.
    fn resolve(&self, name: String) -> BoxFuture<'static, Result<Vec<IpAddr>, ResolveError>>;
}

/// The operating system's sockets and resolver, through Tokio.
#[derive(Clone, Copy, Debug, Default)]
pub struct TokioSockets;

impl Acceptor for tokio::net::TcpListener {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        tokio::net::TcpListener::local_addr(self)
    }

    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxStream, SocketAddr)>> {
        Box::pin(async move {
            let (socket, source) = tokio::net::TcpListener::accept(self).await?;
            Ok((Box::new(TcpIo::new(socket)) as BoxStream, source))
        })
    }
}

/// Pending connections a listener queues before the kernel drops SYNs
/// (the kernel caps it at `net.core.somaxconn`). Tokio's default of 128
/// overflowed under a burst of app connects: each dropped SYN cost the app a
/// 1 s retransmit (found by `cargo xtask loadtest`).
pub const LISTEN_BACKLOG: u32 = 4096;

/// A TCP listener on `addr` with [`LISTEN_BACKLOG`] and `SO_REUSEADDR` (so a
/// restarted node can bind its port while old connections linger in TIME_WAIT).
pub fn listen_tcp(addr: SocketAddr) -> io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

impl Sockets for TokioSockets {
    fn bind(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<BoxAcceptor>> {
        Box::pin(async move { Ok(Box::new(listen_tcp(addr)?) as BoxAcceptor) })
    }

    fn connect(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<BoxStream>> {
        Box::pin(async move {
            let s = tokio::net::TcpStream::connect(addr).await?;
            // Reset, not FIN, when the data plane aborts it.
            Ok(Box::new(TcpIo::new(s)) as BoxStream)
        })
    }

    fn resolve(&self, name: String) -> BoxFuture<'static, Result<Vec<IpAddr>, ResolveError>> {
        Box::pin(async move { resolve_system(&name).await })
    }
}

/// Looks a name up with the system resolver.
async fn resolve_system(name: &str) -> Result<Vec<IpAddr>, ResolveError> {
    match tokio::net::lookup_host((name, 0)).await {
        Ok(addrs) => {
            let mut ips: Vec<IpAddr> = Vec::new();
            for a in addrs {
                if !ips.contains(&a.ip()) {
                    ips.push(a.ip());
                }
            }
            if ips.is_empty() {
                Err(ResolveError::NotFound)
            } else {
                Ok(ips)
            }
        }
        // getaddrinfo's "not known"/"no address" mean the name has no records;
        // anything else is a resolver failure.
        Err(e) => {
            let text = e.to_string();
            if text.contains("not known") || text.contains("No address") {
                Err(ResolveError::NotFound)
            } else {
                Err(ResolveError::Failed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::time::timeout;

    /// The port keeps `TcpIo`'s contract: a connection dropped mid-flight
    /// resets, on the connecting side and on the accepted side.
    #[tokio::test]
    async fn connections_through_the_port_reset_when_aborted() {
        timeout(Duration::from_secs(10), async {
            let sockets = TokioSockets;
            let mut listener = sockets.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
            let addr = listener.local_addr().unwrap();
            let mut origin = sockets.connect(addr).await.unwrap();
            let (mut accepted, _) = listener.accept().await.unwrap();
            origin.write_all(b"hi").await.unwrap();
            let mut two = [0u8; 2];
            accepted.read_exact(&mut two).await.unwrap();
            drop(origin); // not ended cleanly: an abort
            let mut buf = [0u8; 8];
            let err = accepted.read(&mut buf).await.expect_err("a reset, not an end of stream");
            assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
            // And the other way: the accepted side aborted resets the connector.
            let mut origin = sockets.connect(addr).await.unwrap();
            let (accepted, _) = listener.accept().await.unwrap();
            drop(accepted);
            let err = origin.read(&mut buf).await.expect_err("a reset, not an end of stream");
            assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_refused_connect_is_an_error_and_literals_resolve_to_themselves() {
        let sockets = TokioSockets;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let err = sockets.connect(addr).await.err().expect("nothing listens");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        let ips = sockets.resolve("127.0.0.1".to_string()).await.unwrap();
        assert_eq!(ips, vec![IpAddr::from([127, 0, 0, 1])]);
    }
}
