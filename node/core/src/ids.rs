//! Identifiers the core uses for the things it talks about. The core never
//! names a libp2p or socket type; the driver maps its own handles to these.

use core::fmt;

/// The largest peer identity the core carries (a libp2p Ed25519 peer id is 38
/// bytes, a SHA-256 multihash 34).
pub const MAX_PEER_ID_LEN: usize = 48;

/// A peer's identity: the opaque bytes of its libp2p peer id.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerId {
    len: u8,
    bytes: [u8; MAX_PEER_ID_LEN],
}

impl PeerId {
    /// A peer id from its bytes; `None` if empty or longer than [`MAX_PEER_ID_LEN`].
    pub fn from_bytes(b: &[u8]) -> Option<PeerId> {
        if b.is_empty() || b.len() > MAX_PEER_ID_LEN {
            return None;
        }
        let mut bytes = [0u8; MAX_PEER_ID_LEN];
        bytes[..b.len()].copy_from_slice(b);
        Some(PeerId { len: b.len() as u8, bytes })
    }

    /// A short synthetic id, for the simulator and tests: 8 bytes of `n`.
    pub fn from_u64(n: u64) -> PeerId {
        let mut bytes = [0u8; MAX_PEER_ID_LEN];
        bytes[..8].copy_from_slice(&n.to_be_bytes());
        PeerId { len: 8, bytes }
    }

    /// The identity's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for PeerId {
    /// Lower-case hex of the last (most distinctive) 6 bytes, e.g. `peer:0000002a`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.as_bytes();
        let tail = &b[b.len().saturating_sub(4)..];
        f.write_str("peer:")?;
        for x in tail {
            write!(f, "{x:02x}")?;
        }
        Ok(())
    }
}

macro_rules! id_no_fmt {
    ($(#[$m:meta])* $name:ident, $prefix:literal) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub u64);
    };
}

macro_rules! id {
    ($(#[$m:meta])* $name:ident, $prefix:literal) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub u64);

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self, f)
            }
        }
    };
}

id_no_fmt!(
    /// A byte stream the node takes part in: an app's TCP connection on a
    /// listener, an origin TCP connection an exit dialed, or a stream on a peer
    /// connection. Ids of streams the *core* asks for (outbound streams, origin
    /// dials) are allocated by the core and have [`StreamId::OUTSIDE_BIT`]
    /// clear; ids of streams the *outside* reports (accepted app connections,
    /// inbound peer streams) are allocated by the driver and have it set, so
    /// the two never collide.
    StreamId, "s"
);
id!(
    /// One connection to a peer (a libp2p connection), allocated by the driver.
    ConnId, "c"
);
id!(
    /// One of the node's listeners ([`crate::listener::Listeners`]): today
    /// the client's listeners, numbered by their position in its config.
    ListenerId, "l"
);
id!(
    /// A DNS lookup the core asked for, allocated by the core.
    QueryId, "q"
);
id!(
    /// A public HTTP request at a gateway, named by the outside.
    RequestId, "r"
);
id!(
    /// A sticky session identifier as sent to exits in `ConnectRequest`.
    SessionId, "sess"
);

impl fmt::Debug for StreamId {
    /// `s7` for an id the core allocated, `x7` for one the outside allocated.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_outside() {
            write!(f, "x{}", self.0 & !Self::OUTSIDE_BIT)
        } else {
            write!(f, "s{}", self.0)
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl StreamId {
    /// Set on ids allocated by the outside world (driver or simulator).
    pub const OUTSIDE_BIT: u64 = 1 << 63;

    /// The `n`th stream id allocated by the outside world.
    pub const fn outside(n: u64) -> StreamId {
        StreamId(n | Self::OUTSIDE_BIT)
    }

    /// Whether the outside world allocated this id.
    pub const fn is_outside(self) -> bool {
        self.0 & Self::OUTSIDE_BIT != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_id_bounds() {
        assert!(PeerId::from_bytes(&[]).is_none());
        assert!(PeerId::from_bytes(&[1; MAX_PEER_ID_LEN + 1]).is_none());
        let p = PeerId::from_bytes(&[7; MAX_PEER_ID_LEN]).expect("max length fits");
        assert_eq!(p.as_bytes(), &[7; MAX_PEER_ID_LEN]);
        assert_ne!(PeerId::from_u64(1), PeerId::from_u64(2));
    }

    #[test]
    fn outside_ids_never_collide_with_core_ids() {
        assert!(StreamId::outside(5).is_outside());
        assert!(!StreamId(5).is_outside());
        assert_ne!(StreamId::outside(5), StreamId(5));
    }
}
