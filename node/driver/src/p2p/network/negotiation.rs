//! How our outbound substreams settle their protocol: multistream-select `V1Lazy`
//! ([`OUTBOUND`]), so a proxied connection costs one round trip to the exit instead of two,
//! and how a peer's refusal of a protocol shows up under it ([`refused_by_peer`]).
//!
//! With multistream-select `V1`, the opener of a stream sends the protocol header and
//! its proposal (`/meshproxy/proxy/1`) and waits for the listener to echo them before it
//! may write: the client's `ConnectRequest` leaves one round trip after the stream opens and
//! reaches the exit after three one-way delays. With `V1Lazy` the opener settles on its
//! proposal at once: the request follows the proposal without waiting for the peer and
//! reaches the exit after one. The wire is `V1`'s, byte for byte: only *when* the dialer writes
//! changes, and the listener side (what stock peers open to us) is untouched.
//!
//! Why the whole swarm and not just our protocols: libp2p-swarm 0.48 negotiates every
//! outbound substream itself, before any handler sees it, with one version for the whole
//! connection pool (`with_substream_upgrade_protocol_override`); a `SubstreamProtocol` can
//! no longer ask for a version of its own. Opening our streams outside the swarm would
//! mean a side door into both muxers (our Yamux and libp2p-quic's). What `V1Lazy`
//! changes for the others, all of which propose exactly one protocol per stream:
//!
//! - where the peer offers the protocol, nothing but the saved round trip;
//! - where it does not, the refusal (`na`) is no longer an error at open
//!   (`StreamUpgradeError::NegotiationFailed`) but the first read fails with
//!   `NegotiationError::Failed`. Every protocol we run reads an answer before it uses one
//!   (identify reads the info, ping the pong, relay's hop and stop and DCUtR read their
//!   status, autonat its response), so a refusal is still a failure of that exchange; only
//!   its label changes, from "unsupported" to an I/O error. Identify, relay, DCUtR and
//!   autonat treat both alike. Ping does not: it stops pinging a peer that refuses it but
//!   reports any other error, and the actor closes connections whose pings fail (a
//!   half-dead TCP connection). [`refused_by_peer`] lets the actor tell a refusal from a
//!   failure, so a stock peer without ping keeps its connection, as under `V1`.
//! - our own streams: a peer that does not offer `/meshproxy/proxy/1`, `/meshproxy/hub/1` or
//!   `/meshproxy/ingress/1` no longer answers `OpenStream` with `StreamRefused`; the stream
//!   opens and its first read fails, which the pump reports to the core as a reset. The
//!   core treats a reset before the answer exactly as a refused stream (the client tries
//!   another exit, the hub link fails and retries, the gateway counts a `Failure` and may
//!   retry: rule 5 of `wire::ingress`). The gateway's `Open` saves the round trip too.
//!
//! The pitfall the multistream-select docs name (a listener that refuses the proposal reads
//! the early data as a next proposal) cannot bite our protocols: every message we send
//! first is a frame whose 4-byte big-endian length starts with `0x00`, which
//! multistream-select reads as an empty message, never as a protocol name, so the
//! listener fails the negotiation and resets the stream.
//!
//! The proposal does not wait for the opener's first message: the connection handler
//! flushes it as the stream opens (`streams.rs`), so the peer hears of every stream at once,
//! as under `V1`, even one whose opener has nothing to say first (a hub stream: the hub
//! speaks first, so hub streams gain nothing here, and lose nothing).

use libp2p::core::upgrade::{NegotiationError, Version};

/// The multistream-select version of every outbound substream (see the module docs).
pub(super) const OUTBOUND: Version = Version::V1Lazy;

/// Whether `error`, or an error it wraps, is the peer refusing the protocol we proposed
/// lazily (it answered `na`): the peer does not offer the protocol, the connection is fine.
pub(super) fn refused_by_peer(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if matches!(e.downcast_ref::<NegotiationError>(), Some(NegotiationError::Failed)) {
            return true;
        }
        // `io::Error::source` skips the error it wraps (it is the Display): look inside.
        if let Some(inner) = e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            if matches!(inner.downcast_ref::<NegotiationError>(), Some(NegotiationError::Failed)) {
                return true;
            }
        }
        next = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{AsyncReadExt as _, AsyncWriteExt as _};
    use multistream_select::{dialer_select_proto, listener_select_proto};
    use tokio_util::compat::TokioAsyncReadCompatExt as _;

    /// Dials `proposal` lazily against a listener offering `offered`, writes `early`, reads.
    async fn lazy_exchange(
        proposal: &'static str,
        offered: &'static [&'static str],
        early: &[u8],
    ) -> std::io::Result<Vec<u8>> {
        let (dialer, listener) = tokio::io::duplex(4096);
        let listener = tokio::spawn(async move {
            if let Ok((_, mut io)) = listener_select_proto(listener.compat(), offered.iter()).await
            {
                let mut request = [0u8; 4];
                io.read_exact(&mut request).await.expect("the early data follows the proposal");
                io.write_all(b"pong").await.expect("answer");
                io.flush().await.expect("flush");
            }
            // A refused negotiation drops the stream: the dialer's read ends.
        });
        let (_, mut io) = dialer_select_proto(dialer.compat(), [proposal], OUTBOUND)
            .await
            .expect("lazy: settled without waiting for the listener");
        io.write_all(early).await?;
        io.flush().await?;
        let mut answer = vec![0u8; 4];
        let read = io.read_exact(&mut answer).await;
        listener.await.expect("listener task");
        read.map(|()| answer)
    }

    #[tokio::test]
    async fn a_lazy_proposal_carries_early_data_and_a_refusal_is_told_from_a_failure() {
        let answer = lazy_exchange("/meshproxy/proxy/1", &["/meshproxy/proxy/1"], b"ping")
            .await
            .expect("an offered protocol works");
        assert_eq!(answer, b"pong");

        // A frame of ours as the early data (length prefix first): refused, not misread.
        let refused = lazy_exchange("/meshproxy/proxy/1", &["/ipfs/ping/1.0.0"], &[0, 0, 0, 2])
            .await
            .expect_err("not offered");
        assert!(refused_by_peer(&refused), "{refused:?} is the peer's refusal");
        // As ping reports it: boxed in its failure.
        let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(refused);
        assert!(refused_by_peer(boxed.as_ref()));

        for failure in [
            std::io::Error::from(std::io::ErrorKind::ConnectionReset),
            std::io::Error::other("ping payload mismatch"),
            std::io::Error::from(NegotiationError::ProtocolError(
                libp2p::core::upgrade::ProtocolError::InvalidMessage,
            )),
        ] {
            assert!(!refused_by_peer(&failure), "{failure:?} is not a refusal");
        }
    }
}
