//! Where an app wants to go, and how an attempt to get there ended.

use core::fmt;
use std::net::{IpAddr, SocketAddr};

/// The longest domain name a target may carry (the SOCKS5 wire limit).
pub const MAX_DOMAIN_LEN: usize = 255;

/// A destination as the app named it: an IP literal or a domain name, with a port.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum TargetAddr {
    /// An IPv4 or IPv6 literal.
    Ip(SocketAddr),
    /// A name the exit resolves; 1..=255 bytes, as received (not normalised).
    Domain(String, u16),
}

impl TargetAddr {
    /// The destination port.
    pub fn port(&self) -> u16 {
        match self {
            TargetAddr::Ip(sa) => sa.port(),
            TargetAddr::Domain(_, p) => *p,
        }
    }

    /// The IP literal, if the target is one.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            TargetAddr::Ip(sa) => Some(sa.ip()),
            TargetAddr::Domain(..) => None,
        }
    }
}

impl fmt::Display for TargetAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetAddr::Ip(sa) => write!(f, "{sa}"),
            TargetAddr::Domain(d, p) => write!(f, "{d}:{p}"),
        }
    }
}

/// How a connect attempt ended, as the exit reports it in `ConnectResponse`.
/// The codes are the SOCKS5 reply codes (RFC 1928 §6) so a client can pass them
/// to the app unchanged.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
#[repr(u8)]
pub enum Status {
    /// Connected.
    Succeeded = 0x00,
    /// Any failure without a more precise code (also: the exit itself failed).
    GeneralFailure = 0x01,
    /// The exit's policy forbids this destination.
    NotAllowed = 0x02,
    /// No route to the destination's network.
    NetworkUnreachable = 0x03,
    /// The destination host is unreachable, or its name does not resolve.
    HostUnreachable = 0x04,
    /// The destination refused the connection.
    ConnectionRefused = 0x05,
    /// The connect attempt timed out.
    TtlExpired = 0x06,
    /// The command is not supported (SOCKS5 BIND / UDP ASSOCIATE).
    CommandNotSupported = 0x07,
    /// The address type is not supported.
    AddressTypeNotSupported = 0x08,
}

impl Status {
    /// The status for a SOCKS5 reply code, `None` for codes outside RFC 1928.
    pub fn from_code(code: u8) -> Option<Status> {
        Some(match code {
            0x00 => Status::Succeeded,
            0x01 => Status::GeneralFailure,
            0x02 => Status::NotAllowed,
            0x03 => Status::NetworkUnreachable,
            0x04 => Status::HostUnreachable,
            0x05 => Status::ConnectionRefused,
            0x06 => Status::TtlExpired,
            0x07 => Status::CommandNotSupported,
            0x08 => Status::AddressTypeNotSupported,
            _ => return None,
        })
    }

    /// The SOCKS5 reply code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Whether the failure says something about the destination rather than
    /// about the exit, so that trying another exit would not help.
    pub fn is_destination_failure(self) -> bool {
        matches!(
            self,
            Status::NotAllowed
                | Status::HostUnreachable
                | Status::ConnectionRefused
                | Status::CommandNotSupported
                | Status::AddressTypeNotSupported
        )
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Status::Succeeded => "succeeded",
            Status::GeneralFailure => "general failure",
            Status::NotAllowed => "not allowed by ruleset",
            Status::NetworkUnreachable => "network unreachable",
            Status::HostUnreachable => "host unreachable",
            Status::ConnectionRefused => "connection refused",
            Status::TtlExpired => "TTL expired / timed out",
            Status::CommandNotSupported => "command not supported",
            Status::AddressTypeNotSupported => "address type not supported",
        };
        f.write_str(s)
    }
}
