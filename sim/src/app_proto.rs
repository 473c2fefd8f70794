//! The client side of SOCKS5, SOCKS4a and HTTP CONNECT, as the simulated apps speak
//! it. Written independently of the core's server side on purpose: each
//! checks the other.

use meshproxy_core::target::TargetAddr;

/// The credentials simulated apps use on listeners that require them.
pub const USER: &str = "sim";
pub const PASSWORD: &str = "pw";

/// Everything an app sends before the proxy answers: greeting, optional
/// RFC 1929 authentication, and the CONNECT request.
pub fn socks5_handshake(target: &TargetAddr, username: Option<&str>) -> Vec<u8> {
    let mut out = Vec::new();
    match username {
        Some(user) => {
            out.extend_from_slice(&[5, 1, 2, 1, user.len() as u8]);
            out.extend_from_slice(user.as_bytes());
            out.push(PASSWORD.len() as u8);
            out.extend_from_slice(PASSWORD.as_bytes());
        }
        None => out.extend_from_slice(&[5, 1, 0]),
    }
    out.extend_from_slice(&[5, 1, 0]);
    match target {
        TargetAddr::Ip(std::net::SocketAddr::V4(sa)) => {
            out.push(1);
            out.extend_from_slice(&sa.ip().octets());
        }
        TargetAddr::Ip(std::net::SocketAddr::V6(sa)) => {
            out.push(4);
            out.extend_from_slice(&sa.ip().octets());
        }
        TargetAddr::Domain(name, _) => {
            out.push(3);
            out.push(name.len() as u8);
            out.extend_from_slice(name.as_bytes());
        }
    }
    out.extend_from_slice(&target.port().to_be_bytes());
    out
}

/// A SOCKS4 CONNECT request: plain SOCKS4 for an IPv4 target, SOCKS4a
/// (DSTIP `0.0.0.1`, the name after the user id) for a name or an IPv6
/// literal (written as text, which the proxy reads back as an address). The
/// username, if any, is the user id.
pub fn socks4a_request(target: &TargetAddr, username: Option<&str>) -> Vec<u8> {
    let mut out = vec![4, 1];
    out.extend_from_slice(&target.port().to_be_bytes());
    let name = match target {
        TargetAddr::Ip(std::net::SocketAddr::V4(sa)) => {
            out.extend_from_slice(&sa.ip().octets());
            None
        }
        TargetAddr::Ip(std::net::SocketAddr::V6(sa)) => Some(sa.ip().to_string()),
        TargetAddr::Domain(name, _) => Some(name.clone()),
    };
    if name.is_some() {
        out.extend_from_slice(&[0, 0, 0, 1]);
    }
    out.extend_from_slice(username.unwrap_or_default().as_bytes());
    out.push(0);
    if let Some(name) = name {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
    }
    out
}

/// The SOCKS4 reply code of every failure.
pub const SOCKS4_REJECTED: u8 = 0x5B;

/// Parses the 8-byte SOCKS4 reply; `None` until complete. A refusal is
/// reported with its code, [`SOCKS4_REJECTED`].
pub fn parse_socks4_reply(inbox: &[u8]) -> Option<Reply> {
    let reply = inbox.get(..8)?;
    Some(match (reply[0], reply[1]) {
        (0, 0x5A) => Reply::Success { used: 8 },
        (0, SOCKS4_REJECTED) => Reply::Failure { code: SOCKS4_REJECTED },
        _ => Reply::Garbage,
    })
}

/// An HTTP CONNECT request head.
pub fn http_connect(target: &TargetAddr, username: Option<&str>) -> Vec<u8> {
    let authority = match target {
        TargetAddr::Ip(std::net::SocketAddr::V6(sa)) => format!("[{}]:{}", sa.ip(), sa.port()),
        other => other.to_string(),
    };
    let mut head = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(user) = username {
        let creds = base64_encode(format!("{user}:{PASSWORD}").as_bytes());
        head.push_str(&format!("Proxy-Authorization: Basic {creds}\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

fn base64_encode(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in input.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// What the proxy answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Connected; this many bytes of the inbox were the reply.
    Success { used: usize },
    /// Refused with a SOCKS5 reply code (or the HTTP status mapped to one).
    Failure { code: u8 },
    /// The proxy's bytes are not a valid reply.
    Garbage,
}

/// Parses the SOCKS5 replies (method choice, auth status, CONNECT reply) off
/// the front of `inbox`; `None` until complete.
pub fn parse_socks5_reply(inbox: &[u8], authed: bool) -> Option<Reply> {
    let mut at = 0;
    let method = inbox.get(..2)?;
    if method[0] != 5 {
        return Some(Reply::Garbage);
    }
    match method[1] {
        0 if !authed => {}
        2 if authed => {
            let status = inbox.get(2..4)?;
            if status[0] != 1 {
                return Some(Reply::Garbage);
            }
            if status[1] != 0 {
                return Some(Reply::Failure { code: 0xff });
            }
            at = 2;
        }
        0xff => return Some(Reply::Failure { code: 0xff }),
        _ => return Some(Reply::Garbage),
    }
    at += 2;
    let head = inbox.get(at..at + 4)?;
    if head[0] != 5 || head[2] != 0 {
        return Some(Reply::Garbage);
    }
    let addr_len = match head[3] {
        1 => 4,
        4 => 16,
        3 => usize::from(*inbox.get(at + 4)?) + 1,
        _ => return Some(Reply::Garbage),
    };
    let end = at + 4 + addr_len + 2;
    if inbox.len() < end {
        return None;
    }
    Some(match head[1] {
        0 => Reply::Success { used: end },
        code => Reply::Failure { code },
    })
}

/// The SOCKS5 code an HTTP status stands for, as [`parse_http_reply`] reports it.
pub fn http_class(code: u8) -> u8 {
    match code {
        0x02 => 0x02,
        0x06 => 0x06,
        _ => 0x01,
    }
}

/// Parses an HTTP CONNECT response head; maps error statuses to the SOCKS5
/// code they stand for.
pub fn parse_http_reply(inbox: &[u8]) -> Option<Reply> {
    let end = inbox.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&inbox[..end]).ok();
    let code: Option<u16> =
        head.and_then(|h| h.split(' ').nth(1)).and_then(|c| c.trim().parse().ok());
    Some(match code {
        Some(200) => Reply::Success { used: end },
        Some(403) => Reply::Failure { code: 0x02 },
        Some(504) => Reply::Failure { code: 0x06 },
        Some(_) => Reply::Failure { code: 0x01 },
        None => Reply::Garbage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_examples() {
        assert_eq!(base64_encode(b"foob"), "Zm9vYg==");
        assert_eq!(base64_encode(b"fooba"), "Zm9vYmE=");
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn socks_reply_needs_every_byte() {
        let full = [5, 0, 5, 0, 0, 1, 0, 0, 0, 0, 0, 0, 9];
        for n in 0..12 {
            assert_eq!(parse_socks5_reply(&full[..n], false), None, "prefix {n}");
        }
        assert_eq!(parse_socks5_reply(&full, false), Some(Reply::Success { used: 12 }));
        let refused = [5, 0, 5, 5, 0, 1, 0, 0, 0, 0, 0, 0];
        assert_eq!(parse_socks5_reply(&refused, false), Some(Reply::Failure { code: 5 }));
    }

    #[test]
    fn socks4_request_and_reply() {
        let ip = TargetAddr::Ip("1.2.3.4:80".parse().unwrap());
        assert_eq!(socks4a_request(&ip, None), [4, 1, 0, 80, 1, 2, 3, 4, 0]);
        let name = TargetAddr::Domain("ab".into(), 443);
        assert_eq!(
            socks4a_request(&name, Some("u")),
            [4, 1, 1, 187, 0, 0, 0, 1, b'u', 0, b'a', b'b', 0]
        );
        let granted = [0, 0x5A, 0, 0, 0, 0, 0, 0, 9];
        for n in 0..8 {
            assert_eq!(parse_socks4_reply(&granted[..n]), None, "prefix {n}");
        }
        assert_eq!(parse_socks4_reply(&granted), Some(Reply::Success { used: 8 }));
        let refused = [0, 0x5B, 0, 0, 0, 0, 0, 0];
        assert_eq!(parse_socks4_reply(&refused), Some(Reply::Failure { code: 0x5B }));
        assert_eq!(parse_socks4_reply(&[5, 0x5A, 0, 0, 0, 0, 0, 0]), Some(Reply::Garbage));
    }

    #[test]
    fn http_reply() {
        assert_eq!(
            parse_http_reply(b"HTTP/1.1 200 OK\r\n\r\nxy"),
            Some(Reply::Success { used: 19 })
        );
        assert_eq!(parse_http_reply(b"HTTP/1.1 403 Forbidden\r\n"), None);
        assert_eq!(
            parse_http_reply(b"HTTP/1.1 403 Forbidden\r\n\r\n"),
            Some(Reply::Failure { code: 2 })
        );
    }
}
