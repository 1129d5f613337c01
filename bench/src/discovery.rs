//! discovery-service under a Eureka fleet: N instances registered, then renewing at a fixed
//! rate (every 30 s, and 10× faster), with registry fetches (full JSON, XML, gzipped JSON,
//! delta) while the renewals run, warm and right after a change.
//!
//! Baselines in the same run, on the same server: `GET /health` at the same fixed rate for
//! the same time (CPU per request), and `GET /health` between the fetches (latency).
//!
//! The load is paced, not closed-loop: request k is due at `t0 + k / rate` on connection
//! `k mod C`. Its latency counts from the due time when the connection was still busy then
//! (no coordinated omission), else from when it was sent (tokio's timer wakes up to 1 ms
//! late; that lateness is the load generator's, reported apart).

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{ACCEPT, ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE, HOST};
use hyper::http::HeaderValue;
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::library::percentile;
use crate::{Server, free_port, sibling, wait_ready};

/// How long a change stays in `/apps/delta` on the benchmarked server (Eureka: 3 min), and
/// how often it purges older ones: short, so the delta reaches its steady state (only the
/// last changes) within the run.
const DELTA_RETENTION_MS: u64 = 15_000;
const EVICTION_INTERVAL_MS: u64 = 1_000;
/// `lastDirtyTimestamp` of every benchmark instance, sent again with each renewal.
const DIRTY_TS: i64 = 1_764_000_000_000;
/// Clients asking for the full listing at once right after a change.
const HERD: usize = 8;

#[derive(Debug, Clone)]
pub struct Options {
    pub instances: usize,
    pub apps: usize,
    /// Measurement period per path and per renewal interval, in seconds.
    pub seconds: f64,
    /// The period is split into this many interleaved slices (health, renew, health, ...).
    pub rounds: u32,
    pub connections: usize,
    /// Warm samples per fetch kind.
    pub fetches: usize,
    /// Samples per fetch kind right after a change.
    pub cold: usize,
    /// Renewal intervals to run, in seconds.
    pub intervals: Vec<f64>,
}

type Sender = SendRequest<Full<Bytes>>;

/// One prepared request.
#[derive(Debug, Clone)]
struct Call {
    method: Method,
    uri: Uri,
    body: Bytes,
    accept: Option<&'static str>,
    gzip: bool,
}

impl Call {
    fn get(path: &str) -> anyhow::Result<Self> {
        Ok(Self {
            method: Method::GET,
            uri: path.parse().with_context(|| format!("bad path {path}"))?,
            body: Bytes::new(),
            accept: None,
            gzip: false,
        })
    }

    fn accept(mut self, accept: &'static str) -> Self {
        self.accept = Some(accept);
        self
    }

    fn gzip(mut self) -> Self {
        self.gzip = true;
        self
    }

    fn request(&self, host: &HeaderValue) -> anyhow::Result<Request<Full<Bytes>>> {
        let mut r = Request::builder()
            .method(self.method.clone())
            .uri(self.uri.clone())
            .header(HOST, host.clone());
        if !self.body.is_empty() {
            r = r.header(CONTENT_TYPE, "application/json");
        }
        if let Some(a) = self.accept {
            r = r.header(ACCEPT, a);
        }
        if self.gzip {
            r = r.header(ACCEPT_ENCODING, "gzip");
        }
        Ok(r.body(Full::new(self.body.clone()))?)
    }
}

async fn connect(addr: &str) -> anyhow::Result<Sender> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

struct Answer {
    status: hyper::StatusCode,
    gzipped: bool,
    body: Bytes,
}

async fn exchange(sender: &mut Sender, host: &HeaderValue, call: &Call) -> anyhow::Result<Answer> {
    sender.ready().await?;
    let response = sender.send_request(call.request(host)?).await?;
    let status = response.status();
    let gzipped = response
        .headers()
        .get(CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    let body = response.into_body().collect().await?.to_bytes();
    Ok(Answer {
        status,
        gzipped,
        body,
    })
}

/// CPU clock ticks per second (USER_HZ), for /proc/<pid>/stat.
fn clock_ticks() -> anyhow::Result<u64> {
    let out = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .context("running getconf CLK_TCK")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let hz: u64 = text
        .trim()
        .parse()
        .with_context(|| format!("getconf CLK_TCK said {text:?}"))?;
    ensure!(hz > 0, "getconf CLK_TCK said 0");
    Ok(hz)
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32, hz: u64) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat
        .rsplit_once(')')
        .with_context(|| format!("{path}: no command name"))?
        .1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .with_context(|| format!("{path}: too few fields"))?
            .parse()
            .with_context(|| format!("{path}: field {i} is not a number"))
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    Ok((field(11)? + field(12)?) as f64 / hz as f64)
}

/// VmRSS of a process, in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("{path}: no VmRSS"))
}

/// Server and load-generator CPU over a stretch of wall time.
struct Meter {
    pid: u32,
    hz: u64,
    wall: Instant,
    server: f64,
    bench: f64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Used {
    wall: f64,
    server: f64,
    bench: f64,
}

impl Used {
    fn add(&mut self, o: Used) {
        self.wall += o.wall;
        self.server += o.server;
        self.bench += o.bench;
    }
}

impl Meter {
    fn start(pid: u32, hz: u64) -> anyhow::Result<Self> {
        Ok(Self {
            pid,
            hz,
            wall: Instant::now(),
            server: cpu_seconds(pid, hz)?,
            bench: cpu_seconds(std::process::id(), hz)?,
        })
    }

    fn stop(self) -> anyhow::Result<Used> {
        Ok(Used {
            wall: self.wall.elapsed().as_secs_f64(),
            server: cpu_seconds(self.pid, self.hz)? - self.server,
            bench: cpu_seconds(std::process::id(), self.hz)? - self.bench,
        })
    }
}

/// The outcome of a paced run.
#[derive(Debug, Default)]
struct Paced {
    sent: u64,
    ok: u64,
    failed: u64,
    first_error: Option<String>,
    latencies_us: Vec<u32>,
    /// How late the timer woke a sender whose connection was free, µs.
    wake_late_us: Vec<u32>,
    /// Requests whose connection was still busy at their due time.
    queued: u64,
}

impl Paced {
    fn merge(&mut self, o: Paced) {
        self.sent += o.sent;
        self.ok += o.ok;
        self.failed += o.failed;
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
        self.latencies_us.extend(o.latencies_us);
        self.wake_late_us.extend(o.wake_late_us);
        self.queued += o.queued;
    }

    fn ms(v: &[u32], q: f64) -> f64 {
        let v: Vec<f64> = v.iter().map(|&us| f64::from(us) / 1000.0).collect();
        percentile(&v, q)
    }
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// Sends `calls[(first + k) % len]` at `t0 + k / rate` over the connections of `pool`, `k`
/// from 0 while `k < count` (if given) and `stop` is not cancelled. The connections come back
/// in `pool`.
async fn paced(
    pool: &mut Vec<Sender>,
    addr: &str,
    calls: Arc<Vec<Call>>,
    first: u64,
    rate: f64,
    count: Option<u64>,
    stop: CancellationToken,
) -> anyhow::Result<Paced> {
    ensure!(!calls.is_empty(), "nothing to send");
    let host = HeaderValue::from_str(addr)?;
    let senders = std::mem::take(pool);
    let connections = senders.len() as u64;
    ensure!(connections > 0, "no connections");
    let t0 = tokio::time::Instant::now() + Duration::from_millis(20);
    let mut tasks = Vec::new();
    for (w, mut sender) in senders.into_iter().enumerate() {
        let calls = calls.clone();
        let host = host.clone();
        let stop = stop.clone();
        let addr = addr.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut out = Paced::default();
            let mut busy_until = t0;
            let mut k = w as u64;
            while count.is_none_or(|n| k < n) && !stop.is_cancelled() {
                let due = t0 + Duration::from_secs_f64(k as f64 / rate);
                let call = &calls[((first + k) % calls.len() as u64) as usize];
                k += connections;
                let now = tokio::time::Instant::now();
                if now < due {
                    tokio::time::sleep_until(due).await;
                }
                let sent = tokio::time::Instant::now();
                let from = if busy_until > due {
                    out.queued += 1;
                    due
                } else {
                    out.wake_late_us.push(micros(sent - due));
                    sent
                };
                out.sent += 1;
                let answer = exchange(&mut sender, &host, call).await;
                let done = tokio::time::Instant::now();
                busy_until = done;
                match answer {
                    Ok(a) if a.status.is_success() => {
                        out.ok += 1;
                        out.latencies_us.push(micros(done - from));
                    }
                    Ok(a) => {
                        out.failed += 1;
                        out.first_error.get_or_insert_with(|| {
                            format!("{} {} answered {}", call.method, call.uri, a.status)
                        });
                    }
                    Err(e) => {
                        out.failed += 1;
                        out.first_error
                            .get_or_insert_with(|| format!("{} {}: {e:#}", call.method, call.uri));
                        sender = connect(&addr).await?;
                    }
                }
            }
            anyhow::Ok((sender, out))
        }));
    }
    let mut total = Paced::default();
    for task in tasks {
        let (sender, out) = task.await??;
        pool.push(sender);
        total.merge(out);
    }
    Ok(total)
}

/// One benchmark instance: application, id, registration body and renewal call.
struct Fleet {
    registrations: Vec<(Uri, Bytes)>,
    renewals: Arc<Vec<Call>>,
}

fn app_of(i: usize, apps: usize) -> String {
    format!("bench-app-{:03}", i % apps)
}

fn ip_of(net: u8, i: usize) -> String {
    format!("10.{net}.{}.{}", (i >> 8) & 255, i & 255)
}

/// A registration as a Spring Cloud client sends it, and its renewal
/// (`PUT /eureka/apps/{app}/{percent-encoded id}?status=UP&lastDirtyTimestamp=`).
fn instance(app: &str, ip: &str, interval: f64, lease: u32) -> anyhow::Result<(Uri, Bytes, Call)> {
    let port = 8080;
    let id = format!("{ip}:{app}:{port}");
    let body = json!({"instance": {
        "instanceId": id,
        "hostName": ip,
        "app": app.to_ascii_uppercase(),
        "ipAddr": ip,
        "status": "UP",
        "overriddenStatus": "UNKNOWN",
        "port": {"$": port, "@enabled": "true"},
        "securePort": {"$": 443, "@enabled": "false"},
        "countryId": 1,
        "dataCenterInfo": {
            "@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo",
            "name": "MyOwn"
        },
        "leaseInfo": {
            "renewalIntervalInSecs": interval.ceil() as u32,
            "durationInSecs": lease
        },
        "metadata": {"zone": "default", "management.port": port.to_string()},
        "homePageUrl": format!("http://{ip}:{port}/"),
        "statusPageUrl": format!("http://{ip}:{port}/actuator/info"),
        "healthCheckUrl": format!("http://{ip}:{port}/actuator/health"),
        "vipAddress": app,
        "secureVipAddress": app,
        "isCoordinatingDiscoveryServer": "false",
        "lastUpdatedTimestamp": DIRTY_TS.to_string(),
        "lastDirtyTimestamp": DIRTY_TS.to_string()
    }});
    let register: Uri = format!("/eureka/apps/{app}").parse()?;
    let renew = Call {
        method: Method::PUT,
        uri: format!(
            "/eureka/apps/{app}/{}?status=UP&lastDirtyTimestamp={DIRTY_TS}",
            id.replace(':', "%3A")
        )
        .parse()?,
        body: Bytes::new(),
        accept: None,
        gzip: false,
    };
    Ok((register, Bytes::from(serde_json::to_vec(&body)?), renew))
}

fn fleet(o: &Options, interval: f64, lease: u32) -> anyhow::Result<Fleet> {
    let mut registrations = Vec::with_capacity(o.instances);
    let mut renewals = Vec::with_capacity(o.instances);
    for i in 0..o.instances {
        let (uri, body, renew) = instance(&app_of(i, o.apps), &ip_of(1, i), interval, lease)?;
        registrations.push((uri, body));
        renewals.push(renew);
    }
    Ok(Fleet {
        registrations,
        renewals: Arc::new(renewals),
    })
}

async fn register(
    sender: &mut Sender,
    host: &HeaderValue,
    uri: &Uri,
    body: &Bytes,
) -> anyhow::Result<()> {
    let call = Call {
        method: Method::POST,
        uri: uri.clone(),
        body: body.clone(),
        accept: None,
        gzip: false,
    };
    let a = exchange(sender, host, &call).await?;
    ensure!(
        a.status == hyper::StatusCode::NO_CONTENT,
        "POST {uri} answered {}: {}",
        a.status,
        String::from_utf8_lossy(&a.body)
    );
    Ok(())
}

/// Registers the fleet as fast as the pool goes (each connection one after another).
async fn register_all(
    pool: &mut Vec<Sender>,
    addr: &str,
    fleet: &Fleet,
) -> anyhow::Result<Duration> {
    let host = HeaderValue::from_str(addr)?;
    let senders = std::mem::take(pool);
    let connections = senders.len();
    let bodies = Arc::new(fleet.registrations.clone());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (w, mut sender) in senders.into_iter().enumerate() {
        let bodies = bodies.clone();
        let host = host.clone();
        tasks.push(tokio::spawn(async move {
            for (uri, body) in bodies.iter().skip(w).step_by(connections) {
                register(&mut sender, &host, uri, body).await?;
            }
            anyhow::Ok(sender)
        }));
    }
    for task in tasks {
        pool.push(task.await??);
    }
    Ok(started.elapsed())
}

async fn start_server() -> anyhow::Result<Server> {
    let data = tempfile::tempdir()?;
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(sibling("promptflow")?)
        .args(["serve", "discovery-service", "--data-dir"])
        .arg(data.path())
        .env("PROMPTFLOW_DISCOVERY_SERVICE__LISTEN", &addr)
        .env("PROMPTFLOW_DISCOVERY_SERVICE__SELF_PRESERVATION", "false")
        .env(
            "PROMPTFLOW_DISCOVERY_SERVICE__DELTA_RETENTION_MS",
            DELTA_RETENTION_MS.to_string(),
        )
        .env(
            "PROMPTFLOW_DISCOVERY_SERVICE__EVICTION_INTERVAL_MS",
            EVICTION_INTERVAL_MS.to_string(),
        )
        .env("PROMPTFLOW_LOG__LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting promptflow serve discovery-service")?;
    let server = Server {
        child,
        addr,
        _data: data,
    };
    wait_ready(&server.addr).await?;
    Ok(server)
}

/// What one paced path did in a run, all slices together.
#[derive(Default)]
struct PathFigures {
    paced: Paced,
    used: Used,
}

impl PathFigures {
    fn add(&mut self, p: Paced, u: Used) {
        self.paced.merge(p);
        self.used.add(u);
    }

    fn server_us_per_request(&self) -> f64 {
        self.used.server * 1e6 / self.paced.ok.max(1) as f64
    }
}

/// The kinds of fetch measured.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fetch {
    Health,
    FullJson,
    FullXml,
    FullGzip,
    /// Gzipped JSON right after a plain JSON fetch rebuilt the listing: only the gzip.
    GzipOnly,
    Delta,
    /// HERD clients at once, full JSON, right after a change.
    Herd,
}

impl Fetch {
    fn label(self) -> String {
        let label = match self {
            Fetch::Herd => {
                return format!(
                    "{HERD} clients at once: full, JSON, first after a change (slowest)"
                );
            }
            Fetch::Health => "baseline: `GET /health`",
            Fetch::FullJson => "full `GET /eureka/apps/`, JSON",
            Fetch::FullXml => "full `GET /eureka/apps/`, XML",
            Fetch::FullGzip => "full `GET /eureka/apps/`, JSON, gzip",
            Fetch::GzipOnly => "full, JSON, gzip, first after a plain JSON fetch (gzip only)",
            Fetch::Delta => "delta `GET /eureka/apps/delta`, JSON",
        };
        label.to_owned()
    }

    fn call(self) -> anyhow::Result<Call> {
        Ok(match self {
            Fetch::Health => Call::get("/health")?,
            Fetch::FullJson | Fetch::Herd => Call::get("/eureka/apps/")?.accept("application/json"),
            Fetch::FullXml => Call::get("/eureka/apps/")?.accept("application/xml"),
            Fetch::FullGzip | Fetch::GzipOnly => Call::get("/eureka/apps/")?
                .accept("application/json")
                .gzip(),
            Fetch::Delta => Call::get("/eureka/apps/delta")?.accept("application/json"),
        })
    }
}

#[derive(Default, Clone)]
struct FetchFigures {
    ms: Vec<f64>,
    bytes: Vec<f64>,
    /// Server CPU over each fetch, renewals running meanwhile included (cold fetches only).
    server_ms: Vec<f64>,
}

impl FetchFigures {
    fn p(&self, q: f64) -> f64 {
        percentile(&self.ms, q)
    }
}

async fn timed_fetch(
    sender: &mut Sender,
    host: &HeaderValue,
    call: &Call,
    into: &mut FetchFigures,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let a = exchange(sender, host, call).await?;
    let took = started.elapsed();
    ensure!(
        a.status.is_success(),
        "GET {} answered {}",
        call.uri,
        a.status
    );
    ensure!(
        a.gzipped == call.gzip,
        "GET {}: gzip asked {}, answered {}",
        call.uri,
        call.gzip,
        a.gzipped
    );
    into.ms.push(took.as_secs_f64() * 1000.0);
    into.bytes.push(a.body.len() as f64);
    Ok(())
}

struct RunReport {
    interval: f64,
    rate: f64,
    lease: u32,
    slice: f64,
    idle_empty: Used,
    idle_full: Used,
    register_wall: Duration,
    register_used: Used,
    health: PathFigures,
    renew: PathFigures,
    during: Vec<(Stage, Paced, Paced)>,
    rss_idle: u64,
    rss_registered: u64,
    rss_renewed: u64,
    rss_stages: Vec<(Stage, u64)>,
    warm: Vec<(Fetch, FetchFigures)>,
    cold: Vec<(Fetch, FetchFigures)>,
    listed: usize,
}

async fn one_run(o: &Options, interval: f64, hz: u64) -> anyhow::Result<RunReport> {
    let rate = o.instances as f64 / interval;
    let slice = o.seconds / f64::from(o.rounds.max(1));
    // Renewals pause while /health runs: leases must outlive that pause.
    let lease = 90u32.max((2.0 * (interval + slice)).ceil() as u32 + 10);
    let fleet = fleet(o, interval, lease)?;
    let server = start_server().await?;
    let pid = server.child.id();
    let addr = server.addr.clone();
    let host = HeaderValue::from_str(&addr)?;
    let mut pool = Vec::new();
    for _ in 0..o.connections {
        pool.push(connect(&addr).await?);
    }

    eprintln!("discovery: every {interval} s ({rate:.0}/s): idle");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = rss_kib(pid)?;
    let m = Meter::start(pid, hz)?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle_empty = m.stop()?;

    eprintln!("discovery: registering {}", o.instances);
    let m = Meter::start(pid, hz)?;
    let register_wall = register_all(&mut pool, &addr, &fleet).await?;
    let register_used = m.stop()?;
    let last_change = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_registered = rss_kib(pid)?;

    let m = Meter::start(pid, hz)?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle_full = m.stop()?;

    let (mut warm, mut cold) = (Vec::new(), Vec::new());
    let health_calls = Arc::new(vec![Call::get("/health")?]);
    let never = CancellationToken::new();
    // Warm-up, not counted.
    let warm_up = (rate * 2.0) as u64;
    paced(
        &mut pool,
        &addr,
        health_calls.clone(),
        0,
        rate,
        Some(warm_up),
        never.clone(),
    )
    .await?;
    paced(
        &mut pool,
        &addr,
        fleet.renewals.clone(),
        0,
        rate,
        Some(warm_up),
        never.clone(),
    )
    .await?;
    let mut next = warm_up;

    let mut health = PathFigures::default();
    let mut renew = PathFigures::default();
    let per_slice = (rate * slice).round() as u64;
    for round in 0..o.rounds {
        eprintln!("discovery: round {} of {}", round + 1, o.rounds);
        let m = Meter::start(pid, hz)?;
        let p = paced(
            &mut pool,
            &addr,
            health_calls.clone(),
            0,
            rate,
            Some(per_slice),
            never.clone(),
        )
        .await?;
        health.add(p, m.stop()?);
        let m = Meter::start(pid, hz)?;
        let p = paced(
            &mut pool,
            &addr,
            fleet.renewals.clone(),
            next,
            rate,
            Some(per_slice),
            never.clone(),
        )
        .await?;
        next += per_slice;
        renew.add(p, m.stop()?);
    }
    let rss_renewed = rss_kib(pid)?;

    // Fetches while the renewals go on, and a light /health load beside them (whether a
    // stall is the registry's lock or the whole node).
    let mut health_pool = Vec::new();
    for _ in 0..2 {
        health_pool.push(connect(&addr).await?);
    }
    let mut sender = connect(&addr).await?;
    let quiet = Duration::from_millis(DELTA_RETENTION_MS + 3 * EVICTION_INTERVAL_MS);
    if let Some(wait) = quiet.checked_sub(last_change.elapsed()) {
        tokio::time::sleep(wait).await;
    }
    // Build every listing once, before the renewals start again.
    let mut primed = FetchFigures::default();
    for kind in [
        Fetch::FullJson,
        Fetch::FullXml,
        Fetch::FullGzip,
        Fetch::Delta,
    ] {
        timed_fetch(&mut sender, &host, &kind.call()?, &mut primed).await?;
    }
    let mut extra = 0usize;
    let mut during = Vec::new();
    let mut rss_stages = Vec::new();
    for stage in [Stage::Warm, Stage::Cold, Stage::Herd] {
        eprintln!("discovery: fetches, {}", stage.label());
        let bg = Background::start(
            &mut pool,
            &mut health_pool,
            &addr,
            &fleet.renewals,
            next,
            rate,
        );
        let fetched = match stage {
            Stage::Warm => warm_fetches(o, &mut sender, &host).await,
            Stage::Cold => cold_fetches(o, &mut sender, &host, (pid, hz), &mut extra).await,
            Stage::Herd => herd_fetches(o, &mut sender, &addr, &host, (pid, hz), &mut extra)
                .await
                .map(|h| vec![(Fetch::Herd, h)]),
        };
        let (renewals, health_beside) = bg.stop(&mut pool, &mut health_pool).await?;
        next += renewals.sent;
        match stage {
            Stage::Warm => warm = fetched?,
            Stage::Cold | Stage::Herd => cold.extend(fetched?),
        }
        during.push((stage, renewals, health_beside));
        tokio::time::sleep(Duration::from_secs(1)).await;
        rss_stages.push((stage, rss_kib(pid)?));
    }

    // Every instance is still there.
    let all = exchange(&mut sender, &host, &Fetch::FullJson.call()?).await?;
    let tree: Value = serde_json::from_slice(&all.body).context("the full listing")?;
    let listed = tree["applications"]["application"]
        .as_array()
        .context("no application list")?
        .iter()
        .map(|a| a["instance"].as_array().map_or(1, Vec::len))
        .sum::<usize>();
    ensure!(
        listed == o.instances + extra,
        "{listed} instances listed, {} registered",
        o.instances + extra
    );
    drop((pool, health_pool, sender));
    drop(server);
    Ok(RunReport {
        interval,
        rate,
        lease,
        slice,
        idle_empty,
        idle_full,
        register_wall,
        register_used,
        health,
        renew,
        during,
        rss_idle,
        rss_registered,
        rss_renewed,
        rss_stages,
        warm,
        cold,
        listed,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Warm,
    Cold,
    Herd,
}

impl Stage {
    fn label(self) -> &'static str {
        match self {
            Stage::Warm => "warm fetches (listings cached)",
            Stage::Cold => "fetches each right after a change (listing rebuilt)",
            Stage::Herd => "herds: full fetches at once right after a change",
        }
    }
}

/// `GET /health` beside the renewals during the fetches, per second.
const HEALTH_BESIDE_RATE: f64 = 50.0;

/// A paced run in its own task; it hands its connections back.
type PacedTask = tokio::task::JoinHandle<anyhow::Result<(Vec<Sender>, Paced)>>;

/// Renewals at the run's rate and a light /health load, until stopped.
struct Background {
    stop: CancellationToken,
    tasks: Vec<PacedTask>,
}

impl Background {
    fn start(
        pool: &mut Vec<Sender>,
        health_pool: &mut Vec<Sender>,
        addr: &str,
        renewals: &Arc<Vec<Call>>,
        next: u64,
        rate: f64,
    ) -> Self {
        let stop = CancellationToken::new();
        let health = Arc::new(Call::get("/health").map_or_else(|_| Vec::new(), |c| vec![c]));
        let mut tasks = Vec::new();
        for (mut pool, calls, first, rate) in [
            (std::mem::take(pool), renewals.clone(), next, rate),
            (std::mem::take(health_pool), health, 0, HEALTH_BESIDE_RATE),
        ] {
            let addr = addr.to_owned();
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let p = paced(&mut pool, &addr, calls, first, rate, None, stop).await?;
                anyhow::Ok((pool, p))
            }));
        }
        Self { stop, tasks }
    }

    /// Stops; the connections go back to the pools. Returns (renewals, /health).
    async fn stop(
        self,
        pool: &mut Vec<Sender>,
        health_pool: &mut Vec<Sender>,
    ) -> anyhow::Result<(Paced, Paced)> {
        self.stop.cancel();
        let mut outcomes = Vec::new();
        for task in self.tasks {
            outcomes.push(task.await??);
        }
        let (h, health) = outcomes.pop().context("no /health outcome")?;
        let (r, renewals) = outcomes.pop().context("no renewal outcome")?;
        *pool = r;
        *health_pool = h;
        Ok((renewals, health))
    }
}

/// Registers one more instance: the registry changes, every cached listing is stale.
async fn one_more(
    o: &Options,
    sender: &mut Sender,
    host: &HeaderValue,
    extra: &mut usize,
) -> anyhow::Result<()> {
    let (uri, body, _) = instance(&app_of(*extra, o.apps), &ip_of(200, *extra), 30.0, 90)?;
    register(sender, host, &uri, &body).await?;
    *extra += 1;
    Ok(())
}

const FETCH_GAP: Duration = Duration::from_millis(10);

/// Warm fetches, every kind in turn (no change for longer than the delta retention, so
/// nothing is purged meanwhile).
async fn warm_fetches(
    o: &Options,
    sender: &mut Sender,
    host: &HeaderValue,
) -> anyhow::Result<Vec<(Fetch, FetchFigures)>> {
    let kinds = [
        Fetch::Health,
        Fetch::FullJson,
        Fetch::FullXml,
        Fetch::FullGzip,
        Fetch::Delta,
    ];
    let calls: Vec<Call> = kinds
        .iter()
        .map(|k| k.call())
        .collect::<anyhow::Result<_>>()?;
    let mut warm: Vec<(Fetch, FetchFigures)> = kinds
        .iter()
        .map(|&k| (k, FetchFigures::default()))
        .collect();
    for _ in 0..o.fetches {
        for ((_, figures), call) in warm.iter_mut().zip(&calls) {
            timed_fetch(sender, host, call, figures).await?;
            tokio::time::sleep(FETCH_GAP).await;
        }
    }
    Ok(warm)
}

/// Each kind of fetch right after one more instance registers.
async fn cold_fetches(
    o: &Options,
    sender: &mut Sender,
    host: &HeaderValue,
    (pid, hz): (u32, u64),
    extra: &mut usize,
) -> anyhow::Result<Vec<(Fetch, FetchFigures)>> {
    let kinds = [
        Fetch::Health,
        Fetch::FullJson,
        Fetch::FullXml,
        Fetch::FullGzip,
        Fetch::GzipOnly,
        Fetch::Delta,
    ];
    let mut cold: Vec<(Fetch, FetchFigures)> = kinds
        .iter()
        .map(|&k| (k, FetchFigures::default()))
        .collect();
    let plain_json = Fetch::FullJson.call()?;
    let mut unmeasured = FetchFigures::default();
    for _ in 0..o.cold {
        for (kind, figures) in &mut cold {
            one_more(o, sender, host, extra).await?;
            if *kind == Fetch::GzipOnly {
                timed_fetch(sender, host, &plain_json, &mut unmeasured).await?;
            }
            let m = Meter::start(pid, hz)?;
            timed_fetch(sender, host, &kind.call()?, figures).await?;
            figures.server_ms.push(m.stop()?.server * 1000.0);
            tokio::time::sleep(FETCH_GAP * 2).await;
        }
    }
    Ok(cold)
}

/// HERD clients ask for the full listing at once right after a change; the figures are
/// the slowest of each herd and the server CPU over it.
async fn herd_fetches(
    o: &Options,
    sender: &mut Sender,
    addr: &str,
    host: &HeaderValue,
    (pid, hz): (u32, u64),
    extra: &mut usize,
) -> anyhow::Result<FetchFigures> {
    let plain_json = Fetch::FullJson.call()?;
    let mut herd = FetchFigures::default();
    let mut senders = Vec::new();
    for _ in 0..HERD {
        senders.push(connect(addr).await?);
    }
    for _ in 0..o.cold {
        one_more(o, sender, host, extra).await?;
        let m = Meter::start(pid, hz)?;
        let tasks: Vec<_> = senders
            .drain(..)
            .map(|mut s| {
                let host = host.clone();
                let call = plain_json.clone();
                tokio::spawn(async move {
                    let mut f = FetchFigures::default();
                    timed_fetch(&mut s, &host, &call, &mut f).await?;
                    anyhow::Ok((s, f))
                })
            })
            .collect();
        let mut slowest = 0.0f64;
        let mut bytes = 0.0;
        for task in tasks {
            let (s, f) = task.await??;
            senders.push(s);
            slowest = f.ms.iter().copied().fold(slowest, f64::max);
            bytes = f.bytes.first().copied().unwrap_or(bytes);
        }
        herd.server_ms.push(m.stop()?.server * 1000.0);
        herd.ms.push(slowest);
        herd.bytes.push(bytes);
        tokio::time::sleep(FETCH_GAP * 2).await;
    }
    Ok(herd)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn count(n: f64) -> String {
    let s = format!("{n:.0}");
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn print_run(o: &Options, r: &RunReport) {
    let rate = count(r.rate);
    let instances = count(o.instances as f64);
    println!(
        "\n### {instances} instances in {} applications renewing every {} s: {rate} renewals/s\n",
        o.apps, r.interval
    );
    println!(
        "`promptflow serve discovery-service` alone (self-preservation off, lease {} s, delta \
         retention {} s). Paced at {rate} requests/s over {} keep-alive connections, {} \
         interleaved slices of {:.0} s per path; latency from the due time when the \
         connection was still busy, else from the send. Baseline: `GET /health` on the same \
         server at the same rate for the same time.\n",
        r.lease,
        DELTA_RETENTION_MS / 1000,
        o.connections,
        o.rounds,
        r.slice
    );
    println!(
        "| load | requests | per s | server CPU ms/s | server CPU µs/request | ratio to /health | p50 ms | p99 ms | errors | bench CPU ms/s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let ms_per_s = |u: &Used| u.server * 1000.0 / u.wall.max(1e-9);
    let bench_ms_per_s = |u: &Used| u.bench * 1000.0 / u.wall.max(1e-9);
    println!(
        "| idle, empty registry | 0 | 0 | {:.1} | – | – | – | – | – | – |",
        ms_per_s(&r.idle_empty)
    );
    println!(
        "| idle, {instances} instances | 0 | 0 | {:.1} | – | – | – | – | – | – |",
        ms_per_s(&r.idle_full)
    );
    let base = r.health.server_us_per_request();
    for (label, f) in [
        (format!("baseline: `GET /health` at {rate}/s"), &r.health),
        (
            format!("`PUT /eureka/apps/{{app}}/{{id}}` at {rate}/s"),
            &r.renew,
        ),
    ] {
        let p = &f.paced;
        println!(
            "| {label} | {} | {:.0} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} | {} | {:.1} |",
            p.ok,
            p.ok as f64 / f.used.wall.max(1e-9),
            ms_per_s(&f.used),
            f.server_us_per_request(),
            f.server_us_per_request() / base.max(1e-9),
            Paced::ms(&p.latencies_us, 0.50),
            Paced::ms(&p.latencies_us, 0.99),
            p.failed,
            bench_ms_per_s(&f.used)
        );
    }
    let reg = r.register_wall.as_secs_f64();
    println!(
        "| register {instances} (`POST`, as fast as {} connections go) | {} | {:.0} | {:.1} | {:.1} | – | – | – | 0 | {:.1} |",
        o.connections,
        o.instances,
        o.instances as f64 / reg.max(1e-9),
        ms_per_s(&r.register_used),
        r.register_used.server * 1e6 / o.instances.max(1) as f64,
        bench_ms_per_s(&r.register_used)
    );
    let mut diagnostics = vec![
        ("/health".to_owned(), &r.health.paced),
        ("renew".to_owned(), &r.renew.paced),
    ];
    for (stage, renewals, health) in &r.during {
        diagnostics.push((format!("renew during {}", stage.label()), renewals));
        diagnostics.push((format!("/health during {}", stage.label()), health));
    }
    for (what, p) in diagnostics {
        if let Some(e) = &p.first_error {
            eprintln!("discovery: {what}: first error: {e}");
        }
        eprintln!(
            "discovery: {what}: {} sent, {} queued behind a busy connection, timer wake-up late p50 {:.2} ms p99 {:.2} ms",
            p.sent,
            p.queued,
            Paced::ms(&p.wake_late_us, 0.50),
            Paced::ms(&p.wake_late_us, 0.99)
        );
    }

    println!("\n| server memory | RSS MiB | ratio to idle |");
    println!("|---|---:|---:|");
    let mut rss = vec![
        ("idle, empty registry".to_owned(), r.rss_idle),
        (
            format!("{instances} instances registered"),
            r.rss_registered,
        ),
        ("after the renewals".to_owned(), r.rss_renewed),
    ];
    for (stage, kib) in &r.rss_stages {
        rss.push((format!("after the {}", stage.label()), *kib));
    }
    for (label, kib) in rss {
        println!(
            "| {label} | {:.1} | {:.2} |",
            mib(kib),
            kib as f64 / r.rss_idle.max(1) as f64
        );
    }
    println!(
        "\nRegistered instances add {:.1} KiB each to the resident set.",
        r.rss_registered.saturating_sub(r.rss_idle) as f64 / o.instances.max(1) as f64
    );

    println!(
        "\nFetches while the renewals run ({rate}/s), one client, one after another: {} \
         warm rounds (the listing cached), then {} fetches of each kind each right after one \
         more instance registers (the listing rebuilt), then {} herds of {HERD} clients \
         asking at once right after a change. {} instances listed at the end.\n",
        o.fetches, o.cold, o.cold, r.listed
    );
    println!(
        "| fetch | bytes | warm p50 ms | warm p99 ms | warm p50 ratio to /health | after a change p50 ms | p99 ms | ratio to warm p50 | server CPU ms after a change, p50 |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let health = r
        .warm
        .iter()
        .find(|(k, _)| *k == Fetch::Health)
        .map_or(1.0, |(_, f)| f.p(0.5));
    for (kind, cold) in &r.cold {
        let warm = r.warm.iter().find(|(k, _)| k == kind).map(|(_, f)| f);
        let bytes = percentile(&warm.map_or(cold, |w| w).bytes, 0.5);
        let warm_cells = warm.map_or("– | – | – | ".to_owned(), |w| {
            format!(
                "{:.2} | {:.2} | {:.1} | ",
                w.p(0.5),
                w.p(0.99),
                w.p(0.5) / health.max(1e-9)
            )
        });
        let ratio = warm.map_or("–".to_owned(), |w| {
            format!("{:.1}", cold.p(0.5) / w.p(0.5).max(1e-9))
        });
        println!(
            "| {} | {} | {warm_cells}{:.2} | {:.2} | {ratio} | {:.0} |",
            kind.label(),
            count(bytes),
            cold.p(0.5),
            cold.p(0.99),
            percentile(&cold.server_ms, 0.5)
        );
    }
    if let Some((_, d)) = r.cold.iter().find(|(k, _)| *k == Fetch::Delta) {
        println!(
            "\nThe warm delta is the steady state (no change in the last {} s); right after a \
             change it holds the changes of the last {} s ({} bytes at the median). Server \
             CPU over a fetch includes the renewals meanwhile (/proc ticks of 10 ms).",
            DELTA_RETENTION_MS / 1000,
            DELTA_RETENTION_MS / 1000,
            count(percentile(&d.bytes, 0.5))
        );
    }

    println!(
        "\nRenewals ({rate}/s) and `GET /health` ({HEALTH_BESIDE_RATE:.0}/s, 2 more \
         connections) while the fetches above run:\n"
    );
    println!(
        "| during | renewals | renew p50 ms | renew p99 ms | renew max ms | /health p50 ms | /health p99 ms | /health max ms | errors |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (stage, renewals, health) in &r.during {
        let max = |p: &Paced| p.latencies_us.iter().copied().max().unwrap_or(0) as f64 / 1000.0;
        println!(
            "| {} | {} | {:.2} | {:.2} | {:.1} | {:.2} | {:.2} | {:.1} | {} |",
            stage.label(),
            renewals.ok,
            Paced::ms(&renewals.latencies_us, 0.50),
            Paced::ms(&renewals.latencies_us, 0.99),
            max(renewals),
            Paced::ms(&health.latencies_us, 0.50),
            Paced::ms(&health.latencies_us, 0.99),
            max(health),
            renewals.failed + health.failed
        );
    }
}

pub async fn run(o: Options) -> anyhow::Result<()> {
    if o.instances == 0 || o.apps == 0 || o.connections == 0 || o.rounds == 0 {
        bail!("instances, apps, connections and rounds must be at least 1");
    }
    if o.intervals.iter().any(|i| *i <= 0.0) || o.seconds <= 0.0 {
        bail!("intervals and seconds must be positive");
    }
    ensure!(o.instances <= 65_536, "at most 65,536 instances (10.1.x.y)");
    let hz = clock_ticks()?;
    let mut reports = Vec::new();
    for &interval in &o.intervals {
        let r = one_run(&o, interval, hz).await?;
        print_run(&o, &r);
        reports.push(r);
    }
    if reports.len() > 1 {
        println!(
            "\n### Renewal cost by rate ({} instances)\n",
            count(o.instances as f64)
        );
        println!(
            "| renew every | renewals/s | server CPU, % of one core | µs/renewal | µs per `GET /health` at that rate | ratio | renew p99 ms |"
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|");
        for r in &reports {
            println!(
                "| {} s | {} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} |",
                r.interval,
                count(r.rate),
                r.renew.used.server * 100.0 / r.renew.used.wall.max(1e-9),
                r.renew.server_us_per_request(),
                r.health.server_us_per_request(),
                r.renew.server_us_per_request() / r.health.server_us_per_request().max(1e-9),
                Paced::ms(&r.renew.paced.latencies_us, 0.99)
            );
        }
    }
    Ok(())
}
