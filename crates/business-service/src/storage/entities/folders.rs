use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "folders")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub owner_id: Uuid,
    pub parent_id: Option<Uuid>,
    /// `parent_id`, or the nil UUID at the top level: lets one unique index keep sibling
    /// names distinct (a NULL would not be compared).
    pub parent_key: Uuid,
    pub name: String,
    pub name_key: String,
    /// Order among siblings.
    pub position: i32,
    pub color: Option<String>,
    pub icon: Option<String>,
    pub revision: i64,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
