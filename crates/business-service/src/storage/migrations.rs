//! The schema of `business_db`, as migrations applied at start. Text search has one
//! structure per backend (FTS5 on SQLite, a tsvector with a GIN index on PostgreSQL), fed
//! the same tokens, so both find the same prompts.

use sea_orm::DbBackend;
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(M0001Initial),
            Box::new(platform::events::schema::EventTables),
            Box::new(M0002LibrariesAndSync),
            Box::new(M0003UnweightedSearch),
            Box::new(M0004DeletedOwners),
        ]
    }
}

#[derive(DeriveIden)]
enum Prompts {
    Table,
    Id,
    Seq,
    OwnerId,
    Title,
    TitleKey,
    Slug,
    Content,
    Description,
    Category,
    CategoryKey,
    FolderId,
    Visibility,
    Status,
    Version,
    Revision,
    UsageCount,
    LastUsedAt,
    Variables,
    SearchTitle,
    SearchTags,
    SearchDesc,
    CreatedAt,
    UpdatedAt,
    DeletedAt,
}

#[derive(DeriveIden)]
enum PromptVersions {
    Table,
    PromptId,
    Number,
    Title,
    Content,
    Description,
    AuthorId,
    Message,
    RestoredFrom,
    CreatedAt,
}

#[derive(DeriveIden)]
enum PromptTags {
    Table,
    PromptId,
    TagKey,
    Tag,
    OwnerId,
}

#[derive(DeriveIden)]
enum Favorites {
    Table,
    UserId,
    PromptId,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Folders {
    Table,
    Id,
    OwnerId,
    ParentId,
    ParentKey,
    Name,
    NameKey,
    Position,
    Color,
    Icon,
    Revision,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Categories {
    Table,
    Id,
    OwnerId,
    Name,
    NameKey,
    Color,
    Position,
    IsSystem,
    CreatedAt,
    UpdatedAt,
}

struct M0001Initial;

impl MigrationName for M0001Initial {
    fn name(&self) -> &str {
        "m0001_initial"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0001Initial {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Prompts::Table)
                .col(pk_uuid(Prompts::Id))
                .col(big_integer(Prompts::Seq).unique_key())
                .col(uuid(Prompts::OwnerId))
                .col(string_len(Prompts::Title, 200))
                .col(string_len(Prompts::TitleKey, 200))
                .col(string_len_null(Prompts::Slug, 64))
                .col(string_len_null(Prompts::Category, 64))
                .col(string_len_null(Prompts::CategoryKey, 64))
                .col(uuid_null(Prompts::FolderId))
                .col(string_len(Prompts::Visibility, 16))
                .col(string_len(Prompts::Status, 16))
                .col(integer(Prompts::Version))
                .col(big_integer(Prompts::Revision))
                .col(big_integer(Prompts::UsageCount))
                .col(timestamp_with_time_zone_null(Prompts::LastUsedAt))
                .col(text(Prompts::SearchTitle))
                .col(text(Prompts::SearchTags))
                .col(text(Prompts::SearchDesc))
                .col(timestamp_with_time_zone(Prompts::CreatedAt))
                .col(timestamp_with_time_zone(Prompts::UpdatedAt))
                .col(timestamp_with_time_zone_null(Prompts::DeletedAt))
                // The long columns last: SQLite reads a row's columns in order, through the
                // overflow pages of any long one before, so ranking (which reads only the
                // short ones) stays off the prompt text.
                .col(json_binary(Prompts::Variables))
                .col(text_null(Prompts::Description))
                .col(text(Prompts::Content))
                .to_owned(),
        )
        .await?;
        for (name, cols) in [
            (
                "prompts_by_owner_updated",
                vec![Prompts::OwnerId, Prompts::UpdatedAt, Prompts::Id],
            ),
            (
                "prompts_by_owner_created",
                vec![Prompts::OwnerId, Prompts::CreatedAt, Prompts::Id],
            ),
            (
                "prompts_by_owner_title",
                vec![Prompts::OwnerId, Prompts::TitleKey, Prompts::Id],
            ),
            (
                "prompts_by_owner_usage",
                vec![Prompts::OwnerId, Prompts::UsageCount, Prompts::Id],
            ),
            ("prompts_by_folder", vec![Prompts::FolderId]),
            (
                "prompts_public",
                vec![Prompts::Visibility, Prompts::UpdatedAt, Prompts::Id],
            ),
            ("prompts_deleted", vec![Prompts::DeletedAt]),
        ] {
            let mut index = Index::create();
            index.name(name).table(Prompts::Table);
            for c in cols {
                index.col(c);
            }
            m.create_index(index.to_owned()).await?;
        }
        m.create_index(
            Index::create()
                .name("prompts_slug")
                .table(Prompts::Table)
                .col(Prompts::OwnerId)
                .col(Prompts::Slug)
                .unique()
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(PromptVersions::Table)
                .col(uuid(PromptVersions::PromptId))
                .col(integer(PromptVersions::Number))
                .col(string_len(PromptVersions::Title, 200))
                .col(text(PromptVersions::Content))
                .col(text_null(PromptVersions::Description))
                .col(uuid(PromptVersions::AuthorId))
                .col(string_len_null(PromptVersions::Message, 500))
                .col(integer_null(PromptVersions::RestoredFrom))
                .col(timestamp_with_time_zone(PromptVersions::CreatedAt))
                .primary_key(
                    Index::create()
                        .col(PromptVersions::PromptId)
                        .col(PromptVersions::Number),
                )
                .foreign_key(
                    ForeignKey::create()
                        .from(PromptVersions::Table, PromptVersions::PromptId)
                        .to(Prompts::Table, Prompts::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(PromptTags::Table)
                .col(uuid(PromptTags::PromptId))
                .col(string_len(PromptTags::TagKey, 64))
                .col(string_len(PromptTags::Tag, 64))
                .col(uuid(PromptTags::OwnerId))
                .primary_key(
                    Index::create()
                        .col(PromptTags::PromptId)
                        .col(PromptTags::TagKey),
                )
                .foreign_key(
                    ForeignKey::create()
                        .from(PromptTags::Table, PromptTags::PromptId)
                        .to(Prompts::Table, Prompts::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("prompt_tags_by_owner")
                .table(PromptTags::Table)
                .col(PromptTags::OwnerId)
                .col(PromptTags::TagKey)
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Favorites::Table)
                .col(uuid(Favorites::UserId))
                .col(uuid(Favorites::PromptId))
                .col(timestamp_with_time_zone(Favorites::CreatedAt))
                .primary_key(
                    Index::create()
                        .col(Favorites::UserId)
                        .col(Favorites::PromptId),
                )
                .foreign_key(
                    ForeignKey::create()
                        .from(Favorites::Table, Favorites::PromptId)
                        .to(Prompts::Table, Prompts::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Folders::Table)
                .col(pk_uuid(Folders::Id))
                .col(uuid(Folders::OwnerId))
                .col(uuid_null(Folders::ParentId))
                .col(uuid(Folders::ParentKey))
                .col(string_len(Folders::Name, 100))
                .col(string_len(Folders::NameKey, 100))
                .col(integer(Folders::Position))
                .col(string_len_null(Folders::Color, 16))
                .col(string_len_null(Folders::Icon, 32))
                .col(big_integer(Folders::Revision))
                .col(timestamp_with_time_zone(Folders::CreatedAt))
                .col(timestamp_with_time_zone(Folders::UpdatedAt))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("folders_unique_name")
                .table(Folders::Table)
                .col(Folders::OwnerId)
                .col(Folders::ParentKey)
                .col(Folders::NameKey)
                .unique()
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Categories::Table)
                .col(pk_uuid(Categories::Id))
                .col(uuid(Categories::OwnerId))
                .col(string_len(Categories::Name, 64))
                .col(string_len(Categories::NameKey, 64))
                .col(string_len_null(Categories::Color, 16))
                .col(integer(Categories::Position))
                .col(boolean(Categories::IsSystem))
                .col(timestamp_with_time_zone(Categories::CreatedAt))
                .col(timestamp_with_time_zone(Categories::UpdatedAt))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("categories_unique_name")
                .table(Categories::Table)
                .col(Categories::OwnerId)
                .col(Categories::NameKey)
                .unique()
                .to_owned(),
        )
        .await?;

        let db = m.get_connection();
        match m.get_database_backend() {
            DbBackend::Sqlite => {
                // `scope` holds owner/visibility/status/folder/category/tag tokens, `doc` the
                // words of the prompt; queries address each column by name.
                db.execute_unprepared(
                    "CREATE VIRTUAL TABLE prompt_fts USING fts5(scope, doc, content='', \
                     contentless_delete=1, tokenize='unicode61 remove_diacritics 0')",
                )
                .await?;
            }
            DbBackend::Postgres => {
                db.execute_unprepared("CREATE SEQUENCE prompt_seq").await?;
                db.execute_unprepared(
                    "CREATE TABLE prompt_search (seq BIGINT PRIMARY KEY, tsv TSVECTOR NOT NULL)",
                )
                .await?;
                db.execute_unprepared(
                    "CREATE INDEX prompt_search_tsv ON prompt_search USING GIN (tsv)",
                )
                .await?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// Each user's library (provisioned by the registration saga), the change log devices sync
/// from, and the pushes already applied (so a retried push applies once).
struct M0002LibrariesAndSync;

impl MigrationName for M0002LibrariesAndSync {
    fn name(&self) -> &str {
        "m0002_libraries_and_sync"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0002LibrariesAndSync {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let (seq, int) = match m.get_database_backend() {
            DbBackend::Postgres => ("BIGSERIAL PRIMARY KEY", "BIGINT"),
            _ => ("INTEGER PRIMARY KEY AUTOINCREMENT", "INTEGER"),
        };
        // Times are Unix milliseconds, as in the outbox.
        m.get_connection()
            .execute_unprepared(&format!(
                "CREATE TABLE libraries (
                    owner_id TEXT PRIMARY KEY,
                    quota_prompts {int} NOT NULL,
                    provisioned_ms {int} NOT NULL
                );
                CREATE TABLE sync_log (
                    seq {seq},
                    owner_id TEXT NOT NULL,
                    entity TEXT NOT NULL,
                    entity_id TEXT NOT NULL,
                    op TEXT NOT NULL,
                    revision {int} NOT NULL,
                    device_id TEXT,
                    at_ms {int} NOT NULL
                );
                CREATE INDEX sync_log_by_owner ON sync_log (owner_id, seq);
                CREATE TABLE sync_pushes (
                    owner_id TEXT NOT NULL,
                    change_id TEXT NOT NULL,
                    result TEXT NOT NULL,
                    at_ms {int} NOT NULL,
                    PRIMARY KEY (owner_id, change_id)
                );
                CREATE INDEX sync_pushes_at ON sync_pushes (at_ms);"
            ))
            .await?;
        Ok(())
    }
}

/// PostgreSQL's search index told scope tokens from words by weight (A, D); a query with
/// weights re-reads every candidate's tsvector. Now scope tokens are upper case and words
/// lower case, without weights or positions. SQLite's FTS5 folds case and keeps scope in a
/// column of its own: nothing to change there.
struct M0003UnweightedSearch;

impl MigrationName for M0003UnweightedSearch {
    fn name(&self) -> &str {
        "m0003_unweighted_search"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0003UnweightedSearch {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        if m.get_database_backend() == DbBackend::Postgres {
            // Rebuilding the GIN index afterwards is far quicker than updating it row by row.
            m.get_connection()
                .execute_unprepared(
                    "SET LOCAL maintenance_work_mem = '256MB'; \
                     DROP INDEX prompt_search_tsv; \
                     UPDATE prompt_search SET tsv = COALESCE((\
                       SELECT array_to_tsvector(array_agg(\
                         CASE WHEN 'A' = ANY(weights) THEN upper(lexeme) ELSE lexeme END)) \
                       FROM unnest(tsv)), ''::tsvector); \
                     CREATE INDEX prompt_search_tsv ON prompt_search USING GIN (tsv)",
                )
                .await?;
        }
        Ok(())
    }
}

/// Accounts deleted with their library: nothing is created for them again.
struct M0004DeletedOwners;

impl MigrationName for M0004DeletedOwners {
    fn name(&self) -> &str {
        "m0004_deleted_owners"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0004DeletedOwners {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let int = match m.get_database_backend() {
            DbBackend::Postgres => "BIGINT",
            _ => "INTEGER",
        };
        m.get_connection()
            .execute_unprepared(&format!(
                "CREATE TABLE deleted_owners (owner_id TEXT PRIMARY KEY, at_ms {int} NOT NULL)"
            ))
            .await?;
        Ok(())
    }
}
