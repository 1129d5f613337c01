//! Tags across a user's library: counts, rename, merge, delete.

use std::collections::HashMap;

use sea_orm::sea_query::{Alias, Expr, ExprTrait, Func, Order as SqlOrder, Query as SqlQuery};
use sea_orm::{
    ColumnTrait, DbErr, EntityTrait, FromQueryResult, QueryFilter, QuerySelect, Set,
    StatementBuilder, TransactionTrait,
};
use uuid::Uuid;

use super::entities::prompt_tags::{self, Entity as PromptTags};
use super::entities::prompts::{self, Entity as Prompts};
use super::{Store, WriteError};
use crate::domain::validation::key;

#[derive(Debug, Clone, FromQueryResult, serde::Serialize)]
pub struct TagCount {
    pub tag: String,
    pub count: i64,
}

impl Store {
    /// The owner's tags with how many prompts (not in the trash) carry each, most used first.
    pub async fn tag_counts(&self, owner: Uuid) -> Result<Vec<TagCount>, DbErr> {
        let count = Alias::new("count");
        let mut query = SqlQuery::select();
        query
            .expr_as(
                Func::min(Expr::col((PromptTags, prompt_tags::Column::Tag))),
                Alias::new("tag"),
            )
            .expr_as(
                Func::count(Expr::col((PromptTags, prompt_tags::Column::PromptId))),
                count.clone(),
            )
            .from(PromptTags)
            .inner_join(
                Prompts,
                Expr::col((Prompts, prompts::Column::Id))
                    .equals((PromptTags, prompt_tags::Column::PromptId)),
            )
            .and_where(Expr::col((PromptTags, prompt_tags::Column::OwnerId)).eq(owner))
            .and_where(Expr::col((Prompts, prompts::Column::DeletedAt)).is_null())
            .group_by_col((PromptTags, prompt_tags::Column::TagKey))
            .order_by_expr(Expr::col(count), SqlOrder::Desc)
            .order_by((PromptTags, prompt_tags::Column::TagKey), SqlOrder::Asc);
        let db = self.db.read();
        let stmt = StatementBuilder::build(&query, &db.get_database_backend());
        TagCount::find_by_statement(stmt).all(db).await
    }

    /// Replaces the tags `from` (any spelling) with `into` on every prompt of `owner` that
    /// has one of them: rename is a merge of one tag. Returns how many prompts changed.
    pub async fn merge_tags(
        &self,
        owner: Uuid,
        from: &[String],
        into: &str,
    ) -> Result<u64, WriteError> {
        self.retag(owner, from, Some(into)).await
    }

    /// Removes `tag` from every prompt of `owner`.
    pub async fn delete_tag(&self, owner: Uuid, tag: &str) -> Result<u64, WriteError> {
        self.retag(owner, &[tag.to_owned()], None).await
    }

    async fn retag(
        &self,
        owner: Uuid,
        from: &[String],
        into: Option<&str>,
    ) -> Result<u64, WriteError> {
        let from_keys: Vec<String> = from.iter().map(|t| key(t)).collect();
        let txn = self.db.write().begin().await?;
        let affected: Vec<Uuid> = PromptTags::find()
            .select_only()
            .column(prompt_tags::Column::PromptId)
            .distinct()
            .filter(prompt_tags::Column::OwnerId.eq(owner))
            .filter(prompt_tags::Column::TagKey.is_in(from_keys.clone()))
            .into_tuple()
            .all(&txn)
            .await?;
        if affected.is_empty() {
            return Err(WriteError::NotFound);
        }
        let mut tags: HashMap<Uuid, Vec<String>> = super::prompts::tags_of(&txn, &affected).await?;
        for id in &affected {
            let mut list: Vec<String> = tags
                .remove(id)
                .unwrap_or_default()
                .into_iter()
                .filter(|t| !from_keys.contains(&key(t)))
                .collect();
            if let Some(into) = into
                && !list.iter().any(|t| key(t) == key(into))
            {
                list.push(into.to_owned());
            }
            PromptTags::delete_many()
                .filter(prompt_tags::Column::PromptId.eq(*id))
                .exec(&txn)
                .await?;
            if !list.is_empty() {
                PromptTags::insert_many(list.iter().map(|t| prompt_tags::ActiveModel {
                    prompt_id: Set(*id),
                    tag_key: Set(key(t)),
                    tag: Set(t.clone()),
                    owner_id: Set(owner),
                }))
                .exec(&txn)
                .await?;
            }
            super::prompts::reindex_prompt(&txn, *id).await?;
        }
        super::changes::touch_prompts(&txn, &affected).await?;
        for gone in from
            .iter()
            .filter(|t| into.is_none_or(|i| key(i) != key(t)))
        {
            super::changes::tag_gone(&txn, owner, gone).await?;
        }
        txn.commit().await?;
        self.wake();
        Ok(affected.len() as u64)
    }
}
