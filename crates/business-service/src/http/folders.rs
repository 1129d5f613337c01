//! `/api/business/folders`: nested, ordered, coloured folders. Deleting a folder never
//! deletes its prompts: they move to its parent, or the call is refused.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use platform::FieldError;
use platform::Problem;
use platform::extract::{Json, Path, Query};
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};
use uuid::Uuid;

use super::AppState;
use super::caller::{Caller, READ, WRITE};
use super::error::Result;
use super::views::FolderView;
use crate::domain::validation as v;
use crate::storage::folders::{FolderChanges, OnDelete};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Nested (`children`) instead of a flat list.
    #[serde(default)]
    tree: bool,
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<ListParams>,
) -> Result<Json<Vec<FolderView>>> {
    caller.require(READ)?;
    let folders: Vec<FolderView> = state
        .store
        .folders(caller.user_id()?)
        .await?
        .into_iter()
        .map(FolderView::from)
        .collect();
    if !params.tree {
        return Ok(Json(folders));
    }
    Ok(Json(tree(folders)))
}

fn tree(flat: Vec<FolderView>) -> Vec<FolderView> {
    let mut children: HashMap<Option<Uuid>, Vec<FolderView>> = HashMap::new();
    for f in flat {
        children.entry(f.parent_id).or_default().push(f);
    }
    fn build(
        parent: Option<Uuid>,
        children: &mut HashMap<Option<Uuid>, Vec<FolderView>>,
        depth: usize,
    ) -> Vec<FolderView> {
        let mut level = children.remove(&parent).unwrap_or_default();
        if depth > crate::storage::folders::MAX_DEPTH {
            return level;
        }
        for f in &mut level {
            f.children = Some(build(Some(f.id), children, depth + 1));
        }
        level
    }
    build(None, &mut children, 0)
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<Value>> {
    caller.require(READ)?;
    let owner = caller.user_id()?;
    let folder = state
        .store
        .folder(owner, id)
        .await?
        .ok_or_else(|| Problem::not_found("you have no folder with this id"))?;
    let (prompts, folders) = state.store.folder_contents(owner, id).await?;
    let mut body = serde_json::to_value(FolderView::from(folder)).unwrap_or_default();
    body["prompt_count"] = json!(prompts);
    body["folder_count"] = json!(folders);
    Ok(Json(body))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewFolder {
    /// Chosen by the client (offline devices do); a new UUIDv7 if absent.
    #[serde(default)]
    id: Option<Uuid>,
    name: String,
    #[serde(default)]
    parent_id: Option<Uuid>,
    #[serde(default)]
    position: Option<i32>,
    #[serde(default)]
    color: Option<String>,
    #[serde(default)]
    icon: Option<String>,
}

fn check_style(errors: &mut Vec<FieldError>, color: Option<&str>, icon: Option<&str>) {
    if let Some(c) = color
        && let Err(e) = v::color(c)
    {
        errors.push(FieldError::new("color", e));
    }
    if let Some(i) = icon
        && let Err(e) = v::icon(i)
    {
        errors.push(FieldError::new("icon", e));
    }
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<NewFolder>,
) -> Result<Response> {
    caller.require(WRITE)?;
    let name = body.name.trim().to_owned();
    let mut errors = Vec::new();
    if let Err(e) = v::name(&name, v::FOLDER_NAME_MAX) {
        errors.push(FieldError::new("name", e));
    }
    check_style(&mut errors, body.color.as_deref(), body.icon.as_deref());
    if !errors.is_empty() {
        return Err(Problem::validation(errors).into());
    }
    let folder = state
        .store
        .create_folder(
            caller.user_id()?,
            crate::storage::folders::NewFolder {
                id: body.id,
                name,
                parent: body.parent_id,
                position: body.position,
                color: body.color,
                icon: body.icon,
            },
        )
        .await
        .map_err(parent_error)?;
    Ok((StatusCode::CREATED, Json(FolderView::from(folder))).into_response())
}

fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Changes {
    #[serde(default)]
    name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    parent_id: Option<Option<Uuid>>,
    #[serde(default)]
    position: Option<i32>,
    #[serde(default, deserialize_with = "nullable")]
    color: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    icon: Option<Option<String>>,
}

/// Renames, moves (under another folder or to the top), reorders or restyles a folder.
pub async fn update(
    state: State<AppState>,
    caller: Caller,
    id: Path<Uuid>,
    body: Json<Changes>,
) -> Result<Json<FolderView>> {
    update_expecting(state, caller, id, None, body).await
}

/// [`update`], only if the folder's revision is still `expected` (a synced device's edit).
pub(super) async fn update_expecting(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    expected: Option<i64>,
    Json(body): Json<Changes>,
) -> Result<Json<FolderView>> {
    caller.require(WRITE)?;
    let name = body.name.map(|n| n.trim().to_owned());
    let mut errors = Vec::new();
    if let Some(n) = &name
        && let Err(e) = v::name(n, v::FOLDER_NAME_MAX)
    {
        errors.push(FieldError::new("name", e));
    }
    check_style(
        &mut errors,
        body.color.as_ref().and_then(|c| c.as_deref()),
        body.icon.as_ref().and_then(|i| i.as_deref()),
    );
    if !errors.is_empty() {
        return Err(Problem::validation(errors).into());
    }
    let folder = state
        .store
        .update_folder(
            caller.user_id()?,
            id,
            FolderChanges {
                name,
                parent_id: body.parent_id,
                position: body.position,
                color: body.color,
                icon: body.icon,
                expected_revision: expected,
            },
        )
        .await
        .map_err(parent_error)?;
    Ok(Json(FolderView::from(folder)))
}

fn parent_error(e: crate::storage::WriteError) -> super::error::Error {
    match e {
        crate::storage::WriteError::UnknownFolder => {
            Problem::invalid_field("parent_id", "no folder of yours has this id").into()
        }
        other => other.into(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteParams {
    /// `move_to_parent` moves the folder's prompts and sub-folders up; without it a folder
    /// that holds anything is not deleted.
    #[serde(default)]
    prompts: Option<String>,
}

impl DeleteParams {
    pub(super) fn move_to_parent() -> Self {
        Self {
            prompts: Some("move_to_parent".into()),
        }
    }
}

pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Query(params): Query<DeleteParams>,
) -> Result<Json<Value>> {
    caller.require(WRITE)?;
    let mode = match params.prompts.as_deref() {
        None | Some("refuse") => OnDelete::Refuse,
        Some("move_to_parent") => OnDelete::MoveToParent,
        Some(_) => {
            return Err(
                Problem::invalid_field("prompts", "must be move_to_parent or refuse").into(),
            );
        }
    };
    let (prompts, folders) = state
        .store
        .delete_folder(caller.user_id()?, id, mode)
        .await?;
    Ok(Json(
        json!({ "prompts_moved": prompts, "folders_moved": folders }),
    ))
}
