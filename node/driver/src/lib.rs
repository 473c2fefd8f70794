//! meshproxy's node: the Tokio shell around the pure core
//! ([`meshproxy_core::Node`]). It owns the real clock, the sockets, the state
//! files and the command line; every decision stays in the core.
//!
//! - [`app`]: assembles a running node from a config file and a network;
//!   [`node`]: the same over libp2p.
//! - [`runner`]: owns the `Node`, feeds it inputs and time, carries out its outputs.
//! - [`pump`]: per-stream tasks for streams the core still controls.
//! - [`splice`]: the data plane (both-way copy with half-close and resets).
//! - [`tcp`]: TCP streams that reset, rather than close, when aborted.
//! - [`port`]: the interface to the peer network actor; [`network`]: that actor over libp2p;
//!   [`noise`] and [`muxer`]: its Noise and yamux upgrades, built for bulk data; [`per_ip`]:
//!   its inbound connection limit per address.
//! - [`listener`]: client listener accept loops; [`sockets`]: the port to listeners,
//!   origin connects and name lookups (the OS, or a simulated network in tests).
//! - [`config`], [`identity`], [`state`]: files on disk; [`flags`]: the role commands' flags.
//! - [`metrics`]: Prometheus metrics from the node's events, and the `/metrics` endpoint.
//! - [`demo`]: a whole mesh in one process (`meshproxy demo`).
#![forbid(unsafe_code)]
// The driver is the shell that owns the real clock (so it may read
// `Instant::now`), and its hash maps are lookup tables whose iteration order
// never affects behaviour; the workspace bans both for the deterministic core.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

pub mod app;
pub mod config;
pub mod demo;
pub mod flags;
pub mod identity;
pub mod keys;
pub mod listener;
pub mod metrics;
pub mod muxer;
pub mod network;
pub mod node;
pub mod noise;
pub mod per_ip;
pub mod port;
pub mod pump;
pub mod runner;
pub mod sockets;
pub mod splice;
pub mod state;
pub mod tcp;
