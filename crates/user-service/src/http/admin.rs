//! Administration: accounts, roles, disabling, service accounts, key rotation. Every route
//! here takes the `Admin` extractor.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use platform::Problem;
use platform::extract::{Json, Path, Query};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::AppState;
use super::caller::Admin;
use super::error::{Error, Result, last_admin};
use super::views::{Page, UserView};
use crate::domain::roles::{Role, validate_scopes};
use crate::domain::validation::{self as v, Checks};
use crate::storage::users::AdminChangeError;
use crate::tokens::new_client_secret;

const PAGE_DEFAULT: u64 = 50;
const PAGE_MAX: u64 = 200;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    limit: Option<u64>,
    /// Part of a username or email.
    #[serde(default)]
    q: Option<String>,
}

pub async fn list_users(
    State(state): State<AppState>,
    _admin: Admin,
    Query(query): Query<ListQuery>,
) -> Result<Json<Page<UserView>>> {
    let limit = query.limit.unwrap_or(PAGE_DEFAULT);
    if limit == 0 || limit > PAGE_MAX {
        return Err(Problem::invalid_field("limit", format!("must be 1 to {PAGE_MAX}")).into());
    }
    let after = query
        .cursor
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(decode_cursor)
        .transpose()?;
    if query.q.as_ref().is_some_and(|q| q.chars().count() > 254) {
        return Err(Problem::invalid_field("q", "must be at most 254 characters").into());
    }
    // One more than asked tells whether another page follows.
    let mut users = state
        .store
        .list_users(after, limit + 1, query.q.as_deref())
        .await?;
    let next_cursor = if users.len() as u64 > limit {
        users.truncate(limit as usize);
        users
            .last()
            .map(|u| URL_SAFE_NO_PAD.encode(u.id.to_string()))
    } else {
        None
    };
    Ok(Json(Page {
        items: users.into_iter().map(UserView::from).collect(),
        next_cursor,
    }))
}

fn decode_cursor(cursor: &str) -> Result<Uuid, Problem> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| Uuid::parse_str(&s).ok())
        .ok_or_else(|| Problem::invalid_field("cursor", "is not a cursor this service gave out"))
}

pub async fn get_user(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<Uuid>,
) -> Result<Json<UserView>> {
    let user = state
        .store
        .user_by_id(id)
        .await?
        .ok_or_else(|| Problem::not_found("no user has this id"))?;
    Ok(Json(UserView::from(user)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolesBody {
    roles: Vec<String>,
}

pub async fn set_roles(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<Uuid>,
    Json(body): Json<RolesBody>,
) -> Result<Json<UserView>> {
    let mut roles = Vec::new();
    for name in &body.roles {
        let role = Role::parse(name).ok_or_else(|| {
            Problem::invalid_field(
                "roles",
                format!("unknown role `{name}`; roles are user, admin"),
            )
        })?;
        roles.push(role);
    }
    let user = state
        .store
        .set_roles(id, &roles)
        .await
        .map_err(admin_error)?;
    tracing::info!(admin = %admin.user.id, user_id = %id, roles = %user.roles, "roles changed");
    Ok(Json(UserView::from(user)))
}

pub async fn disable_user(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<Uuid>,
) -> Result<Json<UserView>> {
    set_status(&state, &admin, id, false).await
}

pub async fn enable_user(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<Uuid>,
) -> Result<Json<UserView>> {
    set_status(&state, &admin, id, true).await
}

async fn set_status(
    state: &AppState,
    admin: &super::CurrentUser,
    id: Uuid,
    active: bool,
) -> Result<Json<UserView>> {
    let user = state
        .store
        .set_status(id, active)
        .await
        .map_err(admin_error)?;
    tracing::info!(admin = %admin.user.id, user_id = %id, active, "account status changed");
    Ok(Json(UserView::from(user)))
}

fn admin_error(e: AdminChangeError) -> Error {
    match e {
        AdminChangeError::NotFound => Problem::not_found("no user has this id").into(),
        AdminChangeError::LastAdmin => last_admin().into(),
        AdminChangeError::Busy => Problem::new(
            axum::http::StatusCode::CONFLICT,
            "account-busy",
            "The account is being set up or deleted",
        )
        .detail("wait until the account is set up, or its deletion has finished or been undone")
        .into(),
        AdminChangeError::Db(e) => Error::Db(e),
    }
}

#[derive(Debug, Serialize)]
pub struct ServiceAccountView {
    client_id: String,
    name: String,
    scopes: Vec<String>,
    created_at: DateTime<Utc>,
    disabled_at: Option<DateTime<Utc>>,
}

pub async fn list_service_accounts(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<Vec<ServiceAccountView>>> {
    let accounts = state.store.service_accounts().await?;
    Ok(Json(
        accounts
            .into_iter()
            .map(|a| ServiceAccountView {
                client_id: a.client_id,
                name: a.name,
                scopes: a.scopes.split_whitespace().map(str::to_owned).collect(),
                created_at: a.created_at,
                disabled_at: a.disabled_at,
            })
            .collect(),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewServiceAccount {
    client_id: String,
    #[serde(default)]
    name: Option<String>,
    scopes: Vec<String>,
}

/// Creates a service account; its secret is in this answer and nowhere else, ever.
pub async fn create_service_account(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Json(body): Json<NewServiceAccount>,
) -> Result<Response> {
    let mut checks = Checks::new();
    checks.check("client_id", v::username(&body.client_id));
    if let Some(name) = &body.name {
        checks.check("name", v::display_name(name));
    }
    let scopes = validate_scopes(&body.scopes);
    if let Err(e) = &scopes {
        checks.check("scopes", Err(e.clone()));
    }
    checks.finish()?;
    let scopes = scopes.map_err(|e| Problem::invalid_field("scopes", e))?;
    let secret = new_client_secret()?;
    let hash = state.passwords.hash(secret.clone()).await?;
    let name = body.name.unwrap_or_else(|| body.client_id.clone());
    let created = state
        .store
        .put_service_account(&body.client_id, &name, hash, scopes.clone(), false)
        .await?;
    if !created {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "client-id-taken",
            "The client id is taken",
        )
        .detail("a service account with this client id exists")
        .into());
    }
    tracing::info!(admin = %admin.user.id, client_id = %body.client_id, "service account created");
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "client_id": body.client_id,
            "client_secret": secret,
            "name": name,
            "scopes": scopes.split_whitespace().collect::<Vec<_>>(),
        })),
    )
        .into_response())
}

pub async fn disable_service_account(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(client_id): Path<String>,
) -> Result<StatusCode> {
    if state.store.disable_service_account(&client_id).await? {
        tracing::info!(admin = %admin.user.id, %client_id, "service account disabled");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::not_found("no enabled service account has this client id").into())
    }
}

/// Starts signing with a new key; tokens signed by the old one stay valid until they expire.
pub async fn rotate_keys(State(state): State<AppState>, Admin(admin): Admin) -> Result<Response> {
    let kid = state.issuer.rotate().await?;
    state.verifier.refresh().await?;
    tracing::info!(admin = %admin.user.id, %kid, "signing key rotated");
    Ok(Json(json!({ "kid": kid })).into_response())
}
