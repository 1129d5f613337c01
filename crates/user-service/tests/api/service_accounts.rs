//! Service accounts and client-credentials tokens.

use reqwest::StatusCode;
use serde_json::json;
use user_service::settings::ServiceAccountSeed;

use crate::helpers::*;
use testkit::on_both_backends;

on_both_backends!(
    seeded_account_gets_tokens_by_form_basic_and_json,
    client_credential_refusals,
    admin_creates_and_disables_service_accounts,
);

const SECRET: &str = "a-long-service-secret-123";

fn with_indexer(settings: &mut user_service::Settings) {
    settings.service_accounts = vec![ServiceAccountSeed {
        client_id: "search-indexer".into(),
        client_secret: SECRET.into(),
        name: Some("Search indexer".into()),
        scopes: vec!["prompts:read".into()],
    }];
}

async fn seeded_account_gets_tokens_by_form_basic_and_json(backend: Backend) {
    let app = TestApp::spawn_with(backend, with_indexer).await;
    let form = app
        .request(reqwest::Method::POST, "/api/auth/token", None)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "search-indexer"),
            ("client_secret", SECRET),
        ]);
    let basic = app
        .request(reqwest::Method::POST, "/api/auth/token", None)
        .basic_auth("search-indexer", Some(SECRET))
        .form(&[("grant_type", "client_credentials")]);
    let json_body = app
        .request(reqwest::Method::POST, "/api/auth/token", None)
        .json(&json!({ "grant_type": "client_credentials", "client_id": "search-indexer", "client_secret": SECRET }));
    for req in [form, basic, json_body] {
        let (status, body) = send(req).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["scope"], "prompts:read");
        let access = body["access_token"].as_str().unwrap();
        let payload = access.split('.').nth(1).unwrap();
        use base64::Engine;
        let claims: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(claims["sub"], "service:search-indexer");
        assert!(claims.get("sid").is_none());
        // A service token is no user: the user's own endpoints refuse it.
        let (status, body) = app.get("/api/users/me", Some(access)).await;
        assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
    }
}

async fn client_credential_refusals(backend: Backend) {
    let app = TestApp::spawn_with(backend, with_indexer).await;
    let token_req = |body: serde_json::Value| app.post("/api/auth/token", None, body);
    let (status, body) = token_req(json!({ "grant_type": "client_credentials", "client_id": "search-indexer", "client_secret": "wrong-secret" })).await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "invalid-client");
    assert_eq!(body["error"], "invalid_client");
    let (status, body) = token_req(json!({ "grant_type": "client_credentials", "client_id": "nobody", "client_secret": SECRET })).await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "invalid-client");
    let (status, body) = token_req(
        json!({ "grant_type": "password", "client_id": "search-indexer", "client_secret": SECRET }),
    )
    .await;
    assert_problem(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "unsupported-grant-type",
    );
    let (status, body) = token_req(json!({ "grant_type": "client_credentials", "client_id": "search-indexer", "client_secret": SECRET, "scope": "prompts:read users:admin" })).await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST, "invalid-scope");
    let (status, body) = token_req(json!({ "grant_type": "client_credentials" })).await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "invalid-client");
    let (status, body) = send(
        app.request(reqwest::Method::POST, "/api/auth/token", None)
            .header("content-type", "text/plain")
            .body("grant_type=client_credentials"),
    )
    .await;
    assert_problem(
        status,
        &body,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
    );
}

async fn admin_creates_and_disables_service_accounts(backend: Backend) {
    let app = TestApp::spawn_with(backend, with_admin).await;
    let admin = token(&app.login("root", PASSWORD).await);
    let (status, created) = app
        .post(
            "/api/users/service-accounts",
            Some(&admin),
            json!({ "client_id": "importer", "name": "Nightly importer", "scopes": ["prompts:write", "prompts:read"] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let secret = created["client_secret"].as_str().unwrap().to_owned();
    assert_eq!(created["scopes"], json!(["prompts:read", "prompts:write"]));

    let (_, list) = app.get("/api/users/service-accounts", Some(&admin)).await;
    assert_eq!(list[0]["client_id"], "importer");
    assert!(
        list[0].get("client_secret").is_none() && list[0].get("secret_hash").is_none(),
        "{list}"
    );

    let (status, body) = app
        .post(
            "/api/users/service-accounts",
            Some(&admin),
            json!({ "client_id": "importer", "scopes": ["prompts:read"] }),
        )
        .await;
    assert_problem(status, &body, StatusCode::CONFLICT, "client-id-taken");
    let (status, body) = app
        .post(
            "/api/users/service-accounts",
            Some(&admin),
            json!({ "client_id": "bad one", "scopes": ["root"] }),
        )
        .await;
    assert_problem(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation-failed",
    );

    let creds = json!({ "grant_type": "client_credentials", "client_id": "importer", "client_secret": secret });
    let (status, _) = app.post("/api/auth/token", None, creds.clone()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app
        .delete("/api/users/service-accounts/importer", Some(&admin))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = app.post("/api/auth/token", None, creds).await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "invalid-client");
    let (status, _) = app
        .delete("/api/users/service-accounts/importer", Some(&admin))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
