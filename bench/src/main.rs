//! PromptFlow benchmarks. Every figure is measured beside a baseline in the same run and
//! reported as a ratio to it, because absolute numbers on a shared two-core machine say
//! little. Prints Markdown for BENCHMARKS.md.
//!
//! Build the binaries first (the servers run as separate processes, as users run them):
//! `cargo build --release -p promptflow -p bench && target/release/promptflow-bench all`

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

mod config;
mod discovery;
mod events;
mod gateway;
mod library;
mod load;
mod sync;
mod tokens;

use library::percentile;

#[derive(Parser)]
#[command(about = "PromptFlow benchmarks (Markdown on stdout)")]
struct Cli {
    #[command(subcommand)]
    command: Bench,
}

#[derive(Subcommand, Clone)]
enum Bench {
    /// Access-token verification against a bare Ed25519 signature check.
    Tokens {
        #[arg(long, default_value_t = 5)]
        rounds: u32,
        #[arg(long, default_value_t = 1.0)]
        seconds: f64,
    },
    /// `GET /api/users/me` throughput against `GET /health` on the same server, SQLite and
    /// PostgreSQL.
    Me {
        #[arg(long, default_value_t = 5)]
        rounds: u32,
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// PostgreSQL server for the PostgreSQL run (a fresh database is made and dropped).
        #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
        postgres: String,
    },
    /// Resident memory of an idle `promptflow up` against an empty axum server.
    Memory,
    /// business-service on a generated library: search latency, create/update/render
    /// throughput, on SQLite and PostgreSQL.
    Library {
        #[arg(long, default_value_t = 1_000_000)]
        prompts: u64,
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
        postgres: String,
        /// Only this backend (sqlite or postgresql).
        #[arg(long)]
        only: Option<String>,
    },
    /// Events through outbox, bus and inbox (in process and RabbitMQ, SQLite and
    /// PostgreSQL) against bare RabbitMQ.
    Events {
        #[arg(long, default_value_t = 20_000)]
        events: usize,
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
        postgres: String,
    },
    /// A device sync of N changes on `promptflow up` against the plain REST calls.
    Sync {
        #[arg(long, default_value_t = 10_000)]
        changes: usize,
        #[arg(long, default_value_t = 3)]
        rounds: u32,
    },
    /// discovery-service: N instances renewing at a fixed rate (every 30 s and 10× faster),
    /// registry fetches warm and after a change, against `GET /health` on the same server.
    Discovery {
        #[arg(long, default_value_t = 10_000)]
        instances: usize,
        #[arg(long, default_value_t = 100)]
        apps: usize,
        /// Measurement period per path and renewal interval.
        #[arg(long, default_value_t = 60.0)]
        seconds: f64,
        /// Interleaved slices the period is split into (/health, renew, /health, ...).
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// Warm samples per fetch kind.
        #[arg(long, default_value_t = 40)]
        fetches: usize,
        /// Samples per fetch kind right after a change.
        #[arg(long, default_value_t = 10)]
        cold: usize,
        /// Renewal intervals in seconds.
        #[arg(long, value_delimiter = ',', default_values_t = [30.0, 3.0])]
        intervals: Vec<f64>,
    },
    /// gateway-service as a reverse proxy against nginx and HAProxy, in front of the same
    /// backend (`baseline-server`), and the backend alone: saturation throughput, CPU per
    /// request, latency at a fixed rate.
    Gateway {
        /// Paths to measure, interleaved in this order.
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            default_value = "direct,gateway,nginx,haproxy"
        )]
        paths: Vec<gateway::Route>,
        /// Closed-loop connections for the saturation figures.
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// Saturation slice per path per round.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        #[arg(long, default_value_t = 5)]
        rounds: u32,
        /// Fixed rate for the latency figures, requests/s (default: 40 % of the lowest
        /// saturation throughput measured in the run).
        #[arg(long)]
        rate: Option<f64>,
        /// Latency slice per path per round.
        #[arg(long, default_value_t = 10.0)]
        latency_seconds: f64,
        /// Keep-alive connections the fixed-rate load is spread over.
        #[arg(long, default_value_t = 8)]
        latency_connections: usize,
        /// The gateway's rate limiter (a bucket too large to refuse) on or off.
        #[arg(long, value_enum, default_value = "on")]
        gateway_rate_limit: gateway::OnOff,
        /// The gateway's connections packed onto as few workers as carry the load
        /// (`pack_workers`), or spread over all of them.
        #[arg(long, value_enum, default_value = "on")]
        gateway_pack_workers: gateway::OnOff,
    },
    /// config-service: cached environments against uncached ones and `/health`; the time
    /// from a commit to every service of `promptflow up` having applied it.
    Config {
        #[arg(long, default_value_t = 5)]
        rounds: u32,
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// Commits timed from `git commit` to applied.
        #[arg(long, default_value_t = 10)]
        commits: u32,
    },
    /// tokens, me and memory with their defaults.
    All,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    println!("<!-- {} -->", machine());
    match cli.command {
        Bench::Tokens { rounds, seconds } => tokens::run(rounds, seconds),
        Bench::Me {
            rounds,
            seconds,
            connections,
            postgres,
        } => runtime.block_on(me(rounds, seconds, connections, &postgres)),
        Bench::Memory => runtime.block_on(memory()),
        Bench::Library {
            prompts,
            rounds,
            postgres,
            only,
        } => runtime.block_on(library::run(prompts, rounds, &postgres, only.as_deref())),
        Bench::Events {
            events,
            rounds,
            postgres,
        } => runtime.block_on(events::run(events, rounds, &postgres)),
        Bench::Sync { changes, rounds } => runtime.block_on(sync::run(changes, rounds)),
        Bench::Discovery {
            instances,
            apps,
            seconds,
            rounds,
            connections,
            fetches,
            cold,
            intervals,
        } => runtime.block_on(discovery::run(discovery::Options {
            instances,
            apps,
            seconds,
            rounds,
            connections,
            fetches,
            cold,
            intervals,
        })),
        Bench::Gateway {
            paths,
            connections,
            seconds,
            rounds,
            rate,
            latency_seconds,
            latency_connections,
            gateway_rate_limit,
            gateway_pack_workers,
        } => runtime.block_on(gateway::run(gateway::Options {
            paths,
            connections,
            seconds,
            rounds,
            rate,
            latency_seconds,
            latency_connections,
            gateway_rate_limit: gateway_rate_limit == gateway::OnOff::On,
            gateway_pack_workers: gateway_pack_workers == gateway::OnOff::On,
        })),
        Bench::Config {
            rounds,
            seconds,
            connections,
            commits,
        } => runtime.block_on(config::run(config::Options {
            rounds,
            seconds,
            connections,
            commits,
        })),
        Bench::All => {
            tokens::run(5, 1.0)?;
            runtime.block_on(me(5, 3.0, 32, "postgres://postgres@127.0.0.1:5432"))?;
            runtime.block_on(memory())
        }
    }
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_default();
    format!("{cpus} CPUs, {model}")
}

/// The release binaries beside this one.
fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe
        .parent()
        .map(|d| d.join(name))
        .context("no folder for the bench binary")?;
    if !path.exists() {
        bail!(
            "{} is missing: build it with `cargo build --release -p promptflow -p bench`",
            path.display()
        );
    }
    Ok(path)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

struct Server {
    child: Child,
    addr: String,
    _data: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

async fn start_promptflow(args: &[&str], database_url: Option<&str>) -> anyhow::Result<Server> {
    let data = tempfile::tempdir()?;
    let port = free_port()?;
    let mut cmd = Command::new(sibling("promptflow")?);
    cmd.args(args)
        .arg("--data-dir")
        .arg(data.path())
        .env("PROMPTFLOW_USER__LISTEN", format!("127.0.0.1:{port}"))
        .env("PROMPTFLOW_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(url) = database_url {
        cmd.env("PROMPTFLOW_USER__DATABASE__URL", url);
    }
    if args.first() == Some(&"serve") {
        // user-service alone: no library to provision.
        cmd.env("PROMPTFLOW_USER__PROVISION_LIBRARY", "false");
    }
    let child = cmd.spawn().context("starting promptflow")?;
    let server = Server {
        child,
        addr: format!("127.0.0.1:{port}"),
        _data: data,
    };
    wait_ready(&server.addr).await?;
    Ok(server)
}

async fn wait_ready(addr: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(r) = client.get(format!("http://{addr}/health")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the server at {addr} did not come up")
}

/// User + system CPU time of a process, from /proc.
fn cpu_time(pid: u32) -> Duration {
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name, which is in parentheses and may hold spaces.
            let rest = s.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: u64 = fields.get(11)?.parse().ok()?;
            let stime: u64 = fields.get(12)?.parse().ok()?;
            Some(utime + stime)
        })
        .unwrap_or(0);
    // Linux reports in USER_HZ, 100 per second on every mainstream build.
    Duration::from_millis(ticks * 10)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

async fn me(rounds: u32, seconds: f64, connections: usize, postgres: &str) -> anyhow::Result<()> {
    println!("\n### `GET /api/users/me` throughput (user-service, release build)\n");
    println!(
        "{connections} keep-alive connections from one load process, {rounds} interleaved rounds of {seconds} s per path; median of rounds. \
         Baseline: `GET /health` on the same server (no token, no database)."
    );
    println!();
    println!("| backend | path | req/s | ratio to /health | p50 ms | p99 ms | server CPU µs/req |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    let pg_db = format!("pfbench_{}", std::process::id());
    for (backend, url) in [
        ("SQLite", None),
        ("PostgreSQL", Some(format!("{postgres}/{pg_db}"))),
    ] {
        let server = start_promptflow(&["serve", "user-service"], url.as_deref()).await?;
        let token = load::login(&server.addr).await?;
        let pid = server.child.id();
        let duration = Duration::from_secs_f64(seconds);
        let mut results = [PathRuns::new("/health"), PathRuns::new("/api/users/me")];
        // Warm up both paths once.
        for r in &results {
            load::run(
                &server.addr,
                r.path,
                Some(&token),
                connections,
                Duration::from_millis(500),
            )
            .await?;
        }
        for _ in 0..rounds {
            for r in &mut results {
                let before = cpu_time(pid);
                let stats =
                    load::run(&server.addr, r.path, Some(&token), connections, duration).await?;
                let used = cpu_time(pid).saturating_sub(before);
                if stats.failed > 0 {
                    bail!("{}: {} requests failed", r.path, stats.failed);
                }
                r.rps.push(stats.rps());
                r.p50.push(stats.percentile(0.50));
                r.p99.push(stats.percentile(0.99));
                r.cpu_us
                    .push(used.as_secs_f64() * 1e6 / stats.ok.max(1) as f64);
            }
        }
        let base = median(results[0].rps.clone());
        for r in results {
            let rps = median(r.rps);
            println!(
                "| {backend} | `{}` | {rps:.0} | {:.2} | {:.2} | {:.2} | {:.0} |",
                r.path,
                rps / base,
                median(r.p50),
                median(r.p99),
                median(r.cpu_us)
            );
        }
        drop(server);
        if url.is_some() {
            drop_pg(postgres, &pg_db).await;
        }
    }
    Ok(())
}

/// The figures of every round for one path.
struct PathRuns {
    path: &'static str,
    rps: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    cpu_us: Vec<f64>,
}

impl PathRuns {
    fn new(path: &'static str) -> Self {
        Self {
            path,
            rps: Vec::new(),
            p50: Vec::new(),
            p99: Vec::new(),
            cpu_us: Vec::new(),
        }
    }
}

async fn drop_pg(base: &str, name: &str) {
    let _ = Command::new("psql")
        .arg(format!("{base}/postgres"))
        .args([
            "-qc",
            &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

async fn memory() -> anyhow::Result<()> {
    println!("\n### Idle memory (resident set, release build)\n");
    println!(
        "Each process started fresh, ready, then left idle 3 s. Baseline: an empty axum server on the same runtime (`bench/src/bin/baseline_server.rs`).\n"
    );
    println!("| process | RSS MiB | ratio to baseline |");
    println!("|---|---:|---:|");
    let port = free_port()?;
    let mut baseline = Command::new(sibling("baseline-server")?)
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .spawn()?;
    wait_ready(&format!("127.0.0.1:{port}")).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let base = rss_kib(baseline.id());
    let _ = baseline.kill();
    let _ = baseline.wait();

    let up = start_promptflow(&["up"], None).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = rss_kib(up.child.id());
    // And after some work: a thousand authenticated requests.
    let token = load::login(&up.addr).await?;
    load::run(
        &up.addr,
        "/api/users/me",
        Some(&token),
        8,
        Duration::from_secs(2),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let worked = rss_kib(up.child.id());
    drop(up);

    let mib = |kib: u64| kib as f64 / 1024.0;
    println!("| empty axum server (baseline) | {:.1} | 1.00 |", mib(base));
    println!(
        "| `promptflow up`, idle | {:.1} | {:.2} |",
        mib(idle),
        idle as f64 / base.max(1) as f64
    );
    println!(
        "| `promptflow up`, after 2 s of `GET /api/users/me` | {:.1} | {:.2} |",
        mib(worked),
        worked as f64 / base.max(1) as f64
    );
    Ok(())
}
