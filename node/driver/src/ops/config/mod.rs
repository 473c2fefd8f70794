//! The TOML configuration file (`meshproxy run --config FILE`).
//!
//! Every table and field is listed in [`FileConfig`]; unknown keys are errors
//! that name the key (`deny_unknown_fields`), so a typo never silently falls
//! back to a default. Durations are integer milliseconds (`*_ms`). The file is
//! read once into [`Settings`], which the node runs with.
//!
//! ```toml
//! identity = "meshproxy.key"        # Ed25519 key file, created 0600 if missing
//! state = "meshproxy.state"         # optional: sticky pins across restarts
//! listen = ["/ip4/0.0.0.0/tcp/4001"] # peer-to-peer listen multiaddrs
//! metrics = "127.0.0.1:9091"        # optional: Prometheus `GET /metrics` endpoint
//! control = "meshproxy.sock"        # control socket for `meshproxy status` (false: none;
//!                                   # default: the state file's, else identity file's, name .sock)
//! reachability = "auto"             # auto (autonat decides) | public | private (behind NAT)
//! autonat_private_ips = false       # let autonat probe private/loopback addresses (LANs, tests)
//! threads = 2                       # optional: runtime worker threads (default: one per CPU)
//!
//! [[hubs]]                          # hubs to register with / find exits through
//! peer = "12D3KooW…"
//! addrs = ["/ip4/203.0.113.7/tcp/4001"]
//!
//! [hub]                             # serve as a hub
//! ttl_ms = 30000
//! ticket_lifetime_ms = 1200000      # tickets exits accept (default 20 min)
//! keys = [{ id = "alice", verifier = "…64 hex digits…" },          # clients (see crate::ops::keys)
//!         { id = "exit-1", verifier = "…", roles = ["exit"] }]
//! relay = true                      # circuit relay v2 for admitted peers only (default true)
//! relay_max_reservations = 1024     # all peers together (default 1024)
//! relay_max_reservations_per_peer = 4
//! relay_reservation_ms = 3600000    # renewed by the client (default 1 h)
//! relay_max_circuits = 1024         # all peers together (default 1024)
//! relay_max_circuits_per_peer = 64  # as the circuit's source (default 64)
//! relay_max_circuit_ms = 3600000    # one circuit's lifetime (default 1 h, at most 7 days)
//! relay_max_circuit_bytes = 1073741824 # per direction (default 1 GiB, at least 1)
//!
//! [exit]                            # serve as an exit
//! credential = { id = "exit-1", token = "…" }
//! open = false                      # true: serve peers without a hub's ticket (a public exit)
//! allow = ["127.0.0.1:8080"]
//! country = "DE"
//! relay = "auto"                    # reserve at the hubs' relays: auto (when not reachable) | always | off
//!
//! [client]                          # serve local apps
//! credential = { id = "alice", token = "…" }
//! [[client.listeners]]
//! bind = "127.0.0.1:1080"
//! protocol = "both"                 # socks5 (SOCKS5 + SOCKS4/4a) | http | both
//! relayed = true                    # may sessions run through a hub's relay (default true)
//! ```

//!
//! # Layout
//!
//! - `file.rs`: the file's schema ([`FileConfig`] and its tables), as serde reads it.
//! - `net.rs`: the peer network's knobs ([`NetLimits`], [`RelayLimits`]), read from the file
//!   as they are; the core's ([`Timeouts`](meshproxy_core::config::Timeouts),
//!   [`Limits`](meshproxy_core::config::Limits)) are read the same way (its `serde` feature).
//! - `settings.rs`: [`Settings`], built from the file once ([`Settings::from_file`]).
//! - `roles.rs`: the role tables translated into the core's role configs.

mod file;
mod net;
mod roles;
mod settings;
#[cfg(test)]
mod tests;

pub use file::{
    AgentFile, ClientFile, ControlKey, CredentialFile, ExitFile, FileConfig, HubEntry, HubFile,
    KeyFile, LimitsTable, ListenerFile, ListenerSocket, UserFile,
};
pub use net::{NetLimits, RelayLimits, RELAY_MAX_DURATION};
pub use settings::{Settings, MAX_THREADS};
use std::path::PathBuf;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TOML is malformed, has an unknown key, or a value of the wrong type.
    #[error("config file {path}: {source}")]
    Toml {
        /// The file.
        path: PathBuf,
        /// What toml says (it names the key and line).
        source: toml::de::Error,
    },
    /// A value parsed but makes no sense (the message names the field).
    #[error("config: {0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}
