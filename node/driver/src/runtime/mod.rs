//! The runtime and data plane: the loop that owns the core's `Node` and the
//! tasks that move bytes.
//!
//! - [`runner`]: owns the `Node`, feeds it inputs and time, carries out its outputs;
//!   `event_log`: how it logs the core's events.
//! - [`pump`]: per-stream tasks for streams the core still reads.
//! - [`splice`]: the data plane (both-way copy with half-close and resets).
//! - [`tcp`]: TCP streams that reset, rather than close, when aborted.
//! - [`gateway`]: the gateway's public HTTP listeners, requests and forwards.
//! - [`listener`]: accept loops for the node's listeners; [`sockets`]: the port to
//!   listeners, origin connects and name lookups (the OS, or a simulated network in tests).

mod event_log;
pub mod gateway;
pub mod listener;
pub mod pump;
pub mod runner;
pub mod sockets;
pub mod splice;
pub mod tcp;
