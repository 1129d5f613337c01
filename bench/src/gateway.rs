//! gateway-service as a reverse proxy, against nginx and HAProxy, in front of the same
//! backend (`baseline-server`'s `GET /api/bench/item`, a fixed 1 KB JSON body), and against
//! the backend alone (`direct`).
//!
//! Every proxy gets the same fair setup: keep-alive on both sides (an upstream pool), no
//! access log, no cache, generous timeouts; the configurations generated are printed with
//! the results. Every request carries the same `Authorization: Bearer <access token>`
//! header on every path: the gateway verifies it (the route is protected), the others
//! pass it on.
//!
//! Two measurements, paths interleaved within each round (PITFALLS: on two cores the load
//! generator, the proxy and the backend share the cores, so only ratios, CPU per request
//! and added latency at a fixed rate say much):
//! - saturation: closed loop, N connections, req/s, its ratio to `direct` (median of the
//!   per-round ratios), and the proxy's CPU time per answered request (utime + stime from
//!   /proc, the proxy process and its children, i.e. nginx's master and workers);
//! - latency: open loop at a fixed rate below saturation (by default 40 % of the lowest
//!   saturation throughput of the run), latency from each request's scheduled time, p50
//!   and p99, and what each proxy adds to `direct` (per round, median).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use crate::{Server, cpu_time, free_port, load, median, sibling};

/// One way from the load generator to the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Route {
    /// Straight to the backend.
    Direct,
    /// Through `promptflow serve gateway-service`.
    Gateway,
    Nginx,
    Haproxy,
}

impl Route {
    fn label(self) -> &'static str {
        match self {
            Route::Direct => "direct (no proxy)",
            Route::Gateway => "PromptFlow gateway",
            Route::Nginx => "nginx",
            Route::Haproxy => "HAProxy",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub paths: Vec<Route>,
    pub connections: usize,
    pub seconds: f64,
    pub rounds: u32,
    /// Fixed rate for the latency measurement; None: 40 % of the lowest saturation figure.
    pub rate: Option<f64>,
    pub latency_seconds: f64,
    pub latency_connections: usize,
    pub gateway_rate_limit: bool,
    /// The gateway's `pack_workers` setting.
    pub gateway_pack_workers: bool,
}

const ITEM: &str = "/api/bench/item";
/// Share of the lowest saturation throughput used as the latency rate by default.
const RATE_SHARE: f64 = 0.4;
/// Log in again when the token is older than this (access tokens last 15 minutes).
const TOKEN_MAX_AGE: Duration = Duration::from_secs(300);

/// A path ready to measure.
struct Target {
    route: Route,
    addr: String,
    /// The proxy's process (None for `direct`).
    proxy: Option<Server>,
    /// The configuration it runs with, for the report.
    config: Option<(&'static str, &'static str, String)>,
}

impl Target {
    fn proxy_pid(&self) -> Option<u32> {
        self.proxy.as_ref().map(|s| s.child.id())
    }
}

/// The figures of every round for one path.
#[derive(Default)]
struct Figures {
    rps: Vec<f64>,
    ratio: Vec<f64>,
    proxy_us: Vec<f64>,
    backend_us: Vec<f64>,
    errors: u64,
    first_error: Option<String>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    added_p50: Vec<f64>,
    added_p99: Vec<f64>,
    paced_proxy_us: Vec<f64>,
    paced_errors: u64,
    pacer_late_p99: Vec<f64>,
    queued_p99: Vec<f64>,
}

/// An access token, renewed before it gets old.
struct Token {
    users: String,
    value: String,
    at: Instant,
}

impl Token {
    async fn new(users: &str) -> anyhow::Result<Self> {
        Ok(Self {
            users: users.to_owned(),
            value: load::login(users)
                .await
                .context("logging in to user-service")?,
            at: Instant::now(),
        })
    }

    async fn current(&mut self) -> anyhow::Result<&str> {
        if self.at.elapsed() > TOKEN_MAX_AGE {
            *self = Self::new(&self.users).await?;
        }
        Ok(&self.value)
    }
}

/// Utime + stime of a process and of its children (nginx's workers).
fn tree_cpu(pid: u32) -> Duration {
    let mut total = cpu_time(pid);
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let ppid = std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|s| {
                    // After the command name (in parentheses): state, then the parent's pid.
                    s.rsplit_once(')')?
                        .1
                        .split_whitespace()
                        .nth(1)?
                        .parse::<u32>()
                        .ok()
                });
            if ppid == Some(pid) {
                total += cpu_time(child);
            }
        }
    }
    total
}

/// A program of a Debian package, or a message naming the package.
fn installed(program: &str, package: &str) -> anyhow::Result<PathBuf> {
    let mut dirs = vec![PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")];
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs.into_iter()
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "{program} is not installed: the {program} path needs it (`apt-get install {package}`), \
                 or leave it out with --paths"
            )
        })
}

/// The first line a command prints (on stdout or stderr), e.g. its version.
fn first_line(program: &Path, arg: &str) -> String {
    Command::new(program)
        .arg(arg)
        .output()
        .ok()
        .and_then(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .map(|l| l.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The bench's own stderr, for a child's output.
fn to_stderr() -> anyhow::Result<Stdio> {
    use std::os::fd::AsFd;
    Ok(Stdio::from(std::io::stderr().as_fd().try_clone_to_owned()?))
}

/// Drops the caller's `PROMPTFLOW_*` settings, so only the bench's apply.
fn clean_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PROMPTFLOW_") {
            cmd.env_remove(key);
        }
    }
}

/// Log filter for the PromptFlow processes: warnings, and the one "listening" line (the
/// only event with a `local_addr` field), so no per-request line is ever written.
const LOG_FILTER: &str = "warn,[{local_addr}]=info";

/// Spawns a PromptFlow process and waits for `service`'s "listening" log line; its other
/// lines go to the bench's stderr.
fn spawn_service(
    mut cmd: Command,
    service: &str,
    data: tempfile::TempDir,
    hint: &str,
) -> anyhow::Result<Server> {
    cmd.stdout(Stdio::piped()).stderr(to_stderr()?);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting promptflow serve {service}"))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    let name = service.to_owned();
    // Keeps reading to the end, so the process never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if v["message"] == "listening" && v["service"] == name.as_str() {
                let _ = tx.send(v["local_addr"].as_str().unwrap_or_default().to_owned());
            } else {
                let _ = writeln!(std::io::stderr(), "{name}: {line}");
            }
        }
    });
    let mut server = Server {
        child,
        addr: String::new(),
        _data: data,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(addr) => {
                server.addr = addr;
                return Ok(server);
            }
            Err(_) if Instant::now() > deadline => {
                bail!("promptflow serve {service} did not say it listens within 60 s{hint}")
            }
            Err(_) => {
                if let Some(status) = server.child.try_wait()? {
                    bail!(
                        "promptflow serve {service} stopped ({status}) before it listened (its output is above){hint}"
                    );
                }
            }
        }
    }
}

/// `baseline-server` on a free port; its address is its first line.
fn start_backend() -> anyhow::Result<Server> {
    let mut child = Command::new(sibling("baseline-server")?)
        .arg("127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting baseline-server")?;
    let mut line = String::new();
    let read = child
        .stdout
        .take()
        .map(|out| BufReader::new(out).read_line(&mut line));
    let server = Server {
        child,
        addr: line.trim().to_owned(),
        _data: tempfile::tempdir()?,
    };
    ensure!(
        matches!(read, Some(Ok(n)) if n > 0) && !server.addr.is_empty(),
        "baseline-server did not print its address"
    );
    Ok(server)
}

fn start_users() -> anyhow::Result<Server> {
    let data = tempfile::tempdir()?;
    let mut cmd = Command::new(sibling("promptflow")?);
    clean_env(&mut cmd);
    cmd.args(["serve", "user-service", "--data-dir"])
        .arg(data.path())
        .env("PROMPTFLOW_USER__LISTEN", "127.0.0.1:0")
        .env("PROMPTFLOW_USER__PROVISION_LIBRARY", "false")
        .env("PROMPTFLOW_DISCOVERY__MODE", "static")
        .env("PROMPTFLOW_LOG", LOG_FILTER);
    spawn_service(cmd, "user-service", data, "")
}

fn gateway_yaml(backend: &str, users: &str, o: &Options) -> String {
    let limit = if o.gateway_rate_limit {
        "{ enabled: true, default: { replenish_rate: 10000000, burst_capacity: 10000000 } }"
    } else {
        "{ enabled: false }"
    };
    format!(
        r#"log: {{ level: "{LOG_FILTER}" }}
discovery:
  mode: static
  static_instances: {{ bench-backend: ["http://{backend}"], user-service: ["http://{users}"] }}
gateway:
  listen: 127.0.0.1:0
  access_log: false
  jwks_url: http://{users}/.well-known/jwks.json
  routes:
    - id: bench
      uri: lb://bench-backend
      predicates: ["Path=/api/bench/**"]
  rate_limit: {limit}
  pack_workers: {}
"#,
        o.gateway_pack_workers
    )
}

/// For the gateway: how many of its workers are active and how many connections it has
/// moved between them so far (its packing, from its `/metrics`); empty for the others.
async fn workers_seen(t: &Target) -> String {
    if t.route != Route::Gateway {
        return String::new();
    }
    let url = format!("http://{}/metrics", t.addr);
    let Ok(answer) = reqwest::get(url).await else {
        return String::new();
    };
    let text = answer.text().await.unwrap_or_default();
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or("0")
            .trim()
            .to_owned()
    };
    format!(
        "; workers active {}, connections moved so far {}",
        value("gateway_workers_active"),
        value("gateway_connections_moved_total")
    )
}

fn start_gateway(backend: &str, users: &str, o: &Options) -> anyhow::Result<Target> {
    let data = tempfile::tempdir()?;
    let yaml = gateway_yaml(backend, users, o);
    let file = data.path().join("gateway.yaml");
    std::fs::write(&file, &yaml)?;
    let mut cmd = Command::new(sibling("promptflow")?);
    clean_env(&mut cmd);
    cmd.args(["serve", "gateway-service", "--config"])
        .arg(&file)
        .arg("--data-dir")
        .arg(data.path());
    let server = spawn_service(
        cmd,
        "gateway-service",
        data,
        "; is gateway-service in this build of promptflow? Until it is, run with \
         --paths direct,nginx,haproxy",
    )?;
    Ok(Target {
        route: Route::Gateway,
        addr: server.addr.clone(),
        proxy: Some(server),
        config: Some(("gateway.yaml", "yaml", yaml)),
    })
}

fn nginx_conf(dir: &Path, port: u16, backend: &str) -> String {
    let d = dir.display();
    format!(
        r#"worker_processes auto;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    # Client keep-alive: no limit on requests per connection (the default, 1000, would
    # close the load generator's connections every 1000 requests; the others never do).
    keepalive_timeout 300s;
    keepalive_requests 100000000;
    upstream backend {{
        server {backend};
        keepalive 128;
        keepalive_requests 100000000;
        keepalive_timeout 300s;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 5s;
            proxy_read_timeout 300s;
            proxy_send_timeout 300s;
        }}
    }}
}}
"#
    )
}

fn haproxy_cfg(port: u16, backend: &str) -> String {
    format!(
        r#"global
    nbthread 2
    maxconn 4096

defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-request 300s
    timeout http-keep-alive 300s
    http-reuse always

frontend bench
    bind 127.0.0.1:{port}
    default_backend backend

backend backend
    server backend {backend}
"#
    )
}

/// Waits until `GET /health` through `server` answers (the backend's), or it stops.
async fn wait_proxy(server: &mut Server, what: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(status) = server.child.try_wait()? {
            bail!("{what} stopped ({status}) before it answered (its output is above)");
        }
        if let Ok(r) = client
            .get(format!("http://{}/health", server.addr))
            .send()
            .await
            && r.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{what} at {} did not answer within 30 s", server.addr)
}

async fn start_nginx(program: &Path, backend: &str) -> anyhow::Result<Target> {
    let data = tempfile::tempdir()?;
    {
        use std::os::unix::fs::PermissionsExt;
        // Workers run as nobody when the master is root: they may need the temp folders.
        std::fs::set_permissions(data.path(), std::fs::Permissions::from_mode(0o755))?;
    }
    let port = free_port()?;
    let conf = nginx_conf(data.path(), port, backend);
    let file = data.path().join("nginx.conf");
    std::fs::write(&file, &conf)?;
    let child = Command::new(program)
        .arg("-p")
        .arg(data.path())
        .arg("-c")
        .arg(&file)
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting nginx")?;
    let mut server = Server {
        child,
        addr: format!("127.0.0.1:{port}"),
        _data: data,
    };
    wait_proxy(&mut server, "nginx").await?;
    Ok(Target {
        route: Route::Nginx,
        addr: server.addr.clone(),
        proxy: Some(server),
        config: Some(("nginx.conf", "nginx", conf)),
    })
}

async fn start_haproxy(program: &Path, backend: &str) -> anyhow::Result<Target> {
    let data = tempfile::tempdir()?;
    let port = free_port()?;
    let cfg = haproxy_cfg(port, backend);
    let file = data.path().join("haproxy.cfg");
    std::fs::write(&file, &cfg)?;
    let child = Command::new(program)
        .arg("-f")
        .arg(&file)
        .arg("-db")
        .stdout(to_stderr()?)
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting haproxy")?;
    let mut server = Server {
        child,
        addr: format!("127.0.0.1:{port}"),
        _data: data,
    };
    wait_proxy(&mut server, "haproxy").await?;
    Ok(Target {
        route: Route::Haproxy,
        addr: server.addr.clone(),
        proxy: Some(server),
        config: Some(("haproxy.cfg", "haproxy", cfg)),
    })
}

/// GET `path` at `addr`, optionally with a bearer token: status and body.
async fn get(addr: &str, token: Option<&str>) -> anyhow::Result<(u16, bytes::Bytes)> {
    let mut req = reqwest::Client::new().get(format!("http://{addr}{ITEM}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req
        .send()
        .await
        .with_context(|| format!("GET {ITEM} at {addr}"))?;
    Ok((r.status().as_u16(), r.bytes().await?))
}

/// One request through the path answers 200 with the backend's body; through the gateway
/// one without a token answers 401.
/// A proxy may listen before it is ready (the gateway fetches its keys): a few seconds are
/// allowed for the first good answer.
async fn check(t: &Target, token: &str, expected: &[u8]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let (status, body) = loop {
        let (status, body) = get(&t.addr, Some(token)).await?;
        if (status == 200 && body.as_ref() == expected) || Instant::now() > deadline {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    ensure!(
        status == 200 && body.as_ref() == expected,
        "{}: GET {ITEM} with a token answered {status} with {} bytes ({}), not 200 with the backend's {} bytes",
        t.route.label(),
        body.len(),
        String::from_utf8_lossy(&body[..body.len().min(200)]),
        expected.len()
    );
    if t.route == Route::Gateway {
        let (status, _) = get(&t.addr, None).await?;
        ensure!(
            status == 401,
            "gateway: GET {ITEM} without a token answered {status}, not 401"
        );
    }
    Ok(())
}

pub async fn run(o: Options) -> anyhow::Result<()> {
    let mut paths = Vec::new();
    for p in &o.paths {
        if !paths.contains(p) {
            paths.push(*p);
        }
    }
    ensure!(!paths.is_empty(), "--paths names no path");
    ensure!(
        o.connections > 0 && o.latency_connections > 0 && o.rounds > 0,
        "connections, latency connections and rounds must be at least 1"
    );
    ensure!(
        o.seconds > 0.0 && o.latency_seconds > 0.0 && o.rate.is_none_or(|r| r > 0.0),
        "seconds, latency seconds and rate must be positive"
    );
    let nginx = if paths.contains(&Route::Nginx) {
        Some(installed("nginx", "nginx-light")?)
    } else {
        None
    };
    let haproxy = if paths.contains(&Route::Haproxy) {
        Some(installed("haproxy", "haproxy")?)
    } else {
        None
    };
    // The target folder may be shared by several work trees: say when the binary was built.
    let promptflow = sibling("promptflow")?;
    let built = std::fs::metadata(&promptflow)
        .and_then(|m| m.modified())
        .map(|t| {
            chrono::DateTime::<chrono::Utc>::from(t)
                .format("%Y-%m-%d %H:%M UTC")
                .to_string()
        })
        .unwrap_or_else(|_| "unknown".to_owned());
    let mut versions = vec![format!(
        "{} (binary of {built})",
        first_line(&promptflow, "--version")
    )];
    if let Some(p) = &nginx {
        versions.push(first_line(p, "-v").replace("nginx version: nginx/", "nginx "));
    }
    if let Some(p) = &haproxy {
        versions.push(
            first_line(p, "-v")
                .replace("HAProxy version ", "HAProxy ")
                .replace(" - https://haproxy.org/", ""),
        );
    }

    eprintln!("gateway: starting the backend and user-service");
    let backend = start_backend()?;
    let users = start_users()?;
    let mut token = Token::new(&users.addr).await?;
    let (status, expected) = get(&backend.addr, None).await?;
    ensure!(status == 200, "the backend answered {status} to GET {ITEM}");

    let mut targets = Vec::new();
    for &route in &paths {
        eprintln!("gateway: starting {}", route.label());
        let t = match route {
            Route::Direct => Target {
                route,
                addr: backend.addr.clone(),
                proxy: None,
                config: None,
            },
            Route::Gateway => start_gateway(&backend.addr, &users.addr, &o)?,
            Route::Nginx => start_nginx(nginx.as_deref().context("nginx")?, &backend.addr).await?,
            Route::Haproxy => {
                start_haproxy(haproxy.as_deref().context("haproxy")?, &backend.addr).await?
            }
        };
        check(&t, token.current().await?, &expected).await?;
        targets.push(t);
    }

    let backend_pid = backend.child.id();
    let mut figures: Vec<Figures> = targets.iter().map(|_| Figures::default()).collect();
    let direct = targets.iter().position(|t| t.route == Route::Direct);

    // Warm-up: connections, pools, the gateway's token cache. Not counted.
    for t in &targets {
        let tok = token.current().await?.to_owned();
        load::run(
            &t.addr,
            ITEM,
            Some(&tok),
            o.connections,
            Duration::from_secs(1),
        )
        .await?;
    }

    let slice = Duration::from_secs_f64(o.seconds);
    for round in 0..o.rounds {
        eprintln!("gateway: saturation, round {} of {}", round + 1, o.rounds);
        let mut rps = Vec::new();
        for (t, f) in targets.iter().zip(&mut figures) {
            let tok = token.current().await?.to_owned();
            let proxy_before = t.proxy_pid().map(tree_cpu);
            let backend_before = cpu_time(backend_pid);
            let stats = load::run(&t.addr, ITEM, Some(&tok), o.connections, slice).await?;
            let backend_used = cpu_time(backend_pid).saturating_sub(backend_before);
            let answered = stats.ok.max(1) as f64;
            if let (Some(pid), Some(before)) = (t.proxy_pid(), proxy_before) {
                let used = tree_cpu(pid).saturating_sub(before);
                f.proxy_us.push(used.as_secs_f64() * 1e6 / answered);
            }
            f.backend_us
                .push(backend_used.as_secs_f64() * 1e6 / answered);
            f.errors += stats.failed;
            if f.first_error.is_none() {
                f.first_error = stats.first_error.clone();
            }
            f.rps.push(stats.rps());
            rps.push(stats.rps());
            if t.route == Route::Gateway {
                eprintln!(
                    "gateway: {}: {:.0} req/s{}",
                    t.route.label(),
                    stats.rps(),
                    workers_seen(t).await
                );
            }
        }
        if let Some(d) = direct {
            for (f, r) in figures.iter_mut().zip(&rps) {
                f.ratio.push(r / rps[d].max(1e-9));
            }
        }
    }

    let (lowest, lowest_path) = targets
        .iter()
        .zip(&figures)
        .map(|(t, f)| (median(f.rps.clone()), t.route.label()))
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .context("no path measured")?;
    let rate = o.rate.unwrap_or((lowest * RATE_SHARE).round().max(1.0));
    eprintln!("gateway: latency at {rate:.0} requests/s");

    let latency_slice = Duration::from_secs_f64(o.latency_seconds);
    for round in 0..o.rounds {
        eprintln!("gateway: latency, round {} of {}", round + 1, o.rounds);
        let mut p50 = Vec::new();
        let mut p99 = Vec::new();
        for (t, f) in targets.iter().zip(&mut figures) {
            let tok = token.current().await?.to_owned();
            let proxy_before = t.proxy_pid().map(tree_cpu);
            let p = load::paced(
                &t.addr,
                ITEM,
                Some(&tok),
                o.latency_connections,
                rate,
                latency_slice,
            )
            .await?;
            if let (Some(pid), Some(before)) = (t.proxy_pid(), proxy_before) {
                let used = tree_cpu(pid).saturating_sub(before);
                f.paced_proxy_us
                    .push(used.as_secs_f64() * 1e6 / p.ok.max(1) as f64);
            }
            f.paced_errors += p.failed;
            if f.first_error.is_none() {
                f.first_error = p.first_error.clone();
            }
            f.p50.push(p.percentile(0.50));
            f.p99.push(p.percentile(0.99));
            f.pacer_late_p99.push(p.pacer_late(0.99));
            f.queued_p99.push(p.queued(0.99));
            p50.push(p.percentile(0.50));
            p99.push(p.percentile(0.99));
            eprintln!(
                "gateway: {}: {} scheduled, {} ok at {:.0}/s, p50 {:.3} ms, p99 {:.3} ms, pacer late p50 {:.3} p99 {:.3} ms, wait for a connection p99 {:.3} ms{}",
                t.route.label(),
                p.scheduled,
                p.ok,
                p.rps(),
                p.percentile(0.5),
                p.percentile(0.99),
                p.pacer_late(0.5),
                p.pacer_late(0.99),
                p.queued(0.99),
                workers_seen(t).await
            );
        }
        if let Some(d) = direct {
            for (i, f) in figures.iter_mut().enumerate() {
                f.added_p50.push(p50[i] - p50[d]);
                f.added_p99.push(p99[i] - p99[d]);
            }
        }
    }

    for (t, f) in targets.iter().zip(&figures) {
        if let Some(e) = &f.first_error {
            eprintln!("gateway: {}: first error: {e}", t.route.label());
        }
    }

    print_report(
        &o,
        &targets,
        &figures,
        direct.is_some(),
        rate,
        (lowest, lowest_path),
        expected.len(),
        token.value.len(),
        &versions,
    );
    drop(targets);
    drop(users);
    drop(backend);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn print_report(
    o: &Options,
    targets: &[Target],
    figures: &[Figures],
    has_direct: bool,
    rate: f64,
    (lowest, lowest_path): (f64, &str),
    body_len: usize,
    token_len: usize,
    versions: &[String],
) {
    let command: Vec<String> = std::env::args().skip(1).collect();
    println!("\n### Reverse proxy: PromptFlow gateway, nginx, HAProxy (release builds)\n");
    println!("`promptflow-bench {}`\n", command.join(" "));
    let rate_origin = if o.rate.is_some() {
        "set by --rate".to_owned()
    } else {
        format!(
            "{:.0} % of the lowest median saturation throughput of this run, {lowest:.0} req/s ({lowest_path})",
            RATE_SHARE * 100.0
        )
    };
    println!(
        "Backend: `baseline-server` (axum, its own process) answering `GET {ITEM}` with a fixed \
         {body_len}-byte JSON body. Every request carries the same `Authorization: Bearer` \
         access token ({token_len} bytes), on every path; the gateway verifies it (protected \
         route{}, {}), the others pass it on. Keep-alive on both sides, upstream connection \
         pools, no access logs, no caching. Paths interleaved within each round: {}. \
         Versions: {}.\n",
        if o.gateway_rate_limit {
            ", rate limit on with a bucket too large to refuse"
        } else {
            ", rate limit off"
        },
        if o.gateway_pack_workers {
            "connections packed onto as few workers as carry the load"
        } else {
            "connections spread over every worker (`pack_workers: false`)"
        },
        targets
            .iter()
            .map(|t| t.route.label())
            .collect::<Vec<_>>()
            .join(", "),
        versions.join(", ")
    );
    println!(
        "**Saturation**: closed loop, {} keep-alive connections, {} rounds of {} s per path; \
         median of the rounds; ratio to direct: median of the per-round ratios. Proxy CPU: \
         utime + stime of the proxy's process and its children (nginx's master and workers) \
         from /proc over the slice, divided by the requests answered in it (/proc ticks of \
         10 ms). Errors: non-2xx answers and lost connections, all rounds.\n",
        o.connections, o.rounds, o.seconds
    );
    println!("| path | req/s | ratio to direct | proxy CPU µs/req | errors | backend CPU µs/req |");
    println!("|---|---:|---:|---:|---:|---:|");
    let opt = |v: &[f64], digits: usize| {
        if v.is_empty() {
            "–".to_owned()
        } else {
            format!("{:.*}", digits, median(v.to_vec()))
        }
    };
    for (t, f) in targets.iter().zip(figures) {
        println!(
            "| {} | {:.0} | {} | {} | {} | {:.1} |",
            t.route.label(),
            median(f.rps.clone()),
            if has_direct {
                opt(&f.ratio, 2)
            } else {
                "–".to_owned()
            },
            opt(&f.proxy_us, 1),
            f.errors,
            median(f.backend_us.clone())
        );
    }
    println!(
        "\n**Latency at {rate:.0} requests/s** ({rate_origin}): open loop over {} keep-alive \
         connections, {} rounds of {} s per path. Request k is scheduled at t0 + k/rate and \
         released at that time by a pacing thread (OS sleep, not tokio's 1 ms timer) to the \
         first free connection; latency counts from the scheduled time to the end of the \
         answer, so waiting behind a slow answer counts (no coordinated omission). p50/p99: \
         median of the rounds; added: path minus direct in each round, median.\n",
        o.latency_connections, o.rounds, o.latency_seconds
    );
    println!(
        "| path | p50 ms | p99 ms | added p50 ms | added p99 ms | proxy CPU µs/req | errors |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (t, f) in targets.iter().zip(figures) {
        let added = |v: &[f64]| {
            if has_direct {
                format!("{:+.3}", median(v.to_vec()))
            } else {
                "–".to_owned()
            }
        };
        println!(
            "| {} | {:.3} | {:.3} | {} | {} | {} | {} |",
            t.route.label(),
            median(f.p50.clone()),
            median(f.p99.clone()),
            added(&f.added_p50),
            added(&f.added_p99),
            opt(&f.paced_proxy_us, 1),
            f.paced_errors
        );
    }
    let late = figures
        .iter()
        .map(|f| median(f.pacer_late_p99.clone()))
        .fold(0.0, f64::max);
    let queued = figures
        .iter()
        .map(|f| median(f.queued_p99.clone()))
        .fold(0.0, f64::max);
    println!(
        "\nThe load generator's own share, in every path's figures: the pacing thread \
         released requests up to {late:.3} ms late (p99, worst path), and a released request \
         waited up to {queued:.3} ms for a free connection and its task (p99, worst path)."
    );
    println!("\n<details><summary>Configurations generated (ports of this run)</summary>\n");
    for t in targets {
        if let Some((name, lang, text)) = &t.config {
            println!("`{name}`:\n\n```{lang}\n{}```\n", text);
        }
    }
    println!("</details>");
}
