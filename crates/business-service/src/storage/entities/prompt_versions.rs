use sea_orm::entity::prelude::*;

/// An immutable snapshot of a prompt's title, text and description.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "prompt_versions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub prompt_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub number: i32,
    pub title: String,
    pub content: String,
    pub description: Option<String>,
    pub author_id: Uuid,
    pub message: Option<String>,
    /// The version this one restored, if it is a restore.
    pub restored_from: Option<i32>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
