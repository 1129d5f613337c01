//! Each test starts user-service on port 0 with a database of its own, SQLite in a temporary
//! folder or a fresh PostgreSQL database on the machine's server, and talks to it over HTTP
//! as a client would.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use platform::settings::{Common, DatabaseSettings, HttpSettings};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use user_service::Settings;

pub const PASSWORD: &str = "correct horse battery";

/// PostgreSQL for the tests: the machine's server unless `PROMPTFLOW_TEST_POSTGRES` says
/// otherwise. An unreachable server fails the test; it never skips it.
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
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::helpers::Backend::Postgres).await
                }
            }
        )*
    };
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub backend: Backend,
    pub database_url: String,
    pub settings: Settings,
    pub common: Common,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _data: Option<tempfile::TempDir>,
    owns_database: bool,
}

pub fn test_settings() -> Settings {
    Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Settings::default()
    }
}

pub fn test_common(data_dir: &std::path::Path) -> Common {
    Common {
        data_dir: data_dir.to_path_buf(),
        http: HttpSettings {
            body_limit: 64 * 1024,
            shutdown_grace_secs: 5,
            ..HttpSettings::default()
        },
    }
}

fn unique_name() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!(
        "pft_{secs}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        Self::spawn_with(backend, |_| {}).await
    }

    pub async fn spawn_with(backend: Backend, configure: impl FnOnce(&mut Settings)) -> TestApp {
        let mut settings = test_settings();
        configure(&mut settings);
        let data = tempfile::tempdir().expect("temporary folder");
        let database_url = match backend {
            Backend::Sqlite => format!("sqlite://{}", data.path().join("user.db").display()),
            Backend::Postgres => format!("{}/{}", postgres_base(), unique_name()),
        };
        settings.database = DatabaseSettings {
            url: Some(database_url.clone()),
            ..DatabaseSettings::default()
        };
        let common = test_common(data.path());
        let mut app = Self::start(backend, settings, common, database_url).await;
        app._data = Some(data);
        app.owns_database = true;
        app
    }

    /// Another instance over the same database (a second replica), with changed settings.
    pub async fn replica(&self, configure: impl FnOnce(&mut Settings)) -> TestApp {
        let mut settings = self.settings.clone();
        settings.listen = "127.0.0.1:0".parse().unwrap();
        configure(&mut settings);
        Self::start(
            self.backend,
            settings,
            self.common.clone(),
            self.database_url.clone(),
        )
        .await
    }

    async fn start(
        backend: Backend,
        settings: Settings,
        common: Common,
        database_url: String,
    ) -> TestApp {
        let shutdown = CancellationToken::new();
        let serving = user_service::start(settings.clone(), &common, shutdown.clone())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "user-service did not start on {backend:?} ({}): {e:#}",
                    platform::db::redact(&database_url)
                )
            });
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        TestApp {
            addr: serving.local_addr,
            client,
            backend,
            database_url,
            settings,
            common,
            shutdown,
            task: Some(serving.task),
            _data: None,
            owns_database: false,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn request(&self, method: Method, path: &str, token: Option<&str>) -> RequestBuilder {
        let mut req = self.client.request(method, self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        send(self.request(Method::GET, path, token)).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        send(self.request(Method::POST, path, token).json(&body)).await
    }

    pub async fn patch(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        send(self.request(Method::PATCH, path, token).json(&body)).await
    }

    pub async fn put(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        send(self.request(Method::PUT, path, token).json(&body)).await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        send(self.request(Method::DELETE, path, token)).await
    }

    /// Registers `username` with `PASSWORD`; returns the created user.
    pub async fn register(&self, username: &str) -> Value {
        let (status, body) = self
            .post(
                "/api/auth/register",
                None,
                json!({
                    "username": username,
                    "email": format!("{username}@example.com"),
                    "password": PASSWORD,
                }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "register {username}: {body}");
        body
    }

    /// Logs in; returns the token answer.
    pub async fn login(&self, username: &str, password: &str) -> Value {
        self.login_device(username, password, json!({ "type": "web" }))
            .await
    }

    pub async fn login_device(&self, username: &str, password: &str, device: Value) -> Value {
        let (status, body) = self
            .post(
                "/api/auth/login",
                None,
                json!({ "username": username, "password": password, "device": device }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "login {username}: {body}");
        body
    }

    /// Registers and logs in; returns the access token and the token answer.
    pub async fn signed_up(&self, username: &str) -> (String, Value) {
        self.register(username).await;
        let tokens = self.login(username, PASSWORD).await;
        (token(&tokens), tokens)
    }

    /// Stops the server as SIGTERM would, and waits for it.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    pub fn take_task(&mut self) -> Option<tokio::task::JoinHandle<anyhow::Result<()>>> {
        self.task.take()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if self.owns_database && self.backend == Backend::Postgres {
            // Drop the test's database; FORCE ends the pool's connections.
            let url = self.database_url.clone();
            let _ = std::thread::spawn(move || drop_database(&url)).join();
        }
    }
}

fn drop_database(url: &str) {
    let Some((base, name)) = url.rsplit_once('/') else {
        return;
    };
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    runtime.block_on(async {
        use sea_orm::ConnectionTrait;
        if let Ok(db) = sea_orm::Database::connect(format!("{base}/postgres")).await {
            let _ = db
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await;
            let _ = db.close().await;
        }
    });
}

pub async fn send(req: RequestBuilder) -> (StatusCode, Value) {
    let response = req.send().await.expect("request reaches the server");
    let status = response.status();
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
    (status, body)
}

pub fn token(tokens: &Value) -> String {
    tokens["access_token"]
        .as_str()
        .expect("an access token")
        .to_owned()
}

pub fn refresh_token(tokens: &Value) -> String {
    tokens["refresh_token"]
        .as_str()
        .expect("a refresh token")
        .to_owned()
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

/// Settings with an administrator made at start.
pub fn with_admin(settings: &mut Settings) {
    settings.bootstrap_admin = Some(user_service::settings::BootstrapAdmin {
        username: "root".into(),
        email: "root@example.com".into(),
        password: PASSWORD.into(),
    });
}
