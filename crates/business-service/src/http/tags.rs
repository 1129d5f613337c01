//! `/api/business/tags`: the caller's tags with counts; rename, merge, delete across the
//! library.

use axum::extract::State;
use platform::Problem;
use platform::extract::{Json, Path};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::caller::{Caller, READ, WRITE};
use super::error::Result;
use crate::domain::validation as v;
use crate::storage::tags::TagCount;

pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Vec<TagCount>>> {
    caller.require(READ)?;
    Ok(Json(state.store.tag_counts(caller.user_id()?).await?))
}

fn valid_tag(field: &str, tag: &str) -> Result<String> {
    let tag = tag.split_whitespace().collect::<Vec<_>>().join(" ");
    v::name(&tag, v::TAG_MAX).map_err(|e| Problem::invalid_field(field, e))?;
    Ok(tag)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenameBody {
    from: String,
    to: String,
}

/// Renames a tag everywhere; renaming onto an existing tag merges the two.
pub async fn rename(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<RenameBody>,
) -> Result<Json<Value>> {
    caller.require(WRITE)?;
    let from = valid_tag("from", &body.from)?;
    let to = valid_tag("to", &body.to)?;
    let changed = state
        .store
        .merge_tags(caller.user_id()?, &[from], &to)
        .await
        .map_err(|e| not_found_tag(e, &body.from))?;
    Ok(Json(json!({ "tag": to, "prompts_changed": changed })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MergeBody {
    tags: Vec<String>,
    into: String,
}

pub async fn merge(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<MergeBody>,
) -> Result<Json<Value>> {
    caller.require(WRITE)?;
    if body.tags.is_empty() || body.tags.len() > 100 {
        return Err(Problem::invalid_field("tags", "give 1 to 100 tags to merge").into());
    }
    let sources = body
        .tags
        .iter()
        .map(|t| valid_tag("tags", t))
        .collect::<Result<Vec<_>>>()?;
    let into = valid_tag("into", &body.into)?;
    let changed = state
        .store
        .merge_tags(caller.user_id()?, &sources, &into)
        .await
        .map_err(|e| not_found_tag(e, &body.tags.join(", ")))?;
    Ok(Json(json!({ "tag": into, "prompts_changed": changed })))
}

pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(tag): Path<String>,
) -> Result<Json<Value>> {
    caller.require(WRITE)?;
    let tag = valid_tag("tag", &tag)?;
    let changed = state
        .store
        .delete_tag(caller.user_id()?, &tag)
        .await
        .map_err(|e| not_found_tag(e, &tag))?;
    Ok(Json(json!({ "prompts_changed": changed })))
}

fn not_found_tag(e: crate::storage::WriteError, tag: &str) -> super::error::Error {
    match e {
        crate::storage::WriteError::NotFound => {
            Problem::not_found(format!("none of your prompts has the tag `{tag}`")).into()
        }
        other => other.into(),
    }
}
