//! The gateway's Prometheus series: per route, per upstream service and instance. Labels
//! come from the settings and the registry (route ids, service names, instance ids), never
//! from what a client sends, so the number of series stays bounded.

use std::cell::RefCell;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::StatusCode;
use metrics::{Counter, Histogram, SharedString};
use platform::auth::TokenError;

use crate::breaker::State;

pub const REQUESTS: &str = "gateway_requests_total";
pub const DURATION: &str = "gateway_request_duration_seconds";
pub const UPSTREAM: &str = "gateway_upstream_requests_total";
pub const UPSTREAM_DURATION: &str = "gateway_upstream_duration_seconds";
pub const RETRIES: &str = "gateway_retries_total";
pub const EJECTIONS: &str = "gateway_ejections_total";
pub const RATE_LIMITED: &str = "gateway_rate_limited_total";
pub const AUTH_FAILURES: &str = "gateway_auth_failures_total";
pub const IN_FLIGHT: &str = "gateway_upstream_in_flight";
pub const EJECTED: &str = "gateway_upstream_ejected";
pub const CIRCUIT: &str = "gateway_circuit_state";
pub const TOKEN_CACHE: &str = "gateway_token_cache_entries";
pub const WORKERS_ACTIVE: &str = "gateway_workers_active";
pub const CONNECTIONS_MOVED: &str = "gateway_connections_moved_total";

pub fn describe() {
    platform::metrics::install();
    metrics::describe_counter!(
        REQUESTS,
        "Requests answered by the gateway, by route and status"
    );
    metrics::describe_histogram!(
        DURATION,
        metrics::Unit::Seconds,
        "Time from a request's arrival to its answer's head, by route"
    );
    metrics::describe_counter!(
        UPSTREAM,
        "Attempts sent to upstream instances, by service, instance and outcome"
    );
    metrics::describe_histogram!(
        UPSTREAM_DURATION,
        metrics::Unit::Seconds,
        "Time an upstream took to answer an attempt's head, by service"
    );
    metrics::describe_counter!(RETRIES, "Attempts sent again on another instance, by route");
    metrics::describe_counter!(EJECTIONS, "Instances ejected after connection failures");
    metrics::describe_counter!(RATE_LIMITED, "Requests refused by a rate limit, by route");
    metrics::describe_counter!(AUTH_FAILURES, "Requests refused for their token, by reason");
    metrics::describe_gauge!(IN_FLIGHT, "Requests in flight per upstream instance");
    metrics::describe_gauge!(EJECTED, "1 while an upstream instance is ejected");
    metrics::describe_gauge!(
        CIRCUIT,
        "Circuit breaker per service: 0 closed, 1 half open, 2 open"
    );
    metrics::describe_gauge!(TOKEN_CACHE, "Verified access tokens remembered");
    metrics::describe_gauge!(WORKERS_ACTIVE, "Workers taking new connections");
    metrics::describe_counter!(
        CONNECTIONS_MOVED,
        "Client connections moved between workers (packing or spreading the load)"
    );
}

/// `"200"`, `"404"`, ... without allocating per request.
fn status_label(status: StatusCode) -> &'static str {
    static LABELS: OnceLock<Vec<String>> = OnceLock::new();
    let labels = LABELS.get_or_init(|| (0..1000).map(|c| c.to_string()).collect());
    labels
        .get(usize::from(status.as_u16()))
        .map_or("other", String::as_str)
}

fn route_label(route: Option<&Arc<str>>) -> SharedString {
    route.map_or(SharedString::const_str("unmatched"), |r| {
        SharedString::from(r.clone())
    })
}

/// Keys are short and come from the settings and the registry: a fast hash will do.
type Map<K, V> = foldhash::HashMap<K, V>;

/// Handles of this thread's series, so that a request does not look its series up in the
/// registry (building and hashing their keys) every time. Cleared if it ever grows large
/// (instances come and go).
#[derive(Default)]
struct Handles {
    routes: Map<Arc<str>, RouteSeries>,
    unmatched: Option<RouteSeries>,
    upstreams: Map<Arc<str>, UpstreamSeries>,
}

struct RouteSeries {
    /// Few statuses per route: a list beats a map.
    by_status: Vec<(u16, Tally)>,
    duration: Samples,
}

struct UpstreamSeries {
    service: Arc<str>,
    by_outcome: Vec<(&'static str, Tally)>,
    duration: Samples,
}

/// What a thread counts before it adds it to the shared series: the series' atomics are
/// written by every worker, and a write per request would bounce their cache lines between
/// the cores. Added every `BATCH`, whenever the worker is about to wait for work (`flush`,
/// from the runtime's park hook) and before `/metrics` is rendered.
const BATCH: usize = 32;

struct Tally {
    counter: Counter,
    pending: u64,
}

impl Tally {
    fn add(&mut self) {
        self.pending += 1;
        if self.pending >= BATCH as u64 {
            self.flush();
        }
    }
    fn flush(&mut self) {
        if self.pending > 0 {
            self.counter.increment(self.pending);
            self.pending = 0;
        }
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        self.flush();
    }
}

struct Samples {
    histogram: Histogram,
    pending: Vec<f64>,
}

impl Samples {
    fn new(histogram: Histogram) -> Self {
        Samples {
            histogram,
            pending: Vec::with_capacity(BATCH),
        }
    }
    fn record(&mut self, value: f64) {
        self.pending.push(value);
        if self.pending.len() >= BATCH {
            self.flush();
        }
    }
    fn flush(&mut self) {
        for v in self.pending.drain(..) {
            self.histogram.record(v);
        }
    }
}

impl Drop for Samples {
    fn drop(&mut self) {
        self.flush();
    }
}

/// The tally for `key` in a short list, made by `make` the first time.
fn tally_in<K: PartialEq + Copy>(
    list: &mut Vec<(K, Tally)>,
    key: K,
    make: impl FnOnce() -> Counter,
) -> &mut Tally {
    let at = match list.iter().position(|(k, _)| *k == key) {
        Some(at) => at,
        None => {
            list.push((
                key,
                Tally {
                    counter: make(),
                    pending: 0,
                },
            ));
            list.len() - 1
        }
    };
    &mut list[at].1
}

/// Adds what this thread has counted to the shared series.
pub fn flush() {
    let _ = HANDLES.try_with(|h| {
        let Ok(mut h) = h.try_borrow_mut() else {
            return;
        };
        let h = &mut *h;
        for series in h.routes.values_mut().chain(h.unmatched.as_mut()) {
            series.by_status.iter_mut().for_each(|(_, t)| t.flush());
            series.duration.flush();
        }
        for series in h.upstreams.values_mut() {
            series.by_outcome.iter_mut().for_each(|(_, t)| t.flush());
            series.duration.flush();
        }
    });
}

const MAX_HANDLES: usize = 10_000;

thread_local! {
    static HANDLES: RefCell<Handles> = RefCell::new(Handles::default());
}

impl RouteSeries {
    fn new(route: &SharedString) -> Self {
        RouteSeries {
            by_status: Vec::new(),
            duration: Samples::new(metrics::histogram!(DURATION, "route" => route.clone())),
        }
    }
}

pub fn request(route: Option<&Arc<str>>, status: StatusCode, took: Duration) {
    HANDLES.with(|h| {
        let mut h = h.borrow_mut();
        if h.routes.len() > MAX_HANDLES {
            h.routes.clear();
        }
        let label = || route_label(route);
        let series = match route {
            Some(r) => {
                // Looked up before inserting: cloning the shared `Arc` on every request
                // would bounce its count between the worker threads.
                if !h.routes.contains_key(&**r) {
                    h.routes.insert(r.clone(), RouteSeries::new(&label()));
                }
                match h.routes.get_mut(&**r) {
                    Some(series) => series,
                    None => return,
                }
            }
            None => h
                .unmatched
                .get_or_insert_with(|| RouteSeries::new(&label())),
        };
        tally_in(
            &mut series.by_status,
            status.as_u16(),
            || metrics::counter!(REQUESTS, "route" => label(), "status" => status_label(status)),
        )
        .add();
        series.duration.record(took.as_secs_f64());
    });
}

pub fn upstream(service: &Arc<str>, instance: &Arc<str>, outcome: &'static str, took: Duration) {
    HANDLES.with(|h| {
        let mut h = h.borrow_mut();
        if h.upstreams.len() > MAX_HANDLES {
            h.upstreams.clear();
        }
        let fresh = || UpstreamSeries {
            service: service.clone(),
            by_outcome: Vec::new(),
            duration: Samples::new(metrics::histogram!(
                UPSTREAM_DURATION,
                "service" => SharedString::from(service.clone())
            )),
        };
        // A new instance, or the same id under another service: a new registration.
        if h.upstreams
            .get(&**instance)
            .is_none_or(|u| u.service != *service)
        {
            h.upstreams.insert(instance.clone(), fresh());
        }
        let Some(series) = h.upstreams.get_mut(&**instance) else {
            return;
        };
        tally_in(&mut series.by_outcome, outcome, || {
            metrics::counter!(
                UPSTREAM,
                "service" => SharedString::from(service.clone()),
                "instance" => SharedString::from(instance.clone()),
                "outcome" => outcome
            )
        })
        .add();
        series.duration.record(took.as_secs_f64());
    });
}

pub fn workers_active(n: usize) {
    metrics::gauge!(WORKERS_ACTIVE).set(n as f64);
}

pub fn connection_moved() {
    metrics::counter!(CONNECTIONS_MOVED).increment(1);
}

pub fn retry(route: &Arc<str>) {
    metrics::counter!(RETRIES, "route" => SharedString::from(route.clone())).increment(1);
}

pub fn ejected(service: &Arc<str>, instance: &Arc<str>) {
    metrics::counter!(
        EJECTIONS,
        "service" => SharedString::from(service.clone()),
        "instance" => SharedString::from(instance.clone())
    )
    .increment(1);
}

pub fn rate_limited(route: &Arc<str>) {
    metrics::counter!(RATE_LIMITED, "route" => SharedString::from(route.clone())).increment(1);
}

pub fn auth_failure(reason: &'static str) {
    metrics::counter!(AUTH_FAILURES, "reason" => reason).increment(1);
}

pub fn token_error_label(e: &TokenError) -> &'static str {
    match e {
        TokenError::Malformed => "malformed",
        TokenError::Algorithm => "algorithm",
        TokenError::UnknownKey => "unknown_key",
        TokenError::Signature => "signature",
        TokenError::Expired => "expired",
        TokenError::Audience => "audience",
        TokenError::Issuer => "issuer",
        TokenError::Invalid(_) => "invalid",
    }
}

pub fn circuit_value(state: State) -> f64 {
    match state {
        State::Closed => 0.0,
        State::HalfOpen => 1.0,
        State::Open => 2.0,
    }
}
