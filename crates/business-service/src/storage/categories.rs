//! Categories, as in the original Kotlin version: every user starts with 通用 (general, the
//! system category, neither renamed nor deleted), 写作, 编程, 分析, 创意, 营销; prompts name
//! their category; deleting one moves its prompts to 通用.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, IntoActiveModel,
    QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait,
};
use uuid::Uuid;

use super::entities::categories::{self, Entity as Categories};
use super::entities::prompts::{self, Entity as Prompts};
use super::{Store, WriteError};
use crate::domain::validation::key;

pub use categories::Model as Category;

pub const SYSTEM: &str = "通用";
pub const DEFAULTS: &[&str] = &["通用", "写作", "编程", "分析", "创意", "营销"];

/// Makes sure `owner` has a category called `name` (prompts may name a new one).
pub async fn ensure<C: ConnectionTrait>(db: &C, owner: Uuid, name: &str) -> Result<(), DbErr> {
    let now = platform::clock::now();
    let model = categories::ActiveModel {
        id: Set(Uuid::now_v7()),
        owner_id: Set(owner),
        name: Set(name.to_owned()),
        name_key: Set(key(name)),
        color: Set(None),
        position: Set(1000),
        is_system: Set(name == SYSTEM),
        created_at: Set(now),
        updated_at: Set(now),
    };
    Categories::insert(model)
        .on_conflict_do_nothing_on([categories::Column::OwnerId, categories::Column::NameKey])
        .exec(db)
        .await?;
    Ok(())
}

impl Store {
    /// The owner's categories, the defaults made on first use.
    pub async fn categories(&self, owner: Uuid) -> Result<Vec<Category>, DbErr> {
        let existing = Categories::find()
            .filter(categories::Column::OwnerId.eq(owner))
            .limit(1)
            .all(self.db.read())
            .await?;
        if existing.is_empty() {
            let txn = self.db.write().begin().await?;
            for (i, name) in DEFAULTS.iter().enumerate() {
                ensure(&txn, owner, name).await?;
                Categories::update_many()
                    .col_expr(categories::Column::Position, Expr::value(i as i32))
                    .filter(categories::Column::OwnerId.eq(owner))
                    .filter(categories::Column::NameKey.eq(key(name)))
                    .exec(&txn)
                    .await?;
            }
            txn.commit().await?;
        }
        Categories::find()
            .filter(categories::Column::OwnerId.eq(owner))
            .order_by_asc(categories::Column::Position)
            .order_by_asc(categories::Column::NameKey)
            .all(self.db.write())
            .await
    }

    pub async fn create_category(
        &self,
        owner: Uuid,
        name: &str,
        color: Option<String>,
    ) -> Result<Category, WriteError> {
        let all = self.categories(owner).await?;
        if all.iter().any(|c| c.name_key == key(name)) {
            return Err(WriteError::NameTaken);
        }
        let now = platform::clock::now();
        let position = all.iter().map(|c| c.position).max().unwrap_or(0) + 1;
        categories::ActiveModel {
            id: Set(Uuid::now_v7()),
            owner_id: Set(owner),
            name: Set(name.to_owned()),
            name_key: Set(key(name)),
            color: Set(color),
            position: Set(position),
            is_system: Set(false),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(self.db.write())
        .await
        .map_err(|e| match platform::db::unique_violation(&e) {
            Some(_) => WriteError::NameTaken,
            None => WriteError::Db(e),
        })
    }

    /// Renames, recolours or moves a category; its prompts follow a new name.
    pub async fn update_category(
        &self,
        owner: Uuid,
        id: Uuid,
        name: Option<String>,
        color: Option<Option<String>>,
        position: Option<i32>,
    ) -> Result<Category, WriteError> {
        let txn = self.db.write().begin().await?;
        let current = Categories::find_by_id(id)
            .filter(categories::Column::OwnerId.eq(owner))
            .one(&txn)
            .await?
            .ok_or(WriteError::NotFound)?;
        let mut model = current.clone().into_active_model();
        if let Some(name) = &name
            && name != &current.name
        {
            if current.is_system {
                return Err(WriteError::Refused(
                    "the system category cannot be renamed".into(),
                ));
            }
            let clash = Categories::find()
                .filter(categories::Column::OwnerId.eq(owner))
                .filter(categories::Column::NameKey.eq(key(name)))
                .filter(categories::Column::Id.ne(id))
                .one(&txn)
                .await?;
            if clash.is_some() {
                return Err(WriteError::NameTaken);
            }
            model.name = Set(name.clone());
            model.name_key = Set(key(name));
            move_prompts(&txn, owner, &current.name_key, name).await?;
        }
        if let Some(color) = color {
            model.color = Set(color);
        }
        if let Some(p) = position {
            model.position = Set(p);
        }
        model.updated_at = Set(platform::clock::now());
        let category = model.update(&txn).await?;
        txn.commit().await?;
        self.wake();
        Ok(category)
    }

    /// Deletes a category; its prompts move to the system category.
    pub async fn delete_category(&self, owner: Uuid, id: Uuid) -> Result<u64, WriteError> {
        let txn = self.db.write().begin().await?;
        let current = Categories::find_by_id(id)
            .filter(categories::Column::OwnerId.eq(owner))
            .one(&txn)
            .await?
            .ok_or(WriteError::NotFound)?;
        if current.is_system {
            return Err(WriteError::Refused(
                "the system category cannot be deleted".into(),
            ));
        }
        ensure(&txn, owner, SYSTEM).await?;
        let moved = move_prompts(&txn, owner, &current.name_key, SYSTEM).await?;
        Categories::delete_by_id(id).exec(&txn).await?;
        txn.commit().await?;
        self.wake();
        Ok(moved)
    }
}

/// Points every prompt of `owner` in category `from_key` at category `to`.
async fn move_prompts<C: ConnectionTrait>(
    db: &C,
    owner: Uuid,
    from_key: &str,
    to: &str,
) -> Result<u64, DbErr> {
    let ids: Vec<Uuid> = Prompts::find()
        .select_only()
        .column(prompts::Column::Id)
        .filter(prompts::Column::OwnerId.eq(owner))
        .filter(prompts::Column::CategoryKey.eq(from_key))
        .into_tuple()
        .all(db)
        .await?;
    Prompts::update_many()
        .col_expr(prompts::Column::Category, Expr::value(to))
        .col_expr(prompts::Column::CategoryKey, Expr::value(key(to)))
        .filter(prompts::Column::Id.is_in(ids.clone()))
        .exec(db)
        .await?;
    for id in &ids {
        super::prompts::reindex_prompt(db, *id).await?;
    }
    super::changes::touch_prompts(db, &ids).await?;
    Ok(ids.len() as u64)
}
