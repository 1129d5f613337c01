//! `/api/users/me/**`: the caller's own profile, password and sessions.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use platform::Problem;
use platform::extract::{Json, Path};
use platform::server::ClientIp;
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};
use uuid::Uuid;

use super::AppState;
use super::auth::Throttle;
use super::caller::CurrentUser;
use super::error::Result;
use super::views::{SessionView, UserView};
use crate::domain::validation::{self as v, Checks};
use crate::storage::sagas::DeletionRefused;
use crate::storage::users::ProfileChanges;

pub async fn get_me(caller: CurrentUser) -> Json<UserView> {
    Json(UserView::from(caller.user))
}

/// A field that may be absent (leave as is), `null` (clear) or a value (set).
fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchMe {
    #[serde(default, deserialize_with = "nullable")]
    display_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    avatar_url: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    bio: Option<Option<String>>,
    /// Merged into the stored preferences as a JSON Merge Patch (RFC 7396): `null` removes
    /// a key.
    #[serde(default)]
    preferences: Option<Value>,
}

pub async fn patch_me(
    State(state): State<AppState>,
    caller: CurrentUser,
    Json(body): Json<PatchMe>,
) -> Result<Json<UserView>> {
    let trim = |f: Option<Option<String>>| {
        f.map(|o| o.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()))
    };
    let display_name = trim(body.display_name);
    let avatar_url = trim(body.avatar_url);
    let bio = trim(body.bio);
    let mut checks = Checks::new();
    if let Some(Some(name)) = &display_name {
        checks.check("display_name", v::display_name(name));
    }
    if let Some(Some(url)) = &avatar_url {
        checks.check("avatar_url", v::avatar_url(url));
    }
    if let Some(Some(text)) = &bio {
        checks.check("bio", v::bio(text));
    }
    let preferences = match body.preferences {
        None => None,
        Some(patch @ Value::Object(_)) => {
            let mut merged = caller.user.preferences.clone();
            if !merged.is_object() {
                merged = json!({});
            }
            merge_patch(&mut merged, &patch);
            let size = serde_json::to_vec(&merged).map_or(usize::MAX, |b| b.len());
            checks.check(
                "preferences",
                if size > v::PREFERENCES_MAX_BYTES {
                    Err(format!(
                        "may take at most {} bytes as JSON",
                        v::PREFERENCES_MAX_BYTES
                    ))
                } else {
                    Ok(())
                },
            );
            Some(merged)
        }
        Some(_) => {
            checks.check("preferences", Err("must be a JSON object".into()));
            None
        }
    };
    checks.finish()?;
    let user = state
        .store
        .update_profile(
            caller.user.id,
            ProfileChanges {
                display_name,
                avatar_url,
                bio,
                preferences,
            },
        )
        .await?
        .ok_or_else(|| Problem::not_found("the account no longer exists"))?;
    Ok(Json(UserView::from(user)))
}

/// RFC 7396 JSON Merge Patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    if let Value::Object(map) = target {
        for (key, value) in patch {
            if value.is_null() {
                map.remove(key);
            } else {
                merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    current_password: String,
    new_password: String,
}

/// Changes the password; every other session of the account ends.
pub async fn change_password(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    caller: CurrentUser,
    Json(body): Json<ChangePassword>,
) -> Result<Response> {
    let mut checks = Checks::new();
    checks.check("new_password", v::password(&body.new_password));
    if body.new_password == body.current_password {
        checks.check(
            "new_password",
            Err("must differ from the current password".into()),
        );
    }
    checks.finish()?;
    if body.current_password.chars().count() > v::PASSWORD_MAX {
        return Err(wrong_password().into());
    }
    let throttle = Throttle::new(&state, &caller.user.username, ip);
    throttle.check(&state).await?;
    let ok = state
        .passwords
        .verify(
            body.current_password,
            Some(caller.user.password_hash.clone()),
        )
        .await;
    if !ok {
        throttle.failed(&state).await?;
        return Err(wrong_password().into());
    }
    throttle.succeeded(&state).await?;
    let hash = state.passwords.hash(body.new_password).await?;
    let revoked = state
        .store
        .change_password(caller.user.id, hash, caller.session_id)
        .await?;
    tracing::info!(user_id = %caller.user.id, revoked, "password changed");
    Ok(Json(json!({ "revoked_sessions": revoked })).into_response())
}

fn wrong_password() -> Problem {
    Problem::new(
        StatusCode::FORBIDDEN,
        "wrong-password",
        "The current password is wrong",
    )
    .detail("give the account's current password to change it")
}

pub async fn list_sessions(
    State(state): State<AppState>,
    caller: CurrentUser,
) -> Result<Json<Vec<SessionView>>> {
    let sessions = state.store.live_sessions(caller.user.id).await?;
    Ok(Json(
        sessions
            .into_iter()
            .map(|s| SessionView::new(s, caller.session_id))
            .collect(),
    ))
}

/// Ends one of the caller's sessions. Another user's session id is simply not found.
pub async fn revoke_session(
    State(state): State<AppState>,
    caller: CurrentUser,
    Path(id): Path<Uuid>,
) -> Result<StatusCode> {
    if state
        .store
        .revoke_user_session(caller.user.id, id, "revoked_by_user")
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::not_found("you have no live session with this id").into())
    }
}

/// Ends every session of the caller but the one making this call.
pub async fn revoke_other_sessions(
    State(state): State<AppState>,
    caller: CurrentUser,
) -> Result<Json<Value>> {
    let revoked = state
        .store
        .revoke_sessions(caller.user.id, caller.session_id, "revoked_by_user")
        .await?;
    Ok(Json(json!({ "revoked_sessions": revoked })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc7396() {
        let mut target = json!({"theme": "dark", "editor": {"font": 12, "wrap": true}});
        merge_patch(
            &mut target,
            &json!({"theme": null, "editor": {"font": 14}, "lang": "zh"}),
        );
        assert_eq!(
            target,
            json!({"editor": {"font": 14, "wrap": true}, "lang": "zh"})
        );
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteMe {
    password: String,
}

/// Deletes the caller's account (the deletion saga): its sessions end at once, its library
/// is deleted by business-service, then the account itself goes. Answers `204` when that
/// finished within the wait, else `202` with the account `deleting`; if business-service
/// refuses or does not answer in time, the account becomes active again.
pub async fn delete_me(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    caller: CurrentUser,
    Json(body): Json<DeleteMe>,
) -> Result<Response> {
    if body.password.chars().count() > v::PASSWORD_MAX {
        return Err(wrong_password().into());
    }
    let throttle = Throttle::new(&state, &caller.user.username, ip);
    throttle.check(&state).await?;
    let ok = state
        .passwords
        .verify(body.password, Some(caller.user.password_hash.clone()))
        .await;
    if !ok {
        throttle.failed(&state).await?;
        return Err(wrong_password().into());
    }
    throttle.succeeded(&state).await?;
    let user_id = caller.user.id;
    let watch = state.waiters.watch(user_id);
    let deadline =
        platform::clock::now() + chrono::Duration::seconds(state.settings.saga_timeout_secs as i64);
    let user = state
        .store
        .start_deletion(user_id, deadline)
        .await
        .map_err(|e| match e {
            DeletionRefused::NotFound | DeletionRefused::NotActive => {
                super::error::Error::from(Problem::new(
                    StatusCode::CONFLICT,
                    "account-busy",
                    "The account is being set up or deleted",
                ))
            }
            DeletionRefused::LastAdmin => super::error::last_admin().into(),
            DeletionRefused::Db(e) => e.into(),
        })?;
    state.relay.wake();
    tracing::info!(%user_id, "account deletion started");
    watch
        .wait(std::time::Duration::from_millis(
            state.settings.saga_wait_ms,
        ))
        .await;
    match state.store.user_by_id(user_id).await? {
        None => Ok(StatusCode::NO_CONTENT.into_response()),
        Some(now) if now.status == crate::storage::users::DELETING => {
            Ok((StatusCode::ACCEPTED, Json(UserView::from(now))).into_response())
        }
        Some(now) => {
            let _ = user;
            Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "deletion-failed",
                "The account could not be deleted",
            )
            .detail(format!(
                "its prompts could not be deleted, so the account is {} again; try later",
                now.status
            ))
            .into())
        }
    }
}
