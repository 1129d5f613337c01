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
    assert_eq!(sign_up(&client, &up, "alice").await.status(), 201);
    let login: serde_json::Value = client
        .post(up.url("/api/auth/login"))
        .json(&serde_json::json!({ "username": "alice", "password": "correct horse battery" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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
    let took = within(
        Duration::from_secs(5),
        "the new burst capacity",
        async || {
            let r = prompts().await.unwrap();
            r.headers()
                .get("x-ratelimit-burst-capacity")
                .is_some_and(|v| v == "3")
        },
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
}
