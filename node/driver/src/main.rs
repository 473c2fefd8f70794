//! `meshproxy`: the node's command line.
//!
//! What works today: `keygen`, `id`, `check --config` (validates a config file
//! and prints what the node would run). Running a node needs the peer network,
//! which is not wired into this binary yet; `run`, `hub`, `exit` and `client`
//! say so and exit with status 2 instead of pretending.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use meshproxy::config::FileConfig;
use meshproxy::identity::Identity;
use meshproxy_core::record::PeerAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// A peer-to-peer proxy network node (SOCKS5/HTTP CONNECT client, exit, hub).
#[derive(Debug, Parser)]
#[command(name = "meshproxy", version)]
struct Cli {
    /// Log filter (tracing `EnvFilter` syntax; `RUST_LOG` wins if set).
    #[arg(long, global = true, default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node as its config file says (any mix of hub, exit and client).
    Run {
        /// The TOML config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Validate a config file and print what the node would run.
    Check {
        /// The TOML config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Run a hub (shortcut for `run` with a `[hub]` config).
    Hub {
        /// The TOML config file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run an exit (shortcut for `run` with an `[exit]` config).
    Exit {
        /// The TOML config file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run a client (shortcut for `run` with a `[client]` config).
    Client {
        /// The TOML config file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Create a new identity key file (never overwrites) and print its peer id.
    Keygen {
        /// Where to write the key.
        #[arg(long, default_value = "meshproxy.key")]
        out: PathBuf,
    },
    /// Print the peer id of an identity key file.
    Id {
        /// The key file.
        #[arg(long, default_value = "meshproxy.key")]
        identity: PathBuf,
    },
}

/// Multiaddrs are the network layer's format; until it is wired in, `check`
/// only verifies their outline (a `/`-separated path). The bytes are a
/// placeholder, not `Multiaddr::to_vec()`.
fn outline_addr(s: &str) -> Result<PeerAddr, String> {
    if s.starts_with('/') && s.len() > 1 {
        Ok(PeerAddr(s.as_bytes().to_vec()))
    } else {
        Err("a multiaddr starts with `/` (e.g. /ip4/1.2.3.4/tcp/4001)".into())
    }
}

fn not_wired(what: &str) -> ExitCode {
    eprintln!(
        "meshproxy {what}: not wired to the network yet. This build has no peer network \
         (libp2p), so it cannot run a node; use `meshproxy check --config FILE` to validate a config."
    );
    ExitCode::from(2)
}

fn check(path: &Path) -> Result<(), String> {
    let file = FileConfig::load(path).map_err(|e| e.to_string())?;
    let identity_path = file.identity_path();
    let peer = match Identity::load(&identity_path) {
        Ok(id) => {
            println!("identity: {} ({})", identity_path.display(), id.peer_id_string());
            id.peer_id()
        }
        Err(e) => {
            println!(
                "identity: {} (not loaded: {e}; created on first run)",
                identity_path.display()
            );
            Identity::from_secret([0; 32]).peer_id()
        }
    };
    let node = file.to_node_config(peer, &outline_addr).map_err(|e| e.to_string())?;
    let roles: Vec<&str> = [
        node.hub.as_ref().map(|_| "hub"),
        node.exit.as_ref().map(|_| "exit"),
        node.client.as_ref().map(|_| "client"),
    ]
    .into_iter()
    .flatten()
    .collect();
    println!("roles: {}", roles.join(", "));
    println!("hubs: {}", node.hubs.len());
    for s in file.listener_sockets() {
        let auth = if s.has_auth { "auth" } else { "no auth" };
        println!("listener: {} ({auth})", s.bind);
        if meshproxy::listener::exposed_without_auth(s.bind, s.has_auth) {
            println!("  warning: reachable from other hosts without authentication");
        }
    }
    if let Some(state) = &file.state {
        println!("state: {}", state.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&cli.log))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    match cli.command {
        Command::Keygen { out } => {
            let id = Identity::generate();
            match id.create(&out) {
                Ok(()) => {
                    println!("{}", id.peer_id_string());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("meshproxy keygen: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Id { identity } => match Identity::load(&identity) {
            Ok(id) => {
                println!("{}", id.peer_id_string());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("meshproxy id: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Check { config } => match check(&config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("meshproxy check: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config } => {
            if let Err(e) = check(&config) {
                eprintln!("meshproxy run: {e}");
                return ExitCode::FAILURE;
            }
            not_wired("run")
        }
        Command::Hub { .. } => not_wired("hub"),
        Command::Exit { .. } => not_wired("exit"),
        Command::Client { .. } => not_wired("client"),
    }
}
