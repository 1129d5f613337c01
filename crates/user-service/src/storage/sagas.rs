//! The registration and account-deletion sagas (ARCHITECTURE.md § Sagas). Each step is
//! one transaction that changes the account, records where the saga stands and writes the
//! event for the next step to the outbox, so a service stopped between any two steps
//! resumes from the database: events still in the outbox are published after the restart,
//! and a saga whose answer never comes is compensated once its deadline has passed.

use chrono::{DateTime, Duration, Utc};
use platform::events::contracts::{self, UserDeleted, UserRegistered};
use platform::events::{Envelope, inbox, outbox};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set, TransactionTrait,
};
use uuid::Uuid;

use super::Store;
use super::entities::sagas::{self, Entity as Sagas};
use super::entities::users::{self, Entity as Users};
use super::users::{ACTIVE, CreateUserError, DELETING, NewUser, PENDING, User, insert_user};
use crate::domain::roles::Role;
use crate::domain::validation::key;

pub use sagas::Model as Saga;

pub const REGISTRATION: &str = "registration";
pub const DELETION: &str = "deletion";
pub const RUNNING: &str = "running";
pub const COMPLETED: &str = "completed";
pub const COMPENSATED: &str = "compensated";

/// The inbox name of user-service's saga consumer.
pub const CONSUMER: &str = "user-service.sagas";

/// How a saga step ended for the account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// The account is active (registration done, or deletion undone).
    Active,
    /// The account is gone (deletion done, or registration undone).
    Removed,
}

#[derive(Debug, thiserror::Error)]
pub enum DeletionRefused {
    #[error("no such account")]
    NotFound,
    #[error("the account is not active")]
    NotActive,
    #[error("this would leave no active administrator")]
    LastAdmin,
    #[error(transparent)]
    Db(#[from] DbErr),
}

fn event(kind: &str, user_id: Uuid, data: impl serde::Serialize) -> Result<Envelope, DbErr> {
    let data = serde_json::to_value(data).map_err(|e| DbErr::Custom(e.to_string()))?;
    Ok(Envelope::new(
        crate::NAME,
        kind,
        Some(user_id.to_string()),
        data,
    ))
}

async fn start_saga<C: ConnectionTrait>(
    db: &C,
    kind: &str,
    user_id: Uuid,
    deadline: DateTime<Utc>,
) -> Result<(), DbErr> {
    sagas::ActiveModel {
        id: Set(Uuid::now_v7()),
        kind: Set(kind.into()),
        user_id: Set(user_id),
        state: Set(RUNNING.into()),
        started_at: Set(platform::clock::now()),
        deadline_at: Set(deadline),
        finished_at: Set(None),
        detail: Set(None),
    }
    .insert(db)
    .await?;
    Ok(())
}

async fn running<C: ConnectionTrait>(
    db: &C,
    kind: &str,
    user_id: Uuid,
) -> Result<Option<Saga>, DbErr> {
    Sagas::find()
        .filter(sagas::Column::UserId.eq(user_id))
        .filter(sagas::Column::Kind.eq(kind))
        .filter(sagas::Column::State.eq(RUNNING))
        .one(db)
        .await
}

async fn finish<C: ConnectionTrait>(
    db: &C,
    saga: Saga,
    state: &str,
    detail: Option<String>,
) -> Result<(), DbErr> {
    let mut model: sagas::ActiveModel = saga.into();
    model.state = Set(state.into());
    model.finished_at = Set(Some(platform::clock::now()));
    model.detail = Set(detail);
    model.update(db).await?;
    Ok(())
}

async fn set_status<C: ConnectionTrait>(db: &C, user: User, status: &str) -> Result<User, DbErr> {
    let mut model: users::ActiveModel = user.into();
    model.status = Set(status.into());
    model.updated_at = Set(platform::clock::now());
    model.update(db).await
}

/// Removes the account; its sessions and refresh tokens go with it (foreign keys cascade).
/// A library left behind is deleted by business-service on `user.deleted`.
async fn remove_user<C: ConnectionTrait>(db: &C, user_id: Uuid, reason: &str) -> Result<(), DbErr> {
    Users::delete_by_id(user_id).exec(db).await?;
    outbox::enqueue(
        db,
        &event(
            contracts::USER_DELETED,
            user_id,
            UserDeleted {
                user_id,
                reason: reason.into(),
                deadline: None,
            },
        )?,
    )
    .await
}

impl Store {
    /// Registration, step 1: the account (pending when `deadline` is given: the saga waits
    /// for the library), the saga, and `user.registered`, in one transaction.
    pub async fn register(
        &self,
        new: NewUser,
        deadline: Option<DateTime<Utc>>,
    ) -> Result<User, CreateUserError> {
        let username_key = key(&new.username);
        let status = if deadline.is_some() { PENDING } else { ACTIVE };
        let txn = self.db.write().begin().await?;
        let user = match insert_user(&txn, new, status).await {
            Ok(u) => u,
            Err(e) => {
                drop(txn);
                return Err(self.why_not_created(e, &username_key).await);
            }
        };
        if let Some(deadline) = deadline {
            start_saga(&txn, REGISTRATION, user.id, deadline).await?;
        }
        outbox::enqueue(&txn, &registered(&user, deadline)?).await?;
        txn.commit().await?;
        Ok(user)
    }

    /// Announces an account created outside the saga (the settings' administrator), so its
    /// library is provisioned too, without holding the account pending.
    pub async fn announce(&self, user: &User) -> Result<(), DbErr> {
        outbox::enqueue(self.db.write(), &registered(user, None)?).await
    }

    /// Account deletion, step 1: the account goes `deleting` and its sessions end; the saga;
    /// `user.deleted` with the deadline after which business-service must not act.
    pub async fn start_deletion(
        &self,
        user_id: Uuid,
        deadline: DateTime<Utc>,
    ) -> Result<User, DeletionRefused> {
        let txn = self.db.write().begin().await?;
        let user = Users::find_by_id(user_id)
            .one(&txn)
            .await?
            .ok_or(DeletionRefused::NotFound)?;
        if user.status != ACTIVE {
            return Err(DeletionRefused::NotActive);
        }
        if user.role_list().contains(&Role::Admin) && super::users::active_admins(&txn).await? <= 1
        {
            return Err(DeletionRefused::LastAdmin);
        }
        let now = platform::clock::now();
        let user = set_status(&txn, user, DELETING).await?;
        super::sessions::revoke_all(&txn, user_id, None, "account_deleted", now).await?;
        start_saga(&txn, DELETION, user_id, deadline).await?;
        outbox::enqueue(
            &txn,
            &event(
                contracts::USER_DELETED,
                user_id,
                UserDeleted {
                    user_id,
                    reason: "account deleted by its owner".into(),
                    deadline: Some(deadline),
                },
            )?,
        )
        .await?;
        txn.commit().await?;
        Ok(user)
    }

    /// A saga's last step: business-service answered. Registration: `Ok` activates the
    /// account, `Err` removes it (the name is free again). Deletion: `Ok` removes the
    /// account, `Err` makes it active again. `None`: already handled, or no such saga
    /// running (it timed out before the answer came).
    pub async fn finish_saga(
        &self,
        kind: &str,
        event_id: &str,
        user_id: Uuid,
        outcome: Result<(), String>,
    ) -> Result<Option<Settled>, DbErr> {
        let txn = self.db.write().begin().await?;
        if !inbox::claim(&txn, CONSUMER, event_id).await? {
            return Ok(None);
        }
        let Some(saga) = running(&txn, kind, user_id).await? else {
            txn.commit().await?;
            return Ok(None);
        };
        let settled = settle(&txn, saga, outcome).await?;
        txn.commit().await?;
        Ok(Some(settled))
    }

    /// Compensates every saga whose deadline passed more than `grace` ago without an
    /// answer; returns the accounts settled.
    pub async fn time_out_sagas(&self, grace: Duration) -> Result<Vec<(Uuid, Settled)>, DbErr> {
        let cutoff = platform::clock::now() - grace;
        let overdue = Sagas::find()
            .filter(sagas::Column::State.eq(RUNNING))
            .filter(sagas::Column::DeadlineAt.lt(cutoff))
            .order_by_asc(sagas::Column::DeadlineAt)
            .limit(100)
            .all(self.db.read())
            .await?;
        let mut settled = Vec::new();
        for saga in overdue {
            let txn = self.db.write().begin().await?;
            // Re-read under the write lock: the answer may have come meanwhile.
            let Some(saga) = Sagas::find_by_id(saga.id)
                .one(&txn)
                .await?
                .filter(|s| s.state == RUNNING)
            else {
                continue;
            };
            let user_id = saga.user_id;
            let why = Err("business-service did not answer in time".to_owned());
            let outcome = settle(&txn, saga, why).await?;
            txn.commit().await?;
            tracing::warn!(%user_id, ?outcome, "saga timed out and was compensated");
            settled.push((user_id, outcome));
        }
        Ok(settled)
    }

    pub async fn saga_of(&self, user_id: Uuid) -> Result<Option<Saga>, DbErr> {
        Sagas::find()
            .filter(sagas::Column::UserId.eq(user_id))
            .order_by_desc(sagas::Column::StartedAt)
            .one(self.db.read())
            .await
    }
}

fn registered(user: &User, deadline: Option<DateTime<Utc>>) -> Result<Envelope, DbErr> {
    event(
        contracts::USER_REGISTERED,
        user.id,
        UserRegistered {
            user_id: user.id,
            username: user.username.clone(),
            display_name: user.display_name.clone(),
            deadline,
        },
    )
}

async fn settle<C: ConnectionTrait>(
    db: &C,
    saga: Saga,
    outcome: Result<(), String>,
) -> Result<Settled, DbErr> {
    if saga.kind == REGISTRATION {
        settle_registration(db, saga, outcome).await
    } else {
        settle_deletion(db, saga, outcome).await
    }
}

async fn settle_registration<C: ConnectionTrait>(
    db: &C,
    saga: Saga,
    outcome: Result<(), String>,
) -> Result<Settled, DbErr> {
    let user_id = saga.user_id;
    let user = Users::find_by_id(user_id).one(db).await?;
    match (outcome, user) {
        (Ok(()), Some(user)) => {
            set_status(db, user, ACTIVE).await?;
            finish(db, saga, COMPLETED, None).await?;
            Ok(Settled::Active)
        }
        (Ok(()), None) => {
            finish(db, saga, COMPENSATED, Some("the account had gone".into())).await?;
            Ok(Settled::Removed)
        }
        (Err(reason), _) => {
            remove_user(db, user_id, "registration failed").await?;
            finish(db, saga, COMPENSATED, Some(reason)).await?;
            Ok(Settled::Removed)
        }
    }
}

async fn settle_deletion<C: ConnectionTrait>(
    db: &C,
    saga: Saga,
    outcome: Result<(), String>,
) -> Result<Settled, DbErr> {
    let user = Users::find_by_id(saga.user_id).one(db).await?;
    match (outcome, user) {
        (Ok(()), _) => {
            Users::delete_by_id(saga.user_id).exec(db).await?;
            finish(db, saga, COMPLETED, None).await?;
            Ok(Settled::Removed)
        }
        (Err(reason), Some(user)) => {
            set_status(db, user, ACTIVE).await?;
            finish(db, saga, COMPENSATED, Some(reason)).await?;
            Ok(Settled::Active)
        }
        (Err(reason), None) => {
            finish(db, saga, COMPENSATED, Some(reason)).await?;
            Ok(Settled::Removed)
        }
    }
}
