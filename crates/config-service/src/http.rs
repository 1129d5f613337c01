//! The HTTP API: environments (`/{application}/{profiles}[/{label}]`, plain and v2 JSON),
//! their merged views (`/[{label}/]{application}-{profiles}.yml` and the like) and
//! `/encrypt`, `/decrypt`, `/encrypt/status`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use platform::Problem;
use platform::extract::{Query, RawBody};
use serde_json::json;

use crate::{Config, Error};

const V2: &str = "application/vnd.spring-cloud.config-server.v2+json";

pub fn routes(config: Arc<Config>) -> Router {
    Router::new()
        .route("/encrypt/status", get(status))
        .route("/encrypt", post(encrypt))
        .route("/decrypt", post(decrypt))
        .route("/{file}", get(view))
        .route("/{application}/{profiles}", get(environment))
        .route("/{application}/{profiles}/{label}", get(labelled))
        .with_state(config)
}

/// A path segment: percent-decoded (axum did that), `(_)` standing for `/`.
fn segment(s: &str) -> String {
    s.replace("(_)", "/")
}

fn list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

async fn environment(
    State(config): State<Arc<Config>>,
    Path((application, profiles)): Path<(String, String)>,
    Query(query): Query<ViewQuery>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    // `/{label}/{application}-{profiles}.yml` has the same shape (as in Spring).
    if let Some((name, profiles, ext)) = view_file(&profiles) {
        let label = segment(&application);
        return render(config, &name, &profiles, Some(label), ext, &query).await;
    }
    answer(config, &application, &profiles, None, &headers).await
}

#[derive(serde::Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct ViewQuery {
    resolve_placeholders: Option<bool>,
}

async fn view(
    State(config): State<Arc<Config>>,
    Path(file): Path<String>,
    Query(query): Query<ViewQuery>,
) -> Result<Response, Problem> {
    let Some((name, profiles, ext)) = view_file(&file) else {
        return Err(Problem::not_found("no resource lives at this path"));
    };
    render(config, &name, &profiles, None, ext, &query).await
}

/// `{application}-{profiles}.{yml|yaml|properties|json}`: the application is everything
/// before the last `-` (as Spring's pattern matches); with no `-`, the `default` profile.
fn view_file(file: &str) -> Option<(String, String, &'static str)> {
    let (stem, ext) = file.rsplit_once('.')?;
    let ext = ["yml", "yaml", "properties", "json"]
        .into_iter()
        .find(|e| *e == ext)?;
    Some(match stem.rsplit_once('-') {
        Some((name, profiles)) if !name.is_empty() && !profiles.is_empty() => {
            (name.to_owned(), profiles.to_owned(), ext)
        }
        _ => (stem.to_owned(), "default".to_owned(), ext),
    })
}

async fn render(
    config: Arc<Config>,
    application: &str,
    profiles: &str,
    label: Option<String>,
    ext: &str,
    query: &ViewQuery,
) -> Result<Response, Problem> {
    let env = load(config, application, profiles, label).await?;
    let flat = crate::environment::merged(&env, query.resolve_placeholders.unwrap_or(true));
    let (kind, body) = match ext {
        "properties" => {
            let mut out = String::new();
            for (k, v) in &flat {
                out.push_str(&format!("{k}: {}\n", crate::environment::as_text(v)));
            }
            ("text/plain", out)
        }
        "json" => (
            "application/json",
            crate::environment::tree(&flat).to_string(),
        ),
        _ => (
            "text/plain",
            serde_norway::to_string(&crate::environment::tree(&flat))
                .map_err(|_| Problem::internal())?,
        ),
    };
    Ok(([(header::CONTENT_TYPE, kind)], body).into_response())
}

async fn labelled(
    State(config): State<Arc<Config>>,
    Path((application, profiles, label)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    answer(
        config,
        &application,
        &profiles,
        Some(segment(&label)),
        &headers,
    )
    .await
}

async fn answer(
    config: Arc<Config>,
    application: &str,
    profiles: &str,
    label: Option<String>,
    headers: &HeaderMap,
) -> Result<Response, Problem> {
    let env = load(config, application, profiles, label).await?;
    let v2 = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains(V2));
    let mut body = serde_json::to_value(&env).map_err(|_| Problem::internal())?;
    if v2 && let Some(sources) = body["propertySources"].as_array_mut() {
        for source in sources {
            let name = source["name"].clone();
            if let Some(map) = source["source"].as_object_mut() {
                for value in map.values_mut() {
                    *value = json!({ "value": value.take(), "origin": name });
                }
            }
        }
    }
    let kind = if v2 { V2 } else { "application/json" };
    Ok(([(header::CONTENT_TYPE, kind)], body.to_string()).into_response())
}

async fn load(
    config: Arc<Config>,
    application: &str,
    profiles: &str,
    label: Option<String>,
) -> Result<crate::environment::Environment, Problem> {
    let applications: Vec<String> = list(&segment(application));
    let profiles = list(profiles);
    if applications.is_empty() || profiles.is_empty() {
        return Err(Problem::not_found(
            "name an application and at least one profile",
        ));
    }
    if applications
        .iter()
        .chain(&profiles)
        .any(|s| s.contains("..") || s.contains('/') || s.chars().any(char::is_control))
    {
        return Err(Problem::invalid_field(
            "application",
            "application and profile names are plain names",
        ));
    }
    let result = tokio::task::spawn_blocking(move || {
        config.environment(&applications, &profiles, label.as_deref())
    })
    .await
    .map_err(|_| Problem::internal())?;
    match result {
        Ok(env) => Ok(env),
        Err(Error::Repo(crate::repo::Error::UnknownLabel(l))) => Err(Problem::not_found(format!(
            "no branch, tag or commit is called `{l}`"
        ))),
        Err(Error::Repo(crate::repo::Error::Unreadable(e))) => {
            tracing::error!(error = %e, "the configuration repository cannot be read");
            Err(Problem::not_found(
                "the configuration repository cannot be read",
            ))
        }
        Err(Error::Parse(e)) => {
            tracing::warn!(file = %e.file, reason = %e.reason, "a configuration file does not parse");
            Err(Problem::unavailable(format!(
                "{} does not parse: {}",
                e.file, e.reason
            )))
        }
    }
}

async fn status(State(config): State<Arc<Config>>) -> Response {
    match config.cipher() {
        Some(_) => axum::Json(json!({ "status": "OK" })).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({ "status": "NO_KEY", "description": "No key was installed for encryption service" })),
        )
            .into_response(),
    }
}

fn no_key() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "no-key", "No encryption key")
        .detail("config-service has no key: set config_service.encrypt.key or ENCRYPT_KEY")
}

/// The body as text; a form post (curl `-d`) ends in a `=` that is not part of it.
fn text(headers: &HeaderMap, body: &[u8]) -> Result<String, Problem> {
    let text =
        std::str::from_utf8(body).map_err(|_| Problem::malformed("the body is not UTF-8 text"))?;
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    let text = if form {
        text.strip_suffix('=').unwrap_or(text)
    } else {
        text
    };
    Ok(text.to_owned())
}

async fn encrypt(
    State(config): State<Arc<Config>>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, Problem> {
    let cipher = config.cipher().ok_or_else(no_key)?;
    let plain = text(&headers, &body)?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain")],
        cipher.encrypt(&plain),
    )
        .into_response())
}

async fn decrypt(
    State(config): State<Arc<Config>>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, Problem> {
    let cipher = config.cipher().ok_or_else(no_key)?;
    let hex = text(&headers, &body)?;
    let hex = hex
        .trim()
        .strip_prefix(crate::cipher::PREFIX)
        .unwrap_or(hex.trim())
        .to_owned();
    let plain = cipher.decrypt(&hex).map_err(|_| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-cipher",
            "Text not encrypted with this key",
        )
        .detail("the text is not hex made by this key")
    })?;
    Ok(([(header::CONTENT_TYPE, "text/plain")], plain).into_response())
}
