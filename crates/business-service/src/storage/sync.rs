//! Reads for device sync: the change log after a cursor, the library in pages for a first
//! sync, and the receipts of pushed changes (so a retried push is answered, not re-applied).

use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use uuid::Uuid;

use super::entities::folders::{self, Entity as Folders};
use super::entities::prompts::{self, Entity as Prompts};
use super::folders::Folder;
use super::prompts::Record;
use super::{Store, statement};

#[derive(Debug, Clone)]
pub struct LogEntry {
    pub seq: i64,
    pub entity: String,
    pub entity_id: String,
    pub op: String,
}

tokio::task_local! {
    /// Set while a pushed change is applied: the write's transaction records the receipt
    /// of `(owner, change_id)`, so the change and its receipt commit together.
    pub static RECEIPT: Option<String>;
}

/// Records the receipt of the pushed change being applied, if any (see [`RECEIPT`]).
pub(super) async fn write_receipt<C: ConnectionTrait>(db: &C, owner: Uuid) -> Result<(), DbErr> {
    let Some(change_id) = RECEIPT.try_with(Clone::clone).ok().flatten() else {
        return Ok(());
    };
    db.execute_raw(statement(
        db,
        "INSERT INTO sync_pushes (owner_id, change_id, result, at_ms) VALUES ($1, $2, $3, $4) \
         ON CONFLICT DO NOTHING",
        vec![
            owner.to_string().into(),
            change_id.into(),
            r#"{"status":"applied"}"#.into(),
            platform::clock::now().timestamp_millis().into(),
        ],
    ))
    .await?;
    Ok(())
}

/// The newest position in `owner`'s change log (0 before any change).
pub(super) async fn head<C: ConnectionTrait>(db: &C, owner: Uuid) -> Result<i64, DbErr> {
    let row = db
        .query_one_raw(statement(
            db,
            "SELECT MAX(seq) AS seq FROM sync_log WHERE owner_id = $1",
            vec![owner.to_string().into()],
        ))
        .await?;
    Ok(row
        .map(|r| r.try_get::<Option<i64>>("", "seq"))
        .transpose()?
        .flatten()
        .unwrap_or(0))
}

impl Store {
    /// The newest position in `owner`'s change log (0 before any change).
    pub async fn sync_head(&self, owner: Uuid) -> Result<i64, DbErr> {
        head(self.db.read(), owner).await
    }

    pub async fn sync_log_after(
        &self,
        owner: Uuid,
        after: i64,
        limit: u64,
    ) -> Result<Vec<LogEntry>, DbErr> {
        let db = self.db.read();
        let rows = db
            .query_all_raw(statement(
                db,
                "SELECT seq, entity, entity_id, op FROM sync_log \
                 WHERE owner_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                vec![
                    owner.to_string().into(),
                    after.into(),
                    (limit as i64).into(),
                ],
            ))
            .await?;
        rows.iter()
            .map(|r| {
                Ok(LogEntry {
                    seq: r.try_get("", "seq")?,
                    entity: r.try_get("", "entity")?,
                    entity_id: r.try_get("", "entity_id")?,
                    op: r.try_get("", "op")?,
                })
            })
            .collect()
    }

    /// A page of `owner`'s folders, by id.
    pub async fn folders_after(
        &self,
        owner: Uuid,
        after: Option<Uuid>,
        limit: u64,
    ) -> Result<Vec<Folder>, DbErr> {
        let mut q = Folders::find().filter(folders::Column::OwnerId.eq(owner));
        if let Some(a) = after {
            q = q.filter(folders::Column::Id.gt(a));
        }
        q.order_by_asc(folders::Column::Id)
            .limit(limit)
            .all(self.db.read())
            .await
    }

    pub async fn folders_by_id(&self, owner: Uuid, ids: &[Uuid]) -> Result<Vec<Folder>, DbErr> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        Folders::find()
            .filter(folders::Column::OwnerId.eq(owner))
            .filter(folders::Column::Id.is_in(ids.to_vec()))
            .all(self.db.read())
            .await
    }

    /// A page of `owner`'s prompts outside the trash, in creation order.
    pub async fn live_prompts_after(
        &self,
        owner: Uuid,
        after_seq: i64,
        limit: u64,
    ) -> Result<Vec<Record>, DbErr> {
        let ids: Vec<Uuid> = Prompts::find()
            .select_only()
            .column(prompts::Column::Id)
            .filter(prompts::Column::OwnerId.eq(owner))
            .filter(prompts::Column::DeletedAt.is_null())
            .filter(prompts::Column::Seq.gt(after_seq))
            .order_by_asc(prompts::Column::Seq)
            .limit(limit)
            .into_tuple()
            .all(self.db.read())
            .await?;
        self.prompts_in_order(&ids).await
    }

    /// The answer given to a pushed change before, if it was pushed before.
    pub async fn push_receipt(
        &self,
        owner: Uuid,
        change_id: &str,
    ) -> Result<Option<serde_json::Value>, DbErr> {
        let db = self.db.write();
        let row = db
            .query_one_raw(statement(
                db,
                "SELECT result FROM sync_pushes WHERE owner_id = $1 AND change_id = $2",
                vec![owner.to_string().into(), change_id.into()],
            ))
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let text: String = row.try_get("", "result")?;
        Ok(Some(
            serde_json::from_str(&text).unwrap_or(serde_json::json!({"status": "applied"})),
        ))
    }

    /// Stores (or completes) the answer to a pushed change.
    pub async fn save_receipt(
        &self,
        owner: Uuid,
        change_id: &str,
        result: &serde_json::Value,
    ) -> Result<(), DbErr> {
        let db = self.db.write();
        db.execute_raw(statement(
            db,
            "INSERT INTO sync_pushes (owner_id, change_id, result, at_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (owner_id, change_id) DO UPDATE SET result = excluded.result",
            vec![
                owner.to_string().into(),
                change_id.into(),
                result.to_string().into(),
                platform::clock::now().timestamp_millis().into(),
            ],
        ))
        .await?;
        Ok(())
    }

    /// Forgets receipts older than `age_ms` (a device does not retry a push for weeks).
    pub async fn purge_receipts(&self, age_ms: i64) -> Result<u64, DbErr> {
        let db = self.db.write();
        let done = db
            .execute_raw(statement(
                db,
                "DELETE FROM sync_pushes WHERE at_ms < $1",
                vec![(platform::clock::now().timestamp_millis() - age_ms).into()],
            ))
            .await?;
        Ok(done.rows_affected())
    }
}
