//! Where an agent may connect: its services' origins and its allow-list.
//! Deny by default — a gateway names only a service, never an address, and
//! the agent dials nothing its operator did not list.
//!
//! - A service whose origin is an **IP literal** (`127.0.0.1:8080`,
//!   `[::1]:8080`) allows exactly that address and port, whatever it is:
//!   naming the address is the operator's explicit choice.
//! - A service whose origin is a **name** (`app.internal:8080`) is resolved
//!   at each stream, and every answer is checked on its own: it may be dialed
//!   only if an `allow` rule ([`PolicyRule`], `NET` or `NET:PORTS`, e.g.
//!   `10.0.0.0/8:80-443`) covers it on the origin's port, and it is not in
//!   [`always_denied_ranges`] (cloud metadata, unspecified, broadcast,
//!   multicast), which no rule opens. The first allowed answer is dialed,
//!   the rest are tried after it; with none allowed the answer is
//!   `Forbidden` and nothing is dialed. An IPv6 answer that carries an IPv4
//!   address (`::ffff:a.b.c.d`, NAT64, 6to4) is judged by the IPv4 addresses
//!   it carries, as the exit policy does.
//!
//! [`always_denied_ranges`]: crate::policy::always_denied_ranges

use crate::policy::{allowed_in_every_form, always_denied, parse_inet_aton, IpNet, PolicyRule};
use crate::target::TargetAddr;
use std::net::{IpAddr, SocketAddr};

/// The longest DNS name in text form (the wire's 255 bytes less the length
/// bytes of the first label and the root).
const MAX_NAME_LEN: usize = 253;

/// Why an origin as written cannot be used.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum OriginError {
    /// Not `host:port`.
    #[error("`{0}` is not HOST:PORT (an IPv6 address goes in brackets: `[::1]:8080`)")]
    Syntax(String),
    /// The port is not 1..=65535.
    #[error("`{0}`: the port must be 1 to 65535")]
    Port(String),
    /// The host is neither an address nor a DNS name.
    #[error(
        "`{0}`: the host is not an IP address or a DNS name (a-z 0-9 - . _, at most 253 bytes)"
    )]
    Host(String),
}

/// Parses a service's origin, `HOST:PORT`: an IP literal (`[v6]:port` for
/// IPv6; a number form such as `0x7f.1` counts as the IPv4 literal a
/// resolver would read it as) or a DNS name, stored lowercase.
///
/// # Errors
/// What is wrong with it.
pub fn parse_origin(s: &str) -> Result<TargetAddr, OriginError> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return match addr.port() {
            0 => Err(OriginError::Port(s.to_owned())),
            _ => Ok(TargetAddr::Ip(addr)),
        };
    }
    let (host, port) = s.rsplit_once(':').ok_or_else(|| OriginError::Syntax(s.to_owned()))?;
    let port = match port.parse::<u16>() {
        Ok(p) if p > 0 => p,
        _ => return Err(OriginError::Port(s.to_owned())),
    };
    if let Some(ip) = parse_inet_aton(host) {
        return Ok(TargetAddr::Ip(SocketAddr::new(IpAddr::V4(ip), port)));
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    let ok = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_');
    if name.is_empty()
        || name.len() > MAX_NAME_LEN
        || !name.bytes().all(ok)
        || name.split('.').any(str::is_empty)
    {
        return Err(OriginError::Host(s.to_owned()));
    }
    Ok(TargetAddr::Domain(name.to_ascii_lowercase(), port))
}

/// Why a resolved address of a named origin may not be dialed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// In a range no rule opens.
    AlwaysDenied(IpNet),
    /// No allow rule covers it on this port.
    NotAllowed,
}

/// The `allow` rules that open resolved addresses of named origins.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowList {
    rules: Vec<PolicyRule>,
}

impl AllowList {
    /// The list of `rules`.
    pub fn new(rules: Vec<PolicyRule>) -> AllowList {
        AllowList { rules }
    }

    /// Whether a named origin's resolved `ip` may be dialed on `port`.
    ///
    /// # Errors
    /// Why not.
    pub fn check(&self, ip: IpAddr, port: u16) -> Result<(), Refusal> {
        if let Some(range) = always_denied(ip) {
            return Err(Refusal::AlwaysDenied(range));
        }
        let covered = |a: IpAddr| self.rules.iter().any(|r| r.matches(a, port));
        if allowed_in_every_form(ip, covered) {
            Ok(())
        } else {
            Err(Refusal::NotAllowed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(rules: &[&str]) -> AllowList {
        AllowList::new(rules.iter().map(|r| r.parse().unwrap()).collect())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn origins_parse_as_literals_or_lowercase_names() {
        let lit = |s: &str| TargetAddr::Ip(s.parse().unwrap());
        assert_eq!(parse_origin("127.0.0.1:8080"), Ok(lit("127.0.0.1:8080")));
        assert_eq!(parse_origin("[::1]:80"), Ok(lit("[::1]:80")));
        assert_eq!(parse_origin("0x7f.1:80"), Ok(lit("127.0.0.1:80")));
        assert_eq!(
            parse_origin("App.Internal.:443"),
            Ok(TargetAddr::Domain("app.internal".into(), 443))
        );
        for bad in ["app", "app:0", "app:65536", ":80", "a..b:80", "a b:80", "::1:80", "[::1]:0"] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
        assert!(parse_origin(&format!("{}:80", "a".repeat(254))).is_err());
    }

    #[test]
    fn deny_by_default_and_rules_cover_address_and_port() {
        assert_eq!(allow(&[]).check(ip("10.0.0.1"), 80), Err(Refusal::NotAllowed));
        let a = allow(&["10.0.0.0/8:80-443", "[fd12::/16]:8080"]);
        assert_eq!(a.check(ip("10.1.2.3"), 80), Ok(()));
        assert_eq!(a.check(ip("10.1.2.3"), 444), Err(Refusal::NotAllowed));
        assert_eq!(a.check(ip("11.0.0.1"), 80), Err(Refusal::NotAllowed));
        assert_eq!(a.check(ip("fd12::1"), 8080), Ok(()));
        // An IPv6 answer is judged by the IPv4 address it carries.
        assert_eq!(a.check(ip("::ffff:10.0.0.1"), 80), Ok(()));
        assert_eq!(allow(&["::/0"]).check(ip("::ffff:127.0.0.1"), 80), Err(Refusal::NotAllowed));
    }

    #[test]
    fn metadata_unspecified_broadcast_and_multicast_stay_denied_whatever_the_rules() {
        let all = allow(&["0.0.0.0/0", "::/0"]);
        for denied in [
            "169.254.169.254",
            "169.254.170.2",
            "168.63.129.16",
            "fd00:ec2::254",
            "0.0.0.0",
            "::",
            "255.255.255.255",
            "224.0.0.1",
            "ff02::1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(matches!(all.check(ip(denied), 80), Err(Refusal::AlwaysDenied(_))), "{denied}");
        }
        assert_eq!(all.check(ip("169.254.1.1"), 80), Ok(()), "only the metadata hosts");
    }
}
