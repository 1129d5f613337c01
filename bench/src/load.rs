//! A small HTTP/1.1 load generator over keep-alive connections: closed-loop (`run`,
//! `run_calls`: each connection sends the next request as soon as the last answer is read)
//! and open-loop at a fixed rate (`paced`: latency from each request's scheduled time).

use std::time::{Duration, Instant};

use anyhow::Context;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

#[derive(Debug, Default)]
pub struct Stats {
    pub ok: u64,
    /// Answers other than 2xx, and requests lost with their connection (reconnected).
    pub failed: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    latencies_us: Vec<u32>,
}

impl Stats {
    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Latency at quantile `q`, in milliseconds.
    pub fn percentile(&self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let mut v = self.latencies_us.clone();
        v.sort_unstable();
        let i = ((v.len() as f64 - 1.0) * q).round() as usize;
        f64::from(v[i]) / 1000.0
    }
}

/// One request to send: method, path, body (JSON when not empty).
#[derive(Debug, Clone)]
pub struct Call {
    pub method: hyper::Method,
    pub path: String,
    pub body: bytes::Bytes,
}

impl Call {
    pub fn get(path: &str) -> Self {
        Self {
            method: hyper::Method::GET,
            path: path.to_owned(),
            body: bytes::Bytes::new(),
        }
    }
}

/// Makes the `n`-th request of connection `c`.
pub type MakeCall = std::sync::Arc<dyn Fn(usize, u64) -> Call + Send + Sync>;

/// GETs `path` over `connections` connections for `duration`.
pub async fn run(
    addr: &str,
    path: &str,
    token: Option<&str>,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Stats> {
    let call = Call::get(path);
    run_calls(
        addr,
        token,
        connections,
        duration,
        std::sync::Arc::new(move |_, _| call.clone()),
    )
    .await
}

/// Sends what `make` says over `connections` connections for `duration`.
pub async fn run_calls(
    addr: &str,
    token: Option<&str>,
    connections: usize,
    duration: Duration,
    make: MakeCall,
) -> anyhow::Result<Stats> {
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for c in 0..connections {
        let addr = addr.to_owned();
        let auth = token.map(|t| format!("Bearer {t}"));
        let make = make.clone();
        tasks.push(tokio::spawn(async move {
            connection(&addr, auth.as_deref(), deadline, c, make).await
        }));
    }
    let mut total = Stats::default();
    for task in tasks {
        let s = task.await??;
        total.ok += s.ok;
        total.failed += s.failed;
        if total.first_error.is_none() {
            total.first_error = s.first_error;
        }
        total.latencies_us.extend(s.latencies_us);
    }
    total.elapsed = started.elapsed();
    Ok(total)
}

type Sender = hyper::client::conn::http1::SendRequest<Full<bytes::Bytes>>;

async fn connect(addr: &str) -> anyhow::Result<Sender> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

fn request(
    call: Call,
    addr: &str,
    auth: Option<&str>,
) -> anyhow::Result<Request<Full<bytes::Bytes>>> {
    let mut req = Request::builder()
        .method(call.method)
        .uri(&call.path)
        .header("host", addr);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    if !call.body.is_empty() {
        req = req.header("content-type", "application/json");
    }
    Ok(req.body(Full::new(call.body))?)
}

/// Sends one request and reads the whole answer; its status.
async fn exchange(
    sender: &mut Sender,
    req: Request<Full<bytes::Bytes>>,
) -> anyhow::Result<hyper::StatusCode> {
    sender.ready().await?;
    let response = sender.send_request(req).await?;
    let status = response.status();
    response.into_body().collect().await?;
    Ok(status)
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

async fn connection(
    addr: &str,
    auth: Option<&str>,
    deadline: Instant,
    c: usize,
    make: MakeCall,
) -> anyhow::Result<Stats> {
    let mut sender = connect(addr).await?;
    let mut stats = Stats::default();
    let mut n = 0u64;
    while Instant::now() < deadline {
        let call = make(c, n);
        n += 1;
        let what = format!("{} {}", call.method, call.path);
        let req = request(call, addr, auth)?;
        let sent = Instant::now();
        match exchange(&mut sender, req).await {
            Ok(status) if status.is_success() => {
                stats.ok += 1;
                stats.latencies_us.push(micros(sent.elapsed()));
            }
            Ok(status) => {
                stats.failed += 1;
                stats
                    .first_error
                    .get_or_insert_with(|| format!("{what} answered {status}"));
            }
            Err(e) => {
                // The connection is lost: count the request, connect again.
                stats.failed += 1;
                stats
                    .first_error
                    .get_or_insert_with(|| format!("{what}: {e:#}"));
                sender = reconnect(addr, deadline, &mut stats).await?;
            }
        }
    }
    Ok(stats)
}

/// Connects again, retrying until `deadline` (each failed attempt counted).
async fn reconnect(addr: &str, deadline: Instant, stats: &mut Stats) -> anyhow::Result<Sender> {
    loop {
        match connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() < deadline => {
                stats.failed += 1;
                stats.first_error.get_or_insert_with(|| format!("{e:#}"));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// What an open-loop run did.
#[derive(Debug, Default)]
pub struct Paced {
    /// Requests scheduled (every one is sent, late if need be).
    pub scheduled: u64,
    pub ok: u64,
    pub failed: u64,
    pub first_error: Option<String>,
    /// First scheduled time to the last answer.
    pub elapsed: Duration,
    /// Scheduled time to the end of the answer, for the answered (2xx) ones.
    latencies_us: Vec<u32>,
    /// How late the pacing thread released a request after its scheduled time.
    pacer_late_us: Vec<u32>,
    /// Released to sent: waiting for a free connection and for the task to run.
    queued_us: Vec<u32>,
}

fn quantile_ms(v: &[u32], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut v = v.to_vec();
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    f64::from(v[i]) / 1000.0
}

impl Paced {
    /// Latency from the scheduled time at quantile `q`, in milliseconds.
    pub fn percentile(&self, q: f64) -> f64 {
        quantile_ms(&self.latencies_us, q)
    }

    /// The pacing thread's lateness at quantile `q`, in milliseconds.
    pub fn pacer_late(&self, q: f64) -> f64 {
        quantile_ms(&self.pacer_late_us, q)
    }

    /// Release-to-send wait at quantile `q`, in milliseconds.
    pub fn queued(&self, q: f64) -> f64 {
        quantile_ms(&self.queued_us, q)
    }

    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Open loop: GETs `path` at `rate` requests/s for `duration` over `connections` keep-alive
/// connections (connected before the clock starts). Request k is scheduled at
/// `t0 + k / rate`, whatever the answers do; a thread with the OS's fine-grained sleep
/// releases each at its time (tokio's timer has 1 ms steps) into one queue, which the
/// first free connection takes from. Latency counts from the scheduled time, so a slow
/// answer delays the requests queued behind it and they count that wait (no coordinated
/// omission).
pub async fn paced(
    addr: &str,
    path: &str,
    token: Option<&str>,
    connections: usize,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<Paced> {
    anyhow::ensure!(
        rate > 0.0 && connections > 0,
        "rate and connections must be positive"
    );
    let mut senders = Vec::with_capacity(connections);
    for _ in 0..connections {
        senders.push(connect(addr).await?);
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Instant)>();
    let rx = std::sync::Arc::new(tokio::sync::Mutex::new(rx));
    let t0 = Instant::now() + Duration::from_millis(20);
    let end = t0 + duration;
    let pacer = std::thread::spawn(move || {
        let mut k = 0u64;
        loop {
            let due = t0 + Duration::from_secs_f64(k as f64 / rate);
            if due >= end {
                break;
            }
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if tx.send((due, Instant::now())).is_err() {
                break;
            }
            k += 1;
        }
        k
    });
    let mut tasks = Vec::new();
    for mut sender in senders {
        let rx = rx.clone();
        let addr = addr.to_owned();
        let auth = token.map(|t| format!("Bearer {t}"));
        let call = Call::get(path);
        tasks.push(tokio::spawn(async move {
            let mut out = Paced::default();
            loop {
                let next = rx.lock().await.recv().await;
                let Some((due, released)) = next else { break };
                let req = request(call.clone(), &addr, auth.as_deref())?;
                let sent = Instant::now();
                out.pacer_late_us
                    .push(micros(released.saturating_duration_since(due)));
                out.queued_us
                    .push(micros(sent.saturating_duration_since(released)));
                match exchange(&mut sender, req).await {
                    Ok(status) if status.is_success() => {
                        out.ok += 1;
                        out.latencies_us.push(micros(due.elapsed()));
                    }
                    Ok(status) => {
                        out.failed += 1;
                        out.first_error
                            .get_or_insert_with(|| format!("GET {} answered {status}", call.path));
                    }
                    Err(e) => {
                        out.failed += 1;
                        out.first_error
                            .get_or_insert_with(|| format!("GET {}: {e:#}", call.path));
                        sender = connect(&addr).await?;
                    }
                }
            }
            anyhow::Ok(out)
        }));
    }
    let mut total = Paced::default();
    for task in tasks {
        let out = task.await??;
        total.ok += out.ok;
        total.failed += out.failed;
        if total.first_error.is_none() {
            total.first_error = out.first_error;
        }
        total.latencies_us.extend(out.latencies_us);
        total.pacer_late_us.extend(out.pacer_late_us);
        total.queued_us.extend(out.queued_us);
    }
    total.elapsed = t0.elapsed();
    total.scheduled = pacer
        .join()
        .map_err(|_| anyhow::anyhow!("the pacing thread panicked"))?;
    Ok(total)
}

/// Registers a user and logs in; returns an access token.
pub async fn login(addr: &str) -> anyhow::Result<String> {
    login_as(addr, "bencher").await
}

/// Registers `name` (if new) and logs in; returns an access token.
pub async fn login_as(addr: &str, name: &str) -> anyhow::Result<String> {
    let client = reqwest::Client::new();
    let password = "correct horse battery";
    let body = serde_json::json!({
        "username": name, "email": format!("{name}@example.com"), "password": password
    });
    client
        .post(format!("http://{addr}/api/auth/register"))
        .json(&body)
        .send()
        .await?;
    let tokens: serde_json::Value = client
        .post(format!("http://{addr}/api/auth/login"))
        .json(&serde_json::json!({ "username": name, "password": password }))
        .send()
        .await?
        .json()
        .await?;
    tokens["access_token"]
        .as_str()
        .map(str::to_owned)
        .context("no access token in the login answer")
}
