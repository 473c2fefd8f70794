//! meshproxy's pure core: every piece of protocol, routing, relay and proxy
//! logic as sans-IO state machines.
//!
//! No I/O, no clock, no threads, no OS randomness: time is an input, and all
//! randomness derives from the seed given to [`Node::new`]. A Tokio + libp2p
//! driver runs a [`Node`] in production; the simulator (`meshproxy-sim`) runs
//! the very same value through thousands of seeded fault scenarios.
//!
//! ```text
//!            ┌─────────────────────────── Node ───────────────────────────┐
//!  Input ──▶ │ client: listener handshakes → exit selection → sessions     │ ──▶ Output
//!  (now)     │ exit:   proxy requests → exit policy → origin dials         │   Transmit, Close, Dial,
//!            │ hub:    admission → directory (register/heartbeat/find)     │   OpenStream, Resolve,
//!            │ agent:  ingress streams → ticket → service → allow-list     │   ConnectOrigin, Splice,
//!            │ links:  this node's hub registrations and lookups           │
//!            └─────────────────────────────────────────────────────────────┘   Persist, Event
//! ```
//!
//! # The drain rule
//! After every [`Node::handle_input`] or [`Node::handle_timeout`], call
//! [`Node::poll_output`] until it returns `None`, then read
//! [`Node::poll_timeout`] again before feeding the next input. Outputs are
//! ordered: a `Transmit` before a `Splice` on the same stream must be written
//! first.
//!
//! # Control plane here, data plane outside
//! The core performs handshakes, decisions, deadlines and accounting, then
//! emits [`io::Output::Splice`]: the driver (or simulator) copies bytes both
//! ways with faithful half-close and reset propagation and reports
//! [`io::Input::SpliceEnded`].
//!
//! # Layout
//! - [`node`]: the [`Node`] that composes the roles; `ctx` shares timers, ids and peers.
//! - `client`, `exit`, `hub`, `hub_link`, [`agent`]: the roles' session machines; `relay`:
//!   relay reservations and hole punching; `ticket_gate`: the ticket check exits and agents share.
//! - [`listener`]: the node's listeners and what each serves.
//! - [`socks`], [`socks4`], [`http_connect`]: listener handshakes; [`http_head`]: the HTTP/1.1
//!   request head they and the coming ingress read. [`wire`]: peer protocols.
//! - [`ingress`]: the gateway's request normalisation, routing and agent choice;
//!   [`agent`]: the agent's allow-list and how its labels are listed.
//! - [`policy`]: exit policy. [`selection`]: backoff, breaker, latency, sticky pool.
//! - [`directory`]: the hub's table. [`admission`]: hub challenge–response,
//!   keys and roles. [`ticket`]: hub-signed tickets exits check.
//! - [`io`], [`config`], [`ids`], [`time`], [`target`], [`record`]: the vocabulary.
#![forbid(unsafe_code)]

pub mod admission;
pub mod agent;
mod client;
pub mod config;
mod ctx;
pub mod directory;
mod exit;
mod gateway;
pub mod http_connect;
pub mod http_forward;
pub mod http_head;
mod hub;
mod hub_link;
pub mod ids;
pub mod ingress;
pub mod io;
pub mod listener;
pub mod node;
mod peer_counts;
pub mod policy;
pub mod record;
mod relay;
mod role;
pub mod selection;
pub mod socks;
pub mod socks4;
pub mod status;
pub mod target;
pub mod ticket;
mod ticket_gate;
pub mod time;
pub mod wire;

pub use node::Node;
