//! Bad input of every kind: each gets a clear problem, none a 5xx, and none changes anything.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::*;
use testkit::on_both_backends;

on_both_backends!(
    malformed_bodies_get_clear_problems,
    hostile_strings_are_refused_or_stored_verbatim,
    no_input_makes_a_server_error,
);

async fn malformed_bodies_get_clear_problems(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let raw = |body: &'static str, content_type: &'static str| {
        app.request(Method::POST, "/api/auth/register", None)
            .header("content-type", content_type)
            .body(body)
    };
    let (status, body) = send(raw("{\"username\": \"a\",", "application/json")).await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST, "malformed-request");
    let (status, body) = send(raw("{}", "text/plain")).await;
    assert_problem(
        status,
        &body,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
    );
    let (status, body) = send(
        app.request(Method::POST, "/api/auth/register", None)
            .body("{}"),
    )
    .await;
    assert_problem(
        status,
        &body,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
    );
    let (status, body) = send(raw(
        r#"{"username": ["a"], "email": "a@b.co", "password": "12345678"}"#,
        "application/json",
    ))
    .await;
    assert_problem(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation-failed",
    );
    assert_eq!(invalid_fields(&body), ["username"]);
    let (status, body) = send(raw(
        r#"{"username": "abc", "email": "a@b.co", "password": "12345678", "is_admin": true}"#,
        "application/json",
    ))
    .await;
    assert_problem(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation-failed",
    );
    assert!(
        body["detail"].as_str().unwrap().contains("is_admin"),
        "{body}"
    );

    // Over the body limit (64 KiB in tests), with and without a length up front.
    let big =
        json!({ "username": "big", "email": "big@example.com", "password": "x".repeat(70_000) });
    let (status, body) = app.post("/api/auth/register", None, big.clone()).await;
    assert_problem(
        status,
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload-too-large",
    );
    assert_eq!(body["limit_bytes"], 64 * 1024);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![
        Ok(big.to_string().into_bytes()[..40_000].to_vec()),
        Ok(big.to_string().into_bytes()[40_000..].to_vec()),
    ];
    let stream = futures_util::stream::iter(chunks);
    let (status, body) = send(
        app.request(Method::POST, "/api/auth/register", None)
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(stream)),
    )
    .await;
    assert_problem(
        status,
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload-too-large",
    );

    // Deeply nested JSON is refused, not recursed into.
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let (status, _) = send(
        app.request(Method::POST, "/api/auth/login", None)
            .header("content-type", "application/json")
            .body(deep),
    )
    .await;
    assert!(status == StatusCode::BAD_REQUEST || status == StatusCode::UNPROCESSABLE_ENTITY);

    // Invalid UTF-8.
    let (status, body) = send(
        app.request(Method::POST, "/api/auth/login", None)
            .header("content-type", "application/json")
            .body(vec![b'{', b'"', 0xff, 0xfe, b'"', b':', b'1', b'}']),
    )
    .await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST, "malformed-request");

    // None of it registered anyone.
    let (status, _) = app
        .post(
            "/api/auth/login",
            None,
            json!({ "username": "big", "password": "x".repeat(100) }),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

async fn hostile_strings_are_refused_or_stored_verbatim(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for username in [
        "robert'); DROP TABLE users;--",
        "<script>alert(1)</script>",
        "admin\u{0000}",
        "ａｄｍｉｎ",
        "../../etc/passwd",
        "a\u{202E}nimda",
    ] {
        let (status, body) = app
            .post(
                "/api/auth/register",
                None,
                json!({ "username": username, "email": "h@example.com", "password": PASSWORD }),
            )
            .await;
        assert_problem(
            status,
            &body,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation-failed",
        );
    }
    // Text that is allowed is kept exactly, quotes and markup included, never interpreted.
    let (access, _) = app.signed_up("quoter").await;
    let bio = "it's \"quoted\"; DROP TABLE users; -- <b>bold</b> 百分之百 %_\\";
    let (status, me) = app
        .patch("/api/users/me", Some(&access), json!({ "bio": bio }))
        .await;
    assert_eq!(status, StatusCode::OK, "{me}");
    let (_, me) = app.get("/api/users/me", Some(&access)).await;
    assert_eq!(me["bio"], bio);
    // A LIKE wildcard in a search matches itself, not everything.
    app.register("with_underscore").await;
    let admin_app = app.replica(with_admin).await;
    let admin = token(&admin_app.login("root", PASSWORD).await);
    let (_, page) = admin_app.get("/api/users?q=%25", Some(&admin)).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 0, "{page}");
}

async fn no_input_makes_a_server_error(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (access, _) = app.signed_up("fuzzer").await;
    let routes = [
        (Method::POST, "/api/auth/register"),
        (Method::POST, "/api/auth/login"),
        (Method::POST, "/api/auth/refresh"),
        (Method::POST, "/api/auth/logout"),
        (Method::POST, "/api/auth/token"),
        (Method::PATCH, "/api/users/me"),
        (Method::POST, "/api/users/me/password"),
        (
            Method::PUT,
            "/api/users/00000000-0000-0000-0000-000000000000/roles",
        ),
    ];
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("application/json", b"null".to_vec()),
        ("application/json", b"[]".to_vec()),
        ("application/json", b"\"string\"".to_vec()),
        (
            "application/json",
            b"{\"username\": null, \"password\": null}".to_vec(),
        ),
        ("application/json", b"{\"refresh_token\": 12}".to_vec()),
        (
            "application/json",
            br#"{"username": "a", "password": "b", "device": {"type": "toaster"}}"#.to_vec(),
        ),
        (
            "application/json",
            br#"{"login": "x@y.z", "password": "p", "device": {"id": ""}}"#.to_vec(),
        ),
        (
            "application/json",
            br#"{"grant_type": "client_credentials", "client_id": "x", "client_secret": "y"}"#
                .to_vec(),
        ),
        (
            "application/json",
            format!(
                "{{\"username\": \"{}\", \"password\": \"x\"}}",
                "a".repeat(5000)
            )
            .into_bytes(),
        ),
        (
            "application/x-www-form-urlencoded",
            b"grant_type=client_credentials&client_id=%ff".to_vec(),
        ),
        ("application/json", vec![0, 1, 2, 3]),
        ("multipart/form-data; boundary=x", b"--x--".to_vec()),
    ];
    for (method, path) in routes {
        for (content_type, body) in &bodies {
            for auth in [None, Some(access.as_str()), Some("Bearer-not-a-jwt")] {
                let (status, problem) = send(
                    app.request(method.clone(), path, auth)
                        .header("content-type", *content_type)
                        .body(body.clone()),
                )
                .await;
                assert!(
                    !status.is_server_error(),
                    "{method} {path} {content_type} {:?}: {status} {problem}",
                    String::from_utf8_lossy(body)
                );
            }
        }
    }
    // Still whole afterwards (the fuzzing logged the session out, so log in again).
    let access = token(&app.login("fuzzer", PASSWORD).await);
    let (status, me) = app.get("/api/users/me", Some(&access)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["roles"], json!(["user"]));
}
