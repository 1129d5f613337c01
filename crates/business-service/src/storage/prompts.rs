//! Prompts, their versions, favourites and usage, and the lists and searches over them.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use platform::db::unique_violation;
use sea_orm::sea_query::{Expr, ExprTrait, Query as SqlQuery};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DbBackend, DbErr, EntityTrait,
    FromQueryResult, IntoActiveModel, Order as SqlOrder, QueryFilter, QueryOrder, QuerySelect, Set,
    Statement, TransactionTrait, TryIntoModel,
};
use uuid::Uuid;

use super::changes::{self, PromptEvent};
use super::entities::favorites::{self, Entity as Favorites};
use super::entities::folders::{self, Entity as Folders};
use super::entities::prompt_tags::{self, Entity as PromptTags};
use super::entities::prompt_versions::{self, Entity as PromptVersions};
use super::entities::prompts::{self, Entity as Prompts};
use super::search::{self, ScopeOf, ScopeQuery};
use super::{Store, WriteError};
use crate::domain::listing::{
    Cursor, CursorKey, Filter, FolderFilter, Order, Scope, Sort, StatusFilter,
};
use crate::domain::search_text::{self, Query};
use crate::domain::validation::key;

pub use prompt_versions::Model as Version;
pub use prompts::Model as Prompt;

/// A prompt with its tags.
#[derive(Debug, Clone)]
pub struct Record {
    pub prompt: Prompt,
    pub tags: Vec<String>,
}

/// The whole writable state of a prompt, already validated.
#[derive(Debug, Clone)]
pub struct PromptInput {
    /// For a new prompt: the id its client chose (an offline device); None: a new UUIDv7.
    pub id: Option<Uuid>,
    pub title: String,
    pub content: String,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub category: Option<String>,
    pub folder_id: Option<Uuid>,
    pub visibility: String,
    pub status: String,
    pub slug: Option<String>,
    pub variables: serde_json::Value,
}

impl PromptInput {
    pub fn of(record: &Record) -> Self {
        let p = &record.prompt;
        Self {
            id: Some(p.id),
            title: p.title.clone(),
            content: p.content.clone(),
            description: p.description.clone(),
            tags: record.tags.clone(),
            category: p.category.clone(),
            folder_id: p.folder_id,
            visibility: p.visibility.clone(),
            status: p.status.clone(),
            slug: p.slug.clone(),
            variables: p.variables.clone(),
        }
    }
}

/// Why a version is being written.
#[derive(Debug, Clone, Default)]
pub struct Change {
    pub message: Option<String>,
    pub restored_from: Option<i32>,
}

/// Creates a prompt inside the caller's transaction.
pub(super) async fn insert_prompt<C: ConnectionTrait>(
    txn: &C,
    owner: Uuid,
    author: Uuid,
    input: PromptInput,
    change: &Change,
) -> Result<Record, WriteError> {
    super::library::refuse_if_deleted(txn, owner).await?;
    super::library::refuse_if_full(txn, owner).await?;
    if let Some(folder) = input.folder_id
        && !folder_is_owned(txn, owner, folder).await?
    {
        return Err(WriteError::UnknownFolder);
    }
    if let Some(category) = &input.category {
        super::categories::ensure(txn, owner, category).await?;
    }
    let seq = next_seq(txn).await?;
    let model = new_model(owner, seq, &input, platform::clock::now());
    let prompt = model.insert(txn).await.map_err(map_write)?;
    write_tags(txn, &prompt, &input.tags).await?;
    insert_version(txn, &prompt, author, change).await?;
    reindex(txn, &prompt, &input.tags).await?;
    changes::prompt(txn, PromptEvent::Created, &prompt).await?;
    Ok(Record {
        prompt,
        tags: input.tags,
    })
}

/// The light columns a search filters, ranks and pages by.
#[derive(Debug, Clone, FromQueryResult)]
pub struct Ranked {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub visibility: String,
    pub status: String,
    pub folder_id: Option<Uuid>,
    pub category_key: Option<String>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub title_key: String,
    pub usage_count: i64,
    pub search_title: String,
    pub search_tags: String,
    pub search_desc: String,
}

fn padded(tokens: &[String]) -> String {
    let mut seen = HashSet::new();
    let unique: Vec<&str> = tokens
        .iter()
        .filter(|t| seen.insert(t.as_str()))
        .map(String::as_str)
        .collect();
    format!(" {} ", unique.join(" "))
}

fn tag_keys(tags: &[String]) -> Vec<String> {
    tags.iter().map(|t| key(t)).collect()
}

async fn next_seq<C: ConnectionTrait>(db: &C) -> Result<i64, DbErr> {
    let backend = db.get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => "SELECT nextval('prompt_seq')",
        // One writer at a time on SQLite, inside this transaction: max + 1 cannot race.
        _ => "SELECT COALESCE(MAX(seq), 0) + 1 FROM prompts",
    };
    let row = db
        .query_one_raw(Statement::from_string(backend, sql))
        .await?
        .ok_or_else(|| DbErr::Custom("no sequence value".into()))?;
    row.try_get_by_index::<i64>(0)
}

async fn reindex<C: ConnectionTrait>(db: &C, p: &Prompt, tags: &[String]) -> Result<(), DbErr> {
    if p.deleted_at.is_some() {
        return search::unindex(db, p.seq).await;
    }
    let (scope, doc) = index_entry(p, tags);
    search::index(db, p.seq, &scope, &doc).await
}

/// What the search index holds for a prompt: its scope tokens and its words.
fn index_entry(p: &Prompt, tags: &[String]) -> (String, String) {
    let keys = tag_keys(tags);
    let scope = ScopeOf {
        owner: p.owner_id,
        visibility: &p.visibility,
        status: &p.status,
        folder: p.folder_id,
        category_key: p.category_key.as_deref(),
        tag_keys: &keys,
    }
    .tokens();
    let tag_text = tags.join(" ");
    let doc = search_text::index_document(&[
        &p.title,
        p.description.as_deref().unwrap_or(""),
        &tag_text,
        &p.content,
    ]);
    (scope, doc)
}

async fn write_tags<C: ConnectionTrait>(
    db: &C,
    prompt: &Prompt,
    tags: &[String],
) -> Result<(), DbErr> {
    PromptTags::delete_many()
        .filter(prompt_tags::Column::PromptId.eq(prompt.id))
        .exec(db)
        .await?;
    if tags.is_empty() {
        return Ok(());
    }
    PromptTags::insert_many(tags.iter().map(|t| prompt_tags::ActiveModel {
        prompt_id: Set(prompt.id),
        tag_key: Set(key(t)),
        tag: Set(t.clone()),
        owner_id: Set(prompt.owner_id),
    }))
    .exec(db)
    .await?;
    Ok(())
}

async fn folder_is_owned<C: ConnectionTrait>(
    db: &C,
    owner: Uuid,
    folder: Uuid,
) -> Result<bool, DbErr> {
    Ok(Folders::find_by_id(folder)
        .filter(folders::Column::OwnerId.eq(owner))
        .one(db)
        .await?
        .is_some())
}

fn new_model(
    owner: Uuid,
    seq: i64,
    input: &PromptInput,
    now: DateTime<Utc>,
) -> prompts::ActiveModel {
    let mut model = prompts::ActiveModel {
        id: Set(input.id.unwrap_or_else(Uuid::now_v7)),
        seq: Set(seq),
        owner_id: Set(owner),
        title_key: Set(key(&input.title)),
        title: Set(input.title.clone()),
        slug: Set(input.slug.clone()),
        content: Set(input.content.clone()),
        description: Set(input.description.clone()),
        category_key: Set(input.category.as_deref().map(key)),
        category: Set(input.category.clone()),
        folder_id: Set(input.folder_id),
        visibility: Set(input.visibility.clone()),
        status: Set(input.status.clone()),
        version: Set(1),
        revision: Set(1),
        usage_count: Set(0),
        last_used_at: Set(None),
        variables: Set(input.variables.clone()),
        search_title: Set(String::new()),
        search_tags: Set(String::new()),
        search_desc: Set(String::new()),
        created_at: Set(now),
        updated_at: Set(now),
        deleted_at: Set(None),
    };
    search_columns(&mut model, input);
    model
}

fn search_columns(model: &mut prompts::ActiveModel, input: &PromptInput) {
    model.search_title = Set(padded(&search_text::index_tokens(&input.title)));
    model.search_tags = Set(padded(&search_text::index_tokens(&input.tags.join(" "))));
    model.search_desc = Set(padded(&search_text::index_tokens(
        input.description.as_deref().unwrap_or(""),
    )));
}

fn map_write(e: DbErr) -> WriteError {
    match unique_violation(&e) {
        Some(detail) if detail.contains("slug") => WriteError::SlugTaken,
        // The only other unique key a client can touch is the id it chose.
        Some(_) => WriteError::IdTaken,
        None => WriteError::Db(e),
    }
}

impl Store {
    pub async fn create_prompt(
        &self,
        owner: Uuid,
        author: Uuid,
        input: PromptInput,
        change: Change,
    ) -> Result<Record, WriteError> {
        let txn = self.db.write().begin().await?;
        let record = insert_prompt(&txn, owner, author, input, &change).await?;
        txn.commit().await?;
        self.wake();
        Ok(record)
    }

    /// Creates many prompts of one owner in one transaction, with multi-row inserts: for
    /// generated libraries (benchmarks) and large imports of checked data. Folders must be
    /// the owner's; categories are not made.
    pub async fn bulk_create(&self, owner: Uuid, inputs: &[PromptInput]) -> Result<usize, DbErr> {
        if inputs.is_empty() {
            return Ok(0);
        }
        let txn = self.db.write().begin().await?;
        let backend = txn.get_database_backend();
        let first = match backend {
            DbBackend::Postgres => {
                let sql = format!(
                    "SELECT nextval('prompt_seq') FROM generate_series(1, {})",
                    inputs.len()
                );
                let rows = txn
                    .query_all_raw(Statement::from_string(backend, sql))
                    .await?;
                let seqs: Vec<i64> = rows
                    .iter()
                    .map(|r| r.try_get_by_index::<i64>(0))
                    .collect::<Result<_, _>>()?;
                seqs.first().copied().unwrap_or(1)
            }
            _ => next_seq(&txn).await?,
        };
        let now = platform::clock::now();
        let models: Vec<prompts::ActiveModel> = inputs
            .iter()
            .enumerate()
            .map(|(i, input)| new_model(owner, first + i as i64, input, now))
            .collect();
        let prompts: Vec<Prompt> = models
            .iter()
            .cloned()
            .map(TryIntoModel::try_into_model)
            .collect::<Result<_, _>>()?;
        // Chunks keep every statement under both backends' bound-parameter limits.
        for chunk in models.chunks(400) {
            Prompts::insert_many(chunk.to_vec()).exec(&txn).await?;
        }
        let versions: Vec<prompt_versions::ActiveModel> = prompts
            .iter()
            .map(|p| prompt_versions::ActiveModel {
                prompt_id: Set(p.id),
                number: Set(1),
                title: Set(p.title.clone()),
                content: Set(p.content.clone()),
                description: Set(p.description.clone()),
                author_id: Set(owner),
                message: Set(Some("created".into())),
                restored_from: Set(None),
                created_at: Set(now),
            })
            .collect();
        for chunk in versions.chunks(1000) {
            PromptVersions::insert_many(chunk.to_vec())
                .exec(&txn)
                .await?;
        }
        let tags: Vec<prompt_tags::ActiveModel> = prompts
            .iter()
            .zip(inputs)
            .flat_map(|(p, input)| {
                input.tags.iter().map(move |t| prompt_tags::ActiveModel {
                    prompt_id: Set(p.id),
                    tag_key: Set(key(t)),
                    tag: Set(t.to_string()),
                    owner_id: Set(owner),
                })
            })
            .collect();
        for chunk in tags.chunks(2000) {
            PromptTags::insert_many(chunk.to_vec()).exec(&txn).await?;
        }
        let entries: Vec<(i64, String, String)> = prompts
            .iter()
            .zip(inputs)
            .map(|(p, input)| {
                let (scope, doc) = index_entry(p, &input.tags);
                (p.seq, scope, doc)
            })
            .collect();
        search::index_many(&txn, &entries).await?;
        changes::bulk_created(&txn, owner, &prompts).await?;
        txn.commit().await?;
        self.wake();
        Ok(inputs.len())
    }

    /// Replaces a prompt's state if its revision is still `expected`. A change of title, text
    /// or description makes a new version.
    pub async fn update_prompt(
        &self,
        id: Uuid,
        expected: i64,
        author: Uuid,
        input: PromptInput,
        change: Change,
    ) -> Result<Record, WriteError> {
        let txn = self.db.write().begin().await?;
        let current = Prompts::find_by_id(id)
            .one(&txn)
            .await?
            .ok_or(WriteError::NotFound)?;
        if current.revision != expected {
            return Err(WriteError::Stale(current.revision));
        }
        if let Some(folder) = input.folder_id
            && input.folder_id != current.folder_id
            && !folder_is_owned(&txn, current.owner_id, folder).await?
        {
            return Err(WriteError::UnknownFolder);
        }
        if let Some(category) = &input.category {
            super::categories::ensure(&txn, current.owner_id, category).await?;
        }
        let new_version = current.title != input.title
            || current.content != input.content
            || current.description != input.description
            || change.restored_from.is_some();
        let version = current.version + i32::from(new_version);
        let mut model = current.clone().into_active_model();
        model.title_key = Set(key(&input.title));
        model.title = Set(input.title.clone());
        model.slug = Set(input.slug.clone());
        model.content = Set(input.content.clone());
        model.description = Set(input.description.clone());
        model.category_key = Set(input.category.as_deref().map(key));
        model.category = Set(input.category.clone());
        model.folder_id = Set(input.folder_id);
        model.visibility = Set(input.visibility.clone());
        model.status = Set(input.status.clone());
        model.variables = Set(input.variables.clone());
        model.version = Set(version);
        model.revision = Set(current.revision + 1);
        model.updated_at = Set(platform::clock::now());
        search_columns(&mut model, &input);
        // The revision check again, in the write itself: two racing writers cannot both win.
        let updated = Prompts::update_many()
            .set(model)
            .filter(prompts::Column::Id.eq(id))
            .filter(prompts::Column::Revision.eq(expected))
            .exec(&txn)
            .await
            .map_err(map_write)?;
        if updated.rows_affected != 1 {
            return Err(WriteError::Stale(expected + 1));
        }
        let prompt = Prompts::find_by_id(id)
            .one(&txn)
            .await?
            .ok_or(WriteError::NotFound)?;
        write_tags(&txn, &prompt, &input.tags).await?;
        if new_version {
            insert_version(&txn, &prompt, author, &change).await?;
        }
        reindex(&txn, &prompt, &input.tags).await?;
        changes::prompt(&txn, PromptEvent::Updated, &prompt).await?;
        txn.commit().await?;
        self.wake();
        Ok(Record {
            prompt,
            tags: input.tags,
        })
    }

    /// Moves a prompt to the trash (`deleted = true`) or back out of it.
    pub async fn set_deleted(&self, id: Uuid, deleted: bool) -> Result<Record, WriteError> {
        let txn = self.db.write().begin().await?;
        let current = Prompts::find_by_id(id)
            .one(&txn)
            .await?
            .ok_or(WriteError::NotFound)?;
        let now = platform::clock::now();
        let mut model = current.clone().into_active_model();
        model.deleted_at = Set(deleted.then_some(now));
        model.revision = Set(current.revision + 1);
        model.updated_at = Set(now);
        let prompt = model.update(&txn).await?;
        let tags = tags_of(&txn, &[id]).await?.remove(&id).unwrap_or_default();
        reindex(&txn, &prompt, &tags).await?;
        let what = if deleted {
            PromptEvent::Trashed
        } else {
            PromptEvent::Updated
        };
        changes::prompt(&txn, what, &prompt).await?;
        txn.commit().await?;
        self.wake();
        Ok(Record { prompt, tags })
    }

    /// Deletes a prompt for good, with its versions, tags and favourites.
    pub async fn purge_prompt(&self, id: Uuid) -> Result<bool, DbErr> {
        let txn = self.db.write().begin().await?;
        let Some(prompt) = Prompts::find_by_id(id).one(&txn).await? else {
            return Ok(false);
        };
        search::unindex(&txn, prompt.seq).await?;
        changes::prompt(&txn, PromptEvent::Purged, &prompt).await?;
        Prompts::delete_by_id(id).exec(&txn).await?;
        txn.commit().await?;
        self.wake();
        Ok(true)
    }

    /// Purges prompts in the trash since before `cutoff`; returns how many.
    pub async fn purge_trash(&self, cutoff: DateTime<Utc>) -> Result<u64, DbErr> {
        let old: Vec<Uuid> = Prompts::find()
            .select_only()
            .column(prompts::Column::Id)
            .filter(prompts::Column::DeletedAt.lt(cutoff))
            .limit(1000)
            .into_tuple()
            .all(self.db.read())
            .await?;
        let mut n = 0;
        for id in old {
            n += u64::from(self.purge_prompt(id).await?);
        }
        Ok(n)
    }

    /// How many prompts `owner` has (the trash included).
    pub async fn count_owned(&self, owner: Uuid) -> Result<u64, DbErr> {
        use sea_orm::PaginatorTrait;
        Prompts::find()
            .filter(prompts::Column::OwnerId.eq(owner))
            .count(self.db.read())
            .await
    }

    pub async fn record_use(&self, id: Uuid) -> Result<Option<Prompt>, DbErr> {
        let now = platform::clock::now();
        let result = Prompts::update_many()
            .col_expr(
                prompts::Column::UsageCount,
                Expr::col(prompts::Column::UsageCount).add(1),
            )
            .col_expr(prompts::Column::LastUsedAt, Expr::value(now))
            .filter(prompts::Column::Id.eq(id))
            .exec(self.db.write())
            .await?;
        if result.rows_affected == 0 {
            return Ok(None);
        }
        Prompts::find_by_id(id).one(self.db.write()).await
    }

    pub async fn prompt(&self, id: Uuid) -> Result<Option<Record>, DbErr> {
        let Some(prompt) = Prompts::find_by_id(id).one(self.db.read()).await? else {
            return Ok(None);
        };
        let tags = tags_of(self.db.read(), &[id])
            .await?
            .remove(&id)
            .unwrap_or_default();
        Ok(Some(Record { prompt, tags }))
    }

    pub async fn prompt_by_slug(&self, owner: Uuid, slug: &str) -> Result<Option<Prompt>, DbErr> {
        Prompts::find()
            .filter(prompts::Column::OwnerId.eq(owner))
            .filter(prompts::Column::Slug.eq(slug))
            .one(self.db.read())
            .await
    }

    /// Prompts by id, in the order given, with their tags.
    pub async fn prompts_in_order(&self, ids: &[Uuid]) -> Result<Vec<Record>, DbErr> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = Prompts::find()
            .filter(prompts::Column::Id.is_in(ids.to_vec()))
            .all(self.db.read())
            .await?;
        let mut tags = tags_of(self.db.read(), ids).await?;
        let mut by_id: HashMap<Uuid, Prompt> = rows.into_iter().map(|p| (p.id, p)).collect();
        Ok(ids
            .iter()
            .filter_map(|id| {
                by_id.remove(id).map(|prompt| Record {
                    tags: tags.remove(id).unwrap_or_default(),
                    prompt,
                })
            })
            .collect())
    }

    pub async fn versions(&self, id: Uuid) -> Result<Vec<Version>, DbErr> {
        PromptVersions::find()
            .filter(prompt_versions::Column::PromptId.eq(id))
            .order_by_desc(prompt_versions::Column::Number)
            .all(self.db.read())
            .await
    }

    pub async fn version(&self, id: Uuid, number: i32) -> Result<Option<Version>, DbErr> {
        PromptVersions::find_by_id((id, number))
            .one(self.db.read())
            .await
    }

    pub async fn set_favorite(&self, user: Uuid, prompt: Uuid, on: bool) -> Result<(), DbErr> {
        if on {
            let model = favorites::ActiveModel {
                user_id: Set(user),
                prompt_id: Set(prompt),
                created_at: Set(platform::clock::now()),
            };
            Favorites::insert(model)
                .on_conflict_do_nothing()
                .exec(self.db.write())
                .await?;
        } else {
            Favorites::delete_by_id((user, prompt))
                .exec(self.db.write())
                .await?;
        }
        Ok(())
    }

    /// Which of `prompts` are `user`'s favourites.
    pub async fn favorites_among(
        &self,
        user: Uuid,
        prompts: &[Uuid],
    ) -> Result<HashSet<Uuid>, DbErr> {
        if prompts.is_empty() {
            return Ok(HashSet::new());
        }
        let ids: Vec<Uuid> = Favorites::find()
            .select_only()
            .column(favorites::Column::PromptId)
            .filter(favorites::Column::UserId.eq(user))
            .filter(favorites::Column::PromptId.is_in(prompts.to_vec()))
            .into_tuple()
            .all(self.db.read())
            .await?;
        Ok(ids.into_iter().collect())
    }

    /// One page of a list without a text query: filtered and ordered in the database.
    pub async fn list_page(
        &self,
        scope: &Scope,
        filter: &Filter,
        sort: Sort,
        order: Order,
        after: Option<&Cursor>,
        limit: u64,
    ) -> Result<Vec<Prompt>, DbErr> {
        let mut query = Prompts::find().filter(conditions(scope, filter));
        let (column, desc) = (sort_column(sort), order == Order::Desc);
        if let Some(c) = after {
            query = query.filter(keyset(column, desc, &c.key, c.id)?);
        }
        let dir = if desc { SqlOrder::Desc } else { SqlOrder::Asc };
        query
            .order_by(column, dir.clone())
            .order_by(prompts::Column::Id, dir)
            .limit(limit)
            .all(self.db.read())
            .await
    }

    /// The newest prompts (at most `limit`) matching a text query and the filters, with what
    /// ranking needs.
    pub async fn search_candidates(
        &self,
        scope: &Scope,
        filter: &Filter,
        query: &Query,
        limit: u32,
    ) -> Result<Vec<Ranked>, DbErr> {
        let seqs =
            search::candidates(self.db.read(), &scope_query(scope, filter), query, limit).await?;
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        // The index answered for scope and words; the rows confirm every filter. The query
        // looks rows up by `seq` alone and the filters run here: with other conditions in
        // the SQL, a planner with stale statistics may walk the owner's whole library.
        let rows = Prompts::find()
            .select_only()
            .columns([
                prompts::Column::Id,
                prompts::Column::OwnerId,
                prompts::Column::Visibility,
                prompts::Column::Status,
                prompts::Column::FolderId,
                prompts::Column::CategoryKey,
                prompts::Column::DeletedAt,
                prompts::Column::UpdatedAt,
                prompts::Column::CreatedAt,
                prompts::Column::TitleKey,
                prompts::Column::UsageCount,
                prompts::Column::SearchTitle,
                prompts::Column::SearchTags,
                prompts::Column::SearchDesc,
            ])
            .filter(prompts::Column::Seq.is_in(seqs))
            .into_model::<Ranked>()
            .all(self.db.read())
            .await?;
        let mut rows: Vec<Ranked> = rows
            .into_iter()
            .filter(|r| admits(scope, filter, r))
            .collect();
        let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        let favorites_of = match scope {
            Scope::Favorites(user) => Some(*user),
            _ => filter.favorite_of,
        };
        if let Some(user) = favorites_of {
            let favorites = self.favorites_among(user, &ids).await?;
            rows.retain(|r| favorites.contains(&r.id));
        }
        if !filter.tags.is_empty() {
            let wanted: Vec<String> = filter.tags.iter().map(|t| key(t)).collect();
            let tags = tags_of(self.db.read(), &ids).await?;
            rows.retain(|r| {
                let have: Vec<String> = tags
                    .get(&r.id)
                    .map_or_else(Vec::new, |t| t.iter().map(|t| key(t)).collect());
                if filter.all_tags {
                    wanted.iter().all(|w| have.contains(w))
                } else {
                    wanted.iter().any(|w| have.contains(w))
                }
            });
        }
        Ok(rows)
    }

    /// Prompts of `owner` in any of `folders` (not in the trash), for moves.
    pub async fn count_in_folders(&self, owner: Uuid, folders: &[Uuid]) -> Result<u64, DbErr> {
        use sea_orm::PaginatorTrait;
        Prompts::find()
            .filter(prompts::Column::OwnerId.eq(owner))
            .filter(prompts::Column::FolderId.is_in(folders.to_vec()))
            .count(self.db.read())
            .await
    }

    /// Every prompt of an owner matching a scope and filter (no text query), for export.
    pub async fn all_matching(&self, scope: &Scope, filter: &Filter) -> Result<Vec<Record>, DbErr> {
        let rows = Prompts::find()
            .filter(conditions(scope, filter))
            .order_by_asc(prompts::Column::CreatedAt)
            .order_by_asc(prompts::Column::Id)
            .all(self.db.read())
            .await?;
        let ids: Vec<Uuid> = rows.iter().map(|p| p.id).collect();
        let mut tags = tags_of(self.db.read(), &ids).await?;
        Ok(rows
            .into_iter()
            .map(|prompt| Record {
                tags: tags.remove(&prompt.id).unwrap_or_default(),
                prompt,
            })
            .collect())
    }
}

async fn insert_version<C: ConnectionTrait>(
    db: &C,
    prompt: &Prompt,
    author: Uuid,
    change: &Change,
) -> Result<(), DbErr> {
    prompt_versions::ActiveModel {
        prompt_id: Set(prompt.id),
        number: Set(prompt.version),
        title: Set(prompt.title.clone()),
        content: Set(prompt.content.clone()),
        description: Set(prompt.description.clone()),
        author_id: Set(author),
        message: Set(change.message.clone()),
        restored_from: Set(change.restored_from),
        created_at: Set(prompt.updated_at),
    }
    .insert(db)
    .await?;
    Ok(())
}

pub(super) async fn tags_of<C: ConnectionTrait>(
    db: &C,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, Vec<String>>, DbErr> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = PromptTags::find()
        .filter(prompt_tags::Column::PromptId.is_in(ids.to_vec()))
        .order_by_asc(prompt_tags::Column::TagKey)
        .all(db)
        .await?;
    let mut out: HashMap<Uuid, Vec<String>> = HashMap::new();
    for row in rows {
        out.entry(row.prompt_id).or_default().push(row.tag);
    }
    Ok(out)
}

pub(super) async fn reindex_prompt<C: ConnectionTrait>(db: &C, id: Uuid) -> Result<(), DbErr> {
    let Some(prompt) = Prompts::find_by_id(id).one(db).await? else {
        return Ok(());
    };
    let tags = tags_of(db, &[id]).await?.remove(&id).unwrap_or_default();
    let mut model = prompt.clone().into_active_model();
    model.search_tags = Set(padded(&search_text::index_tokens(&tags.join(" "))));
    model.revision = Set(prompt.revision + 1);
    model.updated_at = Set(platform::clock::now());
    let prompt = model.update(db).await?;
    reindex(db, &prompt, &tags).await
}

fn sort_column(sort: Sort) -> prompts::Column {
    match sort {
        Sort::Created => prompts::Column::CreatedAt,
        Sort::Title => prompts::Column::TitleKey,
        Sort::Usage => prompts::Column::UsageCount,
        Sort::Updated | Sort::Relevance => prompts::Column::UpdatedAt,
    }
}

/// Rows after the cursor's (key, id) in the list's order.
fn keyset(
    column: prompts::Column,
    desc: bool,
    key: &CursorKey,
    id: Uuid,
) -> Result<Condition, DbErr> {
    let bad = || DbErr::Custom("cursor does not fit the sort".into());
    let (after, same) = match (column, key) {
        (prompts::Column::UsageCount, CursorKey::Number(n)) => {
            let v = sea_orm::Value::from(*n);
            (column_cmp(column, desc, v.clone()), Expr::col(column).eq(v))
        }
        (prompts::Column::TitleKey, CursorKey::Text(t)) => {
            let v = sea_orm::Value::from(t.clone());
            (column_cmp(column, desc, v.clone()), Expr::col(column).eq(v))
        }
        (prompts::Column::UpdatedAt | prompts::Column::CreatedAt, CursorKey::Text(t)) => {
            let at: DateTime<Utc> = DateTime::parse_from_rfc3339(t)
                .map_err(|_| bad())?
                .with_timezone(&Utc);
            let v = sea_orm::Value::from(at);
            (column_cmp(column, desc, v.clone()), Expr::col(column).eq(v))
        }
        _ => return Err(bad()),
    };
    let id_after = if desc {
        prompts::Column::Id.lt(id)
    } else {
        prompts::Column::Id.gt(id)
    };
    Ok(Condition::any()
        .add(after)
        .add(Condition::all().add(same).add(id_after)))
}

fn column_cmp(
    column: prompts::Column,
    desc: bool,
    v: sea_orm::Value,
) -> sea_orm::sea_query::SimpleExpr {
    if desc {
        Expr::col(column).lt(v)
    } else {
        Expr::col(column).gt(v)
    }
}

/// The filters as SQL, shared by lists, searches and exports.
fn conditions(scope: &Scope, f: &Filter) -> Condition {
    let mut c = Condition::all();
    c = match scope {
        Scope::Owner(owner) => c.add(prompts::Column::OwnerId.eq(*owner)),
        Scope::PublicOf(owner) => c
            .add(prompts::Column::OwnerId.eq(*owner))
            .add(prompts::Column::Visibility.eq("public")),
        Scope::Public => c.add(prompts::Column::Visibility.eq("public")),
        Scope::Favorites(user) => c
            .add(
                prompts::Column::Id.in_subquery(
                    SqlQuery::select()
                        .column(favorites::Column::PromptId)
                        .from(Favorites)
                        .and_where(favorites::Column::UserId.eq(*user))
                        .to_owned(),
                ),
            )
            .add(
                Condition::any()
                    .add(prompts::Column::OwnerId.eq(*user))
                    .add(prompts::Column::Visibility.is_in(["public", "unlisted"])),
            ),
    };
    c = match f.status {
        StatusFilter::Deleted => c.add(prompts::Column::DeletedAt.is_not_null()),
        StatusFilter::All => c.add(prompts::Column::DeletedAt.is_null()),
        StatusFilter::Active => c
            .add(prompts::Column::DeletedAt.is_null())
            .add(prompts::Column::Status.eq("active")),
        StatusFilter::Archived => c
            .add(prompts::Column::DeletedAt.is_null())
            .add(prompts::Column::Status.eq("archived")),
    };
    if let Some(v) = &f.visibility {
        c = c.add(prompts::Column::Visibility.eq(v.clone()));
    }
    match f.folder {
        Some(FolderFilter::In(id)) => c = c.add(prompts::Column::FolderId.eq(id)),
        Some(FolderFilter::None) => c = c.add(prompts::Column::FolderId.is_null()),
        None => {}
    }
    if let Some(cat) = &f.category {
        c = c.add(prompts::Column::CategoryKey.eq(key(cat)));
    }
    if let Some(t) = f.updated_after {
        c = c.add(prompts::Column::UpdatedAt.gte(t));
    }
    if let Some(t) = f.updated_before {
        c = c.add(prompts::Column::UpdatedAt.lt(t));
    }
    if let Some(t) = f.created_after {
        c = c.add(prompts::Column::CreatedAt.gte(t));
    }
    if let Some(t) = f.created_before {
        c = c.add(prompts::Column::CreatedAt.lt(t));
    }
    if !f.tags.is_empty() {
        let keys: Vec<String> = f.tags.iter().map(|t| key(t)).collect();
        if f.all_tags {
            for k in keys {
                c = c.add(
                    prompts::Column::Id.in_subquery(
                        SqlQuery::select()
                            .column(prompt_tags::Column::PromptId)
                            .from(PromptTags)
                            .and_where(prompt_tags::Column::TagKey.eq(k))
                            .to_owned(),
                    ),
                );
            }
        } else {
            c = c.add(
                prompts::Column::Id.in_subquery(
                    SqlQuery::select()
                        .column(prompt_tags::Column::PromptId)
                        .from(PromptTags)
                        .and_where(prompt_tags::Column::TagKey.is_in(keys))
                        .to_owned(),
                ),
            );
        }
    }
    if let Some(user) = f.favorite_of {
        c = c.add(
            prompts::Column::Id.in_subquery(
                SqlQuery::select()
                    .column(favorites::Column::PromptId)
                    .from(Favorites)
                    .and_where(favorites::Column::UserId.eq(user))
                    .to_owned(),
            ),
        );
    }
    c
}

/// The filters of `conditions`, but for favourites and tags, on one row.
fn admits(scope: &Scope, f: &Filter, r: &Ranked) -> bool {
    let in_scope = match scope {
        Scope::Owner(owner) => r.owner_id == *owner,
        Scope::PublicOf(owner) => r.owner_id == *owner && r.visibility == "public",
        Scope::Public => r.visibility == "public",
        Scope::Favorites(user) => {
            r.owner_id == *user || r.visibility == "public" || r.visibility == "unlisted"
        }
    };
    let status = match f.status {
        StatusFilter::Deleted => r.deleted_at.is_some(),
        StatusFilter::All => r.deleted_at.is_none(),
        StatusFilter::Active => r.deleted_at.is_none() && r.status == "active",
        StatusFilter::Archived => r.deleted_at.is_none() && r.status == "archived",
    };
    let folder = match f.folder {
        Some(FolderFilter::In(id)) => r.folder_id == Some(id),
        Some(FolderFilter::None) => r.folder_id.is_none(),
        None => true,
    };
    in_scope
        && status
        && folder
        && f.visibility.as_ref().is_none_or(|v| &r.visibility == v)
        && f.category
            .as_ref()
            .is_none_or(|c| r.category_key.as_deref() == Some(key(c).as_str()))
        && f.updated_after.is_none_or(|t| r.updated_at >= t)
        && f.updated_before.is_none_or(|t| r.updated_at < t)
        && f.created_after.is_none_or(|t| r.created_at >= t)
        && f.created_before.is_none_or(|t| r.created_at < t)
}

/// The same filters as index scope tokens, where the index has them.
fn scope_query(scope: &Scope, f: &Filter) -> ScopeQuery {
    let mut q = ScopeQuery::default();
    match scope {
        Scope::Owner(owner) => {
            q.require_any(vec![search::owner_token(*owner)]);
        }
        Scope::PublicOf(owner) => {
            q.require_any(vec![search::owner_token(*owner)])
                .require_any(vec![search::visibility_token("public")]);
        }
        Scope::Public => {
            q.require_any(vec![search::visibility_token("public")]);
        }
        Scope::Favorites(user) => {
            q.require_any(vec![
                search::owner_token(*user),
                search::visibility_token("public"),
                search::visibility_token("unlisted"),
            ]);
        }
    }
    match f.status {
        StatusFilter::Active => {
            q.require_any(vec![search::status_token("active")]);
        }
        StatusFilter::Archived => {
            q.require_any(vec![search::status_token("archived")]);
        }
        // The trash is not in the index; a search there finds nothing.
        StatusFilter::Deleted => {
            q.require_any(vec!["zzsdeleted".into()]);
        }
        StatusFilter::All => {}
    }
    if let Some(v) = &f.visibility {
        q.require_any(vec![search::visibility_token(v)]);
    }
    match f.folder {
        Some(FolderFilter::In(id)) => {
            q.require_any(vec![search::folder_token(Some(id))]);
        }
        Some(FolderFilter::None) => {
            q.require_any(vec![search::folder_token(None)]);
        }
        None => {}
    }
    if let Some(cat) = &f.category {
        q.require_any(vec![search::category_token(Some(&key(cat)))]);
    }
    if !f.tags.is_empty() {
        let tokens: Vec<String> = f.tags.iter().map(|t| search::tag_token(&key(t))).collect();
        if f.all_tags {
            for t in tokens {
                q.require_any(vec![t]);
            }
        } else {
            q.require_any(tokens);
        }
    }
    q
}

/// The cursor key of a prompt under a sort.
pub fn cursor_key(sort: Sort, p: &Ranked, score: i64) -> CursorKey {
    match sort {
        Sort::Relevance => CursorKey::Number(score),
        Sort::Usage => CursorKey::Number(p.usage_count),
        Sort::Title => CursorKey::Text(p.title_key.clone()),
        Sort::Created => CursorKey::Text(p.created_at.to_rfc3339()),
        Sort::Updated => CursorKey::Text(p.updated_at.to_rfc3339()),
    }
}

impl From<&Prompt> for Ranked {
    fn from(p: &Prompt) -> Self {
        Ranked {
            id: p.id,
            owner_id: p.owner_id,
            visibility: p.visibility.clone(),
            status: p.status.clone(),
            folder_id: p.folder_id,
            category_key: p.category_key.clone(),
            deleted_at: p.deleted_at,
            updated_at: p.updated_at,
            created_at: p.created_at,
            title_key: p.title_key.clone(),
            usage_count: p.usage_count,
            search_title: p.search_title.clone(),
            search_tags: p.search_tags.clone(),
            search_desc: p.search_desc.clone(),
        }
    }
}

/// Folders of `owner` that hold prompts (for exports by folder path).
pub async fn owner_folders<C: ConnectionTrait>(
    db: &C,
    owner: Uuid,
) -> Result<Vec<folders::Model>, DbErr> {
    Folders::find()
        .filter(folders::Column::OwnerId.eq(owner))
        .all(db)
        .await
}
