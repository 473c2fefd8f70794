//! `meshproxy run` with a counting allocator, for `cargo xtask bench`.
//!
//! The benchmark's memory figure needs the heap bytes a node holds per idle
//! proxied connection, which RSS alone blurs (allocator caches, page
//! granularity). This runs the same node as `meshproxy run --config FILE`
//! and answers every line read on stdin with `heap: <live bytes>` on stdout,
//! so the harness can sample the heap before and after opening connections.
//! Its allocator is the system one (counted), not the binary's mimalloc: the
//! harness takes RSS and fds from the real binary and only the heap from here.
#![forbid(unsafe_code)]

use meshproxy::ops::config::{FileConfig, Settings};
use meshproxy::ops::identity::Identity;
use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;
use std::io::{BufRead as _, Write as _};
use std::process::ExitCode;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Bytes allocated and not yet freed, over the whole process.
fn live_heap() -> usize {
    let s = GLOBAL.stats();
    s.bytes_allocated.saturating_sub(s.bytes_deallocated)
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    // The harness reads these lines; a closed stdout just means nobody asks.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let path = match (args.next().as_deref(), args.next()) {
        (Some("--config"), Some(p)) => std::path::PathBuf::from(p),
        _ => {
            eprintln!("usage: heap_probe --config FILE");
            return ExitCode::FAILURE;
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_writer(std::io::stderr)
        .init();
    let run = || -> Result<(), String> {
        let file = FileConfig::load(&path).map_err(|e| e.to_string())?;
        let identity =
            Identity::load_or_create(&file.identity_path()).map_err(|e| e.to_string())?;
        let settings = Settings::from_file(&file, &identity, &meshproxy::ops::launch::parse_addr)
            .map_err(|e| e.to_string())?;
        let runtime = meshproxy::ops::assemble::runtime(settings.threads)
            .map_err(|e| format!("tokio runtime: {e}"))?;
        runtime.block_on(async {
            let seed = rand::random::<u64>();
            let running = meshproxy::ops::launch::start_with_settings(settings, &identity, seed)
                .await
                .map_err(|e| e.to_string())?;
            for addr in &running.p2p_addrs {
                say(&format!("p2p: {addr}/p2p/{}", identity.peer_id_string()));
            }
            for addr in &running.node.listen_addrs {
                say(&format!("listener: {addr}"));
            }
            say("ready");
            // The heap can be read from any thread: answer on a plain one,
            // and stop the node when the harness closes stdin.
            let (gone_tx, gone_rx) = tokio::sync::oneshot::channel::<()>();
            std::thread::spawn(move || {
                for line in std::io::stdin().lock().lines() {
                    if line.is_err() {
                        break;
                    }
                    say(&format!("heap: {}", live_heap()));
                }
                let _ = gone_tx.send(());
            });
            tokio::select! {
                _ = gone_rx => {}
                () = meshproxy::ops::assemble::stop_signal() => {}
            }
            running.node.shutdown().await;
            Ok(())
        })
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("heap_probe: {e}");
            ExitCode::FAILURE
        }
    }
}
