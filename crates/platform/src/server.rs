//! Server bootstrap shared by every service: request ids, request logs, metrics, health,
//! body limit, timeouts, panics turned into problems, and graceful shutdown.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use tracing::Span;

use crate::extract::BodyLimit;
use crate::problem::Problem;
use crate::settings::HttpSettings;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A readiness check: `Ok` when the dependency answers.
pub type Check = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// The readiness check of a service's database.
pub fn database_check(db: crate::db::Db) -> Check {
    Arc::new(move || {
        let db = db.clone();
        Box::pin(async move { db.ping().await.map_err(|e| e.to_string()) })
    })
}

/// A service, ready to be served: its routes (state applied) and what its readiness
/// depends on.
pub struct Service {
    pub name: &'static str,
    pub routes: Router,
    pub checks: Vec<(&'static str, Check)>,
}

/// The request id of the request being handled (from `X-Request-Id`, or made here).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The peers whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone)]
struct TrustedProxies(Arc<Vec<IpAddr>>);

/// Wraps a service's routes with everything every service has.
pub fn app(service: Service, http: &HttpSettings) -> Router {
    let common = health_routes(service.checks);
    let limit = http.body_limit;
    let timeout = Duration::from_secs(http.request_timeout_secs.max(1));

    service
        .routes
        .merge(common)
        .fallback(|| async { Problem::not_found("no resource lives at this path") })
        .method_not_allowed_fallback(|| async { Problem::method_not_allowed() })
        // Layers run bottom-up for a request: the last added is the outermost.
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::Extension(BodyLimit(limit)))
        .layer(axum::Extension(TrustedProxies(Arc::new(
            http.trusted_proxies.clone(),
        ))))
        .layer(middleware::from_fn_with_state(timeout, deadline))
        .layer(CatchPanicLayer::custom(panic_to_problem))
        .layer(middleware::from_fn_with_state(
            service.name,
            crate::metrics::track,
        ))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(move |req: &Request| {
                    let id = req
                        .extensions()
                        .get::<RequestId>()
                        .map_or("", |r| r.0.as_str());
                    tracing::info_span!(
                        "request",
                        service = service.name,
                        request_id = %id,
                        method = %req.method(),
                        path = %req.uri().path(),
                    )
                })
                .on_request(())
                .on_response(|res: &Response, latency: Duration, _span: &Span| {
                    tracing::info!(
                        status = res.status().as_u16(),
                        latency_ms = latency.as_secs_f64() * 1000.0,
                        "answered"
                    );
                })
                .on_failure(()),
        )
        .layer(middleware::from_fn(request_id))
        .layer(middleware::from_fn(trace_context))
}

/// `GET /health` (liveness), `GET /health/ready` (the `checks`) and `GET /metrics`, which
/// every service answers.
pub fn health_routes(checks: Vec<(&'static str, Check)>) -> Router {
    crate::metrics::install();
    Router::new()
        .route("/health", get(health))
        .route("/health/ready", get(ready).with_state(Arc::new(checks)))
        .route("/metrics", get(crate::metrics::render))
}

/// A handler's panic, logged and answered as an `internal` problem (for `CatchPanicLayer`).
pub fn panic_to_problem(panic: Box<dyn std::any::Any + Send>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    tracing::error!(panic = message, "handler panicked");
    Problem::internal().into_response()
}

/// Keeps the caller's W3C `traceparent` for the request's work, so the events it causes
/// carry on the caller's trace.
async fn trace_context(req: Request, next: Next) -> Response {
    let traceparent = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .filter(|tp| crate::events::valid_traceparent(tp))
        .map(str::to_owned);
    crate::events::TRACEPARENT
        .scope(traceparent, next.run(req))
        .await
}

/// Keeps a client's `X-Request-Id` when it is a sane token, makes one otherwise, and echoes
/// it on the response.
async fn request_id(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=".contains(&b))
        })
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
    if let Ok(value) = HeaderValue::from_str(&id) {
        req.headers_mut().insert(REQUEST_ID, value.clone());
        req.extensions_mut().insert(RequestId(id));
        let mut response = next.run(req).await;
        response.headers_mut().insert(REQUEST_ID, value);
        response
    } else {
        next.run(req).await
    }
}

/// Answers 503 when a handler takes longer than the request timeout. Only the wait for the
/// response head is bounded; a streamed body may go on.
async fn deadline(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => Problem::timeout().into_response(),
    }
}

async fn health() -> axum::Json<Value> {
    axum::Json(json!({ "status": "UP" }))
}

async fn ready(State(checks): State<Arc<Vec<(&'static str, Check)>>>) -> Response {
    let mut all_up = true;
    let mut details = serde_json::Map::new();
    for (name, check) in checks.iter() {
        let started = Instant::now();
        let result = tokio::time::timeout(Duration::from_secs(5), check()).await;
        let entry = match result {
            Ok(Ok(())) => {
                json!({ "status": "UP", "latency_ms": started.elapsed().as_millis() as u64 })
            }
            Ok(Err(e)) => {
                all_up = false;
                tracing::warn!(check = name, error = %e, "readiness check failed");
                json!({ "status": "DOWN" })
            }
            Err(_) => {
                all_up = false;
                json!({ "status": "DOWN", "reason": "timed out" })
            }
        };
        details.insert((*name).to_owned(), entry);
    }
    let status = if all_up {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(json!({ "status": if all_up { "UP" } else { "DOWN" }, "checks": details })),
    )
        .into_response()
}

/// The client's address: the peer, or, when the peer is a trusted proxy, the last address
/// in `X-Forwarded-For` that is not itself a trusted proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
        let trusted = parts
            .extensions
            .get::<TrustedProxies>()
            .map(|t| t.0.clone())
            .unwrap_or_default();
        Ok(ClientIp(client_ip(peer, &parts.headers, &trusted)))
    }
}

/// The client's address as `ClientIp` finds it, for code that holds the headers itself.
pub fn client_ip(peer: IpAddr, headers: &axum::http::HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    client_ip_from(
        peer,
        headers
            .get_all("x-forwarded-for")
            .iter()
            .map(axum::http::HeaderValue::as_bytes),
        trusted,
    )
}

/// As `client_ip`, from the raw values of the `X-Forwarded-For` fields in order.
pub fn client_ip_from<'a>(
    peer: IpAddr,
    forwarded_for: impl DoubleEndedIterator<Item = &'a [u8]>,
    trusted: &[IpAddr],
) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let mut client = peer;
    for value in forwarded_for.rev() {
        let Ok(text) = std::str::from_utf8(value) else {
            return client;
        };
        for hop in text.rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = ip;
                    if !trusted.contains(&ip) {
                        return ip;
                    }
                }
                Err(_) => return client,
            }
        }
    }
    client
}

/// A running server.
pub struct Serving {
    pub local_addr: SocketAddr,
    pub task: JoinHandle<anyhow::Result<()>>,
}

/// Binds `addr` and serves `app` until `shutdown` is cancelled; then requests in flight get
/// `shutdown_grace_secs` to finish.
pub async fn start(
    name: &'static str,
    addr: SocketAddr,
    app: Router,
    http: &HttpSettings,
    shutdown: CancellationToken,
) -> anyhow::Result<Serving> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("{name}: cannot listen on {addr}"))?;
    serve(name, listener, app, http, shutdown)
}

/// Serves `app` on a bound `listener` until `shutdown` is cancelled, as `start` does; for a
/// service with work to do between binding and serving.
pub fn serve(
    name: &'static str,
    listener: TcpListener,
    app: Router,
    http: &HttpSettings,
    shutdown: CancellationToken,
) -> anyhow::Result<Serving> {
    let local_addr = listener.local_addr()?;
    let grace = Duration::from_secs(http.shutdown_grace_secs);
    tracing::info!(service = name, %local_addr, "listening");
    let task = tokio::spawn(async move {
        let signal = shutdown.clone();
        // Small answers go out at once rather than waiting on Nagle's algorithm.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let server = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { signal.cancelled().await });
        tokio::select! {
            result = server => result.with_context(|| format!("{name}: server failed")),
            () = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(service = name, "requests still running after the shutdown grace period; stopping anyway");
                Ok(())
            }
        }?;
        tracing::info!(service = name, "stopped");
        Ok(())
    });
    Ok(Serving { local_addr, task })
}

/// A token cancelled by the first SIGINT or SIGTERM.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {},
            () = term => {},
        }
        tracing::info!("shutdown signal received; finishing requests in flight");
        cancel.cancel();
    });
    token
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        let mut headers = axum::http::HeaderMap::new();
        headers.insert("x-forwarded-for", "6.6.6.6, 10.1.1.1".parse().unwrap());
        let outsider: IpAddr = "10.9.9.9".parse().unwrap();
        assert_eq!(client_ip(outsider, &headers, &[proxy]), outsider);
        assert_eq!(
            client_ip(proxy, &headers, &[proxy]),
            "10.1.1.1".parse::<IpAddr>().unwrap(),
            "the hop the trusted proxy saw, not what the client wrote first"
        );
        headers.insert("x-forwarded-for", "garbage".parse().unwrap());
        assert_eq!(client_ip(proxy, &headers, &[proxy]), proxy);
    }
}
