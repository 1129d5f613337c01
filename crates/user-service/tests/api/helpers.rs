//! Each test starts user-service on port 0 with a database of its own, SQLite in a temporary
//! folder or a fresh PostgreSQL database on the machine's server, and talks to it over HTTP
//! as a client would.

use std::net::SocketAddr;

use platform::settings::{Common, DatabaseSettings, HttpSettings};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use user_service::Settings;

pub const PASSWORD: &str = "correct horse battery";

pub use testkit::{Backend, assert_problem, invalid_fields, send};

pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub backend: Backend,
    pub database_url: String,
    pub settings: Settings,
    pub common: Common,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// The test's databases (None on a replica, which shares its primary's).
    _databases: Option<testkit::Databases>,
}

pub fn test_settings() -> Settings {
    Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        // user-service alone: no business-service to provision libraries (the sagas are
        // tested with both, in crates/promptflow/tests).
        provision_library: false,
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
        events: platform::events::EventBus::default(),
        discovery: Default::default(),
        live: Default::default(),
    }
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        Self::spawn_with(backend, |_| {}).await
    }

    pub async fn spawn_with(backend: Backend, configure: impl FnOnce(&mut Settings)) -> TestApp {
        let mut settings = test_settings();
        configure(&mut settings);
        let mut databases = testkit::Databases::new(backend);
        let database_url = databases.url("user");
        settings.database = DatabaseSettings {
            url: Some(database_url.clone()),
            ..DatabaseSettings::default()
        };
        let common = test_common(databases.dir.path());
        let mut app = Self::start(backend, settings, common, database_url).await;
        app._databases = Some(databases);
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
            _databases: None,
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
    }
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

/// Settings with an administrator made at start.
pub fn with_admin(settings: &mut Settings) {
    settings.bootstrap_admin = Some(user_service::settings::BootstrapAdmin {
        username: "root".into(),
        email: "root@example.com".into(),
        password: PASSWORD.into(),
    });
}
