//! A user's library as a whole: provisioned when the account is registered, deleted with
//! the account (the sagas' business-service steps). Each runs in one transaction with the
//! inbox claim and the answer event, so a redelivered request neither provisions twice nor
//! answers differently.

use chrono::{DateTime, Utc};
use platform::events::contracts::{self, LibraryReply};
use platform::events::{Envelope, inbox, outbox};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, PaginatorTrait,
    QueryFilter, QuerySelect, Set, TransactionTrait,
};
use uuid::Uuid;

use super::entities::favorites::{self, Entity as Favorites};
use super::entities::folders::{self, Entity as Folders};
use super::entities::prompts::{self, Entity as Prompts};
use super::prompts::{Change, PromptInput, insert_prompt};
use super::{Store, statement};
use crate::domain::validation::key;
use crate::domain::{starter, template};

pub const PROVISIONING: &str = "business-service.provisioning";
pub const DELETION: &str = "business-service.deletion";

/// The answer a saga step sent (or, for a redelivery, `None`: answered before).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub kind: &'static str,
    pub reply: LibraryReply,
}

fn answer(kind: &'static str, user_id: Uuid, reason: Option<String>, prompts: u64) -> Answer {
    Answer {
        kind,
        reply: LibraryReply {
            user_id,
            reason,
            prompts,
        },
    }
}

async fn send<C: ConnectionTrait>(db: &C, a: &Answer) -> Result<(), DbErr> {
    let data = serde_json::to_value(&a.reply).map_err(|e| DbErr::Custom(e.to_string()))?;
    outbox::enqueue(
        db,
        &Envelope::new(crate::NAME, a.kind, Some(a.reply.user_id.to_string()), data),
    )
    .await
}

/// Refuses to create anything for an account whose library was deleted with it.
pub(super) async fn refuse_if_deleted<C: ConnectionTrait>(
    db: &C,
    owner: Uuid,
) -> Result<(), super::WriteError> {
    let gone = db
        .query_one_raw(statement(
            db,
            "SELECT 1 AS one FROM deleted_owners WHERE owner_id = $1",
            vec![owner.to_string().into()],
        ))
        .await?
        .is_some();
    if gone {
        return Err(super::WriteError::Refused(
            "this account has been deleted".into(),
        ));
    }
    Ok(())
}

/// Refuses a new prompt when the owner's library holds its quota (libraries provisioned by
/// the registration saga have one; others are not limited).
pub(super) async fn refuse_if_full<C: ConnectionTrait>(
    db: &C,
    owner: Uuid,
) -> Result<(), super::WriteError> {
    let quota = db
        .query_one_raw(statement(
            db,
            "SELECT quota_prompts FROM libraries WHERE owner_id = $1",
            vec![owner.to_string().into()],
        ))
        .await?
        .map(|r| r.try_get::<i64>("", "quota_prompts"))
        .transpose()?;
    let Some(quota) = quota else {
        return Ok(());
    };
    let held = Prompts::find()
        .filter(prompts::Column::OwnerId.eq(owner))
        .count(db)
        .await?;
    let quota = quota.max(0) as u64;
    if held >= quota {
        return Err(super::WriteError::QuotaExceeded(quota));
    }
    Ok(())
}

fn too_late(deadline: Option<DateTime<Utc>>) -> bool {
    deadline.is_some_and(|d| platform::clock::now() > d)
}

impl Store {
    /// Sends `a` in `txn`, commits, and wakes the relay to publish it.
    async fn reply(
        &self,
        txn: sea_orm::DatabaseTransaction,
        a: Answer,
    ) -> Result<Option<Answer>, DbErr> {
        send(&txn, &a).await?;
        txn.commit().await?;
        self.wake();
        Ok(Some(a))
    }

    /// Registration saga, business-service's step: the library row with its quota, the
    /// starter folder and prompts; answers `library.provisioned`, or
    /// `library.provisioning_failed` when the deadline has passed (user-service has given
    /// up on the account by then).
    pub async fn provision_library(
        &self,
        event_id: &str,
        user_id: Uuid,
        deadline: Option<DateTime<Utc>>,
        quota: u64,
        starter: bool,
    ) -> Result<Option<Answer>, DbErr> {
        let txn = self.db.write().begin().await?;
        if !inbox::claim(&txn, PROVISIONING, event_id).await? {
            return Ok(None);
        }
        if too_late(deadline) {
            let a = answer(
                contracts::LIBRARY_PROVISIONING_FAILED,
                user_id,
                Some("the registration's deadline had passed".into()),
                0,
            );
            return self.reply(txn, a).await;
        }
        let exists = txn
            .query_one_raw(statement(
                &txn,
                "SELECT 1 AS one FROM libraries WHERE owner_id = $1",
                vec![user_id.to_string().into()],
            ))
            .await?
            .is_some();
        let mut created = 0;
        if !exists {
            txn.execute_raw(statement(
                &txn,
                "INSERT INTO libraries (owner_id, quota_prompts, provisioned_ms) VALUES ($1, $2, $3)",
                vec![
                    user_id.to_string().into(),
                    (quota as i64).into(),
                    platform::clock::now().timestamp_millis().into(),
                ],
            ))
            .await?;
            if starter {
                created = starter_content(&txn, user_id).await?;
            }
        }
        let a = answer(contracts::LIBRARY_PROVISIONED, user_id, None, created);
        self.reply(txn, a).await
    }

    /// Deletion saga, business-service's step: every prompt (with versions, tags and
    /// favourites), folder, category, favourite and sync record of the user; answers
    /// `library.deleted`, or `library.deletion_failed` when the deadline has passed (the
    /// account may be active again by then, so nothing is deleted).
    pub async fn delete_library(
        &self,
        event_id: &str,
        user_id: Uuid,
        deadline: Option<DateTime<Utc>>,
    ) -> Result<Option<Answer>, DbErr> {
        let txn = self.db.write().begin().await?;
        if !inbox::claim(&txn, DELETION, event_id).await? {
            return Ok(None);
        }
        if too_late(deadline) {
            let a = answer(
                contracts::LIBRARY_DELETION_FAILED,
                user_id,
                Some("the deletion's deadline had passed; nothing was deleted".into()),
                0,
            );
            return self.reply(txn, a).await;
        }
        let seqs: Vec<i64> = Prompts::find()
            .select_only()
            .column(prompts::Column::Seq)
            .filter(prompts::Column::OwnerId.eq(user_id))
            .into_tuple()
            .all(&txn)
            .await?;
        for seq in &seqs {
            super::search::unindex(&txn, *seq).await?;
        }
        // Versions, tags and others' favourites of these prompts go with them (cascade).
        Prompts::delete_many()
            .filter(prompts::Column::OwnerId.eq(user_id))
            .exec(&txn)
            .await?;
        Favorites::delete_many()
            .filter(favorites::Column::UserId.eq(user_id))
            .exec(&txn)
            .await?;
        Folders::delete_many()
            .filter(folders::Column::OwnerId.eq(user_id))
            .exec(&txn)
            .await?;
        super::entities::categories::Entity::delete_many()
            .filter(super::entities::categories::Column::OwnerId.eq(user_id))
            .exec(&txn)
            .await?;
        // Remembered, so a token issued before the deletion cannot fill a library again.
        txn.execute_raw(statement(
            &txn,
            "INSERT INTO deleted_owners (owner_id, at_ms) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            vec![
                user_id.to_string().into(),
                platform::clock::now().timestamp_millis().into(),
            ],
        ))
        .await?;
        for table in ["sync_log", "sync_pushes", "libraries"] {
            txn.execute_raw(statement(
                &txn,
                &format!("DELETE FROM {table} WHERE owner_id = $1"),
                vec![user_id.to_string().into()],
            ))
            .await?;
        }
        let a = answer(contracts::LIBRARY_DELETED, user_id, None, seqs.len() as u64);
        self.reply(txn, a).await
    }

    /// The user's quota, if the library was provisioned.
    pub async fn library_quota(&self, user_id: Uuid) -> Result<Option<u64>, DbErr> {
        let db = self.db.read();
        let row = db
            .query_one_raw(statement(
                db,
                "SELECT quota_prompts FROM libraries WHERE owner_id = $1",
                vec![user_id.to_string().into()],
            ))
            .await?;
        Ok(row
            .map(|r| r.try_get::<i64>("", "quota_prompts"))
            .transpose()?
            .map(|q| q.max(0) as u64))
    }
}

async fn starter_content<C: ConnectionTrait>(txn: &C, owner: Uuid) -> Result<u64, DbErr> {
    let now = platform::clock::now();
    let folder = folders::ActiveModel {
        id: Set(Uuid::now_v7()),
        owner_id: Set(owner),
        parent_id: Set(None),
        parent_key: Set(Uuid::nil()),
        name: Set(starter::FOLDER.into()),
        name_key: Set(key(starter::FOLDER)),
        position: Set(0),
        color: Set(None),
        icon: Set(Some("sparkles".into())),
        revision: Set(1),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(txn)
    .await?;
    super::changes::folder(txn, &folder, false).await?;
    let mut n = 0;
    for p in starter::PROMPTS {
        let variables = template::parse(p.content)
            .map(|t| serde_json::to_value(t.variables()).unwrap_or_default())
            .unwrap_or_default();
        let input = PromptInput {
            id: None,
            title: p.title.into(),
            content: p.content.into(),
            description: Some(p.description.into()),
            tags: p.tags.iter().map(|t| (*t).to_owned()).collect(),
            category: Some(p.category.into()),
            folder_id: Some(folder.id),
            visibility: "private".into(),
            status: "active".into(),
            slug: None,
            variables,
        };
        let change = Change {
            message: Some("starter prompt".into()),
            restored_from: None,
        };
        insert_prompt(txn, owner, owner, input, &change)
            .await
            .map_err(|e| match e {
                super::WriteError::Db(e) => e,
                other => DbErr::Custom(other.to_string()),
            })?;
        n += 1;
    }
    Ok(n)
}
