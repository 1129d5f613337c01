//! `/api/business/categories`: the caller's categories (defaults made on first use).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use platform::Problem;
use platform::extract::{Json, Path};
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};
use uuid::Uuid;

use super::AppState;
use super::caller::{Caller, READ, WRITE};
use super::error::Result;
use crate::domain::validation as v;
use crate::storage::categories::Category;

fn view(c: Category) -> Value {
    json!({
        "id": c.id, "name": c.name, "color": c.color, "position": c.position,
        "system": c.is_system, "created_at": c.created_at, "updated_at": c.updated_at,
    })
}

pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Vec<Value>>> {
    caller.require(READ)?;
    let all = state.store.categories(caller.user_id()?).await?;
    Ok(Json(all.into_iter().map(view).collect()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCategory {
    name: String,
    #[serde(default)]
    color: Option<String>,
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<NewCategory>,
) -> Result<Response> {
    caller.require(WRITE)?;
    let name = body.name.trim().to_owned();
    v::name(&name, v::CATEGORY_MAX).map_err(|e| Problem::invalid_field("name", e))?;
    if let Some(c) = &body.color {
        v::color(c).map_err(|e| Problem::invalid_field("color", e))?;
    }
    let category = state
        .store
        .create_category(caller.user_id()?, &name, body.color)
        .await?;
    Ok((StatusCode::CREATED, Json(view(category))).into_response())
}

fn nullable<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoryChanges {
    #[serde(default)]
    name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    color: Option<Option<String>>,
    #[serde(default)]
    position: Option<i32>,
}

pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Json(body): Json<CategoryChanges>,
) -> Result<Json<Value>> {
    caller.require(WRITE)?;
    let name = body.name.map(|n| n.trim().to_owned());
    if let Some(n) = &name {
        v::name(n, v::CATEGORY_MAX).map_err(|e| Problem::invalid_field("name", e))?;
    }
    if let Some(Some(c)) = &body.color {
        v::color(c).map_err(|e| Problem::invalid_field("color", e))?;
    }
    let category = state
        .store
        .update_category(caller.user_id()?, id, name, body.color, body.position)
        .await?;
    Ok(Json(view(category)))
}

/// Deletes a category; its prompts move to 通用.
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<Value>> {
    caller.require(WRITE)?;
    let moved = state.store.delete_category(caller.user_id()?, id).await?;
    Ok(Json(json!({ "prompts_moved": moved })))
}
