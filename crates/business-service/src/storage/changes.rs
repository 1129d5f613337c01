//! The change log devices sync from (`sync_log`), and the events every change announces.
//! Each write calls these inside its own transaction, so a change, its log entry and its
//! events commit together or not at all.

use platform::events::contracts::{self, DataSync, PromptChanged};
use platform::events::{Envelope, outbox};
use sea_orm::{ConnectionTrait, DbErr, Value};
use uuid::Uuid;

use super::entities::folders::Model as Folder;
use super::entities::prompts::Model as Prompt;
use super::statement;

pub const PROMPT: &str = "prompt";
pub const FOLDER: &str = "folder";
pub const TAG: &str = "tag";
pub const UPSERT: &str = "upsert";
pub const DELETE: &str = "delete";

tokio::task_local! {
    /// The device making the current request's changes (`X-Device-Id`), so its own live
    /// stream can skip the echo of its changes.
    pub static DEVICE: Option<String>;
}

fn device() -> Option<String> {
    DEVICE.try_with(Clone::clone).ok().flatten()
}

fn envelope(kind: &str, subject: String, data: impl serde::Serialize) -> Result<Envelope, DbErr> {
    let data = serde_json::to_value(data).map_err(|e| DbErr::Custom(e.to_string()))?;
    Ok(Envelope::new(crate::NAME, kind, Some(subject), data))
}

/// Appends one entry to `owner`'s change log and announces it (`data.sync`).
pub async fn log<C: ConnectionTrait>(
    db: &C,
    owner: Uuid,
    entity: &str,
    entity_id: &str,
    op: &str,
    revision: i64,
) -> Result<i64, DbErr> {
    let device = device();
    let row = db
        .query_one_raw(statement(
            db,
            "INSERT INTO sync_log (owner_id, entity, entity_id, op, revision, device_id, at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING seq",
            vec![
                owner.to_string().into(),
                entity.into(),
                entity_id.into(),
                op.into(),
                revision.into(),
                device.clone().into(),
                platform::clock::now().timestamp_millis().into(),
            ],
        ))
        .await?
        .ok_or_else(|| DbErr::Custom("the change log gave no position".into()))?;
    let cursor: i64 = row.try_get("", "seq")?;
    super::sync::write_receipt(db, owner).await?;
    announce(
        db,
        DataSync {
            user_id: owner,
            cursor,
            entity: entity.into(),
            entity_id: entity_id.into(),
            op: op.into(),
            device_id: device,
        },
    )
    .await?;
    Ok(cursor)
}

/// `data.sync`: tells the owner's devices to pull from before `cursor`.
async fn announce<C: ConnectionTrait>(db: &C, change: DataSync) -> Result<(), DbErr> {
    let subject = change.user_id.to_string();
    outbox::enqueue(db, &envelope(contracts::DATA_SYNC, subject, change)?).await
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptEvent {
    Created,
    Updated,
    /// Moved to the trash.
    Trashed,
    /// Gone for good.
    Purged,
}

/// Logs a prompt's change and announces it (`prompt.created|updated|deleted`).
pub async fn prompt<C: ConnectionTrait>(
    db: &C,
    what: PromptEvent,
    p: &Prompt,
) -> Result<(), DbErr> {
    let gone = matches!(what, PromptEvent::Trashed | PromptEvent::Purged) || p.deleted_at.is_some();
    log(
        db,
        p.owner_id,
        PROMPT,
        &p.id.to_string(),
        if gone { DELETE } else { UPSERT },
        p.revision,
    )
    .await?;
    let kind = match what {
        PromptEvent::Created => contracts::PROMPT_CREATED,
        PromptEvent::Updated => contracts::PROMPT_UPDATED,
        PromptEvent::Trashed | PromptEvent::Purged => contracts::PROMPT_DELETED,
    };
    outbox::enqueue(
        db,
        &envelope(
            kind,
            p.id.to_string(),
            PromptChanged {
                prompt_id: p.id,
                owner_id: p.owner_id,
                title: p.title.clone(),
                version: p.version,
                revision: p.revision,
                visibility: p.visibility.clone(),
                permanent: what == PromptEvent::Purged,
            },
        )?,
    )
    .await
}

pub async fn folder<C: ConnectionTrait>(db: &C, f: &Folder, deleted: bool) -> Result<(), DbErr> {
    log(
        db,
        f.owner_id,
        FOLDER,
        &f.id.to_string(),
        if deleted { DELETE } else { UPSERT },
        f.revision,
    )
    .await
    .map(|_| ())
}

/// A tag no longer on any of `owner`'s prompts (merged away or deleted).
pub async fn tag_gone<C: ConnectionTrait>(db: &C, owner: Uuid, tag: &str) -> Result<(), DbErr> {
    log(db, owner, TAG, tag, DELETE, 0).await.map(|_| ())
}

/// Bumps the revision of prompts changed as a side effect (a tag renamed, a folder deleted,
/// a category renamed), so an offline edit based on the old state is answered as a
/// conflict instead of silently undoing the change; logs and announces each.
pub async fn touch_prompts<C: ConnectionTrait>(db: &C, ids: &[Uuid]) -> Result<(), DbErr> {
    use sea_orm::sea_query::{Expr, ExprTrait};
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

    use super::entities::prompts::{self as prompts, Entity as Prompts};
    let now = platform::clock::now();
    for chunk in ids.chunks(500) {
        Prompts::update_many()
            .col_expr(
                prompts::Column::Revision,
                Expr::col(prompts::Column::Revision).add(1),
            )
            .col_expr(prompts::Column::UpdatedAt, Expr::value(now))
            .filter(prompts::Column::Id.is_in(chunk.to_vec()))
            .exec(db)
            .await?;
        let changed = Prompts::find()
            .filter(prompts::Column::Id.is_in(chunk.to_vec()))
            .all(db)
            .await?;
        for p in &changed {
            prompt(db, PromptEvent::Updated, p).await?;
        }
    }
    Ok(())
}

/// Logs a bulk load: one entry per prompt, one `data.sync` for the lot (a device pulls
/// them all from the cursor anyway), and no per-prompt events.
pub async fn bulk_created<C: ConnectionTrait>(
    db: &C,
    owner: Uuid,
    prompts: &[Prompt],
) -> Result<(), DbErr> {
    if prompts.is_empty() {
        return Ok(());
    }
    let now = platform::clock::now().timestamp_millis();
    for chunk in prompts.chunks(500) {
        let mut sql = String::from(
            "INSERT INTO sync_log (owner_id, entity, entity_id, op, revision, device_id, at_ms) VALUES ",
        );
        let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 4);
        for (i, p) in chunk.iter().enumerate() {
            let n = i * 4;
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!(
                "(${}, 'prompt', ${}, 'upsert', ${}, NULL, ${})",
                n + 1,
                n + 2,
                n + 3,
                n + 4
            ));
            values.extend([
                owner.to_string().into(),
                p.id.to_string().into(),
                p.revision.into(),
                now.into(),
            ]);
        }
        db.execute_raw(statement(db, &sql, values)).await?;
    }
    // The lot's single announcement points at its last entry.
    let cursor = super::sync::head(db, owner).await?;
    announce(
        db,
        DataSync {
            user_id: owner,
            cursor,
            entity: PROMPT.into(),
            entity_id: String::new(),
            op: UPSERT.into(),
            device_id: None,
        },
    )
    .await
}
