//! Header hygiene at the gateway (RFC 9110 §7.6.1): what is about one
//! connection does not cross the gateway, and what a client says about where
//! it came from is replaced by what the gateway saw.
//!
//! - Hop-by-hop fields go: `Connection` and every field it names,
//!   `Keep-Alive`, `Proxy-*`, `TE`, `Trailer`, `Transfer-Encoding` (hyper
//!   frames each side's body itself) and `Upgrade` — which, with
//!   `Connection: upgrade`, is put back for an upgrade request (and its 101
//!   answer), the one hop-by-hop exchange a gateway must pass on.
//! - `X-Forwarded-For`, `-Proto`, `-Host`, `-Port` and `Forwarded` from the
//!   client are dropped, never appended to: the agent's service can trust
//!   them to be the gateway's view (the client's IP, the listener's scheme,
//!   the normalised host, the listener's public port).

use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, COOKIE, UPGRADE};
use std::net::IpAddr;

/// What the gateway saw of a request, for the `X-Forwarded-*` fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientView {
    /// The public client's address.
    pub client: IpAddr,
    /// Whether the listener is reached over https.
    pub https: bool,
    /// The normalised host the request was routed by, if it named one.
    pub host: Option<String>,
    /// The listener's public port.
    pub port: u16,
}

const FORWARDING: [&str; 5] =
    ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port", "forwarded"];

/// Fixed hop-by-hop fields (besides those `Connection` names).
const HOP_BY_HOP: [&str; 6] =
    ["connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade"];

/// The protocol an HTTP/1.1 request asks to switch to (`Upgrade`, with
/// `upgrade` among its `Connection` options), if any.
pub fn upgrade_of(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("").split(','))
        .any(|o| o.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| headers.get(UPGRADE).cloned()).flatten()
}

/// Removes the hop-by-hop fields of `headers`.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("").split(','))
        .filter_map(|o| HeaderName::from_bytes(o.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    let proxy: Vec<HeaderName> =
        headers.keys().filter(|k| k.as_str().starts_with("proxy-")).cloned().collect();
    for name in proxy {
        headers.remove(name);
    }
}

/// Puts `Connection: upgrade` and `Upgrade: protocol` back.
fn keep_upgrade(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, protocol);
}

/// The fields the agent's service gets for a request with `headers`:
/// hop-by-hop fields out (an upgrade to `upgrade` kept), the forwarding
/// fields replaced by `view`.
pub fn upstream(headers: &HeaderMap, upgrade: Option<HeaderValue>, view: &ClientView) -> HeaderMap {
    let mut out = headers.clone();
    strip_hop_by_hop(&mut out);
    for name in FORWARDING {
        out.remove(name);
    }
    if let Some(protocol) = upgrade {
        keep_upgrade(&mut out, protocol);
    }
    join_cookies(&mut out);
    let proto = if view.https { "https" } else { "http" };
    let ip = view.client.to_string();
    let mut set = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            out.insert(name, v);
        }
    };
    set("x-forwarded-for", &ip);
    set("x-forwarded-proto", proto);
    set("x-forwarded-port", &view.port.to_string());
    // RFC 7239 §6: an IPv6 node is quoted and bracketed.
    let node = match view.client {
        IpAddr::V4(_) => ip.clone(),
        IpAddr::V6(_) => format!("\"[{ip}]\""),
    };
    let mut forwarded = format!("for={node};proto={proto}");
    if let Some(host) = &view.host {
        set("x-forwarded-host", host);
        forwarded.push_str(&format!(";host=\"{host}\""));
    }
    set("forwarded", &forwarded);
    out
}

/// An h2 client may split `Cookie` into one field per cookie (RFC 9113
/// §8.2.3); HTTP/1.1 wants one field, the pairs joined with `; `.
fn join_cookies(headers: &mut HeaderMap) {
    if headers.get_all(COOKIE).iter().count() < 2 {
        return;
    }
    let joined: Vec<&[u8]> = headers.get_all(COOKIE).iter().map(HeaderValue::as_bytes).collect();
    if let Ok(v) = HeaderValue::from_bytes(&joined.join(&b"; "[..])) {
        headers.insert(COOKIE, v);
    }
}

/// The fields the public client gets from the agent's response: hop-by-hop
/// fields out, an accepted upgrade (`101`) kept.
pub fn downstream(headers: &mut HeaderMap, upgrade: Option<HeaderValue>) {
    strip_hop_by_hop(headers);
    if let Some(protocol) = upgrade {
        keep_upgrade(headers, protocol);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(fields: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in fields {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    fn view() -> ClientView {
        ClientView {
            client: "203.0.113.9".parse().unwrap(),
            https: false,
            host: Some("app.example.com".into()),
            port: 8080,
        }
    }

    #[test]
    fn hop_by_hop_fields_and_the_ones_connection_names_are_dropped() {
        let h = map(&[
            ("connection", "keep-alive, X-Secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic eA=="),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x"),
            ("upgrade", "websocket"),
            ("accept", "*/*"),
            ("host", "app.example.com"),
        ]);
        let out = upstream(&h, None, &view());
        for gone in [
            "connection",
            "x-secret",
            "keep-alive",
            "proxy-authorization",
            "proxy-connection",
            "te",
            "trailer",
            "upgrade",
        ] {
            assert!(!out.contains_key(gone), "{gone} crossed the gateway");
        }
        assert_eq!(out["accept"], "*/*");
        assert_eq!(out["host"], "app.example.com");
    }

    #[test]
    fn forwarding_fields_are_replaced_by_the_gateways_view() {
        let h = map(&[
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-for", "10.0.0.2"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-port", "1"),
            ("forwarded", "for=10.0.0.1"),
        ]);
        let out = upstream(&h, None, &view());
        assert_eq!(out.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(out["x-forwarded-for"], "203.0.113.9");
        assert_eq!(out["x-forwarded-proto"], "http");
        assert_eq!(out["x-forwarded-host"], "app.example.com");
        assert_eq!(out["x-forwarded-port"], "8080");
        assert_eq!(out["forwarded"], "for=203.0.113.9;proto=http;host=\"app.example.com\"");
        let v6 = ClientView {
            client: "2001:db8::1".parse().unwrap(),
            host: None,
            https: true,
            ..view()
        };
        let out = upstream(&HeaderMap::new(), None, &v6);
        assert_eq!(out["forwarded"], "for=\"[2001:db8::1]\";proto=https");
        assert!(!out.contains_key("x-forwarded-host"));
    }

    #[test]
    fn split_cookies_are_joined_for_http1() {
        let h = map(&[("cookie", "a=1"), ("cookie", "b=2")]);
        let out = upstream(&h, None, &view());
        assert_eq!(out.get_all("cookie").iter().count(), 1);
        assert_eq!(out["cookie"], "a=1; b=2");
    }

    #[test]
    fn an_upgrade_is_passed_on_only_when_asked_for() {
        let h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        let protocol = upgrade_of(&h);
        assert_eq!(protocol.as_ref().map(|v| v.to_str().unwrap()), Some("websocket"));
        let out = upstream(&h, protocol, &view());
        assert_eq!(out["connection"], "upgrade");
        assert_eq!(out["upgrade"], "websocket");
        // `Upgrade` without the `Connection` option is no upgrade request.
        assert_eq!(upgrade_of(&map(&[("upgrade", "websocket")])), None);
        let mut resp =
            map(&[("connection", "close"), ("transfer-encoding", "chunked"), ("etag", "x")]);
        downstream(&mut resp, None);
        assert_eq!(resp.len(), 1);
    }
}
