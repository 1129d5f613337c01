//! Who is calling, from the verified access token, and what that lets them do.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use platform::Problem;
use platform::auth::{Authenticated, Claims};
use uuid::Uuid;

use super::AppState;
use crate::storage::prompts::Prompt;

pub const READ: &str = "prompts:read";
pub const WRITE: &str = "prompts:write";

#[derive(Debug, Clone)]
pub struct Caller {
    /// The user, for a user's token; None for a service account.
    pub user: Option<Uuid>,
    /// An administrator (role and scope both).
    pub admin: bool,
    pub claims: Claims,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let Authenticated(claims) = Authenticated::from_request_parts(parts, state).await?;
        let user = Uuid::parse_str(&claims.sub).ok();
        let admin = claims.has_role("admin") && claims.has_scope("users:admin");
        Ok(Caller {
            user,
            admin,
            claims,
        })
    }
}

impl Caller {
    pub fn require(&self, scope: &str) -> Result<(), Problem> {
        if self.claims.has_scope(scope) {
            Ok(())
        } else {
            Err(Problem::forbidden(format!(
                "this needs the `{scope}` scope"
            )))
        }
    }

    /// The calling user; service accounts own no library.
    pub fn user_id(&self) -> Result<Uuid, Problem> {
        self.user
            .ok_or_else(|| Problem::forbidden("this needs a user's token, not a service account's"))
    }

    /// Reads everything: administrators, and service accounts with `prompts:read`.
    pub fn reads_all(&self) -> bool {
        self.admin || (self.user.is_none() && self.claims.has_scope(READ))
    }

    pub fn owns(&self, p: &Prompt) -> bool {
        self.user == Some(p.owner_id)
    }

    /// Private prompts are their owner's alone; unlisted and public ones anyone signed in
    /// may read; the trash is its owner's.
    pub fn can_read(&self, p: &Prompt) -> bool {
        if self.owns(p) || self.reads_all() {
            return true;
        }
        p.deleted_at.is_none() && (p.visibility == "public" || p.visibility == "unlisted")
    }
}
