//! The binary as a user runs it: `promptflow up` on a fresh data folder, SIGTERM, and a
//! wrong setting stopping the start.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn promptflow() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_promptflow"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Reads JSON log lines until one says a service is listening; returns its address.
fn wait_for_listening(child: &mut Child) -> String {
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && v["message"] == "listening"
            {
                let _ = tx.send(v["local_addr"].as_str().unwrap_or_default().to_owned());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("promptflow up says it listens")
}

#[test]
fn up_serves_on_a_fresh_data_folder_and_stops_on_sigterm() {
    let data = tempfile::tempdir().unwrap();
    let mut child = promptflow()
        .args(["up", "--data-dir"])
        .arg(data.path())
        .env("PROMPTFLOW_USER__LISTEN", "127.0.0.1:0")
        .env("PROMPTFLOW_BUSINESS__LISTEN", "127.0.0.1:0")
        .env("PROMPTFLOW_USER__PASSWORD_HASH__MEMORY_KIB", "4096")
        .spawn()
        .expect("promptflow starts");
    let addr = wait_for_listening(&mut child);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = reqwest::Client::new();
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
