//! Each test runs its own discovery nodes on real ports and talks to them over HTTP.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use discovery_service::Settings;
use platform::settings::{Common, HttpSettings};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct TestNode {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

pub fn common() -> Common {
    Common {
        http: HttpSettings {
            body_limit: 64 * 1024,
            shutdown_grace_secs: 1,
            ..HttpSettings::default()
        },
        ..Common::default()
    }
}

/// Settings for quick tests: evictions every 100 ms, renewals judged per second.
pub fn quick(listen: SocketAddr) -> Settings {
    Settings {
        listen,
        eviction_interval_ms: 100,
        renewal_window_ms: 1000,
        peer_sync_timeout_ms: 2000,
        ..Settings::default()
    }
}

impl TestNode {
    pub async fn spawn(configure: impl FnOnce(&mut Settings)) -> TestNode {
        let mut settings = quick("127.0.0.1:0".parse().unwrap());
        configure(&mut settings);
        Self::start(settings).await
    }

    pub async fn start(settings: Settings) -> TestNode {
        let shutdown = CancellationToken::new();
        let serving = discovery_service::start(settings, &common(), shutdown.clone())
            .await
            .expect("discovery-service starts");
        TestNode {
            addr: serving.local_addr,
            shutdown,
            task: Some(serving.task),
        }
    }

    /// Stops the node and waits until its port is closed.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }

    pub fn eureka(&self) -> String {
        format!("http://{}/eureka", self.addr)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A port free on every address given, for nodes that must know each other's address
/// before they start.
pub fn free_port(ips: &[IpAddr]) -> u16 {
    for _ in 0..50 {
        let probe = std::net::TcpListener::bind((ips[0], 0)).expect("bind a probe port");
        let port = probe.local_addr().expect("probe address").port();
        drop(probe);
        if ips
            .iter()
            .all(|ip| std::net::TcpListener::bind((*ip, port)).is_ok())
        {
            return port;
        }
    }
    panic!("no port free on {ips:?}");
}

/// An instance as eureka-js-client sends it (app name in lower case).
pub fn instance(app: &str, id: &str, port: u16) -> Value {
    json!({"instance": {
        "instanceId": id,
        "app": app.to_lowercase(),
        "hostName": "localhost",
        "ipAddr": "127.0.0.1",
        "status": "UP",
        "port": {"$": port, "@enabled": "true"},
        "securePort": {"$": 443, "@enabled": "false"},
        "vipAddress": app.to_lowercase(),
        "statusPageUrl": format!("http://localhost:{port}/info"),
        "healthCheckUrl": format!("http://localhost:{port}/health"),
        "dataCenterInfo": {
            "@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo",
            "name": "MyOwn"
        },
        "leaseInfo": {"renewalIntervalInSecs": 1, "durationInSecs": 2},
        "metadata": {"zone": "zone-a"}
    }})
}

pub use testkit::path_segment as enc;

pub async fn register(client: &reqwest::Client, base: &str, body: &Value) -> StatusCode {
    let app = body["instance"]["app"].as_str().expect("app");
    client
        .post(format!("{base}/apps/{app}"))
        .json(body)
        .send()
        .await
        .expect("register request")
        .status()
}

pub async fn renew(client: &reqwest::Client, base: &str, app: &str, id: &str) -> StatusCode {
    client
        .put(format!("{base}/apps/{app}/{}", enc(id)))
        .send()
        .await
        .expect("renew request")
        .status()
}

pub async fn text(client: &reqwest::Client, url: &str) -> String {
    client
        .get(url)
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("body")
}

pub async fn get_json(client: &reqwest::Client, url: &str) -> (StatusCode, Value) {
    let response = client
        .get(url)
        .header("accept", "application/json")
        .send()
        .await
        .expect("GET");
    let status = response.status();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The registry as `{app: {id: status}}`.
pub async fn statuses(
    client: &reqwest::Client,
    base: &str,
) -> std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>> {
    let (status, body) = get_json(client, &format!("{base}/apps/")).await;
    assert_eq!(status, StatusCode::OK);
    let apps = platform::discovery::Applications::from_json(&body).expect("a registry listing");
    apps.applications
        .into_iter()
        .map(|a| {
            (
                a.name,
                a.instances
                    .into_iter()
                    .map(|i| (i.instance_id, i.status.as_str().to_owned()))
                    .collect(),
            )
        })
        .collect()
}

pub async fn node_status(client: &reqwest::Client, node: &TestNode) -> Value {
    get_json(client, &node.url("/eureka/status")).await.1
}

/// Polls `check` until it holds or `secs` pass.
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
