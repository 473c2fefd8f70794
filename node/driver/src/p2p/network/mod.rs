//! The peer network actor: one Tokio task that owns the libp2p [`Swarm`](libp2p::Swarm) and
//! turns the runner's [`NetCommand`](crate::p2p::NetCommand)s into swarm calls and swarm
//! events into [`NetEvent`](crate::p2p::NetEvent)s.
//!
//! Transports: TCP (Noise + Yamux) and QUIC, with DNS names in multiaddrs. Our two byte-stream
//! protocols (`/meshproxy/proxy/1`, `/meshproxy/hub/1`) run over the small `streams`
//! behaviour (`streams.rs`); identify and ping ride along so peers learn each other's
//! protocols and addresses, and dead connections are closed.
//!
//! A hub also serves as a libp2p circuit relay v2 (see [`RelayServerConfig`]), with limits
//! sized for proxied traffic rather than libp2p's 2 min / 128 KiB defaults, and only for
//! peers that passed the hub's challenge: the core's `Admit` / `Revoke` outputs reach the
//! actor as [`NetCommand::Admit`](crate::p2p::NetCommand::Admit) /
//! [`NetCommand::Revoke`](crate::p2p::NetCommand::Revoke), which keep its [`AdmittedPeers`]
//! list, and the relay's limiters refuse everyone else's reservations and circuits.
//!
//! Every other node is a relay client: `Reserve` listens on `<hub>/p2p/<hub>/p2p-circuit`
//! (libp2p renews the reservation), `Dial { via }` dials `…/p2p-circuit/p2p/<peer>`, and
//! DCUtR upgrades relayed connections (it starts by itself on the side that accepted the
//! circuit; `HolePunch` reports its outcome and adds a plain dial to the peer's identify
//! addresses). Autonat (hubs answer probes, others ask) reports `Reachability`. Each
//! `PeerConnected` says whether the connection is direct or relayed through which hub,
//! with the relay's circuit caps when it announced them.
//!
//! Why not `libp2p-stream`: it hands inbound streams over a one-slot channel and drops the
//! ones that do not fit (a burst of proxied connections loses streams), and it negotiates one
//! outbound stream per connection at a time (one round trip each). Ours queues up to
//! [`crate::p2p::INBOUND_STREAM_QUEUE`] inbound streams (then resets new ones, counted)
//! and negotiates outbound streams concurrently.
//!
//! Contract (the same one the simulator honours):
//! - every `Dial` is answered by `PeerConnected` or `DialFailed`; a direct `Dial` to a peer
//!   that is already connected is answered at once with `PeerConnected` for an existing
//!   connection (a direct one if any); a `Dial { via }` always makes a new connection;
//! - `OpenStream` goes on the connection named, else on the newest direct connection, else
//!   the newest; to a peer without a connection (or a connection that is gone) it is
//!   answered with `StreamRefused` at once (the actor never dials implicitly: dialing is the
//!   core's decision); `StreamOpened` comes without waiting for the peer to confirm the
//!   protocol, so a peer that does not offer it shows as a reset at the first read, not as
//!   `StreamRefused` (`negotiation.rs`);
//! - `Reserve` is answered by `ReservationAccepted` (at once if one is held) or
//!   `ReservationFailed`, later perhaps `ReservationLost`; `HolePunch` by a direct
//!   `PeerConnected` or `HolePunchFailed`;
//! - the actor sets no policy timers: deadlines belong to the core. One exception: a
//!   `Dial { via }` may wait up to [`IDENTIFY_WAIT`] for the hub's identify (see
//!   `NetworkActor::dial_via`), out of the core's dial deadline (10 s by default).
//!
//! # Layout
//!
//! - `config.rs`: the configuration types ([`NetConfig`], [`AutonatConfig`],
//!   [`RelayServerConfig`]; [`NetLimits`] and [`RelayLimits`] are re-exported from
//!   [`crate::ops::config`], where the file's keys are), the relay's allow-list [`AdmittedPeers`],
//!   and their translation to libp2p's relay (clamped) and autonat settings.
//! - `convert.rs`: libp2p ↔ core conversions ([`to_core`], [`from_core`], [`addr_to_core`],
//!   [`addr_from_core`]) and the multiaddr helpers the actor reads addresses with.
//! - `swarm.rs`: the composed `SwarmBehaviour`, the transports, and `build_swarm`
//!   ([`NetError`] says why it failed).
//! - `actor.rs`: [`NetworkActor`] and its [`NetHandle`]: the task loop, commands,
//!   connections, dials, streams, identify, listeners, autonat and the relay server's logs.
//! - `relay_client.rs`: the actor's relay-client state (`RelayClient`: reservations, parked
//!   dials, circuit caps, hole punches) and the handlers that act on it.
//! - `parked.rs`: `ParkedDials`, dials through a hub waiting up to [`IDENTIFY_WAIT`] for its
//!   identify.
//! - `negotiation.rs`: why outbound substreams settle their protocol lazily (multistream-select
//!   `V1Lazy`, one round trip less per proxied connection) and how a peer's refusal shows.
//! - `streams.rs`: our byte-stream protocols' behaviour (`ByteStreams`), its connection
//!   handler, and `PeerStream`, which tells an aborted stream from a finished one.

mod actor;
mod config;
mod convert;
mod negotiation;
mod parked;
mod relay_client;
mod streams;
mod swarm;

pub use actor::{NetHandle, NetworkActor};
pub use config::{
    AdmittedPeers, AutonatConfig, NetConfig, NetLimits, RelayLimits, RelayServerConfig,
    RELAY_MAX_DURATION, YAMUX_MAX_STREAMS_CEILING,
};
pub use convert::{addr_from_core, addr_to_core, from_core, to_core};
pub use parked::IDENTIFY_WAIT;
pub use swarm::NetError;
