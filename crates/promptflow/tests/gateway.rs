//! gateway-service end to end: discovery, user-service, business-service and the gateway
//! run as separate `promptflow serve` processes (events over RabbitMQ, databases on SQLite
//! or PostgreSQL), and every request goes through the gateway as a client's would.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use platform::events::QUEUES;
use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::{Backend, Databases, RabbitNamespace};

mod support;
use support::Proc;

const PASSWORD: &str = "correct horse battery";

/// The five default routes, then `extra` (YAML list items, indented by four spaces).
fn routes_yaml(extra: &str) -> String {
    format!(
        r#"  routes:
    - id: auth-public
      uri: lb://user-service
      predicates: ["Path=/api/auth/register,/api/auth/login,/api/auth/refresh,/api/auth/token,/api/auth/logout"]
      public: true
    - id: jwks
      uri: lb://user-service
      predicates: ["Path=/.well-known/jwks.json"]
      public: true
    - id: auth
      uri: lb://user-service
      predicates: ["Path=/api/auth/**"]
    - id: users
      uri: lb://user-service
      predicates: ["Path=/api/users/**"]
{extra}"#
    )
}

fn business_route(filters: &str) -> String {
    format!(
        "    - id: business\n      uri: lb://business-service\n      predicates: [\"Path=/api/business/**\"]\n{filters}"
    )
}

/// A whole system in separate processes. Everything is stopped when this is dropped.
/// Fields drop in order: the processes first, then what they used.
struct Stack {
    gateways: Vec<Proc>,
    business: Vec<Proc>,
    _user: Proc,
    discovery: Proc,
    client: reqwest::Client,
    env: Vec<(String, String)>,
    user_db: String,
    business_db: String,
    _rabbit: RabbitNamespace,
    _dbs: Databases,
    dir: tempfile::TempDir,
}

impl Stack {
    /// discovery, user-service and `business` business-service instances, without a gateway.
    fn services(backend: Backend, business: usize) -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let mut dbs = Databases::new(backend);
        let names: Vec<&str> = QUEUES.iter().map(|q| q.name).collect();
        let rabbit = RabbitNamespace::new(&names);
        let discovery = Proc::serve(
            "discovery-service",
            &sub(&dir, "discovery"),
            None,
            &support::env(&[("PROMPTFLOW_DISCOVERY_SERVICE__LISTEN", "127.0.0.1:0")]),
        );
        let eureka = format!("http://{}/eureka/", discovery.addr);
        let env = support::env(&[
            ("PROMPTFLOW_DISCOVERY__EUREKA_URLS", &eureka),
            ("PROMPTFLOW_DISCOVERY__FETCH_INTERVAL_SECS", "1"),
            ("PROMPTFLOW_DISCOVERY__RENEWAL_INTERVAL_SECS", "1"),
            ("PROMPTFLOW_DISCOVERY__LEASE_DURATION_SECS", "5"),
            ("PROMPTFLOW_EVENTS__TRANSPORT", "rabbitmq"),
            ("PROMPTFLOW_EVENTS__URL", &testkit::rabbitmq_url()),
            ("PROMPTFLOW_EVENTS__EXCHANGE", &rabbit.exchange),
            ("PROMPTFLOW_EVENTS__QUEUE_PREFIX", &rabbit.queue_prefix),
            ("PROMPTFLOW_EVENTS__RELAY_POLL_MS", "100"),
        ]);
        let user_db = dbs.url("user");
        let business_db = dbs.url("business");
        let mut user_env = env.clone();
        user_env.extend(support::env(&[
            ("PROMPTFLOW_USER__LISTEN", "127.0.0.1:0"),
            ("PROMPTFLOW_USER__DATABASE__URL", &user_db),
            ("PROMPTFLOW_USER__PASSWORD_HASH__MEMORY_KIB", "4096"),
        ]));
        let user = Proc::serve("user-service", &sub(&dir, "user"), None, &user_env);
        let mut stack = Stack {
            dir,
            _dbs: dbs,
            _rabbit: rabbit,
            env,
            user_db,
            business_db,
            discovery,
            _user: user,
            business: Vec::new(),
            gateways: Vec::new(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        };
        for _ in 0..business {
            stack.add_business();
        }
        stack
    }

    fn add_business(&mut self) {
        let mut env = self.env.clone();
        env.extend(support::env(&[
            ("PROMPTFLOW_BUSINESS__LISTEN", "127.0.0.1:0"),
            ("PROMPTFLOW_BUSINESS__DATABASE__URL", &self.business_db),
        ]));
        let n = self.business.len();
        let data = sub(&self.dir, &format!("business-{n}"));
        self.business
            .push(Proc::serve("business-service", &data, None, &env));
    }

    /// Starts a gateway with `gateway_yaml` (the body of the `gateway:` section) and `more`
    /// environment; returns its index in `gateways`.
    fn add_gateway(&mut self, gateway_yaml: &str, more: &[(&str, &str)]) -> usize {
        let n = self.gateways.len();
        let data = sub(&self.dir, &format!("gateway-{n}"));
        let file = data.join("gateway.yaml");
        std::fs::write(&file, gateway_file(gateway_yaml)).unwrap();
        let mut env = self.env.clone();
        // The test client is on loopback; it must not count as a trusted proxy here.
        env.extend(support::env(&[(
            "PROMPTFLOW_HTTP__TRUSTED_PROXIES",
            "192.0.2.1",
        )]));
        env.extend(support::env(more));
        self.gateways
            .push(Proc::serve("gateway-service", &data, Some(&file), &env));
        n
    }

    fn gateway_file(&self, n: usize) -> PathBuf {
        self.dir
            .path()
            .join(format!("gateway-{n}"))
            .join("gateway.yaml")
    }

    fn url(&self, path: &str) -> String {
        self.gateways[0].url(path)
    }

    /// Waits until `app` has `n` instances UP in the registry.
    async fn registered(&self, app: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let listing: Value = self
                .client
                .get(self.discovery.url(&format!("/eureka/apps/{app}")))
                .header("accept", "application/json")
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap_or(Value::Null);
            let up = listing["application"]["instance"]
                .as_array()
                .map_or(0, |list| {
                    list.iter().filter(|i| i["status"] == "UP").count()
                });
            if up >= n {
                return;
            }
            assert!(Instant::now() < deadline, "{app}: {up} of {n} instances UP");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Registers `name` through the gateway and logs in; returns (access, refresh, user id).
    async fn sign_up(&self, name: &str) -> (String, String, String) {
        let (status, body) = testkit::send(self.client.post(self.url("/api/auth/register")).json(
            &json!({ "username": name, "email": format!("{name}@example.com"), "password": PASSWORD }),
        ))
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, tokens) = testkit::send(
            self.client
                .post(self.url("/api/auth/login"))
                .json(&json!({ "username": name, "password": PASSWORD })),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{tokens}");
        (
            tokens["access_token"].as_str().unwrap().to_owned(),
            tokens["refresh_token"].as_str().unwrap().to_owned(),
            tokens["user"]["id"].as_str().unwrap().to_owned(),
        )
    }

    /// A token with `claims` signed by user-service's own current key (read from its
    /// database), for tokens user-service would not issue: expired ones.
    async fn sign_with_user_service_key(&self, claims: &Value) -> String {
        let db = platform::db::connect(&self.user_db, &Default::default())
            .await
            .unwrap();
        let keys = user_service::storage::Store::new(db)
            .published_keys(chrono_now())
            .await
            .unwrap();
        let key = keys.iter().find(|k| k.retired_at.is_none()).unwrap();
        let der = STANDARD.decode(&key.private_key).unwrap();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(
            &header,
            claims,
            &jsonwebtoken::EncodingKey::from_ed_der(&der),
        )
        .unwrap()
    }

    async fn metrics(&self, n: usize) -> String {
        self.client
            .get(self.gateways[n].url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

fn chrono_now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

fn sub(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::create_dir_all(&path).unwrap();
    path
}

fn gateway_file(gateway_yaml: &str) -> String {
    format!(
        "log:\n  level: info\ngateway:\n  listen: 127.0.0.1:0\n  reload_interval_secs: 1\n{gateway_yaml}"
    )
}

/// An upstream that tells what it received, in the test process.
struct Echo {
    addr: std::net::SocketAddr,
    hits: Arc<AtomicUsize>,
}

async fn echo() -> Echo {
    use axum::body::Body;
    use axum::extract::Request;
    use axum::response::IntoResponse;
    use futures_util::StreamExt;

    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let app = axum::Router::new()
        .route(
            "/slow",
            axum::routing::get(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                "late"
            }),
        )
        .route(
            "/drip",
            axum::routing::get(|| async {
                // Two parts a while apart: a proxy that buffers delivers neither early.
                let parts = futures_util::stream::iter([0u64, 1]).then(|i| async move {
                    if i == 1 {
                        tokio::time::sleep(Duration::from_millis(1500)).await;
                    }
                    Ok::<_, std::io::Error>(bytes::Bytes::from(format!("part {i}\n")))
                });
                Body::from_stream(parts)
            }),
        )
        .fallback(move |req: Request| {
            let hits = counted.clone();
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                let mut headers = BTreeMap::<String, Vec<String>>::new();
                for (k, v) in req.headers() {
                    headers
                        .entry(k.as_str().to_owned())
                        .or_default()
                        .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
                }
                let method = req.method().to_string();
                let uri = req.uri().clone();
                let mut body = req.into_body().into_data_stream();
                let mut len = 0usize;
                let mut chunks = 0usize;
                while let Some(chunk) = body.next().await {
                    match chunk {
                        Ok(c) => {
                            len += c.len();
                            chunks += 1;
                        }
                        Err(_) => break,
                    }
                }
                axum::Json(json!({
                    "method": method,
                    "path": uri.path(),
                    "query": uri.query(),
                    "headers": headers,
                    "body_len": len,
                    "chunks": chunks,
                }))
                .into_response()
            }
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Echo { addr, hits }
}

fn echo_routes(echo: &Echo) -> String {
    format!(
        "    - id: echo\n      uri: http://{addr}\n      predicates: [\"Path=/echo/**\"]\n      filters: [\"StripPrefix=1\"]\n    - id: echo-open\n      uri: http://{addr}\n      predicates: [\"Path=/open/**\"]\n      filters: [\"StripPrefix=1\", \"AddResponseHeader=X-Served-By, gateway\", \"RequestRateLimiter=1000, 1000\"]\n      public: true\n      metadata: {{ response-timeout: 500 }}\n",
        addr = echo.addr
    )
}

/// An upstream that frames its answers both ways at once (Content-Length and chunked),
/// chunked even to HTTP/1.0 requests: what a broken server or a smuggling attempt sends.
async fn double_framed_upstream() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
                    .await;
            });
        }
    });
    addr
}

/// A GET with the path exactly as given; the whole answer as text.
async fn raw_get(addr: &str, path: &str) -> String {
    raw_request(addr, path, "HTTP/1.1").await
}

/// As `raw_get`, in the given protocol version.
async fn raw_request(addr: &str, path: &str, version: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} {version}\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

fn header<'a>(seen: &'a Value, name: &str) -> Vec<&'a str> {
    seen["headers"][name]
        .as_array()
        .map(|v| v.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------

testkit::on_both_backends!(the_public_flow_goes_through_the_gateway);

/// What a client does, only ever talking to the gateway: sign up, sign in, keep, find and
/// render prompts, follow changes live, import a large library, refresh and sign out.
async fn the_public_flow_goes_through_the_gateway(backend: Backend) {
    let mut stack = tokio::task::block_in_place(|| Stack::services(backend, 1));
    let echo = echo().await;
    tokio::task::block_in_place(|| {
        stack.add_gateway(
            &routes_yaml(&format!("{}{}", business_route(""), echo_routes(&echo))),
            &[],
        )
    });
    let c = stack.client.clone();

    // Public: the key set and registration need no token.
    let (status, jwks) = testkit::send(c.get(stack.url("/.well-known/jwks.json"))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(jwks["keys"].as_array().is_some_and(|k| !k.is_empty()));
    let (access, refresh, user_id) = stack.sign_up("alice").await;

    let me = c
        .get(stack.url("/api/users/me"))
        .bearer_auth(&access)
        .header("x-request-id", "client-chosen-42")
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK);
    assert_eq!(me.headers()["x-request-id"], "client-chosen-42");
    let me: Value = me.json().await.unwrap();
    assert_eq!(me["id"], user_id.as_str());

    // Prompts, search in Chinese, rendering: business-service behind the gateway.
    let (status, created) = testkit::send(
        c.post(stack.url("/api/business/prompts"))
            .bearer_auth(&access)
            .json(&json!({ "title": "周报助手", "content": "请为{{团队}}写一份周报", "tags": ["写作"] })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let (status, found) = testkit::send(
        c.get(stack.url("/api/business/prompts"))
            .query(&[("q", "周报")])
            .bearer_auth(&access),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found["items"][0]["id"], id.as_str(), "{found}");
    let (status, rendered) = testkit::send(
        c.post(stack.url(&format!("/api/business/prompts/{id}/render")))
            .bearer_auth(&access)
            .json(&json!({ "values": { "团队": "搜索组" } })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rendered}");
    assert_eq!(rendered["text"], "请为搜索组写一份周报");

    // The live sync stream: events arrive through the gateway as they happen.
    let mut stream = c
        .get(stack.url("/api/business/sync/stream?device_id=phone"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    assert!(
        stream.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !seen.contains("event: ready") {
        let chunk = tokio::time::timeout_at(deadline.into(), stream.chunk())
            .await
            .expect("the ready event arrives")
            .unwrap()
            .expect("the stream stays open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let (status, live) = testkit::send(
        c.post(stack.url("/api/business/prompts"))
            .bearer_auth(&access)
            .json(&json!({ "title": "live one", "content": "x" })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let live_id = live["id"].as_str().unwrap().to_owned();
    while !seen.contains("event: change") {
        let chunk = tokio::time::timeout_at(deadline.into(), stream.chunk())
            .await
            .expect("the change arrives while the stream is open")
            .unwrap()
            .expect("the stream stays open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains(&live_id), "{seen}");
    drop(stream);

    // A large import streamed in chunks of unknown total length.
    let prompts: Vec<Value> = (0..40)
        .map(|i| json!({ "title": format!("big {i}"), "content": "长文本 lorem ipsum ".repeat(4000) }))
        .collect();
    let library = serde_json::to_vec(&json!({
        "format": "promptflow-library", "version": 1, "exported_at": "2026-01-01T00:00:00Z",
        "prompts": prompts,
    }))
    .unwrap();
    assert!(library.len() > 3_000_000, "{}", library.len());
    let pieces: Vec<Result<bytes::Bytes, std::io::Error>> = library
        .chunks(64 * 1024)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    let (status, report) = testkit::send(
        c.post(stack.url("/api/business/import"))
            .bearer_auth(&access)
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                pieces,
            ))),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["created"], 40, "{report}");

    // What the upstream receives: the token's identity, not the client's claims.
    let (status, seen) = testkit::send(
        c.get(stack.url("/echo/inspect/路径?q=%E4%BD%A0%E5%A5%BD&x=1"))
            .bearer_auth(&access)
            .header("x-user-id", "00000000-0000-0000-0000-000000000000")
            .header("x-user-roles", "admin")
            .header("remote-user", "root")
            .header("x-forwarded-for", "6.6.6.6")
            .header(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{seen}");
    assert_eq!(seen["path"], "/inspect/%E8%B7%AF%E5%BE%84", "StripPrefix=1");
    assert_eq!(
        seen["query"], "q=%E4%BD%A0%E5%A5%BD&x=1",
        "query kept byte for byte"
    );
    assert_eq!(header(&seen, "x-user-id"), [user_id.as_str()]);
    assert_eq!(header(&seen, "x-user-roles"), ["user"]);
    assert!(header(&seen, "remote-user").is_empty(), "{seen}");
    assert_eq!(header(&seen, "x-forwarded-for"), ["127.0.0.1"], "{seen}");
    assert_eq!(
        header(&seen, "authorization"),
        [format!("Bearer {access}").as_str()]
    );
    let tp = header(&seen, "traceparent");
    assert_eq!(tp.len(), 1);
    assert!(
        tp[0].starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{tp:?}"
    );
    assert!(
        !tp[0].contains("00f067aa0ba902b7"),
        "the gateway's own span: {tp:?}"
    );
    assert_eq!(header(&seen, "x-request-id").len(), 1, "made when absent");

    // Unknown paths and the registry stay out of reach.
    for path in [
        "/eureka/apps",
        "/nothing/here",
        "/api/businessx",
        "/actuator/health",
    ] {
        let (status, body) = testkit::send(c.get(stack.url(path)).bearer_auth(&access)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
    }
    // Paths that step out of where they appear to be (clients would normalise them, so
    // they are sent raw).
    for path in [
        "/api/auth/login/../../users/me",
        "/api/auth/login/%2e%2e/%2e%2e/users/me",
        "/api/auth/login%2f..%2f..%2fusers%2fme",
    ] {
        let answer = raw_get(&stack.gateways[0].addr, path).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
        assert!(answer.contains("application/problem+json"), "{answer}");
        assert!(answer.contains("malformed-request"), "{answer}");
    }

    // Absolute form (RFC 9112 §3.2.2) is served, its authority taken for the Host field.
    let answer = raw_get(
        &stack.gateways[0].addr,
        "http://api.example.test/open/abs?q=1",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen: Value = answer
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str(body).ok())
        .unwrap_or_else(|| panic!("an echo: {answer}"));
    assert_eq!(seen["path"], "/abs");
    assert_eq!(seen["query"], "q=1");
    assert_eq!(header(&seen, "x-forwarded-host"), ["api.example.test"]);
    let answer = raw_get(
        &stack.gateways[0].addr,
        "http://user@api.example.test/open/x",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");

    // Refresh and logout are public; the spent refresh token is refused afterwards.
    let (status, pair) = testkit::send(
        c.post(stack.url("/api/auth/refresh"))
            .json(&json!({ "refresh_token": refresh })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{pair}");
    let (status, _) = testkit::send(
        c.post(stack.url("/api/auth/logout"))
            .json(&json!({ "refresh_token": pair["refresh_token"] })),
    )
    .await;
    assert!(status.is_success(), "{status}");

    // Per-route and per-upstream figures.
    let metrics = stack.metrics(0).await;
    for needle in [
        "gateway_requests_total{route=\"business\",status=\"201\"}",
        "gateway_requests_total{route=\"unmatched\",status=\"404\"}",
        "gateway_upstream_requests_total{service=\"business-service\"",
        "gateway_request_duration_seconds_bucket{route=\"users\"",
    ] {
        assert!(
            metrics.contains(needle),
            "{needle} missing from:\n{metrics}"
        );
    }
    // Exact: every answer counted once, whichever worker thread served it and however its
    // counts were batched.
    let unmatched = "gateway_requests_total{route=\"unmatched\",status=\"404\"}";
    let timed = "gateway_request_duration_seconds_count{route=\"unmatched\"}";
    let before = (
        metric_value(&metrics, unmatched),
        metric_value(&metrics, timed),
    );
    for i in 0..45 {
        let (status, _) = testkit::send(c.get(stack.url(&format!("/nowhere/{i}")))).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    let metrics = stack.metrics(0).await;
    assert_eq!(
        metric_value(&metrics, unmatched),
        before.0 + 45.0,
        "{metrics}"
    );
    // (the duration counts the first scrape too, answered after it rendered its figures)
    assert_eq!(metric_value(&metrics, timed), before.1 + 46.0, "{metrics}");

    // /metrics is for this machine and private networks by default. A gateway told to
    // show it to 10.9.9.0/24 only hides it (404, as for nothing there) from everyone else,
    // also from a client a trusted proxy names; the one it allows is the client that proxy
    // names, not the proxy.
    let only = tokio::task::block_in_place(|| {
        stack.add_gateway(
            &routes_yaml(""),
            &[
                ("PROMPTFLOW_GATEWAY__METRICS_ALLOWED_FROM", "10.9.9.0/24"),
                ("PROMPTFLOW_HTTP__TRUSTED_PROXIES", "127.0.0.1"),
            ],
        )
    });
    let url = stack.gateways[only].url("/metrics");
    let res = c.get(&url).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let spoofed = c
        .get(&url)
        .header("x-forwarded-for", "8.8.8.8")
        .send()
        .await
        .unwrap();
    assert_eq!(spoofed.status(), StatusCode::NOT_FOUND);
    let scraper = c
        .get(&url)
        .header("x-forwarded-for", "10.9.9.7")
        .send()
        .await
        .unwrap();
    assert_eq!(scraper.status(), StatusCode::OK);
    assert!(scraper.text().await.unwrap().contains("gateway_"));
    let (status, _) = testkit::send(c.get(stack.gateways[only].url("/health"))).await;
    assert_eq!(status, StatusCode::OK, "health stays open for probes");
    drop(echo);
}

/// The value of the series named exactly `series` (0 when absent).
fn metric_value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_tampered_foreign_and_expired_tokens_are_refused_at_the_edge() {
    let mut stack = tokio::task::block_in_place(|| Stack::services(Backend::Sqlite, 1));
    let echo = echo().await;
    tokio::task::block_in_place(|| {
        stack.add_gateway(
            &routes_yaml(&format!("{}{}", business_route(""), echo_routes(&echo))),
            &[],
        )
    });
    let c = stack.client.clone();
    let (access, _, user_id) = stack.sign_up("bob").await;
    let now = chrono_now().timestamp();

    let (head, rest) = access.split_once('.').unwrap();
    let (payload, signature) = rest.split_once('.').unwrap();
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    claims["roles"] = json!(["user", "admin"]);
    let tampered = format!(
        "{head}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut expired_claims = claims.clone();
    expired_claims["roles"] = json!(["user"]);
    expired_claims["exp"] = json!(now - 120);
    expired_claims["iat"] = json!(now - 1020);
    let expired = stack.sign_with_user_service_key(&expired_claims).await;
    // A key user-service never published, under its kid.
    let foreign = {
        let key = ed25519_key();
        let kid = serde_json::from_slice::<Value>(&URL_SAFE_NO_PAD.decode(head).unwrap()).unwrap()
            ["kid"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        h.kid = Some(kid);
        jsonwebtoken::encode(&h, &expired_claims_fresh(&claims, now), &key).unwrap()
    };
    let none_alg = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );

    let before = echo.hits.load(Ordering::SeqCst);
    for (what, auth, detail) in [
        ("missing", None, "access token"),
        (
            "not bearer",
            Some(format!("Basic {}", STANDARD.encode("bob:pw"))),
            "access token",
        ),
        (
            "garbage",
            Some("Bearer not.a.token".to_owned()),
            "malformed",
        ),
        ("tampered", Some(format!("Bearer {tampered}")), "signature"),
        (
            "foreign key",
            Some(format!("Bearer {foreign}")),
            "signature",
        ),
        ("expired", Some(format!("Bearer {expired}")), "expired"),
        ("alg none", Some(format!("Bearer {none_alg}")), "token"),
    ] {
        for path in ["/api/business/prompts", "/api/users/me", "/echo/anything"] {
            let mut req = c.get(stack.url(path));
            if let Some(a) = &auth {
                req = req.header("authorization", a);
            }
            let (status, headers, body) = testkit::send_full(req).await;
            testkit::assert_problem(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
            assert_eq!(
                headers["www-authenticate"], "Bearer error=\"invalid_token\"",
                "{what} {path}"
            );
            assert!(
                body["detail"].as_str().unwrap().contains(detail),
                "{what} {path}: {body}"
            );
        }
    }
    assert_eq!(
        echo.hits.load(Ordering::SeqCst),
        before,
        "no refused request reached an upstream"
    );
    // A refused write changes nothing.
    let (status, _) = testkit::send(
        c.post(stack.url("/api/business/prompts"))
            .header("authorization", format!("Bearer {tampered}"))
            .json(&json!({ "title": "sneaky", "content": "x" })),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, list) = testkit::send(
        c.get(stack.url("/api/business/prompts"))
            .query(&[("q", "sneaky")])
            .bearer_auth(&access),
    )
    .await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(0), "{list}");
    // The real token still works, and public routes never needed one.
    let (status, me) = testkit::send(c.get(stack.url("/api/users/me")).bearer_auth(&access)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["id"], user_id.as_str());
    let (status, seen) = testkit::send(c.get(stack.url("/open/ping"))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(header(&seen, "x-user-id").is_empty());
    // Administration of the gateway is for administrators only.
    let (status, body) = testkit::send(
        c.get(stack.url("/actuator/gateway/routes"))
            .bearer_auth(&access),
    )
    .await;
    testkit::assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
    let metrics = stack.metrics(0).await;
    for reason in ["missing", "signature", "expired", "malformed"] {
        assert!(
            metrics.contains(&format!(
                "gateway_auth_failures_total{{reason=\"{reason}\"}}"
            )),
            "{reason}:\n{metrics}"
        );
    }
}

fn ed25519_key() -> jsonwebtoken::EncodingKey {
    // A fixed PKCS#8 document for the Ed25519 seed 0x01..: a key nobody publishes.
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(&[1u8; 32]);
    jsonwebtoken::EncodingKey::from_ed_der(&der)
}

fn expired_claims_fresh(claims: &Value, now: i64) -> Value {
    let mut c = claims.clone();
    c["exp"] = json!(now + 600);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_hold_under_a_burst() {
    let mut stack = tokio::task::block_in_place(|| Stack::services(Backend::Sqlite, 1));
    let limited = business_route(
        "      filters:\n        - name: RequestRateLimiter\n          args: { redis-rate-limiter.replenishRate: 1, redis-rate-limiter.burstCapacity: 5 }\n",
    );
    tokio::task::block_in_place(|| {
        stack.add_gateway(
            &format!(
                "  rate_limit:\n    default: {{ replenish_rate: 1, burst_capacity: 8 }}\n{}",
                routes_yaml(&limited)
            ),
            &[],
        )
    });
    let (alice, _, _) = stack.sign_up("alice").await;
    let (bob, _, _) = stack.sign_up("bob").await;

    let burst = |token: String| {
        let c = stack.client.clone();
        let url = stack.url("/api/business/prompts");
        async move {
            let calls = (0..20).map(|_| {
                let c = c.clone();
                let url = url.clone();
                let token = token.clone();
                async move { c.get(&url).bearer_auth(&token).send().await.unwrap() }
            });
            futures_util::future::join_all(calls).await
        }
    };
    let answers = burst(alice.clone()).await;
    let ok: Vec<_> = answers.iter().filter(|r| r.status() == 200).collect();
    let refused: Vec<_> = answers.iter().filter(|r| r.status() == 429).collect();
    assert!(
        (5..=6).contains(&ok.len()),
        "a burst of 5 (and one refill at most): {} let through",
        ok.len()
    );
    assert_eq!(ok.len() + refused.len(), 20);
    for r in &ok {
        assert_eq!(r.headers()["x-ratelimit-burst-capacity"], "5");
        assert_eq!(r.headers()["x-ratelimit-replenish-rate"], "1");
        assert_eq!(r.headers()["x-ratelimit-requested-tokens"], "1");
    }
    let mut remaining: Vec<i64> = ok
        .iter()
        .map(|r| {
            r.headers()["x-ratelimit-remaining"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    remaining.sort_unstable();
    assert_eq!(
        remaining[0], 0,
        "the last one through empties the bucket: {remaining:?}"
    );
    for r in &refused {
        assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
        let retry: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=2).contains(&retry), "{retry}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/problem+json")
        );
    }
    // Another user has a bucket of their own.
    let answers = burst(bob).await;
    assert!(answers.iter().filter(|r| r.status() == 200).count() >= 5);
    // The bucket refills at the replenish rate.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let answers = burst(alice).await;
    let ok = answers.iter().filter(|r| r.status() == 200).count();
    assert!((2..=3).contains(&ok), "two seconds refill two tokens: {ok}");

    // Routes without a limiter of their own take the default, by address when anonymous.
    let c = stack.client.clone();
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let r = c
            .get(stack.url("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert!(refused >= 3, "{statuses:?}");
    let metrics = stack.metrics(0).await;
    assert!(
        metrics.contains("gateway_rate_limited_total{route=\"business\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_their_limits_in_redis_and_redis_down_is_a_setting() {
    let mut stack = tokio::task::block_in_place(|| Stack::services(Backend::Sqlite, 1));
    let echo = echo().await;
    let prefix = format!("pftest:{}", uuid_like());
    let redis = testkit::redis_url();
    let limited = |redis: &str, on_error: &str| {
        format!(
            "  rate_limit:\n    enabled: false\n    backend: redis\n    redis: {{ url: \"{redis}\", key_prefix: \"{prefix}\", on_error: {on_error} }}\n{}",
            routes_yaml(&format!(
                "{}    - id: limited\n      uri: http://{}\n      predicates: [\"Path=/limited/**\"]\n      filters: [\"RequestRateLimiter=1, 6\"]\n",
                business_route(""),
                echo.addr
            ))
        )
    };
    tokio::task::block_in_place(|| {
        stack.add_gateway(&limited(&redis, "allow"), &[]);
        stack.add_gateway(&limited(&redis, "allow"), &[]);
        stack.add_gateway(&limited("redis://127.0.0.1:1", "deny"), &[]);
        stack.add_gateway(&limited("redis://127.0.0.1:1", "allow"), &[]);
    });
    let (token, _, _) = stack.sign_up("carol").await;
    let calls = (0..24).map(|i| {
        let c = stack.client.clone();
        let url = stack.gateways[i % 2].url("/limited/x");
        let token = token.clone();
        async move {
            c.get(&url)
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    let statuses = futures_util::future::join_all(calls).await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert!(
        (6..=7).contains(&ok),
        "one bucket of 6 across both gateways: {ok} let through ({statuses:?})"
    );
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 24 - ok);

    // Redis out of reach: refused or let through, as set.
    let (status, body) = testkit::send(
        stack
            .client
            .get(stack.gateways[2].url("/limited/x"))
            .bearer_auth(&token),
    )
    .await;
    testkit::assert_problem(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    );
    let started = Instant::now();
    for _ in 0..10 {
        let (status, _) = testkit::send(
            stack
                .client
                .get(stack.gateways[3].url("/limited/x"))
                .bearer_auth(&token),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "an unreachable Redis does not slow every request: {:?}",
        started.elapsed()
    );
    let ready = stack
        .client
        .get(stack.gateways[2].url("/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["checks"]["rate_limiter"]["status"], "DOWN");
}

fn uuid_like() -> String {
    format!(
        "{:x}{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_requests_keep_succeeding_when_an_instance_dies_under_load() {
    let mut stack = tokio::task::block_in_place(|| Stack::services(Backend::Postgres, 2));
    stack.registered("BUSINESS-SERVICE", 2).await;
    tokio::task::block_in_place(|| {
        stack.add_gateway(
            &format!(
                "  rate_limit: {{ enabled: false }}\n  access_log: false\n{}",
                routes_yaml(&business_route(""))
            ),
            &[],
        )
    });
    let (token, _, _) = stack.sign_up("dave").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let (status, p) = testkit::send(
            stack
                .client
                .post(stack.url("/api/business/prompts"))
                .bearer_auth(&token)
                .json(&json!({ "title": format!("steady {i}"), "content": "x" })),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{p}");
        ids.push(p["id"].as_str().unwrap().to_owned());
    }
    // Both instances take traffic before the kill.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        for _ in 0..10 {
            stack
                .client
                .get(stack.url("/api/business/prompts"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
        }
        let metrics = stack.metrics(0).await;
        let instances = stack
            .business
            .iter()
            .filter(|b| metrics.contains(&format!("business-service:{}\"", b.port())))
            .count();
        if instances == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "both instances used:\n{metrics}");
    }

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..8 {
        let c = stack.client.clone();
        let token = token.clone();
        let stop = stop.clone();
        let urls: Vec<String> = ids
            .iter()
            .map(|id| stack.url(&format!("/api/business/prompts/{id}")))
            .chain([stack.url("/api/business/prompts?limit=5")])
            .collect();
        workers.push(tokio::spawn(async move {
            let mut results = Vec::new();
            let mut n = w;
            while !stop.load(Ordering::SeqCst) {
                let url = &urls[n % urls.len()];
                n += 1;
                let status = match c.get(url).bearer_auth(&token).send().await {
                    Ok(r) => r.status().as_u16(),
                    Err(_) => 0,
                };
                results.push((Instant::now(), status));
            }
            results
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killed_at = Instant::now();
    stack.business[0].kill();
    tokio::time::sleep(Duration::from_millis(3000)).await;
    stop.store(true, Ordering::SeqCst);
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    let failed: Vec<_> = all.iter().filter(|(_, s)| *s != 200).collect();
    let after = all.iter().filter(|(t, _)| *t > killed_at).count();
    assert!(after > 100, "the load went on after the kill: {after}");
    assert!(
        failed.is_empty(),
        "{} of {} idempotent requests failed: {:?}",
        failed.len(),
        all.len(),
        &failed[..failed.len().min(10)]
    );
    let metrics = stack.metrics(0).await;
    assert!(
        metrics.contains("gateway_ejections_total{service=\"business-service\""),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_and_limits_change_without_a_restart() {
    let mut stack = tokio::task::block_in_place(|| Stack::services(Backend::Sqlite, 1));
    let echo = echo().await;
    tokio::task::block_in_place(|| stack.add_gateway(&routes_yaml(&business_route("")), &[]));
    let (token, _, _) = stack.sign_up("erin").await;
    let c = stack.client.clone();
    let (status, _) = testkit::send(c.get(stack.url("/open/x"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A new route and a tight limit, written to the settings file the gateway runs with.
    let file = stack.gateway_file(0);
    let limited = format!(
        "  rate_limit:\n    default: {{ replenish_rate: 1, burst_capacity: 2 }}\n{}",
        routes_yaml(&format!("{}{}", business_route(""), echo_routes(&echo)))
    );
    std::fs::write(&file, gateway_file(&limited)).unwrap();
    let started = Instant::now();
    loop {
        let (status, _) = testkit::send(c.get(stack.url("/open/x"))).await;
        if status == StatusCode::OK {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the new route never came"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let statuses = futures_util::future::join_all((0..6).map(|_| {
        c.get(stack.url("/api/business/prompts"))
            .bearer_auth(&token)
            .send()
    }))
    .await;
    let refused = statuses
        .iter()
        .filter(|r| r.as_ref().unwrap().status() == 429)
        .count();
    assert!(refused >= 3, "the new limit holds");

    // A broken change is refused; the last good settings stay in force.
    std::fs::write(
        &file,
        gateway_file("  routes:\n    - id: broken\n      uri: ftp://nowhere\n"),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, _) = testkit::send(c.get(stack.url("/open/x"))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        stack.gateways[0]
            .logs()
            .iter()
            .any(|l| l.contains("not applied") && l.contains("broken")),
        "the refusal is logged"
    );

    // SIGHUP applies a change at once, even with the polling off.
    std::fs::write(
        &file,
        gateway_file(&format!(
            "  reload_interval_secs: 0\n{}",
            routes_yaml(&business_route(""))
        ))
        .replace("  reload_interval_secs: 1\n", ""),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    std::fs::write(
        &file,
        gateway_file(&format!(
            "  reload_interval_secs: 0\n{}",
            routes_yaml(&format!("{}{}", business_route(""), echo_routes(&echo)))
        ))
        .replace("  reload_interval_secs: 1\n", ""),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let (status, _) = testkit::send(c.get(stack.url("/open/x"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not polled any more");
    support::signal(stack.gateways[0].child(), "HUP");
    let started = Instant::now();
    loop {
        let (status, _) = testkit::send(c.get(stack.url("/open/x"))).await;
        if status == StatusCode::OK {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "SIGHUP applied nothing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_stream_timeouts_and_limits_answer_problems() {
    let mut stack = tokio::task::block_in_place(|| Stack::services(Backend::Sqlite, 1));
    let echo = echo().await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let double = double_framed_upstream().await;
    tokio::task::block_in_place(|| {
        stack.add_gateway(
            &format!(
                "  body_limit: 2000000\n  circuit_breaker: {{ minimum_calls: 4, window: 10, open_ms: 60000 }}\n  cors:\n    allowed_origins: [\"https://app.example.com\", \"https://*.example.org\"]\n{}",
                routes_yaml(&format!(
                    "{}{}    - id: dead\n      uri: http://{dead_addr}\n      predicates: [\"Path=/dead/**\"]\n      public: true\n    - id: small\n      uri: http://{}\n      predicates: [\"Path=/small/**\"]\n      filters: [\"StripPrefix=1\", \"RequestSize=1KB\"]\n      public: true\n    - id: double\n      uri: http://{double}\n      predicates: [\"Path=/double/**\"]\n      public: true\n",
                    business_route(""),
                    echo_routes(&echo),
                    echo.addr
                ))
            ),
            &[],
        )
    });
    let c = stack.client.clone();

    // The answer streams: its first part arrives long before its last is made.
    let started = Instant::now();
    let mut drip = c.get(stack.url("/open/drip")).send().await.unwrap();
    assert_eq!(drip.status(), StatusCode::OK);
    assert_eq!(drip.headers()["x-served-by"], "gateway");
    let first = drip.chunk().await.unwrap().unwrap();
    assert_eq!(&first[..], b"part 0\n");
    assert!(
        started.elapsed() < Duration::from_millis(1200),
        "{:?}",
        started.elapsed()
    );
    let second = drip.chunk().await.unwrap().unwrap();
    assert_eq!(&second[..], b"part 1\n");

    // An upload streams upstream in pieces, of a size nobody announced.
    let pieces: Vec<Result<bytes::Bytes, std::io::Error>> = (0..30)
        .map(|_| Ok(bytes::Bytes::from(vec![b'x'; 50_000])))
        .collect();
    let (status, seen) = testkit::send(c.post(stack.url("/open/upload")).body(
        reqwest::Body::wrap_stream(futures_util::stream::iter(pieces)),
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{seen}");
    assert_eq!(seen["body_len"], 1_500_000);
    assert!(seen["chunks"].as_u64().unwrap() > 1, "{seen}");

    // Too large, announced or not: refused with a problem.
    let (status, body) = testkit::send(
        c.post(stack.url("/open/upload"))
            .body(vec![b'x'; 2_000_001]),
    )
    .await;
    testkit::assert_problem(
        status,
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload-too-large",
    );
    let pieces: Vec<Result<bytes::Bytes, std::io::Error>> = (0..50)
        .map(|_| Ok(bytes::Bytes::from(vec![b'x'; 50_000])))
        .collect();
    let (status, body) = testkit::send(c.post(stack.url("/open/upload")).body(
        reqwest::Body::wrap_stream(futures_util::stream::iter(pieces)),
    ))
    .await;
    testkit::assert_problem(
        status,
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload-too-large",
    );
    let (status, body) = testkit::send(c.post(stack.url("/small/x")).body(vec![b'x'; 1025])).await;
    testkit::assert_problem(
        status,
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload-too-large",
    );
    let (status, _) = testkit::send(c.post(stack.url("/small/x")).body(vec![b'x'; 1024])).await;
    assert_eq!(status, StatusCode::OK);

    // The route's response timeout: 504, with the upstream's late answer never delivered.
    let started = Instant::now();
    let (status, body) = testkit::send(c.get(stack.url("/open/slow"))).await;
    testkit::assert_problem(
        status,
        &body,
        StatusCode::GATEWAY_TIMEOUT,
        "gateway-timeout",
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // Nothing listens: 502, then the circuit opens and answers at once with 503.
    for _ in 0..4 {
        let (status, body) = testkit::send(c.get(stack.url("/dead/x"))).await;
        testkit::assert_problem(status, &body, StatusCode::BAD_GATEWAY, "bad-gateway");
    }
    let (status, body) = testkit::send(c.get(stack.url("/dead/x"))).await;
    testkit::assert_problem(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    );
    assert!(
        body["detail"].as_str().unwrap().contains("held back"),
        "{body}"
    );

    // An answer framed both ways reaches the client framed only by its chunks (a client
    // trusting the length would take the rest for the next answer); an HTTP/1.0 client,
    // who cannot read chunks, gets a 502 instead.
    let answer = raw_get(&stack.gateways[0].addr, "/double/x").await;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        !head.to_ascii_lowercase().contains("content-length"),
        "{answer}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{answer}"
    );
    assert_eq!(body, "5\r\nhello\r\n0\r\n\r\n");
    let answer = raw_request(&stack.gateways[0].addr, "/double/x", "HTTP/1.0").await;
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");

    // CORS from the settings: preflights answered for listed origins only.
    let preflight = |origin: &'static str| {
        c.request(reqwest::Method::OPTIONS, stack.url("/api/business/prompts"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    let ok = preflight("https://app.example.com").await.unwrap();
    assert!(ok.status().is_success(), "{}", ok.status());
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let methods = ok.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(methods.contains("POST"), "{methods}");
    let sub = preflight("https://team.example.org").await.unwrap();
    assert_eq!(
        sub.headers()["access-control-allow-origin"],
        "https://team.example.org"
    );
    let other = preflight("https://evil.example.net").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    let plain = c
        .get(stack.url("/open/x"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(
        plain.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let exposed = plain.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(exposed.contains("x-request-id"), "{exposed}");
}

/// One keep-alive connection: sends `GET path` and reads the whole answer, again and
/// again, until `stop`; each answer must be a 200 within two seconds. The number of
/// answers so far is kept in `answered`.
async fn keep_asking(
    addr: String,
    path: &'static str,
    pause: Duration,
    answered: Arc<AtomicUsize>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(&addr)
        .await
        .map_err(|e| e.to_string())?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let mut buf = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let n = answered.load(Ordering::Relaxed);
        let one = async {
            stream.write_all(request.as_bytes()).await?;
            buf.clear();
            let mut chunk = [0u8; 4096];
            let (head_end, length) = loop {
                let read = stream.read(&mut chunk).await?;
                if read == 0 {
                    return Err(std::io::Error::other("closed by the gateway"));
                }
                buf.extend_from_slice(&chunk[..read]);
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    if !head.starts_with("http/1.1 200") {
                        return Err(std::io::Error::other(format!("answered {head}")));
                    }
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .ok_or_else(|| std::io::Error::other("no content-length"))?;
                    break (end + 4, length);
                }
            };
            while buf.len() < head_end + length {
                let read = stream.read(&mut chunk).await?;
                if read == 0 {
                    return Err(std::io::Error::other("closed mid-answer"));
                }
                buf.extend_from_slice(&chunk[..read]);
            }
            Ok::<_, std::io::Error>(())
        };
        match tokio::time::timeout(Duration::from_secs(2), one).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("after {n} answers: {e}")),
            Err(_) => return Err(format!("after {n} answers: no answer within 2 s")),
        }
        answered.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(pause).await;
    }
    Ok(())
}

/// The CPUs a thread may run on (`task` under /proc: "self", or "<pid>/task/<tid>"), from
/// its `Cpus_allowed_list` ("0-1,3").
fn allowed_cpus(task: &str) -> Vec<usize> {
    let status = std::fs::read_to_string(format!("/proc/{task}/status")).unwrap();
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .expect("Cpus_allowed_list in /proc status")
        .trim();
    list.split(',')
        .flat_map(|part| {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            a.parse::<usize>().unwrap()..=b.parse::<usize>().unwrap()
        })
        .collect()
}

/// Waits until the gateway's workers `gateway-0`, `gateway-1`, ... may run on `expected[i]`.
async fn until_workers_run_on(pid: u32, expected: &[Vec<usize>]) {
    let started = Instant::now();
    loop {
        let mut seen = vec![Vec::new(); expected.len()];
        for entry in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
            let tid = entry.unwrap().file_name().into_string().unwrap();
            let task = format!("{pid}/task/{tid}");
            let Ok(name) = std::fs::read_to_string(format!("/proc/{task}/comm")) else {
                continue;
            };
            let worker = name.trim().strip_prefix("gateway-");
            if let Some(slot) = worker
                .and_then(|i| i.parse::<usize>().ok())
                .and_then(|i| seen.get_mut(i))
            {
                *slot = allowed_cpus(&task);
            }
        }
        if seen == expected {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "workers run on {seen:?}, not {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_move_between_workers_without_losing_a_request() {
    let echo = echo().await;
    let dir = tempfile::tempdir().unwrap();
    let data = sub(&dir, "gateway");
    let file = data.join("gateway.yaml");
    let settings = |pack: bool| {
        gateway_file(&format!(
            "  workers: 2\n  pack_workers: {pack}\n  access_log: false\n  rate_limit: {{ enabled: false }}\n  routes:\n    - id: moving\n      uri: http://{}\n      predicates: [\"Path=/m/**\"]\n      filters: [\"StripPrefix=1\"]\n      public: true\n",
            echo.addr
        ))
    };
    std::fs::write(&file, settings(false)).unwrap();
    let env = support::env(&[("PROMPTFLOW_DISCOVERY__MODE", "static")]);
    let gateway =
        tokio::task::block_in_place(|| Proc::serve("gateway-service", &data, Some(&file), &env));
    let client = reqwest::Client::new();
    let metrics = || async {
        let answer = client.get(gateway.url("/metrics")).send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        answer.text().await.unwrap()
    };
    let wait_for = |what: &'static str, check: Box<dyn Fn(&str) -> bool + Send>| {
        let metrics = &metrics;
        async move {
            let started = Instant::now();
            loop {
                let text = metrics().await;
                if check(&text) {
                    return text;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "{what} never happened:\n{text}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };

    // Packing off: eight busy connections, spread over both workers by count.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let counts: Vec<Arc<AtomicUsize>> = (0..8).map(|_| Arc::default()).collect();
    let tasks: Vec<_> = counts
        .iter()
        .map(|answered| {
            tokio::spawn(keep_asking(
                gateway.addr.clone(),
                "/m/x",
                Duration::from_millis(20),
                answered.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let all_answered = |at_least: &[usize]| {
        counts
            .iter()
            .zip(at_least)
            .all(|(c, &n)| c.load(Ordering::Relaxed) > n)
    };
    let started = Instant::now();
    while !all_answered(&[10; 8]) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "connections not answered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = metrics().await;
    assert_eq!(
        metric_value(&text, "gateway_workers_active "),
        2.0,
        "{text}"
    );
    assert_eq!(metric_value(&text, "gateway_connections_moved_total "), 0.0);
    // Both active with a worker per CPU: each held to a CPU of its own; else free.
    let pid = gateway.pid().expect("the gateway runs");
    let cpus = allowed_cpus("self");
    let pinned: Vec<Vec<usize>> = if cpus.len() == 2 {
        cpus.iter().map(|&c| vec![c]).collect()
    } else {
        vec![cpus.clone(); 2]
    };
    until_workers_run_on(pid, &pinned).await;

    // Packing on: so light a load goes to one worker, the other's connections move to it
    // between two requests, and every connection goes on being answered.
    std::fs::write(&file, settings(true)).unwrap();
    let text = wait_for(
        "packing onto one worker",
        Box::new(|t| {
            metric_value(t, "gateway_workers_active ") == 1.0
                && metric_value(t, "gateway_connections_moved_total ") >= 1.0
        }),
    )
    .await;
    let moved = metric_value(&text, "gateway_connections_moved_total ");
    assert!(moved <= 8.0, "{moved} moves for 8 connections");
    // Packed onto fewer workers than CPUs: they may run on any CPU.
    until_workers_run_on(pid, &[cpus.clone(), cpus.clone()]).await;
    let at_move: Vec<usize> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    let started = Instant::now();
    while !all_answered(&at_move.iter().map(|n| n + 10).collect::<Vec<_>>()) {
        if started.elapsed() > Duration::from_secs(20) {
            stop.store(true, Ordering::Relaxed);
            let mut errors = Vec::new();
            for task in tasks {
                errors.push(task.await.unwrap());
            }
            panic!("a connection stopped being answered: {counts:?} from {at_move:?}: {errors:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A new connection goes to the active worker too, and nothing moves back and forth.
    let (status, _) = testkit::send(client.get(gateway.url("/m/new"))).await;
    assert_eq!(status, StatusCode::OK);
    let text = metrics().await;
    assert_eq!(
        metric_value(&text, "gateway_workers_active "),
        1.0,
        "{text}"
    );
    assert!(metric_value(&text, "gateway_connections_moved_total ") <= 8.0);

    // Off again: both workers take connections.
    std::fs::write(&file, settings(false)).unwrap();
    wait_for(
        "both workers active again",
        Box::new(|t| metric_value(t, "gateway_workers_active ") == 2.0),
    )
    .await;
    until_workers_run_on(pid, &pinned).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    drop(echo);
}
