//! Each test runs user-service and business-service on port 0, each with a database of its
//! own (SQLite files, or fresh PostgreSQL databases), and talks to them over HTTP as a
//! client would: tokens come from user-service's login, and business-service checks them
//! against user-service's JWKS.

use std::net::SocketAddr;

use platform::settings::{Common, DatabaseSettings, HttpSettings};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub use testkit::{Backend, assert_problem, invalid_fields, send};

pub const PASSWORD: &str = "correct horse battery";

pub struct TestApp {
    pub users: SocketAddr,
    pub business: SocketAddr,
    pub client: reqwest::Client,
    /// business-service's database, for tests that reach the store directly.
    pub business_db: String,
    shutdown: CancellationToken,
    _databases: testkit::Databases,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        Self::spawn_with(backend, |_| {}).await
    }

    pub async fn spawn_with(
        backend: Backend,
        configure: impl FnOnce(&mut business_service::Settings),
    ) -> TestApp {
        let mut databases = testkit::Databases::new(backend);
        let common = Common {
            data_dir: databases.dir.path().to_path_buf(),
            http: HttpSettings {
                body_limit: 256 * 1024,
                shutdown_grace_secs: 5,
                ..HttpSettings::default()
            },
            events: platform::events::EventBus::default(),
            discovery: Default::default(),
            live: Default::default(),
        };
        let shutdown = CancellationToken::new();
        let mut users = user_service::Settings {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..Default::default()
        };
        users.database = DatabaseSettings {
            url: Some(databases.url("user")),
            ..Default::default()
        };
        // Cheaper hashing: these tests are about prompts, not passwords.
        users.password_hash.memory_kib = 4096;
        users.password_hash.iterations = 1;
        users.bootstrap_admin = Some(user_service::settings::BootstrapAdmin {
            username: "root".into(),
            email: "root@example.com".into(),
            password: PASSWORD.into(),
        });
        let user_service = user_service::start(users, &common, shutdown.clone())
            .await
            .unwrap_or_else(|e| panic!("user-service did not start on {backend:?}: {e:#}"));

        let mut business = business_service::Settings {
            listen: "127.0.0.1:0".parse().unwrap(),
            jwks_url: format!("http://{}/.well-known/jwks.json", user_service.local_addr),
            // Libraries start empty, so tests count only what they made.
            starter_content: false,
            ..Default::default()
        };
        let business_db = databases.url("business");
        business.database = DatabaseSettings {
            url: Some(business_db.clone()),
            ..Default::default()
        };
        configure(&mut business);
        let business_service = business_service::start(business, &common, shutdown.clone())
            .await
            .unwrap_or_else(|e| panic!("business-service did not start on {backend:?}: {e:#}"));
        TestApp {
            users: user_service.local_addr,
            business: business_service.local_addr,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            business_db,
            shutdown,
            _databases: databases,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.business, path)
    }

    pub fn request(&self, method: Method, path: &str, token: Option<&str>) -> RequestBuilder {
        let mut req = self.client.request(method, self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        send(self.request(Method::GET, path, Some(token))).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        send(self.request(Method::POST, path, Some(token)).json(&body)).await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        send(self.request(Method::PATCH, path, Some(token)).json(&body)).await
    }

    pub async fn put(
        &self,
        path: &str,
        token: &str,
        etag: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        send(
            self.request(Method::PUT, path, Some(token))
                .header("if-match", etag)
                .json(&body),
        )
        .await
    }

    pub async fn delete(&self, path: &str, token: &str) -> (StatusCode, Value) {
        send(self.request(Method::DELETE, path, Some(token))).await
    }

    /// Registers and logs in a user at user-service; returns their access token.
    pub async fn user(&self, username: &str) -> String {
        let base = format!("http://{}", self.users);
        let (status, body) = send(self.client.post(format!("{base}/api/auth/register")).json(
            &json!({
                "username": username,
                "email": format!("{username}@example.com"),
                "password": PASSWORD,
            }),
        ))
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        self.login(username).await
    }

    pub async fn login(&self, username: &str) -> String {
        let base = format!("http://{}", self.users);
        let (status, body) = send(
            self.client
                .post(format!("{base}/api/auth/login"))
                .json(&json!({ "username": username, "password": PASSWORD })),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    pub async fn admin(&self) -> String {
        self.login("root").await
    }

    /// The user id inside a token.
    pub fn user_id(token: &str) -> String {
        use base64::Engine;
        let payload = token.split('.').nth(1).unwrap();
        let claims: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap();
        claims["sub"].as_str().unwrap().to_owned()
    }

    /// Creates a prompt; returns it.
    pub async fn prompt(&self, token: &str, body: Value) -> Value {
        let (status, created) = self.post("/api/business/prompts", token, body).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        created
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The ids of a list answer, in order.
pub fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|i| i["id"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

pub fn titles(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|i| i["title"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}
