//! The gateway's HTTP/1.1 engine: client connections served straight off the socket, each
//! request relayed to an upstream connection the same task owns, so a proxied request costs
//! two reads and two writes and nothing else that waits (no channels, no other tasks, no
//! other threads). Heads are parsed with `httparse` and checked strictly (`codec`); bodies
//! are relayed unchanged as their framing says (`wire`). The gateway's own routes (health,
//! metrics, actuator) are answered by its axum router.

pub mod affinity;
pub mod codec;
mod exchange;
mod pool;
mod wire;
pub mod workers;

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use bytes::BytesMut;
use http::{HeaderValue, StatusCode};
use http_body_util::BodyExt;
use platform::Problem;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::balancer::Endpoint;
use crate::cors::Cors;
use crate::proxy::Gateway;
use crate::routes::{Route, Target};
use crate::table::Table;
use codec::RequestError;
pub use workers::{Inbox, Workers};

/// What every connection of a worker shares.
pub struct Engine {
    pub gateway: Arc<Gateway>,
    /// The gateway's own routes.
    pub own: Router,
    pub cors: Option<Cors>,
    pub shutdown: CancellationToken,
    /// `shutdown` as this worker's connections see it (the token's own checks and waits
    /// take a lock each time).
    pub stopping: Stop,
    table: RefCell<Own<Table>>,
    /// Service → (registry generation, its endpoints), this worker's own.
    endpoints: RefCell<foldhash::HashMap<Arc<str>, Seen>>,
    /// All the workers, and which one this is.
    pub workers: Arc<Workers>,
    pub me: usize,
}

impl Engine {
    pub fn new(
        gateway: Arc<Gateway>,
        own: Router,
        cors: Option<Cors>,
        shutdown: CancellationToken,
        (workers, me): (Arc<Workers>, usize),
    ) -> Self {
        let table = Rc::new(gateway.table());
        Engine {
            gateway,
            own,
            cors,
            shutdown,
            stopping: Stop::default(),
            table: RefCell::new(table),
            endpoints: RefCell::default(),
            workers,
            me,
        }
    }

    pub fn stopping(&self) -> bool {
        self.stopping.stopped.get()
    }

    /// The table in force, through this worker's own handle: taking it costs no write to
    /// memory another core uses (the shared `Arc`'s count moves only when the table changes).
    pub fn table(&self) -> Own<Table> {
        let current = self.gateway.table_now();
        let mut cached = self.table.borrow_mut();
        if !Arc::ptr_eq(&cached, &current) {
            *cached = Rc::new(Arc::clone(&current));
        }
        cached.clone()
    }

    /// The service a route leads to and its endpoints, through this worker's copy of the
    /// list while the registry has not changed.
    pub async fn endpoints_for<'t>(
        &self,
        table: &'t Table,
        route: &'t Route,
    ) -> Result<(&'t Arc<str>, Own<[Endpoint]>), Problem> {
        let name = match &route.target {
            Target::Service(name) => name,
            Target::Url { .. } => {
                let list = table.fixed_endpoints(route).ok_or_else(Problem::internal)?;
                return Ok((&route.id, Rc::new(list)));
            }
        };
        let generation = self.gateway.registry_generation();
        if let Some((g, list)) = self.endpoints.borrow().get(&**name)
            && *g == generation
        {
            return Ok((name, list.clone()));
        }
        let list = Rc::new(self.gateway.endpoints_of(name).await?);
        let mut cached = self.endpoints.borrow_mut();
        if cached.len() > 1000 {
            cached.clear();
        }
        cached.insert(name.clone(), (generation, list.clone()));
        Ok((name, list))
    }
}

/// A worker's own handle on something all workers share: cloning it writes nothing the
/// other cores read (the inner `Arc`'s count would bounce between them on every request).
#[allow(clippy::redundant_allocation)]
pub type Own<T> = Rc<Arc<T>>;

/// A service's endpoints as of a registry generation.
type Seen = (u64, Own<[Endpoint]>);

/// A worker's stop signal: set once by its accept loop, waited for by its idle
/// connections. Single-threaded, so a wait costs a flag check per poll.
#[derive(Default)]
pub struct Stop {
    stopped: Cell<bool>,
    waiters: RefCell<Waiters>,
}

#[derive(Default)]
struct Waiters {
    slots: Vec<Option<std::task::Waker>>,
    free: Vec<usize>,
}

impl Stop {
    fn set(&self) {
        self.stopped.set(true);
        let wakers: Vec<_> = self
            .waiters
            .borrow_mut()
            .slots
            .iter_mut()
            .filter_map(Option::take)
            .collect();
        for w in wakers {
            w.wake();
        }
    }

    /// Ready once the worker stops. Meant to be made once and polled by one task (the
    /// waker is taken at the first poll).
    fn wait(&self) -> StopWait<'_> {
        StopWait {
            stop: self,
            slot: None,
        }
    }
}

struct StopWait<'a> {
    stop: &'a Stop,
    slot: Option<usize>,
}

impl std::future::Future for StopWait<'_> {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.stop.stopped.get() {
            return std::task::Poll::Ready(());
        }
        if self.slot.is_none() {
            let mut w = self.stop.waiters.borrow_mut();
            let waker = Some(cx.waker().clone());
            let slot = match w.free.pop() {
                Some(i) => {
                    w.slots[i] = waker;
                    i
                }
                None => {
                    w.slots.push(waker);
                    w.slots.len() - 1
                }
            };
            drop(w);
            self.slot = Some(slot);
        }
        std::task::Poll::Pending
    }
}

impl Drop for StopWait<'_> {
    fn drop(&mut self) {
        if let Some(i) = self.slot
            && let Ok(mut w) = self.stop.waiters.try_borrow_mut()
        {
            w.slots[i] = None;
            w.free.push(i);
        }
    }
}

/// Paths the gateway answers itself rather than routing.
pub(crate) fn is_own_path(path: &str) -> bool {
    matches!(path, "/health" | "/health/ready" | "/metrics")
        || path.starts_with("/actuator/gateway/")
}

/// Accepts and serves connections on `listener` until `shutdown`, then gives connections
/// in flight `grace` to finish. Runs on a single-threaded runtime (connections are local
/// tasks). While this worker is not active it does not listen (the active ones take new
/// connections) and serves only what it has or is handed.
pub async fn serve(
    engine: Rc<Engine>,
    listener: std::net::TcpListener,
    grace: Duration,
    mut inbox: Inbox,
) {
    let (workers, me) = (engine.workers.clone(), engine.me);
    workers.started(me);
    let idle = Rc::new(tokio::sync::Notify::new());
    let upkeep = tokio::task::spawn_local(pool_upkeep(engine.clone()));
    let mut listening = Listening::new(listener);
    loop {
        if let Err(e) = listening.listen(workers.is_active(me)) {
            tracing::warn!(error = %e, "a gateway worker could not listen");
        }
        let (stream, peer) = tokio::select! {
            () = engine.shutdown.cancelled() => {
                engine.stopping.set();
                break;
            }
            () = workers.changed(me) => continue,
            Some((stream, peer)) = inbox.recv() => match TcpStream::from_std(stream) {
                Ok(stream) => (stream, peer),
                Err(_) => continue,
            },
            accepted = listening.accept() => match accepted {
                Ok((stream, peer)) => match workers.place(me, stream, peer) {
                    Some(stream) => (stream, peer),
                    None => continue,
                },
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let engine = engine.clone();
        let idle = idle.clone();
        workers.opened(me);
        tokio::task::spawn_local(async move {
            connection(&engine, stream, peer).await;
            // The last one here: a shutdown waiting for this worker's connections may end.
            if engine.workers.closed(engine.me) {
                idle.notify_one();
            }
        });
    }
    drop(listening);
    let active = || workers.open(me);
    if active() > 0 {
        let wait = async {
            while active() > 0 {
                idle.notified().await;
            }
        };
        if tokio::time::timeout(grace, wait).await.is_err() {
            tracing::warn!(
                service = crate::NAME,
                connections = active(),
                "connections still open after the shutdown grace period; closing them"
            );
        }
    }
    upkeep.abort();
}

/// A worker's handle on the shared listening socket: registered with its reactor only
/// while the worker is active, so an inactive one is not woken by every new connection.
struct Listening {
    registered: Option<TcpListener>,
    parked: Option<std::net::TcpListener>,
}

impl Listening {
    fn new(listener: std::net::TcpListener) -> Self {
        Listening {
            registered: None,
            parked: Some(listener),
        }
    }

    fn listen(&mut self, on: bool) -> std::io::Result<()> {
        if on && let Some(std) = self.parked.take() {
            self.registered = Some(TcpListener::from_std(std)?);
        } else if !on && let Some(tokio) = self.registered.take() {
            self.parked = Some(tokio.into_std()?);
        }
        Ok(())
    }

    async fn accept(&self) -> std::io::Result<(TcpStream, SocketAddr)> {
        match &self.registered {
            Some(listener) => listener.accept().await,
            None => std::future::pending().await,
        }
    }
}

/// Closes this worker's idle upstream connections that are too old or lead nowhere now.
async fn pool_upkeep(engine: Rc<Engine>) {
    let mut ticks = tokio::time::interval(Duration::from_secs(5));
    loop {
        ticks.tick().await;
        let table = engine.table();
        let idle = Duration::from_secs(table.settings.pool_idle_timeout_secs.max(1));
        let known = engine.gateway.endpoint_ids();
        pool::purge(idle, &|id| known.contains(id));
    }
}

/// One client connection: requests one after another until either side ends it.
async fn connection(engine: &Engine, mut stream: TcpStream, peer: SocketAddr) {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut out = Vec::with_capacity(4 * 1024);
    // Made once per connection: a fresh wait per request would join and leave the token's
    // list of waiters every time.
    let mut shutdown = std::pin::pin!(engine.stopping.wait());
    // The coordinator's epoch this connection last counted itself busy in.
    let mut seen = u32::MAX;
    loop {
        let settings = &engine.table().settings;
        let idle = Duration::from_secs(settings.client_idle_timeout_secs.max(1));
        let header_time = Duration::from_secs(settings.client_header_timeout_secs.max(1));
        let max_head = settings.max_head_bytes;
        // Wait for a request (idle keep-alive), then for its whole head.
        let request = loop {
            match codec::parse_request(&mut buf, max_head) {
                Ok(Some(request)) => break request,
                Ok(None) => {}
                Err(e) => {
                    refuse_malformed(engine, &mut stream, &mut out, e).await;
                    return;
                }
            }
            let wait = if buf.is_empty() { idle } else { header_time };
            let read = tokio::select! {
                // Between requests, a shutdown closes the connection at once.
                () = &mut shutdown, if buf.is_empty() => return,
                read = wire::read_more(&mut stream, &mut buf, Some(wait)) => read,
            };
            match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        let keep = exchange::exchange(engine, &mut stream, &mut buf, &mut out, peer, request).await;
        if !keep || engine.stopping() {
            return;
        }
        // Between two requests with nothing read ahead: the connection may move to another
        // worker (packing or spreading the load), and this task ends.
        if engine.workers.served(engine.me, &mut seen, buf.is_empty()) {
            match engine.workers.shed(engine.me, stream, peer) {
                None => return,
                Some(kept) => stream = kept,
            }
        }
    }
}

/// Answers a request whose head could not be read, and closes.
async fn refuse_malformed(
    engine: &Engine,
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    e: RequestError,
) {
    let problem = match e {
        RequestError::HeadTooLarge | RequestError::TooManyHeaders => Problem::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers-too-large",
            "The request's header fields are too large",
        )
        .detail(e.to_string()),
        RequestError::Invalid(why) => Problem::malformed(why),
        RequestError::NotImplemented(why) => Problem::new(
            StatusCode::NOT_IMPLEMENTED,
            "not-implemented",
            "Not implemented",
        )
        .detail(why),
        RequestError::Version => Problem::new(
            StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            "http-version-not-supported",
            "HTTP version not supported",
        )
        .detail(e.to_string()),
    };
    let status = problem.status();
    let id = crate::headers::request_id(&http::HeaderMap::new());
    out.clear();
    write_problem(out, problem, &id, false, None, None).await;
    let write = engine.table().settings.client_send_timeout();
    let _ = wire::write_all(stream, out, write).await;
    crate::metrics::request(None, status, Duration::ZERO);
}

/// Serialises `problem` as a whole answer into `out`: status line, its headers, the request
/// id, CORS lines, `extra` header lines, and the body.
pub(crate) async fn write_problem(
    out: &mut Vec<u8>,
    problem: Problem,
    request_id: &HeaderValue,
    keep_alive: bool,
    cors: Option<&[u8]>,
    extra: Option<&[u8]>,
) -> StatusCode {
    use axum::response::IntoResponse;
    let response = problem.into_response();
    write_response(out, response, request_id, keep_alive, cors, extra).await
}

/// Serialises a complete axum response (the gateway's own routes and problems).
pub(crate) async fn write_response(
    out: &mut Vec<u8>,
    response: axum::response::Response,
    request_id: &HeaderValue,
    keep_alive: bool,
    cors: Option<&[u8]>,
    extra: Option<&[u8]>,
) -> StatusCode {
    let (parts, body) = response.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => bytes::Bytes::new(),
    };
    let status = parts.status;
    status_line(
        out,
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
    );
    for (name, value) in &parts.headers {
        if matches!(
            name.as_str(),
            "content-length" | "transfer-encoding" | "connection" | "x-request-id"
        ) {
            continue;
        }
        wire::header(out, name.as_str().as_bytes(), value.as_bytes());
    }
    wire::header(out, b"x-request-id", request_id.as_bytes());
    if let Some(lines) = cors {
        out.extend_from_slice(lines);
    }
    if let Some(lines) = extra {
        out.extend_from_slice(lines);
    }
    if !keep_alive {
        wire::header(out, b"connection", b"close");
    }
    let mut len = itoa::Buffer::new();
    wire::header(out, b"content-length", len.format(body.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    status
}

pub(crate) fn status_line(out: &mut Vec<u8>, status: u16, reason: &str) {
    let mut code = itoa::Buffer::new();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(code.format(status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Calls the gateway's own router with a request built from the head (its body, if any,
/// already read: these routes take none worth streaming).
pub(crate) async fn own_route(
    engine: &Engine,
    request: &codec::Request,
    body: bytes::Bytes,
    peer: SocketAddr,
) -> axum::response::Response {
    let mut builder = http::Request::builder()
        .method(request.method.clone())
        .uri(request.target().as_ref());
    for (name, value) in request.headers() {
        builder = builder.header(name, value);
    }
    let Ok(mut req) = builder.body(axum::body::Body::from(body)) else {
        use axum::response::IntoResponse;
        return Problem::malformed("the request could not be read").into_response();
    };
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(peer));
    match engine.own.clone().oneshot(req).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}
