//! An independent judge of what an exit must never dial, written from the
//! standard library's address classes rather than from the core's policy
//! tables, so a mistake in one is caught by the other.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

fn v4_forbidden(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || o[0] == 0
        || o[0] >= 240
        || (o[0] == 100 && (o[1] & 0xc0) == 64)
        || (o[0] == 192 && o[1] == 0 && o[2] == 0)
        || (o[0] == 198 && (o[1] & 0xfe) == 18)
}

/// Every IPv4 address an IPv6 address may reach: mapped `::ffff:a.b.c.d`,
/// SIIT `::ffff:0:a.b.c.d`, compatible `::a.b.c.d` (not `::`/`::1`), NAT64
/// `64:ff9b::/96`, local-use NAT64 `64:ff9b:1::/48` (all four RFC 6052
/// readings, since the exit cannot know the prefix length) and 6to4.
fn embedded_v4(ip: Ipv6Addr) -> Vec<Ipv4Addr> {
    let s = ip.segments();
    let o = ip.octets();
    let low = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return vec![v4];
    }
    if s[..6] == [0, 0, 0, 0, 0xffff, 0] {
        return vec![low];
    }
    if s[..6] == [0; 6] && u128::from(ip) > 1 {
        return vec![low];
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return vec![low];
    }
    if s[..3] == [0x64, 0xff9b, 1] {
        return vec![
            Ipv4Addr::new(o[6], o[7], o[9], o[10]),
            Ipv4Addr::new(o[7], o[9], o[10], o[11]),
            Ipv4Addr::new(o[9], o[10], o[11], o[12]),
            low,
        ];
    }
    if s[0] == 0x2002 {
        return vec![Ipv4Addr::new(o[2], o[3], o[4], o[5])];
    }
    Vec::new()
}

/// Whether an exit at `own` must never connect to `ip`.
pub fn forbidden(ip: IpAddr, own: IpAddr) -> bool {
    if ip == own {
        return true;
    }
    match ip {
        IpAddr::V4(v4) => v4_forbidden(v4),
        IpAddr::V6(v6) => {
            v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || v6.is_unicast_link_local()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || embedded_v4(v6).into_iter().any(|v4| v4_forbidden(v4) || IpAddr::V4(v4) == own)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judges_the_classic_ssrf_targets() {
        let own: IpAddr = "52.1.0.1".parse().unwrap();
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "169.254.169.254",
            "::1",
            "fd00::1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "::ffff:0:a00:1",
            "::a00:1",
            "64:ff9b:1::a00:1",
            "2002:a00:1::1",
            "0.0.0.0",
            "52.1.0.1",
        ] {
            assert!(forbidden(bad.parse().unwrap(), own), "{bad}");
        }
        for good in ["52.0.1.1", "8.8.8.8", "2a00:1450::1"] {
            assert!(!forbidden(good.parse().unwrap(), own), "{good}");
        }
    }
}
