use super::req;
use crate::ingress::normalize::PathError;
use crate::ingress::{
    Balance, HostPattern, LabelSelector, Outcome, PathPrefix, Refusal, RouteSpec, RouteTable,
    Router, Snapshot, Target, TargetSpec,
};
use std::collections::BTreeMap;

pub(super) fn stat(status: u16) -> TargetSpec {
    TargetSpec::Static { status, content_type: "text/plain".into(), body: b"hi".to_vec() }
}

pub(super) fn route(id: &str, prio: u32, host: Option<&str>, prefix: Option<&str>) -> RouteSpec {
    RouteSpec {
        id: id.into(),
        priority: prio,
        host: host.map(Into::into),
        path_prefix: prefix.map(Into::into),
        strict: true,
        target: stat(200),
    }
}

pub(super) fn snapshot(
    version: u64,
    routes: &[RouteSpec],
    default: Option<&TargetSpec>,
) -> Snapshot {
    let table = RouteTable::new("web", routes, default.map(|d| (true, d))).unwrap();
    Snapshot::new(version, BTreeMap::from([("web".to_owned(), table)])).unwrap()
}

fn matched(s: &Snapshot, host: &str, target: &str) -> Option<String> {
    let d = s.decide("web", &req(host, target));
    assert!(!matches!(d.outcome, Outcome::Refuse(Refusal::Path(_))));
    if matches!(d.outcome, Outcome::Refuse(Refusal::NoRoute)) {
        return Some("404".into());
    }
    d.route
}

#[test]
fn wildcard_matches_exactly_one_label_never_the_apex() {
    let p = HostPattern::parse("*.Example.com").unwrap();
    assert_eq!(p, HostPattern::Wildcard("example.com".into()));
    assert!(p.matches("a.example.com"));
    assert!(p.matches("a-b.example.com"));
    assert!(!p.matches("a.b.example.com"));
    assert!(!p.matches("example.com"));
    assert!(!p.matches("aexample.com"));
    assert!(!p.matches(".example.com"));
    assert!(!p.matches("a.example.co"));
    let e = HostPattern::parse("example.com.").unwrap();
    assert!(e.matches("example.com") && !e.matches("a.example.com"));
    for bad in ["*", "*.", "a.*.com", "*example.com", "**.a.com", "a.com:80", "", "*.[::1]"] {
        assert!(HostPattern::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn path_prefix_is_segment_aware() {
    let p = PathPrefix::parse("/api").unwrap();
    let m = |path: &str| p.matches(&req("h", path).path);
    assert!(m("/api") && m("/api/") && m("/api/x") && m("/api/x/y") && m("/%61pi/x"));
    assert!(!m("/apix") && !m("/ap") && !m("/") && !m("/x/api") && !m("/api%2Fx"));
    let root = PathPrefix::parse("/").unwrap();
    assert!(root.is_empty() && root.matches(&req("h", "/anything").path));
    let two = PathPrefix::parse("/a/b%20c").unwrap();
    assert!(
        two.matches(&req("h", "/a/b%20c/d").path)
            && two.matches(&crate::ingress::Path::parse("/a/b c").unwrap())
    );
    assert!(!two.matches(&req("h", "/a/b").path));
    for bad in ["api", "/api/", "/a//b", "/a/../b", "/a%2Fb", "/a?x", "/a#x", "/a%zz", "/a\\b"] {
        assert!(PathPrefix::parse(bad).is_err(), "{bad}");
    }
    assert!(PathPrefix::parse(&format!("/{}", "a".repeat(1024))).is_err());
}

#[test]
fn first_match_by_priority_then_id_then_default() {
    let routes = [
        route("z-catch", 10, None, Some("/")),
        route("b-api", 5, Some("app.example.com"), Some("/api")),
        route("a-api", 5, Some("app.example.com"), Some("/api")),
        route("wild", 7, Some("*.example.com"), None),
        route("v2", 1, None, Some("/api/v2")),
    ];
    let s = snapshot(1, &routes, None);
    let ids: Vec<&str> = s.table("web").unwrap().routes().iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["v2", "a-api", "b-api", "wild", "z-catch"]);
    assert_eq!(matched(&s, "app.example.com", "/api/x").as_deref(), Some("a-api"));
    assert_eq!(matched(&s, "other.example", "/api/v2/x").as_deref(), Some("v2"));
    assert_eq!(matched(&s, "app.example.com", "/apix").as_deref(), Some("wild"));
    assert_eq!(matched(&s, "other.example", "/x").as_deref(), Some("z-catch"));
    // Without the catch-all: default, then 404.
    let s = snapshot(1, &routes[1..], Some(&stat(418)));
    let d = s.decide("web", &req("nowhere", "/x"));
    assert_eq!(d.route, None);
    assert!(matches!(d.outcome, Outcome::Static(ref r) if r.status == 418));
    let s = snapshot(1, &routes[1..], None);
    let d = s.decide("web", &req("nowhere", "/x"));
    assert_eq!(d.outcome, Outcome::Refuse(Refusal::NoRoute));
    assert_eq!(Refusal::NoRoute.status(), 404);
    assert_eq!(
        s.decide("nope", &req("app.example.com", "/api")).outcome,
        Outcome::Refuse(Refusal::NoRoute)
    );
}

#[test]
fn request_without_host_matches_only_hostless_routes() {
    let s = snapshot(
        1,
        &[route("h", 0, Some("a.example"), None), route("p", 1, None, Some("/"))],
        None,
    );
    let r = crate::ingress::Request::from_head(&super::head("GET /x HTTP/1.0\r\n\r\n")).unwrap();
    assert_eq!(s.decide("web", &r).route.as_deref(), Some("p"));
}

#[test]
fn strict_routes_refuse_encoded_separators_after_matching() {
    let mut lax = route("lax", 1, None, Some("/git"));
    lax.strict = false;
    let s = snapshot(1, &[lax, route("strict", 2, None, Some("/"))], Some(&stat(200)));
    let d = s.decide("web", &req("h", "/git/a%2Fb"));
    assert_eq!(
        (d.route.as_deref(), &d.outcome),
        (Some("lax"), &s.decide("web", &req("h", "/git/x")).outcome)
    );
    let d = s.decide("web", &req("h", "/x/a%2Fb"));
    assert_eq!(d.route.as_deref(), Some("strict"));
    assert_eq!(d.outcome, Outcome::Refuse(Refusal::Path(PathError::EncodedSlash)));
    let d = s.decide("web", &req("h", "/x/a%5Cb"));
    assert_eq!(d.outcome, Outcome::Refuse(Refusal::Path(PathError::EncodedBackslash)));
    assert_eq!(Refusal::Path(PathError::EncodedSlash).status(), 400);
    // The default route is strict here too.
    let s = snapshot(1, &[route("r", 1, Some("x.example"), None)], Some(&stat(200)));
    let d = s.decide("web", &req("h", "/a%2fb"));
    assert_eq!(
        (d.route, d.outcome),
        (None, Outcome::Refuse(Refusal::Path(PathError::EncodedSlash)))
    );
}

#[test]
fn redirects_keep_path_after_prefix_and_query() {
    let redirect = |to: &str, keep_path, keep_query| TargetSpec::Redirect {
        status: 308,
        to: to.into(),
        keep_path,
        keep_query,
    };
    let location = |target: TargetSpec, path: &str| {
        let mut r = route("r", 0, None, Some("/old"));
        r.target = target;
        match snapshot(1, &[r], None).decide("web", &req("h", path)).outcome {
            Outcome::Redirect { status, location } => {
                assert_eq!(status, 308);
                location
            }
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(
        location(redirect("https://new.example/", true, true), "/old/a/b?x=1"),
        "https://new.example/a/b?x=1"
    );
    assert_eq!(
        location(redirect("https://new.example/base", true, false), "/old/a?x=1"),
        "https://new.example/base/a"
    );
    assert_eq!(location(redirect("/new", false, true), "/old/a?x=1"), "/new?x=1");
    assert_eq!(location(redirect("/new?k=v", false, true), "/old?x=1"), "/new?k=v&x=1");
    assert_eq!(location(redirect("/new/", true, true), "/old"), "/new/");
    assert_eq!(
        location(redirect("https://n.example", true, true), "/old/caf\u{e9}"),
        "https://n.example/caf%C3%A9"
    );
}

#[test]
fn selectors_parse_and_match_all_labels() {
    let s = LabelSelector::parse("site=home, tier=web").unwrap();
    let labels =
        |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    assert!(s.matches(&labels(&[("site", "home"), ("tier", "web"), ("x", "y")])));
    assert!(!s.matches(&labels(&[("site", "home")])));
    assert!(!s.matches(&labels(&[("site", "home"), ("tier", "db")])));
    let empty = LabelSelector::parse("k=").unwrap();
    assert!(empty.matches(&labels(&[("k", "")])) && !empty.matches(&labels(&[("k", "v")])));
    for bad in ["", "site", "=v", "a=1,a=2", "a=b c", "a=1,,b=2", "a=1,"] {
        assert!(LabelSelector::parse(bad).is_err(), "{bad:?}");
    }
    let many: Vec<String> = (0..17).map(|i| format!("k{i}=v")).collect();
    assert!(LabelSelector::parse(&many.join(",")).is_err());
    assert!(LabelSelector::parse(&many[..16].join(",")).is_ok());
}

#[test]
fn validation_names_route_and_field() {
    let check = |routes: Vec<RouteSpec>, route: &str, field: &str| {
        let e = RouteTable::new("web", &routes, None).expect_err(field);
        assert_eq!(
            (e.listener.as_str(), e.route.as_deref(), e.field),
            ("web", Some(route), field),
            "{e}"
        );
        assert!(e.to_string().contains(route) && e.to_string().contains(field), "{e}");
    };
    check(vec![route("a b", 0, Some("h"), None)], "a b", "id");
    check(vec![route("a", 0, Some("h"), None), route("a", 1, Some("h"), None)], "a", "id");
    check(vec![route("a", 0, Some("bad host"), None)], "a", "host");
    check(vec![route("a", 0, None, Some("/x/"))], "a", "path_prefix");
    check(vec![route("a", 0, None, None)], "a", "host");
    let with = |target: TargetSpec| {
        let mut r = route("t", 0, Some("h"), None);
        r.target = target;
        vec![r]
    };
    let agents = |service: &str, pools: Vec<(u8, &str, u32)>, balance| TargetSpec::Agents {
        service: service.into(),
        pools: pools.into_iter().map(|(g, s, w)| (g, s.to_owned(), w)).collect(),
        balance,
    };
    check(with(agents("", vec![(0, "a=b", 1)], Balance::RoundRobin)), "t", "service");
    check(with(agents("web", vec![], Balance::RoundRobin)), "t", "pools");
    check(with(agents("web", vec![(0, "ab", 1)], Balance::RoundRobin)), "t", "selector");
    check(with(agents("web", vec![(0, "a=b", 0)], Balance::RoundRobin)), "t", "weight");
    check(with(agents("web", vec![(0, "a=b", 1_000_001)], Balance::RoundRobin)), "t", "weight");
    let bad_hash = Balance::Hash(crate::ingress::HashOn::Cookie("a b".into()));
    check(with(agents("web", vec![(0, "a=b", 1)], bad_hash)), "t", "balance");
    check(with(stat(199)), "t", "status");
    check(
        with(TargetSpec::Static { status: 200, content_type: "".into(), body: vec![] }),
        "t",
        "content_type",
    );
    check(
        with(TargetSpec::Static { status: 200, content_type: "a\nb".into(), body: vec![] }),
        "t",
        "content_type",
    );
    check(
        with(TargetSpec::Static { status: 200, content_type: "t".into(), body: vec![0; 65537] }),
        "t",
        "body",
    );
    let redirect = |status, to: &str| TargetSpec::Redirect {
        status,
        to: to.into(),
        keep_path: true,
        keep_query: true,
    };
    check(with(redirect(303, "/x")), "t", "status");
    for bad in ["x", "//evil", "https://", "http:///x", "/a b", "/a#f", "/a\r\nSet-Cookie: x"] {
        check(with(redirect(302, bad)), "t", "to");
    }
    let too_many: Vec<RouteSpec> =
        (0..257).map(|i| route(&format!("r{i}"), 0, Some("h"), None)).collect();
    let e = RouteTable::new("web", &too_many, None).unwrap_err();
    assert_eq!((e.route, e.field), (None, "routes"));
    assert!(RouteTable::new("web", &too_many[..256], None).is_ok());
    let e = RouteTable::new("web", &[], Some((true, &stat(99)))).unwrap_err();
    assert_eq!((e.route.as_deref(), e.field), (Some("default"), "status"));
    let e = Snapshot::new(
        1,
        BTreeMap::from([("bad name".to_owned(), RouteTable::new("x", &[], None).unwrap())]),
    );
    assert_eq!(e.unwrap_err().field, "listener");
}

#[test]
fn reload_needs_a_higher_version_and_old_decisions_keep_theirs() {
    let mut a = route("r", 0, None, Some("/"));
    a.target = stat(201);
    let mut router = Router::new(snapshot(3, &[a.clone()], None));
    let before = router.decide("web", &req("h", "/x"));
    assert_eq!(before.version, 3);
    a.target = stat(202);
    let e = router.reload(snapshot(3, &[a.clone()], None)).unwrap_err();
    assert_eq!((e.current, e.offered), (3, 3));
    assert_eq!(router.snapshot().version(), 3);
    router.reload(snapshot(4, &[a], None)).unwrap();
    let after = router.decide("web", &req("h", "/x"));
    assert_eq!(after.version, 4);
    assert!(matches!(before.outcome, Outcome::Static(ref s) if s.status == 201));
    assert!(matches!(after.outcome, Outcome::Static(ref s) if s.status == 202));
    assert!(
        matches!(&router.snapshot().table("web").unwrap().routes()[0].target, Target::Static(s) if s.status == 202)
    );
}
