//! The dashboard at `/`, laid out as Eureka's (system status, the self-preservation banner,
//! replicas, registered instances, general info), and the same figures as JSON at
//! `/eureka/status`. Rendered on the server, no scripts, nothing fetched from elsewhere.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use platform::discovery::Status;
use serde_json::{Value, json};

use crate::node::Node;
use crate::now_ms;

pub fn routes(node: Arc<Node>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/dashboard", get(page))
        .with_state(node)
}

/// One application's row: its instances with their status and last renewal.
struct Row {
    app: String,
    zones: Vec<String>,
    instances: Vec<(String, Status, i64, Option<String>)>,
}

fn rows(node: &Node) -> Vec<Row> {
    let registry = node.registry();
    let mut rows: Vec<Row> = Vec::new();
    for lease in registry.leases() {
        let i = &lease.instance;
        if rows.last().is_none_or(|r| r.app != i.app) {
            rows.push(Row {
                app: i.app.clone(),
                zones: Vec::new(),
                instances: Vec::new(),
            });
        }
        if let Some(row) = rows.last_mut() {
            let zone = i
                .metadata
                .get("zone")
                .or_else(|| i.data_center.metadata.get("availability-zone"))
                .cloned()
                .unwrap_or_else(|| "default".into());
            if !row.zones.contains(&zone) {
                row.zones.push(zone);
            }
            row.instances.push((
                i.instance_id.clone(),
                i.status,
                lease.last_renewal,
                i.status_page_url.clone(),
            ));
        }
    }
    rows
}

fn uptime(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

use platform::text::escape_markup as escape;

/// Only http(s) links are made clickable; anything else is shown as text.
fn link(url: Option<&str>, text: &str) -> String {
    match url {
        Some(u) if u.starts_with("http://") || u.starts_with("https://") => {
            format!("<a href=\"{}\">{}</a>", escape(u), escape(text))
        }
        _ => escape(text),
    }
}

async fn page(State(node): State<Arc<Node>>) -> Response {
    let now = now_ms();
    let p = node.preservation();
    let rows = rows(&node);
    let total: usize = rows.iter().map(|r| r.instances.len()).sum();
    let mut html = String::with_capacity(8192 + total * 200);
    html.push_str(concat!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta http-equiv=\"refresh\" content=\"30\">",
        "<title>PromptFlow discovery</title><style>",
        "body{font-family:system-ui,sans-serif;margin:0;color:#222;background:#f6f7f9}",
        "header{background:#1f3a5f;color:#fff;padding:12px 24px;font-size:20px}",
        "main{padding:8px 24px}h2{font-size:17px;border-bottom:2px solid #1f3a5f;padding-bottom:4px;margin-top:28px}",
        "table{border-collapse:collapse;width:100%;background:#fff}td,th{border:1px solid #d8dde3;padding:6px 10px;text-align:left;vertical-align:top;font-size:14px}",
        "th{background:#e9edf2}.warn{color:#b00020;font-weight:bold;margin:12px 0}.note{color:#8a5a00;font-weight:bold;margin:12px 0}",
        ".UP{color:#0a7a2f}.DOWN,.OUT_OF_SERVICE{color:#b00020}.STARTING,.UNKNOWN{color:#8a5a00}small{color:#666}",
        "</style></head><body><header>PromptFlow discovery</header><main>"
    ));
    let _ = write!(
        html,
        "<h2>System Status</h2><table><tr><th>Environment</th><td>{}</td><th>Current time</th><td>{}</td></tr>\
         <tr><th>Data center</th><td>{}</td><th>Uptime</th><td>{}</td></tr>\
         <tr><th>Lease expiration enabled</th><td>{}</td><th>Renews threshold</th><td>{}</td></tr>\
         <tr><th>Self-preservation</th><td>{}</td><th>Renews (last min)</th><td>{}</td></tr></table>",
        escape(&node.settings.environment),
        chrono_like(now),
        escape(&node.settings.datacenter),
        uptime(now - node.started_ms),
        !p.active,
        p.threshold,
        if !p.enabled {
            "off"
        } else if p.active {
            "ACTIVE"
        } else {
            "on (not needed now)"
        },
        p.renewals_last_window,
    );
    if p.active {
        html.push_str(
            "<p class=\"warn\">EMERGENCY! DISCOVERY MAY BE INCORRECTLY CLAIMING INSTANCES ARE UP WHEN \
             THEY'RE NOT. RENEWALS ARE LESSER THAN THRESHOLD AND HENCE THE INSTANCES ARE NOT BEING \
             EXPIRED JUST TO BE SAFE.</p>",
        );
    } else if !p.enabled {
        html.push_str(
            "<p class=\"note\">THE SELF PRESERVATION MODE IS TURNED OFF. THIS MAY NOT PROTECT \
             INSTANCE EXPIRY IN CASE OF NETWORK/OTHER PROBLEMS.</p>",
        );
    }
    html.push_str("<h2>DS Replicas</h2><table><tr><th>Peer</th></tr>");
    if node.peers().is_empty() {
        html.push_str("<tr><td><small>none: this node runs alone</small></td></tr>");
    }
    for peer in node.peers() {
        let _ = write!(html, "<tr><td>{}</td></tr>", link(Some(peer), peer));
    }
    html.push_str(
        "</table><h2>Instances currently registered</h2><table><tr><th>Application</th>\
         <th>Availability Zones</th><th>Status</th><th>Instances (last renewal)</th></tr>",
    );
    if rows.is_empty() {
        html.push_str("<tr><td colspan=\"4\"><small>No instances available</small></td></tr>");
    }
    for row in &rows {
        let mut by_status: std::collections::BTreeMap<Status, usize> = Default::default();
        for (_, s, _, _) in &row.instances {
            *by_status.entry(*s).or_default() += 1;
        }
        let statuses: Vec<String> = by_status
            .iter()
            .map(|(s, n)| format!("<span class=\"{s}\">{s} ({n})</span>"))
            .collect();
        let instances: Vec<String> = row
            .instances
            .iter()
            .map(|(id, s, renewed, url)| {
                format!(
                    "{} <span class=\"{s}\">{s}</span> <small>{} s ago</small>",
                    link(url.as_deref(), id),
                    ((now - renewed).max(0)) / 1000
                )
            })
            .collect();
        let _ = write!(
            html,
            "<tr><td><b>{}</b></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&row.app),
            escape(&row.zones.join(", ")),
            statuses.join("<br>"),
            instances.join("<br>")
        );
    }
    let s = &node.stats;
    let _ = write!(
        html,
        "</table><h2>General Info</h2><table>\
         <tr><th>registered applications</th><td>{}</td></tr>\
         <tr><th>registered instances</th><td>{total}</td></tr>\
         <tr><th>replicated to peers / from peers</th><td>{} / {}</td></tr>\
         <tr><th>replication failures / dropped</th><td>{} / {}</td></tr>\
         <tr><th>evicted since start</th><td>{}</td></tr>\
         <tr><th>listening on</th><td>{}</td></tr>\
         <tr><th>version</th><td>{}</td></tr></table></main></body></html>",
        rows.len(),
        s.replicated_out.load(Ordering::Relaxed),
        s.replicated_in.load(Ordering::Relaxed),
        s.replication_failures.load(Ordering::Relaxed),
        s.replication_dropped.load(Ordering::Relaxed),
        s.evicted.load(Ordering::Relaxed),
        node.local_addr,
        env!("CARGO_PKG_VERSION"),
    );
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        html,
    )
        .into_response()
}

/// `GET /eureka/status`: the dashboard's figures as JSON.
pub async fn status(State(node): State<Arc<Node>>) -> Response {
    let now = now_ms();
    let p = node.preservation();
    let (counts, applications) = {
        let registry = node.registry();
        (registry.counts(), registry.application_count())
    };
    let instances: Value = counts
        .iter()
        .map(|(s, n)| (s.as_str().to_owned(), json!(n)))
        .collect::<serde_json::Map<_, _>>()
        .into();
    let s = &node.stats;
    axum::Json(json!({
        "environment": node.settings.environment,
        "datacenter": node.settings.datacenter,
        "currentTime": now,
        "uptimeMs": now - node.started_ms,
        "selfPreservation": {
            "enabled": p.enabled,
            "active": p.active,
            "renewsLastWindow": p.renewals_last_window,
            "renewsThreshold": p.threshold,
            "leaseExpirationEnabled": !p.active,
        },
        "applications": applications,
        "instances": instances,
        "peers": node.peers(),
        "replication": {
            "sent": s.replicated_out.load(Ordering::Relaxed),
            "received": s.replicated_in.load(Ordering::Relaxed),
            "failures": s.replication_failures.load(Ordering::Relaxed),
            "dropped": s.replication_dropped.load(Ordering::Relaxed),
        },
        "evicted": s.evicted.load(Ordering::Relaxed),
    }))
    .into_response()
}

/// UTC time as `YYYY-MM-DDTHH:MM:SSZ`.
fn chrono_like(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_text_are_shown_safely() {
        assert_eq!(chrono_like(0), "1970-01-01T00:00:00Z");
        assert_eq!(chrono_like(1_795_564_800_000), "2026-11-25T00:00:00Z");
        assert_eq!(link(Some("javascript:alert(1)"), "x"), "x");
        assert_eq!(uptime(3_723_000), "01:02:03");
    }
}
