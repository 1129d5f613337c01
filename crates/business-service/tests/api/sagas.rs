//! The registration and account-deletion sagas between user-service and business-service,
//! with each service stopped and started again between the steps: no account stays
//! pending or deleting, no library is left without its account.

use std::net::SocketAddr;
use std::time::Duration;

use platform::events::{EventBus, EventSettings, QUEUES, Transport};
use platform::settings::{Common, DatabaseSettings, HttpSettings};
use reqwest::{Method, StatusCode};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};
use testkit::{Databases, RabbitNamespace, on_both_backends};
use tokio_util::sync::CancellationToken;

use crate::helpers::*;

struct Running {
    addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// user-service and business-service as separate services over one bus, each started and
/// stopped at will on its own database; user-service keeps its port across restarts.
struct System {
    common: Common,
    users: user_service::Settings,
    business: business_service::Settings,
    user: Option<Running>,
    library: Option<Running>,
    client: reqwest::Client,
    _databases: Databases,
    _namespace: Option<RabbitNamespace>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

impl System {
    async fn new(backend: Backend, rabbit: bool) -> System {
        let mut databases = Databases::new(backend);
        let namespace = rabbit.then(|| {
            let names: Vec<&str> = QUEUES.iter().map(|q| q.name).collect();
            RabbitNamespace::new(&names)
        });
        let events = EventSettings {
            retry_backoff_ms: 20,
            relay_poll_ms: 100,
            ..match &namespace {
                Some(ns) => EventSettings {
                    transport: Transport::Rabbitmq,
                    url: testkit::rabbitmq_url(),
                    exchange: ns.exchange.clone(),
                    queue_prefix: ns.queue_prefix.clone(),
                    ..EventSettings::default()
                },
                None => EventSettings::default(),
            }
        };
        let common = Common {
            data_dir: databases.dir.path().to_path_buf(),
            http: HttpSettings {
                shutdown_grace_secs: 2,
                ..HttpSettings::default()
            },
            events: EventBus::new(&events),
            discovery: Default::default(),
            live: Default::default(),
        };
        let port = free_port();
        let mut users = user_service::Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            saga_timeout_secs: 5,
            saga_wait_ms: 3000,
            ..Default::default()
        };
        users.database = DatabaseSettings {
            url: Some(databases.url("user")),
            ..Default::default()
        };
        users.password_hash.memory_kib = 4096;
        users.password_hash.iterations = 1;
        let mut business = business_service::Settings {
            listen: "127.0.0.1:0".parse().unwrap(),
            jwks_url: format!("http://127.0.0.1:{port}/.well-known/jwks.json"),
            ..Default::default()
        };
        business.database = DatabaseSettings {
            url: Some(databases.url("business")),
            ..Default::default()
        };
        System {
            common,
            users,
            business,
            user: None,
            library: None,
            client: reqwest::Client::new(),
            _databases: databases,
            _namespace: namespace,
        }
    }

    async fn start_users(&mut self) {
        let stop = CancellationToken::new();
        let serving = user_service::start(self.users.clone(), &self.common, stop.clone())
            .await
            .expect("user-service starts");
        self.user = Some(Running {
            addr: serving.local_addr,
            stop,
            task: serving.task,
        });
    }

    async fn stop_users(&mut self) {
        if let Some(r) = self.user.take() {
            r.stop().await;
        }
    }

    async fn start_business(&mut self) {
        let stop = CancellationToken::new();
        let serving = business_service::start(self.business.clone(), &self.common, stop.clone())
            .await
            .expect("business-service starts");
        self.library = Some(Running {
            addr: serving.local_addr,
            stop,
            task: serving.task,
        });
    }

    async fn stop_business(&mut self) {
        if let Some(r) = self.library.take() {
            r.stop().await;
        }
    }

    fn users_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.users.listen.port())
    }

    fn business_url(&self, path: &str) -> String {
        let addr = self.library.as_ref().expect("business-service runs").addr;
        format!("http://{addr}{path}")
    }

    async fn register(&self, name: &str) -> (StatusCode, Value) {
        send(
            self.client
                .post(self.users_url("/api/auth/register"))
                .json(&json!({
                    "username": name,
                    "email": format!("{name}@example.com"),
                    "password": PASSWORD,
                })),
        )
        .await
    }

    async fn login(&self, name: &str) -> (StatusCode, Value) {
        send(
            self.client
                .post(self.users_url("/api/auth/login"))
                .json(&json!({ "username": name, "password": PASSWORD })),
        )
        .await
    }

    async fn token(&self, name: &str) -> String {
        let (status, body) = self.login(name).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// Waits until `name` can log in.
    async fn until_active(&self, name: &str, limit: Duration) -> String {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let (status, body) = self.login(name).await;
            if status == StatusCode::OK {
                return body["access_token"].as_str().unwrap().to_owned();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} never became active: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn prompts(&self, token: &str) -> Value {
        let (status, page) = send(
            self.client
                .get(self.business_url("/api/business/prompts?limit=100"))
                .bearer_auth(token),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        page
    }

    /// Rows of `owner`'s in business_db's `table`, read straight from the database.
    async fn rows_of(&self, table: &str, column: &str, owner: &str) -> i64 {
        let url = self.business.database.url.clone().unwrap();
        let db = sea_orm::Database::connect(&url).await.unwrap();
        let backend = db.get_database_backend();
        // prompts and folders keep a native uuid; the saga tables keep text.
        let value = if table == "prompts" || table == "folders" {
            sea_orm::Value::from(uuid::Uuid::parse_str(owner).unwrap())
        } else {
            sea_orm::Value::from(owner.to_owned())
        };
        let mark = if backend == sea_orm::DbBackend::Postgres {
            "$1"
        } else {
            "?"
        };
        let row = db
            .query_one_raw(Statement::from_sql_and_values(
                backend,
                format!("SELECT COUNT(*) AS n FROM {table} WHERE {column} = {mark}"),
                [value],
            ))
            .await
            .unwrap()
            .unwrap();
        let n = row.try_get::<i64>("", "n").unwrap();
        db.close().await.unwrap();
        n
    }
}

impl Drop for System {
    fn drop(&mut self) {
        for r in [self.user.take(), self.library.take()]
            .into_iter()
            .flatten()
        {
            r.stop.cancel();
        }
    }
}

on_both_backends!(
    registering_provisions_a_library_and_the_account_is_active_at_once,
    registration_waits_for_a_stopped_business_service_and_completes_after_restarts,
    registration_over_rabbitmq_survives_each_service_stopping_between_steps,
    an_unanswered_registration_is_undone_and_leaves_no_library_behind,
    deleting_an_account_deletes_its_library_then_the_account,
    an_unanswered_deletion_is_undone_and_nothing_is_deleted,
);

async fn registering_provisions_a_library_and_the_account_is_active_at_once(backend: Backend) {
    let mut sys = System::new(backend, false).await;
    sys.business.default_quota = 4;
    sys.start_users().await;
    sys.start_business().await;
    let (status, user) = sys.register("newcomer").await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    assert_eq!(user["status"], "active");
    let token = sys.token("newcomer").await;
    let page = sys.prompts(&token).await;
    let titles = titles(&page);
    assert_eq!(titles.len(), 3, "{page}");
    assert!(titles.contains(&"Welcome to PromptFlow".to_owned()));
    assert!(titles.contains(&"总结要点".to_owned()));
    let (status, folders) = send(
        sys.client
            .get(sys.business_url("/api/business/folders"))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        folders.to_string().contains("Getting started · 入门"),
        "{folders}"
    );
    let id = user["id"].as_str().unwrap();
    assert_eq!(sys.rows_of("libraries", "owner_id", id).await, 1);
    // The library's quota (4 here) holds: the fourth prompt fits, the fifth does not.
    let create = |title: &str| {
        sys.client
            .post(sys.business_url("/api/business/prompts"))
            .bearer_auth(&token)
            .json(&json!({ "title": title, "content": "x" }))
    };
    let (status, body) = send(create("fourth")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, problem) = send(create("fifth")).await;
    assert_problem(status, &problem, StatusCode::CONFLICT, "quota-exceeded");
    assert_eq!(problem["quota"], 4);
    assert_eq!(sys.rows_of("prompts", "owner_id", id).await, 4);
}

async fn registration_waits_for_a_stopped_business_service_and_completes_after_restarts(
    backend: Backend,
) {
    let mut sys = System::new(backend, false).await;
    sys.users.saga_timeout_secs = 120;
    sys.users.saga_wait_ms = 300;
    sys.start_users().await;
    // business-service is down: the account is pending, and says so.
    let (status, user) = sys.register("patient").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{user}");
    assert_eq!(user["status"], "pending");
    let (status, problem) = sys.login("patient").await;
    assert_problem(status, &problem, StatusCode::CONFLICT, "account-pending");
    // A wrong password learns nothing about the account's state.
    let (status, problem) = send(
        sys.client
            .post(sys.users_url("/api/auth/login"))
            .json(&json!({ "username": "patient", "password": "wrong password!!" })),
    )
    .await;
    assert_problem(
        status,
        &problem,
        StatusCode::UNAUTHORIZED,
        "invalid-credentials",
    );
    // The name is taken while pending.
    let (status, problem) = sys.register("patient").await;
    assert_problem(status, &problem, StatusCode::CONFLICT, "username-taken");

    // user-service stops with the request still in its outbox; business-service comes up;
    // user-service comes back and the saga finishes.
    sys.stop_users().await;
    sys.start_business().await;
    sys.start_users().await;
    let token = sys.until_active("patient", Duration::from_secs(20)).await;
    assert_eq!(titles(&sys.prompts(&token).await).len(), 3);
}

async fn registration_over_rabbitmq_survives_each_service_stopping_between_steps(backend: Backend) {
    let mut sys = System::new(backend, true).await;
    sys.users.saga_timeout_secs = 120;
    sys.users.saga_wait_ms = 300;
    sys.start_users().await;
    let (status, user) = sys.register("traveller").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{user}");
    let id = user["id"].as_str().unwrap().to_owned();
    // Step 1 done: the request is on the broker. user-service stops; business-service
    // handles the request and answers while user-service is away.
    sys.stop_users().await;
    sys.start_business().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while sys.rows_of("libraries", "owner_id", &id).await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never provisioned");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Step 2 done: the answer waits on the broker. business-service stops too; user-service
    // comes back and finishes the saga from the broker alone.
    sys.stop_business().await;
    sys.start_users().await;
    sys.until_active("traveller", Duration::from_secs(20)).await;
    assert_eq!(sys.rows_of("prompts", "owner_id", &id).await, 3);
}

async fn an_unanswered_registration_is_undone_and_leaves_no_library_behind(backend: Backend) {
    let mut sys = System::new(backend, false).await;
    sys.users.saga_wait_ms = 200;
    sys.start_users().await;
    let (status, first) = sys.register("hopeful").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    let first_id = first["id"].as_str().unwrap().to_owned();
    // No answer within the deadline (5 s) and grace: the account is removed, the name free.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, problem) = sys.login("hopeful").await;
        if status == StatusCode::UNAUTHORIZED {
            assert_problem(
                status,
                &problem,
                StatusCode::UNAUTHORIZED,
                "invalid-credentials",
            );
            break;
        }
        assert_problem(status, &problem, StatusCode::CONFLICT, "account-pending");
        assert!(tokio::time::Instant::now() < deadline, "never compensated");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Now business-service starts: the stale request is refused, nothing is provisioned for
    // the removed account; the name registers again and completes.
    sys.start_business().await;
    sys.users.saga_timeout_secs = 60;
    sys.stop_users().await;
    sys.users.saga_wait_ms = 5000;
    sys.start_users().await;
    let (status, second) = sys.register("hopeful").await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    assert_ne!(second["id"], first["id"]);
    sys.until_active("hopeful", Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sys.rows_of("libraries", "owner_id", &first_id).await, 0);
    assert_eq!(sys.rows_of("prompts", "owner_id", &first_id).await, 0);
    assert_eq!(sys.rows_of("folders", "owner_id", &first_id).await, 0);
}

async fn deleting_an_account_deletes_its_library_then_the_account(backend: Backend) {
    let mut sys = System::new(backend, false).await;
    sys.start_users().await;
    sys.start_business().await;
    let (status, user) = sys.register("leaver").await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    let id = user["id"].as_str().unwrap().to_owned();
    let token = sys.token("leaver").await;
    let (status, _) = send(
        sys.client
            .post(sys.business_url("/api/business/prompts"))
            .bearer_auth(&token)
            .json(&json!({ "title": "Mine", "content": "to be deleted" })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(sys.rows_of("prompts", "owner_id", &id).await, 4);

    let delete = |password: &str| {
        sys.client
            .request(Method::DELETE, sys.users_url("/api/users/me"))
            .bearer_auth(&token)
            .json(&json!({ "password": password }))
    };
    let (status, problem) = send(delete("not my password")).await;
    assert_problem(status, &problem, StatusCode::FORBIDDEN, "wrong-password");
    assert_eq!(sys.rows_of("prompts", "owner_id", &id).await, 4);

    let (status, body) = send(delete(PASSWORD)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    for table in ["prompts", "folders"] {
        assert_eq!(sys.rows_of(table, "owner_id", &id).await, 0, "{table}");
    }
    for table in ["libraries", "sync_log"] {
        assert_eq!(sys.rows_of(table, "owner_id", &id).await, 0, "{table}");
    }
    let (status, problem) = sys.login("leaver").await;
    assert_problem(
        status,
        &problem,
        StatusCode::UNAUTHORIZED,
        "invalid-credentials",
    );
    // An access token issued before the deletion cannot fill a library again.
    let (status, problem) = send(
        sys.client
            .post(sys.business_url("/api/business/prompts"))
            .bearer_auth(&token)
            .json(&json!({ "title": "Orphan", "content": "must not exist" })),
    )
    .await;
    assert_problem(status, &problem, StatusCode::CONFLICT, "refused");
    assert_eq!(sys.rows_of("prompts", "owner_id", &id).await, 0);
    // Its token no longer works where sessions are checked.
    let (status, _) = send(
        sys.client
            .get(sys.users_url("/api/users/me"))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // The name is free again.
    let (status, again) = sys.register("leaver").await;
    assert_eq!(status, StatusCode::CREATED, "{again}");
}

async fn an_unanswered_deletion_is_undone_and_nothing_is_deleted(backend: Backend) {
    let mut sys = System::new(backend, false).await;
    sys.start_users().await;
    sys.start_business().await;
    let (status, user) = sys.register("hesitant").await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    let id = user["id"].as_str().unwrap().to_owned();
    let token = sys.token("hesitant").await;
    sys.stop_business().await;
    sys.stop_users().await;
    sys.users.saga_wait_ms = 200;
    sys.start_users().await;

    let (status, body) = send(
        sys.client
            .request(Method::DELETE, sys.users_url("/api/users/me"))
            .bearer_auth(&token)
            .json(&json!({ "password": PASSWORD })),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "deleting");
    let (status, problem) = sys.login("hesitant").await;
    assert_problem(status, &problem, StatusCode::GONE, "account-deleting");

    // No answer in time: the account is active again (its sessions had ended: log in).
    sys.until_active("hesitant", Duration::from_secs(30)).await;
    // business-service comes back and sees the stale request: it deletes nothing.
    sys.start_business().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sys.rows_of("prompts", "owner_id", &id).await, 3);
    let token = sys.token("hesitant").await;
    assert_eq!(titles(&sys.prompts(&token).await).len(), 3);
}
