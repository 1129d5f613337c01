//! Search: relevance, Chinese, filters, sorting, pages that hold still while others write,
//! hostile queries, and the same answers from SQLite and PostgreSQL.

use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::on_both_backends;

use crate::helpers::*;

on_both_backends!(
    relevance_ranks_title_then_tags_then_description_then_text,
    chinese_words_of_one_and_two_characters_are_found,
    mixed_queries_and_prefixes_as_one_types,
    filters_combine_with_a_text_query,
    cursor_pages_hold_still_while_others_write,
    sorting_by_each_key,
    hostile_queries_find_nothing_and_break_nothing,
    search_never_shows_what_the_caller_may_not_read,
);

fn q(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn relevance_ranks_title_then_tags_then_description_then_text(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let t = app.user("alice").await;
    app.prompt(&t, json!({ "title": "Checklist", "content": "Go through each item. A review is due.", "tags": ["misc"] })).await;
    app.prompt(
        &t,
        json!({ "title": "Code Review helper", "content": "Look at the diff." }),
    )
    .await;
    app.prompt(&t, json!({ "title": "Weekly", "content": "Plan the week.", "description": "ends with a short review" })).await;
    app.prompt(
        &t,
        json!({ "title": "Checklist 2", "content": "Plan things.", "tags": ["review"] }),
    )
    .await;
    app.prompt(
        &t,
        json!({ "title": "Unrelated", "content": "Nothing to see." }),
    )
    .await;

    let (status, page) = app
        .get(&format!("/api/business/prompts?q={}", q("review")), &t)
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(
        titles(&page),
        ["Code Review helper", "Checklist 2", "Weekly", "Checklist"]
    );
    let scores: Vec<i64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["score"].as_i64().unwrap())
        .collect();
    assert_eq!(scores, [8, 4, 2, 1]);
    assert_eq!(page["search"]["terms"], json!(["review"]));
    // Snippets show where, marked safely.
    let first = &page["items"][3]["snippet"];
    assert_eq!(first["field"], "content");
    assert!(
        first["marked"]
            .as_str()
            .unwrap()
            .contains("<mark>review</mark>"),
        "{first}"
    );
    // Stemming: "reviews" finds "review".
    let (_, page) = app
        .get(&format!("/api/business/prompts?q={}", q("reviews ")), &t)
        .await;
    assert_eq!(ids(&page).len(), 4);
}

async fn chinese_words_of_one_and_two_characters_are_found(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let t = app.user("alice").await;
    app.prompt(
        &t,
        json!({ "title": "春天的诗", "content": "写一首关于春天的诗，要有花。" }),
    )
    .await;
    app.prompt(
        &t,
        json!({ "title": "春节祝福", "content": "给家人写春节祝福语。" }),
    )
    .await;
    app.prompt(
        &t,
        json!({ "title": "翻译助手", "content": "把下面的中文翻译成英文 English, keep the tone." }),
    )
    .await;
    app.prompt(
        &t,
        json!({ "title": "Poem", "content": "Write a poem about autumn." }),
    )
    .await;

    for (query, want) in [
        ("诗", vec!["春天的诗"]),
        ("春天", vec!["春天的诗"]),
        ("春", vec!["春天的诗", "春节祝福"]),
        ("祝福语", vec!["春节祝福"]),
        ("翻译 english", vec!["翻译助手"]),
        ("中文翻译", vec!["翻译助手"]),
        ("春天 autumn", vec![]),
        ("秋天", vec![]),
    ] {
        let (status, page) = app
            .get(&format!("/api/business/prompts?q={}", q(query)), &t)
            .await;
        assert_eq!(status, StatusCode::OK, "{query}: {page}");
        let mut got = titles(&page);
        got.sort();
        let mut want: Vec<String> = want.into_iter().map(str::to_owned).collect();
        want.sort();
        assert_eq!(got, want, "query {query}");
    }
    let (_, page) = app
        .get(&format!("/api/business/prompts?q={}", q("春天")), &t)
        .await;
    assert!(
        page["items"][0]["snippet"]["marked"]
            .as_str()
            .unwrap()
            .contains("<mark>春天</mark>"),
        "{page}"
    );
}

async fn mixed_queries_and_prefixes_as_one_types(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let t = app.user("alice").await;
    app.prompt(
        &t,
        json!({ "title": "GPT4写作助手", "content": "帮我写作" }),
    )
    .await;
    app.prompt(
        &t,
        json!({ "title": "Prompt engineering tips", "content": "Be specific." }),
    )
    .await;
    app.prompt(
        &t,
        json!({ "title": "Ｆｕｌｌ width", "content": "ＧＰＴ４ is here" }),
    )
    .await;
    for (query, want) in [
        ("gpt4", 2),
        ("GPT4 写作", 1),
        ("promp", 1),
        ("engin", 1),
        ("promp ", 0),
        ("full WIDTH", 1),
    ] {
        let (_, page) = app
            .get(&format!("/api/business/prompts?q={}", q(query)), &t)
            .await;
        assert_eq!(ids(&page).len(), want, "query {query:?}: {page}");
    }
}

async fn filters_combine_with_a_text_query(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let t = app.user("alice").await;
    let (_, folder) = app
        .post("/api/business/folders", &t, json!({ "name": "Work" }))
        .await;
    let folder = folder["id"].as_str().unwrap().to_owned();
    let a = app.prompt(&t, json!({ "title": "email one", "content": "x", "tags": ["work"], "folder_id": folder, "category": "写作" })).await;
    let b = app.prompt(&t, json!({ "title": "email two", "content": "x", "tags": ["home"], "visibility": "public" })).await;
    let c = app
        .prompt(
            &t,
            json!({ "title": "email three", "content": "x", "tags": ["work", "urgent"] }),
        )
        .await;
    app.post(
        &format!(
            "/api/business/prompts/{}/favorite",
            b["id"].as_str().unwrap()
        ),
        &t,
        json!({}),
    )
    .await;
    app.post(
        &format!(
            "/api/business/prompts/{}/archive",
            c["id"].as_str().unwrap()
        ),
        &t,
        json!({}),
    )
    .await;
    let after_a = a["created_at"].as_str().unwrap();

    for (params, want) in [
        ("", vec!["email one", "email two"]),
        ("&tag=work", vec!["email one"]),
        ("&tag=work&status=archived", vec!["email three"]),
        (
            "&tag=work&tag=urgent&tag_mode=all&status=all",
            vec!["email three"],
        ),
        (&format!("&folder={folder}") as &str, vec!["email one"]),
        ("&folder=none", vec!["email two"]),
        ("&category=写作", vec!["email one"]),
        ("&favorite=true", vec!["email two"]),
        ("&visibility=public", vec!["email two"]),
        (
            &format!("&created_after={}", q(after_a)) as &str,
            vec!["email one", "email two"],
        ),
        (&format!("&created_before={}", q(after_a)) as &str, vec![]),
        ("&status=all", vec!["email one", "email three", "email two"]),
    ] {
        let (status, page) = app
            .get(
                &format!("/api/business/prompts?q=email{params}&sort=title"),
                &t,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{params}: {page}");
        assert_eq!(titles(&page), want, "{params}");
        // The same filters without a text query agree.
        let (_, plain) = app
            .get(&format!("/api/business/prompts?sort=title{params}"), &t)
            .await;
        assert_eq!(titles(&plain), want, "{params} without q");
    }
    for bad in [
        "tag_mode=some",
        "folder=x",
        "created_after=yesterday",
        "sort=price",
        "limit=0",
        "limit=101",
        "cursor=abc",
        "colour=red",
        "status=gone",
        "sort=relevance",
    ] {
        let (status, problem) = app.get(&format!("/api/business/prompts?{bad}"), &t).await;
        assert_problem(
            status,
            &problem,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation-failed",
        );
    }
}

async fn cursor_pages_hold_still_while_others_write(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let t = app.user("alice").await;
    for i in 0..25 {
        app.prompt(
            &t,
            json!({ "title": format!("alpha {i:02}"), "content": "alpha text" }),
        )
        .await;
    }
    for base in [
        "/api/business/prompts?q=alpha&limit=10",
        "/api/business/prompts?limit=10",
        "/api/business/prompts?limit=10&sort=title",
    ] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let path = match &cursor {
                Some(c) => format!("{base}&cursor={c}"),
                None => base.to_owned(),
            };
            let (status, page) = app.get(&path, &t).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            seen.extend(titles(&page));
            pages += 1;
            if pages == 1 {
                // Others write between pages: new prompts, and an edit of one already seen.
                for i in 0..3 {
                    app.prompt(
                        &t,
                        json!({ "title": format!("alpha new {i}"), "content": "alpha" }),
                    )
                    .await;
                }
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
            assert!(pages < 10, "pages end");
        }
        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(
            unique.len(),
            seen.len(),
            "{base}: no prompt twice: {seen:?}"
        );
        for i in 0..25 {
            assert!(
                seen.contains(&format!("alpha {i:02}")),
                "{base}: alpha {i:02} missing from {seen:?}"
            );
        }
        // Clean up the new ones for the next round.
        let (_, news) = app.get("/api/business/prompts?q=new&limit=100", &t).await;
        for id in ids(&news) {
            app.delete(&format!("/api/business/prompts/{id}"), &t).await;
        }
    }
}

async fn sorting_by_each_key(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let t = app.user("alice").await;
    let b = app
        .prompt(&t, json!({ "title": "banana note", "content": "fruit" }))
        .await;
    let a = app
        .prompt(&t, json!({ "title": "Apple note", "content": "fruit" }))
        .await;
    let c = app
        .prompt(&t, json!({ "title": "cherry note", "content": "fruit" }))
        .await;
    for _ in 0..2 {
        app.post(
            &format!("/api/business/prompts/{}/use", c["id"].as_str().unwrap()),
            &t,
            json!({}),
        )
        .await;
    }
    app.post(
        &format!("/api/business/prompts/{}/use", a["id"].as_str().unwrap()),
        &t,
        json!({}),
    )
    .await;
    app.patch(
        &format!("/api/business/prompts/{}", b["id"].as_str().unwrap()),
        &t,
        json!({ "description": "touched" }),
    )
    .await;
    for q_part in ["", "q=fruit&"] {
        for (sort, want) in [
            ("sort=title", ["Apple note", "banana note", "cherry note"]),
            (
                "sort=title&order=desc",
                ["cherry note", "banana note", "Apple note"],
            ),
            ("sort=usage", ["cherry note", "Apple note", "banana note"]),
            ("sort=created", ["cherry note", "Apple note", "banana note"]),
            (
                "sort=created&order=asc",
                ["banana note", "Apple note", "cherry note"],
            ),
            ("sort=updated", ["banana note", "cherry note", "Apple note"]),
        ] {
            let (status, page) = app
                .get(&format!("/api/business/prompts?{q_part}{sort}"), &t)
                .await;
            assert_eq!(status, StatusCode::OK, "{page}");
            assert_eq!(titles(&page), want, "{q_part}{sort}");
        }
    }
}

async fn hostile_queries_find_nothing_and_break_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let t = app.user("alice").await;
    app.prompt(
        &t,
        json!({ "title": "plain", "content": "AND OR NOT NEAR the quick fox" }),
    )
    .await;
    for query in [
        "\"",
        "\"\"",
        "*",
        "fox*",
        "(",
        ")",
        "fox AND",
        "NEAR(fox quick)",
        "scope : zzsactive",
        "doc:fox",
        "' OR 1=1 --",
        "fox & quick",
        "fox | quick",
        "!fox",
        "fox <-> quick",
        "fox:*",
        "zz",
        "zzs",
        "\u{0000}",
        "\u{202E}fox",
        "🦊",
        "%",
        "_",
        "\\",
        "{{x}}",
    ] {
        let (status, page) = app
            .get(&format!("/api/business/prompts?q={}", q(query)), &t)
            .await;
        assert_eq!(status, StatusCode::OK, "{query:?}: {page}");
        for item in page["items"].as_array().unwrap() {
            assert_eq!(item["title"], "plain");
        }
    }
    let (_, page) = app
        .get(
            &format!("/api/business/prompts?q={}", q("NEAR(fox quick)")),
            &t,
        )
        .await;
    assert_eq!(
        titles(&page),
        ["plain"],
        "operators are words like any other"
    );
    let (status, problem) = app
        .get(&format!("/api/business/prompts?q={}", "x".repeat(201)), &t)
        .await;
    assert_problem(
        status,
        &problem,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation-failed",
    );
    let (status, _) = app.get("/api/business/prompts?q=%FF%FE", &t).await;
    assert!(!status.is_server_error());
}

async fn search_never_shows_what_the_caller_may_not_read(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    app.prompt(
        &alice,
        json!({ "title": "secret plan", "content": "private words" }),
    )
    .await;
    app.prompt(
        &alice,
        json!({ "title": "open plan", "content": "public words", "visibility": "public" }),
    )
    .await;
    app.prompt(
        &alice,
        json!({ "title": "link plan", "content": "unlisted words", "visibility": "unlisted" }),
    )
    .await;
    let (_, own) = app.get("/api/business/prompts?q=plan", &bob).await;
    assert!(ids(&own).is_empty());
    let (_, public) = app
        .get("/api/business/prompts?q=plan&visibility=public", &bob)
        .await;
    assert_eq!(titles(&public), ["open plan"]);
    let alice_id = TestApp::user_id(&alice);
    let (_, hers) = app
        .get(
            &format!("/api/business/prompts?q=plan&owner={alice_id}"),
            &bob,
        )
        .await;
    assert_eq!(titles(&hers), ["open plan"]);
    let (_, trash) = app
        .get(
            &format!("/api/business/prompts?owner={alice_id}&status=deleted"),
            &bob,
        )
        .await;
    assert!(
        trash.get("items").is_none() || ids(&trash).is_empty(),
        "{trash}"
    );
}

/// One corpus, loaded into a SQLite-backed and a PostgreSQL-backed service: every query gets
/// the same answer, in the same order, from both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_gives_the_same_answers_on_sqlite_and_postgres() {
    let sqlite = TestApp::spawn(Backend::Sqlite).await;
    let postgres = TestApp::spawn(Backend::Postgres).await;
    let words = [
        "prompt", "review", "email", "翻译", "写作", "春天", "代码", "summary", "poem", "诗",
        "data", "分析",
    ];
    let mut corpus = Vec::new();
    for i in 0..120usize {
        let w = |k: usize| words[(i * 7 + k * 5) % words.len()];
        let category = ["写作", "编程", "分析"][i % 3];
        let visibility = ["private", "public", "unlisted"][i % 3];
        corpus.push(json!({
            "title": format!("{} {} {i}", w(0), w(1)),
            "content": format!("第{i}条: {} {} and {} — {}的例子", w(2), w(3), w(4), w(5)),
            "description": if i % 3 == 0 { Value::String(format!("about {}", w(6))) } else { Value::Null },
            "tags": [w(7), format!("t{}", i % 4)],
            "category": category,
            "visibility": visibility,
        }));
    }
    let mut tokens = Vec::new();
    for app in [&sqlite, &postgres] {
        let t = app.user("alice").await;
        for p in &corpus {
            app.prompt(&t, p.clone()).await;
        }
        tokens.push(t);
    }
    let queries = [
        "prompt",
        "review email",
        "翻译",
        "写作",
        "春",
        "春天",
        "代码 review",
        "诗",
        "分析 data",
        "summ",
        "例子",
        "t1",
        "第1条",
        "poem 诗",
        "nothing-here",
        "写",
        "e",
    ];
    let filters = [
        "",
        "&tag=t2",
        "&category=编程",
        "&visibility=public",
        "&sort=title",
        "&sort=created&order=asc",
        "&limit=7",
        "&status=all&tag=t3&tag=t1",
    ];
    let mut compared = 0;
    for query in queries {
        for filter in filters {
            let path = format!("/api/business/prompts?q={}{filter}", q(query));
            let mut answers = Vec::new();
            for (app, t) in [&sqlite, &postgres].iter().zip(&tokens) {
                let (status, page) = app.get(&path, t).await;
                assert_eq!(status, StatusCode::OK, "{path}: {page}");
                let scores: Vec<Value> = page["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i["score"].clone())
                    .collect();
                answers.push((titles(&page), scores, page["search"]["ranked"].clone()));
            }
            assert_eq!(answers[0], answers[1], "{path}");
            compared += usize::from(!answers[0].0.is_empty());
        }
    }
    assert!(compared > 60, "most queries find something: {compared}");
}
