//! The Eureka REST API as clients call it: both path forms, both media types, every
//! operation, and every refusal.

use std::io::Read;

use platform::discovery::{ActionType, Applications, Instance};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

const ID: &str = "127.0.0.1:jsapp:3000";

#[tokio::test]
async fn registration_is_read_back_in_json_and_xml_on_both_paths() {
    let node = TestNode::spawn(|_| {}).await;
    let http = reqwest::Client::new();
    assert_eq!(
        register(&http, &node.eureka(), &instance("jsapp", ID, 3000)).await,
        StatusCode::NO_CONTENT
    );

    // No Accept header: XML, as some clients expect.
    let xml = http.get(node.url("/eureka/apps/")).send().await.unwrap();
    assert_eq!(xml.headers()["content-type"], "application/xml");
    let xml = xml.text().await.unwrap();
    assert!(xml.contains("<application><name>JSAPP</name>"), "{xml}");
    assert!(xml.contains("<port enabled=\"true\">3000</port>"), "{xml}");
    assert!(
        xml.contains("<apps__hashcode>UP_1_</apps__hashcode>"),
        "{xml}"
    );

    for base in [node.eureka(), node.url("/eureka/v2")] {
        for path in ["/apps", "/apps/"] {
            let (status, body) = get_json(&http, &format!("{base}{path}")).await;
            assert_eq!(status, StatusCode::OK, "{base}{path}");
            let apps = Applications::from_json(&body).unwrap();
            assert_eq!(apps.hashcode, "UP_1_");
            assert_eq!(apps.applications[0].name, "JSAPP");
            let i = &apps.applications[0].instances[0];
            assert_eq!(i.instance_id, ID);
            assert_eq!(i.port, 3000);
            assert_eq!(i.metadata["zone"], "zone-a");
            assert!(i.lease.registration_ts > 0);
        }
    }
    // Strings where Java writes strings.
    let (_, body) = get_json(&http, &format!("{}/apps/JSAPP/{}", node.eureka(), enc(ID))).await;
    assert_eq!(
        body["instance"]["lastDirtyTimestamp"]
            .as_str()
            .map(|s| s.parse::<i64>().is_ok()),
        Some(true)
    );
    assert_eq!(
        body["instance"]["port"],
        json!({"$": 3000, "@enabled": "true"})
    );

    // App names are case-insensitive; ids arrive percent-encoded.
    for url in [
        format!("{}/apps/jsapp/{}", node.eureka(), enc(ID)),
        format!("{}/apps/JsApp/{}", node.url("/eureka/v2"), enc(ID)),
        format!("{}/instances/{}", node.eureka(), enc(ID)),
    ] {
        let (status, body) = get_json(&http, &url).await;
        assert_eq!(status, StatusCode::OK, "{url}");
        assert_eq!(body["instance"]["instanceId"], ID);
    }
    let (status, body) = get_json(&http, &format!("{}/apps/jsapp", node.eureka())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["application"]["name"], "JSAPP");
    let (status, body) = get_json(&http, &format!("{}/vips/jsapp", node.eureka())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["applications"]["application"][0]["name"], "JSAPP");
    // Unknown things are 404.
    for url in [
        format!("{}/apps/NOPE", node.eureka()),
        format!("{}/apps/JSAPP/nope", node.eureka()),
        format!("{}/instances/nope", node.eureka()),
        format!("{}/vips/nope", node.eureka()),
        format!("{}/svips/nope", node.eureka()),
    ] {
        assert_eq!(
            get_json(&http, &url).await.0,
            StatusCode::NOT_FOUND,
            "{url}"
        );
    }
    node.stop().await;
}

#[tokio::test]
async fn an_xml_registration_is_taken_and_listed_in_xml() {
    let node = TestNode::spawn(|_| {}).await;
    let http = reqwest::Client::new();
    let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
        <instance><instanceId>javahost:javasvc:8080</instanceId><hostName>javahost</hostName>
        <app>JAVASVC</app><ipAddr>10.0.0.7</ipAddr><status>UP</status>
        <overriddenstatus>UNKNOWN</overriddenstatus>
        <port enabled="true">8080</port><securePort enabled="false">443</securePort>
        <countryId>1</countryId>
        <dataCenterInfo class="com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo"><name>MyOwn</name></dataCenterInfo>
        <leaseInfo><renewalIntervalInSecs>30</renewalIntervalInSecs><durationInSecs>90</durationInSecs></leaseInfo>
        <metadata><management.port>8081</management.port></metadata>
        <vipAddress>javasvc</vipAddress><secureVipAddress>javasvc-secure</secureVipAddress>
        <lastDirtyTimestamp>1700000000000</lastDirtyTimestamp></instance>"#;
    let status = http
        .post(format!("{}/v2/apps/JAVASVC", node.eureka()))
        .header("content-type", "application/xml")
        .body(xml)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::NO_CONTENT);
    let body = http
        .get(format!(
            "{}/apps/JAVASVC/javahost:javasvc:8080",
            node.eureka()
        ))
        .header("accept", "application/xml")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        body.contains("<instanceId>javahost:javasvc:8080</instanceId>"),
        "{body}"
    );
    assert!(
        body.contains("<metadata><management.port>8081</management.port></metadata>"),
        "{body}"
    );
    assert!(
        body.contains("<lastDirtyTimestamp>1700000000000</lastDirtyTimestamp>"),
        "{body}"
    );
    let (status, apps) = get_json(&http, &format!("{}/svips/javasvc-secure", node.eureka())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(apps["applications"]["application"][0]["name"], "JAVASVC");
    node.stop().await;
}

#[tokio::test]
async fn renewals_cancels_and_their_refusals() {
    let node = TestNode::spawn(|_| {}).await;
    let http = reqwest::Client::new();
    let base = node.eureka();
    register(&http, &base, &instance("jsapp", ID, 3000)).await;
    let before = http
        .get(format!("{base}/apps/JSAPP/{}", enc(ID)))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["instance"]["leaseInfo"]["lastRenewalTimestamp"]
        .as_i64()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert_eq!(renew(&http, &base, "jsapp", ID).await, StatusCode::OK);
    let (_, after) = get_json(&http, &format!("{base}/apps/JSAPP/{}", enc(ID))).await;
    assert!(
        after["instance"]["leaseInfo"]["lastRenewalTimestamp"]
            .as_i64()
            .unwrap()
            > before
    );

    // Unknown: 404, so the client registers again.
    assert_eq!(
        renew(&http, &base, "jsapp", "ghost").await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        renew(&http, &base, "other", ID).await,
        StatusCode::NOT_FOUND
    );
    // The client holds newer data than the registry: 404 as well.
    let newer = http
        .put(format!(
            "{base}/apps/JSAPP/{}?status=UP&lastDirtyTimestamp=99999999999999",
            enc(ID)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(newer.status(), StatusCode::NOT_FOUND);
    // Bad parameters are refused with a problem.
    for query in [
        "lastDirtyTimestamp=soon",
        "status=SLEEPY",
        "overriddenstatus=%00",
    ] {
        let response = http
            .put(format!("{base}/apps/JSAPP/{}?{query}", enc(ID)))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }

    assert_eq!(
        http.delete(format!("{base}/apps/JSAPP/{}", enc(ID)))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        http.delete(format!("{base}/apps/JSAPP/{}", enc(ID)))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    assert!(statuses(&http, &base).await.is_empty());
    node.stop().await;
}

#[tokio::test]
async fn bad_registrations_are_refused_and_change_nothing() {
    let node = TestNode::spawn(|c| c.peers = vec![]).await;
    let http = reqwest::Client::new();
    let base = node.eureka();
    register(&http, &base, &instance("keep", "keep-1", 1)).await;
    let registry_before = statuses(&http, &base).await;

    let without = |field: &str| {
        let mut body = instance("jsapp", ID, 3000);
        body["instance"].as_object_mut().unwrap().remove(field);
        body
    };
    let mut mismatched = instance("jsapp", ID, 3000);
    mismatched["instance"]["app"] = json!("other");
    let mut hostile_key = instance("jsapp", ID, 3000);
    hostile_key["instance"]["metadata"] = json!({"a\"><script>": "x"});
    let mut wrong_type = instance("jsapp", ID, 3000);
    wrong_type["instance"]["port"] = json!({"$": [1]});
    let mut control = instance("jsapp", ID, 3000);
    control["instance"]["hostName"] = json!("evil\u{0}host");
    let cases: Vec<(String, Option<&str>)> = vec![
        (without("hostName").to_string(), Some("Missing hostname")),
        (without("ipAddr").to_string(), Some("Missing ip address")),
        (without("app").to_string(), Some("Missing appName")),
        (
            without("dataCenterInfo").to_string(),
            Some("Missing dataCenterInfo Name"),
        ),
        (mismatched.to_string(), Some("Mismatched appName")),
        (hostile_key.to_string(), None),
        (wrong_type.to_string(), None),
        (control.to_string(), None),
        ("{\"instance\": ".into(), None),
        ("[]".into(), None),
        ("<instance><app>JSAPP</app>".into(), None),
        (
            "<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><instance>&e;</instance>"
                .into(),
            None,
        ),
    ];
    for (body, reason) in cases {
        let response = http
            .post(format!("{base}/apps/jsapp"))
            .header(
                "content-type",
                if body.starts_with('<') {
                    "application/xml"
                } else {
                    "application/json"
                },
            )
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem: Value = response.json().await.unwrap();
        if let Some(reason) = reason {
            assert!(
                problem["detail"]
                    .as_str()
                    .unwrap_or_default()
                    .contains(reason),
                "{problem}"
            );
        }
    }
    // Oversized body.
    let mut huge = instance("jsapp", ID, 3000);
    huge["instance"]["metadata"] = json!({"big": "x".repeat(100_000)});
    let response = http
        .post(format!("{base}/apps/jsapp"))
        .json(&huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Unknown instances for every write.
    for (method, path) in [
        (
            reqwest::Method::PUT,
            "/apps/JSAPP/nope/status?value=OUT_OF_SERVICE",
        ),
        (reqwest::Method::DELETE, "/apps/JSAPP/nope/status"),
        (reqwest::Method::PUT, "/apps/JSAPP/nope/metadata?a=b"),
        (reqwest::Method::DELETE, "/apps/JSAPP/nope"),
    ] {
        let response = http
            .request(method, format!("{base}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
    for path in [
        "/apps/KEEP/keep-1/status?value=SIDEWAYS",
        "/apps/KEEP/keep-1/status",
        "/apps/KEEP/keep-1/metadata?bad%20key=1",
        "/apps/KEEP/keep-1/metadata?xmlns=1",
    ] {
        let response = http.put(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
    }
    assert_eq!(
        statuses(&http, &base).await,
        registry_before,
        "nothing changed"
    );
    node.stop().await;
}

#[tokio::test]
async fn an_override_holds_until_removed() {
    let node = TestNode::spawn(|_| {}).await;
    let http = reqwest::Client::new();
    let base = node.eureka();
    register(&http, &base, &instance("jsapp", ID, 3000)).await;
    let status_url = format!("{base}/apps/JSAPP/{}/status", enc(ID));
    assert_eq!(
        http.put(format!("{status_url}?value=OUT_OF_SERVICE"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let instance_url = format!("{base}/apps/JSAPP/{}", enc(ID));
    let (_, body) = get_json(&http, &instance_url).await;
    assert_eq!(body["instance"]["status"], "OUT_OF_SERVICE");
    assert_eq!(body["instance"]["overriddenStatus"], "OUT_OF_SERVICE");
    // Heartbeats and a fresh registration saying UP do not lift it.
    renew(&http, &base, "jsapp", ID).await;
    register(&http, &base, &instance("jsapp", ID, 3000)).await;
    let (_, body) = get_json(&http, &instance_url).await;
    assert_eq!(body["instance"]["status"], "OUT_OF_SERVICE");
    assert_eq!(statuses(&http, &base).await["JSAPP"][ID], "OUT_OF_SERVICE");
    // Removing it puts back what the instance reports.
    assert_eq!(
        http.delete(&status_url).send().await.unwrap().status(),
        StatusCode::OK
    );
    let (_, body) = get_json(&http, &instance_url).await;
    assert_eq!(body["instance"]["status"], "UP");
    assert_eq!(body["instance"]["overriddenStatus"], "UNKNOWN");
    node.stop().await;
}

#[tokio::test]
async fn metadata_is_merged() {
    let node = TestNode::spawn(|_| {}).await;
    let http = reqwest::Client::new();
    let base = node.eureka();
    register(&http, &base, &instance("jsapp", ID, 3000)).await;
    let response = http
        .put(format!(
            "{base}/apps/JSAPP/{}/metadata?version=2.1&weight=10&zone=zone-b",
            enc(ID)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (_, body) = get_json(&http, &format!("{base}/apps/JSAPP/{}", enc(ID))).await;
    assert_eq!(
        body["instance"]["metadata"],
        json!({"version": "2.1", "weight": "10", "zone": "zone-b"})
    );
    node.stop().await;
}

/// Applies a delta to a listing the way Eureka clients do.
fn merge(full: &mut Applications, delta: &Applications) {
    for app in &delta.applications {
        for changed in &app.instances {
            let target = match full.applications.iter_mut().find(|a| a.name == app.name) {
                Some(a) => a,
                None => {
                    full.applications.push(platform::discovery::Application {
                        name: app.name.clone(),
                        instances: vec![],
                    });
                    full.applications.last_mut().unwrap()
                }
            };
            target
                .instances
                .retain(|i| i.instance_id != changed.instance_id);
            if changed.action_type != Some(ActionType::Deleted) {
                target.instances.push(changed.clone());
            }
        }
    }
}

#[tokio::test]
async fn deltas_carry_each_change_and_the_whole_registry_hash() {
    let node = TestNode::spawn(|c| c.delta_retention_ms = 1500).await;
    let http = reqwest::Client::new();
    let base = node.eureka();
    for k in 0..3 {
        register(
            &http,
            &base,
            &instance("svc", &format!("svc-{k}"), 3000 + k),
        )
        .await;
    }
    let (_, full) = get_json(&http, &format!("{base}/apps/")).await;
    let mut client_view = Applications::from_json(&full).unwrap();
    // Wait for the registrations to leave the delta.
    eventually(5, "the delta empties", || async {
        let (_, d) = get_json(&http, &format!("{base}/apps/delta")).await;
        Applications::from_json(&d).unwrap().applications.is_empty()
    })
    .await;

    http.put(format!("{base}/apps/SVC/svc-1/status?value=OUT_OF_SERVICE"))
        .send()
        .await
        .unwrap();
    http.delete(format!("{base}/apps/SVC/svc-2"))
        .send()
        .await
        .unwrap();
    register(&http, &base, &instance("other", "other-1", 4000)).await;

    let (_, delta) = get_json(&http, &format!("{base}/apps/delta")).await;
    let delta = Applications::from_json(&delta).unwrap();
    let mut changes: Vec<(String, ActionType)> = delta
        .applications
        .iter()
        .flat_map(|a| a.instances.iter())
        .map(|i| (i.instance_id.clone(), i.action_type.unwrap()))
        .collect();
    changes.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        changes,
        vec![
            ("other-1".into(), ActionType::Added),
            ("svc-1".into(), ActionType::Modified),
            ("svc-2".into(), ActionType::Deleted),
        ]
    );
    assert_eq!(delta.hashcode, "OUT_OF_SERVICE_1_UP_2_");
    // A client merging the delta arrives at the registry, hash and all.
    merge(&mut client_view, &delta);
    let merged_hash = platform::discovery::instance::hashcode(
        client_view
            .applications
            .iter()
            .flat_map(|a| a.instances.iter().map(|i| i.status)),
    );
    assert_eq!(merged_hash, delta.hashcode);
    let (_, full) = get_json(&http, &format!("{base}/apps/")).await;
    assert_eq!(
        Applications::from_json(&full).unwrap().hashcode,
        merged_hash
    );
    // The XML delta says the same.
    let xml = text(&http, &format!("{base}/apps/delta")).await;
    assert!(xml.contains("<actionType>DELETED</actionType>"), "{xml}");
    assert!(
        xml.contains("<apps__hashcode>OUT_OF_SERVICE_1_UP_2_</apps__hashcode>"),
        "{xml}"
    );
    node.stop().await;
}

#[tokio::test]
async fn listings_are_gzipped_when_asked() {
    let node = TestNode::spawn(|_| {}).await;
    let http = reqwest::Client::new();
    let base = node.eureka();
    for k in 0..20 {
        register(
            &http,
            &base,
            &instance("svc", &format!("svc-{k}"), 3000 + k),
        )
        .await;
    }
    for path in ["/apps/", "/apps/delta"] {
        let plain = http
            .get(format!("{base}{path}"))
            .header("accept", "application/json")
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let response = http
            .get(format!("{base}{path}"))
            .header("accept", "application/json")
            .header("accept-encoding", "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["content-encoding"], "gzip");
        let zipped = response.bytes().await.unwrap();
        assert!(
            zipped.len() * 4 < plain.len(),
            "{} vs {}",
            zipped.len(),
            plain.len()
        );
        let mut unzipped = Vec::new();
        flate2::read::GzDecoder::new(&zipped[..])
            .read_to_end(&mut unzipped)
            .unwrap();
        assert_eq!(unzipped, plain.to_vec());
    }
    node.stop().await;
}

#[tokio::test]
async fn the_dashboard_shows_the_registry_safely() {
    let node = TestNode::spawn(|_| {}).await;
    let http = reqwest::Client::new();
    let base = node.eureka();
    register(&http, &base, &instance("jsapp", ID, 3000)).await;
    let mut hostile = instance("evil", "<script>alert(1)</script>", 1);
    hostile["instance"]["statusPageUrl"] = json!("javascript:alert(2)");
    assert_eq!(
        register(&http, &base, &hostile).await,
        StatusCode::NO_CONTENT
    );
    http.put(format!(
        "{base}/apps/EVIL/{}/status?value=OUT_OF_SERVICE",
        enc("<script>alert(1)</script>")
    ))
    .send()
    .await
    .unwrap();
    let page = http.get(node.url("/")).send().await.unwrap();
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let page = page.text().await.unwrap();
    for expected in [
        "System Status",
        "Self-preservation",
        "Renews threshold",
        "DS Replicas",
        "JSAPP",
        ID,
        "zone-a",
        "UP (1)",
        "OUT_OF_SERVICE (1)",
        "&lt;script&gt;alert(1)&lt;/script&gt;",
        "General Info",
    ] {
        assert!(
            page.contains(expected),
            "{expected} missing from the dashboard"
        );
    }
    assert!(!page.contains("<script>"), "instance ids are escaped");
    assert!(
        !page.contains("href=\"javascript:"),
        "only http links are made"
    );
    let metrics = text(&http, &node.url("/metrics")).await;
    // Gauges are published every second.
    eventually(3, "registry gauges", || async {
        let m = text(&http, &node.url("/metrics")).await;
        m.contains("discovery_instances{status=\"UP\"}")
            && m.contains("discovery_self_preservation_enabled 1")
    })
    .await;
    assert!(
        metrics.contains("discovery_registrations_total"),
        "{metrics}"
    );
    node.stop().await;
}

#[tokio::test]
async fn an_instance_id_falls_back_as_eureka_does() {
    let node = TestNode::spawn(|_| {}).await;
    let http = reqwest::Client::new();
    let mut body = instance("svc", "x", 1);
    body["instance"]
        .as_object_mut()
        .unwrap()
        .remove("instanceId");
    assert_eq!(
        register(&http, &node.eureka(), &body).await,
        StatusCode::NO_CONTENT
    );
    let (status, found) = get_json(&http, &format!("{}/apps/SVC/localhost", node.eureka())).await;
    assert_eq!(status, StatusCode::OK);
    let instance = Instance::from_json(&found).unwrap();
    assert_eq!(instance.host_name, "localhost");
    node.stop().await;
}
