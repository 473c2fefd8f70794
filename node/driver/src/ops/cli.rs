//! The `meshproxy` command line: every subcommand and flag the binary takes.
//!
//! It lives in the library, not in `main.rs`, so that what documents the
//! command line is built from the binary's own definition: the man pages and
//! shell completions of the Debian package (`examples/dist_assets.rs`, run by
//! `cargo xtask deb`) cannot drift from `--help`.

use crate::ops::flags::{AgentFlags, ClientFlags, CommonFlags, ExitFlags, GatewayFlags, HubFlags};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// A peer-to-peer proxy network node (SOCKS5/HTTP CONNECT client, exit, hub, agent).
// The doc comments are the `--help` text: brackets there are literal.
#[allow(rustdoc::broken_intra_doc_links)]
#[derive(Debug, Parser)]
#[command(name = "meshproxy", version)]
pub struct Cli {
    /// Log filter (tracing `EnvFilter` syntax; `RUST_LOG` wins if set) [default: info; warn for demo].
    #[arg(long, global = true)]
    pub log: Option<String>,
    // What to do.
    #[command(subcommand)]
    pub command: Command,
}

// The subcommands.
// The doc comments are the `--help` text: brackets there are literal.
#[allow(rustdoc::broken_intra_doc_links)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node as its config file says (any mix of hub, exit or agent, and client).
    Run {
        /// The TOML config file.
        #[arg(long)]
        config: PathBuf,
        /// Serve Prometheus metrics at http://ADDR:PORT/metrics [key: metrics].
        #[arg(long, value_name = "ADDR:PORT")]
        metrics: Option<std::net::SocketAddr>,
        /// Control socket for `meshproxy status`, or `off` [key: control].
        #[arg(long, value_name = "PATH|off")]
        control: Option<String>,
    },
    /// Show what a running node is doing: hubs, exits (path, latency, breaker),
    /// sessions per listener, sticky pins, recent warnings.
    ///
    /// Asks the node's control socket: --control PATH, or the one its config names.
    Status {
        /// The node's control socket.
        #[arg(long, value_name = "PATH", conflicts_with = "config")]
        control: Option<PathBuf>,
        /// The node's config file (its `control` key, or the default beside its state
        /// or identity file).
        #[arg(short = 'c', long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print the raw snapshot as JSON (the control protocol's `status` reply).
        #[arg(long)]
        json: bool,
    },
    /// Make a running node re-read its config file (as SIGHUP does) and print the keys
    /// it changed; exits non-zero, saying why, if the node refused the new config.
    ///
    /// Live: limits, timeouts, exit policy and listing, agent services, labels and allow-list,
    /// hub keys, gateway routes. Other keys take a restart (a reload changing one is refused
    /// whole). The node also reloads by itself when its config file changes.
    Reload {
        /// The node's control socket.
        #[arg(long, value_name = "PATH", conflicts_with = "config")]
        control: Option<PathBuf>,
        /// The node's config file (its `control` key, or the default beside its state
        /// or identity file).
        #[arg(short = 'c', long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// (Hubs) revoke a key id or a peer id: its admissions and registrations end, and it is
    /// refused until the hub's keys change (by a reload) or the hub restarts. To make it
    /// permanent, remove the key from the config too.
    Revoke {
        /// A key id of `hub.keys`, or a peer id (12D3KooW…).
        target: String,
        /// The hub's control socket.
        #[arg(long, value_name = "PATH", conflicts_with = "config")]
        control: Option<PathBuf>,
        /// The hub's config file.
        #[arg(short = 'c', long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// A live view of a running node: sessions and throughput over time, exits,
    /// hubs, events. Keys: tab or 1-4 switch panes, / filters, arrows scroll, q quits.
    ///
    /// Asks the node's control socket: --control PATH, or the one its config names.
    Tui {
        /// The node's control socket.
        #[arg(long, value_name = "PATH", conflicts_with = "config")]
        control: Option<PathBuf>,
        /// The node's config file (its `control` key, or the default beside its state
        /// or identity file).
        #[arg(short = 'c', long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Read a node's state file.
    State {
        #[command(subcommand)]
        command: StateCommand,
    },
    /// Validate a config file and print what the node would run.
    Check {
        /// The TOML config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Run a hub: the directory of exits, admission by token.
    ///
    /// Example: meshproxy hub --key exit-1=TOKEN --key alice=TOKEN2
    Hub {
        #[command(flatten)]
        common: CommonFlags,
        #[command(flatten)]
        hub: HubFlags,
    },
    /// Run an exit: registers at the hubs, dials what its policy allows.
    ///
    /// Example: meshproxy exit --hub /ip4/HUB_IP/tcp/4001/p2p/HUB_ID --credential exit-1=TOKEN
    Exit {
        #[command(flatten)]
        common: CommonFlags,
        #[command(flatten)]
        exit: ExitFlags,
    },
    /// Run a client: SOCKS5/4/4a and HTTP proxy (CONNECT, plain http://) listeners for local apps.
    ///
    /// Example: meshproxy client --hub /ip4/HUB_IP/tcp/4001/p2p/HUB_ID --credential alice=TOKEN2
    /// --listener 127.0.0.1:1080
    Client {
        #[command(flatten)]
        common: CommonFlags,
        #[command(flatten)]
        client: ClientFlags,
    },
    /// Run a gateway: public HTTP listeners whose requests are routed by host and path to
    /// agents found through the hubs (or answered here: static, redirect).
    ///
    /// Example: meshproxy gateway --hub /ip4/HUB_IP/tcp/4001/p2p/HUB_ID --credential gw=TOKEN3
    /// --listen-http 0.0.0.0:8080 --route 'host=app.example.com path=/ service=web select=site=home'
    Gateway {
        #[command(flatten)]
        common: CommonFlags,
        #[command(flatten)]
        gateway: GatewayFlags,
    },
    /// Run an agent beside private services: registers at the hubs with its labels and
    /// services, and carries gateways' ingress streams to those services only.
    ///
    /// Example: meshproxy agent --hub /ip4/HUB_IP/tcp/4001/p2p/HUB_ID --credential agent-1=TOKEN
    /// --service web=127.0.0.1:8080 --label site=home [--allow 10.0.0.0/8:80-443]
    ///
    /// A service whose origin is an IP literal reaches exactly that address; one whose origin
    /// is a host name is resolved at each stream and every answer must fall inside an --allow
    /// rule (deny by default). Cloud metadata, unspecified, broadcast and multicast addresses
    /// are refused unless a service names that literal address. A node is an exit or an agent,
    /// not both.
    Agent {
        #[command(flatten)]
        common: CommonFlags,
        #[command(flatten)]
        agent: AgentFlags,
    },
    /// Run a hub, two exits, a client, a local web page, an agent beside a local site and a
    /// gateway in this process, fetch both through the mesh, and print curl commands to try it.
    Demo,
    /// Admission tokens: `token new` prints a fresh one and what the hub stores.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
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

// `meshproxy state …`.
#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Print the sticky pins a state file holds.
    Show {
        /// The state file (the config's `state` key).
        file: PathBuf,
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
    },
}

// `meshproxy token …`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a fresh 256-bit token for a node and the verifier its hub stores
    /// (the verifier checks the node's proof and cannot itself log in).
    New {
        /// The key id the node presents.
        #[arg(long, default_value = "node-1")]
        id: String,
        /// The roles the hub admits the key in: client, exit, agent, gateway, or several
        /// joined by `+` (exit+client).
        #[arg(long, default_value = "client")]
        roles: String,
    },
}
