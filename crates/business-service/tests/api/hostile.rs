//! Bad input of every kind on every write route: a clear problem, never a 5xx, no change.

use reqwest::{Method, StatusCode};
use serde_json::json;
use testkit::on_both_backends;

use crate::helpers::*;

on_both_backends!(no_input_makes_a_server_error);

async fn no_input_makes_a_server_error(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.user("alice").await;
    let p = app
        .prompt(
            &alice,
            json!({ "title": "keep", "content": "unchanged {{x}}" }),
        )
        .await;
    let id = p["id"].as_str().unwrap().to_owned();
    let (_, folder) = app
        .post("/api/business/folders", &alice, json!({ "name": "f" }))
        .await;
    let folder = folder["id"].as_str().unwrap().to_owned();
    let (_, cats) = app.get("/api/business/categories", &alice).await;
    let cat = cats[1]["id"].as_str().unwrap().to_owned();
    let routes = [
        (Method::POST, "/api/business/prompts".to_owned()),
        (Method::PUT, format!("/api/business/prompts/{id}")),
        (Method::PATCH, format!("/api/business/prompts/{id}")),
        (Method::POST, format!("/api/business/prompts/{id}/render")),
        (
            Method::POST,
            format!("/api/business/prompts/{id}/versions/1/restore"),
        ),
        (Method::POST, "/api/business/folders".to_owned()),
        (Method::PATCH, format!("/api/business/folders/{folder}")),
        (Method::POST, "/api/business/tags/rename".to_owned()),
        (Method::POST, "/api/business/tags/merge".to_owned()),
        (Method::POST, "/api/business/categories".to_owned()),
        (Method::PATCH, format!("/api/business/categories/{cat}")),
        (Method::POST, "/api/business/import".to_owned()),
    ];
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("application/json", b"null".to_vec()),
        ("application/json", b"[]".to_vec()),
        ("application/json", b"{}".to_vec()),
        ("application/json", br#"{"title": null, "content": null}"#.to_vec()),
        ("application/json", br#"{"title": "\u0000", "content": "{{"}"#.to_vec()),
        ("application/json", br#"{"title": "t", "content": "c", "folder_id": "00000000-0000-0000-0000-000000000000"}"#.to_vec()),
        ("application/json", br#"{"name": "../../etc", "parent_id": 7}"#.to_vec()),
        ("application/json", br#"{"from": "a", "to": "b", "tags": ["x"], "into": "y"}"#.to_vec()),
        ("application/json", br#"{"values": {"x": {"nested": true}}}"#.to_vec()),
        ("application/json", format!("{{\"title\": \"{}\", \"content\": \"x\"}}", "t".repeat(10_000)).into_bytes()),
        ("application/json", format!("{}{}", "[".repeat(5000), "]".repeat(5000)).into_bytes()),
        ("application/json", vec![0xff, 0xfe, 0x00]),
        ("application/yaml", b"a: &a [*a, *a]\nb: *a".to_vec()),
        ("application/zip", b"PK\x03\x04\x00\x00".to_vec()),
        ("text/plain", b"hello".to_vec()),
    ];
    for (method, path) in &routes {
        for (content_type, body) in &bodies {
            let (status, problem) = send(
                app.request(method.clone(), path, Some(&alice))
                    .header("content-type", *content_type)
                    .header("if-match", "\"r999\"")
                    .body(body.clone()),
            )
            .await;
            assert!(
                !status.is_server_error(),
                "{method} {path} {content_type} {:?}: {status} {problem}",
                String::from_utf8_lossy(&body[..body.len().min(80)])
            );
        }
    }
    let (_, still) = app
        .get(&format!("/api/business/prompts/{id}"), &alice)
        .await;
    assert_eq!(still["title"], "keep");
    assert_eq!(still["content"], "unchanged {{x}}");
    assert_eq!(still["version"], 1);
    // Anything else there came in through the import route, which takes a lone prompt
    // object as a library of one.
    let (_, list) = app.get("/api/business/prompts?status=all", &alice).await;
    for other in ids(&list).into_iter().filter(|i| *i != id) {
        let (_, versions) = app
            .get(&format!("/api/business/prompts/{other}/versions"), &alice)
            .await;
        assert_eq!(versions[0]["message"], "imported", "{list}");
    }
    let (status, _) =
        send(app.request(Method::GET, "/api/business/prompts", Some("not-a-token"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
