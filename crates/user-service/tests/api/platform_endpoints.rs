//! What every service has: health, readiness, metrics, request ids, problems for unknown
//! routes, and a graceful shutdown.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::*;
use testkit::on_both_backends;

on_both_backends!(
    health_and_readiness,
    metrics_count_requests_by_route_and_report_memory,
    request_ids_are_kept_or_made,
    unknown_routes_and_methods_are_problems,
    shutdown_finishes_requests_in_flight,
);

async fn health_and_readiness(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (status, body) = app.get("/health", None).await;
    assert_eq!((status, body), (StatusCode::OK, json!({ "status": "UP" })));
    let (status, body) = app.get("/health/ready", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["checks"]["database"]["status"], "UP");
}

async fn metrics_count_requests_by_route_and_report_memory(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("counted").await;
    let (status, _) = app
        .post(
            "/api/auth/login",
            None,
            json!({ "username": "counted", "password": "wrong guess" }),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("http_server_requests_total{")
                && l.contains("route=\"/api/auth/login\"")
                && l.contains("status=\"401\"")
                && l.contains("method=\"POST\"")),
        "{text}"
    );
    assert!(
        text.contains("http_server_request_duration_seconds_bucket{"),
        "{text}"
    );
    let rss = text
        .lines()
        .find(|l| l.starts_with("process_resident_memory_bytes "))
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .expect("resident memory reported");
    assert!(rss > 1_000_000.0, "{rss}");
}

async fn request_ids_are_kept_or_made(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app
        .request(Method::GET, "/health", None)
        .header("x-request-id", "client-chosen-42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "client-chosen-42");
    let response = app
        .request(Method::GET, "/health", None)
        .send()
        .await
        .unwrap();
    let made = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(uuid::Uuid::parse_str(&made).is_ok(), "{made}");
    let response = app
        .request(Method::GET, "/health", None)
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    let replaced = response.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(replaced).is_ok(), "{replaced}");
}

async fn unknown_routes_and_methods_are_problems(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (status, body) = app.get("/api/nothing-here", None).await;
    assert_problem(status, &body, StatusCode::NOT_FOUND, "not-found");
    let (status, body) = app.delete("/api/auth/login", None).await;
    assert_problem(
        status,
        &body,
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
    );
}

async fn shutdown_finishes_requests_in_flight(backend: Backend) {
    let mut app = TestApp::spawn(backend).await;
    app.register("leaving").await;
    // Logins take a while (Argon2); stop the server while several are running.
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let req = app
                .request(Method::POST, "/api/auth/login", None)
                .json(&json!({ "username": "leaving", "password": PASSWORD }));
            tokio::spawn(async move { req.send().await.map(|r| r.status()) })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(15)).await;
    let shutdown = app.shutdown_token();
    let task = app.take_task().unwrap();
    shutdown.cancel();
    for call in calls {
        let status = call
            .await
            .unwrap()
            .expect("an answer, not a dropped connection");
        assert_eq!(status, StatusCode::OK);
    }
    task.await.unwrap().unwrap();
    assert!(
        app.client.get(app.url("/health")).send().await.is_err(),
        "no longer listening"
    );
    app.stop().await;
}
