//! Changes over time against real git repositories made with the git command line: history,
//! rollback, change announcements (the ref watcher and `/monitor`) and a fetched remote.

use std::time::Duration;

use config_service::Settings;
use hmac::{KeyInit, Mac};
use platform::events::contracts::ConfigRefresh;
use platform::events::{Handler, Subscription};
use platform::settings::Common;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

mod support;
use support::{App, commit, git, write};

async fn post(
    app: &App,
    path: &str,
    body: Value,
) -> (StatusCode, Value, reqwest::header::HeaderMap) {
    let res = app
        .http
        .post(app.url(path))
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, headers) = (res.status(), res.headers().clone());
    (status, res.json().await.unwrap_or(Value::Null), headers)
}

fn ids(page: &Value) -> Vec<String> {
    page["commits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn history_lists_the_commits_an_application_reads() {
    let repo = tempfile::tempdir().unwrap();
    let dir = repo.path();
    git(dir, &["init", "-q"]);
    write(dir, "application.yml", "shared: 1\n");
    write(dir, "foo.yml", "a: one\n");
    let c1 = commit(dir, "first");
    write(dir, "bar.yml", "b: 1\n");
    write(dir, "README.md", "not configuration\n");
    let c2 = commit(dir, "bar only");
    write(
        dir,
        "foo-dev.yml",
        "a: dev\nlong: text text text text text text text\n",
    );
    let c3 = commit(dir, "foo dev");
    git(dir, &["mv", "foo-dev.yml", "foo-prod.yml"]);
    let c4 = commit(dir, "dev becomes prod");
    write(dir, "foo.yml", "a: two\n");
    git(dir, &["rm", "-q", "foo-prod.yml"]);
    let c5 = commit(dir, "foo two\n\nwith a body");
    let app = support::start(support::settings(dir), &Common::default()).await;

    let (status, page) = app.get("/history/foo").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["application"], "foo");
    assert_eq!(page["label"], "main");
    assert_eq!(
        ids(&page),
        [&c5, &c4, &c3, &c1].map(|s| s.clone()),
        "bar.yml is not foo's"
    );
    assert_eq!(page["next_cursor"], Value::Null);
    let newest = &page["commits"][0];
    assert_eq!(newest["message"], "foo two\n\nwith a body");
    assert_eq!(newest["author"], "t");
    assert_eq!(newest["email"], "t@x");
    assert!(c5.starts_with(newest["short_id"].as_str().unwrap()));
    assert!(
        chrono::DateTime::parse_from_rfc3339(newest["time"].as_str().unwrap()).is_ok(),
        "{newest}"
    );
    assert_eq!(
        newest["files"],
        json!([{"path": "foo-prod.yml", "change": "deleted"}, {"path": "foo.yml", "change": "modified"}])
    );
    assert_eq!(
        page["commits"][1]["files"],
        json!([{"path": "foo-prod.yml", "change": "renamed"}])
    );
    assert_eq!(page["commits"][2]["files"][0]["change"], "added");
    let (_, bar) = app.get("/history/bar").await;
    assert_eq!(
        ids(&bar),
        [&c2, &c1].map(|s| s.clone()),
        "application.yml is everyone's"
    );

    // Pages: the cursor carries on after the last commit of a page.
    let (_, first) = app.get("/history/foo?limit=2").await;
    assert_eq!(ids(&first), [&c5, &c4].map(|s| s.clone()));
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let (_, rest) = app
        .get(&format!("/history/foo?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(ids(&rest), [&c3, &c1].map(|s| s.clone()));

    // Any commit in the history is a label serving what was then.
    let (_, old) = app.get(&format!("/foo/default/{c1}")).await;
    assert_eq!(old["propertySources"][0]["source"]["a"], "one");
    assert_eq!(old["version"], c1.as_str());

    for (path, want) in [
        ("/history/foo?label=nope", StatusCode::NOT_FOUND),
        ("/history/foo?limit=0", StatusCode::UNPROCESSABLE_ENTITY),
        ("/history/foo?limit=101", StatusCode::UNPROCESSABLE_ENTITY),
        ("/history/foo?cursor=zz", StatusCode::UNPROCESSABLE_ENTITY),
        ("/history/x..y", StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let res = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), want, "{path}");
        assert_eq!(res.headers()["content-type"], "application/problem+json");
    }

    let folder = support::start(
        Settings {
            backend: config_service::settings::BackendKind::Folder,
            ..support::settings(dir)
        },
        &Common::default(),
    )
    .await;
    let (status, problem) = folder.get("/history/foo").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(problem["detail"], "history needs the git backend");
}

#[tokio::test]
async fn rollback_makes_a_new_commit_and_keeps_the_checkout_clean() {
    let repo = tempfile::tempdir().unwrap();
    let dir = repo.path();
    git(dir, &["init", "-q"]);
    write(dir, "foo.yml", "a: 1\n");
    write(dir, "bar.yml", "b: 1\n");
    let c1 = commit(dir, "one");
    git(dir, &["tag", "v1"]);
    write(dir, "foo.yml", "a: 2\n");
    write(dir, "bar.yml", "b: 2\n");
    write(dir, "foo-dev.yml", "a: dev\n");
    let c2 = commit(dir, "two");
    let app = support::start(support::settings(dir), &Common::default()).await;

    let (status, done, _) = post(&app, "/history/foo/rollback", json!({"to": c1})).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["changed"], true);
    assert_eq!(done["label"], "main");
    assert_eq!(done["restored"], json!(["foo-dev.yml", "foo.yml"]));
    let head = git(dir, &["rev-parse", "HEAD"]);
    assert_eq!(done["commit"], head.as_str());
    assert_eq!(
        git(dir, &["rev-parse", "HEAD~1"]),
        c2,
        "a new commit on top"
    );
    assert_eq!(
        git(dir, &["log", "-1", "--format=%an"]),
        "PromptFlow config-service"
    );
    assert_eq!(
        git(dir, &["status", "--porcelain"]),
        "",
        "the checkout follows"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("foo.yml")).unwrap(),
        "a: 1\n"
    );
    assert!(!dir.join("foo-dev.yml").exists());
    let (_, env) = app.get("/foo/default").await;
    assert_eq!(env["version"], head.as_str());
    assert_eq!(env["propertySources"][0]["source"]["a"], 1);
    let (_, bar) = app.get("/bar/default").await;
    assert_eq!(
        bar["propertySources"][0]["source"]["b"], 2,
        "not foo's file"
    );

    // The same again changes nothing and makes no commit.
    let (_, again, _) = post(&app, "/history/foo/rollback", json!({"to": c1})).await;
    assert_eq!(again["changed"], false);
    assert_eq!(again["commit"], head.as_str());
    assert_eq!(git(dir, &["rev-parse", "HEAD"]), head);

    // The whole repository, with a message.
    let (_, all, _) = post(
        &app,
        "/history/foo/rollback",
        json!({"to": &c1[..8], "scope": "repository", "message": "back to one"}),
    )
    .await;
    assert_eq!(all["restored"], json!(["bar.yml"]));
    assert_eq!(git(dir, &["log", "-1", "--format=%s"]), "back to one");
    assert_eq!(git(dir, &["status", "--porcelain"]), "");

    // An edit in the checkout is never overwritten: 409, nothing changes.
    write(dir, "foo.yml", "a: edited\n");
    let before = git(dir, &["rev-parse", "HEAD"]);
    let (status, problem, _) = post(&app, "/history/foo/rollback", json!({"to": c2})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(git(dir, &["rev-parse", "HEAD"]), before);
    assert_eq!(
        std::fs::read_to_string(dir.join("foo.yml")).unwrap(),
        "a: edited\n"
    );
    git(dir, &["checkout", "-q", "--", "foo.yml"]);

    for (body, want) in [
        (json!({"to": c2, "label": "v1"}), StatusCode::CONFLICT),
        (json!({"to": c2, "label": "nope"}), StatusCode::NOT_FOUND),
        (json!({"to": "deadbeef00"}), StatusCode::NOT_FOUND),
        (json!({"to": "HEAD~1"}), StatusCode::BAD_REQUEST),
        (json!({"too": c2}), StatusCode::UNPROCESSABLE_ENTITY),
        (
            json!({"to": c2, "scope": "all"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let (status, problem, headers) = post(&app, "/history/foo/rollback", body.clone()).await;
        assert_eq!(status, want, "{body}: {problem}");
        assert_eq!(headers["content-type"], "application/problem+json");
    }
}

/// A bare repository (no working tree to keep in step) and a working repository that
/// changes it by pushing, its first commit (`foo.yml` = `a: 1`) pushed; that commit's id.
fn bare_and_work() -> (tempfile::TempDir, tempfile::TempDir, String) {
    let bare = tempfile::tempdir().unwrap();
    git(bare.path(), &["init", "-q", "--bare"]);
    let work = support::repository(&[("foo.yml", "a: 1\n")]);
    let first = git(work.path(), &["rev-parse", "HEAD"]);
    git(
        work.path(),
        &["push", "-q", bare.path().to_str().unwrap(), "main"],
    );
    (bare, work, first)
}

#[tokio::test]
async fn rollback_needs_the_admin_and_never_loses_a_concurrent_commit() {
    let (repo, scratch, c1) = bare_and_work();
    let dir = repo.path();
    let work = scratch.path();
    write(work, "foo.yml", "a: 2\n");
    commit(work, "two");
    git(work, &["push", "-q", dir.to_str().unwrap(), "main"]);

    let app = support::start(
        Settings {
            admin: config_service::settings::AdminSettings {
                username: "root".into(),
                password: "pw".into(),
            },
            ..support::settings(dir)
        },
        &Common::default(),
    )
    .await;
    let url = app.url("/history/foo/rollback");
    let body = json!({"to": c1});
    for auth in [None, Some(("root", "wrong")), Some(("other", "pw"))] {
        let mut req = app.http.post(&url).json(&body);
        if let Some((u, p)) = auth {
            req = req.basic_auth(u, Some(p));
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        assert!(
            res.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Basic")
        );
        assert_eq!(res.headers()["content-type"], "application/problem+json");
    }
    let res = app
        .http
        .post(&url)
        .json(&body)
        .basic_auth("root", Some("pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let (_, env) = app.get("/foo/default").await;
    assert_eq!(
        env["propertySources"][0]["source"]["a"], 1,
        "served from the bare repository"
    );

    // A commit lands between the plan and the swap: the swap refuses, the commit stays.
    let repository = git2::Repository::open(dir).unwrap();
    let base = repository.refname_to_id("refs/heads/main").unwrap();
    let plan =
        config_service::history::plan(&repository, "refs/heads/main", base, base, None).unwrap();
    git(work, &["pull", "-q", dir.to_str().unwrap(), "main"]);
    write(work, "foo.yml", "a: 3\n");
    let concurrent = commit(work, "three");
    git(work, &["push", "-q", dir.to_str().unwrap(), "main"]);
    let result = config_service::history::apply(&repository, &plan, "late");
    assert!(
        matches!(result, Err(config_service::history::RollbackError::Moved)),
        "{result:?}"
    );
    assert_eq!(
        repository
            .refname_to_id("refs/heads/main")
            .unwrap()
            .to_string(),
        concurrent
    );
}

/// A subscription on `common`'s bus sending every `config.refresh` to the returned channel.
async fn refreshes(
    common: &Common,
    stop: &CancellationToken,
) -> tokio::sync::mpsc::UnboundedReceiver<ConfigRefresh> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let handler: Handler = std::sync::Arc::new(move |event| {
        let tx = tx.clone();
        Box::pin(async move {
            let _ = tx.send(event.data_as::<ConfigRefresh>()?);
            Ok(())
        })
    });
    common
        .events
        .subscribe(
            Subscription::per_instance("test", "config.refresh", &["config.refresh"]),
            handler,
            stop.clone(),
        )
        .await;
    rx
}

type Refreshes = tokio::sync::mpsc::UnboundedReceiver<ConfigRefresh>;

/// config-service on a bus of its own, and what it announces there.
async fn announcing(settings: Settings) -> (App, Refreshes, tokio_util::sync::DropGuard) {
    let common = Common::default();
    let stop = CancellationToken::new();
    let rx = refreshes(&common, &stop).await;
    let app = support::start(settings, &common).await;
    (app, rx, stop.drop_guard())
}

async fn next(rx: &mut Refreshes) -> ConfigRefresh {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a refresh event in time")
        .expect("the bus is open")
}

#[tokio::test]
async fn the_watcher_announces_each_moved_label() {
    let repo = support::repository(&[("application.yml", "shared: 1\n")]);
    let dir = repo.path();
    let (_app, mut rx, _stop) = announcing(Settings {
        watch_interval_ms: 50,
        ..support::settings(dir)
    })
    .await;
    // Let the watcher take its baseline first.
    tokio::time::sleep(Duration::from_millis(300)).await;

    write(dir, "foo-dev.yml", "a: 1\n");
    let version = commit(dir, "foo dev");
    let event = next(&mut rx).await;
    assert_eq!(event.destination, ["foo", "foo-dev"]);
    assert_eq!(event.label.as_deref(), Some("main"));
    assert_eq!(event.version.as_deref(), Some(version.as_str()));
    assert_eq!(event.paths, ["foo-dev.yml"]);

    write(dir, "application.yml", "shared: 2\n");
    commit(dir, "everyone");
    assert_eq!(next(&mut rx).await.destination, ["*"]);
}

fn signed(secret: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test]
async fn monitor_announces_what_a_webhook_names() {
    let repo = support::repository(&[("foo.yml", "a: 1\n")]);
    let dir = repo.path();
    let (app, mut rx, _stop) = announcing(Settings {
        watch_interval_ms: 0,
        monitor_secret: "s3cret".into(),
        ..support::settings(dir)
    })
    .await;
    let url = app.url("/monitor");

    let github = serde_json::to_vec(&json!({
        "ref": "refs/heads/main",
        "after": "0123456789abcdef0123456789abcdef01234567",
        "commits": [{"added": ["gateway-service.yml"], "modified": [], "removed": []}]
    }))
    .unwrap();
    let res = app
        .http
        .post(&url)
        .header("x-github-event", "push")
        .header("x-hub-signature-256", signed("s3cret", &github))
        .header("content-type", "application/json")
        .body(github.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!(["gateway", "gateway-service"])
    );
    let event = next(&mut rx).await;
    assert_eq!(event.destination, ["gateway", "gateway-service"]);
    assert_eq!(event.label.as_deref(), Some("main"));
    assert_eq!(event.paths, ["gateway-service.yml"]);

    let form = b"path=foo.yml&path=application-dev.properties".to_vec();
    let res = app
        .http
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-hub-signature-256", signed("s3cret", &form))
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.json::<Value>().await.unwrap(), json!(["*"]));
    assert_eq!(next(&mut rx).await.destination, ["*"]);

    let res = app
        .http
        .post(&url)
        .header("x-github-event", "push")
        .header("x-hub-signature-256", signed("wrong", &github))
        .body(github)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let res = app.http.post(&url).body("x").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(
        rx.try_recv().is_err(),
        "nothing announced for refused calls"
    );
}

#[tokio::test]
async fn a_remote_is_mirrored_fetched_and_rolled_back_by_a_push() {
    // The "remote": a bare repository, changed by pushing from a working one.
    let (upstream, scratch, one) = bare_and_work();
    let (up, work) = (upstream.path(), scratch.path());
    let up_path = up.to_str().unwrap();
    let local = tempfile::tempdir().unwrap();
    let mirror = local.path().join("mirror");
    let (app, mut rx, _stop) = announcing(Settings {
        watch_interval_ms: 50,
        remote: config_service::settings::RemoteSettings {
            uri: format!("file://{}", up.display()),
            fetch_interval_secs: 0,
            ..Default::default()
        },
        ..support::settings(&mirror)
    })
    .await;
    let (status, env) = app.get("/foo/default").await;
    assert_eq!(status, StatusCode::OK, "{env}");
    assert_eq!(env["propertySources"][0]["source"]["a"], 1);
    tokio::time::sleep(Duration::from_millis(300)).await;

    write(work, "foo.yml", "a: 2\n");
    let two = commit(work, "two");
    git(work, &["push", "-q", up_path, "main"]);
    let (_, still) = app.get("/foo/default").await;
    assert_eq!(
        still["propertySources"][0]["source"]["a"], 1,
        "not fetched yet"
    );
    let res = app
        .http
        .post(app.url("/monitor"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("path=foo.yml")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let (_, env) = app.get("/foo/default").await;
    assert_eq!(env["version"], two.as_str());
    assert_eq!(env["propertySources"][0]["source"]["a"], 2);
    // The watcher sees the fetched branch move too.
    let mut versions = Vec::new();
    for _ in 0..2 {
        versions.push(next(&mut rx).await.version);
    }
    assert!(versions.contains(&Some(two.clone())), "{versions:?}");

    // A rollback is pushed to the remote's branch, and served at once.
    let (status, done, _) = post(&app, "/history/foo/rollback", json!({"to": one})).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(
        git(up, &["rev-parse", "main"]),
        done["commit"].as_str().unwrap()
    );
    assert_eq!(git(up, &["rev-parse", "main~1"]), two);
    let (_, env) = app.get("/foo/default").await;
    assert_eq!(env["version"], done["commit"]);
    assert_eq!(env["propertySources"][0]["source"]["a"], 1);
    // The remote moved and the mirror has not fetched yet: the push is refused, nothing lost.
    git(work, &["pull", "-q", up_path, "main"]);
    write(work, "foo.yml", "a: 3\n");
    let three = commit(work, "three");
    git(work, &["push", "-q", up_path, "main"]);
    let (status, problem, _) = post(&app, "/history/foo/rollback", json!({"to": two})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("moved"),
        "{problem}"
    );
    assert_eq!(git(up, &["rev-parse", "main"]), three);

    // A remote that cannot be fetched: readiness says so.
    let broken = support::start(
        Settings {
            remote: config_service::settings::RemoteSettings {
                uri: format!("file://{}/nowhere", local.path().display()),
                ..Default::default()
            },
            ..support::settings(&local.path().join("other"))
        },
        &Common::default(),
    )
    .await;
    let (status, ready) = broken.get("/health/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready["checks"]["remote"]["status"], "DOWN", "{ready}");
}
