//! config-service: (1) environment requests per second served from the environment cache,
//! against the same request assembled from git every time (cache off) and `GET /health` on
//! the same server; (2) on `promptflow up`, the time from a commit to every service having
//! applied it, against the earliest moment config-service itself serves the new commit.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use crate::{cpu_time, free_port, machine, median, sibling, wait_ready};

pub struct Options {
    pub rounds: u32,
    pub seconds: f64,
    pub connections: usize,
    pub commits: u32,
}

fn git(repo: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args([
            "-c",
            "user.name=Bench",
            "-c",
            "user.email=bench@example.com",
        ])
        .args(args)
        .output()
        .context("running git")?;
    ensure!(out.status.success(), "git {args:?}: {:?}", out);
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn commit(repo: &Path, files: &[(&str, String)], message: &str) -> anyhow::Result<String> {
    for (name, text) in files {
        std::fs::write(repo.join(name), text)?;
    }
    git(repo, &["add", "--all"])?;
    git(repo, &["commit", "--quiet", "-m", message])?;
    git(repo, &["rev-parse", "HEAD"])
}

/// A repository shaped like a real deployment's: shared settings, a service's own file
/// with routes, and a profile file, about 150 keys in all, some with placeholders.
fn make_repo(dir: &Path) -> anyhow::Result<()> {
    git(dir, &["init", "--quiet", "--initial-branch=main"])?;
    let mut shared =
        String::from("log:\n  level: info\nhttp:\n  request_timeout_secs: 30\nteam:\n");
    for i in 0..60 {
        shared.push_str(&format!("  key{i}: value {i} for ${{team.key0}}\n"));
    }
    let mut gateway = String::from(
        "gateway:\n  rate_limit:\n    default:\n      replenish_rate: 50\n      burst_capacity: 100\n  routes:\n",
    );
    for i in 0..10 {
        gateway.push_str(&format!(
            "    - id: route{i}\n      uri: lb://business-service\n      predicates: [\"Path=/api/r{i}/**\"]\n      filters: [\"StripPrefix=1\"]\n"
        ));
    }
    let mut prod = String::from("tuning:\n");
    for i in 0..40 {
        prod.push_str(&format!("  knob{i}: {i}\n"));
    }
    commit(
        dir,
        &[
            ("application.yml", shared),
            ("gateway-service.yml", gateway),
            ("gateway-service-prod.yml", prod),
        ],
        "bench settings",
    )?;
    Ok(())
}

struct Proc {
    child: Child,
    addr: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

async fn serve_config(repo: &Path, data: &Path, cache: bool) -> anyhow::Result<Proc> {
    let port = free_port()?;
    let mut cmd = Command::new(sibling("promptflow")?);
    cmd.args(["serve", "config-service", "--data-dir"])
        .arg(data)
        .env(
            "PROMPTFLOW_CONFIG_SERVICE__LISTEN",
            format!("127.0.0.1:{port}"),
        )
        .env("PROMPTFLOW_CONFIG_SERVICE__PATH", repo)
        .env("PROMPTFLOW_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if !cache {
        cmd.env("PROMPTFLOW_CONFIG_SERVICE__CACHE_ENTRIES", "0");
    }
    let proc = Proc {
        child: cmd.spawn().context("starting config-service")?,
        addr: format!("127.0.0.1:{port}"),
    };
    wait_ready(&proc.addr).await?;
    Ok(proc)
}

#[derive(Default)]
struct Runs {
    rps: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    cpu_us: Vec<f64>,
}

pub async fn run(o: Options) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo)?;
    make_repo(&repo)?;
    let cached = serve_config(&repo, dir.path(), true).await?;
    let uncached = serve_config(&repo, dir.path(), false).await?;
    let env_path = "/gateway-service/prod";
    // Same answer from both, so the two paths do the same work.
    let client = reqwest::Client::new();
    let a = client
        .get(format!("http://{}{env_path}", cached.addr))
        .send()
        .await?
        .text()
        .await?;
    let b = client
        .get(format!("http://{}{env_path}", uncached.addr))
        .send()
        .await?
        .text()
        .await?;
    ensure!(
        a == b && a.contains("knob39"),
        "the two servers answer differently"
    );
    let paths: [(&str, &Proc, &str); 3] = [
        ("`/health` (baseline)", &cached, "/health"),
        ("environment, cached", &cached, env_path),
        ("environment, cache off", &uncached, env_path),
    ];
    let mut runs: Vec<Runs> = (0..paths.len()).map(|_| Runs::default()).collect();
    let duration = Duration::from_secs_f64(o.seconds);
    for round in 0..o.rounds {
        eprintln!("config environment round {}", round + 1);
        for (i, (_, proc, path)) in paths.iter().enumerate() {
            let cpu = cpu_time(proc.child.id());
            let stats = crate::load::run(&proc.addr, path, None, o.connections, duration).await?;
            let cpu = cpu_time(proc.child.id()).saturating_sub(cpu);
            ensure!(
                stats.failed == 0,
                "{path}: {} failed ({:?})",
                stats.failed,
                stats.first_error
            );
            runs[i].rps.push(stats.rps());
            runs[i].p50.push(stats.percentile(0.5));
            runs[i].p99.push(stats.percentile(0.99));
            runs[i]
                .cpu_us
                .push(cpu.as_secs_f64() * 1e6 / stats.ok.max(1) as f64);
        }
    }
    let names: Vec<&str> = paths.iter().map(|(n, _, _)| *n).collect();
    drop((cached, uncached));
    let base = median(runs[0].rps.clone());
    println!(
        "## config-service (issue 7), {}\n",
        chrono::Utc::now().format("%Y-%m-%d")
    );
    println!("Machine: {}.\n", machine());
    println!("### Environment requests (`GET {env_path}`, release build)\n");
    println!(
        "{} keep-alive connections, {} interleaved rounds of {} s per path; median of rounds. A repository of three files (~150 keys, placeholders, a list of routes); the answer is the same JSON from both servers. Baseline: `GET /health` on the cached server.\n",
        o.connections, o.rounds, o.seconds
    );
    println!("| path | req/s | ratio to /health | p50 ms | p99 ms | server CPU µs/req |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, r) in names.iter().zip(&runs) {
        let rps = median(r.rps.clone());
        println!(
            "| {name} | {rps:.0} | {:.2} | {:.2} | {:.2} | {:.0} |",
            rps / base,
            median(r.p50.clone()),
            median(r.p99.clone()),
            median(r.cpu_us.clone())
        );
    }
    println!();
    refresh(o.commits).await
}

/// Polls until `ready` holds; the time from `start`.
async fn until(
    start: Instant,
    what: &str,
    mut ready: impl AsyncFnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<Duration> {
    while start.elapsed() < Duration::from_secs(60) {
        if ready().await? {
            return Ok(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    bail!("{what}: not within 60 s")
}

async fn refresh(commits: u32) -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let ports: Vec<u16> = (0..5).map(|_| free_port()).collect::<anyhow::Result<_>>()?;
    let names = [
        "CONFIG_SERVICE",
        "DISCOVERY_SERVICE",
        "USER",
        "BUSINESS",
        "GATEWAY",
    ];
    let mut cmd = Command::new(sibling("promptflow")?);
    cmd.args(["up", "--data-dir"])
        .arg(data.path())
        .env("PROMPTFLOW_LOG", "warn")
        .env("PROMPTFLOW_BUSINESS__STARTER_CONTENT", "false")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (name, port) in names.iter().zip(&ports) {
        cmd.env(
            format!("PROMPTFLOW_{name}__LISTEN"),
            format!("127.0.0.1:{port}"),
        );
    }
    let up = Proc {
        child: cmd.spawn().context("starting promptflow up")?,
        addr: format!("127.0.0.1:{}", ports[4]),
    };
    let addr = |i: usize| format!("127.0.0.1:{}", ports[i]);
    for i in 0..5 {
        wait_ready(&addr(i)).await?;
    }
    let token = crate::load::login_as(&up.addr, "configbench").await?;
    let repo = data.path().join("config-repo");
    let client = reqwest::Client::new();
    // The account's library is made asynchronously (registration saga): wait for it, so
    // the timings are of configuration alone.
    until(Instant::now(), "the library is ready", async || {
        let r = client
            .get(format!("http://{}/api/business/prompts", up.addr))
            .bearer_auth(&token)
            .send()
            .await?;
        Ok(r.status().is_success())
    })
    .await?;
    let (mut served, mut gateway, mut all) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..commits {
        let burst = 1000 + round;
        let started = Instant::now();
        let version = commit(
            &repo,
            &[(
                "gateway-service.yml",
                format!(
                    "gateway:\n  rate_limit:\n    default:\n      replenish_rate: 500\n      burst_capacity: {burst}\n"
                ),
            )],
            &format!("burst {burst}"),
        )?;
        let committed = started.elapsed();
        let start = Instant::now();
        let config = addr(0);
        let served_at = until(start, "config-service serves it", async || {
            let env: serde_json::Value = client
                .get(format!("http://{config}/gateway-service/default"))
                .send()
                .await?
                .json()
                .await?;
            Ok(env["version"] == version.as_str())
        })
        .await?;
        let gateway_at = until(start, "the gateway applies it", async || {
            let r = client
                .get(format!("http://{}/api/business/prompts", up.addr))
                .bearer_auth(&token)
                .send()
                .await?;
            Ok(r.headers()
                .get("x-ratelimit-burst-capacity")
                .is_some_and(|v| v.as_bytes() == burst.to_string().as_bytes()))
        })
        .await?;
        let marker = format!("config_version_info{{version=\"{version}\"}} 1");
        let mut last = gateway_at;
        for i in 1..4 {
            let service = addr(i);
            let at = until(start, "every service reports it", async || {
                let metrics = client
                    .get(format!("http://{service}/metrics"))
                    .send()
                    .await?
                    .text()
                    .await?;
                Ok(metrics.contains(&marker))
            })
            .await?;
            last = last.max(at);
        }
        eprintln!(
            "commit {round}: git commit {committed:?}, served {served_at:?}, gateway {gateway_at:?}, all {last:?}"
        );
        served.push(served_at.as_secs_f64() * 1000.0);
        gateway.push(gateway_at.as_secs_f64() * 1000.0);
        all.push(last.as_secs_f64() * 1000.0);
        // Spread over the watcher's 100 ms period, so commits do not fall in step with it.
        tokio::time::sleep(Duration::from_millis(300 + u64::from(round * 37 % 100))).await;
    }
    drop(up);
    let base = median(served.clone());
    println!(
        "### From a commit to every service having applied it (`promptflow up`, release build)\n"
    );
    println!(
        "{commits} commits to `gateway-service.yml` in `<data_dir>/config-repo`, each changing the gateway's burst capacity, timed from the end of `git commit`: until config-service serves the new commit (baseline: the earliest any client could read it, polled every millisecond), until the gateway answers with the new `X-RateLimit-Burst-Capacity`, and until every service's `/metrics` reports `config_version_info{{version=\"<commit>\"}} 1`. The clients' own poll stays at its 30 s default: the change travels as a `config.refresh` announcement. Median (and max) over the commits.\n"
    );
    println!("| until | median ms | max ms | ratio to served |");
    println!("|---|---:|---:|---:|");
    for (name, v) in [
        ("config-service serves it (baseline)", &served),
        ("the gateway applies it", &gateway),
        ("every service applied it", &all),
    ] {
        let max = v.iter().copied().fold(0.0, f64::max);
        let m = median(v.clone());
        println!("| {name} | {m:.0} | {max:.0} | {:.1} |", m / base.max(1e-3));
    }
    println!();
    Ok(())
}
