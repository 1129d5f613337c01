use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "prompt_tags")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub prompt_id: Uuid,
    /// Lower-cased tag: `GPT-4` and `gpt-4` are one tag.
    #[sea_orm(primary_key, auto_increment = false)]
    pub tag_key: String,
    /// The tag as its owner spelt it.
    pub tag: String,
    pub owner_id: Uuid,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
