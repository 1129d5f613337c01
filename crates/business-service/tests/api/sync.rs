//! Multi-device sync: two devices of one user editing offline, pulling and pushing.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use testkit::on_both_backends;

use crate::helpers::*;

/// Pulls every change after `cursor` (all of them without one); returns them and the new
/// cursor.
async fn pull(
    app: &TestApp,
    token: &str,
    cursor: Option<&str>,
    limit: u64,
) -> (Vec<Value>, String) {
    let mut cursor = cursor.map(str::to_owned);
    let mut all = Vec::new();
    for _ in 0..1000 {
        let path = match &cursor {
            Some(c) => format!("/api/business/sync/changes?since={c}&limit={limit}"),
            None => format!("/api/business/sync/changes?limit={limit}"),
        };
        let (status, page) = app.get(&path, token).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        all.extend(page["changes"].as_array().unwrap().iter().cloned());
        cursor = Some(page["next_cursor"].as_str().unwrap().to_owned());
        if !page["has_more"].as_bool().unwrap() {
            break;
        }
    }
    (all, cursor.unwrap())
}

async fn push(app: &TestApp, token: &str, device: &str, changes: Value) -> Vec<Value> {
    let (status, body) = app
        .post(
            "/api/business/sync/push",
            token,
            json!({ "device_id": device, "changes": changes }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["results"].as_array().unwrap().clone()
}

fn find<'a>(changes: &'a [Value], id: &str) -> Vec<&'a Value> {
    changes.iter().filter(|c| c["id"] == id).collect()
}

on_both_backends!(offline_edits_on_two_devices_conflict_instead_of_overwriting);
async fn offline_edits_on_two_devices_conflict_instead_of_overwriting(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.user("syncer").await;

    // The laptop creates a folder and a prompt offline, with ids it chose, and pushes.
    let folder = uuid::Uuid::now_v7().to_string();
    let prompt = uuid::Uuid::now_v7().to_string();
    let results = push(
        &app,
        &token,
        "laptop",
        json!([
            { "change_id": "l-1", "entity": "folder", "op": "upsert", "id": folder,
              "data": { "name": "离线 Offline" } },
            { "change_id": "l-2", "entity": "prompt", "op": "upsert", "id": prompt,
              "data": { "title": "Draft", "content": "Hello {{name}}", "folder_id": folder,
                        "tags": ["sync"] } },
        ]),
    )
    .await;
    assert_eq!(results[0]["status"], "applied", "{results:?}");
    assert_eq!(results[1]["status"], "applied", "{results:?}");
    let base = results[1]["revision"].as_i64().unwrap();

    // The phone syncs for the first time: it gets both, as they are now.
    let (first, phone_cursor) = pull(&app, &token, None, 1).await;
    let p = find(&first, &prompt);
    assert_eq!(p.len(), 1, "{first:?}");
    assert_eq!(p[0]["op"], "upsert");
    assert_eq!(p[0]["data"]["title"], "Draft");
    assert_eq!(p[0]["data"]["folder_id"], folder.as_str());
    assert_eq!(p[0]["revision"], base);
    assert_eq!(find(&first, &folder)[0]["data"]["name"], "离线 Offline");

    // Both edit offline from the same revision. The laptop pushes first and wins.
    let laptop = push(
        &app,
        &token,
        "laptop",
        json!([{ "change_id": "l-3", "entity": "prompt", "op": "upsert", "id": prompt,
                 "base_revision": base,
                 "data": { "title": "Draft", "content": "Hello {{name}}, from the laptop" } }]),
    )
    .await;
    assert_eq!(laptop[0]["status"], "applied", "{laptop:?}");
    let after_laptop = laptop[0]["revision"].as_i64().unwrap();
    assert!(after_laptop > base);

    // The phone's edit, made on the old revision, is a conflict carrying the server's
    // version; the laptop's text is not overwritten.
    let phone = push(
        &app,
        &token,
        "phone",
        json!([{ "change_id": "p-1", "entity": "prompt", "op": "upsert", "id": prompt,
                 "base_revision": base,
                 "data": { "title": "Draft", "content": "Hello {{name}}, from the phone" } }]),
    )
    .await;
    assert_eq!(phone[0]["status"], "conflict", "{phone:?}");
    assert_eq!(phone[0]["server"]["revision"], after_laptop);
    assert_eq!(
        phone[0]["server"]["data"]["content"],
        "Hello {{name}}, from the laptop"
    );
    let (status, now) = app
        .get(&format!("/api/business/prompts/{prompt}"), &token)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(now["content"], "Hello {{name}}, from the laptop");

    // The phone resolves the conflict on the server's revision; that applies.
    let resolved = push(
        &app,
        &token,
        "phone",
        json!([{ "change_id": "p-2", "entity": "prompt", "op": "upsert", "id": prompt,
                 "base_revision": after_laptop,
                 "data": { "title": "Draft", "content": "Hello {{name}}, merged" } }]),
    )
    .await;
    assert_eq!(resolved[0]["status"], "applied", "{resolved:?}");
    let merged = resolved[0]["revision"].as_i64().unwrap();

    // The laptop retries its earlier push (it never saw the answer): answered again,
    // applied once, the phone's later change intact.
    let retried = push(
        &app,
        &token,
        "laptop",
        json!([{ "change_id": "l-3", "entity": "prompt", "op": "upsert", "id": prompt,
                 "base_revision": base,
                 "data": { "title": "Draft", "content": "Hello {{name}}, from the laptop" } }]),
    )
    .await;
    assert_eq!(retried[0]["status"], "applied");
    assert_eq!(retried[0]["replayed"], true);
    let (_, now) = app
        .get(&format!("/api/business/prompts/{prompt}"), &token)
        .await;
    assert_eq!(now["content"], "Hello {{name}}, merged");
    assert_eq!(now["etag"], format!("\"r{merged}\""));

    // Every version kept: created, laptop's, merged.
    let (_, versions) = app
        .get(&format!("/api/business/prompts/{prompt}/versions"), &token)
        .await;
    assert_eq!(versions.as_array().map(Vec::len), Some(3), "{versions}");

    // The phone pulls from its cursor: the prompt once, as it is now.
    let (changes, phone_cursor) = pull(&app, &token, Some(&phone_cursor), 50).await;
    let p = find(&changes, &prompt);
    assert_eq!(p.len(), 1, "{changes:?}");
    assert_eq!(p[0]["data"]["content"], "Hello {{name}}, merged");

    // A delete from the laptop based on a stale revision is a conflict; on the current
    // one it applies, and the phone learns it as a tombstone.
    let stale = push(
        &app,
        &token,
        "laptop",
        json!([{ "change_id": "l-4", "entity": "prompt", "op": "delete", "id": prompt,
                 "base_revision": after_laptop }]),
    )
    .await;
    assert_eq!(stale[0]["status"], "conflict", "{stale:?}");
    let deleted = push(
        &app,
        &token,
        "laptop",
        json!([{ "change_id": "l-5", "entity": "prompt", "op": "delete", "id": prompt,
                 "base_revision": merged }]),
    )
    .await;
    assert_eq!(deleted[0]["status"], "applied", "{deleted:?}");
    let (changes, _) = pull(&app, &token, Some(&phone_cursor), 50).await;
    let p = find(&changes, &prompt);
    assert_eq!(p.len(), 1, "{changes:?}");
    assert_eq!(p[0]["op"], "delete");
    assert!(p[0].get("data").is_none());

    // A change to a deleted prompt is a conflict that says so.
    let late = push(
        &app,
        &token,
        "phone",
        json!([{ "change_id": "p-3", "entity": "prompt", "op": "upsert", "id": prompt,
                 "base_revision": merged,
                 "data": { "title": "Draft", "content": "too late" } }]),
    )
    .await;
    assert_eq!(late[0]["status"], "conflict");
    assert_eq!(late[0]["server"]["op"], "delete");
}

on_both_backends!(changes_made_elsewhere_reach_devices_and_tag_changes_are_conflicts);
async fn changes_made_elsewhere_reach_devices_and_tag_changes_are_conflicts(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.user("tagger").await;
    let a = app
        .prompt(
            &token,
            json!({ "title": "A", "content": "a", "tags": ["old"] }),
        )
        .await;
    let b = app
        .prompt(
            &token,
            json!({ "title": "B", "content": "b", "tags": ["old", "keep"] }),
        )
        .await;
    let (first, cursor) = pull(&app, &token, None, 100).await;
    assert_eq!(first.len(), 2, "{first:?}");
    let base_a = find(&first, a["id"].as_str().unwrap())[0]["revision"]
        .as_i64()
        .unwrap();

    // A rename on the web changes both prompts: devices get both, and a device's offline
    // edit made before the rename is a conflict rather than undoing it.
    let (status, _) = app
        .post(
            "/api/business/tags/rename",
            &token,
            json!({ "from": "old", "to": "new" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (changes, _) = pull(&app, &token, Some(&cursor), 100).await;
    let ids: Vec<&str> = changes
        .iter()
        .filter(|c| c["entity"] == "prompt")
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{changes:?}");
    assert!(ids.contains(&a["id"].as_str().unwrap()));
    assert!(ids.contains(&b["id"].as_str().unwrap()));
    assert!(
        changes
            .iter()
            .any(|c| c["entity"] == "tag" && c["id"] == "old" && c["op"] == "delete"),
        "{changes:?}"
    );
    for c in changes.iter().filter(|c| c["entity"] == "prompt") {
        assert!(
            c["data"]["tags"]
                .as_array()
                .unwrap()
                .contains(&json!("new")),
            "{c}"
        );
    }
    let offline = push(
        &app,
        &token,
        "tablet",
        json!([{ "change_id": "t-1", "entity": "prompt", "op": "upsert", "id": a["id"],
                 "base_revision": base_a,
                 "data": { "title": "A", "content": "a edited", "tags": ["old"] } }]),
    )
    .await;
    assert_eq!(offline[0]["status"], "conflict", "{offline:?}");
    assert_eq!(
        offline[0]["server"]["data"]["tags"],
        json!(["new"]),
        "{offline:?}"
    );
}

on_both_backends!(pushes_are_checked_like_every_other_write);
async fn pushes_are_checked_like_every_other_write(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let mine = app
        .prompt(&alice, json!({ "title": "Mine", "content": "private" }))
        .await;

    // Bob cannot change Alice's prompt by pushing: it does not exist for him.
    let results = push(
        &app,
        &bob,
        "bobs-phone",
        json!([{ "change_id": "b-1", "entity": "prompt", "op": "upsert", "id": mine["id"],
                 "base_revision": 1, "data": { "title": "Taken", "content": "x" } }]),
    )
    .await;
    assert_eq!(results[0]["status"], "conflict");
    assert_eq!(results[0]["server"]["op"], "delete");
    let (_, still) = app
        .get(
            &format!("/api/business/prompts/{}", mine["id"].as_str().unwrap()),
            &alice,
        )
        .await;
    assert_eq!(still["title"], "Mine");

    // Nor create one with the id of Alice's.
    let results = push(
        &app,
        &bob,
        "bobs-phone",
        json!([{ "change_id": "b-2", "entity": "prompt", "op": "upsert", "id": mine["id"],
                 "data": { "title": "Taken", "content": "x" } }]),
    )
    .await;
    assert_ne!(results[0]["status"], "applied", "{results:?}");

    // A bad template is refused with the problem POST would give; nothing is written.
    let id = uuid::Uuid::now_v7().to_string();
    let results = push(
        &app,
        &bob,
        "bobs-phone",
        json!([{ "change_id": "b-3", "entity": "prompt", "op": "upsert", "id": id,
                 "data": { "title": "Bad", "content": "{{unclosed" } }]),
    )
    .await;
    assert_eq!(results[0]["status"], "refused", "{results:?}");
    assert_eq!(results[0]["problem"]["status"], 422);
    let (status, _) = app.get(&format!("/api/business/prompts/{id}"), &bob).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Malformed pushes are problems and change nothing.
    for (body, field) in [
        (
            json!({ "changes": [{ "change_id": "", "entity": "prompt", "op": "upsert",
                               "id": id, "data": {} }] }),
            "changes[0].change_id",
        ),
        (
            json!({ "changes": [{ "change_id": "x", "entity": "user", "op": "upsert",
                               "id": id, "data": {} }] }),
            "changes[0].entity",
        ),
        (
            json!({ "changes": [{ "change_id": "x", "entity": "prompt", "op": "delete",
                               "id": id }] }),
            "changes[0].base_revision",
        ),
        (
            json!({ "changes": [{ "change_id": "x", "entity": "prompt", "op": "upsert",
                               "id": id, "data": 5 }] }),
            "changes[0].data",
        ),
        (
            json!({ "device_id": "bad device\u{0}", "changes": [] }),
            "device_id",
        ),
    ] {
        let (status, problem) = app.post("/api/business/sync/push", &bob, body).await;
        assert_problem(
            status,
            &problem,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation-failed",
        );
        assert!(
            invalid_fields(&problem).contains(&field.to_owned()),
            "{problem}"
        );
    }
    let (status, problem) = app
        .post(
            "/api/business/sync/push",
            &bob,
            json!({ "changes": [{ "change_id": "x", "entity": "prompt", "op": "upsert",
                                  "id": "not-a-uuid", "data": {} }] }),
        )
        .await;
    assert!(status.is_client_error(), "{status} {problem}");
    let (status, problem) = app.get("/api/business/sync/changes?since=l1x", &bob).await;
    assert_problem(
        status,
        &problem,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation-failed",
    );
    let (changes, _) = pull(&app, &bob, None, 10).await;
    assert!(changes.is_empty(), "{changes:?}");
}

on_both_backends!(a_device_hears_of_changes_at_once_but_not_its_own);
async fn a_device_hears_of_changes_at_once_but_not_its_own(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.user("listener").await;
    let open = |device: &str| {
        app.request(
            Method::GET,
            &format!("/api/business/sync/stream?device_id={device}"),
            Some(&token),
        )
        .send()
    };
    let mut phone = open("phone").await.unwrap();
    assert_eq!(phone.status(), StatusCode::OK);
    assert!(
        phone.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut laptop = open("laptop").await.unwrap();

    // The laptop creates a prompt, saying who it is.
    let (status, created) = send(
        app.request(Method::POST, "/api/business/prompts", Some(&token))
            .header("x-device-id", "laptop")
            .json(&json!({ "title": "Live", "content": "now" })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap();

    let phone_heard = read_events(&mut phone, |text| text.contains(id)).await;
    assert!(phone_heard.contains("event: ready"), "{phone_heard}");
    assert!(phone_heard.contains("event: change"), "{phone_heard}");
    assert!(phone_heard.contains("\"op\":\"upsert\""), "{phone_heard}");

    // The laptop hears nothing of its own change: only the greeting, until the phone
    // changes something.
    let (status, _) = send(
        app.request(
            Method::DELETE,
            &format!("/api/business/prompts/{id}"),
            Some(&token),
        )
        .header("x-device-id", "phone"),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let laptop_heard = read_events(&mut laptop, |text| text.contains("\"op\":\"delete\"")).await;
    assert_eq!(
        laptop_heard.matches("\"op\":\"upsert\"").count(),
        0,
        "the laptop heard its own change: {laptop_heard}"
    );

    // Another user's stream hears nothing of this user's changes.
    let other = app.user("someone-else").await;
    let mut theirs = app
        .request(Method::GET, "/api/business/sync/stream", Some(&other))
        .send()
        .await
        .unwrap();
    app.prompt(&token, json!({ "title": "Private", "content": "x" }))
        .await;
    let heard = read_for(&mut theirs, std::time::Duration::from_millis(700)).await;
    assert!(!heard.contains("event: change"), "{heard}");
}

/// Reads a server-sent event stream until `done` holds for what was read (at most 10 s).
async fn read_events(response: &mut reqwest::Response, done: impl Fn(&str) -> bool) -> String {
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done(&text) {
        match tokio::time::timeout_at(deadline, response.chunk()).await {
            Ok(Ok(Some(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
            other => panic!("the stream ended or stalled ({other:?}); read so far: {text}"),
        }
    }
    text
}

async fn read_for(response: &mut reqwest::Response, wait: std::time::Duration) -> String {
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout_at(deadline, response.chunk()).await {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    text
}
