//! meshproxy's node: the Tokio shell around the pure core
//! ([`meshproxy_core::Node`]). It owns the real clock, the sockets, the state
//! files and the command line; every decision stays in the core.
//!
//! Three layers, one folder each:
//!
//! - [`runtime`]: the loop that owns the `Node` ([`runtime::runner`]) and the data plane
//!   around it: pumps, splices, TCP, listeners and the sockets port.
//! - [`p2p`]: the peer network — its interface to the runner, the libp2p actor, our Noise
//!   and yamux upgrades, and the per-address connection limit.
//! - [`ops`]: what an operator touches — config, flags, identity, keys, state, metrics —
//!   and the assembly of a running node from them (`meshproxy demo` too).
#![forbid(unsafe_code)]
// The driver is the shell that owns the real clock (so it may read
// `Instant::now`), and its hash maps are lookup tables whose iteration order
// never affects behaviour; the workspace bans both for the deterministic core.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

pub mod ops;
pub mod p2p;
pub mod runtime;
