//! Versions, folders, tags and categories.

use reqwest::{Method, StatusCode};
use serde_json::json;
use testkit::on_both_backends;

use crate::helpers::*;

on_both_backends!(
    every_content_change_is_a_version_that_can_be_diffed_and_restored,
    folders_nest_order_and_never_delete_prompts_silently,
    tags_are_counted_renamed_merged_and_deleted,
    categories_start_as_in_the_original_and_deleting_one_keeps_its_prompts,
);

async fn every_content_change_is_a_version_that_can_be_diffed_and_restored(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.user("alice").await;
    let p = app
        .prompt(
            &alice,
            json!({ "title": "poem", "content": "line one\nline two\nline three\n" }),
        )
        .await;
    let path = format!("/api/business/prompts/{}", p["id"].as_str().unwrap());
    let (_, v2) = app
        .patch(&path, &alice, json!({ "content": "line one\nline 2\nline three\n", "message": "fix the second line" }))
        .await;
    assert_eq!(v2["version"], 2);
    let (_, v3) = app.patch(&path, &alice, json!({ "title": "a poem" })).await;
    assert_eq!(v3["version"], 3);

    let (status, versions) = app.get(&format!("{path}/versions"), &alice).await;
    assert_eq!(status, StatusCode::OK);
    let numbers: Vec<i64> = versions
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["number"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, [3, 2, 1]);
    assert_eq!(versions[1]["message"], "fix the second line");
    assert_eq!(versions[1]["author_id"], TestApp::user_id(&alice));
    let (status, v1) = app.get(&format!("{path}/versions/1"), &alice).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v1["content"], "line one\nline two\nline three\n");

    let (status, diff) = app.get(&format!("{path}/diff?from=1&to=2"), &alice).await;
    assert_eq!(status, StatusCode::OK, "{diff}");
    assert_eq!(diff["content"]["added"], 1);
    assert_eq!(diff["content"]["removed"], 1);
    let changed: Vec<_> = diff["content"]["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["op"] != "equal")
        .map(|l| {
            (
                l["op"].as_str().unwrap().to_owned(),
                l["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        changed,
        [
            ("delete".to_owned(), "line two".to_owned()),
            ("insert".to_owned(), "line 2".to_owned())
        ]
    );
    let text = app
        .request(
            Method::GET,
            &format!("{path}/diff?from=1&to=2&format=unified"),
            Some(&alice),
        )
        .send()
        .await
        .unwrap();
    assert!(
        text.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/x-diff")
    );
    let text = text.text().await.unwrap();
    assert!(text.starts_with("--- v1\n+++ v2\n@@ "), "{text}");
    assert!(text.contains("\n-line two\n+line 2\n"), "{text}");
    let (_, title_diff) = app.get(&format!("{path}/diff?from=2&to=3"), &alice).await;
    assert_eq!(
        title_diff["title"],
        json!({ "from": "poem", "to": "a poem" })
    );

    let (status, restored) = app
        .post(&format!("{path}/versions/1/restore"), &alice, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{restored}");
    assert_eq!(restored["version"], 4);
    assert_eq!(restored["content"], "line one\nline two\nline three\n");
    assert_eq!(restored["title"], "poem");
    let (_, versions) = app.get(&format!("{path}/versions"), &alice).await;
    assert_eq!(versions[0]["message"], "restored from v1");
    assert_eq!(versions[0]["restored_from"], 1);

    let (status, problem) = app.get(&format!("{path}/versions/99"), &alice).await;
    assert_problem(status, &problem, StatusCode::NOT_FOUND, "not-found");
    let (status, _) = app.get(&format!("{path}/diff?from=1&to=99"), &alice).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.get(&format!("{path}/diff?from=x"), &alice).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let bob = app.user("bob").await;
    let (status, _) = app
        .post(&format!("{path}/versions/1/restore"), &bob, json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn folders_nest_order_and_never_delete_prompts_silently(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.user("alice").await;
    let folder = |name: &str, parent: Option<&str>, extra: serde_json::Value| {
        let mut body = json!({ "name": name, "parent_id": parent });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let app = &app;
        let alice = alice.clone();
        async move {
            let (status, f) = app.post("/api/business/folders", &alice, body).await;
            assert_eq!(status, StatusCode::CREATED, "{f}");
            f["id"].as_str().unwrap().to_owned()
        }
    };
    let work = folder(
        "工作 Work",
        None,
        json!({ "color": "#3b82f6", "icon": "💼" }),
    )
    .await;
    let emails = folder("Emails", Some(&work), json!({})).await;
    let _drafts = folder("Drafts", Some(&emails), json!({})).await;
    let home = folder("Home", None, json!({ "position": -1 })).await;

    let (_, flat) = app.get("/api/business/folders", &alice).await;
    assert_eq!(flat.as_array().unwrap().len(), 4);
    let (_, tree) = app.get("/api/business/folders?tree=true", &alice).await;
    let top: Vec<&str> = tree
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(top, ["Home", "工作 Work"], "ordered by position");
    assert_eq!(tree[1]["children"][0]["name"], "Emails");
    assert_eq!(tree[1]["children"][0]["children"][0]["name"], "Drafts");
    assert_eq!(tree[1]["color"], "#3b82f6");

    let (status, problem) = app
        .post(
            "/api/business/folders",
            &alice,
            json!({ "name": "emails", "parent_id": work }),
        )
        .await;
    assert_problem(status, &problem, StatusCode::CONFLICT, "name-taken");
    let (status, problem) = app
        .patch(
            &format!("/api/business/folders/{work}"),
            &alice,
            json!({ "parent_id": emails }),
        )
        .await;
    assert_problem(status, &problem, StatusCode::CONFLICT, "refused");
    let (status, problem) = app
        .post(
            "/api/business/folders",
            &alice,
            json!({ "name": "x", "color": "red" }),
        )
        .await;
    assert_problem(
        status,
        &problem,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation-failed",
    );

    let p = app
        .prompt(
            &alice,
            json!({ "title": "reply", "content": "x", "folder_id": emails }),
        )
        .await;
    let moved = app
        .prompt(&alice, json!({ "title": "loose", "content": "y" }))
        .await;
    let (status, patched) = app
        .patch(
            &format!("/api/business/prompts/{}", moved["id"].as_str().unwrap()),
            &alice,
            json!({ "folder_id": emails }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(patched["folder_id"], emails.as_str());
    let (_, in_emails) = app
        .get(&format!("/api/business/prompts?folder={emails}"), &alice)
        .await;
    assert_eq!(ids(&in_emails).len(), 2);
    let (_, unfiled) = app.get("/api/business/prompts?folder=none", &alice).await;
    assert!(ids(&unfiled).is_empty());
    let (_, info) = app
        .get(&format!("/api/business/folders/{emails}"), &alice)
        .await;
    assert_eq!(
        (info["prompt_count"].as_u64(), info["folder_count"].as_u64()),
        (Some(2), Some(1))
    );

    // Deleting a folder that holds prompts: refused, and nothing changes.
    let (status, problem) = app
        .delete(&format!("/api/business/folders/{emails}"), &alice)
        .await;
    assert_problem(status, &problem, StatusCode::CONFLICT, "refused");
    let (_, still) = app
        .get(
            &format!("/api/business/prompts/{}", p["id"].as_str().unwrap()),
            &alice,
        )
        .await;
    assert_eq!(still["folder_id"], emails.as_str());
    // Or moved to the parent, sub-folders too.
    let (status, out) = app
        .delete(
            &format!("/api/business/folders/{emails}?prompts=move_to_parent"),
            &alice,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(
        (out["prompts_moved"].as_u64(), out["folders_moved"].as_u64()),
        (Some(2), Some(1))
    );
    let (_, still) = app
        .get(
            &format!("/api/business/prompts/{}", p["id"].as_str().unwrap()),
            &alice,
        )
        .await;
    assert_eq!(still["folder_id"], work.as_str());
    let (_, tree) = app.get("/api/business/folders?tree=true", &alice).await;
    assert_eq!(tree[1]["children"][0]["name"], "Drafts");

    // Another user's folders are not there for bob.
    let bob = app.user("bob").await;
    let (status, _) = app
        .get(&format!("/api/business/folders/{home}"), &bob)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .delete(&format!("/api/business/folders/{home}"), &bob)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .post(
            "/api/business/folders",
            &bob,
            json!({ "name": "in hers", "parent_id": home }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = app
        .get(&format!("/api/business/folders/{home}"), &alice)
        .await;
    assert_eq!(status, StatusCode::OK);
}

async fn tags_are_counted_renamed_merged_and_deleted(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.user("alice").await;
    let a = app
        .prompt(
            &alice,
            json!({ "title": "a", "content": "x", "tags": ["GPT-4", "email"] }),
        )
        .await;
    app.prompt(
        &alice,
        json!({ "title": "b", "content": "x", "tags": ["gpt-4", "写作"] }),
    )
    .await;
    app.prompt(
        &alice,
        json!({ "title": "c", "content": "x", "tags": ["email"] }),
    )
    .await;
    let bob = app.user("bob").await;
    app.prompt(
        &bob,
        json!({ "title": "d", "content": "x", "tags": ["email"] }),
    )
    .await;

    let (_, tags) = app.get("/api/business/tags", &alice).await;
    // Most used first; ties by name.
    assert_eq!(
        tags,
        json!([{ "tag": "email", "count": 2 }, { "tag": "GPT-4", "count": 2 }, { "tag": "写作", "count": 1 }])
    );

    let (_, any) = app
        .get("/api/business/prompts?tag=email&tag=写作", &alice)
        .await;
    assert_eq!(ids(&any).len(), 3);
    let (_, all) = app
        .get(
            "/api/business/prompts?tag=email&tag=gpt-4&tag_mode=all",
            &alice,
        )
        .await;
    assert_eq!(titles(&all), ["a"]);

    let (status, out) = app
        .post(
            "/api/business/tags/rename",
            &alice,
            json!({ "from": "gpt-4", "to": "GPT-4o" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out["prompts_changed"], 2);
    let (_, got) = app
        .get(
            &format!("/api/business/prompts/{}", a["id"].as_str().unwrap()),
            &alice,
        )
        .await;
    assert!(got["tags"].as_array().unwrap().contains(&json!("GPT-4o")));
    assert_ne!(
        got["etag"], a["etag"],
        "a tag change is a change of the prompt"
    );

    let (status, out) = app
        .post(
            "/api/business/tags/merge",
            &alice,
            json!({ "tags": ["写作", "email"], "into": "writing" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out["prompts_changed"], 3);
    let (_, tags) = app.get("/api/business/tags", &alice).await;
    assert_eq!(
        tags,
        json!([{ "tag": "writing", "count": 3 }, { "tag": "GPT-4o", "count": 2 }])
    );

    let (status, _) =
        send(app.request(Method::DELETE, "/api/business/tags/GPT-4o", Some(&alice))).await;
    assert_eq!(status, StatusCode::OK);
    let (_, tags) = app.get("/api/business/tags", &alice).await;
    assert_eq!(tags, json!([{ "tag": "writing", "count": 3 }]));
    let (_, bobs) = app.get("/api/business/tags", &bob).await;
    assert_eq!(
        bobs,
        json!([{ "tag": "email", "count": 1 }]),
        "bob's tags are his own"
    );
    let (status, problem) = app
        .post(
            "/api/business/tags/rename",
            &alice,
            json!({ "from": "nope", "to": "x" }),
        )
        .await;
    assert_problem(status, &problem, StatusCode::NOT_FOUND, "not-found");
    let (status, _) = app
        .post(
            "/api/business/tags/rename",
            &alice,
            json!({ "from": "writing", "to": "" }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

async fn categories_start_as_in_the_original_and_deleting_one_keeps_its_prompts(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.user("alice").await;
    let (_, cats) = app.get("/api/business/categories", &alice).await;
    let names: Vec<&str> = cats
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["通用", "写作", "编程", "分析", "创意", "营销"]);
    assert_eq!(cats[0]["system"], true);
    let general = cats[0]["id"].as_str().unwrap().to_owned();
    let writing = cats[1]["id"].as_str().unwrap().to_owned();

    let p = app
        .prompt(
            &alice,
            json!({ "title": "t", "content": "x", "category": "写作" }),
        )
        .await;
    let (status, renamed) = app
        .patch(
            &format!("/api/business/categories/{writing}"),
            &alice,
            json!({ "name": "文案" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{renamed}");
    let path = format!("/api/business/prompts/{}", p["id"].as_str().unwrap());
    let (_, got) = app.get(&path, &alice).await;
    assert_eq!(got["category"], "文案", "prompts follow a renamed category");
    let (_, by_cat) = app.get("/api/business/prompts?category=文案", &alice).await;
    assert_eq!(ids(&by_cat).len(), 1);

    let (status, out) = app
        .delete(&format!("/api/business/categories/{writing}"), &alice)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(out["prompts_moved"], 1);
    let (_, got) = app.get(&path, &alice).await;
    assert_eq!(got["category"], "通用");

    for (status, problem) in [
        app.delete(&format!("/api/business/categories/{general}"), &alice)
            .await,
        app.patch(
            &format!("/api/business/categories/{general}"),
            &alice,
            json!({ "name": "x" }),
        )
        .await,
    ] {
        assert_problem(status, &problem, StatusCode::CONFLICT, "refused");
    }
    let (status, problem) = app
        .post(
            "/api/business/categories",
            &alice,
            json!({ "name": "编程" }),
        )
        .await;
    assert_problem(status, &problem, StatusCode::CONFLICT, "name-taken");
    let (status, _) = app
        .post(
            "/api/business/categories",
            &alice,
            json!({ "name": "翻译", "color": "#ff0000" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    // A prompt may name a category that does not exist yet: it is made.
    app.prompt(
        &alice,
        json!({ "title": "t2", "content": "x", "category": "Research" }),
    )
    .await;
    let (_, cats) = app.get("/api/business/categories", &alice).await;
    assert!(
        cats.as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "Research")
    );
    let bob = app.user("bob").await;
    let (status, _) = app
        .delete(&format!("/api/business/categories/{general}"), &bob)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

on_both_backends!(bulk_created_prompts_are_like_any_other);

/// The bulk path (generated libraries, benchmarks) stores what the API would.
async fn bulk_created_prompts_are_like_any_other(backend: Backend) {
    use business_service::storage::Store;
    use business_service::storage::prompts::PromptInput;
    let app = TestApp::spawn(backend).await;
    let alice = app.user("alice").await;
    app.prompt(
        &alice,
        json!({ "title": "made by hand", "content": "bulk neighbour" }),
    )
    .await;
    let owner = uuid::Uuid::parse_str(&TestApp::user_id(&alice)).unwrap();
    let db = platform::db::connect(&app.business_db, &Default::default())
        .await
        .unwrap();
    let store = Store::new(db);
    let inputs: Vec<PromptInput> = (0..1200)
        .map(|i| PromptInput {
            id: None,
            title: format!("bulk {i}"),
            content: format!("批量 content number {i} with bulk words"),
            description: None,
            tags: vec![format!("t{}", i % 3), "bulk".into()],
            category: None,
            folder_id: None,
            visibility: "private".into(),
            status: "active".into(),
            slug: None,
            variables: json!([]),
        })
        .collect();
    // This second connection writes beside the service's own writer: on SQLite that only
    // works while the service is not writing, so wait until its events are all sent.
    for _ in 0..200 {
        use sea_orm::ConnectionTrait;
        let unsent = store
            .db()
            .read()
            .query_one_raw(sea_orm::Statement::from_string(
                store.db().backend(),
                "SELECT COUNT(*) FROM outbox WHERE published_ms IS NULL",
            ))
            .await
            .unwrap()
            .and_then(|row| row.try_get_by_index::<i64>(0).ok());
        if unsent == Some(0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(store.bulk_create(owner, &inputs).await.unwrap(), 1200);
    let (_, page) = app
        .get("/api/business/prompts?q=批量&limit=5", &alice)
        .await;
    assert_eq!(page["search"]["ranked"], 1000, "{page}");
    assert_eq!(page["search"]["limited"], true);
    assert_eq!(
        titles(&page),
        [
            "bulk 1199",
            "bulk 1198",
            "bulk 1197",
            "bulk 1196",
            "bulk 1195"
        ]
    );
    let (_, tags) = app.get("/api/business/tags", &alice).await;
    assert_eq!(tags[0], json!({ "tag": "bulk", "count": 1200 }));
    let id = page["items"][0]["id"].as_str().unwrap();
    let (_, versions) = app
        .get(&format!("/api/business/prompts/{id}/versions"), &alice)
        .await;
    assert_eq!(versions.as_array().unwrap().len(), 1);
    // A prompt made after the bulk load follows it in creation order.
    app.prompt(&alice, json!({ "title": "after", "content": "bulk again" }))
        .await;
    let (_, page) = app
        .get("/api/business/prompts?q=bulk&sort=created&limit=1", &alice)
        .await;
    assert_eq!(titles(&page), ["after"]);
}
