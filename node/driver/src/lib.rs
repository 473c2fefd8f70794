//! meshproxy's driver: runs the pure core over Tokio, TCP and libp2p.
#![forbid(unsafe_code)]
// The driver is the shell that owns the real clock, and it never iterates a map in a way
// that affects behaviour, so the workspace-wide bans on `Instant::now` and `HashMap` do not apply.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

pub mod network;
pub mod port;
