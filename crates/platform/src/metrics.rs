//! Prometheus metrics: one recorder per process (all-in-one mode runs five services in one
//! process, so every series carries a `service` label), request counts and latency by route,
//! method and status, and the process's memory, CPU and file descriptors.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const REQUESTS: &str = "http_server_requests_total";
pub const ERRORS: &str = "http_server_errors_total";
pub const DURATION: &str = "http_server_request_duration_seconds";

/// For every `*_seconds` histogram of every service; the gateway's own share of a request
/// is often well under a millisecond.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// How often histogram samples are folded into buckets.
const UPKEEP: Duration = Duration::from_millis(100);

struct Registry {
    handle: PrometheusHandle,
    process: metrics_process::Collector,
}

static REGISTRY: OnceLock<Registry> = OnceLock::new();

fn registry() -> &'static Registry {
    REGISTRY.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS)
            .map(PrometheusBuilder::build_recorder)
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
        }
        let process = metrics_process::Collector::default();
        process.describe();
        metrics::describe_counter!(REQUESTS, "HTTP requests answered");
        metrics::describe_counter!(ERRORS, "HTTP requests answered with a 5xx status");
        metrics::describe_histogram!(
            DURATION,
            metrics::Unit::Seconds,
            "Time to answer an HTTP request"
        );
        // Histograms keep raw samples until upkeep folds them into buckets. Often, in
        // small pieces: folded every 5 s, the gateway's samples at 31,500 req/s took this
        // thread 2.4 ms at a stretch, and a gateway worker waiting behind it for the CPU
        // held every request it serves (`perf sched timehist`); 5 s of samples at
        // saturation also held several megabytes.
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP);
                    upkeep.run_upkeep();
                }
            })
            .ok();
        Registry { handle, process }
    })
}

/// Makes sure the recorder is installed before the first request is counted.
pub fn install() {
    registry();
}

/// `GET /metrics` in the Prometheus text format.
pub async fn render() -> Response {
    let registry = registry();
    registry.process.collect();
    let body = registry.handle.render();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

/// Middleware counting and timing every request by service, method, route and status.
/// Requests that match no route share the route label `unmatched`, so that probing random
/// paths cannot grow the number of series.
pub async fn track(State(service): State<&'static str>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().as_str().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(req).await;
    let status = response.status();
    let labels = [
        ("service", service.to_owned()),
        ("method", method),
        ("route", route),
        ("status", status.as_u16().to_string()),
    ];
    metrics::counter!(REQUESTS, &labels).increment(1);
    metrics::histogram!(DURATION, &labels).record(start.elapsed().as_secs_f64());
    if status.is_server_error() {
        metrics::counter!(ERRORS, &labels).increment(1);
    }
    response
}
