use super::{head, req};
use crate::http_head::HeadError;
use crate::ingress::normalize::{cookie, normalize_authority, normalize_host};
use crate::ingress::{NormalizeError, Path, PathError, Request};

fn refused(host: &str, target: &str) -> NormalizeError {
    let h = head(&format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n"));
    Request::from_head(&h).expect_err(target)
}

#[test]
fn host_is_lowercased_port_and_one_trailing_dot_stripped() {
    assert_eq!(req("Example.COM", "/").host.as_deref(), Some("example.com"));
    assert_eq!(req("example.com:8080", "/").host.as_deref(), Some("example.com"));
    assert_eq!(req("example.com.", "/").host.as_deref(), Some("example.com"));
    assert_eq!(req("example.com.:443", "/").host.as_deref(), Some("example.com"));
    assert_eq!(req("[::1]:8080", "/").host.as_deref(), Some("[::1]"));
    assert_eq!(req("[FE80::1]", "/").host.as_deref(), Some("[fe80::1]"));
    assert_eq!(req("10.0.0.1:80", "/").host.as_deref(), Some("10.0.0.1"));
    // IDNA is left as is: the ASCII form is compared byte for byte.
    assert_eq!(req("XN--bcher-kva.example", "/").host.as_deref(), Some("xn--bcher-kva.example"));
}

#[test]
fn invalid_hosts_are_refused() {
    for bad in [
        "example.com..",
        ".example.com",
        "a..b",
        "exa mple.com",
        "example.com:",
        "example.com:99999",
        "example.com:8o",
        "user@example.com",
        "[::1",
        "[::g]",
        "[::1]x",
        "ex%41mple.com",
        "a*b.com",
        "example.com:1:2",
    ] {
        let h = head(&format!("GET / HTTP/1.1\r\nHost: {bad}\r\n\r\n"));
        let e = Request::from_head(&h);
        assert!(
            matches!(e, Err(NormalizeError::BadHost(_) | NormalizeError::Head(_))),
            "{bad}: {e:?}"
        );
        assert_eq!(e.map_err(NormalizeError::status).err(), Some(400), "{bad}");
    }
    assert_eq!(normalize_host(&"a".repeat(64)), Err("label longer than 63 bytes"));
    let long = ["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(62)].join(".");
    assert_eq!(long.len(), 254);
    assert!(normalize_host(&long).is_err());
    assert!(normalize_host(&long[1..]).is_ok());
    assert!(normalize_host("héllo.example").is_err());
}

#[test]
fn host_header_is_required_once_in_http11_and_optional_in_http10() {
    let missing = Request::from_head(&head("GET / HTTP/1.1\r\n\r\n"));
    assert!(matches!(missing, Err(NormalizeError::Head(HeadError::BadHost { .. }))));
    let twice = Request::from_head(&head("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"));
    assert!(matches!(twice, Err(NormalizeError::Head(HeadError::BadHost { .. }))));
    let old = Request::from_head(&head("GET /x HTTP/1.0\r\n\r\n")).unwrap();
    assert_eq!(old.host, None);
    assert_eq!(old.path.raw(), "/x");
}

#[test]
fn absolute_form_target_wins_over_host() {
    let r = req("other.example", "http://App.Example.com:8080/a/b?q=1");
    assert_eq!(r.host.as_deref(), Some("app.example.com"));
    assert_eq!(r.path.raw(), "/a/b");
    assert_eq!(r.query.as_deref(), Some("q=1"));
    let r = req("x", "HTTPS://h.example");
    assert_eq!((r.host.as_deref(), r.path.raw(), r.query), (Some("h.example"), "/", None));
    let r = req("x", "http://h.example?z");
    assert_eq!((r.path.raw(), r.query.as_deref()), ("/", Some("z")));
    assert!(matches!(refused("x", "ftp://h/"), NormalizeError::BadTarget(_)));
    assert!(matches!(refused("x", "http://u@h/"), NormalizeError::BadHost(_)));
    assert!(matches!(refused("x", "http:///p"), NormalizeError::BadHost(_)));
}

#[test]
fn other_target_forms_are_refused() {
    assert!(matches!(refused("h", "*"), NormalizeError::BadTarget(_)));
    assert!(matches!(refused("h", "h:443"), NormalizeError::BadTarget(_)));
    assert!(matches!(refused("h", "/a#frag"), NormalizeError::BadTarget(_)));
    let connect = head("CONNECT /x HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(Request::from_head(&connect), Err(NormalizeError::BadTarget("CONNECT")));
}

#[test]
fn path_is_kept_raw_and_decoded_once_query_raw() {
    let r = req("h", "/caf%C3%A9/%2541?a=%2F&b");
    assert_eq!(r.path.raw(), "/caf%C3%A9/%2541");
    assert_eq!(r.path.decoded(), "/café/%41".as_bytes());
    assert_eq!(r.query.as_deref(), Some("a=%2F&b"));
    let segs: Vec<&[u8]> = r.path.segments().collect();
    assert_eq!(segs, [&b"caf\xc3\xa9"[..], b"%41"]);
    let r = req("h", "/api/");
    assert_eq!(r.path.segments().collect::<Vec<_>>(), [&b"api"[..], b""]);
    assert_eq!(req("h", "/").path.segment_count(), 1);
}

#[test]
fn dot_segments_backslashes_controls_and_bad_escapes_are_always_refused() {
    let cases = [
        ("/a/../b", PathError::DotSegment),
        ("/a/./b", PathError::DotSegment),
        ("/..", PathError::DotSegment),
        ("/a/%2e%2E/b", PathError::DotSegment),
        ("/a/%2e", PathError::DotSegment),
        ("/a/.%2e", PathError::DotSegment),
        ("/a\\b", PathError::Backslash),
        ("/a%00b", PathError::ControlByte),
        ("/a%0d%0aX", PathError::ControlByte),
        ("/a%7f", PathError::ControlByte),
        ("/a%", PathError::BadEscape),
        ("/a%2", PathError::BadEscape),
        ("/a%zz", PathError::BadEscape),
    ];
    for (path, want) in cases {
        assert_eq!(refused("h", path), NormalizeError::Path(want), "{path}");
        assert_eq!(Path::parse(path), Err(want), "{path}");
        assert_eq!(NormalizeError::Path(want).status(), 400);
    }
    // Dots inside a segment are fine, encoded or not.
    for ok in ["/a/.b", "/a/b..", "/a/%2e%2e%2e", "/a/x%2ey", "/.well-known/x", "/a%20b"] {
        assert!(Path::parse(ok).is_ok(), "{ok}");
    }
    assert_eq!(Path::parse("a/b"), Err(PathError::NotAbsolute));
}

#[test]
fn encoded_separators_are_flagged_not_refused_here() {
    let p = Path::parse("/a%2Fb/c").unwrap();
    assert_eq!(p.encoded_separator(), Some(PathError::EncodedSlash));
    assert_eq!(p.segment_count(), 2);
    assert_eq!(p.segments().next(), Some(&b"a/b"[..]));
    let p = Path::parse("/a%5cb").unwrap();
    assert_eq!(p.encoded_separator(), Some(PathError::EncodedBackslash));
    assert_eq!(Path::parse("/a/b").unwrap().encoded_separator(), None);
}

#[test]
fn raw_suffix_after_segments() {
    let p = Path::parse("/api/v1/x%20y").unwrap();
    assert_eq!(p.raw_suffix(0), "/api/v1/x%20y");
    assert_eq!(p.raw_suffix(1), "/v1/x%20y");
    assert_eq!(p.raw_suffix(2), "/x%20y");
    assert_eq!(p.raw_suffix(3), "");
    assert_eq!(p.raw_suffix(9), "");
}

#[test]
fn authority_and_cookie_helpers() {
    assert_eq!(normalize_authority("A.b:1").as_deref(), Ok("a.b"));
    assert!(normalize_authority("a.b:65536").is_err());
    assert!(normalize_authority("a.b:65535").is_ok());
    let h = head(
        "GET / HTTP/1.1\r\nHost: h\r\nCookie: a=1; sid = xyz ;b=2\r\nCookie: sid=late\r\n\r\n",
    );
    assert_eq!(cookie(&h, "sid"), Some(&b"xyz"[..]));
    assert_eq!(cookie(&h, "b"), Some(&b"2"[..]));
    assert_eq!(cookie(&h, "nope"), None);
}
