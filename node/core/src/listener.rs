//! The node's listeners: local sockets the outside accepts app connections
//! on, each serving one purpose, handled by the role that serves it.
//!
//! The table belongs to the node, not to a role: a client's proxy listeners
//! first, then a gateway's public HTTP listeners. [`Input::AppAccepted`] is
//! routed by what its listener serves; an ingress listener's connections are
//! HTTP the driver speaks itself, so the core meets them as
//! [`Input::IngressRequest`]s naming the listener.
//!
//! [`Input::AppAccepted`]: crate::io::Input::AppAccepted
//! [`Input::IngressRequest`]: crate::io::Input::IngressRequest

use crate::config::NodeConfig;
use crate::ids::ListenerId;

/// What a listener's connections are for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serves {
    /// SOCKS5 / HTTP CONNECT proxy requests from local apps, handled by the
    /// client role (with the settings of the client listener it stands for).
    Proxy,
    /// Public HTTP requests for the gateway role: the `i`th name of the
    /// gateway's listeners (its route table).
    Ingress(usize),
}

/// The node's listeners, in [`ListenerId`] order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listeners(Vec<Serves>);

impl Listeners {
    /// The listeners `config` describes: the client's listeners first, in
    /// config order (so `ListenerId(i)` is still the client's `i`th
    /// listener), then the gateway's, in its config order.
    pub fn from_config(config: &NodeConfig) -> Listeners {
        let proxy = config.client.as_ref().map_or(0, |c| c.listeners.len());
        let ingress = config.gateway.as_ref().map_or(0, |g| g.listeners.len());
        Listeners(
            (0..proxy).map(|_| Serves::Proxy).chain((0..ingress).map(Serves::Ingress)).collect(),
        )
    }

    /// The id of the gateway's `i`th listener.
    pub fn ingress(&self, i: usize) -> Option<ListenerId> {
        let at = self.0.iter().position(|s| *s == Serves::Ingress(i))?;
        Some(ListenerId(at as u64))
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
