//! The caller's own profile and password.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;
use testkit::on_both_backends;

on_both_backends!(
    profile_is_updated_and_cleared,
    bad_profile_changes_change_nothing,
    password_change_revokes_other_sessions,
    password_change_refusals,
);

async fn profile_is_updated_and_cleared(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (access, _) = app.signed_up("alice").await;
    let (status, me) = app
        .patch(
            "/api/users/me",
            Some(&access),
            json!({
                "display_name": "张三 Zhang",
                "avatar_url": "https://cdn.example.com/a.png",
                "bio": "写提示词的人\nprompt engineer",
                "preferences": { "theme": "dark", "editor": { "font": 14, "wrap": true } },
            }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["display_name"], "张三 Zhang");
    assert_eq!(me["bio"], "写提示词的人\nprompt engineer");

    let (status, me) = app
        .patch(
            "/api/users/me",
            Some(&access),
            json!({ "avatar_url": null, "preferences": { "theme": null, "editor": { "font": 16 } } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["avatar_url"], serde_json::Value::Null);
    assert_eq!(me["display_name"], "张三 Zhang", "absent fields stay");
    assert_eq!(
        me["preferences"],
        json!({ "editor": { "font": 16, "wrap": true } })
    );

    let (_, again) = app.get("/api/users/me", Some(&access)).await;
    assert_eq!(again, me, "what was answered is what was stored");
}

async fn bad_profile_changes_change_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (access, _) = app.signed_up("bob").await;
    let (_, before) = app.get("/api/users/me", Some(&access)).await;
    for (body, field) in [
        (
            json!({ "avatar_url": "javascript:alert(1)", "display_name": "ok" }),
            "avatar_url",
        ),
        (
            json!({ "display_name": "evil\u{202E}gnp.exe" }),
            "display_name",
        ),
        (json!({ "display_name": "x".repeat(65) }), "display_name"),
        (json!({ "bio": "a\u{0007}b" }), "bio"),
        (json!({ "preferences": [1, 2] }), "preferences"),
        (
            json!({ "preferences": { "big": "x".repeat(17 * 1024) } }),
            "preferences",
        ),
        (json!({ "display_name": 42 }), "display_name"),
        (json!({ "role": "admin" }), ""),
    ] {
        let (status, problem) = app
            .patch("/api/users/me", Some(&access), body.clone())
            .await;
        assert_problem(
            status,
            &problem,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation-failed",
        );
        if !field.is_empty() {
            assert!(
                invalid_fields(&problem).contains(&field.to_owned()),
                "{body}: {problem}"
            );
        }
    }
    let (_, after) = app.get("/api/users/me", Some(&access)).await;
    assert_eq!(before, after);
}

async fn password_change_revokes_other_sessions(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (access, _) = app.signed_up("carol").await;
    let other = app
        .login_device("carol", PASSWORD, json!({ "id": "other" }))
        .await;
    let (status, body) = app
        .post(
            "/api/users/me/password",
            Some(&access),
            json!({ "current_password": PASSWORD, "new_password": "a much better secret" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["revoked_sessions"], 1);
    let (status, _) = app.get("/api/users/me", Some(&token(&other))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "other sessions end");
    let (status, _) = app.get("/api/users/me", Some(&access)).await;
    assert_eq!(status, StatusCode::OK, "this session stays");
    let (status, _) = app
        .post(
            "/api/auth/login",
            None,
            json!({ "username": "carol", "password": PASSWORD }),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    app.login("carol", "a much better secret").await;
}

async fn password_change_refusals(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (access, _) = app.signed_up("dave").await;
    let (status, body) = app
        .post(
            "/api/users/me/password",
            Some(&access),
            json!({ "current_password": "not my password", "new_password": "a much better secret" }),
        )
        .await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, "wrong-password");
    let (status, body) = app
        .post(
            "/api/users/me/password",
            Some(&access),
            json!({ "current_password": PASSWORD, "new_password": "short" }),
        )
        .await;
    assert_problem(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation-failed",
    );
    let (status, _) = app
        .post(
            "/api/users/me/password",
            None,
            json!({ "current_password": PASSWORD, "new_password": "x".repeat(20) }),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // The password is unchanged.
    app.login("dave", PASSWORD).await;
}
