//! The route table: Spring Cloud Gateway route definitions (see [`crate::settings`]) compiled
//! once, then matched on every request.
//!
//! Predicates: `Path`, `Method`, `Host`, `Header`, `Query`, `Cookie`, `RemoteAddr`, `After`,
//! `Before`, `Between`, in both of Spring's forms. Filters: `StripPrefix`, `PrefixPath`,
//! `RewritePath`, `SetPath`, `Add`/`Set`/`RemoveRequestHeader`, `Add`/`Set`/`RemoveResponseHeader`,
//! `PreserveHostHeader`, `RequestSize`, `RequestRateLimiter`, `Retry`. Anything else is refused
//! when the table is compiled, with a sentence naming the route and what is wrong.
//!
//! Where this differs from Spring, or goes beyond what it documents:
//! - `Path`'s `matchTrailingSlash` defaults to `false` (Spring's own default is `true`): write
//!   `Path=/a/{x},true` or `matchTrailingSlash: true` for `/a/1/` to match `/a/{x}`.
//! - Paths are matched raw (percent-encoded, `;` parameters included, dot segments not
//!   resolved); literals in patterns are percent-encoded to match. Captured values are decoded
//!   where they become header values; SetPath puts them in as received, so the upstream sees
//!   the client's bytes.
//! - `**` may also stand in the middle of a path pattern.
//! - Full-form argument names bind relaxed (`maxSize`, `max-size`, `max_size`).
//! - Too many shortcut values is an error (Spring drops them): a regex or header value holding
//!   a comma needs the full form.
//! - Defaults where Spring has them: `StripPrefix` 1, `RequestSize` 5000000 bytes, `Retry` 3.
//!   `StripPrefix=0` leaves the path as it is.
//! - `After`/`Before`/`Between` also take epoch milliseconds, as Spring's converter does.
//! - `RequestRateLimiter`'s shortcut takes a fourth value, the key resolver
//!   (`RequestRateLimiter=10, 20, 1, address`), so `describe` can show all of it.
//! - `Retry` takes `retries` and `methods` only; `statuses`, `series`, `exceptions` and
//!   `backoff` are refused, as this gateway retries only failed connections.
//! - `RequestRateLimiter`, `Retry`, `RequestSize` and `PreserveHostHeader` given by a route
//!   replace the default filter's; twice in one list is an error.
//! - A variable a filter uses (`SetPath=/{segment}`, `AddRequestHeader=X-Sub, {sub}`) must be
//!   captured by every pattern of a Path or Host predicate of the route; one variable name in two
//!   predicates is an error.
//! - No filter may touch `Content-Length`, `Transfer-Encoding` or hop-by-hop headers.
//! - `PrefixPath`, `SetPath` and RewritePath's replacement may not hold `?` or `#`.

mod args;
mod filters;
mod pattern;
mod predicates;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use http::uri::{Authority, Scheme};
use http::{HeaderMap, Method};

use crate::settings::{Definition, LimitSpec, RouteDefinition, RouteMetadata};
use filters::{Filter, FilterKind, HeaderOp, PathOp};
use pattern::Captured;
use predicates::Predicate;

/// Compiled routes, sorted by `order`, then as listed.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    routes: Vec<Route>,
    /// Some route has After/Before/Between: `find` reads the clock.
    uses_clock: bool,
    /// Some route has Header or Cookie predicates: `find` needs the request's fields.
    uses_headers: bool,
}

/// What a request looks like to predicates. `path` is the raw request path as received
/// (percent-encoded), `query` the raw query without `?`, `host` the Host header (may carry a
/// port).
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub host: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub remote: IpAddr,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub id: Arc<str>,
    pub order: i32,
    /// As written in the settings (for logs and describe).
    pub uri: String,
    pub target: Target,
    /// Reachable without an access token.
    pub public: bool,
    /// Some when the route (or default_filters) has a RequestRateLimiter filter; arguments it
    /// does not give come from `default_limit`.
    pub rate_limit: Option<LimitSpec>,
    /// Some when the route has a Retry filter.
    pub retry: Option<RetryOverride>,
    /// metadata `connect-timeout` (ms).
    pub connect_timeout: Option<Duration>,
    /// metadata `response-timeout` (ms): absent → Default, -1 → Off, n ≥ 0 → After(n ms).
    pub response_timeout: RouteTimeout,
    /// RequestSize filter (`maxSize`), in bytes.
    pub max_body: Option<u64>,
    /// PreserveHostHeader filter: send the client's Host upstream instead of the instance's.
    pub preserve_host: bool,
    predicates: Vec<Predicate>,
    path_ops: Vec<PathOp>,
    request_headers: Vec<HeaderOp>,
    response_headers: Vec<HeaderOp>,
    /// Shortcut forms of the filters in effect, default filters first.
    filter_texts: Vec<String>,
    metadata: RouteMetadata,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `lb://name`: a service found through discovery (name as written; lookups ignore case).
    Service(Arc<str>),
    /// A fixed `http://host[:port]` URL.
    Url {
        scheme: Scheme,
        authority: Authority,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteTimeout {
    Default,
    Off,
    After(Duration),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryOverride {
    pub retries: u32,
    pub methods: Option<Vec<Method>>,
}

/// A route that matched one request (with whatever the predicates captured).
#[derive(Debug, Clone)]
pub struct Matched<'r> {
    pub route: &'r Route,
    vars: Vec<Captured<'r>>,
}

impl Routes {
    /// Compiles the definitions. `default_filters` apply to every route before its own filters
    /// (Spring's default-filters). `default_limit` fills the arguments a RequestRateLimiter
    /// filter leaves out. Errors are one sentence naming the route id and the offending
    /// predicate/filter/argument, e.g. "route `users`: predicate `Path=`: needs at least one
    /// pattern".
    pub fn compile(
        defs: &[RouteDefinition],
        default_filters: &[Definition],
        default_limit: &LimitSpec,
    ) -> Result<Routes, String> {
        let mut ids = HashSet::new();
        let mut routes = Vec::with_capacity(defs.len());
        for (i, def) in defs.iter().enumerate() {
            let id = def.id.trim();
            if id.is_empty() {
                return Err(format!(
                    "route #{} (uri `{}`): `id` is empty; every route needs a unique id",
                    i + 1,
                    def.uri
                ));
            }
            if !ids.insert(id) {
                return Err(format!(
                    "route `{id}`: the id is used by an earlier route too; ids must be unique"
                ));
            }
            routes.push(Route::compile(id, def, default_filters, default_limit)?);
        }
        // Stable: equal orders keep the listed order.
        routes.sort_by_key(|r| r.order);
        let uses_clock = routes
            .iter()
            .any(|r| r.predicates.iter().any(Predicate::uses_clock));
        let uses_headers = routes
            .iter()
            .any(|r| r.predicates.iter().any(Predicate::uses_headers));
        Ok(Routes {
            routes,
            uses_clock,
            uses_headers,
        })
    }

    /// The first route whose predicates all match (a route with no predicates matches
    /// everything).
    pub fn find<'r>(&'r self, req: &Request<'_>) -> Option<Matched<'r>> {
        let now = if self.uses_clock {
            Utc::now()
        } else {
            // No predicate reads it.
            DateTime::<Utc>::MIN_UTC
        };
        self.find_at(req, now)
    }

    fn find_at<'r>(&'r self, req: &Request<'_>, now: DateTime<Utc>) -> Option<Matched<'r>> {
        // Allocates only when a pattern captures.
        let mut vars = Vec::new();
        for route in &self.routes {
            vars.clear();
            if route.predicates.iter().all(|p| p.test(req, now, &mut vars)) {
                return Some(Matched { route, vars });
            }
        }
        None
    }

    /// For `GET /actuator/gateway/routes`: a JSON array, one object per route in match order:
    /// {"route_id", "uri", "order", "public", "predicates": [strings in shortcut form],
    ///  "filters": [strings in shortcut form, default filters first], "metadata": {...}}.
    /// A Retry with methods reads `Retry=3, methods=GET,PUT`.
    pub fn describe(&self) -> serde_json::Value {
        serde_json::Value::Array(self.routes.iter().map(Route::describe).collect())
    }

    /// Whether `find` looks at `Request::headers` (otherwise an empty map will do).
    pub fn uses_headers(&self) -> bool {
        self.uses_headers
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }
}

/// Singleton filters: a route's own replaces the default filter's.
fn singleton(kind: &FilterKind) -> Option<&'static str> {
    match kind {
        FilterKind::PreserveHost => Some("PreserveHostHeader"),
        FilterKind::RequestSize(_) => Some("RequestSize"),
        FilterKind::RateLimit(_) => Some("RequestRateLimiter"),
        FilterKind::Retry(_) => Some("Retry"),
        _ => None,
    }
}

impl Route {
    fn compile(
        id: &str,
        def: &RouteDefinition,
        default_filters: &[Definition],
        default_limit: &LimitSpec,
    ) -> Result<Route, String> {
        let ctx = format!("route `{id}`");
        let target = parse_uri(&def.uri).map_err(|e| format!("{ctx}: uri `{}`: {e}", def.uri))?;

        let predicates = def
            .predicates
            .iter()
            .map(|p| Predicate::compile(p, &ctx))
            .collect::<Result<Vec<_>, _>>()?;
        let mut captured: Vec<&str> = Vec::new();
        for (p, written) in predicates.iter().zip(&def.predicates) {
            for v in p.any_vars() {
                if captured.contains(&v) {
                    return Err(format!(
                        "{ctx}: predicate `{}`: variable `{{{v}}}` is captured by another predicate too",
                        args::label(written)
                    ));
                }
                captured.push(v);
            }
        }
        let sure: Vec<&str> = predicates.iter().flat_map(Predicate::sure_vars).collect();

        let mut route = Route {
            id: Arc::from(id),
            order: def.order,
            uri: def.uri.clone(),
            target,
            public: def.public,
            rate_limit: None,
            retry: None,
            connect_timeout: None,
            response_timeout: RouteTimeout::Default,
            max_body: None,
            preserve_host: false,
            predicates: Vec::new(),
            path_ops: Vec::new(),
            request_headers: Vec::new(),
            response_headers: Vec::new(),
            filter_texts: Vec::new(),
            metadata: def.metadata.clone(),
        };
        // Shortcut forms, with the singleton each sets (a route's own drops the default's).
        let mut texts: Vec<(Option<&'static str>, String)> = Vec::new();
        for (list, what) in [
            (default_filters, "default filter"),
            (&def.filters[..], "filter"),
        ] {
            let mut once: Vec<&'static str> = Vec::new();
            for f in list {
                let fctx = format!("{ctx}: {what} `{}`", args::label(f));
                let filter = Filter::compile(f, fctx.clone(), default_limit)?;
                if let Some(v) = filter.uses.iter().find(|v| !sure.contains(&v.as_str())) {
                    return Err(format!(
                        "{fctx}: `{{{v}}}` is not captured by every pattern of this route's Path or Host predicates"
                    ));
                }
                let single = singleton(&filter.kind);
                if let Some(s) = single {
                    if once.contains(&s) {
                        return Err(format!("{fctx}: `{s}` is given twice; give it once"));
                    }
                    once.push(s);
                    texts.retain(|(t, _)| *t != Some(s));
                }
                texts.push((single, filter.text));
                match filter.kind {
                    FilterKind::Path(op) => route.path_ops.push(op),
                    FilterKind::RequestHeader(op) => route.request_headers.push(op),
                    FilterKind::ResponseHeader(op) => route.response_headers.push(op),
                    FilterKind::PreserveHost => route.preserve_host = true,
                    FilterKind::RequestSize(n) => route.max_body = Some(n),
                    FilterKind::RateLimit(l) => route.rate_limit = Some(l),
                    FilterKind::Retry(r) => route.retry = Some(r),
                }
            }
        }
        route.filter_texts = texts.into_iter().map(|(_, t)| t).collect();
        route.predicates = predicates;

        route.connect_timeout = match def.metadata.connect_timeout {
            None => None,
            Some(0) => {
                return Err(format!(
                    "{ctx}: metadata `connect-timeout` must be more than 0 ms"
                ));
            }
            Some(ms) => Some(Duration::from_millis(ms)),
        };
        route.response_timeout = match def.metadata.response_timeout {
            None => RouteTimeout::Default,
            Some(-1) => RouteTimeout::Off,
            Some(ms) => match u64::try_from(ms) {
                Ok(ms) => RouteTimeout::After(Duration::from_millis(ms)),
                Err(_) => {
                    return Err(format!(
                        "{ctx}: metadata `response-timeout` must be -1 (none) or 0 or more ms, got {ms}"
                    ));
                }
            },
        };
        Ok(route)
    }

    fn describe(&self) -> serde_json::Value {
        let mut metadata = serde_json::Map::new();
        if let Some(ms) = self.metadata.response_timeout {
            metadata.insert("response-timeout".into(), ms.into());
        }
        if let Some(ms) = self.metadata.connect_timeout {
            metadata.insert("connect-timeout".into(), ms.into());
        }
        serde_json::json!({
            "route_id": &*self.id,
            "uri": self.uri,
            "order": self.order,
            "public": self.public,
            "predicates": self.predicates.iter().map(|p| p.text.as_str()).collect::<Vec<_>>(),
            "filters": self.filter_texts,
            "metadata": metadata,
        })
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    s.get(..prefix.len())
        .filter(|p| p.eq_ignore_ascii_case(prefix))
        .map(|_| &s[prefix.len()..])
}

/// `lb://name` or `http://host[:port]`, with at most a `/` after it.
fn parse_uri(uri: &str) -> Result<Target, String> {
    let u = uri.trim();
    // Where the authority ends, and a check on what follows it.
    let tail_ok = |tail: &str| -> Result<(), String> {
        let path_end = tail.find(['?', '#']).unwrap_or(tail.len());
        let path = &tail[..path_end];
        if !path.is_empty() && path != "/" {
            return Err(format!(
                "has a path (`{path}`), which Spring ignores; add it with a PrefixPath filter instead"
            ));
        }
        if path_end < tail.len() {
            return Err(
                "has a query or fragment; an upstream uri is only scheme, host and port".into(),
            );
        }
        Ok(())
    };
    let split = |rest: &str| {
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        (rest[..end].to_owned(), rest[end..].to_owned())
    };
    if let Some(rest) = strip_prefix_ci(u, "lb://") {
        let (name, tail) = split(rest);
        if name.is_empty() {
            return Err("needs a service name after `lb://`".into());
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(format!(
                "the service name `{name}` may only hold letters, digits, `.`, `_` and `-`"
            ));
        }
        tail_ok(&tail)?;
        return Ok(Target::Service(Arc::from(name)));
    }
    if strip_prefix_ci(u, "https://").is_some() {
        return Err(
            "https upstreams are not supported; terminate TLS in front of the services and route to them over http"
                .into(),
        );
    }
    let Some(rest) = strip_prefix_ci(u, "http://") else {
        return Err("must be `lb://service-name` or `http://host[:port]`".into());
    };
    let (auth, tail) = split(rest);
    tail_ok(&tail)?;
    if auth.contains('@') {
        return Err("user info (`user@`) is not supported in an upstream uri".into());
    }
    let authority: Authority = auth
        .parse()
        .map_err(|_| format!("`{auth}` is not a host[:port]"))?;
    if authority.host().is_empty() || auth.ends_with(':') || authority.port_u16() == Some(0) {
        return Err(format!("`{auth}` is not a host[:port]"));
    }
    Ok(Target::Url {
        scheme: Scheme::HTTP,
        authority,
    })
}

impl Matched<'_> {
    /// The path after the path filters, and what StripPrefix removed.
    fn rewrite(&self, req: &Request<'_>) -> (String, String) {
        let mut stripped = String::new();
        let mut path = if req.path.is_empty() { "/" } else { req.path }.to_owned();
        for op in &self.route.path_ops {
            path = op.apply(&path, &self.vars, &mut stripped);
        }
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        (path, stripped)
    }

    /// Path and query to send upstream: the path after the route's path filters (StripPrefix,
    /// PrefixPath, RewritePath, SetPath, applied in filter order, default filters first),
    /// then `?query` as received when there was one. Always starts with `/`.
    pub fn upstream_path_and_query(&self, req: &Request<'_>) -> String {
        let (mut out, _) = self.rewrite(req);
        if let Some(q) = req.query {
            out.push('?');
            out.push_str(q);
        }
        out
    }

    /// What StripPrefix removed from the path (for X-Forwarded-Prefix), if anything: the
    /// removed segments as received, e.g. `/api/v1`.
    pub fn stripped_prefix(&self, req: &Request<'_>) -> Option<String> {
        if !self
            .route
            .path_ops
            .iter()
            .any(|op| matches!(op, PathOp::Strip(n) if *n > 0))
        {
            return None;
        }
        let (_, stripped) = self.rewrite(req);
        (!stripped.is_empty()).then_some(stripped)
    }

    /// Applies Add/Set/RemoveRequestHeader filters, in filter order.
    /// Whether the route has Add/Set/RemoveRequestHeader filters.
    pub fn edits_request_headers(&self) -> bool {
        !self.route.request_headers.is_empty()
    }

    /// Whether the route has Add/Set/RemoveResponseHeader filters.
    pub fn edits_response_headers(&self) -> bool {
        !self.route.response_headers.is_empty()
    }

    pub fn edit_request_headers(&self, headers: &mut HeaderMap) {
        for op in &self.route.request_headers {
            op.apply(headers, &self.vars);
        }
    }

    /// Applies Add/Set/RemoveResponseHeader filters, in filter order.
    pub fn edit_response_headers(&self, headers: &mut HeaderMap) {
        for op in &self.route.response_headers {
            op.apply(headers, &self.vars);
        }
    }
}
