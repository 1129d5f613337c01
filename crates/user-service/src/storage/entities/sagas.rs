use sea_orm::entity::prelude::*;

/// One run of a saga (registration or account deletion) and where it stands.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "sagas")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// `registration` or `deletion`.
    pub kind: String,
    pub user_id: Uuid,
    /// `running`, `completed` or `compensated`.
    pub state: String,
    pub started_at: DateTimeUtc,
    /// The other side refuses to act after this; past it (and a grace) the saga compensates.
    pub deadline_at: DateTimeUtc,
    pub finished_at: Option<DateTimeUtc>,
    /// Why it was compensated.
    pub detail: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
