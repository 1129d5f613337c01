//! Leases over real time: expiry and eviction, and self-preservation through a simulated
//! network split (most instances stop renewing at once).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;

/// Renews `ids` every 250 ms while `on` is set, until the test ends.
fn keep_renewing(http: reqwest::Client, base: String, ids: Vec<String>, on: Arc<AtomicBool>) {
    tokio::spawn(async move {
        loop {
            if on.load(Ordering::Relaxed) {
                for id in &ids {
                    let _ = http
                        .put(format!("{base}/apps/SVC/{}", enc(id)))
                        .send()
                        .await;
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_not_renewed_is_evicted_and_a_renewed_one_is_not() {
    let node = TestNode::spawn(|s| s.self_preservation = false).await;
    let http = reqwest::Client::new();
    let base = node.eureka();
    register(&http, &base, &instance("svc", "alive", 1)).await;
    register(&http, &base, &instance("svc", "silent", 2)).await;
    keep_renewing(
        http.clone(),
        base.clone(),
        vec!["alive".into()],
        Arc::new(AtomicBool::new(true)),
    );
    // The lease is 2 s; the silent instance goes soon after.
    eventually(6, "the silent instance is evicted", || async {
        !statuses(&http, &base).await["SVC"].contains_key("silent")
    })
    .await;
    let registry = statuses(&http, &base).await;
    assert!(registry["SVC"].contains_key("alive"), "{registry:?}");
    assert_eq!(
        renew(&http, &base, "svc", "silent").await,
        StatusCode::NOT_FOUND
    );
    let status = node_status(&http, &node).await;
    assert_eq!(status["evicted"], 1);
    assert_eq!(status["selfPreservation"]["enabled"], false);
    // The eviction is in the delta as a deletion.
    let (_, delta) = get_json(&http, &format!("{base}/apps/delta")).await;
    let deleted: Vec<&Value> = delta["applications"]["application"][0]["instance"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["actionType"] == "DELETED")
        .collect();
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0]["instanceId"], "silent");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_preservation_keeps_the_registry_through_a_network_split() {
    let node = TestNode::spawn(|s| s.self_preservation = true).await;
    let http = reqwest::Client::new();
    let base = node.eureka();
    let ids: Vec<String> = (0..10).map(|k| format!("svc-{k}")).collect();
    for (k, id) in ids.iter().enumerate() {
        register(&http, &base, &instance("svc", id, 1000 + k as u16)).await;
    }
    // Each instance renews every second by its lease (threshold: 10 × 1 × 0.85 = 8 a
    // window); they renew four times as often.
    let first = Arc::new(AtomicBool::new(true));
    let rest = Arc::new(AtomicBool::new(true));
    keep_renewing(http.clone(), base.clone(), ids[..1].to_vec(), first.clone());
    keep_renewing(http.clone(), base.clone(), ids[1..].to_vec(), rest.clone());
    eventually(5, "renewals above the threshold", || async {
        let s = node_status(&http, &node).await;
        s["selfPreservation"]["active"] == false && s["selfPreservation"]["renewsThreshold"] == 8
    })
    .await;

    // The split: nine of ten stop renewing. Their leases (2 s) run out, yet nothing is
    // evicted: the node cannot tell a split from nine crashes.
    rest.store(false, Ordering::Relaxed);
    eventually(5, "self-preservation is on", || async {
        node_status(&http, &node).await["selfPreservation"]["active"] == true
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        statuses(&http, &base).await["SVC"].len(),
        10,
        "no lease expired"
    );
    let page = text(&http, &node.url("/")).await;
    assert!(page.contains("EMERGENCY!"), "the dashboard warns");
    eventually(3, "the metric says so", || async {
        let m = text(&http, &node.url("/metrics")).await;
        m.contains("discovery_self_preservation_active 1")
    })
    .await;
    assert_eq!(node_status(&http, &node).await["evicted"], 0);

    // The split heals; then one instance really dies and is evicted.
    rest.store(true, Ordering::Relaxed);
    eventually(5, "self-preservation is off again", || async {
        node_status(&http, &node).await["selfPreservation"]["active"] == false
    })
    .await;
    first.store(false, Ordering::Relaxed);
    eventually(8, "the dead instance is evicted", || async {
        !statuses(&http, &base).await["SVC"].contains_key("svc-0")
    })
    .await;
    assert_eq!(statuses(&http, &base).await["SVC"].len(), 9);
    node.stop().await;
}
