//! What PromptFlow's API tests share. Each test gets databases of its own: SQLite files in a
//! temporary folder, or fresh databases on the machine's PostgreSQL (dropped afterwards).
//! An unreachable PostgreSQL fails the test; nothing is ever skipped.

use std::time::{SystemTime, UNIX_EPOCH};

use reqwest::{RequestBuilder, StatusCode};
use serde_json::Value;

/// PostgreSQL for the tests: the machine's server unless `PROMPTFLOW_TEST_POSTGRES` says
/// otherwise.
pub fn postgres_base() -> String {
    std::env::var("PROMPTFLOW_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each named scenario `async fn name(backend: Backend)` as two tests, one per backend.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::Backend::Postgres).await
                }
            }
        )*
    };
}

/// Databases for one test; PostgreSQL ones are dropped when this is.
pub struct Databases {
    pub backend: Backend,
    pub dir: tempfile::TempDir,
    created: Vec<String>,
}

impl Databases {
    pub fn new(backend: Backend) -> Self {
        Self {
            backend,
            dir: tempfile::tempdir().expect("temporary folder"),
            created: Vec::new(),
        }
    }

    /// The URL of a new database for `service` (the service creates it on first connect).
    pub fn url(&mut self, service: &str) -> String {
        match self.backend {
            Backend::Sqlite => format!(
                "sqlite://{}",
                self.dir.path().join(format!("{service}.db")).display()
            ),
            Backend::Postgres => {
                let secs = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let name = format!(
                    "pft_{secs}_{}_{service}",
                    &uuid::Uuid::new_v4().simple().to_string()[..12]
                );
                let url = format!("{}/{name}", postgres_base());
                self.created.push(url.clone());
                url
            }
        }
    }
}

impl Drop for Databases {
    fn drop(&mut self) {
        let urls = std::mem::take(&mut self.created);
        if urls.is_empty() {
            return;
        }
        // FORCE ends the services' pool connections.
        cleanup(async move {
            use sea_orm::ConnectionTrait;
            let Ok(db) = sea_orm::Database::connect(format!("{}/postgres", postgres_base())).await
            else {
                return;
            };
            for url in urls {
                if let Some((_, name)) = url.rsplit_once('/') {
                    let _ = db
                        .execute_unprepared(&format!(
                            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                        ))
                        .await;
                }
            }
            let _ = db.close().await;
        });
    }
}

/// Runs a clean-up on a thread and runtime of its own: drops run inside the test's runtime,
/// which cannot be blocked on.
fn cleanup(work: impl std::future::Future<Output = ()> + Send + 'static) {
    let _ = std::thread::spawn(move || {
        if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            runtime.block_on(work);
        }
    })
    .join();
}

/// Percent-encodes a path segment, as clients send ids such as `10.0.0.1:app:8080`.
pub fn path_segment(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Sends a request; returns the status and the body as JSON (a JSON string for other text,
/// `Null` when empty). Every error answer must be `application/problem+json`.
pub async fn send(req: RequestBuilder) -> (StatusCode, Value) {
    let (status, _, body) = send_full(req).await;
    (status, body)
}

/// As `send`, with the answer's headers.
pub async fn send_full(req: RequestBuilder) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let response = req.send().await.expect("request reaches the server");
    let status = response.status();
    let headers = response.headers().clone();
    let problem = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/problem+json"));
    let bytes = response.bytes().await.expect("body");
    if status.is_client_error() || status.is_server_error() {
        assert!(
            problem,
            "error {status} must be application/problem+json, got body {:?}",
            String::from_utf8_lossy(&bytes)
        );
    }
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    (status, headers, body)
}

/// Asserts a problem of the given status and `type` slug.
#[track_caller]
pub fn assert_problem(status: StatusCode, body: &Value, want: StatusCode, slug: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(
        body["type"],
        format!("https://promptflow.dev/problems/{slug}"),
        "{body}"
    );
    assert_eq!(body["status"], want.as_u16(), "{body}");
}

/// The fields named in a validation problem.
pub fn invalid_fields(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .filter_map(|e| e["field"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Redis for the tests: the machine's server unless `PROMPTFLOW_TEST_REDIS` says otherwise.
pub fn redis_url() -> String {
    std::env::var("PROMPTFLOW_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// RabbitMQ for the tests: the machine's broker unless `PROMPTFLOW_TEST_RABBITMQ` says
/// otherwise.
pub fn rabbitmq_url() -> String {
    std::env::var("PROMPTFLOW_TEST_RABBITMQ")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// What a Spring Cloud Stream consumer of the topic exchange `exchange` holds: an exclusive,
/// auto-deleted queue bound with `#`. Its name.
pub async fn listen_on(channel: &lapin::Channel, exchange: &str) -> String {
    use lapin::options::{QueueBindOptions, QueueDeclareOptions};
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .expect("an exclusive queue");
    channel
        .queue_bind(
            queue.name().clone(),
            exchange.into(),
            "#".into(),
            QueueBindOptions::default(),
            Default::default(),
        )
        .await
        .expect("bound to the exchange");
    queue.name().to_string()
}

/// A test's own corner of the broker: a unique exchange and queue-name prefix, so tests
/// running at once never consume each other's events. Its queues (and their `.dlq`s) and
/// exchanges (and `.dlx`) are deleted when this is dropped.
pub struct RabbitNamespace {
    pub exchange: String,
    pub queue_prefix: String,
    queues: Vec<String>,
}

impl RabbitNamespace {
    /// `queues`: the names (without prefix) the test's services declare.
    pub fn new(queues: &[&str]) -> Self {
        let tag = uuid::Uuid::new_v4().simple().to_string();
        Self {
            exchange: format!("pftest.{tag}"),
            queue_prefix: format!("pftest.{tag}."),
            queues: queues.iter().map(|q| (*q).to_owned()).collect(),
        }
    }
}

impl Drop for RabbitNamespace {
    fn drop(&mut self) {
        let queues: Vec<String> = self
            .queues
            .iter()
            .flat_map(|q| {
                [
                    format!("{}{q}", self.queue_prefix),
                    format!("{}{q}.dlq", self.queue_prefix),
                ]
            })
            .collect();
        let exchanges = [self.exchange.clone(), format!("{}.dlx", self.exchange)];
        cleanup(async move {
            let Ok(connection) =
                lapin::Connection::connect(&rabbitmq_url(), Default::default()).await
            else {
                return;
            };
            let Ok(channel) = connection.create_channel().await else {
                return;
            };
            for q in queues {
                let _ = channel
                    .queue_delete(q.as_str().into(), Default::default())
                    .await;
            }
            for e in exchanges {
                let _ = channel
                    .exchange_delete(e.as_str().into(), Default::default())
                    .await;
            }
        });
    }
}
