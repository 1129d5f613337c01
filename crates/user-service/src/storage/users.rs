//! Accounts: create, find, update, list, roles and status.

use chrono::{DateTime, Utc};
use platform::db::unique_violation;
use sea_orm::sea_query::{Expr, ExprTrait, LikeExpr};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait,
};
use uuid::Uuid;

use super::Store;
use super::entities::users::{self, Entity as Users};
use crate::domain::roles::{Role, format_roles, parse_roles};
use crate::domain::validation::key;

pub use users::Model as User;

pub const ACTIVE: &str = "active";
pub const DISABLED: &str = "disabled";
/// Registered, waiting for business-service to provision the library.
pub const PENDING: &str = "pending";
/// Being deleted: waiting for business-service to delete the library.
pub const DELETING: &str = "deleting";

pub(super) async fn insert_user<C: ConnectionTrait>(
    db: &C,
    new: NewUser,
    status: &str,
) -> Result<User, DbErr> {
    let now = platform::clock::now();
    let model = users::ActiveModel {
        id: Set(Uuid::now_v7()),
        username_key: Set(key(&new.username)),
        username: Set(new.username),
        email_key: Set(key(&new.email)),
        email: Set(new.email),
        password_hash: Set(new.password_hash),
        display_name: Set(new.display_name),
        avatar_url: Set(None),
        bio: Set(None),
        preferences: Set(serde_json::json!({})),
        roles: Set(format_roles(&new.roles)),
        status: Set(status.into()),
        created_at: Set(now),
        updated_at: Set(now),
        password_changed_at: Set(now),
        disabled_at: Set(None),
    };
    model.insert(db).await
}

#[derive(Debug)]
pub struct NewUser {
    pub username: String,
    pub email: String,
    pub password_hash: String,
    pub display_name: Option<String>,
    pub roles: Vec<Role>,
}

#[derive(Debug, thiserror::Error)]
pub enum CreateUserError {
    #[error("username taken")]
    UsernameTaken,
    #[error("email taken")]
    EmailTaken,
    #[error(transparent)]
    Db(#[from] DbErr),
}

/// Profile fields a user may change; `None` leaves a field as it is, `Some(None)` clears it.
#[derive(Debug, Default)]
pub struct ProfileChanges {
    pub display_name: Option<Option<String>>,
    pub avatar_url: Option<Option<String>>,
    pub bio: Option<Option<String>>,
    pub preferences: Option<serde_json::Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum AdminChangeError {
    #[error("no such user")]
    NotFound,
    #[error("this would leave no active administrator")]
    LastAdmin,
    #[error("the account is being set up or deleted")]
    Busy,
    #[error(transparent)]
    Db(#[from] DbErr),
}

impl User {
    pub fn role_list(&self) -> Vec<Role> {
        parse_roles(&self.roles)
    }

    pub fn is_active(&self) -> bool {
        self.status == ACTIVE
    }
}

impl Store {
    pub async fn create_user(&self, new: NewUser) -> Result<User, CreateUserError> {
        let username_key = key(&new.username);
        match insert_user(self.db.write(), new, ACTIVE).await {
            Ok(user) => Ok(user),
            Err(e) => Err(self.why_not_created(e, &username_key).await),
        }
    }

    /// Turns a failed insert into the key that clashed, if that was the cause.
    pub(super) async fn why_not_created(&self, e: DbErr, username_key: &str) -> CreateUserError {
        if unique_violation(&e).is_none() {
            return e.into();
        }
        // Which key clashed: the message differs per database, the rows do not.
        match Users::find()
            .filter(users::Column::UsernameKey.eq(username_key))
            .one(self.db.write())
            .await
        {
            Ok(Some(_)) => CreateUserError::UsernameTaken,
            Ok(None) => CreateUserError::EmailTaken,
            Err(e) => e.into(),
        }
    }

    pub async fn user_by_id(&self, id: Uuid) -> Result<Option<User>, DbErr> {
        Users::find_by_id(id).one(self.db.read()).await
    }

    pub async fn user_by_username(&self, username: &str) -> Result<Option<User>, DbErr> {
        Users::find()
            .filter(users::Column::UsernameKey.eq(key(username)))
            .one(self.db.read())
            .await
    }

    /// By username, or by email when the identifier has an `@`.
    pub async fn user_by_login(&self, identifier: &str) -> Result<Option<User>, DbErr> {
        let column = if identifier.contains('@') {
            users::Column::EmailKey
        } else {
            users::Column::UsernameKey
        };
        Users::find()
            .filter(column.eq(key(identifier)))
            .one(self.db.read())
            .await
    }

    pub async fn update_profile(
        &self,
        id: Uuid,
        changes: ProfileChanges,
    ) -> Result<Option<User>, DbErr> {
        let Some(user) = Users::find_by_id(id).one(self.db.write()).await? else {
            return Ok(None);
        };
        let mut model: users::ActiveModel = user.into();
        if let Some(v) = changes.display_name {
            model.display_name = Set(v);
        }
        if let Some(v) = changes.avatar_url {
            model.avatar_url = Set(v);
        }
        if let Some(v) = changes.bio {
            model.bio = Set(v);
        }
        if let Some(v) = changes.preferences {
            model.preferences = Set(v);
        }
        model.updated_at = Set(platform::clock::now());
        model.update(self.db.write()).await.map(Some)
    }

    pub async fn set_password_hash(
        &self,
        id: Uuid,
        hash: String,
        changed_at: Option<DateTime<Utc>>,
    ) -> Result<(), DbErr> {
        let mut update = Users::update_many()
            .col_expr(users::Column::PasswordHash, Expr::value(hash))
            .filter(users::Column::Id.eq(id));
        if let Some(at) = changed_at {
            update = update
                .col_expr(users::Column::PasswordChangedAt, Expr::value(at))
                .col_expr(users::Column::UpdatedAt, Expr::value(at));
        }
        update.exec(self.db.write()).await?;
        Ok(())
    }

    /// One page of accounts in creation order (ids are UUIDv7), after `after`.
    pub async fn list_users(
        &self,
        after: Option<Uuid>,
        limit: u64,
        search: Option<&str>,
    ) -> Result<Vec<User>, DbErr> {
        let mut query = Users::find().order_by_asc(users::Column::Id);
        if let Some(after) = after {
            query = query.filter(users::Column::Id.gt(after));
        }
        if let Some(q) = search.map(str::trim).filter(|q| !q.is_empty()) {
            // The search text is matched literally: `%` and `_` are not wildcards here.
            let escaped = key(q)
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            let pattern = || LikeExpr::new(format!("%{escaped}%")).escape('\\');
            query = query.filter(
                users::Column::UsernameKey
                    .like(pattern())
                    .or(users::Column::EmailKey.like(pattern())),
            );
        }
        query.limit(limit).all(self.db.read()).await
    }

    /// Sets a user's roles, refusing to remove the last active administrator.
    pub async fn set_roles(&self, id: Uuid, roles: &[Role]) -> Result<User, AdminChangeError> {
        let txn = self.db.write().begin().await?;
        let user = Users::find_by_id(id)
            .one(&txn)
            .await?
            .ok_or(AdminChangeError::NotFound)?;
        let was_admin = user.role_list().contains(&Role::Admin) && user.is_active();
        if was_admin && !roles.contains(&Role::Admin) && active_admins(&txn).await? <= 1 {
            return Err(AdminChangeError::LastAdmin);
        }
        let mut model: users::ActiveModel = user.into();
        model.roles = Set(format_roles(roles));
        model.updated_at = Set(platform::clock::now());
        let user = model.update(&txn).await?;
        txn.commit().await?;
        Ok(user)
    }

    /// Disables or re-enables an account; disabling also revokes every session at once.
    pub async fn set_status(&self, id: Uuid, active: bool) -> Result<User, AdminChangeError> {
        let txn = self.db.write().begin().await?;
        let user = Users::find_by_id(id)
            .one(&txn)
            .await?
            .ok_or(AdminChangeError::NotFound)?;
        if user.status == PENDING || user.status == DELETING {
            return Err(AdminChangeError::Busy);
        }
        let now = platform::clock::now();
        if !active
            && user.is_active()
            && user.role_list().contains(&Role::Admin)
            && active_admins(&txn).await? <= 1
        {
            return Err(AdminChangeError::LastAdmin);
        }
        let mut model: users::ActiveModel = user.into();
        model.status = Set(if active { ACTIVE } else { DISABLED }.into());
        model.disabled_at = Set((!active).then_some(now));
        model.updated_at = Set(now);
        let user = model.update(&txn).await?;
        if !active {
            super::sessions::revoke_all(&txn, id, None, "account_disabled", now).await?;
        }
        txn.commit().await?;
        Ok(user)
    }
}

pub(super) async fn active_admins<C: ConnectionTrait>(db: &C) -> Result<u64, DbErr> {
    // Roles are few words; a LIKE on the space-separated list finds `admin` among them.
    Users::find()
        .filter(users::Column::Status.eq(ACTIVE))
        .filter(
            users::Column::Roles
                .eq("admin")
                .or(users::Column::Roles.like("admin %"))
                .or(users::Column::Roles.like("% admin"))
                .or(users::Column::Roles.like("% admin %")),
        )
        .count(db)
        .await
}
