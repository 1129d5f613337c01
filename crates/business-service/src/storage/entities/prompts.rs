use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "prompts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// Creation order; the search index refers to prompts by it.
    pub seq: i64,
    pub owner_id: Uuid,
    pub title: String,
    /// Lower-cased title, for sorting by title.
    pub title_key: String,
    /// The name other prompts include this one by: `{{> slug}}`.
    pub slug: Option<String>,
    pub content: String,
    pub description: Option<String>,
    pub category: Option<String>,
    pub category_key: Option<String>,
    pub folder_id: Option<Uuid>,
    /// `private`, `unlisted` or `public`.
    pub visibility: String,
    /// `active` or `archived`.
    pub status: String,
    /// Number of the latest version.
    pub version: i32,
    /// Bumped by every change; the ETag.
    pub revision: i64,
    pub usage_count: i64,
    pub last_used_at: Option<DateTimeUtc>,
    /// The template's variables, as listed to clients.
    pub variables: Json,
    /// Search tokens of the title, tags and description, space-padded, for ranking.
    pub search_title: String,
    pub search_tags: String,
    pub search_desc: String,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    /// Set while the prompt is in the trash.
    pub deleted_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
