//! Live configuration: a commit to config-service's repository reaches the running
//! services within seconds, through the announcement on the bus (the clients' own poll is
//! left at its 30 s default, so only the announcement can make it in time).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

mod support;
use support::Proc;

/// Writes `files` into the repository's working tree and commits them on its branch.
fn commit(repo: &Path, files: &[(&str, &str)], message: &str) {
    for (name, text) in files {
        std::fs::write(repo.join(name), text).unwrap();
    }
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(["-c", "user.name=Ops", "-c", "user.email=ops@example.com"])
            .args(args)
            .output()
            .expect("git runs");
        assert!(out.status.success(), "git {args:?}: {out:?}");
    };
    git(&["add", "--all"]);
    git(&["commit", "--quiet", "-m", message]);
}

async fn sign_up(client: &reqwest::Client, gateway: &Proc, name: &str) -> reqwest::Response {
    client
        .post(gateway.url("/api/auth/register"))
        .json(&serde_json::json!({
            "username": name, "email": format!("{name}@example.com"),
            "password": "correct horse battery"
        }))
        .send()
        .await
        .unwrap()
}

/// Polls `probe` every 50 ms until it holds; how long that took.
async fn within(limit: Duration, what: &str, mut probe: impl AsyncFnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !probe().await {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_commit_changes_the_running_gateways_rate_limit_and_a_feature_switch() {
    let data = tempfile::tempdir().unwrap();
    let (up, addrs) = tokio::task::block_in_place(|| Proc::up(data.path(), &[]));
    let client = reqwest::Client::new();
    // Until user-service is in the registry the gateway answers 503 (and creates nothing).
    let mut status = 0;
    within(
        Duration::from_secs(10),
        "the gateway reaches user-service",
        async || {
            status = sign_up(&client, &up, "alice").await.status().as_u16();
            status != 503
        },
    )
    .await;
    assert_eq!(status, 201);
    let (status, login) =
        testkit::send(client.post(up.url("/api/auth/login")).json(
            &serde_json::json!({ "username": "alice", "password": "correct horse battery" }),
        ))
        .await;
    assert_eq!(status, 200, "{login}");
    let token = login["access_token"].as_str().expect("a token").to_owned();
    let prompts = || {
        client
            .get(up.url("/api/business/prompts"))
            .bearer_auth(&token)
            .send()
    };
    let first = prompts().await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-ratelimit-burst-capacity"], "100");

    let config = format!("http://{}", addrs["config-service"]);
    let (status, starter) =
        testkit::send(client.get(format!("{config}/gateway-service/default"))).await;
    assert_eq!(status, 200, "{starter}");
    let starter = starter["version"].as_str().expect("a commit").to_owned();
    let repo = data.path().join("config-repo");
    commit(
        &repo,
        &[
            (
                "gateway-service.yml",
                "gateway:\n  rate_limit:\n    default:\n      replenish_rate: 1\n      burst_capacity: 3\n",
            ),
            ("user-service.yml", "features:\n  registration: false\n"),
        ],
        "tighten the limits, close sign-ups",
    );
    // The gateway's limit as its answers tell it.
    let burst_is = async |want: &str| {
        let r = prompts().await.unwrap();
        r.headers()
            .get("x-ratelimit-burst-capacity")
            .is_some_and(|v| v == want)
    };
    let took = within(
        Duration::from_secs(5),
        "the new burst capacity",
        async || burst_is("3").await,
    )
    .await;
    eprintln!("gateway applied the commit in {took:?}");
    // The new limit holds: of a burst of 10, about 3 get through.
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(prompts().await.unwrap().status().as_u16());
    }
    let through = statuses.iter().filter(|s| **s == 200).count();
    assert!((1..=4).contains(&through), "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
    // The feature switch reached user-service in the same process.
    let closed = sign_up(&client, &up, "bob").await;
    assert_eq!(closed.status(), 403);
    assert_eq!(closed.headers()["content-type"], "application/problem+json");
    let problem: serde_json::Value = closed.json().await.unwrap();
    assert!(
        problem["type"]
            .as_str()
            .unwrap_or_default()
            .ends_with("registration-closed"),
        "{problem}"
    );

    // A change that does not load (a misspelt key) is refused whole; the process keeps
    // serving on the settings in force.
    commit(
        &repo,
        &[
            (
                "gateway-service.yml",
                "gateway:\n  rate_limit:\n    default:\n      replenish_rate: 1\n      burst_capacitty: 50\n",
            ),
            ("user-service.yml", "features:\n  registration: true\n"),
        ],
        "a typo",
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still = sign_up(&client, &up, "carol").await;
    assert_eq!(still.status(), 403, "the whole broken change stays out");
    assert!(
        up.logs().iter().any(|l| l.contains("burst_capacitty")),
        "the refusal names the wrong key"
    );
    let health = client
        .get(format!("http://{}/health", addrs["user-service"]))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    // Fixed: sign-ups open again.
    commit(
        &repo,
        &[(
            "gateway-service.yml",
            "gateway:\n  rate_limit:\n    default:\n      replenish_rate: 100\n      burst_capacity: 200\n",
        )],
        "fix the typo",
    );
    within(Duration::from_secs(5), "sign-ups open again", async || {
        sign_up(&client, &up, "dave").await.status() == 201
    })
    .await;

    // Rolling the gateway back to the starter settings is one call, and the running
    // gateway follows.
    let (status, rollback) = testkit::send(
        client
            .post(format!("{config}/history/gateway-service/rollback"))
            .json(&serde_json::json!({ "to": starter })),
    )
    .await;
    assert_eq!(status, 200, "{rollback}");
    assert_eq!(rollback["changed"], true, "{rollback}");
    assert_eq!(
        rollback["restored"],
        serde_json::json!(["gateway-service.yml"])
    );
    within(
        Duration::from_secs(5),
        "the starter limits again",
        async || burst_is("100").await,
    )
    .await;
    assert!(
        !repo.join("gateway-service.yml").exists(),
        "the checkout follows the rollback"
    );
}

/// A repository at `dir` on branch `main` with `files` committed.
fn repository(dir: &Path, files: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).unwrap();
    let out = Command::new("git")
        .args(["init", "--quiet", "--initial-branch=main"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    commit(dir, files, "first settings");
}

#[tokio::test(flavor = "multi_thread")]
async fn split_services_read_config_service_at_start_and_hear_commits_over_rabbitmq() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    repository(
        &repo,
        &[("user-service.yml", "features:\n  registration: false\n")],
    );
    let rabbit = testkit::RabbitNamespace::new(&[]);
    let events = support::env(&[
        ("PROMPTFLOW_EVENTS__TRANSPORT", "rabbitmq"),
        ("PROMPTFLOW_EVENTS__URL", &testkit::rabbitmq_url()),
        ("PROMPTFLOW_EVENTS__EXCHANGE", &rabbit.exchange),
        ("PROMPTFLOW_EVENTS__QUEUE_PREFIX", &rabbit.queue_prefix),
    ]);
    let mut env = events.clone();
    env.extend(support::env(&[
        ("PROMPTFLOW_CONFIG_SERVICE__LISTEN", "127.0.0.1:0"),
        ("PROMPTFLOW_CONFIG_SERVICE__PATH", repo.to_str().unwrap()),
    ]));
    let config = tokio::task::block_in_place(|| {
        Proc::serve("config-service", &dir.path().join("c"), None, &env)
    });
    let uri = format!("http://{}", config.addr);
    let mut env = events.clone();
    env.extend(support::env(&[
        ("PROMPTFLOW_USER__LISTEN", "127.0.0.1:0"),
        ("PROMPTFLOW_USER__PROVISION_LIBRARY", "false"),
        ("PROMPTFLOW_USER__PASSWORD_HASH__MEMORY_KIB", "4096"),
        ("PROMPTFLOW_CONFIG_CLIENT__URI", &uri),
        ("PROMPTFLOW_CONFIG_CLIENT__FAIL_FAST", "true"),
    ]));
    let user = tokio::task::block_in_place(|| {
        Proc::serve("user-service", &dir.path().join("u"), None, &env)
    });
    let client = reqwest::Client::new();
    // Read at start: sign-ups are closed before any change is announced, and /metrics
    // names the commit the process runs on.
    assert_eq!(sign_up(&client, &user, "erin").await.status(), 403);
    let head = String::from_utf8(
        Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(["rev-parse", "HEAD"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let metrics = client
        .get(user.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let running = format!("config_version_info{{version=\"{}\"}} 1", head.trim());
    assert!(
        metrics.contains(&running),
        "{running} missing from:\n{metrics}"
    );
    let spring = SpringBusListener::new().await;
    commit(
        &repo,
        &[("user-service.yml", "features:\n  registration: true\n")],
        "open sign-ups",
    );
    let took = within(Duration::from_secs(5), "sign-ups open", async || {
        sign_up(&client, &user, "frank").await.status() == 201
    })
    .await;
    eprintln!("user-service applied the commit in {took:?}");
    // A Java service on Spring Cloud Bus hears it too.
    spring.expect("user-service:**").await;
    // A commit for another application is not this process's business: it stays as it is.
    commit(
        &repo,
        &[("business-service.yml", "features:\n  registration: false\n")],
        "business-service's own switch",
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sign_up(&client, &user, "grace").await.status(), 201);
}

#[test]
fn fail_fast_refuses_to_start_without_config_service_and_the_default_starts_anyway() {
    let dir = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let uri = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let out = support::promptflow()
        .args(["serve", "user-service", "--data-dir"])
        .arg(dir.path())
        .env("PROMPTFLOW_USER__LISTEN", "127.0.0.1:0")
        .env("PROMPTFLOW_USER__PROVISION_LIBRARY", "false")
        .env("PROMPTFLOW_CONFIG_CLIENT__URI", &uri)
        .env("PROMPTFLOW_CONFIG_CLIENT__FAIL_FAST", "true")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("config-service") && stderr.contains("fail_fast"),
        "{stderr}"
    );

    let started = Proc::serve(
        "user-service",
        dir.path(),
        None,
        &support::env(&[
            ("PROMPTFLOW_USER__LISTEN", "127.0.0.1:0"),
            ("PROMPTFLOW_USER__PROVISION_LIBRARY", "false"),
            ("PROMPTFLOW_CONFIG_CLIENT__URI", &uri),
        ]),
    );
    assert!(
        started
            .logs()
            .iter()
            .any(|l| l.contains("starting on the local settings alone")),
        "{:?}",
        started.logs()
    );
}

/// A Spring Cloud Stream consumer of `springCloudBus`: an exclusive queue bound with `#`.
struct SpringBusListener {
    _connection: lapin::Connection,
    channel: lapin::Channel,
    queue: String,
}

impl SpringBusListener {
    async fn new() -> Self {
        use lapin::options::ExchangeDeclareOptions;
        let connection = lapin::Connection::connect(&testkit::rabbitmq_url(), Default::default())
            .await
            .expect("RabbitMQ on 127.0.0.1:5672");
        let channel = connection.create_channel().await.unwrap();
        channel
            .exchange_declare(
                "springCloudBus".into(),
                lapin::ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .unwrap();
        let queue = testkit::listen_on(&channel, "springCloudBus").await;
        Self {
            queue,
            _connection: connection,
            channel,
        }
    }

    /// Waits for a `RefreshRemoteApplicationEvent` to `destination` (other tests on the
    /// same broker may announce to others meanwhile).
    async fn expect(&self, destination: &str) {
        let started = Instant::now();
        loop {
            let got = self
                .channel
                .basic_get(
                    self.queue.as_str().into(),
                    lapin::options::BasicGetOptions { no_ack: true },
                )
                .await
                .unwrap();
            if let Some(message) = got {
                let event: serde_json::Value =
                    serde_json::from_slice(&message.delivery.data).expect("JSON");
                if event["destinationService"] == destination {
                    assert_eq!(event["type"], "RefreshRemoteApplicationEvent");
                    assert!(
                        event["originService"]
                            .as_str()
                            .is_some_and(|o| o.starts_with("config-service"))
                    );
                    assert!(
                        event["id"].is_string() && event["timestamp"].is_i64(),
                        "{event}"
                    );
                    return;
                }
                continue;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "no RefreshRemoteApplicationEvent to {destination}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_finds_config_service_through_discovery() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    repository(
        &repo,
        &[("user-service.yml", "features:\n  registration: false\n")],
    );
    let discovery = tokio::task::block_in_place(|| {
        Proc::serve(
            "discovery-service",
            &dir.path().join("d"),
            None,
            &support::env(&[("PROMPTFLOW_DISCOVERY_SERVICE__LISTEN", "127.0.0.1:0")]),
        )
    });
    let eureka = format!("http://{}/eureka/", discovery.addr);
    let _config = tokio::task::block_in_place(|| {
        Proc::serve(
            "config-service",
            &dir.path().join("c"),
            None,
            &support::env(&[
                ("PROMPTFLOW_CONFIG_SERVICE__LISTEN", "127.0.0.1:0"),
                ("PROMPTFLOW_CONFIG_SERVICE__PATH", repo.to_str().unwrap()),
                ("PROMPTFLOW_DISCOVERY__EUREKA_URLS", &eureka),
            ]),
        )
    });
    let client = reqwest::Client::new();
    within(
        Duration::from_secs(10),
        "config-service registered",
        async || {
            client
                .get(format!("{eureka}apps/CONFIG-SERVICE"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        },
    )
    .await;
    // Told only where discovery is and the service's name, as Spring's discovery-first
    // bootstrap; fail_fast, so a start without config-service's settings would be refused.
    let user = tokio::task::block_in_place(|| {
        Proc::serve(
            "user-service",
            &dir.path().join("u"),
            None,
            &support::env(&[
                ("PROMPTFLOW_USER__LISTEN", "127.0.0.1:0"),
                ("PROMPTFLOW_USER__PROVISION_LIBRARY", "false"),
                ("PROMPTFLOW_USER__PASSWORD_HASH__MEMORY_KIB", "4096"),
                ("PROMPTFLOW_DISCOVERY__EUREKA_URLS", &eureka),
                ("PROMPTFLOW_CONFIG_CLIENT__URI", "lb://config-service"),
                ("PROMPTFLOW_CONFIG_CLIENT__FAIL_FAST", "true"),
            ]),
        )
    });
    assert_eq!(sign_up(&client, &user, "heidi").await.status(), 403);
}
