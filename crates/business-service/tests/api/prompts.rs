//! Prompts: the whole life of one, who may see it, and every refusal.

use reqwest::{Method, StatusCode};
use serde_json::json;
use testkit::on_both_backends;

use crate::helpers::*;

on_both_backends!(
    a_prompt_is_created_read_replaced_patched_trashed_and_restored,
    private_prompts_are_their_owners_alone,
    bad_prompts_are_refused_and_change_nothing,
    archive_favorite_and_usage,
    templates_render_with_variables_and_snippets,
    concurrent_patches_without_if_match_both_apply,
    trash_is_emptied_for_good_only_on_purpose,
);

async fn a_prompt_is_created_read_replaced_patched_trashed_and_restored(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.user("alice").await;
    let response = app
        .request(Method::POST, "/api/business/prompts", Some(&alice))
        .json(&json!({
            "title": "写邮件 Email writer",
            "content": "Write an email to {{recipient}} about {{topic|the project}} in a {{tone|friendly}} tone.",
            "description": "Drafts emails",
            "tags": ["email", "写作"],
            "category": "写作",
            "visibility": "private",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    let created: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        location,
        format!("/api/business/prompts/{}", created["id"].as_str().unwrap())
    );
    assert_eq!(created["etag"], etag);
    assert_eq!(created["version"], 1);
    assert_eq!(created["owner_id"], TestApp::user_id(&alice));
    assert_eq!(created["tags"], json!(["email", "写作"]));
    assert_eq!(
        created["variables"],
        json!([
            { "name": "recipient", "default": null, "required": true },
            { "name": "topic", "default": "the project", "required": false },
            { "name": "tone", "default": "friendly", "required": false },
        ])
    );

    let (status, got) = app.get(&location, &alice).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got, created);
    let not_modified = app
        .request(Method::GET, &location, Some(&alice))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(not_modified.status(), StatusCode::NOT_MODIFIED);

    // PUT needs If-Match, and the current one.
    let body =
        json!({ "title": "Email writer", "content": "Write to {{recipient}}.", "tags": ["email"] });
    let (status, problem) = send(
        app.request(Method::PUT, &location, Some(&alice))
            .json(&body),
    )
    .await;
    assert_problem(
        status,
        &problem,
        StatusCode::PRECONDITION_REQUIRED,
        "precondition-required",
    );
    let (status, replaced) = app.put(&location, &alice, &etag, body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{replaced}");
    assert_eq!(replaced["version"], 2);
    assert_eq!(
        replaced["category"],
        serde_json::Value::Null,
        "PUT replaces the whole prompt"
    );
    let (status, problem) = app
        .put(
            &location,
            &alice,
            &etag,
            json!({ "title": "lost", "content": "lost" }),
        )
        .await;
    assert_problem(
        status,
        &problem,
        StatusCode::PRECONDITION_FAILED,
        "stale-version",
    );
    assert_eq!(problem["current_etag"], replaced["etag"]);
    let (_, still) = app.get(&location, &alice).await;
    assert_eq!(
        still["title"], "Email writer",
        "a stale write changes nothing"
    );

    // A metadata change is a new revision but not a new version.
    let (status, patched) = app
        .patch(
            &location,
            &alice,
            json!({ "tags": ["email", "work"], "visibility": "public" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["version"], 2);
    assert_ne!(patched["etag"], replaced["etag"]);
    assert_eq!(patched["tags"], json!(["email", "work"]));

    let (status, _) = app.delete(&location, &alice).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, trashed) = app.get(&location, &alice).await;
    assert!(trashed["deleted_at"].is_string(), "{trashed}");
    let (_, list) = app.get("/api/business/prompts", &alice).await;
    assert_eq!(ids(&list).len(), 0);
    let (_, trash) = app
        .get("/api/business/prompts?status=deleted", &alice)
        .await;
    assert_eq!(
        ids(&trash),
        vec![created["id"].as_str().unwrap().to_owned()]
    );
    let (status, restored) = app
        .post(&format!("{location}/restore"), &alice, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{restored}");
    assert!(restored.get("deleted_at").is_none());
    let (_, list) = app.get("/api/business/prompts", &alice).await;
    assert_eq!(ids(&list).len(), 1);
}

async fn private_prompts_are_their_owners_alone(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let admin = app.admin().await;
    let private = app
        .prompt(&alice, json!({ "title": "secret", "content": "mine" }))
        .await;
    let unlisted = app
        .prompt(
            &alice,
            json!({ "title": "by link", "content": "shared", "visibility": "unlisted" }),
        )
        .await;
    let public = app
        .prompt(
            &alice,
            json!({ "title": "for all", "content": "everyone", "visibility": "public" }),
        )
        .await;
    let path =
        |p: &serde_json::Value| format!("/api/business/prompts/{}", p["id"].as_str().unwrap());

    // Another user: a private prompt does not exist for him, whatever he tries.
    for (status, body) in [
        app.get(&path(&private), &bob).await,
        app.patch(&path(&private), &bob, json!({ "title": "mine now" }))
            .await,
        app.put(
            &path(&private),
            &bob,
            "*",
            json!({ "title": "x", "content": "y" }),
        )
        .await,
        app.delete(&path(&private), &bob).await,
        app.post(&format!("{}/render", path(&private)), &bob, json!({}))
            .await,
        app.get(&format!("{}/versions", path(&private)), &bob).await,
    ] {
        assert_problem(status, &body, StatusCode::NOT_FOUND, "not-found");
    }
    // Unlisted and public: readable, not writable.
    for p in [&unlisted, &public] {
        let (status, _) = app.get(&path(p), &bob).await;
        assert_eq!(status, StatusCode::OK);
        let (status, body) = app
            .patch(&path(p), &bob, json!({ "title": "mine now" }))
            .await;
        assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
    }
    let (_, own) = app.get("/api/business/prompts", &bob).await;
    assert!(ids(&own).is_empty(), "bob's library is his own");
    let (_, catalogue) = app
        .get("/api/business/prompts?visibility=public", &bob)
        .await;
    assert_eq!(titles(&catalogue), ["for all"]);
    let alice_id = TestApp::user_id(&alice);
    let (_, shown) = app
        .get(&format!("/api/business/prompts?owner={alice_id}"), &bob)
        .await;
    assert_eq!(
        titles(&shown),
        ["for all"],
        "another's library shows its public prompts"
    );

    // The seed's ?userId=: one's own id, or any for an administrator.
    let (status, body) = app
        .get(&format!("/api/business/prompts?userId={alice_id}"), &bob)
        .await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
    let (status, mine) = app
        .get(&format!("/api/business/prompts?userId={alice_id}"), &alice)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids(&mine).len(), 3);
    let (status, all) = app
        .get(&format!("/api/business/prompts?userId={alice_id}"), &admin)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids(&all).len(), 3);
    let (status, _) = app.get(&path(&private), &admin).await;
    assert_eq!(status, StatusCode::OK, "administrators see all");

    // Nothing bob tried changed anything.
    let (_, still) = app.get(&path(&private), &alice).await;
    assert_eq!(still["title"], "secret");
    assert_eq!(still["version"], 1);

    let (status, body) = send(app.request(Method::GET, "/api/business/prompts", None)).await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
}

async fn bad_prompts_are_refused_and_change_nothing(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| s.max_content_chars = 1000).await;
    let alice = app.user("alice").await;
    let folder_of_bob = {
        let bob = app.user("bob").await;
        let (status, f) = app
            .post("/api/business/folders", &bob, json!({ "name": "bob's" }))
            .await;
        assert_eq!(status, StatusCode::CREATED);
        f["id"].as_str().unwrap().to_owned()
    };
    for (body, field) in [
        (json!({ "content": "no title" }), ""),
        (json!({ "title": "", "content": "x" }), "title"),
        (
            json!({ "title": "t", "content": "x".repeat(1001) }),
            "content",
        ),
        (
            json!({ "title": "evil\u{202E}txt.exe", "content": "x" }),
            "title",
        ),
        (
            json!({ "title": "t", "content": "Hello {{name" }),
            "content",
        ),
        (
            json!({ "title": "t", "content": "{{> nowhere}}" }),
            "content",
        ),
        (
            json!({ "title": "t", "content": "x", "visibility": "secret" }),
            "visibility",
        ),
        (
            json!({ "title": "t", "content": "x", "folder_id": folder_of_bob }),
            "folder_id",
        ),
        (
            json!({ "title": "t", "content": "x", "folder_id": "not-a-uuid" }),
            "folder_id",
        ),
        (
            json!({ "title": "t", "content": "x", "tags": (0..21).map(|i| i.to_string()).collect::<Vec<_>>() }),
            "tags",
        ),
        (
            json!({ "title": "t", "content": "x", "slug": "Not A Slug" }),
            "slug",
        ),
        (
            json!({ "title": "t", "content": "x", "owner_id": "someone" }),
            "",
        ),
        (json!({ "title": 5, "content": "x" }), "title"),
    ] {
        let (status, problem) = app
            .post("/api/business/prompts", &alice, body.clone())
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
    let (status, problem) = app
        .post(
            "/api/business/prompts",
            &alice,
            json!({ "title": "t", "content": "Hi\n  {{na me}}" }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        problem["detail"].as_str().unwrap().contains("line 2"),
        "{problem}"
    );
    let (status, problem) = send(
        app.request(Method::POST, "/api/business/prompts", Some(&alice))
            .header("content-type", "application/json")
            .body("{\"title\": \"t\","),
    )
    .await;
    assert_problem(
        status,
        &problem,
        StatusCode::BAD_REQUEST,
        "malformed-request",
    );
    let (status, problem) = app
        .post(
            "/api/business/prompts",
            &alice,
            json!({ "title": "t", "content": "x".repeat(300_000) }),
        )
        .await;
    assert_problem(
        status,
        &problem,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload-too-large",
    );

    let (_, list) = app.get("/api/business/prompts?status=all", &alice).await;
    assert!(ids(&list).is_empty(), "nothing was created: {list}");

    // The same checks guard changes.
    let p = app
        .prompt(
            &alice,
            json!({ "title": "ok", "content": "fine", "slug": "fine" }),
        )
        .await;
    let path = format!("/api/business/prompts/{}", p["id"].as_str().unwrap());
    let (status, _) = app
        .patch(&path, &alice, json!({ "content": "{{broken" }))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let other = app
        .prompt(&alice, json!({ "title": "other", "content": "x" }))
        .await;
    let (status, problem) = app
        .patch(
            &format!("/api/business/prompts/{}", other["id"].as_str().unwrap()),
            &alice,
            json!({ "slug": "fine" }),
        )
        .await;
    assert_problem(status, &problem, StatusCode::CONFLICT, "slug-taken");
    let (_, still) = app.get(&path, &alice).await;
    assert_eq!(still["content"], "fine");
    assert_eq!(still["etag"], p["etag"]);
    let (status, problem) = app
        .get(
            "/api/business/prompts/00000000-0000-0000-0000-000000000000",
            &alice,
        )
        .await;
    assert_problem(status, &problem, StatusCode::NOT_FOUND, "not-found");
    let (status, problem) = app.get("/api/business/prompts/nope", &alice).await;
    assert_problem(status, &problem, StatusCode::NOT_FOUND, "not-found");
}

async fn archive_favorite_and_usage(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let p = app
        .prompt(
            &alice,
            json!({ "title": "shared", "content": "x", "visibility": "public" }),
        )
        .await;
    let path = format!("/api/business/prompts/{}", p["id"].as_str().unwrap());

    let (status, archived) = app
        .post(&format!("{path}/archive"), &alice, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(archived["status"], "archived");
    let (_, active) = app.get("/api/business/prompts", &alice).await;
    assert!(ids(&active).is_empty());
    let (_, list) = app
        .get("/api/business/prompts?status=archived", &alice)
        .await;
    assert_eq!(ids(&list).len(), 1);
    let (_, _) = app
        .post(&format!("{path}/unarchive"), &alice, json!({}))
        .await;

    // Favourites are per user: bob's does not show as alice's.
    let (status, fav) = app.post(&format!("{path}/favorite"), &bob, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fav["favorite"], true);
    let (_, seen_by_bob) = app.get(&path, &bob).await;
    assert_eq!(seen_by_bob["favorite"], true);
    let (_, seen_by_alice) = app.get(&path, &alice).await;
    assert_eq!(seen_by_alice["favorite"], false);
    let (_, favs) = app.get("/api/business/prompts?favorite=true", &bob).await;
    assert_eq!(
        titles(&favs),
        ["shared"],
        "others' public favourites are in one's favourites"
    );
    let (_, _) = send(app.request(Method::DELETE, &format!("{path}/favorite"), Some(&bob))).await;
    let (_, favs) = app.get("/api/business/prompts?favorite=true", &bob).await;
    assert!(ids(&favs).is_empty());

    for _ in 0..3 {
        let (status, _) = app.post(&format!("{path}/use"), &bob, json!({})).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (_, used) = app.get(&path, &alice).await;
    assert_eq!(used["usage_count"], 3);
    assert!(used["last_used_at"].is_string());
}

async fn templates_render_with_variables_and_snippets(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.user("alice").await;
    let sig = app
        .prompt(&alice, json!({ "title": "signature", "slug": "sig", "content": "-- {{sender|Alice}}, {{company}}" }))
        .await;
    let main = app
        .prompt(
            &alice,
            json!({ "title": "letter", "content": "Dear {{name}},\n{{body|见附件}}\n{{> sig}}" }),
        )
        .await;
    let path = format!("/api/business/prompts/{}", main["id"].as_str().unwrap());

    let (status, problem) = app
        .post(&format!("{path}/render"), &alice, json!({ "values": {} }))
        .await;
    assert_problem(
        status,
        &problem,
        StatusCode::UNPROCESSABLE_ENTITY,
        "missing-variables",
    );
    assert_eq!(
        problem["missing"],
        json!(["name", "company"]),
        "every missing name at once"
    );

    let (status, out) = app
        .post(
            &format!("{path}/render"),
            &alice,
            json!({ "values": { "name": "王先生", "company": "PromptFlow", "unused": 1 } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out["text"], "Dear 王先生,\n见附件\n-- Alice, PromptFlow");

    // By id works too; a cycle is refused, and so is an unknown include.
    let sig_path = format!("/api/business/prompts/{}", sig["id"].as_str().unwrap());
    let (status, problem) = app
        .patch(
            &sig_path,
            &alice,
            json!({ "content": format!("{{{{> {}}}}}", main["id"].as_str().unwrap()) }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        problem["detail"].as_str().unwrap().contains("cycle"),
        "{problem}"
    );
    let (status, problem) = app
        .patch(&path, &alice, json!({ "content": "{{> letter}}" }))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    // Bob cannot include alice's private prompt, even by id.
    let bob = app.user("bob").await;
    let (status, problem) = app
        .post("/api/business/prompts", &bob, json!({ "title": "t", "content": format!("{{{{> {}}}}}", sig["id"].as_str().unwrap()) }))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    let (status, problem) = app
        .post(
            &format!("{path}/render"),
            &alice,
            json!({ "values": { "name": ["not", "text"] } }),
        )
        .await;
    assert_problem(
        status,
        &problem,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation-failed",
    );
}

async fn concurrent_patches_without_if_match_both_apply(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.user("alice").await;
    let p = app
        .prompt(&alice, json!({ "title": "t", "content": "x" }))
        .await;
    let path = format!("/api/business/prompts/{}", p["id"].as_str().unwrap());
    let (a, b) = tokio::join!(
        app.patch(&path, &alice, json!({ "description": "from one device" })),
        app.patch(&path, &alice, json!({ "tags": ["from-another"] })),
    );
    assert_eq!(
        (a.0, b.0),
        (StatusCode::OK, StatusCode::OK),
        "{} {}",
        a.1,
        b.1
    );
    let (_, now) = app.get(&path, &alice).await;
    assert_eq!(now["description"], "from one device");
    assert_eq!(now["tags"], json!(["from-another"]));
}

async fn trash_is_emptied_for_good_only_on_purpose(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.user("alice").await;
    let p = app
        .prompt(&alice, json!({ "title": "t", "content": "x" }))
        .await;
    let path = format!("/api/business/prompts/{}", p["id"].as_str().unwrap());
    let (status, problem) = app.delete(&format!("{path}?permanent=true"), &alice).await;
    assert_problem(status, &problem, StatusCode::CONFLICT, "not-in-trash");
    let (status, problem) = app.patch(&path, &alice, json!({ "title": "x" })).await;
    assert_eq!(status, StatusCode::OK, "{problem}");
    app.delete(&path, &alice).await;
    let (status, problem) = app.patch(&path, &alice, json!({ "title": "y" })).await;
    assert_problem(status, &problem, StatusCode::CONFLICT, "in-trash");
    let (status, _) = app.delete(&format!("{path}?permanent=true"), &alice).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app.get(&path, &alice).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
