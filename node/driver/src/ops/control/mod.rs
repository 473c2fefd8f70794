//! The control endpoint: a local Unix socket through which an operator (or
//! a script) asks a running node what it is doing — `meshproxy status`.
//!
//! - [`protocol`]: the versioned JSON-lines protocol (`docs/control.md`).
//! - [`server`]: the socket and its bounds (clients, line size, deadlines).
//! - [`snapshot`]: the `status` answer, built from the core's
//!   [`NodeStatus`](meshproxy_core::status::NodeStatus) when asked.
//! - [`events`]: the event stream and the ring of recent warnings the
//!   runner feeds.
//! - [`client`] and [`render`]: the `meshproxy status` side.
//!
//! Only the `meshproxy` binary opens the socket (`main.rs`); nodes started
//! as a library (tests, the demo) run without one unless they bind a
//! [`ControlServer`] themselves.

#[cfg(unix)]
pub mod client;
pub mod events;
pub mod protocol;
pub mod render;
#[cfg(unix)]
pub mod server;
pub mod snapshot;

pub use events::EventFeed;
#[cfg(unix)]
pub use server::{ControlError, ControlLimits, ControlServer};
pub use snapshot::{NodeInfo, StatusSnapshot};

use std::path::{Path, PathBuf};

/// The longest path a Unix socket can be bound at (`sun_path` holds 108
/// bytes with the terminating NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// Where the control socket goes when the config does not say: beside the
/// state file if there is one, else beside the identity file, named like it
/// with the extension `.sock` (`client.state` → `client.sock`).
pub fn default_path(state: Option<&Path>, identity: &Path) -> PathBuf {
    let base = state.unwrap_or(identity);
    let path = base.with_extension("sock");
    if path == base {
        // A state file already named `.sock` must never be replaced by the socket.
        let mut name = base.as_os_str().to_owned();
        name.push(".control");
        return PathBuf::from(name);
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_path_sits_beside_the_state_or_identity_file() {
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(
            default_path(Some(&p("/var/lib/m/client.state")), &p("k.key")),
            p("/var/lib/m/client.sock")
        );
        assert_eq!(default_path(None, &p("hub.key")), p("hub.sock"));
        assert_eq!(default_path(None, &p("meshproxy")), p("meshproxy.sock"));
        assert_eq!(default_path(Some(&p("odd.sock")), &p("k.key")), p("odd.sock.control"));
    }
}
