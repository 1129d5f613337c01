use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "signing_keys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub kid: String,
    /// `EdDSA`.
    pub algorithm: String,
    /// PKCS#8 DER, base64.
    pub private_key: String,
    /// The public key as a JWK `x` (base64url).
    pub public_key: String,
    pub created_at: DateTimeUtc,
    /// No longer signs from this time on.
    pub retired_at: Option<DateTimeUtc>,
    /// Leaves the JWKS from this time on, once no token it signed can still be valid.
    pub expires_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
