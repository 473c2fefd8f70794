//! Operations: what an operator touches — files on disk, the command line,
//! metrics — and the assembly of a running node from them.
//!
//! - [`cli`]: the `meshproxy` command line (subcommands and their flags).
//! - [`config`]: the config file, parsed once into typed settings; [`flags`]: the role
//!   commands' flags, each naming its config key.
//! - [`identity`], [`keys`], [`state`]: the node's key, admission keys and tokens, and the
//!   state snapshot file.
//! - [`metrics`]: Prometheus metrics from the node's events, and the `/metrics` endpoint.
//! - [`control`]: the local control socket (`meshproxy status`): a status snapshot and the
//!   event stream.
//! - [`tui`]: `meshproxy tui`, a live view of a node through its control socket.
//! - [`assemble`]: a running node from settings and a peer network; [`launch`]: the same
//!   over libp2p.
//! - [`demo`]: a whole mesh in one process (`meshproxy demo`).

pub mod assemble;
pub mod cli;
pub mod config;
pub mod control;
pub mod demo;
pub mod flags;
pub mod identity;
pub mod keys;
pub mod launch;
pub mod metrics;
pub mod reload;
pub mod state;
#[cfg(unix)]
pub mod tui;
