//! A prompt's versions: list, read one, diff any two, restore an old one as a new version.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use platform::Problem;
use platform::extract::{Json, Path, Query};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::AppState;
use super::caller::Caller;
use super::error::{Result, stale};
use super::prompts::{readable, writable};
use super::views::{PromptView, VersionSummary, VersionView, parse_etag};
use crate::domain::diff;
use crate::storage::prompts::{Change, PromptInput, Version};

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<Vec<VersionSummary>>> {
    readable(&state, &caller, id).await?;
    let versions = state.store.versions(id).await?;
    Ok(Json(versions.iter().map(VersionSummary::from).collect()))
}

async fn version(state: &AppState, id: Uuid, n: i32) -> Result<Version> {
    state
        .store
        .version(id, n)
        .await?
        .ok_or_else(|| Problem::not_found(format!("this prompt has no version {n}")).into())
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, n)): Path<(Uuid, i32)>,
) -> Result<Json<VersionView>> {
    readable(&state, &caller, id).await?;
    Ok(Json(version(&state, id, n).await?.into()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiffParams {
    #[serde(default)]
    from: Option<i32>,
    #[serde(default)]
    to: Option<i32>,
    /// `json` (default) or `unified` (text/x-diff).
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    context: Option<usize>,
}

/// Line diff between versions `from` and `to` (by default the one before the latest, and the
/// latest), as JSON or as unified diff text.
pub async fn diff(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Query(params): Query<DiffParams>,
    headers: HeaderMap,
) -> Result<Response> {
    let record = readable(&state, &caller, id).await?;
    let latest = record.prompt.version;
    let to = params.to.unwrap_or(latest);
    let from = params.from.unwrap_or((to - 1).max(1));
    let old = version(&state, id, from).await?;
    let new = version(&state, id, to).await?;
    let context = params.context.unwrap_or(3).min(100);
    let wants_text = params.format.as_deref() == Some("unified")
        || headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/x-diff"));
    if let Some(f) = params.format.as_deref()
        && f != "unified"
        && f != "json"
    {
        return Err(Problem::invalid_field("format", "must be json or unified").into());
    }
    let unified = diff::unified(
        &old.content,
        &new.content,
        &format!("v{from}"),
        &format!("v{to}"),
        context,
    );
    if wants_text {
        return Ok((
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/x-diff; charset=utf-8"),
            )],
            unified,
        )
            .into_response());
    }
    let field = |a: &str, b: &str| (a != b).then(|| json!({ "from": a, "to": b }));
    let body: Value = json!({
        "prompt_id": id,
        "from": from,
        "to": to,
        "title": field(&old.title, &new.title),
        "description": field(old.description.as_deref().unwrap_or(""), new.description.as_deref().unwrap_or("")),
        "content": diff::diff(&old.content, &new.content),
        "unified": unified,
    });
    Ok(Json(body).into_response())
}

/// Makes version `n`'s title, text and description current again, as a new version that
/// says which one it restored.
pub async fn restore(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, n)): Path<(Uuid, i32)>,
    headers: HeaderMap,
) -> Result<Response> {
    let current = writable(&state, &caller, id).await?;
    if let Some(value) = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok())
        && let Some(Some(expected)) = parse_etag(value)
        && expected != current.prompt.revision
    {
        return Err(stale(current.prompt.revision).into());
    }
    let old = version(&state, id, n).await?;
    let mut input = PromptInput::of(&current);
    input.title = old.title;
    input.content = old.content;
    input.description = old.description;
    super::prompts::prepare(
        &state,
        &caller,
        current.prompt.owner_id,
        Some(id),
        &mut input,
        None,
    )
    .await?;
    let record = state
        .store
        .update_prompt(
            id,
            current.prompt.revision,
            caller.user_id()?,
            input,
            Change {
                message: Some(format!("restored from v{n}")),
                restored_from: Some(n),
            },
        )
        .await?;
    let favorite = super::prompts::favorite_flag(&state, &caller, id).await?;
    Ok(super::prompts::with_etag(
        StatusCode::OK,
        PromptView::new(record, favorite),
        false,
    ))
}
