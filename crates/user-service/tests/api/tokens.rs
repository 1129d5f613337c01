//! Access tokens: what they carry, which ones are refused, and key rotation.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use platform::settings::DatabaseSettings;
use reqwest::StatusCode;
use serde_json::{Value, json};
use user_service::storage::Store;

use crate::helpers::*;
use testkit::on_both_backends;

on_both_backends!(
    access_token_carries_the_documented_claims,
    tampered_and_forged_tokens_are_refused,
    expired_token_is_refused,
    token_for_another_audience_is_refused,
    rotation_keeps_everyone_logged_in,
    a_replica_learns_a_rotated_key_at_once,
);

fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn header_of(token: &str) -> Value {
    let header = token.split('.').next().unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap()
}

/// Signs `claims` with the service's own current signing key, read from its database.
async fn sign_with_service_key(app: &TestApp, claims: &Value) -> String {
    let db = platform::db::connect(&app.database_url, &DatabaseSettings::default())
        .await
        .unwrap();
    let keys = Store::new(db)
        .published_keys(chrono::Utc::now())
        .await
        .unwrap();
    let key = keys.iter().find(|k| k.retired_at.is_none()).unwrap();
    let der = STANDARD.decode(&key.private_key).unwrap();
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(&der)).unwrap()
}

async fn access_token_carries_the_documented_claims(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (access, tokens) = app.signed_up("alice").await;
    let header = header_of(&access);
    assert_eq!(header["alg"], "EdDSA");
    let (_, jwks) = app.get("/.well-known/jwks.json", None).await;
    assert_eq!(header["kid"], jwks["keys"][0]["kid"]);
    let claims = claims_of(&access);
    for claim in [
        "iss", "aud", "sub", "sid", "roles", "scope", "exp", "iat", "jti",
    ] {
        assert!(!claims[claim].is_null(), "{claim} missing: {claims}");
    }
    assert_eq!(claims["sub"], tokens["user"]["id"]);
    assert_eq!(claims["sid"], tokens["session_id"]);
    assert_eq!(claims["roles"], json!(["user"]));
    assert_eq!(claims["scope"], "prompts:read prompts:write");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        15 * 60
    );
    // The JWKS publishes public keys only.
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    assert_eq!(key["alg"], "EdDSA");
    assert!(key.get("d").is_none(), "no private part: {key}");
}

async fn tampered_and_forged_tokens_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (access, _) = app.signed_up("bob").await;
    let (_, carol) = app.signed_up("carol").await;
    let parts: Vec<&str> = access.split('.').collect();

    // Payload swapped for carol's, signature kept.
    let mut claims = claims_of(&access);
    claims["sub"] = carol["user"]["id"].clone();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        parts[2]
    );
    // `alg: none`, no signature.
    let none_header = URL_SAFE_NO_PAD.encode(
        json!({ "alg": "none", "typ": "JWT", "kid": header_of(&access)["kid"] }).to_string(),
    );
    let alg_none = format!("{none_header}.{}.", parts[1]);
    // HS256 with the public key as the secret (the classic key-confusion attack).
    let (_, jwks) = app.get("/.well-known/jwks.json", None).await;
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = header_of(&access)["kid"].as_str().map(str::to_owned);
    let confused = jsonwebtoken::encode(
        &hs,
        &claims_of(&access),
        &EncodingKey::from_secret(jwks["keys"][0]["x"].as_str().unwrap().as_bytes()),
    )
    .unwrap();
    // A key of our own, claiming the service's kid.
    let mut seed = [7u8; 32];
    seed[0] = 1;
    let own = ed25519_dalek::SigningKey::from_bytes(&seed);
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    let der = own.to_pkcs8_der().unwrap();
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = header_of(&access)["kid"].as_str().map(str::to_owned);
    let forged = jsonwebtoken::encode(
        &header,
        &claims_of(&access),
        &EncodingKey::from_ed_der(der.as_bytes()),
    )
    .unwrap();
    header.kid = Some("made-up-kid".into());
    let unknown_kid = jsonwebtoken::encode(
        &header,
        &claims_of(&access),
        &EncodingKey::from_ed_der(der.as_bytes()),
    )
    .unwrap();

    for (what, bad) in [
        ("tampered", tampered),
        ("alg none", alg_none),
        ("hs256 confusion", confused),
        ("forged", forged),
        ("unknown kid", unknown_kid),
        ("garbage", "not.a.token".to_owned()),
        ("empty", String::new()),
    ] {
        let (status, body) = app.get("/api/users/me", Some(&bad)).await;
        assert_problem(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
        assert!(
            body["detail"].is_string(),
            "{what}: the refusal says why: {body}"
        );
    }
    let response = app
        .request(reqwest::Method::GET, "/api/users/me", None)
        .header("authorization", format!("Basic {access}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().contains_key("www-authenticate"));
}

async fn expired_token_is_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (access, _) = app.signed_up("dave").await;
    let mut claims = claims_of(&access);
    let now = chrono::Utc::now().timestamp();
    claims["iat"] = json!(now - 1000);
    claims["exp"] = json!(now - 60);
    let expired = sign_with_service_key(&app, &claims).await;
    let (status, body) = app.get("/api/users/me", Some(&expired)).await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(
        body["detail"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    // The same claims, still in date and signed the same way, pass: the refusal was the date.
    claims["exp"] = json!(now + 60);
    let fresh = sign_with_service_key(&app, &claims).await;
    let (status, _) = app.get("/api/users/me", Some(&fresh)).await;
    assert_eq!(status, StatusCode::OK);
}

async fn token_for_another_audience_is_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let other = app
        .replica(|s| s.audience = "some-other-system".into())
        .await;
    let (access, _) = app.signed_up("erin").await;
    let (status, body) = other.get("/api/users/me", Some(&access)).await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(
        body["detail"].as_str().unwrap().contains("not meant"),
        "{body}"
    );
    let third = app.replica(|s| s.issuer = "someone-else".into()).await;
    let (status, _) = third.get("/api/users/me", Some(&access)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

async fn rotation_keeps_everyone_logged_in(backend: Backend) {
    let app = TestApp::spawn_with(backend, with_admin).await;
    let admin = token(&app.login("root", PASSWORD).await);
    let (before, _) = app.signed_up("frank").await;
    let old_kid = header_of(&before)["kid"].clone();

    let (status, body) = app
        .post("/api/auth/keys/rotate", Some(&admin), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_ne!(body["kid"], old_kid);
    let (_, jwks) = app.get("/.well-known/jwks.json", None).await;
    let kids: Vec<_> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].clone())
        .collect();
    assert!(
        kids.contains(&old_kid) && kids.contains(&body["kid"]),
        "{jwks}"
    );

    let (status, _) = app.get("/api/users/me", Some(&before)).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a token signed before rotation still works"
    );
    let after = token(&app.login("frank", PASSWORD).await);
    assert_eq!(header_of(&after)["kid"], body["kid"]);
    let (status, _) = app.get("/api/users/me", Some(&after)).await;
    assert_eq!(status, StatusCode::OK);

    let (user, _) = app.signed_up("grace").await;
    let (status, body) = app
        .post("/api/auth/keys/rotate", Some(&user), json!({}))
        .await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
}

async fn a_replica_learns_a_rotated_key_at_once(backend: Backend) {
    let app = TestApp::spawn_with(backend, with_admin).await;
    let replica = app.replica(|_| {}).await;
    let admin = token(&app.login("root", PASSWORD).await);
    let (status, _) = app
        .post("/api/auth/keys/rotate", Some(&admin), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    app.register("heidi").await;
    let fresh = token(&app.login("heidi", PASSWORD).await);
    // The replica has not reloaded yet; the unknown kid makes it look the key up.
    let (status, body) = replica.get("/api/users/me", Some(&fresh)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
