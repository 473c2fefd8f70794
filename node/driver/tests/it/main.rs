//! The driver's integration tests, as one test binary: every module here used
//! to be a file of its own under `tests/`, and each of those linked libp2p, the
//! driver and Tokio again. One binary links them once.
//!
//! Tests in different modules now share a process and run side by side
//! (libtest's threads), so none may rely on process-wide state it does not
//! own: the child processes a module starts are this binary again with
//! `--exact module::test` (see `nat`), and a tracing subscriber is installed
//! with `try_init` (the first one wins). `tests/attacker_heap.rs` stays a
//! binary of its own: it measures the heap with a counting global allocator,
//! which would count every other test running beside it.

mod common;

mod agent;
mod app;
mod cli;
#[cfg(target_os = "linux")]
mod control;
mod e2e;
mod gateway;
mod gateway_forward;
mod http_forward;
mod ingress_e2e;
mod listener;
mod mesh;
mod metrics;
mod nat;
mod network;
mod one_round_trip;
mod policy;
mod publish;
mod pump;
mod relay;
mod relay_client;
mod relayed_mesh;
#[cfg(target_os = "linux")]
mod reload;
mod runner;
mod socks4;
mod splice;
#[cfg(target_os = "linux")]
mod tui;
mod turmoil;
