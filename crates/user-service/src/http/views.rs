//! What user-service answers with: the JSON shapes of its resources.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::storage::sessions::Session;
use crate::storage::users::User;

#[derive(Debug, Serialize)]
pub struct UserView {
    pub id: Uuid,
    pub username: String,
    pub email: String,
    pub display_name: Option<String>,
    pub avatar_url: Option<String>,
    pub bio: Option<String>,
    pub preferences: serde_json::Value,
    pub roles: Vec<&'static str>,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        let roles = u.role_list().into_iter().map(|r| r.as_str()).collect();
        Self {
            id: u.id,
            username: u.username,
            email: u.email,
            display_name: u.display_name,
            avatar_url: u.avatar_url,
            bio: u.bio,
            preferences: u.preferences,
            roles,
            status: u.status,
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct SessionView {
    pub id: Uuid,
    pub device_id: String,
    pub device_type: String,
    pub device_name: Option<String>,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// The session of the token this list was asked with.
    pub current: bool,
}

impl SessionView {
    pub fn new(s: Session, current: Option<Uuid>) -> Self {
        Self {
            current: current == Some(s.id),
            id: s.id,
            device_id: s.device_id,
            device_type: s.device_type,
            device_name: s.device_name,
            user_agent: s.user_agent,
            ip: s.ip,
            created_at: s.created_at,
            last_seen_at: s.last_seen_at,
            expires_at: s.expires_at,
        }
    }
}

/// The answer to login and refresh (OAuth 2 field names).
#[derive(Debug, Serialize)]
pub struct TokenPair {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    pub refresh_token: String,
    pub refresh_expires_in: i64,
    pub scope: String,
    pub session_id: Uuid,
    pub user: UserView,
}

#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}
