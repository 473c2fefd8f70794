//! Exit-policy proofs (DESIGN.md §6) through a real exit [`Node`]: for every
//! default-denied range, a `ConnectRequest` for it in every form it can take —
//! literal, IPv6 wrappings of IPv4, numeric spellings of IPv4 in domain form,
//! names resolving into it, names resolving to a mix — is answered the right
//! status, and no `ConnectOrigin` ever names a denied address.
//!
//! Whether an address is denied is judged by [`oracle_denies`], written here
//! from the standard library's address classes and DESIGN.md §6's text, not
//! from `policy.rs`, so a mistake in one shows up against the other.
//!
//! [`Node`]: meshproxy_core::Node

// Helpers outside `#[test]` fns may unwrap too: a panic there is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use core::time::Duration;
use meshproxy_core::io::{Event, Input, Output, Protocol, ResolveError};
use meshproxy_core::policy::default_denied_ranges;
use meshproxy_core::target::{Status, TargetAddr};
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// DESIGN.md §6, "Exit policy denies by default", written out by hand.
const DESIGN_RANGES: [&str; 18] = [
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
];

const PORT: u16 = 443;

fn own_v4() -> IpAddr {
    public_ip(200)
}

fn own_v6() -> IpAddr {
    "2001:db8::5".parse().unwrap()
}

/// A public address no form of which is denied.
fn allowed_ip() -> IpAddr {
    public_ip(7)
}

// ------------------------------------------------------------------ oracle

/// DESIGN.md §6's IPv4 ranges, from std's address classes where it has one.
fn oracle_v4_denied(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    a == 0 // 0.0.0.0/8, "this network"
        || ip.is_private() // 10/8, 172.16/12, 192.168/16
        || (a == 100 && (64..128).contains(&b)) // 100.64/10, shared (CGNAT)
        || ip.is_loopback() // 127/8
        || ip.is_link_local() // 169.254/16
        || (a, b, c) == (192, 0, 0) // 192.0.0/24, IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // 198.18/15, benchmarking
        || ip.is_multicast() // 224/4
        || a >= 240 // 240/4, reserved (and the broadcast address)
        || ip == Ipv4Addr::new(168, 63, 129, 16) // Azure WireServer (beyond DESIGN.md)
}

/// DESIGN.md §6's IPv6 ranges, judged on the address itself.
fn oracle_v6_denied(ip: Ipv6Addr) -> bool {
    ip.is_unspecified()
        || ip.is_loopback()
        || (ip.segments()[0] & 0xfe00) == 0xfc00 // fc00::/7, unique local
        || ip.is_unicast_link_local() // fe80::/10
        || (ip.segments()[0] & 0xffc0) == 0xfec0 // fec0::/10, site-local (beyond DESIGN.md)
        || ip.is_multicast() // ff00::/8
}

/// Every IPv4 address an IPv6 address may reach, per the embeddings the
/// policy's docs promise to judge: mapped, SIIT, compatible, NAT64
/// (well-known and local-use, every RFC 6052 reading) and 6to4.
fn oracle_carried(ip: Ipv6Addr) -> Vec<Ipv4Addr> {
    let o = ip.octets();
    let s = ip.segments();
    let low = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    if s[..5] == [0, 0, 0, 0, 0] && s[5] == 0xffff {
        return vec![low]; // ::ffff:a.b.c.d
    }
    if s[..4] == [0, 0, 0, 0] && s[4] == 0xffff && s[5] == 0 {
        return vec![low]; // ::ffff:0:a.b.c.d
    }
    if s[..6] == [0; 6] {
        // ::a.b.c.d, except IPv6's own :: and ::1
        return if u128::from(ip) <= 1 { vec![] } else { vec![low] };
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
    vec![]
}

/// Whether the test exit (own addresses [`own_v4`], [`own_v6`], default
/// policy) must refuse `ip`.
fn oracle_denies(ip: IpAddr) -> bool {
    let own = |a: IpAddr| a == own_v4() || a == own_v6();
    match ip {
        IpAddr::V4(v4) => own(ip) || oracle_v4_denied(v4),
        IpAddr::V6(v6) => {
            own(ip)
                || oracle_v6_denied(v6)
                || oracle_carried(v6)
                    .into_iter()
                    .any(|v4| oracle_v4_denied(v4) || own(IpAddr::V4(v4)))
        }
    }
}

// --------------------------------------------------------- address forms

fn mapped(v4: Ipv4Addr) -> IpAddr {
    IpAddr::V6(v4.to_ipv6_mapped())
}

fn translated(v4: Ipv4Addr) -> IpAddr {
    let [a, b, c, d] = v4.octets();
    IpAddr::V6(Ipv6Addr::from([0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, a, b, c, d]))
}

fn compatible(v4: Ipv4Addr) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from(u128::from(u32::from(v4))))
}

fn nat64(v4: Ipv4Addr) -> IpAddr {
    let [a, b, c, d] = v4.octets();
    IpAddr::V6(Ipv6Addr::from([0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0, a, b, c, d]))
}

fn local_nat64(v4: Ipv4Addr) -> IpAddr {
    let [a, b, c, d] = v4.octets();
    IpAddr::V6(Ipv6Addr::from([0, 0x64, 0xff, 0x9b, 0, 1, 0, 0, 0, 0, 0, 0, a, b, c, d]))
}

fn six_to_four(v4: Ipv4Addr) -> IpAddr {
    let [a, b, c, d] = v4.octets();
    IpAddr::V6(Ipv6Addr::from([0x20, 0x02, a, b, c, d, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]))
}

/// Every IPv6 form that carries `v4`, named.
fn wrappings(v4: Ipv4Addr) -> [(&'static str, IpAddr); 6] {
    [
        ("mapped", mapped(v4)),
        ("translated", translated(v4)),
        ("compatible", compatible(v4)),
        ("nat64", nat64(v4)),
        ("local nat64", local_nat64(v4)),
        ("6to4", six_to_four(v4)),
    ]
}

/// Ways to write `v4` as a "domain" that `inet_aton`-style resolvers read as
/// the address: dotted quad, decimal, octal, hex (whole and per part), short
/// forms, a trailing dot.
fn spellings(v4: Ipv4Addr) -> Vec<String> {
    let n = u32::from(v4);
    let [a, b, c, d] = v4.octets();
    vec![
        format!("{v4}"),
        format!("{n}"),
        format!("0{n:o}"),
        format!("{n:#x}"),
        format!("0{a:o}.0{b:o}.0{c:o}.0{d:o}"),
        format!("{a:#x}.{b:#x}.{c:#x}.{d:#x}"),
        format!("0X{a:X}.{b}.{c}.{d}"),
        format!("{a}.{}", n & 0x00ff_ffff),
        format!("{a}.{b}.{}", n & 0xffff),
        format!("{a}.{b}.{c}.{d}."),
    ]
}

/// The first, a middle and the last address of a range.
fn samples(net: &str) -> [IpAddr; 3] {
    let (addr, prefix) = net.split_once('/').unwrap();
    let prefix: u32 = prefix.parse().unwrap();
    match addr.parse::<IpAddr>().unwrap() {
        IpAddr::V4(a) => {
            let first = u32::from(a);
            let size_minus_one = u32::MAX.checked_shr(prefix).unwrap_or(0);
            let last = first | size_minus_one;
            let mid = first + size_minus_one / 2 + u32::from(size_minus_one > 0);
            [first, mid, last].map(|x| IpAddr::V4(Ipv4Addr::from(x)))
        }
        IpAddr::V6(a) => {
            let first = u128::from(a);
            let size_minus_one = u128::MAX.checked_shr(prefix).unwrap_or(0);
            let last = first | size_minus_one;
            let mid = first + size_minus_one / 2 + u128::from(size_minus_one > 0);
            [first, mid, last].map(|x| IpAddr::V6(Ipv6Addr::from(x)))
        }
    }
}

fn v4_samples() -> Vec<(&'static str, Ipv4Addr)> {
    let mut out = Vec::new();
    for net in DESIGN_RANGES {
        for ip in samples(net) {
            if let IpAddr::V4(v4) = ip {
                out.push((net, v4));
            }
        }
    }
    out
}

fn all_samples() -> Vec<(&'static str, IpAddr)> {
    DESIGN_RANGES.iter().flat_map(|net| samples(net).map(|ip| (*net, ip))).collect()
}

// ---------------------------------------------------------------- driving

/// How the test plays the resolver.
type Dns<'a> = &'a dyn Fn(&str) -> Result<Vec<IpAddr>, ResolveError>;

/// What one CONNECT to an exit came to.
#[derive(Debug)]
struct Outcome {
    status: Option<Status>,
    /// Every origin dial, in order.
    dialed: Vec<SocketAddr>,
    /// Every `ExitDenied` event's address.
    denied: Vec<Option<IpAddr>>,
    /// Every name sent to the resolver.
    looked_up: Vec<String>,
}

fn exit() -> Harness {
    let mut config = exit_config(exit_id(1));
    if let Some(exit) = config.exit.as_mut() {
        exit.own_addrs = vec![own_v4(), own_v6()];
    }
    // Behind the harness hub, so the request's ticket is honoured.
    exit_behind_hub(config, 7).0
}

/// Sends `target` to a fresh exit as a client peer would, answers its DNS
/// lookups with `dns` and every origin dial with success (`origins_up`) or a
/// refusal, and lets a minute pass so any late dial would show.
fn connect(target: &TargetAddr, dns: Dns<'_>, origins_up: bool) -> Outcome {
    let mut h = exit();
    let stream = h.outside_stream();
    let outs =
        h.input(Input::InboundStream { stream, peer: client_id(), protocol: Protocol::Proxy });
    assert!(outs.is_empty(), "{outs:?}");
    let mut pending = h.data(stream, request_bytes(&ticketed(target.clone())));
    for _ in 0..64 {
        let mut next = Vec::new();
        for o in &pending {
            match o {
                Output::Resolve { query, name } => {
                    let result = dns(name);
                    next.extend(h.input(Input::Resolved { query: *query, result }));
                }
                Output::ConnectOrigin { stream: origin, .. } => {
                    let input = if origins_up {
                        Input::OriginConnected { stream: *origin }
                    } else {
                        Input::OriginFailed { stream: *origin, status: Status::ConnectionRefused }
                    };
                    next.extend(h.input(input));
                }
                _ => {}
            }
        }
        if next.is_empty() {
            break;
        }
        pending = next;
    }
    h.advance(Duration::from_secs(60));
    let sent = sent_on(&h.log, stream);
    let outcome = Outcome {
        status: (!sent.is_empty()).then(|| decode_response(&sent).status),
        dialed: origins(&h.log).into_iter().map(|(_, a)| a).collect(),
        denied: events(&h.log)
            .into_iter()
            .filter_map(|e| match e {
                Event::ExitDenied { ip } => Some(ip),
                _ => None,
            })
            .collect(),
        looked_up: resolves(&h.log).into_iter().map(|(_, n)| n).collect(),
    };
    for addr in &outcome.dialed {
        assert!(!oracle_denies(addr.ip()), "{target}: the exit dialed denied {addr}");
    }
    outcome
}

fn no_dns(name: &str) -> Result<Vec<IpAddr>, ResolveError> {
    panic!("{name} was sent to the resolver")
}

/// A refusal by policy: 0x02, one `ExitDenied` naming `first`, nothing dialed.
fn assert_denied(out: &Outcome, first: IpAddr, what: &str) {
    assert_eq!(out.status, Some(Status::NotAllowed), "{what}: {out:?}");
    assert_eq!(out.status.map(|s| s as u8), Some(0x02), "{what}");
    assert_eq!(out.denied, vec![Some(first)], "{what}");
    assert!(out.dialed.is_empty(), "{what}: dialed {:?}", out.dialed);
}

// ------------------------------------------------------------------- tests

#[test]
fn the_default_deny_list_is_exactly_design_section_6() {
    let listed: Vec<String> = default_denied_ranges().iter().map(ToString::to_string).collect();
    assert_eq!(listed, DESIGN_RANGES);
    // The oracle agrees with the list at every sample, and just outside it.
    for (net, ip) in all_samples() {
        assert!(oracle_denies(ip), "oracle lets {ip} of {net} through");
    }
    for outside in ["1.0.0.0", "9.255.255.255", "11.0.0.0", "100.63.255.255", "100.128.0.0"]
        .into_iter()
        .chain(["126.255.255.255", "128.0.0.0", "169.253.255.255", "169.255.0.0"])
        .chain(["172.15.255.255", "172.32.0.0", "192.0.1.0", "192.167.255.255"])
        .chain(["192.169.0.0", "198.17.255.255", "198.20.0.0", "223.255.255.255"])
        .chain(["1::", "::1:0:0:0", "fbff:ffff::", "fe00::", "fe7f:ffff::", "2001:db8::1"])
        .chain(["168.63.129.15", "168.63.129.17"])
    {
        let ip: IpAddr = outside.parse().unwrap();
        assert!(!oracle_denies(ip), "oracle denies {ip}");
    }
}

#[test]
fn first_middle_and_last_address_of_every_range_is_refused_as_a_literal() {
    let mut checked = 0;
    for (net, ip) in all_samples() {
        let out = connect(&ip_target(ip, PORT), &no_dns, true);
        assert_denied(&out, ip, &format!("{ip} of {net}"));
        checked += 1;
    }
    assert_eq!(checked, 3 * DESIGN_RANGES.len());
}

#[test]
fn every_ipv4_range_is_refused_in_every_ipv6_wrapping() {
    for (net, v4) in v4_samples() {
        for (form, ip) in wrappings(v4) {
            let out = connect(&ip_target(ip, PORT), &no_dns, true);
            assert_denied(&out, ip, &format!("{form} {ip} of {net}"));
        }
    }
}

#[test]
fn numeric_spellings_in_domain_form_are_refused_without_dns() {
    for (net, v4) in v4_samples() {
        for name in spellings(v4) {
            let out = connect(&domain_target(&name, PORT), &no_dns, true);
            assert_denied(&out, IpAddr::V4(v4), &format!("{name:?} ({v4} of {net})"));
            assert!(out.looked_up.is_empty());
        }
    }
    // The same spellings of a public address are read as that address and dialed.
    let IpAddr::V4(public) = allowed_ip() else { unreachable!() };
    for name in spellings(public) {
        let out = connect(&domain_target(&name, PORT), &no_dns, true);
        assert_eq!(out.status, Some(Status::Succeeded), "{name}");
        assert_eq!(out.dialed, vec![SocketAddr::new(allowed_ip(), PORT)], "{name}");
    }
}

#[test]
fn a_name_resolving_only_into_a_range_is_refused() {
    for (net, ip) in all_samples() {
        let dns = |_: &str| Ok(vec![ip]);
        let out = connect(&domain_target("inside.example", PORT), &dns, true);
        assert_denied(&out, ip, &format!("name -> {ip} of {net}"));
        assert_eq!(out.looked_up, vec!["inside.example".to_string()]);
    }
    for (net, v4) in v4_samples() {
        for (form, ip) in wrappings(v4) {
            let dns = |_: &str| Ok(vec![ip]);
            let out = connect(&domain_target("wrapped.example", PORT), &dns, true);
            assert_denied(&out, ip, &format!("name -> {form} {ip} of {net}"));
        }
    }
}

#[test]
fn a_name_whose_answers_are_all_denied_gets_0x02_and_no_dial_at_all() {
    let every: Vec<IpAddr> = all_samples().into_iter().map(|(_, ip)| ip).collect();
    for (net, ip) in all_samples() {
        // This range first, then every other denied sample.
        let mut answers = vec![ip];
        answers.extend(every.iter().copied().filter(|a| *a != ip));
        let dns = |_: &str| Ok(answers.clone());
        let out = connect(&domain_target("all-denied.example", PORT), &dns, true);
        assert_denied(&out, ip, &format!("all denied, {ip} of {net} first"));
    }
}

#[test]
fn a_name_resolving_to_denied_allowed_denied_dials_only_the_allowed_one() {
    let allowed = SocketAddr::new(allowed_ip(), PORT);
    for (net, ip) in all_samples() {
        let before = ip;
        let after = samples(net)[2];
        let dns = |_: &str| Ok(vec![before, allowed_ip(), after]);
        let what = format!("[{before}, {}, {after}] of {net}", allowed_ip());
        // It must be dialed, and it is the only one.
        let out = connect(&domain_target("mixed.example", PORT), &dns, true);
        assert_eq!(out.status, Some(Status::Succeeded), "{what}");
        assert_eq!(out.dialed, vec![allowed], "{what}");
        assert!(out.denied.is_empty(), "a partly denied answer is not a denial: {what}");
        // Its failure is the answer: the denied ones are never tried instead.
        let out = connect(&domain_target("mixed.example", PORT), &dns, false);
        assert_eq!(out.status, Some(Status::ConnectionRefused), "{what}");
        assert_eq!(out.dialed, vec![allowed], "{what}");
    }
}

#[test]
fn the_exits_own_addresses_are_refused_in_every_form() {
    let IpAddr::V4(own4) = own_v4() else { unreachable!() };
    let mut forms: Vec<(String, TargetAddr, IpAddr)> = vec![
        ("v4 literal".into(), ip_target(own_v4(), PORT), own_v4()),
        ("v6 literal".into(), ip_target(own_v6(), PORT), own_v6()),
    ];
    for (form, ip) in wrappings(own4) {
        forms.push((form.into(), ip_target(ip, PORT), ip));
    }
    for name in spellings(own4) {
        forms.push((format!("spelled {name:?}"), domain_target(&name, PORT), own_v4()));
    }
    for (what, target, first) in &forms {
        let out = connect(target, &no_dns, true);
        assert_denied(&out, *first, what);
    }
    for own in [own_v4(), own_v6(), mapped(own4), nat64(own4)] {
        let dns = |_: &str| Ok(vec![own]);
        let out = connect(&domain_target("me.example", PORT), &dns, true);
        assert_denied(&out, own, &format!("name -> {own}"));
        let dns = |_: &str| Ok(vec![own, allowed_ip()]);
        let out = connect(&domain_target("me-and-public.example", PORT), &dns, true);
        assert_eq!(out.dialed, vec![SocketAddr::new(allowed_ip(), PORT)], "{own}");
    }
    // The neighbours of the exit's own address are ordinary public addresses.
    let next = IpAddr::V4(Ipv4Addr::from(u32::from(own4) + 1));
    let out = connect(&ip_target(next, PORT), &no_dns, true);
    assert_eq!(out.dialed, vec![SocketAddr::new(next, PORT)]);
}

/// DNS answers that change between check and dial: in the core there is no
/// second lookup to change — the address checked is the address in
/// `ConnectOrigin`, and a later (rebound) answer to the same query is ignored.
#[test]
fn the_address_checked_is_the_address_dialed_and_late_answers_change_nothing() {
    let mut h = exit();
    let stream = h.outside_stream();
    h.input(Input::InboundStream { stream, peer: client_id(), protocol: Protocol::Proxy });
    let target = domain_target("rebind.example", PORT);
    let outs = h.data(stream, request_bytes(&ticketed(target.clone())));
    let [(query, _)] = resolves(&outs)[..] else { panic!("{outs:?}") };
    let outs = h.input(Input::Resolved { query, result: Ok(vec![allowed_ip()]) });
    let [(origin, addr)] = origins(&outs)[..] else { panic!("{outs:?}") };
    assert_eq!(addr, SocketAddr::new(allowed_ip(), PORT), "dialed exactly what was checked");
    // The name "rebinds" to loopback: a second answer to the same query.
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let outs = h.input(Input::Resolved { query, result: Ok(vec![loopback]) });
    assert!(outs.is_empty(), "a late answer is ignored: {outs:?}");
    // Even after the first dial fails: nothing is re-resolved or re-dialed.
    let outs = h.input(Input::OriginFailed { stream: origin, status: Status::ConnectionRefused });
    assert!(origins(&outs).is_empty() && resolves(&outs).is_empty(), "{outs:?}");
    assert_eq!(decode_response(&sent_on(&outs, stream)).status, Status::ConnectionRefused);
    let outs = h.input(Input::Resolved { query, result: Ok(vec![loopback]) });
    assert!(outs.is_empty(), "{outs:?}");
    assert_eq!(resolves(&h.log).len(), 1, "one lookup per session");
    // The next session for the same name gets the rebound answer, and is refused.
    let stream = h.outside_stream();
    h.input(Input::InboundStream { stream, peer: client_id(), protocol: Protocol::Proxy });
    let outs = h.data(stream, request_bytes(&ticketed(target)));
    let [(query, _)] = resolves(&outs)[..] else { panic!("{outs:?}") };
    let outs = h.input(Input::Resolved { query, result: Ok(vec![loopback]) });
    assert!(origins(&outs).is_empty());
    assert_eq!(decode_response(&sent_on(&outs, stream)).status, Status::NotAllowed);
    assert!(events(&outs).contains(&Event::ExitDenied { ip: Some(loopback) }));
    let dialed: Vec<SocketAddr> = origins(&h.log).into_iter().map(|(_, a)| a).collect();
    assert_eq!(dialed, vec![SocketAddr::new(allowed_ip(), PORT)]);
}

// ------------------------------------------------------------- properties

/// An IPv4 address, biased towards the ranges' edges half of the time.
fn any_v4() -> impl Strategy<Value = Ipv4Addr> {
    let edges: Vec<Ipv4Addr> = v4_samples()
        .into_iter()
        .flat_map(|(_, v4)| {
            let n = u32::from(v4);
            [n.wrapping_sub(1), n, n.wrapping_add(1)]
        })
        .map(Ipv4Addr::from)
        .collect();
    prop_oneof![any::<u32>().prop_map(Ipv4Addr::from), proptest::sample::select(edges)]
}

/// An IPv6 address: uniform, in a denied range, or wrapping an IPv4 address.
fn any_v6() -> impl Strategy<Value = Ipv6Addr> {
    let prefixed =
        |top: u128, bits: u32| any::<u128>().prop_map(move |r| Ipv6Addr::from(top | (r >> bits)));
    prop_oneof![
        any::<u128>().prop_map(Ipv6Addr::from),
        (0u128..4).prop_map(Ipv6Addr::from),
        prefixed(0xfc00 << 112, 7),
        prefixed(0xfe80 << 112, 10),
        prefixed(0xff00 << 112, 8),
        prefixed(0x2002 << 112, 16),
        prefixed(0x0064_ff9b_0001 << 80, 48),
        (any_v4(), 0usize..6).prop_map(|(v4, i)| match wrappings(v4)[i].1 {
            IpAddr::V6(v6) => v6,
            IpAddr::V4(_) => unreachable!(),
        }),
    ]
}

fn any_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any_v4().prop_map(IpAddr::V4),
        any_v6().prop_map(IpAddr::V6),
        Just(own_v4()),
        Just(own_v6()),
    ]
}

proptest! {
    #[test]
    fn an_arbitrary_literal_is_dialed_iff_the_oracle_allows_it(ip in any_ip(), port in 1u16..) {
        let out = connect(&ip_target(ip, port), &no_dns, true);
        if oracle_denies(ip) {
            prop_assert_eq!(out.status, Some(Status::NotAllowed));
            prop_assert_eq!(out.denied, vec![Some(ip)]);
            prop_assert!(out.dialed.is_empty());
        } else {
            prop_assert_eq!(out.status, Some(Status::Succeeded));
            prop_assert_eq!(out.dialed, vec![SocketAddr::new(ip, port)]);
            prop_assert!(out.denied.is_empty());
        }
    }

    #[test]
    fn an_arbitrary_ipv4_spelled_as_a_name_is_judged_as_the_address(
        v4 in any_v4(),
        spelling in any::<proptest::sample::Index>(),
    ) {
        let mut all = spellings(v4);
        let name = all.swap_remove(spelling.index(all.len()));
        let out = connect(&domain_target(&name, PORT), &no_dns, true);
        if oracle_denies(IpAddr::V4(v4)) {
            prop_assert_eq!(out.status, Some(Status::NotAllowed));
            prop_assert!(out.dialed.is_empty());
        } else {
            prop_assert_eq!(out.dialed, vec![SocketAddr::new(IpAddr::V4(v4), PORT)]);
        }
    }

    /// Whatever a name resolves to, the exit dials exactly the allowed
    /// answers, in the resolver's order (each dial refused so it moves on),
    /// and answers 0x02 without dialing when none is allowed.
    #[test]
    fn arbitrary_answers_are_dialed_exactly_when_allowed_in_order(
        answers in proptest::collection::vec(any_ip(), 1..6),
    ) {
        let dns = |_: &str| Ok(answers.clone());
        let out = connect(&domain_target("any.example", PORT), &dns, false);
        let allowed: Vec<SocketAddr> = answers
            .iter()
            .filter(|ip| !oracle_denies(**ip))
            .map(|ip| SocketAddr::new(*ip, PORT))
            .collect();
        prop_assert_eq!(&out.dialed, &allowed);
        if allowed.is_empty() {
            prop_assert_eq!(out.status, Some(Status::NotAllowed));
            prop_assert_eq!(out.denied, vec![Some(answers[0])]);
        } else {
            prop_assert_eq!(out.status, Some(Status::ConnectionRefused));
            prop_assert!(out.denied.is_empty());
        }
    }
}
