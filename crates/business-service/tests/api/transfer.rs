//! Export and import: JSON, YAML, a zip of Markdown files, and the Kotlin version's JSON.

use std::io::{Cursor, Read};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use testkit::on_both_backends;

use crate::helpers::*;

on_both_backends!(
    a_library_round_trips_through_every_format,
    importing_ones_own_export_updates_instead_of_duplicating,
    the_kotlin_versions_json_imports,
    a_refused_item_changes_nothing_and_the_rest_import,
    exports_of_a_folder_or_a_search,
);

async fn seed_library(app: &TestApp, t: &str) {
    let (_, work) = app
        .post(
            "/api/business/folders",
            t,
            json!({ "name": "工作", "color": "#112233", "icon": "💼" }),
        )
        .await;
    let (_, mail) = app
        .post(
            "/api/business/folders",
            t,
            json!({ "name": "Mail", "parent_id": work["id"] }),
        )
        .await;
    app.prompt(t, json!({
        "title": "回复邮件", "content": "请用{{tone|礼貌}}的语气回复：{{email}}", "description": "email replies",
        "tags": ["邮件", "work"], "category": "写作", "folder_id": mail["id"], "slug": "reply", "favorite": true,
    }))
    .await;
    app.prompt(t, json!({ "title": "Code review", "content": "Review this diff:\n{{diff}}", "tags": ["code"], "visibility": "public" })).await;
    let archived = app
        .prompt(
            t,
            json!({ "title": "Old one", "content": "x", "folder_id": work["id"] }),
        )
        .await;
    app.post(
        &format!(
            "/api/business/prompts/{}/archive",
            archived["id"].as_str().unwrap()
        ),
        t,
        json!({}),
    )
    .await;
}

async fn export(app: &TestApp, t: &str, params: &str) -> (String, Vec<u8>) {
    let response = app
        .request(
            Method::GET,
            &format!("/api/business/export?{params}"),
            Some(t),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{params}");
    let disposition = response.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        disposition.starts_with("attachment; filename=\"promptflow-library-"),
        "{disposition}"
    );
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    (content_type, response.bytes().await.unwrap().to_vec())
}

async fn import(app: &TestApp, t: &str, content_type: &str, body: Vec<u8>) -> (StatusCode, Value) {
    send(
        app.request(Method::POST, "/api/business/import", Some(t))
            .header("content-type", content_type)
            .body(body),
    )
    .await
}

/// A library as a comparable value: prompts and folders by title/path, without ids or times.
async fn snapshot(app: &TestApp, t: &str) -> Value {
    let (_, page) = app
        .get("/api/business/prompts?status=all&sort=title&limit=100", t)
        .await;
    let (_, folders) = app.get("/api/business/folders", t).await;
    let names: std::collections::HashMap<String, String> = folders
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["id"].as_str().unwrap().to_owned(),
                f["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let prompts: Vec<Value> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            json!({
                "title": p["title"], "content": p["content"], "description": p["description"],
                "tags": p["tags"], "category": p["category"], "visibility": p["visibility"],
                "status": p["status"], "slug": p["slug"], "favorite": p["favorite"],
                "folder": p["folder_id"].as_str().and_then(|f| names.get(f)).cloned(),
            })
        })
        .collect();
    let mut folder_list: Vec<Value> = folders
        .as_array()
        .unwrap()
        .iter()
        .map(|f| json!({ "name": f["name"], "color": f["color"], "icon": f["icon"], "top": f["parent_id"].is_null() }))
        .collect();
    folder_list.sort_by_key(|f| f["name"].to_string());
    json!({ "prompts": prompts, "folders": folder_list })
}

async fn a_library_round_trips_through_every_format(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.user("alice").await;
    seed_library(&app, &alice).await;
    let original = snapshot(&app, &alice).await;
    for (format, want_type) in [
        ("json", "application/json"),
        ("yaml", "application/yaml"),
        ("markdown", "application/zip"),
    ] {
        let (content_type, bytes) = export(&app, &alice, &format!("format={format}")).await;
        assert_eq!(content_type, want_type);
        let someone = app.user(&format!("copy-{format}")).await;
        let (status, report) = import(&app, &someone, &content_type, bytes).await;
        assert_eq!(status, StatusCode::OK, "{format}: {report}");
        assert_eq!(report["created"], 3, "{format}: {report}");
        assert_eq!(report["refused"], 0, "{format}: {report}");
        assert_eq!(snapshot(&app, &someone).await, original, "{format}");
    }
    // A zip holds one Markdown file per prompt, with front matter, in its folders.
    let (_, zip) = export(&app, &alice, "format=markdown").await;
    let mut archive = zip::ZipArchive::new(Cursor::new(zip)).unwrap();
    let names: Vec<String> = archive
        .file_names()
        .filter_map(Result::ok)
        .map(|n| n.into_owned())
        .collect();
    let reply = names
        .iter()
        .find(|n| n.ends_with(".md") && n.contains("Mail/"))
        .expect("a file under Mail/")
        .clone();
    assert!(reply.starts_with("工作/Mail/"), "{names:?}");
    let mut text = String::new();
    archive
        .by_name(&reply)
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    assert!(text.starts_with("---\n"), "{text}");
    assert!(text.contains("title: 回复邮件"), "{text}");
    assert!(
        text.ends_with("请用{{tone|礼貌}}的语气回复：{{email}}"),
        "{text}"
    );
}

async fn importing_ones_own_export_updates_instead_of_duplicating(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.user("alice").await;
    seed_library(&app, &alice).await;
    let (_, bytes) = export(&app, &alice, "format=json").await;
    let mut library: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(library["format"], "promptflow-library");
    library["prompts"][0]["content"] = json!("changed offline: {{x}}");
    let (status, report) = import(
        &app,
        &alice,
        "application/json",
        serde_json::to_vec(&library).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        (report["created"].as_u64(), report["updated"].as_u64()),
        (Some(0), Some(3)),
        "{report}"
    );
    let id = library["prompts"][0]["id"].as_str().unwrap();
    let (_, p) = app
        .get(&format!("/api/business/prompts/{id}"), &alice)
        .await;
    assert_eq!(p["content"], "changed offline: {{x}}");
    let (_, versions) = app
        .get(&format!("/api/business/prompts/{id}/versions"), &alice)
        .await;
    assert_eq!(versions[0]["message"], "imported");
    let (_, all) = app.get("/api/business/prompts?status=all", &alice).await;
    assert_eq!(ids(&all).len(), 3, "no duplicates");
    // Another user importing the same file gets copies; alice's prompts are untouched.
    let bob = app.user("bob").await;
    let (_, report) = import(
        &app,
        &bob,
        "application/json",
        serde_json::to_vec(&library).unwrap(),
    )
    .await;
    assert_eq!(report["created"], 3, "{report}");
    let (_, p) = app
        .get(&format!("/api/business/prompts/{id}"), &alice)
        .await;
    assert_eq!(p["owner_id"], TestApp::user_id(&alice));
}

async fn the_kotlin_versions_json_imports(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.user("alice").await;
    let kotlin = json!({
        "success": true,
        "data": {
            "content": [
                {
                    "id": "65f1c2a9e4b0a1b2c3d4e5f6", "userId": "65f1c2a9e4b0a1b2c3d4e5f0",
                    "title": "周报生成", "content": "根据以下要点生成周报：{{points}}", "description": "weekly report",
                    "tags": ["周报", "工作"], "category": "写作", "categoryId": "c1", "isPublic": true,
                    "isFavorite": true, "usageCount": 12, "folderId": null, "status": "ACTIVE",
                    "lastUsedAt": "2024-05-01T10:20:30", "createdAt": "2024-04-01T08:00:00.123",
                    "updatedAt": "2024-05-01T10:20:30"
                },
                {
                    "id": "65f1c2a9e4b0a1b2c3d4e5f7", "userId": "65f1c2a9e4b0a1b2c3d4e5f0",
                    "title": "Old draft", "content": "x", "tags": [], "isPublic": false, "isFavorite": false,
                    "usageCount": 0, "status": "ARCHIVED", "createdAt": "2024-04-01T08:00:00", "updatedAt": "2024-04-01T08:00:00"
                },
                {
                    "id": "65f1c2a9e4b0a1b2c3d4e5f8", "userId": "65f1c2a9e4b0a1b2c3d4e5f0",
                    "title": "Gone", "content": "x", "tags": [], "isPublic": false, "isFavorite": false,
                    "usageCount": 0, "status": "DELETED", "createdAt": "2024-04-01T08:00:00", "updatedAt": "2024-04-01T08:00:00"
                }
            ],
            "totalElements": 3, "number": 0, "size": 20
        }
    });
    let (status, report) = import(
        &app,
        &alice,
        "application/json",
        serde_json::to_vec(&kotlin).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["source"], "kotlin_json");
    assert_eq!(
        (report["created"].as_u64(), report["refused"].as_u64()),
        (Some(2), Some(1)),
        "{report}"
    );
    let refused = report["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["status"] == "refused")
        .unwrap();
    assert_eq!(refused["title"], "Gone");
    let (_, page) = app
        .get(&format!("/api/business/prompts?q={}", "周报"), &alice)
        .await;
    let p = &page["items"][0];
    assert_eq!(p["visibility"], "public");
    assert_eq!(p["favorite"], true);
    assert_eq!(p["category"], "写作");
    assert_eq!(p["tags"], json!(["周报", "工作"]));
    let (_, archived) = app
        .get("/api/business/prompts?status=archived", &alice)
        .await;
    assert_eq!(titles(&archived), ["Old draft"]);
    // A bare array of Kotlin prompts works too.
    let bare = kotlin["data"]["content"].as_array().unwrap()[..1].to_vec();
    let (_, report) = import(
        &app,
        &alice,
        "application/json",
        serde_json::to_vec(&bare).unwrap(),
    )
    .await;
    assert_eq!(report["created"], 1, "{report}");
}

async fn a_refused_item_changes_nothing_and_the_rest_import(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.user("alice").await;
    app.prompt(
        &alice,
        json!({ "title": "taken", "content": "x", "slug": "taken" }),
    )
    .await;
    let library = json!({
        "format": "promptflow-library", "version": 1, "exported_at": "2026-01-01T00:00:00Z",
        "prompts": [
            { "title": "good one", "content": "fine", "folder": "Imported/Good" },
            { "title": "", "content": "no title", "folder": "Should/Not/Exist" },
            { "title": "bad template", "content": "{{oops", "folder": "Should/Not/Exist" },
            { "title": "slug clash", "content": "x", "slug": "taken", "folder": "Should/Not/Exist" },
            { "title": "wrong types", "content": "x", "tags": 5 },
            { "title": "includes nothing", "content": "{{> missing}}", "folder": "Should/Not/Exist" },
            { "title": "good two", "content": "也很好", "tags": ["ok"] }
        ]
    });
    let (status, report) = import(
        &app,
        &alice,
        "application/json",
        serde_json::to_vec(&library).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        (report["created"].as_u64(), report["refused"].as_u64()),
        (Some(2), Some(5)),
        "{report}"
    );
    for item in report["items"].as_array().unwrap() {
        if item["status"] == "refused" {
            assert!(
                item["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{item}"
            );
        }
    }
    let (_, folders) = app.get("/api/business/folders", &alice).await;
    let names: Vec<&str> = folders
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert!(
        !names.contains(&"Should"),
        "refused items made no folders: {names:?}"
    );
    assert!(names.contains(&"Good"));
    let (_, all) = app.get("/api/business/prompts?sort=title", &alice).await;
    assert_eq!(titles(&all), ["good one", "good two", "taken"]);

    for (content_type, body) in [
        ("application/json", b"{not json".to_vec()),
        ("application/zip", b"PK\x03\x04 truncated".to_vec()),
        ("application/json", b"".to_vec()),
    ] {
        let (status, problem) = import(&app, &alice, content_type, body).await;
        assert_problem(
            status,
            &problem,
            StatusCode::UNPROCESSABLE_ENTITY,
            "import-unreadable",
        );
    }
    let (_, all) = app.get("/api/business/prompts", &alice).await;
    assert_eq!(ids(&all).len(), 3, "unreadable uploads change nothing");
}

async fn exports_of_a_folder_or_a_search(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.user("alice").await;
    seed_library(&app, &alice).await;
    let (_, folders) = app.get("/api/business/folders", &alice).await;
    let mail = folders
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "Mail")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, bytes) = export(&app, &alice, &format!("folder={mail}")).await;
    let lib: Value = serde_json::from_slice(&bytes).unwrap();
    let titles: Vec<&str> = lib["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["回复邮件"]);
    assert_eq!(lib["prompts"][0]["folder"], "工作/Mail");
    let (_, bytes) = export(&app, &alice, "q=review&format=yaml").await;
    let text = String::from_utf8(bytes).unwrap();
    assert!(
        text.contains("Code review") && !text.contains("回复邮件"),
        "{text}"
    );
    let (status, problem) = app.get("/api/business/export?format=pdf", &alice).await;
    assert_problem(
        status,
        &problem,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation-failed",
    );
    let bob = app.user("bob").await;
    let alice_id = TestApp::user_id(&alice);
    let (status, _) = app
        .get(&format!("/api/business/export?userId={alice_id}"), &bob)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}
