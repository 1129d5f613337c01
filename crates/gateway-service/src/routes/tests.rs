//! What a user configuring routes would check: Spring's documented examples in both forms,
//! PromptFlow's default table, matching order, every predicate and filter, every refusal.

use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde_json::json;

use super::*;
use crate::settings::{FullDefinition, KeyResolver, LimitSpec, RouteDefinition, RouteMetadata};

fn sc(s: &str) -> Definition {
    Definition::Shortcut(s.into())
}

fn full(name: &str, args: serde_json::Value) -> Definition {
    Definition::Full(FullDefinition {
        name: name.into(),
        args: serde_json::from_value(args).expect("args are an object"),
    })
}

fn route(id: &str, predicates: Vec<Definition>, filters: Vec<Definition>) -> RouteDefinition {
    RouteDefinition {
        id: id.into(),
        uri: "lb://svc".into(),
        predicates,
        filters,
        ..RouteDefinition::default()
    }
}

fn compile(defs: Vec<RouteDefinition>) -> Routes {
    match Routes::compile(&defs, &[], &LimitSpec::default()) {
        Ok(r) => r,
        Err(e) => panic!("does not compile: {e}"),
    }
}

fn one(predicates: Vec<Definition>, filters: Vec<Definition>) -> Routes {
    compile(vec![route("r", predicates, filters)])
}

fn refused(defs: Vec<RouteDefinition>) -> String {
    match Routes::compile(&defs, &[], &LimitSpec::default()) {
        Ok(_) => panic!("compiled, but should have been refused"),
        Err(e) => e,
    }
}

fn refused_one(predicates: Vec<Definition>, filters: Vec<Definition>) -> String {
    refused(vec![route("r", predicates, filters)])
}

#[track_caller]
fn assert_has(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "`{msg}` should contain `{p}`");
    }
}

struct Req {
    method: Method,
    path: String,
    query: Option<String>,
    host: Option<String>,
    headers: HeaderMap,
    remote: IpAddr,
}

impl Req {
    fn new(method: &str, target: &str) -> Req {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
            None => (target.to_owned(), None),
        };
        Req {
            method: Method::from_bytes(method.as_bytes()).expect("method"),
            path,
            query,
            host: None,
            headers: HeaderMap::new(),
            remote: IpAddr::from([127, 0, 0, 1]),
        }
    }

    fn get(target: &str) -> Req {
        Req::new("GET", target)
    }

    fn host(mut self, host: &str) -> Req {
        self.host = Some(host.into());
        self
    }

    fn header(mut self, name: &str, value: &str) -> Req {
        self.headers.append(
            HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_str(value).expect("value"),
        );
        self
    }

    fn from(mut self, ip: &str) -> Req {
        self.remote = ip.parse().expect("ip");
        self
    }

    fn r(&self) -> Request<'_> {
        Request {
            method: &self.method,
            path: &self.path,
            query: self.query.as_deref(),
            host: self.host.as_deref(),
            headers: &self.headers,
            remote: self.remote,
        }
    }
}

fn id_of(routes: &Routes, req: &Req) -> Option<String> {
    routes.find(&req.r()).map(|m| m.route.id.to_string())
}

fn hits(routes: &Routes, req: &Req) -> bool {
    routes.find(&req.r()).is_some()
}

fn upstream(routes: &Routes, req: &Req) -> String {
    match routes.find(&req.r()) {
        Some(m) => m.upstream_path_and_query(&req.r()),
        None => panic!("no route for {}", req.path),
    }
}

fn request_headers(routes: &Routes, req: &Req, mut headers: HeaderMap) -> HeaderMap {
    match routes.find(&req.r()) {
        Some(m) => m.edit_request_headers(&mut headers),
        None => panic!("no route for {}", req.path),
    }
    headers
}

fn values(headers: &HeaderMap, name: &str) -> Vec<Vec<u8>> {
    headers
        .get_all(name)
        .iter()
        .map(|v| v.as_bytes().to_vec())
        .collect()
}

fn at(t: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(t)
        .expect("time")
        .with_timezone(&Utc)
}

/// The shortcut and the full form behave alike on every request given.
#[track_caller]
fn both_forms(shortcut: Definition, full_form: Definition, cases: &[(Req, bool)]) {
    for def in [shortcut, full_form] {
        let routes = one(vec![def.clone()], vec![]);
        for (req, want) in cases {
            assert_eq!(
                hits(&routes, req),
                *want,
                "{def:?} on {} {}?{:?} host {:?} from {}",
                req.method,
                req.path,
                req.query,
                req.host,
                req.remote
            );
        }
    }
}

// ---- PromptFlow's default table ----

#[test]
fn default_table() {
    let routes = compile(crate::settings::default_routes());
    let find = |target: &str| {
        let req = Req::get(target);
        routes.find(&req.r()).map(|m| {
            (
                m.route.id.to_string(),
                m.route.public,
                m.upstream_path_and_query(&req.r()),
            )
        })
    };
    for p in ["register", "login", "refresh", "token", "logout"] {
        let path = format!("/api/auth/{p}");
        assert_eq!(
            find(&path),
            Some(("auth-public".into(), true, path.clone()))
        );
    }
    assert_eq!(
        find("/.well-known/jwks.json").map(|(id, public, _)| (id, public)),
        Some(("jwks".into(), true))
    );
    assert_eq!(
        find("/api/auth/keys/rotate"),
        Some(("auth".into(), false, "/api/auth/keys/rotate".into()))
    );
    // No trailing-slash leniency: this one is not the public login.
    assert_eq!(
        find("/api/auth/login/").map(|(id, public, _)| (id, public)),
        Some(("auth".into(), false))
    );
    assert_eq!(
        find("/api/auth/login/../keys/rotate").map(|(id, public, _)| (id, public)),
        Some(("auth".into(), false))
    );
    assert_eq!(
        find("/api/users/me"),
        Some(("users".into(), false, "/api/users/me".into()))
    );
    assert_eq!(
        find("/api/business/prompts?q=x"),
        Some(("business".into(), false, "/api/business/prompts?q=x".into()))
    );
    assert_eq!(find("/eureka/apps"), None);
    assert_eq!(find("/api/businessx"), None);
    assert_eq!(find("/api"), None);

    let targets: Vec<(String, Target)> = routes
        .iter()
        .map(|r| (r.id.to_string(), r.target.clone()))
        .collect();
    assert_eq!(targets.len(), 5);
    assert_eq!(routes.len(), 5);
    assert!(!routes.is_empty());
    assert!(targets.contains(&("users".into(), Target::Service("user-service".into()))));
    assert!(targets.contains(&(
        "business".into(),
        Target::Service("business-service".into())
    )));
}

// ---- Matching order ----

#[test]
fn order_beats_listing_and_first_match_wins() {
    let mut late = route("listed-first", vec![sc("Path=/x/**")], vec![]);
    late.order = 10;
    let mut early = route("listed-second", vec![sc("Path=/x/**")], vec![]);
    early.order = -1;
    let routes = compile(vec![late, early]);
    assert_eq!(
        id_of(&routes, &Req::get("/x/1")).as_deref(),
        Some("listed-second")
    );
    assert_eq!(
        routes.iter().map(|r| r.id.to_string()).collect::<Vec<_>>(),
        ["listed-second", "listed-first"]
    );

    // Equal orders: as listed; the first that matches wins even if a later one is narrower.
    let routes = compile(vec![
        route("wide", vec![sc("Path=/api/**")], vec![]),
        route("narrow", vec![sc("Path=/api/users/**")], vec![]),
        route("other", vec![sc("Path=/other")], vec![]),
    ]);
    assert_eq!(
        id_of(&routes, &Req::get("/api/users/1")).as_deref(),
        Some("wide")
    );
    assert_eq!(
        id_of(&routes, &Req::get("/other")).as_deref(),
        Some("other")
    );
}

#[test]
fn all_predicates_must_match_and_none_matches_everything() {
    let routes = compile(vec![
        route("get-only", vec![sc("Path=/a/**"), sc("Method=GET")], vec![]),
        route("catch-all", vec![], vec![]),
    ]);
    assert_eq!(
        id_of(&routes, &Req::get("/a/1")).as_deref(),
        Some("get-only")
    );
    assert_eq!(
        id_of(&routes, &Req::new("POST", "/a/1")).as_deref(),
        Some("catch-all")
    );
    assert_eq!(
        id_of(&routes, &Req::get("/zzz")).as_deref(),
        Some("catch-all")
    );
    assert!(Routes::default().find(&Req::get("/").r()).is_none());
}

#[test]
fn a_match_without_captures_does_not_allocate() {
    let routes = compile(crate::settings::default_routes());
    let req = Req::get("/api/users/me");
    let m = routes.find(&req.r()).expect("match");
    assert_eq!(m.vars.capacity(), 0);
    let routes = one(vec![sc("Path=/red/{segment}")], vec![]);
    let req = Req::get("/red/blue");
    let m = routes.find(&req.r()).expect("match");
    assert_eq!(m.vars.len(), 1);
}

// ---- Predicates, each in both forms ----

#[test]
fn path_predicate() {
    both_forms(
        sc("Path=/red/{segment},/blue/{segment}"),
        full(
            "Path",
            json!({"patterns": ["/red/{segment}", "/blue/{segment}"]}),
        ),
        &[
            (Req::get("/red/1"), true),
            (Req::get("/blue/green"), true),
            (Req::get("/red/1/"), false),
            (Req::get("/red"), false),
            (Req::get("/green/1"), false),
            (Req::get("/red/1/2"), false),
        ],
    );
    both_forms(
        sc("Path=/red/{segment},true"),
        full(
            "Path",
            json!({"patterns": "/red/{segment}", "matchTrailingSlash": true}),
        ),
        &[
            (Req::get("/red/1/"), true),
            (Req::get("/red/1"), true),
            (Req::get("/red/1//"), false),
        ],
    );
    both_forms(
        sc("Path=/api/**, /static/*.css, /v?/{*rest}"),
        full(
            "Path",
            json!({"patterns": ["/api/**", "/static/*.css", "/v?/{*rest}"], "match-trailing-slash": "false"}),
        ),
        &[
            (Req::get("/api"), true),
            (Req::get("/api/a/b"), true),
            (Req::get("/static/site.css"), true),
            (Req::get("/static/site.js"), false),
            (Req::get("/v1"), true),
            (Req::get("/v1/x/y"), true),
            (Req::get("/v12/x"), false),
            (Req::get("*"), false),
        ],
    );
}

#[test]
fn method_predicate() {
    both_forms(
        sc("Method=GET,post"),
        full("Method", json!({"methods": ["get", "POST"]})),
        &[
            (Req::get("/"), true),
            (Req::new("POST", "/"), true),
            (Req::new("PUT", "/"), false),
            (Req::new("DELETE", "/"), false),
        ],
    );
    let routes = one(
        vec![full("Method", json!({"methods": "PUT, PATCH"}))],
        vec![],
    );
    assert!(hits(&routes, &Req::new("PATCH", "/")));
    assert!(!hits(&routes, &Req::get("/")));
}

#[test]
fn host_predicate() {
    both_forms(
        sc("Host=**.somehost.org,**.anotherhost.org"),
        full(
            "Host",
            json!({"patterns": ["**.somehost.org", "**.anotherhost.org"]}),
        ),
        &[
            (Req::get("/").host("www.somehost.org"), true),
            (Req::get("/").host("beta.somehost.org:8080"), true),
            (Req::get("/").host("WWW.AnotherHost.org"), true),
            (Req::get("/").host("www.otherhost.org"), false),
            (Req::get("/").host("somehost.org.evil.com"), false),
            (Req::get("/"), false),
            (Req::get("/").host(""), false),
        ],
    );
    both_forms(
        sc("Host=localhost"),
        full("Host", json!({"patterns": "localhost"})),
        &[
            (Req::get("/").host("localhost:8080"), true),
            (Req::get("/").host("localhost"), true),
            (Req::get("/").host("localhost.localdomain"), false),
        ],
    );
}

#[test]
fn header_predicate() {
    both_forms(
        sc("Header=X-Request-Id, \\d+"),
        full(
            "Header",
            json!({"header": "X-Request-Id", "regexp": "\\d+"}),
        ),
        &[
            (Req::get("/").header("x-request-id", "123"), true),
            (Req::get("/").header("X-Request-Id", "12a"), false),
            (Req::get("/").header("x-request-id", "a123"), false),
            (
                Req::get("/")
                    .header("x-request-id", "abc")
                    .header("x-request-id", "7"),
                true,
            ),
            (Req::get("/"), false),
        ],
    );
    both_forms(
        sc("Header=X-Beta"),
        full("Header", json!({"header": "X-Beta"})),
        &[
            (Req::get("/").header("x-beta", ""), true),
            (Req::get("/"), false),
        ],
    );
}

#[test]
fn query_predicate() {
    both_forms(
        sc("Query=green"),
        full("Query", json!({"param": "green"})),
        &[
            (Req::get("/?green"), true),
            (Req::get("/?a=1&green=2"), true),
            (Req::get("/?red=green"), false),
            (Req::get("/?greenery=1"), false),
            (Req::get("/"), false),
        ],
    );
    both_forms(
        sc("Query=red, gree."),
        full("Query", json!({"param": "red", "regexp": "gree."})),
        &[
            (Req::get("/?red=green"), true),
            (Req::get("/?red=greet"), true),
            (Req::get("/?red=gree"), false),
            (Req::get("/?red=greenx"), false),
            (Req::get("/?red"), false),
            (Req::get("/?red=blue&red=green"), true),
            // Decoded before matching.
            (Req::get("/?r%65d=gr%65en"), true),
        ],
    );
    let routes = one(vec![sc("Query=q, 中文 a")], vec![]);
    assert!(hits(&routes, &Req::get("/?q=%E4%B8%AD%E6%96%87+a")));
    assert!(!hits(&routes, &Req::get("/?q=%E4%B8%AD%E6%96%87")));
    let long = format!("/?q={}", "%41".repeat(200));
    let routes = one(vec![sc("Query=q, A{200}")], vec![]);
    assert!(
        hits(&routes, &Req::get(&long)),
        "long encoded values are decoded too"
    );
}

#[test]
fn cookie_predicate() {
    both_forms(
        sc("Cookie=chocolate, ch.p"),
        full("Cookie", json!({"name": "chocolate", "regexp": "ch.p"})),
        &[
            (Req::get("/").header("cookie", "chocolate=chip"), true),
            (
                Req::get("/").header("cookie", "a=1; chocolate=chap; b=2"),
                true,
            ),
            (Req::get("/").header("cookie", "chocolate=\"chip\""), true),
            (
                Req::get("/")
                    .header("cookie", "a=1")
                    .header("cookie", "chocolate=chip"),
                true,
            ),
            (Req::get("/").header("cookie", "chocolate=chips"), false),
            (Req::get("/").header("cookie", "vanilla=chip"), false),
            (Req::get("/").header("cookie", "xchocolate=chip"), false),
            (Req::get("/"), false),
        ],
    );
}

#[test]
fn remote_addr_predicate() {
    both_forms(
        sc("RemoteAddr=192.168.1.1/24, 10.0.0.7"),
        full(
            "RemoteAddr",
            json!({"sources": ["192.168.1.1/24", "10.0.0.7"]}),
        ),
        &[
            (Req::get("/").from("192.168.1.10"), true),
            (Req::get("/").from("192.168.2.10"), false),
            (Req::get("/").from("10.0.0.7"), true),
            (Req::get("/").from("10.0.0.8"), false),
            // An IPv4 client reached over an IPv6 socket.
            (Req::get("/").from("::ffff:192.168.1.77"), true),
            (Req::get("/").from("::ffff:10.0.0.8"), false),
            (Req::get("/").from("2001:db8::1"), false),
        ],
    );
    both_forms(
        sc("RemoteAddr=2001:db8::/32,::1"),
        full("RemoteAddr", json!({"sources": "2001:db8::/32,::1"})),
        &[
            (Req::get("/").from("2001:db8:1::5"), true),
            (Req::get("/").from("2001:db9::1"), false),
            (Req::get("/").from("::1"), true),
            (Req::get("/").from("127.0.0.1"), false),
        ],
    );
    // A mapped range written in IPv6 form is the IPv4 range it maps.
    let routes = one(vec![sc("RemoteAddr=::ffff:10.0.0.0/104")], vec![]);
    assert!(hits(&routes, &Req::get("/").from("10.1.2.3")));
    assert!(hits(&routes, &Req::get("/").from("::ffff:10.1.2.3")));
    assert!(!hits(&routes, &Req::get("/").from("11.1.2.3")));
    let routes = one(vec![sc("RemoteAddr=0.0.0.0/0")], vec![]);
    assert!(hits(&routes, &Req::get("/").from("8.8.8.8")));
    assert!(!hits(&routes, &Req::get("/").from("2001:db8::1")));
}

#[test]
fn time_predicates() {
    let denver = "2017-01-20T17:42:47.789-07:00[America/Denver]";
    let before = at("2017-01-21T00:42:00Z"); // 17:42:00 in Denver
    let after = at("2017-01-21T00:43:00Z");
    for def in [
        sc(&format!("After={denver}")),
        full("After", json!({"datetime": denver})),
    ] {
        let routes = one(vec![def], vec![]);
        let req = Req::get("/");
        assert!(routes.find_at(&req.r(), before).is_none());
        assert!(routes.find_at(&req.r(), after).is_some());
        assert!(routes.find(&req.r()).is_some(), "it is later than 2017 now");
    }
    for def in [
        sc(&format!("Before={denver}")),
        full("Before", json!({"datetime": denver})),
    ] {
        let routes = one(vec![def], vec![]);
        let req = Req::get("/");
        assert!(routes.find_at(&req.r(), before).is_some());
        assert!(routes.find_at(&req.r(), after).is_none());
        assert!(routes.find(&req.r()).is_none(), "it is later than 2017 now");
    }
    let d2 = "2017-01-21T17:42:47.789-07:00[America/Denver]";
    for def in [
        sc(&format!("Between={denver}, {d2}")),
        full("Between", json!({"datetime1": denver, "datetime2": d2})),
    ] {
        let routes = one(vec![def], vec![]);
        let req = Req::get("/");
        assert!(routes.find_at(&req.r(), before).is_none());
        assert!(routes.find_at(&req.r(), after).is_some());
        assert!(
            routes
                .find_at(&req.r(), at("2017-01-22T01:00:00Z"))
                .is_none()
        );
    }
    // Epoch milliseconds, and a number in the full form.
    let routes = one(
        vec![full("After", json!({"datetime": 1_484_959_367_789_i64}))],
        vec![],
    );
    assert!(routes.find_at(&Req::get("/").r(), after).is_some());
    assert!(routes.find_at(&Req::get("/").r(), before).is_none());
}

// ---- Filters: Spring's documented examples, both forms ----

#[test]
fn rewrite_path_spring_example() {
    for f in [
        sc("RewritePath=/red/?(?<segment>.*), /$\\{segment}"),
        full(
            "RewritePath",
            json!({"regexp": "/red/?(?<segment>.*)", "replacement": "/${segment}"}),
        ),
    ] {
        let routes = one(vec![sc("Path=/red/**")], vec![f]);
        assert_eq!(upstream(&routes, &Req::get("/red/blue")), "/blue");
        assert_eq!(upstream(&routes, &Req::get("/red")), "/");
        assert_eq!(
            upstream(&routes, &Req::get("/red/blue/x?y=1")),
            "/blue/x?y=1"
        );
    }
}

#[test]
fn strip_prefix_spring_example() {
    for f in [
        sc("StripPrefix=2"),
        full("StripPrefix", json!({"parts": 2})),
        full("StripPrefix", json!({"parts": "2"})),
    ] {
        let routes = one(vec![sc("Path=/name/**")], vec![f]);
        let req = Req::get("/name/blue/red");
        assert_eq!(upstream(&routes, &req), "/red");
        let m = routes.find(&req.r()).expect("match");
        assert_eq!(m.stripped_prefix(&req.r()).as_deref(), Some("/name/blue"));
        assert_eq!(upstream(&routes, &Req::get("/name/blue")), "/");
    }
    let routes = one(vec![], vec![sc("PrefixPath=/p")]);
    let req = Req::get("/x");
    assert_eq!(
        routes
            .find(&req.r())
            .and_then(|m| m.stripped_prefix(&req.r())),
        None
    );
}

#[test]
fn set_path_spring_example() {
    for (p, f) in [
        (
            sc("Path=/red/{segment},/blue/{segment}"),
            sc("SetPath=/{segment}"),
        ),
        (
            full(
                "Path",
                json!({"patterns": ["/red/{segment}", "/blue/{segment}"]}),
            ),
            full("SetPath", json!({"template": "/{segment}"})),
        ),
    ] {
        let routes = one(vec![p], vec![f]);
        assert_eq!(upstream(&routes, &Req::get("/red/blue")), "/blue");
        assert_eq!(
            upstream(&routes, &Req::get("/blue/green?x=1")),
            "/green?x=1"
        );
    }
    // Variables go in as received; literals are encoded.
    let routes = one(vec![sc("Path=/docs/{id}")], vec![sc("SetPath=/文档/{id}")]);
    assert_eq!(
        upstream(&routes, &Req::get("/docs/a%2Fb")),
        "/%E6%96%87%E6%A1%A3/a%2Fb"
    );
    let routes = one(
        vec![sc("Path=/files/{*rest}")],
        vec![sc("SetPath=/store{rest}")],
    );
    assert_eq!(
        upstream(&routes, &Req::get("/files/a/b.txt")),
        "/store/a/b.txt"
    );
}

#[test]
fn prefix_path_spring_example() {
    for f in [
        sc("PrefixPath=/mypath"),
        full("PrefixPath", json!({"prefix": "/mypath"})),
    ] {
        let routes = one(vec![], vec![f]);
        assert_eq!(upstream(&routes, &Req::get("/hello")), "/mypath/hello");
        assert_eq!(upstream(&routes, &Req::get("/")), "/mypath/");
    }
}

#[test]
fn path_filters_apply_in_order_default_filters_first() {
    let defs = vec![route(
        "r",
        vec![sc("Path=/api/**")],
        vec![
            sc("PrefixPath=/v2"),
            sc("RewritePath=/v2/(?<rest>.*), /internal/${rest}"),
        ],
    )];
    let routes =
        Routes::compile(&defs, &[sc("StripPrefix=1")], &LimitSpec::default()).expect("compiles");
    let req = Req::get("/api/users/7?full=1");
    assert_eq!(upstream(&routes, &req), "/internal/users/7?full=1");
    let m = routes.find(&req.r()).expect("match");
    assert_eq!(m.stripped_prefix(&req.r()).as_deref(), Some("/api"));
}

#[test]
fn query_is_kept_byte_for_byte() {
    let routes = one(vec![sc("Path=/api/**")], vec![sc("StripPrefix=1")]);
    for q in [
        "q=%E4%B8%AD%E6%96%87&x=a+b",
        "q=中文&tag=%2F%3F%26&empty=&flag",
        "a=%e4%b8%ad&&b=1;c=2",
        "",
    ] {
        let req = Req::get(&format!("/api/search?{q}"));
        assert_eq!(upstream(&routes, &req), format!("/search?{q}"));
    }
    assert_eq!(upstream(&routes, &Req::get("/api/search")), "/search");
}

#[test]
fn path_is_kept_raw() {
    let routes = one(vec![sc("Path=/api/**")], vec![]);
    assert_eq!(
        upstream(&routes, &Req::get("/api/%E4%B8%AD/a%2Fb/%7e")),
        "/api/%E4%B8%AD/a%2Fb/%7e"
    );
}

#[test]
fn captured_values_are_decoded_in_headers() {
    let routes = one(
        vec![sc("Path=/red/{segment}")],
        vec![sc("AddRequestHeader=X-Request-Red, Blue-{segment}")],
    );
    let req = Req::get("/red/%E8%93%9D%20sky");
    let h = request_headers(&routes, &req, HeaderMap::new());
    assert_eq!(
        values(&h, "x-request-red"),
        [("Blue-蓝 sky".as_bytes().to_vec())]
    );
    // Spring's Host example: a variable from the Host predicate.
    let routes = one(
        vec![sc("Host={segment}.myhost.org")],
        vec![sc("AddRequestHeader=X-Request-Red, Blue-{segment}")],
    );
    let h = request_headers(
        &routes,
        &Req::get("/").host("www.myhost.org:8080"),
        HeaderMap::new(),
    );
    assert_eq!(values(&h, "x-request-red"), [b"Blue-www".to_vec()]);
}

#[test]
fn request_headers_added_set_and_removed() {
    let routes = one(
        vec![],
        vec![
            sc("AddRequestHeader=X-Request-red, blue"),
            full(
                "SetRequestHeader",
                json!({"name": "X-Mode", "value": "fast"}),
            ),
            full("RemoveRequestHeader", json!({"name": "X-Request-Foo"})),
            full("AddRequestHeader", json!({"name": "X-Count", "value": 5})),
        ],
    );
    let mut before = HeaderMap::new();
    before.append("x-request-red", HeaderValue::from_static("green"));
    before.append("x-mode", HeaderValue::from_static("slow"));
    before.append("x-mode", HeaderValue::from_static("slower"));
    before.append("x-request-foo", HeaderValue::from_static("1"));
    before.append("x-other", HeaderValue::from_static("kept"));
    let h = request_headers(&routes, &Req::get("/"), before);
    assert_eq!(
        values(&h, "x-request-red"),
        [b"green".to_vec(), b"blue".to_vec()]
    );
    assert_eq!(values(&h, "x-mode"), [b"fast".to_vec()]);
    assert!(values(&h, "x-request-foo").is_empty());
    assert_eq!(values(&h, "x-count"), [b"5".to_vec()]);
    assert_eq!(values(&h, "x-other"), [b"kept".to_vec()]);
}

#[test]
fn response_headers_added_set_and_removed() {
    let defs = vec![route(
        "r",
        vec![],
        vec![
            sc("SetResponseHeader=X-Response-Red, Blue"),
            full("RemoveResponseHeader", json!({"name": "Server"})),
        ],
    )];
    let routes = Routes::compile(
        &defs,
        &[
            sc("AddResponseHeader=X-Gateway, promptflow"),
            sc("AddResponseHeader=Server, gw"),
        ],
        &LimitSpec::default(),
    )
    .expect("compiles");
    let req = Req::get("/");
    let m = routes.find(&req.r()).expect("match");
    let mut h = HeaderMap::new();
    h.append("x-response-red", HeaderValue::from_static("old"));
    h.append("server", HeaderValue::from_static("upstream"));
    m.edit_response_headers(&mut h);
    assert_eq!(values(&h, "x-response-red"), [b"Blue".to_vec()]);
    assert_eq!(values(&h, "x-gateway"), [b"promptflow".to_vec()]);
    assert!(
        values(&h, "server").is_empty(),
        "the route's remove runs after the default add"
    );
    // Request headers are a separate list.
    let mut r = HeaderMap::new();
    m.edit_request_headers(&mut r);
    assert!(r.is_empty());
}

#[test]
fn preserve_host_and_request_size() {
    let routes = one(
        vec![],
        vec![sc("PreserveHostHeader"), sc("RequestSize=5000000")],
    );
    let r = routes.iter().next().expect("route");
    assert!(r.preserve_host);
    assert_eq!(r.max_body, Some(5_000_000));
    for (size, bytes) in [
        (json!("5MB"), 5 << 20),
        (json!("512KB"), 512 << 10),
        (json!(100), 100),
        (json!("1GB"), 1 << 30),
    ] {
        let routes = one(
            vec![],
            vec![
                full("RequestSize", json!({"maxSize": size})),
                full("PreserveHostHeader", json!({})),
            ],
        );
        let r = routes.iter().next().expect("route");
        assert_eq!(r.max_body, Some(bytes));
        assert!(r.preserve_host);
    }
    let routes = one(vec![], vec![]);
    let r = routes.iter().next().expect("route");
    assert!(!r.preserve_host);
    assert_eq!(r.max_body, None);
    assert_eq!(r.rate_limit, None);
    assert_eq!(r.retry, None);
}

#[test]
fn retry_filter() {
    let r = one(vec![], vec![sc("Retry=3")]);
    assert_eq!(
        r.iter().next().and_then(|r| r.retry.clone()),
        Some(RetryOverride {
            retries: 3,
            methods: None
        })
    );
    let r = one(
        vec![],
        vec![full(
            "Retry",
            json!({"retries": "1", "methods": ["get", "PUT", "GET"]}),
        )],
    );
    assert_eq!(
        r.iter().next().and_then(|r| r.retry.clone()),
        Some(RetryOverride {
            retries: 1,
            methods: Some(vec![Method::GET, Method::PUT])
        })
    );
    let r = one(vec![], vec![full("Retry", json!({"methods": "POST"}))]);
    assert_eq!(
        r.iter().next().and_then(|r| r.retry.clone()),
        Some(RetryOverride {
            retries: 3,
            methods: Some(vec![Method::POST])
        }),
        "Spring's default of 3 retries"
    );
}

#[test]
fn rate_limiter_filter() {
    let default = LimitSpec {
        replenish_rate: 50,
        burst_capacity: 100,
        requested_tokens: 1,
        key: KeyResolver::User,
    };
    let limit = |f: Definition| -> Result<Option<LimitSpec>, String> {
        Routes::compile(&[route("r", vec![], vec![f])], &[], &default)
            .map(|r| r.iter().next().and_then(|r| r.rate_limit.clone()))
    };
    let spec = |r, b, t, key| {
        Ok(Some(LimitSpec {
            replenish_rate: r,
            burst_capacity: b,
            requested_tokens: t,
            key,
        }))
    };
    // Spring's documented full form.
    assert_eq!(
        limit(full(
            "RequestRateLimiter",
            json!({
                "redis-rate-limiter.replenishRate": 10,
                "redis-rate-limiter.burstCapacity": 20,
                "redis-rate-limiter.requestedTokens": 1,
                "key-resolver": "#{@userKeyResolver}",
            })
        )),
        spec(10, 20, 1, KeyResolver::User)
    );
    assert_eq!(
        limit(full(
            "RequestRateLimiter",
            json!({"replenish_rate": 3, "burstCapacity": "6", "key-resolver": "#{@ipKeyResolver}"})
        )),
        spec(3, 6, 1, KeyResolver::Address)
    );
    assert_eq!(
        limit(full(
            "RequestRateLimiter",
            json!({"key-resolver": "#{@remoteAddrKeyResolver}"})
        )),
        spec(50, 100, 1, KeyResolver::Address)
    );
    assert_eq!(
        limit(full(
            "RequestRateLimiter",
            json!({"requested_tokens": 4, "key_resolver": "route"})
        )),
        spec(50, 100, 4, KeyResolver::Route)
    );
    assert_eq!(
        limit(sc("RequestRateLimiter=5, 10")),
        spec(5, 10, 1, KeyResolver::User)
    );
    assert_eq!(
        limit(sc("RequestRateLimiter=5, 10, 2")),
        spec(5, 10, 2, KeyResolver::User)
    );
    assert_eq!(
        limit(sc("RequestRateLimiter=5, 10, 2, address")),
        spec(5, 10, 2, KeyResolver::Address)
    );
    assert_eq!(
        limit(sc("RequestRateLimiter")),
        spec(50, 100, 1, KeyResolver::User)
    );

    let err = limit(sc("RequestRateLimiter=5, 2, 3")).unwrap_err();
    assert_eq!(
        err,
        "route `r`: filter `RequestRateLimiter=5, 2, 3`: `requestedTokens` (3) must not exceed `burstCapacity` (2): no request could ever pass"
    );
    assert_has(
        &limit(sc("RequestRateLimiter=0, 2")).unwrap_err(),
        &["`replenishRate`", "between 1 and"],
    );
    assert_has(
        &limit(full(
            "RequestRateLimiter",
            json!({"key-resolver": "#{@principalNameKeyResolver}"}),
        ))
        .unwrap_err(),
        &[
            "unknown key resolver `#{@principalNameKeyResolver}`",
            "#{@userKeyResolver}",
        ],
    );
    assert_has(
        &limit(full(
            "RequestRateLimiter",
            json!({"redis-rate-limiter.burst": 3}),
        ))
        .unwrap_err(),
        &[
            "unknown argument `redis-rate-limiter.burst`",
            "burstCapacity",
        ],
    );
    // A default filter limits every route; the route's own replaces it.
    let defs = vec![
        route("plain", vec![sc("Path=/a")], vec![]),
        route(
            "own",
            vec![sc("Path=/b")],
            vec![sc("RequestRateLimiter=1, 1")],
        ),
    ];
    let routes =
        Routes::compile(&defs, &[sc("RequestRateLimiter=7, 8")], &default).expect("compiles");
    let limits: Vec<_> = routes
        .iter()
        .map(|r| r.rate_limit.clone().map(|l| l.replenish_rate))
        .collect();
    assert_eq!(limits, [Some(7), Some(1)]);
    assert_eq!(
        routes.describe()[1]["filters"],
        json!(["RequestRateLimiter=1, 1, 1, user"])
    );
}

// ---- Route fields ----

#[test]
fn targets() {
    let target = |uri: &str| {
        let mut d = route("r", vec![], vec![]);
        d.uri = uri.into();
        Routes::compile(&[d], &[], &LimitSpec::default())
            .map(|r| r.iter().next().map(|r| r.target.clone()))
    };
    assert_eq!(
        target("lb://user-service"),
        Ok(Some(Target::Service("user-service".into())))
    );
    assert_eq!(
        target("lb://User_Service.v2/"),
        Ok(Some(Target::Service("User_Service.v2".into())))
    );
    assert_eq!(
        target("http://10.0.0.5:8081"),
        Ok(Some(Target::Url {
            scheme: http::uri::Scheme::HTTP,
            authority: "10.0.0.5:8081".parse().expect("authority")
        }))
    );
    assert_eq!(
        target("HTTP://legacy.internal/"),
        Ok(Some(Target::Url {
            scheme: http::uri::Scheme::HTTP,
            authority: "legacy.internal".parse().expect("authority")
        }))
    );
}

#[test]
fn metadata_timeouts() {
    let compiled = |m: RouteMetadata| {
        let mut d = route("r", vec![], vec![]);
        d.metadata = m;
        Routes::compile(&[d], &[], &LimitSpec::default()).map(|r| {
            r.iter()
                .next()
                .map(|r| (r.connect_timeout, r.response_timeout))
        })
    };
    assert_eq!(
        compiled(RouteMetadata::default()),
        Ok(Some((None, RouteTimeout::Default)))
    );
    assert_eq!(
        compiled(RouteMetadata {
            response_timeout: Some(-1),
            connect_timeout: Some(200)
        }),
        Ok(Some((Some(Duration::from_millis(200)), RouteTimeout::Off)))
    );
    assert_eq!(
        compiled(RouteMetadata {
            response_timeout: Some(1500),
            connect_timeout: None
        }),
        Ok(Some((
            None,
            RouteTimeout::After(Duration::from_millis(1500))
        )))
    );
    assert_eq!(
        compiled(RouteMetadata {
            response_timeout: Some(0),
            connect_timeout: None
        }),
        Ok(Some((None, RouteTimeout::After(Duration::ZERO))))
    );
    assert_has(
        &compiled(RouteMetadata {
            response_timeout: Some(-2),
            connect_timeout: None,
        })
        .unwrap_err(),
        &["route `r`", "`response-timeout`", "-1", "got -2"],
    );
    assert_has(
        &compiled(RouteMetadata {
            response_timeout: None,
            connect_timeout: Some(0),
        })
        .unwrap_err(),
        &["route `r`", "`connect-timeout`", "more than 0"],
    );
}

#[test]
fn describe_lists_routes_in_match_order() {
    let mut users = route(
        "users",
        vec![
            sc("Path=/api/users/**"),
            full("Method", json!({"methods": ["get", "post"]})),
        ],
        vec![
            full("StripPrefix", json!({"parts": 1})),
            full("Retry", json!({"retries": 2, "methods": "GET"})),
        ],
    );
    users.public = false;
    users.metadata = RouteMetadata {
        response_timeout: Some(-1),
        connect_timeout: Some(250),
    };
    let mut first = route("first", vec![sc("Header=X-Canary")], vec![]);
    first.order = -5;
    first.public = true;
    first.uri = "http://canary:8080".into();
    let routes = Routes::compile(
        &[users, first],
        &[sc("AddRequestHeader=X-Gateway, pf")],
        &LimitSpec::default(),
    )
    .expect("compiles");
    assert_eq!(
        routes.describe(),
        json!([
            {
                "route_id": "first", "uri": "http://canary:8080", "order": -5, "public": true,
                "predicates": ["Header=X-Canary"],
                "filters": ["AddRequestHeader=X-Gateway, pf"],
                "metadata": {}
            },
            {
                "route_id": "users", "uri": "lb://svc", "order": 0, "public": false,
                "predicates": ["Path=/api/users/**", "Method=GET,POST"],
                "filters": ["AddRequestHeader=X-Gateway, pf", "StripPrefix=1", "Retry=2, methods=GET"],
                "metadata": {"response-timeout": -1, "connect-timeout": 250}
            }
        ])
    );
}

#[test]
fn described_shortcuts_compile_to_the_same_routes() {
    let defs = vec![route(
        "r",
        vec![
            full(
                "Path",
                json!({"patterns": ["/a/{x}", "/b/{x}"], "matchTrailingSlash": true}),
            ),
            full("Query", json!({"param": "q", "regexp": "\\d+"})),
            full("RemoteAddr", json!({"sources": ["10.0.0.0/8"]})),
        ],
        vec![
            full("SetPath", json!({"template": "/{x}"})),
            full("RequestSize", json!({"maxSize": "1KB"})),
            full(
                "RequestRateLimiter",
                json!({"replenishRate": 2, "burstCapacity": 4}),
            ),
        ],
    )];
    let a = Routes::compile(&defs, &[], &LimitSpec::default()).expect("compiles");
    let described = a.describe();
    let text = |k: &str| -> Vec<Definition> {
        described[0][k]
            .as_array()
            .map(|v| v.iter().filter_map(|s| s.as_str()).map(sc).collect())
            .unwrap_or_default()
    };
    let b = compile(vec![route("r", text("predicates"), text("filters"))]);
    assert_eq!(a.describe(), b.describe());
    let req = Req::get("/b/7/?q=12").from("10.1.1.1");
    assert_eq!(upstream(&b, &req), "/7?q=12");
    let r = b.iter().next().expect("route");
    assert_eq!(r.max_body, Some(1024));
    assert_eq!(
        r.rate_limit
            .as_ref()
            .map(|l| (l.replenish_rate, l.burst_capacity)),
        Some((2, 4))
    );
}

// ---- Refusals ----

#[test]
fn the_brief_example_message() {
    assert_eq!(
        refused(vec![route("users", vec![sc("Path=")], vec![])]),
        "route `users`: predicate `Path=`: needs at least one pattern"
    );
}

#[test]
fn unknown_names_are_refused_with_the_supported_ones() {
    let e = refused_one(vec![sc("Foo=bar")], vec![]);
    assert_has(
        &e,
        &[
            "route `r`",
            "predicate `Foo=bar`",
            "unknown predicate `Foo`",
            "supported: After, Before",
            "RemoteAddr",
        ],
    );
    let e = refused_one(vec![sc("path=/x")], vec![]);
    assert_has(&e, &["unknown predicate `path`", "did you mean `Path`?"]);
    for name in [
        "CircuitBreaker",
        "SecureHeaders",
        "RedirectTo",
        "AddRequestParameter",
    ] {
        let e = refused_one(vec![], vec![full(name, json!({}))]);
        assert_has(
            &e,
            &[
                "route `r`",
                &format!("unsupported filter `{name}`"),
                "supported: AddRequestHeader",
                "StripPrefix",
            ],
        );
    }
    let e = refused_one(vec![sc("Weight=group1, 8")], vec![]);
    assert_has(
        &e,
        &[
            "route `r`",
            "`Weight=group1, 8`",
            "`Weight` is not supported",
        ],
    );
    let e = refused_one(
        vec![full("Weight", json!({"group": "g", "weight": 8}))],
        vec![],
    );
    assert_has(&e, &["`Weight` is not supported"]);
}

#[test]
fn bad_regexes_are_refused() {
    let e = refused_one(vec![], vec![sc("RewritePath=/red/(?<segment>.*, /x")]);
    assert_has(
        &e,
        &[
            "route `r`",
            "filter `RewritePath=",
            "bad regex `/red/(?<segment>.*`",
        ],
    );
    let e = refused_one(vec![sc("Header=X-Id, [0-9")], vec![]);
    assert_has(
        &e,
        &[
            "predicate `Header=X-Id, [0-9`",
            "bad regex `[0-9`",
            "unclosed character class",
        ],
    );
    let e = refused_one(vec![sc("Path=/u/{id:(?<=a)b}")], vec![]);
    assert_has(&e, &["pattern `/u/{id:(?<=a)b}`", "bad regex"]);
    let e = refused_one(
        vec![full("Cookie", json!({"name": "c", "regexp": "a)"}))],
        vec![],
    );
    assert_has(&e, &["predicate `Cookie`", "bad regex `a)`"]);
    let e = refused_one(vec![], vec![sc("RewritePath=/(a), /$2")]);
    assert_has(&e, &["replacement `/$2`", "no group 2"]);
}

#[test]
fn missing_unknown_and_ill_typed_arguments_are_refused() {
    let cases: Vec<(Vec<Definition>, Vec<Definition>, &[&str])> = vec![
        (
            vec![full("Header", json!({"regexp": "x"}))],
            vec![],
            &["predicate `Header`", "missing argument `header`"],
        ),
        (
            vec![sc("Cookie=chocolate")],
            vec![],
            &["predicate `Cookie=chocolate`", "missing argument `regexp`"],
        ),
        (vec![sc("Query=")], vec![], &["missing argument `param`"]),
        (
            vec![sc("Between=2017-01-20T17:42:47Z")],
            vec![],
            &["missing argument `datetime2`"],
        ),
        (
            vec![],
            vec![sc("AddRequestHeader=X-Only")],
            &[
                "filter `AddRequestHeader=X-Only`",
                "missing argument `value`",
            ],
        ),
        (
            vec![],
            vec![sc("RewritePath=/a")],
            &["missing argument `replacement`"],
        ),
        (
            vec![],
            vec![full("SetPath", json!({}))],
            &["missing argument `template`"],
        ),
        (vec![sc("Method=")], vec![], &["needs at least one method"]),
        (vec![sc("Host=")], vec![], &["needs at least one pattern"]),
        (
            vec![sc("RemoteAddr=")],
            vec![],
            &["needs at least one address"],
        ),
        (
            vec![full(
                "Path",
                json!({"patterns": "/a", "caseSensitive": true}),
            )],
            vec![],
            &[
                "unknown argument `caseSensitive`",
                "accepted: patterns, matchTrailingSlash",
            ],
        ),
        (
            vec![],
            vec![full("PreserveHostHeader", json!({"x": 1}))],
            &["takes no arguments, got `x`"],
        ),
        (
            vec![],
            vec![sc("PreserveHostHeader=yes")],
            &["takes no arguments"],
        ),
        (
            vec![full(
                "Path",
                json!({"patterns": "/a", "matchTrailingSlash": "yes"}),
            )],
            vec![],
            &[
                "`matchTrailingSlash`",
                "expected true or false, got a string",
            ],
        ),
        (
            vec![full("Path", json!({"patterns": {"a": 1}}))],
            vec![],
            &["`patterns`", "expected a list of strings, got an object"],
        ),
        (
            vec![],
            vec![full("StripPrefix", json!({"parts": "two"}))],
            &["`parts`", "`two` is not a whole number"],
        ),
        (
            vec![],
            vec![full("StripPrefix", json!({"parts": [1]}))],
            &["`parts`", "expected a whole number, got a list"],
        ),
        (
            vec![],
            vec![sc("StripPrefix=-1")],
            &["`parts`", "0 or more, got -1"],
        ),
        (
            vec![],
            vec![full("StripPrefix", json!({"parts": 1.5}))],
            &["`parts`", "not a whole number"],
        ),
        (vec![], vec![sc("Retry=-1")], &["`retries`", "0 or more"]),
        (
            vec![],
            vec![full("Header", json!({"name": null}))],
            &["unsupported filter `Header`"],
        ),
        (
            vec![],
            vec![full(
                "AddRequestHeader",
                json!({"name": null, "value": "v"}),
            )],
            &["`name`", "expected a string, got null"],
        ),
        (
            vec![sc("Method=GET, NOT A METHOD")],
            vec![],
            &["`NOT A METHOD` is not an HTTP method"],
        ),
        (
            vec![sc("After=yesterday")],
            vec![],
            &["`yesterday` is not a date-time like"],
        ),
        (
            vec![sc("Between=2017-01-21T00:00:00Z, 2017-01-20T00:00:00Z")],
            vec![],
            &["`datetime2` must be after `datetime1`"],
        ),
        (
            vec![sc("RemoteAddr=10.0.0.0/33")],
            vec![],
            &["`10.0.0.0/33`", "prefix length must be 0 to 32"],
        ),
        (
            vec![sc("RemoteAddr=intranet")],
            vec![],
            &["`intranet` is not an IP address"],
        ),
        (
            vec![sc("Host=example.org:8080")],
            vec![],
            &["without its port"],
        ),
        (
            vec![sc("Path=api/**")],
            vec![],
            &["pattern `api/**` must start with `/`"],
        ),
        (
            vec![sc("Path=/a/{*rest}/b")],
            vec![],
            &["must be the last segment"],
        ),
        (
            vec![],
            vec![sc("RequestSize=5 megabytes")],
            &["`maxSize`", "not a size"],
        ),
        (
            vec![],
            vec![sc("PrefixPath=mypath")],
            &["must start with `/`"],
        ),
        (
            vec![],
            vec![sc("PrefixPath=/mypath/")],
            &["must not end with `/`"],
        ),
        (
            vec![],
            vec![sc("PrefixPath=/p?x=1")],
            &["`?` cannot be part of a path"],
        ),
        (
            vec![],
            vec![sc("AddRequestHeader=Bad Name, v")],
            &["`Bad Name` is not a header name"],
        ),
        (
            vec![],
            vec![full(
                "SetResponseHeader",
                json!({"name": "X-A", "value": "a\nb"}),
            )],
            &["value `a\nb`", "cannot hold"],
        ),
        (
            vec![],
            vec![sc("SetRequestHeader=Content-Length, 5")],
            &["`content-length` is managed by the proxy"],
        ),
        (
            vec![],
            vec![sc("RemoveResponseHeader=Transfer-Encoding")],
            &["`transfer-encoding` is managed by the proxy"],
        ),
        (
            vec![],
            vec![full(
                "Retry",
                json!({"retries": 3, "statuses": "BAD_GATEWAY"}),
            )],
            &["argument `statuses` is not supported", "connection"],
        ),
        (
            vec![],
            vec![full("Retry", json!({"backoff": {"firstBackoff": "10ms"}}))],
            &["argument `backoff` is not supported"],
        ),
        (
            vec![],
            vec![sc("Retry=3, BAD_GATEWAY")],
            &["argument `statuses` is not supported"],
        ),
    ];
    for (p, f, want) in cases {
        let e = refused_one(p.clone(), f.clone());
        assert!(e.starts_with("route `r`: "), "{e}");
        assert_has(&e, want);
    }
}

#[test]
fn too_many_shortcut_values_point_to_the_full_form() {
    let e = refused_one(vec![sc("Header=X-Id, \\d{1,3}")], vec![]);
    assert_has(
        &e,
        &[
            "at most 2 value(s)",
            "(header, regexp)",
            "got 3",
            "full form",
        ],
    );
    let e = refused_one(
        vec![],
        vec![sc("AddResponseHeader=Cache-Control, no-cache, no-store")],
    );
    assert_has(&e, &["at most 2 value(s)", "full form"]);
    // The full form takes the comma.
    let routes = one(
        vec![full(
            "Header",
            json!({"header": "X-Id", "regexp": "\\d{1,3}"}),
        )],
        vec![],
    );
    assert!(hits(&routes, &Req::get("/").header("x-id", "123")));
    assert!(!hits(&routes, &Req::get("/").header("x-id", "1234")));
}

#[test]
fn upstream_uris_are_checked() {
    let e = |uri: &str| {
        let mut d = route("r", vec![], vec![]);
        d.uri = uri.into();
        refused(vec![d])
    };
    assert_has(
        &e("https://secure.internal"),
        &[
            "route `r`",
            "uri `https://secure.internal`",
            "https upstreams are not supported",
            "terminate TLS",
        ],
    );
    assert_has(
        &e("http://legacy:8080/base"),
        &[
            "uri `http://legacy:8080/base`",
            "has a path (`/base`)",
            "Spring ignores",
            "PrefixPath",
        ],
    );
    assert_has(
        &e("lb://user-service/api"),
        &["has a path (`/api`)", "PrefixPath"],
    );
    assert_has(&e("lb://user-service?x=1"), &["query or fragment"]);
    assert_has(&e("lb://user service"), &["service name `user service`"]);
    assert_has(&e("lb://"), &["needs a service name"]);
    assert_has(
        &e("ftp://files"),
        &["must be `lb://service-name` or `http://host[:port]`"],
    );
    assert_has(&e("user-service"), &["must be `lb://service-name`"]);
    assert_has(&e(""), &["uri ``", "must be"]);
    assert_has(&e("http://user:pw@host"), &["user info"]);
    assert_has(&e("http://host:"), &["not a host[:port]"]);
    assert_has(&e("http://host:0"), &["not a host[:port]"]);
    assert_has(&e("http://"), &["not a host[:port]"]);
}

#[test]
fn ids_must_be_present_and_unique() {
    let e = refused(vec![
        route("a", vec![], vec![]),
        route("b", vec![], vec![]),
        route("a", vec![], vec![]),
    ]);
    assert_eq!(
        e,
        "route `a`: the id is used by an earlier route too; ids must be unique"
    );
    let e = refused(vec![
        route("a", vec![], vec![]),
        route("  ", vec![], vec![]),
    ]);
    assert_has(&e, &["route #2", "uri `lb://svc`", "`id` is empty"]);
}

#[test]
fn variables_filters_use_must_be_captured() {
    let e = refused_one(vec![sc("Path=/red/{segment}")], vec![sc("SetPath=/{seg}")]);
    assert_has(&e, &["filter `SetPath=/{seg}`", "`{seg}` is not captured"]);
    // Captured by only one of the patterns: some requests would have no value.
    let e = refused_one(
        vec![sc("Path=/red/{segment},/blue")],
        vec![sc("SetPath=/{segment}")],
    );
    assert_has(&e, &["`{segment}` is not captured by every pattern"]);
    let e = refused_one(vec![], vec![sc("AddRequestHeader=X-Sub, {sub}")]);
    assert_has(&e, &["`{sub}` is not captured"]);
    let e = refused_one(
        vec![sc("Host={sub}.example.org"), sc("Path=/{sub}/**")],
        vec![],
    );
    assert_has(
        &e,
        &[
            "predicate `Path=/{sub}/**`",
            "variable `{sub}` is captured by another predicate too",
        ],
    );
    // A default filter is checked against every route.
    let defs = vec![
        route("with", vec![sc("Path=/{tenant}/**")], vec![]),
        route("without", vec![], vec![]),
    ];
    let e = Routes::compile(
        &defs,
        &[sc("AddRequestHeader=X-Tenant, {tenant}")],
        &LimitSpec::default(),
    )
    .unwrap_err();
    assert_has(
        &e,
        &[
            "route `without`",
            "default filter `AddRequestHeader=X-Tenant, {tenant}`",
            "`{tenant}` is not captured",
        ],
    );
}

#[test]
fn singleton_filters_given_twice_are_refused() {
    let e = refused_one(vec![], vec![sc("Retry=1"), sc("Retry=2")]);
    assert_has(&e, &["filter `Retry=2`", "`Retry` is given twice"]);
    let e = refused_one(
        vec![],
        vec![
            sc("RequestSize=1KB"),
            full("RequestSize", json!({"maxSize": 5})),
        ],
    );
    assert_has(&e, &["`RequestSize` is given twice"]);
    // But a route's own replaces a default one.
    let routes = Routes::compile(
        &[route("r", vec![], vec![sc("RequestSize=2KB")])],
        &[sc("RequestSize=1KB")],
        &LimitSpec::default(),
    )
    .expect("compiles");
    assert_eq!(routes.iter().next().and_then(|r| r.max_body), Some(2048));
    assert_eq!(routes.describe()[0]["filters"], json!(["RequestSize=2048"]));
}

#[test]
fn errors_name_the_route_even_for_default_filters() {
    let e = Routes::compile(
        &[route("users", vec![], vec![])],
        &[sc("StripPrefix=x")],
        &LimitSpec::default(),
    )
    .unwrap_err();
    assert_eq!(
        e,
        "route `users`: default filter `StripPrefix=x`: argument `parts`: `x` is not a whole number"
    );
}

#[test]
fn the_default_limit_is_checked_where_it_fills_in() {
    let zero = LimitSpec {
        replenish_rate: 0,
        ..LimitSpec::default()
    };
    let e = Routes::compile(
        &[route("r", vec![], vec![sc("RequestRateLimiter")])],
        &[],
        &zero,
    )
    .unwrap_err();
    assert_has(
        &e,
        &[
            "route `r`",
            "`replenishRate` is not given, and the default rate limit's is 0",
        ],
    );
    // A route without the filter does not care.
    assert!(Routes::compile(&[route("r", vec![], vec![])], &[], &zero).is_ok());
}

#[test]
fn the_table_can_be_shared_between_threads() {
    fn shared<T: Send + Sync + 'static>() {}
    shared::<Routes>();
    let routes = std::sync::Arc::new(compile(crate::settings::default_routes()));
    let r = std::sync::Arc::clone(&routes);
    let id = std::thread::spawn(move || id_of(&r, &Req::get("/api/users/me")))
        .join()
        .expect("thread");
    assert_eq!(id.as_deref(), Some("users"));
}
