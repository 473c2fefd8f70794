//! What a hub knows about a registered peer (an exit or an agent): its role, addresses, attributes and capacity, and the filters
//! clients select peers by. The [`Role`]s a node authenticates in live here
//! too, because a record carries one. Shared by the hub wire codec, the
//! hub directory and client-side selection.

use crate::ids::PeerId;
use core::fmt;

/// Most labels one exit may carry.
pub const MAX_LABELS: usize = 16;
/// Longest label, in bytes.
pub const MAX_LABEL_LEN: usize = 32;
/// Most addresses one exit may advertise.
pub const MAX_ADDRS: usize = 8;
/// Longest advertised address (binary multiaddr), in bytes.
pub const MAX_ADDR_LEN: usize = 128;
/// Most relays one record names.
pub const MAX_RELAYS: usize = 4;

/// Which kind of node authenticates to a hub; decides what it may do next,
/// and, for the roles that [`Role::is_listed`], the kind of record it has in
/// a hub's directory (exits, and agents for the ingress gateways).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Role {
    /// Offers egress and registers in the directory.
    Exit,
    /// Looks exits up.
    Client,
    /// Sits beside a private service, registers in the directory with its
    /// labels and services, and carries gateways' `/meshproxy/ingress/1`
    /// streams to its origins.
    Agent,
    /// Routes public HTTP requests to agents it finds through the hubs.
    Gateway,
}

impl Role {
    /// Every role, in wire order.
    pub const ALL: [Role; 4] = [Role::Exit, Role::Client, Role::Agent, Role::Gateway];

    /// The role's name in config files and logs.
    pub fn name(self) -> &'static str {
        match self {
            Role::Exit => "exit",
            Role::Client => "client",
            Role::Agent => "agent",
            Role::Gateway => "gateway",
        }
    }

    /// The role a config name stands for.
    pub fn from_name(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == name)
    }

    /// The wire byte.
    pub fn code(self) -> u8 {
        match self {
            Role::Exit => 0x01,
            Role::Client => 0x02,
            Role::Agent => 0x03,
            Role::Gateway => 0x04,
        }
    }

    /// Whether peers in this role register in a hub's directory and are
    /// found there (`Register`, `Find`, records).
    pub fn is_listed(self) -> bool {
        match self {
            Role::Exit | Role::Agent => true,
            Role::Client | Role::Gateway => false,
        }
    }

    /// The role for a wire byte, `None` if no role has it.
    pub fn from_code(code: u8) -> Option<Role> {
        match code {
            0x01 => Some(Role::Exit),
            0x02 => Some(Role::Client),
            0x03 => Some(Role::Agent),
            0x04 => Some(Role::Gateway),
            _ => None,
        }
    }
}

/// An ISO 3166-1 alpha-2 country code, stored upper-case.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CountryCode([u8; 2]);

impl CountryCode {
    /// Parses two ASCII letters, either case; `None` otherwise.
    pub fn parse(s: &str) -> Option<CountryCode> {
        match s.as_bytes() {
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                Some(CountryCode([a.to_ascii_uppercase(), b.to_ascii_uppercase()]))
            }
            _ => None,
        }
    }

    /// The two upper-case letters.
    pub fn as_bytes(&self) -> [u8; 2] {
        self.0
    }

    /// The code from its two wire bytes; `None` unless both are letters.
    pub fn from_bytes(b: [u8; 2]) -> Option<CountryCode> {
        CountryCode::parse(core::str::from_utf8(&b).ok()?)
    }
}

impl fmt::Debug for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", char::from(self.0[0]), char::from(self.0[1]))
    }
}

/// Whether a label is acceptable: 1..=32 bytes of `[a-z0-9_.:]` (no `-`, which
/// separates parameters in a SOCKS5 username).
pub fn valid_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_LABEL_LEN
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b':')
        })
}

/// An exit's self-declared attributes.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Attrs {
    /// Where the exit's egress is.
    pub country: Option<CountryCode>,
    /// Free-form labels (`residential`, `dc`, `isp:foo`), at most [`MAX_LABELS`], sorted, unique.
    pub labels: Vec<String>,
}

/// A client's requirements on an exit: every given field must match.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct PeerFilter {
    /// The exit's country must be this one.
    pub country: Option<CountryCode>,
    /// The exit must carry every one of these labels.
    pub labels: Vec<String>,
}

impl PeerFilter {
    /// Whether an exit with `attrs` satisfies the filter.
    pub fn matches(&self, attrs: &Attrs) -> bool {
        self.country.is_none_or(|c| attrs.country == Some(c))
            && self.labels.iter().all(|l| attrs.labels.contains(l))
    }
}

/// One address an exit can be dialed on: opaque bytes (a binary multiaddr in
/// production, a node index in the simulator), at most [`MAX_ADDR_LEN`].
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct PeerAddr(pub Vec<u8>);

/// What the hub's directory holds about one registered peer, and what
/// `Find` returns.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct PeerRecord {
    /// The peer.
    pub peer: PeerId,
    /// What it is listed as; a role that [`Role::is_listed`].
    pub role: Role,
    /// Where it can be dialed, at most [`MAX_ADDRS`].
    pub addrs: Vec<PeerAddr>,
    /// Its attributes.
    pub attrs: Attrs,
    /// How many concurrent sessions it is willing to carry.
    pub capacity: u32,
    /// Hubs through whose relay it can be dialed (it holds a reservation
    /// there). On the wire a hub only says "through me"; the client fills in
    /// which hub answered.
    pub relays: Vec<PeerId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn country_codes() {
        assert_eq!(CountryCode::parse("de"), CountryCode::parse("DE"));
        assert!(CountryCode::parse("d").is_none());
        assert!(CountryCode::parse("d1").is_none());
        assert!(CountryCode::parse("deu").is_none());
        assert_eq!(CountryCode::parse("de").map(|c| c.to_string()).as_deref(), Some("DE"));
    }

    #[test]
    fn filters_match_all_fields() {
        let de = CountryCode::parse("de");
        let attrs = Attrs { country: de, labels: vec!["dc".into(), "fast".into()] };
        assert!(PeerFilter::default().matches(&attrs));
        assert!(PeerFilter { country: de, labels: vec!["dc".into()] }.matches(&attrs));
        assert!(!PeerFilter { country: CountryCode::parse("us"), labels: vec![] }.matches(&attrs));
        assert!(!PeerFilter { country: None, labels: vec!["residential".into()] }.matches(&attrs));
    }

    #[test]
    fn roles_round_trip_by_code_and_name_and_only_exits_and_agents_are_listed() {
        for r in Role::ALL {
            assert_eq!(Role::from_code(r.code()), Some(r));
            assert_eq!(Role::from_name(r.name()), Some(r));
        }
        let codes: Vec<u8> = Role::ALL.iter().map(|r| r.code()).collect();
        assert_eq!(codes, [1, 2, 3, 4], "ALL is in wire order");
        let listed: Vec<Role> = Role::ALL.into_iter().filter(|r| r.is_listed()).collect();
        assert_eq!(listed, [Role::Exit, Role::Agent]);
        assert_eq!(Role::from_code(0), None);
        assert_eq!(Role::from_code(5), None);
    }

    #[test]
    fn labels() {
        assert!(valid_label("isp:foo_1.a"));
        assert!(!valid_label(""));
        assert!(!valid_label("has-dash"));
        assert!(!valid_label("Upper"));
        assert!(!valid_label(&"a".repeat(MAX_LABEL_LEN + 1)));
    }
}
