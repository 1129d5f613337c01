//! Registration, login, refresh and logout.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;
use testkit::on_both_backends;

on_both_backends!(
    register_login_me,
    login_by_email_any_case,
    registration_is_validated_and_changes_nothing,
    duplicates_are_refused,
    wrong_password_and_unknown_account_look_the_same,
    failed_logins_for_an_account_are_slowed_down,
    failed_logins_from_an_address_are_slowed_down,
    refresh_rotates_and_reuse_revokes_the_session,
    logout_ends_the_session,
    disabled_user_is_locked_out_at_once,
);

async fn register_login_me(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app
        .request(reqwest::Method::POST, "/api/auth/register", None)
        .json(&json!({
            "username": "alice",
            "email": "alice@example.com",
            "password": PASSWORD,
            "display_name": "爱丽丝 Alice",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["location"], "/api/users/me");
    let user: serde_json::Value = response.json().await.unwrap();
    assert_eq!(user["username"], "alice");
    assert_eq!(user["display_name"], "爱丽丝 Alice");
    assert_eq!(user["roles"], json!(["user"]));
    assert!(user.get("password_hash").is_none(), "{user}");

    let tokens = app.login("alice", PASSWORD).await;
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 900);
    assert_eq!(tokens["scope"], "prompts:read prompts:write");
    assert!(refresh_token(&tokens).starts_with("pfr_"));

    let (status, me) = app.get("/api/users/me", Some(&token(&tokens))).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["id"], user["id"]);
    assert_eq!(me["email"], "alice@example.com");

    let (status, body) = app.get("/api/users/me", None).await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
}

async fn login_by_email_any_case(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("bob").await;
    for login in [
        json!({ "email": "BOB@example.com", "password": PASSWORD }),
        json!({ "login": "bob@EXAMPLE.com", "password": PASSWORD }),
        json!({ "username": "Bob", "password": PASSWORD }),
    ] {
        let (status, body) = app.post("/api/auth/login", None, login.clone()).await;
        assert_eq!(status, StatusCode::OK, "{login}: {body}");
        assert_eq!(body["user"]["username"], "bob");
    }
}

async fn registration_is_validated_and_changes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (status, body) = app
        .post(
            "/api/auth/register",
            None,
            json!({ "username": "x!", "email": "not-an-email", "password": "short" }),
        )
        .await;
    assert_problem(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation-failed",
    );
    let mut fields = invalid_fields(&body);
    fields.sort();
    assert_eq!(fields, ["email", "password", "username"]);

    let (status, body) = app
        .post(
            "/api/auth/register",
            None,
            json!({ "username": "carol", "password": PASSWORD }),
        )
        .await;
    assert_problem(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation-failed",
    );
    assert!(body["detail"].as_str().unwrap().contains("email"), "{body}");

    // Nothing of the refused attempts remains: the name is free and login fails.
    let (status, _) = app
        .post(
            "/api/auth/login",
            None,
            json!({ "username": "carol", "password": PASSWORD }),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    app.register("carol").await;
}

async fn duplicates_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("dave").await;
    let (status, body) = app
        .post(
            "/api/auth/register",
            None,
            json!({ "username": "DAVE", "email": "other@example.com", "password": PASSWORD }),
        )
        .await;
    assert_problem(status, &body, StatusCode::CONFLICT, "username-taken");
    let (status, body) = app
        .post(
            "/api/auth/register",
            None,
            json!({ "username": "dave2", "email": "Dave@Example.com", "password": PASSWORD }),
        )
        .await;
    assert_problem(status, &body, StatusCode::CONFLICT, "email-taken");
    // The refused registrations left the first account as it was.
    let tokens = app.login("dave", PASSWORD).await;
    assert_eq!(tokens["user"]["email"], "dave@example.com");
}

async fn wrong_password_and_unknown_account_look_the_same(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("erin").await;
    let (s1, b1) = app
        .post(
            "/api/auth/login",
            None,
            json!({ "username": "erin", "password": "wrong password" }),
        )
        .await;
    let (s2, b2) = app
        .post(
            "/api/auth/login",
            None,
            json!({ "username": "nobody", "password": "wrong password" }),
        )
        .await;
    assert_problem(s1, &b1, StatusCode::UNAUTHORIZED, "invalid-credentials");
    assert_eq!(
        (s1, &b1),
        (s2, &b2),
        "the answer must not tell whether the account exists"
    );
}

async fn failed_logins_for_an_account_are_slowed_down(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        s.login_throttle.account_free_failures = 3;
        s.login_throttle.address_free_failures = 100;
    })
    .await;
    app.register("frank").await;
    for target in ["frank", "ghost"] {
        for _ in 0..4 {
            let (status, body) = app
                .post(
                    "/api/auth/login",
                    None,
                    json!({ "username": target, "password": "bad password" }),
                )
                .await;
            assert_problem(
                status,
                &body,
                StatusCode::UNAUTHORIZED,
                "invalid-credentials",
            );
        }
        // Blocked now: even the right password waits, for a real and an unknown account alike.
        let response = app
            .request(reqwest::Method::POST, "/api/auth/login", None)
            .json(&json!({ "username": target, "password": PASSWORD }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS, "{target}");
        let retry: u64 = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=3).contains(&retry), "{retry}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(
            body["type"],
            "https://promptflow.dev/problems/too-many-requests"
        );
    }
    // Another account from the same address is not affected.
    app.register("grace").await;
    app.login("grace", PASSWORD).await;
    // After the block, the right password works and clears the count.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    app.login("frank", PASSWORD).await;
    let (status, _) = app
        .post(
            "/api/auth/login",
            None,
            json!({ "username": "frank", "password": "bad password" }),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the count started afresh");
}

async fn failed_logins_from_an_address_are_slowed_down(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        s.login_throttle.account_free_failures = 100;
        s.login_throttle.address_free_failures = 4;
    })
    .await;
    app.register("heidi").await;
    for i in 0..5 {
        let (status, _) = app
            .post(
                "/api/auth/login",
                None,
                json!({ "username": format!("user{i}"), "password": "bad password" }),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, body) = app
        .post(
            "/api/auth/login",
            None,
            json!({ "username": "heidi", "password": PASSWORD }),
        )
        .await;
    assert_problem(
        status,
        &body,
        StatusCode::TOO_MANY_REQUESTS,
        "too-many-requests",
    );
    // A client behind the trusted gateway is told apart by X-Forwarded-For.
    let response = app
        .request(reqwest::Method::POST, "/api/auth/login", None)
        .header("x-forwarded-for", "203.0.113.9")
        .json(&json!({ "username": "heidi", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

async fn refresh_rotates_and_reuse_revokes_the_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, first) = app.signed_up("ivan").await;
    let old_refresh = refresh_token(&first);

    let (status, second) = app
        .post(
            "/api/auth/refresh",
            None,
            json!({ "refresh_token": old_refresh }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_ne!(refresh_token(&second), old_refresh, "rotated on use");
    assert_eq!(second["session_id"], first["session_id"]);
    let (status, _) = app.get("/api/users/me", Some(&token(&second))).await;
    assert_eq!(status, StatusCode::OK);

    // The old token again: stolen. The whole session goes, the new token with it.
    let (status, body) = app
        .post(
            "/api/auth/refresh",
            None,
            json!({ "refresh_token": old_refresh }),
        )
        .await;
    assert_problem(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "refresh-token-reused",
    );
    let (status, body) = app
        .post(
            "/api/auth/refresh",
            None,
            json!({ "refresh_token": refresh_token(&second) }),
        )
        .await;
    assert_problem(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "invalid-refresh-token",
    );
    let (status, _) = app.get("/api/users/me", Some(&token(&second))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, body) = app
        .post(
            "/api/auth/refresh",
            None,
            json!({ "refresh_token": "pfr_madeup" }),
        )
        .await;
    assert_problem(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "invalid-refresh-token",
    );
}

async fn logout_ends_the_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (access, tokens) = app.signed_up("judy").await;
    let response = app
        .request(reqwest::Method::POST, "/api/auth/logout", Some(&access))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let (status, _) = app.get("/api/users/me", Some(&access)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = app
        .post(
            "/api/auth/refresh",
            None,
            json!({ "refresh_token": refresh_token(&tokens) }),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // With only the refresh token (an app whose access token expired).
    let tokens = app.login("judy", PASSWORD).await;
    let (status, _) = app
        .post(
            "/api/auth/logout",
            None,
            json!({ "refresh_token": refresh_token(&tokens) }),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app.get("/api/users/me", Some(&token(&tokens))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, body) = app.post("/api/auth/logout", None, json!({})).await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
}

async fn disabled_user_is_locked_out_at_once(backend: Backend) {
    let app = TestApp::spawn_with(backend, with_admin).await;
    let admin = token(&app.login("root", PASSWORD).await);
    let (access, tokens) = app.signed_up("mallory").await;
    let id = tokens["user"]["id"].as_str().unwrap().to_owned();

    let (status, body) = app
        .post(&format!("/api/users/{id}/disable"), Some(&admin), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "disabled");

    let (status, body) = app
        .post(
            "/api/auth/refresh",
            None,
            json!({ "refresh_token": refresh_token(&tokens) }),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "refresh fails at once: {body}"
    );
    let (status, body) = app.get("/api/users/me", Some(&access)).await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, "account-disabled");
    let (status, body) = app
        .post(
            "/api/auth/login",
            None,
            json!({ "username": "mallory", "password": PASSWORD }),
        )
        .await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, "account-disabled");
    // A wrong password still says only that the credentials are wrong.
    let (status, _) = app
        .post(
            "/api/auth/login",
            None,
            json!({ "username": "mallory", "password": "not it at all" }),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, _) = app
        .post(&format!("/api/users/{id}/enable"), Some(&admin), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    app.login("mallory", PASSWORD).await;
}
