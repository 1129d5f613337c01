//! The token signing keys: the newest unretired one signs, every unexpired one verifies.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DbErr, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder,
    TransactionTrait,
};

use super::Store;
use super::entities::signing_keys::{self, Entity as SigningKeys};

pub use signing_keys::Model as SigningKey;

impl Store {
    /// Keys still published, newest first.
    pub async fn published_keys(&self, now: DateTime<Utc>) -> Result<Vec<SigningKey>, DbErr> {
        SigningKeys::find()
            .filter(
                signing_keys::Column::ExpiresAt
                    .is_null()
                    .or(signing_keys::Column::ExpiresAt.gt(now)),
            )
            .order_by_desc(signing_keys::Column::CreatedAt)
            .order_by_desc(signing_keys::Column::Kid)
            .all(self.db.write())
            .await
    }

    /// Adds `key` as the signing key and retires the others, which stay published until
    /// `old_expire_at`.
    pub async fn add_signing_key(
        &self,
        key: SigningKey,
        old_expire_at: DateTime<Utc>,
    ) -> Result<(), DbErr> {
        let txn = self.db.write().begin().await?;
        SigningKeys::update_many()
            .col_expr(signing_keys::Column::RetiredAt, Expr::value(key.created_at))
            .col_expr(signing_keys::Column::ExpiresAt, Expr::value(old_expire_at))
            .filter(signing_keys::Column::RetiredAt.is_null())
            .exec(&txn)
            .await?;
        key.into_active_model().insert(&txn).await?;
        txn.commit().await
    }
}
