//! The schema of `user_db`, as migrations applied at start.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(M0001Initial),
            Box::new(platform::events::schema::EventTables),
            Box::new(M0002Sagas),
        ]
    }
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    Username,
    UsernameKey,
    Email,
    EmailKey,
    PasswordHash,
    DisplayName,
    AvatarUrl,
    Bio,
    Preferences,
    Roles,
    Status,
    CreatedAt,
    UpdatedAt,
    PasswordChangedAt,
    DisabledAt,
}

#[derive(DeriveIden)]
enum Sessions {
    Table,
    Id,
    UserId,
    DeviceId,
    DeviceType,
    DeviceName,
    UserAgent,
    Ip,
    CreatedAt,
    LastSeenAt,
    ExpiresAt,
    RevokedAt,
    RevokedReason,
}

#[derive(DeriveIden)]
enum RefreshTokens {
    Table,
    TokenHash,
    SessionId,
    IssuedAt,
    ExpiresAt,
    UsedAt,
}

#[derive(DeriveIden)]
enum SigningKeys {
    Table,
    Kid,
    Algorithm,
    PrivateKey,
    PublicKey,
    CreatedAt,
    RetiredAt,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum ServiceAccounts {
    Table,
    Id,
    ClientId,
    Name,
    SecretHash,
    Scopes,
    CreatedAt,
    DisabledAt,
}

#[derive(DeriveIden)]
enum LoginFailures {
    Table,
    Key,
    Count,
    LastFailureAt,
    BlockedUntil,
}

struct M0001Initial;

// Named by hand: the derive would name every migration of this file after the file.
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
                .table(Users::Table)
                .col(pk_uuid(Users::Id))
                .col(string_len(Users::Username, 64))
                .col(string_len(Users::UsernameKey, 64).unique_key())
                .col(string_len(Users::Email, 254))
                .col(string_len(Users::EmailKey, 254).unique_key())
                .col(text(Users::PasswordHash))
                .col(string_len_null(Users::DisplayName, 128))
                .col(text_null(Users::AvatarUrl))
                .col(text_null(Users::Bio))
                .col(json_binary(Users::Preferences))
                .col(string_len(Users::Roles, 128))
                .col(string_len(Users::Status, 16))
                .col(timestamp_with_time_zone(Users::CreatedAt))
                .col(timestamp_with_time_zone(Users::UpdatedAt))
                .col(timestamp_with_time_zone(Users::PasswordChangedAt))
                .col(timestamp_with_time_zone_null(Users::DisabledAt))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Sessions::Table)
                .col(pk_uuid(Sessions::Id))
                .col(uuid(Sessions::UserId))
                .col(string_len(Sessions::DeviceId, 128))
                .col(string_len(Sessions::DeviceType, 16))
                .col(string_len_null(Sessions::DeviceName, 128))
                .col(string_len_null(Sessions::UserAgent, 512))
                .col(string_len_null(Sessions::Ip, 64))
                .col(timestamp_with_time_zone(Sessions::CreatedAt))
                .col(timestamp_with_time_zone(Sessions::LastSeenAt))
                .col(timestamp_with_time_zone(Sessions::ExpiresAt))
                .col(timestamp_with_time_zone_null(Sessions::RevokedAt))
                .col(string_len_null(Sessions::RevokedReason, 64))
                .foreign_key(
                    ForeignKey::create()
                        .from(Sessions::Table, Sessions::UserId)
                        .to(Users::Table, Users::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("sessions_by_user")
                .table(Sessions::Table)
                .col(Sessions::UserId)
                .col(Sessions::RevokedAt)
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(RefreshTokens::Table)
                .col(string_len(RefreshTokens::TokenHash, 64).primary_key())
                .col(uuid(RefreshTokens::SessionId))
                .col(timestamp_with_time_zone(RefreshTokens::IssuedAt))
                .col(timestamp_with_time_zone(RefreshTokens::ExpiresAt))
                .col(timestamp_with_time_zone_null(RefreshTokens::UsedAt))
                .foreign_key(
                    ForeignKey::create()
                        .from(RefreshTokens::Table, RefreshTokens::SessionId)
                        .to(Sessions::Table, Sessions::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("refresh_tokens_by_session")
                .table(RefreshTokens::Table)
                .col(RefreshTokens::SessionId)
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(SigningKeys::Table)
                .col(string_len(SigningKeys::Kid, 64).primary_key())
                .col(string_len(SigningKeys::Algorithm, 16))
                .col(text(SigningKeys::PrivateKey))
                .col(text(SigningKeys::PublicKey))
                .col(timestamp_with_time_zone(SigningKeys::CreatedAt))
                .col(timestamp_with_time_zone_null(SigningKeys::RetiredAt))
                .col(timestamp_with_time_zone_null(SigningKeys::ExpiresAt))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(ServiceAccounts::Table)
                .col(pk_uuid(ServiceAccounts::Id))
                .col(string_len(ServiceAccounts::ClientId, 64).unique_key())
                .col(string_len(ServiceAccounts::Name, 128))
                .col(text(ServiceAccounts::SecretHash))
                .col(string_len(ServiceAccounts::Scopes, 512))
                .col(timestamp_with_time_zone(ServiceAccounts::CreatedAt))
                .col(timestamp_with_time_zone_null(ServiceAccounts::DisabledAt))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(LoginFailures::Table)
                .col(string_len(LoginFailures::Key, 320).primary_key())
                .col(integer(LoginFailures::Count))
                .col(timestamp_with_time_zone(LoginFailures::LastFailureAt))
                .col(timestamp_with_time_zone_null(LoginFailures::BlockedUntil))
                .to_owned(),
        )
        .await?;
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Sagas {
    Table,
    Id,
    Kind,
    UserId,
    State,
    StartedAt,
    DeadlineAt,
    FinishedAt,
    Detail,
}

/// Saga runs (registration, account deletion), so a restarted service resumes them.
pub struct M0002Sagas;

impl MigrationName for M0002Sagas {
    fn name(&self) -> &str {
        "m0002_sagas"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0002Sagas {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Sagas::Table)
                .col(pk_uuid(Sagas::Id))
                .col(string_len(Sagas::Kind, 16))
                .col(uuid(Sagas::UserId))
                .col(string_len(Sagas::State, 16))
                .col(timestamp_with_time_zone(Sagas::StartedAt))
                .col(timestamp_with_time_zone(Sagas::DeadlineAt))
                .col(timestamp_with_time_zone_null(Sagas::FinishedAt))
                .col(text_null(Sagas::Detail))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("sagas_by_user")
                .table(Sagas::Table)
                .col(Sagas::UserId)
                .col(Sagas::State)
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("sagas_running")
                .table(Sagas::Table)
                .col(Sagas::State)
                .col(Sagas::DeadlineAt)
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(Sagas::Table).to_owned())
            .await
    }
}
