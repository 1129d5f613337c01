//! A small closed-loop HTTP/1.1 load generator: N keep-alive connections, each sending the
//! next request as soon as the last answer is read.

use std::time::{Duration, Instant};

use anyhow::Context;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

#[derive(Debug, Default)]
pub struct Stats {
    pub ok: u64,
    pub failed: u64,
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
        total.latencies_us.extend(s.latencies_us);
    }
    total.elapsed = started.elapsed();
    Ok(total)
}

async fn connection(
    addr: &str,
    auth: Option<&str>,
    deadline: Instant,
    c: usize,
    make: MakeCall,
) -> anyhow::Result<Stats> {
    let stream = TcpStream::connect(addr).await.context("connecting")?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut stats = Stats::default();
    let mut n = 0u64;
    while Instant::now() < deadline {
        let call = make(c, n);
        n += 1;
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
        let req = req.body(Full::new(call.body))?;
        let sent = Instant::now();
        let response = sender.send_request(req).await?;
        let status = response.status();
        response.into_body().collect().await?;
        let took = sent.elapsed();
        if status.is_success() {
            stats.ok += 1;
            stats
                .latencies_us
                .push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
        } else {
            stats.failed += 1;
        }
    }
    Ok(stats)
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
