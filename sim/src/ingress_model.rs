//! The ingress part of the simulated world: the route table every gateway
//! runs, the public requests apps send, and — written here independently of
//! the core's router — what each request must get.
//!
//! ```text
//! listener "web" (port 80), no default route:
//!   prio 0  host app.sim     path /static  → static 200 "hello"
//!   prio 1  host app.sim     path /old     → redirect 308 /new, keeping the path
//!   prio 2  host app.sim     path /        → agents: service web, site=a (group 0), site=b (group 1)
//!   prio 3  host *.b.sim     (any path)    → agents: service web, site=b, hashed on the client IP
//! ```
//!
//! Agents carry `site=a` (even agent index) or `site=b` (odd), and the one
//! service `web`, an echo origin.
//!
//! Reloads alternate two tables: odd versions are the table above, even
//! versions answer the static route with 201, redirect with 307, and put
//! `site=b` in group 0 of the `app.sim` route (`site=a` the failover).

use meshproxy_core::http_head::{self, HeadLimits, Header, Parsed, RequestHead, Version};
use meshproxy_core::ingress::{Balance, HashOn, RouteSpec, RouteTable, Snapshot, TargetSpec};
use std::collections::BTreeMap;

/// The gateways' listener (route table) name.
pub const LISTENER: &str = "web";
/// The port the public reaches gateways on.
pub const PORT: u16 = 80;
/// The agents' one service.
pub const SERVICE: &str = "web";
/// How many request shapes there are.
pub const SHAPES: u8 = 7;

/// The route table of `version` (see the module docs).
pub fn snapshot(version: u64) -> Snapshot {
    table(version, false)
}

/// The table with its priorities reversed (an injected bug).
pub fn reversed_snapshot(version: u64) -> Snapshot {
    table(version, true)
}

/// Whether `version` is one of the alternative (even) tables.
fn alternative(version: u64) -> bool {
    version % 2 == 0
}

fn table(version: u64, reversed: bool) -> Snapshot {
    let alt = alternative(version);
    let (static_status, redirect_status) = if alt { (201, 307) } else { (200, 308) };
    let (first, second) = if alt { ("site=b", "site=a") } else { ("site=a", "site=b") };
    let route = |id: &str, priority: u32, host: &str, path: Option<&str>, target| RouteSpec {
        id: id.into(),
        priority: if reversed { 3 - priority } else { priority },
        host: Some(host.into()),
        path_prefix: path.map(Into::into),
        strict: true,
        target,
    };
    let agents = |pools: Vec<(u8, String, u32)>, balance| TargetSpec::Agents {
        service: SERVICE.into(),
        pools,
        balance,
    };
    let routes = [
        route(
            "static",
            0,
            "app.sim",
            Some("/static"),
            TargetSpec::Static {
                status: static_status,
                content_type: "text/plain".into(),
                body: b"hello".to_vec(),
            },
        ),
        route(
            "moved",
            1,
            "app.sim",
            Some("/old"),
            TargetSpec::Redirect {
                status: redirect_status,
                to: "/new".into(),
                keep_path: true,
                keep_query: false,
            },
        ),
        route(
            "app",
            2,
            "app.sim",
            Some("/"),
            agents(vec![(0, first.into(), 1), (1, second.into(), 1)], Balance::RoundRobin),
        ),
        route(
            "b",
            3,
            "*.b.sim",
            None,
            agents(vec![(0, "site=b".into(), 1)], Balance::Hash(HashOn::ClientIp)),
        ),
    ];
    let table = RouteTable::new(LISTENER, &routes, None).expect("the model's routes are valid");
    Snapshot::new(version, BTreeMap::from([(LISTENER.to_owned(), table)]))
        .expect("the model's snapshot is valid")
}

/// What a request must get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// This status from the gateway itself.
    Status(u16),
    /// Forwarded to an agent whose `site` label is one of these (or, when
    /// no such agent can be had, 502/503/504 — only outside a strict run).
    Agent(&'static [&'static str]),
}

/// The request of shape `shape` from app `tag`: its head as the driver
/// hands it to the core, and what it must get under table `version`.
/// Written without the core's router: the tables in the module docs,
/// applied by hand. Shapes `SHAPES..SHAPES + HOSTILE_SHAPES` are hostile.
pub fn request(shape: u8, tag: u64, version: u64) -> (RequestHead, Expect) {
    if shape >= SHAPES {
        return hostile(shape - SHAPES, tag, version);
    }
    let alt = alternative(version);
    let (text, expect) = match shape {
        0 => {
            (get("app.sim", &format!("/static/{tag}")), Expect::Status(if alt { 201 } else { 200 }))
        }
        // Upper case and a trailing dot normalise to app.sim.
        1 => (get("APP.sim.", &format!("/old/{tag}")), Expect::Status(if alt { 307 } else { 308 })),
        2 => (get("app.sim", &format!("/data/{tag}")), Expect::Agent(&["a", "b"])),
        3 => (get(&format!("x{tag}.b.sim"), "/"), Expect::Agent(&["b"])),
        4 => (get("nope.sim", "/"), Expect::Status(404)),
        // A dot segment, encoded: refused on every route.
        5 => (get("app.sim", "/a/%2e%2e/b"), Expect::Status(400)),
        // Two labels in front of b.sim: `*.b.sim` matches exactly one.
        _ => (get(&format!("y.x{tag}.b.sim"), "/"), Expect::Status(404)),
    };
    (head(&text), expect)
}

/// How many hostile request shapes there are (after the `SHAPES` honest ones).
pub const HOSTILE_SHAPES: u8 = 10;

/// The largest head the driver lets through to the core (hyper's read
/// buffer: `max_head_bytes`, 16384 by default), and its most header
/// fields (`max_headers`, 100): a bigger head is the driver's 431 and the
/// core never sees it, so the simulator sends the biggest one that passes.
const DRIVER_MAX_HEAD: usize = 16_384;
const DRIVER_MAX_HEADERS: usize = 100;

/// Hostile shape `h`: traversal encodings and backslashes on the strict
/// routes (400), unknown and malformed hosts (404, 400), a target whose
/// authority disagrees with `Host` (the target wins), and a head as big as
/// the driver lets through (routed as usual). Built as the driver builds
/// the core's head from what hyper parsed, so bytes hyper itself refuses
/// (a raw backslash) still reach the router here.
fn hostile(h: u8, tag: u64, version: u64) -> (RequestHead, Expect) {
    let alt = alternative(version);
    let host = |h: &str| vec![("host".to_owned(), h.as_bytes().to_vec())];
    let (target, headers, expect) = match h {
        // An encoded `/` on a strict route.
        0 => (format!("/data/{tag}%2fetc"), host("app.sim"), Expect::Status(400)),
        // An encoded `\`, lower-case hex.
        1 => (format!("/data/{tag}%5cwin"), host("app.sim"), Expect::Status(400)),
        // A raw dot segment.
        2 => (format!("/data/{tag}/../../etc"), host("app.sim"), Expect::Status(400)),
        // A raw backslash.
        3 => (format!("/data\\{tag}"), host("app.sim"), Expect::Status(400)),
        // An encoded NUL.
        4 => (format!("/data/{tag}%00"), host("app.sim"), Expect::Status(400)),
        // A host nobody routes.
        5 => ("/".to_owned(), host(&format!("h{tag}.evil.example")), Expect::Status(404)),
        // `Host` twice: ambiguous, refused.
        6 => {
            let mut two = host("app.sim");
            two.extend(host("evil.example"));
            (format!("/data/{tag}"), two, Expect::Status(400))
        }
        // Absolute form: the target's authority wins over `Host`.
        7 => (
            format!("http://app.sim/static/{tag}"),
            host("evil.example"),
            Expect::Status(if alt { 201 } else { 200 }),
        ),
        // User info in the authority.
        8 => (format!("http://u:p@app.sim/data/{tag}"), host("app.sim"), Expect::Status(400)),
        // As big as the driver lets through: forwarded like any request.
        _ => {
            let mut headers = host("app.sim");
            let pad = vec![b'x'; 150];
            while headers.len() < DRIVER_MAX_HEADERS {
                headers.push((format!("x-pad-{}", headers.len()), pad.clone()));
            }
            (format!("/data/{tag}"), headers, Expect::Agent(&["a", "b"]))
        }
    };
    let headers: Vec<Header> =
        headers.into_iter().map(|(name, value)| Header { name, value }).collect();
    // What the head takes on an HTTP/1.1 wire, as the driver counts it.
    let len = "GET ".len()
        + target.len()
        + " HTTP/1.1\r\n".len()
        + headers.iter().map(|h| h.name.len() + 2 + h.value.len() + 2).sum::<usize>()
        + 2;
    assert!(len <= DRIVER_MAX_HEAD, "hostile shape {h} is {len} bytes: the driver would 431 it");
    let head = RequestHead { method: "GET".into(), target, version: Version::Http11, headers, len };
    (head, expect)
}

fn get(host: &str, path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: sim\r\n\r\n")
}

/// The parsed head of `text` (every honest shape above is a valid head).
fn head(text: &str) -> RequestHead {
    match http_head::parse(text.as_bytes(), HeadLimits::default()) {
        Ok(Parsed::Complete(h)) => h,
        other => panic!("the model's request is not a head: {other:?}"),
    }
}

/// The `site` label of agent `i` (counted among the agents).
pub fn site(i: u32) -> &'static str {
    if i % 2 == 0 {
        "a"
    } else {
        "b"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshproxy_core::ingress::{Outcome, Request};

    /// The hand-written expectations agree with the core's router on every
    /// shape (the sim checks the node against the former).
    #[test]
    fn the_model_and_the_router_agree_on_every_shape() {
        for version in [1, 2] {
            let s = snapshot(version);
            for shape in 0..SHAPES + HOSTILE_SHAPES {
                let (head, expect) = request(shape, 3, version);
                let outcome = match Request::from_head(&head) {
                    Err(e) => Expect::Status(e.status()),
                    Ok(r) => match s.decide(LISTENER, &r).outcome {
                        Outcome::Refuse(r) => Expect::Status(r.status()),
                        Outcome::Static(st) => Expect::Status(st.status),
                        Outcome::Redirect { status, .. } => Expect::Status(status),
                        Outcome::Forward(t) => {
                            assert_eq!(t.service, SERVICE);
                            assert!(matches!(expect, Expect::Agent(_)), "shape {shape} forwards");
                            expect
                        }
                    },
                };
                assert_eq!(outcome, expect, "version {version} shape {shape}: {head:?}");
            }
        }
    }
}
