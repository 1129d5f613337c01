//! PromptFlow's own Eureka client (`platform::discovery::Discovery`) against the server:
//! registration, renewal, deregistration, re-registration after the server forgot it, and
//! the cached registry kept fresh by deltas.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use platform::discovery::{Discovery, DiscoverySettings, Mode, Status};
use reqwest::StatusCode;
use tokio_util::sync::CancellationToken;

use crate::helpers::*;

fn client_for(node: &TestNode) -> Discovery {
    Discovery::new(DiscoverySettings {
        mode: Mode::Eureka,
        eureka_urls: vec![format!("{}/", node.eureka())],
        renewal_interval_secs: 1,
        lease_duration_secs: 3,
        fetch_interval_secs: 1,
        zone: "zone-b".into(),
        ..DiscoverySettings::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_registers_renews_and_leaves_on_shutdown() {
    let node = TestNode::spawn(|_| {}).await;
    let http = reqwest::Client::new();
    let discovery = client_for(&node);
    let addr: SocketAddr = "127.0.0.1:8081".parse().unwrap();
    let mut metadata = BTreeMap::new();
    metadata.insert("role".to_owned(), "accounts".to_owned());
    let instance = discovery.describe("user-service", addr, metadata);
    assert_eq!(instance.instance_id, "127.0.0.1:user-service:8081");
    let shutdown = CancellationToken::new();
    let registration = discovery.register(instance, shutdown.clone());

    let url = format!(
        "{}/apps/USER-SERVICE/{}",
        node.eureka(),
        enc(&registration.instance_id)
    );
    eventually(5, "registered", || async {
        get_json(&http, &url).await.0 == StatusCode::OK
    })
    .await;
    let (_, body) = get_json(&http, &url).await;
    let i = &body["instance"];
    assert_eq!(i["status"], "UP");
    assert_eq!(i["healthCheckUrl"], "http://127.0.0.1:8081/health");
    assert_eq!(i["metadata"]["zone"], "zone-b");
    assert_eq!(i["metadata"]["role"], "accounts");
    assert_eq!(i["metadata"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(i["leaseInfo"]["renewalIntervalInSecs"], 1);
    let first = i["leaseInfo"]["lastRenewalTimestamp"].as_i64().unwrap();
    eventually(5, "renewed", || async {
        get_json(&http, &url).await.1["instance"]["leaseInfo"]["lastRenewalTimestamp"]
            .as_i64()
            .unwrap_or(0)
            > first
    })
    .await;

    shutdown.cancel();
    tokio::time::timeout(std::time::Duration::from_secs(5), registration.finished)
        .await
        .expect("deregistration finishes")
        .unwrap();
    assert_eq!(
        get_json(&http, &url).await.0,
        StatusCode::NOT_FOUND,
        "gone at once, not by expiry"
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_registers_again_when_discovery_forgot_it() {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = probe.local_addr().unwrap();
    drop(probe);
    let node = TestNode::start(quick(listen)).await;
    let discovery = client_for(&node);
    let shutdown = CancellationToken::new();
    let instance = discovery.describe(
        "business-service",
        "127.0.0.1:8082".parse().unwrap(),
        BTreeMap::new(),
    );
    let registration = discovery.register(instance, shutdown.clone());
    let http = reqwest::Client::new();
    let url = format!(
        "{}/apps/BUSINESS-SERVICE/{}",
        node.eureka(),
        enc(&registration.instance_id)
    );
    eventually(5, "registered", || async {
        get_json(&http, &url).await.0 == StatusCode::OK
    })
    .await;

    // Discovery restarts empty (no peers): the next renewal gets 404 and the service
    // registers again.
    node.stop().await;
    let node = TestNode::start(quick(listen)).await;
    // A connection kept alive to the stopped node may still sit in the old client's pool
    // (its close not seen yet): ask with a new one.
    let http = reqwest::Client::new();
    assert!(statuses(&http, &node.eureka()).await.is_empty());
    eventually(5, "registered again", || async {
        get_json(&http, &url).await.0 == StatusCode::OK
    })
    .await;
    shutdown.cancel();
    let _ = registration.finished.await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cached_registry_follows_changes_by_deltas() {
    // Changes leave the delta after 1.5 s, so a client that misses them must notice by
    // the hash code and fetch everything.
    let node = TestNode::spawn(|s| s.delta_retention_ms = 1500).await;
    let http = reqwest::Client::new();
    let base = node.eureka();
    register(&http, &base, &instance("svc", "svc-1", 1001)).await;
    let discovery = client_for(&node);
    assert!(!discovery.loaded());
    discovery.refresh().await.unwrap();
    assert!(discovery.loaded());
    assert_eq!(discovery.instances("svc").len(), 1);
    assert_eq!(
        discovery.next_url("SVC").as_deref(),
        Some("http://127.0.0.1:1001")
    );

    // Seen through the delta.
    register(&http, &base, &instance("svc", "svc-2", 1002)).await;
    register(&http, &base, &instance("other", "other-1", 2001)).await;
    discovery.refresh().await.unwrap();
    assert_eq!(discovery.instances("svc").len(), 2);
    assert_eq!(
        discovery.applications(),
        vec!["OTHER".to_owned(), "SVC".to_owned()]
    );
    let urls: std::collections::BTreeSet<String> =
        (0..4).filter_map(|_| discovery.next_url("svc")).collect();
    assert_eq!(urls.len(), 2, "turns are taken between instances");

    // An override takes an instance out of the UP list.
    http.put(format!("{base}/apps/SVC/svc-1/status?value=OUT_OF_SERVICE"))
        .send()
        .await
        .unwrap();
    discovery.refresh().await.unwrap();
    let up: Vec<String> = discovery
        .instances("svc")
        .into_iter()
        .map(|i| i.instance_id)
        .collect();
    assert_eq!(up, vec!["svc-2".to_owned()]);

    // Missed changes: the delta no longer holds them, the hash code differs, and the
    // client fetches everything.
    http.delete(format!("{base}/apps/OTHER/other-1"))
        .send()
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2000)).await;
    let (_, delta) = get_json(&http, &format!("{base}/apps/delta")).await;
    assert!(
        delta["applications"]["application"]
            .as_array()
            .is_none_or(|a| a.is_empty())
    );
    discovery.refresh().await.unwrap();
    assert_eq!(discovery.applications(), vec!["SVC".to_owned()]);
    assert!(discovery.instances("other").is_empty());

    // The fetch loop keeps it fresh on its own.
    let shutdown = CancellationToken::new();
    discovery.start_fetching(shutdown.clone());
    http.delete(format!("{base}/apps/SVC/svc-1/status"))
        .send()
        .await
        .unwrap();
    eventually(5, "the fetch loop sees the lifted override", || async {
        discovery
            .instances("svc")
            .iter()
            .any(|i| i.instance_id == "svc-1" && i.status == Status::Up)
    })
    .await;
    shutdown.cancel();
    node.stop().await;
}
