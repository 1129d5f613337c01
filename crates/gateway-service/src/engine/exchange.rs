//! One request and its answer: routed, authenticated, limited, sent to an instance (again to
//! another when that is safe), and the answer relayed back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use platform::Problem;
use platform::auth::Claims;
use tokio::net::TcpStream;

use super::codec::{self, Framing, Request, Version};
use super::pool::{self, Upstream};
use super::wire::{self, Failure, RelayError, Source};
use super::{Engine, own_route, status_line, write_problem, write_response};
use crate::balancer::Outcome;
use crate::headers;
use crate::metrics as m;
use crate::ratelimit::{self, Decision};
use crate::routes::{self, Matched};
use crate::table::Table;

/// Payload bytes of a refused request read and thrown away so the connection stays usable;
/// past this the connection is closed instead.
const DISCARD_BYTES: u64 = 1024 * 1024;
/// What is left of a refused body is read for this long at most before closing, so the
/// client reads the answer rather than meeting a reset connection (nginx's lingering close).
const LINGER: Duration = Duration::from_secs(5);
const LINGER_BYTES: u64 = 64 * 1024 * 1024;

/// What the access log and metrics say of a request.
/// Borrowed from the table, not cloned: a route id is shared by every worker, and a clone
/// per request would bounce its reference count between the cores.
#[derive(Default)]
struct Trail<'t> {
    route: Option<&'t Arc<str>>,
    /// Kept only for the access log.
    upstream: Option<Arc<str>>,
    attempts: u32,
}

/// Where the request's body stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyState {
    /// Not read yet (still in the client's stream, or partly in the read buffer).
    Unread,
    /// Read whole, or there was none.
    Done,
    /// Broken off: the connection cannot carry another request.
    Broken,
}

/// Handles `request` and writes its answer; `true` when the connection may carry another.
pub async fn exchange(
    engine: &Engine,
    client: &mut TcpStream,
    buf: &mut BytesMut,
    out: &mut Vec<u8>,
    peer: SocketAddr,
    request: Request,
) -> bool {
    let started = Instant::now();
    let table = engine.table();
    let request_id = headers::request_id_from(request.header("x-request-id"));
    let mut trail = Trail::default();
    let mut body = if request.framing == Framing::Empty {
        BodyState::Done
    } else {
        BodyState::Unread
    };
    let cors_lines = cors_lines(engine, &request);
    let send_limit = table.settings.client_send_timeout();
    out.clear();

    let outcome = if super::is_own_path(request.path()) {
        own(
            engine,
            &table,
            client,
            buf,
            out,
            &request,
            &mut body,
            &request_id,
            peer,
        )
        .await
    } else if let Some(preflight) = preflight(engine, &request) {
        Ok(answer_preflight(
            out,
            preflight,
            &request_id,
            request.keep_alive,
        ))
    } else {
        proxy(
            engine,
            &table,
            client,
            buf,
            out,
            &request,
            &mut body,
            &request_id,
            peer,
            cors_lines.as_deref(),
            &mut trail,
        )
        .await
    };

    let (status, mut keep) = match outcome {
        Ok(Answered::Buffered(status)) => {
            let keep = request.keep_alive && body == BodyState::Done;
            if wire::write_all(client, out, send_limit).await.is_err() {
                (status, false)
            } else {
                (status, keep)
            }
        }
        Ok(Answered::Sent { status, keep }) => (status, keep && request.keep_alive),
        Err(refusal) => {
            refuse(
                engine,
                client,
                buf,
                out,
                &request,
                &mut body,
                refusal,
                &request_id,
                cors_lines.as_deref(),
            )
            .await
        }
    };
    if body != BodyState::Done {
        keep = false;
    }
    m::request(trail.route, status, started.elapsed());
    if table.settings.access_log {
        tracing::info!(
            target: "gateway::access",
            method = %request.method,
            path = %request.path(),
            route = trail.route.map_or("-", |r| &**r),
            status = status.as_u16(),
            upstream = trail.upstream.as_deref().unwrap_or("-"),
            attempts = trail.attempts,
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
            request_id = request_id.to_str().unwrap_or("-"),
            peer = %peer,
            "proxied"
        );
    }
    keep
}

enum Answered {
    /// The whole answer is in `out`, not written yet.
    Buffered(StatusCode),
    /// Written (streamed) already; `keep`: the exchange left both sides in order.
    Sent { status: StatusCode, keep: bool },
}

/// A refusal before anything was written: a problem, and header lines to add to it.
struct Refusal {
    problem: Problem,
    extra: Option<Vec<u8>>,
}

impl From<Problem> for Refusal {
    fn from(problem: Problem) -> Self {
        Refusal {
            problem,
            extra: None,
        }
    }
}

/// Writes the refusal; reads what is left of the body when it is small (the connection
/// stays usable), or closes after a lingering drain.
#[allow(clippy::too_many_arguments)]
async fn refuse(
    engine: &Engine,
    client: &mut TcpStream,
    buf: &mut BytesMut,
    out: &mut Vec<u8>,
    request: &Request,
    body: &mut BodyState,
    refusal: Refusal,
    request_id: &HeaderValue,
    cors: Option<&[u8]>,
) -> (StatusCode, bool) {
    let settings = &engine.table().settings;
    let send_limit = settings.client_send_timeout();
    let body_idle = Some(Duration::from_secs(
        settings.client_body_timeout_secs.max(1),
    ));
    let small = match request.framing {
        Framing::Empty => true,
        Framing::Length(n) => n <= DISCARD_BYTES,
        Framing::Chunked | Framing::UntilClose => false,
    };
    // A client waiting for `100 Continue` never got it: it may send the body or not.
    let discard_first =
        *body == BodyState::Unread && small && !request.expect_continue && request.keep_alive;
    if discard_first {
        let source = Source {
            stream: client,
            pending: buf,
            idle: body_idle,
        };
        *body = match wire::discard(source, request.framing, DISCARD_BYTES).await {
            Ok(()) => BodyState::Done,
            Err(_) => BodyState::Broken,
        };
    }
    let keep = request.keep_alive && *body == BodyState::Done;
    out.clear();
    let status = write_problem(
        out,
        refusal.problem,
        request_id,
        keep,
        cors,
        refusal.extra.as_deref(),
    )
    .await;
    if wire::write_all(client, out, send_limit).await.is_err() {
        return (status, false);
    }
    if *body == BodyState::Unread {
        // Lingering close: read (and drop) what the client is still sending, for a while.
        let source = Source {
            stream: client,
            pending: buf,
            idle: Some(LINGER),
        };
        let _ = tokio::time::timeout(LINGER, wire::discard(source, request.framing, LINGER_BYTES))
            .await;
        *body = BodyState::Broken;
    }
    (status, keep)
}

/// The CORS header lines for an actual (not preflight) request, when it carries an Origin.
fn cors_lines(engine: &Engine, request: &Request) -> Option<Vec<u8>> {
    let cors = engine.cors.as_ref()?;
    let origin = request.header("origin")?;
    let mut lines = Vec::new();
    cors.actual(origin, &mut lines);
    (!lines.is_empty()).then_some(lines)
}

/// A CORS preflight's header lines, when the request is one.
fn preflight(engine: &Engine, request: &Request) -> Option<Vec<u8>> {
    let cors = engine.cors.as_ref()?;
    if request.method != Method::OPTIONS {
        return None;
    }
    let origin = request.header("origin")?;
    let asked = request.header("access-control-request-method")?;
    let mut lines = Vec::new();
    cors.preflight(
        origin,
        Some(asked),
        request.header("access-control-request-headers"),
        &mut lines,
    );
    Some(lines)
}

fn answer_preflight(
    out: &mut Vec<u8>,
    lines: Vec<u8>,
    request_id: &HeaderValue,
    keep: bool,
) -> Answered {
    status_line(out, 204, "No Content");
    out.extend_from_slice(&lines);
    wire::header(out, b"x-request-id", request_id.as_bytes());
    if !keep {
        wire::header(out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    Answered::Buffered(StatusCode::NO_CONTENT)
}

/// The client's address: the peer's, or when the peer is a trusted proxy
/// (`peer_trusted`, judged once by the caller), the one its `X-Forwarded-For` names.
fn client_ip(
    gateway: &crate::Gateway,
    request: &Request,
    peer_ip: std::net::IpAddr,
    peer_trusted: bool,
) -> std::net::IpAddr {
    if !peer_trusted {
        return peer_ip;
    }
    let hops = request
        .headers()
        .filter(|(n, _)| n.eq_ignore_ascii_case("x-forwarded-for"))
        .map(|(_, v)| v);
    gateway.client_ip(peer_ip, hops)
}

/// The gateway's own routes (health, metrics, actuator), answered by its router.
#[allow(clippy::too_many_arguments)]
async fn own(
    engine: &Engine,
    table: &Table,
    client: &mut TcpStream,
    buf: &mut BytesMut,
    out: &mut Vec<u8>,
    request: &Request,
    body: &mut BodyState,
    request_id: &HeaderValue,
    peer: SocketAddr,
) -> Result<Answered, Refusal> {
    if request.path() == "/metrics" {
        // Behind a trusted load balancer the peer is the balancer: judge the client it
        // names.
        let gateway = &engine.gateway;
        let trusted = gateway.trusted_proxy(peer.ip());
        if !table.metrics_allowed(client_ip(gateway, request, peer.ip(), trusted)) {
            // As for any path no route serves: nothing says there is something here.
            return Err(Problem::not_found("no route matches this path").into());
        }
        // This worker's own counts are added at once; the others add theirs when idle.
        m::flush();
    }
    let bytes = if *body == BodyState::Unread {
        read_whole(client, buf, request.framing, 64 * 1024, table)
            .await
            .inspect_err(|_| {
                *body = BodyState::Broken;
            })?
    } else {
        Bytes::new()
    };
    *body = BodyState::Done;
    let response = own_route(engine, request, bytes, peer).await;
    let status = write_response(out, response, request_id, request.keep_alive, None, None).await;
    Ok(Answered::Buffered(status))
}

/// Reads a whole (small) body into memory.
async fn read_whole(
    client: &mut TcpStream,
    buf: &mut BytesMut,
    framing: Framing,
    limit: u64,
    table: &Table,
) -> Result<Bytes, Refusal> {
    let idle = Some(Duration::from_secs(
        table.settings.client_body_timeout_secs.max(1),
    ));
    let n = match framing {
        Framing::Empty => return Ok(Bytes::new()),
        Framing::Length(n) if n <= limit => n,
        Framing::Length(_) => return Err(too_large(limit).into()),
        // Small bodies with unknown length are rare; they are read as they come.
        Framing::Chunked | Framing::UntilClose => {
            return Err(Problem::new(
                StatusCode::LENGTH_REQUIRED,
                "length-required",
                "Length required",
            )
            .detail("send this request with a Content-Length")
            .into());
        }
    };
    let n = usize::try_from(n).unwrap_or(usize::MAX);
    while buf.len() < n {
        match wire::read_more(client, buf, idle).await {
            Ok(0) | Err(_) => {
                return Err(Problem::malformed("the request body ended early").into());
            }
            Ok(_) => {}
        }
    }
    Ok(buf.split_to(n).freeze())
}

fn too_large(limit: u64) -> Problem {
    Problem::payload_too_large(usize::try_from(limit).unwrap_or(usize::MAX))
}

/// The request's body as it goes upstream.
enum Payload {
    /// None, or read whole (small, so another attempt can send it again).
    Held(Bytes),
    /// Relayed from the client as it comes, once.
    Stream,
}

/// Routes and forwards one request.
#[allow(clippy::too_many_arguments)]
async fn proxy<'t>(
    engine: &Engine,
    table: &'t Table,
    client: &mut TcpStream,
    buf: &mut BytesMut,
    out: &mut Vec<u8>,
    request: &Request,
    body: &mut BodyState,
    request_id: &HeaderValue,
    peer: SocketAddr,
    cors: Option<&[u8]>,
    trail: &mut Trail<'t>,
) -> Result<Answered, Refusal> {
    let gateway = &engine.gateway;
    if headers::suspicious_path(request.path()) {
        return Err(Problem::malformed(
            "the path may not hold `.` or `..` segments or encoded separators",
        )
        .into());
    }
    if request.upgrade {
        return Err(Problem::new(
            StatusCode::NOT_IMPLEMENTED,
            "not-implemented",
            "Not implemented",
        )
        .detail("protocol upgrades (WebSocket) are not proxied")
        .into());
    }
    let peer_ip = peer.ip();
    let peer_trusted = gateway.trusted_proxy(peer_ip);
    let field_map;
    let fields: &HeaderMap = if table.routes.uses_headers() {
        field_map = header_map(request);
        &field_map
    } else {
        empty_headers()
    };
    let client_ip = client_ip(gateway, request, peer_ip, peer_trusted);
    let host = request.host().and_then(|h| std::str::from_utf8(h).ok());
    let route_request = routes::Request {
        method: &request.method,
        path: request.path(),
        query: request.query(),
        host,
        headers: fields,
        remote: client_ip,
    };
    let matched = table
        .routes
        .find(&route_request)
        .ok_or_else(|| Problem::not_found("no route matches this path"))?;
    let route = matched.route;
    trail.route = Some(&route.id);

    let claims = if route.public {
        None
    } else {
        Some(
            gateway
                .authenticate(request.header("authorization"))
                .await?,
        )
    };

    let mut limit_lines = Vec::with_capacity(160);
    if let Some(spec) = table.limit(route) {
        let decision = gateway
            .take_token(&route.id, spec, claims.as_deref(), client_ip)
            .await;
        if table.settings.rate_limit.include_headers {
            limit_header_lines(spec, &decision, &mut limit_lines);
        }
        match decision {
            Decision::Allowed { .. } => {}
            Decision::Limited { retry_after } => {
                m::rate_limited(&route.id);
                let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
                return Err(Refusal {
                    problem: Problem::too_many_requests(
                        secs,
                        format!("too many requests on route {}; slow down", route.id),
                    ),
                    extra: Some(limit_lines),
                });
            }
            Decision::Unavailable => {
                return Err(Problem::unavailable(
                    "the rate limiter cannot be reached; try again shortly",
                )
                .header(http::header::RETRY_AFTER, HeaderValue::from_static("1"))
                .into());
            }
        }
    }

    let limit = table.body_limit(route);
    if let Framing::Length(n) = request.framing
        && n > limit
    {
        return Err(too_large(limit).into());
    }
    let (service, endpoints) = engine.endpoints_for(table, route).await?;
    let now = gateway.now_ms();
    let permit = gateway
        .breakers()
        .get(service)
        .try_acquire(now)
        .map_err(|wait| {
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            Problem::unavailable(format!(
                "{service} is failing; requests to it are held back for a while"
            ))
            .header(http::header::RETRY_AFTER, HeaderValue::from(secs))
        })?;
    gateway.budget().record_request(now);

    let (retries, idempotent) = table.retries(route, &request.method);
    let body_idle = Some(Duration::from_secs(
        table.settings.client_body_timeout_secs.max(1),
    ));
    // The upstream's head is built in `out` (which the client's answer reuses later); each
    // attempt cuts it back to `head_len` and adds its own end.
    out.clear();
    upstream_head(
        out,
        table,
        request,
        &matched,
        &route_request,
        claims.as_deref(),
        peer_ip,
        peer_trusted,
        request_id,
    );
    let head_len = out.len();
    let mut continue_sent = false;
    let payload = match request.framing {
        Framing::Empty => Payload::Held(Bytes::new()),
        Framing::Length(n) if retries > 0 && n <= table.settings.retry.max_buffered_body => {
            if request.expect_continue {
                send_continue(client, table).await.map_err(|_| {
                    *body = BodyState::Broken;
                    Problem::malformed("the client went away")
                })?;
                continue_sent = true;
            }
            let held = read_whole(client, buf, request.framing, limit, table)
                .await
                .inspect_err(|_| *body = BodyState::Broken)?;
            *body = BodyState::Done;
            Payload::Held(held)
        }
        _ => Payload::Stream,
    };

    let connect_timeout = table.connect_timeout(route);
    let response_timeout = table.response_timeout(route);
    let idle_timeout = Duration::from_secs(table.settings.pool_idle_timeout_secs.max(1));
    let send_limit = table.settings.client_send_timeout();
    let mut tried = [0usize; 12];
    let mut n_tried = 0;
    let failure: Problem = loop {
        // The clock read for the breaker serves the first attempt.
        let now = if trail.attempts == 0 {
            now
        } else {
            gateway.now_ms()
        };
        let Some(picked) = gateway
            .balancer()
            .pick(service, &endpoints, &tried[..n_tried], now)
        else {
            break Problem::bad_gateway(format!("no instance of {service} could be reached"));
        };
        let endpoint = &endpoints[picked.index];
        if n_tried < tried.len() {
            tried[n_tried] = picked.index;
            n_tried += 1;
        }
        trail.attempts += 1;
        if table.settings.access_log {
            trail.upstream = Some(endpoint.id.clone());
        }
        let replayable = matches!(payload, Payload::Held(_));
        let may_go_again = trail.attempts <= retries && replayable;
        let sent = Instant::now();

        // A connection: pooled, or new.
        let mut upstream = match pool::take(endpoint, idle_timeout) {
            Some(u) => u,
            None => match pool::connect(endpoint, connect_timeout).await {
                Ok(u) => u,
                Err(e) => {
                    drop(picked);
                    m::upstream(service, &endpoint.id, "connect_error", sent.elapsed());
                    if let Some(ejected) = gateway.balancer().record(
                        endpoint,
                        Outcome::ConnectFailure,
                        gateway.now_ms(),
                    ) {
                        m::ejected(service, &endpoint.id);
                        tracing::warn!(service = %service, instance = %endpoint.id, seconds = ejected.as_secs(), error = %e, "instance refuses connections; ejected");
                    }
                    // Nothing was sent: any method may go again.
                    if may_go_again && gateway.budget().try_retry(gateway.now_ms()) {
                        m::retry(&route.id);
                        continue;
                    }
                    break Problem::bad_gateway(format!("could not connect to {service}"));
                }
            },
        };
        let reused = upstream.reused;

        // The request: head and held body in one write, or head then the relayed body.
        out.truncate(head_len);
        if !route.preserve_host {
            wire::header(out, b"host", endpoint.authority.as_str().as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        let sent_ok = match &payload {
            Payload::Held(bytes) => {
                out.extend_from_slice(bytes);
                wire::write_all(&mut upstream.stream, out, send_limit)
                    .await
                    .is_ok()
            }
            Payload::Stream => {
                if request.expect_continue && !continue_sent {
                    if send_continue(client, table).await.is_err() {
                        *body = BodyState::Broken;
                        return Err(Problem::malformed("the client went away").into());
                    }
                    continue_sent = true;
                }
                let source = Source {
                    stream: client,
                    pending: buf,
                    idle: body_idle,
                };
                let relayed = wire::relay(
                    source,
                    &mut upstream.stream,
                    out,
                    request.framing,
                    Some(limit),
                    send_limit,
                )
                .await;
                match relayed {
                    Ok(_) => {
                        *body = BodyState::Done;
                        true
                    }
                    Err(RelayError::TooLarge) => {
                        *body = BodyState::Unread;
                        permit.record(true, gateway.now_ms());
                        return Err(too_large(limit).into());
                    }
                    Err(RelayError::Malformed) => {
                        *body = BodyState::Broken;
                        permit.record(true, gateway.now_ms());
                        return Err(
                            Problem::malformed("the chunked request body is malformed").into()
                        );
                    }
                    Err(RelayError::Source(_)) => {
                        // The client stopped sending: nobody is left to answer.
                        *body = BodyState::Broken;
                        permit.record(true, gateway.now_ms());
                        return Ok(Answered::Sent {
                            status: StatusCode::BAD_REQUEST,
                            keep: false,
                        });
                    }
                    Err(RelayError::Sink(_)) => {
                        // The upstream stopped reading; it may have answered already.
                        *body = BodyState::Broken;
                        false
                    }
                }
            }
        };
        if !sent_ok && replayable {
            drop(picked);
            m::upstream(service, &endpoint.id, "error", sent.elapsed());
            // A pooled connection the instance had closed is not the instance's fault.
            if !reused {
                gateway
                    .balancer()
                    .record(endpoint, Outcome::Failure, gateway.now_ms());
            }
            if idempotent && may_go_again && gateway.budget().try_retry(gateway.now_ms()) {
                m::retry(&route.id);
                continue;
            }
            break Problem::bad_gateway(format!("{service} failed before answering"));
        }

        // The answer's head.
        let answer = read_answer(&mut upstream, &request.method, response_timeout).await;
        let response = match answer {
            Ok(r) => r,
            Err(Failure::Timeout) => {
                drop(picked);
                m::upstream(service, &endpoint.id, "timeout", sent.elapsed());
                gateway
                    .balancer()
                    .record(endpoint, Outcome::Failure, gateway.now_ms());
                permit.record(false, gateway.now_ms());
                if *body == BodyState::Broken {
                    return Ok(Answered::Sent {
                        status: StatusCode::GATEWAY_TIMEOUT,
                        keep: false,
                    });
                }
                return Err(Problem::gateway_timeout(format!(
                    "{service} did not answer within {} ms",
                    response_timeout.map_or(0, |t| t.as_millis())
                ))
                .into());
            }
            Err(Failure::Io) => {
                drop(picked);
                m::upstream(service, &endpoint.id, "error", sent.elapsed());
                if !reused {
                    gateway
                        .balancer()
                        .record(endpoint, Outcome::Failure, gateway.now_ms());
                }
                tracing::debug!(service = %service, instance = %endpoint.id, reused, "upstream closed before answering");
                // A pooled connection closed under the request, or an instance that died:
                // sent again when doing it twice is harmless.
                if idempotent && may_go_again && gateway.budget().try_retry(gateway.now_ms()) {
                    m::retry(&route.id);
                    continue;
                }
                if *body == BodyState::Broken {
                    return Ok(Answered::Sent {
                        status: StatusCode::BAD_GATEWAY,
                        keep: false,
                    });
                }
                break Problem::bad_gateway(format!("{service} failed before answering"));
            }
        };
        drop(picked);
        let answered = gateway.now_ms();
        gateway
            .balancer()
            .record(endpoint, Outcome::Success, answered);
        m::upstream(service, &endpoint.id, "response", sent.elapsed());
        // The upstream was asked in HTTP/1.0 and chunked anyway: the client could not read it.
        if response.framing == Framing::Chunked && request.version == Version::Http10 {
            break Problem::bad_gateway(format!(
                "{service} answered an HTTP/1.0 request with a chunked body"
            ));
        }
        let failed = table
            .settings
            .circuit_breaker
            .failure_statuses
            .contains(&response.status);
        permit.record(!failed, answered);

        // The answer, relayed.
        let client_keep = request.keep_alive && *body == BodyState::Done && !engine.stopping();
        let close_after = !client_keep || response.framing == Framing::UntilClose;
        out.clear();
        client_head(
            out,
            &response,
            &matched,
            request_id,
            &limit_lines,
            cors,
            close_after,
        );
        let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::BAD_GATEWAY);
        let source = Source {
            stream: &mut upstream.stream,
            pending: &mut upstream.buf,
            idle: None,
        };
        let relayed = wire::relay(source, client, out, response.framing, None, send_limit).await;
        out.clear();
        return match relayed {
            Ok(_) => {
                if response.keep_alive {
                    pool::put(endpoint, upstream, table.settings.pool_max_idle_per_host);
                }
                Ok(Answered::Sent {
                    status,
                    keep: !close_after,
                })
            }
            // Half an answer went out: the client's connection must end.
            Err(_) => Ok(Answered::Sent {
                status,
                keep: false,
            }),
        };
    };
    permit.record(false, gateway.now_ms());
    Err(failure.into())
}

async fn send_continue(client: &mut TcpStream, table: &Table) -> Result<(), Failure> {
    wire::write_all(
        client,
        b"HTTP/1.1 100 Continue\r\n\r\n",
        table.settings.client_send_timeout(),
    )
    .await
}

/// Reads the upstream's answer head, skipping interim (1xx) answers.
async fn read_answer(
    upstream: &mut Upstream,
    method: &Method,
    limit: Option<Duration>,
) -> Result<codec::Response, Failure> {
    let deadline = limit.map(|l| tokio::time::Instant::now() + l);
    loop {
        match codec::parse_response(&mut upstream.buf, method, 64 * 1024) {
            Ok(Some(r)) if (100..200).contains(&r.status) => {
                if r.status == 101 {
                    return Err(Failure::Io);
                }
                continue;
            }
            Ok(Some(r)) => return Ok(r),
            Ok(None) => {}
            Err(_) => return Err(Failure::Io),
        }
        match wire::read_more_until(&mut upstream.stream, &mut upstream.buf, deadline).await {
            Ok(0) => return Err(Failure::Io),
            Ok(_) => {}
            Err(f) => return Err(f),
        }
    }
}

/// Header fields never forwarded to the upstream as the client sent them: hop-by-hop ones,
/// framing (set again below), and those the gateway sets itself.
const NOT_FORWARDED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
    "transfer-encoding",
    "content-length",
    "expect",
    "host",
    "x-request-id",
    "traceparent",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-prefix",
];

/// Fields of the answer that stay between the upstream and the gateway.
const NOT_RETURNED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "upgrade",
    "x-request-id",
];

fn listed_in(name: &str, list: &[&str]) -> bool {
    list.iter().any(|n| n.eq_ignore_ascii_case(name))
}

/// Names a `Connection` field lists (hop-by-hop for this message).
fn connection_tokens(value: Option<&[u8]>) -> Vec<&str> {
    value
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// The request head the upstream gets, but for its end: `host` (unless the route keeps the
/// client's) and the blank line depend on the instance.
#[allow(clippy::too_many_arguments)]
fn upstream_head(
    out: &mut Vec<u8>,
    table: &Table,
    request: &Request,
    matched: &Matched<'_>,
    route_request: &routes::Request<'_>,
    claims: Option<&Claims>,
    peer: std::net::IpAddr,
    peer_trusted: bool,
    request_id: &HeaderValue,
) {
    out.reserve(request.head().len() + 256);
    out.extend_from_slice(request.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(matched.upstream_path_and_query(route_request).as_bytes());
    // An HTTP/1.0 client cannot read chunked answers: the upstream is asked in 1.0 too.
    out.extend_from_slice(match request.version {
        Version::Http10 => b" HTTP/1.0\r\n",
        Version::Http11 => b" HTTP/1.1\r\n",
    });
    let listed = connection_tokens(request.header("connection"));
    let route = matched.route;
    let mut edits = matched.edits_request_headers().then(HeaderMap::new);
    let mut emit = |out: &mut Vec<u8>, name: &[u8], value: &[u8]| match &mut edits {
        Some(map) => {
            if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
                map.append(n, v);
            }
        }
        None => wire::header(out, name, value),
    };
    let mut forwarded_for: Option<&[u8]> = None;
    let mut forwarded_proto: Option<&[u8]> = None;
    let mut forwarded_host: Option<&[u8]> = None;
    // An absolute-form target's authority stands in for the client's Host.
    if route.preserve_host
        && let Some(host) = request.host()
    {
        emit(out, b"host", host);
    }
    for (name, value) in request.headers() {
        if listed_in(name, NOT_FORWARDED) {
            if peer_trusted {
                match name.to_ascii_lowercase().as_str() {
                    "x-forwarded-for" => forwarded_for = Some(value),
                    "x-forwarded-proto" => forwarded_proto = Some(value),
                    "x-forwarded-host" => forwarded_host = Some(value),
                    _ => {}
                }
            }
            continue;
        }
        if listed.iter().any(|t| t.eq_ignore_ascii_case(name)) || table.identity.matches(name) {
            continue;
        }
        emit(out, name.as_bytes(), value);
    }
    // Framing as the gateway relays it.
    match request.framing {
        Framing::Length(n) => {
            let mut len = itoa::Buffer::new();
            emit(out, b"content-length", len.format(n).as_bytes());
        }
        Framing::Chunked => emit(out, b"transfer-encoding", b"chunked"),
        Framing::Empty | Framing::UntilClose => {}
    }
    let mut ip = [0u8; 64];
    let peer_text = ip_text(peer, &mut ip);
    match forwarded_for.filter(|v| !v.is_empty()) {
        Some(earlier) => {
            let mut v = Vec::with_capacity(earlier.len() + 2 + peer_text.len());
            v.extend_from_slice(earlier);
            v.extend_from_slice(b", ");
            v.extend_from_slice(peer_text);
            emit(out, b"x-forwarded-for", &v);
        }
        None => emit(out, b"x-forwarded-for", peer_text),
    }
    emit(
        out,
        b"x-forwarded-proto",
        forwarded_proto.unwrap_or(b"http"),
    );
    if let Some(host) = forwarded_host.or_else(|| request.host()) {
        emit(out, b"x-forwarded-host", host);
    }
    if let Some(prefix) = matched.stripped_prefix(route_request) {
        emit(out, b"x-forwarded-prefix", prefix.as_bytes());
    }
    emit(out, b"x-request-id", request_id.as_bytes());
    let traceparent = headers::traceparent_text(request.header("traceparent"));
    emit(out, b"traceparent", &traceparent);
    if let Some(claims) = claims {
        if headers::safe_value(&claims.sub) {
            emit(out, b"x-user-id", claims.sub.as_bytes());
        }
        // Mostly a single role: written as it is, without joining.
        let joined;
        let roles = match claims.roles.as_slice() {
            [one] => one.as_str(),
            many => {
                joined = many.join(",");
                joined.as_str()
            }
        };
        if headers::safe_value(roles) {
            emit(out, b"x-user-roles", roles.as_bytes());
        }
    }
    if let Some(mut map) = edits {
        matched.edit_request_headers(&mut map);
        for (name, value) in &map {
            wire::header(out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    // The blank line (and, unless preserved, `host`) come per attempt: the instance decides.
}

/// The answer head the client gets.
#[allow(clippy::too_many_arguments)]
fn client_head(
    out: &mut Vec<u8>,
    response: &codec::Response,
    matched: &Matched<'_>,
    request_id: &HeaderValue,
    limit_lines: &[u8],
    cors: Option<&[u8]>,
    close: bool,
) {
    status_line(out, response.status, response.reason());
    let listed = connection_tokens(response.header("connection"));
    // With both, Transfer-Encoding frames the answer; the length must not reach the client
    // (RFC 9112 §6.3 (3)).
    let skip = |name: &str| {
        listed_in(name, NOT_RETURNED)
            || listed.iter().any(|t| t.eq_ignore_ascii_case(name))
            || (response.framing == Framing::Chunked && name.eq_ignore_ascii_case("content-length"))
    };
    if matched.edits_response_headers() {
        let mut map = HeaderMap::new();
        for (name, value) in response.headers() {
            if skip(name) {
                continue;
            }
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_bytes(value),
            ) {
                map.append(n, v);
            }
        }
        matched.edit_response_headers(&mut map);
        for (name, value) in &map {
            wire::header(out, name.as_str().as_bytes(), value.as_bytes());
        }
    } else {
        for (name, value) in response.headers() {
            if skip(name) {
                continue;
            }
            wire::header(out, name.as_bytes(), value);
        }
    }
    wire::header(out, b"x-request-id", request_id.as_bytes());
    out.extend_from_slice(limit_lines);
    if let Some(lines) = cors {
        out.extend_from_slice(lines);
    }
    if close {
        wire::header(out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
}

/// The rate-limit fields as header lines.
fn limit_header_lines(spec: &crate::settings::LimitSpec, decision: &Decision, out: &mut Vec<u8>) {
    let mut n = itoa::Buffer::new();
    for (name, value) in ratelimit::header_fields(spec, decision) {
        wire::header(out, name.as_str().as_bytes(), n.format(value).as_bytes());
    }
}

/// The request's fields as a map (for route predicates that read them).
fn header_map(request: &Request) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in request.headers() {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            map.append(n, v);
        }
    }
    map
}

fn empty_headers() -> &'static HeaderMap {
    static EMPTY: std::sync::OnceLock<HeaderMap> = std::sync::OnceLock::new();
    EMPTY.get_or_init(HeaderMap::new)
}

/// An address as text without allocating.
fn ip_text(ip: std::net::IpAddr, buf: &mut [u8; 64]) -> &[u8] {
    if let std::net::IpAddr::V4(v4) = ip {
        let mut n = 0;
        let mut digits = itoa::Buffer::new();
        for (i, octet) in v4.octets().iter().enumerate() {
            if i > 0 {
                buf[n] = b'.';
                n += 1;
            }
            let d = digits.format(*octet).as_bytes();
            buf[n..n + d.len()].copy_from_slice(d);
            n += d.len();
        }
        return &buf[..n];
    }
    use std::io::Write;
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(cursor, "{ip}");
    let n = usize::try_from(cursor.position()).unwrap_or(0);
    &buf[..n]
}
