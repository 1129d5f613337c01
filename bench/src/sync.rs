//! Device sync on `promptflow up`: pushing 10,000 offline changes, a first sync of a
//! 10,000-prompt library and an incremental pull of 10,000 changes, each against the plain
//! REST call doing the same work in the same run.

use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, ensure};
use serde_json::{Value, json};

use crate::{Server, free_port, median, sibling, wait_ready};

struct Up {
    _server: Server,
    users: String,
    business: String,
}

async fn start_up() -> anyhow::Result<Up> {
    let data = tempfile::tempdir()?;
    let (users, business) = (free_port()?, free_port()?);
    let child = Command::new(sibling("promptflow")?)
        .args(["up", "--data-dir"])
        .arg(data.path())
        .env("PROMPTFLOW_USER__LISTEN", format!("127.0.0.1:{users}"))
        .env(
            "PROMPTFLOW_BUSINESS__LISTEN",
            format!("127.0.0.1:{business}"),
        )
        .env("PROMPTFLOW_BUSINESS__STARTER_CONTENT", "false")
        .env("PROMPTFLOW_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting promptflow up")?;
    let server = Server {
        child,
        addr: format!("127.0.0.1:{users}"),
        _data: data,
    };
    wait_ready(&server.addr).await?;
    wait_ready(&format!("127.0.0.1:{business}")).await?;
    Ok(Up {
        _server: server,
        users: format!("http://127.0.0.1:{users}"),
        business: format!("http://127.0.0.1:{business}/api/business"),
    })
}

async fn user(up: &Up, name: &str) -> anyhow::Result<String> {
    let addr = up.users.trim_start_matches("http://");
    crate::load::login_as(addr, name).await
}

fn prompt_data(i: usize) -> Value {
    json!({
        "title": format!("Offline prompt {i}"),
        "content": format!("Summarise {{{{text}}}} in {i} words, for {{{{audience|everyone}}}}. 提示{i}"),
        "tags": ["synced", format!("batch{}", i / 500)],
    })
}

/// Pulls from `since` until caught up; returns the cursor and how many changes came.
async fn pull(
    client: &reqwest::Client,
    up: &Up,
    token: &str,
    since: Option<&str>,
) -> anyhow::Result<(String, usize)> {
    let mut cursor = since.map(str::to_owned);
    let mut count = 0;
    loop {
        let mut url = format!("{}/sync/changes?limit=1000", up.business);
        if let Some(c) = &cursor {
            url.push_str(&format!("&since={c}"));
        }
        let page: Value = client
            .get(url)
            .bearer_auth(token)
            .send()
            .await?
            .json()
            .await?;
        count += page["changes"].as_array().map_or(0, Vec::len);
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        if page["has_more"] != true {
            break;
        }
    }
    Ok((cursor.context("no cursor")?, count))
}

pub async fn run(changes: usize, rounds: u32) -> anyhow::Result<()> {
    let up = start_up().await?;
    let client = reqwest::Client::new();
    let (mut post, mut push, mut list, mut first, mut incremental) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        eprintln!("sync round {}", round + 1);
        // Baseline for writes: the same prompts one POST at a time.
        let token = user(&up, &format!("poster{round}")).await?;
        let posts = 500;
        let started = Instant::now();
        for i in 0..posts {
            let r = client
                .post(format!("{}/prompts", up.business))
                .bearer_auth(&token)
                .json(&prompt_data(i))
                .send()
                .await?;
            ensure!(r.status().is_success(), "POST answered {}", r.status());
        }
        post.push(posts as f64 / started.elapsed().as_secs_f64());

        // A device comes online with `changes` prompts it made offline.
        let token = user(&up, &format!("syncer{round}")).await?;
        let started = Instant::now();
        for chunk in (0..changes).collect::<Vec<_>>().chunks(500) {
            let batch: Vec<Value> = chunk
                .iter()
                .map(|i| {
                    json!({ "change_id": format!("c{i}"), "entity": "prompt", "op": "upsert",
                            "id": uuid::Uuid::now_v7(), "data": prompt_data(*i) })
                })
                .collect();
            let answer: Value = client
                .post(format!("{}/sync/push", up.business))
                .bearer_auth(&token)
                .json(&json!({ "device_id": "laptop", "changes": batch }))
                .send()
                .await?
                .json()
                .await?;
            let applied = answer["results"]
                .as_array()
                .map_or(0, |r| r.iter().filter(|x| x["status"] == "applied").count());
            ensure!(applied == chunk.len(), "push not applied: {answer}");
        }
        push.push(changes as f64 / started.elapsed().as_secs_f64());

        // Baseline for reads: the library through the list API.
        let started = Instant::now();
        let mut cursor: Option<String> = None;
        let mut listed = 0;
        loop {
            let mut url = format!("{}/prompts?limit=100", up.business);
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let page: Value = client
                .get(url)
                .bearer_auth(&token)
                .send()
                .await?
                .json()
                .await?;
            listed += page["items"].as_array().map_or(0, Vec::len);
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        ensure!(listed == changes, "listed {listed} of {changes}");
        list.push(listed as f64 / started.elapsed().as_secs_f64());

        // Another device's first sync: the whole library.
        let started = Instant::now();
        let (cursor, got) = pull(&client, &up, &token, None).await?;
        ensure!(got >= changes, "first sync got {got} of {changes}");
        first.push(got as f64 / started.elapsed().as_secs_f64());

        // One rename touches every prompt: `changes` changes to pull from the cursor.
        let r = client
            .post(format!("{}/tags/rename", up.business))
            .bearer_auth(&token)
            .json(&json!({ "from": "synced", "to": "synced-everywhere" }))
            .send()
            .await?;
        ensure!(r.status().is_success(), "rename answered {}", r.status());
        let started = Instant::now();
        let (_, got) = pull(&client, &up, &token, Some(&cursor)).await?;
        ensure!(got >= changes, "incremental sync got {got} of {changes}");
        incremental.push(got as f64 / started.elapsed().as_secs_f64());
    }
    let (post, push, list, first, incremental) = (
        median(post),
        median(push),
        median(list),
        median(first),
        median(incremental),
    );
    println!(
        "\n### Device sync of {changes} changes (`promptflow up`, SQLite, release build)\n\n\
         One client, requests one after another; median of {rounds} rounds, a fresh user each \
         round. Baselines in the same run: one `POST /api/business/prompts` per prompt (writes) \
         and the list API in pages of 100 (reads).\n"
    );
    println!("| operation | things/s | ratio to baseline |");
    println!("|---|---:|---:|");
    println!("| baseline: `POST /prompts`, one prompt per request | {post:.0} | 1.00 |");
    println!(
        "| push {changes} offline-created prompts, 500 per `POST /sync/push` | {push:.0} | {:.2} |",
        push / post
    );
    println!("| baseline: `GET /prompts?limit=100`, every page | {list:.0} | 1.00 |");
    println!(
        "| first sync: `GET /sync/changes?limit=1000`, every page | {first:.0} | {:.2} |",
        first / list
    );
    println!(
        "| incremental: {changes} changes (a tag renamed on every prompt) after a cursor | {incremental:.0} | {:.2} |",
        incremental / list
    );
    Ok(())
}
