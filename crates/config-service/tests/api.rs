//! config-service over HTTP against a real git repository made with the git command line:
//! precedence, labels (branch, tag, commit, `(_)`), the v2 media type, `{cipher}` values
//! and the encryption endpoints.

use std::path::Path;

use config_service::Settings;
use platform::settings::Common;
use reqwest::StatusCode;
use serde_json::Value;

mod support;
use support::{App, git, write};

async fn spawn(dir: &Path, key: &str) -> App {
    let settings = Settings {
        encrypt: config_service::settings::EncryptSettings {
            key: key.into(),
            ..Default::default()
        },
        ..support::settings(dir)
    };
    support::start(settings, &Common::default()).await
}

fn names(env: &Value) -> Vec<String> {
    env["propertySources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s["name"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn environments_follow_springs_precedence_and_labels() {
    let repo = tempfile::tempdir().unwrap();
    let dir = repo.path();
    git(dir, &["init", "-q"]);
    write(dir, "application.yml", "a: app\nshared: 1\n");
    write(dir, "foo.yml", "a: foo\nlist: [x, y]\n");
    write(dir, "foo-dev.yml", "a: foo-dev\n");
    write(
        dir,
        "application-db.properties",
        "a=app-db\ndb.url=jdbc:x\n",
    );
    write(dir, "bar.yml", "a: bar\n");
    git(dir, &["add", "."]);
    git(dir, &["commit", "-qm", "first"]);
    let first = git(dir, &["rev-parse", "HEAD"]);
    git(dir, &["tag", "v1"]);
    git(dir, &["checkout", "-qb", "feature/x"]);
    write(dir, "foo.yml", "a: feature\n");
    git(dir, &["commit", "-qam", "feature"]);
    git(dir, &["checkout", "-q", "main"]);
    write(dir, "foo.yml", "a: foo2\n");
    git(dir, &["commit", "-qam", "second"]);
    let second = git(dir, &["rev-parse", "HEAD"]);
    // An uncommitted edit is never served.
    write(dir, "foo.yml", "a: dirty\n");
    let app = spawn(dir, "").await;

    let (status, env) = app.get("/foo/dev,db").await;
    assert_eq!(status, StatusCode::OK, "{env}");
    assert_eq!(env["name"], "foo");
    assert_eq!(env["profiles"], serde_json::json!(["dev", "db"]));
    assert_eq!(env["label"], "main");
    assert_eq!(env["version"], second.as_str());
    assert_eq!(
        names(&env),
        [
            "application-db.properties",
            "foo-dev.yml",
            "foo.yml",
            "application.yml"
        ],
        "the last profile first, the application before `application`"
    );
    assert_eq!(env["propertySources"][2]["source"]["a"], "foo2");

    // Labels: a tag, a commit, a branch with `/` written as `(_)` or percent-encoded.
    let (_, tagged) = app.get("/foo/default/v1").await;
    assert_eq!(tagged["version"], first.as_str());
    assert_eq!(tagged["propertySources"][0]["source"]["list[1]"], "y");
    let (_, by_commit) = app.get(&format!("/foo/default/{}", &first[..10])).await;
    assert_eq!(by_commit["version"], first.as_str());
    let (_, branch) = app.get("/foo/default/feature(_)x").await;
    assert_eq!(branch["propertySources"][0]["source"]["a"], "feature");
    let (_, branch) = app.get("/foo/default/feature%2Fx").await;
    assert_eq!(branch["propertySources"][0]["source"]["a"], "feature");
    let (_, master) = app.get("/foo/default/master").await;
    assert_eq!(
        master["version"],
        second.as_str(),
        "master falls back to main"
    );

    // Unknown label: 404 problem; unknown application: 200 with only the shared files.
    let res = app
        .http
        .get(format!("{}/foo/default/nope", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let (status, none) = app.get("/nobody/default").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(names(&none), ["application.yml"]);
    let (status, _) = app.get("/foo/default/HEAD~1").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "no revision syntax from outside"
    );

    // The v2 media type carries each value's origin.
    let v2: Value = app
        .http
        .get(format!("{}/foo/dev", app.base))
        .header(
            "accept",
            "application/vnd.spring-cloud.config-server.v2+json",
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let value = &v2["propertySources"][0]["source"]["a"];
    assert_eq!(value["value"], "foo-dev");
    assert!(value["origin"].as_str().unwrap().ends_with("foo-dev.yml"));
}

#[tokio::test]
async fn cipher_values_open_and_the_encryption_endpoints_answer() {
    let repo = tempfile::tempdir().unwrap();
    let dir = repo.path();
    git(dir, &["init", "-q"]);
    // Made by the JDK's JCE with key `s3cret` (tests/data/java-cipher.txt).
    let java = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/java-cipher.txt"
    ))
    .unwrap();
    let (hex, plain) = java.trim().split_once(' ').unwrap();
    write(
        dir,
        "foo.yml",
        &format!("db:\n  password: '{{cipher}}{hex}'\n  other: '{{cipher}}00ff'\n"),
    );
    git(dir, &["add", "."]);
    git(dir, &["commit", "-qm", "secret"]);
    let app = spawn(dir, "s3cret").await;
    let (_, env) = app.get("/foo/default").await;
    let source = &env["propertySources"][0]["source"];
    assert_eq!(source["db.password"], plain);
    assert_eq!(source["invalid.db.other"], "<n/a>");
    assert!(source.get("db.other").is_none());

    let (status, body) = app.get("/encrypt/status").await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("OK"))
    );
    let url = |p: &str| format!("{}{p}", app.base);
    let hex = app
        .http
        .post(url("/encrypt"))
        .body("秘密")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let back = app
        .http
        .post(url("/decrypt"))
        .body(hex.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(back.text().await.unwrap(), "秘密");
    // curl -d posts a form: the trailing `=` is not part of the text.
    let form = app
        .http
        .post(url("/decrypt"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("{hex}="))
        .send()
        .await
        .unwrap();
    assert_eq!(form.text().await.unwrap(), "秘密");
    let bad = app
        .http
        .post(url("/decrypt"))
        .body("not-hex")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert_eq!(bad.headers()["content-type"], "application/problem+json");

    let keyless = spawn(dir, "").await;
    let (status, body) = keyless.get("/encrypt/status").await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::NOT_FOUND, Some("NO_KEY"))
    );
    let (_, env) = keyless.get("/foo/default").await;
    assert!(
        env["propertySources"][0]["source"]["db.password"]
            .as_str()
            .unwrap()
            .starts_with("{cipher}"),
        "without a key the value goes to the client as it is"
    );
}

#[tokio::test]
async fn merged_views_resolve_placeholders() {
    let repo = tempfile::tempdir().unwrap();
    let dir = repo.path();
    git(dir, &["init", "-q"]);
    write(dir, "application.yml", "host: db\nport: 5432\n");
    write(
        dir,
        "gateway-service-dev.yml",
        "url: 'pg://${host}:${port}/${name:x}'\nlist: [a, b]\nport: 6543\n",
    );
    git(dir, &["add", "."]);
    git(dir, &["commit", "-qm", "views"]);
    let app = spawn(dir, "").await;
    let text = |p: &str| {
        let url = format!("{}{p}", app.base);
        let http = app.http.clone();
        async move { http.get(url).send().await.unwrap().text().await.unwrap() }
    };
    let props = text("/gateway-service-dev.properties").await;
    assert_eq!(
        props,
        "host: db\nlist[0]: a\nlist[1]: b\nport: 6543\nurl: pg://db:6543/x\n"
    );
    let json: Value = serde_json::from_str(&text("/main/gateway-service-dev.json").await).unwrap();
    assert_eq!(json["list"][1], "b");
    assert_eq!(json["port"], 6543);
    let yaml = text("/gateway-service-dev.yml?resolvePlaceholders=false").await;
    assert!(
        yaml.contains("url: pg://${host}:${port}/${name:x}"),
        "{yaml}"
    );
    let res = app
        .http
        .get(format!("{}/nope/gateway-service-dev.yml", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::NOT_FOUND,
        "an unknown label in a view"
    );
}

#[tokio::test]
async fn plain_files_are_served_with_placeholders_resolved() {
    let repo = tempfile::tempdir().unwrap();
    let dir = repo.path();
    git(dir, &["init", "-q"]);
    write(dir, "application.yml", "host: db\n");
    write(dir, "foo.yml", "port: 5432\n");
    write(dir, "nginx.conf", "upstream ${host}:${port};\n");
    write(dir, "nginx-dev.conf", "upstream dev;\n");
    write(dir, "conf/a.json", "{\"h\": \"${host}\"}");
    write(dir, "foo/only-foo.txt", "foo's own ${host}\n");
    std::fs::write(dir.join("logo.png"), [0x89, b'P', 0xff, 0x00, b'$', b'{']).unwrap();
    git(dir, &["add", "."]);
    git(dir, &["commit", "-qm", "files"]);
    let app = support::start(
        Settings {
            search_paths: vec!["{application}".into()],
            ..support::settings(dir)
        },
        &Common::default(),
    )
    .await;
    let fetch = |p: &str| {
        let req = app.http.get(app.url(p));
        async move {
            let res = req.send().await.unwrap();
            let kind = res
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            (res.status(), kind, res.bytes().await.unwrap().to_vec())
        }
    };
    let (status, kind, body) = fetch("/foo/default/main/nginx.conf").await;
    assert_eq!(status, StatusCode::OK);
    assert!(kind.starts_with("text/plain"), "{kind}");
    assert_eq!(body, b"upstream db:5432;\n");
    let (_, _, raw) = fetch("/foo/default/main/nginx.conf?resolvePlaceholders=false").await;
    assert_eq!(raw, b"upstream ${host}:${port};\n");
    let (_, _, dev) = fetch("/foo/dev/main/nginx.conf").await;
    assert_eq!(dev, b"upstream dev;\n", "the profile's variant first");
    let (_, kind, json) = fetch("/foo/default/main/conf/a.json").await;
    assert_eq!(
        (kind.as_str(), json.as_slice()),
        ("application/json", &b"{\"h\": \"db\"}"[..])
    );
    let (_, _, own) = fetch("/foo/default/main/only-foo.txt").await;
    assert_eq!(own, b"foo's own db\n", "the search folder before the root");
    let (status, _, _) = fetch("/bar/default/main/only-foo.txt").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not in bar's folders");
    let (_, kind, png) = fetch("/foo/default/main/logo.png").await;
    assert_eq!(kind, "application/octet-stream");
    assert_eq!(png, [0x89, b'P', 0xff, 0x00, b'$', b'{']);
    for path in [
        "/foo/default/main/..%2Ffoo.yml",
        "/foo/default/main/conf//a.json",
        "/foo/default/main/.%2Fnginx.conf",
        "/foo/default/main/nginx%0A.conf",
        "/foo/default/main/missing.txt",
        "/foo/default/nope/nginx.conf",
    ] {
        let (status, kind, _) = fetch(path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(kind, "application/problem+json", "{path}");
    }
    // The environment route beside it still answers.
    let (status, env) = app.get("/foo/default/main").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(env["name"], "foo");
}

#[tokio::test]
async fn a_new_commit_is_served_at_once_despite_the_cache() {
    let repo = support::repository(&[("foo.yml", "a: 1\n")]);
    let dir = repo.path();
    let app = support::start(
        Settings {
            cache_entries: 4,
            ..support::settings(dir)
        },
        &Common::default(),
    )
    .await;
    for _ in 0..2 {
        let (_, env) = app.get("/foo/default").await;
        assert_eq!(env["propertySources"][0]["source"]["a"], 1);
    }
    write(dir, "foo.yml", "a: 2\n");
    git(dir, &["commit", "-qam", "two"]);
    let (_, env) = app.get("/foo/default").await;
    assert_eq!(env["propertySources"][0]["source"]["a"], 2);
    let (_, env) = app.get("/foo/default/master").await;
    assert_eq!(
        env["label"], "master",
        "a cached environment keeps the label asked for"
    );
    // The plain and the v2 answers of one commit are kept apart.
    for _ in 0..2 {
        let v2: Value = app
            .http
            .get(app.url("/foo/default"))
            .header(
                "accept",
                "application/vnd.spring-cloud.config-server.v2+json",
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v2["propertySources"][0]["source"]["a"]["value"], 2);
        let (_, plain) = app.get("/foo/default").await;
        assert_eq!(plain["propertySources"][0]["source"]["a"], 2);
    }
}

#[tokio::test]
async fn with_a_reader_password_every_read_needs_credentials() {
    let repo = support::repository(&[("foo.yml", "secret.token: s3\n")]);
    let settings = Settings {
        reader: config_service::settings::ReaderSettings {
            username: "svc".into(),
            password: "reader-pass".into(),
        },
        admin: config_service::settings::AdminSettings {
            username: "ops".into(),
            password: "admin-pass".into(),
        },
        ..support::settings(repo.path())
    };
    let app = support::start(settings, &Common::default()).await;
    for path in [
        "/foo/default",
        "/foo-default.yml",
        "/history/foo",
        "/encrypt/status",
    ] {
        let res = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert!(
            res.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Basic"),
            "{path}"
        );
        assert_eq!(res.headers()["content-type"], "application/problem+json");
        let wrong = app
            .http
            .get(app.url(path))
            .basic_auth("svc", Some("guess"))
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    let env: Value = app
        .http
        .get(app.url("/foo/default"))
        .basic_auth("svc", Some("reader-pass"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(env["propertySources"][0]["source"]["secret.token"], "s3");
    // The admin may read too; the health check stays open for probes.
    let as_admin = app
        .http
        .get(app.url("/foo/default"))
        .basic_auth("ops", Some("admin-pass"))
        .send()
        .await
        .unwrap();
    assert_eq!(as_admin.status(), StatusCode::OK);
    let (status, _) = app.get("/health").await;
    assert_eq!(status, StatusCode::OK);
    // The platform client sends the credentials it is given.
    let client_settings = platform::config_client::ConfigClientSettings {
        uri: app.base.clone(),
        username: "svc".into(),
        password: "reader-pass".into(),
        ..Default::default()
    };
    let client = platform::config_client::ConfigClient::new(&client_settings, &["foo"]).unwrap();
    let overlay = client.fetch().await.unwrap();
    assert_eq!(overlay.tree["secret"]["token"], "s3");
    let anonymous = platform::config_client::ConfigClient::new(
        &platform::config_client::ConfigClientSettings {
            uri: app.base.clone(),
            ..Default::default()
        },
        &["foo"],
    )
    .unwrap();
    let err = anonymous.fetch().await.unwrap_err();
    assert!(err.contains("401"), "{err}");
}
