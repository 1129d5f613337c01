//! business-service on a generated library (1,000,000 prompts by default), on SQLite and on
//! PostgreSQL: search latency for rare, common and Chinese terms, and create, update and
//! render throughput, each beside a baseline (reading one prompt by id) in the same run.
//!
//! The library is loaded straight into business_db through the service's own bulk path, and
//! kept between runs (`target/bench-data`, and PostgreSQL databases named after its size), so
//! a rerun measures without loading again.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use business_service::storage::Store;
use business_service::storage::prompts::PromptInput;
use platform::settings::DatabaseSettings;
use serde_json::json;

use crate::load::{self, Call};
use crate::{Server, free_port, median, sibling, wait_ready};

/// Words injected at known rates so that queries have known hit counts.
pub const RARE: &str = "zyxquark";
pub const COMMON: &str = "prompt";
pub const CHINESE_COMMON: &str = "提示";
pub const CHINESE_RARE: &str = "麒麟";

/// A small deterministic generator (SplitMix64): the same library every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Roughly Zipf-distributed rank in 0..n: a few words very common, most rare.
    fn zipf(&mut self, n: usize) -> usize {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((n as f64).powf(u) - 1.0) as usize % n
    }
}

const ENGLISH_HEAD: &[&str] = &[
    "the",
    "a",
    "to",
    "and",
    "of",
    "in",
    "for",
    "you",
    "write",
    "with",
    "this",
    "is",
    "an",
    "as",
    "be",
    "your",
    "that",
    "on",
    "text",
    "email",
    "code",
    "summary",
    "review",
    "answer",
    "user",
    "data",
    "story",
    "list",
    "plan",
    "explain",
    "translate",
    "product",
    "customer",
    "report",
    "article",
    "question",
    "idea",
    "style",
    "tone",
    "short",
    "clear",
    "friendly",
    "formal",
    "step",
    "example",
    "draft",
    "brief",
    "outline",
    "title",
    "topic",
    "meeting",
    "language",
];
const SYLLABLES: &[&str] = &[
    "ba", "ko", "ri", "mu", "te", "sa", "lo", "ne", "vi", "du", "ka", "po", "li", "zu", "me", "ro",
    "ta", "ni", "fe", "go", "an", "el", "or", "us", "im",
];
const HANZI: &str = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处队南给色光门即保治北造百规热领七海口东导器压志世金增争济阶油思术极交受联什认六共权收证改清己美再采转更单风切打白教速花带安场身车例真务具万每目至达走积示议声报斗完类八离华名确才科张信马节话米整空元况今集温传土许步群广石记需段研界拉林律叫且究观越织装影算低持音众书布复容儿须际商非验连断深难近矿千周委素技备半办青省列习响约支般史感劳便团往酸历市克何除消构府称太准精值号率族维划选标写存候毛亲快效斯院查江型眼王按格养易置派层片始却专状育厂京识适属圆包火住调满县局照参红细引听该铁价严龙飞";

fn english_word(rng: &mut Rng) -> String {
    let rank = rng.zipf(30_000);
    if rank < ENGLISH_HEAD.len() {
        return ENGLISH_HEAD[rank].to_owned();
    }
    // A pronounceable made-up word, the same one for the same rank.
    let mut r = rank as u64;
    let mut word = String::new();
    for _ in 0..(2 + rank % 3) {
        word.push_str(SYLLABLES[(r % SYLLABLES.len() as u64) as usize]);
        r /= SYLLABLES.len() as u64;
    }
    word
}

fn chinese_word(rng: &mut Rng, hanzi: &[char]) -> String {
    let a = rng.zipf(hanzi.len());
    let b = rng.zipf(hanzi.len());
    [hanzi[a], hanzi[(a * 7 + b) % hanzi.len()]]
        .iter()
        .collect()
}

/// Prompt `i` of the library: half English, a third Chinese, the rest mixed, of lengths
/// like real prompts (a line to a few paragraphs).
fn prompt(i: u64, total: u64, hanzi: &[char]) -> PromptInput {
    let mut rng = Rng(i.wrapping_mul(2654435761) ^ 0x5EED);
    let kind = rng.below(10);
    let words = |rng: &mut Rng, n: usize, sep: &str| -> String {
        (0..n)
            .map(|_| match kind {
                0..=4 => english_word(rng),
                5..=7 => chinese_word(rng, hanzi),
                _ => {
                    if rng.below(2) == 0 {
                        english_word(rng)
                    } else {
                        chinese_word(rng, hanzi)
                    }
                }
            })
            .collect::<Vec<_>>()
            .join(sep)
    };
    let sep = if (5..=7).contains(&kind) { "" } else { " " };
    let n = 2 + rng.below(6);
    let title = words(&mut rng, n, sep);
    let n = 20 + rng.zipf(300);
    let mut content = words(&mut rng, n, sep);
    // Known rates: COMMON in 30%, CHINESE_COMMON in 10%, the rare ones in ~20 prompts.
    if rng.below(10) < 3 {
        content.push_str(&format!(" {COMMON} {{{{input}}}}"));
    }
    if rng.below(10) == 0 {
        content.push_str(CHINESE_COMMON);
    }
    let every = (total / 20).max(1);
    if i % every == every / 2 {
        content.push_str(&format!(" {RARE} {CHINESE_RARE}"));
    }
    let description = if rng.below(10) < 3 {
        let n = 5 + rng.below(15);
        Some(words(&mut rng, n, sep))
    } else {
        None
    };
    let tags = (0..rng.below(5))
        .map(|_| format!("tag{}", rng.zipf(300)))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    PromptInput {
        id: None,
        title: title.chars().take(200).collect(),
        description,
        tags,
        category: Some(["通用", "写作", "编程", "分析", "创意", "营销"][rng.below(6)].to_owned()),
        folder_id: None,
        visibility: [
            "private", "private", "private", "private", "public", "unlisted",
        ][rng.below(6)]
        .to_owned(),
        status: if rng.below(10) == 0 {
            "archived"
        } else {
            "active"
        }
        .to_owned(),
        slug: None,
        variables: business_service::domain::template::parse(&content)
            .ok()
            .and_then(|t| serde_json::to_value(t.variables()).ok())
            .unwrap_or_else(|| json!([])),
        content,
    }
}

struct Backend {
    name: &'static str,
    user_db: Option<String>,
    business_db: Option<String>,
}

pub async fn run(
    prompts: u64,
    rounds: u32,
    postgres: &str,
    only: Option<&str>,
) -> anyhow::Result<()> {
    let data_root = std::env::current_dir()?.join("target/bench-data");
    let backends = [
        Backend {
            name: "SQLite",
            user_db: None,
            business_db: None,
        },
        Backend {
            name: "PostgreSQL",
            user_db: Some(format!("{postgres}/pfbench_users_{prompts}")),
            business_db: Some(format!("{postgres}/pfbench_library_{prompts}")),
        },
    ];
    println!(
        "\n### business-service on a generated library of {prompts} prompts (release build)\n"
    );
    println!(
        "One user's library: half English, a third Chinese, the rest mixed; 20 to 320 words each; \
         `{COMMON}` in 30% of prompts, `{CHINESE_COMMON}` in 10%, `{RARE}` and `{CHINESE_RARE}` in 20. \
         Latencies: one client, requests one after another, {rounds} interleaved rounds of 40 per query; \
         throughput: 8 connections, {rounds} rounds of 3 s. Baseline: `GET /api/business/prompts/{{id}}` \
         on the same server in the same run."
    );
    for backend in backends
        .iter()
        .filter(|b| only.is_none_or(|o| o.eq_ignore_ascii_case(b.name)))
    {
        let dir = data_root.join(format!("{}-{prompts}", backend.name.to_lowercase()));
        std::fs::create_dir_all(&dir)?;
        measure(backend, &dir, prompts, rounds).await?;
    }
    Ok(())
}

async fn start_service(
    args: &[&str],
    dir: &PathBuf,
    env: &[(&str, String)],
) -> anyhow::Result<Server> {
    let port = free_port()?;
    let service = args.last().copied().unwrap_or("");
    let listen_key = if service == "user-service" {
        "PROMPTFLOW_USER__LISTEN"
    } else {
        "PROMPTFLOW_BUSINESS__LISTEN"
    };
    let mut cmd = Command::new(sibling("promptflow")?);
    cmd.args(args)
        .arg("--data-dir")
        .arg(dir)
        .env(listen_key, format!("127.0.0.1:{port}"))
        .env("PROMPTFLOW_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().context("starting promptflow")?;
    let server = Server {
        child,
        addr: format!("127.0.0.1:{port}"),
        _data: tempfile::tempdir()?,
    };
    wait_ready(&server.addr).await?;
    Ok(server)
}

async fn measure(
    backend: &Backend,
    dir: &PathBuf,
    prompts: u64,
    rounds: u32,
) -> anyhow::Result<()> {
    let mut user_env = vec![
        (
            "PROMPTFLOW_USER__PASSWORD_HASH__MEMORY_KIB",
            "8192".to_owned(),
        ),
        // user-service runs without business-service here: no library to provision.
        ("PROMPTFLOW_USER__PROVISION_LIBRARY", "false".to_owned()),
    ];
    if let Some(url) = &backend.user_db {
        user_env.push(("PROMPTFLOW_USER__DATABASE__URL", url.clone()));
    }
    let users = start_service(&["serve", "user-service"], dir, &user_env).await?;
    let token = load::login(&users.addr).await?;
    let owner = owner_of(&token)?;

    let business_url = backend
        .business_db
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.join("business.db").display()));
    let loaded = load_library(&business_url, owner, prompts).await?;
    // Loading can outlast an access token.
    let token = load::login(&users.addr).await?;

    let mut business_env = vec![(
        "PROMPTFLOW_BUSINESS__JWKS_URL",
        format!("http://{}/.well-known/jwks.json", users.addr),
    )];
    if let Some(url) = &backend.business_db {
        business_env.push(("PROMPTFLOW_BUSINESS__DATABASE__URL", url.clone()));
    }
    let business = start_service(&["serve", "business-service"], dir, &business_env).await?;
    let addr = business.addr.clone();
    let client = reqwest::Client::new();
    let base = format!("http://{addr}/api/business");

    // Prompts of this run to read, update and render.
    let mut own = Vec::new();
    for i in 0..16 {
        let created: serde_json::Value = client
            .post(format!("{base}/prompts"))
            .bearer_auth(&token)
            .json(&json!({ "title": format!("bench {i}"), "content": "Hello {{name}}, write about {{topic|prompts}} in a {{tone|friendly}} tone." }))
            .send()
            .await?
            .json()
            .await?;
        own.push(created["id"].as_str().context("created id")?.to_owned());
    }
    let own = Arc::new(own);
    let q = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let latency_paths: Vec<(String, String)> = vec![
        (
            "baseline: one prompt by id".into(),
            format!("/api/business/prompts/{}", own[0]),
        ),
        (
            "first page of the library (no query)".into(),
            "/api/business/prompts".into(),
        ),
        (
            format!("rare word `{RARE}`"),
            format!("/api/business/prompts?q={RARE}"),
        ),
        (
            format!("common word `{COMMON}` (30%)"),
            format!("/api/business/prompts?q={COMMON}"),
        ),
        (
            format!("two common words `{COMMON} the`"),
            format!("/api/business/prompts?q={}", q(&format!("{COMMON} the "))),
        ),
        (
            format!("Chinese `{CHINESE_COMMON}` (10%)"),
            format!("/api/business/prompts?q={}", q(CHINESE_COMMON)),
        ),
        (
            format!("rare Chinese `{CHINESE_RARE}`"),
            format!("/api/business/prompts?q={}", q(CHINESE_RARE)),
        ),
        (
            "one Chinese character `的`".into(),
            format!("/api/business/prompts?q={}", q("的")),
        ),
        (
            "prefix while typing `promp`".into(),
            "/api/business/prompts?q=promp".into(),
        ),
        (
            format!("`{COMMON}` + tag filter"),
            format!("/api/business/prompts?q={COMMON}&tag=tag1"),
        ),
    ];
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); latency_paths.len()];
    for _ in 0..rounds {
        for (i, (_, path)) in latency_paths.iter().enumerate() {
            for _ in 0..40 {
                let started = Instant::now();
                let response = client
                    .get(format!("http://{addr}{path}"))
                    .bearer_auth(&token)
                    .send()
                    .await?;
                anyhow::ensure!(
                    response.status().is_success(),
                    "{path}: {}",
                    response.status()
                );
                response.bytes().await?;
                samples[i].push(started.elapsed().as_secs_f64() * 1000.0);
            }
        }
    }
    println!("\n#### {} ({loaded})\n", backend.name);
    println!("| request | p50 ms | p99 ms | p50 ratio to baseline |");
    println!("|---|---:|---:|---:|");
    let base_p50 = percentile(&samples[0], 0.5);
    for ((label, _), s) in latency_paths.iter().zip(&samples) {
        let p50 = percentile(s, 0.5);
        println!(
            "| {label} | {p50:.2} | {:.2} | {:.1} |",
            percentile(s, 0.99),
            p50 / base_p50
        );
    }

    // Throughput, interleaved rounds.
    let read_one = {
        let own = own.clone();
        Arc::new(move |c: usize, _n: u64| {
            Call::get(&format!("/api/business/prompts/{}", own[c % own.len()]))
        }) as load::MakeCall
    };
    let create = Arc::new(|c: usize, n: u64| {
        Call {
        method: hyper::Method::POST,
        path: "/api/business/prompts".into(),
        body: json!({
            "title": format!("new {c}-{n}"),
            "content": format!("Created under load {c} {n}: summarise {{{{text}}}} for {{{{audience|everyone}}}}. 用中文回答。"),
            "tags": ["load", format!("c{c}")],
        })
        .to_string()
        .into(),
    }
    }) as load::MakeCall;
    let update = {
        let own = own.clone();
        Arc::new(move |c: usize, n: u64| {
            Call {
            method: hyper::Method::PATCH,
            path: format!("/api/business/prompts/{}", own[c % own.len()]),
            body: json!({ "content": format!("Hello {{{{name}}}}, revision {n} about {{{{topic|prompts}}}}.") }).to_string().into(),
        }
        }) as load::MakeCall
    };
    let render = {
        let own = own.clone();
        Arc::new(move |c: usize, n: u64| Call {
            method: hyper::Method::POST,
            path: format!("/api/business/prompts/{}/render", own[(c + 8) % own.len()]),
            body: json!({ "values": { "name": format!("user {n}"), "tone": "formal" } })
                .to_string()
                .into(),
        }) as load::MakeCall
    };
    let kinds: Vec<(&str, load::MakeCall)> = vec![
        ("baseline: read one prompt", read_one),
        ("create (new prompt, version 1, index)", create),
        ("update (new version, reindex)", update),
        ("render (variables)", render),
    ];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); kinds.len()];
    for _ in 0..rounds {
        for (i, (label, make)) in kinds.iter().enumerate() {
            let stats =
                load::run_calls(&addr, Some(&token), 8, Duration::from_secs(3), make.clone())
                    .await?;
            anyhow::ensure!(
                stats.failed == 0,
                "{label}: {} requests failed",
                stats.failed
            );
            rates[i].push(stats.rps());
        }
    }
    println!("\n| operation | req/s | ratio to baseline |");
    println!("|---|---:|---:|");
    let base = median(rates[0].clone());
    for ((label, _), r) in kinds.iter().zip(rates) {
        let rps = median(r);
        println!("| {label} | {rps:.0} | {:.2} |", rps / base);
    }
    drop(business);
    drop(users);
    Ok(())
}

pub(crate) fn percentile(samples: &[f64], q: f64) -> f64 {
    let mut v = samples.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return 0.0;
    }
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn owner_of(token: &str) -> anyhow::Result<uuid::Uuid> {
    use base64::Engine;
    let payload = token.split('.').nth(1).context("token")?;
    let claims: serde_json::Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload)?)?;
    Ok(uuid::Uuid::parse_str(
        claims["sub"].as_str().context("sub")?,
    )?)
}

/// Loads the library unless it is there already; says how it got there.
async fn load_library(url: &str, owner: uuid::Uuid, total: u64) -> anyhow::Result<String> {
    let db = platform::db::connect(url, &DatabaseSettings::default()).await?;
    db.migrate::<business_service::storage::migrations::Migrator>()
        .await?;
    let store = Store::new(db);
    let have = store.count_owned(owner).await?;
    if have >= total {
        store.optimize().await?;
        return Ok(format!("library of {have} prompts loaded before"));
    }
    let hanzi: Vec<char> = HANZI.chars().collect();
    let started = Instant::now();
    let mut i = have;
    while i < total {
        let batch: Vec<PromptInput> = (i..(i + 2000).min(total))
            .map(|k| prompt(k, total, &hanzi))
            .collect();
        i += store.bulk_create(owner, &batch).await? as u64;
        if i % 100_000 < 2000 {
            eprintln!(
                "loaded {i} of {total} in {:.0} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
    store.optimize().await?;
    let secs = started.elapsed().as_secs_f64();
    store.db().clone().close().await;
    Ok(format!(
        "loaded {} prompts in {secs:.0} s, {:.0} per second",
        total - have,
        (total - have) as f64 / secs.max(1e-9)
    ))
}
