//! Folders: nested, ordered, coloured. Deleting one never deletes prompts: they move to the
//! parent, or the deletion is refused.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, IntoActiveModel,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait,
};
use uuid::Uuid;

use super::entities::folders::{self, Entity as Folders};
use super::entities::prompts::{self, Entity as Prompts};
use super::{Store, WriteError};
use crate::domain::validation::key;

pub use folders::Model as Folder;

/// Folders nest at most this deep.
pub const MAX_DEPTH: usize = 16;

#[derive(Debug, Default)]
pub struct FolderChanges {
    pub name: Option<String>,
    /// `Some(None)`: to the top level.
    pub parent_id: Option<Option<Uuid>>,
    pub position: Option<i32>,
    pub color: Option<Option<String>>,
    pub icon: Option<Option<String>>,
    /// Change only if the folder's revision is still this (a device's offline edit).
    pub expected_revision: Option<i64>,
}

/// A folder to create.
#[derive(Debug, Default)]
pub struct NewFolder {
    /// Chosen by the client (an offline device); None: a new UUIDv7.
    pub id: Option<Uuid>,
    pub name: String,
    pub parent: Option<Uuid>,
    /// Order among siblings; None: after the last.
    pub position: Option<i32>,
    pub color: Option<String>,
    pub icon: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDelete {
    /// Refuse when the folder holds prompts or folders.
    Refuse,
    /// Move its prompts and sub-folders to its parent.
    MoveToParent,
}

fn parent_key(parent: Option<Uuid>) -> Uuid {
    parent.unwrap_or(Uuid::nil())
}

fn map_unique(e: DbErr) -> WriteError {
    match platform::db::unique_violation(&e) {
        Some(_) => WriteError::NameTaken,
        None => WriteError::Db(e),
    }
}

async fn owned<C: ConnectionTrait>(db: &C, owner: Uuid, id: Uuid) -> Result<Option<Folder>, DbErr> {
    Folders::find_by_id(id)
        .filter(folders::Column::OwnerId.eq(owner))
        .one(db)
        .await
}

/// The chain of ancestors of `id`, nearest first (bounded, so a damaged loop cannot hang).
async fn ancestors<C: ConnectionTrait>(db: &C, owner: Uuid, id: Uuid) -> Result<Vec<Uuid>, DbErr> {
    let mut chain = Vec::new();
    let mut next = Some(id);
    while let Some(current) = next {
        if chain.len() > MAX_DEPTH + 1 || chain.contains(&current) {
            break;
        }
        chain.push(current);
        next = owned(db, owner, current).await?.and_then(|f| f.parent_id);
    }
    Ok(chain)
}

impl Store {
    pub async fn folders(&self, owner: Uuid) -> Result<Vec<Folder>, DbErr> {
        Folders::find()
            .filter(folders::Column::OwnerId.eq(owner))
            .order_by_asc(folders::Column::ParentKey)
            .order_by_asc(folders::Column::Position)
            .order_by_asc(folders::Column::NameKey)
            .all(self.db.read())
            .await
    }

    pub async fn folder(&self, owner: Uuid, id: Uuid) -> Result<Option<Folder>, DbErr> {
        owned(self.db.read(), owner, id).await
    }

    /// How many prompts (trash included) and sub-folders a folder holds.
    pub async fn folder_contents(&self, owner: Uuid, id: Uuid) -> Result<(u64, u64), DbErr> {
        let prompts = Prompts::find()
            .filter(prompts::Column::OwnerId.eq(owner))
            .filter(prompts::Column::FolderId.eq(id))
            .count(self.db.read())
            .await?;
        let children = Folders::find()
            .filter(folders::Column::OwnerId.eq(owner))
            .filter(folders::Column::ParentId.eq(id))
            .count(self.db.read())
            .await?;
        Ok((prompts, children))
    }

    pub async fn create_folder(&self, owner: Uuid, new: NewFolder) -> Result<Folder, WriteError> {
        let NewFolder {
            id,
            name,
            parent,
            position,
            color,
            icon,
        } = new;
        let name = name.as_str();
        let txn = self.db.write().begin().await?;
        super::library::refuse_if_deleted(&txn, owner).await?;
        if let Some(id) = id
            && Folders::find_by_id(id).one(&txn).await?.is_some()
        {
            return Err(WriteError::IdTaken);
        }
        if let Some(p) = parent {
            if owned(&txn, owner, p).await?.is_none() {
                return Err(WriteError::UnknownFolder);
            }
            if ancestors(&txn, owner, p).await?.len() >= MAX_DEPTH {
                return Err(WriteError::Refused(format!(
                    "folders nest at most {MAX_DEPTH} deep"
                )));
            }
        }
        let position = match position {
            Some(p) => p,
            None => {
                let last: Option<i32> = Folders::find()
                    .select_only()
                    .column_as(folders::Column::Position.max(), "max")
                    .filter(folders::Column::OwnerId.eq(owner))
                    .filter(folders::Column::ParentKey.eq(parent_key(parent)))
                    .into_tuple()
                    .one(&txn)
                    .await?
                    .flatten();
                last.map_or(0, |p| p + 1)
            }
        };
        let now = platform::clock::now();
        let folder = folders::ActiveModel {
            id: Set(id.unwrap_or_else(Uuid::now_v7)),
            owner_id: Set(owner),
            parent_id: Set(parent),
            parent_key: Set(parent_key(parent)),
            name: Set(name.to_owned()),
            name_key: Set(key(name)),
            position: Set(position),
            color: Set(color),
            icon: Set(icon),
            revision: Set(1),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&txn)
        .await
        .map_err(map_unique)?;
        super::changes::folder(&txn, &folder, false).await?;
        txn.commit().await?;
        self.wake();
        Ok(folder)
    }

    pub async fn update_folder(
        &self,
        owner: Uuid,
        id: Uuid,
        changes: FolderChanges,
    ) -> Result<Folder, WriteError> {
        let txn = self.db.write().begin().await?;
        let current = owned(&txn, owner, id).await?.ok_or(WriteError::NotFound)?;
        if changes
            .expected_revision
            .is_some_and(|r| r != current.revision)
        {
            return Err(WriteError::Stale(current.revision));
        }
        let mut model = current.clone().into_active_model();
        if let Some(name) = &changes.name {
            model.name = Set(name.clone());
            model.name_key = Set(key(name));
        }
        if let Some(parent) = changes.parent_id {
            if let Some(p) = parent {
                if owned(&txn, owner, p).await?.is_none() {
                    return Err(WriteError::UnknownFolder);
                }
                let chain = ancestors(&txn, owner, p).await?;
                if chain.contains(&id) {
                    return Err(WriteError::Refused(
                        "a folder cannot move into itself or one of its sub-folders".into(),
                    ));
                }
                if chain.len() >= MAX_DEPTH {
                    return Err(WriteError::Refused(format!(
                        "folders nest at most {MAX_DEPTH} deep"
                    )));
                }
            }
            model.parent_id = Set(parent);
            model.parent_key = Set(parent_key(parent));
        }
        if let Some(p) = changes.position {
            model.position = Set(p);
        }
        if let Some(c) = changes.color {
            model.color = Set(c);
        }
        if let Some(i) = changes.icon {
            model.icon = Set(i);
        }
        model.revision = Set(current.revision + 1);
        model.updated_at = Set(platform::clock::now());
        let folder = model.update(&txn).await.map_err(map_unique)?;
        super::changes::folder(&txn, &folder, false).await?;
        txn.commit().await?;
        self.wake();
        Ok(folder)
    }

    /// Deletes a folder. Its prompts and sub-folders move to its parent, or, with
    /// `OnDelete::Refuse`, a folder that holds any is not deleted.
    pub async fn delete_folder(
        &self,
        owner: Uuid,
        id: Uuid,
        mode: OnDelete,
    ) -> Result<(u64, u64), WriteError> {
        let txn = self.db.write().begin().await?;
        let folder = owned(&txn, owner, id).await?.ok_or(WriteError::NotFound)?;
        let prompt_ids: Vec<Uuid> = Prompts::find()
            .select_only()
            .column(prompts::Column::Id)
            .filter(prompts::Column::OwnerId.eq(owner))
            .filter(prompts::Column::FolderId.eq(id))
            .into_tuple()
            .all(&txn)
            .await?;
        let children = Folders::find()
            .filter(folders::Column::OwnerId.eq(owner))
            .filter(folders::Column::ParentId.eq(id))
            .all(&txn)
            .await?;
        if mode == OnDelete::Refuse && (!prompt_ids.is_empty() || !children.is_empty()) {
            return Err(WriteError::Refused(format!(
                "the folder holds {} prompt(s) and {} folder(s); delete with ?prompts=move_to_parent to move them to its parent",
                prompt_ids.len(),
                children.len()
            )));
        }
        Prompts::update_many()
            .col_expr(prompts::Column::FolderId, Expr::value(folder.parent_id))
            .filter(prompts::Column::Id.is_in(prompt_ids.clone()))
            .exec(&txn)
            .await?;
        for prompt in &prompt_ids {
            super::prompts::reindex_prompt(&txn, *prompt).await?;
        }
        super::changes::touch_prompts(&txn, &prompt_ids).await?;
        for child in &children {
            let mut model = child.clone().into_active_model();
            model.parent_id = Set(folder.parent_id);
            model.parent_key = Set(parent_key(folder.parent_id));
            model.revision = Set(child.revision + 1);
            model.updated_at = Set(platform::clock::now());
            let moved = model.update(&txn).await.map_err(map_unique)?;
            super::changes::folder(&txn, &moved, false).await?;
        }
        Folders::delete_by_id(id).exec(&txn).await?;
        super::changes::folder(&txn, &folder, true).await?;
        txn.commit().await?;
        self.wake();
        Ok((prompt_ids.len() as u64, children.len() as u64))
    }
}
