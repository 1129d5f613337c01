//! Service accounts for client-credentials tokens.

use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, Set};
use uuid::Uuid;

use super::Store;
use super::entities::service_accounts::{self, Entity as ServiceAccounts};

pub use service_accounts::Model as ServiceAccount;

impl Store {
    pub async fn service_account(&self, client_id: &str) -> Result<Option<ServiceAccount>, DbErr> {
        ServiceAccounts::find()
            .filter(service_accounts::Column::ClientId.eq(client_id))
            .one(self.db.read())
            .await
    }

    pub async fn service_accounts(&self) -> Result<Vec<ServiceAccount>, DbErr> {
        ServiceAccounts::find()
            .order_by_asc(service_accounts::Column::CreatedAt)
            .all(self.db.read())
            .await
    }

    /// Creates the account, or, when `replace` is set and it exists, replaces its secret,
    /// name and scopes (settings-seeded accounts follow their settings). Returns false when
    /// the account exists and `replace` is not set.
    pub async fn put_service_account(
        &self,
        client_id: &str,
        name: &str,
        secret_hash: String,
        scopes: String,
        replace: bool,
    ) -> Result<bool, DbErr> {
        let existing = ServiceAccounts::find()
            .filter(service_accounts::Column::ClientId.eq(client_id))
            .one(self.db.write())
            .await?;
        match existing {
            Some(_) if !replace => Ok(false),
            Some(account) => {
                let mut model: service_accounts::ActiveModel = account.into();
                model.name = Set(name.to_owned());
                model.secret_hash = Set(secret_hash);
                model.scopes = Set(scopes);
                model.disabled_at = Set(None);
                model.update(self.db.write()).await?;
                Ok(true)
            }
            None => {
                service_accounts::ActiveModel {
                    id: Set(Uuid::now_v7()),
                    client_id: Set(client_id.to_owned()),
                    name: Set(name.to_owned()),
                    secret_hash: Set(secret_hash),
                    scopes: Set(scopes),
                    created_at: Set(platform::clock::now()),
                    disabled_at: Set(None),
                }
                .insert(self.db.write())
                .await?;
                Ok(true)
            }
        }
    }

    pub async fn disable_service_account(&self, client_id: &str) -> Result<bool, DbErr> {
        let result = ServiceAccounts::update_many()
            .col_expr(
                service_accounts::Column::DisabledAt,
                Expr::value(platform::clock::now()),
            )
            .filter(service_accounts::Column::ClientId.eq(client_id))
            .filter(service_accounts::Column::DisabledAt.is_null())
            .exec(self.db.write())
            .await?;
        Ok(result.rows_affected == 1)
    }
}
