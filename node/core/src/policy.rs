//! The exit policy: which destinations an exit is willing to dial.
//!
//! An exit relays strangers' traffic, so by default it must not let them reach
//! its own network: loopback, private ranges, link-local (cloud metadata
//! services live at 169.254.169.254), multicast and the exit itself
//! (DESIGN.md §6). The policy is checked on the IP address that is actually
//! dialed, after DNS, because a name can resolve to anything.
//!
//! # Order of checks
//!
//! [`ExitPolicy::check`] decides in this order, first match wins:
//!
//! 1. an explicit **deny** rule matches → denied;
//! 2. an explicit **allow** rule matches (address and, if given, port) →
//!    allowed; this is how an operator opens e.g. exactly `127.0.0.1:8080` for
//!    a demo despite the default deny;
//! 3. the address is one of the **exit's own** addresses → denied;
//! 4. the address is in a **default-denied range** ([`default_denied_ranges`],
//!    unless the operator turned them off) → denied;
//! 5. a non-empty **allowed ports** list does not contain the port → denied;
//! 6. otherwise allowed.
//!
//! # IPv6 addresses that carry an IPv4 address
//!
//! `::ffff:127.0.0.1` reaches 127.0.0.1 on a dual-stack socket, and
//! `64:ff9b::a00:1` reaches 10.0.0.1 through a NAT64 gateway, so an address
//! that embeds an IPv4 address is judged in every form it can take: the IPv6
//! address itself and each IPv4 address it may carry. Steps 1 and 3–4 deny if
//! *any* form is denied; an allow rule (step 2) lifts checks 3–4 only for the
//! form it names, so allowing `64:ff9b::/96` does not open NAT64 paths to
//! private IPv4 ranges, while allowing `127.0.0.1/32:8080` also admits
//! `[::ffff:127.0.0.1]:8080`. Check 5 (ports) is lifted only when every IPv4
//! address the destination may carry is explicitly allowed (for a plain
//! address: the address itself). The embeddings recognised are:
//!
//! - IPv4-mapped `::ffff:a.b.c.d` and IPv4-translated (SIIT) `::ffff:0:a.b.c.d`;
//! - IPv4-compatible `::a.b.c.d` (except `::` and `::1`, which are IPv6's own
//!   unspecified and loopback addresses);
//! - the well-known NAT64 prefix `64:ff9b::/96` (RFC 6052);
//! - the local-use NAT64 prefix `64:ff9b:1::/48` (RFC 8215). A network may use
//!   a /48, /56, /64 or /96 prefix inside it, and the exit cannot know which,
//!   so all four RFC 6052 readings are checked. This is deliberately
//!   conservative: most addresses in that block have zero bits where some
//!   reading expects an IPv4 address, read as `0.0.0.0/8`, and are denied.
//! - 6to4 `2002:a.b.c.d::/48` (RFC 3056).
//!
//! # Rule syntax
//!
//! A [`PolicyRule`] is written `NET` or `NET:PORTS`, where `NET` is a CIDR
//! block or a bare address (a single host) and `PORTS` is a port or an
//! inclusive range `first-last`. An IPv6 block followed by ports goes in
//! brackets, because its colons would be ambiguous otherwise:
//!
//! | rule                   | meaning                                  |
//! |------------------------|------------------------------------------|
//! | `10.0.0.0/8`           | every port on 10.0.0.0/8                 |
//! | `127.0.0.1:8080`       | exactly 127.0.0.1 port 8080              |
//! | `192.0.2.0/24:80-443`  | ports 80 to 443 on 192.0.2.0/24          |
//! | `fc00::/7`             | every port on fc00::/7                   |
//! | `[::1]:80-90`          | ports 80 to 90 on ::1                    |
//! | `[2001:db8::/32]:443`  | port 443 on 2001:db8::/32                |
//!
//! Without brackets, `::1:80` is the IPv6 address `::1:80`, not port 80.
//! A block must not have bits set beyond its prefix (`10.0.0.1/8` is refused
//! with a hint), because such a typo usually means the operator meant a
//! different block than the one the prefix selects.

use crate::target::Status;
use core::fmt;
use core::str::FromStr;
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A CIDR block: an IPv4 or IPv6 network address and a prefix length, with
/// no address bits set beyond the prefix. The arithmetic is the `ipnet`
/// crate's; this type adds what a policy file needs on top: a bare address
/// means that one host, the prefix is a plain decimal, and `10.1.2.3/8` is
/// refused (it is a typo for a host or for `10.0.0.0/8`, never what the
/// writer meant) rather than silently truncated.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpNet(ipnet::IpNet);

/// Why [`IpNet::new`] or parsing an [`IpNet`] failed.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum ParseIpNetError {
    /// The address part is not an IPv4 or IPv6 literal.
    #[error("`{0}` is not an IPv4 or IPv6 address")]
    BadAddress(String),
    /// The prefix length is not a decimal number.
    #[error("`{0}` is not a prefix length (expected a number after `/`)")]
    BadPrefix(String),
    /// The prefix length is longer than the address.
    #[error("prefix length /{prefix} is longer than the {max} bits of the address")]
    PrefixTooLong {
        /// The length given.
        prefix: u8,
        /// 32 for IPv4, 128 for IPv6.
        max: u8,
    },
    /// The address has bits set beyond the prefix.
    #[error("`{given}` has host bits set beyond the prefix; did you mean `{network}`?")]
    HostBitsSet {
        /// The block as written.
        given: String,
        /// The block the prefix selects.
        network: IpNet,
    },
}

impl IpNet {
    /// The block `addr/prefix`; refuses a prefix longer than the address and
    /// an address with bits set beyond the prefix.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<IpNet, ParseIpNetError> {
        let net = ipnet::IpNet::new(addr, prefix).map_err(|_| ParseIpNetError::PrefixTooLong {
            prefix,
            max: ipnet::IpNet::from(addr).max_prefix_len(),
        })?;
        if net != net.trunc() {
            return Err(ParseIpNetError::HostBitsSet {
                given: format!("{addr}/{prefix}"),
                network: IpNet(net.trunc()),
            });
        }
        Ok(IpNet(net))
    }

    /// The block holding exactly `addr` (/32 or /128).
    pub fn host(addr: IpAddr) -> IpNet {
        IpNet(ipnet::IpNet::from(addr))
    }

    /// For the constant table below: the caller guarantees a valid prefix
    /// and no host bits (the table's test checks both).
    const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> IpNet {
        IpNet(ipnet::IpNet::new_assert(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), prefix))
    }

    const fn v6(segments: [u16; 8], prefix: u8) -> IpNet {
        let [a, b, c, d, e, f, g, h] = segments;
        IpNet(ipnet::IpNet::new_assert(IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h)), prefix))
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.0.addr()
    }

    /// The prefix length in bits.
    pub fn prefix_len(&self) -> u8 {
        self.0.prefix_len()
    }

    /// Whether `ip` lies in the block. An IPv4 block never contains an IPv6
    /// address or the reverse; [`ExitPolicy`] handles IPv4 embedded in IPv6.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip)
    }
}

impl fmt::Debug for IpNet {
    /// As before the `ipnet` crate did the arithmetic, so logs and traces
    /// read the same.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IpNet")
            .field("addr", &self.addr())
            .field("prefix", &self.prefix_len())
            .finish()
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr(), self.prefix_len())
    }
}

impl FromStr for IpNet {
    type Err = ParseIpNetError;

    /// `addr/prefix`, or a bare address meaning that single host.
    fn from_str(s: &str) -> Result<IpNet, ParseIpNetError> {
        let (addr_str, prefix_str) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr = IpAddr::from_str(addr_str)
            .map_err(|_| ParseIpNetError::BadAddress(addr_str.to_owned()))?;
        match prefix_str {
            None => Ok(IpNet::host(addr)),
            Some(p) => {
                let prefix = parse_decimal_u16(p)
                    .and_then(|n| u8::try_from(n).ok())
                    .ok_or_else(|| ParseIpNetError::BadPrefix(p.to_owned()))?;
                IpNet::new(addr, prefix)
            }
        }
    }
}

/// A plain decimal number: ASCII digits only (no sign, no spaces), at most 5.
fn parse_decimal_u16(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// An inclusive range of TCP ports.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct PortRange {
    /// The lowest port in the range.
    pub first: u16,
    /// The highest port in the range, `>= first`.
    pub last: u16,
}

/// Why parsing a [`PortRange`] failed.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum ParsePortRangeError {
    /// A port is not a decimal number from 0 to 65535.
    #[error("`{0}` is not a port (expected a number from 0 to 65535)")]
    BadPort(String),
    /// The range ends before it starts.
    #[error("port range {first}-{last} ends before it starts")]
    Reversed {
        /// The first port written.
        first: u16,
        /// The last port written.
        last: u16,
    },
}

impl PortRange {
    /// Every port.
    pub const ALL: PortRange = PortRange { first: 0, last: u16::MAX };

    /// The range holding only `port`.
    pub const fn single(port: u16) -> PortRange {
        PortRange { first: port, last: port }
    }

    /// Whether `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

impl FromStr for PortRange {
    type Err = ParsePortRangeError;

    /// `443` or `8000-8999` (inclusive).
    fn from_str(s: &str) -> Result<PortRange, ParsePortRangeError> {
        let port = |p: &str| {
            parse_decimal_u16(p).ok_or_else(|| ParsePortRangeError::BadPort(p.to_owned()))
        };
        match s.split_once('-') {
            None => Ok(PortRange::single(port(s)?)),
            Some((a, b)) => {
                let (first, last) = (port(a)?, port(b)?);
                if first > last {
                    return Err(ParsePortRangeError::Reversed { first, last });
                }
                Ok(PortRange { first, last })
            }
        }
    }
}

/// One allow or deny rule: a block and, optionally, the ports it covers.
/// See the [module docs](self) for the syntax.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct PolicyRule {
    /// The addresses the rule covers.
    pub net: IpNet,
    /// The ports the rule covers; `None` means every port.
    pub ports: Option<PortRange>,
}

/// Why parsing a [`PolicyRule`] failed.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum ParsePolicyRuleError {
    /// The address block is malformed.
    #[error("in rule `{rule}`: {source}")]
    Net {
        /// The rule as written.
        rule: String,
        /// What is wrong with the block.
        source: ParseIpNetError,
    },
    /// The port part is malformed.
    #[error("in rule `{rule}`: {source}")]
    Ports {
        /// The rule as written.
        rule: String,
        /// What is wrong with the ports.
        source: ParsePortRangeError,
    },
    /// An opening `[` has no matching `]`, or something other than `:PORTS`
    /// follows the `]`.
    #[error("in rule `{0}`: expected `[NET]` or `[NET]:PORTS`")]
    Brackets(String),
}

impl PolicyRule {
    /// Whether the rule covers `ip` on `port`.
    pub fn matches(&self, ip: IpAddr, port: u16) -> bool {
        self.net.contains(ip) && self.ports.is_none_or(|p| p.contains(port))
    }
}

impl fmt::Display for PolicyRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.net.addr(), self.ports) {
            (_, None) => write!(f, "{}", self.net),
            (IpAddr::V4(_), Some(p)) => write!(f, "{}:{p}", self.net),
            (IpAddr::V6(_), Some(p)) => write!(f, "[{}]:{p}", self.net),
        }
    }
}

impl FromStr for PolicyRule {
    type Err = ParsePolicyRuleError;

    /// `NET`, `NET:PORTS` (IPv4), `[NET]` or `[NET]:PORTS`.
    fn from_str(s: &str) -> Result<PolicyRule, ParsePolicyRuleError> {
        let (net_str, ports_str) = if let Some(rest) = s.strip_prefix('[') {
            let (net, after) =
                rest.split_once(']').ok_or_else(|| ParsePolicyRuleError::Brackets(s.to_owned()))?;
            match after {
                "" => (net, None),
                _ => match after.strip_prefix(':') {
                    Some(ports) => (net, Some(ports)),
                    None => return Err(ParsePolicyRuleError::Brackets(s.to_owned())),
                },
            }
        } else {
            match s.split_once(':') {
                // Exactly one colon: IPv4 with ports. More: a bare IPv6 block.
                Some((net, ports)) if !ports.contains(':') => (net, Some(ports)),
                _ => (s, None),
            }
        };
        let net = net_str
            .parse()
            .map_err(|source| ParsePolicyRuleError::Net { rule: s.to_owned(), source })?;
        let ports = ports_str
            .map(str::parse)
            .transpose()
            .map_err(|source| ParsePolicyRuleError::Ports { rule: s.to_owned(), source })?;
        Ok(PolicyRule { net, ports })
    }
}

/// The operator's exit policy settings.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ExitPolicyConfig {
    /// Destinations to open even if a later check would deny them.
    pub allow: Vec<PolicyRule>,
    /// Destinations to refuse; beats every other setting.
    pub deny: Vec<PolicyRule>,
    /// The only destination ports to dial; empty means every port.
    pub allowed_ports: Vec<PortRange>,
    /// Whether [`default_denied_ranges`] are refused (true by default).
    pub default_deny_ranges: bool,
}

impl Default for ExitPolicyConfig {
    fn default() -> Self {
        ExitPolicyConfig {
            allow: Vec::new(),
            deny: Vec::new(),
            allowed_ports: Vec::new(),
            default_deny_ranges: true,
        }
    }
}

/// Why the exit policy refused a destination.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum Denial {
    /// An explicit deny rule matched.
    #[error("{addr} port {port} is denied by deny rule #{index} `{rule}`")]
    DenyRule {
        /// The rule's position in [`ExitPolicyConfig::deny`].
        index: usize,
        /// The rule itself.
        rule: PolicyRule,
        /// The form of the destination that matched (see the module docs).
        addr: IpAddr,
        /// The destination port.
        port: u16,
    },
    /// The destination is one of the exit's own addresses.
    #[error("{addr} is one of the exit's own addresses")]
    OwnAddress {
        /// The form of the destination that matched.
        addr: IpAddr,
    },
    /// The destination is in a range denied by default.
    #[error("{addr} is in the default-denied range {range}")]
    DefaultRange {
        /// The range that matched.
        range: IpNet,
        /// The form of the destination that matched.
        addr: IpAddr,
    },
    /// The port is not in the allowed ports.
    #[error("port {port} is not among the exit's allowed ports")]
    PortNotAllowed {
        /// The destination port.
        port: u16,
    },
}

impl Denial {
    /// The status the exit answers with: every denial is "not allowed by ruleset".
    pub fn status(&self) -> Status {
        Status::NotAllowed
    }
}

static DEFAULT_DENIED: [IpNet; 18] = [
    IpNet::v4(0, 0, 0, 0, 8),
    IpNet::v4(10, 0, 0, 0, 8),
    IpNet::v4(100, 64, 0, 0, 10),
    IpNet::v4(127, 0, 0, 0, 8),
    IpNet::v4(169, 254, 0, 0, 16),
    IpNet::v4(172, 16, 0, 0, 12),
    IpNet::v4(192, 0, 0, 0, 24),
    IpNet::v4(192, 168, 0, 0, 16),
    IpNet::v4(198, 18, 0, 0, 15),
    IpNet::v4(224, 0, 0, 0, 4),
    IpNet::v4(240, 0, 0, 0, 4),
    // Azure's WireServer (host agent and metadata), a public address.
    IpNet::v4(168, 63, 129, 16, 32),
    IpNet::v6([0, 0, 0, 0, 0, 0, 0, 0], 128),
    IpNet::v6([0, 0, 0, 0, 0, 0, 0, 1], 128),
    IpNet::v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
    IpNet::v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),
    // Deprecated site-local (RFC 3879), still routed inside some networks.
    IpNet::v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),
    IpNet::v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8),
];

/// The ranges an exit refuses unless the operator allows them (DESIGN.md §6):
/// this-network, private, shared (CGNAT), loopback, link-local, IETF protocol
/// assignments, benchmarking, multicast and reserved IPv4, and Azure's
/// WireServer (168.63.129.16); unspecified, loopback, unique-local,
/// link-local, site-local and multicast IPv6. Their IPv4-mapped and
/// NAT64 forms are covered by [`ExitPolicy`] itself.
pub fn default_denied_ranges() -> &'static [IpNet] {
    &DEFAULT_DENIED
}

static ALWAYS_DENIED: [IpNet; 9] = [
    IpNet::v4(0, 0, 0, 0, 32),
    IpNet::v4(255, 255, 255, 255, 32),
    IpNet::v4(224, 0, 0, 0, 4),
    // The instance metadata service of AWS, GCP, Azure, OpenStack and others.
    IpNet::v4(169, 254, 169, 254, 32),
    // AWS ECS task metadata and credentials.
    IpNet::v4(169, 254, 170, 2, 32),
    // Azure's WireServer.
    IpNet::v4(168, 63, 129, 16, 32),
    IpNet::v6([0, 0, 0, 0, 0, 0, 0, 0], 128),
    // AWS's instance metadata service over IPv6.
    IpNet::v6([0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254], 128),
    IpNet::v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8),
];

/// The range of [`always_denied_ranges`] that `ip`, in any form it can take
/// (see the module docs), falls in; `None` if it falls in none.
pub fn always_denied(ip: IpAddr) -> Option<IpNet> {
    Forms::of(ip).into_iter().find_map(|a| ALWAYS_DENIED.iter().find(|r| r.contains(a)).copied())
}

/// Destinations no allow-list rule opens (an agent dials them only when a
/// service names the literal address): unspecified, broadcast and multicast
/// addresses, where a connect means something other than one host, and the
/// cloud metadata services (169.254.169.254, 169.254.170.2, 168.63.129.16,
/// fd00:ec2::254), which hand out the host's credentials to anyone local.
pub fn always_denied_ranges() -> &'static [IpNet] {
    &ALWAYS_DENIED
}

/// Whether `allowed` says yes to every address a connection to `ip` may
/// really reach: each IPv4 address `ip` carries (see the module docs) when
/// it carries any, else `ip` itself.
pub fn allowed_in_every_form(ip: IpAddr, allowed: impl Fn(IpAddr) -> bool) -> bool {
    let forms = Forms::of(ip);
    if forms.len > 1 {
        forms.iter().skip(1).all(allowed)
    } else {
        allowed(ip)
    }
}

/// Most forms one address can take: itself plus four local-use NAT64 readings.
const MAX_FORMS: usize = 5;

/// The forms an address is judged in: itself, then every IPv4 address it may
/// carry (see the module docs).
#[derive(Clone, Copy, Debug)]
struct Forms {
    addrs: [IpAddr; MAX_FORMS],
    len: usize,
}

impl Forms {
    fn of(ip: IpAddr) -> Forms {
        let mut forms = Forms { addrs: [ip; MAX_FORMS], len: 1 };
        if let IpAddr::V6(v6) = ip {
            let mut push = |a: [u8; 4]| {
                if let Some(slot) = forms.addrs.get_mut(forms.len) {
                    *slot = IpAddr::V4(Ipv4Addr::from(a));
                    forms.len += 1;
                }
            };
            let o = v6.octets();
            let seg = v6.segments();
            let low = [o[12], o[13], o[14], o[15]];
            match seg {
                // IPv4-mapped ::ffff:a.b.c.d and IPv4-translated ::ffff:0:a.b.c.d.
                [0, 0, 0, 0, 0, 0xffff, _, _] | [0, 0, 0, 0, 0xffff, 0, _, _] => push(low),
                // IPv4-compatible ::a.b.c.d, but :: and ::1 are IPv6's own.
                [0, 0, 0, 0, 0, 0, 0, 0 | 1] => {}
                [0, 0, 0, 0, 0, 0, _, _] => push(low),
                // Well-known NAT64 prefix 64:ff9b::/96.
                [0x64, 0xff9b, 0, 0, 0, 0, _, _] => push(low),
                // Local-use NAT64 64:ff9b:1::/48: every RFC 6052 reading.
                [0x64, 0xff9b, 1, ..] => {
                    push([o[6], o[7], o[9], o[10]]);
                    push([o[7], o[9], o[10], o[11]]);
                    push([o[9], o[10], o[11], o[12]]);
                    push(low);
                }
                // 6to4 2002:a.b.c.d::/48.
                [0x2002, ..] => push([o[2], o[3], o[4], o[5]]),
                _ => {}
            }
        }
        forms
    }

    fn iter(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.addrs.iter().take(self.len).copied()
    }
}

impl IntoIterator for Forms {
    type Item = IpAddr;
    type IntoIter = core::iter::Take<core::array::IntoIter<IpAddr, MAX_FORMS>>;

    fn into_iter(self) -> Self::IntoIter {
        self.addrs.into_iter().take(self.len)
    }
}

/// An exit's policy, ready to check destinations against.
#[derive(Clone, Debug)]
pub struct ExitPolicy {
    allow: Vec<PolicyRule>,
    deny: Vec<PolicyRule>,
    allowed_ports: Vec<PortRange>,
    default_deny_ranges: bool,
    /// The exit's addresses, each in all its forms, so that e.g. an own
    /// address given as `::ffff:a.b.c.d` also catches `a.b.c.d`.
    own: BTreeSet<IpAddr>,
}

impl ExitPolicy {
    /// The policy for `config` on an exit reachable at `own_addrs`.
    pub fn new(config: &ExitPolicyConfig, own_addrs: &[IpAddr]) -> Self {
        ExitPolicy {
            allow: config.allow.clone(),
            deny: config.deny.clone(),
            allowed_ports: config.allowed_ports.clone(),
            default_deny_ranges: config.default_deny_ranges,
            own: own_addrs.iter().flat_map(|&a| Forms::of(a)).collect(),
        }
    }

    /// Whether the exit may dial `ip` on `port`; `ip` must be the address
    /// actually dialed (after DNS). See the module docs for the order of checks.
    pub fn check(&self, ip: IpAddr, port: u16) -> Result<(), Denial> {
        let forms = Forms::of(ip);
        for addr in forms.iter() {
            if let Some((index, rule)) =
                self.deny.iter().enumerate().find(|(_, r)| r.matches(addr, port))
            {
                return Err(Denial::DenyRule { index, rule: *rule, addr, port });
            }
        }
        // The port check is lifted only if every address the connection may
        // really reach is explicitly allowed: the IPv4 readings when there are
        // any (the IPv6 form is then only their carrier), else the address.
        let mut carrier_allowed = false;
        let mut every_reading_allowed = true;
        for (i, addr) in forms.iter().enumerate() {
            if self.allow.iter().any(|r| r.matches(addr, port)) {
                carrier_allowed |= i == 0;
                continue;
            }
            every_reading_allowed &= i == 0;
            if self.own.contains(&addr) {
                return Err(Denial::OwnAddress { addr });
            }
            if self.default_deny_ranges {
                if let Some(range) = DEFAULT_DENIED.iter().find(|r| r.contains(addr)) {
                    return Err(Denial::DefaultRange { range: *range, addr });
                }
            }
        }
        let explicitly_allowed =
            if forms.len > 1 { every_reading_allowed } else { carrier_allowed };
        if explicitly_allowed
            || self.allowed_ports.is_empty()
            || self.allowed_ports.iter().any(|r| r.contains(port))
        {
            Ok(())
        } else {
            Err(Denial::PortNotAllowed { port })
        }
    }
}

/// Reads `name` the way the classic BSD/glibc `inet_aton` does, which many
/// resolvers consult before DNS, so an exit can treat a "domain" such as
/// `2130706433`, `0x7f000001`, `0177.0.0.1`, `127.1` or `127.0.1` as the
/// IPv4 literal it really is.
///
/// Accepted: one to four parts separated by `.`; each part decimal, octal
/// (leading `0`) or hexadecimal (leading `0x`/`0X`, where `0x` alone is 0);
/// the last part fills all remaining bytes (`a`: 32 bits, `a.b`: 8+24,
/// `a.b.c`: 8+8+16). Also accepted, erring towards recognising a literal
/// because the alternative is handing it to a resolver that may do so: one
/// trailing `.` (as URL parsers do) and, as `inet_aton` does, anything after
/// an ASCII whitespace character.
pub fn parse_inet_aton(name: &str) -> Option<Ipv4Addr> {
    let head = match name.find(|c: char| c.is_ascii_whitespace()) {
        Some(i) => name.get(..i)?,
        None => name,
    };
    let head = head.strip_suffix('.').unwrap_or(head);
    let mut parts = [0u32; 4];
    let mut count = 0;
    for part in head.split('.') {
        let slot = parts.get_mut(count)?;
        *slot = parse_inet_aton_part(part)?;
        count += 1;
    }
    let value = match parts {
        _ if count == 0 => return None,
        [a, ..] if count == 1 => a,
        [a, b, ..] if count == 2 => {
            if a > 0xff || b > 0xff_ffff {
                return None;
            }
            (a << 24) | b
        }
        [a, b, c, _] if count == 3 => {
            if a > 0xff || b > 0xff || c > 0xffff {
                return None;
            }
            (a << 24) | (b << 16) | c
        }
        [a, b, c, d] => {
            if a > 0xff || b > 0xff || c > 0xff || d > 0xff {
                return None;
            }
            (a << 24) | (b << 16) | (c << 8) | d
        }
    };
    Some(Ipv4Addr::from(value))
}

fn parse_inet_aton_part(part: &str) -> Option<u32> {
    let (digits, radix) =
        if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
            (hex, 16)
        } else if part.len() > 1 && part.starts_with('0') {
            (part.get(1..)?, 8)
        } else if part.is_empty() {
            return None;
        } else {
            (part, 10)
        };
    let mut value: u32 = 0;
    for c in digits.chars() {
        let d = c.to_digit(radix)?;
        value = value.checked_mul(radix)?.checked_add(d)?;
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn rule(s: &str) -> PolicyRule {
        s.parse().expect("test rule")
    }

    fn default_policy() -> ExitPolicy {
        ExitPolicy::new(&ExitPolicyConfig::default(), &[])
    }

    fn mapped(v4: Ipv4Addr) -> IpAddr {
        IpAddr::V6(v4.to_ipv6_mapped())
    }

    fn nat64(v4: Ipv4Addr) -> IpAddr {
        let [a, b, c, d] = v4.octets();
        IpAddr::V6(Ipv6Addr::from([0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0, a, b, c, d]))
    }

    fn six_to_four(v4: Ipv4Addr) -> IpAddr {
        let [a, b, c, d] = v4.octets();
        IpAddr::V6(Ipv6Addr::from([0x20, 0x02, a, b, c, d, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]))
    }

    /// The local-use NAT64 embedding of `v4` for an RFC 6052 prefix length.
    fn local_nat64(v4: Ipv4Addr, prefix_len: u8) -> IpAddr {
        let [a, b, c, d] = v4.octets();
        let mut o = [0u8; 16];
        o[..6].copy_from_slice(&[0, 0x64, 0xff, 0x9b, 0, 1]);
        match prefix_len {
            48 => [o[6], o[7], o[9], o[10]] = [a, b, c, d],
            56 => [o[7], o[9], o[10], o[11]] = [a, b, c, d],
            64 => [o[9], o[10], o[11], o[12]] = [a, b, c, d],
            _ => [o[12], o[13], o[14], o[15]] = [a, b, c, d],
        }
        IpAddr::V6(Ipv6Addr::from(o))
    }

    #[test]
    fn default_list_is_exactly_the_design_list() {
        let listed: Vec<String> = default_denied_ranges().iter().map(|n| n.to_string()).collect();
        assert_eq!(
            listed,
            [
                "0.0.0.0/8",
                "10.0.0.0/8",
                "100.64.0.0/10",
                "127.0.0.0/8",
                "169.254.0.0/16",
                "172.16.0.0/12",
                "192.0.0.0/24",
                "192.168.0.0/16",
                "198.18.0.0/15",
                "224.0.0.0/4",
                "240.0.0.0/4",
                "168.63.129.16/32",
                "::/128",
                "::1/128",
                "fc00::/7",
                "fe80::/10",
                "fec0::/10",
                "ff00::/8",
            ]
        );
        for net in default_denied_ranges() {
            // Every entry is a valid, canonical block.
            assert_eq!(IpNet::new(net.addr(), net.prefix_len()), Ok(*net));
        }
    }

    /// First, last and a middle address of every IPv4 default range.
    const V4_SAMPLES: &[(&str, &str)] = &[
        ("0.0.0.0/8", "0.0.0.0"),
        ("0.0.0.0/8", "0.255.255.255"),
        ("10.0.0.0/8", "10.0.0.1"),
        ("10.0.0.0/8", "10.255.255.255"),
        ("100.64.0.0/10", "100.64.0.0"),
        ("100.64.0.0/10", "100.127.255.255"),
        ("127.0.0.0/8", "127.0.0.1"),
        ("127.0.0.0/8", "127.255.255.254"),
        ("169.254.0.0/16", "169.254.169.254"),
        ("172.16.0.0/12", "172.16.0.0"),
        ("172.16.0.0/12", "172.31.255.255"),
        ("192.0.0.0/24", "192.0.0.8"),
        ("192.168.0.0/16", "192.168.1.1"),
        ("198.18.0.0/15", "198.18.0.0"),
        ("198.18.0.0/15", "198.19.255.255"),
        ("224.0.0.0/4", "224.0.0.1"),
        ("224.0.0.0/4", "239.255.255.255"),
        ("240.0.0.0/4", "240.0.0.0"),
        ("240.0.0.0/4", "255.255.255.255"),
        ("168.63.129.16/32", "168.63.129.16"),
    ];

    #[test]
    fn every_default_v4_range_is_denied_as_literal_mapped_nat64_and_6to4() {
        let policy = default_policy();
        for (range, addr) in V4_SAMPLES {
            let range: IpNet = range.parse().expect("range");
            let v4: Ipv4Addr = addr.parse().expect("addr");
            let want = Err(Denial::DefaultRange { range, addr: IpAddr::V4(v4) });
            assert_eq!(policy.check(IpAddr::V4(v4), 80), want, "literal {v4}");
            assert_eq!(policy.check(mapped(v4), 80), want, "mapped {v4}");
            assert_eq!(policy.check(nat64(v4), 80), want, "nat64 {v4}");
            assert_eq!(policy.check(six_to_four(v4), 80), want, "6to4 {v4}");
            for len in [48, 56, 64, 96] {
                assert!(policy.check(local_nat64(v4, len), 80).is_err(), "local nat64/{len} {v4}");
            }
        }
    }

    #[test]
    fn every_default_v6_range_is_denied() {
        let policy = default_policy();
        for (range, addr) in [
            ("::/128", "::"),
            ("::1/128", "::1"),
            ("fc00::/7", "fc00::1"),
            ("fc00::/7", "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            ("fe80::/10", "fe80::1"),
            ("fe80::/10", "febf::1"),
            ("fec0::/10", "fec0::1"),
            ("fec0::/10", "feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            ("ff00::/8", "ff02::1"),
        ] {
            let range: IpNet = range.parse().expect("range");
            assert_eq!(
                policy.check(ip(addr), 443),
                Err(Denial::DefaultRange { range, addr: ip(addr) }),
                "{addr}"
            );
        }
    }

    #[test]
    fn ranges_end_where_they_should() {
        let policy = default_policy();
        for addr in [
            "1.1.1.1",
            "8.8.8.8",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "126.255.255.255",
            "128.0.0.0",
            "169.253.255.255",
            "169.255.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.0",
            "192.167.255.255",
            "192.169.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "2001:4860:4860::8888",
            "2606:4700::1111",
            "fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "168.63.129.15",
            "168.63.129.17",
            "::2:0:0:1",
        ] {
            assert_eq!(policy.check(ip(addr), 443), Ok(()), "{addr}");
        }
        // Public IPv4 in every IPv6 wrapping passes too.
        let public = Ipv4Addr::new(93, 184, 216, 34);
        for wrapped in [mapped(public), nat64(public), six_to_four(public)] {
            assert_eq!(policy.check(wrapped, 443), Ok(()), "{wrapped}");
        }
        assert_eq!(policy.check(ip("::ffff:0:93.184.216.34"), 443), Ok(()));
        assert_eq!(policy.check(ip("::93.184.216.34"), 443), Ok(()));
    }

    #[test]
    fn siit_and_compatible_forms_are_unwrapped() {
        let policy = default_policy();
        assert!(matches!(
            policy.check(ip("::ffff:0:127.0.0.1"), 80),
            Err(Denial::DefaultRange { .. })
        ));
        assert!(matches!(policy.check(ip("::10.1.2.3"), 80), Err(Denial::DefaultRange { .. })));
        // :: and ::1 are IPv6's own addresses, denied as such.
        let unspecified: IpNet = "::/128".parse().expect("net");
        assert_eq!(
            policy.check(ip("::"), 80),
            Err(Denial::DefaultRange { range: unspecified, addr: ip("::") })
        );
    }

    #[test]
    fn local_nat64_is_checked_in_every_reading() {
        let policy = default_policy();
        // 10.0.0.1 in /64 format reads as a public 1.0.0.0 at /96: still denied.
        let sneaky = local_nat64(Ipv4Addr::new(10, 0, 0, 1), 64);
        assert_eq!(sneaky, ip("64:ff9b:1:0:a:0:100:0"));
        assert!(policy.check(sneaky, 80).is_err());
        // A local /96 with zero bits elsewhere is refused (conservative).
        assert!(policy.check(local_nat64(Ipv4Addr::new(8, 8, 8, 8), 96), 80).is_err());
        // An allow rule covering only some readings does not lift the port check.
        let config = ExitPolicyConfig {
            allow: vec![rule("0.0.0.0/1")],
            allowed_ports: vec![PortRange::single(443)],
            default_deny_ranges: false,
            ..Default::default()
        };
        let partial = ExitPolicy::new(&config, &[]);
        let v4 = Ipv4Addr::new(128, 0, 0, 0);
        assert_eq!(partial.check(IpAddr::V4(v4), 80), Err(Denial::PortNotAllowed { port: 80 }));
        assert_eq!(
            partial.check(local_nat64(v4, 96), 80),
            Err(Denial::PortNotAllowed { port: 80 })
        );
        // One whose other readings are public passes.
        assert_eq!(policy.check(ip("64:ff9b:1:808:8:808:808:808"), 80), Ok(()));
    }

    #[test]
    fn allow_rule_opens_exactly_one_ip_and_port() {
        let config =
            ExitPolicyConfig { allow: vec![rule("127.0.0.1/32:8080")], ..Default::default() };
        let policy = ExitPolicy::new(&config, &[]);
        assert_eq!(policy.check(ip("127.0.0.1"), 8080), Ok(()));
        assert_eq!(policy.check(ip("::ffff:127.0.0.1"), 8080), Ok(()));
        assert_eq!(policy.check(nat64(Ipv4Addr::LOCALHOST), 8080), Ok(()));
        for (addr, port) in [
            ("127.0.0.1", 8079),
            ("127.0.0.1", 8081),
            ("127.0.0.2", 8080),
            ("127.0.0.0", 8080),
            ("::ffff:127.0.0.1", 8081),
            ("::1", 8080),
        ] {
            assert!(
                matches!(policy.check(ip(addr), port), Err(Denial::DefaultRange { .. })),
                "{addr}:{port}"
            );
        }
    }

    #[test]
    fn allowing_a_nat64_prefix_does_not_open_private_ipv4() {
        let config = ExitPolicyConfig { allow: vec![rule("64:ff9b::/96")], ..Default::default() };
        let policy = ExitPolicy::new(&config, &[]);
        assert_eq!(policy.check(nat64(Ipv4Addr::new(1, 1, 1, 1)), 80), Ok(()));
        assert!(policy.check(nat64(Ipv4Addr::new(10, 0, 0, 1)), 80).is_err());
        // Nor does it lift the port check for the IPv4 destination behind it.
        let config = ExitPolicyConfig {
            allow: vec![rule("64:ff9b::/96")],
            allowed_ports: vec![PortRange::single(80)],
            ..Default::default()
        };
        let policy = ExitPolicy::new(&config, &[]);
        assert_eq!(policy.check(nat64(Ipv4Addr::new(1, 1, 1, 1)), 80), Ok(()));
        assert_eq!(
            policy.check(nat64(Ipv4Addr::new(1, 1, 1, 1)), 8080),
            Err(Denial::PortNotAllowed { port: 8080 })
        );
    }

    #[test]
    fn explicit_deny_beats_allow() {
        let config = ExitPolicyConfig {
            allow: vec![rule("1.2.3.0/24")],
            deny: vec![rule("9.9.9.9"), rule("1.2.3.4:443")],
            ..Default::default()
        };
        let policy = ExitPolicy::new(&config, &[]);
        assert_eq!(
            policy.check(ip("1.2.3.4"), 443),
            Err(Denial::DenyRule {
                index: 1,
                rule: rule("1.2.3.4:443"),
                addr: ip("1.2.3.4"),
                port: 443
            })
        );
        assert_eq!(policy.check(ip("1.2.3.4"), 80), Ok(()));
        // A deny on the embedded IPv4 form denies the IPv6 form too.
        assert!(matches!(
            policy.check(ip("::ffff:1.2.3.4"), 443),
            Err(Denial::DenyRule { index: 1, .. })
        ));
        assert!(matches!(
            policy.check(nat64(Ipv4Addr::new(9, 9, 9, 9)), 1),
            Err(Denial::DenyRule { index: 0, .. })
        ));
    }

    #[test]
    fn deny_rules_apply_to_public_addresses_and_ipv6() {
        let config = ExitPolicyConfig {
            deny: vec![rule("0.0.0.0/0:25"), rule("[2001:db8::/32]:443")],
            ..Default::default()
        };
        let policy = ExitPolicy::new(&config, &[]);
        assert!(matches!(policy.check(ip("8.8.8.8"), 25), Err(Denial::DenyRule { index: 0, .. })));
        assert!(matches!(policy.check(ip("::ffff:8.8.8.8"), 25), Err(Denial::DenyRule { .. })));
        assert_eq!(policy.check(ip("8.8.8.8"), 26), Ok(()));
        assert!(matches!(
            policy.check(ip("2001:db8::1"), 443),
            Err(Denial::DenyRule { index: 1, .. })
        ));
        assert_eq!(policy.check(ip("2001:db8::1"), 80), Ok(()));
    }

    #[test]
    fn own_addresses_are_denied_in_every_form() {
        let own = [ip("203.0.113.5"), ip("2001:db8::5")];
        let policy = ExitPolicy::new(&ExitPolicyConfig::default(), &own);
        let v4 = ip("203.0.113.5");
        assert_eq!(policy.check(v4, 80), Err(Denial::OwnAddress { addr: v4 }));
        assert_eq!(
            policy.check(ip("::ffff:203.0.113.5"), 80),
            Err(Denial::OwnAddress { addr: v4 })
        );
        assert_eq!(
            policy.check(nat64(Ipv4Addr::new(203, 0, 113, 5)), 80),
            Err(Denial::OwnAddress { addr: v4 })
        );
        assert_eq!(
            policy.check(ip("2001:db8::5"), 80),
            Err(Denial::OwnAddress { addr: ip("2001:db8::5") })
        );
        assert_eq!(policy.check(ip("203.0.113.6"), 80), Ok(()));
        // Own addresses stay denied with the default ranges off...
        let open = ExitPolicyConfig { default_deny_ranges: false, ..Default::default() };
        let policy = ExitPolicy::new(&open, &own);
        assert!(policy.check(v4, 80).is_err());
        assert_eq!(policy.check(ip("10.0.0.1"), 80), Ok(()));
        // ...but an explicit allow rule opens them.
        let allowed =
            ExitPolicyConfig { allow: vec![rule("203.0.113.5:8080")], ..Default::default() };
        assert_eq!(ExitPolicy::new(&allowed, &own).check(v4, 8080), Ok(()));
        // An own address given in mapped form also catches the IPv4 literal.
        let policy = ExitPolicy::new(&ExitPolicyConfig::default(), &[ip("::ffff:198.51.100.1")]);
        assert!(matches!(policy.check(ip("198.51.100.1"), 80), Err(Denial::OwnAddress { .. })));
    }

    #[test]
    fn allowed_ports_restrict_but_allow_rules_bypass_them() {
        let config = ExitPolicyConfig {
            allow: vec![rule("127.0.0.1:8080")],
            allowed_ports: vec!["80".parse().expect("port"), "443-444".parse().expect("range")],
            ..Default::default()
        };
        let policy = ExitPolicy::new(&config, &[]);
        assert_eq!(policy.check(ip("1.1.1.1"), 80), Ok(()));
        assert_eq!(policy.check(ip("1.1.1.1"), 443), Ok(()));
        assert_eq!(policy.check(ip("1.1.1.1"), 444), Ok(()));
        assert_eq!(policy.check(ip("1.1.1.1"), 445), Err(Denial::PortNotAllowed { port: 445 }));
        assert_eq!(policy.check(ip("1.1.1.1"), 25), Err(Denial::PortNotAllowed { port: 25 }));
        assert_eq!(policy.check(ip("127.0.0.1"), 8080), Ok(()));
        assert_eq!(policy.check(ip("::ffff:127.0.0.1"), 8080), Ok(()));
        // A default range is reported before the port.
        assert!(matches!(policy.check(ip("10.0.0.1"), 25), Err(Denial::DefaultRange { .. })));
        assert_eq!(Denial::PortNotAllowed { port: 1 }.status(), Status::NotAllowed);
    }

    #[test]
    fn ipnet_parsing_and_display() {
        let net: IpNet = "10.0.0.0/8".parse().expect("net");
        assert_eq!(net.to_string(), "10.0.0.0/8");
        assert!(net.contains(ip("10.255.0.1")) && !net.contains(ip("11.0.0.0")));
        assert!(!net.contains(ip("::ffff:10.0.0.1")), "families never mix in IpNet");
        assert_eq!("::1/128".parse::<IpNet>().map(|n| n.to_string()), Ok("::1/128".into()));
        assert_eq!("192.0.2.7".parse::<IpNet>().map(|n| n.prefix_len()), Ok(32));
        assert_eq!("2001:db8::7".parse::<IpNet>().map(|n| n.prefix_len()), Ok(128));
        assert_eq!("0.0.0.0/0".parse::<IpNet>().map(|n| n.contains(ip("1.2.3.4"))), Ok(true));
        assert_eq!("::/0".parse::<IpNet>().map(|n| n.contains(ip("ff02::1"))), Ok(true));
        assert_eq!(
            "10.0.0.1/8".parse::<IpNet>(),
            Err(ParseIpNetError::HostBitsSet { given: "10.0.0.1/8".into(), network: net })
        );
        assert_eq!(
            "10.0.0.1/8".parse::<IpNet>().map_err(|e| e.to_string()),
            Err("`10.0.0.1/8` has host bits set beyond the prefix; did you mean `10.0.0.0/8`?"
                .into())
        );
        assert_eq!(
            "10.0.0.0/33".parse::<IpNet>(),
            Err(ParseIpNetError::PrefixTooLong { prefix: 33, max: 32 })
        );
        assert_eq!(
            "::/129".parse::<IpNet>(),
            Err(ParseIpNetError::PrefixTooLong { prefix: 129, max: 128 })
        );
        for bad_prefix in ["", "+8", "-1", "8 ", "256", "99999999", "0x8"] {
            assert_eq!(
                format!("10.0.0.0/{bad_prefix}").parse::<IpNet>(),
                Err(ParseIpNetError::BadPrefix(bad_prefix.into())),
                "{bad_prefix}"
            );
        }
        for bad_addr in ["", "10.0.0", "example.com", "010.0.0.0", "[::1]", " 10.0.0.0"] {
            assert_eq!(
                format!("{bad_addr}/8").parse::<IpNet>(),
                Err(ParseIpNetError::BadAddress(bad_addr.into())),
                "{bad_addr}"
            );
        }
    }

    #[test]
    fn port_range_parsing() {
        assert_eq!("443".parse(), Ok(PortRange::single(443)));
        assert_eq!("8000-8999".parse(), Ok(PortRange { first: 8000, last: 8999 }));
        assert_eq!("0-65535".parse(), Ok(PortRange::ALL));
        assert_eq!(
            "90-80".parse::<PortRange>(),
            Err(ParsePortRangeError::Reversed { first: 90, last: 80 })
        );
        for bad in ["", "65536", "-1", "+80", "80-", "-80", "80-90-100", "http", " 80"] {
            assert!(
                matches!(bad.parse::<PortRange>(), Err(ParsePortRangeError::BadPort(_))),
                "{bad}"
            );
        }
        assert_eq!(PortRange { first: 1, last: 2 }.to_string(), "1-2");
        assert!(PortRange { first: 1, last: 2 }.contains(2));
        assert!(!PortRange { first: 1, last: 2 }.contains(3));
    }

    #[test]
    fn policy_rule_syntax() {
        let r = rule("127.0.0.1/32:8080");
        assert_eq!(r.net, "127.0.0.1/32".parse().expect("net"));
        assert_eq!(r.ports, Some(PortRange::single(8080)));
        assert_eq!(rule("10.0.0.0/8").ports, None);
        assert_eq!(rule("1.2.3.4:80-90").ports, Some(PortRange { first: 80, last: 90 }));
        assert_eq!(rule("fc00::/7").net.prefix_len(), 7);
        assert_eq!(rule("fc00::/7").ports, None);
        assert_eq!(rule("::1:80").net.addr(), ip("::1:80"), "no brackets: all address");
        let v6 = rule("[::1]:80-90");
        assert_eq!((v6.net.addr(), v6.ports), (ip("::1"), Some(PortRange { first: 80, last: 90 })));
        assert_eq!(rule("[2001:db8::/32]:443").net.prefix_len(), 32);
        assert_eq!(rule("[::1]").ports, None);
        assert_eq!(rule("[10.0.0.0/8]:22").to_string(), "10.0.0.0/8:22");
        for (text, display) in [
            ("127.0.0.1:8080", "127.0.0.1/32:8080"),
            ("[::1]:80-90", "[::1/128]:80-90"),
            ("fc00::/7", "fc00::/7"),
        ] {
            assert_eq!(rule(text).to_string(), display);
        }
    }

    #[test]
    fn policy_rule_errors_are_clear() {
        let err = |s: &str| s.parse::<PolicyRule>().map_err(|e| e.to_string()).err();
        assert_eq!(
            err("10.0.0.1/8:80").as_deref(),
            Some("in rule `10.0.0.1/8:80`: `10.0.0.1/8` has host bits set beyond the prefix; did you mean `10.0.0.0/8`?")
        );
        assert_eq!(
            err("1.2.3.4:99999").as_deref(),
            Some("in rule `1.2.3.4:99999`: `99999` is not a port (expected a number from 0 to 65535)")
        );
        assert_eq!(
            err("[::1:80").as_deref(),
            Some("in rule `[::1:80`: expected `[NET]` or `[NET]:PORTS`")
        );
        assert_eq!(
            err("[::1]80").as_deref(),
            Some("in rule `[::1]80`: expected `[NET]` or `[NET]:PORTS`")
        );
        assert_eq!(
            err("localhost:80").as_deref(),
            Some("in rule `localhost:80`: `localhost` is not an IPv4 or IPv6 address")
        );
        assert!(matches!(
            "1.2.3.4:".parse::<PolicyRule>(),
            Err(ParsePolicyRuleError::Ports { .. })
        ));
        assert!(matches!("".parse::<PolicyRule>(), Err(ParsePolicyRuleError::Net { .. })));
        assert!(matches!("[]:80".parse::<PolicyRule>(), Err(ParsePolicyRuleError::Net { .. })));
    }

    #[test]
    fn inet_aton_spellings() {
        let lo = Some(Ipv4Addr::LOCALHOST);
        for s in [
            "127.0.0.1",
            "2130706433",
            "0x7f000001",
            "0X7F000001",
            "017700000001",
            "0177.0.0.1",
            "0x7f.0.0.1",
            "0x7f.0x0.0x0.0x1",
            "127.1",
            "127.0.1",
            "127.0.0x1",
            "0177.1",
            "127.0.0.1.",
            "127.0.0.1 trailing garbage",
            "127.0.0.01",
            "0000000000000000000000000177.0.0.1",
        ] {
            assert_eq!(parse_inet_aton(s), lo, "{s}");
        }
        assert_eq!(parse_inet_aton("0"), Some(Ipv4Addr::UNSPECIFIED));
        assert_eq!(parse_inet_aton("0x"), Some(Ipv4Addr::UNSPECIFIED));
        assert_eq!(parse_inet_aton("10.1"), Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(parse_inet_aton("10.0x10203"), Some(Ipv4Addr::new(10, 1, 2, 3)));
        assert_eq!(parse_inet_aton("169.254.43518"), Some(Ipv4Addr::new(169, 254, 169, 254)));
        assert_eq!(parse_inet_aton("4294967295"), Some(Ipv4Addr::BROADCAST));
        for not_ip in [
            "",
            ".",
            "example.com",
            "4294967296",
            "0x100000000",
            "256.0.0.1",
            "1.256.0.1",
            "1.2.65536",
            "1.16777216",
            "1.2.3.4.5",
            "1..2",
            ".1.2.3",
            "1.2.3.4..",
            "08",
            "0x1g",
            "1e3",
            "-1",
            "+1",
            " 127.0.0.1",
            "１２７.0.0.1",
            "127.0.0.1/8",
        ] {
            assert_eq!(parse_inet_aton(not_ip), None, "{not_ip:?}");
        }
    }

    fn v4_rule() -> impl Strategy<Value = PolicyRule> {
        (any::<u32>(), 0u8..=32, proptest::option::of((any::<u16>(), any::<u16>()))).prop_map(
            |(bits, prefix, ports)| PolicyRule {
                net: IpNet::v4(0, 0, 0, 0, prefix).with_bits(bits),
                ports: ports.map(|(a, b)| PortRange { first: a.min(b), last: a.max(b) }),
            },
        )
    }

    impl IpNet {
        fn with_bits(self, bits: u32) -> IpNet {
            let addr = IpAddr::V4(Ipv4Addr::from(bits));
            IpNet(ipnet::IpNet::new_assert(addr, self.prefix_len()).trunc())
        }
    }

    fn v4_config() -> impl Strategy<Value = (ExitPolicyConfig, Vec<IpAddr>)> {
        (
            proptest::collection::vec(v4_rule(), 0..4),
            proptest::collection::vec(v4_rule(), 0..4),
            proptest::collection::vec(any::<(u16, u16)>(), 0..3),
            any::<bool>(),
            proptest::collection::vec(any::<u32>(), 0..3),
        )
            .prop_map(|(allow, deny, ports, default_deny_ranges, own)| {
                let allowed_ports = ports
                    .into_iter()
                    .map(|(a, b)| PortRange { first: a.min(b), last: a.max(b) })
                    .collect();
                let own = own.into_iter().map(|a| IpAddr::V4(Ipv4Addr::from(a))).collect();
                (ExitPolicyConfig { allow, deny, allowed_ports, default_deny_ranges }, own)
            })
    }

    proptest! {
        #[test]
        fn ipv6_wrappings_agree_with_the_ipv4_literal(
            (config, own) in v4_config(),
            bits in any::<u32>(),
            port in any::<u16>(),
        ) {
            let policy = ExitPolicy::new(&config, &own);
            let v4 = Ipv4Addr::from(bits);
            let literal = policy.check(IpAddr::V4(v4), port);
            prop_assert_eq!(policy.check(mapped(v4), port), literal.clone());
            prop_assert_eq!(policy.check(nat64(v4), port), literal.clone());
            prop_assert_eq!(policy.check(six_to_four(v4), port), literal.clone());
            if literal.is_err() {
                for len in [48, 56, 64, 96] {
                    prop_assert!(policy.check(local_nat64(v4, len), port).is_err());
                }
            }
        }

        #[test]
        fn default_policy_agrees_for_every_ipv4(bits in any::<u32>(), port in any::<u16>()) {
            let policy = default_policy();
            let v4 = Ipv4Addr::from(bits);
            let literal = policy.check(IpAddr::V4(v4), port);
            prop_assert_eq!(literal.is_err(), DEFAULT_DENIED.iter().any(|n| n.contains(IpAddr::V4(v4))));
            prop_assert_eq!(policy.check(mapped(v4), port), literal.clone());
            prop_assert_eq!(policy.check(nat64(v4), port), literal);
        }

        #[test]
        fn rules_round_trip_through_text(rule in v4_rule(), v6 in any::<u128>(), prefix in 0u8..=128, ports in proptest::option::of(any::<u16>())) {
            prop_assert_eq!(rule.to_string().parse::<PolicyRule>(), Ok(rule));
            let net = IpNet(ipnet::IpNet::new_assert(IpAddr::V6(Ipv6Addr::from(v6)), prefix).trunc());
            let v6_rule = PolicyRule { net, ports: ports.map(PortRange::single) };
            prop_assert_eq!(v6_rule.to_string().parse::<PolicyRule>(), Ok(v6_rule));
        }

        #[test]
        fn parsers_never_panic(s in "\\PC{0,40}") {
            let _ = s.parse::<PolicyRule>();
            let _ = s.parse::<IpNet>();
            let _ = s.parse::<PortRange>();
            let _ = parse_inet_aton(&s);
        }

        #[test]
        fn inet_aton_agrees_with_std_on_dotted_quads(bits in any::<u32>()) {
            let v4 = Ipv4Addr::from(bits);
            prop_assert_eq!(parse_inet_aton(&v4.to_string()), Some(v4));
            prop_assert_eq!(parse_inet_aton(&bits.to_string()), Some(v4));
            prop_assert_eq!(parse_inet_aton(&format!("{bits:#x}")), Some(v4));
            prop_assert_eq!(parse_inet_aton(&format!("0{bits:o}")), Some(v4));
        }
    }
}
