//! Tests of the ingress router: unit tests per rule, property tests against
//! a naive reference matcher written here, independently of `routes.rs`.

mod balance;
mod normalize;
mod props;
mod routes;

use crate::http_head::{self, HeadLimits, Parsed, RequestHead};
use crate::ingress::Request;

/// The head of `text` (must be complete and valid).
pub(super) fn head(text: &str) -> RequestHead {
    match http_head::parse(text.as_bytes(), HeadLimits::default()) {
        Ok(Parsed::Complete(h)) => h,
        other => panic!("not a head: {other:?} for {text:?}"),
    }
}

/// A GET for `target` with `Host: host`, normalised.
pub(super) fn req(host: &str, target: &str) -> Request {
    Request::from_head(&head(&format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n")))
        .unwrap_or_else(|e| panic!("{host} {target}: {e}"))
}
