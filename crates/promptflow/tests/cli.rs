//! The binary as a user runs it: `promptflow up` on a fresh data folder, SIGTERM, and a
//! wrong setting stopping the start.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

mod support;
use support::{promptflow, sigterm, wait_for_listening, wait_for_services};

/// The application names registered with the discovery service at `addr`.
async fn registered(addr: &str) -> Vec<String> {
    let listing: serde_json::Value = reqwest::Client::new()
        .get(format!("http://{addr}/eureka/apps/"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut names: Vec<String> = listing["applications"]["application"]
        .as_array()
        .map(|apps| {
            apps.iter()
                .filter_map(|a| a["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

async fn eventually_registered(addr: &str, expected: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let names = registered(addr).await;
        if names == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "registered: {names:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `promptflow serve <service>` with `env`; returns it once it listens, and its address.
fn serve(service: &str, data: &std::path::Path, env: &[(&str, &str)]) -> (Child, String) {
    let mut child = promptflow()
        .args(["serve", service, "--data-dir"])
        .arg(data)
        .envs(env.iter().copied())
        .spawn()
        .unwrap();
    let addr = wait_for_listening(&mut child);
    (child, addr)
}

/// `serve discovery-service` on a free port: the process, its address and its Eureka URL.
fn serve_discovery(data: &std::path::Path) -> (Child, String, String) {
    let (child, addr) = serve(
        "discovery-service",
        data,
        &[("PROMPTFLOW_DISCOVERY_SERVICE__LISTEN", "127.0.0.1:0")],
    );
    let eureka = format!("http://{addr}/eureka/");
    (child, addr, eureka)
}

/// `serve user-service` on its own (no library saga), registering with the discovery
/// service at `discovery_addr`; `more` adds settings.
fn serve_user_with_discovery(
    data: &std::path::Path,
    discovery_addr: &str,
    more: &[(&str, &str)],
) -> (Child, String) {
    let eureka = format!("http://{discovery_addr}/eureka/");
    let mut env = vec![
        ("PROMPTFLOW_USER__LISTEN", "127.0.0.1:0"),
        ("PROMPTFLOW_USER__PROVISION_LIBRARY", "false"),
        ("PROMPTFLOW_USER__PASSWORD_HASH__MEMORY_KIB", "4096"),
        ("PROMPTFLOW_DISCOVERY__EUREKA_URLS", eureka.as_str()),
    ];
    env.extend_from_slice(more);
    serve("user-service", data, &env)
}

#[test]
fn up_serves_on_a_fresh_data_folder_and_stops_on_sigterm() {
    let data = tempfile::tempdir().unwrap();
    let mut child = promptflow()
        .args(["up", "--data-dir"])
        .arg(data.path())
        .env("PROMPTFLOW_USER__LISTEN", "127.0.0.1:0")
        .env("PROMPTFLOW_BUSINESS__LISTEN", "127.0.0.1:0")
        .env("PROMPTFLOW_DISCOVERY_SERVICE__LISTEN", "127.0.0.1:0")
        .env("PROMPTFLOW_GATEWAY__LISTEN", "127.0.0.1:0")
        .env("PROMPTFLOW_CONFIG_SERVICE__LISTEN", "127.0.0.1:0")
        .env("PROMPTFLOW_USER__PASSWORD_HASH__MEMORY_KIB", "4096")
        .spawn()
        .expect("promptflow starts");
    let addrs = wait_for_services(
        &mut child,
        &[
            "config-service",
            "discovery-service",
            "user-service",
            "business-service",
            "gateway-service",
        ],
    );
    let addr = addrs["user-service"].clone();
    let gateway = addrs["gateway-service"].clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        // Every service registers with the discovery service of the same process.
        eventually_registered(
            &addrs["discovery-service"],
            &["BUSINESS-SERVICE", "CONFIG-SERVICE", "GATEWAY-SERVICE", "USER-SERVICE"],
        )
        .await;
        let client = reqwest::Client::new();
        // config-service made the data folder's settings repository on first start.
        let settings: serde_json::Value = client
            .get(format!("http://{}/user-service/default", addrs["config-service"]))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(settings["label"], "main");
        assert_eq!(settings["version"].as_str().map(str::len), Some(40), "{settings}");
        assert_eq!(settings["propertySources"][0]["source"]["log.level"], "info");
        assert!(data.path().join("config-repo/.git").is_dir());
        let ready: serde_json::Value = client
            .get(format!("http://{addr}/health/ready"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(ready["status"], "UP");
        let created = client
            .post(format!("http://{addr}/api/auth/register"))
            .json(&serde_json::json!({ "username": "first", "email": "first@example.com", "password": "correct horse battery" }))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        // The public entry: through the gateway, a new account signs in and keeps a prompt.
        let created = client
            .post(format!("http://{gateway}/api/auth/register"))
            .json(&serde_json::json!({ "username": "second", "email": "second@example.com", "password": "correct horse battery" }))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        let login: serde_json::Value = client
            .post(format!("http://{gateway}/api/auth/login"))
            .json(&serde_json::json!({ "username": "second", "password": "correct horse battery" }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = login["access_token"].as_str().expect("a token");
        let prompt = client
            .post(format!("http://{gateway}/api/business/prompts"))
            .bearer_auth(token)
            .json(&serde_json::json!({ "title": "通过网关", "content": "Hello {{name}}" }))
            .send()
            .await
            .unwrap();
        assert_eq!(prompt.status(), 201);
        let anonymous = client
            .get(format!("http://{gateway}/api/business/prompts"))
            .send()
            .await
            .unwrap();
        assert_eq!(anonymous.status(), 401);
    });
    assert!(
        data.path().join("user.db").exists(),
        "SQLite under the data folder"
    );

    let started = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "clean exit on SIGTERM: {exit:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_wrong_setting_stops_the_start_and_is_named() {
    for (key, value, named) in [
        ("PROMPTFLOW_USER__LISTEN", "not-an-address", "user.listen"),
        (
            "PROMPTFLOW_USER__ACESS_TOKEN_TTL_SECS",
            "60",
            "acess_token_ttl_secs",
        ),
        ("PROMPTFLOW_HTTP__BODY_LIMIT", "huge", "http.body_limit"),
        (
            "PROMPTFLOW_USER__ACCESS_TOKEN_TTL_SECS",
            "5",
            "user.access_token_ttl_secs",
        ),
        (
            "PROMPTFLOW_USER__DATABASE__URL",
            "mysql://x",
            "sqlite:// or postgres://",
        ),
    ] {
        let data = tempfile::tempdir().unwrap();
        let output = promptflow()
            .args(["up", "--data-dir"])
            .arg(data.path())
            .env(key, value)
            .env(
                "PROMPTFLOW_USER__LISTEN",
                if key == "PROMPTFLOW_USER__LISTEN" {
                    value
                } else {
                    "127.0.0.1:0"
                },
            )
            .output()
            .unwrap();
        assert!(
            !output.status.success(),
            "{key}={value} must stop the start"
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(named), "{key}: {stderr}");
    }
}

#[test]
fn a_settings_file_is_read_and_the_environment_wins() {
    let data = tempfile::tempdir().unwrap();
    let file = data.path().join("promptflow.yaml");
    std::fs::write(
        &file,
        "user:\n  listen: 127.0.0.1:1\n  provision_library: false\n  password_hash:\n    memory_kib: 4096\nlog:\n  level: info\n",
    )
    .unwrap();
    let mut child = promptflow()
        .args(["serve", "user-service", "--config"])
        .arg(&file)
        .arg("--data-dir")
        .arg(data.path())
        .env("PROMPTFLOW_USER__LISTEN", "127.0.0.1:0")
        .spawn()
        .unwrap();
    let addr = wait_for_listening(&mut child);
    assert!(!addr.ends_with(":1"), "{addr}");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());

    let output = promptflow()
        .args(["up", "--config", "/nonexistent/promptflow.yaml"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("does not exist"));
}

#[test]
fn user_service_alone_needs_a_broker_for_its_sagas() {
    let data = tempfile::tempdir().unwrap();
    let output = promptflow()
        .args(["serve", "user-service", "--data-dir"])
        .arg(data.path())
        .env("PROMPTFLOW_USER__LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("user.provision_library"), "{stderr}");
    assert!(stderr.contains("events.transport"), "{stderr}");
}

#[test]
fn a_service_on_its_own_registers_and_deregisters_on_sigterm() {
    let data = tempfile::tempdir().unwrap();
    let (mut discovery, discovery_addr, _) = serve_discovery(data.path());
    let (mut user, user_addr) = serve_user_with_discovery(
        data.path(),
        &discovery_addr,
        &[("PROMPTFLOW_DISCOVERY__ZONE", "zone-7")],
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        eventually_registered(&discovery_addr, &["USER-SERVICE"]).await;
        let port = user_addr.rsplit(':').next().unwrap();
        let instance: serde_json::Value = reqwest::Client::new()
            .get(format!(
                "http://{discovery_addr}/eureka/apps/USER-SERVICE/127.0.0.1:user-service:{port}"
            ))
            .header("accept", "application/json")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(instance["instance"]["metadata"]["zone"], "zone-7");
        assert_eq!(
            instance["instance"]["healthCheckUrl"],
            format!("http://127.0.0.1:{port}/health")
        );
    });
    sigterm(&user);
    assert!(user.wait().unwrap().success());
    // Gone at once (the lease would last 90 s).
    runtime.block_on(async {
        assert!(registered(&discovery_addr).await.is_empty());
    });
    sigterm(&discovery);
    assert!(discovery.wait().unwrap().success());
}

#[test]
fn business_service_finds_user_service_through_discovery() {
    let data = tempfile::tempdir().unwrap();
    let (mut discovery, discovery_addr, eureka) = serve_discovery(data.path());
    let (mut user, user_addr) = serve_user_with_discovery(data.path(), &discovery_addr, &[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(eventually_registered(&discovery_addr, &["USER-SERVICE"]));
    // business-service is told only where discovery is; its default `jwks_url` is
    // `lb://user-service/.well-known/jwks.json`.
    let (mut business, business_addr) = serve(
        "business-service",
        data.path(),
        &[
            ("PROMPTFLOW_BUSINESS__LISTEN", "127.0.0.1:0"),
            ("PROMPTFLOW_DISCOVERY__EUREKA_URLS", &eureka),
            ("PROMPTFLOW_DISCOVERY__FETCH_INTERVAL_SECS", "1"),
        ],
    );
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let created = client
            .post(format!("http://{user_addr}/api/auth/register"))
            .json(&serde_json::json!({ "username": "finder", "email": "finder@example.com", "password": "correct horse battery" }))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        let login: serde_json::Value = client
            .post(format!("http://{user_addr}/api/auth/login"))
            .json(&serde_json::json!({ "username": "finder", "password": "correct horse battery" }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = login["access_token"].as_str().expect("an access token").to_owned();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let status = client
                .get(format!("http://{business_addr}/api/business/prompts"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .status();
            if status == 200 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "business-service never verified the token: {status}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        eventually_registered(&discovery_addr, &["BUSINESS-SERVICE", "USER-SERVICE"]).await;
    });
    for child in [&business, &user, &discovery] {
        sigterm(child);
    }
    for child in [&mut business, &mut user, &mut discovery] {
        assert!(child.wait().unwrap().success());
    }
}
