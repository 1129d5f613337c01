//! Sessions (one per device) and their rotating refresh tokens.

use chrono::{DateTime, Duration, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder,
    Set, TransactionTrait,
};
use uuid::Uuid;

use super::Store;
use super::entities::refresh_tokens::{self, Entity as RefreshTokens};
use super::entities::sessions::{self, Entity as Sessions};
use super::entities::users::{self, Entity as Users};
use crate::domain::device::DeviceType;

pub use sessions::Model as Session;

#[derive(Debug, Clone)]
pub struct NewSession {
    pub user_id: Uuid,
    pub device_id: String,
    pub device_type: DeviceType,
    pub device_name: Option<String>,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

/// What presenting a refresh token led to.
#[derive(Debug)]
pub enum Refreshed {
    /// A new refresh token replaced the one presented.
    Rotated(Box<(Session, users::Model)>),
    /// The token had been used before: it was stolen or replayed, and its session is now
    /// revoked.
    Reused,
    /// Unknown, expired, or its session or account is no longer active.
    Refused(&'static str),
}

impl Session {
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at > now
    }
}

impl Store {
    /// Starts a session with its first refresh token. A session the same device already
    /// had is revoked: a device holds one session.
    pub async fn create_session(
        &self,
        new: NewSession,
        refresh_hash: String,
        ttl: Duration,
    ) -> Result<Session, DbErr> {
        let now = platform::clock::now();
        let txn = self.db.write().begin().await?;
        Sessions::update_many()
            .col_expr(sessions::Column::RevokedAt, Expr::value(now))
            .col_expr(sessions::Column::RevokedReason, Expr::value("replaced"))
            .filter(sessions::Column::UserId.eq(new.user_id))
            .filter(sessions::Column::DeviceId.eq(new.device_id.clone()))
            .filter(sessions::Column::RevokedAt.is_null())
            .exec(&txn)
            .await?;
        let session = sessions::ActiveModel {
            id: Set(Uuid::now_v7()),
            user_id: Set(new.user_id),
            device_id: Set(new.device_id),
            device_type: Set(new.device_type.as_str().to_owned()),
            device_name: Set(new.device_name),
            user_agent: Set(new.user_agent),
            ip: Set(new.ip),
            created_at: Set(now),
            last_seen_at: Set(now),
            expires_at: Set(now + ttl),
            revoked_at: Set(None),
            revoked_reason: Set(None),
        }
        .insert(&txn)
        .await?;
        insert_refresh(&txn, session.id, refresh_hash, now, now + ttl).await?;
        txn.commit().await?;
        Ok(session)
    }

    /// Exchanges the refresh token hashed as `presented` for `replacement`, in one
    /// transaction: a token is good exactly once.
    pub async fn rotate_refresh(
        &self,
        presented: &str,
        replacement: String,
        ttl: Duration,
        ip: Option<String>,
    ) -> Result<Refreshed, DbErr> {
        let now = platform::clock::now();
        let txn = self.db.write().begin().await?;
        let Some(token) = RefreshTokens::find_by_id(presented.to_owned())
            .one(&txn)
            .await?
        else {
            return Ok(Refreshed::Refused("the refresh token is not valid"));
        };
        if token.used_at.is_some() {
            revoke_session(&txn, token.session_id, "refresh_token_reuse", now).await?;
            txn.commit().await?;
            return Ok(Refreshed::Reused);
        }
        let Some(session) = Sessions::find_by_id(token.session_id).one(&txn).await? else {
            return Ok(Refreshed::Refused("the refresh token is not valid"));
        };
        if session.revoked_at.is_some() {
            return Ok(Refreshed::Refused("the session has been revoked"));
        }
        if token.expires_at <= now {
            return Ok(Refreshed::Refused("the refresh token has expired"));
        }
        let Some(user) = Users::find_by_id(session.user_id).one(&txn).await? else {
            return Ok(Refreshed::Refused("the account no longer exists"));
        };
        if user.status != super::users::ACTIVE {
            return Ok(Refreshed::Refused("the account is disabled"));
        }
        // Mark used only if still unused: two racing refreshes cannot both win.
        let marked = RefreshTokens::update_many()
            .col_expr(refresh_tokens::Column::UsedAt, Expr::value(now))
            .filter(refresh_tokens::Column::TokenHash.eq(presented))
            .filter(refresh_tokens::Column::UsedAt.is_null())
            .exec(&txn)
            .await?;
        if marked.rows_affected != 1 {
            revoke_session(&txn, session.id, "refresh_token_reuse", now).await?;
            txn.commit().await?;
            return Ok(Refreshed::Reused);
        }
        insert_refresh(&txn, session.id, replacement, now, now + ttl).await?;
        let mut model: sessions::ActiveModel = session.into();
        model.last_seen_at = Set(now);
        model.expires_at = Set(now + ttl);
        if ip.is_some() {
            model.ip = Set(ip);
        }
        let session = model.update(&txn).await?;
        txn.commit().await?;
        Ok(Refreshed::Rotated(Box::new((session, user))))
    }

    /// The session a refresh token belongs to, whatever its state.
    pub async fn session_of_refresh(&self, presented: &str) -> Result<Option<Session>, DbErr> {
        let Some(token) = RefreshTokens::find_by_id(presented.to_owned())
            .one(self.db.read())
            .await?
        else {
            return Ok(None);
        };
        Sessions::find_by_id(token.session_id)
            .one(self.db.read())
            .await
    }

    pub async fn session(&self, id: Uuid) -> Result<Option<Session>, DbErr> {
        Sessions::find_by_id(id).one(self.db.read()).await
    }

    /// A session and its account, in one query: every authenticated request asks this.
    pub async fn session_with_user(
        &self,
        id: Uuid,
    ) -> Result<Option<(Session, users::Model)>, DbErr> {
        Ok(Sessions::find_by_id(id)
            .find_also_related(Users)
            .one(self.db.read())
            .await?
            .and_then(|(session, user)| user.map(|u| (session, u))))
    }

    /// The live sessions of a user, newest first.
    pub async fn live_sessions(&self, user_id: Uuid) -> Result<Vec<Session>, DbErr> {
        Sessions::find()
            .filter(sessions::Column::UserId.eq(user_id))
            .filter(sessions::Column::RevokedAt.is_null())
            .filter(sessions::Column::ExpiresAt.gt(platform::clock::now()))
            .order_by_desc(sessions::Column::LastSeenAt)
            .all(self.db.read())
            .await
    }

    /// Revokes one of `user_id`'s sessions; false if the user has no such live session.
    pub async fn revoke_user_session(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        reason: &str,
    ) -> Result<bool, DbErr> {
        let result = Sessions::update_many()
            .col_expr(
                sessions::Column::RevokedAt,
                Expr::value(platform::clock::now()),
            )
            .col_expr(sessions::Column::RevokedReason, Expr::value(reason))
            .filter(sessions::Column::Id.eq(session_id))
            .filter(sessions::Column::UserId.eq(user_id))
            .filter(sessions::Column::RevokedAt.is_null())
            .exec(self.db.write())
            .await?;
        Ok(result.rows_affected == 1)
    }

    /// Revokes every live session of a user but `keep`; returns how many.
    pub async fn revoke_sessions(
        &self,
        user_id: Uuid,
        keep: Option<Uuid>,
        reason: &str,
    ) -> Result<u64, DbErr> {
        revoke_all(
            self.db.write(),
            user_id,
            keep,
            reason,
            platform::clock::now(),
        )
        .await
    }

    /// Changes the password hash and revokes every other session, together.
    pub async fn change_password(
        &self,
        user_id: Uuid,
        hash: String,
        keep: Option<Uuid>,
    ) -> Result<u64, DbErr> {
        let now = platform::clock::now();
        let txn = self.db.write().begin().await?;
        Users::update_many()
            .col_expr(users::Column::PasswordHash, Expr::value(hash))
            .col_expr(users::Column::PasswordChangedAt, Expr::value(now))
            .col_expr(users::Column::UpdatedAt, Expr::value(now))
            .filter(users::Column::Id.eq(user_id))
            .exec(&txn)
            .await?;
        let revoked = revoke_all(&txn, user_id, keep, "password_changed", now).await?;
        txn.commit().await?;
        Ok(revoked)
    }

    /// Forgets refresh tokens and sessions that ended more than `keep` ago.
    pub async fn purge_sessions(&self, keep: Duration) -> Result<u64, DbErr> {
        let cutoff = platform::clock::now() - keep;
        let tokens = RefreshTokens::delete_many()
            .filter(refresh_tokens::Column::ExpiresAt.lt(cutoff))
            .exec(self.db.write())
            .await?;
        let sessions = Sessions::delete_many()
            .filter(
                sessions::Column::ExpiresAt
                    .lt(cutoff)
                    .or(sessions::Column::RevokedAt.lt(cutoff)),
            )
            .exec(self.db.write())
            .await?;
        Ok(tokens.rows_affected + sessions.rows_affected)
    }
}

async fn insert_refresh<C: ConnectionTrait>(
    db: &C,
    session_id: Uuid,
    hash: String,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Result<(), DbErr> {
    refresh_tokens::ActiveModel {
        token_hash: Set(hash),
        session_id: Set(session_id),
        issued_at: Set(now),
        expires_at: Set(expires_at),
        used_at: Set(None),
    }
    .insert(db)
    .await?;
    Ok(())
}

async fn revoke_session<C: ConnectionTrait>(
    db: &C,
    id: Uuid,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    Sessions::update_many()
        .col_expr(sessions::Column::RevokedAt, Expr::value(now))
        .col_expr(sessions::Column::RevokedReason, Expr::value(reason))
        .filter(sessions::Column::Id.eq(id))
        .filter(sessions::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(())
}

pub(super) async fn revoke_all<C: ConnectionTrait>(
    db: &C,
    user_id: Uuid,
    keep: Option<Uuid>,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<u64, DbErr> {
    let mut update = Sessions::update_many()
        .col_expr(sessions::Column::RevokedAt, Expr::value(now))
        .col_expr(sessions::Column::RevokedReason, Expr::value(reason))
        .filter(sessions::Column::UserId.eq(user_id))
        .filter(sessions::Column::RevokedAt.is_null());
    if let Some(keep) = keep {
        update = update.filter(sessions::Column::Id.ne(keep));
    }
    Ok(update.exec(db).await?.rows_affected)
}
