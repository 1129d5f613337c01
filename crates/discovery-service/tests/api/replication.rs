//! Three discovery nodes on 127.0.0.1, .2 and .3, each given the others' addresses.

use std::net::IpAddr;
use std::time::Duration;

use discovery_service::Settings;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;

struct Cluster {
    port: u16,
    ips: Vec<IpAddr>,
}

impl Cluster {
    fn new() -> Cluster {
        let ips: Vec<IpAddr> = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
            .iter()
            .map(|ip| ip.parse().unwrap())
            .collect();
        Cluster {
            port: free_port(&ips),
            ips,
        }
    }

    fn settings(&self, k: usize) -> Settings {
        let mut settings = quick((self.ips[k], self.port).into());
        // Every node gets the whole list, itself included, as in a shared config file.
        settings.peers = self
            .ips
            .iter()
            .map(|ip| format!("http://{ip}:{}/eureka/", self.port))
            .collect();
        settings
    }

    async fn start(&self, k: usize) -> TestNode {
        TestNode::start(self.settings(k)).await
    }
}

fn count(status: &Value, key: &str) -> u64 {
    status["replication"][key].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_stay_in_step_and_do_not_echo() {
    let cluster = Cluster::new();
    let nodes = vec![
        cluster.start(0).await,
        cluster.start(1).await,
        cluster.start(2).await,
    ];
    let http = reqwest::Client::new();
    for node in &nodes {
        assert_eq!(
            node_status(&http, node).await["peers"]
                .as_array()
                .unwrap()
                .len(),
            2,
            "a node skips itself"
        );
    }
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);

    // One registration on A reaches B and C, once each, and goes no further.
    assert_eq!(
        register(&http, &a.eureka(), &instance("svc", "svc-1", 1)).await,
        StatusCode::NO_CONTENT
    );
    for node in [b, c] {
        eventually(5, "the registration is replicated", || async {
            statuses(&http, &node.eureka())
                .await
                .get("SVC")
                .is_some_and(|s| s.contains_key("svc-1"))
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (sa, sb, sc) = (
        node_status(&http, a).await,
        node_status(&http, b).await,
        node_status(&http, c).await,
    );
    assert_eq!(count(&sa, "sent"), 2, "A sent to B and C: {sa}");
    assert_eq!(count(&sb, "received"), 1, "{sb}");
    assert_eq!(count(&sc, "received"), 1, "{sc}");
    assert_eq!(
        count(&sb, "sent") + count(&sc, "sent"),
        0,
        "replicated writes are not replicated again"
    );
    assert_eq!(count(&sa, "received"), 0, "nothing came back to A");

    // Writes on any node reach the others: a heartbeat on B, an override on C, metadata on
    // A, a cancel on B.
    assert_eq!(
        renew(&http, &b.eureka(), "svc", "svc-1").await,
        StatusCode::OK
    );
    http.put(format!(
        "{}/apps/SVC/svc-1/status?value=OUT_OF_SERVICE",
        c.eureka()
    ))
    .send()
    .await
    .unwrap();
    for node in &nodes {
        eventually(5, "the override everywhere", || async {
            statuses(&http, &node.eureka()).await["SVC"]["svc-1"] == "OUT_OF_SERVICE"
        })
        .await;
    }
    http.put(format!("{}/apps/SVC/svc-1/metadata?version=7", a.eureka()))
        .send()
        .await
        .unwrap();
    for node in &nodes {
        eventually(5, "the metadata everywhere", || async {
            let (_, i) = get_json(&http, &format!("{}/apps/SVC/svc-1", node.eureka())).await;
            i["instance"]["metadata"]["version"] == "7"
                && i["instance"]["status"] == "OUT_OF_SERVICE"
        })
        .await;
    }
    http.delete(format!("{}/apps/SVC/svc-1/status", a.eureka()))
        .send()
        .await
        .unwrap();
    for node in &nodes {
        eventually(5, "the override lifted everywhere", || async {
            statuses(&http, &node.eureka()).await["SVC"]["svc-1"] == "UP"
        })
        .await;
    }
    assert_eq!(
        http.delete(format!("{}/apps/SVC/svc-1", b.eureka()))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    for node in &nodes {
        eventually(5, "the cancel everywhere", || async {
            statuses(&http, &node.eureka()).await.is_empty()
        })
        .await;
    }
    // Every node's hash agrees.
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_fills_itself_from_its_peers() {
    let cluster = Cluster::new();
    let a = cluster.start(0).await;
    let b = cluster.start(1).await;
    let c = cluster.start(2).await;
    let http = reqwest::Client::new();
    for k in 0..5 {
        register(
            &http,
            &a.eureka(),
            &instance("svc", &format!("svc-{k}"), 1000 + k),
        )
        .await;
    }
    eventually(5, "C has all five", || async {
        statuses(&http, &c.eureka())
            .await
            .get("SVC")
            .is_some_and(|s| s.len() == 5)
    })
    .await;

    c.stop().await;
    // While C is down: three more, one gone, one overridden.
    for k in 5..8 {
        register(
            &http,
            &b.eureka(),
            &instance("svc", &format!("svc-{k}"), 1000 + k),
        )
        .await;
    }
    http.delete(format!("{}/apps/SVC/svc-0", a.eureka()))
        .send()
        .await
        .unwrap();
    http.put(format!(
        "{}/apps/SVC/svc-3/status?value=OUT_OF_SERVICE",
        a.eureka()
    ))
    .send()
    .await
    .unwrap();
    eventually(5, "A and B agree", || async {
        statuses(&http, &a.eureka()).await == statuses(&http, &b.eureka()).await
    })
    .await;

    // C starts with an empty registry and fills it from A and B before it serves.
    let c = cluster.start(2).await;
    let expected = statuses(&http, &a.eureka()).await;
    assert_eq!(expected["SVC"].len(), 7);
    assert_eq!(
        statuses(&http, &c.eureka()).await,
        expected,
        "C serves the registry at once"
    );
    let (_, full_a) = get_json(&http, &format!("{}/apps/", a.eureka())).await;
    let (_, full_c) = get_json(&http, &format!("{}/apps/", c.eureka())).await;
    assert_eq!(
        full_a["applications"]["apps__hashcode"],
        full_c["applications"]["apps__hashcode"]
    );
    assert_eq!(
        full_c["applications"]["apps__hashcode"],
        "OUT_OF_SERVICE_1_UP_6_"
    );

    // And takes part again: a registration on C reaches A and B.
    register(&http, &c.eureka(), &instance("late", "late-1", 9)).await;
    for node in [&a, &b] {
        eventually(5, "C's registration replicated", || async {
            statuses(&http, &node.eureka()).await.contains_key("LATE")
        })
        .await;
    }
    a.stop().await;
    b.stop().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_made_while_a_peer_is_down_reaches_it_when_it_returns() {
    let cluster = Cluster::new();
    let mut settings = cluster.settings(0);
    // A alone knows B; B does not sync at start, so only A's retries can bring it in step.
    settings.peers = vec![format!(
        "http://{}:{}/eureka/",
        cluster.ips[1], cluster.port
    )];
    let a = TestNode::start(settings).await;
    let http = reqwest::Client::new();
    register(&http, &a.eureka(), &instance("svc", "while-down", 1)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        count(&node_status(&http, &a).await, "failures") > 0,
        "B was down"
    );

    let mut settings = cluster.settings(1);
    settings.peers = vec![];
    let b = TestNode::start(settings).await;
    eventually(10, "A's queued registration reaches B", || async {
        statuses(&http, &b.eureka())
            .await
            .get("SVC")
            .is_some_and(|s| s.contains_key("while-down"))
    })
    .await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_large_registrations_reaches_the_peers_in_batches_they_accept() {
    let cluster = Cluster::new();
    let pair = |k: usize| {
        let mut settings = cluster.settings(k);
        settings.peers.truncate(2);
        settings
    };
    let a = TestNode::start(pair(0)).await;
    let b = TestNode::start(pair(1)).await;
    let http = reqwest::Client::new();
    // 300 registrations of ~2 KiB each: 600 KiB, ten times the peers' 64 KiB body limit.
    let registrations = (0..300).map(|k| {
        let mut body = instance("bulk", &format!("bulk-{k}"), 1000 + k);
        body["instance"]["metadata"]["notes"] = "n".repeat(1500).into();
        let http = http.clone();
        let base = a.eureka();
        async move { register(&http, &base, &body).await }
    });
    let answers = futures_util::future::join_all(registrations).await;
    assert!(answers.iter().all(|s| *s == StatusCode::NO_CONTENT));
    eventually(15, "all 300 on B", || async {
        statuses(&http, &b.eureka())
            .await
            .get("BULK")
            .is_some_and(|s| s.len() == 300)
    })
    .await;
    let status = node_status(&http, &a).await;
    assert_eq!(
        count(&status, "failures"),
        0,
        "no batch was refused: {status}"
    );
    a.stop().await;
    b.stop().await;
}
