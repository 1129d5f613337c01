//! Counters of failed logins, by account name and by client address.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, DbErr, EntityTrait, QueryFilter, Set, TransactionTrait};

use super::Store;
use super::entities::login_failures::{self, Entity as LoginFailures};
use crate::domain::throttle::{Failures, Policy};

fn to_failures(m: login_failures::Model) -> Failures {
    Failures {
        count: u32::try_from(m.count).unwrap_or(0),
        last_failure_at: m.last_failure_at,
        blocked_until: m.blocked_until,
    }
}

impl Store {
    pub async fn login_failures(&self, key: &str) -> Result<Option<Failures>, DbErr> {
        Ok(LoginFailures::find_by_id(key.to_owned())
            .one(self.db.read())
            .await?
            .map(to_failures))
    }

    /// Counts one more failure for `key` under `policy`.
    pub async fn record_login_failure(
        &self,
        key: &str,
        policy: &Policy,
        now: DateTime<Utc>,
    ) -> Result<Failures, DbErr> {
        let txn = self.db.write().begin().await?;
        let previous = LoginFailures::find_by_id(key.to_owned())
            .one(&txn)
            .await?
            .map(to_failures);
        let next = policy.after_failure(previous.as_ref(), now);
        let model = login_failures::ActiveModel {
            key: Set(key.to_owned()),
            count: Set(i32::try_from(next.count).unwrap_or(i32::MAX)),
            last_failure_at: Set(next.last_failure_at),
            blocked_until: Set(next.blocked_until),
        };
        LoginFailures::insert(model)
            .on_conflict(
                OnConflict::column(login_failures::Column::Key)
                    .update_columns([
                        login_failures::Column::Count,
                        login_failures::Column::LastFailureAt,
                        login_failures::Column::BlockedUntil,
                    ])
                    .to_owned(),
            )
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(next)
    }

    pub async fn clear_login_failures(&self, key: &str) -> Result<(), DbErr> {
        LoginFailures::delete_by_id(key.to_owned())
            .exec(self.db.write())
            .await?;
        Ok(())
    }

    /// Forgets counters untouched since `before`.
    pub async fn purge_login_failures(&self, before: DateTime<Utc>) -> Result<u64, DbErr> {
        Ok(LoginFailures::delete_many()
            .filter(login_failures::Column::LastFailureAt.lt(before))
            .exec(self.db.write())
            .await?
            .rows_affected)
    }
}
