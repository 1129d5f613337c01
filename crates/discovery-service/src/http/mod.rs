//! The Eureka REST API, under `/eureka/` (Spring Cloud's form) and `/eureka/v2/`
//! (Netflix's), with or without a trailing slash. Reads answer XML unless `Accept` asks for
//! JSON; listings are gzipped when asked. Errors are problem+json with Eureka's status codes
//! (clients read only the code).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post, put};
use platform::Problem;
use platform::discovery::instance::valid_metadata_key;
use platform::discovery::{Instance, REPLICATION_HEADER, Status};
use platform::extract::{Path, RawBody};
use serde_json::{Value, json};

use crate::node::{Format, Listing, Node, render};
use crate::registry::Renewal;
use crate::replication::{self, Task};
use crate::xml;

type Shared = State<Arc<Node>>;

pub fn routes(node: Arc<Node>) -> Router {
    let mut router = Router::new();
    let mut add = |path: &str, method: MethodRouter<Arc<Node>>| {
        for prefix in ["/eureka", "/eureka/v2"] {
            router = std::mem::take(&mut router)
                .route(&format!("{prefix}{path}"), method.clone())
                .route(&format!("{prefix}{path}/"), method.clone());
        }
    };
    add("/apps", get(all_apps));
    add("/apps/delta", get(delta));
    add("/apps/{app}", get(one_app).post(register));
    add(
        "/apps/{app}/{id}",
        get(one_instance).put(renew).delete(cancel),
    );
    add(
        "/apps/{app}/{id}/status",
        put(set_override).delete(remove_override),
    );
    add("/apps/{app}/{id}/metadata", put(metadata));
    add("/instances/{id}", get(instance_by_id));
    add("/vips/{vip}", get(vip));
    add("/svips/{svip}", get(svip));
    add("/peerreplication/batch", post(batch));
    add("/status", get(crate::dashboard::status));
    router.with_state(node)
}

fn format(headers: &HeaderMap) -> Format {
    let json = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("json"));
    if json { Format::Json } else { Format::Xml }
}

fn wants_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("gzip"))
}

fn replicated(headers: &HeaderMap) -> bool {
    headers
        .get(REPLICATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn body(format: Format, bytes: Bytes, gzip: bool) -> Response {
    let content_type = match format {
        Format::Json => "application/json",
        Format::Xml => "application/xml",
    };
    let mut response = (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        bytes,
    )
        .into_response();
    if gzip {
        response
            .headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    response.headers_mut().insert(
        header::VARY,
        HeaderValue::from_static("accept, accept-encoding"),
    );
    response
}

fn tree(headers: &HeaderMap, tree: &Value) -> Response {
    let format = format(headers);
    body(format, render(tree, format), false)
}

fn unknown(what: &str) -> Response {
    Problem::not_found(format!("{what} is not registered")).into_response()
}

/// 200 when the write found its instance, 404 otherwise.
fn done(found: bool, id: &str) -> Response {
    if found {
        StatusCode::OK.into_response()
    } else {
        unknown(&format!("instance {id}"))
    }
}

/// Query parameters, percent-decoded; a repeated key keeps its last value.
fn query(raw: Option<String>) -> BTreeMap<String, String> {
    raw.map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

fn status_param(params: &BTreeMap<String, String>, key: &str) -> Result<Option<Status>, Problem> {
    match params.get(key) {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        Some(s) => Status::parse(s).map(Some).ok_or_else(|| {
            Problem::malformed(format!(
                "{key} must be UP, DOWN, STARTING, OUT_OF_SERVICE or UNKNOWN"
            ))
        }),
    }
}

/// App names are compared in upper case, as Eureka does.
fn app_name(app: &str) -> String {
    app.to_ascii_uppercase()
}

async fn all_apps(State(node): Shared, headers: HeaderMap) -> Response {
    listing(node, Listing::Full, &headers).await
}

async fn delta(State(node): Shared, headers: HeaderMap) -> Response {
    listing(node, Listing::Delta, &headers).await
}

/// A cached listing at once; a rebuild on a blocking thread, so the async workers go on
/// serving renewals meanwhile.
async fn listing(node: Arc<Node>, listing: Listing, headers: &HeaderMap) -> Response {
    let gzip = wants_gzip(headers);
    let format = format(headers);
    if let Some(bytes) = node.cached(listing, format, gzip) {
        return body(format, bytes, gzip);
    }
    let one_at_a_time = node.rebuild_lock(listing).lock_owned().await;
    if let Some(bytes) = node.cached(listing, format, gzip) {
        return body(format, bytes, gzip);
    }
    // The lock goes with the rebuild, so a client leaving meanwhile does not free it.
    let build = move || {
        let bytes = node.listing(listing, format, gzip);
        drop(one_at_a_time);
        bytes
    };
    match tokio::task::spawn_blocking(build).await {
        Ok(bytes) => body(format, bytes, gzip),
        Err(e) => {
            tracing::error!(error = %e, "building a registry listing failed");
            Problem::internal().into_response()
        }
    }
}

async fn one_app(State(node): Shared, Path(app): Path<String>, headers: HeaderMap) -> Response {
    let app = app_name(&app);
    let Some(application) = node.registry().application(&app) else {
        return unknown(&format!("application {app}"));
    };
    let instances: Vec<Value> = application
        .instances
        .iter()
        .map(Instance::to_json)
        .collect();
    tree(
        &headers,
        &json!({"application": {"name": application.name, "instance": instances}}),
    )
}

async fn one_instance(
    State(node): Shared,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let found = node
        .registry()
        .lease(&app_name(&app), &id)
        .map(|l| l.listed());
    match found {
        Some(i) => tree(&headers, &json!({"instance": i.to_json()})),
        None => unknown(&format!("instance {id}")),
    }
}

async fn instance_by_id(
    State(node): Shared,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let found = node.registry().by_id(&id);
    match found {
        Some(i) => tree(&headers, &json!({"instance": i.to_json()})),
        None => unknown(&format!("instance {id}")),
    }
}

async fn vip(State(node): Shared, Path(vip): Path<String>, headers: HeaderMap) -> Response {
    by_vip(&node, &vip, false, &headers)
}

async fn svip(State(node): Shared, Path(vip): Path<String>, headers: HeaderMap) -> Response {
    by_vip(&node, &vip, true, &headers)
}

fn by_vip(node: &Node, vip: &str, secure: bool, headers: &HeaderMap) -> Response {
    let apps = node.registry().by_vip(vip, secure);
    if apps.applications.is_empty() {
        return unknown(&format!("VIP address {vip}"));
    }
    tree(headers, &apps.to_json())
}

/// Reads an instance from a JSON or XML body.
fn read_instance(headers: &HeaderMap, bytes: &[u8]) -> Result<Instance, Problem> {
    let is_xml = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("xml"))
        || bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'<');
    let tree = if is_xml {
        xml::read(bytes).map_err(Problem::malformed)?
    } else {
        serde_json::from_slice::<Value>(bytes)
            .map_err(|e| Problem::malformed(format!("the body is not JSON: {e}")))?
    };
    Instance::from_json(&tree).map_err(Problem::malformed)
}

async fn register(
    State(node): Shared,
    Path(app): Path<String>,
    headers: HeaderMap,
    RawBody(bytes): RawBody,
) -> Response {
    let instance = match read_instance(&headers, &bytes) {
        Ok(i) => i,
        Err(problem) => return problem.into_response(),
    };
    let app = app_name(&app);
    if instance.app != app {
        return Problem::malformed(format!(
            "Mismatched appName, expecting {app} but was {}",
            instance.app
        ))
        .into_response();
    }
    node.register(instance, replicated(&headers));
    StatusCode::NO_CONTENT.into_response()
}

async fn renew(
    State(node): Shared,
    Path((app, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let params = query(raw);
    let last_dirty = match params.get("lastDirtyTimestamp").filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => match s.parse::<i64>() {
            Ok(t) => Some(t),
            Err(_) => {
                return Problem::malformed("lastDirtyTimestamp must be milliseconds since 1970")
                    .into_response();
            }
        },
    };
    let overridden = match status_param(&params, "overriddenstatus") {
        Ok(s) => s,
        Err(p) => return p.into_response(),
    };
    if let Err(p) = status_param(&params, "status") {
        return p.into_response();
    }
    match node.renew(
        &app_name(&app),
        &id,
        last_dirty,
        overridden,
        replicated(&headers),
    ) {
        Renewal::Renewed => StatusCode::OK.into_response(),
        Renewal::NotFound => unknown(&format!("instance {id}")),
        Renewal::Conflict(ours) => {
            let mut response = tree(&headers, &json!({"instance": ours.to_json()}));
            *response.status_mut() = StatusCode::CONFLICT;
            response
        }
    }
}

async fn cancel(
    State(node): Shared,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    done(node.cancel(&app_name(&app), &id, replicated(&headers)), &id)
}

async fn set_override(
    State(node): Shared,
    Path((app, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let params = query(raw);
    let status = match status_param(&params, "value") {
        Ok(Some(s)) => s,
        Ok(None) => {
            return Problem::malformed("value (the status to set) is required").into_response();
        }
        Err(p) => return p.into_response(),
    };
    done(
        node.set_override(&app_name(&app), &id, status, replicated(&headers)),
        &id,
    )
}

async fn remove_override(
    State(node): Shared,
    Path((app, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let params = query(raw);
    let status = match status_param(&params, "value") {
        Ok(s) => s,
        Err(p) => return p.into_response(),
    };
    done(
        node.remove_override(&app_name(&app), &id, status, replicated(&headers)),
        &id,
    )
}

async fn metadata(
    State(node): Shared,
    Path((app, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let entries = query(raw);
    if let Some(bad) = entries.keys().find(|k| !valid_metadata_key(k)) {
        return Problem::malformed(format!(
            "metadata key `{}` is not an XML name",
            bad.chars().take(64).collect::<String>()
        ))
        .into_response();
    }
    if entries
        .values()
        .any(|v| v.len() > 2048 || v.chars().any(char::is_control))
    {
        return Problem::malformed("metadata values must be text of at most 2048 bytes")
            .into_response();
    }
    done(
        node.merge_metadata(&app_name(&app), &id, &entries, replicated(&headers)),
        &id,
    )
}

/// `POST /peerreplication/batch/`: a peer's changes, applied here and never sent on.
async fn batch(State(node): Shared, RawBody(bytes): RawBody) -> Response {
    let tree: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => return Problem::malformed(format!("the body is not JSON: {e}")).into_response(),
    };
    let Some(items) = tree.get("replicationList").and_then(Value::as_array) else {
        return Problem::malformed("replicationList is missing").into_response();
    };
    let answers: Vec<Value> = items
        .iter()
        .map(|item| match Task::from_json(item) {
            Ok(task) => replication::apply(&node, task),
            Err(reason) => json!({"statusCode": 400, "reason": reason}),
        })
        .collect();
    axum::Json(json!({"responseList": answers})).into_response()
}
