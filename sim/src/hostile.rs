//! The exit-policy destinations (issue #5, "Exit-policy proofs"): every range
//! DESIGN.md §6 denies by default, in every form an app can ask for it —
//! literal IPv4/IPv6 (first, a middle and the last address), the IPv6 forms
//! that carry an IPv4 address (mapped, SIIT, compatible, NAT64, local-use
//! NAT64, 6to4), numeric IPv4 spellings in domain form (`2130706433`,
//! `0177.0.0.1`, `0x7f.0.0.1`, `127.1`), names resolving only into denied
//! ranges, names resolving to `[denied, public, denied]`, and *rebinding*
//! names whose answer changes from one lookup to the next.
//!
//! The `private`, `private_name` and `mixed_name` destination kinds draw from
//! these tables; the simulated DNS answers rebinding names through
//! [`lookup`]. Every denied literal hosts a live echo in the simulation, so a
//! policy hole would "work" and be seen by the outcome checks as well as by
//! the policy oracle on every dial.

use crate::plan::AppSpec;
use crate::scenario::OriginKind;
use meshproxy_core::ids::QueryId;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The port of every denied literal and name.
pub(crate) const DENIED_PORT: u16 = 80;

/// DESIGN.md §6, "Exit policy denies by default", written out by hand.
const RANGES: [&str; 16] = [
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
    "::/128",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
];

/// How many `[denied, public, denied]` names there are per public echo.
const MIXED_PER_ECHO: usize = 8;

/// The first, a middle and the last address of `net` (`a.b.c.d/n` or `x::/n`).
fn samples(net: &str) -> Vec<IpAddr> {
    let Some((addr, prefix)) = net.split_once('/') else { return Vec::new() };
    let (Ok(addr), Ok(prefix)) = (addr.parse::<IpAddr>(), prefix.parse::<u32>()) else {
        return Vec::new();
    };
    match addr {
        IpAddr::V4(a) => {
            let first = u32::from(a);
            let rest = u32::MAX.checked_shr(prefix).unwrap_or(0);
            let mid = first + rest / 2 + u32::from(rest > 0);
            [first, mid, first | rest].map(|x| IpAddr::V4(Ipv4Addr::from(x))).to_vec()
        }
        IpAddr::V6(a) => {
            let first = u128::from(a);
            let rest = u128::MAX.checked_shr(prefix).unwrap_or(0);
            let mid = first + rest / 2 + u128::from(rest > 0);
            [first, mid, first | rest].map(|x| IpAddr::V6(Ipv6Addr::from(x))).to_vec()
        }
    }
}

/// The addresses attackers actually aim at (loopback, the cloud metadata
/// service, the usual gateways), besides the ranges' edges.
const CLASSIC_V4: [[u8; 4]; 6] = [
    [127, 0, 0, 1],
    [169, 254, 169, 254],
    [10, 0, 0, 1],
    [192, 168, 0, 1],
    [172, 16, 0, 1],
    [100, 64, 0, 1],
];

/// The IPv4 samples of every range, then the classic targets.
fn samples_v4() -> Vec<Ipv4Addr> {
    RANGES
        .iter()
        .flat_map(|n| samples(n))
        .filter_map(|ip| match ip {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
        .chain(CLASSIC_V4.map(Ipv4Addr::from))
        .collect()
}

/// The IPv6 addresses that reach `v4`: mapped, SIIT-translated, compatible,
/// NAT64 (well-known and local-use /96) and 6to4.
fn wrappings(v4: Ipv4Addr) -> [IpAddr; 6] {
    let [a, b, c, d] = v4.octets();
    let v6 = |o: [u8; 16]| IpAddr::V6(Ipv6Addr::from(o));
    [
        v6([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d]),
        v6([0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, a, b, c, d]),
        v6([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, a, b, c, d]),
        v6([0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0, a, b, c, d]),
        v6([0, 0x64, 0xff, 0x9b, 0, 1, 0, 0, 0, 0, 0, 0, a, b, c, d]),
        v6([0x20, 0x02, a, b, c, d, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
    ]
}

/// `v4` written the ways `inet_aton`-style resolvers read as an address.
fn spellings(v4: Ipv4Addr) -> [String; 7] {
    let n = u32::from(v4);
    let [a, b, c, d] = v4.octets();
    [
        format!("{v4}"),
        format!("{n}"),
        format!("0{n:o}"),
        format!("0{a:o}.0{b:o}.0{c:o}.0{d:o}"),
        format!("{a:#x}.{b:#x}.{c:#x}.{d:#x}"),
        format!("{a}.{}", n & 0x00ff_ffff),
        format!("{a}.{b}.{}", n & 0xffff),
    ]
}

/// Every denied address: each range's samples and the IPv6 wrappings of
/// each IPv4 sample.
fn denied_ips() -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = RANGES.iter().flat_map(|n| samples(n)).collect();
    out.extend(CLASSIC_V4.map(|o| IpAddr::V4(Ipv4Addr::from(o))));
    out.extend(samples_v4().into_iter().flat_map(wrappings));
    out
}

/// Every literal destination the exits must refuse.
pub(crate) fn denied_literals() -> Vec<SocketAddr> {
    denied_ips().into_iter().map(|ip| SocketAddr::new(ip, DENIED_PORT)).collect()
}

/// Names that resolve only to denied addresses, one per denied address.
fn denied_only_name(i: usize) -> String {
    format!("denied-{i}.sim")
}

/// Names whose answers rotate among all-denied sets.
fn rebinding_denied_name(i: usize) -> String {
    format!("rebind-denied-{i}.sim")
}

/// The rotating answers of [`rebinding_denied_name`]`(i)`.
fn rebinding_denied_answers(i: usize) -> Vec<Vec<IpAddr>> {
    let ips = denied_ips();
    let at = |k: usize| ips[(i * 7 + k) % ips.len()];
    vec![vec![at(0)], vec![at(1), at(2)], vec![at(3)], vec![at(4), at(5), at(6)]]
}

const REBINDING_NAMES: usize = 8;

/// Every "domain" the exits must refuse: numeric spellings of the IPv4
/// samples, names resolving only to denied addresses, rebinding names.
pub(crate) fn denied_names() -> Vec<String> {
    let mut out: Vec<String> = samples_v4().into_iter().flat_map(spellings).collect();
    out.extend((0..denied_ips().len()).map(denied_only_name));
    out.extend((0..REBINDING_NAMES).map(rebinding_denied_name));
    out
}

/// The `j`th `[denied, public, denied]` name of public echo `v`.
fn mixed_name(v: u32, j: usize) -> String {
    format!("mixed3-{v}-{j}.sim")
}

/// The rebinding name of public echo `v`: its answers always hold the public
/// address, among different denied ones from lookup to lookup.
fn rebinding_mixed_name(v: u32) -> String {
    format!("rebind-mixed-{v}.sim")
}

fn rebinding_mixed_answers(v: u32, public: IpAddr) -> Vec<Vec<IpAddr>> {
    let ips = denied_ips();
    let at = |k: usize| ips[(v as usize * 11 + k) % ips.len()];
    vec![vec![public], vec![at(0), public, at(1)], vec![at(2), at(3), public], vec![public, at(4)]]
}

/// Picks one of `items` for an app: the variant alone (0..16) would reach
/// only the first few, so the payload size spreads the choice.
fn pick<T: Clone>(items: &[T], spec: &AppSpec) -> Option<T> {
    let len = items.len();
    if len == 0 {
        return None;
    }
    // An odd multiplier keeps the choice independent of the variant's
    // residues (the `mixed_name` kind also keys its public echo on them).
    let mix = u64::from(spec.size).wrapping_mul(0x9e37_79b9).wrapping_add(u64::from(spec.variant));
    items.get((mix % len as u64) as usize).cloned()
}

/// A literal destination of kind `private`: one of `classic`, or any denied literal.
pub(crate) fn literal_for(spec: &AppSpec, classic: &[SocketAddr]) -> Option<SocketAddr> {
    let mut all = classic.to_vec();
    all.extend(denied_literals());
    pick(&all, spec)
}

/// A name of kind `private_name`: one of `classic`, or any denied name.
pub(crate) fn name_for(spec: &AppSpec, classic: &[&str]) -> Option<String> {
    let mut all: Vec<String> = classic.iter().map(|s| s.to_string()).collect();
    all.extend(denied_names());
    pick(&all, spec)
}

/// A name of kind `mixed_name` for public echo `v` (0..4): the classic
/// `[private, public]` name, a `[denied, public, denied]` one, or the
/// rebinding one.
pub(crate) fn mixed_for(spec: &AppSpec, v: u32, classic: String) -> String {
    let mut all = vec![classic, rebinding_mixed_name(v)];
    all.extend((0..MIXED_PER_ECHO).map(|j| mixed_name(v, j)));
    pick(&all, spec).unwrap_or_else(|| rebinding_mixed_name(v))
}

/// Adds the hostile destinations to the simulated world: an echo host on
/// every denied literal and the DNS entries of every name above. A rebinding
/// name's entry is the union of its answers (what the routing check may see
/// dialed); [`lookup`] gives the answer of the moment. `public(v)` is public
/// echo `v`'s address (v in 0..4).
pub(crate) fn extend(
    hosts: &mut Vec<(SocketAddr, OriginKind)>,
    dns: &mut BTreeMap<String, Vec<IpAddr>>,
    public: impl Fn(u32) -> IpAddr,
) {
    hosts.extend(denied_literals().into_iter().map(|a| (a, OriginKind::Echo)));
    let ips = denied_ips();
    for (i, ip) in ips.iter().enumerate() {
        dns.insert(denied_only_name(i), vec![*ip]);
    }
    for i in 0..REBINDING_NAMES {
        dns.insert(rebinding_denied_name(i), union(&rebinding_denied_answers(i)));
    }
    for v in 0..4 {
        let p = public(v);
        for j in 0..MIXED_PER_ECHO {
            let before = ips[(v as usize * MIXED_PER_ECHO + j) % ips.len()];
            let after = ips[(v as usize * MIXED_PER_ECHO + j + ips.len() / 2) % ips.len()];
            dns.insert(mixed_name(v, j), vec![before, p, after]);
        }
        dns.insert(rebinding_mixed_name(v), union(&rebinding_mixed_answers(v, p)));
    }
}

fn union(answers: &[Vec<IpAddr>]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    for ip in answers.iter().flatten() {
        if !out.contains(ip) {
            out.push(*ip);
        }
    }
    out
}

/// The simulated DNS answer to lookup `query` of `name`: a rebinding name
/// answers differently from one lookup to the next (rotating with the query
/// id); any other name answers its `dns` entry.
pub(crate) fn lookup(
    dns: &BTreeMap<String, Vec<IpAddr>>,
    name: &str,
    query: QueryId,
) -> Option<Vec<IpAddr>> {
    let rotation = if let Some(i) = strip(name, "rebind-denied-") {
        (i < REBINDING_NAMES).then(|| rebinding_denied_answers(i))
    } else if let Some(v) = strip(name, "rebind-mixed-") {
        let public = dns.get(name).and_then(|u| u.iter().find(|ip| !is_denied_sample(**ip)));
        match (u32::try_from(v), public) {
            (Ok(v), Some(p)) if v < 4 => Some(rebinding_mixed_answers(v, *p)),
            _ => None,
        }
    } else {
        None
    };
    match rotation {
        Some(answers) if !answers.is_empty() => {
            answers.get(query.0 as usize % answers.len()).cloned()
        }
        _ => dns.get(name).cloned(),
    }
}

/// `rebind-…-<n>.sim` → n.
fn strip(name: &str, prefix: &str) -> Option<usize> {
    name.strip_prefix(prefix)?.strip_suffix(".sim")?.parse().ok()
}

fn is_denied_sample(ip: IpAddr) -> bool {
    denied_ips().contains(&ip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::PlanItem;
    use meshproxy_core::target::TargetAddr;
    use std::collections::BTreeSet;

    /// Across its default seeds, `scenarios/exit_policy.toml` asks for every
    /// denied literal, every denied name and every mixed name at least once.
    #[test]
    fn the_exit_policy_scenario_reaches_every_destination_across_its_seeds() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/exit_policy.toml");
        let s = match crate::scenario::load_file(&path) {
            Ok(s) => s,
            Err(e) => panic!("exit_policy.toml: {e}"),
        };
        let mut seen = BTreeSet::new();
        for seed in 0..u64::from(s.seeds) {
            let plan = crate::plan::generate(&s, &mut crate::rng_for(seed, 0));
            for item in &plan.items {
                if let PlanItem::App(spec) = item {
                    seen.insert(crate::topology::target_for(spec));
                }
            }
        }
        let mut missing: Vec<TargetAddr> = denied_literals()
            .into_iter()
            .map(TargetAddr::Ip)
            .chain(denied_names().into_iter().map(|n| TargetAddr::Domain(n, DENIED_PORT)))
            .chain((0..4).flat_map(|v| {
                (0..MIXED_PER_ECHO)
                    .map(move |j| mixed_name(v, j))
                    .chain([rebinding_mixed_name(v)])
                    .map(|n| TargetAddr::Domain(n, 8000))
            }))
            .filter(|t| !seen.contains(t))
            .collect();
        missing.truncate(10);
        assert!(missing.is_empty(), "never asked for: {missing:?}");
    }

    #[test]
    fn every_range_and_form_is_listed_and_judged_forbidden_by_the_oracle() {
        let own: IpAddr = "52.1.0.2".parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let literals = denied_literals();
        assert_eq!(literals.len(), 16 * 3 + 6 + (11 * 3 + 6) * 6);
        for l in &literals {
            assert!(crate::oracle::forbidden(l.ip(), own), "oracle allows {l}");
        }
        for net in RANGES {
            assert_eq!(samples(net).len(), 3, "{net}");
        }
        let names = denied_names();
        for name in [
            "127.0.0.1",
            "2130706433",
            "017700000001",
            "0177.00.00.01",
            "0x7f.0x0.0x0.0x1",
            "127.1",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} missing");
        }
    }

    #[test]
    fn rebinding_names_change_their_answer_and_the_table_holds_the_union() {
        let mut dns = BTreeMap::new();
        let mut hosts = Vec::new();
        let public = |v: u32| IpAddr::V4(Ipv4Addr::new(52, 0, 0, 1 + v as u8));
        extend(&mut hosts, &mut dns, public);
        let name = rebinding_mixed_name(2);
        let answers: Vec<Vec<IpAddr>> =
            (0..4).filter_map(|q| lookup(&dns, &name, QueryId(q))).collect();
        assert_eq!(answers.len(), 4);
        assert_ne!(answers[0], answers[1]);
        for a in &answers {
            assert!(a.contains(&public(2)), "{a:?}");
            for ip in a {
                assert!(dns[&name].contains(ip));
            }
        }
        let name = rebinding_denied_name(3);
        let first = lookup(&dns, &name, QueryId(0));
        assert_ne!(first, lookup(&dns, &name, QueryId(1)));
        for q in 0..8 {
            for ip in lookup(&dns, &name, QueryId(q)).unwrap_or_default() {
                assert!(crate::oracle::forbidden(ip, public(0)), "{ip}");
            }
        }
        assert_eq!(lookup(&dns, "denied-0.sim", QueryId(5)), Some(vec![denied_ips()[0]]));
        assert_eq!(lookup(&dns, "nx.sim", QueryId(5)), None);
    }
}
