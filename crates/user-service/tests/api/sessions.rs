//! Sessions per device: listing, revoking one, revoking all others, one session per device.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;
use testkit::on_both_backends;

on_both_backends!(
    sessions_are_listed_per_device,
    revoking_one_session_ends_only_that_one,
    revoke_all_other_sessions,
    someone_elses_session_is_not_found,
    logging_in_again_from_a_device_replaces_its_session,
);

async fn sessions_are_listed_per_device(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("alice").await;
    let phone = app
        .login_device(
            "alice",
            PASSWORD,
            json!({ "id": "phone-1", "type": "android", "name": "Pixel" }),
        )
        .await;
    let response = app
        .request(reqwest::Method::POST, "/api/auth/login", None)
        .header("user-agent", "promptflow-cli/1.0")
        .json(&json!({ "username": "alice", "password": PASSWORD, "device": { "id": "laptop", "type": "cli" } }))
        .send()
        .await
        .unwrap();
    let laptop: serde_json::Value = response.json().await.unwrap();

    let (status, list) = app
        .get("/api/users/me/sessions", Some(&token(&laptop)))
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    let current: Vec<_> = list.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["id"], laptop["session_id"]);
    assert_eq!(current[0]["device_type"], "cli");
    assert_eq!(current[0]["user_agent"], "promptflow-cli/1.0");
    assert_eq!(current[0]["ip"], "127.0.0.1");
    let other = list.iter().find(|s| s["current"] == false).unwrap();
    assert_eq!(other["id"], phone["session_id"]);
    assert_eq!(other["device_id"], "phone-1");
    assert_eq!(other["device_type"], "android");
    assert_eq!(other["device_name"], "Pixel");
    for field in ["created_at", "last_seen_at", "expires_at"] {
        assert!(other[field].is_string(), "{field}: {other}");
    }
}

async fn revoking_one_session_ends_only_that_one(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("bob").await;
    let a = app
        .login_device("bob", PASSWORD, json!({ "id": "a" }))
        .await;
    let b = app
        .login_device("bob", PASSWORD, json!({ "id": "b" }))
        .await;
    let path = format!(
        "/api/users/me/sessions/{}",
        b["session_id"].as_str().unwrap()
    );
    let (status, _) = app.delete(&path, Some(&token(&a))).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app.get("/api/users/me", Some(&token(&b))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = app
        .post(
            "/api/auth/refresh",
            None,
            json!({ "refresh_token": refresh_token(&b) }),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = app.get("/api/users/me", Some(&token(&a))).await;
    assert_eq!(status, StatusCode::OK);
    // Twice: the session is gone.
    let (status, body) = app.delete(&path, Some(&token(&a))).await;
    assert_problem(status, &body, StatusCode::NOT_FOUND, "not-found");
}

async fn revoke_all_other_sessions(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("carol").await;
    let keep = app
        .login_device("carol", PASSWORD, json!({ "id": "keep" }))
        .await;
    let others: Vec<_> = futures_util::future::join_all(
        ["x", "y", "z"].map(|d| app.login_device("carol", PASSWORD, json!({ "id": d }))),
    )
    .await;
    let (status, body) = app
        .delete("/api/users/me/sessions", Some(&token(&keep)))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["revoked_sessions"], 3);
    for other in &others {
        let (status, _) = app.get("/api/users/me", Some(&token(other))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (_, list) = app.get("/api/users/me/sessions", Some(&token(&keep))).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
}

async fn someone_elses_session_is_not_found(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, victim) = app.signed_up("victim").await;
    let (attacker, _) = app.signed_up("attacker").await;
    let path = format!(
        "/api/users/me/sessions/{}",
        victim["session_id"].as_str().unwrap()
    );
    let (status, body) = app.delete(&path, Some(&attacker)).await;
    assert_problem(status, &body, StatusCode::NOT_FOUND, "not-found");
    let (status, _) = app.get("/api/users/me", Some(&token(&victim))).await;
    assert_eq!(status, StatusCode::OK, "the victim's session lives on");
    let (status, body) = app
        .delete("/api/users/me/sessions/not-a-uuid", Some(&attacker))
        .await;
    assert_problem(status, &body, StatusCode::NOT_FOUND, "not-found");
}

async fn logging_in_again_from_a_device_replaces_its_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("dan").await;
    let first = app
        .login_device("dan", PASSWORD, json!({ "id": "tablet", "type": "ios" }))
        .await;
    let second = app
        .login_device("dan", PASSWORD, json!({ "id": "tablet", "type": "ios" }))
        .await;
    assert_ne!(first["session_id"], second["session_id"]);
    let (status, _) = app.get("/api/users/me", Some(&token(&first))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, list) = app
        .get("/api/users/me/sessions", Some(&token(&second)))
        .await;
    assert_eq!(list.as_array().unwrap().len(), 1);
}
