//! The node's listeners: local sockets the outside accepts app connections
//! on, each serving one purpose, handled by the role that serves it.
//!
//! The table belongs to the node, not to a role: today every listener is a
//! client's proxy listener, tomorrow a gateway's public HTTP ingress adds a
//! [`Serves`] variant and its listeners to the table. [`Input::AppAccepted`]
//! is routed by what its listener serves.
//!
//! [`Input::AppAccepted`]: crate::io::Input::AppAccepted

use crate::config::NodeConfig;
use crate::ids::ListenerId;

/// What a listener's connections are for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serves {
    /// SOCKS5 / HTTP CONNECT proxy requests from local apps, handled by the
    /// client role (with the settings of the client listener it stands for).
    Proxy,
}

/// The node's listeners, in [`ListenerId`] order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listeners(Vec<Serves>);

impl Listeners {
    /// The listeners `config` describes: the client's listeners first, in
    /// config order (so `ListenerId(i)` is still the client's `i`th listener
    /// and the config format does not change).
    pub fn from_config(config: &NodeConfig) -> Listeners {
        let proxy = config.client.as_ref().map_or(0, |c| c.listeners.len());
        Listeners(vec![Serves::Proxy; proxy])
    }

    /// What `listener` serves, if the node has it.
    pub fn serves(&self, listener: ListenerId) -> Option<Serves> {
        usize::try_from(listener.0).ok().and_then(|i| self.0.get(i)).copied()
    }

    /// How many listeners the node has.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the node has no listener.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_are_numbered_in_client_config_order_and_unknown_ids_serve_nothing() {
        let listeners = Listeners(vec![Serves::Proxy; 2]);
        assert_eq!(listeners.serves(ListenerId(0)), Some(Serves::Proxy));
        assert_eq!(listeners.serves(ListenerId(1)), Some(Serves::Proxy));
        assert_eq!(listeners.serves(ListenerId(2)), None);
        assert_eq!(listeners.serves(ListenerId(u64::MAX)), None);
        assert_eq!(Listeners::default().len(), 0);
    }
}
