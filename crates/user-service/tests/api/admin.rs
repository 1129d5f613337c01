//! Administration: the first admin from settings, listing users in pages, roles, disabling.

use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;
use testkit::on_both_backends;

on_both_backends!(
    first_admin_comes_from_settings_not_from_registering_first,
    users_are_listed_in_cursor_pages,
    roles_are_changed_and_take_effect_on_next_login,
    the_last_admin_cannot_be_removed,
    admin_calls_are_refused_to_users_and_unknown_ids,
);

async fn first_admin_comes_from_settings_not_from_registering_first(backend: Backend) {
    let plain = TestApp::spawn(backend).await;
    let (first, tokens) = plain.signed_up("early-bird").await;
    assert_eq!(tokens["user"]["roles"], json!(["user"]));
    let (status, _) = plain.get("/api/users", Some(&first)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let app = TestApp::spawn_with(backend, with_admin).await;
    let tokens = app.login("root", PASSWORD).await;
    assert_eq!(tokens["user"]["roles"], json!(["user", "admin"]));
    assert_eq!(tokens["scope"], "prompts:read prompts:write users:admin");
    // Restarting with the same setting creates nothing twice.
    let again = app.replica(|_| {}).await;
    let (_, page) = again.get("/api/users", Some(&token(&tokens))).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1, "{page}");
}

async fn users_are_listed_in_cursor_pages(backend: Backend) {
    let app = TestApp::spawn_with(backend, with_admin).await;
    let admin = token(&app.login("root", PASSWORD).await);
    for i in 0..6 {
        app.register(&format!("member{i}")).await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/users?limit=3&cursor={c}"),
            None => "/api/users?limit=3".to_owned(),
        };
        let (status, page) = app.get(&path, Some(&admin)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        pages += 1;
        for user in page["items"].as_array().unwrap() {
            seen.push(user["username"].as_str().unwrap().to_owned());
        }
        // A user registering between pages shows up later, not twice.
        if pages == 1 {
            app.register("latecomer").await;
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 8, "{seen:?}");
    assert_eq!(
        seen.iter().collect::<HashSet<_>>().len(),
        8,
        "no duplicates"
    );
    assert_eq!(seen.first().map(String::as_str), Some("root"));
    assert_eq!(seen.last().map(String::as_str), Some("latecomer"));

    let (_, found) = app.get("/api/users?q=MEMBER3", Some(&admin)).await;
    assert_eq!(found["items"][0]["username"], "member3");
    assert_eq!(found["items"].as_array().unwrap().len(), 1);

    for bad in [
        "/api/users?limit=0",
        "/api/users?limit=1000",
        "/api/users?cursor=%%%",
        "/api/users?limit=abc",
    ] {
        let (status, body) = app.get(bad, Some(&admin)).await;
        assert_problem(
            status,
            &body,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation-failed",
        );
    }
}

async fn roles_are_changed_and_take_effect_on_next_login(backend: Backend) {
    let app = TestApp::spawn_with(backend, with_admin).await;
    let admin = token(&app.login("root", PASSWORD).await);
    let (user_token, tokens) = app.signed_up("ivy").await;
    let id = tokens["user"]["id"].as_str().unwrap();
    let (status, body) = app
        .put(
            &format!("/api/users/{id}/roles"),
            Some(&admin),
            json!({ "roles": ["admin"] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["roles"], json!(["user", "admin"]));
    // Her old token does not carry the admin scope.
    let (status, _) = app.get("/api/users", Some(&user_token)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let fresh = app.login("ivy", PASSWORD).await;
    assert_eq!(fresh["scope"], "prompts:read prompts:write users:admin");
    let (status, _) = app.get("/api/users", Some(&token(&fresh))).await;
    assert_eq!(status, StatusCode::OK);

    // Demoted: her admin token stops working at once, scope or not.
    let (status, _) = app
        .put(
            &format!("/api/users/{id}/roles"),
            Some(&admin),
            json!({ "roles": ["user"] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app.get("/api/users", Some(&token(&fresh))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (status, body) = app
        .put(
            &format!("/api/users/{id}/roles"),
            Some(&admin),
            json!({ "roles": ["superuser"] }),
        )
        .await;
    assert_problem(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation-failed",
    );
}

async fn the_last_admin_cannot_be_removed(backend: Backend) {
    let app = TestApp::spawn_with(backend, with_admin).await;
    let tokens = app.login("root", PASSWORD).await;
    let admin = token(&tokens);
    let id = tokens["user"]["id"].as_str().unwrap();
    let (status, body) = app
        .put(
            &format!("/api/users/{id}/roles"),
            Some(&admin),
            json!({ "roles": ["user"] }),
        )
        .await;
    assert_problem(status, &body, StatusCode::CONFLICT, "last-admin");
    let (status, body) = app
        .post(&format!("/api/users/{id}/disable"), Some(&admin), json!({}))
        .await;
    assert_problem(status, &body, StatusCode::CONFLICT, "last-admin");
    let (status, _) = app.get("/api/users", Some(&admin)).await;
    assert_eq!(status, StatusCode::OK, "still an admin");
}

async fn admin_calls_are_refused_to_users_and_unknown_ids(backend: Backend) {
    let app = TestApp::spawn_with(backend, with_admin).await;
    let admin = token(&app.login("root", PASSWORD).await);
    let (user, tokens) = app.signed_up("jack").await;
    let id = tokens["user"]["id"].as_str().unwrap();
    for (status, body) in [
        app.get("/api/users", Some(&user)).await,
        app.get(&format!("/api/users/{id}"), Some(&user)).await,
        app.post(&format!("/api/users/{id}/disable"), Some(&user), json!({}))
            .await,
        app.put(
            &format!("/api/users/{id}/roles"),
            Some(&user),
            json!({ "roles": ["admin"] }),
        )
        .await,
    ] {
        assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
    }
    let (_, me) = app.get("/api/users/me", Some(&user)).await;
    assert_eq!(me["roles"], json!(["user"]), "nothing changed");

    let unknown = uuid::Uuid::now_v7();
    for (status, body) in [
        app.get(&format!("/api/users/{unknown}"), Some(&admin))
            .await,
        app.post(
            &format!("/api/users/{unknown}/disable"),
            Some(&admin),
            json!({}),
        )
        .await,
        app.get("/api/users/12345", Some(&admin)).await,
    ] {
        assert_problem(status, &body, StatusCode::NOT_FOUND, "not-found");
    }
    let (status, body) = app.get(&format!("/api/users/{id}"), Some(&admin)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["username"], "jack");
}
