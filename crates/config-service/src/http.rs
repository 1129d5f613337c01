//! The HTTP API: environments (`/{application}/{profiles}[/{label}]`, plain and v2 JSON),
//! their merged views (`/[{label}/]{application}-{profiles}.yml` and the like), plain files
//! (`/{application}/{profile}/{label}/{path...}`), `/encrypt`, `/decrypt`,
//! `/encrypt/status`, `/monitor` (a git host's push webhook → `config.refresh`), and beyond
//! Spring `/history/{application}` and `POST /history/{application}/rollback` (admin only).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use platform::Problem;
use platform::extract::{Json, Query, RawBody};
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
        .route("/{application}/{profiles}/{label}/{*path}", get(plain))
        .route("/monitor", post(monitor))
        .route("/history/{application}", get(history))
        .route("/history/{application}/rollback", post(rollback))
        .layer(axum::middleware::from_fn_with_state(
            config.clone(),
            readers_only,
        ))
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
    let v2 = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains(V2));
    let (applications, profiles) = request_names(application, profiles)?;
    let body = tokio::task::spawn_blocking(move || {
        config.answer(&applications, &profiles, label.as_deref(), v2)
    })
    .await
    .map_err(|_| Problem::internal())?
    .map_err(problem)?;
    let kind = if v2 { V2 } else { "application/json" };
    Ok(([(header::CONTENT_TYPE, kind)], body).into_response())
}

async fn load(
    config: Arc<Config>,
    application: &str,
    profiles: &str,
    label: Option<String>,
) -> Result<crate::environment::Environment, Problem> {
    let (applications, profiles) = request_names(application, profiles)?;
    tokio::task::spawn_blocking(move || {
        config.environment(&applications, &profiles, label.as_deref())
    })
    .await
    .map_err(|_| Problem::internal())?
    .map_err(problem)
}

/// The applications and profiles a request names (comma-separated, `(_)` for `/`).
fn request_names(application: &str, profiles: &str) -> Result<(Vec<String>, Vec<String>), Problem> {
    let applications: Vec<String> = list(&segment(application));
    let profiles = list(profiles);
    names(&applications, &profiles)?;
    Ok((applications, profiles))
}

/// Applications and profiles are plain names: a path in one could leave the search folders.
fn names(applications: &[String], profiles: &[String]) -> Result<(), Problem> {
    if applications.is_empty() || profiles.is_empty() {
        return Err(Problem::not_found(
            "name an application and at least one profile",
        ));
    }
    if applications
        .iter()
        .chain(profiles)
        .any(|s| s.contains("..") || s.contains('/') || s.chars().any(char::is_control))
    {
        return Err(Problem::invalid_field(
            "application",
            "application and profile names are plain names",
        ));
    }
    Ok(())
}

fn problem(error: Error) -> Problem {
    match error {
        Error::Repo(crate::repo::Error::UnknownLabel(l)) => unknown_label(&l),
        Error::Repo(crate::repo::Error::Unreadable(e)) => {
            tracing::error!(error = %e, "the configuration repository cannot be read");
            Problem::not_found("the configuration repository cannot be read")
        }
        Error::Parse(e) => {
            tracing::warn!(file = %e.file, reason = %e.reason, "a configuration file does not parse");
            Problem::unavailable(format!("{} does not parse: {}", e.file, e.reason))
        }
    }
}

fn unknown_label(label: &str) -> Problem {
    Problem::not_found(format!("no branch, tag or commit is called `{label}`"))
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

/// `/{application}/{profile}/{label}/{path...}`: a plain file (Spring's ResourceController),
/// text with its placeholders resolved from the application's environment unless
/// `?resolvePlaceholders=false`, anything not UTF-8 served as it is.
async fn plain(
    State(config): State<Arc<Config>>,
    platform::extract::Path((application, profiles, label, path)): platform::extract::Path<(
        String,
        String,
        String,
        String,
    )>,
    Query(query): Query<ViewQuery>,
) -> Result<Response, Problem> {
    let applications = list(&segment(&application));
    let profiles = list(&profiles);
    names(&applications, &profiles)?;
    let label = segment(&label);
    // `..`, `.`, empty parts or control characters name no file.
    if path
        .split('/')
        .any(|p| p.is_empty() || p == ".." || p == ".")
        || path.chars().any(char::is_control)
    {
        return Err(Problem::not_found(format!("no file `{path}`")));
    }
    let resolve = query.resolve_placeholders.unwrap_or(true);
    let missing = Problem::not_found(format!("no file `{path}` at `{label}`"));
    let answer = tokio::task::spawn_blocking(move || {
        let Some(file) = config.plain_file(&applications, &profiles, Some(&label), &path)? else {
            return Ok(None);
        };
        let kind = content_type(&file.path);
        let body = match String::from_utf8(file.bytes) {
            Err(binary) => return Ok(Some(("application/octet-stream", binary.into_bytes()))),
            Ok(text) if resolve => {
                // The same commit the file came from, even if the label moved since.
                let at = file.version.as_deref().unwrap_or(&label);
                let env = config.environment(&applications, &profiles, Some(at))?;
                crate::environment::resolve_text(&text, &crate::environment::merged(&env, true))
            }
            Ok(text) => text,
        };
        Ok(Some((kind, body.into_bytes())))
    })
    .await
    .map_err(|_| Problem::internal())?
    .map_err(problem)?;
    let (kind, body) = answer.ok_or(missing)?;
    Ok(([(header::CONTENT_TYPE, kind)], body).into_response())
}

fn content_type(path: &str) -> &'static str {
    match path
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .as_deref()
    {
        Some("yml" | "yaml") => "application/yaml",
        Some("json") => "application/json",
        // .properties, .txt and any other text.
        _ => "text/plain; charset=utf-8",
    }
}

/// Spring's `/monitor`: a git host's push webhook or a form `path=...`; fetches (with a
/// remote), announces `config.refresh` to the applications the paths name and lists them.
async fn monitor(
    State(config): State<Arc<Config>>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, Problem> {
    let Some(push) = crate::watch::parse(&headers, &body, &config.monitor_secret)? else {
        return Ok(Json(Vec::<String>::new()).into_response());
    };
    config.fetch_now().await;
    let applications = crate::watch::touched(&push.paths, config.search_paths());
    if !applications.is_empty() {
        let refresh = platform::events::contracts::ConfigRefresh {
            destination: applications.clone(),
            label: push.label,
            version: push.version,
            paths: push.paths,
        };
        crate::watch::publish(&config, refresh).await;
    }
    Ok(Json(applications).into_response())
}

fn no_git() -> Problem {
    Problem::not_found("history needs the git backend")
}

#[derive(serde::Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct HistoryQuery {
    label: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// One application name from a path (`(_)` for `/`), checked as `names` does.
fn application(raw: &str) -> Result<String, Problem> {
    let application = segment(raw);
    names(std::slice::from_ref(&application), &["default".to_owned()])?;
    if application.contains(',') {
        return Err(Problem::invalid_field("application", "one application"));
    }
    Ok(application)
}

async fn history(
    State(config): State<Arc<Config>>,
    platform::extract::Path(raw): platform::extract::Path<String>,
    Query(query): Query<HistoryQuery>,
) -> Result<Response, Problem> {
    let application = application(&raw)?;
    let limit = query.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(Problem::invalid_field("limit", "limit must be 1 to 100"));
    }
    tokio::task::spawn_blocking(move || {
        let git = config.git().ok_or_else(no_git)?;
        let label = git.label_or_default(query.label.as_deref()).to_owned();
        let (head, _) = git.resolve(&label).map_err(|_| unknown_label(&label))?;
        let dirs = config.dirs(std::slice::from_ref(&application));
        let reads = |p: &str| crate::history::reads(&application, &dirs, p);
        let page = git.with(|repo| {
            let cursor = match &query.cursor {
                None => None,
                Some(c) => Some(crate::repo::commit_id(repo, c).ok_or_else(|| {
                    Problem::invalid_field("cursor", "not a commit id from this history")
                })?),
            };
            crate::history::history(repo, head, &reads, limit, cursor).map_err(|e| match e {
                crate::history::HistoryError::UnknownCursor => {
                    Problem::invalid_field("cursor", "not a commit of this label's history")
                }
                crate::history::HistoryError::Git(e) => git_failed(&e),
            })
        })?;
        Ok(Json(json!({
            "application": application,
            "label": label,
            "commits": page.commits,
            "next_cursor": page.next_cursor,
        }))
        .into_response())
    })
    .await
    .map_err(|_| Problem::internal())?
}

fn git_failed(e: &git2::Error) -> Problem {
    tracing::error!(error = %e.message(), "a git operation failed");
    Problem::internal()
}

fn conflict(detail: impl Into<String>) -> Problem {
    Problem::new(
        StatusCode::CONFLICT,
        "conflict",
        "The change conflicts with the repository's state",
    )
    .detail(detail)
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    to: String,
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    scope: crate::history::Scope,
    #[serde(default)]
    message: Option<String>,
}

/// Writes are for the admin: HTTP Basic with `config_service.admin`, or with no password
/// set, only from this machine.
fn admin(config: &Config, parts: &Parts) -> Result<(), Problem> {
    let settings = &config.admin;
    if settings.password.is_empty() {
        let local = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .is_some_and(|c| match c.0.ip() {
                std::net::IpAddr::V4(v4) => v4.is_loopback(),
                std::net::IpAddr::V6(v6) => v6
                    .to_ipv4_mapped()
                    .map_or(v6.is_loopback(), |v4| v4.is_loopback()),
            });
        return if local {
            Ok(())
        } else {
            Err(Problem::forbidden(
                "with no config_service.admin.password only this machine may write",
            ))
        };
    }
    match basic(&parts.headers) {
        Some((user, password))
            if same(&user, &password, &settings.username, &settings.password) =>
        {
            Ok(())
        }
        _ => Err(challenge(
            "send the config-service admin's credentials (HTTP Basic)",
        )),
    }
}

fn challenge(detail: &'static str) -> Problem {
    Problem::unauthorized(detail).header(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"config-service\", charset=\"UTF-8\""),
    )
}

/// The user and password of an `Authorization: Basic` header.
fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    use base64::Engine as _;
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Both compared in full, so the answer's timing does not tell which was wrong.
fn same(user: &str, password: &str, want_user: &str, want_password: &str) -> bool {
    use subtle::ConstantTimeEq as _;
    let ok = user.as_bytes().ct_eq(want_user.as_bytes())
        & password.as_bytes().ct_eq(want_password.as_bytes());
    bool::from(ok)
}

/// With `config_service.reader.password` set, every route of this router but `/monitor`
/// needs the reader's or the admin's credentials.
async fn readers_only(
    State(config): State<Arc<Config>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let reader = &config.reader;
    if reader.password.is_empty() || request.uri().path() == "/monitor" {
        return next.run(request).await;
    }
    let admin = &config.admin;
    let allowed = basic(request.headers()).is_some_and(|(user, password)| {
        same(&user, &password, &reader.username, &reader.password)
            | (!admin.password.is_empty()
                && same(&user, &password, &admin.username, &admin.password))
    });
    if allowed {
        next.run(request).await
    } else {
        challenge("send config-service's reader credentials (HTTP Basic)").into_response()
    }
}

/// `POST /history/{application}/rollback`: a new commit on the branch with the files in
/// scope as they were at `to`.
async fn rollback(
    State(config): State<Arc<Config>>,
    platform::extract::Path(raw): platform::extract::Path<String>,
    parts: Parts,
    RawBody(raw_body): RawBody,
) -> Result<Response, Problem> {
    // Who asks comes first: a stranger learns nothing from how the body is judged.
    admin(&config, &parts)?;
    let body: RollbackBody = platform::extract::parse_json(&raw_body)?;
    let application = application(&raw)?;
    tokio::task::spawn_blocking(move || {
        let git = config.git().ok_or_else(no_git)?;
        let label = git.label_or_default(body.label.as_deref()).to_owned();
        let dirs = config.dirs(std::slice::from_ref(&application));
        let reads = |p: &str| crate::history::reads(&application, &dirs, p);
        let scope: Option<&dyn Fn(&str) -> bool> = match body.scope {
            crate::history::Scope::Application => Some(&reads),
            crate::history::Scope::Repository => None,
        };
        let failed = |e: crate::history::RollbackError| match e {
            crate::history::RollbackError::Moved => {
                conflict(format!("`{label}` moved meanwhile; look again and retry"))
            }
            crate::history::RollbackError::Dirty(p) => conflict(format!(
                "{p} is modified in the checked-out working tree; commit or discard it first"
            )),
            crate::history::RollbackError::Refused(why) => conflict(format!(
                "{} refused the rollback: {why}",
                config.remote_uri().unwrap_or("the remote")
            )),
            crate::history::RollbackError::Git(e) => git_failed(&e),
        };
        let (plan, made) = git.with(|repo| {
            let (branch, base) = branch(repo, &label, config.remote.is_some())?;
            let to = crate::repo::commit_id(repo, &body.to).ok_or_else(|| {
                if body.to.len() >= 4 && body.to.bytes().all(|b| b.is_ascii_hexdigit()) {
                    Problem::not_found(format!("no commit `{}`", body.to))
                } else {
                    Problem::malformed("`to` must be a commit id (hex)")
                }
            })?;
            let plan =
                crate::history::plan(repo, &branch, base, to, scope).map_err(|e| git_failed(&e))?;
            if plan.restored.is_empty() {
                return Ok::<_, Problem>((plan, None));
            }
            let short = &to.to_string()[..10];
            let message = body.message.clone().unwrap_or_else(|| match body.scope {
                crate::history::Scope::Application => format!("Roll back {application} to {short}"),
                crate::history::Scope::Repository => format!("Roll back the repository to {short}"),
            });
            let commit = match &config.remote {
                // Made here, pushed below without holding the repository (a push is slow).
                Some(_) => crate::history::commit(repo, &plan, &message),
                None => crate::history::apply(repo, &plan, &message),
            }
            .map_err(failed)?;
            Ok((plan, Some(commit)))
        })?;
        let Some(commit) = made else {
            return Ok(rolled_back(plan.base, &label, &[], false));
        };
        if let Some(remote) = &config.remote {
            remote.push(commit, &plan.branch).map_err(failed)?;
        }
        tracing::info!(%application, %label, to = %body.to, %commit, "rolled back");
        Ok(rolled_back(commit, &label, &plan.restored, true))
    })
    .await
    .map_err(|_| Problem::internal())?
}

fn rolled_back(commit: git2::Oid, label: &str, restored: &[String], changed: bool) -> Response {
    Json(json!({
        "commit": commit.to_string(), "label": label, "restored": restored, "changed": changed,
    }))
    .into_response()
}

/// The branch `label` names (`refs/heads/...`, or in a mirror `refs/remotes/origin/...`)
/// and its commit; a tag or commit is a 409 (only branches move), anything else a 404.
fn branch(
    repo: &git2::Repository,
    label: &str,
    mirror: bool,
) -> Result<(String, git2::Oid), Problem> {
    let prefix = if mirror {
        "refs/remotes/origin"
    } else {
        "refs/heads"
    };
    for name in crate::repo::spellings(label) {
        let full = format!("{prefix}/{name}");
        if git2::Reference::is_valid_name(&full)
            && let Ok(r) = repo.find_reference(&full)
            && let Ok(c) = r.peel_to_commit()
        {
            return Ok((full, c.id()));
        }
    }
    let known = crate::repo::spellings(label).iter().any(|name| {
        [
            format!("refs/tags/{name}"),
            format!("refs/remotes/origin/{name}"),
        ]
        .iter()
        .any(|r| git2::Reference::is_valid_name(r) && repo.find_reference(r).is_ok())
    }) || crate::repo::commit_id(repo, label).is_some();
    if known {
        Err(conflict(format!(
            "`{label}` is a tag or a commit: only branches move"
        )))
    } else {
        Err(unknown_label(label))
    }
}
