//! Who is calling: a verified token whose account and session are still live.
//!
//! Access tokens are stateless, but user-service owns the sessions, so here every request
//! also checks that the token's session has not been revoked and its account not disabled:
//! logging out or being disabled takes effect at once on these routes.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use platform::Problem;
use platform::auth::{Authenticated, Claims};
use uuid::Uuid;

use super::AppState;
use super::error::{Error, account_disabled, session_ended};
use crate::domain::roles::{Role, USERS_ADMIN};
use crate::storage::users::User;

pub struct CurrentUser {
    pub claims: Claims,
    pub user: User,
    pub session_id: Option<Uuid>,
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let Authenticated(claims) = Authenticated::from_request_parts(parts, state).await?;
        let user_id = Uuid::parse_str(&claims.sub).map_err(|_| {
            Problem::forbidden("this endpoint is for user accounts, not service accounts")
        })?;
        let session_id = match &claims.sid {
            Some(sid) => Some(Uuid::parse_str(sid).map_err(|_| session_ended())?),
            None => None,
        };
        let user = match session_id {
            Some(sid) => {
                let (session, user) = state
                    .store
                    .session_with_user(sid)
                    .await?
                    .filter(|(s, _)| s.user_id == user_id)
                    .ok_or_else(session_ended)?;
                if !user.is_active() {
                    return Err(account_disabled().into());
                }
                if !session.is_live(platform::clock::now()) {
                    return Err(session_ended().into());
                }
                user
            }
            None => {
                let user = state
                    .store
                    .user_by_id(user_id)
                    .await?
                    .ok_or_else(session_ended)?;
                if !user.is_active() {
                    return Err(account_disabled().into());
                }
                user
            }
        };
        Ok(CurrentUser {
            claims,
            user,
            session_id,
        })
    }
}

/// An administrator: a token with `users:admin`, of an account that is an admin right now.
pub struct Admin(pub CurrentUser);

impl FromRequestParts<AppState> for Admin {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let caller = CurrentUser::from_request_parts(parts, state).await?;
        if !caller.claims.has_scope(USERS_ADMIN) || !caller.user.role_list().contains(&Role::Admin)
        {
            return Err(Problem::forbidden("this needs the administrator role").into());
        }
        Ok(Admin(caller))
    }
}
