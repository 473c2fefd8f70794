//! The core's [`RequestHead`] from what hyper parsed, so that HTTP/1.1 and h2
//! requests meet the router alike.
//!
//! HTTP/1.x targets are kept as sent (origin, absolute or asterisk form; the
//! core refuses what it does not route). An h2 request has no request line:
//! its target is built in origin form from `:path` and its `Host` from
//! `:authority` when it sent no `Host` field (RFC 9113 §8.3.1), and the core
//! sees it as HTTP/1.1, whose rules (`Host` required) it then follows.

use hyper::http::request::Parts;
use hyper::http::Version as HttpVersion;
use meshproxy_core::http_head::{Header, RequestHead, Version};

/// The head of the request hyper parsed into `parts`.
pub fn request_head(parts: &Parts) -> RequestHead {
    let h2 = parts.version == HttpVersion::HTTP_2;
    let target = if h2 {
        parts.uri.path_and_query().map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned())
    } else {
        parts.uri.to_string()
    };
    let version =
        if parts.version == HttpVersion::HTTP_10 { Version::Http10 } else { Version::Http11 };
    let mut headers: Vec<Header> = parts
        .headers
        .iter()
        .map(|(name, value)| Header {
            name: name.as_str().to_owned(),
            value: value.as_bytes().to_vec(),
        })
        .collect();
    if h2 && !parts.headers.contains_key(hyper::header::HOST) {
        if let Some(authority) = parts.uri.authority() {
            let value = authority.as_str().as_bytes().to_vec();
            headers.insert(0, Header { name: "host".to_owned(), value });
        }
    }
    // What the head takes on an HTTP/1.1 wire: request line, fields, blank line.
    let len = parts.method.as_str().len()
        + target.len()
        + " HTTP/1.1\r\n".len()
        + 1
        + headers.iter().map(|h| h.name.len() + 2 + h.value.len() + 2).sum::<usize>()
        + 2;
    RequestHead { method: parts.method.as_str().to_owned(), target, version, headers, len }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::Request;

    fn parts(req: Request<()>) -> Parts {
        req.into_parts().0
    }

    #[test]
    fn an_http1_target_is_kept_as_sent() {
        let req = Request::get("http://Example.com:8080/a/%2e%2e/b?x=1")
            .header("host", "example.com")
            .body(())
            .unwrap();
        let head = request_head(&parts(req));
        assert_eq!(head.target, "http://Example.com:8080/a/%2e%2e/b?x=1");
        assert_eq!(head.version, Version::Http11);
        assert_eq!(head.value("host"), Some(&b"example.com"[..]));
        let req = Request::get("/p?q").version(HttpVersion::HTTP_10).body(()).unwrap();
        let head = request_head(&parts(req));
        assert_eq!((head.target.as_str(), head.version), ("/p?q", Version::Http10));
        assert_eq!(head.host(), Ok(None), "an HTTP/1.0 request may lack Host");
    }

    #[test]
    fn an_h2_request_gets_origin_form_and_host_from_its_authority() {
        let req = Request::get("https://app.example.com/x/y?z")
            .version(HttpVersion::HTTP_2)
            .header("accept", "*/*")
            .body(())
            .unwrap();
        let head = request_head(&parts(req));
        assert_eq!(head.target, "/x/y?z");
        assert_eq!(head.version, Version::Http11);
        assert_eq!(head.host(), Ok(Some("app.example.com")));
        assert_eq!(head.headers.len(), 2);
        // A Host field the client sent is kept, not doubled.
        let req = Request::get("https://a.example/")
            .version(HttpVersion::HTTP_2)
            .header("host", "b.example")
            .body(())
            .unwrap();
        assert_eq!(request_head(&parts(req)).host(), Ok(Some("b.example")));
    }
}
