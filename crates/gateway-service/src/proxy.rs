//! The proxy: one request from a client to an upstream instance and back.
//!
//! Route → authentication → rate limit → instance (circuit breaker, load balancer) →
//! upstream, retried on another instance when the connection failed and a retry is safe
//! and within budget. Bodies stream both ways; only small bodies of requests that may be
//! retried are held, so they can be sent again.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Uri};
use http_body_util::{BodyExt, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use platform::Problem;
use platform::auth::Claims;
use platform::discovery::Discovery;

use crate::auth::EdgeAuth;
use crate::balancer::{Balancer, Endpoint, Outcome};
use crate::breaker::Breakers;
use crate::budget::RetryBudget;
use crate::headers;
use crate::metrics as m;
use crate::ratelimit::{self, Decision, RateLimiter};
use crate::routes::{self, Target};
use crate::settings::{KeyResolver, LimitSpec, Settings};
use crate::table::{Table, split_base};

/// Reads the gateway's settings again (from the file and environment it started with).
pub type Reload = Arc<dyn Fn() -> Result<Settings, String> + Send + Sync>;

type HttpClient = Client<HttpConnector, Body>;

static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Upstream clients of this thread, by gateway, pool settings and connect timeout.
    static CLIENTS: RefCell<HashMap<(usize, u64, Duration), HttpClient>> =
        RefCell::new(HashMap::new());
}

/// A service's endpoints as of a registry generation.
type ServiceEndpoints = (u64, Arc<[Endpoint]>);

/// Everything the gateway keeps between requests. Settings that change are swapped in
/// whole (`apply`); requests in flight finish on the table they started with.
pub struct Gateway {
    table: ArcSwap<Table>,
    auth: EdgeAuth,
    limiter: ArcSwap<RateLimiter>,
    balancer: Balancer,
    breakers: Breakers,
    budget: RetryBudget,
    discovery: Discovery,
    trusted_proxies: Vec<IpAddr>,
    /// Tells this gateway's clients from another's in the workers' thread-local pools.
    id: usize,
    /// Bumped when the pool settings change: clients made before are not used again.
    pool_generation: AtomicU64,
    endpoints: RwLock<HashMap<Arc<str>, ServiceEndpoints>>,
    last_registry_refresh: Mutex<Option<Instant>>,
    reload: Option<Reload>,
    epoch: Instant,
}

impl Gateway {
    pub fn new(
        settings: Settings,
        auth: EdgeAuth,
        discovery: Discovery,
        trusted_proxies: Vec<IpAddr>,
        reload: Option<Reload>,
    ) -> Result<Gateway, String> {
        let balancer = Balancer::new(&settings.load_balancer);
        let limiter = RateLimiter::new(&settings.rate_limit)?;
        let breakers = Breakers::new(&settings.circuit_breaker);
        let budget = RetryBudget::new(
            settings.retry.budget_ratio,
            settings.retry.budget_min_per_sec,
        );
        let table = Table::compile(settings, &balancer)?;
        Ok(Gateway {
            table: ArcSwap::from_pointee(table),
            auth,
            limiter: ArcSwap::from_pointee(limiter),
            balancer,
            breakers,
            budget,
            discovery,
            trusted_proxies,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            pool_generation: AtomicU64::new(0),
            endpoints: RwLock::new(HashMap::new()),
            last_registry_refresh: Mutex::new(None),
            reload,
            epoch: Instant::now(),
        })
    }

    pub fn table(&self) -> Arc<Table> {
        self.table.load_full()
    }

    pub fn limiter(&self) -> Arc<RateLimiter> {
        self.limiter.load_full()
    }

    pub fn auth(&self) -> &EdgeAuth {
        &self.auth
    }

    pub fn breakers(&self) -> &Breakers {
        &self.breakers
    }

    pub fn balancer(&self) -> &Balancer {
        &self.balancer
    }

    /// Milliseconds on the gateway's monotonic clock.
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Puts new settings in force. `Ok(false)`: nothing changed. Settings read only at
    /// start (listen, CORS, token issuer) are named in a warning and keep their old value.
    pub fn apply(&self, settings: Settings) -> Result<bool, String> {
        let current = self.table.load();
        let old = &current.settings;
        if settings == *old {
            return Ok(false);
        }
        let table = Table::compile(settings, &self.balancer)?;
        let new = &table.settings;
        if new.rate_limit.backend != old.rate_limit.backend
            || new.rate_limit.redis != old.rate_limit.redis
        {
            self.limiter
                .store(Arc::new(RateLimiter::new(&new.rate_limit)?));
        }
        if new.pool_max_idle_per_host != old.pool_max_idle_per_host
            || new.pool_idle_timeout_secs != old.pool_idle_timeout_secs
        {
            self.pool_generation.fetch_add(1, Ordering::Relaxed);
        }
        let fixed_at_start = [
            ("listen", new.listen != old.listen),
            ("cors", new.cors != old.cors),
            ("jwks_url", new.jwks_url != old.jwks_url),
            ("issuer", new.issuer != old.issuer),
            ("audience", new.audience != old.audience),
            (
                "token_cache_entries",
                new.token_cache_entries != old.token_cache_entries,
            ),
        ];
        for (name, changed) in fixed_at_start {
            if changed {
                tracing::warn!(
                    setting = format!("gateway.{name}"),
                    "changed, but is read only at start; restart the gateway to apply it"
                );
            }
        }
        self.balancer.set_settings(&new.load_balancer);
        self.breakers.set_settings(&new.circuit_breaker);
        self.budget
            .set(new.retry.budget_ratio, new.retry.budget_min_per_sec);
        tracing::info!(routes = table.routes.len(), "gateway settings applied");
        self.table.store(Arc::new(table));
        Ok(true)
    }

    /// Reads the settings again and applies them; `Ok(false)` when nothing changed.
    pub fn reload(&self) -> Result<bool, String> {
        let Some(reload) = &self.reload else {
            return Ok(false);
        };
        self.apply(reload()?)
    }

    /// This thread's client for `connect_timeout`. Each worker thread keeps upstream
    /// connections of its own: a pooled connection is driven by a task on the thread that
    /// opened it, so a pool shared between threads would make every request wake another.
    fn client(&self, connect_timeout: Duration) -> HttpClient {
        let key = (
            self.id,
            self.pool_generation.load(Ordering::Relaxed),
            connect_timeout,
        );
        CLIENTS.with(|clients| {
            let mut clients = clients.borrow_mut();
            if let Some(c) = clients.get(&key) {
                return c.clone();
            }
            // Clients of settings no longer in force go (their idle connections with them).
            clients.retain(|(id, generation, _), _| *id != key.0 || *generation == key.1);
            let table = self.table.load();
            let mut connector = HttpConnector::new();
            connector.set_nodelay(true);
            connector.set_connect_timeout(Some(connect_timeout));
            let client = Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(table.settings.pool_max_idle_per_host)
                .pool_idle_timeout(Duration::from_secs(
                    table.settings.pool_idle_timeout_secs.max(1),
                ))
                .build(connector);
            clients.insert(key, client.clone());
            client
        })
    }

    /// The UP instances of `service`, rebuilt only when the registry changed. When there
    /// are none, the registry is asked again at once (at most once a second): a service
    /// that just registered should not wait for the next fetch.
    async fn endpoints_of(&self, service: &Arc<str>) -> Result<Arc<[Endpoint]>, Problem> {
        let generation = self.discovery.generation();
        if let Some((g, list)) = read(&self.endpoints).get(service)
            && *g == generation
            && !list.is_empty()
        {
            return Ok(list.clone());
        }
        let mut list = self.build_endpoints(service);
        let mut generation = generation;
        if list.is_empty() && self.may_refresh_registry() {
            if let Err(e) = self.discovery.refresh().await {
                tracing::debug!(error = %e, "registry refresh failed");
            }
            generation = self.discovery.generation();
            list = self.build_endpoints(service);
        }
        write(&self.endpoints).insert(service.clone(), (generation, list.clone()));
        if list.is_empty() {
            return Err(
                Problem::unavailable(format!("no instance of {service} is up"))
                    .header(header::RETRY_AFTER, HeaderValue::from_static("1")),
            );
        }
        Ok(list)
    }

    fn build_endpoints(&self, service: &str) -> Arc<[Endpoint]> {
        let prefer_ip = self.discovery.settings().prefer_ip_address;
        self.discovery
            .instances(service)
            .iter()
            .filter_map(|i| {
                let (scheme, authority) = split_base(&i.base_url(prefer_ip))?;
                (scheme == http::uri::Scheme::HTTP)
                    .then(|| self.balancer.endpoint(&i.instance_id, scheme, authority))
            })
            .collect()
    }

    fn may_refresh_registry(&self) -> bool {
        let Ok(mut last) = self.last_registry_refresh.try_lock() else {
            return false;
        };
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    /// Every endpoint the gateway currently knows, by service (for gauges and clean-up).
    pub fn known_endpoints(&self) -> Vec<(Arc<str>, Arc<[Endpoint]>)> {
        read(&self.endpoints)
            .iter()
            .map(|(s, (_, list))| (s.clone(), list.clone()))
            .collect()
    }

    /// Handles one request; never fails (problems are answers).
    pub async fn handle(&self, peer: SocketAddr, req: Request<Body>) -> Response {
        let started = Instant::now();
        let table = self.table.load_full();
        let request_id = headers::request_id(req.headers());
        let method = req.method().clone();
        let path_for_log = table
            .settings
            .access_log
            .then(|| req.uri().path().to_owned());
        let mut trail = Trail::default();
        let (parts, body) = req.into_parts();
        let mut body = Some(body);
        let mut response = match self
            .forward(&table, peer, parts, &mut body, &request_id, &mut trail)
            .await
        {
            Ok(r) => r,
            Err(p) => {
                if let Some(unread) = body.take() {
                    drain(unread);
                }
                p.into_response()
            }
        };
        response
            .headers_mut()
            .insert(headers::REQUEST_ID, request_id.clone());
        let status = response.status();
        m::request(trail.route.as_ref(), status, started.elapsed());
        if let Some(path) = path_for_log {
            tracing::info!(
                target: "gateway::access",
                method = %method,
                path = %path,
                route = trail.route.as_deref().unwrap_or("-"),
                status = status.as_u16(),
                upstream = trail.upstream.as_deref().unwrap_or("-"),
                attempts = trail.attempts,
                latency_ms = started.elapsed().as_secs_f64() * 1000.0,
                request_id = request_id.to_str().unwrap_or("-"),
                "proxied"
            );
        }
        response
    }

    async fn forward(
        &self,
        table: &Table,
        peer: SocketAddr,
        mut parts: http::request::Parts,
        body: &mut Option<Body>,
        request_id: &HeaderValue,
        trail: &mut Trail,
    ) -> Result<Response, Problem> {
        if headers::suspicious_path(parts.uri.path()) {
            return Err(Problem::malformed(
                "the path may not hold `.` or `..` segments or encoded separators",
            ));
        }
        let peer_ip = peer.ip();
        let peer_trusted = self.trusted_proxies.contains(&peer_ip);
        let client_ip = if peer_trusted {
            platform::server::client_ip(peer_ip, &parts.headers, &self.trusted_proxies)
        } else {
            peer_ip
        };
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| parts.uri.authority().map(|a| a.as_str()));
        let request = routes::Request {
            method: &parts.method,
            path: parts.uri.path(),
            query: parts.uri.query(),
            host,
            headers: &parts.headers,
            remote: client_ip,
        };
        let matched = table
            .routes
            .find(&request)
            .ok_or_else(|| Problem::not_found("no route matches this path"))?;
        let route = matched.route;
        trail.route = Some(route.id.clone());
        let path_and_query = matched.upstream_path_and_query(&request);
        let stripped = matched.stripped_prefix(&request);

        let claims = if route.public {
            None
        } else {
            Some(self.authenticate(&parts.headers).await?)
        };

        let mut limit_answer = None;
        if let Some(spec) = table.limit(route) {
            let decision = self
                .take_token(&route.id, spec, claims.as_deref(), client_ip)
                .await;
            match decision {
                Decision::Allowed { .. } => {}
                Decision::Limited { retry_after } => {
                    m::rate_limited(&route.id);
                    let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
                    let mut problem = Problem::too_many_requests(
                        secs,
                        format!("too many requests on route {}; slow down", route.id),
                    );
                    if table.settings.rate_limit.include_headers {
                        let mut h = http::HeaderMap::new();
                        ratelimit::write_headers(spec, &decision, &mut h);
                        for (k, v) in &h {
                            problem = problem.header(k.clone(), v.clone());
                        }
                    }
                    return Err(problem);
                }
                Decision::Unavailable => {
                    return Err(Problem::unavailable(
                        "the rate limiter cannot be reached; try again shortly",
                    )
                    .header(header::RETRY_AFTER, HeaderValue::from_static("1")));
                }
            }
            if table.settings.rate_limit.include_headers {
                limit_answer = Some((spec, decision));
            }
        }

        let limit = table.body_limit(route);
        let content_length = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if content_length.is_some_and(|n| n > limit) {
            return Err(Problem::payload_too_large(
                usize::try_from(limit).unwrap_or(usize::MAX),
            ));
        }
        let has_body = content_length.map_or_else(
            || parts.headers.contains_key(header::TRANSFER_ENCODING),
            |n| n > 0,
        );
        let (retries, idempotent) = table.retries(route, &parts.method);
        let mut payload = if !has_body {
            Payload::Empty
        } else if retries > 0
            && content_length.is_some_and(|n| n <= table.settings.retry.max_buffered_body)
        {
            let body = body.take().unwrap_or_else(Body::empty);
            let bytes = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX))
                .collect()
                .await
                .map_err(|_| Problem::malformed("the request body could not be read"))?
                .to_bytes();
            Payload::Held(bytes)
        } else {
            let body = body.take().unwrap_or_else(Body::empty);
            Payload::Stream(Some(Body::new(Capped {
                inner: Some(body),
                left: limit,
            })))
        };

        let mut headers = std::mem::take(&mut parts.headers);
        let host_value = headers.get(header::HOST).cloned();
        headers::remove_hop_by_hop(&mut headers);
        headers.remove(header::EXPECT);
        table.identity.strip(&mut headers);
        headers::add_forwarded(
            &mut headers,
            peer_ip,
            peer_trusted,
            host_value.as_ref(),
            stripped.as_deref(),
        );
        headers.insert(headers::REQUEST_ID, request_id.clone());
        let traceparent = headers::traceparent(&headers);
        headers.insert(headers::TRACEPARENT, traceparent);
        if let Some(claims) = &claims {
            if let Ok(v) = HeaderValue::from_str(&claims.sub) {
                headers.insert(headers::USER_ID, v);
            }
            if let Ok(v) = HeaderValue::from_str(&claims.roles.join(",")) {
                headers.insert(headers::USER_ROLES, v);
            }
        }
        if !route.preserve_host {
            // The client sets the instance's authority.
            headers.remove(header::HOST);
        }
        matched.edit_request_headers(&mut headers);

        let (service, endpoints): (Arc<str>, Arc<[Endpoint]>) = match &route.target {
            Target::Service(name) => (name.clone(), self.endpoints_of(name).await?),
            Target::Url { .. } => (
                route.id.clone(),
                table.fixed_endpoints(route).ok_or_else(Problem::internal)?,
            ),
        };
        let now = self.now_ms();
        let breaker = self.breakers.get(&service);
        let permit = breaker.try_acquire(now).map_err(|wait| {
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            Problem::unavailable(format!(
                "{service} is failing; requests to it are held back for a while"
            ))
            .header(header::RETRY_AFTER, HeaderValue::from(secs))
        })?;
        self.budget.record_request(now);

        let client = self.client(table.connect_timeout(route));
        let timeout = table.response_timeout(route);
        let mut tried = [0usize; 12];
        let mut n_tried = 0;
        let failure = loop {
            let now = self.now_ms();
            let Some(picked) = self
                .balancer
                .pick(&service, &endpoints, &tried[..n_tried], now)
            else {
                break Problem::bad_gateway(format!("no instance of {service} could be reached"));
            };
            let endpoint = &endpoints[picked.index];
            if n_tried < tried.len() {
                tried[n_tried] = picked.index;
                n_tried += 1;
            }
            trail.attempts += 1;
            trail.upstream = Some(endpoint.id.clone());
            let uri = Uri::builder()
                .scheme(endpoint.scheme.clone())
                .authority(endpoint.authority.clone())
                .path_and_query(path_and_query.as_str())
                .build()
                .map_err(|_| Problem::malformed("the request path cannot be forwarded"))?;
            let mut upstream = Request::new(payload.body());
            *upstream.method_mut() = parts.method.clone();
            *upstream.uri_mut() = uri;
            *upstream.headers_mut() = headers.clone();
            let sent = Instant::now();
            let call = client.request(upstream);
            let result = match timeout {
                Some(t) => tokio::time::timeout(t, call).await.ok(),
                None => Some(call.await),
            };
            let may_go_again = trail.attempts <= retries && payload.replayable();
            match result {
                Some(Ok(response)) => {
                    drop(picked);
                    let outcome = self
                        .balancer
                        .record(endpoint, Outcome::Success, self.now_ms());
                    debug_assert!(outcome.is_none());
                    m::upstream(&service, &endpoint.id, "response", sent.elapsed());
                    let failed = table
                        .settings
                        .circuit_breaker
                        .failure_statuses
                        .contains(&response.status().as_u16());
                    permit.record(!failed, self.now_ms());
                    let (mut rparts, rbody) = response.into_parts();
                    headers::remove_hop_by_hop(&mut rparts.headers);
                    matched.edit_response_headers(&mut rparts.headers);
                    if let Some((spec, decision)) = &limit_answer {
                        ratelimit::write_headers(spec, decision, &mut rparts.headers);
                    }
                    return Ok(Response::from_parts(rparts, Body::new(rbody)));
                }
                Some(Err(e)) if e.is_connect() => {
                    drop(picked);
                    m::upstream(&service, &endpoint.id, "connect_error", sent.elapsed());
                    if let Some(ejected) =
                        self.balancer
                            .record(endpoint, Outcome::ConnectFailure, self.now_ms())
                    {
                        m::ejected(&service, &endpoint.id);
                        tracing::warn!(service = %service, instance = %endpoint.id, seconds = ejected.as_secs(), error = %error_chain(&e), "instance refuses connections; ejected");
                    }
                    // Nothing was sent: any method may go again.
                    if may_go_again && self.budget.try_retry(self.now_ms()) {
                        m::retry(&route.id);
                        continue;
                    }
                    break Problem::bad_gateway(format!("could not connect to {service}"));
                }
                Some(Err(e)) => {
                    drop(picked);
                    if body_too_large(&e) {
                        permit.record(true, self.now_ms());
                        return Err(Problem::payload_too_large(
                            usize::try_from(limit).unwrap_or(usize::MAX),
                        ));
                    }
                    m::upstream(&service, &endpoint.id, "error", sent.elapsed());
                    self.balancer
                        .record(endpoint, Outcome::Failure, self.now_ms());
                    tracing::debug!(service = %service, instance = %endpoint.id, error = %error_chain(&e), "upstream failed before answering");
                    if idempotent && may_go_again && self.budget.try_retry(self.now_ms()) {
                        m::retry(&route.id);
                        continue;
                    }
                    break Problem::bad_gateway(format!("{service} failed before answering"));
                }
                None => {
                    drop(picked);
                    m::upstream(&service, &endpoint.id, "timeout", sent.elapsed());
                    self.balancer
                        .record(endpoint, Outcome::Failure, self.now_ms());
                    permit.record(false, self.now_ms());
                    return Err(Problem::gateway_timeout(format!(
                        "{service} did not answer within {} ms",
                        timeout.map_or(0, |t| t.as_millis())
                    )));
                }
            }
        };
        permit.record(false, self.now_ms());
        Err(failure)
    }

    async fn authenticate(&self, headers: &http::HeaderMap) -> Result<Arc<Claims>, Problem> {
        let Some(token) = platform::auth::bearer(headers) else {
            m::auth_failure("missing");
            return Err(Problem::unauthorized(
                "send an access token as `Authorization: Bearer <token>`",
            ));
        };
        self.auth.verify(token).await.map_err(|e| {
            m::auth_failure(m::token_error_label(&e));
            Problem::from(e)
        })
    }

    async fn take_token(
        &self,
        route: &str,
        spec: &LimitSpec,
        claims: Option<&Claims>,
        client_ip: IpAddr,
    ) -> Decision {
        let limiter = self.limiter.load();
        let address;
        let key = match (spec.key, claims) {
            (KeyResolver::Route, _) => route,
            (KeyResolver::User, Some(c)) => c.sub.as_str(),
            (KeyResolver::User | KeyResolver::Address, _) => {
                address = client_ip.to_string();
                address.as_str()
            }
        };
        limiter.check(route, key, spec).await
    }

    /// Forgets what is no longer needed; publishes the gauges. Run every few seconds.
    pub fn housekeeping(&self) {
        let tokens = self.auth.purge();
        metrics::gauge!(m::TOKEN_CACHE).set(tokens as f64);
        let known = self.known_endpoints();
        let now = self.now_ms();
        let mut live: Vec<Arc<str>> = Vec::new();
        for (service, endpoints) in &known {
            for e in endpoints.iter() {
                live.push(e.id.clone());
                let labels = [
                    ("service", service.to_string()),
                    ("instance", e.id.to_string()),
                ];
                metrics::gauge!(m::IN_FLIGHT, &labels).set(f64::from(self.balancer.in_flight(e)));
                metrics::gauge!(m::EJECTED, &labels).set(if self.balancer.is_ejected(e, now) {
                    1.0
                } else {
                    0.0
                });
            }
        }
        let table = self.table.load();
        for route in table.routes.iter() {
            if let Some(list) = table.fixed_endpoints(route) {
                live.extend(list.iter().map(|e| e.id.clone()));
            }
        }
        self.balancer
            .retain(&live.iter().map(|id| &**id).collect::<HashSet<&str>>());
        for (service, state) in self.breakers.states(now) {
            metrics::gauge!(m::CIRCUIT, "service" => service).set(m::circuit_value(state));
        }
    }
}

/// A request body as it is sent upstream.
enum Payload {
    Empty,
    /// Small: kept, so another attempt can send it again.
    Held(Bytes),
    /// Streamed through once.
    Stream(Option<Body>),
}

impl Payload {
    fn body(&mut self) -> Body {
        match self {
            Payload::Empty => Body::empty(),
            Payload::Held(bytes) => Body::from(bytes.clone()),
            Payload::Stream(body) => body.take().unwrap_or_else(Body::empty),
        }
    }

    fn replayable(&self) -> bool {
        !matches!(self, Payload::Stream(_))
    }
}

/// What the access log and metrics say of a request.
#[derive(Default)]
struct Trail {
    route: Option<Arc<str>>,
    upstream: Option<Arc<str>>,
    attempts: u32,
}

/// Bytes of a refused request's body read and thrown away at most, and for how long.
const DRAIN_BYTES: u64 = 64 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// Reads and throws away what is left of a refused request's body, for a while, beside the
/// answer: a client still sending would otherwise meet a reset connection and never read
/// why it was refused (nginx's lingering close).
fn drain(body: Body) {
    if http_body::Body::is_end_stream(&body) {
        return;
    }
    tokio::spawn(async move {
        let mut body = body;
        let mut read = 0u64;
        let deadline = tokio::time::Instant::now() + DRAIN_TIME;
        while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(deadline, body.frame()).await {
            read += frame.data_ref().map_or(0, |d| d.len() as u64);
            if read > DRAIN_BYTES {
                break;
            }
        }
    });
}

/// A streamed request body that stops at the route's limit; what is left then is drained.
struct Capped {
    inner: Option<Body>,
    left: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("the request body is larger than the limit")]
struct TooLarge;

impl http_body::Body for Capped {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        use std::task::Poll;
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match std::pin::Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                if len > this.left {
                    if let Some(rest) = this.inner.take() {
                        drain(rest);
                    }
                    return Poll::Ready(Some(Err(Box::new(TooLarge))));
                }
                this.left -= len;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner
            .as_ref()
            .is_none_or(http_body::Body::is_end_stream)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.as_ref().map_or_else(
            || http_body::SizeHint::with_exact(0),
            http_body::Body::size_hint,
        )
    }
}

fn body_too_large(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(err) = source {
        if err.is::<TooLarge>() {
            return true;
        }
        source = err.source();
    }
    false
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(err) = source {
        text.push_str(": ");
        text.push_str(&err.to_string());
        source = err.source();
    }
    text
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}
